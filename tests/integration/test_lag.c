/*
 * test_lag.c: `skolsync lag` against the real Apache Kafka broker started by
 * scripts/with-testenv.sh. Each test makes its own topic (unique prefix), fills
 * it with a transactional producer and drives a consumer group it controls
 * directly with librdkafka, then runs the command in-process (sk_lag_cli) and
 * reads its JSON. Every wait is bounded.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>

#include "kafka.h"
#include "lag.h"
#include "ownership.h"
#include "sk_test.h"
#include "util.h"

struct env {
    char *prefix, *suffix, *topic, *group, *cfg;
    struct sk_kafka *k;
    rd_kafka_t *producer;
};

/* kafka_extra: more lines of the configuration's kafka section ("" for none). */
static struct env env_new_with(const char *tag, const char *kafka_extra)
{
    struct env e = {0};
    e.prefix = skt_unique_prefix();
    e.suffix = strndup(e.prefix + 1, 8);
    struct sk_kafka_conf kc = {.brokers = (char *)skt_brokers(),
                               .topic_prefix = e.prefix,
                               .partitions = 2,
                               .replication_factor = 1,
                               .exactly_once = true,
                               .connect_timeout_ms = 20000};
    const char *cols[] = {"persons"};
    struct sk_error err = {0};
    cr_assert_eq(sk_kafka_start(&kc, cols, 1, &e.k, &err), 0, "%s", err.msg);
    e.topic = sk_kafka_topic_for(e.k, "persons");
    /* The group a sqlite sink named db-<suffix> would use: node-local, so
     * deployment (skolsync, below), node (n1) and sink. */
    e.group = skt_fmt("skolsync-n1-db-%s", e.suffix);
    char *dir = skt_tmpdir(tag);
    e.cfg = skt_fmt("%s/skolsync.yaml", dir);
    /* The tests stand in for the sink's own consumer (consumer_new), whose
     * group an empty one means stopped: the configuration gives it one. On
     * the shared consumer (the default) the group has no member, and the
     * CLI counts its members as unknown (docs/architecture.md §6.4.1). */
    char *text = skt_fmt("kafka:\n  shared_consumer: false\n%s"
                         "  brokers: %s\n"
                         "  topic_prefix: %s\n"
                         "  deployment: skolsync\n"
                         "node:\n"
                         "  name: n1\n"
                         "admin:\n"
                         "  listen: 127.0.0.1:0\n"
                         "sources:\n"
                         "  files-%s:\n"
                         "    type: jsonl-source\n"
                         "    path: %s\n"
                         "sinks:\n"
                         "  db-%s:\n"
                         "    type: sqlite-sink\n"
                         "    path: %s/out.db\n",
                         kafka_extra, skt_brokers(), e.prefix, e.suffix, dir, e.suffix, dir);
    skt_write(e.cfg, text);
    free(text);
    free(dir);

    rd_kafka_conf_t *conf = sk_kafka_conf_new(e.k, "test-lag-txn", NULL, &err);
    char *tid = skt_fmt("test-lag-%s", e.suffix);
    cr_assert_eq(sk_kafka_conf_set(conf, "transactional.id", tid, &err), 0, "%s", err.msg);
    free(tid);
    char errstr[256];
    e.producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(e.producer, "%s", errstr);
    rd_kafka_error_t *re = rd_kafka_init_transactions(e.producer, 30000);
    cr_assert_null(re, "%s", re ? rd_kafka_error_string(re) : "");
    return e;
}

static struct env env_new(const char *tag)
{
    return env_new_with(tag, "");
}

static void env_free(struct env *e)
{
    rd_kafka_destroy(e->producer);
    sk_kafka_destroy(e->k);
    free(e->prefix);
    free(e->suffix);
    free(e->topic);
    free(e->group);
    free(e->cfg);
}

