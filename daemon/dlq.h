/*
 * dlq.h: reading and re-injecting dead letters (`<prefix>_dlq`).
 *
 * A dead letter from a sink is a valid record its target refused: replaying
 * it produces the same key and value to its original topic (headers
 * skolsync-topic), after the target was fixed. A dead letter from a source is
 * input that could not be read: replaying it encodes the (fixed) raw input
 * again with the codec for its entity type (header skolsync-entity) and
 * produces it to that entity's topic. Input that cannot be fixed where it
 * came from (a line of a file already read) is replayed with a corrected
 * value given by the operator (filter.value: the entity's JSON, encoded like
 * any input). Sinks are idempotent, so a replay twice does no harm. A sink's
 * letter whose topic holds a later record for its key is not replayed: that
 * record is the key's current state (a deletion the letter would undo).
 *
 * Owns: the dead-letter format (its headers) and the writing of dead letters.
 * Must never: replay a letter whose value was truncated (it is not the record),
 * nor a sink's letter over a later record of its key.
 */
#ifndef SK_DLQ_H
#define SK_DLQ_H

#include <cjson/cJSON.h>

#include "kafka.h"

/* The headers of a dead letter: every producer and reader of <prefix>_dlq uses these. */
#define SK_DLQ_CONNECTOR "skolsync-connector"     /* the connector that dead-lettered it */
#define SK_DLQ_ERROR_CLASS "skolsync-error-class" /* sk_err_class_name() */
#define SK_DLQ_ERROR "skolsync-error"             /* why */
#define SK_DLQ_WHERE "skolsync-where"             /* source: where the input was read */
#define SK_DLQ_ENTITY "skolsync-entity"           /* source: the entity type meant */
#define SK_DLQ_TOPIC "skolsync-topic"             /* a record: the topic it belongs to */
#define SK_DLQ_PARTITION "skolsync-partition"     /* sink: where it was consumed */
#define SK_DLQ_OFFSET "skolsync-offset"
#define SK_DLQ_TRUNCATED "skolsync-truncated" /* the value's size before it was cut to fit */

/* One dead letter; every pointer borrowed, NULL (or partition -1) when absent. */
struct sk_dead_letter {
    const char *connector;
    const struct sk_error *err;
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
    const char *where;
    const char *entity;
    const char *topic;
    int32_t partition;
    int64_t offset;
    /* A sink's record: its own SK_HEADER_SCHEMA, or NULL. Kept, so that a
     * replay as it was says again what the record said it was. */
    const char *schema;
    /* The record was refused for its size: keep only the start of the value
     * (context for the operator, not a record to replay). */
    bool truncate;
};

/*
 * Produces dl to topic (the dead-letter topic) with the caller's producer
 * (a source's dead letters are part of its batch's transaction). A value the
 * producer or broker can never take is cut to fit and marked SK_DLQ_TRUNCATED.
 * 0 once queued, or -1 with err.
 */
int sk_dlq_produce(rd_kafka_t *rk, const char *topic, const struct sk_dead_letter *dl, void *opaque,
                   struct sk_error *err);

/*
 * A dead-letter producer of its own, for a sink: its dead letters are
 * acknowledged before the sink's offset moves past them.
 */
struct sk_dlq_writer;
struct sk_dlq_writer *sk_dlq_writer_new(struct sk_kafka *k, const char *connector,
                                        struct sk_error *err);
int sk_dlq_writer_send(struct sk_dlq_writer *w, const struct sk_dead_letter *dl,
                       struct sk_error *err);
/* Waits until every letter sent is acknowledged; -1 with err if any was not. */
int sk_dlq_writer_wait(struct sk_dlq_writer *w, struct sk_error *err);
void sk_dlq_writer_free(struct sk_dlq_writer *w); /* NULL is fine */

struct sk_dlq_filter {
    const char *connector; /* only dead letters of this connector, or NULL */
    int64_t from_offset;   /* inclusive, -1 = from the start */
    int64_t to_offset;     /* inclusive, -1 = to the end */
    size_t limit;          /* at most this many (0 = no limit) */
    /* replay only: the fixed record, as the entity's JSON, replayed instead of
     * the letter's value; then the filter must select one offset (from == to) */
    const char *value;
    size_t value_len;
    /* list only: a source's raw input unmasked (personal fields shown) */
    bool show_data;
};

/*
 * Lists dead letters as a JSON array of objects (offset, connector, error
 * class, error, where or topic/partition/offset, key, entity, value as text
 * when it is UTF-8 text, else its size). Unless f->show_data, a source's
 * input has its personal fields masked ("masked": true), and input that is
 * not JSON is withheld ("value_hidden"). Caller frees with cJSON_Delete.
 */
cJSON *sk_dlq_list(struct sk_kafka *k, const struct sk_dlq_filter *f, struct sk_error *err);

/*
 * Re-injects the matching dead letters into their original topics. Returns
 * the number re-injected (>= 0) or -1 with err; *skipped counts letters that
 * could not be replayed (source input that still does not decode).
 * *superseded counts a sink's letters not replayed because their topic holds
 * a later record for their key (a tombstone, a newer version): that record
 * is the key's current state, and the letter put back after it would undo
 * it in every sink. Each partition the letters came from is read once for
 * that, before anything is replayed; -1 with err if that read fails. A
 * corrected value (f->value) is the operator's record and is not checked.
 * report (or NULL) gets an object per letter skipped or superseded, with why.
 */
long sk_dlq_replay(struct sk_kafka *k, const struct sk_dlq_filter *f, size_t *skipped,
                   size_t *superseded, cJSON *report, struct sk_error *err);

/* `skolsync dlq list|replay ...` (main.c) */
int sk_cmd_dlq(int argc, char **argv);

#endif
