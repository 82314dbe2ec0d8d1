/*
 * runner.h: one running connector instance as the supervisor sees it: its
 * thread, state, counters, stop flag and wake-up. The drivers fill it; the
 * supervisor, the progress lines and (later) the admin API read it.
 *
 * Counters are atomics so readers never lock; the last error is behind a mutex.
 */
#ifndef SK_RUNNER_H
#define SK_RUNNER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "connector.h"
#include "log.h"
#include "model.h"

enum sk_runner_state {
    SK_STATE_STARTING = 0,
    SK_STATE_RUNNING,
    SK_STATE_IDLE,     /* source: cycle complete, waiting; sink: caught up */
    SK_STATE_RETRYING, /* backing off after a retriable error */
    SK_STATE_PAUSED,
    SK_STATE_FAILED,
    SK_STATE_STOPPED,
    SK_STATE_STANDBY, /* source: another node of the deployment owns it (ownership.h) */
};

const char *sk_runner_state_name(enum sk_runner_state s);

enum sk_runner_kind { SK_RUNNER_SOURCE, SK_RUNNER_SINK };

/* A Prometheus histogram of seconds with fixed buckets; lock-free. */
#define SK_HIST_BUCKETS 14
extern const double sk_hist_bounds[SK_HIST_BUCKETS]; /* upper bounds in seconds; +Inf implied */
struct sk_histogram {
    atomic_uint_fast64_t buckets[SK_HIST_BUCKETS + 1]; /* not cumulative; last = +Inf */
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t sum_us;
};
void sk_hist_observe_us(struct sk_histogram *h, int64_t us);

struct sk_runner {
    enum sk_runner_kind kind;
    char *name;
    const char *type;
    pthread_t thread;
    bool started;
    void (*on_wake)(struct sk_runner *r); /* told after sk_runner_wake (a pooled source) */
    atomic_int state;
    atomic_bool stop;              /* set by the supervisor: finish and exit */
    atomic_bool paused;            /* set by the API: no polling / partitions paused */
    atomic_uint_fast64_t restarts; /* by the supervisor after failures or on request */
    atomic_uint_fast64_t records;  /* source: records stored in Kafka; sink: records applied */
    atomic_uint_fast64_t failed;   /* source: bad inputs; sink: rejected records */
    atomic_uint_fast64_t dead_lettered;
    atomic_uint_fast64_t refused; /* source: records Kafka can never take (dead-lettered) */
    atomic_uint_fast64_t retries;
    atomic_uint_fast64_t cycles; /* source: completed poll cycles; sink: batches */
    atomic_uint_fast64_t per_entity[SK_ENTITY_COUNT];
    atomic_int_fast64_t progress_done, progress_total;
    atomic_int_fast64_t kafka_queued; /* messages waiting in the client (the driver's count) */
    /* The faults the connector's Kafka client met: errors it reported and
     * rebalances (the driver counts them), and from librdkafka's statistics
     * (kafka.statistics, off by default) round-trip time and retries. */
    atomic_int_fast64_t kafka_rtt_us;      /* largest average broker round-trip time */
    atomic_bool kafka_stats;               /* statistics came: rtt and retries are known */
    atomic_uint_fast64_t kafka_retries;    /* requests and messages sent again */
    atomic_uint_fast64_t kafka_errors;     /* errors the client reported (down, timeout, ...) */
    atomic_uint_fast64_t kafka_rebalances; /* sink: assignments and revocations */
    atomic_uint_fast64_t kafka_renewals;   /* sink: consumers replaced after a fetch stopped */
    /* sink: its lag on its own partitions in the lag monitor's last sample
     * (-1: unknown), and when (sk_mono_ms) that sample read the offsets */
    atomic_int_fast64_t sampled_lag, sampled_lag_ms;
    /* sink: the snapshot sweep (docs/architecture.md §4.6) */
    atomic_uint_fast64_t swept;          /* records deleted because a snapshot lacked them */
    atomic_uint_fast64_t sweeps_skipped; /* complete snapshots not swept (limit, mixed, failure) */

    struct sk_histogram work_seconds;    /* source: one poll; sink: one apply of a batch */
    struct sk_histogram latency_seconds; /* sink: source saw the change -> sink applied it */
    atomic_bool drained;                 /* sink: caught up with the drain target (--once) */
    atomic_int partitions;               /* sink: partitions assigned to it now */
    atomic_bool drain_requested;         /* supervisor: sources are done, drain to the end now */
    int64_t started_mono_ms;

