/*
 * test_postgres_sink.c: what is particular to the postgres-sink (what every
 * sink promises is in test_sink_contract.c), against a real PostgreSQL
 * (SK_TEST_PG, from scripts/testenv.sh or scripts/pg.sh). It creates a
 * versioned schema, applies batches in bulk (typed columns, the meta.modified
 * guard compared as instants, keep mode), rejects a record the server refuses
 * without losing the rest, keeps offsets per partition and broker
 * incarnation, and turns a lost connection into a retriable error that
 * commits nothing.
 *
 * Each test works in its own randomly named schema and drops it at the end.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "connector.h"
#include "model.h"
#include "postgres/postgres_sink.h"
#include "sk_test.h"
#include "util.h"

#define TOPIC "skolsync.persons"

static const char *conninfo;
static char schema[48];
static PGconn *admin;
static const struct sk_sink_ops *ops;
static struct sk_sink *sink;
static struct skt_recs batch;

/* ---- set-up ---------------------------------------------------------------- */

static void setup(void)
{
    conninfo = getenv("SK_TEST_PG");
    if (!conninfo || !conninfo[0])
        cr_assert_fail("SK_TEST_PG is not set: start PostgreSQL with scripts/pg.sh start (or "
                       "scripts/testenv.sh start) and export SK_TEST_PG=<the conninfo it prints>");
    admin = PQconnectdb(conninfo);
    cr_assert_eq(PQstatus(admin), CONNECTION_OK, "SK_TEST_PG=%s: %s", conninfo,
                 PQerrorMessage(admin));
    char u[37];
    sk_uuid_random(u);
    snprintf(schema, sizeof(schema), "sk_test_%.8s%.4s", u, u + 9);
    char *sql = sk_asprintf("SET search_path = %s; SET client_min_messages = warning", schema);
    PQclear(PQexec(admin, sql));
    free(sql);
    ops = sk_registry_sink("postgres-sink");
    cr_assert_not_null(ops, "postgres-sink is not registered");
}

static void teardown(void)
{
    skt_sink_drop(&sink);
    skt_recs_free(&batch);
    if (admin) {
        char *q = PQescapeIdentifier(admin, schema, strlen(schema));
        char *sql = sk_asprintf("DROP SCHEMA IF EXISTS %s CASCADE", q);
        PQclear(PQexec(admin, sql));
        free(sql);
        PQfreemem(q);
        PQfinish(admin);
        admin = NULL;
    }
}

/* Named after the schema: unique, so the connection's application_name finds it. */
static int open_with(const char *yaml, const char *incarnation, struct sk_error *err)
{
    return skt_sink_try_open("postgres-sink", schema, yaml, NULL, 0, incarnation, &sink, err);
}

static void open_sink_with(const char *incarnation, const char *extra)
{
    char *yaml = sk_asprintf("conninfo: '%s'\nschema: '%s'\nconnect_timeout: 5s\n%s", conninfo,
                             schema, extra);
    struct sk_error err = {0};
    cr_assert_eq(open_with(yaml, incarnation, &err), 0, "%s", err.msg);
    free(yaml);
}

static void open_sink(const char *incarnation)
{
    open_sink_with(incarnation, "");
}

/* ---- records, built the way the sink driver does ------------------------------ */

static const char *uuid(int n)
{
    static char buf[8][37];
    static int slot;
    char *u = buf[slot++ % 8];
    snprintf(u, 37, "00000000-0000-4000-8000-%012d", n);
    return u;
}

/* An upsert of the entity in json (its "id" is the key), as the driver hands it over. */
static struct sk_record *add_doc(const char *collection, const char *json, int32_t partition,
                                 int64_t offset)
{
    struct sk_record *r = skt_recs_add(&batch, collection, NULL, json, NULL);
    r->topic = TOPIC;
    r->partition = partition;
    r->offset = offset;
    return r;
}

static void add_person(int n, const char *modified, const char *given, int32_t partition,
                       int64_t offset)
{
    char *json = sk_asprintf("{\"id\":\"%s\",\"meta\":{\"created\":\"2024-01-01T00:00:00Z\","
                             "\"modified\":\"%s\"},\"givenName\":\"%s\",\"familyName\":\"F\"}",
                             uuid(n), modified, given);
    add_doc("persons", json, partition, offset);
    free(json);
}

static void add_tombstone(const char *collection, int n, int32_t partition, int64_t offset)
{
    struct sk_record *r = skt_recs_add(&batch, collection, uuid(n), NULL, NULL);
    r->topic = TOPIC;
    r->partition = partition;
    r->offset = offset;
}

static void apply_ok(void)
{
    struct sk_error err = {0};
    cr_assert_eq(skt_recs_apply(sink, &batch, &err), 0, "%s", err.msg);
    for (size_t i = 0; i < batch.n; i++)
        cr_assert_eq(batch.out[i].kind, SK_APPLIED, "record %zu: %d %s", i, batch.out[i].kind,
                     batch.out[i].err.msg);
}

/* ---- looking at the database from a second connection ------------------------- */

/* Runs sql (no rows) as the test's admin; it must succeed. Frees sql. */
static void admin_exec(char *sql)
{
    PGresult *res = PQexec(admin, sql);
    cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(admin));
    PQclear(res);
    free(sql);
}

/* The first column of the first row of sql (search_path = the test's schema); caller frees. */
static char *query(const char *sql)
{
    PGresult *res = PQexec(admin, sql);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(admin));
    char *out = NULL;
    if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        out = sk_strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return out;
}

static void assert_query(const char *sql, const char *expected)
{
    char *got = query(sql);
    if (!expected)
        cr_assert_null(got, "%s: got %s, expected no value", sql, got);
    else
        cr_assert(got && strcmp(got, expected) == 0, "%s: got %s, expected %s", sql,
                  got ? got : "NULL", expected);
    free(got);
}

static void assert_given_name(int n, const char *expected)
{
    char *sql = sk_asprintf("SELECT given_name FROM persons WHERE id = '%s'", uuid(n));
    assert_query(sql, expected);
    free(sql);
}

/* The stored doc of id equals the record's doc as JSON (jsonb reorders keys). */
static void assert_doc_stored(const char *table, const struct sk_record *r)
{
    char *sql = sk_asprintf("SELECT doc::text FROM %s WHERE id = '%s'", table, r->key);
    char *text = query(sql);
    cr_assert_not_null(text, "%s: no row", sql);
    cJSON *stored = cJSON_Parse(text);
    cr_assert_not_null(stored);
    char *want = cJSON_PrintUnformatted(r->doc);
    cr_assert(cJSON_Compare(stored, r->doc, true), "%s:\n stored %s\n wanted %s", table, text,
              want);
    free(want);
    cJSON_Delete(stored);
    free(text);
    free(sql);
}

static int64_t stored_offset(int32_t partition)
{
    struct sk_offsets offs = {0};
    struct sk_error err = {0};
    cr_assert_eq(sink->ops->stored_offsets(sink, &offs, &err), 0, "%s", err.msg);
    int64_t next = -1;
    for (size_t i = 0; i < offs.n; i++)
        if (strcmp(offs.v[i].topic, TOPIC) == 0 && offs.v[i].partition == partition)
            next = offs.v[i].next_offset;
    sk_offsets_free(&offs);
    return next;
}

/* Every column of every row of table, in id order: the table's content. */
static char *table_content(const char *table)
{
    char *sql = sk_asprintf("SELECT string_agg(t::text, E'\\n' ORDER BY id) FROM %s AS t", table);
    char *out = query(sql);
    free(sql);
    return out;
}

/* A small school: the records of several types, in dependency order. */
#define ORG_H 1
#define ORG_S 2
#define ORG_OTHER 3
#define PERSON 10
#define TEACHER 11
#define GROUP 20
#define DUTY 30
#define ACTIVITY 40
#define PLACEMENT 50
#define STUDY_PLAN 60

