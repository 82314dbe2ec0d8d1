/*
 * embedded_journal.c: the journal of the embedded broker's store, a thread
 * that copies every record of every topic of the mock cluster into the
 * store, and the gate that keeps sinks behind it. See embedded_store.h.
 *
 * A round (docs/architecture.md §5.8):
 *   1. the end offset of the cursor topic, then the ends of every other
 *      partition: a cursor below the first end was acknowledged before it was
 *      read, and a source produces a cursor only after its batch was
 *      acknowledged (delivery rule 2), so that batch lies below the ends read
 *      after it;
 *   2. receive every partition up to its end (bounded);
 *   3. one SQLite transaction: the data records below their ends, and the
 *      cursor records below theirs only when every data partition is
 *      complete. A cursor on disk therefore never runs ahead of its data.
 * Records past an end wait in memory for the next round.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "embedded_internal.h"
#include "kafka.h"
#include "util.h"

/* How long a round may wait for records below its ends. */
#define ROUND_MS 5000
/* Records received but not written yet, at most (a store that cannot be
 * written must not make the journal hold the whole broker a second time). */
#define HELD_MAX 50000

static struct jpart *part_of(struct sk_estore *s, const rd_kafka_message_t *m)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    for (size_t i = 0; i < s->n_parts; i++)
        if (s->parts[i].partition == m->partition && strcmp(s->parts[i].topic, topic) == 0)
            return &s->parts[i];
    return NULL;
}

/* Takes one message from the consumer into held (waiting at most timeout_ms). */
static void receive(struct sk_estore *s, int timeout_ms)
{
    rd_kafka_message_t *m = rd_kafka_consumer_poll(s->consumer, timeout_ms);
    if (!m)
        return;
    struct jpart *p = m->err ? NULL : part_of(s, m);
    if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
        sk_log_limited(&s->write_limit, 10000, SK_LOG_WARN, "kafka", "embedded store journal: %s",
                       rd_kafka_message_errstr(m));
    if (!p || m->offset < p->received) {
        rd_kafka_message_destroy(m); /* an end-of-partition event, or fetched twice */
        return;
    }
    p->received = m->offset + 1;
    if (s->n_held == s->cap_held) {
        s->cap_held = s->cap_held ? s->cap_held * 2 : 1024;
        s->held = sk_realloc(s->held, s->cap_held * sizeof(*s->held));
    }
    s->held[s->n_held++] = m;
}

/* Step 1: the cursor topic's ends first, then the others'. */
static int read_ends(struct sk_estore *s)
{
    for (int cursor = 1; cursor >= 0; cursor--) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)s->n_parts);
        for (size_t i = 0; i < s->n_parts; i++)
            if (s->parts[i].cursor == (cursor == 1))
                rd_kafka_topic_partition_list_add(l, s->parts[i].topic, s->parts[i].partition);
        rd_kafka_resp_err_t e =
            l->cnt ? sk_kafka_list_offsets(s->ends, l, RD_KAFKA_OFFSET_END, 5000) : 0;
        for (int j = 0; !e && j < l->cnt; j++)
            for (size_t i = 0; i < s->n_parts; i++)
                if (s->parts[i].partition == l->elems[j].partition &&
                    strcmp(s->parts[i].topic, l->elems[j].topic) == 0)
                    s->parts[i].target = l->elems[j].offset;
        rd_kafka_topic_partition_list_destroy(l);
        if (e) {
            sk_log_limited(&s->write_limit, 10000, SK_LOG_WARN, "kafka",
                           "embedded store journal: end offsets: %s", rd_kafka_err2str(e));
            return -1;
        }
    }
    return 0;
}

static bool data_complete(struct sk_estore *s)
{
    for (size_t i = 0; i < s->n_parts; i++)
        if (!s->parts[i].cursor && s->parts[i].received < s->parts[i].target)
            return false;
    return true;
}

