/*
 * delete_guard.c: the delete guard's options and decision (delete_guard.h).
 */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "delete_guard.h"

const struct sk_option sk_guard_options[] = {
    {.name = "max_fraction",
     .type = SK_OPT_STRING,
     .def = "10%",
     .help =
         "hold the deletions of a run (ss12000-source) or a file (jsonl-source) of a type above "
         "this share of its live ids (\"10%\" or 0.1)",
     .offset = offsetof(struct sk_guard_conf, max_fraction)},
    {.name = "max_count",
     .type = SK_OPT_INT,
     .def = "500",
     .help =
         "hold the deletions of a run (ss12000-source, all types) or a file (jsonl-source) when "
         "they are more than this many",
     .offset = offsetof(struct sk_guard_conf, max_count),
     .min = 0,
     .max = 100000000},
    {.name = "min_count",
     .type = SK_OPT_INT,
     .def = "10",
     .help = "max_fraction applies only to a type with more deletions than this",
     .offset = offsetof(struct sk_guard_conf, min_count),
     .min = 0,
     .max = 100000000},
    {.name = NULL},
};

static int parse_fraction(const char *text, double *out)
{
    if (!text)
        return -1;
    char *end;
    double v = strtod(text, &end);
    if (end == text)
        return -1;
    while (*end == ' ')
        end++;
    if (*end == '%') {
        v /= 100.0;
        end++;
    }
    if (*end || !(v >= 0.0) || v > 1.0 || isnan(v))
        return -1;
    *out = v;
    return 0;
}

int sk_guard_fraction(const struct sk_guard_conf *conf, double *fraction, struct sk_error *err)
{
    if (parse_fraction(conf->max_fraction, fraction) == 0)
        return 0;
    return sk_error_set(err, SK_ERR_FATAL,
                        "delete_guard.max_fraction: '%s' is not a fraction (expected e.g. 10%% or "
                        "0.1)",
                        conf->max_fraction ? conf->max_fraction : "");
}

bool sk_guard_holds(const struct sk_guard_conf *conf, double max_fraction, const char *type,
                    size_t count, int64_t live, char *why, size_t why_len)
{
    if (count == 0)
        return false;
    if ((int64_t)count > conf->max_count) {
        snprintf(why, why_len, "%zu deletions of %s > delete_guard.max_count %" PRId64, count, type,
                 conf->max_count);
        return true;
    }
    if ((int64_t)count > conf->min_count && (double)count > max_fraction * (double)live) {
        snprintf(why, why_len, "%zu of %" PRId64 " live %s > delete_guard.max_fraction %s", count,
                 live, type, conf->max_fraction);
        return true;
    }
    return false;
}
