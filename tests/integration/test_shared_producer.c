/*
 * test_shared_producer.c: what a node's sources share (docs/architecture.md
 * §4.1 and §6.4), on the real broker: one producer (daemon/shared_producer.c)
 * and a pool of worker threads (source_driver.c). The sources of a daemon
 * use one Kafka client and a few threads, however many there are, and their
 * concurrent batches all arrive; a source whose server hangs holds no other
 * source up; a node the sources group moved on without cannot commit (the
 * KIP-447 fence that replaced the per-source transactional id); an aborted
 * transaction fails the batches of every source in it.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>

#include "kafka.h"
#include "produce.h"
#include "runner.h"
#include "shared_producer.h"
#include "sk_test.h"

/* ---- one daemon, several sources ------------------------------------------- */

static double connector_num(int port, const char *name, const char *key)
{
    char *path = skt_fmt("/api/v1/connectors/%s", name);
    cJSON *c = skt_get_json(port, path);
    free(path);
    double v = c ? skt_jnum(c, key) : -1;
    cJSON_Delete(c);
    return v;
}

static const char *connector_state(int port, const char *name, char *buf, size_t size)
{
    char *path = skt_fmt("/api/v1/connectors/%s", name);
    cJSON *c = skt_get_json(port, path);
    free(path);
    snprintf(buf, size, "%s", c && skt_jstr(c, "state") ? skt_jstr(c, "state") : "?");
    cJSON_Delete(c);
    return buf;
}

static bool all_stored(int port, int n, const double *want, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 250) {
        bool all = true;
        for (int i = 0; i < n && all; i++) {
            char *name = skt_fmt("src%d", i);
            all = connector_num(port, name, "records") >= want[i];
            free(name);
        }
        if (all)
            return true;
        usleep(250000);
    }
    return false;
}

static bool all_idle(int port, int n, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 250) {
        bool all = true;
        for (int i = 0; i < n && all; i++) {
            char *name = skt_fmt("src%d", i), st[32];
            all = strcmp(connector_state(port, name, st, sizeof(st)), "idle") == 0;
            free(name);
        }
        if (all)
            return true;
        usleep(250000);
    }
    return false;
}

/* Writes the configuration text to cfg and runs a daemon on it; its HTTP port in *port. */
static pid_t daemon_start(const char *cfg, const char *text, const char *log, int *port)
{
    skt_write(cfg, text);
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", (char *)cfg, NULL};
    pid_t pid = skt_spawn(argv, log);
    *port = skt_logged_port(log, 30000);
    cr_assert_gt(*port, 0, "no HTTP port (%s)", log);
    return pid;
}

/* Distinct keys of topic (read_committed, to its end). */
static size_t committed_keys(const char *topic)
{
    char *cmd = skt_fmt("kcat -b %s -C -t %s -e -q -X isolation.level=read_committed -f '%%k\\n' "
                        "| grep -v '^$' | sort -u | wc -l",
                        skt_brokers(), topic);
    char *out = NULL;
    skt_sh(cmd, 60, &out);
    size_t n = (size_t)atol(out ? out : "0");
    free(out);
    free(cmd);
    return n;
}

/* Threads of process pid whose name starts with prefix. */
static int threads_starting(pid_t pid, const char *prefix)
{
    char *cmd = skt_fmt("cat /proc/%d/task/*/comm | grep -c '^%s'", (int)pid, prefix);
    char *out = NULL;
    skt_sh(cmd, 5, &out);
    int n = atoi(out ? out : "0");
    free(out);
    free(cmd);
    return n;
}

#define SOURCES 10

