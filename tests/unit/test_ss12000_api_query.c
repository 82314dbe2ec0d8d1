/*
 * test_ss12000_api_query.c: the query features of the hub
 * (ss12000-api-sink) beyond paging, opened in-process on 127.0.0.1:0
 * (tests/helpers/skt_hub.h), on a small school: a municipality with two
 * school units, four persons, a duty, two groups, a placement, an activity,
 * a calendar event and an attendance.
 *
 *   filters           every filter of the spec, on every type (the school
 *                     plus programmes, study plans, syllabuses, offerings,
 *                     grades, absences, resources, rooms, attendance events
 *                     and schedules), returns exactly its records, a wrong
 *                     value none; bad values 400; an unknown parameter 400
 *   relationship      persons by relationship.entity.type / organisation /
 *                     dates, as one relationship
 *   token             a filter travels in the page token; a filter beside
 *                     a pageToken is 400
 *   sortkey           orders and pages by the sort value (asc and desc),
 *                     ModifiedDesc, a key the endpoint lacks is 400
 *   lookup            by ids, by civicNos, by other keys; a bare array; an
 *                     empty body matches nothing; a bad body 400
 *   expand            _embedded shapes of persons, groups, activities, …;
 *                     expandReferenceNames adds displayName to references;
 *                     neither shows a type the client may not read
 *   index             a civicNo filter takes its expression index
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "buf.h"
#include "connector.h"
#include "sk_test.h"
#include "skt_hub.h"
#include "util.h"

#define ID(n) "00000000-0000-4000-8000-0000000000" n
#define MUNI ID("01")
#define SCH_A ID("02")
#define SCH_B ID("03")
#define ANNA ID("11")
#define BO ID("12")
#define CILLA ID("13")
#define DAN ID("14")
#define DUTY ID("21")
#define G7A ID("31")
#define G9B ID("32")
#define PLACE ID("41")
#define MATTE ID("51")
#define EVENT ID("61")
#define ATTEND ID("71")
#define META "\"meta\":{\"created\":\"" T1 "\",\"modified\":\"" T1 "\"}"

static void add(const char *entity, const char *json)
{
    skt_recs_add(&skt_hub_batch, entity, NULL, json, NULL);
}

/* The school, applied in one batch (so the default order is this order). */
static void school(void)
{
    skt_hub_open(NULL);
    add("Organisation", "{\"id\":\"" MUNI "\"," META ",\"displayName\":\"Kommunen\","
                        "\"organisationType\":\"Huvudman\",\"organisationCode\":\"HM1\","
                        "\"municipalityCode\":\"0580\"}");
    add("Organisation",
        "{\"id\":\"" SCH_A "\"," META ",\"displayName\":\"Ängsskolan\","
        "\"organisationType\":\"Skolenhet\",\"schoolUnitCode\":\"11111111\","
        "\"schoolTypes\":[\"GR\"],\"municipalityCode\":\"0580\","
        "\"parentOrganisation\":{\"id\":\"" MUNI "\"},\"startDate\":\"2010-08-01\"}");
    add("Organisation", "{\"id\":\"" SCH_B "\"," META ",\"displayName\":\"Berga gymnasium\","
                        "\"organisationType\":\"Skolenhet\",\"schoolUnitCode\":\"22222222\","
                        "\"schoolTypes\":[\"GY\"],\"municipalityCode\":\"0581\","
                        "\"parentOrganisation\":{\"id\":\"" MUNI "\"},\"endDate\":\"2020-06-30\"}");
    add("Person", "{\"id\":\"" ANNA "\"," META ",\"givenName\":\"Åsa\",\"familyName\":\"Berg\","
                  "\"securityMarking\":\"Ingen\",\"civicNo\":{\"value\":\"200001011234\"},"
                  "\"eduPersonPrincipalNames\":[\"asa@skola.se\"],"
                  "\"externalIdentifiers\":[{\"value\":\"a1\",\"context\":\"ctx\"}],"
                  "\"enrolments\":[{\"enroledAt\":{\"id\":\"" SCH_A "\"},\"schoolType\":\"GR\","
                  "\"startDate\":\"2024-08-01\"}],\"responsibles\":[{\"person\":{\"id\":\"" DAN
                  "\"},\"relationType\":\"Vårdnadshavare\"}]}");
    add("Person", "{\"id\":\"" BO "\"," META ",\"givenName\":\"Bo\",\"familyName\":\"Ek\","
                  "\"securityMarking\":\"Ingen\",\"civicNo\":{\"value\":\"199001011234\"},"
                  "\"externalIdentifiers\":[{\"value\":\"b1\",\"context\":\"ctx\"},"
                  "{\"value\":\"a1\",\"context\":\"other\"}],"
                  "\"enrolments\":[{\"enroledAt\":{\"id\":\"" SCH_B "\"},\"schoolType\":\"GY\","
                  "\"startDate\":\"2018-08-01\",\"endDate\":\"2020-06-30\"}]}");
    add("Person", "{\"id\":\"" CILLA "\"," META ",\"givenName\":\"Cecilia\",\"familyName\":"
                  "\"Ahl\",\"securityMarking\":\"Ingen\"}");
    add("Person", "{\"id\":\"" DAN "\"," META ",\"givenName\":\"Dan\",\"familyName\":\"Ström\","
                  "\"securityMarking\":\"Ingen\"}");
    add("Duty", "{\"id\":\"" DUTY "\"," META ",\"person\":{\"id\":\"" CILLA "\"},"
                "\"dutyAt\":{\"id\":\"" SCH_A "\"},\"dutyRole\":\"Lärare\",\"startDate\":"
                "\"2020-01-01\",\"assignmentRole\":[{\"group\":{\"id\":\"" G7A "\"},"
                "\"assignmentRoleType\":\"Mentor\",\"startDate\":\"2024-08-01\"}]}");
    add("Group", "{\"id\":\"" G7A "\"," META ",\"displayName\":\"7A\",\"groupType\":\"Klass\","
                 "\"schoolType\":\"GR\",\"organisation\":{\"id\":\"" SCH_A "\"},\"startDate\":"
                 "\"2024-08-01\",\"groupMemberships\":[{\"person\":{\"id\":\"" ANNA "\"},"
                 "\"startDate\":\"2024-08-01\"}]}");
    add("Group",
        "{\"id\":\"" G9B "\"," META ",\"displayName\":\"9B\",\"groupType\":"
        "\"Undervisning\",\"schoolType\":\"GY\",\"organisation\":{\"id\":\"" SCH_B "\"},"
        "\"endDate\":\"2020-06-30\",\"groupMemberships\":[{\"person\":{\"id\":\"" BO "\"}}]}");
    add("Placement", "{\"id\":\"" PLACE "\"," META ",\"placedAt\":{\"id\":\"" SCH_A "\"},"
                     "\"child\":{\"id\":\"" BO "\"},\"owners\":[{\"id\":\"" DAN "\"}],"
                     "\"schoolType\":\"FS\",\"startDate\":\"2023-01-01\","
                     "\"group\":{\"id\":\"" G7A "\"}}");
    add("Activity", "{\"id\":\"" MATTE "\"," META ",\"displayName\":\"Matte 7A\","
                    "\"calendarEventsRequired\":true,\"startDate\":\"2024-08-01\","
                    "\"groups\":[{\"id\":\"" G7A "\"}],\"teachers\":[{\"duty\":{\"id\":\"" DUTY
                    "\"}}],\"organisation\":{\"id\":\"" SCH_A "\"}}");
    add("CalendarEvent", "{\"id\":\"" EVENT "\"," META ",\"activity\":{\"id\":\"" MATTE "\"},"
                         "\"startTime\":\"2025-08-18T08:00:00+02:00\","
                         "\"endTime\":\"2025-08-18T09:00:00+02:00\"}");
    add("Attendance", "{\"id\":\"" ATTEND "\"," META ",\"calendarEvent\":{\"id\":\"" EVENT "\"},"
                      "\"student\":{\"id\":\"" ANNA "\"},\"isReported\":true}");
    skt_hub_apply();
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The ids of an array of entities, sorted, comma-separated ("" for none); caller frees. */
static char *sorted_ids(const cJSON *data)
{
    int n = cJSON_GetArraySize(data);
    char **ids = sk_calloc((size_t)n + 1, sizeof(*ids));
    for (int i = 0; i < n; i++)
        ids[i] = (char *)skt_hub_str(cJSON_GetArrayItem(data, i), "id", NULL);
    qsort(ids, (size_t)n, sizeof(*ids), cmp_str);
    struct sk_buf b = {0};
    for (int i = 0; i < n; i++)
        sk_buf_printf(&b, "%s%s", i ? "," : "", ids[i]);
    free(ids);
    return b.p ? sk_buf_take(&b) : sk_strdup("");
}

/* The ids a GET answers (one page), as sorted_ids; caller frees. */
static char *ids_of(const char *path)
{
    cJSON *page = skt_hub_get_json(path, LMS, 200);
    char *ids = sorted_ids(skt_hub_data(page));
    cJSON_Delete(page);
    return ids;
}

/* path answers exactly want (ids sorted, comma-separated; "" for none). */
static void expect(const char *path, const char *want)
{
    char *got = ids_of(path);
    cr_assert_str_eq(got, want, "GET %s", path);
    free(got);
}

/* ---- filters ------------------------------------------------------------------------------ */

Test(ss12000_api_query, organisation_filters, .fini = skt_hub_finish, .timeout = 60)
{
    school();
    expect("/organisations?parent=" MUNI, SCH_A "," SCH_B);
    expect("/organisations?parent=" SCH_A, "");
    expect("/organisations?schoolUnitCode=11111111", SCH_A);
    expect("/organisations?schoolUnitCode=11111111,22222222", SCH_A "," SCH_B);
    expect("/organisations?schoolUnitCode=11111111&schoolUnitCode=22222222", SCH_A "," SCH_B);
    expect("/organisations?schoolUnitCode=99", "");
    expect("/organisations?organisationCode=HM1", MUNI);
    expect("/organisations?municipalityCode=0581", SCH_B);
    expect("/organisations?type=Huvudman", MUNI);
    expect("/organisations?type=Skolenhet", SCH_A "," SCH_B);
    expect("/organisations?schoolTypes=GY", SCH_B);
    expect("/organisations?schoolTypes=FS", "");
    /* Dates are inclusive; an absent date always matches. */
    expect("/organisations?endDate.onOrAfter=2021-01-01", MUNI "," SCH_A);
    expect("/organisations?endDate.onOrBefore=2020-06-30", MUNI "," SCH_A "," SCH_B);
    expect("/organisations?startDate.onOrAfter=2010-08-02&type=Skolenhet", SCH_B);
    expect("/organisations?startDate.onOrBefore=2010-08-01&type=Skolenhet", SCH_A "," SCH_B);
    skt_hub_assert_error("/organisations?startDate.onOrAfter=yesterday", LMS, 400,
                         "invalid_parameter");
    /* the shape of a date, but no day: 400 as promised (before, compared as text) */
    skt_hub_assert_error("/organisations?startDate.onOrAfter=2025-13-45", LMS, 400,
                         "invalid_parameter");
    skt_hub_assert_error("/organisations?endDate.onOrBefore=2025-02-29", LMS, 400,
                         "invalid_parameter");
    expect("/organisations?startDate.onOrAfter=2024-02-29&type=Skolenhet", SCH_B);
    skt_hub_assert_error("/organisations?parent=not-a-uuid", LMS, 400, "invalid_parameter");
    skt_hub_assert_error("/organisations?municipalityCode=1&municipalityCode=2", LMS, 400,
                         "invalid_parameter");
    /* Another type's filter is no filter here. */
    skt_hub_assert_error("/organisations?civicNo=1", LMS, 400, "unsupported_parameter");
    skt_hub_assert_error("/organisations?nosuch=1", LMS, 400, "unsupported_parameter");
}

Test(ss12000_api_query, person_filters, .fini = skt_hub_finish, .timeout = 60)
{
    school();
    expect("/persons?civicNo=200001011234", ANNA);
    expect("/persons?civicNo=200001011235", "");
    expect("/persons?eduPersonPrincipalName=asa%40skola.se", ANNA);
    expect("/persons?eduPersonPrincipalName=bo%40skola.se", "");
    /* nameContains: case-insensitive (å too), any name field; several values must all match. */
    expect("/persons?nameContains=%C3%85SA", ANNA);
    expect("/persons?nameContains=e", ANNA "," BO "," CILLA);
    expect("/persons?nameContains=ce&nameContains=AHL", CILLA);
    expect("/persons?nameContains=ce&nameContains=berg", "");
    /* identifier.value and .context match the same identifier. */
    expect("/persons?identifier.value=a1", ANNA "," BO);
    expect("/persons?identifier.value=a1&identifier.context=ctx", ANNA);
    expect("/persons?identifier.value=b1&identifier.context=other", "");
    expect("/persons?identifier.context=other", BO);
}

Test(ss12000_api_query, person_relationships, .fini = skt_hub_finish, .timeout = 60)
{
    school();
    expect("/persons?relationship.entity.type=enrolment", ANNA "," BO);
    expect("/persons?relationship.entity.type=duty", CILLA);
    expect("/persons?relationship.entity.type=placement.child", BO);
    expect("/persons?relationship.entity.type=placement.owner", DAN);
    expect("/persons?relationship.entity.type=responsibleFor.enrolment", DAN);
    expect("/persons?relationship.entity.type=responsibleFor.placement", "");
    expect("/persons?relationship.entity.type=groupMembership", ANNA "," BO);
    expect("/persons?relationship.organisation=" SCH_A, ANNA "," BO "," CILLA "," DAN);
    expect("/persons?relationship.organisation=" SCH_B, BO);
    expect("/persons?relationship.organisation=" SCH_B "&relationship.entity.type=duty", "");
    expect("/persons?relationship.entity.type=enrolment&relationship.organisation=" SCH_A, ANNA);
    /* The dates filter the same relationship: Bo's enrolment ended in 2020. */
    expect("/persons?relationship.entity.type=enrolment&relationship.endDate.onOrAfter=2021-01-01",
           ANNA);
    expect("/persons?relationship.entity.type=enrolment&relationship.startDate.onOrBefore="
           "2019-01-01",
           BO);
    expect("/persons?relationship.entity.type=enrolment&relationship.startDate.onOrAfter="
           "2025-01-01",
           "");
    expect("/persons?relationship.entity.type=enrolment&relationship.endDate.onOrBefore="
           "2020-06-30",
           ANNA "," BO); /* Åsa's has no endDate: always included */
}

Test(ss12000_api_query, other_type_filters, .fini = skt_hub_finish, .timeout = 60)
{
    school();
    expect("/groups?groupType=Klass", G7A);
    expect("/groups?groupType=Klass,Undervisning", G7A "," G9B);
    expect("/groups?groupType=Mentor", "");
    expect("/groups?schoolTypes=GY", G9B);
    expect("/groups?organisation=" SCH_A, G7A);
    expect("/groups?organisation=" MUNI, "");
    expect("/groups?endDate.onOrAfter=2021-01-01", G7A);
    expect("/duties?organisation=" SCH_A, DUTY);
    expect("/duties?organisation=" SCH_B, "");
    expect("/duties?dutyRole=L%C3%A4rare", DUTY);
    expect("/duties?dutyRole=Rektor", "");
    expect("/duties?person=" CILLA, DUTY);
    expect("/duties?person=" ANNA, "");
    expect("/duties?startDate.onOrAfter=2020-01-02", "");
    expect("/placements?organisation=" SCH_A, PLACE);
    expect("/placements?child=" BO, PLACE);
    expect("/placements?child=" DAN, "");
    expect("/placements?owner=" DAN, PLACE);
    expect("/placements?group=" G7A, PLACE);
    expect("/placements?group=" G9B, "");
    expect("/activities?member=" ANNA, MATTE);
    expect("/activities?member=" BO, "");
    expect("/activities?teacher=" DUTY, MATTE);
    expect("/activities?teacher=" CILLA, ""); /* teacher is a duty id */
    expect("/activities?organisation=" SCH_A, MATTE);
    expect("/activities?group=" G7A, MATTE);
    expect("/activities?group=" G9B, "");
    expect("/calendarEvents?activity=" MATTE, EVENT);
    expect("/calendarEvents?student=" ANNA, EVENT);
    expect("/calendarEvents?student=" BO, "");
    expect("/calendarEvents?teacher=" DUTY, EVENT);
    expect("/calendarEvents?group=" G7A, EVENT);
    expect("/calendarEvents?organisation=" MUNI, EVENT); /* and the units under it */
    expect("/calendarEvents?organisation=" SCH_B, "");
    expect("/calendarEvents?startTime.onOrAfter=2025-08-18T06:00:00Z", EVENT);
    expect("/calendarEvents?startTime.onOrAfter=2025-08-18T06:00:01Z", "");
    expect("/calendarEvents?endTime.onOrBefore=2025-08-18T07:00:00Z", EVENT);
    expect("/calendarEvents?endTime.onOrBefore=2025-08-18T06:59:59Z", "");
    expect("/attendances?student=" ANNA, ATTEND);
    expect("/attendances?calendarEvent=" EVENT, ATTEND);
    expect("/attendances?organisation=" MUNI, ATTEND);
    expect("/attendances?organisation=" SCH_B, "");
    /* Parameters of another endpoint stay refused. */
    skt_hub_assert_error("/groups?civicNo=1", LMS, 400, "unsupported_parameter");
    skt_hub_assert_error("/groups?startTime.onOrAfter=" T1, LMS, 400, "unsupported_parameter");
}

/* ---- the page token ---------------------------------------------------------------------- */

Test(ss12000_api_query, filters_travel_in_the_token, .fini = skt_hub_finish, .timeout = 60)
{
    school();
    cJSON *page = skt_hub_get_json("/persons?nameContains=e&limit=2", LMS, 200);
    struct sk_buf all = {0};
    int pages = 0;
    for (;;) {
        const cJSON *p;
        cJSON_ArrayForEach(p, skt_hub_data(page))
        {
            sk_buf_printf(&all, "%s,", skt_hub_str(p, "id", NULL));
        }
        const char *token = skt_hub_token(page);
        cr_assert_lt(++pages, 5);
        if (!token)
            break;
        char *enc = skt_hub_escape(token);
        char *path = skt_fmt("/persons?pageToken=%s", enc);
        /* The filter beside the token: 400. */
        char *with = skt_fmt("/persons?pageToken=%s&civicNo=1", enc);
        skt_hub_assert_error(with, LMS, 400, "invalid_parameter");
        free(with);
        with = skt_fmt("/persons?pageToken=%s&sortkey=ModifiedDesc", enc);
        skt_hub_assert_error(with, LMS, 400, "invalid_parameter");
        free(with);
        cJSON_Delete(page);
        page = skt_hub_get_json(path, LMS, 200);
        free(path);
        free(enc);
    }
    cJSON_Delete(page);
    cr_assert_eq(pages, 2);
    cr_assert_str_eq(all.p, ANNA "," BO "," CILLA ","); /* not Dan: the filter went on */
    sk_buf_free(&all);
}

/* ---- sortkey -------------------------------------------------------------------------------- */

/* Every id of a walk in page order with limit 1. */
static char *walk(const char *first)
{
    cJSON *page = skt_hub_get_json(first, LMS, 200);
    struct sk_buf all = {0};
    for (int pages = 0;; pages++) {
        cr_assert_lt(pages, 10, "paging does not end");
        const cJSON *p;
        cJSON_ArrayForEach(p, skt_hub_data(page))
        {
            sk_buf_printf(&all, "%s%s", all.len ? "," : "", skt_hub_str(p, "id", NULL));
        }
        const char *token = skt_hub_token(page);
        if (!token)
            break;
        char *enc = skt_hub_escape(token);
        char *next = skt_fmt("%.*s?pageToken=%s&limit=1", (int)strcspn(first, "?"), first, enc);
        cJSON_Delete(page);
        page = skt_hub_get_json(next, LMS, 200);
        free(next);
        free(enc);
    }
    cJSON_Delete(page);
    return sk_buf_take(&all);
}

static void expect_walk(const char *first, const char *want)
{
    char *got = walk(first);
    cr_assert_str_eq(got, want, "walking %s", first);
    free(got);
}

Test(ss12000_api_query, sortkey_orders_and_pages, .fini = skt_hub_finish, .timeout = 60)
{
    school();
    /* Family names: Ahl, Berg, Ek, Ström; given: Bo, Cecilia, Dan, Åsa (å after z). */
    expect_walk("/persons?sortkey=FamilyNameAsc&limit=1", CILLA "," ANNA "," BO "," DAN);
    expect_walk("/persons?sortkey=FamilyNameDesc&limit=1", DAN "," BO "," ANNA "," CILLA);
    expect_walk("/persons?sortkey=GivenNameAsc&limit=1", BO "," CILLA "," DAN "," ANNA);
    expect_walk("/persons?sortkey=DisplayNameAsc&limit=1", CILLA "," ANNA "," BO "," DAN);
    /* Persons without a civic number sort first (as ""), then by id. */
    expect_walk("/persons?sortkey=CivicNoAsc&limit=1", CILLA "," DAN "," BO "," ANNA);
    expect_walk("/organisations?sortkey=DisplayNameAsc&limit=1", SCH_B "," MUNI "," SCH_A);
    /* A filter and a sortkey together, carried by the token. */
    expect_walk("/persons?sortkey=FamilyNameDesc&relationship.entity.type=enrolment&limit=1",
                BO "," ANNA);
    /* ModifiedDesc: the last change first. */
    expect_walk("/organisations?sortkey=ModifiedDesc&limit=1", SCH_B "," SCH_A "," MUNI);
    skt_hub_add_person(BO, T1, T2, "Bosse"); /* a change: Bo is now the latest */
    skt_hub_apply();
    expect_walk("/persons?sortkey=ModifiedDesc&limit=1", BO "," DAN "," CILLA "," ANNA);
    expect_walk("/persons?sortkey=GivenNameAsc&limit=1", BO "," CILLA "," DAN "," ANNA);
    expect_walk("/groups?sortkey=StartDateDesc&limit=1", G7A "," G9B);
    /* A sort value of 200 characters of two bytes each: the position kept all of it. Before,
     * it kept 255 bytes, a prefix that sorts below the row itself: the walk served the same
     * row again for ever (Asc) or skipped one (Desc). */
    struct sk_buf name = {0};
    for (int i = 0; i < 150; i++)
        sk_buf_puts(&name, "Ö");
    char *long_a = skt_fmt("%sa", name.p), *long_b = skt_fmt("%sb", name.p);
    skt_hub_add_person(ANNA, T1, T2, long_a);
    skt_hub_add_person(CILLA, T1, T2, long_b);
    skt_hub_apply();
    expect_walk("/persons?sortkey=GivenNameAsc&limit=1", BO "," DAN "," ANNA "," CILLA);
    expect_walk("/persons?sortkey=GivenNameDesc&limit=1", CILLA "," ANNA "," DAN "," BO);
    sk_buf_free(&name);
    free(long_a);
    free(long_b);
    /* A key this endpoint does not list (or not in that direction): 400. */
    skt_hub_assert_error("/persons?sortkey=StartDateAsc", LMS, 400, "invalid_parameter");
    skt_hub_assert_error("/persons?sortkey=DisplayNameDesc", LMS, 400, "invalid_parameter");
    skt_hub_assert_error("/attendances?sortkey=ModifiedDesc", LMS, 400, "unsupported_parameter");
}

/* ---- lookup -------------------------------------------------------------------------------- */

/* POST body to path with LMS's token: the status, the answer parsed into *out (caller deletes). */
static long post(const char *path, const char *body, cJSON **out)
{
    char *text;
    long status = skt_hub_send("POST", path, LMS, body, &text);
    *out = cJSON_Parse(text);
    cr_assert_not_null(*out, "POST %s: not JSON: %s", path, text);
    free(text);
    return status;
}

/* A lookup's ids (a bare array), sorted. */
static void expect_lookup(const char *path, const char *body, const char *want)
{
    cJSON *arr;
    cr_assert_eq(post(path, body, &arr), 200, "POST %s %s", path, body);
    cr_assert(cJSON_IsArray(arr), "a lookup answers a bare array");
    char *got = sorted_ids(arr);
    cr_assert_str_eq(got, want, "POST %s %s", path, body);
    free(got);
    cJSON_Delete(arr);
}

static void expect_post_error(const char *path, const char *body, long want)
{
    cJSON *j;
    cr_assert_eq(post(path, body, &j), want, "POST %s %s", path, body);
    cr_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "code")));
    cJSON_Delete(j);
}

