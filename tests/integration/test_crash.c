/*
 * test_crash.c: kill -9 the daemon at random points while it syncs a
 * generated dataset from the SS 12000 test server
 * (tests/fixtures/ss12000_server.py) through the real Kafka broker into
 * PostgreSQL, restart it each time, and check at the end that every table
 * equals the server's current data (GET /_control/dump): no lost row, no
 * duplicate, no stale version.
 *
 * One Criterion test per trial. Each trial has its own seed (logged: replay
 * with SK_CRASH_SEED=<seed> SK_CRASH_TRIALS=1), which picks the dataset, the
 * kill points and the mutations; its own topic prefix, connector names and
 * PostgreSQL schema. Per trial, five kills:
 *
 *   1. at a random time 0.3-2.5 s after the start (often before any row);
 *   2. when the tables hold a random 5-45 % of the dataset;
 *   3. when they hold a random 50-95 %;
 *   4. 0.2-4 s after a first wave of mutations at the server (updates that
 *      bump meta.modified, deletes, creates, a membership change), made
 *      right after the restart, so the full sync may still be running;
 *   5. 0.5-5 s after a second wave (newer versions of wave 1's records too),
 *      made once the sync is (nearly) through, so a delta run is under way.
 *
 * Then the daemon runs until the database equals the server (bounded), and
 * is stopped with SIGTERM (exit 0).
 *
 * Environment: SK_TEST_BROKERS, SK_TEST_PG (scripts/with-testenv.sh);
 * SK_CRASH_TRIALS (default 3), SK_CRASH_STUDENTS (default 200, about
 * 9 700 records), SK_CRASH_SEED (first trial's seed; default from the
 * clock), SK_CRASH_PAGE_SIZE (default 100). scripts/soak.sh runs 20 trials
 * of about 100 000 records.
 *
 * The server and the daemon die with the test process (PR_SET_PDEATHSIG)
 * and are stopped, and the schema dropped, by the suite's fini in every path.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <libpq-fe.h>

#include "model.h"
#include "sk_test.h"
#include "skt_ss12000.h"
#include "util.h"

#define MAX_TRIALS 256

/* ---- processes and schema, cleaned up in every path ---------------------------- */

static pid_t g_server = -1, g_daemon = -1;
static char *g_schema;

static void drop_schema(void)
{
    skt_pg_drop_schema(g_schema);
    free(g_schema);
    g_schema = NULL;
}

static void cleanup(void)
{
    skt_stop(&g_daemon, 20000);
    skt_stop(&g_server, 5000);
    drop_schema();
}

TestSuite(crash, .fini = cleanup);

/* ---- small helpers ------------------------------------------------------------ */

static bool alive(pid_t pid)
{
    return pid > 0 && waitpid(pid, NULL, WNOHANG) == 0;
}

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : dflt;
}

/* ---- PostgreSQL ------------------------------------------------------------------ */

/* postgres-sink table of a collection: camelCase -> snake_case. */
struct expect {
    const char *id;
    const cJSON *doc;
};

static int cmp_expect(const void *a, const void *b)
{
    return strcmp(((const struct expect *)a)->id, ((const struct expect *)b)->id);
}

static const char *modified_of(const cJSON *doc)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(doc, "meta");
    const cJSON *v = m ? cJSON_GetObjectItemCaseSensitive(m, "modified") : NULL;
    return cJSON_IsString(v) ? v->valuestring : "-";
}

/*
 * Every table of the schema equals the dump's collection: the same ids (no
 * lost row, no row the server deleted, no id twice) and every doc equal to
 * the server's current version (no stale version). On a difference: false,
 * with counts and the first example of each kind in why.
 */
