/*
 * connector.h: the interface between skolsync's core and its connectors.
 *
 * A connector knows one foreign system and nothing about Kafka. It is one
 * folder under connectors/ with one `const` ops table and one option table;
 * the build collects the folders (sk_connector() in the top CMakeLists.txt), so adding a
 * connector edits no core file. The drivers in daemon/ own every delivery rule
 * (docs/architecture.md §4): a connector only produces records after a
 * cursor, or applies records idempotently and reports an outcome per record.
 *
 * Threads: each connector instance runs on its own thread; ops are never
 * called concurrently for one instance. sk_source_wake() is the only call
 * that may come from another thread.
 */
#ifndef SK_CONNECTOR_H
#define SK_CONNECTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "sk_error.h"

struct sk_entity; /* proto/model.h: one SS 12000 entity type */
struct cJSON;
struct sk_probe; /* connection checks, below */

/* ---- records ------------------------------------------------------------ */

/*
 * One change to one entity. value is the entity as a packed protobuf message
 * (the entity's descriptor), or NULL/0 for a delete (a Kafka tombstone).
 */
struct sk_record {
    const struct sk_entity *entity; /* which type; its collection names the topic */
    char key[37];                   /* lowercase UUID, NUL-terminated */
    uint8_t *value;                 /* packed protobuf, NULL for a tombstone */
    size_t value_len;
    int64_t observed_us; /* when the source saw the change (µs since epoch) */
    /* Filled by the sink driver only: where the record came from, and the
     * entity decoded once for every sink, after the sink's privacy policy
     * (drop_fields, protected_identities) was applied. doc is NULL for a
     * tombstone; modified_us is meta.modified (INT64_MIN if absent). */
    const char *topic;
    int32_t partition;
    int64_t offset;
    const struct cJSON *doc;
    int64_t modified_us;
    /* doc as compact JSON text, printed once by the driver with every number
     * exact (cJSON's own printer rounds a double to 15 digits, so
     * 0.30000000000000004 would be stored as 0.3): a sink that stores or sends
     * the document uses this text and never prints doc again. NUL-terminated
     * (json_len excludes the NUL); NULL exactly when doc is. Valid during apply. */
    const char *json;
    size_t json_len;
    /* A tombstone the sink's privacy policy made (protected_identities:
     * skip): the entity must leave no trace, whatever the sink keeps of
     * deleted entities otherwise (postgres-sink's deleted_rows: keep). */
    bool withheld;
};

/* A record the source could not turn into an entity: goes to the DLQ with context. */
struct sk_bad_input {
    char *key;    /* may be NULL */
    uint8_t *raw; /* the input as read (a JSON line, a page), owned */
    size_t raw_len;
    char *where; /* "persons.jsonl:17", a URL, ... */
    struct sk_error err;
    /* The entity type the input was meant to be: `skolsync dlq replay`
     * encodes the input with it. NULL only when no type can be named. */
    const struct sk_entity *entity;
};

struct sk_cursor {
    uint8_t *data; /* opaque to the core; NULL/0 = no cursor yet (start from scratch) */
    size_t len;
};

/*
 * What a source's poll returns. The source fills records, bad and cursor; the
 * driver owns the batch and frees it with sk_batch_reset() after the batch is
 * stored. All memory in it is malloc'ed and owned by the batch.
 */
struct sk_batch {
    struct sk_record *recs;
    size_t n, cap;
    struct sk_bad_input *bad;
    size_t n_bad, cap_bad;
    struct sk_cursor cursor; /* holds once every record above (and before) is stored */
    bool has_cursor;         /* false: keep the previous cursor */
    bool more;               /* true: more is ready now, poll again at once;
                                false: this poll cycle is complete (idle until woken/interval) */
    uint64_t progress_done, progress_total; /* optional, for progress lines (0 = unknown) */
    /*
     * Snapshots (docs/architecture.md §4.6), bit sk_entity_index(e) of each:
     * snapshot_begin: this batch's records of e start a complete listing of
     * every e the source system has; snapshot_end: with this batch's records
     * of e that listing is complete. Only for a listing that is complete
     * (never a window, a filter or a listing resumed in the middle): every
     * sink that saw all of it deletes the entities of e it holds and the
     * listing did not contain.
     */
    uint32_t snapshot_begin, snapshot_end;
    /* With a snapshot_begin bit: the listing covered only the entities whose
     * field (a date-time, e.g. a calendar event's startTime) lies within
     * [from_us, to_us]; sinks sweep only those. field NULL: every entity. */
    struct sk_snapshot_window {
        const char *field; /* static text */
        int64_t from_us, to_us;
    } snapshot_window[32];
};

