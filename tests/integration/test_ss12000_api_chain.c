/*
 * test_ss12000_api_chain.c: the hub in a chain, through the skolsync binary
 * and the test broker:
 *
 *   SS 12000 test server (tests/fixtures/ss12000_server.py)
 *     -> skolsync A: ss12000-source -> Kafka -> ss12000-api-sink (the hub)
 *     -> skolsync B (run --once): ss12000-source pointed at the hub with a
 *        bearer token -> Kafka -> sqlite-sink
 *
 * After a full sync, and again after changes, a creation and deletions at
 * the server, the hub's state must equal the server exactly and B's database
 * must equal the server in every document except meta.modified, which the hub serves as its
 * own change stamp (docs/ss12000-api-sink.md, "Delta consistency").
 *
 * The second test runs the chain on webhooks into PostgreSQL: A subscribes
 * at the server, B (running, poll_interval 10m) at the hub, and B writes to
 * postgres-sink; after the full sync, a change's way from the server to its
 * row in PostgreSQL is timed (only the webhooks can explain it within the
 * poll interval), and after changes, a creation and deletions PostgreSQL
 * equals the server again.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "model.h"
#include "sk_test.h"
#include "util.h"

#define SERVER SK_SOURCE_DIR "/tests/fixtures/ss12000_server.py"
#define HUB_TOKEN "chain-hub-token-0123456789"

/*
 * The port a process logged in log: the first match of the sed pattern
 * (one \(…\) group around the digits), waiting up to 30 s while pid runs.
 */
static int logged_port(const char *log, const char *pattern, pid_t pid)
{
    char *cmd = skt_fmt("sed -n 's#%s#\\1#p' %s | head -1", pattern, log);
    int port = 0;
    for (int i = 0; i < 300 && !port; i++) {
        char *out = NULL;
        skt_sh(cmd, 5, &out);
        port = out ? atoi(out) : 0;
        free(out);
        if (!port) {
            cr_assert_eq(skt_wait(pid, 0), -2, "exited before it served; see %s", log);
            usleep(100000);
        }
    }
    free(cmd);
    cr_assert(port > 0, "no port in %s", log);
    return port;
}

/*
 * compare.py DB EXPECT_DIR [ignore_modified]: every collection of the dump
 * equals the table of the same name by id and document; prints the first
 * difference and exits 1.
 */
static void write_compare(const char *dir)
{
    char *p = skt_fmt("%s/compare.py", dir);
    skt_write(p, "import json, os, sqlite3, sys\n"
                 "db, exp = sqlite3.connect(sys.argv[1]), sys.argv[2]\n"
                 "ignore = len(sys.argv) > 3\n"
                 "def norm(d):\n"
                 "    if ignore and isinstance(d.get('meta'), dict):\n"
                 "        d['meta'].pop('modified', None)\n"
                 "    return d\n"
                 "n = 0\n"
                 "for f in sorted(os.listdir(exp)):\n"
                 "    c = f[:-len('.jsonl')]\n"
                 "    want = {}\n"
                 "    for line in open(os.path.join(exp, f)):\n"
                 "        if line.strip():\n"
                 "            d = json.loads(line); want[d['id']] = norm(d)\n"
                 "    got = {r[0]: norm(json.loads(r[1])) for r in "
                 "db.execute('select id, doc from \"%s\"' % c)}\n"
                 "    if want != got:\n"
                 "        extra = set(got) - set(want); missing = set(want) - set(got)\n"
                 "        diff = [i for i in want if i in got and want[i] != got[i]][:1]\n"
                 "        print(c, 'extra', len(extra), 'missing', len(missing), 'differ', diff)\n"
                 "        sys.exit(1)\n"
                 "    n += len(want)\n"
                 "print('equal', n)\n");
    free(p);
}

