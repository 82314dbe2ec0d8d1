/*
 * supervisor.c: runs a validated configuration: starts Kafka (or the
 * embedded broker), opens every connector, starts one thread per connector,
 * then watches signals, readiness, progress and (with --once) completion.
 *
 * Signals are blocked before any thread exists (librdkafka's threads inherit
 * the mask) and read from a signalfd here, on the main thread: no work in
 * signal handlers (c-engineering.md §1.6).
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include <cjson/cJSON.h>

#include "daemon.h"
#include "log.h"
#include "model.h"
#include "util.h"

struct daemon {
    struct sk_daemon_config *cfg;
    struct sk_kafka *kafka;
    struct sk_http *http;
    struct api_route *api; /* one per connector, for its API routes */
    struct sk_source_env **sources;
    struct sk_sink_env **sinks;
    size_t n_sources, n_sinks;
    int sigfd;
    int64_t started_ms;
};

static void open_fail(const char *name, const struct sk_error *err)
{
    sk_error_log(name, "cannot open: %s", err->msg);
}

static int open_connectors(struct daemon *d)
{
    struct sk_daemon_config *cfg = d->cfg;
    d->sources = sk_calloc(cfg->n_sources + 1, sizeof(*d->sources));
    d->sinks = sk_calloc(cfg->n_sinks + 1, sizeof(*d->sinks));
    for (size_t i = 0; i < cfg->n_sources; i++) {
        struct sk_source_def *def = &cfg->sources[i];
        struct sk_source_env *env = sk_calloc(1, sizeof(*env));
        d->sources[d->n_sources++] = env;
        sk_runner_init(&env->runner, SK_RUNNER_SOURCE, def->name, def->ops->type);
        env->settings = def->settings;
        env->kafka = d->kafka;
        env->http = d->http;
        env->source.ops = def->ops;
        env->source.name = env->runner.name;
        env->source.conf = def->conf;
        env->source.env = env;
        struct sk_error err = {0};
        if (def->ops->open(&env->source, &err)) {
            open_fail(def->name, &err);
            return -1;
        }
    }
    for (size_t i = 0; i < cfg->n_sinks; i++) {
        struct sk_sink_def *def = &cfg->sinks[i];
        struct sk_sink_env *env = sk_calloc(1, sizeof(*env));
        d->sinks[d->n_sinks++] = env;
        sk_runner_init(&env->runner, SK_RUNNER_SINK, def->name, def->ops->type);
        env->settings = def->settings;
        env->kafka = d->kafka;
        env->sink.ops = def->ops;
        env->sink.name = env->runner.name;
        env->sink.conf = def->conf;
        env->sink.incarnation = sk_kafka_incarnation(d->kafka);
        env->sink.entities = def->entities;
        env->sink.n_entities = def->n_entities;
        sk_sink_privacy_resolve(&def->settings, def->ops, &env->privacy);
        sk_info(def->name, "privacy: protected identities %s, %zu field(s) dropped",
                sk_protected_mode_name(env->privacy.protected_mode),
                env->privacy.drop_fields.n);
        env->topics = sk_calloc(def->n_entities + 1, sizeof(char *));
        for (size_t j = 0; j < def->n_entities; j++)
            env->topics[j] = sk_kafka_topic_for(d->kafka, def->entities[j]->collection);
        struct sk_error err = {0};
        if (def->ops->open(&env->sink, &err)) {
            env->sink.priv = NULL;
            open_fail(def->name, &err);
            return -1;
        }
        env->runner.state = SK_STATE_STARTING;
    }
    return 0;
}

static void close_connectors(struct daemon *d)
{
    for (size_t i = 0; i < d->n_sources; i++) {
        struct sk_source_env *env = d->sources[i];
        if (env->source.priv)
            env->source.ops->close(&env->source);
        sk_runner_destroy(&env->runner);
        free(env);
    }
    for (size_t i = 0; i < d->n_sinks; i++) {
        struct sk_sink_env *env = d->sinks[i];
        if (env->sink.priv)
            env->sink.ops->close(&env->sink);
        for (size_t j = 0; j < env->sink.n_entities; j++)
            free(env->topics[j]);
        free(env->topics);
        sk_sink_privacy_free(&env->privacy);
        sk_runner_destroy(&env->runner);
        free(env);
    }
    free(d->sources);
    free(d->sinks);
}

