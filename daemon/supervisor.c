/*
 * supervisor.c: runs a validated configuration: starts Kafka (or the
 * embedded broker) and the HTTP server, opens every connector and runs it (a
 * sink on a thread of its own, a source on the sources' worker pool), then
 * watches over them from the main thread:
 * signals, readiness and watchdog (sd_notify), progress, restarts of failed
 * connectors with backoff, operator restarts, reload (SIGHUP or the API),
 * which sources this node owns (ownership.h, source_owner.c), and with
 * --once, completion.
 *
 * Signals are blocked before any thread exists (librdkafka's threads inherit
 * the mask) and read from a signalfd here: no work in signal handlers
 * (docs/architecture.md §8.9).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <systemd/sd-daemon.h>

#include "buf.h"
#include "daemon_internal.h"
#include "log.h"
#include "model.h"
#include "ownership.h"
#include "shared_producer.h"
#include "sink_hub.h"
#include "util.h"

/* A connector failing again and again is restarted after 1 s, 2 s, ... 5 min. */
#define RESTART_BASE_MS 1000
#define RESTART_CAP_MS 300000
/* Running this long counts as healthy again: the next failure starts from 1 s. */
#define HEALTHY_AFTER_MS 60000

/* ---- one connector's life ----------------------------------------------------- */

/* A fingerprint of a connector's entry: what a reload compares. May hold
 * secrets: never printed. */
static void fingerprint_into(const struct sk_cnode *n, char **buf, size_t *len, size_t *cap)
{
    const char *parts[3] = {n->key ? n->key : "", "=", n->value ? n->value : ""};
    for (size_t p = 0; p < 3; p++) {
        size_t l = strlen(parts[p]);
        if (*len + l + 4 > *cap) {
            *cap = (*cap + l + 4) * 2;
            *buf = sk_realloc(*buf, *cap);
        }
        memcpy(*buf + *len, parts[p], l);
        *len += l;
    }
    (*buf)[(*len)++] = n->kind == SK_CNODE_MAP ? '{' : n->kind == SK_CNODE_SEQ ? '[' : ';';
    for (size_t i = 0; i < n->n_kids; i++)
        fingerprint_into(n->kids[i], buf, len, cap);
    (*buf)[(*len)++] = n->kind == SK_CNODE_SCALAR ? ';' : '}';
    (*buf)[*len] = '\0';
}

static char *fingerprint(const struct sk_daemon_config *cfg, const char *section, const char *name)
{
    const struct sk_cnode *entry = sk_cnode_get(sk_cnode_get(cfg->tree, section), name);
    if (!entry)
        return sk_strdup("");
    size_t len = 0, cap = 256;
    char *buf = sk_malloc(cap);
    fingerprint_into(entry, &buf, &len, &cap);
    return buf;
}

static struct sk_runner *source_new(struct sk_daemon *d, const struct sk_daemon_config *cfg,
                                    const struct sk_source_def *def)
{
    struct sk_source_env *env = sk_calloc(1, sizeof(*env));
    sk_runner_init(&env->runner, SK_RUNNER_SOURCE, def->name, def->ops->type);
    env->runner.def = def;
    env->runner.fingerprint = fingerprint(cfg, "sources", def->name);
    env->settings = def->settings;
    env->kafka = d->kafka;
    env->http = d->http;
    env->source.ops = def->ops;
    env->source.name = env->runner.name;
    env->source.conf = def->conf;
    env->source.env = env;
    env->runner.notify_fd = d->wake_fd;
    return &env->runner;
}

static struct sk_runner *sink_new(struct sk_daemon *d, const struct sk_daemon_config *cfg,
                                  const struct sk_sink_def *def)
{
    struct sk_sink_env *env = sk_calloc(1, sizeof(*env));
    sk_runner_init(&env->runner, SK_RUNNER_SINK, def->name, def->ops->type);
    env->runner.def = def;
    env->runner.fingerprint = fingerprint(cfg, "sinks", def->name);
    env->settings = def->settings;
    env->kafka = d->kafka;
    env->sink.ops = def->ops;
    env->sink.name = env->runner.name;
    env->sink.conf = def->conf;
    env->sink.incarnation = sk_kafka_incarnation(d->kafka);
    env->runner.notify_fd = d->wake_fd;
    env->once = d->once;
    env->prefetch_kbytes = sk_sink_prefetch_kbytes(cfg->n_sinks);
    env->sink.entities = def->entities;
    env->sink.n_entities = def->n_entities;
    sk_sink_privacy_resolve(&def->settings, def->ops, &env->privacy);
    sk_info(def->name, "privacy: protected identities %s, %zu field(s) dropped",
            sk_protected_mode_name(env->privacy.protected_mode), env->privacy.drop_fields.n);
    env->group = sk_name_sink_group(sk_kafka_names(d->kafka), def->name, def->ops->target_kind);
    if (def->ops->target_kind == SK_TARGET_NODE_LOCAL)
        env->hubs = d->hubs;
    env->topics = sk_calloc(def->n_entities + 1, sizeof(char *));
    for (size_t j = 0; j < def->n_entities; j++)
        env->topics[j] = sk_kafka_topic_for(d->kafka, def->entities[j]->collection);
    return &env->runner;
}

