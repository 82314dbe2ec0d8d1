/*
 * model.h: the SS 12000 2.1.0 entity types and the descriptor-driven codec
 * between SS 12000 JSON and the protobuf messages in proto/ss12000.proto.
 *
 * One table describes every entity type (name, collection, API path, its
 * deletedEntities bucket, protobuf descriptor); one codec walks protobuf-c's
 * descriptors for all of them. There is no per-entity converter.
 *
 * Losslessness: JSON -> protobuf -> JSON gives the same document (key order
 * aside). Keys the spec lacks, and values whose JSON type does not fit the
 * spec (null, a string where a number belongs), are kept verbatim in each
 * message's `_unknown` field (a JSON object text) and re-emitted.
 * Misspelled keys of the spec are accepted in both spellings (docs/ss12000-notes.md §6).
 */
#ifndef SK_MODEL_H
#define SK_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <protobuf-c/protobuf-c.h>

#include "buf.h"
#include "sk_error.h"

struct sk_entity {
    const char *name;        /* EndPointsEnum value: "Person", "Activity" */
    const char *collection;  /* topic suffix and table name: "persons", "activities" */
    const char *path;        /* API path: "/persons", "/studyplans", "/attendanceSchedule" */
    const char *deleted_key; /* key in /deletedEntities data: "persons", "activitites" */
    const char *deleted_alt; /* other spelling seen in the wild ("activities"), or NULL */
    const ProtobufCMessageDescriptor *desc;
    bool has_meta; /* the spec gives it id + meta (SchoolUnitOffering does not) */
};

/* All 18 entity types in dependency order (docs/ss12000-notes.md §2.3), NULL-terminated. */
extern const struct sk_entity *const sk_entities[];
#define SK_ENTITY_COUNT 18

const struct sk_entity *sk_entity_by_name(const char *name); /* "Person" */
/* The position of e in sk_entities (0..SK_ENTITY_COUNT-1), or -1. */
int sk_entity_index(const struct sk_entity *e);
const struct sk_entity *sk_entity_by_collection(const char *collection); /* "persons" */
/* A deletedEntities key in either spelling ("activitites" or "activities"). */
const struct sk_entity *sk_entity_by_deleted_key(const char *key);
/* The full protobuf message name, e.g. "ss12000.v2.Person" (for the skolsync-schema header). */
const char *sk_entity_schema(const struct sk_entity *e);

/*
 * Validates a UUID and writes its lowercase form into out[37].
 * Returns 0, or -1 if text is not a UUID (8-4-4-4-12 hex digits).
 */
int sk_uuid_normalize(const char *text, char out[37]);

/*
 * Parses an RFC 3339 date-time ("2024-06-20T16:40:03+02:00", "...Z",
 * fractional seconds allowed) into microseconds since the epoch (UTC).
 * Returns 0, or -1 if it is not one.
 */
int sk_time_parse_us(const char *text, int64_t *out_us);

/*
 * The first field of the SS 12000 2.1 required set of e (a shorter list:
 * docs/ss12000-notes.md §2.3, the spec's defects of §6.5 left out) that the
 * JSON object item lacks (absent or null), or NULL. The sources' strict
 * validation dead-letters such a record; lenient keeps it (connectors that
 * read SS 12000 JSON share this one list, so they agree).
 */
const char *sk_entity_missing_required(const struct sk_entity *e, const cJSON *item);

/*
 * JSON object -> protobuf message of entity e. Validates and lowercases the
 * id (an invalid or missing id is SK_ERR_PERMANENT), writes it into id_out.
 * Entities without an id in the spec (SchoolUnitOffering) still need one to
 * be keyed: a missing id is an error for them too.
 * Returns the message (caller frees with protobuf_c_message_free_unpacked(m, NULL))
 * or NULL with err set (SK_ERR_PERMANENT).
 */
ProtobufCMessage *sk_codec_from_json(const struct sk_entity *e, const cJSON *obj, char id_out[37],
                                     struct sk_error *err);
/*
 * The record path: JSON object -> packed protobuf bytes of entity e, the id
 * checked and lower-cased as above. The message is built in a per-call arena
 * with its strings borrowed from obj (nothing is copied but into the packed
 * bytes). On success returns 0, *out is malloc'ed (caller frees), id_out and
 * modified_us (meta.modified in µs, or INT64_MIN; may be NULL) are filled;
 * else -1 with err as sk_codec_from_json.
 */
int sk_codec_pack_json(const struct sk_entity *e, const cJSON *obj, uint8_t **out, size_t *out_len,
                       char id_out[37], int64_t *modified_us, struct sk_error *err);
/* How far ahead of the host's clock a meta.modified may lie (a server's clock
 * may run fast): beyond it the record is refused (PERMANENT), as it would win
 * over every later change of its entity until that date. */
#define SK_CODEC_AHEAD_MAX_US (24LL * 3600 * 1000000)
/* The same from JSON text. */
ProtobufCMessage *sk_codec_from_json_text(const struct sk_entity *e, const char *text, size_t len,
                                          char id_out[37], struct sk_error *err);