/* n records to partition `partition` in one transaction, timestamped ts_ms (0 = now). */
static void produce_to(struct env *e, int32_t partition, int n, int64_t ts_ms, bool commit)
{
    cr_assert_null(rd_kafka_begin_transaction(e->producer));
    for (int i = 0; i < n; i++) {
        char key[64];
        snprintf(key, sizeof(key), "key-%d-%lld", i, (long long)sk_now_us());
        cr_assert_eq(rd_kafka_producev(e->producer, RD_KAFKA_V_TOPIC(e->topic),
                                       RD_KAFKA_V_PARTITION(partition),
                                       RD_KAFKA_V_KEY(key, strlen(key)),
                                       RD_KAFKA_V_VALUE("v", 1), RD_KAFKA_V_TIMESTAMP(ts_ms),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    /* Written before the end of the transaction (abort would purge what is queued). */
    cr_assert_eq(rd_kafka_flush(e->producer, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_error_t *re = commit ? rd_kafka_commit_transaction(e->producer, 30000)
                                  : rd_kafka_abort_transaction(e->producer, 30000);
    cr_assert_null(re, "%s", re ? rd_kafka_error_string(re) : "");
}

/* n records to partition 0 (produce_to). */
static void produce(struct env *e, int n, int64_t ts_ms, bool commit)
{
    produce_to(e, 0, n, ts_ms, commit);
}

/* A member of the group, subscribed to the topic (what a sink is). */
static rd_kafka_t *consumer_new(struct env *e)
{
    struct sk_error err = {0};
    rd_kafka_conf_t *conf = sk_kafka_conf_new(e->k, "test-lag-consumer", NULL, &err);
    cr_assert_not_null(conf, "%s", err.msg);
    cr_assert_eq(sk_kafka_conf_set(conf, "group.id", e->group, &err), 0);
    cr_assert_eq(sk_kafka_conf_set(conf, "isolation.level", "read_committed", &err), 0);
    cr_assert_eq(sk_kafka_conf_set(conf, "enable.auto.commit", "false", &err), 0);
    cr_assert_eq(sk_kafka_conf_set(conf, "auto.offset.reset", "earliest", &err), 0);
    char errstr[256];
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(c, "%s", errstr);
    rd_kafka_poll_set_consumer(c);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, e->topic, RD_KAFKA_PARTITION_UA);
    cr_assert_eq(rd_kafka_subscribe(c, topics), 0);
    rd_kafka_topic_partition_list_destroy(topics);
    return c;
}

/* Consumes exactly n records (bounded), then commits the position synchronously. */
static void consume(rd_kafka_t *c, int n)
{
    int got = 0;
    int64_t deadline = sk_mono_ms() + 60000;
    while (got < n && sk_mono_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 200);
        if (!m)
            continue;
        if (!m->err)
            got++;
        rd_kafka_message_destroy(m);
    }
    cr_assert_eq(got, n, "consumed %d of %d records within 60 s", got, n);
    cr_assert_eq(rd_kafka_commit(c, NULL, 0), RD_KAFKA_RESP_ERR_NO_ERROR);
}

static void consumer_stop(rd_kafka_t *c)
{
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
}

/* Runs `skolsync lag ARGS --json` in-process: exit code, and the last JSON line. */
static int lag_json(cJSON **out, const char *const *args, size_t n)
{
    char *argv[24];
    size_t argc = 0;
    argv[argc++] = "lag";
    for (size_t i = 0; i < n; i++)
        argv[argc++] = (char *)args[i];
    argv[argc++] = "--json";
    argv[argc] = NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    int rc = sk_lag_cli((int)argc, argv, f);
    fclose(f);
    char *last = text;
    for (char *nl = strchr(text, '\n'); nl && nl[1]; nl = strchr(nl + 1, '\n'))
        last = nl + 1;
    *out = cJSON_Parse(last);
    cr_assert_not_null(*out, "lag printed no JSON (rc %d): %s", rc, text);
    free(text);
    return rc;
}

static int lag_group(struct env *e, cJSON **out)
{
    const char *args[] = {"--brokers", skt_brokers(), "--group", e->group, "--timeout", "15s"};
    return lag_json(out, args, 6);
}

static cJSON *group_of(cJSON *j)
{
    cJSON *g = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "groups"), 0);
    cr_assert_not_null(g, "no group in the answer");
    return g;
}

/* The one partition the test writes to (0). */
static cJSON *part0(cJSON *j)
{
    cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(group_of(j), "partitions"))
    {
        if (cJSON_GetObjectItem(p, "partition")->valueint == 0)
            return p;
    }
    cr_assert_fail("partition 0 missing");
    return NULL;
}

static int64_t num(cJSON *o, const char *name)
{
    cJSON *v = cJSON_GetObjectItem(o, name);
    cr_assert(cJSON_IsNumber(v), "%s is not a number", name);
    return (int64_t)v->valuedouble;
}

static const char *str(cJSON *o, const char *name)
{
    cJSON *v = cJSON_GetObjectItem(o, name);
    cr_assert(cJSON_IsString(v), "%s is not a string", name);
    return v->valuestring;
}

