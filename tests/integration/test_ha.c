/*
 * test_ha.c: several daemons and Kafka's group machinery, on the real broker:
 * a fenced sink or source fails visibly and recovers by itself (no silent
 * death), a node fenced out of the sources group runs no source until it is
 * back; two deployments on one cluster with the same connector names never
 * meet; a sink keeps its offsets across the renaming of its group; two nodes
 * split a shared sink's partitions and each keeps a node-local copy; a sink
 * replaces its consumer only for its own partitions' lag, not another node's.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#include "kafka.h"
#include "sk_test.h"

struct node {
    char *dir, *cfg, *log;
    pid_t pid;
    int port;
};

static void node_start(struct node *n)
{
    n->log = skt_fmt("%s/daemon-%d.log", n->dir, (int)getpid());
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", n->cfg, NULL};
    n->pid = skt_spawn(argv, n->log);
    n->port = skt_logged_port(n->log, 30000);
    cr_assert_gt(n->port, 0, "the daemon logged no HTTP port (%s)", n->log);
}

static void node_stop(struct node *n)
{
    int rc = skt_stop(&n->pid, 30000);
    cr_assert_eq(rc, 0, "SIGTERM should stop the daemon with exit 0, got %d (%s)", rc, n->log);
}

/* GET path; the body (caller frees), the status in *status. */
static char *get(const struct node *n, const char *path, long *status)
{
    char *url = skt_fmt("http://127.0.0.1:%d%s", n->port, path);
    char *body = NULL;
    *status = skt_http("GET", url, NULL, 10, &body);
    free(url);
    return body ? body : strdup("");
}

/* The connector as GET /api/v1/connectors/NAME shows it (caller deletes), or NULL. */
static cJSON *connector(const struct node *n, const char *name)
{
    char *path = skt_fmt("/api/v1/connectors/%s", name);
    long st;
    char *body = get(n, path, &st);
    free(path);
    cJSON *o = st == 200 ? cJSON_Parse(body) : NULL;
    free(body);
    return o;
}

/* Waits until the connector has applied (or stored) at least want records. */
static bool records_reach(const struct node *n, const char *name, double want, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 250) {
        cJSON *c = connector(n, name);
        double have = c ? skt_jnum(c, "records") : -1;
        cJSON_Delete(c);
        if (have >= want)
            return true;
        usleep(250000);
    }
    return false;
}

/* The text after `key` up to the end of its word in the first log line holding it. */
static char *logged_word(const char *log, const char *key, int timeout_ms)
{
    char *cmd = skt_fmt("grep -o '%s[^ ,]*' %s | head -1", key, log);
    char *word = NULL;
    for (int waited = 0; waited <= timeout_ms && !word; waited += 200) {
        char *out = NULL;
        skt_sh(cmd, 5, &out);
        out[strcspn(out, "\n")] = '\0';
        if (strlen(out) > strlen(key))
            word = strdup(out + strlen(key));
        free(out);
        if (!word)
            usleep(200000);
    }
    free(cmd);
    return word;
}

/*
 * A consumer in the sink's group under the sink's own static member id: the
 * broker hands it the member, and the sink is fenced (docs/architecture.md
 * §8.7).
 */
/* A client configuration for the test broker with the given name, value pairs (NULL-ended). */
static rd_kafka_conf_t *client_conf(const char *const *kv)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    cr_assert_eq(
        rd_kafka_conf_set(conf, "bootstrap.servers", skt_brokers(), errstr, sizeof(errstr)),
        RD_KAFKA_CONF_OK);
    for (size_t i = 0; kv[i]; i += 2)
        cr_assert_eq(rd_kafka_conf_set(conf, kv[i], kv[i + 1], errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK, "%s: %s", kv[i], errstr);
    return conf;
}

static rd_kafka_t *intruder_new(const char *group, const char *instance, const char *topic)
{
    const char *kv[] = {"group.id",
                        group,
                        "group.instance.id",
                        instance,
                        "enable.auto.commit",
                        "false",
                        "partition.assignment.strategy",
                        "roundrobin",
                        "session.timeout.ms",
                        "10000",
                        "log_level",
                        "0",
                        NULL};
    rd_kafka_conf_t *conf = client_conf(kv);
    char errstr[512];
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(c, "%s", errstr);
    rd_kafka_poll_set_consumer(c);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, RD_KAFKA_PARTITION_UA);
    cr_assert_eq(rd_kafka_subscribe(c, l), 0);
    rd_kafka_topic_partition_list_destroy(l);
    return c;
}

static void intruder_free(rd_kafka_t *c)
{
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
}

/* One daemon: jsonl-source "files" -> sqlite-sink "db", its dataset applied. */
struct one {
    struct node n;
    char *data, *prefix;
    size_t total;
};

/* kafka_extra: more kafka: settings (indented by two), or "". */
static void one_start_with(struct one *o, const char *tag, const char *kafka_extra)
{
    o->n = (struct node){.dir = skt_tmpdir(tag)};
    o->data = skt_fmt("%s/data", o->n.dir);
    o->prefix = skt_unique_prefix();
    skt_generate(o->data, 31, 10);
    o->total = skt_count_records(o->data);
    char *head = skt_config_head(o->prefix, "info", "20s");
    o->n.cfg = skt_fmt("%s/skolsync.yaml", o->n.dir);
    char *text = skt_fmt("kafka:\n%s%s"
                         "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                         "    poll_interval: 1s\n"
                         "sinks:\n  db:\n    type: sqlite-sink\n    path: %s/out.db\n",
                         kafka_extra, head + strlen("kafka:\n"), o->data, o->n.dir);
    skt_write(o->n.cfg, text);
    free(text);
    free(head);
    node_start(&o->n);
    cr_assert(records_reach(&o->n, "db", (double)o->total, 90000), "the dataset was not applied");
}

static void one_start(struct one *o, const char *tag)
{
    one_start_with(o, tag, "");
}

static void one_stop(struct one *o)
{
    node_stop(&o->n);
    free(o->data);
    free(o->prefix);
}

/* Lines of log matching the grep pattern, case ignored. */
static int count_in_log(const char *log, const char *pattern)
{
    char *cmd = skt_fmt("grep -ci '%s' %s", pattern, log);
    char *out = NULL;
    skt_sh(cmd, 5, &out);
    int n = atoi(out);
    free(out);
    free(cmd);
    return n;
}

static bool logged(const struct node *n, const char *pattern)
{
    return count_in_log(n->log, pattern) > 0;
}

/* Polls the connector until it shows state failed with a last_error (true),
 * and whether /ready then answers 503 naming it. step() runs between polls. */
