/*
 * source.c: the ss12000-source connector. Reads a student-record system
 * through its SS 12000 2.1 REST API and hands every change to the core.
 *
 * The algorithm (docs/ss12000-notes.md §3.5, docs/ss12000-source.md):
 *   - a run covers the configured entity types in dependency order; per type
 *     a FULL listing (first time, then every full_sync_interval, which also
 *     reconciles deletes against the ids live in Kafka) or a DELTA
 *     (meta.modified.after = watermark - overlap, then meta.created.after),
 *     each a pageToken chain; then /deletedEntities?after = T0 - overlap;
 *   - a watermark moves only when its whole chain was read and published;
 *     intermediate cursors keep the old watermark and the token to resume
 *     with (410/400 on a token restarts the query from the watermark);
 *   - entities are deduplicated by (id, meta.modified) against a map that
 *     is updated only once the batch that carried them is acknowledged
 *     (the driver polls again with exactly the cursor we handed out);
 *   - deletions of a run (deletedEntities and reconciliation) are published
 *     at the run's end, in one batch, unless the delete guard holds them.
 *
 * Owns: the sync state machine and the cursor (skolsync.v1.Ss12000Cursor).
 * Must never: move a watermark past data not yet published, send a filter
 * together with a pageToken, send a timestamp without its offset, skip a
 * page it could not read, or know anything about Kafka.
 */
#include <inttypes.h>
#include <math.h>
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
#include "ss12000_source.pb-c.h"
#include "util.h"

static const char *const step_names[] = {"none", "full listing", "modified since", "created since",
                                         "deletedEntities"};

/* ---- small helpers ------------------------------------------------------- */

/* Minutes east of UTC of an RFC 3339 text ("...+02:00", "...Z"); 0 if unknown. */
static int offset_minutes(const char *text)
{
    size_t n = strlen(text);
    if (n >= 6 && (text[n - 6] == '+' || text[n - 6] == '-') && text[n - 3] == ':') {
        int h = (text[n - 5] - '0') * 10 + (text[n - 4] - '0');
        int m = (text[n - 2] - '0') * 10 + (text[n - 1] - '0');
        int off = h * 60 + m;
        if (h >= 0 && h < 24 && m >= 0 && m < 60)
            return text[n - 6] == '-' ? -off : off;
    }
    return 0;
}

/*
 * RFC 3339 with an explicit numeric offset (never without one, docs/ss12000-notes.md §4:
 * servers reject an offset-less time), µs precision, in the offset the
 * server itself writes (so a server that compares texts still works).
 */
static void format_time(int64_t us, int off_min, char out[TEXT_MAX])
{
    int64_t local = us + (int64_t)off_min * 60000000LL;
    int64_t secs = local >= 0 ? local / 1000000 : -((-local + 999999) / 1000000);
    int64_t frac = local - secs * 1000000;
    time_t t = (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    int a = off_min < 0 ? -off_min : off_min;
    snprintf(out, TEXT_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%06d%c%02d:%02d", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac,
             off_min < 0 ? '-' : '+', a / 60, a % 60);
}

static void dels_add(struct dels *d, int type, const char *id)
{
    int64_t v;
    if (ss_idmap_get(&d->index, id, &v) && v)
        return;
    ss_idmap_put(&d->index, id, 1);
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 64;
        d->v = sk_realloc(d->v, d->cap * sizeof(*d->v));
    }
    d->v[d->n].type = type;
    memcpy(d->v[d->n].id, id, 37);
    d->n++;
}

static bool dels_live(const struct dels *d, const struct del *x)
{
    int64_t v;
    return ss_idmap_get(&d->index, x->id, &v) && v;
}

static void dels_clear(struct dels *d)
{
    d->n = 0;
    ss_idmap_clear(&d->index);
}

static void dels_free(struct dels *d)
{
    free(d->v);
    ss_idmap_free(&d->index);
    memset(d, 0, sizeof(*d));
}

static void pend_add(struct ss_source *src, int type, const char *id, int64_t val)
{
    if (src->n_pend == src->cap_pend) {
        src->cap_pend = src->cap_pend ? src->cap_pend * 2 : 256;
        src->pend = sk_realloc(src->pend, src->cap_pend * sizeof(*src->pend));
    }
    struct pending *p = &src->pend[src->n_pend++];
    p->type = type;
    memcpy(p->id, id, 37);
    p->val = val;
    ss_idmap_put(&src->pend_index, id, val);
}

static void pend_clear(struct ss_source *src)
{
    src->n_pend = 0;
    ss_idmap_clear(&src->pend_index);
    src->pend_release = false;
}

