/*
 * kafka.c: shared Kafka context: embedded broker, incarnation, topics,
 * client configuration. See kafka.h.
 */
#include "kafka.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka_mock.h>

#include "buf.h"
#include "embedded_store.h"
#include "log.h"
#include "shared_producer.h"
#include "snapshot.h"
#include "util.h"

/* A keyed topic's partition count as the node first met it (sk_kafka_pin). */
struct pin {
    char *topic;
    int count; /* as first met */
    int now;   /* another count met since; 0 while none */
};

struct sk_kafka {
    char *bootstrap;
    char *prefix;
    char *deployment, *node; /* names below */
    struct sk_names names;
    char *incarnation;
    char *cursor_topic;
    char *dlq_topic;
    bool embedded;
    bool exactly_once;
    int partitions;
    int replication_factor;
    int embedded_brokers;
    int64_t connect_timeout_ms;
    int64_t tombstone_retention_ms;
    struct sk_strmap properties; /* copies */
    char statistics[24];         /* statistics.interval.ms of the connectors' clients */
    rd_kafka_t *mock_holder;     /* embedded: the handle that owns the mock cluster */
    rd_kafka_mock_cluster_t *mock;
    struct sk_estore *store; /* embedded: its state on disk, or NULL */
    struct sk_sprod *sprod;  /* the sources' producer (shared_producer.h), or NULL */
    void (*consumer_hook)(rd_kafka_t *rk, void *ctx); /* tests only */
    void *consumer_hook_ctx;
    /* The keyed topics' partition counts as the node first met them (sk_kafka_pin). */
    pthread_mutex_t pins_mu;
    struct pin *pins;
    size_t n_pins, cap_pins;
    atomic_uint pins_moved; /* bumped with each topic found moved */
};

const struct sk_option sk_kafka_options[] = {
    {"brokers", SK_OPT_STRING, "embedded", false,
     "bootstrap servers (host:port,...) or \"embedded\" for the in-process broker (memory only)",
     offsetof(struct sk_kafka_conf, brokers)},
    {"topic_prefix", SK_OPT_STRING, "skolsync.", false, "prefix of every topic name",
     offsetof(struct sk_kafka_conf, topic_prefix)},
    {"deployment", SK_OPT_STRING, NULL, false,
     "this deployment's name in the Kafka cluster: consumer groups, transactional and client "
     "ids derive from it (default: topic_prefix without its trailing '.', '_' or '-'; real "
     "Kafka clusters only: refused with the embedded broker)",
     offsetof(struct sk_kafka_conf, deployment)},
    {"partitions", SK_OPT_INT, "3", false, "partitions of the entity topics the daemon creates",
     offsetof(struct sk_kafka_conf, partitions), .min = 1, .max = 1000},
    {"replication_factor", SK_OPT_INT, "1", false, "replication factor of created topics",
     offsetof(struct sk_kafka_conf, replication_factor), .min = 1, .max = 16},
    {"exactly_once", SK_OPT_BOOL, "true", false,
     "sources write each batch and its cursor in one transaction (real brokers only)",
     offsetof(struct sk_kafka_conf, exactly_once)},
    {"connect_timeout", SK_OPT_DURATION, "30s", false,
     "how long to wait for the cluster at start before giving up",
     offsetof(struct sk_kafka_conf, connect_timeout_ms), .min = 100, .max = 3600000},
    {"embedded_brokers", SK_OPT_INT, "1", false,
     "brokers of the embedded cluster (more than 1 only for fault tests: leader moves)",
     offsetof(struct sk_kafka_conf, embedded_brokers), .min = 1, .max = 5},
    {"embedded_dir", SK_OPT_STRING, NULL, false,
     "where the embedded broker keeps its state across restarts (default: "
     "$STATE_DIRECTORY/embedded under systemd, else memory only; \"off\": memory only)",
     offsetof(struct sk_kafka_conf, embedded_dir)},
    {"statistics", SK_OPT_DURATION, "0", false,
     "how often the connectors' Kafka clients report librdkafka's statistics (broker "
     "round-trip time and request retries in /metrics); 0: never. Off by default: they cost "
     "about 0.2 MB of heap per client and CPU at every interval",
     offsetof(struct sk_kafka_conf, statistics_ms), .min = 0, .max = 3600000},
    {"tombstone_retention", SK_OPT_DURATION, "7d", false,
     "how long the compacted topics the daemon creates keep a deletion (delete.retention.ms; "
     "Kafka's default is 1 day): a sink further behind than this may never see it, so the lag "
     "status turns ERR at half of it",
     offsetof(struct sk_kafka_conf, tombstone_retention_ms), .min = 3600000,
     .max = 3650LL * 86400000},
    {"shared_consumer", SK_OPT_BOOL, "true", false,
     "one Kafka consumer for all node-local sinks (sqlite, oneroster-csv, ss12000-api) "
     "instead of one each: 4 threads and a prefetch queue per sink fewer; false: a consumer "
     "and group member per sink, as before 2026-12",
     offsetof(struct sk_kafka_conf, shared_consumer)},
    {"properties", SK_OPT_MAP, NULL, false,
     "librdkafka properties passed to every client (security.protocol, ssl.*, sasl.*, ...), "
     "checked by librdkafka at load; those skolsync sets itself (bootstrap.servers, client.id, "
     "group.id, transactional.id, ...) are refused",
     offsetof(struct sk_kafka_conf, properties)},
    {0},
};

bool sk_kafka_embedded(const struct sk_kafka *k)
{
    return k->embedded;
}

bool sk_kafka_transactional(const struct sk_kafka *k)
{
    return !k->embedded && k->exactly_once;
}

const char *sk_kafka_bootstrap(const struct sk_kafka *k)
{
    return k->bootstrap;
}

const char *sk_kafka_incarnation(const struct sk_kafka *k)
{
    return k->incarnation;
}

const char *sk_kafka_prefix(const struct sk_kafka *k)
{
    return k->prefix;
}

const struct sk_names *sk_kafka_names(const struct sk_kafka *k)
{
    return &k->names;
}

int64_t sk_kafka_tombstone_retention_ms(const struct sk_kafka *k)
{
    return k->tombstone_retention_ms;
}

const char *sk_kafka_statistics_interval(const struct sk_kafka *k)
{
    return k->statistics;
}

const char *sk_kafka_cursor_topic(const struct sk_kafka *k)
{
    return k->cursor_topic;
}

const char *sk_kafka_dlq_topic(const struct sk_kafka *k)
{
    return k->dlq_topic;
}

struct sk_estore *sk_kafka_estore(struct sk_kafka *k)
{
    return k->store;
}

struct sk_sprod *sk_kafka_sprod(struct sk_kafka *k)
{
    return k->sprod;
}

struct rd_kafka_mock_cluster_s *sk_kafka_mock(struct sk_kafka *k)
{
    return k->mock;
}

void sk_kafka_set_consumer_hook(struct sk_kafka *k, void (*fn)(rd_kafka_t *rk, void *ctx),
                                void *ctx)
{
    k->consumer_hook = fn;
    k->consumer_hook_ctx = ctx;
}

void sk_kafka_consumer_created(struct sk_kafka *k, rd_kafka_t *rk)
{
    if (k->consumer_hook)
        k->consumer_hook(rk, k->consumer_hook_ctx);
}

char *sk_kafka_topic_for(const struct sk_kafka *k, const char *collection)
{
    return sk_asprintf("%s%s", k->prefix, collection);
}

/*
 * rd_kafka_conf_set, its reason in errstr. librdkafka quotes the value in
 * some messages ('Invalid value "..." for configuration property'), and the
 * value may be a password: with hide, it is cut out.
 */
