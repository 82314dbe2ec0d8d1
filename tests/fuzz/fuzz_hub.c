/*
 * fuzz_hub.c: the outside input of the ss12000-api-sink (the hub,
 * connectors/ss12000api/): what a vendor sends before and after it
 * authenticates. The hub is opened once through its connector ops like the
 * daemon opens it (a YAML conf with a static-token client, a limited one and
 * an OAuth2 client; listen 127.0.0.1:0; state in /dev/shm), and each input
 * goes to the functions its request handlers call, on that open hub: a
 * request over loopback per input would spend most of its time in
 * libmicrohttpd and libcurl, not in the hub's parsers.
 *
 * Input: byte 0 picks the surface, the rest is its input:
 *   0  POST /token: the Authorization header up to the first newline (none
 *      when that line is empty), the form body after it (hub_auth_token)
 *   1  the Authorization header of a request (hub_auth_bearer)
 *   2  an access token payload the harness seals for a client (byte 1), then
 *      through hub_auth_bearer: what is read once the MAC matched
 *   3  a pageToken (byte 1: of which list) through hub_token_read
 *   4  a page token payload the harness signs (byte 1: of which list): the
 *      fields read once the MAC matched
 *   5  a query string (byte 1: type, byte 2: list, by id or lookup) into the
 *      type's filter (hub_filter_known/hub_filter_add as the handler does)
 *   6  a lookup body (byte 1: type) through hub_lookup_read_body
 *   7  a subscription body (POST /subscriptions, byte 1: which client)
 *   8  /subscriptions/{id} (byte 1: GET, PATCH or DELETE; the rest: the path's rest)
 *
 * Properties beyond "no crash": every status is a real HTTP status; /token
 * answers JSON with a string access_token (200, and that token then
 * authenticates the same client) or a string error, and never echoes a
 * secret it was given; a bearer names a configured client, and an access
 * token only an OAuth2 one; a page token read OK makes (hub_token_make) a
 * token that reads back to the same query and parameters; a filter's text
 * reads back to the same text, and a list with it (or a lookup's) runs as
 * SQL on the hub's database; a subscription answer is JSON, a created one
 * deletes (204).
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dirent.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sanitizer/allocator_interface.h>

#include "buf.h"
#include "config.h"
#include "connector.h"
#include "hub.h"
#include "hub_query.h"
#include "hub_subs.h"
#include "log.h"
#include "util.h"

static struct sk_sink sink;
static struct hub *hub;

static const char *const clients_yaml =
    "clients:\n"
    "  lms: {token: lms-token-0123456789, entities: all}\n"
    "  lib: {token: lib-token-0123456789, entities: 'Group, organisations', attributes: []}\n"
    "  app: {oauth2: {client_id: app-id, client_secret: app-secret-0123456789}, entities: all}\n"
    "  org: {oauth2: {client_id: org-id, client_secret: org-secret-0123456789}, entities: all,\n"
    "        organisations: [9f4c6b1e-2f0a-4a51-9d2e-5b7c3a1d8e60]}\n";

static char state_dir[64];
static bool trace; /* FUZZ_HUB_TRACE set: each answer's status on stderr (to check a seed) */

#define TRACE(...)                                                                                 \
    do {                                                                                           \
        if (trace)                                                                                 \
            fprintf(stderr, "fuzz_hub: " __VA_ARGS__);                                             \
    } while (0)

/* The state directory goes at exit (the hub stays open: its files are unlinked under it). */
static void remove_state(void)
{
    DIR *d = opendir(state_dir);
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.') {
            char *path = sk_asprintf("%s/%s", state_dir, de->d_name);
            unlink(path);
            free(path);
        }
    if (d)
        closedir(d);
    rmdir(state_dir);
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_hub: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    remove_state(); /* abort() runs no atexit handler */
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    sk_log_setup(SK_LOG_ERROR, false);
    trace = getenv("FUZZ_HUB_TRACE") != NULL;
    snprintf(state_dir, sizeof(state_dir), "/dev/shm/fuzz_hub.%d", (int)getpid());
    atexit(remove_state);
    char *yaml = sk_asprintf("listen: 127.0.0.1:0\nstate_dir: %s\nmax_limit: 50\n%s", state_dir,
                             clients_yaml);
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = sk_config_load_string(yaml, strlen(yaml), "fuzz_hub.yaml", &errs);
    free(yaml);
    sink.ops = sk_registry_sink("ss12000-api-sink");
    if (!root || !sink.ops)
        die("no conf or no ss12000-api-sink", errs.n ? errs.v[0].text : NULL);
    sink.conf = sk_calloc(1, sink.ops->conf_size);
    sk_options_apply(sink.ops->options, root, sink.conf, &errs);
    if (errs.n)
        die("conf", errs.v[0].text);
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
    sink.name = "hub";
    sink.incarnation = "fuzz-incarnation";
    sink.entities = sk_entities;
    sink.n_entities = SK_ENTITY_COUNT;
    struct sk_error err = {0};
    if (sink.ops->open(&sink, &err) < 0)
        die("open", err.msg);
    hub = sink.priv;
    return 0;
}

