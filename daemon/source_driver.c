/*
 * source_driver.c: runs one source connector: poll -> produce -> cursor.
 *
 * The producer, transactions and delivery reports are source_produce.c's.
 *
 * Delivery rules (docs/architecture.md §4):
 *  1. Exactly-once (real broker): each batch (or group of batches a source
 *     that chains polls had ready, deliver_group), its dead letters and its new
 *     cursor are one Kafka transaction; on any error the transaction is
 *     aborted and the source is polled again from the last committed cursor.
 *  2. At-least-once (embedded broker, or exactly_once off): the cursor record
 *     is produced only after every delivery report of the batch succeeded.
 *     A failed report does not prove the record is absent
 *     (docs/architecture.md §8.1): the batch is sent again; sinks are idempotent.
 * The cursor in memory moves only after Kafka acknowledged the batch.
 *
 * A record Kafka can never take (too large, invalid) goes to the dead-letter
 * topic with its batch, so it blocks its source no longer than one retry.
 *
 * Must never: advance the cursor past unacknowledged data, or retry a produce
 * in the application (librdkafka retries; we re-poll the whole batch).
 */
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "model.h"
#include "source_run.h"
#include "util.h"

const struct sk_option sk_source_settings_options[] = {
    {"type", SK_OPT_STRING, NULL, true, "connector type (skolsync connectors lists them)",
     offsetof(struct sk_source_settings, type)},
    {"poll_interval", SK_OPT_DURATION, "5m", false,
     "time between poll cycles once the source is idle",
     offsetof(struct sk_source_settings, poll_interval_ms), .min = 10, .max = 7LL * 86400000},
    SK_FAILURE_POLICY_OPTIONS,
    {0},
};

/*
 * How much a group of batches may hold (source_group_*): a chaining source's
 * batches that are ready one after the other go in one transaction, up to
 * this many records or this long since the group began (a transaction is
 * visible to read_committed sinks only once it is committed). Each commit
 * costs more than its round trip: the broker writes a marker into every
 * partition the transaction touched, and the next transaction's
 * AddPartitionsToTxn is refused (CONCURRENT_TRANSACTIONS, retried every
 * ~20 ms) until it has; seen at up to 850 ms right after the topics were
 * created. At 500 ms a 10k full sync that took a little longer than that
 * ended with a second, small transaction waiting for the first one's
 * markers (0.4 s became 1.5-1.8 s); 2 s keeps a small sync in one.
 */
#define GROUP_RECORDS 50000
#define GROUP_MS 2000

/* What a group delivers, counted as its batches are produced, told once it is stored. */
struct group {
    size_t batches, records, bad;
    uint64_t per_entity[SK_ENTITY_COUNT];
    bool more; /* the last batch's */
    uint64_t progress_done, progress_total;
    struct sk_cursor cursor; /* the last batch's cursor that came with one */
    bool has_cursor;
};

static void tally(struct group *g, struct source_run *run, struct sk_batch *b)
{
    g->batches++;
    for (size_t i = 0; i < b->n; i++) {
        int idx = sk_entity_index(b->recs[i].entity);
        if (idx >= 0)
            g->per_entity[idx]++;
    }
    g->records += b->n;
    g->bad += b->n_bad;
    for (size_t i = 0; i < b->n_bad; i++)
        sk_warn(run->env->runner.name, "dead-lettered %s: %s", b->bad[i].where, b->bad[i].err.msg);
    if (b->progress_total || b->progress_done) {
        g->progress_done = b->progress_done;
        g->progress_total = b->progress_total;
    }
    g->more = b->more;
    if (b->has_cursor) {
        free(g->cursor.data);
        g->cursor = b->cursor;
        g->has_cursor = true;
        b->cursor.data = NULL;
        b->cursor.len = 0;
        b->has_cursor = false;
    }
}

static void count(struct source_run *run, const struct group *g)
{
    struct sk_runner *r = &run->env->runner;
    for (int i = 0; i < SK_ENTITY_COUNT; i++)
        if (g->per_entity[i] || run->batch_refused_by[i]) /* refused: not stored */
            atomic_fetch_add(&r->per_entity[i], g->per_entity[i] - run->batch_refused_by[i]);
    atomic_fetch_add(&r->records, g->records - run->batch_refused);
    atomic_fetch_add(&r->failed, g->bad);
    atomic_fetch_add(&r->dead_lettered, g->bad + run->batch_refused);
    atomic_fetch_add(&r->refused, run->batch_refused);
    if (g->progress_total || g->progress_done) {
        atomic_store(&r->progress_done, (int_fast64_t)g->progress_done);
        atomic_store(&r->progress_total, (int_fast64_t)g->progress_total);
    }
}