static bool seen_failed(const struct node *n, const char *name, int timeout_ms,
                        void (*step)(void *), void *ctx, bool *ready_503)
{
    char want[128];
    snprintf(want, sizeof(want), "%s is failed", name);
    for (int waited = 0; waited < timeout_ms; waited += 100) {
        if (step)
            step(ctx);
        else
            usleep(100000);
        cJSON *c = connector(n, name);
        bool failed =
            c && strcmp(skt_jstr(c, "state"), "failed") == 0 && skt_jstr(c, "last_error")[0];
        cJSON_Delete(c);
        if (!failed)
            continue;
        long st;
        char *body = get(n, "/ready", &st);
        *ready_503 = st == 503 && strstr(body, want);
        free(body);
        return true;
    }
    return false;
}

static bool running_or_idle(const struct node *n, const char *name)
{
    cJSON *c = connector(n, name);
    bool ok = c && (strcmp(skt_jstr(c, "state"), "idle") == 0 ||
                    strcmp(skt_jstr(c, "state"), "running") == 0);
    cJSON_Delete(c);
    return ok;
}

struct intruder {
    rd_kafka_t *c;
    const char *group, *instance, *topic;
};

/* Keeps the intruder in the group: the restarted sink fences it in turn, and
 * a fenced intruder comes back, until the sink's failure was seen. */
static void intruder_step(void *ctx)
{
    struct intruder *in = ctx;
    rd_kafka_message_t *m = rd_kafka_consumer_poll(in->c, 100);
    if (m)
        rd_kafka_message_destroy(m);
    if (rd_kafka_fatal_error(in->c, NULL, 0)) {
        intruder_free(in->c);
        in->c = intruder_new(in->group, in->instance, in->topic);
    }
}

Test(ha, fenced_sink_fails_visibly_and_recovers_by_itself, .timeout = 240)
{
    struct one o;
    /* a static member of its own: on the shared consumer (the default for
     * this node-local sink) its group has none to fence */
    one_start_with(&o, "ha-fenced", "  shared_consumer: false\n");
    char *group = logged_word(o.n.log, "consumer group ", 5000);
    char *instance = logged_word(o.n.log, "static member ", 5000);
    cr_assert(group && instance, "the sink logged no group and member id");
    char *topic = skt_fmt("%spersons", o.prefix);

    /* The intruder takes the member id: the sink must fail with the reason,
     * and /ready must say so. */
    struct intruder in = {intruder_new(group, instance, topic), group, instance, topic};
    bool ready_503 = false;
    cr_assert(seen_failed(&o.n, "db", 60000, intruder_step, &in, &ready_503),
              "the fenced sink never showed state failed with an error");
    intruder_free(in.c);
    cr_assert(ready_503, "/ready did not answer 503 naming the failed sink");
    cr_assert(logged(&o.n, "db: .*FENCED_INSTANCE_ID.*failing the connector"),
              "the log does not give the reason (%s)", o.n.log);

    /* The intruder is gone: the supervisor's restart brings the sink back, and it applies. */
    skt_append_persons(o.data, 1, 5);
    cr_assert(records_reach(&o.n, "db", (double)o.total + 5, 120000),
              "the sink did not recover and apply new records");
    cr_assert(running_or_idle(&o.n, "db"), "the sink is neither running nor idle");
    cJSON *c = connector(&o.n, "db");
    cr_assert_geq(skt_jnum(c, "restarts"), 1);
    cJSON_Delete(c);
    free(topic);
    free(group);
    free(instance);
    one_stop(&o);
}

/* A producer with the source's transactional id (another daemon running the
 * same source): the source is fenced at its next transaction and must fail
 * with the reason, not recreate its producer every cycle in silence. */
Test(ha, fenced_source_fails_visibly_and_recovers_by_itself, .timeout = 240)
{
    struct one o;
    one_start(&o, "ha-src-fenced");
    char *tid = logged_word(o.n.log, "transactional id ", 5000);
    cr_assert_not_null(tid, "the source logged no transactional id");
    const char *kv[] = {"transactional.id", tid, NULL};
    rd_kafka_conf_t *conf = client_conf(kv);
    char errstr[512];
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(p, "%s", errstr);
    rd_kafka_error_t *e = rd_kafka_init_transactions(p, 30000);
    cr_assert_null(e, "init_transactions: %s", e ? rd_kafka_error_string(e) : "");

    skt_append_persons(o.data, 1, 5);
    bool ready_503 = false;
    cr_assert(seen_failed(&o.n, "files", 60000, NULL, NULL, &ready_503),
              "the fenced source never showed state failed with an error");
    cr_assert(ready_503, "/ready did not answer 503 naming the failed source");
    cr_assert(logged(&o.n, "files: fatal producer error: .*FENCED.*failing the connector"),
              "the log does not give the reason (%s)", o.n.log);
    rd_kafka_destroy(p);

    /* The restart's init_transactions fences the intruder: the records arrive. */
    cr_assert(records_reach(&o.n, "db", (double)o.total + 5, 120000),
              "the source did not recover and deliver");
    cr_assert(running_or_idle(&o.n, "files"), "the source is neither running nor idle");
    free(tid);
    one_stop(&o);
}

/* Another consumer under this node's member id in the sources group (a
 * second live node of the same name): the node's group client is fenced,
 * every source goes to standby (none runs twice), and once the other is
 * gone the node joins again after 10 s and runs its source. */
Test(ha, a_node_fenced_out_of_the_sources_group_runs_no_source_until_it_is_back, .timeout = 240)
{
    struct one o;
    one_start(&o, "ha-own-fenced");
    char *group = logged_word(o.n.log, "joining group ", 5000);
    char *member = logged_word(o.n.log, "(member ", 5000);
    cr_assert(group && member, "no sources group in the log (%s)", o.n.log);
    member[strcspn(member, ")")] = '\0';
    char *topic = skt_fmt("%s_sources", o.prefix);
    struct intruder in = {intruder_new(group, member, topic), group, member, topic};
    bool standby = false;
    for (int waited = 0; waited < 60000 && !standby; waited += 100) {
        intruder_step(&in);
        cJSON *c = connector(&o.n, "files");
        standby = c && strcmp(skt_jstr(c, "state"), "standby") == 0;
        cJSON_Delete(c);
    }
    intruder_free(in.c);
    cr_assert(standby, "the source kept running with its node fenced out of the group (%s)",
              o.n.log);
    cr_assert(logged(&o.n, "ownership: group .*running no source"), "no reason in %s", o.n.log);

    skt_append_persons(o.data, 1, 5);
    cr_assert(records_reach(&o.n, "db", (double)o.total + 5, 120000),
              "the node did not take its source back");
    cr_assert(running_or_idle(&o.n, "files"), "the source is neither running nor idle");
    free(topic);
    free(group);
    free(member);
    one_stop(&o);
}

/* ---- deployments -------------------------------------------------------------- */

/* A jsonl-source "files" -> sqlite-sink "db" daemon config under prefix. */
static void write_pair_config(const char *cfg, const char *prefix, const char *data, const char *db,
                              const char *more)
{
    char *head = skt_config_head(prefix, "info", "20s");
    char *text = skt_fmt("%s%s"
                         "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                         "    poll_interval: 1s\n"
                         "sinks:\n  db:\n    type: sqlite-sink\n    path: %s\n",
                         head, more ? more : "", data, db);
    skt_write(cfg, text);
    free(text);
    free(head);
}

