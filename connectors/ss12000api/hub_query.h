/*
 * hub_query.h: the query features of the hub's API beyond paging: the
 * spec's per-type filters and sortkey (hub_filter.c), expand and
 * expandReferenceNames (hub_expand.c), and POST /{type}/lookup
 * (hub_lookup.c). docs/ss12000-api-sink.md has the table of every
 * parameter.
 */
#ifndef SK_HUB_QUERY_H
#define SK_HUB_QUERY_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "buf.h"
#include "sk_error.h"
#include "state_store.h"
#include "model.h"

struct hub;
struct sk_privacy;

/*
 * The longest sort value kept in a position: the SQL cuts a value to 200
 * characters (hub_filter_sql.c), up to 800 bytes of UTF-8. The position must
 * hold the whole cut value: a shorter prefix compares below the row it came
 * from, and the next page served that row again, for ever.
 */
#define HUB_KEY_MAX 1024
/* Filter values in one list request (a lookup's are bounded by max_limit). */
#define HUB_FILTER_MAX_VALUES 1000
/* The longest page token the hub makes or reads (characters). */
#define HUB_TOKEN_MAX 65536

/*
 * The options of one list, by-id or lookup request besides paging and the
 * meta filters: the per-type filters, sortkey, expand, expandReferenceNames.
 * Opaque; made by hub_filter_new, filled by hub_filter_add, carried from
 * page to page as hub_filter_text inside the page token.
 */
struct hub_filter;

enum hub_use {
    HUB_USE_LIST,   /* GET /{type}: filters, sortkey, expand, expandReferenceNames */
    HUB_USE_BY_ID,  /* GET /{type}/{id}: expand, expandReferenceNames */
    HUB_USE_LOOKUP, /* POST /{type}/lookup: the body's keys (any one matches), expand, names */
};

/*
 * have: the types the hub consumes (by sk_entity_index). readable: those
 * the client may read: the only tables a condition reads, the only ones
 * expand embeds and expandReferenceNames names.
 */
struct hub_filter *hub_filter_new(const struct sk_entity *e, enum hub_use use, uint32_t have,
                                  uint32_t readable);
/*
 * The client's privacy policy (its drop_fields with its attribute groups'
 * fields, and protected_identities), set before any hub_filter_add: a
 * parameter, sortkey or expansion reading a field it is not shown is refused
 * (hub_filter_forbidden), and conditions never match on a protected person
 * it is not shown in full. Not set: the client is shown everything.
 */
void hub_filter_set_viewer(struct hub_filter *f, const struct sk_privacy *viewer);
/* A hub_filter_add failed because it reads what the client is not shown (answer 403). */
bool hub_filter_forbidden(const struct hub_filter *f);
void hub_filter_free(struct hub_filter *f); /* NULL-safe */

/*
 * Whether key is a query parameter of f's type and use beyond the common
 * ones (limit, meta.*, …); for a lookup: expand and expandReferenceNames.
 */
bool hub_filter_known(const struct hub_filter *f, const char *key);
/* Whether key is a key of the lookup body of f's type ("ids", "civicNos", …). */
bool hub_filter_lookup_key(const struct hub_filter *f, const char *key);

/*
 * Adds key=value (a query parameter or, for a lookup, one value of a body
 * key). 0, or -1 with *why (static text naming no value: it is answered and
 * never holds input) for an unknown key, a bad value or a repeated scalar.
 */
int hub_filter_add(struct hub_filter *f, const char *key, const char *value, const char **why);

/* The number of parameters added (a follow-up with pageToken must have none). */
int hub_filter_count(const struct hub_filter *f);

/* Percent-encodes s into b (only letters, digits and . - _ stay); decodes in place (-1: bad). */
void hub_filter_encode(struct sk_buf *b, const char *s);
int hub_filter_decode(char *s);

/* Percent-encoded "k=v&k=v" of everything added; caller frees. */
char *hub_filter_text(const struct hub_filter *f);
/* Reads hub_filter_text back into an empty f; -1 if it does not read. */
int hub_filter_read_text(struct hub_filter *f, const char *text);

