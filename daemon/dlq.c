/* dlq.c: see dlq.h. */
#include "dlq.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_client.h"
#include "daemon.h"
#include "log.h"
#include "model.h"
#include "produce.h"
#include "util.h"

struct letter {
    int64_t offset;
    char connector[128], cls[32], error[512], where[320], topic[256], entity[64], schema[128];
    int32_t partition;
    int64_t orig_offset;
    int64_t truncated_from; /* the value's size before it was cut, 0 = whole */
    const rd_kafka_message_t *msg;
};

static void parse_letter(const rd_kafka_message_t *m, struct letter *l)
{
    memset(l, 0, sizeof(*l));
    l->msg = m;
    l->offset = m->offset;
    l->partition = -1;
    l->orig_offset = -1;
    char num[32];
    sk_kafka_header(m, SK_DLQ_CONNECTOR, l->connector, sizeof(l->connector));
    sk_kafka_header(m, SK_DLQ_ERROR_CLASS, l->cls, sizeof(l->cls));
    sk_kafka_header(m, SK_DLQ_ERROR, l->error, sizeof(l->error));
    sk_kafka_header(m, SK_DLQ_WHERE, l->where, sizeof(l->where));
    sk_kafka_header(m, SK_DLQ_TOPIC, l->topic, sizeof(l->topic));
    sk_kafka_header(m, SK_DLQ_ENTITY, l->entity, sizeof(l->entity));
    sk_kafka_header(m, SK_HEADER_SCHEMA, l->schema, sizeof(l->schema));
    if (sk_kafka_header(m, SK_DLQ_PARTITION, num, sizeof(num)) == 0)
        l->partition = (int32_t)atoi(num);
    if (sk_kafka_header(m, SK_DLQ_OFFSET, num, sizeof(num)) == 0)
        l->orig_offset = atoll(num);
    if (sk_kafka_header(m, SK_DLQ_TRUNCATED, num, sizeof(num)) == 0)
        l->truncated_from = atoll(num);
}

static bool matches(const struct letter *l, const struct sk_dlq_filter *f)
{
    if (f->connector && strcmp(f->connector, l->connector) != 0)
        return false;
    if (f->from_offset >= 0 && l->offset < f->from_offset)
        return false;
    if (f->to_offset >= 0 && l->offset > f->to_offset)
        return false;
    return true;
}

static bool is_text(const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x09 || (s[i] > 0x0d && s[i] < 0x20))
            return false;
    return true;
}

/*
 * What `dlq list` hides unless asked (--show-data): the fields of a person
 * that identify or reach them. A source's dead letter is raw input, so it may
 * hold them in full.
 */
static const char *const personal_fields[] = {"civicNo",
                                              "givenName",
                                              "middleName",
                                              "familyName",
                                              "birthDate",
                                              "sex",
                                              "eduPersonPrincipalNames",
                                              "emails",
                                              "phoneNumbers",
                                              "addresses",
                                              "photo",
                                              NULL};

static bool personal(const char *key)
{
    for (const char *const *f = personal_fields; key && *f; f++)
        if (strcmp(*f, key) == 0)
            return true;
    return false;
}

/* Replaces the value of every personal field below j; true if any was. */
static bool mask_personal(cJSON *j)
{
    bool any = false;
    for (cJSON *x = j ? j->child : NULL; x; x = x->next) {
        if (cJSON_IsObject(j) && personal(x->string)) {
            cJSON *stars = cJSON_CreateString("***");
            stars->string = sk_strdup(x->string);
            cJSON_ReplaceItemViaPointer(j, x, stars); /* frees x */
            x = stars;
            any = true;
        } else {
            any |= mask_personal(x);
        }
    }
    return any;
}

/*
 * A source's raw input for `dlq list`: as it is with show_data; else JSON
 * with its personal fields masked, and input that is not JSON (which cannot
 * be told apart) withheld.
 */
static void add_input(cJSON *o, const char *text, size_t len, bool show_data)
{
    if (show_data) {
        cJSON_AddStringToObject(o, "value", text);
        return;
    }
    cJSON *j = cJSON_ParseWithLength(text, len);
    if (!j) {
        cJSON_AddNumberToObject(o, "value_bytes", (double)len);
        cJSON_AddStringToObject(o, "value_hidden", "not JSON, may hold personal data");
        return;
    }
    if (mask_personal(j)) {
        char *masked = cJSON_PrintUnformatted(j);
        cJSON_AddStringToObject(o, "value", masked);
        cJSON_AddBoolToObject(o, "masked", true);
        free(masked);
    } else {
        cJSON_AddStringToObject(o, "value", text);
    }
    cJSON_Delete(j);
}

