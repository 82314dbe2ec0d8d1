/*
 * source_guard.c: the ss12000-source's deletions: the sets that collect
 * them, the changes a batch carries until it is stored, the full
 * reconciliation against the ids live in Kafka, and the run's end, where
 * the delete guard publishes the run's deletions or holds them.
 *
 * Must never: publish a deletion of an id read again in the same run (the
 * T0 rule), or publish held deletions before an operator released them.
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

struct del *ss_dels_add(struct dels *d, int type, const char *id)
{
    int64_t v;
    if (sk_idmap_get(&d->index, id, &v) && v)
        return &d->v[v - 1];
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 64;
        d->v = sk_realloc(d->v, d->cap * sizeof(*d->v));
    }
    struct del *x = &d->v[d->n++];
    x->type = type;
    memcpy(x->id, id, 37);
    x->at_us = 0;
    sk_idmap_put(&d->index, id, (int64_t)d->n); /* its position + 1: an entry added again
                                                   after it was taken out is the live one */
    return x;
}

bool ss_dels_live(const struct dels *d, const struct del *x)
{
    int64_t v;
    return sk_idmap_get(&d->index, x->id, &v) && v == x - d->v + 1;
}

void ss_dels_clear(struct dels *d)
{
    d->n = 0;
    sk_idmap_clear(&d->index);
}

void ss_dels_free(struct dels *d)
{
    free(d->v);
    sk_idmap_free(&d->index);
    memset(d, 0, sizeof(*d));
}

void ss_pend_add(struct ss_source *src, int type, const char *id, int64_t val, bool bad)
{
    struct sk_idkey k;
    ss_pend_add_key(src, type, sk_idkey_parse(id, &k) ? &k : NULL, val, bad);
}

void ss_pend_add_key(struct ss_source *src, int type, const struct sk_idkey *id, int64_t val,
                     bool bad)
{
    if (src->n_pend == src->cap_pend) {
        src->cap_pend = src->cap_pend ? src->cap_pend * 2 : 256;
        src->pend = sk_realloc(src->pend, src->cap_pend * sizeof(*src->pend));
    }
    struct pending *p = &src->pend[src->n_pend++];
    p->type = type;
    p->keyed = id != NULL;
    p->id = id ? *id : (struct sk_idkey){0, 0};
    p->val = val;
    p->bad = bad;
    if (id)
        sk_idmap_put_key(&src->pend_index, id, val);
}

void ss_pend_clear(struct ss_source *src)
{
    src->n_pend = 0;
    sk_idmap_clear(&src->pend_index);
}

void ss_pend_truncate(struct ss_source *src, size_t n)
{
    if (n >= src->n_pend)
        return;
    /* the index again from what stays: a later value of an id may have
     * replaced the one an earlier batch of the chain put there */
    sk_idmap_clear(&src->pend_index);
    src->n_pend = n;
    for (size_t i = 0; i < n; i++)
        if (src->pend[i].keyed)
            sk_idmap_put_key(&src->pend_index, &src->pend[i].id, src->pend[i].val);
}

size_t ss_dels_count(const struct dels *d)
{
    size_t n = 0;
    for (size_t i = 0; i < d->n; i++)
        if (ss_dels_live(d, &d->v[i]))
            n++;
    return n;
}

static bool dels_has(const struct dels *d, const char *id)
{
    int64_t v;
    return sk_idmap_get(&d->index, id, &v) && v;
}

static void dels_take_out(struct dels *d, const char *id)
{
    if (dels_has(d, id))
        sk_idmap_put(&d->index, id, 0);
}

char *ss_held_json(const struct cstate *st)
{
    cJSON *o = cJSON_CreateObject();
    for (size_t k = 0; k < st->held.n; k++) {
        const struct del *x = &st->held.v[k];
        if (!ss_dels_live(&st->held, x))
            continue;
        const char *name = sk_entities[x->type]->name;
        cJSON *ids = cJSON_GetObjectItemCaseSensitive(o, name);
        if (!ids)
            cJSON_AddItemToObject(o, name, ids = cJSON_CreateArray());
        cJSON_AddItemToArray(ids, cJSON_CreateString(x->id));
    }
    char *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return json;
}

/* Whether id was read live in the run under way, or in the batch under way. */
static bool read_again(struct ss_source *src, const char *id)
{
    int64_t v;
    return sk_idset_has(&src->run_seen, id) ||
           (sk_idmap_get(&src->pend_index, id, &v) && v != DELETED_MARK);
}

/*
 * The run's end settles the delete guard's sets: an id read again at the
 * server is no deletion to hold any more, and no longer rejected or
 * released (its next disappearance is a new deletion). A released id is
 * kept while the deletedEntities query can still list it.
 */
static void settle_sets(struct ss_source *src, struct cstate *st)
{
    struct dels *sets[] = {&st->held, &st->released, &st->rejected};
    for (size_t s = 0; s < 3; s++)
        for (size_t k = 0; k < sets[s]->n; k++)
            if (read_again(src, sets[s]->v[k].id))
                dels_take_out(sets[s], sets[s]->v[k].id);
    int64_t horizon =
        st->deleted_missing ? st->run_t0 : st->deleted_t0_us - src->conf->overlap_ms * 1000;
    for (size_t k = 0; k < st->released.n; k++)
        if (st->released.v[k].at_us < horizon)
            dels_take_out(&st->released, st->released.v[k].id);
}

