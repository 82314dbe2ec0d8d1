/*
 * idmap.c: a compact map from a UUID to an int64 (open addressing,
 * linear probing, grows at three quarters full, compacted to 70 % when
 * asked). The ss12000-source keeps one per entity type for dedupe (id ->
 * meta.modified µs), and others for the batches in flight, dead-lettered
 * versions and windowed start times. Entries are never removed one by one
 * (a deleted id keeps a marker value), so probing needs no tombstones.
 *
 * A slot holds the UUID's 16 bytes and the value: 24 bytes, 32-64 bytes per
 * id with the load factor (a 37-byte text key grown at half full cost 90-180;
 * bench/analysis.md §4), 34 once compacted. A capacity need not be a power
 * of two: a hash picks its slot by multiply-shift. The all-zero slot means
 * "empty", so the nil UUID, a valid id, lives beside the table. Keys are the 36-character UUIDs the
 * sources produce (sk_uuid_normalize); anything else is never stored and
 * never found.
 *
 * sk_idset (at the end) is the same key in an array that is only appended
 * to and sorted when first asked: for sets filled first and asked later.
 */
#include <stdlib.h>
#include <string.h>

#include "idmap.h"
#include "util.h"

static int hex_value(unsigned char c)
{
    if ((unsigned)(c - '0') < 10u)
        return c - '0';
    c |= 0x20; /* lowercase */
    if ((unsigned)(c - 'a') < 6u)
        return c - 'a' + 10;
    return -1;
}

/* n hex digits at s into *w; false at the first non-digit. */
static bool hex_run(const char *s, int n, uint64_t *w)
{
    uint64_t v = *w;
    for (int i = 0; i < n; i++) {
        int d = hex_value((unsigned char)s[i]);
        if (d < 0)
            return false;
        v = v << 4 | (uint64_t)d;
    }
    *w = v;
    return true;
}

bool sk_idkey_parse(const char *id, struct sk_idkey *out)
{
    /* "8-4-4-4-12": hi = the first 16 digits, lo = the last 16 */
    uint64_t hi = 0, lo = 0;
    if (!hex_run(id, 8, &hi) || id[8] != '-' || !hex_run(id + 9, 4, &hi) || id[13] != '-' ||
        !hex_run(id + 14, 4, &hi) || id[18] != '-' || !hex_run(id + 19, 4, &lo) ||
        id[23] != '-' || !hex_run(id + 24, 12, &lo) || id[36] != '\0')
        return false;
    out->hi = hi;
    out->lo = lo;
    return true;
}

static bool key_empty(const struct sk_idkey *k)
{
    return k->hi == 0 && k->lo == 0;
}

/* splitmix64's finaliser: v1 (time-based) UUIDs vary in few bits. */
static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static size_t slot_of(const struct sk_idmap *m, const struct sk_idkey *k)
{
    /* the hash's high bits scaled to [0, cap) (Lemire's multiply-shift) */
    size_t i = (size_t)(((unsigned __int128)mix(k->hi ^ mix(k->lo)) * m->cap) >> 64);
    while (!key_empty(&m->slots[i].key) &&
           (m->slots[i].key.hi != k->hi || m->slots[i].key.lo != k->lo))
        if (++i == m->cap)
            i = 0;
    return i;
}

static void put_key(struct sk_idmap *m, const struct sk_idkey *k, int64_t val);

/* Moves every entry into a table of cap slots (cap > the entries). */
static void rehash(struct sk_idmap *m, size_t cap)
{
    struct sk_idmap to = {
        .cap = cap, .has_nil = m->has_nil, .nil_val = m->nil_val, .n = m->has_nil};
    to.slots = sk_calloc(cap, sizeof(*to.slots));
    for (size_t i = 0; i < m->cap; i++)
        if (!key_empty(&m->slots[i].key))
            put_key(&to, &m->slots[i].key, m->slots[i].val);
    free(m->slots);
    *m = to;
}

static void put_key(struct sk_idmap *m, const struct sk_idkey *k, int64_t val)
{
    if ((m->n + 1) * 4 > m->cap * 3)
        rehash(m, m->cap ? m->cap * 2 : 256);
    size_t i = slot_of(m, k);
    if (key_empty(&m->slots[i].key)) {
        m->slots[i].key = *k;
        m->n++;
    }
    m->slots[i].val = val;
}

void sk_idmap_put_key(struct sk_idmap *m, const struct sk_idkey *k, int64_t val)
{
    if (key_empty(k)) {
        m->n += !m->has_nil;
        m->has_nil = true;
        m->nil_val = val;
        return;
    }
    put_key(m, k, val);
}