static const struct hub_client *client_named(const char *name)
{
    const struct hub_client *c = hub_client_by_name(hub, name);
    if (!c)
        die("no client", name);
    return c;
}

static bool is_client(const struct hub_client *c)
{
    return c >= hub->clients && c < hub->clients + hub->n_clients;
}

static bool real_status(int s)
{
    return s >= 100 && s <= 599;
}

/* An error or answer body that must be JSON (an object); returns it (caller deletes). */
static cJSON *json_answer(const struct sk_buf *b, const char *what)
{
    cJSON *j = cJSON_ParseWithLength(b->p ? b->p : "", b->len);
    if (!cJSON_IsObject(j))
        die(what, "the answer is not a JSON object");
    return j;
}

/* A C string of the n bytes (cut at a NUL, as a header or form from libmicrohttpd would be). */
static char *text_of(const uint8_t *p, size_t n)
{
    return sk_strndup((const char *)p, n);
}

/* ---- 0: POST /token ------------------------------------------------------------ */

static void surface_token(const uint8_t *p, size_t n)
{
    const uint8_t *nl = memchr(p, '\n', n);
    size_t hl = nl ? (size_t)(nl - p) : n;
    char *authorization = hl ? text_of(p, hl) : NULL;
    char *form = nl ? text_of(nl + 1, n - hl - 1) : sk_strdup("");
    struct sk_buf out = {0};
    const struct hub_client *client;
    bool basic;
    int status = hub_auth_token(hub, authorization, form, &out, &client, &basic);
    TRACE("/token %d %s\n", status, out.p);
    if (status != 200 && status != 400 && status != 401)
        die("/token", "status not 200, 400 or 401");
    if (basic != (authorization && strncasecmp(authorization, "Basic ", 6) == 0))
        die("/token", "basic does not follow the header");
    cJSON *j = json_answer(&out, "/token");
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(j, "access_token");
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (status == 200) {
        if (!cJSON_IsString(at) || error || !client || !is_client(client) || !client->client_secret)
            die("/token", "a 200 without an access token for an OAuth2 client");
        char *bearer = sk_asprintf("Bearer %s", at->valuestring);
        bool expired;
        if (hub_auth_bearer(hub, bearer, &expired) != client || expired)
            die("/token", "its access token does not authenticate the client it was given to");
        free(bearer);
    } else if (!cJSON_IsString(error) || at) {
        die("/token", "an error answer without a string error");
    }
    if (client && !is_client(client))
        die("/token", "client is not a configured one");
    /* Never echoed: the secrets of the configured clients. */
    for (size_t i = 0; i < hub->n_clients; i++)
        if (hub->clients[i].client_secret && strstr(out.p, hub->clients[i].client_secret))
            die("/token", "the answer holds a client secret");
    cJSON_Delete(j);
    sk_buf_free(&out);
    free(authorization);
    free(form);
}

/* ---- 1, 2: the Authorization header ---------------------------------------------- */

static void check_bearer(const char *header, bool sealed)
{
    bool expired = true;
    const struct hub_client *c = hub_auth_bearer(hub, header, &expired);
    TRACE("bearer: %s%s\n", c ? c->name : "none", expired ? " (expired)" : "");
    if (c && !is_client(c))
        die("bearer", "names no configured client");
    if (c && expired)
        die("bearer", "a client with expired set");
    if (c && !sealed && !c->token && !c->client_secret)
        die("bearer", "a client without credentials");
    if (c && sealed && !c->client_secret)
        die("bearer", "an access token for a client without OAuth2");
}

static void surface_bearer(const uint8_t *p, size_t n)
{
    char *header = text_of(p, n);
    check_bearer(header, false);
    free(header);
}

