/* http_client.c: see http_client.h. */
#include "http_client.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "log.h"
#include "util.h"

/* The token endpoint's whole answer: a token of SK_HTTP_TOKEN_MAX_LEN and
 * its few fields fit with room to spare; a larger answer is not read. */
#define TOKEN_RESPONSE_MAX (256 * 1024)

struct sk_http_client {
    struct sk_http_client_conf conf;
    const char *component;
    CURL *curl;
    char curl_err[CURL_ERROR_SIZE];
    char *token;                  /* bearer or OAuth2 access token (secret) */
    int64_t token_valid_until_ms; /* sk_mono_ms; INT64_MAX for a static token */
    int64_t token_not_before_ms;  /* the token endpoint's Retry-After (sk_mono_ms) */
};

/* What the callbacks of one transfer fill. */
struct transfer {
    struct sk_buf body;
    size_t limit;
    bool too_big;
    int64_t retry_after_ms;
    char content_type[128];
    char etag[SK_HTTP_ETAG_MAX];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    /* Once per process and never undone: clients come and go on several
     * threads, and curl_global_cleanup is not safe while another runs. */
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void wipe_free(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

int64_t sk_http_parse_retry_after(const char *v, int64_t now_unix_ms)
{
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n > 0 && isspace((unsigned char)v[n - 1]))
        n--;
    if (n == 0)
        return -1;
    if (strspn(v, "0123456789") >= n) {
        /* digit by digit, stopping at the cap: 20 digits must not overflow */
        int64_t s = 0;
        for (size_t i = 0; i < n && s <= SK_HTTP_RETRY_AFTER_MAX_MS / 1000; i++)
            s = s * 10 + (v[i] - '0');
        return s > SK_HTTP_RETRY_AFTER_MAX_MS / 1000 ? SK_HTTP_RETRY_AFTER_MAX_MS : s * 1000;
    }
    char date[128];
    snprintf(date, sizeof(date), "%.*s", (int)n, v);
    time_t t = curl_getdate(date, NULL);
    if (t < 0)
        return -1;
    int64_t ms = (int64_t)t * 1000 - now_unix_ms;
    if (ms < 0)
        return 0;
    return ms > SK_HTTP_RETRY_AFTER_MAX_MS ? SK_HTTP_RETRY_AFTER_MAX_MS : ms;
}

char *sk_http_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    struct sk_buf b = {0};
    sk_buf_reserve(&b, strlen(s) * 3);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            sk_buf_putc(&b, (char)*p);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            sk_buf_putn(&b, e, 3);
        }
    }
    return sk_buf_take(&b);
}

/* The body as curl hands it over: decoded already when the server
 * compressed it (CURLOPT_ACCEPT_ENCODING), so the limit counts what we keep
 * in memory, not what crossed the wire. */
static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct transfer *t = userdata;
    size_t n = size * nmemb;
    if (n > t->limit - t->body.len) {
        t->too_big = true;
        return 0; /* curl aborts with CURLE_WRITE_ERROR */
    }
    sk_buf_putn(&t->body, ptr, n);
    return n;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct transfer *t = userdata;
    size_t n = size * nitems;
    char line[512];
    size_t k = n < sizeof(line) - 1 ? n : sizeof(line) - 1;
    memcpy(line, buf, k);
    line[k] = '\0';
    while (k > 0 && (line[k - 1] == '\r' || line[k - 1] == '\n'))
        line[--k] = '\0';
    char *colon = strchr(line, ':');
    if (!colon)
        return n;
    *colon = '\0';
    const char *val = colon + 1;
    while (*val == ' ' || *val == '\t')
        val++;
    if (strcasecmp(line, "Retry-After") == 0)
        t->retry_after_ms = sk_http_parse_retry_after(val, sk_now_us() / 1000);
    else if (strcasecmp(line, "Content-Type") == 0)
        snprintf(t->content_type, sizeof(t->content_type), "%s", val);
    else if (strcasecmp(line, "ETag") == 0 && sk_http_etag_ok(val))
        snprintf(t->etag, sizeof(t->etag), "%s", val);
    return n;
}

