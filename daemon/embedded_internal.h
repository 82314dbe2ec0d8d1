/*
 * embedded_internal.h: what embedded_store.c (open, compaction, restore) and
 * embedded_journal.c (the journal thread, the sinks' gate) share about one
 * store. Not for other files.
 */
#ifndef SK_EMBEDDED_INTERNAL_H
#define SK_EMBEDDED_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "buf.h"
#include "embedded_store.h"
#include "log.h"
#include "state_store.h"

/* One partition the journal copies. */
struct jpart {
    char *topic;
    int64_t topic_id; /* estore_topics.id */
    int32_t partition;
    bool cursor;       /* the cursor topic: written only after its data (§5.8) */
    int64_t restored;  /* offset after the last record restored at start */
    int64_t received;  /* offset after the last message the journal consumer got */
    int64_t persisted; /* offset after the last record on disk (under mu) */
    int64_t target;    /* this round's end offset */
};

struct sk_estore {
    struct sk_kafka *kafka;
    char *dir, *path;
    int lock_fd;
    struct sk_state *st;
    char *incarnation;

    /* the journal (embedded_journal.c) */
    pthread_t thread;
    bool started;
    atomic_bool stop;
    pthread_mutex_t mu; /* persisted of every part, and the condition below */
    pthread_cond_t cv;  /* broadcast after each commit */
    struct jpart *parts;
    size_t n_parts;
    rd_kafka_t *consumer;      /* assigned to every part */
    rd_kafka_t *ends;          /* asks for end offsets (not on the fetching connection) */
    rd_kafka_message_t **held; /* received, not written yet */
    size_t n_held, cap_held;
    sqlite3_stmt *insert;
    struct sk_log_limit write_limit;
    char failing[400]; /* under mu: why the last write failed, "" once one succeeded */
    char **looked;     /* under mu: the sinks sk_estore_first_look saw */
    size_t n_looked;
};

/* The store's SQL tables (embedded_store.c creates them). */
#define ESTORE_RECORDS "estore_records"
#define ESTORE_TOPICS "estore_topics"
/* A record's checksum in SQL (embedded_store.c registers the function on the
 * store's connection): written with every record, checked at open. */
#define ESTORE_SUM(topic, partition, key, value, headers, ts)                                      \
    "estore_sum(" topic ", " partition ", " key ", " value ", " headers ", " ts ")"

/*
 * Headers as stored: per header a 4-byte name length, the name, a 4-byte
 * value length (0xffffffff: no value) and the value, lengths little-endian.
 * estore_headers_pack appends m's headers to out (empty if none);
 * estore_headers_unpack returns NULL for an empty or malformed blob.
 */
void estore_headers_pack(const rd_kafka_message_t *m, struct sk_buf *out);
rd_kafka_headers_t *estore_headers_unpack(const void *blob, size_t len);

/* embedded_journal.c: stops the thread after a last round, frees the journal's clients. */
void estore_journal_stop(struct sk_estore *s);

#endif
