/*
 * ownership.h: which daemon of a deployment runs which source, chosen by
 * Kafka's group protocol (docs/architecture.md §5.10). Every daemon joins
 * the group "<deployment>-sources" on the control topic "<prefix>_sources"
 * as a static member named after its node; a source maps to one partition
 * of that topic by a hash of its name, and the daemon assigned a partition
 * runs its sources. Nothing is ever written to the topic: its partitions
 * are only the units the group hands out.
 *
 * Owns: the sources group's consumer and the set of partitions this node
 * is assigned. Must never: start or stop a connector itself (the callback
 * given to sk_ownership_start does, on the main thread); run on the
 * embedded broker (single node by nature: every source runs locally).
 *
 * sk_ownership_poll and the callback run on the main thread;
 * sk_ownership_owns and sk_ownership_describe on any thread.
 */
#ifndef SK_OWNERSHIP_H
#define SK_OWNERSHIP_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "kafka.h"
#include "sk_error.h"

/* Partitions of "<prefix>_sources": a source's partition is its name's hash modulo this.
 * 16: enough for 16 nodes; every partition costs the broker open files. */
#define SK_OWNERSHIP_PARTITIONS 16
/* How long a dead owner keeps its sources before another node takes them. */
#define SK_OWNERSHIP_SESSION_MS 10000

struct sk_ownership;

/*
 * Called on the main thread, inside sk_ownership_poll, after the owned set
 * changed: on a revocation before the group goes on (so a source is stopped
 * before another node is handed it), on an assignment after it.
 */
typedef void (*sk_ownership_changed_fn)(void *ctx);

/* The control topic's partition of a source: FNV-1a of its name. */
int32_t sk_ownership_partition(const char *source);

/*
 * Creates the control topic if missing and joins the sources group. NULL
 * with err when the client cannot be made, or when the group already has a
 * live member with this node's name (another daemon with the same
 * node.name, on another host or alive on this one: ownership.c,
 * check_node_free). The group is joined during the following polls; until
 * the first assignment nothing is owned.
 */
struct sk_ownership *sk_ownership_start(struct sk_kafka *k, sk_ownership_changed_fn changed,
                                        void *ctx, struct sk_error *err);
/* Serves the group's callbacks (non-blocking). */
void sk_ownership_poll(struct sk_ownership *o);
/* Whether this node is assigned the source's partition now. */
bool sk_ownership_owns(struct sk_ownership *o, const char *source);
/* Leaves the group's client (static membership: the partitions move when
 * the session ends, SK_OWNERSHIP_SESSION_MS). */
void sk_ownership_stop(struct sk_ownership *o);

/*
 * The fence of the sources' commits (KIP-447, shared_producer.h): the
 * group's metadata (member, generation) as of this node's last assignment,
 * for rd_kafka_send_offsets_to_transaction; NULL before the first. The
 * broker refuses a commit with it once the group moved on without this
 * node. ctx: the sk_ownership. Any thread.
 */
rd_kafka_consumer_group_metadata_t *sk_ownership_fence(void *ctx);
/* The control topic, "<prefix>_sources". */
const char *sk_ownership_topic(const struct sk_ownership *o);

/* The group's name, "<deployment>-sources". */
const char *sk_ownership_group(const struct sk_ownership *o);

/* A group to describe, and how its members name their clients
 * (sk_name_client: "<deployment>-<node>-<role>-<connector>"). */
struct sk_group_ref {
    const char *group;
    const char *role;
    const char *connector;
};

/*
 * The members of the given groups as a JSON array of {"group", "node",
 * "partitions": ["topic/N", ...]}; the node is read from the member's
 * client id. NULL with err when the broker does not answer. For the
 * cluster view, called on HTTP threads: one describe at a time, on a client
 * kept while it answers (ended after a request left unanswered,
 * architecture.md §8.14h); an answer is reused for a second, and while a
 * describe is under way the others get the last answer at once. *age_ms:
 * how old the answer is.
 */
cJSON *sk_ownership_describe(struct sk_ownership *o, const struct sk_group_ref *groups, size_t n,
                             int64_t *age_ms, struct sk_error *err);

/*
 * Appends the members of one described group to out in that shape (the
 * node read from the client id, names.h; the client id itself when it is
 * not one of this deployment's). Also what `skolsync lag` describes the
 * sources group with, without a sources group client of its own.
 */
void sk_ownership_members_json(cJSON *out, const rd_kafka_ConsumerGroupDescription_t *desc,
                               const struct sk_group_ref *g, const char *deployment);

/*
 * The node among members (that shape) of the sources group `group` that is
 * assigned the source's partition of the control topic `topic`; NULL while
 * none is (the group is empty or rebalancing). Points into members.
 */
const char *sk_ownership_owner_of(const cJSON *members, const char *group, const char *topic,
                                  const char *source);

#endif
