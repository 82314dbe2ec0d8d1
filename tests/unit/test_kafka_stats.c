/*
 * test_kafka_stats.c: what librdkafka's statistics JSON gives the daemon
 * (daemon/kafka_stats.c) and how a connector's figures follow its clients
 * (sk_runner_kafka_stats): the largest broker round-trip time, and request
 * retries that keep adding up when the driver makes a new client; and the
 * delivery timeout a producer is made with.
 */
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "kafka.h"
#include "runner.h"

/* A producer's statistics as 2.0.2 writes them, cut to the fields read. */
static const char producer_json[] =
    "{\"name\":\"skolsync-src-sis#producer-1\",\"type\":\"producer\",\"msg_cnt\":12,"
    "\"brokers\":{"
    " \"127.0.0.1:9092/1\":{\"txretries\":2,\"txerrs\":1,\"rtt\":{\"avg\":1200,\"max\":5000}},"
    " \"GroupCoordinator\":{\"txretries\":1,\"rtt\":{\"avg\":3400}},"
    " \":0/internal\":{\"txretries\":0,\"rtt\":{\"avg\":0}}},"
    "\"topics\":{"
    " \"p.persons\":{\"partitions\":{\"0\":{\"msgs\":7,\"txmsgs\":10},"
    "  \"1\":{\"msgs\":5,\"txmsgs\":5},\"-1\":{\"msgs\":0,\"txmsgs\":0}}},"
    " \"p.groups\":{\"partitions\":{\"2\":{\"msgs\":4,\"txmsgs\":7}}}}}";

static const char consumer_json[] =
    "{\"name\":\"skolsync-sink-db#consumer-2\",\"type\":\"consumer\","
    "\"brokers\":{\"127.0.0.1:9092/1\":{\"txretries\":4,\"rtt\":{\"avg\":800}}},"
    "\"topics\":{\"p.persons\":{\"partitions\":{\"0\":{\"fetchq_cnt\":30,\"msgs\":9,"
    "\"txmsgs\":0}}}},\"cgrp\":{\"rebalance_cnt\":3}}";

Test(kafka_stats, a_producer_gives_its_largest_rtt_and_every_message_sent_again)
{
    struct sk_kafka_stats st;
    sk_kafka_stats_parse(producer_json, strlen(producer_json), &st);
    cr_assert_str_eq(st.client, "skolsync-src-sis#producer-1");
    cr_assert_eq(st.rtt_us, 3400);
    /* 3 request retries over the brokers, 3 + 3 messages transmitted again */
    cr_assert_eq(st.retries, 9);
}

Test(kafka_stats, a_consumer_counts_request_retries_only)
{
    struct sk_kafka_stats st;
    sk_kafka_stats_parse(consumer_json, strlen(consumer_json), &st);
    cr_assert_str_eq(st.client, "skolsync-sink-db#consumer-2");
    cr_assert_eq(st.rtt_us, 800);
    cr_assert_eq(st.retries, 4, "a consumer's partitions transmit nothing: %lld",
                 (long long)st.retries);
}

Test(kafka_stats, text_that_is_not_statistics_gives_nothing)
{
    const char *bad[] = {"", "{", "[1,2]", "{\"brokers\":[]}", "{\"brokers\":{\"b\":{\"rtt\":7}}}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct sk_kafka_stats st;
        sk_kafka_stats_parse(bad[i], strlen(bad[i]), &st);
        cr_assert_eq(st.rtt_us, -1, "%s", bad[i]);
        cr_assert_eq(st.retries, 0, "%s", bad[i]);
        cr_assert_str_eq(st.client, "", "%s", bad[i]);
    }
}

/* librdkafka's totals start at 0 in every new client; the connector's counter does not. */
Test(kafka_stats, retries_add_up_across_the_clients_of_a_connector)
{
    struct sk_runner r;
    sk_runner_init(&r, SK_RUNNER_SOURCE, "sis", "ss12000-source");
    cr_assert_not(atomic_load(&r.kafka_stats), "known before any statistics came");
    cr_assert_eq(atomic_load(&r.kafka_rtt_us), -1);
    char *json = strdup(producer_json);
    sk_runner_kafka_stats(&r, json, strlen(json));
    cr_assert(atomic_load(&r.kafka_stats));
    cr_assert_eq(atomic_load(&r.kafka_retries), 9);
    cr_assert_eq(atomic_load(&r.kafka_rtt_us), 3400);
    sk_runner_kafka_stats(&r, json, strlen(json)); /* the same totals again: nothing new */
    cr_assert_eq(atomic_load(&r.kafka_retries), 9);
    free(json);
    /* a new client (the driver made another after a failure): its 4 are new */
    json = strdup(consumer_json);
    sk_runner_kafka_stats(&r, json, strlen(json));
    cr_assert_eq(atomic_load(&r.kafka_retries), 13);
    cr_assert_eq(atomic_load(&r.kafka_rtt_us), 800);
    free(json);
    /* a carried runner (a reload restarting the connector) keeps knowing them */
    struct sk_runner next;
    sk_runner_init(&next, SK_RUNNER_SOURCE, "sis", "ss12000-source");
    sk_runner_carry_counters(&next, &r);
    cr_assert(atomic_load(&next.kafka_stats));
    cr_assert_eq(atomic_load(&next.kafka_retries), 13);
    sk_runner_destroy(&next);
    sk_runner_destroy(&r);
}

/* A producer's message.timeout.ms as the client it made has it. */
static long message_timeout_of(struct sk_kafka *k)
{
    struct sk_error err = {0};
    rd_kafka_t *p = sk_kafka_producer_new(k, "timeout-test", NULL, NULL, &err);
    cr_assert_not_null(p, "%s", err.msg);
    char v[32];
    size_t n = sizeof(v);
    cr_assert_eq(rd_kafka_conf_get(rd_kafka_conf(p), "message.timeout.ms", v, &n),
                 RD_KAFKA_CONF_OK);
    rd_kafka_destroy(p);
    return strtol(v, NULL, 10);
}

/*
 * A delivery someone waits for (a sink's dead letters here, a source's
 * batch alike) fails within SK_KAFKA_MESSAGE_TIMEOUT_MS, not librdkafka's
 * 300 s: a record it cannot deliver held the connector silent for five
 * minutes. kafka.properties may still set it.
 */
Test(kafka_clients, a_producer_gives_up_on_a_record_within_55_s)
{
    struct sk_kafka_conf kc = {.brokers = "127.0.0.1:1", .topic_prefix = "t."};
    struct sk_kafka *k = sk_kafka_describe(&kc);
    cr_assert_not_null(k);
    cr_assert_eq(message_timeout_of(k), 55000);
    sk_kafka_destroy(k);
    char *keys[] = {"message.timeout.ms"}, *values[] = {"2000"};
    bool secret[] = {false};
    kc.properties = (struct sk_strmap){.keys = keys, .values = values, .secret = secret, .n = 1};
    k = sk_kafka_describe(&kc);
    cr_assert_eq(message_timeout_of(k), 2000);
    sk_kafka_destroy(k);
}
