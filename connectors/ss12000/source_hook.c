/*
 * source_hook.c: webhooks of the ss12000-source (docs/ss12000-notes.md §3.3).
 *
 * Owns: the callback route POST /hooks/<source>/<secret> on the daemon's HTTP
 * server, the subscription at the SIS (POST /subscriptions, renewed with
 * PATCH before `expires - renew_before`, DELETE on close), the dirty set the
 * callbacks fill, and a small thread that wakes the source at once on the
 * first callback after a quiet `debounce`, then at most once a `debounce`
 * for the callbacks that follow (and when the subscription is due for
 * renewal). Must never: trust a callback for more than a hint (it names
 * types, never ids: the poll reads the data), crash or block on a malformed
 * body (400), or publish anything itself.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "log.h"
#include "source.h"
#include "util.h"

#define SUB_RETRY_MS 30000
/* A subscription whose expires the server does not say (or says wrong) is
 * taken to live this long: renewed at half of it with the default
 * renew_before. */
#define SUB_UNKNOWN_LIFE_US (3600LL * 1000000)
/* An expires less than this ahead (or past) cannot be renewed before it
 * passes (renewal_due wants a second): taken as unknown, not renewed at once
 * and again at every wake-up after. */
#define SUB_EXPIRES_MARGIN_US (2LL * 1000000)

#define REFUSED_LOG_MS 60000

struct ss_hook {
    struct sk_source *self;
    const struct ss_conf *conf;
    const char *component;
    char *path;                  /* /hooks/<name>/<secret> (secret: never logged) */
    char *target;                /* public_url + path */
    bool types[SK_ENTITY_COUNT]; /* the subscription's resourceTypes */

    pthread_mutex_t mu; /* guards the fields below (HTTP thread, debounce thread, poll) */
    pthread_cond_t cv;
    pthread_t thread;
    bool thread_started;
    bool routed; /* the callback route is registered (undone first by ss_hook_free) */
    /* Refused callbacks: anyone can send them, so they are logged once a
     * minute at most (counted in skolsync_log_lines_suppressed_total). */
    struct sk_log_limit refused_log;
    bool stop;
    bool dirty[SK_ENTITY_COUNT];
    bool deletes;
    int64_t wake_at_ms;  /* debounce deadline (sk_mono_ms), 0 = none */
    int64_t woke_ms;     /* when the last callback's wake was given (sk_mono_ms) */
    int64_t renew_at_ms; /* subscription renewal due (sk_mono_ms), 0 = none */
    bool renewal_woke;   /* the source was woken for the renewal (ss_hook_renewal_only) */

    /* Poll thread only. */
    char *sub_id;
    int64_t sub_expires_us; /* wall clock */
    int64_t renew_due_us;   /* wall clock: when the renewal is due (schedule_renewal) */
    int64_t next_try_ms;    /* after a failed create/renew */
    bool warned_expires;    /* an expires not ahead of now was warned about (once) */
};

static void respond(struct sk_http_response *resp, int status, const char *msg)
{
    resp->status = status;
    cJSON *o = cJSON_CreateObject();
    if (status == 200) {
        cJSON_AddBoolToObject(o, "ok", true);
    } else {
        cJSON_AddStringToObject(o, "code", status == 401 ? "unauthorized" : "invalid_request");
        cJSON_AddStringToObject(o, "message", msg);
    }
    resp->body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
}

/*
 * A callback: {"modifiedEntites": [...], "deletedEntities": true}. Both the
 * spec's misspelling and "modifiedEntities" are accepted (docs/ss12000-notes.md §6.2).
 * Runs on an HTTP thread.
 */
/* The path in constant time: the secret in it is the callback's credential. */
static bool path_ok(const struct ss_hook *hk, const char *path)
{
    size_t n = strlen(hk->path);
    if (!path || strlen(path) != n)
        return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(path[i] ^ hk->path[i]);
    return diff == 0;
}

