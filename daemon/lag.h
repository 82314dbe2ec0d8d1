/*
 * lag.h: consumer-group lag: how far each group is behind each partition it
 * committed to, in records and in seconds, and a status in the spirit of
 * Burrow's sliding-window rules (docs/lag.md has the rules and the JSON).
 *
 * Owns: collecting one sample from a broker (committed offsets, end offsets,
 * the first unconsumed record of every lagging partition, group members),
 * the window of samples and the status rules, and rendering (table, JSON).
 * Must never: call DescribeConsumerGroups against the embedded (mock)
 * broker (it aborts there, docs/architecture.md §8.11), count a transaction
 * marker as lag, or estimate seconds-lag by interpolation (it reads the
 * record's timestamp).
 *
 * Threads: every function may be called from any thread. sk_lag_collect()
 * makes its own short-lived clients; a window carries its own lock.
 */
#ifndef SK_LAG_H
#define SK_LAG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "sk_error.h"

struct sk_kafka;

/* Ordered by severity within a partition. A group's status is OK, WARN or ERR
 * (ERR when any partition is ERR, STALL, STOP or REWIND), as in Burrow. */
enum sk_lag_status {
    SK_LAG_OK = 0,
    SK_LAG_WARN,
    SK_LAG_ERR,    /* cannot be evaluated sanely: committed offset outside the log, query failed */
    SK_LAG_STALL,  /* members present, committed offset not moving while there is lag */
    SK_LAG_STOP,   /* no consumer: no members (or unknown) and not moving while there is lag */
    SK_LAG_REWIND, /* the committed offset went backwards and did not recover */
};
const char *sk_lag_status_name(enum sk_lag_status s);
/* "OK" ... -> status; 0, or -1 if name is none of them. */
int sk_lag_status_parse(const char *name, enum sk_lag_status *out);
/* Worse of two group-level statuses after mapping STALL/STOP/REWIND to ERR. */
enum sk_lag_status sk_lag_status_group(enum sk_lag_status s);

/* One partition of one group in one sample. Offsets are -1 when unknown. */
struct sk_lag_partition {
    char *topic;
    int32_t partition;
    int64_t committed;   /* the group's committed offset (next record it will read) */
    int64_t low;         /* log start offset */
    int64_t end;         /* end offset: the last stable offset (read_committed) */
    int64_t lag;         /* consumable records in [committed, end): markers excluded */
    bool lag_exact;      /* false: lag is end - committed, an upper bound (see docs/lag.md) */
    int64_t first_ts_ms; /* timestamp of the first unconsumed record, -1 if none/unknown */
    double lag_seconds;  /* now - first_ts_ms; 0 when lag is 0; -1 unknown */
    char *error;         /* why this partition could not be sampled, or NULL */
    char *owner;         /* node of the member assigned it; NULL: none (empty group,
                          * rebalancing) or members unknown */
    /* Filled by evaluation: */
    enum sk_lag_status status;
    const char *reason; /* static text: why this status */
};

struct sk_lag_member {
    char *client_id, *consumer_id, *host;
    /* The node, read from the client id (sk_name_node_of_client) when the
     * deployment and the group's sink are known, else the client id. */
    char *node;
    char **assignment; /* "topic/partition" strings */
    size_t n_assignment;
};

struct sk_lag_group {
    char *group;
    char *state;        /* "Stable", "Empty", ... or NULL when unknown */
    bool members_known; /* false on the embedded broker unless the daemon filled them */
    struct sk_lag_member *members;
    size_t n_members;
    struct sk_lag_partition *parts;
    size_t n_parts;
    char *error; /* the group's offsets could not be fetched, or NULL */
    /* Filled by evaluation: */
    enum sk_lag_status status; /* OK, WARN or ERR */
    int64_t total_lag;
    bool total_exact;
    double max_lag_seconds;
};

/* Logical broker requests of one collection (docs/lag.md "Cost"). */
struct sk_lag_requests {
    int64_t metadata, list_groups, describe_groups, offset_fetch, list_offsets, read_partitions,
        read_records;
};

/* A source of the configuration and the node that runs it: the member of
 * the sources group assigned its partition of the control topic
 * (docs/architecture.md §5.10). */
struct sk_lag_source {
    char *name;
    int32_t partition;
    char *owner; /* NULL: no node is assigned it now, or members unknown */
};

/* One sample: every group at one time. */
struct sk_lag_report {
    int64_t time_ms; /* wall clock when collected */
    char *brokers;
    struct sk_lag_group *groups;
    size_t n_groups;
    struct sk_lag_requests requests;
    struct sk_lag_source *sources; /* the named sources (options), in their order */
    size_t n_sources;
    size_t window_samples; /* filled by evaluation: samples the statuses were computed over */
    size_t window_size;
};
void sk_lag_report_free(struct sk_lag_report *r);

