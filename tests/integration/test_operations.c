/*
 * test_operations.c: the running daemon under an operator's hands (embedded
 * broker): reload by SIGHUP and by the API, the connector API with and
 * without the admin token, pause and resume, the failure policy and the
 * supervisor's restarts, a sink whose Kafka consumer cannot be made.
 */
#include <signal.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <sqlite3.h>

#include "buf.h"
#include "names.h"
#include "sk_test.h"
#include "util.h"

#define TOKEN "test-admin-token-5f2a"

struct daemon_run {
    char *dir, *cfg, *log, *db;
    const char *kafka; /* more of the kafka section, indented, or NULL */
    pid_t pid;
    int port;
};

static void start_daemon(struct daemon_run *d)
{
    d->log = skt_fmt("%s/daemon.log", d->dir);
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", d->cfg, NULL};
    d->pid = skt_spawn(argv, d->log);
    d->port = skt_logged_port(d->log, 20000);
    cr_assert_gt(d->port, 0, "the daemon logged no HTTP port");
}

static void stop_daemon(struct daemon_run *d)
{
    kill(d->pid, SIGTERM);
    int rc = skt_wait(d->pid, 30000);
    if (rc == -2) {
        kill(d->pid, SIGKILL);
        skt_wait(d->pid, 5000);
    }
    cr_assert_eq(rc, 0, "SIGTERM should stop the daemon with exit 0, got %d", rc);
}

/* curl against the daemon; returns the body (caller frees) and the status in *status.
 * (Not inlined: gcc -O3 then took a pointer into the body for one to its local.) */
__attribute__((noinline)) static char *http(struct daemon_run *d, const char *method, const char *path, const char *token,
                  int *status)
{
    char *cmd = skt_fmt("curl -s -w '\\n%%{http_code}' -X %s %s%s%s http://127.0.0.1:%d%s", method,
                        token ? "-H 'Authorization: Bearer " : "", token ? token : "",
                        token ? "'" : "", d->port, path);
    char *out = NULL;
    skt_sh(cmd, 70, &out);
    free(cmd);
    char *nl = strrchr(out, '\n');
    *status = nl ? atoi(nl + 1) : 0;
    if (nl)
        *nl = '\0';
    return out;
}

/* Polls /metrics until a line starts with `want` or the time is up. */
static bool metric_is(struct daemon_run *d, const char *want, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 200) {
        int st;
        char *body = http(d, "GET", "/metrics", NULL, &st);
        bool ok = strstr(body, want) != NULL;
        free(body);
        if (ok)
            return true;
        usleep(200000);
    }
    return false;
}

/* The value of the metric line that starts with `name{labels} `, or -1. */
static long long metric_value(struct daemon_run *d, const char *series)
{
    int st;
    char *body = http(d, "GET", "/metrics", NULL, &st);
    const char *line = strstr(body, series);
    long long v = line ? atoll(line + strlen(series)) : -1;
    free(body);
    return v;
}

/* The restart counter `series` once it is at least 1, polled for 20 s; its last value. */
static long long restarted(struct daemon_run *d, const char *series)
{
    long long restarts = 0;
    for (int i = 0; i < 100 && restarts < 1; i++) {
        restarts = metric_value(d, series);
        if (restarts < 1)
            usleep(200000);
    }
    return restarts;
}

static char *sink_applied(size_t n)
{
    return skt_fmt(
        "skolsync_records_total{connector=\"db\",kind=\"sink\",type=\"sqlite-sink\"} %zu\n", n);
}

static void write_config(struct daemon_run *d, const char *sources, const char *extra)
{
    char *text = skt_fmt("kafka:\n  brokers: embedded\n%s"
                         "admin:\n  listen: 127.0.0.1:0\n  token: " TOKEN "\n"
                         "%s"
                         "sources:\n%s"
                         "sinks:\n  db:\n    type: sqlite-sink\n    path: %s\n",
                         d->kafka ? d->kafka : "", extra ? extra : "", sources, d->db);
    /* atomically, as an operator's editor would: a SIGHUP never sees half a file */
    char *tmp = skt_fmt("%s.tmp", d->cfg);
    skt_write(tmp, text);
    cr_assert_eq(rename(tmp, d->cfg), 0);
    free(tmp);
    free(text);
}

static char *source_entry(const char *name, const char *path, const char *more)
{
    return skt_fmt("  %s:\n    type: jsonl-source\n    path: %s\n    poll_interval: 500ms\n%s",
                   name, path, more ? more : "");
}

