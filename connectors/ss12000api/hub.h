/*
 * hub.h: the ss12000-api-sink (the "hub"): a sink that keeps the current
 * state of the topics in SQLite and serves it as the SS 12000 2.1 API on a
 * listen address of its own (docs/ss12000-api-sink.md).
 *
 * The parts, one file each: hub_sink.c (options, open/close, apply on the
 * sink's thread), hub_store.c (the hub's own tables next to the shared state
 * store's: change stamps, created times, tombstones, the token secret; and
 * the read queries the HTTP threads run), hub_token.c (page tokens, sealed
 * access tokens), hub_auth.c (bearer tokens, POST /token), hub_scope.c
 * (clients, attribute groups, what each record belongs to, the organisation
 * clause, hub_client_sees), hub_http.c (the server: routing, answers,
 * request log, counters), hub_subs.c and hub_notify.c (/subscriptions and
 * the webhooks out), and the query features of hub_query.h: hub_filter.c
 * and hub_filter_sql.c (per-type filters, sortkey), hub_expand.c (expand,
 * expandReferenceNames), hub_lookup.c (POST /{type}/lookup), hub_refs.c
 * (the array members the filters read).
 *
 * Threads: apply runs on the sink's thread and writes through the state
 * store's connection; requests run on libmicrohttpd's threads, each reading
 * through a read-only connection of its own from a small pool (WAL lets them
 * read while the sink writes, and they only ever see committed batches).
 */
#ifndef SK_HUB_H
#define SK_HUB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "buf.h"
#include "config.h"
#include "connector.h"
#include "model.h"
#include "privacy.h"
#include "state_store.h"
#include "hub_query.h"

struct hub_oauth2_conf {
    char *client_id;
    char *client_secret; /* secret */
};

/* One entry of clients: (docs/ss12000-api-sink.md, "Clients and scopes"). */
struct hub_client_conf {
    char *token;                     /* a static bearer token (secret), or: */
    struct hub_oauth2_conf oauth2;   /* OAuth2 client credentials (the hub's POST /token) */
    struct sk_strlist entities;      /* types it may read, or "all" */
    struct sk_strlist attributes;    /* attribute groups it may see (hub_scope.c), or "all" */
    struct sk_strlist organisations; /* organisation ids it may see (and their descendants) */
    struct sk_strlist drop_fields;   /* its own privacy policy (proto/privacy.h) */
    char *protected_identities;
};

struct hub_conf {
    char *listen;
    char *state_dir;
    char *tls_cert, *tls_key;
    struct sk_groupmap clients; /* client name -> struct hub_client_conf */
    int64_t access_token_ttl_ms;
    int64_t page_token_ttl_ms;
    int64_t deleted_retention_ms;
    int64_t max_limit;
    int64_t threads;
    int64_t max_connections, max_connections_per_client;
    int64_t webhook_ttl_ms, webhook_batch_ms; /* subscriptions (hub_subs.h) */
};

/* Per client, counted by the HTTP threads (hub_http.c), shown by hub_sink.c. */
#define HUB_LATENCY_BUCKETS 8
extern const double hub_latency_bounds_ms[HUB_LATENCY_BUCKETS]; /* upper bounds; +Inf implied */
struct hub_client_stats {
    atomic_uint_fast64_t requests, records, status_4xx, status_5xx;
    atomic_uint_fast64_t latency[HUB_LATENCY_BUCKETS + 1]; /* not cumulative; last = +Inf */
    atomic_uint_fast64_t latency_sum_us;
};

/* One configured client (hub_scope.c builds it from its hub_client_conf). */
struct hub_client {
    const char *name;               /* points into the conf */
    const char *token;              /* static bearer token or NULL (secret: never logged) */
    const char *client_id;          /* OAuth2 or NULL (points into the conf) */
    const char *client_secret;      /* OAuth2 or NULL (secret) */
    bool may_read[SK_ENTITY_COUNT]; /* by sk_entity_index: entities and attribute groups */
    bool hide_private_email, hide_school_email;
    struct sk_privacy privacy; /* protected_identities, drop_fields + hidden attribute fields
                                  (owned: hub_client_free) */
    char (*orgs)[37];          /* the organisations of its scope; n_orgs 0: every one */
    size_t n_orgs;
    struct hub_client_stats stats;
};

