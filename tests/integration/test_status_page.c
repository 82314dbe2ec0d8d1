/*
 * test_status_page.c: the status page at GET / (daemon/status/index.html) in
 * headless Chromium (Debian's `chromium`), against a daemon on the embedded
 * broker with one jsonl source, two sqlite sinks and a hub (its clients). Once the data is synced
 * and the lag monitor has a sample, the DOM after the page's scripts ran must
 * show every connector in a row with its state, and every sink's lag card a
 * number and a status. A screenshot is kept as a test artifact:
 * ${SK_BINARY_DIR}/test-artifacts/status-page.png. Every wait is bounded.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "names.h"
#include "sk_test.h"

#define CHROMIUM "/usr/bin/chromium"

struct daemon_run {
    char *dir, *cfg, *log;
    pid_t pid;
    int port;
};

/* GET path; returns the body (caller frees) and the HTTP status in *status. */
static char *http_get(const struct daemon_run *d, const char *path, int *status)
{
    char *cmd = skt_fmt("curl -s -m 10 -w '\\n%%{http_code}' http://127.0.0.1:%d%s", d->port, path);
    char *out = NULL;
    skt_sh(cmd, 15, &out);
    free(cmd);
    char *nl = strrchr(out, '\n');
    *status = nl ? atoi(nl + 1) : 0;
    if (nl)
        *nl = '\0';
    return out;
}

/* Polls path until it answers 200 with every string of want[] in the body. */
static bool wait_for(const struct daemon_run *d, const char *path, const char *const *want,
                     int timeout_ms, char **last)
{
    for (int waited = 0;; waited += 250) {
        int st;
        char *body = http_get(d, path, &st);
        bool ok = st == 200;
        for (const char *const *w = want; ok && *w; w++)
            ok = strstr(body, *w) != NULL;
        if (ok || waited >= timeout_ms) {
            if (last)
                *last = body;
            else
                free(body);
            return ok;
        }
        free(body);
        usleep(250000);
    }
}

