/*
 * codec.c: SS 12000 JSON <-> protobuf messages, driven by protobuf-c's
 * descriptors. One walker serves all 18 entity types and their nested types;
 * there is no per-entity code (docs/architecture.md §9.6).
 *
 * It owns the mapping rules: a JSON key maps to the field of the same name;
 * values that do not fit (wrong JSON type, null, empty arrays, keys the spec
 * lacks) go verbatim into the message's `_unknown` field so that
 * JSON -> protobuf -> JSON is lossless (model.h). It must never interpret
 * field values beyond that: the only value checked is the top-level id.
 *
 * Memory: a message sk_codec_from_json returns is malloc'ed, every string
 * hanging off it too, so protobuf_c_message_free_unpacked(msg, NULL) (the
 * default allocator: free) releases it, whether we built it or protobuf-c
 * unpacked it. The record path (sk_codec_pack_json, sk_codec_encode) builds
 * its message in a per-call arena instead, its strings borrowed from the
 * cJSON tree, and only packs it: one malloc a record (the packed bytes)
 * instead of one per message, string and array (bench/analysis.md §1).
 * cJSON uses its default hooks (malloc/free); skolsync never calls
 * cJSON_InitHooks.
 */
#include "model.h"

#include <math.h> /* isfinite: a macro, no libm */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Field number of `optional string _unknown` in every message (proto/ss12000.proto). */
#define UNKNOWN_FIELD_ID 15000

/* Largest integer a JSON number (IEEE double in cJSON) carries exactly: 2^53. */
#define MAX_EXACT_INT 9007199254740992.0

/*
 * Key aliases: misspellings of earlier spec versions, accepted on input and
 * normalised to the 2.1 spelling on output (the message only has the 2.1
 * field, so the old key is never re-emitted). Looked up only for keys that
 * matched no field, so the common path pays nothing.
 *   titleEngish -> titleEnglish: 2.0.0 spelling in SpecialisationCourseContent
 *   (Syllabus) and Grade_diplomaProject; fixed in 2.1.0 (docs/ss12000-notes.md §1, §4 IST).
 * The other misspellings of docs/ss12000-notes.md §6 (activitites, modifiedEntites,
 * calendareEvents) are not in entity bodies; model.c and the source handle them.
 */
static const struct {
    const char *from, *to;
} key_aliases[] = {
    {"titleEngish", "titleEnglish"},
};

/* ---- field access by descriptor ------------------------------------------ */

/* field_ptr/field_count return pointers into m itself: valid while m lives. */
static void *field_ptr(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    return (char *)m + f->offset;
}

static size_t *field_count(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    return (size_t *)((char *)m + f->quantifier_offset);
}

/* Strings and messages mark presence by a non-NULL pointer, scalars by has_<name>. */
static bool is_pointer_type(ProtobufCType t)
{
    return t == PROTOBUF_C_TYPE_STRING || t == PROTOBUF_C_TYPE_MESSAGE;
}

static bool field_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return *field_count(m, f) > 0;
    if (is_pointer_type(f->type))
        return *(void **)field_ptr(m, f) != NULL;
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL)
        return *(protobuf_c_boolean *)((char *)m + f->quantifier_offset);
    return true;
}

/* Size of one stored value: one element of a repeated field. */
static size_t value_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return sizeof(int32_t);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return sizeof(int64_t);
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    default:
        return sizeof(void *);
    }
}

/* ---- where a message being built lives ------------------------------------- */

/*
 * A bump allocator for one conversion: the first block is the caller's (on
 * its stack), further ones are malloc'ed and freed by arena_free. Nothing in
 * it is freed on its own.
 */
struct arena_chunk {
    struct arena_chunk *next;
    max_align_t data[];
};

struct arena {
    char *p;
    size_t left;
    struct arena_chunk *chunks;
};

#define ARENA_CHUNK 16384

