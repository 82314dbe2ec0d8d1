/*
 * test_ha_cluster.c: a three-node deployment under failures (project issue
 * 12, README "High availability and scaling", docs/architecture.md §5.10),
 * on the real broker. Three daemons from one configuration (node.name n1,
 * n2, n3; each its own admin port; the same topic prefix and so the same
 * deployment): a jsonl-source reading a generated SS 12000 dataset and a
 * postgres-sink (a shared target: the nodes split its partitions) into a
 * schema of its own.
 *
 *   1. The source runs on exactly one node, the sink's partitions are spread
 *      over all three (GET /api/v1/cluster, GET /api/v1/connectors and
 *      `skolsync lag -c --json` agree).
 *   2. kill -9 of the source's owner in the middle of the sync (between 10 %
 *      and 90 % of the rows in PostgreSQL): another node runs the source
 *      within a bound; the time is printed ("ha_cluster: source failover
 *      took N ms"); the sync completes.
 *   3. The killed node back; kill -9 of a node that holds sink partitions
 *      but not the source while a second wave of records is appended: the
 *      survivors hold every partition within a bound ("ha_cluster:
 *      partition failover took N ms"); PostgreSQL converges.
 *   4. A rolling restart (SIGTERM, start again, wait until it has rejoined)
 *      of all three while a third wave is appended; PostgreSQL converges.
 *
 * After each phase PostgreSQL must equal the dataset: every id of every
 * jsonl file in its table with an equal doc, no row beyond them, so a
 * table's row count is its file's number of distinct ids (upserts by id;
 * nothing lost, nothing twice). At the end every topic is read
 * read_committed: each line of the dataset is there exactly once (no
 * committed record twice, which exactly-once allows none of, also across
 * a kill -9 of the producing owner: its open transaction is aborted by the
 * new owner's init_transactions).
 *
 * Failover times are measured from the kill to the first poll (every
 * 100 ms, over the admin API) that shows the new state: the source running
 * on a survivor (GET /api/v1/connectors/files), every partition held by the
 * survivors (GET /api/v1/connectors/pg). Each must come within 60 s (the
 * 10 s session, a rebalance, margin for a loaded machine).
 *
 * Size: SK_HA_RECORDS (default 100 000, the size issue 12 asks for: 81-83 s
 * on the 2-core CI machine, 45-55 s at 20 000); scripts/soak.sh (`make
 * soak`) runs it once more after its crash trials.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#include "model.h"
#include "sk_test.h"
#include "util.h"

/* 18 topics of 3 partitions (skt_config_head): the postgres-sink's group. */
#define PG_PARTITIONS (SK_ENTITY_COUNT * 3)
/* Bounds: a dead member leaves its group when its session ends (10 s), then
 * a rebalance; a survivor that has not taken over after this is a failure. */
#define FAILOVER_BOUND_MS 60000
#define CONVERGE_BOUND_MS 300000

struct node {
    char *name, *dir, *cfg, *log;
    pid_t pid;
    int port, runs;
};

struct cluster {
    char *dir, *prefix, *schema, *data, *staging;
    struct node nodes[3];
    long long total; /* lines in the dataset, appended waves included */
    int next_person; /* the first id number of the next appended person */
};

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Starts (or starts again) node n; every run logs to a file of its own, so
 * the HTTP port read from the log is this run's. */
static void node_start(struct node *n)
{
    free(n->log);
    n->log = skt_fmt("%s/daemon-%d-%d.log", n->dir, (int)getpid(), ++n->runs);
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", n->cfg, NULL};
    n->pid = skt_spawn(argv, n->log);
    n->port = skt_logged_port(n->log, 30000);
    cr_assert_gt(n->port, 0, "%s logged no HTTP port (%s)", n->name, n->log);
}

static bool alive(const struct node *n)
{
    return n->pid > 0;
}

/* The state of connector name on node n ("" if unknown) and its records counter. */
static void conn_state(const struct node *n, const char *name, char *state, size_t size,
                       double *records)
{
    char *path = skt_fmt("/api/v1/connectors/%s", name);
    cJSON *c = skt_get_json(n->port, path);
    free(path);
    snprintf(state, size, "%s", skt_jstr(c, "state"));
    if (records)
        *records = skt_jnum(c, "records");
    cJSON_Delete(c);
}

