/*
 * hub_filter.c: the parameters of the hub's lists beyond paging and the meta
 * filters, as the SS 12000 2.1 OpenAPI file defines them per endpoint: the
 * per-type filters, sortkey, expand and expandReferenceNames, and the keys of
 * the lookup bodies (which reuse the filters' conditions).
 *
 * Data, not code: every parameter is a row (type, name, value kind, SQL
 * condition on the stored document); the table in docs/ss12000-api-sink.md
 * lists the same rows. A condition reads the row as c.doc (its document) and
 * r.id, has '?' where the value goes, and names other collections as
 * {collection}: a type the hub does not consume, or the client may not
 * read, reads as an empty table, and any other holds only the records the
 * client may see (its organisations: hub_filter_where's scope); a condition
 * that reads hub_refs for other records than the row's own keeps only those
 * of {collection} (GROUPS_OF). {?name} is
 * 1 when the client may see the type (a collection) or the field (a path
 * of its documents), else 0, and
 * {!alias} is 1 unless alias.doc is a protected person the client's
 * protected_identities hides: a condition reads only what the client is
 * shown, so a filter, a lookup or a sortkey is never an oracle for a field,
 * a type or a person the client is not shown.
 * Conditions that reach other types are uncorrelated IN subqueries, run once
 * per query, never once per row.
 *
 * Owns: which parameter each endpoint takes, checking values, the SQL and
 * its bindings, the canonical text a page token carries. Must never: build
 * SQL from a value (values are always bound), or accept a parameter the
 * spec does not define for the endpoint.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub.h"
#include "hub_query.h"
#include "util.h"

enum kind {
    K_TEXT,
    K_UUID,
    K_DATE,   /* YYYY-MM-DD, compared as text */
    K_TIME,   /* RFC 3339 with offset, compared as µs (sk_instant) */
    K_SORT,   /* sortkey */
    K_EXPAND, /* expand (repeatable, comma-separated) */
    K_NAMES,  /* expandReferenceNames */
};

/* Where a row applies. */
#define U_LIST 1u
#define U_LOOKUP 2u
#define U_ID 4u

/* Several parameters that describe one thing (one relationship, one identifier) form one EXISTS. */
struct group {
    const char *open, *close;
};

struct def {
    const char *collection;
    const char *param;
    unsigned uses;
    bool multi; /* an array parameter: repeated or comma-separated, any value matches */
    bool all;   /* nameContains: every value must match */
    enum kind kind;
    const char *sql; /* the condition, or a group's part */
    const struct group *group;
    /* Fields of the filtered document the condition reads ("civicNo", space-separated): a
     * client that is not shown one of them may not use the parameter (403). */
    const char *needs;
    /* It reads what protected_identities minimal or skip hides: never true of a protected
     * person unless the client's policy is allow. */
    bool personal;
};

/* ---- the conditions ---------------------------------------------------------------- */

#define J(path) "json_extract(c.doc,'$." path "')"
#define EQ(path) J(path) " = ?"
#define REF(path) EQ(path ".id")
#define IN_ARRAY(arr, sub)                                                                         \
    "EXISTS (SELECT 1 FROM json_each(c.doc,'$." arr "') x WHERE json_extract(x.value,'$" sub       \
    "') = ?)"
#define IN_LIST(arr) "EXISTS (SELECT 1 FROM json_each(c.doc,'$." arr "') x WHERE x.value = ?)"
/* Dates are inclusive; a record without the date is always included (the spec's words). */
#define DATE_LE(f) "(" J(f) " IS NULL OR " J(f) " <= ?)"
#define DATE_GE(f) "(" J(f) " IS NULL OR " J(f) " >= ?)"
#define TIME_LE(f) "(" J(f) " IS NULL OR sk_instant(" J(f) ") <= ?)"
#define TIME_GE(f) "(" J(f) " IS NULL OR sk_instant(" J(f) ") >= ?)"
/* An organisation and the ones under it (parentOrganisation, any depth). */
#define ORG_TREE                                                                                   \
    "(WITH RECURSIVE t(id) AS (SELECT ? UNION SELECT o.id FROM {organisations} o JOIN t ON "       \
    "json_extract(o.doc,'$.parentOrganisation.id') = t.id) SELECT id FROM t)"
/* HUB_REFS read only when guard (a {?name} condition) holds. */
#define REFS_IF(guard, coll, name, param)                                                          \
    "(SELECT id FROM hub_refs WHERE " guard " AND collection = '" coll "' AND name = '" name      \
    "' AND ref = " param ")"
/* The groups a person is a member of, of those the client may see: hub_refs holds every
 * group's members, and an activity of its school may name a group of another school. */
#define GROUPS_OF                                                                                  \
    "(SELECT id FROM hub_refs WHERE {?groups} AND {?groupMemberships} AND collection = 'groups' "  \
    "AND name = 'member' AND ref = ? AND id IN (SELECT id FROM {groups}))"
/* The activities of a person's groups. */
#define ACTIVITIES_OF_MEMBER                                                                       \
    "(SELECT id FROM hub_refs WHERE {?activities} AND collection = 'activities' AND name = "     \
    "'group' AND ref IN " GROUPS_OF ")"