static void *arena_alloc(struct arena *a, size_t n)
{
    n = (n + _Alignof(max_align_t) - 1) & ~(size_t)(_Alignof(max_align_t) - 1);
    if (n > a->left) {
        size_t size = n > ARENA_CHUNK ? n : ARENA_CHUNK;
        struct arena_chunk *c = malloc(sizeof(*c) + size);
        if (!c)
            return NULL;
        c->next = a->chunks;
        a->chunks = c;
        a->p = (char *)c->data;
        a->left = size;
    }
    void *r = a->p;
    a->p += n;
    a->left -= n;
    return memset(r, 0, n);
}

static void arena_free(struct arena *a)
{
    while (a->chunks) {
        struct arena_chunk *c = a->chunks;
        a->chunks = c->next;
        free(c);
    }
}

/*
 * Where message_from_json puts what it builds. arena NULL: malloc, every
 * string copied (a message protobuf_c_message_free_unpacked frees). Else: the
 * arena, strings borrowed from the cJSON tree (the message lives only while
 * the tree does, and is never freed on its own).
 */
struct build {
    struct arena *arena;
};

static void *build_alloc(struct build *b, size_t n)
{
    return b->arena ? arena_alloc(b->arena, n) : calloc(1, n ? n : 1);
}

/* s itself (borrowed) in an arena build, else a malloc'ed copy. NULL on OOM. */
static char *build_str(struct build *b, const char *s)
{
    return b->arena ? (char *)s : strdup(s);
}

/* A copy of s in the build's memory. NULL on OOM. */
static char *build_copy(struct build *b, const char *s)
{
    if (!b->arena)
        return strdup(s);
    size_t n = strlen(s) + 1;
    char *c = arena_alloc(b->arena, n);
    return c ? memcpy(c, s, n) : NULL;
}

/* Undoes a failed build's message (an arena build is freed with its arena). */
static void build_drop(struct build *b, ProtobufCMessage *m)
{
    if (!b->arena && m)
        protobuf_c_message_free_unpacked(m, NULL);
}

/* ---- JSON -> protobuf ------------------------------------------------------- */

static bool is_integral(const cJSON *v, double lo, double hi)
{
    if (!cJSON_IsNumber(v))
        return false;
    double d = v->valuedouble; /* in range, so the cast is defined; NaN fails both tests */
    return d >= lo && d <= hi && (double)(int64_t)d == d;
}

/*
 * Whether JSON value v fits one value of field f. A value that does not fit
 * goes to _unknown instead: integers outside what a double holds exactly,
 * fractions for integer fields, and the types proto/ss12000.proto does not use
 * (enum, bytes) never fit.
 */
static bool value_fits(const ProtobufCFieldDescriptor *f, const cJSON *v)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
        return cJSON_IsString(v);
    case PROTOBUF_C_TYPE_BOOL:
        return cJSON_IsBool(v);
    case PROTOBUF_C_TYPE_MESSAGE:
        return cJSON_IsObject(v);
    case PROTOBUF_C_TYPE_DOUBLE:
    case PROTOBUF_C_TYPE_FLOAT:
        return cJSON_IsNumber(v);
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return is_integral(v, INT32_MIN, INT32_MAX);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return is_integral(v, 0, UINT32_MAX);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return is_integral(v, -MAX_EXACT_INT, MAX_EXACT_INT);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return is_integral(v, 0, MAX_EXACT_INT);
    default:
        return false;
    }
}

static ProtobufCMessage *message_from_json(struct build *b, const ProtobufCMessageDescriptor *desc,
                                           const cJSON *obj);