Test(shared_producer, the_sources_of_a_node_share_one_client_and_all_arrive, .timeout = 240)
{
    char *dir = skt_tmpdir("sprod-share");
    char *prefix = skt_unique_prefix();
    char *head = skt_config_head(prefix, "info", "20s");
    char *text = skt_fmt("%ssources:\n", head);
    char *data[SOURCES];
    double want[SOURCES];
    for (int i = 0; i < SOURCES; i++) {
        data[i] = skt_fmt("%s/data%d", dir, i);
        skt_generate(data[i], 40 + i, 10);
        want[i] = (double)skt_count_records(data[i]);
        char *more = skt_fmt("%s  src%d:\n    type: jsonl-source\n    path: %s\n"
                             "    poll_interval: 1s\n",
                             text, i, data[i]);
        free(text);
        text = more;
    }
    char *cfg = skt_fmt("%s/skolsync.yaml", dir), *log = skt_fmt("%s/daemon.log", dir);
    int port;
    pid_t pid = daemon_start(cfg, text, log, &port);
    cr_assert(all_stored(port, SOURCES, want, 90000), "not every source stored its dataset (%s)",
              log);
    cr_assert(all_idle(port, SOURCES, 30000), "the sources did not become idle (%s)", log);

    /* One producer for the sources, one consumer for the sources group: a
     * client each had made eleven (each client has one rdk:main thread). */
    cr_assert_eq(skt_threads_named(pid, "rdk:main"), 2,
                 "Kafka clients of a daemon with %d sources and no sink: %d, want 2 (%s)", SOURCES,
                 skt_threads_named(pid, "rdk:main"), log);
    /* and the pool's workers (twice the cores), not a thread per source */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    /* (a worker is named "src:<source>" during a step, "src-pool" between) */
    int workers = threads_starting(pid, "src");
    cr_assert(workers >= 1 && workers <= 2 * cpus && workers < SOURCES,
              "%d source threads for %d sources on %ld cores", workers, SOURCES, cpus);
    cr_assert_eq(skt_lines_with(log, "transactional id"), 1,
                 "one transactional producer for the node (%s)", log);

    /* Changes in every source at once: their batches share transactions,
     * and every one arrives. */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < SOURCES; i++) {
            skt_append_persons(data[i], 1000 * (i + 1) + 10 * round, 4);
            want[i] += 4;
        }
        cr_assert(all_stored(port, SOURCES, want, 60000), "round %d not stored (%s)", round, log);
    }
    cr_assert_eq(skt_lines_with(log, "aborted"), 0, "no transaction should abort (%s)", log);

    /* What is committed in Kafka: every person of every source */
    size_t persons = 0;
    for (int i = 0; i < SOURCES; i++) {
        char *cmd = skt_fmt("cat %s/persons.jsonl | wc -l", data[i]);
        char *out = NULL;
        skt_sh(cmd, 10, &out);
        persons += (size_t)atol(out);
        free(out);
        free(cmd);
    }
    char *topic = skt_fmt("%spersons", prefix);
    cr_assert_eq(committed_keys(topic), persons, "persons committed in %s (%s)", topic, log);
    free(topic);

    cr_assert_eq(skt_stop(&pid, 30000), 0, "the daemon did not stop cleanly (%s)", log);
    for (int i = 0; i < SOURCES; i++)
        free(data[i]);
    free(text);
    free(head);
    free(cfg);
    free(log);
    free(prefix);
    free(dir);
}

/* ---- a source whose server hangs ------------------------------------------- */

/* A TCP port that takes connections and never answers (its backlog does the taking). */
static int silent_server(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(fd, 64), 0);
    socklen_t len = sizeof(a);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

#define HANGING 8

Test(shared_producer, sources_whose_servers_hang_hold_no_other_source_up, .timeout = 240)
{
    char *dir = skt_tmpdir("sprod-hang");
    char *prefix = skt_unique_prefix();
    int port;
    int fd = silent_server(&port);
    char *data = skt_fmt("%s/data", dir);
    skt_generate(data, 77, 10);
    double want = (double)skt_count_records(data);
    char *head = skt_config_head(prefix, "info", "5s");
    char *text = skt_fmt("%ssources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                         "    poll_interval: 1s\n",
                         head, data);
    for (int i = 0; i < HANGING; i++) {
        char *more = skt_fmt("%s  hangs%d:\n    type: ss12000-source\n"
                             "    url: http://127.0.0.1:%d/v2.0\n    request_timeout: 300s\n",
                             text, i, port);
        free(text);
        text = more;
    }
    char *cfg = skt_fmt("%s/skolsync.yaml", dir), *log = skt_fmt("%s/daemon.log", dir);
    int hport;
    pid_t pid = daemon_start(cfg, text, log, &hport);
    cr_assert(connector_num(hport, "files", "records") >= 0, "%s", log);
    double first = -1;
    for (int waited = 0; waited < 30000 && first < want; waited += 250) {
        first = connector_num(hport, "files", "records");
        usleep(250000);
    }
    cr_assert_geq(first, want, "the jsonl-source stored %.0f of %.0f (%s)", first, want, log);
    /* Now every hanging source holds a worker, and the jsonl-source's next
     * change must still be stored long before any request times out: the
     * pool grows while a source waits behind workers stuck in long steps. */
    sleep(3);
    skt_append_persons(data, 5000, 3);
    bool stored = false;
    for (int waited = 0; waited < 30000 && !stored; waited += 250) {
        stored = connector_num(hport, "files", "records") >= want + 3;
        usleep(250000);
    }
    cr_assert(stored, "a change waited behind %d sources whose server never answers (%s)", HANGING,
              log);
    cr_assert_gt(threads_starting(pid, "src"), HANGING, "the pool did not grow (%s)", log);
    cr_assert_eq(skt_stop(&pid, 30000) >= 0, 1, "%s", log);
    close(fd);
    free(text);
    free(head);
    free(cfg);
    free(log);
    free(data);
    free(prefix);
    free(dir);
}

