/*
 * tz.c: a time zone read from the tz database's TZif file (RFC 8536):
 * its transitions and offsets (the 64-bit block of version 2+), and the
 * POSIX TZ rule of its footer for instants after the last transition, in
 * the "Mm.w.d[/time]" form every zone with summer time in use now has.
 *
 * Owns: parsing TZif. Must never: touch TZ, the environment or the C
 * library's time zone state (tz.h says why).
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tz.h"
#include "util.h"

#define TZ_DIR "/usr/share/zoneinfo"
#define TZIF_MAX (1 << 20)

/* A POSIX rule "Mm.w.d/time": month, week 1-5 (5: the last), weekday 0 (Sunday)-6, seconds. */
struct tz_date {
    int month, week, wday;
    int32_t secs;
};

struct sk_tz {
    int64_t *times; /* transitions, UTC seconds, ascending */
    int32_t *offs;  /* the offset from each transition on */
    size_t n;
    int32_t first_off; /* before the first transition */
    bool has_rule;     /* the footer's rule, for instants after the last transition */
    int32_t std_off, dst_off;
    bool has_dst;
    struct tz_date start, end;
};

static int64_t be(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | p[i];
    if (bytes == 4)
        return (int32_t)(uint32_t)v;
    return (int64_t)v;
}

/* POSIX offset "[+-]hh[:mm[:ss]]" (west of UTC positive) -> seconds; NULL if none. */
static const char *posix_secs(const char *p, int32_t *out)
{
    int sign = 1;
    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    if (!isdigit((unsigned char)*p))
        return NULL;
    int32_t v = 0;
    for (int part = 0; part < 3; part++) {
        int n = 0;
        if (!isdigit((unsigned char)*p))
            return NULL;
        while (isdigit((unsigned char)*p))
            n = n * 10 + (*p++ - '0');
        v += n * (part == 0 ? 3600 : part == 1 ? 60 : 1);
        if (*p != ':')
            break;
        p++;
    }
    *out = sign * v;
    return p;
}

static const char *posix_name(const char *p)
{
    if (*p == '<') {
        const char *q = strchr(p, '>');
        return q ? q + 1 : NULL;
    }
    const char *q = p;
    while (isalpha((unsigned char)*q))
        q++;
    return q - p >= 3 ? q : NULL;
}

static const char *posix_date(const char *p, struct tz_date *d)
{
    if (*p != 'M' || sscanf(p, "M%d.%d.%d", &d->month, &d->week, &d->wday) != 3)
        return NULL; /* the Jn and n forms are not used by zones with summer time now */
    p = strpbrk(p, "/,");
    d->secs = 7200;
    if (p && *p == '/') {
        p = posix_secs(p + 1, &d->secs);
        if (!p)
            return NULL;
    }
    return p ? p : "";
}

/* The footer "STDoff[DST[off],start,end]"; false if it is not of a form read here. */
static bool parse_rule(struct sk_tz *tz, const char *s)
{
    const char *p = posix_name(s);
    int32_t west;
    if (!p || !(p = posix_secs(p, &west)))
        return false;
    tz->std_off = -west;
    tz->dst_off = tz->std_off + 3600;
    if (!*p)
        return true;
    if (!(p = posix_name(p)))
        return false;
    if (*p && *p != ',') {
        if (!(p = posix_secs(p, &west)))
            return false;
        tz->dst_off = -west;
    }
    if (*p++ != ',' || !(p = posix_date(p, &tz->start)) || *p++ != ',' ||
        !(p = posix_date(p, &tz->end)) || *p)
        return false;
    tz->has_dst = true;
    return true;
}

