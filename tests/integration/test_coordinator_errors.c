/*
 * test_coordinator_errors.c: a sink starting while Kafka's group coordinator
 * answers with errors, as a broker does in its first seconds (its
 * __consumer_offsets partitions still loading) or after a leader move.
 *
 * Before it joins its group, a sink takes over the offsets its group had
 * under the old group name (sink_migrate.c): two admin calls to the
 * coordinator. Here they go to librdkafka's mock cluster, reached as an
 * ordinary broker address, with errors injected on OffsetFetch (the request
 * behind a group's committed offsets). skolsync once crashed there, in
 * librdkafka's own thread, by sending the request from a handle without a
 * group of its own; after the fix the offsets must still be taken over once
 * the coordinator answers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "kafka.h"
#include "log.h"
#include "sink_hub.h"
#include "sink_internal.h"
#include "sk_test.h"

enum { OFFSET_COMMIT = 8, OFFSET_FETCH = 9 }; /* Kafka API keys (private to librdkafka) */

#define TOPIC "mig.persons"

static rd_kafka_t *group_consumer(const char *bootstrap, const char *group)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr)),
                 RD_KAFKA_CONF_OK);
    cr_assert_eq(rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)),
                 RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(rk, "%s", errstr);
    return rk;
}

/* Starts ListConsumerGroupOffsets for group on q (its answer arrives there). */
static void ask_offsets(rd_kafka_t *rk, rd_kafka_queue_t *q, const char *group)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, TOPIC, 0);
    rd_kafka_ListConsumerGroupOffsets_t *req = rd_kafka_ListConsumerGroupOffsets_new(group, l);
    rd_kafka_ListConsumerGroupOffsets(rk, &req, 1, NULL, q);
    rd_kafka_ListConsumerGroupOffsets_destroy(req);
    rd_kafka_topic_partition_list_destroy(l);
}

/* The offset group committed for TOPIC [0] (-1001: none), asked once by the
 * admin call the migration uses: -2 when the answer is an error. */
static int64_t list_offset(const char *bootstrap, const char *group)
{
    rd_kafka_t *rk = group_consumer(bootstrap, "reader");
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    ask_offsets(rk, q, group);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 15000);
    cr_assert_not_null(ev, "no answer to ListConsumerGroupOffsets");
    int64_t off = -2;
    size_t n = 0;
    const rd_kafka_group_result_t **res = rd_kafka_ListConsumerGroupOffsets_result_groups(
        rd_kafka_event_ListConsumerGroupOffsets_result(ev), &n);
    if (!rd_kafka_event_error(ev) && n == 1 && !rd_kafka_group_result_error(res[0])) {
        const rd_kafka_topic_partition_list_t *parts = rd_kafka_group_result_partitions(res[0]);
        if (parts && parts->cnt == 1 && !parts->elems[0].err)
            off = parts->elems[0].offset;
    }
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return off;
}

Test(coordinator_errors, a_sink_migrating_offsets_lives_through_coordinator_errors, .timeout = 120)
{
    rd_kafka_t *holder;
    rd_kafka_mock_cluster_t *mc = skt_mock_start(TOPIC, 1, &holder);
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);

    /* The sink's group under its old name has committed offset 42. */
    rd_kafka_t *old = group_consumer(bootstrap, "skolsync-db");
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, TOPIC, 0)->offset = 42;
    rd_kafka_resp_err_t e = rd_kafka_commit(old, l, 0);
    cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "commit: %s", rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(old);
    cr_assert_eq(list_offset(bootstrap, "skolsync-db"), 42);

    /* The next group offsets requests meet a coordinator that is loading,
     * then one that moved, while its old broker is still asked. */
    rd_kafka_mock_push_request_errors(mc, OFFSET_FETCH, 4, RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
                                      RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE);

    struct sk_kafka_conf kc = {.brokers = (char *)bootstrap, .topic_prefix = "mig."};
    struct sk_kafka *k = sk_kafka_describe(&kc);
    char *topics[] = {TOPIC};
    struct sk_sink_env env = {.kafka = k, .topics = topics, .group = "mig-db"};
    env.runner.kind = SK_RUNNER_SINK;
    env.runner.name = "db";
    env.sink.n_entities = 1;
    sk_log_setup(SK_LOG_WARN, false);
    sink_migrate_offsets(&env); /* crashed here (SIGSEGV in librdkafka) */

    /* It went through all four errors (one try each) and on: the next
     * request is answered at once. The mock answers only offsets asked by
     * partition, not a group's whole list, so whether the offsets were
     * taken over is tested on the real broker (test_ha). */
    cr_assert_eq(list_offset(bootstrap, "skolsync-db"), 42,
                 "errors left for the next request: the migration gave up early");
    sk_kafka_destroy(k);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(holder);
}

/*
 * The lag monitor of a daemon with 100 source/sink pairs on a starved machine
 * crashed (SIGSEGV in rd_kafka_DescribeConsumerGroups_result_groups): a wait
 * for one admin request ran out, the late answer landed on the shared queue
 * and the next wait took it for its own, of another type, whose typed result
 * is NULL. The wait now takes only an answer of the type it waits for.
 */