Test(lag, appears_when_the_sink_stops_is_stop_and_drains_when_it_resumes, .timeout = 150)
{
    struct env e = env_new("lag-stop");
    produce(&e, 10, 0, true);
    rd_kafka_t *c = consumer_new(&e);
    consume(c, 10);
    consumer_stop(c); /* the sink is stopped */
    produce(&e, 12, 0, true);
    produce(&e, 8, 0, true);

    /* Groups from the configuration (names.h), brokers too. */
    cJSON *j;
    const char *args[] = {"-c", e.cfg, "--timeout", "15s"};
    int rc = lag_json(&j, args, 4);
    cJSON *p = part0(j);
    char *dump = cJSON_Print(j);
    cr_assert_str_eq(str(group_of(j), "group"), e.group, "%s", dump);
    cr_assert_eq(num(p, "lag"), 20, "%s", dump);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(p, "lag_exact")), "%s", dump);
    /* The end counts the markers of three transactions; lag does not. */
    cr_assert_gt(num(p, "end") - num(p, "committed"), 20, "%s", dump);
    /* The consumer is gone and there is lag: STOP, the group ERR, exit 2. */
    cr_assert_str_eq(str(p, "status"), "STOP", "%s", dump);
    cr_assert_str_eq(str(group_of(j), "status"), "ERR", "%s", dump);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(group_of(j), "members")), 0, "%s", dump);
    /* Nobody holds the partition: its owner is null; the configuration's
     * source is listed, owned by nobody (no daemon runs it). */
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(p, "owner")), "%s", dump);
    cJSON *src = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "sources"), 0);
    cr_assert_not_null(src, "%s", dump);
    cr_assert(strncmp(str(src, "name"), "files-", 6) == 0, "%s", dump);
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(src, "owner")), "%s", dump);
    cr_assert_eq(rc, 2, "%s", dump);
    /* What it cost: one offset fetch, two ListOffsets per partition (2 partitions). */
    cJSON *req = cJSON_GetObjectItem(j, "requests");
    cr_assert_eq(num(req, "offset_fetch"), 1, "%s", dump);
    cr_assert_leq(num(req, "list_offsets"), 4, "%s", dump);
    free(dump);
    cJSON_Delete(j);

    /* The sink resumes and drains: lag 0, OK, exit 0, and it is a member. */
    c = consumer_new(&e);
    consume(c, 20);
    rc = lag_group(&e, &j);
    dump = cJSON_Print(j);
    p = part0(j);
    cr_assert_eq(num(p, "lag"), 0, "%s", dump);
    cr_assert_str_eq(str(p, "status"), "OK", "%s", dump);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(group_of(j), "members")), 1, "%s", dump);
    /* Not a skolsync client id (and --brokers knows no deployment): the
     * owner is the member's client id. */
    cr_assert_str_eq(str(p, "owner"), "test-lag-consumer", "%s", dump);
    cr_assert_eq(rc, 0, "%s", dump);
    free(dump);
    cJSON_Delete(j);
    consumer_stop(c);
    env_free(&e);
}

Test(lag, seconds_lag_is_the_age_of_the_oldest_unconsumed_record, .timeout = 120)
{
    struct env e = env_new("lag-seconds");
    int64_t now = sk_now_us() / 1000;
    produce(&e, 3, now - 300000, true); /* consumed below */
    rd_kafka_t *c = consumer_new(&e);
    consume(c, 3);
    int64_t oldest = now - 90000;
    produce(&e, 1, oldest, true);
    produce(&e, 4, 0, true); /* newer records must not pull the figure down */
    cJSON *j;
    int rc = lag_group(&e, &j);
    char *dump = cJSON_Print(j);
    cJSON *p = part0(j);
    cr_assert_eq(num(p, "lag"), 5, "%s", dump);
    cr_assert_eq(num(p, "first_unconsumed_ts_ms"), oldest, "%s", dump);
    double expect = (double)(sk_now_us() / 1000 - oldest) / 1000.0;
    double got = cJSON_GetObjectItem(p, "lag_seconds")->valuedouble;
    cr_assert(got <= expect + 0.5 && got >= expect - 5, "lag_seconds %.3f, expected ~%.3f: %s", got,
              expect, dump);
    /* A live member with a record waiting 90 s (> warn-after 60 s): WARN, exit 1. */
    cr_assert_str_eq(str(p, "status"), "WARN", "%s", dump);
    cr_assert_eq(rc, 1, "%s", dump);
    free(dump);
    cJSON_Delete(j);
    consumer_stop(c);
    env_free(&e);
}

/*
 * A group behind by more than half of kafka.tombstone_retention (the topics'
 * delete.retention.ms) may never see a deletion: compaction can remove the
 * tombstone before the group reads it. `lag -c` takes the retention from the
 * configuration and says ERR (exit 2) with the reason; under half it is the
 * plain WARN of an old record.
 */
