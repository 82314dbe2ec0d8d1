/*
 * drivers.h: the source and sink drivers: the only code that moves records
 * between connectors and Kafka, and so the only code that implements the
 * delivery rules of docs/architecture.md §4. Every connector inherits them.
 */
#ifndef SK_DRIVERS_H
#define SK_DRIVERS_H

#include "connector.h"
#include "http.h"
#include "kafka.h"
#include "policy.h"
#include "privacy.h"
#include "runner.h"

/* Settings every source has, whatever its type (validated by the core). */
struct sk_source_settings {
    struct sk_failure_policy policy; /* first: SK_FAILURE_POLICY_OPTIONS rows point here */
    char *type;
    int64_t poll_interval_ms;
};

/* Settings every sink has. */
struct sk_sink_settings {
    struct sk_failure_policy policy; /* first: SK_FAILURE_POLICY_OPTIONS rows point here */
    char *type;
    struct sk_strlist entities; /* names or collections; empty = all */
    int64_t batch_size;
    int64_t batch_linger_ms;
    struct sk_strlist drop_fields; /* empty: the sink type's default */
    char *protected_identities;    /* NULL: the sink type's default */
    bool snapshot_sweep;           /* delete what a complete snapshot lacked (§4.6) */
    int64_t snapshot_sweep_limit;  /* most a sweep deletes: percent of the type's rows */
    int64_t fetch_stall_ms;        /* behind, nothing fetched this long: renew (0: never) */
};

extern const struct sk_option sk_source_settings_options[];
extern const struct sk_option sk_sink_settings_options[];

/* One entity type of a source (sk_source_set_type_error); guarded by runner.mu. */
struct sk_type_health {
    bool failing, skipped;
    long status;
    char reason[160];
    uint64_t errors;
    uint64_t bad_again;  /* records dead-lettered before, seen again unchanged */
    uint64_t incomplete; /* records published lacking a required field (lenient) */
};

/* The name the API and metrics give types[k] of a source. */
static inline const char *sk_type_health_name(int k)
{
    return k < SK_ENTITY_COUNT ? sk_entities[k]->collection : "deletedEntities";
}

#define SK_RELEASES_MAX 16 /* release requests waiting for the source at most */

struct sk_source_env {
    struct sk_runner runner; /* first: a runner pointer is an env pointer (daemon_internal.h) */
    struct sk_source source;
    struct sk_source_settings settings;
    struct sk_kafka *kafka;
    struct sk_http *http;      /* the admin HTTP server, NULL if off */
    atomic_uint_fast64_t held; /* deletions held by the source's delete guard */
    /* Operators' release requests, queued under runner.mu, numbered (a
     * source without a held list takes "release all" only). */
    struct sk_release *releases[SK_RELEASES_MAX];
    size_t n_releases;
    uint64_t release_seq;              /* the last number handed out (runner.mu) */
    atomic_uint_fast64_t release_done; /* the last request whose effect is stored */
    char *held_json;                   /* the source's held list (runner.mu), or NULL */
    /* per entity type, then [SK_ENTITY_COUNT]: the source's deletions
       (sk_source_set_type_error with no type; sk_type_health_name) */
    struct sk_type_health types[SK_ENTITY_COUNT + 1];
};

struct sk_sink_env {
    struct sk_runner runner; /* first, as above */
    struct sk_sink sink;
    struct sk_sink_settings settings;
    struct sk_kafka *kafka;
    char **topics;             /* one per entity, "<prefix><collection>" */
    char *group;               /* its consumer group (names.h) */
    struct sk_privacy privacy; /* resolved from settings and the type's defaults */
    bool once;                 /* --once: the run ends when the sink is drained */
    size_t prefetch_kbytes;    /* its consumer's share of the daemon's prefetch budget */
    /* The node's shared consumer (sink_hub.h) for a node-local sink, unless
     * kafka.shared_consumer is false; NULL: a consumer and group of its own. */
    struct sk_sink_hubs *hubs;
    bool open;                 /* runner.mu: open, so /metrics may ask it (ops->metrics) */
};

/*
 * What a sink's consumer may fetch ahead of it (queued.max.messages.kbytes
 * and fetch.max.bytes), when the daemon runs n_sinks sinks: 8 MiB each up to
 * eight sinks, then an equal share of 64 MiB, never under 1 MiB. With a
 * consumer per sink, 100 sinks reading one topic held 100 copies of it
 * ahead of their targets (bench/analysis.md, "Many connectors").
 */