/* Rows of the table below (by hand: clang-format splits a macro of rows badly). */
/* clang-format off */
#define DATES(f)                                                                            \
    {f, "startDate.onOrBefore", U_LIST, false, false, K_DATE, DATE_LE("startDate"), NULL},  \
    {f, "startDate.onOrAfter", U_LIST, false, false, K_DATE, DATE_GE("startDate"), NULL},   \
    {f, "endDate.onOrBefore", U_LIST, false, false, K_DATE, DATE_LE("endDate"), NULL},      \
    {f, "endDate.onOrAfter", U_LIST, false, false, K_DATE, DATE_GE("endDate"), NULL}
#define TIMES(f)                                                                            \
    {f, "startTime.onOrBefore", U_LIST, false, false, K_TIME, TIME_LE("startTime"), NULL},  \
    {f, "startTime.onOrAfter", U_LIST, false, false, K_TIME, TIME_GE("startTime"), NULL},   \
    {f, "endTime.onOrBefore", U_LIST, false, false, K_TIME, TIME_LE("endTime"), NULL},      \
    {f, "endTime.onOrAfter", U_LIST, false, false, K_TIME, TIME_GE("endTime"), NULL}
#define OPT(f, uses) {f, "expandReferenceNames", uses, false, false, K_NAMES, NULL, NULL}
#define SORT(f) {f, "sortkey", U_LIST, false, false, K_SORT, NULL, NULL}
#define EXPAND(f, uses) {f, "expand", uses, true, false, K_EXPAND, NULL, NULL}
#define IDS(f) {f, "ids", U_LOOKUP, true, false, K_UUID, "r.id = ?", NULL}
/* clang-format on */
#define ALL (U_LIST | U_LOOKUP | U_ID)

/*
 * The relationships of persons (relationship.*): one row per relationship,
 * (person, type, organisation, start, end), as the spec's parameter texts
 * define each type. The other relationship parameters filter the same
 * relationship, so they are one condition.
 */
/*
 * The enrolments (e) of persons (p) with their school unit as h.ref, from
 * hub_refs: a condition on the organisation reaches its persons through the
 * index instead of every person's enrolments.
 */
#define ENROLLED_FROM                                                                              \
    "hub_refs h JOIN {persons} p ON p.id = h.id, json_each(p.doc,'$.enrolments') e"
#define ENROLLED_WHERE                                                                             \
    " WHERE {?enrolments} AND h.collection = 'persons' AND h.name = 'enroledAt' AND "              \
    "json_extract(e.value,'$.enroledAt.id') = h.ref"
#define REL_ROWS                                                                                   \
    "SELECT h.id AS pid, 'enrolment' AS t, h.ref AS org, json_extract(e.value,'$.startDate') "     \
    "AS sd, json_extract(e.value,'$.endDate') AS ed FROM " ENROLLED_FROM ENROLLED_WHERE            \
    " UNION ALL SELECT json_extract(d.doc,'$.person.id'), 'duty', json_extract(d.doc,"             \
    "'$.dutyAt.id'), json_extract(d.doc,'$.startDate'), json_extract(d.doc,'$.endDate') "          \
    "FROM {duties} d"                                                                              \
    " UNION ALL SELECT json_extract(pl.doc,'$.child.id'), 'placement.child', "                     \
    "json_extract(pl.doc,'$.placedAt.id'), json_extract(pl.doc,'$.startDate'), "                   \
    "json_extract(pl.doc,'$.endDate') FROM {placements} pl"                                        \
    " UNION ALL SELECT json_extract(o.value,'$.id'), 'placement.owner', "                          \
    "json_extract(pl.doc,'$.placedAt.id'), json_extract(pl.doc,'$.startDate'), "                   \
    "json_extract(pl.doc,'$.endDate') FROM {placements} pl, json_each(pl.doc,'$.owners') o "       \
    "WHERE {?owners}"                                                                              \
    " UNION ALL SELECT json_extract(g.value,'$.person.id'), 'responsibleFor.enrolment', h.ref, "   \
    "json_extract(e.value,'$.startDate'), json_extract(e.value,'$.endDate') FROM " ENROLLED_FROM   \
    ", json_each(p.doc,'$.responsibles') g" ENROLLED_WHERE " AND {?responsibles} AND {!p}"         \
    " UNION ALL SELECT json_extract(g.value,'$.person.id'), 'responsibleFor.placement', "          \
    "json_extract(pl.doc,'$.placedAt.id'), json_extract(pl.doc,'$.startDate'), "                   \
    "json_extract(pl.doc,'$.endDate') FROM {placements} pl JOIN {persons} p ON p.id = "            \
    "json_extract(pl.doc,'$.child.id'), json_each(p.doc,'$.responsibles') g "                      \
    "WHERE {?responsibles} AND {!p}"                                                               \
    " UNION ALL SELECT json_extract(m.value,'$.person.id'), 'groupMembership', "                   \
    "json_extract(gr.doc,'$.organisation.id'), json_extract(m.value,'$.startDate'), "              \
    "json_extract(m.value,'$.endDate') FROM {groups} gr, json_each(gr.doc,'$.groupMemberships') "  \
    "m WHERE {?groupMemberships}"

static const struct group relationship = {"r.id IN (SELECT pid FROM (" REL_ROWS ") WHERE 1", ")"};
static const struct group identifier = {
    "EXISTS (SELECT 1 FROM json_each(c.doc,'$.externalIdentifiers') x WHERE 1", ")"};