Test(operations, reload_keeps_unchanged_sink_and_adds_a_source, .timeout = 180)
{
    struct daemon_run d = {.dir = skt_tmpdir("ops-reload")};
    d.cfg = skt_fmt("%s/skolsync.yaml", d.dir);
    d.db = skt_fmt("%s/out.db", d.dir);
    char *a = skt_fmt("%s/a", d.dir), *b = skt_fmt("%s/b", d.dir);
    skt_generate(a, 21, 20);
    skt_generate(b, 22, 20);
    size_t na = skt_count_records(a), nb = skt_count_records(b);
    char *src_a = source_entry("files-a", a, NULL);
    write_config(&d, src_a, NULL);
    start_daemon(&d);
    char *want = sink_applied(na);
    cr_assert(metric_is(&d, want, 60000), "first dataset not applied");

    /* Add a source; the sink is unchanged and must keep its consumer. */
    char *src_b = source_entry("files-b", b, NULL);
    char *both = skt_fmt("%s%s", src_a, src_b);
    write_config(&d, both, NULL);
    kill(d.pid, SIGHUP);
    cr_assert(metric_is(&d, "skolsync_reloads_total 1\n", 20000), "reload not applied");
    free(want);
    want = sink_applied(na + nb);
    /* Exactly na + nb applied: nothing lost, nothing applied twice across the reload. */
    cr_assert(metric_is(&d, want, 60000), "second source's data not applied exactly once");
    cr_assert(metric_is(&d,
                        "skolsync_connector_restarts_total{connector=\"db\",kind=\"sink\","
                        "type=\"sqlite-sink\"} 0\n",
                        1000));
    char *grep = skt_fmt("grep -c 'db: assigned' %s", d.log);
    char *out = NULL;
    skt_sh(grep, 5, &out);
    cr_assert_eq(atoi(out), 1, "the unchanged sink rejoined its group: %s", out);
    free(out);

    /* A burst of SIGHUPs while the file changes: POSIX merges pending signals,
     * so the guarantee is that the daemon ends up running the file as it was
     * at the last SIGHUP, and stays healthy. */
    char *c = skt_fmt("%s/c", d.dir);
    skt_generate(c, 26, 10);
    for (int i = 0; i < 5; i++) {
        char *three =
            skt_fmt("%s%s%s", src_a, src_b, i == 4 ? source_entry("files-c", c, NULL) : "");
        write_config(&d, three, i % 2 ? "log:\n  level: debug\n" : NULL);
        kill(d.pid, SIGHUP);
        free(three);
    }
    free(want);
    want = sink_applied(na + nb + skt_count_records(c));
    cr_assert(metric_is(&d, want, 60000), "the last file's new source did not run");
    int st;
    char *body = http(&d, "GET", "/ready", NULL, &st);
    cr_assert_eq(st, 200, "%s", body);
    free(body);

    /* An invalid file: the running configuration stays, the API says why. */
    skt_write(d.cfg, "sources:\n  broken: [\n");
    body = http(&d, "POST", "/api/v1/reload", TOKEN, &st);
    cr_assert_eq(st, 422, "%s", body);
    cr_assert(strstr(body, "\"reloaded\":false") && strstr(body, "skolsync.yaml:"), "%s", body);
    free(body);
    cr_assert(metric_is(&d, "skolsync_reload_failures_total 1\n", 2000));
    body = http(&d, "GET", "/ready", NULL, &st);
    cr_assert_eq(st, 200, "still ready after a failed reload: %s", body);
    free(body);
    stop_daemon(&d);
    /* The database holds the three datasets, each record once. */
    char *all = skt_fmt("%s/all", d.dir);
    char *merge = skt_fmt("mkdir -p %s && for f in %s/*.jsonl; do n=$(basename $f); "
                          "cat %s/$n %s/$n %s/$n > %s/$n; done",
                          all, a, a, b, c, all);
    cr_assert_eq(skt_sh(merge, 30, NULL), 0);
    char why[2048] = "";
    cr_assert(skt_db_matches_dataset(d.db, all, why, sizeof(why)), "%s", why);
}

/* The reload answer was cut at 2048 bytes: with many errors it was no JSON. */
Test(operations, reload_answer_with_many_errors_is_whole_json, .timeout = 120)
{
    struct daemon_run d = {.dir = skt_tmpdir("ops-reload-json")};
    d.cfg = skt_fmt("%s/skolsync.yaml", d.dir);
    d.db = skt_fmt("%s/out.db", d.dir);
    char *a = skt_fmt("%s/a", d.dir);
    skt_generate(a, 23, 10);
    char *src = source_entry("files", a, NULL);
    write_config(&d, src, NULL);
    start_daemon(&d);

    struct sk_buf unknown = {0};
    for (int i = 0; i < 60; i++)
        sk_buf_printf(&unknown, "    unknown_key_%02d: x\n", i);
    char *bad = source_entry("files", a, unknown.p);
    write_config(&d, bad, NULL);
    int st;
    char *body = http(&d, "POST", "/api/v1/reload", TOKEN, &st);
    cr_assert_eq(st, 422, "%s", body);
    cJSON *answer = cJSON_Parse(body);
    cr_assert_not_null(answer, "not JSON (%zu bytes): %s", strlen(body), body);
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(answer, "reloaded")), "%s", body);
    const cJSON *errors = cJSON_GetObjectItemCaseSensitive(answer, "errors");
    cr_assert_eq(cJSON_GetArraySize(errors), 60, "%s", body);
    cr_assert(strstr(cJSON_GetArrayItem(errors, 59)->valuestring, "unknown_key_59"), "%s", body);
    cJSON_Delete(answer);
    free(body);
    stop_daemon(&d);
    sk_buf_free(&unknown);
    free(bad);
    free(src);
    free(a);
}

/* A YAML key with a newline, quoted in the first error of a failed reload,
 * once reached systemd's STATUS= raw: a line of its own, a field of its own. */
