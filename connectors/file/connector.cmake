# jsonl-source: SS 12000 entities from JSON Lines files (one object per line).
sk_connector(SOURCES jsonl_source.c SOURCE_OPS jsonl_source_ops)
