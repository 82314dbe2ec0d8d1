/*
 * http_client.h: the one HTTP client of the connectors that talk to outside
 * systems over HTTP(S) (ss12000-source, scim-sink). One libcurl easy handle
 * per client, reused for every request so the connection stays alive.
 *
 * Owns: the handle; TLS and mutual TLS; the timeouts; authentication (none,
 * static bearer, OAuth2 client credentials with a cached token, API-key
 * header); the one Retry-After parser; the response size limit, counted in
 * decompressed bytes. Must never: put a secret (token, client secret, API
 * key) into a log line or an error message (callers print them), follow a
 * redirect (credentials would travel to whatever host it names), turn on
 * CURLOPT_VERBOSE (it prints the Authorization header), use signals (it runs
 * on connector threads), be used by two threads at once (one handle), or
 * decide what a status means for the connector: beyond the one token
 * refresh on a 401, every answer goes back to the caller as it came.
 */
#ifndef SK_HTTP_CLIENT_H
#define SK_HTTP_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "sk_error.h"

/* One response body at most (decompressed): a page or a SCIM ListResponse
 * larger than this is not something a connector should hold in memory. */
#define SK_HTTP_MAX_RESPONSE_DEFAULT (32LL * 1024 * 1024)
/* A Retry-After longer than this is taken as this: a server's "come back in a
 * year" must not park a connector beyond what its operator would notice. */
#define SK_HTTP_RETRY_AFTER_MAX_MS (3600LL * 1000)
/* OAuth2 expires_in is trusted only within these bounds: below, a token would
 * be fetched before nearly every request; above, a revoked token would be
 * used for days (a 401 still refreshes it). */
#define SK_HTTP_TOKEN_TTL_MIN_S 30
#define SK_HTTP_TOKEN_TTL_MAX_S 86400
/* A token is refreshed this long before it expires (a quarter of its life
 * for short-lived ones), so no request goes out with one about to lapse. */
#define SK_HTTP_TOKEN_MARGIN_MS 60000
/* An access token longer than this is refused: it would ride along in every
 * request's headers (servers refuse headers of a few tens of KiB). */
#define SK_HTTP_TOKEN_MAX_LEN (16 * 1024)
/* An entity tag longer than this (with its quotes and W/) is not kept. */
#define SK_HTTP_ETAG_MAX 256

enum sk_http_auth {
    SK_HTTP_AUTH_NONE,
    SK_HTTP_AUTH_BEARER, /* token */
    SK_HTTP_AUTH_OAUTH2, /* token_url, client_id, client_secret, scope */
    SK_HTTP_AUTH_APIKEY, /* header: value */
};

/* What a connector configures. Strings are borrowed: they must outlive the client. */
struct sk_http_client_conf {
    const char *user_agent;
    const char *accept;         /* Accept of every request */
    const char *content_type;   /* Content-Type of request bodies */
    int64_t timeout_ms;         /* one whole request */
    int64_t connect_timeout_ms; /* 0: the smaller of timeout_ms and 10 s */
    int64_t max_response_size;  /* decompressed body bytes; 0: SK_HTTP_MAX_RESPONSE_DEFAULT */
    int64_t max_wait_ms;        /* longest inline wait for the token endpoint's Retry-After */
    const char *ca_file;        /* PEM bundle to verify the server with; NULL: the system's */
    const char *client_cert, *client_key; /* mutual TLS */
    bool insecure_skip_verify;
    enum sk_http_auth auth;
    const char *token;
    const char *token_url, *client_id, *client_secret, *scope;
    const char *header, *value;
};

struct sk_http_resp {
    long status;
    struct sk_buf body;     /* NUL-terminated; body.p is never NULL after a response */
    char content_type[128]; /* "" if none */
    int64_t retry_after_ms; /* Retry-After (sk_http_parse_retry_after), -1 if absent */
    char etag[SK_HTTP_ETAG_MAX]; /* ETag, "" if none or unusable (sk_http_etag_ok) */
};

struct sk_http_client; /* opaque: the handle, the cached OAuth2 token */

/* Checks conf (FATAL if an auth type lacks what it needs) and creates the
 * handle; no network yet. component names the log lines. */
struct sk_http_client *sk_http_client_new(const struct sk_http_client_conf *conf,
                                          const char *component, struct sk_error *err);
void sk_http_client_free(struct sk_http_client *h);

/*
 * One request to url (absolute). body: text sent as conf->content_type, or
 * NULL. With OAuth2, fetches a token first when there is none or it is due,
 * and on a 401 fetches a new one and sends the request once more.
 * Returns 0 when an answer arrived (any status; resp filled, the caller
 * frees it with sk_http_resp_free), -1 with err when none did:
 *   RETRIABLE  connection, timeout, the token endpoint down or throttling
 *              (its Retry-After holds: no token request before it is over,
 *              waits up to conf->max_wait_ms inline);
 *   PERMANENT  the body exceeded max_response_size: asking again gets the
 *              same body, so the request itself has to change;
 *   FATAL      what only a new configuration fixes: TLS files, a malformed
 *              URL, a token endpoint refusing our credentials (4xx) or
 *              answering with an unusable token.
 */
int sk_http_client_request(struct sk_http_client *h, const char *method, const char *url,
                           const char *body, struct sk_http_resp *resp, struct sk_error *err);
/*
 * The same, with an If-Match header (an entity tag from an earlier answer's
 * ETag or a SCIM meta.version; NULL: none). A value sk_http_etag_ok refuses
 * is PERMANENT: it would put bytes of the server's choosing into a header.
 */
int sk_http_client_request_if(struct sk_http_client *h, const char *method, const char *url,
                              const char *body, const char *if_match, struct sk_http_resp *resp,
                              struct sk_error *err);
void sk_http_resp_free(struct sk_http_resp *r);
/* An entity tag fit to be sent back: printable ASCII, under SK_HTTP_ETAG_MAX bytes. */
bool sk_http_etag_ok(const char *v);

/* How long the cached OAuth2 token is still used, in ms (0: none or due). */
int64_t sk_http_client_token_valid_ms(const struct sk_http_client *h);

/*
 * A Retry-After value (RFC 9110 §10.2.3): delay-seconds or an HTTP-date,
 * relative to now_unix_ms. Returns ms to wait, clamped to
 * [0, SK_HTTP_RETRY_AFTER_MAX_MS]; -1 if it is neither form.
 */
int64_t sk_http_parse_retry_after(const char *value, int64_t now_unix_ms);

/* Percent-encodes s for a query string or a form (every byte but the
 * unreserved ones). Caller frees. */
char *sk_http_escape(const char *s);

#endif
