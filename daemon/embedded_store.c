/*
 * embedded_store.c: opening the embedded broker's store, moving a damaged
 * one aside, compaction, and the restore into a new mock cluster. The
 * journal that fills it is embedded_journal.c's. See embedded_store.h and
 * docs/architecture.md §5.8, §5.9.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "embedded_internal.h"
#include "kafka.h"
#include "util.h"

/* Bumped when the tables change in a way an older daemon cannot read. 2: the
 * records' checksums (a store of format 1 gets the column, its rows none). */
#define ESTORE_FORMAT "2"
/* Compaction at open: only when over this many records and over twice the live ones. */
#define COMPACT_MIN_RECORDS 1000

/* ---- headers -------------------------------------------------------------------- */

static void put_u32(struct sk_buf *b, uint32_t v)
{
    unsigned char x[4] = {v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (v >> 24) & 0xff};
    sk_buf_putn(b, x, 4);
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void estore_headers_pack(const rd_kafka_message_t *m, struct sk_buf *out)
{
    rd_kafka_headers_t *hdrs;
    if (rd_kafka_message_headers(m, &hdrs))
        return;
    const char *name;
    const void *val;
    size_t len;
    for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &len) == 0; i++) {
        put_u32(out, (uint32_t)strlen(name));
        sk_buf_putn(out, name, strlen(name));
        put_u32(out, val ? (uint32_t)len : UINT32_MAX);
        if (val)
            sk_buf_putn(out, val, len);
    }
}

rd_kafka_headers_t *estore_headers_unpack(const void *blob, size_t len)
{
    const unsigned char *p = blob, *end = p + len;
    if (!p || len == 0)
        return NULL;
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(8);
    while (p < end) {
        if (end - p < 4)
            goto bad;
        uint32_t nlen = get_u32(p);
        p += 4;
        if ((size_t)(end - p) < (size_t)nlen + 4)
            goto bad;
        const char *name = (const char *)p;
        p += nlen;
        uint32_t vlen = get_u32(p);
        p += 4;
        if (vlen != UINT32_MAX && (size_t)(end - p) < vlen)
            goto bad;
        rd_kafka_header_add(hdrs, name, (ssize_t)nlen, vlen == UINT32_MAX ? NULL : p,
                            vlen == UINT32_MAX ? 0 : (ssize_t)vlen);
        if (vlen != UINT32_MAX)
            p += vlen;
    }
    return hdrs;
bad:
    rd_kafka_headers_destroy(hdrs);
    return NULL;
}

/* ---- opening -------------------------------------------------------------------- */

struct open_ctx {
    bool existed;  /* the file was there before: it must already be a store */
    char *problem; /* what is wrong with it (malloc'ed), when it is not */
};

/* The first column of the first row of sql as text (malloc'ed), NULL if none. */
static char *query_text(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *q = NULL;
    char *out = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW &&
        sqlite3_column_text(q, 0))
        out = sk_strdup((const char *)sqlite3_column_text(q, 0));
    sqlite3_finalize(q);
    return out;
}

static int64_t query_int(sqlite3 *db, const char *sql)
{
    char *t = query_text(db, sql);
    int64_t v = t ? strtoll(t, NULL, 10) : 0;
    free(t);
    return v;
}

