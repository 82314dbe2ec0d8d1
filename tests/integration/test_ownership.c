/*
 * test_ownership.c: one owner per source, chosen by Kafka (README "High
 * availability and scaling", docs/architecture.md §5.10), on the real
 * broker. Two daemons started from one configuration (the files differ in
 * node.name only, which cannot come from the environment): the source runs on
 * exactly one of them, the other keeps it in standby, and the input is read
 * once over both; GET /api/v1/cluster names the owner on both; kill -9 of
 * the owner moves the source to the survivor, which resumes from the
 * committed cursor. PostgreSQL ends equal to the input, nothing lost and
 * nothing twice. The failover time is printed. Three nodes and three
 * sources: each source on exactly one node. The embedded broker: no
 * ownership, every source runs locally. GET /api/v1/cluster asked without
 * pause: one kept client, no thread more.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#include "names.h"
#include "sk_test.h"

struct node {
    char *name, *dir, *log;
    pid_t pid;
    int port;
};

/* Starts node n: the configuration `common` with its node.name (none if
 * n->name is NULL: the embedded broker refuses one). */
static void node_start(struct node *n, const char *common)
{
    n->log = skt_fmt("%s/daemon-%d.log", n->dir, (int)getpid());
    char *cfg = skt_fmt("%s/skolsync.yaml", n->dir);
    char *text = n->name ? skt_fmt("%snode:\n  name: %s\n", common, n->name) : strdup(common);
    skt_write(cfg, text);
    free(text);
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", cfg, NULL};
    n->pid = skt_spawn(argv, n->log);
    n->port = skt_logged_port(n->log, 30000);
    free(cfg);
    cr_assert_gt(n->port, 0, "the daemon logged no HTTP port (%s)", n->log);
}

/* Source src's state and records counter on node n ("" and -1 if unknown). */
static void source_state(const struct node *n, const char *src, char *state, size_t size,
                         double *records)
{
    char *path = skt_fmt("/api/v1/connectors/%s", src);
    cJSON *c = skt_get_json(n->port, path);
    free(path);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(c, "state");
    const cJSON *rec = cJSON_GetObjectItemCaseSensitive(c, "records");
    snprintf(state, size, "%s", cJSON_IsString(st) ? st->valuestring : "");
    *records = cJSON_IsNumber(rec) ? rec->valuedouble : -1;
    cJSON_Delete(c);
}

static void source_of(const struct node *n, char *state, size_t size, double *records)
{
    source_state(n, "files", state, size, records);
}

static bool running(const char *state)
{
    return strcmp(state, "running") == 0 || strcmp(state, "idle") == 0;
}

/* Waits until every node was assigned its part of the sources group once:
 * then the last one to join has its assignment, and the group's generation
 * holds every node (a node that has not joined yet also shows its sources in
 * standby). */
static bool all_assigned(const struct node *nodes, int n, int timeout_ms)
{
    for (int w = 0; w <= timeout_ms; w += 200) {
        int done = 0;
        for (int i = 0; i < n; i++) {
            char *cmd = skt_fmt("grep -c 'ownership: group .* assigned' %s", nodes[i].log);
            char *out = NULL;
            skt_sh(cmd, 5, &out);
            done += out && atoi(out) > 0;
            free(out);
            free(cmd);
        }
        if (done == n)
            return true;
        usleep(200000);
    }
    return false;
}

/* Waits until exactly one of the n nodes runs source src and the others
 * have it in standby: the owner's index, or -1. */
static int owner_among(struct node *nodes, int n, const char *src, int timeout_ms)
{
    for (int w = 0; w <= timeout_ms; w += 200) {
        int owner = -1, standby = 0;
        for (int i = 0; i < n; i++) {
            char st[32];
            double rec;
            source_state(&nodes[i], src, st, sizeof(st), &rec);
            if (running(st))
                owner = owner < 0 ? i : n; /* n: more than one */
            standby += strcmp(st, "standby") == 0;
        }
        if (owner >= 0 && owner < n && standby == n - 1)
            return owner;
        usleep(200000);
    }
    return -1;
}

