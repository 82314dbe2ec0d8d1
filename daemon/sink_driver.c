/*
 * sink_driver.c: runs one sink connector: consume -> batch -> apply -> commit.
 *
 * Decoding, applying, retries and dead letters of a batch are sink_apply.c's.
 *
 * Delivery rules (docs/architecture.md §4):
 *  3. An offset is stored and committed only after the target applied every
 *     record before it (enable.auto.offset.store=false, no auto-commit).
 *     Sinks that keep offsets in the target (stored_offsets) are sought to
 *     them on assignment: exactly-once apply.
 *  4. A retriable failure pauses the partitions and retries the same records
 *     with backoff (the consumer keeps polling so it stays in its group); a
 *     rejected record goes to the DLQ, and only once the DLQ acknowledged it
 *     does the offset move past it.
 *  5. On stop: apply the batch in hand, commit, leave the group.
 *
 * The group (names.h, docs/architecture.md §5.6): a shared target's group has
 * a member per node, which split the partitions; a node-local target's group
 * is the node's own. Assignment strategy: eager (roundrobin): librdkafka
 * 2.0.2 carries several cooperative-sticky bugs (docs/architecture.md §8.5:
 * assignor loop, lost assignment on commit during rebalance, crash and hang
 * on close).
 *
 * No silent death: a fatal consumer error (a fenced static member, an
 * authorisation error, a membership that does not come back) fails the
 * connector with the reason, and the supervisor restarts it.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embedded_store.h"
#include "log.h"
#include "model.h"
#include "sink_internal.h"
#include "util.h"

const struct sk_option sk_sink_settings_options[] = {
    {"type", SK_OPT_STRING, NULL, true, "connector type (skolsync connectors lists them)",
     offsetof(struct sk_sink_settings, type)},
    {"entities", SK_OPT_LIST, NULL, false,
     "entity types to consume, by name (Person) or collection (persons); default all",
     offsetof(struct sk_sink_settings, entities)},
    {"batch_size", SK_OPT_INT, "500", false, "most records applied in one target transaction",
     offsetof(struct sk_sink_settings, batch_size), .min = 1, .max = 100000},
    {"batch_linger", SK_OPT_DURATION, "100ms", false,
     "longest a batch keeps filling while records keep coming (a batch is applied at once "
     "when no more records are queued)",
     offsetof(struct sk_sink_settings, batch_linger_ms), .min = 0, .max = 60000},
    SK_FAILURE_POLICY_OPTIONS,
    {"drop_fields", SK_OPT_LIST, NULL, false,
     "entity fields never written to the target, e.g. [civicNo, addresses] "
     "(default: the sink type's)",
     offsetof(struct sk_sink_settings, drop_fields)},
    {"protected_identities", SK_OPT_ENUM, NULL, false,
     "persons with a protected identity: skip, minimal or allow (default: the sink type's)",
     offsetof(struct sk_sink_settings, protected_identities),
     .choices = (const char *const[]){"skip", "minimal", "allow", NULL}},
    {"snapshot_sweep", SK_OPT_BOOL, "true", false,
     "after a source's complete listing of a type (snapshot), delete from the target what "
     "the listing lacked: deletions made while skolsync was down or its broker lost its state",
     offsetof(struct sk_sink_settings, snapshot_sweep)},
    {"snapshot_sweep_limit", SK_OPT_INT, "50", false,
     "most a sweep deletes, in percent of the type's entities in the target (5 or fewer are "
     "always deleted); a sweep over it deletes nothing and is logged as an error",
     offsetof(struct sk_sink_settings, snapshot_sweep_limit), .min = 1, .max = 100},
    {"fetch_stall_timeout", SK_OPT_DURATION, "30s", false,
     "a sink behind the end of its partitions that fetched nothing for this long replaces its "
     "Kafka consumer, and fails (restarted by the supervisor) when the new one fetches nothing "
     "either; 0: never",
     offsetof(struct sk_sink_settings, fetch_stall_ms), .min = 0, .max = 3600000},
    {0},
};

static struct part *part_find(struct sink_run *run, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < run->n_parts; i++)
        if (run->parts[i].partition == partition && strcmp(run->parts[i].topic, topic) == 0)
            return &run->parts[i];
    return NULL;
}

static void parts_clear(struct sink_run *run)
{
    sink_snapshots_reset(run); /* a snapshot is followed on the partitions it began on */
    for (size_t i = 0; i < run->n_parts; i++)
        free(run->parts[i].topic);
    free(run->parts);
    run->parts = NULL;
    run->n_parts = 0;
}

/* Stores and (asynchronously) commits `next` for every partition that moved. */
static void commit_parts(struct sink_run *run, bool sync)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)run->n_parts);
    for (size_t i = 0; i < run->n_parts; i++)
        if (run->parts[i].next >= 0)
            rd_kafka_topic_partition_list_add(l, run->parts[i].topic, run->parts[i].partition)
                ->offset = run->parts[i].next;
    if (l->cnt && run->hub) {
        /* the group gets them for the lag report only: the target has them */
        struct sk_error err = {0};
        if (sk_sink_hub_commit(run->hub, run->env->group, l, sync, &err))
            sk_warn(run->env->runner.name, "%s", err.msg);
    } else if (l->cnt) {
        rd_kafka_resp_err_t e = rd_kafka_offsets_store(run->consumer, l);
        if (e && e != RD_KAFKA_RESP_ERR__STATE)
            sk_warn(run->env->runner.name, "offsets_store: %s", rd_kafka_err2str(e));
        e = rd_kafka_commit(run->consumer, NULL, sync ? 0 : 1);
        if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET)
            sk_warn(run->env->runner.name, "commit: %s", rd_kafka_err2str(e));
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* Moves partitions whose fetcher reached an end past their applied records
 * (transaction markers occupy offsets: without this a caught-up sink would
 * show a lag of 1 forever). Only valid when nothing is pending. */
static bool advance_to_eof(struct sink_run *run)
{
    if (run->dropped)
        return false;
    struct sk_offsets marks = {0};
    for (size_t i = 0; i < run->n_parts; i++) {
        struct part *p = &run->parts[i];
        if (p->eof > p->next)
            sk_offsets_add(&marks, p->topic, p->partition, p->eof);
    }
    bool moved = marks.n > 0;
    if (moved && run->env->sink.ops->mark_offsets) {
        /* The target keeps its own offsets: move only once it has them, or
         * its offsets and the group's would disagree. A failed mark is tried
         * again on the sink's next idle round (run->marks_pending). */
        struct sk_error err = {0};
        if (run->env->sink.ops->mark_offsets(&run->env->sink, &marks, &err)) {
            int64_t now = sk_mono_ms();
            if (now - run->mark_warned_ms > 10000) {
                sk_warn(run->env->runner.name, "storing end offsets in the target: %s (will retry)",
                        err.msg);
                run->mark_warned_ms = now;
            }
            run->marks_pending = true;
            moved = false;
        } else {
            run->marks_pending = false;
        }
    }
    if (moved)
        for (size_t i = 0; i < run->n_parts; i++)
            if (run->parts[i].eof > run->parts[i].next)
                run->parts[i].next = run->parts[i].eof;
    sk_offsets_free(&marks);
    return moved;
}

