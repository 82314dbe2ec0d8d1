/*
 * source_http.c: the ss12000-source's HTTP client. One libcurl easy handle,
 * reused for every request so the connection stays alive.
 *
 * Owns: authentication (static bearer, OAuth2 client credentials with a
 * cached token refreshed before it expires and once on a 401, API-key
 * header), TLS settings, the request rate limit (max_rps) and the server's
 * Retry-After (429/503: the next request waits at least that long, whatever
 * the driver's backoff). Must never: log a secret (tokens, client secret,
 * API key), follow redirects to another host with credentials, or decide
 * what a response means for the sync (source.c does).
 */
#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "log.h"
#include "source.h"
#include "util.h"

#define MAX_BODY (512u * 1024u * 1024u)
/* Longest Retry-After waited for inside one poll; longer ones are retried by the driver. */
#define MAX_INLINE_WAIT_MS 10000
#define MAX_RETRY_AFTER_MS (3600LL * 1000)

struct ss_http {
    const struct ss_conf *conf;
    const char *component;
    CURL *curl;
    char curl_err[CURL_ERROR_SIZE];
    int64_t min_interval_ms; /* 1000 / max_rps */
    int64_t last_start_ms;   /* sk_mono_ms of the last request's start */
    int64_t not_before_ms;   /* Retry-After: no request before this (sk_mono_ms) */
    char *access_token;      /* OAuth2: cached token (secret) */
    int64_t token_valid_until_ms;
    /* Read-ahead (ss_http_prefetch): one GET on its own thread, which has
     * the handle to itself until the next request joins it. */
    struct {
        pthread_t thread;
        bool running;
        char *url;
        struct ss_resp resp;
        int rc;
        struct sk_error err;
    } pf;
};

static int request(struct ss_http *h, const char *method, const char *url, const char *body,
                   struct ss_resp *out, struct sk_error *err);

struct body_buf {
    char *data;
    size_t len, cap;
    bool too_big;
};

