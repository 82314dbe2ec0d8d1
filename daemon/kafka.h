/*
 * kafka.h: what every Kafka client of the daemon shares: where the brokers
 * are (a real cluster, or the embedded mock cluster living in this process),
 * the topic names, topic creation, and client configuration.
 *
 * Owns: the embedded broker's lifetime, the broker incarnation id, topic
 * naming (`<prefix><collection>`, `<prefix>_cursors`, `<prefix>_dlq`).
 * Must never: know a connector or a delivery rule (the drivers do).
 */
#ifndef SK_KAFKA_H
#define SK_KAFKA_H

#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "config.h"
#include "names.h"
#include "sk_error.h"

struct sk_kafka_conf {
    char *brokers;         /* "host:port,..." or "embedded" */
    char *topic_prefix;    /* default "skolsync." */
    char *deployment;      /* kafka.deployment: resolved by the configuration (names.h) */
    const char *node_name; /* node.name, resolved by the configuration (not a kafka key) */
    int64_t partitions;    /* for topics the daemon creates */
    int64_t replication_factor;
    bool exactly_once;           /* transactions on a real broker (default true) */
    int64_t connect_timeout_ms;  /* how long to wait for the cluster at start */
    int64_t embedded_brokers;    /* brokers of the embedded mock cluster (fault tests) */
    char *embedded_dir;          /* where the embedded broker keeps its state; "off": memory */
    int64_t statistics_ms;       /* librdkafka statistics of the connectors' clients; 0: off */
    int64_t tombstone_retention_ms; /* delete.retention.ms of the compacted topics it creates */
    bool shared_consumer; /* one consumer for the node-local sinks (sink_hub.h; default false) */
    struct sk_strmap properties; /* passed through to librdkafka (TLS, SASL, ...) */
};

extern const struct sk_option sk_kafka_options[];

struct sk_kafka;

/*
 * Connects (or starts the embedded broker), learns the cluster id and makes
 * sure the topics in `collections` (plus cursors and DLQ) exist. Returns 0 or
 * -1 with err (RETRIABLE: unreachable; FATAL: misconfigured).
 * The caller owns *out and frees it with sk_kafka_destroy() after every
 * client made from it is gone.
 */
int sk_kafka_start(const struct sk_kafka_conf *conf, const char *const *collections, size_t n,
                   struct sk_kafka **out, struct sk_error *err);
void sk_kafka_destroy(struct sk_kafka *k);
/*
 * The context of conf without reaching or starting anything: topic names and
 * client configuration (sk_kafka_conf_new) for a real cluster, the mode for
 * either (`skolsync check --connect`). No embedded broker is started, and
 * the incarnation is unknown (NULL). Free with sk_kafka_destroy().
 */
struct sk_kafka *sk_kafka_describe(const struct sk_kafka_conf *conf);

bool sk_kafka_embedded(const struct sk_kafka *k);
/* Transactions in use: a real broker with exactly_once (the mock has no txn markers). */
bool sk_kafka_transactional(const struct sk_kafka *k);
const char *sk_kafka_bootstrap(const struct sk_kafka *k);
/* Cluster id on a real broker; "embedded-<uuid>" for this process's embedded broker. */
const char *sk_kafka_incarnation(const struct sk_kafka *k);
const char *sk_kafka_prefix(const struct sk_kafka *k);
/* The deployment and node every Kafka-side name derives from (names.h). */
const struct sk_names *sk_kafka_names(const struct sk_kafka *k);

/* "<prefix><collection>"; caller frees. */
char *sk_kafka_topic_for(const struct sk_kafka *k, const char *collection);
const char *sk_kafka_cursor_topic(const struct sk_kafka *k);
const char *sk_kafka_dlq_topic(const struct sk_kafka *k);

/*
 * A new client configuration: bootstrap servers and client.id, then
 * `defaults` (NULL-terminated name, value pairs: tuning the user may
 * override), then the user's kafka.properties. Settings the delivery rules
 * depend on are set by the caller afterwards, so no property can undo them.
 * Caller owns it (rd_kafka_new takes it).
 */
rd_kafka_conf_t *sk_kafka_conf_new(const struct sk_kafka *k, const char *client_id,
                                   const char *const *defaults, struct sk_error *err);