/* The store's tables, inside sk_state_open's transaction. */
static int schema(struct sk_state *st, void *arg, struct sk_error *err)
{
    struct open_ctx *c = arg;
    sqlite3 *db = sk_state_db(st);
    if (c->existed) {
        char *format = query_text(db, "SELECT value FROM estore_meta WHERE key = 'format'");
        if (!format) {
            c->problem = sk_strdup("it holds no store: empty, truncated or another file");
        } else if (strcmp(format, "1") == 0) {
            if (sk_state_exec(st,
                              "ALTER TABLE " ESTORE_RECORDS " ADD COLUMN crc INTEGER;"
                              "UPDATE estore_meta SET value = '" ESTORE_FORMAT
                              "' WHERE key = 'format'",
                              err)) {
                free(format);
                return -1;
            }
        } else if (strcmp(format, ESTORE_FORMAT) != 0) {
            c->problem = sk_asprintf("format %s, this daemon knows %s", format, ESTORE_FORMAT);
        }
        free(format);
        if (c->problem)
            return sk_error_set(err, SK_ERR_FATAL, "%s", c->problem);
    }
    if (sk_state_exec(st,
                      "CREATE TABLE IF NOT EXISTS estore_meta(key TEXT PRIMARY KEY, "
                      "value TEXT NOT NULL);"
                      "CREATE TABLE IF NOT EXISTS " ESTORE_TOPICS "(id INTEGER PRIMARY KEY, "
                      "name TEXT UNIQUE NOT NULL, partitions INTEGER NOT NULL, "
                      "compact INTEGER NOT NULL);"
                      "CREATE TABLE IF NOT EXISTS " ESTORE_RECORDS "(topic INTEGER NOT NULL, "
                      "partition INTEGER NOT NULL, offset INTEGER NOT NULL, key BLOB, value BLOB, "
                      "headers BLOB, ts INTEGER NOT NULL, crc INTEGER, "
                      "PRIMARY KEY(topic, partition, offset)) "
                      "WITHOUT ROWID;"
                      "INSERT OR IGNORE INTO estore_meta VALUES('format', '" ESTORE_FORMAT "');",
                      err))
        return -1;
    return 0;
}

static void new_incarnation(struct sk_estore *s)
{
    char uuid[37];
    sk_uuid_random(uuid);
    free(s->incarnation);
    s->incarnation = sk_asprintf("embedded-%s", uuid);
}

static int save_incarnation(struct sk_estore *s, struct sk_error *err)
{
    sqlite3_stmt *q;
    if (sk_state_prepare(s->st, "INSERT OR REPLACE INTO estore_meta VALUES('incarnation', ?1)", &q,
                         err))
        return -1;
    sqlite3_bind_text(q, 1, s->incarnation, -1, SQLITE_STATIC);
    int rc = sk_state_run(s->st, q, false, err);
    sqlite3_finalize(q);
    return rc;
}

/*
 * ESTORE_SUM(topic name, partition, key, value, headers, ts): FNV-1a over
 * every field but the offset (compaction renumbers), NULL told from empty.
 * SQLite checks its pages' structure, not the bytes of a value: a flipped
 * byte in a record restored it silently changed, and a sink reading from the
 * start applied a name the source never had.
 */
static void estore_sum(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    uint64_t h = 14695981039346656037ULL;
    for (int i = 0; i < argc; i++) {
        int type = sqlite3_value_type(argv[i]);
        const unsigned char *p = type == SQLITE_INTEGER ? NULL : sqlite3_value_blob(argv[i]);
        int64_t v = type == SQLITE_INTEGER ? sqlite3_value_int64(argv[i])
                                           : (int64_t)sqlite3_value_bytes(argv[i]);
        unsigned char head[9] = {(unsigned char)type};
        for (int b = 0; b < 8; b++)
            head[1 + b] = (unsigned char)((uint64_t)v >> (8 * b));
        for (int b = 0; b < 9; b++)
            h = (h ^ head[b]) * 1099511628211ULL;
        for (int64_t b = 0; p && b < v; b++)
            h = (h ^ p[b]) * 1099511628211ULL;
    }
    sqlite3_result_int64(ctx, (sqlite3_int64)h);
}

/* The first record whose checksum is wrong, as text (malloc'ed), NULL if none. */
static char *bad_record(sqlite3 *db)
{
    return query_text(db, "SELECT printf('record %s [%d] at offset %lld does not match its "
                          "checksum', t.name, r.partition, r.offset) FROM " ESTORE_RECORDS
                          " r JOIN " ESTORE_TOPICS " t ON t.id = r.topic WHERE r.crc IS NOT NULL "
                          "AND r.crc != " ESTORE_SUM("t.name", "r.partition", "r.key", "r.value",
                                                     "r.headers", "r.ts") " LIMIT 1");
}