static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, bool hide,
                    char *errstr, size_t size)
{
    if (rd_kafka_conf_set(conf, name, value, errstr, size) == RD_KAFKA_CONF_OK)
        return 0;
    errstr[strcspn(errstr, "\n")] = '\0'; /* some end in one */
    size_t vlen = hide ? strlen(value) : 0;
    char *at;
    while (vlen && (at = strstr(errstr, value)) != NULL) {
        static const char hidden[] = "********";
        size_t rest = strlen(at + vlen) + 1;
        if (vlen < sizeof(hidden) - 1 && strlen(errstr) + sizeof(hidden) - 1 - vlen >= size)
            break;
        memmove(at + sizeof(hidden) - 1, at + vlen, rest);
        memcpy(at, hidden, sizeof(hidden) - 1);
    }
    if (vlen && strstr(errstr, value))
        snprintf(errstr, size, "invalid value");
    return -1;
}

int sk_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                      struct sk_error *err)
{
    char errstr[512];
    if (conf_set(conf, name, value, true, errstr, sizeof(errstr)) == 0)
        return 0;
    return sk_error_set(err, SK_ERR_FATAL, "kafka property %s: %s", name, errstr);
}

/*
 * What the daemon sets on its clients itself, after or instead of
 * kafka.properties (sk_kafka_conf_new, the drivers): set there, they were
 * overridden without a word, or (bootstrap.servers, client.id, set before
 * the properties) took over what kafka.brokers and the client names decide.
 */
static const char *const reserved_properties[][2] = {
    {"bootstrap.servers", "use kafka.brokers"},
    {"client.id", "each client is named after its deployment, node and connector, and the "
                  "duplicate-node check reads the name"},
    {"group.id", "derived from kafka.deployment, node.name and the sink's name"},
    {"group.instance.id", "derived from kafka.deployment, node.name and the sink's name"},
    {"transactional.id", "each source has its own, with kafka.exactly_once"},
    {"enable.idempotence", "the delivery rules rest on it (kafka.exactly_once for transactions)"},
    {"isolation.level", "the delivery rules rest on it"},
    {"enable.auto.commit", "the delivery rules rest on it: offsets are committed after apply"},
    {"enable.auto.offset.store", "the delivery rules rest on it: offsets are committed after "
                                 "apply"},
    {"auto.offset.reset", "a sink without offsets reads its topics from the start"},
    {"enable.partition.eof", "the drivers know they are caught up by it"},
    {"partition.assignment.strategy", "roundrobin: librdkafka 2.0.2's cooperative-sticky is "
                                      "unsafe (docs/architecture.md §8.5)"},
};

void sk_kafka_properties_check(const struct sk_cnode *props, struct sk_config_errors *errs)
{
    if (!props || props->kind != SK_CNODE_MAP)
        return;
    rd_kafka_conf_t *scratch = rd_kafka_conf_new();
    for (size_t i = 0; i < props->n_kids; i++) {
        const struct sk_cnode *p = props->kids[i];
        if (p->kind != SK_CNODE_SCALAR || !p->value)
            continue; /* reported by the option table */
        /* rd_kafka_conf_set loads the plugins it names: not at check, nor at a
         * reload of a running daemon; librdkafka checks them when it makes a client */
        if (strcmp(p->key, "plugin.library.paths") == 0)
            continue;
        const char *why = NULL;
        for (size_t j = 0; !why && j < sizeof(reserved_properties) / sizeof(*reserved_properties);
             j++)
            if (strcmp(p->key, reserved_properties[j][0]) == 0)
                why = reserved_properties[j][1];
        char errstr[512];
        if (why)
            sk_config_errors_add(errs, p, "set by skolsync itself (%s)", why);
        else if (conf_set(scratch, p->key, p->value, p->secret, errstr, sizeof(errstr)))
            sk_config_errors_add(errs, p, "%s", errstr);
    }
    rd_kafka_conf_destroy(scratch);
}

rd_kafka_event_t *sk_kafka_admin_wait(rd_kafka_queue_t *q, rd_kafka_event_type_t type,
                                      const char *what, int64_t timeout_ms, struct sk_error *err)
{
    int64_t deadline = sk_mono_ms() + timeout_ms + 2000;
    for (;;) {
        int64_t left = deadline - sk_mono_ms();
        rd_kafka_event_t *ev = left > 0 ? rd_kafka_queue_poll(q, (int)left) : NULL;
        if (!ev) {
            sk_error_set(err, SK_ERR_RETRIABLE, "%s: no answer within %lld ms", what,
                         (long long)timeout_ms);
            return NULL;
        }
        if (rd_kafka_event_type(ev) != type) {
            /* The late answer to an earlier request on this queue (its wait
             * ran out while librdkafka's threads were starved): taking it for
             * this one read a NULL result (a crash at 100 pairs). */
            sk_debug("kafka", "%s: dropped a late answer (%s)", what, rd_kafka_event_name(ev));
            rd_kafka_event_destroy(ev);
            continue;
        }
        if (rd_kafka_event_error(ev)) {
            sk_error_set(err, SK_ERR_RETRIABLE, "%s: %s", what, rd_kafka_event_error_string(ev));
            rd_kafka_event_destroy(ev);
            return NULL;
        }
        return ev;
    }
}

rd_kafka_AdminOptions_t *sk_kafka_coord_options(rd_kafka_t *rk, rd_kafka_admin_op_t op)
{
    rd_kafka_AdminOptions_t *o = rd_kafka_AdminOptions_new(rk, op);
    rd_kafka_AdminOptions_set_request_timeout(o, SK_KAFKA_COORD_REQUEST_MS, NULL, 0);
    return o;
}

/* kafka.h */
void sk_kafka_log_line(const char *client, int level, const char *fac, const char *buf)
{
    enum sk_log_level l = level <= 3   ? SK_LOG_ERROR
                          : level <= 4 ? SK_LOG_WARN
                          : level <= 6 ? SK_LOG_INFO
                                       : SK_LOG_DEBUG;
    if (l > SK_LOG_WARN) { /* notices, and the debug lines an operator asked for */
        sk_log(l, "kafka", "%s: %s: %s", client, fac, buf);
        return;
    }
    char key[128];
    snprintf(key, sizeof(key), "%s/%s", client, fac);
    sk_log_limited_key(key, SK_KAFKA_LOG_INTERVAL_MS, l, "kafka", "%s: %s: %s", client, fac, buf);
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    sk_kafka_log_line(rd_kafka_name(rk), level, fac, buf);
}

rd_kafka_conf_t *sk_kafka_conf_new(const struct sk_kafka *k, const char *client_id,
                                   const char *const *defaults, struct sk_error *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, log_cb);
    if (sk_kafka_conf_set(conf, "bootstrap.servers", k->bootstrap, err) ||
        sk_kafka_conf_set(conf, "client.id", client_id, err))
        goto fail;
    for (size_t i = 0; defaults && defaults[i]; i += 2)
        if (sk_kafka_conf_set(conf, defaults[i], defaults[i + 1], err))
            goto fail;
    if (k->embedded) {
        /* A connection the mock cluster never accepts (a broker that is
         * being restarted by a fault test) gives up after 5 s instead of
         * the default 30 s. (Its coordinator's rebalance wait, §8.12 of
         * docs/architecture.md, is kept short by the sink's session timeout.) */
        if (sk_kafka_conf_set(conf, "socket.connection.setup.timeout.ms", "5000", err))
            goto fail;
    }
    for (size_t i = 0; i < k->properties.n; i++)
        if (sk_kafka_conf_set(conf, k->properties.keys[i], k->properties.values[i], err))
            goto fail;
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

