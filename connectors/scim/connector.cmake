# scim-sink: SS 12000 persons and groups as SCIM 2.0 Users and Groups (libcurl,
# SQLite state; both already linked into sk_core).
sk_connector(SOURCES scim_sink.c scim_map.c scim_http.c scim_state.c SINK_OPS scim_sink_ops)
