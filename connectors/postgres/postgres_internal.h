/*
 * postgres_internal.h: what the parts of the postgres-sink share
 * (postgres_sink.c: options, open, apply, offsets; postgres_schema.c: the
 * tables as data and the migrations; postgres_conn.c: the connection and
 * its statements). Not for use outside connectors/postgres/.
 */
#ifndef SK_POSTGRES_INTERNAL_H
#define SK_POSTGRES_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "buf.h"
#include "connector.h"

/* The newest migration this build knows; a schema at a higher one is refused. */
#define MIGRATION_LATEST 4

/* The most typed columns of one table (postgres_schema.c, struct pg_table_spec). */
#define PG_MAX_COLUMNS 9

/* The most statements prepared on one connection: upsert and delete of
 * each collection's table, and the offsets. */
#define PG_MAX_PREPARED 48

/* The most connections one sink applies a batch over (option connections). */
#define PG_MAX_CONNECTIONS 16

/* The options (postgres_sink.c's table fills it). */
struct pg_conf {
    char *conninfo;
    char *schema;
    char *deleted_rows;
    int64_t connect_timeout_ms;
    int64_t connections;
};

/* One collection's table: its statements, and this batch's work for it. */
struct pg_table {
    const struct sk_entity *entity;
    char *upsert_sql;         /* $1 = jsonb [[id, doc, source, modified, sent...], ...] */
    char *delete_sql;         /* $1 = uuid[] text; DELETE or UPDATE ... deleted_at */
    char *purge_sql;          /* deleted_rows: keep: the DELETE of a withheld entity, else NULL */
    char *keys_sql;           /* every live row's id and doc (the snapshot sweep) */
    char *ids_sql;            /* every live row's id */
    const char *sent_keys[4]; /* doc fields parsed by the sink into instant columns */
    size_t n_sent;
    struct {
        const char *key; /* the doc field: a reference object's id, or a day */
        bool day;        /* a date column (else a uuid) */
    } typed[PG_MAX_COLUMNS]; /* the uuid and date columns the sink computes (migration 4) */
    size_t n_typed;
    bool sends_enrolment; /* persons: enrolment_school follows the typed columns */
    struct sk_buf upserts, deletes, purges;
    size_t n_upserts, n_deletes, n_purges;
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
    bool purged; /* a tombstone of the privacy policy cleared it: no row is kept */
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
    /* The statements prepared on conn (pg_exec_prepared), by address. */
    const char *prepared[PG_MAX_PREPARED];
    size_t n_prepared;
    bool no_prepare; /* a statement vanished (a pooler): unnamed statements only */
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
    long today;              /* the transaction's current_date, y * 10000 + m * 100 + d */
    /*
     * The other connections a large batch is split over (option
     * connections, minus this one; docs/postgres-sink.md, "Parallel
     * apply"). Each lane is a pg_sink of its own connection, statements,
     * today and tables (for their arrays), borrowing everything else from
     * the sink: strings, statements' SQL, plans. NULL with one connection.
     */
    struct pg_sink *lanes;
    size_t n_lanes;
    bool lanes_refused; /* a lane could not connect: said in the log once */
};

/* ---- postgres_sink.c ---------------------------------------------------------- */

/* "postgresql host:port/dbname schema X" (never the password). Caller frees. */
char *pg_describe_target(const char *conninfo, const char *schema);

/* ---- postgres_rows.c ---------------------------------------------------------- */

/* Appends record r as a row of t's upsert (today: for enrolment_school). */
void pg_row_json(struct sk_buf *b, const struct pg_table *t, const struct sk_record *r, long today);

/* ---- postgres_probe.c --------------------------------------------------------- */

/* skolsync check --connect: login, server version, rights on the schema. */
void pg_probe(const void *conf, struct sk_probe *p);

/* ---- postgres_schema.c -------------------------------------------------------- */

/* A quoted SQL identifier ("study_plans", "My""Schema"). Caller frees. */
char *pg_quote_ident(const char *name);
/* The table name of a collection: camelCase to snake_case. Caller frees. */
char *pg_table_name(const char *collection);
/* The upsert and delete statements of table t (qtable: its quoted name). */
void pg_build_table_sql(struct pg_sink *s, struct pg_table *t, const char *qtable);
/* Brings the schema to MIGRATION_LATEST (creating it if missing). 0 or -1 with err. */
int pg_migrate(struct pg_sink *s, struct sk_error *err);

/* ---- postgres_conn.c ---------------------------------------------------------- */

void pg_disconnect(struct pg_sink *s);
/* Connects if not connected. 0 or -1 with err (RETRIABLE: the server is away). */
int pg_ensure_connected(struct pg_sink *s, struct sk_error *err);
/*
 * One statement (what names it in messages): 0, with its rows in *rows when
 * rows is not NULL (caller clears), or -1 with err and *record_level (the
 * error is about the record's data, not the server). A lost connection is
 * dropped, so the next call reconnects.
 */
int pg_exec_params(struct pg_sink *s, const char *what, const char *sql, int n_params,
                   const char *const *params, PGresult **rows, bool *record_level,
                   struct sk_error *err);
/* As pg_exec_params, prepared once per connection; sql lives as long as the sink. */
int pg_exec_prepared(struct pg_sink *s, const char *what, const char *sql, int n_params,
                     const char *const *params, PGresult **rows, bool *record_level,
                     struct sk_error *err);
/* One statement without parameters or rows. 0 or -1 with err. */
int pg_exec0(struct pg_sink *s, const char *what, const char *sql, struct sk_error *err);
/* Rolls back whatever is open, or drops a connection in an unknown state. */
void pg_abandon(struct pg_sink *s);

#endif
