/*
 * hub_store.c: the hub's own tables next to the shared state store's
 * collection tables, and the queries the API runs on them.
 *
 *   hub_rows(collection, id, stamp, created_us, deleted_us)
 *     one row per entity the hub holds or held: stamp is the hub's change
 *     stamp of its last change (µs), created_us its meta.created, deleted_us
 *     when a tombstone removed it (NULL while it lives).
 *   hub_meta(key, value): the page token secret and the last stamp.
 *
 * Owns: the change stamp (docs/ss12000-api-sink.md, "Delta consistency"):
 * every write gets stamp = max(now, last stamp + 1), so stamps only grow and
 * a batch commits its stamps at once (one writer); documents are served with
 * meta.modified = their stamp, and meta.modified.after/before filter on it,
 * so a client that asks after the largest meta.modified it saw gets every
 * later change, however late its record reached the hub. Must never: serve a row of a type the
 * caller did not check the client's scope for (hub_http.c checks; the queries take one type or a
 * mask already cut to the scope), or keep a tombstone past deleted_retention longer than a batch or
 * a minute.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "hub.h"
#include "hub_query.h"
#include "hub_subs.h"
#include "util.h"

#define PURGE_EVERY_MS 60000

int hub_store_schema(struct sk_state *st, void *ctx, struct sk_error *err)
{
    if (hub_scope_schema(st, err) < 0 || /* hub_link: what each record belongs to */
        hub_subs_schema(st, err) < 0)
        return -1;
    int rc = sk_state_exec(
        st,
        "CREATE TABLE IF NOT EXISTS hub_rows(collection TEXT NOT NULL, id TEXT NOT NULL, "
        "stamp INTEGER NOT NULL, created_us INTEGER, deleted_us INTEGER, "
        "PRIMARY KEY(collection, id)) WITHOUT ROWID;"
        "CREATE INDEX IF NOT EXISTS hub_rows_stamp ON hub_rows(collection, stamp, id);"
        "CREATE INDEX IF NOT EXISTS hub_rows_deleted ON hub_rows(stamp, id) "
        "WHERE deleted_us IS NOT NULL;"
        "CREATE INDEX IF NOT EXISTS hub_rows_purge ON hub_rows(deleted_us) "
        "WHERE deleted_us IS NOT NULL;"
        "CREATE TABLE IF NOT EXISTS hub_meta(key TEXT PRIMARY KEY, value BLOB NOT NULL);",
        err);
    return rc < 0 ? -1 : hub_filter_schema(st, ctx, err);
}

static int meta_put(struct sk_state *st, const char *key, const void *v, int len, bool blob,
                    struct sk_error *err)
{
    sqlite3_stmt *q;
    if (sk_state_prepare(st, "INSERT OR REPLACE INTO hub_meta(key, value) VALUES(?1, ?2)", &q,
                         err) < 0)
        return -1;
    sqlite3_bind_text(q, 1, key, -1, SQLITE_STATIC);
    if (blob)
        sqlite3_bind_blob(q, 2, v, len, SQLITE_STATIC);
    else
        sqlite3_bind_int64(q, 2, *(const int64_t *)v);
    int rc = sk_state_run(st, q, false, err);
    sqlite3_finalize(q);
    return rc;
}

int hub_store_load(struct hub *h, struct sk_error *err)
{
    sqlite3_stmt *q;
    if (sk_state_prepare(h->state, "SELECT key, value FROM hub_meta", &q, err) < 0)
        return -1;
    bool have_secret = false;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(q, 0);
        if (strcmp(key, "secret") == 0 && sqlite3_column_bytes(q, 1) == HUB_SECRET_LEN) {
            memcpy(h->secret, sqlite3_column_blob(q, 1), HUB_SECRET_LEN);
            have_secret = true;
        } else if (strcmp(key, "last_stamp") == 0) {
            h->last_stamp = sqlite3_column_int64(q, 1);
        } else if (strcmp(key, "complete") == 0) {
            atomic_store(&h->complete, sqlite3_column_int64(q, 1) == 1);
        }
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE)
        return sk_error_set(err, sk_state_error_class(rc, false), "reading hub_meta: %s",
                            sqlite3_errmsg(sk_state_db(h->state)));
    if (have_secret)
        return 0;
    /* A secret per hub, kept with its state (mode 0600), so tokens outlive a restart. */
    if (RAND_bytes(h->secret, HUB_SECRET_LEN) != 1)
        return sk_error_set(err, SK_ERR_FATAL, "no random bytes for the page token secret");
    return meta_put(h->state, "secret", h->secret, HUB_SECRET_LEN, true, err);
}