static long long pg_rows(const char *schema)
{
    PGconn *pg = skt_pg_connect();
    long long n = skt_pg_total_rows(pg, schema);
    PQfinish(pg);
    return n;
}

static bool pg_reaches(const char *schema, long long want, int timeout_ms)
{
    for (int w = 0; w <= timeout_ms; w += 200) {
        if (pg_rows(schema) >= want)
            return true;
        usleep(200000);
    }
    return false;
}

/* The owner GET /api/v1/cluster on node n names for source src, and how
 * many of the nodes n1, n2, n3 it lists. Caller frees. */
static char *owner_named(const struct node *n, const char *src, int *nodes_listed)
{
    cJSON *c = skt_get_json(n->port, "/api/v1/cluster");
    char *owner = NULL;
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(c, "sources"))
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(s, "name");
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(s, "owner");
        if (cJSON_IsString(name) && strcmp(name->valuestring, src) == 0 && cJSON_IsString(o))
            owner = strdup(o->valuestring);
    }
    int seen = 0;
    const cJSON *nd;
    cJSON_ArrayForEach(nd, cJSON_GetObjectItemCaseSensitive(c, "nodes"))
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(nd, "node");
        seen += cJSON_IsString(name) && strlen(name->valuestring) == 2 &&
                name->valuestring[0] == 'n' && strchr("123", name->valuestring[1]);
    }
    *nodes_listed = seen;
    cJSON_Delete(c);
    return owner;
}

/* How many partitions GET /api/v1/cluster on node n says its own
 * node-local sink reads on the shared consumer: -1 if it lists none. */
static int shared_sink_partitions(const struct node *n)
{
    cJSON *c = skt_get_json(n->port, "/api/v1/cluster");
    int parts = -1;
    const cJSON *nd, *s;
    cJSON_ArrayForEach(nd, cJSON_GetObjectItemCaseSensitive(c, "nodes"))
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(nd, "node");
        if (!cJSON_IsString(name) || strcmp(name->valuestring, n->name) != 0)
            continue;
        cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(nd, "sinks"))
        {
            const cJSON *shared = cJSON_GetObjectItemCaseSensitive(s, "shared_consumer");
            const cJSON *p = cJSON_GetObjectItemCaseSensitive(s, "partitions");
            const cJSON *g = cJSON_GetObjectItemCaseSensitive(s, "group");
            if (cJSON_IsTrue(shared) && cJSON_IsNumber(p) && cJSON_IsString(g) &&
                strstr(g->valuestring, "-lite"))
                parts = p->valueint;
        }
    }
    cJSON_Delete(c);
    return parts;
}

