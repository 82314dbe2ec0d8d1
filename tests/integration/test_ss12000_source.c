/*
 * test_ss12000_source.c: the ss12000-source connector in the real daemon
 * binary, against the SS 12000 test server (tests/fixtures/ss12000_server.py)
 * started by each test, into a sqlite-sink. The broker is the real one from
 * SK_TEST_BROKERS when set (unique topic prefix per test), else the
 * embedded one. Every wait is bounded.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "sk_test.h"
#include "util.h"

#define SERVER SK_SOURCE_DIR "/tests/fixtures/ss12000_server.py"
#define HOOK_SECRET "hooksecret-0123456789"

/* ---- helpers ------------------------------------------------------------- */

/* Every process a test started, stopped by the suite's fini also when an
 * assertion ends the test early (nothing is left running). */
static pid_t started[16];
static int n_started;

static void track(pid_t pid)
{
    if (n_started < 16)
        started[n_started++] = pid;
}

static void untrack(pid_t pid)
{
    for (int i = 0; i < n_started; i++)
        if (started[i] == pid)
            started[i] = 0;
}

static void stop_all(void)
{
    for (int i = 0; i < n_started; i++) {
        if (started[i] <= 0)
            continue;
        kill(started[i], SIGTERM);
        if (skt_wait(started[i], 5000) == -2) {
            kill(started[i], SIGKILL);
            skt_wait(started[i], 5000);
        }
        started[i] = 0;
    }
    n_started = 0;
}

TestSuite(ss12000_source, .fini = stop_all);

/* Small Python helpers written into the test's directory. */
static void write_helpers(const char *dir)
{
    char *p = skt_fmt("%s/dump.py", dir);
    /* dump.py PORT OUTDIR [collection,...]: the server's data as <collection>.jsonl */
    skt_write(p, "import json, os, sys, urllib.request\n"
                 "port, out = sys.argv[1], sys.argv[2]\n"
                 "only = sys.argv[3].split(',') if len(sys.argv) > 3 else None\n"
                 "d = json.load(urllib.request.urlopen('http://127.0.0.1:%s/_control/dump' % port, "
                 "timeout=20))\n"
                 "os.makedirs(out, exist_ok=True)\n"
                 "for f in os.listdir(out):\n"
                 "    os.unlink(os.path.join(out, f))\n"
                 "for c, ents in d.items():\n"
                 "    if only and c not in only:\n"
                 "        continue\n"
                 "    with open(os.path.join(out, c + '.jsonl'), 'w') as f:\n"
                 "        for e in ents:\n"
                 "            f.write(json.dumps(e, ensure_ascii=False) + '\\n')\n");
    free(p);
    p = skt_fmt("%s/q.py", dir);
    /* q.py DB SQL: the first column of the first row, or nothing */
    skt_write(p,
              "import sqlite3, sys\n"
              "try:\n"
              "    r = sqlite3.connect(sys.argv[1], timeout=10).execute(sys.argv[2]).fetchone()\n"
              "except Exception as e:\n"
              "    print('ERR', e); sys.exit(0)\n"
              "print('' if r is None else r[0])\n");
    free(p);
}

struct server {
    pid_t pid;
    int port;
    char *log;
};

/* Starts the test server on port (0: any) with extra arguments (space-separated). */
static struct server server_start(const char *dir, int port, const char *extra)
{
    struct server s = {.log = skt_fmt("%s/server-%d.log", dir, port)};
    char *argv[64];
    int n = 0;
    argv[n++] = "/usr/bin/env";
    argv[n++] = "python3";
    argv[n++] = SERVER;
    argv[n++] = "--port";
    argv[n++] = skt_fmt("%d", port);
    argv[n++] = "--base";
    argv[n++] = "/v2.0";
    char *copy = strdup(extra ? extra : "");
    for (char *tok = strtok(copy, " "); tok && n < 62; tok = strtok(NULL, " "))
        argv[n++] = tok;
    argv[n] = NULL;
    unlink(s.log);
    s.pid = skt_spawn(argv, s.log);
    track(s.pid);
    for (int i = 0; i < 150 && !s.port; i++) {
        usleep(100000);
        char *text = NULL;
        char *cmd = skt_fmt("sed -n 's/^LISTENING 127.0.0.1:\\([0-9]*\\)$/\\1/p' %s", s.log);
        skt_sh(cmd, 5, &text);
        free(cmd);
        if (text && atoi(text) > 0)
            s.port = atoi(text);
        free(text);
    }
    cr_assert(s.port > 0, "the test server did not start (see %s)", s.log);
    return s;
}

static void server_stop(struct server *s)
{
    untrack(s->pid);
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        if (skt_wait(s->pid, 5000) == -2) {
            kill(s->pid, SIGKILL);
            skt_wait(s->pid, 5000);
        }
    }
    s->pid = 0;
}

/* POST /_control/<op> with a JSON body; returns the answer (caller frees). */
static char *ctl(int port, const char *op, const char *json)
{
    char *cmd = skt_fmt("curl -s -m 20 -X POST -H 'Content-Type: application/json' -d '%s' "
                        "http://127.0.0.1:%d/_control/%s",
                        json, port, op);
    char *out = NULL;
    skt_sh(cmd, 25, &out);
    free(cmd);
    return out;
}

static char *get(const char *url)
{
    char *cmd = skt_fmt("curl -s -m 20 '%s'", url);
    char *out = NULL;
    skt_sh(cmd, 25, &out);
    free(cmd);
    char *copy = strdup(out ? out : "");
    free(out);
    return copy;
}

/* A field of the server's JSON answer, by a Python expression on d. */
static char *json_expr(const char *json, const char *expr)
{
    char *path = skt_fmt("/tmp/skt-json-%d.json", getpid());
    skt_write(path, json ? json : "null");
    char *cmd =
        skt_fmt("python3 -c 'import json; d = json.load(open(\"%s\")); print(%s)'", path, expr);
    char *out = NULL;
    skt_sh(cmd, 10, &out);
    free(cmd);
    unlink(path);
    free(path);
    if (out) {
        size_t n = strlen(out);
        while (n && (out[n - 1] == '\n' || out[n - 1] == ' '))
            out[--n] = '\0';
    }
    return out;
}

static char *db_query(const char *dir, const char *db, const char *sql)
{
    char *cmd = skt_fmt("python3 %s/q.py %s \"%s\"", dir, db, sql);
    char *out = NULL;
    skt_sh(cmd, 15, &out);
    free(cmd);
    if (out) {
        size_t n = strlen(out);
        while (n && out[n - 1] == '\n')
            out[--n] = '\0';
    }
    return out;
}

/* The sink's DB equals the server's data (only: comma list of collections, or NULL). */
static bool db_matches(const char *dir, const char *db, int port, const char *only, char *why,
                       size_t why_size)
{
    char *expect = skt_fmt("%s/expect", dir);
    char *cmd = skt_fmt("python3 %s/dump.py %d %s %s", dir, port, expect, only ? only : "");
    int rc = skt_sh(cmd, 30, NULL);
    free(cmd);
    bool ok = rc == 0 && access(db, R_OK) == 0 && skt_db_matches_dataset(db, expect, why, why_size);
    if (rc != 0)
        snprintf(why, why_size, "dump failed");
    free(expect);
    return ok;
}

static bool wait_match(const char *dir, const char *db, int port, const char *only, int timeout_s,
                       char *why, size_t why_size)
{
    for (int i = 0; i < timeout_s; i++) {
        if (db_matches(dir, db, port, only, why, why_size))
            return true;
        sleep(1);
    }
    return false;
}

struct daemon {
    pid_t pid;
    char *log;
    int admin;
    char *prefix; /* the topic prefix on a real broker, else NULL */
};

/* With the embedded broker: keep its state here, so a restart keeps it (NULL: memory). */
static const char *embedded_dir;

static struct daemon daemon_spawn(const char *dir, bool once);

/*
 * Starts skolsync with `sources` (YAML under "sources:", indented by 2) and a
 * sqlite-sink into db. admin_port 0: any. The admin token is "t0ken".
 */
static struct daemon daemon_run(const char *dir, const char *sources, const char *db,
                                int admin_port, bool once);

static struct daemon daemon_start(const char *dir, const char *sources, const char *db,
                                  int admin_port)
{
    return daemon_run(dir, sources, db, admin_port, false);
}

/* As daemon_start; once: `run --once` (the process may end before the caller looks). */
static struct daemon daemon_run(const char *dir, const char *sources, const char *db,
                                int admin_port, bool once)
{
    const char *brokers = getenv("SK_TEST_BROKERS");
    char *kafka, *prefix = NULL;
    if (brokers && *brokers) {
        prefix = skt_unique_prefix();
        kafka = skt_fmt("kafka:\n  brokers: %s\n  topic_prefix: %s\n", brokers, prefix);
    } else if (embedded_dir) {
        kafka = skt_fmt("kafka:\n  brokers: embedded\n  embedded_dir: %s\n", embedded_dir);
    } else {
        kafka = skt_fmt("kafka:\n  brokers: embedded\n");
    }
    /* A sink name (its consumer group skolsync-<name>) of its own per test:
     * on a real broker a group's static member outlives the daemon. */
    char uuid[37];
    sk_uuid_random(uuid);
    setenv("SKT_ADMIN_TOKEN", "t0ken", 1);
    setenv("SKT_HOOK_SECRET", HOOK_SECRET, 1);
    char *cfg = skt_fmt("%s/skolsync.yaml", dir);
    char *text = skt_fmt("%s"
                         "log:\n  level: debug\n"
                         "admin:\n  listen: 127.0.0.1:%d\n  token: ${env:SKT_ADMIN_TOKEN}\n"
                         "sources:\n%s"
                         "sinks:\n  db_%.8s:\n    type: sqlite-sink\n    path: %s\n",
                         kafka, admin_port, sources, uuid, db);
    skt_write(cfg, text);
    free(text);
    free(kafka);
    free(cfg);
    struct daemon d = daemon_spawn(dir, once);
    d.prefix = prefix;
    return d;
}

/* Starts skolsync with the configuration daemon_run wrote in dir (a restart). */
static struct daemon daemon_spawn(const char *dir, bool once)
{
    struct daemon d = {.log = skt_fmt("%s/daemon.log", dir)};
    char *cfg = skt_fmt("%s/skolsync.yaml", dir);
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", cfg, once ? "--once" : NULL, NULL};
    unlink(d.log);
    d.pid = skt_spawn(argv, d.log);
    track(d.pid);
    for (int i = 0; i < 200 && !d.admin; i++) {
        usleep(100000);
        char *out = NULL;
        char *cmd =
            skt_fmt("sed -n 's#.*HTTP server on http://127.0.0.1:\\([0-9]*\\).*#\\1#p' %s", d.log);
        skt_sh(cmd, 5, &out);
        free(cmd);
        if (out && atoi(out) > 0)
            d.admin = atoi(out);
        free(out);
        cr_assert(once || skt_wait(d.pid, 0) == -2, "skolsync exited at start; see %s", d.log);
    }
    cr_assert(d.admin > 0, "skolsync did not log its HTTP port; see %s", d.log);
    free(cfg);
    return d;
}

static void daemon_stop(struct daemon *d)
{
    if (d->pid <= 0)
        return;
    untrack(d->pid);
    kill(d->pid, SIGTERM);
    int rc = skt_wait(d->pid, 30000);
    if (rc == -2) {
        kill(d->pid, SIGKILL);
        skt_wait(d->pid, 5000);
    }
    cr_expect_eq(rc, 0, "skolsync did not stop cleanly (%d); see %s", rc, d->log);
    d->pid = 0;
}

static char *source_yaml(const char *name, int port, int page_size, const char *poll,
                         const char *extra)
{
    return skt_fmt("  %s:\n"
                   "    type: ss12000-source\n"
                   "    url: http://127.0.0.1:%d/v2.0\n"
                   "    page_size: %d\n"
                   "    max_rps: 100\n"
                   "    poll_interval: %s\n"
                   "    retry_backoff: 200ms\n"
                   "    retry_backoff_max: 2s\n"
                   "%s",
                   name, port, page_size, poll, extra ? extra : "");
}

/* The first id of a collection at the server (caller frees). */
static char *first_id(int port, const char *collection, const char *cond)
{
    char *url = skt_fmt("http://127.0.0.1:%d/_control/dump?collection=%s", port, collection);
    char *dump = get(url);
    char *expr =
        skt_fmt("[e[\"id\"] for e in d[\"%s\"] if %s][0]", collection, cond ? cond : "True");
    char *id = json_expr(dump, expr);
    free(expr);
    free(dump);
    free(url);
    cr_assert(id && strlen(id) == 36, "no %s at the server: %s", collection, id ? id : "");
    return id;
}

static long long metric(int admin, const char *name)
{
    char *url = skt_fmt("http://127.0.0.1:%d/metrics", admin);
    char *text = get(url);
    free(url);
    long long v = -1;
    const char *p = text ? strstr(text, name) : NULL;
    if (p)
        v = atoll(p + strlen(name) + 1);
    free(text);
    return v;
}

static bool log_has(const struct daemon *d, const char *needle)
{
    char *cmd = skt_fmt("grep -qF -- '%s' %s", needle, d->log);
    int rc = skt_sh(cmd, 5, NULL);
    free(cmd);
    return rc == 0;
}

/* A test's directory, a server started with server_args, and a daemon whose
 * source "sis" (page_size, polled every second, extra options) writes into db. */
struct sis_run {
    char *dir, *db, *src;
    struct server s;
    struct daemon d;
};

static struct sis_run sis_run_start(const char *tag, const char *server_args, int page_size,
                                    const char *extra)
{
    struct sis_run r = {.dir = skt_tmpdir(tag)};
    write_helpers(r.dir);
    r.s = server_start(r.dir, 0, server_args);
    r.db = skt_fmt("%s/out.db", r.dir);
    r.src = source_yaml("sis", r.s.port, page_size, "1s", extra);
    r.d = daemon_start(r.dir, r.src, r.db, 0);
    return r;
}

/* ---- 1. full sync -------------------------------------------------------- */

Test(ss12000_source, full_sync_of_every_entity_type_equals_the_server, .timeout = 120)
{
    char *dir = skt_tmpdir("ss-full");
    write_helpers(dir);
    struct server s = server_start(dir, 0, "--students 40");
    char *db = skt_fmt("%s/out.db", dir);
    char *src = source_yaml("sis", s.port, 200, "2s", NULL);
    struct daemon d = daemon_start(dir, src, db, 0);
    char why[512] = "";
    bool ok = wait_match(dir, db, s.port, NULL, 60, why, sizeof(why));
    /* Every type has rows: the comparison covered all 18. */
    char *n = db_query(dir, db, "select count(*) from attendanceSchedules");
    daemon_stop(&d);
    server_stop(&s);
    cr_assert(ok, "the DB differs from the server: %s (logs in %s)", why, dir);
    cr_assert(n && atoi(n) > 0, "no attendanceSchedules: %s", n ? n : "");
    free(n);
    free(src);
    free(db);
    free(dir);
}

/* ---- 2. deltas ----------------------------------------------------------- */