struct hdr_state {
    int64_t retry_after_ms; /* -1: none */
    char content_type[128];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct body_buf *b = userdata;
    size_t n = size * nmemb;
    if (b->len + n + 1 > MAX_BODY) {
        b->too_big = true;
        return 0;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64 * 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->data = sk_realloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* Retry-After: delta-seconds or an HTTP-date (RFC 9110 §10.2.3). -1 if unparsable. */
static int64_t parse_retry_after(const char *v)
{
    while (*v == ' ' || *v == '\t')
        v++;
    if (isdigit((unsigned char)*v)) {
        char *end;
        long long s = strtoll(v, &end, 10);
        if (s < 0)
            return -1;
        return s > MAX_RETRY_AFTER_MS / 1000 ? MAX_RETRY_AFTER_MS : (int64_t)s * 1000;
    }
    time_t t = curl_getdate(v, NULL);
    if (t < 0)
        return -1;
    int64_t ms = (int64_t)t * 1000 - sk_now_us() / 1000;
    if (ms < 0)
        ms = 0;
    return ms > MAX_RETRY_AFTER_MS ? MAX_RETRY_AFTER_MS : ms;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct hdr_state *hs = userdata;
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
        hs->retry_after_ms = parse_retry_after(val);
    else if (strcasecmp(line, "Content-Type") == 0)
        snprintf(hs->content_type, sizeof(hs->content_type), "%s", val);
    return n;
}

char *ss_http_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = sk_malloc(n * 3 + 1), *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
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

void ss_resp_free(struct ss_resp *r)
{
    cJSON_Delete(r->json);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

struct ss_http *ss_http_new(const struct ss_conf *conf, const char *component, struct sk_error *err)
{
    pthread_once(&curl_once, curl_init_once);
    struct ss_http *h = sk_calloc(1, sizeof(*h));
    h->conf = conf;
    h->component = component;
    h->curl = curl_easy_init();
    if (!h->curl) {
        free(h);
        sk_error_set(err, SK_ERR_FATAL, "libcurl: cannot create a handle");
        return NULL;
    }
    h->min_interval_ms = conf->max_rps > 0 ? 1000 / conf->max_rps : 0;
    return h;
}

static void *prefetch_thread(void *arg)
{
    struct ss_http *h = arg;
    h->pf.rc = request(h, "GET", h->pf.url, NULL, &h->pf.resp, &h->pf.err);
    if (h->pf.rc == 0 && h->pf.resp.status == 200)
        h->pf.resp.json = cJSON_ParseWithLength(h->pf.resp.body, h->pf.resp.len);
    return NULL;
}

void ss_http_prefetch(struct ss_http *h, const char *url)
{
    ss_http_prefetch_drop(h);
    h->pf.url = sk_strdup(url);
    memset(&h->pf.resp, 0, sizeof(h->pf.resp));
    sk_error_clear(&h->pf.err);
    h->pf.rc = 0;
    h->pf.running = pthread_create(&h->pf.thread, NULL, prefetch_thread, h) == 0;
    if (!h->pf.running) { /* no thread: the GET happens when it is asked for */
        free(h->pf.url);
        h->pf.url = NULL;
    }
}

/* Waits for the read-ahead; true (and its result) if it was this GET. */
static bool prefetch_take(struct ss_http *h, const char *method, const char *url, const char *body,
                          struct ss_resp *out, int *rc, struct sk_error *err)
{
    if (!h->pf.running)
        return false;
    pthread_join(h->pf.thread, NULL);
    h->pf.running = false;
    bool same = strcmp(method, "GET") == 0 && !body && strcmp(url, h->pf.url) == 0;
    if (same) {
        *out = h->pf.resp;
        *rc = h->pf.rc;
        if (h->pf.rc)
            *err = h->pf.err;
        memset(&h->pf.resp, 0, sizeof(h->pf.resp));
    } else {
        ss_resp_free(&h->pf.resp);
    }
    free(h->pf.url);
    h->pf.url = NULL;
    return same;
}

void ss_http_prefetch_drop(struct ss_http *h)
{
    struct ss_resp r;
    int rc;
    struct sk_error e;
    prefetch_take(h, "", "", NULL, &r, &rc, &e);
}

void ss_http_free(struct ss_http *h)
{
    if (!h)
        return;
    ss_http_prefetch_drop(h);
    curl_easy_cleanup(h->curl);
    if (h->access_token) {
        memset(h->access_token, 0, strlen(h->access_token));
        free(h->access_token);
    }
    free(h);
}

/* The common easy-handle settings: timeouts, TLS, no redirects, no signals. */
static void setup_handle(struct ss_http *h)
{
    CURL *c = h->curl;
    const struct ss_conf *conf = h->conf;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->curl_err);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)conf->request_timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(conf->request_timeout_ms < 10000 ? conf->request_timeout_ms : 10000));
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, ""); /* gzip/deflate if the server offers */
    curl_easy_setopt(c, CURLOPT_USERAGENT, "skolsync-ss12000-source/" SK_VERSION);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    /* Credentials must never follow a redirect to another host: no redirects. */
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    if (conf->tls.ca_file && *conf->tls.ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, conf->tls.ca_file);
    if (conf->tls.client_cert && *conf->tls.client_cert)
        curl_easy_setopt(c, CURLOPT_SSLCERT, conf->tls.client_cert);
    if (conf->tls.client_key && *conf->tls.client_key)
        curl_easy_setopt(c, CURLOPT_SSLKEY, conf->tls.client_key);
    if (conf->tls.insecure_skip_verify) {
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    h->curl_err[0] = '\0';
}

/* Waits for max_rps and Retry-After. -1 (RETRIABLE) if the wait is too long for one poll. */
static int pace(struct ss_http *h, struct sk_error *err)
{
    int64_t now = sk_mono_ms();
    int64_t until = h->last_start_ms + h->min_interval_ms;
    if (h->not_before_ms > until)
        until = h->not_before_ms;
    if (until - now > MAX_INLINE_WAIT_MS)
        return sk_error_set(err, SK_ERR_RETRIABLE,
                            "the server asked to wait (Retry-After) %" PRId64 " s more",
                            (until - now + 999) / 1000);
    if (until > now)
        sk_sleep_ms(until - now);
    h->last_start_ms = sk_mono_ms();
    return 0;
}