/* Whether /metrics may ask the sink for its own figures (http_metrics.c). */
static void sink_set_open(struct sk_sink_env *snk, bool open)
{
    pthread_mutex_lock(&snk->runner.mu);
    snk->open = open;
    pthread_mutex_unlock(&snk->runner.mu);
}

/* Opens the connector (its own connection to its system). */
int sk_conn_open(struct sk_runner *r)
{
    struct sk_error err = {0};
    struct sk_source_env *src = sk_as_source(r);
    struct sk_sink_env *snk = sk_as_sink(r);
    if (src)
        src->source.writes = 0; /* what this open says, not a union with the last one's */
    int rc =
        src ? src->source.ops->open(&src->source, &err) : snk->sink.ops->open(&snk->sink, &err);
    if (rc && src && src->http && sk_http_unroute_owner(src->http, &src->source))
        sk_warn(r->name, "a failed open left HTTP routes behind; removed");
    if (rc) {
        if (src)
            src->source.priv = NULL;
        else
            snk->sink.priv = NULL;
        sk_error_log(r->name, "cannot open: %s", err.msg);
        sk_runner_set_error(r, err.msg);
        sk_runner_set_state(r, SK_STATE_FAILED);
    }
    if (rc == 0 && snk)
        sink_set_open(snk, true);
    return rc;
}

static void conn_close(struct sk_runner *r)
{
    struct sk_source_env *src = sk_as_source(r);
    struct sk_sink_env *snk = sk_as_sink(r);
    /* No handler of the source's routes (webhooks) may run during or after
     * close: remove them first (this waits for running handlers). */
    if (src && src->http)
        sk_http_unroute_owner(src->http, &src->source);
    if (src && src->source.priv)
        src->source.ops->close(&src->source);
    if (snk)
        sink_set_open(snk, false); /* waits for a /metrics call that is asking it */
    if (snk && snk->sink.priv)
        snk->sink.ops->close(&snk->sink);
    if (src)
        src->source.priv = NULL;
    if (snk)
        snk->sink.priv = NULL;
}

int sk_conn_start(struct sk_runner *r)
{
    atomic_store(&r->stop, false);
    sk_runner_set_state(r, SK_STATE_STARTING);
    return r->kind == SK_RUNNER_SOURCE ? sk_source_driver_start(sk_as_source(r))
                                       : sk_sink_driver_start(sk_as_sink(r));
}

/* Stops the thread (by deadline) and closes the connector. False if the thread would not stop. */
bool sk_conn_halt(struct sk_runner *r, int64_t deadline)
{
    sk_driver_request_stop(r);
    if (!sk_driver_join_until(r, deadline))
        return false;
    conn_close(r);
    return true;
}

static void conn_free(struct sk_runner *r)
{
    struct sk_sink_env *snk = sk_as_sink(r);
    if (snk) {
        for (size_t j = 0; j < snk->sink.n_entities; j++)
            free(snk->topics[j]);
        free(snk->topics);
        free(snk->group);
        sk_sink_privacy_free(&snk->privacy);
    } else {
        sk_source_env_clear(sk_as_source(r));
    }
    sk_runner_destroy(r);
    free(r); /* the runner is the first member of its env */
}

static void conns_add(struct sk_daemon *d, struct sk_runner *r)
{
    pthread_rwlock_wrlock(&d->lock);
    d->conns = sk_realloc(d->conns, (d->n_conns + 1) * sizeof(*d->conns));
    d->conns[d->n_conns++] = r;
    pthread_rwlock_unlock(&d->lock);
}

static void conns_remove(struct sk_daemon *d, size_t i)
{
    pthread_rwlock_wrlock(&d->lock);
    memmove(&d->conns[i], &d->conns[i + 1], (d->n_conns - i - 1) * sizeof(*d->conns));
    d->n_conns--;
    pthread_rwlock_unlock(&d->lock);
}