static void add_school(void)
{
    char *j;
    j = sk_asprintf("{\"id\":\"%s\",\"meta\":{\"created\":\"2020-01-01T00:00:00Z\",\"modified\":"
                    "\"2024-06-20T16:40:03+02:00\"},\"displayName\":\"Kommunen\","
                    "\"organisationType\":\"Huvudman\",\"organisationCode\":\"HM1\"}",
                    uuid(ORG_H));
    add_doc("organisations", j, 0, 0);
    free(j);
    j = sk_asprintf("{\"id\":\"%s\",\"meta\":{\"modified\":\"2024-06-20T14:40:03Z\"},"
                    "\"displayName\":\"Åby skola\",\"organisationType\":\"Skolenhet\","
                    "\"schoolUnitCode\":\"12345678\",\"schoolTypes\":[\"GR\"],"
                    "\"parentOrganisation\":{\"id\":\"%s\"},\"startDate\":\"2001-07-01\"}",
                    uuid(ORG_S), uuid(ORG_H));
    add_doc("organisations", j, 0, 1);
    free(j);
    j = sk_asprintf(
        "{\"id\":\"%s\",\"meta\":{\"modified\":\"2024-06-20T14:40:03Z\"},\"givenName\":\"Anna\","
        "\"familyName\":\"Öberg\",\"birthDate\":\"2011-02-28\",\"securityMarking\":\"Ingen\","
        "\"eduPersonPrincipalNames\":[\"anna.oberg@aby.se\",\"ao@kommunen.se\"],"
        "\"civicNo\":{\"value\":\"201102282389\"},"
        "\"enrolments\":[{\"enroledAt\":{\"id\":\"%s\"},\"schoolType\":\"GR\","
        "\"startDate\":\"2017-08-15\",\"cancelled\":true},"
        "{\"enroledAt\":{\"id\":\"%s\"},\"schoolType\":\"GR\",\"startDate\":\"2017-08-15\","
        "\"endDate\":\"2010-06-30\"},"
        "{\"enroledAt\":{\"id\":\"%s\"},\"schoolType\":\"GR\",\"startDate\":\"2017-08-15\","
        "\"endDate\":\"2099-06-30\",\"schoolYear\":7}]}",
        uuid(PERSON), uuid(ORG_OTHER), uuid(ORG_OTHER), uuid(ORG_S));
    add_doc("persons", j, 0, 2);
    free(j);
    j = sk_asprintf("{\"id\":\"%s\",\"meta\":{\"modified\":\"2024-06-20T14:40:03Z\"},"
                    "\"givenName\":\"Lars\",\"familyName\":\"Lärare\"}",
                    uuid(TEACHER));
    add_doc("persons", j, 0, 3);
    free(j);
    j = sk_asprintf("{\"id\":\"%s\",\"meta\":{\"modified\":\"2024-06-20T14:40:03Z\"},"
                    "\"person\":{\"id\":\"%s\"},\"dutyAt\":{\"id\":\"%s\"},"
                    "\"dutyRole\":\"Lärare\",\"startDate\":\"2020-08-01\",\"dutyPercent\":80}",
                    uuid(DUTY), uuid(TEACHER), uuid(ORG_S));
    add_doc("duties", j, 1, 0);
    free(j);
    j = sk_asprintf("{\"id\":\"%s\",\"meta\":{\"modified\":\"2024-06-20T14:40:03Z\"},"
                    "\"displayName\":\"7A\",\"groupType\":\"Klass\",\"schoolType\":\"GR\","
                    "\"organisation\":{\"id\":\"%s\"},\"startDate\":\"2024-08-15\","
                    "\"groupMemberships\":[{\"person\":{\"id\":\"%s\"},"
                    "\"startDate\":\"2024-08-15\"}]}",
                    uuid(GROUP), uuid(ORG_S), uuid(PERSON));
    add_doc("groups", j, 1, 1);
    free(j);
    j = sk_asprintf("{\"id\":\"%s\",\"meta\":{\"modified\":\"2024-06-20T14:40:03Z\"},"
                    "\"displayName\":\"Matematik 7A\",\"calendarEventsRequired\":true,"
                    "\"groups\":[{\"id\":\"%s\"}],\"organisation\":{\"id\":\"%s\"},"
                    "\"teachers\":[{\"duty\":{\"id\":\"%s\"}}],\"startDate\":\"2024-08-15\"}",
                    uuid(ACTIVITY), uuid(GROUP), uuid(ORG_S), uuid(DUTY));
    add_doc("activities", j, 1, 2);
    free(j);
    j = sk_asprintf("{\"id\":\"%s\",\"meta\":{\"modified\":\"2024-06-20T14:40:03Z\"},"
                    "\"placedAt\":{\"id\":\"%s\"},\"child\":{\"id\":\"%s\"},"
                    "\"schoolType\":\"FS\",\"startDate\":\"2015-01-07\"}",
                    uuid(PLACEMENT), uuid(ORG_S), uuid(PERSON));
    add_doc("placements", j, 1, 3);
    free(j);
    j = sk_asprintf("{\"id\":\"%s\",\"meta\":{\"modified\":\"2024-06-20T14:40:03Z\"},"
                    "\"student\":{\"id\":\"%s\"},\"startDate\":\"2024-08-15\"}",
                    uuid(STUDY_PLAN), uuid(PERSON));
    add_doc("studyPlans", j, 1, 4);
    free(j);
}

static const char *table_of(const struct sk_record *r)
{
    static const struct {
        const char *collection, *table;
    } names[] = {{"organisations", "organisations"},
                 {"persons", "persons"},
                 {"duties", "duties"},
                 {"groups", "groups"},
                 {"activities", "activities"},
                 {"placements", "placements"},
                 {"studyPlans", "study_plans"}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(names[i].collection, r->entity->collection) == 0)
            return names[i].table;
    cr_assert_fail("no table for %s", r->entity->collection);
    return NULL;
}

/* An upsert of {"id", "meta": {"modified"}, "displayName": name} into collection. */
static struct sk_record *add_named(const char *collection, int n, const char *modified,
                                   const char *name, int64_t offset)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "id", uuid(n));
    cJSON_AddStringToObject(cJSON_AddObjectToObject(doc, "meta"), "modified", modified);
    cJSON_AddStringToObject(doc, "displayName", name);
    char *json = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    struct sk_record *r = add_doc(collection, json, 0, offset);
    free(json);
    return r;
}

static void assert_display_name(const char *table, int n, const char *expected)
{
    char *sql = sk_asprintf("SELECT display_name FROM %s WHERE id = '%s'", table, uuid(n));
    assert_query(sql, expected);
    free(sql);
}

TestSuite(postgres_sink, .init = setup, .fini = teardown, .timeout = 60);

/* ---- tests ------------------------------------------------------------------ */

Test(postgres_sink, open_creates_a_versioned_schema_once)
{
    open_sink("inc-a");
    char *sql = sk_asprintf("SELECT count(*) FROM information_schema.tables WHERE "
                            "table_schema = '%s'",
                            schema);
    assert_query(sql, "20"); /* 18 collections, skolsync_migrations, skolsync_offsets */
    free(sql);
    assert_query("SELECT string_agg(version::text, ',' ORDER BY version) FROM skolsync_migrations",
                 "1,2,3,4");
    assert_query("SELECT count(*) FROM study_plans", "0");
    assert_query("SELECT count(*) FROM school_unit_offerings", "0");
    char *applied = query("SELECT min(applied_at)::text FROM skolsync_migrations");
    cr_assert_not_null(applied);

    /* A second open finds version 4 and runs nothing. */
    skt_sink_drop(&sink);
    open_sink("inc-a");
    assert_query("SELECT count(*) FROM skolsync_migrations", "4");
    assert_query("SELECT min(applied_at)::text FROM skolsync_migrations", applied);
    free(applied);

    /* A schema migrated by a newer skolsync is refused, not touched. */
    skt_sink_drop(&sink);
    PQclear(PQexec(admin, "INSERT INTO skolsync_migrations(version) VALUES (5)"));
    char *yaml = sk_asprintf("conninfo: '%s'\nschema: %s\n", conninfo, schema);
    struct sk_error err = {0};
    cr_assert_eq(open_with(yaml, "inc-a", &err), -1);
    cr_assert_eq(err.cls, SK_ERR_FATAL);
    cr_assert(strstr(err.msg, "newer"), "%s", err.msg);
    free(yaml);
}

Test(postgres_sink, a_schema_name_that_needs_quoting_works)
{
    /* Upper case, a space and a double quote: quoted everywhere, case kept. */
    size_t len = strlen(schema);
    snprintf(schema + len, sizeof(schema) - len, "_Ü \"x");
    open_sink("inc-a");
    add_person(1, "2024-05-01T12:00:00Z", "A", 0, 0);
    apply_ok();
    char *q = PQescapeIdentifier(admin, schema, strlen(schema));
    char *sql = sk_asprintf("SELECT given_name FROM %s.persons", q);
    assert_query(sql, "A");
    free(sql);
    PQfreemem(q);
    cr_assert_eq(stored_offset(0), 1);
}

