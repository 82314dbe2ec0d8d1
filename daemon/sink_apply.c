/*
 * sink_apply.c: one batch of a sink, from Kafka messages to applied records:
 * each record decoded and printed once (exact JSON), the sink's privacy
 * policy, the sink's apply with retries while the consumer stays in its
 * group, and dead letters acknowledged before any offset moves past them
 * (docs/architecture.md §4, rules 3 and 4). The consumer, rebalances and
 * commits are sink_driver.c's.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "embedded_store.h"
#include "log.h"
#include "model.h"
#include "sink_internal.h"
#include "snapshot.h"
#include "util.h"

void sk_sink_privacy_resolve(const struct sk_sink_settings *s, const struct sk_sink_ops *ops,
                             struct sk_privacy *out)
{
    memset(out, 0, sizeof(*out));
    const char *mode = s->protected_identities  ? s->protected_identities
                       : ops->default_protected ? ops->default_protected
                                                : "allow";
    sk_protected_mode_parse(mode, &out->protected_mode);
    if (s->drop_fields.n) {
        out->drop_fields.n = s->drop_fields.n;
        out->drop_fields.v = sk_calloc(s->drop_fields.n, sizeof(char *));
        for (size_t i = 0; i < s->drop_fields.n; i++)
            out->drop_fields.v[i] = sk_strdup(s->drop_fields.v[i]);
    } else if (ops->default_drop_fields) {
        size_t n = 0;
        while (ops->default_drop_fields[n])
            n++;
        out->drop_fields.n = n;
        out->drop_fields.v = sk_calloc(n + 1, sizeof(char *));
        for (size_t i = 0; i < n; i++)
            out->drop_fields.v[i] = sk_strdup(ops->default_drop_fields[i]);
    }
}

void sk_sink_privacy_free(struct sk_privacy *p)
{
    for (size_t i = 0; i < p->drop_fields.n; i++)
        free(p->drop_fields.v[i]);
    free(p->drop_fields.v);
    memset(p, 0, sizeof(*p));
}

static const struct sk_entity *entity_of(struct sink_run *run, const char *topic)
{
    for (size_t i = 0; i < run->env->sink.n_entities; i++)
        if (strcmp(run->env->topics[i], topic) == 0)
            return run->env->sink.entities[i];
    return NULL;
}

static void docs_free(struct sink_run *run);

void sink_pending_drop(struct sink_run *run)
{
    for (size_t i = 0; i < run->n_pending; i++) {
        if (run->held[i])
            sk_sink_hub_release(run->held[i]);
        else
            rd_kafka_message_destroy(run->pending[i]);
    }
    run->n_pending = 0;
    docs_free(run);
}

/* ---- dead letters -------------------------------------------------------- */

/* Dead-letters the rejected records of recs[0..n) and waits for the acknowledgements. */
static int dlq_send(struct sink_run *run, size_t n, struct sk_error *err)
{
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        if (run->outs[i].kind != SK_REJECTED)
            continue;
        if (!run->dlq &&
            !(run->dlq = sk_dlq_writer_new(run->env->kafka, run->env->runner.name, err)))
            return -1;
        any = true;
        const rd_kafka_message_t *m = run->pending[i];
        char schema[128];
        bool has_schema = sk_kafka_header(m, SK_HEADER_SCHEMA, schema, sizeof(schema)) == 0;
        struct sk_dead_letter dl = {.connector = run->env->runner.name,
                                    .err = &run->outs[i].err,
                                    .key = m->key,
                                    .key_len = m->key_len,
                                    .value = m->payload,
                                    .value_len = m->len,
                                    .topic = rd_kafka_topic_name(m->rkt),
                                    .entity =
                                        run->recs[i].entity ? run->recs[i].entity->name : NULL,
                                    .partition = m->partition,
                                    .offset = m->offset,
                                    .schema = has_schema ? schema : NULL};
        if (sk_dlq_writer_send(run->dlq, &dl, err))
            return -1;
        sk_warn(run->env->runner.name, "dead-lettered %s[%d]@%lld: %s", dl.topic, (int)m->partition,
                (long long)m->offset, run->outs[i].err.msg);
    }
    return any ? sk_dlq_writer_wait(run->dlq, err) : 0;
}

