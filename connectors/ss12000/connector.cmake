# ss12000-source: SS 12000 2.1 REST API (libcurl) -> records; its cursor is a
# message of its own (ss12000_source.proto).
sk_connector(SOURCES source.c source_run.c source_list.c source_deleted.c source_guard.c source_options.c source_cursor.c source_page.c source_http.c source_hook.c source_probe.c
             PROTOS ss12000_source.proto
             SOURCE_OPS ss12000_source_ops
             LIBS PkgConfig::CURL Threads::Threads)
