/*
 * test_source_faults.c: the SS 12000 test server (tests/fixtures/ss12000_server.py)
 * answers a random mix of faults while the ss12000-source syncs it through the
 * real Kafka broker into a sqlite-sink:
 *
 *   - a seeded mix (probability 0.25 a request) of 500s, 429s with
 *     Retry-After: 2 (above the source's retry_backoff_max of 1 s), answers
 *     delayed 3 s (beyond the source's request_timeout of 2 s), truncated
 *     bodies (the connection closed half-way), HTML maintenance pages and
 *     dropped connections, plus one of each kind at fixed points (so each
 *     fires whatever the draw): a 503 with Retry-After: 2, truncated JSON in
 *     a complete HTTP response, a 500, a 429, an HTML page, a drop, a delay.
 *     These hit the API's endpoints; the OAuth2 token endpoint has a test of
 *     its own (the second test below);
 *   - expired page tokens (410) and expired OAuth2 access tokens (401
 *     token_expired): the test advances the server's clock by 400 s several
 *     times while the source is inside token chains (page tokens live 300 s,
 *     access tokens 900 s);
 *   - records mutated at the server during the faulty phase (updates that
 *     bump meta.modified, some twice; a delete; a create).
 *
 * After the faults are cleared the target must converge (bounded) to the
 * server's GET /_control/dump, and "the cursor never skips data": every
 * record mutated during the faulty phase is in the target with its newest
 * version. From the server's request log: no request combined a pageToken
 * with a filter, and the request after every 429/503 came no earlier than
 * its Retry-After (50 ms tolerance).
 *
 * Second test: the token endpoint answers 429 and 503 with Retry-After: 2
 * (at the first token request, and again after an access token expired):
 * the source's next request must wait for it too.
 *
 * The fault seed is logged (replay: SK_FAULTS_SEED=<seed>); the draws depend
 * on the order of requests, so a replay gives the same mix for the same
 * request sequence. Everything is bounded; the server and the daemon die
 * with the test process and are stopped by the suite's fini in every path.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <sqlite3.h>

#include "model.h"
#include "sk_test.h"
#include "util.h"

#define SERVER SK_SOURCE_DIR "/tests/fixtures/ss12000_server.py"
/* The API's list endpoints (not the OAuth2 token endpoint), as a JSON list body. */
#define API_PATHS                                                                                  \
    "\"/organisations\", \"/persons\", \"/placements\", \"/duties\", \"/groups\", "                \
    "\"/programmes\", \"/studyplans\", \"/syllabuses\", \"/schoolUnitOfferings\", "                \
    "\"/activities\", \"/calendarEvents\", \"/attendances\", \"/attendanceEvents\", "              \
    "\"/attendanceSchedule\", \"/grades\", \"/absences\", \"/resources\", \"/rooms\", "            \
    "\"/deletedEntities\""

/* ---- processes, cleaned up in every path ------------------------------------------ */

static pid_t g_server = -1, g_daemon = -1;

static void cleanup(void)
{
    skt_stop(&g_daemon, 20000);
    skt_stop(&g_server, 5000);
}

TestSuite(source_faults, .fini = cleanup);

static bool alive(pid_t pid)
{
    return pid > 0 && waitpid(pid, NULL, WNOHANG) == 0;
}

/* ---- HTTP to the server's control API ------------------------------------------------ */

static cJSON *ctl_json(int port, const char *method, const char *op, const char *body)
{
    char *url = skt_fmt("http://127.0.0.1:%d/_control/%s", port, op);
    char *out = NULL;
    long st = skt_http(method, url, body, 30, &out);
    cr_assert(st == 200 || st == 201, "%s /_control/%s %s: %ld %s", method, op, body ? body : "",
              st, out);
    cJSON *j = cJSON_Parse(out);
    cr_assert_not_null(j, "/_control/%s: not JSON", op);
    free(out);
    free(url);
    return j;
}

static void ctl(int port, const char *op, const char *body)
{
    cJSON_Delete(ctl_json(port, "POST", op, body));
}

static const cJSON *find_entity(const cJSON *dump, const char *coll, const char *id)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(dump, coll))
    {
        const cJSON *i = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (cJSON_IsString(i) && strcmp(i->valuestring, id) == 0)
            return e;
    }
    return NULL;
}

