/*
 * test_scim_map.c: the scim-sink's reading of dates (connectors/scim/scim_map.c):
 * "today" is the school's calendar date (the sink's `timezone`, default
 * Europe/Stockholm), not UTC's, so a duty or enrolment that ended yesterday
 * has ended from local midnight on, not two hours later.
 */
#include <criterion/criterion.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "scim/scim.h"
#include "tz.h"

static struct sk_tz *stockholm(void)
{
    struct sk_error err = {0};
    struct sk_tz *tz = sk_tz_load("Europe/Stockholm", &err);
    cr_assert_not_null(tz, "%s", err.msg);
    return tz;
}

Test(scim_map, today_is_the_local_date)
{
    struct sk_tz *tz = stockholm();
    char day[11];
    scim_today(tz, 1782858600, day); /* 2026-06-30T22:30Z = 00:30 on 1 July, summer time */
    cr_assert_str_eq(day, "2026-07-01");
    scim_today(NULL, 1782858600, day);
    cr_assert_str_eq(day, "2026-06-30", "UTC without a zone");
    scim_today(tz, 1782855000, day); /* 21:30Z = 23:30 local: still 30 June */
    cr_assert_str_eq(day, "2026-06-30");
    scim_today(tz, 1768519800, day); /* 2026-01-15T23:30Z = 00:30 on 16 January, winter */
    cr_assert_str_eq(day, "2026-01-16");
    sk_tz_free(tz);
}

Test(scim_map, a_relation_ended_yesterday_local_time_is_not_current)
{
    struct sk_tz *tz = stockholm();
    cJSON *duty = cJSON_Parse("{\"startDate\":\"2025-08-01\",\"endDate\":\"2026-06-30\"}");
    char day[11];
    scim_today(tz, 1782855000, day); /* 23:30 on the last day */
    cr_assert(scim_relation_current(duty, day));
    scim_today(tz, 1782858600, day); /* 00:30 the day after, 22:30 in UTC */
    cr_assert_not(scim_relation_current(duty, day), "ended at local midnight");
    cJSON_Delete(duty);
    sk_tz_free(tz);
}