/*
 * Two deployments (prefixes) on one cluster, the same connector names and
 * the same host: before deployments both used the transactional id
 * skolsync-src-files and the group skolsync-db, and fenced each other
 * without end.
 */
Test(ha, two_deployments_with_the_same_names_never_fence_each_other, .timeout = 240)
{
    struct node a = {.dir = skt_tmpdir("ha-dep-a")}, b = {.dir = skt_tmpdir("ha-dep-b")};
    struct node *nodes[] = {&a, &b};
    char *data[2];
    size_t total[2];
    for (int i = 0; i < 2; i++) {
        struct node *n = nodes[i];
        char *prefix = skt_unique_prefix();
        data[i] = skt_fmt("%s/data", n->dir);
        skt_generate(data[i], 40 + i, 15);
        total[i] = skt_count_records(data[i]);
        n->cfg = skt_fmt("%s/skolsync.yaml", n->dir);
        char *db = skt_fmt("%s/out.db", n->dir);
        write_pair_config(n->cfg, prefix, data[i], db, NULL);
        free(db);
        free(prefix);
    }
    node_start(&a);
    node_start(&b);
    for (int i = 0; i < 2; i++)
        cr_assert(records_reach(nodes[i], "db", (double)total[i], 90000),
                  "deployment %d: the dataset was not applied", i);
    /* more transactions on both sides while both run */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 2; i++)
            skt_append_persons(data[i], 100 * round + 1, 3);
        for (int i = 0; i < 2; i++)
            cr_assert(records_reach(nodes[i], "db", (double)total[i] + 3.0 * (round + 1), 60000),
                      "deployment %d: round %d not applied", i, round);
    }
    for (int i = 0; i < 2; i++) {
        node_stop(nodes[i]);
        cr_assert_eq(count_in_log(nodes[i]->log, "fenced"), 0,
                     "deployment %d met fencing errors (%s)", i, nodes[i]->log);
        cr_assert_eq(count_in_log(nodes[i]->log, "failing the connector"), 0, "%s", nodes[i]->log);
        free(data[i]);
    }
}

/* Commits, for group, the end offset of every partition of topic: where a
 * sink of the version before deployments left off after consuming it all. */
static void commit_ends(const char *prefix, const char *group, const char *topic)
{
    struct sk_kafka *k = skt_kafka_start(prefix, 3);
    struct sk_error err = {0};
    rd_kafka_conf_t *conf = sk_kafka_conf_new(k, "test-old-sink", NULL, &err);
    cr_assert_not_null(conf, "%s", err.msg);
    cr_assert_eq(sk_kafka_conf_set(conf, "group.id", group, &err), 0);
    cr_assert_eq(sk_kafka_conf_set(conf, "isolation.level", "read_committed", &err), 0);
    char errstr[256];
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(c, "%s", errstr);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(3);
    for (int p = 0; p < 3; p++)
        rd_kafka_topic_partition_list_add(l, topic, p);
    cr_assert_eq(sk_kafka_list_offsets(c, l, RD_KAFKA_OFFSET_END, 10000), 0);
    int64_t sum = 0;
    for (int p = 0; p < 3; p++)
        sum += l->elems[p].offset;
    cr_assert_gt(sum, 0, "nothing in %s", topic);
    cr_assert_eq(rd_kafka_commit(c, l, 0), 0, "commit for %s", group);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    sk_kafka_destroy(k);
}

static const char *scim_url(void)
{
    const char *u = getenv("SK_TEST_SCIM");
    cr_assert(u && *u, "SK_TEST_SCIM is not set: run under scripts/with-testenv.sh");
    return u;
}

static int run_once(const char *cfg, char **out)
{
    char *cmd = skt_fmt("%s run --once -c %s", skt_skolsync(), cfg);
    int rc = skt_sh(cmd, 180, out);
    free(cmd);
    return rc;
}

/*
 * A sink that consumed everything under its old group name (skolsync-<sink>)
 * is upgraded: its group is now named by the deployment. The old group's
 * offsets are taken over for the new group (the lag report, and a sink whose
 * target cannot tell its own offsets at the start). A scim-sink keeps its
 * offsets in its state since then: a state without them is filled from the
 * start (which sends nothing the server already has), and from then on it
 * goes on from its own, applying what is new once.
 */
Test(ha, a_sink_keeps_its_offsets_across_the_renaming_of_its_group, .timeout = 300)
{
    struct node n = {.dir = skt_tmpdir("ha-migrate")};
    char *prefix = skt_unique_prefix();
    char *data = skt_fmt("%s/data", n.dir);
    skt_generate(data, 44, 10);
    char *suffix = strndup(prefix + 1, 8);
    n.cfg = skt_fmt("%s/skolsync.yaml", n.dir);
    /* the data in Kafka, through a sink that is not the one upgraded */
    char *db0 = skt_fmt("%s/first.db", n.dir);
    write_pair_config(n.cfg, prefix, data, db0, NULL);
    char *out = NULL;
    cr_assert_eq(run_once(n.cfg, &out), 0, "%s", out);
    free(out);

    /* the old version's sink p-<suffix> consumed every person */
    char *sink = skt_fmt("p-%s", suffix);
    char *legacy = skt_fmt("skolsync-%s", sink);
    char *topic = skt_fmt("%spersons", prefix);
    commit_ends(prefix, legacy, topic);

    char *head = skt_config_head(prefix, "info", "20s");
    char *text = skt_fmt("%s"
                         "sinks:\n  %s:\n    type: scim-sink\n    url: %s\n"
                         "    state_dir: %s/scim\n    entities: [Person]\n",
                         head, sink, scim_url(), n.dir);
    skt_write(n.cfg, text);
    cr_assert_eq(run_once(n.cfg, &out), 0, "%s", out);
    cr_assert(strstr(out, "(its name before kafka.deployment)"), "no offsets taken over:\n%s", out);
    cr_assert(strstr(out, "none stored in the target: from the start"),
              "a state without offsets was not filled from the start:\n%s", out);
    free(out);

    /* and it goes on: one new person is applied, once */
    skt_append_persons(data, 1, 1);
    write_pair_config(n.cfg, prefix, data, db0, NULL);
    cr_assert_eq(run_once(n.cfg, &out), 0, "%s", out);
    free(out);
    skt_write(n.cfg, text);
    cr_assert_eq(run_once(n.cfg, &out), 0, "%s", out);
    cr_assert(strstr(out, ": 1 records applied"), "the new person, once:\n%s", out);
    cr_assert_null(strstr(out, "(its name before kafka.deployment)"),
                   "offsets taken over again:\n%s", out);
    free(out);
    free(text);
    free(head);
    free(topic);
    free(legacy);
    free(sink);
    free(db0);
    free(suffix);
    free(data);
    free(prefix);
}

