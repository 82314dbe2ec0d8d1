# jsonl-source: SS 12000 entities from JSON Lines files (one object per line);
# its cursor is a message of its own (jsonl_cursor.proto).
sk_connector(SOURCES jsonl_source.c jsonl_snapshot.c PROTOS jsonl_cursor.proto SOURCE_OPS jsonl_source_ops)