size_t sk_sink_prefetch_kbytes(size_t n_sinks);

/*
 * A record's value as every sink gets it: unpacked, turned into JSON, the
 * sink's privacy policy applied, meta.modified read, and the document printed
 * exactly (connector.h, struct sk_record) by appending it and a NUL to json.
 * Returns 0 with r->doc = *doc (the caller frees it), r->modified_us and
 * r->json_len set; r->json is left to the caller, to point into json once it
 * stops growing. 1: the policy turned the record into a delete (r->value
 * NULL, nothing printed). -1 with err (PERMANENT): the value does not unpack.
 */
struct sk_buf;
int sk_sink_decode(const struct sk_privacy *privacy, struct sk_record *r, cJSON **doc,
                   struct sk_buf *json, struct sk_error *err);

/*
 * A batch's decode (sk_sink_decode of recs[todo[k]] for k < n_todo), each
 * record's text in json[0] or json[1] at json_at[i] and recs[i].json set once
 * both stop growing. A record that does not unpack gets rejected[i] and
 * outs[i] REJECTED with its error. From SK_DECODE_SPLIT_MIN records on, and
 * when one of the daemon's decode helpers is free (one fewer than the CPUs
 * online), the second half is decoded on a helper thread while this one
 * decodes the first: a sink whose target waits on the driver between
 * batches (PostgreSQL idles while the next batch decodes) gets the second
 * core (bench/analysis.md, "Sinks"). Returns the threads used, 1 or 2.
 */
#define SK_DECODE_SPLIT_MIN 64
int sk_sink_decode_batch(const struct sk_privacy *privacy, struct sk_record *recs, cJSON **docs,
                         struct sk_outcome *outs, bool *rejected, const size_t *todo,
                         size_t n_todo, struct sk_buf json[2], size_t *json_at);

/* The effective privacy policy of a sink: its settings over its type's defaults. */
void sk_sink_privacy_resolve(const struct sk_sink_settings *s, const struct sk_sink_ops *ops,
                             struct sk_privacy *out);
void sk_sink_privacy_free(struct sk_privacy *p);

/*
 * Held deletions and release requests (source_services.c), for the admin
 * API. sk_release_parse: a POST .../release body ("" or {}: release all;
 * {"ids": [...]}, {"types": [...]}, {"reject": true}, combinable) as a
 * request (caller frees), or NULL with msg. sk_source_release_queue: hands
 * it to the source (taking it) and returns its number; 0 when the queue is
 * full or the source takes no such request (r is freed; msg says why).
 * sk_source_held_doc: {"held": N, "types": the list as the source last
 * stored it, null when it keeps none} (caller deletes it). sk_source_env_clear: frees what the
 * env holds of these.
 */
struct sk_release *sk_release_parse(const char *body, size_t len, char *msg, size_t size);
uint64_t sk_source_release_queue(struct sk_source_env *env, struct sk_release *r, char *msg,
                                 size_t size);
cJSON *sk_source_held_doc(struct sk_source_env *env);
/* Whether request seq is in effect (a source without a held list: none held). */
bool sk_source_release_settled(struct sk_source_env *env, uint64_t seq);
void sk_source_env_clear(struct sk_source_env *env);

/* Start the connector (already open): a sink on a thread of its own, a
 * source as a task of the sources' worker pool (source_driver.c). 0 or -1. */
int sk_source_driver_start(struct sk_source_env *env);
int sk_sink_driver_start(struct sk_sink_env *env);
/* Ask to stop (returns at once); join with sk_*_driver_join. */
void sk_driver_request_stop(struct sk_runner *r);
void sk_driver_join(struct sk_runner *r);
/* Joins unless deadline (sk_mono_ms) passes first; true if joined. */
bool sk_driver_join_until(struct sk_runner *r, int64_t deadline_ms);
/* The sources' pool: a new worker when every one is stuck in a long step
 * while a source waits (the supervisor's tick); its workers end (after the
 * last source stopped). */
void sk_source_pool_watch(void);
void sk_source_pool_stop(void);

/*
 * Cursor store: the last cursor of source `name` in `<prefix>_cursors`, read
 * to its end with read_committed. out->data NULL if there is none. The caller
 * frees out->data. 0 or -1 with err (RETRIABLE).
 */
int sk_cursor_store_load(struct sk_kafka *k, const char *name, struct sk_cursor *out,
                         struct sk_error *err);

#endif
