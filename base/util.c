/* util.c: allocation that aborts on OOM, clocks, files, UUIDs, backoff. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static void oom(size_t n)
{
    fprintf(stderr, "skolsync: out of memory allocating %zu bytes\n", n);
    abort();
}

void *sk_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *sk_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *sk_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *sk_strdup(const char *s)
{
    return sk_strndup(s, strlen(s));
}

char *sk_strndup(const char *s, size_t n)
{
    char *p = sk_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *sk_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *p = sk_malloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

int64_t sk_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t sk_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sk_sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

void sk_cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

int sk_thread_start(pthread_t *t, void *(*fn)(void *), void *arg, const char *role,
                    const char *name)
{
    int rc = pthread_create(t, NULL, fn, arg);
    if (rc == 0) {
        char n[16]; /* the kernel's TASK_COMM_LEN */
        snprintf(n, sizeof(n), "%s%s%s", role, name ? ":" : "", name ? name : "");
        pthread_setname_np(*t, n); /* a name only: its failure changes nothing */
    }
    return rc;
}

void sk_eventfd_signal(int fd)
{
    uint64_t one = 1;
    if (fd >= 0 && write(fd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is full, so the reader has been told already */
    }
}

bool sk_bearer_ok(const char *authorization, const char *token)
{
    if (!authorization || !token || !*token || strncasecmp(authorization, "Bearer ", 7) != 0)
        return false;
    const char *got = authorization + 7;
    while (*got == ' ') /* 1*SP before the credentials */
        got++;
    size_t n = strlen(token);
    if (strlen(got) != n)
        return false;
    unsigned char diff = 0; /* constant time */
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(got[i] ^ token[i]);
    return diff == 0;
}

char *sk_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = sk_malloc(cap);
    for (;;) {
        if (n + 1 >= cap) {
            cap *= 2;
            buf = sk_realloc(buf, cap);
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        errno = EIO;
        return NULL;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

void sk_uuid_random(char out[37])
{
    uint8_t b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
        /* getrandom on Linux >= 3.17 does not fail for 16 bytes; fall back anyway */
        for (size_t i = 0; i < sizeof(b); i++)
            b[i] = (uint8_t)(rand() & 0xff);
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

int64_t sk_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms)
{
    if (attempt < 0)
        attempt = 0;
    int64_t hi = base_ms;
    for (int i = 0; i < attempt && hi < cap_ms; i++)
        hi *= 2;
    if (hi > cap_ms)
        hi = cap_ms;
    if (hi <= base_ms)
        return base_ms;
    uint32_t r;
    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
        r = (uint32_t)rand();
    return base_ms + (int64_t)(r % (uint64_t)(hi - base_ms + 1));
}