/* Changes, a creation and deletions at the server, the way a SIS makes them. */
static void mutate_server(const char *dir, int port)
{
    char *p = skt_fmt("%s/mutate.py", dir);
    skt_write(p, "import json, sys, urllib.request\n"
                 "base = 'http://127.0.0.1:%s/_control/' % sys.argv[1]\n"
                 "def call(op, body=None):\n"
                 "    req = urllib.request.Request(base + op, data=json.dumps(body).encode() if "
                 "body is not None else None, headers={'Content-Type': 'application/json'})\n"
                 "    return json.load(urllib.request.urlopen(req, timeout=20))\n"
                 "d = call('dump')\n"
                 "p, g = d['persons'], d['groups']\n"
                 "call('update', {'collection': 'persons', 'id': p[0]['id'], 'patch': "
                 "{'givenName': 'Ändrad'}})\n"
                 "call('update', {'collection': 'persons', 'id': p[1]['id'], 'patch': "
                 "{'familyName': 'Bytt'}})\n"
                 "call('delete', {'collection': 'persons', 'id': p[2]['id']})\n"
                 "call('delete', {'collection': 'groups', 'id': g[0]['id']})\n"
                 "call('create', {'collection': 'persons', 'entity': {'givenName': 'Ny', "
                 "'familyName': 'Elev'}})\n");
    char *cmd = skt_fmt("python3 %s %d", p, port);
    char *out = NULL;
    cr_assert_eq(skt_sh(cmd, 30, &out), 0, "mutate: %s", out);
    free(out);
    free(cmd);
    free(p);
}

static void dump_server(const char *dir, int port)
{
    char *cmd = skt_fmt(
        "python3 -c \"import json, os, sys, urllib.request\n"
        "d = json.load(urllib.request.urlopen('http://127.0.0.1:%d/_control/dump', timeout=20))\n"
        "os.makedirs('%s/expect', exist_ok=True)\n"
        "for c, ents in d.items():\n"
        "    open('%s/expect/' + c + '.jsonl', 'w').write(''.join(json.dumps(e) + chr(10) for e "
        "in ents))\"",
        port, dir, dir);
    char *out = NULL;
    cr_assert_eq(skt_sh(cmd, 30, &out), 0, "dump: %s", out);
    free(out);
    free(cmd);
}

/* compare.py's verdict on db; *report its output (caller frees). */
static bool compare(const char *dir, const char *db, bool ignore_modified, char **report)
{
    char *cmd = skt_fmt("python3 %s/compare.py %s %s/expect%s", dir, db, dir,
                        ignore_modified ? " ignore" : "");
    int rc = skt_sh(cmd, 60, report);
    free(cmd);
    return rc == 0;
}

/* Waits until the hub's state equals the server's dump exactly (A keeps running). */
static void wait_hub(const char *dir, const char *hub_db, pid_t a)
{
    char *report = NULL;
    bool equal = false;
    for (int i = 0; i < 90 && !equal; i++) {
        sleep(1);
        cr_assert_eq(skt_wait(a, 0), -2, "skolsync A exited; see %s", dir);
        free(report);
        report = NULL;
        equal = access(hub_db, R_OK) == 0 && compare(dir, hub_db, false, &report);
    }
    cr_assert(equal, "the hub's state differs from the server: %s (logs in %s)",
              report ? report : "", dir);
    free(report);
}

/* Runs B once (its cursor carries on from the run before) and compares its database. */
static void run_b(const char *dir, const char *cfg_b, const char *out_db, const char *what)
{
    char *cmd = skt_fmt("%s run --once -c %s >> %s/b.log 2>&1", skt_skolsync(), cfg_b, dir);
    int rc = skt_sh(cmd, 150, NULL);
    cr_assert_eq(rc, 0, "%s: skolsync B --once: exit %d; see %s/b.log", what, rc, dir);
    char *report = NULL;
    bool equal = compare(dir, out_db, true, &report);
    cr_assert(equal, "%s: B's database differs from the server: %s (logs in %s)", what, report,
              dir);
    fprintf(stderr, "hub chain, %s: %s", what, report);
    free(report);
    free(cmd);
}