    /* The supervisor's own bookkeeping (main thread only, but restart_requested). */
    atomic_bool restart_requested; /* API: restart this connector */
    atomic_bool reload_cursor;     /* source: read the cursor again before polling */
    int restart_attempt;
    int64_t restart_at_ms; /* when a failed connector is restarted (0: not scheduled) */
    int64_t healthy_since_ms;
    uint64_t rate_records; /* records at the last progress line, and when: its rate's window */
    int64_t rate_ms;
    uint64_t stall_done;    /* sink: records applied or rejected when its lag was last seen */
    int64_t stall_since_ms; /* sink: since when it has had lag and done nothing (0: not) */
    bool stall_logged;      /* sink: its stall is in the log */
    const void *def;        /* its definition in the configuration */
    char *fingerprint;      /* of that definition, to see what a reload changed */

    /* The statistics callback's own (the driver's thread): its client's last totals. */
    char stats_client[128];
    int64_t stats_last_retries;

    /* The Kafka client's error lines in the log (sk_runner_kafka_error). */
    struct sk_log_limit kafka_error_log;

    pthread_mutex_t mu; /* guards last_error and the wake flag */
    pthread_cond_t cv;
    bool wake;
    char last_error[512];
    /* The supervisor's eventfd (-1: none): written when something it acts
     * on changes (a source's cycle done, a sink drained, failed or stopped),
     * so its loop sees it at once instead of at its next 200 ms tick. */
    int notify_fd;
};

/*
 * The watchdog's view of a sink (main thread): true when it has work (lag >
 * 0 records on its partitions) and, running or idle, has applied or
 * rejected nothing for longer than bound_ms. A fenced or wedged consumer
 * looks "healthily idle" otherwise. lag < 0 (unknown) and the other states
 * (retrying: the target is down; paused: the operator; failed: the
 * supervisor restarts it) never count as stalled.
 */
bool sk_runner_stalled(struct sk_runner *r, int64_t lag, int64_t now_ms, int64_t bound_ms);

/* A librdkafka stats_cb (opaque: the runner): keeps the figures above. */
int sk_runner_kafka_stats(struct sk_runner *r, char *json, size_t len);
/* The same from figures parsed once (sk_kafka_stats_parse) for the runners
 * that share a client (the sources' producer, the sinks' shared consumer). */
struct sk_kafka_stats;
void sk_runner_kafka_stats_apply(struct sk_runner *r, const struct sk_kafka_stats *st);

/*
 * An error the connector's Kafka client reported (its error callback): counted
 * (skolsync_kafka_errors_total) and logged, one line per
 * SK_KAFKA_ERROR_INTERVAL_MS at most (sk_log_limited: the next line says how
 * many were left out). librdkafka repeats some every second for each
 * partition: a topic deleted under a consumer gave three lines a second for
 * ever.
 */
#define SK_KAFKA_ERROR_INTERVAL_MS 6000
void sk_runner_kafka_error(struct sk_runner *r, const char *reason);

void sk_runner_init(struct sk_runner *r, enum sk_runner_kind kind, const char *name,
                    const char *type);
void sk_runner_destroy(struct sk_runner *r);
void sk_runner_set_state(struct sk_runner *r, enum sk_runner_state s);
void sk_runner_set_error(struct sk_runner *r, const char *msg);
void sk_runner_last_error(struct sk_runner *r, char *buf, size_t size);
/*
 * Adds from's counters and histograms to to's: a connector the reload starts
 * anew keeps counting from where it was (counters are per daemon run, and
 * Prometheus counters never go back).
 */
void sk_runner_carry_counters(struct sk_runner *to, struct sk_runner *from);
/* "source" or "sink" */
const char *sk_runner_kind_name(const struct sk_runner *r);
/* Tells the supervisor's loop to look now (the runner's thread). */
void sk_runner_notify(struct sk_runner *r);
/* Wake the runner's thread if it is waiting (any thread). */
void sk_runner_wake(struct sk_runner *r);
/* Wait up to ms or until woken or stopped. Returns true if woken or stopped. */
bool sk_runner_wait(struct sk_runner *r, int64_t ms);

#endif