Test(ss12000_api_query, lookup, .fini = skt_hub_finish, .timeout = 60)
{
    school();
    expect_lookup("/persons/lookup", "{\"ids\":[\"" ANNA "\",\"" DAN "\"]}", ANNA "," DAN);
    expect_lookup("/persons/lookup", "{\"civicNos\":[\"199001011234\"]}", BO);
    /* Any key matching is enough. */
    expect_lookup("/persons/lookup", "{\"ids\":[\"" ANNA "\"],\"civicNos\":[\"199001011234\"]}",
                  ANNA "," BO);
    expect_lookup("/persons/lookup", "{\"civicNos\":[\"1\"]}", "");
    expect_lookup("/persons/lookup", "{}", ""); /* nothing asked: nothing, not everything */
    expect_lookup("/organisations/lookup", "{\"schoolUnitCodes\":[\"22222222\"]}", SCH_B);
    expect_lookup("/organisations/lookup", "{\"organisationCodes\":[\"HM1\"]}", MUNI);
    expect_lookup("/placements/lookup", "{\"personIds\":[\"" DAN "\"]}", PLACE);
    expect_lookup("/activities/lookup", "{\"members\":[\"" ANNA "\"]}", MATTE);
    expect_lookup("/activities/lookup", "{\"teachers\":[\"" DUTY "\"]}", MATTE);
    expect_lookup("/calendarEvents/lookup", "{\"activities\":[\"" MATTE "\"]}", EVENT);
    /* keys whose list parameter takes one value are arrays in the lookup (before: 400) */
    expect_lookup("/calendarEvents/lookup", "{\"student\":[\"" BO "\",\"" ANNA "\"]}", EVENT);
    expect_lookup("/attendances/lookup", "{\"calendareEvents\":[\"" EVENT "\"]}", ATTEND);
    expect_lookup("/groups/lookup", "{\"ids\":[\"" G9B "\"]}", G9B);
    /* Options in the query apply to a lookup. */
    cJSON *arr;
    cr_assert_eq(post("/duties/lookup?expand=person", "{\"ids\":[\"" DUTY "\"]}", &arr), 200);
    const cJSON *embedded =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(arr, 0), "_embedded");
    cr_assert_str_eq(skt_hub_str(embedded, "person", "id"), CILLA);
    cJSON_Delete(arr);
    expect_post_error("/persons/lookup", "not json", 400);
    expect_post_error("/persons/lookup", "{\"civicNo\":[\"1\"]}", 400); /* not a lookup key */
    expect_post_error("/persons/lookup", "{\"ids\":\"" ANNA "\"}", 400);
    expect_post_error("/persons/lookup", "{\"ids\":[\"nope\"]}", 400);
    expect_post_error("/persons/lookup?civicNo=1", "{\"ids\":[]}", 400); /* a filter in the query */
    /* A type the client may not read: 403, as a list. */
    cr_assert_eq(skt_hub_request("POST", "/persons/lookup", LIB, NULL), 403);
}

