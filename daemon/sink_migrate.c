/*
 * sink_migrate.c: a sink's committed offsets across the change of group
 * names. Before deployments (names.h) every sink's group was
 * `skolsync-<sink>`, whatever the topic prefix and the node. A sink whose
 * group has no committed offsets yet, while the old group has some for the
 * topics it reads, starts where the old group was: an upgrade applies
 * nothing twice (sinks that keep their offsets in the target resume from
 * those anyway, §3.4).
 *
 * Owns: reading the old group's offsets and committing them for the new
 * group, once, before the sink joins. Must never: touch a group that
 * already has offsets, fail the sink (without the old offsets it starts as
 * a new group would), or run on the embedded broker (nothing outlives the
 * process there, and the mock has no such admin calls, §8.11).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "names.h"
#include "sink_internal.h"
#include "util.h"

#define ADMIN_TIMEOUT_MS 10000
#define MIGRATE_ATTEMPTS 5

/* The group's result of a ListConsumerGroupOffsets or AlterConsumerGroupOffsets
 * event: its partitions (owned by ev), or NULL with err. */
static const rd_kafka_topic_partition_list_t *
group_parts(const rd_kafka_group_result_t **res, size_t n, const char *what, struct sk_error *err)
{
    const rd_kafka_error_t *e = n ? rd_kafka_group_result_error(res[0]) : NULL;
    if (n == 0 || e) {
        sk_error_set(err, SK_ERR_RETRIABLE, "%s: %s", what,
                     e ? rd_kafka_error_string(e) : "no result");
        return NULL;
    }
    return rd_kafka_group_result_partitions(res[0]);
}

/* The offsets group committed (every partition), or NULL with err. Caller destroys. */
static rd_kafka_topic_partition_list_t *committed(rd_kafka_t *rk, rd_kafka_queue_t *q,
                                                  const char *group, struct sk_error *err)
{
    rd_kafka_ListConsumerGroupOffsets_t *req = rd_kafka_ListConsumerGroupOffsets_new(group, NULL);
    rd_kafka_AdminOptions_t *opts = /* rk ends with the migration (§8.14h) */
        sk_kafka_coord_options(rk, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS);
    rd_kafka_ListConsumerGroupOffsets(rk, &req, 1, opts, q); /* one group per call (§8.8) */
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_ListConsumerGroupOffsets_destroy(req);
    rd_kafka_event_t *ev = sk_kafka_admin_wait(q, RD_KAFKA_EVENT_LISTCONSUMERGROUPOFFSETS_RESULT,
                                               "ListConsumerGroupOffsets", ADMIN_TIMEOUT_MS, err);
    if (!ev)
        return NULL;
    size_t n = 0;
    const rd_kafka_group_result_t **res = rd_kafka_ListConsumerGroupOffsets_result_groups(
        rd_kafka_event_ListConsumerGroupOffsets_result(ev), &n);
    const rd_kafka_topic_partition_list_t *parts =
        group_parts(res, n, "ListConsumerGroupOffsets", err);
    rd_kafka_topic_partition_list_t *copy =
        parts ? rd_kafka_topic_partition_list_copy(parts) : NULL;
    rd_kafka_event_destroy(ev);
    return copy;
}

static int commit_for(rd_kafka_t *rk, rd_kafka_queue_t *q, const char *group,
                      const rd_kafka_topic_partition_list_t *offsets, struct sk_error *err)
{
    rd_kafka_AlterConsumerGroupOffsets_t *req =
        rd_kafka_AlterConsumerGroupOffsets_new(group, offsets);
    rd_kafka_AdminOptions_t *opts =
        sk_kafka_coord_options(rk, RD_KAFKA_ADMIN_OP_ALTERCONSUMERGROUPOFFSETS);
    rd_kafka_AlterConsumerGroupOffsets(rk, &req, 1, opts, q);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_AlterConsumerGroupOffsets_destroy(req);
    rd_kafka_event_t *ev = sk_kafka_admin_wait(q, RD_KAFKA_EVENT_ALTERCONSUMERGROUPOFFSETS_RESULT,
                                               "AlterConsumerGroupOffsets", ADMIN_TIMEOUT_MS, err);
    if (!ev)
        return -1;
    size_t n = 0;
    const rd_kafka_group_result_t **res = rd_kafka_AlterConsumerGroupOffsets_result_groups(
        rd_kafka_event_AlterConsumerGroupOffsets_result(ev), &n);
    const rd_kafka_topic_partition_list_t *parts =
        group_parts(res, n, "AlterConsumerGroupOffsets", err);
    for (int i = 0; parts && i < parts->cnt; i++)
        if (parts->elems[i].err) {
            sk_error_set(err, SK_ERR_RETRIABLE, "AlterConsumerGroupOffsets: %s [%d]: %s",
                         parts->elems[i].topic, (int)parts->elems[i].partition,
                         rd_kafka_err2str(parts->elems[i].err));
            parts = NULL;
        }
    rd_kafka_event_destroy(ev);
    return parts ? 0 : -1;
}

