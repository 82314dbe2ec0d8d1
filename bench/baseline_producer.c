/*
 * baseline_producer.c: the ceiling for any skolsync source (bench scenario 1).
 *
 * Reads the already-encoded protobuf records a skolsync source wrote (all
 * entity topics under SRC_PREFIX, read_committed) into memory, then -- timed --
 * produces exactly those keys and values again to DST_PREFIX topics with the
 * producer settings of daemon/source_driver.c:
 *   linger.ms=5, compression.type=lz4, queue.buffering.max.kbytes=16384,
 *   queue.buffering.max.messages=50000, enable.idempotence=true,
 *   transactional.id, transaction.timeout.ms=60000, message.timeout.ms=55000,
 *   statistics.interval.ms=5000, batches of BATCH records (a page) grouped
 *   into one transaction + one cursor record by the driver's rule (another
 *   batch while the transaction holds fewer than GROUP_RECORDS records and
 *   began less than GROUP_MS ago: daemon/source_driver.c, GROUP_RECORDS and
 *   GROUP_MS; without them, one transaction per batch), the same four headers
 *   per record, the metadata of every topic (the cursor topic too) fetched
 *   right after init_transactions, as skolsync does.
 * No JSON, no HTTP, no protobuf encoding: only what Kafka itself costs.
 *
 *   baseline_producer BROKERS SRC_PREFIX DST_PREFIX BATCH PARTITIONS [GROUP_RECORDS GROUP_MS]
 * prints: records bytes seconds transactions (seconds = producer creation .. last commit)
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

static const char *const collections[] = {"organisations",
                                          "programmes",
                                          "syllabuses",
                                          "schoolUnitOfferings",
                                          "persons",
                                          "duties",
                                          "groups",
                                          "placements",
                                          "activities",
                                          "calendarEvents",
                                          "attendances",
                                          "attendanceEvents",
                                          "attendanceSchedules",
                                          "absences",
                                          "grades",
                                          "studyPlans",
                                          "resources",
                                          "rooms"};
#define NCOLL (sizeof(collections) / sizeof(collections[0]))

struct rec {
    int coll;
    char *key;
    size_t key_len;
    void *val;
    size_t val_len;
};

static struct rec *recs;
static size_t nrecs, caprecs;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "baseline_producer: %s: %s\n", what, why);
    exit(1);
}

static void set(rd_kafka_conf_t *c, const char *k, const char *v)
{
    char e[512];
    if (rd_kafka_conf_set(c, k, v, e, sizeof(e)) != RD_KAFKA_CONF_OK)
        die(k, e);
}

static int coll_of(const char *topic, const char *prefix)
{
    size_t pl = strlen(prefix);
    for (size_t i = 0; i < NCOLL; i++)
        if (!strncmp(topic, prefix, pl) && !strcmp(topic + pl, collections[i]))
            return (int)i;
    return -1;
}

/* Phase 1 (untimed): read every record of SRC_PREFIX<collection>. */
static void load(const char *brokers, const char *prefix)
{
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    set(c, "bootstrap.servers", brokers);
    set(c, "group.id", "skolsync-bench-baseline-reader");
    set(c, "isolation.level", "read_committed");
    set(c, "enable.partition.eof", "true");
    set(c, "enable.auto.commit", "false");
    set(c, "auto.offset.reset", "earliest");
    char e[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, e, sizeof(e));
    if (!rk)
        die("consumer", e);
    const struct rd_kafka_metadata *md;
    if (rd_kafka_metadata(rk, 1, NULL, &md, 10000))
        die("metadata", "failed");
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(64);
    for (int i = 0; i < md->topic_cnt; i++)
        if (coll_of(md->topics[i].topic, prefix) >= 0)
            for (int p = 0; p < md->topics[i].partition_cnt; p++)
                rd_kafka_topic_partition_list_add(parts, md->topics[i].topic, p)->offset =
                    RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_metadata_destroy(md);
    int left = parts->cnt;
    if (!left)
        die("load", "no source topics found");
    /* A partition is read once its end is its high watermark: right after
     * the source's last commit its transaction markers may not be written
     * yet, and read_committed then reaches an early end, the last stable
     * offset (with large transactions that left thousands of records out).
     * Such a partition is fetched again from there until the markers are in.
     * (The watermarks are asked before the fetching starts: a request behind
     * a fetch waits out its fetch.wait.max.ms.) */
    int64_t *hi = malloc((size_t)parts->cnt * sizeof(*hi));
    for (int k = 0; k < parts->cnt; k++) {
        int64_t lo;
        if (rd_kafka_query_watermark_offsets(rk, parts->elems[k].topic, parts->elems[k].partition,
                                             &lo, &hi[k], 10000))
            die("watermarks", parts->elems[k].topic);
    }
    rd_kafka_assign(rk, parts);
    double until = now_s() + 300; /* a transaction left open for good: no end */
    while (left > 0) {
        if (now_s() > until)
            die("load", "partitions never reached their high watermark (an open transaction?)");
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 1000);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            const char *topic = rd_kafka_topic_name(m->rkt);
            int k = 0;
            while (k < parts->cnt && (parts->elems[k].partition != m->partition ||
                                      strcmp(parts->elems[k].topic, topic) != 0))
                k++;
            if (k == parts->cnt)
                die("load", "an end of a partition not assigned");
            if (m->offset >= hi[k]) {
                left--;
            } else {
                struct timespec ts = {0, 20 * 1000000L};
                nanosleep(&ts, NULL);
                if (rd_kafka_seek(m->rkt, m->partition, m->offset, 5000))
                    die("seek", topic);
            }
        } else if (m->err) {
            die("consume", rd_kafka_message_errstr(m));
        } else {
            if (nrecs == caprecs) {
                caprecs = caprecs ? caprecs * 2 : 65536;
                recs = realloc(recs, caprecs * sizeof(*recs));
            }
            struct rec *r = &recs[nrecs++];
            r->coll = coll_of(rd_kafka_topic_name(m->rkt), prefix);
            r->key_len = m->key_len;
            r->key = malloc(m->key_len + 1);
            memcpy(r->key, m->key, m->key_len);
            r->val_len = m->len;
            r->val = m->len ? malloc(m->len) : NULL;
            if (m->len)
                memcpy(r->val, m->payload, m->len);
        }
        rd_kafka_message_destroy(m);
    }
    free(hi);
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