struct each {
    const struct sk_dlq_filter *f;
    int (*fn)(void *ctx, const struct letter *l);
    void *ctx;
    size_t n;
};

/* 1 stops the read (limit or to_offset reached), other nonzero values are errors. */
static int each_one(void *ctx, const rd_kafka_message_t *m)
{
    struct each *e = ctx;
    struct letter letter;
    parse_letter(m, &letter);
    if (matches(&letter, e->f)) {
        int rc = e->fn(e->ctx, &letter);
        if (rc)
            return rc;
        e->n++;
    }
    if ((e->f->to_offset >= 0 && m->offset >= e->f->to_offset) ||
        (e->f->limit && e->n >= e->f->limit))
        return 1;
    return 0;
}

/* Calls fn for every dead letter matching f, in offset order. */
static int each_letter(struct sk_kafka *k, const struct sk_dlq_filter *f,
                       int (*fn)(void *ctx, const struct letter *l), void *ctx,
                       struct sk_error *err)
{
    struct each e = {.f = f, .fn = fn, .ctx = ctx};
    int rc = sk_kafka_read_to_end(k, "skolsync-dlq", sk_kafka_dlq_topic(k), 0,
                                  f->from_offset >= 0 ? f->from_offset : RD_KAFKA_OFFSET_BEGINNING,
                                  120000, each_one, &e, err);
    return rc == 1 ? 0 : rc;
}

struct list {
    cJSON *arr;
    bool show_data;
};

static int list_one(void *ctx, const struct letter *l)
{
    struct list *li = ctx;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "offset", (double)l->offset);
    cJSON_AddStringToObject(o, "connector", l->connector);
    cJSON_AddStringToObject(o, "error_class", l->cls);
    cJSON_AddStringToObject(o, "error", l->error);
    if (l->where[0])
        cJSON_AddStringToObject(o, "where", l->where);
    if (l->topic[0])
        cJSON_AddStringToObject(o, "topic", l->topic);
    if (l->partition >= 0) { /* a sink's: where it was consumed */
        cJSON_AddNumberToObject(o, "partition", l->partition);
        cJSON_AddNumberToObject(o, "original_offset", (double)l->orig_offset);
    }
    if (l->entity[0])
        cJSON_AddStringToObject(o, "entity", l->entity);
    if (l->truncated_from)
        cJSON_AddNumberToObject(o, "truncated_from", (double)l->truncated_from);
    if (l->msg->key) {
        char *key = sk_strndup(l->msg->key, l->msg->key_len);
        cJSON_AddStringToObject(o, "key", key);
        free(key);
    }
    if (l->msg->payload && !l->topic[0] && is_text(l->msg->payload, l->msg->len)) {
        char *text = sk_strndup(l->msg->payload, l->msg->len);
        add_input(o, text, l->msg->len, li->show_data);
        free(text);
    } else {
        cJSON_AddNumberToObject(o, "value_bytes", (double)l->msg->len);
    }
    cJSON_AddItemToArray(li->arr, o);
    return 0;
}

cJSON *sk_dlq_list(struct sk_kafka *k, const struct sk_dlq_filter *f, struct sk_error *err)
{
    struct list li = {.arr = cJSON_CreateArray(), .show_data = f->show_data};
    if (each_letter(k, f, list_one, &li, err)) {
        cJSON_Delete(li.arr);
        return NULL;
    }
    return li.arr;
}

/* ---- letters a later record supersedes --------------------------------------------- */

/*
 * A sink's letter replayed as it was becomes its key's latest record in a
 * compacted topic, and every sink applies it again. If the topic holds a
 * later record for that key (a tombstone, a newer version), that record is
 * the key's current state: replaying the letter would bring a deleted entity
 * back, or an old version over a newer one. So before a replay, each
 * partition the letters came from is read once, from the earliest of their
 * offsets to its end, for later records of their keys.
 */
