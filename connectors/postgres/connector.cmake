# postgres-sink: one PostgreSQL table per SS 12000 collection (jsonb + typed
# generated columns), offsets kept in the same transaction (docs/postgres-sink.md).
pkg_check_modules(LIBPQ REQUIRED IMPORTED_TARGET libpq)
sk_connector(SOURCES postgres_sink.c postgres_rows.c postgres_schema.c postgres_conn.c postgres_probe.c SINK_OPS postgres_sink_ops LIBS PkgConfig::LIBPQ)
