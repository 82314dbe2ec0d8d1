/*
 * postgres_sink.c: the postgres-sink connector. Keeps the current state of
 * every SS 12000 collection in one PostgreSQL table (the entity as jsonb plus
 * typed columns generated from it), and the consumed Kafka offsets in the
 * same schema, written in the same transaction as the rows: exactly-once
 * apply (docs/architecture.md §4.3). The schema is versioned; its
 * migrations are compiled in (docs/postgres-sink.md describes it).
 *
 * Owns: the schema and its migrations, the bulk upsert/delete path, the
 * per-record fallback that isolates a bad record, the offsets table. Must
 * never: let an older meta.modified overwrite a newer one, store an offset in
 * another transaction than the rows it covers, return offsets stored under
 * another broker incarnation (connector.h, struct sk_sink), commit after an
 * error, or print the connection string (it may hold a password).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <libpq-fe.h>

#include "connector.h"
#include "log.h"
#include "model.h"
#include "postgres/postgres_sink.h"
#include "util.h"

/* The newest migration this build knows; a schema at a higher one is refused. */
#define MIGRATION_LATEST 1

struct pg_conf {
    char *conninfo;
    char *schema;
    char *deleted_rows;
    int64_t connect_timeout_ms;
};

static const char *const deleted_rows_choices[] = {"delete", "keep", NULL};

static const struct sk_option pg_options[] = {
    {.name = "conninfo",
     .type = SK_OPT_SECRET,
     .required = true,
     .help = "libpq connection string (\"host=... dbname=...\" or postgresql://...)",
     .offset = offsetof(struct pg_conf, conninfo)},
    {.name = "schema",
     .type = SK_OPT_STRING,
     .def = "skolsync",
     .help = "the schema holding the tables; created with them if missing",
     .offset = offsetof(struct pg_conf, schema)},
    {.name = "deleted_rows",
     .type = SK_OPT_ENUM,
     .def = "delete",
     .help = "what a tombstone does: delete the row, or keep it and set deleted_at",
     .offset = offsetof(struct pg_conf, deleted_rows),
     .choices = deleted_rows_choices},
    {.name = "connect_timeout",
     .type = SK_OPT_DURATION,
     .def = "10s",
     .help = "how long to wait for a connection (libpq connect_timeout, whole seconds, min 2)",
     .offset = offsetof(struct pg_conf, connect_timeout_ms),
     .min = 1,
     .max = 3600000},
    {.name = NULL},
};

/* ---- the schema, as data -------------------------------------------------- */

/*
 * A typed column of a collection's table. expr is over `doc` and is a
 * GENERATED ALWAYS ... STORED column, so it can never disagree with doc;
 * "{s}" stands for the quoted schema. A `written` column depends on more
 * than doc (the day) and is computed by the upsert instead.
 */
struct pg_column {
    const char *name;
    const char *type;
    const char *expr;
    bool indexed;
    bool written;
};

struct pg_table_spec {
    const char *collection;
    struct pg_column cols[9];
};

#define TXT(k) "(doc->>'" k "')"
#define REF(k) "{s}.sk_uuid(doc->'" k "'->>'id')"
#define DAY(k) "{s}.sk_date(doc->>'" k "')"
#define INSTANT(k) "{s}.sk_instant(doc->>'" k "')"

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
      {"epp_name", "text", "(doc->'eduPersonPrincipalNames'->>0)", true},
      /* "Active" depends on the day, so this is no generated column. */
      {"enrolment_school", "uuid", "{s}.sk_enrolment_school(doc, current_date)", true, true}}},
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

/* ---- a growing string ---------------------------------------------------- */

struct buf {
    char *p;
    size_t n, cap;
};

static void buf_add(struct buf *b, const char *s, size_t len)
{
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + len + 1)
            cap *= 2;
        b->p = sk_realloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
}

static void buf_adds(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int len = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (len < 0)
        abort(); /* out of memory: as sk_malloc does */
    buf_add(b, s, (size_t)len);
    free(s);
}

static void buf_reset(struct buf *b)
{
    b->n = 0;
    if (b->p)
        b->p[0] = '\0';
}

/* Appends tmpl with every "{s}" replaced by the quoted schema. */
static void buf_subst(struct buf *b, const char *tmpl, const char *qschema)
{
    const char *p;
    while ((p = strstr(tmpl, "{s}")) != NULL) {
        buf_add(b, tmpl, (size_t)(p - tmpl));
        buf_adds(b, qschema);
        tmpl = p + 3;
    }
    buf_adds(b, tmpl);
}

/* A JSON string literal (keys and topics are plain ASCII, but be exact). */
static void buf_json_string(struct buf *b, const char *s)
{
    buf_adds(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            buf_printf(b, "\\%c", c);
        else if (c < 0x20)
            buf_printf(b, "\\u%04x", c);
        else
            buf_add(b, s, 1);
    }
    buf_adds(b, "\"");
}

/* A quoted SQL identifier ("study_plans", "My""Schema"). Caller frees. */
static char *quote_ident(const char *name)
{
    struct buf b = {0};
    buf_adds(&b, "\"");
    for (; *name; name++)
        buf_add(&b, *name == '"' ? "\"\"" : name, *name == '"' ? 2 : 1);
    buf_adds(&b, "\"");
    return b.p;
}