struct sk_lag_collect_options {
    /* Where: a daemon's Kafka handle (its bootstrap and properties), or brokers
     * plus optional librdkafka properties (TLS, SASL) from a configuration. */
    const struct sk_kafka *kafka;
    const char *brokers;
    const struct sk_strmap *properties;
    /* Which: explicit groups, or all groups whose id starts with prefix
     * (NULL or "" with all_groups). */
    const char *const *groups;
    size_t n_groups;
    const char *prefix; /* default "skolsync-" */
    bool all_groups;
    /* Topics the groups read (optional). Given, every partition of them is
     * reported, committed or not (a sink that never committed shows its whole
     * backlog). The embedded broker's OffsetFetch ignores "all topics", so
     * there the partitions of every topic are asked for and those without a
     * commit are left out unless listed here. */
    const char *const *topics;
    size_t n_topics;
    /* Per explicit group (parallel to groups; optional): the topics that group
     * reads, all among topics. Given, each group is measured against its own
     * topics only, never against another group's backlog. */
    const char *const *const *group_topics;
    const size_t *n_group_topics;
    /* Members through DescribeConsumerGroups. Forced off on the embedded broker. */
    bool describe_members;
    /* Who owns what (optional; docs/lag.md "Owners"). With the deployment
     * and the sink each group belongs to (sink_groups[i] is sink_names[i]'s
     * group), a member's node is read from its client id; without, it is the
     * client id. Each partition's owner is the node of the member assigned it. */
    const char *deployment;
    const char *const *sink_groups;
    const char *const *sink_names;
    /* Per sink (optional, parallel): the node a node-local sink's group is
     * of (§5.6), NULL for a shared target. Such a group has no member when
     * the node's shared consumer reads for the sink (docs/architecture.md
     * §6.4.1): its members are then unknown, not none (a running sink is not
     * taken for a stopped one), and its partitions are that node's. */
    const char *const *sink_nodes;
    size_t n_sinks;
    /* The sources group ("<deployment>.sources"), its control topic
     * ("<prefix>_sources") and the sources to report with their owners:
     * described in the same DescribeConsumerGroups call as the groups. */
    const char *sources_group;
    const char *sources_topic;
    const char *const *sources;
    size_t n_sources;
    int64_t timeout_ms;  /* per admin request and for the reader (default 10000) */
    int64_t read_ms;     /* reader budget for first records and counting (default 5000) */
    int64_t exact_bound; /* count records exactly up to this gap (default 1000) */
};

/*
 * Takes one sample. Returns 0 and *out (caller frees with
 * sk_lag_report_free), or -1 with err (RETRIABLE: the broker could not be
 * reached or did not answer; FATAL: bad client configuration). Per-group and
 * per-partition failures do not fail the call: they are in ->error.
 * Statuses are not filled: pass the report to a window.
 */
int sk_lag_collect(const struct sk_lag_collect_options *o, struct sk_lag_report **out,
                   struct sk_error *err);

/*
 * Settles a partition's lag from what the reader saw: `read` consumable
 * records from the committed offset, `at_end` whether it reached the end
 * offset (or EOF), `first_ts_ms` the first one's timestamp (-1 if none).
 * No consumable record at or after the committed offset means lag 0 even when
 * end > committed: the gap is transaction markers or aborted records.
 */
void sk_lag_partition_settle(struct sk_lag_partition *p, int64_t read, bool at_end,
                             int64_t first_ts_ms, int64_t now_ms);

/* ---- evaluation ------------------------------------------------------------ */

struct sk_lag_rules {
    size_t window;       /* samples kept per partition (default 10) */
    int64_t stuck_ms;    /* not moving this long with lag: STALL/STOP (default 60000) */
    int64_t warn_lag_ms; /* oldest unconsumed record older than this: WARN (default 60000) */
    int64_t allowed_lag; /* records of lag that still count as caught up (default 0) */
    /* the topics' delete.retention.ms (kafka.tombstone_retention): the oldest
     * unconsumed record older than half of it is ERR; 0: no such rule (default) */
    int64_t tombstone_ms;
};
void sk_lag_rules_default(struct sk_lag_rules *rules);

/* One partition's state at one sample (what the window keeps). */
struct sk_lag_point {
    int64_t time_ms;
    int64_t committed, end, lag;
    double lag_seconds;
};

/*
 * The rules (docs/lag.md "Status") over points oldest→newest (n >= 1).
 * members: 1 the group has members, 0 it has none, -1 unknown.
 * *reason receives a static explanation.
 */
enum sk_lag_status sk_lag_evaluate(const struct sk_lag_point *points, size_t n, int members,
                                   const struct sk_lag_rules *rules, const char **reason);

/*
 * A window of samples for any number of groups. sk_lag_window_add takes
 * ownership of the report, records each partition's point, evaluates every
 * status in it and keeps it as the latest. Thread-safe.
 */
struct sk_lag_window;
struct sk_lag_window *sk_lag_window_new(const struct sk_lag_rules *rules);
void sk_lag_window_destroy(struct sk_lag_window *w);
void sk_lag_window_add(struct sk_lag_window *w, struct sk_lag_report *r);
/* Worst group status of the latest report (OK if there is none). */
enum sk_lag_status sk_lag_window_status(struct sk_lag_window *w);
/* The latest report as JSON (docs/lag.md "JSON"); NULL before the first add.
 * Caller frees with cJSON_Delete. This is what GET /api/v1/lag returns. */
cJSON *sk_lag_window_json(struct sk_lag_window *w);

/* ---- output ---------------------------------------------------------------- */

/* An evaluated report as JSON (caller frees with cJSON_Delete). */
cJSON *sk_lag_report_json(const struct sk_lag_report *r);
/* A report in that JSON shape (ours, or the daemon's /api/v1/lag) as an
 * aligned table: one render path for both. */
void sk_lag_json_table(const cJSON *report, FILE *out);
/* The worst group status named in that JSON ("status"); ERR if unreadable. */
enum sk_lag_status sk_lag_json_status(const cJSON *report);
/* Exit code for monitoring: 0 all OK, 1 any WARN, 2 any ERR (docs/lag.md). */
int sk_lag_exit_code(enum sk_lag_status worst);

/* ---- the command --------------------------------------------------------------- */

/* `skolsync lag ...` (argv[0] = "lag"); never calls exit(). */
int sk_cmd_lag(int argc, char **argv);
/* The same, printing to out (tests). */
int sk_lag_cli(int argc, char **argv, FILE *out);

#endif
