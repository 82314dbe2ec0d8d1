/*
 * test_sqlite_sink.c: what is particular to the sqlite-sink (what every sink
 * promises is in test_sink_contract.c): its schema and columns, meta.modified
 * compared as instants, a replay that rewrites nothing, a busy database, a
 * constraint failure that rejects one record, offsets per partition.
 */
#include <criterion/criterion.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "connector.h"
#include "model.h"
#include "sk_test.h"
#include "util.h"

#define TOPIC "skolsync.persons"

static char dir[64];
static char db_path[96];
static struct sk_sink *sink;
static const struct sk_entity *entities[3];
static struct skt_recs batch;

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/sk-sqlite-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(db_path, sizeof(db_path), "%s/state.db", dir);
    entities[0] = sk_entity_by_collection("organisations");
    entities[1] = sk_entity_by_collection("persons");
    entities[2] = sk_entity_by_collection("studyPlans");
}

static void teardown(void)
{
    skt_sink_drop(&sink);
    skt_recs_free(&batch);
    nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static int open_with(const char *yaml, const char *incarnation, struct sk_error *err)
{
    return skt_sink_try_open("sqlite-sink", "db", yaml, entities, 3, incarnation, &sink, err);
}

static void open_sink(const char *incarnation)
{
    char *yaml = sk_asprintf("path: %s\nsynchronous: normal\nbusy_timeout: 200ms\n", db_path);
    struct sk_error err = {0};
    cr_assert_eq(open_with(yaml, incarnation, &err), 0, "%s", err.msg);
    free(yaml);
}

static const char *uuid(int n)
{
    static char buf[4][37];
    static int slot;
    char *u = buf[slot++ % 4];
    snprintf(u, 37, "00000000-0000-4000-8000-%012d", n);
    return u;
}

/* A record as the driver hands it over (a raw value that does not decode stays as it is). */
static struct sk_record *add_raw(const char *collection, const char *key, uint8_t *value,
                                 size_t len, int32_t partition, int64_t offset)
{
    struct sk_record *r = skt_recs_add_raw(&batch, collection, key, value, len);
    skt_record_decode(r, NULL);
    r->topic = TOPIC;
    r->partition = partition;
    r->offset = offset;
    return r;
}

/* A person record with meta.modified and givenName, encoded as the source would. */
static void add_person(int n, const char *modified, const char *given, int32_t partition,
                       int64_t offset)
{
    char *json = sk_asprintf("{\"id\":\"%s\",\"meta\":{\"created\":\"2024-01-01T00:00:00Z\","
                             "\"modified\":\"%s\"},\"givenName\":\"%s\",\"familyName\":\"F\"}",
                             uuid(n), modified, given);
    struct sk_record *r = skt_recs_add(&batch, "persons", NULL, json, NULL);
    r->topic = TOPIC;
    r->partition = partition;
    r->offset = offset;
    free(json);
}

static void apply_ok(void)
{
    struct sk_error err = {0};
    cr_assert_eq(skt_recs_apply(sink, &batch, &err), 0, "%s", err.msg);
}

/* The first column of the first row of sql, from a separate connection (caller frees). */
static char *query(const char *sql)
{
    return skt_sqlite_value(db_path, sql, NULL);
}

static void assert_query(const char *sql, const char *expected)
{
    char *got = query(sql);
    if (!expected)
        cr_assert_null(got, "%s: got %s, expected no value", sql, got);
    else
        cr_assert(got && strcmp(got, expected) == 0, "%s: got %s, expected %s", sql,
                  got ? got : "NULL", expected);
    free(got);
}

static char *given_name(int n)
{
    char *sql = sk_asprintf("SELECT json_extract(doc, '$.givenName') FROM persons WHERE id = '%s'",
                            uuid(n));
    char *out = query(sql);
    free(sql);
    return out;
}

static void assert_given_name(int n, const char *expected)
{
    char *got = given_name(n);
    cr_assert(got && strcmp(got, expected) == 0, "person %d: givenName %s, expected %s", n,
              got ? got : "NULL", expected);
    free(got);
}

static int64_t stored_offset(int32_t partition)
{
    struct sk_offsets offs = {0};
    struct sk_error err = {0};
    cr_assert_eq(sink->ops->stored_offsets(sink, &offs, &err), 0, "%s", err.msg);
    int64_t next = -1;
    for (size_t i = 0; i < offs.n; i++)
        if (strcmp(offs.v[i].topic, TOPIC) == 0 && offs.v[i].partition == partition)
            next = offs.v[i].next_offset;
    sk_offsets_free(&offs);
    return next;
}

TestSuite(sqlite_sink, .init = setup, .fini = teardown);

Test(sqlite_sink, open_creates_the_schema_in_wal_mode)
{
    open_sink("inc-a");
    assert_query("PRAGMA journal_mode", "wal");
    assert_query("SELECT group_concat(version) FROM skolsync_schema", "1");
    assert_query("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                 "('organisations', 'persons', 'studyPlans', 'skolsync_offsets')",
                 "4");
    /* Opening again keeps one version row. */
    skt_sink_drop(&sink);
    open_sink("inc-a");
    assert_query("SELECT count(*) FROM skolsync_schema", "1");
}

Test(sqlite_sink, open_fails_when_the_directory_is_missing)
{
    char *yaml = sk_asprintf("path: %s/no/such/dir/state.db\n", dir);
    struct sk_error err = {0};
    cr_assert_eq(open_with(yaml, "inc-a", &err), -1);
    cr_assert_eq(err.cls, SK_ERR_FATAL);
    cr_assert(strstr(err.msg, "does not exist"), "%s", err.msg);
    free(yaml);
}

Test(sqlite_sink, upsert_inserts_then_updates)
{
    open_sink("inc-a");
    add_person(1, "2024-06-20T16:40:03+02:00", "Anna", 0, 0);
    apply_ok();
    cr_assert_eq(batch.out[0].kind, SK_APPLIED);
    assert_given_name(1, "Anna");
    assert_query("SELECT modified FROM persons", "2024-06-20T16:40:03+02:00");
    assert_query("SELECT modified_us FROM persons", "1718894403000000");
    skt_recs_clear(&batch);
    add_person(1, "2024-06-21T08:00:00+02:00", "Anne", 0, 1);
    apply_ok();
    assert_given_name(1, "Anne");
    assert_query("SELECT modified FROM persons", "2024-06-21T08:00:00+02:00");
    assert_query("SELECT count(*) FROM persons", "1");
}

Test(sqlite_sink, replaying_the_same_records_changes_nothing)
{
    open_sink("inc-a");
    add_person(1, "2024-06-20T16:40:03+02:00", "Anna", 0, 0);
    add_person(2, "2024-06-20T16:40:03+02:00", "Bo", 0, 1);
    apply_ok();
    const char *snapshot_sql = "SELECT group_concat(id || doc || modified || modified_us || "
                               "updated_at, '|') FROM (SELECT * FROM persons ORDER BY id)";
    char *before = query(snapshot_sql);
    sk_sleep_ms(5); /* a rewrite would show in updated_at */
    apply_ok();
    char *after = query(snapshot_sql);
    cr_assert_str_eq(after, before);
    cr_assert_eq(batch.out[0].kind, SK_APPLIED);
    free(before);
    free(after);
}

/* The stale guard itself is the contract suite's (test_sink_contract.c); here only
 * how this sink keeps the instant it compares. */
Test(sqlite_sink, modified_is_kept_as_the_instant_in_utc)
{
    open_sink("inc-a");
    add_person(1, "2024-06-20T16:40:03+02:00", "First", 0, 0);
    apply_ok();
    /* modified: the source's text; modified_us: the instant the guard compares */
    assert_query("SELECT modified || ' ' || modified_us FROM persons",
                 "2024-06-20T16:40:03+02:00 1718894403000000");
}

Test(sqlite_sink, offsets_are_stored_with_the_rows_per_partition)
{
    open_sink("inc-a");
    cr_assert_eq(stored_offset(0), -1, "nothing stored yet");
    add_person(1, "2024-06-20T16:40:03+02:00", "Anna", 0, 5);
    add_person(2, "2024-06-20T16:40:03+02:00", "Bo", 1, 3);
    add_person(3, "2024-06-20T16:40:03+02:00", "Cid", 0, 7);
    add_person(4, "2024-06-20T16:40:03+02:00", "Di", 0, 6);
    apply_ok();
    cr_assert_eq(stored_offset(0), 8, "max offset + 1");
    cr_assert_eq(stored_offset(1), 4);
    assert_query("SELECT incarnation FROM skolsync_offsets WHERE partition = 0", "inc-a");
    assert_query("SELECT count(*) FROM persons", "4");
}

Test(sqlite_sink, a_busy_database_fails_the_whole_batch_and_stores_nothing)
{
    open_sink("inc-a");
    sqlite3 *other;
    cr_assert_eq(sqlite3_open(db_path, &other), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    add_person(1, "2024-06-20T16:40:03+02:00", "Anna", 0, 0);
    add_person(2, "2024-06-20T16:40:03+02:00", "Bo", 0, 1);
    struct sk_error err = {0};
    cr_assert_eq(skt_recs_apply(sink, &batch, &err), -1);
    cr_assert_eq(err.cls, SK_ERR_RETRIABLE, "%s", err.msg);
    cr_assert_eq(batch.out[0].kind, SK_RETRY);
    sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(other);
    assert_query("SELECT count(*) FROM persons", "0");
    cr_assert_eq(stored_offset(0), -1);
    apply_ok(); /* the retry goes through */
    assert_query("SELECT count(*) FROM persons", "2");
    cr_assert_eq(stored_offset(0), 2);
}

Test(sqlite_sink, a_constraint_failure_rejects_only_that_record)
{
    open_sink("inc-a");
    sqlite3 *other;
    cr_assert_eq(sqlite3_open(db_path, &other), SQLITE_OK);
    char *trigger = sk_asprintf("CREATE TRIGGER no_bo BEFORE INSERT ON persons WHEN NEW.id = '%s' "
                                "BEGIN SELECT RAISE(ABORT, 'no Bo here'); END",
                                uuid(2));
    cr_assert_eq(sqlite3_exec(other, trigger, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    free(trigger);
    add_person(1, "2024-06-20T16:40:03+02:00", "Anna", 0, 0);
    add_person(2, "2024-06-20T16:40:03+02:00", "Bo", 0, 1);
    add_person(3, "2024-06-20T16:40:03+02:00", "Cid", 0, 2);
    apply_ok();
    cr_assert_eq(batch.out[0].kind, SK_APPLIED);
    cr_assert_eq(batch.out[1].kind, SK_REJECTED);
    cr_assert(strstr(batch.out[1].err.msg, "no Bo here"), "%s", batch.out[1].err.msg);
    cr_assert_eq(batch.out[2].kind, SK_APPLIED);
    assert_query("SELECT count(*) FROM persons", "2");
    cr_assert_eq(stored_offset(0), 3);
}

Test(sqlite_sink, mark_offsets_stores_offsets_without_records)
{
    open_sink("inc-a");
    struct sk_offsets offs = {0};
    sk_offsets_add(&offs, TOPIC, 2, 42);
    sk_offsets_add(&offs, TOPIC, 0, 7);
    struct sk_error err = {0};
    cr_assert_eq(sink->ops->mark_offsets(sink, &offs, &err), 0, "%s", err.msg);
    sk_offsets_free(&offs);
    cr_assert_eq(stored_offset(2), 42);
    cr_assert_eq(stored_offset(0), 7);
    sk_offsets_add(&offs, TOPIC, 2, 50);
    cr_assert_eq(sink->ops->mark_offsets(sink, &offs, &err), 0, "%s", err.msg);
    sk_offsets_free(&offs);
    cr_assert_eq(stored_offset(2), 50);
}

Test(sqlite_sink, tables_are_quoted_collection_names)
{
    open_sink("inc-a");
    const char *json = "{\"id\":\"00000000-0000-4000-8000-0000000000cc\",\"meta\":{\"modified\":"
                       "\"2024-06-20T16:40:03+02:00\"},\"startDate\":\"2024-08-01\"}";
    uint8_t *value;
    size_t len;
    char id[37];
    int64_t modified_us;
    struct sk_error err = {0};
    cr_assert_eq(sk_codec_encode(sk_entity_by_collection("studyPlans"), json, strlen(json), &value,
                                 &len, id, &modified_us, &err),
                 0, "%s", err.msg);
    add_raw("studyPlans", id, value, len, 0, 0)->topic = "skolsync.studyPlans";
    apply_ok();
    assert_query("SELECT id FROM \"studyPlans\"", "00000000-0000-4000-8000-0000000000cc");
}

/* A sink that caught up gives its page cache back (sink op trim) and applies
 * the next batch as before. */
Test(sqlite_sink, trim_gives_the_page_cache_back_and_the_sink_goes_on)
{
    open_sink("inc-a");
    cr_assert_not_null(sink->ops->trim);
    char given[600];
    memset(given, 'x', sizeof(given) - 1);
    given[sizeof(given) - 1] = '\0';
    for (int i = 0; i < 3000; i++)
        add_person(i + 1, "2024-06-20T16:40:03+02:00", given, 0, i);
    apply_ok();
    sqlite3_int64 before = sqlite3_memory_used();
    sink->ops->trim(sink);
    sqlite3_int64 after = sqlite3_memory_used();
    cr_assert_gt(before - after, 512 * 1024, "SQLite heap %lld -> %lld bytes", (long long)before,
                 (long long)after);
    skt_recs_clear(&batch);
    add_person(1, "2024-06-21T08:00:00+02:00", "Anne", 0, 3000);
    apply_ok();
    assert_given_name(1, "Anne");
}
