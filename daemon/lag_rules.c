/*
 * lag_rules.c: the status of a partition over a window of samples (OK, WARN,
 * ERR, STALL, STOP, REWIND; docs/lag.md "Statuses"), and the window itself.
 *
 * Must never: call Kafka (it only reads samples it is given).
 */
#include "lag.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "util.h"

/* ---- the rules --------------------------------------------------------------- */

void sk_lag_rules_default(struct sk_lag_rules *rules)
{
    *rules = (struct sk_lag_rules){
        .window = 10, .stuck_ms = 60000, .warn_lag_ms = 60000, .allowed_lag = 0};
}

enum sk_lag_status sk_lag_evaluate(const struct sk_lag_point *pts, size_t n, int members,
                                   const struct sk_lag_rules *rules, const char **reason)
{
    const char *why_dummy;
    if (!reason)
        reason = &why_dummy;
    const struct sk_lag_point *cur = &pts[n - 1];
    /* 1. Caught up now: OK whatever the commit age (no false STOP on an idle
     *    topic, Burrow #38/#237) and however many markers follow (#570). */
    if (cur->lag <= rules->allowed_lag) {
        *reason = "caught up";
        return SK_LAG_OK;
    }
    /* Progress: the latest point where the committed offset moved or the
     * group was caught up. Without one the whole window is stuck. */
    int64_t since = pts[0].time_ms;
    bool progressed = false;
    for (size_t i = n; i-- > 0;) {
        if (pts[i].lag <= rules->allowed_lag ||
            (i > 0 && pts[i].committed != pts[i - 1].committed)) {
            since = pts[i].time_ms;
            progressed = true;
            break;
        }
    }
    int64_t stuck_for = cur->time_ms - since;
    bool stuck = stuck_for >= rules->stuck_ms || (!progressed && n >= 2 && n >= rules->window);
    /* 2. A group without members does not consume: the lag stays. */
    if (members == 0) {
        *reason = "lag and the group has no members";
        return SK_LAG_STOP;
    }
    /* 3. Not moving and nobody known to be there. */
    if (stuck && members < 0) {
        *reason = "committed offset not moving with lag; members unknown";
        return SK_LAG_STOP;
    }
    /* 4. Went backwards and did not get back (a reset or a rebalance to an old offset). */
    for (size_t i = 1; i < n; i++) {
        if (pts[i].committed >= 0 && pts[i - 1].committed >= 0 &&
            pts[i].committed < pts[i - 1].committed) {
            bool recovered = false;
            for (size_t j = i + 1; j < n; j++)
                recovered |= pts[j].committed >= pts[i - 1].committed;
            if (!recovered) {
                *reason = "committed offset went backwards";
                return SK_LAG_REWIND;
            }
        }
    }
    /* 5. Members, lag, and the committed offset does not move. */
    if (stuck) {
        *reason = "members present but the committed offset does not move";
        return SK_LAG_STALL;
    }
    /* 5b. So far behind that a deletion may be compacted away before it is
     *     read (its tombstone kept for tombstone_ms once the segment is
     *     cleaned): catching up or not, the target may keep a deleted row. */
    if (rules->tombstone_ms > 0 && cur->lag_seconds >= 0 &&
        cur->lag_seconds * 1000.0 >= (double)rules->tombstone_ms / 2) {
        *reason = "oldest unconsumed record is older than half the topics' tombstone retention: "
                  "deletions may be compacted away unread";
        return SK_LAG_ERR;
    }
    /* 6. Catching up. */
    if (n >= 2 && cur->lag < pts[0].lag) {
        *reason = "lag decreasing";
        return SK_LAG_OK;
    }
    /* 7. Falling behind: committing, yet lag never decreases across the window. */
    if (n >= 3 && cur->lag > pts[0].lag && cur->committed != pts[0].committed) {
        bool never_down = true;
        for (size_t i = 1; i < n; i++)
            never_down &= pts[i].lag >= pts[i - 1].lag;
        if (never_down) {
            *reason = "lag grows while the consumer commits";
            return SK_LAG_WARN;
        }
    }
    /* 8. The oldest unconsumed record waits too long (read, not estimated). */
    if (cur->lag_seconds >= 0 && cur->lag_seconds * 1000.0 >= (double)rules->warn_lag_ms) {
        *reason = "oldest unconsumed record is older than the warn threshold";
        return SK_LAG_WARN;
    }
    *reason = "consuming";
    return SK_LAG_OK;
}

/* ---- the window -------------------------------------------------------------- */

struct series {
    char *group, *topic;
    int32_t partition;
    struct sk_lag_point *pts; /* ring, oldest at head */
    size_t head, n;
    bool seen;
};

struct sk_lag_window {
    pthread_mutex_t mu;
    struct sk_lag_rules rules;
    struct series *series;
    size_t n_series;
    struct sk_lag_report *latest;
};

struct sk_lag_window *sk_lag_window_new(const struct sk_lag_rules *rules)
{
    struct sk_lag_window *w = sk_calloc(1, sizeof(*w));
    pthread_mutex_init(&w->mu, NULL);
    if (rules)
        w->rules = *rules;
    else
        sk_lag_rules_default(&w->rules);
    if (w->rules.window < 1)
        w->rules.window = 1;
    return w;
}