/*
 * As many values as a request may carry (found by fuzz_hub: 2000 nameContains values): the
 * values of one parameter used to be one flat OR/AND chain, deeper than SQLite's limit of 1000,
 * so a lookup of max_limit (1000) ids or a long list query was a 500.
 */
Test(ss12000_api_query, many_values_of_one_parameter, .fini = skt_hub_finish, .timeout = 60)
{
    school();
    struct sk_buf body = {0};
    sk_buf_puts(&body, "{\"ids\":[\"" ANNA "\"");
    for (int i = 1; i < 1000; i++)
        sk_buf_printf(&body, ",\"%08x-0000-4000-8000-000000000000\"", i);
    sk_buf_puts(&body, "]}");
    expect_lookup("/persons/lookup", body.p, ANNA);
    sk_buf_reset(&body);
    sk_buf_puts(&body, "/persons?nameContains=e");
    for (int i = 1; i < 1000; i++)
        sk_buf_puts(&body, i % 500 ? ",E" : "&nameContains=e");
    expect(body.p, ANNA "," BO "," CILLA);
    /* one more is refused: every value costs each row a condition */
    sk_buf_puts(&body, ",E");
    skt_hub_assert_error(body.p, LMS, 400, "invalid_parameter");
    sk_buf_free(&body);
}

