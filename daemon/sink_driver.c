/*
 * sink_driver.c: runs one sink connector: consume -> batch -> apply -> commit.
 *
 * Delivery rules (docs/architecture.md §4):
 *  3. An offset is stored and committed only after the target applied every
 *     record before it (enable.auto.offset.store=false, no auto-commit).
 *     Sinks that keep offsets in the target (stored_offsets) are sought to
 *     them on assignment: exactly-once apply.
 *  4. A retriable failure pauses the partitions and retries the same records
 *     with backoff (the consumer keeps polling so it stays in its group); a
 *     rejected record goes to the DLQ, and only once the DLQ acknowledged it
 *     does the offset move past it.
 *  5. On stop: apply the batch in hand, commit, leave the group.
 *
 * Assignment strategy: eager (roundrobin). Each sink is the only member of its
 * group `skolsync-<sink>`, so cooperative rebalancing buys nothing here, and
 * librdkafka 2.0.2 carries several cooperative-sticky bugs (docs/architecture.md
 * §8.5: assignor loop, lost assignment on commit during rebalance, crash
 * and hang on close).
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlq.h"
#include "drivers.h"
#include "log.h"
#include "model.h"
#include "util.h"

const struct sk_option sk_sink_settings_options[] = {
    {"type", SK_OPT_STRING, NULL, true, "connector type (skolsync connectors lists them)",
     offsetof(struct sk_sink_settings, type)},
    {"entities", SK_OPT_LIST, NULL, false,
     "entity types to consume, by name (Person) or collection (persons); default all",
     offsetof(struct sk_sink_settings, entities)},
    {"batch_size", SK_OPT_INT, "500", false, "most records applied in one target transaction",
     offsetof(struct sk_sink_settings, batch_size), .min = 1, .max = 100000},
    {"batch_linger", SK_OPT_DURATION, "100ms", false,
     "longest wait for a batch to fill before it is applied",
     offsetof(struct sk_sink_settings, batch_linger_ms), .min = 0, .max = 60000},
    SK_FAILURE_POLICY_OPTIONS,
    {"drop_fields", SK_OPT_LIST, NULL, false,
     "entity fields never written to the target, e.g. [civicNo, addresses] "
     "(default: the sink type's)",
     offsetof(struct sk_sink_settings, drop_fields)},
    {"protected_identities", SK_OPT_ENUM, NULL, false,
     "persons with a protected identity: skip, minimal or allow (default: the sink type's)",
     offsetof(struct sk_sink_settings, protected_identities),
     .choices = (const char *const[]){"skip", "minimal", "allow", NULL}},
    {0},
};

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

struct part {
    char *topic;
    int32_t partition;
    int64_t next;         /* every record before it is applied (or -1: unknown) */
    int64_t eof;          /* end offset last reported by the fetcher (-1: none yet) */
    int64_t drain_target; /* --once: must reach this (-1: not set) */
};

struct sink_run {
    struct sk_sink_env *env;
    rd_kafka_t *consumer;
    struct sk_dlq_writer *dlq; /* created at the first dead letter */
    rd_kafka_message_t **pending;
    size_t n_pending, cap_pending;
    int64_t first_pending_ms;
    struct part *parts;
    size_t n_parts;
    bool in_flush;
    bool revoked_in_flush; /* the assignment went away while a batch was retrying */
    bool marks_pending;    /* end offsets the target could not store yet */
    int64_t mark_warned_ms;
    int64_t mark_retry_ms;
    bool fatal;
    struct sk_record *recs;
    struct sk_outcome *outs;
    cJSON **docs;          /* decoded entities of recs, owned here */
    struct sk_buf json;    /* their JSON text, each ending in a NUL */
    size_t *json_at;       /* where record i's text starts in json */
    bool *driver_rejected; /* rejected before reaching the sink (bad key, undecodable) */
};

