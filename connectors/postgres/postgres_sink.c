/*
 * postgres_sink.c: the postgres-sink connector. Keeps the current state of
 * every SS 12000 collection in one PostgreSQL table (the entity as jsonb plus
 * typed columns, generated from it or, for the instants, parsed and sent by
 * the sink), and the consumed Kafka offsets in the
 * same schema, written in the same transaction as the rows: exactly-once
 * apply (docs/architecture.md §4.3). A large batch is split by id over
 * several connections (option connections), the one with the offsets
 * committing last. The schema is versioned; its
 * migrations are compiled in (docs/postgres-sink.md describes it).
 *
 * Owns: the options, open and close, the bulk upsert/delete path, the
 * per-record fallback that isolates a bad record, the offsets table. The
 * schema and its migrations are postgres_schema.c's, the connection and
 * its error classes postgres_conn.c's.
 * Must never: let an older meta.modified overwrite a newer one, commit an offset
 * before every row it covers is committed, return offsets stored under
 * another broker incarnation (connector.h, struct sk_sink), commit after an
 * error, or print the connection string (it may hold a password).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <libpq-fe.h>

#include "buf.h"
#include "connector.h"
#include "log.h"
#include "model.h"
#include "postgres/postgres_sink.h"
#include "postgres_internal.h"
#include "util.h"

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
    {.name = "connections",
     .type = SK_OPT_INT,
     .def = "2",
     .help = "connections a large batch is applied over at once, split by id (the one holding "
             "the offsets commits last); 1 = one transaction a batch",
     .offset = offsetof(struct pg_conf, connections),
     .min = 1,
     .max = PG_MAX_CONNECTIONS},
    {.name = NULL},
};

/* "postgresql host:port/dbname schema X": never the password or other options. */
char *pg_describe_target(const char *conninfo, const char *schema)
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

/* ---- lanes: the other connections of a large batch ------------------------------ */

static void lane_init(struct pg_sink *l, const struct pg_sink *s)
{
    *l = (struct pg_sink){
        .component = s->component,
        .conninfo = s->conninfo,
        .qschema = s->qschema,
        .schema = s->schema,
        .target = s->target,
        .keep_deleted = s->keep_deleted,
        .connect_timeout_ms = s->connect_timeout_ms,
        .offsets_sql = s->offsets_sql,
        .n_tables = s->n_tables,
    };
    /* The tables' statements are the sink's (known by address), the arrays the lane's own. */
    l->tables = sk_calloc(s->n_tables ? s->n_tables : 1, sizeof(*l->tables));
    for (size_t i = 0; i < s->n_tables; i++) {
        l->tables[i] = s->tables[i];
        l->tables[i].upserts = (struct sk_buf){0};
        l->tables[i].deletes = (struct sk_buf){0};
        l->tables[i].purges = (struct sk_buf){0};
        l->tables[i].n_upserts = l->tables[i].n_deletes = l->tables[i].n_purges = 0;
    }
}

/* Drops the lane's connection and arrays (it connects again for the next large batch). */
static void lane_release(struct pg_sink *l)
{
    pg_disconnect(l);
    for (size_t i = 0; i < l->n_tables; i++) {
        sk_buf_free(&l->tables[i].upserts);
        sk_buf_free(&l->tables[i].deletes);
        sk_buf_free(&l->tables[i].purges);
    }
}

static uint64_t round_trips_of(const struct pg_sink *s)
{
    uint64_t n = s->round_trips;
    for (size_t i = 0; i < s->n_lanes; i++)
        n += s->lanes[i].round_trips;
    return n;
}