struct sk_http_client *sk_http_client_new(const struct sk_http_client_conf *conf,
                                          const char *component, struct sk_error *err)
{
    const struct sk_http_client_conf *c = conf;
    switch (c->auth) {
    case SK_HTTP_AUTH_BEARER:
        if (!c->token || !*c->token) {
            sk_error_set(err, SK_ERR_FATAL, "auth bearer needs a token");
            return NULL;
        }
        break;
    case SK_HTTP_AUTH_OAUTH2:
        if (!c->token_url || !*c->token_url || !c->client_id || !c->client_secret) {
            sk_error_set(err, SK_ERR_FATAL,
                         "auth oauth2 needs token_url, client_id and client_secret");
            return NULL;
        }
        break;
    case SK_HTTP_AUTH_APIKEY:
        if (!c->header || !*c->header || !c->value) {
            sk_error_set(err, SK_ERR_FATAL, "auth apikey needs a header and a value");
            return NULL;
        }
        break;
    case SK_HTTP_AUTH_NONE:
        break;
    }
    pthread_once(&curl_once, curl_init_once);
    struct sk_http_client *h = sk_calloc(1, sizeof(*h));
    h->conf = *conf;
    if (h->conf.max_response_size <= 0)
        h->conf.max_response_size = SK_HTTP_MAX_RESPONSE_DEFAULT;
    h->component = component;
    h->curl = curl_easy_init();
    if (!h->curl) {
        free(h);
        sk_error_set(err, SK_ERR_FATAL, "libcurl: cannot create a handle");
        return NULL;
    }
    if (c->auth == SK_HTTP_AUTH_BEARER) {
        h->token = sk_strdup(c->token);
        h->token_valid_until_ms = INT64_MAX;
    }
    if (c->insecure_skip_verify)
        sk_warn(component, "insecure_skip_verify: TLS certificates are NOT verified");
    return h;
}

void sk_http_client_free(struct sk_http_client *h)
{
    if (!h)
        return;
    curl_easy_cleanup(h->curl);
    wipe_free(h->token);
    free(h);
}

void sk_http_resp_free(struct sk_http_resp *r)
{
    sk_buf_free(&r->body);
    memset(r, 0, sizeof(*r));
    r->retry_after_ms = -1;
}

int64_t sk_http_client_token_valid_ms(const struct sk_http_client *h)
{
    if (!h->token)
        return 0;
    if (h->token_valid_until_ms == INT64_MAX)
        return INT64_MAX;
    int64_t left = h->token_valid_until_ms - sk_mono_ms();
    return left > 0 ? left : 0;
}

/* The settings of every request: curl_easy_reset clears the previous
 * request's but keeps the connection cache. */
static void setup_handle(struct sk_http_client *h)
{
    CURL *c = h->curl;
    const struct sk_http_client_conf *conf = &h->conf;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->curl_err);
    h->curl_err[0] = '\0';
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)conf->timeout_ms);
    int64_t connect_ms = conf->connect_timeout_ms;
    if (connect_ms <= 0)
        connect_ms = conf->timeout_ms < 10000 ? conf->timeout_ms : 10000;
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, ""); /* whatever libcurl can decode */
    if (conf->user_agent)
        curl_easy_setopt(c, CURLOPT_USERAGENT, conf->user_agent);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    /* Credentials must never follow a redirect to another host; a server
     * that redirects is a misconfiguration to see, not to follow. */
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    if (conf->ca_file && *conf->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, conf->ca_file);
    if (conf->client_cert && *conf->client_cert)
        curl_easy_setopt(c, CURLOPT_SSLCERT, conf->client_cert);
    if (conf->client_key && *conf->client_key)
        curl_easy_setopt(c, CURLOPT_SSLKEY, conf->client_key);
    if (conf->insecure_skip_verify) {
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
}

