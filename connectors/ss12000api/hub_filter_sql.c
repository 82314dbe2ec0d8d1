/*
 * hub_filter_sql.c: the SQL the hub's filters and sort keys lean on: the
 * sortkey table (the spec's keys per endpoint and the sort value of each),
 * the sk_fold() function (case folding for Swedish letters), and the
 * expression indexes of the filters that large types get.
 *
 * Owns: what each sortkey sorts by, and that a sort value is TEXT and never
 * NULL (the keyset position compares it). Must never: sort by a value the
 * position cannot hold (values are cut to 200 characters in SQL).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub.h"
#include "hub_query.h"
#include "util.h"

#define J(path) "json_extract(c.doc,'$." path "')"

/* ---- sortkey ------------------------------------------------------------------------- */

struct sort_def {
    const char *collection;
    const char *name; /* without Asc/Desc */
    const char *dirs; /* the directions the spec lists: "A", "D" or "AD" */
    const char *expr; /* the value, TEXT */
};

#define SV(path) "IFNULL(substr(sk_fold(" J(path) "),1,200),'')"
#define PERSON_NAME                                                                                \
    "substr(sk_fold(IFNULL(" J("familyName") ",'') || char(31) || IFNULL(" J(                      \
        "givenName") ",'')),1,200)"
#define INSTANT(path) "printf('%020d', IFNULL(sk_instant(" J(path) "),0))"

static const struct sort_def sorts[] = {
    {"organisations", "DisplayName", "A", SV("displayName")},
    {"persons", "DisplayName", "A", PERSON_NAME},
    {"persons", "GivenName", "AD", SV("givenName")},
    {"persons", "FamilyName", "AD", SV("familyName")},
    {"persons", "CivicNo", "AD", SV("civicNo.value")},
    {"placements", "StartDate", "AD", SV("startDate")},
    {"placements", "EndDate", "AD", SV("endDate")},
    {"duties", "StartDate", "AD", SV("startDate")},
    {"groups", "DisplayName", "A", SV("displayName")},
    {"groups", "StartDate", "AD", SV("startDate")},
    {"groups", "EndDate", "AD", SV("endDate")},
    {"programmes", "Name", "A", SV("name")},
    {"programmes", "Code", "A", SV("code")},
    {"studyPlans", "StartDate", "AD", SV("startDate")},
    {"studyPlans", "EndDate", "AD", SV("endDate")},
    {"syllabuses", "SubjectName", "AD", SV("subjectName")},
    {"syllabuses", "SubjectCode", "AD", SV("subjectCode")},
    {"syllabuses", "CourseName", "AD", SV("courseName")},
    {"syllabuses", "CourseCode", "AD", SV("courseCode")},
    {"syllabuses", "SubjectDesignation", "AD", SV("subjectDesignation")},
    {"schoolUnitOfferings", "StartDate", "AD", SV("startDate")},
    {"schoolUnitOfferings", "EndDate", "AD", SV("endDate")},
    {"activities", "DisplayName", "A", SV("displayName")},
    {"calendarEvents", "StartTime", "AD", INSTANT("startTime")},
    {"grades", "registeredDate", "AD", SV("registeredDate")},
    {"absences", "StartTime", "AD", INSTANT("startTime")},
    {"resources", "DisplayName", "A", SV("displayName")},
    {"rooms", "DisplayName", "A", SV("displayName")},
};

int hub_filter_sort_find(const struct sk_entity *e, const char *value, const char **expr,
                         bool *desc_out, bool *by_stamp)
{
    size_t len = strlen(value);
    bool desc = len > 4 && strcmp(value + len - 4, "Desc") == 0;
    bool asc = len > 3 && strcmp(value + len - 3, "Asc") == 0;
    if (strcmp(value, "ModifiedDesc") == 0) { /* every endpoint with a sortkey has it */
        *by_stamp = *desc_out = true;
        return 0;
    }
    if (!asc && !desc)
        return -1;
    size_t base = len - (desc ? 4 : 3);
    for (size_t i = 0; i < sizeof(sorts) / sizeof(sorts[0]); i++) {
        const struct sort_def *s = &sorts[i];
        if (strcmp(s->collection, e->collection) || strlen(s->name) != base ||
            strncmp(s->name, value, base))
            continue;
        if (!strchr(s->dirs, desc ? 'D' : 'A'))
            return -1;
        *expr = s->expr;
        *desc_out = desc;
        return 0;
    }
    return -1;
}

/* Expression indexes: the scalar filters a vendor runs on large types (civicNo on 100 000). */
static const char *const indexes[] = {
    "persons|hub_ix_persons_civicno|json_extract(doc,'$.civicNo.value')",
    "organisations|hub_ix_organisations_suc|json_extract(doc,'$.schoolUnitCode')",
    "organisations|hub_ix_organisations_code|json_extract(doc,'$.organisationCode')",
    "duties|hub_ix_duties_person|json_extract(doc,'$.person.id')",
    "duties|hub_ix_duties_org|json_extract(doc,'$.dutyAt.id')",
    "placements|hub_ix_placements_org|json_extract(doc,'$.placedAt.id')",
    "placements|hub_ix_placements_child|json_extract(doc,'$.child.id')",
    "groups|hub_ix_groups_org|json_extract(doc,'$.organisation.id')",
    "activities|hub_ix_activities_org|json_extract(doc,'$.organisation.id')",
    "calendarEvents|hub_ix_calendarevents_activity|json_extract(doc,'$.activity.id')",
    "attendances|hub_ix_attendances_student|json_extract(doc,'$.student.id')",
    NULL,
};

