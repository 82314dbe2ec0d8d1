/*
 * sqlite_sink.c: the sqlite-sink connector. Keeps the current state of each
 * SS 12000 collection in a table of one SQLite database (the entity as JSON
 * plus its meta.modified), and the consumed Kafka offsets in the same
 * database, written in the same transaction as the rows: exactly-once apply
 * (DESIGN.md, delivery rule 3).
 *
 * Owns: the schema, idempotent upserts and deletes, the offsets table. Must
 * never: let an older meta.modified overwrite a newer one (records can be
 * replayed or arrive from a re-read source), store an offset in another
 * transaction than the rows it covers, or return offsets stored under another
 * broker incarnation (connector.h, struct sk_sink).
 */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>

#include "connector.h"
#include "log.h"
#include "model.h"
#include "util.h"

#define SCHEMA_VERSION 1

struct sqlite_conf {
    char *path;
    char *synchronous;
    int64_t busy_timeout_ms;
};

static const char *const synchronous_choices[] = {"off", "normal", "full", NULL};

static const struct sk_option sqlite_options[] = {
    {.name = "path",
     .type = SK_OPT_STRING,
     .required = true,
     .help = "the database file; created if missing (its directory must exist)",
     .offset = offsetof(struct sqlite_conf, path)},
    {.name = "synchronous",
     .type = SK_OPT_ENUM,
     .def = "normal",
     .help = "PRAGMA synchronous: off, normal (durable to the last checkpoint in WAL mode), full",
     .offset = offsetof(struct sqlite_conf, synchronous),
     .choices = synchronous_choices},
    {.name = "busy_timeout",
     .type = SK_OPT_DURATION,
     .def = "5s",
     .help = "how long to wait for a lock held by another connection before retrying later",
     .offset = offsetof(struct sqlite_conf, busy_timeout_ms),
     .min = 0,
     .max = INT32_MAX},
    {.name = NULL},
};

/* The cached statements of one collection's table. */
struct sink_table {
    const struct sk_entity *entity;
    sqlite3_stmt *upsert;
    sqlite3_stmt *delete;
};

/* The highest offset of one partition within the batch being applied. */
struct sqlite_sink {
    const char *component;
    sqlite3 *db;
    struct sink_table *tables;
    size_t n_tables;
    sqlite3_stmt *begin, *commit, *rollback;
    sqlite3_stmt *savepoint, *release, *rollback_to;
    sqlite3_stmt *offset_upsert, *offset_select;
    struct sk_offsets parts; /* of the batch being applied, reused */
    char *json;              /* a record's doc printed, reused across records */
    size_t json_cap;
};

/* ---- SQLite helpers ------------------------------------------------------ */

/*
 * What an SQLite error means for the caller. RETRIABLE: busy, full disk, I/O
 * trouble; may pass. FATAL: a corrupt, read-only or vanished database; will
 * not. Anything else on a record's own statement (a constraint, a type
 * mismatch) is PERMANENT for that record only; outside a record's statement
 * (BEGIN, COMMIT, the offsets) it fails the connector.
 */
static enum sk_err_class sql_error_class(int rc, bool on_record)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_NOMEM:
    case SQLITE_PROTOCOL:
    case SQLITE_INTERRUPT:
        return SK_ERR_RETRIABLE;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return SK_ERR_FATAL;
    default:
        return on_record ? SK_ERR_PERMANENT : SK_ERR_FATAL;
    }
}

/* Steps a statement that returns no rows and resets it. Returns SQLITE_DONE or the error. */
static int run(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? SQLITE_DONE : rc;
}

static int prepare(struct sqlite_sink *s, const char *sql, sqlite3_stmt **st, struct sk_error *err)
{
    int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
    if (rc != SQLITE_OK)
        return sk_error_set(err, SK_ERR_FATAL, "preparing \"%.80s...\": %s", sql,
                            sqlite3_errmsg(s->db));
    return 0;
}

static int exec(struct sqlite_sink *s, const char *sql, struct sk_error *err)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return sk_error_set(err, sql_error_class(rc, false), "\"%.80s\": %s", sql,
                            sqlite3_errmsg(s->db));
    return 0;
}