/*
 * An operator loses a scim-sink's state directory (a new disk, a rebuilt
 * host, `rm -r` to start clean). Its relations span topics: a Duty makes its
 * Person staff only if the state holds the Person. Before, the sink went on
 * from its group's offsets with an empty state, and a new duty of a person
 * it had applied long ago made no account ("1 records applied", no user).
 * The state keeps the offsets now: a lost one is filled from the start.
 */
Test(ha, a_scim_sink_that_lost_its_state_fills_it_from_the_topics, .timeout = 300)
{
    struct node n = {.dir = skt_tmpdir("ha-scim-lost")};
    char *prefix = skt_unique_prefix();
    char *data = skt_fmt("%s/data", n.dir);
    skt_generate(data, 45, 10);
    n.cfg = skt_fmt("%s/skolsync.yaml", n.dir);
    char *head = skt_config_head(prefix, "info", "20s");
    char *text = skt_fmt("%s"
                         "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                         "sinks:\n  ids:\n    type: scim-sink\n    url: %s\n"
                         "    state_dir: %s/scim\n    users: [staff]\n"
                         "    entities: [persons, duties]\n",
                         head, data, scim_url(), n.dir);
    skt_write(n.cfg, text);
    char *out = NULL;
    cr_assert_eq(run_once(n.cfg, &out), 0, "%s", out);
    free(out);

    /* the state is lost; then a person without a duty, applied in the
     * first run, gets one */
    char *rm = skt_fmt("rm -r %s/scim", n.dir);
    cr_assert_eq(skt_sh(rm, 10, NULL), 0);
    char *add = skt_fmt(
        "cd %s && python3 -c '\n"
        "import json, uuid\n"
        "held = {json.loads(l)[\"person\"][\"id\"] for l in open(\"duties.jsonl\")}\n"
        "p = [json.loads(l) for l in open(\"persons.jsonl\")]\n"
        "p = [x for x in p if x[\"id\"] not in held and x.get(\"eduPersonPrincipalNames\")][0]\n"
        "m = {\"created\": \"2026-12-05T10:00:00+01:00\",\n"
        "     \"modified\": \"2026-12-05T10:00:00+01:00\"}\n"
        "d = {\"id\": str(uuid.uuid4()), \"meta\": m, \"person\": {\"id\": p[\"id\"]},\n"
        "     \"dutyRole\": \"L\u00e4rare\", \"startDate\": \"2020-08-01\"}\n"
        "open(\"duties.jsonl\", \"a\").write(json.dumps(d) + \"\\n\")\n"
        "print(p[\"id\"], end=\"\")'",
        data);
    char *person = NULL;
    cr_assert_eq(skt_sh(add, 30, &person), 0, "%s", person);
    cr_assert_eq(strlen(person), 36, "%s", person);
    cr_assert_eq(run_once(n.cfg, &out), 0, "%s", out);
    cr_assert(strstr(out, "none stored in the target: from the start"), "%s", out);
    free(out);

    char *url = skt_fmt("%s/Users?filter=externalId%%20eq%%20%%22%s%%22", scim_url(), person);
    char *body = NULL;
    cr_assert_eq(skt_http("GET", url, NULL, 10, &body), 200);
    cJSON *list = cJSON_Parse(body);
    cr_assert_not_null(list, "%s", body);
    cr_assert_eq(skt_jnum(list, "totalResults"), 1, "the new duty made no account: %s", body);
    cJSON_Delete(list);
    free(body);

    /* and from then on the state's own offsets: nothing again */
    cr_assert_eq(run_once(n.cfg, &out), 0, "%s", out);
    cr_assert(strstr(out, "(resuming at offsets stored in the target)"), "%s", out);
    cr_assert(strstr(out, "ids (scim-sink): 0 records applied"), "%s", out);
    free(out);
    free(url);
    free(person);
    free(add);
    free(rm);
    free(text);
    free(head);
    free(data);
    free(prefix);
    free(n.cfg);
    free(n.dir);
}

/* ---- a whole target: one node at a time ------------------------------------------ */

/* The scim-sink "ids" of a node as (state, partitions). */
static void ids_state(const struct node *n, char *state, size_t size, int *partitions)
{
    cJSON *c = connector(n, "ids");
    snprintf(state, size, "%s", c && skt_jstr(c, "state") ? skt_jstr(c, "state") : "?");
    *partitions = c ? (int)skt_jnum(c, "partitions") : -1;
    cJSON_Delete(c);
}

/* Waits until one of the running nodes (nodes[i] with pid > 0) runs "ids" with all 6
 * partitions and every other running node keeps it in standby; its index, or -1. */
static int ids_owner(struct node *nodes, int n, int timeout_ms)
{
    for (int w = 0; w <= timeout_ms; w += 250, usleep(250000)) {
        int owner = -1, standby = 0, up = 0;
        for (int i = 0; i < n; i++) {
            if (nodes[i].pid <= 0)
                continue;
            up++;
            char st[32];
            int parts;
            ids_state(&nodes[i], st, sizeof(st), &parts);
            if ((!strcmp(st, "running") || !strcmp(st, "idle")) && parts == 6)
                owner = owner < 0 ? i : -2;
            else if (!strcmp(st, "standby"))
                standby++;
        }
        if (owner >= 0 && standby == up - 1)
            return owner;
    }
    return -1;
}

/* The node GET /api/v1/cluster on n names as the owner of the whole-target sink "ids"
 * (NULL: none), and whether that node's entry lists it; strdup'ed. */
static char *ids_owner_named(const struct node *n, bool *listed)
{
    cJSON *c = skt_get_json(n->port, "/api/v1/cluster");
    char *owner = NULL;
    *listed = false;
    const cJSON *w, *whole = cJSON_GetObjectItem(c, "whole_sinks");
    cJSON_ArrayForEach(w, whole)
    {
        if (skt_jstr(w, "name") && !strcmp(skt_jstr(w, "name"), "ids") && skt_jstr(w, "owner"))
            owner = strdup(skt_jstr(w, "owner"));
    }
    const cJSON *node, *name, *nodes = cJSON_GetObjectItem(c, "nodes");
    cJSON_ArrayForEach(node, nodes)
    {
        if (!owner || !skt_jstr(node, "node") || strcmp(skt_jstr(node, "node"), owner))
            continue;
        cJSON_ArrayForEach(name, cJSON_GetObjectItem(node, "whole_sinks"))
            *listed = *listed || (cJSON_IsString(name) && !strcmp(name->valuestring, "ids"));
    }
    cJSON_Delete(c);
    return owner;
}

/* The persons of data that must have an account (users: [staff]: an eppn and a duty not
 * ended), as "id,id,..."; with add, first gives one person without a duty a new one. */
