/*
 * tz.h: one time zone of the system's tz database (/usr/share/zoneinfo),
 * read once into memory, for turning a local wall-clock time without an
 * offset into an instant.
 *
 * Why not mktime under TZ=...: that needs setenv and tzset, which change the
 * whole process's time zone and race with every other thread that reads the
 * environment (libcurl, librdkafka). A loaded sk_tz is immutable: any
 * thread may use it without a lock.
 */
#ifndef SK_TZ_H
#define SK_TZ_H

#include <stdint.h>

#include "sk_error.h"

struct sk_tz;

/*
 * Loads zone name ("Europe/Stockholm") from the tz database (TZif, version
 * 2 or later: its 64-bit data and the POSIX rule for times after its last
 * transition). NULL with err (FATAL) for a name that is not a zone. Caller
 * frees with sk_tz_free.
 */
struct sk_tz *sk_tz_load(const char *name, struct sk_error *err);
void sk_tz_free(struct sk_tz *tz);

/* The zone's offset from UTC at instant utc_s (seconds since the epoch), in seconds. */
int32_t sk_tz_offset_at(const struct sk_tz *tz, int64_t utc_s);

/*
 * Local wall-clock time (seconds since the epoch as if it were UTC) -> UTC
 * seconds. A time that occurs twice (the hour clocks go back) is taken at
 * its first occurrence (summer time); one that does not occur (the hour
 * clocks skip) with the offset before the change.
 */
int64_t sk_tz_local_to_utc(const struct sk_tz *tz, int64_t local_s);

#endif
