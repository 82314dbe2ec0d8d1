/*
 * test_shared_consumer.c: the node-local sinks on one shared Kafka consumer
 * (daemon/sink_hub.c, docs/architecture.md §6.4.1), on the test broker:
 * sinks at different positions each apply exactly their records (one
 * restarted in the middle, new ones replaying from the start, one paused),
 * the daemon runs one client for all of them, a postgres-sink beside them
 * keeps its own, and a failed shared consumer fails every sink on it.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>

#include "daemon.h"
#include "kafka.h"
#include "log.h"
#include "sk_test.h"
#include "util.h"

struct bed {
    char *dir, *data, *prefix, *cfg, *log;
};

static struct bed bed_new(const char *tag, int students)
{
    struct bed b;
    b.dir = skt_tmpdir(tag);
    b.data = skt_fmt("%s/data", b.dir);
    b.prefix = skt_unique_prefix();
    b.cfg = skt_fmt("%s/skolsync.yaml", b.dir);
    b.log = skt_fmt("%s/daemon.log", b.dir);
    skt_generate(b.data, 7, students);
    return b;
}

/* The jsonl-source "files" and a sqlite-sink per name in sinks (each
 * <dir>/<name>.db), plus `more` (further sinks, indented by two). */
#define TOKEN "hub-test-token"

static void bed_config(const struct bed *b, const char *const *sinks, const char *more)
{
    char *plain = skt_config_head(b->prefix, "info", "20s");
    /* the default (docs/architecture.md §6.4.1), written out so that these
     * tests keep testing it whatever the default becomes */
    char *head = skt_fmt("kafka:\n  shared_consumer: true\n%s", plain + strlen("kafka:\n"));
    cr_assert(strncmp(plain, "kafka:\n", 7) == 0, "%s", plain);
    free(plain);
    char *listen = strstr(head, "  listen: 127.0.0.1:0\n");
    cr_assert_not_null(listen);
    listen += strlen("  listen: 127.0.0.1:0\n");
    char *text = skt_fmt("%.*s  token: " TOKEN
                         "\n%ssources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                         "    poll_interval: 1s\nsinks:\n%s",
                         (int)(listen - head), head, listen, b->data, more);
    for (size_t i = 0; sinks[i]; i++) {
        char *next = skt_fmt("%s  %s:\n    type: sqlite-sink\n    path: %s/%s.db\n"
                             "    batch_size: 50\n",
                             text, sinks[i], b->dir, sinks[i]);
        free(text);
        text = next;
    }
    skt_write(b->cfg, text);
    free(text);
    free(head);
}

static char *db_of(const struct bed *b, const char *sink)
{
    return skt_fmt("%s/%s.db", b->dir, sink);
}

static bool matches(const struct bed *b, const char *sink, char *why, size_t size)
{
    char *db = db_of(b, sink);
    bool ok = access(db, F_OK) == 0 && skt_db_matches_dataset(db, b->data, why, size);
    free(db);
    return ok;
}

/* Waits until every sink's database equals the dataset (fails after timeout_s). */
static void wait_matching(const struct bed *b, const char *const *sinks, int timeout_s)
{
    char why[1024] = "";
    for (size_t i = 0; sinks[i]; i++) {
        int64_t until = sk_mono_ms() + timeout_s * 1000LL;
        while (!matches(b, sinks[i], why, sizeof(why)) && sk_mono_ms() < until)
            usleep(300000);
        cr_assert(matches(b, sinks[i], why, sizeof(why)), "sink %s: %s (log %s)", sinks[i], why,
                  b->log);
    }
}

static cJSON *connector(int port, const char *name)
{
    char *path = skt_fmt("/api/v1/connectors/%s", name);
    cJSON *c = skt_get_json(port, path);
    free(path);
    cr_assert_not_null(c, "GET /api/v1/connectors/%s", name);
    return c;
}

static long long records_of(int port, const char *name)
{
    cJSON *c = connector(port, name);
    long long n = (long long)skt_jnum(c, "records");
    cJSON_Delete(c);
    return n;
}