static const char *str_at(const cJSON *o, const char *a, const char *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b)
        v = cJSON_GetObjectItemCaseSensitive(v, b);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The doc of one row of the sqlite-sink, or NULL (caller deletes). */
static cJSON *db_doc(const char *db_path, const char *coll, const char *id)
{
    sqlite3 *db = NULL;
    cJSON *doc = NULL;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        sqlite3_stmt *st = NULL;
        char *sql = skt_fmt("SELECT doc FROM \"%s\" WHERE id = ?", coll);
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
            if (sqlite3_step(st) == SQLITE_ROW)
                doc = cJSON_Parse((const char *)sqlite3_column_text(st, 0));
        }
        sqlite3_finalize(st);
        free(sql);
    }
    sqlite3_close(db);
    return doc;
}

/* Starts the test server (argv) with its output in slog; returns its port. */
static int server_start(char *const argv[], const char *slog)
{
    g_server = skt_spawn(argv, slog);
    return skt_listening_port(g_server, slog, 30000, "the test server");
}

/* The daemon: ss12000-source (OAuth2, page_size 50, request_timeout 2 s) -> real
 * broker -> sqlite-sink into db. */
static void daemon_start(const char *cfg, const char *log, int port, const char *prefix,
                         const char *suffix, const char *db)
{
    setenv("SKT_CLIENT_SECRET", "secret", 1);
    char *text = skt_fmt("kafka:\n"
                         "  brokers: %s\n"
                         "  topic_prefix: %s\n"
                         "  connect_timeout: 20s\n"
                         "admin:\n"
                         "  listen: 127.0.0.1:0\n"
                         "log:\n"
                         "  level: debug\n"
                         "shutdown_timeout: 20s\n"
                         "sources:\n"
                         "  sis-%s:\n"
                         "    type: ss12000-source\n"
                         "    url: http://127.0.0.1:%d/v2.0\n"
                         "    auth:\n"
                         "      type: oauth2\n"
                         "      token_url: http://127.0.0.1:%d/token\n"
                         "      client_id: skolsync\n"
                         "      client_secret: ${env:SKT_CLIENT_SECRET}\n"
                         "    page_size: 50\n"
                         "    max_rps: 200\n"
                         "    request_timeout: 2s\n"
                         "    poll_interval: 1s\n"
                         "    retry_backoff: 100ms\n"
                         "    retry_backoff_max: 1s\n"
                         "sinks:\n"
                         "  db-%s:\n"
                         "    type: sqlite-sink\n"
                         "    path: %s\n",
                         skt_brokers(), prefix, suffix, port, port, suffix, db);
    skt_write(cfg, text);
    free(text);
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", (char *)cfg, NULL};
    g_daemon = skt_spawn(argv, log);
}

/* Waits until the sqlite-sink equals the server's current data; false after timeout_s. */
static bool wait_converged(int port, const char *db, const char *expect, int timeout_s,
                           const char *log, char *why, size_t why_size)
{
    cJSON *dump = ctl_json(port, "GET", "dump", NULL);
    skt_dump_write(dump, expect);
    cJSON_Delete(dump);
    int64_t t0 = sk_mono_ms();
    for (;;) {
        cr_assert(alive(g_daemon), "the daemon exited (log %s)", log);
        if (access(db, R_OK) == 0 && skt_db_matches_dataset(db, expect, why, why_size))
            return true;
        if (sk_mono_ms() - t0 > (int64_t)timeout_s * 1000)
            return false;
        sleep(1);
    }
}

/*
 * The request after every 429/503 (by the server's arrival times: the source
 * is one thread, so "after" is the next request it sent) came at least
 * ra_s later (50 ms tolerance). Returns how many gaps were checked; *slack
 * gets the least (gap - ra_s).
 */