/* ---- expand and expandReferenceNames ------------------------------------------------------- */

static const cJSON *at(const cJSON *j, const char *a, const char *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, a);
    return b ? cJSON_GetObjectItemCaseSensitive(v, b) : v;
}

Test(ss12000_api_query, expand, .fini = skt_hub_finish, .timeout = 60)
{
    school();
    cJSON *p = skt_hub_get_json("/persons/" CILLA "?expand=duties", LMS, 200);
    const cJSON *duties = at(p, "_embedded", "duties");
    cr_assert_eq(cJSON_GetArraySize(duties), 1);
    cr_assert_str_eq(skt_hub_str(cJSON_GetArrayItem(duties, 0), "dutyRole", NULL), "Lärare");
    cr_assert_null(at(p, "_embedded", "placements"), "only what was asked for");
    cJSON_Delete(p);
    p = skt_hub_get_json("/persons/" DAN "?expand=responsibleFor,ownedPlacements", LMS, 200);
    const cJSON *rf = cJSON_GetArrayItem(at(p, "_embedded", "responsibleFor"), 0);
    cr_assert_str_eq(skt_hub_str(rf, "person", "id"), ANNA);
    cr_assert_str_eq(skt_hub_str(rf, "relationType", NULL), "Vårdnadshavare");
    cr_assert_str_eq(
        skt_hub_str(cJSON_GetArrayItem(at(p, "_embedded", "ownedPlacements"), 0), "id", NULL),
        PLACE);
    cJSON_Delete(p);
    /* On a list, repeated expand values. */
    p = skt_hub_get_json("/persons?civicNo=200001011234&expand=groupMemberships&expand="
                         "placements",
                         LMS, 200);
    const cJSON *anna = cJSON_GetArrayItem(skt_hub_data(p), 0);
    const cJSON *gm = cJSON_GetArrayItem(at(anna, "_embedded", "groupMemberships"), 0);
    cr_assert_str_eq(skt_hub_str(gm, "group", "id"), G7A);
    cr_assert_null(at(at(gm, "group", NULL), "groupMemberships", NULL), "a GroupFragment");
    cr_assert_str_eq(skt_hub_str(gm, "startDate", NULL), "2024-08-01");
    cr_assert_eq(cJSON_GetArraySize(at(anna, "_embedded", "placements")), 0);
    cJSON_Delete(p);
    p = skt_hub_get_json("/groups/" G7A "?expand=assignmentRoles", LMS, 200);
    const cJSON *ar = cJSON_GetArrayItem(at(p, "_embedded", "assignmentRoles"), 0);
    cr_assert_str_eq(skt_hub_str(ar, "duty", "id"), DUTY);
    cr_assert_str_eq(skt_hub_str(ar, "assignmentRoleType", NULL), "Mentor");
    cJSON_Delete(p);
    p = skt_hub_get_json("/activities/" MATTE "?expand=groups,teachers", LMS, 200);
    cr_assert_str_eq(
        skt_hub_str(cJSON_GetArrayItem(at(p, "_embedded", "groups"), 0), "displayName", NULL),
        "7A");
    cr_assert_str_eq(skt_hub_str(cJSON_GetArrayItem(at(p, "_embedded", "teachers"), 0), "id", NULL),
                     DUTY);
    cJSON_Delete(p);
    p = skt_hub_get_json("/placements/" PLACE "?expand=child&expand=owners", LMS, 200);
    cr_assert_str_eq(skt_hub_str(at(p, "_embedded", "child"), "givenName", NULL), "Bo");
    cr_assert_str_eq(
        skt_hub_str(cJSON_GetArrayItem(at(p, "_embedded", "owners"), 0), "givenName", NULL), "Dan");
    cJSON_Delete(p);
    p = skt_hub_get_json("/calendarEvents/" EVENT "?expand=activity,attendance", LMS, 200);
    cr_assert_str_eq(skt_hub_str(at(p, "_embedded", "activity"), "id", NULL), MATTE);
    cr_assert_str_eq(
        skt_hub_str(cJSON_GetArrayItem(at(p, "_embedded", "attendance"), 0), "id", NULL), ATTEND);
    cJSON_Delete(p);
    /* Embedded documents carry the hub's meta.modified like everything served. */
    p = skt_hub_get_json("/duties/" DUTY "?expand=person", LMS, 200);
    cr_assert_str_neq(skt_hub_str(at(p, "_embedded", "person"), "meta", "modified"), T1);
    cJSON_Delete(p);
    skt_hub_assert_error("/persons?expand=owners", LMS, 400, "invalid_parameter");
    skt_hub_assert_error("/organisations?expand=duties", LMS, 400, "unsupported_parameter");
    skt_hub_assert_error("/attendances/" ATTEND "?expandReferenceNames=true", LMS, 400,
                         "unsupported_parameter"); /* by id takes nothing in the spec */
}