/* Takes ownership of the group's cursor as the acknowledged one. */
static void cursor_advance(struct source_run *run, struct group *g)
{
    if (!g->has_cursor)
        return;
    free(run->cursor.data);
    run->cursor = g->cursor;
    g->cursor.data = NULL;
    g->cursor.len = 0;
    g->has_cursor = false;
}

/*
 * Waits out a retry (rule 4). Returns false when the connector's failure
 * policy has no retries left: the connector then fails, and the supervisor
 * restarts it with backoff.
 */
static bool backoff(struct source_run *run, struct sk_retry *retry, const struct sk_error *err)
{
    struct sk_runner *r = &run->env->runner;
    int64_t ms = sk_retry_next(retry, &run->env->settings.policy);
    sk_runner_set_error(r, err->msg);
    if (ms < 0) {
        sk_error_log(r->name, "%s; no retries left after %d attempt(s)", err->msg, retry->attempt);
        return false;
    }
    sk_runner_set_state(r, SK_STATE_RETRYING);
    atomic_fetch_add(&r->retries, 1);
    sk_warn(r->name, "%s; retrying in %lld ms", err->msg, (long long)ms);
    /* A wake-up must not cut a backoff short: wait the whole time unless stopping. */
    int64_t until = sk_mono_ms() + ms;
    while (!atomic_load(&r->stop) && sk_mono_ms() < until)
        sk_runner_wait(r, until - sk_mono_ms());
    return true;
}

/* Creates the producer and loads the cursor, retrying while the policy allows. */
static int prepare(struct source_run *run)
{
    struct sk_runner *r = &run->env->runner;
    struct sk_retry retry = {0};
    while (!atomic_load(&r->stop)) {
        struct sk_error err = {0};
        free(run->cursor.data);
        run->cursor.data = NULL;
        run->cursor.len = 0;
        /* The node's producer first: its init_transactions (at the first
         * source's join) aborts what a crashed predecessor of this node left
         * open, so the cursor read below sees its final state. */
        if (source_producer_create(run, &err) == 0 &&
            sk_cursor_store_load(run->env->kafka, r->name, &run->cursor, &err) == 0) {
            if (!run->cursor.data)
                sk_info(r->name, "no cursor stored: starting a full sync");
            return 0;
        }
        source_producer_destroy(run);
        if (err.cls == SK_ERR_FATAL) {
            sk_runner_set_error(r, err.msg);
            sk_error_log(r->name, "%s", err.msg);
            return -1;
        }
        if (!backoff(run, &retry, &err))
            return -1;
    }
    return -1;
}

/*
 * The failure policy for bad input (policy.h): with on_error dlq the batch
 * goes out with its dead letters; otherwise it is not delivered at all, so
 * the cursor stays before the bad record.
 */
static int check_bad_input(struct source_run *run, const struct sk_batch *b, struct sk_error *err,
                           bool *stop)
{
    enum sk_on_error mode = sk_policy_on_error(&run->env->settings.policy);
    if (b->n_bad == 0 || mode == SK_ON_ERROR_DLQ)
        return 0;
    *stop = mode == SK_ON_ERROR_STOP;
    return sk_error_set(err, SK_ERR_RETRIABLE, "bad input at %s: %s (on_error: %s)",
                        b->bad[0].where, b->bad[0].err.msg, *stop ? "stop" : "retry");
}

/* Whether the group may take one more batch: the poll that made the last took t_poll ms. */
static bool group_goes_on(struct source_run *run, const struct group *g, int64_t start,
                          int64_t t_poll)
{
    struct sk_runner *r = &run->env->runner;
    return g->more && run->env->source.ops->chain_polls && g->records < GROUP_RECORDS &&
           sk_mono_ms() - start + t_poll < GROUP_MS && !atomic_load(&r->stop) &&
           !atomic_load(&r->paused) && !atomic_load(&r->reload_cursor);
}

/*
 * Polls and delivers one group: a batch, and with a source that chains polls
 * the batches ready right after it, each polled from the cursor of the one
 * before while that one's records are on their way (group_goes_on). Once
 * Kafka acknowledged the group its cursor is the acknowledged one, and
 * stored() is told. A poll error or bad input after the first batch ends the
 * group: what came before is stored, then the error is returned. 0, or -1
 * with err; *source_fatal, *bad_stop: the connector must fail.
 */