static char *source_yaml(const char *name, const char *url, const char *poll, const char *auth)
{
    return skt_fmt("  %s:\n"
                   "    type: ss12000-source\n"
                   "    url: %s\n"
                   "    page_size: 100\n"
                   "    max_rps: 200\n"
                   "    poll_interval: %s\n"
                   "    retry_backoff: 200ms\n"
                   "    retry_backoff_max: 2s\n"
                   "%s",
                   name, url, poll, auth);
}

static char *g_schema; /* dropped by the suite's fini in every path */
/* skt_config_head with the admin API on port (the webhooks' public_url). */
static char *head_on(const char *prefix, int port)
{
    char *head = skt_config_head(prefix, "info", "20s");
    char *at = strstr(head, "listen: 127.0.0.1:0\n");
    cr_assert_not_null(at);
    *at = '\0';
    char *out =
        skt_fmt("%slisten: 127.0.0.1:%d\n%s", head, port, at + strlen("listen: 127.0.0.1:0\n"));
    free(head);
    return out;
}

/* The test server and skolsync A (server -> Kafka -> hub), with what the tests read of them. */
struct chain {
    char *dir, *alog, *hub_db;
    pid_t server, a;
    int sport, hub_port;
};

/*
 * Starts the server and A, whose source polls every poll, with hook (its
 * webhook options, or "") and its admin API on admin_port (0: any), and waits
 * until the hub equals the server.
 */
static void chain_start(struct chain *c, const char *tag, const char *poll, const char *hook,
                        int admin_port)
{
    c->dir = skt_tmpdir(tag);
    write_compare(c->dir);
    char *slog = skt_fmt("%s/server.log", c->dir);
    char *sargv[] = {"/usr/bin/env", "python3", SERVER,       "--port", "0",
                     "--base",       "/v2.0",   "--students", "30",     NULL};
    c->server = skt_spawn(sargv, slog);
    c->sport = logged_port(slog, "^LISTENING 127.0.0.1:\\([0-9]*\\)$", c->server);
    dump_server(c->dir, c->sport);

    /* A: the server through Kafka into the hub, which keeps serving. */
    setenv("SKT_HUB_TOKEN", HUB_TOKEN, 1);
    char *prefix = skt_unique_prefix();
    char *head = head_on(prefix, admin_port);
    char *server_url = skt_fmt("http://127.0.0.1:%d/v2.0", c->sport);
    char *src = source_yaml("sis", server_url, poll, hook);
    char *hub_dir = skt_fmt("%s/hub", c->dir);
    char *cfg_a = skt_fmt("%s/a.yaml", c->dir);
    char *text = skt_fmt("%ssources:\n%ssinks:\n  hub:\n    type: ss12000-api-sink\n"
                         "    listen: 127.0.0.1:0\n    state_dir: %s\n"
                         "    clients: {reader: {token: '${env:SKT_HUB_TOKEN}', entities: all,\n"
                         "                       protected_identities: allow}}\n",
                         head, src, hub_dir);
    skt_write(cfg_a, text);
    c->alog = skt_fmt("%s/a.log", c->dir);
    char *aargv[] = {(char *)skt_skolsync(), "run", "-c", cfg_a, NULL};
    c->a = skt_spawn(aargv, c->alog);
    c->hub_port =
        logged_port(c->alog, ".*serving SS 12000 on http://127.0.0.1:\\([0-9]*\\).*", c->a);
    c->hub_db = skt_fmt("%s/hub.db", hub_dir);
    wait_hub(c->dir, c->hub_db, c->a);
    free(text);
    free(cfg_a);
    free(hub_dir);
    free(src);
    free(server_url);
    free(head);
    free(prefix);
    free(slog);
}

