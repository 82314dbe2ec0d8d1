/*
 * check_connect.c: `skolsync check --connect`. After the configuration
 * validated, reaches every system it names and prints one line per check:
 *
 *     ok   <what>: <what was found>
 *     FAIL <what>: <what failed> (<how to fix it>)
 *     --   <what>: <why there is no check>
 *
 * Kafka is checked here (metadata within kafka.connect_timeout, the topics
 * sk_kafka_start would need, whether the missing ones may be created, and
 * whether the existing ones are compacted, as the start requires);
 * each connector checks its own system through its optional probe op
 * (connector.h, struct sk_probe).
 *
 * Owns: the Kafka checks and the lines. Must never: change what it reaches
 * (topics are created with validate_only, so nothing is; no transaction is
 * begun: InitProducerId with the daemon's transactional.id would fence the
 * running daemon's producer), or print a secret (probes report none, and
 * the Kafka lines name only brokers and topics).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "daemon.h"
#include "model.h"
#include "util.h"

struct check_run {
    FILE *out;
    size_t n_ok, n_fail;
};

/* ---- lines ------------------------------------------------------------------ */

static void line(struct check_run *r, const char *tag, const char *what, const char *detail,
                 const char *fix)
{
    char *text = sk_asprintf("%-4s %s: %s%s%s%s", tag, what, detail, fix ? " (" : "",
                             fix ? fix : "", fix ? ")" : "");
    fprintf(r->out, "%s\n", text);
    fflush(r->out);
    free(text);
}

static void ok(struct check_run *r, const char *what, const char *detail)
{
    r->n_ok++;
    line(r, "ok", what, detail, NULL);
}

static void fail(struct check_run *r, const char *what, const char *detail, const char *fix)
{
    r->n_fail++;
    line(r, "FAIL", what, detail, fix);
}

/* The report callback of struct sk_probe: "<connector> <check>". */
static void probe_report(void *ctx, const struct sk_probe *p, bool passed, const char *what,
                         const char *detail, const char *fix)
{
    struct check_run *r = ctx;
    char *name = sk_asprintf("%s %s", p->name, what);
    if (passed)
        ok(r, name, detail);
    else
        fail(r, name, detail, fix ? fix : "see the message");
    free(name);
}

/* ---- Kafka ------------------------------------------------------------------ */

#define FIX_REACH                                                                                  \
    "check kafka.brokers, that this host reaches them, and the security settings in "              \
    "kafka.properties"

/* One topic the daemon needs: as sk_kafka_start makes it. */
struct need {
    char *topic;
    int partitions;
    bool compact;
    bool exists;
};

/*
 * librdkafka's own log lines would repeat every failed connection on stderr;
 * the last warning or error is kept instead, for the FAIL line: it is where
 * librdkafka says why (connection refused, SASL authentication failed, a TLS
 * handshake), which its error codes do not. They never hold a password.
 */
struct broker_log {
    pthread_mutex_t mu;
    char last[400];
};

static void keep_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)fac;
    struct broker_log *log = rd_kafka_opaque(rk);
    if (level > 4 || !log) /* LOG_WARNING */
        return;
    pthread_mutex_lock(&log->mu); /* called from librdkafka's threads */
    snprintf(log->last, sizeof(log->last), "%s", buf);
    pthread_mutex_unlock(&log->mu);
}

/* A short-lived producer handle for metadata and admin requests that makes
 * no topic by asking for it; its log goes to log. */
static rd_kafka_t *check_client(const struct sk_kafka *k, struct broker_log *log,
                                struct sk_error *err)
{
    static const char *const defaults[] = {"allow.auto.create.topics", "false", NULL};
    rd_kafka_conf_t *conf = sk_kafka_conf_new(k, "skolsync-check", defaults, err);
    if (!conf)
        return NULL;
    rd_kafka_conf_set_log_cb(conf, keep_log);
    rd_kafka_conf_set_opaque(conf, log);
    return sk_kafka_new(RD_KAFKA_PRODUCER, conf, SK_ERR_FATAL, err);
}

/*
 * The topics sk_kafka_start makes sure of: the daemon creates every entity
 * type's topic at start (supervisor.c), whatever the sources and sinks use,
 * plus the cursor topic and the dead-letter topic (one partition each).
 */
static struct need *needed_topics(const struct sk_kafka *k, const struct sk_kafka_conf *conf,
                                  size_t *n)
{
    struct need *v = sk_calloc(SK_ENTITY_COUNT + 2, sizeof(*v));
    size_t i = 0;
    for (; sk_entities[i]; i++)
        v[i] = (struct need){sk_kafka_topic_for(k, sk_entities[i]->collection),
                             (int)conf->partitions, true, false};
    v[i++] = (struct need){sk_strdup(sk_kafka_cursor_topic(k)), 1, true, false};
    v[i++] = (struct need){sk_strdup(sk_kafka_dlq_topic(k)), 1, false, false};
    *n = i;
    return v;
}

