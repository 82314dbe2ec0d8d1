/*
 * shared_producer.h: one Kafka producer for every source of a node
 * (docs/architecture.md §4.1, §6.4). A producer client costs four threads
 * and its buffers; a regional hub runs a hundred sources per daemon, so the
 * sources share one client instead of owning one each.
 *
 * Exactly-once (a real broker, exactly_once on): the client has the node's
 * transactional id (names.h), so a restarted daemon fences its predecessor.
 * A producer has one transaction open at a time, so the sources produce
 * their batches into the same open transaction, and whoever needs its
 * batches acknowledged ends it for everyone in it: a commit acknowledges the
 * batches of every source in it, an abort fails them all (each polls again
 * from its acknowledged cursor, rule 1). A source moved to another node is
 * fenced by the sources group instead of its own transactional id (KIP-447):
 * each commit carries the group's metadata (sk_sprod_set_fence), so the
 * broker refuses the commit of a node whose generation is stale.
 *
 * At least once (the embedded broker, or exactly_once off): the client is
 * only shared; each source awaits its own delivery reports (rule 2).
 *
 * Owns: the client, its topic handles, the open transaction and who is in
 * it. Must never: call librdkafka's serving functions (poll, flush, commit)
 * while holding its mutex (the callbacks take it); free a member while a
 * message of it is in flight (its delivery report points at it).
 */
#ifndef SK_SHARED_PRODUCER_H
#define SK_SHARED_PRODUCER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "sk_error.h"

struct sk_kafka;
struct sk_runner;
struct sk_sprod;
struct sk_sprod_member;

/* Tracks the delivery reports of messages given it as their opaque. */
struct sk_sprod_delivery {
    struct sk_sprod_member *member;
    atomic_size_t pending;
    atomic_size_t failed;
    atomic_int first_err; /* rd_kafka_resp_err_t of the first failure */
};

/* A report of a message that failed, for the member's owner (any thread, the member locked). */
typedef void (*sk_sprod_report_fn)(void *ctx, const rd_kafka_message_t *m);

/* The sources group's metadata now (caller destroys), or NULL: no fence can be had. */
typedef rd_kafka_consumer_group_metadata_t *(*sk_sprod_fence_fn)(void *ctx);

/* One source's place in the shared producer. */
struct sk_sprod_member {
    struct sk_sprod *sp;
    pthread_mutex_t mu; /* guards ctx against a report on another thread */
    void *ctx;          /* given to report; NULL once the member left */
    sk_sprod_report_fn report;
    struct sk_runner *runner;
    int32_t fence_partition; /* its partition of the sources topic (ownership.h) */
    uint64_t gen;            /* the client it joined (sk_sprod_use fails on another) */
    /* Delivery tracking: every message of the member carries one of these. */
    struct sk_sprod_delivery group, cursor, txn;
    /* Under the producer's mutex: */
    uint64_t seq;          /* the last transaction it produced into (0: none) */
    uint64_t listed;       /* the transaction it is listed in as a participant */
    bool aborted;          /* a transaction of its group was aborted */
    struct sk_error abort; /* why (the first) */
    struct sk_sprod_member *next;
};

struct sk_sprod *sk_sprod_new(struct sk_kafka *k);
/* After every member left. */
void sk_sprod_free(struct sk_sprod *sp);
/* The sources group that fences a node's commits (KIP-447); fn NULL: none. */
void sk_sprod_set_fence(struct sk_sprod *sp, sk_sprod_fence_fn fn, void *ctx, const char *topic);
bool sk_sprod_transactional(const struct sk_sprod *sp);

/*
 * Joins a source (runner: its counters and name; report(ctx, m): its
 * messages that failed) to the producer, making the client if there is
 * none or the last one broke (a new transactional client aborts what the
 * node's previous one left open). NULL with err.
 */
struct sk_sprod_member *sk_sprod_join(struct sk_sprod *sp, struct sk_runner *runner,
                                      sk_sprod_report_fn report, void *ctx, struct sk_error *err);
/* Leaves (waits, bounded, for the member's messages in flight); NULL is fine. */
void sk_sprod_leave(struct sk_sprod_member *m);

/* The client, held for use until sk_sprod_unuse; NULL with err (FATAL) when
 * it is not the one the member joined (replaced after a fatal error). */
rd_kafka_t *sk_sprod_use(struct sk_sprod_member *m, struct sk_error *err);
void sk_sprod_unuse(struct sk_sprod_member *m);
/* A topic handle of the client (held in use), kept while the client lives;
 * *created when it was made now (its metadata is not known yet). */
rd_kafka_topic_t *sk_sprod_topic(struct sk_sprod_member *m, const char *topic, bool *created);
/*
 * True when a topic's partition count changed since the producer first
 * wrote to it, with why (the topic, both counts, the way out) in buf: its
 * records are refused from then on (keys would move), and a source whose
 * batch failed stops as failed instead of retrying.
 */
bool sk_sprod_moved(struct sk_sprod_member *m, char *buf, size_t size);
/* The member's messages in flight. */
size_t sk_sprod_in_flight(const struct sk_sprod_member *m);
/* Serves the client's callbacks (errors, statistics, late reports) at once:
 * the sources' pool does, once a second, while they wait between polls. */
void sk_sprod_serve(struct sk_sprod *sp);
/* The client's fatal error (rd_kafka_fatal_error), 0 when there is none. */
rd_kafka_resp_err_t sk_sprod_fatal(struct sk_sprod_member *m, char *buf, size_t size);
/* The member hit a fatal client error: the next join makes a new client. */
void sk_sprod_broken(struct sk_sprod_member *m, const char *why);

/*
 * Transactions (exactly-once only). A group of batches: group_begin, then
 * each batch produced between txn_enter (which returns the client, in use)
 * and txn_leave, then txn_commit: 0 once every transaction the member
 * produced into since group_begin is committed. -1 with err: RETRIABLE when
 * one was aborted (the member's batch or another member's failed), FATAL
 * when the client broke. A batch that failed leaves with the reason
 * (failed), which dooms the open transaction: it is aborted with every
 * member's batches in it, never committed with part of the batch; then
 * txn_abort waits for that end.
 */
void sk_sprod_group_begin(struct sk_sprod_member *m);
rd_kafka_t *sk_sprod_txn_enter(struct sk_sprod_member *m, struct sk_error *err);
void sk_sprod_txn_leave(struct sk_sprod_member *m, const struct sk_error *failed);
int sk_sprod_txn_commit(struct sk_sprod_member *m, struct sk_error *err);
int sk_sprod_txn_abort(struct sk_sprod_member *m, struct sk_error *err);

#endif
