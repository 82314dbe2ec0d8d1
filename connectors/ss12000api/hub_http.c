/*
 * hub_http.c: the hub's HTTP server (libmicrohttpd on a listen address of
 * its own): routing (POST /token to hub_auth.c, /subscriptions to
 * hub_subs.c, everything else after the bearer token was checked), what a
 * client may read (the entity types of its scope; its organisations and
 * attribute groups through hub_scope.c), the SS 12000 list, by-id, lookup
 * and deletedEntities answers, errors in the spec's {code, message} shape,
 * one log line and the counters per request.
 *
 * Owns: the listen check (plain HTTP only on a loopback address; anything
 * else needs tls_cert and tls_key), the type check before any read, query
 * parsing (each endpoint's own parameters are hub_filter.c's), request
 * bodies (up to 1 MiB). Must never: log a token, a secret, a query value,
 * a body or a document (personal data: civic numbers, names), ignore a
 * parameter the endpoint does not define (a client asking
 * /organisations?civicNo=... would get every organisation: 400 instead), or
 * answer a request without a valid token with anything but 401.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/crypto.h>

#include "hub.h"
#include "hub_query.h"
#include "hub_subs.h"
#include "log.h"
#include "util.h"

/* One request as it is being answered. */
struct req {
    struct hub *h;
    struct MHD_Connection *c;
    const struct hub_client *client;
    const char *route; /* the path as logged: "/persons", "/persons/{id}" (never the id) */
    char route_buf[64];
    const struct sk_buf *upload; /* the request's body (POST, PATCH) */
    int status;
    struct sk_buf body;
    int64_t records;
    /* The query string, checked while it is read. */
    struct hub_view view;  /* the client and its organisation scope (hub_scope.c) */
    const char *bad_param; /* the first parameter this hub does not take */
    bool dup_param;
    uint32_t entities; /* deletedEntities: entities=..., by sk_entity_index */
    bool bad_entity;
};

/* A request body is read up to this; a larger one is answered 413. */
#define MAX_UPLOAD (1 << 20) /* a lookup of max_limit ids is far below it */
#define MAX_TOKEN_FORM (16 << 10) /* POST /token: grant_type, client_id, client_secret, scope */

static void fail(struct req *r, int status, const char *code, const char *message)
{
    r->status = status;
    sk_buf_reset(&r->body);
    sk_buf_puts(&r->body, "{\"code\":");
    sk_buf_json_string(&r->body, code);
    sk_buf_puts(&r->body, ",\"message\":");
    sk_buf_json_string(&r->body, message);
    sk_buf_putc(&r->body, '}');
}

static const struct sk_entity *served_by_path(const struct hub *h, const char *path, size_t len)
{
    for (size_t i = 0; i < h->n_entities; i++)
        if (strlen(h->entities[i]->path) == len && strncmp(h->entities[i]->path, path, len) == 0)
            return h->entities[i];
    return NULL;
}

/* ---- the query string ---------------------------------------------------------- */

static const char *const list_params[] = {"limit",
                                          "pageToken",
                                          "meta.created.after",
                                          "meta.created.before",
                                          "meta.modified.after",
                                          "meta.modified.before",
                                          NULL};
static const char *const deleted_params[] = {"limit", "pageToken", "after", "entities", NULL};

struct param_check {
    struct req *r;
    const char *const *allowed;
    const char *seen[8];
    size_t n_seen;
    struct hub_filter *filter; /* the type's own parameters (hub_filter.c), or NULL */
    const char *filter_why;    /* the first of them that was refused */
};

/* entities=Person&entities=Group or entities=Person,Group (docs/ss12000-notes.md §3.1). */
static void add_entities(struct req *r, const char *value)
{
    char *copy = sk_strdup(value ? value : ""), *save = NULL;
    for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        int i = sk_entity_index(sk_entity_by_name(t));
        if (i < 0)
            r->bad_entity = true;
        else
            r->entities |= 1u << i;
    }
    free(copy);
}

