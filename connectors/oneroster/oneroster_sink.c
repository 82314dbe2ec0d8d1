/*
 * oneroster_sink.c: the oneroster-csv-sink connector. A OneRoster bulk CSV
 * bundle is a snapshot while records arrive as a stream, so the sink keeps
 * its own current state (one SQLite table per collection it maps, plus the
 * consumed offsets, written in the same transaction: exactly-once apply; the
 * shared state store, connectors/common/state_store.h), and writes a whole bundle from that state
 * when it is due.
 *
 * When a bundle is due: once the state changed and no apply changed it for
 * `idle` (the topics went quiet), or `interval` after the previous bundle while
 * changes keep coming; and when the driver asks (publish: the end of a
 * `run --once`, a stop), or at close if it did not. The sink driver calls nothing while the
 * topics are idle, so a timer thread of this sink checks (every 250 ms) and
 * writes the bundle through its own read-only snapshot of the state database
 * (WAL: apply is never blocked by a bundle being written). The thread and apply
 * share only the counters under `mu`. oneroster_write_bundle_now() (oneroster.h)
 * writes one at once.
 *
 * Owns: what of a record the state keeps, the change counters, the bundle
 * schedule. Must never: let an older meta.modified overwrite a newer
 * one, store an offset outside the transaction of its rows, keep personal data
 * the mapping never uses (civic numbers, addresses; phones unless include_phone),
 * or publish a bundle that is not complete (oneroster_out.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>

#include "connector.h"
#include "log.h"
#include "model.h"
#include "oneroster.h"
#include "oneroster_internal.h"
#include "probe_fs.h"
#include "state_store.h"
#include "util.h"

#define SCHEMA_VERSION 1
#define STATE_DB_NAME "oneroster-state.db"
#define TICK_MS 250
#define RETRY_AFTER_FAILURE_MS 30000

struct oneroster_conf {
    char *state_dir;
    char *output_dir;
    int64_t idle_ms;
    int64_t interval_ms;
    bool zip;
    int64_t keep;
    bool include_phone;
    bool include_guardians;
    char *system_name;
    bool formula_guard;
};

static const struct sk_option oneroster_options[] = {
    {.name = "state_dir",
     .type = SK_OPT_STRING,
     .required = true,
     .help = "directory (must exist) for the sink's state database oneroster-state.db",
     .offset = offsetof(struct oneroster_conf, state_dir)},
    {.name = "output_dir",
     .type = SK_OPT_STRING,
     .required = true,
     .help = "directory (must exist) for the bundles and the `current` link",
     .offset = offsetof(struct oneroster_conf, output_dir)},
    {.name = "idle",
     .type = SK_OPT_DURATION,
     .def = "10s",
     .help = "write a bundle once the state changed and then stayed unchanged this long",
     .offset = offsetof(struct oneroster_conf, idle_ms),
     .min = 0,
     .max = INT64_C(31) * 24 * 3600 * 1000},
    {.name = "interval",
     .type = SK_OPT_DURATION,
     .def = "0s",
     .help = "also write at most this long after the last bundle while changes keep coming "
             "(0: only when idle)",
     .offset = offsetof(struct oneroster_conf, interval_ms),
     .min = 0,
     .max = INT64_C(31) * 24 * 3600 * 1000},
    {.name = "zip",
     .type = SK_OPT_BOOL,
     .def = "false",
     .help =
         "publish each bundle as one zip (link current.zip) instead of a directory (link current)",
     .offset = offsetof(struct oneroster_conf, zip)},
    {.name = "keep",
     .type = SK_OPT_INT,
     .def = "3",
     .help = "how many bundles to keep in output_dir",
     .offset = offsetof(struct oneroster_conf, keep),
     .min = 1,
     .max = 1000},
    {.name = "include_phone",
     .type = SK_OPT_BOOL,
     .def = "false",
     .help = "fill users.csv phone/sms (never for persons with a protected identity)",
     .offset = offsetof(struct oneroster_conf, include_phone)},
    {.name = "include_guardians",
     .type = SK_OPT_BOOL,
     .def = "true",
     .help = "export the students' responsibles as guardian/relative users",
     .offset = offsetof(struct oneroster_conf, include_guardians)},
    {.name = "system_name",
     .type = SK_OPT_STRING,
     .def = "skolsync",
     .help = "manifest.csv source.systemName",
     .offset = offsetof(struct oneroster_conf, system_name)},
    {.name = "formula_guard",
     .type = SK_OPT_BOOL,
     .def = "true",
     .help = "start a cell a spreadsheet would run as a formula (=, @, tab, CR; + or - unless "
             "a number or phone number) with a single quote; false: every cell as it is",
     .offset = offsetof(struct oneroster_conf, formula_guard)},
    {.name = NULL},
};

/* The collections the mapping reads; records of any other type change nothing. */
static const char *const mapped[] = {"organisations", "persons", "groups",
                                     "activities",    "duties",  "syllabuses"};