Test(postgres_sink, full_set_of_records_fills_docs_and_typed_columns)
{
    open_sink("inc-a");
    add_school();
    apply_ok();
    for (size_t i = 0; i < batch.n; i++)
        assert_doc_stored(table_of(&batch.v[i]), &batch.v[i]);

    char *sql, *want;
    sql = sk_asprintf("SELECT concat_ws('|', display_name, organisation_type, school_unit_code, "
                      "parent_id, start_date) FROM organisations WHERE id = '%s'",
                      uuid(ORG_S));
    want = sk_asprintf("Åby skola|Skolenhet|12345678|%s|2001-07-01", uuid(ORG_H));
    assert_query(sql, want);
    free(sql);
    free(want);
    sql = sk_asprintf("SELECT concat_ws('|', given_name, family_name, birth_date, "
                      "security_marking, epp_name, enrolment_school) FROM persons WHERE id = '%s'",
                      uuid(PERSON));
    /* The cancelled and the ended enrolments are skipped: the active one is at ORG_S. */
    want = sk_asprintf("Anna|Öberg|2011-02-28|Ingen|anna.oberg@aby.se|%s", uuid(ORG_S));
    assert_query(sql, want);
    free(sql);
    free(want);
    sql = sk_asprintf("SELECT concat_ws('|', display_name, group_type, organisation_id, "
                      "school_type) FROM groups WHERE id = '%s'",
                      uuid(GROUP));
    want = sk_asprintf("7A|Klass|%s|GR", uuid(ORG_S));
    assert_query(sql, want);
    free(sql);
    free(want);
    sql = sk_asprintf("SELECT concat_ws('|', person_id, duty_at, duty_role) FROM duties");
    want = sk_asprintf("%s|%s|Lärare", uuid(TEACHER), uuid(ORG_S));
    assert_query(sql, want);
    free(sql);
    free(want);
    sql = sk_asprintf("SELECT concat_ws('|', organisation_id, display_name) FROM activities");
    want = sk_asprintf("%s|Matematik 7A", uuid(ORG_S));
    assert_query(sql, want);
    free(sql);
    free(want);
    sql = sk_asprintf("SELECT concat_ws('|', child_id, placed_at) FROM placements");
    want = sk_asprintf("%s|%s", uuid(PERSON), uuid(ORG_S));
    assert_query(sql, want);
    free(sql);
    free(want);
    sql = sk_asprintf("SELECT student_id::text FROM study_plans");
    assert_query(sql, uuid(PERSON));
    free(sql);

    /* modified is the instant of meta.modified, whatever offset it was written with. */
    sql = sk_asprintf("SELECT modified = '2024-06-20T14:40:03Z' FROM organisations WHERE id = '%s'",
                      uuid(ORG_H));
    assert_query(sql, "t");
    free(sql);
    /* The documented membership query finds the group. */
    sql = sk_asprintf("SELECT count(*) FROM groups WHERE doc->'groupMemberships' @> "
                      "'[{\"person\":{\"id\":\"%s\"}}]'",
                      uuid(PERSON));
    assert_query(sql, "1");
    free(sql);
    /* Generated columns cannot be written around doc. */
    PGresult *res = PQexec(admin, "UPDATE persons SET given_name = 'x'");
    cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR);
    PQclear(res);
}

Test(postgres_sink, replaying_the_same_batch_changes_nothing)
{
    open_sink("inc-a");
    add_school();
    apply_ok();
    const char *tables[] = {"organisations", "persons",    "groups",     "duties",
                            "activities",    "placements", "study_plans"};
    char *before[7];
    for (size_t i = 0; i < 7; i++)
        before[i] = table_content(tables[i]);
    apply_ok();
    for (size_t i = 0; i < 7; i++) {
        char *after = table_content(tables[i]);
        cr_assert_str_eq(after, before[i], "%s changed on replay", tables[i]);
        free(after);
        free(before[i]);
    }
    assert_query("SELECT count(*) FROM persons", "2");
}

/* The stale guard itself is the contract suite's (test_sink_contract.c); here only
 * how this sink keeps the instant it compares. */
Test(postgres_sink, modified_is_kept_as_the_instant_in_utc)
{
    open_sink("inc-a");
    add_person(1, "2024-05-01T13:30:00+01:00", "Newest", 0, 0);
    apply_ok();
    assert_query("SELECT modified = '2024-05-01T12:30:00Z' FROM persons", "t");
}

/* The generated timestamptz columns of the test's schema (modified and the typed instants). */
#define GENERATED_INSTANTS                                                                         \
    "SELECT count(*) FROM pg_attribute WHERE attgenerated <> '' AND "                              \
    "atttypid = 'timestamptz'::regtype AND attrelid IN (SELECT oid FROM pg_class WHERE "           \
    "relnamespace = current_schema()::regnamespace)"

/* The sink writes modified (migration 2) and the typed instants (migration 3) itself. */
Test(postgres_sink, instants_are_written_as_the_parsed_instant)
{
    open_sink("inc-a");
    assert_query(GENERATED_INSTANTS, "0");
    add_person(1, "1969-12-31T23:59:59.25-00:30", "BeforeEpoch", 0, 0);
    add_person(2, "2016-12-31T23:59:60Z", "LeapSecond", 0, 1);
    add_person(3, "2024-01-01T00:00:00.1234569Z", "Fraction", 0, 2);
    add_person(4, "0001-01-01T00:30:00+01:00", "YearZero", 0, 3);
    /* sk_instant raised 22008 on a leap second with a fraction: the record was refused. */
    char *j = sk_asprintf("{\"id\":\"%s\",\"time\":\"2026-12-31T23:59:60.5+01:00\","
                          "\"eventType\":\"x\"}",
                          uuid(5));
    add_doc("attendanceEvents", j, 0, 4);
    free(j);
    j = sk_asprintf("{\"id\":\"%s\",\"startTime\":\"2024-05-01T13:30:00+01:00\","
                    "\"endTime\":14}",
                    uuid(6));
    add_doc("calendarEvents", j, 0, 5);
    free(j);
    apply_ok();
    assert_query("SELECT string_agg(coalesce(to_char(modified AT TIME ZONE 'UTC', "
                 "'YYYY-MM-DD HH24:MI:SS.US'), '-'), ',' ORDER BY id) FROM persons",
                 "1970-01-01 00:29:59.250000,2017-01-01 00:00:00.000000,"
                 "2024-01-01 00:00:00.123456,-");
    assert_query("SELECT event_time = '2026-12-31T23:00:00.5Z' FROM attendance_events", "t");
    assert_query("SELECT concat(start_time = '2024-05-01T12:30:00Z', '|', end_time IS NULL) "
                 "FROM calendar_events",
                 "t|t");
}

/*
 * A schema a skolsync before migrations 2 and 3 made (modified and the typed
 * instants generated from doc) is migrated on open: the stored instants
 * stay, the guard keeps working over them, and the sink writes them from
 * then on.
 */
Test(postgres_sink, migrations_2_and_3_keep_the_instants_of_an_older_schema)
{
    open_sink("inc-a");
    add_person(1, "2024-05-01T13:30:00+01:00", "Kept", 0, 0);
    char *j = sk_asprintf("{\"id\":\"%s\",\"startTime\":\"2024-05-01T13:30:00+01:00\"}", uuid(6));
    add_doc("calendarEvents", j, 0, 1);
    free(j);
    apply_ok();
    skt_sink_drop(&sink);
    PGresult *res = PQexec(
        admin,
        "DO $$ DECLARE t text; c text; k text; BEGIN "
        "FOR t IN SELECT table_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND column_name = 'modified' LOOP EXECUTE format('ALTER TABLE %I DROP "
        "COLUMN modified, ADD COLUMN modified timestamptz GENERATED ALWAYS AS "
        "(%I.sk_instant(doc->''meta''->>''modified'')) STORED', t, current_schema()); END LOOP; "
        "FOR t, c, k IN VALUES ('calendar_events', 'start_time', 'startTime'), ('calendar_events', "
        "'end_time', 'endTime'), ('attendance_events', 'event_time', 'time'), ('absences', "
        "'start_time', 'startTime'), ('absences', 'end_time', 'endTime') LOOP EXECUTE "
        "format('ALTER TABLE %I DROP COLUMN %I, ADD COLUMN %I timestamptz GENERATED ALWAYS AS "
        "(%I.sk_instant(doc->>%L)) STORED', t, c, c, current_schema(), k); END LOOP; END $$; "
        "DELETE FROM skolsync_migrations WHERE version >= 2");
    cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQerrorMessage(admin));
    PQclear(res);
    assert_query(GENERATED_INSTANTS, "23");

    open_sink("inc-a");
    assert_query("SELECT string_agg(version::text, ',' ORDER BY version) FROM skolsync_migrations",
                 "1,2,3,4");
    assert_query(GENERATED_INSTANTS, "0");
    assert_query("SELECT modified = '2024-05-01T12:30:00Z' FROM persons", "t");
    assert_query("SELECT start_time = '2024-05-01T12:30:00Z' FROM calendar_events", "t");
    skt_recs_clear(&batch);
    add_person(1, "2024-05-01T12:00:00Z", "Older", 0, 2);
    apply_ok();
    assert_given_name(1, "Kept");
    skt_recs_clear(&batch);
    add_person(1, "2024-05-01T12:45:00Z", "Newer", 0, 3);
    apply_ok();
    assert_given_name(1, "Newer");
    assert_query("SELECT modified = '2024-05-01T12:45:00Z' FROM persons", "t");
}

