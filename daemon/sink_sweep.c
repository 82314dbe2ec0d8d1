/*
 * sink_sweep.c: a sink's side of snapshots (snapshot.h, docs/architecture.md
 * §4.6): it follows the markers in the records it applies and, once it has
 * read every partition of a type's topic from a snapshot's begin to its end,
 * deletes from its target what the snapshot lacked, through its own apply.
 *
 * Owns: which keys a snapshot contained (per entity type, in memory), the
 * decision to sweep, and the deletions. Must never: sweep a snapshot it saw
 * only a part of (a partition joined late, revoked, or restarted in the
 * middle), one another source wrote into, one that would delete more than
 * the sink's limit, or delete a key applied after the snapshot began.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "log.h"
#include "model.h"
#include "sink_internal.h"
#include "snapshot.h"
#include "util.h"

#define SWEEP_ATTEMPTS 5
#define SWEEP_ALWAYS 5 /* so few deletions are never over the limit */

void sink_snapshots_reset(struct sink_run *run)
{
    for (size_t i = 0; run->snaps && i < run->env->sink.n_entities; i++)
        sk_snapshot_track_reset(&run->snaps[i]);
}

void sink_snapshots_free(struct sink_run *run)
{
    for (size_t i = 0; run->snaps && i < run->env->sink.n_entities; i++)
        sk_snapshot_track_free(&run->snaps[i]);
    free(run->snaps);
    run->snaps = NULL;
}

static ptrdiff_t entity_slot(const struct sink_run *run, const char *topic)
{
    for (size_t i = 0; i < run->env->sink.n_entities; i++)
        if (strcmp(run->env->topics[i], topic) == 0)
            return (ptrdiff_t)i;
    return -1;
}

/* The target's keys the snapshot lacked. */
struct stale {
    const struct sk_snapshot_marker *marker;
    struct sk_idset *listed;
    char (*keys)[37];
    size_t n, cap, held;
};

/* Whether doc's window field (a date-time) lies within the marker's window. */
static bool in_window(const struct sk_snapshot_marker *m, const char *doc)
{
    cJSON *d = doc ? cJSON_Parse(doc) : NULL;
    const cJSON *v = d ? cJSON_GetObjectItemCaseSensitive(d, m->field) : NULL;
    int64_t us;
    bool in = cJSON_IsString(v) && sk_time_parse_us(v->valuestring, &us) == 0 && us >= m->from_us &&
              us <= m->to_us;
    cJSON_Delete(d);
    return in;
}

static void collect(void *ctx, const char *key, const char *doc)
{
    struct stale *s = ctx;
    char id[37];
    if (sk_uuid_normalize(key, id) != 0)
        return; /* not an entity key: nothing a tombstone could name */
    /* A windowed listing knows nothing of what lies outside its window. */
    if (s->marker->field[0] && !in_window(s->marker, doc))
        return;
    s->held++;
    if (sk_idset_has(s->listed, id))
        return;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->keys = sk_realloc(s->keys, s->cap * sizeof(*s->keys));
    }
    memcpy(s->keys[s->n++], id, 37);
}

/*
 * Applies tombstones for keys[0..n) of entity e. They carry the position of
 * the batch's last record on (topic, partition), so a sink that stores
 * offsets with what it applies stores the one it stored already. 0, or -1
 * with err once the attempts are spent.
 */
static int apply_deletes(struct sink_run *run, const struct sk_entity *e, const char *topic,
                         int32_t partition, int64_t offset, char (*keys)[37], size_t n,
                         struct sk_error *err)
{
    struct sk_sink_env *env = run->env;
    size_t chunk = (size_t)env->settings.batch_size;
    struct sk_record *recs = sk_calloc(chunk, sizeof(*recs));
    struct sk_outcome *outs = sk_calloc(chunk, sizeof(*outs));
    int rc = 0;
    for (size_t from = 0; rc == 0 && from < n; from += chunk) {
        size_t k = n - from < chunk ? n - from : chunk;
        for (size_t i = 0; i < k; i++) {
            memset(&recs[i], 0, sizeof(recs[i]));
            recs[i].entity = e;
            memcpy(recs[i].key, keys[from + i], 37);
            recs[i].observed_us = sk_now_us();
            recs[i].topic = topic;
            recs[i].partition = partition;
            recs[i].offset = offset;
            recs[i].modified_us = INT64_MIN;
        }
        for (int attempt = 1;; attempt++) {
            sk_error_clear(err);
            for (size_t i = 0; i < k; i++)
                outs[i] = (struct sk_outcome){.kind = SK_APPLIED};
            rc = env->sink.ops->apply(&env->sink, recs, k, outs, err);
            for (size_t i = 0; rc == 0 && i < k; i++)
                if (outs[i].kind == SK_RETRY) {
                    *err = outs[i].err;
                    rc = -1;
                }
            for (size_t i = 0; rc == 0 && i < k; i++)
                if (outs[i].kind == SK_REJECTED)
                    sk_warn(env->runner.name, "snapshot sweep: deleting %s %s refused: %s", e->name,
                            recs[i].key, outs[i].err.msg);
            if (rc == 0 || err->cls == SK_ERR_FATAL || attempt == SWEEP_ATTEMPTS ||
                atomic_load(&env->runner.stop))
                break;
            sleep(1);
        }
        if (rc == 0)
            atomic_fetch_add(&env->runner.swept, k);
    }
    free(recs);
    free(outs);
    return rc;
}