static void post(int port, const char *name, const char *action)
{
    char *cmd = skt_fmt("curl -sf -o /dev/null -X POST -H 'Authorization: Bearer " TOKEN "' "
                        "http://127.0.0.1:%d/api/v1/connectors/%s/%s",
                        port, name, action);
    cr_assert_eq(skt_sh(cmd, 30, NULL), 0, "%s", cmd);
    free(cmd);
}

/* "sink <name> (sqlite-sink): N records applied" of a --once summary. */
static long long applied_in_summary(const char *out, const char *sink)
{
    char *what = skt_fmt("sink %s (sqlite-sink): ", sink);
    const char *at = strstr(out, what);
    cr_assert_not_null(at, "no %s in:\n%s", what, out);
    long long n = atoll(at + strlen(what));
    free(what);
    return n;
}

/*
 * Sink a applied the topics in a run of its own; then a daemon runs a with
 * three new sinks (b, c, d) on one shared consumer: they replay the topics
 * from the start while a waits at their end. c is paused, more persons
 * come, a is restarted in the middle of them, c resumed. Each target then
 * holds the dataset, and every sink applied each record once: a's two runs
 * together as many as each new sink (a record lost or handed twice to any
 * of them breaks the equality, whatever the targets' idempotence hides).
 */
Test(shared_consumer, sinks_at_different_positions_apply_exactly_their_records, .timeout = 400)
{
    struct bed b = bed_new("hub-positions", 12);
    const char *first[] = {"a", NULL};
    bed_config(&b, first, "");
    char *cmd = skt_fmt("%s run --once -c %s", skt_skolsync(), b.cfg);
    char *out = NULL;
    int rc = skt_sh(cmd, 200, &out);
    cr_assert_eq(rc, 0, "first run (%d):\n%s", rc, out);
    long long a_once = applied_in_summary(out, "a");
    cr_assert_gt(a_once, 0);
    wait_matching(&b, first, 1);
    free(out);

    const char *all[] = {"a", "b", "c", "d", NULL};
    bed_config(&b, all, "");
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", b.cfg, NULL};
    pid_t pid = skt_spawn(argv, b.log);
    int port = skt_logged_port(b.log, 30000);
    cr_assert_gt(port, 0, "no admin port (log %s)", b.log);
    wait_matching(&b, all, 120);

    /* One client for the four sinks: a librdkafka client has one rdk:main.
     * Besides the shared consumer: the source's producer, the sources
     * group's consumer and, now and then, the lag monitor's reader. Four
     * consumers of their own would make it 7 or more. */
    cr_assert_eq(skt_threads_named(pid, "sink-hub"), 1);
    int clients = skt_threads_named(pid, "rdk:main");
    cr_assert_leq(clients, 4, "%d librdkafka clients for 1 source and 4 node-local sinks", clients);
    int joined = 0; /* the log reaches its file in blocks */
    for (int i = 0; i < 50 && (joined = skt_lines_with(b.log, "shared consumer of the node")) < 4;
         i++)
        usleep(100000);
    cr_assert_eq(joined, 4, "log %s", b.log);

    post(port, "c", "pause");
    sleep(1);
    char *c_db = db_of(&b, "c");
    char *c_before = skt_sqlite_value(c_db, "SELECT count(*) FROM persons", NULL);
    long long c_records = records_of(port, "c");
    skt_append_persons(b.data, 5000, 400);
    /* a restarts while the new persons arrive (applied 50 a batch) */
    for (int i = 0; i < 200; i++) {
        char *db = db_of(&b, "a");
        char *n = skt_sqlite_value(db, "SELECT count(*) FROM persons", NULL);
        bool moving = n && c_before && atoll(n) > atoll(c_before);
        free(n);
        free(db);
        if (moving)
            break;
        usleep(20000);
    }
    post(port, "a", "restart");
    const char *going[] = {"a", "b", "d", NULL};
    wait_matching(&b, going, 120);
    char *c_now = skt_sqlite_value(c_db, "SELECT count(*) FROM persons", NULL);
    cr_assert_str_eq(c_now, c_before, "the paused sink applied records");
    cr_assert_eq(records_of(port, "c"), c_records);
    post(port, "c", "resume");
    wait_matching(&b, all, 120);

    long long a = a_once + records_of(port, "a"), bn = records_of(port, "b");
    long long c = records_of(port, "c"), d = records_of(port, "d");
    cr_log_info("applied: a %lld (%lld + %lld), b %lld, c %lld, d %lld", a, a_once, a - a_once, bn,
                c, d);
    cr_assert_eq(bn, d, "b applied %lld, d %lld", bn, d);
    cr_assert_eq(c, bn, "c applied %lld, b %lld", c, bn);
    cr_assert_eq(a, bn, "a applied %lld in its two runs, b %lld", a, bn);
    cr_assert_eq(skt_stop(&pid, 30000), 0, "log %s", b.log);
    free(c_now);
    free(c_before);
    free(c_db);
    free(cmd);
}

