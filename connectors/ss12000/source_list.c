/*
 * source_list.c: the ss12000-source's list steps: one request of a full
 * listing or of a delta query (meta.modified.after, meta.created.after) of
 * one entity type, the records it reads, and the end of its chain (the
 * watermark, and the full listing's reconciliation).
 *
 * Must never: move a watermark before its whole chain was read, send a
 * filter together with a pageToken, or skip a page it could not read.
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

static const char *const step_names[] = {"none",          "full listing",    "modified since",
                                         "created since", "deletedEntities", "entered window"};

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
 * A server timestamp -> µs. One without an offset ("2025-08-19T10:00:00",
 * servers on naive datetimes) is a wall-clock time of server_timezone,
 * converted through the tz database (base/tz.h: DST-correct, no TZ); the
 * first one a source reads is warned about. 1: it had no offset, *off_min
 * is the zone's then; 0: it had one; -1: unreadable.
 */
static int parse_stamp(struct ss_source *src, const char *text, int64_t *us, int *off_min)
{
    if (!text)
        return -1;
    if (sk_time_parse_us(text, us) == 0)
        return 0;
    char z[TEXT_MAX + 2];
    size_t n = strlen(text);
    int64_t local;
    if (n >= TEXT_MAX || n < 19 || text[n - 1] == 'Z' || text[n - 1] == 'z')
        return -1;
    memcpy(z, text, n);
    memcpy(z + n, "Z", 2);
    if (sk_time_parse_us(z, &local))
        return -1;
    int64_t secs = local >= 0 ? local / 1000000 : -((-local + 999999) / 1000000);
    int64_t utc = sk_tz_local_to_utc(src->tz, secs);
    *off_min = (int)((secs - utc) / 60);
    *us = local - (secs - utc) * 1000000;
    if (!src->warned_naive)
        sk_warn(src->component,
                "the server writes timestamps without an offset (\"%s\"); they are read as "
                "%s time (server_timezone) and published with its offset",
                text, src->conf->server_timezone);
    src->warned_naive = true;
    return 1;
}

/*
 * meta.<key> of an item as the record carries it: a time without an offset
 * gets the zone's (the text as the server wrote it, plus "+hh:mm"), so the
 * sinks' stale guard compares instants. Returns the text, or NULL; *us: the
 * instant it says, if *has_us (parsed once here: a record's stamps were
 * parsed five times).
 */
static const char *meta_stamp(struct ss_source *src, struct sk_json_arena *arena, cJSON *meta,
                              const char *key, int64_t *us, bool *has_us)
{
    cJSON *j = cJSON_GetObjectItemCaseSensitive(meta, key);
    int off_min;
    *has_us = false;
    if (!cJSON_IsString(j))
        return NULL;
    int rc = parse_stamp(src, j->valuestring, us, &off_min);
    if (rc != 1) {
        *has_us = rc == 0;
        return j->valuestring;
    }
    int a = off_min < 0 ? -off_min : off_min;
    char text[TEXT_MAX + 8];
    snprintf(text, sizeof(text), "%s%c%02d:%02d", j->valuestring, off_min < 0 ? '-' : '+', a / 60,
             a % 60);
    /* The page's tree lives in its arena (ss_parse_page): a new text goes
     * there too, never through cJSON (which would free the old node). */
    char *stamped = sk_json_arena_strdup(arena, text);
    if (!stamped)
        abort(); /* out of memory: as sk_malloc */
    /* the instant as the stamped text says it (an offset of whole minutes) */
    *has_us = sk_time_parse_us(stamped, us) == 0;
    return j->valuestring = stamped;
}

/* Takes max of a timestamp (its text, and its instant us if has_us) into (text, us, has). */
static void take_max(const char *text, bool has_us, int64_t us, char dst[TEXT_MAX],
                     int64_t *dst_us, bool *has)
{
    if (!text || !has_us || strlen(text) >= TEXT_MAX)
        return;
    if (!*has || us > *dst_us) {
        *dst_us = us;
        *has = true;
        ss_text_copy(dst, text);
    }
}

/* One entity of a list page: a record, nothing (unchanged), or a dead letter
 * (refused: one already, ss_page_item_inexact, or NULL). */
