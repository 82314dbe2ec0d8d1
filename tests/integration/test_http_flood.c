/*
 * test_http_flood.c: the daemon's HTTP server (admin.listen) under the
 * connection floods found by probing (hostile input #6): 64 connections
 * that trickled a header line every 4 s made /health, /metrics, the API and
 * webhooks time out. Now a slow request head is closed after
 * admin.header_timeout, one address holds at most
 * admin.max_connections_per_client connections, and other clients are
 * answered meanwhile. Loopback only; every loop is bounded.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "sk_test.h"
#include "util.h"

#define SLOW 100 /* slow connections opened from 127.0.0.1 */

static int connect_from(const char *src, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in me = {.sin_family = AF_INET};
    inet_pton(AF_INET, src, &me.sin_addr);
    cr_assert_eq(bind(fd, (struct sockaddr *)&me, sizeof(me)), 0, "bind %s: %s", src,
                 strerror(errno));
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    if (connect(fd, (struct sockaddr *)&to, sizeof(to)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* True if the server closed fd (EOF or reset) within timeout_ms. */
static bool closed_by_server(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) <= 0)
        return false;
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

/* GET path from source address src: the status, 0 if no answer within 3 s. */
static long get_from(const char *src, int port, const char *path)
{
    char *cmd = skt_fmt("curl -s -m 3 --interface %s -o /dev/null -w '%%{http_code}' "
                        "http://127.0.0.1:%d%s",
                        src, port, path);
    char *out = NULL;
    skt_sh(cmd, 10, &out);
    long code = out ? atol(out) : 0;
    free(out);
    free(cmd);
    return code;
}

Test(http_flood, slow_heads_are_closed_and_other_clients_answered, .timeout = 120)
{
    signal(SIGPIPE, SIG_IGN);
    char *dir = skt_tmpdir("http-flood");
    char *data = skt_fmt("%s/data", dir);
    skt_generate(data, 3, 10);
    char *cfg = skt_fmt("%s/skolsync.yaml", dir), *log = skt_fmt("%s/daemon.log", dir);
    char *text = skt_fmt("kafka:\n  brokers: embedded\n"
                         "admin:\n  listen: 127.0.0.1:0\n  header_timeout: 2s\n"
                         "  max_connections_per_client: 16\n"
                         "sources:\n  files:\n    type: jsonl-source\n    path: %s\n",
                         data);
    skt_write(cfg, text);
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", cfg, NULL};
    pid_t pid = skt_spawn(argv, log);
    int port = skt_logged_port(log, 20000);
    cr_assert_gt(port, 0, "no HTTP port logged; see %s", log);
    cr_assert_eq(get_from("127.0.0.1", port, "/health"), 200);

    /* The flood: SLOW connections from 127.0.0.1, each a request head that
     * never ends, one header line a second. */
    int fds[SLOW];
    int open_n = 0;
    for (int i = 0; i < SLOW; i++) {
        fds[i] = connect_from("127.0.0.1", port);
        if (fds[i] >= 0 && send(fds[i], "GET /health HTTP/1.1\r\nHost: x\r\n", 31, 0) > 0)
            open_n++;
    }
    cr_assert_eq(open_n, SLOW, "the connections themselves could be opened");

    /* Another client is answered at once, again and again, during the flood. */
    int64_t start = sk_mono_ms();
    for (int round = 0; round < 3; round++) {
        cr_assert_eq(get_from("127.0.0.2", port, "/health"), 200,
                     "/health from another address during the flood (round %d)", round);
        cr_assert_eq(get_from("127.0.0.2", port, "/metrics"), 200);
        for (int i = 0; i < SLOW; i++)
            if (fds[i] >= 0)
                send(fds[i], "X-Slow: 1\r\n", 11, MSG_NOSIGNAL);
        usleep(500000);
    }

    /* Every slow head is closed by the server within header_timeout (2 s)
     * plus a margin, although it kept sending. */
    int closed = 0;
    for (int i = 0; i < SLOW; i++) {
        if (fds[i] < 0)
            continue;
        int64_t left = start + 6000 - sk_mono_ms();
        bool gone = false;
        while (!gone && left > 0) {
            send(fds[i], "X-Slow: 1\r\n", 11, MSG_NOSIGNAL);
            gone = closed_by_server(fds[i], left > 500 ? 500 : (int)left);
            left = start + 6000 - sk_mono_ms();
        }
        closed += gone;
        close(fds[i]);
    }
    cr_assert_eq(closed, SLOW, "%d of %d slow request heads were closed within 6 s", closed, SLOW);

    /* The flooding address is answered again, and the metrics say what happened. */
    cr_assert_eq(get_from("127.0.0.1", port, "/health"), 200);
    char *cmd = skt_fmt("curl -s -m 5 http://127.0.0.1:%d/metrics", port);
    char *metrics = NULL;
    skt_sh(cmd, 10, &metrics);
    free(cmd);
    const char *line = metrics ? strstr(metrics, "\nskolsync_http_slow_heads_closed_total ") : NULL;
    cr_assert(line, "%s", metrics);
    /* 16 held a slot (the per-client limit) until the deadline closed them;
     * the other 84 were refused at once. */
    cr_assert_eq(atol(line + strlen("\nskolsync_http_slow_heads_closed_total ")), 16, "%s", line);
    free(metrics);
    cr_assert_eq(skt_stop(&pid, 20000), 0, "the daemon stops cleanly after the flood; see %s", log);
    free(text);
    free(cfg);
    free(log);
    free(data);
    free(dir);
}
