/*
 * scim_state.c: the scim-sink's local state, one SQLite file per sink
 * (<state_dir>/<sink name>.db, mode 0600):
 *
 *   persons,      the last applied SS 12000 Person and Group (after the
 *   groups        privacy policy) and its meta.modified: the stale guard,
 *                 and what a person's account is rendered from when a Duty
 *                 or a student's responsibles make them a user later (the
 *                 shared state store's collection tables, state_store.h;
 *                 the table `docs` of older versions is moved into them)
 *   duties        duty -> person, role, still current
 *   responsibles  student -> guardian
 *   members       group -> person (current memberships)
 *   scim_ids      SS 12000 UUID -> SCIM id, and the body last sent
 *   dirty_groups  groups whose member list must be sent again
 *   skolsync_offsets  the consumed offsets (state_store.h), stored with
 *                 the batch they cover
 *
 * Owns: the relation tables and their statements. Must never: be the only copy of
 * anything the SCIM server or Kafka cannot give back. A lost state file is
 * rebuilt by replaying the topics (it has no offsets, so the sink driver
 * reads them from the start); the SCIM ids are found again by externalId
 * (scim_sink.c), so it never causes duplicates.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "scim.h"
#include "state_store.h"
#include "util.h"

enum stmt {
    ST_GET_DUTY,
    ST_PUT_DUTY,
    ST_DEL_DUTY,
    ST_DUTIES_OF,
    ST_DEL_RESP,
    ST_ADD_RESP,
    ST_GET_RESP,
    ST_IS_GUARDIAN,
    ST_DEL_MEMBERS,
    ST_ADD_MEMBER,
    ST_MEMBER_IDS,
    ST_MARK_GROUPS,
    ST_DIRTY,
    ST_CLEAR_DIRTY,
    ST_GET_MAP,
    ST_PUT_MAP,
    ST_DEL_MAP,
    ST_COUNT
};

static const char *const sql_text[ST_COUNT] = {
    [ST_GET_DUTY] = "SELECT person, modified_us FROM duties WHERE uuid = ?1",
    [ST_PUT_DUTY] = "INSERT INTO duties(uuid, person, role, current, modified_us) "
                    "VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(uuid) DO UPDATE SET "
                    "person = excluded.person, role = excluded.role, current = excluded.current, "
                    "modified_us = excluded.modified_us",
    [ST_DEL_DUTY] = "DELETE FROM duties WHERE uuid = ?1",
    [ST_DUTIES_OF] = "SELECT role FROM duties WHERE person = ?1 AND current = 1",
    [ST_DEL_RESP] = "DELETE FROM responsibles WHERE student = ?1",
    [ST_ADD_RESP] = "INSERT OR IGNORE INTO responsibles(student, guardian) VALUES(?1, ?2)",
    [ST_GET_RESP] = "SELECT guardian FROM responsibles WHERE student = ?1 ORDER BY guardian",
    [ST_IS_GUARDIAN] = "SELECT 1 FROM responsibles WHERE guardian = ?1 LIMIT 1",
    [ST_DEL_MEMBERS] = "DELETE FROM members WHERE grp = ?1",
    [ST_ADD_MEMBER] = "INSERT OR IGNORE INTO members(grp, person) VALUES(?1, ?2)",
    [ST_MEMBER_IDS] = "SELECT s.scim_id FROM members m JOIN scim_ids s ON s.kind = 'User' "
                      "AND s.uuid = m.person WHERE m.grp = ?1 ORDER BY m.person",
    [ST_MARK_GROUPS] = "INSERT OR IGNORE INTO dirty_groups(grp) "
                       "SELECT grp FROM members WHERE person = ?1",
    [ST_DIRTY] = "SELECT grp FROM dirty_groups ORDER BY grp",
    [ST_CLEAR_DIRTY] = "DELETE FROM dirty_groups WHERE grp = ?1",
    [ST_GET_MAP] = "SELECT scim_id, sent FROM scim_ids WHERE kind = ?1 AND uuid = ?2",
    [ST_PUT_MAP] = "INSERT INTO scim_ids(kind, uuid, scim_id, sent) VALUES(?1, ?2, ?3, ?4) "
                   "ON CONFLICT(kind, uuid) DO UPDATE SET scim_id = excluded.scim_id, "
                   "sent = excluded.sent",
    [ST_DEL_MAP] = "DELETE FROM scim_ids WHERE kind = ?1 AND uuid = ?2",
};

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS duties(uuid TEXT PRIMARY KEY, person TEXT NOT NULL, role TEXT, "
    "  current INTEGER NOT NULL, modified_us INTEGER);"
    "CREATE INDEX IF NOT EXISTS duties_person ON duties(person);"
    "CREATE TABLE IF NOT EXISTS responsibles(student TEXT NOT NULL, guardian TEXT NOT NULL, "
    "  PRIMARY KEY(student, guardian)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS responsibles_guardian ON responsibles(guardian);"
    "CREATE TABLE IF NOT EXISTS members(grp TEXT NOT NULL, person TEXT NOT NULL, "
    "  PRIMARY KEY(grp, person)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS members_person ON members(person);"
    "CREATE TABLE IF NOT EXISTS scim_ids(kind TEXT NOT NULL, uuid TEXT NOT NULL, "
    "  scim_id TEXT NOT NULL, sent TEXT, PRIMARY KEY(kind, uuid)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS dirty_groups(grp TEXT PRIMARY KEY) WITHOUT ROWID;";

/* The collections of the documents kept, by the kind the sink names them with. */
static const char *const collections[] = {"persons", "groups"};

