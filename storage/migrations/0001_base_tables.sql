-- tapwatch schema, migration 1: one table per row type, one row per window (1 s by default).
-- Placeholders filled by `tapwatch schema`: {db}, {on_cluster} (`ON CLUSTER name` or empty) and
-- {local} (`_local` in the cluster layout, where a Distributed table of the plain name is added
-- over every table). Runs unchanged on ClickHouse 18.16 and 26.x: no DateTime64, Map, IPv4/IPv6
-- types, TTL or CODEC; addresses are FixedString(16) (IPv4 mapped), times DateTime('UTC').
-- Every row carries the agent id and the batch id it was inserted with (idempotency key).

CREATE TABLE IF NOT EXISTS {db}.traffic{local} {on_cluster} (
    ts DateTime('UTC'),
    agent LowCardinality(String),
    batch UInt64,
    window_ms UInt32,
    tenant LowCardinality(String),
    source_class LowCardinality(String),
    protocol_type LowCardinality(String),
    size_class LowCardinality(String),
    packets UInt64,
    bytes UInt64,
    setups UInt64
) ENGINE = MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (agent, ts, tenant, protocol_type, size_class);

CREATE TABLE IF NOT EXISTS {db}.tenants{local} {on_cluster} (
    ts DateTime('UTC'),
    agent LowCardinality(String),
    batch UInt64,
    window_ms UInt32,
    tenant LowCardinality(String),
    packets UInt64,
    bytes UInt64,
    setups UInt64,
    sources UInt64
) ENGINE = MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (agent, ts, tenant);

CREATE TABLE IF NOT EXISTS {db}.heavy_hitters{local} {on_cluster} (
    ts DateTime('UTC'),
    agent LowCardinality(String),
    batch UInt64,
    window_ms UInt32,
    dimension LowCardinality(String),
    rank UInt16,
    address FixedString(16),
    port UInt16,
    proto UInt8,
    tenant LowCardinality(String),
    packets UInt64,
    bytes UInt64,
    error_bound UInt64,
    window_packets UInt64
) ENGINE = MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (agent, dimension, ts, rank);

CREATE TABLE IF NOT EXISTS {db}.latency{local} {on_cluster} (
    ts DateTime('UTC'),
    agent LowCardinality(String),
    batch UInt64,
    window_ms UInt32,
    tenant LowCardinality(String),
    server FixedString(16),
    server_port UInt16,
    stage LowCardinality(String),
    samples UInt64,
    p50_us UInt64,
    p90_us UInt64,
    p99_us UInt64,
    max_us UInt64
) ENGINE = MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (agent, ts, tenant, stage);

CREATE TABLE IF NOT EXISTS {db}.setup_growth{local} {on_cluster} (
    ts DateTime('UTC'),
    agent LowCardinality(String),
    batch UInt64,
    tenant LowCardinality(String),
    point_s UInt32,
    nodes UInt64,
    setups UInt64,
    exponent Float64,
    exponent_low Float64,
    exponent_high Float64,
    r2 Float64,
    fit_points UInt32
) ENGINE = MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (agent, tenant, ts);

CREATE TABLE IF NOT EXISTS {db}.periodic_flows{local} {on_cluster} (
    ts DateTime('UTC'),
    agent LowCardinality(String),
    batch UInt64,
    tenant LowCardinality(String),
    flow String,
    bfd UInt8,
    period_ms Float64,
    last_gap_ms Float64,
    late UInt8
) ENGINE = MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (agent, ts, flow);

CREATE TABLE IF NOT EXISTS {db}.heartbeat_gaps{local} {on_cluster} (
    ts DateTime('UTC'),
    agent LowCardinality(String),
    batch UInt64,
    tenant LowCardinality(String),
    flow String,
    state LowCardinality(String),
    bfd UInt8,
    period_ms Float64,
    gap_ms Float64,
    started_ms UInt64,
    alert_id String
) ENGINE = MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (agent, ts, flow);

CREATE TABLE IF NOT EXISTS {db}.alerts{local} {on_cluster} (
    ts DateTime('UTC'),
    agent LowCardinality(String),
    batch UInt64,
    id String,
    kind LowCardinality(String),
    state LowCardinality(String),
    severity LowCardinality(String),
    tenant LowCardinality(String),
    subject String,
    started_ms UInt64,
    detected_ms UInt64,
    value Float64,
    threshold Float64,
    evidence String,
    version UInt32
) ENGINE = MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (agent, ts, kind, id);

CREATE TABLE IF NOT EXISTS {db}.agents{local} {on_cluster} (
    ts DateTime('UTC'),
    agent LowCardinality(String),
    batch UInt64,
    version String,
    mode LowCardinality(String),
    hostname String,
    kernel String,
    boot_time DateTime('UTC'),
    uptime_s UInt64,
    started DateTime('UTC'),
    interfaces String
) ENGINE = MergeTree PARTITION BY toYYYYMM(ts) ORDER BY (agent, ts);
