/*
 * http_api.c: what the daemon answers on admin.listen: /health, /ready,
 * /metrics (its text is http_metrics.c's) and the connector API under /api/v1.
 *
 * Reads go through the daemon's read lock; every state-changing call needs
 * `Authorization: Bearer <admin.token>` and is refused (403) when no token is
 * configured. Handlers only set flags and wake threads: the main thread and
 * the connectors' own threads do the work.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "daemon_internal.h"
#include "dlq.h"
#include "log.h"
#include "util.h"

const char *sk_daemon_state_name(struct sk_runner *r)
{
    struct sk_source_env *src = sk_as_source(r);
    int st = atomic_load(&r->state);
    if (src && atomic_load(&src->held) > 0 && (st == SK_STATE_RUNNING || st == SK_STATE_IDLE))
        return "held";
    return sk_runner_state_name(st);
}

/* ---- health ------------------------------------------------------------------ */

static void http_health(void *ctx, const struct sk_http_request *req, struct sk_http_response *resp)
{
    resp->body = sk_strdup("{\"status\":\"alive\"}\n");
}

/* The request carries the admin token (any case of "Bearer", constant-time comparison). */
static bool token_ok(struct sk_daemon *d, const struct sk_http_request *req)
{
    return sk_bearer_ok(req->authorization, d->admin_token);
}

/* What unauthenticated answers say instead of a connector's last error, which
 * may quote what an outside server sent (an error body, a name). */
#define ERROR_HIDDEN "details in the log, or in the API with the admin token"

bool sk_daemon_ready(struct sk_daemon *d, bool details, char *why, size_t size)
{
    bool ok = true;
    pthread_rwlock_rdlock(&d->lock);
    for (size_t i = 0; i < d->n_conns && ok; i++) {
        struct sk_runner *r = d->conns[i];
        int st = atomic_load(&r->state);
        if (st != SK_STATE_RUNNING && st != SK_STATE_IDLE && st != SK_STATE_STANDBY) {
            char err[256];
            sk_runner_last_error(r, err, sizeof(err));
            if (err[0] && !details)
                snprintf(err, sizeof(err), "%s", ERROR_HIDDEN);
            snprintf(why, size, "%s is %s%s%s", r->name, sk_runner_state_name(st),
                     err[0] ? ": " : "", err);
            ok = false;
        }
    }
    pthread_rwlock_unlock(&d->lock);
    return ok;
}

static void json_response(struct sk_http_response *resp, int status, cJSON *o)
{
    resp->status = status;
    resp->body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
}

static void error_response(struct sk_http_response *resp, int status, const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg);
    json_response(resp, status, o);
}

static void http_ready(void *ctx, const struct sk_http_request *req, struct sk_http_response *resp)
{
    char why[512];
    if (sk_daemon_ready(ctx, token_ok(ctx, req), why, sizeof(why))) {
        resp->body = sk_strdup("{\"status\":\"ready\"}\n");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "not ready");
    cJSON_AddStringToObject(o, "reason", why);
    json_response(resp, 503, o);
}

/* Failing and skipped entity types of a source; reasons only with details (like last_error). */
static void types_json(struct sk_source_env *src, cJSON *o, bool details)
{
    cJSON *failing = cJSON_AddArrayToObject(o, "failing_types");
    cJSON *skipped = cJSON_AddArrayToObject(o, "skipped_types");
    pthread_mutex_lock(&src->runner.mu);
    for (int k = 0; k <= SK_ENTITY_COUNT; k++) {
        const struct sk_type_health *h = &src->types[k];
        if (h->skipped)
            cJSON_AddItemToArray(skipped, cJSON_CreateString(sk_type_health_name(k)));
        if (!h->failing)
            continue;
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "entity", sk_type_health_name(k));
        cJSON_AddNumberToObject(f, "status", (double)h->status);
        cJSON_AddStringToObject(f, "error", details ? h->reason : ERROR_HIDDEN);
        cJSON_AddItemToArray(failing, f);
    }
    pthread_mutex_unlock(&src->runner.mu);
}

/* ---- /api/v1 -------------------------------------------------------------------- */