rd_kafka_t *sk_kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, enum sk_err_class cls,
                         struct sk_error *err)
{
    char errstr[512];
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        sk_error_set(err, cls, "cannot create a Kafka %s: %s",
                     type == RD_KAFKA_PRODUCER ? "producer" : "consumer", errstr);
    }
    return rk;
}

rd_kafka_t *sk_kafka_producer_new(const struct sk_kafka *k, const char *client_id,
                                  void (*dr)(rd_kafka_t *, const rd_kafka_message_t *, void *),
                                  void *opaque, struct sk_error *err)
{
    const char *const defaults[] = {"message.timeout.ms", SK_KAFKA_MESSAGE_TIMEOUT_MS, NULL};
    rd_kafka_conf_t *conf = sk_kafka_conf_new(k, client_id, defaults, err);
    if (!conf)
        return NULL;
    if (sk_kafka_conf_set(conf, "enable.idempotence", "true", err)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr);
    rd_kafka_conf_set_opaque(conf, opaque);
    return sk_kafka_new(RD_KAFKA_PRODUCER, conf, SK_ERR_FATAL, err);
}

/* fetch_wait: fetch.wait.max.ms, or NULL for librdkafka's default (500). */
static rd_kafka_t *reader_new(const struct sk_kafka *k, const char *client_id,
                              const char *isolation, const char *fetch_wait, struct sk_error *err)
{
    rd_kafka_conf_t *conf = sk_kafka_conf_new(k, client_id, NULL, err);
    if (!conf)
        return NULL;
    if ((fetch_wait && (sk_kafka_conf_set(conf, "fetch.wait.max.ms", fetch_wait, err))) ||
        sk_kafka_conf_set(conf, "isolation.level", isolation, err) ||
        sk_kafka_conf_set(conf, "enable.partition.eof", "true", err) ||
        sk_kafka_conf_set(conf, "enable.auto.commit", "false", err) ||
        sk_kafka_conf_set(conf, "auto.offset.reset", "earliest", err) ||
        /* assign() only: the group is never joined, nothing is committed */
        sk_kafka_conf_set(conf, "group.id", "skolsync-reader", err)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return sk_kafka_new(RD_KAFKA_CONSUMER, conf, SK_ERR_RETRIABLE, err);
}

rd_kafka_t *sk_kafka_reader_new(const struct sk_kafka *k, const char *client_id,
                                struct sk_error *err)
{
    return reader_new(k, client_id, "read_committed", NULL, err);
}

rd_kafka_t *sk_kafka_hw_reader_new(const struct sk_kafka *k, const char *client_id,
                                   struct sk_error *err)
{
    return reader_new(k, client_id, "read_uncommitted", NULL, err);
}

int sk_kafka_partition_count(rd_kafka_t *rk, const char *topic)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int n = -1;
    if (rkt && !rd_kafka_metadata(rk, 0, rkt, &md, 10000) && md && md->topic_cnt == 1 &&
        !md->topics[0].err)
        n = md->topics[0].partition_cnt;
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    return n;
}

rd_kafka_resp_err_t sk_kafka_list_offsets(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *l,
                                          int64_t which, int timeout_ms)
{
    /* ListOffsets reads the special timestamps -1 and -2 as "latest" and
     * "earliest": offsets_for_times is the batched watermark query. */
    for (int i = 0; i < l->cnt; i++) {
        l->elems[i].offset = which;
        l->elems[i].err = RD_KAFKA_RESP_ERR_NO_ERROR;
    }
    rd_kafka_resp_err_t e = rd_kafka_offsets_for_times(rk, l, timeout_ms);
    for (int i = 0; !e && i < l->cnt; i++)
        e = l->elems[i].err;
    return e;
}

int sk_kafka_read_to_end(struct sk_kafka *k, const char *client_id, const char *topic,
                         int32_t partition, int64_t from, int64_t timeout_ms,
                         int (*fn)(void *ctx, const rd_kafka_message_t *m), void *ctx,
                         struct sk_error *err)
{
    /* The end is known only from a fetch that finds nothing more, and the
     * broker holds such a fetch fetch.wait.max.ms: at the default 500 ms a
     * source's start-up spent ~1 s reading its one cursor (a record and its
     * transaction marker). A short read pays a few more fetches instead. */
    rd_kafka_t *rk = reader_new(k, client_id, "read_committed", "10", err);
    if (!rk)
        return -1;
    int rc = 0;
    int64_t lo = 0, hi = 0;
    /* A topic created a moment ago (a first start) has a leader in the
     * metadata before that leader answers for it: "not leader" for a few
     * milliseconds, which a retry of the whole start-up paid with 0.5 s. */
    int64_t settle = sk_mono_ms() + 2000;
    rd_kafka_resp_err_t e;
    while ((e = rd_kafka_query_watermark_offsets(rk, topic, partition, &lo, &hi, 15000)) &&
           (e == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION ||
            e == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
            e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) &&
           sk_mono_ms() < settle) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (e) {
        rc = sk_error_set(err, SK_ERR_RETRIABLE, "reading %s: %s", topic, rd_kafka_err2str(e));
        goto done;
    }
    if (hi <= lo || (from >= 0 && from >= hi))
        goto done; /* nothing to read */
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    /* From a known offset: a logical one (BEGINNING) is looked up first, and
     * that lookup was seen to cost 0.5 s in most of a start-up's cursor reads.
     * An offset compacted away meanwhile restarts at the earliest one. */
    rd_kafka_topic_partition_list_add(parts, topic, partition)->offset = from > lo ? from : lo;
    e = rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (e) {
        rc = sk_error_set(err, SK_ERR_RETRIABLE, "reading %s: %s", topic, rd_kafka_err2str(e));
        goto done;
    }
    int64_t deadline = sk_mono_ms() + timeout_ms;
    while (rc == 0) {
        if (sk_mono_ms() > deadline) {
            rc = sk_error_set(err, SK_ERR_RETRIABLE, "reading %s timed out", topic);
            break;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(m);
            break;
        }
        if (m->err)
            rc = sk_error_set(err, SK_ERR_RETRIABLE, "reading %s: %s", topic,
                              rd_kafka_message_errstr(m));
        else
            rc = fn(ctx, m);
        rd_kafka_message_destroy(m);
    }
done:
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return rc;
}