Test(ss12000_source, deltas_of_every_mutation_converge_also_while_paging, .timeout = 150)
{
    char *dir = skt_tmpdir("ss-delta");
    write_helpers(dir);
    /* Slow pages: the full sync is still paging when the mutations come. */
    struct server s = server_start(dir, 0, "--students 30 --fault delay:ms=150");
    char *db = skt_fmt("%s/out.db", dir);
    char *src = source_yaml("sis", s.port, 40, "2s", NULL);
    struct daemon d = daemon_start(dir, src, db, 0);
    sleep(3);
    char *person = first_id(s.port, "persons", NULL);
    char *body = skt_fmt(
        "{\"collection\":\"persons\",\"id\":\"%s\",\"patch\":{\"givenName\":\"Mittemellan\"}}",
        person);
    char *out = ctl(s.port, "update", body);
    free(out);
    free(body);
    char *group = first_id(s.port, "groups", NULL);
    char *org = first_id(s.port, "organisations", NULL);
    body = skt_fmt(
        "{\"collection\":\"groups\",\"id\":\"%s\",\"patch\":{\"displayName\":\"Paging 1\"}}",
        group);
    free(ctl(s.port, "update", body));
    free(body);
    char why[512] = "";
    bool ok = wait_match(dir, db, s.port, NULL, 60, why, sizeof(why));
    char *rows_during =
        db_query(dir, db, "select count(*) from persons where doc like '%Mittemellan%'");
    cr_assert(ok, "after the mid-paging update: %s (logs in %s)", why, dir);
    cr_assert_str_eq(rows_during, "1");
    free(ctl(s.port, "faults", "{\"clear\":true}"));

    /* create, update, delete, membership, move_student */
    body = skt_fmt(
        "{\"collection\":\"persons\",\"entity\":{\"id\":\"0b5f0e7c-1f2a-4c3d-9e8f-aa00000000c1\","
        "\"givenName\":\"Ny\",\"familyName\":\"Elev\"}}");
    free(ctl(s.port, "create", body));
    free(body);
    char *victim = first_id(s.port, "rooms", NULL);
    body = skt_fmt("{\"collection\":\"rooms\",\"id\":\"%s\"}", victim);
    free(ctl(s.port, "delete", body));
    free(body);
    body = skt_fmt(
        "{\"group\":\"%s\",\"person\":\"0b5f0e7c-1f2a-4c3d-9e8f-aa00000000c1\",\"action\":\"add\"}",
        group);
    free(ctl(s.port, "membership", body));
    free(body);
    /* A student with an enrolment at a school that has another school to move to. */
    char *pdump = get(skt_fmt("http://127.0.0.1:%d/_control/dump", s.port));
    char *mover = json_expr(
        pdump,
        "[p[\"id\"] for p in d[\"persons\"] for g in d[\"groups\"] if g.get(\"groupType\") == "
        "\"Klass\" "
        "and any(m[\"person\"][\"id\"] == p[\"id\"] for m in g.get(\"groupMemberships\", [])) "
        "and any(e[\"enroledAt\"][\"id\"] == g[\"organisation\"][\"id\"] for e in "
        "p.get(\"enrolments\", []))][0]");
    char *from = json_expr(
        pdump, skt_fmt("[e[\"enroledAt\"][\"id\"] for p in d[\"persons\"] if p[\"id\"] == \"%s\" "
                       "for e in p[\"enrolments\"]][0]",
                       mover));
    char *to = json_expr(
        pdump,
        skt_fmt("[g[\"organisation\"][\"id\"] for g in d[\"groups\"] if g.get(\"groupType\") "
                "== \"Klass\" and g[\"organisation\"][\"id\"] != \"%s\"][0]",
                from));
    free(pdump);
    body =
        skt_fmt("{\"person\":\"%s\",\"from_school\":\"%s\",\"to_school\":\"%s\"}", mover, from, to);
    char *moved = ctl(s.port, "move_student", body);
    free(body);
    char *added_to = json_expr(moved, "d[\"added_to\"]");
    cr_assert(added_to && strlen(added_to) == 36, "move_student: %s", moved);
    ok = wait_match(dir, db, s.port, NULL, 40, why, sizeof(why));
    cr_assert(ok, "after the mutations: %s (logs in %s)", why, dir);
    /* The moved student: enrolment at the new school, member of the new class only. */
    char *sql = skt_fmt("select count(*) from groups where doc like '%%%s%%'", mover);
    char *ngroups = db_query(dir, db, sql);
    free(sql);
    sql = skt_fmt("select count(*) from groups where id = '%s' and doc like '%%%s%%'", added_to,
                  mover);
    char *in_new = db_query(dir, db, sql);
    free(sql);
    sql = skt_fmt("select count(*) from persons where id = '%s' and doc like '%%%s%%'", mover, to);
    char *enrolled = db_query(dir, db, sql);
    free(sql);
    sql = skt_fmt("select count(*) from rooms where id = '%s'", victim);
    char *gone = db_query(dir, db, sql);
    free(sql);
    daemon_stop(&d);
    server_stop(&s);
    cr_assert_str_eq(in_new, "1", "the moved student is not in the new class %s", added_to);
    cr_assert_str_eq(enrolled, "1", "the enrolment does not name the new school");
    cr_assert(atoi(ngroups) >= 1);
    cr_assert_str_eq(gone, "0", "the deleted room is still there");
    (void)org;
}

/* ---- 3. paging rules, 410, Retry-After ------------------------------------- */

Test(ss12000_source, expired_token_restarts_from_watermark_and_retry_after_is_honoured,
     .timeout = 150)
{
    struct sis_run r = sis_run_start("ss-paging", "--students 30 --fault delay:ms=100", 50, NULL);
    char *dir = r.dir, *db = r.db;
    struct server s = r.s;
    struct daemon d = r.d;
    /* Wait until the source is following a token chain (slow pages: it stays in
     * one), then every outstanding page token expires: the server's clock jumps
     * past their TTL. */
    char *stats_url = skt_fmt("http://127.0.0.1:%d/_control/stats", s.port);
    for (int i = 0; i < 300; i++) {
        char *st = get(stats_url);
        char *chained = json_expr(st, "sum(1 for r in d[\"requests\"] if any(k == \"pageToken\" "
                                      "for k, v in r[\"params\"]))");
        bool in_chain = chained && atoi(chained) >= 1;
        free(chained);
        free(st);
        if (in_chain)
            break;
        usleep(100000);
    }
    free(stats_url);
    /* A jump expires only the tokens handed out before it: jump several times
     * while the chains go on, so some request certainly carries an expired one. */
    for (int jump = 0; jump < 6; jump++) {
        free(ctl(s.port, "clock", "{\"advance\": 600}"));
        usleep(300000);
    }
    free(ctl(s.port, "faults", "{\"clear\":true}"));
    char why[512] = "";
    bool ok = wait_match(dir, db, s.port, NULL, 60, why, sizeof(why));
    cr_assert(ok, "after the expired tokens: %s (logs in %s)", why, dir);
    char *url = skt_fmt("http://127.0.0.1:%d/_control/stats", s.port);
    char *stats = get(url);
    char *n410 = json_expr(stats, "sum(1 for r in d[\"requests\"] if r[\"status\"] == 410)");
    char *mixed = json_expr(
        stats,
        "sum(1 for r in d[\"requests\"] if any(k == \"pageToken\" for k, v in r[\"params\"]) "
        "and any(k not in (\"pageToken\", \"limit\") for k, v in r[\"params\"]))");
    char *noffset =
        json_expr(stats, "sum(1 for r in d[\"requests\"] for k, v in r[\"params\"] if k in "
                         "(\"meta.modified.after\", \"meta.created.after\", \"after\") and not "
                         "(v.endswith(\"Z\") or v[-6] in \"+-\"))");
    char *n400 = json_expr(stats, "sum(1 for r in d[\"requests\"] if r[\"status\"] == 400)");
    free(stats);
    cr_assert(n410 && atoi(n410) >= 1, "no 410 seen: the test did not expire a token (%s)", n410);
    cr_assert_str_eq(mixed, "0", "a filter was sent together with a pageToken");
    cr_assert_str_eq(noffset, "0", "a timestamp without an offset was sent");
    cr_assert_str_eq(n400, "0", "the server refused %s request(s)", n400);
    cr_assert(log_has(&d, "restarting the"), "no restart logged");

    /* 429 with Retry-After: 2 -> the next request comes at least 2 s later. */
    char *total = json_expr(get(url), "d[\"total\"]");
    free(ctl(s.port, "faults", "{\"ratelimit\": {\"count\": 1, \"retry_after\": 2}}"));
    sleep(7);
    char *qexpr = skt_fmt("[r for r in d[\"requests\"] if r[\"seq\"] > %s]", total);
    stats = get(url);
    char *expr = skt_fmt(
        "(lambda rs: (lambda i: rs[i+1][\"unix\"] - rs[i][\"unix\"] if i + 1 < len(rs) else -1)"
        "([j for j, r in enumerate(rs) if r[\"status\"] == 429][0]))(%s)",
        qexpr);
    char *gap = json_expr(stats, expr);
    free(stats);
    daemon_stop(&d);
    server_stop(&s);
    cr_assert(gap && atof(gap) >= 1.99, "the request after a 429 Retry-After: 2 came %s s later",
              gap ? gap : "?");
    free(url);
}

/*
 * Regression (hostile input #13): a raw NUL inside a JSON string silently cut
 * the value (cJSON ends the string there) and invalid UTF-8 was stored as
 * it came. The record that holds such bytes is dead-lettered with the
 * position; the rest of its page is stored.
 */
static void nul_byte_case(int page_size, int skip)
{
    char *dir = skt_tmpdir("ss-nul");
    write_helpers(dir);
    char *args = skt_fmt("--students 20 --fault bad_record:count=1,skip=%d,paths=/persons,mode=nul",
                         skip);
    struct server s = server_start(dir, 0, args);
    free(args);
    char *db = skt_fmt("%s/out.db", dir);
    char *src = source_yaml("sis", s.port, page_size, "1s", "    entities: [Organisation, Person]\n");
    struct daemon d = daemon_start(dir, src, db, 0);
    char why[512] = "";
    cr_assert(wait_match(dir, db, s.port, "organisations", 60, why, sizeof(why)), "%s", why);
    bool dl = false;
    for (int i = 0; i < 40 && !dl; i++) {
        dl = log_has(&d, "Person: a NUL byte at byte ");
        if (!dl)
            usleep(250000);
    }
    char *np = db_query(dir, db, "select count(*) from persons");
    char *url = skt_fmt("http://127.0.0.1:%d/_control/dump?collection=persons", s.port);
    char *dump = get(url);
    char *want = json_expr(dump, "len(d[\"persons\"])");
    char *cut = db_query(dir, db, "select count(*) from persons where doc like '%before%'");
    daemon_stop(&d);
    server_stop(&s);
    cr_assert(dl, "the record with a NUL byte was not dead-lettered with its position; see %s",
              d.log);
    cr_assert_eq(atoi(np), atoi(want) - 1, "persons: %s stored, %s at the server (one bad)", np,
                 want);
    cr_assert_str_eq(cut, "0", "a value cut at the NUL was stored");
    free(np);
    free(url);
    free(dump);
    free(want);
    free(cut);
}

Test(ss12000_source, a_record_with_a_nul_byte_is_dead_lettered_and_its_page_stored, .timeout = 120)
{
    nul_byte_case(1000, 0); /* the first page of persons */
}

/* A later page is read ahead on its own thread, which checks its bytes there. */
Test(ss12000_source, a_nul_byte_in_a_page_read_ahead_is_dead_lettered_too, .timeout = 120)
{
    nul_byte_case(5, 1); /* the second page of persons */
}

/*
 * Regression (hostile input #5): the start of a server's error body was
 * served by the unauthenticated /ready and /api/v1/connectors (last_error).
 * Without the admin token they say where to look; with it, the whole error.
 */
Test(ss12000_source, server_text_is_not_served_without_the_admin_token, .timeout = 120)
{
    char *dir = skt_tmpdir("ss-lasterr");
    write_helpers(dir);
    struct server s = server_start(dir, 0, "--students 10 --fault error500:count=100000");
    char *db = skt_fmt("%s/out.db", dir);
    char *src = source_yaml("sis", s.port, 200, "1s", "    retry_max_attempts: 1\n");
    struct daemon d = daemon_start(dir, src, db, 0);
    char *url = skt_fmt("http://127.0.0.1:%d/api/v1/connectors/sis", d.admin);
    char *body = NULL;
    bool failed = false;
    for (int i = 0; i < 100 && !failed; i++) {
        free(body);
        body = NULL;
        skt_http("GET", url, NULL, 5, &body);
        failed = body && strstr(body, "\"state\":\"failed\"");
        if (!failed)
            usleep(100000);
    }
    cr_assert(failed, "the source never failed: %s", body);
    cr_assert(strstr(body, "\"last_error\":\"details in the log, or in the API with the admin "
                           "token\""),
              "%s", body);
    char *ready = NULL, *list = NULL;
    char *rurl = skt_fmt("http://127.0.0.1:%d/ready", d.admin);
    char *lurl = skt_fmt("http://127.0.0.1:%d/api/v1/connectors", d.admin);
    cr_assert_eq(skt_http("GET", rurl, NULL, 5, &ready), 503);
    skt_http("GET", lurl, NULL, 5, &list);
    char *cmd = skt_fmt("curl -s -m 5 -H 'Authorization: Bearer t0ken' %s", url);
    char *authed = NULL;
    skt_sh(cmd, 10, &authed);
    daemon_stop(&d);
    server_stop(&s);
    cr_assert_null(strstr(body, "Injected"), "%s", body);
    cr_assert_null(strstr(ready, "Injected"), "%s", ready);
    cr_assert(strstr(ready, "sis is failed"), "%s", ready);
    cr_assert_null(strstr(list, "Injected"), "%s", list);
    cr_assert(authed && strstr(authed, "HTTP 500") && strstr(authed, "Injected"),
              "with the token the error is shown: %s", authed);
    free(body);
    free(ready);
    free(list);
    free(authed);
    free(cmd);
    free(url);
    free(rurl);
    free(lurl);
}

/* ---- 4. webhooks --------------------------------------------------------- */