static int check_retry_after(const cJSON *reqs, double ra_s, double *slack)
{
    int n = cJSON_GetArraySize(reqs), checked = 0;
    *slack = 1e9;
    for (int i = 0; i < n; i++) {
        const cJSON *r = cJSON_GetArrayItem(reqs, i);
        int status = cJSON_GetObjectItemCaseSensitive(r, "status")->valueint;
        if (status != 429 && status != 503)
            continue;
        double at = cJSON_GetObjectItemCaseSensitive(r, "unix")->valuedouble;
        const cJSON *next = NULL;
        double next_at = -1;
        for (int j = 0; j < n; j++) {
            const cJSON *q = cJSON_GetArrayItem(reqs, j);
            double u = cJSON_GetObjectItemCaseSensitive(q, "unix")->valuedouble;
            if (u > at && (next_at < 0 || u < next_at)) {
                next_at = u;
                next = q;
            }
        }
        if (!next)
            continue; /* the last request of the log */
        checked++;
        if (next_at - at - ra_s < *slack)
            *slack = next_at - at - ra_s;
        cr_assert_geq(next_at - at - ra_s, -0.05,
                      "%s %s answered %d with Retry-After: %.0f, but the next request (%s %s) "
                      "came %.3f s later",
                      str_at(r, "method", NULL), str_at(r, "path", NULL), status, ra_s,
                      str_at(next, "method", NULL), str_at(next, "path", NULL), next_at - at);
    }
    return checked;
}

/* ---- the test ------------------------------------------------------------------------ */

#define N_MUT 64

