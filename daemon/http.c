/* http.c: see http.h. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "daemon.h"
#include "log.h"
#include "util.h"

#include <time.h>
#include <unistd.h>

/* A route lives on the heap so that a request can hold it while its handler
 * runs; sk_http_unroute waits for busy to reach 0 before freeing it, so no
 * handler ever runs with (or after) a context its owner freed. */
struct route {
    char *method;
    char *path;
    sk_http_handler fn;
    void *ctx;
    const void *owner; /* who registered it (a source), or NULL for the core */
    unsigned busy;     /* handlers running now, guarded by sk_http.mu */
};

/*
 * One open connection, watched for its request head. MHD 0.9 only has an
 * inactivity timeout, which a client sending a byte every few seconds never
 * meets; the reaper thread shuts down a connection whose head is late, and
 * MHD then closes it as it would any connection the peer dropped. MHD tells
 * us a connection closed before it closes its socket, and the reaper only
 * touches sockets of connections still listed (under watch_mu), so it never
 * shuts down a reused descriptor.
 */
struct conn_watch {
    struct MHD_Connection *c;
    int fd;
    int64_t deadline_ms; /* sk_mono_ms() by which a whole request head must be in */
    bool in_request;     /* head received, request under way: no deadline */
    bool reaped;
};

#define STATUS_MIN 100
#define STATUS_MAX 599

struct sk_http {
    struct MHD_Daemon *mhd;
    int port;
    size_t max_body;
    int64_t header_timeout_ms;
    pthread_mutex_t watch_mu; /* guards watch, n_watch, reaper_stop */
    pthread_cond_t watch_cv;
    struct conn_watch *watch;
    size_t n_watch, cap_watch;
    bool reaper_stop;
    bool reaper_started;
    pthread_t reaper;
    atomic_uint_fast64_t reaped;
    atomic_uint_fast64_t responses[STATUS_MAX - STATUS_MIN + 1];
    pthread_mutex_t mu;
    pthread_cond_t idle; /* a route's busy count fell to 0 */
    struct route **routes;
    size_t n_routes, cap_routes;
};

/* One request's body as it arrives. */
struct upload {
    char *data;
    size_t len;
    bool too_large;
};

/* http.h. The port is digits only: strtol took "" for port 0 and "+80" for 80. */
const char *sk_http_listen_parse(const char *listen, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (!colon || !colon[1])
        return "no port (expected host:port)";
    if (colon == listen)
        return "no host (expected an IPv4 address, [IPv6] or localhost before the port)";
    size_t hl = (size_t)(colon - listen);
    if (hl >= sizeof(host))
        return "the host is too long";
    memcpy(host, listen, hl);
    host[hl] = '\0';
    long port = 0;
    for (const char *p = colon + 1; *p; p++) {
        if (*p < '0' || *p > '9')
            return "the port is not a number (expected 0 to 65535)";
        if ((port = port * 10 + (*p - '0')) > 65535)
            return "port out of range (expected 0 to 65535; 0: any free one)";
    }
    memset(ss, 0, sizeof(*ss));
    static const char bad_host[] =
        "the host is not an IPv4 address, [IPv6] or localhost (names are not resolved)";
    if (host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1)
            return bad_host;
        *len = sizeof(*a6);
        return NULL;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
        return bad_host;
    *len = sizeof(*a4);
    return NULL;
}

