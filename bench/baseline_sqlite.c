/*
 * baseline_sqlite.c: the ceiling for the sqlite-sink (bench scenario 2).
 *
 *   baseline_sqlite SRC_DB DST_DB
 *
 * Reads every entity table the sqlite-sink wrote into SRC_DB (untimed: its
 * CREATE statements from sqlite_master and all rows, into memory), then --
 * timed -- creates the same tables in a fresh DST_DB with the sink's pragmas
 * (journal_mode=WAL, synchronous=NORMAL) and inserts the same rows with one
 * prepared INSERT per table, all in one transaction: a bare bulk insert.
 * Prints: rows seconds
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

struct table {
    char *create, *insert;
    int ncols;
    size_t nrows, cap;
    sqlite3_value **vals; /* nrows * ncols, copies */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void ck(sqlite3 *db, int rc, const char *what)
{
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
        fprintf(stderr, "baseline_sqlite: %s: %s\n", what, sqlite3_errmsg(db));
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s SRC_DB DST_DB\n", argv[0]);
        return 64;
    }
    sqlite3 *src, *dst;
    ck(NULL, sqlite3_open_v2(argv[1], &src, SQLITE_OPEN_READONLY, NULL), "open src");
    sqlite3_stmt *st;
    ck(src,
       sqlite3_prepare_v2(src,
                          "SELECT name, sql FROM sqlite_master WHERE type='table' AND name NOT "
                          "LIKE 'skolsync\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
                          -1, &st, NULL),
       "list tables");
    struct table t[64];
    int nt = 0;
    size_t rows = 0;
    while (sqlite3_step(st) == SQLITE_ROW && nt < 64) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        struct table *x = &t[nt++];
        memset(x, 0, sizeof(*x));
        x->create = strdup((const char *)sqlite3_column_text(st, 1));
        char *sel = sqlite3_mprintf("SELECT * FROM \"%w\"", name);
        sqlite3_stmt *s2;
        ck(src, sqlite3_prepare_v2(src, sel, -1, &s2, NULL), sel);
        x->ncols = sqlite3_column_count(s2);
        char *ins = sqlite3_mprintf("INSERT INTO \"%w\" VALUES (?", name);
        for (int c = 1; c < x->ncols; c++) {
            char *n2 = sqlite3_mprintf("%s,?", ins);
            sqlite3_free(ins);
            ins = n2;
        }
        x->insert = sqlite3_mprintf("%s)", ins);
        sqlite3_free(ins);
        while (sqlite3_step(s2) == SQLITE_ROW) {
            if (x->nrows == x->cap) {
                x->cap = x->cap ? 2 * x->cap : 1024;
                x->vals = realloc(x->vals, x->cap * x->ncols * sizeof(*x->vals));
            }
            for (int c = 0; c < x->ncols; c++)
                x->vals[x->nrows * x->ncols + c] = sqlite3_value_dup(sqlite3_column_value(s2, c));
            x->nrows++;
        }
        rows += x->nrows;
        sqlite3_finalize(s2);
        sqlite3_free(sel);
    }
    sqlite3_finalize(st);
    sqlite3_close(src);
    remove(argv[2]);

    double t0 = now_s();
    ck(NULL, sqlite3_open(argv[2], &dst), "open dst");
    ck(dst, sqlite3_exec(dst, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL", 0, 0, 0),
       "pragmas");
    ck(dst, sqlite3_exec(dst, "BEGIN", 0, 0, 0), "begin");
    for (int i = 0; i < nt; i++) {
        ck(dst, sqlite3_exec(dst, t[i].create, 0, 0, 0), t[i].create);
        sqlite3_stmt *ins;
        ck(dst, sqlite3_prepare_v2(dst, t[i].insert, -1, &ins, NULL), t[i].insert);
        for (size_t r = 0; r < t[i].nrows; r++) {
            for (int c = 0; c < t[i].ncols; c++)
                sqlite3_bind_value(ins, c + 1, t[i].vals[r * t[i].ncols + c]);
            ck(dst, sqlite3_step(ins), "insert");
            sqlite3_reset(ins);
        }
        sqlite3_finalize(ins);
    }
    ck(dst, sqlite3_exec(dst, "COMMIT", 0, 0, 0), "commit");
    ck(dst, sqlite3_close(dst), "close");
    printf("%zu %.3f\n", rows, now_s() - t0);
    return 0;
}
