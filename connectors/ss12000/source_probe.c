/*
 * source_probe.c: the ss12000-source's `skolsync check --connect`: the
 * server answers with its credentials (an OAuth2 token first, when
 * configured), and one page (limit=1) of each configured type reads as an
 * SS 12000 page; calendarEvents with the window the source sends.
 *
 * Must never: write to the server (GET only, one record a type), keep any
 * state, or report a token or secret.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.h"
#include "source_internal.h"
#include "util.h"

#define FIX_URL "check url: the API's base URL, under which /persons and the other lists are"

/* The URL of one record of e (calendarEvents: in the window the source reads). */
static char *probe_url(const struct ss_conf *conf, const char *base, const struct sk_entity *e)
{
    if (strcmp(e->name, "CalendarEvent") != 0)
        return sk_asprintf("%s%s?limit=1", base, e->path);
    int64_t now = sk_now_us();
    char a[TEXT_MAX], b[TEXT_MAX];
    ss_format_time(now - conf->calendar_window.past_ms * 1000, 0, a);
    ss_format_time(now + conf->calendar_window.future_ms * 1000, 0, b);
    char *ea = sk_http_escape(a), *eb = sk_http_escape(b);
    char *url = sk_asprintf("%s%s?startTime.onOrAfter=%s&startTime.onOrBefore=%s&limit=1", base,
                            e->path, ea, eb);
    free(ea);
    free(eb);
    return url;
}

/*
 * One type: ok with what the page held, or failed with the server's status
 * and reason. False when no answer came (the next type would fail the same
 * way).
 */
static bool probe_type(const struct ss_conf *conf, struct ss_http *h, const char *base,
                       const struct sk_entity *e, struct sk_probe *p)
{
    char *url = probe_url(conf, base, e);
    struct ss_resp r = {0};
    struct sk_error err = {0};
    bool answered = ss_http_request(h, "GET", url, NULL, &r, &err) == 0;
    char what[64];
    snprintf(what, sizeof(what), "%s", e->path + 1);
    if (!answered) {
        bool token = strstr(err.msg, "token request to") != NULL;
        sk_probe_fail(p, what,
                      token ? "check auth: token_url, client_id, client_secret and scope"
                            : "check url, the network and the TLS options (ca_file, "
                              "client_cert), and auth",
                      "%s", err.msg);
    } else if (r.status == 200) {
        cJSON *page = cJSON_ParseWithLength(r.body, r.len);
        const cJSON *data = cJSON_GetObjectItemCaseSensitive(page, "data");
        if (cJSON_IsArray(data))
            sk_probe_ok(p, what, "GET %s%s answered a page (%d record(s) of limit=1)", base,
                        e->path, cJSON_GetArraySize(data));
        else
            sk_probe_fail(p, what, FIX_URL, "GET %s%s answered 200, but not an SS 12000 page",
                          base, e->path);
        cJSON_Delete(page);
    } else {
        char reason[REASON_MAX];
        ss_server_reason(&r, reason);
        const char *fix = r.status == 401 || r.status == 403
                              ? "check auth and the client's rights on the server"
                          : r.status == 404 ? "the server does not serve this type: leave it out "
                                              "of entities (or the source skips it, quietly)"
                                            : FIX_URL;
        sk_probe_fail(p, what, fix, "GET %s%s: HTTP %ld (%s)", base, e->path, r.status, reason);
    }
    ss_resp_free(&r);
    free(url);
    return answered;
}

void ss_probe(const void *conf_ptr, struct sk_probe *p)
{
    const struct ss_conf *conf = conf_ptr;
    struct sk_error err = {0};
    struct ss_http *h = ss_http_new(conf, "check", &err);
    if (!h) {
        sk_probe_fail(p, "client", "check auth and the TLS options", "%s", err.msg);
        return;
    }
    size_t n = strlen(conf->url);
    while (n > 0 && conf->url[n - 1] == '/')
        n--;
    char *base = sk_strndup(conf->url, n);
    bool any = false;
    for (int i = 0; sk_entities[i]; i++) {
        const struct sk_entity *e = sk_entities[i];
        bool wanted = conf->entities.n == 0;
        for (size_t k = 0; k < conf->entities.n && !wanted; k++)
            wanted = strcmp(conf->entities.v[k], e->name) == 0 ||
                     strcmp(conf->entities.v[k], e->collection) == 0;
        if (!wanted)
            continue;
        any = true;
        if (!probe_type(conf, h, base, e, p))
            break; /* no answer: every other type would wait for the same */
    }
    if (!any)
        sk_probe_fail(p, "entities", "name at least one SS 12000 type", "no type to read");
    free(base);
    ss_http_free(h);
}