/* Opens path: NULL with err and *problem (malloc'ed) if the file is damaged. */
static struct sk_state *try_open(const char *path, char **problem, struct sk_error *err)
{
    struct stat sb;
    struct open_ctx c = {.existed = stat(path, &sb) == 0};
    struct sk_state_opts o = {
        .path = path,
        /* A commit is on disk before a sink may apply what it holds (sk_estore_await),
         * so a power loss cannot leave a target ahead of the restored log. */
        .synchronous = "full",
        .busy_timeout_ms = 5000,
        .private_file = true, /* the records hold personal data */
        .schema = schema,
        .schema_ctx = &c,
    };
    struct sk_state *st = sk_state_open(&o, err);
    if (!st) {
        *problem = c.problem ? c.problem : sk_strdup(err->msg);
        return NULL;
    }
    free(c.problem);
    sqlite3 *db = sk_state_db(st);
    sqlite3_create_function(db, "estore_sum", 6, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
                            estore_sum, NULL, NULL);
    /* quick_check reads every page (a truncated or overwritten file fails it)
     * without the index cross-checks of integrity_check; the checksums what
     * the pages hold. */
    char *check = query_text(db, "PRAGMA quick_check");
    char *bad = check && strcmp(check, "ok") == 0 ? bad_record(db) : NULL;
    if (!check || strcmp(check, "ok") != 0 || bad) {
        *problem = bad ? bad : sk_asprintf("quick_check: %s", check ? check : sqlite3_errmsg(db));
        free(check);
        sk_state_close(st);
        sk_error_set(err, SK_ERR_FATAL, "%s", *problem);
        return NULL;
    }
    free(check);
    return st;
}

/* Renames path (and its -wal, -shm) to path.damaged-<time>; false if it cannot. */
static bool move_aside(const char *path, char *aside, size_t size)
{
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
    snprintf(aside, size, "%s.damaged-%s", path, stamp);
    if (rename(path, aside) && errno != ENOENT)
        return false;
    for (const char *const *ext = (const char *const[]){"-wal", "-shm", NULL}; *ext; ext++) {
        char *from = sk_asprintf("%s%s", path, *ext), *to = sk_asprintf("%s%s", aside, *ext);
        rename(from, to); /* absent when the file was not in WAL mode */
        free(from);
        free(to);
    }
    return true;
}

/* ---- compaction ------------------------------------------------------------------ */

/*
 * Renumbers every partition's records 0, 1, 2, ... in their order: what the
 * mock cluster assigns when they are produced again. Done in two steps
 * (negative, then positive) so no key collides on the way.
 */
static int renumber(struct sk_estore *s, struct sk_error *err)
{
    return sk_state_exec(
        s->st,
        "CREATE TEMP TABLE renum AS SELECT topic, partition, offset AS old, "
        "row_number() OVER (PARTITION BY topic, partition ORDER BY offset) - 1 AS new "
        "FROM " ESTORE_RECORDS ";"
        "UPDATE " ESTORE_RECORDS
        " SET offset = -1 - n.new FROM renum n WHERE n.topic = " ESTORE_RECORDS
        ".topic AND n.partition = " ESTORE_RECORDS ".partition AND n.old = " ESTORE_RECORDS
        ".offset;"
        "UPDATE " ESTORE_RECORDS " SET offset = -1 - offset;"
        "DROP TABLE renum;",
        err);
}

/*
 * Keeps the latest record of every key of the compacted topics (tombstones
 * too: a sink reading from the start must still see a deletion) and every
 * record of the others (the DLQ), then renumbers. Offsets change, so the
 * incarnation does too (§5.9): sinks that keep offsets read again from the
 * start and converge by idempotent upserts.
 */