static void take_item(struct ss_source *src, struct cstate *st, int ti, enum step step,
                      struct sk_json_arena *arena, const cJSON *item,
                      const struct ss_item_refusal *refused, const char *url, struct sk_batch *out,
                      int64_t now)
{
    struct ss_type *t = &src->types[ti];
    const struct sk_entity *e = t->e;
    /* The page is ours: meta times without an offset get theirs in place. */
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(item, "meta");
    int64_t mod_us = NO_MODIFIED, cre_us = 0;
    bool has_mod, has_cre;
    const char *mod_text = meta_stamp(src, arena, meta, "modified", &mod_us, &has_mod);
    const char *cre_text = meta_stamp(src, arena, meta, "created", &cre_us, &has_cre);
    take_max(mod_text, has_mod, mod_us, st->chain_mod_text, &st->chain_mod_us,
             &st->has_chain_mod);
    take_max(cre_text, has_cre, cre_us, st->chain_cre_text, &st->chain_cre_us,
             &st->has_chain_cre);
    if (!has_mod)
        mod_us = NO_MODIFIED;

    const cJSON *idj = cJSON_GetObjectItemCaseSensitive(item, "id");
    char id[37] = "";
    struct sk_idkey k; /* the id parsed once for the five maps it meets */
    bool id_ok = cJSON_IsString(idj) && sk_uuid_normalize(idj->valuestring, id) == 0 &&
                 sk_idkey_parse(id, &k);
    if (id_ok) {
        /* Read in this run: the T0 rule keeps it from this run's deletions. */
        sk_idset_add_key(&src->run_seen, &k);
        if (step == STEP_FULL)
            sk_idset_add_key(&t->listed, &k);
        /* (looked up only where it is used: a key a type lacks costs a walk of all its keys) */
        const cJSON *start =
            t->windowed ? cJSON_GetObjectItemCaseSensitive(item, "startTime") : NULL;
        int64_t start_us;
        int off_min;
        if (cJSON_IsString(start) &&
            parse_stamp(src, start->valuestring, &start_us, &off_min) >= 0)
            sk_idmap_put_key(&t->start, &k, start_us);
        /* Unchanged since we last stored it: not again (sinks are idempotent
         * anyway, this only saves work). Entities without meta.modified are
         * always published: there is nothing to compare. */
        int64_t prev;
        if (mod_us != NO_MODIFIED && sk_idmap_get_key(&t->bad, &k, &prev) && prev == mod_us) {
            /* This version was dead-lettered already: counted, not sent again. */
            sk_source_count_bad_again(src->self, e);
            return;
        }
        if (mod_us != NO_MODIFIED &&
            ((sk_idmap_get_key(&src->pend_index, &k, &prev) && prev == mod_us) ||
             (sk_idmap_get_key(&t->seen, &k, &prev) && prev == mod_us)))
            return;
    }
    struct sk_error err = {0};
    const char *field = cJSON_IsObject(item) ? sk_entity_missing_required(e, item) : NULL;
    uint8_t *value = NULL;
    size_t len = 0;
    char key[37];
    bool packed = false;
    if (refused)
        err = refused->err;
    else if (field && src->strict)
        sk_error_set(&err, SK_ERR_PERMANENT, "%s %s: required field %s missing", e->name,
                     id_ok ? id : "(no id)", field);
    else
        packed = sk_codec_pack_json(e, item, &value, &len, key, NULL, &err) == 0;
    if (packed && field)
        sk_source_count_incomplete(src->self, e); /* lenient: published as it is */
    if (!packed) {
        /* A refused item as the server sent it: printed, its numbers would
         * be the changed ones the refusal is about. */
        char *raw = refused ? sk_strndup(refused->text, refused->len) : sk_json_print(item);
        sk_batch_add_bad(out, e, id_ok ? id : NULL, (uint8_t *)raw, raw ? strlen(raw) : 0, url,
                         &err);
        /* Once per (id, meta.modified), like a record: every delta query
         * (modified and created, each overlap) would send it again. Bytes
         * damaged on the way never get here (ss_page_item_bad): the same
         * version may come intact the next time. */
        if (id_ok && mod_us != NO_MODIFIED)
            ss_pend_add_key(src, ti, &k, mod_us, true);
        return;
    }
    sk_batch_add(out, e, key, value, len, now);
    /* key is the id the codec read: the one parsed above when there was one */
    if (id_ok && strcmp(key, id) == 0)
        ss_pend_add_key(src, ti, &k, mod_us, false);
    else
        ss_pend_add(src, ti, key, mod_us, false);
    st->done++;
}

