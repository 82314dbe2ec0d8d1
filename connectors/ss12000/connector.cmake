# ss12000-source: SS 12000 2.1 REST API (libcurl) -> records. model.c/codec.c in
# this folder are built into sk_model by the top CMakeLists, not here.
sk_connector(SOURCES source.c source_http.c source_hook.c source_idmap.c
             SOURCE_OPS ss12000_source_ops)
