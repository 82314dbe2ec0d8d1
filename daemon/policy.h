/*
 * policy.h: the failure policy every connector has (docs/architecture.md §4.4),
 * configured per connector with the same keys:
 *
 *   on_error: dlq | stop | retry   what a permanent per-record error does:
 *       dlq   - dead-letter the record, count it, move on (default)
 *       stop  - the connector fails (nothing past the record is committed);
 *               the supervisor restarts it with backoff, and it fails again
 *               on the same record until an operator steps in
 *       retry - treat it as retriable (below); once the limits are spent,
 *               as stop
 *   retry_backoff, retry_backoff_max  exponential backoff with full jitter
 *   retry_max_attempts, retry_max_elapsed  limits for retriable errors
 *       (0 = retry for ever); once spent the connector fails and is
 *       restarted by the supervisor
 */
#ifndef SK_POLICY_H
#define SK_POLICY_H

#include <stdint.h>

#include "config.h"

enum sk_on_error { SK_ON_ERROR_DLQ = 0, SK_ON_ERROR_STOP, SK_ON_ERROR_RETRY };

struct sk_failure_policy {
    char *on_error; /* as configured; see sk_policy_on_error() */
    int64_t retry_base_ms, retry_cap_ms;
    int64_t retry_max_attempts;   /* 0: no limit */
    int64_t retry_max_elapsed_ms; /* 0: no limit */
};

/* Option rows for a settings struct whose FIRST member is a struct sk_failure_policy. */
#define SK_FAILURE_POLICY_OPTIONS                                                                  \
    {"on_error",                                                                                   \
     SK_OPT_ENUM,                                                                                  \
     "dlq",                                                                                        \
     false,                                                                                        \
     "a record that cannot be processed: dlq (dead-letter it), stop, or retry",                    \
     offsetof(struct sk_failure_policy, on_error),                                                 \
     .choices = (const char *const[]){"dlq", "stop", "retry", NULL}},                              \
        {"retry_backoff",                                                                          \
         SK_OPT_DURATION,                                                                          \
         "500ms",                                                                                  \
         false,                                                                                    \
         "first wait after a retriable error (doubles, with jitter)",                              \
         offsetof(struct sk_failure_policy, retry_base_ms),                                        \
         .min = 1,                                                                                 \
         .max = 3600000},                                                                          \
        {"retry_backoff_max",                                                                      \
         SK_OPT_DURATION,                                                                          \
         "60s",                                                                                    \
         false,                                                                                    \
         "longest wait between retries",                                                           \
         offsetof(struct sk_failure_policy, retry_cap_ms),                                         \
         .min = 1,                                                                                 \
         .max = 86400000},                                                                         \
        {"retry_max_attempts",                                                                     \
         SK_OPT_INT,                                                                               \
         "0",                                                                                      \
         false,                                                                                    \
         "retries before the connector fails and is restarted (0: no limit)",                      \
         offsetof(struct sk_failure_policy, retry_max_attempts),                                   \
         .min = 0,                                                                                 \
         .max = 1000000},                                                                          \
    {                                                                                              \
        "retry_max_elapsed", SK_OPT_DURATION, "0s", false,                                         \
            "time spent retrying before the connector fails and is restarted (0: no limit)",       \
            offsetof(struct sk_failure_policy, retry_max_elapsed_ms), .min = 0,                    \
                                                                      .max = 30LL * 86400000       \
    }

enum sk_on_error sk_policy_on_error(const struct sk_failure_policy *p);

/* One run of retries of the same work. Zero it (or sk_retry_reset) when the work succeeded. */
struct sk_retry {
    int attempt;
    int64_t first_ms; /* sk_mono_ms() of the first failure, 0 before */
};

/*
 * After a failure: how long to wait (ms) before the next attempt, or -1 if the
 * policy's limits are spent (then the connector fails).
 */
int64_t sk_retry_next(struct sk_retry *r, const struct sk_failure_policy *p);
void sk_retry_reset(struct sk_retry *r);

#endif
