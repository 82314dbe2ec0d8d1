/*
 * http_metrics.c: GET /metrics, the daemon's Prometheus text: every runner
 * counter and histogram per connector, connector states, held deletions,
 * failing and skipped types, reloads, consumer lag from the lag monitor, the
 * HTTP server's own figures. Read under the daemon's read lock.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "daemon_internal.h"
#include "log.h"
#include "util.h"

static bool kafka_stats_known(struct sk_runner *r)
{
    return atomic_load(&r->kafka_stats);
}

/* A counter per connector; with `known`, only for the connectors it says know it. */
static void counter(struct sk_daemon *d, struct sk_buf *t, const char *name, const char *help,
                    size_t off, bool (*known)(struct sk_runner *))
{
    sk_buf_printf(t, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (size_t i = 0; i < d->n_conns; i++) {
        struct sk_runner *r = d->conns[i];
        if (known && !known(r))
            continue;
        const atomic_uint_fast64_t *v = (const atomic_uint_fast64_t *)((const char *)r + off);
        sk_buf_printf(t, "%s{connector=\"%s\",kind=\"%s\",type=\"%s\"} %llu\n", name, r->name,
                      sk_runner_kind_name(r), r->type, (unsigned long long)atomic_load(v));
    }
}

static void histogram(struct sk_daemon *d, struct sk_buf *t, const char *name, const char *help,
                      size_t off, enum sk_runner_kind only, bool any_kind)
{
    sk_buf_printf(t, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (size_t i = 0; i < d->n_conns; i++) {
        struct sk_runner *r = d->conns[i];
        if (!any_kind && r->kind != only)
            continue;
        struct sk_histogram *h = (struct sk_histogram *)((char *)r + off);
        uint64_t cum = 0;
        for (size_t b = 0; b <= SK_HIST_BUCKETS; b++) {
            cum += atomic_load(&h->buckets[b]);
            if (b < SK_HIST_BUCKETS)
                sk_buf_printf(t, "%s_bucket{connector=\"%s\",kind=\"%s\",le=\"%g\"} %llu\n", name,
                              r->name, sk_runner_kind_name(r), sk_hist_bounds[b],
                              (unsigned long long)cum);
            else
                sk_buf_printf(t, "%s_bucket{connector=\"%s\",kind=\"%s\",le=\"+Inf\"} %llu\n", name,
                              r->name, sk_runner_kind_name(r), (unsigned long long)cum);
        }
        sk_buf_printf(t, "%s_sum{connector=\"%s\",kind=\"%s\"} %.6f\n", name, r->name,
                      sk_runner_kind_name(r), (double)atomic_load(&h->sum_us) / 1e6);
        sk_buf_printf(t, "%s_count{connector=\"%s\",kind=\"%s\"} %llu\n", name, r->name,
                      sk_runner_kind_name(r), (unsigned long long)atomic_load(&h->count));
    }
}

/* Per partition lag of every sink group, from the lag monitor's latest sample. */
static void lag_metrics(struct sk_daemon *d, struct sk_buf *t)
{
    cJSON *rep = sk_lag_monitor_json(d->lag);
    if (!rep)
        return;
    sk_buf_printf(
        t, "# HELP skolsync_consumer_lag_records Consumable records a sink group has not applied\n"
           "# TYPE skolsync_consumer_lag_records gauge\n");
    cJSON *groups = cJSON_GetObjectItemCaseSensitive(rep, "groups");
    for (int pass = 0; pass < 3; pass++) {
        if (pass == 1)
            sk_buf_printf(
                t, "# HELP skolsync_consumer_lag_seconds Age of the oldest record a sink group "
                   "has not applied\n# TYPE skolsync_consumer_lag_seconds gauge\n");
        if (pass == 2)
            sk_buf_printf(
                t, "# HELP skolsync_consumer_group_status Lag status of a sink group (1 for the "
                   "current one)\n# TYPE skolsync_consumer_group_status gauge\n");
        for (cJSON *g = groups ? groups->child : NULL; g; g = g->next) {
            const char *group = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(g, "group"));
            if (!group)
                continue;
            if (pass == 2) {
                const char *st =
                    cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(g, "status"));
                for (const char *const *s = (const char *const[]){"OK", "WARN", "ERR", NULL}; *s;
                     s++)
                    sk_buf_printf(t,
                                  "skolsync_consumer_group_status{group=\"%s\",status=\"%s\"} %d\n",
                                  group, *s, st && strcmp(st, *s) == 0);
                continue;
            }
            cJSON *parts = cJSON_GetObjectItemCaseSensitive(g, "partitions");
            for (cJSON *p = parts ? parts->child : NULL; p; p = p->next) {
                const char *topic =
                    cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(p, "topic"));
                cJSON *part = cJSON_GetObjectItemCaseSensitive(p, "partition");
                cJSON *v = cJSON_GetObjectItemCaseSensitive(p, pass == 0 ? "lag" : "lag_seconds");
                if (!topic || !cJSON_IsNumber(part) || !cJSON_IsNumber(v) || v->valuedouble < 0)
                    continue;
                sk_buf_printf(t, "%s{group=\"%s\",topic=\"%s\",partition=\"%d\"} %g\n",
                              pass == 0 ? "skolsync_consumer_lag_records"
                                        : "skolsync_consumer_lag_seconds",
                              group, topic, part->valueint, v->valuedouble);
            }
        }
    }
    cJSON_Delete(rep);
}