#define N_MAPPED (sizeof(mapped) / sizeof(mapped[0]))

struct oneroster_sink {
    const char *component;
    const struct oneroster_conf *conf;
    char *db_path;
    struct sk_state *state;     /* apply's connection (the sink's thread only) */
    sqlite3_stmt *count_change; /* adds to meta 'changes' */
    int64_t changed;            /* state changes of the batch being applied */
    struct sk_buf trimmed;      /* a document less what the bundle never uses */

    pthread_mutex_t write_mu; /* one bundle write at a time */
    pthread_mutex_t mu;       /* guards the fields below */
    pthread_cond_t cv;
    pthread_t timer;
    bool timer_started, stop;
    int64_t changes;        /* state changes so far (persisted: meta 'changes') */
    int64_t bundled;        /* `changes` the last published bundle reflects */
    int64_t last_change_ms; /* monotonic */
    int64_t last_write_ms;  /* monotonic; last publish or failure */
    bool last_failed;
    char last_error[300]; /* why the last bundle failed, for health() */
};

/* ---- SQLite helpers -------------------------------------------------------- */

/* For the bundle's own read-only connection (the state store is apply's). */
static int exec(sqlite3 *db, const char *sql, struct sk_error *err)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return sk_error_set(err, sk_state_error_class(rc, false), "\"%.80s\": %s", sql,
                            sqlite3_errmsg(db));
    return 0;
}

static int64_t meta_get(sqlite3 *db, const char *key)
{
    sqlite3_stmt *st;
    int64_t v = 0;
    if (sqlite3_prepare_v2(db, "SELECT value FROM oneroster_meta WHERE key = ?1", -1, &st, NULL))
        return 0;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* ---- open / close ---------------------------------------------------------- */

static int check_dir(const char *what, const char *path, struct sk_error *err)
{
    struct stat st;
    if (!path || stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
        return sk_error_set(err, SK_ERR_FATAL, "%s %s: not an existing directory", what,
                            path ? path : "(unset)");
    return 0;
}

/* The sink's own table: the schema version and the change counters. */
static int ensure_meta(struct sk_state *st, void *ctx, struct sk_error *err)
{
    sqlite3 *db = sk_state_db(st);
    if (sk_state_exec(
            st, "CREATE TABLE IF NOT EXISTS oneroster_meta(key TEXT PRIMARY KEY, value INTEGER)",
            err) < 0)
        return -1;
    int64_t version = meta_get(db, "schema");
    if (version > SCHEMA_VERSION)
        return sk_error_set(
            err, SK_ERR_FATAL,
            "the state has schema version %" PRId64 ", newer than this skolsync knows", version);
    return sk_state_exec(st,
                         "INSERT OR IGNORE INTO oneroster_meta(key, value) VALUES('schema', 1), "
                         "('changes', 0), ('bundled', 0)",
                         err);
}

static void *timer_main(void *arg);
static int write_bundle(struct oneroster_sink *s, bool if_due, char *path_out, size_t path_size,
                        struct sk_error *err);

static void oneroster_close(struct sk_sink *self)
{
    struct oneroster_sink *s = self->priv;
    if (!s)
        return;
    if (s->timer_started) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->timer, NULL);
        /* Changes not yet in a bundle get one now (docs/architecture.md §4.5): the
         * driver's publish wrote it at the stop already, unless the sink failed. */
        struct sk_error err = {0};
        if (write_bundle(s, true, NULL, 0, &err) < 0)
            sk_warn(s->component, "final bundle: %s", err.msg);
    }
    sqlite3_finalize(s->count_change);
    sk_state_close(s->state);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->write_mu);
    pthread_cond_destroy(&s->cv);
    sk_buf_free(&s->trimmed);
    free(s->db_path);
    free(s);
    self->priv = NULL;
}

