/*
 * lag_output.c: a lag report as JSON (docs/lag.md "JSON") and as the table
 * `skolsync lag` prints.
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

/* ---- JSON -------------------------------------------------------------------- */

static void json_offset(cJSON *o, const char *name, int64_t v)
{
    if (v >= 0)
        cJSON_AddNumberToObject(o, name, (double)v);
    else
        cJSON_AddNullToObject(o, name);
}

static void json_seconds(cJSON *o, const char *name, double v)
{
    if (v >= 0)
        cJSON_AddNumberToObject(o, name, round(v * 1000.0) / 1000.0);
    else
        cJSON_AddNullToObject(o, name);
}

static void json_string_or_null(cJSON *o, const char *name, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, name, v);
    else
        cJSON_AddNullToObject(o, name);
}

static void iso_time(int64_t ms, char *buf, size_t size)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char base[32];
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, size, "%s.%03dZ", base, (int)(ms % 1000));
}

cJSON *sk_lag_report_json(const struct sk_lag_report *r)
{
    cJSON *j = cJSON_CreateObject();
    char when[40];
    iso_time(r->time_ms, when, sizeof(when));
    cJSON_AddStringToObject(j, "time", when);
    cJSON_AddNumberToObject(j, "time_ms", (double)r->time_ms);
    cJSON_AddStringToObject(j, "brokers", r->brokers ? r->brokers : "");
    enum sk_lag_status worst = SK_LAG_OK;
    for (size_t i = 0; i < r->n_groups; i++)
        if (r->groups[i].status > worst)
            worst = r->groups[i].status;
    cJSON_AddStringToObject(j, "status", sk_lag_status_name(worst));
    cJSON *win = cJSON_AddObjectToObject(j, "window");
    cJSON_AddNumberToObject(win, "size", (double)r->window_size);
    cJSON_AddNumberToObject(win, "samples", (double)r->window_samples);
    const struct sk_lag_requests *q = &r->requests;
    cJSON *req = cJSON_AddObjectToObject(j, "requests");
    cJSON_AddNumberToObject(req, "metadata", (double)q->metadata);
    cJSON_AddNumberToObject(req, "list_groups", (double)q->list_groups);
    cJSON_AddNumberToObject(req, "describe_groups", (double)q->describe_groups);
    cJSON_AddNumberToObject(req, "offset_fetch", (double)q->offset_fetch);
    cJSON_AddNumberToObject(req, "list_offsets", (double)q->list_offsets);
    cJSON_AddNumberToObject(req, "read_partitions", (double)q->read_partitions);
    cJSON_AddNumberToObject(req, "read_records", (double)q->read_records);
    cJSON_AddNumberToObject(req, "total",
                            (double)(q->metadata + q->list_groups + q->describe_groups +
                                     q->offset_fetch + q->list_offsets + q->read_partitions));
    cJSON *groups = cJSON_AddArrayToObject(j, "groups");
    for (size_t i = 0; i < r->n_groups; i++) {
        const struct sk_lag_group *g = &r->groups[i];
        cJSON *go = cJSON_CreateObject();
        cJSON_AddItemToArray(groups, go);
        cJSON_AddStringToObject(go, "group", g->group);
        cJSON_AddStringToObject(go, "status", sk_lag_status_name(g->status));
        if (g->state)
            cJSON_AddStringToObject(go, "state", g->state);
        else
            cJSON_AddNullToObject(go, "state");
        cJSON_AddNumberToObject(go, "lag", (double)g->total_lag);
        cJSON_AddBoolToObject(go, "lag_exact", g->total_exact);
        cJSON_AddNumberToObject(go, "max_lag_seconds", round(g->max_lag_seconds * 1000) / 1000);
        if (g->error)
            cJSON_AddStringToObject(go, "error", g->error);
        if (g->members_known) {
            cJSON *ms = cJSON_AddArrayToObject(go, "members");
            for (size_t k = 0; k < g->n_members; k++) {
                const struct sk_lag_member *m = &g->members[k];
                cJSON *mo = cJSON_CreateObject();
                cJSON_AddItemToArray(ms, mo);
                cJSON_AddStringToObject(mo, "client_id", m->client_id ? m->client_id : "");
                cJSON_AddStringToObject(mo, "consumer_id", m->consumer_id ? m->consumer_id : "");
                cJSON_AddStringToObject(mo, "host", m->host ? m->host : "");
                json_string_or_null(mo, "node", m->node);
                cJSON *as = cJSON_AddArrayToObject(mo, "assignment");
                for (size_t a = 0; a < m->n_assignment; a++)
                    cJSON_AddItemToArray(as, cJSON_CreateString(m->assignment[a]));
            }
        } else {
            cJSON_AddNullToObject(go, "members");
        }
        cJSON *ps = cJSON_AddArrayToObject(go, "partitions");
        for (size_t k = 0; k < g->n_parts; k++) {
            const struct sk_lag_partition *p = &g->parts[k];
            cJSON *po = cJSON_CreateObject();
            cJSON_AddItemToArray(ps, po);
            cJSON_AddStringToObject(po, "topic", p->topic);
            cJSON_AddNumberToObject(po, "partition", p->partition);
            json_offset(po, "committed", p->committed);
            json_offset(po, "low", p->low);
            json_offset(po, "end", p->end);
            json_offset(po, "lag", p->lag);
            cJSON_AddBoolToObject(po, "lag_exact", p->lag_exact);
            json_seconds(po, "lag_seconds", p->lag_seconds);
            json_offset(po, "first_unconsumed_ts_ms", p->first_ts_ms);
            cJSON_AddStringToObject(po, "status", sk_lag_status_name(p->status));
            cJSON_AddStringToObject(po, "reason", p->reason ? p->reason : "");
            json_string_or_null(po, "owner", p->owner);
            if (p->error)
                cJSON_AddStringToObject(po, "error", p->error);
        }
    }
    cJSON *sources = cJSON_AddArrayToObject(j, "sources");
    for (size_t i = 0; i < r->n_sources; i++) {
        cJSON *so = cJSON_CreateObject();
        cJSON_AddItemToArray(sources, so);
        cJSON_AddStringToObject(so, "name", r->sources[i].name);
        cJSON_AddNumberToObject(so, "partition", r->sources[i].partition);
        json_string_or_null(so, "owner", r->sources[i].owner);
    }
    return j;
}

