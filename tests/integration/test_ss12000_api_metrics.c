/*
 * test_ss12000_api_metrics.c: the hub's figures per client on the daemon's
 * GET /metrics (connector.h, sk_sink_ops.metrics), with the daemon running
 * a hub on an embedded broker: requests, errors by class and the answer
 * time histogram, labelled by connector and client, each family once.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "sk_test.h"
#include "util.h"

/* curl url with a bearer token (NULL: none); the body (caller frees). */
/* noinline: inlined, gcc 12 takes the body for a pointer to the local out (-Wdangling-pointer). */
__attribute__((noinline)) static char *curl(const char *url, const char *token)
{
    char *cmd = skt_fmt("curl -s %s%s%s '%s'", token ? "-H 'Authorization: Bearer " : "",
                        token ? token : "", token ? "'" : "", url);
    char *out = NULL;
    skt_sh(cmd, 20, &out);
    free(cmd);
    return out;
}

Test(ss12000_api_metrics, per_client_figures_on_the_daemons_metrics, .timeout = 120)
{
    char *dir = skt_tmpdir("hub-metrics");
    char *cfg = skt_fmt("%s/c.yaml", dir), *log = skt_fmt("%s/daemon.log", dir);
    char *text = skt_fmt("kafka: {brokers: embedded}\nadmin: {listen: 127.0.0.1:0}\n"
                         "sinks:\n  hub:\n    type: ss12000-api-sink\n    listen: 127.0.0.1:0\n"
                         "    state_dir: %s/state\n    clients:\n"
                         "      lms: {token: lms-token-0123456789, entities: all}\n"
                         "      lib: {token: lib-token-0123456789, entities: [Group]}\n",
                         dir);
    skt_write(cfg, text);
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", cfg, NULL};
    pid_t pid = skt_spawn(argv, log);
    int admin = skt_logged_port(log, 30000),
        port = skt_logged_port_after(log, "serving SS 12000 on", 30000);
    cr_assert(admin > 0 && port > 0, "no ports logged");
    cr_assert(skt_wait_line(log, SKT_HUB_SERVING, 30000), "the hub never served (%s)", log);
    char *groups = skt_fmt("http://127.0.0.1:%d/groups", port);
    char *persons = skt_fmt("http://127.0.0.1:%d/persons", port);
    free(curl(groups, "lms-token-0123456789"));
    free(curl(groups, "lms-token-0123456789"));
    free(curl(persons, "lib-token-0123456789")); /* 403 */
    char *metrics_url = skt_fmt("http://127.0.0.1:%d/metrics", admin);
    char *m = curl(metrics_url, NULL);
    cr_assert_not_null(
        strstr(m, "skolsync_hub_requests_total{connector=\"hub\",client=\"lms\"} 2\n"), "%s", m);
    cr_assert_not_null(
        strstr(m, "skolsync_hub_requests_total{connector=\"hub\",client=\"lib\"} 1\n"), "%s", m);
    cr_assert_not_null(
        strstr(m, "skolsync_hub_errors_total{connector=\"hub\",client=\"lib\",status=\"4xx\"} 1\n"),
        "%s", m);
    cr_assert_not_null(
        strstr(m, "skolsync_hub_request_duration_seconds_count{connector=\"hub\",client=\"lms\"} "
                  "2\n"),
        "%s", m);
    /* The webhooks: none made yet (no subscription), but the families are there. */
    cr_assert_not_null(
        strstr(m, "skolsync_hub_webhooks_total{connector=\"hub\",result=\"sent\"} 0\n"), "%s", m);
    cr_assert_not_null(strstr(m, "skolsync_hub_subscriptions_dropped_total{connector=\"hub\"} 0\n"),
                       "%s", m);
    const char *family = strstr(m, "# TYPE skolsync_hub_requests_total counter\n");
    cr_assert(family && !strstr(family + 1, "# TYPE skolsync_hub_requests_total"), "once: %s", m);
    cr_assert_null(strstr(m, "lms-token"), "a token on /metrics");
    free(m);
    /* The status API: per client its kind of credentials, scope and counters, no secret. */
    char *api = skt_fmt("http://127.0.0.1:%d/api/v1/connectors", admin);
    char *status = curl(api, NULL);
    cr_assert_not_null(strstr(status, "\"clients\":[{\"name\":\"lms\",\"auth\":\"token\","
                                      "\"organisations\":0,\"requests\":2,"),
                       "%s", status);
    cr_assert_not_null(strstr(status, "\"name\":\"lib\""), "%s", status);
    cr_assert_null(strstr(status, "token-0123456789"), "a token in the status API: %s", status);
    free(status);
    free(api);
    kill(pid, SIGTERM);
    cr_assert_eq(skt_wait(pid, 30000), 0);
    free(metrics_url);
    free(groups);
    free(persons);
    free(text);
    free(cfg);
    free(log);
    free(dir);
}