static bool pg_equals_dump(PGconn *c, const char *schema, const cJSON *dump, char *why,
                           size_t why_size)
{
    why[0] = '\0';
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(why, why_size, "no connection: %s", PQerrorMessage(c));
        return false;
    }
    bool ok = true;
    size_t used = 0;
    for (size_t i = 0; i < SK_ENTITY_COUNT; i++) {
        const char *coll = sk_entities[i]->collection;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(dump, coll);
        size_t n = arr ? (size_t)cJSON_GetArraySize(arr) : 0;
        struct expect *ex = calloc(n + 1, sizeof(*ex));
        size_t k = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, arr)
        {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
            cr_assert(cJSON_IsString(id), "%s: an entity without an id in the dump", coll);
            ex[k++] = (struct expect){id->valuestring, e};
        }
        qsort(ex, n, sizeof(*ex), cmp_expect);
        char *t = skt_pg_table(coll);
        char *sql =
            skt_fmt("SELECT id::text, doc::text FROM \"%s\".\"%s\" ORDER BY id::text", schema, t);
        PGresult *r = PQexec(c, sql);
        free(sql);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            snprintf(why, why_size, "%s: %s", t, PQerrorMessage(c));
            PQclear(r);
            free(t);
            free(ex);
            return false;
        }
        size_t rows = (size_t)PQntuples(r);
        size_t missing = 0, extra = 0, stale = 0, dup = 0;
        char first_missing[40] = "", first_extra[40] = "", first_dup[40] = "";
        char first_stale[300] = "";
        size_t a = 0, b = 0;
        while (a < n || b < rows) {
            const char *rid = b < rows ? PQgetvalue(r, (int)b, 0) : NULL;
            if (b > 0 && rid && strcmp(rid, PQgetvalue(r, (int)b - 1, 0)) == 0) {
                if (!dup++)
                    snprintf(first_dup, sizeof(first_dup), "%s", rid);
                b++;
                continue;
            }
            int cmp = a >= n ? 1 : !rid ? -1 : strcmp(ex[a].id, rid);
            if (cmp < 0) {
                if (!missing++)
                    snprintf(first_missing, sizeof(first_missing), "%s", ex[a].id);
                a++;
            } else if (cmp > 0) {
                if (!extra++)
                    snprintf(first_extra, sizeof(first_extra), "%s", rid);
                b++;
            } else {
                cJSON *doc = cJSON_Parse(PQgetvalue(r, (int)b, 1));
                if (!skt_json_equal(doc, ex[a].doc)) {
                    if (!stale++)
                        snprintf(first_stale, sizeof(first_stale),
                                 "%s (meta.modified at the server %s, in PostgreSQL %s)", rid,
                                 modified_of(ex[a].doc), doc ? modified_of(doc) : "(not JSON)");
                }
                cJSON_Delete(doc);
                a++;
                b++;
            }
        }
        if (missing || extra || stale || dup) {
            ok = false;
            if (used < why_size)
                used += (size_t)snprintf(
                    why + used, why_size - used,
                    "%s: %zu rows, %zu at the server; %zu lost (e.g. %s), %zu not at the server "
                    "(e.g. %s), %zu duplicated (e.g. %s), %zu stale or different (e.g. %s). ",
                    t, rows, n, missing, first_missing, extra, first_extra, dup, first_dup, stale,
                    first_stale);
        }
        PQclear(r);
        free(t);
        free(ex);
    }
    return ok;
}

/* ---- the daemon ------------------------------------------------------------------ */

struct trial {
    char *dir, *cfg, *log, *schema;
    int port;
    size_t total;
    int starts;
};

static void daemon_start(struct trial *t)
{
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", t->cfg, NULL};
    t->starts++;
    FILE *f = fopen(t->log, "a");
    if (f) {
        fprintf(f, "\n===== test_crash: start %d =====\n", t->starts);
        fclose(f);
    }
    g_daemon = skt_spawn(argv, t->log);
}

static void daemon_kill9(struct trial *t, int no, const char *when, long long rows)
{
    cr_assert(alive(g_daemon), "the daemon exited by itself before kill %d (log %s)", no, t->log);
    kill(g_daemon, SIGKILL);
    int rc = skt_wait(g_daemon, 10000);
    g_daemon = -1;
    cr_assert_eq(rc, 128 + SIGKILL, "kill %d: the daemon ended with %d (log %s)", no, rc, t->log);
    cr_log_info("crash: kill -9 #%d %s (%lld of %zu rows in PostgreSQL)", no, when, rows, t->total);
}

/* Waits until the tables hold at least want rows (bounded). */
static long long wait_rows(struct trial *t, PGconn **c, long long want, int timeout_s)
{
    int64_t t0 = sk_mono_ms();
    long long rows = -1;
    for (;;) {
        cr_assert(alive(g_daemon), "the daemon exited (log %s)", t->log);
        if (!*c || PQstatus(*c) != CONNECTION_OK) {
            PQfinish(*c);
            *c = skt_pg_connect();
        }
        rows = skt_pg_total_rows(*c, t->schema);
        if (rows >= want)
            return rows;
        cr_assert_lt(sk_mono_ms() - t0, (int64_t)timeout_s * 1000,
                     "only %lld of the %lld rows wanted after %d s (log %s)", rows, want, timeout_s,
                     t->log);
        usleep(30000);
    }
}