void sk_idmap_put(struct sk_idmap *m, const char *id, int64_t val)
{
    struct sk_idkey k;
    if (sk_idkey_parse(id, &k))
        sk_idmap_put_key(m, &k, val);
}

bool sk_idmap_get_key(const struct sk_idmap *m, const struct sk_idkey *k, int64_t *val)
{
    if (key_empty(k)) {
        if (m->has_nil && val)
            *val = m->nil_val;
        return m->has_nil;
    }
    if (m->n == (size_t)m->has_nil) /* no slot in use (none allocated, or cleared) */
        return false;
    size_t i = slot_of(m, k);
    if (key_empty(&m->slots[i].key))
        return false;
    if (val)
        *val = m->slots[i].val;
    return true;
}

bool sk_idmap_get(const struct sk_idmap *m, const char *id, int64_t *val)
{
    struct sk_idkey k;
    return sk_idkey_parse(id, &k) && sk_idmap_get_key(m, &k, val);
}

bool sk_idmap_has(const struct sk_idmap *m, const char *id)
{
    return sk_idmap_get(m, id, NULL);
}

void sk_idmap_clear(struct sk_idmap *m)
{
    if (m->cap)
        memset(m->slots, 0, m->cap * sizeof(*m->slots));
    m->n = 0;
    m->has_nil = false;
}

void sk_idmap_free(struct sk_idmap *m)
{
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

void sk_idmap_compact(struct sk_idmap *m)
{
    /* 70 % full leaves 5 % to grow before the next doubling; the lookups of
     * a full listing probe ~2 slots then (linear probing: (1 + 1/(1 - a)) / 2) */
    size_t cap = m->n * 10 / 7 + 1;
    if (m->cap > 256 && cap < m->cap * 6 / 7)
        rehash(m, cap < 256 ? 256 : cap);
}

size_t sk_idmap_bytes(const struct sk_idmap *m)
{
    return m->cap * sizeof(*m->slots);
}

/* The UUID text of k: lowercase, 8-4-4-4-12. */
static void format_id(const struct sk_idkey *k, char out[37])
{
    static const char hex[] = "0123456789abcdef";
    int digit = 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            out[i] = '-';
            continue;
        }
        uint64_t w = digit < 16 ? k->hi : k->lo;
        out[i] = hex[(w >> (60 - 4 * (digit % 16))) & 0xf];
        digit++;
    }
    out[36] = '\0';
}

void sk_idmap_each(const struct sk_idmap *m, void (*fn)(void *ctx, const char *id, int64_t val),
                   void *ctx)
{
    char id[37];
    if (m->has_nil) {
        struct sk_idkey nil = {0, 0};
        format_id(&nil, id);
        fn(ctx, id, m->nil_val);
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (key_empty(&m->slots[i].key))
            continue;
        format_id(&m->slots[i].key, id);
        fn(ctx, id, m->slots[i].val);
    }
}

/* ---- sk_idset: append, sort when asked ----------------------------------------- */

void sk_idset_add_key(struct sk_idset *s, const struct sk_idkey *k)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->v = sk_realloc(s->v, s->cap * sizeof(*s->v));
    }
    s->v[s->n++] = *k;
}

static int key_cmp(const void *a, const void *b)
{
    const struct sk_idkey *x = a, *y = b;
    if (x->hi != y->hi)
        return x->hi < y->hi ? -1 : 1;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Sorts the whole array (the sorted part and what was added since) and drops repeats. */
static void idset_settle(struct sk_idset *s)
{
    if (s->sorted == s->n)
        return;
    qsort(s->v, s->n, sizeof(*s->v), key_cmp);
    size_t w = 0;
    for (size_t r = 0; r < s->n; r++)
        if (w == 0 || key_cmp(&s->v[w - 1], &s->v[r]) != 0)
            s->v[w++] = s->v[r];
    s->n = s->sorted = w;
}

bool sk_idset_has_key(struct sk_idset *s, const struct sk_idkey *k)
{
    idset_settle(s);
    return s->n && bsearch(k, s->v, s->n, sizeof(*s->v), key_cmp) != NULL;
}

bool sk_idset_has(struct sk_idset *s, const char *id)
{
    struct sk_idkey k;
    return sk_idkey_parse(id, &k) && sk_idset_has_key(s, &k);
}

size_t sk_idset_count(struct sk_idset *s)
{
    idset_settle(s);
    return s->n;
}

void sk_idset_clear(struct sk_idset *s)
{
    s->n = s->sorted = 0;
}

void sk_idset_free(struct sk_idset *s)
{
    free(s->v);
    memset(s, 0, sizeof(*s));
}