Test(ss12000_source, webhook_callback_triggers_a_delta_and_a_wrong_secret_does_nothing,
     .timeout = 150)
{
    char *dir = skt_tmpdir("ss-hook");
    write_helpers(dir);
    struct server s = server_start(dir, 0, "--students 20 --quirk callback-spelling");
    char *db = skt_fmt("%s/out.db", dir);
    int admin = skt_free_port();
    char *extra = skt_fmt("    webhook:\n"
                          "      public_url: http://127.0.0.1:%d\n"
                          "      secret: ${env:SKT_HOOK_SECRET}\n"
                          "      debounce: 300ms\n",
                          admin);
    char *src = source_yaml("sis", s.port, 200, "10m", extra);
    struct daemon d = daemon_start(dir, src, db, admin);
    char why[512] = "";
    cr_assert(wait_match(dir, db, s.port, NULL, 60, why, sizeof(why)), "full sync: %s", why);
    char *url = skt_fmt("http://127.0.0.1:%d/_control/subscriptions", s.port);
    char *subs = get(url);
    char *nsub = json_expr(subs, "len([x for x in d if \"/hooks/sis/\" in x[\"target\"]])");
    cr_assert_str_eq(nsub, "1", "subscriptions: %s", subs);
    free(subs);

    /* A mutation: the server calls back, the source polls at once. */
    char *person = first_id(s.port, "persons", NULL);
    char *body = skt_fmt(
        "{\"collection\":\"persons\",\"id\":\"%s\",\"patch\":{\"givenName\":\"Krok\"}}", person);
    free(ctl(s.port, "update", body));
    free(body);
    char *sql =
        skt_fmt("select count(*) from persons where id = '%s' and doc like '%%Krok%%'", person);
    char *seen = NULL;
    for (int i = 0; i < 50; i++) {
        free(seen);
        seen = db_query(dir, db, sql);
        if (seen && strcmp(seen, "1") == 0)
            break;
        usleep(200000);
    }
    cr_assert_str_eq(seen, "1",
                     "the webhook did not bring the change within 10 s (poll_interval 10m)");
    free(sql);

    /* No more callbacks from the server; ours to a wrong secret is 403 and changes nothing. */
    free(ctl(s.port, "reset",
             "{\"data\":false,\"stats\":false,\"faults\":false,\"tokens\":false,"
             "\"subscriptions\":true}"));
    body = skt_fmt("{\"collection\":\"persons\",\"id\":\"%s\",\"patch\":{\"givenName\":\"Hake\"}}",
                   person);
    free(ctl(s.port, "update", body));
    free(body);
    char *cmd = skt_fmt(
        "curl -s -o /dev/null -w '%%{http_code}' -X POST -d '{\"modifiedEntities\":[\"Person\"]}' "
        "http://127.0.0.1:%d/hooks/sis/wrong-secret-000",
        admin);
    char *code = NULL;
    skt_sh(cmd, 10, &code);
    free(cmd);
    cr_assert_str_eq(code, "403");
    free(code);
    cmd = skt_fmt("curl -s -o /dev/null -w '%%{http_code}' -X POST -d '{\"modifiedEntities\":' "
                  "http://127.0.0.1:%d/hooks/sis/" HOOK_SECRET,
                  admin);
    skt_sh(cmd, 10, &code);
    free(cmd);
    cr_assert_str_eq(code, "400", "a malformed callback body must be a 400");
    free(code);
    sleep(3);
    sql = skt_fmt("select count(*) from persons where id = '%s' and doc like '%%Hake%%'", person);
    char *early = db_query(dir, db, sql);
    cr_assert_str_eq(early, "0", "the change arrived without a valid callback");
    /* The right secret, the spec's misspelled key: the change comes. */
    cmd = skt_fmt(
        "curl -s -o /dev/null -w '%%{http_code}' -X POST -d '{\"modifiedEntites\":[\"Person\"]}' "
        "http://127.0.0.1:%d/hooks/sis/" HOOK_SECRET,
        admin);
    skt_sh(cmd, 10, &code);
    free(cmd);
    cr_assert_str_eq(code, "200");
    for (int i = 0; i < 50; i++) {
        free(seen);
        seen = db_query(dir, db, sql);
        if (seen && strcmp(seen, "1") == 0)
            break;
        usleep(200000);
    }
    daemon_stop(&d);
    server_stop(&s);
    cr_assert_str_eq(seen, "1", "the valid callback did not bring the change");
    free(url);
}

/* ---- 5. deletes ----------------------------------------------------------- */

static char *delete_at(int port, const char *collection, const char *id)
{
    char *body = skt_fmt("{\"collection\":\"%s\",\"id\":\"%s\"}", collection, id);
    char *out = ctl(port, "delete", body);
    free(body);
    return out;
}

static bool wait_rows(const char *dir, const char *db, const char *sql, const char *want,
                      int timeout_s)
{
    for (int i = 0; i < timeout_s * 4; i++) {
        char *got = db_query(dir, db, sql);
        bool ok = got && strcmp(got, want) == 0;
        free(got);
        if (ok)
            return true;
        usleep(250000);
    }
    return false;
}

/* GET /api/v1/connectors/NAME (with the admin token), one field by a Python expression on d. */
static char *api_field(int admin, const char *name, const char *expr)
{
    char *url = skt_fmt("http://127.0.0.1:%d/api/v1/connectors/%s' -H 'Authorization: Bearer t0ken",
                        admin, name);
    char *body = get(url);
    char *v = json_expr(body, expr);
    free(body);
    free(url);
    return v;
}

/* Waits until the source is past a (re)start: running or idle, not failed. */
static bool wait_source_up(int admin, const char *name, long min_restarts, int timeout_s)
{
    for (int i = 0; i < timeout_s * 5; i++) {
        char *st = api_field(admin, name, "d[\"state\"] + chr(32) + str(d.get(\"restarts\", 0))");
        char state[32] = "";
        long restarts = -1;
        if (st)
            sscanf(st, "%31s %ld", state, &restarts);
        free(st);
        if (restarts >= min_restarts &&
            (strcmp(state, "running") == 0 || strcmp(state, "idle") == 0))
            return true;
        usleep(200000);
    }
    return false;
}

static char *post_hook(int admin, const char *secret)
{
    char *cmd = skt_fmt("curl -s -m 10 -o /dev/null -w '%%{http_code}' -X POST "
                        "-d '{\"modifiedEntities\":[\"Person\"]}' "
                        "http://127.0.0.1:%d/hooks/sis/%s",
                        admin, secret);
    char *code = NULL;
    skt_sh(cmd, 15, &code);
    free(cmd);
    return code;
}

/*
 * Regression (hostile input #12): every wrong-secret callback logged a
 * warning (2.4 MB of log in 10 s from one client). Now one line a minute,
 * the rest counted in skolsync_log_lines_suppressed_total; every refusal is
 * still counted by status in skolsync_http_responses_total.
 */
Test(ss12000_source, wrong_secret_callbacks_are_counted_not_logged_each, .timeout = 120)
{
    char *dir = skt_tmpdir("ss-hook-flood");
    write_helpers(dir);
    struct server s = server_start(dir, 0, "--students 10");
    char *db = skt_fmt("%s/out.db", dir);
    int admin = skt_free_port();
    char *extra = skt_fmt("    webhook:\n"
                          "      public_url: http://127.0.0.1:%d\n"
                          "      secret: ${env:SKT_HOOK_SECRET}\n",
                          admin);
    char *src = source_yaml("sis", s.port, 200, "10m", extra);
    struct daemon d = daemon_start(dir, src, db, admin);
    char why[512] = "";
    cr_assert(wait_match(dir, db, s.port, NULL, 60, why, sizeof(why)), "full sync: %s", why);
    char *cmd =
        skt_fmt("python3 -c 'import http.client\n"
                "c = http.client.HTTPConnection(\"127.0.0.1\", %d, timeout=10)\n"
                "codes = {}\n"
                "for i in range(2000):\n"
                "    c.request(\"POST\", \"/hooks/sis/wrong-secret-%%d\" %% i, body=\"{}\")\n"
                "    r = c.getresponse(); r.read(); codes[r.status] = codes.get(r.status, 0) + 1\n"
                "print(codes)'",
                admin);
    char *out = NULL;
    cr_assert_eq(skt_sh(cmd, 60, &out), 0, "%s", out);
    cr_assert(out && strstr(out, "{403: 2000}"), "answers: %s", out);
    free(out);
    free(cmd);
    char *metrics = get(skt_fmt("http://127.0.0.1:%d/metrics", admin));
    cmd = skt_fmt("grep -c 'wrong secret' %s", d.log);
    skt_sh(cmd, 10, &out);
    free(cmd);
    daemon_stop(&d);
    server_stop(&s);
    cr_assert(out && atoi(out) == 1, "wrong-secret lines logged: %s (expected 1)", out);
    cr_assert(strstr(metrics, "skolsync_http_responses_total{code=\"403\"} 2000\n"), "%s", metrics);
    const char *sup = strstr(metrics, "\nskolsync_log_lines_suppressed_total ");
    cr_assert(sup && atol(sup + strlen("\nskolsync_log_lines_suppressed_total ")) >= 1999, "%s",
              metrics);
    free(out);
    free(metrics);
}

/*
 * Regression (hostile input, critical): after the source was restarted (by
 * the API, a reload or the supervisor after a failure) a callback read the
 * freed hook (use-after-free under ASan) and the restarted source failed for
 * good with "HTTP route ... is taken". Callbacks hammer the route the whole
 * time, so a handler running while the source closes is met too.
 */
Test(ss12000_source, webhook_route_survives_restart_reload_and_failure, .timeout = 240)
{
    char *dir = skt_tmpdir("ss-hook-life");
    write_helpers(dir);
    struct server s = server_start(dir, 0, "--students 10");
    char *db = skt_fmt("%s/out.db", dir);
    int admin = skt_free_port();
    char *extra = skt_fmt("    retry_max_attempts: 2\n"
                          "    webhook:\n"
                          "      public_url: http://127.0.0.1:%d\n"
                          "      secret: ${env:SKT_HOOK_SECRET}\n"
                          "      debounce: 100ms\n",
                          admin);
    char *src = source_yaml("sis", s.port, 200, "1s", extra);
    struct daemon d = daemon_start(dir, src, db, admin);
    char why[512] = "";
    cr_assert(wait_match(dir, db, s.port, NULL, 60, why, sizeof(why)), "full sync: %s", why);

    char *loop_log = skt_fmt("%s/hammer.log", dir);
    char *loop = skt_fmt("for i in $(seq 20000); do curl -s -m 2 -o /dev/null -X POST "
                         "-d '{\"modifiedEntities\":[\"Person\"],\"deletedEntities\":true}' "
                         "http://127.0.0.1:%d/hooks/sis/" HOOK_SECRET "; done",
                         admin);
    char *hargv[] = {"/bin/sh", "-c", loop, NULL};
    pid_t hammer = skt_spawn(hargv, loop_log);
    track(hammer);

    /* 1. restarted by an operator, three times in a row */
    long restarts = 0;
    for (int i = 0; i < 3; i++) {
        char *cmd = skt_fmt("curl -s -m 10 -o /dev/null -w '%%{http_code}' -X POST -H "
                            "'Authorization: Bearer t0ken' "
                            "http://127.0.0.1:%d/api/v1/connectors/sis/restart",
                            admin);
        char *code = NULL;
        skt_sh(cmd, 15, &code);
        free(cmd);
        cr_assert_str_eq(code, "200");
        free(code);
        restarts++;
        cr_assert(wait_source_up(admin, "sis", restarts, 30),
                  "the source did not come back after restart %ld; see %s", restarts, d.log);
    }
    char *code = post_hook(admin, HOOK_SECRET);
    cr_assert_str_eq(code, "200", "callback after an operator restart");
    free(code);

    /* 2. a reload that changes the source */
    char *cfg = skt_fmt("%s/skolsync.yaml", dir);
    char *sed = skt_fmt("sed -i 's/debounce: 100ms/debounce: 150ms/' %s", cfg);
    cr_assert_eq(skt_sh(sed, 10, NULL), 0);
    free(sed);
    char *cmd = skt_fmt("curl -s -m 70 -X POST -H 'Authorization: Bearer t0ken' "
                        "http://127.0.0.1:%d/api/v1/reload",
                        admin);
    char *answer = NULL;
    skt_sh(cmd, 75, &answer);
    free(cmd);
    cr_assert(answer && strstr(answer, "\"reloaded\":true"), "reload: %s", answer);
    free(answer);
    /* A reload restarts the connector from scratch: its counters start over. */
    cr_assert(wait_source_up(admin, "sis", 0, 30), "the source did not come back after the reload");
    code = post_hook(admin, HOOK_SECRET);
    cr_assert_str_eq(code, "200", "callback after a reload");
    free(code);

    /* 3. failed (server errors past retry_max_attempts), restarted by the supervisor */
    free(ctl(s.port, "faults", "{\"error500\": {\"count\": 100000}}"));
    bool failed = false;
    for (int i = 0; i < 150 && !failed; i++) {
        char *st = api_field(admin, "sis", "d[\"state\"] + chr(32) + str(d.get(\"restarts\", 0))");
        failed = st && strtol(strchr(st, ' ') ? strchr(st, ' ') + 1 : "0", NULL, 10) > 0;
        free(st);
        if (!failed)
            usleep(200000);
    }
    cr_assert(failed, "the source never failed and was restarted under server errors");
    free(ctl(s.port, "reset",
             "{\"data\":false,\"stats\":false,\"faults\":true,\"tokens\":false,"
             "\"subscriptions\":false}"));
    cr_assert(wait_source_up(admin, "sis", 1, 60),
              "the source did not come back after the supervisor restarted it; see %s", d.log);

    skt_stop(&hammer, 5000);
    untrack(hammer);

    /* The route still wakes the (restarted) source: a change arrives through it. */
    char *person = first_id(s.port, "persons", NULL);
    free(ctl(s.port, "reset",
             "{\"data\":false,\"stats\":false,\"faults\":false,\"tokens\":false,"
             "\"subscriptions\":true}"));
    char *body = skt_fmt(
        "{\"collection\":\"persons\",\"id\":\"%s\",\"patch\":{\"givenName\":\"Efter\"}}", person);
    free(ctl(s.port, "update", body));
    free(body);
    code = post_hook(admin, HOOK_SECRET);
    cr_assert_str_eq(code, "200");
    free(code);
    char *sql =
        skt_fmt("select count(*) from persons where id = '%s' and doc like '%%Efter%%'", person);
    bool arrived = wait_rows(dir, db, sql, "1", 20);
    char *taken = NULL;
    char *grep = skt_fmt("grep -c 'is taken' %s", d.log);
    skt_sh(grep, 10, &taken);
    free(grep);
    daemon_stop(&d);
    server_stop(&s);
    cr_assert(arrived, "a callback after the restarts did not bring the change");
    cr_assert(taken && atoi(taken) == 0, "a restarted source found its route taken; see %s", d.log);
    free(taken);
    free(sql);
    free(person);
    free(cfg);
    free(loop);
    free(loop_log);
}