static int insert(struct sk_estore *s, const struct jpart *p, const rd_kafka_message_t *m,
                  struct sk_buf *hdrs, struct sk_error *err)
{
    sqlite3_stmt *q = s->insert;
    sqlite3_bind_int64(q, 1, p->topic_id);
    sqlite3_bind_int(q, 2, p->partition);
    sqlite3_bind_int64(q, 3, m->offset);
    /* NULL stays NULL (a tombstone, a record without key); empty stays empty */
    if (m->key)
        sqlite3_bind_blob(q, 4, m->key_len ? m->key : "", (int)m->key_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, 4);
    if (m->payload)
        sqlite3_bind_blob(q, 5, m->len ? m->payload : "", (int)m->len, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, 5);
    sk_buf_reset(hdrs);
    estore_headers_pack(m, hdrs);
    if (hdrs->len)
        sqlite3_bind_blob(q, 6, hdrs->p, (int)hdrs->len, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, 6);
    rd_kafka_timestamp_type_t tstype;
    sqlite3_bind_int64(q, 7, rd_kafka_message_timestamp(m, &tstype));
    sqlite3_bind_text(q, 8, p->topic, -1, SQLITE_STATIC);
    return sk_state_run(s->st, q, false, err);
}

/* Step 3: writes what may be written; returns how many records, or -1. */
static long write_held(struct sk_estore *s)
{
    bool complete = data_complete(s);
    bool *take = sk_calloc(s->n_held + 1, sizeof(*take));
    struct sk_buf hdrs = {0};
    struct sk_error err = {0};
    long n = 0;
    int rc = 0;
    for (size_t i = 0; i < s->n_held && rc == 0; i++) {
        struct jpart *p = part_of(s, s->held[i]);
        if (s->held[i]->offset >= p->target || (p->cursor && !complete))
            continue;
        if (n == 0)
            rc = sk_state_begin(s->st, &err);
        if (rc == 0)
            rc = insert(s, p, s->held[i], &hdrs, &err);
        take[i] = true;
        n++;
    }
    if (n && rc == 0)
        rc = sk_state_commit(s->st, &err);
    sk_buf_free(&hdrs);
    if (rc) {
        sk_state_rollback(s->st);
        sk_log_limited(&s->write_limit, 10000, SK_LOG_ERROR, "kafka",
                       "embedded store %s: cannot write (%s); sinks wait until it can", s->path,
                       err.msg);
        pthread_mutex_lock(&s->mu);
        snprintf(s->failing, sizeof(s->failing), "embedded store %.120s cannot write (%.180s)",
                 s->path, err.msg);
        pthread_cond_broadcast(&s->cv); /* the waiting sinks say so */
        pthread_mutex_unlock(&s->mu);
        free(take);
        return -1; /* everything stays held for the next round */
    }
    size_t kept = 0;
    pthread_mutex_lock(&s->mu);
    bool recovered = n && s->failing[0];
    if (recovered)
        s->failing[0] = '\0';
    for (size_t i = 0; i < s->n_held; i++) {
        if (!take[i]) {
            s->held[kept++] = s->held[i];
            continue;
        }
        struct jpart *p = part_of(s, s->held[i]);
        p->persisted = s->held[i]->offset + 1;
        rd_kafka_message_destroy(s->held[i]);
    }
    s->n_held = kept;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (recovered)
        sk_info("kafka", "embedded store %s: writing again", s->path);
    free(take);
    return n;
}

static long journal_round(struct sk_estore *s, int64_t wait_ms)
{
    if (read_ends(s))
        return -1;
    int64_t deadline = sk_mono_ms() + wait_ms;
    while (sk_mono_ms() < deadline) {
        bool all = true;
        for (size_t i = 0; i < s->n_parts && all; i++)
            all = s->parts[i].received >= s->parts[i].target;
        if (all || s->n_held >= HELD_MAX)
            break;
        receive(s, 100);
    }
    return write_held(s);
}