static char *staff_of(const char *data, bool add)
{
    char *cmd = skt_fmt(
        "cd %s && python3 -c '\n"
        "import datetime, json, sys, uuid\n"
        "today = datetime.date.today().isoformat()\n"
        "ps = {}\n"
        "for l in open(\"persons.jsonl\"):\n"
        "    p = json.loads(l); ps[p[\"id\"]] = p\n"
        "ds = [json.loads(l) for l in open(\"duties.jsonl\")]\n"
        "if %d:\n"
        "    held = {d[\"person\"][\"id\"] for d in ds}\n"
        "    p = [p for p in ps.values() if p[\"id\"] not in held and\n"
        "         p.get(\"eduPersonPrincipalNames\")][0]\n"
        "    m = {\"created\": \"2026-12-05T10:00:00+01:00\",\n"
        "         \"modified\": \"2026-12-05T10:00:00+01:00\"}\n"
        "    d = {\"id\": str(uuid.uuid4()), \"meta\": m, \"person\": {\"id\": p[\"id\"]},\n"
        "         \"dutyRole\": \"L\\u00e4rare\", \"startDate\": \"2020-08-01\"}\n"
        "    open(\"duties.jsonl\", \"a\").write(json.dumps(d) + \"\\n\")\n"
        "    ds.append(d)\n"
        "ids = sorted({d[\"person\"][\"id\"] for d in ds\n"
        "              if (d.get(\"endDate\") or \"9999\") >= today\n"
        "              and ps.get(d[\"person\"][\"id\"], {}).get(\"eduPersonPrincipalNames\")})\n"
        "print(\",\".join(ids), end=\"\")'",
        data, add ? 1 : 0);
    char *out = NULL;
    cr_assert_eq(skt_sh(cmd, 30, &out), 0, "%s", out);
    free(cmd);
    return out;
}

/* How many of the comma-separated persons have a user on the SCIM server. */
static int accounts_of(const char *ids)
{
    int n = 0;
    char *copy = strdup(ids), *save = NULL;
    for (char *id = strtok_r(copy, ",", &save); id; id = strtok_r(NULL, ",", &save)) {
        char *url = skt_fmt("%s/Users?filter=externalId%%20eq%%20%%22%s%%22", scim_url(), id);
        char *body = NULL;
        if (skt_http("GET", url, NULL, 10, &body) == 200) {
            cJSON *j = cJSON_Parse(body);
            n += j && skt_jnum(j, "totalResults") == 1;
            cJSON_Delete(j);
        }
        free(body);
        free(url);
    }
    free(copy);
    return n;
}

static int count_ids(const char *ids)
{
    int n = *ids != '\0';
    for (const char *c = ids; *c; c++)
        n += *c == ',';
    return n;
}

static bool accounts_reach(const char *ids, int timeout_ms)
{
    for (int w = 0; w <= timeout_ms; w += 1000, sleep(1))
        if (accounts_of(ids) == count_ids(ids))
            return true;
    return false;
}

/*
 * Two nodes of one deployment with a scim-sink: its state relates records
 * across topics (a Duty makes its Person staff), so one node runs it with
 * every partition and the other keeps it in standby. Before, the nodes split
 * the partitions like a database's: a node holding a duty but not its
 * person took that person for no staff, and staff accounts were missing or
 * removed. When the owner dies, the other node takes the sink over.
 */
Test(ha, a_scim_sink_runs_on_one_node_with_every_partition, .timeout = 300)
{
    char *dir = skt_tmpdir("ha-scim-whole");
    char *prefix = skt_unique_prefix();
    char *data = skt_fmt("%s/data", dir);
    skt_generate(data, 47, 20);
    /* ids and user names of this run only: the SCIM server keeps other runs' users */
    char *tag = skt_fmt("cd %s && sed -i -E -e 's/@/.%.8s@/g' -e "
                        "'s/\"[0-9a-f]{8}-([0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\"/"
                        "\"%.8s-\\1\"/g' *.jsonl",
                        data, prefix + 1, prefix + 1);
    cr_assert_eq(skt_sh(tag, 10, NULL), 0);
    free(tag);
    char *head = skt_config_head(prefix, "info", "20s");
    struct node nodes[2];
    for (int i = 0; i < 2; i++) {
        nodes[i] = (struct node){.dir = skt_fmt("%s/n%d", dir, i + 1)};
        cr_assert_eq(mkdir(nodes[i].dir, 0755), 0);
        nodes[i].cfg = skt_fmt("%s/skolsync.yaml", nodes[i].dir);
        char *text = skt_fmt("%snode:\n  name: n%d\n"
                             "sinks:\n  ids:\n    type: scim-sink\n    url: %s\n"
                             "    state_dir: %s/scim\n    users: [staff]\n"
                             "    entities: [persons, duties]\n",
                             head, i + 1, scim_url(), nodes[i].dir);
        skt_write(nodes[i].cfg, text);
        free(text);
    }
    char *src_cfg = skt_fmt("%s/source.yaml", dir);
    char *src = skt_fmt("%ssources:\n  files:\n    type: jsonl-source\n    path: %s\n", head, data);
    skt_write(src_cfg, src);
    free(src);
    /* the topics with the persons; the duties come once both nodes run */
    char *hide = skt_fmt("mv %s/duties.jsonl %s/duties.later", data, dir);
    cr_assert_eq(skt_sh(hide, 10, NULL), 0);
    char *out = NULL;
    cr_assert_eq(run_once(src_cfg, &out), 0, "%s", out);
    free(out);
    node_start(&nodes[0]);
    node_start(&nodes[1]);
    int owner = ids_owner(nodes, 2, 60000);
    cr_assert_geq(owner, 0, "no single owner of the scim-sink (%s, %s)", nodes[0].log,
                  nodes[1].log);
    /* the cluster view on either node names it */
    char *want = skt_fmt("n%d", owner + 1);
    for (int i = 0; i < 2; i++) {
        bool listed;
        char *named = ids_owner_named(&nodes[i], &listed);
        cr_assert(named && !strcmp(named, want) && listed,
                  "GET /api/v1/cluster on n%d: owner of ids %s, listed under it %d, want %s", i + 1,
                  named ? named : "none", listed, want);
        free(named);
    }
    free(want);
    char *back = skt_fmt("mv %s/duties.later %s/duties.jsonl", dir, data);
    cr_assert_eq(skt_sh(back, 10, NULL), 0);
    cr_assert_eq(run_once(src_cfg, &out), 0, "%s", out);
    free(out);
    char *staff = staff_of(data, false);
    cr_assert_gt(count_ids(staff), 5, "%s", staff);
    cr_assert(accounts_reach(staff, 90000), "%d of %d staff have accounts (%s, %s)",
              accounts_of(staff), count_ids(staff), nodes[0].log, nodes[1].log);

    /* the owner dies; the other node takes the sink over and applies what comes */
    cr_assert_eq(kill(nodes[owner].pid, SIGKILL), 0);
    skt_wait(nodes[owner].pid, 10000);
    nodes[owner].pid = 0;
    int next = ids_owner(nodes, 2, 90000);
    cr_assert_eq(next, 1 - owner, "the sink was not taken over (%s)", nodes[1 - owner].log);
    free(staff);
    staff = staff_of(data, true);
    cr_assert_eq(run_once(src_cfg, &out), 0, "%s", out);
    free(out);
    cr_assert(accounts_reach(staff, 90000), "after the take-over %d of %d staff have accounts (%s)",
              accounts_of(staff), count_ids(staff), nodes[1 - owner].log);
    node_stop(&nodes[1 - owner]);
    for (int i = 0; i < 2; i++) {
        free(nodes[i].log);
        free(nodes[i].cfg);
        free(nodes[i].dir);
    }
    free(staff);
    free(back);
    free(hide);
    free(src_cfg);
    free(head);
    free(data);
    free(prefix);
    free(dir);
}

