# sqlite-sink: one table per SS 12000 collection, offsets kept in the same database.
sk_connector(SOURCES sqlite_sink.c SINK_OPS sqlite_sink_ops LIBS PkgConfig::SQLITE)