/* A member of an activity: in one of its groups (the spec: time bounds do not apply). */
#define MEMBER "r.id IN " ACTIVITIES_OF_MEMBER

/* A placement's owner, an activity's teacher (a duty): members of arrays, from hub_refs. */
#define OWNER "r.id IN " REFS_IF("{?placements} AND {?owners}", "placements", "owner", "?")
#define TEACHER "r.id IN " REFS_IF("{?activities}", "activities", "teacher", "?")

/* Case-insensitive over the three name fields (sk_fold: ASCII and Latin-1 letters, å ä ö). */
#define NAME_CONTAINS                                                                              \
    "instr(sk_fold(IFNULL(" J("givenName") ",'') || char(31) || IFNULL(" J(                        \
        "middleName") ",'') || char(31) || IFNULL(" J("familyName") ",'')), sk_fold(?)) > 0"

static const struct def defs[] = {
    /* organisations */
    {"organisations", "parent", U_LIST, true, false, K_UUID, REF("parentOrganisation"), NULL},
    {"organisations", "schoolUnitCode", U_LIST, true, false, K_TEXT, EQ("schoolUnitCode"), NULL},
    {"organisations", "organisationCode", U_LIST, true, false, K_TEXT, EQ("organisationCode"),
     NULL},
    {"organisations", "municipalityCode", U_LIST, false, false, K_TEXT, EQ("municipalityCode"),
     NULL},
    {"organisations", "type", U_LIST, true, false, K_TEXT, EQ("organisationType"), NULL},
    {"organisations", "schoolTypes", U_LIST, true, false, K_TEXT, IN_LIST("schoolTypes"), NULL},
    DATES("organisations"),
    SORT("organisations"),
    OPT("organisations", ALL),
    IDS("organisations"),
    {"organisations", "schoolUnitCodes", U_LOOKUP, true, false, K_TEXT, EQ("schoolUnitCode"), NULL},
    {"organisations", "organisationCodes", U_LOOKUP, true, false, K_TEXT, EQ("organisationCode"),
     NULL},
    /* persons */
    {"persons", "nameContains", U_LIST, true, true, K_TEXT, NAME_CONTAINS, NULL,
     "givenName middleName familyName", true},
    {"persons", "civicNo", U_LIST, false, false, K_TEXT, EQ("civicNo.value"), NULL, "civicNo.value",
     true},
    {"persons", "eduPersonPrincipalName", U_LIST, false, false, K_TEXT,
     "r.id IN " HUB_REFS("persons", "eppn", "?"), NULL, "eduPersonPrincipalNames", false},
    {"persons", "identifier.value", U_LIST, false, false, K_TEXT,
     " AND json_extract(x.value,'$.value') = ?", &identifier, "externalIdentifiers.value", true},
    {"persons", "identifier.context", U_LIST, false, false, K_TEXT,
     " AND json_extract(x.value,'$.context') = ?", &identifier, "externalIdentifiers.context",
     true},
    {"persons", "relationship.entity.type", U_LIST, false, false, K_TEXT, " AND t = ?",
     &relationship},
    {"persons", "relationship.organisation", U_LIST, false, false, K_UUID, " AND org = ?",
     &relationship},
    {"persons", "relationship.startDate.onOrBefore", U_LIST, false, false, K_DATE,
     " AND (sd IS NULL OR sd <= ?)", &relationship},
    {"persons", "relationship.startDate.onOrAfter", U_LIST, false, false, K_DATE,
     " AND (sd IS NULL OR sd >= ?)", &relationship},
    {"persons", "relationship.endDate.onOrBefore", U_LIST, false, false, K_DATE,
     " AND (ed IS NULL OR ed <= ?)", &relationship},
    {"persons", "relationship.endDate.onOrAfter", U_LIST, false, false, K_DATE,
     " AND (ed IS NULL OR ed >= ?)", &relationship},
    SORT("persons"),
    EXPAND("persons", ALL),
    OPT("persons", ALL),
    IDS("persons"),
    {"persons", "civicNos", U_LOOKUP, true, false, K_TEXT, EQ("civicNo.value"), NULL,
     "civicNo.value", true},
    /* placements */
    {"placements", "organisation", U_LIST, false, false, K_UUID, REF("placedAt"), NULL},
    {"placements", "group", U_LIST, false, false, K_UUID, REF("group"), NULL},
    {"placements", "child", U_LIST, false, false, K_UUID, REF("child"), NULL},
    {"placements", "owner", U_LIST, false, false, K_UUID, OWNER, NULL, "owners", false},
    DATES("placements"),
    SORT("placements"),
    EXPAND("placements", ALL),
    OPT("placements", ALL),
    IDS("placements"),
    {"placements", "personIds", U_LOOKUP, true, false, K_UUID, "(" REF("child") " OR " OWNER ")",
     NULL},
    /* duties */
    {"duties", "organisation", U_LIST, false, false, K_UUID, REF("dutyAt"), NULL},
    {"duties", "dutyRole", U_LIST, false, false, K_TEXT, EQ("dutyRole"), NULL},
    {"duties", "person", U_LIST, false, false, K_UUID, REF("person"), NULL},
    DATES("duties"),
    SORT("duties"),
    EXPAND("duties", ALL),
    OPT("duties", ALL),
    IDS("duties"),
    /* groups */
    {"groups", "groupType", U_LIST, true, false, K_TEXT, EQ("groupType"), NULL},
    {"groups", "schoolTypes", U_LIST, true, false, K_TEXT, EQ("schoolType"), NULL},
    {"groups", "organisation", U_LIST, true, false, K_UUID, REF("organisation"), NULL},
    DATES("groups"),
    SORT("groups"),
    EXPAND("groups", ALL),
    OPT("groups", ALL),
    IDS("groups"),
    /* programmes */
    {"programmes", "schoolType", U_LIST, true, false, K_TEXT, EQ("schoolType"), NULL},
    {"programmes", "code", U_LIST, false, false, K_TEXT, EQ("code"), NULL},
    {"programmes", "parentProgramme", U_LIST, false, false, K_UUID, REF("parentProgramme"), NULL},
    SORT("programmes"),
    OPT("programmes", ALL),
    IDS("programmes"),
    /* studyplans: no lookup in the spec */
    {"studyPlans", "student", U_LIST, true, false, K_UUID, REF("student"), NULL},
    DATES("studyPlans"),
    SORT("studyPlans"),
    OPT("studyPlans", U_LIST | U_ID),
    /* syllabuses */
    SORT("syllabuses"),
    OPT("syllabuses", ALL),
    IDS("syllabuses"),
    /* schoolUnitOfferings */
    {"schoolUnitOfferings", "organisation", U_LIST, false, false, K_UUID, REF("offeredAt"), NULL},
    SORT("schoolUnitOfferings"),
    OPT("schoolUnitOfferings", ALL),
    IDS("schoolUnitOfferings"),
    /* activities */
    {"activities", "member", U_LIST, false, false, K_UUID, MEMBER, NULL},
    {"activities", "teacher", U_LIST, false, false, K_UUID, TEACHER, NULL},
    {"activities", "organisation", U_LIST, false, false, K_UUID, REF("organisation"), NULL},
    {"activities", "group", U_LIST, false, false, K_UUID,
     "r.id IN " HUB_REFS("activities", "group", "?"), NULL},
    DATES("activities"),
    SORT("activities"),
    EXPAND("activities", ALL),
    OPT("activities", ALL),
    IDS("activities"),
    {"activities", "teachers", U_LOOKUP, true, false, K_UUID, TEACHER, NULL},
    {"activities", "members", U_LOOKUP, true, false, K_UUID, MEMBER, NULL},
    /* calendarEvents */
    TIMES("calendarEvents"),
    {"calendarEvents", "activity", U_LIST, false, false, K_UUID, REF("activity"), NULL},
    {"calendarEvents", "student", U_LIST | U_LOOKUP, false, false, K_UUID,
     "(" J("activity.id") " IN " ACTIVITIES_OF_MEMBER
                          " OR " IN_ARRAY("studentExceptions", ".student.id") ")",
     NULL},
    {"calendarEvents", "teacher", U_LIST | U_LOOKUP, false, false, K_UUID,
     "(" J("activity.id") " IN " REFS_IF("{?activities}", "activities", "teacher",
                                         "?") " OR " IN_ARRAY("teacherExceptions", ".duty.id") ")",
     NULL},
    {"calendarEvents", "organisation", U_LIST, false, false, K_UUID,
     J("activity.id") " IN (SELECT a.id FROM {activities} a WHERE json_extract(a.doc,"
                      "'$.organisation.id') IN " ORG_TREE ")",
     NULL},
    {"calendarEvents", "group", U_LIST, false, false, K_UUID,
     J("activity.id") " IN " REFS_IF("{?activities}", "activities", "group", "?"), NULL},
    SORT("calendarEvents"),
    EXPAND("calendarEvents", U_LIST | U_ID),
    OPT("calendarEvents", ALL),
    IDS("calendarEvents"),
    {"calendarEvents", "activities", U_LOOKUP, true, false, K_UUID, REF("activity"), NULL},
    /* attendances (by id takes no parameter in the spec) */
    {"attendances", "student", U_LIST, false, false, K_UUID, REF("student"), NULL},
    {"attendances", "organisation", U_LIST, false, false, K_UUID,
     J("calendarEvent.id") " IN (SELECT ce.id FROM {calendarEvents} ce JOIN {activities} a ON "
                           "a.id = json_extract(ce.doc,'$.activity.id') WHERE json_extract("
                           "a.doc,'$.organisation.id') IN " ORG_TREE ")",
     NULL},
    {"attendances", "calendarEvent", U_LIST, false, false, K_UUID, REF("calendarEvent"), NULL},
    OPT("attendances", U_LIST | U_LOOKUP),
    IDS("attendances"),
    {"attendances", "students", U_LOOKUP, true, false, K_UUID, REF("student"), NULL},
    {"attendances", "calendareEvents", U_LOOKUP, true, false, K_UUID, REF("calendarEvent"), NULL},
    {"attendances", "activities", U_LOOKUP, true, false, K_UUID,
     J("calendarEvent.id") " IN (SELECT ce.id FROM {calendarEvents} ce WHERE json_extract("
                           "ce.doc,'$.activity.id') = ?)",
     NULL},
    /* attendanceEvents */
    {"attendanceEvents", "group", U_LIST | U_LOOKUP, true, false, K_UUID, REF("group"), NULL},
    {"attendanceEvents", "person", U_LIST | U_LOOKUP, false, false, K_UUID, REF("person"), NULL},
    EXPAND("attendanceEvents", ALL),
    OPT("attendanceEvents", ALL),
    IDS("attendanceEvents"),
    /* attendanceSchedules (path /attendanceSchedule) */
    {"attendanceSchedules", "placement", U_LIST | U_LOOKUP, false, false, K_UUID, REF("placement"),
     NULL},
    {"attendanceSchedules", "group", U_LIST, false, false, K_UUID,
     J("placement.id") " IN (SELECT pl.id FROM {placements} pl WHERE json_extract(pl.doc,"
                       "'$.group.id') = ?)",
     NULL},
    DATES("attendanceSchedules"),
    OPT("attendanceSchedules", ALL),
    IDS("attendanceSchedules"),
    /* grades */
    {"grades", "organisation", U_LIST, false, false, K_UUID, REF("organisation"), NULL},
    {"grades", "student", U_LIST, false, false, K_UUID, REF("student"), NULL},
    {"grades", "registeredBy", U_LIST, false, false, K_UUID, REF("registeredBy"), NULL},
    {"grades", "gradingTeacher", U_LIST, false, false, K_UUID, REF("gradingTeacher"), NULL},
    {"grades", "registeredDate.onOrAfter", U_LIST, false, false, K_DATE, DATE_GE("registeredDate"),
     NULL},
    {"grades", "registeredDate.onOrBefore", U_LIST, false, false, K_DATE, DATE_LE("registeredDate"),
     NULL},
    SORT("grades"),
    OPT("grades", ALL),
    IDS("grades"),
    /* absences (by id takes no parameter in the spec) */
    {"absences", "organisation", U_LIST, false, false, K_UUID, REF("organisation"), NULL},
    {"absences", "student", U_LIST, false, false, K_UUID, REF("student"), NULL},
    {"absences", "registeredBy", U_LIST, false, false, K_UUID, REF("registeredBy"), NULL},
    {"absences", "type", U_LIST, false, false, K_TEXT, EQ("type"), NULL},
    TIMES("absences"),
    SORT("absences"),
    OPT("absences", U_LIST | U_LOOKUP),
    IDS("absences"),
    /* resources, rooms */
    {"resources", "organisation", U_LIST, false, false, K_UUID, REF("owner"), NULL},
    SORT("resources"),
    OPT("resources", ALL),
    IDS("resources"),
    {"rooms", "organisation", U_LIST, false, false, K_UUID, REF("owner"), NULL},
    SORT("rooms"),
    OPT("rooms", ALL),
    IDS("rooms"),
};
#define N_DEFS (sizeof(defs) / sizeof(defs[0]))