static struct part *part_find(struct sink_run *run, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < run->n_parts; i++)
        if (run->parts[i].partition == partition && strcmp(run->parts[i].topic, topic) == 0)
            return &run->parts[i];
    return NULL;
}

static void parts_clear(struct sink_run *run)
{
    for (size_t i = 0; i < run->n_parts; i++)
        free(run->parts[i].topic);
    free(run->parts);
    run->parts = NULL;
    run->n_parts = 0;
}

static const struct sk_entity *entity_of(struct sink_run *run, const char *topic)
{
    for (size_t i = 0; i < run->env->sink.n_entities; i++)
        if (strcmp(run->env->topics[i], topic) == 0)
            return run->env->sink.entities[i];
    return NULL;
}

static void docs_free(struct sink_run *run);

static void pending_drop(struct sink_run *run)
{
    for (size_t i = 0; i < run->n_pending; i++)
        rd_kafka_message_destroy(run->pending[i]);
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
        struct sk_dead_letter dl = {.connector = run->env->runner.name,
                                    .err = &run->outs[i].err,
                                    .key = m->key,
                                    .key_len = m->key_len,
                                    .value = m->payload,
                                    .value_len = m->len,
                                    .topic = rd_kafka_topic_name(m->rkt),
                                    .partition = m->partition,
                                    .offset = m->offset};
        if (sk_dlq_writer_send(run->dlq, &dl, err))
            return -1;
        sk_warn(run->env->runner.name, "dead-lettered %s[%d]@%lld: %s", dl.topic, (int)m->partition,
                (long long)m->offset, run->outs[i].err.msg);
    }
    return any ? sk_dlq_writer_wait(run->dlq, err) : 0;
}

/* ---- applying a batch ------------------------------------------------------ */

static void pause_all(struct sink_run *run, bool pause)
{
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(run->consumer, &a) || !a)
        return;
    if (a->cnt)
        (pause ? rd_kafka_pause_partitions : rd_kafka_resume_partitions)(run->consumer, a);
    rd_kafka_topic_partition_list_destroy(a);
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
    if (sk_privacy_apply(privacy, r->entity, d) == SK_PRIVACY_DELETE) {
        cJSON_Delete(d);
        r->value = NULL;
        r->value_len = 0;
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

/*
 * Decodes record i once for the sink and applies the sink's privacy policy.
 * A record that does not decode is rejected (DLQ); a protected person under
 * `skip` becomes a delete. The JSON text goes into the batch's buffer at
 * json_at[i] (pointed to once every record is printed: the buffer moves).
 */
static void decode(struct sink_run *run, size_t i)
{
    run->json_at[i] = run->json.len;
    if (sk_sink_decode(&run->env->privacy, &run->recs[i], &run->docs[i], &run->json,
                       &run->outs[i].err) < 0) {
        run->driver_rejected[i] = true;
        run->outs[i].kind = SK_REJECTED;
    }
}

static void docs_free(struct sink_run *run)
{
    for (size_t i = 0; i < run->cap_pending; i++) {
        cJSON_Delete(run->docs[i]);
        run->docs[i] = NULL;
    }
    sk_buf_reset(&run->json);
}

static void build_records(struct sink_run *run)
{
    docs_free(run);
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
        /* docs/architecture.md §5.2: the key is the entity's lowercase UUID; anything else is
         * not ours to apply. */
        if (!r->entity || sk_uuid_normalize(key, r->key) != 0) {
            run->driver_rejected[i] = true;
            run->outs[i].kind = SK_REJECTED;
            sk_error_set(&run->outs[i].err, SK_ERR_PERMANENT,
                         r->entity ? "record key is not a UUID" : "topic not consumed by sink");
            continue;
        }
        if (m->payload)
            decode(run, i);
    }
    for (size_t i = 0; i < run->n_pending; i++)
        if (run->recs[i].doc)
            run->recs[i].json = run->json.p + run->json_at[i];
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
        while (end < n && !run->driver_rejected[end])
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
        pause_all(run, true);
        *paused = true;
    }
    sk_runner_set_state(r, SK_STATE_RETRYING);
    atomic_fetch_add(&r->retries, 1);
    sk_warn(r->name, "%s; retrying in %lld ms", err->msg[0] ? err->msg : "apply failed",
            (long long)ms);
    wait_polling(run, ms);
    return !atomic_load(&r->stop) && !run->revoked_in_flush;
}

