/*
 * test_dlq.c: a record the target refuses lands in the DLQ with its context,
 * `skolsync dlq list` shows it, and after the target is fixed `skolsync dlq
 * replay` puts it back on its topic, where the sink applies it. Real broker
 * and real PostgreSQL (SK_TEST_BROKERS, SK_TEST_PG).
 */
#include <stdlib.h>
#include <string.h>

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
    char *replay = skt_fmt("%s dlq replay -c %s", skt_skolsync(), cfg);
    rc = skt_sh(replay, 60, &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "replayed 1 dead letter(s), skipped 0"), "%s", out);
    free(out);
    rc = skt_sh(run, 200, &out);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    n = pg_query(q);
    cr_assert_str_eq(n, "1", "the replayed record did not reach the target");
    free(n);
    char *drop = skt_fmt("DROP SCHEMA %s CASCADE", schema);
    free(pg_query(drop));
}