/* The families of sinks' own metrics (sk_sink_ops.metrics), each once, from every open sink. */
static void sink_metrics(struct sk_daemon *d, struct sk_buf *t)
{
    for (size_t i = 0; i < d->n_conns; i++) {
        struct sk_sink_env *first = sk_as_sink(d->conns[i]);
        if (!first || !first->sink.ops->metrics || !first->sink.ops->metric_families)
            continue;
        const struct sk_sink_ops *ops = first->sink.ops;
        bool seen = false; /* an earlier sink of this type printed the families */
        for (size_t k = 0; k < i && !seen; k++)
            seen = sk_as_sink(d->conns[k]) && sk_as_sink(d->conns[k])->sink.ops == ops;
        if (seen)
            continue;
        for (size_t f = 0; ops->metric_families[f].name; f++) {
            const struct sk_metric_family *m = &ops->metric_families[f];
            sk_buf_printf(t, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name, m->type);
            for (size_t k = i; k < d->n_conns; k++) {
                struct sk_sink_env *s = sk_as_sink(d->conns[k]);
                if (!s || s->sink.ops != ops)
                    continue;
                pthread_mutex_lock(&s->runner.mu);
                if (s->open)
                    ops->metrics(&s->sink, f, t);
                pthread_mutex_unlock(&s->runner.mu);
            }
        }
    }
}

/* The entity types of sources that fail or are skipped (sk_source_set_type_error/_skipped). */
static void type_metrics(struct sk_daemon *d, struct sk_buf *t)
{
    sk_buf_printf(t, "# HELP skolsync_source_type_failing 1 while a source's entity type fails, "
                     "the others going on\n# TYPE skolsync_source_type_failing gauge\n"
                     "# HELP skolsync_source_type_errors_total Failures of a source's entity "
                     "type\n# TYPE skolsync_source_type_errors_total counter\n"
                     "# HELP skolsync_source_type_skipped 1 while a source skips an entity type "
                     "its server does not serve (404)\n# TYPE skolsync_source_type_skipped gauge\n"
                     "# HELP skolsync_source_records_bad_again_total Records that failed "
                     "validation before, seen again unchanged and not dead-lettered again\n"
                     "# TYPE skolsync_source_records_bad_again_total counter\n"
                     "# HELP skolsync_source_records_incomplete_total Records published lacking a "
                     "field SS 12000 requires (validation: lenient)\n"
                     "# TYPE skolsync_source_records_incomplete_total counter\n");
    for (size_t i = 0; i < d->n_conns; i++) {
        struct sk_source_env *src = sk_as_source(d->conns[i]);
        if (!src)
            continue;
        pthread_mutex_lock(&src->runner.mu);
        for (int k = 0; k <= SK_ENTITY_COUNT; k++) {
            const struct sk_type_health *h = &src->types[k];
            const char *c = sk_type_health_name(k);
            if (h->incomplete)
                sk_buf_printf(t,
                              "skolsync_source_records_incomplete_total{connector=\"%s\",entity="
                              "\"%s\"} %llu\n",
                              src->runner.name, c, (unsigned long long)h->incomplete);
            if (h->bad_again)
                sk_buf_printf(t,
                              "skolsync_source_records_bad_again_total{connector=\"%s\",entity="
                              "\"%s\"} %llu\n",
                              src->runner.name, c, (unsigned long long)h->bad_again);
            if (!h->errors && !h->skipped)
                continue;
            sk_buf_printf(t,
                          "skolsync_source_type_failing{connector=\"%s\",entity=\"%s\"} %d\n"
                          "skolsync_source_type_errors_total{connector=\"%s\",entity=\"%s\"} "
                          "%llu\n"
                          "skolsync_source_type_skipped{connector=\"%s\",entity=\"%s\"} %d\n",
                          src->runner.name, c, h->failing, src->runner.name, c,
                          (unsigned long long)h->errors, src->runner.name, c, h->skipped);
        }
        pthread_mutex_unlock(&src->runner.mu);
    }
}