struct sk_tz *sk_tz_load(const char *name, struct sk_error *err)
{
    if (!name || !*name || name[0] == '/' || strstr(name, "..")) {
        sk_error_set(err, SK_ERR_FATAL, "'%s' is not a time zone name (e.g. Europe/Stockholm)",
                     name ? name : "");
        return NULL;
    }
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", TZ_DIR, name);
    size_t len = 0;
    char *data = sk_read_file(path, &len);
    if (!data || len > TZIF_MAX) {
        free(data);
        sk_error_set(err, SK_ERR_FATAL, "time zone %s: not in the tz database (%s)", name, path);
        return NULL;
    }
    const unsigned char *d = (const unsigned char *)data;
    struct sk_tz *tz = sk_calloc(1, sizeof(*tz));
    if (len < 44 || memcmp(d, "TZif", 4) != 0 || d[4] < '2')
        goto bad;
    /* Skip the version 1 block (32-bit times) to the version 2 header. */
    /* counts: isut 20, isstd 24, leap 28, time 32, type 36, char 40 */
    size_t v1 = (size_t)be(d + 32, 4) * 5 + (size_t)be(d + 36, 4) * 6 + (size_t)be(d + 40, 4) +
                (size_t)be(d + 28, 4) * 8 + (size_t)be(d + 24, 4) + (size_t)be(d + 20, 4);
    size_t h = 44 + v1;
    if (h + 44 > len || memcmp(d + h, "TZif", 4) != 0)
        goto bad;
    size_t isut = (size_t)be(d + h + 20, 4), isstd = (size_t)be(d + h + 24, 4),
           leap = (size_t)be(d + h + 28, 4), timecnt = (size_t)be(d + h + 32, 4),
           typecnt = (size_t)be(d + h + 36, 4), charcnt = (size_t)be(d + h + 40, 4);
    const unsigned char *t = d + h + 44, *idx = t + timecnt * 8, *types = idx + timecnt;
    const unsigned char *end = types + typecnt * 6 + charcnt + leap * 12 + isstd + isut;
    if (typecnt == 0 || typecnt > 256 || timecnt > 100000 || end > d + len)
        goto bad;
    tz->times = sk_malloc((timecnt ? timecnt : 1) * sizeof(*tz->times));
    tz->offs = sk_malloc((timecnt ? timecnt : 1) * sizeof(*tz->offs));
    tz->n = timecnt;
    tz->first_off = (int32_t)be(types, 4);
    for (size_t i = 0; i < timecnt; i++) {
        if (idx[i] >= typecnt)
            goto bad;
        tz->times[i] = be(t + i * 8, 8);
        tz->offs[i] = (int32_t)be(types + idx[i] * 6, 4);
    }
    /* The footer: "\nRULE\n". */
    if (end < d + len && *end == '\n') {
        const char *rule = (const char *)end + 1;
        const char *nl = memchr(rule, '\n', len - (size_t)(end + 1 - d));
        if (nl) {
            char text[128];
            snprintf(text, sizeof(text), "%.*s", (int)(nl - rule), rule);
            tz->has_rule = parse_rule(tz, text);
        }
    }
    free(data);
    return tz;
bad:
    free(data);
    sk_tz_free(tz);
    sk_error_set(err, SK_ERR_FATAL, "time zone %s: %s is not a TZif file of version 2 or later",
                 name, path);
    return NULL;
}

void sk_tz_free(struct sk_tz *tz)
{
    if (!tz)
        return;
    free(tz->times);
    free(tz->offs);
    free(tz);
}

/* UTC seconds of a rule's local time in year y, the offset then being off. */
static int64_t rule_instant(const struct tz_date *r, int year, int32_t off)
{
    struct tm tm = {.tm_year = year - 1900, .tm_mon = r->month - 1, .tm_mday = 1};
    time_t first = timegm(&tm);
    struct tm f;
    gmtime_r(&first, &f);
    int day = 1 + (r->wday - f.tm_wday + 7) % 7 + (r->week - 1) * 7;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    int last = r->month == 2 ? 28 + leap : mdays[r->month - 1];
    while (day > last)
        day -= 7; /* week 5: the last such weekday of the month */
    return (int64_t)first + (int64_t)(day - 1) * 86400 + r->secs - off;
}

int32_t sk_tz_offset_at(const struct sk_tz *tz, int64_t utc_s)
{
    if (tz->n == 0 || utc_s < tz->times[0])
        return tz->n ? tz->first_off : (tz->has_rule ? tz->std_off : tz->first_off);
    if (utc_s >= tz->times[tz->n - 1] && tz->has_rule) {
        if (!tz->has_dst)
            return tz->std_off;
        time_t tt = (time_t)utc_s;
        struct tm tm;
        gmtime_r(&tt, &tm);
        int64_t on = rule_instant(&tz->start, tm.tm_year + 1900, tz->std_off);
        int64_t off = rule_instant(&tz->end, tm.tm_year + 1900, tz->dst_off);
        bool dst = on < off ? (utc_s >= on && utc_s < off) : !(utc_s >= off && utc_s < on);
        return dst ? tz->dst_off : tz->std_off;
    }
    size_t lo = 0, hi = tz->n; /* the last transition <= utc_s */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (tz->times[mid] <= utc_s)
            lo = mid;
        else
            hi = mid;
    }
    return tz->offs[lo];
}

int64_t sk_tz_local_to_utc(const struct sk_tz *tz, int64_t local_s)
{
    /* The offsets in force a day before and a day after: a local time is
     * one of them (both at a fall-back, neither in a spring-forward gap). */
    int32_t a = sk_tz_offset_at(tz, local_s - 86400), b = sk_tz_offset_at(tz, local_s + 86400);
    int32_t hi = a > b ? a : b, lo = a > b ? b : a;
    if (sk_tz_offset_at(tz, local_s - hi) == hi)
        return local_s - hi;
    if (sk_tz_offset_at(tz, local_s - lo) == lo)
        return local_s - lo;
    return local_s - a; /* in the gap: the offset before the change */
}