/* details: the caller showed the admin token, so last_error may be shown as it is. */
static cJSON *runner_json(struct sk_runner *r, bool details)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", r->name);
    cJSON_AddStringToObject(o, "kind", sk_runner_kind_name(r));
    cJSON_AddStringToObject(o, "type", r->type);
    cJSON_AddStringToObject(o, "state", sk_daemon_state_name(r));
    char err[512];
    sk_runner_last_error(r, err, sizeof(err));
    cJSON_AddStringToObject(o, "last_error", err[0] && !details ? ERROR_HIDDEN : err);
    cJSON_AddNumberToObject(o, "records", (double)atomic_load(&r->records));
    cJSON_AddNumberToObject(o, "failed", (double)atomic_load(&r->failed));
    cJSON_AddNumberToObject(o, "dead_lettered", (double)atomic_load(&r->dead_lettered));
    cJSON_AddNumberToObject(o, "retries", (double)atomic_load(&r->retries));
    cJSON_AddNumberToObject(o, "restarts", (double)atomic_load(&r->restarts));
    int64_t total = atomic_load(&r->progress_total);
    if (total > 0) {
        cJSON_AddNumberToObject(o, "progress_done", (double)atomic_load(&r->progress_done));
        cJSON_AddNumberToObject(o, "progress_total", (double)total);
    }
    struct sk_source_env *src = sk_as_source(r);
    if (src) {
        cJSON_AddNumberToObject(o, "held_deletions", (double)atomic_load(&src->held));
        types_json(src, o, details);
    }
    struct sk_sink_env *snk = sk_as_sink(r);
    if (snk) {
        cJSON_AddStringToObject(o, "group", snk->group);
        cJSON_AddNumberToObject(o, "partitions", atomic_load(&r->partitions));
        pthread_mutex_lock(&r->mu); /* never during open or close (supervisor.c) */
        if (snk->open && snk->sink.ops->status)
            snk->sink.ops->status(&snk->sink, o);
        pthread_mutex_unlock(&r->mu);
    }
    return o;
}

/* State-changing calls need `Authorization: Bearer <admin.token>`; none configured = refused. */
static bool authorized(struct sk_daemon *d, const struct sk_http_request *req,
                       struct sk_http_response *resp)
{
    if (!d->admin_token || !*d->admin_token) {
        error_response(resp, 403, "state-changing calls are disabled: set admin.token");
        return false;
    }
    if (!token_ok(d, req)) {
        error_response(resp, 401, "missing or wrong bearer token");
        return false;
    }
    return true;
}

static void api_list(void *ctx, const struct sk_http_request *req, struct sk_http_response *resp)
{
    struct sk_daemon *d = ctx;
    bool details = token_ok(d, req);
    cJSON *arr = cJSON_CreateArray();
    pthread_rwlock_rdlock(&d->lock);
    for (size_t i = 0; i < d->n_conns; i++)
        cJSON_AddItemToArray(arr, runner_json(d->conns[i], details));
    pthread_rwlock_unlock(&d->lock);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "connectors", arr);
    json_response(resp, 200, o);
}

enum action {
    ACT_GET,
    ACT_HELD,
    ACT_PAUSE,
    ACT_RESUME,
    ACT_RESTART,
    ACT_RELEASE,
    ACT_CURSOR_RESET
};

/* Writes a tombstone for the source's cursor: it starts again with a full sync. */
static int cursor_reset(struct sk_daemon *d, struct sk_runner *r, char *msg, size_t size)
{
    struct sk_error err = {0};
    char *cid = sk_name_client(sk_kafka_names(d->kafka), "cursor-reset", r->name);
    rd_kafka_conf_t *conf = sk_kafka_conf_new(d->kafka, cid, NULL, &err);
    free(cid);
    char errstr[256];
    rd_kafka_t *p = conf ? rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr)) : NULL;
    if (!p) {
        if (conf)
            rd_kafka_conf_destroy(conf);
        snprintf(msg, size, "cannot create a producer: %.200s", err.msg[0] ? err.msg : errstr);
        return -1;
    }
    rd_kafka_resp_err_t e = rd_kafka_producev(p, RD_KAFKA_V_TOPIC(sk_kafka_cursor_topic(d->kafka)),
                                              RD_KAFKA_V_KEY(r->name, strlen(r->name)),
                                              RD_KAFKA_V_VALUE(NULL, 0), RD_KAFKA_V_END);
    if (!e)
        e = rd_kafka_flush(p, 15000);
    sk_kafka_destroy_within(p, SK_KAFKA_DESTROY_MS, "cursor reset");
    if (e) {
        snprintf(msg, size, "writing the tombstone: %s", rd_kafka_err2str(e));
        return -1;
    }
    return 0;
}

/* How long a state-changing call waits for its change to hold before it answers. */
#define SETTLE_MS 10000