/* ---- the trials ------------------------------------------------------------------- */

struct trial_param {
    int index, count;
    unsigned seed;
};

ParameterizedTestParameters(crash, kill_9_during_ss12000_sync_into_postgres)
{
    static struct trial_param params[MAX_TRIALS];
    long n = env_long("SK_CRASH_TRIALS", 3);
    if (n < 1)
        n = 1;
    if (n > MAX_TRIALS)
        n = MAX_TRIALS;
    unsigned base = (unsigned)env_long("SK_CRASH_SEED", 0);
    if (!base)
        base = (unsigned)time(NULL) % 1000000u;
    for (long i = 0; i < n; i++)
        params[i] =
            (struct trial_param){.index = (int)i, .count = (int)n, .seed = base + (unsigned)i};
    return cr_make_param_array(struct trial_param, params, (size_t)n);
}

ParameterizedTest(struct trial_param *p, crash, kill_9_during_ss12000_sync_into_postgres,
                  .timeout = 1800)
{
    int students = (int)env_long("SK_CRASH_STUDENTS", 200);
    int page_size = (int)env_long("SK_CRASH_PAGE_SIZE", 100);
    unsigned rng = p->seed;
    int64_t t_start = sk_mono_ms();
    struct trial t = {0};
    t.dir = skt_tmpdir("crash");
    t.cfg = skt_fmt("%s/skolsync.yaml", t.dir);
    t.log = skt_fmt("%s/daemon.log", t.dir);
    char *prefix = skt_unique_prefix();
    char *suffix = strndup(prefix + 1, 8);
    t.schema = skt_fmt("crash_%s", suffix);
    g_schema = strdup(t.schema);
    cr_log_info("crash: trial %d/%d seed %u (replay: SK_CRASH_SEED=%u SK_CRASH_TRIALS=1 "
                "SK_CRASH_STUDENTS=%d), dir %s, schema %s",
                p->index + 1, p->count, p->seed, p->seed, students, t.dir, t.schema);

    t.port = skt_ss_start(t.dir, students, p->seed, &g_server);
    cJSON *dump = skt_ss_dump(t.port);
    t.total = skt_ss_dump_total(dump);
    cJSON_Delete(dump);
    cr_log_info("crash: trial %d: %zu records (%d students), page_size %d", p->index + 1, t.total,
                students, page_size);

    char *head = skt_config_head(prefix, "info", "20s");
    char *text = skt_fmt("%s"
                         "sources:\n"
                         "  sis-%s:\n"
                         "    type: ss12000-source\n"
                         "    url: http://127.0.0.1:%d/v2.0\n"
                         "    page_size: %d\n"
                         "    max_rps: 1000\n"
                         "    poll_interval: 1s\n"
                         "    retry_backoff: 200ms\n"
                         "    retry_backoff_max: 2s\n"
                         "sinks:\n"
                         "  pg-%s:\n"
                         "    type: postgres-sink\n"
                         "    conninfo: ${env:SK_TEST_PG}\n"
                         "    schema: %s\n"
                         "    connect_timeout: 5s\n"
                         "    batch_size: 200\n"
                         "    retry_backoff: 200ms\n"
                         "    retry_backoff_max: 2s\n",
                         head, suffix, t.port, page_size, suffix, t.schema);
    skt_write(t.cfg, text);
    free(text);
    free(head);

    /* a generous bound for any one phase: the full sync of the whole dataset */
    int phase_s = 120 + (int)(t.total / 500);
    PGconn *c = NULL;
    long long rows;

    /* 1: early, at a random time */
    daemon_start(&t);
    int ms = skt_draw(&rng, 300, 2500);
    usleep((useconds_t)ms * 1000);
    daemon_kill9(&t, 1, skt_fmt("%d ms after the start", ms),
                 skt_pg_total_rows(c = skt_pg_connect(), t.schema));

    /* 2, 3: at a random share of the dataset in PostgreSQL */
    int pct[2] = {skt_draw(&rng, 5, 45), skt_draw(&rng, 50, 95)};
    for (int k = 0; k < 2; k++) {
        daemon_start(&t);
        rows = wait_rows(&t, &c, (long long)t.total * pct[k] / 100, phase_s);
        char *when = skt_fmt("at >= %d %% of the dataset", pct[k]);
        daemon_kill9(&t, 2 + k, when, rows);
        free(when);
    }

    /* 4: shortly after a first wave of changes at the server */
    char prev[64][37];
    int n_prev = 0, changes = 0;
    daemon_start(&t);
    changes += skt_ss_mutate(t.port, 1, &rng, prev, &n_prev);
    ms = skt_draw(&rng, 200, 4000);
    usleep((useconds_t)ms * 1000);
    char *when = skt_fmt("%d ms after mutation wave 1", ms);
    daemon_kill9(&t, 4, when, skt_pg_total_rows(c, t.schema));
    free(when);

    /* 5: the sync (nearly) through, a second wave, a delta run under way */
    daemon_start(&t);
    wait_rows(&t, &c, (long long)t.total * 95 / 100, phase_s);
    changes += skt_ss_mutate(t.port, 2, &rng, prev, &n_prev);
    ms = skt_draw(&rng, 500, 5000);
    usleep((useconds_t)ms * 1000);
    when = skt_fmt("%d ms after mutation wave 2", ms);
    daemon_kill9(&t, 5, when, skt_pg_total_rows(c, t.schema));
    free(when);

    /* last restart: wait until PostgreSQL equals the server (bounded) */
    dump = skt_ss_dump(t.port); /* no more changes: this is the final state */
    char *expect = skt_fmt("%s/expect", t.dir);
    skt_dump_write(dump, expect);
    size_t final_total = skt_ss_dump_total(dump);
    daemon_start(&t);
    char why[4096] = "";
    bool ok = false;
    int64_t t0 = sk_mono_ms();
    while (!ok && sk_mono_ms() - t0 < (int64_t)phase_s * 1000) {
        cr_assert(alive(g_daemon), "the daemon exited (log %s)", t.log);
        if (!c || PQstatus(c) != CONNECTION_OK) {
            PQfinish(c);
            c = skt_pg_connect();
        }
        rows = skt_pg_total_rows(c, t.schema);
        /* the full comparison only once the count is right (it is the expensive part) */
        if (rows == (long long)final_total)
            ok = pg_equals_dump(c, t.schema, dump, why, sizeof(why));
        else
            snprintf(why, sizeof(why), "%lld rows, %zu at the server", rows, final_total);
        if (!ok)
            sleep(1);
    }
    if (!ok) /* the last word, even if the count never matched */
        ok = pg_equals_dump(c, t.schema, dump, why, sizeof(why));
    int64_t converge_ms = sk_mono_ms() - t0;
    int rc = skt_stop(&g_daemon, 30000);
    cr_assert(ok,
              "trial %d seed %u: PostgreSQL differs from the server after %d s: %s\n"
              "(server data %s, daemon log %s)",
              p->index + 1, p->seed, phase_s, why, expect, t.log);
    cr_expect_eq(rc, 0, "the daemon did not stop cleanly on SIGTERM (%d); log %s", rc, t.log);
    /* The comparison itself must see a lost row and a stale version. */
    const char *victim =
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(dump, "persons"), 0), "id")
            ->valuestring;
    const char *older =
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(dump, "persons"), 1), "id")
            ->valuestring;
    char *sql = skt_fmt("DELETE FROM \"%s\".persons WHERE id = '%s'; "
                        "UPDATE \"%s\".persons SET doc = jsonb_set(doc, '{meta,modified}', "
                        "'\"2001-01-01T00:00:00+01:00\"') WHERE id = '%s'",
                        t.schema, victim, t.schema, older);
    PGresult *r = PQexec(c, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(c));
    PQclear(r);
    free(sql);
    cr_assert_not(pg_equals_dump(c, t.schema, dump, why, sizeof(why)),
                  "the comparison missed a change");
    cr_assert(strstr(why, "1 lost") && strstr(why, "1 stale"), "the comparison said: %s", why);

    cr_log_info("crash: trial %d seed %u passed: %zu records (%zu at the end, %d changes in 2 "
                "waves), 5 kills, converged %lld ms after the last restart, %lld s in all",
                p->index + 1, p->seed, t.total, final_total, changes, (long long)converge_ms,
                (long long)((sk_mono_ms() - t_start) / 1000));
    PQfinish(c);
    cJSON_Delete(dump);
    skt_stop(&g_server, 5000);
    drop_schema();
    free(expect);
    free(prefix);
    free(suffix);
}
