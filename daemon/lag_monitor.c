/*
 * lag_monitor.c: the daemon's own lag windows. A background thread samples
 * the consumer groups of the running sinks every lag_interval (daemon/lag.c
 * does the measuring and the Burrow-style rules) and keeps the latest
 * evaluated report for GET /api/v1/lag, /metrics and the status page.
 *
 * It runs off the connectors' threads: 2.0.2's query_watermark_offsets does
 * not enforce its timeout when a broker misbehaves (docs/architecture.md §8.6).
 */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "daemon_internal.h"
#include "lag.h"
#include "log.h"
#include "util.h"

/* What one sample needs to know of a running sink, copied under the daemon's lock. */
struct sink_names {
    char *sink, *group, *client;
};

/* A sink's lag on the partitions this daemon holds, from the latest sample. */
struct own_lag {
    char *sink;
    int64_t lag;
    bool exact; /* only this member's partitions (else all of the group's) */
};

struct sk_lag_monitor {
    struct sk_daemon *d;
    struct sk_lag_window *window;
    pthread_t thread;
    struct sk_runner clock; /* only its wait/wake: an interruptible sleep */
    int64_t interval_ms;
    /* a short history of total lag per sink, for the status page's chart */
    pthread_mutex_t mu;
    cJSON *history;      /* [{"t": ms, "sinks": {name: {"lag": n, "seconds": s}}}] */
    struct own_lag *own; /* guarded by mu; NULL when the last sample failed */
    size_t n_own;
    int64_t tombstone_ms;   /* the topics' delete.retention.ms; 0 on the embedded broker */
    int64_t tomb_warned_ms; /* when "deletions may be lost" was last logged (monitor thread) */
};

#define TOMB_WARN_EVERY_MS (3600 * 1000) /* an hourly line while it lasts */

#define HISTORY_MAX 180 /* 15 minutes at the default 5 s interval */

static const struct sink_names *sink_of(const struct sink_names *s, size_t n, const char *group)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s[i].group, group) == 0)
            return &s[i];
    return NULL;
}

/*
 * On the embedded broker members are unknown to Kafka: the daemon knows its
 * own. A running sink is its group's one member; a stopped or failed one
 * leaves the group empty, so lag there reads as STOP at once. This node,
 * alone by nature, owns the running sinks' partitions and every source (as
 * GET /api/v1/cluster says there).
 */
static void fill_members(struct sk_daemon *d, struct sk_lag_report *rep, const struct sink_names *s,
                         size_t n)
{
    const char *self = sk_kafka_names(d->kafka)->node;
    for (size_t i = 0; i < rep->n_sources; i++)
        if (!rep->sources[i].owner)
            rep->sources[i].owner = sk_strdup(self);
    for (size_t g = 0; g < rep->n_groups; g++) {
        struct sk_lag_group *grp = &rep->groups[g];
        const struct sink_names *sn = sink_of(s, n, grp->group);
        if (grp->members_known || !sn)
            continue;
        for (size_t i = 0; i < d->n_conns; i++) {
            struct sk_runner *r = d->conns[i];
            if (r->kind != SK_RUNNER_SINK || strcmp(sn->sink, r->name) != 0)
                continue;
            int st = atomic_load(&r->state);
            grp->members_known = true;
            if (st == SK_STATE_RUNNING || st == SK_STATE_IDLE || st == SK_STATE_RETRYING) {
                grp->members = sk_calloc(1, sizeof(*grp->members));
                grp->members[0].client_id = sk_strdup(sn->client);
                grp->members[0].consumer_id = sk_strdup(r->name);
                grp->members[0].host = sk_strdup("localhost");
                grp->members[0].node = sk_strdup(self);
                grp->n_members = 1;
                for (size_t p = 0; p < grp->n_parts; p++)
                    if (!grp->parts[p].owner)
                        grp->parts[p].owner = sk_strdup(self);
            }
        }
    }
}

static bool assigned_to(const struct sk_lag_group *g, const char *client,
                        const struct sk_lag_partition *p)
{
    char tp[512];
    snprintf(tp, sizeof(tp), "%s/%d", p->topic, (int)p->partition);
    for (size_t m = 0; m < g->n_members; m++)
        if (g->members[m].client_id && strcmp(g->members[m].client_id, client) == 0)
            for (size_t a = 0; a < g->members[m].n_assignment; a++)
                if (strcmp(g->members[m].assignment[a], tp) == 0)
                    return true;
    return false;
}

/* The group's lag on the partitions assigned to this daemon's member when the
 * members' assignments are known (other nodes' partitions are theirs to
 * apply), else on every partition; *exact when that is the member's own (its
 * assignment known, or it is the group's one member). */