/* ---- sinks by kind of target ------------------------------------------------------ */

static int partitions_of(const struct node *n, const char *sink)
{
    cJSON *c = connector(n, sink);
    int p = c ? (int)skt_jnum(c, "partitions") : -1;
    cJSON_Delete(c);
    return p;
}

static double records_of(const struct node *n, const char *sink)
{
    cJSON *c = connector(n, sink);
    double r = c ? skt_jnum(c, "records") : -1;
    cJSON_Delete(c);
    return r;
}

/* Two nodes of one deployment (node.name n1 and n2, their own admin ports and
 * SQLite files) with a postgres-sink "pg" and a sqlite-sink "db", and a
 * source run elsewhere. */
struct pair {
    char *dir, *prefix, *suffix, *schema, *data, *head, *src_cfg;
    struct node nodes[2];
    size_t total;
};

/* Waits until the pg partitions (18 topics x 3) are split over the running
 * nodes in want (both, or only n1); the number each holds in p. */
static bool pg_split(struct pair *c, bool both, int p[2], int timeout_ms)
{
    for (int w = 0; w <= timeout_ms; w += 100) {
        p[0] = partitions_of(&c->nodes[0], "pg");
        p[1] = both ? partitions_of(&c->nodes[1], "pg") : 0;
        if (p[0] > 0 && (!both || p[1] > 0) && p[0] + p[1] == 54)
            return true;
        usleep(100000);
    }
    return false;
}

/* top: lines added at the top level of each node's configuration, pg: to
 * its postgres-sink's (indented by four); either may be "". */
static void pair_start(struct pair *c, const char *tag, const char *top, const char *pg)
{
    c->dir = skt_tmpdir(tag);
    c->prefix = skt_unique_prefix();
    c->suffix = strndup(c->prefix + 1, 8);
    c->schema = skt_fmt("ha_%s", c->suffix);
    c->data = skt_fmt("%s/data", c->dir);
    skt_generate(c->data, 45, 40);
    c->total = skt_count_records(c->data);
    c->head = skt_config_head(c->prefix, "info", "20s");
    for (int i = 0; i < 2; i++) {
        c->nodes[i] = (struct node){.dir = skt_fmt("%s/n%d", c->dir, i + 1)};
        cr_assert_eq(mkdir(c->nodes[i].dir, 0755), 0);
        c->nodes[i].cfg = skt_fmt("%s/skolsync.yaml", c->nodes[i].dir);
        char *text = skt_fmt("%s%snode:\n  name: n%d\n"
                             "sinks:\n"
                             "  pg:\n    type: postgres-sink\n    conninfo: ${env:SK_TEST_PG}\n"
                             "    schema: %s\n%s"
                             "  db:\n    type: sqlite-sink\n    path: %s/local.db\n",
                             c->head, top, i + 1, c->schema, pg, c->nodes[i].dir);
        skt_write(c->nodes[i].cfg, text);
        free(text);
    }
    c->src_cfg = skt_fmt("%s/source.yaml", c->dir);
    char *src =
        skt_fmt("%ssources:\n  files:\n    type: jsonl-source\n    path: %s\n", c->head, c->data);
    skt_write(c->src_cfg, src);
    free(src);
    /* n1 first: the schema is made once */
    node_start(&c->nodes[0]);
    for (int w = 0; w < 600 && partitions_of(&c->nodes[0], "pg") <= 0; w++)
        usleep(100000);
    node_start(&c->nodes[1]);
    int p[2];
    cr_assert(pg_split(c, true, p, 60000), "pg partitions n1 %d, n2 %d", p[0], p[1]);
    /* each node-local group holds every partition */
    for (int i = 0; i < 2; i++)
        cr_assert_eq(partitions_of(&c->nodes[i], "db"), 54, "node %d's local sink", i + 1);
}

/* The source's new records into Kafka (a source run outside the two nodes). */
static void pair_source(struct pair *c)
{
    char *out = NULL;
    cr_assert_eq(run_once(c->src_cfg, &out), 0, "%s", out);
    free(out);
}

static long long pg_rows(struct pair *c)
{
    PGconn *pg = skt_pg_connect();
    long long n = skt_pg_total_rows(pg, c->schema);
    PQfinish(pg);
    return n;
}

/* The pair's source started, and PostgreSQL holding every record (120 s at most). */
static void pair_synced(struct pair *c, const char *what)
{
    pair_source(c);
    for (int w = 0; w < 1200 && pg_rows(c) < (long long)c->total; w++)
        usleep(100000);
    cr_assert_eq(pg_rows(c), (long long)c->total, "%s", what);
}

static void pair_free(struct pair *c)
{
    free(c->src_cfg);
    free(c->head);
    free(c->data);
    free(c->schema);
    free(c->suffix);
    free(c->prefix);
    free(c->dir);
}

/* `skolsync lag -c --json` on n1's configuration: its output (caller frees). */
static char *lag_json_of(struct pair *c)
{
    char *cmd = skt_fmt("%s lag -c %s --json --timeout 15s", skt_skolsync(), c->nodes[0].cfg);
    char *out = NULL;
    skt_sh(cmd, 60, &out);
    free(cmd);
    return out;
}

/*
 * `skolsync lag -c` on n1's configuration: every listed partition of the
 * shared pg group is owned by n1 or n2 (node.name read from the members'
 * client ids), both appear, and a node-local group is its node's alone.
 * False with the last JSON in *last (caller frees) until then.
 */