static const char *create_fix(rd_kafka_resp_err_t e, const char *prefix)
{
    static char fix[256];
    switch (e) {
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
        snprintf(fix, sizeof(fix),
                 "create the topics beforehand, or grant this principal CREATE on the cluster or "
                 "on topics prefixed %s",
                 prefix);
        return fix;
    case RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR:
        return "set kafka.replication_factor to at most the number of brokers";
    case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
        return "create the topics beforehand as the cluster's policy allows";
    default:
        return "create the topics beforehand";
    }
}

/* CreateTopics with validate_only for the topics that are missing: whether
 * the start would be allowed to create them. Nothing is created. */
static void check_create(struct check_run *r, rd_kafka_t *rk, const struct sk_kafka_conf *conf,
                         const struct sk_kafka *k, struct need *v, size_t n, size_t n_missing)
{
    rd_kafka_NewTopic_t **nt = sk_calloc(n_missing, sizeof(*nt));
    size_t m = 0;
    char errstr[512];
    for (size_t i = 0; i < n; i++) {
        if (v[i].exists)
            continue;
        nt[m] = rd_kafka_NewTopic_new(v[i].topic, v[i].partitions, (int)conf->replication_factor,
                                      errstr, sizeof(errstr));
        sk_kafka_topic_settings(k, nt[m++], v[i].compact);
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_validate_only(opt, 1, errstr, sizeof(errstr));
    rd_kafka_AdminOptions_set_request_timeout(opt, (int)conf->connect_timeout_ms, NULL, 0);
    rd_kafka_CreateTopics(rk, nt, m, opt, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, (int)conf->connect_timeout_ms + 5000);
    char *detail = NULL;
    const char *fix = NULL;
    if (!ev || rd_kafka_event_error(ev)) {
        detail = sk_asprintf("%zu of %zu needed topics are missing; asking whether they may be "
                             "created failed: %s",
                             n_missing, n, ev ? rd_kafka_event_error_string(ev) : "timed out");
        fix = create_fix(ev ? rd_kafka_event_error(ev) : RD_KAFKA_RESP_ERR__TIMED_OUT,
                         sk_kafka_prefix(k));
    } else {
        size_t cnt;
        const rd_kafka_topic_result_t **tr =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
        for (size_t i = 0; i < cnt && !detail; i++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
            if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                detail = sk_asprintf("%zu of %zu needed topics are missing and %s may not be "
                                     "created: %s",
                                     n_missing, n, rd_kafka_topic_result_name(tr[i]),
                                     rd_kafka_topic_result_error_string(tr[i]));
                fix = create_fix(e, sk_kafka_prefix(k));
            }
        }
    }
    if (detail) {
        fail(r, "kafka topics", detail, fix);
    } else {
        detail = sk_asprintf("%zu needed: %zu exist, the other %zu may be created (asked with "
                             "validate_only: nothing was created)",
                             n, n - n_missing, n_missing);
        ok(r, "kafka topics", detail);
    }
    free(detail);
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(opt);
    rd_kafka_queue_destroy(q);
    for (size_t i = 0; i < m; i++)
        rd_kafka_NewTopic_destroy(nt[i]);
    free(nt);
}

/* The existing topics that must be compacted are (what the start refuses otherwise). */
static void check_compacted(struct check_run *r, rd_kafka_t *rk, const struct sk_kafka *k,
                            const struct need *v, size_t n)
{
    const char **names = sk_calloc(n, sizeof(*names));
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i].exists && v[i].compact)
            names[m++] = v[i].topic;
    struct sk_topic_verdict verdict = {0};
    if (m == 0) {
        /* nothing to ask: the start creates them compacted */
    } else if (sk_kafka_check_topics(rk, k, names, m, &verdict)) {
        fail(r, "kafka topic settings", verdict.refused, NULL); /* the message holds the fix */
    } else if (verdict.unverified) {
        char *detail = sk_asprintf("cannot tell whether the %zu existing topics are compacted: %s",
                                   m, verdict.unverified);
        line(r, "--", "kafka topic settings", detail,
             "grant this principal DESCRIBE_CONFIGS on the topics to have it checked");
        free(detail);
    } else {
        char *detail = sk_asprintf("the %zu existing entity and cursor topics are compacted%s%s",
                                   m, verdict.short_tombstones ? "; but " : "",
                                   verdict.short_tombstones ? verdict.short_tombstones : "");
        ok(r, "kafka topic settings", detail);
        free(detail);
    }
    sk_topic_verdict_free(&verdict);
    /* and every key where the producers put it (what the start refuses too) */
    char *moved = m ? sk_kafka_misplaced_keys(k, names, m) : NULL;
    if (moved)
        fail(r, "kafka key placement", moved, NULL); /* the message holds the way out */
    else if (m)
        ok(r, "kafka key placement", "the first records of each partition are where their "
                                     "key belongs");
    free(moved);
    free(names);
}