static enum MHD_Result check_param(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    (void)kind;
    struct param_check *pc = cls;
    size_t i = 0;
    while (pc->allowed[i] && strcmp(pc->allowed[i], key) != 0)
        i++;
    const char *why;
    if (!pc->allowed[i] && pc->filter && hub_filter_known(pc->filter, key)) {
        if (hub_filter_add(pc->filter, key, value, &why) < 0 && !pc->filter_why)
            pc->filter_why = why;
        return MHD_YES;
    }
    if (!pc->allowed[i]) {
        if (!pc->r->bad_param)
            pc->r->bad_param = key;
        return MHD_YES;
    }
    if (strcmp(key, "entities") == 0) {
        add_entities(pc->r, value);
        return MHD_YES;
    }
    for (size_t k = 0; k < pc->n_seen; k++)
        if (pc->seen[k] == pc->allowed[i])
            pc->r->dup_param = true;
    if (pc->n_seen < 8)
        pc->seen[pc->n_seen++] = pc->allowed[i];
    return MHD_YES;
}

static const char *arg(const struct req *r, const char *key)
{
    return MHD_lookup_connection_value(r->c, MHD_GET_ARGUMENT_KIND, key);
}

/*
 * A date-time filter; absent leaves *out. A '+' of an offset that was not
 * percent-encoded arrives as a space: it is read as the '+' it was.
 */
static bool time_arg(struct req *r, const char *key, int64_t *out)
{
    const char *v = arg(r, key);
    if (!v)
        return true;
    char *copy = sk_strdup(v);
    size_t len = strlen(copy);
    if (len > 19 && copy[len - 6] == ' ')
        copy[len - 6] = '+';
    bool ok = sk_time_parse_us(copy, out) == 0;
    free(copy);
    if (!ok) {
        char *msg = sk_asprintf("%s is not an RFC 3339 date-time with an offset", key);
        fail(r, 400, "invalid_parameter", msg);
        free(msg);
    }
    return ok;
}

/* Every query parameter is one this endpoint takes, once. false: the error answer is set. */
static bool params_ok(struct req *r, struct param_check *pc)
{
    MHD_get_connection_values(r->c, MHD_GET_ARGUMENT_KIND, check_param, pc);
    if (r->bad_param) {
        /* Not even the name is echoed: the answer and the log stay free of input. */
        fail(r, 400, "unsupported_parameter",
             "a query parameter this server does not implement was given");
        return false;
    }
    if (r->dup_param || r->bad_entity) {
        fail(r, 400, "invalid_parameter", "a parameter was repeated or names no entity type");
        return false;
    }
    if (pc->filter_why) {
        if (hub_filter_forbidden(pc->filter))
            fail(r, 403, "forbidden", pc->filter_why);
        else
            fail(r, 400, "invalid_parameter", pc->filter_why);
        return false;
    }
    return true;
}

/*
 * The query of a list or deletedEntities request: the filters of a first
 * request, or the page token of a follow-up (with limit only). false: the
 * error answer is set.
 */
