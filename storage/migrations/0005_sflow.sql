-- tapwatch schema, migration 5: sFlow and sampled input (issue 17). Rows carrying packet counts scaled
-- by a sampling rate (sFlow, `run --sample`) say how many packet records stand behind them:
-- `samples` beside `packets` (traffic, tenants), `window_samples` beside `window_packets`
-- (heavy_hitters). Rows written before this migration were never sampled: they read their
-- packets. ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS: `apply_schema` skips an ADD
-- COLUMN whose column is already there.
ALTER TABLE {db}.traffic{local} {on_cluster} ADD COLUMN samples UInt64 DEFAULT packets AFTER packets;
ALTER TABLE {db}.tenants{local} {on_cluster} ADD COLUMN samples UInt64 DEFAULT packets AFTER packets;
ALTER TABLE {db}.heavy_hitters{local} {on_cluster} ADD COLUMN window_samples UInt64 DEFAULT window_packets AFTER window_packets;

-- sFlow counter samples' generic interface counters (counter record format 1), per
-- exporting agent and ifIndex, one row per counter sample received (at most one per base
-- window): the counters as the agent reports them, totals since they began. `tapwatch query
-- interfaces` turns them into differences and rates.
CREATE TABLE IF NOT EXISTS {db}.interfaces{local} {on_cluster} (
    ts DateTime('UTC'),
    agent LowCardinality(String),
    batch UInt64,
    sflow_agent FixedString(16),
    if_index UInt32,
    if_type UInt32,
    speed_bits UInt64,
    direction UInt8,
    status UInt8,
    in_octets UInt64,
    out_octets UInt64,
    in_packets UInt64,
    out_packets UInt64,
    in_errors UInt64,
    out_errors UInt64,
    in_discards UInt64,
    out_discards UInt64
) ENGINE = MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (agent, sflow_agent, if_index, ts);