static size_t failed;
static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    if (m->err)
        failed++;
}

static void create_topics(rd_kafka_t *rk, const char *prefix, int partitions)
{
    rd_kafka_NewTopic_t *nt[NCOLL + 1];
    char name[256], e[512];
    for (size_t i = 0; i <= NCOLL; i++) {
        snprintf(name, sizeof(name), "%s%s", prefix, i < NCOLL ? collections[i] : "_cursors");
        nt[i] = rd_kafka_NewTopic_new(name, i < NCOLL ? partitions : 1, 1, e, sizeof(e));
        if (!nt[i])
            die("NewTopic", e);
        rd_kafka_NewTopic_set_config(nt[i], "cleanup.policy", "compact"); /* as skolsync's */
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, nt, NCOLL + 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    if (!ev)
        die("CreateTopics", "timeout");
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    for (size_t i = 0; i <= NCOLL; i++)
        rd_kafka_NewTopic_destroy(nt[i]);
    /* Untimed: until every new topic has its leaders (as skolsync's
     * ensure_topics waits before it produces). */
    for (int tries = 0; tries < 200; tries++) {
        const struct rd_kafka_metadata *md;
        size_t ready = 0;
        if (rd_kafka_metadata(rk, 1, NULL, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            for (int t = 0; t < md->topic_cnt; t++) {
                const struct rd_kafka_metadata_topic *mt = &md->topics[t];
                bool ok = strncmp(mt->topic, prefix, strlen(prefix)) == 0 && !mt->err &&
                          mt->partition_cnt > 0;
                for (int k = 0; ok && k < mt->partition_cnt; k++)
                    ok = !mt->partitions[k].err && mt->partitions[k].leader >= 0;
                ready += ok;
            }
            rd_kafka_metadata_destroy(md);
        }
        if (ready >= NCOLL + 1)
            break;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* skolsync parses its statistics every 5 s (the /metrics gauges); so does the ceiling. */
static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    (void)rk;
    (void)opaque;
    (void)json;
    (void)len;
    return 0; /* librdkafka frees json */
}

static void check(rd_kafka_error_t *err, const char *what)
{
    if (err)
        die(what, rd_kafka_error_string(err));
}

int main(int argc, char **argv)
{
    if (argc != 6 && argc != 8) {
        fprintf(stderr,
                "usage: %s BROKERS SRC_PREFIX DST_PREFIX BATCH PARTITIONS "
                "[GROUP_RECORDS GROUP_MS]\n",
                argv[0]);
        return 64;
    }
    const char *brokers = argv[1], *src = argv[2], *dst = argv[3];
    size_t batch = strtoul(argv[4], NULL, 10);
    int partitions = atoi(argv[5]);
    size_t group_records = argc == 8 ? strtoul(argv[6], NULL, 10) : batch;
    double group_s = argc == 8 ? atof(argv[7]) / 1000 : 0;
    load(brokers, src);

    /* Topics are created before the clock starts (skolsync creates its own
     * at start; a few ms either way). */
    {
        rd_kafka_conf_t *c = rd_kafka_conf_new();
        set(c, "bootstrap.servers", brokers);
        char e[512];
        rd_kafka_t *adm = rd_kafka_new(RD_KAFKA_PRODUCER, c, e, sizeof(e));
        if (!adm)
            die("admin", e);
        create_topics(adm, dst, partitions);
        rd_kafka_destroy(adm);
    }
    char *topics[NCOLL], cursor_topic[256], tid[256];
    for (size_t i = 0; i < NCOLL; i++) {
        topics[i] = malloc(256);
        snprintf(topics[i], 256, "%s%s", dst, collections[i]);
    }
    snprintf(cursor_topic, sizeof(cursor_topic), "%s_cursors", dst);
    snprintf(tid, sizeof(tid), "skolsync-bench-baseline-%s", dst);

    double t0 = now_s();
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    set(c, "bootstrap.servers", brokers);
    set(c, "client.id", "skolsync-bench-baseline");
    set(c, "linger.ms", "5");
    set(c, "compression.type", "lz4");
    set(c, "queue.buffering.max.kbytes", "16384");
    set(c, "queue.buffering.max.messages", "50000");
    set(c, "enable.idempotence", "true");
    set(c, "transactional.id", tid);
    set(c, "transaction.timeout.ms", "60000");
    set(c, "message.timeout.ms", "55000");
    set(c, "statistics.interval.ms", "5000");
    rd_kafka_conf_set_stats_cb(c, stats_cb);
    rd_kafka_conf_set_dr_msg_cb(c, dr_cb);
    char e[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, e, sizeof(e));
    if (!rk)
        die("producer", e);
    check(rd_kafka_init_transactions(rk, 30000), "init_transactions");
    /* Topic handles + their metadata up front: librdkafka 2.0.2 otherwise
     * learns a new topic's leaders only at its 1 s topic scan, and the first
     * transaction touching each topic waits ~1 s (bench/analysis.md). A
     * ceiling does not pay that; skolsync (daemon/source_driver.c) does. */
    rd_kafka_topic_t *rkts[NCOLL + 1];
    for (size_t k = 0; k <= NCOLL; k++) { /* + the cursor topic: every batch ends there */
        const struct rd_kafka_metadata *md;
        rkts[k] = rd_kafka_topic_new(rk, k < NCOLL ? topics[k] : cursor_topic, NULL);
        if (rkts[k] && !rd_kafka_metadata(rk, 0, rkts[k], &md, 5000))
            rd_kafka_metadata_destroy(md);
    }

    size_t bytes = 0;
    char cursor[96];
    memset(cursor, 'c', sizeof(cursor));
    size_t txns = 0;
    for (size_t i = 0; i < nrecs;) {
        check(rd_kafka_begin_transaction(rk), "begin_transaction");
        txns++;
        double began = now_s();
        size_t first = i;
        for (;;) { /* the batches of one group */
            size_t end = i + batch < nrecs ? i + batch : nrecs;
            for (; i < end; i++) {
                struct rec *r = &recs[i];
                rd_kafka_headers_t *h = rd_kafka_headers_new(4);
                char observed[32];
                snprintf(observed, sizeof(observed), "%lld", (long long)(now_s() * 1e6));
                rd_kafka_header_add(h, "skolsync-source", -1, "bench", -1);
                rd_kafka_header_add(h, "skolsync-observed", -1, observed, -1);
                rd_kafka_header_add(h, "skolsync-schema", -1, "skolsync.v1.Entity", -1);
                rd_kafka_header_add(h, "content-type", -1, "application/x-protobuf", -1);
                for (;;) {
                    rd_kafka_resp_err_t err = rd_kafka_producev(
                        rk, RD_KAFKA_V_TOPIC(topics[r->coll]),
                        RD_KAFKA_V_KEY(r->key, r->key_len), RD_KAFKA_V_VALUE(r->val, r->val_len),
                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
                        RD_KAFKA_V_END);
                    if (!err)
                        break;
                    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
                        die("produce", rd_kafka_err2str(err));
                    rd_kafka_poll(rk, 100);
                }
                rd_kafka_poll(rk, 0);
                bytes += r->key_len + r->val_len;
            }
            if (i >= nrecs || i - first >= group_records || now_s() - began >= group_s)
                break;
        }
        rd_kafka_headers_t *h = rd_kafka_headers_new(1);
        rd_kafka_header_add(h, "skolsync-source", -1, "bench", -1);
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(cursor_topic), RD_KAFKA_V_KEY("bench", 5),
                          RD_KAFKA_V_VALUE(cursor, sizeof(cursor)),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
                          RD_KAFKA_V_END);
        check(rd_kafka_commit_transaction(rk, 60000), "commit_transaction");
    }
    double secs = now_s() - t0;
    for (size_t k = 0; k <= NCOLL; k++)
        if (rkts[k])
            rd_kafka_topic_destroy(rkts[k]);
    rd_kafka_destroy(rk);
    if (failed)
        die("delivery", "records failed");
    printf("%zu %zu %.3f %zu\n", nrecs, bytes, secs, txns);
    return 0;
}
