/*
 * log.c: the log sink (the one piece of global mutable state; signals are
 * read from a signalfd, so there is no signal flag). Lines go to stderr; under systemd
 * (JOURNAL_STREAM set) each line starts with a <N> priority prefix that journald understands.
 */
#include "log.h"

#include "buf.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

/* atomic: a test raises the level of a running daemon from another thread */
static atomic_int log_level = SK_LOG_INFO;
static bool log_json;
static int log_journal = -1; /* -1: not looked at yet */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_tty = -1;      /* -1: not looked at yet */
static char status_line[512]; /* the live line on a terminal, "" if none */

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const int journal_prio[] = {3, 4, 6, 7};

void sk_log_setup(enum sk_log_level level, bool json)
{
    atomic_store(&log_level, (int)level);
    log_json = json;
}

int sk_log_level_parse(const char *text, enum sk_log_level *out)
{
    for (int i = 0; i <= SK_LOG_DEBUG; i++) {
        if (strcmp(text, level_names[i]) == 0) {
            *out = (enum sk_log_level)i;
            return 0;
        }
    }
    return -1;
}

bool sk_log_enabled(enum sk_log_level level)
{
    return (int)level <= atomic_load(&log_level);
}

/*
 * Text logs: every control character (a newline, a carriage return, a
 * terminal escape) is written as an escape (sk_buf_put_escaped), so text
 * that came from outside (a server's error body, a file name) can neither
 * forge a log line nor drive the operator's terminal.
 */
static void text_escape(FILE *f, const char *s)
{
    struct sk_buf b = {0};
    sk_buf_put_escaped(&b, s);
    if (b.len)
        fwrite(b.p, 1, b.len, f);
    sk_buf_free(&b);
}

static void log_v(enum sk_log_level level, const char *component, const char *fmt, va_list ap)
{
    char msg[2048];
    vsnprintf(msg, sizeof(msg), fmt, ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[80];
    snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

    pthread_mutex_lock(&log_lock);
    if (log_journal < 0)
        log_journal = getenv("JOURNAL_STREAM") != NULL;
    if (status_line[0])
        fputs("\r\033[K", stderr); /* the log line goes above the live line */
    if (log_json) {
        struct sk_buf line = {0};
        sk_buf_printf(&line, "{\"time\":\"%s\",\"level\":\"%s\",\"component\":", when,
                      level_names[level]);
        sk_buf_json_string(&line, component);
        sk_buf_puts(&line, ",\"msg\":");
        sk_buf_json_string(&line, msg);
        sk_buf_puts(&line, "}\n");
        fwrite(line.p, 1, line.len, stderr);
        sk_buf_free(&line);
    } else {
        if (log_journal) /* journald adds its own timestamp */
            fprintf(stderr, "<%d>", journal_prio[level]);
        else
            fprintf(stderr, "%s %-5s ", when, level_names[level]);
        text_escape(stderr, component);
        fputs(": ", stderr);
        text_escape(stderr, msg);
        fputc('\n', stderr);
    }
    if (status_line[0])
        fputs(status_line, stderr);
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
}

void sk_log(enum sk_log_level level, const char *component, const char *fmt, ...)
{
    if (!sk_log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_v(level, component, fmt, ap);
    va_end(ap);
}

static pthread_mutex_t limit_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t suppressed_total;

/* Under limit_lock: true if a line of lim is said now; *before = the lines it left out. */
static bool limit_pass(struct sk_log_limit *lim, int64_t now, int64_t interval_ms,
                       uint64_t *before)
{
    bool say = lim->next_ms == 0 || now >= lim->next_ms;
    *before = lim->suppressed;
    if (say) {
        lim->next_ms = now + interval_ms;
        lim->suppressed = 0;
    } else {
        lim->suppressed++;
        suppressed_total++;
    }
    return say;
}

/* The keyed limiters: few keys are live at a time (a client's facility). */
#define KEYED_SLOTS 64
static struct keyed {
    char key[96];
    int64_t used_ms;
    struct sk_log_limit lim;
} keyed[KEYED_SLOTS];

/* Under limit_lock: key's limiter; the least recently used makes room (its count lost). */
static struct sk_log_limit *keyed_limit(const char *key, int64_t now)
{
    struct keyed *slot = NULL, *oldest = &keyed[0];
    for (size_t i = 0; i < KEYED_SLOTS && !slot; i++) {
        if (strncmp(keyed[i].key, key, sizeof(keyed[i].key) - 1) == 0 && keyed[i].key[0])
            slot = &keyed[i];
        else if (keyed[i].used_ms < oldest->used_ms)
            oldest = &keyed[i];
    }
    if (!slot) {
        slot = oldest;
        memset(slot, 0, sizeof(*slot));
        snprintf(slot->key, sizeof(slot->key), "%s", key);
    }
    slot->used_ms = now;
    return &slot->lim;
}

/* One limited line: lim's, or (lim NULL) key's limiter. */
static void limited_v(struct sk_log_limit *lim, const char *key, int64_t interval_ms,
                      enum sk_log_level level, const char *component, const char *fmt, va_list ap)
{
    int64_t now = sk_mono_ms();
    uint64_t before;
    pthread_mutex_lock(&limit_lock);
    bool say = limit_pass(lim ? lim : keyed_limit(key, now), now, interval_ms, &before);
    pthread_mutex_unlock(&limit_lock);
    if (!say || !sk_log_enabled(level))
        return;
    char msg[1536];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (before)
        sk_log(level, component, "%s (and %llu more like it, not logged)", msg,
               (unsigned long long)before);
    else
        sk_log(level, component, "%s", msg);
}

void sk_log_limited(struct sk_log_limit *lim, int64_t interval_ms, enum sk_log_level level,
                    const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    limited_v(lim, NULL, interval_ms, level, component, fmt, ap);
    va_end(ap);
}

void sk_log_limited_key(const char *key, int64_t interval_ms, enum sk_log_level level,
                        const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    limited_v(NULL, key, interval_ms, level, component, fmt, ap);
    va_end(ap);
}

uint64_t sk_log_suppressed_total(void)
{
    pthread_mutex_lock(&limit_lock);
    uint64_t n = suppressed_total;
    pthread_mutex_unlock(&limit_lock);
    return n;
}

bool sk_log_status_line(const char *line)
{
    pthread_mutex_lock(&log_lock);
    if (log_tty < 0)
        log_tty = isatty(STDERR_FILENO) && !log_json && getenv("JOURNAL_STREAM") == NULL;
    bool tty = log_tty > 0;
    if (tty) {
        snprintf(status_line, sizeof(status_line), "%s", line ? line : "");
        fprintf(stderr, "\r\033[K%s", status_line);
        if (!line)
            status_line[0] = '\0';
        fflush(stderr);
    }
    pthread_mutex_unlock(&log_lock);
    if (!tty && line)
        sk_log(SK_LOG_INFO, "progress", "%s", line);
    return tty;
}