Test(ss12000_api_query, expand_reference_names, .fini = skt_hub_finish, .timeout = 60)
{
    school();
    cJSON *d = skt_hub_get_json("/duties/" DUTY, LMS, 200);
    cr_assert_null(at(d, "dutyAt", "displayName"), "names only when asked");
    cJSON_Delete(d);
    d = skt_hub_get_json("/duties/" DUTY "?expandReferenceNames=true", LMS, 200);
    cr_assert_str_eq(skt_hub_str(d, "dutyAt", "displayName"), "Ängsskolan");
    cr_assert_str_eq(skt_hub_str(d, "person", "displayName"), "Cecilia Ahl");
    const cJSON *role = cJSON_GetArrayItem(at(d, "assignmentRole", NULL), 0);
    cr_assert_str_eq(skt_hub_str(role, "group", "displayName"), "7A");
    cJSON_Delete(d);
    cJSON *page = skt_hub_get_json("/activities?expandReferenceNames=true", LMS, 200);
    const cJSON *a = cJSON_GetArrayItem(skt_hub_data(page), 0);
    cr_assert_str_eq(skt_hub_str(a, "organisation", "displayName"), "Ängsskolan");
    cr_assert_str_eq(skt_hub_str(cJSON_GetArrayItem(at(a, "groups", NULL), 0), "displayName", NULL),
                     "7A");
    /* A duty is named by its person. */
    const cJSON *t = cJSON_GetArrayItem(at(a, "teachers", NULL), 0);
    cr_assert_str_eq(skt_hub_str(t, "duty", "displayName"), "Cecilia Ahl");
    cJSON_Delete(page);
    page = skt_hub_get_json("/persons?civicNo=200001011234&expandReferenceNames=true", LMS, 200);
    const cJSON *anna = cJSON_GetArrayItem(skt_hub_data(page), 0);
    const cJSON *enr = cJSON_GetArrayItem(at(anna, "enrolments", NULL), 0);
    cr_assert_str_eq(skt_hub_str(enr, "enroledAt", "displayName"), "Ängsskolan");
    const cJSON *resp = cJSON_GetArrayItem(at(anna, "responsibles", NULL), 0);
    cr_assert_str_eq(skt_hub_str(resp, "person", "displayName"), "Dan Ström");
    cJSON_Delete(page);
    skt_hub_assert_error("/persons?expandReferenceNames=yes", LMS, 400, "invalid_parameter");
}