Test(lag, behind_by_half_the_tombstone_retention_is_err, .timeout = 120)
{
    struct env e = env_new_with("lag-tombstone", "  tombstone_retention: 1h\n");
    int64_t now = sk_now_us() / 1000;
    produce(&e, 2, 0, true);
    rd_kafka_t *c = consumer_new(&e);
    consume(c, 2);
    produce(&e, 1, now - 29 * 60 * 1000, true); /* under half an hour: an old record */
    const char *args[] = {"-c", e.cfg, "--timeout", "15s"};
    cJSON *j;
    int rc = lag_json(&j, args, 4);
    char *dump = cJSON_Print(j);
    cJSON *p = part0(j);
    cr_assert_str_eq(str(p, "status"), "WARN", "%s", dump);
    cr_assert_eq(rc, 1, "%s", dump);
    free(dump);
    cJSON_Delete(j);
    consume(c, 1);
    produce(&e, 1, now - 31 * 60 * 1000, true); /* past half of the hour */
    rc = lag_json(&j, args, 4);
    dump = cJSON_Print(j);
    p = part0(j);
    cr_assert_str_eq(str(p, "status"), "ERR", "%s", dump);
    cr_assert(strstr(str(p, "reason"), "tombstone retention"), "%s", dump);
    cr_assert_eq(rc, 2, "%s", dump);
    free(dump);
    cJSON_Delete(j);
    /* without the configuration (--brokers) there is no retention to judge by */
    rc = lag_group(&e, &j);
    dump = cJSON_Print(j);
    cr_assert_str_eq(str(part0(j), "status"), "WARN", "%s", dump);
    free(dump);
    cJSON_Delete(j);
    consumer_stop(c);
    env_free(&e);
}

/* Whether the file at path has a line containing text, waiting up to timeout_ms. */
static bool logged_within(const char *path, const char *text, int timeout_ms)
{
    char *cmd = skt_fmt("grep -qF '%s' %s", text, path);
    bool found = false;
    for (int waited = 0; !found && waited <= timeout_ms; waited += 250) {
        found = skt_sh(cmd, 10, NULL) == 0;
        if (!found)
            usleep(250000);
    }
    free(cmd);
    return found;
}

/* A daemon running e's sink (db-<suffix>, group e.group) with an admin token. */
struct daemon {
    char *dir, *log, *sink;
    char *assigned; /* "<sink>: assigned", the log's line of each assignment */
    pid_t pid;
    int port;
};

/* e->group becomes the group of daemon_start's sink: a deployment of its own
 * (d<suffix>), so that two such tests at once are two deployments, not two
 * daemons with one node name (the second would refuse to start). */
static void daemon_group(struct env *e)
{
    free(e->group);
    e->group = skt_fmt("d%s-n1-db-%s", e->suffix, e->suffix);
}

static struct daemon daemon_start(struct env *e, const char *tag, const char *kafka_extra)
{
    struct daemon d = {.dir = skt_tmpdir(tag)};
    d.sink = skt_fmt("db-%s", e->suffix);
    d.log = skt_fmt("%s/daemon.log", d.dir);
    daemon_group(e);
    char *cfg = skt_fmt("%s/skolsync.yaml", d.dir);
    /* a consumer of its own, as env_new_with's configuration says */
    char *text = skt_fmt("kafka:\n  brokers: %s\n  topic_prefix: %s\n  deployment: d%s\n"
                         "  shared_consumer: false\n%s"
                         "node:\n  name: n1\n"
                         "admin:\n  listen: 127.0.0.1:0\n  token: lag-test-token\n"
                         "lag_interval: 1s\n"
                         "sinks:\n  %s:\n    type: sqlite-sink\n    path: %s/out.db\n",
                         skt_brokers(), e->prefix, e->suffix, kafka_extra, d.sink, d.dir);
    skt_write(cfg, text);
    free(text);
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", cfg, NULL};
    d.pid = skt_spawn(argv, d.log);
    free(cfg);
    d.port = skt_logged_port(d.log, 20000);
    cr_assert_gt(d.port, 0, "the daemon logged no HTTP port");
    d.assigned = skt_fmt("%s: assigned", d.sink);
    cr_assert(logged_within(d.log, d.assigned, 30000), "the sink got no partitions");
    return d;
}