static int deliver_group(struct source_run *run, struct sk_batch *batch, struct group *g,
                         struct sk_error *err, bool *source_fatal, bool *bad_stop)
{
    struct sk_source_env *env = run->env;
    struct sk_runner *r = &env->runner;
    int64_t start = sk_mono_ms();
    int rc;
    for (;;) {
        sk_batch_reset(batch);
        int64_t t0 = sk_mono_ms();
        rc = env->source.ops->poll(&env->source, g->has_cursor ? &g->cursor : &run->cursor, batch,
                                   err);
        int64_t t_poll = sk_mono_ms() - t0;
        sk_hist_observe_us(&r->work_seconds, t_poll * 1000);
        /* A source that says it cannot go on (FATAL) fails: retrying the
         * same poll cannot help, and "retrying" for ever would hide it. */
        *source_fatal = rc != 0 && err->cls == SK_ERR_FATAL;
        if (rc == 0)
            rc = check_bad_input(run, batch, err, bad_stop);
        if (rc || !(batch->n || batch->n_bad || batch->has_cursor)) {
            if (g->batches == 0)
                g->more = batch->more;
            break;
        }
        if (g->batches == 0 && source_group_begin(run, err))
            return -1;
        if (source_group_add(run, batch, err))
            return -1;
        tally(g, run, batch);
        if (!group_goes_on(run, g, start, t_poll))
            break;
    }
    if (g->batches == 0)
        return rc;
    struct sk_error cerr = {0};
    if (source_group_commit(run, g->has_cursor ? &g->cursor : NULL, &cerr)) {
        *source_fatal = *bad_stop = false; /* the group's failure comes first */
        *err = cerr;
        return -1;
    }
    count(run, g);
    source_refused_clear(run);
    bool had_cursor = g->has_cursor;
    cursor_advance(run, g);
    if (had_cursor && env->source.ops->stored)
        env->source.ops->stored(&env->source, &run->cursor);
    if (g->records || g->bad)
        sk_debug(r->name, "stored %zu record(s), %zu dead letter(s) of %zu batch(es) in %lld ms",
                 g->records, g->bad, g->batches, (long long)(sk_mono_ms() - start));
    return rc;
}

/*
 * Waits for the next cycle (or a wake-up), serving the producer's events in
 * the meantime: statistics and late reports are delivered only by poll.
 */
static void idle_wait(struct source_run *run, int64_t ms)
{
    struct sk_runner *r = &run->env->runner;
    int64_t until = sk_mono_ms() + ms;
    for (;;) {
        source_producer_poll(run, 0);
        source_note_queue(run);
        int64_t left = until - sk_mono_ms();
        if (left <= 0 || sk_runner_wait(r, left < 1000 ? left : 1000))
            return;
    }
}

/*
 * A producer fenced by another with its transactional id (another daemon
 * runs this source), or refused by the cluster's authorisation, gets nowhere
 * with a new producer: recreating it every cycle fenced the other in turn
 * and hid the fight. The connector fails with the reason (state failed,
 * /ready 503) and the supervisor restarts it with backoff. Other fatal
 * errors (§8.6: sequence desynchronisation) are cured by a new producer.
 */
static bool producer_fenced(struct source_run *run, const struct sk_error *err)
{
    char buf[512];
    rd_kafka_resp_err_t e = source_producer_fatal(run, buf, sizeof(buf));
    switch (e) {
    case RD_KAFKA_RESP_ERR__FENCED:
    case RD_KAFKA_RESP_ERR_PRODUCER_FENCED:
    case RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH:
    case RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
        break;
    default:
        return false;
    }
    struct sk_runner *r = &run->env->runner;
    char why[700];
    snprintf(why, sizeof(why), "fatal producer error: %s (%s)", rd_kafka_err2name(e), err->msg);
    sk_error_log(r->name, "%s: failing the connector (the supervisor restarts it)", why);
    sk_runner_set_error(r, why);
    return true;
}