Test(ownership, one_node_runs_the_source_and_a_survivor_takes_it_over, .timeout = 300)
{
    char *dir = skt_tmpdir("own");
    char *prefix = skt_unique_prefix();
    char *schema = skt_fmt("own_%.8s", prefix + 1);
    char *data = skt_fmt("%s/data", dir);
    skt_generate(data, 47, 30);
    long long total = (long long)skt_count_records(data);
    char *head = skt_config_head(prefix, "info", "20s");
    char *text = skt_fmt("%s"
                         "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                         "    poll_interval: 1s\n"
                         "sinks:\n"
                         "  pg:\n    type: postgres-sink\n    conninfo: ${env:SK_TEST_PG}\n"
                         "    schema: %s\n",
                         head, data, schema);
    struct node nodes[2];
    for (int i = 0; i < 2; i++) {
        nodes[i] =
            (struct node){.name = skt_fmt("n%d", i + 1), .dir = skt_fmt("%s/n%d", dir, i + 1)};
        cr_assert_eq(mkdir(nodes[i].dir, 0755), 0);
    }
    /* and a node-local sink on each, on its shared consumer */
    for (int i = 0; i < 2; i++) {
        char *mine =
            skt_fmt("%s  lite:\n    type: sqlite-sink\n    path: %s/lite.db\n", text, nodes[i].dir);
        node_start(&nodes[i], mine);
        free(mine);
    }

    /* One owner, the other in standby; the input is read once. */
    cr_assert(all_assigned(nodes, 2, 60000), "a node never joined the sources group");
    int own = owner_among(nodes, 2, "files", 60000);
    cr_assert_geq(own, 0, "the source does not run on exactly one node (%s, %s)", nodes[0].log,
                  nodes[1].log);
    struct node *owner = &nodes[own], *other = &nodes[1 - own];
    cr_assert(pg_reaches(schema, total, 90000), "PostgreSQL has %lld of %lld rows", pg_rows(schema),
              total);
    char st[32];
    double rec_owner, rec_other;
    source_of(owner, st, sizeof(st), &rec_owner);
    source_of(other, st, sizeof(st), &rec_other);
    /* Every record read once over both nodes: the first node may have run
     * the source for a moment before the second joined, and its successor
     * resumed from the cursor that run committed. */
    cr_assert_eq(rec_owner + rec_other, (double)total,
                 "the nodes stored %.0f + %.0f records of %lld: the input was read twice",
                 rec_owner, rec_other, total);
    cr_assert_str_eq(st, "standby");
    for (int i = 0; i < 2; i++) {
        int listed = 0;
        char *named = NULL;
        for (int w = 0; w < 100 && !(named && listed == 2); w++) {
            free(named);
            named = owner_named(&nodes[i], "files", &listed);
            if (!(named && listed == 2))
                usleep(200000);
        }
        bool both = listed == 2;
        cr_assert(named && both, "GET /api/v1/cluster on %s: no owner or not both nodes",
                  nodes[i].name);
        cr_assert_str_eq(named, owner->name, "GET /api/v1/cluster on %s", nodes[i].name);
        free(named);
        /* its node-local sink has no group member: listed by the node itself */
        int parts = shared_sink_partitions(&nodes[i]);
        cr_assert_gt(parts, 0,
                     "GET /api/v1/cluster on %s lists no partitions of its "
                     "node-local sink (%d)",
                     nodes[i].name, parts);
    }

    /* kill -9 of the owner: the survivor takes the source over. */
    cr_assert_eq(kill(owner->pid, SIGKILL), 0);
    cr_assert_eq(skt_wait(owner->pid, 10000), 128 + SIGKILL);
    owner->pid = -1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double rec = -1;
    for (int w = 0; w < 600 && !running(st); w++) {
        usleep(100000);
        source_of(other, st, sizeof(st), &rec);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double failover_s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(stderr, "ownership: the killed owner's source runs on %s after %.1f s\n", other->name,
            failover_s);
    cr_assert(running(st), "the survivor did not take the source over (%s)", other->log);
    cr_assert_lt(failover_s, 25.0, "session timeout (10 s) plus a poll, with margin");

    /* It resumes from the committed cursor: only the new records are read. */
    skt_append_persons(data, 1, 20);
    cr_assert(pg_reaches(schema, total + 20, 60000), "PostgreSQL after the failover: %lld rows",
              pg_rows(schema));
    for (int w = 0; w < 50 && rec < 20; w++) {
        usleep(200000);
        source_of(other, st, sizeof(st), &rec);
    }
    cr_assert_eq(rec, 20, "the survivor read %.0f records, not the 20 new ones", rec);
    sleep(2);
    cr_assert_eq(pg_rows(schema), total + 20, "PostgreSQL rows");
    cr_assert_eq(skt_stop(&other->pid, 30000), 0, "SIGTERM should stop the survivor");
    for (int i = 0; i < 2; i++) {
        free(nodes[i].name);
        free(nodes[i].dir);
        free(nodes[i].log);
    }
    free(text);
    free(head);
    free(data);
    free(schema);
    free(prefix);
    free(dir);
}

/* The embedded broker is one node by nature: no sources group, the source
 * runs at once, and GET /api/v1/cluster shows this node (named after the
 * host: node.name is refused there) owning it. */
Test(ownership, the_embedded_broker_runs_every_source_locally, .timeout = 120)
{
    char *dir = skt_tmpdir("own-embedded");
    char *data = skt_fmt("%s/data", dir);
    skt_generate(data, 48, 10);
    char *common = skt_fmt("kafka:\n  brokers: embedded\n  embedded_dir: off\n"
                           "admin:\n  listen: 127.0.0.1:0\n"
                           "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                           "sinks:\n  db:\n    type: sqlite-sink\n    path: %s/out.db\n",
                           data, dir);
    struct node n = {.dir = dir};
    node_start(&n, common);
    n.name = sk_name_default_node();
    char st[32] = "";
    double rec = -1;
    for (int w = 0; w < 300 && !running(st); w++) {
        usleep(100000);
        source_of(&n, st, sizeof(st), &rec);
    }
    cr_assert(running(st), "the source is %s on the embedded broker (%s)", st, n.log);
    cJSON *c = skt_get_json(n.port, "/api/v1/cluster");
    cr_assert_not_null(c, "GET /api/v1/cluster");
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(c, "ownership")));
    cr_assert_str_eq(cJSON_GetObjectItemCaseSensitive(c, "node")->valuestring, n.name);
    int listed = 0;
    char *owner = owner_named(&n, "files", &listed);
    cr_assert_str_eq(owner ? owner : "", n.name);
    const cJSON *nodes = cJSON_GetObjectItemCaseSensitive(c, "nodes");
    cr_assert_eq(cJSON_GetArraySize(nodes), 1);
    const cJSON *srcs = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(nodes, 0), "sources");
    cr_assert_eq(cJSON_GetArraySize(srcs), 1);
    cr_assert_str_eq(cJSON_GetArrayItem(srcs, 0)->valuestring, "files");
    cJSON_Delete(c);
    free(owner);
    cr_assert_eq(skt_stop(&n.pid, 30000), 0, "SIGTERM should stop the daemon");
    free(n.name);
    free(n.log);
    free(common);
    free(data);
    free(dir);
}

