/*
 * daemon_internal.h: the running daemon as the supervisor (supervisor.c) and
 * the HTTP API (http_api.c) share it.
 *
 * Threads: the main thread owns the connector list and changes it (restart,
 * reload) under the write lock; HTTP threads read it under the read lock and
 * never keep a runner pointer past their request. Runner counters are atomics.
 */
#ifndef SK_DAEMON_INTERNAL_H
#define SK_DAEMON_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "daemon.h"
#include "drivers.h"
#include "http.h"
#include "runner.h"

struct sk_daemon {
    struct sk_daemon_config *cfg;  /* the configuration in force */
    struct sk_daemon_config **old; /* earlier ones: unchanged connectors still use them */
    size_t n_old;
    const char *config_path;
    char *admin_token; /* admin.token at start (a reload does not change it) */
    bool once;
    struct sk_kafka *kafka;
    struct sk_http *http;
    pthread_rwlock_t lock;    /* guards conns and n_conns */
    struct sk_runner **conns; /* sources and sinks; each is the first member of its env */
    size_t n_conns;
    int sigfd;
    int wake_fd; /* eventfd: the runners' sk_runner_notify and a reload request wake the loop */
    int64_t started_ms;

    /* reload handshake between an HTTP thread and the main thread */
    pthread_mutex_t reload_mu;
    pthread_cond_t reload_cv;
    bool reload_requested;
    uint64_t reload_generation; /* bumped when a reload finished */
    char *reload_result;        /* JSON of the last reload (malloc'ed; every error listed) */
    atomic_uint_fast64_t reloads, reload_failures;
    struct sk_lag_monitor *lag; /* the sinks' consumer lag, sampled in the background */
    struct sk_ownership *owner; /* which sources this node runs; NULL: all (ownership.h) */
    struct sk_sink_hubs *hubs;  /* the node-local sinks' shared consumer; NULL: off */
    bool stopping;              /* halting every connector: ownership changes are ignored */
};

static inline struct sk_source_env *sk_as_source(struct sk_runner *r)
{
    return r->kind == SK_RUNNER_SOURCE ? (struct sk_source_env *)r : NULL;
}

static inline struct sk_sink_env *sk_as_sink(struct sk_runner *r)
{
    return r->kind == SK_RUNNER_SINK ? (struct sk_sink_env *)r : NULL;
}

/* supervisor.c: a connector's life. Open (its own connection to its
 * system; failed with the reason on error), start its thread, and stop it
 * (by deadline) and close it: false if the thread would not stop. */
int sk_conn_open(struct sk_runner *r);
int sk_conn_start(struct sk_runner *r);
bool sk_conn_halt(struct sk_runner *r, int64_t deadline);

/* source_owner.c: whether this node runs r now (every sink; a source only
 * while it owns it), and the supervisor's answer to a change of ownership
 * (sk_ownership_changed_fn, ctx the daemon). Main thread. */
bool sk_may_run(struct sk_daemon *d, struct sk_runner *r);
void sk_apply_ownership(void *ctx);

/* cluster_api.c: GET /api/v1/cluster's answer (this node, the deployment's
 * nodes, the sources each owns and the sink partitions each holds). */
struct cJSON *sk_cluster_json(struct sk_daemon *d);

/* The state to report: a source holding deletions is "held". */
const char *sk_daemon_state_name(struct sk_runner *r);
/* GET /metrics (http_metrics.c), registered by sk_http_api_register. */
void sk_http_api_metrics(void *ctx, const struct sk_http_request *req,
                         struct sk_http_response *resp);

/* lag_monitor.c: a thread sampling the sinks' consumer groups (lag.h rules). */
struct sk_lag_monitor;
struct sk_lag_monitor *sk_lag_monitor_start(struct sk_daemon *d, int64_t interval_ms);
void sk_lag_monitor_stop(struct sk_lag_monitor *m);
/* The latest evaluated report (docs/lag.md JSON), NULL before the first. Caller frees. */
struct cJSON *sk_lag_monitor_json(struct sk_lag_monitor *m);
/*
 * A sink's lag in records on the partitions this daemon holds (every
 * partition of its group when the members' assignments are unknown), from
 * the latest sample; -1 when unknown (no sample yet, the last one failed).
 */
int64_t sk_lag_monitor_sink_lag(struct sk_lag_monitor *m, const char *sink);
/* Total lag per sink over the last 15 minutes: [{"t", "sinks": {name: {lag, seconds}}}]. */
struct cJSON *sk_lag_monitor_history(struct sk_lag_monitor *m);

/* watchdog.c: systemd's watchdog, fed from the main loop (docs/architecture.md §7.3). */
struct sk_watchdog {
    int64_t interval_ms; /* half of WatchdogSec; 0: no watchdog */
    int64_t next_ms;     /* the next ping is due */
    int64_t stall_ms;    /* a sink with lag doing nothing this long is stalled */
    uint64_t total;      /* connectors' work counters at the last change */
    int64_t moved_ms;    /* when they last changed */
};
void sk_watchdog_init(struct sk_watchdog *w, int64_t lag_interval_ms);
/* Sends WATCHDOG=1 when due and the connectors make progress. */
void sk_watchdog_feed(struct sk_daemon *d, struct sk_watchdog *w, int64_t now);

/* http_api.c: registers /health, /ready, /metrics and /api/v1/... */
int sk_http_api_register(struct sk_daemon *d, struct sk_error *err);
/*
 * Ready: every connector running, or idle and caught up. why gets the reason
 * if not; with details, a failed connector's last error (which may quote an
 * outside server) is part of it, else a pointer to where to find it.
 */
bool sk_daemon_ready(struct sk_daemon *d, bool details, char *why, size_t size);

#endif