/* Opens every connector of cfg; at start a connector that cannot open stops
 * the daemon. A source (or a whole-target sink) another node may own waits
 * in standby. */
static int open_all(struct sk_daemon *d)
{
    for (size_t i = 0; i < d->cfg->n_sources; i++) {
        struct sk_runner *r = source_new(d, d->cfg, &d->cfg->sources[i]);
        conns_add(d, r);
        if (!sk_may_run(d, r))
            sk_runner_set_state(r, SK_STATE_STANDBY);
        else if (sk_conn_open(r))
            return -1;
    }
    for (size_t i = 0; i < d->cfg->n_sinks; i++) {
        struct sk_runner *r = sink_new(d, d->cfg, &d->cfg->sinks[i]);
        conns_add(d, r);
        if (!sk_may_run(d, r))
            sk_runner_set_state(r, SK_STATE_STANDBY);
        else if (sk_conn_open(r))
            return -1;
    }
    return 0;
}

/* Stops sources first (nothing new enters Kafka), then sinks (they apply
 * what they hold and commit). Returns false if the deadline passed. */
static bool halt_all(struct sk_daemon *d, int64_t timeout_ms)
{
    int64_t deadline = sk_mono_ms() + timeout_ms;
    bool ok = true;
    for (int kind = SK_RUNNER_SOURCE; kind <= SK_RUNNER_SINK; kind++) {
        for (size_t i = 0; i < d->n_conns; i++)
            if (d->conns[i]->kind == (enum sk_runner_kind)kind)
                sk_driver_request_stop(d->conns[i]);
        for (size_t i = 0; i < d->n_conns; i++)
            if (d->conns[i]->kind == (enum sk_runner_kind)kind)
                ok &= sk_driver_join_until(d->conns[i], deadline);
    }
    return ok;
}

/* ---- supervision ------------------------------------------------------------------ */

/* Restarts a connector in place: stop, close, open, start. */
static void restart(struct sk_daemon *d, struct sk_runner *r, const char *why)
{
    int64_t deadline = sk_mono_ms() + d->cfg->core.shutdown_timeout_ms;
    if (!sk_conn_halt(r, deadline)) {
        sk_error_log(r->name, "would not stop for a restart; trying again later");
        return;
    }
    atomic_fetch_add(&r->restarts, 1);
    sk_info(r->name, "restarting (%s)", why);
    if (sk_conn_open(r) == 0 && sk_conn_start(r) == 0)
        return;
    r->restart_at_ms = 0; /* failed to open: scheduled again below */
}

/* Rule 4: a connector that keeps failing is restarted with backoff; the others run on. */
static void supervise(struct sk_daemon *d)
{
    int64_t now = sk_mono_ms();
    sk_apply_ownership(d);
    for (size_t i = 0; i < d->n_conns; i++) {
        struct sk_runner *r = d->conns[i];
        if (atomic_load(&r->state) == SK_STATE_STANDBY) {
            atomic_store(&r->restart_requested, false); /* its owner restarts it */
            continue;
        }
        if (atomic_exchange(&r->restart_requested, false)) {
            r->restart_attempt = 0;
            restart(d, r, "operator request");
            continue;
        }
        int st = atomic_load(&r->state);
        if (st == SK_STATE_RUNNING || st == SK_STATE_IDLE) {
            if (!r->healthy_since_ms)
                r->healthy_since_ms = now;
            else if (now - r->healthy_since_ms > HEALTHY_AFTER_MS)
                r->restart_attempt = 0;
            continue;
        }
        r->healthy_since_ms = 0;
        if (st != SK_STATE_FAILED || d->once)
            continue;
        if (r->restart_at_ms == 0) {
            int64_t wait = sk_backoff_ms(r->restart_attempt++, RESTART_BASE_MS, RESTART_CAP_MS);
            r->restart_at_ms = now + wait;
            char err[256];
            sk_runner_last_error(r, err, sizeof(err));
            sk_warn(r->name, "failed (%s); restarting in %lld ms", err, (long long)wait);
        } else if (now >= r->restart_at_ms) {
            r->restart_at_ms = 0;
            restart(d, r, "after a failure");
        }
    }
}

static bool any_failed(struct sk_daemon *d)
{
    for (size_t i = 0; i < d->n_conns; i++)
        if (atomic_load(&d->conns[i]->state) == SK_STATE_FAILED)
            return true;
    return false;
}