/* hub.h */
int hub_store_mark_complete(struct hub *h, struct sk_error *err)
{
    if (atomic_load(&h->complete))
        return 0;
    int64_t one = 1;
    if (meta_put(h->state, "complete", &one, 0, false, err) < 0)
        return -1;
    atomic_store(&h->complete, true);
    return 0;
}

/* The change stamp of a write: the hub's clock, above every stamp it gave before. */
static int64_t next_stamp(struct hub *h)
{
    int64_t s = sk_now_us();
    if (s <= h->last_stamp)
        s = h->last_stamp + 1;
    h->last_stamp = s;
    return s;
}

static int64_t created_of(const cJSON *doc)
{
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(doc, "meta");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(meta, "created");
    int64_t us;
    if (cJSON_IsString(c) && sk_time_parse_us(c->valuestring, &us) == 0)
        return us;
    return INT64_MIN;
}

/* The row of collection/id: alive (deleted_us NULL) or a tombstone (deleted_us set). */
static int put_row(struct hub *h, const char *collection, const char *id, int64_t stamp,
                   int64_t created_us, bool deleted, struct sk_error *err)
{
    sqlite3_stmt *q;
    if (sk_state_prepare(h->state,
                         "INSERT OR REPLACE INTO hub_rows(collection, id, stamp, created_us, "
                         "deleted_us) VALUES(?1, ?2, ?3, ?4, ?5)",
                         &q, err) < 0)
        return -1;
    sqlite3_bind_text(q, 1, collection, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, stamp);
    if (created_us != INT64_MIN)
        sqlite3_bind_int64(q, 4, created_us);
    if (deleted)
        sqlite3_bind_int64(q, 5, sk_now_us());
    int rc = sk_state_run(h->state, q, true, err);
    sqlite3_finalize(q);
    return rc;
}

/* A changed record, for the webhooks of clients limited to organisations (hub_subs_changed). */
static void note_change(struct hub *h, const struct sk_entity *e, const char *id, bool deleted,
                        bool withheld)
{
    if (!h->any_scoped)
        return;
    if (h->n_changes == h->cap_changes) {
        h->cap_changes = h->cap_changes ? h->cap_changes * 2 : 64;
        h->changes = sk_realloc(h->changes, h->cap_changes * sizeof(*h->changes));
    }
    struct hub_change *c = &h->changes[h->n_changes++];
    c->type = sk_entity_index(e);
    c->deleted = deleted;
    c->withheld = withheld;
    snprintf(c->id, sizeof(c->id), "%s", id);
}

int hub_store_record(void *ctx, const struct sk_record *r, struct sk_error *err)
{
    struct hub *h = ctx;
    if (!r->entity || !hub_consumes(h, r->entity))
        return sk_error_set(err, SK_ERR_PERMANENT, "entity type %s is not one this hub serves",
                            r->entity ? r->entity->name : "(none)");
    if (r->key[0] == '\0')
        return sk_error_set(err, SK_ERR_PERMANENT, "record without a key");
    const char *coll = r->entity->collection;
    if (!r->value) {
        int removed = 0;
        if (sk_state_delete(h->state, coll, r->key, &removed, err) < 0)
            return -1;
        /* Only what a client may have seen needs a tombstone (scoped by its own links)
         * and a webhook. */
        if (!removed)
            return 0;
        if (hub_refs_put(h->state, coll, r->key, NULL, 0, err) < 0 ||
            hub_scope_removed(h, r->entity, r->key, err) < 0 ||
            put_row(h, coll, r->key, next_stamp(h), INT64_MIN, true, err) < 0)
            return -1;
        h->batch_deleted |= 1u << sk_entity_index(r->entity);
        note_change(h, r->entity, r->key, true, false);
        return 0;
    }
    if (!r->json)
        return sk_error_set(err, SK_ERR_PERMANENT, "record has a value but no decoded document");
    enum sk_state_put put;
    if (sk_state_upsert(h->state, coll, r->key, r->json, r->json_len, r->modified_us, &put, err) <
        0)
        return -1;
    if (put != SK_STATE_WRITTEN) /* stale or the same: clients have it already */
        return 0;
    int64_t stamp = next_stamp(h);
    bool withheld;
    if (hub_refs_put(h->state, coll, r->key, r->json, r->json_len, err) < 0 ||
        hub_scope_withheld(h, r->entity, r->key, r->doc, stamp, &withheld, err) < 0 ||
        hub_scope_put(h, r->entity, r->key, r->doc, err) < 0 ||
        put_row(h, coll, r->key, stamp, created_of(r->doc), false, err) < 0)
        return -1;
    h->batch_modified |= 1u << sk_entity_index(r->entity);
    if (withheld)
        h->batch_withheld |= 1u << sk_entity_index(r->entity);
    note_change(h, r->entity, r->key, false, withheld);
    return 0;
}

