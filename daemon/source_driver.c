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
#include <unistd.h>

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
 * A retry (rule 4): how long to wait before it, or -1 when the connector's
 * failure policy has no retries left: the connector then fails, and the
 * supervisor restarts it with backoff. The wait is the pool's (due_ms), not
 * this thread's.
 */
static int64_t backoff(struct source_run *run, struct sk_retry *retry, const struct sk_error *err)
{
    struct sk_runner *r = &run->env->runner;
    int64_t ms = sk_retry_next(retry, &run->env->settings.policy);
    sk_runner_set_error(r, err->msg);
    if (ms < 0) {
        sk_error_log(r->name, "%s; no retries left after %d attempt(s)", err->msg, retry->attempt);
        return -1;
    }
    sk_runner_set_state(r, SK_STATE_RETRYING);
    atomic_fetch_add(&r->retries, 1);
    sk_warn(r->name, "%s; retrying in %lld ms", err->msg, (long long)ms);
    return ms;
}

/* Joins the producer and loads the cursor: 0, or -1 with err. */
static int prepare(struct source_run *run, struct sk_error *err)
{
    struct sk_runner *r = &run->env->runner;
    free(run->cursor.data);
    run->cursor.data = NULL;
    run->cursor.len = 0;
    /* The node's producer first: its init_transactions (at the first
     * source's join) aborts what a crashed predecessor of this node left
     * open, so the cursor read below sees its final state. */
    if (source_producer_create(run, err) == 0 && source_topics_moved(run, err) == 0 &&
        sk_cursor_store_load(run->env->kafka, r->name, &run->cursor, err) == 0) {
        if (!run->cursor.data)
            sk_info(r->name, "no cursor stored: starting a full sync");
        return 0;
    }
    source_producer_destroy(run);
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
    sk_error_log(r->name, "%s: failing the connector", why);
    sk_runner_set_error(r, why);
    return true;
}

/* ---- the pool of worker threads ------------------------------------------------ */

/*
 * The sources run as tasks on a few worker threads, not on a thread each
 * (docs/architecture.md §6.4, issue 17: a hundred sources were a hundred
 * threads, most of them asleep). A task is a source's next step: prepare
 * (join the producer, read the cursor) or one group of batches; between
 * steps it waits in the pool, not on a thread: its poll interval (a wake-up
 * ends it), a backoff (only a stop ends it) or a pause. A worker takes the
 * task due longest; a source with more to deliver is due again at once,
 * behind the others. A step blocks on the source's system and on Kafka, so
 * the pool has twice as many workers as cores, and grows by one, up to
 * POOL_MAX, each second that a task is overdue while every worker is in a
 * step that began over a second ago (a source whose server hangs holds its
 * worker, not the others' sources); a worker beyond the base count ends
 * after POOL_SHRINK_MS without work.
 */
#define POOL_MAX 64
#define POOL_GROW_MS 1000
#define POOL_SHRINK_MS 10000
#define PAUSED_CHECK_MS 1000

struct source_task {
    struct sk_source_env *env;
    struct source_run run;
    struct sk_batch batch;
    struct sk_retry retry, prepare_retry;
    bool prepared;     /* the producer joined and the cursor read */
    int64_t due_ms;    /* the next step is due then (INT64_MAX: at a wake-up) */
    bool wakeable;     /* a wake-up makes it due at once (idle, paused) */
    bool running;      /* a worker runs its step */
    bool woken;        /* woken while running: the wait after the step is cut short */
    int64_t step_ms;   /* when that step began */
    bool done, failed; /* finished (stopped or failed) */
    struct source_task *next;
};