/* Stops A (it must stop cleanly) and the server. */
static void chain_stop(struct chain *c)
{
    cr_assert_eq(skt_stop(&c->a, 30000), 0, "skolsync A did not stop cleanly; see %s", c->alog);
    skt_stop(&c->server, 5000);
    free(c->hub_db);
    free(c->alog);
    free(c->dir);
}

/* The changes of mutate_server at the server, then its dump, then the hub equal to it. */
static void chain_mutate(struct chain *c)
{
    mutate_server(c->dir, c->sport);
    dump_server(c->dir, c->sport);
    wait_hub(c->dir, c->hub_db, c->a);
}

Test(ss12000_api_chain, a_skolsync_reading_the_hub_gets_what_the_server_has, .timeout = 240)
{
    struct chain c;
    chain_start(&c, "hub-chain", "2s", "", 0);

    /* B: a second skolsync reads the hub as its SS 12000 server. */
    char *prefix_b = skt_unique_prefix();
    char *head_b = skt_config_head(prefix_b, "info", "20s");
    char *hub_url = skt_fmt("http://127.0.0.1:%d", c.hub_port);
    char *src_b = source_yaml("hub", hub_url, "2s",
                              "    auth:\n      type: bearer\n      token: ${env:SKT_HUB_TOKEN}\n");
    char *out_db = skt_fmt("%s/b.db", c.dir);
    char *cfg_b = skt_fmt("%s/b.yaml", c.dir);
    char *text = skt_fmt("%ssources:\n%ssinks:\n  out:\n    type: sqlite-sink\n    path: %s\n",
                         head_b, src_b, out_db);
    skt_write(cfg_b, text);
    free(text);
    run_b(c.dir, cfg_b, out_db, "full sync");

    /* Changes, a creation and deletions reach B through the hub's deltas and deletedEntities. */
    chain_mutate(&c);
    run_b(c.dir, cfg_b, out_db, "deltas");
    char *grep = skt_fmt("grep -c 'client reader: GET /deletedEntities -> 200' %s", c.alog);
    char *out = NULL;
    skt_sh(grep, 10, &out);
    cr_assert(out && atoi(out) > 0, "B did not read the hub's deletedEntities; see %s", c.alog);
    free(out);
    free(grep);

    chain_stop(&c);
    free(cfg_b);
    free(out_db);
    free(src_b);
    free(hub_url);
    free(head_b);
    free(prefix_b);
}

/* ---- the chain on webhooks, into PostgreSQL -------------------------------------------- */

#define HOOK_SECRET "chain-hook-secret-0123"

static void drop_schema(void)
{
    skt_pg_drop_schema(g_schema);
    free(g_schema);
    g_schema = NULL;
}

TestSuite(ss12000_api_chain, .fini = drop_schema);

/* Every live row of the schema's tables as <dir>/pg/<collection>.jsonl (compare_dirs.py's input).
 */
static void export_pg(const char *dir, PGconn *c)
{
    char *out = skt_fmt("%s/pg", dir);
    char *cmd = skt_fmt("rm -rf %s && mkdir -p %s", out, out);
    cr_assert_eq(skt_sh(cmd, 10, NULL), 0);
    free(cmd);
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    for (size_t i = 0; i < SK_ENTITY_COUNT; i++) {
        const char *coll = sk_entities[i]->collection;
        char *t = skt_pg_table(coll);
        char *sql =
            skt_fmt("SELECT doc::text FROM \"%s\".\"%s\" WHERE deleted_at IS NULL", g_schema, t);
        PGresult *r = PQexec(c, sql);
        char *path = skt_fmt("%s/%s.jsonl", out, coll);
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f);
        for (int k = 0; PQresultStatus(r) == PGRES_TUPLES_OK && k < PQntuples(r); k++)
            fprintf(f, "%s\n", PQgetvalue(r, k, 0));
        fclose(f);
        PQclear(r);
        free(path);
        free(sql);
        free(t);
    }
    free(out);
}