/* Stores v (which value_fits f) at dst. 0, or -1 on OOM. */
static int value_store(struct build *b, const ProtobufCFieldDescriptor *f, void *dst,
                       const cJSON *v)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
        return (*(char **)dst = build_str(b, v->valuestring)) ? 0 : -1;
    case PROTOBUF_C_TYPE_MESSAGE:
        return (*(ProtobufCMessage **)dst = message_from_json(b, f->descriptor, v)) ? 0 : -1;
    case PROTOBUF_C_TYPE_BOOL:
        *(protobuf_c_boolean *)dst = cJSON_IsTrue(v);
        return 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        *(double *)dst = v->valuedouble;
        return 0;
    case PROTOBUF_C_TYPE_FLOAT:
        *(float *)dst = (float)v->valuedouble;
        return 0;
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        *(int32_t *)dst = (int32_t)v->valuedouble;
        return 0;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        *(uint32_t *)dst = (uint32_t)v->valuedouble;
        return 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        *(int64_t *)dst = (int64_t)v->valuedouble;
        return 0;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        *(uint64_t *)dst = (uint64_t)v->valuedouble;
        return 0;
    default:
        return -1; /* unreachable: value_fits rejected it */
    }
}

/*
 * Sets field f of m from v. Returns 1 if set, 0 if v does not fit (the caller
 * keeps it in _unknown), -1 on OOM. A repeated field takes a non-empty array
 * whose every element fits: an empty array would come back as "absent", and a
 * partly fitting one cannot be split without losing element order.
 */
static int field_set(struct build *b, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                     const cJSON *v)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED) {
        if (!value_fits(f, v))
            return 0;
        if (value_store(b, f, field_ptr(m, f), v) < 0)
            return -1;
        if (!is_pointer_type(f->type))
            *(protobuf_c_boolean *)((char *)m + f->quantifier_offset) = 1;
        return 1;
    }
    if (!cJSON_IsArray(v) || !v->child)
        return 0;
    size_t n = 0;
    for (const cJSON *it = v->child; it; it = it->next, n++)
        if (!value_fits(f, it))
            return 0;
    size_t sz = value_size(f->type);
    char *arr = build_alloc(b, n * sz);
    if (!arr)
        return -1;
    /* Hang the array on the message first so that free_unpacked frees a partial one. */
    *(void **)field_ptr(m, f) = arr;
    size_t *count = field_count(m, f);
    for (const cJSON *it = v->child; it; it = it->next, (*count)++)
        if (value_store(b, f, arr + *count * sz, it) < 0)
            return -1;
    return 1;
}

/* How many fields after the last one matched a key is tried at first (field_for_key). */
#define FIELD_HINT_SPAN 4

/*
 * The field a key maps to: its own name, else an alias's; NULL if none.
 * Static descriptor data. *hint: the index (in desc->fields) after the field
 * the previous key of the same object matched, updated here. Servers write
 * an entity's keys in the spec's order, which proto/ss12000.proto follows,
 * so the field is nearly always the next one or a few further (absent keys
 * are skipped): a compare or two instead of protobuf-c's binary search by
 * name, a strcmp per step (~8 % of a source's own CPU, bench/analysis.md §1).
 */
static const ProtobufCFieldDescriptor *field_for_key(const ProtobufCMessageDescriptor *desc,
                                                     const char *key, unsigned *hint)
{
    for (unsigned i = *hint; i < desc->n_fields && i < *hint + FIELD_HINT_SPAN; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        if (f->name[0] == key[0] && strcmp(f->name, key) == 0) {
            *hint = i + 1;
            return f->id == UNKNOWN_FIELD_ID ? NULL : f;
        }
    }
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(desc, key);
    if (f) {
        *hint = (unsigned)(f - desc->fields) + 1;
        return f->id == UNKNOWN_FIELD_ID ? NULL : f; /* a JSON key "_unknown" is just unknown */
    }
    for (size_t i = 0; i < sizeof(key_aliases) / sizeof(key_aliases[0]); i++)
        if (strcmp(key, key_aliases[i].from) == 0)
            return protobuf_c_message_descriptor_get_field_by_name(desc, key_aliases[i].to);
    return NULL;
}

/* Adds a copy of item (under its key) to *unknown, creating the object. -1 on OOM. */
static int unknown_add(cJSON **unknown, const cJSON *item)
{
    if (!*unknown && !(*unknown = cJSON_CreateObject()))
        return -1;
    cJSON *copy = cJSON_Duplicate(item, true);
    if (!copy)
        return -1;
    if (!cJSON_AddItemToObject(*unknown, item->string, copy)) {
        cJSON_Delete(copy);
        return -1;
    }
    return 0;
}

