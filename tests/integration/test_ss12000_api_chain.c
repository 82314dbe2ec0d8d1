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
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static char *source_yaml(const char *name, const char *url, const char *auth)
{
    return skt_fmt("  %s:\n"
                   "    type: ss12000-source\n"
                   "    url: %s\n"
                   "    page_size: 100\n"
                   "    max_rps: 200\n"
                   "    poll_interval: 2s\n"
                   "    retry_backoff: 200ms\n"
                   "    retry_backoff_max: 2s\n"
                   "%s",
                   name, url, auth);
}

Test(ss12000_api_chain, a_skolsync_reading_the_hub_gets_what_the_server_has, .timeout = 240)
{
    char *dir = skt_tmpdir("hub-chain");
    write_compare(dir);
    char *slog = skt_fmt("%s/server.log", dir);
    char *sargv[] = {"/usr/bin/env", "python3", SERVER,       "--port", "0",
                     "--base",       "/v2.0",   "--students", "30",     NULL};
    pid_t server = skt_spawn(sargv, slog);
    int sport = logged_port(slog, "^LISTENING 127.0.0.1:\\([0-9]*\\)$", server);
    dump_server(dir, sport);

    /* A: the server through Kafka into the hub, which keeps serving. */
    setenv("SKT_HUB_TOKEN", HUB_TOKEN, 1);
    char *prefix = skt_unique_prefix();
    char *head = skt_config_head(prefix, "info", "20s");
    char *server_url = skt_fmt("http://127.0.0.1:%d/v2.0", sport);
    char *src = source_yaml("sis", server_url, "");
    char *hub_dir = skt_fmt("%s/hub", dir);
    char *cfg_a = skt_fmt("%s/a.yaml", dir);
    char *text = skt_fmt("%ssources:\n%ssinks:\n  hub:\n    type: ss12000-api-sink\n"
                         "    listen: 127.0.0.1:0\n    state_dir: %s\n"
                         "    clients: {reader: {token: '${env:SKT_HUB_TOKEN}', entities: all,\n"
                         "                       protected_identities: allow}}\n",
                         head, src, hub_dir);
    skt_write(cfg_a, text);
    free(text);
    char *alog = skt_fmt("%s/a.log", dir);
    char *aargv[] = {(char *)skt_skolsync(), "run", "-c", cfg_a, NULL};
    pid_t a = skt_spawn(aargv, alog);
    int hub_port = logged_port(alog, ".*serving SS 12000 on http://127.0.0.1:\\([0-9]*\\).*", a);
    char *hub_db = skt_fmt("%s/hub.db", hub_dir);
    wait_hub(dir, hub_db, a);

    /* B: a second skolsync reads the hub as its SS 12000 server. */
    char *prefix_b = skt_unique_prefix();
    char *head_b = skt_config_head(prefix_b, "info", "20s");
    char *hub_url = skt_fmt("http://127.0.0.1:%d", hub_port);
    char *src_b = source_yaml("hub", hub_url,
                              "    auth:\n      type: bearer\n      token: ${env:SKT_HUB_TOKEN}\n");
    char *out_db = skt_fmt("%s/b.db", dir);
    char *cfg_b = skt_fmt("%s/b.yaml", dir);
    text = skt_fmt("%ssources:\n%ssinks:\n  out:\n    type: sqlite-sink\n    path: %s\n", head_b,
                   src_b, out_db);
    skt_write(cfg_b, text);
    free(text);
    run_b(dir, cfg_b, out_db, "full sync");

    /* Changes, a creation and deletions reach B through the hub's deltas and deletedEntities. */
    mutate_server(dir, sport);
    dump_server(dir, sport);
    wait_hub(dir, hub_db, a);
    run_b(dir, cfg_b, out_db, "deltas");
    char *grep = skt_fmt("grep -c 'client reader: GET /deletedEntities -> 200' %s", alog);
    char *out = NULL;
    skt_sh(grep, 10, &out);
    cr_assert(out && atoi(out) > 0, "B did not read the hub's deletedEntities; see %s", alog);
    free(out);
    free(grep);

    cr_assert_eq(skt_stop(&a, 30000), 0, "skolsync A did not stop cleanly; see %s", alog);
    skt_stop(&server, 5000);
    free(cfg_b);
    free(out_db);
    free(src_b);
    free(hub_url);
    free(head_b);
    free(prefix_b);
    free(hub_db);
    free(alog);
    free(cfg_a);
    free(hub_dir);
    free(src);
    free(server_url);
    free(head);
    free(prefix);
    free(slog);
    free(dir);
}