/* Three nodes, three sources: each source runs on exactly one node and the
 * other two have it in standby; GET /api/v1/cluster on every node names the
 * same owner for each, and PostgreSQL gets every record once. */
Test(ownership, three_nodes_run_each_of_three_sources_once, .timeout = 300)
{
    char *dir = skt_tmpdir("own3");
    char *prefix = skt_unique_prefix();
    char *schema = skt_fmt("own3_%.8s", prefix + 1);
    const char *srcs[] = {"alpha", "beta", "gamma"};
    long long total = 0;
    char *head = skt_config_head(prefix, "info", "20s");
    char *common = skt_fmt("%ssinks:\n  pg:\n    type: postgres-sink\n"
                           "    conninfo: ${env:SK_TEST_PG}\n    schema: %s\nsources:\n",
                           head, schema);
    for (int s = 0; s < 3; s++) {
        char *data = skt_fmt("%s/%s", dir, srcs[s]);
        skt_generate(data, 50 + s, 10);
        total += (long long)skt_count_records(data);
        char *more =
            skt_fmt("%s  %s:\n    type: jsonl-source\n    path: %s\n", common, srcs[s], data);
        free(common);
        common = more;
        free(data);
    }
    struct node nodes[3];
    for (int i = 0; i < 3; i++) {
        nodes[i] =
            (struct node){.name = skt_fmt("n%d", i + 1), .dir = skt_fmt("%s/n%d", dir, i + 1)};
        cr_assert_eq(mkdir(nodes[i].dir, 0755), 0);
        node_start(&nodes[i], common);
    }
    cr_assert(all_assigned(nodes, 3, 60000), "a node never joined the sources group");
    for (int s = 0; s < 3; s++) {
        int own = owner_among(nodes, 3, srcs[s], 60000);
        cr_assert_geq(own, 0, "%s does not run on exactly one node", srcs[s]);
        for (int i = 0; i < 3; i++) {
            int listed = 0;
            char *named = NULL;
            /* a view is reused for a second (described_ms_ago) */
            for (int w = 0; w < 25; w++) {
                free(named);
                named = owner_named(&nodes[i], srcs[s], &listed);
                if (named && strcmp(named, nodes[own].name) == 0 && listed == 3)
                    break;
                usleep(200000);
            }
            cr_assert_str_eq(named ? named : "(none)", nodes[own].name,
                             "GET /api/v1/cluster on %s: the owner of %s", nodes[i].name, srcs[s]);
            cr_assert_eq(listed, 3, "GET /api/v1/cluster on %s lists %d nodes", nodes[i].name,
                         listed);
            free(named);
        }
    }
    cr_assert(pg_reaches(schema, total, 90000), "PostgreSQL has %lld of %lld rows", pg_rows(schema),
              total);
    sleep(2);
    cr_assert_eq(pg_rows(schema), total, "PostgreSQL rows");
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(skt_stop(&nodes[i].pid, 30000), 0, "SIGTERM should stop %s", nodes[i].name);
        free(nodes[i].name);
        free(nodes[i].dir);
        free(nodes[i].log);
    }
    free(common);
    free(head);
    free(schema);
    free(prefix);
    free(dir);
}