/* expand and reference names show nothing of a type the client may not read (lib: groups, orgs). */
Test(ss12000_api_query, expand_respects_the_client_types, .fini = skt_hub_finish, .timeout = 60)
{
    school();
    cJSON *g = skt_hub_get_json("/groups/" G7A "?expandReferenceNames=true&expand=assignmentRoles",
                                LIB, 200);
    cr_assert_str_eq(skt_hub_str(g, "organisation", "displayName"), "Ängsskolan");
    const cJSON *m = cJSON_GetArrayItem(at(g, "groupMemberships", NULL), 0);
    cr_assert_null(at(m, "person", "displayName"), "a person's name to a client without persons");
    cr_assert_eq(cJSON_GetArraySize(at(g, "_embedded", "assignmentRoles")), 0,
                 "duties to a client without duties");
    cJSON_Delete(g);
    /* The same for a client that may read them. */
    g = skt_hub_get_json("/groups/" G7A "?expandReferenceNames=true&expand=assignmentRoles", LMS,
                         200);
    m = cJSON_GetArrayItem(at(g, "groupMemberships", NULL), 0);
    cr_assert_str_eq(skt_hub_str(m, "person", "displayName"), "Åsa Berg");
    cr_assert_eq(cJSON_GetArraySize(at(g, "_embedded", "assignmentRoles")), 1);
    cJSON_Delete(g);
}

/*
 * The planner takes the civicNo index for a list in the hub's shape (its
 * expression index and fixed statistics), instead of walking every person
 * in stamp order: 2 s at 100 000 persons.
 */
