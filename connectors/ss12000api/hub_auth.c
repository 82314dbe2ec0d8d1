/*
 * hub_auth.c: who is asking. A request carries a bearer token: a client's
 * static token, or an access token the hub gave an OAuth2 client at
 * POST /token (RFC 6749 §4.4, client credentials grant).
 *
 * An access token is "at1|client|expiry_ms" sealed with an HMAC-SHA256
 * under the hub's secret that also covers the client's secret
 * (hub_token_seal): nothing is stored, a token outlives a restart until it
 * expires, and a changed client_secret (a reload) voids every token given
 * under the old one.
 *
 * Owns: token checks and the token endpoint. Must never: compare a secret
 * other than in constant time, log or echo a secret or token, or tell an
 * unknown client_id apart from a wrong secret in an answer (both
 * invalid_client).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "hub.h"
#include "util.h"

static bool same_secret(const char *a, const char *given)
{
    size_t n = strlen(a);
    return strlen(given) == n && CRYPTO_memcmp(a, given, n) == 0;
}

/* "at1|client|expiry": the client's secret, for the MAC check (ctx: the hub). */
static const char *access_bound(void *ctx, const char *payload)
{
    const struct hub *h = ctx;
    if (strncmp(payload, "at1|", 4) != 0)
        return NULL;
    const char *bar = strchr(payload + 4, '|');
    if (!bar)
        return NULL;
    char *name = sk_strndup(payload + 4, (size_t)(bar - payload - 4));
    const struct hub_client *c = hub_client_by_name(h, name);
    free(name);
    return c && c->client_secret ? c->client_secret : NULL;
}

const struct hub_client *hub_auth_bearer(const struct hub *h, const char *authorization,
                                         bool *expired)
{
    *expired = false;
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return NULL;
    const char *token = authorization + 7;
    const struct hub_client *found = NULL;
    for (size_t i = 0; i < h->n_clients; i++) /* every one compared: no early exit to time */
        if (h->clients[i].token && same_secret(h->clients[i].token, token))
            found = &h->clients[i];
    if (found)
        return found;
    char *payload = hub_token_unseal(h, token, access_bound, (void *)h);
    if (!payload)
        return NULL;
    const char *bar = strchr(payload + 4, '|');
    char *name = sk_strndup(payload + 4, (size_t)(bar - payload - 4));
    int64_t expiry;
    if (sk_parse_int(bar + 1, &expiry) == 0 && sk_now_us() / 1000 < expiry)
        found = hub_client_by_name(h, name);
    else
        *expired = true;
    free(name);
    free(payload);
    return found;
}

/* ---- POST /token ------------------------------------------------------------------ */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* application/x-www-form-urlencoded text (n bytes) decoded; caller frees. NULL if malformed. */
static char *form_decode(const char *s, size_t n)
{
    char *out = sk_malloc(n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            out[k++] = ' ';
        } else if (s[i] == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi | lo) == 0) { /* no NUL inside a value */
                free(out);
                return NULL;
            }
            out[k++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[k++] = s[i];
        }
    }
    out[k] = '\0';
    return out;
}

/* The decoded value of key in the form; NULL if absent; *dup: given more than once. */
static char *form_get(const char *form, const char *key, bool *dup, bool *bad)
{
    char *found = NULL;
    size_t klen = strlen(key);
    for (const char *p = form; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (eq && (size_t)(eq - p) == klen && strncmp(p, key, klen) == 0) {
            char *v = form_decode(eq + 1, len - klen - 1);
            if (!v)
                *bad = true;
            if (found)
                *dup = true;
            free(found);
            found = v;
        }
        p = amp ? amp + 1 : NULL;
    }
    return found;
}

static int token_error(struct sk_buf *out, int status, const char *error, const char *description)
{
    sk_buf_reset(out);
    sk_buf_puts(out, "{\"error\":");
    sk_buf_json_string(out, error);
    sk_buf_puts(out, ",\"error_description\":");
    sk_buf_json_string(out, description);
    sk_buf_putc(out, '}');
    return status;
}

