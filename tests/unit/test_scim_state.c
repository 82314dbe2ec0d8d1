/*
 * test_scim_state.c: the scim-sink's local state (connectors/scim/scim_state.c)
 * on the shared SQLite store: the layout it wrote before the store was shared
 * (one docs table for both kinds) moves into the collection tables, rows and
 * their meta.modified kept.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdint.h>

#include "scim/scim.h"
#include "sk_test.h"

#define ID "00000000-0000-4000-8000-000000000001"

static char *dir, *path; /* a fresh directory per test, and state.db in it */

static void setup(void)
{
    dir = skt_tmpdir("scim-state");
    path = skt_fmt("%s/state.db", dir);
}

static void teardown(void) {}

/* The scim-sink's layout before the shared store: one docs table for both kinds. */
Test(scim_state, the_docs_table_moves_into_collection_tables, .init = setup, .fini = teardown)
{
    skt_sqlite_exec(
        path, "CREATE TABLE docs(kind TEXT NOT NULL, uuid TEXT NOT NULL, doc TEXT NOT NULL, "
              "modified_us INTEGER, PRIMARY KEY(kind, uuid)) WITHOUT ROWID;"
              "INSERT INTO docs VALUES('Person', '" ID "', "
              "'{\"meta\":{\"modified\":\"2024-01-01T00:00:00Z\"},\"givenName\":\"Å\"}', 7000);"
              "INSERT INTO docs VALUES('Group', '" ID "', '{\"displayName\":\"G\"}', NULL);");
    struct sk_error err = {0};
    struct scim_state *s = scim_state_open(dir, "state", &err);
    cr_assert_not_null(s, "%s", err.msg);
    cJSON *doc = NULL;
    int64_t modified_us = 0;
    cr_assert_eq(scim_state_get_doc(s, "Person", ID, &doc, &modified_us), 1);
    cr_assert_str_eq(cJSON_GetObjectItem(doc, "givenName")->valuestring, "Å");
    cr_assert_eq(modified_us, 7000);
    cJSON_Delete(doc);
    cr_assert_eq(scim_state_get_doc(s, "Group", ID, NULL, &modified_us), 1);
    cr_assert_eq(modified_us, INT64_MIN);
    scim_state_close(s);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *q;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master WHERE name = 'docs'",
                                    -1, &q, NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(q, 0), 0, "docs is dropped after the move");
    sqlite3_finalize(q);
    sqlite3_close(db);
}
