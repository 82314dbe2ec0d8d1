/*
 * test_security.c: secrets given as ${env:...} and ${file:...} never show in
 * logs (at debug level), error messages, `skolsync check` output or API
 * answers; the admin API listens on loopback by default; malformed or
 * oversized input gets a 4xx, never a crash.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "sk_test.h"

#define ENV_SECRET "env-secret-Qx81zR"
#define FILE_SECRET "file-secret-Lm42pW"
#define TOKEN_SECRET "token-secret-Vv07kD"

static void assert_clean(const char *what, const char *text)
{
    cr_assert_null(strstr(text, ENV_SECRET), "an ${env:} secret leaked into %s:\n%s", what, text);
    cr_assert_null(strstr(text, FILE_SECRET), "a ${file:} secret leaked into %s:\n%s", what, text);
    cr_assert_null(strstr(text, TOKEN_SECRET), "the admin token leaked into %s:\n%s", what, text);
}

Test(security, secrets_never_appear_in_logs_errors_check_or_api, .timeout = 180)
{
    char *dir = skt_tmpdir("security");
    char *data = skt_fmt("%s/data", dir), *db = skt_fmt("%s/out.db", dir);
    char *cfg = skt_fmt("%s/skolsync.yaml", dir), *log = skt_fmt("%s/daemon.log", dir);
    char *secret_file = skt_fmt("%s/pg-password", dir);
    skt_generate(data, 61, 10);
    skt_write(secret_file, FILE_SECRET "\n");
    setenv("SK_TEST_ENV_SECRET", ENV_SECRET, 1);
    setenv("SK_TEST_TOKEN", TOKEN_SECRET, 1);
    /* A postgres sink that cannot connect (its error must not echo the conninfo),
     * kafka properties with a password, and the admin token. */
    char *text = skt_fmt(
        "kafka:\n  brokers: embedded\n"
        "  properties:\n    sasl.username: skolsync\n    sasl.password: ${env:SK_TEST_ENV_SECRET}\n"
        "admin:\n  token: ${env:SK_TEST_TOKEN}\n  listen: 127.0.0.1:0\n"
        "log:\n  level: debug\n"
        "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
        "sinks:\n  db:\n    type: sqlite-sink\n    path: %s\n"
        "  warehouse:\n    type: postgres-sink\n"
        "    conninfo: \"host=127.0.0.1 port=1 user=x password=${file:%s} connect_timeout=2\"\n",
        data, db, secret_file);
    skt_write(cfg, text);

    /* check: valid, and a version with errors in secret-valued keys */
    char *out = NULL;
    char *cmd = skt_fmt("%s check -c %s", skt_skolsync(), cfg);
    cr_assert_eq(skt_sh(cmd, 20, &out), 0, "%s", out);
    assert_clean("skolsync check", out);
    free(out);
    char *bad = skt_fmt("%s/bad.yaml", dir);
    /* A reference in a field that is not a secret is refused (its value would
     * reach logs: a topic prefix shows in produce errors, a path in open errors). */
    char *bad_text = skt_fmt("%s  connect_timeout: ${env:SK_TEST_ENV_SECRET}\n"
                             "  topic_prefix: ${file:%s}\n"
                             "shutdown_timeout: ${file:%s}\n",
                             "kafka:\n  brokers: embedded\n", secret_file, secret_file);
    skt_write(bad, bad_text);
    free(cmd);
    cmd = skt_fmt("%s check -c %s", skt_skolsync(), bad);
    cr_assert_eq(skt_sh(cmd, 20, &out), 2, "%s", out);
    cr_assert(strstr(out, "kafka.connect_timeout") && strstr(out, "shutdown_timeout") &&
                  strstr(out, "kafka.topic_prefix"),
              "%s", out);
    assert_clean("configuration errors", out);
    free(out);

    /* A librdkafka property with a secret value that librdkafka rejects: its
     * message quotes the value, ours must not. check refuses it (librdkafka
     * tries it on a scratch configuration), and so does run, before it starts. */
    char *bad_prop = skt_fmt("kafka:\n  brokers: embedded\n  properties:\n"
                             "    security.protocol: ${env:SK_TEST_ENV_SECRET}\n"
                             /* not the default port: a test beside it may hold it */
                             "admin:\n  listen: 127.0.0.1:0\n"
                             "sources:\n  files:\n    type: jsonl-source\n    path: %s\n",
                             data);
    skt_write(bad, bad_prop);
    cr_assert_eq(skt_sh(cmd, 20, &out), 2, "%s", out);
    cr_assert(strstr(out, ":4:5: kafka.properties.security.protocol: Invalid value"), "%s", out);
    assert_clean("a rejected kafka property in check", out);
    free(out);
    free(cmd);
    cmd = skt_fmt("%s run --once -c %s", skt_skolsync(), bad);
    cr_assert_eq(skt_sh(cmd, 60, &out), 2, "%s", out);
    cr_assert(strstr(out, "kafka.properties.security.protocol"), "%s", out);
    assert_clean("a rejected kafka property", out);
    free(out);
    free(bad_prop);

    /* run: the postgres sink cannot open, so the daemon stops with an error
     * that names the sink but not its connection string */
    free(cmd);
    cmd = skt_fmt("%s run --once -c %s", skt_skolsync(), cfg);
    int rc = skt_sh(cmd, 60, &out);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, "warehouse"), "%s", out);
    assert_clean("the log of a failing start", out);
    free(out);

    /* a running daemon (without the failing sink): logs at debug level and every answer */
    char *ok_text = skt_fmt(
        "kafka:\n  brokers: embedded\n"
        "  properties:\n    sasl.username: skolsync\n    sasl.password: ${env:SK_TEST_ENV_SECRET}\n"
        "admin:\n  token: ${env:SK_TEST_TOKEN}\n  listen: 127.0.0.1:0\n"
        "log:\n  level: debug\n"
        "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
        "sinks:\n  db:\n    type: sqlite-sink\n    path: %s\n",
        data, db);
    skt_write(cfg, ok_text);
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", cfg, NULL};
    pid_t pid = skt_spawn(argv, log);
    int port = skt_logged_port(log, 20000);
    cr_assert_gt(port, 0);
    sleep(4);
    const char *gets[] = {"/",           "/metrics",           "/health",
                          "/ready",      "/api/v1/connectors", "/api/v1/connectors/files",
                          "/api/v1/lag", "/api/v1/lag/history"};
    for (size_t i = 0; i < sizeof(gets) / sizeof(gets[0]); i++) {
        char *c = skt_fmt("curl -s http://127.0.0.1:%d%s", port, gets[i]);
        skt_sh(c, 20, &out);
        assert_clean(gets[i], out);
        free(out);
        free(c);
    }
    /* malformed and oversized input: 4xx, and the daemon lives on */
    const char *posts[][3] = {
        {"/api/v1/reload", "", "401"},
        {"/api/v1/dlq", "{not json", "401"},
        {"/api/v1/connectors/files/pause", "\x01\x02", "401"},
        {"/api/v1/connectors/%2e%2e/pause", "", "401"},
        {"/api/v1/nope", "", "404"},
    };
    for (size_t i = 0; i < sizeof(posts) / sizeof(posts[0]); i++) {
        char *c = skt_fmt("curl -s -o /dev/null -w '%%{http_code}' -X POST --data-binary '%s' "
                          "http://127.0.0.1:%d%s",
                          posts[i][1], port, posts[i][0]);
        skt_sh(c, 20, &out);
        cr_assert_str_eq(out, posts[i][2], "POST %s answered %s", posts[i][0], out);
        free(out);
        free(c);
    }
    char *c = skt_fmt("curl -s -H 'Authorization: Bearer %s' -X POST --data-binary '{not json' "
                      "http://127.0.0.1:%d/api/v1/dlq",
                      TOKEN_SECRET, port);
    skt_sh(c, 30, &out);
    assert_clean("a DLQ answer", out);
    free(out);
    free(c);
    c = skt_fmt("head -c 3000000 /dev/urandom | curl -s -o /dev/null -w '%%{http_code}' "
                "-H 'Authorization: Bearer %s' --data-binary @- http://127.0.0.1:%d/api/v1/reload",
                TOKEN_SECRET, port);
    skt_sh(c, 30, &out);
    cr_assert_str_eq(out, "413", "an oversized body answered %s", out);
    free(out);
    free(c);
    cr_assert_eq(skt_wait(pid, 0), -2, "the daemon died on malformed input");
    kill(pid, SIGTERM);
    cr_assert_eq(skt_wait(pid, 30000), 0);
    char *all = NULL;
    c = skt_fmt("cat %s", log);
    skt_sh(c, 10, &all);
    cr_assert(strstr(all, "debug"), "the log was not at debug level");
    assert_clean("the daemon's debug log", all);
    free(all);
}

Test(security, admin_api_listens_on_loopback_by_default)
{
    char *out = NULL;
    cr_assert_eq(skt_sh("grep -A1 '\"listen\", SK_OPT_STRING' " SK_SOURCE_DIR
                        "/daemon/daemon_config.c",
                        10, &out),
                 0);
    cr_assert(strstr(out, "\"127.0.0.1:9720\""), "the default admin.listen is not loopback: %s",
              out);
    free(out);
    /* and what `connectors`-style help prints is the same default */
}