/* The table name of a collection: camelCase to snake_case ("studyPlans" -> "study_plans"). */
static char *table_name(const char *collection)
{
    struct buf b = {0};
    for (const char *c = collection; *c; c++) {
        if (*c >= 'A' && *c <= 'Z') {
            char lower[2] = {'_', (char)(*c - 'A' + 'a')};
            buf_add(&b, lower, 2);
        } else {
            buf_add(&b, c, 1);
        }
    }
    return b.p;
}

static const struct pg_table_spec *spec_for(const char *collection)
{
    for (size_t i = 0; i < sizeof(table_specs) / sizeof(table_specs[0]); i++)
        if (strcmp(table_specs[i].collection, collection) == 0)
            return &table_specs[i];
    return NULL;
}

/* ---- the connector's state ---------------------------------------------- */

/* One collection's table: its statements, and this batch's work for it. */
struct pg_table {
    const struct sk_entity *entity;
    char *upsert_sql; /* $1 = jsonb [[id, doc, source], ...] */
    char *delete_sql; /* $1 = uuid[] text; DELETE or UPDATE ... deleted_at */
    struct buf upserts, deletes;
    size_t n_upserts, n_deletes;
};

/*
 * What one id ends up as after the batch's records for it (per-key order):
 * cleared = the row is deleted first (a tombstone, or an earlier record that
 * wins over whatever the table holds), then winner (if any) is upserted with
 * the stale-update guard. See plan_record for why this equals applying the
 * records one by one.
 */
struct plan {
    struct pg_table *table;
    const char *key;
    const struct sk_record *winner;
    bool cleared;
};

struct pg_sink {
    const char *component;
    char *conninfo; /* secret: never printed */
    char *qschema;  /* the quoted schema */
    char *schema;
    char *target; /* "postgresql host:port/dbname schema skolsync" */
    bool keep_deleted;
    int64_t connect_timeout_ms;
    PGconn *conn; /* NULL after a lost connection: the next call reconnects */
    uint64_t round_trips;
    struct pg_table *tables;
    size_t n_tables;
    char *offsets_sql, *offsets_select_sql;
    /* Per batch, reused. */
    struct plan *plans;
    size_t n_plans, cap_plans;
    size_t *slots; /* open addressing over plans: index + 1, 0 = empty */
    size_t cap_slots;
    struct sk_offsets parts; /* of the batch being applied, reused */
};

/* ---- libpq helpers --------------------------------------------------------- */

/* libpq prints NOTICEs on stderr by default; they belong in the debug log. */
static void on_notice(void *arg, const char *message)
{
    const struct pg_sink *s = arg;
    size_t len = strlen(message);
    while (len && message[len - 1] == '\n')
        len--;
    sk_debug(s->component, "server: %.*s", (int)len, message);
}

/* libpq's connection error on one line (it spans several), for logs and err->msg. */
static void conn_message(PGconn *conn, char *out, size_t size)
{
    const char *m = conn ? PQerrorMessage(conn) : "out of memory";
    size_t k = 0;
    bool space = false;
    for (; *m && k + 1 < size; m++) {
        if (*m == '\n' || *m == '\t' || *m == ' ') {
            space = k > 0;
            continue;
        }
        if (space && k + 2 < size)
            out[k++] = ' ';
        space = false;
        out[k++] = *m;
    }
    out[k] = '\0';
}

static void disconnect(struct pg_sink *s)
{
    if (s->conn)
        PQfinish(s->conn);
    s->conn = NULL;
}

/*
 * Connects if not connected. Ours first, so the conninfo may override them;
 * client_encoding after it, because the docs we send are UTF-8 whatever the
 * conninfo says.
 */
static int ensure_connected(struct pg_sink *s, struct sk_error *err)
{
    if (s->conn && PQstatus(s->conn) == CONNECTION_OK)
        return 0;
    disconnect(s);
    char timeout[32], app[64];
    snprintf(timeout, sizeof(timeout), "%" PRId64, (s->connect_timeout_ms + 999) / 1000);
    snprintf(app, sizeof(app), "skolsync/%s", s->component);
    const char *keys[] = {"connect_timeout", "application_name", "keepalives_idle",
                          "dbname",          "client_encoding",  NULL};
    const char *values[] = {timeout, app, "30", s->conninfo, "UTF8", NULL};
    s->conn = PQconnectdbParams(keys, values, 1);
    if (!s->conn || PQstatus(s->conn) != CONNECTION_OK) {
        char msg[400];
        conn_message(s->conn, msg, sizeof(msg));
        disconnect(s);
        return sk_error_set(err, SK_ERR_RETRIABLE, "connecting to %s: %s", s->target, msg);
    }
    PQsetNoticeProcessor(s->conn, on_notice, s);
    return 0;
}

/*
 * What a failed statement means. RETRIABLE: the connection, the server
 * going away, a serialization failure or deadlock, lack of resources: the
 * same batch may succeed later. PERMANENT (*record_level set): the data of
 * some record is unacceptable (class 22 data exception, 23 integrity
 * constraint, 54 program limit such as an index row too large): find the
 * record and reject it. FATAL: anything else (a missing table, no
 * privilege): this connector cannot go on.
 */