Test(operations, reload_error_cannot_add_a_field_to_sd_notify, .timeout = 120)
{
    struct daemon_run d = {.dir = skt_tmpdir("ops-notify")};
    d.cfg = skt_fmt("%s/skolsync.yaml", d.dir);
    d.db = skt_fmt("%s/out.db", d.dir);
    char *a = skt_fmt("%s/a", d.dir);
    skt_generate(a, 24, 10);
    char *src = source_entry("files", a, NULL);
    write_config(&d, src, NULL);
    char *sock = skt_fmt("%s/notify.sock", d.dir);
    int nfd = skt_notify_listen(sock);
    setenv("NOTIFY_SOCKET", sock, 1);
    start_daemon(&d);
    unsetenv("NOTIFY_SOCKET");

    char *bad = source_entry("files", a, "    \"x\\nX_INJECTED=1\\r\\e[31m\": y\n");
    write_config(&d, bad, NULL);
    int st;
    char *body = http(&d, "POST", "/api/v1/reload", TOKEN, &st);
    cr_assert_eq(st, 422, "%s", body);
    char notes[65536] = "";
    for (int i = 0; i < 20 && !strstr(notes, "STATUS=reload failed"); i++) {
        skt_notify_drain(nfd, notes, sizeof(notes));
        usleep(100000);
    }
    cr_assert(strstr(notes, "STATUS=reload failed"), "%s", notes);
    cr_assert_null(strstr(notes, "\nX_INJECTED"), "a field of its own: %s", notes);
    cr_assert_null(strstr(notes, "\r"), "a raw carriage return: %s", notes);
    cr_assert_null(strstr(notes, "\x1b"), "a raw escape: %s", notes);
    cr_assert(strstr(notes, "x\\nX_INJECTED=1\\r\\x1b[31m"), "%s", notes);
    stop_daemon(&d);
    close(nfd);
    free(body);
    free(bad);
    free(sock);
    free(src);
    free(a);
}

/* The status line and headers of the answer to METHOD PATH with one more header (or ""). */
static char *http_head(struct daemon_run *d, const char *method, const char *path,
                       const char *header)
{
    char *cmd = skt_fmt("curl -s -o /dev/null -D - -X %s %s http://127.0.0.1:%d%s", method,
                        header, d->port, path);
    char *out = NULL;
    skt_sh(cmd, 70, &out);
    free(cmd);
    return out;
}

/* RFC 7235: the auth scheme is case-insensitive ("authorization: bearer T" is
 * what some clients send); RFC 9110: a 405 says in Allow what the path takes. */
Test(operations, bearer_in_any_case_and_405_says_what_is_allowed, .timeout = 120)
{
    struct daemon_run d = {.dir = skt_tmpdir("ops-http")};
    d.cfg = skt_fmt("%s/skolsync.yaml", d.dir);
    d.db = skt_fmt("%s/out.db", d.dir);
    char *a = skt_fmt("%s/a", d.dir);
    skt_generate(a, 25, 10);
    char *src = source_entry("files", a, NULL);
    write_config(&d, src, NULL);
    start_daemon(&d);

    const char *const auth[][2] = {
        {"-H 'authorization: bearer " TOKEN "'", " 200 "},
        {"-H 'Authorization: BEARER " TOKEN "'", " 200 "},
        {"-H 'Authorization: Bearer " TOKEN "'", " 200 "},
        {"-H 'authorization: bearer wrong-token'", " 401 "},
    };
    for (size_t i = 0; i < sizeof(auth) / sizeof(auth[0]); i++) {
        char *head = http_head(&d, "POST", "/api/v1/reload", auth[i][0]);
        cr_assert(strstr(head, auth[i][1]), "%s: %s", auth[i][0], head);
        free(head);
    }

    const char *const wrong[][3] = {
        {"DELETE", "/api/v1/reload", "Allow: POST\r\n"},
        {"POST", "/health", "Allow: GET\r\n"},
        {"DELETE", "/api/v1/connectors/files/pause", "Allow: POST\r\n"},
        {"PUT", "/api/v1/connectors/files", "Allow: GET\r\n"},
    };
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        char *head = http_head(&d, wrong[i][0], wrong[i][1], "");
        cr_assert(strstr(head, " 405 "), "%s %s: %s", wrong[i][0], wrong[i][1], head);
        cr_assert(strstr(head, wrong[i][2]), "%s %s: %s", wrong[i][0], wrong[i][1], head);
        free(head);
    }
    char *head = http_head(&d, "GET", "/health", "");
    cr_assert(strstr(head, " 200 ") && !strstr(head, "Allow:"), "%s", head);
    free(head);
    stop_daemon(&d);
    free(src);
    free(a);
}