/* Before the shared store, both kinds were one table (docs), keyed by kind and uuid. */
static const char migrate_docs_sql[] =
    "INSERT OR IGNORE INTO persons(id, doc, modified, modified_us) SELECT uuid, doc, "
    "  json_extract(doc, '$.meta.modified'), modified_us FROM docs WHERE kind = 'Person';"
    "INSERT OR IGNORE INTO groups(id, doc, modified, modified_us) SELECT uuid, doc, "
    "  json_extract(doc, '$.meta.modified'), modified_us FROM docs WHERE kind = 'Group';"
    "DROP TABLE docs;";

struct scim_state {
    struct sk_state *store;
    sqlite3 *db; /* the store's connection */
    sqlite3_stmt *st[ST_COUNT];
    char err[256]; /* the first failure since scim_state_take_error */
};

static void note_error(struct scim_state *s, const char *what)
{
    if (!s->err[0])
        snprintf(s->err, sizeof(s->err), "state %s: %s", what, sqlite3_errmsg(s->db));
}

bool scim_state_take_error(struct scim_state *s, char *out, size_t size)
{
    if (!s->err[0])
        return false;
    snprintf(out, size, "%s", s->err);
    s->err[0] = '\0';
    return true;
}

/* Binds text (NULL binds NULL) to the statement's parameters 1.. */
static sqlite3_stmt *bind(struct scim_state *s, enum stmt which, int n, ...)
{
    sqlite3_stmt *st = s->st[which];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    va_list ap;
    va_start(ap, n);
    for (int i = 1; i <= n; i++) {
        const char *v = va_arg(ap, const char *);
        if (v)
            sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    }
    va_end(ap);
    return st;
}

static void run(struct scim_state *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        note_error(s, what);
    sqlite3_reset(st);
}

static void bind_modified(sqlite3_stmt *st, int i, int64_t modified_us)
{
    if (modified_us == INT64_MIN)
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_int64(st, i, modified_us);
}

static int64_t column_modified(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? INT64_MIN : sqlite3_column_int64(st, i);
}

static const char *collection_of(const char *kind)
{
    return strcmp(kind, "Group") == 0 ? collections[1] : collections[0];
}

static int ensure_schema(struct sk_state *store, void *ctx, struct sk_error *err)
{
    if (sk_state_exec(store, schema_sql, err) < 0)
        return -1;
    sqlite3_stmt *q;
    if (sk_state_prepare(store,
                         "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'docs'", &q,
                         err) < 0)
        return -1;
    bool old = sqlite3_step(q) == SQLITE_ROW;
    sqlite3_finalize(q);
    return old ? sk_state_exec(store, migrate_docs_sql, err) : 0;
}