/* Appends a record; takes ownership of value. Returns the record (to fill key/entity). */
struct sk_record *sk_batch_add(struct sk_batch *b, const struct sk_entity *entity, const char *key,
                               uint8_t *value, size_t value_len, int64_t observed_us);
/*
 * Appends a bad input; takes ownership of raw; copies where and err. entity
 * is the type the input was meant to be (a parameter, so no source forgets
 * it: without it `skolsync dlq replay` cannot re-encode the input); NULL only
 * when it is truly unknown.
 */
void sk_batch_add_bad(struct sk_batch *b, const struct sk_entity *entity, const char *key,
                      uint8_t *raw, size_t raw_len, const char *where, const struct sk_error *err);
/* Takes ownership of data as the batch's new cursor. */
void sk_batch_set_cursor(struct sk_batch *b, uint8_t *data, size_t len);
void sk_batch_reset(struct sk_batch *b); /* frees contents, keeps the arrays */
void sk_batch_free(struct sk_batch *b);

/* ---- sources ------------------------------------------------------------ */

struct sk_source {
    const struct sk_source_ops *ops;
    const char *name;          /* the instance name from the config */
    void *conf;                /* the filled option struct (owned by the core) */
    void *priv;                /* the connector's state, set by open, freed by close */
    struct sk_source_env *env; /* the core's side: wake-ups, HTTP routes (opaque) */
    /* Optional, set by open: the entity types it will write, one bit per
     * sk_entities index (0: any). The driver readies their topics before the
     * first poll; another type costs a metadata round trip at its first record. */
    uint32_t writes;
};

struct sk_source_ops {
    const char *type;                /* "jsonl-source" */
    const char *summary;             /* one line for `skolsync connectors` */
    const struct sk_option *options; /* validated and filled by the core */
    size_t conf_size;                /* sizeof the struct the option offsets point into */
    /* Connect, check the configuration against reality. err->cls FATAL stops the connector. */
    int (*open)(struct sk_source *self, struct sk_error *err);
    /*
     * Produce the next batch of changes after `cursor` and the cursor that
     * holds once they are all stored. Called again with the same cursor after
     * a failed delivery: a poll must be repeatable from any cursor it returned.
     * Return 0, or -1 with err (RETRIABLE: the driver backs off and polls again
     * from the same cursor; FATAL: the connector stops).
     */
    int (*poll)(struct sk_source *self, const struct sk_cursor *cursor, struct sk_batch *out,
                struct sk_error *err);
    /*
     * Optional: the batch that carried cursor is stored (Kafka acknowledged
     * it and everything before it). Called on the source's thread before the
     * next poll, which then gets the same cursor. A source that keeps state
     * until its batch is safe can settle it here instead of at the next
     * poll, which may be a poll_interval away.
     */
    void (*stored)(struct sk_source *self, const struct sk_cursor *cursor);
    /*
     * Optional: poll may be given the cursor of a batch that is not stored
     * yet. The driver then polls the next batch while the last one's records
     * are on their way and stores several batches in one transaction. A
     * source that takes the cursor a poll gets as the word that the batch
     * before was stored (and settles state then) leaves it false.
     */
    bool chain_polls;
    void (*close)(struct sk_source *self);
    /* Optional: `skolsync check --connect` (struct sk_probe, below). */
    void (*probe)(const void *conf, struct sk_probe *p);
};