struct origin {
    int64_t letter; /* the letter's offset in the dead-letter topic */
    char *topic;
    int32_t partition;
    int64_t offset; /* the record's own offset in topic/partition */
    char *key;
    size_t key_len;
    int64_t later;      /* the offset of the key's last later record, or -1 */
    bool later_deletes; /* that record is a tombstone */
};

struct origins {
    const struct sk_dlq_filter *f;
    struct origin *v;
    size_t n, cap;
    size_t letters; /* letters matching the filter */
    int64_t last;   /* the offset of the last of them */
};

/* A sink's letter replayed as it was: a record with its topic, partition and offset. */
static bool as_it_was(const struct letter *l, const struct sk_dlq_filter *f)
{
    return l->topic[0] && !f->value && !l->truncated_from && l->partition >= 0 &&
           l->orig_offset >= 0 && l->msg->key;
}

static int collect_one(void *ctx, const struct letter *l)
{
    struct origins *o = ctx;
    o->letters++;
    o->last = l->offset;
    if (!as_it_was(l, o->f))
        return 0;
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 16;
        o->v = sk_realloc(o->v, o->cap * sizeof(*o->v));
    }
    o->v[o->n++] = (struct origin){.letter = l->offset,
                                   .topic = sk_strdup(l->topic),
                                   .partition = l->partition,
                                   .offset = l->orig_offset,
                                   .key = sk_strndup(l->msg->key, l->msg->key_len),
                                   .key_len = l->msg->key_len,
                                   .later = -1};
    return 0;
}

static int by_key(const void *a, size_t a_len, const void *b, size_t b_len)
{
    int c = memcmp(a, b, a_len < b_len ? a_len : b_len);
    return c ? c : (a_len > b_len) - (a_len < b_len);
}

/* Orders by partition, then key: a partition's letters are one run, its keys sorted. */
static int by_partition_key(const void *pa, const void *pb)
{
    const struct origin *a = pa, *b = pb;
    int c = strcmp(a->topic, b->topic);
    if (c)
        return c;
    if (a->partition != b->partition)
        return a->partition < b->partition ? -1 : 1;
    return by_key(a->key, a->key_len, b->key, b->key_len);
}

static bool same_partition(const struct origin *a, const struct origin *b)
{
    return a->partition == b->partition && strcmp(a->topic, b->topic) == 0;
}

static int by_letter(const void *pa, const void *pb)
{
    const struct origin *a = pa, *b = pb;
    return (a->letter > b->letter) - (a->letter < b->letter);
}

struct partition_run {
    struct origin *v; /* one partition's origins, sorted by key */
    size_t n;
};

/* Marks the letters of m's key whose record m comes after. */
static int later_one(void *ctx, const rd_kafka_message_t *m)
{
    struct partition_run *run = ctx;
    if (!m->key)
        return 0;
    size_t lo = 0, hi = run->n; /* the first origin of m's key */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (by_key(run->v[mid].key, run->v[mid].key_len, m->key, m->key_len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo;
         i < run->n && by_key(run->v[i].key, run->v[i].key_len, m->key, m->key_len) == 0; i++) {
        if (m->offset > run->v[i].offset) {
            run->v[i].later = m->offset;
            run->v[i].later_deletes = !m->payload;
        }
    }
    return 0;
}

/*
 * Reads each partition of o once, within 120 s for all of them; sorts o by
 * letter afterwards. 0, or -1 with err (then nothing may be replayed: a
 * letter not checked could undo a deletion).
 */
static int find_later(struct sk_kafka *k, struct origins *o, struct sk_error *err)
{
    if (o->n == 0) /* no letter to put back as it was (qsort takes no NULL array) */
        return 0;
    qsort(o->v, o->n, sizeof(*o->v), by_partition_key);
    int64_t deadline = sk_mono_ms() + 120000;
    for (size_t i = 0, j; i < o->n; i = j) {
        int64_t from = o->v[i].offset;
        for (j = i + 1; j < o->n && same_partition(&o->v[j], &o->v[i]); j++)
            if (o->v[j].offset < from)
                from = o->v[j].offset;
        int64_t left = deadline - sk_mono_ms();
        if (left <= 0)
            return sk_error_set(err, SK_ERR_RETRIABLE,
                                "checking the dead letters' topics for later records timed out");
        struct partition_run run = {.v = o->v + i, .n = j - i};
        if (sk_kafka_read_to_end(k, "skolsync-dlq-replay", o->v[i].topic, o->v[i].partition,
                                 from + 1, left, later_one, &run, err))
            return -1;
    }
    qsort(o->v, o->n, sizeof(*o->v), by_letter);
    return 0;
}

static void origins_free(struct origins *o)
{
    for (size_t i = 0; i < o->n; i++) {
        free(o->v[i].topic);
        free(o->v[i].key);
    }
    free(o->v);
}

struct replay {
    struct sk_kafka *k;
    const struct sk_dlq_filter *f;
    const struct origins *origins;
    rd_kafka_t *producer;
    size_t pending, failed, replayed, skipped, superseded;
    cJSON *report;
};

static void replay_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct replay *r = opaque;
    if (m->err)
        r->failed++;
    r->pending--;
}