static bool reads(const struct sk_sink_env *env, const char *topic)
{
    for (size_t i = 0; i < env->sink.n_entities; i++)
        if (strcmp(env->topics[i], topic) == 0)
            return true;
    return false;
}

/* The offsets to take over: the old group's for the sink's topics, if the
 * new group has none. NULL when there is nothing to do. */
static rd_kafka_topic_partition_list_t *to_take(struct sk_sink_env *env, rd_kafka_t *rk,
                                                rd_kafka_queue_t *q, const char *legacy,
                                                struct sk_error *err)
{
    rd_kafka_topic_partition_list_t *have = committed(rk, q, env->group, err);
    if (!have)
        return NULL;
    bool has_offsets = false;
    for (int i = 0; i < have->cnt; i++)
        has_offsets |= have->elems[i].offset >= 0;
    rd_kafka_topic_partition_list_destroy(have);
    if (has_offsets)
        return NULL;
    rd_kafka_topic_partition_list_t *old = committed(rk, q, legacy, err);
    if (!old)
        return NULL;
    rd_kafka_topic_partition_list_t *take = rd_kafka_topic_partition_list_new(old->cnt);
    for (int i = 0; i < old->cnt; i++)
        if (old->elems[i].offset >= 0 && reads(env, old->elems[i].topic))
            rd_kafka_topic_partition_list_add(take, old->elems[i].topic, old->elems[i].partition)
                ->offset = old->elems[i].offset;
    rd_kafka_topic_partition_list_destroy(old);
    if (take->cnt == 0) {
        rd_kafka_topic_partition_list_destroy(take);
        return NULL;
    }
    return take;
}

void sink_migrate_offsets(struct sk_sink_env *env)
{
    char *legacy = sk_name_sink_group_legacy(env->runner.name);
    if (sk_kafka_embedded(env->kafka) || strcmp(legacy, env->group) == 0) {
        free(legacy);
        return;
    }
    struct sk_error err = {0};
    char *cid = sk_name_client(sk_kafka_names(env->kafka), "migrate", env->runner.name);
    /* A consumer (with a group of its own it never joins), not a producer:
     * librdkafka 2.0.2 answers a coordinator error on these admin calls
     * (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS: a broker just started)
     * by asking the handle's own group to find its coordinator again, and a
     * handle without a group crashed there (test_coordinator_errors). */
    rd_kafka_t *rk = sk_kafka_reader_new(env->kafka, cid, &err);
    free(cid);
    if (!rk) {
        sk_warn(env->runner.name, "offsets of group %s not checked: %s", legacy, err.msg);
        free(legacy);
        return;
    }
    /* A coordinator that is loading or moved answers with an error that
     * passes in a second or two: a few tries before the sink goes on
     * without the old offsets (and applies from the start, idempotently).
     * A queue per try: an answer that came too late is not taken for the
     * next try's (librdkafka's own timeout is an hour, §8.14h). */
    rd_kafka_topic_partition_list_t *take = NULL;
    for (int attempt = 0; attempt < MIGRATE_ATTEMPTS && !atomic_load(&env->runner.stop);
         attempt++) {
        if (attempt) {
            sk_debug(env->runner.name, "offsets of group %s: %s; trying again", legacy, err.msg);
            sleep(1);
        }
        err = (struct sk_error){0};
        rd_kafka_queue_t *tq = rd_kafka_queue_new(rk);
        take = to_take(env, rk, tq, legacy, &err);
        rd_kafka_queue_destroy(tq);
        if (take || !err.msg[0])
            break;
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    if (take && commit_for(rk, q, env->group, take, &err) == 0)
        sk_info(env->runner.name,
                "group %s starts at the %d committed offset(s) of %s (its name before "
                "kafka.deployment)",
                env->group, take->cnt, legacy);
    if (err.msg[0])
        sk_warn(env->runner.name, "offsets of group %s not taken over: %s", legacy, err.msg);
    if (take)
        rd_kafka_topic_partition_list_destroy(take);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    free(legacy);
}
