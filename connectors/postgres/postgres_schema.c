/*
 * postgres_schema.c: the postgres-sink's tables as data (typed columns
 * generated from doc, the instants the sink sends, their indexes), the
 * upsert built from them, and the migrations that create and evolve them
 * (skolsync_migrations), each in one transaction.
 *
 * Must never: run a migration twice, or work on a schema newer than
 * MIGRATION_LATEST (refused at open).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "buf.h"
#include "log.h"
#include "model.h"
#include "postgres_internal.h"
#include "util.h"

/* ---- the schema, as data -------------------------------------------------- */

/*
 * A typed column of a collection's table. expr is over `doc` and is a
 * GENERATED ALWAYS ... STORED column, so it can never disagree with doc;
 * "{s}" stands for the quoted schema. A `written` column depends on more
 * than doc (the day): the sink computes it (expr is what it computes) and
 * the upsert writes it.
 */
struct pg_column {
    const char *name;
    const char *type;
    const char *expr;
    const char *key; /* the doc field expr reads (TXT, REF, DAY, INSTANT), else NULL */
    bool indexed;
    bool written;
};

struct pg_table_spec {
    const char *collection;
    struct pg_column cols[PG_MAX_COLUMNS];
};

/* Each gives a column's expr and key. */
#define TXT(k) "(doc->>'" k "')", k
#define REF(k) "{s}.sk_uuid(doc->'" k "'->>'id')", k
#define DAY(k) "{s}.sk_date(doc->>'" k "')", k
#define INSTANT(k) "{s}.sk_instant(doc->>'" k "')", k

/*
 * Migration 1's typed columns: what people filter and join on (docs/ss12000-notes.md §2.3).
 * Frozen: a change here is a new migration, never an edit.
 */