#define GENERATED_REFS_AND_DAYS                                                                    \
    "SELECT count(*) FROM pg_attribute WHERE attgenerated <> '' AND "                              \
    "atttypid IN ('uuid'::regtype, 'date'::regtype) AND attrelid IN (SELECT oid FROM pg_class "    \
    "WHERE relnamespace = current_schema()::regnamespace)"

/* What every REF and DAY column of placements must hold: the SQL functions over doc. */
#define PLACEMENTS_DISAGREE                                                                        \
    "SELECT count(*) FROM placements WHERE child_id IS DISTINCT FROM "                             \
    "sk_uuid(doc->'child'->>'id') OR placed_at IS DISTINCT FROM sk_uuid(doc->'placedAt'->>'id') "  \
    "OR group_id IS DISTINCT FROM sk_uuid(doc->'group'->>'id') OR start_date IS DISTINCT FROM "    \
    "sk_date(doc->>'startDate') OR end_date IS DISTINCT FROM sk_date(doc->>'endDate')"

/*
 * The sink writes the references and days (migration 4): for every kind of
 * value a source may send, what sk_uuid and sk_date of migration 1 say.
 */
Test(postgres_sink, references_and_days_are_what_the_sql_functions_say)
{
    open_sink("inc-a");
    assert_query(GENERATED_REFS_AND_DAYS, "0");
    static const char *const refs[] = {
        "{\"id\":\"00000000-0000-4000-8000-0000000000AB\"}", /* upper case: lowered */
        "{\"id\":\"00000000-0000-4000-8000-0000000000ab\",\"displayName\":\"x\"}",
        "{\"id\":\"{00000000-0000-4000-8000-0000000000ab}\"}", /* braces: no */
        "{\"id\":\"000000000000400080000000000000ab\"}",        /* no dashes: no */
        "{\"id\":\"00000000-0000-4000-8000-0000000000ag\"}",    /* not hex */
        "{\"id\":\"00000000-0000-4000-8000-0000000000ab \"}",   /* trailing space */
        "{\"id\":\"00000000\\u002d0000-4000-8000-0000000000ab\"}", /* an escaped dash: yes */
        "{\"id\":12}",
        "{\"id\":null}",
        "{\"id\":{\"id\":\"00000000-0000-4000-8000-0000000000ab\"}}",
        "{}",
        "\"00000000-0000-4000-8000-0000000000ab\"", /* the id itself, not an object */
        "[{\"id\":\"00000000-0000-4000-8000-0000000000ab\"}]",
        "null",
    };
    static const char *const days[] = {
        "\"2024-02-29\"", "\"2023-02-29\"", "\"2000-02-29\"", "\"1900-02-29\"",
        "\"2024-04-31\"", "\"2024-12-31\"", "\"2024-13-01\"", "\"2024-00-10\"",
        "\"2024-01-00\"", "\"0000-01-01\"", "\"0001-01-01\"", "\"9999-12-31\"",
        "\"2024-1-01\"",  "\"2024-01-01T00:00:00Z\"", "\" 2024-01-01\"", "\"2024\\u002d01-02\"",
        "20240101",       "null",         "{\"day\":\"2024-01-01\"}", "\"\"",
    };
    size_t n_refs = sizeof(refs) / sizeof(refs[0]), n_days = sizeof(days) / sizeof(days[0]);
    size_t n = n_refs > n_days ? n_refs : n_days;
    for (size_t i = 0; i < n; i++) {
        const char *ref = refs[i % n_refs], *day = days[i % n_days];
        char *j = sk_asprintf("{\"id\":\"%s\",\"child\":%s,\"placedAt\":%s,\"startDate\":%s,"
                              "\"endDate\":%s}",
                              uuid(200 + (int)i), ref, refs[(i + 1) % n_refs], day,
                              days[(i + 3) % n_days]);
        add_doc("placements", j, 0, (int64_t)i);
        free(j);
    }
    /* a document without any of the fields */
    char *j = sk_asprintf("{\"id\":\"%s\"}", uuid(199));
    add_doc("placements", j, 0, (int64_t)n);
    free(j);
    apply_ok();
    assert_query(PLACEMENTS_DISAGREE, "0");
    /* ... and not by chance: some of each are set, some not */
    assert_query("SELECT count(child_id) || '/' || count(start_date) || '/' || count(*) FROM "
                 "placements",
                 "5/6/21");
    assert_query("SELECT count(*) FROM placements WHERE child_id = "
                 "'00000000-0000-4000-8000-0000000000ab'",
                 "5");
    assert_query("SELECT string_agg(start_date::text, ',' ORDER BY start_date) FROM placements",
                 "0001-01-01,2000-02-29,2024-01-02,2024-02-29,2024-12-31,9999-12-31");
}

/*
 * A schema before migration 4 (references and days generated from doc) is
 * migrated on open: the stored values stay, and the sink writes them from
 * then on.
 */
Test(postgres_sink, migration_4_keeps_the_references_and_days_of_an_older_schema)
{
    open_sink("inc-a");
    add_school();
    apply_ok();
    skt_sink_drop(&sink);
    char *before = query("SELECT string_agg(concat_ws('|', id, child_id, placed_at, start_date), "
                         "',' ORDER BY id) FROM placements");
    PGresult *res = PQexec(
        admin,
        "ALTER TABLE placements DROP COLUMN child_id, DROP COLUMN start_date, "
        "ADD COLUMN child_id uuid GENERATED ALWAYS AS (sk_uuid(doc->'child'->>'id')) STORED, "
        "ADD COLUMN start_date date GENERATED ALWAYS AS (sk_date(doc->>'startDate')) STORED; "
        "DELETE FROM skolsync_migrations WHERE version = 4");
    cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQerrorMessage(admin));
    PQclear(res);
    assert_query(GENERATED_REFS_AND_DAYS, "2");

    open_sink("inc-a");
    assert_query("SELECT string_agg(version::text, ',' ORDER BY version) FROM skolsync_migrations",
                 "1,2,3,4");
    assert_query(GENERATED_REFS_AND_DAYS, "0");
    assert_query("SELECT string_agg(concat_ws('|', id, child_id, placed_at, start_date), ',' "
                 "ORDER BY id) FROM placements",
                 before);
    cr_assert(strstr(before, uuid(PERSON)), "%s", before);
    skt_recs_clear(&batch);
    char *j = sk_asprintf("{\"id\":\"%s\",\"child\":{\"id\":\"%s\"},\"startDate\":\"2025-08-18\"}",
                          uuid(300), uuid(PERSON));
    add_doc("placements", j, 0, 100);
    free(j);
    apply_ok();
    assert_query(PLACEMENTS_DISAGREE, "0");
    char *sql = sk_asprintf("SELECT start_date FROM placements WHERE child_id = '%s' AND id = '%s'",
                            uuid(PERSON), uuid(300));
    assert_query(sql, "2025-08-18");
    free(sql);
    free(before);
}

Test(postgres_sink, records_without_modified_then_with_apply_in_order)
{
    open_sink("inc-a");
    add_person(1, "2024-05-01T12:00:00Z", "Stored", 0, 0);
    apply_ok();
    /* One by one: the first (no meta.modified) overwrites, then the second is newer than it. */
    skt_recs_clear(&batch);
    char *j = sk_asprintf("{\"id\":\"%s\",\"givenName\":\"NoMeta\"}", uuid(1));
    add_doc("persons", j, 0, 1);
    free(j);
    add_person(1, "2024-04-01T12:00:00Z", "AfterNoMeta", 0, 2);
    apply_ok();
    assert_given_name(1, "AfterNoMeta");
}