/*
 * Applies the pending records (rule 3 and 4). Returns 0 when every record is
 * applied or dead-lettered; -1 when it gave up (stop, revoked, fatal, retries
 * spent): then nothing past the last fully handled record is committed.
 */
static int apply_pending(struct sink_run *run)
{
    struct sk_sink_env *env = run->env;
    struct sk_runner *r = &env->runner;
    enum sk_on_error mode = sk_policy_on_error(&env->settings.policy);
    size_t n = run->n_pending, from = 0;
    struct sk_retry retry = {0};
    bool paused = false;
    int rc = 0;
    build_records(run);
    for (;;) {
        struct sk_error err = {0};
        size_t at = apply_range(run, from, &err);
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
        pause_all(run, false);
    if (rc == 0) {
        sk_runner_set_state(r, SK_STATE_RUNNING);
        sk_runner_set_error(r, "");
    }
    return rc;
}

/* Stores and (asynchronously) commits `next` for every partition that moved. */
static void commit_parts(struct sink_run *run, bool sync)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)run->n_parts);
    for (size_t i = 0; i < run->n_parts; i++)
        if (run->parts[i].next >= 0)
            rd_kafka_topic_partition_list_add(l, run->parts[i].topic, run->parts[i].partition)
                ->offset = run->parts[i].next;
    if (l->cnt) {
        rd_kafka_resp_err_t e = rd_kafka_offsets_store(run->consumer, l);
        if (e && e != RD_KAFKA_RESP_ERR__STATE)
            sk_warn(run->env->runner.name, "offsets_store: %s", rd_kafka_err2str(e));
        e = rd_kafka_commit(run->consumer, NULL, sync ? 0 : 1);
        if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET)
            sk_warn(run->env->runner.name, "commit: %s", rd_kafka_err2str(e));
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* Moves partitions whose fetcher reached an end past their applied records
 * (transaction markers occupy offsets: without this a caught-up sink would
 * show a lag of 1 forever). Only valid when nothing is pending. */
static bool advance_to_eof(struct sink_run *run)
{
    struct sk_offsets marks = {0};
    for (size_t i = 0; i < run->n_parts; i++) {
        struct part *p = &run->parts[i];
        if (p->eof > p->next)
            sk_offsets_add(&marks, p->topic, p->partition, p->eof);
    }
    bool moved = marks.n > 0;
    if (moved && run->env->sink.ops->mark_offsets) {
        /* The target keeps its own offsets: move only once it has them, or
         * its offsets and the group's would disagree. A failed mark is tried
         * again on the sink's next idle round (run->marks_pending). */
        struct sk_error err = {0};
        if (run->env->sink.ops->mark_offsets(&run->env->sink, &marks, &err)) {
            int64_t now = sk_mono_ms();
            if (now - run->mark_warned_ms > 10000) {
                sk_warn(run->env->runner.name, "storing end offsets in the target: %s (will retry)",
                        err.msg);
                run->mark_warned_ms = now;
            }
            run->marks_pending = true;
            moved = false;
        } else {
            run->marks_pending = false;
        }
    }
    if (moved)
        for (size_t i = 0; i < run->n_parts; i++)
            if (run->parts[i].eof > run->parts[i].next)
                run->parts[i].next = run->parts[i].eof;
    sk_offsets_free(&marks);
    return moved;
}

