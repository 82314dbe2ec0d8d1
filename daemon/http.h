/*
 * http.h: the daemon's HTTP server (libmicrohttpd) on admin.listen.
 *
 * Owns: listening, body size caps, routing by exact method + path. Routes
 * come from the core (health, metrics, API) and from sources (webhooks).
 * Must never: run a handler for a body over the cap (413 first), or listen
 * on a non-loopback address unless the configuration says so.
 */
#ifndef SK_HTTP_H
#define SK_HTTP_H

#include <stdint.h>

#include "connector.h"

struct sk_http;

/*
 * Starts listening on "host:port" ("127.0.0.1:9720", "[::1]:9720"; port 0
 * picks a free one). max_body caps request bodies. Returns NULL with err.
 */
struct sk_http *sk_http_start(const char *listen, int64_t max_body, struct sk_error *err);
/* The bound port (useful with port 0). */
int sk_http_port(const struct sk_http *h);
/*
 * Adds a route (any thread, any time). Exact path, or a prefix when the path
 * ends in a star, as in "/api/v1/connectors/" followed by a star; "*" as method
 * matches any. The first
 * matching route wins.
 */
int sk_http_route(struct sk_http *h, const char *method, const char *path, sk_http_handler fn,
                  void *ctx, struct sk_error *err);
/*
 * The same, on behalf of owner (a source): sk_http_unroute_owner removes
 * every route of that owner at once.
 */
int sk_http_route_owned(struct sk_http *h, const void *owner, const char *method, const char *path,
                        sk_http_handler fn, void *ctx, struct sk_error *err);
/*
 * Removes every route whose ctx is ctx (a connector going away) and returns
 * once no handler of those routes is running any more: after it the caller
 * may free ctx. Never call it from one of the removed routes' own handlers.
 */
void sk_http_unroute(struct sk_http *h, void *ctx);
/* Removes every route of owner, likewise; returns how many there were. */
size_t sk_http_unroute_owner(struct sk_http *h, const void *owner);
void sk_http_stop(struct sk_http *h);

#endif
