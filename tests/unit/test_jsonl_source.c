/*
 * test_jsonl_source.c: the jsonl-source connector reads SS 12000 JSON Lines
 * files forward from its cursor: batch limits, resume without duplicates,
 * growing files, incomplete last lines, malformed lines, truncated and
 * replaced files, and polls that repeat exactly from an old cursor.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "connector.h"
#include "model.h"
#include "jsonl_cursor.pb-c.h"
#include "util.h"

static char dir[64];
static const struct sk_source_ops *ops;
static struct sk_source src;
static bool opened;
static struct sk_batch batch;
static struct sk_cursor cursor; /* the last cursor a poll returned (owned copy) */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/sk-jsonl-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    ops = sk_registry_source("jsonl-source");
    cr_assert_not_null(ops, "jsonl-source is not registered");
    memset(&src, 0, sizeof(src));
    memset(&batch, 0, sizeof(batch));
    memset(&cursor, 0, sizeof(cursor));
    opened = false;
}

static void teardown(void)
{
    if (opened)
        ops->close(&src);
    if (src.conf) {
        sk_options_free(ops->options, src.conf);
        free(src.conf);
    }
    sk_batch_free(&batch);
    free(cursor.data);
    nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Fills the conf from YAML the way the core does, then opens. Returns open's result. */
static int open_yaml(struct sk_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *yaml = NULL;
    cr_assert_geq(vasprintf(&yaml, fmt, ap), 0);
    va_end(ap);
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = sk_config_load_string(yaml, strlen(yaml), "test.yaml", &errs);
    cr_assert_not_null(root);
    src.ops = ops;
    src.name = "files";
    src.conf = sk_calloc(1, ops->conf_size);
    int n_errs = sk_options_apply(ops->options, root, src.conf, &errs);
    cr_assert_eq(n_errs, 0, "%s", errs.n ? errs.v[0].text : "");
    sk_config_errors_free(&errs);
    sk_cnode_free(root);
    free(yaml);
    int rc = ops->open(&src, err);
    opened = rc == 0;
    return rc;
}

static void open_dir(int batch_size)
{
    struct sk_error err = {0};
    cr_assert_eq(open_yaml(&err, "path: %s\nbatch_size: %d\n", dir, batch_size), 0, "%s", err.msg);
}

static char *file_path(const char *name)
{
    static char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return path;
}

static void write_file(const char *name, const char *mode, const char *text)
{
    FILE *f = fopen(file_path(name), mode);
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static const char *uuid(int n)
{
    static char buf[4][37];
    static int slot;
    char *u = buf[slot++ % 4];
    snprintf(u, 37, "00000000-0000-4000-8000-%012d", n);
    return u;
}

static char *person(int n)
{
    static char line[256];
    snprintf(line, sizeof(line),
             "{\"id\":\"%s\",\"meta\":{\"created\":\"2024-01-01T00:00:00Z\","
             "\"modified\":\"2024-06-20T16:40:03+02:00\"},\"givenName\":\"G%d\","
             "\"familyName\":\"F\"}\n",
             uuid(n), n);
    return line;
}

static void write_persons(const char *name, int from, int to)
{
    for (int n = from; n <= to; n++)
        write_file(name, "a", person(n));
}

/* Polls from the given cursor into the (reset) batch; keeps its cursor if it has one. */
static void poll_from(const struct sk_cursor *from)
{
    struct sk_error err = {0};
    sk_batch_reset(&batch);
    cr_assert_eq(ops->poll(&src, from, &batch, &err), 0, "%s", err.msg);
    if (batch.has_cursor) {
        free(cursor.data);
        cursor.len = batch.cursor.len;
        cursor.data = sk_malloc(cursor.len);
        memcpy(cursor.data, batch.cursor.data, cursor.len);
    }
}

static void poll_next(void)
{
    struct sk_cursor from = {.len = cursor.len};
    if (cursor.len) {
        from.data = sk_malloc(cursor.len);
        memcpy(from.data, cursor.data, cursor.len);
    }
    poll_from(&from);
    free(from.data);
}

static void assert_keys(int first, int count)
{
    cr_assert_eq(batch.n, (size_t)count, "got %zu records, expected %d", batch.n, count);
    for (int i = 0; i < count; i++)
        cr_assert_str_eq(batch.recs[i].key, uuid(first + i));
}

TestSuite(jsonl_source, .init = setup, .fini = teardown);

Test(jsonl_source, directory_reads_collections_in_dependency_order)
{
    write_persons("persons.jsonl", 1, 2);
    write_file("organisations.jsonl", "w",
               "{\"id\":\"00000000-0000-4000-8000-0000000000aa\",\"displayName\":\"Skolan\","
               "\"organisationType\":\"Skolenhet\"}\n");
    write_file("notes.jsonl", "w", "{}\n"); /* unknown collection: a warning, no records */
    open_dir(100);
    poll_next();
    cr_assert_eq(batch.n, 3);
    cr_assert_eq(batch.n_bad, 0);
    cr_assert_str_eq(batch.recs[0].entity->collection, "organisations");
    cr_assert_str_eq(batch.recs[0].key, "00000000-0000-4000-8000-0000000000aa");
    cr_assert_str_eq(batch.recs[1].entity->collection, "persons");
    cr_assert_str_eq(batch.recs[1].key, uuid(1));
    cr_assert_str_eq(batch.recs[2].key, uuid(2));
    cr_assert_not_null(batch.recs[1].value);
    cr_assert_gt(batch.recs[1].observed_us, 0);
    cr_assert_not(batch.more);
    cr_assert(batch.has_cursor);

    /* The cursor holds each file's end: byte offset, next line number, inode. */
    Skolsync__V1__JsonlCursor *c =
        skolsync__v1__jsonl_cursor__unpack(NULL, cursor.len, cursor.data);
    cr_assert_not_null(c);
    bool saw_persons = false;
    for (size_t i = 0; i < c->n_files; i++) {
        if (strcmp(c->files[i]->file, "persons.jsonl") != 0)
            continue;
        saw_persons = true;
        struct stat st;
        stat(file_path("persons.jsonl"), &st);
        cr_assert_eq(c->files[i]->offset, st.st_size);
        cr_assert_eq(c->files[i]->line, 3);
        cr_assert_str_neq(c->files[i]->inode, "");
    }
    cr_assert(saw_persons);
    skolsync__v1__jsonl_cursor__free_unpacked(c, NULL);

    /* Nothing new: no records, no new cursor, the cycle is complete. */
    poll_next();
    cr_assert_eq(batch.n, 0);
    cr_assert_not(batch.has_cursor);
    cr_assert_not(batch.more);
}

/* The types it will write (sk_source.writes): the driver readies those topics only. */
Test(jsonl_source, it_names_the_types_of_the_files_there_are)
{
    write_persons("persons.jsonl", 1, 2);
    write_file("organisations.jsonl", "w", "");
    open_dir(100);
    cr_assert_eq(src.writes, 1u << sk_entity_index(sk_entity_by_collection("persons")) |
                                 1u << sk_entity_index(sk_entity_by_collection("organisations")));
    ops->close(&src);
    opened = false;
    sk_options_free(ops->options, src.conf);
    free(src.conf);
    memset(&src, 0, sizeof(src));
    struct sk_error err = {0};
    cr_assert_eq(open_yaml(&err, "path: %s\n", file_path("persons.jsonl")), 0, "%s", err.msg);
    cr_assert_eq(src.writes, 1u << sk_entity_index(sk_entity_by_collection("persons")));
}

Test(jsonl_source, batch_size_limits_and_resume_gives_the_rest_without_duplicates)
{
    write_persons("persons.jsonl", 1, 5);
    write_file("persons.jsonl", "a", "\n   \n"); /* trailing blank lines are skipped */
    open_dir(2);
    poll_next();
    assert_keys(1, 2);
    cr_assert(batch.more);
    poll_next();
    assert_keys(3, 2);
    cr_assert(batch.more);
    poll_next();
    assert_keys(5, 1);
    cr_assert_not(batch.more);
    poll_next();
    cr_assert_eq(batch.n, 0);
    cr_assert_not(batch.more);
}

Test(jsonl_source, more_is_false_when_the_batch_ends_exactly_at_the_end)
{
    write_persons("persons.jsonl", 1, 2);
    open_dir(2);
    poll_next();
    assert_keys(1, 2);
    cr_assert_not(batch.more, "no complete line is left unread");
}

Test(jsonl_source, more_spans_files)
{
    write_persons("persons.jsonl", 1, 2);
    write_file("groups.jsonl", "w",
               "{\"id\":\"00000000-0000-4000-8000-0000000000bb\",\"displayName\":\"7A\"}\n");
    open_dir(2);
    poll_next();
    assert_keys(1, 2);
    cr_assert(batch.more, "groups.jsonl still has a line");
    poll_next();
    cr_assert_eq(batch.n, 1);
    cr_assert_str_eq(batch.recs[0].entity->collection, "groups");
    cr_assert_not(batch.more);
}

Test(jsonl_source, appended_lines_are_picked_up_on_the_next_poll)
{
    write_persons("persons.jsonl", 1, 2);
    open_dir(100);
    poll_next();
    assert_keys(1, 2);
    write_persons("persons.jsonl", 3, 4);
    poll_next();
    assert_keys(3, 2);
    cr_assert(batch.has_cursor);
}

Test(jsonl_source, incomplete_last_line_waits_until_it_is_complete)
{
    write_persons("persons.jsonl", 1, 1);
    char *line = person(2);
    size_t half = strlen(line) / 2;
    char first[256];
    snprintf(first, sizeof(first), "%.*s", (int)half, line);
    write_file("persons.jsonl", "a", first);
    open_dir(100);
    poll_next();
    assert_keys(1, 1);
    cr_assert_eq(batch.n_bad, 0, "the half line is not read as a malformed one");
    cr_assert_not(batch.more);
    poll_next();
    cr_assert_eq(batch.n, 0);
    cr_assert_eq(batch.n_bad, 0);
    write_file("persons.jsonl", "a", person(2) + half);
    poll_next();
    assert_keys(2, 1);
    cr_assert_eq(batch.n_bad, 0);
}

Test(jsonl_source, malformed_lines_become_bad_inputs_with_file_and_line)
{
    write_persons("persons.jsonl", 1, 1);                            /* line 1 */
    write_file("persons.jsonl", "a", "{\"id\": oops\n");             /* 2: bad JSON */
    write_file("persons.jsonl", "a", "\n");                          /* 3: blank */
    write_file("persons.jsonl", "a", "[1,2]\n");                     /* 4: not an object */
    write_persons("persons.jsonl", 5, 5);                            /* 5 */
    write_file("persons.jsonl", "a", "{\"id\":\"not-a-uuid\"}\r\n"); /* 6: bad id, CRLF */
    write_file("persons.jsonl", "a", "{\"givenName\":\"NoId\"}\n");  /* 7: no id */
    open_dir(100);
    poll_next();
    cr_assert_eq(batch.n, 2, "%zu records, %zu bad: %s", batch.n, batch.n_bad,
                 batch.n_bad ? batch.bad[0].err.msg : "");
    cr_assert_str_eq(batch.recs[0].key, uuid(1));
    cr_assert_str_eq(batch.recs[1].key, uuid(5));
    cr_assert_eq(batch.n_bad, 4);
    const char *where[] = {"persons.jsonl:2", "persons.jsonl:4", "persons.jsonl:6",
                           "persons.jsonl:7"};
    const char *raw[] = {"{\"id\": oops", "[1,2]", "{\"id\":\"not-a-uuid\"}",
                         "{\"givenName\":\"NoId\"}"};
    for (size_t i = 0; i < 4; i++) {
        cr_assert_str_eq(batch.bad[i].where, where[i]);
        cr_assert_eq(batch.bad[i].raw_len, strlen(raw[i]));
        cr_assert_eq(memcmp(batch.bad[i].raw, raw[i], strlen(raw[i])), 0);
        cr_assert_eq(batch.bad[i].err.cls, SK_ERR_PERMANENT);
        cr_assert_str_neq(batch.bad[i].err.msg, "");
    }
    cr_assert_not(batch.more);
    poll_next();
    cr_assert_eq(batch.n + batch.n_bad, 0, "bad lines are consumed too");
}

Test(jsonl_source, truncated_file_restarts_from_the_beginning)
{
    write_persons("persons.jsonl", 1, 3);
    open_dir(100);
    poll_next();
    assert_keys(1, 3);
    /* Rewritten in place (same inode), shorter than what was read. */
    write_file("persons.jsonl", "w", person(7));
    poll_next();
    assert_keys(7, 1);
    poll_next();
    cr_assert_eq(batch.n, 0);
}

Test(jsonl_source, replaced_file_restarts_from_the_beginning)
{
    write_persons("persons.jsonl", 1, 2);
    open_dir(100);
    poll_next();
    assert_keys(1, 2);
    /* A new file renamed over the old one (other inode), longer than what was read. */
    write_persons("persons.new", 11, 14);
    char to[128];
    snprintf(to, sizeof(to), "%s", file_path("persons.jsonl"));
    cr_assert_eq(rename(file_path("persons.new"), to), 0);
    poll_next();
    assert_keys(11, 4);
}

Test(jsonl_source, poll_from_an_old_cursor_repeats_exactly)
{
    write_persons("persons.jsonl", 1, 5);
    open_dir(2);
    poll_next();
    struct sk_cursor old = {.len = cursor.len, .data = sk_malloc(cursor.len)};
    memcpy(old.data, cursor.data, cursor.len);

    poll_from(&old);
    struct sk_cursor first_cursor = {.len = batch.cursor.len, .data = sk_malloc(batch.cursor.len)};
    memcpy(first_cursor.data, batch.cursor.data, batch.cursor.len);
    size_t n = batch.n;
    char keys[2][37];
    uint8_t *values[2];
    size_t lens[2];
    cr_assert_eq(n, 2);
    for (size_t i = 0; i < n; i++) {
        memcpy(keys[i], batch.recs[i].key, 37);
        lens[i] = batch.recs[i].value_len;
        values[i] = sk_malloc(lens[i]);
        memcpy(values[i], batch.recs[i].value, lens[i]);
    }

    /* The driver failed to store that batch: it polls again from the same cursor. */
    poll_from(&old);
    cr_assert_eq(batch.n, n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(batch.recs[i].key, keys[i]);
        cr_assert_eq(batch.recs[i].value_len, lens[i]);
        cr_assert_eq(memcmp(batch.recs[i].value, values[i], lens[i]), 0);
        free(values[i]);
    }
    cr_assert_eq(batch.cursor.len, first_cursor.len);
    cr_assert_eq(memcmp(batch.cursor.data, first_cursor.data, first_cursor.len), 0);
    assert_keys(3, 2);
    free(old.data);
    free(first_cursor.data);
}

Test(jsonl_source, single_file_entity_from_name_or_option)
{
    write_persons("people.txt", 1, 2);
    struct sk_error err = {0};
    cr_assert_eq(open_yaml(&err, "path: %s\nentity: Person\n", file_path("people.txt")), 0, "%s",
                 err.msg);
    poll_next();
    assert_keys(1, 2);
    cr_assert_str_eq(batch.recs[0].entity->name, "Person");
    cr_assert_not(batch.more);
}

Test(jsonl_source, single_file_entity_from_its_collection_name)
{
    write_file("studyPlans.jsonl", "w",
               "{\"id\":\"00000000-0000-4000-8000-0000000000cc\",\"startDate\":\"2024-08-01\"}\n");
    struct sk_error err = {0};
    cr_assert_eq(open_yaml(&err, "path: %s\n", file_path("studyPlans.jsonl")), 0, "%s", err.msg);
    poll_next();
    cr_assert_eq(batch.n, 1);
    cr_assert_str_eq(batch.recs[0].entity->collection, "studyPlans");
}

Test(jsonl_source, open_rejects_what_it_cannot_read)
{
    struct sk_error err = {0};
    write_persons("people.txt", 1, 1);
    cr_assert_eq(open_yaml(&err, "path: %s\n", file_path("people.txt")), -1);
    cr_assert_eq(err.cls, SK_ERR_FATAL);
    cr_assert(strstr(err.msg, "set entity"), "%s", err.msg);
}

Test(jsonl_source, open_rejects_entity_with_a_directory)
{
    struct sk_error err = {0};
    cr_assert_eq(open_yaml(&err, "path: %s\nentity: Person\n", dir), -1);
    cr_assert_eq(err.cls, SK_ERR_FATAL);
}

Test(jsonl_source, open_rejects_a_missing_path)
{
    struct sk_error err = {0};
    cr_assert_eq(open_yaml(&err, "path: %s\n", file_path("nope.jsonl")), -1);
    cr_assert_eq(err.cls, SK_ERR_FATAL);
}

Test(jsonl_source, a_cursor_that_does_not_unpack_is_fatal)
{
    open_dir(10);
    uint8_t junk[] = {0xff, 0xff, 0xff};
    struct sk_cursor bad = {.data = junk, .len = sizeof(junk)};
    struct sk_error err = {0};
    cr_assert_eq(ops->poll(&src, &bad, &batch, &err), -1);
    cr_assert_eq(err.cls, SK_ERR_FATAL);
}

Test(jsonl_source, a_file_that_appears_later_is_read)
{
    open_dir(10);
    poll_next();
    cr_assert_eq(batch.n, 0);
    write_persons("persons.jsonl", 1, 1);
    poll_next();
    assert_keys(1, 1);
}

/*
 * Regression (hostile input #3): copytruncate rotation. The file was
 * truncated and written again in place, longer than what had been read,
 * between two polls: the old source only compared sizes, skipped the first
 * bytes of the new content and dead-lettered a partial line. The
 * fingerprint of what was read notices it.
 */
Test(jsonl_source, truncated_and_rewritten_longer_in_place_restarts_from_the_beginning)
{
    write_persons("persons.jsonl", 1, 3);
    open_dir(100);
    poll_next();
    assert_keys(1, 3);
    ino_t before = 0;
    struct stat st;
    cr_assert_eq(stat(file_path("persons.jsonl"), &st), 0);
    before = st.st_ino;
    write_file("persons.jsonl", "w", ""); /* copytruncate: same inode, emptied */
    write_persons("persons.jsonl", 101, 110);
    cr_assert_eq(stat(file_path("persons.jsonl"), &st), 0);
    cr_assert_eq(st.st_ino, before, "the test must rewrite in place");
    poll_next();
    cr_assert_eq(batch.n_bad, 0, "no partial line may be read");
    assert_keys(101, 10);
    /* and appending after that goes on from there */
    write_persons("persons.jsonl", 111, 111);
    poll_next();
    assert_keys(111, 1);
}

/* A cursor of an older version (no fingerprint) still resumes where it was. */
Test(jsonl_source, a_cursor_without_fingerprint_resumes_at_its_offset)
{
    write_persons("persons.jsonl", 1, 3);
    open_dir(100);
    Skolsync__V1__JsonlCursor c = SKOLSYNC__V1__JSONL_CURSOR__INIT;
    Skolsync__V1__JsonlCursor__FilePos fp = SKOLSYNC__V1__JSONL_CURSOR__FILE_POS__INIT;
    Skolsync__V1__JsonlCursor__FilePos *fps[] = {&fp};
    fp.file = "persons.jsonl";
    fp.has_offset = fp.has_line = true;
    fp.offset = (int64_t)strlen(person(1));
    fp.line = 2;
    c.files = fps;
    c.n_files = 1;
    struct sk_cursor old = {.len = skolsync__v1__jsonl_cursor__get_packed_size(&c)};
    old.data = sk_malloc(old.len);
    skolsync__v1__jsonl_cursor__pack(&c, old.data);
    poll_from(&old);
    free(old.data);
    assert_keys(2, 2);
}

/* A poll that fails RETRIABLE with needle in its reason (what /ready shows). */
static void assert_poll_retrying(const char *needle)
{
    struct sk_error err = {0};
    sk_batch_reset(&batch);
    cr_assert_eq(ops->poll(&src, &cursor, &batch, &err), -1, "the poll passed (%s expected)",
                 needle);
    cr_assert_eq(err.cls, SK_ERR_RETRIABLE);
    cr_assert(strstr(err.msg, needle), "%s", err.msg);
    cr_assert_eq(batch.n + batch.n_bad, 0);
}

/* Regression (hostile input #10): a FIFO named like a collection hung the
 * source in open() with state running. Only regular files are read; one
 * that is not makes the source retrying with the reason (it was skipped
 * with a line in the log, and /ready said ready). */
Test(jsonl_source, a_fifo_is_not_read_and_does_not_block, .timeout = 10)
{
    cr_assert_eq(mkfifo(file_path("persons.jsonl"), 0600), 0);
    write_file("groups.jsonl", "w", "");
    open_dir(100);
    assert_poll_retrying("persons.jsonl: a FIFO, not a regular file; not read");
    /* the file it should be: read, the error gone */
    cr_assert_eq(unlink(file_path("persons.jsonl")), 0);
    write_persons("persons.jsonl", 1, 1);
    poll_next();
    assert_keys(1, 1);
}

/* A collection's name on a directory (an export job's mistake, `mkdir -p
 * persons.jsonl`): retrying with the reason, not a source that idles. */
Test(jsonl_source, a_directory_named_like_a_collection_makes_the_source_retrying)
{
    write_persons("organisations.jsonl", 1, 1);
    cr_assert_eq(mkdir(file_path("persons.jsonl"), 0700), 0);
    open_dir(100);
    assert_poll_retrying("persons.jsonl: a directory, not a regular file; not read");
    cr_assert_eq(rmdir(file_path("persons.jsonl")), 0);
    poll_next();
    cr_assert_eq(batch.n, 1, "the organisation after the directory was fixed");
}

static void make_person_file(const char *path, int from, int to)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    for (int n = from; n <= to; n++)
        fputs(person(n), f);
    fclose(f);
}

/* Regression (hostile input #15): rooms.jsonl -> /etc/shadow put that file's
 * lines into the dead-letter topic. A link is followed only inside the
 * directory, unless follow_symlinks says otherwise; one that leads out makes
 * the source retrying with the reason. */
Test(jsonl_source, links_out_of_the_directory_are_not_followed)
{
    char outside[96];
    snprintf(outside, sizeof(outside), "%s-outside.jsonl", dir);
    make_person_file(outside, 1, 2);
    cr_assert_eq(symlink(outside, file_path("duties.jsonl")), 0);
    cr_assert_eq(mkdir(file_path("data"), 0700), 0);
    make_person_file(file_path("data/p"), 5, 5);
    /* a link that stays inside the directory is fine */
    cr_assert_eq(symlink("data/p", file_path("persons.jsonl")), 0);
    open_dir(100);
    assert_poll_retrying("duties.jsonl: a link to a file outside the directory");
    cr_assert_eq(unlink(file_path("duties.jsonl")), 0);
    poll_next();
    cr_assert_eq(batch.n_bad, 0);
    assert_keys(5, 1); /* the outside file's two lines are not read */
    unlink(outside);
}

Test(jsonl_source, follow_symlinks_reads_links_anywhere)
{
    char outside[96];
    snprintf(outside, sizeof(outside), "%s-outside.jsonl", dir);
    make_person_file(outside, 1, 2);
    cr_assert_eq(symlink(outside, file_path("persons.jsonl")), 0);
    struct sk_error err = {0};
    cr_assert_eq(open_yaml(&err, "path: %s\nfollow_symlinks: true\n", dir), 0, "%s", err.msg);
    poll_next();
    unlink(outside);
    assert_keys(1, 2);
}

/* Regression (hostile input #13): invalid UTF-8 and NUL bytes in a line. */
Test(jsonl_source, lines_with_invalid_utf8_or_a_nul_are_dead_lettered_with_their_position)
{
    write_persons("persons.jsonl", 1, 1);
    FILE *f = fopen(file_path("persons.jsonl"), "a");
    fputs("{\"id\":\"00000000-0000-4000-8000-000000000002\",\"givenName\":\"\xff\"}\n", f);
    fwrite("{\"id\":\"00000000-0000-4000-8000-000000000003\",\"givenName\":\"a\0b\"}\n", 1, 64, f);
    fclose(f);
    write_persons("persons.jsonl", 4, 4);
    open_dir(100);
    poll_next();
    cr_assert_eq(batch.n, 2, "%zu records, %zu bad: %s", batch.n, batch.n_bad,
                 batch.n_bad ? batch.bad[0].err.msg : "");
    cr_assert_str_eq(batch.recs[0].key, uuid(1));
    cr_assert_str_eq(batch.recs[1].key, uuid(4));
    cr_assert_eq(batch.n_bad, 2);
    cr_assert_str_eq(batch.bad[0].where, "persons.jsonl:2");
    cr_assert_str_eq(batch.bad[0].err.msg, "Person: invalid UTF-8 at byte 58");
    cr_assert_str_eq(batch.bad[1].where, "persons.jsonl:3");
    cr_assert_str_eq(batch.bad[1].err.msg, "Person: a NUL byte at byte 59");
    cr_assert_eq(batch.bad[1].raw_len, 63, "the raw line is kept whole, NUL included");
}

/* Regression (hostile input #7): a 100 MB line was read whole into memory and
 * the buffer never shrank. A line over max_line_size is dead-lettered (its
 * start, with its position) without being held, and the lines after it go on. */
Test(jsonl_source, a_line_over_max_line_size_is_dead_lettered_without_being_held)
{
    write_persons("persons.jsonl", 1, 1);
    FILE *f = fopen(file_path("persons.jsonl"), "a");
    fputs("{\"id\":\"00000000-0000-4000-8000-000000000002\",\"givenName\":\"", f);
    for (int i = 0; i < 300000; i++)
        fputc('x', f);
    fputs("\"}\n", f);
    fclose(f);
    write_persons("persons.jsonl", 3, 3);
    struct sk_error err = {0};
    cr_assert_eq(open_yaml(&err, "path: %s\nmax_line_size: 64KiB\n", dir), 0, "%s", err.msg);
    poll_next();
    cr_assert_eq(batch.n, 2);
    cr_assert_str_eq(batch.recs[0].key, uuid(1));
    cr_assert_str_eq(batch.recs[1].key, uuid(3));
    cr_assert_eq(batch.n_bad, 1);
    cr_assert_str_eq(batch.bad[0].where, "persons.jsonl:2");
    cr_assert(strstr(batch.bad[0].err.msg, "line of 300060 bytes, longer than max_line_size"), "%s",
              batch.bad[0].err.msg);
    cr_assert_eq(batch.bad[0].raw_len, 65536);
    poll_next();
    cr_assert_eq(batch.n + batch.n_bad, 0, "the long line is consumed");
}

/* An over-long line that is not complete yet stays unread (its writer may go on). */
Test(jsonl_source, an_incomplete_over_long_line_waits)
{
    write_persons("persons.jsonl", 1, 1);
    FILE *f = fopen(file_path("persons.jsonl"), "a");
    for (int i = 0; i < 100000; i++)
        fputc('x', f);
    fclose(f);
    struct sk_error err = {0};
    cr_assert_eq(open_yaml(&err, "path: %s\nmax_line_size: 64KiB\n", dir), 0, "%s", err.msg);
    poll_next();
    assert_keys(1, 1);
    cr_assert_eq(batch.n_bad, 0);
    write_file("persons.jsonl", "a", "\n");
    write_persons("persons.jsonl", 2, 2);
    poll_next();
    cr_assert_eq(batch.n_bad, 1);
    assert_keys(2, 1);
}

/* validation (connector.h): the same required fields as the ss12000-source (proto/model.c). */
Test(jsonl_source, a_record_lacking_a_required_field_is_kept_lenient_and_dead_lettered_strict)
{
    write_persons("persons.jsonl", 1, 1);
    write_file("persons.jsonl", "a",
               "{\"id\":\"00000000-0000-4000-8000-000000000002\",\"givenName\":\"Utan\"}\n");
    struct sk_error err = {0};
    cr_assert_eq(open_yaml(&err, "path: %s\n", dir), 0, "%s", err.msg); /* default: lenient */
    poll_next();
    cr_assert_eq(batch.n, 2, "lenient: %zu records", batch.n);
    cr_assert_eq(batch.n_bad, 0);
    ops->close(&src);
    sk_options_free(ops->options, src.conf);
    free(src.conf);
    free(cursor.data);
    cursor.data = NULL;
    cursor.len = 0;
    cr_assert_eq(open_yaml(&err, "path: %s\nvalidation: strict\n", dir), 0, "%s", err.msg);
    poll_next();
    cr_assert_eq(batch.n, 1, "strict: %zu records", batch.n);
    cr_assert_eq(batch.n_bad, 1);
    cr_assert(strstr(batch.bad[0].err.msg, "required field familyName missing"), "%s",
              batch.bad[0].err.msg);
    cr_assert_str_eq(batch.bad[0].where, "persons.jsonl:2");
}

/*
 * mode: snapshot. What a poll does with a complete, settled file (read it,
 * then compare with the ids live in Kafka) needs the broker:
 * tests/integration/test_jsonl_snapshot.c. Here: what must not be taken.
 */
static void open_snapshot(void)
{
    struct sk_error err = {0};
    cr_assert_eq(open_yaml(&err, "path: %s\nmode: snapshot\n", dir), 0, "%s", err.msg);
}

Test(jsonl_source, snapshot_a_file_is_not_read_before_a_later_poll_sees_it_unchanged)
{
    write_persons("persons.jsonl", 1, 3);
    open_snapshot();
    poll_next();
    cr_assert_eq(batch.n, 0, "a file seen for the first time was read");
    cr_assert(batch.has_cursor, "the generation seen is not in the cursor");
    /* It grows (still being written): seen anew, not read. */
    write_persons("persons.jsonl", 4, 4);
    poll_next();
    cr_assert_eq(batch.n, 0, "a file that changed since the last poll was read");
    Skolsync__V1__JsonlCursor *c =
        skolsync__v1__jsonl_cursor__unpack(NULL, cursor.len, cursor.data);
    cr_assert_not_null(c);
    bool found = false;
    for (size_t i = 0; i < c->n_files; i++)
        if (strcmp(c->files[i]->file, "persons.jsonl") == 0) {
            found = true;
            cr_assert(c->files[i]->has_size && c->files[i]->size == 4 * (long)strlen(person(1)));
            cr_assert_eq(c->files[i]->snap_state, 0);
        }
    skolsync__v1__jsonl_cursor__free_unpacked(c, NULL);
    cr_assert(found);
}

Test(jsonl_source, snapshot_a_file_cut_off_inside_a_line_is_never_taken)
{
    write_persons("persons.jsonl", 1, 3);
    write_file("persons.jsonl", "a", "{\"id\":\"00000000-0000-4000-8000-0000000");
    open_snapshot();
    for (int i = 0; i < 3; i++) {
        poll_next();
        cr_assert_eq(batch.n, 0, "poll %d read a file that ends inside a line", i);
    }
}

Test(jsonl_source, snapshot_an_empty_file_is_never_taken)
{
    write_file("persons.jsonl", "w", "");
    open_snapshot();
    for (int i = 0; i < 3; i++) {
        poll_next();
        cr_assert_eq(batch.n, 0);
    }
}

Test(jsonl_source, mode_and_delete_guard_are_checked_at_open)
{
    struct sk_error err = {0};
    cr_assert_neq(
        open_yaml(&err, "path: %s\nmode: snapshot\ndelete_guard: {max_fraction: 150%%}\n", dir), 0);
    cr_assert(strstr(err.msg, "max_fraction"), "%s", err.msg);
}

/* The directory moved away while the source runs: an error (the driver
 * retries and says so), not a source that has nothing to read; back, it
 * goes on where it was. */
Test(jsonl_source, a_directory_gone_while_running_is_an_error_until_it_is_back)
{
    open_dir(10);
    write_persons("persons.jsonl", 1, 2);
    poll_next();
    assert_keys(1, 2);
    char *away = sk_asprintf("%s.away", dir);
    cr_assert_eq(rename(dir, away), 0);
    struct sk_error err = {0};
    sk_batch_reset(&batch);
    cr_assert_eq(ops->poll(&src, &cursor, &batch, &err), -1, "a poll of a directory gone passed");
    cr_assert_eq(err.cls, SK_ERR_RETRIABLE);
    cr_assert(strstr(err.msg, "No such file or directory"), "%s", err.msg);
    cr_assert_eq(rename(away, dir), 0);
    free(away);
    write_persons("persons.jsonl", 3, 3);
    poll_next();
    assert_keys(3, 1);
}

/* A directory path that is a link an export job swaps to each night's
 * directory (`current -> 2026-12-05`): followed. Measured against the
 * directory of the start, every file of the new one was a link out of it,
 * not read until a restart. */
Test(jsonl_source, a_directory_path_that_is_a_link_swapped_to_another_directory_is_followed)
{
    cr_assert_eq(mkdir(file_path("a"), 0700), 0);
    cr_assert_eq(mkdir(file_path("b"), 0700), 0);
    write_persons("a/persons.jsonl", 1, 2);
    write_persons("b/persons.jsonl", 3, 4);
    cr_assert_eq(symlink("a", file_path("current")), 0);
    char *link = sk_strdup(file_path("current"));
    struct sk_error err = {0};
    cr_assert_eq(open_yaml(&err, "path: %s\n", link), 0, "%s", err.msg);
    poll_next();
    assert_keys(1, 2);
    cr_assert_eq(symlink("b", file_path("current.new")), 0);
    cr_assert_eq(rename(file_path("current.new"), link), 0);
    free(link);
    poll_next();
    assert_keys(3, 2); /* another file (inode): read from its start */
}

/* mode: snapshot, batches of one line: a taken file is read but never finished
 * (its deletions need the broker), so what is taken shows as its first record. */
static void open_snapshot_by_line(void)
{
    struct sk_error err = {0};
    cr_assert_eq(open_yaml(&err, "path: %s\nmode: snapshot\nbatch_size: 1\n", dir), 0, "%s",
                 err.msg);
}

/* Sets the file's mtime seconds_ago back (and its ctime to now). */
static void set_mtime_back(const char *name, int seconds_ago)
{
    struct timespec t[2];
    clock_gettime(CLOCK_REALTIME, &t[0]);
    t[0].tv_sec -= seconds_ago;
    t[1] = t[0];
    cr_assert_eq(utimensat(AT_FDCWD, file_path(name), t, 0), 0);
}

/* Packs into `cursor` a snapshot-mode position: the file's generation as it
 * is now read to its end and done with, as a cursor of before ctime_ns. */
static void cursor_snapshot_done(const char *name, int lines)
{
    struct stat st;
    cr_assert_eq(stat(file_path(name), &st), 0);
    char inode[48];
    snprintf(inode, sizeof(inode), "%ju:%ju", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino);
    Skolsync__V1__JsonlCursor__FilePos fp = SKOLSYNC__V1__JSONL_CURSOR__FILE_POS__INIT;
    fp.file = (char *)name;
    fp.has_offset = fp.has_line = fp.has_size = fp.has_mtime_ns = fp.has_snap_state = true;
    fp.offset = fp.size = st.st_size;
    fp.line = lines + 1;
    fp.inode = inode;
    fp.mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    fp.snap_state = 2;
    Skolsync__V1__JsonlCursor__FilePos *fps[] = {&fp};
    Skolsync__V1__JsonlCursor c = SKOLSYNC__V1__JSONL_CURSOR__INIT;
    c.n_files = 1;
    c.files = fps;
    free(cursor.data);
    cursor.len = skolsync__v1__jsonl_cursor__get_packed_size(&c);
    cursor.data = sk_malloc(cursor.len);
    skolsync__v1__jsonl_cursor__pack(&c, cursor.data);
}

/* cp -p or rsync --inplace -t of a new export over the old one: the same
 * inode and, when one name changed for another as long, the same size, with
 * the mtime put back. Its ctime says it was written: a new generation (it
 * was taken as the one already done with, and the change never arrived). */
Test(jsonl_source, snapshot_a_rewrite_in_place_to_the_same_size_with_the_mtime_put_back_is_read)
{
    write_persons("persons.jsonl", 1, 3);
    set_mtime_back("persons.jsonl", 3600);
    struct stat before;
    cr_assert_eq(stat(file_path("persons.jsonl"), &before), 0);
    cursor_snapshot_done("persons.jsonl", 3);
    open_snapshot_by_line();
    poll_next();
    cr_assert_eq(batch.n, 0, "a generation done with was read again");
    usleep(10000);
    char *line = sk_strdup(person(1));
    strstr(line, "\"G1\"")[1] = 'H'; /* "H1": the same length */
    FILE *f = fopen(file_path("persons.jsonl"), "r+");
    cr_assert_not_null(f);
    fputs(line, f);
    fclose(f);
    free(line);
    struct timespec t[2] = {before.st_atim, before.st_mtim};
    cr_assert_eq(utimensat(AT_FDCWD, file_path("persons.jsonl"), t, 0), 0);
    poll_next();
    cr_assert_eq(batch.n, 0, "taken at the first sight");
    poll_next();
    cr_assert_eq(batch.n, 1, "the rewritten file was not taken");
    cr_assert_str_eq(batch.recs[0].key, uuid(1));
}

/* A writer that truncates and writes again in place, pausing between two
 * types of its export: the file ends in a newline and holds still for a
 * poll. Taken, it would have deleted every id still to come (below the
 * delete guard's limits: for real). It is taken once its mtime lies
 * settle_time (30 s) back. */
Test(jsonl_source, snapshot_a_file_written_moments_ago_is_not_taken_until_it_settled)
{
    write_persons("persons.jsonl", 1, 3);
    open_snapshot_by_line();
    for (int i = 0; i < 3; i++) {
        poll_next();
        cr_assert_eq(batch.n, 0, "poll %d took a file written moments ago", i);
    }
    set_mtime_back("persons.jsonl", 31);
    poll_next();
    cr_assert_eq(batch.n, 0);
    poll_next();
    assert_keys(1, 1);
}

/* Polls with stderr (the log) going into a file; returns what was logged (caller frees). */
static char *poll_logged(void)
{
    char *path = sk_asprintf("%s.log", dir);
    fflush(stderr);
    int saved = dup(2);
    FILE *log = fopen(path, "w+");
    cr_assert_not_null(log);
    dup2(fileno(log), 2);
    poll_next();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char *text = sk_calloc(1, 8192);
    rewind(log);
    text[fread(text, 1, 8191, log)] = '\0';
    fclose(log);
    unlink(path);
    free(path);
    return text;
}

/* An export under a name that is not <collection>.jsonl: not read, and said
 * (then whenever the directory's names change), also when it comes after
 * the start; before, `persons.json` or a compressed file was passed over in
 * silence, and a misnamed file only at the start. rsync's temporary file
 * (hidden) is neither read nor mentioned, and its rename over the file is
 * read once. */
Test(jsonl_source, files_under_names_near_a_collection_are_not_read_and_said)
{
    open_dir(100);
    free(poll_logged());
    write_persons("Persons.jsonl", 1, 1);
    write_persons("persons.json", 2, 2);
    write_persons("persons.jsonl.gz", 3, 3);
    write_persons(".persons.jsonl.AbC123", 4, 4);
    char *log = poll_logged();
    cr_assert_eq(batch.n + batch.n_bad, 0);
    cr_assert(strstr(log, "Persons.jsonl: not read: the file of Person is persons.jsonl"), "%s",
              log);
    cr_assert(strstr(log, "/persons.json: not read"), "%s", log);
    cr_assert(strstr(log, "/persons.jsonl.gz: not read"), "%s", log);
    cr_assert_null(strstr(log, "AbC123"), "%s", log);
    free(log);
    char *tmp = sk_strdup(file_path(".persons.jsonl.AbC123"));
    cr_assert_eq(rename(tmp, file_path("persons.jsonl")), 0);
    free(tmp);
    poll_next();
    assert_keys(4, 1);
    poll_next();
    cr_assert_eq(batch.n, 0);
}

/* `cp new.jsonl persons.jsonl` over a file already read: the same inode, and
 * the same size when one change keeps the length (a date, meta.modified).
 * The fingerprint covers the first 64 KiB and the 4 KiB before the offset;
 * a change between them was never read. Its ctime says the file was written
 * without growing: it is read again from its start. */
Test(jsonl_source, a_same_size_rewrite_in_place_is_read_again)
{
    write_persons("persons.jsonl", 1, 600); /* ~96 KB */
    open_dir(1000);
    poll_next();
    assert_keys(1, 600);
    usleep(10000);
    FILE *f = fopen(file_path("persons.jsonl"), "r+");
    cr_assert_not_null(f);
    char *text = sk_calloc(1, 200000);
    size_t len = fread(text, 1, 199999, f);
    char *at = strstr(text, "\"G450\"");
    cr_assert(at && at - text > 70000 && len - (size_t)(at - text) > 5000, "G450 at %td of %zu",
              at - text, len);
    cr_assert_eq(fseek(f, at - text + 1, SEEK_SET), 0);
    fputc('H', f);
    fclose(f);
    free(text);
    poll_next();
    cr_assert_eq(batch.n, 600, "the rewritten file was not read again (%zu records)", batch.n);
    poll_next();
    cr_assert_eq(batch.n, 0, "read again without a change");
    /* appended lines are no rewrite */
    write_persons("persons.jsonl", 601, 601);
    poll_next();
    assert_keys(601, 1);
    poll_next();
    cr_assert_eq(batch.n, 0);
}

/* An operator's `rm`, or an export job that left a directory or nothing in
 * the file's place: no snapshot, so nothing to delete (reaching the
 * deletions would need the broker, which this test does not have: a poll
 * that went there would crash). */
Test(jsonl_source, snapshot_a_file_deleted_or_replaced_by_nothing_deletes_nothing)
{
    write_persons("persons.jsonl", 1, 3);
    set_mtime_back("persons.jsonl", 3600);
    cursor_snapshot_done("persons.jsonl", 3);
    open_snapshot_by_line();
    cr_assert_eq(unlink(file_path("persons.jsonl")), 0);
    for (int i = 0; i < 3; i++) {
        poll_next();
        cr_assert_eq(batch.n + batch.n_bad, 0);
    }
    write_file("persons.jsonl", "w", "");
    set_mtime_back("persons.jsonl", 3600);
    for (int i = 0; i < 3; i++) {
        poll_next();
        cr_assert_eq(batch.n + batch.n_bad, 0);
    }
    cr_assert_eq(unlink(file_path("persons.jsonl")), 0);
    cr_assert_eq(mkdir(file_path("persons.jsonl"), 0700), 0);
    assert_poll_retrying("a directory, not a regular file");
}

/* A number the codec would pass on changed (cJSON holds it in a double, the
 * codec prints the double): a 19-digit vendor id came out as
 * 1.2345678901234568e+18, 1e400 as null. Dead-lettered with its position, as
 * a NUL is; numbers a double holds pass, whatever their spelling. */
Test(jsonl_source, numbers_a_double_does_not_hold_are_dead_lettered)
{
    static const char *const kept[] = {
        "[0.1, 1e2, 9007199254740992, -0, 1.50, 0.30000000000000004, 1E-5, 0.05]",
        "[123456789012345, -2.5e-300, 100000000000000000000000, 1.7976931348623157e308]",
        "\"12345678901234567890123\"",
    };
    static const char *const refused[] = {
        "1234567890123456789",
        "1e400",
        "1e-400",
        "0.1000000000000000000001",
        "9007199254740993",
        "-1.00000000000000000001",
    };
    for (size_t i = 0; i < 9; i++) {
        char *line = sk_asprintf("{\"id\":\"%s\",\"x\":%s}\n", uuid((int)i + 1),
                                 i < 3 ? kept[i] : refused[i - 3]);
        write_file("persons.jsonl", "a", line);
        free(line);
    }
    open_dir(100);
    poll_next();
    cr_assert_eq(batch.n, 3, "%zu kept: %s", batch.n, batch.n_bad ? batch.bad[0].err.msg : "");
    cr_assert_eq(batch.n_bad, 6);
    for (size_t i = 0; i < 6; i++) {
        char where[32];
        snprintf(where, sizeof(where), "persons.jsonl:%zu", i + 4);
        cr_assert_str_eq(batch.bad[i].where, where);
        cr_assert_str_eq(batch.bad[i].err.msg,
                         "Person: a number a double does not hold exactly at byte 49", "%s: %s",
                         refused[i], batch.bad[i].err.msg);
    }
}

/* An exporter that writes no newline after the last line (a join of the
 * lines with "\n"): its last record was never read, and a file renamed over
 * it each night lost one record a night. A whole JSON object at the end is
 * taken; a writer still at it, its object not closed, is waited for. */
Test(jsonl_source, a_last_line_without_its_newline_is_taken_when_it_is_a_whole_object)
{
    write_persons("persons.jsonl", 1, 1);
    char *line = sk_strdup(person(2));
    line[strlen(line) - 1] = '\0';
    write_file("persons.jsonl", "a", line);
    free(line);
    open_dir(100);
    poll_next();
    assert_keys(1, 2);
    poll_next();
    cr_assert_eq(batch.n + batch.n_bad, 0);
    /* the newline after it later, then a line cut inside a nested object */
    write_file("persons.jsonl", "a", "\n");
    write_file("persons.jsonl", "a",
               "{\"id\":\"00000000-0000-4000-8000-000000000003\",\"meta\":{\"created\":"
               "\"2024-01-01T00:00:00Z\"}");
    poll_next();
    cr_assert_eq(batch.n + batch.n_bad, 0, "a line still being written was taken");
    write_file("persons.jsonl", "a", ",\"givenName\":\"G3\"}\n");
    poll_next();
    assert_keys(3, 1);
    cr_assert_eq(batch.n_bad, 0);
}

/* A snapshot file that settled without a newline at its end is not taken,
 * and the log says why (the source was idle without a word). */
Test(jsonl_source, snapshot_a_settled_file_without_its_last_newline_is_said)
{
    write_persons("persons.jsonl", 1, 2);
    write_file("persons.jsonl", "a", "{\"id\":\"00000000-0000-4000-8000-000000000003\"}");
    set_mtime_back("persons.jsonl", 3600);
    open_snapshot_by_line();
    poll_next();
    char *log = poll_logged();
    cr_assert_eq(batch.n, 0);
    cr_assert(strstr(log, "persons.jsonl: does not end with a newline; not taken"), "%s", log);
    free(log);
}

/* What other programs write, read as meant: a UTF-8 BOM before the first
 * line, CRLF endings, a line of blanks, an id in upper case (keyed in lower
 * case), a key twice (the first is the field and the key, the second kept in
 * _unknown); an id in braces is no UUID: dead-lettered with its line. */
Test(jsonl_source, a_bom_crlf_blank_lines_upper_case_ids_and_duplicate_keys)
{
    write_file("persons.jsonl", "w",
               "\xEF\xBB\xBF{\"id\":\"00000000-0000-4000-8000-000000000001\"}\r\n"
               " \t \r\n"
               "{\"id\":\"00000000-0000-4000-8000-00000000000A\"}\r\n"
               "{\"id\":\"{00000000-0000-4000-8000-000000000003}\"}\r\n"
               "{\"id\":\"00000000-0000-4000-8000-000000000004\","
               "\"id\":\"00000000-0000-4000-8000-000000000005\"}\r\n");
    open_dir(100);
    poll_next();
    cr_assert_eq(batch.n, 3);
    cr_assert_str_eq(batch.recs[0].key, uuid(1));
    cr_assert_str_eq(batch.recs[1].key, "00000000-0000-4000-8000-00000000000a");
    cr_assert_str_eq(batch.recs[2].key, uuid(4));
    struct sk_error err = {0};
    char *json = sk_codec_decode(batch.recs[2].entity, batch.recs[2].value, batch.recs[2].value_len,
                                 NULL, &err);
    cr_assert(json && strstr(json, uuid(5)), "the second id was lost: %s", json ? json : err.msg);
    free(json);
    cr_assert_eq(batch.n_bad, 1);
    cr_assert_str_eq(batch.bad[0].where, "persons.jsonl:4");
}