static bool running(const char *state)
{
    return strcmp(state, "running") == 0 || strcmp(state, "idle") == 0;
}

/* The number of pg partitions node n holds now (-1 if it does not answer). */
static int pg_partitions(const struct node *n)
{
    cJSON *c = skt_get_json(n->port, "/api/v1/connectors/pg");
    int p = c ? (int)skt_jnum(c, "partitions") : -1;
    cJSON_Delete(c);
    return p;
}

/* The index of the one live node that runs the source while every other
 * live node has it in standby; -1 if that is not the case right now (none,
 * or more than one: the latter fails the caller's bound like the former,
 * and a source on two nodes never settles into one). */
static int source_owner_now(struct cluster *c)
{
    int owner = -1, standby = 0, live = 0;
    for (int i = 0; i < 3; i++) {
        if (!alive(&c->nodes[i]))
            continue;
        live++;
        char st[32];
        conn_state(&c->nodes[i], "files", st, sizeof(st), NULL);
        if (running(st))
            owner = owner < 0 ? i : 3;
        standby += strcmp(st, "standby") == 0;
    }
    return owner >= 0 && owner < 3 && standby == live - 1 ? owner : -1;
}

static int source_owner(struct cluster *c, int timeout_ms)
{
    for (long long t0 = now_ms(); now_ms() - t0 <= timeout_ms; usleep(100000)) {
        int o = source_owner_now(c);
        if (o >= 0)
            return o;
    }
    return -1;
}

/* True when every live node holds pg partitions and together they hold all
 * of them (a rebalance over; a node that has not rejoined holds none). */
static bool pg_spread_now(struct cluster *c, int held[3])
{
    int sum = 0;
    bool each = true;
    for (int i = 0; i < 3; i++) {
        held[i] = alive(&c->nodes[i]) ? pg_partitions(&c->nodes[i]) : 0;
        sum += held[i] > 0 ? held[i] : 0;
        each = each && (!alive(&c->nodes[i]) || held[i] > 0);
    }
    return each && sum == PG_PARTITIONS;
}

static bool pg_spread(struct cluster *c, int held[3], int timeout_ms)
{
    for (long long t0 = now_ms(); now_ms() - t0 <= timeout_ms; usleep(100000))
        if (pg_spread_now(c, held))
            return true;
    return false;
}

/* Waits until the live nodes are settled: the source on exactly one, the
 * sink's partitions over all of them. The owner's index. */
static int settled(struct cluster *c, const char *when)
{
    int held[3];
    cr_assert(pg_spread(c, held, 90000),
              "%s: the pg partitions are not spread over the live nodes (n1 %d, n2 %d, n3 %d)",
              when, held[0], held[1], held[2]);
    int own = source_owner(c, 60000);
    cr_assert_geq(own, 0, "%s: the source does not run on exactly one node", when);
    cr_log_info("ha_cluster: %s: source on %s, pg partitions n1 %d, n2 %d, n3 %d", when,
                c->nodes[own].name, held[0], held[1], held[2]);
    return own;
}

static long long pg_rows(struct cluster *c)
{
    PGconn *pg = skt_pg_connect();
    long long n = skt_pg_total_rows(pg, c->schema);
    PQfinish(pg);
    return n;
}

/* ---- PostgreSQL against the dataset ---------------------------------------- */

struct doc_line {
    char id[37];
    char *line;
};

static int cmp_doc_line(const void *a, const void *b)
{
    const struct doc_line *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    /* the same id twice: the later line (the higher address) wins, sorted last */
    return c ? c : (x->line < y->line ? -1 : x->line > y->line);
}

/*
 * Every table of the schema against its jsonl file: each id of the file in
 * the table with a doc equal to the file's last line of that id, and no row
 * beyond the file's ids (so the table's row count is the number of distinct
 * ids). False with the first difference per kind in why.
 */