static void *journal_thread(void *arg)
{
    struct sk_estore *s = arg;
    while (!atomic_load(&s->stop)) {
        long n = journal_round(s, ROUND_MS);
        if (n < 0) {
            struct timespec ts = {1, 0};
            nanosleep(&ts, NULL);
        } else if (n == 0 && s->n_held < HELD_MAX) {
            receive(s, 200); /* idle: returns as soon as a record arrives */
        }
    }
    /* Connectors are stopped: whatever the broker holds goes to disk now. */
    if (journal_round(s, 10000) < 0 || s->n_held)
        sk_warn("kafka", "embedded store %s: %zu record(s) not written at stop", s->path,
                s->n_held);
    return NULL;
}

/* Partitions of every topic the cluster has, with their stored positions. */
static int load_parts(struct sk_estore *s, struct sk_error *err)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(s->ends, 1, NULL, &md, 10000);
    if (e)
        return sk_error_set(err, SK_ERR_FATAL, "embedded store: topics: %s", rd_kafka_err2str(e));
    sqlite3_stmt *add = NULL, *id = NULL, *end = NULL;
    int rc = sk_state_prepare(s->st,
                              "INSERT OR IGNORE INTO " ESTORE_TOPICS
                              "(name, partitions, compact) VALUES(?1, ?2, ?3)",
                              &add, err);
    if (rc == 0)
        rc = sk_state_prepare(s->st, "SELECT id FROM " ESTORE_TOPICS " WHERE name = ?1", &id, err);
    if (rc == 0)
        rc = sk_state_prepare(s->st,
                              "SELECT coalesce(max(offset) + 1, 0) FROM " ESTORE_RECORDS
                              " WHERE topic = ?1 AND partition = ?2",
                              &end, err);
    const char *dlq = sk_kafka_dlq_topic(s->kafka), *cursors = sk_kafka_cursor_topic(s->kafka);
    for (int t = 0; rc == 0 && t < md->topic_cnt; t++) {
        const struct rd_kafka_metadata_topic *mt = &md->topics[t];
        if (mt->err || strncmp(mt->topic, "__", 2) == 0)
            continue;
        sqlite3_bind_text(add, 1, mt->topic, -1, SQLITE_STATIC);
        sqlite3_bind_int(add, 2, mt->partition_cnt);
        sqlite3_bind_int(add, 3, strcmp(mt->topic, dlq) != 0); /* the DLQ is not compacted */
        rc = sk_state_run(s->st, add, false, err);
        sqlite3_bind_text(id, 1, mt->topic, -1, SQLITE_STATIC);
        int64_t topic_id =
            rc == 0 && sqlite3_step(id) == SQLITE_ROW ? sqlite3_column_int64(id, 0) : -1;
        sqlite3_reset(id);
        for (int p = 0; rc == 0 && p < mt->partition_cnt; p++) {
            sqlite3_bind_int64(end, 1, topic_id);
            sqlite3_bind_int(end, 2, mt->partitions[p].id);
            int64_t next = sqlite3_step(end) == SQLITE_ROW ? sqlite3_column_int64(end, 0) : 0;
            sqlite3_reset(end);
            s->parts = sk_realloc(s->parts, (s->n_parts + 1) * sizeof(*s->parts));
            s->parts[s->n_parts++] = (struct jpart){
                .topic = sk_strdup(mt->topic),
                .topic_id = topic_id,
                .partition = mt->partitions[p].id,
                .cursor = strcmp(mt->topic, cursors) == 0,
                .restored = next,
                .received = next,
                .persisted = next,
                .target = next,
            };
        }
    }
    sqlite3_finalize(add);
    sqlite3_finalize(id);
    sqlite3_finalize(end);
    rd_kafka_metadata_destroy(md);
    return rc;
}