/* One record a batch changed (upserted or deleted). */
struct hub_change {
    int type; /* sk_entity_index */
    bool deleted;
    bool withheld; /* a person shown before became protected: deleted for skip clients */
    char id[37];
};

/* What a read serves to whom: the client's scope clause and document filter. */
struct hub_view {
    const struct hub_client *client;
    const char *scope_sql; /* "" or " AND (...)" on hub_rows r (hub_scope_clause) */
    /* For a skip client, the clause of its organisations only (hub_scope_orgs_clause): the
     * persons it was shown that became protected (hub_withheld) are its deletions; else
     * NULL. */
    const char *withheld_sql;
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
    /* The copy was caught up with the topics once (hub_meta 'complete'): until
     * then the API answers 503 catching_up, never a partly filled copy. */
    atomic_bool complete;
    char target[96];                /* "http://127.0.0.1:PORT" */
    /* Webhooks (hub_subs.h): what the batch being applied changed, by sk_entity_index. */
    struct hub_subs *subs;
    uint32_t batch_modified, batch_deleted;
    uint32_t batch_withheld; /* types of changes that are deletions for skip clients */
    /* The records the batch changed, kept only while a client limited to organisations (or
     * with protected_identities: skip) is configured: its webhooks name only types of records
     * it may see. */
    struct hub_change *changes;
    size_t n_changes, cap_changes;
    bool any_scoped; /* a client is limited (hub_client_limited; hub_clients_build) */
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
/* The copy caught up with the topics: kept (hub_meta 'complete'), and served from now on. */
int hub_store_mark_complete(struct hub *h, struct sk_error *err);
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
    struct hub_view view; /* who reads (not part of a page token) */
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
 * q->entity_mask (and, for a skip client, the persons it was shown that
 * became protected) as the members of the spec's DeletedEntities data object,
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
 * One document by id, as served to view (NULL: as stored but for
 * meta.modified), expanded as f asks (NULL: nothing): 1 with *doc
 * (malloc'ed), 0 not found (or not visible to view's client), -1 with err.
 */
int hub_store_get(sqlite3 *db, const struct sk_entity *e, const char *id,
                  const struct hub_filter *f, const struct hub_view *view, char **doc,
                  struct sk_error *err);
/*
 * A stored document as served to view (NULL: to nobody in particular):
 * meta.modified = stamp for types with meta, the client's attribute groups
 * and privacy applied. NULL if not JSON; *hidden (may be NULL) true and NULL
 * when view's client may not see it at all (protected_identities: skip).
 */
cJSON *hub_store_served(const struct sk_entity *e, const char *doc, int64_t stamp,
                        const struct hub_view *view, bool *hidden);

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

/* Access tokens of OAuth2 clients (hub_auth.c): payload sealed with a MAC that also
 * covers bound (the client's secret, not in the token). Caller frees. */
char *hub_token_seal(const struct hub *h, const char *payload, const char *bound);
/* The payload (caller frees) of a token whose MAC matches with the bound that bound_of gives for
 * the payload; NULL if not one of ours, altered, or bound_of gives NULL. */
char *hub_token_unseal(const struct hub *h, const char *token,
                       const char *(*bound_of)(void *ctx, const char *payload), void *ctx);

/* ---- hub_scope.c: clients, attribute groups, organisation scopes ------------ */

/* h->clients from h->conf (names, credentials, types, attribute groups, organisations,
 * privacy); -1 with err naming the client and option. */
int hub_clients_build(struct hub *h, struct sk_error *err);
void hub_clients_free(struct hub *h);
/* Whether the sink consumes e (its entities: setting). */
bool hub_consumes(const struct hub *h, const struct sk_entity *e);
/* The client of that name, or NULL. */
const struct hub_client *hub_client_by_name(const struct hub *h, const char *name);
/* The state store's schema: hub_link (what each record belongs to), hub_withheld. */
int hub_scope_schema(struct sk_state *st, struct sk_error *err);
/* In the batch transaction: the links of a written record / of a removed one (its own stay, for
 * its tombstone) / of tombstones purged before before_us. */
int hub_scope_put(struct hub *h, const struct sk_entity *e, const char *id, const cJSON *doc,
                  struct sk_error *err);
int hub_scope_removed(struct hub *h, const struct sk_entity *e, const char *id,
                      struct sk_error *err);
/* In the batch transaction, before hub_scope_put: a person held unprotected (so shown to skip
 * clients) written protected is noted at stamp in hub_withheld (*withheld: it was now); one
 * written unprotected is no longer. */
int hub_scope_withheld(struct hub *h, const struct sk_entity *e, const char *id, const cJSON *doc,
                       int64_t stamp, bool *withheld, struct sk_error *err);
int hub_scope_purge(struct hub *h, int64_t before_us, struct sk_error *err);
/* At open: a state from before scopes (or of other rules) gets its links made from the stored
 * documents, in one transaction. */
int hub_scope_load(struct hub *h, struct sk_error *err);
/* Whether c sees only some rows of a type it may read: it is limited to organisations, or
 * protected persons are absent for it (protected_identities: skip). */
bool hub_client_limited(const struct hub_client *c);
/* Whether protected persons are absent for c (protected_identities: skip). */
bool hub_client_skips(const struct hub_client *c);
/* The clause that limits hub_rows r to what c may see (its organisations; no protected person
 * for skip): "" for a client not limited; malloc'ed; NULL with err. */
char *hub_scope_clause(sqlite3 *db, const struct hub_client *c, struct sk_error *err);
/* The same without leaving out protected persons: c's organisations only. */
char *hub_scope_orgs_clause(sqlite3 *db, const struct hub_client *c, struct sk_error *err);
/* Applies c's attribute groups and privacy to doc; false: c may not see it at all. */
bool hub_scope_filter(const struct hub_client *c, const struct sk_entity *e, cJSON *doc);
/*
 * Whether client (by name) may see the record type e / id now: the type is in its scope and,
 * for a client limited to organisations, the record (alive or a tombstone) belongs to one of
 * them. For the subscriptions helper (webhooks). Opens a reader of its own; false on any error
 * (logged). Any thread.
 */
bool hub_client_sees(struct hub *h, const char *client, const struct sk_entity *e, const char *id);
/*
 * The types (bits by sk_entity_index, of want) of the records in v that c
 * may see now (as hub_client_sees, one reader and one statement for all),
 * of changes that are no deletion; *deleted (may be NULL): those of the
 * deletions among them (for a skip
 * client, also of the persons it was shown that became protected, which
 * are no change for it). 0 on any error
 * (logged): a webhook not sent is caught up by the next poll, one sent for
 * an invisible record would tell that it changed. Any thread.
 */
uint32_t hub_scope_seen(struct hub *h, const struct hub_client *c, const struct hub_change *v,
                        size_t n, uint32_t want, uint32_t *deleted);

/* ---- hub_auth.c ------------------------------------------------------------ */

/* The client an Authorization header names (a static token or an unexpired access token);
 * NULL: 401. *expired: the access token was ours but too old. */
const struct hub_client *hub_auth_bearer(const struct hub *h, const char *authorization,
                                         bool *expired);
/* POST /token (RFC 6749 §4.4): the answer's status and JSON body (§5.1, §5.2) into out;
 * *client: the client it was for (NULL if none authenticated); *basic: answer 401 with
 * WWW-Authenticate: Basic. */
int hub_auth_token(const struct hub *h, const char *authorization, const char *form,
                   struct sk_buf *out, const struct hub_client **client, bool *basic);

/* ---- hub_http.c ------------------------------------------------------------ */

/* Starts serving conf->listen (refused: a non-loopback address without TLS). */
int hub_http_start(struct hub *h, struct sk_error *err);
/* Stops serving; returns once no request runs. NULL-safe on a hub that never started. */
void hub_http_stop(struct hub *h);

#endif