/* Performs the prepared request; fills out. -1 RETRIABLE on transport errors. */
static int perform(struct ss_http *h, const char *what, struct ss_resp *out, struct hdr_state *hs,
                   struct sk_error *err)
{
    struct body_buf b = {0};
    memset(hs, 0, sizeof(*hs));
    hs->retry_after_ms = -1;
    curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h->curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h->curl, CURLOPT_HEADERDATA, hs);
    if (pace(h, err))
        return -1;
    CURLcode rc = curl_easy_perform(h->curl);
    if (rc != CURLE_OK) {
        free(b.data);
        if (b.too_big)
            return sk_error_set(err, SK_ERR_RETRIABLE, "%s: response larger than %u bytes", what,
                                MAX_BODY);
        return sk_error_set(err, SK_ERR_RETRIABLE, "%s: %s", what,
                            h->curl_err[0] ? h->curl_err : curl_easy_strerror(rc));
    }
    memset(out, 0, sizeof(*out));
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &out->status);
    out->body = b.data ? b.data : sk_strdup("");
    out->len = b.len;
    snprintf(out->content_type, sizeof(out->content_type), "%s", hs->content_type);
    return 0;
}

/* OAuth2 client credentials (RFC 6749 §4.4): a new access token into h. */
static int fetch_token(struct ss_http *h, struct sk_error *err)
{
    const struct ss_auth_conf *a = &h->conf->auth;
    if (!a->token_url || !a->client_id || !a->client_secret)
        return sk_error_set(err, SK_ERR_FATAL,
                            "auth.type oauth2 needs auth.token_url, auth.client_id and "
                            "auth.client_secret");
    char *id = ss_http_escape(a->client_id), *secret = ss_http_escape(a->client_secret);
    char *scope = a->scope && *a->scope ? ss_http_escape(a->scope) : NULL;
    char *form = sk_asprintf("grant_type=client_credentials&client_id=%s&client_secret=%s%s%s", id,
                             secret, scope ? "&scope=" : "", scope ? scope : "");
    memset(secret, 0, strlen(secret));
    free(id);
    free(secret);
    free(scope);
    setup_handle(h);
    struct curl_slist *hdrs = NULL;
    hdrs = curl_slist_append(hdrs, "Content-Type: application/x-www-form-urlencoded");
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    curl_easy_setopt(h->curl, CURLOPT_URL, a->token_url);
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, form);
    struct ss_resp r;
    struct hdr_state hs;
    int rc = perform(h, "token request", &r, &hs, err);
    curl_slist_free_all(hdrs);
    memset(form, 0, strlen(form));
    free(form);
    if (rc)
        return -1;
    /* The token endpoint's 429/503 Retry-After holds for the next request too,
     * as for the API's own answers (ss_http_request). */
    if ((r.status == 429 || r.status == 503) && hs.retry_after_ms > 0)
        h->not_before_ms = sk_mono_ms() + hs.retry_after_ms;
    cJSON *doc = r.status == 200 ? cJSON_ParseWithLength(r.body, r.len) : NULL;
    const cJSON *tok = doc ? cJSON_GetObjectItemCaseSensitive(doc, "access_token") : NULL;
    if (!cJSON_IsString(tok) || !*tok->valuestring) {
        /* Never echo the body: a token endpoint's answer may hold secrets. */
        sk_error_set(err, SK_ERR_RETRIABLE, "token request to %s: HTTP %ld without an access_token",
                     a->token_url, r.status);
        cJSON_Delete(doc);
        ss_resp_free(&r);
        return -1;
    }
    /* expires_in: a number (RFC 6749) or, from some servers, a string. */
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(doc, "expires_in");
    int64_t ttl_s = 3600;
    if (cJSON_IsNumber(exp) && exp->valuedouble > 0)
        ttl_s = (int64_t)exp->valuedouble;
    else if (cJSON_IsString(exp) && atoll(exp->valuestring) > 0)
        ttl_s = atoll(exp->valuestring);
    int64_t margin_s = ttl_s > 240 ? 60 : ttl_s / 4;
    if (h->access_token) {
        memset(h->access_token, 0, strlen(h->access_token));
        free(h->access_token);
    }
    h->access_token = sk_strdup(tok->valuestring);
    h->token_valid_until_ms = sk_mono_ms() + (ttl_s - margin_s) * 1000;
    sk_debug(h->component, "OAuth2 token fetched, valid %" PRId64 " s", ttl_s);
    cJSON_Delete(doc);
    ss_resp_free(&r);
    return 0;
}

