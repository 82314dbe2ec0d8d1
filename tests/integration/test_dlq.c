/*
 * test_dlq.c: a record the target refuses lands in the DLQ with its context,
 * `skolsync dlq list` shows it, and after the target is fixed `skolsync dlq
 * replay` puts it back on its topic, where the sink applies it. A source's
 * dead letter (jsonl-source, ss12000-source) names its entity type, so replay
 * can encode it again, and a letter replay cannot re-publish makes it fail.
 * Real broker and real PostgreSQL (SK_TEST_BROKERS, SK_TEST_PG).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "sk_test.h"

static char *pg_query(const char *sql)
{
    const char *pg = getenv("SK_TEST_PG");
    cr_assert(pg && *pg, "SK_TEST_PG is not set: run the suite with `make test`");
    char *cmd = skt_fmt("psql '%s' -Atc \"%s\"", pg, sql);
    char *out = NULL;
    int rc = skt_sh(cmd, 30, &out);
    cr_assert_eq(rc, 0, "%s:\n%s", cmd, out);
    free(cmd);
    out[strcspn(out, "\n")] = '\0';
    return out;
}

/* `skolsync dlq replay` (of one connector's letters, or all) re-publishes one
 * letter and skips none; then `run` applies it. */
static void replay_one_and_run(const char *cfg, const char *connector, const char *run)
{
    char *replay = skt_fmt("%s dlq replay -c %s%s%s", skt_skolsync(), cfg,
                           connector ? " --connector " : "", connector ? connector : "");
    char *out = NULL;
    int rc = skt_sh(replay, 60, &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "replayed 1 dead letter(s), skipped 0"), "%s", out);
    free(out);
    rc = skt_sh(run, 200, &out);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    free(replay);
}

Test(dlq, refused_record_is_listed_and_replayed_after_a_fix, .timeout = 240)
{
    char *dir = skt_tmpdir("dlq");
    char *data = skt_fmt("%s/data", dir);
    char *cfg = skt_fmt("%s/skolsync.yaml", dir);
    char *prefix = skt_unique_prefix();
    char *suffix = strndup(prefix + 1, 8);
    char *schema = skt_fmt("dlq_%s", suffix);
    skt_generate(data, 31, 10);
    /* An organisation whose display name is too long for the btree index on it:
     * PostgreSQL refuses the row (54000), the sink dead-letters that record. */
    char *big =
        skt_fmt("python3 - <<'EOF'\n"
                "import json, random\n"
                "p='%s/organisations.jsonl'\n"
                "d=json.loads(open(p,encoding='utf-8').readline())\n"
                "d['id']='0bad0000-0000-4000-8000-000000000001'\n"
                "r=random.Random(1)\n"
                "d['displayName']=''.join(r.choice('abcdefghijklmnopqrstuvwxyzåäö') for _ in "
                "range(12000))\n"
                "open(p,'a',encoding='utf-8').write(json.dumps(d,ensure_ascii=False)+'\\n')\n"
                "EOF",
                data);
    char *out = NULL;
    cr_assert_eq(skt_sh(big, 20, &out), 0, "%s", out);
    free(out);
    char *text = skt_fmt("kafka:\n  brokers: %s\n  topic_prefix: %s\n"
                         "admin:\n  listen: 127.0.0.1:0\n"
                         "sources:\n  files-%s:\n    type: jsonl-source\n    path: %s\n"
                         "sinks:\n  pg-%s:\n    type: postgres-sink\n    conninfo: \"%s\"\n"
                         "    schema: %s\n",
                         skt_brokers(), prefix, suffix, data, suffix, getenv("SK_TEST_PG"), schema);
    skt_write(cfg, text);

    char *run = skt_fmt("%s run --once -c %s", skt_skolsync(), cfg);
    int rc = skt_sh(run, 200, &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "1 dead-lettered"), "the refused record was not dead-lettered:\n%s", out);
    free(out);
    char *q = skt_fmt("SELECT count(*) FROM %s.organisations WHERE id = "
                      "'0bad0000-0000-4000-8000-000000000001'",
                      schema);
    char *n = pg_query(q);
    cr_assert_str_eq(n, "0");
    free(n);

    /* listed with where it came from and why */
    char *list = skt_fmt("%s dlq list -c %s", skt_skolsync(), cfg);
    rc = skt_sh(list, 60, &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "\"key\":\"0bad0000-0000-4000-8000-000000000001\""), "%s", out);
    cr_assert(strstr(out, "organisations\",\"partition\""), "no original topic:\n%s", out);
    cr_assert(strstr(out, "index row"), "no error text:\n%s", out);
    free(out);

    /* the operator fixes the target, then replays */
    char *fix = skt_fmt("DROP INDEX %s.organisations_display_name_idx", schema);
    free(pg_query(fix));
    replay_one_and_run(cfg, NULL, run);
    n = pg_query(q);
    cr_assert_str_eq(n, "1", "the replayed record did not reach the target");
    free(n);
    char *drop = skt_fmt("DROP SCHEMA %s CASCADE", schema);
    free(pg_query(drop));
}