static void update_held_gauge(struct ss_source *src)
{
    size_t n = 0;
    for (size_t i = 0; i < src->held.n; i++)
        if (dels_live(&src->held, &src->held.v[i]))
            n++;
    src->n_held_live = n;
    sk_source_set_held(src->self, n);
}

/*
 * The driver polls with the cursor of the last stored batch. If that is the
 * cursor we handed out last, its batch is stored: the dedupe map learns what
 * it carried. Otherwise delivery failed and the poll repeats from an older
 * cursor: forget it (the records will be read and published again).
 */
static bool settle_last_batch(struct ss_source *src, const struct sk_cursor *cursor)
{
    bool stored = src->last_cursor && cursor && cursor->data &&
                  cursor->len == src->last_cursor_len &&
                  memcmp(cursor->data, src->last_cursor, cursor->len) == 0;
    if (stored) {
        bool held_changed = false;
        for (size_t i = 0; i < src->n_pend; i++) {
            const struct pending *p = &src->pend[i];
            ss_idmap_put(&src->types[p->type].seen, p->id, p->val);
            int64_t h;
            if (p->val != DELETED_MARK && ss_idmap_get(&src->held.index, p->id, &h) && h) {
                /* Live again at the source: no longer a deletion to hold. */
                ss_idmap_put(&src->held.index, p->id, 0);
                held_changed = true;
            }
        }
        if (src->pend_release) {
            dels_clear(&src->held);
            src->releasing = false;
            held_changed = true;
            sk_info(src->component, "released deletions published");
        }
        if (held_changed)
            update_held_gauge(src);
    }
    pend_clear(src);
    free(src->last_cursor);
    src->last_cursor = NULL;
    src->last_cursor_len = 0;
    return stored;
}

/*
 * The driver's word that the batch carrying cursor is in Kafka (the same
 * settlement the next poll would make). Once the batch that ended a run is
 * stored, no poll goes back into that run: its sets are given back now, not
 * kept until the next run (they were most of an idle source's memory,
 * bench/analysis.md §4).
 */
static void ss_stored(struct sk_source *self, const struct sk_cursor *cursor)
{
    struct ss_source *src = self->priv;
    bool ends_run = src->last_ends_run;
    if (!settle_last_batch(src, cursor) || !ends_run)
        return;
    ss_idmap_free(&src->run_seen);
    for (int i = 0; i < SK_ENTITY_COUNT; i++)
        ss_idmap_free(&src->types[i].listed);
    ss_idmap_free(&src->pend_index);
    dels_free(&src->run_dels);
}

/* ---- the run ---------------------------------------------------------------- */

static bool full_due(const struct ss_source *src, const struct cstate *st, int i, int64_t now)
{
    const struct tstate *t = &st->t[i];
    return !t->full_done || now - t->last_full_us >= src->conf->full_sync_interval_ms * 1000;
}

static void chain_reset(struct cstate *st)
{
    free(st->page_token);
    st->page_token = NULL;
    st->has_chain_mod = st->has_chain_cre = false;
    st->chain_mod_text[0] = st->chain_cre_text[0] = '\0';
}

/* Positions st at type index k of the run (or the deletes, or the end). */
static void enter_type(struct ss_source *src, struct cstate *st, int k)
{
    chain_reset(st);
    st->type_index = k;
    if (k < st->n_run_types) {
        int i = st->run_types[k];
        st->step = full_due(src, st, i, st->run_t0) ? STEP_FULL : STEP_MODIFIED;
    } else {
        st->step = STEP_DELETED;
    }
}

static void start_run(struct ss_source *src, struct cstate *st)
{
    int64_t now = sk_now_us();
    bool dirty[SK_ENTITY_COUNT] = {0}, del_dirty = false;
    bool hooked = src->hook && ss_hook_take_dirty(src->hook, dirty, &del_dirty);
    /* Callbacks more often than poll_interval must not starve the types the
     * SIS does not notify about: an overdue regular run covers every type. */
    if (hooked && now - src->last_regular_us >= src->poll_interval_us)
        hooked = false;
    if (!hooked)
        src->last_regular_us = now;
    st->run_active = true;
    st->run_t0 = now;
    st->n_run_types = 0;
    st->done = 0;
    bool any_full = false;
    for (int i = 0; i < SK_ENTITY_COUNT; i++) {
        if (!src->types[i].enabled)
            continue;
        bool due = full_due(src, st, i, now);
        if (st->t[i].missing) {
            if (!due)
                continue;
            st->t[i].missing = false; /* look again at every full sync */
        }
        /* A webhook-triggered run reads the named types only. */
        if (hooked && !dirty[i])
            continue;
        st->run_types[st->n_run_types++] = i;
        any_full |= due;
    }
    if (any_full)
        st->deleted_missing = false; /* look for /deletedEntities again */
    st->run_deletes = hooked ? del_dirty : true;
    /* The run's accumulators start empty. */
    src->acc_run = now;
    ss_idmap_clear(&src->run_seen);
    dels_clear(&src->run_dels);
    src->del_chain_run = 0;
    enter_type(src, st, 0);
    sk_debug(src->component, "run started: %d type(s)%s%s", st->n_run_types,
             st->run_deletes ? " and deletedEntities" : "", hooked ? " (webhook)" : "");
}