static enum sk_err_class error_class(const struct pg_sink *s, const PGresult *res,
                                     bool *record_level)
{
    *record_level = false;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!s->conn || PQstatus(s->conn) != CONNECTION_OK || !state || strlen(state) != 5)
        return SK_ERR_RETRIABLE;
    static const char *const retriable[] = {"08", "40", "53", "57", "58", "55P03", "25006"};
    for (size_t i = 0; i < sizeof(retriable) / sizeof(retriable[0]); i++)
        if (strncmp(state, retriable[i], strlen(retriable[i])) == 0)
            return SK_ERR_RETRIABLE;
    if (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0 ||
        strncmp(state, "54", 2) == 0) {
        *record_level = true;
        return SK_ERR_PERMANENT;
    }
    return SK_ERR_FATAL;
}

/* "SQLSTATE: primary message" of a failed result (never DETAIL: it may quote data). */
static void result_message(const struct pg_sink *s, const PGresult *res, char *out, size_t size)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (state && primary) {
        snprintf(out, size, "%s: %s", state, primary);
        return;
    }
    conn_message(s->conn, out, size);
    if (!out[0])
        snprintf(out, size, "connection lost");
}

/*
 * The outcome of one statement: 0 on success; otherwise -1 with err filled
 * (what is prefixed to the server's message) and *record_level as in
 * error_class. A lost connection is dropped here, so the next call reconnects.
 */
static int exec_params(struct pg_sink *s, const char *what, const char *sql, int n_params,
                       const char *const *params, PGresult **rows, bool *record_level,
                       struct sk_error *err)
{
    *record_level = false;
    s->round_trips++;
    /* Without parameters the simple protocol, which also runs several statements. */
    PGresult *res = params ? PQexecParams(s->conn, sql, n_params, NULL, params, NULL, NULL, 0)
                           : PQexec(s->conn, sql);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (rows)
            *rows = res;
        else
            PQclear(res);
        return 0;
    }
    char msg[400];
    result_message(s, res, msg, sizeof(msg));
    sk_error_set(err, error_class(s, res, record_level), "%s: %s", what, msg);
    PQclear(res);
    if (PQstatus(s->conn) != CONNECTION_OK)
        disconnect(s);
    return -1;
}

static int exec0(struct pg_sink *s, const char *what, const char *sql, struct sk_error *err)
{
    bool record_level;
    int rc = exec_params(s, what, sql, 0, NULL, NULL, &record_level, err);
    if (rc < 0 && err->cls == SK_ERR_PERMANENT)
        err->cls = SK_ERR_FATAL; /* no record to blame outside a record's statement */
    return rc;
}

/* Leaves no transaction open (after an error); a dead connection is dropped. */
static void abandon(struct pg_sink *s)
{
    if (!s->conn)
        return;
    if (PQtransactionStatus(s->conn) != PQTRANS_IDLE) {
        s->round_trips++;
        PQclear(PQexec(s->conn, "ROLLBACK"));
    }
    if (PQstatus(s->conn) != CONNECTION_OK)
        disconnect(s);
}

/* ---- open: statements and migrations ---------------------------------------- */

static void build_table_sql(struct pg_sink *s, struct pg_table *t, const char *qtable)
{
    const struct pg_table_spec *spec = spec_for(t->entity->collection);
    struct buf cols = {0}, exprs = {0}, sets = {0}, changed = {0};
    for (size_t i = 0; spec && i < sizeof(spec->cols) / sizeof(spec->cols[0]); i++) {
        const struct pg_column *c = &spec->cols[i];
        if (!c->name || !c->written)
            continue;
        buf_printf(&cols, ", %s", c->name);
        buf_adds(&exprs, ", ");
        buf_subst(&exprs, c->expr, s->qschema);
        buf_printf(&sets, ", %s = excluded.%s", c->name, c->name);
        buf_printf(&changed, " OR t.%s IS DISTINCT FROM excluded.%s", c->name, c->name);
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
        "INSERT INTO %s.%s AS t (id, doc, source%s) "
        "SELECT id, doc, source%s FROM (SELECT (r->>0)::uuid AS id, r->1 AS doc, r->>2 AS source "
        "FROM jsonb_array_elements($1::jsonb) AS r) AS x "
        "ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, source = excluded.source, "
        "updated_at = now(), deleted_at = NULL%s "
        "WHERE (t.deleted_at IS NOT NULL OR excluded.modified IS NULL OR t.modified IS NULL "
        "OR excluded.modified >= t.modified) "
        "AND (t.deleted_at IS NOT NULL OR t.doc IS DISTINCT FROM excluded.doc%s)",
        s->qschema, qtable, cols.p ? cols.p : "", exprs.p ? exprs.p : "", sets.p ? sets.p : "",
        changed.p ? changed.p : "");
    if (s->keep_deleted)
        t->delete_sql = sk_asprintf("UPDATE %s.%s SET deleted_at = now(), updated_at = now() "
                                    "WHERE id = ANY($1::uuid[]) AND deleted_at IS NULL",
                                    s->qschema, qtable);
    else
        t->delete_sql =
            sk_asprintf("DELETE FROM %s.%s WHERE id = ANY($1::uuid[])", s->qschema, qtable);
    free(cols.p);
    free(exprs.p);
    free(sets.p);
    free(changed.p);
}

