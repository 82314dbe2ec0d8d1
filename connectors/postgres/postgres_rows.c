/*
 * postgres_rows.c: one record as the upsert's row (postgres_schema.c,
 * pg_build_table_sql): [id, doc, source, modified, the instants of
 * t->sent_keys..., the references and days of t->typed...,
 * enrolment_school for persons]. Every value the sink
 * sends instead of the server computing it is parsed here, with the same
 * result as the SQL it replaces.
 *
 * Must never: send a value that differs from what the migration 1
 * function it replaces would give (sk_instant, sk_uuid, sk_date,
 * sk_enrolment_school).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "model.h"
#include "postgres_internal.h"
#include "util.h"

/*
 * Appends the instant us as a JSON string PostgreSQL reads as timestamptz
 * whatever the session's settings ("2024-06-20T14:40:03.000000Z"), or null:
 * no meta.modified, or an instant outside the years 1 to 9999 (the
 * generated column of migration 1 had no value for those either).
 */
static void json_instant(struct sk_buf *b, int64_t us)
{
    const int64_t day_us = 86400 * INT64_C(1000000);
    if (us == INT64_MIN) {
        sk_buf_puts(b, "null");
        return;
    }
    int64_t days = us / day_us, rem = us % day_us;
    if (rem < 0) {
        rem += day_us;
        days--;
    }
    /* civil_from_days (H. Hinnant), the inverse of model.c's days_from_civil */
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (m <= 2);
    if (y < 1 || y > 9999) {
        sk_buf_puts(b, "null");
        return;
    }
    int64_t secs = rem / 1000000;
    sk_buf_printf(b,
                  "\"%04" PRId64 "-%02" PRId64 "-%02" PRId64 "T%02" PRId64 ":%02" PRId64
                  ":%02" PRId64 ".%06" PRId64 "Z\"",
                  y, m, d, secs / 3600, secs / 60 % 60, secs % 60, rem % 1000000);
}

static bool digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/*
 * sk_date of migration 1 in C: a "YYYY-MM-DD" that is a real day of a year
 * 0001 to 9999 as y * 10000 + m * 100 + d, else -1 (the function's NULL).
 */
static long pg_day(const cJSON *v)
{
    const char *t = cJSON_IsString(v) ? v->valuestring : NULL;
    if (!t || strlen(t) != 10 || t[4] != '-' || t[7] != '-' || !digits(t, 4) || !digits(t + 5, 2) ||
        !digits(t + 8, 2))
        return -1;
    long y = strtol(t, NULL, 10), m = strtol(t + 5, NULL, 10), d = strtol(t + 8, NULL, 10);
    static const int month_days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y == 0 || m < 1 || m > 12 || d < 1)
        return -1;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > month_days[m - 1] + (m == 2 && leap))
        return -1;
    return y * 10000 + m * 100 + d;
}

/* sk_uuid of migration 1 in C: 8-4-4-4-12 hex digits of either case, lowercased. */
static bool pg_uuid(const cJSON *v, char out[37])
{
    const char *t = cJSON_IsString(v) ? v->valuestring : NULL;
    if (!t || strlen(t) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        char c = t[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (c >= 'A' && c <= 'F') {
            c = (char)(c - 'A' + 'a');
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
        out[i] = c;
    }
    out[36] = '\0';
    return true;
}

/* A day of pg_day as a JSON string PostgreSQL reads as a date whatever its DateStyle, or null. */
static void json_day(struct sk_buf *b, long day)
{
    if (day < 0)
        sk_buf_puts(b, "null");
    else
        sk_buf_printf(b, "\"%04ld-%02ld-%02ld\"", day / 10000, day / 100 % 100, day % 100);
}

/* sk_uuid(ref->>'id') of migration 1 (a REF column) as a JSON string, or null. */
static void json_ref(struct sk_buf *b, const cJSON *ref)
{
    char id[37];
    if (cJSON_IsObject(ref) && pg_uuid(cJSON_GetObjectItemCaseSensitive(ref, "id"), id))
        sk_buf_printf(b, "\"%s\"", id);
    else
        sk_buf_puts(b, "null");
}

/*
 * sk_enrolment_school(doc, today) of migration 1 in C: the school of the
 * first enrolment (an object, cancelled not true) whose startDate and
 * endDate, where they are dates, hold today; its enroledAt.id if that is
 * a UUID. Appends it as a JSON string, or null.
 */
static void json_enrolment_school(struct sk_buf *b, const cJSON *doc, long today)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(doc, "enrolments");
    const cJSON *e;
    if (!cJSON_IsArray(list))
        list = NULL;
    cJSON_ArrayForEach(e, list)
    {
        if (!cJSON_IsObject(e))
            continue;
        /* (e->>'cancelled') IS DISTINCT FROM 'true': true, or the string "true" */
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "cancelled");
        if (cJSON_IsTrue(c) || (cJSON_IsString(c) && strcmp(c->valuestring, "true") == 0))
            continue;
        long start = pg_day(cJSON_GetObjectItemCaseSensitive(e, "startDate"));
        long end = pg_day(cJSON_GetObjectItemCaseSensitive(e, "endDate"));
        if ((start >= 0 && start > today) || (end >= 0 && end < today))
            continue;
        const cJSON *at = cJSON_GetObjectItemCaseSensitive(e, "enroledAt");
        char id[37];
        if (cJSON_IsObject(at) && pg_uuid(cJSON_GetObjectItemCaseSensitive(at, "id"), id))
            sk_buf_printf(b, "\"%s\"", id);
        else
            sk_buf_puts(b, "null");
        return;
    }
    sk_buf_puts(b, "null");
}

void pg_row_json(struct sk_buf *b, const struct pg_table *t, const struct sk_record *r, long today)
{
    sk_buf_puts(b, "[");
    sk_buf_json_string(b, r->key);
    sk_buf_puts(b, ",");
    sk_buf_putn(b, r->json, r->json_len); /* printed exactly, once, by the driver */
    sk_buf_puts(b, ",");
    if (r->topic) {
        char *source = sk_asprintf("%s[%" PRId32 "]@%" PRId64, r->topic, r->partition, r->offset);
        sk_buf_json_string(b, source);
        free(source);
    } else {
        sk_buf_puts(b, "null");
    }
    sk_buf_puts(b, ",");
    json_instant(b, r->modified_us);
    for (size_t i = 0; i < t->n_sent; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->doc, t->sent_keys[i]);
        int64_t us;
        sk_buf_puts(b, ",");
        json_instant(
            b, cJSON_IsString(v) && sk_time_parse_us(v->valuestring, &us) == 0 ? us : INT64_MIN);
    }
    for (size_t i = 0; i < t->n_typed; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->doc, t->typed[i].key);
        sk_buf_puts(b, ",");
        if (t->typed[i].day)
            json_day(b, pg_day(v));
        else
            json_ref(b, v);
    }
    if (t->sends_enrolment) {
        sk_buf_puts(b, ",");
        json_enrolment_school(b, r->doc, today);
    }
    sk_buf_puts(b, "]");
}
