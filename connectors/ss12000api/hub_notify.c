/*
 * hub_notify.c: the hub's webhooks out. HUB_NOTIFY_THREADS threads take the
 * subscriptions whose batch window has closed (hub_subs_changed opened it)
 * and POST the spec's callback to their target:
 *
 *   {"modifiedEntites": ["Person", "Group"], "deletedEntities": true}
 *
 * (the spec's spelling, docs/ss12000-notes.md §3.3; deletedEntities true
 * when a covered type lost a record: the subscriber reads /deletedEntities).
 *
 * Owns: delivery, retries and the drop. A 2xx is delivered; anything else
 * (no answer, a timeout, another status) puts the types back, and the next
 * attempt, with whatever changed since, follows after HUB_RETRY_FIRST_MS,
 * doubling up to HUB_RETRY_MAX_MS. A subscription whose attempt fails after
 * it expired is dropped (logged). Must never: hold the lock during a
 * request, send two callbacks of one subscription at once, or log a
 * target (its path often holds the subscriber's secret).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_client.h"
#include "hub_subs.h"
#include "log.h"
#include "util.h"

/* One attempt as a thread took it from its subscription. */
struct attempt {
    char id[37];
    char *client, *target;
    uint32_t types;
    bool deleted;
};

static char *callback_body(uint32_t types, bool deleted)
{
    struct sk_buf b = {0};
    sk_buf_puts(&b, "{\"modifiedEntites\":[");
    bool first = true;
    for (int i = 0; i < SK_ENTITY_COUNT; i++) {
        if (!(types & (1u << i)))
            continue;
        sk_buf_printf(&b, "%s\"%s\"", first ? "" : ",", sk_entities[i]->name);
        first = false;
    }
    sk_buf_printf(&b, "],\"deletedEntities\":%s}", deleted ? "true" : "false");
    return sk_buf_take(&b);
}

static int64_t backoff_ms(int attempts)
{
    int64_t ms = HUB_RETRY_FIRST_MS;
    for (int i = 1; i < attempts && ms < HUB_RETRY_MAX_MS; i++)
        ms *= 2;
    return ms < HUB_RETRY_MAX_MS ? ms : HUB_RETRY_MAX_MS;
}

/* The subscription due first; none: *next_ms the earliest due time (0: none pending). */
static struct hub_sub *take_due(struct hub_subs *s, int64_t now, int64_t *next_ms)
{
    *next_ms = 0;
    for (size_t i = 0; i < s->n; i++) {
        struct hub_sub *sub = s->v[i];
        if (sub->in_flight || !sub->due_ms)
            continue;
        if (sub->due_ms <= now)
            return sub;
        if (!*next_ms || sub->due_ms < *next_ms)
            *next_ms = sub->due_ms;
    }
    return NULL;
}