/* allow: the Allow header (RFC 9110 §15.5.6: a 405 must have one), or NULL/"". */
static enum MHD_Result respond(struct sk_http *h, struct MHD_Connection *c, int status,
                               const char *body, const char *type, const char *allow)
{
    if (status >= STATUS_MIN && status <= STATUS_MAX)
        atomic_fetch_add(&h->responses[status - STATUS_MIN], 1);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", type ? type : "application/json");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    if (status == 405 && allow && *allow)
        MHD_add_response_header(r, "Allow", allow);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- the request-head deadline ----------------------------------------------- */

static struct conn_watch *watch_find(struct sk_http *h, const struct MHD_Connection *c)
{
    for (size_t i = 0; i < h->n_watch; i++)
        if (h->watch[i].c == c)
            return &h->watch[i];
    return NULL;
}

/* A request head arrived (in_request), or an answer went out: the next head is due. */
static void watch_mark(struct sk_http *h, struct MHD_Connection *c, bool in_request)
{
    pthread_mutex_lock(&h->watch_mu);
    struct conn_watch *w = watch_find(h, c);
    if (w) {
        w->in_request = in_request;
        w->deadline_ms = sk_mono_ms() + h->header_timeout_ms;
    }
    pthread_mutex_unlock(&h->watch_mu);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct sk_http *h = cls;
    pthread_mutex_lock(&h->watch_mu);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (h->n_watch == h->cap_watch) {
            h->cap_watch = h->cap_watch ? h->cap_watch * 2 : 64;
            h->watch = sk_realloc(h->watch, h->cap_watch * sizeof(*h->watch));
        }
        h->watch[h->n_watch++] = (struct conn_watch){
            .c = c,
            .fd = info ? info->connect_fd : -1,
            .deadline_ms = sk_mono_ms() + h->header_timeout_ms,
        };
    } else {
        struct conn_watch *w = watch_find(h, c);
        if (w)
            *w = h->watch[--h->n_watch];
    }
    pthread_mutex_unlock(&h->watch_mu);
}

static void *reaper_thread(void *arg)
{
    struct sk_http *h = arg;
    pthread_mutex_lock(&h->watch_mu);
    while (!h->reaper_stop) {
        int64_t now = sk_mono_ms();
        for (size_t i = 0; i < h->n_watch; i++) {
            struct conn_watch *w = &h->watch[i];
            if (w->in_request || w->reaped || w->fd < 0 || now < w->deadline_ms)
                continue;
            shutdown(w->fd, SHUT_RDWR);
            w->reaped = true;
            atomic_fetch_add(&h->reaped, 1);
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 250 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&h->watch_cv, &h->watch_mu, &ts);
    }
    pthread_mutex_unlock(&h->watch_mu);
    return NULL;
}

/* Adds method to the list in allow ("GET, POST") unless it is there. */
static void allow_add(char *allow, size_t size, const char *method)
{
    size_t n = strlen(method);
    for (const char *p = allow; *p; p += strspn(p, ", ")) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, method, n) == 0)
            return;
        p += len;
    }
    size_t used = strlen(allow);
    snprintf(allow + used, size - used, "%s%s", used ? ", " : "", method);
}

/* The first route matching method and path, held (busy) until route_release.
 * Without one, *path_known tells whether another method would do, and allow
 * (size bytes) lists those methods. */
static struct route *find_route(struct sk_http *h, const char *method, const char *path,
                                bool *path_known, char *allow, size_t size)
{
    struct route *found = NULL;
    *path_known = false;
    allow[0] = '\0';
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->n_routes && !found; i++) {
        struct route *r = h->routes[i];
        size_t len = strlen(r->path);
        bool match = len && r->path[len - 1] == '*' ? strncmp(r->path, path, len - 1) == 0
                                                    : strcmp(r->path, path) == 0;
        if (!match)
            continue;
        *path_known = true;
        if (strcmp(r->method, "*") == 0 || strcmp(r->method, method) == 0) {
            r->busy++;
            found = r;
        } else {
            allow_add(allow, size, r->method);
        }
    }
    pthread_mutex_unlock(&h->mu);
    return found;
}

static void route_release(struct sk_http *h, struct route *r)
{
    pthread_mutex_lock(&h->mu);
    if (--r->busy == 0)
        pthread_cond_broadcast(&h->idle);
    pthread_mutex_unlock(&h->mu);
}

