/*
 * fuzz_ss12000_hook.c: the SS 12000 webhook callback body (POST
 * /hooks/<source>/<secret>, sent by the SIS: outside input) through the
 * route handler source_hook.c registers. ss_hook_new() runs once with a
 * stand-in for the core's sk_source_http_route() that keeps the handler;
 * each input is then one request.
 *
 * Input: byte 0 picks the Authorization header (right token, wrong token,
 * none), the rest is the body. Properties (source_hook.c: "Must never crash
 * or block on a malformed body (400)"): the answer is 401 exactly when the
 * token is not right, else 200 or 400; a 400 marks nothing dirty; an answer's
 * body is JSON.
 *
 * The core's services are stubs here, weak so that a real definition (if a
 * library linked here grows one) wins.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "connector.h"
#include "log.h"
#include "source.h"

static sk_http_handler handler;
static void *handler_ctx;
static struct ss_hook *hook;

__attribute__((weak)) int sk_source_http_route(struct sk_source *self, const char *method,
                                               const char *path, sk_http_handler fn, void *ctx,
                                               struct sk_error *err)
{
    handler = fn;
    handler_ctx = ctx;
    return 0;
}

__attribute__((weak)) void sk_source_http_unroute(struct sk_source *self, void *ctx)
{
    handler = NULL;
}

__attribute__((weak)) void sk_source_wake(struct sk_source *self) {}

__attribute__((weak)) int ss_http_request(struct ss_http *h, const char *method, const char *url,
                                          const char *body, struct ss_resp *out,
                                          struct sk_error *err)
{
    return sk_error_set(err, SK_ERR_RETRIABLE, "no network while fuzzing");
}

__attribute__((weak)) void ss_resp_free(struct ss_resp *r)
{
    free(r->body);
    r->body = NULL;
}

__attribute__((weak)) int sk_entity_index(const struct sk_entity *e)
{
    for (int i = 0; sk_entities[i]; i++)
        if (sk_entities[i] == e)
            return i;
    return -1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static struct ss_conf conf;
    static struct sk_source self = {.name = "sis"};
    static bool enabled[SK_ENTITY_COUNT];
    conf.webhook.public_url = "https://skolsync.example.org/";
    conf.webhook.secret = "fuzz-secret-0123";
    conf.webhook.token = "hook-token";
    conf.webhook.debounce_ms = 1;
    for (int i = 0; i < SK_ENTITY_COUNT; i++)
        enabled[i] = true;
    sk_log_setup(SK_LOG_ERROR, false); /* a refused callback warns: not per input */
    struct sk_error err = {0};
    hook = ss_hook_new(&self, &conf, "fuzz", enabled, &err);
    if (!hook || !handler) {
        fprintf(stderr, "ss_hook_new: %s\n", err.msg);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const char *const auth[] = {"Bearer hook-token", "Bearer hook-tokeN", NULL};
    int mode = data[0] % 3;
    /* The core hands the handler a NUL-terminated body (daemon/http.c). */
    char *body = malloc(size);
    memcpy(body, data + 1, size - 1);
    body[size - 1] = '\0';
    struct sk_http_request req = {
        .method = "POST",
        .path = "/hooks/sis/fuzz-secret-0123",
        .body = body,
        .body_len = size - 1,
        .content_type = "application/json",
        .authorization = auth[mode],
    };
    struct sk_http_response resp = {0};
    handler(handler_ctx, &req, &resp);
    int status = resp.status ? resp.status : 200;
    bool dirty[SK_ENTITY_COUNT], deletes = false;
    bool any = ss_hook_take_dirty(hook, dirty, &deletes);
    if ((mode != 0) != (status == 401) || (status != 200 && status != 400 && status != 401)) {
        fprintf(stderr, "auth mode %d answered %d\n", mode, status);
        abort();
    }
    if (status != 200 && any) {
        fprintf(stderr, "a %d marked types dirty\n", status);
        abort();
    }
    if (resp.body) {
        cJSON *j = cJSON_Parse(resp.body);
        if (!j)
            abort();
        cJSON_Delete(j);
    }
    free(resp.body);
    free(body);
    return 0;
}
