/*
 * scim_http.c: the scim-sink's HTTP client. One libcurl easy handle, reused
 * for every request so the connection stays alive (curl_easy_reset keeps the
 * connection cache); bearer or OAuth2 client-credentials auth (token cached,
 * refreshed before it expires); TLS options.
 *
 * Owns: the handle, the token. Must never: log or put a token or secret into
 * an error message (sk_error.h: callers print them), turn on CURLOPT_VERBOSE
 * (it would print the Authorization header), or use signals (CURLOPT_NOSIGNAL:
 * we run on a connector thread).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "log.h"
#include "scim.h"
#include "util.h"

#define MAX_BODY (64u * 1024 * 1024) /* a ListResponse larger than this is not ours */
#define TOKEN_MARGIN_MS 60000        /* refresh a token this long before it expires */

struct scim_http {
    const struct scim_conf *conf;
    const char *component;
    CURL *curl;
    char *base; /* url without a trailing '/' */
    enum { AUTH_NONE, AUTH_BEARER, AUTH_OAUTH2 } auth;
    char *token;             /* the bearer or OAuth2 access token; never printed */
    int64_t token_expiry_ms; /* sk_mono_ms; INT64_MAX for a static token */
    char curl_err[CURL_ERROR_SIZE];
    bool global; /* curl_global_init was called */
};

