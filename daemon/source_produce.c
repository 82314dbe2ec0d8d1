/*
 * source_produce.c: a source's way into Kafka: the producer (transactional
 * or not), the records of a batch with their headers, the dead letters and
 * the cursor, delivery reports, and records Kafka refuses for good
 * (docs/architecture.md §4, rules 1 and 2). The poll loop is source_driver.c's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlq.h"
#include "log.h"
#include "model.h"
#include "produce.h"
#include "snapshot.h"
#include "source_run.h"
#include "util.h"

static const char *topic_of(struct source_run *run, const struct sk_entity *e);

/*
 * librdkafka 2.0.2 learns the leaders of a topic it has not produced to only
 * at its next topic scan (about a second), and a transaction waits for that:
 * a full sync paid it once per entity type (bench/results/RESULTS.md §1).
 * Asking for a topic's metadata before its first record removes the stall:
 * at start for the cursor topic and the types the source says it writes
 * (sk_source.writes), in one request; another topic at its first record.
 * Only those: a topic handle holds a structure per partition, and a source
 * of one entity type kept 20 topics (bench/analysis.md §11). Best effort,
 * bounded: a failure only means the first batch waits.
 * i: an entity index, or SK_ENTITY_COUNT (cursors), SK_ENTITY_COUNT + 1 (DLQ).
 */
static bool topic_handle(struct source_run *run, int i)
{
    if (run->rkts[i])
        return false;
    const char *topic = i == SK_ENTITY_COUNT       ? sk_kafka_cursor_topic(run->env->kafka)
                        : i == SK_ENTITY_COUNT + 1 ? sk_kafka_dlq_topic(run->env->kafka)
                                                   : topic_of(run, sk_entities[i]);
    run->rkts[i] = rd_kafka_topic_new(run->producer, topic, NULL);
    return run->rkts[i] != NULL;
}

static void warm_topic(struct source_run *run, int i)
{
    const struct rd_kafka_metadata *md = NULL;
    if (topic_handle(run, i) &&
        rd_kafka_metadata(run->producer, 0, run->rkts[i], &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        md)
        rd_kafka_metadata_destroy(md);
}

static void warm_metadata(struct source_run *run)
{
    uint32_t writes = run->env->source.writes;
    topic_handle(run, SK_ENTITY_COUNT);
    for (int i = 0; i < SK_ENTITY_COUNT; i++)
        if (!writes || writes & (1u << i))
            topic_handle(run, i);
    /* the topics this client knows: the handles above */
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(run->producer, 0, NULL, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR && md)
        rd_kafka_metadata_destroy(md);
}

/* What waits in the producer (skolsync_kafka_queued_messages): in its queue or in flight. */
void source_note_queue(struct source_run *run)
{
    if (run->producer)
        atomic_store(&run->env->runner.kafka_queued, rd_kafka_outq_len(run->producer));
}

/* Topic handles go before their client (librdkafka: all objects before the handle). */
void source_topics_release(struct source_run *run)
{
    for (int i = 0; i < SK_ENTITY_COUNT + 2; i++) {
        if (run->rkts[i])
            rd_kafka_topic_destroy(run->rkts[i]);
        run->rkts[i] = NULL;
    }
}

static uint64_t value_hash(const void *p, size_t n)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ull;
    return h;
}

static struct refused *refused_find(struct source_run *run, const char *topic, const char *key,
                                    size_t key_len, const void *value, size_t len)
{
    uint64_t h = 0;
    for (size_t i = 0; i < run->n_refused; i++) {
        struct refused *x = &run->refused[i];
        if (x->len != len || strlen(x->key) != key_len || memcmp(x->key, key, key_len) ||
            strcmp(x->topic, topic))
            continue;
        if (!h)
            h = value_hash(value, len);
        if (x->hash == h)
            return x;
    }
    return NULL;
}

