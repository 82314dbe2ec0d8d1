/*
 * lag.c: consumer-group lag: status names, the report's memory and how a
 * partition is settled from what the reader saw. Collection is in
 * lag_collect.c, the status rules and the window in lag_rules.c, JSON and
 * the table in lag_output.c. The rules and the JSON shape are documented in
 * docs/lag.md; keep the two in step.
 */
#include "lag.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "util.h"

static const char *const status_names[] = {"OK", "WARN", "ERR", "STALL", "STOP", "REWIND"};

const char *sk_lag_status_name(enum sk_lag_status s)
{
    return (unsigned)s < sizeof(status_names) / sizeof(*status_names) ? status_names[s] : "ERR";
}

int sk_lag_status_parse(const char *name, enum sk_lag_status *out)
{
    for (size_t i = 0; name && i < sizeof(status_names) / sizeof(*status_names); i++)
        if (strcmp(name, status_names[i]) == 0) {
            *out = (enum sk_lag_status)i;
            return 0;
        }
    return -1;
}

enum sk_lag_status sk_lag_status_group(enum sk_lag_status s)
{
    return s >= SK_LAG_ERR ? SK_LAG_ERR : s;
}

int sk_lag_exit_code(enum sk_lag_status worst)
{
    switch (sk_lag_status_group(worst)) {
    case SK_LAG_OK:
        return 0;
    case SK_LAG_WARN:
        return 1;
    default:
        return 2;
    }
}

/* ---- memory ---------------------------------------------------------------- */

static void group_clear(struct sk_lag_group *g)
{
    free(g->group);
    free(g->state);
    free(g->error);
    for (size_t i = 0; i < g->n_members; i++) {
        struct sk_lag_member *m = &g->members[i];
        free(m->client_id);
        free(m->consumer_id);
        free(m->host);
        free(m->node);
        for (size_t j = 0; j < m->n_assignment; j++)
            free(m->assignment[j]);
        free(m->assignment);
    }
    free(g->members);
    for (size_t i = 0; i < g->n_parts; i++) {
        free(g->parts[i].topic);
        free(g->parts[i].error);
        free(g->parts[i].owner);
    }
    free(g->parts);
}

void sk_lag_report_free(struct sk_lag_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_groups; i++)
        group_clear(&r->groups[i]);
    free(r->groups);
    for (size_t i = 0; i < r->n_sources; i++) {
        free(r->sources[i].name);
        free(r->sources[i].owner);
    }
    free(r->sources);
    free(r->brokers);
    free(r);
}

/* ---- settling a partition from what the reader saw ------------------------- */

void sk_lag_partition_settle(struct sk_lag_partition *p, int64_t read, bool at_end,
                             int64_t first_ts_ms, int64_t now_ms)
{
    int64_t gap = p->end - (p->committed >= 0 ? p->committed : p->low);
    if (gap < 0)
        gap = 0;
    if (read == 0 && at_end) {
        /* Nothing consumable between the committed offset and the end: the gap
         * is transaction markers (or aborted records). Burrow's "lag 1 forever". */
        p->lag = 0;
        p->lag_exact = true;
        p->first_ts_ms = -1;
        p->lag_seconds = 0;
        return;
    }
    if (at_end) {
        p->lag = read;
        p->lag_exact = true;
    } else {
        /* Not counted to the end (over the bound, or the reader ran out of
         * time): end - committed is an upper bound, and says so. */
        p->lag = gap > read ? gap : read;
        p->lag_exact = false;
    }
    p->first_ts_ms = first_ts_ms;
    if (first_ts_ms >= 0) {
        double s = (double)(now_ms - first_ts_ms) / 1000.0;
        p->lag_seconds = s > 0 ? s : 0;
    } else {
        p->lag_seconds = p->lag > 0 ? -1 : 0;
    }
}