/* compare_dirs.py GOT EXPECT: the same ids and documents per collection, meta.modified aside. */
static void write_compare_dirs(const char *dir)
{
    char *p = skt_fmt("%s/compare_dirs.py", dir);
    skt_write(p, "import json, os, sys\n"
                 "def load(path):\n"
                 "    out = {}\n"
                 "    for line in open(path) if os.path.exists(path) else []:\n"
                 "        if line.strip():\n"
                 "            d = json.loads(line)\n"
                 "            if isinstance(d.get('meta'), dict): d['meta'].pop('modified', None)\n"
                 "            out[d['id']] = d\n"
                 "    return out\n"
                 "got, exp, n = sys.argv[1], sys.argv[2], 0\n"
                 "for f in sorted(os.listdir(exp)):\n"
                 "    w, g = load(os.path.join(exp, f)), load(os.path.join(got, f))\n"
                 "    if w != g:\n"
                 "        diff = [i for i in w if i in g and w[i] != g[i]][:1]\n"
                 "        print(f, 'extra', len(set(g) - set(w)), 'missing', len(set(w) - set(g)),"
                 " 'differ', diff)\n"
                 "        sys.exit(1)\n"
                 "    n += len(w)\n"
                 "print('equal', n)\n");
    free(p);
}

/* Waits up to timeout_s until PostgreSQL equals the server's last dump (B keeps running). */
static void wait_pg(const char *dir, PGconn *c, pid_t b, int timeout_s, const char *what)
{
    char *cmd = skt_fmt("python3 %s/compare_dirs.py %s/pg %s/expect", dir, dir, dir);
    char *report = NULL;
    bool equal = false;
    int64_t end = sk_mono_ms() + timeout_s * 1000LL;
    while (!equal && sk_mono_ms() < end) {
        cr_assert_eq(skt_wait(b, 0), -2, "skolsync B exited; see %s/b.log", dir);
        export_pg(dir, c);
        free(report);
        report = NULL;
        equal = skt_sh(cmd, 60, &report) == 0;
        if (!equal)
            usleep(500000);
    }
    cr_assert(equal, "%s: PostgreSQL differs from the server: %s (logs in %s)", what,
              report ? report : "", dir);
    cr_log_info("hub webhook chain, %s: %s", what, report);
    free(report);
    free(cmd);
}

/* Waits until log has a line containing text (up to timeout_s). */
static void wait_log(const char *log, const char *text, int timeout_s)
{
    char *cmd = skt_fmt("grep -c -- '%s' %s", text, log);
    bool found = false;
    for (int i = 0; i < timeout_s * 10 && !found; i++) {
        char *out = NULL;
        skt_sh(cmd, 5, &out);
        found = out && atoi(out) > 0;
        free(out);
        if (!found)
            usleep(100000);
    }
    cr_assert(found, "no \"%s\" in %s", text, log);
    free(cmd);
}

static char *hook_yaml(int admin_port)
{
    return skt_fmt("    webhook:\n"
                   "      public_url: http://127.0.0.1:%d\n"
                   "      secret: ${env:SKT_HOOK_SECRET}\n"
                   "      debounce: 100ms\n",
                   admin_port);
}