Test(source_faults, random_fault_mix_and_expired_tokens_converge_without_skipping, .timeout = 240,
     .fini = cleanup)
{
    const char *seed_env = getenv("SK_FAULTS_SEED");
    unsigned seed = seed_env && *seed_env ? (unsigned)strtoul(seed_env, NULL, 10)
                                          : (unsigned)time(NULL) % 1000000u;
    unsigned rng = seed;
    char *dir = skt_tmpdir("srcfaults");
    char *log = skt_fmt("%s/daemon.log", dir), *slog = skt_fmt("%s/server.log", dir);
    char *db = skt_fmt("%s/out.db", dir), *cfg = skt_fmt("%s/skolsync.yaml", dir);
    char *prefix = skt_unique_prefix();
    char *suffix = strndup(prefix + 1, 8);
    cr_log_info("source_faults: fault seed %u (replay: SK_FAULTS_SEED=%u), dir %s", seed, seed,
                dir);

    /* The fault set: a random mix plus one of each kind at fixed points. */
    char *faults = skt_fmt(
        "{\"mix\": {\"probability\": 0.25, \"retry_after\": 2, \"ms\": 3000, \"mode\": "
        "\"connection\","
        "          \"kinds\": [\"error500\", \"ratelimit\", \"delay\", \"truncate\", \"html\", "
        "\"drop\"],"
        "          \"paths\": [" API_PATHS "]},"
        " \"error500\": {\"count\": 1, \"skip\": 3, \"paths\": [" API_PATHS "]},"
        " \"ratelimit\": {\"count\": 1, \"skip\": 6, \"retry_after\": 2, \"paths\": [" API_PATHS
        "]},"
        " \"unavailable\": {\"count\": 1, \"skip\": 9, \"retry_after\": 2, \"paths\": [" API_PATHS
        "]},"
        " \"truncate\": {\"count\": 2, \"skip\": 12, \"mode\": \"json\", \"paths\": [" API_PATHS
        "]},"
        " \"html\": {\"count\": 1, \"skip\": 15, \"paths\": [" API_PATHS "]},"
        " \"drop\": {\"count\": 1, \"skip\": 18, \"paths\": [" API_PATHS "]},"
        " \"delay\": {\"count\": 1, \"skip\": 21, \"ms\": 3000, \"paths\": [" API_PATHS "]}}");
    char *fault_seed = skt_fmt("%u", seed);
    char *argv[] = {"python3", SERVER,         "--port",      "0",        "--base",
                    "/v2.0",   "--students",   "30",          "--seed",   fault_seed,
                    "--auth",  "oauth2",       "--token-ttl", "900",      "--page-token-ttl",
                    "300",     "--fault-seed", fault_seed,    "--faults", faults,
                    NULL};
    int port = server_start(argv, slog);

    daemon_start(cfg, log, port, prefix, suffix, db);

    /* ---- the faulty phase: mutations and clock jumps while the sync runs ---- */
    char *stats_url = skt_fmt("http://127.0.0.1:%d/_control/stats", port);
    /* into a token chain first (the clock jumps must hit one) */
    bool chained = false;
    for (int i = 0; i < 300 && !chained; i++) {
        cr_assert(alive(g_daemon), "the daemon exited (log %s)", log);
        cJSON *st = ctl_json(port, "GET", "stats", NULL);
        const cJSON *r;
        cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(st, "requests"))
        {
            const cJSON *kv;
            cJSON_ArrayForEach(kv,
                               cJSON_GetObjectItemCaseSensitive(
                                   r, "params")) if (strcmp(cJSON_GetArrayItem(kv, 0)->valuestring,
                                                            "pageToken") == 0) chained = true;
        }
        cJSON_Delete(st);
        if (!chained)
            usleep(100000);
    }
    cr_assert(chained, "the source never followed a page token (log %s)", log);

    char mut_coll[N_MUT][16], mut_id[N_MUT][37];
    int n_mut = 0, clock_jumps = 0, n_deleted = 0;
    char deleted[4][37];
    for (int step = 0; step < 10; step++) {
        cr_assert(alive(g_daemon), "the daemon exited (log %s)", log);
        if (step % 2 == 0) {
            ctl(port, "clock", "{\"advance\": 400}");
            clock_jumps++;
        } else {
            cJSON *d = ctl_json(port, "GET", "dump", NULL);
            static const char *const colls[] = {"persons", "groups", "activities"};
            static const char *const fields[] = {"givenName", "displayName", "displayName"};
            for (int k = 0; k < 6 && n_mut < N_MUT; k++) {
                int c = k % 3;
                const cJSON *arr = cJSON_GetObjectItemCaseSensitive(d, colls[c]);
                int n = cJSON_GetArraySize(arr);
                /* the second and later waves also change records changed before */
                const char *id = NULL;
                if (k == 0 && n_mut > 0 && strcmp(mut_coll[0], "persons") == 0)
                    id = mut_id[0];
                else
                    id = str_at(cJSON_GetArrayItem(arr, (int)(rand_r(&rng) % (unsigned)n)), "id",
                                NULL);
                char *body = skt_fmt("{\"collection\":\"%s\",\"id\":\"%s\",\"patch\":"
                                     "{\"%s\":\"Felvåg %d.%d\"}}",
                                     colls[c], id, fields[c], step, k);
                ctl(port, "update", body);
                free(body);
                snprintf(mut_coll[n_mut], sizeof(mut_coll[0]), "%s", colls[c]);
                snprintf(mut_id[n_mut], sizeof(mut_id[0]), "%s", id);
                n_mut++;
            }
            if (step == 3 || step == 7) {
                const cJSON *rooms = cJSON_GetObjectItemCaseSensitive(d, "rooms");
                const char *victim =
                    str_at(cJSON_GetArrayItem(
                               rooms, (int)(rand_r(&rng) % (unsigned)cJSON_GetArraySize(rooms))),
                           "id", NULL);
                snprintf(deleted[n_deleted++], 37, "%s", victim);
                char *body = skt_fmt("{\"collection\":\"rooms\",\"id\":\"%s\"}", victim);
                ctl(port, "delete", body);
                free(body);
                char nid[37];
                sk_uuid_random(nid);
                body = skt_fmt("{\"collection\":\"persons\",\"entity\":{\"id\":\"%s\","
                               "\"givenName\":\"Ny\",\"familyName\":\"Felvåg %d\"}}",
                               nid, step);
                ctl(port, "create", body);
                free(body);
                snprintf(mut_coll[n_mut], sizeof(mut_coll[0]), "persons");
                snprintf(mut_id[n_mut], sizeof(mut_id[0]), "%s", nid);
                n_mut++;
            }
            cJSON_Delete(d);
        }
        sleep(2);
    }
    cJSON *fsnap = ctl_json(port, "GET", "faults", NULL);
    char *fired = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(fsnap, "fired"));
    cr_log_info("source_faults: faults fired during the faulty phase: %s; %d clock jumps of 400 s, "
                "%d records mutated, %d deleted",
                fired, clock_jumps, n_mut, n_deleted);

    /* ---- faults off: the target converges to the server's data ---- */
    ctl(port, "faults", "{\"clear\": true}");
    char *expect = skt_fmt("%s/expect", dir);
    char why[2048] = "";
    int64_t t0 = sk_mono_ms();
    bool ok = wait_converged(port, db, expect, 90, log, why, sizeof(why));
    cJSON *dump = ctl_json(port, "GET", "dump", NULL);
    cr_log_info("source_faults: converged: %s, %lld ms after the faults were cleared",
                ok ? "yes" : "no", (long long)(sk_mono_ms() - t0));
    cr_assert(ok,
              "seed %u: the target differs from the server 90 s after the faults stopped: "
              "%s\n(server data %s, daemon log %s, server log %s)",
              seed, why, expect, log, slog);

    /* The cursor skipped nothing: every mutated record with its newest version. */
    for (int k = 0; k < n_mut; k++) {
        const cJSON *want = find_entity(dump, mut_coll[k], mut_id[k]);
        cr_assert_not_null(want, "%s %s is not at the server", mut_coll[k], mut_id[k]);
        cJSON *have = db_doc(db, mut_coll[k], mut_id[k]);
        cr_assert_not_null(have, "%s %s (changed during the faults) is missing in the target",
                           mut_coll[k], mut_id[k]);
        cr_assert(
            skt_json_equal(have, want),
            "%s %s: the target has meta.modified %s, the server %s (changed during the faults)",
            mut_coll[k], mut_id[k], str_at(have, "meta", "modified"),
            str_at(want, "meta", "modified"));
        cJSON_Delete(have);
    }
    for (int k = 0; k < n_deleted; k++) {
        cJSON *have = db_doc(db, "rooms", deleted[k]);
        cr_assert_null(have, "room %s, deleted during the faults, is still in the target",
                       deleted[k]);
    }

    /* ---- the server's request log ---- */
    cJSON *st = ctl_json(port, "GET", "stats", NULL);
    const cJSON *reqs = cJSON_GetObjectItemCaseSensitive(st, "requests");
    int total = cJSON_GetObjectItemCaseSensitive(st, "total")->valueint;
    int n = cJSON_GetArraySize(reqs);
    cr_assert_eq(n, total, "the server kept only %d of %d requests: the checks would be partial", n,
                 total);
    int n410 = 0, n401 = 0, n_retry_after = 0, n_chain = 0, by_status[600] = {0};
    for (int i = 0; i < n; i++) {
        const cJSON *r = cJSON_GetArrayItem(reqs, i);
        int status = cJSON_GetObjectItemCaseSensitive(r, "status")->valueint;
        if (status >= 0 && status < 600)
            by_status[status]++;
        n410 += status == 410;
        const char *path = str_at(r, "path", NULL);
        n401 += status == 401;
        /* a pageToken never travels with a filter (only pageToken and limit) */
        bool token = false;
        char other[200] = "";
        const cJSON *kv;
        cJSON_ArrayForEach(kv, cJSON_GetObjectItemCaseSensitive(r, "params"))
        {
            const char *k = cJSON_GetArrayItem(kv, 0)->valuestring;
            if (strcmp(k, "pageToken") == 0)
                token = true;
            else if (strcmp(k, "limit") != 0)
                snprintf(other, sizeof(other), "%s", k);
        }
        n_chain += token;
        cr_assert(!(token && other[0]), "%s was asked with a pageToken and the filter %s: %s", path,
                  other, str_at(r, "query", NULL));
    }
    double min_slack;
    n_retry_after = check_retry_after(reqs, 2.0, &min_slack);
    cr_log_info("source_faults: %d requests (%d 200, %d 500, %d 429, %d 503, %d 410, %d 401, %d "
                "dropped) %d with a pageToken, %d Retry-After gaps checked (least slack %.3f s)",
                n, by_status[200], by_status[500], by_status[429], by_status[503], n410, n401,
                by_status[0], n_chain, n_retry_after, min_slack);
    /* the faults really happened */
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(fsnap, "fired");
    static const char *const kinds[] = {"error500", "ratelimit", "unavailable", "truncate",
                                        "html",     "drop",      "delay"};
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(f, kinds[k]);
        cr_assert(v && v->valueint >= 1, "the fault %s never fired: %s", kinds[k], fired);
    }
    cr_assert_geq(n410, 1, "no page token expired (410): the clock jumps missed the chains");
    cr_assert_geq(n401, 1, "no access token expired (401)");
    cr_assert_geq(by_status[429], 1, "no 429");

    int rc = skt_stop(&g_daemon, 30000);
    cr_expect_eq(rc, 0, "the daemon did not stop cleanly (%d); log %s", rc, log);
    skt_stop(&g_server, 5000);
    cJSON_Delete(st);
    cJSON_Delete(dump);
    cJSON_Delete(fsnap);
    free(fired);
    free(stats_url);
    free(expect);
    free(faults);
    free(fault_seed);
    free(prefix);
    free(suffix);
}

