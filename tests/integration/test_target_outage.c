/*
 * test_target_outage.c: a sink's target goes away in the middle of a sync
 * and comes back; the long-running daemon (not --once) must ride it out:
 * retry with backoff, keep its memory bounded, lose nothing, duplicate
 * nothing, and never store an offset for a record that was not applied.
 *
 *  a. PostgreSQL is stopped for 30 s (scripts/pg.sh stop --keep-data, then
 *     start: same port, same data) while jsonl-source -> postgres-sink runs.
 *  b. The SCIM server is "down" for 30 s behind tests/fixtures/flaky_proxy.py
 *     (connections refused, then requests held, then 503 + Retry-After),
 *     so its in-memory data survives.
 *  c. The sqlite-sink's file is locked for 15 s mid-sync (embedded broker).
 *  d. A sink retrying against a locked file loses every partition to other
 *     members of its group (real broker): it must say it is ready, not
 *     retrying, once the file is free, and apply everything when they leave.
 *
 * Each test uses its own topic prefix, connector names, schema and state dir.
 * The daemon and the proxy die with the test process (PR_SET_PDEATHSIG), and
 * the fini puts PostgreSQL back up whatever happened.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* AddressSanitizer's quarantine holds freed memory back on purpose: RSS says
 * nothing about our bounds in a sanitizer build (make test SANITIZE=1). */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_CHECKED 0
#else
#define RSS_CHECKED 1
#endif
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#include "model.h"
#include "sk_test.h"
#include "util.h"

/* ---- processes, cleaned up in every path ------------------------------------ */

static pid_t g_daemon = -1, g_proxy = -1;
static bool g_pg_stopped;

static int pg_script(const char *what)
{
    char *cmd = skt_fmt("%s/scripts/pg.sh %s", SK_SOURCE_DIR, what);
    char *out = NULL;
    int rc = skt_sh(cmd, 120, &out);
    if (rc != 0)
        cr_log_error("%s: %d\n%s", cmd, rc, out);
    free(out);
    free(cmd);
    return rc;
}

static void cleanup(void)
{
    skt_stop(&g_daemon, 20000);
    skt_stop(&g_proxy, 20000);
    if (g_pg_stopped && pg_script("start") == 0)
        g_pg_stopped = false;
}

