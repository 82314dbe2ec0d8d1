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
#include "ownership.h"
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
    bool created = false;
    run->rkts[i] = sk_sprod_topic(run->member, topic, &created);
    return created; /* another source of the node may have readied it already */
}

/* In use (run->rk). */
static void warm_topic(struct source_run *run, int i)
{
    const struct rd_kafka_metadata *md = NULL;
    if (topic_handle(run, i) &&
        rd_kafka_metadata(run->rk, 0, run->rkts[i], &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR && md)
        rd_kafka_metadata_destroy(md);
}

static void warm_metadata(struct source_run *run)
{
    uint32_t writes = run->env->source.writes;
    bool created = topic_handle(run, SK_ENTITY_COUNT);
    for (int i = 0; i < SK_ENTITY_COUNT; i++)
        if (!writes || writes & (1u << i))
            created |= topic_handle(run, i);
    if (!created)
        return;
    /* the topics this client knows: the handles above */
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(run->rk, 0, NULL, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR && md)
        rd_kafka_metadata_destroy(md);
}

/* What of the source waits in the producer (skolsync_kafka_queued_messages):
 * its messages in the queue or in flight. */
void source_note_queue(struct source_run *run)
{
    if (run->member)
        atomic_store(&run->env->runner.kafka_queued, (int_fast64_t)sk_sprod_in_flight(run->member));
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
    if (run->member)
        pthread_mutex_lock(&run->member->mu);
    for (size_t i = 0; i < run->n_refused; i++)
        free(run->refused[i].topic);
    run->n_refused = 0;
    if (run->member)
        pthread_mutex_unlock(&run->member->mu);
}

/* A report of a failed message of the source (shared_producer.h: the member locked). */
static void report(void *ctx, const rd_kafka_message_t *m)
{
    refused_learn(ctx, m);
}

int source_producer_create(struct source_run *run, struct sk_error *err)
{
    struct sk_source_env *env = run->env;
    struct sk_sprod *sp = sk_kafka_sprod(env->kafka);
    int64_t t0 = sk_mono_ms();
    run->member = sk_sprod_join(sp, &env->runner, report, run, err);
    if (!run->member)
        return -1;
    run->member->fence_partition = sk_ownership_partition(env->runner.name);
    run->txn = sk_sprod_transactional(sp);
    int64_t t1 = sk_mono_ms();
    run->rk = sk_sprod_use(run->member, err);
    if (!run->rk)
        return -1;
    warm_metadata(run);
    sk_sprod_unuse(run->member);
    run->rk = NULL;
    sk_debug(env->runner.name, "start-up: producer %lld ms, topic metadata %lld ms",
             (long long)(t1 - t0), (long long)(sk_mono_ms() - t1));
    return 0;
}

void source_producer_destroy(struct source_run *run)
{
    sk_sprod_leave(run->member);
    run->member = NULL;
    for (int i = 0; i < SK_ENTITY_COUNT + 2; i++)
        run->rkts[i] = NULL; /* the client's, not the source's */
    memset(run->partitions, 0, sizeof(run->partitions));
}

void source_producer_poll(struct source_run *run, int ms)
{
    struct sk_error ignored = {0};
    rd_kafka_t *rk = run->member ? sk_sprod_use(run->member, &ignored) : NULL;
    if (!rk)
        return;
    rd_kafka_poll(rk, ms);
    sk_sprod_unuse(run->member);
}

rd_kafka_resp_err_t source_producer_fatal(struct source_run *run, char *buf, size_t size)
{
    return run->member ? sk_sprod_fatal(run->member, buf, size) : 0;
}

static const char *topic_of(struct source_run *run, const struct sk_entity *e)
{
    int i = sk_entity_index(e);
    if (!run->topics[i])
        run->topics[i] = sk_kafka_topic_for(run->env->kafka, e->collection);
    return run->topics[i];
}

int source_topics_moved(struct source_run *run, struct sk_error *err)
{
    struct sk_kafka *k = run->env->kafka;
    uint32_t writes = run->env->source.writes;
    char why[sizeof(err->msg)];
    bool moved = sk_kafka_moved(k, sk_kafka_cursor_topic(k), why, sizeof(why));
    for (int i = 0; i < SK_ENTITY_COUNT && !moved; i++)
        if (!writes || writes & (1u << i))
            moved = sk_kafka_moved(k, topic_of(run, sk_entities[i]), why, sizeof(why));
    return moved ? sk_error_set(err, SK_ERR_FATAL, "%s", why) : 0;
}

/* Produces one message (back-pressure: the source is not polled while the queue is full). */
static int produce(struct source_run *run, const char *topic, const void *key, size_t key_len,
                   const void *value, size_t value_len, rd_kafka_headers_t *hdrs,
                   struct sk_sprod_delivery *d, struct sk_error *err)
{
    /* counted before: its report may come at once, on another thread */
    atomic_fetch_add(&d->pending, 1);
    rd_kafka_resp_err_t e = sk_produce(run->rk, topic, key, key_len, value, value_len, hdrs, d);
    if (e) {
        atomic_fetch_sub(&d->pending, 1);
        return sk_produce_error(err, e, topic);
    }
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

/* A dead letter of the source's batch, counted in d like its records. */
static int dlq_produce(struct source_run *run, const struct sk_dead_letter *dl,
                       struct sk_sprod_delivery *d, struct sk_error *err)
{
    warm_topic(run, SK_ENTITY_COUNT + 1);
    atomic_fetch_add(&d->pending, 1);
    if (sk_dlq_produce(run->rk, sk_kafka_dlq_topic(run->env->kafka), dl, d, err)) {
        atomic_fetch_sub(&d->pending, 1);
        return -1;
    }
    return 0;
}

/*
 * A record Kafka can never take goes to the dead-letter topic instead, its
 * value cut to fit: its batch, and the source, go on.
 */
static int dead_letter_record(struct source_run *run, const struct sk_record *r, const char *topic,
                              const struct sk_error *why, struct sk_sprod_delivery *d,
                              struct sk_error *err)
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
    if (dlq_produce(run, &dl, d, err))
        return -1;
    run->batch_refused++;
    run->batch_refused_by[sk_entity_index(r->entity)]++;
    sk_warn(run->env->runner.name, "dead-lettered %s %s (%zu bytes): %s", r->entity->name, r->key,
            r->value_len, why->msg);
    return 0;
}

/* One record: to its topic, or to the dead-letter topic when Kafka can never take it. */
static int produce_record(struct source_run *run, const struct sk_record *r,
                          struct sk_sprod_delivery *d, struct sk_error *err)
{
    const char *topic = topic_of(run, r->entity);
    warm_topic(run, sk_entity_index(r->entity));
    struct sk_error why = {0};
    size_t key_len = strlen(r->key);
    pthread_mutex_lock(&run->member->mu); /* the list: a report may come on another thread */
    struct refused *x = refused_find(run, topic, r->key, key_len, r->value, r->value_len);
    bool suspect = x != NULL, confirmed = x && x->confirmed;
    rd_kafka_resp_err_t refused_err = x ? x->err : RD_KAFKA_RESP_ERR_NO_ERROR;
    pthread_mutex_unlock(&run->member->mu);
    if (confirmed) {
        sk_produce_error(&why, refused_err, topic);
        return dead_letter_record(run, r, topic, &why, d, err);
    }
    if (suspect) {
        /* a suspect: alone in its produce request, so its report is its own */
        rd_kafka_flush(run->rk, 60000);
        pthread_mutex_lock(&run->member->mu);
        x = refused_find(run, topic, r->key, key_len, r->value, r->value_len);
        run->isolating = x ? x - run->refused : -1;
        pthread_mutex_unlock(&run->member->mu);
    }
    int rc = produce(run, topic, r->key, key_len, r->value, r->value_len, record_headers(run, r), d,
                     &why);
    if (suspect) {
        if (rc == 0)
            rd_kafka_flush(run->rk, 60000);
        pthread_mutex_lock(&run->member->mu);
        run->isolating = -1;
        x = refused_find(run, topic, r->key, key_len, r->value, r->value_len);
        confirmed = x && x->confirmed;
        refused_err = x ? x->err : RD_KAFKA_RESP_ERR_NO_ERROR;
        pthread_mutex_unlock(&run->member->mu);
        if (confirmed)
            return sk_error_set(err, SK_ERR_RETRIABLE, "%s %s refused by Kafka: %s",
                                r->entity->name, r->key, rd_kafka_err2str(refused_err));
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
    topic_handle(run, i);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = run->rkts[i] ? rd_kafka_metadata(run->rk, 0, run->rkts[i], &md, 10000)
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
                           enum sk_snapshot_phase phase, struct sk_sprod_delivery *d,
                           struct sk_error *err)
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
            atomic_fetch_add(&d->pending, 1);
            rd_kafka_resp_err_t e =
                sk_produce_to(run->rk, topic, p, SK_SNAPSHOT_KEY, strlen(SK_SNAPSHOT_KEY), value,
                              strlen(value), sk_snapshot_marker_headers(run->env->runner.name), d);
            if (e) {
                atomic_fetch_sub(&d->pending, 1);
                free(value);
                return sk_produce_error(err, e, topic);
            }
        }
        free(value);
    }
    return 0;
}