/* A quoted SQL identifier ("studyPlans"). Caller frees. */
static char *quote_ident(const char *name)
{
    size_t n = strlen(name), k = 0;
    char *q = sk_malloc(2 * n + 3);
    q[k++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (name[i] == '"')
            q[k++] = '"';
        q[k++] = name[i];
    }
    q[k++] = '"';
    q[k] = '\0';
    return q;
}

#define TIME_LEN 64 /* room for any year snprintf might imagine */

/* RFC 3339 UTC with milliseconds, into out[TIME_LEN]. */
static void format_utc(int64_t us, char out[TIME_LEN])
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, TIME_LEN, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)((us / 1000) % 1000));
}

/* ---- open / close -------------------------------------------------------- */

static void sqlite_close(struct sk_sink *self)
{
    struct sqlite_sink *s = self->priv;
    if (!s)
        return;
    for (size_t i = 0; i < s->n_tables; i++) {
        sqlite3_finalize(s->tables[i].upsert);
        sqlite3_finalize(s->tables[i].delete);
    }
    sqlite3_stmt *stmts[] = {s->begin,   s->commit,      s->rollback,      s->savepoint,
                             s->release, s->rollback_to, s->offset_upsert, s->offset_select};
    for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++)
        sqlite3_finalize(stmts[i]);
    sqlite3_close(s->db);
    free(s->json);
    free(s->tables);
    sk_offsets_free(&s->parts);
    free(s);
    self->priv = NULL;
}

/* The database file may be created, but not its directory (a typo should not make a tree). */
static int check_parent_dir(const char *path, struct sk_error *err)
{
    char *copy = sk_strdup(path);
    const char *dir = dirname(copy);
    struct stat st;
    int rc = 0;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
        rc = sk_error_set(err, SK_ERR_FATAL, "path %s: directory %s does not exist", path, dir);
    free(copy);
    return rc;
}

/* WAL lets readers of the database (reports, other tools) run while the sink writes. */
static int set_pragmas(struct sqlite_sink *s, const struct sqlite_conf *conf, struct sk_error *err)
{
    sqlite3_stmt *st;
    if (prepare(s, "PRAGMA journal_mode=WAL", &st, err) < 0)
        return -1;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sk_error_set(err, sql_error_class(rc, false), "PRAGMA journal_mode=WAL: %s",
                     sqlite3_errmsg(s->db));
        sqlite3_finalize(st);
        return -1;
    }
    const char *mode = (const char *)sqlite3_column_text(st, 0);
    if (!mode || strcmp(mode, "wal") != 0)
        sk_warn(s->component, "journal_mode is %s, not wal (file system without shared memory?)",
                mode ? mode : "unknown");
    sqlite3_finalize(st);
    char *sql =
        sk_asprintf("PRAGMA synchronous=%s", conf->synchronous ? conf->synchronous : "normal");
    rc = exec(s, sql, err);
    free(sql);
    return rc;
}

/* Creates or checks the schema (one transaction). */
static int ensure_schema(struct sqlite_sink *s, const struct sk_sink *self, struct sk_error *err)
{
    if (exec(s, "BEGIN IMMEDIATE", err) < 0)
        return -1;
    if (exec(s, "CREATE TABLE IF NOT EXISTS skolsync_schema(version INTEGER NOT NULL)", err) < 0)
        goto fail;
    sqlite3_stmt *st;
    if (prepare(s, "SELECT max(version) FROM skolsync_schema", &st, err) < 0)
        goto fail;
    int rc = sqlite3_step(st);
    bool empty = rc == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_NULL;
    int64_t version = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) {
        sk_error_set(err, sql_error_class(rc, false), "reading skolsync_schema: %s",
                     sqlite3_errmsg(s->db));
        goto fail;
    }
    if (!empty && version > SCHEMA_VERSION) {
        sk_error_set(err, SK_ERR_FATAL,
                     "the database has schema version %" PRId64
                     ", newer than this skolsync knows (%d)",
                     version, SCHEMA_VERSION);
        goto fail;
    }
    if (empty && exec(s, "INSERT INTO skolsync_schema(version) VALUES(1)", err) < 0)
        goto fail;
    if (exec(s,
             "CREATE TABLE IF NOT EXISTS skolsync_offsets(topic TEXT, partition INTEGER, "
             "next_offset INTEGER NOT NULL, incarnation TEXT NOT NULL, updated_at TEXT, "
             "PRIMARY KEY(topic, partition))",
             err) < 0)
        goto fail;
    for (size_t i = 0; i < self->n_entities; i++) {
        char *table = quote_ident(self->entities[i]->collection);
        char *sql = sk_asprintf("CREATE TABLE IF NOT EXISTS %s(id TEXT PRIMARY KEY, "
                                "doc TEXT NOT NULL, modified TEXT, modified_us INTEGER, "
                                "updated_at TEXT NOT NULL)",
                                table);
        int failed = exec(s, sql, err);
        free(sql);
        free(table);
        if (failed)
            goto fail;
    }
    return exec(s, "COMMIT", err);