Test(ss12000_source, deleted_entities_in_both_spellings_become_tombstones, .timeout = 120)
{
    char *dir = skt_tmpdir("ss-del");
    write_helpers(dir);
    /* Short-lived subscriptions: renewed (PATCH) while the test runs. */
    struct server s = server_start(dir, 0, "--students 20 --subscription-ttl 4");
    char *db = skt_fmt("%s/out.db", dir);
    int admin = skt_free_port();
    char *hook = skt_fmt("    webhook:\n"
                         "      public_url: http://127.0.0.1:%d/\n"
                         "      secret: ${env:SKT_HOOK_SECRET}\n",
                         admin);
    char *src = source_yaml("sis", s.port, 200, "1s", hook);
    struct daemon d = daemon_start(dir, src, db, admin);
    char why[512] = "";
    cr_assert(wait_match(dir, db, s.port, NULL, 60, why, sizeof(why)), "full sync: %s", why);
    /* The spec's "activitites" bucket. */
    char *a1 = first_id(s.port, "activities", NULL);
    char *p1 = first_id(s.port, "persons", NULL);
    free(delete_at(s.port, "activities", a1));
    free(delete_at(s.port, "persons", p1));
    char *sql = skt_fmt("select count(*) from activities where id = '%s'", a1);
    cr_assert(wait_rows(dir, db, sql, "0", 20), "activity %s (bucket activitites) not deleted", a1);
    free(sql);
    sql = skt_fmt("select count(*) from persons where id = '%s'", p1);
    cr_assert(wait_rows(dir, db, sql, "0", 20), "person not deleted");
    free(sql);
    /* The "activities" spelling. */
    free(ctl(s.port, "config", "{\"quirks\": [\"activities-spelling\"]}"));
    char *a2 = first_id(s.port, "activities", NULL);
    free(delete_at(s.port, "activities", a2));
    sql = skt_fmt("select count(*) from activities where id = '%s'", a2);
    cr_assert(wait_rows(dir, db, sql, "0", 20), "activity %s (bucket activities) not deleted", a2);
    free(sql);
    cr_assert(db_matches(dir, db, s.port, NULL, why, sizeof(why)), "%s", why);
    char *url = skt_fmt("http://127.0.0.1:%d/_control/stats?path=/v2.0/deletedEntities", s.port);
    char *stats = get(url);
    char *rep = json_expr(stats, "sum(1 for r in d[\"requests\"] if sum(1 for k, v in "
                                 "r[\"params\"] if k == \"entities\") == 18)");
    free(stats);
    free(url);
    url = skt_fmt("http://127.0.0.1:%d/_control/stats", s.port);
    stats = get(url);
    char *renewed = json_expr(
        stats, "sum(1 for r in d[\"requests\"] if r[\"method\"] == \"PATCH\" and "
               "r[\"path\"].startswith(\"/v2.0/subscriptions/\") and r[\"status\"] == 200)");
    free(stats);
    daemon_stop(&d);
    stats = get(url);
    char *deleted = json_expr(
        stats, "sum(1 for r in d[\"requests\"] if r[\"method\"] == \"DELETE\" and "
               "r[\"path\"].startswith(\"/v2.0/subscriptions/\") and r[\"status\"] == 204)");
    char *left =
        json_expr(get(skt_fmt("http://127.0.0.1:%d/_control/subscriptions", s.port)), "len(d)");
    free(stats);
    server_stop(&s);
    cr_assert(rep && atoi(rep) > 0, "deletedEntities was not asked with 18 repeated entities= (%s)",
              rep);
    cr_assert(renewed && atoi(renewed) >= 1, "the subscription (ttl 4 s) was never renewed (%s)",
              renewed);
    cr_assert_str_eq(deleted, "1", "the subscription was not deleted at close");
    cr_assert_str_eq(left, "0");
}

/*
 * A source with webhooks, polled every 5 minutes, against a server started
 * with server_args: after the first sync, the requests of the next wait_s
 * seconds. *patches: subscription renewals; *lists: GET /organisations
 * since the start (one per run: the first sync's is 1). The daemon's log
 * stays in *log (caller frees).
 */
static void requests_after_first_sync(const char *name, const char *server_args, int wait_s,
                                      int *patches, int *lists, char **log)
{
    char *dir = skt_tmpdir(name);
    write_helpers(dir);
    struct server s = server_start(dir, 0, server_args);
    char *db = skt_fmt("%s/out.db", dir);
    int admin = skt_free_port();
    char *hook = skt_fmt("    entities: [Organisation, Person]\n"
                         "    webhook:\n"
                         "      public_url: http://127.0.0.1:%d/\n"
                         "      secret: ${env:SKT_HOOK_SECRET}\n",
                         admin);
    char *src = source_yaml("sis", s.port, 200, "5m", hook);
    struct daemon d = daemon_start(dir, src, db, admin);
    char why[512] = "";
    cr_assert(wait_match(dir, db, s.port, "organisations,persons", 60, why, sizeof(why)),
              "first sync: %s (see %s)", why, d.log);
    sleep((unsigned)wait_s);
    char *url = skt_fmt("http://127.0.0.1:%d/_control/stats", s.port);
    char *stats = get(url);
    char *p = json_expr(stats, "sum(1 for r in d[\"requests\"] if r[\"method\"] == \"PATCH\" "
                               "and r[\"path\"].startswith(\"/v2.0/subscriptions/\"))");
    char *o = json_expr(stats, "sum(1 for r in d[\"requests\"] if r[\"path\"] == "
                               "\"/v2.0/organisations\")");
    daemon_stop(&d);
    server_stop(&s);
    *patches = atoi(p);
    *lists = atoi(o);
    *log = strdup(d.log);
    free(p);
    free(o);
    free(stats);
    free(url);
    free(src);
    free(hook);
    free(db);
    free(dir);
}

/*
 * A server answering a subscription's expires in the past (`--quirk
 * past-expires`): the source renewed it (PATCH) and started a full run
 * every second (measured 11 PATCHes, 23 runs in 12 s with poll_interval
 * 5m). Such an expires is taken as unknown: renewed as if it lived an hour,
 * with one warning.
 */
Test(ss12000_source, an_expires_in_the_past_is_not_renewed_every_second, .timeout = 120)
{
    int patches, lists;
    char *log;
    requests_after_first_sync("ss-past-expires", "--students 10 --quirk past-expires", 6, &patches,
                              &lists, &log);
    char *cmd = skt_fmt("grep -c 'which is not ahead of now' %s", log);
    char *warned = NULL;
    skt_sh(cmd, 10, &warned);
    cr_assert_eq(patches, 0, "%d renewals in 6 s of a subscription that expired (see %s)", patches,
                 log);
    cr_assert_eq(lists, 1,
                 "%d runs, the first sync's and 6 s after, with poll_interval 5m (see %s)",
                 lists, log);
    cr_assert(warned && atoi(warned) == 1, "warned %s times (see %s)", warned, log);
    free(warned);
    free(cmd);
    free(log);
}

/*
 * A renewal wakes the source to PATCH the subscription; the wake-up started
 * a full run as well. Subscriptions of 4 s are renewed every 2 s, and the
 * only run in 7 s (poll_interval 5m) is the first.
 */
Test(ss12000_source, a_subscription_renewal_starts_no_run, .timeout = 120)
{
    int patches, lists;
    char *log;
    requests_after_first_sync("ss-renew-norun", "--students 10 --subscription-ttl 4", 7, &patches,
                              &lists, &log);
    cr_assert(patches >= 2, "%d renewals in 7 s of subscriptions of 4 s (see %s)", patches, log);
    cr_assert_eq(lists, 1,
                 "%d runs, the first sync's and 7 s after, with poll_interval 5m (see %s)",
                 lists, log);
    free(log);
}

/* POST /api/v1/connectors/sis/ACTION with the token; asserts it held (200). */
static void source_action(int admin, const char *action)
{
    char *cmd = skt_fmt("curl -s -o /dev/null -w '%%{http_code}' -X POST -H 'Authorization: Bearer "
                        "t0ken' http://127.0.0.1:%d/api/v1/connectors/sis/%s",
                        admin, action);
    char *code = NULL;
    skt_sh(cmd, 20, &code);
    cr_assert_str_eq(code ? code : "", "200", "%s", action);
    free(code);
    free(cmd);
}

/* Source "sis" of four types, reconciled every 3 s, with a delete guard. */
static char *guard_source_yaml(int port, int max_count, const char *max_fraction)
{
    char *extra = skt_fmt("    full_sync_interval: 3s\n"
                          "    entities: [Organisation, Person, Group, Room]\n"
                          "    delete_guard:\n"
                          "      max_count: %d\n"
                          "      min_count: 0\n"
                          "      max_fraction: %s\n",
                          max_count, max_fraction);
    char *yaml = source_yaml("sis", port, 200, "1s", extra);
    free(extra);
    return yaml;
}

Test(ss12000_source, reconciliation_deletes_and_the_delete_guard_holds_until_released,
     .timeout = 150)
{
    char *dir = skt_tmpdir("ss-recon");
    write_helpers(dir);
    struct server s = server_start(dir, 0, "--students 20 --no-deleted-entities");
    char *db = skt_fmt("%s/out.db", dir);
    char *src = guard_source_yaml(s.port, 3, "50%");
    struct daemon d = daemon_start(dir, src, db, 0);
    char why[512] = "";
    const char *only = "organisations,persons,groups,rooms";
    cr_assert(wait_match(dir, db, s.port, only, 60, why, sizeof(why)), "full sync: %s", why);
    /* One deletion: found by the reconciliation (no deletedEntities at the server). */
    char *r1 = first_id(s.port, "rooms", NULL);
    free(delete_at(s.port, "rooms", r1));
    char *sql = skt_fmt("select count(*) from rooms where id = '%s'", r1);
    cr_assert(wait_rows(dir, db, sql, "0", 30), "the reconciliation did not delete room %s", r1);
    free(sql);
    cr_assert(log_has(&d, "deletions come from the full reconciliation only"));
    /* Five: above max_count, held. The source is paused meanwhile, so one
     * reconciliation finds all five (two finding 2 and 3 would publish them). */
    char *before = db_query(dir, db, "select count(*) from rooms");
    source_action(d.admin, "pause");
    for (int i = 0; i < 5; i++) {
        char *r = first_id(s.port, "rooms", NULL);
        free(delete_at(s.port, "rooms", r));
        free(r);
    }
    source_action(d.admin, "resume");
    long long held = -1;
    for (int i = 0; i < 60 && held != 5; i++) {
        usleep(500000);
        held = metric(d.admin, "skolsync_held_deletions{connector=\"sis\"}");
    }
    cr_assert_eq(held, 5, "held deletions: %lld", held);
    sleep(4); /* another reconciliation: still held, nothing published */
    char *still = db_query(dir, db, "select count(*) from rooms");
    cr_assert_str_eq(still, before, "rows went although the deletions are held");
    cr_assert_eq(metric(d.admin, "skolsync_held_deletions{connector=\"sis\"}"), 5);
    /* Release. */
    char *cmd =
        skt_fmt("curl -s -o /dev/null -w '%%{http_code}' -X POST -H 'Authorization: Bearer t0ken' "
                "http://127.0.0.1:%d/api/v1/connectors/sis/release",
                d.admin);
    char *code = NULL;
    skt_sh(cmd, 10, &code);
    free(cmd);
    cr_assert_str_eq(code, "200");
    bool ok = wait_match(dir, db, s.port, only, 30, why, sizeof(why));
    long long after = metric(d.admin, "skolsync_held_deletions{connector=\"sis\"}");
    daemon_stop(&d);
    server_stop(&s);
    cr_assert(ok, "after the release: %s", why);
    cr_assert_eq(after, 0);
}

/* The Room ids GET .../held lists, sorted, comma-separated ("ERR" if no answer). */
static char *held_rooms(int admin)
{
    char *url = skt_fmt("http://127.0.0.1:%d/api/v1/connectors/sis/held' -H 'Authorization: "
                        "Bearer t0ken",
                        admin);
    char *body = get(url);
    char *ids = json_expr(body, "\",\".join(sorted(d[\"types\"].get(\"Room\", [])))");
    free(body);
    free(url);
    return ids ? ids : strdup("ERR");
}

static bool wait_held(int admin, long long want, int timeout_s)
{
    long long held = -1;
    for (int i = 0; i < timeout_s * 2 && held != want; i++) {
        usleep(500000);
        held = metric(admin, "skolsync_held_deletions{connector=\"sis\"}");
    }
    return held == want;
}