static bool read_query(struct req *r, const char *what, const char *const *allowed,
                       struct hub_filter *filter, struct hub_query *q)
{
    struct param_check pc = {.r = r, .allowed = allowed, .filter = filter};
    if (!params_ok(r, &pc))
        return false;
    *q = (struct hub_query){.modified_after = INT64_MIN,
                            .modified_before = INT64_MAX,
                            .created_after = INT64_MIN,
                            .created_before = INT64_MAX,
                            .after_stamp = INT64_MIN,
                            .filter = filter,
                            .limit = r->h->conf->max_limit};
    const char *limit = arg(r, "limit");
    if (limit && (sk_parse_int(limit, &q->limit) != 0 || q->limit < 1)) {
        fail(r, 400, "invalid_parameter", "limit must be a positive integer");
        return false;
    }
    if (q->limit > r->h->conf->max_limit)
        q->limit = r->h->conf->max_limit;
    const char *token = arg(r, "pageToken");
    if (token) {
        if (pc.n_seen > (limit ? 2u : 1u) || r->entities || (filter && hub_filter_count(filter))) {
            fail(r, 400, "invalid_parameter",
                 "pageToken cannot be combined with filters, only with limit");
            return false;
        }
        enum hub_token_check t =
            hub_token_read(r->h, token, what, r->client->name, q, filter, sk_now_us() / 1000);
        if (t == HUB_TOKEN_EXPIRED)
            fail(r, 410, "page_token_expired", "the pageToken has expired: start the query again");
        else if (t == HUB_TOKEN_BAD)
            fail(r, 400, "invalid_page_token", "the pageToken is not valid for this query");
        return t == HUB_TOKEN_OK;
    }
    return time_arg(r, "meta.modified.after", &q->modified_after) &&
           time_arg(r, "meta.modified.before", &q->modified_before) &&
           time_arg(r, "meta.created.after", &q->created_after) &&
           time_arg(r, "meta.created.before", &q->created_before) &&
           time_arg(r, "after", &q->modified_after);
}

/* ---- the answers ---------------------------------------------------------------- */

/* Ends a page: the token of the next one when there is one, then the closing brace. */
static void page_end(struct req *r, const char *what, struct hub_query *q, bool more,
                     int64_t last_stamp, const char *last_id, const char *last_key)
{
    if (more) {
        q->after_stamp = last_stamp;
        snprintf(q->after_id, sizeof(q->after_id), "%s", last_id);
        snprintf(q->after_key, sizeof(q->after_key), "%s", last_key);
        char *token = hub_token_make(r->h, what, r->client->name, q, sk_now_us() / 1000);
        if (strlen(token) > HUB_TOKEN_MAX) { /* it could not come back: no page then */
            free(token);
            r->records = 0;
            return fail(r, 400, "invalid_parameter",
                        "the query's parameters are too long to page through (a page token "
                        "holds them, at most 64 KiB): ask with fewer values");
        }
        sk_buf_puts(&r->body, ",\"pageToken\":");
        sk_buf_json_string(&r->body, token);
        free(token);
    }
    sk_buf_putc(&r->body, '}');
    r->status = 200;
}

static void server_error(struct req *r, const struct sk_error *err)
{
    sk_log(SK_LOG_ERROR, r->h->name, "%s", err->msg);
    fail(r, 503, "unavailable", "the server cannot read its state now; try again");
}

/* The client's organisation scope as it is now (r->view.scope_sql and withheld_sql, freed by
 * on_request). */
static bool scope_read(struct req *r, sqlite3 *db, struct sk_error *err)
{
    char *clause = hub_scope_clause(db, r->client, err);
    r->view.scope_sql = clause;
    if (clause && hub_client_skips(r->client))
        clause = (char *)(r->view.withheld_sql = hub_scope_orgs_clause(db, r->client, err));
    if (!clause)
        hub_reader_give(r->h, db);
    return clause != NULL;
}

/*
 * One page of a list (e) or of deletedEntities (e NULL) after q: the body
 * opens with open, the rows come from fn, close ends the data member.
 */
static void serve_page(struct req *r, const struct sk_entity *e, struct hub_query *q,
                       const char *what, const char *open, char close, hub_page_fn fn)
{
    struct sk_error err = {0};
    sqlite3 *db = hub_reader_take(r->h, &err);
    if (!db || !scope_read(r, db, &err))
        return server_error(r, &err);
    q->view = r->view;
    bool more;
    int64_t last_stamp = 0;
    char last_id[37] = "", last_key[HUB_KEY_MAX] = "";
    sk_buf_puts(&r->body, open);
    r->records = fn(db, e, q, &r->body, &more, &last_stamp, last_id, last_key, &err);
    hub_reader_give(r->h, db);
    if (r->records < 0)
        return server_error(r, &err);
    sk_buf_putc(&r->body, close);
    page_end(r, what, q, more, last_stamp, last_id, last_key);
}