/* ---- applying a batch ------------------------------------------------------ */

void sink_pause_all(struct sink_run *run, bool pause)
{
    if (run->hub) {
        if (pause)
            sk_sink_hub_suspend(run->hub);
        else
            sk_sink_hub_resume(run->hub, NULL); /* after the last record it took */
        sink_seen_now(run);
        return;
    }
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(run->consumer, &a) || !a)
        return;
    if (a->cnt)
        (pause ? rd_kafka_pause_partitions : rd_kafka_resume_partitions)(run->consumer, a);
    rd_kafka_topic_partition_list_destroy(a);
    sink_seen_now(run); /* paused, it fetches nothing, rightly */
}

/*
 * Waits ms while staying a live group member: partitions are paused, so
 * polling returns no records but serves rebalances and heartbeats.
 */
static void wait_polling(struct sink_run *run, int64_t ms)
{
    int64_t until = sk_mono_ms() + ms;
    while (!atomic_load(&run->env->runner.stop) && !run->revoked_in_flush) {
        int64_t left = until - sk_mono_ms();
        if (left <= 0)
            break;
        if (run->hub) { /* suspended on the shared consumer: no group to stay in */
            sk_sleep_ms(left > 200 ? 200 : left);
            continue;
        }
        rd_kafka_message_t *m =
            rd_kafka_consumer_poll(run->consumer, (int)(left > 200 ? 200 : left));
        if (m)
            rd_kafka_message_destroy(m); /* paused: only stale fetches; refetched on resume */
    }
}

int sk_sink_decode(const struct sk_privacy *privacy, struct sk_record *r, cJSON **doc,
                   struct sk_buf *json, struct sk_error *err)
{
    *doc = NULL;
    ProtobufCMessage *msg =
        protobuf_c_message_unpack(r->entity->desc, NULL, r->value_len, r->value);
    cJSON *d = msg ? sk_codec_to_json(msg) : NULL;
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    if (!d)
        return sk_error_set(err, SK_ERR_PERMANENT, "value is not a valid %s message",
                            sk_entity_schema(r->entity));
    /* Sinks store a document under its record's key: a value of another
     * entity (a foreign producer's mistake) would put it under the wrong id,
     * and an upsert by key would then overwrite the entity the key names. */
    const cJSON *idv = cJSON_GetObjectItemCaseSensitive(d, "id");
    char id[37];
    if (!cJSON_IsString(idv) || sk_uuid_normalize(idv->valuestring, id) != 0) {
        cJSON_Delete(d);
        return sk_error_set(err, SK_ERR_PERMANENT, "value has no id that is a UUID");
    }
    if (strcmp(id, r->key) != 0) {
        cJSON_Delete(d);
        return sk_error_set(err, SK_ERR_PERMANENT, "value's id %s is not the record's key %s",
                            id, r->key);
    }
    if (sk_privacy_apply(privacy, r->entity, d) == SK_PRIVACY_DELETE) {
        cJSON_Delete(d);
        r->value = NULL;
        r->value_len = 0;
        r->withheld = true;
        return 1;
    }
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(d, "meta");
    const cJSON *mod = meta ? cJSON_GetObjectItemCaseSensitive(meta, "modified") : NULL;
    if (!cJSON_IsString(mod) || sk_time_parse_us(mod->valuestring, &r->modified_us))
        r->modified_us = INT64_MIN;
    r->json_len = sk_json_print_into(d, json);
    sk_buf_putn(json, "", 1); /* each record's text ends in its own NUL */
    r->doc = *doc = d;
    return 0;
}

/* ---- decode, split over two threads for a large batch ---------------------- */

struct decode_part {
    const struct sk_privacy *privacy;
    struct sk_record *recs;
    cJSON **docs;
    struct sk_outcome *outs;
    bool *rejected;
    const size_t *todo;
    size_t from, to;
    struct sk_buf *json;
    size_t *json_at;
};