/* ---- small helpers ---------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* VmRSS of pid in KiB, or -1. */
static long rss_kib(pid_t pid)
{
    char *path = skt_fmt("/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    free(path);
    if (!f)
        return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static bool alive(pid_t pid)
{
    return waitpid(pid, NULL, WNOHANG) == 0;
}

/* The admin port the daemon logged ("HTTP server on http://127.0.0.1:PORT"). */
static int wait_admin_port(const char *log, pid_t pid)
{
    for (int i = 0; i < 300; i++) {
        size_t len;
        char *text = sk_read_file(log, &len);
        const char *m = text ? strstr(text, "HTTP server on http://127.0.0.1:") : NULL;
        int port = m ? atoi(m + strlen("HTTP server on http://127.0.0.1:")) : 0;
        free(text);
        if (port > 0)
            return port;
        cr_assert(alive(pid), "the daemon exited before it served HTTP (log %s)", log);
        usleep(100000);
    }
    cr_assert_fail("the daemon logged no HTTP port within 30 s (log %s)", log);
    return 0;
}

/* A counter of /metrics for one connector, or -1. */
static long long metric(int port, const char *name, const char *connector)
{
    char *url = skt_fmt("http://127.0.0.1:%d/metrics", port);
    char *body = NULL;
    long st = skt_http("GET", url, NULL, 20, &body);
    free(url);
    long long v = -1;
    if (st == 200) {
        char *key = skt_fmt("%s{connector=\"%s\",", name, connector);
        const char *m = strstr(body, key);
        if (m) {
            const char *sp = strchr(m, ' ');
            if (sp)
                v = atoll(sp + 1);
        }
        free(key);
    }
    free(body);
    return v;
}

/* ---- the dataset ------------------------------------------------------------ */

/* Unique ids per collection (last line wins) and their docs. */
struct coll {
    const struct sk_entity *e;
    char **ids;
    cJSON **docs;
    size_t n;
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every collection of the dataset (the generator writes each id once). */
static void load_all(const char *data, struct coll colls[SK_ENTITY_COUNT], size_t *total)
{
    *total = 0;
    for (size_t i = 0; i < SK_ENTITY_COUNT; i++) {
        colls[i] = (struct coll){.e = sk_entities[i]};
        char *path = skt_fmt("%s/%s.jsonl", data, colls[i].e->collection);
        size_t len = 0;
        char *text = sk_read_file(path, &len);
        free(path);
        if (!text)
            continue;
        size_t cap = 0;
        for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save)) {
            cJSON *doc = cJSON_Parse(line);
            if (!doc)
                continue;
            if (colls[i].n == cap) {
                cap = cap ? cap * 2 : 1024;
                colls[i].ids = realloc(colls[i].ids, cap * sizeof(char *));
                colls[i].docs = realloc(colls[i].docs, cap * sizeof(cJSON *));
            }
            colls[i].ids[colls[i].n] =
                strdup(cJSON_GetObjectItemCaseSensitive(doc, "id")->valuestring);
            colls[i].docs[colls[i].n++] = doc;
        }
        free(text);
        /* the generator writes each id once; check it, so counts mean rows */
        char **sorted = malloc(colls[i].n * sizeof(char *) + 1);
        memcpy(sorted, colls[i].ids, colls[i].n * sizeof(char *));
        qsort(sorted, colls[i].n, sizeof(char *), cmp_str);
        for (size_t k = 1; k < colls[i].n; k++)
            cr_assert_str_neq(sorted[k - 1], sorted[k], "%s: id %s twice in the dataset",
                              colls[i].e->collection, sorted[k]);
        free(sorted);
        *total += colls[i].n;
    }
}

static void free_colls(struct coll colls[SK_ENTITY_COUNT])
{
    for (size_t i = 0; i < SK_ENTITY_COUNT; i++) {
        for (size_t k = 0; k < colls[i].n; k++) {
            free(colls[i].ids[k]);
            cJSON_Delete(colls[i].docs[k]);
        }
        free(colls[i].ids);
        free(colls[i].docs);
    }
}

/* ---- PostgreSQL ------------------------------------------------------------- */

/* postgres-sink table of a collection: camelCase -> snake_case. */
/* "topic[p]=next;..." of skolsync_offsets, sorted. */
static char *pg_offsets(PGconn *c, const char *schema)
{
    char *sql = skt_fmt("SELECT string_agg(topic || '[' || \"partition\" || ']=' || next_offset, "
                        "';' ORDER BY topic, \"partition\") FROM \"%s\".skolsync_offsets",
                        schema);
    PGresult *r = PQexec(c, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
    char *s = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    free(sql);
    return s;
}

/*
 * The committed state at one instant: offsets and row count read under an
 * EXCLUSIVE lock on skolsync_offsets, which a sink transaction needs (ROW
 * EXCLUSIVE) to commit: the sink cannot move while the lock is held. Returns
 * the open connection (the lock stays until it is closed or the server stops).
 */
static PGconn *pg_freeze(const char *schema, char **offsets, long long *rows)
{
    PGconn *c = skt_pg_connect();
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    char *sql = skt_fmt("BEGIN ISOLATION LEVEL READ COMMITTED; "
                        "LOCK TABLE \"%s\".skolsync_offsets IN EXCLUSIVE MODE",
                        schema);
    PGresult *r = PQexec(c, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(c));
    PQclear(r);
    free(sql);
    *offsets = pg_offsets(c, schema);
    *rows = skt_pg_total_rows(c, schema);
    return c;
}

/* Every table equals its collection: same ids, equal docs. */
static void pg_assert_equals_dataset(PGconn *c, const char *schema,
                                     struct coll colls[SK_ENTITY_COUNT])
{
    for (size_t i = 0; i < SK_ENTITY_COUNT; i++) {
        char *t = skt_pg_table(colls[i].e->collection);
        char *sql =
            skt_fmt("SELECT id::text, doc::text FROM \"%s\".\"%s\" ORDER BY id::text", schema, t);
        PGresult *r = PQexec(c, sql);
        cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
        size_t rows = (size_t)PQntuples(r);
        cr_assert_eq(rows, colls[i].n, "%s: %zu rows, %zu in the dataset", t, rows, colls[i].n);
        for (size_t k = 0; k < colls[i].n; k++) {
            /* binary search the sorted result */
            size_t lo = 0, hi = rows;
            const char *id = colls[i].ids[k];
            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                int cmp = strcmp(PQgetvalue(r, (int)mid, 0), id);
                if (cmp < 0)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            cr_assert(lo < rows && strcmp(PQgetvalue(r, (int)lo, 0), id) == 0,
                      "%s %s missing in PostgreSQL", t, id);
            cJSON *doc = cJSON_Parse(PQgetvalue(r, (int)lo, 1));
            if (!skt_json_equal(doc, colls[i].docs[k])) {
                char *want = cJSON_PrintUnformatted(colls[i].docs[k]);
                cr_assert_fail("%s %s differs:\n  in:  %.600s\n  out: %.600s", t, id, want,
                               PQgetvalue(r, (int)lo, 1));
            }
            cJSON_Delete(doc);
        }
        PQclear(r);
        free(sql);
        free(t);
    }
}

/* ---- Kafka end offsets ---------------------------------------------------------- */

/* "topic[p]=end;..." for every partition with data, sorted like pg_offsets. */
static char *kafka_end_offsets(const char *prefix, int partitions)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", skt_brokers(), errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(rk, "%s", errstr);
    /* sorted by topic name, as string_agg ORDER BY topic does (C collation) */
    char *topics[SK_ENTITY_COUNT];
    for (size_t i = 0; i < SK_ENTITY_COUNT; i++)
        topics[i] = skt_fmt("%s%s", prefix, sk_entities[i]->collection);
    qsort(topics, SK_ENTITY_COUNT, sizeof(char *), cmp_str);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    bool first = true;
    for (size_t i = 0; i < SK_ENTITY_COUNT; i++) {
        for (int p = 0; p < partitions; p++) {
            int64_t lo = 0, hi = 0;
            rd_kafka_resp_err_t e =
                rd_kafka_query_watermark_offsets(rk, topics[i], p, &lo, &hi, 10000);
            cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "%s[%d]: %s", topics[i], p,
                         rd_kafka_err2str(e));
            if (hi > 0) {
                fprintf(f, "%s%s[%d]=%lld", first ? "" : ";", topics[i], p, (long long)hi);
                first = false;
            }
        }
        free(topics[i]);
    }
    fclose(f);
    rd_kafka_destroy(rk);
    return out;
}

/* pg_offsets without the rows of empty partitions (next_offset 0). */
static char *drop_zero_offsets(const char *s)
{
    char *copy = strdup(s), *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    bool first = true;
    for (char *save = NULL, *tok = strtok_r(copy, ";", &save); tok;
         tok = strtok_r(NULL, ";", &save)) {
        const char *eq = strrchr(tok, '=');
        if (eq && strcmp(eq, "=0") == 0)
            continue;
        fprintf(f, "%s%s", first ? "" : ";", tok);
        first = false;
    }
    fclose(f);
    free(copy);
    return out;
}

/* The partitions whose stored offset is not Kafka's end offset, one per line. */
__attribute__((noinline)) static char *offsets_diff(const char *stored, const char *ends)
{
    char *copy = strdup(ends), *diff = NULL;
    size_t dl = 0;
    FILE *df = open_memstream(&diff, &dl);
    for (char *save = NULL, *tok = strtok_r(copy, ";", &save); tok;
         tok = strtok_r(NULL, ";", &save)) {
        size_t kl = (size_t)(strrchr(tok, '=') - tok + 1);
        char key[256];
        snprintf(key, sizeof(key), "%.*s", (int)kl, tok);
        const char *at = strstr(stored, key);
        char val[32] = "none";
        if (at)
            snprintf(val, sizeof(val), "%.*s", (int)strcspn(at + kl, ";"), at + kl);
        if (strcmp(val, tok + kl) != 0)
            fprintf(df, "  %s Kafka end %s, stored %s\n", key, tok + kl, val);
    }
    fclose(df);
    free(copy);
    return diff;
}

/* ---- a: PostgreSQL down for 30 s --------------------------------------------------- */

#define PG_OUTAGE_S 30
#define RSS_BOUND_KIB (32 * 1024)