/*
 * The parameters of a request on e: filters read the tables of every type
 * the hub consumes; expand and reference names only the types the client
 * may read.
 */
static struct hub_filter *new_filter(const struct req *r, const struct sk_entity *e,
                                     enum hub_use use)
{
    uint32_t have = 0, readable = 0;
    for (size_t i = 0; i < r->h->n_entities; i++) {
        int k = sk_entity_index(r->h->entities[i]);
        have |= 1u << k;
        if (r->client->may_read[k])
            readable |= 1u << k;
    }
    struct hub_filter *f = hub_filter_new(e, use, have, readable);
    hub_filter_set_viewer(f, &r->client->privacy);
    return f;
}

static void list(struct req *r, const struct sk_entity *e)
{
    struct hub_query q;
    struct hub_filter *filter = new_filter(r, e, HUB_USE_LIST);
    if (read_query(r, e->collection, list_params, filter, &q))
        serve_page(r, e, &q, e->collection, "{\"data\":[", ']', hub_store_list);
    hub_filter_free(filter);
}

static void deleted(struct req *r)
{
    struct hub_query q;
    if (!read_query(r, "deletedEntities", deleted_params, NULL, &q))
        return;
    /* The types asked for (all when none; a follow-up's from its token), always cut to
     * the client's scope as it is now: a reload may have narrowed it since the token. */
    uint32_t scope = 0, served = 0;
    for (size_t i = 0; i < r->h->n_entities; i++) {
        int k = sk_entity_index(r->h->entities[i]);
        served |= 1u << k;
        if (r->client->may_read[k])
            scope |= 1u << k;
    }
    /* A type it may not read, asked for: 403 as its list is (a type the hub does not serve
     * has no deletions here, and no bucket). */
    if (!arg(r, "pageToken") && (r->entities & served & ~scope))
        return fail(r, 403, "forbidden", "this client may not read an entity type asked for");
    if (!arg(r, "pageToken"))
        q.entity_mask = r->entities ? r->entities : scope;
    q.entity_mask &= scope;
    serve_page(r, NULL, &q, "deletedEntities", "{\"data\":{", '}', hub_store_deleted);
}

static const char *const by_id_params[] = {NULL};

static void by_id(struct req *r, const struct sk_entity *e, const char *id_text)
{
    struct hub_filter *filter = new_filter(r, e, HUB_USE_BY_ID);
    struct param_check pc = {.r = r, .allowed = by_id_params, .filter = filter};
    if (!params_ok(r, &pc))
        return hub_filter_free(filter);
    char id[37];
    if (sk_uuid_normalize(id_text, id) < 0) {
        hub_filter_free(filter);
        return fail(r, 400, "invalid_id", "the id is not a UUID");
    }
    struct sk_error err = {0};
    sqlite3 *db = hub_reader_take(r->h, &err);
    if (!db || !scope_read(r, db, &err)) {
        hub_filter_free(filter);
        return server_error(r, &err);
    }
    char *doc = NULL;
    /* Outside the client's organisations: 404 like an id never seen, never 403. */
    int found = hub_store_get(db, e, id, filter, &r->view, &doc, &err);
    hub_filter_free(filter);
    hub_reader_give(r->h, db);
    if (found < 0)
        return server_error(r, &err);
    if (!found)
        return fail(r, 404, "not_found", "no such entity");
    sk_buf_puts(&r->body, doc);
    free(doc);
    r->records = 1;
    r->status = 200;
}

/*
 * POST /{path}/lookup: the records matching any value of the body's keys, a
 * bare array (no paging: more than ten pages' worth is a 503, the spec's
 * "response too large"), expanded as the query asks.
 */