/* --once: sources have each finished a cycle, then sinks have drained to the end. */
static bool once_done(struct sk_daemon *d)
{
    for (size_t i = 0; i < d->n_conns; i++)
        if (d->conns[i]->kind == SK_RUNNER_SOURCE && atomic_load(&d->conns[i]->cycles) == 0)
            return false;
    bool drained = true;
    for (size_t i = 0; i < d->n_conns; i++) {
        struct sk_runner *r = d->conns[i];
        if (r->kind != SK_RUNNER_SINK)
            continue;
        if (!atomic_load(&r->drain_requested)) {
            atomic_store(&r->drain_requested, true);
            sk_runner_wake(r);
        }
        drained &= atomic_load(&r->drained);
    }
    return drained;
}

/* ---- reload ---------------------------------------------------------------------- */

static struct sk_runner *find_conn(struct sk_daemon *d, enum sk_runner_kind kind, const char *name,
                                   size_t *index)
{
    for (size_t i = 0; i < d->n_conns; i++) {
        if (d->conns[i]->kind == kind && strcmp(d->conns[i]->name, name) == 0) {
            *index = i;
            return d->conns[i];
        }
    }
    return NULL;
}

static bool same_section(const struct sk_daemon_config *a, const struct sk_daemon_config *b,
                         const char *key)
{
    const struct sk_cnode *x = sk_cnode_get(a->tree, key), *y = sk_cnode_get(b->tree, key);
    if (!x || !y)
        return !x && !y;
    size_t l1 = 0, c1 = 64, l2 = 0, c2 = 64;
    char *f1 = sk_malloc(c1), *f2 = sk_malloc(c2);
    fingerprint_into(x, &f1, &l1, &c1);
    fingerprint_into(y, &f2, &l2, &c2);
    bool same = strcmp(f1, f2) == 0;
    free(f1);
    free(f2);
    return same;
}

/*
 * Applies one connector definition of the new configuration: an unchanged
 * connector keeps running untouched (its consumer, its cursor); a changed one
 * is stopped and started anew; a new one is opened and started.
 */
static void reload_one(struct sk_daemon *d, struct sk_daemon_config *cfg, enum sk_runner_kind kind,
                       const void *def, const char *name, int *kept, int *changed, int *added)
{
    size_t idx;
    struct sk_runner *old = find_conn(d, kind, name, &idx);
    char *fp = fingerprint(cfg, kind == SK_RUNNER_SOURCE ? "sources" : "sinks", name);
    if (old && strcmp(old->fingerprint, fp) == 0) {
        (*kept)++;
        free(fp);
        return;
    }
    free(fp);
    if (old) {
        if (!sk_conn_halt(old, sk_mono_ms() + cfg->core.shutdown_timeout_ms)) {
            sk_error_log(name, "would not stop: keeping the running connector");
            return;
        }
        conns_remove(d, idx);
        (*changed)++;
    } else {
        (*added)++;
    }
    struct sk_runner *r =
        kind == SK_RUNNER_SOURCE ? source_new(d, cfg, def) : sink_new(d, cfg, def);
    if (old) {
        sk_runner_carry_counters(r, old); /* per daemon run, not per start */
        conn_free(old);
    }
    conns_add(d, r);
    if (!sk_may_run(d, r))
        sk_runner_set_state(r, SK_STATE_STANDBY); /* another node owns it */
    else if (sk_conn_open(r) == 0)
        sk_conn_start(r);
    sk_info(name, "%s by the reload", old ? "restarted" : "started");
}

static void reload_finish(struct sk_daemon *d, cJSON *result)
{
    /* Kept whole: an answer cut at a fixed size was no JSON any more. */
    char *text = cJSON_PrintUnformatted(result);
    cJSON_Delete(result);
    pthread_mutex_lock(&d->reload_mu);
    char *old = d->reload_result;
    d->reload_result = text ? text : sk_strdup("{}");
    d->reload_requested = false;
    d->reload_generation++;
    pthread_cond_broadcast(&d->reload_cv);
    pthread_mutex_unlock(&d->reload_mu);
    free(old);
}

/*
 * sd_notify of fields (each ending in a newline, or "") and STATUS=text, at
 * most max bytes of it. sd_notify's fields are lines: a newline in text
 * (a YAML key quoted in a configuration error) would add a field of its
 * own (READY=1, MAINPID=), so every control character is escaped.
 */
static void notify_status(const char *fields, const char *text, size_t max)
{
    struct sk_buf shown = {0};
    sk_buf_put_escaped(&shown, text);
    char *status = sk_asprintf("%sSTATUS=%.*s", fields, (int)(shown.len < max ? shown.len : max),
                               shown.p ? shown.p : "");
    sd_notify(0, status);
    free(status);
    sk_buf_free(&shown);
}