static const struct pg_table_spec table_specs[] = {
    {"organisations",
     {{"display_name", "text", TXT("displayName"), true},
      {"organisation_type", "text", TXT("organisationType"), true},
      {"organisation_code", "text", TXT("organisationCode"), true},
      {"school_unit_code", "text", TXT("schoolUnitCode"), true},
      {"municipality_code", "text", TXT("municipalityCode"), false},
      {"parent_id", "uuid", REF("parentOrganisation"), true},
      {"start_date", "date", DAY("startDate"), false},
      {"end_date", "date", DAY("endDate"), false}}},
    {"programmes",
     {{"name", "text", TXT("name"), false},
      {"code", "text", TXT("code"), true},
      {"school_type", "text", TXT("schoolType"), false},
      {"parent_id", "uuid", REF("parentProgramme"), true}}},
    {"syllabuses",
     {{"subject_code", "text", TXT("subjectCode"), true},
      {"subject_name", "text", TXT("subjectName"), false},
      {"course_code", "text", TXT("courseCode"), true},
      {"school_type", "text", TXT("schoolType"), false}}},
    {"schoolUnitOfferings", {{"offered_at", "uuid", REF("offeredAt"), true}}},
    {"persons",
     {{"given_name", "text", TXT("givenName"), false},
      {"family_name", "text", TXT("familyName"), false}, /* indexed with given_name below */
      {"birth_date", "date", DAY("birthDate"), false},
      {"security_marking", "text", TXT("securityMarking"), false},
      {"person_status", "text", TXT("personStatus"), false},
      {"epp_name", "text", "(doc->'eduPersonPrincipalNames'->>0)", NULL, true},
      /* "Active" depends on the day, so this is no generated column. */
      {"enrolment_school", "uuid", "{s}.sk_enrolment_school(doc, current_date)", NULL, true,
       true}}},
    {"duties",
     {{"person_id", "uuid", REF("person"), true},
      {"duty_at", "uuid", REF("dutyAt"), true},
      {"duty_role", "text", TXT("dutyRole"), false},
      {"start_date", "date", DAY("startDate"), false},
      {"end_date", "date", DAY("endDate"), false}}},
    {"groups",
     {{"display_name", "text", TXT("displayName"), false},
      {"group_type", "text", TXT("groupType"), false},
      {"school_type", "text", TXT("schoolType"), false},
      {"organisation_id", "uuid", REF("organisation"), true},
      {"start_date", "date", DAY("startDate"), false},
      {"end_date", "date", DAY("endDate"), false}}},
    {"placements",
     {{"child_id", "uuid", REF("child"), true},
      {"placed_at", "uuid", REF("placedAt"), true},
      {"group_id", "uuid", REF("group"), true},
      {"start_date", "date", DAY("startDate"), false},
      {"end_date", "date", DAY("endDate"), false}}},
    {"activities",
     {{"display_name", "text", TXT("displayName"), false},
      {"activity_type", "text", TXT("activityType"), false},
      {"organisation_id", "uuid", REF("organisation"), true},
      {"syllabus_id", "uuid", REF("syllabus"), true},
      {"start_date", "date", DAY("startDate"), false},
      {"end_date", "date", DAY("endDate"), false}}},
    {"calendarEvents",
     {{"activity_id", "uuid", REF("activity"), true},
      {"start_time", "timestamptz", INSTANT("startTime"), true},
      {"end_time", "timestamptz", INSTANT("endTime"), false}}},
    {"attendances",
     {{"calendar_event_id", "uuid", REF("calendarEvent"), true},
      {"student_id", "uuid", REF("student"), true}}},
    {"attendanceEvents",
     {{"person_id", "uuid", REF("person"), true},
      {"group_id", "uuid", REF("group"), true},
      {"event_type", "text", TXT("eventType"), false},
      {"event_time", "timestamptz", INSTANT("time"), false}}},
    {"attendanceSchedules",
     {{"placement_id", "uuid", REF("placement"), true},
      {"start_date", "date", DAY("startDate"), false},
      {"end_date", "date", DAY("endDate"), false}}},
    {"absences",
     {{"student_id", "uuid", REF("student"), true},
      {"organisation_id", "uuid", REF("organisation"), true},
      {"absence_type", "text", TXT("type"), false},
      {"start_time", "timestamptz", INSTANT("startTime"), false},
      {"end_time", "timestamptz", INSTANT("endTime"), false}}},
    {"grades",
     {{"student_id", "uuid", REF("student"), true},
      {"organisation_id", "uuid", REF("organisation"), true},
      {"syllabus_id", "uuid", REF("syllabus"), false},
      {"grade_value", "text", TXT("gradeValue"), false},
      {"registered_date", "date", DAY("registeredDate"), false}}},
    {"studyPlans",
     {{"student_id", "uuid", REF("student"), true},
      {"start_date", "date", DAY("startDate"), false},
      {"end_date", "date", DAY("endDate"), false}}},
    {"resources",
     {{"owner_id", "uuid", REF("owner"), true},
      {"display_name", "text", TXT("displayName"), false}}},
    {"rooms",
     {{"owner_id", "uuid", REF("owner"), true},
      {"display_name", "text", TXT("displayName"), false}}},
};

/*
 * Migration 3: the typed instants of migration 1 that the sink writes from
 * then on (like modified in migration 2), with the doc field each is parsed
 * from. Frozen: a change is a new migration.
 */
static const struct {
    const char *collection, *column, *key;
} sent_instants[] = {
    {"calendarEvents", "start_time", "startTime"}, {"calendarEvents", "end_time", "endTime"},
    {"attendanceEvents", "event_time", "time"},    {"absences", "start_time", "startTime"},
    {"absences", "end_time", "endTime"},
};

/* Indexes over more than one column or over doc itself (migration 1, frozen). */
static const struct {
    const char *table, *name, *spec;
} extra_indexes[] = {
    {"persons", "persons_name_idx", "(family_name, given_name)"},
    /* "Which groups is this person in": doc->'groupMemberships' @> '[{"person":{"id":"…"}}]' */
    {"groups", "groups_members_idx", "USING gin ((doc->'groupMemberships') jsonb_path_ops)"},
};