/* ---- HTTP: health, readiness, metrics ------------------------------------ */

static void http_health(void *ctx, const struct sk_http_request *req,
                        struct sk_http_response *resp)
{
    resp->body = sk_strdup("{\"status\":\"alive\"}\n");
}

/* Ready: every connector open and running, or idle and caught up. */
static bool ready(struct daemon *d, char *why, size_t size)
{
    for (size_t i = 0; i < d->n_sources + d->n_sinks; i++) {
        struct sk_runner *r = i < d->n_sources ? &d->sources[i]->runner
                                               : &d->sinks[i - d->n_sources]->runner;
        int st = atomic_load(&r->state);
        if (st != SK_STATE_RUNNING && st != SK_STATE_IDLE) {
            char err[256];
            sk_runner_last_error(r, err, sizeof(err));
            snprintf(why, size, "%s is %s%s%s", r->name, sk_runner_state_name(st),
                     err[0] ? ": " : "", err);
            return false;
        }
    }
    return true;
}

static void http_ready(void *ctx, const struct sk_http_request *req, struct sk_http_response *resp)
{
    char why[512];
    if (ready(ctx, why, sizeof(why))) {
        resp->body = sk_strdup("{\"status\":\"ready\"}\n");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "not ready");
    cJSON_AddStringToObject(o, "reason", why);
    resp->status = 503;
    resp->body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
}

static void metric_line(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if ((size_t)n < *cap - *len) {
            *len += (size_t)n;
            return;
        }
        *cap = *cap * 2 + (size_t)n;
        *buf = sk_realloc(*buf, *cap);
    }
}