static void *source_thread(void *arg)
{
    struct sk_source_env *env = arg;
    struct sk_runner *r = &env->runner;
    struct source_run run = {.env = env, .isolating = -1};
    struct sk_batch batch = {0};
    struct sk_retry retry = {0};
    bool failed = false;

    if (prepare(&run)) {
        failed = !atomic_load(&r->stop);
        goto out;
    }
    sk_runner_set_state(r, SK_STATE_RUNNING);
    while (!atomic_load(&r->stop)) {
        if (atomic_load(&r->paused)) {
            sk_runner_set_state(r, SK_STATE_PAUSED);
            sk_runner_wait(r, 1000);
            continue;
        }
        if (atomic_exchange(&r->reload_cursor, false)) {
            /* an operator reset the cursor while the source was paused */
            source_producer_destroy(&run);
            if (prepare(&run)) {
                failed = !atomic_load(&r->stop);
                break;
            }
        }
        struct sk_error err = {0};
        bool bad_stop = false, source_fatal = false;
        struct group g = {0};
        int rc = deliver_group(&run, &batch, &g, &err, &source_fatal, &bad_stop);
        free(g.cursor.data); /* a group not stored */
        if (rc && err.cls != SK_ERR_FATAL && run.refused_learned) {
            /* Kafka refused records for good: the same batch again at once
             * (no backoff: nothing is down), each suspect alone, the ones
             * refused alone as dead letters. */
            sk_info(r->name,
                    "Kafka refused %zu record(s) for good: sending the batch again, "
                    "the refused ones to the dead-letter topic",
                    run.refused_learned);
            run.refused_learned = 0;
            continue;
        }
        run.refused_learned = 0;
        if (rc) {
            if (err.cls == SK_ERR_NONE)
                err.cls = SK_ERR_RETRIABLE;
            if (bad_stop || source_fatal) {
                sk_error_log(r->name, "%s", err.msg);
                sk_runner_set_error(r, err.msg);
                failed = true;
                break;
            }
            if (err.cls == SK_ERR_FATAL && producer_fenced(&run, &err)) {
                sk_sprod_broken(run.member, err.msg); /* the restart makes a new one */
                failed = true;
                break;
            }
            if (err.cls == SK_ERR_FATAL) {
                /* A fatal producer error: a new producer (and transactional
                 * session) is the only way on, for every source of the node
                 * (they share it); the cursor is re-read. */
                sk_error_log(r->name, "%s: restarting the sources' Kafka client", err.msg);
                if (run.member)
                    sk_sprod_broken(run.member, err.msg);
                source_producer_destroy(&run);
                if (!backoff(&run, &retry, &err) || prepare(&run)) {
                    failed = !atomic_load(&r->stop);
                    break;
                }
                continue;
            }
            if (!backoff(&run, &retry, &err)) {
                failed = true;
                break;
            }
            continue; /* poll again from the acknowledged cursor */
        }
        sk_retry_reset(&retry);
        sk_runner_set_error(r, "");
        if (g.more) {
            sk_runner_set_state(r, SK_STATE_RUNNING);
            continue;
        }
        atomic_fetch_add(&r->cycles, 1);
        sk_runner_set_state(r, SK_STATE_IDLE);
        sk_runner_notify(r); /* --once may be done */
        /* The last batch's records and arrays go (the next poll grows them
         * again), then glibc gives the thread arena's freed heap back while
         * idle (bench: 172 -> 91 MB steady with three sinks) */
        sk_batch_free(&batch);
        malloc_trim(0);
        idle_wait(&run, env->settings.poll_interval_ms);
    }
out:
    sk_batch_free(&batch);
    /* Nothing half-written: the group's transaction was committed or aborted
     * above; at-least-once batches were awaited. */
    source_producer_destroy(&run);
    for (int i = 0; i < SK_ENTITY_COUNT; i++)
        free(run.topics[i]);
    source_refused_clear(&run);
    free(run.refused);
    free(run.cursor.data);
    sk_runner_set_state(r, failed ? SK_STATE_FAILED : SK_STATE_STOPPED);
    return NULL;
}

void sk_source_wake(struct sk_source *self)
{
    sk_runner_wake(&self->env->runner);
}

int sk_source_driver_start(struct sk_source_env *env)
{
    env->source.env = env;
    if (sk_thread_start(&env->runner.thread, source_thread, env, "src", env->runner.name))
        return -1;
    env->runner.started = true;
    return 0;
}

void sk_driver_request_stop(struct sk_runner *r)
{
    atomic_store(&r->stop, true);
    sk_runner_wake(r);
}

bool sk_driver_join_until(struct sk_runner *r, int64_t deadline_ms)
{
    if (!r->started)
        return true;
    int64_t left = deadline_ms - sk_mono_ms();
    if (left < 0)
        left = 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += left / 1000;
    ts.tv_nsec += (left % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    if (pthread_timedjoin_np(r->thread, NULL, &ts) != 0)
        return false;
    r->started = false;
    return true;
}

void sk_driver_join(struct sk_runner *r)
{
    if (r->started) {
        pthread_join(r->thread, NULL);
        r->started = false;
    }
}
