/* runner.c: connector instance bookkeeping shared by drivers and supervisor. */
#include "runner.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kafka.h"
#include "log.h"
#include "util.h"

static const char *const state_names[] = {"starting", "running", "idle",    "retrying",
                                          "paused",   "failed",  "stopped", "standby"};

const char *sk_runner_state_name(enum sk_runner_state s)
{
    if ((unsigned)s < sizeof(state_names) / sizeof(state_names[0]))
        return state_names[s];
    return "unknown";
}

void sk_runner_init(struct sk_runner *r, enum sk_runner_kind kind, const char *name,
                    const char *type)
{
    memset(r, 0, sizeof(*r));
    r->kind = kind;
    r->name = sk_strdup(name);
    r->type = type;
    atomic_init(&r->state, SK_STATE_STARTING);
    atomic_init(&r->kafka_queued, -1);
    atomic_init(&r->kafka_rtt_us, -1);
    atomic_init(&r->sampled_lag, -1);
    r->notify_fd = -1;
    r->started_mono_ms = sk_mono_ms();
    pthread_mutex_init(&r->mu, NULL);
    sk_cond_init_monotonic(&r->cv);
}

const double sk_hist_bounds[SK_HIST_BUCKETS] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                0.5,   1,     2.5,  5,     10,   30,  60};

void sk_hist_observe_us(struct sk_histogram *h, int64_t us)
{
    if (us < 0)
        us = 0;
    double secs = (double)us / 1e6;
    size_t i = 0;
    while (i < SK_HIST_BUCKETS && secs > sk_hist_bounds[i])
        i++;
    atomic_fetch_add(&h->buckets[i], 1);
    atomic_fetch_add(&h->count, 1);
    atomic_fetch_add(&h->sum_us, (uint_fast64_t)us);
}

/* Adds what a client's running total grew by since its last statistics. */
static void add_growth(atomic_uint_fast64_t *total, int64_t *last, int64_t now)
{
    if (now > *last)
        atomic_fetch_add(total, (uint_fast64_t)(now - *last));
    *last = now;
}

void sk_runner_kafka_stats_apply(struct sk_runner *r, const struct sk_kafka_stats *st)
{
    if (st->rtt_us >= 0)
        atomic_store(&r->kafka_rtt_us, st->rtt_us);
    if (strcmp(st->client, r->stats_client) != 0) {
        /* a new client (the driver made another): its totals start at 0 */
        snprintf(r->stats_client, sizeof(r->stats_client), "%s", st->client);
        r->stats_last_retries = 0;
    }
    add_growth(&r->kafka_retries, &r->stats_last_retries, st->retries);
    atomic_store(&r->kafka_stats, true);
}

int sk_runner_kafka_stats(struct sk_runner *r, char *json, size_t len)
{
    struct sk_kafka_stats st;
    sk_kafka_stats_parse(json, len, &st);
    sk_runner_kafka_stats_apply(r, &st);
    return 0; /* librdkafka frees json */
}

bool sk_runner_stalled(struct sk_runner *r, int64_t lag, int64_t now_ms, int64_t bound_ms)
{
    uint64_t done = atomic_load(&r->records) + atomic_load(&r->failed);
    int st = atomic_load(&r->state);
    bool has_work = lag > 0 && (st == SK_STATE_RUNNING || st == SK_STATE_IDLE);
    if (!has_work || done != r->stall_done || !r->stall_since_ms) {
        r->stall_done = done;
        r->stall_since_ms = has_work ? now_ms : 0;
        return false;
    }
    return now_ms - r->stall_since_ms > bound_ms;
}

void sk_runner_destroy(struct sk_runner *r)
{
    free(r->fingerprint);
    r->fingerprint = NULL;
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r->name);
    r->name = NULL;
}

void sk_runner_set_state(struct sk_runner *r, enum sk_runner_state s)
{
    atomic_store(&r->state, s);
    if (s == SK_STATE_FAILED || s == SK_STATE_STOPPED)
        sk_runner_notify(r);
}

void sk_runner_notify(struct sk_runner *r)
{
    sk_eventfd_signal(r->notify_fd);
}

void sk_runner_set_error(struct sk_runner *r, const char *msg)
{
    pthread_mutex_lock(&r->mu);
    snprintf(r->last_error, sizeof(r->last_error), "%s", msg ? msg : "");
    pthread_mutex_unlock(&r->mu);
}

void sk_runner_last_error(struct sk_runner *r, char *buf, size_t size)
{
    pthread_mutex_lock(&r->mu);
    snprintf(buf, size, "%s", r->last_error);
    pthread_mutex_unlock(&r->mu);
}

void sk_runner_wake(struct sk_runner *r)
{
    pthread_mutex_lock(&r->mu);
    r->wake = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (r->on_wake)
        r->on_wake(r);
}

bool sk_runner_wait(struct sk_runner *r, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&r->mu);
    int rc = 0;
    while (!r->wake && !atomic_load(&r->stop) && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    bool woken = r->wake || atomic_load(&r->stop);
    r->wake = false;
    pthread_mutex_unlock(&r->mu);
    return woken;
}

static void carry_hist(struct sk_histogram *to, struct sk_histogram *from)
{
    for (int i = 0; i <= SK_HIST_BUCKETS; i++)
        atomic_fetch_add(&to->buckets[i], atomic_load(&from->buckets[i]));
    atomic_fetch_add(&to->count, atomic_load(&from->count));
    atomic_fetch_add(&to->sum_us, atomic_load(&from->sum_us));
}

void sk_runner_carry_counters(struct sk_runner *to, struct sk_runner *from)
{
    atomic_uint_fast64_t *const counters[][2] = {
        {&to->restarts, &from->restarts},
        {&to->records, &from->records},
        {&to->failed, &from->failed},
        {&to->dead_lettered, &from->dead_lettered},
        {&to->refused, &from->refused},
        {&to->retries, &from->retries},
        {&to->cycles, &from->cycles},
        {&to->kafka_retries, &from->kafka_retries},
        {&to->kafka_errors, &from->kafka_errors},
        {&to->kafka_rebalances, &from->kafka_rebalances},
        {&to->kafka_renewals, &from->kafka_renewals},
        {&to->swept, &from->swept},
        {&to->sweeps_skipped, &from->sweeps_skipped},
    };
    for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
        atomic_fetch_add(counters[i][0], atomic_load(counters[i][1]));
    for (int e = 0; e < SK_ENTITY_COUNT; e++)
        atomic_fetch_add(&to->per_entity[e], atomic_load(&from->per_entity[e]));
    if (atomic_load(&from->kafka_stats))
        atomic_store(&to->kafka_stats, true);
    carry_hist(&to->work_seconds, &from->work_seconds);
    carry_hist(&to->latency_seconds, &from->latency_seconds);
    to->rate_records = from->rate_records;
    to->rate_ms = from->rate_ms;
}

void sk_runner_kafka_error(struct sk_runner *r, const char *reason)
{
    atomic_fetch_add(&r->kafka_errors, 1);
    sk_log_limited(&r->kafka_error_log, SK_KAFKA_ERROR_INTERVAL_MS, SK_LOG_WARN, r->name,
                   "kafka: %s", reason);
}

const char *sk_runner_kind_name(const struct sk_runner *r)
{
    return r->kind == SK_RUNNER_SOURCE ? "source" : "sink";
}