Test(postgres_sink, keep_mode_marks_deleted_rows)
{
    open_sink_with("inc-a", "deleted_rows: keep\n");
    add_person(1, "2024-05-01T12:00:00Z", "A", 0, 0);
    apply_ok();
    skt_recs_clear(&batch);
    add_tombstone("persons", 1, 0, 1);
    add_tombstone("persons", 2, 0, 2);
    apply_ok();
    assert_query("SELECT count(*) FROM persons", "1");
    assert_query("SELECT given_name FROM persons WHERE deleted_at IS NOT NULL", "A");
    /* The same document again revives it. */
    skt_recs_clear(&batch);
    add_person(1, "2024-05-01T12:00:00Z", "A", 0, 3);
    apply_ok();
    assert_query("SELECT count(*) FROM persons WHERE deleted_at IS NULL", "1");
    /* A person protected_identities: skip withholds (it became protected) leaves no row:
     * before, keep mode kept the whole last document, names and all, with deleted_at. */
    skt_recs_clear(&batch);
    add_tombstone("persons", 1, 0, 4);
    batch.v[batch.n - 1].withheld = true;
    apply_ok();
    assert_query("SELECT count(*) FROM persons", "0");
}

Test(postgres_sink, offsets_are_stored_per_partition_and_incarnation)
{
    open_sink("inc-a");
    cr_assert_eq(stored_offset(0), -1);
    add_person(1, "2024-05-01T12:00:00Z", "A", 0, 41);
    add_person(2, "2024-05-01T12:00:00Z", "B", 1, 7);
    add_person(3, "2024-05-01T12:00:00Z", "C", 0, 42);
    apply_ok();
    cr_assert_eq(stored_offset(0), 43);
    cr_assert_eq(stored_offset(1), 8);
    assert_query("SELECT count(*) FROM skolsync_offsets WHERE incarnation = 'inc-a'", "2");

    /* mark_offsets moves them without rows. */
    struct sk_offsets marks = {0};
    sk_offsets_add(&marks, TOPIC, 1, 20);
    struct sk_error err = {0};
    cr_assert_eq(sink->ops->mark_offsets(sink, &marks, &err), 0, "%s", err.msg);
    sk_offsets_free(&marks);
    cr_assert_eq(stored_offset(1), 20);

    /* Another broker incarnation does not see them. */
    skt_sink_drop(&sink);
    open_sink("inc-b");
    cr_assert_eq(stored_offset(0), -1);
    cr_assert_eq(stored_offset(1), -1);
    skt_recs_clear(&batch);
    add_person(4, "2024-05-01T12:00:00Z", "D", 0, 3);
    apply_ok();
    cr_assert_eq(stored_offset(0), 4);
    skt_sink_drop(&sink);
    open_sink("inc-a");
    cr_assert_eq(stored_offset(0), -1); /* taken over by inc-b */
    cr_assert_eq(stored_offset(1), 20);
}

Test(postgres_sink, a_poison_record_is_rejected_and_the_rest_applied)
{
    open_sink("inc-a");
    add_person(1, "2024-05-01T12:00:00Z", "Good", 0, 0);
    /* Not UTF-8: 22021. The codec refuses such text, so the bytes are put into
     * the decoded document as a record from another producer would bring them. */
    add_person(2, "2024-05-01T12:00:00Z", "Badx", 0, 1);
    char *bad = strstr((char *)batch.v[batch.n - 1].json, "Badx");
    cr_assert_not_null(bad);
    bad[3] = (char)0xff;
    add_person(3, "2024-05-01T12:00:00Z", "Fine", 0, 2);
    /* A name too long for its btree index: 54000. */
    struct buf_big {
        char text[12000];
    } *big = sk_malloc(sizeof(*big));
    unsigned seed = 7;
    for (size_t i = 0; i < sizeof(big->text) - 1; i++) {
        seed = seed * 1103515245u + 12345u;
        big->text[i] = (char)('a' + (seed >> 16) % 26);
    }
    big->text[sizeof(big->text) - 1] = '\0';
    char *j = sk_asprintf("{\"id\":\"%s\",\"meta\":{\"modified\":\"2024-05-01T12:00:00Z\"},"
                          "\"displayName\":\"%s\",\"organisationType\":\"Skola\"}",
                          uuid(4), big->text);
    add_doc("organisations", j, 0, 3);
    free(j);
    free(big);
    add_person(5, "2024-05-01T12:00:00Z", "Last", 0, 4);
    struct sk_error err = {0};
    uint64_t trips0 = postgres_sink_round_trips(sink);
    cr_assert_eq(skt_recs_apply(sink, &batch, &err), 0, "%s", err.msg);
    cr_log_info("poison batch: %" PRIu64 " statements", postgres_sink_round_trips(sink) - trips0);
    cr_assert_eq(batch.out[0].kind, SK_APPLIED);
    cr_assert_eq(batch.out[1].kind, SK_REJECTED);
    cr_assert_eq(batch.out[1].err.cls, SK_ERR_PERMANENT);
    cr_assert(strstr(batch.out[1].err.msg, "22021"), "%s", batch.out[1].err.msg);
    cr_assert_eq(batch.out[2].kind, SK_APPLIED);
    cr_assert_eq(batch.out[3].kind, SK_REJECTED);
    cr_assert(strstr(batch.out[3].err.msg, "54000"), "%s", batch.out[3].err.msg);
    cr_assert_eq(batch.out[4].kind, SK_APPLIED);
    assert_query("SELECT string_agg(given_name, ',' ORDER BY id) FROM persons", "Good,Fine,Last");
    assert_query("SELECT count(*) FROM organisations", "0");
    cr_assert_eq(stored_offset(0), 5); /* the rejected count: the driver dead-letters them */
}

Test(postgres_sink, unknown_types_and_bad_keys_are_rejected_without_the_database)
{
    open_sink("inc-a");
    add_person(1, "2024-05-01T12:00:00Z", "A", 0, 0);
    struct sk_record *r =
        add_doc("persons", "{\"id\":\"00000000-0000-4000-8000-000000000002\"}", 0, 1);
    snprintf(r->key, sizeof(r->key), "not-a-uuid");
    struct sk_error err = {0};
    cr_assert_eq(skt_recs_apply(sink, &batch, &err), 0, "%s", err.msg);
    cr_assert_eq(batch.out[0].kind, SK_APPLIED);
    cr_assert_eq(batch.out[1].kind, SK_REJECTED);
    assert_query("SELECT count(*) FROM persons", "1");
}

/* Kills the sink's server process from the admin connection. */
static void terminate_sink_backend(void)
{
    char *sql = sk_asprintf("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = 'skolsync/%s'",
                            schema);
    assert_query(sql, "t");
    free(sql);
    sql = sk_asprintf("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                      "'skolsync/%s'",
                      schema);
    for (int i = 0; i < 100; i++) {
        char *n = query(sql);
        bool gone = n && strcmp(n, "0") == 0;
        free(n);
        if (gone)
            break;
        sk_sleep_ms(20);
    }
    free(sql);
}

Test(postgres_sink, a_lost_connection_is_retriable_and_commits_nothing)
{
    open_sink("inc-a");
    add_person(1, "2024-05-01T12:00:00Z", "A", 0, 0);
    apply_ok();
    terminate_sink_backend();

    skt_recs_clear(&batch);
    add_person(2, "2024-05-01T12:00:00Z", "B", 0, 1);
    add_person(3, "2024-05-01T12:00:00Z", "C", 0, 2);
    struct sk_error err = {0};
    cr_assert_eq(skt_recs_apply(sink, &batch, &err), -1);
    cr_assert_eq(err.cls, SK_ERR_RETRIABLE, "%s", err.msg);
    cr_assert_eq(batch.out[0].kind, SK_RETRY);
    cr_assert_eq(batch.out[1].kind, SK_RETRY);
    cr_log_info("lost connection: %s", err.msg);
    assert_query("SELECT count(*) FROM persons", "1");
    assert_query("SELECT next_offset FROM skolsync_offsets", "1");

    /* The next apply reconnects and succeeds. */
    apply_ok();
    assert_query("SELECT count(*) FROM persons", "3");
    cr_assert_eq(stored_offset(0), 3);
}

