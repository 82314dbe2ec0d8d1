/*
 * api_client.h: the CLI's client of a running daemon's own HTTP API
 * (`skolsync release`, `dlq` and `lag` with the embedded broker, which
 * lives in the daemon's process): where it listens (admin.listen), the
 * token (admin.token), a timeout, the answer.
 *
 * Owns: the HTTP requests of CLI commands to the daemon.
 * Must never: be used inside the daemon, or log the token.
 */
#ifndef SK_API_CLIENT_H
#define SK_API_CLIENT_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "daemon.h"

struct sk_api {
    char *base; /* "http://127.0.0.1:9720" */
    char *auth; /* "Authorization: Bearer <token>", or NULL without a token */
};

/*
 * Where the daemon of this configuration answers. -1 (said on stderr, after
 * `who`) when admin.listen names no fixed port to reach it at.
 */
int sk_api_open(const struct sk_admin_conf *admin, const char *who, struct sk_api *api);
void sk_api_close(struct sk_api *api);

struct sk_api_answer {
    long status; /* the HTTP status; 0: the daemon could not be reached (said on stderr) */
    char *body;  /* NUL-terminated, never NULL; freed by sk_api_answer_free */
};

/*
 * One request: method to path ("/api/v1/lag"), with body as JSON (or NULL),
 * waiting at most timeout_ms. Returns the answer's status. who NULL: a
 * daemon that cannot be reached is not said on stderr (the caller has
 * another way).
 */
long sk_api_call(const struct sk_api *api, const char *who, const char *method, const char *path,
                 const char *body, int64_t timeout_ms, struct sk_api_answer *out);
/* The answer's body as JSON when the status is 200, else NULL (said on stderr). */
cJSON *sk_api_answer_json(const struct sk_api *api, const char *who, const char *path,
                          const struct sk_api_answer *a);
void sk_api_answer_free(struct sk_api_answer *a);

#endif
