-- tapwatch schema, migration 3: flow health (issue 14). Per base window and TCP server
-- (the listening side): data segments, retransmitted data segments by direction, zero-window
-- advertisements, duplicate ACKs and HTTP upgrade outcomes; with 1-minute and 1-hour rollups
-- filled by materialized views (read them with sumMerge); and the traffic-drop detector's
-- tracked destinations per judged window (`drop_rates`). Traffic-drop alerts are in `alerts`.

CREATE TABLE IF NOT EXISTS {db}.server_health{local} {on_cluster} (
    ts DateTime('UTC'),
    agent LowCardinality(String),
    batch UInt64,
    window_ms UInt32,
    tenant LowCardinality(String),
    server FixedString(16),
    server_port UInt16,
    segments UInt64,
    retransmits_to_server UInt64,
    retransmits_from_server UInt64,
    zero_windows UInt64,
    dup_acks UInt64,
    upgrades_ok UInt64,
    upgrades_refused UInt64,
    upgrades_unanswered UInt64
) ENGINE = MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (agent, ts, tenant, server, server_port);

CREATE TABLE IF NOT EXISTS {db}.server_health_1m{local} {on_cluster} (
    ts DateTime('UTC'),
    agent LowCardinality(String),
    tenant LowCardinality(String),
    server FixedString(16),
    server_port UInt16,
    segments AggregateFunction(sum, UInt64),
    retransmits AggregateFunction(sum, UInt64),
    zero_windows AggregateFunction(sum, UInt64),
    dup_acks AggregateFunction(sum, UInt64),
    upgrades_ok AggregateFunction(sum, UInt64),
    upgrades_failed AggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (agent, ts, tenant, server, server_port);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.server_health_1m_mv{local} {on_cluster} TO {db}.server_health_1m{local} AS
SELECT toStartOfMinute(ts) AS ts, agent, tenant, server, server_port,
       sumState(segments) AS segments,
       sumState(retransmits_to_server + retransmits_from_server) AS retransmits,
       sumState(zero_windows) AS zero_windows, sumState(dup_acks) AS dup_acks,
       sumState(upgrades_ok) AS upgrades_ok,
       sumState(upgrades_refused + upgrades_unanswered) AS upgrades_failed
FROM {db}.server_health{local}
GROUP BY ts, agent, tenant, server, server_port;

CREATE TABLE IF NOT EXISTS {db}.server_health_1h{local} {on_cluster} (
    ts DateTime('UTC'),
    agent LowCardinality(String),
    tenant LowCardinality(String),
    server FixedString(16),
    server_port UInt16,
    segments AggregateFunction(sum, UInt64),
    retransmits AggregateFunction(sum, UInt64),
    zero_windows AggregateFunction(sum, UInt64),
    dup_acks AggregateFunction(sum, UInt64),
    upgrades_ok AggregateFunction(sum, UInt64),
    upgrades_failed AggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree PARTITION BY toYYYYMM(ts) ORDER BY (agent, ts, tenant, server, server_port);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.server_health_1h_mv{local} {on_cluster} TO {db}.server_health_1h{local} AS
SELECT toStartOfHour(ts) AS ts, agent, tenant, server, server_port,
       sumState(segments) AS segments,
       sumState(retransmits_to_server + retransmits_from_server) AS retransmits,
       sumState(zero_windows) AS zero_windows, sumState(dup_acks) AS dup_acks,
       sumState(upgrades_ok) AS upgrades_ok,
       sumState(upgrades_refused + upgrades_unanswered) AS upgrades_failed
FROM {db}.server_health{local}
GROUP BY ts, agent, tenant, server, server_port;

-- Every destination address, service and tenant the traffic-drop detector tracks, per judged
-- window (10 s by default): its count with the sketch's bounds, its baseline and whether it
-- is steady, and how many quiet windows it is into a drop.
CREATE TABLE IF NOT EXISTS {db}.drop_rates{local} {on_cluster} (
    ts DateTime('UTC'),
    agent LowCardinality(String),
    batch UInt64,
    window_ms UInt32,
    dimension LowCardinality(String),
    tenant LowCardinality(String),
    address FixedString(16),
    port UInt16,
    proto UInt8,
    packets UInt64,
    packets_upper UInt64,
    baseline_pps Float64,
    steady UInt8,
    quiet_windows UInt32
) ENGINE = MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (agent, ts, dimension, tenant, address, port);