/* The list request of the current step (filters only without a token, docs/ss12000-notes.md §3.1).
 */
char *ss_list_url(struct ss_source *src, const struct cstate *st, int i)
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
    char filter[128] = "";
    if (param) {
        char ts[TEXT_MAX];
        ss_format_time(us - src->conf->overlap_ms * 1000, offset_minutes(text), ts);
        char *esc = sk_http_escape(ts); /* '+' -> %2B, ':' -> %3A */
        snprintf(filter, sizeof(filter), "%s=%s&", param, esc);
        free(esc);
    }
    char window[256] = "";
    if (ss_windowed(src, i)) {
        /* Every request of a windowed type carries the window (the spec
         * requires both bounds); the "entered" step asks only for the part
         * the window's end moved over since it was read. */
        int64_t lo, hi;
        ss_window(src, st, &lo, &hi);
        if (st->step == STEP_WINDOW && t->window_end_us > lo)
            lo = t->window_end_us;
        char a[TEXT_MAX], b[TEXT_MAX];
        ss_format_time(lo, 0, a);
        ss_format_time(hi, 0, b);
        char *ea = sk_http_escape(a), *eb = sk_http_escape(b);
        snprintf(window, sizeof(window), "startTime.onOrAfter=%s&startTime.onOrBefore=%s&", ea, eb);
        free(ea);
        free(eb);
    }
    return sk_asprintf("%s%s?%s%slimit=%" PRId64, src->base, e->path, filter, window, limit);
}

/* The end of a chain of the current type's list step. */
static int list_chain_done(struct ss_source *src, struct cstate *st, int i, struct sk_error *err)
{
    struct tstate *t = &st->t[i];
    if (ss_windowed(src, i) && (st->step == STEP_FULL || st->step == STEP_WINDOW)) {
        int64_t lo;
        ss_window(src, st, &lo, &t->window_end_us);
    }
    if (st->step == STEP_WINDOW) {
        /* A slice of startTime, not of meta.modified: the watermarks stay. */
        ss_advance(src, st);
        return 0;
    }
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
            if (ss_reconcile(src, st, i, err))
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
    ss_advance(src, st);
    return 0;
}

/*
 * A list endpoint that does not exist or is not ours to read: the type is
 * skipped until its next full sync is due (one log line per full sync, a
 * gauge). A server that serves eight types is normal, so 404 is only info.
 */
static void skip_type(struct ss_source *src, struct cstate *st, int i, long status)
{
    const struct sk_entity *e = src->types[i].e;
    if (status == 404)
        sk_info(src->component,
                "GET %s%s: HTTP 404: the server does not serve %s; skipped until the next full "
                "sync",
                src->base, e->path, e->collection);
    else
        sk_warn(src->component,
                "GET %s%s: HTTP %ld: %s not permitted; skipped until the next full sync", src->base,
                e->path, status, e->collection);
    st->t[i].missing = true;
    st->t[i].last_full_us = st->run_t0;
    ss_set_skipped(src, i, true);
    ss_enter_type(src, st, st->type_index + 1);
}

/*
 * Type i's answer was an error of its own (a status other than those
 * handled above: 400, 405, 422, 500, 501, ...; or a page that is not one):
 * it fails on its own (ss_part_failed), and the run goes on with the next
 * type.
 */
static int type_failed(struct ss_source *src, struct cstate *st, int i, long status,
                       struct sk_error *err)
{
    if (ss_part_failed(src, i, status, err))
        return -1;
    ss_enter_type(src, st, st->type_index + 1);
    return 0;
}

static bool has_type(const struct dels *d, int i)
{
    for (size_t k = 0; k < d->n; k++)
        if (d->v[k].type == i && ss_dels_live(d, &d->v[k]))
            return true;
    return false;
}

/*
 * Whether deletions of type i are the delete guard's to decide: held or
 * rejected ones, or ones this run's reconciliation found (the guard weighs
 * them at the run's end). A snapshot then ends without its end marker:
 * the sinks' sweep would delete them past the guard.
 */
static bool deletions_pending(const struct ss_source *src, const struct cstate *st, int i)
{
    return has_type(&st->held, i) || has_type(&st->rejected, i) || has_type(&src->run_dels, i);
}