fail:
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/*
 * The stale-update guard (DESIGN.md, delivery rule 3): an update only wins if
 * its meta.modified is not older than the row's, compared as instants
 * (modified_us) because the same instant can be written with different
 * offsets. When either side has no meta.modified they cannot be ordered:
 * the arriving record wins (Kafka keeps per-key order). An identical document
 * changes nothing, not even updated_at, so a replay leaves the table as it
 * was. `modified` keeps meta.modified as the source wrote it.
 */
static int prepare_table(struct sqlite_sink *s, struct sink_table *t, struct sk_error *err)
{
    char *q = quote_ident(t->entity->collection);
    char *upsert = sk_asprintf(
        "INSERT INTO %s(id, doc, modified, modified_us, updated_at) "
        "VALUES(?1, ?2, json_extract(?2, '$.meta.modified'), ?3, ?4) "
        "ON CONFLICT(id) DO UPDATE SET doc = excluded.doc, modified = excluded.modified, "
        "modified_us = excluded.modified_us, updated_at = excluded.updated_at "
        "WHERE (excluded.modified_us IS NULL OR %s.modified_us IS NULL "
        "OR excluded.modified_us >= %s.modified_us) AND excluded.doc IS NOT %s.doc",
        q, q, q, q);
    char *delete = sk_asprintf("DELETE FROM %s WHERE id = ?1", q);
    int rc = prepare(s, upsert, &t->upsert, err);
    if (rc == 0)
        rc = prepare(s, delete, &t->delete, err);
    free(upsert);
    free(delete);
    free(q);
    return rc;
}