int hub_store_finish(void *ctx, struct sk_error *err)
{
    struct hub *h = ctx;
    if (meta_put(h->state, "last_stamp", &h->last_stamp, 0, false, err) < 0)
        return -1;
    if (sk_mono_ms() < h->next_purge_ms)
        return 0;
    h->next_purge_ms = sk_mono_ms() + PURGE_EVERY_MS;
    if (hub_scope_purge(h, sk_now_us() - h->conf->deleted_retention_ms * 1000, err) < 0)
        return -1;
    sqlite3_stmt *q;
    if (sk_state_prepare(h->state,
                         "DELETE FROM hub_rows WHERE deleted_us IS NOT NULL AND deleted_us < ?1",
                         &q, err) < 0)
        return -1;
    sqlite3_bind_int64(q, 1, sk_now_us() - h->conf->deleted_retention_ms * 1000);
    int rc = sk_state_run(h->state, q, false, err);
    sqlite3_finalize(q);
    return rc;
}

/* ---- the read side ---------------------------------------------------------- */

/* sk_instant(text): an RFC 3339 date-time as µs since the epoch, NULL if it is none. */
static void sql_instant(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    const unsigned char *text = sqlite3_value_text(argv[0]);
    int64_t us;
    if (text && sk_time_parse_us((const char *)text, &us) == 0)
        sqlite3_result_int64(ctx, us);
    else
        sqlite3_result_null(ctx);
}

