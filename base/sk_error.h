/*
 * sk_error.h: the one error object of skolsync.
 *
 * A callee fills it, the caller reads it. The class decides what the caller
 * does next (docs/architecture.md §4.4):
 *   - SK_ERR_RETRIABLE: try the same thing again later (network, target down);
 *   - SK_ERR_PERMANENT: this record is bad; dead-letter it and move on;
 *   - SK_ERR_FATAL:     this connector cannot go on; stop and restart it.
 * Never put a secret's value into msg: callers print it.
 */
#ifndef SK_ERROR_H
#define SK_ERROR_H

#include <stdarg.h>

enum sk_err_class {
    SK_ERR_NONE = 0,
    SK_ERR_RETRIABLE,
    SK_ERR_PERMANENT,
    SK_ERR_FATAL,
};

struct sk_error {
    enum sk_err_class cls;
    char msg[512];
};

/* Fills err (if not NULL) and returns -1, so callers can `return sk_error_set(...)`. */
int sk_error_set(struct sk_error *err, enum sk_err_class cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int sk_error_vset(struct sk_error *err, enum sk_err_class cls, const char *fmt, va_list ap);
void sk_error_clear(struct sk_error *err);
const char *sk_err_class_name(enum sk_err_class cls);

#endif
