/*
 * names.h: every Kafka-side name of a deployment (docs/architecture.md §5.10):
 * sink consumer groups and their static member ids, source transactional
 * ids, client ids. A name derives from the deployment (kafka.deployment,
 * default the topic prefix) and, where it is per node, from node.name, so
 * two deployments on one cluster never share a group or a transactional id.
 *
 * Owns: how the names are made. Must never: name anything on Kafka that
 * ignores the deployment (the groups before deployments existed are named
 * here only to take their offsets over, sink_migrate.c).
 *
 * Pure functions: any thread. Every returned string is the caller's (free).
 */
#ifndef SK_NAMES_H
#define SK_NAMES_H

#include "connector.h"

struct sk_names {
    const char *deployment; /* kafka.deployment */
    const char *node;       /* node.name */
};

/* Shared target: "<deployment>-<sink>" (the nodes split its partitions).
 * Node-local target: "<deployment>-<node>-<sink>" (each node a complete copy). */
char *sk_name_sink_group(const struct sk_names *n, const char *sink, enum sk_sink_target kind);
/* The group of a sink before deployments existed: "skolsync-<sink>". */
char *sk_name_sink_group_legacy(const char *sink);
/* The static member id: the group, the node (a shared group has one member
 * per node) and a fingerprint of the subscription (sink_driver.c). */
char *sk_name_sink_member(const struct sk_names *n, const char *group, enum sk_sink_target kind,
                          uint32_t subscription);
/* "<deployment>.producer-<node>": the transactional id of the producer the
 * node's sources share (shared_producer.h), so a restarted daemon fences its
 * predecessor (§8.3); a '.' where sink groups have '-'. */
char *sk_name_node_txn_id(const struct sk_names *n);
/* The group that hands out the sources (ownership.h): "<deployment>.sources",
 * a '.' where sink groups have '-', so no sink name can make the same group.
 * Its static member per node: "<deployment>.sources-<node>". */
char *sk_name_sources_group(const struct sk_names *n);
/* The group id of the node's shared consumer of its node-local sinks
 * (sink_hub.c): "<deployment>.sinks-<node>", never joined, there only for the
 * admin calls made through that client (docs/architecture.md §8.14a). */
char *sk_name_local_sinks_group(const struct sk_names *n);
char *sk_name_sources_member(const struct sk_names *n);
/* "<deployment>-<node>-<role>-<connector>": who a client is in broker logs
 * and group descriptions. */
char *sk_name_client(const struct sk_names *n, const char *role, const char *connector);
/* The sources group's client id also names the process behind it:
 * "<deployment>-<node>-owner-sources.<host>.<pid>", so a daemon about to
 * join can tell a live daemon with its node name (refused) from its own
 * previous run that died (its static member is replaced), ownership.c. */
char *sk_name_owner_client(const struct sk_names *n, const char *host, long pid);
/* The host (caller frees) and pid of such a client id of this deployment
 * and node; false for any other client id, or one without them. */
bool sk_name_owner_client_parse(const struct sk_names *n, const char *client, char **host,
                                long *pid);
/* The node of a client id sk_name_client made for role and connector in
 * deployment (what group descriptions show of a member), also of one with
 * the process after it (sk_name_owner_client); NULL if client is neither.
 * Caller frees. */
char *sk_name_node_of_client(const char *client, const char *deployment, const char *role,
                             const char *connector);

/* The default deployment of a topic prefix: the prefix without its trailing
 * separators ("skolsync." -> "skolsync"), or "skolsync". Caller frees. */
char *sk_name_default_deployment(const char *topic_prefix);
/* This host's name as a node name: characters Kafka names do not allow
 * become '-'; "node" if there is none. Caller frees. */
char *sk_name_default_node(void);
/* This host's whole name, with the same characters replaced; "unknown-host"
 * if there is none. Caller frees. */
char *sk_name_host(void);
/* A deployment or node name Kafka accepts inside group and transactional
 * ids: 1 to max characters of [A-Za-z0-9._-]. */
bool sk_name_valid(const char *s, size_t max);

#endif