enum sk_lag_status sk_lag_json_status(const cJSON *report)
{
    enum sk_lag_status s = SK_LAG_ERR;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(report, "status");
    if (cJSON_IsString(st))
        sk_lag_status_parse(st->valuestring, &s);
    return s;
}

/* ---- the table --------------------------------------------------------------- */

#define NCOLS 10

static void cell_num(char *buf, size_t size, const cJSON *v)
{
    if (cJSON_IsNumber(v))
        snprintf(buf, size, "%.0f", v->valuedouble);
    else
        snprintf(buf, size, "-");
}

static const char *str_or(const cJSON *o, const char *name, const char *def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : def;
}

/* The configuration's sources and the node that runs each ("-": none now). */
static void sources_table(const cJSON *sources, FILE *out)
{
    if (cJSON_GetArraySize(sources) == 0)
        return;
    int name_w = (int)strlen("SOURCE");
    const cJSON *s;
    cJSON_ArrayForEach(s, sources)
    {
        int w = (int)strlen(str_or(s, "name", "?"));
        if (w > name_w)
            name_w = w;
    }
    fprintf(out, "%-*s  PART  OWNER\n", name_w, "SOURCE");
    cJSON_ArrayForEach(s, sources)
    {
        char part[32];
        cell_num(part, sizeof(part), cJSON_GetObjectItemCaseSensitive(s, "partition"));
        fprintf(out, "%-*s  %4s  %s\n", name_w, str_or(s, "name", "?"), part,
                str_or(s, "owner", "-"));
    }
}