/* Transport errors are retriable, except those only a new configuration fixes. */
static int curl_failure(struct sk_http_client *h, CURLcode rc, const char *what,
                        struct sk_error *err)
{
    enum sk_err_class cls = SK_ERR_RETRIABLE;
    switch (rc) {
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        cls = SK_ERR_FATAL;
        break;
    default:
        break;
    }
    return sk_error_set(err, cls, "%s: %s", what,
                        h->curl_err[0] ? h->curl_err : curl_easy_strerror(rc));
}

/* Sends the request prepared on the handle; at most limit body bytes
 * (limit_name: the option or rule that sets it, for the error message). */
static int perform(struct sk_http_client *h, const char *what, size_t limit, const char *limit_name,
                   struct sk_http_resp *resp, struct sk_error *err)
{
    struct transfer t = {.limit = limit, .retry_after_ms = -1};
    CURL *c = h->curl;
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
    /* A Content-Length over the limit is refused before a byte is read. */
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)limit);
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        sk_buf_free(&t.body);
        if (t.too_big || rc == CURLE_FILESIZE_EXCEEDED)
            return sk_error_set(err, SK_ERR_PERMANENT,
                                "%s: response larger than %s (%zu bytes, counted "
                                "decompressed); transfer aborted",
                                what, limit_name, limit);
        return curl_failure(h, rc, what, err);
    }
    memset(resp, 0, sizeof(*resp));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
    resp->body = t.body;
    if (!resp->body.p)
        sk_buf_reserve(&resp->body, 0);
    resp->body.p[resp->body.len] = '\0';
    resp->retry_after_ms = t.retry_after_ms;
    snprintf(resp->content_type, sizeof(resp->content_type), "%s", t.content_type);
    snprintf(resp->etag, sizeof(resp->etag), "%s", t.etag);
    return 0;
}

/* expires_in as the token endpoint sent it (a number, or a string from some
 * servers), clamped: 1e999, a negative number or garbage must neither
 * overflow the arithmetic below nor make every request fetch a token. */
static int64_t token_ttl_s(const cJSON *exp, const char *component)
{
    double v;
    if (cJSON_IsNumber(exp))
        v = exp->valuedouble;
    else if (cJSON_IsString(exp))
        v = strtod(exp->valuestring, NULL);
    else
        return 3600; /* RFC 6749 §5.1: optional; an hour is what servers commonly give */
    if (v >= SK_HTTP_TOKEN_TTL_MIN_S && v <= SK_HTTP_TOKEN_TTL_MAX_S)
        return (int64_t)v;
    int64_t ttl = v > SK_HTTP_TOKEN_TTL_MAX_S ? SK_HTTP_TOKEN_TTL_MAX_S : SK_HTTP_TOKEN_TTL_MIN_S;
    sk_warn(component, "OAuth2 token endpoint sent expires_in %g; using %" PRId64 " s", v, ttl);
    return ttl;
}

/*
 * True if tok is an RFC 6750 §2.1 b64token: 1*( ALPHA / DIGIT / "-" / "." /
 * "_" / "~" / "+" / "/" ) *"=". No space, no control byte.
 */
static bool b64token(const char *tok)
{
    const char *p = tok;
    /* ASCII only, whatever the locale says a letter is */
    while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
           (*p && strchr("-._~+/", *p)))
        p++;
    if (p == tok)
        return false;
    while (*p == '=')
        p++;
    return *p == '\0';
}

/* OAuth2 client credentials (RFC 6749 §4.4): client_id and client_secret in
 * the form body (client_secret_post), which Entra ID and most token
 * endpoints accept. */