Test(operations, api_needs_the_token_and_pause_resume_work, .timeout = 180)
{
    /* librdkafka's statistics on: the round-trip time and retries below */
    struct daemon_run d = {.dir = skt_tmpdir("ops-api"), .kafka = "  statistics: 1s\n"};
    d.cfg = skt_fmt("%s/skolsync.yaml", d.dir);
    d.db = skt_fmt("%s/out.db", d.dir);
    char *a = skt_fmt("%s/a", d.dir);
    skt_generate(a, 23, 10);
    size_t na = skt_count_records(a);
    write_config(&d, source_entry("files", a, NULL), NULL);
    start_daemon(&d);
    char *want = sink_applied(na);
    cr_assert(metric_is(&d, want, 60000));

    int st;
    char *body = http(&d, "POST", "/api/v1/connectors/files/pause", NULL, &st);
    cr_assert_eq(st, 401, "no token: %s", body);
    free(body);
    body = http(&d, "POST", "/api/v1/connectors/files/pause", "wrong-token", &st);
    cr_assert_eq(st, 401, "wrong token: %s", body);
    free(body);
    body = http(&d, "GET", "/api/v1/connectors/files", NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert_null(strstr(body, "\"state\":\"paused\""), "a call without the token changed state");
    free(body);

    body = http(&d, "POST", "/api/v1/connectors/files/pause", TOKEN, &st);
    cr_assert_eq(st, 200, "%s", body);
    /* the answer carries the state after the call, once it holds */
    cr_assert(strstr(body, "\"state\":\"paused\""), "answered before the pause held: %s", body);
    free(body);
    /* paused: an appended line is not read */
    char *cmd = skt_fmt(
        "head -1 %s/persons.jsonl | sed 's/\"givenName\":\"[^\"]*\"/\"givenName\":"
        "\"Östen\"/; s/\"modified\":\"[^\"]*\"/\"modified\":\"'$(date -u "
        "+%%Y-%%m-%%dT%%H:%%M:%%SZ)'\"/' "
        ">> %s/persons.jsonl",
        a, a);
    cr_assert_eq(skt_sh(cmd, 10, NULL), 0);
    sleep(2);
    body = http(&d, "GET", "/api/v1/connectors/files", NULL, &st);
    cr_assert(strstr(body, "\"state\":\"paused\""), "%s", body);
    free(body);
    cr_assert(metric_is(&d, want, 100), "a paused source still delivered");
    body = http(&d, "POST", "/api/v1/connectors/files/resume", TOKEN, &st);
    cr_assert_eq(st, 200, "%s", body);
    cr_assert_null(strstr(body, "\"state\":\"paused\""), "answered before the resume: %s", body);
    free(body);
    free(want);
    want = sink_applied(na + 1);
    cr_assert(metric_is(&d, want, 20000), "resumed source did not deliver the appended line");
    body = http(&d, "POST", "/api/v1/connectors/nope/pause", TOKEN, &st);
    cr_assert_eq(st, 404);
    free(body);

    /* The daemon's own lag window for its sink group (node-local: it names
     * the node, the host name on the embedded broker): caught up = OK, lag 0. */
    char *node = sk_name_default_node();
    char *group = skt_fmt("\"group\":\"skolsync-%s-db\"", node);
    char *status_ok =
        skt_fmt("skolsync_consumer_group_status{group=\"skolsync-%s-db\",status=\"OK\"} 1", node);
    bool ok = false;
    for (int i = 0; i < 100 && !ok; i++) {
        body = http(&d, "GET", "/api/v1/lag", NULL, &st);
        ok = st == 200 && strstr(body, group) && strstr(body, "\"status\":\"OK\"") &&
             strstr(body, "\"lag\":0");
        if (!ok) {
            free(body);
            usleep(200000);
        }
    }
    cr_assert(ok, "no OK lag report for %s", group);
    free(body);
    cr_assert(metric_is(&d, status_ok, 2000));
    free(status_ok);
    free(group);
    free(node);
    cr_assert(metric_is(&d, "# TYPE skolsync_consumer_lag_seconds gauge", 100));
    /* queue depth per connector; with librdkafka's statistics on (kafka.statistics), broker
     * round-trip time and request retries as well */
    cr_assert(
        metric_is(&d, "skolsync_kafka_queued_messages{connector=\"files\",kind=\"source\"}", 8000));
    cr_assert(
        metric_is(&d, "skolsync_kafka_broker_rtt_seconds{connector=\"db\",kind=\"sink\"}", 8000));
    cr_assert(metric_is(&d, "skolsync_kafka_request_retries_total{connector=\"files\"", 8000));
    stop_daemon(&d);
    char why[2048] = "";
    cr_assert(skt_db_matches_dataset(d.db, a, why, sizeof(why)), "%s", why);
}

Test(operations, on_error_stop_fails_the_connector_and_the_supervisor_restarts_it, .timeout = 180)
{
    struct daemon_run d = {.dir = skt_tmpdir("ops-policy")};
    d.cfg = skt_fmt("%s/skolsync.yaml", d.dir);
    d.db = skt_fmt("%s/out.db", d.dir);
    char *good = skt_fmt("%s/good", d.dir), *bad = skt_fmt("%s/bad", d.dir);
    skt_generate(good, 24, 10);
    skt_generate(bad, 25, 10);
    char *cmd = skt_fmt("sed -i '1s/^{/{oops/' %s/organisations.jsonl", bad);
    cr_assert_eq(skt_sh(cmd, 10, NULL), 0);
    char *g = source_entry("good", good, NULL);
    char *b = source_entry("strict", bad, "    on_error: stop\n");
    char *both = skt_fmt("%s%s", g, b);
    write_config(&d, both, NULL);
    start_daemon(&d);
    /* The other source's data all arrives: one failing connector stops no other. */
    char *want = sink_applied(skt_count_records(good));
    cr_assert(metric_is(&d, want, 60000), "the healthy source was held up");
    /* The strict source never got past the bad line and is restarted with backoff. */
    const char *series = "skolsync_connector_restarts_total{connector=\"strict\",kind=\"source\","
                         "type=\"jsonl-source\"} ";
    cr_assert_geq(restarted(&d, series), 1, "no restart");
    /* backoff: not restarted in a tight loop */
    sleep(3);
    cr_assert_leq(metric_value(&d, series), 5, "restarted too often: no backoff");
    /* Not ready while it waits for its next restart (between two, it runs
     * for a moment and fails again: asked then, /ready answers 200). */
    int st = 0;
    char *body = NULL;
    for (int64_t t0 = sk_mono_ms(); st != 503 && sk_mono_ms() - t0 < 10000;) {
        free(body);
        body = http(&d, "GET", "/ready", NULL, &st);
        if (st != 503)
            usleep(100000);
    }
    cr_assert_eq(st, 503, "a failed connector must make the daemon not ready: %s", body);
    free(body);
    /* The reason is for the token holder; anyone else is pointed at the log. */
    body = http(&d, "GET", "/api/v1/connectors/strict", NULL, &st);
    cr_assert_null(strstr(body, "organisations.jsonl"), "%s", body);
    free(body);
    body = http(&d, "GET", "/api/v1/connectors/strict", TOKEN, &st);
    cr_assert(strstr(body, "organisations.jsonl:1") && strstr(body, "on_error: stop"), "%s", body);
    cr_assert(strstr(body, "\"records\":0"), "nothing past the bad line was stored: %s", body);
    free(body);
    stop_daemon(&d);
}

/*
 * Two sinks that consume different entity types: each group's lag is measured
 * against its own topics. The monitor once measured every group against the
 * union of all sinks' topics, and a caught-up sink showed the other types'
 * whole backlog as ERR on /api/v1/lag, the status page and /metrics.
 */
Test(operations, lag_of_each_sink_counts_only_its_own_topics, .timeout = 180)
{
    struct daemon_run d = {.dir = skt_tmpdir("ops-lag-own")};
    d.cfg = skt_fmt("%s/skolsync.yaml", d.dir);
    d.db = skt_fmt("%s/out.db", d.dir);
    char *data = skt_fmt("%s/data", d.dir);
    skt_generate(data, 23, 20);
    char *src = source_entry("files", data, NULL);
    char *text = skt_fmt("kafka:\n  brokers: embedded\n"
                         "admin:\n  listen: 127.0.0.1:0\n  token: " TOKEN "\n"
                         "lag_interval: 1s\n"
                         "sources:\n%s"
                         "sinks:\n"
                         "  people:\n    type: sqlite-sink\n    path: %s/people.db\n"
                         "    entities: [Person]\n"
                         "  places:\n    type: sqlite-sink\n    path: %s/places.db\n"
                         "    entities: [Organisation]\n",
                         src, d.dir, d.dir);
    skt_write(d.cfg, text);
    start_daemon(&d);
    /* both sinks caught up, and a lag sample taken after that */
    cJSON *lag = NULL;
    char *body = NULL;
    for (int waited = 0; waited <= 60000; waited += 500) {
        int st;
        free(body);
        body = http(&d, "GET", "/api/v1/lag", NULL, &st);
        cJSON_Delete(lag);
        lag = st == 200 ? cJSON_Parse(body) : NULL;
        const cJSON *status = cJSON_GetObjectItemCaseSensitive(lag, "status");
        const cJSON *groups = cJSON_GetObjectItemCaseSensitive(lag, "groups");
        if (cJSON_IsString(status) && strcmp(status->valuestring, "OK") == 0 &&
            cJSON_GetArraySize(groups) == 2)
            break;
        usleep(500000);
    }
    cr_assert_not_null(lag, "no lag sample: %s", body);
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(lag, "status");
    cr_assert_str_eq(cJSON_IsString(status) ? status->valuestring : "", "OK",
                     "caught-up sinks must not look behind: %s", body);
    const cJSON *g;
    cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(lag, "groups"))
    {
        const char *name = cJSON_GetObjectItemCaseSensitive(g, "group")->valuestring;
        const char *own = strstr(name, "people") ? ".persons" : ".organisations";
        const cJSON *p;
        int n = 0;
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(g, "partitions"))
        {
            const char *topic = cJSON_GetObjectItemCaseSensitive(p, "topic")->valuestring;
            cr_assert(strstr(topic, own), "group %s measured against %s: %s", name, topic, body);
            n++;
        }
        cr_assert_gt(n, 0, "group %s has no partitions: %s", name, body);
    }
    cJSON_Delete(lag);
    free(body);
    stop_daemon(&d);
    free(text);
    free(src);
    free(data);
}