static void wait_until(struct hub_subs *s, int64_t next_ms)
{
    if (!next_ms) {
        pthread_cond_wait(&s->cv, &s->mu);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = (int64_t)ts.tv_nsec + (next_ms - sk_mono_ms()) * 1000000LL;
    ts.tv_sec += (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    pthread_cond_timedwait(&s->cv, &s->mu, &ts);
}

/* After an attempt (mu held): delivered, or back to pending with a backoff, or dropped. */
static void settle(struct hub_subs *s, const struct attempt *at, bool ok, const char *why)
{
    ssize_t k = -1;
    for (size_t i = 0; i < s->n && k < 0; i++)
        if (strcmp(s->v[i]->id, at->id) == 0)
            k = (ssize_t)i;
    if (ok)
        s->sent++;
    else
        s->failed++;
    if (k < 0) /* deleted meanwhile */
        return;
    struct hub_sub *sub = s->v[k];
    sub->in_flight = false;
    if (ok) {
        if (sub->attempts)
            sk_info(s->h->name,
                    "subscription %s of client %s: callback delivered after %d failed "
                    "attempts",
                    sub->id, sub->client, sub->attempts);
        sub->attempts = 0;
        return;
    }
    sub->pending |= at->types;
    sub->pending_deleted |= at->deleted;
    sub->attempts++;
    if (sk_now_us() >= sub->expires_us) {
        sk_warn(s->h->name,
                "subscription %s of client %s dropped: its callback failed (%s) after it "
                "expired, %d attempts in a row",
                sub->id, sub->client, why, sub->attempts);
        s->dropped++;
        hub_subs_remove_locked(s, (size_t)k);
        return;
    }
    int64_t wait = backoff_ms(sub->attempts);
    sub->due_ms = sk_mono_ms() + wait;
    sk_log(sub->attempts == 1 ? SK_LOG_WARN : SK_LOG_DEBUG, s->h->name,
           "subscription %s of client %s: callback failed (%s); attempt %d in %" PRId64 " ms",
           sub->id, sub->client, why, sub->attempts + 1, wait);
}

/* One POST to at->target: true on a 2xx; why says what went wrong otherwise. */
static bool deliver(struct sk_http_client *http, const struct attempt *at, char *why,
                    size_t why_size)
{
    char *body = callback_body(at->types, at->deleted);
    struct sk_http_resp resp = {0};
    struct sk_error err = {0};
    bool ok = false;
    if (sk_http_client_request(http, "POST", at->target, body, &resp, &err) < 0) {
        /* The error may name the URL: only its class goes into the log. */
        snprintf(why, why_size, "%s", err.cls == SK_ERR_RETRIABLE ? "no answer" : "refused");
    } else {
        ok = resp.status >= 200 && resp.status < 300;
        snprintf(why, why_size, "HTTP %ld", resp.status);
        sk_http_resp_free(&resp);
    }
    free(body);
    return ok;
}

static void *notify_thread(void *arg)
{
    struct hub_notifier *nt = arg;
    struct hub_subs *s = nt->subs;
    struct sk_http_client *http = nt->http;
    struct sk_error err = {0};
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        int64_t next_ms;
        struct hub_sub *sub = take_due(s, sk_mono_ms(), &next_ms);
        if (!sub) {
            wait_until(s, next_ms);
            continue;
        }
        struct attempt at = {.client = sk_strdup(sub->client),
                             .target = sk_strdup(sub->target),
                             .types = sub->pending,
                             .deleted = sub->pending_deleted};
        memcpy(at.id, sub->id, sizeof(at.id));
        sub->pending = 0;
        sub->pending_deleted = false;
        sub->due_ms = 0;
        sub->in_flight = true;
        pthread_mutex_unlock(&s->mu);
        char why[64];
        bool ok = deliver(http, &at, why, sizeof(why));
        pthread_mutex_lock(&s->mu);
        settle(s, &at, ok, why);
        bool dropped = true;
        for (size_t i = 0; i < s->n; i++)
            dropped &= strcmp(s->v[i]->id, at.id) != 0;
        if (dropped && !ok) { /* its row goes too, without mu held */
            pthread_mutex_unlock(&s->mu);
            if (hub_subs_delete_row(s, at.id, at.client, &err) < 0)
                sk_warn(s->h->name, "subscription %s: %s", at.id, err.msg);
            pthread_mutex_lock(&s->mu);
        }
        free(at.client);
        free(at.target);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int hub_notify_start(struct hub_subs *s, struct sk_error *err)
{
    struct sk_http_client_conf conf = {.user_agent = "skolsync-hub",
                                       .accept = "*/*",
                                       .content_type = "application/json",
                                       .timeout_ms = HUB_CALLBACK_TIMEOUT_MS,
                                       .max_response_size = 64 * 1024,
                                       .auth = SK_HTTP_AUTH_NONE};
    for (size_t i = 0; i < HUB_NOTIFY_THREADS; i++) {
        struct hub_notifier *nt = &s->threads[i];
        nt->subs = s;
        if (!(nt->http = sk_http_client_new(&conf, s->h->name, err)))
            return -1;
        if (sk_thread_start(&nt->thread, notify_thread, nt, "hub-notify", NULL)) {
            sk_http_client_free(nt->http);
            nt->http = NULL;
            return sk_error_set(err, SK_ERR_FATAL, "cannot start the webhook threads");
        }
        s->n_threads++;
    }
    return 0;
}

void hub_notify_stop(struct hub_subs *s)
{
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < s->n_threads; i++) {
        pthread_join(s->threads[i].thread, NULL);
        sk_http_client_free(s->threads[i].http);
    }
    s->n_threads = 0;
}