/*
 * SIGHUP or POST /api/v1/reload: the new file is parsed and validated
 * completely first; if it is invalid the running configuration stays, and
 * the reason goes to the log, the API answer, STATUS= and a metric.
 */
static void reload(struct sk_daemon *d)
{
    char status[320];
    snprintf(status, sizeof(status), "RELOADING=1\nMONOTONIC_USEC=%lld\nSTATUS=reloading",
             (long long)sk_mono_ms() * 1000);
    sd_notify(0, status);
    cJSON *result = cJSON_CreateObject();
    struct sk_config_errors errs = {0};
    struct sk_daemon_config *cfg = sk_daemon_config_load(d->config_path, &errs);
    if (!cfg) {
        atomic_fetch_add(&d->reload_failures, 1);
        cJSON *arr = cJSON_AddArrayToObject(result, "errors");
        for (size_t i = 0; i < errs.n; i++) {
            sk_error_log("reload", "%s", errs.v[i].text);
            cJSON_AddItemToArray(arr, cJSON_CreateString(errs.v[i].text));
        }
        if (errs.more) /* past SK_CONFIG_MAX_ERRORS: counted, not kept */
            cJSON_AddNumberToObject(result, "more", (double)errs.more);
        sk_error_log("reload", "%zu error(s): keeping the running configuration",
                     errs.n + errs.more);
        char *why = sk_asprintf("reload failed: %s", errs.n ? errs.v[0].text : "?");
        notify_status("READY=1\n", why, 215);
        free(why);
        cJSON_AddBoolToObject(result, "reloaded", false);
        sk_config_errors_free(&errs);
        reload_finish(d, result);
        return;
    }
    sk_config_errors_free(&errs);
    for (const char *const *key = (const char *const[]){"kafka", "admin", NULL}; *key; key++)
        if (!same_section(d->cfg, cfg, *key))
            sk_warn("reload", "changes to \"%s\" take effect at the next restart", *key);
    enum sk_log_level level = SK_LOG_INFO;
    sk_log_level_parse(cfg->core.log.level, &level);
    sk_log_setup(level, strcmp(cfg->core.log.format, "json") == 0);

    int kept = 0, changed = 0, added = 0, removed = 0;
    /* Removed connectors first: a renamed one must free its name. */
    for (size_t i = d->n_conns; i-- > 0;) {
        struct sk_runner *r = d->conns[i];
        bool present = false;
        if (r->kind == SK_RUNNER_SOURCE)
            for (size_t j = 0; j < cfg->n_sources && !present; j++)
                present = strcmp(cfg->sources[j].name, r->name) == 0;
        else
            for (size_t j = 0; j < cfg->n_sinks && !present; j++)
                present = strcmp(cfg->sinks[j].name, r->name) == 0;
        if (present)
            continue;
        if (!sk_conn_halt(r, sk_mono_ms() + cfg->core.shutdown_timeout_ms)) {
            sk_error_log(r->name, "would not stop: still running");
            continue;
        }
        sk_info(r->name, "stopped: gone from the configuration");
        conns_remove(d, i);
        conn_free(r);
        removed++;
    }
    for (size_t i = 0; i < cfg->n_sources; i++)
        reload_one(d, cfg, SK_RUNNER_SOURCE, &cfg->sources[i], cfg->sources[i].name, &kept,
                   &changed, &added);
    for (size_t i = 0; i < cfg->n_sinks; i++)
        reload_one(d, cfg, SK_RUNNER_SINK, &cfg->sinks[i], cfg->sinks[i].name, &kept, &changed,
                   &added);
    /* Unchanged connectors still point into the old configuration: keep it. */
    d->old = sk_realloc(d->old, (d->n_old + 1) * sizeof(*d->old));
    d->old[d->n_old++] = d->cfg;
    d->cfg = cfg;
    atomic_fetch_add(&d->reloads, 1);
    sk_info("reload", "applied: %d unchanged, %d restarted, %d added, %d removed", kept, changed,
            added, removed);
    snprintf(status, sizeof(status),
             "READY=1\nSTATUS=reloaded: %d unchanged, %d restarted, %d added, %d removed", kept,
             changed, added, removed);
    sd_notify(0, status);
    cJSON_AddBoolToObject(result, "reloaded", true);
    cJSON_AddNumberToObject(result, "unchanged", kept);
    cJSON_AddNumberToObject(result, "restarted", changed);
    cJSON_AddNumberToObject(result, "added", added);
    cJSON_AddNumberToObject(result, "removed", removed);
    reload_finish(d, result);
}

/* ---- signals, progress, summary --------------------------------------------------- */