/* A short-lived producer handle for admin requests and metadata. */
static rd_kafka_t *admin_client(const struct sk_kafka *k, struct sk_error *err)
{
    rd_kafka_conf_t *conf = sk_kafka_conf_new(k, "skolsync-admin", NULL, err);
    if (!conf)
        return NULL;
    if (sk_kafka_conf_set(conf, "allow.auto.create.topics", "false", err)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return sk_kafka_new(RD_KAFKA_PRODUCER, conf, SK_ERR_FATAL, err);
}

/* Sets k->incarnation; *out: the client it used, kept for the topics (start-up). */
static int fetch_cluster_id(struct sk_kafka *k, rd_kafka_t **out, struct sk_error *err)
{
    rd_kafka_t *rk = admin_client(k, err);
    if (!rk)
        return -1;
    /* Bounded: an unreachable broker is a clear error, never a hang. */
    int64_t deadline = sk_mono_ms() + k->connect_timeout_ms;
    char *id = NULL;
    while (!id && sk_mono_ms() < deadline) {
        int64_t left = deadline - sk_mono_ms();
        id = rd_kafka_clusterid(rk, (int)(left < 1000 ? left : 1000));
    }
    if (!id) {
        rd_kafka_destroy(rk);
        return sk_error_set(err, SK_ERR_RETRIABLE,
                            "cannot reach Kafka at %s within %lld ms (kafka.brokers)", k->bootstrap,
                            (long long)k->connect_timeout_ms);
    }
    k->incarnation = sk_strdup(id);
    rd_kafka_mem_free(NULL, id);
    *out = rk;
    return 0;
}

struct mock_create {
    rd_kafka_mock_cluster_t *mock;
    const char *topic;
    int partitions;
    int replication;
    rd_kafka_resp_err_t result;
};

static void *mock_create_one(void *arg)
{
    struct mock_create *c = arg;
    c->result = rd_kafka_mock_topic_create(c->mock, c->topic, c->partitions, c->replication);
    return NULL;
}

/*
 * The mock cluster serves one topic creation per turn of its event loop
 * (about a second in 2.0.2), so the creations are issued in parallel: the
 * loop takes all waiting requests in one turn.
 */
static int mock_create_topics(struct sk_kafka *k, const char *const *topics, size_t n,
                              int partitions, struct sk_error *err)
{
    struct mock_create *c = sk_calloc(n, sizeof(*c));
    pthread_t *threads = sk_calloc(n, sizeof(*threads));
    bool *started = sk_calloc(n, sizeof(*started));
    for (size_t i = 0; i < n; i++) {
        c[i] = (struct mock_create){k->mock, topics[i], partitions, k->embedded_brokers, 0};
        started[i] = pthread_create(&threads[i], NULL, mock_create_one, &c[i]) == 0;
        if (!started[i])
            mock_create_one(&c[i]);
    }
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (started[i])
            pthread_join(threads[i], NULL);
        if (c[i].result && c[i].result != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS && rc == 0)
            rc = sk_error_set(err, SK_ERR_FATAL, "cannot create topic %s: %s", topics[i],
                              rd_kafka_err2str(c[i].result));
    }
    free(c);
    free(threads);
    free(started);
    return rc;
}

/*
 * A topic the controller just created is not yet known to every broker: a
 * client that asks at once gets "unknown partition" or no leader, and waits
 * for its next metadata refresh (a cursor read retried in 500 ms, a first
 * transaction ~0.7 s slower; bench/analysis.md). Waits until every topic has
 * a leader for each partition, bounded: a timeout only means clients wait.
 */