static void route_free(struct route *r)
{
    free(r->method);
    free(r->path);
    free(r);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    struct sk_http *h = cls;
    struct upload *up = *con_cls;
    if (!up) {
        up = sk_calloc(1, sizeof(*up));
        *con_cls = up;
        watch_mark(h, c, true);
        return MHD_YES; /* headers only so far */
    }
    if (*upload_size) {
        if (!up->too_large && up->len + *upload_size <= h->max_body) {
            up->data = sk_realloc(up->data, up->len + *upload_size + 1);
            memcpy(up->data + up->len, upload_data, *upload_size);
            up->len += *upload_size;
        } else {
            up->too_large = true; /* keep reading, never buffer it */
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (up->too_large)
        return respond(h, c, 413, "{\"error\":\"request body too large\"}\n", NULL, NULL);

    struct sk_http_request req = {
        .method = method,
        .path = url,
        .body = up->data ? up->data : "",
        .body_len = up->len,
        .content_type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type"),
        .authorization = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization"),
    };
    if (up->data)
        up->data[up->len] = '\0';
    struct sk_http_response resp = {0};
    sk_http_dispatch(h, &req, &resp);
    enum MHD_Result ret =
        respond(h, c, resp.status, resp.body ? resp.body : "", resp.content_type, resp.allow);
    free(resp.body);
    return ret;
}

void sk_http_dispatch(struct sk_http *h, const struct sk_http_request *req,
                      struct sk_http_response *resp)
{
    bool path_known;
    struct route *route =
        find_route(h, req->method, req->path, &path_known, resp->allow, sizeof(resp->allow));
    if (!route) {
        resp->status = path_known ? 405 : 404;
        resp->body = sk_strdup(path_known ? "{\"error\":\"method not allowed\"}\n"
                                          : "{\"error\":\"not found\"}\n");
        return;
    }
    resp->status = 200;
    resp->allow[0] = '\0'; /* the other routes' methods: only a 405 says them */
    route->fn(route->ctx, req, resp);
    route_release(h, route);
    if (!resp->status)
        resp->status = 200;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    watch_mark(cls, c, false);
    struct upload *up = *con_cls;
    if (up) {
        free(up->data);
        free(up);
        *con_cls = NULL;
    }
}

/* libmicrohttpd's own messages go to our log, not bare to stderr. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    sk_warn("http", "%s", msg);
}

/*
 * The listening socket, bound here rather than by libmicrohttpd, so that a
 * port in use is reported with the address and the reason (libmicrohttpd
 * said "Failed to bind to port 0"). -1 with err.
 */
static int listen_on(const char *where, const struct sockaddr_storage *ss, socklen_t slen,
                     struct sk_error *err)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0 && ss->ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        bind(fd, (const struct sockaddr *)ss, slen) || listen(fd, 128)) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return sk_error_set(err, SK_ERR_FATAL, "cannot listen on %s (admin.listen): %s%s", where,
                            strerror(e),
                            e == EADDRINUSE ? " (another process, perhaps a second skolsync, "
                                              "holds it: choose another admin.listen port)"
                                            : "");
    }
    return fd;
}

struct sk_http *sk_http_start(const char *listen, const struct sk_http_limits *limits,
                              struct sk_error *err)
{
    struct sockaddr_storage ss;
    socklen_t slen = 0;
    const char *why = sk_http_listen_parse(listen, &ss, &slen);
    if (why)
        return sk_error_set(err, SK_ERR_FATAL, "admin.listen \"%s\": %s", listen, why), NULL;
    int fd = listen_on(listen, &ss, slen, err);
    if (fd < 0)
        return NULL;
    struct sk_http_limits lim;
    if (limits)
        lim = *limits;
    else
        sk_admin_limits(NULL, &lim); /* admin.*'s defaults, from their option table */
    struct sk_http *h = sk_calloc(1, sizeof(*h));
    h->max_body = (size_t)lim.max_body;
    h->header_timeout_ms = lim.header_timeout_ms;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->idle, NULL);
    pthread_mutex_init(&h->watch_mu, NULL);
    sk_cond_init_monotonic(&h->watch_cv);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_AUTO;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* The inactivity timeout bounds a stalled body; the head has its own
     * deadline (the reaper). */
    h->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
        MHD_OPTION_CONNECTION_LIMIT, lim.connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        lim.per_client, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)2, MHD_OPTION_END);
    if (!h->mhd) {
        close(fd);
        sk_error_set(err, SK_ERR_FATAL, "cannot serve on %s (admin.listen)", listen);
        sk_http_stop(h);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : 0;
    if (sk_thread_start(&h->reaper, reaper_thread, h, "http-reaper", NULL)) {
        sk_error_set(err, SK_ERR_FATAL, "cannot start the HTTP server's reaper thread");
        sk_http_stop(h);
        return NULL;
    }
    h->reaper_started = true;
    return h;
}

