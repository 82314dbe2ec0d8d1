/*
 * hub_subs.c: the hub's subscriptions (SS 12000 /subscriptions): POST
 * creates one, GET lists a client's own (paged like every list) or reads one,
 * PATCH renews its expiry, DELETE removes it; and which subscriptions a
 * committed batch concerns.
 *
 *   hub_subs(id, client, name, target, types, expires_us)
 *     one row per subscription; types is the resourceTypes as entity names,
 *     comma-separated (indexes would change meaning if the model's order did).
 *
 * Owns: the subscriptions, their validation (target http(s), plain http only
 * to a loopback host; resource types the client may read) and per-client
 * isolation (a client sees, renews and deletes only its own: another
 * client's id is 404, as if it did not exist). Must never: call a subscriber
 * for a type its client may not see (sub_may_see is the one check), log a
 * target URL (its path often holds the subscriber's secret), or block the
 * sink's thread on anything but the memory lock.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <microhttpd.h>

#include "hub_subs.h"
#include "log.h"
#include "util.h"

/*
 * The one visibility check of webhooks: may client see changes of the type
 * at entity index i? Today a client's scope is a set of entity types; a
 * finer scope (hub_client_sees) replaces this function and nothing else.
 */
static bool sub_may_see(const struct hub_client *client, int i)
{
    return client && i >= 0 && i < SK_ENTITY_COUNT && client->may_read[i];
}

int hub_subs_schema(struct sk_state *st, struct sk_error *err)
{
    return sk_state_exec(st,
                         "CREATE TABLE IF NOT EXISTS hub_subs(id TEXT PRIMARY KEY, client TEXT NOT "
                         "NULL, name TEXT NOT NULL, target TEXT NOT NULL, types TEXT NOT NULL, "
                         "expires_us INTEGER NOT NULL);",
                         err);
}

static const struct hub_client *client_named(const struct hub *h, const char *name)
{
    for (size_t i = 0; i < h->n_clients; i++)
        if (strcmp(h->clients[i].name, name) == 0)
            return &h->clients[i];
    return NULL;
}

static void sub_free(struct hub_sub *sub)
{
    if (!sub)
        return;
    free(sub->client);
    free(sub->name);
    free(sub->target);
    free(sub);
}

static void add_locked(struct hub_subs *s, struct hub_sub *sub)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->v = sk_realloc(s->v, s->cap * sizeof(*s->v));
    }
    s->v[s->n++] = sub;
}

void hub_subs_remove_locked(struct hub_subs *s, size_t i)
{
    sub_free(s->v[i]);
    memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof(*s->v));
    s->n--;
}

static ssize_t find_locked(const struct hub_subs *s, const char *id, const char *client)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i]->id, id) == 0 && (!client || strcmp(s->v[i]->client, client) == 0))
            return (ssize_t)i;
    return -1;
}

static char *types_text(uint32_t types)
{
    struct sk_buf b = {0};
    for (int i = 0; i < SK_ENTITY_COUNT; i++)
        if (types & (1u << i))
            sk_buf_printf(&b, "%s%s", b.len ? "," : "", sk_entities[i]->name);
    return sk_buf_take(&b);
}

static uint32_t types_of(const char *text)
{
    uint32_t types = 0;
    char *copy = sk_strdup(text), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int i = sk_entity_index(sk_entity_by_name(t));
        if (i >= 0)
            types |= 1u << i;
    }
    free(copy);
    return types;
}

static int db_error(struct hub_subs *s, int rc, const char *what, struct sk_error *err)
{
    return sk_error_set(err, sk_state_error_class(rc, true), "%s: %s", what, sqlite3_errmsg(s->db));
}

/* Runs sql with the text/int64 binds given by bind on the subscriptions' connection. */
static int run(struct hub_subs *s, const char *sql, void (*bind)(sqlite3_stmt *q, const void *ctx),
               const void *ctx, int *changes, struct sk_error *err)
{
    pthread_mutex_lock(&s->db_mu);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &q, NULL);
    if (rc == SQLITE_OK) {
        bind(q, ctx);
        rc = sqlite3_step(q);
    }
    int out = rc == SQLITE_DONE ? 0 : db_error(s, rc, "the subscriptions' table", err);
    if (changes)
        *changes = sqlite3_changes(s->db);
    sqlite3_finalize(q);
    pthread_mutex_unlock(&s->db_mu);
    return out;
}