/* Headless Chromium with a fresh profile; `what` is --dump-dom or --screenshot=FILE. */
static int chromium(const struct daemon_run *d, const char *what, const char *out_path,
                    const char *tag)
{
    char *profile = skt_tmpdir(tag);
    char *cmd =
        skt_fmt(CHROMIUM " --headless --no-sandbox --disable-gpu --disable-quic "
                         "--no-first-run --disable-background-networking "
                         "--disable-component-update --disable-sync --disable-dev-shm-usage "
                         "--hide-scrollbars --user-data-dir=%s --window-size=1280,900 "
                         "--virtual-time-budget=5000 %s http://127.0.0.1:%d/ >%s 2>%s/chromium.log",
                profile, what, d->port, out_path, profile);
    char *out = NULL;
    int rc = skt_sh(cmd, 60, &out);
    if (rc != 0) {
        char *logcmd = skt_fmt("tail -n 20 %s/chromium.log", profile);
        char *log = NULL;
        skt_sh(logcmd, 5, &log);
        cr_log_error("chromium exited %d:\n%s%s", rc, out, log);
        free(log);
        free(logcmd);
    }
    free(out);
    free(cmd);
    free(profile);
    return rc;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

/* The element that carries attr="value", from its tag's start to `end` (a copy; caller frees). */
static char *element(const char *dom, const char *attr, const char *value, const char *end)
{
    char *needle = skt_fmt("%s=\"%s\"", attr, value);
    const char *at = strstr(dom, needle);
    free(needle);
    if (!at)
        return NULL;
    const char *start = at;
    while (start > dom && *start != '<')
        start--;
    const char *stop = strstr(at, end);
    if (!stop)
        return NULL;
    return strndup(start, (size_t)(stop - start) + strlen(end));
}

/* The value of attr="..." inside s, or "" (static buffer). */
static const char *attr_value(const char *s, const char *attr)
{
    static char buf[128];
    buf[0] = '\0';
    char *needle = skt_fmt("%s=\"", attr);
    const char *at = strstr(s, needle);
    if (at) {
        at += strlen(needle);
        size_t n = strcspn(at, "\"");
        if (n < sizeof(buf)) {
            memcpy(buf, at, n);
            buf[n] = '\0';
        }
    }
    free(needle);
    return buf;
}

static bool all_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

static const char *const STATES[] = {"starting", "running", "idle", "retrying", "paused",
                                     "failed",   "stopped", "held", NULL};

static bool known_state(const char *s)
{
    for (const char *const *k = STATES; *k; k++)
        if (strcmp(s, *k) == 0)
            return true;
    return false;
}

Test(status_page, chromium_shows_connectors_and_lag, .timeout = 150)
{
    struct daemon_run d = {.dir = skt_tmpdir("status-page")};
    d.cfg = skt_fmt("%s/skolsync.yaml", d.dir);
    d.log = skt_fmt("%s/daemon.log", d.dir);
    char *data = skt_fmt("%s/data", d.dir);
    skt_generate(data, 41, 20);
    size_t n = skt_count_records(data);
    cr_assert_gt(n, 0);
    char *cfg = skt_fmt("kafka:\n  brokers: embedded\n"
                        "admin:\n  listen: 127.0.0.1:0\n"
                        "lag_interval: 1s\n"
                        "sources:\n"
                        "  files:\n    type: jsonl-source\n    path: %s\n    poll_interval: 500ms\n"
                        "sinks:\n"
                        "  db:\n    type: sqlite-sink\n    path: %s/db.sqlite\n"
                        "  db2:\n    type: sqlite-sink\n    path: %s/db2.sqlite\n"
                        "  hub:\n    type: ss12000-api-sink\n    listen: 127.0.0.1:0\n"
                        "    state_dir: %s/hub\n"
                        "    clients: {lms: {token: lms-token-0123456789, entities: all}}\n",
                        data, d.dir, d.dir, d.dir);
    skt_write(d.cfg, cfg);
    free(cfg);

    char *argv[] = {(char *)skt_skolsync(), "run", "-c", d.cfg, NULL};
    d.pid = skt_spawn(argv, d.log);
    d.port = skt_logged_port(d.log, 20000);
    cr_assert_gt(d.port, 0, "the daemon logged no HTTP port (see %s)", d.log);

    /* Synced: both sinks applied the whole dataset. */
    char *db_done = skt_fmt("skolsync_records_total{connector=\"db\",kind=\"sink\","
                            "type=\"sqlite-sink\"} %zu\n",
                            n);
    char *db2_done = skt_fmt("skolsync_records_total{connector=\"db2\",kind=\"sink\","
                             "type=\"sqlite-sink\"} %zu\n",
                             n);
    const char *synced[] = {db_done, db2_done, NULL};
    char *last = NULL;
    cr_assert(wait_for(&d, "/metrics", synced, 60000, &last), "not synced within 60 s:\n%s", last);
    free(last);
    /* The lag monitor sampled both sinks' groups. */
    /* node-local sinks: groups per node (on the embedded broker the default
     * node name: the host name), which owns their partitions */
    char *node = sk_name_default_node();
    char *g1 = skt_fmt("\"group\":\"skolsync-%s-db\"", node);
    char *g2 = skt_fmt("\"group\":\"skolsync-%s-db2\"", node);
    char *owner = skt_fmt("\"owner\":\"%s\"", node);
    const char *lag_ready[] = {g1, g2, owner, NULL};
    cr_assert(wait_for(&d, "/api/v1/lag", lag_ready, 30000, &last), "no lag sample within 30 s: %s",
              last);
    free(last);
    free(g1);
    free(g2);
    free(owner);

    /* The page is the compiled-in file, self-contained. */
    int st;
    char *page = http_get(&d, "/", &st);
    cr_assert_eq(st, 200);
    cr_assert(strstr(page, "<!doctype html>") || strstr(page, "<!DOCTYPE html>"));
    cr_assert_null(strstr(page, "src=\"http"), "the page must not load external resources");
    cr_assert_null(strstr(page, "href=\"http"), "the page must not load external resources");
    free(page);

    /* A sink that serves clients (the hub) shows them with their requests. */
    int hub = skt_logged_port_after(d.log, "serving SS 12000 on", 20000);
    cr_assert_gt(hub, 0);
    cr_assert(skt_wait_line(d.log, SKT_HUB_SERVING, 30000), "the hub never served (%s)", d.log);
    char *ask = skt_fmt("curl -s -H 'Authorization: Bearer lms-token-0123456789' "
                        "http://127.0.0.1:%d/groups",
                        hub);
    char *asked = NULL;
    skt_sh(ask, 15, &asked);
    free(asked);
    free(ask);

    /* The DOM after the scripts ran. */
    char *dom_path = skt_fmt("%s/dom.html", d.dir);
    cr_assert_eq(chromium(&d, "--dump-dom", dom_path, "chromium-dom"), 0,
                 "chromium --dump-dom failed");
    char *dom = read_file(dom_path, NULL);
    const char *connectors[] = {"files", "db", "db2", NULL};
    for (const char *const *c = connectors; *c; c++) {
        char *row = element(dom, "data-connector", *c, "</tr>");
        cr_assert_not_null(row, "no row for connector %s in the DOM (%s)", *c, dom_path);
        const char *state = attr_value(row, "data-state");
        cr_assert(known_state(state), "%s: state '%s' in %s", *c, state, row);
        char *badge = skt_fmt(">%s</span>", state);
        cr_assert_not_null(strstr(row, badge), "%s: no state badge in %s", *c, row);
        free(badge);
        char *name = skt_fmt(">%s</th>", *c);
        cr_assert_not_null(strstr(row, name), "%s: name not shown in %s", *c, row);
        free(name);
        char *records = skt_fmt("data-field=\"records\" data-value=\"%zu\"", n);
        cr_assert_not_null(strstr(row, records), "%s: records not %zu in %s", *c, n, row);
        free(records);
        /* Who runs the source and holds the sinks' partitions: this node
         * (the embedded broker's single node; docs/lag.md "Owners"). */
        char *shown_node = skt_fmt("data-field=\"node\" data-value=\"%s\">%s</td>", node, node);
        cr_assert_not_null(strstr(row, shown_node), "%s: node %s not shown in %s", *c, node, row);
        free(shown_node);
        free(row);
    }
    cr_assert_not_null(strstr(dom, "data-field=\"clients\">lms 1 req<"), "no hub clients in %s",
                       dom_path);
    const char *sinks[] = {"db", "db2", NULL};
    for (const char *const *s = sinks; *s; s++) {
        char *card = element(dom, "data-sink-lag", *s, "</section>");
        cr_assert_not_null(card, "no lag card for sink %s in the DOM (%s)", *s, dom_path);
        const char *lag = attr_value(card, "data-lag-records");
        cr_assert(all_digits(lag), "%s: lag '%s' is not a number in %s", *s, lag, card);
        const char *status = attr_value(card, "data-lag-status");
        cr_assert(strcmp(status, "OK") == 0 || strcmp(status, "WARN") == 0 ||
                      strcmp(status, "ERR") == 0,
                  "%s: lag status '%s' in %s", *s, status, card);
        char *shown = skt_fmt(">%s</span>", status);
        cr_assert_not_null(strstr(card, shown), "%s: status not shown in %s", *s, card);
        free(shown);
        char *chart = skt_fmt("data-lag-chart=\"%s\"", *s);
        cr_assert_not_null(strstr(card, chart), "%s: no lag chart in %s", *s, card);
        free(chart);
        cr_assert_not_null(strstr(card, "class=\"line\""), "%s: the chart has no line: %s", *s,
                           card);
        char *owners = skt_fmt("data-lag-owners=\"%s\"", node);
        cr_assert_not_null(strstr(card, owners), "%s: its partitions are not all %s's in %s", *s,
                           node, card);
        free(owners);
        char *owned = skt_fmt("data-owner=\"%s\"", node);
        cr_assert_not_null(strstr(card, owned), "%s: no owner %s in %s", *s, node, card);
        free(owned);
        free(card);
    }
    cr_assert_null(strstr(dom, "Loading…"), "the page still shows 'Loading…'");
    free(dom);
    free(node);

    /* The screenshot, kept as the test's artifact. */
    char *artifacts = skt_fmt("%s/test-artifacts", SK_BINARY_DIR);
    mkdir(artifacts, 0755);
    char *png = skt_fmt("%s/status-page.png", artifacts);
    unlink(png);
    char *shot = skt_fmt("--screenshot=%s", png);
    char *shot_out = skt_fmt("%s/screenshot.out", d.dir);
    cr_assert_eq(chromium(&d, shot, shot_out, "chromium-shot"), 0, "chromium --screenshot failed");
    size_t len = 0;
    unsigned char *img = (unsigned char *)read_file(png, &len);
    cr_assert_gt(len, 20000, "%s is only %zu bytes", png, len);
    cr_assert_lt(len, 20u << 20, "%s is %zu bytes", png, len);
    cr_assert_eq(memcmp(img, "\x89PNG\r\n\x1a\n", 8), 0, "%s is not a PNG", png);
    /* IHDR: width and height, big-endian, at bytes 16 and 20. */
    unsigned w =
        (unsigned)img[16] << 24 | (unsigned)img[17] << 16 | (unsigned)img[18] << 8 | img[19];
    unsigned h =
        (unsigned)img[20] << 24 | (unsigned)img[21] << 16 | (unsigned)img[22] << 8 | img[23];
    cr_assert(w >= 1000 && h >= 600, "%s is %ux%u", png, w, h);
    free(img);
    cr_log_info("status page screenshot: %s", png);

    kill(d.pid, SIGTERM);
    int rc = skt_wait(d.pid, 30000);
    if (rc == -2) {
        kill(d.pid, SIGKILL);
        skt_wait(d.pid, 5000);
    }
    cr_assert_eq(rc, 0, "SIGTERM should stop the daemon with exit 0, got %d", rc);
    free(shot);
    free(shot_out);
    free(png);
    free(artifacts);
    free(dom_path);
    free(db_done);
    free(db2_done);
    free(data);
}
