/*
 * http.h: the daemon's HTTP server (libmicrohttpd) on admin.listen.
 *
 * Owns: listening, body size caps, connection limits and the request-head
 * deadline, routing by method + path. Routes come from the core (health,
 * metrics, API) and from sources (webhooks).
 * Must never: run a handler for a body over the cap (413 first), or listen
 * on a non-loopback address unless the configuration says so.
 */
#ifndef SK_HTTP_H
#define SK_HTTP_H

#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"
#include "connector.h"

struct sk_http;

/*
 * What one client can take of the server. A client that trickles its request
 * head (slowloris) is closed header_timeout after it connected or got its
 * last answer; one address holds at most per_client connections, all clients
 * at most connections, so a flood from one address leaves the others
 * (Prometheus, systemd's health check, the webhook proxy) answered.
 */
struct sk_http_limits {
    int64_t max_body; /* request body cap (413 beyond it) */
    unsigned connections, per_client;
    int64_t header_timeout_ms;
};

/*
 * Parses admin.listen, "host:port": an IPv4 address, [IPv6] or localhost
 * (names are not resolved), port 0 to 65535. NULL with *ss and *len set, or
 * why it is not an address (a constant). The configuration checks with it
 * what sk_http_start will take, so both read the address the same way.
 */
const char *sk_http_listen_parse(const char *listen, struct sockaddr_storage *ss, socklen_t *len);
/*
 * Starts listening on "host:port" ("127.0.0.1:9720", "[::1]:9720"; port 0
 * picks a free one). limits NULL: the admin section's defaults. Returns NULL with err.
 */
struct sk_http *sk_http_start(const char *listen, const struct sk_http_limits *limits,
                              struct sk_error *err);
/*
 * Routes one request and runs its handler, as the server does once a request
 * is in (also the entry of the request fuzzer): resp gets status (404/405
 * without a route), body (malloc'ed, caller frees) and content type.
 */
void sk_http_dispatch(struct sk_http *h, const struct sk_http_request *req,
                      struct sk_http_response *resp);
/* Prometheus text: answers by status code, connections closed for a slow head. */
void sk_http_metrics(struct sk_http *h, struct sk_buf *out);
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
