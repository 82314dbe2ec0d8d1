/*
 * source_http.c: the ss12000-source's use of the connectors' HTTP client
 * (http_client.h: TLS, auth, the size limit, Retry-After parsing).
 *
 * Owns: the request rate limit (max_rps), the server's Retry-After on 429/503
 * (the next request waits at least that long, whatever the driver's
 * backoff), what an error status means for a poll, and the read-ahead of the
 * next page. Must never: log a secret, or decide what a response means for
 * the sync (source.c does).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "http_client.h"
#include "log.h"
#include "model.h"
#include "source.h"
#include "util.h"

/* Longest Retry-After waited for inside one poll; longer ones are retried by the driver. */
#define MAX_INLINE_WAIT_MS 10000

struct ss_http {
    const struct ss_conf *conf;
    const char *component;
    struct sk_http_client *client;
    int64_t min_interval_ms; /* 1000 / max_rps */
    int64_t last_start_ms;   /* sk_mono_ms of the last request's start */
    int64_t not_before_ms;   /* Retry-After: no request before this (sk_mono_ms) */
    /* Read-ahead (ss_http_prefetch): one GET on its own thread, which has
     * the client to itself until the next request joins it. */
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

void ss_resp_free(struct ss_resp *r)
{
    sk_json_arena_free(r->arena);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

static enum sk_http_auth auth_type(const char *type)
{
    if (type && strcmp(type, "bearer") == 0)
        return SK_HTTP_AUTH_BEARER;
    if (type && strcmp(type, "oauth2") == 0)
        return SK_HTTP_AUTH_OAUTH2;
    if (type && strcmp(type, "apikey") == 0)
        return SK_HTTP_AUTH_APIKEY;
    return SK_HTTP_AUTH_NONE;
}

struct ss_http *ss_http_new(const struct ss_conf *conf, const char *component, struct sk_error *err)
{
    const struct ss_auth_conf *a = &conf->auth;
    const struct sk_http_client_conf hc = {
        .user_agent = "skolsync-ss12000-source/" SK_VERSION,
        .accept = "application/json",
        .content_type = "application/json",
        .timeout_ms = conf->request_timeout_ms,
        .max_response_size = conf->max_response_size,
        .max_wait_ms = MAX_INLINE_WAIT_MS,
        .ca_file = conf->tls.ca_file,
        .client_cert = conf->tls.client_cert,
        .client_key = conf->tls.client_key,
        .insecure_skip_verify = conf->tls.insecure_skip_verify,
        .auth = auth_type(a->type),
        .token = a->token,
        .token_url = a->token_url,
        .client_id = a->client_id,
        .client_secret = a->client_secret,
        .scope = a->scope,
        .header = a->header,
        .value = a->value,
    };
    struct sk_http_client *client = sk_http_client_new(&hc, component, err);
    if (!client)
        return NULL;
    struct ss_http *h = sk_calloc(1, sizeof(*h));
    h->conf = conf;
    h->component = component;
    h->client = client;
    h->min_interval_ms = conf->max_rps > 0 ? 1000 / conf->max_rps : 0;
    return h;
}

static void *prefetch_thread(void *arg)
{
    struct ss_http *h = arg;
    h->pf.rc = request(h, "GET", h->pf.url, NULL, &h->pf.resp, &h->pf.err);
    struct ss_resp *r = &h->pf.resp;
    if (h->pf.rc == 0 && r->status == 200) {
        /* the page's byte check and parse here, off the thread that encodes */
        size_t at;
        r->text_bad = r->body && sk_json_text_bad(r->body, r->len, &at);
        r->text_checked = true;
        r->json = sk_json_arena_parse(r->body, r->len, &r->arena);
    }
    return NULL;
}
void ss_http_prefetch(struct ss_http *h, const char *url)
{
    if (h->pf.running && strcmp(h->pf.url, url) == 0)
        return; /* already on its way (source_list.c starts it before encoding a page) */
    ss_http_prefetch_drop(h);
    h->pf.url = sk_strdup(url);
    memset(&h->pf.resp, 0, sizeof(h->pf.resp));
    sk_error_clear(&h->pf.err);
    h->pf.rc = 0;
    h->pf.running = sk_thread_start(&h->pf.thread, prefetch_thread, h, "fetch", h->component) == 0;
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
    sk_http_client_free(h->client);
    free(h);
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
    if (pace(h, err))
        return -1;
    struct sk_http_resp r;
    if (sk_http_client_request(h->client, method, url, body, &r, err))
        return -1;
    long st = r.status;
    if (st == 429 || st == 503) {
        int64_t wait = r.retry_after_ms >= 0 ? r.retry_after_ms : 0;
        if (wait > 0)
            h->not_before_ms = sk_mono_ms() + wait;
        sk_http_resp_free(&r);
        return sk_error_set(err, SK_ERR_RETRIABLE, "%s %s: HTTP %ld%s (Retry-After %" PRId64 " ms)",
                            method, url, st, st == 429 ? " too many requests" : " unavailable",
                            wait);
    }
    /* 500 and 501 (and other 5xx but the gateway's) are answers about one
     * request, often one endpoint: the caller decides (one entity type fails,
     * the others go on). A gateway error, a timeout or 401 is the server's. */
    if (st == 502 || st == 504 || st == 401 || st == 408) {
        sk_error_set(err, SK_ERR_RETRIABLE, "%s %s: HTTP %ld: %.200s", method, url, st,
                     st == 401 ? "unauthorized (check auth)" : r.body.p);
        sk_http_resp_free(&r);
        return -1;
    }
    out->status = st;
    out->len = r.body.len;
    out->body = sk_buf_take(&r.body);
    snprintf(out->content_type, sizeof(out->content_type), "%s", r.content_type);
    return 0;
}