/* The next step after a completed chain. */
static void advance(struct ss_source *src, struct cstate *st)
{
    if (st->step == STEP_MODIFIED && src->conf->created_query) {
        int i = st->run_types[st->type_index];
        if (st->t[i].has_cre && !src->types[i].no_created) {
            chain_reset(st);
            st->step = STEP_CREATED;
            return;
        }
    }
    if (st->step == STEP_DELETED) {
        st->step = STEP_NONE;
        return;
    }
    enter_type(src, st, st->type_index + 1);
}

/* Takes max of a timestamp text into (text, us, has). */
static void take_max(const char *text, char dst[TEXT_MAX], int64_t *dst_us, bool *has)
{
    int64_t us;
    if (!text || sk_time_parse_us(text, &us))
        return;
    if (!*has || us > *dst_us) {
        *dst_us = us;
        *has = true;
        ss_text_copy(dst, text);
    }
}

/* One entity of a list page: a record, nothing (unchanged), or a dead letter. */
static void take_item(struct ss_source *src, struct cstate *st, int ti, enum step step,
                      const cJSON *item, const char *url, struct sk_batch *out, int64_t now)
{
    struct ss_type *t = &src->types[ti];
    const struct sk_entity *e = t->e;
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(item, "meta");
    const cJSON *mod = cJSON_GetObjectItemCaseSensitive(meta, "modified");
    const cJSON *cre = cJSON_GetObjectItemCaseSensitive(meta, "created");
    const char *mod_text = cJSON_IsString(mod) ? mod->valuestring : NULL;
    const char *cre_text = cJSON_IsString(cre) ? cre->valuestring : NULL;
    take_max(mod_text, st->chain_mod_text, &st->chain_mod_us, &st->has_chain_mod);
    take_max(cre_text, st->chain_cre_text, &st->chain_cre_us, &st->has_chain_cre);
    int64_t mod_us = NO_MODIFIED;
    if (mod_text && sk_time_parse_us(mod_text, &mod_us))
        mod_us = NO_MODIFIED;

    const cJSON *idj = cJSON_GetObjectItemCaseSensitive(item, "id");
    char id[37] = "";
    bool id_ok = cJSON_IsString(idj) && sk_uuid_normalize(idj->valuestring, id) == 0;
    if (id_ok) {
        /* Read in this run: the T0 rule keeps it from this run's deletions. */
        ss_idmap_put(&src->run_seen, id, 1);
        if (step == STEP_FULL)
            ss_idmap_put(&t->listed, id, 1);
        /* Unchanged since we last stored it: not again (sinks are idempotent
         * anyway, this only saves work). Entities without meta.modified are
         * always published: there is nothing to compare. */
        int64_t prev;
        if (mod_us != NO_MODIFIED &&
            ((ss_idmap_get(&src->pend_index, id, &prev) && prev == mod_us) ||
             (ss_idmap_get(&t->seen, id, &prev) && prev == mod_us)))
            return;
    }
    struct sk_error err = {0};
    const char *field = cJSON_IsObject(item) ? ss_missing_required(e, item) : NULL;
    ProtobufCMessage *msg = NULL;
    char key[37];
    if (field)
        sk_error_set(&err, SK_ERR_PERMANENT, "%s %s: required field %s missing", e->name,
                     id_ok ? id : "(no id)", field);
    else
        msg = sk_codec_from_json(e, item, key, &err);
    if (!msg) {
        char *raw = sk_json_print(item);
        sk_batch_add_bad(out, e, id_ok ? id : NULL, (uint8_t *)raw, raw ? strlen(raw) : 0, url,
                         &err);
        /* Not deduplicated: a page damaged on the way may hold the same
         * (id, meta.modified) intact the next time it is read. */
        return;
    }
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *value = sk_malloc(len ? len : 1);
    protobuf_c_message_pack(msg, value);
    protobuf_c_message_free_unpacked(msg, NULL);
    sk_batch_add(out, e, key, value, len, now);
    pend_add(src, ti, key, mod_us);
    st->done++;
}