/* Produces the batch's records and dead letters (not the cursor). */
static int produce_batch(struct source_run *run, const struct sk_batch *b,
                         struct sk_sprod_delivery *d, struct sk_error *err)
{
    if (b->snapshot_begin && produce_markers(run, b, SK_SNAPSHOT_BEGIN, d, err))
        return -1;
    for (size_t i = 0; i < b->n; i++) {
        if (produce_record(run, &b->recs[i], d, err))
            return -1;
        /* serves delivery reports now and then (each call takes a lock and
         * reads the clock: once per record was ~9 % of a sync's CPU) */
        if (i % 256 == 255) {
            rd_kafka_poll(run->rk, 0);
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
        if (dlq_produce(run, &dl, d, err))
            return -1;
    }
    return 0;
}

static int produce_cursor(struct source_run *run, const struct sk_cursor *c,
                          struct sk_sprod_delivery *d, struct sk_error *err)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(1);
    rd_kafka_header_add(h, "skolsync-source", -1, run->env->runner.name, -1);
    const char *name = run->env->runner.name;
    return produce(run, sk_kafka_cursor_topic(run->env->kafka), name, strlen(name), c->data, c->len,
                   h, d, err);
}

/* Waits for every delivery report of d (at-least-once). */
static int await_delivery(struct source_run *run, struct sk_sprod_delivery *d, struct sk_error *err)
{
    while (atomic_load(&d->pending) > 0) {
        struct sk_error gone = {0};
        rd_kafka_t *rk = sk_sprod_use(run->member, &gone);
        if (!rk) {
            /* replaced: the old client's purge reports what it held */
            if (err)
                *err = gone;
            return -1;
        }
        rd_kafka_poll(rk, 100);
        sk_sprod_unuse(run->member);
        source_note_queue(run);
    }
    size_t failed = atomic_load(&d->failed);
    if (failed) {
        rd_kafka_resp_err_t first = (rd_kafka_resp_err_t)atomic_load(&d->first_err);
        return sk_error_set(err, SK_ERR_RETRIABLE, "%zu record(s) not acknowledged: %s", failed,
                            first == RD_KAFKA_RESP_ERR__INCONSISTENT
                                ? "delivered by inference only, without an offset (dr_cb)"
                                : rd_kafka_err2str(first));
    }
    return 0;
}