static void on_callback(void *ctx, const struct sk_http_request *req, struct sk_http_response *resp)
{
    struct ss_hook *hk = ctx;
    if (!path_ok(hk, req->path)) {
        sk_log_limited(&hk->refused_log, REFUSED_LOG_MS, SK_LOG_WARN, hk->component,
                       "webhook callback with a wrong secret in its path: refused");
        respond(resp, 403, "forbidden");
        return;
    }
    if (hk->conf->webhook.token && *hk->conf->webhook.token &&
        !sk_bearer_ok(req->authorization, hk->conf->webhook.token)) {
        sk_log_limited(&hk->refused_log, REFUSED_LOG_MS, SK_LOG_WARN, hk->component,
                       "webhook callback with a missing or wrong bearer token: refused");
        respond(resp, 401, "missing or wrong bearer token");
        return;
    }
    cJSON *doc = cJSON_ParseWithLength(req->body ? req->body : "", req->body_len);
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        respond(resp, 400, "the body must be a JSON object");
        return;
    }
    bool dirty[SK_ENTITY_COUNT] = {0}, deletes = false, any = false;
    static const char *const keys[] = {"modifiedEntites", "modifiedEntities"};
    for (size_t k = 0; k < 2; k++) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(doc, keys[k]);
        if (!arr || cJSON_IsNull(arr))
            continue;
        if (!cJSON_IsArray(arr)) {
            cJSON_Delete(doc);
            respond(resp, 400, "modifiedEntites must be a list of entity types");
            return;
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, arr)
        {
            const struct sk_entity *e =
                cJSON_IsString(it) ? sk_entity_by_name(it->valuestring) : NULL;
            if (!e)
                continue; /* unknown or future type: nothing we read */
            int i = sk_entity_index(e);
            if (i >= 0 && i < SK_ENTITY_COUNT) {
                dirty[i] = true;
                any = true;
            }
        }
    }
    const cJSON *del = cJSON_GetObjectItemCaseSensitive(doc, "deletedEntities");
    if (del && !cJSON_IsBool(del) && !cJSON_IsNull(del)) {
        cJSON_Delete(doc);
        respond(resp, 400, "deletedEntities must be a boolean");
        return;
    }
    if (cJSON_IsTrue(del))
        deletes = any = true;
    cJSON_Delete(doc);
    if (any) {
        pthread_mutex_lock(&hk->mu);
        for (int i = 0; i < SK_ENTITY_COUNT; i++)
            hk->dirty[i] |= dirty[i];
        hk->deletes |= deletes;
        /* Debounce on the leading edge: the first callback after a quiet
         * `debounce` wakes the source at once; the ones that follow join one
         * wake `debounce` after the last, so a burst costs two polls and
         * a lone change waits for nothing. */
        if (!hk->wake_at_ms) {
            int64_t now = sk_mono_ms(), quiet = hk->woke_ms + hk->conf->webhook.debounce_ms;
            hk->wake_at_ms = hk->woke_ms && now < quiet ? quiet : now;
        }
        pthread_cond_signal(&hk->cv);
        pthread_mutex_unlock(&hk->mu);
    }
    respond(resp, 200, NULL);
}

