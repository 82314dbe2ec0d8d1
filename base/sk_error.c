/* sk_error.c: filling and naming error objects. */
#include "sk_error.h"

#include <stdio.h>

int sk_error_vset(struct sk_error *err, enum sk_err_class cls, const char *fmt, va_list ap)
{
    if (err) {
        err->cls = cls;
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    }
    return -1;
}

int sk_error_set(struct sk_error *err, enum sk_err_class cls, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sk_error_vset(err, cls, fmt, ap);
    va_end(ap);
    return -1;
}

void sk_error_clear(struct sk_error *err)
{
    if (err) {
        err->cls = SK_ERR_NONE;
        err->msg[0] = '\0';
    }
}

const char *sk_err_class_name(enum sk_err_class cls)
{
    switch (cls) {
    case SK_ERR_NONE:
        return "none";
    case SK_ERR_RETRIABLE:
        return "retriable";
    case SK_ERR_PERMANENT:
        return "permanent";
    case SK_ERR_FATAL:
        return "fatal";
    }
    return "unknown";
}