void sk_http_metrics(struct sk_http *h, struct sk_buf *out)
{
    sk_buf_puts(out, "# HELP skolsync_http_responses_total Answers of the HTTP server by status\n"
                     "# TYPE skolsync_http_responses_total counter\n");
    for (int i = 0; i <= STATUS_MAX - STATUS_MIN; i++) {
        uint64_t n = atomic_load(&h->responses[i]);
        if (n)
            sk_buf_printf(out, "skolsync_http_responses_total{code=\"%d\"} %llu\n", i + STATUS_MIN,
                          (unsigned long long)n);
    }
    sk_buf_printf(out,
                  "# HELP skolsync_http_slow_heads_closed_total Connections closed because their "
                  "request head did not arrive within admin.header_timeout\n"
                  "# TYPE skolsync_http_slow_heads_closed_total counter\n"
                  "skolsync_http_slow_heads_closed_total %llu\n",
                  (unsigned long long)atomic_load(&h->reaped));
}

int sk_http_port(const struct sk_http *h)
{
    return h->port;
}

int sk_http_route(struct sk_http *h, const char *method, const char *path, sk_http_handler fn,
                  void *ctx, struct sk_error *err)
{
    return sk_http_route_owned(h, NULL, method, path, fn, ctx, err);
}

int sk_http_route_owned(struct sk_http *h, const void *owner, const char *method, const char *path,
                        sk_http_handler fn, void *ctx, struct sk_error *err)
{
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->n_routes; i++) {
        if (strcmp(h->routes[i]->path, path) == 0 && strcmp(h->routes[i]->method, method) == 0) {
            pthread_mutex_unlock(&h->mu);
            return sk_error_set(err, SK_ERR_FATAL, "HTTP route %s %s is taken", method, path);
        }
    }
    if (h->n_routes == h->cap_routes) {
        h->cap_routes = h->cap_routes ? h->cap_routes * 2 : 16;
        h->routes = sk_realloc(h->routes, h->cap_routes * sizeof(*h->routes));
    }
    struct route *r = sk_calloc(1, sizeof(*r));
    *r = (struct route){sk_strdup(method), sk_strdup(path), fn, ctx, owner, 0};
    h->routes[h->n_routes++] = r;
    pthread_mutex_unlock(&h->mu);
    return 0;
}

/* Removes the routes that match (ctx or owner, whichever is non-NULL), then
 * waits until none of them has a handler running, and frees them. */
static size_t unroute(struct sk_http *h, const void *ctx, const void *owner)
{
    pthread_mutex_lock(&h->mu);
    struct route **gone = NULL;
    size_t n_gone = 0, j = 0;
    for (size_t i = 0; i < h->n_routes; i++) {
        struct route *r = h->routes[i];
        if ((ctx && r->ctx == ctx) || (owner && r->owner == owner)) {
            gone = sk_realloc(gone, (n_gone + 1) * sizeof(*gone));
            gone[n_gone++] = r;
        } else {
            h->routes[j++] = r;
        }
    }
    h->n_routes = j;
    for (size_t i = 0; i < n_gone; i++) {
        while (gone[i]->busy)
            pthread_cond_wait(&h->idle, &h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    for (size_t i = 0; i < n_gone; i++)
        route_free(gone[i]);
    free(gone);
    return n_gone;
}

void sk_http_unroute(struct sk_http *h, void *ctx)
{
    if (h && ctx)
        unroute(h, ctx, NULL);
}

size_t sk_http_unroute_owner(struct sk_http *h, const void *owner)
{
    return h && owner ? unroute(h, NULL, owner) : 0;
}

void sk_http_stop(struct sk_http *h)
{
    if (!h)
        return;
    if (h->reaper_started) {
        pthread_mutex_lock(&h->watch_mu);
        h->reaper_stop = true;
        pthread_cond_signal(&h->watch_cv);
        pthread_mutex_unlock(&h->watch_mu);
        pthread_join(h->reaper, NULL);
    }
    if (h->mhd)
        MHD_stop_daemon(h->mhd);
    for (size_t i = 0; i < h->n_routes; i++)
        route_free(h->routes[i]);
    free(h->routes);
    free(h->watch);
    pthread_cond_destroy(&h->watch_cv);
    pthread_mutex_destroy(&h->watch_mu);
    pthread_cond_destroy(&h->idle);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
