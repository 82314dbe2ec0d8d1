/*
 * fuzz_http_api.c: the daemon's HTTP request handlers (outside input from
 * whoever reaches admin.listen): routing by method and path, the API's
 * connector actions, health, ready, metrics, lag, the status page, with
 * any headers and body. The daemon is a stand-in with one source runner
 * and no Kafka; requests go through sk_http_dispatch, the same entry the
 * server uses once a request is in.
 *
 * Input: byte 0 picks the Authorization header (none, a wrong token, the
 * right one), byte 1 the method, then the path up to the first newline, the
 * rest is the body. With the right token, paths that need Kafka or the
 * supervisor's main thread (/api/v1/reload waits up to 60 s for it,
 * /api/v1/dlq..., cursor/reset) are not dispatched: there is neither here.
 *
 * Properties: the status is a real HTTP status; a 401/403 comes exactly
 * when a state-changing call lacks the right token; JSON answers parse.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "daemon_internal.h"
#include "http.h"
#include "log.h"
#include "util.h"

#define TOKEN "fuzz-admin-token-0123"

static struct sk_daemon daemon_;
static struct sk_source_env source_;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    sk_log_setup(SK_LOG_ERROR, false);
    struct sk_error err = {0};
    daemon_.http = sk_http_start("127.0.0.1:0", NULL, &err);
    if (!daemon_.http) {
        fprintf(stderr, "sk_http_start: %s\n", err.msg);
        abort();
    }
    pthread_rwlock_init(&daemon_.lock, NULL);
    pthread_mutex_init(&daemon_.reload_mu, NULL);
    pthread_cond_init(&daemon_.reload_cv, NULL);
    daemon_.admin_token = sk_strdup(TOKEN);
    sk_runner_init(&source_.runner, SK_RUNNER_SOURCE, "sis", "ss12000-source");
    /* No thread runs it: stopped, so calls that wait for their change to hold
     * (pause, resume, release) answer at once instead of after 10 s. */
    atomic_store(&source_.runner.state, SK_STATE_STOPPED);
    static struct sk_runner *conns[1];
    conns[0] = &source_.runner;
    daemon_.conns = conns;
    daemon_.n_conns = 1;
    if (sk_http_api_register(&daemon_, &err)) {
        fprintf(stderr, "sk_http_api_register: %s\n", err.msg);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "*", ""};
    const char *auth = data[0] % 3 == 0   ? NULL
                       : data[0] % 3 == 1 ? "Bearer wrong"
                                          : "Bearer " TOKEN;
    const char *method = methods[data[1] % 8];
    const uint8_t *nl = memchr(data + 2, '\n', size - 2);
    size_t path_len = nl ? (size_t)(nl - (data + 2)) : size - 2;
    char *path = sk_strndup((const char *)data + 2, path_len);
    size_t body_len = nl ? size - 2 - path_len - 1 : 0;
    char *body = sk_strndup(nl ? (const char *)nl + 1 : "", body_len);
    bool right = data[0] % 3 == 2;
    if (strlen(path) != path_len || // a NUL in the path: MHD never hands one over
        (right && (strncmp(path, "/api/v1/reload", 14) == 0 ||
                   strncmp(path, "/api/v1/dlq", 11) == 0 || strstr(path, "cursor")))) {
        free(path);
        free(body);
        return 0;
    }
    struct sk_http_request req = {
        .method = method,
        .path = path,
        .body = body,
        .body_len = body_len,
        .content_type = "application/json",
        .authorization = auth,
    };
    struct sk_http_response resp = {0};
    sk_http_dispatch(daemon_.http, &req, &resp);
    if (resp.status < 100 || resp.status > 599)
        abort();
    bool json = !resp.content_type || strstr(resp.content_type, "json");
    if (json && resp.body && *resp.body) {
        cJSON *doc = cJSON_Parse(resp.body);
        if (!doc) {
            fprintf(stderr, "%s %s -> %d, not JSON: %s\n", method, path, resp.status, resp.body);
            abort();
        }
        cJSON_Delete(doc);
    }
    /* A state-changing call that got through had the right token. */
    if (strcmp(method, "POST") == 0 && resp.status == 200 && strcmp(path, "/api/v1/dlq") != 0 &&
        strncmp(path, "/api/v1/connectors/", 19) == 0 && !right)
        abort();
    /* Restarts and pauses asked for by the input: undo, so every input sees the same daemon. */
    atomic_store(&source_.runner.restart_requested, false);
    atomic_store(&source_.runner.paused, false);
    sk_source_env_clear(&source_); /* queued releases and the held list */
    free(resp.body);
    free(path);
    free(body);
    return 0;
}