static int prepare_statements(struct sqlite_sink *s, const struct sk_sink *self,
                              struct sk_error *err)
{
    s->tables = sk_calloc(self->n_entities, sizeof(*s->tables));
    for (size_t i = 0; i < self->n_entities; i++) {
        s->tables[s->n_tables].entity = self->entities[i];
        if (prepare_table(s, &s->tables[s->n_tables++], err) < 0)
            return -1;
    }
    const struct {
        sqlite3_stmt **st;
        const char *sql;
    } fixed[] = {
        {&s->begin, "BEGIN IMMEDIATE"},
        {&s->commit, "COMMIT"},
        {&s->rollback, "ROLLBACK"},
        {&s->savepoint, "SAVEPOINT skolsync_record"},
        {&s->release, "RELEASE skolsync_record"},
        {&s->rollback_to, "ROLLBACK TO skolsync_record"},
        {&s->offset_upsert,
         "INSERT INTO skolsync_offsets(topic, partition, next_offset, incarnation, updated_at) "
         "VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(topic, partition) DO UPDATE SET "
         "next_offset = excluded.next_offset, incarnation = excluded.incarnation, "
         "updated_at = excluded.updated_at"},
        {&s->offset_select, "SELECT topic, partition, next_offset FROM skolsync_offsets "
                            "WHERE incarnation = ?1 ORDER BY topic, partition"},
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (prepare(s, fixed[i].sql, fixed[i].st, err) < 0)
            return -1;
    return 0;
}

/* Sets self->priv (freed by sqlite_close, also when open fails). */
static int sqlite_open(struct sk_sink *self, struct sk_error *err)
{
    const struct sqlite_conf *conf = self->conf;
    struct sqlite_sink *s = sk_calloc(1, sizeof(*s));
    self->priv = s;
    s->component = self->name ? self->name : "sqlite-sink";
    if (!conf->path) {
        sk_error_set(err, SK_ERR_FATAL, "path: required");
        goto fail;
    }
    if (!self->incarnation) {
        sk_error_set(err, SK_ERR_FATAL, "no broker incarnation given: offsets cannot be kept");
        goto fail;
    }
    if (check_parent_dir(conf->path, err) < 0)
        goto fail;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(conf->path, &s->db, flags, NULL);
    if (rc != SQLITE_OK) {
        sk_error_set(err, SK_ERR_FATAL, "path %s: %s", conf->path,
                     s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, (int)conf->busy_timeout_ms);
    if (set_pragmas(s, conf, err) < 0 || ensure_schema(s, self, err) < 0 ||
        prepare_statements(s, self, err) < 0)
        goto fail;
    return 0;
fail:
    sqlite_close(self);
    return -1;
}

/* ---- apply --------------------------------------------------------------- */

static struct sink_table *find_table(struct sqlite_sink *s, const struct sk_entity *e)
{
    for (size_t i = 0; i < s->n_tables; i++)
        if (s->tables[i].entity == e)
            return &s->tables[i];
    return NULL;
}

/* Offsets are stored under the broker incarnation they belong to (connector.h). */
static int store_offset(struct sqlite_sink *s, const char *incarnation, const char *topic,
                        int32_t partition, int64_t next_offset, const char *now)
{
    sqlite3_stmt *st = s->offset_upsert;
    sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, partition);
    sqlite3_bind_int64(st, 3, next_offset);
    sqlite3_bind_text(st, 4, incarnation, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, now, -1, SQLITE_STATIC);
    int rc = run(st);
    sqlite3_clear_bindings(st);
    return rc;
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

/*
 * One record inside the batch's transaction, under its own savepoint so a
 * rejected record leaves the others standing. Returns SQLITE_DONE when the
 * record was applied or rejected (o says which), or the SQLite error that
 * fails the whole batch (*msg set).
 */
static int apply_record(struct sqlite_sink *s, const struct sk_record *r, const char *now,
                        struct sk_outcome *o, char *msg, size_t msg_size)
{
    struct sink_table *t = find_table(s, r->entity);
    if (!t) {
        reject(o, "entity type %s is not one this sink was opened for",
               r->entity ? r->entity->name : "(none)");
        return SQLITE_DONE;
    }
    if (r->key[0] == '\0') {
        reject(o, "record without a key");
        return SQLITE_DONE;
    }
    char *doc = NULL; /* the codec's, freed below */
    const char *text;
    sqlite3_stmt *st;
    if (!r->value) {
        st = t->delete; /* a tombstone; a missing row is no error */
        sqlite3_bind_text(st, 1, r->key, -1, SQLITE_STATIC);
    } else {
        int64_t modified_us = r->modified_us;
        if (r->doc) {
            /* decoded once by the driver, privacy policy applied */
            sk_json_print_into(r->doc, &s->json, &s->json_cap);
            text = s->json;
        } else {
            doc = sk_codec_decode(r->entity, r->value, r->value_len, &modified_us, &o->err);
            if (!doc) {
                o->kind = SK_REJECTED;
                o->err.cls = SK_ERR_PERMANENT;
                return SQLITE_DONE;
            }
            text = doc;
        }
        st = t->upsert;
        sqlite3_bind_text(st, 1, r->key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, text, -1, SQLITE_STATIC);
        if (modified_us == INT64_MIN)
            sqlite3_bind_null(st, 3);
        else
            sqlite3_bind_int64(st, 3, modified_us);
        sqlite3_bind_text(st, 4, now, -1, SQLITE_STATIC);
    }
    int rc = run(s->savepoint);
    if (rc == SQLITE_DONE) {
        rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
            snprintf(msg, msg_size, "%s", sqlite3_errmsg(s->db));
        sqlite3_reset(st);
    }
    sqlite3_clear_bindings(st);
    free(doc);
    if (rc == SQLITE_DONE)
        return run(s->release);
    if (sql_error_class(rc, true) != SK_ERR_PERMANENT)
        return rc;
    /* A constraint or type error: this record only. */
    reject(o, "%s", msg);
    rc = run(s->rollback_to);
    return rc == SQLITE_DONE ? run(s->release) : rc;
}

/* Rolls back and reports the whole batch as not applied. */
static int fail_batch(struct sqlite_sink *s, int rc, const char *what, const char *msg, size_t n,
                      struct sk_outcome *out, struct sk_error *err)
{
    sk_error_set(err, sql_error_class(rc, false), "%s: %s", what, msg);
    if (!sqlite3_get_autocommit(s->db))
        run(s->rollback);
    for (size_t i = 0; i < n; i++) {
        out[i].kind = SK_RETRY;
        out[i].err = *err;
    }
    return -1;
}

/*
 * One transaction: every record (upsert, delete, or rejected), then
 * next_offset = highest offset + 1 of each partition in the batch. Rejected
 * records count: the driver dead-letters them before it commits.
 */
static int sqlite_apply(struct sk_sink *self, const struct sk_record *recs, size_t n,
                        struct sk_outcome *out, struct sk_error *err)
{
    struct sqlite_sink *s = self->priv;
    if (n == 0)
        return 0;
    char now[TIME_LEN], msg[512];
    format_utc(sk_now_us(), now);
    sk_offsets_of_batch(&s->parts, recs, n);
    int rc = run(s->begin);
    if (rc != SQLITE_DONE)
        return fail_batch(s, rc, "BEGIN", sqlite3_errmsg(s->db), n, out, err);
    for (size_t i = 0; i < n; i++) {
        out[i].kind = SK_APPLIED;
        sk_error_clear(&out[i].err);
        msg[0] = '\0';
        rc = apply_record(s, &recs[i], now, &out[i], msg, sizeof(msg));
        if (rc != SQLITE_DONE)
            return fail_batch(s, rc, recs[i].entity ? recs[i].entity->collection : "record",
                              msg[0] ? msg : sqlite3_errmsg(s->db), n, out, err);
    }
    for (size_t i = 0; i < s->parts.n; i++) {
        const struct sk_offset *p = &s->parts.v[i];
        rc = store_offset(s, self->incarnation, p->topic, p->partition, p->next_offset, now);
        if (rc != SQLITE_DONE)
            return fail_batch(s, rc, "skolsync_offsets", sqlite3_errmsg(s->db), n, out, err);
    }
    rc = run(s->commit);
    if (rc != SQLITE_DONE)
        return fail_batch(s, rc, "COMMIT", sqlite3_errmsg(s->db), n, out, err);
    return 0;
}

/* ---- offsets ------------------------------------------------------------- */

static int sqlite_mark_offsets(struct sk_sink *self, const struct sk_offsets *offsets,
                               struct sk_error *err)
{
    struct sqlite_sink *s = self->priv;
    if (offsets->n == 0)
        return 0;
    char now[TIME_LEN];
    format_utc(sk_now_us(), now);
    int rc = run(s->begin);
    for (size_t i = 0; rc == SQLITE_DONE && i < offsets->n; i++)
        rc = store_offset(s, self->incarnation, offsets->v[i].topic, offsets->v[i].partition,
                          offsets->v[i].next_offset, now);
    if (rc == SQLITE_DONE)
        rc = run(s->commit);
    if (rc == SQLITE_DONE)
        return 0;
    sk_error_set(err, sql_error_class(rc, false), "storing offsets: %s", sqlite3_errmsg(s->db));
    if (!sqlite3_get_autocommit(s->db))
        run(s->rollback);
    return -1;
}

/* Appends to out (caller frees with sk_offsets_free) the offsets of this incarnation. */
static int sqlite_stored_offsets(struct sk_sink *self, struct sk_offsets *out, struct sk_error *err)
{
    struct sqlite_sink *s = self->priv;
    sqlite3_stmt *st = s->offset_select;
    sqlite3_bind_text(st, 1, self->incarnation, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *topic = (const char *)sqlite3_column_text(st, 0);
        sk_offsets_add(out, topic ? topic : "", sqlite3_column_int(st, 1),
                       sqlite3_column_int64(st, 2));
    }
    if (rc != SQLITE_DONE)
        sk_error_set(err, sql_error_class(rc, false), "reading skolsync_offsets: %s",
                     sqlite3_errmsg(s->db));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static const char *sqlite_target(struct sk_sink *self)
{
    return ((const struct sqlite_conf *)self->conf)->path;
}

const struct sk_sink_ops sqlite_sink_ops = {
    .type = "sqlite-sink",
    .summary = "current state of each SS 12000 collection in a SQLite table, exactly-once",
    .options = sqlite_options,
    .conf_size = sizeof(struct sqlite_conf),
    .open = sqlite_open,
    .apply = sqlite_apply,
    .mark_offsets = sqlite_mark_offsets,
    .stored_offsets = sqlite_stored_offsets,
    .target = sqlite_target,
    .close = sqlite_close,
};