static void lookup(struct req *r, const struct sk_entity *e)
{
    struct hub_filter *filter = new_filter(r, e, HUB_USE_LOOKUP);
    struct param_check pc = {.r = r, .allowed = by_id_params, .filter = filter};
    const char *why;
    if (!params_ok(r, &pc))
        goto out;
    int options = hub_filter_count(filter);
    size_t max_values = (size_t)r->h->conf->max_limit;
    if (hub_lookup_read_body(filter, r->upload->p ? r->upload->p : "", r->upload->len, max_values,
                             &why) < 0) {
        if (hub_filter_forbidden(filter))
            fail(r, 403, "forbidden", why);
        else
            fail(r, 400, "invalid_body", why);
        goto out;
    }
    if (hub_filter_count(filter) == options) { /* no key: nothing matches */
        sk_buf_puts(&r->body, "[]");
        r->status = 200;
        goto out;
    }
    struct hub_query q = {.modified_after = INT64_MIN,
                          .modified_before = INT64_MAX,
                          .created_after = INT64_MIN,
                          .created_before = INT64_MAX,
                          .after_stamp = INT64_MIN,
                          .filter = filter,
                          .limit = r->h->conf->max_limit * 10};
    struct sk_error err = {0};
    sqlite3 *db = hub_reader_take(r->h, &err);
    if (!db || !scope_read(r, db, &err)) {
        server_error(r, &err);
        goto out;
    }
    q.view = r->view;
    bool more;
    int64_t last_stamp;
    char last_id[37];
    sk_buf_putc(&r->body, '[');
    r->records = hub_store_list(db, e, &q, &r->body, &more, &last_stamp, last_id, NULL, &err);
    hub_reader_give(r->h, db);
    if (r->records < 0) {
        server_error(r, &err);
    } else if (more) {
        fail(r, 503, "response_too_large", "the lookup matches too many records: ask for fewer");
    } else {
        sk_buf_putc(&r->body, ']');
        r->status = 200;
    }
out:
    hub_filter_free(filter);
}

/* Which endpoint the path names, after the client was authenticated. */
static void route(struct req *r, const char *method, const char *url)
{
    const char *slash = strchr(url + 1, '/');
    size_t head = slash ? (size_t)(slash - url) : strlen(url);
    if (head == strlen("/subscriptions") && strncmp(url, "/subscriptions", head) == 0)
        return hub_subs_request(r->h, r->c, r->client, method, url, r->upload->p, r->upload->len,
                                &r->status, &r->body, &r->route);
    if (strcmp(url, "/deletedEntities") == 0) {
        r->route = "/deletedEntities";
        if (strcmp(method, "GET") != 0)
            return fail(r, 405, "method_not_allowed", "only GET is served here");
        return deleted(r);
    }
    const struct sk_entity *e = served_by_path(r->h, url, head);
    if (!e || (slash && (slash[1] == '\0' || strchr(slash + 1, '/'))))
        return fail(r, 404, "not_found", "no such endpoint on this server");
    r->route = e->path;
    bool lookup_path = slash && strcmp(slash, "/lookup") == 0 && hub_lookup_defined(e);
    if (lookup_path) {
        snprintf(r->route_buf, sizeof(r->route_buf), "%s/lookup", e->path);
        r->route = r->route_buf;
    }
    if (strcmp(method, lookup_path ? "POST" : "GET") != 0)
        return fail(r, 405, "method_not_allowed",
                    lookup_path ? "only POST is served here" : "only GET is served here");
    /* The spec answers 403 for what a client may not read; the type exists here. */
    if (!r->client->may_read[sk_entity_index(e)])
        return fail(r, 403, "forbidden", "this client may not read this entity type");
    if (lookup_path)
        return lookup(r, e);
    if (slash) {
        r->route = NULL; /* logged as "<path>/{id}" */
        return by_id(r, e, slash + 1);
    }
    list(r, e);
}

/* The method as logged: one of those the hub answers, else "other" (no input in the log). */
static const char *logged_method(const char *method)
{
    static const char *const known[] = {"GET", "POST", "PATCH", "DELETE"};
    for (size_t i = 0; i < 4; i++)
        if (strcmp(method, known[i]) == 0)
            return known[i];
    return "other";
}