static bool log_has(const char *log, const char *text)
{
    char *cmd = skt_fmt("grep -c -F '%s' %s", text, log);
    char *out = NULL;
    skt_sh(cmd, 5, &out);
    bool has = out && atoi(out) > 0;
    free(out);
    free(cmd);
    return has;
}

/* Waits until source files runs on node n. */
static bool runs_source(const struct node *n, int timeout_ms)
{
    char st[32] = "";
    double rec;
    for (int w = 0; w <= timeout_ms && !running(st); w += 200) {
        source_of(n, st, sizeof(st), &rec);
        if (!running(st))
            usleep(200000);
    }
    return running(st);
}

/* A second daemon with the node.name of a live one would share its static
 * member in the sources group, and each join would fence the other: it
 * refuses to start instead, saying why, and the first keeps its source.
 * The same node started again right after kill -9 (its dead member still in
 * the group until its session ends) is not refused: it replaces it. */
Test(ownership, a_second_live_daemon_with_the_same_node_name_refuses_to_start, .timeout = 240)
{
    char *dir = skt_tmpdir("own-dup");
    char *prefix = skt_unique_prefix();
    char *data = skt_fmt("%s/data", dir);
    skt_generate(data, 49, 10);
    char *head = skt_config_head(prefix, "info", "20s");
    char *common = skt_fmt("%s"
                           "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                           "    poll_interval: 1s\n"
                           "sinks:\n  db:\n    type: sqlite-sink\n    path: %s/out.db\n",
                           head, data, dir);
    struct node first = {.name = strdup("n1"), .dir = skt_fmt("%s/first", dir)};
    struct node second = {.name = strdup("n1"), .dir = skt_fmt("%s/second", dir)};
    struct node again = {.name = strdup("n1"), .dir = skt_fmt("%s/again", dir)};
    cr_assert_eq(mkdir(first.dir, 0755), 0);
    cr_assert_eq(mkdir(second.dir, 0755), 0);
    cr_assert_eq(mkdir(again.dir, 0755), 0);
    node_start(&first, common);
    cr_assert(all_assigned(&first, 1, 60000), "n1 never joined the sources group (%s)", first.log);
    cr_assert(runs_source(&first, 30000), "n1 does not run its source (%s)", first.log);

    /* The second n1: same deployment, its own admin port (0: any free one). */
    second.log = skt_fmt("%s/daemon.log", second.dir);
    char *cfg = skt_fmt("%s/skolsync.yaml", second.dir);
    char *text = skt_fmt("%snode:\n  name: n1\n", common);
    skt_write(cfg, text);
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", cfg, NULL};
    second.pid = skt_spawn(argv, second.log);
    int rc = skt_wait(second.pid, 30000);
    if (rc == -2)
        skt_stop(&second.pid, 10000);
    cr_assert_eq(rc, 1, "the second daemon named n1 should exit 1 within 30 s, got %d (%s)", rc,
                 second.log);
    cr_assert(log_has(second.log, "give each daemon its own node.name"), "%s", second.log);
    /* the deployment: the prefix without its trailing '.' */
    char *says =
        skt_fmt("node n1 of deployment %.*s already runs on host", (int)strlen(prefix) - 1, prefix);
    cr_assert(log_has(second.log, says), "the refusal names neither node nor deployment (%s)",
              second.log);
    free(says);
    char *pid_said = skt_fmt("pid %d, alive", (int)first.pid);
    cr_assert(log_has(second.log, pid_said), "the refusal does not name the live daemon (%s)",
              second.log);
    free(pid_said);

    /* The first one was not disturbed: alive, still the owner, never fenced. */
    sleep(2);
    cr_assert_eq(kill(first.pid, 0), 0, "the first n1 died (%s)", first.log);
    cr_assert(runs_source(&first, 5000), "the first n1 no longer runs its source (%s)", first.log);
    int listed = 0;
    char *owner = owner_named(&first, "files", &listed);
    cr_assert_str_eq(owner ? owner : "(none)", "n1", "GET /api/v1/cluster names the owner");
    free(owner);
    cr_assert_not(log_has(first.log, "running no source"), "the first n1 was fenced (%s)",
                  first.log);

    /* kill -9 and an immediate restart as n1: its dead member is replaced. */
    cr_assert_eq(kill(first.pid, SIGKILL), 0);
    cr_assert_eq(skt_wait(first.pid, 10000), 128 + SIGKILL);
    first.pid = -1;
    node_start(&again, common);
    cr_assert(all_assigned(&again, 1, 60000), "the restarted n1 never joined (%s)", again.log);
    cr_assert(runs_source(&again, 30000), "the restarted n1 does not run its source (%s)",
              again.log);
    cr_assert(log_has(again.log, "no longer running): replacing it"),
              "the restart did not see (and replace) its dead member (%s)", again.log);
    cr_assert_eq(kill(again.pid, 0), 0);
    cr_assert_eq(skt_stop(&again.pid, 30000), 0, "SIGTERM should stop the restarted n1");

    struct node *all[] = {&first, &second, &again};
    for (int i = 0; i < 3; i++) {
        free(all[i]->name);
        free(all[i]->dir);
        free(all[i]->log);
    }
    free(argv[3]);
    free(text);
    free(common);
    free(head);
    free(data);
    free(prefix);
    free(dir);
}