static bool pg_matches_dataset(struct cluster *c, char *why, size_t why_size)
{
    why[0] = '\0';
    PGconn *pg = skt_pg_connect();
    if (PQstatus(pg) != CONNECTION_OK) {
        snprintf(why, why_size, "no connection: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return false;
    }
    bool ok = true;
    size_t used = 0;
    for (size_t e = 0; e < SK_ENTITY_COUNT; e++) {
        const char *coll = sk_entities[e]->collection;
        char *file = skt_fmt("%s/%s.jsonl", c->data, coll);
        size_t len = 0;
        char *text = sk_read_file(file, &len);
        free(file);
        size_t n = 0, cap = 0;
        struct doc_line *lines = NULL;
        for (char *l = text ? strtok(text, "\n") : NULL; l; l = strtok(NULL, "\n")) {
            cJSON *d = cJSON_Parse(l);
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(d, "id");
            char norm[37];
            if (cJSON_IsString(id) && sk_uuid_normalize(id->valuestring, norm) == 0) {
                if (n == cap) {
                    cap = cap ? cap * 2 : 256;
                    lines = realloc(lines, cap * sizeof(*lines));
                    cr_assert_not_null(lines);
                }
                lines[n] = (struct doc_line){.line = l};
                memcpy(lines[n].id, norm, sizeof(norm));
                n++;
            }
            cJSON_Delete(d);
        }
        qsort(lines, n, sizeof(*lines), cmp_doc_line);
        /* keep the last line of each id */
        size_t distinct = 0;
        for (size_t i = 0; i < n; i++) {
            if (i + 1 < n && strcmp(lines[i].id, lines[i + 1].id) == 0)
                continue;
            lines[distinct++] = lines[i];
        }
        char *t = skt_pg_table(coll);
        char *sql = skt_fmt("SELECT id::text, doc::text FROM \"%s\".\"%s\" ORDER BY id::text",
                            c->schema, t);
        PGresult *r = PQexec(pg, sql);
        free(sql);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            snprintf(why, why_size, "%s: %s", t, PQerrorMessage(pg));
            PQclear(r);
            free(t);
            free(lines);
            free(text);
            PQfinish(pg);
            return false;
        }
        size_t rows = (size_t)PQntuples(r), a = 0, b = 0;
        size_t missing = 0, extra = 0, differ = 0;
        char first[160] = "";
        while (a < distinct || b < rows) {
            const char *rid = b < rows ? PQgetvalue(r, (int)b, 0) : NULL;
            int cmp = a >= distinct ? 1 : !rid ? -1 : strcmp(lines[a].id, rid);
            if (cmp < 0) {
                if (!missing++ && !first[0])
                    snprintf(first, sizeof(first), "missing %s", lines[a].id);
                a++;
            } else if (cmp > 0) {
                if (!extra++ && !first[0])
                    snprintf(first, sizeof(first), "extra %s", rid);
                b++;
            } else {
                cJSON *in = cJSON_Parse(lines[a].line);
                cJSON *out = cJSON_Parse(PQgetvalue(r, (int)b, 1));
                /* the input's id may be upper case; the target's is normalised */
                cJSON_ReplaceItemInObjectCaseSensitive(in, "id", cJSON_CreateString(lines[a].id));
                if (!skt_json_equal(in, out) && !differ++ && !first[0])
                    snprintf(first, sizeof(first), "doc of %s differs", rid);
                cJSON_Delete(in);
                cJSON_Delete(out);
                a++;
                b++;
            }
        }
        if (missing || extra || differ) {
            ok = false;
            if (used < why_size)
                used += (size_t)snprintf(why + used, why_size - used,
                                         "%s: %zu rows, %zu distinct ids in the file: %zu missing, "
                                         "%zu extra, %zu different (first: %s); ",
                                         t, rows, distinct, missing, extra, differ, first);
        }
        PQclear(r);
        free(t);
        free(lines);
        free(text);
    }
    PQfinish(pg);
    return ok;
}

/* Waits until PostgreSQL holds as many rows as the dataset has lines (its
 * ids are distinct), then compares every table with the dataset. */