/* Migration 1: the helper functions, one table per collection of sk_entities, the offsets. */
static void migration1_sql(const struct pg_sink *s, struct buf *b)
{
    buf_subst(b, migration1_functions, s->qschema);
    for (const struct sk_entity *const *e = sk_entities; *e; e++) {
        char *name = table_name((*e)->collection);
        char *qtable = quote_ident(name);
        buf_printf(b,
                   "CREATE TABLE %s.%s (id uuid PRIMARY KEY, doc jsonb NOT NULL, "
                   "modified timestamptz GENERATED ALWAYS AS "
                   "(%s.sk_instant(doc->'meta'->>'modified')) STORED, source text, "
                   "updated_at timestamptz NOT NULL DEFAULT now(), deleted_at timestamptz",
                   s->qschema, qtable, s->qschema);
        const struct pg_table_spec *spec = spec_for((*e)->collection);
        for (size_t i = 0; spec && i < sizeof(spec->cols) / sizeof(spec->cols[0]); i++) {
            const struct pg_column *c = &spec->cols[i];
            if (!c->name)
                continue;
            buf_printf(b, ", %s %s", c->name, c->type);
            if (!c->written) {
                buf_adds(b, " GENERATED ALWAYS AS (");
                buf_subst(b, c->expr, s->qschema);
                buf_adds(b, ") STORED");
            }
        }
        buf_adds(b, ");\n");
        for (size_t i = 0; spec && i < sizeof(spec->cols) / sizeof(spec->cols[0]); i++) {
            const struct pg_column *c = &spec->cols[i];
            if (c->name && c->indexed)
                buf_printf(b, "CREATE INDEX \"%s_%s_idx\" ON %s.%s (%s);\n", name, c->name,
                           s->qschema, qtable, c->name);
        }
        for (size_t i = 0; i < sizeof(extra_indexes) / sizeof(extra_indexes[0]); i++)
            if (strcmp(extra_indexes[i].table, name) == 0)
                buf_printf(b, "CREATE INDEX \"%s\" ON %s.%s %s;\n", extra_indexes[i].name,
                           s->qschema, qtable, extra_indexes[i].spec);
        free(qtable);
        free(name);
    }
    buf_printf(b,
               "CREATE TABLE %s.skolsync_offsets (topic text, \"partition\" int, "
               "next_offset bigint NOT NULL, incarnation text NOT NULL, updated_at timestamptz, "
               "PRIMARY KEY (topic, \"partition\"));\n",
               s->qschema);
}

/* The first value of a one-row result as text (caller frees), or NULL. */
static char *first_value(PGresult *res)
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
static int migrate(struct pg_sink *s, struct sk_error *err)
{
    bool record_level;
    PGresult *res = NULL;
    char *lock_key = sk_asprintf("skolsync migrate %s", s->schema);
    const char *lock_params[] = {lock_key};
    const char *schema_params[] = {s->schema};
    char *sql = NULL, *version_text = NULL;
    int rc = -1;
    if (exec0(s, "BEGIN", "BEGIN", err) < 0)
        goto out;
    if (exec_params(s, "locking the schema", "SELECT pg_advisory_xact_lock(hashtext($1))", 1,
                    lock_params, NULL, &record_level, err) < 0 ||
        exec_params(s, "looking for the schema",
                    "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1", 1, schema_params,
                    &res, &record_level, err) < 0)
        goto out;
    bool exists = PQntuples(res) > 0;
    PQclear(res);
    if (!exists) {
        sql = sk_asprintf("CREATE SCHEMA %s", s->qschema);
        if (exec0(s, "creating the schema", sql, err) < 0)
            goto out;
        free(sql);
    }
    sql = sk_asprintf("CREATE TABLE IF NOT EXISTS %s.skolsync_migrations (version int PRIMARY KEY, "
                      "applied_at timestamptz NOT NULL DEFAULT now())",
                      s->qschema);
    if (exec0(s, "creating skolsync_migrations", sql, err) < 0)
        goto out;
    free(sql);
    sql = sk_asprintf("SELECT coalesce(max(version), 0) FROM %s.skolsync_migrations", s->qschema);
    if (exec_params(s, "reading skolsync_migrations", sql, 0, NULL, &res, &record_level, err) < 0)
        goto out;
    version_text = first_value(res);
    long version = version_text ? strtol(version_text, NULL, 10) : 0;
    if (version > MIGRATION_LATEST) {
        sk_error_set(err, SK_ERR_FATAL,
                     "schema %s is at migration %ld, newer than this skolsync knows (%d)",
                     s->schema, version, MIGRATION_LATEST);
        goto out;
    }
    for (long v = version + 1; v <= MIGRATION_LATEST; v++) {
        struct buf b = {0};
        migration1_sql(s, &b); /* the only migration so far: v == 1 */
        free(sql);
        sql =
            sk_asprintf("INSERT INTO %s.skolsync_migrations(version) VALUES (%ld)", s->qschema, v);
        char *what = sk_asprintf("migration %ld", v);
        int failed = exec0(s, what, b.p, err);
        free(what);
        free(b.p);
        if (failed)
            goto out;
        if (exec0(s, "recording the migration", sql, err) < 0)
            goto out;
        sk_info(s->component, "schema %s: applied migration %ld", s->schema, v);
    }
    if (exec0(s, "COMMIT", "COMMIT", err) < 0)
        goto out;
    sk_info(s->component, "%s at migration %d", s->target, MIGRATION_LATEST);
    rc = 0;
out:
    if (rc < 0)
        abandon(s);
    free(lock_key);
    free(sql);
    free(version_text);
    return rc;
}