static void http_metrics(void *ctx, const struct sk_http_request *req,
                         struct sk_http_response *resp)
{
    struct daemon *d = ctx;
    size_t len = 0, cap = 4096;
    char *b = sk_malloc(cap);
    b[0] = '\0';
    static const struct {
        const char *name, *help;
        size_t off;
    } counters[] = {
        {"skolsync_records_total", "Records stored in Kafka (sources) or applied (sinks)",
         offsetof(struct sk_runner, records)},
        {"skolsync_records_failed_total", "Bad inputs (sources) or rejected records (sinks)",
         offsetof(struct sk_runner, failed)},
        {"skolsync_records_dead_lettered_total", "Records written to the dead-letter topic",
         offsetof(struct sk_runner, dead_lettered)},
        {"skolsync_retries_total", "Retries after retriable errors",
         offsetof(struct sk_runner, retries)},
    };
    for (size_t c = 0; c < sizeof(counters) / sizeof(counters[0]); c++) {
        metric_line(&b, &len, &cap, "# HELP %s %s\n# TYPE %s counter\n", counters[c].name,
                    counters[c].help, counters[c].name);
        for (size_t i = 0; i < d->n_sources + d->n_sinks; i++) {
            struct sk_runner *r = i < d->n_sources ? &d->sources[i]->runner
                                                   : &d->sinks[i - d->n_sources]->runner;
            const atomic_uint_fast64_t *v =
                (const atomic_uint_fast64_t *)((const char *)r + counters[c].off);
            metric_line(&b, &len, &cap, "%s{connector=\"%s\",kind=\"%s\",type=\"%s\"} %llu\n",
                        counters[c].name, r->name, r->kind == SK_RUNNER_SOURCE ? "source" : "sink",
                        r->type, (unsigned long long)atomic_load(v));
        }
    }
    metric_line(&b, &len, &cap,
                "# HELP skolsync_connector_state 1 for the state the connector is in\n"
                "# TYPE skolsync_connector_state gauge\n");
    for (size_t i = 0; i < d->n_sources + d->n_sinks; i++) {
        struct sk_runner *r = i < d->n_sources ? &d->sources[i]->runner
                                               : &d->sinks[i - d->n_sources]->runner;
        int st = atomic_load(&r->state);
        for (int s = SK_STATE_STARTING; s <= SK_STATE_STOPPED; s++)
            metric_line(&b, &len, &cap, "skolsync_connector_state{connector=\"%s\",state=\"%s\"} %d\n",
                        r->name, sk_runner_state_name(s), s == st);
    }
    metric_line(&b, &len, &cap,
                "# HELP skolsync_held_deletions Deletions held back by a source's delete guard\n"
                "# TYPE skolsync_held_deletions gauge\n");
    for (size_t i = 0; i < d->n_sources; i++)
        metric_line(&b, &len, &cap, "skolsync_held_deletions{connector=\"%s\"} %llu\n",
                    d->sources[i]->runner.name,
                    (unsigned long long)atomic_load(&d->sources[i]->held));
    resp->body = b;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

/* ---- HTTP: the connector API ----------------------------------------------- */

struct api_route {
    struct daemon *d;
    struct sk_runner *runner;
    struct sk_source_env *source; /* NULL for a sink */
};

static cJSON *runner_json(struct sk_runner *r, struct sk_source_env *src)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", r->name);
    cJSON_AddStringToObject(o, "kind", r->kind == SK_RUNNER_SOURCE ? "source" : "sink");
    cJSON_AddStringToObject(o, "type", r->type);
    cJSON_AddStringToObject(o, "state", sk_runner_state_name(atomic_load(&r->state)));
    char err[512];
    sk_runner_last_error(r, err, sizeof(err));
    cJSON_AddStringToObject(o, "last_error", err);
    cJSON_AddNumberToObject(o, "records", (double)atomic_load(&r->records));
    cJSON_AddNumberToObject(o, "failed", (double)atomic_load(&r->failed));
    cJSON_AddNumberToObject(o, "dead_lettered", (double)atomic_load(&r->dead_lettered));
    cJSON_AddNumberToObject(o, "retries", (double)atomic_load(&r->retries));
    if (src)
        cJSON_AddNumberToObject(o, "held_deletions", (double)atomic_load(&src->held));
    return o;
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

/* State-changing calls need `Authorization: Bearer <admin.token>`; no token configured = refused. */
static bool authorized(struct daemon *d, const struct sk_http_request *req,
                       struct sk_http_response *resp)
{
    const char *token = d->cfg->core.admin.token;
    if (!token || !*token) {
        error_response(resp, 403, "state-changing calls are disabled: set admin.token");
        return false;
    }
    const char *auth = req->authorization;
    size_t tl = strlen(token);
    bool ok = auth && strncmp(auth, "Bearer ", 7) == 0 && strlen(auth + 7) == tl;
    /* compare in constant time */
    unsigned char diff = 0;
    for (size_t i = 0; ok && i < tl; i++)
        diff |= (unsigned char)(auth[7 + i] ^ token[i]);
    if (!ok || diff) {
        error_response(resp, 401, "missing or wrong bearer token");
        return false;
    }
    return true;
}

static void api_list(void *ctx, const struct sk_http_request *req, struct sk_http_response *resp)
{
    struct daemon *d = ctx;
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < d->n_sources; i++)
        cJSON_AddItemToArray(arr, runner_json(&d->sources[i]->runner, d->sources[i]));
    for (size_t i = 0; i < d->n_sinks; i++)
        cJSON_AddItemToArray(arr, runner_json(&d->sinks[i]->runner, NULL));
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "connectors", arr);
    json_response(resp, 200, o);
}

static void api_one(void *ctx, const struct sk_http_request *req, struct sk_http_response *resp)
{
    struct api_route *a = ctx;
    json_response(resp, 200, runner_json(a->runner, a->source));
}

static void api_release(void *ctx, const struct sk_http_request *req,
                        struct sk_http_response *resp)
{
    struct api_route *a = ctx;
    if (!authorized(a->d, req, resp))
        return;
    uint64_t held = atomic_load(&a->source->held);
    atomic_store(&a->source->release, true);
    sk_runner_wake(a->runner);
    sk_warn(a->runner->name, "operator released %llu held deletion(s)", (unsigned long long)held);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "connector", a->runner->name);
    cJSON_AddNumberToObject(o, "released", (double)held);
    json_response(resp, 200, o);
}