/*
 * Counters are per daemon run: a connector the reload restarts keeps its
 * counts (the exit summary once said "0 records applied" after 9 715, and a
 * Prometheus counter went back). The progress line's rate is over its last
 * interval, so an idle daemon shows 0/s (it showed the average since start).
 */
Test(operations, counters_survive_a_reload_and_the_rate_is_recent, .timeout = 180)
{
    struct daemon_run d = {.dir = skt_tmpdir("ops-counters")};
    d.cfg = skt_fmt("%s/skolsync.yaml", d.dir);
    d.db = skt_fmt("%s/out.db", d.dir);
    char *a = skt_fmt("%s/a", d.dir);
    skt_generate(a, 27, 10);
    size_t na = skt_count_records(a);
    char *src = source_entry("files", a, NULL);
    write_config(&d, src, "progress_interval: 300ms\n");
    start_daemon(&d);
    char *want = sink_applied(na);
    cr_assert(metric_is(&d, want, 60000));
    char *stored = skt_fmt(
        "skolsync_records_total{connector=\"files\",kind=\"source\",type=\"jsonl-source\"} %zu\n",
        na);
    cr_assert(metric_is(&d, stored, 5000));
    /* Without librdkafka's statistics (kafka.statistics is off by default): the
     * drivers' own figures are there, the statistics' are absent, not 0. */
    cr_assert(
        metric_is(&d, "skolsync_kafka_queued_messages{connector=\"files\",kind=\"source\"}", 5000));
    cr_assert(
        metric_is(&d, "skolsync_kafka_queued_messages{connector=\"db\",kind=\"sink\"} 0\n", 5000));
    cr_assert_geq(metric_value(&d, "skolsync_kafka_rebalances_total{connector=\"db\",kind=\"sink\","
                                   "type=\"sqlite-sink\"} "),
                  1, "the sink's assignment was not counted");
    cr_assert_eq(metric_value(&d, "skolsync_kafka_broker_rtt_seconds{"), -1);
    cr_assert_eq(metric_value(&d, "skolsync_kafka_request_retries_total{"), -1);
    sleep(2); /* idle for several progress intervals */
    char *cmd = skt_fmt("grep 'progress: ' %s | tail -1", d.log);
    char *line = NULL;
    skt_sh(cmd, 10, &line);
    cr_assert(strstr(line, "stored (0/s)") && strstr(line, "applied (0/s)"),
              "an idle daemon's rate is not 0: %s", line);
    free(line);

    /* the source's definition changes: the reload restarts it, its counts stay */
    char *changed = source_entry("files", a, "    batch_size: 300\n");
    write_config(&d, changed, "progress_interval: 300ms\n");
    kill(d.pid, SIGHUP);
    cr_assert(metric_is(&d, "skolsync_reloads_total 1\n", 20000), "reload not applied");
    char *grep = skt_fmt("grep -c 'files: restarted by the reload' %s", d.log);
    char *out = NULL;
    skt_sh(grep, 5, &out);
    cr_assert_eq(atoi(out), 1, "the source was not restarted by the reload: %s", out);
    free(out);
    cr_assert(metric_is(&d, stored, 5000), "a restarted connector's count went back");
    stop_daemon(&d);
    free(grep);
    free(changed);
    free(cmd);
    free(stored);
    free(want);
    free(src);
    free(a);
}

