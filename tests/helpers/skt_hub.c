/*
 * skt_hub.c: the ss12000-api-sink (the hub) under test, opened in-process on
 * 127.0.0.1:0 (skt_sink_open, by type only: no header of the connector), and
 * a libcurl client of its API. skt_hub.h says what each helper does.
 */
#include "skt_hub.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "buf.h"
#include "connector.h"
#include "sk_test.h"
#include "util.h"

char *skt_hub_dir;
char *skt_hub_ca_file; /* the certificate a TLS skt_hub is checked against, or NULL */
struct sk_sink *skt_hub;
struct skt_recs skt_hub_batch;

static const char *const default_clients =
    "  lms: {token: lms-token-0123456789, entities: all}\n"
    "  lib: {token: lib-token-0123456789, entities: 'Group, organisations'}\n";

void skt_hub_open_filling(const char *extra)
{
    if (!skt_hub_dir)
        skt_hub_dir = skt_tmpdir("hub");
    char *yaml = skt_fmt("listen: 127.0.0.1:0\nstate_dir: %s\nclients:\n%s%s", skt_hub_dir,
                         default_clients, extra ? extra : "");
    skt_hub = skt_sink_open("ss12000-api-sink", yaml, NULL, 0, "hub-incarnation");
    free(yaml);
}

void skt_hub_open_clients(const char *clients, const char *extra)
{
    if (!skt_hub_dir)
        skt_hub_dir = skt_tmpdir("hub");
    char *yaml = skt_fmt("listen: 127.0.0.1:0\nstate_dir: %s\nclients:\n%s%s", skt_hub_dir,
                         clients ? clients : default_clients, extra ? extra : "");
    skt_hub = skt_sink_open("ss12000-api-sink", yaml, NULL, 0, "hub-incarnation");
    free(yaml);
    /* as the driver says once the topics are applied: these tests read what they apply */
    skt_hub->ops->caught_up(skt_hub);
}

void skt_hub_open(const char *extra)
{
    skt_hub_open_clients(NULL, extra);
}

void skt_hub_finish(void)
{
    skt_sink_drop(&skt_hub);
    skt_recs_free(&skt_hub_batch);
    free(skt_hub_dir);
    free(skt_hub_ca_file);
    skt_hub_dir = skt_hub_ca_file = NULL;
}

static size_t collect(char *data, size_t size, size_t n, void *ctx)
{
    struct sk_buf *b = ctx;
    sk_buf_putn(b, data, size * n);
    return size * n;
}

/* method path (with its query) at the skt_hub with an Authorization header (NULL: none). */
long skt_hub_request(const char *method, const char *path, const char *authorization, char **body)
{
    return skt_hub_send(method, path, authorization, NULL, body);
}

long skt_hub_send(const char *method, const char *path, const char *authorization,
                  const char *request, char **body)
{
    CURL *c = curl_easy_init();
    char *url = skt_fmt("%s%s", skt_hub->ops->target(skt_hub), path);
    struct curl_slist *h = NULL;
    if (authorization) {
        char *line = skt_fmt("Authorization: %s", authorization);
        h = curl_slist_append(h, line);
        free(line);
    }
    struct sk_buf b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (request) {
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, request);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    if (skt_hub_ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, skt_hub_ca_file);
    long status = 0;
    cr_assert_eq(curl_easy_perform(c), CURLE_OK, "%s %s", method, url);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(url);
    char *text = sk_buf_take(&b);
    if (body)
        *body = text;
    else
        free(text);
    return status;
}

long skt_hub_get(const char *path, const char *authorization, char **body)
{
    return skt_hub_request("GET", path, authorization, body);
}

/* GET that must answer want; the body parsed. */
cJSON *skt_hub_get_json(const char *path, const char *authorization, long want)
{
    char *body;
    long status = skt_hub_get(path, authorization, &body);
    cr_assert_eq(status, want, "GET %s: %ld, expected %ld: %s", path, status, want, body);
    cJSON *j = cJSON_Parse(body);
    cr_assert_not_null(j, "GET %s: not JSON: %s", path, body);
    free(body);
    return j;
}