/* A postgres-sink keeps its own consumer and group beside the shared one;
 * --once ends with both complete. */
Test(shared_consumer, a_postgres_sink_beside_node_local_ones_keeps_its_own_consumer, .timeout = 300)
{
    struct bed b = bed_new("hub-pg", 10);
    char *schema = skt_fmt("hub_%s", b.prefix + 1);
    schema[strcspn(schema, ".")] = '\0';
    char *pg = skt_fmt("  pg:\n    type: postgres-sink\n    conninfo: ${env:SK_TEST_PG}\n"
                       "    schema: %s\n",
                       schema);
    const char *sinks[] = {"db", "db2", NULL};
    bed_config(&b, sinks, pg);
    char *cmd = skt_fmt("%s run --once -c %s", skt_skolsync(), b.cfg);
    char *out = NULL;
    int rc = skt_sh(cmd, 200, &out);
    cr_assert_eq(rc, 0, "run (%d):\n%s", rc, out);
    wait_matching(&b, sinks, 1);
    struct pg_conn *c = skt_pg_connect();
    cr_assert_eq(skt_pg_total_rows(c, schema), (long long)skt_count_records(b.data));
    cr_assert(strstr(out, "pg: consumer group"), "the postgres-sink's own group:\n%s", out);
    cr_assert(strstr(out, "db: shared consumer of the node") &&
                  strstr(out, "db2: shared consumer of the node"),
              "%s", out);
    free(out);
    free(cmd);
    free(pg);
    skt_pg_drop_schema(schema);
    free(schema);
}

/* ---- a failed shared consumer -------------------------------------------------- */

/* Every consumer the daemon makes (here only the shared one) fails at once. */
static void fatal_at_once(rd_kafka_t *rk, void *ctx)
{
    (void)ctx;
    rd_kafka_test_fatal_error(rk, RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID, "injected by the test");
}

static void on_kafka(struct sk_kafka *k, void *ctx)
{
    sk_kafka_set_consumer_hook(k, fatal_at_once, ctx);
}

/* A fatal error of the shared client fails every sink on it, with the
 * reason: a --once run fails instead of hanging or reporting success. */
Test(shared_consumer, a_failed_shared_consumer_fails_every_sink_on_it, .timeout = 200)
{
    struct bed b = bed_new("hub-fatal", 10);
    const char *sinks[] = {"x", "y", NULL};
    bed_config(&b, sinks, "");
    cr_assert_not_null(freopen(b.log, "w", stderr)); /* the daemon's log, read below */
    struct sk_config_errors errs = {0};
    struct sk_daemon_config *c = sk_daemon_config_load(b.cfg, &errs);
    cr_assert_not_null(c, "%s", errs.n ? errs.v[0].text : "");
    sk_log_setup(SK_LOG_INFO, false);
    FILE *sum = fopen("/dev/null", "w");
    struct sk_run_options opt = {.once = true, .summary = sum, .kafka_started = on_kafka};
    int rc = sk_daemon_run(c, &opt);
    fclose(sum);
    fflush(stderr);
    cr_assert_eq(rc, 1, "the run ended with %d (log %s)", rc, b.log);
    const char *const says[] = {"x: shared consumer: fatal error",
                                "y: shared consumer: fatal error", NULL};
    for (size_t i = 0; says[i]; i++)
        cr_assert_gt(skt_lines_with(b.log, says[i]), 0, "no \"%s\" in %s", says[i], b.log);
    sk_daemon_config_free(c);
}
