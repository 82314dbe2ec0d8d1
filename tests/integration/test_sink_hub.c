/*
 * test_sink_hub.c: the shared consumer's back-pressure (daemon/sink_hub.c,
 * docs/architecture.md §6.4.1), through the hub's own API on librdkafka's
 * mock cluster: a sink that takes nothing bounds what waits for it, holds
 * the others back while it is attached, and holds nobody back once it is
 * suspended; every sink still gets every record once, in order, also after
 * an idle sink's trim gave its queue's ring back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "kafka.h"
#include "log.h"
#include "runner.h"
#include "sink_hub.h"
#include "sk_test.h"

#define TOPIC "bp.persons"
#define PARTITIONS 2
#define RECORDS 8000 /* ~8.9 MB of values: far past every budget below */
#define VALUE_BYTES 1000
#define BUDGET (64 << 10) /* a sink's share of the prefetch: ~60 of these records */
/* What may wait for a sink that takes nothing: its budget, and what the
 * hub's thread hands in the one turn (HUB_BURST, 1000 records) before it
 * sees the queue is over and pauses. Without back-pressure it is all. */
#define BOUND 1200

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void produce_all(const char *bootstrap)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr)),
                 RD_KAFKA_CONF_OK);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(p, "%s", errstr);
    char *value = malloc(VALUE_BYTES);
    memset(value, 'v', VALUE_BYTES);
    for (int i = 0; i < RECORDS; i++) {
        char key[40];
        snprintf(key, sizeof(key), "00000000-0000-4000-8000-%012d", i);
        rd_kafka_resp_err_t e;
        while ((e = rd_kafka_producev(
                    p, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_PARTITION(i % PARTITIONS),
                    RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE(value, VALUE_BYTES),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END)) ==
               RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(p, 10);
        cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "%s", rd_kafka_err2str(e));
    }
    cr_assert_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    free(value);
    rd_kafka_destroy(p);
}

/* What one sink was handed: the next offset expected per partition. */
struct got {
    int64_t next[PARTITIONS];
    int total;
};

/* Takes what the sink's queue holds (up to ms), checking each record is
 * the next of its partition: none skipped, none handed twice. */
static void take(struct sk_hub_member *m, struct got *g, int ms)
{
    int64_t until = now_ms() + ms;
    while (g->total < RECORDS && now_ms() < until) {
        struct sk_hub_msg *held;
        rd_kafka_message_t *msg = sk_sink_hub_poll(m, 50, &held);
        if (!msg)
            continue;
        if (!msg->err) {
            cr_assert(msg->partition >= 0 && msg->partition < PARTITIONS);
            cr_assert_eq(msg->offset, g->next[msg->partition],
                         "partition %d: offset %lld handed, %lld expected", (int)msg->partition,
                         (long long)msg->offset, (long long)g->next[msg->partition]);
            g->next[msg->partition]++;
            g->total++;
        }
        sk_sink_hub_release(held);
    }
}

Test(sink_hub, a_sink_that_takes_nothing_bounds_its_queue_and_holds_the_others_until_suspended,
     .timeout = 120)
{
    rd_kafka_t *holder;
    rd_kafka_mock_cluster_t *mc = skt_mock_start(TOPIC, PARTITIONS, &holder);
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
    produce_all(bootstrap);

    sk_log_setup(SK_LOG_WARN, false);
    struct sk_kafka_conf kc = {.brokers = (char *)bootstrap, .topic_prefix = "bp."};
    struct sk_kafka *k = sk_kafka_describe(&kc);
    struct sk_sink_hubs *hubs = sk_sink_hubs_new(k, false);
    rd_kafka_topic_partition_list_t *from = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(from, TOPIC, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    struct sk_runner slow_runner = {.name = "slow", .kind = SK_RUNNER_SINK};
    struct sk_runner fast_runner = {.name = "fast", .kind = SK_RUNNER_SINK};
    struct sk_error err = {0};
    struct sk_hub_member *slow = sk_sink_hub_attach(hubs, "slow", from, BUDGET, &slow_runner, &err);
    cr_assert_not_null(slow, "%s", err.msg);
    struct sk_hub_member *fast = sk_sink_hub_attach(hubs, "fast", from, BUDGET, &fast_runner, &err);
    cr_assert_not_null(fast, "%s", err.msg);

    /* The fast sink takes all it is handed for 5 s; the slow one nothing. */
    struct got fast_got = {0}, slow_got = {0};
    take(fast, &fast_got, 5000);
    size_t waiting = sk_sink_hub_queued(slow);
    cr_assert_gt(waiting, 0, "nothing was fetched at all");
    cr_assert_leq(waiting, BOUND, "%zu records wait for a sink that takes nothing (bound %d)",
                  waiting, BOUND);
    cr_assert_lt(fast_got.total, RECORDS,
                 "the fast sink got every record while the slow one held %zu: no back-pressure",
                 waiting);
    /* what the slow one holds is what the fast one was handed: one fetch for both */
    cr_assert_eq((int)waiting, fast_got.total);
    /* an idle sink's trim keeps a queue that is not empty */
    sk_sink_hub_trim(slow);
    cr_assert_eq(sk_sink_hub_queued(slow), waiting, "the trim lost queued records");

    /* Suspended (an operator's pause, a retry's backoff), the slow sink
     * holds nobody back: the fast one gets the rest. */
    sk_sink_hub_suspend(slow);
    take(fast, &fast_got, 60000);
    cr_assert_eq(fast_got.total, RECORDS, "the fast sink got %d of %d after the other's suspend",
                 fast_got.total, RECORDS);
    cr_assert_eq(sk_sink_hub_queued(slow), 0, "a suspended sink's queue is released");
    sk_sink_hub_trim(slow); /* empty: its ring goes, and a new one takes what follows */

    /* Resumed after the last record it took (none), the slow sink gets
     * every record from the start, once each, taking as it goes. */
    sk_sink_hub_resume(slow, NULL);
    take(slow, &slow_got, 60000);
    cr_assert_eq(slow_got.total, RECORDS, "the resumed sink got %d of %d", slow_got.total, RECORDS);
    for (int p = 0; p < PARTITIONS; p++)
        cr_assert_eq(slow_got.next[p], RECORDS / PARTITIONS);

    rd_kafka_topic_partition_list_destroy(from);
    sk_sink_hub_detach(slow);
    sk_sink_hub_detach(fast);
    sk_sink_hubs_free(hubs);
    sk_kafka_destroy(k);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(holder);
}