/* Ask the driver to poll now instead of waiting for the poll interval (any thread). */
void sk_source_wake(struct sk_source *self);

/* ---- services the core offers to sources ---------------------------------- */

/* One HTTP request to a route a source registered (daemon/http.c serves it). */
struct sk_http_request {
    const char *method; /* "POST" */
    const char *path;   /* "/hooks/ss12000/<secret>" (no query) */
    const char *body;   /* NUL-terminated; body_len excludes the NUL */
    size_t body_len;
    const char *content_type;  /* or NULL */
    const char *authorization; /* the Authorization header, or NULL */
};

struct sk_http_response {
    int status;
    char *body;               /* malloc'ed (freed by the core) or NULL */
    const char *content_type; /* default "application/json" */
    char allow[64];           /* a 405's Allow header, the methods the path takes ("GET, POST") */
};

/*
 * Runs on an HTTP thread, concurrently with the source's poll: it may call
 * sk_source_wake() and touch state the source guards itself, nothing else.
 */
typedef void (*sk_http_handler)(void *ctx, const struct sk_http_request *req,
                                struct sk_http_response *resp);

/*
 * Serve method+path (exact match, or a prefix ending in '*') on the daemon's
 * HTTP server (admin.listen). Call from open. Bodies above the server's cap
 * are refused with 413 before the handler runs. The route ends with
 * sk_source_http_unroute, and at the latest when the core closes the source:
 * the core removes every route of a source before it calls close (or after a
 * failed open), and no handler runs after that.
 */
int sk_source_http_route(struct sk_source *self, const char *method, const char *path,
                         sk_http_handler fn, void *ctx, struct sk_error *err);
/*
 * Removes the source's routes with this ctx; returns once none of their
 * handlers runs any more, so ctx may be freed after it. Not from a handler.
 */
void sk_source_http_unroute(struct sk_source *self, void *ctx);

/*
 * The ids live (latest record not a tombstone) in entity e's topic, read to
 * its end (read_committed). Calls fn once per id. For full reconciliation:
 * ids live in Kafka but gone from the source system were deleted there.
 */
int sk_source_live_ids(struct sk_source *self, const struct sk_entity *e,
                       void (*fn)(void *ctx, const char *id), void *ctx, struct sk_error *err);

/* The source's poll_interval (a core setting every source has), in ms. */
int64_t sk_source_poll_interval_ms(const struct sk_source *self);

/* Deletions the source holds back (delete guard), for status and metrics. */
void sk_source_set_held(struct sk_source *self, uint64_t held);
/*
 * True once after an operator released all held deletions (`skolsync
 * release` or POST /api/v1/connectors/{name}/release without a body): the
 * next poll may publish them. For a source that does not list its held
 * deletions (sk_source_set_held_list); one that does takes requests with
 * sk_source_take_release_request instead.
 */
bool sk_source_take_release(struct sk_source *self);

/*
 * An operator's word on held deletions (POST .../release with a body, or
 * `skolsync release NAME --ids/--type/--reject`): the held deletions it
 * selects (sk_release_selects) are published (release) or forgotten, the
 * entities kept (reject). Made by the core, which has checked the ids
 * (lowercase UUIDs, sorted) and the types.
 */
struct sk_release {
    uint64_t seq;    /* the core's number (sk_source_release_done) */
    bool reject;     /* forget the deletions, keep the entities */
    char (*ids)[37]; /* sorted; n_ids 0: any id */
    size_t n_ids;
    uint32_t types; /* bit sk_entity_index(e); 0: any type */
};
/* Whether r selects the held deletion of id (entity e). */
bool sk_release_selects(const struct sk_release *r, const struct sk_entity *e, const char *id);
void sk_release_free(struct sk_release *r); /* NULL is fine */
/*
 * The next release request, or NULL (the caller owns it: sk_release_free).
 * A source that takes requests settles each with sk_source_release_done
 * once its effect is stored (the tombstones and the new held set in Kafka).
 */