/* Twelve sinks share the daemon's 64 MiB prefetch budget: each consumer may
 * fetch 64 MiB / 12 ahead, not 8 MiB (100 sinks held 100 × 8 MiB). */
Test(operations, many_sinks_share_the_prefetch_budget, .timeout = 120)
{
    char *dir = skt_tmpdir("ops-prefetch");
    char *data = skt_fmt("%s/data", dir), *cfg = skt_fmt("%s/skolsync.yaml", dir);
    char *log = skt_fmt("%s/daemon.log", dir);
    skt_generate(data, 23, 20);
    struct sk_buf y = {0};
    sk_buf_printf(&y, "kafka:\n  brokers: embedded\nsources:\n");
    char *src = source_entry("files", data, NULL);
    sk_buf_printf(&y, "%ssinks:\n", src);
    free(src);
    for (int i = 0; i < 12; i++)
        sk_buf_printf(&y, "  db%02d:\n    type: sqlite-sink\n    path: %s/db%02d.sqlite\n", i, dir,
                      i);
    skt_write(cfg, y.p);
    sk_buf_free(&y);
    char *argv[] = {(char *)skt_skolsync(), "run", "--once", "-c", cfg, NULL};
    pid_t pid = skt_spawn(argv, log);
    cr_assert_eq(skt_wait(pid, 90000), 0, "skolsync run --once failed (%s)", log);
    char *out = NULL;
    char *cmd = skt_fmt("grep -c 'prefetch 5461 KiB' %s", log);
    skt_sh(cmd, 10, &out);
    cr_assert_eq(atoi(out), 12, "not every consumer took its share of the budget (%s)", log);
    free(out);
    free(cmd);
    free(log);
    free(cfg);
    free(data);
    free(dir);
}

/*
 * A sink whose Kafka consumer cannot be made (here an operator's
 * kafka.properties that librdkafka refuses for consumers) fails: a --once
 * run exits non-zero at once, and the daemon shows it failed, not ready,
 * and restarts it with backoff. It used to end "stopped": the --once run
 * waited forever and the daemon never restarted it.
 */