Test(postgres_sink, a_bulk_batch_of_2000_persons_takes_a_few_statements)
{
    open_sink_with("inc-a", "connections: 1\n");
    for (int i = 0; i < 2000; i++) {
        char *j = sk_asprintf(
            "{\"id\":\"%s\",\"meta\":{\"modified\":\"2024-05-01T12:00:00Z\"},"
            "\"givenName\":\"Elev%d\",\"familyName\":\"Efternamn%d\","
            "\"eduPersonPrincipalNames\":[\"elev%d@skola.se\"],\"birthDate\":\"2012-03-04\","
            "\"enrolments\":[{\"enroledAt\":{\"id\":\"%s\"},\"schoolType\":\"GR\","
            "\"startDate\":\"2020-08-15\"}]}",
            uuid(1000 + i), i, i, i, uuid(ORG_S));
        add_doc("persons", j, i % 3, i / 3);
        free(j);
    }
    uint64_t trips0 = postgres_sink_round_trips(sink);
    int64_t t0 = sk_mono_ms();
    apply_ok();
    int64_t ms = sk_mono_ms() - t0;
    uint64_t trips = postgres_sink_round_trips(sink) - trips0;
    cr_log_info("2000 persons: %" PRIu64 " statements, %" PRId64 " ms", trips, ms);
    /* The first batch on a connection also prepares the upsert and the offsets' statement. */
    cr_assert_leq(trips, 6, "BEGIN, one upsert, the offsets, COMMIT; got %" PRIu64, trips);
    assert_query("SELECT count(*) FROM persons", "2000");
    assert_query("SELECT count(*) FROM persons WHERE enrolment_school IS NOT NULL", "2000");
    cr_assert_eq(stored_offset(2), 666);

    /* The replay is as cheap and changes nothing. */
    trips0 = postgres_sink_round_trips(sink);
    apply_ok();
    cr_assert_leq(postgres_sink_round_trips(sink) - trips0, 4);
    assert_query("SELECT count(*) FROM persons", "2000");
}

/* ---- parallel apply: a large batch over several connections ------------------ */

/* Person n of a bulk batch: partition n % 3, given name Pn (or given). */
static void add_bulk_person_at(int n, const char *given, const char *modified, int64_t offset)
{
    char *name = given ? sk_strdup(given) : sk_asprintf("P%d", n);
    char *j = sk_asprintf("{\"id\":\"%s\",\"meta\":{\"modified\":\"%s\"},"
                          "\"givenName\":\"%s\",\"familyName\":\"F\",\"enrolments\":[{"
                          "\"enroledAt\":{\"id\":\"%s\"},\"startDate\":\"2020-08-15\"}]}",
                          uuid(1000 + n), modified, name, uuid(ORG_S));
    add_doc("persons", j, n % 3, offset);
    free(j);
    free(name);
}

static void add_bulk_person(int n, const char *given, int64_t offset)
{
    add_bulk_person_at(n, given, "2024-05-01T12:00:00Z", offset);
}

/* The sink's connections to the server now (the lanes keep theirs until trimmed). */
static int sink_connections(void)
{
    char *sql = sk_asprintf("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                            "'skolsync/%s'",
                            schema);
    char *n = query(sql);
    int count = n ? atoi(n) : -1;
    free(n);
    free(sql);
    return count;
}

/* What the rows hold, without the times the server sets (updated_at). */
#define PERSONS_CONTENT                                                                            \
    "SELECT string_agg(concat_ws('|', id, doc::text, modified, given_name, enrolment_school, "     \
    "deleted_at), E'\n' ORDER BY id) FROM persons"

/*
 * A batch of 1 000 records (900 ids: updates of the same id, older ones the
 * guard must drop, tombstones, a delete and re-create) over one connection,
 * then over three, into fresh schemas: the same rows and offsets.
 */
Test(postgres_sink, a_large_batch_over_three_connections_ends_as_over_one)
{
    char *content[2];
    for (int round = 0; round < 2; round++) {
        open_sink_with("inc-a", round ? "connections: 3\n" : "connections: 1\n");
        skt_recs_clear(&batch);
        int64_t off[3] = {0};
        for (int i = 0; i < 900; i++)
            add_bulk_person(i, NULL, off[i % 3]++);
        for (int i = 0; i < 100; i++) {
            int n = i * 7 % 900;
            if (i % 4 == 0) {
                add_tombstone("persons", 1000 + n, n % 3, off[n % 3]++);
            } else {
                /* i % 4 == 1: older, the guard keeps the first */
                char *given = sk_asprintf("Again%d", i);
                add_bulk_person_at(n, given,
                                   i % 4 == 1 ? "2024-04-01T12:00:00Z" : "2024-06-01T12:00:00Z",
                                   off[n % 3]++);
                free(given);
            }
        }
        /* a tombstone and then the same id again: the row ends re-created */
        add_tombstone("persons", 1000 + 5, 5 % 3, off[5 % 3]++);
        add_bulk_person(5, "Recreated", off[5 % 3]++);
        apply_ok();
        if (round)
            cr_assert_eq(sink_connections(), 3, "the batch was not spread over 3 connections");
        content[round] = query(PERSONS_CONTENT);
        cr_assert_eq(stored_offset(0), off[0]);
        cr_assert_eq(stored_offset(1), off[1]);
        cr_assert_eq(stored_offset(2), off[2]);
        assert_given_name(1005, "Recreated");
        skt_sink_drop(&sink);
        char *sql = sk_asprintf("DROP SCHEMA %s CASCADE", schema);
        PQclear(PQexec(admin, sql));
        free(sql);
    }
    cr_assert_not_null(content[0]);
    cr_assert_str_eq(content[1], content[0]);
    free(content[0]);
    free(content[1]);
}

/*
 * The offsets commit last: a lane whose COMMIT fails (a deferred trigger
 * refuses one row at commit) leaves the offsets where they were, whatever
 * the lanes before it committed; the batch applied again then completes it
 * without touching the rows already there.
 */
Test(postgres_sink, a_lane_that_cannot_commit_leaves_the_offsets_unstored)
{
    open_sink_with("inc-a", "connections: 3\n");
    char *sql = sk_asprintf(
        "CREATE FUNCTION %s.refuse() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN "
        "RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'serialization_failure'; END$$; "
        "CREATE CONSTRAINT TRIGGER refuse AFTER INSERT OR UPDATE ON %s.persons DEFERRABLE "
        "INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.given_name = 'RefusedAtCommit') "
        "EXECUTE FUNCTION %s.refuse()",
        schema, schema, schema);
    admin_exec(sql);
    /* 3 × 128 ids: three connections; id k goes to connection k % 3. Id 2
     * is the third lane's: the second lane commits before it. */
    for (int i = 0; i < 384; i++)
        add_bulk_person(i, i == 2 ? "RefusedAtCommit" : NULL, i / 3);
    struct sk_error err = {0};
    cr_assert_eq(skt_recs_apply(sink, &batch, &err), -1, "the batch was applied");
    cr_assert_eq(err.cls, SK_ERR_RETRIABLE, "%s", err.msg);
    cr_assert(strstr(err.msg, "refused at commit"), "%s", err.msg);
    for (size_t i = 0; i < batch.n; i++)
        cr_assert_eq(batch.out[i].kind, SK_RETRY, "record %zu: %d", i, batch.out[i].kind);
    for (int p = 0; p < 3; p++)
        cr_assert_eq(stored_offset(p), -1, "partition %d: offsets stored before every row", p);
    assert_query("SELECT count(*) FROM persons", "128"); /* the second lane's, committed */
    char *before = query("SELECT string_agg(updated_at::text, ',' ORDER BY id) FROM persons");

    PQclear(PQexec(admin, "DROP TRIGGER refuse ON persons"));
    apply_ok();
    assert_query("SELECT count(*) FROM persons", "384");
    for (int p = 0; p < 3; p++)
        cr_assert_eq(stored_offset(p), 128);
    sql = sk_asprintf("SELECT string_agg(updated_at::text, ',' ORDER BY id) FROM persons "
                      "WHERE (substr(id::text, 25)::int - 1000) %% 3 = 1");
    char *after = query(sql);
    free(sql);
    cr_assert_str_eq(after, before, "the rows already committed were written again");
    free(before);
    free(after);
}

/* A record the server refuses in one lane: every lane rolls back, and the
 * batch goes one by one on the sink's connection (the rest applied). */