static int64_t lag_of(const struct sk_lag_group *g, const char *client, bool *exact)
{
    bool assignments = false;
    for (size_t m = 0; m < g->n_members; m++)
        assignments |= g->members[m].n_assignment > 0;
    *exact = assignments || (g->members_known && g->n_members == 1 && g->members[0].client_id &&
                             strcmp(g->members[0].client_id, client) == 0);
    int64_t lag = 0;
    for (size_t i = 0; i < g->n_parts; i++)
        if (g->parts[i].lag > 0 && (!assignments || assigned_to(g, client, &g->parts[i])))
            lag += g->parts[i].lag;
    return lag;
}

/* Each sink's own lag, for its thread too (sink_driver.c: a fetch that
 * stopped); taken at sampled_ms. */
static void publish_own(struct sk_lag_monitor *m, const struct own_lag *own, size_t n_own,
                        int64_t sampled_ms)
{
    struct sk_daemon *d = m->d;
    pthread_rwlock_rdlock(&d->lock);
    for (size_t c = 0; c < d->n_conns; c++) {
        struct sk_runner *r = d->conns[c];
        if (r->kind != SK_RUNNER_SINK)
            continue;
        int64_t lag = -1; /* unknown, or other members' partitions counted too */
        for (size_t i = 0; i < n_own; i++)
            if (strcmp(own[i].sink, r->name) == 0 && own[i].exact)
                lag = own[i].lag;
        atomic_store(&r->sampled_lag, lag);
        atomic_store(&r->sampled_lag_ms, sampled_ms);
    }
    pthread_rwlock_unlock(&d->lock);
}

static void keep_own(struct sk_lag_monitor *m, const struct sk_lag_report *rep,
                     const struct sink_names *s, size_t n, int64_t sampled_ms)
{
    struct own_lag *own = sk_calloc(n + 1, sizeof(*own));
    size_t n_own = 0;
    for (size_t g = 0; rep && g < rep->n_groups; g++) {
        const struct sink_names *sn = sink_of(s, n, rep->groups[g].group);
        if (!sn || rep->groups[g].error)
            continue;
        own[n_own].sink = sk_strdup(sn->sink);
        own[n_own].lag = lag_of(&rep->groups[g], sn->client, &own[n_own].exact);
        n_own++;
    }
    publish_own(m, own, n_own, sampled_ms);
    pthread_mutex_lock(&m->mu);
    struct own_lag *old = m->own;
    size_t n_old = m->n_own;
    m->own = own;
    m->n_own = n_own;
    pthread_mutex_unlock(&m->mu);
    for (size_t i = 0; i < n_old; i++)
        free(old[i].sink);
    free(old);
}

static void remember(struct sk_lag_monitor *m, const struct sink_names *s, size_t n)
{
    cJSON *rep = sk_lag_window_json(m->window);
    if (!rep)
        return;
    cJSON *point = cJSON_CreateObject();
    cJSON_AddNumberToObject(point, "t", (double)sk_now_us() / 1000.0);
    cJSON *sinks = cJSON_AddObjectToObject(point, "sinks");
    cJSON *groups = cJSON_GetObjectItemCaseSensitive(rep, "groups");
    struct sk_buf behind = {0};
    for (cJSON *g = groups ? groups->child : NULL; g; g = g->next) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(g, "group");
        const struct sink_names *sn =
            cJSON_IsString(name) ? sink_of(s, n, name->valuestring) : NULL;
        if (!sn)
            continue;
        cJSON *o = cJSON_AddObjectToObject(sinks, sn->sink);
        cJSON *lag = cJSON_GetObjectItemCaseSensitive(g, "lag");
        cJSON *secs = cJSON_GetObjectItemCaseSensitive(g, "max_lag_seconds");
        cJSON_AddNumberToObject(o, "lag", cJSON_IsNumber(lag) ? lag->valuedouble : 0);
        cJSON_AddNumberToObject(o, "seconds", cJSON_IsNumber(secs) ? secs->valuedouble : 0);
        if (m->tombstone_ms > 0 && cJSON_IsNumber(secs) &&
            secs->valuedouble * 1000.0 >= (double)m->tombstone_ms / 2)
            sk_buf_printf(&behind, "%s%s (%.1f h)", behind.len ? ", " : "", sn->sink,
                          secs->valuedouble / 3600.0);
    }
    cJSON_Delete(rep);
    int64_t now = sk_mono_ms();
    if (behind.len && (!m->tomb_warned_ms || now - m->tomb_warned_ms >= TOMB_WARN_EVERY_MS)) {
        m->tomb_warned_ms = now;
        sk_error_log("lag",
                     "sink(s) %s behind by over half of kafka.tombstone_retention (%.1f h): "
                     "a deletion compacted away before it is read stays in the target. Once "
                     "caught up, pause each ss12000-source, reset its cursor (POST "
                     "/api/v1/connectors/NAME/cursor/reset) and resume it: the full listing "
                     "that follows is a snapshot, and a sink reading it whole deletes what it "
                     "lacks",
                     behind.p, (double)m->tombstone_ms / 3600000.0);
    }
    sk_buf_free(&behind);
    pthread_mutex_lock(&m->mu);
    cJSON_AddItemToArray(m->history, point);
    while (cJSON_GetArraySize(m->history) > HISTORY_MAX)
        cJSON_DeleteItemFromArray(m->history, 0);
    pthread_mutex_unlock(&m->mu);
}