/* The sink's own health (sk_sink_ops.health): while it says RETRIABLE the sink
 * is retrying with its reason, whatever its batches do; FATAL fails it. */
static void check_health(struct sink_run *run)
{
    struct sk_runner *r = &run->env->runner;
    int64_t now = sk_mono_ms();
    if (run->env->sink.ops->health && now - run->health_ms >= 1000) {
        run->health_ms = now;
        bool was = run->unhealthy;
        struct sk_error err = {0};
        run->unhealthy = run->env->sink.ops->health(&run->env->sink, &err) != 0;
        if (run->unhealthy && err.cls == SK_ERR_FATAL) {
            sk_error_log(r->name, "%s", err.msg);
            sk_runner_set_error(r, err.msg);
            run->fatal = true;
            return;
        }
        if (run->unhealthy)
            snprintf(run->unhealthy_why, sizeof(run->unhealthy_why), "%s", err.msg);
        if (was && !run->unhealthy) {
            sk_info(r->name, "works again");
            if (atomic_load(&r->state) == SK_STATE_RETRYING) {
                sk_runner_set_state(r, SK_STATE_RUNNING);
                sk_runner_set_error(r, "");
            }
        }
    }
    int st = atomic_load(&r->state);
    if (run->unhealthy && (st == SK_STATE_RUNNING || st == SK_STATE_IDLE)) {
        sk_runner_set_error(r, run->unhealthy_why);
        sk_runner_set_state(r, SK_STATE_RETRYING);
    }
}

/* After the batch in hand was applied: its offsets, counts and snapshots. */
static void batch_done(struct sink_run *run)
{
    size_t n = run->n_pending;
    if (n > 0) {
        sink_snapshots_batch(run);
        struct sk_runner *r = &run->env->runner;
        size_t applied = 0, rejected = 0;
        int64_t now_us = sk_now_us();
        struct sk_offsets passed_marks = {0};
        for (size_t i = 0; i < n; i++) {
            const rd_kafka_message_t *m = run->pending[i];
            struct part *p = part_find(run, rd_kafka_topic_name(m->rkt), m->partition);
            if (p && m->offset + 1 > p->next)
                p->next = m->offset + 1;
            if (run->control[i]) {
                continue;
            } else if (run->outs[i].kind == SK_REJECTED) {
                rejected++;
            } else {
                applied++;
                /* end-to-end: the source saw the change -> the target has it */
                if (run->recs[i].observed_us > 0)
                    sk_hist_observe_us(&r->latency_seconds, now_us - run->recs[i].observed_us);
                int idx = run->recs[i].entity ? sk_entity_index(run->recs[i].entity) : -1;
                if (idx >= 0)
                    atomic_fetch_add(&r->per_entity[idx], 1);
            }
        }
        atomic_fetch_add(&r->records, applied);
        atomic_fetch_add(&r->failed, rejected);
        atomic_fetch_add(&r->dead_lettered, rejected);
        atomic_fetch_add(&r->cycles, 1);
        for (size_t i = 0; i < n; i++) {
            const rd_kafka_message_t *m = run->pending[i];
            struct part *p = part_find(run, rd_kafka_topic_name(m->rkt), m->partition);
            if ((run->control[i] || run->driver_rejected[i]) && p) /* the batch's end there */
                sk_offsets_add(&passed_marks, p->topic, p->partition, p->next);
        }
        /* A marker, or a record the driver dead-lettered itself (its letter
         * acknowledged by now), last in its partition was not in the
         * target's batch: the target's offsets move past it too, or every
         * restart would read it again (a letter written again each time). A
         * failure means only that, once: logged. */
        if (passed_marks.n && run->env->sink.ops->mark_offsets) {
            struct sk_error err = {0};
            if (run->env->sink.ops->mark_offsets(&run->env->sink, &passed_marks, &err))
                sk_warn(r->name, "storing offsets past records not applied: %s", err.msg);
        }
        sk_offsets_free(&passed_marks);
        sink_pending_drop(run);
        /* while it applied, the sink took nothing from its consumer, rightly;
         * and a consumer that gave records fetches */
        sink_seen_now(run);
        run->renewed = false;
    }
}

/* ---- In flight ------------------------------------------------------------------
 *
 * A bulk load alternates two kinds of work: fetching and decoding a batch
 * (this thread's CPU) and the target applying it (mostly a wait for the
 * database or the API). So a batch that filled while more records were
 * queued is applied on a short-lived helper thread while this thread
 * fetches and decodes the next one. The next one is applied only after the
 * first has landed: its retries, dead letters, offsets, counts and sweeps
 * all run here, after the helper's one attempt (sink_apply_first). Per-key
 * order and delivery rules 3 and 4 are therefore those of one batch after
 * the other. At most one batch is in flight, and while one is, this thread
 * calls no sink op: everything that does (flush, an end of partition's
 * offsets, trim, a rebalance, stop) lands it first. A lone record, or the
 * last batch of a backlog, is applied on this thread at once.
 */
struct fly_job {
    struct sink_run view; /* env and the batch's fields (borrowed from run->fly) */
    struct sink_first first;
    pthread_t thread;
    bool joinable;
};

#define SINK_BATCH_FIELDS(X)                                                                       \
    X(pending)                                                                                     \
    X(held) X(n_pending) X(cap_pending) X(first_pending_ms) X(recs) X(outs) X(docs) X(json[0])     \
        X(json[1]) X(json_at) X(todo) X(driver_rejected) X(control)

/* Exchanges the batch in hand with b. */
static void batch_swap(struct sink_run *run, struct sink_batch *b)
{
#define SK_SWAP_FIELD(f)                                                                           \
    {                                                                                              \
        __typeof__(run->f) t_ = run->f;                                                            \
        run->f = b->f;                                                                             \
        b->f = t_;                                                                                 \
    }
    SINK_BATCH_FIELDS(SK_SWAP_FIELD)
#undef SK_SWAP_FIELD
}

static void *fly_run(void *arg)
{
    struct fly_job *job = arg;
    sink_apply_first(&job->view, &job->first);
    return NULL;
}

/* Hands the decoded batch in hand to a helper thread (or, without one, applies it here). */
static void fly_dispatch(struct sink_run *run)
{
    struct fly_job *job = sk_calloc(1, sizeof(*job));
    batch_swap(run, &run->fly); /* in hand now: the spare arrays, empty */
    run->n_pending = 0;
    job->view.env = run->env;
#define SK_COPY_FIELD(f) job->view.f = run->fly.f;
    SINK_BATCH_FIELDS(SK_COPY_FIELD)
#undef SK_COPY_FIELD
    run->job = job;
    job->joinable =
        sk_thread_start(&job->thread, fly_run, job, "apply", run->env->runner.name) == 0;
    if (!job->joinable)
        fly_run(job);
}

/*
 * Lands the batch in flight: waits for the helper, then finishes the batch
 * here (retries, dead letters, offsets, snapshots), or with `apply` false
 * only drops it (the generation is gone, or the connector failed). -1 if it
 * was not applied (stop, revoked, fatal, or dropped): then nothing of it is
 * committed, and the caller drops the batch in hand too (its records come
 * again after the restart or reassignment, as the one before them does).
 */
