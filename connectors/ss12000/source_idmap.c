/*
 * source_idmap.c: a compact map from a 36-character lowercase UUID to an
 * int64 (open addressing, linear probing, grows at half full). The source
 * keeps one per entity type for dedupe (id -> meta.modified µs) and uses
 * others as sets. Entries are never removed one by one (a deleted id keeps a
 * marker value), so probing needs no tombstones.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source.h"
#include "util.h"

static size_t slot_of(const struct ss_idmap *m, const char *id)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    size_t i = (size_t)h & (m->cap - 1);
    while (m->keys[i][0] && strcmp(m->keys[i], id) != 0)
        i = (i + 1) & (m->cap - 1);
    return i;
}

void ss_idmap_put(struct ss_idmap *m, const char *id, int64_t val)
{
    if ((m->n + 1) * 2 > m->cap) {
        struct ss_idmap big = {.cap = m->cap ? m->cap * 2 : 256};
        big.keys = sk_calloc(big.cap, sizeof(*big.keys));
        big.vals = sk_calloc(big.cap, sizeof(*big.vals));
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i][0])
                ss_idmap_put(&big, m->keys[i], m->vals[i]);
        free(m->keys);
        free(m->vals);
        *m = big;
    }
    size_t i = slot_of(m, id);
    if (!m->keys[i][0]) {
        snprintf(m->keys[i], sizeof(m->keys[i]), "%s", id);
        m->n++;
    }
    m->vals[i] = val;
}

bool ss_idmap_get(const struct ss_idmap *m, const char *id, int64_t *val)
{
    if (!m->cap)
        return false;
    size_t i = slot_of(m, id);
    if (!m->keys[i][0])
        return false;
    if (val)
        *val = m->vals[i];
    return true;
}

bool ss_idmap_has(const struct ss_idmap *m, const char *id)
{
    return ss_idmap_get(m, id, NULL);
}

void ss_idmap_clear(struct ss_idmap *m)
{
    if (m->cap)
        memset(m->keys, 0, m->cap * sizeof(*m->keys));
    m->n = 0;
}

void ss_idmap_free(struct ss_idmap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}