Test(target_outage, postgres_down_30s_mid_sync, .timeout = 300, .fini = cleanup)
{
    char *dir = skt_tmpdir("outage-pg");
    char *data = skt_fmt("%s/data", dir);
    char *cfg = skt_fmt("%s/skolsync.yaml", dir);
    char *log = skt_fmt("%s/daemon.log", dir);
    char *prefix = skt_unique_prefix();
    char *suffix = strndup(prefix + 1, 8);
    char *schema = skt_fmt("outage_%s", suffix);
    char *sink = skt_fmt("pg-%s", suffix);
    skt_generate(data, 43, 600);
    struct coll colls[SK_ENTITY_COUNT];
    size_t total = 0;
    load_all(data, colls, &total);
    cr_log_info("outage-pg: dataset %zu records, schema %s, log %s", total, schema, log);

    char *head = skt_config_head(prefix, "info", "20s");
    char *text = skt_fmt("%s"
                         "sources:\n"
                         "  files-%s:\n"
                         "    type: jsonl-source\n"
                         "    path: %s\n"
                         "    batch_size: 500\n"
                         "    poll_interval: 1s\n"
                         "sinks:\n"
                         "  %s:\n"
                         "    type: postgres-sink\n"
                         "    conninfo: ${env:SK_TEST_PG}\n"
                         "    schema: %s\n"
                         "    connect_timeout: 2s\n"
                         "    batch_size: 200\n"
                         "    retry_backoff: 200ms\n"
                         "    retry_backoff_max: 2s\n",
                         head, suffix, data, sink, schema);
    skt_write(cfg, text);
    free(text);
    free(head);

    char *argv[] = {(char *)skt_skolsync(), "run", "-c", cfg, NULL};
    g_daemon = skt_spawn(argv, log);
    int port = wait_admin_port(log, g_daemon);

    /* Wait until some rows are in, but far from all. */
    PGconn *c = NULL;
    long long rows = -1;
    int64_t t0 = now_ms();
    for (;;) {
        cr_assert(alive(g_daemon), "the daemon exited (log %s)", log);
        cr_assert_lt(now_ms() - t0, 120000, "no rows in %s after 120 s (log %s)", schema, log);
        if (!c || PQstatus(c) != CONNECTION_OK) {
            PQfinish(c);
            c = skt_pg_connect();
        }
        rows = skt_pg_total_rows(c, schema);
        if (rows >= 2000)
            break;
        usleep(50000);
    }
    PQfinish(c);

    /* Freeze the committed state, then stop the server (the lock dies with it). */
    char *off_before = NULL;
    long long rows_before = 0;
    PGconn *lock = pg_freeze(schema, &off_before, &rows_before);
    cr_assert_lt(rows_before, (long long)total,
                 "the sync finished before the outage (%lld rows): make the dataset bigger",
                 rows_before);
    long rss_start = rss_kib(g_daemon);
    g_pg_stopped = true;
    int64_t t_stop = now_ms();
    cr_assert_eq(pg_script("stop --keep-data"), 0);
    struct timespec stopped;
    clock_gettime(CLOCK_REALTIME, &stopped);
    PQfinish(lock);
    cr_log_info("outage-pg: PostgreSQL stopped at %lld of %zu rows (%.1f s into the sync), "
                "daemon VmRSS %ld KiB",
                rows_before, total, (t_stop - t0) / 1000.0, rss_start);

    /* 30 s down: sample the daemon's RSS every second. */
    long rss_max = rss_start, rss_min = rss_start;
    for (int s = 0; s < PG_OUTAGE_S; s++) {
        sleep(1);
        cr_assert(alive(g_daemon), "the daemon died during the outage (log %s)", log);
        long v = rss_kib(g_daemon);
        rss_max = v > rss_max ? v : rss_max;
        rss_min = v < rss_min ? v : rss_min;
    }
    long long retries_during = metric(port, "skolsync_retries_total", sink);
    cr_log_info("outage-pg: RSS during %d s outage: start %ld KiB, min %ld, max %ld "
                "(growth %+ld KiB); retries so far %lld",
                PG_OUTAGE_S, rss_start, rss_min, rss_max, rss_max - rss_start, retries_during);
    if (RSS_CHECKED)
        cr_assert_lt(rss_max - rss_start, RSS_BOUND_KIB,
                     "RSS grew by %ld KiB during the outage (bound %d KiB)", rss_max - rss_start,
                     RSS_BOUND_KIB);
    cr_assert_gt(retries_during, 0, "no retries counted during the outage");

    /* Back up: the state is exactly what was committed before the stop. */
    cr_assert_eq(pg_script("start"), 0);
    g_pg_stopped = false;
    int64_t t_up = now_ms();
    char *off_after = NULL;
    long long rows_after = 0;
    lock = pg_freeze(schema, &off_after, &rows_after);
    PQfinish(lock);
    cr_log_info("outage-pg: outage lasted %.1f s", (t_up - t_stop) / 1000.0);
    if (strcmp(off_after, off_before) == 0) {
        cr_assert_eq(rows_after, rows_before, "rows changed although the offsets did not");
        cr_log_info("outage-pg: offsets and rows unchanged across the outage (%lld rows)",
                    rows_after);
    } else {
        /* The sink was quicker than the snapshot: every changed offset row must
         * have moved forward only, and been written after the restart - or in
         * the shutdown itself: a fast shutdown ends our lock's session, and the
         * sink's transaction waiting for that lock may commit before its own
         * session is ended (seen once in CI). Nothing is written while down. */
        c = skt_pg_connect();
        char *sql = skt_fmt("SELECT topic || '[' || \"partition\" || ']=', next_offset, "
                            "updated_at >= pg_postmaster_start_time(), "
                            "updated_at <= to_timestamp(%lld.%03ld) "
                            "FROM \"%s\".skolsync_offsets",
                            (long long)stopped.tv_sec, stopped.tv_nsec / 1000000, schema);
        PGresult *r = PQexec(c, sql);
        cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
        for (int i = 0; i < PQntuples(r); i++) {
            char *item = skt_fmt("%s%s", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
            const char *was = strstr(off_before, PQgetvalue(r, i, 0));
            if (!strstr(off_before, item)) {
                bool after_restart = strcmp(PQgetvalue(r, i, 2), "t") == 0;
                bool in_shutdown = strcmp(PQgetvalue(r, i, 3), "t") == 0;
                cr_assert(after_restart || in_shutdown,
                          "offset %s changed while PostgreSQL was down", item);
                if (!after_restart)
                    cr_log_info("outage-pg: offset %s was committed during the shutdown", item);
                if (was)
                    cr_assert_geq(atoll(PQgetvalue(r, i, 1)),
                                  atoll(was + strlen(PQgetvalue(r, i, 0))),
                                  "offset %s went backwards", item);
            }
            free(item);
        }
        PQclear(r);
        free(sql);
        PQfinish(c);
        c = NULL;
        cr_log_info("outage-pg: the sink resumed before the snapshot; changed offsets were all "
                    "written after the restart or during the shutdown");
    }

    /* Converge (bounded). */
    c = NULL;
    for (;;) {
        cr_assert(alive(g_daemon), "the daemon exited after the outage (log %s)", log);
        cr_assert_lt(now_ms() - t_up, 180000,
                     "not converged 180 s after the restart: %lld "
                     "of %zu rows (log %s)",
                     rows, total, log);
        if (!c || PQstatus(c) != CONNECTION_OK) {
            PQfinish(c);
            c = skt_pg_connect();
        }
        rows = skt_pg_total_rows(c, schema);
        if (rows == (long long)total)
            break;
        usleep(200000);
    }
    int64_t t_conv = now_ms();
    cr_log_info("outage-pg: converged %.1f s after PostgreSQL came back (%zu rows)",
                (t_conv - t_up) / 1000.0, total);

    /* Offsets end at the topics' ends (the sink marks ends past transaction markers). */
    char *ends = kafka_end_offsets(prefix, 3);
    char *offs = NULL;
    for (;;) {
        char *raw = pg_offsets(c, schema);
        char *cand = drop_zero_offsets(raw);
        free(raw);
        if (strcmp(cand, ends) == 0 || now_ms() - t_conv > 30000) {
            offs = cand;
            break;
        }
        free(cand);
        usleep(200000);
    }
    /* asserted last, so a difference does not hide the other checks */
    char *offs_diff = strcmp(offs, ends) != 0 ? offsets_diff(offs, ends) : NULL;

    /* The database equals the dataset, doc by doc. */
    pg_assert_equals_dataset(c, schema, colls);

    long long retries = metric(port, "skolsync_retries_total", sink);
    long long applied = metric(port, "skolsync_records_total", sink);
    cr_log_info("outage-pg: /metrics: retries %lld, records applied %lld", retries, applied);
    cr_assert_gt(retries, 0);
    cr_assert_geq(applied, (long long)total);

    kill(g_daemon, SIGTERM);
    int rc = skt_wait(g_daemon, 40000);
    g_daemon = rc == -2 ? g_daemon : -1;
    cr_assert_eq(rc, 0, "daemon exit after SIGTERM: %d (log %s)", rc, log);

    cr_assert_null(offs_diff, "stored offsets are not the topics' end offsets:\n%s", offs_diff);
    char *sql = skt_fmt("SET client_min_messages TO warning; DROP SCHEMA \"%s\" CASCADE", schema);
    PQclear(PQexec(c, sql));
    free(sql);
    PQfinish(c);
    free_colls(colls);
}

/* ---- b: the SCIM server down for 30 s behind flaky_proxy ------------------------------ */

static int proxy_start(const char *dir)
{
    const char *up = getenv("SK_TEST_SCIM");
    cr_assert(up && *up, "SK_TEST_SCIM is not set: run under scripts/with-testenv.sh");
    char *log = skt_fmt("%s/proxy.log", dir);
    char *script = skt_fmt("%s/tests/fixtures/flaky_proxy.py", SK_SOURCE_DIR);
    char *argv[] = {"python3", script, "--upstream", (char *)up, NULL};
    g_proxy = skt_spawn(argv, log);
    int port = skt_listening_port(g_proxy, log, 10000, "flaky_proxy.py");
    free(script);
    free(log);
    return port;
}

static void proxy_mode(int port, const char *mode)
{
    char *url = skt_fmt("http://127.0.0.1:%d/_proxy/mode", port);
    char *body = skt_fmt("{\"mode\":\"%s\"}", mode);
    long st = skt_http("POST", url, body, 20, NULL);
    cr_assert_eq(st, 200, "setting proxy mode %s: HTTP %ld", mode, st);
    free(body);
    free(url);
}

/* What the SCIM sink must provision (username_from: id, users [students, staff],
 * groups [Klass, Undervisning], today's date): sorted lines "U <id>" and
 * "G <id> <member id>,<member id>,...". */
static const char expected_py[] =
    "import json,sys,datetime\n"
    "d=sys.argv[1]; today=datetime.date.today().isoformat()\n"
    "def load(c): return [json.loads(l) for l in open(f'{d}/{c}.jsonl',encoding='utf-8') if "
    "l.strip()]\n"
    "def cur(x): return not x.get('endDate') or x['endDate']>=today\n"
    "users=set()\n"
    "for p in load('persons'):\n"
    "  if any(not e.get('cancelled') and cur(e) for e in p.get('enrolments',[])): "
    "users.add(p['id'])\n"
    "for du in load('duties'):\n"
    "  if cur(du): users.add(du['person']['id'])\n"
    "out=['U '+u for u in users]\n"
    "for g in load('groups'):\n"
    "  if g.get('groupType') not in ('Klass','Undervisning'): continue\n"
    "  m=sorted({x['person']['id'] for x in g.get('groupMemberships',[]) if cur(x) and "
    "x['person']['id'] in users})\n"
    "  out.append('G '+g['id']+' '+','.join(m))\n"
    "print('\\n'.join(sorted(out)))\n";

/* The same lines from the server (only this dataset's externalIds); dups counted. */
static char *scim_actual(const char *dataset_text, size_t *dups, char *dup_id, size_t dup_sz)
{
    const char *base = getenv("SK_TEST_SCIM");
    cJSON *users = cJSON_CreateArray(), *groups = cJSON_CreateArray();
    for (int kind = 0; kind < 2; kind++) {
        cJSON *into = kind ? groups : users;
        int start = 1;
        for (int page = 0; page < 1000; page++) {
            char *url =
                skt_fmt("%s/%s?startIndex=%d&count=500", base, kind ? "Groups" : "Users", start);
            char *body = NULL;
            long st = skt_http("GET", url, NULL, 20, &body);
            cr_assert_eq(st, 200, "GET %s: %ld", url, st);
            cJSON *list = cJSON_Parse(body);
            cr_assert_not_null(list);
            cJSON *res = cJSON_GetObjectItemCaseSensitive(list, "Resources");
            int got = cJSON_GetArraySize(res);
            int total = cJSON_GetObjectItemCaseSensitive(list, "totalResults")->valueint;
            /* index paging over a list that changes while the sink works can
             * return a resource twice: keep each SCIM id once */
            while (res && res->child) {
                cJSON *x = cJSON_DetachItemViaPointer(res, res->child);
                const cJSON *xid = cJSON_GetObjectItemCaseSensitive(x, "id");
                bool seen = false;
                const cJSON *y;
                cJSON_ArrayForEach(y, into)
                {
                    const cJSON *yid = cJSON_GetObjectItemCaseSensitive(y, "id");
                    if (cJSON_IsString(xid) && cJSON_IsString(yid) &&
                        strcmp(xid->valuestring, yid->valuestring) == 0) {
                        seen = true;
                        break;
                    }
                }
                if (seen)
                    cJSON_Delete(x);
                else
                    cJSON_AddItemToArray(into, x);
            }
            cJSON_Delete(list);
            free(body);
            free(url);
            start += got;
            if (got == 0 || start > total)
                break;
        }
    }
    /* SCIM id -> externalId of users; only externalIds of this dataset count
     * (the server is shared with other tests). */
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    *dups = 0;
    size_t n_users = (size_t)cJSON_GetArraySize(users);
    char **ext = calloc(n_users + 1, sizeof(char *));
    char **sid = calloc(n_users + 1, sizeof(char *));
    size_t k = 0;
    const cJSON *u;
    cJSON_ArrayForEach(u, users)
    {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(u, "externalId");
        const cJSON *i = cJSON_GetObjectItemCaseSensitive(u, "id");
        ext[k] = cJSON_IsString(e) ? e->valuestring : "";
        sid[k++] = cJSON_IsString(i) ? i->valuestring : "";
    }
    char **lines = NULL;
    size_t n_lines = 0, cap = 0;
#define ADD_LINE(s)                                                                                \
    do {                                                                                           \
        if (n_lines == cap) {                                                                      \
            cap = cap ? cap * 2 : 1024;                                                            \
            lines = realloc(lines, cap * sizeof(char *));                                          \
        }                                                                                          \
        lines[n_lines++] = (s);                                                                    \
    } while (0)
    for (size_t a = 0; a < n_users; a++) {
        if (!ext[a][0] || !strstr(dataset_text, ext[a]))
            continue;
        for (size_t b = a + 1; b < n_users; b++)
            if (strcmp(ext[a], ext[b]) == 0) {
                (*dups)++;
                snprintf(dup_id, dup_sz, "%s", ext[a]);
            }
        ADD_LINE(skt_fmt("U %s", ext[a]));
    }
    const cJSON *g;
    cJSON_ArrayForEach(g, groups)
    {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(g, "externalId");
        if (!cJSON_IsString(e))
            continue;
        if (!strstr(dataset_text, e->valuestring))
            continue;
        for (const cJSON *h = g->next; h; h = h->next) {
            const cJSON *e2 = cJSON_GetObjectItemCaseSensitive(h, "externalId");
            if (cJSON_IsString(e2) && strcmp(e2->valuestring, e->valuestring) == 0) {
                (*dups)++;
                snprintf(dup_id, dup_sz, "group %s", e->valuestring);
            }
        }
        /* members as externalIds, sorted */
        const cJSON *m;
        char **mem = NULL;
        size_t nm = 0;
        cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(g, "members"))
        {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, "value");
            const char *x = "?";
            for (size_t a = 0; cJSON_IsString(v) && a < n_users; a++)
                if (strcmp(sid[a], v->valuestring) == 0)
                    x = ext[a];
            mem = realloc(mem, (nm + 1) * sizeof(char *));
            mem[nm++] = (char *)x;
        }
        qsort(mem, nm, sizeof(char *), cmp_str);
        char *line = NULL;
        size_t ll = 0;
        FILE *lf = open_memstream(&line, &ll);
        fprintf(lf, "G %s ", e->valuestring);
        for (size_t a = 0; a < nm; a++)
            fprintf(lf, "%s%s", a ? "," : "", mem[a]);
        fclose(lf);
        free(mem);
        ADD_LINE(line);
    }