static void series_free(struct series *s)
{
    free(s->group);
    free(s->topic);
    free(s->pts);
}

void sk_lag_window_destroy(struct sk_lag_window *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_series; i++)
        series_free(&w->series[i]);
    free(w->series);
    sk_lag_report_free(w->latest);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

static struct series *series_get(struct sk_lag_window *w, const char *group,
                                 const struct sk_lag_partition *p)
{
    for (size_t i = 0; i < w->n_series; i++) {
        struct series *s = &w->series[i];
        if (s->partition == p->partition && strcmp(s->topic, p->topic) == 0 &&
            strcmp(s->group, group) == 0)
            return s;
    }
    w->series = sk_realloc(w->series, (w->n_series + 1) * sizeof(*w->series));
    struct series *s = &w->series[w->n_series++];
    *s = (struct series){.group = sk_strdup(group),
                         .topic = sk_strdup(p->topic),
                         .partition = p->partition,
                         .pts = sk_calloc(w->rules.window, sizeof(struct sk_lag_point))};
    return s;
}

static void evaluate_partition(struct sk_lag_window *w, const struct sk_lag_group *g,
                               struct sk_lag_partition *p)
{
    if (p->error) {
        p->status = SK_LAG_ERR;
        p->reason = "could not be sampled";
        return;
    }
    if (p->committed >= 0 && p->low >= 0 && p->committed < p->low) {
        /* Retention removed records the group never read. */
        p->status = SK_LAG_ERR;
        p->reason = "committed offset is below the log start: records lost unread";
        return;
    }
    struct series *s = series_get(w, g->group, p);
    s->seen = true;
    struct sk_lag_point pt = {.time_ms = w->latest ? w->latest->time_ms : 0,
                              .committed = p->committed,
                              .end = p->end,
                              .lag = p->lag,
                              .lag_seconds = p->lag_seconds};
    size_t cap = w->rules.window;
    if (s->n < cap) {
        s->pts[(s->head + s->n++) % cap] = pt;
    } else {
        s->pts[s->head] = pt;
        s->head = (s->head + 1) % cap;
    }
    struct sk_lag_point *lin = sk_calloc(s->n, sizeof(*lin));
    for (size_t i = 0; i < s->n; i++)
        lin[i] = s->pts[(s->head + i) % cap];
    int members = g->members_known ? (g->n_members > 0) : -1;
    p->status = sk_lag_evaluate(lin, s->n, members, &w->rules, &p->reason);
    free(lin);
}

static void evaluate_group(struct sk_lag_window *w, struct sk_lag_group *g)
{
    g->status = SK_LAG_OK;
    g->total_lag = 0;
    g->total_exact = true;
    g->max_lag_seconds = 0;
    if (g->error)
        g->status = SK_LAG_ERR;
    for (size_t j = 0; j < g->n_parts; j++) {
        struct sk_lag_partition *p = &g->parts[j];
        evaluate_partition(w, g, p);
        enum sk_lag_status gs = sk_lag_status_group(p->status);
        if (gs > g->status)
            g->status = gs;
        if (p->lag > 0)
            g->total_lag += p->lag;
        g->total_exact &= p->lag_exact;
        if (p->lag_seconds > g->max_lag_seconds)
            g->max_lag_seconds = p->lag_seconds;
    }
}

void sk_lag_window_add(struct sk_lag_window *w, struct sk_lag_report *r)
{
    pthread_mutex_lock(&w->mu);
    sk_lag_report_free(w->latest);
    w->latest = r;
    for (size_t i = 0; i < w->n_series; i++)
        w->series[i].seen = false;
    size_t most = 0;
    for (size_t i = 0; i < r->n_groups; i++)
        evaluate_group(w, &r->groups[i]);
    /* Forget partitions that are gone (no unbounded growth, Burrow #511). */
    size_t keep = 0;
    for (size_t i = 0; i < w->n_series; i++) {
        if (w->series[i].seen) {
            if (w->series[i].n > most)
                most = w->series[i].n;
            w->series[keep++] = w->series[i];
        } else {
            series_free(&w->series[i]);
        }
    }
    w->n_series = keep;
    r->window_samples = most;
    r->window_size = w->rules.window;
    pthread_mutex_unlock(&w->mu);
}

enum sk_lag_status sk_lag_window_status(struct sk_lag_window *w)
{
    pthread_mutex_lock(&w->mu);
    enum sk_lag_status worst = SK_LAG_OK;
    for (size_t i = 0; w->latest && i < w->latest->n_groups; i++)
        if (w->latest->groups[i].status > worst)
            worst = w->latest->groups[i].status;
    pthread_mutex_unlock(&w->mu);
    return worst;
}

cJSON *sk_lag_window_json(struct sk_lag_window *w)
{
    pthread_mutex_lock(&w->mu);
    cJSON *j = w->latest ? sk_lag_report_json(w->latest) : NULL;
    pthread_mutex_unlock(&w->mu);
    return j;
}