struct scim_state *scim_state_open(const char *dir, const char *name, struct sk_error *err)
{
    struct scim_state *s = sk_calloc(1, sizeof(*s));
    char *path = NULL;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        sk_error_set(err, SK_ERR_FATAL, "state_dir %s: %s", dir, strerror(errno));
        goto fail;
    }
    path = sk_asprintf("%s/%s.db", dir, name);
    struct sk_state_opts o = {.path = path,
                              .busy_timeout_ms = 5000,
                              .private_file = true, /* person documents */
                              .offsets = true, /* a lost state is filled from the start */
                              .collections = collections,
                              .n_collections = 2,
                              .schema = ensure_schema};
    s->store = sk_state_open(&o, err);
    if (!s->store)
        goto fail;
    s->db = sk_state_db(s->store);
    for (int i = 0; i < ST_COUNT; i++)
        if (sk_state_prepare(s->store, sql_text[i], &s->st[i], err) < 0)
            goto fail;
    free(path);
    return s;
fail:
    free(path);
    scim_state_close(s);
    return NULL;
}

void scim_state_close(struct scim_state *s)
{
    if (!s)
        return;
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->st[i]);
    sk_state_close(s->store);
    free(s);
}

struct sk_state *scim_state_store(struct scim_state *s)
{
    return s->store;
}

int scim_state_begin(struct scim_state *s, struct sk_error *err)
{
    return sk_state_begin(s->store, err);
}

int scim_state_commit(struct scim_state *s, struct sk_error *err)
{
    return sk_state_commit(s->store, err);
}

/* A store failure, kept for the batch's error (scim_state_take_error). */
static void note_store_error(struct scim_state *s, const struct sk_error *e)
{
    if (!s->err[0])
        snprintf(s->err, sizeof(s->err), "state: %.240s", e->msg);
}

int scim_state_get_doc(struct scim_state *s, const char *kind, const char *uuid, cJSON **doc,
                       int64_t *modified_us)
{
    struct sk_error e = {0};
    char *text = NULL;
    int found =
        sk_state_get(s->store, collection_of(kind), uuid, doc ? &text : NULL, modified_us, &e);
    if (found < 0) {
        note_store_error(s, &e);
        return 0;
    }
    if (found && doc)
        *doc = cJSON_Parse(text);
    free(text);
    return found;
}

bool scim_state_put_doc(struct scim_state *s, const char *kind, const char *uuid, const char *json,
                        size_t json_len, int64_t modified_us)
{
    struct sk_error e = {0};
    enum sk_state_put put = SK_STATE_WRITTEN;
    if (sk_state_upsert(s->store, collection_of(kind), uuid, json, json_len, modified_us, &put,
                        &e) < 0)
        note_store_error(s, &e);
    return put != SK_STATE_STALE;
}

void scim_state_del_doc(struct scim_state *s, const char *kind, const char *uuid)
{
    struct sk_error e = {0};
    if (sk_state_delete(s->store, collection_of(kind), uuid, NULL, &e) < 0)
        note_store_error(s, &e);
}

int scim_state_get_duty(struct scim_state *s, const char *uuid, char person[37],
                        int64_t *modified_us)
{
    sqlite3_stmt *st = bind(s, ST_GET_DUTY, 1, uuid);
    int found = 0;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        found = 1;
        snprintf(person, 37, "%s", (const char *)sqlite3_column_text(st, 0));
        *modified_us = column_modified(st, 1);
    } else if (rc != SQLITE_DONE) {
        note_error(s, "reading duties");
    }
    sqlite3_reset(st);
    return found;
}

void scim_state_put_duty(struct scim_state *s, const char *uuid, const char *person,
                         const char *role, bool current, int64_t modified_us)
{
    sqlite3_stmt *st = bind(s, ST_PUT_DUTY, 3, uuid, person, role);
    sqlite3_bind_int(st, 4, current ? 1 : 0);
    bind_modified(st, 5, modified_us);
    run(s, st, "writing duties");
}

void scim_state_del_duty(struct scim_state *s, const char *uuid)
{
    run(s, bind(s, ST_DEL_DUTY, 1, uuid), "deleting duties");
}

bool scim_state_has_duty(struct scim_state *s, const char *person, const struct sk_strlist *roles)
{
    sqlite3_stmt *st = bind(s, ST_DUTIES_OF, 1, person);
    bool found = false;
    int rc;
    while (!found && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *role = (const char *)sqlite3_column_text(st, 0);
        found = roles->n == 0 || (role && scim_strlist_has(roles, role));
    }
    sqlite3_reset(st);
    return found;
}