static void bind_insert(sqlite3_stmt *q, const void *ctx)
{
    const struct hub_sub *sub = ctx;
    char *types = types_text(sub->types);
    sqlite3_bind_text(q, 1, sub->id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 2, sub->client, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 3, sub->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 4, sub->target, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 5, types, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(q, 6, sub->expires_us);
    free(types);
}

struct id_bind {
    const char *id, *client;
    int64_t expires_us;
};

static void bind_id(sqlite3_stmt *q, const void *ctx)
{
    const struct id_bind *b = ctx;
    sqlite3_bind_text(q, 1, b->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, b->client, -1, SQLITE_STATIC);
    if (sqlite3_bind_parameter_count(q) >= 3)
        sqlite3_bind_int64(q, 3, b->expires_us);
}

int hub_subs_delete_row(struct hub_subs *s, const char *id, const char *client,
                        struct sk_error *err)
{
    struct id_bind b = {id, client, 0};
    int changes = 0;
    if (run(s, "DELETE FROM hub_subs WHERE id = ?1 AND client = ?2", bind_id, &b, &changes, err) <
        0)
        return -1;
    return changes;
}

static int load(struct hub_subs *s, struct sk_error *err)
{
    sqlite3_stmt *q;
    int rc = sqlite3_prepare_v2(
        s->db, "SELECT id, client, name, target, types, expires_us FROM hub_subs ORDER BY id", -1,
        &q, NULL);
    if (rc != SQLITE_OK)
        return db_error(s, rc, "reading hub_subs", err);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct hub_sub *sub = sk_calloc(1, sizeof(*sub));
        snprintf(sub->id, sizeof(sub->id), "%s", (const char *)sqlite3_column_text(q, 0));
        sub->client = sk_strdup((const char *)sqlite3_column_text(q, 1));
        sub->name = sk_strdup((const char *)sqlite3_column_text(q, 2));
        sub->target = sk_strdup((const char *)sqlite3_column_text(q, 3));
        sub->types = types_of((const char *)sqlite3_column_text(q, 4));
        sub->expires_us = sqlite3_column_int64(q, 5);
        sub->owner = client_named(s->h, sub->client);
        if (!sub->owner)
            sk_warn(s->h->name,
                    "subscription %s belongs to client %s, which is not configured: it is kept "
                    "but not called",
                    sub->id, sub->client);
        add_locked(s, sub);
    }
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? 0 : db_error(s, rc, "reading hub_subs", err);
}

int hub_subs_open(struct hub *h, struct sk_error *err)
{
    struct hub_subs *s = sk_calloc(1, sizeof(*s));
    h->subs = s;
    s->h = h;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->db_mu, NULL);
    pthread_mutex_init(&s->create_mu, NULL);
    sk_cond_init_monotonic(&s->cv);
    int rc = sqlite3_open_v2(h->db_path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK)
        return sk_error_set(err, SK_ERR_FATAL, "opening %s for the subscriptions: %s", h->db_path,
                            s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
    sqlite3_busy_timeout(s->db, 5000);
    if (load(s, err) < 0)
        return -1;
    return hub_notify_start(s, err);
}

void hub_subs_close(struct hub *h)
{
    struct hub_subs *s = h->subs;
    if (!s)
        return;
    hub_notify_stop(s);
    for (size_t i = 0; i < s->n; i++)
        sub_free(s->v[i]);
    free(s->v);
    sqlite3_close(s->db);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->db_mu);
    pthread_mutex_destroy(&s->create_mu);
    free(s);
    h->subs = NULL;
}

