-- tapwatch schema, migration 2: 1-minute and 1-hour rollups of traffic and tenants, filled by
-- materialized views from the per-window tables (as Akvorado does), so long ranges stay cheap.
-- AggregatingMergeTree: every measure is an AggregateFunction; read them with sumMerge/maxMerge.
-- `sources` is the peak of the per-window distinct sources (distinct counts do not add up).

CREATE TABLE IF NOT EXISTS {db}.traffic_1m{local} {on_cluster} (
    ts DateTime('UTC'),
    agent LowCardinality(String),
    tenant LowCardinality(String),
    source_class LowCardinality(String),
    protocol_type LowCardinality(String),
    size_class LowCardinality(String),
    packets AggregateFunction(sum, UInt64),
    bytes AggregateFunction(sum, UInt64),
    setups AggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (agent, ts, tenant, source_class, protocol_type, size_class);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.traffic_1m_mv{local} {on_cluster} TO {db}.traffic_1m{local} AS
SELECT toStartOfMinute(ts) AS ts, agent, tenant, source_class, protocol_type, size_class,
       sumState(packets) AS packets, sumState(bytes) AS bytes, sumState(setups) AS setups
FROM {db}.traffic{local}
GROUP BY ts, agent, tenant, source_class, protocol_type, size_class;

CREATE TABLE IF NOT EXISTS {db}.traffic_1h{local} {on_cluster} (
    ts DateTime('UTC'),
    agent LowCardinality(String),
    tenant LowCardinality(String),
    source_class LowCardinality(String),
    protocol_type LowCardinality(String),
    size_class LowCardinality(String),
    packets AggregateFunction(sum, UInt64),
    bytes AggregateFunction(sum, UInt64),
    setups AggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree PARTITION BY toYYYYMM(ts) ORDER BY (agent, ts, tenant, source_class, protocol_type, size_class);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.traffic_1h_mv{local} {on_cluster} TO {db}.traffic_1h{local} AS
SELECT toStartOfHour(ts) AS ts, agent, tenant, source_class, protocol_type, size_class,
       sumState(packets) AS packets, sumState(bytes) AS bytes, sumState(setups) AS setups
FROM {db}.traffic{local}
GROUP BY ts, agent, tenant, source_class, protocol_type, size_class;

CREATE TABLE IF NOT EXISTS {db}.tenants_1m{local} {on_cluster} (
    ts DateTime('UTC'),
    agent LowCardinality(String),
    tenant LowCardinality(String),
    packets AggregateFunction(sum, UInt64),
    bytes AggregateFunction(sum, UInt64),
    setups AggregateFunction(sum, UInt64),
    sources AggregateFunction(max, UInt64)
) ENGINE = AggregatingMergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (agent, ts, tenant);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.tenants_1m_mv{local} {on_cluster} TO {db}.tenants_1m{local} AS
SELECT toStartOfMinute(ts) AS ts, agent, tenant,
       sumState(packets) AS packets, sumState(bytes) AS bytes, sumState(setups) AS setups,
       maxState(sources) AS sources
FROM {db}.tenants{local}
GROUP BY ts, agent, tenant;

CREATE TABLE IF NOT EXISTS {db}.tenants_1h{local} {on_cluster} (
    ts DateTime('UTC'),
    agent LowCardinality(String),
    tenant LowCardinality(String),
    packets AggregateFunction(sum, UInt64),
    bytes AggregateFunction(sum, UInt64),
    setups AggregateFunction(sum, UInt64),
    sources AggregateFunction(max, UInt64)
) ENGINE = AggregatingMergeTree PARTITION BY toYYYYMM(ts) ORDER BY (agent, ts, tenant);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.tenants_1h_mv{local} {on_cluster} TO {db}.tenants_1h{local} AS
SELECT toStartOfHour(ts) AS ts, agent, tenant,
       sumState(packets) AS packets, sumState(bytes) AS bytes, sumState(setups) AS setups,
       maxState(sources) AS sources
FROM {db}.tenants{local}
GROUP BY ts, agent, tenant;