struct sk_release *sk_source_take_release_request(struct sk_source *self);
void sk_source_release_done(struct sk_source *self, uint64_t seq);
/*
 * The held deletions as the source stored them: held in all, and a JSON
 * object {"<entity name>": ["<id>", ...], ...} (copied) that GET
 * /api/v1/connectors/{name}/held answers. A source that calls this takes
 * selective requests (ids, types, reject); one that never does gets only
 * "release all" (sk_source_take_release).
 */
void sk_source_set_held_list(struct sk_source *self, uint64_t held, const char *json);

/*
 * Per entity type health of a source that reads its types independently,
 * for the status API and metrics (source thread). set_type_error: type e
 * fails (status: the server's HTTP status, 0 when its answer could not be
 * read; reason: short, with no personal data or secret), counted once per
 * call; reason NULL: it works again. e NULL: the source's list of deletions
 * (SS 12000's /deletedEntities), shown as the entity "deletedEntities".
 * set_type_skipped: the server does not serve e (404), so the source leaves
 * it out for now.
 */
void sk_source_set_type_error(struct sk_source *self, const struct sk_entity *e, long status,
                              const char *reason);
void sk_source_set_type_skipped(struct sk_source *self, const struct sk_entity *e, bool skipped);
/* A record of type e lacking a required field was published (validation: lenient). */
void sk_source_count_incomplete(struct sk_source *self, const struct sk_entity *e);
/* A record of type e that failed validation came again unchanged, not dead-lettered again. */
void sk_source_count_bad_again(struct sk_source *self, const struct sk_entity *e);

/*
 * The validation of SS 12000 JSON every source that reads it offers (option
 * `validation`): strict dead-letters a record lacking a field of
 * sk_entity_missing_required; lenient publishes it when its id is valid and
 * counts it (sk_source_count_incomplete).
 */
#define SK_VALIDATION_CHOICES ((const char *const[]){"lenient", "strict", NULL})
#define SK_VALIDATION_HELP                                                                         \
    "lenient: publish a record lacking a field SS 12000 requires (counted in "                     \
    "skolsync_source_records_incomplete_total); strict: dead-letter it"

/* ---- sinks -------------------------------------------------------------- */

/* A family of a sink's own metrics (sk_sink_ops.metrics). */
struct sk_metric_family {
    const char *name; /* "skolsync_hub_requests_total" */
    const char *type; /* "counter", "gauge" or "histogram" */
    const char *help; /* one line */
};
struct sk_buf;
struct cJSON;

enum sk_outcome_kind {
    SK_APPLIED = 0, /* stored in the target (or nothing to do: stale version, missing row) */
    SK_RETRY,       /* not applied, try again later (the driver pauses and backs off) */
    SK_REJECTED,    /* permanent: this record cannot be applied; goes to the DLQ */
};

struct sk_outcome {
    enum sk_outcome_kind kind;
    struct sk_error err; /* for RETRY and REJECTED */
};

/* Consumed offsets, as kept by a sink that stores them in its target. */
struct sk_offset {
    char *topic;
    int32_t partition;
    int64_t next_offset; /* the next offset to consume */
};

struct sk_offsets {
    struct sk_offset *v;
    size_t n, cap;
};

void sk_offsets_add(struct sk_offsets *o, const char *topic, int32_t partition, int64_t next);
/*
 * The offsets a sink stores with a batch: for every partition in recs,
 * next_offset = highest offset + 1 (records of every outcome count: the
 * driver dead-letters rejected ones before it commits). Replaces o's content.
 */
void sk_offsets_of_batch(struct sk_offsets *o, const struct sk_record *recs, size_t n);
void sk_offsets_free(struct sk_offsets *o);

struct sk_sink {
    const struct sk_sink_ops *ops;
    const char *name;
    void *conf;
    void *priv;
    /*
     * The broker incarnation (Kafka cluster id; in embedded mode a fresh id per
     * process). A sink that stores offsets keeps it with them and returns only
     * the offsets stored under the current incarnation (docs/architecture.md §5.8).
     */
    const char *incarnation;
    const struct sk_entity *const *entities; /* the entity types this sink consumes */
    size_t n_entities;
};