/* A request's body as it arrives (POST /token, POST /subscriptions, lookups), kept to
 * MAX_UPLOAD; freed by request_done. */
struct upload {
    struct sk_buf body;
    bool too_big;
    /* Decided on the request's head, before any of its body is kept: a body
     * is buffered only for a client that authenticated (or for /token, up
     * to MAX_TOKEN_FORM), so nobody without credentials makes the hub hold
     * memory (MAX_UPLOAD per connection). */
    const struct hub_client *client;
    bool expired, bearer, token_endpoint;
};

/* The end of a request (answered or broken off): its body goes. */
static void request_done(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct upload *u = *con_cls;
    if (u) {
        sk_buf_wipe(&u->body); /* it may hold a client secret or civic numbers */
        free(u);
    }
    *con_cls = NULL;
}

/* POST /token: no bearer token needed (RFC 6749 §4.4); the client is whoever it authenticates. */
static void token_endpoint(struct req *r, const char *method, struct upload *u, bool *basic)
{
    r->route = "/token";
    if (strcmp(method, "POST") != 0)
        return fail(r, 405, "method_not_allowed", "only POST is served here");
    const char *type = MHD_lookup_connection_value(r->c, MHD_HEADER_KIND, "Content-Type");
    /* the media type, then nothing or its parameters (";charset=...") */
    bool form = type && strncasecmp(type, "application/x-www-form-urlencoded", 33) == 0 &&
                (type[33] == '\0' || type[33] == ';' || type[33] == ' ' || type[33] == '\t');
    if (u->too_big || !form) {
        r->status = 400;
        sk_buf_puts(&r->body, "{\"error\":\"invalid_request\",\"error_description\":\"expected "
                              "an application/x-www-form-urlencoded body of at most 16 KiB\"}");
        return;
    }
    sk_buf_putc(&u->body, '\0');
    u->body.len--;
    r->status = hub_auth_token(
        r->h, MHD_lookup_connection_value(r->c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
        u->body.p, &r->body, &r->client, basic);
}

/* Per client: requests, records, 4xx/5xx, latency (hub_sink.c shows them). */
const double hub_latency_bounds_ms[HUB_LATENCY_BUCKETS] = {5, 10, 25, 50, 100, 250, 1000, 5000};

static void count(const struct req *r, int64_t us)
{
    /* Counters only: atomics, so the client stays const everywhere else. */
    struct hub_client_stats *st = (struct hub_client_stats *)&r->client->stats;
    atomic_fetch_add(&st->requests, 1);
    atomic_fetch_add(&st->records, (uint_fast64_t)(r->records > 0 ? r->records : 0));
    if (r->status >= 400 && r->status < 500)
        atomic_fetch_add(&st->status_4xx, 1);
    else if (r->status >= 500)
        atomic_fetch_add(&st->status_5xx, 1);
    size_t b = 0;
    while (b < HUB_LATENCY_BUCKETS && (double)us / 1000.0 > hub_latency_bounds_ms[b])
        b++;
    atomic_fetch_add(&st->latency[b], 1);
    atomic_fetch_add(&st->latency_sum_us, (uint_fast64_t)us);
}

/* The methods a path takes (for a 405's Allow). */
static const char *allowed_methods(const char *url)
{
    static const char subs[] = "/subscriptions";
    size_t len = strlen(url);
    if (strcmp(url, "/token") == 0 || (len > 7 && strcmp(url + len - 7, "/lookup") == 0))
        return "POST";
    if (strcmp(url, subs) == 0)
        return "GET, POST";
    if (strncmp(url, subs, sizeof(subs) - 1) == 0 && url[sizeof(subs) - 1] == '/')
        return "GET, PATCH, DELETE";
    return "GET";
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    struct hub *h = cls;
    if (!*con_cls) { /* the head so far; the body (freed by request_done) comes next */
        struct upload *u = sk_calloc(1, sizeof(*u));
        *con_cls = u;
        u->token_endpoint = strcmp(url, "/token") == 0;
        if (!u->token_endpoint) {
            const char *authorization =
                MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
            u->bearer = authorization != NULL;
            u->client = hub_auth_bearer(h, authorization, &u->expired);
        }
        return MHD_YES;
    }
    struct upload *u = *con_cls;
    if (*upload_size) {
        size_t max = u->token_endpoint ? MAX_TOKEN_FORM : u->client ? MAX_UPLOAD : 0;
        if (u->body.len + *upload_size > max)
            u->too_big = true;
        else if (!u->too_big)
            sk_buf_putn(&u->body, upload_data, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    int64_t t0 = sk_now_us();
    struct req r = {.h = h, .c = c, .route = "(other)", .upload = &u->body};
    bool expired = u->expired, basic = false, bearer = u->bearer;
    if (u->token_endpoint) {
        token_endpoint(&r, method, u, &basic);
    } else {
        r.client = u->client;
        r.view.client = r.client;
        if (!r.client)
            fail(&r, 401, "unauthorized",
                 expired ? "the access token has expired" : "a valid bearer token is required");
        else if (u->too_big)
            fail(&r, 413, "too_large", "the request body is too large");
        else if (!atomic_load(&h->complete)) /* a partly filled copy would look like deletions */
            fail(&r, 503, "catching_up",
                 "the server is still filling its copy from the topics (a first start, or its "
                 "state was rebuilt): try again later");
        else
            route(&r, method, url);
    }
    char logged[64];
    if (!r.route) {
        const struct sk_entity *e = served_by_path(h, url, (size_t)(strchr(url + 1, '/') - url));
        snprintf(logged, sizeof(logged), "%s/{id}", e->path);
    } else {
        snprintf(logged, sizeof(logged), "%s", r.route);
    }
    int64_t us = sk_now_us() - t0;
    if (r.client)
        count(&r, us);
    sk_log(SK_LOG_INFO, h->name, "client %s: %s %s -> %d (%" PRId64 " records, %" PRId64 " ms)",
           r.client ? r.client->name : "(none)", logged_method(method), logged, r.status, r.records,
           us / 1000);
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        r.body.len, r.body.p ? r.body.p : (void *)"", MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (strcmp(url, "/token") == 0)
        MHD_add_response_header(resp, "Pragma", "no-cache"); /* RFC 6749 §5.1 */
    if (r.status == 503)
        MHD_add_response_header(resp, "Retry-After", "10");
    if (r.status == 405) /* RFC 9110 §15.5.6 */
        MHD_add_response_header(resp, "Allow", allowed_methods(url));
    if (r.status == 401) /* RFC 6749 §5.2 at /token, RFC 6750 §3 elsewhere */
        MHD_add_response_header(resp, "WWW-Authenticate",
                                strcmp(url, "/token") == 0 ? "Basic realm=\"skolsync\""
                                : expired                  ? "Bearer error=\"invalid_token\", "
                                                             "error_description=\"the access token expired\""
                                : bearer                   ? "Bearer error=\"invalid_token\""
                                                           : "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r.status, resp);
    MHD_destroy_response(resp);
    if (r.body.p) /* an access token */
        OPENSSL_cleanse(r.body.p, r.body.len);
    sk_buf_free(&r.body);
    free((char *)r.view.scope_sql);
    free((char *)r.view.withheld_sql);
    return ret;
}

/* ---- the listener --------------------------------------------------------------- */

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

/* "host:port" or "[v6]:port" -> a bound, listening socket; -1 with err. */
static int listen_socket(const struct hub *h, bool tls, struct sk_error *err)
{
    const char *listen_at = h->conf->listen;
    const char *colon = strrchr(listen_at, ':');
    if (!colon || colon == listen_at || !colon[1])
        return sk_error_set(err, SK_ERR_FATAL, "listen \"%s\" is not host:port", listen_at);
    char *host = sk_strndup(listen_at, (size_t)(colon - listen_at));
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai = NULL;
    int gai = getaddrinfo(host, colon + 1, &hints, &ai);
    free(host);
    if (gai)
        return sk_error_set(err, SK_ERR_FATAL, "listen \"%s\": %s", listen_at, gai_strerror(gai));
    int fd = -1;
    if (!tls && !is_loopback(ai->ai_addr)) {
        sk_error_set(err, SK_ERR_FATAL,
                     "listen \"%s\" is not a loopback address: serving personal data there needs "
                     "TLS (set tls_cert and tls_key)",
                     listen_at);
        goto out;
    }
    int one = 1;
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && ai->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 128)) {
        sk_error_set(err, SK_ERR_FATAL, "cannot listen on %s: %s", listen_at, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
out:
    freeaddrinfo(ai);
    return fd;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    const struct hub *h = cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    sk_log(SK_LOG_WARN, h->name, "http: %s", msg);
}

static char *read_pem(const char *path, const char *option, struct sk_error *err)
{
    size_t len;
    char *pem = sk_read_file(path, &len);
    if (!pem)
        sk_error_set(err, SK_ERR_FATAL, "%s %s: %s", option, path, strerror(errno));
    return pem;
}

/* Frees a private key's text after overwriting it. NULL is fine. */
static void free_key(char *key)
{
    if (key)
        OPENSSL_cleanse(key, strlen(key));
    free(key);
}

int hub_http_start(struct hub *h, struct sk_error *err)
{
    const struct hub_conf *conf = h->conf;
    if (!conf->tls_cert != !conf->tls_key)
        return sk_error_set(err, SK_ERR_FATAL, "tls_cert and tls_key go together");
    bool tls = conf->tls_cert != NULL;
    char *cert = NULL, *key = NULL;
    if (tls && (!(cert = read_pem(conf->tls_cert, "tls_cert", err)) ||
                !(key = read_pem(conf->tls_key, "tls_key", err)))) {
        free(cert);
        return -1;
    }
    int fd = listen_socket(h, tls, err);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_AUTO;
    struct MHD_OptionItem tls_opts[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, cert},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, key},
        {MHD_OPTION_END, 0, NULL},
    };
    if (tls)
        flags |= MHD_USE_TLS;
    else
        tls_opts[0].option = MHD_OPTION_END;
    if (fd >= 0)
        h->mhd = MHD_start_daemon(
            flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
            MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
            /* libmicrohttpd 0.9.75 never delivers its 431 when a request's head outgrows this
             * (the client waits for the timeout): room for a query string of ~50 KiB. */
            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024), MHD_OPTION_NOTIFY_COMPLETED,
            request_done, NULL, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)conf->threads,
            MHD_OPTION_CONNECTION_LIMIT, (unsigned)conf->max_connections,
            MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)conf->max_connections_per_client,
            MHD_OPTION_ARRAY, tls_opts, MHD_OPTION_END);
    free(cert);
    free_key(key);
    if (fd < 0)
        return -1;
    if (!h->mhd) {
        close(fd);
        return sk_error_set(err, SK_ERR_FATAL, "cannot serve on %s%s", conf->listen,
                            tls ? " (are the TLS certificate and key valid?)" : "");
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
    const char *colon = strrchr(conf->listen, ':');
    snprintf(h->target, sizeof(h->target), "%s://%.*s:%u", tls ? "https" : "http",
             (int)(colon - conf->listen), conf->listen, info ? info->port : 0);
    sk_log(SK_LOG_INFO, h->name, "serving SS 12000 on %s", h->target);
    return 0;
}

void hub_http_stop(struct hub *h)
{
    if (h->mhd)
        MHD_stop_daemon(h->mhd);
    h->mhd = NULL;
}