/* POST /api/v1/connectors/<the sink>/<action> with the token (tried for 20 s). */
static void sink_action(struct daemon *d, const char *action)
{
    char *cmd = skt_fmt("curl -sf -X POST -H 'Authorization: Bearer lag-test-token' "
                        "http://127.0.0.1:%d/api/v1/connectors/%s/%s",
                        d->port, d->sink, action);
    int rc = -1;
    for (int i = 0; i < 100 && rc != 0; i++) {
        rc = skt_sh(cmd, 10, NULL);
        if (rc)
            usleep(200000);
    }
    cr_assert_eq(rc, 0, "could not %s %s", action, d->sink);
    free(cmd);
}

/* The daemon's log (caller frees). */
static char *daemon_log(struct daemon *d)
{
    char *out = NULL, *cat = skt_fmt("cat %s", d->log);
    skt_sh(cat, 10, &out);
    free(cat);
    return out;
}

static void daemon_stop(struct daemon *d)
{
    kill(d->pid, SIGTERM);
    cr_assert_eq(skt_wait(d->pid, 30000), 0);
    free(d->log);
    free(d->sink);
    free(d->assigned);
    free(d->dir);
}

/* The daemon's lag monitor says it in the log too, naming the sink and what to do. */
Test(lag, the_daemon_logs_a_sink_behind_by_half_the_tombstone_retention, .timeout = 120)
{
    struct env e = env_new("lag-tombstone-daemon");
    struct daemon d = daemon_start(&e, "lag-tombstone-daemon", "  tombstone_retention: 1h\n");
    sink_action(&d, "pause"); /* so that the record below stays unconsumed */
    cr_assert(!logged_within(d.log, "tombstone_retention", 3000), "said before any record");
    produce(&e, 1, sk_now_us() / 1000 - 31 * 60 * 1000, true);
    char *want = skt_fmt("sink(s) %s (0.5 h) behind by over half of kafka.tombstone_retention "
                         "(1.0 h)",
                         d.sink);
    bool said = logged_within(d.log, want, 30000);
    char *out = daemon_log(&d);
    cr_assert(said, "no line \"%s\" in:\n%s", want, out);
    cr_assert(strstr(out, "cursor/reset"), "the line does not say what to do:\n%s", out);
    free(out);
    free(want);
    daemon_stop(&d);
    env_free(&e);
}

/* Polls c for ms (it stays a member through rebalances); its persons partition, or -1. */
static int32_t member_partition(rd_kafka_t *c, const char *topic, int ms)
{
    for (int64_t until = sk_mono_ms() + ms; sk_mono_ms() < until;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (m)
            rd_kafka_message_destroy(m);
    }
    rd_kafka_topic_partition_list_t *a = NULL;
    int32_t p = -1;
    if (rd_kafka_assignment(c, &a) == 0 && a) {
        for (int i = 0; i < a->cnt; i++)
            if (strcmp(a->elems[i].topic, topic) == 0)
                p = a->elems[i].partition;
        rd_kafka_topic_partition_list_destroy(a);
    }
    return p;
}

/*
 * An operator's pause holds across a rebalance: a partition the paused sink
 * never had (another member of its group leaves) is not consumed until the
 * sink is resumed. Before, only what was assigned when the pause came was
 * paused: a sink paused for the target's maintenance wrote to it again after
 * a rebalance (found by the tombstone test above, whose pause once came
 * before the first assignment). A sink with a group member of its own: on
 * the shared consumer (the default for this node-local sink) its group has
 * none, and nothing rebalances.
 */
Test(lag, a_paused_sink_stays_paused_across_a_rebalance, .timeout = 180)
{
    struct env e = env_new("lag-pause-rebalance");
    daemon_group(&e);
    rd_kafka_t *c = consumer_new(&e); /* the group's first member */
    cr_assert_geq(member_partition(c, e.topic, 3000), 0, "the first member got no partition");
    struct daemon d = daemon_start(&e, "lag-pause-rebalance", "");
    int32_t p = member_partition(c, e.topic, 5000); /* after the rebalance: one of the two */
    cr_assert_geq(p, 0, "the first member kept no persons partition (log %s)", d.log);
    sink_action(&d, "pause");
    cr_assert(logged_within(d.log, "paused by an operator", 10000), "not paused");
    int before = skt_lines_with(d.log, d.assigned);
    consumer_stop(c); /* it leaves: its partition goes to the paused sink */
    bool moved = false;
    for (int i = 0; i < 300 && !moved; i++) {
        moved = skt_lines_with(d.log, d.assigned) > before;
        if (!moved)
            usleep(100000);
    }
    cr_assert(moved, "no rebalance after the member left (log %s)", d.log);
    /* a record on that partition (its key is no UUID: consumed, it is dead-lettered) */
    produce_to(&e, p, 1, 0, true);
    cr_assert(!logged_within(d.log, "dead-lettered", 5000),
              "a paused sink consumed a partition it got in a rebalance (log %s)", d.log);
    sink_action(&d, "resume");
    cr_assert(logged_within(d.log, "dead-lettered", 30000),
              "the record was not consumed after the resume (log %s)", d.log);
    daemon_stop(&d);
    env_free(&e);
}