static void skip(struct replay *r, const struct letter *l, const char *why)
{
    r->skipped++;
    if (r->report) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "offset", (double)l->offset);
        cJSON_AddStringToObject(o, "skipped", why);
        cJSON_AddItemToArray(r->report, o);
    }
}

/* The later record of a letter replayed as it was, or NULL. */
static const struct origin *superseded_by(const struct replay *r, const struct letter *l)
{
    if (!r->origins->n || !as_it_was(l, r->f))
        return NULL;
    struct origin want = {.letter = l->offset};
    const struct origin *o =
        bsearch(&want, r->origins->v, r->origins->n, sizeof(want), by_letter);
    return o && o->later >= 0 ? o : NULL;
}

static void supersede(struct replay *r, const struct letter *l, const struct origin *o)
{
    r->superseded++;
    if (!r->report)
        return;
    char why[256];
    snprintf(why, sizeof(why),
             "%s at offset %lld of partition %d holds its key's current state: "
             "not replayed over it",
             o->later_deletes ? "a later tombstone" : "a later record", (long long)o->later,
             (int)o->partition);
    cJSON *x = cJSON_CreateObject();
    cJSON_AddNumberToObject(x, "offset", (double)l->offset);
    cJSON_AddStringToObject(x, "superseded", why);
    cJSON_AddItemToArray(r->report, x);
}

static int replay_one(void *ctx, const struct letter *l)
{
    struct replay *r = ctx;
    const struct origin *later = superseded_by(r, l);
    if (later) {
        supersede(r, l, later);
        return 0;
    }
    const void *key = l->msg->key, *value = l->msg->payload;
    size_t key_len = l->msg->key_len, value_len = l->msg->len;
    char *topic = NULL;
    uint8_t *encoded = NULL;
    bool reencoded = false;
    char id[37];
    const struct sk_entity *e = l->entity[0] ? sk_entity_by_name(l->entity) : NULL;
    if (l->truncated_from && !r->f->value) {
        skip(r, l,
             "the value was truncated to fit the dead-letter topic: read the record again "
             "from its source, or replay it with a corrected value");
        return 0;
    }
    if (r->f->value && !e) {
        skip(r, l, "the dead letter names no entity type to encode the corrected value with");
        return 0;
    }
    if (l->topic[0] && !r->f->value) {
        topic = sk_strdup(l->topic); /* a record its target refused: as it was */
    } else if (e && (value || r->f->value)) {
        /* bad source input fixed since, or the operator's corrected value: encode it again */
        if (r->f->value) {
            value = r->f->value;
            value_len = r->f->value_len;
        }
        struct sk_error err = {0};
        int64_t mod;
        if (sk_codec_encode(e, value, value_len, &encoded, &value_len, id, &mod, &err)) {
            skip(r, l, err.msg);
            return 0;
        }
        topic = l->topic[0] ? sk_strdup(l->topic) : sk_kafka_topic_for(r->k, e->collection);
        key = id;
        key_len = strlen(id);
        value = encoded;
        reencoded = true;
    } else {
        skip(r, l, "no original topic and no entity type to encode the input with");
        return 0;
    }
    char observed[32];
    snprintf(observed, sizeof(observed), "%lld", (long long)sk_now_us());
    rd_kafka_headers_t *h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, "skolsync-source", -1, "dlq-replay", -1);
    rd_kafka_header_add(h, "skolsync-observed", -1, observed, -1);
    rd_kafka_header_add(h, "content-type", -1, "application/x-protobuf", -1);
    /* encoded here: what it now is; as it was: what it said it was */
    const char *schema = reencoded ? sk_entity_schema(e) : l->schema;
    if (schema[0])
        rd_kafka_header_add(h, SK_HEADER_SCHEMA, -1, schema, -1);
    rd_kafka_resp_err_t err =
        sk_produce(r->producer, topic, key, key_len, value, value_len, h, NULL);
    free(topic);
    free(encoded);
    if (err) {
        skip(r, l, rd_kafka_err2str(err));
        return 0;
    }
    r->pending++;
    r->replayed++;
    rd_kafka_poll(r->producer, 0);
    return 0;
}