/* "postgresql host:port/dbname schema X": never the password or other options. */
static char *describe_target(const char *conninfo, const char *schema)
{
    char *host = NULL, *port = NULL, *db = NULL, *user = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (!o->val || !o->val[0])
            continue;
        if (strcmp(o->keyword, "host") == 0 || (strcmp(o->keyword, "hostaddr") == 0 && !host))
            host = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            db = o->val;
        else if (strcmp(o->keyword, "user") == 0)
            user = o->val;
    }
    char *target =
        sk_asprintf("postgresql %s%s%s/%s schema %s", host ? host : "localhost", port ? ":" : "",
                    port ? port : "", db ? db : (user ? user : "-"), schema);
    PQconninfoFree(opts);
    return target;
}

static void pg_close(struct sk_sink *self)
{
    struct pg_sink *s = self->priv;
    if (!s)
        return;
    disconnect(s);
    for (size_t i = 0; i < s->n_tables; i++) {
        free(s->tables[i].upsert_sql);
        free(s->tables[i].delete_sql);
        free(s->tables[i].upserts.p);
        free(s->tables[i].deletes.p);
    }
    free(s->tables);
    free(s->offsets_sql);
    free(s->offsets_select_sql);
    free(s->plans);
    free(s->slots);
    sk_offsets_free(&s->parts);
    free(s->target);
    free(s->schema);
    free(s->qschema);
    free(s->conninfo);
    free(s);
    self->priv = NULL;
}

/* Sets self->priv (freed by pg_close, also when open fails). */
static int pg_open(struct sk_sink *self, struct sk_error *err)
{
    const struct pg_conf *conf = self->conf;
    struct pg_sink *s = sk_calloc(1, sizeof(*s));
    self->priv = s;
    s->component = self->name ? self->name : "postgres-sink";
    if (!conf->conninfo || !conf->conninfo[0]) {
        sk_error_set(err, SK_ERR_FATAL, "conninfo: required");
        goto fail;
    }
    if (!conf->schema || !conf->schema[0] || strlen(conf->schema) > 63) {
        sk_error_set(err, SK_ERR_FATAL, "schema: must be 1 to 63 characters");
        goto fail;
    }
    if (!self->incarnation) {
        sk_error_set(err, SK_ERR_FATAL, "no broker incarnation given: offsets cannot be kept");
        goto fail;
    }
    PQconninfoOption *check = PQconninfoParse(conf->conninfo, NULL);
    if (!check) {
        /* libpq's message could quote the string: say only that it is malformed. */
        sk_error_set(err, SK_ERR_FATAL, "conninfo: not a valid libpq connection string");
        goto fail;
    }
    PQconninfoFree(check);
    s->conninfo = sk_strdup(conf->conninfo);
    s->schema = sk_strdup(conf->schema);
    s->qschema = quote_ident(conf->schema);
    s->target = describe_target(conf->conninfo, conf->schema);
    s->keep_deleted = conf->deleted_rows && strcmp(conf->deleted_rows, "keep") == 0;
    s->connect_timeout_ms = conf->connect_timeout_ms > 0 ? conf->connect_timeout_ms : 10000;
    s->tables = sk_calloc(self->n_entities ? self->n_entities : 1, sizeof(*s->tables));
    for (size_t i = 0; i < self->n_entities; i++) {
        struct pg_table *t = &s->tables[s->n_tables++];
        t->entity = self->entities[i];
        char *name = table_name(t->entity->collection);
        char *qtable = quote_ident(name);
        build_table_sql(s, t, qtable);
        free(qtable);
        free(name);
    }
    s->offsets_sql = sk_asprintf(
        "INSERT INTO %s.skolsync_offsets AS o (topic, \"partition\", next_offset, incarnation, "
        "updated_at) SELECT x.topic, x.p, x.n, $2, now() FROM jsonb_to_recordset($1::jsonb) "
        "AS x(topic text, p int, n bigint) ON CONFLICT (topic, \"partition\") DO UPDATE SET "
        "next_offset = excluded.next_offset, incarnation = excluded.incarnation, "
        "updated_at = excluded.updated_at",
        s->qschema);
    s->offsets_select_sql = sk_asprintf("SELECT topic, \"partition\", next_offset FROM "
                                        "%s.skolsync_offsets WHERE incarnation = $1 "
                                        "ORDER BY topic, \"partition\"",
                                        s->qschema);
    if (ensure_connected(s, err) < 0 || migrate(s, err) < 0)
        goto fail;
    return 0;
fail:
    pg_close(self);
    return -1;
}

/* ---- apply ------------------------------------------------------------------ */