void hub_subs_changed(struct hub *h, uint32_t modified, uint32_t deleted, uint32_t withheld)
{
    struct hub_subs *s = h->subs;
    if (!s || !(modified | deleted))
        return;
    /* A limited client (organisations, skip) hears only of types whose changed records it may
     * see (asked outside mu: it reads the state). */
    bool *scoped = NULL;
    uint32_t *seen = NULL;
    if (h->any_scoped) {
        scoped = sk_calloc(h->n_clients + 1, sizeof(*scoped));
        pthread_mutex_lock(&s->mu);
        for (size_t k = 0; k < s->n; k++)
            if (s->v[k]->owner && hub_client_limited(s->v[k]->owner))
                scoped[s->v[k]->owner - h->clients] = true;
        pthread_mutex_unlock(&s->mu);
        seen = sk_calloc(2 * h->n_clients + 1, sizeof(*seen));
        for (size_t c = 0; c < h->n_clients; c++)
            if (scoped[c])
                seen[2 * c] = hub_scope_seen(h, &h->clients[c], h->changes, h->n_changes,
                                             modified | deleted, &seen[2 * c + 1]);
    }
    pthread_mutex_lock(&s->mu);
    bool any = false;
    for (size_t k = 0; k < s->n; k++) {
        struct hub_sub *sub = s->v[k];
        uint32_t mod = 0, del = 0;
        /* for a skip client, a person it was shown became protected: a deletion */
        uint32_t gone = deleted | (sub->owner && hub_client_skips(sub->owner) ? withheld : 0);
        for (int i = 0; i < SK_ENTITY_COUNT; i++) {
            uint32_t bit = 1u << i;
            if (!(sub->types & bit) || !sub_may_see(sub->owner, i))
                continue;
            mod |= modified & bit;
            del |= gone & bit;
        }
        if (sub->owner && hub_client_limited(sub->owner)) {
            size_t c = (size_t)(sub->owner - h->clients);
            /* a subscription made while this ran was not asked about: it waits for the next */
            mod &= scoped[c] ? seen[2 * c] : 0;
            del &= scoped[c] ? seen[2 * c + 1] : 0;
        }
        if (!(mod | del))
            continue;
        sub->pending |= mod;
        sub->pending_deleted |= del != 0;
        if (!sub->due_ms) /* the first change of a quiet spell opens the batch window */
            sub->due_ms = sk_mono_ms() + h->conf->webhook_batch_ms;
        any = true;
    }
    if (any)
        pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    free(seen);
    free(scoped);
}

/* ---- the endpoints ----------------------------------------------------------------- */

struct answer {
    int *status;
    struct sk_buf *out;
};

static void fail(struct answer *a, int status, const char *code, const char *message)
{
    *a->status = status;
    sk_buf_reset(a->out);
    sk_buf_puts(a->out, "{\"code\":");
    sk_buf_json_string(a->out, code);
    sk_buf_puts(a->out, ",\"message\":");
    sk_buf_json_string(a->out, message);
    sk_buf_putc(a->out, '}');
}

/* RFC 3339 UTC with seconds: expires as served. */
static void format_time(int64_t us, char out[32])
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The spec's Subscription: id, expires, name, target, resourceTypes [{resource}]. */
static void put_sub(struct sk_buf *out, const struct hub_sub *sub)
{
    char expires[32];
    format_time(sub->expires_us, expires);
    sk_buf_puts(out, "{\"id\":");
    sk_buf_json_string(out, sub->id);
    sk_buf_puts(out, ",\"expires\":");
    sk_buf_json_string(out, expires);
    sk_buf_puts(out, ",\"name\":");
    sk_buf_json_string(out, sub->name);
    sk_buf_puts(out, ",\"target\":");
    sk_buf_json_string(out, sub->target);
    sk_buf_puts(out, ",\"resourceTypes\":[");
    bool first = true;
    for (int i = 0; i < SK_ENTITY_COUNT; i++) {
        if (!(sub->types & (1u << i)))
            continue;
        sk_buf_printf(out, "%s{\"resource\":\"%s\"}", first ? "" : ",", sk_entities[i]->name);
        first = false;
    }
    sk_buf_puts(out, "]}");
}