static int fetch_token(struct sk_http_client *h, struct sk_error *err)
{
    const struct sk_http_client_conf *c = &h->conf;
    int64_t wait = h->token_not_before_ms - sk_mono_ms();
    if (wait > 0 && wait > c->max_wait_ms)
        return sk_error_set(err, SK_ERR_RETRIABLE,
                            "token request to %s: the token endpoint asked to wait "
                            "(Retry-After) %" PRId64 " s more",
                            c->token_url, (wait + 999) / 1000);
    if (wait > 0)
        sk_sleep_ms(wait);
    char *id = sk_http_escape(c->client_id), *secret = sk_http_escape(c->client_secret);
    char *scope = c->scope && *c->scope ? sk_http_escape(c->scope) : NULL;
    char *form = sk_asprintf("grant_type=client_credentials&client_id=%s&client_secret=%s%s%s", id,
                             secret, scope ? "&scope=" : "", scope ? scope : "");
    free(id);
    wipe_free(secret);
    free(scope);
    setup_handle(h);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Accept: application/json");
    hdrs = curl_slist_append(hdrs, "Content-Type: application/x-www-form-urlencoded");
    curl_easy_setopt(h->curl, CURLOPT_URL, c->token_url);
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, form);
    char what[300];
    snprintf(what, sizeof(what), "token request to %.250s", c->token_url);
    struct sk_http_resp r;
    size_t limit = c->max_response_size < TOKEN_RESPONSE_MAX ? (size_t)c->max_response_size
                                                             : TOKEN_RESPONSE_MAX;
    int rc = perform(h, what, limit, "the limit of a token answer", &r, err);
    curl_slist_free_all(hdrs);
    wipe_free(form);
    if (rc) {
        if (err->cls == SK_ERR_PERMANENT)
            err->cls = SK_ERR_FATAL; /* not the caller's request that is too big */
        return -1;
    }
    /* Throttled: no token request before the Retry-After is over (whatever
     * request asks for the token next), as for the API's own answers. */
    if ((r.status == 429 || r.status == 503) && r.retry_after_ms > 0)
        h->token_not_before_ms = sk_mono_ms() + r.retry_after_ms;
    cJSON *doc = cJSON_ParseWithLength(r.body.p, r.body.len);
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(doc, "access_token");
    if (r.status != 200 || !cJSON_IsString(tok) || !*tok->valuestring) {
        /* Only the registered error code (RFC 6749 §5.2), never the body: a
         * token endpoint's answer may hold secrets. A 4xx other than
         * throttling is our credentials or scope: retrying will not help. */
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(doc, "error");
        bool refused = r.status >= 400 && r.status < 500 && r.status != 429 && r.status != 408;
        sk_error_set(err, refused ? SK_ERR_FATAL : SK_ERR_RETRIABLE, "%s: HTTP %ld%s%.64s%s", what,
                     r.status, cJSON_IsString(e) ? ": " : "",
                     cJSON_IsString(e) ? e->valuestring : "",
                     r.status == 200 ? " without an access_token" : "");
        cJSON_Delete(doc);
        sk_buf_wipe(&r.body);
        return -1;
    }
    size_t len = strlen(tok->valuestring);
    if (len > SK_HTTP_TOKEN_MAX_LEN) {
        sk_error_set(err, SK_ERR_FATAL,
                     "%s: the access token is %zu bytes, more than the %d accepted; refused", what,
                     len, SK_HTTP_TOKEN_MAX_LEN);
        cJSON_Delete(doc);
        sk_buf_wipe(&r.body);
        return -1;
    }
    if (!b64token(tok->valuestring)) {
        /* It goes into "Authorization: Bearer %s" of every request: a CR or
         * LF would add headers of the token endpoint's choosing. Never
         * quoted: it is a secret, whatever else it is. */
        sk_error_set(err, SK_ERR_FATAL,
                     "%s: the access token holds a byte that is not allowed in a bearer token "
                     "(RFC 6750 b64token: letters, digits, -._~+/ and a trailing =); refused",
                     what);
        explicit_bzero(tok->valuestring, len);
        cJSON_Delete(doc);
        sk_buf_wipe(&r.body);
        return -1;
    }
    int64_t ttl_ms =
        token_ttl_s(cJSON_GetObjectItemCaseSensitive(doc, "expires_in"), h->component) * 1000;
    int64_t margin = ttl_ms / 4 < SK_HTTP_TOKEN_MARGIN_MS ? ttl_ms / 4 : SK_HTTP_TOKEN_MARGIN_MS;
    wipe_free(h->token);
    h->token = sk_strdup(tok->valuestring);
    h->token_valid_until_ms = sk_mono_ms() + ttl_ms - margin;
    sk_debug(h->component, "OAuth2 token fetched, valid %" PRId64 " s", ttl_ms / 1000);
    explicit_bzero(tok->valuestring, len);
    cJSON_Delete(doc);
    sk_buf_wipe(&r.body);
    return 0;
}