static void *decode_part_run(void *arg)
{
    struct decode_part *d = arg;
    for (size_t k = d->from; k < d->to; k++) {
        size_t i = d->todo[k];
        d->json_at[i] = d->json->len;
        if (sk_sink_decode(d->privacy, &d->recs[i], &d->docs[i], d->json, &d->outs[i].err) < 0) {
            d->rejected[i] = true;
            d->outs[i].kind = SK_REJECTED;
        }
    }
    return NULL;
}

/* Decode helpers running in this daemon, and how many may (CPUs online - 1). */
static atomic_int decode_helpers;
static atomic_int decode_helpers_max = -1;

static bool decode_helper_take(void)
{
    int max = atomic_load(&decode_helpers_max);
    if (max < 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        max = cpus > 1 ? (int)(cpus - 1) : 0;
        atomic_store(&decode_helpers_max, max);
    }
    int n = atomic_load(&decode_helpers);
    while (n < max)
        if (atomic_compare_exchange_weak(&decode_helpers, &n, n + 1))
            return true;
    return false;
}

/* drivers.h */
int sk_sink_decode_batch(const struct sk_privacy *privacy, struct sk_record *recs, cJSON **docs,
                         struct sk_outcome *outs, bool *rejected, const size_t *todo,
                         size_t n_todo, struct sk_buf json[2], size_t *json_at)
{
    size_t mid = n_todo;
    pthread_t helper;
    bool split = false;
    struct decode_part first = {privacy, recs, docs, outs, rejected, todo, 0, n_todo, &json[0],
                                json_at};
    struct decode_part second = first;
    if (n_todo >= SK_DECODE_SPLIT_MIN && decode_helper_take()) {
        mid = n_todo / 2;
        first.to = mid;
        second.from = mid;
        second.json = &json[1];
        split = sk_thread_start(&helper, decode_part_run, &second, "decode", NULL) == 0;
        if (!split) {
            atomic_fetch_sub(&decode_helpers, 1);
            first.to = mid = n_todo; /* no thread to be had: all here */
        }
    }
    decode_part_run(&first);
    if (split) {
        pthread_join(helper, NULL);
        atomic_fetch_sub(&decode_helpers, 1);
    }
    /* Both buffers are final now: point each record at its text. */
    for (size_t k = 0; k < n_todo; k++) {
        size_t i = todo[k];
        if (recs[i].doc)
            recs[i].json = json[k < mid ? 0 : 1].p + json_at[i];
    }
    return split ? 2 : 1;
}

static void docs_free(struct sink_run *run)
{
    for (size_t i = 0; i < run->cap_pending; i++) {
        cJSON_Delete(run->docs[i]);
        run->docs[i] = NULL;
    }
    sk_buf_reset(&run->json[0]);
    sk_buf_reset(&run->json[1]);
}