Test(operations, a_sink_whose_consumer_cannot_be_made_fails, .timeout = 120)
{
    struct daemon_run d = {.dir = skt_tmpdir("ops-consumer")};
    d.cfg = skt_fmt("%s/skolsync.yaml", d.dir);
    d.db = skt_fmt("%s/out.db", d.dir);
    d.log = skt_fmt("%s/once.log", d.dir);
    /* a consumer's fetch.max.bytes under message.max.bytes (1 MB) */
    char *text = skt_fmt("kafka:\n  brokers: embedded\n  properties:\n"
                         "    fetch.max.bytes: \"524288\"\n"
                         "admin:\n  listen: 127.0.0.1:0\n  token: " TOKEN "\n"
                         "sinks:\n  db:\n    type: sqlite-sink\n    path: %s\n",
                         d.db);
    skt_write(d.cfg, text);
    free(text);
    char *argv[] = {(char *)skt_skolsync(), "run", "--once", "-c", d.cfg, NULL};
    pid_t pid = skt_spawn(argv, d.log);
    int rc = skt_wait(pid, 30000);
    if (rc == -2) {
        kill(pid, SIGKILL);
        skt_wait(pid, 5000);
    }
    cr_assert(rc != 0 && rc != -2, "run --once should fail at once, got %d (%s)", rc, d.log);
    char *out = NULL;
    char *cmd = skt_fmt("grep -c 'cannot create a Kafka consumer' %s", d.log);
    skt_sh(cmd, 10, &out);
    cr_assert_geq(atoi(out), 1, "the reason is not logged (%s)", d.log);
    free(out);
    free(cmd);
    free(d.log);

    start_daemon(&d);
    cr_assert_geq(restarted(&d, "skolsync_connector_restarts_total{connector=\"db\","
                                "kind=\"sink\",type=\"sqlite-sink\"} "),
                  1, "the failed sink was not restarted");
    int st = 0;
    char *body = http(&d, "GET", "/ready", NULL, &st);
    cr_assert_eq(st, 503, "a sink without a consumer must make the daemon not ready: %s", body);
    free(body);
    body = http(&d, "GET", "/api/v1/connectors/db", TOKEN, &st);
    cr_assert(strstr(body, "\"state\":\"failed\"") && strstr(body, "fetch.max.bytes"), "%s", body);
    free(body);
    stop_daemon(&d);
    free(d.cfg);
    free(d.db);
    free(d.dir);
}

/* /ready polled (200 ms) until it answers want with text in its body; false past timeout_ms. */
static bool ready_is(struct daemon_run *d, int want, const char *text, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 200) {
        int st = 0;
        char *body = http(d, "GET", "/ready", TOKEN, &st);
        bool ok = st == want && strstr(body, text);
        free(body);
        if (ok)
            return true;
        usleep(200000);
    }
    return false;
}

/* A sink's work outside apply (a OneRoster bundle written on its own thread)
 * that fails is a failure the operator sees, not a warning in the log. */
Test(operations, a_bundle_that_cannot_be_written_makes_the_sink_retrying, .timeout = 180)
{
    struct daemon_run d = {.dir = skt_tmpdir("ops-bundle")};
    d.cfg = skt_fmt("%s/skolsync.yaml", d.dir);
    char *data = skt_fmt("%s/data", d.dir), *out = skt_fmt("%s/out", d.dir);
    skt_generate(data, 41, 20);
    cr_assert_eq(mkdir(out, 0755), 0);
    char *src = source_entry("files", data, NULL);
    char *text = skt_fmt("kafka:\n  brokers: embedded\n"
                         "admin:\n  listen: 127.0.0.1:0\n  token: " TOKEN "\n"
                         "sources:\n%s"
                         "sinks:\n  csv:\n    type: oneroster-csv-sink\n    state_dir: %s\n"
                         "    output_dir: %s\n    idle: 1s\n",
                         src, d.dir, out);
    skt_write(d.cfg, text);
    start_daemon(&d);
    for (int i = 0; i < 150 && skt_lines_with(d.log, "csv: bundle ") < 1; i++)
        usleep(200000);
    cr_assert_geq(skt_lines_with(d.log, "csv: bundle "), 1, "no first bundle (%s)", d.log);
    cr_assert(ready_is(&d, 200, "ready", 10000), "not ready after the first bundle");

    /* the output directory is gone, a file in its place: the next bundle fails */
    char *cmd = skt_fmt("rm -rf %s && touch %s", out, out);
    cr_assert_eq(skt_sh(cmd, 10, NULL), 0);
    free(cmd);
    skt_append_persons(data, 9000, 1);
    cr_assert(ready_is(&d, 503, "csv is retrying: writing the bundle", 20000),
              "a bundle that cannot be written left the daemon ready (%s)", d.log);
    int st = 0;
    char *body = http(&d, "GET", "/api/v1/connectors/csv", TOKEN, &st);
    cr_assert(strstr(body, "\"state\":\"retrying\"") && strstr(body, "Not a directory"), "%s",
              body);
    free(body);

    /* the directory back: the next attempt (30 s after the failure) writes it */
    cmd = skt_fmt("rm -f %s && mkdir %s", out, out);
    cr_assert_eq(skt_sh(cmd, 10, NULL), 0);
    free(cmd);
    cr_assert(ready_is(&d, 200, "ready", 45000), "not ready again once the bundle could be "
                                                  "written (%s)", d.log);
    cr_assert_geq(skt_lines_with(d.log, "csv: works again"), 1, "%s", d.log);
    cmd = skt_fmt("test -e %s/current", out);
    cr_assert_eq(skt_sh(cmd, 10, NULL), 0, "no bundle in the directory put back");
    free(cmd);
    stop_daemon(&d);
    free(text);
    free(src);
    free(out);
    free(data);
    free(d.log);
    free(d.cfg);
    free(d.dir);
}