static int api_routes(struct daemon *d, struct sk_error *err)
{
    if (!d->http)
        return 0;
    if (sk_http_route(d->http, "GET", "/api/v1/connectors", api_list, d, err))
        return -1;
    d->api = sk_calloc(d->n_sources + d->n_sinks + 1, sizeof(*d->api));
    for (size_t i = 0; i < d->n_sources + d->n_sinks; i++) {
        struct api_route *a = &d->api[i];
        a->d = d;
        a->source = i < d->n_sources ? d->sources[i] : NULL;
        a->runner = a->source ? &a->source->runner : &d->sinks[i - d->n_sources]->runner;
        char *path = sk_asprintf("/api/v1/connectors/%s", a->runner->name);
        int rc = sk_http_route(d->http, "GET", path, api_one, a, err);
        free(path);
        if (!rc && a->source) {
            path = sk_asprintf("/api/v1/connectors/%s/release", a->runner->name);
            rc = sk_http_route(d->http, "POST", path, api_release, a, err);
            free(path);
        }
        if (rc)
            return -1;
    }
    return 0;
}

static int start_http(struct daemon *d, struct sk_error *err)
{
    const struct sk_admin_conf *a = &d->cfg->core.admin;
    if (!a->listen || strcmp(a->listen, "off") == 0)
        return 0;
    d->http = sk_http_start(a->listen, a->max_body, err);
    if (!d->http)
        return -1;
    if (sk_http_route(d->http, "GET", "/health", http_health, d, err) ||
        sk_http_route(d->http, "GET", "/ready", http_ready, d, err) ||
        sk_http_route(d->http, "GET", "/metrics", http_metrics, d, err))
        return -1;
    char host[128];
    snprintf(host, sizeof(host), "%s", a->listen);
    char *colon = strrchr(host, ':');
    if (colon)
        *colon = '\0';
    sk_info("main", "HTTP server on http://%s:%d (health, ready, metrics)", host,
            sk_http_port(d->http));
    return 0;
}

static int block_signals(struct daemon *d)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL))
        return -1;
    /* a closed pipe must be an error return, not a death */
    signal(SIGPIPE, SIG_IGN);
    d->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    return d->sigfd < 0 ? -1 : 0;
}

static double rate(uint64_t n, int64_t ms)
{
    return ms > 0 ? (double)n * 1000.0 / (double)ms : 0.0;
}

static void progress_line(struct daemon *d)
{
    char line[1024];
    size_t len = 0;
    int64_t ms = sk_mono_ms() - d->started_ms;
    for (size_t i = 0; i < d->n_sources && len < sizeof(line); i++) {
        struct sk_runner *r = &d->sources[i]->runner;
        uint64_t n = atomic_load(&r->records);
        len += (size_t)snprintf(line + len, sizeof(line) - len, "%s%s %s %llu stored (%.0f/s)",
                                len ? ", " : "", r->name,
                                sk_runner_state_name(atomic_load(&r->state)),
                                (unsigned long long)n, rate(n, ms));
        int64_t total = atomic_load(&r->progress_total);
        if (total > 0 && len < sizeof(line))
            len += (size_t)snprintf(line + len, sizeof(line) - len, " %.0f%%",
                                    100.0 * (double)atomic_load(&r->progress_done) / (double)total);
    }
    for (size_t i = 0; i < d->n_sinks && len < sizeof(line); i++) {
        struct sk_runner *r = &d->sinks[i]->runner;
        uint64_t n = atomic_load(&r->records);
        len += (size_t)snprintf(line + len, sizeof(line) - len, "%s%s %s %llu applied (%.0f/s)",
                                len ? ", " : "", r->name,
                                sk_runner_state_name(atomic_load(&r->state)),
                                (unsigned long long)n, rate(n, ms));
    }
    sk_info("progress", "%s", line);
    char status[256];
    snprintf(status, sizeof(status), "STATUS=%.240s", line);
    sd_notify(0, status);
}

