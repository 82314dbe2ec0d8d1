/* connector.c: the data helpers of the connector interface (connector.h): the
 * record batch a source hands to its driver, offset lists, and the reports of
 * connection checks. */
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "connector.h"
#include "model.h"
#include "util.h"

struct sk_record *sk_batch_add(struct sk_batch *b, const struct sk_entity *entity, const char *key,
                               uint8_t *value, size_t value_len, int64_t observed_us)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 256;
        b->recs = sk_realloc(b->recs, b->cap * sizeof(*b->recs));
    }
    struct sk_record *r = &b->recs[b->n++];
    memset(r, 0, sizeof(*r));
    r->entity = entity;
    if (key)
        snprintf(r->key, sizeof(r->key), "%s", key);
    r->value = value;
    r->value_len = value ? value_len : 0;
    r->observed_us = observed_us;
    r->partition = -1;
    r->offset = -1;
    return r;
}

void sk_batch_add_bad(struct sk_batch *b, const struct sk_entity *entity, const char *key,
                      uint8_t *raw, size_t raw_len, const char *where, const struct sk_error *err)
{
    if (b->n_bad == b->cap_bad) {
        b->cap_bad = b->cap_bad ? b->cap_bad * 2 : 16;
        b->bad = sk_realloc(b->bad, b->cap_bad * sizeof(*b->bad));
    }
    struct sk_bad_input *x = &b->bad[b->n_bad++];
    memset(x, 0, sizeof(*x));
    x->entity = entity;
    x->key = key ? sk_strdup(key) : NULL;
    x->raw = raw;
    x->raw_len = raw_len;
    x->where = sk_strdup(where ? where : "");
    if (err)
        x->err = *err;
}

void sk_batch_set_cursor(struct sk_batch *b, uint8_t *data, size_t len)
{
    free(b->cursor.data);
    b->cursor.data = data;
    b->cursor.len = len;
    b->has_cursor = true;
}

void sk_batch_reset(struct sk_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->recs[i].value);
    for (size_t i = 0; i < b->n_bad; i++) {
        free(b->bad[i].key);
        free(b->bad[i].raw);
        free(b->bad[i].where);
    }
    free(b->cursor.data);
    b->cursor.data = NULL;
    b->cursor.len = 0;
    b->n = b->n_bad = 0;
    b->has_cursor = false;
    b->more = false;
    b->progress_done = b->progress_total = 0;
    b->snapshot_begin = b->snapshot_end = 0;
    memset(b->snapshot_window, 0, sizeof(b->snapshot_window));
}

void sk_batch_free(struct sk_batch *b)
{
    sk_batch_reset(b);
    free(b->recs);
    free(b->bad);
    memset(b, 0, sizeof(*b));
}

void sk_offsets_add(struct sk_offsets *o, const char *topic, int32_t partition, int64_t next)
{
    for (size_t i = 0; i < o->n; i++) {
        if (o->v[i].partition == partition && strcmp(o->v[i].topic, topic) == 0) {
            if (next > o->v[i].next_offset)
                o->v[i].next_offset = next;
            return;
        }
    }
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 16;
        o->v = sk_realloc(o->v, o->cap * sizeof(*o->v));
    }
    o->v[o->n].topic = sk_strdup(topic);
    o->v[o->n].partition = partition;
    o->v[o->n].next_offset = next;
    o->n++;
}

void sk_offsets_of_batch(struct sk_offsets *o, const struct sk_record *recs, size_t n)
{
    for (size_t i = 0; i < o->n; i++)
        free(o->v[i].topic);
    o->n = 0;
    for (size_t i = 0; i < n; i++)
        if (recs[i].topic && recs[i].offset >= 0)
            sk_offsets_add(o, recs[i].topic, recs[i].partition, recs[i].offset + 1);
}

void sk_offsets_free(struct sk_offsets *o)
{
    for (size_t i = 0; i < o->n; i++)
        free(o->v[i].topic);
    free(o->v);
    memset(o, 0, sizeof(*o));
}

static void probe_report(struct sk_probe *p, bool ok, const char *what, const char *fix,
                         const char *fmt, va_list ap)
{
    char detail[768];
    vsnprintf(detail, sizeof(detail), fmt, ap);
    if (p->report)
        p->report(p->ctx, p, ok, what, detail, fix);
}

void sk_probe_ok(struct sk_probe *p, const char *what, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    probe_report(p, true, what, NULL, fmt, ap);
    va_end(ap);
}

void sk_probe_fail(struct sk_probe *p, const char *what, const char *fix, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    probe_report(p, false, what, fix, fmt, ap);
    va_end(ap);
}

/* ---- release requests ------------------------------------------------------ */

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

bool sk_release_selects(const struct sk_release *r, const struct sk_entity *e, const char *id)
{
    int i = sk_entity_index(e);
    if (r->types && (i < 0 || !(r->types & (1u << i))))
        return false;
    return !r->n_ids || bsearch(id, r->ids, r->n_ids, sizeof(*r->ids), cmp_id) != NULL;
}

void sk_release_free(struct sk_release *r)
{
    if (!r)
        return;
    free(r->ids);
    free(r);
}
