# scim-sink: SS 12000 persons and groups as SCIM 2.0 Users and Groups (libcurl),
# the SCIM ids the server assigned kept in SQLite.
sk_connector(SOURCES scim_sink.c scim_resource.c scim_map.c scim_http.c scim_state.c scim_probe.c SINK_OPS scim_sink_ops
             LIBS PkgConfig::CURL PkgConfig::SQLITE)