/*
 * Helper functions of migration 1, used by the generated columns. They are
 * declared IMMUTABLE (a generated column requires it) and are: each admits
 * only text whose meaning does not depend on session settings (an ISO date,
 * an RFC 3339 date-time with an explicit offset, a UUID) and returns NULL for
 * anything else, so a malformed reference or date never fails a record.
 * sk_instant truncates fractions to µs, as sk_time_parse_us does.
 */
static const char migration1_functions[] =
    "CREATE FUNCTION {s}.sk_date(t text) RETURNS date LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$"
    " SELECT CASE WHEN t ~ '^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$'"
    " AND substr(t, 1, 4) <> '0000'"
    " AND extract(month FROM make_date(substr(t, 1, 4)::int, substr(t, 6, 2)::int, 1)"
    " + (substr(t, 9, 2)::int - 1)) = substr(t, 6, 2)::int"
    " THEN make_date(substr(t, 1, 4)::int, substr(t, 6, 2)::int, substr(t, 9, 2)::int) END"
    " $f$;\n"
    "CREATE FUNCTION {s}.sk_uuid(t text) RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$"
    " SELECT CASE WHEN t ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'"
    " THEN t::uuid END $f$;\n"
    "CREATE FUNCTION {s}.sk_instant(t text) RETURNS timestamptz LANGUAGE sql IMMUTABLE "
    "PARALLEL SAFE AS $f$"
    " SELECT CASE WHEN t ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:"
    "([0-5][0-9]|60)(\\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$'"
    " AND {s}.sk_date(substr(t, 1, 10)) IS NOT NULL"
    " THEN regexp_replace(t, '^(.{19}\\.[0-9]{6})[0-9]+', '\\1')::timestamptz END $f$;\n"
    /* The first enrolment not cancelled whose [startDate, endDate] holds on_day. */
    "CREATE FUNCTION {s}.sk_enrolment_school(doc jsonb, on_day date) RETURNS uuid LANGUAGE sql "
    "IMMUTABLE PARALLEL SAFE AS $f$"
    " SELECT {s}.sk_uuid(e->'enroledAt'->>'id') FROM jsonb_array_elements("
    "CASE WHEN jsonb_typeof(doc->'enrolments') = 'array' THEN doc->'enrolments'"
    " ELSE '[]'::jsonb END) WITH ORDINALITY AS x(e, n)"
    " WHERE jsonb_typeof(e) = 'object' AND (e->>'cancelled') IS DISTINCT FROM 'true'"
    " AND coalesce({s}.sk_date(e->>'startDate') <= on_day, true)"
    " AND coalesce({s}.sk_date(e->>'endDate') >= on_day, true)"
    " ORDER BY n LIMIT 1 $f$;\n";

/* Appends tmpl with every "{s}" replaced by the quoted schema. */
static void pg_subst(struct sk_buf *b, const char *tmpl, const char *qschema)
{
    const char *p;
    while ((p = strstr(tmpl, "{s}")) != NULL) {
        sk_buf_putn(b, tmpl, (size_t)(p - tmpl));
        sk_buf_puts(b, qschema);
        tmpl = p + 3;
    }
    sk_buf_puts(b, tmpl);
}

/* A quoted SQL identifier ("study_plans", "My""Schema"). Caller frees. */
char *pg_quote_ident(const char *name)
{
    struct sk_buf b = {0};
    sk_buf_puts(&b, "\"");
    for (; *name; name++)
        sk_buf_putn(&b, *name == '"' ? "\"\"" : name, *name == '"' ? 2 : 1);
    sk_buf_puts(&b, "\"");
    return b.p;
}

/* The table name of a collection: camelCase to snake_case ("studyPlans" -> "study_plans"). */
char *pg_table_name(const char *collection)
{
    struct sk_buf b = {0};
    for (const char *c = collection; *c; c++) {
        if (*c >= 'A' && *c <= 'Z') {
            char lower[2] = {'_', (char)(*c - 'A' + 'a')};
            sk_buf_putn(&b, lower, 2);
        } else {
            sk_buf_putn(&b, c, 1);
        }
    }
    return b.p;
}