/* Whether act's change holds (or can no longer happen: the connector failed or stopped). */
static bool settled(struct sk_runner *r, enum action act, uint64_t seq)
{
    int st = atomic_load(&r->state);
    if (st == SK_STATE_FAILED || st == SK_STATE_STOPPED)
        return true;
    struct sk_source_env *src = sk_as_source(r);
    switch (act) {
    case ACT_PAUSE:
        return st == SK_STATE_PAUSED;
    case ACT_RESUME:
        return st != SK_STATE_PAUSED;
    case ACT_RELEASE:
        return !src || sk_source_release_settled(src, seq);
    default:
        return true;
    }
}

/*
 * Waits (bounded) until the change holds, so the answer carries the state
 * after the call: a pause answered 200 is a pause in effect. False if it did
 * not hold in time; the answer then says "pending".
 */
static bool settle(struct sk_runner *r, enum action act, uint64_t seq)
{
    int64_t until = sk_mono_ms() + SETTLE_MS;
    while (!settled(r, act, seq)) {
        if (sk_mono_ms() >= until)
            return false;
        sk_sleep_ms(20);
    }
    return true;
}

/* GET|POST /api/v1/connectors/{name}[/{action}] */
static void api_connector(void *ctx, const struct sk_http_request *req,
                          struct sk_http_response *resp)
{
    struct sk_daemon *d = ctx;
    const char *rest = req->path + strlen("/api/v1/connectors/");
    char name[128];
    size_t nl = strcspn(rest, "/");
    if (nl == 0 || nl >= sizeof(name)) {
        error_response(resp, 404, "no such connector");
        return;
    }
    memcpy(name, rest, nl);
    name[nl] = '\0';
    const char *action = rest[nl] ? rest + nl + 1 : "";
    enum action act;
    if (!*action && strcmp(req->method, "GET") == 0)
        act = ACT_GET;
    else if (strcmp(action, "held") == 0 && strcmp(req->method, "GET") == 0)
        act = ACT_HELD; /* ids are no personal data, but a detail: behind the token */
    else if (strcmp(req->method, "POST") != 0) {
        snprintf(resp->allow, sizeof(resp->allow), "%s",
                 !*action || strcmp(action, "held") == 0 ? "GET" : "POST");
        error_response(resp, 405, "method not allowed");
        return;
    } else if (strcmp(action, "pause") == 0)
        act = ACT_PAUSE;
    else if (strcmp(action, "resume") == 0)
        act = ACT_RESUME;
    else if (strcmp(action, "restart") == 0)
        act = ACT_RESTART;
    else if (strcmp(action, "release") == 0)
        act = ACT_RELEASE;
    else if (strcmp(action, "cursor/reset") == 0)
        act = ACT_CURSOR_RESET;
    else {
        error_response(resp, 404, "no such action");
        return;
    }
    if (act != ACT_GET && !authorized(d, req, resp))
        return;

    pthread_rwlock_rdlock(&d->lock);
    struct sk_runner *r = NULL;
    for (size_t i = 0; i < d->n_conns && !r; i++)
        if (strcmp(d->conns[i]->name, name) == 0)
            r = d->conns[i];
    if (!r) {
        pthread_rwlock_unlock(&d->lock);
        {
            error_response(resp, 404, "no such connector");
            return;
        }
    }
    struct sk_source_env *src = sk_as_source(r);
    char msg[256] = "";
    int status = 200;
    uint64_t seq = 0;
    struct sk_release *rel;
    switch (act) {
    case ACT_GET:
        break;
    case ACT_HELD:
        if (src)
            json_response(resp, 200, sk_source_held_doc(src));
        else
            error_response(resp, 400, "only sources hold deletions");
        pthread_rwlock_unlock(&d->lock);
        return;
    case ACT_PAUSE:
    case ACT_RESUME:
        atomic_store(&r->paused, act == ACT_PAUSE);
        sk_runner_wake(r);
        sk_info(r->name, "%s by an operator", act == ACT_PAUSE ? "paused" : "resumed");
        break;
    case ACT_RESTART:
        atomic_store(&r->restart_requested, true);
        sk_info(r->name, "restart requested by an operator");
        break;
    case ACT_RELEASE:
        if (!src) {
            status = 400;
            snprintf(msg, sizeof(msg), "only sources hold deletions");
            break;
        }
        if (!(rel = sk_release_parse(req->body, req->body_len, msg, sizeof(msg)))) {
            status = 400;
            break;
        }
        const char *what = rel->reject ? "rejected" : "released";
        if (!(seq = sk_source_release_queue(src, rel, msg, sizeof(msg)))) {
            status = 409;
            break;
        }
        sk_warn(r->name, "operator %s held deletion(s)%s (%llu held)", what,
                req->body_len ? " as asked" : "", (unsigned long long)atomic_load(&src->held));
        sk_runner_wake(r);
        break;
    case ACT_CURSOR_RESET:
        if (!src || atomic_load(&r->state) != SK_STATE_PAUSED) {
            status = 409;
            snprintf(msg, sizeof(msg), "pause the source first (POST .../pause)");
            break;
        }
        if (cursor_reset(d, r, msg, sizeof(msg))) {
            status = 503;
            break;
        }
        atomic_store(&r->reload_cursor, true);
        sk_warn(r->name, "cursor reset by an operator: a full sync follows on resume");
        break;
    }
    bool pending = status == 200 && !settle(r, act, seq);
    cJSON *o = runner_json(r, token_ok(d, req));
    pthread_rwlock_unlock(&d->lock);
    if (pending) {
        cJSON_AddBoolToObject(o, "pending", true); /* asked for, not in effect yet */
        json_response(resp, 202, o);
        return;
    }
    if (status != 200) {
        cJSON_Delete(o);
        {
            error_response(resp, status, msg);
            return;
        }
    }
    json_response(resp, 200, o);
}

