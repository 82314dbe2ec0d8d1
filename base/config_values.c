/*
 * config_values.c: the value parsers: integers, booleans, durations, sizes.
 */
#include "config_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "util.h"

const struct sk_duration_unit sk_duration_units[SK_N_DURATION_UNITS] = {
    {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};

/* ---- value parsers ------------------------------------------------------- */

/* Unsigned decimal digits at *p into *n; -1 if none, -2 on overflow. */
static int parse_digits(const char **p, int64_t *n)
{
    const char *s = *p;
    int64_t v = 0;
    if (*s < '0' || *s > '9')
        return -1;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *s - '0', &v))
            return -2;
    }
    *p = s;
    *n = v;
    return 0;
}

int sk_parse_int(const char *text, int64_t *out)
{
    if (!text)
        return -1;
    const char *p = text;
    if (*p == '-' || *p == '+')
        p++;
    if (*p < '0' || *p > '9')
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(text, &end, 10);
    if (*end)
        return -1;
    if (errno == ERANGE)
        return -2;
    *out = (int64_t)v;
    return 0;
}

int sk_parse_bool(const char *text, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", NULL};
    static const char *const no[] = {"false", "no", "off", NULL};
    if (!text)
        return -1;
    for (size_t i = 0; yes[i]; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

int sk_parse_duration_ms(const char *text, int64_t *out)
{
    if (!text || !*text)
        return -1;
    const char *p = text;
    int64_t total = 0, n;
    int rc = parse_digits(&p, &n);
    if (rc)
        return rc;
    if (!*p) { /* a bare number is seconds */
        if (__builtin_mul_overflow(n, 1000, &total))
            return -2;
        *out = total;
        return 0;
    }
    size_t next_unit = 0; /* units go from large to small, each at most once: 1h30m */
    for (;;) {
        size_t u;
        for (u = next_unit; u < SK_N_DURATION_UNITS; u++) {
            size_t ul = strlen(sk_duration_units[u].unit);
            /* "m" must not eat the "m" of "ms" */
            if (strncmp(p, sk_duration_units[u].unit, ul) == 0 &&
                !(ul == 1 && p[0] == 'm' && p[1] == 's'))
                break;
        }
        if (u == SK_N_DURATION_UNITS)
            return -1;
        p += strlen(sk_duration_units[u].unit);
        int64_t part;
        if (__builtin_mul_overflow(n, sk_duration_units[u].ms, &part) ||
            __builtin_add_overflow(total, part, &total))
            return -2;
        next_unit = u + 1;
        if (!*p)
            break;
        rc = parse_digits(&p, &n);
        if (rc)
            return rc;
    }
    *out = total;
    return 0;
}

int sk_parse_size(const char *text, int64_t *out)
{
    static const struct {
        const char *unit;
        int64_t mult;
    } units[] = {
        {"", 1},
        {"b", 1},
        {"kb", 1000},
        {"mb", 1000 * 1000},
        {"gb", 1000 * 1000 * 1000},
        {"tb", 1000LL * 1000 * 1000 * 1000},
        {"kib", 1LL << 10},
        {"mib", 1LL << 20},
        {"gib", 1LL << 30},
        {"tib", 1LL << 40},
    };
    if (!text)
        return -1;
    const char *p = text;
    int64_t n;
    int rc = parse_digits(&p, &n);
    if (rc)
        return rc;
    if (*p == ' ' && p[1])
        p++;
    for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
        if (strcasecmp(p, units[u].unit) == 0) {
            if (__builtin_mul_overflow(n, units[u].mult, out))
                return -2;
            return 0;
        }
    }
    return -1;
}

const char *sk_opt_type_name(enum sk_opt_type type)
{
    switch (type) {
    case SK_OPT_END:
        return "end";
    case SK_OPT_STRING:
        return "string";
    case SK_OPT_SECRET:
        return "secret";
    case SK_OPT_INT:
        return "integer";
    case SK_OPT_BOOL:
        return "boolean";
    case SK_OPT_DURATION:
        return "duration";
    case SK_OPT_SIZE:
        return "size";
    case SK_OPT_LIST:
        return "list";
    case SK_OPT_MAP:
        return "map";
    case SK_OPT_GROUP:
        return "group";
    case SK_OPT_ENUM:
        return "enum";
    case SK_OPT_GROUPS:
        return "groups";
    }
    return "unknown";
}