/* The list request of the current step (filters only without a token, docs/ss12000-notes.md §3.1).
 */
static char *list_url(struct ss_source *src, const struct cstate *st, int i)
{
    const struct sk_entity *e = src->types[i].e;
    int64_t limit = src->conf->page_size;
    if (st->page_token) {
        char *tok = sk_http_escape(st->page_token);
        char *url = sk_asprintf("%s%s?pageToken=%s&limit=%" PRId64, src->base, e->path, tok, limit);
        free(tok);
        return url;
    }
    const struct tstate *t = &st->t[i];
    const char *param = NULL;
    int64_t us = 0;
    const char *text = NULL;
    if (st->step == STEP_MODIFIED && t->has_mod) {
        param = "meta.modified.after";
        us = t->mod_us;
        text = t->mod_text;
    } else if (st->step == STEP_CREATED && t->has_cre) {
        param = "meta.created.after";
        us = t->cre_us;
        text = t->cre_text;
    }
    if (!param)
        return sk_asprintf("%s%s?limit=%" PRId64, src->base, e->path, limit);
    char ts[TEXT_MAX];
    format_time(us - src->conf->overlap_ms * 1000, offset_minutes(text), ts);
    char *esc = sk_http_escape(ts); /* '+' -> %2B, ':' -> %3A */
    char *url = sk_asprintf("%s%s?%s=%s&limit=%" PRId64, src->base, e->path, param, esc, limit);
    free(esc);
    return url;
}

static void count_live(void *ctx, const char *id)
{
    (void)id;
    (*(int64_t *)ctx)++;
}

struct recon {
    struct ss_source *src;
    int type;
    int64_t live;
    size_t absent;
};

static void recon_id(void *ctx, const char *id)
{
    struct recon *r = ctx;
    r->live++;
    if (!ss_idmap_has(&r->src->types[r->type].listed, id)) {
        dels_add(&r->src->run_dels, r->type, id);
        r->absent++;
    }
}

/* Full reconciliation of type i: ids live in Kafka but not listed by the server. */
static int reconcile(struct ss_source *src, int i, struct sk_error *err)
{
    struct ss_type *t = &src->types[i];
    struct recon r = {.src = src, .type = i};
    if (sk_source_live_ids(src->self, t->e, recon_id, &r, err))
        return -1;
    t->live_count = r.live;
    t->live_run = src->acc_run;
    sk_info(src->component, "reconciliation of %s: %zu listed, %" PRId64 " live in Kafka, %zu gone",
            t->e->collection, t->listed.n, r.live, r.absent);
    return 0;
}

/* The end of a chain of the current type's list step. */
static int list_chain_done(struct ss_source *src, struct cstate *st, int i, struct sk_error *err)
{
    struct tstate *t = &st->t[i];
    if (st->has_chain_mod && (!t->has_mod || st->chain_mod_us > t->mod_us)) {
        t->has_mod = true;
        t->mod_us = st->chain_mod_us;
        memcpy(t->mod_text, st->chain_mod_text, TEXT_MAX);
    }
    if (st->has_chain_cre && (!t->has_cre || st->chain_cre_us > t->cre_us)) {
        t->has_cre = true;
        t->cre_us = st->chain_cre_us;
        memcpy(t->cre_text, st->chain_cre_text, TEXT_MAX);
    }
    if (st->step == STEP_FULL) {
        bool first = !t->full_done;
        if (src->types[i].listed_run == st->run_t0 && !first) {
            if (reconcile(src, i, err))
                return -1;
        } else if (!first) {
            sk_info(
                src->component,
                "%s: full listing resumed after a restart; reconciliation waits for the next one",
                src->types[i].e->collection);
        }
        t->full_done = true;
        t->last_full_us = st->run_t0;
    }
    advance(src, st);
    return 0;
}

/* A list endpoint that does not exist or is not ours to read: skip the type. */
static void skip_type(struct ss_source *src, struct cstate *st, int i, long status)
{
    sk_warn(src->component, "GET %s%s: HTTP %ld: skipping %s%s", src->base, src->types[i].e->path,
            status, src->types[i].e->collection,
            status == 404 ? " (the server does not serve it; looked at again at the next full sync)"
                          : " (not permitted)");
    st->t[i].missing = true;
    enter_type(src, st, st->type_index + 1);
}

