/*
 * cluster_api.c: GET /api/v1/cluster, who does what in the deployment
 * (README "High availability and scaling", docs/architecture.md §5.10):
 *
 *   {"deployment", "node", "ownership": true|false, "sources_group",
 *    "sources": [{"name", "partition", "owner", "state"}],
 *    "whole_sinks": [{"name", "partition", "owner", "state"}],
 *    "nodes": [{"node", "sources": [...], "whole_sinks": [...],
 *               "sinks": [{"group", "partitions": ["topic/N", ...]}
 *                         | {"group", "partitions": N, "shared_consumer": true}]}],
 *    "described_ms_ago"?, "error"?}
 *
 * On a real broker "nodes" comes from a description of the sources group
 * and of this configuration's sink groups (a node is a member's client id
 * minus its deployment and role); "owner" of a source is the node assigned
 * its partition, null while none is. This node's node-local sinks on the
 * shared consumer have no member: listed from this node with their partition
 * count (other nodes' are not known here). A sink whose target one node runs whole
 * (SK_TARGET_SHARED_WHOLE, the scim-sink) is owned the same way: the others
 * keep it in standby. On the embedded broker (no ownership) this node is the
 * only one and owns every source and sink.
 *
 * Runs on an HTTP thread: reads the connector list under d->lock, and
 * describes the groups after releasing it. The description is shared by
 * the requests of a second and made by one of them at a time, on a client
 * kept between them ("described_ms_ago": its age; sk_ownership_describe).
 */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "daemon_internal.h"
#include "ownership.h"
#include "util.h"

/* The lists of connectors the sources group places on one node each. */
static const char *const owned_lists[2] = {"sources", "whole_sinks"};

/* An entry of "sources" or "whole_sinks": owner null until the group names one. */
static void add_owned(cJSON *list, struct sk_runner *r)
{
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "name", r->name);
    cJSON_AddNumberToObject(s, "partition", sk_ownership_partition(r->name));
    cJSON_AddNullToObject(s, "owner");
    cJSON_AddStringToObject(s, "state", sk_daemon_state_name(r));
    cJSON_AddItemToArray(list, s);
}

/* The entry of node in nodes, added if missing. */
static cJSON *node_entry(cJSON *nodes, const char *node)
{
    cJSON *n;
    cJSON_ArrayForEach(n, nodes)
    {
        if (strcmp(cJSON_GetObjectItem(n, "node")->valuestring, node) == 0)
            return n;
    }
    n = cJSON_CreateObject();
    cJSON_AddStringToObject(n, "node", node);
    cJSON_AddArrayToObject(n, "sources");
    cJSON_AddArrayToObject(n, "whole_sinks");
    cJSON_AddArrayToObject(n, "sinks");
    cJSON_AddItemToArray(nodes, n);
    return n;
}

/* Fills nodes from the group description: who owns which source, who holds which sink partition. */
static void from_members(struct sk_daemon *d, cJSON *out, cJSON *nodes, const cJSON *members)
{
    char *topic = sk_asprintf("%s_sources", sk_kafka_prefix(d->kafka));
    const char *sources_group = sk_ownership_group(d->owner);
    const cJSON *m;
    cJSON_ArrayForEach(m, members)
    {
        const char *group = cJSON_GetObjectItem(m, "group")->valuestring;
        cJSON *n = node_entry(nodes, cJSON_GetObjectItem(m, "node")->valuestring);
        if (strcmp(group, sources_group) == 0)
            continue; /* its sources below, a node without any still listed */
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "group", group);
        cJSON_AddItemToObject(s, "partitions",
                              cJSON_Duplicate(cJSON_GetObjectItem(m, "partitions"), true));
        cJSON_AddItemToArray(cJSON_GetObjectItem(n, "sinks"), s);
    }
    /* The same reading `skolsync lag` makes of the sources group (ownership.h). */
    for (int k = 0; k < 2; k++) {
        const char *list = owned_lists[k];
        cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(out, list))
        {
            const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
            const char *owner = sk_ownership_owner_of(members, sources_group, topic, name);
            if (!owner)
                continue;
            cJSON_ReplaceItemInObject(c, "owner", cJSON_CreateString(owner));
            cJSON_AddItemToArray(cJSON_GetObjectItem(node_entry(nodes, owner), list),
                                 cJSON_CreateString(name));
        }
    }
    free(topic);
}

/* A sink listed from this node's own state: its group and how many
 * partitions it holds now (shared: on the shared consumer, sink_hub.h). */