/*
 * Where a sink's target lives, which decides how the daemons of a deployment
 * share the sink's work (docs/architecture.md §5.10). The connector only
 * declares it; the sink driver does the rest.
 */
enum sk_sink_target {
    /* Something on the node itself (a SQLite file, CSV bundles, an API served
     * from local state): each node consumes in a group of its own and keeps a
     * complete copy. The default: a sink that forgets to declare does more
     * work than needed, never holds a part of the data only. */
    SK_TARGET_NODE_LOCAL = 0,
    /* One system every node writes to (a database server): the nodes form
     * one group and split the partitions. */
    SK_TARGET_SHARED,
    /* One system every node would write to, for a sink that needs every
     * partition at once (its state relates records across topics: a Duty
     * makes its Person staff in the scim-sink). One node of the deployment
     * runs it at a time, chosen like a source's owner (§5.10); the others
     * keep it in standby. It consumes in the deployment's group, and applies
     * nothing while it holds only part of the partitions. */
    SK_TARGET_SHARED_WHOLE,
};

struct sk_sink_ops {
    const char *type;
    const char *summary;
    enum sk_sink_target target_kind;
    const struct sk_option *options;
    size_t conf_size;
    /* Privacy defaults of this sink type (proto/privacy.h); a sink's
     * drop_fields / protected_identities settings override them.
     * NULL: keep every field / "allow". */
    const char *const *default_drop_fields; /* NULL-terminated */
    const char *default_protected;          /* "skip", "minimal" or "allow" */
    int (*open)(struct sk_sink *self, struct sk_error *err);
    /*
     * Apply n records idempotently, in order. Fill out[i] for every record.
     * A sink that implements stored_offsets stores, in the same target
     * transaction, next_offset = offset + 1 for the last record of each
     * partition it applied. Return 0, or -1 with err when the whole batch
     * failed (RETRIABLE: the driver retries it; FATAL: stop).
     */
    int (*apply)(struct sk_sink *self, const struct sk_record *recs, size_t n,
                 struct sk_outcome *out, struct sk_error *err);
    /*
     * Optional. Record that every record before `next_offset` on topic/partition
     * has been dealt with although nothing was applied (the partition's end was
     * reached past transaction markers, or records were dead-lettered), so a
     * sink with its own offset table keeps it in step with Kafka.
     */
    int (*mark_offsets)(struct sk_sink *self, const struct sk_offsets *offsets,
                        struct sk_error *err);
    /* Optional: offsets kept in the target (exactly-once apply), for this incarnation. */
    int (*stored_offsets)(struct sk_sink *self, struct sk_offsets *out, struct sk_error *err);
    /*
     * Optional, for the snapshot sweep (docs/architecture.md §4.6): calls fn
     * once for every key of entity type e the target holds (whatever a delete
     * of that key would remove), with the entity as JSON text if the target
     * keeps it (else NULL: a windowed snapshot then sweeps nothing of e).
     * Read-only. Return 0, or -1 with err. A sink without it is never swept.
     */
    int (*keys)(struct sk_sink *self, const struct sk_entity *e,
                void (*fn)(void *ctx, const char *key, const char *doc), void *ctx,
                struct sk_error *err);
    /* Optional: as keys, with doc always NULL, for a sweep that needs no
     * document (a snapshot without a window); for a target where reading
     * the documents costs (postgres-sink: every doc printed as text). */
    int (*keys_only)(struct sk_sink *self, const struct sk_entity *e,
                     void (*fn)(void *ctx, const char *key, const char *doc), void *ctx,
                     struct sk_error *err);
    /* Optional: the sink has caught up and waits for records: give back
     * what only a busy sink needs (page caches, batch buffers). */
    void (*trim)(struct sk_sink *self);
    /* Optional: where the data goes, for logs and the run summary ("/var/lib/x.db"). */
    const char *(*target)(struct sk_sink *self);
    void (*close)(struct sk_sink *self);
    /* Optional: `skolsync check --connect` (struct sk_probe, below). */
    void (*probe)(const void *conf, struct sk_probe *p);
    /*
     * Optional: figures of its own on the daemon's GET /metrics. The daemon
     * prints each family of metric_families (ended by a NULL name) once, with
     * its HELP and TYPE, then asks every open sink of this type for its
     * samples: metrics(self, family index, out) appends lines "NAME{connector=
     * \"<self->name>\",...} VALUE\n" (a histogram: NAME_bucket/_sum/_count).
     * Runs on an HTTP thread, never during open or close: it may read only
     * what another thread may (atomics), and must not block.
     */
    const struct sk_metric_family *metric_families;
    void (*metrics)(struct sk_sink *self, size_t family, struct sk_buf *out);
    /* Optional: members of its own added to its object in the status API
     * (GET /api/v1/connectors, the status page), under the same rules as
     * metrics; no secret and no personal data. */
    void (*status)(struct sk_sink *self, struct cJSON *out);
    /*
     * Optional, under the same rules as metrics: asked once a second, also
     * while the sink waits for records. 0 when the sink can do its work; -1
     * with err (no secret, no personal data) when it cannot: RETRIABLE while
     * work it does on its own outside apply fails (the oneroster-csv-sink's
     * bundle): the driver shows it as retrying with err as its last error
     * (/ready 503) until 0 comes again; FATAL when it must start again (its
     * SQLite file was deleted under it): the sink fails, and the supervisor
     * restarts it.
     */
    int (*health)(struct sk_sink *self, struct sk_error *err);
    /*
     * Optional: every assigned partition is applied to its end (the driver
     * moves the sink to idle). On the sink's thread, between batches; called
     * again at each later catch-up. The ss12000-api-sink serves nothing
     * before its first, so a copy it is still filling is never read.
     */
    void (*caught_up)(struct sk_sink *self);
    /*
     * Optional: what the sink makes on its own from what it applied (the
     * oneroster-csv-sink's bundle), made now if anything is left to make. On
     * the sink's thread: under `run --once` once every partition is applied
     * to its drain target, before the sink counts as drained; and when the
     * sink stops (rule 5), within shutdown_timeout. 0, or -1 with err: under
     * --once the sink fails (the run exits 1); at a stop it is logged. close
     * must not be where such output is made: the teardown after the
     * connectors stopped is cut after 10 s (docs/architecture.md §4.5).
     */
    int (*publish)(struct sk_sink *self, struct sk_error *err);
};

