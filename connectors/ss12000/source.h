/*
 * source.h: internals of the ss12000-source connector, shared by its files:
 *   source.c        the connector (poll, open, close, settling batches);
 *                   the sync algorithm's parts are declared in
 *                   source_internal.h (run, list steps, deletedEntities,
 *                   reconciliation and delete guard, cursor, options);
 *   source_http.c   requests through the connectors' HTTP client
 *                   (http_client.h): rate limit, Retry-After, read-ahead;
 *   source_hook.c   webhooks: the callback route, the subscription and its
 *                   renewal, the debounce thread that wakes the source;
 * Nothing here is visible to the core: it sees only ss12000_source_ops.
 */
#ifndef SK_SS12000_SOURCE_H
#define SK_SS12000_SOURCE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "connector.h"
#include "idmap.h"
#include "delete_guard.h"
#include "model.h"
#include "sk_error.h"

/* ---- options ------------------------------------------------------------- */

struct ss_auth_conf {
    char *type; /* none|bearer|oauth2|apikey */
    char *token;
    char *token_url;
    char *client_id;
    char *client_secret;
    char *scope;
    char *header;
    char *value;
};

struct ss_tls_conf {
    char *ca_file;
    char *client_cert;
    char *client_key;
    bool insecure_skip_verify;
};

struct ss_hook_conf {
    char *public_url;
    char *secret;
    char *token; /* bearer the SIS sends with callbacks, verified when set */
    int64_t debounce_ms;
    struct sk_strlist resource_types;
    int64_t renew_before_ms;
};

/* /calendarEvents: the startTime window the source reads (the spec requires one). */
struct ss_window_conf {
    int64_t past_ms;
    int64_t future_ms;
};

struct ss_conf {
    char *url;
    struct ss_auth_conf auth;
    struct ss_tls_conf tls;
    struct sk_strlist entities;
    int64_t page_size;
    int64_t overlap_ms;
    int64_t full_sync_interval_ms;
    struct sk_guard_conf delete_guard; /* connectors/common/delete_guard.h */
    struct ss_hook_conf webhook;
    int64_t request_timeout_ms;
    int64_t max_rps;
    int64_t max_response_size;    /* bytes of one response, decompressed */
    char *deleted_entities_style; /* repeated|comma */
    bool created_query;
    struct ss_window_conf calendar_window;
    char *server_timezone; /* the zone of timestamps the server writes without an offset */
    char *validation;      /* lenient|strict (connector.h, SK_VALIDATION_CHOICES) */
};

/* ---- HTTP ----------------------------------------------------------------- */

struct ss_http;

struct ss_resp {
    long status;
    char *body; /* malloc'ed, NUL-terminated (len excludes it); caller frees */
    size_t len;
    char content_type[128];
    /* cJSON *: the body parsed (on the read-ahead thread, or by
     * ss_parse_page), or NULL; its nodes live in arena (model.h,
     * sk_json_arena_parse) and go with ss_resp_free, never cJSON_Delete. */
    void *json;
    struct sk_json_arena *arena;
    /* body checked by sk_json_text_bad already (on the read-ahead thread,
     * with the parse), and what it found; else ss_page_check checks it */
    bool text_checked, text_bad;
};

/* Creates the client (no network yet). Caller frees with ss_http_free. */
struct ss_http *ss_http_new(const struct ss_conf *conf, const char *component,
                            struct sk_error *err);
void ss_http_free(struct ss_http *h);
/*
 * One request to url (absolute). body: JSON text for POST/PATCH or NULL.
 * Waits for the rate limit and for any Retry-After the server asked for.
 * Returns 0 with out filled for any HTTP answer that is not handled here;
 * -1 with err RETRIABLE for transport errors, timeouts, 502/503/504, 429 (the
 * Retry-After is remembered and honoured by the next request) and 401 after
 * one refresh of an OAuth2 token; PERMANENT for a body over
 * max_response_size; FATAL for a misconfiguration (TLS files, credentials
 * the token endpoint refuses).
 */
int ss_http_request(struct ss_http *h, const char *method, const char *url, const char *body,
                    struct ss_resp *out, struct sk_error *err);
void ss_resp_free(struct ss_resp *r);
/*
 * Read-ahead: starts the GET of url on a thread of its own, so the next page
 * is on its way while the driver stores this one; a 200 answer is parsed
 * there too (resp.json). The next ss_http_request
 * waits for it: the same GET gets its answer (or its error), any other
 * request drops it first, so the handle is never used by two threads. A
 * read-ahead of the same url already under way is kept.
 */
void ss_http_prefetch(struct ss_http *h, const char *url);
void ss_http_prefetch_drop(struct ss_http *h); /* waits for and forgets a read-ahead */

/* ---- webhooks ------------------------------------------------------------- */

struct ss_hook;

/* Registers the callback route and starts the debounce thread. NULL with err. */
struct ss_hook *ss_hook_new(struct sk_source *self, const struct ss_conf *conf,
                            const char *component, const bool enabled[SK_ENTITY_COUNT],
                            struct sk_error *err);
/* Creates or renews the subscription when due (called from poll; logs, never fails). */
void ss_hook_maintain(struct ss_hook *hk, struct ss_http *http, const char *base_url);
/*
 * Takes the types marked dirty by callbacks: sets dirty[i] for entity index i
 * (sk_entities order) and *deletes if a callback asked for deletedEntities.
 * Returns true if there was anything.
 */
bool ss_hook_take_dirty(struct ss_hook *hk, bool dirty[SK_ENTITY_COUNT], bool *deletes);
/*
 * Whether the source was woken for the subscription's renewal alone (no
 * callback waiting); forgets the renewal's wake-up either way. Poll thread.
 */
bool ss_hook_renewal_only(struct ss_hook *hk);
/* Removes the callback route (waiting for a running callback), stops the
 * thread, deletes the subscription (best effort; http NULL: not), frees. */
void ss_hook_free(struct ss_hook *hk, struct ss_http *http, const char *base_url);

#endif
