/*
 * postgres_conn.c: the postgres-sink's connection: connecting (and again
 * after a loss), statements, and the class of each error (retriable when
 * the server or the connection is away, permanent when a record is bad).
 *
 * Must never: print the connection string (it may hold a password), or
 * leave a transaction open after an error.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "log.h"
#include "postgres_internal.h"
#include "util.h"

/* ---- libpq helpers --------------------------------------------------------- */

/* libpq prints NOTICEs on stderr by default; they belong in the debug log. */
static void on_notice(void *arg, const char *message)
{
    const struct pg_sink *s = arg;
    size_t len = strlen(message);
    while (len && message[len - 1] == '\n')
        len--;
    sk_debug(s->component, "server: %.*s", (int)len, message);
}

/* libpq's connection error on one line (it spans several), for logs and err->msg. */
static void pg_conn_message(PGconn *conn, char *out, size_t size)
{
    const char *m = conn ? PQerrorMessage(conn) : "out of memory";
    size_t k = 0;
    bool space = false;
    for (; *m && k + 1 < size; m++) {
        if (*m == '\n' || *m == '\t' || *m == ' ') {
            space = k > 0;
            continue;
        }
        if (space && k + 2 < size)
            out[k++] = ' ';
        space = false;
        out[k++] = *m;
    }
    out[k] = '\0';
}

void pg_disconnect(struct pg_sink *s)
{
    if (s->conn)
        PQfinish(s->conn);
    s->conn = NULL;
    s->n_prepared = 0; /* they were the connection's */
}

/*
 * Connects if not connected. Ours first, so the conninfo may override them;
 * client_encoding after it, because the docs we send are UTF-8 whatever the
 * conninfo says.
 */
int pg_ensure_connected(struct pg_sink *s, struct sk_error *err)
{
    if (s->conn && PQstatus(s->conn) == CONNECTION_OK)
        return 0;
    pg_disconnect(s);
    char timeout[32], app[64];
    snprintf(timeout, sizeof(timeout), "%" PRId64, (s->connect_timeout_ms + 999) / 1000);
    snprintf(app, sizeof(app), "skolsync/%s", s->component);
    const char *keys[] = {"connect_timeout", "application_name", "keepalives_idle",
                          "dbname",          "client_encoding",  NULL};
    const char *values[] = {timeout, app, "30", s->conninfo, "UTF8", NULL};
    s->conn = PQconnectdbParams(keys, values, 1);
    if (!s->conn || PQstatus(s->conn) != CONNECTION_OK) {
        char msg[400];
        pg_conn_message(s->conn, msg, sizeof(msg));
        pg_disconnect(s);
        return sk_error_set(err, SK_ERR_RETRIABLE, "connecting to %s: %s", s->target, msg);
    }
    PQsetNoticeProcessor(s->conn, on_notice, s);
    return 0;
}

/*
 * What a failed statement means. RETRIABLE: the connection, the server
 * going away, a serialization failure or deadlock, lack of resources: the
 * same batch may succeed later. PERMANENT (*record_level set): the data of
 * some record is unacceptable (class 22 data exception, 23 integrity
 * constraint, 54 program limit such as an index row too large): find the
 * record and reject it. FATAL: anything else (a missing table, no
 * privilege): this connector cannot go on.
 */
static enum sk_err_class pg_error_class(const struct pg_sink *s, const PGresult *res,
                                        bool *record_level)
{
    *record_level = false;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!s->conn || PQstatus(s->conn) != CONNECTION_OK || !state || strlen(state) != 5)
        return SK_ERR_RETRIABLE;
    static const char *const retriable[] = {"08", "40", "53", "57", "58", "55P03", "25006"};
    for (size_t i = 0; i < sizeof(retriable) / sizeof(retriable[0]); i++)
        if (strncmp(state, retriable[i], strlen(retriable[i])) == 0)
            return SK_ERR_RETRIABLE;
    if (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0 ||
        strncmp(state, "54", 2) == 0) {
        *record_level = true;
        return SK_ERR_PERMANENT;
    }
    return SK_ERR_FATAL;
}