/* ---- the parsed parameters ----------------------------------------------------------- */

struct value {
    const struct def *def;
    char *text;
    int64_t us; /* K_TIME */
};

struct hub_filter {
    const struct sk_entity *e;
    enum hub_use use;
    uint32_t have, readable;
    struct value *v;
    size_t n, cap;
    int count;
    const char *sort; /* the sort value's SQL, or NULL */
    bool desc, by_stamp;
    uint32_t expand;
    bool names;
    struct sk_buf text;
    bool used[N_DEFS]; /* a value of defs[i] was given */
    const struct sk_privacy *viewer; /* the client's policy; NULL: shown everything */
    bool forbidden;                  /* a parameter reads what the client is not shown */
    char *sort_own;                  /* sort, guarded for protected persons (owned) */
};

/* Puts the condition that alias.doc is not a protected person (privacy.h's
 * markings, which hold no quote). */
static void put_not_protected(struct sk_buf *sql, const char *alias)
{
    sk_buf_printf(sql, "IFNULL(json_extract(%s.doc,'$.securityMarking'),'') NOT IN (", alias);
    for (size_t i = 0; sk_privacy_marking(i); i++)
        sk_buf_printf(sql, "%s'%s'", i ? "," : "", sk_privacy_marking(i));
    sk_buf_putc(sql, ')');
}