/* An error answer in the spec's shape {code, message} with this code. */
void skt_hub_assert_error(const char *path, const char *authorization, long want, const char *code)
{
    cJSON *j = skt_hub_get_json(path, authorization, want);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "code");
    cr_assert(cJSON_IsString(c) && strcmp(c->valuestring, code) == 0, "GET %s: code %s, want %s",
              path, cJSON_IsString(c) ? c->valuestring : "(none)", code);
    cr_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "message")));
    cJSON_Delete(j);
}

char *skt_hub_new_id(void)
{
    char *id = sk_malloc(37);
    sk_uuid_random(id);
    return id;
}

void skt_hub_add_person(const char *id, const char *created, const char *modified,
                        const char *given)
{
    char *json = skt_fmt("{\"id\":\"%s\",\"meta\":{\"created\":\"%s\",\"modified\":\"%s\"},"
                         "\"givenName\":\"%s\",\"familyName\":\"Hubb\",\"securityMarking\":"
                         "\"Ingen\"}",
                         id, created, modified, given);
    skt_recs_add(&skt_hub_batch, "Person", NULL, json, NULL);
    free(json);
}

void skt_hub_add_group(const char *id)
{
    char *json = skt_fmt("{\"id\":\"%s\",\"meta\":{\"created\":\"" T1 "\",\"modified\":\"" T1
                         "\"},\"displayName\":\"7A\",\"groupType\":\"Klass\"}",
                         id);
    skt_recs_add(&skt_hub_batch, "Group", NULL, json, NULL);
    free(json);
}

void skt_hub_apply(void)
{
    skt_recs_apply_ok(skt_hub, &skt_hub_batch);
    for (size_t i = 0; i < skt_hub_batch.n; i++)
        cr_assert_eq(skt_hub_batch.out[i].kind, SK_APPLIED, "record %zu: %s", i,
                     skt_hub_batch.out[i].err.msg);
    skt_recs_clear(&skt_hub_batch);
}

const cJSON *skt_hub_data(const cJSON *page)
{
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(page, "data");
    cr_assert_not_null(d, "no data member");
    return d;
}

const char *skt_hub_token(const cJSON *page)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(page, "pageToken");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

const char *skt_hub_str(const cJSON *obj, const char *a, const char *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, a);
    if (b)
        v = cJSON_GetObjectItemCaseSensitive(v, b);
    cr_assert(cJSON_IsString(v), "no string %s%s%s", a, b ? "." : "", b ? b : "");
    return v->valuestring;
}

/* A value for a query string: '+' and ':' percent-encoded. */
char *skt_hub_escape(const char *v)
{
    CURL *c = curl_easy_init();
    char *e = curl_easy_escape(c, v, 0);
    char *out = sk_strdup(e);
    curl_free(e);
    curl_easy_cleanup(c);
    return out;
}

/* The ids of a list answer, in order, as one comma-separated string (caller frees). */
char *skt_hub_ids(const cJSON *page)
{
    struct sk_buf b = {0};
    const cJSON *x;
    cJSON_ArrayForEach(x, skt_hub_data(page))
    {
        sk_buf_printf(&b, "%s%s", b.len ? "," : "", skt_hub_str(x, "id", NULL));
    }
    return sk_buf_take(&b);
}

struct skt_hub_log skt_hub_log_begin(void)
{
    struct skt_hub_log log = {.file = "/tmp/skt-hublog-XXXXXX"};
    log.fd = mkstemp(log.file);
    cr_assert(log.fd >= 0);
    fflush(stderr);
    log.saved = dup(STDERR_FILENO);
    dup2(log.fd, STDERR_FILENO);
    return log;
}

char *skt_hub_log_end(struct skt_hub_log *log)
{
    sk_sleep_ms(50); /* the request's line is written after its answer */
    fflush(stderr);
    dup2(log->saved, STDERR_FILENO);
    close(log->saved);
    close(log->fd);
    size_t len;
    char *text = sk_read_file(log->file, &len);
    unlink(log->file);
    cr_assert_not_null(text);
    return text;
}
