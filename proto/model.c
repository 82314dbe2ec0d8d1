/*
 * model.c: the table of SS 12000 entity types, their lookups, and the two
 * value checks every record needs (UUID ids, RFC 3339 timestamps).
 *
 * It owns the names: API path, collection (topic suffix), deletedEntities
 * bucket and protobuf descriptor of each type. It must never know a field of
 * an entity: that is the descriptors' job (proto/ss12000.proto, codec.c).
 */
#include "model.h"

#include <string.h>

#include "ss12000.pb-c.h"

#define ENTITY(var, name_, coll, path_, del, alt, desc_, meta)                                     \
    static const struct sk_entity var = {                                                          \
        .name = name_,                                                                             \
        .collection = coll,                                                                        \
        .path = path_,                                                                             \
        .deleted_key = del,                                                                        \
        .deleted_alt = alt,                                                                        \
        .desc = &desc_,                                                                            \
        .has_meta = meta,                                                                          \
    }

/* Paths and buckets: docs/ss12000-notes.md §2.2; the odd spellings are the spec's (§6.1, §6.7). */
ENTITY(organisation, "Organisation", "organisations", "/organisations", "organisations", NULL,
       ss12000__v2__organisation__descriptor, true);
ENTITY(programme, "Programme", "programmes", "/programmes", "programmes", NULL,
       ss12000__v2__programme__descriptor, true);
ENTITY(syllabus, "Syllabus", "syllabuses", "/syllabuses", "syllabuses", NULL,
       ss12000__v2__syllabus__descriptor, true);
/* No id/meta in the spec (docs/ss12000-notes.md §6.4); servers add them, and we key by id. */
ENTITY(school_unit_offering, "SchoolUnitOffering", "schoolUnitOfferings", "/schoolUnitOfferings",
       "schoolUnitOfferings", NULL, ss12000__v2__school_unit_offering__descriptor, false);
ENTITY(person, "Person", "persons", "/persons", "persons", NULL, ss12000__v2__person__descriptor,
       true);
ENTITY(duty, "Duty", "duties", "/duties", "duties", NULL, ss12000__v2__duty__descriptor, true);
ENTITY(group, "Group", "groups", "/groups", "groups", NULL, ss12000__v2__group__descriptor, true);
ENTITY(placement, "Placement", "placements", "/placements", "placements", NULL,
       ss12000__v2__placement__descriptor, true);
/* The spec's bucket is "activitites" (sic); the Skolverket server sends "activities". */
ENTITY(activity, "Activity", "activities", "/activities", "activitites", "activities",
       ss12000__v2__activity__descriptor, true);
ENTITY(calendar_event, "CalendarEvent", "calendarEvents", "/calendarEvents", "calendarEvents", NULL,
       ss12000__v2__calendar_event__descriptor, true);
ENTITY(attendance, "Attendance", "attendances", "/attendances", "attendances", NULL,
       ss12000__v2__attendance__descriptor, true);
ENTITY(attendance_event, "AttendanceEvent", "attendanceEvents", "/attendanceEvents",
       "attendanceEvents", NULL, ss12000__v2__attendance_event__descriptor, true);
/* Singular path, plural bucket (docs/ss12000-notes.md §6.7). */
ENTITY(attendance_schedule, "AttendanceSchedule", "attendanceSchedules", "/attendanceSchedule",
       "attendanceSchedules", NULL, ss12000__v2__attendance_schedule__descriptor, true);
ENTITY(absence, "Absence", "absences", "/absences", "absences", NULL,
       ss12000__v2__absence__descriptor, true);
ENTITY(grade, "Grade", "grades", "/grades", "grades", NULL, ss12000__v2__grade__descriptor, true);
/* Lower-case p in the path, camelCase bucket (docs/ss12000-notes.md §6.7). */
ENTITY(study_plan, "StudyPlan", "studyPlans", "/studyplans", "studyPlans", NULL,
       ss12000__v2__study_plan__descriptor, true);
ENTITY(resource, "Resource", "resources", "/resources", "resources", NULL,
       ss12000__v2__resource__descriptor, true);
ENTITY(room, "Room", "rooms", "/rooms", "rooms", NULL, ss12000__v2__room__descriptor, true);

/* Dependency order (docs/ss12000-notes.md §2.3): referenced types before the types referencing
 * them. */
const struct sk_entity *const sk_entities[] = {
    &organisation,
    &programme,
    &syllabus,
    &school_unit_offering,
    &person,
    &duty,
    &group,
    &placement,
    &activity,
    &calendar_event,
    &attendance,
    &attendance_event,
    &attendance_schedule,
    &absence,
    &grade,
    &study_plan,
    &resource,
    &room,
    NULL,
};

_Static_assert(sizeof(sk_entities) / sizeof(sk_entities[0]) == SK_ENTITY_COUNT + 1,
               "sk_entities must hold SK_ENTITY_COUNT entries plus the NULL end");

/* The three lookups return pointers into the static table: never freed, valid forever. */
const struct sk_entity *sk_entity_by_name(const char *name)
{
    for (const struct sk_entity *const *e = sk_entities; name && *e; e++)
        if (strcmp((*e)->name, name) == 0)
            return *e;
    return NULL;
}

const struct sk_entity *sk_entity_by_collection(const char *collection)
{
    for (const struct sk_entity *const *e = sk_entities; collection && *e; e++)
        if (strcmp((*e)->collection, collection) == 0)
            return *e;
    return NULL;
}

const struct sk_entity *sk_entity_by_deleted_key(const char *key)
{
    for (const struct sk_entity *const *e = sk_entities; key && *e; e++) {
        if (strcmp((*e)->deleted_key, key) == 0)
            return *e;
        if ((*e)->deleted_alt && strcmp((*e)->deleted_alt, key) == 0)
            return *e;
    }
    return NULL;
}