static int block_signals(struct sk_daemon *d)
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
    d->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return d->sigfd < 0 || d->wake_fd < 0 ? -1 : 0;
}

static double rate(uint64_t n, int64_t ms)
{
    return ms > 0 ? (double)n * 1000.0 / (double)ms : 0.0;
}

/* One line per interval: what every connector did; also systemd's STATUS=. */
static void progress_line(struct sk_daemon *d)
{
    char line[1024];
    size_t len = 0;
    int64_t now = sk_mono_ms(), ms = now - d->started_ms;
    for (size_t i = 0; i < d->n_conns && len < sizeof(line); i++) {
        struct sk_runner *r = d->conns[i];
        uint64_t n = atomic_load(&r->records);
        /* the rate since the last line, not since start: an idle daemon shows 0/s */
        int64_t since = r->rate_ms ? r->rate_ms : d->started_ms;
        double per_s = rate(n - (n >= r->rate_records ? r->rate_records : n), now - since);
        r->rate_records = n;
        r->rate_ms = now;
        len += (size_t)snprintf(line + len, sizeof(line) - len, "%s%s %s %llu %s (%.0f/s)",
                                len ? ", " : "", r->name, sk_daemon_state_name(r),
                                (unsigned long long)n,
                                r->kind == SK_RUNNER_SOURCE ? "stored" : "applied", per_s);
        int64_t total = atomic_load(&r->progress_total), done = atomic_load(&r->progress_done);
        if (total > 0 && done > 0 && len < sizeof(line)) {
            /* from the fraction done so far: the units of done/total are the source's */
            double eta = (double)ms / 1000.0 * (double)(total - done) / (double)done;
            len += (size_t)snprintf(line + len, sizeof(line) - len, " %.0f%% eta %.0fs",
                                    100.0 * (double)done / (double)total, eta > 0 ? eta : 0);
        }
    }
    sk_log_status_line(line); /* a live line on a terminal, a log line elsewhere */
    notify_status("", line, 240);
}

static void per_entity(FILE *out, struct sk_runner *r)
{
    for (int e = 0; sk_entities[e]; e++) {
        uint64_t n = atomic_load(&r->per_entity[e]);
        if (n)
            fprintf(out, "    %-22s %8llu\n", sk_entities[e]->collection, (unsigned long long)n);
    }
}

static void summary(struct sk_daemon *d, FILE *out)
{
    if (!out)
        return;
    double secs = (double)(sk_mono_ms() - d->started_ms) / 1000.0;
    fprintf(out, "skolsync: finished in %.1f s\n", secs);
    for (size_t i = 0; i < d->n_conns; i++) {
        struct sk_runner *r = d->conns[i];
        unsigned long long records = atomic_load(&r->records);
        unsigned long long dead = atomic_load(&r->dead_lettered);
        struct sk_sink_env *snk = sk_as_sink(r);
        const char *target = snk && snk->sink.ops->target && snk->sink.priv
                                 ? snk->sink.ops->target(&snk->sink)
                                 : NULL;
        fprintf(out, "  %s %s (%s): %llu records %s, %llu dead-lettered%s%s\n",
                snk ? "sink" : "source", r->name, r->type, records, snk ? "applied" : "stored",
                dead, target ? " -> " : "", target ? target : "");
        unsigned long long kr = atomic_load(&r->kafka_retries), ke = atomic_load(&r->kafka_errors),
                           kb = atomic_load(&r->kafka_rebalances), rt = atomic_load(&r->retries),
                           rn = atomic_load(&r->kafka_renewals);
        /* what the connector weathered: faults it met, not only that it got through
         * (request retries only where librdkafka's statistics were on: kafka.statistics) */
        if (kr || ke || kb || rt || rn) {
            fprintf(out, "    met: %llu Kafka errors, %llu rebalances, %llu retries after a failure",
                    ke, kb, rt);
            if (atomic_load(&r->kafka_stats))
                fprintf(out, ", %llu Kafka request retries", kr);
            if (rn)
                fprintf(out, ", %llu consumer%s replaced", rn, rn == 1 ? "" : "s");
            fputc('\n', out);
        }
        per_entity(out, r);
    }
    fflush(out);
}

/* ---- run --------------------------------------------------------------------------- */

