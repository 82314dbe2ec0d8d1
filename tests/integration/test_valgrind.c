/*
 * test_valgrind.c: end-to-end syncs under valgrind's memcheck: no definite
 * leak and no memory error, on the embedded broker (jsonl-source ->
 * sqlite-sink) and on the real broker with transactions (-> postgres-sink).
 */
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "sk_test.h"

static void run_under_valgrind(const char *tag, const char *kafka, const char *sinks)
{
    char *dir = skt_tmpdir(tag);
    char *data = skt_fmt("%s/data", dir), *cfg = skt_fmt("%s/skolsync.yaml", dir);
    skt_generate(data, 71, 10);
    char *text = skt_fmt("%sadmin:\n  listen: 127.0.0.1:0\n"
                         "sources:\n  files-%s:\n    type: jsonl-source\n    path: %s\n"
                         "sinks:\n%s",
                         kafka, tag, data, sinks);
    skt_write(cfg, text);
    char *cmd = skt_fmt("valgrind --leak-check=full --errors-for-leak-kinds=definite "
                        "--show-leak-kinds=definite --error-exitcode=99 %s run --once -c %s",
                        skt_skolsync(), cfg);
    char *out = NULL;
    int rc = skt_sh(cmd, 300, &out);
    cr_assert_neq(rc, 99, "valgrind found errors or definite leaks:\n%s", out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "definitely lost: 0 bytes") || strstr(out, "All heap blocks were freed"),
              "no leak summary:\n%s", out);
    cr_assert(strstr(out, "ERROR SUMMARY: 0 errors"), "%s", out);
    free(out);
}

Test(valgrind, embedded_broker_to_sqlite, .timeout = 300)
{
    char *dir = skt_tmpdir("vg-db");
    char *sinks = skt_fmt("  db:\n    type: sqlite-sink\n    path: %s/out.db\n", dir);
    run_under_valgrind("vgembedded", "kafka:\n  brokers: embedded\n", sinks);
}

Test(valgrind, real_broker_with_transactions_to_postgres, .timeout = 300)
{
    const char *pg = getenv("SK_TEST_PG");
    cr_assert(pg && *pg, "SK_TEST_PG is not set: run the suite with `make test`");
    char *prefix = skt_unique_prefix();
    char *kafka = skt_fmt("kafka:\n  brokers: %s\n  topic_prefix: %s\n", skt_brokers(), prefix);
    char *sinks = skt_fmt("  pg-%.8s:\n    type: postgres-sink\n    conninfo: \"%s\"\n"
                          "    schema: vg_%.8s\n",
                          prefix + 1, pg, prefix + 1);
    run_under_valgrind("vgreal", kafka, sinks);
    char *drop = skt_fmt("psql '%s' -qc 'DROP SCHEMA vg_%.8s CASCADE'", pg, prefix + 1);
    skt_sh(drop, 30, NULL);
}