/* Tombstones of id in the rooms topic (real broker only; -1 with the embedded one). */
static int tombstones(const struct daemon *d, const char *id)
{
    const char *brokers = getenv("SK_TEST_BROKERS");
    if (!d->prefix || !brokers)
        return -1;
    char *cmd = skt_fmt("kcat -b %s -X isolation.level=read_committed -C -t %srooms -e -q -Z "
                        "-f '%%k %%s\\n' | grep -c '^%s NULL$'",
                        brokers, d->prefix, id);
    char *out = NULL;
    skt_sh(cmd, 30, &out);
    free(cmd);
    int n = out ? atoi(out) : -1;
    free(out);
    return n;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int count_rows(const char *dir, const char *db, const char *id)
{
    char *sql = skt_fmt("select count(*) from rooms where id = '%s'", id);
    char *n = db_query(dir, db, sql);
    int v = n ? atoi(n) : -1;
    free(n);
    free(sql);
    return v;
}

/* A daemon whose source "sis" holds every deletion (max_count 0), its state
 * kept over restarts, synced with the server's four collections. */
struct held_run {
    char *dir, *db, *estore;
    struct server s;
    struct daemon d;
};

static const char *const HELD_TYPES = "organisations,persons,groups,rooms";

static struct held_run held_run_start(const char *tag, const char *server_args)
{
    struct held_run h = {.dir = skt_tmpdir(tag)};
    write_helpers(h.dir);
    h.estore = skt_fmt("%s/embedded", h.dir);
    embedded_dir = h.estore;
    h.s = server_start(h.dir, 0, server_args);
    h.db = skt_fmt("%s/out.db", h.dir);
    char *src = guard_source_yaml(h.s.port, 0, "90%");
    h.d = daemon_start(h.dir, src, h.db, skt_free_port()); /* the CLI needs its port */
    free(src);
    char why[512] = "";
    cr_assert(wait_match(h.dir, h.db, h.s.port, HELD_TYPES, 60, why, sizeof(why)), "full sync: %s",
              why);
    return h;
}

/* Deletes n rooms at the server (their ids in r, caller frees) and waits until all are held. */
static void held_rooms_delete(struct held_run *h, char **r, int n)
{
    for (int i = 0; i < n; i++) {
        r[i] = first_id(h->s.port, "rooms", NULL);
        free(delete_at(h->s.port, "rooms", r[i]));
    }
    cr_assert(wait_held(h->d.admin, n, 40), "%d deletions not held", n);
}

/*
 * Issue 15, item 7: the held ids are listed (API and `skolsync release
 * --list`), released by id (exactly those published, one tombstone each) or
 * rejected (the rows kept, not held again), and a restart keeps what is
 * still held and never holds again what was released or rejected.
 */
Test(ss12000_source, held_deletions_are_listed_released_by_id_rejected_and_kept_over_a_restart,
     .timeout = 240)
{
    struct held_run h = held_run_start("ss-held", "--students 20 --no-deleted-entities");
    char *dir = h.dir, *db = h.db;
    struct server s = h.s;
    struct daemon d = h.d;
    /* Six rooms go at the server: above max_count 0 (whichever runs find them), held. */
    char *r[6];
    held_rooms_delete(&h, r, 6);
    /* Listed: the API (behind the token) and the command line. */
    char *url = skt_fmt("http://127.0.0.1:%d/api/v1/connectors/sis/held", d.admin);
    cr_assert_eq(skt_http("GET", url, NULL, 10, NULL), 401, "the held list without the token");
    free(url);
    char *ids = held_rooms(d.admin);
    for (int i = 0; i < 6; i++)
        cr_assert(strstr(ids, r[i]), "room %s not in the held list %s", r[i], ids);
    cr_assert_eq(strlen(ids), 6 * 36 + 5, "held list: %s", ids);
    free(ids);
    char *cli = skt_fmt("%s release sis -c %s/skolsync.yaml --list", skt_skolsync(), dir);
    char *out = NULL;
    cr_assert_eq(skt_sh(cli, 30, &out), 0, "release --list: %s", out ? out : "");
    for (int i = 0; i < 6; i++)
        cr_assert(out && strstr(out, r[i]), "release --list lacks %s: %s", r[i], out);
    cr_assert(strstr(out, "6 deletion(s) held"), "release --list: %s", out);
    free(out);
    free(cli);
    /* Release two by id: exactly those go. */
    char *cmd = skt_fmt("curl -s -o /dev/null -w '%%{http_code}' -X POST "
                        "-H 'Authorization: Bearer t0ken' -d '{\"ids\":[\"%s\",\"%s\"]}' "
                        "http://127.0.0.1:%d/api/v1/connectors/sis/release",
                        r[0], r[1], d.admin);
    char *code = NULL;
    skt_sh(cmd, 20, &code);
    free(cmd);
    cr_assert_str_eq(code, "200");
    free(code);
    for (int i = 0; i < 40 && (count_rows(dir, db, r[0]) || count_rows(dir, db, r[1])); i++)
        usleep(250000);
    cr_assert_eq(count_rows(dir, db, r[0]), 0, "released room %s kept", r[0]);
    cr_assert_eq(count_rows(dir, db, r[1]), 0, "released room %s kept", r[1]);
    cr_assert(wait_held(d.admin, 4, 10));
    /* Reject one through the command line: its row stays, it is held no more. */
    cli =
        skt_fmt("%s release sis -c %s/skolsync.yaml --ids %s --reject", skt_skolsync(), dir, r[2]);
    cr_assert_eq(skt_sh(cli, 30, NULL), 0, "release --reject failed");
    free(cli);
    cr_assert(wait_held(d.admin, 3, 10));
    sleep(5); /* reconciliations: nothing published, nothing held again */
    for (int i = 2; i < 6; i++)
        cr_assert_eq(count_rows(dir, db, r[i]), 1, "room %s went although held or rejected", r[i]);
    char *w3[3] = {r[3], r[4], r[5]};
    qsort(w3, 3, sizeof(*w3), cmp_str);
    char *want = skt_fmt("%s,%s,%s", w3[0], w3[1], w3[2]);
    ids = held_rooms(d.admin);
    cr_assert_str_eq(ids, want, "held after release and reject");
    free(ids);
    /* A restart: the three are still held, the released and rejected ones are not. */
    daemon_stop(&d);
    struct daemon d2 = daemon_spawn(dir, false);
    d2.prefix = d.prefix;
    cr_assert(wait_held(d2.admin, 3, 30), "held after the restart");
    ids = held_rooms(d2.admin);
    cr_assert_str_eq(ids, want, "held after the restart");
    free(ids);
    sleep(5); /* reconciliations after the restart */
    cr_assert_eq(metric(d2.admin, "skolsync_held_deletions{connector=\"sis\"}"), 3);
    cr_assert_eq(count_rows(dir, db, r[2]), 1, "the rejected room went after the restart");
    /* A request the API cannot read changes nothing. */
    char *bad =
        skt_fmt("http://127.0.0.1:%d/api/v1/connectors/sis/release' -H 'Authorization: "
                "Bearer t0ken' -d '{\"ids\":[\"not-a-uuid\"]}' -o /dev/null -w '%%{http_code}",
                d2.admin);
    char *bad_code = get(bad);
    cr_assert_str_eq(bad_code, "400", "a release of a bad id");
    free(bad_code);
    free(bad);
    cr_assert_eq(metric(d2.admin, "skolsync_held_deletions{connector=\"sis\"}"), 3);
    /* Release the rest by type: each room has exactly one tombstone. */
    cli = skt_fmt("%s release sis -c %s/skolsync.yaml --type rooms", skt_skolsync(), dir);
    cr_assert_eq(skt_sh(cli, 30, NULL), 0, "release failed");
    free(cli);
    bool ok = wait_held(d2.admin, 0, 20);
    for (int i = 3; i < 6; i++)
        for (int k = 0; k < 40 && count_rows(dir, db, r[i]); k++)
            usleep(250000);
    int rows_left = 0, n_tomb[6];
    for (int i = 3; i < 6; i++)
        rows_left += count_rows(dir, db, r[i]);
    for (int i = 0; i < 6; i++)
        n_tomb[i] = tombstones(&d2, r[i]);
    daemon_stop(&d2);
    server_stop(&s);
    embedded_dir = NULL;
    cr_assert(ok, "still held after releasing all");
    cr_assert_eq(rows_left, 0, "released rooms kept");
    if (d2.prefix)
        for (int i = 0; i < 6; i++)
            cr_assert_eq(n_tomb[i], i == 2 ? 0 : 1, "room %s: %d tombstone(s)", r[i], n_tomb[i]);
    free(h.estore);
}

/*
 * Issue 15, item 7: deletions from /deletedEntities released before a
 * restart are listed again after it (the overlap asks for them again) and
 * neither held nor published again: one tombstone each.
 */
Test(ss12000_source, released_deletions_listed_again_after_a_restart_are_not_held_again,
     .timeout = 200)
{
    struct held_run h = held_run_start("ss-released", "--students 20");
    char *dir = h.dir, *db = h.db;
    struct server s = h.s;
    struct daemon d = h.d;
    char *r[3];
    held_rooms_delete(&h, r, 3);
    char why[512] = "";
    source_action(d.admin, "release");
    cr_assert(wait_match(dir, db, s.port, HELD_TYPES, 30, why, sizeof(why)), "released: %s", why);
    daemon_stop(&d);
    struct daemon d2 = daemon_spawn(dir, false);
    d2.prefix = d.prefix;
    /* deletedEntities lists the three again (after = T0 - overlap) in every run. */
    for (int i = 0; i < 40 && !log_has(&d2, "run started"); i++)
        usleep(250000);
    sleep(6);
    long long held = metric(d2.admin, "skolsync_held_deletions{connector=\"sis\"}");
    bool held_again = log_has(&d2, "delete guard: holding");
    int n_tomb[3];
    for (int i = 0; i < 3; i++)
        n_tomb[i] = tombstones(&d2, r[i]);
    daemon_stop(&d2);
    server_stop(&s);
    embedded_dir = NULL;
    cr_assert_eq(held, 0, "released deletions held again after the restart");
    cr_assert(!held_again, "the delete guard held again after the restart");
    if (d2.prefix)
        for (int i = 0; i < 3; i++)
            cr_assert_eq(n_tomb[i], 1, "room %s: %d tombstone(s)", r[i], n_tomb[i]);
    free(h.estore);
}

/*
 * The T0 rule: an id a run reads is not deleted by that run, although
 * /deletedEntities lists it (deleted and created again with its id at the
 * server before the run). A tombstone after its record would delete it in
 * every sink while the server has it.
 */
Test(ss12000_source, an_id_deleted_and_created_again_before_a_run_is_not_deleted_by_it,
     .timeout = 180)
{
    struct sis_run run = sis_run_start("ss-t0", "--students 10", 200, "    entities: [Room]\n");
    char *dir = run.dir, *db = run.db, *src = run.src;
    struct server s = run.s;
    struct daemon d = run.d;
    char why[512] = "";
    cr_assert(wait_match(dir, db, s.port, "rooms", 60, why, sizeof(why)), "full sync: %s", why);
    daemon_stop(&d);
    /* While no daemon runs: room r goes, and comes back under its id. */
    char *r = first_id(s.port, "rooms", NULL);
    free(delete_at(s.port, "rooms", r));
    char *body = skt_fmt("{\"collection\":\"rooms\",\"entity\":{\"id\":\"%s\","
                         "\"displayName\":\"Återskapad\"}}",
                         r);
    free(ctl(s.port, "create", body));
    free(body);
    struct daemon d2 = daemon_spawn(dir, false);
    d2.prefix = d.prefix;
    /* The first run after the restart reads r (created since the watermark)
     * and then the deletion (after the last run's T0). */
    char *sql = skt_fmt("select count(*) from rooms where id = '%s' and doc like '%%Återskapad%%'",
                        r);
    bool arrived = wait_rows(dir, db, sql, "1", 30);
    for (int i = 0; i < 80 && !log_has(&d2, "run started"); i++)
        usleep(250000);
    sleep(4); /* that run's deletedEntities step, and a few runs more */
    int rows = count_rows(dir, db, r);
    int n_tomb = tombstones(&d2, r);
    bool matches = db_matches(dir, db, s.port, "rooms", why, sizeof(why));
    daemon_stop(&d2);
    server_stop(&s);
    cr_assert(arrived, "room %s created again never arrived", r);
    cr_assert_eq(rows, 1, "room %s, created again, was deleted", r);
    if (d2.prefix)
        cr_assert_eq(n_tomb, 0, "room %s: %d tombstone(s) after its record", r, n_tomb);
    cr_assert(matches, "%s", why);
    free(sql);
    free(r);
    free(src);
    free(db);
}

/* ---- 6. unreachable and broken server --------------------------------------- */

Test(ss12000_source, unreachable_then_broken_server_is_retried_and_others_keep_running,
     .timeout = 150)
{
    char *dir = skt_tmpdir("ss-down");
    write_helpers(dir);
    char *files = skt_fmt("%s/files", dir);
    mkdir(files, 0755);
    char *rooms = skt_fmt("%s/rooms.jsonl", files);
    skt_write(rooms, "{\"id\":\"7e000000-0000-4000-8000-000000000001\",\"meta\":{\"created\":"
                     "\"2024-01-01T00:00:00+01:00\","
                     "\"modified\":\"2024-01-01T00:00:00+01:00\"},\"displayName\":\"Fil "
                     "1\",\"owner\":{\"id\":\"7e000000-0000-4000-8000-0000000000ff\"}}\n");
    int port = skt_free_port();
    char *db = skt_fmt("%s/out.db", dir);
    char *src = source_yaml("sis", port, 200, "1s",
                            "    entities: [Organisation, Person, Group]\n"
                            "    request_timeout: 2s\n");
    char *both = skt_fmt(
        "%s  files:\n    type: jsonl-source\n    path: %s\n    poll_interval: 1s\n", src, files);
    struct daemon d = daemon_start(dir, both, db, 0);
    /* The other source delivers while the SIS is down. */
    cr_assert(wait_rows(dir, db, "select count(*) from rooms", "1", 30),
              "jsonl-source did not deliver");
    sleep(3);
    cr_assert_eq(skt_wait(d.pid, 0), -2, "skolsync died");
    cr_assert(log_has(&d, "retrying in"), "no retry logged");
    /* Back, but broken for a while: 500s, an HTML page, a cut-off page, a bad record. */
    struct server s =
        server_start(dir, port,
                     "--students 20 --fault error500:count=2 --fault html:count=2 "
                     "--fault truncate:count=2 --fault bad_record:count=1,paths=/persons");
    char why[512] = "";
    /* The bad record is dead-lettered: compare what the server has minus nothing but it. */
    bool ok = false;
    for (int i = 0; i < 60 && !ok; i++) {
        ok = db_matches(dir, db, s.port, "organisations,groups", why, sizeof(why));
        if (!ok)
            sleep(1);
    }
    cr_assert(ok, "organisations/groups: %s", why);
    char *np = db_query(dir, db, "select count(*) from persons");
    char *url = skt_fmt("http://127.0.0.1:%d/_control/dump?collection=persons", s.port);
    char *dump = get(url);
    char *want = json_expr(dump, "len(d[\"persons\"])");
    free(dump);
    cr_assert(atoi(np) == atoi(want) - 1 || atoi(np) == atoi(want),
              "persons: %s in the DB, %s at the server", np, want);
    bool dl = false;
    for (int i = 0; i < 20 && !dl; i++) {
        dl = log_has(&d, "is not a UUID");
        if (!dl)
            usleep(250000);
    }
    cr_assert(dl, "the bad record was not dead-lettered");
    cr_assert(log_has(&d, "not a JSON page"), "the HTML/truncated page was not retried");
    char *still = db_query(dir, db, "select count(*) from rooms");
    cr_assert_str_eq(still, "1");
    cr_assert_eq(skt_wait(d.pid, 0), -2, "skolsync died");
    daemon_stop(&d);
    server_stop(&s);
}

/* ---- 7. servers written by others (issue 15) ---------------------------------- */

/* POST /api/v1/reload after the configuration file changed; asserts it reloaded. */
static void reload(const char *dir, int admin, const char *sed_expr)
{
    char *cfg = skt_fmt("%s/skolsync.yaml", dir);
    char *sed = skt_fmt("sed -i '%s' %s", sed_expr, cfg);
    cr_assert_eq(skt_sh(sed, 10, NULL), 0);
    char *cmd = skt_fmt("curl -s -m 70 -X POST -H 'Authorization: Bearer t0ken' "
                        "http://127.0.0.1:%d/api/v1/reload",
                        admin);
    char *answer = NULL;
    skt_sh(cmd, 75, &answer);
    cr_assert(answer && strstr(answer, "\"reloaded\":true"), "reload: %s", answer);
    free(answer);
    free(cmd);
    free(sed);
    free(cfg);
}

/* The number of the server's entities of collection for which a Python condition on e holds. */
static int server_count(int port, const char *collection, const char *cond)
{
    char *url = skt_fmt("http://127.0.0.1:%d/_control/dump?collection=%s", port, collection);
    char *dump = get(url);
    char *expr = skt_fmt("sum(1 for e in d[\"%s\"] if %s)", collection, cond);
    char *n = json_expr(dump, expr);
    int v = n ? atoi(n) : -1;
    free(n);
    free(expr);
    free(dump);
    free(url);
    return v;
}

/* A test's scene: the server, the daemon with source "sis", its first sync done. */
struct scene {
    char *dir, *db, *src;
    struct server s;
    struct daemon d;
};

/*
 * scene_server: a directory, the server (server_args, then the faults JSON
 * unless NULL) and the YAML of source "sis" (page_size 200, poll, opts).
 * scene_start: that, the daemon, and the wait until the collections in only
 * equal the server's.
 */
static struct scene scene_server(const char *name, const char *server_args, const char *faults,
                                 const char *poll, const char *opts)
{
    struct scene sc = {.dir = skt_tmpdir(name)};
    write_helpers(sc.dir);
    sc.s = server_start(sc.dir, 0, server_args);
    if (faults)
        free(ctl(sc.s.port, "faults", faults));
    sc.db = skt_fmt("%s/out.db", sc.dir);
    sc.src = source_yaml("sis", sc.s.port, 200, poll, opts);
    return sc;
}

static struct scene scene_start(const char *name, const char *server_args, const char *faults,
                                const char *poll, const char *opts, const char *only)
{
    struct scene sc = scene_server(name, server_args, faults, poll, opts);
    sc.d = daemon_start(sc.dir, sc.src, sc.db, 0);
    char why[512] = "";
    cr_assert(wait_match(sc.dir, sc.db, sc.s.port, only, 60, why, sizeof(why)),
              "first sync: %s (see %s)", why, sc.d.log);
    return sc;
}

/* Sets a person's givenName at the server: a change for the source to publish. */
static void rename_person(int port, const char *id, const char *given)
{
    char *body = skt_fmt(
        "{\"collection\":\"persons\",\"id\":\"%s\",\"patch\":{\"givenName\":\"%s\"}}", id, given);
    free(ctl(port, "update", body));
    free(body);
}

static void scene_end(struct scene *sc)
{
    daemon_stop(&sc->d);
    server_stop(&sc->s);
    free(sc->src);
    free(sc->db);
    free(sc->dir);
}

/*
 * A server that enforces the spec's required startTime window on
 * /calendarEvents (422 {"detail"} without it). The generated events lie in
 * two weeks (from 2026-10-19 and from 2026-11-02); the window's start is put
 * between them. Then the window moves (a reload): the earlier events leave
 * it and are not deleted, an event ahead of it enters and is published, and
 * an event deleted inside the window is still found by the reconciliation.
 */
Test(ss12000_source, calendar_window_is_sent_and_moving_it_deletes_nothing, .timeout = 180)
{
    /* past: from now back to 2026-10-28 12:00 UTC, in whole days (the gap between the weeks). */
    long long past_days = ((long long)time(NULL) - 1793188800LL) / 86400;
    cr_assert(past_days > 0);
    /* No delete guard: a wrong deletion would be published, not held. */
    char opts[256];
    snprintf(opts, sizeof(opts),
             "    entities: [CalendarEvent]\n"
             "    full_sync_interval: 1h\n"
             "    delete_guard: {max_count: 100000, max_fraction: 100%%}\n"
             "    calendar_window:\n"
             "      past: %lldd\n"
             "      future: 5d\n",
             past_days);
    /* --max-limit: pages of 40, so page tokens must carry the window on. */
    struct scene sc = scene_server(
        "ss-window", "--students 10 --calendar-window 422 --no-deleted-entities --max-limit 40",
        NULL, "1s", opts);
    int port = sc.s.port;
    /* An event ten days ahead: outside a 5-day future, inside a 30-day one. */
    char ahead[64], body[512];
    time_t t = time(NULL) + 10 * 86400;
    strftime(ahead, sizeof(ahead), "%Y-%m-%dT%H:%M:%S+00:00", gmtime(&t));
    char *act = first_id(port, "activities", NULL);
    snprintf(body, sizeof(body),
             "{\"collection\":\"calendarEvents\",\"entity\":{\"activity\":{\"id\":\"%s\"},"
             "\"startTime\":\"%s\",\"endTime\":\"%s\"}}",
             act, ahead, ahead);
    free(act);
    char *created = ctl(port, "create", body);
    char *ahead_id = json_expr(created, "d[\"id\"]");
    cr_assert(ahead_id && strlen(ahead_id) == 36, "create: %s", created);
    free(created);
    sc.d = daemon_start(sc.dir, sc.src, sc.db, 0);
    int week2 =
        server_count(port, "calendarEvents", "\"2026-11\" <= e[\"startTime\"] < \"2026-11-07\"");
    cr_assert(week2 > 40);
    char want[16], want_all[16], sql[128];
    snprintf(want, sizeof(want), "%d", week2);
    snprintf(want_all, sizeof(want_all), "%d", week2 + 1);
    snprintf(sql, sizeof(sql), "select count(*) from calendarEvents where id = '%s'", ahead_id);
    cr_assert(wait_rows(sc.dir, sc.db, "select count(*) from calendarEvents", want, 60),
              "the window's events were not all stored (want %s; see %s)", want, sc.d.log);
    cr_assert(wait_rows(sc.dir, sc.db, sql, "0", 1), "an event outside the window was stored");
    /* The window moves: nothing generated is inside it any more, the event ahead enters. */
    reload(sc.dir, sc.d.admin,
           "s/past: [0-9]*d/past: 1d/; s/future: 5d/future: 30d/; s/full_sync_interval: 1h/"
           "full_sync_interval: 2s/");
    cr_assert(wait_rows(sc.dir, sc.db, sql, "1", 30),
              "the event that entered the window was not stored");
    for (int i = 0; i < 60 && !log_has(&sc.d, "outside the window kept"); i++)
        usleep(500000);
    cr_assert(log_has(&sc.d, "outside the window kept"), "no reconciliation ran; see %s", sc.d.log);
    sleep(3); /* another reconciliation */
    cr_assert(wait_rows(sc.dir, sc.db, "select count(*) from calendarEvents", want_all, 1),
              "events that left the window were deleted");
    /* A deletion inside the window is still a deletion. */
    free(delete_at(port, "calendarEvents", ahead_id));
    cr_assert(wait_rows(sc.dir, sc.db, sql, "0", 30), "a deleted event inside the window stayed");
    /* Every request carried the window. */
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/_control/stats?path=/v2.0/calendarEvents",
             port);
    char *stats = get(url);
    char *bad = json_expr(stats, "sum(1 for r in d[\"requests\"] if r[\"status\"] != 200)");
    cr_assert_str_eq(bad, "0", "requests without the window were refused");
    scene_end(&sc);
    free(bad);
    free(stats);
    free(ahead_id);
}

