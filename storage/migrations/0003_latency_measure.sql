-- tapwatch schema, migration 3: the latency table names what each row measures (latency_shift,
-- docs/alerts.md): handshake_server, handshake_client, response, echo, tcp_rtt or rst; rows
-- per (window, server, measure) beside the per-tenant handshake rows. Rows written before
-- this migration read ''. ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS: `apply_schema`
-- skips an ADD COLUMN whose column is already there.

ALTER TABLE {db}.latency{local} {on_cluster} ADD COLUMN measure LowCardinality(String) DEFAULT '' AFTER stage;