Test(ss12000_api_query, civic_number_filter_uses_its_index, .fini = skt_hub_finish, .timeout = 60)
{
    school();
    char *path = skt_fmt("%s/test-sink.db", skt_hub_dir);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK, "%s", path);
    sqlite3_stmt *q;
    cr_assert_eq(
        sqlite3_prepare_v2(db,
                           "EXPLAIN QUERY PLAN SELECT r.id, r.stamp, c.doc FROM hub_rows r "
                           "JOIN \"persons\" c ON c.id = r.id WHERE r.collection = "
                           "'persons' AND r.deleted_us IS NULL AND r.stamp > ?3 AND "
                           "r.stamp < ?4 AND ((json_extract(c.doc,'$.civicNo.value') = "
                           "?10)) AND (r.stamp > ?1 OR (r.stamp = ?1 AND r.id > ?2)) "
                           "ORDER BY r.stamp, r.id LIMIT ?7",
                           -1, &q, NULL),
        SQLITE_OK, "%s", sqlite3_errmsg(db));
    struct sk_buf plan = {0};
    while (sqlite3_step(q) == SQLITE_ROW)
        sk_buf_printf(&plan, "%s\n", (const char *)sqlite3_column_text(q, 3));
    sqlite3_finalize(q);
    sqlite3_close(db);
    cr_assert_not_null(strstr(plan.p, "hub_ix_persons_civicno"), "plan:\n%s", plan.p);
    sk_buf_free(&plan);
    free(path);
}

/* Closes the hub, runs sql on its state database, opens it again. */
static void reopen_after(const char *sql)
{
    skt_sink_drop(&skt_hub);
    char *path = skt_fmt("%s/test-sink.db", skt_hub_dir);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);
    free(path);
    skt_hub_open(NULL);
}

/* The members of arrays (hub_refs) follow every change and deletion, and fill an older state. */
Test(ss12000_api_query, array_members_follow_changes, .fini = skt_hub_finish, .timeout = 60)
{
    school();
    expect("/activities?member=" ANNA, MATTE);
    /* 7A's members: Bo instead of Åsa. */
    add("Group", "{\"id\":\"" G7A "\",\"meta\":{\"created\":\"" T1 "\",\"modified\":\"" T2 "\"},"
                 "\"displayName\":\"7A\",\"groupType\":\"Klass\",\"organisation\":{\"id\":\"" SCH_A
                 "\"},\"groupMemberships\":[{\"person\":{\"id\":\"" BO "\"}}]}");
    skt_hub_apply();
    expect("/activities?member=" ANNA, "");
    expect("/activities?member=" BO, MATTE);
    expect("/calendarEvents?student=" BO, EVENT);
    cJSON *p = skt_hub_get_json("/persons/" BO "?expand=groupMemberships", LMS, 200);
    cr_assert_eq(cJSON_GetArraySize(at(p, "_embedded", "groupMemberships")), 2);
    cJSON_Delete(p);
    skt_recs_add(&skt_hub_batch, "Group", G7A, NULL, NULL); /* a tombstone */
    skt_hub_apply();
    expect("/activities?member=" BO, "");
    p = skt_hub_get_json("/persons/" BO "?expand=groupMemberships", LMS, 200);
    cr_assert_eq(cJSON_GetArraySize(at(p, "_embedded", "groupMemberships")), 1);
    cJSON_Delete(p);
    /* A state from before the side table: filled when the hub opens it. */
    reopen_after("DROP TABLE hub_refs");
    expect("/persons?eduPersonPrincipalName=asa%40skola.se", ANNA);
    expect("/placements?owner=" DAN, PLACE);
    p = skt_hub_get_json("/persons/" DAN "?expand=responsibleFor", LMS, 200);
    cr_assert_eq(cJSON_GetArraySize(at(p, "_embedded", "responsibleFor")), 1);
    cJSON_Delete(p);
    /* A state filled under an older list of arrays: filled again. */
    reopen_after("DELETE FROM hub_refs; UPDATE hub_meta SET value = 1 WHERE key = "
                 "'refs_version'");
    expect("/persons?relationship.organisation=" SCH_A "&relationship.entity.type=enrolment", ANNA);
}

/* The rest of the types: programmes, study plans, syllabuses, offerings, grades, absences, … */
#define PROG_NA ID("81")
#define PROG_NAT ID("82")
#define PLAN ID("83")
#define SYL_MA ID("84")
#define SYL_EN ID("85")
#define OFFER ID("86")
#define GRADE_A ID("87")
#define GRADE_C ID("88")
#define ABSENT ID("89")
#define PROJ ID("91")
#define SAL ID("92")
#define CAME ID("93")
#define SCHEDULE ID("94")

static void more_types(void)
{
    add("Programme", "{\"id\":\"" PROG_NA "\"," META ",\"name\":\"Naturvetenskapsprogrammet\","
                     "\"type\":\"Högskoleförberedande program\",\"schoolType\":\"GY\","
                     "\"code\":\"NA\"}");
    add("Programme", "{\"id\":\"" PROG_NAT "\"," META ",\"name\":\"Inriktning natur\","
                     "\"type\":\"Programinriktning\",\"schoolType\":\"GY\",\"code\":\"NANAT\","
                     "\"parentProgramme\":{\"id\":\"" PROG_NA "\"}}");
    add("StudyPlan", "{\"id\":\"" PLAN "\"," META ",\"student\":{\"id\":\"" ANNA "\"},"
                     "\"startDate\":\"2024-08-01\",\"endDate\":\"2027-06-30\"}");
    add("Syllabus", "{\"id\":\"" SYL_MA "\"," META ",\"schoolType\":\"GY\",\"subjectName\":"
                    "\"Matematik\",\"subjectCode\":\"MAT\",\"courseName\":\"Matematik 1c\","
                    "\"courseCode\":\"MATMAT01c\",\"official\":true}");
    add("Syllabus", "{\"id\":\"" SYL_EN "\"," META ",\"schoolType\":\"GY\",\"subjectName\":"
                    "\"Engelska\",\"subjectCode\":\"ENG\",\"official\":true}");
    add("SchoolUnitOffering", "{\"id\":\"" OFFER "\",\"offeredAt\":{\"id\":\"" SCH_B "\"},"
                              "\"offeredSyllabuses\":[{\"id\":\"" SYL_MA "\"}]}");
    add("Grade", "{\"id\":\"" GRADE_A "\"," META ",\"student\":{\"id\":\"" ANNA "\"},"
                 "\"organisation\":{\"id\":\"" SCH_A "\"},\"registeredBy\":{\"id\":\"" CILLA "\"},"
                 "\"gradingTeacher\":{\"id\":\"" CILLA "\"},\"registeredDate\":\"2025-06-10\","
                 "\"gradeValue\":\"A\",\"finalGrade\":true,\"syllabus\":{\"id\":\"" SYL_MA "\"}}");
    add("Grade", "{\"id\":\"" GRADE_C "\"," META ",\"student\":{\"id\":\"" BO "\"},"
                 "\"organisation\":{\"id\":\"" SCH_B "\"},\"registeredBy\":{\"id\":\"" DAN "\"},"
                 "\"registeredDate\":\"2019-06-10\",\"gradeValue\":\"C\",\"finalGrade\":true}");
    add("Absence", "{\"id\":\"" ABSENT "\"," META ",\"student\":{\"id\":\"" ANNA "\"},"
                   "\"organisation\":{\"id\":\"" SCH_A "\"},\"registeredBy\":{\"id\":\"" DAN "\"},"
                   "\"type\":\"Anmäld frånvaro\",\"startTime\":\"2025-09-01T08:00:00+02:00\","
                   "\"endTime\":\"2025-09-01T16:00:00+02:00\"}");
    add("Resource", "{\"id\":\"" PROJ "\"," META ",\"displayName\":\"Projektor\","
                    "\"owner\":{\"id\":\"" SCH_A "\"}}");
    add("Room",
        "{\"id\":\"" SAL "\"," META ",\"displayName\":\"Sal 1\",\"owner\":{\"id\":\"" SCH_B "\"}}");
    add("AttendanceEvent", "{\"id\":\"" CAME "\"," META ",\"eventType\":\"In\",\"person\":{\"id\":"
                           "\"" ANNA "\"},\"group\":{\"id\":\"" G7A "\"},\"registeredBy\":{\"id\":"
                           "\"" CILLA "\"},\"time\":\"2025-09-02T08:00:00+02:00\"}");
    add("AttendanceSchedule", "{\"id\":\"" SCHEDULE "\"," META ",\"placement\":{\"id\":\"" PLACE
                              "\"},\"numberOfWeeks\":1,\"startDate\":\"2023-01-01\"}");
    skt_hub_apply();
}