static void joined_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_assign(rk, parts);
        *(bool *)opaque = true;
    } else {
        rd_kafka_assign(rk, NULL);
    }
}

/* A member with this node's name whose client id says it runs on another
 * host (here a consumer of the test posing as one) is another daemon,
 * whatever its pid: the daemon refuses to start and names that host. */
Test(ownership, the_same_node_name_on_another_host_is_refused, .timeout = 120)
{
    char *dir = skt_tmpdir("own-host");
    char *prefix = skt_unique_prefix();
    char *dep = skt_fmt("%.*s", (int)strlen(prefix) - 1, prefix);
    char *group = skt_fmt("%s.sources", dep);
    char *member = skt_fmt("%s.sources-n1", dep);
    char *client = skt_fmt("%s-n1-owner-sources.elsewhere.example.%d", dep, (int)getpid());
    char *topic = skt_fmt("%s_sources", prefix);
    bool joined = false;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[256];
    const char *kv[][2] = {
        {"bootstrap.servers", skt_brokers()}, {"group.id", group},
        {"group.instance.id", member},        {"client.id", client},
        {"session.timeout.ms", "10000"},      {"partition.assignment.strategy", "roundrobin"}};
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
        cr_assert_eq(rd_kafka_conf_set(conf, kv[i][0], kv[i][1], errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK, "%s", errstr);
    rd_kafka_conf_set_rebalance_cb(conf, joined_cb);
    rd_kafka_conf_set_opaque(conf, &joined);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(rk, "%s", errstr);
    rd_kafka_poll_set_consumer(rk);
    /* the control topic, as the daemon makes it: a group over a topic that
     * does not exist is never joined */
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, 16, 1, errstr, sizeof(errstr));
    cr_assert_not_null(nt, "%s", errstr);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    cr_assert_not_null(ev, "CreateTopics: no answer");
    size_t nr = 0;
    const rd_kafka_topic_result_t **res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &nr);
    cr_assert(nr == 1 && !rd_kafka_topic_result_error(res[0]), "CreateTopics %s: %s", topic,
              nr ? rd_kafka_topic_result_error_string(res[0]) : rd_kafka_event_error_string(ev));
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, topic, RD_KAFKA_PARTITION_UA);
    cr_assert_eq(rd_kafka_subscribe(rk, subs), 0);
    rd_kafka_topic_partition_list_destroy(subs);
    for (int w = 0; w < 600 && !joined; w++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m)
            rd_kafka_message_destroy(m);
    }
    cr_assert(joined, "the test's consumer never joined %s", group);

    char *data = skt_fmt("%s/data", dir);
    skt_generate(data, 51, 10);
    char *head = skt_config_head(prefix, "info", "20s");
    char *cfg = skt_fmt("%s/skolsync.yaml", dir);
    char *text = skt_fmt("%s"
                         "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                         "sinks:\n  db:\n    type: sqlite-sink\n    path: %s/out.db\n"
                         "node:\n  name: n1\n",
                         head, data, dir);
    skt_write(cfg, text);
    char *log = skt_fmt("%s/daemon.log", dir);
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", cfg, NULL};
    pid_t pid = skt_spawn(argv, log);
    /* the test's member keeps its session while the daemon starts */
    int rc = -2;
    for (int w = 0; w < 300 && rc == -2; w++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m)
            rd_kafka_message_destroy(m);
        rc = skt_wait(pid, 0);
    }
    if (rc == -2)
        skt_stop(&pid, 10000);
    cr_assert_eq(rc, 1, "the daemon named n1 should exit 1 within 30 s, got %d (%s)", rc, log);
    char *says = skt_fmt("node n1 of deployment %s already runs on host elsewhere.example", dep);
    cr_assert(log_has(log, says), "the refusal does not name the other host (%s)", log);
    cr_assert(log_has(log, "give each daemon its own node.name"), "%s", log);
    free(says);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    free(log);
    free(text);
    free(cfg);
    free(head);
    free(data);
    free(topic);
    free(client);
    free(member);
    free(group);
    free(dep);
    free(prefix);
    free(dir);
}