#undef ADD_LINE
    qsort(lines, n_lines, sizeof(char *), cmp_str);
    for (size_t a = 0; a < n_lines; a++) {
        fprintf(f, "%s%s", a ? "\n" : "", lines[a]);
        free(lines[a]);
    }
    fclose(f);
    free(lines);
    free(ext);
    free(sid);
    cJSON_Delete(users);
    cJSON_Delete(groups);
    return out;
}

/* First differing line of two sorted line lists, for the failure message. */
static void first_difference(const char *a, const char *b, char *why, size_t sz)
{
    size_t i = 0;
    while (a[i] && a[i] == b[i])
        i++;
    size_t ls = i;
    while (ls > 0 && a[ls - 1] != '\n')
        ls--;
    snprintf(why, sz, "expected ...%.200s...\n  server   ...%.200s...", a + ls, b + ls);
}

#define SCIM_REFUSE_S 12
#define SCIM_HANG_S 6
#define SCIM_503_S 12

Test(target_outage, scim_down_30s_behind_flaky_proxy, .timeout = 300, .fini = cleanup)
{
    char *dir = skt_tmpdir("outage-scim");
    char *data = skt_fmt("%s/data", dir);
    char *cfg = skt_fmt("%s/skolsync.yaml", dir);
    char *log = skt_fmt("%s/daemon.log", dir);
    char *prefix = skt_unique_prefix();
    char *suffix = strndup(prefix + 1, 8);
    char *sink = skt_fmt("scim-%s", suffix);
    skt_generate(data, 47, 250);
    char *py = skt_fmt("%s/expected.py", dir);
    skt_write(py, expected_py);
    char *cmd = skt_fmt("python3 %s %s", py, data);
    char *expected = NULL;
    cr_assert_eq(skt_sh(cmd, 60, &expected), 0, "%s", expected);
    for (size_t l = strlen(expected); l > 0 && expected[l - 1] == '\n'; l--)
        expected[l - 1] = '\0';
    size_t n_exp_users = 0, n_exp_groups = 0;
    for (const char *p = expected; *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p))
        *(*p == 'U' ? &n_exp_users : &n_exp_groups) += 1;
    /* a resource is this dataset's if its externalId is an id of the dataset */
    char *pfile = skt_fmt("%s/persons.jsonl", data), *gfile = skt_fmt("%s/groups.jsonl", data);
    size_t l1, l2;
    char *ptext = sk_read_file(pfile, &l1), *gtext = sk_read_file(gfile, &l2);
    char *expected_nl = skt_fmt("%s\n%s", ptext, gtext);
    free(ptext);
    free(gtext);
    free(pfile);
    free(gfile);
    cr_log_info("outage-scim: expecting %zu Users and %zu Groups; log %s", n_exp_users,
                n_exp_groups, log);

    int pport = proxy_start(dir);
    char *head = skt_config_head(prefix, "info", "20s");
    char *text = skt_fmt("%s"
                         "sources:\n"
                         "  files-%s:\n"
                         "    type: jsonl-source\n"
                         "    path: %s\n"
                         "    batch_size: 500\n"
                         "    poll_interval: 1s\n"
                         "sinks:\n"
                         "  %s:\n"
                         "    type: scim-sink\n"
                         "    entities: [persons, duties, groups]\n"
                         "    url: http://127.0.0.1:%d/v2\n"
                         "    username_from: id\n"
                         "    state_dir: %s/scim-state\n"
                         "    timeout: 5s\n"
                         "    retry_after_max: 2s\n"
                         "    batch_size: 50\n"
                         "    retry_backoff: 200ms\n"
                         "    retry_backoff_max: 2s\n",
                         head, suffix, data, sink, pport, dir);
    skt_write(cfg, text);
    free(text);
    free(head);

    char *argv[] = {(char *)skt_skolsync(), "run", "-c", cfg, NULL};
    g_daemon = skt_spawn(argv, log);
    int port = wait_admin_port(log, g_daemon);

    /* Mid-sync: once the sink applied something, the server goes away. */
    int64_t t0 = now_ms();
    long long applied = 0;
    for (;;) {
        cr_assert(alive(g_daemon), "the daemon exited (log %s)", log);
        cr_assert_lt(now_ms() - t0, 120000, "the SCIM sink applied nothing in 120 s (log %s)", log);
        applied = metric(port, "skolsync_records_total", sink);
        if (applied > 0)
            break;
        usleep(20000);
    }
    proxy_mode(pport, "refuse");
    int64_t t_down = now_ms();
    long rss_start = rss_kib(g_daemon), rss_max = rss_start;
    cr_log_info("outage-scim: down after %lld records applied (%.1f s into the sync)", applied,
                (t_down - t0) / 1000.0);
    struct {
        const char *mode;
        int secs;
    } phases[] = {{"refuse", SCIM_REFUSE_S}, {"hang", SCIM_HANG_S}, {"503", SCIM_503_S}};
    for (size_t ph = 0; ph < 3; ph++) {
        proxy_mode(pport, phases[ph].mode);
        for (int s = 0; s < phases[ph].secs; s++) {
            sleep(1);
            cr_assert(alive(g_daemon), "the daemon died during the outage (log %s)", log);
            long v = rss_kib(g_daemon);
            rss_max = v > rss_max ? v : rss_max;
        }
    }
    long long applied_down = metric(port, "skolsync_records_total", sink);
    proxy_mode(pport, "up");
    int64_t t_up = now_ms();
    char *pstat = NULL;
    char *purl = skt_fmt("http://127.0.0.1:%d/_proxy/mode", pport);
    skt_http("GET", purl, NULL, 20, &pstat);
    cr_log_info("outage-scim: %.1f s down (refuse %d s, hang %d s, 503 %d s); proxy %s; "
                "RSS %ld -> max %ld KiB",
                (t_up - t_down) / 1000.0, SCIM_REFUSE_S, SCIM_HANG_S, SCIM_503_S, pstat, rss_start,
                rss_max);
    cJSON *ps = cJSON_Parse(pstat);
    cr_assert_gt(cJSON_GetObjectItemCaseSensitive(ps, "refused")->valueint, 0,
                 "the sink never met a refused connection");
    cr_assert_gt(cJSON_GetObjectItemCaseSensitive(ps, "unavailable")->valueint, 0,
                 "the sink never met a 503");
    cJSON_Delete(ps);
    free(pstat);
    if (RSS_CHECKED)
        cr_assert_lt(rss_max - rss_start, RSS_BOUND_KIB);

    /* Drained (bounded): every record of the three topics applied or dead-lettered,
     * watched through /metrics so the SCIM server is not loaded by the test. */
    long long want = 0;
    const char *colls[] = {"persons", "duties", "groups"};
    for (size_t i = 0; i < 3; i++) {
        char *f = skt_fmt("%s/%s.jsonl", data, colls[i]);
        size_t len;
        char *t = sk_read_file(f, &len);
        for (char *q = t; q && *q; q++)
            want += *q == '\n';
        free(t);
        free(f);
    }
    for (;;) {
        cr_assert(alive(g_daemon), "the daemon exited after the outage (log %s)", log);
        long long done = metric(port, "skolsync_records_total", sink) +
                         metric(port, "skolsync_records_dead_lettered_total", sink);
        if (done >= want)
            break;
        cr_assert_lt(now_ms() - t_up, 150000,
                     "the SCIM sink handled %lld of %lld records "
                     "150 s after the outage (log %s)",
                     done, want, log);
        usleep(250000);
    }
    cr_log_info("outage-scim: sink drained %.1f s after the server came back (%lld records)",
                (now_ms() - t_up) / 1000.0, want);

    /* Converge (bounded): the server holds exactly the expected Users and Groups. */
    char *actual = NULL;
    size_t dups = 0;
    char dup_id[128] = "";
    for (;;) {
        cr_assert(alive(g_daemon), "the daemon exited after the outage (log %s)", log);
        free(actual);
        actual = scim_actual(expected_nl, &dups, dup_id, sizeof(dup_id));
        cr_assert_eq(dups, 0,
                     "%zu duplicate resource(s) on the SCIM server (two ids, one "
                     "externalId), e.g. %s",
                     dups, dup_id);
        if (strcmp(actual, expected) == 0)
            break;
        if (now_ms() - t_up > 180000) {
            char why[600];
            first_difference(expected, actual, why, sizeof(why));
            cr_assert_fail("the SCIM server does not hold the expected set 180 s after the "
                           "outage (log %s):\n  %s",
                           log, why);
        }
        sleep(2);
    }
    cr_log_info("outage-scim: converged %.1f s after the server came back; "
                "records applied: %lld before the outage, %lld at its end",
                (now_ms() - t_up) / 1000.0, applied, applied_down);
    long long retries = metric(port, "skolsync_retries_total", sink);
    cr_log_info("outage-scim: /metrics: retries %lld", retries);
    cr_assert_gt(retries, 0, "no retries counted");
    cr_assert_eq(metric(port, "skolsync_records_dead_lettered_total", sink), 0,
                 "records were dead-lettered during the outage (log %s)", log);

    kill(g_daemon, SIGTERM);
    int rc = skt_wait(g_daemon, 40000);
    g_daemon = rc == -2 ? g_daemon : -1;
    cr_assert_eq(rc, 0, "daemon exit after SIGTERM: %d (log %s)", rc, log);
    free(actual);
    free(expected);
    free(expected_nl);
    free(purl);
    free(cmd);
    free(py);
}