static int start_http(struct sk_daemon *d, struct sk_error *err)
{
    const struct sk_admin_conf *a = &d->cfg->core.admin;
    if (!a->listen || strcmp(a->listen, "off") == 0)
        return 0;
    struct sk_http_limits limits;
    sk_admin_limits(a, &limits);
    d->http = sk_http_start(a->listen, &limits, err);
    if (!d->http || sk_http_api_register(d, err))
        return -1;
    char host[128];
    snprintf(host, sizeof(host), "%s", a->listen);
    char *colon = strrchr(host, ':');
    if (colon)
        *colon = '\0';
    sk_info("main", "HTTP server on http://%s:%d (metrics, health, ready, /api/v1)", host,
            sk_http_port(d->http));
    return 0;
}

/* Reads pending signals: returns true to stop. */
static bool handle_signals(struct sk_daemon *d)
{
    struct signalfd_siginfo si;
    bool stop = false;
    while (read(d->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGHUP) {
            /* Every SIGHUP counts: several in a row give one reload each. */
            sk_info("main", "SIGHUP: reloading %s", d->config_path);
            reload(d);
        } else {
            sk_info("main", "%s: stopping", strsignal((int)si.ssi_signo));
            stop = true;
        }
    }
    return stop;
}

/*
 * The teardown after the connectors stopped (the HTTP server, the ownership
 * client, the Kafka handles) has nothing left to lose, and is bounded: a
 * librdkafka close that waits on a group round or a broker just back must
 * not keep the process alive past its shutdown (test_broker_outage saw a
 * daemon linger for more than 24 s after its summary).
 */
#define TEARDOWN_MS 10000

struct teardown_guard {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rc;
};

static void *teardown_watch(void *arg)
{
    struct teardown_guard *g = arg;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until); /* the condition's clock (below) */
    until.tv_sec += TEARDOWN_MS / 1000;
    pthread_mutex_lock(&g->mu);
    while (!g->done && pthread_cond_timedwait(&g->cv, &g->mu, &until) != ETIMEDOUT)
        ;
    bool done = g->done;
    pthread_mutex_unlock(&g->mu);
    if (!done) {
        sk_error_log("main", "the teardown did not finish within %d s: exiting without it",
                     TEARDOWN_MS / 1000);
        fflush(NULL);
        _exit(g->rc);
    }
    return NULL;
}

