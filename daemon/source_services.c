/*
 * source_services.c: what the core offers sources beyond poll (connector.h
 * "services"): HTTP routes for webhooks, the live ids of an entity topic for
 * full reconciliation, the held deletions and operators' release requests.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "drivers.h"
#include "idmap.h"
#include "log.h"
#include "model.h"
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

static bool release_all(const struct sk_release *r)
{
    return !r->reject && !r->n_ids && !r->types;
}

/* For a source without a held list: a waiting "release all" ends here. */
bool sk_source_take_release(struct sk_source *self)
{
    struct sk_source_env *env = self->env;
    if (!env)
        return false;
    pthread_mutex_lock(&env->runner.mu);
    bool taken = false;
    for (size_t i = 0; i < env->n_releases; i++) {
        if (release_all(env->releases[i]))
            taken = true;
        sk_release_free(env->releases[i]); /* a selective one cannot be queued for it */
    }
    env->n_releases = 0;
    pthread_mutex_unlock(&env->runner.mu);
    return taken;
}

/* ---- held lists and release requests ----------------------------------------- */

void sk_source_set_held_list(struct sk_source *self, uint64_t held, const char *json)
{
    struct sk_source_env *env = self->env;
    if (!env)
        return;
    char *copy = sk_strdup(json ? json : "{}");
    pthread_mutex_lock(&env->runner.mu);
    free(env->held_json);
    env->held_json = copy;
    pthread_mutex_unlock(&env->runner.mu);
    atomic_store(&env->held, held);
}

struct sk_release *sk_source_take_release_request(struct sk_source *self)
{
    struct sk_source_env *env = self->env;
    if (!env)
        return NULL;
    struct sk_release *r = NULL;
    pthread_mutex_lock(&env->runner.mu);
    if (env->n_releases) {
        r = env->releases[0];
        memmove(env->releases, env->releases + 1, --env->n_releases * sizeof(*env->releases));
    }
    pthread_mutex_unlock(&env->runner.mu);
    return r;
}

void sk_source_release_done(struct sk_source *self, uint64_t seq)
{
    if (self->env && seq > atomic_load(&self->env->release_done))
        atomic_store(&self->env->release_done, seq);
}

cJSON *sk_source_held_doc(struct sk_source_env *env)
{
    pthread_mutex_lock(&env->runner.mu);
    cJSON *types = env->held_json ? cJSON_Parse(env->held_json) : NULL;
    pthread_mutex_unlock(&env->runner.mu);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "held", (double)atomic_load(&env->held));
    cJSON_AddItemToObject(o, "types", types ? types : cJSON_CreateNull());
    return o;
}

uint64_t sk_source_release_queue(struct sk_source_env *env, struct sk_release *r, char *msg,
                                 size_t size)
{
    uint64_t seq = 0;
    pthread_mutex_lock(&env->runner.mu);
    if (!env->held_json && !release_all(r)) {
        /* A source without a held list releases all or nothing. */
        snprintf(msg, size, "this source releases all its held deletions or none");
    } else if (env->n_releases == SK_RELEASES_MAX) {
        snprintf(msg, size, "%d release requests wait already", SK_RELEASES_MAX);
    } else if (!env->held_json && atomic_load(&env->held) == 0) {
        seq = ++env->release_seq; /* nothing to release: in effect now */
    } else {
        r->seq = seq = ++env->release_seq;
        env->releases[env->n_releases++] = r;
        r = NULL;
    }
    pthread_mutex_unlock(&env->runner.mu);
    sk_release_free(r);
    return seq;
}

bool sk_source_release_settled(struct sk_source_env *env, uint64_t seq)
{
    pthread_mutex_lock(&env->runner.mu);
    bool listed = env->held_json != NULL;
    pthread_mutex_unlock(&env->runner.mu);
    if (listed)
        return atomic_load(&env->release_done) >= seq;
    return atomic_load(&env->held) == 0; /* published, or none were held */
}

