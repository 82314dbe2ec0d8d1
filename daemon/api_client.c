/* api_client.c: see api_client.h. */
#include "api_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "buf.h"
#include "util.h"

int sk_api_open(const struct sk_admin_conf *admin, const char *who, struct sk_api *api)
{
    memset(api, 0, sizeof(*api));
    const char *listen = admin->listen;
    const char *colon = listen ? strrchr(listen, ':') : NULL;
    if (!colon || strcmp(colon, ":0") == 0 || strcmp(listen, "off") == 0) {
        fprintf(stderr,
                "%s: the running daemon answers on admin.listen, and admin.listen (%s) names no "
                "fixed port to reach it at\n",
                who, listen ? listen : "off");
        return -1;
    }
    api->base = sk_asprintf("http://%s", listen);
    if (admin->token && *admin->token)
        api->auth = sk_asprintf("Authorization: Bearer %s", admin->token);
    return 0;
}

void sk_api_close(struct sk_api *api)
{
    free(api->base);
    if (api->auth)
        memset(api->auth, 0, strlen(api->auth)); /* the token */
    free(api->auth);
    memset(api, 0, sizeof(*api));
}

static size_t to_buf(char *data, size_t size, size_t n, void *userp)
{
    struct sk_buf *b = userp;
    if (b->len > (64u << 20))
        return 0; /* no answer of the API is this large */
    sk_buf_putn(b, data, size * n);
    return size * n;
}

long sk_api_call(const struct sk_api *api, const char *who, const char *method, const char *path,
                 const char *body, int64_t timeout_ms, struct sk_api_answer *out)
{
    struct sk_buf answer = {0};
    char *url = sk_asprintf("%s%s", api->base, path);
    CURL *curl = curl_easy_init();
    struct curl_slist *hdrs = api->auth ? curl_slist_append(NULL, api->auth) : NULL;
    if (body)
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_URL, url);
    /* The path as built: curl would resolve "/../" in it, and reach another endpoint. */
    curl_easy_setopt(curl, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    if (body || strcmp(method, "POST") == 0)
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body ? body : "");
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, to_buf);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answer);
    CURLcode cc = curl_easy_perform(curl);
    out->status = 0;
    if (cc == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &out->status);
    else if (who)
        fprintf(stderr, "%s: cannot reach the daemon at %s: %s\n", who, api->base,
                curl_easy_strerror(cc));
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(curl);
    free(url);
    out->body = sk_buf_take(&answer);
    return out->status;
}

cJSON *sk_api_answer_json(const struct sk_api *api, const char *who, const char *path,
                          const struct sk_api_answer *a)
{
    cJSON *j = NULL;
    if (!a->status)
        return NULL; /* said by sk_api_call */
    if (a->status != 200)
        fprintf(stderr, "%s: %s%s answered HTTP %ld\n", who, api->base, path, a->status);
    else if (!(j = cJSON_Parse(a->body)))
        fprintf(stderr, "%s: %s%s did not answer with JSON\n", who, api->base, path);
    return j;
}

void sk_api_answer_free(struct sk_api_answer *a)
{
    free(a->body);
    a->body = NULL;
}