struct worker {
    pthread_t thread;
    bool ended; /* to be joined */
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* a task is due, or the workers must go */
    pthread_cond_t done_cv; /* a task finished */
    bool init;
    struct source_task *tasks;
    struct worker workers[POOL_MAX];
    int n_workers; /* alive */
    int idle;      /* waiting for a task */
    int base;
    bool stopping;
    int64_t grown_ms;
    int64_t served_ms; /* the sources' producer's callbacks last served */
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* The monotonic time ms from now (the pool's condition variables' clock). */
static void deadline_in(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

static int64_t pool_next_due(int64_t now, struct source_task **pick)
{
    int64_t next = INT64_MAX;
    *pick = NULL;
    for (struct source_task *t = pool.tasks; t; t = t->next) {
        if (t->running || t->done)
            continue;
        if (t->due_ms <= now && (!*pick || t->due_ms < (*pick)->due_ms))
            *pick = t;
        if (t->due_ms < next)
            next = t->due_ms;
    }
    return next;
}

static void *worker_main(void *arg);

/* Under pool.mu: one more worker (false if none could be made). */
static bool pool_grow(void)
{
    for (int i = 0; i < POOL_MAX; i++) {
        struct worker *w = &pool.workers[i];
        if (w->ended) { /* a slot of a worker that ended: joined now */
            pthread_join(w->thread, NULL);
            w->ended = false;
            w->thread = 0;
        }
        if (w->thread)
            continue;
        if (sk_thread_start(&w->thread, worker_main, w, "src-pool", NULL) != 0) {
            w->thread = 0;
            return false;
        }
        pool.n_workers++;
        return true;
    }
    return false;
}

/* Under pool.mu: a task overdue while every worker is stuck in a long step gets a new worker. */
static void pool_check_starved(int64_t now)
{
    struct source_task *pick;
    pool_next_due(now - POOL_GROW_MS, &pick);
    if (!pick || pool.idle > 0 || pool.n_workers >= POOL_MAX || now - pool.grown_ms < POOL_GROW_MS)
        return;
    for (struct source_task *t = pool.tasks; t; t = t->next)
        if (t->running && now - t->step_ms < POOL_GROW_MS)
            return; /* a worker will be free soon */
    if (pool_grow()) {
        pool.grown_ms = now;
        sk_warn("sources",
                "every source worker has been busy for over a second with a source "
                "waiting: %d workers now",
                pool.n_workers);
    }
}

void sk_source_pool_watch(void)
{
    pthread_mutex_lock(&pool.mu);
    if (pool.init)
        pool_check_starved(sk_mono_ms());
    pthread_mutex_unlock(&pool.mu);
}

static void pool_wake(struct sk_runner *r)
{
    pthread_mutex_lock(&pool.mu);
    for (struct source_task *t = pool.tasks; t; t = t->next)
        if (&t->env->runner == r && !t->done) {
            if (t->running) {
                t->woken = true; /* the wait the step ends with is cut short */
            } else if (t->wakeable || atomic_load(&r->stop)) {
                t->due_ms = sk_mono_ms();
                pthread_cond_signal(&pool.cv);
            }
        }
    pthread_mutex_unlock(&pool.mu);
}

/* The step's end: wait ms (or until woken when wakeable) before the next. */
static void task_wait(struct source_task *t, int64_t ms, bool wakeable)
{
    pthread_mutex_lock(&pool.mu);
    t->due_ms = ms == INT64_MAX ? INT64_MAX : sk_mono_ms() + ms;
    t->wakeable = wakeable;
    /* a stop, or a wake-up during the step that the wait may end, is not lost */
    if (atomic_load(&t->env->runner.stop) || (t->woken && wakeable))
        t->due_ms = sk_mono_ms();
    t->woken = false;
    pthread_mutex_unlock(&pool.mu);
}

static void task_finish(struct source_task *t)
{
    struct source_run *run = &t->run;
    struct sk_runner *r = &t->env->runner;
    sk_batch_free(&t->batch);
    /* Nothing half-written: the group's transaction was committed or aborted
     * above; at-least-once batches were awaited. */
    source_producer_destroy(run);
    for (int i = 0; i < SK_ENTITY_COUNT; i++)
        free(run->topics[i]);
    source_refused_clear(run);
    free(run->refused);
    free(run->cursor.data);
    sk_runner_set_state(r, t->failed ? SK_STATE_FAILED : SK_STATE_STOPPED);
    pthread_mutex_lock(&pool.mu);
    t->done = true; /* freed by the join once its worker let go of it */
    pthread_mutex_unlock(&pool.mu);
}

/* The step after a fatal producer error: a new client for the node, after a backoff. */
static void task_renew(struct source_task *t, const struct sk_error *err)
{
    struct sk_runner *r = &t->env->runner;
    /* A fatal producer error: a new producer (and transactional session) is
     * the only way on, for every source of the node (they share it); the
     * cursor is re-read. */
    sk_error_log(r->name, "%s: restarting the sources' Kafka client", err->msg);
    if (t->run.member)
        sk_sprod_broken(t->run.member, err->msg);
    source_producer_destroy(&t->run);
    t->prepared = false;
    int64_t ms = backoff(&t->run, &t->retry, err);
    if (ms < 0) {
        t->failed = true;
        task_finish(t);
        return;
    }
    task_wait(t, ms, false);
}

/* Joins the producer and reads the cursor; on failure, the next attempt after a backoff. */
static void step_prepare(struct source_task *t)
{
    struct sk_runner *r = &t->env->runner;
    struct sk_error err = {0};
    if (prepare(&t->run, &err) == 0) {
        t->prepared = true;
        sk_retry_reset(&t->prepare_retry);
        sk_runner_set_state(r, SK_STATE_RUNNING);
        task_wait(t, 0, false);
        return;
    }
    int64_t ms = err.cls == SK_ERR_FATAL ? -1 : backoff(&t->run, &t->prepare_retry, &err);
    if (ms < 0) {
        if (err.cls == SK_ERR_FATAL) {
            sk_runner_set_error(r, err.msg);
            sk_error_log(r->name, "%s", err.msg);
        }
        t->failed = true;
        task_finish(t);
        return;
    }
    task_wait(t, ms, false);
}

/* One group of batches (deliver_group) and what its outcome means for the next step. */
static void step_deliver(struct source_task *t)
{
    struct sk_source_env *env = t->env;
    struct sk_runner *r = &env->runner;
    struct source_run *run = &t->run;
    if (atomic_load(&r->paused)) {
        sk_runner_set_state(r, SK_STATE_PAUSED);
        task_wait(t, PAUSED_CHECK_MS, true);
        return;
    }
    if (atomic_exchange(&r->reload_cursor, false)) {
        /* an operator reset the cursor while the source was paused */
        source_producer_destroy(run);
        t->prepared = false;
        task_wait(t, 0, false);
        return;
    }
    struct sk_error err = {0};
    bool bad_stop = false, source_fatal = false;
    struct group g = {0};
    int rc = deliver_group(run, &t->batch, &g, &err, &source_fatal, &bad_stop);
    free(g.cursor.data); /* a group not stored */
    char moved[sizeof(err.msg)];
    if (rc && sk_sprod_moved(run->member, moved, sizeof(moved))) {
        /* keys would move: failed (the supervisor's restarts fail the same
         * way) until an operator makes the topics again */
        sk_error_set(&err, SK_ERR_PERMANENT, "%s", moved);
        bad_stop = true;
        run->refused_learned = 0;
    }
    if (rc && err.cls != SK_ERR_FATAL && run->refused_learned) {
        /* Kafka refused records for good: the same batch again at once
         * (no backoff: nothing is down), each suspect alone, the ones
         * refused alone as dead letters. */
        sk_info(r->name,
                "Kafka refused %zu record(s) for good: sending the batch again, "
                "the refused ones to the dead-letter topic",
                run->refused_learned);
        run->refused_learned = 0;
        task_wait(t, 0, false);
        return;
    }
    run->refused_learned = 0;
    if (rc) {
        if (err.cls == SK_ERR_NONE)
            err.cls = SK_ERR_RETRIABLE;
        if (bad_stop || source_fatal) {
            sk_error_log(r->name, "%s", err.msg);
            sk_runner_set_error(r, err.msg);
            t->failed = true;
            task_finish(t);
            return;
        }
        if (err.cls == SK_ERR_FATAL && producer_fenced(run, &err)) {
            sk_sprod_broken(run->member, err.msg); /* the restart makes a new one */
            t->failed = true;
            task_finish(t);
            return;
        }
        if (err.cls == SK_ERR_FATAL) {
            task_renew(t, &err);
            return;
        }
        int64_t ms = backoff(run, &t->retry, &err);
        if (ms < 0) {
            t->failed = true;
            task_finish(t);
            return;
        }
        task_wait(t, ms, false); /* then polls again from the acknowledged cursor */
        return;
    }
    sk_retry_reset(&t->retry);
    sk_runner_set_error(r, "");
    if (g.more) {
        sk_runner_set_state(r, SK_STATE_RUNNING);
        task_wait(t, 0, false); /* due at once, behind the sources waiting */
        return;
    }
    atomic_fetch_add(&r->cycles, 1);
    sk_runner_set_state(r, SK_STATE_IDLE);
    sk_runner_notify(r); /* --once may be done */
    /* The last batch's records and arrays go (the next poll grows them
     * again), then glibc gives the freed heap back while idle (bench: 172
     * -> 91 MB steady with three sinks) */
    sk_batch_free(&t->batch);
    malloc_trim(0);
    source_producer_poll(run, 0); /* late reports, statistics */
    source_note_queue(run);
    task_wait(t, env->settings.poll_interval_ms, true);
}

static void step(struct source_task *t)
{
    struct sk_runner *r = &t->env->runner;
    if (atomic_load(&r->stop)) {
        t->failed = false;
        task_finish(t);
    } else if (!t->prepared) {
        step_prepare(t);
    } else {
        step_deliver(t);
    }
}

static void *worker_main(void *arg)
{
    struct worker *self = arg;
    pthread_mutex_lock(&pool.mu);
    int64_t idle_since = sk_mono_ms();
    for (;;) {
        int64_t now = sk_mono_ms();
        struct source_task *t;
        int64_t next = pool_next_due(now, &t);
        if (t) {
            t->running = true;
            t->step_ms = now;
            pthread_mutex_unlock(&pool.mu);
            /* named for the source while it works for it (top -H, perf, gdb) */
            char name[16]; /* the kernel's TASK_COMM_LEN */
            snprintf(name, sizeof(name), "src:%s", t->env->runner.name);
            pthread_setname_np(pthread_self(), name);
            step(t);
            pthread_setname_np(pthread_self(), "src-pool");
            pthread_mutex_lock(&pool.mu);
            t->running = false;
            /* a stop or wake-up that came after the step's task_wait (while
             * this worker still held the task) is not lost to that wait */
            if (t->woken && (t->wakeable || atomic_load(&t->env->runner.stop)))
                t->due_ms = sk_mono_ms();
            t->woken = false;
            if (t->done)
                pthread_cond_broadcast(&pool.done_cv);
            idle_since = sk_mono_ms();
            continue;
        }
        if (pool.stopping || (pool.n_workers > pool.base && now - idle_since >= POOL_SHRINK_MS))
            break;
        if (pool.tasks && now - pool.served_ms >= 1000) {
            /* the producer's errors and statistics reach the sources' counters
             * while they wait (a poll interval is minutes) */
            pool.served_ms = now;
            struct sk_sprod *sp = sk_kafka_sprod(pool.tasks->env->kafka);
            pthread_mutex_unlock(&pool.mu);
            if (sp)
                sk_sprod_serve(sp);
            pthread_mutex_lock(&pool.mu);
            continue;
        }
        int64_t wait = next == INT64_MAX ? 1000 : next - now;
        if (wait > 1000)
            wait = 1000;
        pool.idle++;
        struct timespec ts;
        deadline_in(&ts, wait);
        pthread_cond_timedwait(&pool.cv, &pool.mu, &ts);
        pool.idle--;
    }
    pool.n_workers--;
    self->ended = true;
    pthread_cond_broadcast(&pool.done_cv);
    pthread_mutex_unlock(&pool.mu);
    return NULL;
}

void sk_source_pool_stop(void)
{
    pthread_mutex_lock(&pool.mu);
    if (!pool.init || pool.tasks) { /* another daemon of the process still runs sources */
        pthread_mutex_unlock(&pool.mu);
        return;
    }
    pool.stopping = true;
    pthread_cond_broadcast(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
    for (int i = 0; i < POOL_MAX; i++)
        if (pool.workers[i].thread) {
            pthread_join(pool.workers[i].thread, NULL);
            pool.workers[i] = (struct worker){0};
        }
    pthread_mutex_lock(&pool.mu);
    pool.stopping = false;
    pool.n_workers = 0;
    pthread_mutex_unlock(&pool.mu);
}

void sk_source_wake(struct sk_source *self)
{
    sk_runner_wake(&self->env->runner);
}

int sk_source_driver_start(struct sk_source_env *env)
{
    env->source.env = env;
    struct source_task *t = sk_calloc(1, sizeof(*t));
    t->env = env;
    t->run = (struct source_run){.env = env, .isolating = -1};
    pthread_mutex_lock(&pool.mu);
    if (!pool.init) {
        sk_cond_init_monotonic(&pool.cv);
        sk_cond_init_monotonic(&pool.done_cv);
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        pool.base = cpus > 0 ? (int)(2 * cpus) : 2;
        if (pool.base > 16)
            pool.base = 16;
        pool.init = true;
    }
    while (pool.n_workers < pool.base && pool_grow()) {
    }
    if (pool.n_workers == 0) {
        pthread_mutex_unlock(&pool.mu);
        free(t);
        return -1;
    }
    env->runner.on_wake = pool_wake;
    t->due_ms = sk_mono_ms();
    t->next = pool.tasks;
    pool.tasks = t;
    env->runner.started = true;
    pthread_cond_signal(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
    return 0;
}

void sk_driver_request_stop(struct sk_runner *r)
{
    atomic_store(&r->stop, true);
    sk_runner_wake(r);
}

/* Under pool.mu: the task of source runner r, unlinked and freed once done. */
static bool pool_reap(struct sk_runner *r)
{
    for (struct source_task **p = &pool.tasks; *p; p = &(*p)->next) {
        struct source_task *t = *p;
        if (&t->env->runner != r)
            continue;
        if (!t->done || t->running)
            return false;
        *p = t->next;
        free(t);
        return true;
    }
    return true; /* not in the pool */
}

static bool thread_join_until(struct sk_runner *r, int64_t deadline_ms)
{
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
    return pthread_timedjoin_np(r->thread, NULL, &ts) == 0;
}

bool sk_driver_join_until(struct sk_runner *r, int64_t deadline_ms)
{
    if (!r->started)
        return true;
    if (r->kind == SK_RUNNER_SINK) {
        if (!thread_join_until(r, deadline_ms))
            return false;
        r->started = false;
        return true;
    }
    pthread_mutex_lock(&pool.mu);
    bool done;
    while (!(done = pool_reap(r)) && sk_mono_ms() < deadline_ms) {
        struct timespec ts;
        int64_t left = deadline_ms - sk_mono_ms();
        deadline_in(&ts, left < 1000 ? left : 1000);
        pthread_cond_timedwait(&pool.done_cv, &pool.mu, &ts);
    }
    pthread_mutex_unlock(&pool.mu);
    if (done)
        r->started = false;
    return done;
}

void sk_driver_join(struct sk_runner *r)
{
    while (!sk_driver_join_until(r, sk_mono_ms() + 60000)) {
    }
}