void sk_source_env_clear(struct sk_source_env *env)
{
    for (size_t i = 0; i < env->n_releases; i++)
        sk_release_free(env->releases[i]);
    env->n_releases = 0;
    free(env->held_json);
    env->held_json = NULL;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* The "ids" list of a release body into r (sorted, no duplicates); -1 with msg. */
static int parse_ids(const cJSON *ids, struct sk_release *r, char *msg, size_t size)
{
    if (!cJSON_IsArray(ids) || !cJSON_GetArraySize(ids)) {
        snprintf(msg, size, "ids: expected a non-empty list of UUIDs");
        return -1;
    }
    r->ids = sk_calloc((size_t)cJSON_GetArraySize(ids), sizeof(*r->ids));
    const cJSON *x;
    cJSON_ArrayForEach(x, ids)
    {
        if (!cJSON_IsString(x) || sk_uuid_normalize(x->valuestring, r->ids[r->n_ids]) != 0) {
            snprintf(msg, size, "ids: %.60s is not a UUID",
                     cJSON_IsString(x) ? x->valuestring : "a value");
            return -1;
        }
        r->n_ids++;
    }
    qsort(r->ids, r->n_ids, sizeof(*r->ids), cmp_id);
    return 0;
}

/* The "types" list (entity names or collections) into r->types; -1 with msg. */
static int parse_types(const cJSON *types, struct sk_release *r, char *msg, size_t size)
{
    if (!cJSON_IsArray(types) || !cJSON_GetArraySize(types)) {
        snprintf(msg, size, "types: expected a non-empty list of entity types");
        return -1;
    }
    const cJSON *x;
    cJSON_ArrayForEach(x, types)
    {
        const struct sk_entity *e = NULL;
        if (cJSON_IsString(x) && !(e = sk_entity_by_name(x->valuestring)))
            e = sk_entity_by_collection(x->valuestring);
        if (!e) {
            snprintf(msg, size, "types: %.60s is not an entity type (Person or persons)",
                     cJSON_IsString(x) ? x->valuestring : "a value");
            return -1;
        }
        r->types |= 1u << sk_entity_index(e);
    }
    return 0;
}

struct sk_release *sk_release_parse(const char *body, size_t len, char *msg, size_t size)
{
    struct sk_release *r = sk_calloc(1, sizeof(*r));
    cJSON *doc = len ? cJSON_ParseWithLength(body, len) : NULL;
    const cJSON *x;
    int rc = 0;
    if (len && !cJSON_IsObject(doc)) {
        snprintf(msg, size,
                 "expected a JSON object {\"ids\": [...], \"types\": [...], "
                 "\"reject\": true}");
        rc = -1;
    }
    cJSON_ArrayForEach(x, doc)
    {
        if (rc)
            break;
        if (strcmp(x->string, "ids") == 0)
            rc = parse_ids(x, r, msg, size);
        else if (strcmp(x->string, "types") == 0)
            rc = parse_types(x, r, msg, size);
        else if (strcmp(x->string, "reject") == 0 && cJSON_IsBool(x))
            r->reject = cJSON_IsTrue(x);
        else {
            snprintf(msg, size, "unknown key %.60s (expected ids, types or reject)", x->string);
            rc = -1;
        }
    }
    cJSON_Delete(doc);
    if (rc) {
        sk_release_free(r);
        return NULL;
    }
    return r;
}

void sk_source_set_type_error(struct sk_source *self, const struct sk_entity *e, long status,
                              const char *reason)
{
    int i = e ? sk_entity_index(e) : SK_ENTITY_COUNT;
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

/* The ids whose latest record is not a tombstone (val 1). */
struct live_each {
    void (*fn)(void *ctx, const char *id);
    void *ctx;
};

static void live_one(void *ctx, const char *id, int64_t live)
{
    struct live_each *l = ctx;
    if (live)
        l->fn(l->ctx, id);
}

int sk_source_live_ids(struct sk_source *self, const struct sk_entity *e,
                       void (*fn)(void *ctx, const char *id), void *ctx, struct sk_error *err)
{
    struct sk_kafka *k = self->env->kafka;
    char *topic = sk_kafka_topic_for(k, e->collection);
    char *cid = sk_name_client(sk_kafka_names(k), "live", self->name);
    int rc = -1;
    struct sk_idmap map = {0};
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
        } else if (m->key_len == 36) { /* an entity's (snapshot markers are not) */
            char key[37];
            memcpy(key, m->key, 36);
            key[36] = '\0';
            sk_idmap_put(&map, key, m->payload != NULL);
        }
        rd_kafka_message_destroy(m);
    }
    free(done);
    struct live_each each = {fn, ctx};
    sk_idmap_each(&map, live_one, &each);
    rc = 0;
out:
    if (rk) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    sk_idmap_free(&map);
    free(topic);
    return rc;
}