void sk_http_api_metrics(void *ctx, const struct sk_http_request *req,
                         struct sk_http_response *resp)
{
    struct sk_daemon *d = ctx;
    struct sk_buf t = {0};
    sk_buf_reserve(&t, 8192);
    pthread_rwlock_rdlock(&d->lock);
    /* every runner counter, each a Prometheus counter per connector: name, help, field */
#define SK_COUNTER(name, help, field, ...)                                                         \
    {                                                                                              \
        name, help, offsetof(struct sk_runner, field), __VA_ARGS__                                 \
    }
    static const struct {
        const char *name, *help;
        size_t offset;
        bool (*known)(struct sk_runner *);
    } counters[] = {
        SK_COUNTER("skolsync_records_total",
                   "Records stored in Kafka (sources) or applied to the target (sinks)", records),
        SK_COUNTER("skolsync_records_failed_total",
                   "Bad inputs (sources) or records the target rejected (sinks)", failed),
        SK_COUNTER("skolsync_records_dead_lettered_total",
                   "Records written to the dead-letter topic", dead_lettered),
        SK_COUNTER("skolsync_records_refused_by_kafka_total",
                   "Records Kafka can never take (too large, invalid): dead-lettered", refused),
        SK_COUNTER("skolsync_kafka_request_retries_total",
                   "Requests and messages the connector's Kafka client sent again (with "
                   "kafka.statistics on)",
                   kafka_retries, kafka_stats_known),
        SK_COUNTER("skolsync_kafka_errors_total",
                   "Errors the connector's Kafka client reported (a broker down or "
                   "disconnected, a request timed out, ...)",
                   kafka_errors),
        SK_COUNTER("skolsync_kafka_rebalances_total",
                   "Consumer group rebalances of a sink (assignments and revocations)",
                   kafka_rebalances),
        SK_COUNTER("skolsync_kafka_consumer_renewals_total",
                   "Kafka consumers a sink replaced because they fetched nothing while it was "
                   "behind (fetch_stall_timeout)",
                   kafka_renewals),
        SK_COUNTER("skolsync_sink_swept_total",
                   "Records a sink deleted because a complete snapshot of their type lacked them",
                   swept),
        SK_COUNTER("skolsync_sink_sweeps_skipped_total",
                   "Complete snapshots a sink did not sweep (over its limit, more than one "
                   "source, or the target failed)",
                   sweeps_skipped),
        SK_COUNTER("skolsync_retries_total", "Retries after retriable errors", retries),
        SK_COUNTER("skolsync_connector_restarts_total",
                   "Restarts of a connector by the supervisor (after failures or on request)",
                   restarts),
    };
#undef SK_COUNTER
    for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
        counter(d, &t, counters[i].name, counters[i].help, counters[i].offset,
                counters[i].known);
    histogram(d, &t, "skolsync_poll_duration_seconds", "Time a source takes for one poll",
              offsetof(struct sk_runner, work_seconds), SK_RUNNER_SOURCE, false);
    histogram(d, &t, "skolsync_apply_duration_seconds",
              "Time a sink takes to apply one batch to its target",
              offsetof(struct sk_runner, work_seconds), SK_RUNNER_SINK, false);
    histogram(d, &t, "skolsync_end_to_end_latency_seconds",
              "From the moment a source saw a change to the moment a sink applied it",
              offsetof(struct sk_runner, latency_seconds), SK_RUNNER_SINK, false);
    sk_buf_printf(&t, "# HELP skolsync_connector_state 1 for the state a connector is in\n"
                      "# TYPE skolsync_connector_state gauge\n");
    static const char *const states[] = {"starting", "running", "idle", "retrying", "paused",
                                         "failed",   "stopped", "held", "standby"};
    for (size_t i = 0; i < d->n_conns; i++) {
        const char *now = sk_daemon_state_name(d->conns[i]);
        for (size_t s = 0; s < sizeof(states) / sizeof(states[0]); s++)
            sk_buf_printf(&t, "skolsync_connector_state{connector=\"%s\",state=\"%s\"} %d\n",
                          d->conns[i]->name, states[s], strcmp(states[s], now) == 0);
    }
    sk_buf_printf(&t,
                  "# HELP skolsync_held_deletions Deletions held back by a source's delete guard\n"
                  "# TYPE skolsync_held_deletions gauge\n");
    for (size_t i = 0; i < d->n_conns; i++) {
        struct sk_source_env *src = sk_as_source(d->conns[i]);
        if (src)
            sk_buf_printf(&t, "skolsync_held_deletions{connector=\"%s\"} %llu\n", src->runner.name,
                          (unsigned long long)atomic_load(&src->held));
    }
    type_metrics(d, &t);
    sink_metrics(d, &t);
    sk_buf_printf(
        &t,
        "# HELP skolsync_kafka_queued_messages Messages waiting in a connector's Kafka client "
        "(producer queue, or consumer prefetch)\n# TYPE skolsync_kafka_queued_messages gauge\n");
    for (size_t i = 0; i < d->n_conns; i++)
        if (atomic_load(&d->conns[i]->kafka_queued) >= 0)
            sk_buf_printf(&t, "skolsync_kafka_queued_messages{connector=\"%s\",kind=\"%s\"} %lld\n",
                          d->conns[i]->name, sk_runner_kind_name(d->conns[i]),
                          (long long)atomic_load(&d->conns[i]->kafka_queued));
    sk_buf_printf(
        &t, "# HELP skolsync_kafka_broker_rtt_seconds Largest average broker round-trip time seen "
            "by a connector's Kafka client\n# TYPE skolsync_kafka_broker_rtt_seconds gauge\n");
    for (size_t i = 0; i < d->n_conns; i++)
        if (atomic_load(&d->conns[i]->kafka_rtt_us) >= 0)
            sk_buf_printf(&t,
                          "skolsync_kafka_broker_rtt_seconds{connector=\"%s\",kind=\"%s\"} %.6f\n",
                          d->conns[i]->name, sk_runner_kind_name(d->conns[i]),
                          (double)atomic_load(&d->conns[i]->kafka_rtt_us) / 1e6);
    pthread_rwlock_unlock(&d->lock);
    lag_metrics(d, &t);
    sk_buf_printf(
        &t,
        "# HELP skolsync_reloads_total Configuration reloads applied\n"
        "# TYPE skolsync_reloads_total counter\nskolsync_reloads_total %llu\n"
        "# HELP skolsync_reload_failures_total Reloads refused (invalid configuration)\n"
        "# TYPE skolsync_reload_failures_total counter\nskolsync_reload_failures_total %llu\n",
        (unsigned long long)atomic_load(&d->reloads),
        (unsigned long long)atomic_load(&d->reload_failures));
    sk_http_metrics(d->http, &t);
    sk_buf_printf(&t,
                  "# HELP skolsync_log_lines_suppressed_total Repeated log lines that outside "
                  "input can cause at will (refused webhook calls, ...), counted instead of "
                  "logged\n# TYPE skolsync_log_lines_suppressed_total counter\n"
                  "skolsync_log_lines_suppressed_total %llu\n",
                  (unsigned long long)sk_log_suppressed_total());
    resp->body = sk_buf_take(&t);
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
}