sqlite3 *hub_reader_take(struct hub *h, struct sk_error *err)
{
    pthread_mutex_lock(&h->pool_mu);
    sqlite3 *db = h->n_pool ? h->pool[--h->n_pool] : NULL;
    pthread_mutex_unlock(&h->pool_mu);
    if (db)
        return db;
    int rc = sqlite3_open_v2(h->db_path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        sk_error_set(err, SK_ERR_RETRIABLE, "opening %s to read: %s", h->db_path,
                     db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    sqlite3_create_function(db, "sk_instant", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
                            sql_instant, NULL, NULL);
    hub_filter_register(db);
    return db;
}

void hub_reader_give(struct hub *h, sqlite3 *db)
{
    pthread_mutex_lock(&h->pool_mu);
    if (h->n_pool == h->cap_pool) {
        h->cap_pool = h->cap_pool ? h->cap_pool * 2 : 8;
        h->pool = sk_realloc(h->pool, h->cap_pool * sizeof(*h->pool));
    }
    h->pool[h->n_pool++] = db;
    pthread_mutex_unlock(&h->pool_mu);
}

void hub_reader_pool_free(struct hub *h)
{
    for (size_t i = 0; i < h->n_pool; i++)
        sqlite3_close(h->pool[i]);
    free(h->pool);
    h->pool = NULL;
    h->n_pool = h->cap_pool = 0;
}

static int read_error(sqlite3 *db, int rc, struct sk_error *err)
{
    return sk_error_set(err, sk_state_error_class(rc, false), "reading the hub's state: %s",
                        sqlite3_errmsg(db));
}

/* Prepares sql (malloc'ed, freed here) on a reader's connection; -1 with err. */
static int prepare_read(sqlite3 *db, char *sql, sqlite3_stmt **stmt, struct sk_error *err)
{
    int rc = sqlite3_prepare_v2(db, sql, -1, stmt, NULL);
    free(sql);
    return rc == SQLITE_OK ? 0 : read_error(db, rc, err);
}

/* The client's organisation scope on hub_rows r (hub_scope.c), or nothing. */
static const char *scope_of(const struct hub_query *q)
{
    return q->view.scope_sql ? q->view.scope_sql : "";
}

/* Binds the filters and position shared by both list queries (?1..?6) and the limit (?7). */
static void bind_query(sqlite3_stmt *q, const struct hub_query *query)
{
    sqlite3_bind_int64(q, 1, query->after_stamp);
    sqlite3_bind_text(q, 2, query->after_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, query->modified_after);
    sqlite3_bind_int64(q, 4, query->modified_before);
    sqlite3_bind_int64(q, 5, query->created_after);
    sqlite3_bind_int64(q, 6, query->created_before);
    sqlite3_bind_int64(q, 7, query->limit + 1); /* one more: is there a next page? */
}

/* The four meta filters (created absent: no match); after is exclusive, before inclusive
 * (the spec's words: "Exkluderande", "på eller före ... Inkluderande"). */
#define WHERE_META                                                                                 \
    " r.stamp > ?3 AND r.stamp <= ?4"                                                              \
    " AND (?5 = -9223372036854775808 OR r.created_us > ?5)"                                        \
    " AND (?6 = 9223372036854775807 OR r.created_us <= ?6)"
/* The default keyset position, (stamp, id) after (?1, ?2). */
#define AFTER_STAMP " (r.stamp > ?1 OR (r.stamp = ?1 AND r.id > ?2))"
#define WHERE_PAGE AFTER_STAMP " AND" WHERE_META

/* The first SQL parameter of a list's per-type filters (hub_filter.c). */
#define FILTER_FIRST_PARAM 20

/* One row of a page: its position is taken; -1 with err stops the page. */
typedef int (*row_fn)(void *ctx, sqlite3_stmt *q, int64_t n, struct sk_error *err);

/*
 * Steps q, whose rows start with (id, stamp): calls each for every row until
 * limit rows, remembering the last position. Returns the rows taken, -1 with
 * err.
 */
static int64_t take_rows(sqlite3 *db, sqlite3_stmt *q, int64_t limit, bool *more,
                         int64_t *last_stamp, char last_id[37], row_fn each, void *ctx,
                         struct sk_error *err)
{
    int64_t n = 0;
    int rc;
    *more = false;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (n == limit) {
            *more = true;
            break;
        }
        snprintf(last_id, 37, "%s", (const char *)sqlite3_column_text(q, 0));
        *last_stamp = sqlite3_column_int64(q, 1);
        if (each(ctx, q, n++, err) < 0)
            return -1;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return read_error(db, rc, err);
    return n;
}

/* A stamp as the RFC 3339 date-time clients see in meta.modified (UTC, µs). */
static void format_stamp(int64_t us, char out[40])
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 40 - n, ".%06dZ", (int)(us % 1000000));
}

cJSON *hub_store_served(const struct sk_entity *e, const char *doc, int64_t stamp,
                        const struct hub_view *view, bool *hidden)
{
    if (hidden)
        *hidden = false;
    cJSON *j = cJSON_Parse(doc);
    const struct hub_client *c = view ? view->client : NULL;
    if (j && c && !hub_scope_filter(c, e, j)) { /* protected_identities: skip */
        cJSON_Delete(j);
        if (hidden)
            *hidden = true;
        return NULL;
    }
    if (!j || !e->has_meta) /* no meta in the spec (or, never stored, not JSON): as it is */
        return j;
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(j, "meta");
    if (!cJSON_IsObject(meta)) {
        cJSON_DeleteItemFromObjectCaseSensitive(j, "meta");
        meta = cJSON_AddObjectToObject(j, "meta");
    }
    char when[40];
    format_stamp(stamp, when);
    cJSON_DeleteItemFromObjectCaseSensitive(meta, "modified");
    cJSON_AddStringToObject(meta, "modified", when);
    return j;
}

/*
 * Appends doc as served to view (hub_store_served), with what f asks for
 * expanded (f NULL: nothing). 1 appended, 0 hidden from view's client
 * (nothing appended), -1 with err.
 */
static int put_served(struct sk_buf *out, sqlite3 *db, const struct sk_entity *e,
                      const struct hub_filter *f, const struct hub_view *view, const char *doc,
                      int64_t stamp, struct sk_error *err)
{
    if (!e->has_meta && !(view && view->client) && !hub_filter_expand(f) &&
        !hub_filter_ref_names(f)) {
        sk_buf_puts(out, doc); /* exactly as stored */
        return 1;
    }
    bool hidden;
    cJSON *j = hub_store_served(e, doc, stamp, view, &hidden);
    if (!j) {
        if (hidden)
            return 0;
        sk_buf_puts(out, doc);
        return 1;
    }
    int rc = f ? hub_expand_apply(db, e, f, view, j, err) : 0;
    if (rc == 0)
        sk_json_print_into(j, out);
    cJSON_Delete(j);
    return rc < 0 ? -1 : 1;
}