static struct pg_table *find_table(struct pg_sink *s, const struct sk_entity *e)
{
    for (size_t i = 0; i < s->n_tables; i++)
        if (s->tables[i].entity == e)
            return &s->tables[i];
    return NULL;
}

static void reject(struct sk_outcome *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void reject(struct sk_outcome *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    o->kind = SK_REJECTED;
    sk_error_vset(&o->err, SK_ERR_PERMANENT, fmt, ap);
    va_end(ap);
}

/* Checks what needs no database; returns the record's table, or NULL when rejected. */
static struct pg_table *check_record(struct pg_sink *s, const struct sk_record *r,
                                     struct sk_outcome *o)
{
    char id[37];
    struct pg_table *t = find_table(s, r->entity);
    if (!t) {
        reject(o, "entity type %s is not one this sink was opened for",
               r->entity ? r->entity->name : "(none)");
        return NULL;
    }
    if (sk_uuid_normalize(r->key, id) != 0 || strcmp(id, r->key) != 0) {
        reject(o, "record key is not a lowercase UUID");
        return NULL;
    }
    if (r->value && !r->json) {
        reject(o, "record has a value but no decoded document");
        return NULL;
    }
    return t;
}

static size_t key_hash(const struct pg_table *t, const char *key)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)(uintptr_t)t;
    for (; *key; key++)
        h = (h ^ (unsigned char)*key) * 1099511628211ULL;
    return (size_t)h;
}

static struct plan *plan_for(struct pg_sink *s, struct pg_table *t, const char *key)
{
    size_t mask = s->cap_slots - 1;
    for (size_t i = key_hash(t, key) & mask;; i = (i + 1) & mask) {
        if (s->slots[i] == 0) {
            s->plans[s->n_plans] = (struct plan){.table = t, .key = key};
            s->slots[i] = ++s->n_plans;
            return &s->plans[s->n_plans - 1];
        }
        struct plan *p = &s->plans[s->slots[i] - 1];
        if (p->table == t && strcmp(p->key, key) == 0)
            return p;
    }
}

/* True if an upsert with modified b passes the guard over a row with modified a. */
static bool newer_or_unordered(int64_t b, int64_t a)
{
    return b == INT64_MIN || a == INT64_MIN || b >= a;
}

/*
 * Folds record r into its id's plan so that the plan's effect (clear, then a
 * guarded upsert of the winner) equals applying the id's records one by one:
 *   - a tombstone clears, whatever came before;
 *   - after a clear the row is known (absent, or the winner so far), so a
 *     record replaces the winner when it passes the guard over it;
 *   - before a clear the winner is still to be guarded against the table's
 *     row. A later record with a newer (or no) meta.modified takes its
 *     place; one that follows a winner without meta.modified would, one by
 *     one, be applied over that winner whatever the table held: that is a
 *     clear, then it.
 */
static void plan_record(struct plan *p, const struct sk_record *r)
{
    if (!r->value) {
        p->cleared = true;
        p->winner = NULL;
        return;
    }
    if (!p->winner) {
        p->winner = r;
        return;
    }
    int64_t w = p->winner->modified_us, v = r->modified_us;
    if (p->cleared) {
        if (newer_or_unordered(v, w))
            p->winner = r;
    } else if (w == INT64_MIN) {
        if (v != INT64_MIN)
            p->cleared = true;
        p->winner = r;
    } else if (newer_or_unordered(v, w)) {
        p->winner = r;
    }
}

static void plan_reset(struct pg_sink *s, size_t n)
{
    s->n_plans = 0;
    if (n > s->cap_plans) {
        s->cap_plans = n;
        s->plans = sk_realloc(s->plans, n * sizeof(*s->plans));
    }
    size_t want = 16;
    while (want < 2 * n)
        want *= 2;
    if (want > s->cap_slots) {
        free(s->slots);
        s->slots = sk_malloc(want * sizeof(*s->slots));
        s->cap_slots = want;
    }
    memset(s->slots, 0, s->cap_slots * sizeof(*s->slots));
    for (size_t i = 0; i < s->n_tables; i++) {
        struct pg_table *t = &s->tables[i];
        buf_reset(&t->upserts);
        buf_reset(&t->deletes);
        t->n_upserts = t->n_deletes = 0;
    }
}

/* Appends [id, doc, source] to b; source = where the record was read. */
static void json_upsert_row(struct buf *b, const struct sk_record *r)
{
    buf_adds(b, "[");
    buf_json_string(b, r->key);
    buf_adds(b, ",");
    buf_add(b, r->json, r->json_len); /* printed exactly, once, by the driver */
    buf_adds(b, ",");
    if (r->topic) {
        char *source = sk_asprintf("%s[%" PRId32 "]@%" PRId64, r->topic, r->partition, r->offset);
        buf_json_string(b, source);
        free(source);
    } else {
        buf_adds(b, "null");
    }
    buf_adds(b, "]");
}

static void add_upsert(struct pg_table *t, const struct sk_record *r)
{
    buf_adds(&t->upserts, t->n_upserts++ ? "," : "[");
    json_upsert_row(&t->upserts, r);
}

static void add_delete(struct pg_table *t, const char *key)
{
    buf_adds(&t->deletes, t->n_deletes++ ? "," : "{");
    buf_adds(&t->deletes, key);
}

