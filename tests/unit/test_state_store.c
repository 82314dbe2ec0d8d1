/*
 * test_state_store.c: the shared SQLite state store of the sinks
 * (connectors/common/state_store.h): the stale guard and what an upsert
 * reports, and the migration of a layout written before the store was shared
 * (tables and offsets without updated_at), which keeps rows and offsets. The
 * scim-sink's own older layout is test_scim_state.c's.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connector.h"
#include "sk_test.h"
#include "state_store.h"
#include "util.h"

#define ID "00000000-0000-4000-8000-000000000001"

static const char *const persons[] = {"persons"};
static char *dir, *path; /* a fresh directory per test, and state.db in it */

static void setup(void)
{
    dir = skt_tmpdir("state");
    path = skt_fmt("%s/state.db", dir);
}

static void teardown(void) {}

static struct sk_state *open_store(const char *file, bool offsets)
{
    struct sk_state_opts o = {.path = file,
                              .busy_timeout_ms = 1000,
                              .offsets = offsets,
                              .collections = persons,
                              .n_collections = 1};
    struct sk_error err = {0};
    struct sk_state *st = sk_state_open(&o, &err);
    cr_assert_not_null(st, "%s", err.msg);
    return st;
}

static enum sk_state_put put(struct sk_state *st, const char *doc, int64_t modified_us)
{
    struct sk_error err = {0};
    enum sk_state_put p;
    cr_assert_eq(sk_state_begin(st, &err), 0, "%s", err.msg);
    cr_assert_eq(sk_state_upsert(st, "persons", ID, doc, strlen(doc), modified_us, &p, &err), 0,
                 "%s", err.msg);
    cr_assert_eq(sk_state_commit(st, &err), 0, "%s", err.msg);
    return p;
}

static void assert_stored(struct sk_state *st, const char *want)
{
    char *doc = NULL;
    struct sk_error err = {0};
    cr_assert_eq(sk_state_get(st, "persons", ID, &doc, NULL, &err), 1, "%s", err.msg);
    cr_assert_str_eq(doc, want);
    free(doc);
}

Test(state_store, upsert_reports_written_same_and_stale, .init = setup, .fini = teardown)
{
    struct sk_state *st = open_store(path, false);
    cr_assert_eq(put(st, "{\"v\":2}", 2000), SK_STATE_WRITTEN);
    cr_assert_eq(put(st, "{\"v\":2}", 2000), SK_STATE_SAME);
    cr_assert_eq(put(st, "{\"v\":1}", 1000), SK_STATE_STALE);
    cr_assert_eq(put(st, "{\"v\":3}", INT64_MIN), SK_STATE_WRITTEN, "no meta.modified: it wins");
    assert_stored(st, "{\"v\":3}");
    sk_state_close(st);
}

/* The oneroster-csv-sink's layout before the shared store. */
Test(state_store, an_older_layout_gets_its_columns_and_keeps_rows_and_offsets, .init = setup,
     .fini = teardown)
{
    skt_sqlite_exec(
        path, "CREATE TABLE skolsync_offsets(topic TEXT, partition INTEGER, next_offset INTEGER "
              "NOT NULL, incarnation TEXT NOT NULL, PRIMARY KEY(topic, partition));"
              "INSERT INTO skolsync_offsets VALUES('t.persons', 0, 42, 'inc-1');"
              "CREATE TABLE persons(id TEXT PRIMARY KEY, doc TEXT NOT NULL, modified_us INTEGER);"
              "INSERT INTO persons VALUES('" ID "', '{\"v\":5}', 5000);");
    struct sk_state *st = open_store(path, true);
    struct sk_offsets offs = {0};
    struct sk_error err = {0};
    cr_assert_eq(sk_state_stored_offsets(st, "inc-1", &offs, &err), 0, "%s", err.msg);
    cr_assert_eq(offs.n, 1);
    cr_assert_eq(offs.v[0].next_offset, 42);
    sk_offsets_free(&offs);
    cr_assert_eq(put(st, "{\"v\":4}", 4000), SK_STATE_STALE, "the migrated row's guard holds");
    cr_assert_eq(put(st, "{\"v\":6}", 6000), SK_STATE_WRITTEN);
    struct sk_offsets next = {0};
    sk_offsets_add(&next, "t.persons", 0, 43);
    cr_assert_eq(sk_state_mark_offsets(st, "inc-1", &next, &err), 0, "%s", err.msg);
    sk_offsets_free(&next);
    sk_state_close(st);
    st = open_store(path, true); /* a second open migrates nothing */
    cr_assert_eq(sk_state_stored_offsets(st, "inc-1", &offs, &err), 0, "%s", err.msg);
    cr_assert_eq(offs.v[0].next_offset, 43);
    sk_offsets_free(&offs);
    assert_stored(st, "{\"v\":6}");
    sk_state_close(st);
}

/* sk_state_trim: the connection's page cache goes, outside a transaction only. */
Test(state_store, trim_gives_the_page_cache_back, .init = setup, .fini = teardown)
{
    struct sk_state *st = open_store(path, false);
    struct sk_error err = {0};
    char doc[1200];
    memset(doc, ' ', sizeof(doc) - 1);
    memcpy(doc, "{\"v\":1}", 7);
    doc[sizeof(doc) - 1] = '\0';
    cr_assert_eq(sk_state_begin(st, &err), 0, "%s", err.msg);
    for (int i = 0; i < 2000; i++) {
        char id[37];
        enum sk_state_put p;
        snprintf(id, sizeof(id), "00000000-0000-4000-8000-%012d", i);
        cr_assert_eq(sk_state_upsert(st, "persons", id, doc, strlen(doc), 1000, &p, &err), 0, "%s",
                     err.msg);
    }
    int used, hi;
    sqlite3_db_status(sk_state_db(st), SQLITE_DBSTATUS_CACHE_USED, &used, &hi, 0);
    sk_state_trim(st); /* in the transaction: keeps its pages */
    int still;
    sqlite3_db_status(sk_state_db(st), SQLITE_DBSTATUS_CACHE_USED, &still, &hi, 0);
    cr_assert_eq(still, used);
    cr_assert_eq(sk_state_commit(st, &err), 0, "%s", err.msg);
    cr_assert_gt(used, 1024 * 1024, "the cache held %d bytes", used);
    sk_state_trim(st);
    int after;
    sqlite3_db_status(sk_state_db(st), SQLITE_DBSTATUS_CACHE_USED, &after, &hi, 0);
    cr_assert_lt(after, used / 4, "page cache %d -> %d bytes", used, after);
    assert_stored(st, doc); /* read back through the emptied cache */
    sk_state_close(st);
}
