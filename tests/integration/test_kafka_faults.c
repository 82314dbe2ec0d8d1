/*
 * test_kafka_faults.c: Kafka misbehaving under a running sync, injected with
 * librdkafka's mock cluster (the embedded broker, 3 brokers here): request
 * errors on produce, fetch, offset commit and group coordination; a broker
 * down and up; a leader move; acknowledgements delayed past the producer's
 * timeout (the record is written, its acknowledgement lost). Each run must
 * end with the target equal to the input: nothing lost, and duplicates in
 * Kafka absorbed by the idempotent sink.
 *
 * The daemon runs in this (forked) test process, so the test reaches the
 * mock cluster through the kafka_started hook.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "daemon.h"
#include "kafka.h"
#include "log.h"
#include "sk_test.h"

/* Kafka API keys (private to librdkafka: docs/architecture.md §8.10). */
enum {
    PRODUCE = 0,
    FETCH = 1,
    OFFSET_COMMIT = 8,
    OFFSET_FETCH = 9,
    FIND_COORDINATOR = 10,
    JOIN_GROUP = 11,
    HEARTBEAT = 12,
    SYNC_GROUP = 14,
    INIT_PRODUCER_ID = 22
};

enum scenario { REQUEST_ERRORS, BROKER_DOWN_UP, LEADER_MOVE, LOST_ACKS };

struct plan {
    enum scenario scenario;
    rd_kafka_mock_cluster_t *mock;
    pthread_t thread;
    int injected;
};

static void *inject(void *arg)
{
    struct plan *p = arg;
    usleep(1500 * 1000); /* into the sync */
    rd_kafka_mock_cluster_t *mc = p->mock;
    switch (p->scenario) {
    case REQUEST_ERRORS:
        rd_kafka_mock_push_request_errors(
            mc, PRODUCE, 4, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR__TRANSPORT,
            RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS);
        rd_kafka_mock_push_request_errors(mc, FETCH, 3, RD_KAFKA_RESP_ERR__TRANSPORT,
                                          RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                          RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
        rd_kafka_mock_push_request_errors(
            mc, OFFSET_COMMIT, 3, RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_COORDINATOR);
        rd_kafka_mock_push_request_errors(mc, HEARTBEAT, 3, RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
                                          RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
                                          RD_KAFKA_RESP_ERR_NOT_COORDINATOR);
        rd_kafka_mock_push_request_errors(mc, FIND_COORDINATOR, 2,
                                          RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
                                          RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE);
        p->injected = 15;
        break;
    case BROKER_DOWN_UP:
        for (int b = 1; b <= 3; b++)
            rd_kafka_mock_broker_set_down(mc, b);
        sleep(4);
        for (int b = 1; b <= 3; b++)
            rd_kafka_mock_broker_set_up(mc, b);
        p->injected = 3;
        break;
    case LEADER_MOVE:
        /* every partition of the persons topic to another broker, twice */
        for (int round = 0; round < 2; round++) {
            for (int part = 0; part < 3; part++)
                rd_kafka_mock_partition_set_leader(mc, "skolsync.persons", part,
                                                   (part + round) % 3 + 1);
            p->injected += 3;
            usleep(700 * 1000);
        }
        break;
    case LOST_ACKS:
        /* answers slower than message.timeout.ms: written, but reported failed */
        for (int b = 1; b <= 3; b++)
            rd_kafka_mock_broker_push_request_error_rtts(mc, b, PRODUCE, 2,
                                                         RD_KAFKA_RESP_ERR_NO_ERROR, 3500,
                                                         RD_KAFKA_RESP_ERR_NO_ERROR, 3500);
        p->injected = 6;
        break;
    }
    return NULL;
}

static void on_kafka(struct sk_kafka *k, void *ctx)
{
    struct plan *p = ctx;
    p->mock = sk_kafka_mock(k);
    cr_assert_not_null(p->mock);
    pthread_create(&p->thread, NULL, inject, p);
}

static void run_with(enum scenario scenario, const char *extra_kafka)
{
    char *dir = skt_tmpdir("faults");
    char *data = skt_fmt("%s/data", dir);
    char *db = skt_fmt("%s/out.db", dir);
    char *cfg = skt_fmt("%s/skolsync.yaml", dir);
    skt_generate(data, 41, 150);
    char *text =
        skt_fmt("kafka:\n  brokers: embedded\n  embedded_brokers: 3\n%s"
                "admin:\n  listen: 127.0.0.1:0\n"
                "log:\n  level: warn\n"
                "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                "    batch_size: 200\n    retry_backoff: 200ms\n    retry_backoff_max: 2s\n"
                "sinks:\n  db:\n    type: sqlite-sink\n    path: %s\n    batch_size: 200\n"
                "    retry_backoff: 200ms\n    retry_backoff_max: 2s\n",
                extra_kafka ? extra_kafka : "", data, db);
    skt_write(cfg, text);
    struct sk_config_errors errs = {0};
    struct sk_daemon_config *c = sk_daemon_config_load(cfg, &errs);
    cr_assert_not_null(c, "%s", errs.n ? errs.v[0].text : "");
    sk_log_setup(SK_LOG_WARN, false);
    struct plan plan = {.scenario = scenario};
    struct sk_run_options opt = {
        .once = true, .summary = stderr, .kafka_started = on_kafka, .hook_ctx = &plan};
    int rc = sk_daemon_run(c, &opt);
    pthread_join(plan.thread, NULL);
    cr_assert_eq(rc, 0, "the sync did not complete under faults");
    cr_assert_gt(plan.injected, 0);
    char why[2048] = "";
    cr_assert(skt_db_matches_dataset(db, data, why, sizeof(why)), "%s", why);
    sk_daemon_config_free(c);
}

TestSuite(kafka_faults, .timeout = 240);

Test(kafka_faults, request_errors_on_produce_fetch_commit_and_group)
{
    run_with(REQUEST_ERRORS, NULL);
}

Test(kafka_faults, all_brokers_down_then_up)
{
    run_with(BROKER_DOWN_UP, "  properties:\n    socket.connection.setup.timeout.ms: \"2000\"\n");
}

Test(kafka_faults, leader_moves)
{
    run_with(LEADER_MOVE, NULL);
}

Test(kafka_faults, acknowledgements_lost_after_the_write)
{
    /* the producer gives up on a batch after 2 s although the broker wrote it;
     * the batch is sent again (at-least-once) and the sink absorbs the duplicates */
    run_with(LOST_ACKS, "  properties:\n    message.timeout.ms: \"2000\"\n");
}