static void check_topics(struct check_run *r, rd_kafka_t *rk, const struct rd_kafka_metadata *md,
                         const struct sk_kafka_conf *conf, const struct sk_kafka *k)
{
    size_t n, n_missing = 0;
    struct need *v = needed_topics(k, conf, &n);
    char *refused = NULL;
    for (size_t i = 0; i < n; i++) {
        for (int t = 0; t < md->topic_cnt; t++) {
            if (strcmp(md->topics[t].topic, v[i].topic) != 0)
                continue;
            if (md->topics[t].err && !refused)
                refused = sk_asprintf("%s: %s", v[i].topic, rd_kafka_err2str(md->topics[t].err));
            v[i].exists = true;
        }
        n_missing += !v[i].exists;
    }
    if (refused) {
        fail(r, "kafka topics", refused,
             "grant this principal DESCRIBE, READ and WRITE on the topics it uses");
    } else if (n_missing) {
        check_create(r, rk, conf, k, v, n, n_missing);
    } else {
        char *detail = sk_asprintf("all %zu needed exist (%s..., %s, %s)", n, v[0].topic,
                                   v[n - 2].topic, v[n - 1].topic);
        ok(r, "kafka topics", detail);
        free(detail);
    }
    if (!refused)
        check_compacted(r, rk, k, v, n);
    free(refused);
    for (size_t i = 0; i < n; i++)
        free(v[i].topic);
    free(v);
}

static void check_kafka(struct check_run *r, const struct sk_kafka_conf *conf)
{
    struct sk_kafka *k = sk_kafka_describe(conf);
    struct sk_error err = {0};
    struct broker_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
    rd_kafka_t *rk = NULL;
    if (sk_kafka_embedded(k)) {
        ok(r, "kafka", "the embedded broker runs inside skolsync: nothing to reach");
        goto out;
    }
    rk = check_client(k, &log, &err);
    if (!rk) {
        fail(r, "kafka brokers", err.msg, "correct kafka.properties");
        goto out;
    }
    /* Bounded like the start (fetch_cluster_id): an unreachable broker is a
     * FAIL line after connect_timeout, never a hang. */
    int64_t started = sk_mono_ms();
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, (int)conf->connect_timeout_ms);
    char *detail;
    if (e) {
        pthread_mutex_lock(&log.mu);
        detail = sk_asprintf("cannot reach Kafka at %s within %lld ms (kafka.connect_timeout): "
                             "%s%s%s",
                             sk_kafka_bootstrap(k), (long long)conf->connect_timeout_ms,
                             rd_kafka_err2str(e), log.last[0] ? "; last: " : "", log.last);
        pthread_mutex_unlock(&log.mu);
        fail(r, "kafka brokers", detail, FIX_REACH);
        free(detail);
        goto out;
    }
    char *id = rd_kafka_clusterid(rk, 1000);
    detail = sk_asprintf("cluster %s, %d broker(s), metadata from %s in %lld ms",
                         id ? id : "(id unknown)", md->broker_cnt, sk_kafka_bootstrap(k),
                         (long long)(sk_mono_ms() - started));
    ok(r, "kafka brokers", detail);
    free(detail);
    if (id)
        rd_kafka_mem_free(rk, id);
    check_topics(r, rk, md, conf, k);
    rd_kafka_metadata_destroy(md);
    if (conf->exactly_once)
        line(r, "--", "kafka transactions",
             "exactly_once is on: the rights to write in transactions (TransactionalId WRITE, "
             "IdempotentWrite) are only proven at start, since trying them here would fence "
             "a running skolsync's producer",
             NULL);
out:
    if (rk)
        rd_kafka_destroy(rk);
    sk_kafka_destroy(k);
}

/* ---- connectors ------------------------------------------------------------- */

static void check_connector(struct check_run *r, const char *name, const char *type,
                            void (*probe)(const void *, struct sk_probe *), const void *conf)
{
    if (!probe) {
        fprintf(r->out, "%-4s %s: no connection check for %s\n", "--", name, type);
        return;
    }
    struct sk_probe p = {.name = name, .report = probe_report, .ctx = r};
    probe(conf, &p);
}

int sk_check_connect(const struct sk_daemon_config *cfg, FILE *out)
{
    struct check_run r = {.out = out};
    check_kafka(&r, &cfg->core.kafka);
    for (size_t i = 0; i < cfg->n_sources; i++) {
        const struct sk_source_def *d = &cfg->sources[i];
        check_connector(&r, d->name, d->ops->type, d->ops->probe, d->conf);
    }
    for (size_t i = 0; i < cfg->n_sinks; i++) {
        const struct sk_sink_def *d = &cfg->sinks[i];
        check_connector(&r, d->name, d->ops->type, d->ops->probe, d->conf);
    }
    if (r.n_fail)
        fprintf(out, "%s: %zu of %zu checks failed\n", cfg->path, r.n_fail, r.n_ok + r.n_fail);
    else
        fprintf(out, "%s: all %zu checks passed\n", cfg->path, r.n_ok);
    return r.n_fail ? SK_EXIT_RUNTIME : SK_EXIT_OK;
}