Test(ss12000_api_chain, webhooks_bring_changes_through_the_hub_into_postgresql, .timeout = 300)
{
    /* A: the server (webhooks, poll_interval 10m) through Kafka into the hub. */
    setenv("SKT_HOOK_SECRET", HOOK_SECRET, 1);
    int admin_a = skt_free_port();
    char *hook_a = hook_yaml(admin_a);
    struct chain c;
    chain_start(&c, "hub-hook-chain", "10m", hook_a, admin_a);
    write_compare_dirs(c.dir);

    /* B: reads the hub with a webhook (poll_interval 10m) into PostgreSQL. */
    char suffix[9];
    char uuid[37];
    sk_uuid_random(uuid);
    snprintf(suffix, sizeof(suffix), "%.8s", uuid);
    g_schema = skt_fmt("hubhook_%s", suffix);
    int admin_b = skt_free_port();
    char *prefix_b = skt_unique_prefix();
    char *head_b = head_on(prefix_b, admin_b);
    char *hub_url = skt_fmt("http://127.0.0.1:%d", c.hub_port);
    char *hook_b = hook_yaml(admin_b);
    char *auth =
        skt_fmt("    auth:\n      type: bearer\n      token: ${env:SKT_HUB_TOKEN}\n%s", hook_b);
    char *src_b = source_yaml("hub", hub_url, "10m", auth);
    char *cfg_b = skt_fmt("%s/b.yaml", c.dir);
    char *text =
        skt_fmt("%ssources:\n%ssinks:\n  pg:\n    type: postgres-sink\n"
                "    conninfo: ${env:SK_TEST_PG}\n    schema: %s\n    connect_timeout: 5s\n"
                "    retry_backoff: 200ms\n    retry_backoff_max: 2s\n",
                head_b, src_b, g_schema);
    skt_write(cfg_b, text);
    free(text);
    char *blog = skt_fmt("%s/b.log", c.dir);
    char *bargv[] = {(char *)skt_skolsync(), "run", "-c", cfg_b, NULL};
    pid_t b = skt_spawn(bargv, blog);
    PGconn *pg = skt_pg_connect();
    wait_pg(c.dir, pg, b, 120, "full sync");
    wait_log(c.alog, "client reader: subscription .* created", 30);

    /* One change, timed from the server to its row in PostgreSQL. */
    cJSON *d = skt_get_json(c.sport, "/_control/dump");
    cr_assert_not_null(d);
    const char *person =
        skt_jstr(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(d, "persons"), 5), "id");
    char *patch = skt_fmt(
        "{\"collection\":\"persons\",\"id\":\"%s\",\"patch\":{\"givenName\":\"Snabb\"}}", person);
    char *sql = skt_fmt("SELECT 1 FROM \"%s\".persons WHERE id = '%s' AND doc->>'givenName' = "
                        "'Snabb'",
                        g_schema, person);
    char *ctl = skt_fmt("http://127.0.0.1:%d/_control/update", c.sport);
    int64_t t0 = sk_mono_ms();
    cr_assert_eq(skt_http("POST", ctl, patch, 20, NULL), 200);
    int64_t latency = -1;
    while (latency < 0 && sk_mono_ms() - t0 < 60000) {
        PGresult *r = PQexec(pg, sql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            latency = sk_mono_ms() - t0;
        PQclear(r);
        if (latency < 0)
            usleep(20000);
    }
    cr_assert(latency >= 0, "the change did not reach PostgreSQL within 60 s (logs in %s)", c.dir);
    cr_log_info("hub webhook chain: a change at the server reached PostgreSQL in %lld ms "
                "(server -> A -> Kafka -> hub -> webhook -> B -> Kafka -> PostgreSQL; both "
                "sources poll every 10 minutes)",
                (long long)latency);
    fprintf(stderr, "hub webhook chain: change latency %lld ms\n", (long long)latency);
    cr_assert_lt(latency, 15000, "%lld ms: not the webhooks (poll_interval 10m)",
                 (long long)latency);

    /* Changes, a creation and deletions: through the webhooks only. */
    chain_mutate(&c);
    wait_pg(c.dir, pg, b, 60, "changes, a creation and deletions");

    PQfinish(pg);
    cr_assert_eq(skt_stop(&b, 30000), 0, "skolsync B did not stop cleanly; see %s", blog);
    chain_stop(&c);
    free(ctl);
    free(sql);
    free(patch);
    cJSON_Delete(d);
    free(blog);
    free(cfg_b);
    free(src_b);
    free(auth);
    free(hook_b);
    free(hub_url);
    free(head_b);
    free(prefix_b);
    free(hook_a);
}
