/*
 * source_run.c: the ss12000-source's run as a state machine: which types a
 * run covers and in which step (full listing or delta) each starts, the
 * step after a completed chain, one step of the run, and the timestamps it
 * sends.
 *
 * Owns: the order of a run's steps (docs/ss12000-source.md). Must never:
 * send a timestamp without its offset, or read a page itself (the steps do:
 * source_list.c, source_deleted.c, source_guard.c for the run's end).
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

/*
 * RFC 3339 with an explicit numeric offset (never without one, docs/ss12000-notes.md §4:
 * servers reject an offset-less time), µs precision, in the offset the
 * server itself writes (so a server that compares texts still works).
 */
void ss_format_time(int64_t us, int off_min, char out[TEXT_MAX])
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

static bool full_due(const struct ss_source *src, const struct cstate *st, int i, int64_t now)
{
    const struct tstate *t = &st->t[i];
    return !t->full_done || now - t->last_full_us >= src->conf->full_sync_interval_ms * 1000;
}

void ss_chain_reset(struct cstate *st)
{
    free(st->page_token);
    st->page_token = NULL;
    st->has_chain_mod = st->has_chain_cre = false;
    st->chain_mod_text[0] = st->chain_cre_text[0] = '\0';
}

/* Positions st at type index k of the run (or the deletes, or the end). */
void ss_enter_type(struct ss_source *src, struct cstate *st, int k)
{
    ss_chain_reset(st);
    st->type_index = k;
    if (k < st->n_run_types) {
        int i = st->run_types[k];
        st->step = full_due(src, st, i, st->run_t0) ? STEP_FULL : STEP_MODIFIED;
    } else {
        st->step = STEP_DELETED;
    }
}

void ss_start_run(struct ss_source *src, struct cstate *st)
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
        if (st->t[i].missing) {
            /* Not served (404) or not ours (403): left out until its next
             * full sync is due, counted from when it answered so
             * (source_list.c, skip_type); not asked by every delta run. */
            if (now - st->t[i].last_full_us < src->conf->full_sync_interval_ms * 1000) {
                ss_set_skipped(src, i, true);
                continue;
            }
            st->t[i].missing = false;
        }
        bool due = full_due(src, st, i, now);
        /* A type failing on its own waits for its backoff (source_list.c). */
        if (src->types[i].failing.retry_at_us > now)
            continue;
        /* A webhook-triggered run reads the named types only. */
        if (hooked && !dirty[i])
            continue;
        st->run_types[st->n_run_types++] = i;
        any_full |= due;
    }
    if (any_full)
        st->deleted_missing = false; /* look for /deletedEntities again */
    /* deletedEntities failing on its own waits for its backoff too; its T0
     * stays (source_guard.c), so the deletions are asked for again later. */
    st->run_deletes = (hooked ? del_dirty : true) && src->del_failing.retry_at_us <= now;
    /* The run's accumulators start empty. */
    src->acc_run = now;
    sk_idset_clear(&src->run_seen);
    ss_dels_clear(&src->run_dels);
    src->del_chain_run = 0;
    ss_enter_type(src, st, 0);
    sk_debug(src->component, "run started: %d type(s)%s%s", st->n_run_types,
             st->run_deletes ? " and deletedEntities" : "", hooked ? " (webhook)" : "");
}

/*
 * The first failure in a row fails the poll as every error did (the driver
 * polls again from the same cursor: most failures pass). A second one in a
 * row fails the part only: it is left out of runs for its own backoff (1 s,
 * doubling, at most TYPE_BACKOFF_MAX_MS), the status API and metrics show
 * it, and the run goes on without it, so a part that fails for ever delays
 * the others by one retry at most.
 */
int ss_part_failed(struct ss_source *src, int i, long status, struct sk_error *err)
{
    struct ss_failing *f = i >= 0 ? &src->types[i].failing : &src->del_failing;
    const struct sk_entity *e = i >= 0 ? src->types[i].e : NULL;
    /* A page of a chain that never ends is no sign that the part works
     * again: without this, the pages read after the failed poll cleared it,
     * the next hit failed the poll again, and so on for ever. */
    f->endless |= src->guard.hit;
    src->guard.hit = false;
    if (++f->fails == 1)
        return -1;
    int shift = f->fails - 2 < 20 ? f->fails - 2 : 20;
    int64_t backoff_ms = 1000LL << shift;
    if (backoff_ms > TYPE_BACKOFF_MAX_MS)
        backoff_ms = TYPE_BACKOFF_MAX_MS;
    f->retry_at_us = sk_now_us() + backoff_ms * 1000;
    /* "GET <url>: HTTP 422: <the server's reason>": the type names the URL. */
    const char *reason = strncmp(err->msg, "GET ", 4) == 0 ? strstr(err->msg, ": ") : NULL;
    reason = reason ? reason + 2 : err->msg;
    sk_source_set_type_error(src->self, e, status == 200 ? 0 : status, reason);
    if (e)
        sk_warn(src->component,
                "%s fails (%d times in a row): %s; the other types go on, %s is tried again in "
                "%" PRId64 " s",
                e->collection, f->fails, reason, e->collection, (backoff_ms + 999) / 1000);
    else
        sk_warn(src->component,
                "deletedEntities fails (%d times in a row): %s; the run's changes are stored, "
                "deletions are asked for again from the same time in %" PRId64 " s",
                f->fails, reason, (backoff_ms + 999) / 1000);
    sk_error_clear(err);
    return 0;
}

