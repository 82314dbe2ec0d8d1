/*
 * test_ha.c: several daemons and Kafka's group machinery, on the real broker:
 * a fenced sink or source fails visibly and recovers by itself (no silent
 * death).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>

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

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* Waits until the connector has applied (or stored) at least want records. */
static bool records_reach(const struct node *n, const char *name, double want, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 250) {
        cJSON *c = connector(n, name);
        double have = c ? num(c, "records") : -1;
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

/* Appends n persons with fresh ids to dir/persons.jsonl (seq numbers them). */
static void append_persons(const char *dir, int first, int n)
{
    char *path = skt_fmt("%s/persons.jsonl", dir);
    FILE *f = fopen(path, "a");
    cr_assert_not_null(f);
    for (int i = first; i < first + n; i++)
        fprintf(f,
                "{\"id\":\"00000000-0000-4000-8000-%012d\",\"givenName\":\"Åsa\","
                "\"familyName\":\"Nyström %d\",\"meta\":{\"created\":\"2026-02-01T10:00:00+01:00\","
                "\"modified\":\"2026-02-01T10:00:00+01:00\"}}\n",
                i, i);
    fclose(f);
    free(path);
}

/*
 * A consumer in the sink's group under the sink's own static member id: the
 * broker hands it the member, and the sink is fenced (docs/architecture.md
 * §8.7).
 */
static rd_kafka_t *intruder_new(const char *group, const char *instance, const char *topic)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    cr_assert_eq(
        rd_kafka_conf_set(conf, "bootstrap.servers", skt_brokers(), errstr, sizeof(errstr)),
        RD_KAFKA_CONF_OK);
    cr_assert_eq(rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)),
                 RD_KAFKA_CONF_OK);
    cr_assert_eq(rd_kafka_conf_set(conf, "group.instance.id", instance, errstr, sizeof(errstr)),
                 RD_KAFKA_CONF_OK);
    cr_assert_eq(rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr)),
                 RD_KAFKA_CONF_OK);
    cr_assert_eq(rd_kafka_conf_set(conf, "partition.assignment.strategy", "roundrobin", errstr,
                                   sizeof(errstr)),
                 RD_KAFKA_CONF_OK);
    cr_assert_eq(rd_kafka_conf_set(conf, "session.timeout.ms", "10000", errstr, sizeof(errstr)),
                 RD_KAFKA_CONF_OK);
    cr_assert_eq(rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr)),
                 RD_KAFKA_CONF_OK);
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

static void one_start(struct one *o, const char *tag)
{
    o->n = (struct node){.dir = skt_tmpdir(tag)};
    o->data = skt_fmt("%s/data", o->n.dir);
    o->prefix = skt_unique_prefix();
    skt_generate(o->data, 31, 10);
    o->total = skt_count_records(o->data);
    char *head = skt_config_head(o->prefix, "info", "20s");
    o->n.cfg = skt_fmt("%s/skolsync.yaml", o->n.dir);
    char *text = skt_fmt("%s"
                         "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                         "    poll_interval: 1s\n"
                         "sinks:\n  db:\n    type: sqlite-sink\n    path: %s/out.db\n",
                         head, o->data, o->n.dir);
    skt_write(o->n.cfg, text);
    free(text);
    free(head);
    node_start(&o->n);
    cr_assert(records_reach(&o->n, "db", (double)o->total, 90000), "the dataset was not applied");
}

static void one_stop(struct one *o)
{
    node_stop(&o->n);
    free(o->data);
    free(o->prefix);
}

/* True if the daemon's log has a line matching the grep pattern. */
static bool logged(const struct node *n, const char *pattern)
{
    char *cmd = skt_fmt("grep -c '%s' %s", pattern, n->log);
    char *out = NULL;
    skt_sh(cmd, 5, &out);
    bool found = atoi(out) > 0;
    free(out);
    free(cmd);
    return found;
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
        bool failed = c && strcmp(str(c, "state"), "failed") == 0 && str(c, "last_error")[0];
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
    bool ok =
        c && (strcmp(str(c, "state"), "idle") == 0 || strcmp(str(c, "state"), "running") == 0);
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
    one_start(&o, "ha-fenced");
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
    append_persons(o.data, 1, 5);
    cr_assert(records_reach(&o.n, "db", (double)o.total + 5, 120000),
              "the sink did not recover and apply new records");
    cr_assert(running_or_idle(&o.n, "db"), "the sink is neither running nor idle");
    cJSON *c = connector(&o.n, "db");
    cr_assert_geq(num(c, "restarts"), 1);
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
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    cr_assert_eq(
        rd_kafka_conf_set(conf, "bootstrap.servers", skt_brokers(), errstr, sizeof(errstr)),
        RD_KAFKA_CONF_OK);
    cr_assert_eq(rd_kafka_conf_set(conf, "transactional.id", tid, errstr, sizeof(errstr)),
                 RD_KAFKA_CONF_OK);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(p, "%s", errstr);
    rd_kafka_error_t *e = rd_kafka_init_transactions(p, 30000);
    cr_assert_null(e, "init_transactions: %s", e ? rd_kafka_error_string(e) : "");

    append_persons(o.data, 1, 5);
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