/* POST /api/v1/reload: the same as SIGHUP, answered once the reload is done. */
static void api_reload(void *ctx, const struct sk_http_request *req, struct sk_http_response *resp)
{
    struct sk_daemon *d = ctx;
    if (!authorized(d, req, resp))
        return;
    pthread_mutex_lock(&d->reload_mu);
    uint64_t gen = d->reload_generation;
    d->reload_requested = true;
    sk_eventfd_signal(d->wake_fd);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 60;
    int rc = 0;
    while (d->reload_generation == gen && rc == 0)
        rc = pthread_cond_timedwait(&d->reload_cv, &d->reload_mu, &ts);
    char *body = d->reload_generation != gen ? sk_strdup(d->reload_result) : NULL;
    pthread_mutex_unlock(&d->reload_mu);
    if (!body) {
        error_response(resp, 504, "the reload did not finish within 60 s");
        return;
    }
    resp->status = strstr(body, "\"reloaded\":true") ? 200 : 422;
    resp->body = body;
}

/* Filters from a JSON body {"connector", "from", "to", "limit", "value", "show_data"}
 * (all optional). */
static void dlq_filter(const struct sk_http_request *req, struct sk_dlq_filter *f, cJSON **keep)
{
    *f = (struct sk_dlq_filter){.from_offset = -1, .to_offset = -1, .limit = 1000};
    cJSON *b = req->body_len ? cJSON_Parse(req->body) : NULL;
    *keep = b;
    const cJSON *x;
    if ((x = cJSON_GetObjectItemCaseSensitive(b, "connector")) && cJSON_IsString(x))
        f->connector = x->valuestring;
    /* offsets and limits within range before any conversion (1e300 is a number too) */
    if ((x = cJSON_GetObjectItemCaseSensitive(b, "from")) && cJSON_IsNumber(x) &&
        x->valuedouble >= 0 && x->valuedouble < 9e18)
        f->from_offset = (int64_t)x->valuedouble;
    if ((x = cJSON_GetObjectItemCaseSensitive(b, "to")) && cJSON_IsNumber(x) &&
        x->valuedouble >= 0 && x->valuedouble < 9e18)
        f->to_offset = (int64_t)x->valuedouble;
    if ((x = cJSON_GetObjectItemCaseSensitive(b, "limit")) && cJSON_IsNumber(x) &&
        x->valuedouble >= 1 && x->valuedouble <= 1e6)
        f->limit = (size_t)x->valuedouble;
    f->show_data = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "show_data"));
    if ((x = cJSON_GetObjectItemCaseSensitive(b, "value")) && cJSON_IsString(x)) {
        f->value = x->valuestring; /* replay: the corrected record (dlq.h) */
        f->value_len = strlen(x->valuestring);
    }
}

/*
 * POST /api/v1/dlq (list) and /api/v1/dlq/replay. Dead letters hold raw
 * input, personal data too: token required.
 */