/* The SS 12000 test server on a free port, with extra arguments; returns the port. */
static int ss12000_server(const char *dir, const char *fault, pid_t *pid)
{
    char *log = skt_fmt("%s/ss12000.log", dir);
    char *argv[] = {"python3",    SK_SOURCE_DIR "/tests/fixtures/ss12000_server.py",
                    "--port",     "0",
                    "--base",     "/v2.0",
                    "--students", "10",
                    "--fault",    (char *)fault,
                    NULL};
    *pid = skt_spawn(argv, log);
    char *cmd = skt_fmt("sed -n 's/^LISTENING 127.0.0.1:\\([0-9]*\\)$/\\1/p' %s", log);
    int port = 0;
    for (int i = 0; i < 150 && !port; i++) {
        usleep(100000);
        char *out = NULL;
        skt_sh(cmd, 5, &out);
        port = atoi(out ? out : "");
        free(out);
    }
    cr_assert(port > 0, "the SS 12000 test server did not start (see %s)", log);
    free(cmd);
    free(log);
    return port;
}

Test(dlq, dead_letters_of_every_source_name_their_entity_and_are_replayed, .timeout = 240)
{
    char *dir = skt_tmpdir("dlq-sources");
    /* jsonl-source: one good room, one line that is not JSON */
    char *rooms = skt_fmt("%s/rooms.jsonl", dir);
    skt_write(rooms, "{\"id\":\"7e000000-0000-4000-8000-000000000001\",\"displayName\":\"Sal 1\","
                     "\"owner\":{\"id\":\"7e000000-0000-4000-8000-0000000000ff\"}}\n"
                     "{broken\n");
    /* ss12000-source: one person on a page lacks a required field */
    pid_t server;
    int port = ss12000_server(dir, "bad_record:count=1,paths=/persons,mode=missing", &server);
    char *prefix = skt_unique_prefix();
    char *suffix = strndup(prefix + 1, 8);
    char *db = skt_fmt("%s/out.db", dir);
    char *head = skt_config_head(prefix, "info", "10s");
    char *text = skt_fmt("%ssources:\n  files-%s:\n    type: jsonl-source\n    path: %s\n"
                         "  sis-%s:\n    type: ss12000-source\n"
                         "    url: http://127.0.0.1:%d/v2.0\n"
                         "    entities: [Organisation, Person]\n"
                         "sinks:\n  db-%s:\n    type: sqlite-sink\n    path: %s\n",
                         head, suffix, rooms, suffix, port, suffix, db);
    char *cfg = skt_fmt("%s/skolsync.yaml", dir);
    skt_write(cfg, text);
    char *run = skt_fmt("%s run --once -c %s", skt_skolsync(), cfg);
    char *out = NULL;
    int rc = skt_sh(run, 200, &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "dead-lettered rooms.jsonl:2") &&
                  strstr(out, "required field givenName missing"),
              "want one dead letter of each source:\n%s", out);
    free(out);

    /* each names its entity type */
    char *list = skt_fmt("%s dlq list -c %s", skt_skolsync(), cfg);
    rc = skt_sh(list, 60, &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "\"entity\":\"Room\""), "jsonl-source letter without entity:\n%s", out);
    cr_assert(strstr(out, "\"entity\":\"Person\""), "ss12000-source letter without entity:\n%s",
              out);
    const char *k = strstr(out, "\"key\":\"");
    cr_assert_not_null(k, "the person's dead letter has no key:\n%s", out);
    char id[37];
    snprintf(id, sizeof(id), "%s", k + 7);
    free(out);

    /* the SS 12000 letter is encoded again and re-published to the persons topic */
    char *sis = skt_fmt("sis-%s", suffix);
    replay_one_and_run(cfg, sis, run);
    /* the replayed version (the server's copy still has its givenName) */
    char *q = skt_fmt("sqlite3 %s \"SELECT json_extract(doc, '$.givenName') IS NULL FROM persons "
                      "WHERE id = '%s'\"",
                      db, id);
    rc = skt_sh(q, 20, &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_str_eq(out, "1\n", "the replayed person did not reach the target (%s)", id);
    free(out);

    /* the broken line still does not decode: replay says so and fails */
    char *replay = skt_fmt("%s dlq replay -c %s --connector files-%s", skt_skolsync(), cfg, suffix);
    rc = skt_sh(replay, 60, &out);
    cr_assert_neq(rc, 0, "a skipped dead letter must fail the replay:\n%s", out);
    cr_assert(strstr(out, "replayed 0 dead letter(s), skipped 1"), "%s", out);
    cr_assert(strstr(out, "invalid JSON"), "no reason given:\n%s", out);
    free(out);
    skt_stop(&server, 5000);
}