static int fly_land(struct sink_run *run, bool apply)
{
    struct fly_job *job = run->job;
    if (!job)
        return 0;
    if (job->joinable)
        pthread_join(job->thread, NULL);
    run->job = NULL;
    batch_swap(run, &run->fly);
    int rc = apply ? sink_apply_decoded(run, &job->first) : -1;
    if (rc == 0) {
        batch_done(run);
    } else {
        sink_pending_drop(run);
        run->dropped = true;
    }
    batch_swap(run, &run->fly);
    free(job);
    return rc;
}

/* The batch in hand could not be applied (nor the one in flight): nothing is committed. */
static void flush_failed(struct sink_run *run)
{
    /* Not applied: not committed. The records come again after the
     * restart or reassignment. */
    sink_pending_drop(run);
    run->dropped = true;
    /* Given up to a rebalance, not failed: its records went to the member
     * given them, and this sink has nothing left to retry. Still "retrying"
     * it would hold /ready at 503 with the old error until a batch succeeds,
     * on a node that may be given none. Its next batch or its health check
     * says so again if the target is still down. */
    struct sk_runner *r = &run->env->runner;
    if (run->revoked_in_flush && !run->fatal && atomic_load(&r->state) == SK_STATE_RETRYING) {
        sk_info(r->name, "gave up the batch it was retrying: its partitions were revoked");
        sk_runner_set_state(r, SK_STATE_RUNNING);
        sk_runner_set_error(r, "");
    }
    run->revoked_in_flush = false;
    run->in_flush = false;
}

/* Applies the batch in flight, then the batch in hand, here; commits. */
static void flush(struct sink_run *run, bool sync_commit)
{
    if (run->in_flush)
        return;
    run->in_flush = true;
    if (fly_land(run, true) != 0 || (run->n_pending > 0 && sink_apply_pending(run) != 0)) {
        flush_failed(run);
        return;
    }
    batch_done(run);
    advance_to_eof(run);
    commit_parts(run, sync_commit);
    run->in_flush = false;
}

/*
 * A full batch while more records are queued: decodes it while the batch
 * in flight is applied, lands that one, commits its offsets, and sends this
 * one off. The partitions' ends wait for a flush: advance_to_eof is only
 * valid with nothing in hand or in flight.
 */
static void flush_async(struct sink_run *run)
{
    if (run->in_flush)
        return;
    run->in_flush = true;
    bool decoded = sink_decode_pending(run) == 0;
    bool landing = run->job != NULL;
    if (fly_land(run, true) != 0 || !decoded) {
        flush_failed(run);
        return;
    }
    if (landing)
        commit_parts(run, false);
    if (run->n_pending)
        fly_dispatch(run);
    run->in_flush = false;
}

/* ---- rebalancing ------------------------------------------------------------ */

static bool subscribed(const struct sk_sink_env *env, const char *topic)
{
    for (size_t i = 0; i < env->sink.n_entities; i++)
        if (strcmp(env->topics[i], topic) == 0)
            return true;
    return false;
}

static void fail(struct sink_run *run, const char *why);

/*
 * Whether a topic of the sink has other partitions than when the node first
 * met it (sk_kafka_pin): its keys moved, and the sink fails rather than apply
 * a key's records from two partitions in no order (kafka.h). given: every
 * partition of its topics (the shared consumer's), a group's share of them,
 * or NULL (what the node saw elsewhere: the lag monitor, the producer).
 */
static bool partitions_moved(struct sink_run *run, const rd_kafka_topic_partition_list_t *given,
                             char *why, size_t size)
{
    struct sk_sink_env *env = run->env;
    for (size_t i = 0; i < env->sink.n_entities; i++) {
        const char *topic = env->topics[i];
        if (sk_kafka_moved(env->kafka, topic, why, size))
            return true;
        int n = 0;
        for (int j = 0; given && j < given->cnt; j++)
            if (given->elems[j].partition >= n && strcmp(given->elems[j].topic, topic) == 0)
                n = given->elems[j].partition + 1;
        if (!n)
            continue;
        /* the shared consumer is given every partition: its count is the
         * topic's, and pins it if the node had not met it yet */
        int pin = sk_kafka_pin(env->kafka, topic, run->hub ? n : 0);
        if (pin && (run->hub ? n != pin : n > pin)) {
            sk_kafka_pin_seen(env->kafka, topic, n);
            sk_kafka_moved_why(why, size, topic, pin, n);
            return true;
        }
    }
    return false;
}

/*
 * The partitions of the sink's topics the group has not given it (0: it has
 * every one), from the count the node met at its start (sk_kafka_pin) or
 * else the broker's metadata; -1 if that cannot be read.
 */
static int missing_partitions(struct sink_run *run, const rd_kafka_topic_partition_list_t *given)
{
    struct sk_sink_env *env = run->env;
    int missing = 0;
    for (size_t i = 0; i < env->sink.n_entities && missing >= 0; i++) {
        int n = sk_kafka_pin(env->kafka, env->topics[i], 0);
        if (n <= 0)
            n = sk_kafka_partition_count(run->consumer, env->topics[i]);
        if (n < 0)
            missing = -1;
        for (int p = 0; p < n; p++)
            missing += !rd_kafka_topic_partition_list_find(given, env->topics[i], p);
    }
    return missing;
}

/*
 * A sink of a whole target (SK_TARGET_SHARED_WHOLE) applies only with every
 * partition of its topics: with a part it would relate records without the
 * ones they need (a Duty without its Person) and undo what the target holds.
 * One node runs it (§5.10), but the member of the node that ran it before
 * keeps its partitions until its session ends (10 s) or a node cut off
 * still holds some: until then it takes none, and says why.
 */
static bool takes_assignment(struct sink_run *run, rd_kafka_topic_partition_list_t *given)
{
    struct sk_sink_env *env = run->env;
    if (env->sink.ops->target_kind != SK_TARGET_SHARED_WHOLE)
        return true;
    int missing = missing_partitions(run, given);
    if (missing == 0)
        return true;
    char why[300];
    if (missing < 0)
        snprintf(why, sizeof(why), "cannot read its topics' partitions: taking none until the "
                                   "next assignment");
    else
        snprintf(why, sizeof(why),
                 "the group gave it %d partition(s) and %d more are held by another member (a "
                 "node that ran it before keeps them until its session ends): it needs every "
                 "one, and waits",
                 given->cnt, missing);
    sk_warn(env->runner.name, "%s", why);
    sk_runner_set_error(&env->runner, why);
    sk_runner_set_state(&env->runner, SK_STATE_RETRYING);
    run->partial = true;
    parts_clear(run);
    atomic_store(&env->runner.partitions, 0);
    rd_kafka_assign(run->consumer, NULL);
    return false;
}

/*
 * The partitions given (by its group, or on the shared consumer every one of
 * its topics') start where the target says. On the shared consumer a target
 * that cannot tell its offsets is an error (-1 with err): there is no group
 * offset to fall back on.
 */