static void api_dlq(struct sk_daemon *d, const struct sk_http_request *req,
                    struct sk_http_response *resp, bool replay)
{
    if (!authorized(d, req, resp))
        return;
    struct sk_dlq_filter f;
    cJSON *body; /* holds f's strings */
    dlq_filter(req, &f, &body);
    struct sk_error err = {0};
    size_t skipped = 0, superseded = 0;
    cJSON *report = replay ? cJSON_CreateArray() : NULL;
    long n = 0;
    cJSON *arr = NULL;
    if (replay)
        n = sk_dlq_replay(d->kafka, &f, &skipped, &superseded, report, &err);
    else
        n = (arr = sk_dlq_list(d->kafka, &f, &err)) ? 0 : -1;
    cJSON_Delete(body);
    if (n < 0) {
        cJSON_Delete(report);
        error_response(resp, 503, err.msg);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    if (replay) {
        cJSON_AddNumberToObject(o, "replayed", (double)n);
        cJSON_AddNumberToObject(o, "skipped", (double)skipped);
        cJSON_AddNumberToObject(o, "superseded", (double)superseded);
        cJSON_AddItemToObject(o, "details", report);
    } else {
        cJSON_AddItemToObject(o, "dead_letters", arr);
    }
    json_response(resp, 200, o);
}

static void api_dlq_list(void *ctx, const struct sk_http_request *req,
                         struct sk_http_response *resp)
{
    api_dlq(ctx, req, resp, false);
}

static void api_dlq_replay(void *ctx, const struct sk_http_request *req,
                           struct sk_http_response *resp)
{
    api_dlq(ctx, req, resp, true);
}

/* GET /api/v1/lag: the latest sample of the sinks' groups (docs/lag.md JSON). */
static void api_lag(void *ctx, const struct sk_http_request *req, struct sk_http_response *resp)
{
    struct sk_daemon *d = ctx;
    cJSON *rep = sk_lag_monitor_json(d->lag);
    if (!rep) {
        error_response(resp, 503, "no lag sample yet");
        return;
    }
    json_response(resp, 200, rep);
}

/* GET /api/v1/cluster: who owns which source and sink partition (cluster_api.c). */
static void api_cluster(void *ctx, const struct sk_http_request *req, struct sk_http_response *resp)
{
    struct sk_daemon *d = ctx;
    if (!d->kafka) { /* the daemon starts Kafka first; a harness may serve without it */
        error_response(resp, 503, "no Kafka connection");
        return;
    }
    json_response(resp, 200, sk_cluster_json(d));
}

static void api_lag_history(void *ctx, const struct sk_http_request *req,
                            struct sk_http_response *resp)
{
    struct sk_daemon *d = ctx;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "history", sk_lag_monitor_history(d->lag));
    json_response(resp, 200, o);
}

extern const unsigned char sk_status_page[];
extern const size_t sk_status_page_len;

/* GET /: the status page (daemon/status/index.html, compiled in; no external resources). */
static void status_page(void *ctx, const struct sk_http_request *req, struct sk_http_response *resp)
{
    resp->body = sk_strndup((const char *)sk_status_page, sk_status_page_len);
    resp->content_type = "text/html; charset=utf-8";
}

int sk_http_api_register(struct sk_daemon *d, struct sk_error *err)
{
    if (!d->http)
        return 0;
    if (sk_http_route(d->http, "GET", "/", status_page, d, err) ||
        sk_http_route(d->http, "GET", "/health", http_health, d, err) ||
        sk_http_route(d->http, "GET", "/ready", http_ready, d, err) ||
        sk_http_route(d->http, "GET", "/metrics", sk_http_api_metrics, d, err) ||
        sk_http_route(d->http, "GET", "/api/v1/connectors", api_list, d, err) ||
        sk_http_route(d->http, "POST", "/api/v1/reload", api_reload, d, err) ||
        sk_http_route(d->http, "GET", "/api/v1/lag", api_lag, d, err) ||
        sk_http_route(d->http, "GET", "/api/v1/cluster", api_cluster, d, err) ||
        sk_http_route(d->http, "GET", "/api/v1/lag/history", api_lag_history, d, err) ||
        sk_http_route(d->http, "POST", "/api/v1/dlq", api_dlq_list, d, err) ||
        sk_http_route(d->http, "POST", "/api/v1/dlq/replay", api_dlq_replay, d, err) ||
        sk_http_route(d->http, "*", "/api/v1/connectors/*", api_connector, d, err))
        return -1;
    return 0;
}