/* ---- the fence ------------------------------------------------------------- */

struct fence {
    void *md; /* serialised group metadata */
    size_t size;
};

static void fence_set(struct fence *f, rd_kafka_t *consumer)
{
    rd_kafka_consumer_group_metadata_t *md = rd_kafka_consumer_group_metadata(consumer);
    cr_assert_not_null(md);
    if (f->md)
        rd_kafka_mem_free(NULL, f->md);
    rd_kafka_error_t *e = rd_kafka_consumer_group_metadata_write(md, &f->md, &f->size);
    cr_assert_null(e, "%s", e ? rd_kafka_error_string(e) : "");
    rd_kafka_consumer_group_metadata_destroy(md);
}

static rd_kafka_consumer_group_metadata_t *fence_get(void *ctx)
{
    struct fence *f = ctx;
    rd_kafka_consumer_group_metadata_t *md = NULL;
    rd_kafka_error_t *e = rd_kafka_consumer_group_metadata_read(&md, f->md, f->size);
    cr_assert_null(e, "%s", e ? rd_kafka_error_string(e) : "");
    return md;
}

static rd_kafka_t *join_group(const char *group, const char *topic)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *kv[] = {"bootstrap.servers",
                        skt_brokers(),
                        "group.id",
                        group,
                        "session.timeout.ms",
                        "6000",
                        "enable.auto.commit",
                        "false",
                        "partition.assignment.strategy",
                        "roundrobin",
                        NULL};
    for (int i = 0; kv[i]; i += 2)
        cr_assert_eq(rd_kafka_conf_set(conf, kv[i], kv[i + 1], errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK, "%s", errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(rk, "%s", errstr);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, topic, RD_KAFKA_PARTITION_UA);
    cr_assert_eq(rd_kafka_subscribe(rk, subs), 0);
    rd_kafka_topic_partition_list_destroy(subs);
    return rk;
}

/* Polls the members until each has an assignment of its own in one generation. */
static void settle(rd_kafka_t **members, int n)
{
    for (int waited = 0; waited < 60000; waited += 100) {
        bool all = true;
        for (int i = 0; i < n; i++) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(members[i], 50);
            if (m)
                rd_kafka_message_destroy(m);
            rd_kafka_topic_partition_list_t *a = NULL;
            rd_kafka_assignment(members[i], &a);
            all = all && a && a->cnt > 0;
            if (a)
                rd_kafka_topic_partition_list_destroy(a);
        }
        if (all)
            return;
    }
    cr_assert_fail("the group never gave every member a partition");
}

/* One batch of one record through the member's transaction; the commit's return. */
static int one_batch(struct sk_sprod_member *m, const char *topic, const char *key,
                     struct sk_error *err)
{
    sk_sprod_group_begin(m);
    rd_kafka_t *rk = sk_sprod_txn_enter(m, err);
    cr_assert_not_null(rk, "%s", err->msg);
    atomic_fetch_add(&m->txn.pending, 1);
    cr_assert_eq(sk_produce(rk, topic, key, strlen(key), "v", 1, NULL, &m->txn), 0);
    sk_sprod_txn_leave(m, NULL);
    return sk_sprod_txn_commit(m, err);
}

static bool committed_has(const char *topic, const char *key)
{
    char *cmd = skt_fmt("kcat -b %s -C -t %s -e -q -X isolation.level=read_committed -f '%%k\\n' "
                        "| grep -cx '%s'",
                        skt_brokers(), topic, key);
    char *out = NULL;
    skt_sh(cmd, 60, &out);
    bool has = out && atoi(out) > 0;
    free(out);
    free(cmd);
    return has;
}

