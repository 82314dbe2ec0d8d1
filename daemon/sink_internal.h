/*
 * sink_internal.h: what sink_driver.c (consumer, rebalances, offsets) and
 * sink_apply.c (decoding, applying, retries, dead letters) share about one
 * running sink. Not for other files.
 */
#ifndef SK_SINK_INTERNAL_H
#define SK_SINK_INTERNAL_H

#include "dlq.h"
#include "drivers.h"
#include "sink_hub.h"

struct sk_snapshot_track;
struct fly_job;

struct part {
    char *topic;
    int32_t partition;
    int64_t next;         /* every record before it is applied (or -1: unknown) */
    int64_t eof;          /* end offset last reported by the fetcher (-1: none yet) */
    int64_t drain_target; /* --once: must reach this (-1: not set) */
};

/*
 * A batch's records and what is made of them: the fields of struct sink_run
 * of the same names, moved as one between the batch in hand and the batch
 * in flight (sink_driver.c, batch_swap).
 */
struct sink_batch {
    rd_kafka_message_t **pending;
    struct sk_hub_msg **held; /* per pending record: its shared holder, or NULL (its own) */
    size_t n_pending, cap_pending;
    int64_t first_pending_ms;
    struct sk_record *recs;
    struct sk_outcome *outs;
    cJSON **docs;
    struct sk_buf json[2];
    size_t *json_at;
    size_t *todo;
    bool *driver_rejected;
    bool *control;
};

/* The first attempt at applying a batch, made on the helper thread. */
struct sink_first {
    size_t at;           /* records before it are applied (n_pending: all) */
    struct sk_error err; /* why it stopped at `at` */
};

struct sink_run {
    struct sk_sink_env *env;
    rd_kafka_t *consumer;
    rd_kafka_queue_t *queue; /* the consumer's: its length is what waits to be applied */
    struct sk_hub_member *hub; /* on the shared consumer (env->hubs) instead of consumer */
    struct sk_dlq_writer *dlq; /* created at the first dead letter */
    rd_kafka_message_t **pending;
    struct sk_hub_msg **held; /* as in struct sink_batch */
    size_t n_pending, cap_pending;
    int64_t first_pending_ms;
    struct part *parts;
    size_t n_parts;
    bool in_flush;
    bool revoked_in_flush; /* the assignment went away while a batch was retrying */
    bool marks_pending;    /* end offsets the target could not store yet */
    /* Records were dropped unapplied (a batch that failed, stop during a
     * retry): the ends the fetcher reported lie past them, so no partition
     * moves to its end (advance_to_eof) until the next assignment. */
    bool dropped;
    int64_t mark_warned_ms;
    int64_t mark_retry_ms;
    bool fatal;
    int64_t member_lost_ms; /* when the group first forgot this member (0: it has not) */
    bool partial; /* a whole-target sink given only part of its partitions: waits (§5.10) */
    unsigned pins_moved; /* sk_kafka_pins_moved when it last looked */
    /* A fetch that stopped (sink_driver.c, check_fetching): since when the
     * consumer has given nothing (sink_seen_now), and whether it was renewed
     * since it last gave records. */
    int64_t seen_ms;
    bool renewed;
    /* the sink's own work outside apply (sk_sink_ops.healthy), asked once a second */
    int64_t health_ms;
    bool unhealthy;
    char unhealthy_why[512];
    struct sk_record *recs;
    struct sk_outcome *outs;
    cJSON **docs;          /* decoded entities of recs, owned here */
    struct sk_buf json[2]; /* their JSON text, each ending in a NUL (two halves: drivers.h) */
    size_t *json_at;       /* where record i's text starts in its half's buffer */
    size_t *todo;          /* the records of the batch to decode */
    bool *driver_rejected; /* rejected before reaching the sink (bad key, undecodable) */
    bool *control;         /* the drivers' own records (snapshot markers): never applied */
    struct sk_snapshot_track *snaps; /* per consumed entity type (sink_sweep.c), or NULL */
    /*
     * Batch N applied on a helper thread while this one fetches and decodes
     * batch N+1 (sink_driver.c, "In flight"). While a batch is, only the
     * helper calls the sink's ops; fly holds the batch (else spare arrays).
     */
    struct sink_batch fly;
    struct fly_job *job; /* set while a batch is in flight */
};

/*
 * Applies the pending records (delivery rules 3 and 4). Returns 0 when every
 * record is applied or dead-lettered; -1 when it gave up (stop, revoked,
 * fatal, retries spent): then nothing past the last fully handled record is
 * committed.
 */
int sink_apply_pending(struct sink_run *run);

/* The two halves of sink_apply_pending. Decoding: -1 on stop (nothing decoded). */
int sink_decode_pending(struct sink_run *run);
/* Applying the decoded batch, after `first` (NULL: from the start). */
int sink_apply_decoded(struct sink_run *run, const struct sink_first *first);
/* The first attempt alone, touching only the batch's fields of run and the
 * sink (no consumer, no state): what the helper thread runs. */
void sink_apply_first(struct sink_run *run, struct sink_first *first);

/* Drops the pending messages and their decoded documents, uncommitted. */
void sink_pending_drop(struct sink_run *run);

/* Before the sink first joins its group (names.h): a new group starts at the
 * offsets its name before kafka.deployment committed (sink_migrate.c). */
void sink_migrate_offsets(struct sk_sink_env *env);

/*
 * After a batch is applied: follows its snapshot markers and records, and
 * sweeps the target for every snapshot the batch completed (sink_sweep.c).
 */
void sink_snapshots_batch(struct sink_run *run);
/* Forgets the snapshots under way (the assignment changed). */
void sink_snapshots_reset(struct sink_run *run);
void sink_snapshots_free(struct sink_run *run);

/* Pauses (or resumes) every assigned partition; the consumer stays in its
 * group. On the shared consumer the sink is suspended instead, holding no
 * other sink back, and resumes where it last took a record. */
void sink_pause_all(struct sink_run *run, bool pause);

/* From now on the consumer has fetch_stall_timeout to give something
 * (sink_driver.c, check_fetching): after a batch was applied (the sink took
 * nothing meanwhile), a pause or a resume, a wait for the brokers. */
void sink_seen_now(struct sink_run *run);

#endif