int sk_estore_start(struct sk_estore *s, struct sk_error *err)
{
    s->ends = sk_kafka_reader_new(s->kafka, "skolsync-journal-ends", err);
    if (!s->ends || load_parts(s, err))
        return -1;
    s->consumer = sk_kafka_reader_new(s->kafka, "skolsync-journal", err);
    if (!s->consumer)
        return -1;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)s->n_parts);
    for (size_t i = 0; i < s->n_parts; i++)
        rd_kafka_topic_partition_list_add(l, s->parts[i].topic, s->parts[i].partition)->offset =
            s->parts[i].received;
    rd_kafka_resp_err_t e = rd_kafka_assign(s->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e)
        return sk_error_set(err, SK_ERR_FATAL, "embedded store: assign: %s", rd_kafka_err2str(e));
    if (sk_state_prepare(s->st,
                         "INSERT OR IGNORE INTO " ESTORE_RECORDS
                         " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, " ESTORE_SUM("?8", "?2", "?4", "?5",
                                                                           "?6", "?7") ")",
                         &s->insert, err))
        return -1;
    if (sk_thread_start(&s->thread, journal_thread, s, "estore-journal", NULL))
        return sk_error_set(err, SK_ERR_FATAL, "embedded store: cannot start the journal");
    s->started = true;
    sk_info("kafka", "embedded broker kept in %s (%zu partitions journaled)", s->path, s->n_parts);
    return 0;
}

void estore_journal_stop(struct sk_estore *s)
{
    if (s->started) {
        atomic_store(&s->stop, true);
        pthread_join(s->thread, NULL);
        s->started = false;
    }
    for (size_t i = 0; i < s->n_held; i++)
        rd_kafka_message_destroy(s->held[i]);
    free(s->held);
    s->held = NULL;
    s->n_held = 0;
    if (s->consumer) {
        rd_kafka_consumer_close(s->consumer); /* §8.14 */
        rd_kafka_destroy(s->consumer);
        s->consumer = NULL;
    }
    if (s->ends)
        rd_kafka_destroy(s->ends);
    s->ends = NULL;
    sqlite3_finalize(s->insert);
    s->insert = NULL;
    for (size_t i = 0; i < s->n_parts; i++)
        free(s->parts[i].topic);
    free(s->parts);
    s->parts = NULL;
    s->n_parts = 0;
    for (size_t i = 0; i < s->n_looked; i++)
        free(s->looked[i]);
    free(s->looked);
    s->looked = NULL;
    s->n_looked = 0;
}

int sk_estore_await(struct sk_estore *s, rd_kafka_message_t *const *msgs, size_t n,
                    const atomic_bool *stop, char *why, size_t why_size)
{
    if (!s || !s->started)
        return 0;
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < n;) {
        struct jpart *p = part_of(s, msgs[i]);
        if (!p || p->persisted > msgs[i]->offset) {
            i++;
            continue;
        }
        if (atomic_load(stop)) {
            rc = -1;
            break;
        }
        if (s->failing[0] && why_size) {
            snprintf(why, why_size, "%s", s->failing);
            rc = 1;
            break;
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &until);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

bool sk_estore_first_look(struct sk_estore *s, const char *sink)
{
    if (!s || !s->started)
        return false;
    pthread_mutex_lock(&s->mu);
    bool first = true;
    for (size_t i = 0; i < s->n_looked && first; i++)
        first = strcmp(s->looked[i], sink) != 0;
    if (first) {
        s->looked = sk_realloc(s->looked, (s->n_looked + 1) * sizeof(*s->looked));
        s->looked[s->n_looked++] = sk_strdup(sink);
    }
    pthread_mutex_unlock(&s->mu);
    return first;
}

int64_t sk_estore_restored_end(const struct sk_estore *s, const char *topic, int32_t partition)
{
    if (!s || !s->started)
        return -1;
    for (size_t i = 0; i < s->n_parts; i++) /* fixed once started */
        if (s->parts[i].partition == partition && strcmp(s->parts[i].topic, topic) == 0)
            return s->parts[i].restored;
    return -1;
}