static void converge(struct cluster *c, const char *when)
{
    long long t0 = now_ms(), rows = -1;
    while ((rows = pg_rows(c)) < c->total && now_ms() - t0 < CONVERGE_BOUND_MS)
        usleep(200000);
    cr_assert_eq(rows, c->total, "%s: PostgreSQL has %lld rows of %lld after %lld ms", when, rows,
                 c->total, now_ms() - t0);
    /* a moment for anything applied twice or late to show */
    sleep(1);
    char why[4096];
    cr_assert(pg_matches_dataset(c, why, sizeof(why)),
              "%s: PostgreSQL differs from the dataset: %s", when, why);
    cr_log_info("ha_cluster: %s: PostgreSQL equals the dataset (%lld rows, %lld ms)", when,
                c->total, now_ms() - t0);
}

/* Appends n persons with fresh ids to the dataset. */
static void append(struct cluster *c, int n)
{
    skt_append_persons(c->data, c->next_person, n);
    c->next_person += n;
    c->total += n;
}

/* ---- GET /api/v1/cluster and skolsync lag ------------------------------------ */

/* Whether GET /api/v1/cluster on node n names owner as the source's owner,
 * and lists each live node holding pg partitions (a "topic/N" list). */
static bool cluster_api_agrees(struct cluster *c, const struct node *n, const char *owner)
{
    cJSON *j = skt_get_json(n->port, "/api/v1/cluster");
    bool named = false;
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(j, "sources"))
    {
        named = named || (strcmp(skt_jstr(s, "name"), "files") == 0 &&
                          strcmp(skt_jstr(s, "owner"), owner) == 0);
    }
    int holders = 0, live = 0;
    for (int i = 0; i < 3; i++) {
        if (!alive(&c->nodes[i]))
            continue;
        live++;
        const cJSON *nd;
        cJSON_ArrayForEach(nd, cJSON_GetObjectItemCaseSensitive(j, "nodes"))
        {
            if (strcmp(skt_jstr(nd, "node"), c->nodes[i].name) != 0)
                continue;
            int parts = 0;
            const cJSON *sk;
            cJSON_ArrayForEach(sk, cJSON_GetObjectItemCaseSensitive(nd, "sinks"))
            {
                parts += cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(sk, "partitions"));
            }
            holders += parts > 0;
        }
    }
    cJSON_Delete(j);
    return named && holders == live;
}

/* Whether node n holds a partition of the persons topic (where the waves go). */
static bool holds_persons(struct cluster *c, const struct node *n)
{
    cJSON *j = skt_get_json(n->port, "/api/v1/cluster");
    char *want = skt_fmt("%spersons/", c->prefix);
    bool holds = false;
    const cJSON *nd, *sk, *p;
    cJSON_ArrayForEach(nd, cJSON_GetObjectItemCaseSensitive(j, "nodes"))
    {
        if (strcmp(skt_jstr(nd, "node"), n->name) != 0)
            continue;
        cJSON_ArrayForEach(sk, cJSON_GetObjectItemCaseSensitive(nd, "sinks"))
        {
            cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(sk, "partitions"))
            {
                holds = holds ||
                        (cJSON_IsString(p) && strncmp(p->valuestring, want, strlen(want)) == 0);
            }
        }
    }
    free(want);
    cJSON_Delete(j);
    return holds;
}

/*
 * `skolsync lag -c <n1's configuration> --json`: the source's owner is
 * `owner`, and the pg group's partitions are all owned, by n1, n2 and n3,
 * each holding some. False with the output in *last (caller frees).
 */
