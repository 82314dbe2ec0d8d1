/*
 * test_ha.c: several daemons and Kafka's group machinery, on the real broker:
 * a fenced sink fails visibly and recovers by itself (no silent death).
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

Test(ha, fenced_sink_fails_visibly_and_recovers_by_itself, .timeout = 240)
{
    struct node n = {.dir = skt_tmpdir("ha-fenced")};
    char *data = skt_fmt("%s/data", n.dir);
    char *prefix = skt_unique_prefix();
    skt_generate(data, 31, 10);
    size_t total = skt_count_records(data);
    char *head = skt_config_head(prefix, "info", "20s");
    n.cfg = skt_fmt("%s/skolsync.yaml", n.dir);
    char *text = skt_fmt("%s"
                         "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                         "    poll_interval: 1s\n"
                         "sinks:\n  db:\n    type: sqlite-sink\n    path: %s/out.db\n",
                         head, data, n.dir);
    skt_write(n.cfg, text);
    node_start(&n);
    cr_assert(records_reach(&n, "db", (double)total, 90000), "the dataset was not applied");

    char *group = logged_word(n.log, "consumer group ", 5000);
    char *instance = logged_word(n.log, "static member ", 5000);
    cr_assert(group && instance, "the sink logged no group and member id");
    char *topic = skt_fmt("%spersons", prefix);

    /* The intruder takes the member id; the sink must fail with the reason,
     * and /ready must say so. The sink restarting fences the intruder in
     * turn: a fenced intruder comes back, until the failure was seen. */
    rd_kafka_t *intruder = intruder_new(group, instance, topic);
    bool seen_failed = false, seen_ready_503 = false;
    char last_error[600] = "";
    for (int waited = 0; waited < 60000 && !(seen_failed && seen_ready_503); waited += 100) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(intruder, 50);
        if (m)
            rd_kafka_message_destroy(m);
        if (rd_kafka_fatal_error(intruder, NULL, 0)) {
            intruder_free(intruder);
            intruder = intruder_new(group, instance, topic);
        }
        cJSON *c = connector(&n, "db");
        if (c && strcmp(str(c, "state"), "failed") == 0) {
            seen_failed = true;
            snprintf(last_error, sizeof(last_error), "%s", str(c, "last_error"));
            long st;
            char *body = get(&n, "/ready", &st);
            if (st == 503 && strstr(body, "db is failed"))
                seen_ready_503 = true;
            free(body);
        }
        cJSON_Delete(c);
    }
    intruder_free(intruder);
    cr_assert(seen_failed, "the fenced sink never showed state failed");
    cr_assert(seen_ready_503, "/ready did not answer 503 naming the failed sink");
    cr_assert(last_error[0], "a failed sink without last_error");
    char *cmd = skt_fmt("grep -c 'db: .*FENCED_INSTANCE_ID.*failing the connector' %s", n.log);
    char *out = NULL;
    skt_sh(cmd, 5, &out);
    cr_assert_gt(atoi(out), 0, "the log does not give the reason (%s)", n.log);
    free(out);
    free(cmd);

    /* The intruder is gone: the supervisor's restart brings the sink back, and it applies. */
    append_persons(data, 1, 5);
    cr_assert(records_reach(&n, "db", (double)total + 5, 120000),
              "the sink did not recover and apply new records");
    cJSON *c = connector(&n, "db");
    cr_assert(c &&
                  (strcmp(str(c, "state"), "idle") == 0 || strcmp(str(c, "state"), "running") == 0),
              "state after recovery: %s", c ? str(c, "state") : "?");
    cr_assert_geq(num(c, "restarts"), 1);
    cJSON_Delete(c);
    node_stop(&n);
    free(topic);
    free(group);
    free(instance);
    free(text);
    free(head);
    free(prefix);
    free(data);
}