static void build_records(struct sink_run *run)
{
    docs_free(run);
    size_t n_todo = 0;
    for (size_t i = 0; i < run->n_pending; i++) {
        const rd_kafka_message_t *m = run->pending[i];
        struct sk_record *r = &run->recs[i];
        memset(r, 0, sizeof(*r));
        r->topic = rd_kafka_topic_name(m->rkt);
        r->partition = m->partition;
        r->offset = m->offset;
        r->entity = entity_of(run, r->topic);
        r->value = m->payload;
        r->value_len = m->len;
        char obs[32];
        if (sk_kafka_header(m, "skolsync-observed", obs, sizeof(obs)) == 0)
            r->observed_us = strtoll(obs, NULL, 10);
        char key[64] = "";
        if (m->key && m->key_len < sizeof(key)) {
            memcpy(key, m->key, m->key_len);
            key[m->key_len] = '\0';
        }
        run->outs[i].kind = SK_APPLIED;
        sk_error_clear(&run->outs[i].err);
        run->driver_rejected[i] = false;
        r->modified_us = INT64_MIN;
        /* The drivers' own records (snapshot.h) are followed after the
         * batch (sink_sweep.c), never applied. One that does not read (a
         * damaged value, a kind of a later version) is bad input like any
         * other: rejected, so it is dead-lettered and counted. */
        struct sk_snapshot_marker marker;
        int control = sk_snapshot_marker_read(m, &marker);
        run->control[i] = control == 1;
        if (control == 1)
            continue;
        if (control < 0) {
            run->driver_rejected[i] = true;
            run->outs[i].kind = SK_REJECTED;
            sk_error_set(&run->outs[i].err, SK_ERR_PERMANENT,
                         "a drivers' control record (header " SK_CONTROL_HEADER
                         ") this version cannot read");
            continue;
        }
        /* docs/architecture.md §5.2: the key is the entity's lowercase UUID; anything else is
         * not ours to apply. */
        if (!r->entity || sk_uuid_normalize(key, r->key) != 0) {
            run->driver_rejected[i] = true;
            run->outs[i].kind = SK_REJECTED;
            sk_error_set(&run->outs[i].err, SK_ERR_PERMANENT,
                         r->entity ? "record key is not a UUID" : "topic not consumed by sink");
            continue;
        }
        /* §5.3: a record saying it is another entity (a foreign producer on
         * the wrong topic) is not applied, even when its value happens to
         * parse as this topic's message. No header: nothing to check. */
        char schema[128];
        if (sk_kafka_header(m, SK_HEADER_SCHEMA, schema, sizeof(schema)) == 0 &&
            strcmp(schema, sk_entity_schema(r->entity)) != 0) {
            run->driver_rejected[i] = true;
            run->outs[i].kind = SK_REJECTED;
            sk_error_set(&run->outs[i].err, SK_ERR_PERMANENT,
                         "record's header skolsync-schema is %.100s, not %s on this topic",
                         schema, sk_entity_schema(r->entity));
            continue;
        }
        if (m->payload)
            run->todo[n_todo++] = i;
    }
    sk_sink_decode_batch(&run->env->privacy, run->recs, run->docs, run->outs,
                         run->driver_rejected, run->todo, n_todo, run->json, run->json_at);
}

/*
 * One pass of the sink over recs[from, n): apply runs over maximal stretches
 * of records the driver did not reject itself (bad key, undecodable). Returns
 * the index of the first record to retry (n if none) with its error in err.
 */
static size_t apply_range(struct sink_run *run, size_t from, struct sk_error *err)
{
    struct sk_sink_env *env = run->env;
    size_t n = run->n_pending, start = from;
    while (start < n) {
        size_t end = start;
        while (end < n && !run->driver_rejected[end] && !run->control[end])
            end++;
        if (end == start) {
            start++;
            continue;
        }
        for (size_t i = start; i < end; i++) {
            run->outs[i].kind = SK_APPLIED;
            sk_error_clear(&run->outs[i].err);
        }
        int64_t t0 = sk_mono_ms();
        sk_error_clear(err);
        if (env->sink.ops->apply(&env->sink, run->recs + start, end - start, run->outs + start,
                                 err) != 0) {
            if (err->cls == SK_ERR_NONE)
                err->cls = SK_ERR_RETRIABLE;
            return start;
        }
        for (size_t i = start; i < end; i++) {
            if (run->outs[i].kind == SK_RETRY) {
                *err = run->outs[i].err;
                if (err->cls == SK_ERR_NONE)
                    err->cls = SK_ERR_RETRIABLE;
                return i;
            }
        }
        sk_hist_observe_us(&env->runner.work_seconds, (sk_mono_ms() - t0) * 1000);
        sk_debug(env->runner.name, "applied %zu record(s) in %lld ms", end - start,
                 (long long)(sk_mono_ms() - t0));
        start = end;
    }
    return n;
}

/* Waits before a retry while staying in the group; false if the policy has no retries left. */
static bool retry_wait(struct sink_run *run, struct sk_retry *retry, bool *paused,
                       const struct sk_error *err)
{
    struct sk_runner *r = &run->env->runner;
    int64_t ms = sk_retry_next(retry, &run->env->settings.policy);
    sk_runner_set_error(r, err->msg);
    if (ms < 0) {
        sk_error_log(r->name, "%s; no retries left after %d attempt(s)", err->msg, retry->attempt);
        run->fatal = true;
        return false;
    }
    if (!*paused) {
        sink_pause_all(run, true);
        *paused = true;
    }
    sk_runner_set_state(r, SK_STATE_RETRYING);
    atomic_fetch_add(&r->retries, 1);
    sk_warn(r->name, "%s; retrying in %lld ms", err->msg[0] ? err->msg : "apply failed",
            (long long)ms);
    wait_polling(run, ms);
    return !atomic_load(&r->stop) && !run->revoked_in_flush;
}