/* One request of a list step (full or delta). */
static int list_step(struct ss_source *src, struct cstate *st, struct sk_batch *out,
                     struct sk_error *err)
{
    int i = st->run_types[st->type_index];
    struct ss_type *t = &src->types[i];
    if (st->step == STEP_CREATED && (!st->t[i].has_cre || t->no_created)) {
        advance(src, st);
        return 0;
    }
    bool chain_start = st->page_token == NULL;
    if (st->step == STEP_FULL && chain_start) {
        ss_idmap_clear(&t->listed);
        t->listed_run = st->run_t0;
    } else if (st->step == STEP_FULL && t->listed_run != st->run_t0) {
        t->listed_run = 0; /* resumed mid-listing: the listing is not complete here */
    }
    char *url = list_url(src, st, i);
    struct ss_resp r;
    if (ss_http_request(src->http, "GET", url, NULL, &r, err)) {
        free(url);
        return -1;
    }
    int rc = 0;
    if (!chain_start && (r.status == 410 || r.status == 400)) {
        /* An expired (410) or refused (400) pageToken: the query starts over
         * from the committed watermark; what was read is read again (dedupe). */
        sk_warn(src->component,
                "GET %s: HTTP %ld on a page token; restarting the %s query from "
                "its watermark",
                url, r.status, t->e->collection);
        chain_reset(st);
        goto out;
    }
    if (chain_start && (r.status == 404 || r.status == 403)) {
        skip_type(src, st, i, r.status);
        goto out;
    }
    if (chain_start && r.status == 400 && st->step == STEP_CREATED) {
        sk_warn(src->component,
                "GET %s: HTTP 400: the server refuses meta.created.after; "
                "%s deltas use meta.modified.after only",
                url, t->e->collection);
        t->no_created = true;
        advance(src, st);
        goto out;
    }
    const cJSON *data;
    const char *next;
    cJSON *doc = ss_parse_page(&r, url, &data, &next, err);
    if (!doc) {
        rc = -1;
        goto out;
    }
    if (!cJSON_IsArray(data)) {
        rc = sk_error_set(err, SK_ERR_RETRIABLE, "GET %s: the page has no data list", url);
        cJSON_Delete(doc);
        goto out;
    }
    char chain[64];
    snprintf(chain, sizeof(chain), "%s %s %" PRId64, src->types[i].e->collection,
             step_names[st->step], st->run_t0);
    if (ss_paging_guard_page(&src->guard, chain, chain_start ? 0 : 1,
                             (size_t)cJSON_GetArraySize(data), next, url, err)) {
        rc = -1;
        cJSON_Delete(doc);
        goto out;
    }
    int64_t now = sk_now_us();
    struct ss_page_check pc = ss_page_check(&r);
    const cJSON *item;
    size_t k = 0;
    cJSON_ArrayForEach(item, data)
    {
        if (!ss_page_item_bad(&pc, k++, src->types[i].e, url, out))
            take_item(src, st, i, st->step, item, url, out, now);
    }
    free(pc.spans);
    free(st->page_token);
    st->page_token = next ? sk_strdup(next) : NULL;
    cJSON_Delete(doc);
    if (!next)
        rc = list_chain_done(src, st, i, err);
out:
    ss_resp_free(&r);
    free(url);
    return rc;
}

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
    format_time(st->deleted_t0_us - src->conf->overlap_ms * 1000, 0, ts);
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
    dels_add(&src->run_dels, sk_entity_index(e), id);
}

/* One request of the deletedEntities step (docs/ss12000-notes.md §3.2). */
static int deleted_step(struct ss_source *src, struct cstate *st, struct sk_batch *out,
                        struct sk_error *err)
{
    if (!st->run_deletes || st->deleted_missing || !st->deleted_t0_us) {
        /* First run: the full listing is the state, deletions start from its T0. */
        advance(src, st);
        return 0;
    }
    if (st->page_token && src->del_chain_run != st->run_t0) {
        /* Resumed mid-chain without the earlier pages' ids: read it all again. */
        chain_reset(st);
    }
    if (!st->page_token)
        src->del_chain_run = st->run_t0;
    char *url = deleted_url(src, st);
    struct ss_resp r;
    if (ss_http_request(src->http, "GET", url, NULL, &r, err)) {
        free(url);
        return -1;
    }
    int rc = 0;
    if (st->page_token && (r.status == 410 || r.status == 400)) {
        sk_warn(src->component, "GET %s: HTTP %ld on a page token; reading deletedEntities again",
                url, r.status);
        chain_reset(st);
        goto out;
    }
    if (!st->page_token && r.status == 404) {
        if (!src->warned_deleted_missing)
            sk_warn(src->component,
                    "%s/deletedEntities: HTTP 404: the server has no "
                    "deletedEntities; deletions come from the full reconciliation only "
                    "(every full_sync_interval)",
                    src->base);
        src->warned_deleted_missing = true;
        st->deleted_missing = true;
        advance(src, st);
        goto out;
    }
    const cJSON *data;
    const char *next;
    cJSON *doc = ss_parse_page(&r, url, &data, &next, err);
    if (!doc) {
        rc = -1;
        goto out;
    }
    char chain[64];
    snprintf(chain, sizeof(chain), "deleted %" PRId64, st->run_t0);
    size_t n_ids = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, data) n_ids +=
        cJSON_IsArray(part) ? (size_t)cJSON_GetArraySize(part) : 1;
    if (ss_paging_guard_page(&src->guard, chain, st->page_token ? 1 : 0, n_ids, next, url, err)) {
        rc = -1;
        cJSON_Delete(doc);
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
    } else if (data && !cJSON_IsNull(data)) {
        rc = sk_error_set(err, SK_ERR_RETRIABLE, "GET %s: data is neither an object nor a list",
                          url);
        cJSON_Delete(doc);
        goto out;
    }
    free(st->page_token);
    st->page_token = next ? sk_strdup(next) : NULL;
    cJSON_Delete(doc);
    if (!next)
        advance(src, st);
