/* shared_producer.c: one Kafka producer for every source of a node. See shared_producer.h. */
#include "shared_producer.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka.h"
#include "log.h"
#include "model.h"
#include "names.h"
#include "runner.h"
#include "util.h"

/* Topic handles: the entity topics, the cursor and the dead-letter topic. */
#define TOPICS_MAX (SK_ENTITY_COUNT + 2)
/* How long a leaving member waits for its messages in flight. */
#define LEAVE_WAIT_MS 10000

/*
 * A keyed topic's partition count as the node first met it (sk_kafka_pin: at
 * its start), or else as its producer first placed a key in it. Partitions
 * added while the daemon runs (or a topic made again with another count)
 * would move keys: the producer, once its metadata shows the new count, would
 * write a key's next record to another partition than its earlier ones, where
 * compaction never reconciles them (a target replaying the topic can apply
 * the old one last). The guard's partitioner refuses such a record instead
 * (no such partition); the source fails loudly (sk_sprod_moved), and the
 * node's sinks of the topic fail too (sk_kafka_pin_seen). Kept for the
 * producer's life, across its clients; a topic past the TOPICS_MAX first ones
 * (a changed topic_prefix) has none.
 */
struct topic_guard {
    char *topic;
    sk_kafka_place_fn *place;
    _Atomic int32_t count;    /* as first met; 0 before that */
    _Atomic int32_t moved_to; /* the other count met since; 0 while none */
};

struct sk_sprod {
    struct sk_kafka *kafka;
    /* The client: used under the read lock, made and replaced under the write lock. */
    pthread_rwlock_t rw;
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkts[TOPICS_MAX];
    bool txn;
    /* Everything below under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t gen;     /* bumped with each new client */
    char broken[512]; /* why the client cannot go on; "" while it can */
    struct sk_sprod_member *members;
    struct sk_sprod_member *orphans; /* left with messages in flight: freed with the client */
    sk_sprod_fence_fn fence;
    void *fence_ctx;
    char *fence_topic;
    /* The open transaction. */
    uint64_t last_seq;              /* the newest transaction's number */
    uint64_t resolved_seq;          /* every transaction up to this one ended */
    bool open;                      /* last_seq is open */
    bool closing;                   /* a member waits to end it: no new batch may enter */
    bool committing;                /* a member is ending it */
    bool doomed;                    /* a batch in it failed: it is aborted, whoever ends it */
    struct sk_error doom;           /* why */
    int producing;                  /* members producing into it now */
    struct sk_sprod_member **parts; /* its participants */
    size_t n_parts, cap_parts;
    struct topic_guard guards[TOPICS_MAX];
    struct sk_log_limit error_log; /* the client's errors */
};

/* librdkafka's partitioner callback, under the topic's lock: atomics only. */
static int32_t guarded_place(const rd_kafka_topic_t *rkt, const void *key, size_t keylen,
                             int32_t partition_cnt, void *rkt_opaque, void *msg_opaque)
{
    struct topic_guard *g = rkt_opaque;
    int32_t first = atomic_load_explicit(&g->count, memory_order_relaxed);
    if (first == 0 && atomic_compare_exchange_strong(&g->count, &first, partition_cnt))
        first = partition_cnt; /* the first record: its count is the topic's */
    if (first != partition_cnt) {
        atomic_store(&g->moved_to, partition_cnt);
        return partition_cnt; /* no such partition: the record is refused */
    }
    return g->place(rkt, key, keylen, partition_cnt, rkt_opaque, msg_opaque);
}

/* Under mu: the topic conf of a new handle of topic (its guard's), or NULL for the default. */
static rd_kafka_topic_conf_t *guarded_conf(struct sk_sprod *sp, const char *topic)
{
    sk_kafka_place_fn *place = sk_kafka_placement(sp->kafka);
    if (!place || strcmp(topic, sk_kafka_dlq_topic(sp->kafka)) == 0)
        return NULL; /* keys have no place, or it need not keep them (no compaction) */
    struct topic_guard *g = NULL;
    for (int i = 0; i < TOPICS_MAX && !g; i++)
        if (!sp->guards[i].topic || strcmp(sp->guards[i].topic, topic) == 0)
            g = &sp->guards[i];
    if (!g)
        return NULL;
    if (!g->topic) {
        g->topic = sk_strdup(topic);
        g->place = place;
        /* the count the node met at its start, if it did */
        atomic_store(&g->count, sk_kafka_pin(sp->kafka, topic, 0));
    }
    rd_kafka_topic_conf_t *tc = rd_kafka_default_topic_conf_dup(sp->rk);
    if (!tc)
        return NULL;
    rd_kafka_topic_conf_set_partitioner_cb(tc, guarded_place);
    rd_kafka_topic_conf_set_opaque(tc, g);
    return tc;
}