/*
 * sqlite-sink: its database locked by another process for 15 s mid-sync
 * (BEGIN EXCLUSIVE) is the file-database form of "target down": the sink
 * gets SQLITE_BUSY, pauses and retries, commits nothing meanwhile, and the
 * database converges once the lock goes.
 */
Test(target_outage, sqlite_locked_15s_mid_sync, .timeout = 240, .fini = cleanup)
{
    char *dir = skt_tmpdir("outage-sqlite");
    char *data = skt_fmt("%s/data", dir), *db = skt_fmt("%s/out.db", dir);
    char *cfg = skt_fmt("%s/skolsync.yaml", dir), *log = skt_fmt("%s/daemon.log", dir);
    skt_generate(data, 44, 400);
    char *text = skt_fmt("kafka:\n  brokers: embedded\nadmin:\n  listen: 127.0.0.1:0\n"
                         "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                         "    batch_size: 500\n"
                         "sinks:\n  db:\n    type: sqlite-sink\n    path: %s\n"
                         "    busy_timeout: 200ms\n    batch_size: 200\n"
                         "    retry_backoff_max: 2s\n",
                         data, db);
    skt_write(cfg, text);
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", cfg, NULL};
    pid_t pid = skt_spawn(argv, log);
    int port = skt_logged_port(log, 20000);
    cr_assert_gt(port, 0);
    sqlite3 *lock = NULL;
    long long rows_before = 0;
    for (int i = 0; i < 300 && rows_before < 1000; i++) {
        usleep(100000);
        if (!lock && sqlite3_open(db, &lock) != SQLITE_OK) {
            sqlite3_close(lock);
            lock = NULL;
            continue;
        }
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(lock, "SELECT count(*) FROM attendances", -1, &st, NULL) ==
                SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            rows_before = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    cr_assert_geq(rows_before, 1000, "the sync never got going (log %s)", log);
    sqlite3_busy_timeout(lock, 10000);
    cr_assert_eq(sqlite3_exec(lock, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(lock));
    long rss_start = rss_kib(pid), rss_max = rss_start;
    for (int s = 0; s < 15; s++) {
        sleep(1);
        long rss = rss_kib(pid);
        if (rss > rss_max)
            rss_max = rss;
    }
    long long retries = metric(port, "skolsync_retries_total", "db");
    cr_assert_eq(sqlite3_exec(lock, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(lock);
    cr_log_info("locked at %lld attendances; RSS %ld -> %ld KiB; %lld retries", rows_before,
                rss_start, rss_max, retries);
    cr_assert_gt(retries, 0, "the sink did not retry while the database was locked");
    if (RSS_CHECKED)
        cr_assert_lt(rss_max - rss_start, RSS_BOUND_KIB);
    char why[2048] = "";
    bool equal = skt_db_converges(db, data, 60000, why, sizeof(why));
    kill(pid, SIGTERM);
    int rc = skt_wait(pid, 30000);
    cr_assert(equal, "did not converge after the lock: %s (log %s)", why, log);
    cr_assert_eq(rc, 0);
}

/* ---- a retry that a rebalance took away ------------------------------------- */

/* The sink's state and partition count from GET /api/v1/connectors/NAME;
 * its group into group (if not NULL). false if the daemon did not answer. */
static bool sink_view(int port, const char *name, char *state, size_t size, int *parts, char *group,
                      size_t group_size)
{
    char *path = skt_fmt("/api/v1/connectors/%s", name);
    cJSON *o = skt_get_json(port, path);
    free(path);
    if (!o)
        return false;
    snprintf(state, size, "%s", skt_jstr(o, "state"));
    *parts = (int)skt_jnum(o, "partitions");
    if (group)
        snprintf(group, group_size, "%s", skt_jstr(o, "group"));
    cJSON_Delete(o);
    return true;
}

/* A static member of group for topic whose instance id sorts before the
 * daemon's: under the round-robin assignor it is dealt a partition first. */
static rd_kafka_t *intruder(const char *group, const char *topic, int i)
{
    char errstr[256], id[32];
    snprintf(id, sizeof(id), "0-intruder-%d", i);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    cr_assert(
        !rd_kafka_conf_set(conf, "bootstrap.servers", skt_brokers(), errstr, sizeof(errstr)) &&
            !rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)) &&
            !rd_kafka_conf_set(conf, "group.instance.id", id, errstr, sizeof(errstr)) &&
            !rd_kafka_conf_set(conf, "partition.assignment.strategy", "roundrobin", errstr,
                               sizeof(errstr)) &&
            !rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr)) &&
            /* a static member's close does not leave the group: its
             * partitions move on when its session ends */
            !rd_kafka_conf_set(conf, "session.timeout.ms", "6000", errstr, sizeof(errstr)),
        "%s", errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(rk, "%s", errstr);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(t, topic, RD_KAFKA_PARTITION_UA);
    cr_assert_eq(rd_kafka_subscribe(rk, t), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(t);
    return rk;
}

/*
 * A node's sink retries a batch while its target is down, and the group
 * gives its partitions to other members (other nodes) meanwhile: the retry
 * is given up, nothing is committed, and the node has nothing left to apply.
 * It must not go on saying "retrying" (and /ready 503) with the old error
 * once its target works: before, it did so until a batch succeeded, which
 * never came. The members here are three consumers of the test whose
 * instance ids sort first; when they leave, the sink applies every person.
 */
Test(target_outage, a_retry_taken_away_by_a_rebalance_leaves_the_sink_ready, .timeout = 240,
     .fini = cleanup)
{
    enum { PARTS = 3 };
    char *dir = skt_tmpdir("outage-handover");
    char *data = skt_fmt("%s/data", dir), *db = skt_fmt("%s/out.db", dir);
    char *cfg = skt_fmt("%s/skolsync.yaml", dir), *log = skt_fmt("%s/daemon.log", dir);
    char *persons = skt_fmt("%s/persons-only", dir);
    skt_generate(data, 46, 300);
    cr_assert_eq(mkdir(persons, 0700), 0);
    char *cp = skt_fmt("cp %s/persons.jsonl %s/", data, persons);
    cr_assert_eq(skt_sh(cp, 30, NULL), 0);
    char *prefix = skt_unique_prefix();
    char *text = skt_fmt("kafka:\n  brokers: %s\n  topic_prefix: %s\n  partitions: %d\n"
                         "  connect_timeout: 20s\n  shared_consumer: false\n"
                         "admin:\n  listen: 127.0.0.1:0\nlog:\n  level: info\n"
                         "shutdown_timeout: 10s\n"
                         "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                         "sinks:\n  db:\n    type: sqlite-sink\n    path: %s\n"
                         "    entities: [Person]\n    busy_timeout: 100ms\n"
                         "    retry_backoff_max: 2s\n",
                         skt_brokers(), prefix, PARTS, data, db);
    skt_write(cfg, text);
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", cfg, NULL};
    g_daemon = skt_spawn(argv, log);

    /* Locked as soon as the sink made its tables: its first batch meets it. */
    sqlite3 *lock = skt_sqlite_lock_once_made(db, 30000);
    cr_assert_not_null(lock, "the sink made no tables in 30 s (log %s)", log);
    int port = wait_admin_port(log, g_daemon);
    char state[32] = "", group[256] = "";
    int parts = -1;
    int64_t t0 = now_ms();
    while (!(sink_view(port, "db", state, sizeof(state), &parts, group, sizeof(group)) &&
             strcmp(state, "retrying") == 0 && parts == PARTS)) {
        cr_assert(alive(g_daemon), "the daemon exited (log %s)", log);
        cr_assert_lt(now_ms() - t0, 60000,
                     "the sink never retried with its %d partitions: %s, %d (log %s)", PARTS, state,
                     parts, log);
        usleep(100000);
    }

    /* Three members whose instance ids sort first take the three partitions. */
    char *topic = skt_fmt("%spersons", prefix); /* the prefix ends in its dot */
    rd_kafka_t *others[PARTS];
    for (int i = 0; i < PARTS; i++)
        others[i] = intruder(group, topic, i);
    int theirs = 0;
    t0 = now_ms();
    while (theirs != PARTS || parts != 0) {
        cr_assert_lt(now_ms() - t0, 60000,
                     "the group never gave the test's members every partition: they have %d, "
                     "the sink %d (log %s)",
                     theirs, parts, log);
        theirs = 0;
        for (int i = 0; i < PARTS; i++) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(others[i], 50);
            if (m)
                rd_kafka_message_destroy(m);
            rd_kafka_topic_partition_list_t *a = NULL;
            if (rd_kafka_assignment(others[i], &a) == RD_KAFKA_RESP_ERR_NO_ERROR) {
                theirs += a->cnt;
                rd_kafka_topic_partition_list_destroy(a);
            }
        }
        sink_view(port, "db", state, sizeof(state), &parts, NULL, 0);
    }
    long long rows = -1; /* on the test's connection: it holds the lock */
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(lock, "SELECT count(*) FROM persons", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        rows = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    cr_log_info("handover: the test's members hold every partition; the sink %s, %lld persons "
                "applied",
                state, rows);

    /* The target works again, and the sink has nothing to retry: ready. */
    cr_assert_eq(sqlite3_exec(lock, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(lock);
    char *ready_url = skt_fmt("http://127.0.0.1:%d/ready", port);
    long ready = 0;
    t0 = now_ms();
    while (now_ms() - t0 < 15000) {
        for (int i = 0; i < PARTS; i++) { /* the test's members stay in the group */
            rd_kafka_message_t *m = rd_kafka_consumer_poll(others[i], 50);
            if (m)
                rd_kafka_message_destroy(m);
        }
        sink_view(port, "db", state, sizeof(state), &parts, NULL, 0);
        char *body = NULL;
        ready = skt_http("GET", ready_url, NULL, 10, &body);
        free(body);
        if (ready == 200 && strcmp(state, "retrying") != 0)
            break;
    }
    cr_assert_eq(parts, 0, "the sink was given partitions back meanwhile (log %s)", log);
    cr_assert_neq(strcmp(state, "retrying"), 0,
                  "the sink still says retrying 15 s after its target works, with no "
                  "partition to apply (log %s)",
                  log);
    cr_assert_eq(ready, 200, "/ready still %ld (log %s)", ready, log);

    /* They leave: the sink gets its partitions back and applies every person. */
    for (int i = 0; i < PARTS; i++) {
        rd_kafka_consumer_close(others[i]);
        rd_kafka_destroy(others[i]);
    }
    char why[2048] = "";
    bool equal = skt_db_converges(db, persons, 120000, why, sizeof(why));
    cr_assert(equal, "the persons did not converge after the test's members left: %s (log %s)", why,
              log);
    cr_assert_eq(skt_stop(&g_daemon, 30000), 0);
    free(ready_url);
    free(topic);
    free(text);
    free(prefix);
    free(cp);
    free(persons);
    free(log);
    free(cfg);
    free(db);
    free(data);
    free(dir);
}