/* ---- the cluster view under load ------------------------------------------- */

/* The daemon's thread count (/proc/PID/status), or -1. */
static int threads_of(pid_t pid)
{
    char *path = skt_fmt("/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    free(path);
    int n = -1;
    char line[256];
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "Threads:", 8) == 0)
            n = atoi(line + 8);
    if (f)
        fclose(f);
    return n;
}

struct asker {
    int port;
    atomic_bool *stop;
    int asked, answered, reused, bad;
};

/* GET /api/v1/cluster again and again until told to stop (at most 2 000). */
static void *ask(void *arg)
{
    struct asker *a = arg;
    char *url = skt_fmt("http://127.0.0.1:%d/api/v1/cluster", a->port);
    while (!atomic_load(a->stop) && a->asked < 2000) {
        char *body = NULL;
        long st = skt_http("GET", url, NULL, 20, &body);
        a->asked++;
        cJSON *c = st == 200 && body ? cJSON_Parse(body) : NULL;
        const cJSON *age = cJSON_GetObjectItemCaseSensitive(c, "described_ms_ago");
        const cJSON *src = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(c, "sources"), 0);
        const cJSON *owner = cJSON_GetObjectItemCaseSensitive(src, "owner");
        if (cJSON_IsNumber(age) && cJSON_IsString(owner) && strcmp(owner->valuestring, "n1") == 0 &&
            !cJSON_GetObjectItemCaseSensitive(c, "error")) {
            a->answered++;
            a->reused += age->valuedouble > 0;
        } else {
            a->bad++;
        }
        cJSON_Delete(c);
        free(body);
    }
    free(url);
    return NULL;
}