/* Whether the client is shown the field at path (a drop path covers what is below it). */
static bool shown(const struct hub_filter *f, const char *path, size_t len)
{
    if (!f->viewer)
        return true;
    for (size_t i = 0; i < f->viewer->drop_fields.n; i++) {
        const char *d = f->viewer->drop_fields.v[i];
        size_t dl = strlen(d);
        if (dl <= len && strncmp(d, path, dl) == 0 && (dl == len || path[dl] == '.'))
            return false;
    }
    return true;
}

/* Every path of a space-separated list is shown. */
static bool all_shown(const struct hub_filter *f, const char *paths)
{
    for (const char *p = paths; p && *p;) {
        size_t len = strcspn(p, " ");
        if (!shown(f, p, len))
            return false;
        p += len;
        p += strspn(p, " ");
    }
    return true;
}

/* Protected persons are hidden (minimal or skip) from this client. */
static bool hides_protected(const struct hub_filter *f)
{
    return f->viewer && f->viewer->protected_mode != SK_PROTECTED_ALLOW;
}

static int refuse(struct hub_filter *f, const char **why)
{
    f->forbidden = true;
    *why = "a parameter reads a field this client is not shown";
    return -1;
}

static unsigned use_bit(enum hub_use use)
{
    return use == HUB_USE_LIST ? U_LIST : use == HUB_USE_LOOKUP ? U_LOOKUP : U_ID;
}

