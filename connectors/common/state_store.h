/*
 * state_store.h: the local SQLite state a sink keeps next to its target (the
 * sqlite-sink's tables, the oneroster-csv-sink's snapshot, the scim-sink's
 * last documents): one database file opened in WAL mode, one table per SS
 * 12000 collection, the consumed offsets under their broker incarnation, and
 * the batch transaction that writes both.
 *
 * Owns: opening (pragmas, busy timeout), the collection and offset tables and
 * their migrations from older layouts, the stale-update guard, the batch
 * transaction with a savepoint per record, the classes of SQLite errors.
 * Must never: let an older meta.modified overwrite a newer one (records are
 * replayed, or arrive again from a re-read source), store an offset outside
 * the transaction of the rows it covers, or return offsets stored under
 * another broker incarnation (connector.h, struct sk_sink).
 *
 * Used from one thread at a time (the sink's); a reader on another thread
 * opens its own connection (WAL lets it read while the sink writes).
 *
 * On disk, a collection table is
 *   "<collection>"(id TEXT PRIMARY KEY, doc TEXT NOT NULL, modified TEXT,
 *                  modified_us INTEGER, updated_at TEXT)
 * (modified is meta.modified as the source wrote it, modified_us the same
 * instant in µs, updated_at when the row last changed), and the offsets are
 *   skolsync_offsets(topic, partition, next_offset, incarnation, updated_at).
 * A table of an older layout missing a column gets it added on open.
 */
#ifndef SK_STATE_STORE_H
#define SK_STATE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "connector.h"
#include "sk_error.h"

struct sk_state; /* opaque */

struct sk_state_opts {
    const char *path;               /* the database file; created if missing */
    const char *synchronous;        /* PRAGMA synchronous: "off", "normal" (NULL), "full" */
    int64_t busy_timeout_ms;        /* wait this long for another connection's lock */
    bool private_file;              /* mode 0600: the state holds personal data */
    bool offsets;                   /* keep skolsync_offsets (exactly-once apply) */
    const char *const *collections; /* one table each */
    size_t n_collections;
    /*
     * Optional: the owner's own tables, version checks and migrations. Runs
     * inside the opening transaction, after the store's tables exist (the
     * collection tables already have every column). Returns 0 or -1 with err.
     */
    int (*schema)(struct sk_state *st, void *ctx, struct sk_error *err);
    void *schema_ctx;
};

/* NULL with err (FATAL: cannot open or newer than known; RETRIABLE: locked). */
struct sk_state *sk_state_open(const struct sk_state_opts *opts, struct sk_error *err);
/* Rolls back an open transaction and closes. NULL is fine. */
void sk_state_close(struct sk_state *st);

/* The connection, for the owner's own statements (on the sink's thread). */
sqlite3 *sk_state_db(struct sk_state *st);
const char *sk_state_path(const struct sk_state *st);
/* Gives back the connection's page cache (it fills again as pages are read):
 * for an owner that has caught up and waits. */
void sk_state_trim(struct sk_state *st);

/*
 * What an SQLite result code means. RETRIABLE: busy, full disk, I/O trouble;
 * may pass. FATAL: a corrupt, read-only or vanished database; will not.
 * Anything else (a constraint, malformed JSON) is PERMANENT when on_record
 * (the statement of one record: that record only), else FATAL.
 */
enum sk_err_class sk_state_error_class(int rc, bool on_record);

/* sqlite3_exec / a persistent prepared statement; -1 with err on failure. */
int sk_state_exec(struct sk_state *st, const char *sql, struct sk_error *err);
int sk_state_prepare(struct sk_state *st, const char *sql, sqlite3_stmt **out,
                     struct sk_error *err);
/* Steps a statement that returns no rows (or ignores them) and resets it. 0, or -1 with err. */
int sk_state_run(struct sk_state *st, sqlite3_stmt *stmt, bool on_record, struct sk_error *err);

/*
 * The file at the store's path is still the one opened; else FATAL: an
 * operator deleted or replaced it (to rebuild a copy) while the connection
 * kept writing to the old, unlinked file where nobody reads it. Its owner
 * fails and is opened again on the new path. A stat; any thread.
 */