static int on_assign(struct sink_run *run, rd_kafka_topic_partition_list_t *given,
                     struct sk_error *fail_err)
{
    struct sk_sink_env *env = run->env;
    char moved[1024];
    if (partitions_moved(run, given, moved, sizeof(moved))) {
        fail(run, moved);
        if (run->hub)
            return sk_error_set(fail_err, SK_ERR_FATAL, "%s", moved);
        parts_clear(run);
        atomic_store(&env->runner.partitions, 0);
        rd_kafka_assign(run->consumer, NULL);
        return 0;
    }
    if (!takes_assignment(run, given))
        return 0;
    if (run->partial) {
        run->partial = false;
        sk_info(env->runner.name, "given every partition now");
        sk_runner_set_error(&env->runner, "");
        sk_runner_set_state(&env->runner, SK_STATE_RUNNING);
    }
    /* Only topics this sink subscribes to: a stale assignment (see
     * instance_id) must never feed it another prefix's records. */
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(given->cnt);
    for (int i = 0; i < given->cnt; i++) {
        if (subscribed(env, given->elems[i].topic))
            rd_kafka_topic_partition_list_add(parts, given->elems[i].topic,
                                              given->elems[i].partition)
                ->offset = given->elems[i].offset;
        else
            sk_warn(env->runner.name, "assignment holds %s [%d], not subscribed: ignored",
                    given->elems[i].topic, (int)given->elems[i].partition);
    }
    struct sk_offsets stored = {0};
    bool in_target = false; /* the target told its offsets: it is the only record of them */
    if (env->sink.ops->stored_offsets) {
        struct sk_error err = {0};
        if (!env->sink.ops->stored_offsets(&env->sink, &stored, &err)) {
            in_target = true;
        } else if (run->hub) {
            rd_kafka_topic_partition_list_destroy(parts);
            return sk_error_set(fail_err, SK_ERR_RETRIABLE, "stored offsets unavailable: %s",
                                err.msg);
        } else {
            sk_warn(env->runner.name, "stored offsets unavailable (%s): using the group's",
                    err.msg);
        }
    }
    int from_start = 0;
    struct sk_estore *store = sk_kafka_estore(env->kafka);
    bool look = in_target && sk_estore_first_look(store, env->runner.name);
    int behind = 0;
    char first_behind[320] = "";
    parts_clear(run);
    run->dropped = false; /* the consumer starts again where the target or group says */
    run->parts = sk_calloc((size_t)parts->cnt + 1, sizeof(*run->parts));
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        struct part *p = &run->parts[run->n_parts++];
        p->topic = sk_strdup(tp->topic);
        p->partition = tp->partition;
        p->next = -1;
        p->eof = -1;
        p->drain_target = -1;
        for (size_t j = 0; j < stored.n; j++) {
            if (stored.v[j].partition == tp->partition &&
                strcmp(stored.v[j].topic, tp->topic) == 0) {
                /* Exactly-once apply: resume where the target says it is. */
                tp->offset = stored.v[j].next_offset;
                p->next = stored.v[j].next_offset;
            }
        }
        /* The embedded broker's store lost records the target applied: the
         * offsets past its end belong to new records (§5.8). */
        int64_t end = look ? sk_estore_restored_end(store, tp->topic, tp->partition) : -1;
        if (end >= 0 && p->next > end) {
            if (!behind++)
                snprintf(first_behind, sizeof(first_behind), "%s [%d] at %lld, the store %lld",
                         tp->topic, (int)tp->partition, (long long)p->next, (long long)end);
            tp->offset = end;
            p->next = end;
        }
        /* A target without an offset for the partition applied nothing of
         * it (a new or emptied database): from the start, whatever the group
         * committed for the target it had before. */
        if (in_target && p->next < 0) {
            tp->offset = RD_KAFKA_OFFSET_BEGINNING;
            from_start++;
        }
    }
    if (behind)
        sk_warn(env->runner.name,
                "the target applied %d partition(s) further than the embedded store holds (%s; "
                "an older copy of it, or its -wal lost): resuming where the store ends",
                behind, first_behind);
    run->member_lost_ms = 0; /* a member again */
    sink_seen_now(run);
    atomic_store(&env->runner.partitions, parts->cnt);
    char how[96] = "";
    if (stored.n && from_start)
        snprintf(how, sizeof(how),
                 " (resuming at offsets stored in the target, %d from the start)", from_start);
    else if (stored.n)
        snprintf(how, sizeof(how), " (resuming at offsets stored in the target)");
    else if (from_start)
        snprintf(how, sizeof(how), " (none stored in the target: from the start)");
    bool paused = atomic_load(&env->runner.paused);
    sk_info(env->runner.name, "assigned %d partition(s)%s%s", parts->cnt, how,
            paused ? ", paused by an operator" : "");
    sk_offsets_free(&stored);
    if (run->hub) {
        sk_sink_hub_resume(run->hub, parts);
        if (paused) /* the loop resumes it with the operator */
            sk_sink_hub_suspend(run->hub);
    } else {
        /* librdkafka keeps an application's pause on a partition through a
         * revoke and an assign: one paused for a retry that the rebalance
         * ended (revoked_in_flush: nothing resumes it) would never fetch
         * again. Resumed before the assign, so its fetch starts after. */
        if (!paused && parts->cnt)
            rd_kafka_resume_partitions(run->consumer, parts);
        rd_kafka_assign(run->consumer, parts);
    }
    /* An operator's pause holds across rebalances: the new partitions are
     * paused too (the loop pauses only what was assigned when it saw it). */
    if (!run->hub && paused && parts->cnt)
        rd_kafka_pause_partitions(run->consumer, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    return 0;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct sink_run *run = opaque;
    atomic_fetch_add(&run->env->runner.kafka_rebalances, 1);
    switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        on_assign(run, parts, NULL); /* its own consumer: the group's offsets if need be */
        break;
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
        if (run->in_flush) {
            run->revoked_in_flush = true; /* the retrying batch gives up; nothing committed */
        } else if (!rd_kafka_assignment_lost(rk)) {
            flush(run, true); /* finish the batch in hand, then commit synchronously */
        } else {
            fly_land(run, false); /* the generation is gone: do not commit */
            sink_pending_drop(run);
        }
        sk_info(run->env->runner.name, "partitions revoked%s",
                rd_kafka_assignment_lost(rk) ? " (assignment lost)" : "");
        parts_clear(run);
        atomic_store(&run->env->runner.partitions, 0);
        rd_kafka_assign(rk, NULL);
        break;
    default:
        sk_warn(run->env->runner.name, "rebalance: %s", rd_kafka_err2str(err));
        parts_clear(run);
        atomic_store(&run->env->runner.partitions, 0);
        rd_kafka_assign(rk, NULL);
        break;
    }
}

/* The client's own errors (a broker down, a connection refused): counted and
 * logged; a fatal one fails the connector in client_failed. */
static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    (void)err;
    struct sink_run *run = opaque;
    sk_runner_kafka_error(&run->env->runner, reason);
}

static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    struct sink_run *run = opaque;
    return sk_runner_kafka_stats(&run->env->runner, json, len);
}

/*
 * The static member id: the group name plus a fingerprint of the topics the
 * sink subscribes to. A static leader that rejoins is handed its previous
 * assignment (KIP-814): after a change of kafka.topic_prefix or of a sink's
 * entities the same id would keep consuming the old topics and never the new
 * ones (seen in the bench). A new subscription is a new member; the old one
 * leaves the group when its session times out.
 */