Test(postgres_sink, a_record_refused_in_a_lane_is_rejected_and_the_rest_applied)
{
    open_sink_with("inc-a", "connections: 2\n");
    for (int i = 0; i < 300; i++)
        add_bulk_person(i, i == 1 ? "Badx" : NULL, i / 3);
    char *bad = strstr((char *)batch.v[1].json, "Badx");
    cr_assert_not_null(bad);
    bad[3] = (char)0xff; /* not UTF-8: 22021, in the second lane's share */
    struct sk_error err = {0};
    cr_assert_eq(skt_recs_apply(sink, &batch, &err), 0, "%s", err.msg);
    for (size_t i = 0; i < batch.n; i++)
        cr_assert_eq(batch.out[i].kind, i == 1 ? SK_REJECTED : SK_APPLIED, "record %zu", i);
    cr_assert(strstr(batch.out[1].err.msg, "22021"), "%s", batch.out[1].err.msg);
    assert_query("SELECT count(*) FROM persons", "299");
    cr_assert_eq(stored_offset(1), 100);
}

/* The sink's connections, once the server has seen the closed ones go. */
static int sink_connections_settled(int expected)
{
    int n = sink_connections();
    for (int i = 0; i < 100 && n != expected; i++) {
        sk_sleep_ms(20);
        n = sink_connections();
    }
    return n;
}

/* A lone record takes one connection, and a trim after it keeps it; trimming
 * after a bulk load closes the lanes, and the main connection too (libpq kept
 * its output buffer as large as the bulk's statements): the next batch
 * connects again. */
Test(postgres_sink, small_batches_use_one_connection_and_trim_closes_the_others)
{
    open_sink_with("inc-a", "connections: 4\n");
    add_person(1, "2024-05-01T12:00:00Z", "A", 0, 0);
    apply_ok();
    cr_assert_eq(sink_connections(), 1);
    sink->ops->trim(sink);
    cr_assert_eq(sink_connections_settled(1), 1, "a trim after one record closed the connection");
    skt_recs_clear(&batch);
    for (int i = 0; i < 512; i++)
        add_bulk_person(i, NULL, 1 + i / 3);
    apply_ok();
    cr_assert_eq(sink_connections(), 4);
    sink->ops->trim(sink);
    cr_assert_eq(sink_connections_settled(0), 0);
    assert_query("SELECT count(*) FROM persons", "513");
    skt_recs_clear(&batch);
    add_person(1, "2024-05-02T12:00:00Z", "B", 0, 200);
    apply_ok();
    cr_assert_eq(sink_connections(), 1);
    assert_given_name(1, "B");
    cr_assert_eq(stored_offset(0), 201);
}

/* A server that allows the sink one connection (the role's CONNECTION LIMIT
 * 1, as a DBA may set it): a large batch goes over that one, not into
 * retries that can never succeed. */
Test(postgres_sink, a_refused_extra_connection_applies_over_the_ones_there_are)
{
    char role[64];
    snprintf(role, sizeof(role), "r_%s", schema);
    char *sql = sk_asprintf("CREATE ROLE %s LOGIN CONNECTION LIMIT 1; "
                            "CREATE SCHEMA %s AUTHORIZATION %s",
                            role, schema, role);
    admin_exec(sql);
    /* the test's conninfo with the limited role instead of its user */
    const char *u = strstr(conninfo, "user=");
    cr_assert_not_null(u, "SK_TEST_PG has no user=: %s", conninfo);
    const char *after = strchr(u, ' ');
    char *limited = sk_asprintf("%.*suser=%s%s", (int)(u - conninfo), conninfo, role,
                                after ? after : "");
    char *yaml = sk_asprintf("conninfo: '%s'\nschema: '%s'\nconnect_timeout: 5s\nconnections: 3\n",
                             limited, schema);
    struct sk_error err = {0};
    cr_assert_eq(open_with(yaml, "inc-a", &err), 0, "%s", err.msg);
    for (int i = 0; i < 384; i++)
        add_bulk_person(i, NULL, i / 3);
    apply_ok();
    assert_query("SELECT count(*) FROM persons", "384");
    for (int p = 0; p < 3; p++)
        cr_assert_eq(stored_offset(p), 128);
    cr_assert_eq(sink_connections(), 1);
    /* and the next batch too */
    skt_recs_clear(&batch);
    for (int i = 384; i < 768; i++)
        add_bulk_person(i, NULL, i / 3);
    apply_ok();
    assert_query("SELECT count(*) FROM persons", "768");
    skt_sink_drop(&sink);
    sql = sk_asprintf("DROP SCHEMA %s CASCADE; DROP ROLE %s", schema, role);
    PQclear(PQexec(admin, sql));
    free(sql);
    free(yaml);
    free(limited);
}

Test(postgres_sink, statements_lost_to_a_pooler_are_sent_unprepared_from_then_on)
{
    open_sink("inc-a");
    add_person(1, "2024-05-01T12:00:00Z", "A", 0, 0);
    apply_ok();
    /* What PgBouncer in transaction mode does: the next batch meets a
     * server session without the sink's prepared statements. */
    PGresult *res = PQexec(postgres_sink_connection(sink), "DEALLOCATE ALL");
    cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    skt_recs_clear(&batch);
    add_person(2, "2024-05-01T12:00:00Z", "B", 0, 1);
    struct sk_error err = {0};
    cr_assert_eq(skt_recs_apply(sink, &batch, &err), -1);
    cr_assert_eq(err.cls, SK_ERR_RETRIABLE, "%s", err.msg);
    assert_query("SELECT count(*) FROM persons", "1");
    /* The retry goes through, and so do later batches, unprepared. */
    apply_ok();
    PQclear(PQexec(postgres_sink_connection(sink), "DEALLOCATE ALL"));
    skt_recs_clear(&batch);
    add_person(3, "2024-05-01T12:00:00Z", "C", 0, 2);
    apply_ok();
    assert_query("SELECT count(*) FROM persons", "3");
    cr_assert_eq(stored_offset(0), 3);
}

/* A person with the given enrolments (a JSON array or other value). */
static void add_enrolled(int n, const char *enrolments)
{
    char *j = sk_asprintf("{\"id\":\"%s\",\"meta\":{\"modified\":\"2024-05-01T12:00:00Z\"},"
                          "\"givenName\":\"P%d\",\"enrolments\":%s}",
                          uuid(n), n, enrolments);
    add_doc("persons", j, 0, n);
    free(j);
}

Test(postgres_sink, enrolment_school_is_what_the_sql_function_says)
{
    open_sink("inc-a");
    char *today = query("SELECT to_char(current_date, 'YYYY-MM-DD')");
    const char *school = "\"enroledAt\":{\"id\":\"00000000-0000-4000-8000-0000000000AB\"}";
    const char *other = "\"enroledAt\":{\"id\":\"00000000-0000-4000-8000-000000000077\"}";
    char *e[16];
    int n = 0;
    /* not an array; an empty one; a non-object first, then a match (upper case id) */
    e[n++] = sk_asprintf("{%s}", school);
    e[n++] = sk_asprintf("[]");
    e[n++] = sk_asprintf("[\"x\",{%s,\"startDate\":\"2001-01-01\"}]", school);
    /* cancelled true and "true" are skipped, false and "yes" are not */
    e[n++] = sk_asprintf("[{%s,\"cancelled\":true},{%s,\"cancelled\":\"true\"},"
                         "{%s,\"cancelled\":false}]",
                         other, other, school);
    e[n++] = sk_asprintf("[{%s,\"cancelled\":\"yes\"},{%s}]", school, other);
    /* today is inside [startDate, endDate]; tomorrow and yesterday are not */
    e[n++] = sk_asprintf("[{%s,\"startDate\":\"2999-01-01\"},{%s,\"endDate\":\"2001-01-01\"},"
                         "{%s,\"startDate\":\"%s\",\"endDate\":\"%s\"}]",
                         other, other, school, today, today);
    /* dates that are no dates count as absent: Feb 30, year 0, a number, a date-time */
    e[n++] = sk_asprintf("[{%s,\"startDate\":\"2999-02-30\",\"endDate\":\"0000-01-01\"}]", school);
    e[n++] =
        sk_asprintf("[{%s,\"startDate\":20990101,\"endDate\":\"2001-01-01T00:00:00Z\"}]", school);
    e[n++] = sk_asprintf("[{%s,\"startDate\":\"2024-02-29\",\"endDate\":\"2023-02-29\"}]", school);
    /* the first match wins even when its id is no UUID, or missing */
    e[n++] = sk_asprintf("[{\"enroledAt\":{\"id\":\"not-a-uuid\"}},{%s}]", school);
    e[n++] = sk_asprintf("[{\"enroledAt\":\"%s\"},{%s}]", uuid(9), school);
    e[n++] = sk_asprintf("[{\"schoolType\":\"GR\"},{%s}]", school);
    for (int i = 0; i < n; i++)
        add_enrolled(100 + i, e[i]);
    apply_ok();
    char *sql = sk_asprintf("SELECT count(*) FROM persons WHERE enrolment_school IS DISTINCT FROM "
                            "%s.sk_enrolment_school(doc, current_date)",
                            schema);
    assert_query(sql, "0");
    free(sql);
    /* ... and not by chance: which ones have the school */
    assert_query("SELECT string_agg(doc->>'givenName', ',' ORDER BY doc->>'givenName') FROM "
                 "persons WHERE enrolment_school = '00000000-0000-4000-8000-0000000000ab'",
                 "P102,P103,P104,P105,P106,P107,P108");
    assert_query("SELECT count(*) FROM persons WHERE enrolment_school IS NULL", "5");
    for (int i = 0; i < n; i++)
        free(e[i]);
    free(today);
}