static int compact(struct sk_estore *s, int64_t before, struct sk_error *err)
{
    if (sk_state_begin(s->st, err) ||
        sk_state_exec(
            s->st,
            "DELETE FROM " ESTORE_RECORDS " WHERE topic IN (SELECT id FROM " ESTORE_TOPICS
            " WHERE compact) AND (topic, partition, offset) NOT IN (SELECT topic, partition, "
            "max(offset) FROM " ESTORE_RECORDS " GROUP BY topic, partition, key)",
            err) ||
        renumber(s, err))
        goto fail;
    new_incarnation(s);
    if (save_incarnation(s, err) || sk_state_commit(s->st, err))
        goto fail;
    int64_t after = query_int(sk_state_db(s->st), "SELECT count(*) FROM " ESTORE_RECORDS);
    sk_info("kafka",
            "embedded store %s compacted: %lld records of %lld kept; new incarnation %s (sinks "
            "that keep offsets read their topics again)",
            s->path, (long long)after, (long long)before, s->incarnation);
    sk_state_exec(s->st, "VACUUM", err); /* gives the space back; failing costs only disk */
    return 0;
fail:
    sk_state_rollback(s->st);
    return -1;
}

/* Compacts when most of the log is overwritten, or renumbers a log with gaps. */
static int maybe_compact(struct sk_estore *s, struct sk_error *err)
{
    sqlite3 *db = sk_state_db(s->st);
    int64_t total = query_int(db, "SELECT count(*) FROM " ESTORE_RECORDS);
    int64_t live = query_int(
        db, "SELECT count(*) FROM (SELECT 1 FROM " ESTORE_RECORDS " r JOIN " ESTORE_TOPICS
            " t ON t.id = r.topic GROUP BY r.topic, r.partition, CASE WHEN t.compact THEN r.key "
            "ELSE r.offset END)");
    if (total > COMPACT_MIN_RECORDS && total > 2 * live)
        return compact(s, total, err);
    /* The mock numbers a partition 0, 1, 2, ...: a store whose offsets are
     * not that (written by hand, or by a journal that lost a record) would
     * restore elsewhere than sinks stored. */
    int64_t gaps = query_int(db, "SELECT count(*) FROM (SELECT 1 FROM " ESTORE_RECORDS
                                 " GROUP BY topic, partition HAVING count(*) != max(offset) + 1)");
    if (gaps == 0)
        return 0;
    sk_warn("kafka", "embedded store %s: %lld partition(s) with gaps in their offsets: renumbered",
            s->path, (long long)gaps);
    if (sk_state_begin(s->st, err) || renumber(s, err))
        goto fail;
    new_incarnation(s);
    if (save_incarnation(s, err) || sk_state_commit(s->st, err))
        goto fail;
    return 0;
fail:
    sk_state_rollback(s->st);
    return -1;
}

/* ---- restore --------------------------------------------------------------------- */

struct restore {
    size_t delivered, failed, moved;
    char first_problem[256];
};

static void restore_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct restore *r = opaque;
    int64_t want = (int64_t)(intptr_t)m->_private;
    r->delivered++;
    if (m->err) {
        if (!r->failed++)
            snprintf(r->first_problem, sizeof(r->first_problem), "%s [%d]: %s",
                     rd_kafka_topic_name(m->rkt), (int)m->partition, rd_kafka_err2str(m->err));
    } else if (m->offset != want) {
        if (!r->moved++ && !r->failed)
            snprintf(r->first_problem, sizeof(r->first_problem),
                     "%s [%d]: offset %lld came back as %lld", rd_kafka_topic_name(m->rkt),
                     (int)m->partition, (long long)want, (long long)m->offset);
    }
}