static char *instance_id(const struct sk_sink_env *env)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < env->sink.n_entities; i++)
        for (const char *c = env->topics[i];; c++) {
            h = (h ^ (unsigned char)*c) * 16777619u;
            if (!*c)
                break;
        }
    return sk_name_sink_member(sk_kafka_names(env->kafka), env->group, env->sink.ops->target_kind,
                               h);
}

size_t sk_sink_prefetch_kbytes(size_t n_sinks)
{
    enum { BUDGET = 64 * 1024, MOST = 8 * 1024, LEAST = 1024 };
    size_t share = n_sinks > 0 ? BUDGET / n_sinks : MOST;
    return share > MOST ? MOST : share < LEAST ? LEAST : share;
}

/*
 * On the node's shared consumer (sink_hub.h): every partition of its topics,
 * from where the target says (on_assign), with its share of the prefetch
 * budget as its queue's bound. Its group is never joined: it gets the
 * target's offsets for the lag report (commit_parts).
 */
static int hub_join(struct sink_run *run, struct sk_error *err)
{
    struct sk_sink_env *env = run->env;
    size_t kb = env->prefetch_kbytes ? env->prefetch_kbytes : sk_sink_prefetch_kbytes(1);
    rd_kafka_topic_partition_list_t *all = rd_kafka_topic_partition_list_new(0);
    run->hub = sk_sink_hub_attach(env->hubs, env->runner.name, all, kb * 1024,
                                  &env->runner, err);
    int rc = -1;
    if (!run->hub)
        goto out;
    sink_migrate_offsets(env);
    for (size_t i = 0; i < env->sink.n_entities; i++) {
        int n = sk_sink_hub_partition_count(run->hub, env->topics[i]);
        /* Brokers that do not answer (an outage at start): it waits, as a
         * consumer of its own waits for its group's assignment. */
        while (n < 0 && !atomic_load(&env->runner.stop)) {
            char why[300];
            snprintf(why, sizeof(why), "cannot read the partitions of %s: waiting for the brokers",
                     env->topics[i]);
            if (atomic_load(&env->runner.state) != SK_STATE_RETRYING)
                sk_warn(env->runner.name, "%s", why);
            sk_runner_set_error(&env->runner, why);
            sk_runner_set_state(&env->runner, SK_STATE_RETRYING);
            sk_sleep_ms(1000);
            n = sk_sink_hub_partition_count(run->hub, env->topics[i]);
        }
        if (n < 0) { /* stopped meanwhile: nothing to apply, nothing failed */
            rc = 0;
            goto out;
        }
        sk_runner_set_error(&env->runner, "");
        for (int p = 0; p < n; p++)
            rd_kafka_topic_partition_list_add(all, env->topics[i], p)->offset =
                RD_KAFKA_OFFSET_INVALID;
    }
    sk_info(env->runner.name,
            "shared consumer of the node, prefetch %zu KiB (its queue's bound); group %s for the "
            "lag report",
            kb, env->group);
    rc = on_assign(run, all, err);
    atomic_fetch_add(&env->runner.kafka_rebalances, 1); /* its assignment, as a group's */
out:
    rd_kafka_topic_partition_list_destroy(all);
    return rc;
}