static int oneroster_open(struct sk_sink *self, struct sk_error *err)
{
    const struct oneroster_conf *conf = self->conf;
    struct oneroster_sink *s = sk_calloc(1, sizeof(*s));
    self->priv = s;
    s->component = self->name ? self->name : "oneroster-csv-sink";
    s->conf = conf;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->write_mu, NULL);
    sk_cond_init_monotonic(&s->cv);
    if (!self->incarnation) {
        sk_error_set(err, SK_ERR_FATAL, "no broker incarnation given: offsets cannot be kept");
        goto fail;
    }
    if (check_dir("state_dir", conf->state_dir, err) < 0 ||
        check_dir("output_dir", conf->output_dir, err) < 0)
        goto fail;
    s->db_path = sk_asprintf("%s/" STATE_DB_NAME, conf->state_dir);
    struct sk_state_opts o = {.path = s->db_path,
                              .busy_timeout_ms = 5000,
                              .private_file = true,
                              .offsets = true,
                              .collections = mapped,
                              .n_collections = N_MAPPED,
                              .schema = ensure_meta};
    s->state = sk_state_open(&o, err);
    if (!s->state ||
        sk_state_prepare(s->state,
                         "UPDATE oneroster_meta SET value = value + ?1 WHERE key = 'changes'",
                         &s->count_change, err) < 0)
        goto fail;
    or_publish_cleanup(conf->output_dir);
    s->changes = meta_get(sk_state_db(s->state), "changes");
    s->bundled = meta_get(sk_state_db(s->state), "bundled");
    s->last_change_ms = s->last_write_ms = sk_mono_ms();
    if (sk_thread_start(&s->timer, timer_main, s, "oneroster-timer", NULL) != 0) {
        sk_error_set(err, SK_ERR_FATAL, "cannot start the bundle timer thread");
        goto fail;
    }
    s->timer_started = true;
    return 0;
fail:
    oneroster_close(self);
    return -1;
}

/* ---- apply ----------------------------------------------------------------- */

static bool is_mapped(const struct sk_entity *e)
{
    for (size_t i = 0; e && i < N_MAPPED; i++)
        if (strcmp(mapped[i], e->collection) == 0)
            return true;
    return false;
}

/* The fields of a collection no OneRoster column is made from. */
static const char *const *unused_fields(const struct sk_entity *e)
{
    static const char *const person[] = {"civicNo", "addresses",    "birthDate", "sex",
                                         "photo",   "phoneNumbers", NULL};
    static const char *const org[] = {"address", "phoneNumber", "contactInfo", NULL};
    if (strcmp(e->collection, "persons") == 0)
        return person;
    if (strcmp(e->collection, "organisations") == 0)
        return org;
    return NULL;
}

static bool kept(const struct oneroster_sink *s, const char *field)
{
    return s->conf->include_phone && strcmp(field, "phoneNumbers") == 0;
}

/*
 * What the sink stores of an entity: the document less what no OneRoster
 * column is made from, so the state holds no more personal data than the
 * bundle (civicNo is dropped by the privacy defaults; this is the second lock).
 * The driver's text when the document has none of those fields; else a
 * trimmed copy, printed as exactly, into s->trimmed.
 */
static const char *stored_doc(struct oneroster_sink *s, const struct sk_record *r, size_t *len)
{
    const char *const *drop = unused_fields(r->entity);
    bool any = false;
    for (size_t i = 0; drop && drop[i] && !any; i++)
        any = !kept(s, drop[i]) && cJSON_GetObjectItemCaseSensitive(r->doc, drop[i]);
    if (!any) {
        *len = r->json_len;
        return r->json;
    }
    cJSON *copy = cJSON_Duplicate(r->doc, true);
    for (size_t i = 0; drop[i]; i++)
        if (!kept(s, drop[i]))
            cJSON_DeleteItemFromObjectCaseSensitive(copy, drop[i]);
    sk_buf_reset(&s->trimmed);
    *len = sk_json_print_into(copy, &s->trimmed);
    cJSON_Delete(copy);
    return s->trimmed.p;
}

