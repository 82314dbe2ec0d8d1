/*
 * test_kafka_faults.c: Kafka misbehaving under a running sync, injected with
 * librdkafka's mock cluster (the embedded broker, 3 brokers here): request
 * errors on produce, fetch, offset commit and group coordination; a broker
 * down and up; a leader move; acknowledgements delayed past the producer's
 * timeout (the record is written, its acknowledgement lost). Each run must
 * show that the clients met the faults (librdkafka's statistics and the
 * drivers' retries, as the run summary reports them) and end with the target
 * equal to the input: nothing lost, and duplicates in Kafka absorbed by the
 * idempotent sink.
 *
 * The daemon runs in this (forked) test process, so the test reaches the
 * mock cluster through the kafka_started hook.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <sqlite3.h>

#include "buf.h"
#include "daemon.h"
#include "kafka.h"
#include "log.h"
#include "model.h"
#include "sk_test.h"
#include "skt_ss12000.h"
#include "util.h"

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

enum scenario {
    REQUEST_ERRORS,
    BROKER_DOWN_UP,
    LEADER_MOVE,
    LOST_ACKS,
    NOT_WRITTEN,        /* produce requests refused: records not written, reported failed */
    GROUP_REFUSED,      /* the sink's group: authorisation refused */
    PRODUCER_REFUSED,   /* the source's producer id: authorisation refused */
    FETCH_STOPS,        /* the sink's first consumer stops fetching persons, with no error */
    FETCH_STOPS_AGAIN,  /* every consumer of the sink does */
    FETCH_STOPS_OUTAGE, /* FETCH_STOPS, then the broker down when the sink would replace it */
    TARGET_LOCKED,      /* the sink's SQLite file locked for 12 s from its creation */
    LOCKED_REBALANCE    /* TARGET_LOCKED, and the sink's group rebalanced twice meanwhile */
};

#define MAX_CONSUMERS 4

struct plan {
    enum scenario scenario;
    rd_kafka_mock_cluster_t *mock;
    pthread_t thread;
    int injected;
    int delay_ms; /* into the sync before the faults (0: the scenario's own, inject()) */
    /* FETCH_STOPS*: the sink's consumers, and a thread each that stops one's fetch */
    rd_kafka_t *consumers[MAX_CONSUMERS];
    pthread_t stoppers[MAX_CONSUMERS];
    int n_consumers, fetches_stopped;
    const char *db;     /* TARGET_LOCKED: the sink's file */
    int intruder_parts; /* LOCKED_REBALANCE: the partitions the intruder was given */
};

/*
 * LOCKED_REBALANCE: while the sink waits for its locked target (its
 * partitions paused), a consumer of the test joins the sink's group for
 * persons, is given some of them, and leaves: the sink's partitions are
 * revoked and assigned twice in the middle of its retry.
 */
static void intrude(struct plan *p)
{
    /* on the injector's thread: no assertion here, the test checks
     * intruder_parts (0: it never got in) */
    for (int i = 0; i < 500 && !p->n_consumers; i++)
        usleep(10 * 1000);
    char group[256], errstr[256];
    size_t size = sizeof(group);
    if (!p->n_consumers || rd_kafka_conf_get(rd_kafka_conf(p->consumers[0]), "group.id", group,
                                             &size) != RD_KAFKA_CONF_OK)
        return;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(p->mock),
                          errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "partition.assignment.strategy", "roundrobin", errstr,
                          sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr))) {
        rd_kafka_conf_destroy(conf);
        return;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(t, "skolsync.persons", RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, t);
    rd_kafka_topic_partition_list_destroy(t);
    for (int i = 0; !e && i < 300 && !p->intruder_parts; i++) { /* at most 30 s */
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m)
            rd_kafka_message_destroy(m); /* records of persons: not the test's to apply */
        rd_kafka_topic_partition_list_t *a = NULL;
        if (rd_kafka_assignment(rk, &a) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            p->intruder_parts = a->cnt;
            rd_kafka_topic_partition_list_destroy(a);
        }
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    p->injected++;
}

