/*
 * sqlite_sink.c: the sqlite-sink connector. Keeps the current state of each
 * SS 12000 collection in a table of one SQLite database (the entity as JSON
 * plus its meta.modified), and the consumed Kafka offsets in the same
 * database, written in the same transaction as the rows: exactly-once apply
 * (delivery rule 3: an offset is stored with the rows it covers).
 *
 * Owns: the options, the schema version of the file, what a record becomes
 * (the tables, the stale guard and the offsets are the shared state store's,
 * connectors/common/state_store.h). Must never: let an older meta.modified
 * overwrite a newer one (records can be replayed or arrive from a re-read
 * source), store an offset in another transaction than the rows it covers, or
 * return offsets stored under another broker incarnation (connector.h,
 * struct sk_sink).
 */
#include <inttypes.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "connector.h"
#include "model.h"
#include "probe_fs.h"
#include "state_store.h"
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

struct sqlite_sink {
    struct sk_state *state;
};

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

/* The schema version of the file: a newer skolsync's database is left alone. */
static int check_version(struct sk_state *st, void *ctx, struct sk_error *err)
{
    if (sk_state_exec(st, "CREATE TABLE IF NOT EXISTS skolsync_schema(version INTEGER NOT NULL)",
                      err) < 0)
        return -1;
    sqlite3_stmt *q;
    if (sk_state_prepare(st, "SELECT max(version) FROM skolsync_schema", &q, err) < 0)
        return -1;
    int rc = sqlite3_step(q);
    bool empty = rc == SQLITE_ROW && sqlite3_column_type(q, 0) == SQLITE_NULL;
    int64_t version = rc == SQLITE_ROW ? sqlite3_column_int64(q, 0) : -1;
    sqlite3_finalize(q);
    if (rc != SQLITE_ROW)
        return sk_error_set(err, sk_state_error_class(rc, false), "reading skolsync_schema: %s",
                            sqlite3_errmsg(sk_state_db(st)));
    if (!empty && version > SCHEMA_VERSION)
        return sk_error_set(err, SK_ERR_FATAL,
                            "the database has schema version %" PRId64
                            ", newer than this skolsync knows (%d)",
                            version, SCHEMA_VERSION);
    if (empty)
        return sk_state_exec(st, "INSERT INTO skolsync_schema(version) VALUES(1)", err);
    return 0;
}

static void sqlite_close(struct sk_sink *self)
{
    struct sqlite_sink *s = self->priv;
    if (!s)
        return;
    sk_state_close(s->state);
    free(s);
    self->priv = NULL;
}

/* Sets self->priv (freed by sqlite_close, also when open fails). */
static int sqlite_open(struct sk_sink *self, struct sk_error *err)
{
    const struct sqlite_conf *conf = self->conf;
    struct sqlite_sink *s = sk_calloc(1, sizeof(*s));
    self->priv = s;
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
    const char **collections = sk_calloc(self->n_entities + 1, sizeof(*collections));
    for (size_t i = 0; i < self->n_entities; i++)
        collections[i] = self->entities[i]->collection;
    struct sk_state_opts o = {.path = conf->path,
                              .synchronous = conf->synchronous,
                              .busy_timeout_ms = conf->busy_timeout_ms,
                              .offsets = true,
                              .collections = collections,
                              .n_collections = self->n_entities,
                              .schema = check_version};
    s->state = sk_state_open(&o, err);
    free(collections);
    if (!s->state)
        goto fail;
    return 0;
fail:
    sqlite_close(self);
    return -1;
}

/* ---- apply --------------------------------------------------------------- */

static bool consumes(const struct sk_sink *self, const struct sk_entity *e)
{
    for (size_t i = 0; i < self->n_entities; i++)
        if (self->entities[i] == e)
            return true;
    return false;
}