struct list_page {
    struct sk_buf *out;
    sqlite3 *db;
    const struct sk_entity *e;
    const struct hub_filter *f;
    const struct hub_view *view;
    char *last_key; /* HUB_KEY_MAX */
    int64_t served; /* rows written (a protected person may be skipped for a client) */
};

static int put_listed(void *ctx, sqlite3_stmt *q, int64_t n, struct sk_error *err)
{
    (void)n;
    struct list_page *p = ctx;
    size_t mark = p->out->len;
    if (p->served)
        sk_buf_putc(p->out, ',');
    const unsigned char *key = sqlite3_column_text(q, 3);
    snprintf(p->last_key, HUB_KEY_MAX, "%s", key ? (const char *)key : "");
    int rc = put_served(p->out, p->db, p->e, p->f, p->view, (const char *)sqlite3_column_text(q, 2),
                        sqlite3_column_int64(q, 1), err);
    if (rc > 0)
        p->served++;
    else
        p->out->len = mark;
    return rc < 0 ? -1 : 0;
}

/*
 * The list's position and order: by (stamp, id) by default; with a sortkey
 * by (sort value, id) in its direction, after (?9, ?2) unless the request
 * is a first one (?2 empty); ModifiedDesc by (stamp, id) descending.
 */
static void put_order(struct sk_buf *sql, const struct hub_filter *f)
{
    bool desc, by_stamp;
    const char *key = hub_filter_sort(f, &desc, &by_stamp);
    const char *op = desc ? "<" : ">", *dir = desc ? " DESC" : "";
    if (!key && !by_stamp) {
        sk_buf_puts(sql, " AND" AFTER_STAMP " ORDER BY r.stamp, r.id");
        return;
    }
    if (by_stamp) {
        sk_buf_printf(sql, " AND (?2 = '' OR r.stamp %s ?1 OR (r.stamp = ?1 AND r.id %s ?2))", op,
                      op);
        sk_buf_printf(sql, " ORDER BY r.stamp%s, r.id%s", dir, dir);
        return;
    }
    sk_buf_printf(sql, " AND (?2 = '' OR (%s) %s ?9 OR ((%s) = ?9 AND r.id %s ?2))", key, op, key,
                  op);
    sk_buf_printf(sql, " ORDER BY (%s)%s, r.id%s", key, dir, dir);
}

int64_t hub_store_list(sqlite3 *db, const struct sk_entity *e, const struct hub_query *q,
                       struct sk_buf *out, bool *more, int64_t *last_stamp, char last_id[37],
                       char *last_key, struct sk_error *err)
{
    bool desc, by_stamp;
    const char *key = q->filter ? hub_filter_sort(q->filter, &desc, &by_stamp) : NULL;
    struct sk_buf sql = {0};
    sk_buf_printf(&sql,
                  "SELECT r.id, r.stamp, c.doc, %s FROM hub_rows r JOIN \"%s\" c ON c.id = r.id "
                  "WHERE r.collection = ?8 AND r.deleted_us IS NULL AND" WHERE_META "%s",
                  key ? key : "NULL", e->collection, scope_of(q));
    int next_param = FILTER_FIRST_PARAM;
    if (q->filter)
        hub_filter_where(q->filter, scope_of(q), &sql, &next_param);
    put_order(&sql, q->filter);
    sk_buf_puts(&sql, " LIMIT ?7");
    sqlite3_stmt *stmt;
    if (prepare_read(db, sk_buf_take(&sql), &stmt, err) < 0)
        return -1;
    bind_query(stmt, q);
    sqlite3_bind_text(stmt, 8, e->collection, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 9, q->after_key, -1, SQLITE_STATIC);
    if (q->filter)
        hub_filter_bind(q->filter, stmt, FILTER_FIRST_PARAM);
    char key_buf[HUB_KEY_MAX];
    struct list_page page = {out, db, e, q->filter, &q->view, last_key ? last_key : key_buf, 0};
    int64_t n = take_rows(db, stmt, q->limit, more, last_stamp, last_id, put_listed, &page, err);
    sqlite3_finalize(stmt);
    return n < 0 ? n : page.served;
}