static void surface_sealed(const uint8_t *p, size_t n)
{
    if (n < 1)
        return;
    static const char *const names[] = {"app", "org", "lms"};
    const struct hub_client *c = client_named(names[p[0] % 3]);
    char *payload = text_of(p + 1, n - 1);
    /* lms has no secret: sealed under a guess, which must not authenticate anyone. */
    char *token = hub_token_seal(hub, payload, c->client_secret ? c->client_secret : "guess");
    char *header = sk_asprintf("Bearer %s", token);
    check_bearer(header, true);
    bool expired;
    const struct hub_client *got = hub_auth_bearer(hub, header, &expired);
    if (got && got != c && !got->token)
        die("sealed", "an access token sealed for one client authenticates another");
    free(header);
    free(token);
    free(payload);
}

static void run_page(const struct sk_entity *e, struct hub_query *q);

/* ---- 3, 4: page tokens --------------------------------------------------------------- */

struct list_kind {
    const char *what;
    const struct sk_entity *e; /* NULL: deletedEntities or subscriptions (no filter) */
};

static struct list_kind list_kind(uint8_t b)
{
    unsigned k = b % (SK_ENTITY_COUNT + 2);
    if (k == SK_ENTITY_COUNT)
        return (struct list_kind){"deletedEntities", NULL};
    if (k == SK_ENTITY_COUNT + 1)
        return (struct list_kind){"subscriptions", NULL};
    return (struct list_kind){sk_entities[k]->collection, sk_entities[k]};
}

static uint32_t have_mask(void)
{
    uint32_t have = 0;
    for (size_t i = 0; i < hub->n_entities; i++)
        have |= 1u << sk_entity_index(hub->entities[i]);
    return have;
}

static bool same_query(const struct hub_query *a, const struct hub_query *b)
{
    return a->modified_after == b->modified_after && a->modified_before == b->modified_before &&
           a->created_after == b->created_after && a->created_before == b->created_before &&
           a->after_stamp == b->after_stamp && strcmp(a->after_id, b->after_id) == 0 &&
           strcmp(a->after_key, b->after_key) == 0 && a->entity_mask == b->entity_mask;
}

/* A token read OK makes a token that reads back to the same query and parameters. */
static void check_page_token(const char *token, struct list_kind k)
{
    const char *client = "lms";
    int64_t now = sk_now_us() / 1000;
    struct hub_query q = {0};
    struct hub_filter *f = k.e ? hub_filter_new(k.e, HUB_USE_LIST, have_mask(), have_mask()) : NULL;
    enum hub_token_check t = hub_token_read(hub, token, k.what, client, &q, f, now);
    TRACE("page token of %s: %d\n", k.what, (int)t);
    if (t != HUB_TOKEN_OK && t != HUB_TOKEN_BAD && t != HUB_TOKEN_EXPIRED)
        die("page token", "not OK, BAD or EXPIRED");
    if (t == HUB_TOKEN_OK) {
        q.filter = f;
        char *again = hub_token_make(hub, k.what, client, &q, now);
        struct hub_query q2 = {0};
        struct hub_filter *f2 =
            k.e ? hub_filter_new(k.e, HUB_USE_LIST, have_mask(), have_mask()) : NULL;
        if (hub_token_read(hub, again, k.what, client, &q2, f2, now) != HUB_TOKEN_OK)
            die("page token", "the token made from a read one does not read");
        if (!same_query(&q, &q2))
            die("page token", "the token made from a read one holds another query");
        if (f) {
            char *a = hub_filter_text(f), *b = hub_filter_text(f2);
            if (strcmp(a, b) != 0)
                die("page token", "the token made from a read one holds other parameters");
            free(a);
            free(b);
        }
        /* The page it continues runs (not for subscriptions: hub_subs.c pages in memory). */
        if (strcmp(k.what, "subscriptions") != 0) {
            q.limit = 5;
            run_page(k.e, &q);
        }
        /* Another client or list never reads it. */
        struct hub_query q3 = {0};
        if (hub_token_read(hub, again, k.what, "lib", &q3, NULL, now) != HUB_TOKEN_BAD)
            die("page token", "read by another client");
        free(again);
        hub_filter_free(f2);
    }
    hub_filter_free(f);
}

static void surface_page_token(const uint8_t *p, size_t n)
{
    if (n < 1)
        return;
    char *token = text_of(p + 1, n - 1);
    check_page_token(token, list_kind(p[0]));
    free(token);
}