Test(coordinator_errors, an_admin_answer_of_another_kind_is_not_taken_for_the_awaited_one,
     .timeout = 60)
{
    rd_kafka_t *holder;
    rd_kafka_mock_cluster_t *mc = skt_mock_start(TOPIC, 1, &holder);
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
    sk_log_setup(SK_LOG_WARN, false);

    rd_kafka_t *rk = group_consumer(bootstrap, "reader");
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    ask_offsets(rk, q, "lag-a"); /* answered at once, but nobody waits for it */
    struct sk_error err = {0};
    rd_kafka_event_t *ev = sk_kafka_admin_wait(q, RD_KAFKA_EVENT_DESCRIBECONSUMERGROUPS_RESULT,
                                               "DescribeConsumerGroups", 500, &err);
    cr_assert_null(ev, "a ListConsumerGroupOffsets answer was taken for DescribeConsumerGroups");
    cr_assert(strstr(err.msg, "no answer"), "%s", err.msg);

    ask_offsets(rk, q, "lag-b"); /* the awaited type is still taken */
    ev = sk_kafka_admin_wait(q, RD_KAFKA_EVENT_LISTCONSUMERGROUPOFFSETS_RESULT,
                             "ListConsumerGroupOffsets", 10000, &err);
    cr_assert_not_null(ev, "%s", err.msg);
    size_t n = 0;
    const rd_kafka_group_result_t **res = rd_kafka_ListConsumerGroupOffsets_result_groups(
        rd_kafka_event_ListConsumerGroupOffsets_result(ev), &n);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(rd_kafka_group_result_name(res[0]), "lag-b");
    rd_kafka_event_destroy(ev);

    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(holder);
}

/* The shared consumer's group offsets for TOPIC [0] at offset, sync or not. */
static int hub_commit(struct sk_hub_member *m, int64_t offset, bool sync, struct sk_error *err)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, TOPIC, 0)->offset = offset;
    int rc = sk_sink_hub_commit(m, "co-db", l, sync, err);
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

/*
 * A node-local sink's group offsets sent while the coordinator is away. In
 * librdkafka 2.0.2 a group request that times out before its coordinator is
 * found aborts the process when the coordinator comes back
 * (architecture.md §8.14h): the hub's did, with a 10 s timeout, in
 * test_broker_outage. Now it never times out inside librdkafka: unanswered
 * for 30 s, its client is ended and the offsets are sent again from a new
 * one, and they reach the group once the broker is back. Offsets refused
 * (or lost with a broker) are sent again too.
 */
Test(coordinator_errors, group_offsets_sent_while_the_coordinator_is_away_arrive_when_it_returns,
     .timeout = 150)
{
    rd_kafka_t *holder;
    rd_kafka_mock_cluster_t *mc = skt_mock_start(TOPIC, 1, &holder);
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
    sk_log_setup(SK_LOG_WARN, false);
    struct sk_kafka_conf kc = {.brokers = (char *)bootstrap, .topic_prefix = "mig."};
    struct sk_kafka *k = sk_kafka_describe(&kc);
    struct sk_sink_hubs *hubs = sk_sink_hubs_new(k, false);
    rd_kafka_topic_partition_list_t *from = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(from, TOPIC, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    struct sk_runner runner = {.name = "db", .kind = SK_RUNNER_SINK};
    struct sk_error err = {0};
    struct sk_hub_member *m = sk_sink_hub_attach(hubs, "db", from, 1 << 20, &runner, &err);
    rd_kafka_topic_partition_list_destroy(from);
    cr_assert_not_null(m, "%s", err.msg);

    cr_assert_eq(hub_commit(m, 5, true, &err), 0, "%s", err.msg);
    cr_assert_eq(list_offset(bootstrap, "co-db"), 5);
    /* refused once: owed again, and sent again a second later */
    rd_kafka_mock_push_request_errors(mc, OFFSET_COMMIT, 1,
                                      RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE);
    cr_assert_neq(hub_commit(m, 6, true, &err), 0, "the injected refusal was not met");
    for (int i = 0; i < 50; i++) {
        err = (struct sk_error){0};
        sk_sink_hub_commit(m, "co-db", NULL, false, &err);
        usleep(100000);
    }
    cr_assert_eq(list_offset(bootstrap, "co-db"), 6, "refused offsets were dropped");

    rd_kafka_mock_broker_set_down(mc, 1);
    hub_commit(m, 7, false, &err);
    /* 40 s away: past librdkafka's old 10 s and the hub's own 30 s; the
     * sink's loop asks for answers all along */
    for (int i = 0; i < 400; i++) {
        err = (struct sk_error){0};
        sk_sink_hub_commit(m, "co-db", NULL, false, &err);
        usleep(100000);
    }
    rd_kafka_mock_broker_set_up(mc, 1);
    int64_t got = -1;
    for (int i = 0; i < 300 && got != 7; i++) { /* the old request aborted in here */
        err = (struct sk_error){0};
        sk_sink_hub_commit(m, "co-db", NULL, false, &err);
        usleep(100000);
        if (i % 20 == 19)
            got = list_offset(bootstrap, "co-db");
    }
    cr_assert_eq(got, 7, "the offsets sent while the coordinator was away never arrived");

    sk_sink_hub_detach(m);
    sk_sink_hubs_free(hubs);
    sk_kafka_destroy(k);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(holder);
}