static void flush(struct sink_run *run, bool sync_commit)
{
    if (run->in_flush)
        return;
    run->in_flush = true;
    size_t n = run->n_pending;
    if (n > 0) {
        if (apply_pending(run) != 0) {
            /* Not applied: not committed. The records come again after the
             * restart or reassignment. */
            pending_drop(run);
            run->revoked_in_flush = false;
            run->in_flush = false;
            return;
        }
        struct sk_runner *r = &run->env->runner;
        size_t applied = 0, rejected = 0;
        int64_t now_us = sk_now_us();
        for (size_t i = 0; i < n; i++) {
            const rd_kafka_message_t *m = run->pending[i];
            struct part *p = part_find(run, rd_kafka_topic_name(m->rkt), m->partition);
            if (p && m->offset + 1 > p->next)
                p->next = m->offset + 1;
            if (run->outs[i].kind == SK_REJECTED) {
                rejected++;
            } else {
                applied++;
                /* end-to-end: the source saw the change -> the target has it */
                if (run->recs[i].observed_us > 0)
                    sk_hist_observe_us(&r->latency_seconds, now_us - run->recs[i].observed_us);
                int idx = run->recs[i].entity ? sk_entity_index(run->recs[i].entity) : -1;
                if (idx >= 0)
                    atomic_fetch_add(&r->per_entity[idx], 1);
            }
        }
        atomic_fetch_add(&r->records, applied);
        atomic_fetch_add(&r->failed, rejected);
        atomic_fetch_add(&r->dead_lettered, rejected);
        atomic_fetch_add(&r->cycles, 1);
        pending_drop(run);
    }
    advance_to_eof(run);
    commit_parts(run, sync_commit);
    run->in_flush = false;
}

/* ---- rebalancing ------------------------------------------------------------ */

static bool subscribed(const struct sk_sink_env *env, const char *topic)
{
    for (size_t i = 0; i < env->sink.n_entities; i++)
        if (strcmp(env->topics[i], topic) == 0)
            return true;
    return false;
}

static void on_assign(struct sink_run *run, rd_kafka_topic_partition_list_t *given)
{
    struct sk_sink_env *env = run->env;
    /* Only topics this sink subscribes to: a stale assignment (see
     * instance_id) must never feed it another prefix's records. */
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(given->cnt);
    for (int i = 0; i < given->cnt; i++) {
        if (subscribed(env, given->elems[i].topic))
            rd_kafka_topic_partition_list_add(parts, given->elems[i].topic,
                                              given->elems[i].partition)
                ->offset = given->elems[i].offset;
        else
            sk_warn(env->runner.name, "assignment holds %s [%d], not subscribed: ignored",
                    given->elems[i].topic, (int)given->elems[i].partition);
    }
    struct sk_offsets stored = {0};
    if (env->sink.ops->stored_offsets) {
        struct sk_error err = {0};
        if (env->sink.ops->stored_offsets(&env->sink, &stored, &err))
            sk_warn(env->runner.name, "stored offsets unavailable (%s): using the group's",
                    err.msg);
    }
    parts_clear(run);
    run->parts = sk_calloc((size_t)parts->cnt + 1, sizeof(*run->parts));
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        struct part *p = &run->parts[run->n_parts++];
        p->topic = sk_strdup(tp->topic);
        p->partition = tp->partition;
        p->next = -1;
        p->eof = -1;
        p->drain_target = -1;
        for (size_t j = 0; j < stored.n; j++) {
            if (stored.v[j].partition == tp->partition &&
                strcmp(stored.v[j].topic, tp->topic) == 0) {
                /* Exactly-once apply: resume where the target says it is. */
                tp->offset = stored.v[j].next_offset;
                p->next = stored.v[j].next_offset;
            }
        }
    }
    sk_info(env->runner.name, "assigned %d partition(s)%s", parts->cnt,
            stored.n ? " (resuming at offsets stored in the target)" : "");
    sk_offsets_free(&stored);
    rd_kafka_assign(run->consumer, parts);
    rd_kafka_topic_partition_list_destroy(parts);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct sink_run *run = opaque;
    switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        on_assign(run, parts);
        break;
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
        if (run->in_flush) {
            run->revoked_in_flush = true; /* the retrying batch gives up; nothing committed */
        } else if (!rd_kafka_assignment_lost(rk)) {
            flush(run, true); /* finish the batch in hand, then commit synchronously */
        } else {
            pending_drop(run); /* the generation is gone: do not commit */
        }
        sk_info(run->env->runner.name, "partitions revoked%s",
                rd_kafka_assignment_lost(rk) ? " (assignment lost)" : "");
        parts_clear(run);
        rd_kafka_assign(rk, NULL);
        break;
    default:
        sk_warn(run->env->runner.name, "rebalance: %s", rd_kafka_err2str(err));
        parts_clear(run);
        rd_kafka_assign(rk, NULL);
        break;
    }
}