void ss_part_ok(struct ss_source *src, int i, bool chain_end)
{
    struct ss_failing *f = i >= 0 ? &src->types[i].failing : &src->del_failing;
    const struct sk_entity *e = i >= 0 ? src->types[i].e : NULL;
    if (f->endless && !chain_end)
        return;
    if (f->retry_at_us) {
        sk_info(src->component, "%s works again", e ? e->collection : "deletedEntities");
        sk_source_set_type_error(src->self, e, 0, NULL);
    }
    f->fails = 0;
    f->retry_at_us = 0;
    f->endless = false;
}

void ss_set_skipped(struct ss_source *src, int i, bool skipped)
{
    if (src->types[i].skipped == skipped)
        return;
    src->types[i].skipped = skipped;
    sk_source_set_type_skipped(src->self, src->types[i].e, skipped);
}

bool ss_windowed(const struct ss_source *src, int i)
{
    return src->types[i].windowed;
}

/* From the run's T0, so a chain resumed from its cursor asks for the same window. */
void ss_window(const struct ss_source *src, const struct cstate *st, int64_t *lo, int64_t *hi)
{
    *lo = st->run_t0 - src->conf->calendar_window.past_ms * 1000;
    *hi = st->run_t0 + src->conf->calendar_window.future_ms * 1000;
}

/* The window's end is read again once it moved this far (docs/ss12000-source.md). */
#define WINDOW_STEP_US (86400LL * 1000000)

/*
 * A delta (meta.modified.after) does not find an event the window's end
 * moved over: it did not change. Such events are read by a chain of their
 * own, startTime from the end read last to the window's end, once that end
 * moved a day: at most one such request a day, and a server that ignores
 * the window's parameters is listed in full once a day, not on every poll
 * (nor again after every restart). An event entering the window 365 days
 * ahead is read within a day.
 */
static bool window_moved(const struct ss_source *src, const struct cstate *st, int i)
{
    int64_t lo, hi;
    ss_window(src, st, &lo, &hi);
    return ss_windowed(src, i) && st->t[i].window_end_us + WINDOW_STEP_US <= hi;
}

/* The next step after a completed chain. */
void ss_advance(struct ss_source *src, struct cstate *st)
{
    int i = st->type_index < st->n_run_types ? st->run_types[st->type_index] : -1;
    if (st->step == STEP_MODIFIED && src->conf->created_query) {
        if (st->t[i].has_cre && !src->types[i].no_created) {
            ss_chain_reset(st);
            st->step = STEP_CREATED;
            return;
        }
    }
    if ((st->step == STEP_MODIFIED || st->step == STEP_CREATED) && window_moved(src, st, i)) {
        ss_chain_reset(st);
        st->step = STEP_WINDOW;
        return;
    }
    if (st->step == STEP_DELETED) {
        st->step = STEP_NONE;
        return;
    }
    ss_enter_type(src, st, st->type_index + 1);
}

/* One step of the run: one request, or the run's end. */
int ss_run_step(struct ss_source *src, struct cstate *st, struct sk_batch *out,
                struct sk_error *err)
{
    if (st->step == STEP_NONE || (st->type_index >= st->n_run_types && st->step != STEP_DELETED))
        return ss_finish_run(src, st, out, err);
    if (st->step == STEP_DELETED)
        return ss_deleted_step(src, st, out, err);
    return ss_list_step(src, st, out, err);
}

int ss_chain_get(struct ss_source *src, struct cstate *st, const char *url, const char *again,
                 struct ss_resp *r, struct sk_error *err)
{
    if (ss_http_request(src->http, "GET", url, NULL, r, err))
        return -1;
    if (st->page_token && (r->status == 410 || r->status == 400)) {
        /* An expired (410) or refused (400) pageToken: the query starts over
         * from the committed watermark; what was read is read again (dedupe).
         * A server that refuses every token it hands out would have the
         * chain start over for ever while the source looked fine: a few
         * restarts per chain and run, then the answer fails the step (the
         * type, or deletedEntities, fails on its own). */
        char chain[64];
        snprintf(chain, sizeof(chain), "%d %d %" PRId64, st->type_index, (int)st->step,
                 st->run_t0);
        if (strcmp(chain, src->restart_chain) != 0) {
            snprintf(src->restart_chain, sizeof(src->restart_chain), "%s", chain);
            src->restarts_400 = src->restarts_410 = 0;
        }
        bool refused = r->status == 400;
        int *restarts = refused ? &src->restarts_400 : &src->restarts_410;
        if (*restarts >= (refused ? TOKEN_400_RESTARTS_MAX : TOKEN_410_RESTARTS_MAX)) {
            sk_warn(src->component,
                    "GET %s: HTTP %ld on a page token again after %d restart(s) of the query in "
                    "this run: the server %s; the query fails",
                    url, r->status, *restarts,
                    refused ? "refuses its own page tokens" : "lets its page tokens expire");
            return 1;
        }
        (*restarts)++;
        sk_warn(src->component, "GET %s: HTTP %ld on a page token; %s", url, r->status, again);
        ss_resp_free(r);
        ss_chain_reset(st);
        return 0;
    }
    return 1;
}

cJSON *ss_chain_page(struct ss_source *src, struct ss_resp *r, const char *url, const char *chain,
                     int page_no, bool list, const cJSON **data, const char **next,
                     struct sk_error *err)
{
    cJSON *doc = ss_parse_page(r, url, data, next, err);
    if (!doc)
        return NULL;
    if (list && !cJSON_IsArray(*data)) {
        sk_error_set(err, SK_ERR_RETRIABLE, "GET %s: the page has no data list", url);
        return NULL;
    }
    /* deletedEntities: ids in buckets, or a flat list of {entityType, id}. */
    size_t items = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, *data) items +=
        !list && cJSON_IsArray(part) ? (size_t)cJSON_GetArraySize(part) : 1;
    if (ss_paging_guard_page(&src->guard, chain, page_no, items, *next, url, err))
        return NULL;
    return doc; /* r's (ss_parse_page) */
}