static void await_leaders(rd_kafka_t *rk, const char *const *topics, size_t n, int64_t timeout_ms)
{
    rd_kafka_topic_t **rkts = sk_calloc(n, sizeof(*rkts));
    for (size_t i = 0; i < n; i++)
        rkts[i] = rd_kafka_topic_new(rk, topics[i], NULL);
    int64_t deadline = sk_mono_ms() + timeout_ms;
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        size_t ready = 0;
        if (rd_kafka_metadata(rk, 0, NULL, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR && md) {
            for (int t = 0; t < md->topic_cnt; t++) {
                const struct rd_kafka_metadata_topic *mt = &md->topics[t];
                bool ok = !mt->err && mt->partition_cnt > 0;
                for (int p = 0; ok && p < mt->partition_cnt; p++)
                    ok = !mt->partitions[p].err && mt->partitions[p].leader >= 0;
                for (size_t i = 0; ok && i < n; i++)
                    if (strcmp(mt->topic, topics[i]) == 0) {
                        ready++;
                        break;
                    }
            }
            rd_kafka_metadata_destroy(md);
        }
        if (ready >= n || sk_mono_ms() >= deadline)
            break;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    for (size_t i = 0; i < n; i++)
        if (rkts[i])
            rd_kafka_topic_destroy(rkts[i]);
    free(rkts);
}

void sk_kafka_topic_settings(const struct sk_kafka *k, rd_kafka_NewTopic_t *nt, bool compact)
{
    rd_kafka_NewTopic_set_config(nt, "cleanup.policy", compact ? "compact" : "delete");
    if (compact) {
        char ms[24];
        snprintf(ms, sizeof(ms), "%lld", (long long)k->tombstone_retention_ms);
        rd_kafka_NewTopic_set_config(nt, "delete.retention.ms", ms);
    }
}

/* ---- existing topics that would lose state ----------------------------------- */

/* One topic's settings as DescribeConfigs gave them, judged into v's lists
 * (sk_kafka_check_topics). */
static void judge_topic(const rd_kafka_ConfigResource_t *res, int64_t tombstone_ms,
                        struct sk_buf *refused, size_t *n_refused, struct sk_buf *short_tomb,
                        size_t *n_short)
{
    const char *name = rd_kafka_ConfigResource_name(res);
    size_t cnt;
    const rd_kafka_ConfigEntry_t **e = rd_kafka_ConfigResource_configs(res, &cnt);
    const char *policy = NULL, *ms = NULL, *bytes = NULL, *tomb = NULL;
    for (size_t i = 0; i < cnt; i++) {
        const char *key = rd_kafka_ConfigEntry_name(e[i]);
        const char *value = rd_kafka_ConfigEntry_value(e[i]);
        if (strcmp(key, "cleanup.policy") == 0)
            policy = value;
        else if (strcmp(key, "retention.ms") == 0)
            ms = value;
        else if (strcmp(key, "retention.bytes") == 0)
            bytes = value;
        else if (strcmp(key, "delete.retention.ms") == 0)
            tomb = value;
    }
    if (!policy) /* the broker did not say: nothing to judge by */
        return;
    /* beside compaction, "delete" removes old segments past a limit, if any */
    bool ms_bounded = ms && strcmp(ms, "-1") != 0;
    bool bytes_bounded = bytes && strcmp(bytes, "-1") != 0;
    if (!strstr(policy, "compact")) {
        sk_buf_printf(refused, "%s%s cleanup.policy=%s", (*n_refused)++ ? "; " : "", name,
                      policy);
        return;
    }
    if (strstr(policy, "delete") && (ms_bounded || bytes_bounded)) {
        sk_buf_printf(refused, "%s%s cleanup.policy=%s%s%s%s%s", (*n_refused)++ ? "; " : "",
                      name, policy, ms_bounded ? " retention.ms=" : "", ms_bounded ? ms : "",
                      bytes_bounded ? " retention.bytes=" : "", bytes_bounded ? bytes : "");
        return;
    }
    if (tomb && strtoll(tomb, NULL, 10) < tombstone_ms)
        sk_buf_printf(short_tomb, "%s%s delete.retention.ms=%s", (*n_short)++ ? "; " : "", name,
                      tomb);
}

int sk_kafka_check_topics(rd_kafka_t *rk, const struct sk_kafka *k, const char *const *topics,
                          size_t n, struct sk_topic_verdict *v)
{
    *v = (struct sk_topic_verdict){0};
    if (n == 0)
        return 0;
    rd_kafka_ConfigResource_t **res = sk_calloc(n, sizeof(*res));
    for (size_t i = 0; i < n; i++)
        res[i] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topics[i]);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    rd_kafka_AdminOptions_set_request_timeout(opt, (int)k->connect_timeout_ms, NULL, 0);
    rd_kafka_DescribeConfigs(rk, res, n, opt, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, (int)k->connect_timeout_ms + 5000);
    if (!ev || rd_kafka_event_error(ev)) {
        v->unverified = sk_asprintf("DescribeConfigs: %s",
                                    ev ? rd_kafka_event_error_string(ev) : "timed out");
    } else {
        size_t cnt, n_refused = 0, n_short = 0;
        const rd_kafka_ConfigResource_t **got = rd_kafka_DescribeConfigs_result_resources(
            rd_kafka_event_DescribeConfigs_result(ev), &cnt);
        struct sk_buf refused = {0}, short_tomb = {0};
        for (size_t i = 0; i < cnt; i++) {
            if (!rd_kafka_ConfigResource_error(got[i]))
                judge_topic(got[i], k->tombstone_retention_ms, &refused, &n_refused, &short_tomb,
                            &n_short);
            else if (!v->unverified)
                v->unverified = sk_asprintf("%s: %s", rd_kafka_ConfigResource_name(got[i]),
                                            rd_kafka_ConfigResource_error_string(got[i]));
        }
        if (n_refused)
            v->refused = sk_asprintf(
                "%zu topic(s) delete old records: a new target would not get the current "
                "state from them, nor a sink behind them every deletion. Make them compacted "
                "(kafka-configs.sh --alter --entity-type topics --entity-name TOPIC "
                "--add-config cleanup.policy=compact): %s",
                n_refused, refused.p);
        if (n_short)
            v->short_tombstones = sk_asprintf(
                "%zu topic(s) keep a deletion for less than kafka.tombstone_retention (%lld "
                "ms): a sink further behind may never see it (kafka-configs.sh --alter "
                "--entity-type topics --entity-name TOPIC --add-config delete.retention.ms=%lld): "
                "%s",
                n_short, (long long)k->tombstone_retention_ms,
                (long long)k->tombstone_retention_ms, short_tomb.p);
        sk_buf_free(&refused);
        sk_buf_free(&short_tomb);
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(opt);
    rd_kafka_queue_destroy(q);
    for (size_t i = 0; i < n; i++)
        rd_kafka_ConfigResource_destroy(res[i]);
    free(res);
    return v->refused ? -1 : 0;
}

void sk_topic_verdict_free(struct sk_topic_verdict *v)
{
    free(v->refused);
    free(v->short_tombstones);
    free(v->unverified);
    *v = (struct sk_topic_verdict){0};
}

/* ---- existing topics whose keys moved -------------------------------------- */

#define PLACEMENT_SAMPLE 16     /* records read from the start of each partition */
#define PLACEMENT_READ_MS 5000L /* for all of them */

struct placement_part {
    const char *topic;
    int32_t partition, count; /* count: the topic's partitions */
    int seen;
    bool done;
};

/* kafka.h */
sk_kafka_place_fn *sk_kafka_placement(const struct sk_kafka *k)
{
    for (size_t i = 0; i < k->properties.n; i++) {
        if (strcmp(k->properties.keys[i], "partitioner") != 0)
            continue;
        const char *v = k->properties.values[i];
        if (strncmp(v, "murmur2", 7) == 0)
            return rd_kafka_msg_partitioner_murmur2;
        if (strncmp(v, "fnv1a", 5) == 0)
            return rd_kafka_msg_partitioner_fnv1a;
        if (strcmp(v, "random") == 0)
            return NULL;
    }
    return rd_kafka_msg_partitioner_consistent; /* consistent(_random), for a key */
}

/*
 * sk_kafka_misplaced_keys (kafka.h): a record whose key the producer's
 * partitioner (librdkafka's default,
 * CRC32 of the key modulo the partition count) puts in another partition
 * than the one it is in: partitions were added to the topic after records
 * were written, or a producer partitions keys otherwise (Java's murmur2).
 * The key's last record is then in two partitions, which compaction never
 * reconciles, and a target that replays the topic may apply an old value
 * after the deletion that followed it. The first records of each partition
 * of the existing entity topics are read (they are the oldest a compacted
 * topic keeps). Returns the verdict (caller frees) or NULL; a topic that
 * cannot be read is warned about, not refused.
 */
char *sk_kafka_misplaced_keys(const struct sk_kafka *k, const char *const *topics, size_t n)
{
    sk_kafka_place_fn *place = sk_kafka_placement(k);
    if (!place)
        return NULL;
    struct sk_error err = {0};
    /* a reader (reader_new) that asks little of each partition: 16 records,
     * not a megabyte each of a large topic */
    static const char *const conf_kv[] = {"fetch.wait.max.ms", "10",
                                          "max.partition.fetch.bytes", "16384",
                                          "isolation.level", "read_committed",
                                          "enable.partition.eof", "true",
                                          "enable.auto.commit", "false",
                                          "auto.offset.reset", "earliest",
                                          "group.id", "skolsync-reader",
                                          NULL};
    rd_kafka_conf_t *conf = sk_kafka_conf_new(k, "skolsync-placement", conf_kv, &err);
    rd_kafka_t *rk = conf ? sk_kafka_new(RD_KAFKA_CONSUMER, conf, SK_ERR_RETRIABLE, &err) : NULL;
    if (!rk) {
        sk_warn("kafka", "cannot check where the existing topics keep their keys: %s", err.msg);
        return NULL;
    }
    rd_kafka_topic_t **rkts = sk_calloc(n, sizeof(*rkts));
    for (size_t i = 0; i < n; i++)
        rkts[i] = rd_kafka_topic_new(rk, topics[i], NULL);
    struct placement_part *parts = NULL;
    size_t n_parts = 0, cap = 0;
    rd_kafka_topic_partition_list_t *assign = rd_kafka_topic_partition_list_new(16);
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(rk, 0, NULL, &md, (int)k->connect_timeout_ms) == 0 && md) {
        for (int t = 0; t < md->topic_cnt; t++) {
            const struct rd_kafka_metadata_topic *mt = &md->topics[t];
            for (size_t i = 0; i < n && !mt->err && mt->partition_cnt > 1; i++) {
                if (strcmp(mt->topic, topics[i]) != 0)
                    continue;
                for (int p = 0; p < mt->partition_cnt; p++) {
                    if (n_parts == cap) {
                        cap = cap ? cap * 2 : 64;
                        parts = sk_realloc(parts, cap * sizeof(*parts));
                    }
                    parts[n_parts++] = (struct placement_part){topics[i], p, mt->partition_cnt};
                    rd_kafka_topic_partition_list_add(assign, topics[i], p);
                }
            }
        }
        rd_kafka_metadata_destroy(md);
    }
    /* partitions that never held a record have nothing to read: not assigned
     * (their end would come only with a fetch that finds nothing) */
    size_t left = n_parts;
    if (assign->cnt && sk_kafka_list_offsets(rk, assign, RD_KAFKA_OFFSET_END, 5000) == 0) {
        rd_kafka_topic_partition_list_t *some = rd_kafka_topic_partition_list_new(assign->cnt);
        for (int i = 0; i < assign->cnt; i++) {
            if (assign->elems[i].offset > 0) {
                rd_kafka_topic_partition_list_add(some, assign->elems[i].topic,
                                                  assign->elems[i].partition)
                    ->offset = 0;
                continue;
            }
            for (size_t j = 0; j < n_parts; j++)
                if (parts[j].partition == assign->elems[i].partition &&
                    strcmp(parts[j].topic, assign->elems[i].topic) == 0 && !parts[j].done) {
                    parts[j].done = true;
                    left--;
                }
        }
        rd_kafka_topic_partition_list_destroy(assign);
        assign = some;
    } else {
        for (int i = 0; i < assign->cnt; i++)
            assign->elems[i].offset = 0;
    }
    /* (from 0, not BEGINNING, a round trip more per partition: a compacted
     * log starts there unless records were deleted, and then
     * auto.offset.reset=earliest takes the first that is left) */
    struct sk_buf found = {0};
    size_t n_found = 0;
    if (assign->cnt && rd_kafka_assign(rk, assign) == 0) {
        int64_t deadline = sk_mono_ms() + PLACEMENT_READ_MS;
        while (left && sk_mono_ms() < deadline) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
            if (!m)
                continue;
            struct placement_part *pp = NULL;
            for (size_t i = 0; m->rkt && i < n_parts && !pp; i++)
                if (parts[i].partition == m->partition &&
                    strcmp(parts[i].topic, rd_kafka_topic_name(m->rkt)) == 0)
                    pp = &parts[i];
            if (pp && !pp->done) {
                char control[8];
                bool eof = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
                if (!m->err && m->key_len > 0 &&
                    sk_kafka_header(m, SK_CONTROL_HEADER, control, sizeof(control)) != 0) {
                    int32_t want = place(NULL, m->key, m->key_len, pp->count, NULL, NULL);
                    if (want != pp->partition && n_found++ < 3)
                        sk_buf_printf(&found, "%s%s[%d]@%lld key %.*s (%d partitions: its place "
                                      "is %d)",
                                      n_found > 1 ? "; " : "", pp->topic, (int)pp->partition,
                                      (long long)m->offset,
                                      (int)(m->key_len > 64 ? 64 : m->key_len),
                                      (const char *)m->key, (int)pp->count, (int)want);
                }
                if (eof || (!m->err && ++pp->seen >= PLACEMENT_SAMPLE)) {
                    pp->done = true;
                    left--;
                }
            }
            rd_kafka_message_destroy(m);
        }
    }
    if (left)
        sk_warn("kafka", "where the existing topics keep their keys: %zu of %zu partition(s) "
                "not read within %ld ms",
                left, n_parts, PLACEMENT_READ_MS);
    char *verdict = NULL;
    if (n_found)
        verdict = sk_asprintf(
            "%zu record(s) of the existing topics are not in the partition their key belongs "
            "in: partitions were added after records were written (or a producer placed keys "
            "otherwise). Such a key's old record stays in its old partition for good, and a "
            "target replaying the topic can apply it after the deletion that followed it. Make "
            "the topics again: delete them (kafka-topics.sh --delete), start skolsync (it "
            "creates them with kafka.partitions), reset each source's cursor so that it "
            "publishes everything again, and empty the targets (they are filled from the "
            "topics). Found: %s",
            n_found, found.p);
    sk_buf_free(&found);
    rd_kafka_topic_partition_list_destroy(assign);
    for (size_t i = 0; i < n; i++)
        if (rkts[i])
            rd_kafka_topic_destroy(rkts[i]);
    free(rkts);
    free(parts);
    rd_kafka_consumer_close(rk);
    sk_kafka_destroy_within(rk, SK_KAFKA_DESTROY_MS, "kafka");
    return verdict;
}