long sk_dlq_replay(struct sk_kafka *k, const struct sk_dlq_filter *f, size_t *skipped,
                   size_t *superseded, cJSON *report, struct sk_error *err)
{
    if (f->value && (f->from_offset < 0 || f->from_offset != f->to_offset))
        return sk_error_set(err, SK_ERR_PERMANENT,
                            "a corrected value replaces one dead letter: select it by its offset");
    /* First the letters and the later records of their keys, then the
     * replay of those same letters: the ones written since are not checked,
     * so they wait for the next replay. */
    struct origins o = {.f = f, .last = -1};
    if (each_letter(k, f, collect_one, &o, err) || find_later(k, &o, err)) {
        origins_free(&o);
        return -1;
    }
    struct sk_dlq_filter checked = *f;
    checked.to_offset = o.last;
    struct replay r = {.k = k, .f = &checked, .origins = &o, .report = report};
    int rc = 0;
    if (o.letters) {
        r.producer = sk_kafka_producer_new(k, "skolsync-dlq-replay", replay_dr, &r, err);
        if (!r.producer) {
            origins_free(&o);
            return -1;
        }
        rc = each_letter(k, &checked, replay_one, &r, err);
        int64_t deadline = sk_mono_ms() + 60000;
        while (r.pending > 0 && sk_mono_ms() < deadline)
            rd_kafka_poll(r.producer, 100);
        rd_kafka_destroy(r.producer);
    }
    origins_free(&o);
    if (skipped)
        *skipped = r.skipped;
    if (superseded)
        *superseded = r.superseded;
    if (rc)
        return -1;
    if (r.pending || r.failed)
        return sk_error_set(err, SK_ERR_RETRIABLE, "%zu of %zu replayed record(s) not acknowledged",
                            r.pending + r.failed, r.replayed);
    return (long)r.replayed;
}

/* ---- writing dead letters ----------------------------------------------------------- */

static rd_kafka_headers_t *letter_headers(const struct sk_dead_letter *dl, size_t value_len)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(10);
    char num[32];
    rd_kafka_header_add(h, SK_DLQ_CONNECTOR, -1, dl->connector, -1);
    if (dl->where)
        rd_kafka_header_add(h, SK_DLQ_WHERE, -1, dl->where, -1);
    if (dl->topic)
        rd_kafka_header_add(h, SK_DLQ_TOPIC, -1, dl->topic, -1);
    if (dl->partition >= 0) {
        snprintf(num, sizeof(num), "%d", (int)dl->partition);
        rd_kafka_header_add(h, SK_DLQ_PARTITION, -1, num, -1);
        snprintf(num, sizeof(num), "%lld", (long long)dl->offset);
        rd_kafka_header_add(h, SK_DLQ_OFFSET, -1, num, -1);
    }
    rd_kafka_header_add(h, SK_DLQ_ERROR_CLASS, -1, sk_err_class_name(dl->err->cls), -1);
    rd_kafka_header_add(h, SK_DLQ_ERROR, -1, dl->err->msg, -1);
    if (dl->entity)
        rd_kafka_header_add(h, SK_DLQ_ENTITY, -1, dl->entity, -1);
    if (dl->schema)
        rd_kafka_header_add(h, SK_HEADER_SCHEMA, -1, dl->schema, -1);
    if (value_len < dl->value_len) {
        snprintf(num, sizeof(num), "%zu", dl->value_len);
        rd_kafka_header_add(h, SK_DLQ_TRUNCATED, -1, num, -1);
    }
    return h;
}