/*
 * The SQL of a list: appends to sql " AND (...)" for the filters (nothing
 * when none), with the parameters numbered from *next_param on (advanced);
 * hub_filter_bind binds them in the same order. Conditions read the row's
 * document as c.doc and its id as r.id, and of other records only those
 * scope lets the client see (the clause on hub_rows r of hub_scope_clause;
 * NULL or "": every one).
 */
void hub_filter_where(const struct hub_filter *f, const char *scope, struct sk_buf *sql,
                      int *next_param);
void hub_filter_bind(const struct hub_filter *f, sqlite3_stmt *stmt, int first_param);

/*
 * The sort: the sort value's SQL (TEXT, never NULL) or NULL for the default
 * order by change stamp; *desc for a descending key; *by_stamp for
 * ModifiedDesc (ordered by the change stamp, descending).
 */
const char *hub_filter_sort(const struct hub_filter *f, bool *desc, bool *by_stamp);

/*
 * hub_filter_sql.c: finds sortkey value on e: 0 with *expr (the sort
 * value's SQL) and *desc, or *by_stamp (and *desc) for ModifiedDesc; -1 for
 * a key the spec does not give e (in that direction).
 */
int hub_filter_sort_find(const struct sk_entity *e, const char *value, const char **expr,
                         bool *desc, bool *by_stamp);

/* expand=... by name (bit i for the type's i-th expand) and expandReferenceNames. */
uint32_t hub_filter_expand(const struct hub_filter *f);
bool hub_filter_ref_names(const struct hub_filter *f);
/* The types the client may read, as given to hub_filter_new. */
uint32_t hub_filter_readable(const struct hub_filter *f);

/* Registers the SQL functions the conditions use (sk_fold) on a reader's connection. */
void hub_filter_register(sqlite3 *db);

/* A collection name in the parameter / expand tables that names no type (a typo), or NULL. */
const char *hub_filter_bad_collection(void);
const char *hub_expand_bad_collection(void);

/* The schema hook's part: the filters' expression indexes on the types h consumes. */
int hub_filter_schema(struct sk_state *st, const struct hub *h, struct sk_error *err);

/* ---- hub_refs.c ------------------------------------------------------------------ */

/*
 * The ids of the documents of coll whose array `name` holds the value of
 * param (SQL, for an IN): hub_refs.c lists the arrays.
 */
#define HUB_REFS(coll, name, param)                                                                \
    "(SELECT id FROM hub_refs WHERE collection = '" coll "' AND name = '" name                     \
    "' AND ref = " param ")"

/* The side table (schema hook; filled once for documents stored before it existed). */
int hub_refs_schema(struct sk_state *st, const struct hub *h, struct sk_error *err);
/* Replaces the rows of collection/id by those of doc (NULL: deleted), in the batch. */
int hub_refs_put(struct sk_state *st, const char *collection, const char *id, const char *doc,
                 size_t doc_len, struct sk_error *err);

/* ---- hub_expand.c --------------------------------------------------------------- */

/*
 * Adds to doc (a served document of e) what f asks for: _embedded with the
 * expanded entities, and displayName in every reference. Reads through db.
 * Entities another client may not see must never be embedded or named:
 * every read goes through one function (fetch in hub_expand.c), where the
 * visibility predicate of a client's scope belongs. 0, -1 with err.
 */
/* The bit of expand=name on e (its position among e's expand values), -1 if e has none such. */
int hub_expand_bit(const struct sk_entity *e, const char *name);
/* The field an expansion reads beyond types (space-separated paths: persons' ownedPlacements
 * reads placements' owners), or NULL. */
const char *hub_expand_needs(const struct sk_entity *e, const char *name);

struct hub_view;
int hub_expand_apply(sqlite3 *db, const struct sk_entity *e, const struct hub_filter *f,
                     const struct hub_view *view, cJSON *doc, struct sk_error *err);

/* ---- hub_lookup.c ---------------------------------------------------------------- */

/* Whether e has POST /{path}/lookup in the spec. */
bool hub_lookup_defined(const struct sk_entity *e);
/*
 * Reads a lookup body ({"ids": [...], "civicNos": [...], ...}) into f. 0, or
 * -1 with *why (static text) for a body that is not JSON, a key the type
 * does not take, or a value of the wrong kind.
 */
int hub_lookup_read_body(struct hub_filter *f, const char *body, size_t len, size_t max_values,
                         const char **why);

#endif