/*
 * A `run --once` with a oneroster-csv-sink ends with its bundle written before
 * the run counts as done, and fails when the bundle cannot be written. The
 * last bundle used to be written in the sink's close, in the teardown that is
 * cut after 10 s: a large state's bundle could be cut off, and a run whose
 * bundle could not be written exited 0 with a warning.
 */
Test(operations, a_run_once_ends_with_its_bundle_or_fails, .timeout = 180)
{
    char *dir = skt_tmpdir("ops-once-bundle");
    char *data = skt_fmt("%s/data", dir), *out = skt_fmt("%s/out", dir);
    char *cfg = skt_fmt("%s/skolsync.yaml", dir), *log = skt_fmt("%s/once.log", dir);
    skt_generate(data, 43, 20);
    cr_assert_eq(mkdir(out, 0755), 0);
    char *src = source_entry("files", data, NULL);
    /* idle: 1h: the sink's own timer writes nothing within the run */
    char *text = skt_fmt("kafka:\n  brokers: embedded\n  embedded_dir: %s/broker\n"
                         "sources:\n%s"
                         "sinks:\n  csv:\n    type: oneroster-csv-sink\n    state_dir: %s\n"
                         "    output_dir: %s\n    idle: 1h\n",
                         dir, src, dir, out);
    skt_write(cfg, text);
    char *argv[] = {(char *)skt_skolsync(), "run", "--once", "-c", cfg, NULL};
    cr_assert_eq(skt_wait(skt_spawn(argv, log), 90000), 0, "run --once failed (%s)", log);
    char *cmd = skt_fmt("b=$(grep -n 'csv: bundle ' %s | head -1 | cut -d: -f1); "
                        "e=$(grep -n 'every sink is drained' %s | head -1 | cut -d: -f1); "
                        "test -n \"$b\" && test -n \"$e\" && test \"$b\" -lt \"$e\" && "
                        "test -e %s/current",
                        log, log, out);
    cr_assert_eq(skt_sh(cmd, 10, NULL), 0, "the bundle was not written before the run's end (%s)",
                 log);
    free(cmd);

    /* new persons, and `current` an operator's directory the link cannot replace */
    skt_append_persons(data, 9000, 1);
    cmd = skt_fmt("rm -f %s/current && mkdir %s/current && touch %s/current/mine", out, out, out);
    cr_assert_eq(skt_sh(cmd, 10, NULL), 0);
    free(cmd);
    free(log);
    log = skt_fmt("%s/once2.log", dir);
    pid_t pid = skt_spawn(argv, log);
    int rc = skt_wait(pid, 90000);
    if (rc == -2) {
        kill(pid, SIGKILL);
        skt_wait(pid, 5000);
    }
    cr_assert(rc != 0 && rc != -2, "a run --once whose bundle cannot be written exited %d (%s)", rc,
              log);
    cr_assert_geq(skt_lines_with(log, "csv: publishing: "), 1, "the reason is not logged (%s)",
                  log);
    free(text);
    free(src);
    free(log);
    free(cfg);
    free(out);
    free(data);
    free(dir);
}

/* Persons in the SQLite file at path (-1: no file, or no table yet). */
static long persons_in(const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        if (sqlite3_prepare_v2(db, "SELECT count(*) FROM persons", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* An operator deletes the sink's database to rebuild the copy while the
 * daemon runs: before, the sink went on writing into the deleted file. */
Test(operations, a_database_deleted_under_a_running_sink_is_filled_again, .timeout = 120)
{
    struct daemon_run d = {.dir = skt_tmpdir("ops-deleted-db")};
    d.cfg = skt_fmt("%s/skolsync.yaml", d.dir);
    d.db = skt_fmt("%s/out.db", d.dir);
    char *data = skt_fmt("%s/data", d.dir);
    skt_generate(data, 43, 20);
    char *persons = skt_fmt("wc -l < %s/persons.jsonl", data), *out = NULL;
    cr_assert_eq(skt_sh(persons, 10, &out), 0);
    long want = atol(out);
    free(out);
    cr_assert_gt(want, 0);
    char *src = source_entry("files", data, NULL);
    write_config(&d, src, NULL);
    start_daemon(&d);
    long got = -1;
    for (int i = 0; i < 150 && got != want; i++, usleep(200000))
        got = persons_in(d.db);
    cr_assert_eq(got, want, "the first sync did not arrive (%s)", d.log);

    char *rm = skt_fmt("rm -f %s %s-wal %s-shm", d.db, d.db, d.db);
    cr_assert_eq(skt_sh(rm, 10, NULL), 0);
    got = -1;
    for (int i = 0; i < 150 && got != want; i++, usleep(200000))
        got = persons_in(d.db);
    cr_assert_eq(got, want, "the deleted database was not filled again: %ld of %ld persons (%s)",
                 got, want, d.log);
    cr_assert_geq(skt_lines_with(d.log, "was deleted or replaced while open"), 1, "%s", d.log);
    int st = 0;
    char *body = http(&d, "GET", "/api/v1/connectors/db", TOKEN, &st);
    cr_assert(strstr(body, "\"restarts\":1"), "%s", body);
    free(body);
    stop_daemon(&d);
    free(rm);
    free(src);
    free(persons);
    free(data);
    free(d.log);
    free(d.db);
    free(d.cfg);
    free(d.dir);
}