/*
 * The OAuth2 token endpoint answers 429 and 503 with Retry-After: 2 (and a
 * 500): the source's next request must wait for it, as for any other
 * request (docs/ss12000-source.md, "Errors and backoff").
 */
Test(source_faults, token_endpoint_429_and_503_honour_retry_after, .timeout = 120, .fini = cleanup)
{
    char *dir = skt_tmpdir("srcfaults-token");
    char *log = skt_fmt("%s/daemon.log", dir), *slog = skt_fmt("%s/server.log", dir);
    char *db = skt_fmt("%s/out.db", dir), *cfg = skt_fmt("%s/skolsync.yaml", dir);
    char *prefix = skt_unique_prefix();
    char *suffix = strndup(prefix + 1, 8);
    char *argv[] = {"python3",
                    SERVER,
                    "--port",
                    "0",
                    "--base",
                    "/v2.0",
                    "--students",
                    "10",
                    "--auth",
                    "oauth2",
                    "--token-ttl",
                    "900",
                    "--faults",
                    "{\"ratelimit\": {\"count\": 1, \"paths\": [\"/token\"], \"retry_after\": 2},"
                    " \"unavailable\": {\"count\": 1, \"skip\": 1, \"paths\": [\"/token\"], "
                    "\"retry_after\": 2},"
                    " \"error500\": {\"count\": 1, \"skip\": 2, \"paths\": [\"/token\"]}}",
                    NULL};
    int port = server_start(argv, slog);
    daemon_start(cfg, log, port, prefix, suffix, db);
    char *expect = skt_fmt("%s/expect", dir);
    char why[2048] = "";
    bool ok = wait_converged(port, db, expect, 60, log, why, sizeof(why));
    cr_assert(ok, "the target differs from the server: %s (log %s)", why, log);
    /* an expired access token at the server: a 401, and the token endpoint again (429) */
    ctl(port, "faults",
        "{\"ratelimit\": {\"count\": 1, \"paths\": [\"/token\"], "
        "\"retry_after\": 2}}");
    ctl(port, "clock", "{\"advance\": 1000}");
    char *body =
        skt_fmt("{\"collection\":\"rooms\",\"id\":\"%s\",\"patch\":{\"displayName\":"
                "\"Efter 401\"}}",
                str_at(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(
                                              ctl_json(port, "GET", "dump", NULL), "rooms"),
                                          0),
                       "id", NULL));
    ctl(port, "update", body);
    free(body);
    ok = wait_converged(port, db, expect, 30, log, why, sizeof(why));
    cr_assert(ok, "after the token expired: %s (log %s)", why, log);
    cJSON *st = ctl_json(port, "GET", "stats", NULL);
    const cJSON *reqs = cJSON_GetObjectItemCaseSensitive(st, "requests");
    int n429 = 0, n503 = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, reqs)
    {
        if (strcmp(str_at(r, "path", NULL), "/token") != 0)
            continue;
        int status = cJSON_GetObjectItemCaseSensitive(r, "status")->valueint;
        n429 += status == 429;
        n503 += status == 503;
    }
    cr_assert(n429 == 2 && n503 == 1, "the token endpoint faults did not fire: %d 429, %d 503",
              n429, n503);
    double slack;
    int checked = check_retry_after(reqs, 2.0, &slack);
    cr_log_info("source_faults: token endpoint: %d Retry-After gaps checked, least slack %.3f s",
                checked, slack);
    cr_assert_eq(checked, 3);
    int rc = skt_stop(&g_daemon, 30000);
    cr_expect_eq(rc, 0, "the daemon did not stop cleanly (%d); log %s", rc, log);
    skt_stop(&g_server, 5000);
    cJSON_Delete(st);
}