static void delivery_reset(struct sk_sprod_delivery *d)
{
    atomic_store(&d->failed, 0);
    atomic_store(&d->first_err, 0);
}

/*
 * A group: one or more consecutive batches delivered together, the cursor of
 * the last one after them (source_driver.c decides how many). Rule 1: every
 * transaction of the node's producer the group's records went into is
 * committed (shared_producer.h); rule 2: every delivery report awaited
 * before the cursor.
 */
int source_group_begin(struct source_run *run, struct sk_error *err)
{
    (void)err;
    run->batch_refused = 0;
    memset(run->batch_refused_by, 0, sizeof(run->batch_refused_by));
    delivery_reset(&run->member->group);
    delivery_reset(&run->member->cursor);
    if (run->txn)
        sk_sprod_group_begin(run->member);
    return 0;
}

/* Holds the client for producing: in the open transaction (rule 1) or not. */
static int enter(struct source_run *run, struct sk_error *err)
{
    run->rk = run->txn ? sk_sprod_txn_enter(run->member, err) : sk_sprod_use(run->member, err);
    return run->rk ? 0 : -1;
}

/* failed: the batch's error (its transaction is then aborted), or NULL. */
static void leave(struct source_run *run, const struct sk_error *failed)
{
    run->rk = NULL;
    if (run->txn)
        sk_sprod_txn_leave(run->member, failed);
    else
        sk_sprod_unuse(run->member);
}