static bool lag_shows_split(struct pair *c, char **last)
{
    char *out = lag_json_of(c);
    cJSON *j = cJSON_Parse(out);
    *last = out;
    char *deployment = strndup(c->prefix, strlen(c->prefix) - 1);
    char *pg = skt_fmt("%s-pg", deployment), *db = skt_fmt("%s-n1-db", deployment);
    int n1 = 0, n2 = 0, other = 0, db_n1 = 0, db_other = 0;
    cJSON *g, *p, *groups = cJSON_GetObjectItem(j, "groups");
    cJSON_ArrayForEach(g, groups)
    {
        const char *group = skt_jstr(g, "group");
        cJSON_ArrayForEach(p, cJSON_GetObjectItem(g, "partitions"))
        {
            const char *owner = skt_jstr(p, "owner");
            if (strcmp(group, pg) == 0) {
                n1 += strcmp(owner, "n1") == 0;
                n2 += strcmp(owner, "n2") == 0;
                other += strcmp(owner, "n1") != 0 && strcmp(owner, "n2") != 0;
            } else if (strcmp(group, db) == 0) {
                db_n1 += strcmp(owner, "n1") == 0;
                db_other += strcmp(owner, "n1") != 0;
            }
        }
    }
    cJSON_Delete(j);
    free(pg);
    free(db);
    free(deployment);
    return n1 > 0 && n2 > 0 && other == 0 && db_n1 > 0 && db_other == 0;
}

/*
 * The postgres-sink's target is shared, so the two nodes form one group and
 * split its partitions, and PostgreSQL ends equal to the source with every
 * record applied once; the sqlite-sink is node-local, so each node has a
 * group of its own and a complete copy.
 */
Test(ha, two_nodes_split_a_shared_sink_and_each_keeps_a_local_copy, .timeout = 300)
{
    struct pair c;
    pair_start(&c, "ha-split", "", "");
    pair_source(&c);
    double a = 0, b = 0;
    for (int w = 0; w < 1200 && a + b < (double)c.total; w++) {
        a = records_of(&c.nodes[0], "pg");
        b = records_of(&c.nodes[1], "pg");
        usleep(100000);
    }
    cr_assert_eq(a + b, (double)c.total, "pg applied %.0f + %.0f, the source has %zu", a, b,
                 c.total);
    cr_assert(a > 0 && b > 0, "one node applied everything: %.0f + %.0f", a, b);
    for (int i = 0; i < 2; i++)
        cr_assert(records_reach(&c.nodes[i], "db", (double)c.total, 60000),
                  "node %d's local copy is not complete", i + 1);
    /* Who owns what, as `skolsync lag` shows it (a rebalance may still settle). */
    char *last = NULL;
    bool split = false;
    for (int tries = 0; tries < 10 && !split; tries++) {
        free(last);
        if (tries)
            sleep(1);
        split = lag_shows_split(&c, &last);
    }
    cr_assert(split, "lag does not show pg split between n1 and n2: %s", last);
    free(last);
    for (int i = 0; i < 2; i++)
        node_stop(&c.nodes[i]);
    cr_assert_eq(pg_rows(&c), (long long)c.total, "PostgreSQL rows");
    for (int i = 0; i < 2; i++) {
        char *db = skt_fmt("%s/local.db", c.nodes[i].dir);
        char why[2048] = "";
        cr_assert(skt_db_matches_dataset(db, c.data, why, sizeof(why)), "node %d: %s", i + 1, why);
        free(db);
    }
    pair_free(&c);
}

/*
 * Partitions added to an entity topic under two running nodes (their keys
 * would move): on each node the shared sink, a member of one group with a
 * share of the partitions, and the node-local sink, on the node's shared
 * consumer, fail with the topic and both counts, and /ready says 503 on both
 * nodes. Before, only the node-local sinks noticed, by stalling (~65 s),
 * and then read the new partitions as if nothing had happened.
 */
Test(ha, partitions_added_under_two_nodes_fail_their_sinks_on_both, .timeout = 300)
{
    struct pair c;
    pair_start(&c, "ha-moved", "", "");
    pair_synced(&c, "PostgreSQL after the first sync");
    char *topic = skt_fmt("%spersons", c.prefix);
    skt_topic_partitions(topic, 6);
    const char *sinks[] = {"pg", "db"};
    for (int i = 0; i < 2; i++) {
        for (size_t k = 0; k < 2; k++) {
            bool ready_503 = false;
            cr_assert(seen_failed(&c.nodes[i], sinks[k], 30000, NULL, NULL, &ready_503),
                      "node %d's %s did not fail (%s)", i + 1, sinks[k], c.nodes[i].log);
            /* /ready names the first connector that is not ready: pg */
            cr_assert(k > 0 || ready_503, "node %d's /ready did not answer 503 naming pg", i + 1);
            char *said = skt_fmt("%s: %s has 6 partition(s) now, 3 when this node first met it",
                                 sinks[k], topic);
            cr_assert(logged(&c.nodes[i], said), "node %d's log does not say why %s failed (%s)",
                      i + 1, sinks[k], c.nodes[i].log);
            free(said);
        }
    }
    for (int i = 0; i < 2; i++)
        node_stop(&c.nodes[i]);
    free(topic);
    pair_free(&c);
}

/*
 * kill -9 of one node: once its session (10 s) ends, the survivor holds
 * every partition of the shared sink and applies what comes next; the
 * target converges, resuming each moved partition from the offsets stored in
 * PostgreSQL. The time the partitions took to move is printed.
 */
Test(ha, a_killed_node_s_partitions_move_to_the_survivor, .timeout = 300)
{
    struct pair c;
    pair_start(&c, "ha-failover", "", "");
    pair_synced(&c, "PostgreSQL before the kill");

    cr_assert_eq(kill(c.nodes[1].pid, SIGKILL), 0);
    cr_assert_eq(skt_wait(c.nodes[1].pid, 10000), 128 + SIGKILL);
    c.nodes[1].pid = -1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int p[2];
    cr_assert(pg_split(&c, false, p, 60000), "n1 holds %d pg partitions", p[0]);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double moved_s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(stderr, "ha: the killed node's pg partitions moved to n1 in %.1f s\n", moved_s);

    skt_append_persons(c.data, 1, 20);
    pair_source(&c);
    for (int w = 0; w < 600 && pg_rows(&c) < (long long)c.total + 20; w++)
        usleep(100000);
    cr_assert_eq(pg_rows(&c), (long long)c.total + 20, "PostgreSQL after the failover");
    node_stop(&c.nodes[0]);
    pair_free(&c);
}

/* Whether the file holds text. */
static bool file_has(const char *path, const char *text)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, text) != NULL;
    fclose(f);
    return found;
}

/* The lag of the shared pg group on the partitions owned by node (n1, n2),
 * as `skolsync lag -c` on n1's configuration shows it; -1 if none is listed. */
