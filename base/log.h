/*
 * log.h: the log sink. Thread-safe; one line per call; every line names its
 * component (a connector name, "kafka", "main").
 *
 * Never log a secret's value or personal data (civic numbers, names of
 * persons with a protected identity): log ids instead.
 */
#ifndef SK_LOG_H
#define SK_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum sk_log_level { SK_LOG_ERROR = 0, SK_LOG_WARN, SK_LOG_INFO, SK_LOG_DEBUG };

/* level from "error|warn|info|debug"; json: one JSON object per line. */
void sk_log_setup(enum sk_log_level level, bool json);
int sk_log_level_parse(const char *text, enum sk_log_level *out);
bool sk_log_enabled(enum sk_log_level level);
void sk_log(enum sk_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * A line that outside input can trigger at will (a refused webhook call, a
 * bad request) is logged at most once per interval_ms per limiter; the next
 * one that is logged says how many were left out, and
 * sk_log_suppressed_total() counts them all (a metric). Zero-initialise the
 * limiter; any thread.
 */
struct sk_log_limit {
    int64_t next_ms; /* sk_mono_ms() before which lines are counted, not logged */
    uint64_t suppressed;
};
void sk_log_limited(struct sk_log_limit *lim, int64_t interval_ms, enum sk_log_level level,
                    const char *component, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/*
 * The same for lines whose caller has no limiter to keep (a library's log
 * callback): one limiter per key (at most 95 bytes are told apart), in a
 * table of the log sink's where the least recently used key makes room.
 */
void sk_log_limited_key(const char *key, int64_t interval_ms, enum sk_log_level level,
                        const char *component, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
uint64_t sk_log_suppressed_total(void);

/*
 * A live status line on a terminal: kept at the bottom of stderr and redrawn
 * after every log line; NULL clears it. Without a terminal (or with JSON
 * logs) it is logged as an ordinary info line instead. Returns true if drawn.
 */
bool sk_log_status_line(const char *line);

#define sk_error_log(comp, ...) sk_log(SK_LOG_ERROR, comp, __VA_ARGS__)
#define sk_warn(comp, ...) sk_log(SK_LOG_WARN, comp, __VA_ARGS__)
#define sk_info(comp, ...) sk_log(SK_LOG_INFO, comp, __VA_ARGS__)
#define sk_debug(comp, ...) sk_log(SK_LOG_DEBUG, comp, __VA_ARGS__)

#endif