static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    struct sink_run *run = opaque;
    return sk_runner_kafka_stats(&run->env->runner, json, len);
}

/*
 * The static member id: the group name plus a fingerprint of the topics the
 * sink subscribes to. A static leader that rejoins is handed its previous
 * assignment (KIP-814): after a change of kafka.topic_prefix or of a sink's
 * entities the same id would keep consuming the old topics and never the new
 * ones (seen in the bench). A new subscription is a new member; the old one
 * leaves the group when its session times out.
 */
static char *instance_id(const struct sk_sink_env *env, const char *group)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < env->sink.n_entities; i++)
        for (const char *c = env->topics[i];; c++) {
            h = (h ^ (unsigned char)*c) * 16777619u;
            if (!*c)
                break;
        }
    return sk_asprintf("%s-%08x", group, h);
}

static int consumer_create(struct sink_run *run, struct sk_error *err)
{
    struct sk_sink_env *env = run->env;
    char *cid = sk_asprintf("skolsync-sink-%s", env->runner.name);
    char *group = sk_asprintf("skolsync-%s", env->runner.name);
    char *instance = instance_id(env, group);
    /* Bounded memory (README "Memory"): the fetcher keeps at most this much
     * per consumer ahead of the sink, whatever the target's speed. */
    /* clang-format off */
    const char *const defaults[] = {
        "queued.max.messages.kbytes", "8192",
        "fetch.max.bytes", "8388608",
        "statistics.interval.ms", "5000",
        /* a new subscription waits for the old member's session to end
         * (instance_id); each sink is its group's only member */
        "session.timeout.ms", "10000",
        /* --once ends when every partition reported its end, and an end is
         * reported by an empty fetch, which the broker holds for
         * fetch.wait.max.ms (500): a drained sink waited ~1 s for nothing
         * (bench/analysis.md §2). Records come at once either way; only
         * idle fetches are more frequent. Without --once the list ends here. */
        env->once ? "fetch.wait.max.ms" : NULL, "100",
        NULL};
    /* clang-format on */
    rd_kafka_conf_t *conf = sk_kafka_conf_new(env->kafka, cid, defaults, err);
    int rc = -1;
    if (!conf)
        goto out;
    /* Static membership: a restarted daemon (even after kill -9) takes its
     * partitions back at once instead of waiting out the old session. */
    if (sk_kafka_conf_set(conf, "group.id", group, err) ||
        sk_kafka_conf_set(conf, "group.instance.id", instance, err) ||
        sk_kafka_conf_set(conf, "isolation.level", "read_committed", err) ||
        sk_kafka_conf_set(conf, "enable.auto.commit", "false", err) ||
        sk_kafka_conf_set(conf, "enable.auto.offset.store", "false", err) ||
        sk_kafka_conf_set(conf, "auto.offset.reset", "earliest", err) ||
        sk_kafka_conf_set(conf, "enable.partition.eof", "true", err) ||
        sk_kafka_conf_set(conf, "partition.assignment.strategy", "roundrobin", err)) {
        rd_kafka_conf_destroy(conf);
        goto out;
    }
    if (sk_kafka_embedded(env->kafka) &&
        (sk_kafka_conf_set(conf, "session.timeout.ms", "6000", err) ||
         sk_kafka_conf_set(conf, "heartbeat.interval.ms", "500", err))) {
        rd_kafka_conf_destroy(conf);
        goto out;
    }
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_stats_cb(conf, stats_cb);
    rd_kafka_conf_set_opaque(conf, run);
    char errstr[512];
    run->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!run->consumer) {
        rd_kafka_conf_destroy(conf);
        sk_error_set(err, SK_ERR_FATAL, "cannot create consumer: %s", errstr);
        goto out;
    }
    rd_kafka_poll_set_consumer(run->consumer);
    rd_kafka_topic_partition_list_t *subs =
        rd_kafka_topic_partition_list_new((int)env->sink.n_entities);
    for (size_t i = 0; i < env->sink.n_entities; i++)
        rd_kafka_topic_partition_list_add(subs, env->topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(run->consumer, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (e) {
        sk_error_set(err, SK_ERR_FATAL, "subscribe: %s", rd_kafka_err2str(e));
        goto out;
    }
    rc = 0;
out:
    free(cid);
    free(group);
    free(instance);
    return rc;
}

/*
 * --once: the sink is drained when every partition reached the end offset
 * (the last stable offset, under read_committed) taken once the sources
 * finished. The ends are asked by a separate short-lived client: on the
 * consumer's own connection the request would queue behind each partition's
 * long-polling fetch.
 */
static int query_drain_targets(struct sink_run *run)
{
    struct sk_error err = {0};
    char *cid = sk_asprintf("skolsync-drain-%s", run->env->runner.name);
    rd_kafka_t *rk = sk_kafka_reader_new(run->env->kafka, cid, &err);
    free(cid);
    if (!rk)
        return -1;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)run->n_parts);
    for (size_t i = 0; i < run->n_parts; i++)
        rd_kafka_topic_partition_list_add(l, run->parts[i].topic, run->parts[i].partition);
    int rc = sk_kafka_list_offsets(rk, l, RD_KAFKA_OFFSET_END, 10000) ? -1 : 0;
    for (size_t i = 0; rc == 0 && i < run->n_parts; i++)
        run->parts[i].drain_target = l->elems[i].offset;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    return rc;
}

