/*
 * hub.h: the ss12000-api-sink (the "hub"): a sink that keeps the current
 * state of the topics in SQLite and serves it as the SS 12000 2.1 API on a
 * listen address of its own (docs/ss12000-api-sink.md).
 *
 * The parts, one file each: hub_sink.c (options, open/close, apply on the
 * sink's thread), hub_store.c (the hub's own tables next to the shared state
 * store's: change stamps, created times, tombstones, the token secret; and
 * the read queries the HTTP threads run), hub_token.c (page tokens),
 * hub_http.c (the server: authentication, routing, answers, request log),
 * and the query features of hub_query.h: hub_filter.c and hub_filter_sql.c
 * (per-type filters, sortkey), hub_expand.c (expand, expandReferenceNames),
 * hub_lookup.c (POST /{type}/lookup).
 *
 * Threads: apply runs on the sink's thread and writes through the state
 * store's connection; requests run on libmicrohttpd's threads, each reading
 * through a read-only connection of its own from a small pool (WAL lets them
 * read while the sink writes, and they only ever see committed batches).
 */
#ifndef SK_HUB_H
#define SK_HUB_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "buf.h"
#include "config.h"
#include "connector.h"
#include "model.h"
#include "state_store.h"
#include "hub_query.h"

struct hub_conf {
    char *listen;
    char *state_dir;
    char *tls_cert, *tls_key;
    struct sk_strmap clients;         /* client name -> bearer token (secret) */
    struct sk_strmap client_entities; /* client name -> types it may read */
    int64_t page_token_ttl_ms;
    int64_t deleted_retention_ms;
    int64_t max_limit;
    int64_t threads;
};

/* One configured client: its token and the entity types it may read. */
struct hub_client {
    const char *name;               /* points into the conf */
    const char *token;              /* points into the conf (secret: never logged) */
    bool may_read[SK_ENTITY_COUNT]; /* by sk_entity_index */
};

#define HUB_SECRET_LEN 32

struct hub {
    const char *name; /* the sink's name: the log component */
    const struct hub_conf *conf;
    char *db_path;
    struct sk_state *state;
    const struct sk_entity *const *entities; /* the types this sink consumes */
    size_t n_entities;
    struct hub_client *clients;
    size_t n_clients;
    uint8_t secret[HUB_SECRET_LEN]; /* the page token key, kept in the database */
    int64_t last_stamp;             /* the highest change stamp given (µs) */
    int64_t next_purge_ms;          /* sk_mono_ms() of the next tombstone purge */
    char target[96];                /* "http://127.0.0.1:PORT" */
    /* The HTTP side (hub_http.c). */
    struct MHD_Daemon *mhd;
    pthread_mutex_t pool_mu;
    sqlite3 **pool; /* idle read-only connections */
    size_t n_pool, cap_pool;
};

/* ---- hub_store.c: the sink's side (sink thread) ---------------------------- */

/* The state store's schema callback: the hub's tables and indexes. */
int hub_store_schema(struct sk_state *st, void *ctx, struct sk_error *err);
/* Loads (or makes and stores) the token secret and the last stamp. */
int hub_store_load(struct hub *h, struct sk_error *err);
/* One record inside the batch transaction (sk_state_record_fn; ctx is the hub). */
int hub_store_record(void *ctx, const struct sk_record *r, struct sk_error *err);
/* Last in the batch transaction: the last stamp, and expired tombstones go. */
int hub_store_finish(void *ctx, struct sk_error *err);

/* ---- hub_store.c: the read side (HTTP threads) ------------------------------- */

/* What a list asks for: filters as µs (INT64_MIN/INT64_MAX when absent) and the position. */
struct hub_query {
    int64_t modified_after, modified_before; /* on the hub's change stamp = served meta.modified */
    int64_t created_after, created_before;   /* on meta.created (exclusive) */
    int64_t after_stamp; /* keyset position: (stamp, id) > (after_stamp, after_id) */
    char after_id[37];
    int64_t limit;
    uint32_t entity_mask; /* deletedEntities: the types asked for, by sk_entity_index */
    /* A list's per-type filters, sortkey, expand (hub_query.h; NULL: none), and the sort
     * value of the keyset position when it has a sortkey. */
    const struct hub_filter *filter;
    char after_key[HUB_KEY_MAX];
};