static void pg_close(struct sk_sink *self)
{
    struct pg_sink *s = self->priv;
    if (!s)
        return;
    for (size_t i = 0; i < s->n_lanes; i++) {
        lane_release(&s->lanes[i]);
        free(s->lanes[i].tables);
    }
    free(s->lanes);
    pg_disconnect(s);
    for (size_t i = 0; i < s->n_tables; i++) {
        free(s->tables[i].upsert_sql);
        free(s->tables[i].delete_sql);
        free(s->tables[i].purge_sql);
        free(s->tables[i].keys_sql);
        free(s->tables[i].ids_sql);
        free(s->tables[i].upserts.p);
        free(s->tables[i].deletes.p);
        free(s->tables[i].purges.p);
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
    s->qschema = pg_quote_ident(conf->schema);
    s->target = pg_describe_target(conf->conninfo, conf->schema);
    s->keep_deleted = conf->deleted_rows && strcmp(conf->deleted_rows, "keep") == 0;
    s->connect_timeout_ms = conf->connect_timeout_ms;
    s->tables = sk_calloc(self->n_entities ? self->n_entities : 1, sizeof(*s->tables));
    for (size_t i = 0; i < self->n_entities; i++) {
        struct pg_table *t = &s->tables[s->n_tables++];
        t->entity = self->entities[i];
        char *name = pg_table_name(t->entity->collection);
        char *qtable = pg_quote_ident(name);
        pg_build_table_sql(s, t, qtable);
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
    if (pg_ensure_connected(s, err) < 0 || pg_migrate(s, err) < 0)
        goto fail;
    s->n_lanes = conf->connections > 1 ? (size_t)conf->connections - 1 : 0;
    s->lanes = s->n_lanes ? sk_calloc(s->n_lanes, sizeof(*s->lanes)) : NULL;
    for (size_t i = 0; i < s->n_lanes; i++)
        lane_init(&s->lanes[i], s);
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
        p->purged |= r->withheld;
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
}

static void add_upsert(struct pg_table *t, const struct sk_record *r, long today)
{
    sk_buf_puts(&t->upserts, t->n_upserts++ ? "," : "[");
    pg_row_json(&t->upserts, t, r, today);
}

/* key into a uuid[] array's text ("{a,b,...", closed by finish_arrays). */
static void add_id(struct sk_buf *b, size_t *n, const char *key)
{
    sk_buf_puts(b, (*n)++ ? "," : "{");
    sk_buf_puts(b, key);
}

static void finish_arrays(struct pg_table *t)
{
    if (t->n_upserts)
        sk_buf_puts(&t->upserts, "]");
    if (t->n_deletes)
        sk_buf_puts(&t->deletes, "}");
    if (t->n_purges)
        sk_buf_puts(&t->purges, "}");
}

/*
 * BEGIN, and the transaction's current_date in one round trip: the day
 * persons.enrolment_school is computed for (sk_enrolment_school(doc,
 * current_date) in the upsert before).
 */
static int pg_begin(struct pg_sink *s, struct sk_error *err)
{
    bool record_level;
    PGresult *res = NULL;
    if (pg_exec_params(s, "BEGIN", "BEGIN; SELECT to_char(current_date, 'YYYYMMDD')", 0, NULL, &res,
                       &record_level, err) < 0) {
        if (err->cls == SK_ERR_PERMANENT)
            err->cls = SK_ERR_FATAL;
        return -1;
    }
    s->today = PQntuples(res) == 1 ? strtol(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    PQclear(res);
    return 0;
}

/* next_offset = highest offset + 1 of each partition in the batch, under our incarnation. */
static int store_offsets(struct pg_sink *s, const char *incarnation, const struct sk_buf *json,
                         struct sk_error *err)
{
    bool record_level;
    const char *params[] = {json->p, incarnation};
    int rc = pg_exec_prepared(s, "skolsync_offsets", s->offsets_sql, 2, params, NULL, &record_level,
                              err);
    if (rc < 0 && err->cls == SK_ERR_PERMANENT)
        err->cls = SK_ERR_FATAL;
    return rc;
}

static void batch_offsets_json(const struct pg_sink *s, struct sk_buf *b)
{
    sk_buf_puts(b, "[");
    for (size_t i = 0; i < s->parts.n; i++) {
        sk_buf_puts(b, i ? ",{\"topic\":" : "{\"topic\":");
        sk_buf_json_string(b, s->parts.v[i].topic);
        sk_buf_printf(b, ",\"p\":%" PRId32 ",\"n\":%" PRId64 "}", s->parts.v[i].partition,
                      s->parts.v[i].next_offset);
    }
    sk_buf_puts(b, "]");
}

/*
 * One connection's share of the bulk path (l: the sink itself or one of its
 * lanes; the k-th of n): BEGIN, per table at most one delete (clears first:
 * a tombstone then a re-create in one batch must end with the row) and one
 * upsert over a jsonb array of the winners of plans k, k + n, k + 2n, ...,
 * and, with offsets, the offsets. Not committed. Runs on a lane's own
 * thread: it reads the sink's plans and writes only l.
 * Returns 0, or -1 with err (*record_level: some record's data was refused).
 */
static int stage(const struct pg_sink *s, struct pg_sink *l, size_t k, size_t n,
                 const char *incarnation, const struct sk_buf *offsets, bool *record_level,
                 struct sk_error *err)
{
    *record_level = false;
    if (pg_ensure_connected(l, err) < 0 || pg_begin(l, err) < 0)
        return -1;
    for (size_t i = 0; i < l->n_tables; i++) {
        struct pg_table *t = &l->tables[i];
        sk_buf_reset(&t->upserts);
        sk_buf_reset(&t->deletes);
        sk_buf_reset(&t->purges);
        t->n_upserts = t->n_deletes = t->n_purges = 0;
    }
    for (size_t i = k; i < s->n_plans; i += n) {
        const struct plan *p = &s->plans[i];
        struct pg_table *t = &l->tables[p->table - s->tables];
        if (p->cleared && p->purged && t->purge_sql)
            add_id(&t->purges, &t->n_purges, p->key);
        else if (p->cleared)
            add_id(&t->deletes, &t->n_deletes, p->key);
        if (p->winner)
            add_upsert(t, p->winner, l->today);
    }
    for (size_t i = 0; i < l->n_tables; i++)
        finish_arrays(&l->tables[i]);
    for (size_t i = 0; i < l->n_tables; i++) {
        struct pg_table *t = &l->tables[i];
        const char *del[] = {t->deletes.p}, *ups[] = {t->upserts.p}, *pur[] = {t->purges.p};
        if (t->n_purges && pg_exec_prepared(l, t->entity->collection, t->purge_sql, 1, pur, NULL,
                                            record_level, err) < 0)
            return -1;
        if (t->n_deletes && pg_exec_prepared(l, t->entity->collection, t->delete_sql, 1, del, NULL,
                                             record_level, err) < 0)
            return -1;
        if (t->n_upserts && pg_exec_prepared(l, t->entity->collection, t->upsert_sql, 1, ups, NULL,
                                             record_level, err) < 0)
            return -1;
    }
    if (offsets && s->parts.n && store_offsets(l, incarnation, offsets, err) < 0)
        return -1;
    return 0;
}

/* A lane's stage on its own thread. */
struct stage_job {
    const struct pg_sink *s;
    struct pg_sink *lane;
    size_t k, n;
    int rc;
    bool record_level;
    struct sk_error err;
    pthread_t thread;
    bool joinable;
};

static void *stage_run(void *arg)
{
    struct stage_job *j = arg;
    j->rc = stage(j->s, j->lane, j->k, j->n, NULL, NULL, &j->record_level, &j->err);
    return NULL;
}

/* A batch is split only where each connection gets at least this many ids:
 * below it a second transaction and thread cost more than they save, and a
 * lone change keeps its latency. */
#define PG_LANE_MIN_IDS 128

static size_t lanes_for(const struct pg_sink *s)
{
    size_t n = s->n_plans / PG_LANE_MIN_IDS;
    return n < 1 ? 1 : n > 1 + s->n_lanes ? 1 + s->n_lanes : n;
}

/*
 * Connects the lanes this batch wants; returns how many connections it
 * gets. A lane the server refuses (max_connections, the role's CONNECTION
 * LIMIT, a pooler's cap) is not an error: the batch goes over the
 * connections there are, down to the sink's own, and the log says so once
 * until every lane connects again.
 */
static size_t connect_lanes(struct pg_sink *s, size_t want)
{
    for (size_t k = 1; k < want; k++) {
        struct sk_error err = {0};
        if (pg_ensure_connected(&s->lanes[k - 1], &err) == 0)
            continue;
        if (!s->lanes_refused)
            sk_warn(s->component,
                    "a connection for parallel apply was refused (%s): applying over %zu of %zu "
                    "connection(s) until it is not",
                    err.msg, k, want);
        s->lanes_refused = true;
        return k;
    }
    if (s->lanes_refused && want > 1)
        sk_info(s->component, "parallel apply over %zu connections again", want);
    s->lanes_refused = s->lanes_refused && want == 1;
    return want;
}

/*
 * The bulk path over n connections (docs/postgres-sink.md, "Parallel
 * apply"): the sink's own connection and n - 1 lanes stage their shares of
 * the ids at the same time, the sink's with the batch's offsets. Then the
 * lanes commit, and the sink's connection last: the offsets are never
 * stored before every row they cover is. If a lane's commit fails, the
 * lanes committed before it hold rows of a batch whose offsets are not
 * stored; the batch comes again, and applying it again changes nothing
 * those rows do not already hold (the stale-update guard lets the same
 * meta.modified through, an identical document changes nothing).
 * Returns 0, or -1 with err (*record_level: some record's data was refused;
 * every lane is rolled back, the sink's connection is the caller's).
 */
static int apply_bulk(struct pg_sink *s, size_t n, const char *incarnation,
                      const struct sk_buf *offsets, bool *record_level, struct sk_error *err)
{
    struct stage_job jobs[PG_MAX_CONNECTIONS];
    for (size_t k = 1; k < n; k++) {
        jobs[k] = (struct stage_job){.s = s, .lane = &s->lanes[k - 1], .k = k, .n = n};
        jobs[k].joinable =
            sk_thread_start(&jobs[k].thread, stage_run, &jobs[k], "pg-stage", NULL) == 0;
        if (!jobs[k].joinable)
            stage_run(&jobs[k]);
    }
    int rc = stage(s, s, 0, n, incarnation, offsets, record_level, err);
    for (size_t k = 1; k < n; k++) {
        if (jobs[k].joinable)
            pthread_join(jobs[k].thread, NULL);
        /* A failure of the server or connection outranks a refused record:
         * the one-by-one fallback could not get past it either. */
        if (jobs[k].rc < 0 && (rc == 0 || (*record_level && !jobs[k].record_level))) {
            rc = -1;
            *record_level = jobs[k].record_level;
            *err = jobs[k].err;
        }
    }
    size_t k = 1;
    while (rc == 0 && k < n) {
        if (pg_exec0(&s->lanes[k - 1], "COMMIT", "COMMIT", err) < 0)
            rc = -1;
        else
            k++;
    }
    for (; k < n; k++)
        pg_abandon(&s->lanes[k - 1]);
    if (rc < 0)
        return -1;
    return pg_exec0(s, "COMMIT", "COMMIT", err);
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
                            const struct sk_buf *offsets, struct sk_error *err)
{
    struct sk_buf one = {0};
    int rc = -1;
    if (pg_begin(s, err) < 0 || pg_exec0(s, "SAVEPOINT", "SAVEPOINT skolsync_record", err) < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (out[i].kind == SK_REJECTED)
            continue;
        const struct sk_record *r = &recs[i];
        struct pg_table *t = find_table(s, r->entity);
        sk_buf_reset(&one);
        const char *sql;
        if (r->value) {
            sk_buf_puts(&one, "[");
            pg_row_json(&one, t, r, s->today);
            sk_buf_puts(&one, "]");
            sql = t->upsert_sql;
        } else {
            sk_buf_printf(&one, "{%s}", r->key);
            sql = r->withheld && t->purge_sql ? t->purge_sql : t->delete_sql;
        }
        bool record_level;
        const char *params[] = {one.p};
        struct sk_error rec_err = {0};
        if (pg_exec_prepared(s, t->entity->collection, sql, 1, params, NULL, &record_level,
                             &rec_err) == 0) {
            if (pg_exec0(s, "SAVEPOINT",
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
        if (pg_exec0(s, "ROLLBACK TO SAVEPOINT", "ROLLBACK TO SAVEPOINT skolsync_record", err) < 0)
            goto out;
    }
    if (s->parts.n && store_offsets(s, incarnation, offsets, err) < 0)
        goto out;
    rc = pg_exec0(s, "COMMIT", "COMMIT", err);
out:
    free(one.p);
    return rc;
}

/* Rolls back and reports every record not rejected as not applied. */
static int fail_batch(struct pg_sink *s, size_t n, struct sk_outcome *out, struct sk_error *err)
{
    pg_abandon(s);
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
    struct sk_buf offsets = {0};
    batch_offsets_json(s, &offsets);
    if (pg_ensure_connected(s, err) < 0) {
        free(offsets.p);
        return fail_batch(s, n, out, err);
    }
    int64_t t0 = sk_mono_ms();
    uint64_t trips0 = round_trips_of(s);
    bool record_level;
    size_t conns = connect_lanes(s, lanes_for(s));
    int rc = apply_bulk(s, conns, self->incarnation, &offsets, &record_level, err);
    if (rc < 0 && record_level) {
        sk_info(s->component, "batch refused (%s): applying its %zu records one by one", err->msg,
                n);
        pg_abandon(s);
        sk_error_clear(err);
        rc = apply_one_by_one(s, recs, n, out, self->incarnation, &offsets, err);
    }
    free(offsets.p);
    if (rc < 0)
        return fail_batch(s, n, out, err);
    sk_debug(s->component,
             "applied %zu record(s) as %zu id(s) over %zu connection(s) in %" PRIu64
             " statement(s), %" PRId64 " ms",
             n, s->n_plans, conns, round_trips_of(s) - trips0, sk_mono_ms() - t0);
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
    if (pg_ensure_connected(s, err) < 0)
        return -1;
    struct sk_buf json = {0};
    sk_buf_puts(&json, "[");
    for (size_t i = 0; i < offsets->n; i++) {
        sk_buf_puts(&json, i ? ",{\"topic\":" : "{\"topic\":");
        sk_buf_json_string(&json, offsets->v[i].topic);
        sk_buf_printf(&json, ",\"p\":%" PRId32 ",\"n\":%" PRId64 "}", offsets->v[i].partition,
                      offsets->v[i].next_offset);
    }
    sk_buf_puts(&json, "]");
    int rc = store_offsets(s, self->incarnation, &json, err);
    free(json.p);
    if (rc < 0)
        pg_abandon(s);
    return rc;
}

/* Appends to out (caller frees with sk_offsets_free) the offsets of this incarnation. */
static int pg_stored_offsets(struct sk_sink *self, struct sk_offsets *out, struct sk_error *err)
{
    struct pg_sink *s = self->priv;
    if (pg_ensure_connected(s, err) < 0)
        return -1;
    bool record_level;
    PGresult *res = NULL;
    const char *params[] = {self->incarnation};
    if (pg_exec_params(s, "reading skolsync_offsets", s->offsets_select_sql, 1, params, &res,
                       &record_level, err) < 0) {
        if (err->cls == SK_ERR_PERMANENT)
            err->cls = SK_ERR_FATAL;
        pg_abandon(s);
        return -1;
    }
    for (int i = 0; i < PQntuples(res); i++)
        sk_offsets_add(out, PQgetvalue(res, i, 0), (int32_t)strtol(PQgetvalue(res, i, 1), NULL, 10),
                       strtoll(PQgetvalue(res, i, 2), NULL, 10));
    PQclear(res);
    return 0;
}

/* The snapshot sweep's view: every live row of e's table, with its doc or not. */
static int pg_list(struct sk_sink *self, const struct sk_entity *e, bool docs,
                   void (*fn)(void *ctx, const char *key, const char *doc), void *ctx,
                   struct sk_error *err)
{
    struct pg_sink *s = self->priv;
    struct pg_table *t = find_table(s, e);
    if (!t)
        return 0;
    if (pg_ensure_connected(s, err) < 0)
        return -1;
    bool record_level;
    PGresult *res = NULL;
    if (pg_exec_params(s, e->collection, docs ? t->keys_sql : t->ids_sql, 0, NULL, &res,
                       &record_level, err) < 0) {
        if (err->cls == SK_ERR_PERMANENT)
            err->cls = SK_ERR_RETRIABLE;
        pg_abandon(s);
        return -1;
    }
    for (int i = 0; i < PQntuples(res); i++)
        fn(ctx, PQgetvalue(res, i, 0),
           !docs || PQgetisnull(res, i, 1) ? NULL : PQgetvalue(res, i, 1));
    PQclear(res);
    return 0;
}

static int pg_keys(struct sk_sink *self, const struct sk_entity *e,
                   void (*fn)(void *ctx, const char *key, const char *doc), void *ctx,
                   struct sk_error *err)
{
    return pg_list(self, e, true, fn, ctx, err);
}

/* Without the docs: the server prints no jsonb as text (~5 µs a row). */
static int pg_keys_only(struct sk_sink *self, const struct sk_entity *e,
                        void (*fn)(void *ctx, const char *key, const char *doc), void *ctx,
                        struct sk_error *err)
{
    return pg_list(self, e, false, fn, ctx, err);
}

/* A statement this large grew libpq's output buffer, which it keeps. */
#define PG_BIG_STATEMENT (64 * 1024)

/* Caught up: the batch's plans and JSON arrays (MBs after a bulk load) go;
 * the next batch grows them again. */
static void pg_trim(struct sk_sink *self)
{
    struct pg_sink *s = self->priv;
    if (!s)
        return;
    bool big = false;
    for (size_t i = 0; i < s->n_tables; i++) {
        big |= s->tables[i].upserts.cap >= PG_BIG_STATEMENT ||
               s->tables[i].deletes.cap >= PG_BIG_STATEMENT;
        sk_buf_free(&s->tables[i].upserts);
        sk_buf_free(&s->tables[i].deletes);
    }
    free(s->plans);
    free(s->slots);
    s->plans = NULL;
    s->slots = NULL;
    s->n_plans = s->cap_plans = s->cap_slots = 0;
    /* The lanes serve bulk loads only: their connections go with the arrays. */
    for (size_t i = 0; i < s->n_lanes; i++)
        lane_release(&s->lanes[i]);
    /* libpq grows a connection's output buffer to the largest statement and
     * never shrinks it (1 MB after a 100k load, bench/analysis.md §4): after
     * a large batch the connection goes too, and the next batch connects
     * again (pg_ensure_connected). Nothing is open between batches; a batch
     * of one record a second never comes near it. */
    if (big)
        pg_disconnect(s);
}

static const char *pg_target(struct sk_sink *self)
{
    const struct pg_sink *s = self->priv;
    return s ? s->target : "postgresql";
}

PGconn *postgres_sink_connection(const struct sk_sink *self)
{
    const struct pg_sink *s = self ? self->priv : NULL;
    return s ? s->conn : NULL;
}

uint64_t postgres_sink_round_trips(const struct sk_sink *self)
{
    const struct pg_sink *s = self ? self->priv : NULL;
    return s ? round_trips_of(s) : 0;
}

const struct sk_sink_ops postgres_sink_ops = {
    .type = "postgres-sink",
    .target_kind = SK_TARGET_SHARED,
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
    .keys = pg_keys,
    .keys_only = pg_keys_only,
    .trim = pg_trim,
    .target = pg_target,
    .close = pg_close,
    .probe = pg_probe,
};
