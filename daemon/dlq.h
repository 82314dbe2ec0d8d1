/*
 * dlq.h: reading and re-injecting dead letters (`<prefix>_dlq`).
 *
 * A dead letter from a sink is a valid record its target refused: replaying
 * it produces the same key and value to its original topic (headers
 * skolsync-topic), after the target was fixed. A dead letter from a source is
 * input that could not be read: replaying it encodes the (fixed) raw input
 * again with the codec for its entity type (header skolsync-entity) and
 * produces it to that entity's topic. Sinks are idempotent, so a replay
 * twice does no harm.
 */
#ifndef SK_DLQ_H
#define SK_DLQ_H

#include <cjson/cJSON.h>

#include "kafka.h"

struct sk_dlq_filter {
    const char *connector; /* only dead letters of this connector, or NULL */
    int64_t from_offset;   /* inclusive, -1 = from the start */
    int64_t to_offset;     /* inclusive, -1 = to the end */
    size_t limit;          /* at most this many (0 = no limit) */
};

/*
 * Lists dead letters as a JSON array of objects (offset, connector, error
 * class, error, where or topic/partition/offset, key, entity, value as text
 * when it is UTF-8 text, else its size). Caller frees with cJSON_Delete.
 */
cJSON *sk_dlq_list(struct sk_kafka *k, const struct sk_dlq_filter *f, struct sk_error *err);

/*
 * Re-injects the matching dead letters into their original topics. Returns
 * the number re-injected (>= 0) or -1 with err; *skipped counts letters that
 * could not be replayed (source input that still does not decode).
 */
long sk_dlq_replay(struct sk_kafka *k, const struct sk_dlq_filter *f, size_t *skipped,
                   cJSON *report, struct sk_error *err);

/* `skolsync dlq list|replay ...` (main.c) */
int sk_cmd_dlq(int argc, char **argv);

#endif