bool sk_sprod_moved(struct sk_sprod_member *m, char *buf, size_t size)
{
    if (!m)
        return false;
    struct sk_sprod *sp = m->sp;
    bool moved = false;
    pthread_mutex_lock(&sp->mu);
    for (int i = 0; i < TOPICS_MAX && sp->guards[i].topic && !moved; i++) {
        struct topic_guard *g = &sp->guards[i];
        int32_t now = atomic_load(&g->moved_to);
        if (!now)
            continue;
        moved = true;
        int first = atomic_load(&g->count);
        sk_kafka_moved_why(buf, size, g->topic, first, now);
        /* the node's sinks stop applying it too */
        sk_kafka_pin(sp->kafka, g->topic, first);
        sk_kafka_pin_seen(sp->kafka, g->topic, now);
    }
    pthread_mutex_unlock(&sp->mu);
    return moved;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct sk_sprod *sp = opaque;
    struct sk_sprod_delivery *d = m->_private;
    if (!d)
        return;
    struct sk_sprod_member *mb = d->member;
    rd_kafka_resp_err_t e = m->err;
    /* A delivery without an offset is one librdkafka inferred: a later
     * request of the same idempotent producer was acknowledged, so a broker
     * must have written the earlier ones. The embedded broker (librdkafka's
     * mock cluster) does not check sequence numbers as a broker does: after a
     * leader move it took a later request while an earlier one had been
     * refused, and 107 records reported delivered were never written
     * (kafka_faults::leader_moves). There such a delivery does not count:
     * the batch is sent again (at least once, rule 2). */
    if (!e && m->offset < 0 && sk_kafka_embedded(sp->kafka))
        e = RD_KAFKA_RESP_ERR__INCONSISTENT;
    if (m->err) {
        pthread_mutex_lock(&mb->mu);
        if (mb->ctx && mb->report)
            mb->report(mb->ctx, m);
        pthread_mutex_unlock(&mb->mu);
    }
    if (e && atomic_fetch_add(&d->failed, 1) == 0)
        atomic_store(&d->first_err, (int)e);
    atomic_fetch_sub(&d->pending, 1); /* last: the member may go once nothing is pending */
}

/* The client's own errors (a broker down): counted for every source on it
 * (skolsync_kafka_errors_total) and logged once, under "sources", at most
 * once per interval (as the sinks' shared consumer does, sink_hub.c): each
 * source logged them before, so 100 sources wrote 100 lines for one broker.
 * A fatal one is logged at once; each source then says what it does. */
static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct sk_sprod *sp = opaque;
    char buf[512] = "";
    bool fatal = err == RD_KAFKA_RESP_ERR__FATAL;
    if (fatal)
        rd_kafka_fatal_error(rk, buf, sizeof(buf));
    size_t n = 0;
    pthread_mutex_lock(&sp->mu);
    for (struct sk_sprod_member *m = sp->members; m; m = m->next, n++)
        atomic_fetch_add(&m->runner->kafka_errors, 1);
    pthread_mutex_unlock(&sp->mu);
    if (fatal)
        sk_error_log("sources", "fatal producer error (%zu source(s) on it): %s", n, buf);
    else
        sk_log_limited(&sp->error_log, SK_KAFKA_ERROR_INTERVAL_MS, SK_LOG_WARN, "sources",
                       "kafka: %s", reason);
}

static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    struct sk_sprod *sp = opaque;
    struct sk_kafka_stats st; /* parsed once for every source on the client */
    sk_kafka_stats_parse(json, len, &st);
    pthread_mutex_lock(&sp->mu);
    for (struct sk_sprod_member *m = sp->members; m; m = m->next)
        sk_runner_kafka_stats_apply(m->runner, &st);
    pthread_mutex_unlock(&sp->mu);
    return 0; /* librdkafka frees json */
}