static const struct def *find_def(const struct sk_entity *e, enum hub_use use, const char *key)
{
    for (size_t i = 0; i < N_DEFS; i++)
        if ((defs[i].uses & use_bit(use)) && strcmp(defs[i].collection, e->collection) == 0 &&
            strcmp(defs[i].param, key) == 0)
            return &defs[i];
    return NULL;
}

struct hub_filter *hub_filter_new(const struct sk_entity *e, enum hub_use use, uint32_t have,
                                  uint32_t readable)
{
    struct hub_filter *f = sk_calloc(1, sizeof(*f));
    f->e = e;
    f->use = use;
    f->have = have;
    f->readable = readable & have;
    return f;
}

void hub_filter_set_viewer(struct hub_filter *f, const struct sk_privacy *viewer)
{
    f->viewer = viewer;
}

bool hub_filter_forbidden(const struct hub_filter *f)
{
    return f && f->forbidden;
}

void hub_filter_free(struct hub_filter *f)
{
    if (!f)
        return;
    free(f->sort_own);
    for (size_t i = 0; i < f->n; i++)
        free(f->v[i].text);
    free(f->v);
    sk_buf_free(&f->text);
    free(f);
}

const char *hub_filter_bad_collection(void)
{
    for (size_t i = 0; i < N_DEFS; i++)
        if (!sk_entity_by_collection(defs[i].collection))
            return defs[i].collection;
    return NULL;
}

bool hub_filter_known(const struct hub_filter *f, const char *key)
{
    const struct def *d = find_def(f->e, f->use, key);
    /* A lookup's conditions come in its body; its query takes the options only. */
    return d && (f->use != HUB_USE_LOOKUP || !d->sql);
}

bool hub_filter_lookup_key(const struct hub_filter *f, const char *key)
{
    const struct def *d = find_def(f->e, HUB_USE_LOOKUP, key);
    return d && d->sql;
}

int hub_filter_count(const struct hub_filter *f)
{
    return f->count;
}

/* YYYY-MM-DD of a day that exists (2025-02-29 does not). */
static bool is_date(const char *s)
{
    static const char shape[] = "dddd-dd-dd";
    if (strlen(s) != 10)
        return false;
    for (int i = 0; i < 10; i++)
        if (shape[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != '-')
            return false;
    int y = atoi(s), m = atoi(s + 5), d = atoi(s + 8);
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m >= 1 && m <= 12 && d >= 1 && d <= days[m - 1] + (m == 2 && leap);
}

static int set_expand(struct hub_filter *f, const char *value, const char **why)
{
    int bit = hub_expand_bit(f->e, value);
    if (bit < 0) {
        *why = "expand names nothing this endpoint expands";
        return -1;
    }
    const char *needs = hub_expand_needs(f->e, value);
    if (needs && !all_shown(f, needs))
        return refuse(f, why);
    f->expand |= 1u << bit;
    return 0;
}

/* Percent-encodes s into b (everything but letters and digits: no '|' or '&' survives). */
void hub_filter_encode(struct sk_buf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (isalnum(ch) || ch == '.' || ch == '-' || ch == '_')
            sk_buf_putc(b, (char)ch);
        else
            sk_buf_printf(b, "%%%02X", ch);
    }
}

/* The fields of a person a sortkey reads (value with Asc/Desc), or NULL. */
static const char *sort_needs(const struct sk_entity *e, const char *value)
{
    static const char *const person[][2] = {{"GivenName", "givenName"},
                                            {"FamilyName", "familyName"},
                                            {"DisplayName", "givenName familyName"},
                                            {"CivicNo", "civicNo.value"}};
    if (strcmp(e->collection, "persons") != 0)
        return NULL;
    for (size_t i = 0; i < sizeof(person) / sizeof(person[0]); i++)
        if (strncmp(value, person[i][0], strlen(person[i][0])) == 0)
            return person[i][1];
    return NULL;
}