/* A delivery report refused a record for good: remember it for the batch's next attempt. */
static void refused_learn(struct source_run *run, const rd_kafka_message_t *m)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    if (!sk_produce_never(m->err) || m->key_len >= sizeof(run->refused->key) ||
        strcmp(topic, sk_kafka_cursor_topic(run->env->kafka)) == 0 ||
        strcmp(topic, sk_kafka_dlq_topic(run->env->kafka)) == 0)
        return;
    struct refused *known = refused_find(run, topic, m->key, m->key_len, m->payload, m->len);
    if (known) {
        if (run->isolating == known - run->refused && !known->confirmed) {
            known->confirmed = true;
            run->refused_learned++;
        }
        return;
    }
    if (run->n_refused == run->cap_refused) {
        run->cap_refused = run->cap_refused ? run->cap_refused * 2 : 8;
        run->refused = sk_realloc(run->refused, run->cap_refused * sizeof(*run->refused));
    }
    struct refused *x = &run->refused[run->n_refused++];
    x->topic = sk_strdup(topic);
    snprintf(x->key, sizeof(x->key), "%.*s", (int)m->key_len, (const char *)m->key);
    x->len = m->len;
    x->hash = value_hash(m->payload, m->len);
    x->err = m->err;
    x->confirmed = false;
    run->refused_learned++;
}

void source_refused_clear(struct source_run *run)
{
    for (size_t i = 0; i < run->n_refused; i++)
        free(run->refused[i].topic);
    run->n_refused = 0;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct source_run *run = opaque;
    struct delivery *d = m->_private;
    if (m->err)
        refused_learn(run, m);
    if (!d)
        return;
    rd_kafka_resp_err_t e = m->err;
    /* A delivery without an offset is one librdkafka inferred: a later
     * request of the same idempotent producer was acknowledged, so a broker
     * must have written the earlier ones. The embedded broker (librdkafka's
     * mock cluster) does not check sequence numbers as a broker does: after a
     * leader move it took a later request while an earlier one had been
     * refused, and 107 records reported delivered were never written
     * (kafka_faults::leader_moves). There such a delivery does not count:
     * the batch is sent again (at least once, rule 2). */
    if (!e && m->offset < 0 && sk_kafka_embedded(run->env->kafka))
        e = RD_KAFKA_RESP_ERR__INCONSISTENT;
    if (e) {
        if (!d->failed)
            d->first_err = e;
        d->failed++;
    }
    d->pending--;
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct source_run *run = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        atomic_fetch_add(&run->env->runner.kafka_errors, 1);
        char buf[512];
        rd_kafka_fatal_error(rk, buf, sizeof(buf));
        sk_error_log(run->env->runner.name, "fatal producer error: %s", buf);
    } else {
        sk_runner_kafka_error(&run->env->runner, reason);
    }
}

static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    struct source_run *run = opaque;
    return sk_runner_kafka_stats(&run->env->runner, json, len);
}