/* One request of a list step (full or delta). */
int ss_list_step(struct ss_source *src, struct cstate *st, struct sk_batch *out,
                 struct sk_error *err)
{
    int i = st->run_types[st->type_index];
    struct ss_type *t = &src->types[i];
    if (st->step == STEP_CREATED && (!st->t[i].has_cre || t->no_created)) {
        ss_advance(src, st);
        return 0;
    }
    bool chain_start = st->page_token == NULL;
    if (st->step == STEP_FULL && chain_start) {
        sk_idset_clear(&t->listed);
        t->listed_run = st->run_t0;
    } else if (st->step == STEP_FULL && t->listed_run != st->run_t0) {
        t->listed_run = 0; /* resumed mid-listing: the listing is not complete here */
    }
    char *url = ss_list_url(src, st, i);
    char again[96];
    snprintf(again, sizeof(again), "restarting the %s query from its watermark", t->e->collection);
    struct ss_resp r;
    int rc = ss_chain_get(src, st, url, again, &r, err);
    if (rc <= 0) {
        free(url);
        return rc;
    }
    rc = 0;
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
        ss_advance(src, st);
        goto out;
    }
    char chain[64];
    snprintf(chain, sizeof(chain), "%s %s %" PRId64, src->types[i].e->collection,
             step_names[st->step], st->run_t0);
    const cJSON *data;
    const char *next;
    cJSON *doc = ss_chain_page(src, &r, url, chain, chain_start ? 0 : 1, true, &data, &next, err);
    if (!doc) {
        rc = err->cls == SK_ERR_RETRIABLE ? type_failed(src, st, i, r.status, err) : -1;
        goto out;
    }
    ss_part_ok(src, i, next == NULL);
    ss_set_skipped(src, i, false);
    int64_t now = sk_now_us();
    /* A full listing is a snapshot (connector.h) only if every entity it
     * lists reaches Kafka: none left out as unchanged (the dedupe map is
     * still empty: the first listing since the start), none dead-lettered.
     * A windowed type's listing is a snapshot of its window. */
    uint32_t bit = 1u << sk_entity_index(t->e);
    if (st->step == STEP_FULL && chain_start) {
        t->snapshot_open = t->seen.n == 0 && t->bad.n == 0;
        if (t->snapshot_open)
            out->snapshot_begin |= bit;
        if (t->snapshot_open && t->windowed) {
            /* what the query asked for: startTime within the window */
            struct sk_snapshot_window *w = &out->snapshot_window[sk_entity_index(t->e)];
            w->field = "startTime";
            ss_window(src, st, &w->from_us, &w->to_us);
        }
    }
    free(st->page_token);
    st->page_token = next ? sk_strdup(next) : NULL;
    if (next) {
        /* The next page travels while this one is encoded (and then while
         * the driver stores the batch); a poll that fails asks for another
         * URL, and the read-ahead is dropped (source_http.c). */
        char *ahead = ss_list_url(src, st, i);
        ss_http_prefetch(src->http, ahead);
        free(ahead);
    }
    size_t bad_before = out->n_bad;
    struct ss_page_check pc = ss_page_check(&r);
    const cJSON *item;
    size_t k = 0;
    cJSON_ArrayForEach(item, data)
    {
        /* Bytes damaged on the way are dead-lettered here, every time (the
         * next read may be intact); a number a double changes is the
         * record's own, so it goes the way of a record the codec refuses:
         * once per version. */
        struct ss_item_refusal why;
        bool inexact = ss_page_item_inexact(&pc, k, src->types[i].e, &why);
        if (!ss_page_item_bad(&pc, k++, src->types[i].e, url, out))
            take_item(src, st, i, st->step, r.arena, item, inexact ? &why : NULL, url, out, now);
    }
    if (out->n_bad != bad_before)
        t->snapshot_open = false;
    free(pc.spans);
    if (!next) {
        bool snapshot = st->step == STEP_FULL && t->snapshot_open && t->listed_run == st->run_t0;
        t->snapshot_open = false;
        rc = list_chain_done(src, st, i, err);
        if (rc == 0 && snapshot && !deletions_pending(src, st, i))
            out->snapshot_end |= bit;
    }
out:
    ss_resp_free(&r);
    free(url);
    return rc;
}