/* protobuf message -> JSON object (caller frees with cJSON_Delete). NULL only on OOM. */
cJSON *sk_codec_to_json(const ProtobufCMessage *msg);

/*
 * Convenience for the record path: JSON text -> packed protobuf bytes.
 * On success returns 0, *out is malloc'ed (caller frees), id_out and
 * modified_us (meta.modified in µs, or INT64_MIN if absent) are filled.
 */
int sk_codec_encode(const struct sk_entity *e, const char *json, size_t len, uint8_t **out,
                    size_t *out_len, char id_out[37], int64_t *modified_us, struct sk_error *err);
/* The same, also setting *missing to sk_entity_missing_required of the object (or NULL). */
int sk_codec_encode_checked(const struct sk_entity *e, const char *json, size_t len, uint8_t **out,
                            size_t *out_len, char id_out[37], int64_t *modified_us,
                            const char **missing, struct sk_error *err);
/*
 * Packed protobuf bytes -> compact JSON text (malloc'ed, NUL-terminated,
 * caller frees); modified_us as above. NULL with err (PERMANENT) if the bytes
 * do not unpack.
 */
char *sk_codec_decode(const struct sk_entity *e, const uint8_t *data, size_t len,
                      int64_t *modified_us, struct sk_error *err);

/*
 * Bytes cJSON would store broken or cut short (json_check.c): a NUL byte, a
 * \u0000 escape inside a string, or invalid UTF-8 (overlong forms and UTF-16
 * surrogates included). NULL if there are none, else what was found, with
 * its byte offset in *at.
 */
const char *sk_json_text_bad(const char *text, size_t len, size_t *at);
/* Length of the valid UTF-8 sequence at s (n >= 1 bytes there), 0 if it is not
 * one (overlong forms, UTF-16 surrogates and beyond U+10FFFF included). */
size_t sk_utf8_len(const char *s, size_t n);
/*
 * Whether the JSON number s[0, len) (valid: cJSON took it) comes out of the
 * codec as it came in: false for more digits than a double holds (an id of
 * 19 digits, 0.1000000000000000000001), or beyond a double's range (1e400,
 * 1e-400). sk_json_arena_parse asks it of every number it reads.
 */
bool sk_json_number_exact(const char *s, size_t len);
#define SK_JSON_INEXACT "a number a double does not hold exactly"
/*
 * The first number in JSON text (valid: cJSON took it) that is not
 * sk_json_number_exact, found by a scan of the text: NULL if there is none,
 * else SK_JSON_INEXACT, with its byte offset in *at. The record paths take
 * the verdict of their parse instead (sk_json_arena_inexact); this scan is
 * the reference it is tested against.
 */
const char *sk_json_number_inexact(const char *text, size_t len, size_t *at);
/*
 * The byte spans [start, end) of the elements of the array that is the value
 * of the top-level object's key `key` ({"data": [...]}), found without
 * parsing them (works on text that sk_json_text_bad refused). *spans is
 * malloc'ed (caller frees, also when 0 is returned); returns their number.
 */
size_t sk_json_array_spans(const char *text, size_t len, const char *key, size_t (**spans)[2]);

/*
 * JSON text -> the cJSON tree cJSON_ParseWithLength(text, len) gives (the
 * same texts accepted, the same nodes), but every node and string in one
 * arena (json_arena.c): no malloc per node, one free for all. NULL if the
 * text is not JSON (or on OOM). On success *arena holds the tree's memory:
 * free it with sk_json_arena_free, never the tree with cJSON_Delete, and
 * never add or replace its nodes with cJSON calls (a new string for a node:
 * sk_json_arena_strdup, freed with the arena).
 */
struct sk_json_arena;
cJSON *sk_json_arena_parse(const char *text, size_t len, struct sk_json_arena **arena);
/*
 * What the parse that filled arena found besides the tree, decided as it
 * read each number (no second scan of the text): the first number that is
 * not sk_json_number_exact, NULL if none, else SK_JSON_INEXACT with its
 * byte offset in the text in *at (the answer of sk_json_number_inexact).
 * A record holding one is dead-lettered: it would be stored changed.
 */
const char *sk_json_arena_inexact(const struct sk_json_arena *arena, size_t *at);
/* The byte offset in the text just after the value the parse read. */
size_t sk_json_arena_end(const struct sk_json_arena *arena);
char *sk_json_arena_strdup(struct sk_json_arena *arena, const char *s);
void sk_json_arena_free(struct sk_json_arena *arena); /* NULL is fine */

/*
 * Compact JSON text of v, numbers printed exactly (cJSON's own printer may
 * round a double to 15 digits: 0.1+0.2 would come out as 0.3).
 * sk_json_print: malloc'ed, caller frees. sk_json_print_into: appended to b,
 * returns the length appended.
 */
char *sk_json_print(const cJSON *v);
size_t sk_json_print_into(const cJSON *v, struct sk_buf *b);

#endif