/*
 * How much of a value too large for the broker a dead letter keeps: enough
 * to tell the record, well inside the producer's own message.max.bytes (the
 * headers and the key come on top).
 */
static size_t truncated_size(rd_kafka_t *rk)
{
    char text[32];
    size_t size = sizeof(text);
    long long max = 1000000;
    if (rd_kafka_conf_get(rd_kafka_conf(rk), "message.max.bytes", text, &size) == RD_KAFKA_CONF_OK)
        max = atoll(text);
    return max / 2 < 65536 ? (size_t)(max / 2) : 65536;
}

int sk_dlq_produce(rd_kafka_t *rk, const char *topic, const struct sk_dead_letter *dl, void *opaque,
                   struct sk_error *err)
{
    size_t cap = truncated_size(rk);
    size_t len = dl->truncate && dl->value_len > cap ? cap : dl->value_len;
    for (;;) {
        rd_kafka_resp_err_t e = sk_produce(rk, topic, dl->key, dl->key_len, dl->value, len,
                                           letter_headers(dl, len), opaque);
        if (!e)
            return 0;
        if (!sk_produce_never(e) || len <= cap) {
            /* a dead letter that cannot be written is not dropped: the
             * caller tries again (or its connector fails) */
            sk_produce_error(err, e, topic);
            if (err && err->cls == SK_ERR_PERMANENT)
                err->cls = SK_ERR_RETRIABLE;
            return -1;
        }
        len = cap;
    }
}

struct sk_dlq_writer {
    rd_kafka_t *rk;
    const char *topic;
    size_t pending, failed;
    rd_kafka_resp_err_t first_err;
};

static void writer_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct sk_dlq_writer *w = opaque;
    if (m->err && !w->failed++)
        w->first_err = m->err;
    w->pending--;
}

struct sk_dlq_writer *sk_dlq_writer_new(struct sk_kafka *k, const char *connector,
                                        struct sk_error *err)
{
    struct sk_dlq_writer *w = sk_calloc(1, sizeof(*w));
    w->topic = sk_kafka_dlq_topic(k);
    char *cid = sk_name_client(sk_kafka_names(k), "dlq", connector);
    w->rk = sk_kafka_producer_new(k, cid, writer_dr, w, err);
    free(cid);
    if (!w->rk) {
        free(w);
        return NULL;
    }
    return w;
}

int sk_dlq_writer_send(struct sk_dlq_writer *w, const struct sk_dead_letter *dl,
                       struct sk_error *err)
{
    if (sk_dlq_produce(w->rk, w->topic, dl, NULL, err))
        return -1;
    w->pending++;
    return 0;
}

int sk_dlq_writer_wait(struct sk_dlq_writer *w, struct sk_error *err)
{
    while (w->pending > 0)
        rd_kafka_poll(w->rk, 100);
    size_t failed = w->failed;
    w->failed = 0;
    if (failed)
        return sk_error_set(err, SK_ERR_RETRIABLE, "%zu dead letter(s) not acknowledged: %s",
                            failed, rd_kafka_err2str(w->first_err));
    return 0;
}

void sk_dlq_writer_free(struct sk_dlq_writer *w)
{
    if (!w)
        return;
    rd_kafka_flush(w->rk, 5000);
    sk_kafka_destroy_within(w->rk, SK_KAFKA_DESTROY_MS, "dead-letter writer");
    free(w);
}

/* ---- the command ------------------------------------------------------------------ */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: skolsync dlq list   -c FILE [--connector NAME] [--from OFFSET] [--to OFFSET]\n"
            "                            [--limit N] [--show-data]\n"
            "       skolsync dlq replay -c FILE [--connector NAME] [--from OFFSET] [--to OFFSET]\n"
            "       skolsync dlq replay -c FILE --offset OFFSET --value-file FILE\n"
            "\n"
            "list prints the dead letters of <prefix>_dlq as JSON, one per line, with the\n"
            "personal fields of a source's input masked (--show-data shows them). replay\n"
            "re-injects them into their original topics (a sink's dead letter: the record\n"
            "as it was; a source's: its input encoded again, so fix the input first).\n"
            "A sink's dead letter whose topic holds a later record for its key (a deletion,\n"
            "a newer version) is superseded, not replayed: that record is the current state.\n"
            "--value-file replays the one dead letter at OFFSET with the corrected record\n"
            "(the entity's JSON) read from FILE instead, e.g. a line of a file already read.\n"
            "The running daemon answers when it is up (POST /api/v1/dlq and\n"
            "/api/v1/dlq/replay with admin.token: no Kafka or connector credentials\n"
            "needed here); otherwise, on a real broker, Kafka is read directly.\n");
}