/*
 * Fixed planner statistics for the tables the lists read, written once
 * unless an ANALYZE wrote real ones: without them SQLite walks the stamp
 * index of a type (to avoid a sort) and checks a civicNo on every row, 2 s
 * at 100 000 persons; with them it takes the expression index (µs) and
 * still walks the stamp index when nothing selective is asked.
 */
static int put_stat(struct sk_state *st, const char *tbl, const char *idx, const char *stat,
                    struct sk_error *err)
{
    char *sql = sk_asprintf("INSERT INTO sqlite_stat1(tbl, idx, stat) SELECT '%s', '%s', '%s' "
                            "WHERE NOT EXISTS (SELECT 1 FROM sqlite_stat1 WHERE tbl = '%s' AND "
                            "idx = '%s')",
                            tbl, idx, stat, tbl, idx);
    int rc = sk_state_exec(st, sql, err);
    free(sql);
    return rc;
}

/* The first collection name in the tables that names no entity type (a typo), or NULL. */
static const char *bad_collection(void)
{
    for (size_t i = 0; i < sizeof(sorts) / sizeof(sorts[0]); i++)
        if (!sk_entity_by_collection(sorts[i].collection))
            return sorts[i].collection;
    const char *bad = hub_filter_bad_collection();
    return bad ? bad : hub_expand_bad_collection();
}

int hub_filter_schema(struct sk_state *st, const struct hub *h, struct sk_error *err)
{
    const char *bad = bad_collection();
    if (bad)
        return sk_error_set(err, SK_ERR_FATAL, "hub tables: \"%s\" is no collection", bad);
    /* ANALYZE of the schema table only: creates sqlite_stat1, reads no data. */
    if (hub_refs_schema(st, h, err) < 0 || sk_state_exec(st, "ANALYZE sqlite_schema", err) < 0 ||
        put_stat(st, "hub_rows", "hub_rows_stamp", "1000000 100000 1 1", err) < 0 ||
        put_stat(st, "hub_rows", "hub_rows", "1000000 100000 1", err) < 0)
        return -1;
    for (size_t i = 0; i < h->n_entities; i++) {
        const char *coll = h->entities[i]->collection;
        char *pk = sk_asprintf("sqlite_autoindex_%s_1", coll);
        int rc = put_stat(st, coll, pk, "1000000 1", err);
        free(pk);
        if (rc < 0)
            return -1;
    }
    for (const char *const *ix = indexes; *ix; ix++) {
        const char *bar = strchr(*ix, '|'), *bar2 = strchr(bar + 1, '|');
        char coll[40], name[64];
        snprintf(coll, sizeof(coll), "%.*s", (int)(bar - *ix), *ix);
        snprintf(name, sizeof(name), "%.*s", (int)(bar2 - bar - 1), bar + 1);
        bool consumed = false;
        for (size_t i = 0; i < h->n_entities; i++)
            consumed |= strcmp(h->entities[i]->collection, coll) == 0;
        if (!consumed)
            continue;
        char *sql =
            sk_asprintf("CREATE INDEX IF NOT EXISTS %s ON \"%s\"(%s)", name, coll, bar2 + 1);
        int rc = sk_state_exec(st, sql, err);
        free(sql);
        if (rc < 0 || put_stat(st, coll, name, "1000000 2", err) < 0)
            return -1;
    }
    return 0;
}

/*
 * sk_fold(text): lower case for comparisons, over ASCII and the Latin-1
 * letters of UTF-8 (Å Ä Ö É Ü …), so nameContains is case-insensitive for
 * Swedish names (SQLite's lower() folds ASCII only).
 */
static void sql_fold(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    const unsigned char *in = sqlite3_value_text(argv[0]);
    if (!in) {
        sqlite3_result_null(ctx);
        return;
    }
    int len = sqlite3_value_bytes(argv[0]);
    char *out = sqlite3_malloc(len + 1);
    if (!out) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    for (int i = 0; i < len; i++) {
        unsigned char ch = in[i];
        out[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch); /* ASCII: no locale */
        if (ch == 0xC3 && i + 1 < len && in[i + 1] >= 0x80 && in[i + 1] <= 0x9E &&
            in[i + 1] != 0x97) { /* À..Þ but × */
            out[i] = (char)ch;
            out[i + 1] = (char)(in[i + 1] + 0x20);
            i++;
        }
    }
    out[len] = '\0';
    sqlite3_result_text(ctx, out, len, sqlite3_free);
}

void hub_filter_register(sqlite3 *db)
{
    sqlite3_create_function(db, "sk_fold", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL, sql_fold,
                            NULL, NULL);
}