out:
    ss_resp_free(&r);
    free(url);
    return rc;
}

/* Live ids of type i, for the delete guard's fraction. -1 on error. */
static int live_count(struct ss_source *src, int i, int64_t *out, struct sk_error *err)
{
    struct ss_type *t = &src->types[i];
    if (t->live_run == src->acc_run) {
        *out = t->live_count;
        return 0;
    }
    int64_t n = 0;
    if (sk_source_live_ids(src->self, t->e, count_live, &n, err))
        return -1;
    t->live_count = n;
    t->live_run = src->acc_run;
    *out = n;
    return 0;
}

/*
 * The run's end: its deletions (minus ids read again in this run, the T0
 * rule) are published now, or held by the delete guard.
 */
static int finish_run(struct ss_source *src, struct cstate *st, struct sk_batch *out,
                      struct sk_error *err)
{
    size_t per_type[SK_ENTITY_COUNT] = {0}, total = 0;
    struct dels *d = &src->run_dels;
    for (size_t k = 0; k < d->n; k++) {
        struct del *x = &d->v[k];
        int64_t prev;
        if (ss_idmap_has(&src->run_seen, x->id) ||
            (ss_idmap_get(&src->types[x->type].seen, x->id, &prev) && prev == DELETED_MARK) ||
            (ss_idmap_get(&src->pend_index, x->id, &prev) && prev == DELETED_MARK)) {
            ss_idmap_put(&d->index, x->id, 0); /* re-seen, or its tombstone is stored already */
            continue;
        }
        per_type[x->type]++;
        total++;
    }
    bool hold = src->held.n > 0 && src->n_held_live > 0;
    char why[256] = "";
    if (total && (int64_t)total > src->conf->delete_guard.max_count) {
        hold = true;
        snprintf(why, sizeof(why), "%zu deletions > delete_guard.max_count %" PRId64, total,
                 src->conf->delete_guard.max_count);
    }
    for (int i = 0; i < SK_ENTITY_COUNT && !hold && total; i++) {
        if (!per_type[i] || (int64_t)per_type[i] <= src->conf->delete_guard.min_count)
            continue;
        int64_t live;
        if (live_count(src, i, &live, err))
            return -1;
        if ((double)per_type[i] > src->max_fraction * (double)live) {
            hold = true;
            snprintf(why, sizeof(why), "%zu of %" PRId64 " live %s > delete_guard.max_fraction %s",
                     per_type[i], live, src->types[i].e->collection,
                     src->conf->delete_guard.max_fraction);
        }
    }
    int64_t now = sk_now_us();
    if (total && hold) {
        for (size_t k = 0; k < d->n; k++)
            if (dels_live(d, &d->v[k]))
                dels_add(&src->held, d->v[k].type, d->v[k].id);
        update_held_gauge(src);
        sk_warn(src->component,
                "delete guard: holding %zu deletion(s) (%s); release with "
                "`skolsync release %s` or POST /api/v1/connectors/%s/release",
                src->n_held_live, why[0] ? why : "deletions already held", src->self->name,
                src->self->name);
    } else if (total) {
        for (size_t k = 0; k < d->n; k++) {
            struct del *x = &d->v[k];
            if (!dels_live(d, x))
                continue;
            sk_batch_add(out, src->types[x->type].e, x->id, NULL, 0, now);
            pend_add(src, x->type, x->id, DELETED_MARK);
        }
        sk_info(src->component, "%zu deletion(s) published", total);
    }
    if (st->run_deletes && !st->deleted_missing)
        st->deleted_t0_us = st->run_t0; /* persisted with the run's last batch only */
    st->run_active = false;
    chain_reset(st);
    return 0;
}