/*
 * One type answers 422 {"detail"} for ever, one 500, one an HTML page with
 * 200: each fails on its own (status API, metrics, its own backoff), the
 * other types are stored and their deltas arrive while the three keep
 * failing; once the server mends, they are read.
 */
Test(ss12000_source, a_failing_type_never_blocks_the_others, .timeout = 150)
{
    struct scene sc = scene_start(
        "ss-isolate", "--students 20 --fault error500:paths=/resources",
        "{\"status\": {\"code\": 422, \"paths\": [\"/rooms\"]}, \"mix\": {\"probability\": 1, "
        "\"kinds\": [\"html\"], \"paths\": [\"/programmes\"]}}",
        "1s", "    entities: [Organisation, Programme, Person, Group, Resource, Room]\n",
        "organisations,persons,groups");
    int port = sc.s.port, admin = sc.d.admin;
    /* A change of a working type arrives while the others fail. */
    char *p = first_id(port, "persons", NULL);
    rename_person(port, p, "Isolerad");
    char sql[160];
    snprintf(sql, sizeof(sql),
             "select count(*) from persons where id = '%s' and doc like '%%Isolerad%%'", p);
    free(p);
    cr_assert(wait_rows(sc.dir, sc.db, sql, "1", 20), "a person's change did not arrive");
    /* The failing types are visible, with the server's status and reason. */
    char *rooms = api_field(admin, "sis",
                            "[(f[\"status\"], f[\"error\"]) for f in d[\"failing_types\"] if "
                            "f[\"entity\"] == \"rooms\"]");
    char *res = api_field(admin, "sis",
                          "[f[\"status\"] for f in d[\"failing_types\"] if f[\"entity\"] == "
                          "\"resources\"]");
    long long failing =
        metric(admin, "skolsync_source_type_failing{connector=\"sis\",entity=\"rooms\"}");
    char *rooms_rows = db_query(sc.dir, sc.db, "select count(*) from rooms");
    cr_assert(strstr(rooms, "422") && strstr(rooms, "Unprocessable request"), "rooms: %s", rooms);
    cr_assert(strstr(res, "500"), "resources: %s", res);
    cr_assert_eq(failing, 1);
    cr_assert_str_eq(rooms_rows, "0");
    cr_assert(log_has(&sc.d, "programmes fails"), "the HTML page of programmes did not fail it");
    /* Mended: the types come back (within their backoff) and are no longer failing. */
    free(ctl(port, "faults", "{\"clear\": true}"));
    char why[512] = "";
    bool ok =
        wait_match(sc.dir, sc.db, port, "organisations,programmes,persons,groups,resources,rooms",
                   60, why, sizeof(why));
    char *left = api_field(admin, "sis", "len(d[\"failing_types\"])");
    cr_assert(ok, "after the server mended: %s", why);
    cr_assert_str_eq(left, "0");
    scene_end(&sc);
    free(left);
    free(rooms_rows);
    free(res);
    free(rooms);
}

/*
 * /deletedEntities answers an error for ever (500 here; 403, 405, 501, 3xx
 * alike): it fails on its own as a list type does. The run's other records
 * are stored (a change arrives), the API lists it in failing_types, and its
 * T0 stays: a deletion made while it failed is published once it mends.
 * (It blocked the whole source: every poll was thrown away and retried.)
 */
Test(ss12000_source, a_failing_deleted_entities_never_blocks_the_changes, .timeout = 150)
{
    struct scene sc = scene_start(
        "ss-del-fails", "--students 10",
        "{\"status\": {\"code\": 500, \"body\": {\"message\": \"deletions broken\"}, "
        "\"paths\": [\"/deletedEntities\"]}}",
        "1s", "    entities: [Organisation, Person]\n", "organisations,persons");
    int port = sc.s.port, admin = sc.d.admin;
    char *gone = first_id(port, "persons", NULL);
    free(delete_at(port, "persons", gone));
    char *p = first_id(port, "persons", NULL);
    rename_person(port, p, "Trots");
    char sql[160];
    snprintf(sql, sizeof(sql),
             "select count(*) from persons where id = '%s' and doc like '%%Trots%%'", p);
    free(p);
    cr_assert(wait_rows(sc.dir, sc.db, sql, "1", 30),
              "a person's change did not arrive while deletedEntities failed (see %s)", sc.d.log);
    char *del = NULL;
    for (int i = 0; i < 40 && !(del && strstr(del, "500")); i++) {
        free(del);
        del = api_field(admin, "sis",
                        "[(f[\"status\"], f[\"error\"]) for f in d[\"failing_types\"] if "
                        "f[\"entity\"] == \"deletedEntities\"]");
        usleep(250000);
    }
    cr_assert(del && strstr(del, "500") && strstr(del, "deletions broken"), "failing: %s", del);
    snprintf(sql, sizeof(sql), "select count(*) from persons where id = '%s'", gone);
    cr_assert(wait_rows(sc.dir, sc.db, sql, "1", 1), "deleted without deletedEntities");
    /* Mended: the deletion made while it failed is not lost. */
    free(ctl(port, "faults", "{\"clear\": true}"));
    cr_assert(wait_rows(sc.dir, sc.db, sql, "0", 40), "the deletion was lost (see %s)", sc.d.log);
    char *left = api_field(admin, "sis", "len(d[\"failing_types\"])");
    cr_assert_str_eq(left, "0");
    scene_end(&sc);
    free(left);
    free(del);
    free(gone);
}

/*
 * A server that answers 400 to every request carrying a pageToken: the
 * query starts over once, then the type fails on its own with the reason
 * (it started over for ever while the source said running and /ready 200).
 * A type that fits on one page is stored.
 */
Test(ss12000_source, a_server_refusing_every_page_token_fails_the_type, .timeout = 120)
{
    struct scene sc = scene_server("ss-refuse-tokens", "--students 30 --quirk refuse-page-tokens",
                                   NULL, "1s", "    entities: [Organisation, Person]\n");
    /* organisations fit on one page of 200, persons need pages of 20 */
    free(sc.src);
    sc.src = source_yaml("sis", sc.s.port, 20, "1s",
                         "    entities: [Organisation, Person]\n");
    cr_assert(server_count(sc.s.port, "organisations", "True") < 20);
    cr_assert(server_count(sc.s.port, "persons", "True") > 20);
    sc.d = daemon_start(sc.dir, sc.src, sc.db, 0);
    char *persons = NULL;
    for (int i = 0; i < 120 && !(persons && strstr(persons, "400")); i++) {
        free(persons);
        persons = api_field(sc.d.admin, "sis",
                            "[(f[\"status\"], f[\"error\"]) for f in d[\"failing_types\"] if "
                            "f[\"entity\"] == \"persons\"]");
        usleep(250000);
    }
    char why[512] = "";
    bool orgs = wait_match(sc.dir, sc.db, sc.s.port, "organisations", 30, why, sizeof(why));
    cr_assert(persons && strstr(persons, "400"), "persons is not failing: %s (see %s)", persons,
              sc.d.log);
    cr_assert(log_has(&sc.d, "the server refuses its own page tokens"), "see %s", sc.d.log);
    cr_assert(orgs, "organisations: %s", why);
    scene_end(&sc);
    free(persons);
}

/*
 * A server whose quirk gives persons (more than one page of 20) a pageToken
 * the source cannot follow, organisations fitting on one page: persons fail
 * on their own with a reason holding each of want[], organisations are
 * stored.
 */
static void bad_token_fails_the_type(const char *quirk, const char *const want[2])
{
    char *args = skt_fmt("--students 30 --quirk %s", quirk);
    struct scene sc = scene_server("ss-bad-token", args, NULL, "1s", NULL);
    free(sc.src);
    sc.src = source_yaml("sis", sc.s.port, 20, "1s", "    entities: [Organisation, Person]\n");
    cr_assert(server_count(sc.s.port, "organisations", "True") < 20);
    cr_assert(server_count(sc.s.port, "persons", "True") > 20);
    sc.d = daemon_start(sc.dir, sc.src, sc.db, 0);
    char *persons = NULL;
    for (int i = 0; i < 120 && !(persons && strstr(persons, want[1])); i++) {
        free(persons);
        persons = api_field(sc.d.admin, "sis",
                            "[f[\"error\"] for f in d[\"failing_types\"] if "
                            "f[\"entity\"] == \"persons\"]");
        usleep(250000);
    }
    char why[512] = "";
    bool orgs = wait_match(sc.dir, sc.db, sc.s.port, "organisations", 30, why, sizeof(why));
    cr_assert(persons && strstr(persons, want[0]) && strstr(persons, want[1]),
              "%s: persons is not failing: %s (see %s)", quirk, persons, sc.d.log);
    cr_assert(orgs, "organisations: %s", why);
    scene_end(&sc);
    free(persons);
    free(args);
}

/*
 * A page whose pageToken is a number (5), not a string: the type fails on
 * its own with the reason; it was taken as "no more pages", the records
 * after the page were lost and the watermark moved past them.
 */
Test(ss12000_source, a_page_token_that_is_not_a_string_fails_the_type, .timeout = 120)
{
    bad_token_fails_the_type("integer-token",
                             (const char *const[]){"pageToken is a number", "not a string"});
}

/*
 * A pageToken of 20 000 bytes: followed, it made a URL servers refuse and a
 * cursor record near the broker's message size limit. The type fails on its
 * own with the reason; the others are stored.
 */
Test(ss12000_source, a_page_token_too_long_to_follow_fails_the_type, .timeout = 120)
{
    bad_token_fails_the_type("huge-token",
                             (const char *const[]){"pageToken is 20", "more than 16384"});
}

/*
 * Regression (hostile input #8): a server that returns the same pageToken
 * for ever, or new tokens with empty pages for ever, kept the source
 * "running" with /ready green. That failed the whole source (FATAL), which
 * then restarted for ever and stored nothing of any type; the spec allows
 * empty pages with a token (a server filtering after paging sends many).
 * Now the type fails on its own with the reason, the others are stored: one
 * failed poll (the first hit), then the type alone, its backoff growing
 * (the pages read after the failed poll do not clear it: no loop).
 */
