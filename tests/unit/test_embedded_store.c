/*
 * test_embedded_store.c: the embedded broker's store (daemon/embedded_store.c,
 * docs/architecture.md §5.8) without a daemon: records produced to one
 * embedded broker come back from the next one started on the same
 * kafka.embedded_dir at the same partitions and offsets, with their keys,
 * values (tombstones too), headers and the same incarnation; a store most of
 * which is overwritten is compacted at open (latest value per key, tombstones
 * kept, offsets renumbered, a new incarnation); a record that does not
 * match its checksum makes the store damaged (a store of format 1, before
 * the checksums, is kept and checked from then on); a directory in use is
 * refused, and a lock file that cannot be opened named; under systemd $STATE_DIRECTORY/embedded is the default.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>

#include "kafka.h"
#include "log.h"
#include "sk_test.h"
#include "util.h"

/* An embedded broker kept in dir. */
static struct sk_kafka_conf conf_for(const char *dir)
{
    return (struct sk_kafka_conf){.brokers = "embedded",
                                  .topic_prefix = "estore.",
                                  .partitions = 3,
                                  .replication_factor = 1,
                                  .connect_timeout_ms = 10000,
                                  .embedded_dir = (char *)dir};
}

static struct sk_kafka *start(const char *dir)
{
    struct sk_kafka_conf kc = conf_for(dir);
    const char *cols[] = {"persons"};
    struct sk_kafka *k = NULL;
    struct sk_error err = {0};
    cr_assert_eq(sk_kafka_start(&kc, cols, 1, &k, &err), 0, "%s", err.msg);
    return k;
}

/* One record as produced and as read back. */
struct rec {
    int32_t partition;
    int64_t offset;
    char key[40];
    char value[64]; /* "" with tombstone: no value */
    bool tombstone;
    char header[64]; /* the value of header "h", "" if none */
};

static void dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct rec *r = m->_private;
    cr_assert_eq(m->err, 0, "delivery: %s", rd_kafka_err2str(m->err));
    r->offset = m->offset;
}

/* Produces recs[i] (partition chosen by key hash) and fills in their offsets. */
static void produce(struct sk_kafka *k, const char *topic, struct rec *recs, size_t n)
{
    struct sk_error err = {0};
    rd_kafka_t *p = sk_kafka_producer_new(k, "estore-test", dr, NULL, &err);
    cr_assert_not_null(p, "%s", err.msg);
    for (size_t i = 0; i < n; i++) {
        struct rec *r = &recs[i];
        rd_kafka_headers_t *h = rd_kafka_headers_new(2);
        if (r->header[0])
            rd_kafka_header_add(h, "h", -1, r->header, -1);
        rd_kafka_header_add(h, "empty", -1, NULL, 0);
        rd_kafka_resp_err_t e = rd_kafka_producev(
            p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(r->partition),
            RD_KAFKA_V_KEY(r->key, strlen(r->key)),
            RD_KAFKA_V_VALUE(r->tombstone ? NULL : r->value, r->tombstone ? 0 : strlen(r->value)),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(r),
            RD_KAFKA_V_END);
        cr_assert_eq(e, 0, "produce: %s", rd_kafka_err2str(e));
    }
    cr_assert_eq(rd_kafka_flush(p, 10000), 0);
    rd_kafka_destroy(p);
}

struct readback {
    struct rec *v;
    size_t n;
    int32_t partition;
};

static int collect(void *ctx, const rd_kafka_message_t *m)
{
    struct readback *rb = ctx;
    rb->v = realloc(rb->v, (rb->n + 1) * sizeof(*rb->v));
    struct rec *r = &rb->v[rb->n++];
    memset(r, 0, sizeof(*r));
    r->partition = rb->partition;
    r->offset = m->offset;
    snprintf(r->key, sizeof(r->key), "%.*s", (int)m->key_len, (const char *)m->key);
    r->tombstone = m->payload == NULL;
    if (m->payload)
        snprintf(r->value, sizeof(r->value), "%.*s", (int)m->len, (const char *)m->payload);
    if (sk_kafka_header(m, "h", r->header, sizeof(r->header)))
        r->header[0] = '\0';
    char empty[8];
    cr_assert_eq(sk_kafka_header(m, "empty", empty, sizeof(empty)), 0, "header lost");
    return 0;
}

/* Every record of the topic, partition by partition, in offset order. */
static struct readback read_all(struct sk_kafka *k, const char *topic, int partitions)
{
    struct readback rb = {0};
    for (int p = 0; p < partitions; p++) {
        struct sk_error err = {0};
        rb.partition = p;
        cr_assert_eq(sk_kafka_read_to_end(k, "estore-read", topic, p, RD_KAFKA_OFFSET_BEGINNING,
                                          10000, collect, &rb, &err),
                     0, "%s", err.msg);
    }
    return rb;
}