void sk_lag_json_table(const cJSON *report, FILE *out)
{
    /* OWNER before REASON: the columns a script counts up to STATUS stay where they were. */
    static const char *const head[NCOLS] = {"GROUP", "TOPIC", "PART",   "COMMITTED", "END",
                                            "LAG",   "LAG_S", "STATUS", "OWNER",     "REASON"};
    static const bool right[NCOLS] = {false, false, true,  true,  true,
                                      true,  true,  false, false, false};
    const cJSON *groups = cJSON_GetObjectItemCaseSensitive(report, "groups");
    size_t rows = 0;
    const cJSON *g, *p;
    cJSON_ArrayForEach(g, groups)
    {
        size_t np = (size_t)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(g, "partitions"));
        rows += np ? np : 1;
    }
    char(*cells)[NCOLS][160] = sk_calloc(rows + 1, sizeof(*cells));
    size_t width[NCOLS];
    for (int c = 0; c < NCOLS; c++) {
        snprintf(cells[0][c], sizeof(cells[0][c]), "%s", head[c]);
        width[c] = strlen(head[c]);
    }
    size_t row = 1;
    cJSON_ArrayForEach(g, groups)
    {
        const char *name = str_or(g, "group", "?");
        const cJSON *parts = cJSON_GetObjectItemCaseSensitive(g, "partitions");
        if (cJSON_GetArraySize(parts) == 0) {
            char(*cl)[160] = cells[row++];
            snprintf(cl[0], 160, "%s", name);
            snprintf(cl[1], 160, "-");
            for (int c = 2; c < 7; c++)
                snprintf(cl[c], 160, "-");
            snprintf(cl[7], 160, "%s", str_or(g, "status", "?"));
            snprintf(cl[8], 160, "-");
            snprintf(cl[9], 160, "%s", str_or(g, "error", "no committed offsets"));
        }
        cJSON_ArrayForEach(p, parts)
        {
            char(*cl)[160] = cells[row++];
            snprintf(cl[0], 160, "%s", name);
            snprintf(cl[1], 160, "%s", str_or(p, "topic", "?"));
            cell_num(cl[2], 160, cJSON_GetObjectItemCaseSensitive(p, "partition"));
            cell_num(cl[3], 160, cJSON_GetObjectItemCaseSensitive(p, "committed"));
            cell_num(cl[4], 160, cJSON_GetObjectItemCaseSensitive(p, "end"));
            char lag[64];
            cell_num(lag, sizeof(lag), cJSON_GetObjectItemCaseSensitive(p, "lag"));
            snprintf(cl[5], 160, "%s%s",
                     cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(p, "lag_exact")) ? "<=" : "",
                     lag);
            const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "lag_seconds");
            if (cJSON_IsNumber(s))
                snprintf(cl[6], 160, "%.1f", s->valuedouble);
            else
                snprintf(cl[6], 160, "?");
            snprintf(cl[7], 160, "%s", str_or(p, "status", "?"));
            /* "-": no member holds it (the group is empty or rebalancing) */
            snprintf(cl[8], 160, "%s", str_or(p, "owner", "-"));
            const char *error = str_or(p, "error", NULL);
            snprintf(cl[9], 160, "%s%s%s", str_or(p, "reason", ""), error ? ": " : "",
                     error ? error : "");
        }
    }
    for (size_t r = 1; r < row; r++)
        for (int c = 0; c < NCOLS; c++)
            if (strlen(cells[r][c]) > width[c])
                width[c] = strlen(cells[r][c]);
    for (size_t r = 0; r < row; r++) {
        for (int c = 0; c < NCOLS; c++) {
            const char *sep = c + 1 < NCOLS ? "  " : "\n";
            if (c + 1 == NCOLS)
                fprintf(out, "%s%s", cells[r][c], sep);
            else if (right[c])
                fprintf(out, "%*s%s", (int)width[c], cells[r][c], sep);
            else
                fprintf(out, "%-*s%s", (int)width[c], cells[r][c], sep);
        }
    }
    free(cells);
    /* One line per group: state, members, totals. */
    cJSON_ArrayForEach(g, groups)
    {
        const cJSON *ms = cJSON_GetObjectItemCaseSensitive(g, "members");
        char members[512] = "members unknown";
        if (cJSON_IsArray(ms)) {
            size_t used =
                (size_t)snprintf(members, sizeof(members), "%d member(s)", cJSON_GetArraySize(ms));
            const cJSON *m;
            const char *lead = ": ";
            cJSON_ArrayForEach(m, ms)
            {
                if (used >= sizeof(members) - 1)
                    break;
                used += (size_t)snprintf(members + used, sizeof(members) - used, "%s%s@%s", lead,
                                         str_or(m, "client_id", "?"), str_or(m, "host", "?"));
                lead = ", ";
            }
        }
        const cJSON *lag = cJSON_GetObjectItemCaseSensitive(g, "lag");
        const cJSON *secs = cJSON_GetObjectItemCaseSensitive(g, "max_lag_seconds");
        fprintf(out, "%s: %s, state %s, %s, lag %s%.0f, max %.1f s\n", str_or(g, "group", "?"),
                str_or(g, "status", "?"), str_or(g, "state", "unknown"), members,
                cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(g, "lag_exact")) ? "<=" : "",
                cJSON_IsNumber(lag) ? lag->valuedouble : 0,
                cJSON_IsNumber(secs) ? secs->valuedouble : 0);
    }
    if (cJSON_GetArraySize(groups) == 0)
        fprintf(out, "(no consumer groups)\n");
    sources_table(cJSON_GetObjectItemCaseSensitive(report, "sources"), out);
}