Test(postgres_sink, the_upsert_calls_no_sql_function_for_enrolment_school)
{
    open_sink("inc-a");
    /* The function stays in the schema for queries; the sink must not need it. */
    char *sql = sk_asprintf("CREATE OR REPLACE FUNCTION %s.sk_enrolment_school(doc jsonb, on_day "
                            "date) RETURNS uuid LANGUAGE plpgsql AS "
                            "$$BEGIN RAISE EXCEPTION 'called'; END$$",
                            schema);
    PQclear(PQexec(admin, sql));
    free(sql);
    add_school();
    apply_ok();
    char *want = sk_asprintf("%s", uuid(ORG_S));
    sql = sk_asprintf("SELECT enrolment_school FROM persons WHERE id = '%s'", uuid(PERSON));
    assert_query(sql, want);
    free(sql);
    free(want);
}

/* glibc's heap in use: the arenas' and the mmapped chunks'. */
#ifdef __SANITIZE_ADDRESS__
/* AddressSanitizer's allocator replaces glibc's, whose mallinfo2 then says 0:
 * ask the sanitizer (libasan exports it; gcc ships no header for it). */
size_t __sanitizer_get_current_allocated_bytes(void);
static size_t heap_in_use(void)
{
    return __sanitizer_get_current_allocated_bytes();
}
#else
static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}
#endif

/* A sink that caught up gives back its batch's JSON arrays and plans (sink
 * op trim), and applies the next batch as before. */
Test(postgres_sink, trim_gives_the_batch_arrays_back_and_the_sink_goes_on)
{
    open_sink("inc-a");
    cr_assert_not_null(sink->ops->trim);
    char given[400];
    memset(given, 'x', sizeof(given) - 1);
    given[sizeof(given) - 1] = '\0';
    for (int i = 0; i < 2000; i++)
        add_person(1000 + i, "2024-05-01T12:00:00Z", given, 0, i);
    apply_ok();
    skt_recs_clear(&batch);
    size_t before = heap_in_use();
    sink->ops->trim(sink);
    size_t after = heap_in_use();
    cr_assert_gt(before - after, 1024 * 1024, "heap in use %zu -> %zu bytes", before, after);
    add_person(1000, "2024-05-02T12:00:00Z", "Anne", 0, 2000);
    apply_ok();
    assert_given_name(1000, "Anne");
    cr_assert_eq(stored_offset(0), 2001);
}

/*
 * What a bulk format could mangle (a COPY text field, a JSON or array
 * literal): control characters, backslash sequences, text that is not ASCII.
 */
Test(postgres_sink, documents_and_sources_are_stored_byte_for_byte)
{
    static const char name[] = "tab\there, line\nfeed, CR\r\nLF, back\\slash, \\t \\N \\. "
                               "\"quoted\" 'single' \x01 Åby skola, € and 𝄞\\";
    open_sink("inc-a");
    add_named("groups", 1, "2024-05-01T12:00:00Z", name, 0);
    struct sk_record *r = add_named("groups", 2, "2024-05-01T12:00:00Z", "B", 1);
    r->topic = "odd\ttopic\\x\"";
    apply_ok();
    assert_doc_stored("groups", &batch.v[0]);
    assert_doc_stored("groups", &batch.v[1]);
    assert_display_name("groups", 1, name);
    char *sql = sk_asprintf("SELECT source FROM groups WHERE id = '%s'", uuid(2));
    assert_query(sql, "odd\ttopic\\x\"[0]@1");
    free(sql);

    /* The replay compares equal documents as equal: nothing changes. */
    char *before = table_content("groups");
    apply_ok();
    char *after = table_content("groups");
    cr_assert_str_eq(after, before);
    free(before);
    free(after);
}

/* Rows with and without a stored row, stale, newer and re-created, in one batch. */
Test(postgres_sink, new_and_existing_rows_in_one_batch)
{
    open_sink("inc-a");
    add_named("groups", 1, "2024-05-01T12:00:00Z", "One", 0);
    add_named("groups", 2, "2024-05-01T12:00:00Z", "Two", 1);
    add_named("groups", 6, "2024-05-01T12:00:00Z", "Six", 2);
    apply_ok();
    skt_recs_clear(&batch);
    add_named("groups", 1, "2024-05-01T11:00:00Z", "Stale", 3); /* older: nothing */
    add_named("groups", 2, "2024-05-01T13:00:00Z", "Two b", 4); /* newer: updated */
    add_named("groups", 3, "2024-05-01T12:00:00Z", "Three", 5); /* new */
    add_tombstone("groups", 6, 0, 6);                           /* deleted, then */
    add_named("groups", 6, "2024-04-01T12:00:00Z", "Six b", 7); /* new again, though older */
    add_tombstone("groups", 7, 0, 8);                           /* never existed */
    apply_ok();
    assert_display_name("groups", 1, "One");
    assert_display_name("groups", 2, "Two b");
    assert_display_name("groups", 3, "Three");
    assert_display_name("groups", 6, "Six b");
    assert_query("SELECT count(*) FROM groups", "4");
    cr_assert_eq(stored_offset(0), 9);
}

Test(postgres_sink, target_names_the_database_not_the_password)
{
    char *yaml = sk_asprintf("conninfo: '%s password=hunter2'\nschema: %s\n", conninfo, schema);
    struct sk_error err = {0};
    cr_assert_eq(open_with(yaml, "inc-a", &err), 0, "%s", err.msg);
    free(yaml);
    const char *target = sink->ops->target(sink);
    cr_log_info("target: %s", target);
    cr_assert(strstr(target, "postgresql "), "%s", target);
    cr_assert(strstr(target, schema), "%s", target);
    cr_assert(strstr(target, "skolsync_test") || strstr(target, "/"), "%s", target);
    cr_assert_null(strstr(target, "hunter2"), "%s", target);
}

Test(postgres_sink, an_unreachable_server_fails_open_without_the_password)
{
    char *yaml = sk_asprintf("conninfo: 'host=127.0.0.1 port=1 dbname=x password=hunter2'\n"
                             "schema: %s\nconnect_timeout: 2s\n",
                             schema);
    struct sk_error err = {0};
    cr_assert_eq(open_with(yaml, "inc-a", &err), -1);
    free(yaml);
    cr_assert_eq(err.cls, SK_ERR_RETRIABLE, "%s", err.msg);
    cr_assert_null(strstr(err.msg, "hunter2"), "%s", err.msg);
    cr_log_info("unreachable: %s", err.msg);
}

Test(postgres_sink, options_are_validated)
{
    const char *bad[] = {"schema: x\n", /* conninfo missing */
                         "conninfo: 'dbname=x'\ndeleted_rows: purge\n",
                         "conninfo: 'dbname=x'\nconnect_timeout: soon\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct sk_config_errors errs = {0};
        struct sk_cnode *root = sk_config_load_string(bad[i], strlen(bad[i]), "t.yaml", &errs);
        void *conf = sk_calloc(1, ops->conf_size);
        cr_assert_gt(sk_options_apply(ops->options, root, conf, &errs), 0, "%s", bad[i]);
        sk_options_free(ops->options, conf);
        free(conf);
        sk_config_errors_free(&errs);
        sk_cnode_free(root);
    }
}