static void endless_paging_fails_the_type(const char *quirk, const char *reason)
{
    char *args = skt_fmt("--students 30 --quirk %s", quirk);
    struct scene sc = scene_server("ss-endless", args, NULL, "1s", NULL);
    /* organisations fit on one page of 20 (no token to follow), persons do not */
    free(sc.src);
    sc.src = source_yaml("sis", sc.s.port, 20, "1s", "    entities: [Organisation, Person]\n");
    cr_assert(server_count(sc.s.port, "organisations", "True") < 20);
    cr_assert(server_count(sc.s.port, "persons", "True") > 20);
    sc.d = daemon_start(sc.dir, sc.src, sc.db, 0);
    char *persons = NULL;
    for (int i = 0; i < 160 && !(persons && strstr(persons, reason)); i++) {
        free(persons);
        persons = api_field(sc.d.admin, "sis",
                            "[f[\"error\"] for f in d[\"failing_types\"] if "
                            "f[\"entity\"] == \"persons\"]");
        usleep(250000);
    }
    char why[512] = "";
    bool orgs = wait_match(sc.dir, sc.db, sc.s.port, "organisations", 30, why, sizeof(why));
    /* Two more tries of persons after their backoffs, each failing it alone. */
    bool again = false;
    for (int i = 0; i < 80 && !again; i++) {
        again = log_has(&sc.d, "persons fails (4 times in a row)");
        if (!again)
            usleep(250000);
    }
    char *state =
        api_field(sc.d.admin, "sis", "d[\"state\"] + chr(32) + str(d.get(\"restarts\", 0))");
    char *cmd = skt_fmt("grep -c 'paging would never end; retrying in' %s", sc.d.log);
    char *failed_polls = NULL;
    skt_sh(cmd, 10, &failed_polls);
    free(cmd);
    cr_assert(persons && strstr(persons, reason),
              "%s: persons is not failing with \"%s\": %s (see %s)", quirk, reason, persons,
              sc.d.log);
    cr_assert(orgs, "%s: organisations: %s (see %s)", quirk, why, sc.d.log);
    cr_assert(again, "%s: persons was not tried again and failed alone (see %s)", quirk, sc.d.log);
    cr_assert(state && strstr(state, " 0") && !strstr(state, "failed"),
              "%s: the source failed or restarted: %s (see %s)", quirk, state, sc.d.log);
    cr_assert(failed_polls && atoi(failed_polls) == 1,
              "%s: %s failed poll(s) for the paging guard, want 1: a loop (see %s)", quirk,
              failed_polls, sc.d.log);
    scene_end(&sc);
    free(failed_polls);
    free(state);
    free(persons);
    free(args);
}

Test(ss12000_source, a_page_token_that_comes_back_fails_the_type, .timeout = 150)
{
    endless_paging_fails_the_type("loop-token", "a pageToken it had sent before");
}

Test(ss12000_source, empty_pages_for_ever_fail_the_type, .timeout = 150)
{
    endless_paging_fails_the_type("endless-empty-pages", "empty pages in a row");
}

/*
 * /deletedEntities answers 200 without data (IST's outage shape,
 * {"code": "source_unavailable", "message": ...}): an error, not "no
 * deletions". It was taken for none and T0 moved on: with a short overlap
 * a deletion made meanwhile was lost until the next full sync.
 */
Test(ss12000_source, deleted_entities_without_data_is_an_error_not_no_deletions, .timeout = 150)
{
    struct scene sc = scene_start(
        "ss-del-nodata", "--students 10",
        "{\"status\": {\"code\": 200, \"body\": {\"code\": \"source_unavailable\", "
        "\"message\": \"Source system temporarily unavailable\"}, "
        "\"paths\": [\"/deletedEntities\"]}}",
        "1s", "    entities: [Organisation, Person]\n    overlap: 1s\n", "organisations,persons");
    int port = sc.s.port, admin = sc.d.admin;
    char *gone = first_id(port, "persons", NULL);
    free(delete_at(port, "persons", gone));
    char *del = NULL;
    for (int i = 0; i < 80 && !(del && strstr(del, "no data")); i++) {
        free(del);
        del = api_field(admin, "sis",
                        "[f[\"error\"] for f in d[\"failing_types\"] if "
                        "f[\"entity\"] == \"deletedEntities\"]");
        usleep(250000);
    }
    cr_assert(del && strstr(del, "the page has no data: Source system temporarily unavailable"),
              "deletedEntities is not failing: %s (see %s)", del, sc.d.log);
    sleep(3); /* longer than the overlap */
    char sql[128];
    snprintf(sql, sizeof(sql), "select count(*) from persons where id = '%s'", gone);
    free(ctl(port, "faults", "{\"clear\": true}"));
    cr_assert(wait_rows(sc.dir, sc.db, sql, "0", 40), "the deletion was lost (see %s)", sc.d.log);
    scene_end(&sc);
    free(del);
    free(gone);
}

/*
 * Transient 503s in long chains whose tokens are the same for the same
 * page (offsets): a poll that fails is repeated from the older cursor and
 * reads the same tokens again. That is no paging loop; the source made it
 * one and failed (FATAL "a pageToken it had sent before"). Full listings of
 * 50 pages, deduplicated, read up to 40 pages in a poll.
 */
Test(ss12000_source, a_transient_error_in_a_chain_of_stable_tokens_is_no_loop, .timeout = 150)
{
    struct scene sc = scene_server("ss-stable-tokens", "--students 200 --quirk stable-tokens",
                                   NULL, "1s", NULL);
    free(sc.src);
    sc.src = source_yaml("sis", sc.s.port, 10, "1s",
                         "    entities: [Person]\n    full_sync_interval: 1s\n");
    cr_assert(server_count(sc.s.port, "persons", "True") > 450);
    sc.d = daemon_start(sc.dir, sc.src, sc.db, 0);
    char why[512] = "";
    cr_assert(wait_match(sc.dir, sc.db, sc.s.port, "persons", 90, why, sizeof(why)),
              "first sync: %s (see %s)", why, sc.d.log);
    free(ctl(sc.s.port, "faults",
             "{\"unavailable\": {\"probability\": 0.05, \"retry_after\": 0, "
             "\"paths\": [\"/persons\"]}}"));
    sleep(20);
    free(ctl(sc.s.port, "faults", "{\"clear\": true}"));
    char *p = first_id(sc.s.port, "persons", NULL);
    rename_person(sc.s.port, p, "Stabil");
    char sql[160];
    snprintf(sql, sizeof(sql),
             "select count(*) from persons where id = '%s' and doc like '%%Stabil%%'", p);
    free(p);
    bool arrived = wait_rows(sc.dir, sc.db, sql, "1", 30);
    cr_assert(!log_has(&sc.d, "a pageToken it had sent before"), "a repeat called a loop: see %s",
              sc.d.log);
    cr_assert(log_has(&sc.d, "HTTP 503"), "no 503 was met: see %s", sc.d.log);
    cr_assert(arrived, "a change did not arrive (see %s)", sc.d.log);
    scene_end(&sc);
}

/*
 * `run --once` against a server where a type answers 500 for ever and
 * another a valid JSON body that is not a page: the run finishes, with every
 * other type stored, and the log says what the server said (not "cut-off or
 * invalid JSON" for valid JSON).
 */
Test(ss12000_source, run_once_finishes_although_a_type_fails_for_ever, .timeout = 120)
{
    struct scene sc = scene_server(
        "ss-once", "--students 10 --fault error500:paths=/rooms",
        "{\"status\": {\"code\": 200, \"body\": [1, 2], \"paths\": [\"/programmes\"]}}", "1s",
        "    entities: [Organisation, Programme, Person, Room]\n");
    sc.d = daemon_run(sc.dir, sc.src, sc.db, 0, true);
    int rc = skt_wait(sc.d.pid, 90000);
    untrack(sc.d.pid);
    sc.d.pid = 0;
    char why[512] = "";
    bool ok = db_matches(sc.dir, sc.db, sc.s.port, "organisations,persons", why, sizeof(why));
    cr_assert_eq(rc, 0, "run --once did not finish with 0 (%d); see %s", rc, sc.d.log);
    cr_assert(ok, "%s", why);
    cr_assert(log_has(&sc.d, "valid JSON, but a list, not a page object"), "see %s", sc.d.log);
    cr_assert(!log_has(&sc.d, "cut-off or invalid JSON"), "valid JSON called cut-off");
    scene_end(&sc);
}

/*
 * A server that does not serve a type (404): one info line, the skipped
 * gauge, and the type is not asked again by the delta runs that follow (only
 * at its next full sync).
 */
Test(ss12000_source, a_type_the_server_lacks_is_skipped_quietly_until_the_next_full_sync,
     .timeout = 120)
{
    struct scene sc = scene_start(
        "ss-404", "--students 10",
        "{\"status\": {\"code\": 404, \"body\": {\"code\": \"not_found\"}, \"paths\": "
        "[\"/rooms\"]}}",
        "500ms", "    entities: [Organisation, Room, Person]\n    full_sync_interval: 1h\n",
        "organisations,persons");
    sleep(4); /* several delta runs */
    char *url = skt_fmt("http://127.0.0.1:%d/_control/stats?path=/v2.0/rooms", sc.s.port);
    char *stats = get(url);
    char *asked = json_expr(stats, "len(d[\"requests\"])");
    free(stats);
    free(url);
    url = skt_fmt("http://127.0.0.1:%d/_control/stats?path=/v2.0/persons", sc.s.port);
    stats = get(url);
    char *persons = json_expr(stats, "len(d[\"requests\"])");
    long long skipped =
        metric(sc.d.admin, "skolsync_source_type_skipped{connector=\"sis\",entity=\"rooms\"}");
    char *cmd = skt_fmt("grep -c 'does not serve rooms' %s", sc.d.log);
    char *lines = NULL;
    skt_sh(cmd, 5, &lines);
    cr_assert_str_eq(asked, "1", "rooms asked %s times", asked);
    cr_assert(persons && atoi(persons) > 3, "no delta runs followed (%s)", persons);
    cr_assert_eq(skipped, 1);
    cr_assert(lines && atoi(lines) == 1, "log lines: %s", lines ? lines : "");
    cr_assert(!log_has(&sc.d, "warn  sis: GET"), "a 404 was logged as a warning");
    scene_end(&sc);
    free(lines);
    free(cmd);
    free(persons);
    free(stats);
    free(url);
    free(asked);
}

/*
 * A server on naive datetimes writes meta.modified without an offset. They
 * are read as server_timezone (default Europe/Stockholm) time, with one
 * warning: the records carry the offset, the watermark moves (deltas ask
 * meta.modified.after), the dedupe holds (delta runs publish nothing
 * again), and a change arrives.
 */
Test(ss12000_source, timestamps_without_an_offset_are_read_in_the_server_timezone, .timeout = 120)
{
    /* The dump has the offsets the list left out: equal means they were put back right. */
    const char *only = "organisations,persons,rooms";
    struct scene sc = scene_start(
        "ss-naive", "--students 10 --naive-timestamps", NULL, "500ms",
        "    entities: [Organisation, Person, Room]\n    full_sync_interval: 1h\n", only);
    int port = sc.s.port;
    char *first = api_field(sc.d.admin, "sis", "d[\"records\"]");
    sleep(4); /* delta runs */
    char *later = api_field(sc.d.admin, "sis", "d[\"records\"]");
    char *url = skt_fmt("http://127.0.0.1:%d/_control/stats?path=/v2.0/persons", port);
    char *stats = get(url);
    char *deltas = json_expr(stats, "sum(1 for r in d[\"requests\"] if any(k == "
                                    "\"meta.modified.after\" for k, v in r[\"params\"]))");
    char *p = first_id(port, "persons", NULL);
    rename_person(port, p, "Naiv");
    char why[512] = "";
    bool changed = wait_match(sc.dir, sc.db, port, only, 20, why, sizeof(why));
    char *cmd = skt_fmt("grep -c 'without an offset' %s", sc.d.log);
    char *warnings = NULL;
    skt_sh(cmd, 5, &warnings);
    cr_assert_str_eq(later, first, "delta runs published again (dedupe off)");
    cr_assert(deltas && atoi(deltas) > 0, "no delta asked meta.modified.after (no watermark)");
    cr_assert(changed, "the change did not arrive: %s", why);
    cr_assert(warnings && atoi(warnings) == 1, "warnings: %s", warnings ? warnings : "");
    scene_end(&sc);
    free(warnings);
    free(cmd);
    free(p);
    free(deltas);
    free(stats);
    free(url);
    free(later);
    free(first);
}

/* The rooms read again as a version dead-lettered before, once it is want (or 10 s). */
static long long rooms_bad_again(const struct scene *sc, long long want)
{
    long long again = 0;
    for (int i = 0; i < 40 && again < want; i++) {
        usleep(250000);
        again =
            metric(sc->d.admin,
                   "skolsync_source_records_bad_again_total{connector=\"sis\",entity=\"rooms\"}");
    }
    return again;
}

/*
 * A record that fails validation (a Room without its required owner) sits
 * in the overlap of every delta query (modified and created): it is
 * dead-lettered once, and each later sight of the same version is counted
 * (skolsync_source_records_bad_again_total), not sent again. A new version
 * of it that is valid is published.
 */
Test(ss12000_source, a_bad_record_is_dead_lettered_once_per_version, .timeout = 120)
{
    struct scene sc = scene_start(
        "ss-bad-once", "--students 10", NULL, "500ms",
        "    entities: [Organisation, Room]\n    full_sync_interval: 1h\n    validation: strict\n",
        "organisations,rooms");
    int port = sc.s.port;
    char *created =
        ctl(port, "create",
            "{\"collection\": \"rooms\", \"entity\": {\"displayName\": \"Utan ägare\"}}");
    char *id = json_expr(created, "d[\"id\"]");
    cr_assert(id && strlen(id) == 36, "create: %s", created);
    long long again = rooms_bad_again(&sc, 3);
    char *dead = api_field(sc.d.admin, "sis", "d[\"dead_lettered\"]");
    /* Mended at the server: the new version is published. */
    char *owner = first_id(port, "organisations", NULL);
    char *body = skt_fmt("{\"collection\":\"rooms\",\"id\":\"%s\",\"patch\":{\"owner\":{\"id\":"
                         "\"%s\"}}}",
                         id, owner);
    free(ctl(port, "update", body));
    char *sql = skt_fmt("select count(*) from rooms where id = '%s'", id);
    bool stored = wait_rows(sc.dir, sc.db, sql, "1", 20);
    cr_assert_geq(again, 3, "the bad version was not counted again (%lld)", again);
    cr_assert_str_eq(dead, "1", "dead-lettered %s times", dead);
    cr_assert(stored, "the mended version was not published");
    scene_end(&sc);
    free(sql);
    free(body);
    free(owner);
    free(dead);
    free(id);
    free(created);
}

/*
 * A number a double does not hold exactly (a 19-digit vendor id) was stored
 * changed: the pages had no check at all (the jsonl-source's lines had). The
 * page's parse finds it; its record is dead-lettered with the position and
 * its text as sent, once per version like a record the codec refuses; the
 * other record of the same page is stored; the version mended is published.
 */