/* "SQLSTATE: primary message" of a failed result (never DETAIL: it may quote data). */
static void pg_result_message(const struct pg_sink *s, const PGresult *res, char *out, size_t size)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (state && primary) {
        snprintf(out, size, "%s: %s", state, primary);
        return;
    }
    pg_conn_message(s->conn, out, size);
    if (!out[0])
        snprintf(out, size, "connection lost");
}

/*
 * The outcome of one statement: 0 on success; otherwise -1 with err filled
 * (what is prefixed to the server's message) and *record_level as in
 * error_class. A lost connection is dropped here, so the next call reconnects.
 */
static int pg_result(struct pg_sink *s, const char *what, PGresult *res, PGresult **rows,
                     bool *record_level, struct sk_error *err)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (rows)
            *rows = res;
        else
            PQclear(res);
        return 0;
    }
    char msg[400];
    pg_result_message(s, res, msg, sizeof(msg));
    sk_error_set(err, pg_error_class(s, res, record_level), "%s: %s", what, msg);
    PQclear(res);
    if (PQstatus(s->conn) != CONNECTION_OK)
        pg_disconnect(s);
    return -1;
}

int pg_exec_params(struct pg_sink *s, const char *what, const char *sql, int n_params,
                   const char *const *params, PGresult **rows, bool *record_level,
                   struct sk_error *err)
{
    *record_level = false;
    s->round_trips++;
    /* Without parameters the simple protocol, which also runs several statements. */
    PGresult *res = params ? PQexecParams(s->conn, sql, n_params, NULL, params, NULL, NULL, 0)
                           : PQexec(s->conn, sql);
    return pg_result(s, what, res, rows, record_level, err);
}

/*
 * As pg_exec_params, for a statement run once per batch: parsed and planned
 * once per connection (PQprepare, named "sk<i>"), then only executed. sql
 * must live as long as the sink: it is known by its address.
 */
int pg_exec_prepared(struct pg_sink *s, const char *what, const char *sql, int n_params,
                     const char *const *params, PGresult **rows, bool *record_level,
                     struct sk_error *err)
{
    size_t i = 0;
    while (i < s->n_prepared && s->prepared[i] != sql)
        i++;
    if (i == PG_MAX_PREPARED || s->no_prepare)
        return pg_exec_params(s, what, sql, n_params, params, rows, record_level, err);
    char name[24];
    snprintf(name, sizeof(name), "sk%zu", i);
    *record_level = false;
    if (i == s->n_prepared) {
        s->round_trips++;
        PGresult *res = PQprepare(s->conn, name, sql, n_params, NULL);
        if (pg_result(s, what, res, NULL, record_level, err) < 0)
            return -1;
        s->prepared[s->n_prepared++] = sql;
    }
    s->round_trips++;
    PGresult *res = PQexecPrepared(s->conn, name, n_params, params, NULL, NULL, 0);
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state && strcmp(state, "26000") == 0) {
        /* The statement is gone although the connection is not: a pooler
         * (PgBouncer in transaction mode) gave us another server session.
         * From now on unnamed statements; the batch is tried again. */
        PQclear(res);
        s->no_prepare = true;
        s->n_prepared = 0;
        return sk_error_set(err, SK_ERR_RETRIABLE,
                            "%s: prepared statement lost (a connection pooler?): "
                            "no longer preparing statements",
                            what);
    }
    return pg_result(s, what, res, rows, record_level, err);
}

int pg_exec0(struct pg_sink *s, const char *what, const char *sql, struct sk_error *err)
{
    bool record_level;
    int rc = pg_exec_params(s, what, sql, 0, NULL, NULL, &record_level, err);
    if (rc < 0 && err->cls == SK_ERR_PERMANENT)
        err->cls = SK_ERR_FATAL; /* no record to blame outside a record's statement */
    return rc;
}

/* Leaves no transaction open (after an error); a dead connection is dropped. */
void pg_abandon(struct pg_sink *s)
{
    if (!s->conn)
        return;
    if (PQtransactionStatus(s->conn) != PQTRANS_IDLE) {
        s->round_trips++;
        PQclear(PQexec(s->conn, "ROLLBACK"));
    }
    if (PQstatus(s->conn) != CONNECTION_OK)
        pg_disconnect(s);
}