static bool loopback_host(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    size_t n = strlen(host);
    if (strcmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (n > 2 && host[0] == '[' && host[n - 1] == ']') {
        char *inner = sk_strndup(host + 1, n - 2);
        bool lo = inet_pton(AF_INET6, inner, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
        free(inner);
        return lo;
    }
    return false;
}

/*
 * A callback target: an absolute http or https URL without credentials;
 * plain http only to a loopback host (the path usually carries the
 * subscriber's secret). NULL when fine, else why not.
 */
static const char *target_problem(const char *target)
{
    if (strlen(target) > 2048)
        return "target is longer than 2048 characters";
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *user = NULL;
    const char *why = NULL;
    if (curl_url_set(u, CURLUPART_URL, target, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host)
        why = "target is not an absolute URL";
    else if (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0)
        why = "target must be an http or https URL";
    else if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK)
        why = "target must not carry credentials";
    else if (strcmp(scheme, "http") == 0 && !loopback_host(host))
        why = "plain http targets are accepted on a loopback host only: use https";
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_url_cleanup(u);
    return why;
}

/*
 * The resourceTypes of a create: [{"resource": "Person"}, ...] (the spec's
 * schema; plain strings, as the spec's own example has them, are taken too).
 * 0 with *types, else the error answer is set.
 */
static int read_types(struct answer *a, const struct hub *h, const struct hub_client *client,
                      const cJSON *list, uint32_t *types)
{
    *types = 0;
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) == 0) {
        fail(a, 400, "invalid_request", "resourceTypes must be a non-empty list");
        return -1;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, list)
    {
        const cJSON *res =
            cJSON_IsObject(it) ? cJSON_GetObjectItemCaseSensitive(it, "resource") : it;
        const struct sk_entity *e =
            cJSON_IsString(res) ? sk_entity_by_name(res->valuestring) : NULL;
        bool served = false;
        for (size_t i = 0; e && i < h->n_entities; i++)
            served |= h->entities[i] == e;
        if (!served) {
            fail(a, 400, "invalid_request",
                 "resourceTypes: every resource must be an entity type this server serves "
                 "(Person, Group, ...)");
            return -1;
        }
        if (!sub_may_see(client, sk_entity_index(e))) {
            fail(a, 403, "forbidden", "resourceTypes names a type this client may not read");
            return -1;
        }
        *types |= 1u << sk_entity_index(e);
    }
    return 0;
}

/*
 * Stores sub (taken) and answers 201, replacing the client's earlier
 * subscriptions to the same target: a subscriber that restarts without
 * having deleted its old one (a crash) would otherwise be called twice, and
 * its stale subscriptions would fill its quota.
 */
static void store_new(struct answer *a, struct hub_subs *s, struct hub_sub *sub)
{
    struct hub *h = s->h;
    size_t own = 0, n_old = 0;
    char(*old)[37] = sk_calloc(HUB_SUBS_PER_CLIENT + 1, sizeof(*old));
    /* Held until the new one is in s->v: the count below stays true until then (deletions and
     * drops only lower it). */
    pthread_mutex_lock(&s->create_mu);
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->v[i]->client, sub->client) != 0)
            continue;
        if (strcmp(s->v[i]->target, sub->target) == 0 && n_old <= HUB_SUBS_PER_CLIENT)
            memcpy(old[n_old++], s->v[i]->id, 37);
        else
            own++;
    }
    pthread_mutex_unlock(&s->mu);
    struct sk_error err = {0};
    if (own >= HUB_SUBS_PER_CLIENT) {
        fail(a, 403, "too_many_subscriptions",
             "this client has as many subscriptions as it may have: delete one first");
        goto out;
    }
    if (run(s,
            "INSERT INTO hub_subs(id, client, name, target, types, expires_us) "
            "VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
            bind_insert, sub, NULL, &err) < 0)
        goto unavailable;
    for (size_t k = 0; k < n_old; k++) {
        if (hub_subs_delete_row(s, old[k], sub->client, &err) < 0)
            sk_warn(h->name, "subscription %s: %s", old[k], err.msg);
        sk_info(h->name, "client %s: subscription %s replaced by a new one to the same target",
                sub->client, old[k]);
    }
    *a->status = 201;
    put_sub(a->out, sub);
    sk_info(h->name, "client %s: subscription %s created", sub->client, sub->id);
    pthread_mutex_lock(&s->mu);
    for (size_t k = 0; k < n_old; k++) {
        ssize_t i = find_locked(s, old[k], sub->client);
        if (i >= 0)
            hub_subs_remove_locked(s, (size_t)i);
    }
    add_locked(s, sub);
    sub = NULL;
    pthread_mutex_unlock(&s->mu);
    goto out;