/* ---- connection checks (skolsync check --connect) ----------------------- */

/*
 * probe(conf, p) reaches the system a connector's options name and reports
 * each check through sk_probe_ok / sk_probe_fail; it never prints. It runs
 * on the command line's thread with the filled option struct and nothing
 * opened: it must not change the target (no schema or file created, no
 * write, no state kept), must give up within the connector's own timeouts,
 * and, like every error message, must never report a secret.
 */
struct sk_probe {
    const char *name; /* the instance name from the config */
    /* Filled by the caller: one check's outcome. what: the check ("login",
     * "schema skolsync"); detail: what was found, or what failed; fix: how
     * to fix it (NULL when ok). */
    void (*report)(void *ctx, const struct sk_probe *p, bool ok, const char *what,
                   const char *detail, const char *fix);
    void *ctx;
};

/* One check passed: detail is printf-formatted. */
void sk_probe_ok(struct sk_probe *p, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* One check failed: fix says how to fix it (not formatted), detail what failed. */
void sk_probe_fail(struct sk_probe *p, const char *what, const char *fix, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- the registry (generated by the build from the connector folders) --- */

const struct sk_source_ops *sk_registry_source(const char *type);
const struct sk_sink_ops *sk_registry_sink(const char *type);
/* NULL-terminated arrays of every registered connector, in name order. */
extern const struct sk_source_ops *const sk_registry_sources[];
extern const struct sk_sink_ops *const sk_registry_sinks[];

#endif
