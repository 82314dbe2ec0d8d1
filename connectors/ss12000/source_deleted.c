/*
 * source_deleted.c: the ss12000-source's deletedEntities step
 * (docs/ss12000-notes.md §3.2): the ids a server says were deleted since the
 * last run's T0, as deletion candidates of this run.
 *
 * Must never: publish a deletion itself (the run's end does, through the
 * delete guard), or skip a page it could not read.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "connector.h"
#include "http_client.h"
#include "log.h"
#include "model.h"
#include "source.h"
#include "source_internal.h"
#include "util.h"

static bool type_enabled_name(const struct ss_source *src, const struct sk_entity *e)
{
    int i = sk_entity_index(e);
    return i >= 0 && src->types[i].enabled;
}

static char *deleted_url(struct ss_source *src, const struct cstate *st)
{
    int64_t limit = src->conf->page_size;
    if (st->page_token) {
        char *tok = sk_http_escape(st->page_token);
        char *url =
            sk_asprintf("%s/deletedEntities?pageToken=%s&limit=%" PRId64, src->base, tok, limit);
        free(tok);
        return url;
    }
    char ts[TEXT_MAX];
    /* T0 is a local time: the server gets it in UTC, with its offset. */
    ss_format_time(st->deleted_t0_us - src->conf->overlap_ms * 1000, 0, ts);
    char *esc = sk_http_escape(ts);
    size_t cap = 256 + strlen(src->base) + SK_ENTITY_COUNT * 40;
    char *url = sk_malloc(cap);
    int n = snprintf(url, cap, "%s/deletedEntities?after=%s", src->base, esc);
    free(esc);
    bool comma = strcmp(src->conf->deleted_entities_style, "comma") == 0;
    bool first = true;
    for (int i = 0; i < SK_ENTITY_COUNT; i++) {
        if (!src->types[i].enabled)
            continue;
        if (comma)
            n += snprintf(url + n, cap - (size_t)n, "%s%s", first ? "&entities=" : ",",
                          src->types[i].e->name);
        else
            n += snprintf(url + n, cap - (size_t)n, "&entities=%s", src->types[i].e->name);
        first = false;
    }
    snprintf(url + n, cap - (size_t)n, "&limit=%" PRId64, limit);
    return url;
}

/* One id from /deletedEntities: a deletion candidate of this run. */
static void take_deleted(struct ss_source *src, const struct sk_entity *e, const cJSON *idj,
                         const char *url, struct sk_batch *out)
{
    char id[37];
    if (!cJSON_IsString(idj) || sk_uuid_normalize(idj->valuestring, id)) {
        struct sk_error err;
        sk_error_set(&err, SK_ERR_PERMANENT, "deletedEntities: %s id is not a UUID", e->name);
        char *raw = sk_json_print(idj);
        sk_batch_add_bad(out, e, NULL, (uint8_t *)raw, raw ? strlen(raw) : 0, url, &err);
        return;
    }
    if (!type_enabled_name(src, e))
        return;
    ss_dels_add(&src->run_dels, sk_entity_index(e), id);
}

/*
 * The deletedEntities answer was an error (any status but a first page's
 * 404, or a page that is not one): it fails on its own as a list type does
 * (ss_part_failed). The run ends without it: its T0 stays (run_deletes off,
 * source_guard.c), so the next run that reads it asks from the same time
 * and no deletion is lost; the run's changes are stored meanwhile.
 */
static int deleted_failed(struct ss_source *src, struct cstate *st, long status,
                          struct sk_error *err)
{
    if (ss_part_failed(src, -1, status, err))
        return -1;
    st->run_deletes = false;
    ss_chain_reset(st);
    ss_advance(src, st);
    return 0;
}