static void *debounce_thread(void *arg)
{
    struct ss_hook *hk = arg;
    pthread_mutex_lock(&hk->mu);
    while (!hk->stop) {
        int64_t now = sk_mono_ms(), next = 0;
        if (hk->wake_at_ms)
            next = hk->wake_at_ms;
        if (hk->renew_at_ms && (!next || hk->renew_at_ms < next))
            next = hk->renew_at_ms;
        if (!next) {
            pthread_cond_wait(&hk->cv, &hk->mu);
            continue;
        }
        if (now >= next) {
            if (hk->wake_at_ms && now >= hk->wake_at_ms) {
                hk->wake_at_ms = 0;
                hk->woke_ms = now;
            }
            if (hk->renew_at_ms && now >= hk->renew_at_ms) {
                hk->renew_at_ms = 0; /* the poll sets the next one */
                hk->renewal_woke = true;
            }
            pthread_mutex_unlock(&hk->mu);
            sk_source_wake(hk->self);
            pthread_mutex_lock(&hk->mu);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = (int64_t)ts.tv_nsec + (next - now) * 1000000LL;
        ts.tv_sec += (time_t)(ns / 1000000000LL);
        ts.tv_nsec = (long)(ns % 1000000000LL);
        pthread_cond_timedwait(&hk->cv, &hk->mu, &ts);
    }
    pthread_mutex_unlock(&hk->mu);
    return NULL;
}

struct ss_hook *ss_hook_new(struct sk_source *self, const struct ss_conf *conf,
                            const char *component, const bool enabled[SK_ENTITY_COUNT],
                            struct sk_error *err)
{
    const struct ss_hook_conf *wc = &conf->webhook;
    if (!wc->secret || strlen(wc->secret) < 8) {
        sk_error_set(err, SK_ERR_FATAL,
                     "webhook.secret: required (at least 8 characters) when webhook.public_url "
                     "is set: it is the unguessable part of the callback path");
        return NULL;
    }
    for (const char *p = wc->secret; *p; p++) {
        if (!(((*p | 32) >= 'a' && (*p | 32) <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_' || *p == '.' || *p == '~')) {
            sk_error_set(err, SK_ERR_FATAL,
                         "webhook.secret: only letters, digits and -._~ (it goes into a URL path)");
            return NULL;
        }
    }
    struct ss_hook *hk = sk_calloc(1, sizeof(*hk));
    hk->self = self;
    hk->conf = conf;
    hk->component = component;
    sk_cond_init_monotonic(&hk->cv);
    pthread_mutex_init(&hk->mu, NULL);
    hk->path = sk_asprintf("/hooks/%s/%s", self->name, wc->secret);
    size_t n = strlen(wc->public_url);
    while (n > 0 && wc->public_url[n - 1] == '/')
        n--;
    hk->target = sk_asprintf("%.*s%s", (int)n, wc->public_url, hk->path);
    if (wc->resource_types.n) {
        for (size_t i = 0; i < wc->resource_types.n; i++) {
            const char *name = wc->resource_types.v[i];
            const struct sk_entity *e = sk_entity_by_name(name);
            if (!e)
                e = sk_entity_by_collection(name);
            if (!e) {
                sk_error_set(err, SK_ERR_FATAL,
                             "webhook.resource_types: unknown entity type '%s' (expected e.g. "
                             "Person or persons)",
                             name);
                goto fail;
            }
            hk->types[sk_entity_index(e)] = true;
        }
    } else {
        memcpy(hk->types, enabled, sizeof(hk->types));
    }
    /* Every path under /hooks/<source>/ comes here, so a wrong secret gets a
     * clear 403 (and a log line) rather than a 404. */
    char *prefix = sk_asprintf("/hooks/%s/*", self->name);
    int route_rc = sk_source_http_route(self, "POST", prefix, on_callback, hk, err);
    free(prefix);
    if (route_rc)
        goto fail;
    hk->routed = true;
    if (sk_thread_start(&hk->thread, debounce_thread, hk, "hook-debounce", NULL)) {
        sk_error_set(err, SK_ERR_FATAL, "webhook: cannot start the debounce thread");
        goto fail;
    }
    hk->thread_started = true;
    sk_info(component, "webhook callbacks on POST /hooks/%s/******** (debounce %" PRId64 " ms)",
            self->name, wc->debounce_ms);
    return hk;
fail:
    ss_hook_free(hk, NULL, NULL);
    return NULL;
}

bool ss_hook_take_dirty(struct ss_hook *hk, bool dirty[SK_ENTITY_COUNT], bool *deletes)
{
    bool any = false;
    pthread_mutex_lock(&hk->mu);
    for (int i = 0; i < SK_ENTITY_COUNT; i++) {
        dirty[i] = hk->dirty[i];
        any |= dirty[i];
        hk->dirty[i] = false;
    }
    *deletes = hk->deletes;
    any |= hk->deletes;
    hk->deletes = false;
    pthread_mutex_unlock(&hk->mu);
    return any;
}

bool ss_hook_renewal_only(struct ss_hook *hk)
{
    pthread_mutex_lock(&hk->mu);
    bool only = hk->renewal_woke && !hk->deletes && !hk->wake_at_ms;
    for (int i = 0; only && i < SK_ENTITY_COUNT; i++)
        only = !hk->dirty[i];
    hk->renewal_woke = false;
    pthread_mutex_unlock(&hk->mu);
    return only;
}

/* Reads id and expires of a Subscription answer into hk. */
static int take_subscription(struct ss_hook *hk, const struct ss_resp *r)
{
    cJSON *doc = cJSON_ParseWithLength(r->body, r->len);
    const cJSON *id = doc ? cJSON_GetObjectItemCaseSensitive(doc, "id") : NULL;
    const cJSON *exp = doc ? cJSON_GetObjectItemCaseSensitive(doc, "expires") : NULL;
    int64_t exp_us;
    int rc = -1;
    if (cJSON_IsString(id) && *id->valuestring) {
        if (hk->sub_id != id->valuestring) {
            free(hk->sub_id);
            hk->sub_id = sk_strdup(id->valuestring);
        }
        int64_t now_us = sk_now_us();
        bool known = cJSON_IsString(exp) && !sk_time_parse_us(exp->valuestring, &exp_us);
        if (known && exp_us <= now_us + SUB_EXPIRES_MARGIN_US) {
            /* In the past (a server's clock or bug): renewing "before" it
             * meant a renewal, and a wake-up of the source, every second. */
            if (!hk->warned_expires)
                sk_warn(hk->component,
                        "webhook subscription %s: the server says it expires at %.40s, which is "
                        "not ahead of now; taken as unknown (renewed as if it lived an hour)",
                        hk->sub_id, exp->valuestring);
            hk->warned_expires = true;
            known = false;
        }
        /* Without a readable expires, renew within the hour. */
        hk->sub_expires_us = known ? exp_us : now_us + SUB_UNKNOWN_LIFE_US;
        rc = 0;
    }
    cJSON_Delete(doc);
    return rc;
}

/* Has the debounce thread wake the source in ms (for the subscription). */
static void wake_in(struct ss_hook *hk, int64_t ms)
{
    pthread_mutex_lock(&hk->mu);
    hk->renew_at_ms = sk_mono_ms() + ms;
    pthread_cond_signal(&hk->cv);
    pthread_mutex_unlock(&hk->mu);
}

/* When the renewal is due, and a wake-up of the source then. */
static void schedule_renewal(struct ss_hook *hk)
{
    int64_t now_us = sk_now_us();
    int64_t left_us = hk->sub_expires_us - now_us;
    int64_t due_us = left_us - hk->conf->webhook.renew_before_ms * 1000;
    /* A subscription shorter than renew_before: renew at half its life. */
    if (due_us < left_us / 2)
        due_us = left_us / 2;
    if (due_us < 1000000)
        due_us = 1000000;
    /* Kept, not worked out again at the wake-up: half of the life left
     * then is later again, and the renewal was never due. */
    hk->renew_due_us = now_us + due_us;
    wake_in(hk, due_us / 1000);
}

static bool renewal_due(const struct ss_hook *hk)
{
    return sk_now_us() + 1000000 >= hk->renew_due_us;
}

static int create_subscription(struct ss_hook *hk, struct ss_http *http, const char *base_url)
{
    cJSON *body = cJSON_CreateObject();
    char *name = sk_asprintf("skolsync %s", hk->self->name);
    cJSON_AddStringToObject(body, "name", name);
    free(name);
    cJSON_AddStringToObject(body, "target", hk->target);
    cJSON *rts = cJSON_AddArrayToObject(body, "resourceTypes");
    for (int i = 0; i < SK_ENTITY_COUNT; i++) {
        if (!hk->types[i])
            continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "resource", sk_entities[i]->name);
        cJSON_AddItemToArray(rts, o);
    }
    char *text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    char *url = sk_asprintf("%s/subscriptions", base_url);
    struct ss_resp r;
    struct sk_error err = {0};
    int rc = ss_http_request(http, "POST", url, text, &r, &err);
    free(text);
    if (rc) {
        sk_warn(hk->component,
                "webhook subscription not created (%s); polling goes on, retrying "
                "later",
                err.msg);
    } else if ((r.status != 201 && r.status != 200) || take_subscription(hk, &r)) {
        sk_warn(hk->component, "webhook subscription not created: POST %s: HTTP %ld: %.200s", url,
                r.status, r.body);
        rc = -1;
    } else {
        sk_info(hk->component, "webhook subscription %s created (expires in %" PRId64 " s)",
                hk->sub_id, (hk->sub_expires_us - sk_now_us()) / 1000000);
    }
    ss_resp_free(&r);
    free(url);
    return rc;
}

static int renew_subscription(struct ss_hook *hk, struct ss_http *http, const char *base_url)
{
    char *url = sk_asprintf("%s/subscriptions/%s", base_url, hk->sub_id);
    struct ss_resp r = {0};
    struct sk_error err = {0};
    int rc = ss_http_request(http, "PATCH", url, NULL, &r, &err);
    if (rc) {
        sk_warn(hk->component, "webhook subscription %s not renewed (%s); retrying later",
                hk->sub_id, err.msg);
    } else if (r.status == 404) {
        sk_warn(hk->component, "webhook subscription %s is gone at the server; creating a new one",
                hk->sub_id);
        free(hk->sub_id);
        hk->sub_id = NULL;
        rc = create_subscription(hk, http, base_url);
    } else if (r.status != 200 && r.status != 204) {
        sk_warn(hk->component, "webhook subscription %s not renewed: HTTP %ld", hk->sub_id,
                r.status);
        rc = -1;
    } else if (r.status == 204 || take_subscription(hk, &r)) {
        /* No body: the spec says the expiry moved; assume the old lifetime again. */
        hk->sub_expires_us = sk_now_us() + SUB_UNKNOWN_LIFE_US;
    }
    if (rc == 0)
        sk_debug(hk->component, "webhook subscription %s renewed", hk->sub_id);
    ss_resp_free(&r);
    free(url);
    return rc;
}

void ss_hook_maintain(struct ss_hook *hk, struct ss_http *http, const char *base_url)
{
    int64_t now = sk_mono_ms();
    if (now < hk->next_try_ms)
        return;
    int rc = 0;
    if (!hk->sub_id)
        rc = create_subscription(hk, http, base_url);
    else if (renewal_due(hk))
        rc = renew_subscription(hk, http, base_url);
    else
        return;
    if (rc) {
        hk->next_try_ms = sk_mono_ms() + SUB_RETRY_MS;
        wake_in(hk, SUB_RETRY_MS); /* not only at the next poll, poll_interval away */
        return;
    }
    hk->next_try_ms = 0;
    schedule_renewal(hk);
}

void ss_hook_free(struct ss_hook *hk, struct ss_http *http, const char *base_url)
{
    if (!hk)
        return;
    /* First the route: once it is gone no HTTP thread is inside on_callback
     * or can enter it, so hk may be freed below. */
    if (hk->routed)
        sk_source_http_unroute(hk->self, hk);
    if (hk->thread_started) {
        pthread_mutex_lock(&hk->mu);
        hk->stop = true;
        pthread_cond_signal(&hk->cv);
        pthread_mutex_unlock(&hk->mu);
        pthread_join(hk->thread, NULL);
    }
    if (hk->sub_id && http) {
        char *url = sk_asprintf("%s/subscriptions/%s", base_url, hk->sub_id);
        struct ss_resp r = {0};
        struct sk_error err = {0};
        if (ss_http_request(http, "DELETE", url, NULL, &r, &err) == 0 &&
            (r.status == 204 || r.status == 200 || r.status == 404))
            sk_info(hk->component, "webhook subscription %s deleted", hk->sub_id);
        else
            sk_warn(hk->component, "webhook subscription %s not deleted (%s); it expires by itself",
                    hk->sub_id, err.msg[0] ? err.msg : "unexpected answer");
        ss_resp_free(&r);
        free(url);
    }
    pthread_cond_destroy(&hk->cv);
    pthread_mutex_destroy(&hk->mu);
    free(hk->sub_id);
    free(hk->path);
    free(hk->target);
    free(hk);
}
