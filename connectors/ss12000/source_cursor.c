/*
 * source_cursor.c: the ss12000-source's cursor (skolsync.v1.Ss12000Cursor,
 * ss12000_source.proto) packed from and unpacked into struct cstate.
 *
 * Must never: accept a cursor it cannot read as an empty one (that would
 * start a full sync and lose the watermarks silently): it is FATAL.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "connector.h"
#include "log.h"
#include "model.h"
#include "source.h"
#include "source_internal.h"
#include "util.h"
#include "ss12000_source.pb-c.h"

void ss_text_copy(char dst[TEXT_MAX], const char *src)
{
    size_t n = strlen(src);
    if (n >= TEXT_MAX)
        n = TEXT_MAX - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* A stored timestamp: its µs and the text the server wrote (kept to echo its offset). */
static void load_stamp(bool has, int64_t us, const char *text, bool *dst_has, int64_t *dst_us,
                       char dst_text[TEXT_MAX])
{
    *dst_has = has;
    *dst_us = us;
    ss_text_copy(dst_text, text ? text : "");
}

/* ---- cursor ---------------------------------------------------------------- */

/* A stored set of deletions into d (entries of unknown types are dropped). */
static void load_dels(Skolsync__V1__Ss12000Cursor__Deletion **v, size_t n, struct dels *d)
{
    for (size_t k = 0; k < n; k++) {
        const struct sk_entity *e = v[k]->entity ? sk_entity_by_name(v[k]->entity) : NULL;
        char id[37];
        if (!e || !v[k]->id || sk_uuid_normalize(v[k]->id, id) != 0)
            continue;
        ss_dels_add(d, sk_entity_index(e), id)->at_us = v[k]->at_us;
    }
}

/* d's live entries as messages (*msgs and *ptrs malloc'ed, the caller frees both). */
static size_t pack_dels(const struct dels *d, Skolsync__V1__Ss12000Cursor__Deletion **msgs,
                        Skolsync__V1__Ss12000Cursor__Deletion ***ptrs)
{
    *msgs = sk_calloc(d->n + 1, sizeof(**msgs));
    *ptrs = sk_calloc(d->n + 1, sizeof(**ptrs));
    size_t n = 0;
    for (size_t k = 0; k < d->n; k++) {
        const struct del *x = &d->v[k];
        if (!ss_dels_live(d, x))
            continue;
        Skolsync__V1__Ss12000Cursor__Deletion *m = &(*msgs)[n];
        skolsync__v1__ss12000_cursor__deletion__init(m);
        m->entity = (char *)sk_entities[x->type]->name;
        m->id = (char *)x->id;
        m->has_at_us = x->at_us != 0;
        m->at_us = x->at_us;
        (*ptrs)[n++] = m;
    }
    return n;
}

void ss_cursor_free(struct cstate *st)
{
    free(st->page_token);
    st->page_token = NULL;
    ss_dels_free(&st->held);
    ss_dels_free(&st->released);
    ss_dels_free(&st->rejected);
}

int ss_cursor_load(const struct sk_cursor *cursor, struct cstate *st, struct sk_error *err)
{
    memset(st, 0, sizeof(*st));
    if (!cursor || !cursor->data || !cursor->len)
        return 0;
    Skolsync__V1__Ss12000Cursor *c =
        skolsync__v1__ss12000_cursor__unpack(NULL, cursor->len, cursor->data);
    if (!c)
        return sk_error_set(err, SK_ERR_FATAL,
                            "the stored cursor is not a skolsync.v1.Ss12000Cursor (%zu bytes); "
                            "reset the cursor",
                            cursor->len);
    for (size_t k = 0; k < c->n_types; k++) {
        const Skolsync__V1__Ss12000Cursor__TypeState *ts = c->types[k];
        const struct sk_entity *e = ts->entity ? sk_entity_by_name(ts->entity) : NULL;
        if (!e)
            continue;
        struct tstate *t = &st->t[sk_entity_index(e)];
        load_stamp(ts->has_modified_us, ts->modified_us, ts->modified_text, &t->has_mod, &t->mod_us,
                   t->mod_text);
        load_stamp(ts->has_created_us, ts->created_us, ts->created_text, &t->has_cre, &t->cre_us,
                   t->cre_text);
        t->full_done = ts->full_done;
        t->last_full_us = ts->last_full_us;
        t->missing = ts->missing;
        t->window_end_us = ts->window_end_us;
    }
    load_dels(c->held, c->n_held, &st->held);
    load_dels(c->released, c->n_released, &st->released);
    load_dels(c->rejected, c->n_rejected, &st->rejected);
    st->seq = c->seq;
    st->deleted_t0_us = c->deleted_t0_us;
    st->deleted_missing = c->deleted_missing;
    if (c->run) {
        const Skolsync__V1__Ss12000Cursor__Run *r = c->run;
        st->run_active = true;
        st->run_t0 = r->t0_us;
        for (size_t k = 0; k < r->n_types && st->n_run_types < SK_ENTITY_COUNT; k++) {
            const struct sk_entity *e = sk_entity_by_name(r->types[k]);
            if (e)
                st->run_types[st->n_run_types++] = sk_entity_index(e);
        }
        st->run_deletes = r->deletes;
        st->type_index = r->type_index;
        st->step = r->step;
        st->page_token = r->page_token && *r->page_token ? sk_strdup(r->page_token) : NULL;
        load_stamp(r->has_chain_modified_us, r->chain_modified_us, r->chain_modified_text,
                   &st->has_chain_mod, &st->chain_mod_us, st->chain_mod_text);
        load_stamp(r->has_chain_created_us, r->chain_created_us, r->chain_created_text,
                   &st->has_chain_cre, &st->chain_cre_us, st->chain_cre_text);
        st->done = r->done;
        if (st->type_index < 0 || st->type_index > st->n_run_types || st->step < STEP_FULL ||
            st->step > STEP_WINDOW)
            st->run_active = false; /* unreadable run: start a new one */
    }
    skolsync__v1__ss12000_cursor__free_unpacked(c, NULL);
    return 0;
}