static void finish_arrays(struct pg_table *t)
{
    if (t->n_upserts)
        buf_adds(&t->upserts, "]");
    if (t->n_deletes)
        buf_adds(&t->deletes, "}");
}

/* next_offset = highest offset + 1 of each partition in the batch, under our incarnation. */
static int store_offsets(struct pg_sink *s, const char *incarnation, const struct buf *json,
                         struct sk_error *err)
{
    bool record_level;
    const char *params[] = {json->p, incarnation};
    int rc =
        exec_params(s, "skolsync_offsets", s->offsets_sql, 2, params, NULL, &record_level, err);
    if (rc < 0 && err->cls == SK_ERR_PERMANENT)
        err->cls = SK_ERR_FATAL;
    return rc;
}

static void batch_offsets_json(const struct pg_sink *s, struct buf *b)
{
    buf_adds(b, "[");
    for (size_t i = 0; i < s->parts.n; i++) {
        buf_adds(b, i ? ",{\"topic\":" : "{\"topic\":");
        buf_json_string(b, s->parts.v[i].topic);
        buf_printf(b, ",\"p\":%" PRId32 ",\"n\":%" PRId64 "}", s->parts.v[i].partition,
                   s->parts.v[i].next_offset);
    }
    buf_adds(b, "]");
}

/*
 * The bulk path: BEGIN, per table at most one delete (clears first: a
 * tombstone then a re-create in one batch must end with the row) and one
 * upsert over a jsonb array of every id's winner, the offsets, COMMIT. A
 * batch touching one collection is four statements whatever its size.
 * Returns 0, or -1 with err (*record_level: some record's data was refused).
 */
static int apply_bulk(struct pg_sink *s, const char *incarnation, const struct buf *offsets,
                      bool *record_level, struct sk_error *err)
{
    *record_level = false;
    if (exec0(s, "BEGIN", "BEGIN", err) < 0)
        return -1;
    for (size_t i = 0; i < s->n_tables; i++) {
        struct pg_table *t = &s->tables[i];
        const char *del[] = {t->deletes.p}, *ups[] = {t->upserts.p};
        if (t->n_deletes && exec_params(s, t->entity->collection, t->delete_sql, 1, del, NULL,
                                        record_level, err) < 0)
            return -1;
        if (t->n_upserts && exec_params(s, t->entity->collection, t->upsert_sql, 1, ups, NULL,
                                        record_level, err) < 0)
            return -1;
    }
    if (s->parts.n && store_offsets(s, incarnation, offsets, err) < 0)
        return -1;
    return exec0(s, "COMMIT", "COMMIT", err);
}

/*
 * The fallback after the bulk path hit a record's bad data: the records one
 * by one, in order, each under a savepoint, in a new transaction. The bad
 * ones are rejected with the server's message, the rest applied, then the
 * offsets (covering the rejected too: the driver dead-letters them before
 * it commits) and COMMIT.
 */
static int apply_one_by_one(struct pg_sink *s, const struct sk_record *recs, size_t n,
                            struct sk_outcome *out, const char *incarnation,
                            const struct buf *offsets, struct sk_error *err)
{
    struct buf one = {0};
    int rc = -1;
    if (exec0(s, "BEGIN", "BEGIN", err) < 0 ||
        exec0(s, "SAVEPOINT", "SAVEPOINT skolsync_record", err) < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (out[i].kind == SK_REJECTED)
            continue;
        const struct sk_record *r = &recs[i];
        struct pg_table *t = find_table(s, r->entity);
        buf_reset(&one);
        const char *sql;
        if (r->value) {
            buf_adds(&one, "[");
            json_upsert_row(&one, r);
            buf_adds(&one, "]");
            sql = t->upsert_sql;
        } else {
            buf_printf(&one, "{%s}", r->key);
            sql = t->delete_sql;
        }
        bool record_level;
        const char *params[] = {one.p};
        struct sk_error rec_err = {0};
        if (exec_params(s, t->entity->collection, sql, 1, params, NULL, &record_level, &rec_err) ==
            0) {
            if (exec0(s, "SAVEPOINT",
                      "RELEASE SAVEPOINT skolsync_record; "
                      "SAVEPOINT skolsync_record",
                      err) < 0)
                goto out;
            continue;
        }
        if (!record_level) {
            *err = rec_err;
            goto out;
        }
        sk_warn(s->component, "%s %s rejected: %s", t->entity->name, r->key, rec_err.msg);
        reject(&out[i], "%s", rec_err.msg);
        if (exec0(s, "ROLLBACK TO SAVEPOINT", "ROLLBACK TO SAVEPOINT skolsync_record", err) < 0)
            goto out;
    }
    if (s->parts.n && store_offsets(s, incarnation, offsets, err) < 0)
        goto out;
    rc = exec0(s, "COMMIT", "COMMIT", err);
out:
    free(one.p);
    return rc;
}

/* Rolls back and reports every record not rejected as not applied. */
static int fail_batch(struct pg_sink *s, size_t n, struct sk_outcome *out, struct sk_error *err)
{
    abandon(s);
    if (err->cls != SK_ERR_FATAL)
        err->cls = SK_ERR_RETRIABLE;
    for (size_t i = 0; i < n; i++) {
        if (out[i].kind == SK_REJECTED)
            continue;
        out[i].kind = SK_RETRY;
        out[i].err = *err;
    }
    return -1;
}