static const struct pg_table_spec *pg_spec_for(const char *collection)
{
    for (size_t i = 0; i < sizeof(table_specs) / sizeof(table_specs[0]); i++)
        if (strcmp(table_specs[i].collection, collection) == 0)
            return &table_specs[i];
    return NULL;
}

/*
 * Migration 4: the references (REF, a uuid) and days (DAY, a date) of
 * migration 1 become columns the sink writes. Generated, each cost the
 * server a call of sk_uuid or sk_date per row, and their regular
 * expressions were a sixth of its CPU per upsert (attendances, most of the
 * rows, have two references). The sink computes them with pg_uuid and
 * pg_day (postgres_rows.c), checked against the SQL functions by
 * test_postgres_sink. The text columns stay generated: doc->>'k' is cheap,
 * and for a value that is no string its text is PostgreSQL's own rendering.
 * Frozen, like table_specs it is read from.
 */
static bool pg_sink_computes(const struct pg_column *c)
{
    return c->name && !c->written && c->key &&
           (strcmp(c->type, "uuid") == 0 || strcmp(c->type, "date") == 0);
}

/* ---- open: statements and migrations ---------------------------------------- */

void pg_build_table_sql(struct pg_sink *s, struct pg_table *t, const char *qtable)
{
    const struct pg_table_spec *spec = pg_spec_for(t->entity->collection);
    struct sk_buf cols = {0}, exprs = {0}, sets = {0}, changed = {0}, sent = {0};
    /* The columns the sink sends after id, doc, source and modified: elements 4, 5, ... */
    for (size_t i = 0; i < sizeof(sent_instants) / sizeof(sent_instants[0]); i++) {
        if (strcmp(sent_instants[i].collection, t->entity->collection) != 0 ||
            t->n_sent == sizeof(t->sent_keys) / sizeof(t->sent_keys[0]))
            continue;
        const char *c = sent_instants[i].column;
        sk_buf_printf(&sent, ", (r->>%zu)::timestamptz AS %s", 4 + t->n_sent, c);
        sk_buf_printf(&cols, ", %s", c);
        sk_buf_printf(&exprs, ", %s", c);
        sk_buf_printf(&sets, ", %s = excluded.%s", c, c);
        t->sent_keys[t->n_sent++] = sent_instants[i].key;
    }
    for (size_t i = 0; spec && i < sizeof(spec->cols) / sizeof(spec->cols[0]); i++) {
        const struct pg_column *c = &spec->cols[i];
        if (!pg_sink_computes(c))
            continue; /* (t->typed holds as many as a spec has columns) */
        sk_buf_printf(&sent, ", (r->>%zu)::%s AS %s", 4 + t->n_sent + t->n_typed, c->type,
                      c->name);
        sk_buf_printf(&cols, ", %s", c->name);
        sk_buf_printf(&exprs, ", %s", c->name);
        sk_buf_printf(&sets, ", %s = excluded.%s", c->name, c->name);
        t->typed[t->n_typed].key = c->key;
        t->typed[t->n_typed++].day = strcmp(c->type, "date") == 0;
    }
    for (size_t i = 0; spec && i < sizeof(spec->cols) / sizeof(spec->cols[0]); i++) {
        const struct pg_column *c = &spec->cols[i];
        if (!c->name || !c->written)
            continue;
        /* The one written column, persons.enrolment_school: the sink computes
         * it (postgres_rows.c) for the transaction's current_date and sends
         * it last; its SQL function per row cost the server ~25 µs. */
        sk_buf_printf(&cols, ", %s", c->name);
        sk_buf_printf(&exprs, ", %s", c->name);
        sk_buf_printf(&sent, ", (r->>%zu)::uuid AS %s", 4 + t->n_sent + t->n_typed, c->name);
        t->sends_enrolment = true;
        sk_buf_printf(&sets, ", %s = excluded.%s", c->name, c->name);
        sk_buf_printf(&changed, " OR t.%s IS DISTINCT FROM excluded.%s", c->name, c->name);
    }
    /*
     * The stale-update guard (docs/architecture.md §4.3): an update wins
     * only if its meta.modified is not older than the row's, compared as
     * instants (timestamptz), so "+01:00" and "Z" order correctly. Without a
     * meta.modified on either side they cannot be ordered: the arriving
     * record wins (Kafka keeps per-key order). A row deleted with
     * deleted_rows: keep is gone: anything revives it. An identical document
     * changes nothing, not even updated_at, so a replay leaves the table as
     * it was.
     */
    t->upsert_sql = sk_asprintf(
        "INSERT INTO %s.%s AS t (id, doc, source, modified%s) "
        "SELECT id, doc, source, modified%s FROM (SELECT (r->>0)::uuid AS id, r->1 AS doc, "
        "r->>2 AS source, (r->>3)::timestamptz AS modified%s "
        "FROM jsonb_array_elements($1::jsonb) AS r) AS x "
        "ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, source = excluded.source, "
        "modified = excluded.modified, updated_at = now(), deleted_at = NULL%s "
        "WHERE (t.deleted_at IS NOT NULL OR excluded.modified IS NULL OR t.modified IS NULL "
        "OR excluded.modified >= t.modified) "
        "AND (t.deleted_at IS NOT NULL OR t.doc IS DISTINCT FROM excluded.doc%s)",
        s->qschema, qtable, cols.p ? cols.p : "", exprs.p ? exprs.p : "", sent.p ? sent.p : "",
        sets.p ? sets.p : "", changed.p ? changed.p : "");
    if (s->keep_deleted) {
        t->delete_sql = sk_asprintf("UPDATE %s.%s SET deleted_at = now(), updated_at = now() "
                                    "WHERE id = ANY($1::uuid[]) AND deleted_at IS NULL",
                                    s->qschema, qtable);
        /* a person protected_identities: skip withholds leaves no row, deleted or not */
        t->purge_sql =
            sk_asprintf("DELETE FROM %s.%s WHERE id = ANY($1::uuid[])", s->qschema, qtable);
    } else
        t->delete_sql =
            sk_asprintf("DELETE FROM %s.%s WHERE id = ANY($1::uuid[])", s->qschema, qtable);
    t->keys_sql = sk_asprintf("SELECT id::text, doc::text FROM %s.%s%s", s->qschema, qtable,
                              s->keep_deleted ? " WHERE deleted_at IS NULL" : "");
    t->ids_sql = sk_asprintf("SELECT id::text FROM %s.%s%s", s->qschema, qtable,
                             s->keep_deleted ? " WHERE deleted_at IS NULL" : "");
    free(cols.p);
    free(exprs.p);
    free(sets.p);
    free(changed.p);
    free(sent.p);
}