/* One step of the run: one request, or the run's end. */
static int run_step(struct ss_source *src, struct cstate *st, struct sk_batch *out,
                    struct sk_error *err)
{
    if (st->step == STEP_NONE || (st->type_index >= st->n_run_types && st->step != STEP_DELETED))
        return finish_run(src, st, out, err);
    if (st->step == STEP_DELETED)
        return deleted_step(src, st, out, err);
    return list_step(src, st, out, err);
}

/* Publishes the held deletions an operator released. */
static void publish_released(struct ss_source *src, struct sk_batch *out)
{
    int64_t now = sk_now_us();
    size_t n = 0;
    for (size_t k = 0; k < src->held.n; k++) {
        struct del *x = &src->held.v[k];
        if (!dels_live(&src->held, x))
            continue;
        sk_batch_add(out, src->types[x->type].e, x->id, NULL, 0, now);
        pend_add(src, x->type, x->id, DELETED_MARK);
        n++;
    }
    src->pend_release = true;
    sk_warn(src->component, "publishing %zu released deletion(s)", n);
}

static int ss_poll(struct sk_source *self, const struct sk_cursor *cursor, struct sk_batch *out,
                   struct sk_error *err)
{
    struct ss_source *src = self->priv;
    settle_last_batch(src, cursor);
    if (!cursor || !cursor->data || !cursor->len) {
        /* A fresh start or an operator's cursor reset: publish everything
         * again, whatever this process published before. */
        for (int i = 0; i < SK_ENTITY_COUNT; i++)
            ss_idmap_clear(&src->types[i].seen);
    }
    struct cstate st;
    if (ss_cursor_load(cursor, &st, err))
        return -1;
    if (src->hook)
        ss_hook_maintain(src->hook, src->http, src->base);
    if (sk_source_take_release(self) && src->n_held_live > 0)
        src->releasing = true;
    if (src->releasing && src->n_held_live > 0) {
        publish_released(src, out);
        out->more = true; /* the run goes on at the next poll */
    } else {
        src->releasing = false;
        if (!st.run_active) {
            start_run(src, &st);
        } else if (src->acc_run != st.run_t0) {
            /* A run from before a restart: its accumulators start empty here. */
            src->acc_run = st.run_t0;
            ss_idmap_clear(&src->run_seen);
            dels_clear(&src->run_dels);
            src->del_chain_run = 0;
        }
        /* Several requests per poll while the batch is small (empty delta
         * pages are the common case), bounded in count and time. */
        int64_t started = sk_mono_ms();
        int rc = 0;
        for (int req = 1; st.run_active; req++) {
            rc = run_step(src, &st, out, err);
            if (rc || (int64_t)out->n >= src->conf->page_size || req >= MAX_REQUESTS_PER_POLL ||
                sk_mono_ms() - started > MAX_POLL_MS)
                break;
        }
        if (rc) {
            /* Nothing of this poll is kept: the driver polls again from the
             * same cursor, and the page is read again (never skipped). */
            sk_batch_reset(out);
            pend_clear(src);
            free(st.page_token);
            return -1;
        }
        out->more = st.run_active;
        out->progress_done = st.done;
    }
    st.seq++;
    size_t len;
    uint8_t *data = ss_cursor_pack(&st, &len);
    src->last_cursor = sk_malloc(len ? len : 1);
    memcpy(src->last_cursor, data, len);
    src->last_cursor_len = len;
    src->last_ends_run = !out->more;
    sk_batch_set_cursor(out, data, len);
    /* In the middle of a chain the next request is known: it travels while
     * the driver stores this batch (bench/analysis.md §1). A rewind after a
     * failed delivery asks for another page, and the read-ahead is dropped. */
    if (out->more && st.run_active && st.page_token &&
        (st.step == STEP_FULL || st.step == STEP_MODIFIED || st.step == STEP_CREATED) &&
        st.type_index < st.n_run_types) {
        char *next = list_url(src, &st, st.run_types[st.type_index]);
        ss_http_prefetch(src->http, next);
        free(next);
    }
    free(st.page_token);
    return 0;
}

/* ---- open / close -------------------------------------------------------------- */

static int parse_fraction(const char *text, double *out)
{
    if (!text)
        return -1;
    char *end;
    double v = strtod(text, &end);
    if (end == text)
        return -1;
    while (*end == ' ')
        end++;
    if (*end == '%') {
        v /= 100.0;
        end++;
    }
    if (*end || !(v >= 0.0) || v > 1.0 || isnan(v))
        return -1;
    *out = v;
    return 0;
}