Test(lag, idle_caught_up_group_is_ok_with_and_without_members, .timeout = 120)
{
    struct env e = env_new("lag-idle");
    produce(&e, 5, 0, true);
    rd_kafka_t *c = consumer_new(&e);
    consume(c, 5);
    /* Watched over a window of samples, no traffic: OK throughout, exit 0. */
    const char *args[] = {
        "--brokers", skt_brokers(), "--group",  e.group, "--watch",       "--interval", "1s",
        "--count",   "3",           "--window", "3",     "--stuck-after", "1s"};
    cJSON *j;
    int rc = lag_json(&j, args, 13);
    char *dump = cJSON_Print(j);
    cr_assert_eq(num(cJSON_GetObjectItem(j, "window"), "samples"), 3, "%s", dump);
    cr_assert_str_eq(str(part0(j), "status"), "OK", "%s", dump);
    cr_assert_eq(rc, 0, "%s", dump);
    free(dump);
    cJSON_Delete(j);
    /* The consumer leaves; nothing waits for it: still OK (no false STOP). */
    consumer_stop(c);
    rc = lag_json(&j, args, 13);
    dump = cJSON_Print(j);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(group_of(j), "members")), 0, "%s", dump);
    cr_assert_str_eq(str(part0(j), "status"), "OK", "%s", dump);
    cr_assert_eq(rc, 0, "%s", dump);
    free(dump);
    cJSON_Delete(j);
    /* The table form says the same. */
    const char *targs[] = {"lag", "--brokers", skt_brokers(), "--group", e.group, NULL};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    rc = sk_lag_cli(5, (char **)targs, f);
    fclose(f);
    cr_assert_eq(rc, 0, "%s", text);
    cr_assert(strstr(text, "COMMITTED") && strstr(text, e.topic), "%s", text);
    free(text);
    env_free(&e);
}

Test(lag, transactional_topic_caught_up_has_zero_lag, .timeout = 120)
{
    struct env e = env_new("lag-txn");
    produce(&e, 7, 0, true);
    rd_kafka_t *c = consumer_new(&e);
    consume(c, 7);
    consumer_stop(c);
    cJSON *j;
    int rc = lag_group(&e, &j);
    char *dump = cJSON_Print(j);
    cJSON *p = part0(j);
    /* Committed after the last record; the commit marker sits at the end. */
    cr_assert_eq(num(p, "end") - num(p, "committed"), 1, "%s", dump);
    cr_assert_eq(num(p, "lag"), 0, "%s", dump);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(p, "lag_exact")), "%s", dump);
    cr_assert_str_eq(str(p, "status"), "OK", "%s", dump);
    cr_assert_eq(rc, 0, "%s", dump);
    free(dump);
    cJSON_Delete(j);
    /* An aborted transaction after it: its records and markers are not lag either.
     * The end (the last stable offset) moves past them only once the broker
     * has written the abort's marker, which it does after the abort returned
     * (up to ~1 s under load): looked at until then, bounded. */
    produce(&e, 4, 0, false);
    for (int tries = 0;; tries++) {
        rc = lag_group(&e, &j);
        p = part0(j);
        if (num(p, "end") - num(p, "committed") > 4 || tries == 50)
            break;
        cJSON_Delete(j);
        sk_sleep_ms(100);
    }
    dump = cJSON_Print(j);
    cr_assert_gt(num(p, "end") - num(p, "committed"), 4, "%s", dump);
    cr_assert_eq(num(p, "lag"), 0, "%s", dump);
    cr_assert_eq(rc, 0, "%s", dump);
    free(dump);
    cJSON_Delete(j);
    env_free(&e);
}

Test(lag, default_selection_lists_skolsync_groups, .timeout = 120)
{
    struct env e = env_new("lag-list");
    produce(&e, 2, 0, true);
    rd_kafka_t *c = consumer_new(&e);
    consume(c, 2);
    consumer_stop(c);
    const char *args[] = {"--brokers", skt_brokers(), "--timeout", "15s"};
    cJSON *j;
    lag_json(&j, args, 4);
    bool found = false;
    cJSON *g;
    cJSON_ArrayForEach(g, cJSON_GetObjectItem(j, "groups"))
    {
        cr_assert(strncmp(str(g, "group"), "skolsync-", 9) == 0);
        found |= strcmp(str(g, "group"), e.group) == 0;
    }
    cr_assert(found, "%s not listed", e.group);
    cJSON_Delete(j);
    env_free(&e);
}