/* Static string from the generated descriptor ("ss12000.v2.Person"); never freed. */
const char *sk_entity_schema(const struct sk_entity *e)
{
    return e->desc->name;
}

/* A hex digit in lower case, '-' for itself, 0 for anything else (NUL too). */
static const char uuid_chars[256] = {
    ['0'] = '0', ['1'] = '1', ['2'] = '2', ['3'] = '3', ['4'] = '4', ['5'] = '5', ['6'] = '6',
    ['7'] = '7', ['8'] = '8', ['9'] = '9', ['a'] = 'a', ['b'] = 'b', ['c'] = 'c', ['d'] = 'd',
    ['e'] = 'e', ['f'] = 'f', ['A'] = 'a', ['B'] = 'b', ['C'] = 'c', ['D'] = 'd', ['E'] = 'e',
    ['F'] = 'f', ['-'] = '-',
};

/* Lower case because RFC 4122 output is lower case and Kafka keys compare bytes
 * (docs/ss12000-notes.md §7). One pass: a source runs this for every record. */
int sk_uuid_normalize(const char *text, char out[37])
{
    if (!text)
        return -1;
    char tmp[37];
    for (int i = 0; i < 36; i++) {
        char c = uuid_chars[(unsigned char)text[i]]; /* 0 also at the NUL of a short string */
        bool dash_here = i == 8 || i == 13 || i == 18 || i == 23;
        if (!c || (c == '-') != dash_here)
            return -1;
        tmp[i] = c;
    }
    if (text[36] != '\0')
        return -1;
    tmp[36] = '\0';
    memcpy(out, tmp, sizeof(tmp));
    return 0;
}

/* Reads exactly n digits; -1 if one is not a digit. */
static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/*
 * RFC 3339 §5.6 date-time: full-date "T" full-time, time-offset "Z" or ±HH:MM.
 * "t"/"z" and a space separator (§5.6 NOTE) are accepted too. A missing offset is
 * an error: local times cannot be compared as instants (docs/ss12000-notes.md §4, Skolverket).
 * Fractional digits beyond microseconds are truncated. Leap second 60 is accepted.
 */
int sk_time_parse_us(const char *text, int64_t *out_us)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, s;
    if (!text || digits(text, 4, &y) || text[4] != '-' || digits(text + 5, 2, &mo) ||
        text[7] != '-' || digits(text + 8, 2, &d) ||
        (text[10] != 'T' && text[10] != 't' && text[10] != ' ') || digits(text + 11, 2, &h) ||
        text[13] != ':' || digits(text + 14, 2, &mi) || text[16] != ':' || digits(text + 17, 2, &s))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && is_leap(y)) || h > 23 ||
        mi > 59 || s > 60)
        return -1;
    const char *p = text + 19;
    int64_t frac_us = 0;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return -1;
        int n = 0;
        for (; *p >= '0' && *p <= '9'; p++, n++)
            if (n < 6)
                frac_us = frac_us * 10 + (*p - '0');
        for (; n < 6; n++)
            frac_us *= 10;
    }
    int64_t offset_s = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (digits(p + 1, 2, &oh) || p[3] != ':' || digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return -1;
        offset_s = (int64_t)(oh * 3600 + om * 60) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset_s;
    *out_us = secs * 1000000 + frac_us;
    return 0;
}

int sk_entity_index(const struct sk_entity *e)
{
    for (int i = 0; sk_entities[i]; i++)
        if (sk_entities[i] == e)
            return i;
    return -1;
}

/* ---- required fields (docs/ss12000-notes.md §2.3; spec defects of §6.5 left out) ------ */

struct required {
    const char *entity;
    const char *fields[8];
};

static const struct required required_fields[] = {
    {"Organisation", {"displayName", "organisationType"}},
    {"Person", {"givenName", "familyName"}},
    {"Placement", {"placedAt", "child", "schoolType", "startDate"}},
    {"Duty", {"dutyAt", "dutyRole", "startDate"}},
    {"Group", {"displayName", "groupType", "organisation", "startDate"}},
    {"Programme", {"name", "schoolType"}},
    {"StudyPlan", {"student", "startDate"}},
    {"Syllabus", {"subjectName", "schoolType"}},
    {"SchoolUnitOffering", {"offeredAt"}},
    {"Activity", {"displayName", "groups", "organisation"}},
    {"CalendarEvent", {"activity", "startTime", "endTime"}},
    {"Attendance", {"calendarEvent", "student"}},
    {"AttendanceEvent", {"time", "eventType", "person", "group"}},
    {"AttendanceSchedule", {"placement", "startDate"}},
    {"Absence", {"startTime", "endTime", "student", "type"}},
    {"Grade", {"student", "syllabus", "gradeValue", "registeredDate"}},
    {"Resource", {"displayName", "owner"}},
    {"Room", {"displayName", "owner"}},
};

/* The first required field item lacks (absent or null), or NULL. */
const char *sk_entity_missing_required(const struct sk_entity *e, const cJSON *item)
{
    for (size_t i = 0; i < sizeof(required_fields) / sizeof(required_fields[0]); i++) {
        /* the first letter first: this runs for every record a source reads */
        if (required_fields[i].entity[0] != e->name[0] ||
            strcmp(required_fields[i].entity, e->name) != 0)
            continue;
        for (size_t k = 0; k < 8 && required_fields[i].fields[k]; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(item, required_fields[i].fields[k]);
            if (!v || cJSON_IsNull(v))
                return required_fields[i].fields[k];
        }
    }
    return NULL;
}