/*
 * Partitions the sinks' topics gained since the node first met them (the
 * report holds every partition of them, from the broker's metadata, sorted
 * by topic): the sinks on them fail (kafka.h, sk_kafka_pin). Only a
 * gain is told: a partition missing from a report is no proof that the
 * topic lost it. One pass: 18 topics of 1000 partitions for 100 sinks
 * would make a pairwise count millions of comparisons a sample.
 */
static void note_partitions(struct sk_kafka *k, const struct sk_lag_report *rep)
{
    for (size_t g = 0; g < rep->n_groups; g++) {
        const struct sk_lag_group *grp = &rep->groups[g];
        for (size_t i = 0; i < grp->n_parts;) {
            const char *topic = grp->parts[i].topic;
            int n = 0;
            for (; i < grp->n_parts && strcmp(grp->parts[i].topic, topic) == 0; i++)
                if (grp->parts[i].partition >= n)
                    n = grp->parts[i].partition + 1;
            int pin = sk_kafka_pin(k, topic, 0);
            if (pin && n > pin)
                sk_kafka_pin_seen(k, topic, n);
        }
    }
}

static void sample(struct sk_lag_monitor *m)
{
    struct sk_daemon *d = m->d;
    /* the sinks' names, groups and each one's topics, copied under the lock */
    struct sink_names *s = NULL;
    char **groups = NULL, **topics = NULL, ***group_topics = NULL, **sinks = NULL, **sources = NULL;
    const char **nodes = NULL; /* not owned: the daemon's node name */
    size_t n = 0, nt = 0, *n_group_topics = NULL, n_sources = 0;
    pthread_rwlock_rdlock(&d->lock);
    sinks = sk_calloc(d->n_conns + 1, sizeof(char *));
    sources = sk_calloc(d->n_conns + 1, sizeof(char *));
    s = sk_calloc(d->n_conns + 1, sizeof(*s));
    groups = sk_calloc(d->n_conns + 1, sizeof(char *));
    nodes = sk_calloc(d->n_conns + 1, sizeof(char *));
    group_topics = sk_calloc(d->n_conns + 1, sizeof(char **));
    n_group_topics = sk_calloc(d->n_conns + 1, sizeof(size_t));
    for (size_t i = 0; i < d->n_conns; i++) {
        struct sk_sink_env *snk = sk_as_sink(d->conns[i]);
        if (!snk) {
            sources[n_sources++] = sk_strdup(d->conns[i]->name);
            continue;
        }
        group_topics[n] = sk_calloc(snk->sink.n_entities + 1, sizeof(char *));
        n_group_topics[n] = snk->sink.n_entities;
        s[n].sink = sk_strdup(snk->runner.name);
        s[n].group = sk_strdup(snk->group);
        s[n].client = sk_name_client(sk_kafka_names(d->kafka), "sink", snk->runner.name);
        groups[n] = s[n].group;
        sinks[n] = s[n].sink;
        /* the node's shared consumer reads for it: its group has no member */
        nodes[n] = snk->hubs ? sk_kafka_names(d->kafka)->node : NULL;
        topics = sk_realloc(topics, (nt + snk->sink.n_entities + 1) * sizeof(char *));
        for (size_t j = 0; j < snk->sink.n_entities; j++) {
            topics[nt++] = sk_strdup(snk->topics[j]);
            group_topics[n][j] = topics[nt - 1];
        }
        n++;
    }
    pthread_rwlock_unlock(&d->lock);
    const struct sk_names *names = sk_kafka_names(d->kafka);
    char *sources_group = sk_name_sources_group(names);
    char *sources_topic = sk_asprintf("%s_sources", sk_kafka_prefix(d->kafka));
    if (n) {
        struct sk_lag_collect_options o = {
            .kafka = d->kafka,
            .groups = (const char *const *)groups,
            .n_groups = n,
            .topics = (const char *const *)topics,
            .n_topics = nt,
            .group_topics = (const char *const *const *)group_topics,
            .n_group_topics = n_group_topics,
            .describe_members = !sk_kafka_embedded(d->kafka),
            /* who owns what: the sinks' partitions and the sources */
            .deployment = names->deployment,
            .sink_groups = (const char *const *)groups,
            .sink_names = (const char *const *)sinks,
            .sink_nodes = nodes,
            .n_sinks = n,
            .sources_group = sources_group,
            .sources_topic = sources_topic,
            .sources = (const char *const *)sources,
            .n_sources = n_sources,
            .timeout_ms = 10000,
            .read_ms = 3000,
        };
        struct sk_lag_report *rep = NULL;
        struct sk_error err = {0};
        int64_t sampled_ms = sk_mono_ms(); /* the offsets are read after this */
        if (sk_lag_collect(&o, &rep, &err) == 0) {
            pthread_rwlock_rdlock(&d->lock);
            fill_members(d, rep, s, n);
            pthread_rwlock_unlock(&d->lock);
            keep_own(m, rep, s, n, sampled_ms);
            note_partitions(d->kafka, rep);
            sk_lag_window_add(m->window, rep);
            remember(m, s, n);
        } else {
            keep_own(m, NULL, s, n, sampled_ms); /* unknown: the watchdog does not guess */
            sk_warn("lag", "sampling consumer lag: %s", err.msg);
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(s[i].sink);
        free(s[i].group);
        free(s[i].client);
        free(group_topics[i]);
    }
    free(group_topics);
    free(n_group_topics);
    for (size_t i = 0; i < n_sources; i++)
        free(sources[i]);
    free(sources);
    free(sinks);
    free(nodes);
    free(sources_group);
    free(sources_topic);
    for (size_t i = 0; i < nt; i++)
        free(topics[i]);
    free(s);
    free(groups);
    free(topics);
}

static void *monitor_thread(void *arg)
{
    struct sk_lag_monitor *m = arg;
    /* the first sample soon after start: the status page has something to show */
    sk_runner_wait(&m->clock, 2000);
    while (!atomic_load(&m->clock.stop)) {
        sample(m);
        sk_runner_wait(&m->clock, m->interval_ms);
    }
    return NULL;
}

struct sk_lag_monitor *sk_lag_monitor_start(struct sk_daemon *d, int64_t interval_ms)
{
    struct sk_lag_monitor *m = sk_calloc(1, sizeof(*m));
    m->d = d;
    m->interval_ms = interval_ms > 0 ? interval_ms : 5000;
    struct sk_lag_rules rules;
    sk_lag_rules_default(&rules);
    /* the embedded broker's store keeps tombstones when it compacts (§5.8) */
    if (!sk_kafka_embedded(d->kafka))
        rules.tombstone_ms = sk_kafka_tombstone_retention_ms(d->kafka);
    m->tombstone_ms = rules.tombstone_ms;
    m->window = sk_lag_window_new(&rules);
    m->history = cJSON_CreateArray();
    pthread_mutex_init(&m->mu, NULL);
    sk_runner_init(&m->clock, SK_RUNNER_SINK, "lag", "lag");
    if (sk_thread_start(&m->thread, monitor_thread, m, "lag-monitor", NULL)) {
        sk_lag_monitor_stop(m);
        return NULL;
    }
    m->clock.started = true;
    return m;
}

void sk_lag_monitor_stop(struct sk_lag_monitor *m)
{
    if (!m)
        return;
    atomic_store(&m->clock.stop, true);
    sk_runner_wake(&m->clock);
    if (m->clock.started)
        pthread_join(m->thread, NULL);
    sk_lag_window_destroy(m->window);
    cJSON_Delete(m->history);
    for (size_t i = 0; i < m->n_own; i++)
        free(m->own[i].sink);
    free(m->own);
    pthread_mutex_destroy(&m->mu);
    sk_runner_destroy(&m->clock);
    free(m);
}

cJSON *sk_lag_monitor_json(struct sk_lag_monitor *m)
{
    return m ? sk_lag_window_json(m->window) : NULL;
}

cJSON *sk_lag_monitor_history(struct sk_lag_monitor *m)
{
    if (!m)
        return cJSON_CreateArray();
    pthread_mutex_lock(&m->mu);
    cJSON *copy = cJSON_Duplicate(m->history, true);
    pthread_mutex_unlock(&m->mu);
    return copy;
}

int64_t sk_lag_monitor_sink_lag(struct sk_lag_monitor *m, const char *sink)
{
    int64_t lag = -1;
    if (!m)
        return lag;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->n_own; i++)
        if (strcmp(m->own[i].sink, sink) == 0)
            lag = m->own[i].lag;
    pthread_mutex_unlock(&m->mu);
    return lag;
}