static double pg_lag_owned_by(struct pair *c, const char *node)
{
    char *out = lag_json_of(c);
    cJSON *j = cJSON_Parse(out);
    char *deployment = strndup(c->prefix, strlen(c->prefix) - 1);
    char *pg = skt_fmt("%s-pg", deployment);
    double lag = -1;
    cJSON *g, *p;
    cJSON_ArrayForEach(g, cJSON_GetObjectItem(j, "groups"))
    {
        if (strcmp(skt_jstr(g, "group"), pg) != 0)
            continue;
        cJSON_ArrayForEach(p, cJSON_GetObjectItem(g, "partitions"))
        {
            if (strcmp(skt_jstr(p, "owner"), node) == 0)
                lag = (lag < 0 ? 0 : lag) + skt_jnum(p, "lag");
        }
    }
    cJSON_Delete(j);
    free(pg);
    free(deployment);
    free(out);
    return lag;
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/*
 * A sink replaces a consumer that fetches nothing while it is behind
 * (fetch_stall_timeout, docs/architecture.md §4.4), and behind means its own
 * partitions. Two nodes share the pg group; n2 is stopped (SIGSTOP, for less
 * than its 10 s session, so it stays in the group) while new records come.
 * The group is then behind on n2's partitions only: n1, caught up on its
 * own, quiet and sampled every second, must keep its consumer. n2, once it
 * runs again, finds its partitions behind and its last fetch 8 s old; it
 * fetched nothing because it did not run, and must keep its consumer too.
 */
Test(ha, a_sink_replaces_its_consumer_only_for_its_own_lag, .timeout = 300)
{
    struct pair c;
    pair_start(&c, "ha-stall", "lag_interval: 1s\n", "    fetch_stall_timeout: 2s\n");
    pair_synced(&c, "PostgreSQL before the stop");

    struct timespec t0;
    cr_assert_eq(kill(c.nodes[1].pid, SIGSTOP), 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double before = records_of(&c.nodes[0], "pg");
    skt_append_persons(c.data, 1, 30);
    pair_source(&c);
    double a = before;
    for (int w = 0; w < 50 && a <= before; w++) {
        usleep(100000);
        a = records_of(&c.nodes[0], "pg");
    }
    cr_assert_gt(a, before, "n1 applied none of the new persons");
    double lag2 = pg_lag_owned_by(&c, "n2");
    cr_assert_gt(lag2, 0, "n2's partitions are not behind (lag %.0f): no test", lag2);
    /* n1 quiet for 2 s and more, its lag sampled each second; the session is 10 s */
    double stopped = ms_since(&t0);
    cr_assert_lt(stopped, 7000, "the stop took %.0f ms before n1 was quiet", stopped);
    usleep((useconds_t)((8000 - stopped) * 1000));
    cr_assert_eq(kill(c.nodes[1].pid, SIGCONT), 0);

    for (int w = 0; w < 600 && pg_rows(&c) < (long long)c.total + 30; w++)
        usleep(100000);
    cr_assert_eq(pg_rows(&c), (long long)c.total + 30, "PostgreSQL after n2 ran again");
    sleep(4); /* two more stall periods, sampled */
    for (int i = 0; i < 2; i++)
        node_stop(&c.nodes[i]);
    for (int i = 0; i < 2; i++)
        cr_assert(!file_has(c.nodes[i].log, "replacing its Kafka consumer"),
                  "n%d replaced a consumer (%s)", i + 1, c.nodes[i].log);
    pair_free(&c);
}

/* ---- the watchdog ---------------------------------------------------------------- */

/* Collects the notifications of `ms` milliseconds into notes (emptied first). */
static void notes_for(int fd, char *notes, size_t size, int ms)
{
    notes[0] = '\0';
    for (int waited = 0; waited < ms; waited += 100) {
        skt_notify_drain(fd, notes, size);
        usleep(100000);
    }
    skt_notify_drain(fd, notes, size);
}

/*
 * A sink that hangs in its target (a table lock held, no statement
 * timeout) has lag and applies nothing, while its source, idle, completes a
 * poll cycle every 500 ms: those cycles used to count as progress, and the
 * pings went on. The stalled sink must stop them, and they come back once
 * it applies again.
 */
Test(ha, a_sink_with_lag_that_applies_nothing_stops_the_watchdog, .timeout = 240)
{
    struct node n = {.dir = skt_tmpdir("ha-watchdog")};
    char *prefix = skt_unique_prefix();
    char *suffix = strndup(prefix + 1, 8);
    char *schema = skt_fmt("wd_%s", suffix);
    char *data = skt_fmt("%s/data", n.dir);
    skt_generate(data, 46, 10);
    size_t total = skt_count_records(data);
    char *head = skt_config_head(prefix, "info", "20s");
    n.cfg = skt_fmt("%s/skolsync.yaml", n.dir);
    char *text = skt_fmt("%slag_interval: 1s\n"
                         "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                         "    poll_interval: 500ms\n"
                         "sinks:\n  pg:\n    type: postgres-sink\n    conninfo: ${env:SK_TEST_PG}\n"
                         "    schema: %s\n",
                         head, data, schema);
    skt_write(n.cfg, text);
    char *sock = skt_fmt("%s/notify.sock", n.dir);
    int fd = skt_notify_listen(sock);
    setenv("NOTIFY_SOCKET", sock, 1);
    setenv("WATCHDOG_USEC", "2000000", 1); /* a ping a second; stalled after 6 s */
    node_start(&n);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    static char notes[1 << 16];
    for (int w = 0; w < 900 && records_of(&n, "pg") < (double)total; w++)
        notes_for(fd, notes, sizeof(notes), 100);
    cr_assert_eq(records_of(&n, "pg"), (double)total, "the dataset was not applied");
    notes_for(fd, notes, sizeof(notes), 3000);
    cr_assert(strstr(notes, "WATCHDOG=1"), "no pings while healthy: %s", notes);

    /* the target hangs: new persons wait behind the lock */
    PGconn *c = skt_pg_connect();
    char *lock = skt_fmt("BEGIN; LOCK TABLE \"%s\".persons IN ACCESS EXCLUSIVE MODE", schema);
    PGresult *r = PQexec(c, lock);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(c));
    PQclear(r);
    skt_append_persons(data, 1, 5);
    bool reported = false;
    for (int w = 0; w < 300 && !reported; w++) {
        notes_for(fd, notes, sizeof(notes), 100);
        reported = logged(&n, "pg: .*nothing applied for .*no more watchdog pings");
    }
    cr_assert(reported, "the stalled sink was not reported (%s)", n.log);
    notes_for(fd, notes, sizeof(notes), 4000);
    cr_assert_null(strstr(notes, "WATCHDOG=1"), "pings went on for a stalled sink: %s", notes);
    cr_assert(running_or_idle(&n, "files"), "the source keeps cycling meanwhile");

    /* the lock goes: the sink applies, the pings come back */
    r = PQexec(c, "ROLLBACK");
    PQclear(r);
    PQfinish(c);
    for (int w = 0; w < 300 && records_of(&n, "pg") < (double)total + 5; w++)
        notes_for(fd, notes, sizeof(notes), 100);
    cr_assert_eq(records_of(&n, "pg"), (double)total + 5);
    notes_for(fd, notes, sizeof(notes), 4000);
    cr_assert(strstr(notes, "WATCHDOG=1"), "no pings after the sink recovered: %s", notes);
    node_stop(&n);
    free(lock);
    free(sock);
    free(text);
    free(head);
    free(data);
    free(schema);
    free(suffix);
    free(prefix);
}
