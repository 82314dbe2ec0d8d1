/*
 * state_store.c: a sink's local SQLite state (state_store.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "buf.h"
#include "log.h"
#include "state_store.h"
#include "util.h"

#define TIME_LEN 64 /* room for any year snprintf might imagine */

/* The cached statements of one collection's table. */
struct state_table {
    char *collection;
    sqlite3_stmt *upsert, *delete, *get;
};

struct sk_state {
    char *path;
    dev_t dev; /* the file opened (0, 0: not a file: no check) */
    ino_t ino;
    sqlite3 *db;
    struct state_table *tables;
    size_t n_tables;
    bool offsets;
    sqlite3_stmt *begin, *commit, *rollback;
    sqlite3_stmt *savepoint, *release, *rollback_to;
    sqlite3_stmt *offset_upsert, *offset_select;
    struct sk_offsets parts; /* of the batch being applied, reused */
    char now[TIME_LEN];      /* updated_at of the open transaction */
};

enum sk_err_class sk_state_error_class(int rc, bool on_record)
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

void sk_state_trim(struct sk_state *st)
{
    if (st && sqlite3_get_autocommit(st->db))
        sqlite3_db_release_memory(st->db);
}

sqlite3 *sk_state_db(struct sk_state *st)
{
    return st->db;
}

const char *sk_state_path(const struct sk_state *st)
{
    return st->path;
}

static int sql_error(struct sk_state *st, int rc, bool on_record, const char *what,
                     struct sk_error *err)
{
    return sk_error_set(err, sk_state_error_class(rc, on_record), "%s: %s", what,
                        sqlite3_errmsg(st->db));
}

int sk_state_exec(struct sk_state *st, const char *sql, struct sk_error *err)
{
    int rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return sk_error_set(err, sk_state_error_class(rc, false), "\"%.80s\": %s", sql,
                            sqlite3_errmsg(st->db));
    return 0;
}

int sk_state_prepare(struct sk_state *st, const char *sql, sqlite3_stmt **out, struct sk_error *err)
{
    int rc = sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL);
    if (rc != SQLITE_OK)
        return sk_error_set(err, sk_state_error_class(rc, false), "preparing \"%.80s...\": %s", sql,
                            sqlite3_errmsg(st->db));
    return 0;
}

int sk_state_run(struct sk_state *st, sqlite3_stmt *stmt, bool on_record, struct sk_error *err)
{
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        rc = SQLITE_DONE;
    if (rc != SQLITE_DONE)
        sk_error_set(err, sk_state_error_class(rc, on_record), "%.60s: %s", sqlite3_sql(stmt),
                     sqlite3_errmsg(st->db));
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* RFC 3339 UTC with milliseconds. */
static void format_utc(int64_t us, char out[TIME_LEN])
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, TIME_LEN, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)((us / 1000) % 1000));
}

/* A quoted SQL identifier ("studyPlans"). Caller frees. */
static char *quote_ident(const char *name)
{
    struct sk_buf b = {0};
    sk_buf_putc(&b, '"');
    for (const char *p = name; *p; p++) {
        if (*p == '"')
            sk_buf_putc(&b, '"');
        sk_buf_putc(&b, *p);
    }
    sk_buf_putc(&b, '"');
    return sk_buf_take(&b);
}

/* ---- open / close ---------------------------------------------------------- */

void sk_state_close(struct sk_state *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n_tables; i++) {
        sqlite3_finalize(st->tables[i].upsert);
        sqlite3_finalize(st->tables[i].delete);
        sqlite3_finalize(st->tables[i].get);
        free(st->tables[i].collection);
    }
    sqlite3_stmt *stmts[] = {st->begin,   st->commit,      st->rollback,      st->savepoint,
                             st->release, st->rollback_to, st->offset_upsert, st->offset_select};
    for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++)
        sqlite3_finalize(stmts[i]);
    if (st->db && !sqlite3_get_autocommit(st->db))
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(st->db);
    sk_offsets_free(&st->parts);
    free(st->tables);
    free(st->path);
    free(st);
}