static int pg_apply(struct sk_sink *self, const struct sk_record *recs, size_t n,
                    struct sk_outcome *out, struct sk_error *err)
{
    struct pg_sink *s = self->priv;
    if (n == 0)
        return 0;
    sk_offsets_of_batch(&s->parts, recs, n);
    plan_reset(s, n);
    for (size_t i = 0; i < n; i++) {
        out[i].kind = SK_APPLIED;
        sk_error_clear(&out[i].err);
        struct pg_table *t = check_record(s, &recs[i], &out[i]);
        if (t)
            plan_record(plan_for(s, t, recs[i].key), &recs[i]);
    }
    for (size_t i = 0; i < s->n_plans; i++) {
        const struct plan *p = &s->plans[i];
        if (p->cleared)
            add_delete(p->table, p->key);
        if (p->winner)
            add_upsert(p->table, p->winner);
    }
    for (size_t i = 0; i < s->n_tables; i++)
        finish_arrays(&s->tables[i]);
    struct buf offsets = {0};
    batch_offsets_json(s, &offsets);
    if (ensure_connected(s, err) < 0) {
        free(offsets.p);
        return fail_batch(s, n, out, err);
    }
    int64_t t0 = sk_mono_ms();
    uint64_t trips0 = s->round_trips;
    bool record_level;
    int rc = apply_bulk(s, self->incarnation, &offsets, &record_level, err);
    if (rc < 0 && record_level) {
        sk_info(s->component, "batch refused (%s): applying its %zu records one by one", err->msg,
                n);
        abandon(s);
        sk_error_clear(err);
        rc = apply_one_by_one(s, recs, n, out, self->incarnation, &offsets, err);
    }
    free(offsets.p);
    if (rc < 0)
        return fail_batch(s, n, out, err);
    sk_debug(s->component,
             "applied %zu record(s) as %zu id(s) in %" PRIu64 " statement(s), %" PRId64 " ms", n,
             s->n_plans, s->round_trips - trips0, sk_mono_ms() - t0);
    return 0;
}

/* ---- offsets ------------------------------------------------------------------ */

/* One statement: its own transaction. */
static int pg_mark_offsets(struct sk_sink *self, const struct sk_offsets *offsets,
                           struct sk_error *err)
{
    struct pg_sink *s = self->priv;
    if (offsets->n == 0)
        return 0;
    if (ensure_connected(s, err) < 0)
        return -1;
    struct buf json = {0};
    buf_adds(&json, "[");
    for (size_t i = 0; i < offsets->n; i++) {
        buf_adds(&json, i ? ",{\"topic\":" : "{\"topic\":");
        buf_json_string(&json, offsets->v[i].topic);
        buf_printf(&json, ",\"p\":%" PRId32 ",\"n\":%" PRId64 "}", offsets->v[i].partition,
                   offsets->v[i].next_offset);
    }
    buf_adds(&json, "]");
    int rc = store_offsets(s, self->incarnation, &json, err);
    free(json.p);
    if (rc < 0)
        abandon(s);
    return rc;
}

/* Appends to out (caller frees with sk_offsets_free) the offsets of this incarnation. */
static int pg_stored_offsets(struct sk_sink *self, struct sk_offsets *out, struct sk_error *err)
{
    struct pg_sink *s = self->priv;
    if (ensure_connected(s, err) < 0)
        return -1;
    bool record_level;
    PGresult *res = NULL;
    const char *params[] = {self->incarnation};
    if (exec_params(s, "reading skolsync_offsets", s->offsets_select_sql, 1, params, &res,
                    &record_level, err) < 0) {
        if (err->cls == SK_ERR_PERMANENT)
            err->cls = SK_ERR_FATAL;
        abandon(s);
        return -1;
    }
    for (int i = 0; i < PQntuples(res); i++)
        sk_offsets_add(out, PQgetvalue(res, i, 0), (int32_t)strtol(PQgetvalue(res, i, 1), NULL, 10),
                       strtoll(PQgetvalue(res, i, 2), NULL, 10));
    PQclear(res);
    return 0;
}

static const char *pg_target(struct sk_sink *self)
{
    const struct pg_sink *s = self->priv;
    return s ? s->target : "postgresql";
}

uint64_t postgres_sink_round_trips(const struct sk_sink *self)
{
    const struct pg_sink *s = self ? self->priv : NULL;
    return s ? s->round_trips : 0;
}

const struct sk_sink_ops postgres_sink_ops = {
    .type = "postgres-sink",
    .summary = "current state of each SS 12000 collection in a PostgreSQL table (jsonb and typed "
               "columns), exactly-once",
    .options = pg_options,
    .conf_size = sizeof(struct pg_conf),
    /* A database of record keeps everything; a sink's own settings may restrict it. */
    .default_drop_fields = NULL,
    .default_protected = "allow",
    .open = pg_open,
    .apply = pg_apply,
    .mark_offsets = pg_mark_offsets,
    .stored_offsets = pg_stored_offsets,
    .target = pg_target,
    .close = pg_close,
};