Test(shared_producer, a_node_the_sources_group_moved_on_without_commits_nothing, .timeout = 180)
{
    char *prefix = skt_unique_prefix();
    struct sk_kafka *k = skt_kafka_start(prefix, 2);
    struct sk_error err = {0};
    char *control = skt_fmt("%s_fence", prefix), *group = skt_fmt("%sfence", prefix);
    const char *topics[] = {control};
    cr_assert_eq(sk_kafka_ensure_topics(k, topics, 1, true, 2, &err), 0, "%s", err.msg);
    char *persons = skt_fmt("%spersons", prefix);

    /* this node in the group, and its fence */
    rd_kafka_t *members[2] = {join_group(group, control), NULL};
    settle(members, 1);
    struct fence f = {0};
    fence_set(&f, members[0]);
    struct sk_sprod *sp = sk_kafka_sprod(k);
    sk_sprod_set_fence(sp, fence_get, &f, control);
    struct sk_runner runner;
    sk_runner_init(&runner, SK_RUNNER_SOURCE, "src", "test");
    struct sk_sprod_member *m = sk_sprod_join(sp, &runner, NULL, NULL, &err);
    cr_assert_not_null(m, "%s", err.msg);
    m->fence_partition = 1;

    cr_assert_eq(one_batch(m, persons, "in-its-generation", &err), 0, "%s", err.msg);
    cr_assert(committed_has(persons, "in-its-generation"));

    /* Another node joins: a new generation, which this node's fence predates
     * (it was cut off and has not heard of it yet). Its commit must fail. */
    members[1] = join_group(group, control);
    settle(members, 2);
    cr_assert_neq(one_batch(m, persons, "stale-generation", &err), 0,
                  "a commit with a stale generation went through");
    cr_assert(strstr(err.msg, "send_offsets_to_transaction"), "%s", err.msg);
    cr_assert_not(committed_has(persons, "stale-generation"),
                  "the records of a stale node's transaction were committed");

    /* With the generation it is in now, it commits again. */
    sk_sprod_leave(m);
    fence_set(&f, members[0]);
    m = sk_sprod_join(sp, &runner, NULL, NULL, &err);
    cr_assert_not_null(m, "%s", err.msg);
    m->fence_partition = 0;
    cr_assert_eq(one_batch(m, persons, "new-generation", &err), 0, "%s", err.msg);
    cr_assert(committed_has(persons, "new-generation"));

    sk_sprod_leave(m);
    sk_sprod_set_fence(sp, NULL, NULL, NULL);
    for (int i = 0; i < 2; i++) {
        rd_kafka_consumer_close(members[i]);
        rd_kafka_destroy(members[i]);
    }
    rd_kafka_mem_free(NULL, f.md);
    sk_kafka_destroy(k);
    sk_runner_destroy(&runner);
    free(persons);
    free(group);
    free(control);
    free(prefix);
}

/* An abort fails the batches of every member in the transaction; each is told why. */
Test(shared_producer, an_abort_fails_every_source_in_the_transaction, .timeout = 120)
{
    char *prefix = skt_unique_prefix();
    struct sk_kafka *k = skt_kafka_start(prefix, 1);
    struct sk_error err = {0};
    char *persons = skt_fmt("%spersons", prefix);
    struct sk_sprod *sp = sk_kafka_sprod(k);
    struct sk_runner ra, rb;
    sk_runner_init(&ra, SK_RUNNER_SOURCE, "a", "test");
    sk_runner_init(&rb, SK_RUNNER_SOURCE, "b", "test");
    struct sk_sprod_member *a = sk_sprod_join(sp, &ra, NULL, NULL, &err);
    struct sk_sprod_member *b = sk_sprod_join(sp, &rb, NULL, NULL, &err);
    cr_assert(a && b, "%s", err.msg);

    /* both produce into the open transaction; a's batch then fails */
    sk_sprod_group_begin(a);
    sk_sprod_group_begin(b);
    struct sk_sprod_member *both[] = {a, b};
    const char *keys[] = {"from-a", "from-b"};
    for (int i = 0; i < 2; i++) {
        rd_kafka_t *rk = sk_sprod_txn_enter(both[i], &err);
        cr_assert_not_null(rk, "%s", err.msg);
        atomic_fetch_add(&both[i]->txn.pending, 1);
        cr_assert_eq(sk_produce(rk, persons, keys[i], strlen(keys[i]), "v", 1, NULL, &both[i]->txn),
                     0);
        if (i == 1)
            sk_sprod_txn_leave(both[i], NULL);
    }
    /* a's batch fails while b is done: b's commit must not take a's half batch */
    struct sk_error why = {.cls = SK_ERR_RETRIABLE};
    snprintf(why.msg, sizeof(why.msg), "a test's batch failed");
    sk_sprod_txn_leave(a, &why);
    struct sk_error berr = {0};
    cr_assert_eq(sk_sprod_txn_commit(b, &berr), -1, "b's batch was in the doomed transaction");
    cr_assert_eq(sk_sprod_txn_abort(a, &why), -1);
    cr_assert_eq(berr.cls, SK_ERR_RETRIABLE, "%s", berr.msg);
    cr_assert(strstr(berr.msg, "source a"), "b is told whose batch failed: %s", berr.msg);

    /* the next transaction goes through, and the aborted records never show */
    cr_assert_eq(one_batch(b, persons, "b-again", &err), 0, "%s", err.msg);
    cr_assert(committed_has(persons, "b-again"));
    cr_assert_not(committed_has(persons, "from-a"));
    cr_assert_not(committed_has(persons, "from-b"));

    sk_sprod_leave(a);
    sk_sprod_leave(b);
    sk_kafka_destroy(k);
    sk_runner_destroy(&ra);
    sk_runner_destroy(&rb);
    free(persons);
    free(prefix);
}