static int consumer_create(struct sink_run *run, struct sk_error *err)
{
    struct sk_sink_env *env = run->env;
    if (env->hubs)
        return hub_join(run, err);
    char *cid = sk_name_client(sk_kafka_names(env->kafka), "sink", env->runner.name);
    const char *group = env->group;
    char *instance = instance_id(env);
    /* Bounded memory (README "Memory"): the fetcher keeps at most this much
     * per consumer ahead of the sink, whatever the target's speed. */
    size_t kb = env->prefetch_kbytes ? env->prefetch_kbytes : sk_sink_prefetch_kbytes(1);
    char queued[24], fetch[24];
    snprintf(queued, sizeof(queued), "%zu", kb);
    snprintf(fetch, sizeof(fetch), "%zu", kb * 1024);
    /* clang-format off */
    const char *const defaults[] = {
        "queued.max.messages.kbytes", queued,
        "fetch.max.bytes", fetch,
        "statistics.interval.ms", sk_kafka_statistics_interval(env->kafka),
        /* a new subscription waits for the old member's session to end
         * (instance_id), and a dead node's partitions move this fast */
        "session.timeout.ms", "10000",
        /* --once ends when every partition reported its end, and an end is
         * reported by an empty fetch, which the broker holds for
         * fetch.wait.max.ms (500): a drained sink waited ~1 s for nothing
         * (bench/analysis.md §2). Records come at once either way; only
         * idle fetches are more frequent. Without --once the list ends here. */
        env->once ? "fetch.wait.max.ms" : NULL, "100",
        NULL};
    /* clang-format on */
    rd_kafka_conf_t *conf = sk_kafka_conf_new(env->kafka, cid, defaults, err);
    int rc = -1;
    if (!conf)
        goto out;
    /* Static membership: a restarted daemon (even after kill -9) takes its
     * partitions back at once instead of waiting out the old session. */
    if (sk_kafka_conf_set(conf, "group.id", group, err) ||
        sk_kafka_conf_set(conf, "group.instance.id", instance, err) ||
        sk_kafka_conf_set(conf, "isolation.level", "read_committed", err) ||
        sk_kafka_conf_set(conf, "enable.auto.commit", "false", err) ||
        sk_kafka_conf_set(conf, "enable.auto.offset.store", "false", err) ||
        sk_kafka_conf_set(conf, "auto.offset.reset", "earliest", err) ||
        sk_kafka_conf_set(conf, "enable.partition.eof", "true", err) ||
        sk_kafka_conf_set(conf, "partition.assignment.strategy", "roundrobin", err)) {
        rd_kafka_conf_destroy(conf);
        goto out;
    }
    if (sk_kafka_embedded(env->kafka) &&
        (sk_kafka_conf_set(conf, "session.timeout.ms", "6000", err) ||
         sk_kafka_conf_set(conf, "heartbeat.interval.ms", "500", err))) {
        rd_kafka_conf_destroy(conf);
        goto out;
    }
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    run->consumer = sk_kafka_client_new(RD_KAFKA_CONSUMER, conf, stats_cb, run, err);
    if (!run->consumer)
        goto out;
    rd_kafka_poll_set_consumer(run->consumer);
    run->queue = rd_kafka_queue_get_consumer(run->consumer);
    sk_kafka_consumer_created(env->kafka, run->consumer);
    sink_migrate_offsets(env);
    /* The prefetch as the client took it (read back: a kafka.properties
     * entry may have changed it). */
    char got[24] = "?";
    size_t got_size = sizeof(got);
    rd_kafka_conf_get(rd_kafka_conf(run->consumer), "queued.max.messages.kbytes", got, &got_size);
    sk_info(env->runner.name, "consumer group %s, static member %s, prefetch %s KiB", group,
            instance, got);
    rd_kafka_topic_partition_list_t *subs =
        rd_kafka_topic_partition_list_new((int)env->sink.n_entities);
    for (size_t i = 0; i < env->sink.n_entities; i++)
        rd_kafka_topic_partition_list_add(subs, env->topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(run->consumer, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (e) {
        sk_error_set(err, SK_ERR_FATAL, "subscribe: %s", rd_kafka_err2str(e));
        goto out;
    }
    rc = 0;
out:
    free(cid);
    free(instance);
    return rc;
}

/* ---- client failures ------------------------------------------------------------ */

/* A member that keeps being unknown to its group this long has not rejoined by itself. */
#define MEMBER_RECOVERY_MS 30000

/* The connector fails with why: state failed, last_error, /ready 503, and the
 * supervisor restarts it with a new consumer (rule 4, no silent death). */
static void fail(struct sink_run *run, const char *why)
{
    struct sk_runner *r = &run->env->runner;
    if (run->fatal)
        return; /* the first reason is the one */
    sk_error_log(r->name, "%s: failing the connector", why);
    sk_runner_set_error(r, why);
    run->fatal = true;
}

/*
 * A consumer error that librdkafka cannot get past by itself fails the
 * connector; the rest (a broker down, a transport error) are logged and the
 * client carries on. A fenced static member gets a fatal error
 * (docs/architecture.md §8.7): without this the sink reported itself idle
 * and never consumed again.
 */
static void client_error(struct sink_run *run, rd_kafka_resp_err_t e, const char *msg)
{
    char why[600];
    atomic_fetch_add(&run->env->runner.kafka_errors, 1);
    switch (e) {
    case RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
        snprintf(why, sizeof(why), "consumer: %s (%s)", rd_kafka_err2name(e), msg);
        fail(run, why);
        return;
    case RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID:
    case RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION:
        /* librdkafka rejoins; an assignment (on_assign) clears this */
        if (!run->member_lost_ms)
            run->member_lost_ms = sk_mono_ms();
        break;
    default:
        break;
    }
    sk_warn(run->env->runner.name, "consume: %s", msg);
}

/* True when the consumer cannot go on (the connector then fails): a fatal
 * client error (§8.2: only a new client gets past it), or a membership that
 * did not recover. */
static bool client_failed(struct sink_run *run)
{
    char buf[512], why[600];
    unsigned moves = sk_kafka_pins_moved(run->env->kafka);
    if (moves != run->pins_moved) { /* a topic of the node's changed its partitions */
        char moved[1024];
        run->pins_moved = moves;
        if (partitions_moved(run, NULL, moved, sizeof(moved)))
            fail(run, moved);
    }
    if (run->hub) {
        if (!run->fatal && sk_sink_hub_failed(run->hub, buf, sizeof(buf)))
            fail(run, buf);
        return run->fatal;
    }
    rd_kafka_resp_err_t e = rd_kafka_fatal_error(run->consumer, buf, sizeof(buf));
    if (e && !run->fatal) {
        snprintf(why, sizeof(why), "fatal consumer error: %s (%s)", rd_kafka_err2name(e), buf);
        fail(run, why);
    }
    if (!run->fatal && run->member_lost_ms &&
        sk_mono_ms() - run->member_lost_ms > MEMBER_RECOVERY_MS) {
        snprintf(why, sizeof(why), "consumer: no longer a member of its group for %d s",
                 MEMBER_RECOVERY_MS / 1000);
        fail(run, why);
    }
    return run->fatal;
}

/*
 * --once: the sink is drained when every partition reached the end offset
 * taken once the sources finished. That end is the high watermark, not the
 * last stable offset: the sources' last commit has returned, but its markers
 * (which move the last stable offset) may not be written yet, and a target
 * taken before them ended a run with records of the last transaction
 * unapplied. The consumer reads committed only, and its partition EOF moves
 * past markers and aborted records, so it reaches the watermark once the
 * markers are there. The ends are asked by a separate short-lived client: on
 * the consumer's own connection the request would queue behind each
 * partition's long-polling fetch.
 *
 * list_ends: every assigned partition's high watermark into ends[i]; -1 when
 * the brokers did not answer within 10 s.
 */
static int list_ends(struct sink_run *run, int64_t *ends)
{
    struct sk_error err = {0};
    char *cid = sk_name_client(sk_kafka_names(run->env->kafka), "drain", run->env->runner.name);
    rd_kafka_t *rk = sk_kafka_hw_reader_new(run->env->kafka, cid, &err);
    free(cid);
    if (!rk)
        return -1;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)run->n_parts);
    for (size_t i = 0; i < run->n_parts; i++)
        rd_kafka_topic_partition_list_add(l, run->parts[i].topic, run->parts[i].partition);
    int rc = sk_kafka_list_offsets(rk, l, RD_KAFKA_OFFSET_END, 10000) ? -1 : 0;
    for (size_t i = 0; rc == 0 && i < run->n_parts; i++)
        ends[i] = l->elems[i].offset;
    rd_kafka_topic_partition_list_destroy(l);
    sk_kafka_destroy_within(rk, SK_KAFKA_DESTROY_MS, run->env->runner.name);
    return rc;
}

static int query_drain_targets(struct sink_run *run)
{
    int64_t *ends = sk_calloc(run->n_parts + 1, sizeof(*ends));
    int rc = list_ends(run, ends);
    for (size_t i = 0; rc == 0 && i < run->n_parts; i++)
        run->parts[i].drain_target = ends[i];
    free(ends);
    return rc;
}

/*
 * The sink's own output made from what it applied (connector.h: publish).
 * Under --once a failure fails the sink, so the run exits 1; at a stop it is
 * logged. Whether it was made (or there was nothing to make).
 */
static bool publish(struct sink_run *run, bool once)
{
    struct sk_sink_env *env = run->env;
    if (!env->sink.ops->publish)
        return true;
    struct sk_error err = {0};
    if (env->sink.ops->publish(&env->sink, &err) == 0)
        return true;
    char why[sizeof(err.msg) + 32];
    snprintf(why, sizeof(why), "publishing: %s", err.msg);
    if (once)
        fail(run, why);
    else
        sk_error_log(env->runner.name, "%s", why);
    return false;
}

static void check_drained(struct sink_run *run)
{
    struct sk_runner *r = &run->env->runner;
    if (!atomic_load(&r->drain_requested) || atomic_load(&r->drained) || run->n_pending ||
        run->job || run->n_parts == 0)
        return;
    bool targets = true;
    for (size_t i = 0; i < run->n_parts; i++)
        targets &= run->parts[i].drain_target >= 0;
    if (!targets && query_drain_targets(run))
        return; /* try again on the next round */
    for (size_t i = 0; i < run->n_parts; i++)
        if (run->parts[i].next < run->parts[i].drain_target)
            return;
    commit_parts(run, true);
    if (!publish(run, true))
        return;
    atomic_store(&r->drained, true);
    sk_runner_set_state(r, SK_STATE_IDLE);
    sk_runner_notify(r);
}

/* ---- a fetch that stopped --------------------------------------------------------- */

/* A lag sample counts once it read the offsets this long after the sink last
 * got anything: it commits what it applied asynchronously. */
#define LAG_SETTLE_MS 2000

void sink_seen_now(struct sink_run *run)
{
    run->seen_ms = sk_mono_ms();
}