/*
 * cJSON prints a number with 15 significant digits whenever that reads back
 * within one ulp (cJSON 1.7.15 print_number/compare_double), so 0.1 + 0.2 and
 * 2^53 - 1 come back changed. To stay lossless, every number in a tree we
 * print becomes a raw node holding the shortest text that reads back exactly.
 * Non-finite values stay numbers (cJSON prints null; JSON has no inf/nan).
 * Returns 0, or -1 on OOM (the tree stays valid, partly converted).
 */
static int numbers_exact(cJSON *node)
{
    for (; node; node = node->next) {
        if (node->child && numbers_exact(node->child) < 0)
            return -1;
        if (!cJSON_IsNumber(node) || !isfinite(node->valuedouble))
            continue;
        char buf[32];
        double d = node->valuedouble;
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(buf, sizeof(buf), "%.*g", prec, d);
            if (strtod(buf, NULL) == d)
                break;
        }
        char *raw = cJSON_malloc(strlen(buf) + 1);
        if (!raw)
            return -1;
        memcpy(raw, buf, strlen(buf) + 1);
        node->type = (node->type & ~0xFF) | cJSON_Raw; /* keep cJSON_StringIsConst */
        node->valuestring = raw;
    }
    return 0;
}

/* Stores the collected unknown keys as JSON text in the _unknown field. -1 on OOM. */
static int unknown_store(struct build *b, ProtobufCMessage *m, cJSON *unknown)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(m->descriptor, UNKNOWN_FIELD_ID);
    if (!f) /* a message without _unknown would silently lose data: refuse */
        return -1;
    char *printed = numbers_exact(unknown) < 0 ? NULL : cJSON_PrintUnformatted(unknown);
    if (!printed)
        return -1;
    /* Copied so the message owns plain malloc memory whatever cJSON's hooks are. */
    char *text = build_copy(b, printed);
    cJSON_free(printed);
    if (!text)
        return -1;
    *(char **)field_ptr(m, f) = text;
    return 0;
}

/*
 * JSON object -> new message of type desc; every key is either a set field or
 * an entry of _unknown. A key seen twice keeps its first value in the field
 * and the later ones in _unknown, so even duplicate keys round-trip.
 * Returns the message in b's memory (struct build), or NULL on OOM. Recursion
 * depth is bounded by the proto's nesting (no cycles).
 */
static ProtobufCMessage *message_from_json(struct build *b, const ProtobufCMessageDescriptor *desc,
                                           const cJSON *obj)
{
    ProtobufCMessage *m = build_alloc(b, desc->sizeof_message);
    if (!m)
        return NULL;
    desc->message_init(m);
    cJSON *unknown = NULL;
    unsigned hint = 0;
    for (const cJSON *item = obj->child; item; item = item->next) {
        const ProtobufCFieldDescriptor *f =
            item->string ? field_for_key(desc, item->string, &hint) : NULL;
        int rc = (f && !field_present(m, f)) ? field_set(b, m, f, item) : 0;
        if (rc < 0 || (rc == 0 && unknown_add(&unknown, item) < 0))
            goto fail;
    }
    if (unknown && unknown_store(b, m, unknown) < 0)
        goto fail;
    cJSON_Delete(unknown);
    return m;
fail:
    cJSON_Delete(unknown);
    build_drop(b, m);
    return NULL;
}

/* Address of string field `name` inside m (valid while m lives); NULL if m has no such field. */
static char **string_field(const ProtobufCMessage *m, const char *name)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
    if (!f || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
        return NULL;
    return (char **)field_ptr(m, f);
}