static void check_drained(struct sink_run *run)
{
    struct sk_runner *r = &run->env->runner;
    if (!atomic_load(&r->drain_requested) || atomic_load(&r->drained) || run->n_pending ||
        run->n_parts == 0)
        return;
    bool targets = true;
    for (size_t i = 0; i < run->n_parts; i++)
        targets &= run->parts[i].drain_target >= 0;
    if (!targets && query_drain_targets(run))
        return; /* try again on the next round */
    for (size_t i = 0; i < run->n_parts; i++)
        if (run->parts[i].next < run->parts[i].drain_target)
            return;
    commit_parts(run, true);
    atomic_store(&r->drained, true);
    sk_runner_set_state(r, SK_STATE_IDLE);
}

static void *sink_thread(void *arg)
{
    struct sk_sink_env *env = arg;
    struct sk_runner *r = &env->runner;
    struct sink_run run = {.env = env};
    size_t batch = (size_t)env->settings.batch_size;
    run.pending = sk_calloc(batch, sizeof(*run.pending));
    run.recs = sk_calloc(batch, sizeof(*run.recs));
    run.outs = sk_calloc(batch, sizeof(*run.outs));
    run.docs = sk_calloc(batch, sizeof(*run.docs));
    run.json_at = sk_calloc(batch, sizeof(*run.json_at));
    run.driver_rejected = sk_calloc(batch, sizeof(*run.driver_rejected));
    run.cap_pending = batch;

    for (int attempt = 0; !atomic_load(&r->stop); attempt++) {
        struct sk_error err = {0};
        if (consumer_create(&run, &err) == 0)
            break;
        sk_runner_set_error(r, err.msg);
        if (err.cls == SK_ERR_FATAL || !run.consumer) {
            sk_error_log(r->name, "%s", err.msg);
            sk_runner_set_state(r, SK_STATE_FAILED);
            goto out;
        }
    }
    sk_runner_set_state(r, SK_STATE_RUNNING);
    bool paused = false;
    bool applied_since_trim = false;
    while (!atomic_load(&r->stop) && !run.fatal) {
        /* Operator pause (API): apply what is in hand, then stop fetching but
         * stay in the group. */
        if (atomic_load(&r->paused) != paused) {
            paused = !paused;
            if (paused)
                flush(&run, true);
            pause_all(&run, paused);
            sk_runner_set_state(r, paused ? SK_STATE_PAUSED : SK_STATE_RUNNING);
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(run.consumer, 100);
        if (!m && !run.n_pending && applied_since_trim) {
            /* caught up: give the batch's freed heap back (see source_driver.c) */
            malloc_trim(0);
            applied_since_trim = false;
        }
        if (m)
            applied_since_trim = true;
        if (m) {
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                struct part *p = part_find(&run, rd_kafka_topic_name(m->rkt), m->partition);
                if (p && m->offset > p->eof)
                    p->eof = m->offset;
                rd_kafka_message_destroy(m);
                if (run.n_pending == 0 && advance_to_eof(&run))
                    commit_parts(&run, false);
                else if (run.n_pending)
                    flush(&run, false); /* reached the end: do not linger */
            } else if (m->err) {
                sk_warn(r->name, "consume: %s", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
            } else {
                if (run.n_pending == 0)
                    run.first_pending_ms = sk_mono_ms();
                run.pending[run.n_pending++] = m;
                if (run.n_pending == run.cap_pending)
                    flush(&run, false);
            }
        }
        if (run.n_pending && sk_mono_ms() - run.first_pending_ms >= env->settings.batch_linger_ms)
            flush(&run, false);
        check_drained(&run);
        if (paused)
            continue;
        /* end offsets the target refused (it was down): again, once a second */
        if (run.marks_pending && !run.n_pending && sk_mono_ms() - run.mark_retry_ms > 1000) {
            run.mark_retry_ms = sk_mono_ms();
            if (advance_to_eof(&run))
                commit_parts(&run, false);
        }
        if (!run.n_pending && atomic_load(&r->state) == SK_STATE_RUNNING && run.n_parts &&
            !atomic_load(&r->drain_requested)) {
            bool caught_up = true;
            for (size_t i = 0; i < run.n_parts; i++)
                if (run.parts[i].eof < 0 || run.parts[i].next < run.parts[i].eof)
                    caught_up = false;
            if (caught_up)
                sk_runner_set_state(r, SK_STATE_IDLE);
        } else if (run.n_pending && atomic_load(&r->state) == SK_STATE_IDLE) {
            sk_runner_set_state(r, SK_STATE_RUNNING);
        }
    }
    /* Rule 5: apply what is in hand (unless the target is failing), commit, leave. */
    if (!run.fatal)
        flush(&run, true);
    else
        pending_drop(&run);
    rd_kafka_consumer_close(run.consumer);
    rd_kafka_destroy(run.consumer);
out:
    sk_dlq_writer_free(run.dlq);
    parts_clear(&run);
    free(run.pending);
    free(run.recs);
    free(run.outs);
    free(run.docs);
    free(run.json_at);
    sk_buf_free(&run.json);
    free(run.driver_rejected);
    sk_runner_set_state(r, run.fatal ? SK_STATE_FAILED : SK_STATE_STOPPED);
    return NULL;
}

int sk_sink_driver_start(struct sk_sink_env *env)
{
    if (pthread_create(&env->runner.thread, NULL, sink_thread, env))
        return -1;
    env->runner.started = true;
    return 0;
}
