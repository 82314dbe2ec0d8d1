/*
 * sink_hub.h: one Kafka consumer for all of a node's node-local sinks
 * (SK_TARGET_NODE_LOCAL: sqlite-sink, oneroster-csv-sink, ss12000-api-sink),
 * docs/architecture.md §6.4.1. Each of them reads every partition of its
 * topics and keeps its offsets in its own target, so none needs a group of its own to be given
 * partitions: one client assign()s the union of their partitions, fetches
 * each from the lowest position a sink needs, and hands every sink only the
 * records at or past its own position, in order.
 *
 * Owns: the shared client, its thread (`sink-hub`), the sinks' queues and
 * positions. Must never: apply, commit for a sink on its own, or drop a
 * record a sink has not been handed (nothing lost), nor hand one twice
 * within an attachment (nothing invented: a sink sees an offset once).
 */
#ifndef SK_SINK_HUB_H
#define SK_SINK_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <librdkafka/rdkafka.h>

#include "kafka.h"
#include "runner.h"
#include "sk_error.h"

/* The daemon's holder: the hub in use, made at the first attachment. */
struct sk_sink_hubs;
/* once: --once, whose drain waits for each partition's end (a short fetch wait). */
struct sk_sink_hubs *sk_sink_hubs_new(struct sk_kafka *k, bool once);
/* After every sink detached. NULL: nothing. */
void sk_sink_hubs_free(struct sk_sink_hubs *h);

/* One record as the hub hands it to several sinks: read-only for them (its
 * headers are parsed before it is handed), freed with the last release. */
struct sk_hub_msg;
void sk_sink_hub_release(struct sk_hub_msg *w);

/* One sink's attachment. */
struct sk_hub_member;

/*
 * Attaches a sink for the partitions in `from` (each element's offset: the
 * next one it needs, RD_KAFKA_OFFSET_BEGINNING for the first there is).
 * `budget` bytes may wait in its queue before the hub stops fetching for
 * everyone (back-pressure). The client's errors and statistics
 * (kafka.statistics) are counted in the sink's runner. Makes the hub
 * (client and thread) if there is none. NULL with err (FATAL) when the
 * client cannot be made. The caller detaches it with sk_sink_hub_detach,
 * after releasing every record.
 */
struct sk_hub_member *sk_sink_hub_attach(struct sk_sink_hubs *h, const char *sink,
                                         const rd_kafka_topic_partition_list_t *from, size_t budget,
                                         struct sk_runner *runner, struct sk_error *err);
/* Its queue's records go back (released); the last sink to leave a hub
 * ends it (its thread joined, its client closed and destroyed). */
void sk_sink_hub_detach(struct sk_hub_member *m);
/*
 * Stops handing records to the sink (an operator's pause, a retry's
 * backoff): its queue is released, so it holds nobody back; it resumes
 * with sk_sink_hub_resume at the positions given (from, as in attach), or
 * (from NULL) after the last record it took.
 */
void sk_sink_hub_suspend(struct sk_hub_member *m);
void sk_sink_hub_resume(struct sk_hub_member *m, const rd_kafka_topic_partition_list_t *from);

/*
 * The next record, partition end or error for the sink, waiting up to
 * timeout_ms: NULL when none came. *held gets what to release it with
 * (sk_sink_hub_release; never rd_kafka_message_destroy).
 */
rd_kafka_message_t *sk_sink_hub_poll(struct sk_hub_member *m, int timeout_ms,
                                     struct sk_hub_msg **held);
/* Records waiting in its queue. */
size_t sk_sink_hub_queued(struct sk_hub_member *m);
/* An idle sink gives its queue's ring back (it grew with a bulk load's
 * backlog: 8 bytes a record, 256 KiB at 32 768) when the queue is empty;
 * the next record makes a small one again. */
void sk_sink_hub_trim(struct sk_hub_member *m);
/* How many partitions topic has (sk_kafka_partition_count over the shared client). */
int sk_sink_hub_partition_count(struct sk_hub_member *m, const char *topic);
/* True, with why, once the hub failed: every sink on it fails (and is
 * restarted onto a new hub). */
bool sk_sink_hub_failed(struct sk_hub_member *m, char *why, size_t size);
/* Fails the hub for every sink on it, with why. */
void sk_sink_hub_fail(struct sk_hub_member *m, const char *why);
/*
 * A sink found the fetch stopped (§8.14f: only a new client gets past it):
 * the hub makes a new client, and every sink on it resumes where it last
 * took a record (what waited in the queues is fetched again).
 */
void sk_sink_hub_renew(struct sk_hub_member *m, const char *why);

/*
 * The sink's group learns its offsets for the lag report (the target keeps
 * the real ones, rule 3): AlterConsumerGroupOffsets from the hub's client for
 * group offsets (not the shared consumer: architecture.md §8.14h). Async: at
 * most one request in flight, a newer list replaces one waiting; one
 * unanswered for 30 s retires that client and is sent again from a new one;
 * one answered with an error is sent again a second later (unless newer
 * offsets replaced it); sync waits up to 10 s. 0, or -1 with err (RETRIABLE).
 */
int sk_sink_hub_commit(struct sk_hub_member *m, const char *group,
                       const rd_kafka_topic_partition_list_t *offsets, bool sync,
                       struct sk_error *err);

#endif