/* One record (sk_state_apply); counts what changed the state. */
static int apply_record(void *ctx, const struct sk_record *r, struct sk_error *err)
{
    struct oneroster_sink *s = ctx;
    if (!is_mapped(r->entity))
        return 0; /* a type the mapping does not read */
    if (!r->value) {
        /* a tombstone (or a protected person under `skip`) */
        int changes = 0;
        int rc = sk_state_delete(s->state, r->entity->collection, r->key, &changes, err);
        s->changed += changes;
        return rc;
    }
    if (!r->json) /* the driver decodes every value it hands over */
        return sk_error_set(err, SK_ERR_PERMANENT, "record has a value but no decoded document");
    size_t len;
    const char *doc = stored_doc(s, r, &len);
    enum sk_state_put put;
    int rc = sk_state_upsert(s->state, r->entity->collection, r->key, doc, len, r->modified_us,
                             &put, err);
    if (rc == 0 && put == SK_STATE_WRITTEN)
        s->changed++;
    return rc;
}

/* Last in the batch's transaction: the change counter the bundle schedule reads. */
static int count_changes(void *ctx, struct sk_error *err)
{
    struct oneroster_sink *s = ctx;
    if (!s->changed)
        return 0;
    sqlite3_bind_int64(s->count_change, 1, s->changed);
    return sk_state_run(s->state, s->count_change, false, err);
}

/* Tells the timer thread that the state changed (after the commit). */
static void note_changes(struct oneroster_sink *s, int64_t changed)
{
    if (!changed)
        return;
    pthread_mutex_lock(&s->mu);
    s->changes += changed;
    s->last_change_ms = sk_mono_ms();
    pthread_mutex_unlock(&s->mu);
}

/*
 * One transaction: every record, the change counter, and next_offset =
 * highest offset + 1 per partition. The bundle is written later, from the
 * timer thread (see the top of this file).
 */
static int oneroster_apply(struct sk_sink *self, const struct sk_record *recs, size_t n,
                           struct sk_outcome *out, struct sk_error *err)
{
    struct oneroster_sink *s = self->priv;
    s->changed = 0;
    if (sk_state_apply(s->state, self->incarnation, recs, n, out, apply_record, count_changes, s,
                       err) < 0)
        return -1;
    note_changes(s, s->changed);
    return 0;
}

/* ---- offsets --------------------------------------------------------------- */

static int oneroster_mark_offsets(struct sk_sink *self, const struct sk_offsets *offsets,
                                  struct sk_error *err)
{
    struct oneroster_sink *s = self->priv;
    return sk_state_mark_offsets(s->state, self->incarnation, offsets, err);
}

static int oneroster_stored_offsets(struct sk_sink *self, struct sk_offsets *out,
                                    struct sk_error *err)
{
    struct oneroster_sink *s = self->priv;
    return sk_state_stored_offsets(s->state, self->incarnation, out, err);
}

/* The snapshot sweep's view: the state the bundles are written from (mapped types only). */
static int oneroster_keys(struct sk_sink *self, const struct sk_entity *e,
                          void (*fn)(void *ctx, const char *key, const char *doc), void *ctx,
                          struct sk_error *err)
{
    struct oneroster_sink *s = self->priv;
    for (size_t i = 0; i < N_MAPPED; i++)
        if (strcmp(mapped[i], e->collection) == 0)
            return sk_state_keys(s->state, e->collection, fn, ctx, err);
    return 0; /* a type the bundle does not hold: nothing of it to delete */
}

/* Caught up: the state's page cache goes (the bundle writer reads through a
 * connection of its own, opened per bundle). */
static void oneroster_trim(struct sk_sink *self)
{
    struct oneroster_sink *s = self->priv;
    sk_state_trim(s->state);
}

static const char *oneroster_target(struct sk_sink *self)
{
    const struct oneroster_conf *conf = self->conf;
    return conf->output_dir;
}

/* ---- the bundle ------------------------------------------------------------ */

