/*
 * idmap.h: a compact map from a UUID (its 36-character text) to an int64:
 * open addressing, linear probing, 24 bytes a slot (idmap.c). Used as a map
 * (the ss12000-source's dedupe: id -> meta.modified µs) and as a set (the
 * ids a listing or a snapshot contained).
 */
#ifndef SK_IDMAP_H
#define SK_IDMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sk_idkey {
    uint64_t hi, lo; /* the UUID's 16 bytes; all zero marks an empty slot */
};

struct sk_idmap {
    struct {
        struct sk_idkey key;
        int64_t val;
    } * slots;
    size_t cap, n;
    bool has_nil; /* the nil UUID (its key would look empty) */
    int64_t nil_val;
};

/* The key of a UUID text (8-4-4-4-12 hex digits, either case); false if id
 * is not one. A caller that looks one id up in several maps parses it once
 * and uses the _key calls. */
bool sk_idkey_parse(const char *id, struct sk_idkey *k);
void sk_idmap_put_key(struct sk_idmap *m, const struct sk_idkey *k, int64_t val);
bool sk_idmap_get_key(const struct sk_idmap *m, const struct sk_idkey *k, int64_t *val);

/* Insert or overwrite. id must be a UUID (as sk_uuid_normalize writes it);
 * anything else is not stored. */
void sk_idmap_put(struct sk_idmap *m, const char *id, int64_t val);
/* true and *val if present. */
bool sk_idmap_get(const struct sk_idmap *m, const char *id, int64_t *val);
bool sk_idmap_has(const struct sk_idmap *m, const char *id);
void sk_idmap_clear(struct sk_idmap *m); /* keeps the memory */
void sk_idmap_free(struct sk_idmap *m);  /* gives it back; the map stays usable */
size_t sk_idmap_bytes(const struct sk_idmap *m);
/* Calls fn for every entry (the id as lowercase UUID text), in no order. */
void sk_idmap_each(const struct sk_idmap *m, void (*fn)(void *ctx, const char *id, int64_t val),
                   void *ctx);

#endif