/* The auth header line for the configured type (malloc'ed; NULL for none). */
static int auth_header(struct ss_http *h, char **line, struct sk_error *err)
{
    const struct ss_auth_conf *a = &h->conf->auth;
    *line = NULL;
    if (!a->type || strcmp(a->type, "none") == 0)
        return 0;
    if (strcmp(a->type, "bearer") == 0) {
        if (!a->token || !*a->token)
            return sk_error_set(err, SK_ERR_FATAL, "auth.type bearer needs auth.token");
        *line = sk_asprintf("Authorization: Bearer %s", a->token);
        return 0;
    }
    if (strcmp(a->type, "apikey") == 0) {
        if (!a->header || !*a->header || !a->value)
            return sk_error_set(err, SK_ERR_FATAL,
                                "auth.type apikey needs auth.header and auth.value");
        *line = sk_asprintf("%s: %s", a->header, a->value);
        return 0;
    }
    if (!h->access_token || sk_mono_ms() >= h->token_valid_until_ms)
        if (fetch_token(h, err))
            return -1;
    *line = sk_asprintf("Authorization: Bearer %s", h->access_token);
    return 0;
}

static void free_secret_line(char *line)
{
    if (line) {
        memset(line, 0, strlen(line));
        free(line);
    }
}

int ss_http_request(struct ss_http *h, const char *method, const char *url, const char *body,
                    struct ss_resp *out, struct sk_error *err)
{
    int rc;
    if (prefetch_take(h, method, url, body, out, &rc, err))
        return rc;
    return request(h, method, url, body, out, err);
}

static int request(struct ss_http *h, const char *method, const char *url, const char *body,
                   struct ss_resp *out, struct sk_error *err)
{
    memset(out, 0, sizeof(*out));
    bool oauth = h->conf->auth.type && strcmp(h->conf->auth.type, "oauth2") == 0;
    for (int attempt = 0;; attempt++) {
        char *auth = NULL;
        if (auth_header(h, &auth, err))
            return -1;
        setup_handle(h);
        struct curl_slist *hdrs = NULL;
        hdrs = curl_slist_append(hdrs, "Accept: application/json");
        if (body)
            hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        if (auth)
            hdrs = curl_slist_append(hdrs, auth);
        curl_easy_setopt(h->curl, CURLOPT_URL, url);
        curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, hdrs);
        if (strcmp(method, "GET") != 0)
            curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, method);
        if (body) {
            curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        } else if (strcmp(method, "POST") == 0 || strcmp(method, "PATCH") == 0) {
            curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, "");
            curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE, 0L);
        }
        char what[600];
        snprintf(what, sizeof(what), "%s %s", method, url);
        struct hdr_state hs;
        int rc = perform(h, what, out, &hs, err);
        curl_slist_free_all(hdrs);
        free_secret_line(auth);
        if (rc)
            return -1;
        long st = out->status;
        if (st == 401 && oauth && attempt == 0) {
            /* The cached token may have been revoked or expired early: one refresh. */
            sk_info(h->component, "%s: HTTP 401; fetching a new OAuth2 token", what);
            h->token_valid_until_ms = 0;
            ss_resp_free(out);
            continue;
        }
        if (st == 429 || st == 503) {
            int64_t wait = hs.retry_after_ms >= 0 ? hs.retry_after_ms : 0;
            if (wait > 0)
                h->not_before_ms = sk_mono_ms() + wait;
            sk_error_set(err, SK_ERR_RETRIABLE, "%s: HTTP %ld%s (Retry-After %" PRId64 " ms)", what,
                         st, st == 429 ? " too many requests" : " unavailable", wait);
            ss_resp_free(out);
            return -1;
        }
        if (st >= 500 || st == 401 || st == 408) {
            sk_error_set(err, SK_ERR_RETRIABLE, "%s: HTTP %ld: %.200s", what, st,
                         st == 401 ? "unauthorized (check auth)" : out->body);
            ss_resp_free(out);
            return -1;
        }
        return 0;
    }
}