/* ---- partition counts as first met ------------------------------------------ */

/* Under pins_mu: topic's pin, or NULL. */
static struct pin *pin_of(struct sk_kafka *k, const char *topic)
{
    for (size_t i = 0; i < k->n_pins; i++)
        if (strcmp(k->pins[i].topic, topic) == 0)
            return &k->pins[i];
    return NULL;
}

/* kafka.h */
int sk_kafka_pin(struct sk_kafka *k, const char *topic, int count)
{
    pthread_mutex_lock(&k->pins_mu);
    struct pin *p = pin_of(k, topic);
    if (!p && count > 0) {
        if (k->n_pins == k->cap_pins) {
            k->cap_pins = k->cap_pins ? k->cap_pins * 2 : 32;
            k->pins = sk_realloc(k->pins, k->cap_pins * sizeof(*k->pins));
        }
        p = &k->pins[k->n_pins++];
        *p = (struct pin){sk_strdup(topic), count, 0};
    }
    int pinned = p ? p->count : 0;
    pthread_mutex_unlock(&k->pins_mu);
    return pinned;
}

/* kafka.h */
void sk_kafka_pin_seen(struct sk_kafka *k, const char *topic, int count)
{
    pthread_mutex_lock(&k->pins_mu);
    struct pin *p = pin_of(k, topic);
    if (p && count > 0 && count != p->count && count != p->now) {
        p->now = count;
        atomic_fetch_add(&k->pins_moved, 1);
    }
    pthread_mutex_unlock(&k->pins_mu);
}

/* kafka.h */
unsigned sk_kafka_pins_moved(struct sk_kafka *k)
{
    return atomic_load(&k->pins_moved);
}

/* kafka.h */
void sk_kafka_moved_why(char *buf, size_t size, const char *topic, int first, int now)
{
    snprintf(buf, size,
             "%s has %d partition(s) now, %d when this node first met it: its keys would move, "
             "and compaction never reconciles a key's records in two partitions (a replaying "
             "target could apply an old one last). This node neither writes nor applies it any "
             "more. Stop every node, delete the entity topics, start again (they are made "
             "anew), reset each source's cursor, empty the targets (docs/architecture.md, "
             "\"Keys where they belong\")",
             topic, now, first);
}

/* kafka.h */
bool sk_kafka_moved(struct sk_kafka *k, const char *topic, char *buf, size_t size)
{
    pthread_mutex_lock(&k->pins_mu);
    struct pin *p = pin_of(k, topic);
    bool moved = p && p->now;
    if (moved)
        sk_kafka_moved_why(buf, size, topic, p->count, p->now);
    pthread_mutex_unlock(&k->pins_mu);
    return moved;
}

/* Pins the topics' counts as the broker gives them now (one metadata request
 * over rk); a topic it does not answer for is pinned by its first user. */
static void pin_from_metadata(struct sk_kafka *k, rd_kafka_t *rk, const char *const *topics,
                              size_t n)
{
    rd_kafka_topic_t **rkts = sk_calloc(n + 1, sizeof(*rkts));
    for (size_t i = 0; i < n; i++) /* known to the client: asked for below */
        rkts[i] = rd_kafka_topic_new(rk, topics[i], NULL);
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(rk, 0, NULL, &md, (int)k->connect_timeout_ms) == 0 && md) {
        for (int t = 0; t < md->topic_cnt; t++)
            for (size_t i = 0; i < n && !md->topics[t].err; i++)
                if (strcmp(md->topics[t].topic, topics[i]) == 0)
                    sk_kafka_pin(k, topics[i], md->topics[t].partition_cnt);
        rd_kafka_metadata_destroy(md);
    }
    for (size_t i = 0; i < n; i++)
        if (rkts[i])
            rd_kafka_topic_destroy(rkts[i]);
    free(rkts);
}

/* A topic to create: its name, cleanup policy and partitions. */
struct topic_spec {
    const char *name;
    bool compact;
    int partitions;
};

/*
 * Creates the topics that are missing, in one request over rk, and waits
 * for the leaders of those it created. With `verify`, the compacted ones
 * that existed already must keep every key's last record for good (the
 * entity and cursor topics: what a new target replays; the ownership topic
 * holds no records and is not verified).
 */