static void summary(struct daemon *d, FILE *out)
{
    if (!out)
        return;
    double secs = (double)(sk_mono_ms() - d->started_ms) / 1000.0;
    fprintf(out, "skolsync: finished in %.1f s\n", secs);
    for (size_t i = 0; i < d->n_sources; i++) {
        struct sk_runner *r = &d->sources[i]->runner;
        fprintf(out, "  source %s (%s): %llu records stored, %llu dead-lettered\n", r->name,
                r->type, (unsigned long long)atomic_load(&r->records),
                (unsigned long long)atomic_load(&r->dead_lettered));
        for (int e = 0; sk_entities[e]; e++) {
            uint64_t n = atomic_load(&r->per_entity[e]);
            if (n)
                fprintf(out, "    %-22s %8llu\n", sk_entities[e]->collection,
                        (unsigned long long)n);
        }
    }
    for (size_t i = 0; i < d->n_sinks; i++) {
        struct sk_sink_env *env = d->sinks[i];
        struct sk_runner *r = &env->runner;
        const char *target = env->sink.ops->target && env->sink.priv
                                 ? env->sink.ops->target(&env->sink)
                                 : NULL;
        fprintf(out, "  sink %s (%s): %llu records applied, %llu dead-lettered%s%s\n", r->name,
                r->type, (unsigned long long)atomic_load(&r->records),
                (unsigned long long)atomic_load(&r->dead_lettered), target ? " -> " : "",
                target ? target : "");
        for (int e = 0; sk_entities[e]; e++) {
            uint64_t n = atomic_load(&r->per_entity[e]);
            if (n)
                fprintf(out, "    %-22s %8llu\n", sk_entities[e]->collection,
                        (unsigned long long)n);
        }
    }
    fflush(out);
}

static bool any_failed(struct daemon *d)
{
    for (size_t i = 0; i < d->n_sources; i++)
        if (atomic_load(&d->sources[i]->runner.state) == SK_STATE_FAILED)
            return true;
    for (size_t i = 0; i < d->n_sinks; i++)
        if (atomic_load(&d->sinks[i]->runner.state) == SK_STATE_FAILED)
            return true;
    return false;
}

/* --once: sources have each finished a cycle, then sinks have drained to the end. */
static bool once_done(struct daemon *d)
{
    for (size_t i = 0; i < d->n_sources; i++)
        if (atomic_load(&d->sources[i]->runner.cycles) == 0)
            return false;
    bool drained = true;
    for (size_t i = 0; i < d->n_sinks; i++) {
        struct sk_runner *r = &d->sinks[i]->runner;
        if (!atomic_load(&r->drain_requested)) {
            atomic_store(&r->drain_requested, true);
            sk_runner_wake(r);
        }
        drained &= atomic_load(&r->drained);
    }
    return drained;
}

/* Stops sources first (nothing new enters Kafka), then sinks (they apply
 * what they hold and commit). Returns false if the timeout passed. */
static bool stop_all(struct daemon *d, int64_t timeout_ms)
{
    int64_t deadline = sk_mono_ms() + timeout_ms;
    for (size_t i = 0; i < d->n_sources; i++)
        sk_driver_request_stop(&d->sources[i]->runner);
    bool ok = true;
    for (size_t i = 0; i < d->n_sources; i++)
        ok &= sk_driver_join_until(&d->sources[i]->runner, deadline);
    for (size_t i = 0; i < d->n_sinks; i++)
        sk_driver_request_stop(&d->sinks[i]->runner);
    for (size_t i = 0; i < d->n_sinks; i++)
        ok &= sk_driver_join_until(&d->sinks[i]->runner, deadline);
    return ok;
}

static int watchdog_interval_ms(void)
{
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
        return (int)(usec / 2000);
    return 0;
}