/* as_text: keep each document as compact text (struct or_doc), not as a tree. */
static int load_coll(sqlite3 *db, const char *collection, struct or_coll *c, bool as_text,
                     struct sk_error *err)
{
    char *sql = sk_asprintf("SELECT id, doc FROM \"%s\" ORDER BY id", collection);
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    free(sql);
    if (rc != SQLITE_OK)
        return sk_error_set(err, sk_state_error_class(rc, false), "reading %s: %s", collection,
                            sqlite3_errmsg(db));
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        const char *doc = (const char *)sqlite3_column_text(st, 1);
        cJSON *json = doc ? cJSON_Parse(doc) : NULL;
        if (!id || !json) {
            cJSON_Delete(json);
            continue;
        }
        or_doc_lower_ids(json);
        char *text = NULL;
        if (as_text) {
            text = cJSON_PrintUnformatted(json);
            cJSON_Delete(json);
            json = NULL;
            if (!text) {
                sqlite3_finalize(st);
                return sk_error_set(err, SK_ERR_RETRIABLE, "reading %s: out of memory", collection);
            }
        }
        if (c->n == cap) {
            cap = cap ? cap * 2 : 64;
            c->v = sk_realloc(c->v, cap * sizeof(*c->v));
        }
        c->v[c->n++] = (struct or_doc){.id = sk_strdup(id), .doc = json, .text = text};
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sk_error_set(err, sk_state_error_class(rc, false), "reading %s: %s", collection,
                            sqlite3_errmsg(db));
    return 0;
}

/* Reads every mapped collection in one read transaction (one consistent state). */
static int load_view(const char *db_path, struct or_view *v, int64_t *changes, struct sk_error *err)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        sk_error_set(err, SK_ERR_RETRIABLE, "%s: %s", db_path,
                     db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return -1;
    }
    sqlite3_busy_timeout(db, 5000);
    struct or_coll *colls[N_MAPPED] = {&v->orgs,       &v->persons, &v->groups,
                                       &v->activities, &v->duties,  &v->syllabuses};
    rc = exec(db, "BEGIN", err);
    for (size_t i = 0; rc == 0 && i < N_MAPPED; i++)
        rc = load_coll(db, mapped[i], colls[i], colls[i] == &v->persons || colls[i] == &v->groups,
                       err);
    if (rc == 0)
        *changes = meta_get(db, "changes");
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

static int save_bundled(const char *db_path, int64_t bundled)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        char *sql = sk_asprintf(
            "UPDATE oneroster_meta SET value = %" PRId64 " WHERE key = 'bundled'", bundled);
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
        free(sql);
    }
    sqlite3_close(db);
    return rc;
}

/* Builds and publishes a bundle from the state as it is now. Any thread. */
/* if_due: only if changes are not in a bundle yet, decided once no other
 * write runs (the timer and publish may both find it due; one writes it). */
static int write_bundle(struct oneroster_sink *s, bool if_due, char *path_out, size_t path_size,
                        struct sk_error *err)
{
    pthread_mutex_lock(&s->write_mu);
    if (if_due) {
        pthread_mutex_lock(&s->mu);
        bool due = s->changes != s->bundled;
        pthread_mutex_unlock(&s->mu);
        if (!due) {
            pthread_mutex_unlock(&s->write_mu);
            return 0;
        }
    }
    struct or_view view = {0};
    int64_t changes = 0;
    int64_t t0 = sk_mono_ms();
    int rc = load_view(s->db_path, &view, &changes, err);
    if (rc == 0) {
        struct or_bundle bundle;
        struct or_build_opts bo = {.include_phone = s->conf->include_phone,
                                   .include_guardians = s->conf->include_guardians};
        or_bundle_build(&view, &bo, s->component, &bundle);
        or_view_free(&view); /* the rows are copies: the documents go before the files come */
        struct or_publish_opts po = {.output_dir = s->conf->output_dir,
                                     .zip = s->conf->zip,
                                     .keep = s->conf->keep,
                                     .system_name = s->conf->system_name,
                                     .system_code = s->component,
                                     .now_us = sk_now_us(),
                                     .formula_verbatim = !s->conf->formula_guard};
        char path[1024] = "";
        rc = or_publish(&bundle, &po, path, sizeof(path), err);
        if (rc == 0) {
            sk_info(s->component,
                    "bundle %s: %zu orgs, %zu sessions, %zu courses, %zu classes, %zu users, "
                    "%zu roles, %zu enrollments; %" PRIu64 " dangling references dropped, %" PRIu64
                    " classes skipped (%" PRId64 " ms)",
                    path, bundle.t[OR_ORGS].n, bundle.t[OR_SESSIONS].n, bundle.t[OR_COURSES].n,
                    bundle.t[OR_CLASSES].n, bundle.t[OR_USERS].n, bundle.t[OR_ROLES].n,
                    bundle.t[OR_ENROLLMENTS].n, bundle.stats.dangling, bundle.stats.skipped_classes,
                    sk_mono_ms() - t0);
            if (path_out)
                snprintf(path_out, path_size, "%s", path);
            if (save_bundled(s->db_path, changes) != SQLITE_OK)
                sk_warn(s->component,
                        "could not record the bundled state (rewritten after a restart)");
        }
        or_bundle_free(&bundle);
    }
    or_view_free(&view);
    pthread_mutex_lock(&s->mu);
    s->last_write_ms = sk_mono_ms();
    s->last_failed = rc != 0;
    if (rc)
        snprintf(s->last_error, sizeof(s->last_error),
                 "writing the bundle: %.200s (retried every %d s)", err->msg,
                 RETRY_AFTER_FAILURE_MS / 1000);
    if (rc == 0 && changes > s->bundled)
        s->bundled = changes;
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&s->write_mu);
    return rc;
}

