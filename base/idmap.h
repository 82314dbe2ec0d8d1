/*
 * idmap.h: a compact map from a UUID (its 36-character text) to an int64:
 * open addressing, linear probing, 24 bytes a slot (idmap.c), e.g. the
 * ss12000-source's dedupe (id -> meta.modified µs); and sk_idset, a set of
 * UUIDs appended to and sorted when first asked (the ids a run or a listing
 * read, the keys a snapshot contained).
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
/* Moves the entries into a table 70 % full if the map is under 60 % (a
 * doubling leaves it 38-75 %): for a map that grew in a bulk load and stays.
 * Values and lookups are unchanged; the next put past 75 % doubles again. */
void sk_idmap_compact(struct sk_idmap *m);
size_t sk_idmap_bytes(const struct sk_idmap *m);
/* Calls fn for every entry (the id as lowercase UUID text), in no order. */
void sk_idmap_each(const struct sk_idmap *m, void (*fn)(void *ctx, const char *id, int64_t val),
                   void *ctx);

/*
 * A set of UUIDs filled first and asked afterwards: the ids a source run
 * read (asked for its deletion candidates at the run's end) and the ids of a
 * full listing (asked once per live id by its reconciliation; the first
 * listing is never asked). An add writes 16 bytes at the end of an array (no
 * hash, no cache miss, no rehash: map puts were ~13 % of a source's own
 * CPU); the first query after adds sorts it (and drops repeats), then each
 * is a binary search. 16 bytes an id.
 */
struct sk_idset {
    struct sk_idkey *v;
    size_t n, cap;
    size_t sorted; /* v[0 .. sorted) is sorted, without repeats */
};

void sk_idset_add_key(struct sk_idset *s, const struct sk_idkey *k);
/* Whether id (UUID text, either case) was added. Sorts first: not const. */
bool sk_idset_has(struct sk_idset *s, const char *id);
bool sk_idset_has_key(struct sk_idset *s, const struct sk_idkey *k);
size_t sk_idset_count(struct sk_idset *s); /* distinct ids (sorts too) */
void sk_idset_clear(struct sk_idset *s);   /* keeps the memory */
void sk_idset_free(struct sk_idset *s);    /* gives it back; the set stays usable */

#endif