/* Migration 1: the helper functions, one table per collection of sk_entities, the offsets. */
static void migration1_sql(const struct pg_sink *s, struct sk_buf *b)
{
    pg_subst(b, migration1_functions, s->qschema);
    for (const struct sk_entity *const *e = sk_entities; *e; e++) {
        char *name = pg_table_name((*e)->collection);
        char *qtable = pg_quote_ident(name);
        sk_buf_printf(b,
                      "CREATE TABLE %s.%s (id uuid PRIMARY KEY, doc jsonb NOT NULL, "
                      "modified timestamptz GENERATED ALWAYS AS "
                      "(%s.sk_instant(doc->'meta'->>'modified')) STORED, source text, "
                      "updated_at timestamptz NOT NULL DEFAULT now(), deleted_at timestamptz",
                      s->qschema, qtable, s->qschema);
        const struct pg_table_spec *spec = pg_spec_for((*e)->collection);
        for (size_t i = 0; spec && i < sizeof(spec->cols) / sizeof(spec->cols[0]); i++) {
            const struct pg_column *c = &spec->cols[i];
            if (!c->name)
                continue;
            sk_buf_printf(b, ", %s %s", c->name, c->type);
            if (!c->written) {
                sk_buf_puts(b, " GENERATED ALWAYS AS (");
                pg_subst(b, c->expr, s->qschema);
                sk_buf_puts(b, ") STORED");
            }
        }
        sk_buf_puts(b, ");\n");
        for (size_t i = 0; spec && i < sizeof(spec->cols) / sizeof(spec->cols[0]); i++) {
            const struct pg_column *c = &spec->cols[i];
            if (c->name && c->indexed)
                sk_buf_printf(b, "CREATE INDEX \"%s_%s_idx\" ON %s.%s (%s);\n", name, c->name,
                              s->qschema, qtable, c->name);
        }
        for (size_t i = 0; i < sizeof(extra_indexes) / sizeof(extra_indexes[0]); i++)
            if (strcmp(extra_indexes[i].table, name) == 0)
                sk_buf_printf(b, "CREATE INDEX \"%s\" ON %s.%s %s;\n", extra_indexes[i].name,
                              s->qschema, qtable, extra_indexes[i].spec);
        free(qtable);
        free(name);
    }
    sk_buf_printf(b,
                  "CREATE TABLE %s.skolsync_offsets (topic text, \"partition\" int, "
                  "next_offset bigint NOT NULL, incarnation text NOT NULL, updated_at timestamptz, "
                  "PRIMARY KEY (topic, \"partition\"));\n",
                  s->qschema);
}

