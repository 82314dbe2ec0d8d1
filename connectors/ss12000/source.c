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
 *     (the driver's stored(); batches it chains into one transaction are
 *     settled together);
 *   - deletions of a run (deletedEntities and reconciliation) are published
 *     at the run's end, in one batch, unless the delete guard holds them.
 *
 * This file is the connector: poll (a run's steps until the batch is full),
 * the settling of stored batches, open and close. The steps are in
 * source_run.c, source_list.c, source_deleted.c and source_guard.c.
 *
 * Owns: the ops table, the poll loop and ack detection. Must never: move a watermark past data not
 * yet published, send a filter together with a pageToken, send a timestamp without its offset, skip
 * a page it could not read, or know anything about Kafka.
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

/* Tells the core the held list of a stored cursor (json taken), when it changed. */
static void report_held(struct ss_source *src, char *json, size_t n)
{
    if (src->reported_json && strcmp(src->reported_json, json) == 0) {
        free(json);
        return;
    }
    sk_source_set_held_list(src->self, n, json);
    free(src->reported_json);
    src->reported_json = json;
}

/* The batch handed out that carries cursor, or n_pb: none of them. */
static size_t pend_batch_of(const struct ss_source *src, const struct sk_cursor *cursor)
{
    for (size_t k = 0; cursor && cursor->data && k < src->n_pb; k++)
        if (cursor->len == src->pb[k].len &&
            memcmp(cursor->data, src->pb[k].cursor, cursor->len) == 0)
            return k;
    return src->n_pb;
}

/* Forgets the batches handed out: stored and settled, or never to be stored. */
static void pend_batches_drop(struct ss_source *src)
{
    for (size_t k = 0; k < src->n_pb; k++) {
        free(src->pb[k].cursor);
        free(src->pb[k].held_json);
    }
    src->n_pb = 0;
    ss_pend_clear(src);
}

/*
 * The batch carrying cursor is stored, and with it every batch handed out
 * before it in the chain (one transaction): the dedupe map learns what they
 * carried. Batches after it were not stored (the driver ended its group
 * before them) and are read again from that cursor; a cursor of none of
 * them means delivery failed and the poll repeats from an older cursor:
 * forget them all (their records will be read and published again). True if
 * stored; *ends_run: that batch completed its run.
 */
static bool settle(struct ss_source *src, const struct sk_cursor *cursor, bool *ends_run)
{
    size_t k = pend_batch_of(src, cursor);
    bool stored = k < src->n_pb;
    *ends_run = false;
    if (stored) {
        for (size_t i = 0; i < src->pb[k].pend_end; i++) {
            const struct pending *p = &src->pend[i];
            struct ss_type *t = &src->types[p->type];
            if (p->keyed)
                sk_idmap_put_key(p->bad ? &t->bad : &t->seen, &p->id, p->val);
        }
        bool released = false;
        for (size_t j = 0; j <= k; j++)
            released |= src->pb[j].release;
        /* The list first, then the request's end: the operator's answer
         * carries the new list. */
        report_held(src, src->pb[k].held_json, src->pb[k].held);
        src->pb[k].held_json = NULL;
        if (src->release && released) {
            sk_source_release_done(src->self, src->release->seq);
            sk_release_free(src->release);
            src->release = NULL;
        }
        *ends_run = src->pb[k].ends_run;
    }
    /* Not stored: a request applied in those batches is applied again from
     * the older cursor the driver polls with, and the pages read again are
     * no paging loop. */
    if (!stored && src->n_pb)
        ss_paging_guard_forget(&src->guard);
    pend_batches_drop(src);
    return stored;
}

/*
 * The driver's word that the batch carrying cursor is in Kafka, given
 * before the next poll (connector.h). Once the batch that ended a run is
 * stored, no poll goes back into that run: its sets are given back now, not
 * kept until the next run (they were most of an idle source's memory,
 * bench/analysis.md §4).
 */
static void ss_stored(struct sk_source *self, const struct sk_cursor *cursor)
{
    struct ss_source *src = self->priv;
    bool ends_run;
    if (!settle(src, cursor, &ends_run) || !ends_run)
        return;
    sk_idset_free(&src->run_seen);
    for (int i = 0; i < SK_ENTITY_COUNT; i++) {
        sk_idset_free(&src->types[i].listed);
        /* The maps that stay: a bulk load left them 38-75 % full (100k
         * entities: 4.8 MB, 47 bytes an id; compacted 3.5 MB, 34 bytes) */
        sk_idmap_compact(&src->types[i].seen);
        sk_idmap_compact(&src->types[i].bad);
        sk_idmap_compact(&src->types[i].start);
    }
    sk_idmap_free(&src->pend_index);
    ss_dels_free(&src->run_dels);
    free(src->pend); /* settled: n_pend is 0 */
    src->pend = NULL;
    src->cap_pend = 0;
    free(src->pb);
    src->pb = NULL;
    src->cap_pb = 0;
}

/* ---- the run ---------------------------------------------------------------- */

static int ss_poll(struct sk_source *self, const struct sk_cursor *cursor, struct sk_batch *out,
                   struct sk_error *err)
{
    struct ss_source *src = self->priv;
    /* The cursor of the last batch handed out, not yet stored: the driver
     * chains this poll to it (chain_polls), and the two are stored together
     * or not at all. Any other cursor: what was handed out and not stored
     * is forgotten (a stored batch was settled by stored()). */
    bool chained = src->n_pb && pend_batch_of(src, cursor) == src->n_pb - 1;
    if (!chained) {
        bool ends_run;
        settle(src, cursor, &ends_run);
    }
    size_t pend_mark = src->n_pend;
    if (!cursor || !cursor->data || !cursor->len) {
        /* A fresh start or an operator's cursor reset: publish everything
         * again, whatever this process published before. */
        for (int i = 0; i < SK_ENTITY_COUNT; i++) {
            sk_idmap_clear(&src->types[i].seen);
            sk_idmap_clear(&src->types[i].bad);
        }
    }
    struct cstate st;
    if (ss_cursor_load(cursor, &st, err))
        return -1;
    bool renewal_only = src->hook && ss_hook_renewal_only(src->hook);
    if (src->hook)
        ss_hook_maintain(src->hook, src->http, src->base);
    if (!src->reported_json) /* this process's first poll: the list stored before */
        report_held(src, ss_held_json(&st), ss_dels_count(&st.held));
    bool released_before = false; /* by a batch of this chain: not again */
    for (size_t k = 0; k < src->n_pb; k++)
        released_before |= src->pb[k].release;
    if (!src->release)
        src->release = sk_source_take_release_request(self);
    bool release = src->release && !released_before;
    if (release) {
        ss_apply_release(src, &st, src->release, out);
        out->more = true; /* the run goes on at the next poll */
    } else if (!st.run_active && renewal_only && cursor && cursor->len &&
               sk_now_us() - src->last_regular_us < src->poll_interval_us) {
        /* Woken to renew the subscription (done above), no run due: that is
         * no reason to read every type (a renewal due every second started
         * a full run every second). An empty batch, nothing stored. The
         * driver then waits poll_interval again: the regular run comes at
         * most that much later, or with a renewal once it is overdue. */
        sk_debug(src->component, "webhook subscription maintained; no run due");
        ss_cursor_free(&st);
        out->more = false;
        return 0;
    } else {
        if (!st.run_active) {
            ss_start_run(src, &st);
        } else if (src->acc_run != st.run_t0) {
            /* A run from before a restart: its accumulators start empty here. */
            src->acc_run = st.run_t0;
            sk_idset_clear(&src->run_seen);
            ss_dels_clear(&src->run_dels);
            src->del_chain_run = 0;
        }
        /* Several requests per poll while the batch is small (empty delta
         * pages are the common case), bounded in count and time. */
        int64_t started = sk_mono_ms();
        int rc = 0;
        for (int req = 1; st.run_active; req++) {
            rc = ss_run_step(src, &st, out, err);
            if (rc || (int64_t)out->n >= src->conf->page_size || req >= MAX_REQUESTS_PER_POLL ||
                sk_mono_ms() - started > MAX_POLL_MS)
                break;
        }
        if (rc) {
            /* Nothing of this poll is kept: the driver polls again from the
             * same cursor, and the page is read again (never skipped). */
            sk_batch_reset(out);
            ss_pend_truncate(src, pend_mark);
            /* the tokens this poll read come again, and are no loop */
            ss_paging_guard_forget(&src->guard);
            ss_cursor_free(&st);
            return -1;
        }
        out->more = st.run_active;
        out->progress_done = st.done;
    }
    st.seq++;
    size_t len;
    uint8_t *data = ss_cursor_pack(&st, &len);
    if (src->n_pb == src->cap_pb) {
        src->cap_pb = src->cap_pb ? src->cap_pb * 2 : 8;
        src->pb = sk_realloc(src->pb, src->cap_pb * sizeof(*src->pb));
    }
    struct pend_batch *b = &src->pb[src->n_pb++];
    b->cursor = sk_malloc(len ? len : 1);
    memcpy(b->cursor, data, len);
    b->len = len;
    b->pend_end = src->n_pend;
    b->held_json = ss_held_json(&st);
    b->held = ss_dels_count(&st.held);
    b->ends_run = !out->more;
    b->release = release;
    sk_batch_set_cursor(out, data, len);
    /* In the middle of a chain the next request is known: it travels while
     * the driver stores this batch (bench/analysis.md §1). A rewind after a
     * failed delivery asks for another page, and the read-ahead is dropped. */
    if (out->more && st.run_active && st.page_token &&
        (st.step == STEP_FULL || st.step == STEP_MODIFIED || st.step == STEP_CREATED ||
         st.step == STEP_WINDOW) &&
        st.type_index < st.n_run_types) {
        char *next = ss_list_url(src, &st, st.run_types[st.type_index]);
        ss_http_prefetch(src->http, next);
        free(next);
    }
    ss_cursor_free(&st);
    return 0;
}

/* ---- open / close -------------------------------------------------------------- */

static void ss_close(struct sk_source *self)
{
    struct ss_source *src = self->priv;
    if (!src)
        return;
    ss_hook_free(src->hook, src->http, src->base);
    ss_http_free(src->http);
    for (int i = 0; i < SK_ENTITY_COUNT; i++) {
        sk_idmap_free(&src->types[i].seen);
        sk_idset_free(&src->types[i].listed);
        sk_idmap_free(&src->types[i].start);
        sk_idmap_free(&src->types[i].bad);
    }
    pend_batches_drop(src);
    free(src->pb);
    sk_idset_free(&src->run_seen);
    sk_idmap_free(&src->pend_index);
    ss_dels_free(&src->run_dels);
    sk_release_free(src->release);
    free(src->reported_json);
    free(src->pend);
    free(src->guard.tokens);
    free(src->base);
    sk_tz_free(src->tz);
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
    /* the driver's setting (its default is in its option table); 0 without a
     * driver: every poll is a regular one */
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
    if (sk_guard_fraction(&conf->delete_guard, &src->max_fraction, err))
        goto fail;
    for (int i = 0; i < SK_ENTITY_COUNT; i++) {
        src->types[i].e = sk_entities[i];
        src->types[i].enabled = conf->entities.n == 0;
        /* The spec requires startTime.onOrAfter/onOrBefore (docs/ss12000-notes.md §3.1). */
        src->types[i].windowed = strcmp(sk_entities[i]->name, "CalendarEvent") == 0;
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
    for (int i = 0; i < SK_ENTITY_COUNT; i++)
        if (src->types[i].enabled)
            self->writes |= 1u << i;
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
    src->strict = conf->validation && strcmp(conf->validation, "strict") == 0;
    src->tz = sk_tz_load(conf->server_timezone, err);
    if (!src->tz) {
        char why[sizeof(err->msg)];
        snprintf(why, sizeof(why), "%s", err->msg);
        sk_error_set(err, SK_ERR_FATAL, "server_timezone: %s", why);
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
    /* batches ready one after the other go in one transaction: settled
     * together by stored(), forgotten together when it fails */
    .chain_polls = true,
    .close = ss_close,
    .probe = ss_probe,
};