/*
 * message.timeout.ms of every producer whose deliveries someone waits for
 * (a source's batch, a sink's dead letters): a record librdkafka cannot
 * deliver is reported failed within 55 s and its batch sent again, not held
 * for librdkafka's default 300 s while the connector shows no error. Below
 * transaction.timeout.ms (60 s), as librdkafka requires of a transactional
 * producer, which always has it; an at-least-once one takes kafka.properties'.
 */
#define SK_KAFKA_MESSAGE_TIMEOUT_MS "55000"

/* rd_kafka_new, which takes conf only when it succeeds: here conf is taken
 * either way. NULL with err (class cls) naming what it could not create. */
rd_kafka_t *sk_kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, enum sk_err_class cls,
                         struct sk_error *err);

/*
 * A connector's client from conf: its statistics go to stats, and opaque to
 * every callback of conf. Takes conf whatever the outcome (librdkafka takes
 * it only on success). NULL with err (FATAL) naming what it could not create.
 */
rd_kafka_t *sk_kafka_client_new(rd_kafka_type_t type, rd_kafka_conf_t *conf,
                                int (*stats)(rd_kafka_t *, char *, size_t, void *), void *opaque,
                                struct sk_error *err);

/*
 * An idempotent producer (no duplicates from librdkafka's own retries) that
 * reports each delivery to dr with opaque. NULL with err.
 */
rd_kafka_t *sk_kafka_producer_new(const struct sk_kafka *k, const char *client_id,
                                  void (*dr)(rd_kafka_t *, const rd_kafka_message_t *, void *),
                                  void *opaque, struct sk_error *err);

/*
 * A consumer for reading topics to their end outside any group's offsets:
 * read_committed, partition EOF events, no commits. Caller assigns and
 * destroys it. NULL with err.
 */
rd_kafka_t *sk_kafka_reader_new(const struct sk_kafka *k, const char *client_id,
                                struct sk_error *err);
/*
 * The same, read_uncommitted: its ListOffsets answers the high watermark.
 * A transaction's commit returns once the coordinator decided it; the
 * markers that move each partition's last stable offset are written after,
 * so an end asked right after a commit under read_committed can still lie
 * before the records just committed. The high watermark already covers
 * every record the broker acknowledged.
 */
rd_kafka_t *sk_kafka_hw_reader_new(const struct sk_kafka *k, const char *client_id,
                                   struct sk_error *err);
/*
 * The ends (which = RD_KAFKA_OFFSET_END: the last stable offset under
 * read_committed) or the starts (RD_KAFKA_OFFSET_BEGINNING) of every
 * partition in l, written to each element's offset: one ListOffsets per
 * leader, where 2.0.2's query_watermark_offsets costs a round trip per
 * partition and bound (batched ListOffsets came in 2.3.0). No duplicates in
 * l. Returns the request's error or the first partition's.
 */
/* How many partitions topic has, from rk's metadata request (10 s); -1 if unknown. */
int sk_kafka_partition_count(rd_kafka_t *rk, const char *topic);
rd_kafka_resp_err_t sk_kafka_list_offsets(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *l,
                                          int64_t which, int timeout_ms);
/* Waits for the admin result of type (RD_KAFKA_EVENT_*_RESULT) on q, up to
 * the request's timeout plus 2 s: the event (caller destroys), or NULL with
 * err (RETRIABLE) on timeout or a request error. Events of another type (a
 * late answer to an earlier request on q) are dropped; give each request of
 * one type its own queue, so a late answer of the same type cannot be taken
 * for this one either. */
rd_kafka_event_t *sk_kafka_admin_wait(rd_kafka_queue_t *q, rd_kafka_event_type_t type,
                                      const char *what, int64_t timeout_ms, struct sk_error *err);
/*
 * Options for an admin request sent to a group's coordinator (group offsets,
 * group descriptions): librdkafka's longest request timeout, 1 h. Such a
 * request must not time out inside librdkafka (§8.14h): one that does before
 * its coordinator is found leaves a lookup behind that aborts the process
 * when the coordinator answers. The caller keeps its own deadline
 * (sk_kafka_admin_wait) and sends these requests only from a client it
 * destroys, or replaces, well within the hour of a request left unanswered.
 */