/*
 * Migration 2: `modified` becomes a plain column the sink writes (the
 * instant it parsed from meta.modified for the stale-update guard anyway).
 * As a generated column it cost the server one call of sk_instant, a
 * SQL function it cannot inline (its ::timestamptz cast is only STABLE),
 * per row: about a third of the server's CPU per upsert (docs/postgres-sink.md,
 * Performance). DROP EXPRESSION keeps every stored value and rewrites nothing.
 */
static void migration2_sql(const struct pg_sink *s, struct sk_buf *b)
{
    for (const struct sk_entity *const *e = sk_entities; *e; e++) {
        char *name = pg_table_name((*e)->collection);
        char *qtable = pg_quote_ident(name);
        sk_buf_printf(b, "ALTER TABLE %s.%s ALTER COLUMN modified DROP EXPRESSION;\n", s->qschema,
                      qtable);
        free(qtable);
        free(name);
    }
}

/* Migration 3: the typed instants (sent_instants) become columns the sink writes. */
static void migration3_sql(const struct pg_sink *s, struct sk_buf *b)
{
    for (size_t i = 0; i < sizeof(sent_instants) / sizeof(sent_instants[0]); i++) {
        char *name = pg_table_name(sent_instants[i].collection);
        char *qtable = pg_quote_ident(name);
        sk_buf_printf(b, "ALTER TABLE %s.%s ALTER COLUMN %s DROP EXPRESSION;\n", s->qschema, qtable,
                      sent_instants[i].column);
        free(qtable);
        free(name);
    }
}

/* Migration 4 (pg_sink_computes). IF EXISTS: a column an administrator
 * already made plain is left as it is (PostgreSQL notes it). */
static void migration4_sql(const struct pg_sink *s, struct sk_buf *b)
{
    for (size_t i = 0; i < sizeof(table_specs) / sizeof(table_specs[0]); i++) {
        char *name = pg_table_name(table_specs[i].collection);
        char *qtable = pg_quote_ident(name);
        for (size_t j = 0; j < sizeof(table_specs[i].cols) / sizeof(table_specs[i].cols[0]); j++)
            if (pg_sink_computes(&table_specs[i].cols[j]))
                sk_buf_printf(b, "ALTER TABLE %s.%s ALTER COLUMN %s DROP EXPRESSION IF EXISTS;\n",
                              s->qschema, qtable, table_specs[i].cols[j].name);
        free(qtable);
        free(name);
    }
}