/* Says on stderr that personal data was masked in the list printed. */
static void note_masked(bool masked)
{
    if (masked)
        fprintf(stderr, "skolsync: personal data in the dead letters is masked or withheld; "
                        "--show-data shows it\n");
}

/*
 * A skipped dead letter was not replayed: the operator must learn it from the
 * exit code too, or a script takes a partial replay for a complete one.
 */
static int replay_exit(size_t skipped)
{
    if (!skipped)
        return SK_EXIT_OK;
    fprintf(stderr, "skolsync: skipped %zu dead letter(s): not replayed\n", skipped);
    return SK_EXIT_RUNTIME;
}

/*
 * Whether the configuration's daemon runs and takes this configuration's
 * token (GET /health, quietly): then list and replay go through it, so an
 * admin shell needs neither the connectors' nor Kafka's credentials.
 */
static bool daemon_answers(const struct sk_admin_conf *admin)
{
    const char *colon = admin->listen ? strrchr(admin->listen, ':') : NULL;
    if (!admin->token || !*admin->token || !colon || strcmp(colon, ":0") == 0)
        return false;
    struct sk_api api;
    if (sk_api_open(admin, "skolsync", &api))
        return false;
    struct sk_api_answer a;
    long status = sk_api_call(&api, NULL, "GET", "/health", NULL, 2000, &a);
    sk_api_answer_free(&a);
    sk_api_close(&api);
    return status == 200;
}

/* Embedded broker, or a daemon that answers: the dead letters through its API. */
static int via_api(const struct sk_daemon_config *cfg, bool replay, const struct sk_dlq_filter *f)
{
    struct sk_api api;
    if (sk_api_open(&cfg->core.admin, "skolsync", &api))
        return SK_EXIT_CONFIG;
    cJSON *body = cJSON_CreateObject();
    if (f->connector)
        cJSON_AddStringToObject(body, "connector", f->connector);
    cJSON_AddNumberToObject(body, "from", (double)f->from_offset);
    cJSON_AddNumberToObject(body, "to", (double)f->to_offset);
    cJSON_AddNumberToObject(body, "limit", (double)f->limit);
    cJSON_AddBoolToObject(body, "show_data", f->show_data);
    if (f->value) {
        char *v = sk_strndup(f->value, f->value_len);
        cJSON_AddStringToObject(body, "value", v);
        free(v);
    }
    char *text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    const char *path = replay ? "/api/v1/dlq/replay" : "/api/v1/dlq";
    struct sk_api_answer answer;
    long status = sk_api_call(&api, "skolsync", "POST", path, text, 120000, &answer);
    free(text);
    int rc = status == 200 ? SK_EXIT_OK : SK_EXIT_RUNTIME;
    if (status) {
        printf("%s\n", answer.body);
        if (!replay)
            note_masked(strstr(answer.body, "\"masked\":true") ||
                        strstr(answer.body, "\"value_hidden\":"));
    }
    cJSON *j = replay ? sk_api_answer_json(&api, "skolsync", path, &answer) : NULL;
    const cJSON *skipped = cJSON_GetObjectItemCaseSensitive(j, "skipped");
    if (cJSON_IsNumber(skipped))
        rc = replay_exit((size_t)skipped->valuedouble);
    cJSON_Delete(j);
    sk_api_answer_free(&answer);
    sk_api_close(&api);
    return rc;
}