unavailable:
    sk_error_log(h->name, "%s", err.msg);
    fail(a, 503, "unavailable", "the server cannot store the subscription now; try again");
out:
    pthread_mutex_unlock(&s->create_mu);
    free(old);
    sub_free(sub);
}

static void create(struct answer *a, struct hub *h, const struct hub_client *client,
                   const char *upload, size_t len)
{
    struct hub_subs *s = h->subs;
    cJSON *doc = cJSON_ParseWithLength(upload ? upload : "", len);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(doc, "name");
    const cJSON *target = cJSON_GetObjectItemCaseSensitive(doc, "target");
    uint32_t types;
    const char *why;
    if (!cJSON_IsObject(doc) || !cJSON_IsString(name) || !cJSON_IsString(target)) {
        fail(a, 400, "invalid_request", "the body must be {name, target, resourceTypes}");
    } else if (!*name->valuestring || strlen(name->valuestring) > 200) {
        fail(a, 400, "invalid_request", "name must be 1 to 200 characters");
    } else if ((why = target_problem(target->valuestring))) {
        fail(a, 400, "invalid_request", why);
    } else if (read_types(a, h, client, cJSON_GetObjectItemCaseSensitive(doc, "resourceTypes"),
                          &types) == 0) {
        struct hub_sub *sub = sk_calloc(1, sizeof(*sub));
        sk_uuid_random(sub->id);
        sub->client = sk_strdup(client->name);
        sub->owner = client;
        sub->name = sk_strdup(name->valuestring);
        sub->target = sk_strdup(target->valuestring);
        sub->types = types;
        sub->expires_us = sk_now_us() + h->conf->webhook_ttl_ms * 1000;
        store_new(a, s, sub);
    }
    cJSON_Delete(doc);
}

/* The client's own subscriptions by id, after q->after_id, up to q->limit. */
static void list(struct answer *a, struct hub *h, struct MHD_Connection *c,
                 const struct hub_client *client)
{
    struct hub_subs *s = h->subs;
    struct hub_query q = {.limit = h->conf->max_limit};
    const char *limit = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
    const char *token = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "pageToken");
    int n_args = MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, NULL, NULL);
    if (n_args > !!limit + !!token)
        return fail(a, 400, "unsupported_parameter",
                    "a query parameter this server does not implement was given");
    if (limit && (sk_parse_int(limit, &q.limit) != 0 || q.limit < 1))
        return fail(a, 400, "invalid_parameter", "limit must be a positive integer");
    if (q.limit > h->conf->max_limit)
        q.limit = h->conf->max_limit;
    if (token) {
        enum hub_token_check t =
            hub_token_read(h, token, "subscriptions", client->name, &q, NULL, sk_now_us() / 1000);
        if (t == HUB_TOKEN_EXPIRED)
            return fail(a, 410, "page_token_expired",
                        "the pageToken has expired: start the query again");
        if (t != HUB_TOKEN_OK)
            return fail(a, 400, "invalid_page_token", "the pageToken is not valid for this query");
    }
    /* Ordered by id: the list is small (HUB_SUBS_PER_CLIENT), so a scan per page is fine. */
    pthread_mutex_lock(&s->mu);
    sk_buf_puts(a->out, "{\"data\":[");
    int64_t n = 0;
    const char *after = q.after_id;
    bool more = false;
    for (;;) {
        const struct hub_sub *next = NULL;
        for (size_t i = 0; i < s->n; i++)
            if (strcmp(s->v[i]->client, client->name) == 0 && strcmp(s->v[i]->id, after) > 0 &&
                (!next || strcmp(s->v[i]->id, next->id) < 0))
                next = s->v[i];
        if (!next)
            break;
        if (n == q.limit) {
            more = true;
            break;
        }
        if (n++)
            sk_buf_putc(a->out, ',');
        put_sub(a->out, next);
        snprintf(q.after_id, sizeof(q.after_id), "%s", next->id);
        after = q.after_id;
    }
    pthread_mutex_unlock(&s->mu);
    sk_buf_putc(a->out, ']');
    if (more) {
        char *next_token = hub_token_make(h, "subscriptions", client->name, &q, sk_now_us() / 1000);
        sk_buf_puts(a->out, ",\"pageToken\":");
        sk_buf_json_string(a->out, next_token);
        free(next_token);
    }
    sk_buf_putc(a->out, '}');
    *a->status = 200;
}