/* The auth header line (malloc'ed, a secret; NULL for none). */
static int auth_line(struct sk_http_client *h, char **line, struct sk_error *err)
{
    const struct sk_http_client_conf *c = &h->conf;
    *line = NULL;
    switch (c->auth) {
    case SK_HTTP_AUTH_NONE:
        return 0;
    case SK_HTTP_AUTH_APIKEY:
        *line = sk_asprintf("%s: %s", c->header, c->value);
        return 0;
    case SK_HTTP_AUTH_OAUTH2:
        if ((!h->token || sk_mono_ms() >= h->token_valid_until_ms) && fetch_token(h, err))
            return -1;
        break;
    case SK_HTTP_AUTH_BEARER:
        break;
    }
    *line = sk_asprintf("Authorization: Bearer %s", h->token);
    return 0;
}

bool sk_http_etag_ok(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n >= SK_HTTP_ETAG_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] > 0x7e)
            return false;
    return true;
}

int sk_http_client_request(struct sk_http_client *h, const char *method, const char *url,
                           const char *body, struct sk_http_resp *resp, struct sk_error *err)
{
    return sk_http_client_request_if(h, method, url, body, NULL, resp, err);
}

int sk_http_client_request_if(struct sk_http_client *h, const char *method, const char *url,
                              const char *body, const char *if_match, struct sk_http_resp *resp,
                              struct sk_error *err)
{
    memset(resp, 0, sizeof(*resp));
    if (if_match && !sk_http_etag_ok(if_match))
        return sk_error_set(err, SK_ERR_PERMANENT, "%s %.580s: unusable If-Match value", method,
                            url);
    resp->retry_after_ms = -1;
    char what[600];
    snprintf(what, sizeof(what), "%s %.580s", method, url);
    bool sends_body = body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                      strcmp(method, "PATCH") == 0;
    for (int attempt = 0;; attempt++) {
        char *auth = NULL;
        if (auth_line(h, &auth, err))
            return -1;
        setup_handle(h);
        CURL *c = h->curl;
        struct curl_slist *hdrs = NULL;
        if (h->conf.accept) {
            char *accept = sk_asprintf("Accept: %s", h->conf.accept);
            hdrs = curl_slist_append(hdrs, accept);
            free(accept);
        }
        if (body && h->conf.content_type) {
            char *ct = sk_asprintf("Content-Type: %s", h->conf.content_type);
            hdrs = curl_slist_append(hdrs, ct);
            free(ct);
        }
        if (if_match) {
            char *line = sk_asprintf("If-Match: %s", if_match);
            hdrs = curl_slist_append(hdrs, line);
            free(line);
        }
        if (auth)
            hdrs = curl_slist_append(hdrs, auth);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
        if (sends_body) {
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? strlen(body) : 0));
        }
        if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        int rc =
            perform(h, what, (size_t)h->conf.max_response_size, "max_response_size", resp, err);
        /* curl keeps a copy of each header line in its slist: wipe both */
        for (struct curl_slist *s = hdrs; s; s = s->next)
            explicit_bzero(s->data, strlen(s->data));
        curl_slist_free_all(hdrs);
        wipe_free(auth);
        if (rc)
            return -1;
        if (resp->status == 401 && h->conf.auth == SK_HTTP_AUTH_OAUTH2 && attempt == 0) {
            /* The cached token may have been revoked or expired early: one refresh. */
            sk_info(h->component, "%s: HTTP 401; fetching a new OAuth2 token", what);
            h->token_valid_until_ms = 0;
            sk_http_resp_free(resp);
            continue;
        }
        sk_debug(h->component, "%s -> %ld", what, resp->status);
        return 0;
    }
}
