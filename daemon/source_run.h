/*
 * source_run.h: what source_driver.c (the poll loop, cursor, backoff) and
 * source_produce.c (the producer, transactions, delivery reports, records
 * Kafka refuses) share about one running source. Not for other files.
 */
#ifndef SK_SOURCE_RUN_H
#define SK_SOURCE_RUN_H

#include <stddef.h>

#include "drivers.h"
#include "shared_producer.h"

struct source_run {
    struct sk_source_env *env;
    /* Its place in the node's producer (shared_producer.h), NULL before
     * prepare; rk: that client while a batch is produced (held in use). */
    struct sk_sprod_member *member;
    rd_kafka_t *rk;
    bool txn;
    char *topics[SK_ENTITY_COUNT];               /* by entity index, created lazily */
    rd_kafka_topic_t *rkts[SK_ENTITY_COUNT + 2]; /* + cursor and DLQ topics: the
                                                    client's handles (their metadata) */
    struct sk_cursor cursor;                     /* the last cursor Kafka acknowledged */
    /*
     * Records a delivery report refused for good (too large, invalid). The
     * broker refuses a whole produce request for one such record, so every
     * record of it is a suspect at first: the batch fails, and when it comes
     * again each suspect is sent alone. One refused alone is confirmed and
     * goes to the dead-letter topic from then on. Cleared once a batch is
     * stored. Under member->mu: a report may come on another source's thread.
     */
    struct refused *refused;
    size_t n_refused, cap_refused;
    size_t refused_learned; /* new suspects or confirmations since the batch was produced */
    ptrdiff_t isolating;    /* the suspect now sent alone, or -1 */
    size_t batch_refused;   /* records of the group in hand dead-lettered for Kafka's refusal */
    size_t batch_refused_by[SK_ENTITY_COUNT]; /* the same, by entity index */
    int32_t partitions[SK_ENTITY_COUNT];      /* of each topic, for snapshot markers (0: unknown) */
    char snapshot_id[SK_ENTITY_COUNT][64];    /* the listing under way since a begin marker */
    struct sk_snapshot_window snapshot_window[SK_ENTITY_COUNT]; /* and its window */
    /* The skolsync-observed header's text, formatted once for each value
     * (the records of a page share it): a printf per record was ~3 % of a
     * source's own CPU. observed_len 0: none yet. */
    int64_t observed_us;
    char observed[24];
    size_t observed_len;
};

/* A record Kafka refused, known by its topic, key and value. */
struct refused {
    char *topic;
    char key[64];
    size_t len;
    uint64_t hash;
    rd_kafka_resp_err_t err;
    bool confirmed; /* refused when it was sent alone */
};

/* Joins the node's producer (transactional unless at-least-once) and warms its topics' metadata. */
int source_producer_create(struct source_run *run, struct sk_error *err);
/* Leaves it (NULL member: nothing). */
void source_producer_destroy(struct source_run *run);
/* -1 with a fatal err when a topic the source writes has other partitions
 * than the node first met (kafka.h, sk_kafka_pin): its records would be
 * refused, so a restart fails before it reads its source again. */
int source_topics_moved(struct source_run *run, struct sk_error *err);
/* Serves the producer's callbacks (reports, statistics) for up to ms. */
void source_producer_poll(struct source_run *run, int ms);
/* The client's fatal error (rd_kafka_fatal_error), 0 when there is none. */
rd_kafka_resp_err_t source_producer_fatal(struct source_run *run, char *buf, size_t size);
void source_note_queue(struct source_run *run);

/* Forgets the records Kafka refused (once a batch is stored). */
void source_refused_clear(struct source_run *run);

/*
 * Delivers a group of consecutive batches, their dead letters and the last
 * one's cursor: as one transaction (rule 1) or at least once (rule 2). begin,
 * add each batch, then commit (0 once Kafka acknowledged all of it) or abort.
 * add and commit abort the group themselves when they fail; every failure
 * returns -1 with err (FATAL: only a new producer goes on).
 */
int source_group_begin(struct source_run *run, struct sk_error *err);
int source_group_add(struct source_run *run, const struct sk_batch *b, struct sk_error *err);
int source_group_commit(struct source_run *run, const struct sk_cursor *cursor,
                        struct sk_error *err);
int source_group_abort(struct source_run *run, struct sk_error *err);

#endif