Test(ss12000_source, a_number_a_double_does_not_hold_is_dead_lettered_once_per_version,
     .timeout = 120)
{
    struct scene sc = scene_start(
        "ss-inexact", "--students 10", NULL, "500ms",
        "    entities: [Organisation, Room]\n    full_sync_interval: 1h\n", "organisations,rooms");
    int port = sc.s.port;
    char *owner = first_id(port, "organisations", NULL);
    char *body = skt_fmt("{\"collection\": \"rooms\", \"entity\": {\"displayName\": \"Stort "
                         "tal\", \"owner\": {\"id\": \"%s\"}, \"vendorId\": "
                         "12345678901234567890}}",
                         owner);
    char *created = ctl(port, "create", body);
    free(body);
    char *id = json_expr(created, "d[\"id\"]");
    cr_assert(id && strlen(id) == 36, "create: %s", created);
    body = skt_fmt("{\"collection\": \"rooms\", \"entity\": {\"displayName\": \"Litet tal\", "
                   "\"owner\": {\"id\": \"%s\"}, \"vendorId\": 1234567890}}",
                   owner);
    char *good = ctl(port, "create", body);
    free(body);
    char *good_id = json_expr(good, "d[\"id\"]");
    char *sql = skt_fmt("select count(*) from rooms where id = '%s'", good_id);
    bool good_stored = wait_rows(sc.dir, sc.db, sql, "1", 20);
    free(sql);
    long long again = rooms_bad_again(&sc, 2);
    char *dead = api_field(sc.d.admin, "sis", "d[\"dead_lettered\"]");
    bool logged = log_has(&sc.d, "Room: a number a double does not hold exactly at byte ");
    sql = skt_fmt("select count(*) from rooms where id = '%s'", id);
    char *stored_bad = db_query(sc.dir, sc.db, sql);
    body = skt_fmt("{\"collection\":\"rooms\",\"id\":\"%s\",\"patch\":{\"vendorId\":7}}", id);
    free(ctl(port, "update", body));
    bool mended = wait_rows(sc.dir, sc.db, sql, "1", 20);
    cr_assert(good_stored, "the other record of the page was not stored");
    cr_assert_str_eq(stored_bad, "0", "the record was stored with its number changed");
    cr_assert(logged, "not dead-lettered with its position; see %s", sc.d.log);
    cr_assert_str_eq(dead, "1", "dead-lettered %s times", dead);
    cr_assert_geq(again, 2, "the bad version was not counted again (%lld)", again);
    cr_assert(mended, "the mended version was not published");
    scene_end(&sc);
    free(stored_bad);
    free(sql);
    free(body);
    free(dead);
    free(good_id);
    free(good);
    free(id);
    free(created);
    free(owner);
}

/*
 * validation: lenient (the default) publishes a record that lacks a field
 * SS 12000 requires, as servers on Skolverket's profile send them, and
 * counts it (skolsync_source_records_incomplete_total); nothing is
 * dead-lettered. (Strict: a_bad_record_is_dead_lettered_once_per_version.)
 */
Test(ss12000_source, lenient_validation_publishes_a_record_lacking_a_required_field, .timeout = 120)
{
    struct scene sc = scene_start("ss-lenient", "--students 10", NULL, "500ms",
                                  "    entities: [Organisation, Room]\n", "organisations,rooms");
    free(ctl(sc.s.port, "create",
             "{\"collection\": \"rooms\", \"entity\": {\"displayName\": \"Utan ägare\"}}"));
    char why[512] = "";
    bool ok = wait_match(sc.dir, sc.db, sc.s.port, "organisations,rooms", 30, why, sizeof(why));
    long long incomplete = metric(
        sc.d.admin, "skolsync_source_records_incomplete_total{connector=\"sis\",entity=\"rooms\"}");
    char *dead = api_field(sc.d.admin, "sis", "d[\"dead_lettered\"]");
    cr_assert(ok, "the room without an owner was not stored: %s", why);
    cr_assert_geq(incomplete, 1);
    cr_assert_str_eq(dead, "0");
    scene_end(&sc);
    free(dead);
}

/*
 * Issue 15's "done when", all at once, with default options (every type):
 * a server that enforces the calendar window (422 {"detail"} without it),
 * serves only some collections (404 for three), and writes timestamps
 * without an offset. `run --once` finishes and the target holds everything
 * the server lists; then a running daemon gets a change, a creation and a
 * deletion within a poll or two.
 */
Test(ss12000_source, default_options_against_a_strict_partial_naive_server, .timeout = 300)
{
    const char *only = "organisations,programmes,syllabuses,schoolUnitOfferings,studyPlans,"
                       "persons,duties,groups,placements,activities,calendarEvents,attendances,"
                       "attendanceEvents,attendanceSchedules,absences";
    struct scene sc =
        scene_server("ss-strict", "--students 10 --calendar-window 422 --naive-timestamps",
                     "{\"status\": {\"code\": 404, \"body\": {\"code\": \"not_found\"}, \"paths\": "
                     "[\"/rooms\", \"/resources\", \"/grades\"]}}",
                     "1s", NULL);
    int port = sc.s.port;
    sc.d = daemon_run(sc.dir, sc.src, sc.db, 0, true);
    int rc = skt_wait(sc.d.pid, 150000);
    untrack(sc.d.pid);
    sc.d.pid = 0;
    char why[512] = "";
    cr_assert_eq(rc, 0, "run --once did not finish with 0 (%d); see %s", rc, sc.d.log);
    cr_assert(db_matches(sc.dir, sc.db, port, only, why, sizeof(why)), "run --once: %s", why);
    cr_assert(!log_has(&sc.d, "cut-off or invalid JSON"), "see %s", sc.d.log);

    /* a running daemon: a change, a creation and a deletion arrive */
    unlink(sc.db);
    sc.d = daemon_start(sc.dir, sc.src, sc.db, 0);
    cr_assert(wait_match(sc.dir, sc.db, port, only, 90, why, sizeof(why)), "daemon: %s (see %s)",
              why, sc.d.log);
    char *p = first_id(port, "persons", NULL);
    rename_person(port, p, "Ändrad");
    free(ctl(port, "create",
             "{\"collection\":\"persons\",\"entity\":{\"givenName\":\"Ny\",\"familyName\":"
             "\"Elev\"}}"));
    char *g = first_id(port, "groups", NULL);
    free(delete_at(port, "groups", g));
    cr_assert(wait_match(sc.dir, sc.db, port, only, 15, why, sizeof(why)),
              "the change, creation and deletion did not all arrive: %s (see %s)", why, sc.d.log);
    scene_end(&sc);
    free(g);
    free(p);
}

/* POSTs a callback naming Person to the source "sis" with the right secret. */
static void callback_person(int admin)
{
    char *cmd = skt_fmt(
        "curl -s -o /dev/null -w '%%{http_code}' -X POST -d '{\"modifiedEntities\":[\"Person\"]}' "
        "http://127.0.0.1:%d/hooks/sis/" HOOK_SECRET,
        admin);
    char *code = NULL;
    skt_sh(cmd, 10, &code);
    cr_assert_str_eq(code, "200");
    free(code);
    free(cmd);
}

/* Seconds until the person's row holds given (at most limit_s), or -1. */
static double seconds_until(const char *dir, const char *db, const char *person, const char *given,
                            double limit_s)
{
    char *sql = skt_fmt("select count(*) from persons where id = '%s' and doc like '%%%s%%'",
                        person, given);
    int64_t t0 = sk_mono_ms();
    double took = -1;
    while ((sk_mono_ms() - t0) / 1000.0 < limit_s) {
        char *seen = db_query(dir, db, sql);
        bool ok = seen && strcmp(seen, "1") == 0;
        free(seen);
        if (ok) {
            took = (sk_mono_ms() - t0) / 1000.0;
            break;
        }
        usleep(50000);
    }
    free(sql);
    return took;
}

/* A synced daemon with a webhook source `sis` over the given types (collections for wait_match). */
struct hook_scene {
    char *dir, *db, *src;
    struct server s;
    struct daemon d;
    int admin;
};

static struct hook_scene hook_scene_start(const char *tag, const char *entities,
                                          const char *collections, const char *debounce)
{
    struct hook_scene h = {.dir = skt_tmpdir(tag)};
    write_helpers(h.dir);
    h.s = server_start(h.dir, 0, "--students 10");
    h.db = skt_fmt("%s/out.db", h.dir);
    h.admin = skt_free_port();
    char *extra = skt_fmt("    entities: [%s]\n"
                          "    webhook:\n"
                          "      public_url: http://127.0.0.1:%d\n"
                          "      secret: ${env:SKT_HOOK_SECRET}\n"
                          "      debounce: %s\n",
                          entities, h.admin, debounce);
    h.src = source_yaml("sis", h.s.port, 200, "10m", extra);
    free(extra);
    h.d = daemon_start(h.dir, h.src, h.db, h.admin);
    char why[512] = "";
    cr_assert(wait_match(h.dir, h.db, h.s.port, collections, 60, why, sizeof(why)), "full sync: %s",
              why);
    return h;
}

static void hook_scene_end(struct hook_scene *h)
{
    daemon_stop(&h->d);
    server_stop(&h->s);
    free(h->src);
    free(h->db);
    free(h->dir);
}

/*
 * Webhook debounce on the leading edge: with a debounce of 6 s, the first
 * callback after a quiet spell polls at once (it waited the whole debounce
 * before); one right after it joins a poll a debounce later.
 */
Test(ss12000_source, the_first_callback_after_a_quiet_spell_polls_at_once, .timeout = 150)
{
    struct hook_scene h =
        hook_scene_start("ss-lead", "Organisation, Person", "organisations,persons", "6s");
    free(ctl(h.s.port, "reset",
             "{\"data\":false,\"stats\":false,\"faults\":false,\"tokens\":false,"
             "\"subscriptions\":true}")); /* only our callbacks from here */
    sleep(7);                             /* quiet for longer than the debounce */
    char *person = first_id(h.s.port, "persons", NULL);
    rename_person(h.s.port, person, "Genast");
    callback_person(h.admin);
    double first = seconds_until(h.dir, h.db, person, "Genast", 12);
    rename_person(h.s.port, person, "Sedan");
    callback_person(h.admin);
    double second = seconds_until(h.dir, h.db, person, "Sedan", 15);
    hook_scene_end(&h);
    cr_log_info("leading-edge debounce: first change %.2f s, the one right after %.2f s", first,
                second);
    cr_assert(first >= 0 && first < 3.0, "the first callback waited for the debounce: %.2f s",
              first);
    cr_assert(second >= 0, "the callback right after it brought nothing");
    free(person);
}

/*
 * Pages shaped like Skolverket's reference API (its test resources and
 * Postman collection; tests/fixtures/skolverket-profile/ are our own made-up
 * records in those shapes): no meta, no organisationType, duties and
 * groups without startDate, enrolments without startDate, civicNo
 * nationality "SWE", only five collections served (the rest 404), no
 * /deletedEntities. With default options every record arrives.
 */
Test(ss12000_source, pages_shaped_like_skolverkets_reference_api_sync_completely, .timeout = 120)
{
    const char *pages = SK_SOURCE_DIR "/tests/fixtures/skolverket-profile";
    char *args = skt_fmt("--pages %s --no-deleted-entities", pages);
    struct scene sc = scene_server("ss-skolverket", args, NULL, "1s", NULL);
    free(args);
    free(sc.src);
    sc.src =
        skt_fmt("  sis:\n    type: ss12000-source\n    url: http://127.0.0.1:%d/v2.0\n", sc.s.port);
    sc.d = daemon_run(sc.dir, sc.src, sc.db, 0, true);
    int rc = skt_wait(sc.d.pid, 90000);
    untrack(sc.d.pid);
    sc.d.pid = 0;
    cr_assert_eq(rc, 0, "run --once did not finish with 0 (%d); see %s", rc, sc.d.log);
    /* check.py: every id of every page is a row of its collection's table, and no other. */
    char *check = skt_fmt("%s/check.py", sc.dir);
    skt_write(check,
              "import glob, json, os, sqlite3, sys\n"
              "db = sqlite3.connect(sys.argv[1])\n"
              "want = {}\n"
              "for p in glob.glob(os.path.join(sys.argv[2], '*.json')):\n"
              "    c = os.path.basename(p).split('.')[0]\n"
              "    want.setdefault(c, set()).update(e['id'] for e in json.load(open(p))['data'])\n"
              "n = 0\n"
              "for c, ids in sorted(want.items()):\n"
              "    got = {r[0] for r in db.execute('select id from %s' % c)}\n"
              "    if got != ids:\n"
              "        print('%s: %d missing, %d extra' % (c, len(ids - got), len(got - ids)))\n"
              "        sys.exit(1)\n"
              "    n += len(ids)\n"
              "print(n)\n");
    char *cmd = skt_fmt("python3 %s %s %s", check, sc.db, pages);
    char *out = NULL;
    int crc = skt_sh(cmd, 30, &out);
    free(cmd);
    free(check);
    cr_assert_eq(crc, 0, "%s (see %s)", out ? out : "", sc.d.log);
    cr_assert_str_eq(out, "17\n", "records: %s", out); /* 3 + 8 + 2 + 2 + 2 */
    free(out);
    char *swe = db_query(sc.dir, sc.db, "select count(*) from persons where doc like '%SWE%'");
    cr_assert_str_eq(swe, "8", "civicNo.nationality \"SWE\" was not kept as sent");
    free(swe);
    scene_end(&sc);
}

/*
 * A webhook run reads only the types the callback names: a change to a
 * person (the server's callback says "Person", deletedEntities false) asks
 * for persons and nothing else, so the change waits for no other type's
 * queries. The regular poll (every poll_interval) still reads every type.
 */
Test(ss12000_source, a_callback_naming_person_polls_only_persons, .timeout = 150)
{
    struct hook_scene h = hook_scene_start("ss-named", "Organisation, Person, Group",
                                           "organisations,persons,groups", "200ms");
    sleep(1); /* the full sync's last requests are in */
    char *url = skt_fmt("http://127.0.0.1:%d/_control/stats", h.s.port);
    char *stats = get(url);
    char *since = json_expr(stats, "d[\"total\"]");
    free(stats);
    char *person = first_id(h.s.port, "persons", NULL);
    rename_person(h.s.port, person, "Namngiven"); /* the server calls back with [Person] */
    double took = seconds_until(h.dir, h.db, person, "Namngiven", 20);
    cr_assert(took >= 0, "the callback brought no change (poll_interval 10m)");
    sleep(1);
    stats = get(url);
    hook_scene_end(&h);
    char *expr = skt_fmt("sorted(set(r[\"path\"].rsplit(\"/\", 1)[-1] for r in d[\"requests\"] "
                         "if r[\"seq\"] > %s and r[\"method\"] == \"GET\"))",
                         since);
    char *paths = json_expr(stats, expr);
    cr_log_info("GETs after the callback: %s", paths);
    cr_assert_str_eq(paths, "['persons']", "a run for a Person callback asked for %s", paths);
    free(paths);
    free(expr);
    free(stats);
    free(since);
    free(url);
    free(person);
}