Test(lag, the_binary_runs_the_command_once_wired, .timeout = 60)
{
    char *out = NULL;
    char *cmd = skt_fmt("%s lag --help", skt_skolsync());
    int rc = skt_sh(cmd, 30, &out);
    free(cmd);
    if (rc == 64 && strstr(out, "unknown command")) {
        free(out);
        cr_skip("`skolsync lag` is not wired into main.c yet");
    }
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "Exit codes"), "%s", out);
    free(out);
    cmd = skt_fmt("%s lag --brokers 127.0.0.1:1 --timeout 2s", skt_skolsync());
    rc = skt_sh(cmd, 30, &out);
    free(cmd);
    cr_assert_eq(rc, 3, "%s", out);
    free(out);
}

/* -X passes librdkafka properties with --brokers (like kcat): a TLS client cannot talk to the
 * plaintext test broker, so it could not evaluate (3); a bad configuration is 3 too, never 2,
 * which says a group is in ERR. */
Test(lag, properties_reach_the_client_and_could_not_run_is_three, .timeout = 90)
{
    char *cmd =
        skt_fmt("%s lag --brokers %s --all-groups --timeout 5s -X security.protocol=plaintext",
                skt_skolsync(), skt_brokers());
    char *out = NULL;
    int rc = skt_sh(cmd, 60, &out);
    cr_assert(rc == 0 || rc == 1 || rc == 2, "plaintext is how the broker talks: %d\n%s", rc, out);
    free(out);
    free(cmd);
    cmd = skt_fmt("%s lag --brokers %s --all-groups --timeout 3s -X security.protocol=ssl",
                  skt_skolsync(), skt_brokers());
    rc = skt_sh(cmd, 60, &out);
    cr_assert_eq(rc, 3, "-X security.protocol=ssl did not reach the client:\n%s", out);
    free(out);
    free(cmd);
    cmd = skt_fmt("%s lag --brokers %s -X no.such.property=1", skt_skolsync(), skt_brokers());
    rc = skt_sh(cmd, 60, &out);
    cr_assert_eq(rc, 3, "%s", out);
    cr_assert(strstr(out, "no.such.property"), "the bad property is not named:\n%s", out);
    free(out);
    free(cmd);
    cmd = skt_fmt("%s lag -X security.protocol=ssl", skt_skolsync());
    rc = skt_sh(cmd, 30, &out);
    cr_assert_eq(rc, 64, "-X without --brokers: %s", out);
    free(out);
    free(cmd);
    char *dir = skt_tmpdir("lag-badcfg");
    char *cfg = skt_fmt("%s/bad.yaml", dir);
    skt_write(cfg, "kafka: [not, a, map]\n");
    cmd = skt_fmt("%s lag -c %s", skt_skolsync(), cfg);
    rc = skt_sh(cmd, 30, &out);
    cr_assert_eq(rc, 3, "an invalid configuration is \"could not run\", not ERR: %s", out);
    free(out);
    free(cmd);
    free(cfg);
    free(dir);
}

/* ---- who owns what ------------------------------------------------------------ */

/* The group's partitions all owned by want (and at least one), in a lag JSON. */
static bool all_owned_by(cJSON *j, const char *group, const char *want)
{
    cJSON *g;
    cJSON_ArrayForEach(g, cJSON_GetObjectItem(j, "groups"))
    {
        const cJSON *name = cJSON_GetObjectItem(g, "group");
        if (!cJSON_IsString(name) || strcmp(name->valuestring, group) != 0)
            continue;
        cJSON *parts = cJSON_GetObjectItem(g, "partitions"), *p;
        bool all = cJSON_GetArraySize(parts) > 0;
        cJSON_ArrayForEach(p, parts)
        {
            const cJSON *owner = cJSON_GetObjectItem(p, "owner");
            all &= cJSON_IsString(owner) && strcmp(owner->valuestring, want) == 0;
        }
        return all;
    }
    return false;
}

static bool source_owned_by(cJSON *j, const char *source, const char *want)
{
    cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(j, "sources"))
    {
        const cJSON *name = cJSON_GetObjectItem(s, "name");
        const cJSON *owner = cJSON_GetObjectItem(s, "owner");
        if (cJSON_IsString(name) && strcmp(name->valuestring, source) == 0)
            return cJSON_IsString(owner) && strcmp(owner->valuestring, want) == 0;
    }
    return false;
}