int sk_daemon_run(struct sk_daemon_config *cfg, const struct sk_run_options *opt)
{
    struct daemon d = {.cfg = cfg, .sigfd = -1, .started_ms = sk_mono_ms()};
    int rc = SK_EXIT_OK;
    if (block_signals(&d)) {
        sk_error_log("main", "cannot set up signal handling: %s", strerror(errno));
        return SK_EXIT_RUNTIME;
    }
    sd_notify(0, "STATUS=starting");

    const char *collections[SK_ENTITY_COUNT];
    size_t n = 0;
    for (; sk_entities[n]; n++)
        collections[n] = sk_entities[n]->collection;
    struct sk_error err = {0};
    if (sk_kafka_start(&cfg->core.kafka, collections, n, &d.kafka, &err)) {
        sk_error_log("kafka", "%s", err.msg);
        close(d.sigfd);
        return SK_EXIT_RUNTIME;
    }
    if (start_http(&d, &err)) {
        sk_error_log("main", "%s", err.msg);
        rc = SK_EXIT_RUNTIME;
        goto out;
    }
    if (open_connectors(&d)) {
        rc = SK_EXIT_RUNTIME;
        goto out;
    }
    if (api_routes(&d, &err)) {
        sk_error_log("main", "%s", err.msg);
        rc = SK_EXIT_RUNTIME;
        goto out;
    }
    for (size_t i = 0; i < d.n_sources; i++)
        if (sk_source_driver_start(d.sources[i]))
            rc = SK_EXIT_RUNTIME;
    for (size_t i = 0; i < d.n_sinks; i++)
        if (sk_sink_driver_start(d.sinks[i]))
            rc = SK_EXIT_RUNTIME;
    if (rc)
        goto stop;
    sk_info("main", "running %zu source(s) and %zu sink(s)%s", d.n_sources, d.n_sinks,
            opt->once ? " once" : "");
    sd_notify(0, "READY=1\nSTATUS=running");

    int64_t progress_ms = opt->once || isatty(STDERR_FILENO) ? 2000 : cfg->core.progress_interval_ms;
    int64_t next_progress = sk_mono_ms() + progress_ms;
    int wd = watchdog_interval_ms();
    int64_t next_wd = sk_mono_ms();
    for (;;) {
        struct pollfd pfd = {.fd = d.sigfd, .events = POLLIN};
        poll(&pfd, 1, 200);
        struct signalfd_siginfo si;
        bool stop = false;
        while (read(d.sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
            if (si.ssi_signo == SIGHUP) {
                /* Reload comes with the operations work; until then say so. */
                sk_warn("main", "SIGHUP: reload is not supported yet; restart to apply changes");
            } else {
                sk_info("main", "%s: stopping", strsignal((int)si.ssi_signo));
                stop = true;
            }
        }
        if (stop)
            break;
        int64_t now = sk_mono_ms();
        if (wd && now >= next_wd) {
            sd_notify(0, "WATCHDOG=1");
            next_wd = now + wd;
        }
        if (now >= next_progress) {
            progress_line(&d);
            next_progress = now + progress_ms;
        }
        if (any_failed(&d) && opt->once) {
            sk_error_log("main", "a connector failed; stopping");
            rc = SK_EXIT_RUNTIME;
            break;
        }
        if (opt->once && once_done(&d)) {
            sk_info("main", "every source completed a cycle and every sink is drained");
            break;
        }
    }
stop:
    sd_notify(0, "STOPPING=1");
    if (!stop_all(&d, cfg->core.shutdown_timeout_ms)) {
        sk_error_log("main", "connectors did not stop within shutdown_timeout (%lld ms)",
                     (long long)cfg->core.shutdown_timeout_ms);
        /* Threads still hold their clients: exit without tearing them down.
         * Nothing uncommitted counts as done, so a restart resumes safely. */
        fflush(NULL);
        _exit(SK_EXIT_RUNTIME);
    }
    progress_line(&d);
    if (any_failed(&d) && rc == SK_EXIT_OK && opt->once)
        rc = SK_EXIT_RUNTIME;
    if (rc == SK_EXIT_OK || opt->once)
        summary(&d, opt->summary);
out:
    /* No handler may run on a connector being closed. */
    sk_http_stop(d.http);
    d.http = NULL;
    free(d.api);
    close_connectors(&d);
    sk_kafka_destroy(d.kafka);
    close(d.sigfd);
    return rc;
}