/* meta.modified of m in µs since the epoch, or INT64_MIN if absent or unparseable. */
static int64_t modified_of(const ProtobufCMessage *m)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, "meta");
    int64_t us;
    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE || f->label == PROTOBUF_C_LABEL_REPEATED)
        return INT64_MIN;
    const ProtobufCMessage *meta = *(ProtobufCMessage **)field_ptr(m, f);
    char **modified = meta ? string_field(meta, "modified") : NULL;
    if (!modified || !*modified || sk_time_parse_us(*modified, &us) < 0)
        return INT64_MIN;
    return us;
}

/*
 * The message of entity e from obj, in b's memory, its id checked and lower
 * case (in an arena build the id field points to id_out, so the borrowed
 * tree is never written), its meta.modified in *modified (INT64_MIN if
 * none) and not more than SK_CODEC_AHEAD_MAX_US ahead. NULL with err set.
 */
static ProtobufCMessage *entity_from_json(struct build *b, const struct sk_entity *e,
                                          const cJSON *obj, char id_out[37], int64_t *modified,
                                          struct sk_error *err)
{
    if (!cJSON_IsObject(obj)) {
        sk_error_set(err, SK_ERR_PERMANENT, "%s: JSON value is not an object", e->name);
        return NULL;
    }
    ProtobufCMessage *m = message_from_json(b, e->desc, obj);
    if (!m) {
        /* Out of memory is not the record's fault: do not dead-letter it. */
        sk_error_set(err, SK_ERR_FATAL, "%s: out of memory converting JSON", e->name);
        return NULL;
    }
    /*
     * The id is the record key, so it must be a UUID (docs/ss12000-notes.md §0) in lower case
     * (docs/ss12000-notes.md §7). A non-string id went to _unknown above and is "missing" here.
     */
    char **id = string_field(m, "id");
    if (!id || !*id) {
        sk_error_set(err, SK_ERR_PERMANENT, "%s: missing id (or not a string)", e->name);
        goto fail;
    }
    if (sk_uuid_normalize(*id, id_out) < 0) {
        /* Not the value itself: an id column sometimes holds a civic number
         * or a name, and this message reaches logs and dead-letter headers. */
        sk_error_set(err, SK_ERR_PERMANENT, "%s: id is not a UUID (%zu characters, not shown)",
                     e->name, strlen(*id));
        goto fail;
    }
    if (b->arena)
        *id = id_out;
    else
        memcpy(*id, id_out, 37); /* same length: lower-case in place */
    *modified = modified_of(m);
    if (*modified != INT64_MIN && *modified > sk_now_us() + SK_CODEC_AHEAD_MAX_US) {
        /* The stale-update guard keeps the newest meta.modified: a record
         * dated ahead would win over every later change of the entity, in
         * every target, until its date; and a source's delta watermark would
         * ask for changes after it. */
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(obj, "meta"), "modified");
        sk_error_set(err, SK_ERR_PERMANENT,
                     "%s: meta.modified %.40s lies more than a day ahead of this host's clock",
                     e->name, cJSON_IsString(text) ? text->valuestring : "?");
        goto fail;
    }
    return m;
fail:
    build_drop(b, m);
    return NULL;
}

/* Returned message: malloc'ed, caller frees with protobuf_c_message_free_unpacked(m, NULL). */
ProtobufCMessage *sk_codec_from_json(const struct sk_entity *e, const cJSON *obj, char id_out[37],
                                     struct sk_error *err)
{
    struct build b = {0};
    int64_t modified;
    return entity_from_json(&b, e, obj, id_out, &modified, err);
}

/* *out: malloc'ed packed bytes, caller frees with free(). */
int sk_codec_pack_json(const struct sk_entity *e, const cJSON *obj, uint8_t **out, size_t *out_len,
                       char id_out[37], int64_t *modified_us, struct sk_error *err)
{
    /* Most entities fit the first block: no malloc but the packed bytes. */
    max_align_t first[4096 / sizeof(max_align_t)];
    struct arena arena = {.p = (char *)first, .left = sizeof(first)};
    struct build b = {.arena = &arena};
    int rc = -1;
    int64_t modified;
    ProtobufCMessage *m = entity_from_json(&b, e, obj, id_out, &modified, err);
    if (!m)
        goto out;
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        sk_error_set(err, SK_ERR_FATAL, "%s: out of memory packing", e->name);
        goto out;
    }
    *out_len = protobuf_c_message_pack(m, buf);
    *out = buf;
    if (modified_us)
        *modified_us = modified;
    rc = 0;