/* Packs st into a new malloc'ed buffer. */
uint8_t *ss_cursor_pack(const struct cstate *st, size_t *len)
{
    Skolsync__V1__Ss12000Cursor c = SKOLSYNC__V1__SS12000_CURSOR__INIT;
    Skolsync__V1__Ss12000Cursor__TypeState ts[SK_ENTITY_COUNT];
    Skolsync__V1__Ss12000Cursor__TypeState *tsp[SK_ENTITY_COUNT];
    for (int i = 0; i < SK_ENTITY_COUNT; i++) {
        const struct tstate *t = &st->t[i];
        if (!t->has_mod && !t->has_cre && !t->full_done && !t->last_full_us && !t->missing &&
            !t->window_end_us)
            continue;
        Skolsync__V1__Ss12000Cursor__TypeState *p = &ts[c.n_types];
        skolsync__v1__ss12000_cursor__type_state__init(p);
        p->entity = (char *)sk_entities[i]->name;
        if (t->has_mod) {
            p->modified_text = (char *)t->mod_text;
            p->has_modified_us = true;
            p->modified_us = t->mod_us;
        }
        if (t->has_cre) {
            p->created_text = (char *)t->cre_text;
            p->has_created_us = true;
            p->created_us = t->cre_us;
        }
        p->has_full_done = true;
        p->full_done = t->full_done;
        p->has_last_full_us = t->last_full_us != 0;
        p->last_full_us = t->last_full_us;
        p->has_missing = t->missing;
        p->missing = t->missing;
        p->has_window_end_us = t->window_end_us != 0;
        p->window_end_us = t->window_end_us;
        tsp[c.n_types++] = p;
    }
    c.types = tsp;
    c.has_seq = true;
    c.seq = st->seq;
    c.has_deleted_t0_us = st->deleted_t0_us != 0;
    c.deleted_t0_us = st->deleted_t0_us;
    c.has_deleted_missing = st->deleted_missing;
    c.deleted_missing = st->deleted_missing;
    Skolsync__V1__Ss12000Cursor__Run run = SKOLSYNC__V1__SS12000_CURSOR__RUN__INIT;
    char *names[SK_ENTITY_COUNT];
    if (st->run_active) {
        run.has_t0_us = true;
        run.t0_us = st->run_t0;
        for (int k = 0; k < st->n_run_types; k++)
            names[k] = (char *)sk_entities[st->run_types[k]]->name;
        run.types = names;
        run.n_types = (size_t)st->n_run_types;
        run.has_deletes = true;
        run.deletes = st->run_deletes;
        run.has_type_index = true;
        run.type_index = st->type_index;
        run.has_step = true;
        run.step = st->step;
        run.page_token = st->page_token;
        if (st->has_chain_mod) {
            run.chain_modified_text = (char *)st->chain_mod_text;
            run.has_chain_modified_us = true;
            run.chain_modified_us = st->chain_mod_us;
        }
        if (st->has_chain_cre) {
            run.chain_created_text = (char *)st->chain_cre_text;
            run.has_chain_created_us = true;
            run.chain_created_us = st->chain_cre_us;
        }
        run.has_done = true;
        run.done = st->done;
        c.run = &run;
    }
    Skolsync__V1__Ss12000Cursor__Deletion *msgs[3];
    c.n_held = pack_dels(&st->held, &msgs[0], &c.held);
    c.n_released = pack_dels(&st->released, &msgs[1], &c.released);
    c.n_rejected = pack_dels(&st->rejected, &msgs[2], &c.rejected);
    *len = skolsync__v1__ss12000_cursor__get_packed_size(&c);
    uint8_t *data = sk_malloc(*len ? *len : 1);
    skolsync__v1__ss12000_cursor__pack(&c, data);
    for (int k = 0; k < 3; k++)
        free(msgs[k]);
    free(c.held);
    free(c.released);
    free(c.rejected);
    return data;
}