/* Creates the stored topics with their stored partition counts (parallel per count, §8.12). */
static int restore_topics(struct sk_estore *s, struct sk_error *err)
{
    sqlite3_stmt *q;
    if (sk_state_prepare(s->st,
                         "SELECT name, partitions, compact FROM " ESTORE_TOPICS
                         " ORDER BY partitions, compact",
                         &q, err))
        return -1;
    char **names = NULL;
    size_t n = 0;
    int rc = 0, parts = -1, compact = -1;
    for (;;) {
        int step = sqlite3_step(q);
        bool row = step == SQLITE_ROW;
        int p = row ? sqlite3_column_int(q, 1) : -1, c = row ? sqlite3_column_int(q, 2) : -1;
        if (n && (!row || p != parts || c != compact)) {
            rc = sk_kafka_ensure_topics(s->kafka, (const char *const *)names, n, compact, parts,
                                        err);
            for (size_t i = 0; i < n; i++)
                free(names[i]);
            n = 0;
        }
        if (!row || rc)
            break;
        parts = p;
        compact = c;
        names = sk_realloc(names, (n + 1) * sizeof(*names));
        names[n++] = sk_strdup((const char *)sqlite3_column_text(q, 0));
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    sqlite3_finalize(q);
    return rc;
}

static rd_kafka_resp_err_t produce_row(rd_kafka_t *rk, sqlite3_stmt *q)
{
    const char *topic = (const char *)sqlite3_column_text(q, 0);
    int32_t partition = sqlite3_column_int(q, 1);
    int64_t offset = sqlite3_column_int64(q, 2);
    /* NULL stays NULL (a tombstone, a key-less record); an empty blob stays empty */
    const void *key = sqlite3_column_type(q, 3) == SQLITE_NULL ? NULL
                      : sqlite3_column_bytes(q, 3)             ? sqlite3_column_blob(q, 3)
                                                               : "";
    size_t key_len = (size_t)sqlite3_column_bytes(q, 3);
    const void *value = sqlite3_column_type(q, 4) == SQLITE_NULL ? NULL
                        : sqlite3_column_bytes(q, 4)             ? sqlite3_column_blob(q, 4)
                                                                 : "";
    size_t value_len = (size_t)sqlite3_column_bytes(q, 4);
    rd_kafka_headers_t *hdrs =
        estore_headers_unpack(sqlite3_column_blob(q, 5), (size_t)sqlite3_column_bytes(q, 5));
    if (!hdrs)
        hdrs = rd_kafka_headers_new(0); /* none is written as none */
    int64_t ts = sqlite3_column_int64(q, 6);
    rd_kafka_resp_err_t e;
    for (;;) {
        e = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
            RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)value, value_len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_TIMESTAMP(ts > 0 ? ts : 0),
            RD_KAFKA_V_OPAQUE((void *)(intptr_t)offset), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        rd_kafka_poll(rk, 100); /* back-pressure (§8.2) */
    }
    if (e)
        rd_kafka_headers_destroy(hdrs); /* producev owns them only when it succeeds */
    return e;
}

/*
 * Produces every stored record again, per partition in offset order, with
 * its key, value, headers and timestamp. An idempotent producer keeps the
 * order through retries, and the mock numbers each partition from 0, so every
 * record gets its stored offset back; each delivery report is checked.
 */
static int restore_records(struct sk_estore *s, struct sk_error *err)
{
    if (restore_topics(s, err))
        return -1;
    int64_t t0 = sk_mono_ms();
    struct restore r = {0};
    rd_kafka_t *rk = sk_kafka_producer_new(s->kafka, "skolsync-restore", restore_dr, &r, err);
    if (!rk)
        return -1;
    sqlite3_stmt *q;
    int rc = sk_state_prepare(s->st,
                              "SELECT t.name, r.partition, r.offset, r.key, r.value, r.headers, "
                              "r.ts FROM " ESTORE_RECORDS " r JOIN " ESTORE_TOPICS
                              " t ON t.id = r.topic ORDER BY r.topic, r.partition, r.offset",
                              &q, err);
    size_t produced = 0;
    while (rc == 0 && sqlite3_step(q) == SQLITE_ROW) {
        rd_kafka_resp_err_t e = produce_row(rk, q);
        if (e) {
            rc = sk_error_set(err, SK_ERR_FATAL, "restoring %s: %s",
                              (const char *)sqlite3_column_text(q, 0), rd_kafka_err2str(e));
            break;
        }
        produced++;
        /* A bounded queue: the mock holds every record already, the
         * producer's copies need not pile up beside them. */
        while (rd_kafka_outq_len(rk) > 50000)
            rd_kafka_poll(rk, 1);
        rd_kafka_poll(rk, 0);
    }
    if (q)
        sqlite3_finalize(q);
    if (rd_kafka_flush(rk, 60000) && rc == 0)
        rc = sk_error_set(err, SK_ERR_FATAL, "restoring the embedded broker timed out");
    rd_kafka_destroy(rk);
    if (rc == 0 && (r.failed || r.moved || r.delivered != produced))
        rc = sk_error_set(err, SK_ERR_FATAL,
                          "restoring the embedded broker from %s: %zu of %zu records failed, "
                          "%zu at another offset (%s)",
                          s->path, r.failed, produced, r.moved, r.first_problem);
    if (rc == 0 && produced)
        sk_info("kafka",
                "embedded broker restored from %s: %zu records in %lld ms (incarnation %s)",
                s->path, produced, (long long)(sk_mono_ms() - t0), s->incarnation);
    return rc;
}