static int create_topics(struct sk_kafka *k, rd_kafka_t *rk, const struct topic_spec *t, size_t n,
                         bool verify, struct sk_error *err)
{
    int rc = 0;
    char errstr[512];
    rd_kafka_NewTopic_t **nt = sk_calloc(n, sizeof(*nt));
    const char **names = sk_calloc(n, sizeof(*names));
    const char **existing = sk_calloc(n, sizeof(*existing));
    size_t n_existing = 0;
    for (size_t i = 0; i < n; i++) {
        names[i] = t[i].name;
        nt[i] = rd_kafka_NewTopic_new(t[i].name, t[i].partitions, (int)k->replication_factor,
                                      errstr, sizeof(errstr));
        if (!nt[i]) {
            rc = sk_error_set(err, SK_ERR_FATAL, "topic %s: %s", t[i].name, errstr);
            goto out;
        }
        sk_kafka_topic_settings(k, nt[i], t[i].compact);
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(opt, 30000, NULL, 0);
    rd_kafka_AdminOptions_set_request_timeout(opt, (int)k->connect_timeout_ms, NULL, 0);
    rd_kafka_CreateTopics(rk, nt, n, opt, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, (int)k->connect_timeout_ms + 5000);
    if (!ev) {
        rc = sk_error_set(err, SK_ERR_RETRIABLE, "creating topics timed out");
    } else if (rd_kafka_event_error(ev)) {
        rc = sk_error_set(err, SK_ERR_RETRIABLE, "creating topics: %s",
                          rd_kafka_event_error_string(ev));
    } else {
        const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
        size_t cnt;
        const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &cnt);
        size_t created = 0;
        for (size_t i = 0; i < cnt && rc == 0; i++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
            const char *name = rd_kafka_topic_result_name(tr[i]);
            if (e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                for (size_t j = 0; j < n && verify; j++)
                    if (t[j].compact && strcmp(t[j].name, name) == 0)
                        existing[n_existing++] = t[j].name;
                continue;
            }
            if (e) {
                rc = sk_error_set(err, SK_ERR_FATAL, "cannot create topic %s: %s", name,
                                  rd_kafka_topic_result_error_string(tr[i]));
                continue;
            }
            created++;
            for (size_t j = 0; j < n; j++) {
                if (strcmp(t[j].name, name) != 0)
                    continue;
                sk_info("kafka", "created topic %s (%s, %d partitions)", name,
                        t[j].compact ? "compacted" : "delete", t[j].partitions);
                if (verify && t[j].compact) /* made with it: no need to ask */
                    sk_kafka_pin(k, name, t[j].partitions);
            }
        }
        if (rc == 0 && created)
            await_leaders(rk, names, n, 10000);
    }
    /* made by someone else (an operator, a cluster's defaults): they must
     * keep every key's last record as the ones made here do. Asked only when
     * some existed: a first start pays no round trip for it (a restart ~10 ms) */
    struct sk_topic_verdict v = {0};
    if (rc == 0 && sk_kafka_check_topics(rk, k, existing, n_existing, &v)) {
        if (strlen(v.refused) >= sizeof(err->msg)) /* the error would be cut: whole here */
            sk_error_log("kafka", "%s", v.refused);
        rc = sk_error_set(err, SK_ERR_FATAL, "%s", v.refused);
    }
    /* the compacted ones that existed: their counts as the broker has them
     * (a first start made every one and asks nothing) */
    if (rc == 0 && n_existing)
        pin_from_metadata(k, rk, existing, n_existing);
    /* and every key in the partition the producers put it in (entity
     * topics: the cursor topic has one partition) */
    char *moved = rc == 0 && n_existing ? sk_kafka_misplaced_keys(k, existing, n_existing) : NULL;
    if (moved) {
        if (strlen(moved) >= sizeof(err->msg))
            sk_error_log("kafka", "%s", moved);
        rc = sk_error_set(err, SK_ERR_FATAL, "%s", moved);
        free(moved);
    }
    if (v.short_tombstones)
        sk_warn("kafka", "%s", v.short_tombstones);
    if (v.unverified)
        sk_warn("kafka",
                "cannot tell whether the existing topics are compacted (%s): a topic with "
                "cleanup.policy=delete loses entities and deletions past its retention",
                v.unverified);
    sk_topic_verdict_free(&v);
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(opt);
    rd_kafka_queue_destroy(q);
out:
    for (size_t i = 0; i < n; i++)
        if (nt[i])
            rd_kafka_NewTopic_destroy(nt[i]);
    free(nt);
    free(names);
    free(existing);
    return rc;
}

int sk_kafka_ensure_topics(struct sk_kafka *k, const char *const *topics, size_t n, bool compact,
                           int partitions, struct sk_error *err)
{
    if (n == 0)
        return 0;
    if (partitions <= 0)
        partitions = k->partitions;
    if (k->embedded)
        return mock_create_topics(k, topics, n, partitions, err);
    rd_kafka_t *rk = admin_client(k, err);
    if (!rk)
        return -1;
    struct topic_spec *t = sk_calloc(n, sizeof(*t));
    for (size_t i = 0; i < n; i++)
        t[i] = (struct topic_spec){.name = topics[i], .compact = compact, .partitions = partitions};
    int rc = create_topics(k, rk, t, n, false, err);
    free(t);
    rd_kafka_destroy(rk);
    return rc;
}

/*
 * Where the embedded broker keeps its state: kafka.embedded_dir, else under
 * systemd's StateDirectory= ($STATE_DIRECTORY, the first of a list). NULL:
 * memory only. Caller frees.
 */
static char *embedded_dir(const struct sk_kafka_conf *conf)
{
    if (conf->embedded_dir)
        return strcmp(conf->embedded_dir, "off") == 0 ? NULL : sk_strdup(conf->embedded_dir);
    const char *state = getenv("STATE_DIRECTORY");
    if (!state || !*state)
        return NULL;
    size_t len = strcspn(state, ":");
    return sk_asprintf("%.*s/embedded", (int)len, state);
}

static int start_embedded(struct sk_kafka *k, const struct sk_kafka_conf *kconf,
                          struct sk_error *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512];
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set(conf, "client.id", "skolsync-embedded-broker", NULL, 0);
    /* it only hosts the mock cluster: no "no bootstrap.servers" notice */
    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
    k->mock_holder = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!k->mock_holder) {
        rd_kafka_conf_destroy(conf);
        return sk_error_set(err, SK_ERR_FATAL, "cannot start the embedded broker: %s", errstr);
    }
    k->mock = rd_kafka_mock_cluster_new(k->mock_holder, k->embedded_brokers);
    if (!k->mock)
        return sk_error_set(err, SK_ERR_FATAL, "cannot start the embedded broker");
    k->bootstrap = sk_strdup(rd_kafka_mock_cluster_bootstraps(k->mock));
    char *dir = embedded_dir(kconf);
    if (dir) {
        /* Restored before any topic is created or any client connects
         * (docs/architecture.md §5.8); the incarnation is the store's (§5.9). */
        int rc = sk_estore_open(k, dir, &k->store, err);
        free(dir);
        if (rc)
            return -1;
        k->incarnation = sk_strdup(sk_estore_incarnation(k->store));
        sk_info("kafka", "using the embedded broker at %s (one process, no replication)",
                k->bootstrap);
        return 0;
    }
    /* The embedded broker's data dies with the process: a fresh incarnation id
     * per process makes sinks distrust offsets stored under an earlier one. */
    char uuid[37];
    sk_uuid_random(uuid);
    k->incarnation = sk_asprintf("embedded-%s", uuid);
    sk_warn("kafka",
            "using the embedded broker at %s: data is kept in memory only and lost at exit "
            "(set kafka.embedded_dir to keep it, kafka.brokers for production)",
            k->bootstrap);
    return 0;
}