int source_producer_create(struct source_run *run, struct sk_error *err)
{
    struct sk_source_env *env = run->env;
    char *client_id = sk_name_client(sk_kafka_names(env->kafka), "src", env->runner.name);
    /* Tuning the user may override; the queue bound is the back-pressure
     * point: a full queue stops the source from being polled. */
    /* clang-format off */
    const char *const defaults[] = {
        "linger.ms", "5",
        "compression.type", "lz4",
        "queue.buffering.max.kbytes", "16384",
        "queue.buffering.max.messages", "50000",
        "message.timeout.ms", SK_KAFKA_MESSAGE_TIMEOUT_MS,
        "statistics.interval.ms", sk_kafka_statistics_interval(env->kafka),
        NULL};
    /* clang-format on */
    rd_kafka_conf_t *conf = sk_kafka_conf_new(env->kafka, client_id, defaults, err);
    free(client_id);
    if (!conf)
        return -1;
    run->txn = sk_kafka_transactional(env->kafka);
    /* Idempotence always: no duplicates from librdkafka's own retries. */
    if (sk_kafka_conf_set(conf, "enable.idempotence", "true", err))
        goto fail;
    if (run->txn) {
        /* Stable per source of a deployment, whatever the node: a restarted
         * daemon (or another node) fences its zombie predecessor. */
        char *tid = sk_name_txn_id(sk_kafka_names(env->kafka), env->runner.name);
        int rc = sk_kafka_conf_set(conf, "transactional.id", tid, err);
        sk_info(env->runner.name, "transactional id %s", tid);
        free(tid);
        if (rc || sk_kafka_conf_set(conf, "transaction.timeout.ms", "60000", err) ||
            sk_kafka_conf_set(conf, "message.timeout.ms", SK_KAFKA_MESSAGE_TIMEOUT_MS, err))
            goto fail;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    int64_t t0 = sk_mono_ms();
    run->producer = sk_kafka_client_new(RD_KAFKA_PRODUCER, conf, stats_cb, run, err);
    if (!run->producer)
        return -1;
    if (run->txn) {
        rd_kafka_error_t *e = rd_kafka_init_transactions(run->producer, 30000);
        if (e) {
            sk_error_set(err, rd_kafka_error_is_retriable(e) ? SK_ERR_RETRIABLE : SK_ERR_FATAL,
                         "init_transactions: %s", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
            rd_kafka_destroy(run->producer);
            run->producer = NULL;
            return -1;
        }
    }
    int64_t t1 = sk_mono_ms();
    warm_metadata(run);
    sk_debug(env->runner.name, "start-up: producer %lld ms, topic metadata %lld ms",
             (long long)(t1 - t0), (long long)(sk_mono_ms() - t1));
    return 0;
fail:
    rd_kafka_conf_destroy(conf);
    return -1;
}

void source_producer_destroy(struct source_run *run)
{
    if (!run->producer)
        return;
    rd_kafka_purge(run->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(run->producer, 2000);
    source_topics_release(run);
    sk_kafka_destroy_within(run->producer, SK_KAFKA_DESTROY_MS, run->env->runner.name);
    run->producer = NULL;
}

static const char *topic_of(struct source_run *run, const struct sk_entity *e)
{
    int i = sk_entity_index(e);
    if (!run->topics[i])
        run->topics[i] = sk_kafka_topic_for(run->env->kafka, e->collection);
    return run->topics[i];
}

/* Produces one message (back-pressure: the source is not polled while the queue is full). */
static int produce(struct source_run *run, const char *topic, const void *key, size_t key_len,
                   const void *value, size_t value_len, rd_kafka_headers_t *hdrs,
                   struct delivery *d, struct sk_error *err)
{
    rd_kafka_resp_err_t e =
        sk_produce(run->producer, topic, key, key_len, value, value_len, hdrs, d);
    if (e)
        return sk_produce_error(err, e, topic);
    if (d)
        d->pending++;
    return 0;
}

static rd_kafka_headers_t *record_headers(struct source_run *run, const struct sk_record *r)
{
    if (!run->observed_len || r->observed_us != run->observed_us) {
        int n = snprintf(run->observed, sizeof(run->observed), "%lld", (long long)r->observed_us);
        run->observed_us = r->observed_us;
        run->observed_len = n > 0 ? (size_t)n : 0;
    }
    rd_kafka_headers_t *h = rd_kafka_headers_new(4);
#define HEADER_NAME(s) s, (ssize_t)sizeof(s) - 1
    rd_kafka_header_add(h, HEADER_NAME("skolsync-source"), run->env->runner.name, -1);
    rd_kafka_header_add(h, HEADER_NAME("skolsync-observed"), run->observed,
                        (ssize_t)run->observed_len);
    rd_kafka_header_add(h, HEADER_NAME(SK_HEADER_SCHEMA), sk_entity_schema(r->entity), -1);
    rd_kafka_header_add(h, HEADER_NAME("content-type"), HEADER_NAME("application/x-protobuf"));
#undef HEADER_NAME
    return h;
}

/*
 * A record Kafka can never take goes to the dead-letter topic instead, its
 * value cut to fit: its batch, and the source, go on.
 */
static int dead_letter_record(struct source_run *run, const struct sk_record *r, const char *topic,
                              const struct sk_error *why, struct delivery *d, struct sk_error *err)
{
    struct sk_dead_letter dl = {.connector = run->env->runner.name,
                                .err = why,
                                .key = r->key,
                                .key_len = strlen(r->key),
                                .value = r->value,
                                .value_len = r->value_len,
                                .entity = r->entity->name,
                                .topic = topic,
                                .partition = -1,
                                .truncate = true};
    warm_topic(run, SK_ENTITY_COUNT + 1);
    if (sk_dlq_produce(run->producer, sk_kafka_dlq_topic(run->env->kafka), &dl, d, err))
        return -1;
    if (d)
        d->pending++;
    run->batch_refused++;
    run->batch_refused_by[sk_entity_index(r->entity)]++;
    sk_warn(run->env->runner.name, "dead-lettered %s %s (%zu bytes): %s", r->entity->name, r->key,
            r->value_len, why->msg);
    return 0;
}

/* One record: to its topic, or to the dead-letter topic when Kafka can never take it. */
static int produce_record(struct source_run *run, const struct sk_record *r, struct delivery *d,
                          struct sk_error *err)
{
    const char *topic = topic_of(run, r->entity);
    warm_topic(run, sk_entity_index(r->entity));
    struct sk_error why = {0};
    struct refused *x = refused_find(run, topic, r->key, strlen(r->key), r->value, r->value_len);
    if (x && x->confirmed) {
        sk_produce_error(&why, x->err, topic);
        return dead_letter_record(run, r, topic, &why, d, err);
    }
    if (x) {
        /* a suspect: alone in its produce request, so its report is its own */
        rd_kafka_flush(run->producer, 60000);
        run->isolating = x - run->refused;
    }
    int rc = produce(run, topic, r->key, strlen(r->key), r->value, r->value_len,
                     record_headers(run, r), d, &why);
    if (x) {
        if (rc == 0)
            rd_kafka_flush(run->producer, 60000);
        run->isolating = -1;
        x = refused_find(run, topic, r->key, strlen(r->key), r->value, r->value_len);
        if (x && x->confirmed)
            return sk_error_set(err, SK_ERR_RETRIABLE, "%s %s refused by Kafka: %s",
                                r->entity->name, r->key, rd_kafka_err2str(x->err));
    }
    if (rc == 0)
        return 0;
    if (why.cls == SK_ERR_PERMANENT) /* refused before it left: too large for the producer */
        return dead_letter_record(run, r, topic, &why, d, err);
    *err = why;
    return -1;
}

/* The partitions of entity i's topic (cached), or -1 with err. */
static int32_t topic_partitions(struct source_run *run, int i, struct sk_error *err)
{
    if (run->partitions[i] > 0)
        return run->partitions[i];
    if (!run->rkts[i])
        run->rkts[i] = rd_kafka_topic_new(run->producer, topic_of(run, sk_entities[i]), NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = run->rkts[i]
                                ? rd_kafka_metadata(run->producer, 0, run->rkts[i], &md, 10000)
                                : RD_KAFKA_RESP_ERR__INVALID_ARG;
    if (!e && md && md->topic_cnt == 1 && !md->topics[0].err)
        run->partitions[i] = md->topics[0].partition_cnt;
    else if (!e && md && md->topic_cnt == 1)
        e = md->topics[0].err;
    if (md)
        rd_kafka_metadata_destroy(md);
    if (run->partitions[i] <= 0 || run->partitions[i] > SK_SNAPSHOT_MAX_PARTITIONS) {
        run->partitions[i] = 0;
        return sk_error_set(err, SK_ERR_RETRIABLE, "partitions of %s: %s",
                            topic_of(run, sk_entities[i]),
                            e ? rd_kafka_err2str(e) : "none, or more than a snapshot marks");
    }
    return run->partitions[i];
}

/*
 * The snapshot markers of the batch's entity types in mask (snapshot.h): one
 * on every partition of each type's topic, in the batch's order, so a begin
 * precedes the listing's records on every partition and an end follows them.
 */
static int produce_markers(struct source_run *run, const struct sk_batch *b,
                           enum sk_snapshot_phase phase, struct delivery *d, struct sk_error *err)
{
    uint32_t mask = phase == SK_SNAPSHOT_BEGIN ? b->snapshot_begin : b->snapshot_end;
    for (int i = 0; i < SK_ENTITY_COUNT; i++) {
        if (!(mask & (1u << i)))
            continue;
        if (phase == SK_SNAPSHOT_BEGIN) {
            snprintf(run->snapshot_id[i], sizeof(run->snapshot_id[i]), "%.40s@%lld",
                     run->env->runner.name, (long long)sk_now_us());
            run->snapshot_window[i] = b->snapshot_window[i];
        } else if (!run->snapshot_id[i][0])
            continue; /* its begin was not written by this process: no snapshot */
        int32_t n = topic_partitions(run, i, err);
        if (n < 0)
            return -1;
        struct sk_snapshot_marker m = {.phase = phase, .partitions = n};
        snprintf(m.id, sizeof(m.id), "%s", run->snapshot_id[i]);
        snprintf(m.source, sizeof(m.source), "%s", run->env->runner.name);
        const struct sk_snapshot_window *w = &run->snapshot_window[i];
        if (w->field) {
            snprintf(m.field, sizeof(m.field), "%s", w->field);
            m.from_us = w->from_us;
            m.to_us = w->to_us;
        }
        char *value = sk_snapshot_marker_value(&m);
        const char *topic = topic_of(run, sk_entities[i]);
        for (int32_t p = 0; p < n; p++) {
            rd_kafka_resp_err_t e = sk_produce_to(
                run->producer, topic, p, SK_SNAPSHOT_KEY, strlen(SK_SNAPSHOT_KEY), value,
                strlen(value), sk_snapshot_marker_headers(run->env->runner.name), d);
            if (e) {
                free(value);
                return sk_produce_error(err, e, topic);
            }
            if (d)
                d->pending++;
        }
        free(value);
    }
    return 0;
}

/* Produces the batch's records and dead letters (not the cursor). */
static int produce_batch(struct source_run *run, const struct sk_batch *b, struct delivery *d,
                         struct sk_error *err)
{
    if (b->snapshot_begin && produce_markers(run, b, SK_SNAPSHOT_BEGIN, d, err))
        return -1;
    for (size_t i = 0; i < b->n; i++) {
        if (produce_record(run, &b->recs[i], d, err))
            return -1;
        /* serves delivery reports now and then (each call takes a lock and
         * reads the clock: once per record was ~9 % of a sync's CPU) */
        if (i % 256 == 255) {
            rd_kafka_poll(run->producer, 0);
            source_note_queue(run);
        }
    }
    if (b->snapshot_end && produce_markers(run, b, SK_SNAPSHOT_END, d, err))
        return -1;
    for (size_t i = 0; i < b->n_bad; i++) {
        const struct sk_bad_input *x = &b->bad[i];
        struct sk_dead_letter dl = {.connector = run->env->runner.name,
                                    .err = &x->err,
                                    .key = x->key,
                                    .key_len = x->key ? strlen(x->key) : 0,
                                    .value = x->raw,
                                    .value_len = x->raw_len,
                                    .where = x->where,
                                    .entity = x->entity ? x->entity->name : NULL,
                                    .partition = -1};
        warm_topic(run, SK_ENTITY_COUNT + 1);
        if (sk_dlq_produce(run->producer, sk_kafka_dlq_topic(run->env->kafka), &dl, d, err))
            return -1;
        if (d)
            d->pending++;
    }
    return 0;
}

static int produce_cursor(struct source_run *run, const struct sk_cursor *c, struct delivery *d,
                          struct sk_error *err)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(1);
    rd_kafka_header_add(h, "skolsync-source", -1, run->env->runner.name, -1);
    const char *name = run->env->runner.name;
    return produce(run, sk_kafka_cursor_topic(run->env->kafka), name, strlen(name), c->data, c->len,
                   h, d, err);
}

/* Waits for every delivery report of d (at-least-once). */
static int await_delivery(struct source_run *run, struct delivery *d, struct sk_error *err)
{
    while (d->pending > 0) {
        rd_kafka_poll(run->producer, 100);
        source_note_queue(run);
    }
    if (d->failed)
        return sk_error_set(err, SK_ERR_RETRIABLE, "%zu record(s) not acknowledged: %s", d->failed,
                            d->first_err == RD_KAFKA_RESP_ERR__INCONSISTENT
                                ? "delivered by inference only, without an offset (dr_cb)"
                                : rd_kafka_err2str(d->first_err));
    return 0;
}

/*
 * The classes of rdkafka.h's transactional API: retriable (call again or
 * retry the batch), abortable (abort, then retry the batch), fatal - and
 * "treat all others as fatal": an unexpected state (e.g. INVALID_TXN_STATE
 * from a broker) is cured only by a new producer, whose init_transactions
 * fences and aborts whatever the old one left open. FATAL makes the driver
 * do exactly that.
 */
static int txn_error(rd_kafka_error_t *e, const char *what, struct sk_error *err)
{
    enum sk_err_class cls = rd_kafka_error_is_retriable(e) || rd_kafka_error_txn_requires_abort(e)
                                ? SK_ERR_RETRIABLE
                                : SK_ERR_FATAL;
    sk_error_set(err, cls, "%s: %s", what, rd_kafka_error_string(e));
    rd_kafka_error_destroy(e);
    return -1;
}

/*
 * A group: one or more consecutive batches delivered together, the cursor of
 * the last one after them (source_driver.c decides how many). Rule 1: one
 * transaction; rule 2: every delivery report awaited before the cursor.
 */
int source_group_begin(struct source_run *run, struct sk_error *err)
{
    run->batch_refused = 0;
    memset(run->batch_refused_by, 0, sizeof(run->batch_refused_by));
    run->group = (struct delivery){0};
    if (!run->txn)
        return 0;
    rd_kafka_error_t *e = rd_kafka_begin_transaction(run->producer);
    if (e && rd_kafka_error_txn_requires_abort(e)) {
        /* a transaction of an earlier attempt is still open in error: end it first */
        txn_error(e, "begin_transaction", err);
        return source_group_abort(run, err);
    }
    if (e && rd_kafka_error_code(e) == RD_KAFKA_RESP_ERR__CONFLICT) {
        /* an earlier commit or abort never finished (see below): only a new
         * producer gets out of that state */
        txn_error(e, "begin_transaction", err);
        err->cls = SK_ERR_FATAL;
        return -1;
    }
    if (e)
        return txn_error(e, "begin_transaction", err);
    return 0;
}

/* Produces one batch of the group (records and dead letters); on failure the group is aborted. */
int source_group_add(struct source_run *run, const struct sk_batch *b, struct sk_error *err)
{
    if (produce_batch(run, b, run->txn ? NULL : &run->group, err))
        return source_group_abort(run, err);
    return 0;
}

/* Rule 1: data + dead letters + cursor in one transaction. */
static int group_commit_txn(struct source_run *run, const struct sk_cursor *cursor,
                            struct sk_error *err)
{
    if (cursor && produce_cursor(run, cursor, NULL, err))
        return source_group_abort(run, err);
    for (int attempt = 0;; attempt++) {
        rd_kafka_error_t *e = rd_kafka_commit_transaction(run->producer, 60000);
        if (!e)
            return 0;
        if (rd_kafka_error_txn_requires_abort(e)) {
            txn_error(e, "commit_transaction", err);
            return source_group_abort(run, err);
        }
        if (rd_kafka_error_is_retriable(e) && attempt < 5 && !atomic_load(&run->env->runner.stop)) {
            rd_kafka_error_destroy(e); /* resumable since 2.0.0: call again */
            continue;
        }
        return txn_error(e, "commit_transaction", err);
    }
}

/* Rule 2: the cursor only after every earlier delivery report succeeded. */
static int group_commit_alo(struct source_run *run, const struct sk_cursor *cursor,
                            struct sk_error *err)
{
    if (await_delivery(run, &run->group, err))
        return -1;
    if (!cursor)
        return 0;
    struct delivery dc = {0};
    if (produce_cursor(run, cursor, &dc, err)) {
        await_delivery(run, &dc, NULL);
        return -1;
    }
    return await_delivery(run, &dc, err);
}

int source_group_commit(struct source_run *run, const struct sk_cursor *cursor,
                        struct sk_error *err)
{
    return run->txn ? group_commit_txn(run, cursor, err) : group_commit_alo(run, cursor, err);
}

int source_group_abort(struct source_run *run, struct sk_error *err)
{
    if (!run->txn) {
        await_delivery(run, &run->group, NULL); /* nothing in flight refers to the group */
        if (err->cls == SK_ERR_NONE)
            err->cls = SK_ERR_RETRIABLE;
        return -1;
    }
    if (err->cls == SK_ERR_FATAL)
        return -1;
    rd_kafka_error_t *e = rd_kafka_abort_transaction(run->producer, 30000);
    if (e) {
        /* An abort that did not finish (it timed out while the broker was
         * away) leaves the producer where every begin_transaction answers
         * "conflicting abort in progress"; calling the abort again until it
         * ends was seen to lose the batch that came next (test_broker_outage
         * under ASan). A new producer is the safe way on: its
         * init_transactions fences this one and aborts what it left open,
         * and the cursor is read again from Kafka. */
        txn_error(e, "abort_transaction", err);
        err->cls = SK_ERR_FATAL;
        return -1;
    }
    if (err->cls == SK_ERR_NONE)
        err->cls = SK_ERR_RETRIABLE;
    return -1;
}