#define SK_KAFKA_COORD_REQUEST_MS 3600000
rd_kafka_AdminOptions_t *sk_kafka_coord_options(rd_kafka_t *rk, rd_kafka_admin_op_t op);
/* Sets one property or fails with err (FATAL). */
int sk_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                      struct sk_error *err);
/*
 * Checks kafka.properties (the map node, or NULL) at load, without
 * connecting: a name the daemon sets itself is refused, every other
 * property is set on a scratch configuration by librdkafka, which checks the
 * name and the value; its reason goes to errs at the property (a secret
 * value never quoted). Producer and consumer properties are both accepted,
 * as every client gets them all.
 */
void sk_kafka_properties_check(const struct sk_cnode *props, struct sk_config_errors *errs);

/*
 * Reads one partition of topic from `from` (an offset, or
 * RD_KAFKA_OFFSET_BEGINNING) to its end under read_committed, calling fn for
 * every record; fn returns nonzero to stop early (that value is returned).
 * An empty partition calls nothing. 0, or -1 with err (RETRIABLE) when the
 * broker fails or timeout_ms passes.
 */
int sk_kafka_read_to_end(struct sk_kafka *k, const char *client_id, const char *topic,
                         int32_t partition, int64_t from, int64_t timeout_ms,
                         int (*fn)(void *ctx, const rd_kafka_message_t *m), void *ctx,
                         struct sk_error *err);

/* Creates the topics that are missing (compacted unless `compact` is false). */
int sk_kafka_ensure_topics(struct sk_kafka *k, const char *const *topics, size_t n, bool compact,
                           int partitions, struct sk_error *err);

/* The settings of a topic the daemon creates: compacted (with
 * kafka.tombstone_retention) or, for the dead letters, deleting. */
void sk_kafka_topic_settings(const struct sk_kafka *k, rd_kafka_NewTopic_t *nt, bool compact);

/*
 * What the existing topics' settings say (sk_kafka_check_topics), each a
 * message naming the topics, their settings and the fix, or NULL.
 */
struct sk_topic_verdict {
    /* they delete old records: cleanup.policy without "compact", or a
     * "delete" beside it with a retention.ms or retention.bytes other than -1 */
    char *refused;
    /* compacted, but delete.retention.ms below kafka.tombstone_retention */
    char *short_tombstones;
    /* the cluster would not say (an ACL without DescribeConfigs, a timeout) */
    char *unverified;
};
/* Asks the topics' settings over rk; -1 when v->refused is set, else 0. */
int sk_kafka_check_topics(rd_kafka_t *rk, const struct sk_kafka *k, const char *const *topics,
                          size_t n, struct sk_topic_verdict *v);
void sk_topic_verdict_free(struct sk_topic_verdict *v);

/*
 * How the producers place a keyed record among a topic's partitions:
 * librdkafka's default (CRC32 of the key modulo the partition count), or the
 * `partitioner` set in kafka.properties; NULL for `random` (keys have no place).
 */
typedef int32_t(sk_kafka_place_fn)(const rd_kafka_topic_t *rkt, const void *key, size_t keylen,
                                   int32_t partition_cnt, void *rkt_opaque, void *msg_opaque);
sk_kafka_place_fn *sk_kafka_placement(const struct sk_kafka *k);

/*
 * Reads the first records of each partition of the existing entity topics
 * and returns a verdict (caller frees) naming records whose key is not in
 * the partition the producers' partitioner gives it (partitions were added
 * after records were written), with the way out; NULL when every key read
 * is where it belongs or it cannot tell (then a warning is logged).
 */
char *sk_kafka_misplaced_keys(const struct sk_kafka *k, const char *const *topics, size_t n);

/*
 * A keyed topic's partition count as this node first met it: at the start
 * (sk_kafka_start, from the broker's metadata: a real cluster's entity and
 * cursor topics), else from its first user. Every key's place is computed
 * from it for the daemon's life. Partitions added while the daemon runs (or
 * a topic made again with another count) would move keys to other
 * partitions, where compaction never reconciles a key's old and new records:
 * the sources' producer refuses such a record (shared_producer.c), the sinks
 * fail (sink_driver.c), and the supervisor's restarts fail the same way
 * until the daemon is restarted on topics made anew.
 *
 * sk_kafka_pin returns topic's pinned count, pinning count (> 0) when it has
 * none; 0 when it has none and count is 0.
 */