static bool lag_agrees(struct cluster *c, const char *owner, char **last)
{
    char *cmd = skt_fmt("%s lag -c %s --json --timeout 15s", skt_skolsync(), c->nodes[0].cfg);
    char *out = NULL;
    skt_sh(cmd, 60, &out);
    free(cmd);
    *last = out;
    cJSON *j = cJSON_Parse(out);
    char *group = skt_fmt("%.*s-pg", (int)strlen(c->prefix) - 1, c->prefix);
    int per[3] = {0}, other = 0;
    bool src = false;
    const cJSON *g, *p, *s;
    cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(j, "groups"))
    {
        if (strcmp(skt_jstr(g, "group"), group) != 0)
            continue;
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(g, "partitions"))
        {
            const char *o = skt_jstr(p, "owner");
            int k = strlen(o) == 2 && o[0] == 'n' && o[1] >= '1' && o[1] <= '3' ? o[1] - '1' : -1;
            if (k >= 0)
                per[k]++;
            else
                other++;
        }
    }
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(j, "sources"))
    {
        src = src || (strcmp(skt_jstr(s, "name"), "files") == 0 &&
                      strcmp(skt_jstr(s, "owner"), owner) == 0);
    }
    cJSON_Delete(j);
    free(group);
    return src && other == 0 && per[0] > 0 && per[1] > 0 && per[2] > 0 &&
           per[0] + per[1] + per[2] == PG_PARTITIONS;
}

/* ---- the topics, read_committed ---------------------------------------------- */

struct kv_digest {
    uint64_t key, value;
    int topic;
};

static int cmp_digest(const void *a, const void *b)
{
    const struct kv_digest *x = a, *y = b;
    if (x->topic != y->topic)
        return x->topic < y->topic ? -1 : 1;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->value < y->value ? -1 : x->value > y->value;
}

static uint64_t fnv64(const void *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ULL;
    return h;
}

/* Lines of the jsonl file of collection coll. */
static long long file_lines(struct cluster *c, const char *coll)
{
    char *file = skt_fmt("%s/%s.jsonl", c->data, coll);
    size_t len = 0;
    char *text = sk_read_file(file, &len);
    long long n = 0;
    for (size_t i = 0; text && i < len; i++)
        n += text[i] == '\n';
    free(text);
    free(file);
    return n;
}

/*
 * Reads every partition of the 18 topics from the start to the end as a
 * read_committed consumer (what sinks see) and checks that each topic holds
 * exactly as many records (control records aside) as its file has lines,
 * and no key with the same value twice: the kill -9 of the producing owner
 * left nothing committed twice.
 */