static void *inject(void *arg)
{
    struct plan *p = arg;
    rd_kafka_mock_cluster_t *mc = p->mock;
    /* Authorisation is refused from the start, for longer than any retry:
     * no client ever gets past it. */
    if (p->scenario == GROUP_REFUSED || p->scenario == PRODUCER_REFUSED) {
        rd_kafka_resp_err_t errs[64];
        for (int i = 0; i < 64; i++)
            errs[i] = p->scenario == GROUP_REFUSED ? RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED
                                                   : RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED;
        rd_kafka_mock_push_request_errors_array(
            mc, p->scenario == GROUP_REFUSED ? JOIN_GROUP : INIT_PRODUCER_ID, 64, errs);
        p->injected = 64;
        return NULL;
    }
    /* Errors queued for a request type meet the next such requests whenever
     * they come: queued at once, a sync cannot be over before them (one was,
     * once the source's start-up needed fewer metadata round trips). A
     * broker down and leader moves act at a time: into the sync. */
    int delay_ms = p->delay_ms                                                       ? p->delay_ms
                   : p->scenario == REQUEST_ERRORS || p->scenario == LOST_ACKS       ? 0
                   : p->scenario == LEADER_MOVE                                      ? 300
                   : p->scenario == TARGET_LOCKED || p->scenario == LOCKED_REBALANCE ? 0
                                                                                     : 1500;
    usleep((useconds_t)delay_ms * 1000);
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
        /* every partition of every entity topic to another broker, every
         * 300 ms for 3 s: whichever the source is producing to meets it */
        for (int round = 0; round < 10; round++) {
            for (int e = 0; e < SK_ENTITY_COUNT; e++) {
                char topic[128];
                snprintf(topic, sizeof(topic), "skolsync.%s", sk_entities[e]->collection);
                for (int part = 0; part < 3; part++)
                    rd_kafka_mock_partition_set_leader(mc, topic, part, (part + round) % 3 + 1);
            }
            p->injected += 3 * SK_ENTITY_COUNT;
            usleep(300 * 1000);
        }
        break;
    case TARGET_LOCKED:
    case LOCKED_REBALANCE: {
        /* once the sink made its tables: an exclusive lock, which its
         * applies (busy_timeout 100 ms) fail on and retry */
        sqlite3 *db = skt_sqlite_lock_once_made(p->db, 6000);
        if (db) {
            /* made at open: the first apply comes after the group's first
             * join (3 s on the mock), and then meets the lock for seconds */
            p->injected = 1;
            if (p->scenario == LOCKED_REBALANCE) {
                sleep(5); /* the sink in its retry by then */
                intrude(p);
                sleep(4);
            } else {
                sleep(12);
            }
            sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        }
        sqlite3_close(db);
        break;
    }
    case GROUP_REFUSED:
    case PRODUCER_REFUSED:
    case FETCH_STOPS:
    case FETCH_STOPS_AGAIN:
    case FETCH_STOPS_OUTAGE:
        break; /* above; on_consumer, stop_fetch */
    case NOT_WRITTEN:
        /* refused for the whole request, not retried by librdkafka: the
         * records are reported failed and were never written */
        rd_kafka_mock_push_request_errors(mc, PRODUCE, 3,
                                          RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
                                          RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
                                          RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
        p->injected = 3;
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

/*
 * FETCH_STOPS: librdkafka 2.0.2's consumer once stopped fetching a partition
 * after leader moves, reporting nothing (the sink "running" with records to
 * go, for ever). Here the partitions of persons are paused behind the
 * driver's back once the consumer holds them: it fetches nothing more of
 * them and says nothing.
 */
struct stopper {
    struct plan *plan;
    rd_kafka_t *rk;
};

static void *stop_fetch(void *arg)
{
    struct stopper *st = arg;
    /* Every millisecond (paused before its first fetch comes back, 40 ms
     * later), at most 30 s (a replacement's assignment waits for the old
     * member's session to end on the mock cluster, 6 s, and a rebalance).
     * The consumer is not destroyed before it stalled, which it cannot
     * before its assignment. */
    for (int i = 0; i < 30000; i++) {
        rd_kafka_topic_partition_list_t *a = NULL;
        if (rd_kafka_assignment(st->rk, &a) == RD_KAFKA_RESP_ERR_NO_ERROR && a->cnt > 0) {
            rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(3);
            for (int j = 0; j < a->cnt; j++)
                if (strcmp(a->elems[j].topic, "skolsync.persons") == 0)
                    rd_kafka_topic_partition_list_add(l, a->elems[j].topic, a->elems[j].partition);
            if (l->cnt > 0 && rd_kafka_pause_partitions(st->rk, l) == RD_KAFKA_RESP_ERR_NO_ERROR)
                __atomic_add_fetch(&st->plan->fetches_stopped, 1, __ATOMIC_SEQ_CST);
            rd_kafka_topic_partition_list_destroy(l);
            rd_kafka_topic_partition_list_destroy(a);
            if (st->plan->scenario == FETCH_STOPS_OUTAGE) {
                /* the source is done by now (a few hundred records, and
                 * the mock's first join alone takes 3 s, §8.12), so the
                 * sink finds the stall fetch_stall_timeout (4 s) after
                 * this: the broker down from 2 s on, for 15 s */
                sleep(2);
                rd_kafka_mock_broker_set_down(st->plan->mock, 1);
                st->plan->injected++;
                sleep(15);
                rd_kafka_mock_broker_set_up(st->plan->mock, 1);
            }
            break;
        }
        if (a)
            rd_kafka_topic_partition_list_destroy(a);
        usleep(1000);
    }
    free(st);
    return NULL;
}

/* Whether the n-th consumer of the sink stops fetching. */
static bool stops(const struct plan *p, int n)
{
    return p->scenario == FETCH_STOPS_AGAIN ||
           ((p->scenario == FETCH_STOPS || p->scenario == FETCH_STOPS_OUTAGE) && n == 0);
}

/* Each consumer the sink creates (on its thread): FETCH_STOPS stops the first one's fetch. */
static void on_consumer(rd_kafka_t *rk, void *ctx)
{
    struct plan *p = ctx;
    if (p->n_consumers >= MAX_CONSUMERS)
        return;
    int n = p->n_consumers++;
    p->consumers[n] = rk;
    if (stops(p, n)) {
        struct stopper *st = malloc(sizeof(*st));
        *st = (struct stopper){.plan = p, .rk = rk};
        pthread_create(&p->stoppers[n], NULL, stop_fetch, st);
    }
}

static void stoppers_join(struct plan *p)
{
    for (int i = 0; i < p->n_consumers; i++)
        if (stops(p, i))
            pthread_join(p->stoppers[i], NULL);
}

static void on_kafka(struct sk_kafka *k, void *ctx)
{
    struct plan *p = ctx;
    p->mock = sk_kafka_mock(k);
    cr_assert_not_null(p->mock);
    sk_kafka_set_consumer_hook(k, on_consumer, p);
    /* A sync slow enough to be under way when the faults come: without it
     * the source had stored everything before they did, and met none. */
    for (int b = 1; b <= 3; b++)
        rd_kafka_mock_broker_set_rtt(p->mock, b, 40);
    pthread_create(&p->thread, NULL, inject, p);
}

/* The summary's "met:" line of a connector ("source files" / "sink db"): its counts. */
struct met {
    unsigned long long retries, errors, rebalances, app_retries;
};

static struct met met_of(const char *summary, const char *connector)
{
    struct met m = {0};
    const char *c = strstr(summary, connector);
    cr_assert_not_null(c, "no %s in the summary:\n%s", connector, summary);
    const char *line = strchr(c, '\n');
    if (line && strncmp(line + 1, "    met: ", 9) == 0) {
        cr_assert_eq(sscanf(line + 10, "%llu Kafka errors, %llu rebalances, %llu retries",
                            &m.errors, &m.rebalances, &m.app_retries),
                     3, "%s", line + 1);
        /* there with statistics on (kafka.statistics), as in every test here */
        const char *end = strchr(line + 1, '\n');
        const char *r = strstr(line + 10, "retries after a failure, ");
        cr_assert(r && (!end || r < end), "no Kafka request retries: %s", line + 1);
        cr_assert_eq(sscanf(r + 25, "%llu Kafka request retries", &m.retries), 1, "%s", line + 1);
    }
    return m;
}

/*
 * A run still going after RUN_DEADLINE_S is stopped: its log raised to info
 * for a few of the daemon's progress lines (each connector's state and
 * count), then SIGTERM to the daemon's thread, read from its signalfd. The
 * test then fails naming the hang, with the summary, instead of being
 * killed by Criterion's timeout with nothing to show.
 */
#define RUN_DEADLINE_S 150

struct deadline {
    pthread_t daemon;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done, fired;
};

static void *deadline_watch(void *arg)
{
    struct deadline *dl = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* for the daemon's thread, not this one */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += RUN_DEADLINE_S;
    pthread_mutex_lock(&dl->mu);
    while (!dl->done && pthread_cond_timedwait(&dl->cv, &dl->mu, &until) == 0)
        ;
    bool done = dl->done;
    pthread_mutex_unlock(&dl->mu);
    if (done)
        return NULL;
    sk_log_setup(SK_LOG_INFO, false);
    sk_warn("test", "the run has not ended in %d s: stopping it", RUN_DEADLINE_S);
    sleep(5); /* two progress lines */
    dl->fired = true;
    pthread_kill(dl->daemon, SIGTERM);
    return NULL;
}

/* Runs skolsync --once on cfg in this process under plan's faults: its summary, *rc its result. */
static char *run_faulted(const char *cfg, struct plan *plan, int *rc)
{
    struct sk_config_errors errs = {0};
    struct sk_daemon_config *c = sk_daemon_config_load(cfg, &errs);
    cr_assert_not_null(c, "%s", errs.n ? errs.v[0].text : "");
    sk_log_setup(SK_LOG_WARN, false);
    char *summary = NULL;
    size_t summary_len = 0;
    FILE *sum = open_memstream(&summary, &summary_len);
    struct sk_run_options opt = {
        .once = true, .summary = sum, .kafka_started = on_kafka, .hook_ctx = plan};
    struct deadline dl = {.daemon = pthread_self()};
    pthread_mutex_init(&dl.mu, NULL);
    pthread_cond_init(&dl.cv, NULL);
    pthread_t watch;
    cr_assert_eq(pthread_create(&watch, NULL, deadline_watch, &dl), 0);
    *rc = sk_daemon_run(c, &opt);
    pthread_mutex_lock(&dl.mu);
    dl.done = true;
    pthread_cond_signal(&dl.cv);
    pthread_mutex_unlock(&dl.mu);
    pthread_join(watch, NULL);
    pthread_join(plan->thread, NULL);
    stoppers_join(plan);
    fclose(sum);
    cr_log_info("%s", summary);
    cr_assert(!dl.fired, "the run had not ended after %d s (stopped; its summary:\n%s)",
              RUN_DEADLINE_S, summary);
    sk_daemon_config_free(c);
    return summary;
}

static void run_with(enum scenario scenario, const char *kafka_extra, const char *sink_extra)
{
    char *dir = skt_tmpdir("faults");
    char *data = skt_fmt("%s/data", dir);
    char *db = skt_fmt("%s/out.db", dir);
    char *cfg = skt_fmt("%s/skolsync.yaml", dir);
    skt_generate(data, 41, 150);
    char *text =
        skt_fmt("kafka:\n  brokers: embedded\n  embedded_brokers: 3\n"
                /* statistics often enough to see the faults before the clients end */
                "  statistics: 100ms\n%s"
                "admin:\n  listen: 127.0.0.1:0\n"
                "log:\n  level: warn\n"
                "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                "    batch_size: 200\n    retry_backoff: 200ms\n    retry_backoff_max: 2s\n"
                "sinks:\n  db:\n    type: sqlite-sink\n    path: %s\n    batch_size: 200\n"
                "    retry_backoff: 200ms\n    retry_backoff_max: 2s\n%s",
                kafka_extra ? kafka_extra : "", data, db, sink_extra ? sink_extra : "");
    skt_write(cfg, text);
    struct plan plan = {.scenario = scenario, .db = db};
    int rc;
    char *summary = run_faulted(cfg, &plan, &rc);
    cr_assert_eq(rc, 0, "the sync did not complete under faults");
    cr_assert_gt(plan.injected + plan.fetches_stopped, 0);
    struct met src = met_of(summary, "source files"), snk = met_of(summary, "sink db");
    /* The clients met the faults (librdkafka's statistics and the drivers'
     * retries, in the run summary), not only the injector counted them. */
    switch (scenario) {
    case REQUEST_ERRORS:
        cr_assert_gt(src.retries + src.errors, 0, "no produce error reached the source");
        cr_assert_gt(snk.retries + snk.errors, 0, "no fetch or commit error reached the sink");
        /* a group member of its own; on the shared consumer it has none */
        if (kafka_extra && strstr(kafka_extra, "shared_consumer: false"))
            cr_assert_gt(snk.rebalances, 1, "the heartbeat errors caused no rebalance");
        break;
    case BROKER_DOWN_UP:
        cr_assert_gt(src.errors, 0, "the source's producer never lost its brokers");
        cr_assert_gt(snk.errors, 0, "the sink's consumer never lost its brokers");
        break;
    case LEADER_MOVE:
        cr_assert_gt(src.retries, 0, "no record was sent again to a moved leader");
        break;
    case LOST_ACKS:
        cr_assert_gt(src.app_retries, 0, "no batch was reported failed and sent again");
        break;
    case TARGET_LOCKED:
    case LOCKED_REBALANCE:
        /* it waited for its target, taking nothing from its consumer, rightly:
         * no silence of the consumer's */
        cr_assert_gt(snk.app_retries, 0, "the lock was not met");
        /* and the partitions it paused for the wait and got back through
         * the rebalances fetch again: no consumer replaced for a stall */
        cr_assert_null(strstr(summary, " replaced"), "%s", summary);
        cr_assert_eq(plan.n_consumers, 1);
        if (scenario == LOCKED_REBALANCE) {
            cr_assert_gt(plan.intruder_parts, 0, "the intruder was given no partition");
            cr_assert_geq(snk.rebalances, 3, "%llu rebalances", snk.rebalances);
        }
        break;
    case FETCH_STOPS:
        /* the first consumer stopped fetching, the sink replaced it, once */
        cr_assert_eq(plan.fetches_stopped, 1);
        cr_assert_eq(plan.n_consumers, 2, "%d consumers", plan.n_consumers);
        cr_assert(strstr(summary, ", 1 consumer replaced"), "%s", summary);
        break;
    case NOT_WRITTEN:
    case GROUP_REFUSED:
    case PRODUCER_REFUSED:
    case FETCH_STOPS_AGAIN:
    case FETCH_STOPS_OUTAGE:
        break; /* refused() and the like, below; NOT_WRITTEN: the ss12000 test */
    }
    char why[2048] = "";
    cr_assert(skt_db_matches_dataset(db, data, why, sizeof(why)), "%s", why);
    free(summary);
    free(text);
    free(cfg);
    free(db);
    free(data);
    free(dir);
}

/* A jsonl-source "files" and a sqlite-sink "db" on the one-broker embedded
 * cluster, in a new temp dir: its paths and loaded configuration. */
struct pair {
    char *dir, *data, *db, *cfg;
    struct sk_daemon_config *c;
};

static struct pair pair_new(const char *tag, int seed, int students, const char *core_extra,
                            const char *sink_extra)
{
    struct pair p = {.dir = skt_tmpdir(tag)};
    p.data = skt_fmt("%s/data", p.dir);
    p.db = skt_fmt("%s/out.db", p.dir);
    p.cfg = skt_fmt("%s/skolsync.yaml", p.dir);
    skt_generate(p.data, seed, students);
    /* core_extra right after the kafka section: it may begin with more of it */
    char *text = skt_fmt("kafka:\n  brokers: embedded\n%s"
                         "admin:\n  listen: 127.0.0.1:0\n"
                         "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                         "sinks:\n  db:\n    type: sqlite-sink\n    path: %s\n%s",
                         core_extra, p.data, p.db, sink_extra ? sink_extra : "");
    skt_write(p.cfg, text);
    free(text);
    struct sk_config_errors errs = {0};
    p.c = sk_daemon_config_load(p.cfg, &errs);
    cr_assert_not_null(p.c, "%s", errs.n ? errs.v[0].text : "");
    return p;
}

static void pair_free(struct pair *p)
{
    sk_daemon_config_free(p->c);
    free(p->cfg);
    free(p->db);
    free(p->data);
    free(p->dir);
}

/*
 * Authorisation refused for good: the connector whose client is refused
 * fails visibly instead of retrying in silence; under --once the run ends
 * with an error naming the refusal (or what failed the connector).
 */
/* Runs p's daemon --once under plan, its log (info) into p's dir: the exit
 * code; *log the log's path, *all its text, *summary the run's summary. */
static int run_logged(struct pair *p, struct plan *plan, char **log, char **all, char **summary)
{
    *log = skt_fmt("%s/daemon.log", p->dir);
    size_t summary_len = 0;
    FILE *sum = open_memstream(summary, &summary_len);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    FILE *lf = fopen(*log, "w");
    cr_assert_not_null(lf);
    dup2(fileno(lf), STDERR_FILENO);
    sk_log_setup(SK_LOG_INFO, false);
    struct sk_run_options opt = {
        .once = true, .summary = sum, .kafka_started = on_kafka, .hook_ctx = plan};
    int rc = sk_daemon_run(p->c, &opt);
    pthread_join(plan->thread, NULL);
    stoppers_join(plan);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    fclose(lf);
    fclose(sum);
    size_t len = 0;
    *all = sk_read_file(*log, &len);
    cr_assert_not_null(*all);
    return rc;
}

static void refused(enum scenario scenario, const char *connector, const char *error,
                    const char *sink_extra)
{
    /* a sink refused its group: one with a consumer and member of its own (on
     * the shared consumer, the default for this node-local sink, it joins none) */
    const char *core = scenario == GROUP_REFUSED ? "  shared_consumer: false\nlog:\n  level: info\n"
                                                 : "log:\n  level: info\n";
    struct pair p = pair_new("faults-refused", 43, 20, core, sink_extra);
    struct plan plan = {.scenario = scenario};
    char *log, *all, *summary;
    int rc = run_logged(&p, &plan, &log, &all, &summary);
    cr_assert_neq(rc, 0, "the run succeeded although %s was refused", connector);
    char *line = skt_fmt("%s: ", connector);
    const char *at = strstr(all, error);
    cr_assert(at && strstr(all, line), "no error naming %s and %s in %s", connector, error, log);
    cr_assert(strstr(all, "a connector failed; stopping"), "the run did not stop on it (%s)", log);
    free(all);
    free(summary);
    free(line);
    free(log);
    pair_free(&p);
}

TestSuite(kafka_faults, .timeout = 240);

Test(kafka_faults, a_sink_refused_its_group_fails_visibly)
{
    refused(GROUP_REFUSED, "db", "GROUP_AUTHORIZATION_FAILED", NULL);
}

Test(kafka_faults, a_source_refused_its_producer_id_fails_visibly)
{
    refused(PRODUCER_REFUSED, "files", "CLUSTER_AUTHORIZATION_FAILED", NULL);
}

Test(kafka_faults, request_errors_on_produce_fetch_commit_and_group)
{
    run_with(REQUEST_ERRORS, "  shared_consumer: false\n", NULL);
}

/* The same errors met by the node-local sinks' shared consumer (no group). */
Test(kafka_faults, request_errors_on_the_shared_consumer)
{
    run_with(REQUEST_ERRORS, "  shared_consumer: true\n", NULL);
}

Test(kafka_faults, all_brokers_down_then_up)
{
    run_with(BROKER_DOWN_UP, "  properties:\n    socket.connection.setup.timeout.ms: \"2000\"\n",
             NULL);
}

/*
 * The sources of a node share one producer: its errors (every broker down)
 * are counted for each source and logged once per interval under "sources",
 * not by each source (100 sources wrote 100 lines for one broker before).
 */
Test(kafka_faults, the_sources_producer_logs_its_errors_once_not_per_source)
{
    enum { SOURCES = 4 };
    struct pair p = {.dir = skt_tmpdir("faults-sources")};
    p.data = skt_fmt("%s/data", p.dir);
    p.db = skt_fmt("%s/out.db", p.dir);
    p.cfg = skt_fmt("%s/skolsync.yaml", p.dir);
    skt_generate(p.data, 49, 150);
    struct sk_buf text = {0};
    sk_buf_puts(&text, "kafka:\n  brokers: embedded\n  embedded_brokers: 3\n  statistics: 100ms\n"
                       "  properties:\n    socket.connection.setup.timeout.ms: \"2000\"\n"
                       "admin:\n  listen: 127.0.0.1:0\nlog:\n  level: info\nsources:\n");
    for (int i = 0; i < SOURCES; i++)
        sk_buf_printf(&text, "  s%d:\n    type: jsonl-source\n    path: %s\n    batch_size: 200\n",
                      i, p.data);
    sk_buf_printf(&text, "sinks:\n  db:\n    type: sqlite-sink\n    path: %s\n", p.db);
    skt_write(p.cfg, text.p);
    sk_buf_free(&text);
    struct sk_config_errors errs = {0};
    p.c = sk_daemon_config_load(p.cfg, &errs);
    cr_assert_not_null(p.c, "%s", errs.n ? errs.v[0].text : "");
    struct plan plan = {.scenario = BROKER_DOWN_UP, .db = p.db};
    char *log, *all, *summary;
    int rc = run_logged(&p, &plan, &log, &all, &summary);
    cr_assert_eq(rc, 0, "the sync did not complete (log %s)", log);
    int shared = skt_lines_with(log, "sources: kafka: ");
    cr_assert_gt(shared, 0, "the producer's errors were not logged (log %s)", log);
    for (int i = 0; i < SOURCES; i++) {
        char *name = skt_fmt("source s%d", i);
        cr_assert_gt(met_of(summary, name).errors, 0, "%s counted no error of its producer", name);
        free(name);
        char *own = skt_fmt("s%d: kafka: ", i);
        cr_assert_eq(skt_lines_with(log, own), 0, "s%d logged its producer's errors (log %s)", i,
                     log);
        free(own);
    }
    free(all);
    free(summary);
    free(log);
    pair_free(&p);
}

Test(kafka_faults, leader_moves)
{
    run_with(LEADER_MOVE, NULL, NULL);
}

/* A consumer that stops fetching, with no error: the sink replaces it and completes. */
Test(kafka_faults, a_consumer_that_stops_fetching_is_replaced)
{
    run_with(FETCH_STOPS, NULL, "    fetch_stall_timeout: 3s\n");
}

/*
 * Without --once no drain target says a partition is behind: the lag
 * monitor's sample of the sink's own partitions, read after it last got
 * anything, does. The daemon runs on until the target equals the input.
 */
struct until_applied {
    pthread_t daemon;
    const char *db, *data;
    bool matched;
};

static void *stop_once_applied(void *arg)
{
    struct until_applied *u = arg;
    char why[256];
    for (int i = 0; i < 240 && !u->matched; i++) { /* 120 s */
        usleep(500 * 1000);
        u->matched = skt_db_matches_dataset(u->db, u->data, why, sizeof(why));
    }
    pthread_kill(u->daemon, SIGTERM);
    return NULL;
}

Test(kafka_faults, a_consumer_that_stops_fetching_is_replaced_by_the_lag_it_leaves)
{
    struct pair p = pair_new("faults-lag", 47, 40, "log:\n  level: warn\nlag_interval: 1s\n",
                             "    fetch_stall_timeout: 3s\n");
    sk_log_setup(SK_LOG_WARN, false);
    char *summary = NULL;
    size_t summary_len = 0;
    FILE *sum = open_memstream(&summary, &summary_len);
    struct plan plan = {.scenario = FETCH_STOPS};
    struct sk_run_options opt = {.summary = sum, .kafka_started = on_kafka, .hook_ctx = &plan};
    struct until_applied u = {.daemon = pthread_self(), .db = p.db, .data = p.data};
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* the watcher inherits it: SIGTERM is the daemon's */
    pthread_t watch;
    cr_assert_eq(pthread_create(&watch, NULL, stop_once_applied, &u), 0);
    int rc = sk_daemon_run(p.c, &opt);
    pthread_join(watch, NULL);
    pthread_join(plan.thread, NULL);
    stoppers_join(&plan);
    fclose(sum);
    cr_log_info("%s", summary);
    cr_assert_eq(rc, 0);
    cr_assert(u.matched, "the target never equalled the input: %s", summary);
    cr_assert_eq(plan.fetches_stopped, 1);
    cr_assert_eq(plan.n_consumers, 2, "%d consumers", plan.n_consumers);
    cr_assert(strstr(summary, ", 1 consumer replaced"), "%s", summary);
    free(summary);
    pair_free(&p);
}

/*
 * The brokers down when the sink would replace its consumer: it waits for
 * them (a new consumer could not fetch either, and failing the run would
 * turn an outage into an error), then replaces it once, and completes.
 */
Test(kafka_faults, a_stalled_sink_waits_out_an_outage_before_replacing_its_consumer)
{
    struct pair p =
        pair_new("faults-outage", 44, 10, "log:\n  level: info\n", "    fetch_stall_timeout: 4s\n");
    struct plan plan = {.scenario = FETCH_STOPS_OUTAGE};
    char *log, *all, *summary;
    int rc = run_logged(&p, &plan, &log, &all, &summary);
    cr_assert_eq(rc, 0, "the run failed (%s)", log);
    cr_assert_eq(plan.injected, 1);
    cr_assert(strstr(all, "the brokers do not answer: waiting for them"), "no wait (%s)", log);
    cr_assert(strstr(summary, ", 1 consumer replaced"), "%s", summary);
    char why[2048] = "";
    cr_assert(skt_db_matches_dataset(p.db, p.data, why, sizeof(why)), "%s", why);
    free(all);
    free(summary);
    free(log);
    pair_free(&p);
}

/*
 * A sink that waited for its target longer than fetch_stall_timeout took
 * nothing from its consumer meanwhile: that is no silence of the consumer's,
 * and it is not replaced once the target is back.
 */
Test(kafka_faults, a_sink_that_waited_for_its_target_keeps_its_consumer)
{
    run_with(TARGET_LOCKED, NULL, "    busy_timeout: 100ms\n    fetch_stall_timeout: 2s\n");
}

/*
 * The same wait with its group rebalanced twice meanwhile (a member joins
 * and leaves): librdkafka keeps an application's pause on a partition
 * through a revoke and an assign, so the partitions the sink had paused for
 * its retry and got back never fetched again, and the sink's consumer was
 * replaced for a stall (or, with the stall check off, it waited for ever).
 */
Test(kafka_faults, a_sink_rebalanced_while_waiting_for_its_target_fetches_again)
{
    run_with(LOCKED_REBALANCE, "  shared_consumer: false\n",
             "    busy_timeout: 100ms\n    fetch_stall_timeout: 2s\n");
}

/* ... and when the new one does not fetch either, the sink fails, visibly. */
Test(kafka_faults, a_sink_whose_consumers_keep_stopping_fails_visibly)
{
    refused(FETCH_STOPS_AGAIN, "db", "with a new consumer too", "    fetch_stall_timeout: 2s\n");
}

Test(kafka_faults, acknowledgements_lost_after_the_write)
{
    /* the producer gives up on a batch after 2 s although the broker wrote it;
     * the batch is sent again (at-least-once) and the sink absorbs the duplicates */
    run_with(LOST_ACKS, "  properties:\n    message.timeout.ms: \"2000\"\n", NULL);
}

/*
 * The ss12000-source chains the pages that are ready into one transaction
 * (daemon/source_driver.c, GROUP_RECORDS and GROUP_MS; on the embedded
 * broker one group of delivery reports, rule 2). When the group fails (its
 * records refused, not written), every page of it
 * is read and published again from the cursor before it: none is skipped as
 * "stored already" by the dedupe map, which learns a page only once Kafka
 * has it (connectors/ss12000/source.c, settle).
 */
Test(kafka_faults, a_refused_ss12000_group_of_chained_pages_is_published_again)
{
    char *dir = skt_tmpdir("faults-ss");
    char *db = skt_fmt("%s/out.db", dir);
    char *cfg = skt_fmt("%s/skolsync.yaml", dir);
    char *expect = skt_fmt("%s/expect", dir);
    pid_t server;
    int port = skt_ss_start(dir, 60, 11, &server);
    char *text = skt_fmt("kafka:\n  brokers: embedded\n  embedded_brokers: 3\n"
                         "  statistics: 100ms\n"
                         "admin:\n  listen: 127.0.0.1:0\n"
                         "log:\n  level: warn\n"
                         "sources:\n  sis:\n    type: ss12000-source\n"
                         "    url: http://127.0.0.1:%d/v2.0\n    page_size: 40\n"
                         /* 25 pages a second: the faults come while the
                          * sync is under way, groups stored before them */
                         "    max_rps: 25\n    retry_backoff: 200ms\n    retry_backoff_max: 2s\n"
                         "sinks:\n  db:\n    type: sqlite-sink\n    path: %s\n"
                         "    retry_backoff: 200ms\n    retry_backoff_max: 2s\n",
                         port, db);
    skt_write(cfg, text);
    /* after the first types are stored: a rewind to no cursor at all
     * would publish everything again whatever the dedupe map knew */
    struct plan plan = {.scenario = NOT_WRITTEN, .delay_ms = 4000};
    int rc;
    char *summary = run_faulted(cfg, &plan, &rc);
    cr_assert_eq(rc, 0, "the sync did not complete although records were refused");
    struct met src = met_of(summary, "source sis");
    cr_assert_gt(src.app_retries, 0, "no transaction was reported failed and sent again");
    /* the server's data as the dataset the sink's DB must equal */
    cJSON *dump = skt_ss_dump(port);
    cr_assert_gt(skt_ss_dump_total(dump), 2000, "a dataset too small to chain pages");
    skt_dump_write(dump, expect);
    cJSON_Delete(dump);
    kill(server, SIGTERM);
    char why[2048] = "";
    cr_assert(skt_db_matches_dataset(db, expect, why, sizeof(why)), "%s", why);
    free(summary);
    free(text);
    free(expect);
    free(cfg);
    free(db);
    free(dir);
}