/* GET, PATCH (renew) or DELETE of one of the client's own subscriptions. */
static void one(struct answer *a, struct hub *h, const struct hub_client *client,
                const char *method, const char *id_text)
{
    struct hub_subs *s = h->subs;
    char id[37];
    if (sk_uuid_normalize(id_text, id) < 0)
        return fail(a, 400, "invalid_id", "the id is not a UUID");
    struct sk_error err = {0};
    struct id_bind b = {id, client->name, sk_now_us() + h->conf->webhook_ttl_ms * 1000};
    int changes = 1;
    if (strcmp(method, "PATCH") == 0 &&
        run(s, "UPDATE hub_subs SET expires_us = ?3 WHERE id = ?1 AND client = ?2", bind_id, &b,
            &changes, &err) < 0)
        goto unavailable;
    if (strcmp(method, "DELETE") == 0) {
        if ((changes = hub_subs_delete_row(s, id, client->name, &err)) < 0)
            goto unavailable;
    }
    pthread_mutex_lock(&s->mu);
    ssize_t i = changes ? find_locked(s, id, client->name) : -1;
    if (i >= 0) {
        *a->status = strcmp(method, "DELETE") == 0 ? 204 : 200;
        if (strcmp(method, "PATCH") == 0)
            s->v[i]->expires_us = b.expires_us;
        if (*a->status == 204)
            hub_subs_remove_locked(s, (size_t)i);
        else
            put_sub(a->out, s->v[i]);
    }
    pthread_mutex_unlock(&s->mu);
    if (i < 0)
        return fail(a, 404, "not_found", "no such subscription");
    if (strcmp(method, "GET") != 0)
        sk_info(h->name, "client %s: subscription %s %s", client->name, id,
                *a->status == 204 ? "deleted" : "renewed");
    return;
unavailable:
    sk_error_log(h->name, "%s", err.msg);
    fail(a, 503, "unavailable", "the server cannot change the subscription now; try again");
}

void hub_subs_request(struct hub *h, struct MHD_Connection *c, const struct hub_client *client,
                      const char *method, const char *url, const char *upload, size_t upload_len,
                      int *status, struct sk_buf *out, const char **route)
{
    struct answer a = {status, out};
    const char *rest = url + strlen("/subscriptions");
    if (*rest == '\0') {
        *route = "/subscriptions";
        if (strcmp(method, "GET") == 0)
            return list(&a, h, c, client);
        if (strcmp(method, "POST") == 0)
            return create(&a, h, client, upload, upload_len);
        return fail(&a, 405, "method_not_allowed", "GET or POST here");
    }
    *route = "/subscriptions/{id}";
    if (rest[1] == '\0' || strchr(rest + 1, '/'))
        return fail(&a, 404, "not_found", "no such endpoint on this server");
    if (MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, NULL, NULL) > 0)
        return fail(&a, 400, "unsupported_parameter",
                    "a query parameter this server does not implement was given");
    if (strcmp(method, "GET") != 0 && strcmp(method, "PATCH") != 0 && strcmp(method, "DELETE") != 0)
        return fail(&a, 405, "method_not_allowed", "GET, PATCH or DELETE here");
    one(&a, h, client, method, rest + 1);
}