/*
 * GET /api/v1/cluster describes the groups on the broker. Each request made
 * a Kafka client of its own for that (four threads and its connections, up
 * to 15 s to end), under the daemon's connector lock: a monitor polling it
 * churned clients, and a slow broker held both of the admin server's threads
 * and a reload. Now one describe runs at a time on a client kept between
 * them, and its answer serves the requests of a second: two requesters
 * asking without pause for 4 s add no thread to the daemon.
 */
Test(ownership, the_cluster_view_keeps_one_client_however_often_it_is_asked, .timeout = 180)
{
    char *dir = skt_tmpdir("own-view");
    char *data = skt_fmt("%s/data", dir);
    skt_generate(data, 49, 10);
    char *prefix = skt_unique_prefix();
    char *head = skt_config_head(prefix, "info", "10s");
    /* a source only: no sink, so no lag monitor making clients of its own */
    char *common =
        skt_fmt("%ssources:\n  files:\n    type: jsonl-source\n    path: %s\n", head, data);
    struct node n = {.name = "n1", .dir = dir};
    node_start(&n, common);
    cr_assert(all_assigned(&n, 1, 60000), "the node never joined the sources group (%s)", n.log);
    cr_assert_eq(owner_among(&n, 1, "files", 60000), 0, "the source does not run (%s)", n.log);
    int listed = 0;
    char *owner = NULL;
    for (int w = 0; w < 50 && !owner; w++) { /* the first answer keeps its client */
        owner = owner_named(&n, "files", &listed);
        if (!owner)
            usleep(200000);
    }
    cr_assert_str_eq(owner ? owner : "(none)", "n1", "GET /api/v1/cluster (%s)", n.log);
    free(owner);

    /* the daemon at rest, then asked by two without pause */
    int rest = 0;
    for (int i = 0; i < 200; i++, usleep(10000)) {
        int t = threads_of(n.pid);
        rest = t > rest ? t : rest;
    }
    atomic_bool stop = false;
    struct asker askers[2] = {{.port = n.port, .stop = &stop}, {.port = n.port, .stop = &stop}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, ask, &askers[i]), 0);
    int most = 0;
    for (int i = 0; i < 800; i++, usleep(5000)) { /* 4 s */
        int t = threads_of(n.pid);
        most = t > most ? t : most;
    }
    atomic_store(&stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    int asked = askers[0].asked + askers[1].asked;
    int answered = askers[0].answered + askers[1].answered;
    int reused = askers[0].reused + askers[1].reused;
    cr_log_info("cluster view: %d requests in 4 s, %d answered (%d with an earlier description); "
                "threads at rest %d, at most %d while asked",
                asked, answered, reused, rest, most);
    cr_assert_gt(asked, 20, "only %d requests were answered in 4 s (%s)", asked, n.log);
    cr_assert_eq(answered, asked, "%d of %d answers were not a description naming n1 (%s)",
                 asked - answered, asked, n.log);
    cr_assert_gt(reused, 0, "every request described the groups anew");
    cr_assert_leq(most, rest + 1,
                  "the daemon went from %d threads at rest to %d while asked: a client per "
                  "request (%s)",
                  rest, most, n.log);
    cr_assert_eq(skt_stop(&n.pid, 30000), 0, "SIGTERM should stop the daemon");
    free(n.log);
    free(common);
    free(head);
    free(prefix);
    free(data);
    free(dir);
}
