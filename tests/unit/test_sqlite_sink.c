/*
 * test_sqlite_sink.c: the sqlite-sink connector applies records idempotently
 * (upsert with the meta.modified guard, tombstones delete), rejects what it
 * cannot apply without losing the rest, and keeps offsets in the same
 * transaction, per broker incarnation.
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
static const struct sk_sink_ops *ops;
static struct sk_sink sink;
static bool opened;
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
    ops = sk_registry_sink("sqlite-sink");
    cr_assert_not_null(ops, "sqlite-sink is not registered");
    entities[0] = sk_entity_by_collection("organisations");
    entities[1] = sk_entity_by_collection("persons");
    entities[2] = sk_entity_by_collection("studyPlans");
    memset(&sink, 0, sizeof(sink));
    opened = false;
}

static void clear_records(void)
{
    skt_recs_clear(&batch);
}

static void close_sink(void)
{
    if (opened)
        ops->close(&sink);
    opened = false;
    if (sink.conf) {
        sk_options_free(ops->options, sink.conf);
        free(sink.conf);
        sink.conf = NULL;
    }
}

static void teardown(void)
{
    close_sink();
    skt_recs_free(&batch);
    nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Configures from YAML the way the core does, then opens. Returns open's result. */
static int open_with(const char *yaml, const char *incarnation, struct sk_error *err)
{
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = sk_config_load_string(yaml, strlen(yaml), "test.yaml", &errs);
    cr_assert_not_null(root);
    sink.ops = ops;
    sink.name = "db";
    sink.conf = sk_calloc(1, ops->conf_size);
    int n_errs = sk_options_apply(ops->options, root, sink.conf, &errs);
    cr_assert_eq(n_errs, 0, "%s", errs.n ? errs.v[0].text : "");
    sk_config_errors_free(&errs);
    sk_cnode_free(root);
    sink.incarnation = incarnation;
    sink.entities = entities;
    sink.n_entities = 3;
    int rc = ops->open(&sink, err);
    opened = rc == 0;
    return rc;
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

static void add_tombstone(int n, int32_t partition, int64_t offset)
{
    add_raw("persons", uuid(n), NULL, 0, partition, offset);
}

static void apply_ok(void)
{
    struct sk_error err = {0};
    cr_assert_eq(skt_recs_apply(&sink, &batch, &err), 0, "%s", err.msg);
}

/* The first column of the first row of sql, from a separate connection (caller frees). */
static char *query(const char *sql)
{
    sqlite3 *db;
    cr_assert_eq(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    char *out = NULL;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        out = sk_strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
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
    cr_assert_eq(ops->stored_offsets(&sink, &offs, &err), 0, "%s", err.msg);
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
    close_sink();
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
    clear_records();
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

Test(sqlite_sink, an_older_meta_modified_never_overwrites_a_newer_one)
{
    open_sink("inc-a");
    add_person(1, "2024-06-20T16:40:03+02:00", "New", 0, 0);
    add_person(1, "2024-06-20T16:00:00+02:00", "Old", 0, 1); /* same batch, older */
    apply_ok();
    cr_assert_eq(batch.out[1].kind, SK_APPLIED, "a stale record is dealt with, not rejected");
    assert_given_name(1, "New");
    clear_records();
    add_person(1, "2024-01-01T00:00:00Z", "Older", 0, 2); /* a later batch */
    apply_ok();
    assert_given_name(1, "New");
    assert_query("SELECT modified FROM persons", "2024-06-20T16:40:03+02:00");
}

Test(sqlite_sink, meta_modified_compares_instants_not_text)
{
    open_sink("inc-a");
    /* 16:40:03+02:00 is 14:40:03Z. */
    add_person(1, "2024-06-20T16:40:03+02:00", "First", 0, 0);
    apply_ok();
    clear_records();
    /* 14:30Z is older, although "14:30:00Z" < "16:40:03+02:00" agrees; and 15:00Z is
     * newer, although its text sorts before "16:40". */
    add_person(1, "2024-06-20T14:30:00Z", "Older", 0, 1);
    apply_ok();
    assert_given_name(1, "First");
    clear_records();
    add_person(1, "2024-06-20T15:00:00Z", "Newer", 0, 2);
    apply_ok();
    assert_given_name(1, "Newer");
    clear_records();
    /* Now 15:00Z is stored; 16:30+02:00 (14:30Z) sorts after it as text but is older. */
    add_person(1, "2024-06-20T16:30:00+02:00", "Stale", 0, 3);
    apply_ok();
    assert_given_name(1, "Newer");
    assert_query("SELECT modified FROM persons", "2024-06-20T15:00:00Z");
}

Test(sqlite_sink, tombstones_delete_and_a_missing_row_is_no_error)
{
    open_sink("inc-a");
    add_person(1, "2024-06-20T16:40:03+02:00", "Anna", 0, 0);
    add_person(2, "2024-06-20T16:40:03+02:00", "Bo", 0, 1);
    apply_ok();
    clear_records();
    add_tombstone(1, 0, 2);
    add_tombstone(99, 0, 3); /* never existed */
    apply_ok();
    cr_assert_eq(batch.out[0].kind, SK_APPLIED);
    cr_assert_eq(batch.out[1].kind, SK_APPLIED);
    assert_query("SELECT group_concat(id) FROM persons", uuid(2));
    cr_assert_eq(stored_offset(0), 4);
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
    cr_assert_eq(skt_recs_apply(&sink, &batch, &err), -1);
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

Test(sqlite_sink, offsets_of_another_incarnation_are_not_returned)
{
    open_sink("inc-a");
    add_person(1, "2024-06-20T16:40:03+02:00", "Anna", 0, 41);
    apply_ok();
    cr_assert_eq(stored_offset(0), 42);
    close_sink();
    open_sink("inc-b"); /* the embedded broker restarted: its offsets mean nothing now */
    cr_assert_eq(stored_offset(0), -1);
    assert_query("SELECT count(*) FROM persons", "1");
    clear_records();
    add_person(2, "2024-06-20T16:40:03+02:00", "Bo", 0, 0);
    apply_ok();
    cr_assert_eq(stored_offset(0), 1);
    assert_query("SELECT incarnation FROM skolsync_offsets WHERE partition = 0", "inc-b");
}

Test(sqlite_sink, a_garbage_value_is_rejected_and_the_rest_applied)
{
    open_sink("inc-a");
    add_person(1, "2024-06-20T16:40:03+02:00", "Anna", 0, 0);
    uint8_t *garbage = sk_malloc(4);
    memcpy(garbage, "\xff\xff\xff\xff", 4);
    add_raw("persons", uuid(2), garbage, 4, 0, 1);
    add_person(3, "2024-06-20T16:40:03+02:00", "Cid", 0, 2);
    apply_ok();
    cr_assert_eq(batch.out[0].kind, SK_APPLIED);
    cr_assert_eq(batch.out[1].kind, SK_REJECTED);
    cr_assert_eq(batch.out[1].err.cls, SK_ERR_PERMANENT);
    cr_assert_str_neq(batch.out[1].err.msg, "");
    cr_assert_eq(batch.out[2].kind, SK_APPLIED);
    assert_query("SELECT count(*) FROM persons", "2");
    cr_assert_eq(stored_offset(0), 3, "a rejected record counts: it goes to the DLQ");
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
    cr_assert_eq(ops->mark_offsets(&sink, &offs, &err), 0, "%s", err.msg);
    sk_offsets_free(&offs);
    cr_assert_eq(stored_offset(2), 42);
    cr_assert_eq(stored_offset(0), 7);
    sk_offsets_add(&offs, TOPIC, 2, 50);
    cr_assert_eq(ops->mark_offsets(&sink, &offs, &err), 0, "%s", err.msg);
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