static int add_one(struct hub_filter *f, const struct def *d, const char *value, const char **why)
{
    if (d->kind == K_SORT) {
        *why = "sortkey is not one this endpoint defines";
        if (f->sort || f->by_stamp ||
            hub_filter_sort_find(f->e, value, &f->sort, &f->desc, &f->by_stamp) < 0)
            return -1;
        const char *needs = sort_needs(f->e, value);
        if (needs && !all_shown(f, needs))
            return refuse(f, why);
        if (needs && hides_protected(f)) { /* a protected person sorts as if without the value */
            struct sk_buf b = {0};
            sk_buf_puts(&b, "(CASE WHEN ");
            put_not_protected(&b, "c");
            sk_buf_printf(&b, " THEN %s ELSE '' END)", f->sort);
            f->sort = f->sort_own = sk_buf_take(&b);
        }
        return 0;
    }
    if (d->kind == K_EXPAND)
        return set_expand(f, value, why);
    if (d->kind == K_NAMES) {
        if (strcmp(value, "true") && strcmp(value, "false")) {
            *why = "expandReferenceNames must be true or false";
            return -1;
        }
        f->names = strcmp(value, "true") == 0;
        return 0;
    }
    if (d->needs && !all_shown(f, d->needs))
        return refuse(f, why);
    struct value v = {.def = d};
    char id[37];
    if (d->kind == K_UUID) {
        if (sk_uuid_normalize(value, id) < 0) {
            *why = "a parameter that takes an id was given something else";
            return -1;
        }
        value = id;
    } else if (d->kind == K_DATE && !is_date(value)) {
        *why = "a date parameter is not a date (YYYY-MM-DD)";
        return -1;
    } else if (d->kind == K_TIME) {
        char *copy = sk_strdup(value);
        size_t len = strlen(copy);
        if (len > 19 && copy[len - 6] == ' ') /* an offset's '+' not percent-encoded */
            copy[len - 6] = '+';
        int rc = sk_time_parse_us(copy, &v.us);
        free(copy);
        if (rc != 0) {
            *why = "a date-time parameter is not RFC 3339 with an offset";
            return -1;
        }
    }
    if (f->use != HUB_USE_LOOKUP && f->n >= HUB_FILTER_MAX_VALUES) {
        /* (a lookup's values are bounded by max_limit, hub_lookup.c) */
        *why = "more filter values than the server takes in one query (1000)";
        return -1;
    }
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 8;
        f->v = sk_realloc(f->v, f->cap * sizeof(*f->v));
    }
    v.text = sk_strdup(value);
    f->v[f->n++] = v;
    f->used[d - defs] = true;
    return 0;
}

int hub_filter_add(struct hub_filter *f, const char *key, const char *value, const char **why)
{
    const struct def *d = find_def(f->e, f->use, key);
    if (!d) {
        *why = "a parameter this endpoint does not take was given";
        return -1;
    }
    if (!value)
        value = "";
    bool repeated = (d->kind == K_SORT && (f->sort || f->by_stamp)) || f->used[d - defs];
    /* a lookup's keys are arrays in the spec's bodies, whatever the list's parameter takes */
    if (!d->multi && repeated && f->use != HUB_USE_LOOKUP) {
        *why = "a parameter that takes one value was repeated";
        return -1;
    }
    if (f->text.len)
        sk_buf_putc(&f->text, '&');
    hub_filter_encode(&f->text, key);
    sk_buf_putc(&f->text, '=');
    hub_filter_encode(&f->text, value);
    f->count++;
    if (!d->multi || f->use == HUB_USE_LOOKUP) /* a lookup's values come one by one */
        return add_one(f, d, value, why);
    /* An array parameter: repeated (the spec's form style) or comma-separated. */
    char *copy = sk_strdup(value), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(copy, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save))
        rc = add_one(f, d, t, why);
    free(copy);
    return rc;
}

char *hub_filter_text(const struct hub_filter *f)
{
    return sk_strdup(f->text.p ? f->text.p : "");
}

static int hex(char c)
{
    return isdigit((unsigned char)c) ? c - '0'
           : (c >= 'A' && c <= 'F')  ? c - 'A' + 10
           : (c >= 'a' && c <= 'f')  ? c - 'a' + 10
                                     : -1;
}

/* Decodes %XX in place; -1 on a bad escape. */
int hub_filter_decode(char *s)
{
    char *out = s;
    for (; *s; s++) {
        if (*s != '%') {
            *out++ = *s;
            continue;
        }
        int hi = hex(s[1]), lo = hi < 0 ? -1 : hex(s[2]);
        if (lo < 0)
            return -1;
        *out++ = (char)(hi * 16 + lo);
        s += 2;
    }
    *out = '\0';
    return 0;
}

int hub_filter_read_text(struct hub_filter *f, const char *text)
{
    char *copy = sk_strdup(text), *save = NULL;
    int rc = 0;
    const char *why;
    for (char *pair = strtok_r(copy, "&", &save); pair && rc == 0;
         pair = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(pair, '=');
        if (!eq) {
            rc = -1;
            break;
        }
        *eq = '\0';
        rc = hub_filter_decode(pair) < 0 || hub_filter_decode(eq + 1) < 0
                 ? -1
                 : hub_filter_add(f, pair, eq + 1, &why);
    }
    free(copy);
    return rc;
}

/* ---- SQL ------------------------------------------------------------------------------- */

/*
 * Appends template with {collection} resolved and every '?' as ?N. With a
 * scope (the clause on hub_rows r of hub_scope_clause), {collection} is
 * only the records of it the client may see: a condition that reaches
 * other records is no oracle for a duty, placement, group or child outside
 * the client's organisations (or hidden from it).
 */