int hub_store_get(sqlite3 *db, const struct sk_entity *e, const char *id,
                  const struct hub_filter *f, const struct hub_view *view, char **doc,
                  struct sk_error *err)
{
    char *sql = sk_asprintf("SELECT c.doc, r.stamp FROM \"%s\" c JOIN hub_rows r ON r.collection "
                            "= ?2 AND r.id = c.id WHERE c.id = ?1%s",
                            e->collection, view && view->scope_sql ? view->scope_sql : "");
    sqlite3_stmt *q;
    if (prepare_read(db, sql, &q, err) < 0)
        return -1;
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, e->collection, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    int found = 0;
    *doc = NULL;
    if (rc == SQLITE_ROW) {
        struct sk_buf b = {0};
        /* 0: absent for this client (protected_identities: skip) */
        found = put_served(&b, db, e, f, view, (const char *)sqlite3_column_text(q, 0),
                           sqlite3_column_int64(q, 1), err);
        if (found == 1)
            *doc = sk_buf_take(&b);
        else
            sk_buf_free(&b);
    } else if (rc != SQLITE_DONE) {
        found = read_error(db, rc, err);
    }
    sqlite3_finalize(q);
    return found;
}

/* The ids of one page of tombstones, collected per type before they are printed by bucket. */
struct deleted_ids {
    struct sk_buf ids[SK_ENTITY_COUNT];
};

static int collect_deleted(void *ctx, sqlite3_stmt *q, int64_t n, struct sk_error *err)
{
    (void)n;
    (void)err;
    struct deleted_ids *d = ctx;
    int i = sk_entity_index(sk_entity_by_collection((const char *)sqlite3_column_text(q, 2)));
    if (i < 0)
        return 0;
    if (d->ids[i].len)
        sk_buf_putc(&d->ids[i], ',');
    sk_buf_json_string(&d->ids[i], (const char *)sqlite3_column_text(q, 0));
    return 0;
}

int64_t hub_store_deleted(sqlite3 *db, const struct sk_entity *e, const struct hub_query *q,
                          struct sk_buf *out, bool *more, int64_t *last_stamp, char last_id[37],
                          char *last_key, struct sk_error *err)
{
    (void)e;
    (void)last_key;
    struct sk_buf in = {0};
    for (int i = 0; i < SK_ENTITY_COUNT; i++)
        if (q->entity_mask & (1u << i))
            sk_buf_printf(&in, "%s'%s'", in.len ? "," : "", sk_entities[i]->collection);
    /* For a skip client, the persons it was shown that became protected are deletions from
     * then on (hub_withheld, as hub_rows r for the page and scope conditions). */
    char *withheld =
        q->view.withheld_sql
            ? sk_asprintf(" UNION ALL SELECT r.id, r.stamp, r.collection FROM (SELECT "
                          "collection, id, stamp, NULL AS created_us FROM hub_withheld) r WHERE "
                          "r.collection IN (%s) AND" WHERE_PAGE "%s",
                          in.len ? in.p : "''", q->view.withheld_sql)
            : NULL;
    char *sql = sk_asprintf("SELECT r.id, r.stamp, r.collection FROM hub_rows r WHERE "
                            "r.deleted_us IS NOT NULL AND r.collection IN (%s) AND" WHERE_PAGE
                            "%s%s ORDER BY 2, 1 LIMIT ?7",
                            in.len ? in.p : "''", scope_of(q), withheld ? withheld : "");
    free(withheld);
    sk_buf_free(&in);
    sqlite3_stmt *stmt;
    if (prepare_read(db, sql, &stmt, err) < 0)
        return -1;
    bind_query(stmt, q);
    struct deleted_ids d = {0};
    int64_t n = take_rows(db, stmt, q->limit, more, last_stamp, last_id, collect_deleted, &d, err);
    sqlite3_finalize(stmt);
    bool first = true;
    for (int i = 0; i < SK_ENTITY_COUNT; i++) {
        if (n >= 0 && (q->entity_mask & (1u << i))) {
            sk_buf_printf(out, "%s\"%s\":[%s]", first ? "" : ",", sk_entities[i]->deleted_key,
                          d.ids[i].len ? d.ids[i].p : "");
            first = false;
        }
        sk_buf_free(&d.ids[i]);
    }
    return n;
}