/* list or replay, once the command line is read */
static int dlq_command(const char *config, bool replay, const struct sk_dlq_filter *f)
{
    struct sk_daemon_config *cfg = sk_cli_config_load(config, true);
    if (!cfg)
        return SK_EXIT_CONFIG;
    sk_log_setup(SK_LOG_WARN, false);
    int rc = SK_EXIT_OK;
    bool embedded = !cfg->core.kafka.brokers || strcmp(cfg->core.kafka.brokers, "embedded") == 0;
    if (embedded || daemon_answers(&cfg->core.admin)) {
        /* through the running daemon: its Kafka credentials, not the shell's */
        rc = via_api(cfg, replay, f);
        sk_daemon_config_free(cfg);
        return rc;
    }
    struct sk_kafka *k = NULL;
    struct sk_error err = {0};
    if (sk_kafka_start(&cfg->core.kafka, NULL, 0, &k, &err)) {
        fprintf(stderr, "skolsync: %s\n", err.msg);
        sk_daemon_config_free(cfg);
        return SK_EXIT_RUNTIME;
    }
    if (replay) {
        size_t skipped = 0, superseded = 0;
        cJSON *report = cJSON_CreateArray();
        long n = sk_dlq_replay(k, f, &skipped, &superseded, report, &err);
        if (n < 0) {
            fprintf(stderr, "skolsync: %s\n", err.msg);
            rc = SK_EXIT_RUNTIME;
        } else {
            for (cJSON *x = report->child; x; x = x->next) {
                char *t = cJSON_PrintUnformatted(x);
                fprintf(stderr, "%s\n", t);
                free(t);
            }
            printf("replayed %ld dead letter(s), skipped %zu, superseded %zu\n", n, skipped,
                   superseded);
            rc = replay_exit(skipped);
        }
        cJSON_Delete(report);
    } else {
        cJSON *arr = sk_dlq_list(k, f, &err);
        if (!arr) {
            fprintf(stderr, "skolsync: %s\n", err.msg);
            rc = SK_EXIT_RUNTIME;
        } else {
            bool masked = false;
            for (cJSON *x = arr->child; x; x = x->next) {
                char *t = cJSON_PrintUnformatted(x);
                printf("%s\n", t);
                masked |=
                    cJSON_HasObjectItem(x, "masked") || cJSON_HasObjectItem(x, "value_hidden");
                free(t);
            }
            note_masked(masked);
            cJSON_Delete(arr);
        }
    }
    sk_kafka_destroy(k);
    sk_daemon_config_free(cfg);
    return rc;
}

int sk_cmd_dlq(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? SK_EXIT_USAGE : SK_EXIT_OK;
    }
    bool replay = strcmp(argv[1], "replay") == 0;
    if (!replay && strcmp(argv[1], "list") != 0) {
        usage(stderr);
        return SK_EXIT_USAGE;
    }
    const char *config = SK_DEFAULT_CONFIG;
    struct sk_dlq_filter f = {.from_offset = -1, .to_offset = -1};
    const char *value_file = NULL;
    static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                             {"connector", required_argument, NULL, 'n'},
                                             {"from", required_argument, NULL, 'f'},
                                             {"to", required_argument, NULL, 't'},
                                             {"limit", required_argument, NULL, 'l'},
                                             {"offset", required_argument, NULL, 'o'},
                                             {"value-file", required_argument, NULL, 'v'},
                                             {"show-data", no_argument, NULL, 's'},
                                             {"help", no_argument, NULL, 'h'},
                                             {0}};
    optind = 1;
    int c;
    while ((c = getopt_long(argc - 1, argv + 1, "c:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'n':
            f.connector = optarg;
            break;
        case 'f':
            f.from_offset = atoll(optarg);
            break;
        case 't':
            f.to_offset = atoll(optarg);
            break;
        case 'l':
            f.limit = (size_t)atoll(optarg);
            break;
        case 'o':
            f.from_offset = f.to_offset = atoll(optarg);
            break;
        case 'v':
            value_file = optarg;
            break;
        case 's':
            f.show_data = true;
            break;
        default: {
            int rc = sk_cli_help(c, usage);
            return rc < 0 ? SK_EXIT_OK : rc;
        }
        }
    }
    if (sk_cli_no_more_args("skolsync dlq", argc - 1, argv + 1))
        return SK_EXIT_USAGE;
    char *value = NULL;
    if (value_file) {
        if (!replay) {
            fprintf(stderr, "skolsync: --value-file goes with dlq replay\n");
            return SK_EXIT_USAGE;
        }
        if (!(value = sk_read_file(value_file, &f.value_len))) {
            fprintf(stderr, "skolsync: cannot read %s: %s\n", value_file, strerror(errno));
            return SK_EXIT_USAGE;
        }
        f.value = value;
    }
    int rc = dlq_command(config, replay, &f);
    free(value);
    return rc;
}