int sk_kafka_pin(struct sk_kafka *k, const char *topic, int count);
/* Another count seen for a pinned topic (the lag monitor's metadata, the
 * producer's): remembered, and sk_kafka_pins_moved goes up. */
void sk_kafka_pin_seen(struct sk_kafka *k, const char *topic, int count);
/* How many times a pinned topic was seen with another count (a cheap test). */
unsigned sk_kafka_pins_moved(struct sk_kafka *k);
/* Whether topic was seen with another count than its pin; then why, with the way out. */
bool sk_kafka_moved(struct sk_kafka *k, const char *topic, char *buf, size_t size);
/* The message: topic had `first` partitions when the node first met it, `now` now. */
void sk_kafka_moved_why(char *buf, size_t size, const char *topic, int first, int now);

/* kafka.tombstone_retention: how long a compacted topic keeps a deletion (ms). */
int64_t sk_kafka_tombstone_retention_ms(const struct sk_kafka *k);

/* statistics.interval.ms for a connector's client ("0": none, the default): kafka.statistics. */
const char *sk_kafka_statistics_interval(const struct sk_kafka *k);

/* What a librdkafka statistics JSON (statistics.interval.ms) tells the daemon. */
struct sk_kafka_stats {
    char client[128]; /* the client's name: the count below restarts with a new client */
    int64_t rtt_us;   /* the largest average broker round-trip time; -1 when absent */
    int64_t retries;  /* since the client started: requests and produced messages sent again */
};
void sk_kafka_stats_parse(const char *json, size_t len, struct sk_kafka_stats *out);

/* The embedded broker's store (embedded_store.h), NULL when it keeps nothing on disk. */
struct sk_estore *sk_kafka_estore(struct sk_kafka *k);

/* The producer the node's sources share (shared_producer.h); NULL from sk_kafka_describe. */
struct sk_sprod *sk_kafka_sprod(struct sk_kafka *k);

/* The embedded mock cluster (for fault injection in tests), NULL on a real broker. */
struct rd_kafka_mock_cluster_s *sk_kafka_mock(struct sk_kafka *k);

/*
 * Tests only (fault injection, set from sk_run_options.kafka_started): fn
 * sees every consumer a sink creates, right after its creation, on the
 * sink's thread (test_kafka_faults stops one's fetch of a partition, as
 * librdkafka 2.0.2 did after leader moves).
 */
void sk_kafka_set_consumer_hook(struct sk_kafka *k, void (*fn)(rd_kafka_t *rk, void *ctx),
                                void *ctx);
/* A sink made consumer rk: the hook above, if any. */
void sk_kafka_consumer_created(struct sk_kafka *k, rd_kafka_t *rk);

/*
 * rd_kafka_destroy(rk), waiting at most timeout_ms: librdkafka 2.0.2 can wait
 * for ever in it once a topic was deleted under a consumer (architecture
 * §8.14g), which kept a sink from stopping, restarting or being reloaded.
 * Past the bound the destroy goes on in a thread of its own, left behind
 * (its client's threads too), an error names `who`, and false is returned.
 */
#define SK_KAFKA_DESTROY_MS 10000
bool sk_kafka_destroy_within(rd_kafka_t *rk, int64_t timeout_ms, const char *who);

/*
 * librdkafka's own log lines (its log callback), at its syslog level: its
 * warnings and errors at most one line per client and facility per
 * SK_KAFKA_LOG_INTERVAL_MS (sk_log_limited_key: the next says how many were
 * left out; all counted in skolsync_log_lines_suppressed_total), because a
 * client can say the same for every partition every second (a deleted
 * topic's COMMITFAIL); its notices and debug lines as they come.
 */
#define SK_KAFKA_LOG_INTERVAL_MS 6000
void sk_kafka_log_line(const char *client, int level, const char *fac, const char *buf);

/* An entity record's full message name (§5.3), e.g. "ss12000.v2.Person". */
#define SK_HEADER_SCHEMA "skolsync-schema"

/* Header helpers: value of header `name` as a NUL-terminated copy into buf; 0 if found. */
int sk_kafka_header(const rd_kafka_message_t *m, const char *name, char *buf, size_t size);

#endif