/* Closes the consumer (the revocation commits what was applied) and makes a new one. */
static void consumer_renew(struct sink_run *run, const char *why)
{
    struct sk_runner *r = &run->env->runner;
    atomic_fetch_add(&r->kafka_renewals, 1);
    if (run->hub) { /* the stall is the shared client's: every sink on it resumes on a new one */
        sk_sink_hub_renew(run->hub, why);
        run->renewed = true;
        sink_seen_now(run);
        return;
    }
    sk_warn(r->name, "%s: replacing its Kafka consumer", why);
    rd_kafka_consumer_close(run->consumer);
    rd_kafka_queue_destroy(run->queue); /* every object before its handle */
    run->queue = NULL;
    sk_kafka_destroy_within(run->consumer, SK_KAFKA_DESTROY_MS, r->name);
    run->consumer = NULL;
    run->renewed = true;
    sink_seen_now(run);
    struct sk_error err = {0};
    if (consumer_create(run, &err)) {
        char msg[600];
        snprintf(msg, sizeof(msg), "a new consumer: %s", err.msg);
        fail(run, msg);
    }
}

/*
 * librdkafka 2.0.2's consumer can stop fetching a partition for good after
 * its leader moved, with no error (docs/architecture.md §8.14f): the sink
 * said "running" with records to go and applied nothing more. Only a new
 * client gets past it. A sink with nothing in hand, behind the end of its
 * partitions, that got nothing from its consumer for fetch_stall_timeout
 * (counted from its last batch, pause or resume: sink_seen_now)
 * replaces the consumer (skolsync_kafka_consumer_renewals_total); when the
 * new one gets nothing either, the sink fails and the supervisor restarts it
 * (under --once the run fails, instead of hanging).
 *
 * Behind: under --once, once the drain targets are known, a partition short
 * of its own; otherwise the lag monitor's last sample of the sink's own
 * partitions, read after it last got anything.
 */
static void check_fetching(struct sink_run *run)
{
    struct sk_runner *r = &run->env->runner;
    int64_t bound = run->env->settings.fetch_stall_ms;
    int st = atomic_load(&r->state);
    /* a batch in hand or retrying, or end offsets the target refused: its
     * lag is the target's to clear, not the consumer's */
    if (!bound || run->n_pending || run->job || !run->n_parts || run->marks_pending ||
        (st != SK_STATE_RUNNING && st != SK_STATE_IDLE))
        return;
    int64_t now = sk_mono_ms(), quiet_s = (now - run->seen_ms) / 1000;
    bool quiet = now - run->seen_ms >= bound;
    char why[512] = "";
    const struct part *short_of = NULL; /* the first partition short of its drain target */
    bool targets = false;
    for (size_t i = 0; i < run->n_parts; i++) {
        const struct part *p = &run->parts[i];
        targets |= p->drain_target >= 0;
        if (!short_of && p->drain_target >= 0 && p->next < p->drain_target)
            short_of = p;
    }
    bool behind = short_of != NULL;
    if (short_of && quiet) {
        char done[48] = "none applied yet";
        if (short_of->next >= 0)
            snprintf(done, sizeof(done), "applied up to %lld", (long long)short_of->next);
        snprintf(why, sizeof(why),
                 "%s [%d] is short of its end (offset %lld, %s) and nothing fetched for %lld s",
                 short_of->topic, (int)short_of->partition, (long long)short_of->drain_target,
                 done, (long long)quiet_s);
    }
    int64_t lag = atomic_load(&r->sampled_lag), at = atomic_load(&r->sampled_lag_ms);
    bool known = targets || (lag >= 0 && at - run->seen_ms >= LAG_SETTLE_MS);
    if (!targets) {
        behind = known && lag > 0;
        if (behind && quiet)
            snprintf(why, sizeof(why), "%lld record(s) behind and nothing fetched for %lld s",
                     (long long)lag, (long long)quiet_s);
    }
    if (known && !behind)
        run->renewed = false; /* caught up: a later stall is a new one */
    if (!why[0])
        return;
    /* Silent, not cut off: brokers that do not answer (an outage) are no
     * reason for a new consumer, which could not fetch either. */
    int64_t *ends = sk_calloc(run->n_parts + 1, sizeof(*ends));
    bool answer = list_ends(run, ends) == 0;
    free(ends);
    if (!answer) {
        sk_warn(r->name, "%s, and the brokers do not answer: waiting for them", why);
        sink_seen_now(run);
        return;
    }
    if (!run->renewed) {
        consumer_renew(run, why);
        return;
    }
    char msg[600];
    snprintf(msg, sizeof(msg), "%s, with a new consumer too", why);
    fail(run, msg);
}

/*
 * The batch's arrays for cap records (cap 0: freed). A sink that has caught
 * up gives them back: ~0.3 MB at batch_size 500, more than the rest of an
 * idle sink's heap.
 */
static void batch_arrays(struct sink_run *run, size_t cap)
{
    free(run->pending);
    free(run->held);
    free(run->recs);
    free(run->outs);
    free(run->docs);
    free(run->json_at);
    free(run->todo);
    free(run->driver_rejected);
    free(run->control);
    run->pending = cap ? sk_calloc(cap, sizeof(*run->pending)) : NULL;
    run->held = cap ? sk_calloc(cap, sizeof(*run->held)) : NULL;
    run->recs = cap ? sk_calloc(cap, sizeof(*run->recs)) : NULL;
    run->outs = cap ? sk_calloc(cap, sizeof(*run->outs)) : NULL;
    run->docs = cap ? sk_calloc(cap, sizeof(*run->docs)) : NULL;
    run->json_at = cap ? sk_calloc(cap, sizeof(*run->json_at)) : NULL;
    run->todo = cap ? sk_calloc(cap, sizeof(*run->todo)) : NULL;
    run->driver_rejected = cap ? sk_calloc(cap, sizeof(*run->driver_rejected)) : NULL;
    run->control = cap ? sk_calloc(cap, sizeof(*run->control)) : NULL;
    run->cap_pending = cap;
}

/* Frees the arrays and JSON text of the batch in hand and of the spare (nothing in flight). */
static void batch_release(struct sink_run *run)
{
    for (int k = 0; k < 2; k++) {
        sk_buf_free(&run->json[0]);
        sk_buf_free(&run->json[1]);
        batch_arrays(run, 0);
        batch_swap(run, &run->fly);
    }
}

/* A partition's end or an error, taken from the consumer or the shared one. */
static void message_done(rd_kafka_message_t *m, struct sk_hub_msg *held)
{
    if (held)
        sk_sink_hub_release(held);
    else
        rd_kafka_message_destroy(m);
}

/* A second of empty polls (100 ms each) before an idle sink trims. */
#define TRIM_AFTER_IDLE_POLLS 10