static void count_live(void *ctx, const char *id)
{
    (void)id;
    (*(int64_t *)ctx)++;
}

struct recon {
    struct ss_source *src;
    int type;
    bool windowed;
    int64_t lo, hi; /* the listing's startTime window, when windowed */
    int64_t live;
    size_t absent, outside;
};

static void recon_id(void *ctx, const char *id)
{
    struct recon *r = ctx;
    struct ss_type *t = &r->src->types[r->type];
    r->live++;
    if (sk_idset_has(&t->listed, id))
        return;
    int64_t start;
    if (r->windowed && !(sk_idmap_get(&t->start, id, &start) && start >= r->lo && start <= r->hi)) {
        /* Left the window (or not known to have been in it): the listing
         * could not show it, so its absence says nothing. */
        r->outside++;
        return;
    }
    ss_dels_add(&r->src->run_dels, r->type, id);
    r->absent++;
}

int ss_reconcile(struct ss_source *src, const struct cstate *st, int i, struct sk_error *err)
{
    struct ss_type *t = &src->types[i];
    struct recon r = {.src = src, .type = i, .windowed = ss_windowed(src, i)};
    if (r.windowed)
        ss_window(src, st, &r.lo, &r.hi);
    if (sk_source_live_ids(src->self, t->e, recon_id, &r, err))
        return -1;
    t->live_count = r.live;
    t->live_run = src->acc_run;
    char outside[64] = "";
    if (r.windowed)
        snprintf(outside, sizeof(outside), ", %zu outside the window kept", r.outside);
    sk_info(src->component,
            "reconciliation of %s: %zu listed, %" PRId64 " live in Kafka, %zu gone%s",
            t->e->collection, sk_idset_count(&t->listed), r.live, r.absent, outside);
    return 0;
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
int ss_finish_run(struct ss_source *src, struct cstate *st, struct sk_batch *out,
                  struct sk_error *err)
{
    size_t per_type[SK_ENTITY_COUNT] = {0}, total = 0;
    struct dels *d = &src->run_dels;
    for (size_t k = 0; k < d->n; k++) {
        struct del *x = &d->v[k];
        int64_t prev;
        if (sk_idset_has(&src->run_seen, x->id) ||
            (sk_idmap_get(&src->types[x->type].seen, x->id, &prev) && prev == DELETED_MARK) ||
            (sk_idmap_get(&src->pend_index, x->id, &prev) && prev == DELETED_MARK) ||
            dels_has(&st->released, x->id) || dels_has(&st->rejected, x->id) ||
            dels_has(&st->held, x->id)) {
            /* re-seen, its tombstone is stored already (also before a
             * restart: released), the operator kept it (rejected), or it
             * is held already */
            sk_idmap_put(&d->index, x->id, 0);
            continue;
        }
        per_type[x->type]++;
        total++;
    }
    size_t n_held = ss_dels_count(&st->held);
    bool hold = n_held > 0;
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
            if (ss_dels_live(d, &d->v[k]))
                ss_dels_add(&st->held, d->v[k].type, d->v[k].id);
        sk_warn(src->component,
                "delete guard: holding %zu deletion(s) (%s); list them with `skolsync release "
                "%s --list`, release with `skolsync release %s` or POST "
                "/api/v1/connectors/%s/release",
                ss_dels_count(&st->held), why[0] ? why : "deletions already held", src->self->name,
                src->self->name, src->self->name);
    } else if (total) {
        for (size_t k = 0; k < d->n; k++) {
            struct del *x = &d->v[k];
            if (!ss_dels_live(d, x))
                continue;
            sk_batch_add(out, src->types[x->type].e, x->id, NULL, 0, now);
            ss_pend_add(src, x->type, x->id, DELETED_MARK, false);
        }
        sk_info(src->component, "%zu deletion(s) published", total);
    }
    if (st->run_deletes && !st->deleted_missing)
        st->deleted_t0_us = st->run_t0; /* persisted with the run's last batch only */
    settle_sets(src, st);
    st->run_active = false;
    ss_chain_reset(st);
    return 0;
}

/*
 * An operator's request: the held deletions it selects are published as
 * tombstones and remembered as released, or forgotten and remembered as
 * rejected (the entity stays). A held id read again in the meantime is no
 * deletion any more: it leaves the held set, nothing is published for it.
 */
void ss_apply_release(struct ss_source *src, struct cstate *st, const struct sk_release *r,
                      struct sk_batch *out)
{
    int64_t now = sk_now_us();
    size_t n = 0, live = 0;
    for (size_t k = 0; k < st->held.n; k++) {
        const struct del *x = &st->held.v[k];
        const struct sk_entity *e = src->types[x->type].e;
        if (!ss_dels_live(&st->held, x) || !sk_release_selects(r, e, x->id))
            continue;
        dels_take_out(&st->held, x->id);
        if (read_again(src, x->id)) {
            live++;
            continue;
        }
        ss_dels_add(r->reject ? &st->rejected : &st->released, x->type, x->id)->at_us = now;
        if (!r->reject) {
            sk_batch_add(out, e, x->id, NULL, 0, now);
            ss_pend_add(src, x->type, x->id, DELETED_MARK, false);
        }
        n++;
    }
    sk_warn(src->component, "%s %zu held deletion(s)%s; %zu held still",
            r->reject ? "rejected (entities kept)" : "publishing", n,
            live ? " (some were read again at the server and are not deleted)" : "",
            ss_dels_count(&st->held));
}