/* The batch's last offset on (topic, partition): every record up to it is applied. */
static int64_t last_offset(const struct sink_run *run, const char *topic, int32_t partition)
{
    int64_t last = -1;
    for (size_t i = 0; i < run->n_pending; i++) {
        const rd_kafka_message_t *m = run->pending[i];
        if (m->partition == partition && m->offset > last &&
            strcmp(rd_kafka_topic_name(m->rkt), topic) == 0)
            last = m->offset;
    }
    return last;
}

static void sweep(struct sink_run *run, size_t slot, int32_t partition)
{
    struct sk_sink_env *env = run->env;
    struct sk_runner *r = &env->runner;
    struct sk_snapshot_track *t = &run->snaps[slot];
    const struct sk_entity *e = env->sink.entities[slot];
    const char *topic = env->topics[slot];
    if (t->other_source) {
        sk_warn(r->name,
                "snapshot %s of %s not swept: another source wrote to %s while it was listed",
                t->marker.id, e->collection, topic);
        atomic_fetch_add(&r->sweeps_skipped, 1);
        return;
    }
    struct stale s = {.marker = &t->marker, .listed = &t->keys};
    struct sk_error err = {0};
    /* Only a windowed snapshot looks into the documents (collect). */
    bool docs = t->marker.field[0] || !env->sink.ops->keys_only;
    if ((docs ? env->sink.ops->keys : env->sink.ops->keys_only)(&env->sink, e, collect, &s, &err)) {
        sk_error_log(r->name, "snapshot %s of %s not swept: reading the target: %s", t->marker.id,
                     e->collection, err.msg);
        atomic_fetch_add(&r->sweeps_skipped, 1);
        free(s.keys);
        return;
    }
    if (s.n > SWEEP_ALWAYS && s.n * 100 > (size_t)env->settings.snapshot_sweep_limit * s.held) {
        sk_error_log(r->name,
                     "snapshot %s of %s not swept: it lacks %zu of the %zu %s in the target, more "
                     "than snapshot_sweep_limit (%lld %%); nothing deleted",
                     t->marker.id, e->collection, s.n, s.held, e->collection,
                     (long long)env->settings.snapshot_sweep_limit);
        atomic_fetch_add(&r->sweeps_skipped, 1);
        free(s.keys);
        return;
    }
    if (s.n && apply_deletes(run, e, topic, partition, last_offset(run, topic, partition), s.keys,
                             s.n, &err)) {
        sk_error_log(r->name,
                     "snapshot %s of %s: sweep failed: %s; the next complete snapshot sweeps again",
                     t->marker.id, e->collection, err.msg);
        atomic_fetch_add(&r->sweeps_skipped, 1);
    } else {
        sk_log(s.n ? SK_LOG_INFO : SK_LOG_DEBUG, r->name,
               "snapshot %s of %s: %zu of %zu deleted (gone from the source system)", t->marker.id,
               e->collection, s.n, s.held);
    }
    free(s.keys);
}

/* sink_internal.h */
void sink_snapshots_batch(struct sink_run *run)
{
    struct sk_sink_env *env = run->env;
    size_t n_ent = env->sink.n_entities;
    if (!env->settings.snapshot_sweep || !env->sink.ops->keys)
        return;
    /* The common batch: no marker in it and no snapshot under way. */
    bool any = false;
    for (size_t i = 0; i < run->n_pending && !any; i++)
        any = run->control[i];
    for (size_t i = 0; run->snaps && i < n_ent && !any; i++)
        any = run->snaps[i].active;
    if (!any)
        return;
    if (!run->snaps)
        run->snaps = sk_calloc(n_ent, sizeof(*run->snaps));
    /* A completed snapshot is swept after the whole batch is followed: the
     * keys of records after its last end marker are in the target too. */
    bool *due = sk_calloc(n_ent, sizeof(*due));
    char(*due_id)[64] = sk_calloc(n_ent, sizeof(*due_id));
    int32_t *due_part = sk_calloc(n_ent, sizeof(*due_part));
    for (size_t i = 0; i < run->n_pending; i++) {
        const rd_kafka_message_t *m = run->pending[i];
        ptrdiff_t slot = entity_slot(run, rd_kafka_topic_name(m->rkt));
        if (slot < 0)
            continue;
        struct sk_snapshot_track *t = &run->snaps[slot];
        if (!run->control[i]) {
            if (!t->active)
                continue; /* the common case: no snapshot under way */
            char source[128];
            bool has = sk_kafka_header(m, "skolsync-source", source, sizeof(source)) == 0;
            sk_snapshot_track_record(t, m->partition, run->recs[i].key, has ? source : NULL);
            continue;
        }
        struct sk_snapshot_marker mk;
        if (sk_snapshot_marker_read(m, &mk) != 1)
            continue;
        if (mk.phase == SK_SNAPSHOT_BEGIN) {
            sk_snapshot_track_begin(t, &mk, m->partition);
        } else if (sk_snapshot_track_end(t, &mk, m->partition)) {
            due[slot] = true;
            memcpy(due_id[slot], mk.id, sizeof(mk.id));
            due_part[slot] = m->partition;
        }
    }
    for (size_t slot = 0; slot < n_ent; slot++) {
        struct sk_snapshot_track *t = &run->snaps[slot];
        if (!due[slot] || !t->active || strcmp(t->marker.id, due_id[slot]) != 0)
            continue;
        sweep(run, slot, due_part[slot]);
        /* free, not clear: the key set of a 100k snapshot is MBs, and the
         * next snapshot may be hours away */
        sk_snapshot_track_free(t);
    }
    free(due);
    free(due_id);
    free(due_part);
}