int sk_daemon_run(struct sk_daemon_config *cfg, const struct sk_run_options *opt)
{
    struct sk_daemon d = {.cfg = cfg,
                          .sigfd = -1,
                          .wake_fd = -1,
                          .started_ms = sk_mono_ms(),
                          .once = opt->once,
                          .config_path = cfg->path};
    d.admin_token = cfg->core.admin.token ? sk_strdup(cfg->core.admin.token) : NULL;
    pthread_rwlock_init(&d.lock, NULL);
    pthread_mutex_init(&d.reload_mu, NULL);
    pthread_cond_init(&d.reload_cv, NULL);
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
        rc = SK_EXIT_RUNTIME;
        goto out;
    }
    if (opt->kafka_started)
        opt->kafka_started(d.kafka, opt->hook_ctx);
    if (cfg->core.kafka.shared_consumer)
        d.hubs = sk_sink_hubs_new(d.kafka, opt->once);
    /* One owner per source on a real broker; the embedded one is single
     * node by nature, and --once runs every source to its end here. */
    if (!sk_kafka_embedded(d.kafka) && !opt->once &&
        !(d.owner = sk_ownership_start(d.kafka, sk_apply_ownership, &d, &err))) {
        sk_error_log("ownership", "%s", err.msg);
        rc = SK_EXIT_RUNTIME;
        goto out;
    }
    if (d.owner) /* a node the group moved on without commits nothing (KIP-447) */
        sk_sprod_set_fence(sk_kafka_sprod(d.kafka), sk_ownership_fence, d.owner,
                           sk_ownership_topic(d.owner));
    if (start_http(&d, &err)) {
        sk_error_log("main", "%s", err.msg);
        rc = SK_EXIT_RUNTIME;
        goto out;
    }
    if (open_all(&d)) {
        rc = SK_EXIT_RUNTIME;
        goto out;
    }
    for (size_t i = 0; i < d.n_conns; i++)
        if (atomic_load(&d.conns[i]->state) != SK_STATE_STANDBY && sk_conn_start(d.conns[i]))
            rc = SK_EXIT_RUNTIME;
    if (rc)
        goto stop;
    sk_info("main", "running %zu source(s) and %zu sink(s)%s", cfg->n_sources, cfg->n_sinks,
            opt->once ? " once" : "");
    sd_notify(0, "READY=1\nSTATUS=running");
    if (!opt->once)
        d.lag = sk_lag_monitor_start(&d, cfg->core.lag_interval_ms);

    int64_t progress_ms =
        opt->once || isatty(STDERR_FILENO) ? 2000 : cfg->core.progress_interval_ms;
    int64_t next_progress = sk_mono_ms() + progress_ms;
    struct sk_watchdog wd;
    sk_watchdog_init(&wd, cfg->core.lag_interval_ms);
    for (;;) {
        /* A tick every 200 ms (restarts, progress, the watchdog), sooner
         * when a signal or a runner's notice comes: a small --once run
         * ends when its last connector is done, not up to a tick later. */
        struct pollfd pfd[2] = {{.fd = d.sigfd, .events = POLLIN},
                                {.fd = d.wake_fd, .events = POLLIN}};
        uint64_t notices;
        if (poll(pfd, 2, 200) > 0 && (pfd[1].revents & POLLIN) &&
            read(d.wake_fd, &notices, sizeof(notices)) < 0) {
            /* EAGAIN: another thread's notice was read already */
        }
        if (handle_signals(&d))
            break;
        pthread_mutex_lock(&d.reload_mu);
        bool api_reload = d.reload_requested;
        pthread_mutex_unlock(&d.reload_mu);
        if (api_reload)
            reload(&d);
        if (d.owner)
            sk_ownership_poll(d.owner);
        supervise(&d);
        sk_source_pool_watch();
        int64_t now = sk_mono_ms();
        sk_watchdog_feed(&d, &wd, now);
        if (now >= next_progress) {
            progress_line(&d);
            next_progress = now + progress_ms;
        }
        if (opt->once && any_failed(&d)) {
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
    d.stopping = true;
    sk_lag_monitor_stop(d.lag);
    d.lag = NULL;
    if (!halt_all(&d, d.cfg->core.shutdown_timeout_ms)) {
        sk_error_log("main", "connectors did not stop within shutdown_timeout (%lld ms)",
                     (long long)d.cfg->core.shutdown_timeout_ms);
        /* Threads still hold their clients: exit without tearing them down.
         * Nothing uncommitted counts as done, so a restart resumes safely. */
        fflush(NULL);
        _exit(SK_EXIT_RUNTIME);
    }
    progress_line(&d);
    sk_log_status_line(NULL);
    if (opt->once && any_failed(&d))
        rc = SK_EXIT_RUNTIME;
    if (rc == SK_EXIT_OK || opt->once)
        summary(&d, opt->summary);
out:;
    struct teardown_guard guard = {.rc = rc};
    pthread_mutex_init(&guard.mu, NULL);
    sk_cond_init_monotonic(&guard.cv);
    pthread_t watch;
    bool watching = pthread_create(&watch, NULL, teardown_watch, &guard) == 0;
    /* No HTTP handler may run on a connector being closed, and none may
     * read the connector list while it is freed: the server stops first,
     * and no connector keeps a pointer to it. */
    sk_http_stop(d.http);
    d.http = NULL;
    d.stopping = true;
    if (d.owner)
        sk_sprod_set_fence(sk_kafka_sprod(d.kafka), NULL, NULL, NULL);
    sk_ownership_stop(d.owner); /* static member: its sources move when its session ends */
    d.owner = NULL;
    for (size_t i = 0; i < d.n_conns; i++) {
        struct sk_source_env *src = sk_as_source(d.conns[i]);
        if (src)
            src->http = NULL;
    }
    for (size_t i = 0; i < d.n_conns; i++) {
        conn_close(d.conns[i]);
        conn_free(d.conns[i]);
    }
    free(d.conns);
    sk_source_pool_stop(); /* every source stopped above */
    /* The caller frees the configuration it passed; later ones are ours. */
    if (d.n_old) {
        for (size_t i = 1; i < d.n_old; i++)
            sk_daemon_config_free(d.old[i]);
        sk_daemon_config_free(d.cfg);
    }
    free(d.old);
    sk_sink_hubs_free(d.hubs); /* its hubs ended with their last sinks */
    sk_kafka_destroy(d.kafka);
    close(d.sigfd);
    if (d.wake_fd >= 0)
        close(d.wake_fd);
    free(d.admin_token);
    free(d.reload_result);
    pthread_rwlock_destroy(&d.lock);
    pthread_mutex_destroy(&d.reload_mu);
    pthread_cond_destroy(&d.reload_cv);
    pthread_mutex_lock(&guard.mu);
    guard.done = true;
    pthread_cond_signal(&guard.cv);
    pthread_mutex_unlock(&guard.mu);
    if (watching)
        pthread_join(watch, NULL);
    pthread_mutex_destroy(&guard.mu);
    pthread_cond_destroy(&guard.cv);
    return rc;
}