/*
 * A daemon of a real-broker deployment with node.name n1 runs the source
 * (the sources group assigned it its partition) and holds every partition
 * of its sink's group: `skolsync lag -c` names n1 as the owner of both, in
 * the JSON and in the table, and so does the daemon's own GET /api/v1/lag.
 * Owners are read from the group's members: the sink has a consumer of its
 * own here (kafka.shared_consumer false). On the shared consumer a
 * node-local sink's group has no member, and its partitions show no owner
 * (docs/architecture.md §6.4.1).
 */
Test(lag, names_the_node_that_owns_each_partition_and_source, .timeout = 150)
{
    char *dir = skt_tmpdir("lag-owner");
    char *data = skt_fmt("%s/data", dir);
    skt_generate(data, 47, 10);
    char *prefix = skt_unique_prefix();
    char *deployment = strndup(prefix, strlen(prefix) - 1); /* the prefix without its '.' */
    char *head = skt_config_head(prefix, "info", "20s");
    char *cfg = skt_fmt("%s/skolsync.yaml", dir);
    char *text = skt_fmt("kafka:\n  shared_consumer: false\n%snode:\n  name: n1\nlag_interval: 1s\n"
                         "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                         "sinks:\n  db:\n    type: sqlite-sink\n    path: %s/out.db\n",
                         head + strlen("kafka:\n"), data, dir);
    skt_write(cfg, text);
    char *log = skt_fmt("%s/daemon.log", dir);
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", cfg, NULL};
    pid_t pid = skt_spawn(argv, log);
    int port = skt_logged_port(log, 30000);
    cr_assert_gt(port, 0, "the daemon logged no HTTP port (%s)", log);
    char *group = skt_fmt("%s-n1-db", deployment); /* node-local: a group per node */

    /* The CLI, from the configuration: until the group committed and both
     * assignments are in (the sources group's first join takes seconds). */
    const char *args[] = {"-c", cfg, "--timeout", "15s"};
    cJSON *j = NULL;
    bool owned = false;
    for (int tries = 0; tries < 60 && !owned; tries++) {
        if (j) {
            cJSON_Delete(j);
            sleep(1);
        }
        lag_json(&j, args, 4);
        owned = all_owned_by(j, group, "n1") && source_owned_by(j, "files", "n1");
    }
    char *dump = cJSON_Print(j);
    cr_assert(owned, "n1 should own the source and every partition of %s: %s", group, dump);
    cJSON *m = cJSON_GetArrayItem(cJSON_GetObjectItem(group_of(j), "members"), 0);
    cr_assert_str_eq(str(m, "node"), "n1", "%s", dump);
    cJSON *src = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "sources"), 0);
    cr_assert_eq(num(src, "partition"), sk_ownership_partition("files"), "%s", dump);
    free(dump);
    cJSON_Delete(j);

    /* The table: an OWNER column before REASON, and the sources with theirs. */
    const char *targs[] = {"lag", "-c", cfg, "--timeout", "15s", NULL};
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    sk_lag_cli(5, (char **)targs, f);
    fclose(f);
    cr_assert(strstr(out, "STATUS  OWNER  REASON"), "no OWNER column:\n%s", out);
    char *row = strstr(out, group);
    cr_assert(row && strstr(row, "  n1  "), "no row of %s owned by n1:\n%s", group, out);
    char *sources = strstr(out, "SOURCE");
    cr_assert(sources && strstr(sources, "PART  OWNER"), "no sources table:\n%s", out);
    char *files = strstr(sources, "\nfiles ");
    cr_assert(files && strstr(files, "n1"), "the source's owner is not shown:\n%s", out);
    free(out);

    /* The daemon's own sample (GET /api/v1/lag) says the same. */
    char *url = skt_fmt("http://127.0.0.1:%d/api/v1/lag", port);
    owned = false;
    char *body = NULL;
    for (int tries = 0; tries < 60 && !owned; tries++) {
        free(body);
        body = NULL;
        if (tries)
            usleep(500000);
        if (skt_http("GET", url, NULL, 10, &body) != 200)
            continue;
        j = cJSON_Parse(body);
        owned = j && all_owned_by(j, group, "n1") && source_owned_by(j, "files", "n1");
        cJSON_Delete(j);
    }
    cr_assert(owned, "GET /api/v1/lag: %s", body ? body : "(nothing)");
    free(body);
    free(url);

    cr_assert_eq(skt_stop(&pid, 30000), 0, "SIGTERM should stop the daemon with exit 0 (%s)", log);
    free(group);
    free(log);
    free(text);
    free(cfg);
    free(head);
    free(deployment);
    free(prefix);
    free(data);
    free(dir);
}
