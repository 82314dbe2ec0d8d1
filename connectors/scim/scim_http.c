/*
 * scim_http.c: the scim-sink's requests through the connectors' HTTP client
 * (http_client.h: TLS, bearer or OAuth2 auth, the size limit, Retry-After):
 * paths joined to the base URL, SCIM's media types, bodies parsed as JSON.
 *
 * Owns: the base URL. Must never: put a token or secret into an error
 * message (sk_error.h: callers print them).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.h"
#include "log.h"
#include "scim.h"
#include "util.h"

struct scim_http {
    struct sk_http_client *client;
    char *base; /* url without a trailing '/' */
};

struct scim_http *scim_http_new(const struct scim_conf *conf, const char *component,
                                struct sk_error *err)
{
    if (!conf->url || strncmp(conf->url, "http", 4) != 0) {
        sk_error_set(err, SK_ERR_FATAL, "url: an http:// or https:// URL is required");
        return NULL;
    }
    const char *auth = conf->auth ? conf->auth : "none";
    const struct sk_http_client_conf hc = {
        .user_agent = "skolsync-scim-sink/" SK_VERSION,
        .accept = "application/scim+json, application/json",
        .content_type = "application/scim+json; charset=utf-8",
        .timeout_ms = conf->timeout_ms,
        .max_response_size = conf->max_response_size,
        .max_wait_ms = conf->retry_after_max_ms,
        .ca_file = conf->ca_file,
        .client_cert = conf->client_cert,
        .client_key = conf->client_key,
        .insecure_skip_verify = conf->insecure_skip_verify,
        .auth = strcmp(auth, "bearer") == 0   ? SK_HTTP_AUTH_BEARER
                : strcmp(auth, "oauth2") == 0 ? SK_HTTP_AUTH_OAUTH2
                                              : SK_HTTP_AUTH_NONE,
        .token = conf->token,
        .token_url = conf->token_url,
        .client_id = conf->client_id,
        .client_secret = conf->client_secret,
        .scope = conf->scope,
    };
    struct sk_http_client *client = sk_http_client_new(&hc, component, err);
    if (!client)
        return NULL;
    struct scim_http *h = sk_calloc(1, sizeof(*h));
    h->client = client;
    h->base = sk_strdup(conf->url);
    size_t n = strlen(h->base);
    while (n > 0 && h->base[n - 1] == '/')
        h->base[--n] = '\0';
    return h;
}

void scim_http_free(struct scim_http *h)
{
    if (!h)
        return;
    sk_http_client_free(h->client);
    free(h->base);
    free(h);
}

void scim_resp_free(struct scim_resp *r)
{
    free(r->body);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof(*r));
}

/* s as one line of plain text into out: markup (<...>) left out, every run of
 * white space or control characters one space. */
static void plain_text(const char *s, const char *end, char *out, size_t size)
{
    size_t n = 0;
    bool in_tag = false, space = true;
    for (; s < end && *s && n + 1 < size; s++) {
        unsigned char ch = (unsigned char)*s;
        if (in_tag || ch == '<') {
            in_tag = ch != '>';
            continue;
        }
        if (ch <= ' ' || ch == 0x7f) {
            if (!space)
                out[n++] = ' ';
            space = true;
            continue;
        }
        out[n++] = (char)ch;
        space = false;
    }
    while (n > 0 && out[n - 1] == ' ')
        n--;
    out[n] = '\0';
}

void scim_resp_detail(const struct scim_resp *r, char *out, size_t size)
{
    const cJSON *detail = cJSON_GetObjectItemCaseSensitive(r->json, "detail");
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r->json, "scimType"));
    bool typed = type && *type;
    if (cJSON_IsString(detail)) {
        snprintf(out, size, "%s%s%s", typed ? type : "", typed ? ": " : "", detail->valuestring);
        return;
    }
    const char *body = r->body ? r->body : "";
    /* an HTML error page (a proxy's, a framework's): its title, not its style sheet */
    const char *title = strcasestr(body, "<title>");
    const char *title_end = title ? strcasestr(title, "</title") : NULL;
    char text[201];
    if (title_end)
        plain_text(title + 7, title_end, text, sizeof(text));
    else
        plain_text(body, body + strlen(body), text, sizeof(text));
    snprintf(out, size, "%s", *text ? text : "(no body)");
}

int scim_http_request(struct scim_http *h, const char *method, const char *path, const char *body,
                      const char *if_match, struct scim_resp *resp, struct sk_error *err)
{
    memset(resp, 0, sizeof(*resp));
    resp->retry_after_ms = -1;
    char *url = sk_asprintf("%s%s", h->base, path);
    struct sk_http_resp r;
    int rc = sk_http_client_request_if(h->client, method, url, body, if_match, &r, err);
    free(url);
    if (rc)
        return -1;
    resp->status = r.status;
    resp->retry_after_ms = r.retry_after_ms;
    snprintf(resp->etag, sizeof(resp->etag), "%s", r.etag);
    resp->len = r.body.len;
    resp->body = sk_buf_take(&r.body);
    if (resp->len)
        resp->json = cJSON_ParseWithLength(resp->body, resp->len);
    return 0;
}