out:
    arena_free(&arena);
    return rc;
}

/*
 * text (need not be NUL-terminated) as one JSON value in *arena (caller frees
 * with sk_json_arena_free, also on NULL), or NULL with err (PERMANENT). The
 * arena parser reads the same texts as cJSON_ParseWithLength and decides on
 * each number as it reads it: no second pass over the record for them.
 */
static cJSON *parse_one(const struct sk_entity *e, const char *text, size_t len,
                        struct sk_json_arena **arena, struct sk_error *err)
{
    size_t at;
    *arena = NULL;
    const char *bad = sk_json_text_bad(text, len, &at);
    if (bad) {
        sk_error_set(err, SK_ERR_PERMANENT, "%s: %s at byte %zu", e->name, bad, at);
        return NULL;
    }
    cJSON *obj = sk_json_arena_parse(text, len, arena);
    /* The parse stops after the first value: anything but whitespace after it is not JSON. */
    const char *end = obj ? text + sk_json_arena_end(*arena) : NULL;
    while (obj && end < text + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
        end++;
    if (!obj || end != text + len) {
        sk_error_set(err, SK_ERR_PERMANENT, "%s: invalid JSON", e->name);
        return NULL;
    }
    if ((bad = sk_json_arena_inexact(*arena, &at)) != NULL) {
        sk_error_set(err, SK_ERR_PERMANENT, "%s: %s at byte %zu", e->name, bad, at);
        return NULL;
    }
    return obj;
}

/* Returned message: as sk_codec_from_json. */
ProtobufCMessage *sk_codec_from_json_text(const struct sk_entity *e, const char *text, size_t len,
                                          char id_out[37], struct sk_error *err)
{
    struct sk_json_arena *arena;
    cJSON *obj = parse_one(e, text, len, &arena, err);
    ProtobufCMessage *m = obj ? sk_codec_from_json(e, obj, id_out, err) : NULL;
    sk_json_arena_free(arena);
    return m;
}

/* ---- protobuf -> JSON ------------------------------------------------------------ */

/* One stored value as a new cJSON item (caller owns), or NULL on OOM. */
static cJSON *value_to_json(const ProtobufCFieldDescriptor *f, const void *src)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
        return cJSON_CreateString(*(char *const *)src);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sk_codec_to_json(*(const ProtobufCMessage *const *)src);
    case PROTOBUF_C_TYPE_BOOL:
        return cJSON_CreateBool(*(const protobuf_c_boolean *)src);
    case PROTOBUF_C_TYPE_DOUBLE:
        return cJSON_CreateNumber(*(const double *)src);
    case PROTOBUF_C_TYPE_FLOAT:
        return cJSON_CreateNumber(*(const float *)src);
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return cJSON_CreateNumber(*(const int32_t *)src);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return cJSON_CreateNumber(*(const uint32_t *)src);
    /* 64-bit values beyond 2^53 lose precision here; JSON input never makes them. */
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return cJSON_CreateNumber((double)*(const int64_t *)src);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return cJSON_CreateNumber((double)*(const uint64_t *)src);
    default: /* enum, bytes: not used by proto/ss12000.proto */
        return cJSON_CreateNull();
    }
}

/* Moves the keys of the _unknown text into out. -1 on OOM. */
static int unknown_emit(cJSON *out, const char *text)
{
    cJSON *unknown = cJSON_Parse(text);
    if (!cJSON_IsObject(unknown)) {
        /* Not written by us (we only store objects): keep it visible, not lost. */
        cJSON_Delete(unknown);
        return cJSON_AddStringToObject(out, "_unknown", text) ? 0 : -1;
    }
    while (unknown->child) {
        cJSON *item = cJSON_DetachItemViaPointer(unknown, unknown->child);
        /* cJSON copies the key before freeing item's old one. */
        if (!cJSON_AddItemToObject(out, item->string, item)) {
            cJSON_Delete(item);
            cJSON_Delete(unknown);
            return -1;
        }
    }
    cJSON_Delete(unknown);
    return 0;
}