static int by_place(const void *a, const void *b)
{
    const struct rec *x = a, *y = b;
    if (x->partition != y->partition)
        return x->partition - y->partition;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

Test(embedded_store, a_restart_restores_every_record_at_its_offset, .timeout = 120)
{
    sk_log_setup(SK_LOG_WARN, false);
    char *dir = skt_tmpdir("estore-unit");
    struct sk_kafka *k = start(dir);
    char *incarnation = sk_strdup(sk_kafka_incarnation(k));
    char *topic = sk_kafka_topic_for(k, "persons");
    enum { N = 60 };
    struct rec recs[N + 1];
    memset(recs, 0, sizeof(recs));
    for (int i = 0; i < N; i++) {
        recs[i].partition = i % 3;
        snprintf(recs[i].key, sizeof(recs[i].key), "key-%d", i % 17);
        snprintf(recs[i].value, sizeof(recs[i].value), "value %d", i);
        recs[i].tombstone = i % 11 == 5;
        if (i % 4)
            snprintf(recs[i].header, sizeof(recs[i].header), "hdr %d", i);
    }
    produce(k, topic, recs, N);
    struct rec cursor = {.partition = 0, .key = "a-source", .value = "cursor bytes"};
    produce(k, sk_kafka_cursor_topic(k), &cursor, 1);
    sk_kafka_destroy(k); /* the journal's last round */

    k = start(dir);
    cr_assert_str_eq(sk_kafka_incarnation(k), incarnation, "the incarnation changed");
    struct readback rb = read_all(k, topic, 3);
    cr_assert_eq(rb.n, (size_t)N, "%zu records restored of %d", rb.n, N);
    qsort(recs, N, sizeof(recs[0]), by_place);
    for (size_t i = 0; i < rb.n; i++) {
        struct rec *want = &recs[i], *got = &rb.v[i];
        cr_assert_eq(got->partition, want->partition);
        cr_assert_eq(got->offset, want->offset, "partition %d: offset %lld restored as %lld",
                     want->partition, (long long)want->offset, (long long)got->offset);
        cr_assert_str_eq(got->key, want->key);
        cr_assert_eq(got->tombstone, want->tombstone, "%s@%lld", want->key,
                     (long long)want->offset);
        cr_assert_str_eq(got->value, want->tombstone ? "" : want->value);
        cr_assert_str_eq(got->header, want->header);
    }
    struct readback cur = read_all(k, sk_kafka_cursor_topic(k), 1);
    cr_assert_eq(cur.n, 1);
    cr_assert_str_eq(cur.v[0].value, "cursor bytes");
    /* appended after a restore: numbered on from the restored end */
    struct rec more = {.partition = 1, .key = "key-new", .value = "after"};
    produce(k, topic, &more, 1);
    cr_assert_eq(more.offset, N / 3, "the next offset of partition 1 is %lld",
                 (long long)more.offset);
    sk_kafka_destroy(k);
    free(rb.v);
    free(cur.v);
    free(topic);
    free(incarnation);
    free(dir);
}

Test(embedded_store, an_overwritten_store_is_compacted_with_a_new_incarnation, .timeout = 120)
{
    sk_log_setup(SK_LOG_WARN, false);
    char *dir = skt_tmpdir("estore-compact");
    struct sk_kafka *k = start(dir);
    char *incarnation = sk_strdup(sk_kafka_incarnation(k));
    char *topic = sk_kafka_topic_for(k, "persons");
    enum { N = 1500, KEYS = 10 };
    struct rec *recs = calloc(N, sizeof(*recs));
    for (int i = 0; i < N; i++) {
        recs[i].partition = (i % KEYS) % 3;
        snprintf(recs[i].key, sizeof(recs[i].key), "key-%d", i % KEYS);
        snprintf(recs[i].value, sizeof(recs[i].value), "version %d", i / KEYS);
        recs[i].tombstone = i == N - 1; /* the last record of key 9 deletes it */
    }
    produce(k, topic, recs, N);
    sk_kafka_destroy(k);

    k = start(dir);
    cr_assert_str_neq(sk_kafka_incarnation(k), incarnation,
                      "offsets changed but the incarnation did not");
    struct readback rb = read_all(k, topic, 3);
    cr_assert_eq(rb.n, (size_t)KEYS, "%zu records after compaction, want one per key", rb.n);
    int64_t expect_offset[3] = {0, 0, 0};
    for (size_t i = 0; i < rb.n; i++) {
        struct rec *got = &rb.v[i];
        cr_assert_eq(got->offset, expect_offset[got->partition]++, "offsets renumbered from 0");
        int key = atoi(got->key + 4);
        if (key == KEYS - 1) {
            cr_assert(got->tombstone, "the tombstone of %s was compacted away", got->key);
        } else {
            char want[32];
            snprintf(want, sizeof(want), "version %d", N / KEYS - 1);
            cr_assert_str_eq(got->value, want, "%s: not its latest value", got->key);
        }
    }
    sk_kafka_destroy(k);
    free(rb.v);
    free(recs);
    free(topic);
    free(incarnation);
    free(dir);
}

Test(embedded_store, records_are_checked_against_their_checksums, .timeout = 120)
{
    sk_log_setup(SK_LOG_WARN, false);
    char *dir = skt_tmpdir("estore-sum");
    struct sk_kafka *k = start(dir);
    char *incarnation = sk_strdup(sk_kafka_incarnation(k));
    char *topic = sk_kafka_topic_for(k, "persons");
    struct rec recs[6];
    memset(recs, 0, sizeof(recs));
    for (int i = 0; i < 6; i++) {
        recs[i].partition = i % 3;
        snprintf(recs[i].key, sizeof(recs[i].key), "key-%d", i);
        snprintf(recs[i].value, sizeof(recs[i].value), "value %d", i);
    }
    produce(k, topic, recs, 6);
    sk_kafka_destroy(k);
    /* a store of format 1, as a daemon before the checksums wrote it */
    char *db = skt_fmt("%s/embedded.db", dir);
    skt_sqlite_exec(db, "ALTER TABLE estore_records DROP COLUMN crc; "
                        "UPDATE estore_meta SET value = '1' WHERE key = 'format'");
    k = start(dir);
    cr_assert_str_eq(sk_kafka_incarnation(k), incarnation, "a format-1 store was not kept");
    struct readback rb = read_all(k, topic, 3);
    cr_assert_eq(rb.n, 6, "%zu records restored of 6", rb.n);
    struct rec more = {.partition = 1, .key = "key-new", .value = "after"};
    produce(k, topic, &more, 1);
    sk_kafka_destroy(k);
    char *format = skt_sqlite_value(db, "SELECT value FROM estore_meta WHERE key = 'format'", NULL);
    char *sums = skt_sqlite_value(db, "SELECT count(crc) FROM estore_records", NULL);
    cr_assert_str_eq(format, "2");
    cr_assert_str_eq(sums, "1", "the record written after the upgrade has no checksum");
    /* its value changed behind the store's back: damaged, moved aside */
    skt_sqlite_exec(db, "UPDATE estore_records SET value = CAST('afteR' AS BLOB) "
                        "WHERE crc IS NOT NULL");
    k = start(dir);
    cr_assert_str_neq(sk_kafka_incarnation(k), incarnation, "a changed record was restored");
    free(rb.v);
    rb = read_all(k, topic, 3);
    cr_assert_eq(rb.n, 0, "%zu records restored from a damaged store", rb.n);
    sk_kafka_destroy(k);
    char *aside = skt_fmt("ls %s/embedded.db.damaged-*", dir);
    cr_assert_eq(skt_sh(aside, 10, NULL), 0, "the damaged store was not moved aside");
    free(aside);
    free(rb.v);
    free(sums);
    free(format);
    free(db);
    free(topic);
    free(incarnation);
    free(dir);
}

Test(embedded_store, a_directory_in_use_is_refused, .timeout = 60)
{
    sk_log_setup(SK_LOG_WARN, false);
    char *dir = skt_tmpdir("estore-lock");
    struct sk_kafka *k = start(dir);
    struct sk_kafka_conf kc = conf_for(dir);
    struct sk_kafka *second = NULL;
    struct sk_error err = {0};
    cr_assert_eq(sk_kafka_start(&kc, NULL, 0, &second, &err), -1);
    cr_assert(strstr(err.msg, "in use by another skolsync process"), "%s", err.msg);
    sk_kafka_destroy(k);
    /* free again once the first is gone */
    cr_assert_eq(sk_kafka_start(&kc, NULL, 0, &second, &err), 0, "%s", err.msg);
    sk_kafka_destroy(second);
    /* a lock that cannot be opened is named (here a directory in its place) */
    char *lock = skt_fmt("%s/lock", dir);
    cr_assert_eq(unlink(lock), 0);
    cr_assert_eq(mkdir(lock, 0700), 0);
    cr_assert_eq(sk_kafka_start(&kc, NULL, 0, &second, &err), -1);
    cr_assert(strstr(err.msg, lock), "the error does not name %s: %s", lock, err.msg);
    free(lock);
    free(dir);
}

Test(embedded_store, under_systemd_the_state_directory_is_the_default, .timeout = 60)
{
    sk_log_setup(SK_LOG_WARN, false);
    char *state = skt_tmpdir("estore-statedir");
    setenv("STATE_DIRECTORY", state, 1); /* what StateDirectory= sets */
    struct sk_kafka_conf kc = conf_for(NULL);
    struct sk_kafka *k = NULL;
    struct sk_error err = {0};
    cr_assert_eq(sk_kafka_start(&kc, NULL, 0, &k, &err), 0, "%s", err.msg);
    cr_assert_not_null(sk_kafka_estore(k), "no store under $STATE_DIRECTORY");
    sk_kafka_destroy(k);
    char *db = skt_fmt("%s/embedded/embedded.db", state);
    cr_assert_eq(access(db, F_OK), 0, "%s missing", db);
    /* "off": memory only, even under systemd */
    kc.embedded_dir = "off";
    cr_assert_eq(sk_kafka_start(&kc, NULL, 0, &k, &err), 0, "%s", err.msg);
    cr_assert_null(sk_kafka_estore(k), "a store although embedded_dir is off");
    sk_kafka_destroy(k);
    unsetenv("STATE_DIRECTORY");
    free(db);
    free(state);
}
