/* util.h: small helpers shared by the core and the connectors (time, memory, files). */
#ifndef SK_UTIL_H
#define SK_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>

/* Allocation that aborts on out-of-memory (as Redis' zmalloc): callers never check. */
void *sk_malloc(size_t n);
void *sk_calloc(size_t n, size_t size);
void *sk_realloc(void *p, size_t n);
char *sk_strdup(const char *s);
char *sk_strndup(const char *s, size_t n);
char *sk_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

int64_t sk_now_us(void);  /* wall clock, µs since the epoch */
int64_t sk_mono_ms(void); /* monotonic clock, ms */
void sk_sleep_ms(int64_t ms);
/* A condition variable whose timed waits run on CLOCK_MONOTONIC (a wall-clock step moves no deadline). */
void sk_cond_init_monotonic(pthread_cond_t *cv);
/*
 * pthread_create (default attributes), the new thread named "<role>:<name>",
 * cut to the kernel's 15 bytes (name NULL: the role alone), so that top -H,
 * perf and gdb tell a source's thread from its read-ahead and from the Kafka
 * clients' rdk: threads. Returns pthread_create's result.
 */
int sk_thread_start(pthread_t *t, void *(*fn)(void *), void *arg, const char *role,
                    const char *name);
/* Adds 1 to an eventfd (fd < 0: nothing); a full counter has been told already. */
void sk_eventfd_signal(int fd);

/*
 * An Authorization header that carries "Bearer <token>": the scheme in any
 * case (RFC 7235 §2.1: "bearer" is as good), the token compared in constant
 * time. false without a header, or when token is NULL or "".
 */
bool sk_bearer_ok(const char *authorization, const char *token);

/* Reads a whole file (NUL-terminated, len excludes the NUL). NULL on error (errno set). */
char *sk_read_file(const char *path, size_t *len);

/* A random RFC 4122 version 4 UUID, lowercase, into out[37]. */
void sk_uuid_random(char out[37]);

/* Exponential backoff with full jitter: random in [base, min(cap, base * 2^attempt)]. */
int64_t sk_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms);

#endif