static void put_template(const struct hub_filter *f, const char *scope, struct sk_buf *sql,
                         const char *t, int n)
{
    for (; *t; t++) {
        if (*t == '?') {
            sk_buf_printf(sql, "?%d", n);
        } else if (*t == '{') {
            const char *end = strchr(t, '}');
            char name[40];
            snprintf(name, sizeof(name), "%.*s", (int)(end - t - 1), t + 1);
            if (name[0] == '!') { /* {!alias}: not a person the client is not shown */
                if (hides_protected(f))
                    put_not_protected(sql, name + 1);
                else
                    sk_buf_puts(sql, "1");
                t = end;
                continue;
            }
            const char *type = name[0] == '?' ? name + 1 : name;
            int i = sk_entity_index(sk_entity_by_collection(type));
            bool readable = i >= 0 && (f->readable & (1u << i));
            if (name[0] == '?') /* {?type} or {?field} */
                sk_buf_puts(sql, (i >= 0 ? readable : shown(f, type, strlen(type))) ? "1" : "0");
            else if (readable && scope && *scope)
                sk_buf_printf(sql,
                              "(SELECT x.id AS id, x.doc AS doc FROM \"%s\" x WHERE EXISTS (SELECT "
                              "1 FROM hub_rows r WHERE r.collection = '%s' AND r.id = x.id AND "
                              "r.deleted_us IS NULL%s))",
                              name, name, scope);
            else if (readable)
                sk_buf_printf(sql, "\"%s\"", name);
            else /* a type this hub does not hold or the client may not read */
                sk_buf_puts(sql, "(SELECT NULL AS id, NULL AS doc WHERE 0)");
            t = end;
        } else {
            sk_buf_putc(sql, *t);
        }
    }
}

/*
 * The values v[idx[0..n)] of one parameter (n >= 1) joined by op as a balanced tree of
 * parentheses: SQLite refuses an expression deeper than 1000, and a flat chain is as deep as it
 * is long (a lookup takes max_limit ids, a query string thousands of values). Parameters are
 * numbered from *param on, in order.
 */
static void put_values(const struct hub_filter *f, const char *scope, struct sk_buf *sql,
                       const size_t *idx, size_t n, const char *op, int *param)
{
    sk_buf_putc(sql, '(');
    if (n == 1) {
        put_template(f, scope, sql, f->v[idx[0]].def->sql, (*param)++);
    } else {
        put_values(f, scope, sql, idx, n / 2, op, param);
        sk_buf_puts(sql, op);
        put_values(f, scope, sql, idx + n / 2, n - n / 2, op, param);
    }
    sk_buf_putc(sql, ')');
}

/*
 * The conditions: the values of one parameter are ORed (nameContains:
 * ANDed), different parameters ANDed; a group's parameters form one
 * condition. A lookup ORs everything: a record matching any key is listed.
 */
void hub_filter_where(const struct hub_filter *f, const char *scope, struct sk_buf *sql,
                      int *next_param)
{
    bool lookup = f->use == HUB_USE_LOOKUP;
    bool first = true;
    int n = *next_param;
    bool done[N_DEFS] = {false}; /* a parameter (or its group) already written */
    size_t *idx = sk_calloc(f->n + 1, sizeof(*idx));
    for (size_t i = 0; i < f->n; i++) {
        const struct def *d = f->v[i].def;
        if (done[d - defs])
            continue;
        for (size_t k = 0; k < N_DEFS; k++)
            done[k] |= &defs[k] == d || (d->group && defs[k].group == d->group);
        sk_buf_puts(sql, first ? " AND ((" : lookup ? " OR (" : " AND (");
        first = false;
        if (d->personal && hides_protected(f)) {
            put_not_protected(sql, "c");
            sk_buf_puts(sql, " AND ");
        }
        if (d->group) {
            put_template(f, scope, sql, d->group->open, 0);
            for (size_t k = i; k < f->n; k++)
                if (f->v[k].def->group == d->group)
                    put_template(f, scope, sql, f->v[k].def->sql, n++);
            put_template(f, scope, sql, d->group->close, 0);
        } else {
            size_t m = 0;
            for (size_t k = i; k < f->n; k++)
                if (f->v[k].def == d)
                    idx[m++] = k;
            put_values(f, scope, sql, idx, m, d->all ? " AND " : " OR ", &n);
        }
        sk_buf_putc(sql, ')');
    }
    free(idx);
    if (!first)
        sk_buf_putc(sql, ')');
    *next_param = n;
}

/* Binds in the order hub_filter_where numbered: by first appearance of each parameter. */
void hub_filter_bind(const struct hub_filter *f, sqlite3_stmt *stmt, int first_param)
{
    int n = first_param;
    bool *bound = sk_calloc(f->n + 1, sizeof(*bound));
    for (size_t i = 0; i < f->n; i++) {
        if (bound[i])
            continue;
        const struct def *d = f->v[i].def;
        for (size_t k = i; k < f->n; k++) {
            const struct def *dk = f->v[k].def;
            if (bound[k] || !(dk == d || (d->group && dk->group == d->group)))
                continue;
            bound[k] = true;
            if (dk->kind == K_TIME)
                sqlite3_bind_int64(stmt, n++, f->v[k].us);
            else
                sqlite3_bind_text(stmt, n++, f->v[k].text, -1, SQLITE_STATIC);
        }
    }
    free(bound);
}

const char *hub_filter_sort(const struct hub_filter *f, bool *desc, bool *by_stamp)
{
    *desc = f && f->desc;
    *by_stamp = f && f->by_stamp;
    return f ? f->sort : NULL;
}

uint32_t hub_filter_expand(const struct hub_filter *f)
{
    return f ? f->expand : 0;
}

uint32_t hub_filter_readable(const struct hub_filter *f)
{
    return f ? f->readable : 0;
}

bool hub_filter_ref_names(const struct hub_filter *f)
{
    return f && f->names;
}