/* WAL lets readers of the database (reports, a bundle writer) run while the sink writes. */
static int set_pragmas(struct sk_state *st, const char *synchronous, struct sk_error *err)
{
    sqlite3_stmt *q;
    if (sk_state_prepare(st, "PRAGMA journal_mode=WAL", &q, err) < 0)
        return -1;
    int rc = sqlite3_step(q);
    const char *mode = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(q, 0) : NULL;
    if (rc == SQLITE_ROW && (!mode || strcmp(mode, "wal") != 0))
        sk_warn("state", "%s: journal_mode is %s, not wal (file system without shared memory?)",
                st->path, mode ? mode : "unknown");
    sqlite3_finalize(q);
    if (rc != SQLITE_ROW)
        return sql_error(st, rc, false, "PRAGMA journal_mode=WAL", err);
    char *sql = sk_asprintf("PRAGMA synchronous=%s", synchronous ? synchronous : "normal");
    rc = sk_state_exec(st, sql, err);
    free(sql);
    return rc;
}

/* Adds column (with its type) to table unless it has it: a table of an older layout. */
static int ensure_column(struct sk_state *st, const char *table, const char *column,
                         const char *type, struct sk_error *err)
{
    sqlite3_stmt *q;
    if (sk_state_prepare(st, "SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2", &q, err) < 0)
        return -1;
    sqlite3_bind_text(q, 1, table, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, column, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    sqlite3_finalize(q);
    if (rc == SQLITE_ROW)
        return 0;
    if (rc != SQLITE_DONE)
        return sql_error(st, rc, false, "reading the schema", err);
    char *t = quote_ident(table);
    char *sql = sk_asprintf("ALTER TABLE %s ADD COLUMN %s %s", t, column, type);
    rc = sk_state_exec(st, sql, err);
    free(sql);
    free(t);
    return rc;
}

static int create_tables(struct sk_state *st, const struct sk_state_opts *o, struct sk_error *err)
{
    if (o->offsets &&
        (sk_state_exec(st,
                       "CREATE TABLE IF NOT EXISTS skolsync_offsets(topic TEXT, "
                       "partition INTEGER, next_offset INTEGER NOT NULL, incarnation TEXT NOT "
                       "NULL, updated_at TEXT, PRIMARY KEY(topic, partition))",
                       err) < 0 ||
         ensure_column(st, "skolsync_offsets", "updated_at", "TEXT", err) < 0))
        return -1;
    for (size_t i = 0; i < o->n_collections; i++) {
        char *t = quote_ident(o->collections[i]);
        char *sql = sk_asprintf("CREATE TABLE IF NOT EXISTS %s(id TEXT PRIMARY KEY, "
                                "doc TEXT NOT NULL, modified TEXT, modified_us INTEGER, "
                                "updated_at TEXT)",
                                t);
        int rc = sk_state_exec(st, sql, err);
        free(sql);
        free(t);
        if (rc < 0 || ensure_column(st, o->collections[i], "modified", "TEXT", err) < 0 ||
            ensure_column(st, o->collections[i], "updated_at", "TEXT", err) < 0)
            return -1;
    }
    return 0;
}

/* The tables, the owner's schema hook and migrations: one transaction. */
static int ensure_schema(struct sk_state *st, const struct sk_state_opts *o, struct sk_error *err)
{
    if (sk_state_exec(st, "BEGIN IMMEDIATE", err) < 0)
        return -1;
    if (create_tables(st, o, err) < 0 || (o->schema && o->schema(st, o->schema_ctx, err) < 0) ||
        sk_state_exec(st, "COMMIT", err) < 0) {
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

/*
 * An update only wins if its meta.modified is not older than the row's, and
 * an identical document changes nothing, not even updated_at, so a replay
 * leaves the table as it was.
 */
static int prepare_table(struct sk_state *st, struct state_table *t, struct sk_error *err)
{
    char *q = quote_ident(t->collection);
    char *upsert = sk_asprintf(
        "INSERT INTO %s(id, doc, modified, modified_us, updated_at) "
        "VALUES(?1, ?2, json_extract(?2, '$.meta.modified'), ?3, ?4) "
        "ON CONFLICT(id) DO UPDATE SET doc = excluded.doc, modified = excluded.modified, "
        "modified_us = excluded.modified_us, updated_at = excluded.updated_at "
        "WHERE (excluded.modified_us IS NULL OR %s.modified_us IS NULL "
        "OR excluded.modified_us >= %s.modified_us) AND excluded.doc IS NOT %s.doc",
        q, q, q, q);
    char *delete = sk_asprintf("DELETE FROM %s WHERE id = ?1", q);
    char *get = sk_asprintf("SELECT doc, modified_us FROM %s WHERE id = ?1", q);
    int rc = sk_state_prepare(st, upsert, &t->upsert, err);
    if (rc == 0)
        rc = sk_state_prepare(st, delete, &t->delete, err);
    if (rc == 0)
        rc = sk_state_prepare(st, get, &t->get, err);
    free(upsert);
    free(delete);
    free(get);
    free(q);
    return rc;
}

static int prepare_statements(struct sk_state *st, const struct sk_state_opts *o,
                              struct sk_error *err)
{
    st->tables = sk_calloc(o->n_collections ? o->n_collections : 1, sizeof(*st->tables));
    for (size_t i = 0; i < o->n_collections; i++) {
        struct state_table *t = &st->tables[st->n_tables++];
        t->collection = sk_strdup(o->collections[i]);
        if (prepare_table(st, t, err) < 0)
            return -1;
    }
    const struct {
        sqlite3_stmt **stmt;
        const char *sql;
        bool offsets;
    } fixed[] = {
        {&st->begin, "BEGIN IMMEDIATE", false},
        {&st->commit, "COMMIT", false},
        {&st->rollback, "ROLLBACK", false},
        {&st->savepoint, "SAVEPOINT skolsync_record", false},
        {&st->release, "RELEASE skolsync_record", false},
        {&st->rollback_to, "ROLLBACK TO skolsync_record", false},
        {&st->offset_upsert,
         "INSERT INTO skolsync_offsets(topic, partition, next_offset, incarnation, updated_at) "
         "VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(topic, partition) DO UPDATE SET "
         "next_offset = excluded.next_offset, incarnation = excluded.incarnation, "
         "updated_at = excluded.updated_at",
         true},
        {&st->offset_select,
         "SELECT topic, partition, next_offset FROM skolsync_offsets "
         "WHERE incarnation = ?1 ORDER BY topic, partition",
         true},
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if ((!fixed[i].offsets || o->offsets) &&
            sk_state_prepare(st, fixed[i].sql, fixed[i].stmt, err) < 0)
            return -1;
    return 0;
}

struct sk_state *sk_state_open(const struct sk_state_opts *o, struct sk_error *err)
{
    struct sk_state *st = sk_calloc(1, sizeof(*st));
    st->path = sk_strdup(o->path);
    st->offsets = o->offsets;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(o->path, &st->db, flags, NULL);
    if (rc != SQLITE_OK) {
        sk_error_set(err, SK_ERR_FATAL, "%s: %s", o->path,
                     st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
        goto fail;
    }
    if (o->private_file)
        chmod(o->path, 0600);
    sqlite3_extended_result_codes(st->db, 1);
    sqlite3_busy_timeout(st->db, (int)o->busy_timeout_ms);
    format_utc(sk_now_us(), st->now);
    if (set_pragmas(st, o->synchronous, err) < 0 || ensure_schema(st, o, err) < 0 ||
        prepare_statements(st, o, err) < 0)
        goto fail;
    struct stat sb;
    if (stat(o->path, &sb) == 0) { /* the file exists now: the schema is in it */
        st->dev = sb.st_dev;
        st->ino = sb.st_ino;
    }
    return st;
fail:
    sk_state_close(st);
    return NULL;
}

/* ---- transactions ----------------------------------------------------------- */

int sk_state_check_file(const struct sk_state *st, struct sk_error *err)
{
    if (!st || (!st->dev && !st->ino))
        return 0;
    struct stat sb;
    if (stat(st->path, &sb) == 0 && sb.st_dev == st->dev && sb.st_ino == st->ino)
        return 0;
    return sk_error_set(err, SK_ERR_FATAL,
                        "%s was deleted or replaced while open (what is written would go to the "
                        "old file, where nothing reads it)",
                        st->path);
}

int sk_state_begin(struct sk_state *st, struct sk_error *err)
{
    if (!sqlite3_get_autocommit(st->db))
        return 0;
    if (sk_state_check_file(st, err) < 0)
        return -1;
    format_utc(sk_now_us(), st->now);
    return sk_state_run(st, st->begin, false, err);
}

int sk_state_commit(struct sk_state *st, struct sk_error *err)
{
    if (sqlite3_get_autocommit(st->db))
        return 0;
    if (sk_state_run(st, st->commit, false, err) == 0)
        return 0;
    sk_state_rollback(st);
    return -1;
}

void sk_state_rollback(struct sk_state *st)
{
    if (!sqlite3_get_autocommit(st->db)) {
        struct sk_error ignored = {0};
        sk_state_run(st, st->rollback, false, &ignored);
    }
}

/* ---- collections -------------------------------------------------------------- */

static struct state_table *table_of(struct sk_state *st, const char *collection,
                                    struct sk_error *err)
{
    for (size_t i = 0; i < st->n_tables; i++)
        if (strcmp(st->tables[i].collection, collection) == 0)
            return &st->tables[i];
    sk_error_set(err, SK_ERR_PERMANENT, "collection %s is not kept in this state", collection);
    return NULL;
}

static void bind_modified(sqlite3_stmt *stmt, int i, int64_t modified_us)
{
    if (modified_us == INT64_MIN)
        sqlite3_bind_null(stmt, i);
    else
        sqlite3_bind_int64(stmt, i, modified_us);
}

int sk_state_get(struct sk_state *st, const char *collection, const char *id, char **doc,
                 int64_t *modified_us, struct sk_error *err)
{
    struct state_table *t = table_of(st, collection, err);
    if (!t)
        return -1;
    sqlite3_bind_text(t->get, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(t->get);
    int found = rc == SQLITE_ROW;
    if (found) {
        const char *text = (const char *)sqlite3_column_text(t->get, 0);
        if (doc)
            *doc = sk_strdup(text ? text : "");
        if (modified_us)
            *modified_us = sqlite3_column_type(t->get, 1) == SQLITE_NULL
                               ? INT64_MIN
                               : sqlite3_column_int64(t->get, 1);
    } else if (rc != SQLITE_DONE) {
        found = sql_error(st, rc, false, collection, err);
    }
    sqlite3_reset(t->get);
    sqlite3_clear_bindings(t->get);
    return found;
}

int sk_state_keys(struct sk_state *st, const char *collection,
                  void (*fn)(void *ctx, const char *key, const char *doc), void *ctx,
                  struct sk_error *err)
{
    if (!table_of(st, collection, err))
        return -1;
    char *sql = sk_asprintf("SELECT id, doc FROM \"%s\"", collection);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &q, NULL);
    free(sql);
    if (rc != SQLITE_OK)
        return sql_error(st, rc, false, collection, err);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(q, 0);
        if (id)
            fn(ctx, id, (const char *)sqlite3_column_text(q, 1));
    }
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? 0 : sql_error(st, rc, false, collection, err);
}

int sk_state_upsert(struct sk_state *st, const char *collection, const char *id, const char *doc,
                    size_t doc_len, int64_t modified_us, enum sk_state_put *put,
                    struct sk_error *err)
{
    struct state_table *t = table_of(st, collection, err);
    if (!t)
        return -1;
    sqlite3_bind_text(t->upsert, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(t->upsert, 2, doc, (int)doc_len, SQLITE_STATIC);
    bind_modified(t->upsert, 3, modified_us);
    sqlite3_bind_text(t->upsert, 4, st->now, -1, SQLITE_STATIC);
    if (sk_state_run(st, t->upsert, true, err) < 0)
        return -1;
    if (!put)
        return 0;
    *put = SK_STATE_WRITTEN;
    if (sqlite3_changes(st->db) > 0)
        return 0;
    /* Unchanged: the guard kept a newer row, or the document is the same. */
    int64_t stored_us = INT64_MIN;
    if (sk_state_get(st, collection, id, NULL, &stored_us, err) < 0)
        return -1;
    bool stale = modified_us != INT64_MIN && stored_us != INT64_MIN && modified_us < stored_us;
    *put = stale ? SK_STATE_STALE : SK_STATE_SAME;
    return 0;
}

int sk_state_delete(struct sk_state *st, const char *collection, const char *id, int *changes,
                    struct sk_error *err)
{
    struct state_table *t = table_of(st, collection, err);
    if (!t)
        return -1;
    sqlite3_bind_text(t->delete, 1, id, -1, SQLITE_STATIC);
    if (sk_state_run(st, t->delete, true, err) < 0)
        return -1;
    if (changes)
        *changes = sqlite3_changes(st->db);
    return 0;
}

/* ---- offsets -------------------------------------------------------------------- */

int sk_state_store_offsets(struct sk_state *st, const char *incarnation,
                           const struct sk_offsets *offsets, struct sk_error *err)
{
    for (size_t i = 0; i < offsets->n; i++) {
        sqlite3_stmt *q = st->offset_upsert;
        sqlite3_bind_text(q, 1, offsets->v[i].topic, -1, SQLITE_STATIC);
        sqlite3_bind_int(q, 2, offsets->v[i].partition);
        sqlite3_bind_int64(q, 3, offsets->v[i].next_offset);
        sqlite3_bind_text(q, 4, incarnation, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 5, st->now, -1, SQLITE_STATIC);
        if (sk_state_run(st, q, false, err) < 0)
            return -1;
    }
    return 0;
}

int sk_state_mark_offsets(struct sk_state *st, const char *incarnation,
                          const struct sk_offsets *offsets, struct sk_error *err)
{
    if (offsets->n == 0)
        return 0;
    if (sk_state_begin(st, err) < 0 || sk_state_store_offsets(st, incarnation, offsets, err) < 0 ||
        sk_state_commit(st, err) < 0) {
        sk_state_rollback(st);
        return -1;
    }
    return 0;
}

int sk_state_stored_offsets(struct sk_state *st, const char *incarnation, struct sk_offsets *out,
                            struct sk_error *err)
{
    sqlite3_stmt *q = st->offset_select;
    sqlite3_bind_text(q, 1, incarnation, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *topic = (const char *)sqlite3_column_text(q, 0);
        sk_offsets_add(out, topic ? topic : "", sqlite3_column_int(q, 1),
                       sqlite3_column_int64(q, 2));
    }
    if (rc != SQLITE_DONE)
        sql_error(st, rc, false, "reading skolsync_offsets", err);
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* ---- the batch ------------------------------------------------------------------- */

/* One record under its own savepoint, so a rejected record leaves the others standing. */
static int apply_one(struct sk_state *st, const struct sk_record *r, struct sk_outcome *o,
                     sk_state_record_fn fn, void *ctx, struct sk_error *err)
{
    if (sk_state_run(st, st->savepoint, false, err) < 0)
        return -1;
    struct sk_error e = {0};
    if (fn(ctx, r, &e) == 0)
        return sk_state_run(st, st->release, false, err);
    if (e.cls != SK_ERR_PERMANENT) {
        *err = e;
        return -1;
    }
    o->kind = SK_REJECTED;
    o->err = e;
    if (sk_state_run(st, st->rollback_to, false, err) < 0)
        return -1;
    return sk_state_run(st, st->release, false, err);
}

int sk_state_apply(struct sk_state *st, const char *incarnation, const struct sk_record *recs,
                   size_t n, struct sk_outcome *out, sk_state_record_fn fn,
                   sk_state_finish_fn finish, void *ctx, struct sk_error *err)
{
    if (n == 0)
        return 0;
    if (sk_state_begin(st, err) < 0)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        out[i].kind = SK_APPLIED;
        sk_error_clear(&out[i].err);
        if (apply_one(st, &recs[i], &out[i], fn, ctx, err) < 0)
            goto fail;
    }
    if (st->offsets) {
        sk_offsets_of_batch(&st->parts, recs, n);
        if (sk_state_store_offsets(st, incarnation, &st->parts, err) < 0)
            goto fail;
    }
    if ((finish && finish(ctx, err) < 0) || sk_state_commit(st, err) < 0)
        goto fail;
    return 0;
fail:
    sk_state_rollback(st);
    for (size_t i = 0; i < n; i++) {
        out[i].kind = SK_RETRY;
        out[i].err = *err;
    }
    return -1;
}