static void ss_close(struct sk_source *self)
{
    struct ss_source *src = self->priv;
    if (!src)
        return;
    ss_hook_free(src->hook, src->http, src->base);
    ss_http_free(src->http);
    for (int i = 0; i < SK_ENTITY_COUNT; i++) {
        ss_idmap_free(&src->types[i].seen);
        ss_idmap_free(&src->types[i].listed);
    }
    ss_idmap_free(&src->run_seen);
    ss_idmap_free(&src->pend_index);
    dels_free(&src->run_dels);
    dels_free(&src->held);
    free(src->pend);
    free(src->guard.tokens);
    free(src->last_cursor);
    free(src->base);
    free(src);
    self->priv = NULL;
}

static int ss_open(struct sk_source *self, struct sk_error *err)
{
    const struct ss_conf *conf = self->conf;
    struct ss_source *src = sk_calloc(1, sizeof(*src));
    self->priv = src;
    src->self = self;
    src->conf = conf;
    src->component = self->name ? self->name : "ss12000-source";
    src->poll_interval_us = 5LL * 60 * 1000000;
    if (sk_source_poll_interval_ms(self) > 0)
        src->poll_interval_us = sk_source_poll_interval_ms(self) * 1000;
    if (!conf->url ||
        (strncmp(conf->url, "http://", 7) != 0 && strncmp(conf->url, "https://", 8) != 0)) {
        sk_error_set(err, SK_ERR_FATAL,
                     "url: expected an http:// or https:// URL, e.g. "
                     "https://api.example.org/v2.0");
        goto fail;
    }
    size_t n = strlen(conf->url);
    while (n > 0 && conf->url[n - 1] == '/')
        n--;
    src->base = sk_strndup(conf->url, n);
    if (parse_fraction(conf->delete_guard.max_fraction, &src->max_fraction)) {
        sk_error_set(err, SK_ERR_FATAL,
                     "delete_guard.max_fraction: '%s' is not a fraction "
                     "(expected e.g. 10%% or 0.1)",
                     conf->delete_guard.max_fraction ? conf->delete_guard.max_fraction : "");
        goto fail;
    }
    for (int i = 0; i < SK_ENTITY_COUNT; i++) {
        src->types[i].e = sk_entities[i];
        src->types[i].enabled = conf->entities.n == 0;
    }
    for (size_t k = 0; k < conf->entities.n; k++) {
        const char *name = conf->entities.v[k];
        const struct sk_entity *e = sk_entity_by_name(name);
        if (!e)
            e = sk_entity_by_collection(name);
        if (!e) {
            sk_error_set(err, SK_ERR_FATAL,
                         "entities: unknown entity type '%s' (expected a name "
                         "such as Person or a collection such as persons)",
                         name);
            goto fail;
        }
        src->types[sk_entity_index(e)].enabled = true;
    }
    const char *at = conf->auth.type ? conf->auth.type : "none";
    if (strcmp(at, "bearer") == 0 && (!conf->auth.token || !*conf->auth.token)) {
        sk_error_set(err, SK_ERR_FATAL, "auth.token: required with auth.type bearer");
        goto fail;
    }
    if (strcmp(at, "oauth2") == 0 &&
        (!conf->auth.token_url || !conf->auth.client_id || !conf->auth.client_secret)) {
        sk_error_set(err, SK_ERR_FATAL,
                     "auth: oauth2 needs token_url, client_id and client_secret");
        goto fail;
    }
    if (strcmp(at, "apikey") == 0 && (!conf->auth.value || !*conf->auth.value)) {
        sk_error_set(err, SK_ERR_FATAL, "auth.value: required with auth.type apikey");
        goto fail;
    }
    src->http = ss_http_new(conf, src->component, err);
    if (!src->http)
        goto fail;
    if (conf->webhook.public_url && *conf->webhook.public_url) {
        bool enabled[SK_ENTITY_COUNT];
        for (int i = 0; i < SK_ENTITY_COUNT; i++)
            enabled[i] = src->types[i].enabled;
        src->hook = ss_hook_new(self, conf, src->component, enabled, err);
        if (!src->hook)
            goto fail;
    }
    return 0;
fail:
    ss_close(self);
    return -1;
}

const struct sk_source_ops ss12000_source_ops = {
    .type = "ss12000-source",
    .summary =
        "SS 12000 2.1 REST API (full + delta sync, deletedEntities, webhooks, reconciliation)",
    .options = ss12000_source_options,
    .conf_size = sizeof(struct ss_conf),
    .open = ss_open,
    .poll = ss_poll,
    .stored = ss_stored,
    .close = ss_close,
};