/* "Basic base64(urlencoded id ':' urlencoded secret)" (RFC 6749 §2.3.1); false if malformed. */
static bool basic_credentials(const char *authorization, char **id, char **secret)
{
    const char *b64 = authorization + 6;
    size_t n = strlen(b64);
    if (n == 0 || n > 1024 || n % 4)
        return false;
    unsigned char *raw = sk_malloc(n);
    int len = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)n);
    bool ok = len > 0;
    if (ok) {
        len -= (b64[n - 1] == '=') + (b64[n - 2] == '=');
        char *colon = memchr(raw, ':', (size_t)len);
        ok = colon && !memchr(raw, '\0', (size_t)len);
        if (ok) {
            *id = form_decode((const char *)raw, (size_t)(colon - (char *)raw));
            *secret = form_decode(colon + 1, (size_t)len - (size_t)(colon - (char *)raw) - 1);
            ok = *id && *secret;
        }
    }
    OPENSSL_cleanse(raw, n);
    free(raw);
    return ok;
}

/* The OAuth2 client with these credentials; every client compared (constant time). */
static const struct hub_client *client_of(const struct hub *h, const char *id, const char *secret)
{
    const struct hub_client *found = NULL;
    for (size_t i = 0; i < h->n_clients; i++) {
        const struct hub_client *c = &h->clients[i];
        if (c->client_id && same_secret(c->client_id, id) & same_secret(c->client_secret, secret))
            found = c;
    }
    return found;
}

static void free_secret(char *s)
{
    if (s)
        OPENSSL_cleanse(s, strlen(s));
    free(s);
}

int hub_auth_token(const struct hub *h, const char *authorization, const char *form,
                   struct sk_buf *out, const struct hub_client **client, bool *basic)
{
    *client = NULL;
    *basic = authorization && strncasecmp(authorization, "Basic ", 6) == 0;
    bool dup = false, bad = false;
    char *grant = form_get(form, "grant_type", &dup, &bad);
    char *form_id = form_get(form, "client_id", &dup, &bad);
    char *form_secret = form_get(form, "client_secret", &dup, &bad);
    char *id = NULL, *secret = NULL;
    int status;
    if (dup || bad || !grant) {
        status = token_error(out, 400, "invalid_request",
                             "grant_type is required, and no parameter may be repeated");
    } else if (*basic && (form_id || form_secret)) {
        status = token_error(out, 400, "invalid_request",
                             "client credentials in both the header and the body");
    } else if (*basic ? !basic_credentials(authorization, &id, &secret)
                      : !(id = form_id ? sk_strdup(form_id) : NULL) ||
                            !(secret = form_secret ? sk_strdup(form_secret) : NULL)) {
        status = token_error(out, 401, "invalid_client", "client authentication failed");
    } else if (!(*client = client_of(h, id, secret))) {
        status = token_error(out, 401, "invalid_client", "client authentication failed");
    } else if (strcmp(grant, "client_credentials") != 0) {
        status =
            token_error(out, 400, "unsupported_grant_type", "only client_credentials is supported");
    } else {
        int64_t ttl_ms = h->conf->access_token_ttl_ms;
        char *payload =
            sk_asprintf("at1|%s|%" PRId64, (*client)->name, sk_now_us() / 1000 + ttl_ms);
        char *token = hub_token_seal(h, payload, (*client)->client_secret);
        sk_buf_reset(out);
        sk_buf_puts(out, "{\"access_token\":");
        sk_buf_json_string(out, token);
        sk_buf_printf(out, ",\"token_type\":\"Bearer\",\"expires_in\":%" PRId64 "}", ttl_ms / 1000);
        free(token);
        free(payload);
        status = 200;
    }
    free(grant);
    free(form_id);
    free_secret(form_secret);
    free(id);
    free_secret(secret);
    return status;
}