/* Due: unbundled changes, and quiet for `idle` or `interval` since the last bundle. */
static bool bundle_due(const struct oneroster_sink *s, int64_t now)
{
    if (s->changes == s->bundled)
        return false;
    if (s->last_failed && now - s->last_write_ms < RETRY_AFTER_FAILURE_MS)
        return false;
    if (now - s->last_change_ms >= s->conf->idle_ms)
        return true;
    return s->conf->interval_ms > 0 && now - s->last_write_ms >= s->conf->interval_ms;
}

static void *timer_main(void *arg)
{
    struct oneroster_sink *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        if (bundle_due(s, sk_mono_ms())) {
            pthread_mutex_unlock(&s->mu);
            struct sk_error err = {0};
            if (write_bundle(s, true, NULL, 0, &err) < 0)
                sk_warn(s->component, "writing the bundle: %s (retrying in %d s)", err.msg,
                        RETRY_AFTER_FAILURE_MS / 1000);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += TICK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* connector.h: publish. Changes not yet in a bundle get one now: a `run --once`
 * ends with its bundle written (or fails), and a stop writes it within
 * shutdown_timeout, not in the teardown after it. */
static int oneroster_publish(struct sk_sink *self, struct sk_error *err)
{
    return write_bundle(self->priv, true, NULL, 0, err);
}

int oneroster_write_bundle_now(struct sk_sink *self, char *path_out, size_t path_size,
                               struct sk_error *err)
{
    struct oneroster_sink *s = self->priv;
    if (!s)
        return sk_error_set(err, SK_ERR_FATAL, "the sink is not open");
    return write_bundle(s, false, path_out, path_size, err);
}

static const char *const default_drop[] = {"civicNo", NULL};

/* skolsync check --connect: both directories take files; the state database. */
static void oneroster_probe(const void *conf_ptr, struct sk_probe *p)
{
    const struct oneroster_conf *conf = conf_ptr;
    sk_probe_dir_writable(p, "output_dir", conf->output_dir);
    char *db = sk_asprintf("%s/" STATE_DB_NAME, conf->state_dir);
    sk_probe_sqlite_file(p, "state_dir", db, false);
    free(db);
}

/* Its state file deleted: start again. A bundle that could not be written:
 * retrying until one is. */
static int oneroster_health(struct sk_sink *self, struct sk_error *err)
{
    struct oneroster_sink *s = self->priv;
    if (sk_state_check_file(s->state, err) < 0)
        return -1;
    pthread_mutex_lock(&s->mu);
    int rc = s->last_failed ? sk_error_set(err, SK_ERR_RETRIABLE, "%s", s->last_error) : 0;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

const struct sk_sink_ops oneroster_sink_ops = {
    .type = "oneroster-csv-sink",
    .target_kind = SK_TARGET_NODE_LOCAL,
    .summary = "OneRoster 1.2 bulk CSV bundles (directory or zip), from SS 12000 state kept "
               "in SQLite, exactly-once",
    .options = oneroster_options,
    .conf_size = sizeof(struct oneroster_conf),
    .default_drop_fields = default_drop,
    .default_protected = "minimal",
    .open = oneroster_open,
    .apply = oneroster_apply,
    .mark_offsets = oneroster_mark_offsets,
    .stored_offsets = oneroster_stored_offsets,
    .keys = oneroster_keys,
    .trim = oneroster_trim,
    .target = oneroster_target,
    .close = oneroster_close,
    .publish = oneroster_publish,
    .probe = oneroster_probe,
    .health = oneroster_health,
};