/* Produces one batch of the group (records and dead letters); on failure the group is aborted. */
int source_group_add(struct source_run *run, const struct sk_batch *b, struct sk_error *err)
{
    if (enter(run, err))
        return -1; /* FATAL: the client broke or was replaced */
    int rc = produce_batch(run, b, run->txn ? &run->member->txn : &run->member->group, err);
    leave(run, rc ? err : NULL);
    if (rc)
        return source_group_abort(run, err);
    return 0;
}

/* Rule 1: data + dead letters + cursor committed (the cursor in the last transaction). */
static int group_commit_txn(struct source_run *run, const struct sk_cursor *cursor,
                            struct sk_error *err)
{
    if (cursor) {
        if (enter(run, err))
            return -1;
        int rc = produce_cursor(run, cursor, &run->member->txn, err);
        leave(run, rc ? err : NULL);
        if (rc)
            return source_group_abort(run, err);
    }
    return sk_sprod_txn_commit(run->member, err);
}

/* Rule 2: the cursor only after every earlier delivery report succeeded. */
static int group_commit_alo(struct source_run *run, const struct sk_cursor *cursor,
                            struct sk_error *err)
{
    if (await_delivery(run, &run->member->group, err))
        return -1;
    if (!cursor)
        return 0;
    struct sk_sprod_delivery *dc = &run->member->cursor;
    if (enter(run, err))
        return -1;
    int rc = produce_cursor(run, cursor, dc, err);
    leave(run, NULL);
    if (rc) {
        await_delivery(run, dc, NULL);
        return -1;
    }
    return await_delivery(run, dc, err);
}

int source_group_commit(struct source_run *run, const struct sk_cursor *cursor,
                        struct sk_error *err)
{
    return run->txn ? group_commit_txn(run, cursor, err) : group_commit_alo(run, cursor, err);
}

int source_group_abort(struct source_run *run, struct sk_error *err)
{
    if (!run->txn) {
        await_delivery(run, &run->member->group, NULL); /* nothing in flight refers to the group */
        if (err->cls == SK_ERR_NONE)
            err->cls = SK_ERR_RETRIABLE;
        return -1;
    }
    if (err->cls == SK_ERR_FATAL)
        return -1; /* the client broke: a new one aborts what it left open */
    /* The open transaction holds other sources' batches too: they fail with
     * this one, and each polls again from its acknowledged cursor. */
    return sk_sprod_txn_abort(run->member, err);
}
