/*
 * scim_probe.c: the scim-sink's `skolsync check --connect`: the credentials
 * (a token from the token endpoint with OAuth2, then a read of /Users that
 * needs them), the server's ServiceProviderConfig (RFC 7644 §5), and the
 * state database.
 *
 * Must never: write to the server (GET only, count=0: no resource is read),
 * create the state directory or database, or report a token or secret.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "probe_fs.h"
#include "scim.h"
#include "util.h"

#define SPC_SCHEMA "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
#define FIX_URL "check url: the SCIM base URL, under which /Users and /ServiceProviderConfig are"

static const char *auth_of(const struct scim_conf *conf)
{
    return conf->auth ? conf->auth : "none";
}

/*
 * The credentials: every answer but 401 and 403 shows they were taken.
 * False when no answer came (no token, the server unreachable): another
 * request would only fail the same way.
 */
static bool probe_auth(const struct scim_conf *conf, struct scim_http *h, struct sk_probe *p)
{
    const char *auth = auth_of(conf);
    struct scim_resp r;
    struct sk_error err = {0};
    if (scim_http_request(h, "GET", "/Users?count=0", NULL, NULL, &r, &err) < 0) {
        /* http_client.c names the token endpoint in the errors of its requests */
        bool token = strcmp(auth, "oauth2") == 0 && strstr(err.msg, "token request to") != NULL;
        sk_probe_fail(p, "auth",
                      token ? "check token_url, client_id, client_secret and scope"
                            : "check url, the network, and the TLS options (ca_file, "
                              "client_cert)",
                      "%s", err.msg);
        return false;
    }
    if (r.status == 401 || r.status == 403) {
        char detail[256];
        scim_resp_detail(&r, detail, sizeof(detail));
        sk_probe_fail(p, "auth",
                      strcmp(auth, "none") == 0 ? "set auth (bearer or oauth2) and its options"
                      : strcmp(auth, "bearer") == 0
                          ? "check token"
                          : "check client_id, client_secret and scope, and the client's rights "
                            "on the server",
                      "GET %s/Users: HTTP %ld with auth %s (%s)", conf->url, r.status, auth,
                      detail);
    } else if (r.status >= 200 && r.status < 300) {
        sk_probe_ok(p, "auth", "%s: GET %s/Users answered %ld", auth, conf->url, r.status);
    } else {
        sk_probe_fail(p, "auth", FIX_URL,
                      "GET %s/Users answered HTTP %ld, so the credentials (%s) were not tried",
                      conf->url, r.status, auth);
    }
    scim_resp_free(&r);
    return true;
}

static bool spc_supported(const cJSON *spc, const char *feature)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(spc, feature);
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(f, "supported"));
}

static bool is_spc(const cJSON *json)
{
    const cJSON *schemas = cJSON_GetObjectItemCaseSensitive(json, "schemas");
    const cJSON *s;
    cJSON_ArrayForEach(s, schemas) if (cJSON_IsString(s) &&
                                       strcmp(s->valuestring, SPC_SCHEMA) == 0) return true;
    return false;
}

static void probe_spc(const struct scim_conf *conf, struct scim_http *h, struct sk_probe *p)
{
    const char *what = "ServiceProviderConfig";
    struct scim_resp r;
    struct sk_error err = {0};
    if (scim_http_request(h, "GET", "/ServiceProviderConfig", NULL, NULL, &r, &err) < 0) {
        sk_probe_fail(p, what, "check url and the network", "%s", err.msg);
        return;
    }
    bool patch = conf->update && strcmp(conf->update, "patch") == 0;
    if (r.status != 200)
        sk_probe_fail(p, what, FIX_URL, "GET %s/ServiceProviderConfig answered HTTP %ld", conf->url,
                      r.status);
    else if (!is_spc(r.json))
        sk_probe_fail(p, what, FIX_URL,
                      "GET %s/ServiceProviderConfig answered 200 but not with SCIM JSON (no "
                      "schemas [\"" SPC_SCHEMA "\"])",
                      conf->url);
    else if (patch && !spc_supported(r.json, "patch"))
        sk_probe_fail(p, what, "set update: put",
                      "the server does not support PATCH (update: patch)");
    else
        sk_probe_ok(p, what, "SCIM 2.0 at %s (patch %s, filter %s)", conf->url,
                    spc_supported(r.json, "patch") ? "supported" : "not supported",
                    spc_supported(r.json, "filter") ? "supported" : "not supported");
    scim_resp_free(&r);
}

void scim_probe(const void *conf_ptr, struct sk_probe *p)
{
    const struct scim_conf *conf = conf_ptr;
    struct sk_error err = {0};
    struct scim_http *h = scim_http_new(conf, p->name, &err);
    if (!h) {
        sk_probe_fail(p, "auth", "correct the options named", "%s", err.msg);
    } else {
        if (probe_auth(conf, h, p))
            probe_spc(conf, h, p);
        scim_http_free(h);
    }
    char *db = sk_asprintf("%s/%s.db", conf->state_dir ? conf->state_dir : SCIM_STATE_DIR_DEFAULT,
                           p->name);
    sk_probe_sqlite_file(p, "state_dir", db, true);
    free(db);
}
