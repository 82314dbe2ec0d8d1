# ss12000-api-sink: the hub. Keeps the topics' state in SQLite and serves the
# SS 12000 2.1 API from it (libmicrohttpd; page tokens signed with libcrypto).
pkg_check_modules(LIBCRYPTO REQUIRED IMPORTED_TARGET libcrypto)
sk_connector(SOURCES hub_sink.c hub_store.c hub_token.c hub_http.c hub_subs.c hub_notify.c hub_scope.c
                     hub_auth.c hub_filter.c hub_filter_sql.c hub_expand.c hub_lookup.c hub_refs.c
             SINK_OPS ss12000_api_sink_ops
             LIBS PkgConfig::MHD PkgConfig::SQLITE PkgConfig::LIBCRYPTO PkgConfig::CURL Threads::Threads)
