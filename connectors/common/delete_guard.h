/*
 * delete_guard.h: the delete guard's options and its one decision, for
 * sources that turn absent ids into deletions (jsonl-source in snapshot
 * mode; the ss12000-source has the same limits in its own option table).
 */
#ifndef SK_DELETE_GUARD_H
#define SK_DELETE_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "sk_error.h"

struct sk_guard_conf {
    char *max_fraction; /* "10%" or 0.1 */
    int64_t max_count;
    int64_t min_count;
};

/* The `delete_guard` group's options (max_fraction, max_count, min_count). */
extern const struct sk_option sk_guard_options[];

/* conf->max_fraction ("10%" or "0.1") -> *fraction; -1 with err (FATAL) if it is not in [0, 1]. */
int sk_guard_fraction(const struct sk_guard_conf *conf, double *fraction, struct sk_error *err);

/*
 * Whether `count` deletions of one type with `live` ids live in Kafka must be
 * held: more than max_count, or more than min_count and more than
 * max_fraction of live. Writes the reason into why.
 */
bool sk_guard_holds(const struct sk_guard_conf *conf, double max_fraction, const char *type,
                    size_t count, int64_t live, char *why, size_t why_len);

#endif
