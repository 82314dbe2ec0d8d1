/*
 * test_tz.c: base/tz.c, a zone read from the tz database without TZ: its
 * offsets agree with the C library's (localtime_r under TZ, set in this
 * single-threaded test only) every six hours from 1975 to 2065, which covers
 * the file's transitions and the POSIX rule after them; a local time is
 * turned into the right instant, also in the hour that occurs twice and the
 * hour that does not occur; a name outside the database is refused.
 */
#include <stdlib.h>
#include <time.h>

#include <criterion/criterion.h>

#include "tz.h"

static void agrees_with_libc(const char *zone)
{
    struct sk_error err = {0};
    struct sk_tz *tz = sk_tz_load(zone, &err);
    cr_assert_not_null(tz, "%s: %s", zone, err.msg);
    setenv("TZ", zone, 1);
    tzset();
    for (int64_t t = 157766400; t < 3029529600; t += 6 * 3600) { /* 1975 .. 2066 */
        time_t tt = (time_t)t;
        struct tm tm;
        localtime_r(&tt, &tm);
        cr_assert_eq(sk_tz_offset_at(tz, t), tm.tm_gmtoff, "%s at %lld: %d, libc %ld", zone,
                     (long long)t, sk_tz_offset_at(tz, t), tm.tm_gmtoff);
    }
    sk_tz_free(tz);
}

Test(tz, offsets_agree_with_the_c_library)
{
    agrees_with_libc("Europe/Stockholm");
    agrees_with_libc("America/Sao_Paulo"); /* southern hemisphere, summer time dropped in 2019 */
    agrees_with_libc("Asia/Tokyo");
    agrees_with_libc("UTC");
}

Test(tz, local_times_become_instants)
{
    struct sk_error err = {0};
    struct sk_tz *tz = sk_tz_load("Europe/Stockholm", &err);
    cr_assert_not_null(tz, "%s", err.msg);
    struct {
        int64_t local, utc;
    } cases[] = {
        {1782907200, 1782907200 - 7200}, /* 2026-07-01 12:00 summer */
        {1768478400, 1768478400 - 3600}, /* 2026-01-15 12:00 winter */
        {1792895400, 1792895400 - 7200}, /* 2026-10-25 02:30 twice: the first (summer) */
        {1774751400, 1774751400 - 3600}, /* 2026-03-29 02:30 never: the offset before */
        {2539771200, 2539771200 - 7200}, /* 2050-06-25 12:00: after the file's table */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_assert_eq(sk_tz_local_to_utc(tz, cases[i].local), cases[i].utc, "case %zu: %lld", i,
                     (long long)sk_tz_local_to_utc(tz, cases[i].local));
    sk_tz_free(tz);
}

Test(tz, names_outside_the_database_are_refused)
{
    struct sk_error err = {0};
    cr_assert_null(sk_tz_load("../../etc/passwd", &err));
    cr_assert_null(sk_tz_load("/etc/localtime", &err));
    cr_assert_null(sk_tz_load("Europe/Nowhere", &err));
    cr_assert_null(sk_tz_load("", &err));
}