/* ---- open and close ---------------------------------------------------------------- */

static int lock_dir(struct sk_estore *s, struct sk_error *err)
{
    if (mkdir(s->dir, 0700) && errno != EEXIST)
        return sk_error_set(err, SK_ERR_FATAL, "kafka.embedded_dir %s: %s", s->dir,
                            strerror(errno));
    char *lock = sk_asprintf("%s/lock", s->dir);
    s->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lock_fd < 0)
        sk_error_set(err, SK_ERR_FATAL, "kafka.embedded_dir %s: its lock file %s: %s", s->dir, lock,
                     strerror(errno));
    free(lock);
    if (s->lock_fd < 0)
        return -1;
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB))
        return sk_error_set(err, SK_ERR_FATAL,
                            "kafka.embedded_dir %s is in use by another skolsync process", s->dir);
    return 0;
}

/* Opens the file, or moves a damaged one aside and starts an empty one. */
static int open_or_replace(struct sk_estore *s, struct sk_error *err)
{
    struct stat sb;
    if (stat(s->path, &sb) == 0 && access(s->path, R_OK | W_OK))
        return sk_error_set(err, SK_ERR_FATAL, "embedded store %s: %s", s->path,
                            strerror(errno)); /* not damaged: not ours to move */
    char *problem = NULL;
    s->st = try_open(s->path, &problem, err);
    if (!s->st) {
        char aside[4096];
        bool moved = move_aside(s->path, aside, sizeof(aside));
        sk_error_log("kafka",
                     "embedded store %s is damaged (%s): %s%s; starting with an empty broker, so "
                     "sources run a full sync",
                     s->path, problem, moved ? "moved aside to " : "",
                     moved ? aside : "could not move it aside");
        free(problem);
        if (!moved)
            return sk_error_set(err, SK_ERR_FATAL,
                                "embedded store %s is damaged and cannot be "
                                "moved aside: %s",
                                s->path, strerror(errno));
        problem = NULL;
        s->st = try_open(s->path, &problem, err);
        free(problem);
        if (!s->st)
            return -1;
    }
    return 0;
}

int sk_estore_open(struct sk_kafka *k, const char *dir, struct sk_estore **out,
                   struct sk_error *err)
{
    struct sk_estore *s = sk_calloc(1, sizeof(*s));
    s->kafka = k;
    s->lock_fd = -1;
    s->dir = sk_strdup(dir);
    s->path = sk_asprintf("%s/embedded.db", dir);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (lock_dir(s, err) || open_or_replace(s, err))
        goto fail;
    s->incarnation =
        query_text(sk_state_db(s->st), "SELECT value FROM estore_meta WHERE key = 'incarnation'");
    if (!s->incarnation) {
        new_incarnation(s);
        if (save_incarnation(s, err))
            goto fail;
        sk_info("kafka", "embedded store %s: new, incarnation %s", s->path, s->incarnation);
    }
    if (maybe_compact(s, err) || restore_records(s, err))
        goto fail;
    *out = s;
    return 0;
fail:
    sk_estore_close(s);
    return -1;
}

const char *sk_estore_incarnation(const struct sk_estore *s)
{
    return s->incarnation;
}

void sk_estore_close(struct sk_estore *s)
{
    if (!s)
        return;
    estore_journal_stop(s);
    sk_state_close(s->st);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* releases the lock */
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->incarnation);
    free(s->dir);
    free(s->path);
    free(s);
}