/*
 * Returned object: new, caller frees with cJSON_Delete. The keys of known
 * fields point to the static descriptor names (cJSON's "const key" flag:
 * cJSON_Delete leaves them alone), which saves a strdup per field.
 * Numbers hold the exact values, but cJSON_Print may shorten a double by one
 * ulp (see numbers_exact); sk_codec_decode prints exactly.
 */
cJSON *sk_codec_to_json(const ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *desc = msg->descriptor;
    cJSON *out = cJSON_CreateObject();
    if (!out)
        return NULL;
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        if (!field_present(msg, f))
            continue;
        cJSON *v;
        if (f->id == UNKNOWN_FIELD_ID && f->type == PROTOBUF_C_TYPE_STRING) {
            if (unknown_emit(out, *(char **)field_ptr(msg, f)) < 0)
                goto fail;
            continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *field_count(msg, f), sz = value_size(f->type);
            const char *arr = *(char **)field_ptr(msg, f);
            if (!(v = cJSON_CreateArray()))
                goto fail;
            for (size_t k = 0; k < n; k++) {
                cJSON *el = value_to_json(f, arr + k * sz);
                if (!el || !cJSON_AddItemToArray(v, el)) {
                    cJSON_Delete(el);
                    cJSON_Delete(v);
                    goto fail;
                }
            }
        } else if (!(v = value_to_json(f, field_ptr(msg, f)))) {
            goto fail;
        }
        if (!cJSON_AddItemToObjectCS(out, f->name, v)) {
            cJSON_Delete(v);
            goto fail;
        }
    }
    return out;
fail:
    cJSON_Delete(out);
    return NULL;
}

/* ---- record path -------------------------------------------------------------------- */

/* *out: malloc'ed packed bytes, caller frees with free(). */
int sk_codec_encode(const struct sk_entity *e, const char *json, size_t len, uint8_t **out,
                    size_t *out_len, char id_out[37], int64_t *modified_us, struct sk_error *err)
{
    return sk_codec_encode_checked(e, json, len, out, out_len, id_out, modified_us, NULL, err);
}

int sk_codec_encode_checked(const struct sk_entity *e, const char *json, size_t len, uint8_t **out,
                            size_t *out_len, char id_out[37], int64_t *modified_us,
                            const char **missing, struct sk_error *err)
{
    struct sk_json_arena *arena;
    cJSON *obj = parse_one(e, json, len, &arena, err);
    int rc = -1;
    if (obj && missing)
        *missing = cJSON_IsObject(obj) ? sk_entity_missing_required(e, obj) : NULL;
    if (obj)
        rc = sk_codec_pack_json(e, obj, out, out_len, id_out, modified_us, err);
    sk_json_arena_free(arena);
    return rc;
}

/* Returned text: malloc'ed (cJSON's default hooks), NUL-terminated; caller frees with free(). */
char *sk_codec_decode(const struct sk_entity *e, const uint8_t *data, size_t len,
                      int64_t *modified_us, struct sk_error *err)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(e->desc, NULL, len, data);
    if (!m) {
        sk_error_set(err, SK_ERR_PERMANENT, "%s: %zu bytes do not unpack as %s", e->name, len,
                     e->desc->name);
        return NULL;
    }
    if (modified_us)
        *modified_us = modified_of(m);
    cJSON *obj = sk_codec_to_json(m);
    protobuf_c_message_free_unpacked(m, NULL);
    char *text = obj && numbers_exact(obj) == 0 ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!text)
        sk_error_set(err, SK_ERR_FATAL, "%s: out of memory printing JSON", e->name);
    return text;
}