/* One record (sk_state_apply): an upsert, a delete, or PERMANENT for this record only. */
static int apply_record(void *ctx, const struct sk_record *r, struct sk_error *err)
{
    struct sk_sink *self = ctx;
    struct sqlite_sink *s = self->priv;
    if (!r->entity || !consumes(self, r->entity))
        return sk_error_set(err, SK_ERR_PERMANENT,
                            "entity type %s is not one this sink was opened for",
                            r->entity ? r->entity->name : "(none)");
    if (r->key[0] == '\0')
        return sk_error_set(err, SK_ERR_PERMANENT, "record without a key");
    if (!r->value) /* a tombstone; a missing row is no error */
        return sk_state_delete(s->state, r->entity->collection, r->key, NULL, err);
    if (!r->json) /* the driver decodes every value it hands over */
        return sk_error_set(err, SK_ERR_PERMANENT, "record has a value but no decoded document");
    return sk_state_upsert(s->state, r->entity->collection, r->key, r->json, r->json_len,
                           r->modified_us, NULL, err);
}

/* One transaction: every record, then the offsets of the batch (state_store.h). */
static int sqlite_apply(struct sk_sink *self, const struct sk_record *recs, size_t n,
                        struct sk_outcome *out, struct sk_error *err)
{
    struct sqlite_sink *s = self->priv;
    return sk_state_apply(s->state, self->incarnation, recs, n, out, apply_record, NULL, self, err);
}

/* ---- offsets ------------------------------------------------------------- */

static int sqlite_mark_offsets(struct sk_sink *self, const struct sk_offsets *offsets,
                               struct sk_error *err)
{
    struct sqlite_sink *s = self->priv;
    return sk_state_mark_offsets(s->state, self->incarnation, offsets, err);
}

/* Appends to out (caller frees with sk_offsets_free) the offsets of this incarnation. */
static int sqlite_stored_offsets(struct sk_sink *self, struct sk_offsets *out, struct sk_error *err)
{
    struct sqlite_sink *s = self->priv;
    return sk_state_stored_offsets(s->state, self->incarnation, out, err);
}

/* The snapshot sweep's view of the target: the ids of a collection table. */
static int sqlite_keys(struct sk_sink *self, const struct sk_entity *e,
                       void (*fn)(void *ctx, const char *key, const char *doc), void *ctx,
                       struct sk_error *err)
{
    struct sqlite_sink *s = self->priv;
    return sk_state_keys(s->state, e->collection, fn, ctx, err);
}

/* Caught up: the page cache (up to SQLite's 2 MB) fills again on the next batch. */
static void sqlite_trim(struct sk_sink *self)
{
    struct sqlite_sink *s = self->priv;
    sk_state_trim(s->state);
}

/* The database file deleted or replaced under it (to rebuild the copy): start again. */
static int sqlite_health(struct sk_sink *self, struct sk_error *err)
{
    struct sqlite_sink *s = self->priv;
    return sk_state_check_file(s->state, err);
}

static const char *sqlite_target(struct sk_sink *self)
{
    return ((const struct sqlite_conf *)self->conf)->path;
}

/* skolsync check --connect: the database file, or where it will be created. */
static void sqlite_probe(const void *conf_ptr, struct sk_probe *p)
{
    const struct sqlite_conf *conf = conf_ptr;
    sk_probe_sqlite_file(p, "path", conf->path, false);
}

const struct sk_sink_ops sqlite_sink_ops = {
    .type = "sqlite-sink",
    .target_kind = SK_TARGET_NODE_LOCAL,
    .summary = "current state of each SS 12000 collection in a SQLite table, exactly-once",
    .options = sqlite_options,
    .conf_size = sizeof(struct sqlite_conf),
    .open = sqlite_open,
    .apply = sqlite_apply,
    .mark_offsets = sqlite_mark_offsets,
    .stored_offsets = sqlite_stored_offsets,
    .keys = sqlite_keys,
    .trim = sqlite_trim,
    .health = sqlite_health,
    .target = sqlite_target,
    .close = sqlite_close,
    .probe = sqlite_probe,
};