static void add_counted_sink(cJSON *node, const struct sk_sink_env *snk, bool shared)
{
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "group", snk->group);
    cJSON_AddNumberToObject(s, "partitions", atomic_load(&snk->runner.partitions));
    if (shared)
        cJSON_AddBoolToObject(s, "shared_consumer", true);
    cJSON_AddItemToArray(cJSON_GetObjectItem(node, "sinks"), s);
}

/* A node-local sink on the shared consumer has no group member to describe:
 * this node lists its own (every partition of its topics) into `shared`,
 * added to its node's entry after the description; other nodes' such sinks
 * are not known here. */
static void add_shared_sinks(struct sk_daemon *d, cJSON *shared)
{
    for (size_t i = 0; i < d->n_conns; i++) {
        struct sk_sink_env *snk = sk_as_sink(d->conns[i]);
        if (snk && snk->hubs)
            add_counted_sink(shared, snk, true);
    }
}

/* Without ownership: this node runs every source and holds its sinks' partitions. */
static void local_only(struct sk_daemon *d, cJSON *out, cJSON *nodes, const char *self)
{
    cJSON *n = node_entry(nodes, self);
    for (int k = 0; k < 2; k++) {
        cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(out, owned_lists[k]))
        {
            const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
            cJSON_ReplaceItemInObject(c, "owner", cJSON_CreateString(self));
            cJSON_AddItemToArray(cJSON_GetObjectItem(n, owned_lists[k]), cJSON_CreateString(name));
        }
    }
    for (size_t i = 0; i < d->n_conns; i++) {
        struct sk_sink_env *snk = sk_as_sink(d->conns[i]);
        if (snk)
            add_counted_sink(n, snk, false);
    }
}

cJSON *sk_cluster_json(struct sk_daemon *d)
{
    const struct sk_names *names = sk_kafka_names(d->kafka);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "deployment", names->deployment);
    cJSON_AddStringToObject(out, "node", names->node);
    cJSON_AddBoolToObject(out, "ownership", d->owner != NULL);
    if (d->owner)
        cJSON_AddStringToObject(out, "sources_group", sk_ownership_group(d->owner));
    cJSON *sources = cJSON_AddArrayToObject(out, "sources");
    cJSON *whole = cJSON_AddArrayToObject(out, "whole_sinks");
    cJSON *nodes = cJSON_AddArrayToObject(out, "nodes");
    /* What this node runs, under the lock; the groups' description after it:
     * a broker slow to answer must not hold a reload waiting for the lock. */
    pthread_rwlock_rdlock(&d->lock);
    size_t n_groups = 0;
    struct sk_group_ref *groups = sk_calloc(d->n_conns + 1, sizeof(*groups));
    if (d->owner)
        groups[n_groups++] = (struct sk_group_ref){sk_strdup(sk_ownership_group(d->owner)), "owner",
                                                   sk_strdup("sources")};
    for (size_t i = 0; i < d->n_conns; i++) {
        struct sk_runner *r = d->conns[i];
        struct sk_sink_env *snk = sk_as_sink(r);
        if (!snk) {
            add_owned(sources, r);
            continue;
        }
        groups[n_groups++] =
            (struct sk_group_ref){sk_strdup(snk->group), "sink", sk_strdup(r->name)};
        if (((const struct sk_sink_def *)r->def)->ops->target_kind == SK_TARGET_SHARED_WHOLE)
            add_owned(whole, r);
    }
    cJSON *shared = cJSON_CreateObject();
    cJSON_AddArrayToObject(shared, "sinks");
    if (!d->owner)
        local_only(d, out, nodes, names->node);
    else
        add_shared_sinks(d, shared);
    pthread_rwlock_unlock(&d->lock);
    if (d->owner) {
        struct sk_error err = {0};
        int64_t age_ms = 0;
        cJSON *members = sk_ownership_describe(d->owner, groups, n_groups, &age_ms, &err);
        if (members) {
            from_members(d, out, nodes, members);
            cJSON *mine = cJSON_GetObjectItem(node_entry(nodes, names->node), "sinks");
            cJSON *s;
            while ((s = cJSON_DetachItemFromArray(cJSON_GetObjectItem(shared, "sinks"), 0)))
                cJSON_AddItemToArray(mine, s);
        } else {
            cJSON_AddStringToObject(out, "error", err.msg);
        }
        cJSON_AddNumberToObject(out, "described_ms_ago", (double)age_ms);
        cJSON_Delete(members);
    }
    cJSON_Delete(shared);
    /* the names were copied: a reload may free the connectors' meanwhile */
    for (size_t i = 0; i < n_groups; i++) {
        free((char *)groups[i].group);
        free((char *)groups[i].connector);
    }
    free(groups);
    return out;
}