/* A read-only connection from the pool (or a new one); NULL with err. */
sqlite3 *hub_reader_take(struct hub *h, struct sk_error *err);
void hub_reader_give(struct hub *h, sqlite3 *db);
void hub_reader_pool_free(struct hub *h);

/*
 * A page after q into out, returning its rows (up to q->limit), -1 with err;
 * *more: a further row exists; *last_stamp/last_id: the last row's position
 * (for the next token). Rows are ordered by (stamp, id): a row changed while
 * a client pages moves behind its position and is served in the same walk.
 *
 * hub_store_list: the documents of e, comma-separated, as served:
 * meta.modified is the hub's change stamp (docs/ss12000-api-sink.md).
 * hub_store_deleted (e unused): the tombstones of the types in
 * q->entity_mask as the members of the spec's DeletedEntities data object,
 * {"persons": [...], ...}, a bucket for every type of the mask.
 */
typedef int64_t (*hub_page_fn)(sqlite3 *db, const struct sk_entity *e, const struct hub_query *q,
                               struct sk_buf *out, bool *more, int64_t *last_stamp,
                               char last_id[37], char *last_key, struct sk_error *err);
/* last_key (HUB_KEY_MAX, may be NULL): the last row's sort value when q->filter sorts. */
int64_t hub_store_list(sqlite3 *db, const struct sk_entity *e, const struct hub_query *q,
                       struct sk_buf *out, bool *more, int64_t *last_stamp, char last_id[37],
                       char *last_key, struct sk_error *err);
int64_t hub_store_deleted(sqlite3 *db, const struct sk_entity *e, const struct hub_query *q,
                          struct sk_buf *out, bool *more, int64_t *last_stamp, char last_id[37],
                          char *last_key, struct sk_error *err);
/*
 * One document by id, as served, expanded as f asks (NULL: as stored): 1
 * with *doc (malloc'ed), 0 not found, -1 with err.
 */
int hub_store_get(sqlite3 *db, const struct sk_entity *e, const char *id,
                  const struct hub_filter *f, char **doc, struct sk_error *err);
/* A stored document as served (meta.modified = stamp for types with meta); NULL if not JSON. */
cJSON *hub_store_served(const struct sk_entity *e, const char *doc, int64_t stamp);

/* ---- hub_token.c ----------------------------------------------------------- */

/*
 * A page token: the query (what, for whom, filters, position) and its
 * expiry, base64url, with an HMAC-SHA256 under the hub's secret. what is a
 * collection or "deletedEntities". Caller frees.
 */
char *hub_token_make(const struct hub *h, const char *what, const char *client,
                     const struct hub_query *q, int64_t now_ms);

enum hub_token_check {
    HUB_TOKEN_OK,
    HUB_TOKEN_BAD,     /* not one of ours, altered, or for another query or client: 400 */
    HUB_TOKEN_EXPIRED, /* ours and intact, but too old: 410 */
};
/*
 * Checks token and fills q (limit and filter untouched) from it, and f (an
 * empty hub_filter of the list; NULL for deletedEntities) with the
 * parameters of the first request.
 */
enum hub_token_check hub_token_read(const struct hub *h, const char *token, const char *what,
                                    const char *client, struct hub_query *q, struct hub_filter *f,
                                    int64_t now_ms);

/* ---- hub_http.c ------------------------------------------------------------ */

/* Starts serving conf->listen (refused: a non-loopback address without TLS). */
int hub_http_start(struct hub *h, struct sk_error *err);
/* Stops serving; returns once no request runs. NULL-safe on a hub that never started. */
void hub_http_stop(struct hub *h);

#endif