Test(ss12000_api_query, the_other_types_filters, .fini = skt_hub_finish, .timeout = 60)
{
    school();
    more_types();
    expect("/programmes?schoolType=GY", PROG_NA "," PROG_NAT);
    expect("/programmes?schoolType=GR", "");
    expect("/programmes?code=NA", PROG_NA);
    expect("/programmes?parentProgramme=" PROG_NA, PROG_NAT);
    expect("/studyplans?student=" ANNA, PLAN);
    expect("/studyplans?student=" BO, "");
    expect("/studyplans?endDate.onOrBefore=2027-01-01", "");
    expect("/schoolUnitOfferings?organisation=" SCH_B, OFFER);
    expect("/schoolUnitOfferings?organisation=" SCH_A, "");
    expect("/grades?organisation=" SCH_A, GRADE_A);
    expect("/grades?student=" BO, GRADE_C);
    expect("/grades?registeredBy=" CILLA, GRADE_A);
    expect("/grades?gradingTeacher=" CILLA, GRADE_A);
    expect("/grades?gradingTeacher=" DAN, "");
    expect("/grades?registeredDate.onOrAfter=2020-01-01", GRADE_A);
    expect("/grades?registeredDate.onOrBefore=2020-01-01", GRADE_C);
    expect("/absences?student=" ANNA, ABSENT);
    expect("/absences?organisation=" SCH_B, "");
    expect("/absences?registeredBy=" DAN, ABSENT);
    expect("/absences?type=Anm%C3%A4ld%20fr%C3%A5nvaro", ABSENT);
    expect("/absences?type=Beviljad%20ledighet", "");
    expect("/absences?startTime.onOrBefore=2025-09-01T05:59:59Z", "");
    expect("/absences?endTime.onOrAfter=2025-09-01T14:00:00Z", ABSENT);
    expect("/resources?organisation=" SCH_A, PROJ);
    expect("/rooms?organisation=" SCH_A, "");
    expect("/rooms?organisation=" SCH_B, SAL);
    expect("/attendanceEvents?group=" G7A, CAME);
    expect("/attendanceEvents?group=" G9B, "");
    expect("/attendanceEvents?person=" ANNA, CAME);
    expect("/attendanceEvents?person=" BO, "");
    expect("/attendanceSchedule?placement=" PLACE, SCHEDULE);
    expect("/attendanceSchedule?group=" G7A, SCHEDULE); /* the placement's group */
    expect("/attendanceSchedule?group=" G9B, "");
    expect("/attendanceSchedule?startDate.onOrAfter=2023-01-02", "");
    expect_walk("/programmes?sortkey=CodeAsc&limit=1", PROG_NA "," PROG_NAT);
    expect_walk("/programmes?sortkey=NameAsc&limit=1", PROG_NAT "," PROG_NA);
    expect_walk("/syllabuses?sortkey=SubjectNameAsc&limit=1", SYL_EN "," SYL_MA);
    expect_walk("/syllabuses?sortkey=SubjectCodeDesc&limit=1", SYL_MA "," SYL_EN);
    expect_walk("/grades?sortkey=registeredDateAsc&limit=1", GRADE_C "," GRADE_A);
    expect_walk("/absences?sortkey=StartTimeDesc&limit=1", ABSENT);
    expect_lookup("/attendanceEvents/lookup", "{\"person\":[\"" ANNA "\"]}", CAME);
    expect_lookup("/attendanceSchedule/lookup", "{\"placement\":[\"" PLACE "\"]}", SCHEDULE);
    expect_lookup("/absences/lookup", "{\"ids\":[\"" ABSENT "\"]}", ABSENT);
    cJSON *e =
        skt_hub_get_json("/attendanceEvents/" CAME "?expand=person,group,registeredBy", LMS, 200);
    cr_assert_str_eq(skt_hub_str(at(e, "_embedded", "person"), "givenName", NULL), "Åsa");
    cr_assert_str_eq(skt_hub_str(at(e, "_embedded", "registeredBy"), "givenName", NULL), "Cecilia");
    const cJSON *group = at(e, "_embedded", "group");
    cr_assert_str_eq(skt_hub_str(group, "displayName", NULL), "7A");
    cr_assert_null(at(group, "groupMemberships", NULL), "a GroupFragment");
    cJSON_Delete(e);
    e = skt_hub_get_json("/grades/" GRADE_A "?expandReferenceNames=true", LMS, 200);
    cr_assert_str_eq(skt_hub_str(e, "syllabus", "displayName"), "Matematik 1c");
    cJSON_Delete(e);
}