struct sk_sprod *sk_sprod_new(struct sk_kafka *k)
{
    struct sk_sprod *sp = sk_calloc(1, sizeof(*sp));
    sp->kafka = k;
    sp->txn = sk_kafka_transactional(k);
    pthread_rwlock_init(&sp->rw, NULL);
    pthread_mutex_init(&sp->mu, NULL);
    pthread_cond_init(&sp->cv, NULL);
    return sp;
}

void sk_sprod_set_fence(struct sk_sprod *sp, sk_sprod_fence_fn fn, void *ctx, const char *topic)
{
    pthread_mutex_lock(&sp->mu);
    sp->fence = fn;
    sp->fence_ctx = ctx;
    free(sp->fence_topic);
    sp->fence_topic = topic ? sk_strdup(topic) : NULL;
    pthread_mutex_unlock(&sp->mu);
}

bool sk_sprod_transactional(const struct sk_sprod *sp)
{
    return sp->txn;
}

/* Under the write lock. */
static void client_destroy(struct sk_sprod *sp)
{
    if (!sp->rk)
        return;
    rd_kafka_purge(sp->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(sp->rk, 2000);
    for (int i = 0; i < TOPICS_MAX; i++) {
        if (sp->rkts[i])
            rd_kafka_topic_destroy(sp->rkts[i]);
        sp->rkts[i] = NULL;
    }
    sk_kafka_destroy_within(sp->rk, SK_KAFKA_DESTROY_MS, "sources' producer");
    sp->rk = NULL;
}

/* Under the write lock: a new client (transactional: initialised). */
static int client_new(struct sk_sprod *sp, struct sk_error *err)
{
    const struct sk_names *names = sk_kafka_names(sp->kafka);
    char *client_id = sk_name_client(names, "src", "sources");
    /* Tuning the user may override; the queue bound is the back-pressure
     * point: a full queue stops the sources from being polled. */
    /* clang-format off */
    const char *const defaults[] = {
        "linger.ms", "5",
        "compression.type", "lz4",
        "queue.buffering.max.kbytes", "16384",
        "queue.buffering.max.messages", "50000",
        "message.timeout.ms", SK_KAFKA_MESSAGE_TIMEOUT_MS,
        "statistics.interval.ms", sk_kafka_statistics_interval(sp->kafka),
        NULL};
    /* clang-format on */
    rd_kafka_conf_t *conf = sk_kafka_conf_new(sp->kafka, client_id, defaults, err);
    free(client_id);
    if (!conf)
        return -1;
    /* Idempotence always: no duplicates from librdkafka's own retries. */
    if (sk_kafka_conf_set(conf, "enable.idempotence", "true", err))
        goto fail;
    if (sp->txn) {
        /* Stable per node of a deployment: a restarted daemon fences its
         * zombie predecessor and aborts what it left open. */
        char *tid = sk_name_node_txn_id(names);
        int rc = sk_kafka_conf_set(conf, "transactional.id", tid, err);
        sk_info("sources", "the sources' producer: transactional id %s", tid);
        free(tid);
        if (rc || sk_kafka_conf_set(conf, "transaction.timeout.ms", "60000", err) ||
            sk_kafka_conf_set(conf, "message.timeout.ms", SK_KAFKA_MESSAGE_TIMEOUT_MS, err))
            goto fail;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_t *rk = sk_kafka_client_new(RD_KAFKA_PRODUCER, conf, stats_cb, sp, err);
    if (!rk)
        return -1;
    if (sp->txn) {
        rd_kafka_error_t *e = rd_kafka_init_transactions(rk, 30000);
        if (e) {
            sk_error_set(err, rd_kafka_error_is_retriable(e) ? SK_ERR_RETRIABLE : SK_ERR_FATAL,
                         "init_transactions: %s", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
            rd_kafka_destroy(rk);
            return -1;
        }
    }
    sp->rk = rk;
    return 0;
fail:
    rd_kafka_conf_destroy(conf);
    return -1;
}

/* Under mu: the open transaction's members learn that it ended without a commit. */
static void fail_participants(struct sk_sprod *sp, const struct sk_error *why)
{
    for (size_t i = 0; i < sp->n_parts; i++) {
        struct sk_sprod_member *p = sp->parts[i];
        if (!p->aborted)
            p->abort = *why;
        p->aborted = true;
    }
}

/* Under mu: the open transaction is over (committed or not). */
static void txn_over(struct sk_sprod *sp)
{
    sp->n_parts = 0;
    sp->open = sp->closing = sp->committing = sp->doomed = false;
    sp->resolved_seq = sp->last_seq;
    pthread_cond_broadcast(&sp->cv);
}

static void member_free(struct sk_sprod_member *m)
{
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* Under the write lock, the client gone: the members that left with messages in flight. */
static void orphans_free(struct sk_sprod *sp)
{
    while (sp->orphans) {
        struct sk_sprod_member *m = sp->orphans;
        sp->orphans = m->next;
        member_free(m);
    }
}

struct sk_sprod_member *sk_sprod_join(struct sk_sprod *sp, struct sk_runner *runner,
                                      sk_sprod_report_fn report, void *ctx, struct sk_error *err)
{
    pthread_rwlock_wrlock(&sp->rw);
    pthread_mutex_lock(&sp->mu);
    bool replace = sp->rk && sp->broken[0];
    pthread_mutex_unlock(&sp->mu);
    if (replace) {
        sk_info("sources", "a new producer for the sources (the last one: %s)", sp->broken);
        client_destroy(sp);
        orphans_free(sp);
    }
    int rc = sp->rk ? 0 : client_new(sp, err);
    pthread_mutex_lock(&sp->mu);
    if (rc == 0 && (replace || sp->gen == 0)) {
        sp->gen++;
        sp->broken[0] = '\0';
        /* the old client's transaction is gone with it */
        struct sk_error why = {.cls = SK_ERR_FATAL};
        snprintf(why.msg, sizeof(why.msg), "the sources' producer was replaced");
        fail_participants(sp, &why);
        txn_over(sp);
    }
    struct sk_sprod_member *m = NULL;
    if (rc == 0) {
        m = sk_calloc(1, sizeof(*m));
        m->sp = sp;
        pthread_mutex_init(&m->mu, NULL);
        m->ctx = ctx;
        m->report = report;
        m->runner = runner;
        m->fence_partition = -1;
        m->gen = sp->gen;
        m->group.member = m->cursor.member = m->txn.member = m;
        m->next = sp->members;
        sp->members = m;
    }
    pthread_mutex_unlock(&sp->mu);
    pthread_rwlock_unlock(&sp->rw);
    return m;
}

size_t sk_sprod_in_flight(const struct sk_sprod_member *m)
{
    return atomic_load(&m->group.pending) + atomic_load(&m->cursor.pending) +
           atomic_load(&m->txn.pending);
}

void sk_sprod_leave(struct sk_sprod_member *m)
{
    if (!m)
        return;
    struct sk_sprod *sp = m->sp;
    pthread_mutex_lock(&m->mu);
    m->ctx = NULL; /* no more reports for the source */
    pthread_mutex_unlock(&m->mu);
    /* Its reports point at it: wait for them (they come within
     * message.timeout.ms; a group ended leaves none). */
    int64_t until = sk_mono_ms() + LEAVE_WAIT_MS;
    while (sk_sprod_in_flight(m) && sk_mono_ms() < until) {
        pthread_rwlock_rdlock(&sp->rw);
        if (sp->rk)
            rd_kafka_poll(sp->rk, 100);
        pthread_rwlock_unlock(&sp->rw);
    }
    pthread_mutex_lock(&sp->mu);
    while (sp->committing) /* a commit under way may list it */
        pthread_cond_wait(&sp->cv, &sp->mu);
    for (size_t i = 0; i < sp->n_parts; i++)
        if (sp->parts[i] == m)
            sp->parts[i] = sp->parts[--sp->n_parts];
    for (struct sk_sprod_member **p = &sp->members; *p; p = &(*p)->next)
        if (*p == m) {
            *p = m->next;
            break;
        }
    bool orphan = sk_sprod_in_flight(m) > 0;
    if (orphan) {
        /* still in flight after the wait (a broker away): freeing it would
         * let a late report write into freed memory; kept until the client
         * goes (its purge reports them) */
        sk_warn(m->runner->name, "%zu message(s) still in flight as the source leaves",
                sk_sprod_in_flight(m));
        m->runner = NULL;
        m->next = sp->orphans;
        sp->orphans = m;
    }
    pthread_mutex_unlock(&sp->mu);
    if (!orphan)
        member_free(m);
}

void sk_sprod_free(struct sk_sprod *sp)
{
    if (!sp)
        return;
    pthread_rwlock_wrlock(&sp->rw);
    if (sp->rk)
        rd_kafka_flush(sp->rk, 5000);
    client_destroy(sp);
    orphans_free(sp);
    pthread_rwlock_unlock(&sp->rw);
    free(sp->parts);
    free(sp->fence_topic);
    for (int i = 0; i < TOPICS_MAX; i++)
        free(sp->guards[i].topic);
    pthread_rwlock_destroy(&sp->rw);
    pthread_mutex_destroy(&sp->mu);
    pthread_cond_destroy(&sp->cv);
    free(sp);
}

static rd_kafka_t *use_locked(struct sk_sprod_member *m, struct sk_error *err)
{
    struct sk_sprod *sp = m->sp;
    pthread_rwlock_rdlock(&sp->rw);
    if (sp->rk && sp->gen == m->gen)
        return sp->rk;
    pthread_rwlock_unlock(&sp->rw);
    sk_error_set(err, SK_ERR_FATAL, "the sources' producer was replaced");
    return NULL;
}

rd_kafka_t *sk_sprod_use(struct sk_sprod_member *m, struct sk_error *err)
{
    return use_locked(m, err);
}

void sk_sprod_unuse(struct sk_sprod_member *m)
{
    pthread_rwlock_unlock(&m->sp->rw);
}

rd_kafka_topic_t *sk_sprod_topic(struct sk_sprod_member *m, const char *topic, bool *created)
{
    struct sk_sprod *sp = m->sp;
    *created = false;
    pthread_mutex_lock(&sp->mu);
    rd_kafka_topic_t *t = NULL;
    for (int i = 0; i < TOPICS_MAX && sp->rkts[i]; i++)
        if (strcmp(rd_kafka_topic_name(sp->rkts[i]), topic) == 0)
            t = sp->rkts[i];
    for (int i = 0; !t && i < TOPICS_MAX; i++)
        if (!sp->rkts[i]) {
            t = sp->rkts[i] = rd_kafka_topic_new(sp->rk, topic, guarded_conf(sp, topic));
            *created = t != NULL;
            break;
        }
    pthread_mutex_unlock(&sp->mu);
    return t;
}

void sk_sprod_serve(struct sk_sprod *sp)
{
    pthread_rwlock_rdlock(&sp->rw);
    if (sp->rk)
        rd_kafka_poll(sp->rk, 0);
    pthread_rwlock_unlock(&sp->rw);
}

rd_kafka_resp_err_t sk_sprod_fatal(struct sk_sprod_member *m, char *buf, size_t size)
{
    struct sk_error ignored = {0};
    rd_kafka_t *rk = use_locked(m, &ignored);
    if (!rk)
        return 0;
    rd_kafka_resp_err_t e = rd_kafka_fatal_error(rk, buf, size);
    sk_sprod_unuse(m);
    return e;
}

void sk_sprod_broken(struct sk_sprod_member *m, const char *why)
{
    struct sk_sprod *sp = m->sp;
    pthread_mutex_lock(&sp->mu);
    if (sp->gen == m->gen && !sp->broken[0])
        snprintf(sp->broken, sizeof(sp->broken), "%s", why);
    pthread_mutex_unlock(&sp->mu);
}

/* ---- transactions ------------------------------------------------------------ */

void sk_sprod_group_begin(struct sk_sprod_member *m)
{
    struct sk_sprod *sp = m->sp;
    pthread_mutex_lock(&sp->mu);
    m->aborted = false;
    m->abort = (struct sk_error){0};
    m->seq = 0;
    pthread_mutex_unlock(&sp->mu);
}

/* The classes of rdkafka.h's transactional API (see source_produce.c). */
static void txn_error(rd_kafka_error_t *e, const char *what, struct sk_error *err)
{
    enum sk_err_class cls = rd_kafka_error_is_retriable(e) || rd_kafka_error_txn_requires_abort(e)
                                ? SK_ERR_RETRIABLE
                                : SK_ERR_FATAL;
    sk_error_set(err, cls, "%s: %s", what, rd_kafka_error_string(e));
    rd_kafka_error_destroy(e);
}

rd_kafka_t *sk_sprod_txn_enter(struct sk_sprod_member *m, struct sk_error *err)
{
    struct sk_sprod *sp = m->sp;
    for (;;) {
        pthread_mutex_lock(&sp->mu);
        while (sp->gen == m->gen && (sp->closing || sp->committing))
            pthread_cond_wait(&sp->cv, &sp->mu);
        pthread_mutex_unlock(&sp->mu);
        /* the client first (the lock order: rw, then mu), then the transaction */
        rd_kafka_t *rk = use_locked(m, err);
        if (!rk)
            return NULL;
        pthread_mutex_lock(&sp->mu);
        if (sp->closing || sp->committing) { /* ended meanwhile: wait again */
            pthread_mutex_unlock(&sp->mu);
            sk_sprod_unuse(m);
            continue;
        }
        if (sp->broken[0]) {
            sk_error_set(err, SK_ERR_FATAL, "the sources' producer: %s", sp->broken);
            pthread_mutex_unlock(&sp->mu);
            sk_sprod_unuse(m);
            return NULL;
        }
        if (!sp->open) {
            /* local only (no request, no callback): fine under the mutex */
            rd_kafka_error_t *e = rd_kafka_begin_transaction(rk);
            if (e) {
                /* a transaction in error, or an unfinished commit or abort:
                 * only a new client gets out of that (its init aborts it) */
                txn_error(e, "begin_transaction", err);
                err->cls = SK_ERR_FATAL;
                snprintf(sp->broken, sizeof(sp->broken), "%s", err->msg);
                pthread_mutex_unlock(&sp->mu);
                sk_sprod_unuse(m);
                return NULL;
            }
            sp->open = true;
            sp->last_seq++;
        }
        if (m->listed != sp->last_seq) {
            if (sp->n_parts == sp->cap_parts) {
                sp->cap_parts = sp->cap_parts ? 2 * sp->cap_parts : 16;
                sp->parts = sk_realloc(sp->parts, sp->cap_parts * sizeof(*sp->parts));
            }
            sp->parts[sp->n_parts++] = m;
            m->listed = sp->last_seq;
        }
        m->seq = sp->last_seq;
        sp->producing++;
        pthread_mutex_unlock(&sp->mu);
        return rk;
    }
}

void sk_sprod_txn_leave(struct sk_sprod_member *m, const struct sk_error *failed)
{
    struct sk_sprod *sp = m->sp;
    sk_sprod_unuse(m);
    pthread_mutex_lock(&sp->mu);
    if (failed && !sp->doomed) {
        /* before it can be committed with part of the batch in it */
        sp->doomed = true;
        sp->doom = *failed;
        if (sp->doom.cls == SK_ERR_NONE)
            sp->doom.cls = SK_ERR_RETRIABLE;
        snprintf(sp->doom.msg, sizeof(sp->doom.msg), "aborted with the batch of source %s: %.200s",
                 m->runner->name, failed->msg);
    }
    sp->producing--;
    pthread_cond_broadcast(&sp->cv);
    pthread_mutex_unlock(&sp->mu);
}

/* The fence (KIP-447): the sources group's partitions of the participants,
 * with the group's metadata, so a node whose generation is stale cannot commit. */
static int send_fence(struct sk_sprod *sp, const int32_t *parts, size_t n, sk_sprod_fence_fn fence,
                      void *ctx, const char *topic, struct sk_error *err)
{
    rd_kafka_consumer_group_metadata_t *md = fence(ctx);
    if (!md)
        return sk_error_set(err, SK_ERR_RETRIABLE,
                            "no commit: this node is not in the sources group now");
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, topic, parts[i])->offset = 0;
    rd_kafka_error_t *e = rd_kafka_send_offsets_to_transaction(sp->rk, l, md, 30000);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_consumer_group_metadata_destroy(md);
    if (!e)
        return 0;
    txn_error(e, "send_offsets_to_transaction (the sources group's fence)", err);
    return -1;
}

/* Ends the open transaction (the read lock held): 0 committed, else err. */
static int end_now(struct sk_sprod *sp, bool commit, const int32_t *parts, size_t n,
                   sk_sprod_fence_fn fence, void *ctx, const char *topic, struct sk_error *err)
{
    if (commit && n && fence && send_fence(sp, parts, n, fence, ctx, topic, err))
        commit = false; /* abort below, then tell err */
    for (int attempt = 0; commit; attempt++) {
        rd_kafka_error_t *e = rd_kafka_commit_transaction(sp->rk, 60000);
        if (!e)
            return 0;
        if (rd_kafka_error_is_retriable(e) && attempt < 5) {
            rd_kafka_error_destroy(e); /* resumable since 2.0.0: call again */
            continue;
        }
        bool abortable = rd_kafka_error_txn_requires_abort(e);
        txn_error(e, "commit_transaction", err);
        if (!abortable) {
            err->cls = SK_ERR_FATAL;
            return -1;
        }
        break;
    }
    rd_kafka_error_t *e = rd_kafka_abort_transaction(sp->rk, 30000);
    if (e) {
        /* An abort that did not finish (it timed out while the broker was
         * away) leaves the producer where every begin_transaction answers
         * "conflicting abort in progress"; calling the abort again until it
         * ends was seen to lose the batch that came next (test_broker_outage
         * under ASan). A new client is the safe way on: its
         * init_transactions fences this one and aborts what it left open,
         * and every source reads its cursor again from Kafka. */
        txn_error(e, "abort_transaction", err);
        err->cls = SK_ERR_FATAL;
        return -1;
    }
    if (err->cls == SK_ERR_NONE)
        err->cls = SK_ERR_RETRIABLE;
    return -1;
}

/* Under mu, the transaction open, nobody producing or ending it: ends it
 * for every participant (the mutex is let go meanwhile). why: abort. */
static void end_txn(struct sk_sprod *sp, const struct sk_error *why)
{
    sp->committing = true;
    bool commit = why == NULL && !sp->doomed;
    struct sk_error err = sp->doomed ? sp->doom : why ? *why : (struct sk_error){0};
    int32_t parts[64];
    size_t n = 0;
    for (size_t i = 0; i < sp->n_parts && n < 64; i++) {
        int32_t p = sp->parts[i]->fence_partition;
        bool seen = p < 0;
        for (size_t j = 0; j < n && !seen; j++)
            seen = parts[j] == p;
        if (!seen)
            parts[n++] = p;
    }
    sk_sprod_fence_fn fence = sp->fence;
    void *ctx = sp->fence_ctx;
    char *topic = sp->fence_topic ? sk_strdup(sp->fence_topic) : NULL;
    pthread_mutex_unlock(&sp->mu);

    pthread_rwlock_rdlock(&sp->rw);
    int rc = end_now(sp, commit, parts, n, topic ? fence : NULL, ctx, topic, &err);
    pthread_rwlock_unlock(&sp->rw);
    free(topic);

    pthread_mutex_lock(&sp->mu);
    if (rc) {
        if (err.cls == SK_ERR_FATAL && !sp->broken[0])
            snprintf(sp->broken, sizeof(sp->broken), "%s", err.msg);
        fail_participants(sp, &err);
    }
    txn_over(sp);
}

/* Under mu: waits until transaction seq ended, ending it when it is the
 * member's turn (why: abort with this reason). */
static void await_end(struct sk_sprod_member *m, uint64_t seq, const struct sk_error *why)
{
    struct sk_sprod *sp = m->sp;
    while (sp->gen == m->gen && sp->resolved_seq < seq) {
        if (sp->open && sp->last_seq == seq && !sp->committing) {
            sp->closing = true; /* no new batch enters until it ended */
            if (sp->producing == 0) {
                end_txn(sp, why);
                continue;
            }
        }
        pthread_cond_wait(&sp->cv, &sp->mu);
    }
}

int sk_sprod_txn_commit(struct sk_sprod_member *m, struct sk_error *err)
{
    struct sk_sprod *sp = m->sp;
    pthread_mutex_lock(&sp->mu);
    await_end(m, m->seq, NULL);
    int rc = 0;
    if (sp->gen != m->gen) {
        rc = sk_error_set(err, SK_ERR_FATAL, "the sources' producer was replaced");
    } else if (m->aborted) {
        *err = m->abort;
        rc = -1;
    }
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

int sk_sprod_txn_abort(struct sk_sprod_member *m, struct sk_error *err)
{
    struct sk_sprod *sp = m->sp;
    pthread_mutex_lock(&sp->mu);
    /* doomed by the member's txn_leave: ended as an abort */
    await_end(m, m->seq, sp->doomed ? &sp->doom : NULL);
    pthread_mutex_unlock(&sp->mu);
    if (err->cls == SK_ERR_NONE)
        err->cls = SK_ERR_RETRIABLE;
    return -1;
}