struct sk_kafka *sk_kafka_describe(const struct sk_kafka_conf *conf)
{
    struct sk_kafka *k = sk_calloc(1, sizeof(*k));
    pthread_mutex_init(&k->pins_mu, NULL);
    k->prefix = sk_strdup(conf->topic_prefix ? conf->topic_prefix : "skolsync.");
    k->deployment =
        conf->deployment ? sk_strdup(conf->deployment) : sk_name_default_deployment(k->prefix);
    k->node = conf->node_name ? sk_strdup(conf->node_name) : sk_name_default_node();
    k->names = (struct sk_names){k->deployment, k->node};
    k->partitions = (int)(conf->partitions > 0 ? conf->partitions : 3);
    k->replication_factor = (int)(conf->replication_factor > 0 ? conf->replication_factor : 1);
    k->exactly_once = conf->exactly_once;
    k->embedded_brokers = (int)(conf->embedded_brokers > 0 ? conf->embedded_brokers : 1);
    k->connect_timeout_ms = conf->connect_timeout_ms > 0 ? conf->connect_timeout_ms : 30000;
    k->tombstone_retention_ms =
        conf->tombstone_retention_ms > 0 ? conf->tombstone_retention_ms : 7 * 86400000LL;
    /* librdkafka keeps histograms per broker and topic for its statistics
     * once they are on (bench/analysis.md §11: 0.4 MB per pair of clients) */
    snprintf(k->statistics, sizeof(k->statistics), "%lld",
             (long long)(conf->statistics_ms > 0 ? conf->statistics_ms : 0));
    k->cursor_topic = sk_asprintf("%s_cursors", k->prefix);
    k->dlq_topic = sk_asprintf("%s_dlq", k->prefix);
    k->properties.n = conf->properties.n;
    k->properties.keys = sk_calloc(conf->properties.n + 1, sizeof(char *));
    k->properties.values = sk_calloc(conf->properties.n + 1, sizeof(char *));
    for (size_t i = 0; i < conf->properties.n; i++) {
        k->properties.keys[i] = sk_strdup(conf->properties.keys[i]);
        k->properties.values[i] = sk_strdup(conf->properties.values[i]);
    }
    k->embedded = !conf->brokers || strcmp(conf->brokers, "embedded") == 0;
    if (!k->embedded)
        k->bootstrap = sk_strdup(conf->brokers);
    return k;
}

int sk_kafka_start(const struct sk_kafka_conf *conf, const char *const *collections, size_t n,
                   struct sk_kafka **out, struct sk_error *err)
{
    struct sk_kafka *k = sk_kafka_describe(conf);
    rd_kafka_t *admin = NULL;
    if (k->embedded) {
        if (start_embedded(k, conf, err))
            goto fail;
    } else {
        if (fetch_cluster_id(k, &admin, err))
            goto fail;
        sk_info("kafka", "connected to cluster %s at %s (%s)", k->incarnation, k->bootstrap,
                sk_kafka_transactional(k) ? "transactions on" : "at-least-once");
    }

    char **topics = sk_calloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        topics[i] = sk_kafka_topic_for(k, collections[i]);
    int rc;
    if (k->embedded) {
        const char *cursor[] = {k->cursor_topic};
        const char *dlq[] = {k->dlq_topic};
        rc = sk_kafka_ensure_topics(k, (const char *const *)topics, n, true, 0, err);
        if (!rc)
            rc = sk_kafka_ensure_topics(k, cursor, 1, true, 1, err);
        if (!rc)
            rc = sk_kafka_ensure_topics(k, dlq, 1, false, 1, err);
    } else {
        /* One request over the client that found the cluster: a client and
         * a round of leader waits per kind of topic cost ~0.3 s of start-up. */
        struct topic_spec *t = sk_calloc(n + 2, sizeof(*t));
        for (size_t i = 0; i < n; i++)
            t[i] = (struct topic_spec){topics[i], true, (int)k->partitions};
        t[n] = (struct topic_spec){k->cursor_topic, true, 1};
        t[n + 1] = (struct topic_spec){k->dlq_topic, false, 1};
        rc = create_topics(k, admin, t, n + 2, true, err);
        free(t);
        rd_kafka_destroy(admin);
    }
    for (size_t i = 0; i < n; i++)
        free(topics[i]);
    free(topics);
    if (!rc && k->store)
        rc = sk_estore_start(k->store, err); /* every topic exists now */
    if (rc)
        goto fail;
    k->sprod = sk_sprod_new(k); /* its client is made by the first source */
    *out = k;
    return 0;
fail:
    sk_kafka_destroy(k);
    return -1;
}

void sk_kafka_destroy(struct sk_kafka *k)
{
    if (!k)
        return;
    sk_sprod_free(k->sprod);   /* a client of the mock, if embedded: before it goes */
    sk_estore_close(k->store); /* its last round reads the mock: before it goes */
    if (k->mock)
        rd_kafka_mock_cluster_destroy(k->mock);
    if (k->mock_holder)
        rd_kafka_destroy(k->mock_holder);
    for (size_t i = 0; i < k->properties.n; i++) {
        free(k->properties.keys[i]);
        free(k->properties.values[i]);
    }
    free(k->properties.keys);
    free(k->properties.values);
    free(k->bootstrap);
    free(k->prefix);
    free(k->deployment);
    free(k->node);
    free(k->incarnation);
    free(k->cursor_topic);
    free(k->dlq_topic);
    for (size_t i = 0; i < k->n_pins; i++)
        free(k->pins[i].topic);
    free(k->pins);
    pthread_mutex_destroy(&k->pins_mu);
    free(k);
}

int sk_kafka_header(const rd_kafka_message_t *m, const char *name, char *buf, size_t size)
{
    rd_kafka_headers_t *hdrs;
    if (rd_kafka_message_headers(m, &hdrs))
        return -1;
    const void *val;
    size_t len;
    if (rd_kafka_header_get_last(hdrs, name, &val, &len))
        return -1;
    if (len >= size)
        len = size - 1;
    if (val) /* a header without a value reads as "" */
        memcpy(buf, val, len);
    buf[len] = '\0';
    return 0;
}

/* ---- a destroy that may not return ------------------------------------------ */

struct destroy_job {
    rd_kafka_t *rk;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done, abandoned;
};

static void destroy_job_free(struct destroy_job *j)
{
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

static void *destroy_thread(void *arg)
{
    struct destroy_job *j = arg;
    rd_kafka_destroy(j->rk);
    pthread_mutex_lock(&j->mu);
    j->done = true;
    bool abandoned = j->abandoned;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    if (abandoned) /* nobody waits: it is ours to free */
        destroy_job_free(j);
    return NULL;
}

bool sk_kafka_destroy_within(rd_kafka_t *rk, int64_t timeout_ms, const char *who)
{
    struct destroy_job *j = sk_calloc(1, sizeof(*j));
    j->rk = rk;
    pthread_mutex_init(&j->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_t t;
    if (sk_thread_start(&t, destroy_thread, j, "rdk-destroy", NULL)) {
        rd_kafka_destroy(rk); /* no thread to be had: here, unbounded */
        destroy_job_free(j);
        return true;
    }
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&j->mu);
    while (!j->done && pthread_cond_timedwait(&j->cv, &j->mu, &until) == 0)
        ;
    bool done = j->done;
    if (!done)
        j->abandoned = true;
    pthread_mutex_unlock(&j->mu);
    if (done) {
        pthread_join(t, NULL);
        destroy_job_free(j);
        return true;
    }
    pthread_detach(t);
    sk_error_log(who,
                 "librdkafka did not release its Kafka client within %lld s: left behind, "
                 "still waiting (2.0.2 can wait for ever once a topic was deleted under it, "
                 "confluentinc/librdkafka#3954); the connector goes on without it",
                 (long long)(timeout_ms / 1000));
    return false;
}

rd_kafka_t *sk_kafka_client_new(rd_kafka_type_t type, rd_kafka_conf_t *conf,
                                int (*stats)(rd_kafka_t *, char *, size_t, void *), void *opaque,
                                struct sk_error *err)
{
    rd_kafka_conf_set_stats_cb(conf, stats);
    rd_kafka_conf_set_opaque(conf, opaque);
    return sk_kafka_new(type, conf, SK_ERR_FATAL, err);
}
