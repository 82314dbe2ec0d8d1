/*
 * source_services.c: what the core offers sources beyond poll (connector.h
 * "services"): HTTP routes for webhooks, the live ids of an entity topic for
 * full reconciliation, and the held-deletions handshake with operators.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivers.h"
#include "log.h"
#include "util.h"

int sk_source_http_route(struct sk_source *self, const char *method, const char *path,
                         sk_http_handler fn, void *ctx, struct sk_error *err)
{
    if (!self->env->http)
        return sk_error_set(err, SK_ERR_FATAL,
                            "webhooks need the HTTP server, but admin.listen is off");
    return sk_http_route_owned(self->env->http, self, method, path, fn, ctx, err);
}

void sk_source_http_unroute(struct sk_source *self, void *ctx)
{
    if (self->env && self->env->http)
        sk_http_unroute(self->env->http, ctx);
}

int64_t sk_source_poll_interval_ms(const struct sk_source *self)
{
    return self->env ? self->env->settings.poll_interval_ms : 0;
}

void sk_source_set_held(struct sk_source *self, uint64_t held)
{
    if (self->env)
        atomic_store(&self->env->held, held);
}

bool sk_source_take_release(struct sk_source *self)
{
    return self->env && atomic_exchange(&self->env->release, false);
}

void sk_source_set_type_error(struct sk_source *self, const struct sk_entity *e, long status,
                              const char *reason)
{
    int i = sk_entity_index(e);
    if (!self->env || i < 0)
        return;
    struct sk_type_health *h = &self->env->types[i];
    pthread_mutex_lock(&self->env->runner.mu);
    h->failing = reason != NULL;
    h->status = reason ? status : 0;
    snprintf(h->reason, sizeof(h->reason), "%s", reason ? reason : "");
    if (reason)
        h->errors++;
    pthread_mutex_unlock(&self->env->runner.mu);
}

void sk_source_set_type_skipped(struct sk_source *self, const struct sk_entity *e, bool skipped)
{
    int i = sk_entity_index(e);
    if (!self->env || i < 0)
        return;
    pthread_mutex_lock(&self->env->runner.mu);
    self->env->types[i].skipped = skipped;
    pthread_mutex_unlock(&self->env->runner.mu);
}

/* Adds one to the counter at offset of type e's health. */
static void count_type(struct sk_source *self, const struct sk_entity *e, size_t offset)
{
    int i = sk_entity_index(e);
    if (!self->env || i < 0)
        return;
    pthread_mutex_lock(&self->env->runner.mu);
    (*(uint64_t *)((char *)&self->env->types[i] + offset))++;
    pthread_mutex_unlock(&self->env->runner.mu);
}

void sk_source_count_bad_again(struct sk_source *self, const struct sk_entity *e)
{
    count_type(self, e, offsetof(struct sk_type_health, bad_again));
}

void sk_source_count_incomplete(struct sk_source *self, const struct sk_entity *e)
{
    count_type(self, e, offsetof(struct sk_type_health, incomplete));
}

/* ---- live ids ------------------------------------------------------------- */

/* key -> live, open addressing; keys are 36-character UUIDs. */
struct idmap {
    char (*keys)[37];
    bool *live;
    size_t cap, n;
};

static size_t idmap_slot(const struct idmap *m, const char *key)
{
    size_t h = 1469598103934665603ULL;
    for (const char *p = key; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    size_t i = h & (m->cap - 1);
    while (m->keys[i][0] && strcmp(m->keys[i], key) != 0)
        i = (i + 1) & (m->cap - 1);
    return i;
}

static void idmap_put(struct idmap *m, const char *key, bool live)
{
    if ((m->n + 1) * 2 > m->cap) {
        struct idmap big = {.cap = m->cap ? m->cap * 2 : 4096};
        big.keys = sk_calloc(big.cap, sizeof(*big.keys));
        big.live = sk_calloc(big.cap, sizeof(*big.live));
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i][0])
                idmap_put(&big, m->keys[i], m->live[i]);
        free(m->keys);
        free(m->live);
        *m = big;
    }
    size_t i = idmap_slot(m, key);
    if (!m->keys[i][0]) {
        memcpy(m->keys[i], key, 37);
        m->n++;
    }
    m->live[i] = live;
}

int sk_source_live_ids(struct sk_source *self, const struct sk_entity *e,
                       void (*fn)(void *ctx, const char *id), void *ctx, struct sk_error *err)
{
    struct sk_kafka *k = self->env->kafka;
    char *topic = sk_kafka_topic_for(k, e->collection);
    char *cid = sk_name_client(sk_kafka_names(k), "live", self->name);
    int rc = -1;
    struct idmap map = {0};
    rd_kafka_t *rk = sk_kafka_reader_new(k, cid, err);
    free(cid);
    if (!rk)
        goto out;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t me = rd_kafka_metadata(rk, 0, rkt, &md, 15000);
    rd_kafka_topic_destroy(rkt);
    if (me || md->topic_cnt != 1 || md->topics[0].err) {
        sk_error_set(err, SK_ERR_RETRIABLE, "live ids: metadata of %s: %s", topic,
                     rd_kafka_err2str(me ? me : md->topics[0].err));
        if (md)
            rd_kafka_metadata_destroy(md);
        goto out;
    }
    int parts = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts);
    bool *done = sk_calloc((size_t)parts + 1, sizeof(bool));
    int open_parts = 0;
    for (int p = 0; p < parts; p++) {
        int64_t lo = 0, hi = 0;
        if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 15000) == 0 && hi > lo) {
            rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
            open_parts++;
        } else {
            done[p] = true; /* empty: nothing to read */
        }
    }
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    int64_t deadline = sk_mono_ms() + 300000;
    while (open_parts > 0) {
        if (sk_mono_ms() > deadline || atomic_load(&self->env->runner.stop)) {
            sk_error_set(err, SK_ERR_RETRIABLE, "live ids: reading %s did not finish", topic);
            free(done);
            goto out;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (m->partition >= 0 && m->partition < parts && !done[m->partition]) {
                done[m->partition] = true;
                open_parts--;
            }
        } else if (m->err) {
            sk_error_set(err, SK_ERR_RETRIABLE, "live ids: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            free(done);
            goto out;
        } else if (m->key_len == 36) {
            char key[37];
            memcpy(key, m->key, 36);
            key[36] = '\0';
            idmap_put(&map, key, m->payload != NULL);
        }
        rd_kafka_message_destroy(m);
    }
    free(done);
    for (size_t i = 0; i < map.cap; i++)
        if (map.keys[i][0] && map.live[i])
            fn(ctx, map.keys[i]);
    rc = 0;
out:
    if (rk) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    free(map.keys);
    free(map.live);
    free(topic);
    return rc;
}