/* One request of the deletedEntities step (docs/ss12000-notes.md §3.2). */
int ss_deleted_step(struct ss_source *src, struct cstate *st, struct sk_batch *out,
                    struct sk_error *err)
{
    if (!st->run_deletes || st->deleted_missing || !st->deleted_t0_us) {
        /* First run: the full listing is the state, deletions start from its T0. */
        ss_advance(src, st);
        return 0;
    }
    if (st->page_token && src->del_chain_run != st->run_t0) {
        /* Resumed mid-chain without the earlier pages' ids: read it all again. */
        ss_chain_reset(st);
    }
    if (!st->page_token)
        src->del_chain_run = st->run_t0;
    char *url = deleted_url(src, st);
    struct ss_resp r;
    int rc = ss_chain_get(src, st, url, "reading deletedEntities again", &r, err);
    if (rc <= 0) {
        free(url);
        return rc;
    }
    rc = 0;
    if (!st->page_token && r.status == 404) {
        if (!src->warned_deleted_missing)
            sk_warn(src->component,
                    "%s/deletedEntities: HTTP 404: the server has no "
                    "deletedEntities; deletions come from the full reconciliation only "
                    "(every full_sync_interval)",
                    src->base);
        src->warned_deleted_missing = true;
        st->deleted_missing = true;
        ss_advance(src, st);
        goto out;
    }
    char chain[64];
    snprintf(chain, sizeof(chain), "deleted %" PRId64, st->run_t0);
    const cJSON *data;
    const char *next;
    cJSON *doc =
        ss_chain_page(src, &r, url, chain, st->page_token ? 1 : 0, false, &data, &next, err);
    if (!doc) {
        rc = err->cls == SK_ERR_RETRIABLE ? deleted_failed(src, st, r.status, err) : -1;
        goto out;
    }
    if (cJSON_IsObject(data)) {
        /* {"persons": [...], "activitites"|"activities": [...]} (docs/ss12000-notes.md §6.1). */
        const cJSON *bucket;
        cJSON_ArrayForEach(bucket, data)
        {
            const struct sk_entity *e = sk_entity_by_deleted_key(bucket->string);
            if (!e)
                e = sk_entity_by_collection(bucket->string);
            if (!e || !cJSON_IsArray(bucket)) {
                sk_debug(src->component, "deletedEntities: bucket %s ignored", bucket->string);
                continue;
            }
            const cJSON *idj;
            cJSON_ArrayForEach(idj, bucket) take_deleted(src, e, idj, url, out);
        }
    } else if (cJSON_IsArray(data)) {
        /* A non-conformant flat list [{entityType, id}] seen in demo servers (docs/ss12000-notes.md
         * §3.2). */
        const cJSON *o;
        cJSON_ArrayForEach(o, data)
        {
            const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "entityType");
            const struct sk_entity *e = NULL;
            if (cJSON_IsString(ty)) {
                e = sk_entity_by_name(ty->valuestring);
                if (!e)
                    e = sk_entity_by_deleted_key(ty->valuestring);
                if (!e)
                    e = sk_entity_by_collection(ty->valuestring);
            }
            if (e)
                take_deleted(src, e, cJSON_GetObjectItemCaseSensitive(o, "id"), url, out);
        }
    } else {
        /* No data is no page: a 200 without it (IST's outage answer
         * {"code": "source_unavailable", "message": ...}) is not "no
         * deletions", and T0 must not move past them. */
        char why[REASON_MAX];
        if (data) {
            sk_error_set(err, SK_ERR_RETRIABLE, "GET %s: data is neither an object nor a list",
                         url);
        } else {
            ss_server_reason(&r, why);
            sk_error_set(err, SK_ERR_RETRIABLE, "GET %s: the page has no data: %s", url, why);
        }
        rc = deleted_failed(src, st, r.status, err);
        goto out;
    }
    ss_part_ok(src, -1, next == NULL);
    free(st->page_token);
    st->page_token = next ? sk_strdup(next) : NULL;
    if (!next)
        ss_advance(src, st);
out:
    ss_resp_free(&r);
    free(url);
    return rc;
}