int sk_state_check_file(const struct sk_state *st, struct sk_error *err);

/* BEGIN IMMEDIATE (checks the file first; a no-op inside a transaction), COMMIT,
 * ROLLBACK (never fails). */
int sk_state_begin(struct sk_state *st, struct sk_error *err);
int sk_state_commit(struct sk_state *st, struct sk_error *err);
void sk_state_rollback(struct sk_state *st);

/* ---- collections ---------------------------------------------------------- */

enum sk_state_put {
    SK_STATE_WRITTEN, /* inserted or changed */
    SK_STATE_SAME,    /* the stored document is identical: nothing changed, not even updated_at */
    SK_STATE_STALE,   /* the stored meta.modified is newer: kept */
};

/*
 * The stale-update guard: doc wins unless its meta.modified (modified_us,
 * INT64_MIN if absent) is older than the stored one. Compared as instants
 * because one instant can be written with different offsets; when either
 * side has none they cannot be ordered and the arriving record wins (Kafka
 * keeps per-key order). doc is JSON text of doc_len bytes. *put (may be NULL)
 * says what happened. -1 with err (PERMANENT: this record only).
 */
int sk_state_upsert(struct sk_state *st, const char *collection, const char *id, const char *doc,
                    size_t doc_len, int64_t modified_us, enum sk_state_put *put,
                    struct sk_error *err);
/* A tombstone: the row goes; a missing row is no error. *changes (may be NULL): rows removed. */
int sk_state_delete(struct sk_state *st, const char *collection, const char *id, int *changes,
                    struct sk_error *err);
/*
 * The stored row: 1 found (*doc malloc'ed text unless doc is NULL,
 * *modified_us INT64_MIN if none), 0 not found, -1 with err.
 */
int sk_state_get(struct sk_state *st, const char *collection, const char *id, char **doc,
                 int64_t *modified_us, struct sk_error *err);

/* Every id stored in collection with its document, one call of fn each (a
 * sink's keys op). 0, or -1 with err. */
int sk_state_keys(struct sk_state *st, const char *collection,
                  void (*fn)(void *ctx, const char *key, const char *doc), void *ctx,
                  struct sk_error *err);

/* ---- offsets and the batch ------------------------------------------------ */

/* Stores offsets under incarnation in the open transaction. */
int sk_state_store_offsets(struct sk_state *st, const char *incarnation,
                           const struct sk_offsets *offsets, struct sk_error *err);
/* The same in a transaction of its own (a sink's mark_offsets). */
int sk_state_mark_offsets(struct sk_state *st, const char *incarnation,
                          const struct sk_offsets *offsets, struct sk_error *err);
/* Appends the offsets stored under incarnation to out (a sink's stored_offsets). */
int sk_state_stored_offsets(struct sk_state *st, const char *incarnation, struct sk_offsets *out,
                            struct sk_error *err);

/*
 * What a sink does with one record inside the batch transaction. Returns 0,
 * or -1 with err: PERMANENT rejects this record only (what it wrote is rolled
 * back), any other class fails the whole batch.
 */
typedef int (*sk_state_record_fn)(void *ctx, const struct sk_record *r, struct sk_error *err);
/* Optional, last in the transaction before COMMIT (the owner's counters). */
typedef int (*sk_state_finish_fn)(void *ctx, struct sk_error *err);

/*
 * A sink's apply: one transaction of every record (each under a savepoint,
 * out[i] APPLIED or REJECTED), next_offset = highest offset + 1 of every
 * partition in recs (rejected records count: the driver dead-letters them
 * before it commits) when the store keeps offsets, then finish. On failure
 * everything is rolled back, every out[i] is RETRY and -1 returned with err.
 */
int sk_state_apply(struct sk_state *st, const char *incarnation, const struct sk_record *recs,
                   size_t n, struct sk_outcome *out, sk_state_record_fn fn,
                   sk_state_finish_fn finish, void *ctx, struct sk_error *err);

#endif