static void topics_hold_each_line_once(struct cluster *c)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char *group = skt_fmt("%sha-cluster-check", c->prefix);
    const char *kv[][2] = {{"bootstrap.servers", skt_brokers()},
                           {"group.id", group},
                           {"isolation.level", "read_committed"},
                           {"enable.auto.commit", "false"},
                           {"enable.partition.eof", "true"},
                           {"auto.offset.reset", "earliest"},
                           {"log_level", "0"}};
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
        cr_assert_eq(rd_kafka_conf_set(conf, kv[i][0], kv[i][1], errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK, "%s", errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(rk, "%s", errstr);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(PG_PARTITIONS);
    for (size_t e = 0; e < SK_ENTITY_COUNT; e++) {
        char *topic = skt_fmt("%s%s", c->prefix, sk_entities[e]->collection);
        for (int p = 0; p < 3; p++)
            rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
        free(topic);
    }
    cr_assert_eq(rd_kafka_assign(rk, parts), 0);
    rd_kafka_topic_partition_list_destroy(parts);

    size_t n = 0, cap = (size_t)c->total + 1024;
    struct kv_digest *d = malloc(cap * sizeof(*d));
    cr_assert_not_null(d);
    long long per_topic[SK_ENTITY_COUNT] = {0};
    int eof = 0;
    long long t0 = now_ms();
    while (eof < PG_PARTITIONS && now_ms() - t0 < 120000) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            eof++;
        } else if (!m->err) {
            rd_kafka_headers_t *h = NULL;
            const void *hv;
            size_t hl;
            bool control = rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
                           rd_kafka_header_get_last(h, "skolsync-control", &hv, &hl) ==
                               RD_KAFKA_RESP_ERR_NO_ERROR;
            const char *topic = rd_kafka_topic_name(m->rkt) + strlen(c->prefix);
            int t = -1;
            for (size_t e = 0; e < SK_ENTITY_COUNT && t < 0; e++)
                if (strcmp(sk_entities[e]->collection, topic) == 0)
                    t = (int)e;
            if (!control && t >= 0) {
                if (n == cap) {
                    cap *= 2;
                    d = realloc(d, cap * sizeof(*d));
                    cr_assert_not_null(d);
                }
                d[n++] = (struct kv_digest){.key = fnv64(m->key, m->key_len),
                                            .value = fnv64(m->payload, m->len),
                                            .topic = t};
                per_topic[t]++;
            }
        } else {
            cr_log_warn("ha_cluster: reading the topics: %s", rd_kafka_message_errstr(m));
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    cr_assert_eq(eof, PG_PARTITIONS, "only %d of %d partitions read to their end in 120 s", eof,
                 PG_PARTITIONS);
    qsort(d, n, sizeof(*d), cmp_digest);
    size_t twice = 0;
    for (size_t i = 1; i < n; i++)
        twice += cmp_digest(&d[i - 1], &d[i]) == 0;
    free(d);
    cr_assert_eq(twice, 0, "%zu committed records are in their topic twice (key and value)", twice);
    for (size_t e = 0; e < SK_ENTITY_COUNT; e++) {
        long long want = file_lines(c, sk_entities[e]->collection);
        cr_assert_eq(per_topic[e], want,
                     "topic %s%s holds %lld committed records, its file %lld lines", c->prefix,
                     sk_entities[e]->collection, per_topic[e], want);
    }
    cr_log_info("ha_cluster: the topics hold each of the %zu lines once", n);
    free(group);
}

/* ---- the test ------------------------------------------------------------------ */

static void report_ms(const char *what, long long ms)
{
    cr_log_info("ha_cluster: %s took %lld ms", what, ms);
    fprintf(stderr, "ha_cluster: %s took %lld ms\n", what, ms);
}

Test(ha_cluster, three_nodes_survive_kills_and_a_rolling_restart, .timeout = 1800)
{
    struct cluster c = {.dir = skt_tmpdir("ha-cluster"), .next_person = 1};
    const char *env = getenv("SK_HA_RECORDS");
    long want = env && *env ? atol(env) : 100000;
    cr_assert_geq(want, 1000, "SK_HA_RECORDS must be at least 1000");
    /* The generator writes 41-43 records per student (with the
     * guardians, staff, groups, attendances... that come with one). */
    int students = (int)(want * 10 / 415);
    c.prefix = skt_unique_prefix();
    c.schema = skt_fmt("hac_%.8s", c.prefix + 1);
    c.data = skt_fmt("%s/data", c.dir);
    c.staging = skt_fmt("%s/staging", c.dir);
    long long t_start = now_ms();
    skt_generate(c.staging, 60, students);
    c.total = (long long)skt_count_records(c.staging);
    cr_log_info("ha_cluster: %lld records (%d students, SK_HA_RECORDS %ld)", c.total, students,
                want);
    /* The source's directory starts empty: the sync begins once all three
     * nodes have joined and settled, so the kill below lands in it. A small
     * batch (100 lines a transaction) makes the sync many transactions
     * long, as a real source's pages are. */
    cr_assert_eq(mkdir(c.data, 0755), 0);
    char *head = skt_config_head(c.prefix, "info", "20s");
    for (int i = 0; i < 3; i++) {
        struct node *n = &c.nodes[i];
        *n = (struct node){.name = skt_fmt("n%d", i + 1), .dir = skt_fmt("%s/n%d", c.dir, i + 1)};
        cr_assert_eq(mkdir(n->dir, 0755), 0);
        n->cfg = skt_fmt("%s/skolsync.yaml", n->dir);
        char *text = skt_fmt("%snode:\n  name: %s\n"
                             "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                             "    poll_interval: 500ms\n    batch_size: 100\n"
                             "sinks:\n  pg:\n    type: postgres-sink\n"
                             "    conninfo: ${env:SK_TEST_PG}\n    schema: %s\n",
                             head, n->name, c.data, c.schema);
        skt_write(n->cfg, text);
        free(text);
    }
    free(head);

    /* ---- 1. three nodes: one runs the source, all three share the sink ---- */
    /* n1 first: the schema is made once, not raced by three migrations */
    node_start(&c.nodes[0]);
    for (long long t0 = now_ms(); pg_partitions(&c.nodes[0]) <= 0 && now_ms() - t0 < 60000;)
        usleep(100000);
    cr_assert_gt(pg_partitions(&c.nodes[0]), 0, "n1's sink holds no partition (%s)",
                 c.nodes[0].log);
    node_start(&c.nodes[1]);
    node_start(&c.nodes[2]);
    int own = settled(&c, "three nodes up");
    /* every node's view of the cluster names the same owner and all three holders */
    for (int i = 0; i < 3; i++) {
        bool agrees = false;
        for (long long t0 = now_ms(); !agrees && now_ms() - t0 < 20000;) {
            agrees = cluster_api_agrees(&c, &c.nodes[i], c.nodes[own].name);
            if (!agrees)
                usleep(200000);
        }
        cr_assert(agrees,
                  "GET /api/v1/cluster on %s does not name %s as the owner and all three "
                  "nodes holding pg partitions",
                  c.nodes[i].name, c.nodes[own].name);
    }
    char *last = NULL;
    bool lag_ok = false;
    for (int tries = 0; tries < 10 && !lag_ok; tries++) {
        free(last);
        if (tries)
            sleep(1);
        lag_ok = lag_agrees(&c, c.nodes[own].name, &last);
    }
    cr_assert(lag_ok, "skolsync lag does not show the source on %s and pg on n1, n2 and n3: %s",
              c.nodes[own].name, last);
    free(last);

    /* ---- 2. kill -9 of the source's owner in the middle of the sync ---- */
    for (size_t e = 0; e < SK_ENTITY_COUNT; e++) {
        char *from = skt_fmt("%s/%s.jsonl", c.staging, sk_entities[e]->collection);
        char *to = skt_fmt("%s/%s.jsonl", c.data, sk_entities[e]->collection);
        cr_assert_eq(rename(from, to), 0, "%s", from);
        free(from);
        free(to);
    }
    long long rows = 0, t_sync = now_ms();
    while ((rows = pg_rows(&c)) * 10 < c.total && now_ms() - t_sync < 120000)
        usleep(50000);
    cr_assert_geq(rows * 10, c.total, "PostgreSQL did not reach 10 %% of the dataset: %lld rows",
                  rows);
    /* Past 90 % the kill would not be in the middle of the sync: the test
     * would no longer show what it claims (a faster machine needs a larger
     * SK_HA_RECORDS). */
    cr_assert_lt(rows * 10, c.total * 9, "PostgreSQL was at %lld of %lld rows before the kill",
                 rows, c.total);
    struct node *victim = &c.nodes[own];
    char st[32];
    double read_by_owner = -1;
    conn_state(victim, "files", st, sizeof(st), &read_by_owner);
    cr_log_info("ha_cluster: kill -9 of %s (the source's owner, %.0f lines read) at %lld of %lld "
                "rows in PostgreSQL",
                victim->name, read_by_owner, rows, c.total);
    cr_assert_eq(kill(victim->pid, SIGKILL), 0);
    long long t_kill = now_ms();
    cr_assert_eq(skt_wait(victim->pid, 10000), 128 + SIGKILL);
    victim->pid = -1;
    int next = -1;
    while ((next = source_owner_now(&c)) < 0 && now_ms() - t_kill < FAILOVER_BOUND_MS)
        usleep(100000);
    long long source_ms = now_ms() - t_kill;
    cr_assert_geq(next, 0, "no survivor runs the source %d ms after the kill (or both do)",
                  FAILOVER_BOUND_MS);
    report_ms("source failover", source_ms);
    cr_log_info("ha_cluster: the source runs on %s now", c.nodes[next].name);
    converge(&c, "after the source's owner was killed");
    /* the sync went on from the committed cursor: nothing read twice shows at the end */

    /* the killed node comes back (its dead member is replaced) */
    node_start(victim);
    own = settled(&c, "the killed owner back");

    /* ---- 3. kill -9 of a sink partition holder during a second wave ---- */
    /* A node that holds pg partitions but not the source; one holding a
     * persons partition, where the wave goes, if there is one. */
    int holder = -1;
    for (int i = 0; i < 3; i++) {
        if (i == own || pg_partitions(&c.nodes[i]) <= 0)
            continue;
        if (holder < 0 || holds_persons(&c, &c.nodes[i]))
            holder = i;
    }
    cr_assert_geq(holder, 0, "no node other than the source's owner holds pg partitions");
    victim = &c.nodes[holder];
    long long base = c.total;
    int wave = (int)(c.total / 10), chunk = wave / 10;
    for (int k = 0; k < 3; k++) {
        append(&c, chunk);
        usleep(250000);
    }
    /* the wave flows into PostgreSQL before the kill */
    for (long long t0 = now_ms(); pg_rows(&c) <= base && now_ms() - t0 < 30000;)
        usleep(50000);
    rows = pg_rows(&c);
    cr_assert_gt(rows, base, "the second wave did not reach PostgreSQL");
    cr_log_info("ha_cluster: kill -9 of %s (pg partitions %d%s) at %lld of %lld rows", victim->name,
                pg_partitions(victim), holds_persons(&c, victim) ? ", persons among them" : "",
                rows, base + 10LL * chunk);
    cr_assert_eq(kill(victim->pid, SIGKILL), 0);
    t_kill = now_ms();
    cr_assert_eq(skt_wait(victim->pid, 10000), 128 + SIGKILL);
    victim->pid = -1;
    /* the rest of the wave while the partitions move: a chunk every 300 ms */
    int held[3];
    bool moved = false;
    int k = 3;
    for (long long last_append = now_ms(); !moved && now_ms() - t_kill < FAILOVER_BOUND_MS;) {
        if (k < 10 && now_ms() - last_append >= 300) {
            append(&c, chunk);
            k++;
            last_append = now_ms();
        }
        moved = pg_spread_now(&c, held);
        if (moved)
            report_ms("partition failover", now_ms() - t_kill);
        else
            usleep(100000);
    }
    for (; k < 10; k++)
        append(&c, chunk);
    cr_assert(moved,
              "the survivors do not hold every pg partition %d ms after the kill "
              "(n1 %d, n2 %d, n3 %d)",
              FAILOVER_BOUND_MS, held[0], held[1], held[2]);
    cr_assert_geq(source_owner(&c, 5000), 0, "the source no longer runs on exactly one node");
    converge(&c, "after a sink partition holder was killed");
    node_start(victim);
    settled(&c, "the killed holder back");

    /* ---- 4. a rolling restart of all three during a third wave ---- */
    wave = (int)(c.total / 10);
    chunk = wave / 6;
    for (int i = 0; i < 3; i++) {
        struct node *n = &c.nodes[i];
        append(&c, chunk);
        int rc = skt_stop(&n->pid, 30000);
        cr_assert_eq(rc, 0, "SIGTERM should stop %s with exit 0, got %d (%s)", n->name, rc, n->log);
        append(&c, chunk);
        long long t0 = now_ms();
        node_start(n);
        /* rejoined: it holds pg partitions again and the source runs once */
        char *when = skt_fmt("%s restarted", n->name);
        settled(&c, when);
        free(when);
        cr_log_info("ha_cluster: %s rejoined %lld ms after its start", n->name, now_ms() - t0);
    }
    converge(&c, "after the rolling restart");

    topics_hold_each_line_once(&c);
    for (int i = 0; i < 3; i++) {
        int rc = skt_stop(&c.nodes[i].pid, 30000);
        cr_assert_eq(rc, 0, "SIGTERM should stop %s with exit 0, got %d", c.nodes[i].name, rc);
    }
    cr_log_info("ha_cluster: %lld records in all, %lld ms", c.total, now_ms() - t_start);
    fprintf(stderr, "ha_cluster: %lld records in all, the test took %lld ms\n", c.total,
            now_ms() - t_start);
    for (int i = 0; i < 3; i++) {
        free(c.nodes[i].name);
        free(c.nodes[i].dir);
        free(c.nodes[i].cfg);
        free(c.nodes[i].log);
    }
    free(c.staging);
    free(c.data);
    free(c.schema);
    free(c.prefix);
    free(c.dir);
}