/* Replaces the set of (owner, member) rows: del removes owner's rows, add inserts one. */
static void replace_set(struct scim_state *s, int del, int add, const char *owner,
                        const struct sk_strlist *members, const char *what)
{
    run(s, bind(s, del, 1, owner), what);
    for (size_t i = 0; members && i < members->n; i++)
        run(s, bind(s, add, 2, owner, members->v[i]), what);
}

void scim_state_set_responsibles(struct scim_state *s, const char *student,
                                 const struct sk_strlist *guardians)
{
    replace_set(s, ST_DEL_RESP, ST_ADD_RESP, student, guardians, "writing responsibles");
}

static void collect(struct scim_state *s, sqlite3_stmt *st, struct sk_strlist *out,
                    const char *what)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        scim_strlist_add(out, (const char *)sqlite3_column_text(st, 0));
    if (rc != SQLITE_DONE)
        note_error(s, what);
    sqlite3_reset(st);
}

void scim_state_responsibles(struct scim_state *s, const char *student, struct sk_strlist *out)
{
    collect(s, bind(s, ST_GET_RESP, 1, student), out, "reading responsibles");
}

bool scim_state_is_guardian(struct scim_state *s, const char *person)
{
    sqlite3_stmt *st = bind(s, ST_IS_GUARDIAN, 1, person);
    bool found = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_reset(st);
    return found;
}

void scim_state_set_members(struct scim_state *s, const char *group,
                            const struct sk_strlist *persons)
{
    replace_set(s, ST_DEL_MEMBERS, ST_ADD_MEMBER, group, persons, "writing members");
}

void scim_state_member_ids(struct scim_state *s, const char *group, struct sk_strlist *out)
{
    collect(s, bind(s, ST_MEMBER_IDS, 1, group), out, "reading members");
}

void scim_state_mark_groups_of(struct scim_state *s, const char *person)
{
    run(s, bind(s, ST_MARK_GROUPS, 1, person), "marking groups");
}

void scim_state_dirty_groups(struct scim_state *s, struct sk_strlist *out)
{
    collect(s, bind(s, ST_DIRTY, 0), out, "reading dirty groups");
}

void scim_state_clear_dirty(struct scim_state *s, const char *group)
{
    run(s, bind(s, ST_CLEAR_DIRTY, 1, group), "clearing dirty groups");
}

int scim_state_get_map(struct scim_state *s, const char *kind, const char *uuid, char **id,
                       char **sent)
{
    sqlite3_stmt *st = bind(s, ST_GET_MAP, 2, kind, uuid);
    int found = 0;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        found = 1;
        *id = sk_strdup((const char *)sqlite3_column_text(st, 0));
        const char *text = (const char *)sqlite3_column_text(st, 1);
        if (sent)
            *sent = text ? sk_strdup(text) : NULL;
    } else if (rc != SQLITE_DONE) {
        note_error(s, "reading scim_ids");
    }
    sqlite3_reset(st);
    return found;
}

void scim_state_put_map(struct scim_state *s, const char *kind, const char *uuid, const char *id,
                        const char *sent)
{
    run(s, bind(s, ST_PUT_MAP, 4, kind, uuid, id, sent), "writing scim_ids");
}

void scim_state_del_map(struct scim_state *s, const char *kind, const char *uuid)
{
    run(s, bind(s, ST_DEL_MAP, 2, kind, uuid), "deleting scim_ids");
}

/* ---- small string lists ------------------------------------------------------ */

void scim_strlist_add(struct sk_strlist *l, const char *s)
{
    l->v = sk_realloc(l->v, (l->n + 1) * sizeof(char *));
    l->v[l->n++] = sk_strdup(s ? s : "");
}

bool scim_strlist_has(const struct sk_strlist *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return true;
    return false;
}

void scim_strlist_free(struct sk_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

int scim_state_keys(struct scim_state *st, const char *collection,
                    void (*fn)(void *ctx, const char *key, const char *doc), void *ctx,
                    struct sk_error *err)
{
    for (size_t i = 0; i < sizeof(collections) / sizeof(collections[0]); i++)
        if (strcmp(collections[i], collection) == 0)
            return sk_state_keys(st->store, collection, fn, ctx, err);
    return 0;
}