struct buf {
    char *p;
    size_t n, cap;
    bool too_big;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *ctx)
{
    struct buf *b = ctx;
    size_t n = size * nmemb;
    if (b->n + n > MAX_BODY) {
        b->too_big = true;
        return 0;
    }
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = sk_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

/* Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP-date. */
static size_t on_header(char *data, size_t size, size_t nmemb, void *ctx)
{
    int64_t *retry_after_ms = ctx;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";
    if (n > sizeof(name) - 1 && strncasecmp(data, name, sizeof(name) - 1) == 0) {
        char value[128];
        size_t k = n - (sizeof(name) - 1);
        if (k >= sizeof(value))
            k = sizeof(value) - 1;
        memcpy(value, data + sizeof(name) - 1, k);
        value[k] = '\0';
        char *v = value;
        while (*v == ' ' || *v == '\t')
            v++;
        char *end = v + strlen(v);
        while (end > v && isspace((unsigned char)end[-1]))
            *--end = '\0';
        if (*v && strspn(v, "0123456789") == strlen(v)) {
            /* clamp before multiplying: a server's 20-digit value must not overflow */
            long long secs = strlen(v) > 9 ? 999999999LL : strtoll(v, NULL, 10);
            *retry_after_ms = (int64_t)secs * 1000;
        } else {
            time_t when = curl_getdate(v, NULL);
            if (when > 0) {
                int64_t delta = (int64_t)when * 1000 - sk_now_us() / 1000;
                *retry_after_ms = delta > 0 ? delta : 0;
            }
        }
    }
    return n;
}

static void common_options(struct scim_http *h)
{
    const struct scim_conf *c = h->conf;
    CURL *k = h->curl;
    curl_easy_reset(k);
    curl_easy_setopt(k, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(k, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
    curl_easy_setopt(k, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(c->timeout_ms < 10000 ? c->timeout_ms : 10000));
    curl_easy_setopt(k, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(k, CURLOPT_ERRORBUFFER, h->curl_err);
    curl_easy_setopt(k, CURLOPT_USERAGENT, "skolsync-scim-sink/" SK_VERSION);
    /* Only http(s), also on redirects: a SCIM endpoint that redirects is a
     * misconfiguration we would rather see than follow. */
    curl_easy_setopt(k, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(k, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    if (c->ca_file && *c->ca_file)
        curl_easy_setopt(k, CURLOPT_CAINFO, c->ca_file);
    if (c->client_cert && *c->client_cert)
        curl_easy_setopt(k, CURLOPT_SSLCERT, c->client_cert);
    if (c->client_key && *c->client_key)
        curl_easy_setopt(k, CURLOPT_SSLKEY, c->client_key);
    if (c->insecure_skip_verify) {
        curl_easy_setopt(k, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(k, CURLOPT_SSL_VERIFYHOST, 0L);
    }
}

/* Transport errors are retriable, except those that only a new configuration fixes. */
static int curl_failure(struct scim_http *h, CURLcode rc, const char *what, struct sk_error *err)
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

char *scim_url_encode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = sk_malloc(3 * n + 1), *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

/*
 * OAuth2 client credentials (RFC 6749 §4.4): client_id and client_secret in
 * the form body (client_secret_post), which Entra ID and most token
 * endpoints accept. The token endpoint answers with access_token and
 * expires_in (seconds); a token without expires_in is kept for an hour.
 */
static int fetch_token(struct scim_http *h, struct sk_error *err)
{
    const struct scim_conf *c = h->conf;
    char *id = scim_url_encode(c->client_id ? c->client_id : "");
    char *secret = scim_url_encode(c->client_secret ? c->client_secret : "");
    char *scope = c->scope && *c->scope ? scim_url_encode(c->scope) : NULL;
    char *form = sk_asprintf("grant_type=client_credentials&client_id=%s&client_secret=%s%s%s", id,
                             secret, scope ? "&scope=" : "", scope ? scope : "");
    free(id);
    free(secret);
    free(scope);
    struct buf b = {0};
    common_options(h);
    h->curl_err[0] = '\0';
    curl_easy_setopt(h->curl, CURLOPT_URL, c->token_url);
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, form);
    curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, &b);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Accept: application/json");
    hdrs = curl_slist_append(hdrs, "Content-Type: application/x-www-form-urlencoded");
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, hdrs);
    CURLcode rc = curl_easy_perform(h->curl);
    /* the secret is in form: clear it before freeing */
    memset(form, 0, strlen(form));
    free(form);
    curl_slist_free_all(hdrs);
    int ret = 0;
    long status = 0;
    if (rc != CURLE_OK) {
        ret = curl_failure(h, rc, "token endpoint", err);
        goto done;
    }
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &status);
    cJSON *json = b.p ? cJSON_Parse(b.p) : NULL;
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(json, "access_token");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(json, "expires_in");
    if (status == 200 && cJSON_IsString(tok) && *tok->valuestring) {
        free(h->token);
        h->token = sk_strdup(tok->valuestring);
        int64_t life_ms = 3600000;
        if (cJSON_IsNumber(exp) && exp->valuedouble > 0)
            life_ms = (int64_t)exp->valuedouble * 1000;
        else if (cJSON_IsString(exp) && atoll(exp->valuestring) > 0)
            life_ms = atoll(exp->valuestring) * 1000;
        /* refresh at the margin, or at half the lifetime of a short-lived token */
        int64_t margin = life_ms > 2 * TOKEN_MARGIN_MS ? TOKEN_MARGIN_MS : life_ms / 2;
        h->token_expiry_ms = sk_mono_ms() + life_ms - margin;
    } else {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(json, "error");
        /* 4xx: our credentials or scope are wrong, retrying will not help */
        ret = sk_error_set(
            err, status >= 400 && status < 500 && status != 429 ? SK_ERR_FATAL : SK_ERR_RETRIABLE,
            "token endpoint answered HTTP %ld%s%s", status, cJSON_IsString(e) ? ": " : "",
            cJSON_IsString(e) ? e->valuestring : "");
    }
    cJSON_Delete(json);
done:
    free(b.p);
    return ret;
}

struct scim_http *scim_http_new(const struct scim_conf *conf, const char *component,
                                struct sk_error *err)
{
    struct scim_http *h = sk_calloc(1, sizeof(*h));
    h->conf = conf;
    h->component = component;
    const char *auth = conf->auth ? conf->auth : "none";
    if (!conf->url || strncmp(conf->url, "http", 4) != 0) {
        sk_error_set(err, SK_ERR_FATAL, "url: an http:// or https:// URL is required");
        goto fail;
    }
    h->base = sk_strdup(conf->url);
    size_t n = strlen(h->base);
    while (n > 0 && h->base[n - 1] == '/')
        h->base[--n] = '\0';
    if (strcmp(auth, "bearer") == 0) {
        if (!conf->token || !*conf->token) {
            sk_error_set(err, SK_ERR_FATAL, "auth: bearer needs token");
            goto fail;
        }
        h->auth = AUTH_BEARER;
        h->token = sk_strdup(conf->token);
        h->token_expiry_ms = INT64_MAX;
    } else if (strcmp(auth, "oauth2") == 0) {
        if (!conf->token_url || !conf->client_id || !conf->client_secret) {
            sk_error_set(err, SK_ERR_FATAL,
                         "auth: oauth2 needs token_url, client_id and client_secret");
            goto fail;
        }
        h->auth = AUTH_OAUTH2;
    } else {
        h->auth = AUTH_NONE;
    }
    if (conf->insecure_skip_verify)
        sk_warn(component, "insecure_skip_verify: TLS certificates are NOT verified");
    /* reference-counted, and thread-safe in libcurl >= 7.84; paired in scim_http_free */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h->global = true;
    h->curl = curl_easy_init();
    if (!h->curl) {
        sk_error_set(err, SK_ERR_FATAL, "curl_easy_init failed");
        goto fail;
    }
    return h;
fail:
    scim_http_free(h);
    return NULL;
}

void scim_http_free(struct scim_http *h)
{
    if (!h)
        return;
    if (h->curl)
        curl_easy_cleanup(h->curl);
    if (h->token) {
        memset(h->token, 0, strlen(h->token));
        free(h->token);
    }
    free(h->base);
    if (h->global)
        curl_global_cleanup();
    free(h);
}

void scim_resp_free(struct scim_resp *r)
{
    free(r->body);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof(*r));
}

void scim_resp_detail(const struct scim_resp *r, char *out, size_t size)
{
    const cJSON *detail = cJSON_GetObjectItemCaseSensitive(r->json, "detail");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(r->json, "scimType");
    if (cJSON_IsString(detail))
        snprintf(out, size, "%s%s%s", cJSON_IsString(type) ? type->valuestring : "",
                 cJSON_IsString(type) ? ": " : "", detail->valuestring);
    else
        snprintf(out, size, "%.200s", r->body && *r->body ? r->body : "(no body)");
}

static int perform(struct scim_http *h, const char *method, const char *url, const char *body,
                   struct scim_resp *resp, struct sk_error *err)
{
    struct buf b = {0};
    memset(resp, 0, sizeof(*resp));
    resp->retry_after_ms = -1;
    common_options(h);
    h->curl_err[0] = '\0';
    CURL *k = h->curl;
    curl_easy_setopt(k, CURLOPT_URL, url);
    curl_easy_setopt(k, CURLOPT_CUSTOMREQUEST, method);
    if (body)
        curl_easy_setopt(k, CURLOPT_POSTFIELDS, body);
    else if (strcmp(method, "GET") == 0)
        curl_easy_setopt(k, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(k, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(k, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(k, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(k, CURLOPT_HEADERDATA, &resp->retry_after_ms);
    struct curl_slist *hdrs =
        curl_slist_append(NULL, "Accept: application/scim+json, application/json");
    if (body)
        hdrs = curl_slist_append(hdrs, "Content-Type: application/scim+json; charset=utf-8");
    char *auth = NULL;
    if (h->token) {
        auth = sk_asprintf("Authorization: Bearer %s", h->token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    curl_easy_setopt(k, CURLOPT_HTTPHEADER, hdrs);
    CURLcode rc = curl_easy_perform(k);
    curl_slist_free_all(hdrs);
    if (auth) {
        memset(auth, 0, strlen(auth));
        free(auth);
    }
    if (rc != CURLE_OK) {
        free(b.p);
        if (b.too_big)
            return sk_error_set(err, SK_ERR_RETRIABLE, "%s %s: response larger than %u bytes",
                                method, url, MAX_BODY);
        return curl_failure(h, rc, method, err);
    }
    curl_easy_getinfo(k, CURLINFO_RESPONSE_CODE, &resp->status);
    resp->body = b.p ? b.p : sk_strdup("");
    resp->len = b.n;
    if (b.n)
        resp->json = cJSON_Parse(resp->body);
    return 0;
}

int scim_http_request(struct scim_http *h, const char *method, const char *path, const char *body,
                      struct scim_resp *resp, struct sk_error *err)
{
    if (h->auth == AUTH_OAUTH2 && (!h->token || sk_mono_ms() >= h->token_expiry_ms)) {
        if (fetch_token(h, err) < 0)
            return -1;
    }
    char *url = sk_asprintf("%s%s", h->base, path);
    int rc = perform(h, method, url, body, resp, err);
    /* An OAuth2 token can be revoked or expire early: fetch a new one, once. */
    if (rc == 0 && resp->status == 401 && h->auth == AUTH_OAUTH2) {
        scim_resp_free(resp);
        rc = fetch_token(h, err);
        if (rc == 0)
            rc = perform(h, method, url, body, resp, err);
    }
    if (rc == 0)
        sk_debug(h->component, "%s %s -> %ld", method, path, resp->status);
    free(url);
    return rc;
}