/* sink_internal.h */
int sink_decode_pending(struct sink_run *run)
{
    struct sk_sink_env *env = run->env;
    /* The embedded broker's store: apply only what a restart restores
     * (docs/architecture.md §5.8), or offsets could point past its log.
     * While it cannot write, the sink says so (retrying, /ready 503). */
    struct sk_runner *r = &env->runner;
    bool said = false;
    int rc;
    char why[400];
    while ((rc = sk_estore_await(sk_kafka_estore(env->kafka), run->pending, run->n_pending,
                                 &r->stop, why, sizeof(why))) == 1) {
        if (!said) {
            sk_runner_set_error(r, why);
            sk_runner_set_state(r, SK_STATE_RETRYING);
            said = true;
        }
    }
    if (said && rc == 0) {
        sk_runner_set_state(r, SK_STATE_RUNNING);
        sk_runner_set_error(r, "");
    }
    if (rc)
        return -1;
    build_records(run);
    return 0;
}

/* sink_internal.h */
void sink_apply_first(struct sink_run *run, struct sink_first *first)
{
    sk_error_clear(&first->err);
    first->at = apply_range(run, 0, &first->err);
}

/* sink_internal.h */
int sink_apply_pending(struct sink_run *run)
{
    if (sink_decode_pending(run))
        return -1;
    return sink_apply_decoded(run, NULL);
}

/* sink_internal.h */
int sink_apply_decoded(struct sink_run *run, const struct sink_first *first)
{
    struct sk_sink_env *env = run->env;
    struct sk_runner *r = &env->runner;
    enum sk_on_error mode = sk_policy_on_error(&env->settings.policy);
    size_t n = run->n_pending, from = 0;
    struct sk_retry retry = {0};
    bool paused = false;
    int rc = 0;
    for (;;) {
        struct sk_error err = {0};
        size_t at;
        if (first) { /* the helper thread's attempt stands for the first */
            at = first->at;
            err = first->err;
            first = NULL;
        } else {
            at = apply_range(run, from, &err);
        }
        if (at < n && err.cls == SK_ERR_FATAL) {
            sk_error_log(r->name, "%s", err.msg);
            sk_runner_set_error(r, err.msg);
            run->fatal = true;
            rc = -1;
            break;
        }
        if (at == n && mode != SK_ON_ERROR_DLQ) {
            /* A rejected record under on_error stop or retry (policy.h). */
            for (at = 0; at < n && run->outs[at].kind != SK_REJECTED; at++)
                ;
            if (at < n) {
                const struct sk_record *x = &run->recs[at];
                sk_error_set(&err, SK_ERR_PERMANENT, "%s[%d]@%lld rejected: %s (on_error: %s)",
                             x->topic, (int)x->partition, (long long)x->offset,
                             run->outs[at].err.msg, mode == SK_ON_ERROR_STOP ? "stop" : "retry");
                if (mode == SK_ON_ERROR_STOP) {
                    sk_error_log(r->name, "%s", err.msg);
                    sk_runner_set_error(r, err.msg);
                    run->fatal = true;
                    rc = -1;
                    break;
                }
            }
        }
        if (at == n)
            break;
        /* Keep what was applied before `at`; wait and apply again from there. */
        if (!retry_wait(run, &retry, &paused, &err)) {
            rc = -1;
            break;
        }
        from = at;
    }
    /* Dead letters, acknowledged before any offset moves past them. */
    sk_retry_reset(&retry);
    while (rc == 0) {
        struct sk_error err = {0};
        if (dlq_send(run, n, &err) == 0)
            break;
        if (err.cls == SK_ERR_FATAL) {
            run->fatal = true;
            rc = -1;
        } else if (!retry_wait(run, &retry, &paused, &err)) {
            rc = -1;
        }
    }
    if (paused && !run->revoked_in_flush)
        sink_pause_all(run, false);
    if (rc == 0) {
        sk_runner_set_state(r, SK_STATE_RUNNING);
        sk_runner_set_error(r, "");
    }
    return rc;
}