static void *sink_thread(void *arg)
{
    struct sk_sink_env *env = arg;
    struct sk_runner *r = &env->runner;
    struct sink_run run = {.env = env};
    size_t batch = (size_t)env->settings.batch_size;
    batch_arrays(&run, batch);

    struct sk_error err = {0};
    if (consumer_create(&run, &err)) {
        /* failed, not stopped: the supervisor restarts it, a --once run
         * fails (it used to wait for a sink that said "stopped") */
        fail(&run, err.msg);
        goto out;
    }
    sk_runner_set_state(r, SK_STATE_RUNNING);
    bool paused = false;
    bool applied_since_trim = false;
    int idle_polls = 0;
    int polls_noted = 0; /* polls since the queue's length was last read */
    while (!atomic_load(&r->stop) && !run.fatal) {
        /* Operator pause (API): apply what is in hand, then stop fetching but
         * stay in the group. */
        if (atomic_load(&r->paused) != paused) {
            paused = !paused;
            if (paused)
                flush(&run, true);
            sink_pause_all(&run, paused);
            sk_runner_set_state(r, paused ? SK_STATE_PAUSED : SK_STATE_RUNNING);
        }
        /* With records in hand, only take what the consumer already has
         * queued: none queued means the batch is complete (below). */
        int wait_ms = run.n_pending || run.job ? 0 : 100;
        struct sk_hub_msg *held = NULL;
        rd_kafka_message_t *m = run.hub ? sk_sink_hub_poll(run.hub, wait_ms, &held)
                                        : rd_kafka_consumer_poll(run.consumer, wait_ms);
        bool queued = m != NULL;
        /* fetched, not yet taken (skolsync_kafka_queued_messages): when the
         * queue ran dry, and every 256 records of a backlog (a lock each) */
        if ((run.queue || run.hub) && (!queued || ++polls_noted >= 256)) {
            atomic_store(&r->kafka_queued,
                         (int_fast64_t)(run.hub ? sk_sink_hub_queued(run.hub)
                                                : rd_kafka_queue_length(run.queue)));
            polls_noted = 0;
        }
        if (run.hub) { /* the group's offsets still owed (commit_parts) */
            struct sk_error cerr = {0};
            sk_sink_hub_commit(run.hub, env->group, NULL, false, &cerr);
        }
        /* Nothing more queued: the batch in flight lands now (its offsets
         * are committed at once, not with the next batch). */
        if (!queued && run.job && !run.n_pending)
            flush(&run, false);
        idle_polls = m || run.n_pending ? 0 : idle_polls + 1;
        if (idle_polls >= TRIM_AFTER_IDLE_POLLS && applied_since_trim) {
            /* caught up and quiet: the connector's caches, the batch's arrays
             * and JSON text go, then glibc gives the freed heap back (see
             * source_driver.c). Not at once: during a bulk load the sink
             * catches up with the source many times a second, and refilling
             * the caches each time cost CPU. */
            if (env->sink.ops->trim)
                env->sink.ops->trim(&env->sink);
            batch_release(&run);
            if (run.hub)
                sk_sink_hub_trim(run.hub);
            malloc_trim(0);
            applied_since_trim = false;
        }
        if (m)
            applied_since_trim = true;
        if (m) {
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                struct part *p = part_find(&run, rd_kafka_topic_name(m->rkt), m->partition);
                /* Resumed at the target's offsets with nothing to apply: the
                 * group learns them too (a restored embedded broker has no
                 * group offsets; lag would count the whole topic). */
                bool resumed_at_end = p && p->eof < 0 && p->next >= m->offset;
                if (p && m->offset > p->eof)
                    p->eof = m->offset;
                sink_seen_now(&run); /* records are counted at their batch (batch_done) */
                message_done(m, held);
                if (run.n_pending || run.job)
                    flush(&run, false); /* reached the end: do not linger */
                else if (advance_to_eof(&run) || resumed_at_end)
                    commit_parts(&run, false);
            } else if (m->err) {
                client_error(&run, m->err, rd_kafka_message_errstr(m));
                message_done(m, held);
            } else {
                if (run.n_pending == 0)
                    run.first_pending_ms = sk_mono_ms();
                if (!run.cap_pending)
                    batch_arrays(&run, batch); /* given back when it last caught up */
                run.held[run.n_pending] = held;
                run.pending[run.n_pending++] = m;
                if (run.n_pending == run.cap_pending)
                    flush_async(&run); /* full: more may be queued */
            }
        }
        if (client_failed(&run))
            break;
        /* A batch is applied once nothing more is queued (a lone change
         * waits for no batch to fill: docs/architecture.md §3.7), or after
         * batch_linger while records keep coming. A bulk load keeps the
         * fetcher's queue full, so its batches still fill to batch_size. */
        if (run.n_pending && !queued)
            flush(&run, false);
        else if (run.n_pending &&
                 sk_mono_ms() - run.first_pending_ms >= env->settings.batch_linger_ms)
            flush_async(&run);
        check_drained(&run);
        if (paused)
            continue;
        check_fetching(&run);
        if (run.fatal)
            break;
        /* end offsets the target refused (it was down): again, once a second */
        if (run.marks_pending && !run.n_pending && !run.job &&
            sk_mono_ms() - run.mark_retry_ms > 1000) {
            run.mark_retry_ms = sk_mono_ms();
            if (advance_to_eof(&run))
                commit_parts(&run, false);
        }
        check_health(&run);
        if (run.fatal)
            break;
        if (!run.n_pending && !run.job && atomic_load(&r->state) == SK_STATE_RUNNING &&
            run.n_parts &&
            !atomic_load(&r->drain_requested)) {
            bool caught_up = true;
            for (size_t i = 0; i < run.n_parts; i++)
                if (run.parts[i].eof < 0 || run.parts[i].next < run.parts[i].eof)
                    caught_up = false;
            if (caught_up) {
                sk_runner_set_state(r, SK_STATE_IDLE);
                if (env->sink.ops->caught_up)
                    env->sink.ops->caught_up(&env->sink);
            }
        } else if ((run.n_pending || run.job) && atomic_load(&r->state) == SK_STATE_IDLE) {
            sk_runner_set_state(r, SK_STATE_RUNNING);
        }
    }
    /* Rule 5: apply what is in hand (unless the target is failing), commit, leave. */
    if (!run.fatal) {
        flush(&run, true);
        if (!atomic_load(&r->drained)) /* a --once drain published already */
            publish(&run, false);
    } else {
        fly_land(&run, false);
        sink_pending_drop(&run);
        run.dropped = true; /* the close's revocation must not move to the ends */
    }
    if (run.consumer) /* NULL: a renewal could not create one */
        rd_kafka_consumer_close(run.consumer);
out:
    sk_sink_hub_detach(run.hub); /* every record it handed is released by now */
    /* librdkafka: every object (the queue) before its handle */
    if (run.queue)
        rd_kafka_queue_destroy(run.queue);
    if (run.consumer) /* also one that could not subscribe */
        sk_kafka_destroy_within(run.consumer, SK_KAFKA_DESTROY_MS, r->name);
    atomic_store(&r->partitions, 0);
    sk_dlq_writer_free(run.dlq);
    parts_clear(&run);
    batch_release(&run);
    sink_snapshots_free(&run);
    sk_runner_set_state(r, run.fatal ? SK_STATE_FAILED : SK_STATE_STOPPED);
    return NULL;
}

int sk_sink_driver_start(struct sk_sink_env *env)
{
    if (sk_thread_start(&env->runner.thread, sink_thread, env, "sink", env->runner.name))
        return -1;
    env->runner.started = true;
    return 0;
}