/* base64url without padding (hub_token.c's encoding) of n bytes into t. */
static void put_b64url(struct sk_buf *t, const uint8_t *in, size_t n)
{
    char *b64 = sk_malloc(4 * (n / 3 + 1) + 1);
    int len = EVP_EncodeBlock((unsigned char *)b64, in, (int)n);
    while (len > 0 && b64[len - 1] == '=')
        len--;
    for (int i = 0; i < len; i++)
        sk_buf_putc(t, b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i]);
    free(b64);
}

/* The payload signed as hub_token_make signs (base64url(payload) "." base64url(MAC)): a token
 * that is one of ours but says anything. */
static void surface_signed_page_token(const uint8_t *p, size_t n)
{
    if (n < 1)
        return;
    uint8_t mac[32];
    unsigned mac_len = sizeof(mac);
    HMAC(EVP_sha256(), hub->secret, HUB_SECRET_LEN, p + 1, n - 1, mac, &mac_len);
    struct sk_buf t = {0};
    put_b64url(&t, p + 1, n - 1);
    sk_buf_putc(&t, '.');
    put_b64url(&t, mac, mac_len);
    check_page_token(t.p, list_kind(p[0]));
    sk_buf_free(&t);
}

/* ---- 5, 6: filters and lookups ------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* As libmicrohttpd gives a query argument: '+' a space, %XX decoded, a bad escape kept. */
static void unescape(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == '+') {
            *w++ = ' ';
        } else if (*r == '%' && hexval(r[1]) >= 0 && hexval(r[2]) >= 0) {
            *w++ = (char)(hexval(r[1]) << 4 | hexval(r[2]));
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

/* The page q asks for runs as SQL on the hub's database (a reader as the handler takes). */
static void run_page(const struct sk_entity *e, struct hub_query *q)
{
    struct sk_error err = {0};
    sqlite3 *db = hub_reader_take(hub, &err);
    if (!db)
        die("reader", err.msg);
    q->view = (struct hub_view){.client = client_named("lms"), .scope_sql = ""};
    struct sk_buf out = {0};
    bool more;
    int64_t last_stamp;
    char last_id[37], last_key[HUB_KEY_MAX];
    int64_t rows =
        e ? hub_store_list(db, e, q, &out, &more, &last_stamp, last_id, last_key, &err)
          : hub_store_deleted(db, NULL, q, &out, &more, &last_stamp, last_id, NULL, &err);
    if (rows < 0)
        die("a page fails", err.msg);
    hub_reader_give(hub, db);
    sk_buf_free(&out);
}

/* A list with f runs as SQL. */
static void run_list(const struct sk_entity *e, struct hub_filter *f, int64_t limit)
{
    struct hub_query q = {.modified_after = INT64_MIN,
                          .modified_before = INT64_MAX,
                          .created_after = INT64_MIN,
                          .created_before = INT64_MAX,
                          .after_stamp = INT64_MIN,
                          .filter = f,
                          .limit = limit};
    run_page(e, &q);
}

static void check_filter_text(const struct sk_entity *e, enum hub_use use, struct hub_filter *f)
{
    char *text = hub_filter_text(f);
    struct hub_filter *g = hub_filter_new(e, use, have_mask(), have_mask());
    if (hub_filter_read_text(g, text) < 0)
        die("filter", "its text does not read back");
    char *again = hub_filter_text(g);
    if (strcmp(text, again) != 0 || hub_filter_count(g) != hub_filter_count(f))
        die("filter", "its text reads back to other parameters");
    free(text);
    free(again);
    hub_filter_free(g);
}

static void surface_filter(const uint8_t *p, size_t n)
{
    if (n < 2)
        return;
    const struct sk_entity *e = sk_entities[p[0] % SK_ENTITY_COUNT];
    enum hub_use use = (enum hub_use)(p[1] % 3);
    struct hub_filter *f = hub_filter_new(e, use, have_mask(), have_mask());
    char *query = text_of(p + 2, n - 2), *save = NULL;
    bool ok = true;
    for (char *kv = strtok_r(query, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '='), *value = kv + strlen(kv); /* none: "" */
        if (eq) {
            *eq = '\0';
            value = eq + 1;
        }
        unescape(kv);
        unescape(value);
        const char *why = NULL;
        if (hub_filter_known(f, kv) && hub_filter_add(f, kv, value, &why) < 0) {
            /* Static text: not the input, not an allocation of its own. */
            if (!why || (why >= kv && why <= value + strlen(value)) ||
                __sanitizer_get_ownership(why))
                die("filter", "a refusal without a static reason");
            ok = false;
        }
    }
    free(query);
    TRACE("filter of %s: %s, %d parameters\n", e->collection, ok ? "ok" : "refused",
          hub_filter_count(f));
    if (ok) {
        check_filter_text(e, use, f);
        if (use == HUB_USE_LIST)
            run_list(e, f, 5);
    }
    hub_filter_free(f);
}

static void surface_lookup(const uint8_t *p, size_t n)
{
    if (n < 1)
        return;
    const struct sk_entity *e = sk_entities[p[0] % SK_ENTITY_COUNT];
    if (!hub_lookup_defined(e))
        e = sk_entity_by_name("Person");
    struct hub_filter *f = hub_filter_new(e, HUB_USE_LOOKUP, have_mask(), have_mask());
    const char *why = NULL;
    size_t max = (size_t)hub->conf->max_limit;
    int rc = hub_lookup_read_body(f, (const char *)p + 1, n - 1, max, &why);
    TRACE("lookup of %s: %s, %d values\n", e->collection, rc == 0 ? "ok" : why,
          hub_filter_count(f));
    if (rc == 0) {
        if ((size_t)hub_filter_count(f) > max)
            die("lookup", "more values than max_limit taken");
        check_filter_text(e, HUB_USE_LOOKUP, f);
        if (hub_filter_count(f) > 0)
            run_list(e, f, hub->conf->max_limit * 10);
    } else if (!why) {
        die("lookup", "a refusal without a reason");
    }
    hub_filter_free(f);
}

/* ---- 7, 8: subscriptions --------------------------------------------------------------- */

static int subs_request(const struct hub_client *c, const char *method, const char *url,
                        const char *body, size_t len, struct sk_buf *out)
{
    int status = 0;
    const char *route = NULL;
    hub_subs_request(hub, NULL, c, method, url, body, len, &status, out, &route);
    TRACE("%s %s: %d %s\n", method, route ? route : "?", status, out->p ? out->p : "");
    if (!real_status(status) || !route)
        die("subscriptions", "no real status or no route");
    if (status != 204) {
        cJSON *j = json_answer(out, "subscriptions");
        cJSON_Delete(j);
    }
    return status;
}

static void surface_subscribe(const uint8_t *p, size_t n)
{
    if (n < 1)
        return;
    static const char *const names[] = {"lms", "lib", "org"};
    const struct hub_client *c = client_named(names[p[0] % 3]);
    struct sk_buf out = {0};
    int status = subs_request(c, "POST", "/subscriptions", (const char *)p + 1, n - 1, &out);
    if (status == 201) {
        cJSON *j = json_answer(&out, "subscription");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
        if (!cJSON_IsString(id))
            die("subscription", "created without an id");
        char *url = sk_asprintf("/subscriptions/%s", id->valuestring);
        struct sk_buf del = {0};
        if (subs_request(c, "DELETE", url, NULL, 0, &del) != 204)
            die("subscription", "a created one does not delete");
        sk_buf_free(&del);
        free(url);
        cJSON_Delete(j);
    } else if (status != 400 && status != 403 && status != 409) {
        die("subscription", "a create answered other than 201, 400, 403 or 409");
    }
    sk_buf_free(&out);
}

static void surface_subscription(const uint8_t *p, size_t n)
{
    if (n < 1)
        return;
    static const char *const methods[] = {"GET", "PATCH", "DELETE", "PUT"};
    char *rest = text_of(p + 1, n - 1);
    char *url = sk_asprintf("/subscriptions%s", rest);
    struct sk_buf out = {0};
    subs_request(client_named("lms"), methods[p[0] % 4], url, NULL, 0, &out);
    sk_buf_free(&out);
    free(url);
    free(rest);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (data[0] % 9) {
    case 0:
        surface_token(p, n);
        break;
    case 1:
        surface_bearer(p, n);
        break;
    case 2:
        surface_sealed(p, n);
        break;
    case 3:
        surface_page_token(p, n);
        break;
    case 4:
        surface_signed_page_token(p, n);
        break;
    case 5:
        surface_filter(p, n);
        break;
    case 6:
        surface_lookup(p, n);
        break;
    case 7:
        surface_subscribe(p, n);
        break;
    default:
        surface_subscription(p, n);
        break;
    }
    return 0;
}