/* The first value of a one-row result as text (caller frees), or NULL. */
static char *pg_first_value(PGresult *res)
{
    char *v = NULL;
    if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        v = sk_strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

/*
 * Brings the schema to MIGRATION_LATEST in one transaction, under an
 * advisory lock so two sinks opening at once do not both migrate. The schema
 * itself is created only if missing: an administrator may create it (and own
 * it) and give skolsync no right to create schemas.
 */
int pg_migrate(struct pg_sink *s, struct sk_error *err)
{
    bool record_level;
    PGresult *res = NULL;
    char *lock_key = sk_asprintf("skolsync migrate %s", s->schema);
    const char *lock_params[] = {lock_key};
    const char *schema_params[] = {s->schema};
    char *sql = NULL, *version_text = NULL;
    int rc = -1;
    if (pg_exec0(s, "BEGIN", "BEGIN", err) < 0)
        goto out;
    if (pg_exec_params(s, "locking the schema", "SELECT pg_advisory_xact_lock(hashtext($1))", 1,
                       lock_params, NULL, &record_level, err) < 0 ||
        pg_exec_params(s, "looking for the schema",
                       "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1", 1, schema_params,
                       &res, &record_level, err) < 0)
        goto out;
    bool exists = PQntuples(res) > 0;
    PQclear(res);
    if (!exists) {
        sql = sk_asprintf("CREATE SCHEMA %s", s->qschema);
        if (pg_exec0(s, "creating the schema", sql, err) < 0)
            goto out;
        free(sql);
    }
    sql = sk_asprintf("CREATE TABLE IF NOT EXISTS %s.skolsync_migrations (version int PRIMARY KEY, "
                      "applied_at timestamptz NOT NULL DEFAULT now())",
                      s->qschema);
    if (pg_exec0(s, "creating skolsync_migrations", sql, err) < 0)
        goto out;
    free(sql);
    sql = sk_asprintf("SELECT coalesce(max(version), 0) FROM %s.skolsync_migrations", s->qschema);
    if (pg_exec_params(s, "reading skolsync_migrations", sql, 0, NULL, &res, &record_level, err) <
        0)
        goto out;
    version_text = pg_first_value(res);
    long version = version_text ? strtol(version_text, NULL, 10) : 0;
    if (version > MIGRATION_LATEST) {
        sk_error_set(err, SK_ERR_FATAL,
                     "schema %s is at migration %ld, newer than this skolsync knows (%d)",
                     s->schema, version, MIGRATION_LATEST);
        goto out;
    }
    if (version < 2 && PQserverVersion(s->conn) < 130000) {
        sk_error_set(err, SK_ERR_FATAL,
                     "PostgreSQL %d.%d is too old: skolsync needs 13 or later (DROP EXPRESSION)",
                     PQserverVersion(s->conn) / 10000, PQserverVersion(s->conn) % 10000);
        goto out;
    }
    for (long v = version + 1; v <= MIGRATION_LATEST; v++) {
        struct sk_buf b = {0};
        if (v == 1)
            migration1_sql(s, &b);
        else if (v == 2)
            migration2_sql(s, &b);
        else if (v == 3)
            migration3_sql(s, &b);
        else
            migration4_sql(s, &b);
        free(sql);
        sql =
            sk_asprintf("INSERT INTO %s.skolsync_migrations(version) VALUES (%ld)", s->qschema, v);
        char *what = sk_asprintf("migration %ld", v);
        int failed = pg_exec0(s, what, b.p, err);
        free(what);
        free(b.p);
        if (failed)
            goto out;
        if (pg_exec0(s, "recording the migration", sql, err) < 0)
            goto out;
        sk_info(s->component, "schema %s: applied migration %ld", s->schema, v);
    }
    if (pg_exec0(s, "COMMIT", "COMMIT", err) < 0)
        goto out;
    sk_info(s->component, "%s at migration %d", s->target, MIGRATION_LATEST);
    rc = 0;
out:
    if (rc < 0)
        pg_abandon(s);
    free(lock_key);
    free(sql);
    free(version_text);
    return rc;
}
