-- tapwatch schema, migration 5: sampled input (issue 17). Rows carrying packet counts scaled
-- by a sampling rate (sFlow, `run --sample`) say how many packet records stand behind them:
-- `samples` beside `packets` (traffic, tenants), `window_samples` beside `window_packets`
-- (heavy_hitters). Rows written before this migration were never sampled: they read their
-- packets. ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS: `apply_schema` skips an ADD
-- COLUMN whose column is already there.
ALTER TABLE {db}.traffic{local} {on_cluster} ADD COLUMN samples UInt64 DEFAULT packets AFTER packets;
ALTER TABLE {db}.tenants{local} {on_cluster} ADD COLUMN samples UInt64 DEFAULT packets AFTER packets;
ALTER TABLE {db}.heavy_hitters{local} {on_cluster} ADD COLUMN window_samples UInt64 DEFAULT window_packets AFTER window_packets;
