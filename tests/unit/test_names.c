/*
 * test_names.c: the Kafka-side names of a deployment (daemon/names.h): two
 * deployments, or two nodes where the target is node-local, never share a
 * group or a transactional id; the default deployment keeps the names of
 * before deployments existed.
 */
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "names.h"
#include "ownership.h"

static void eq(char *got, const char *want)
{
    cr_assert_str_eq(got, want);
    free(got);
}

Test(names, default_deployment_is_the_prefix_without_its_separator)
{
    eq(sk_name_default_deployment("skolsync."), "skolsync");
    eq(sk_name_default_deployment("sjovik_prod-"), "sjovik_prod");
    eq(sk_name_default_deployment("plain"), "plain");
    eq(sk_name_default_deployment("..."), "skolsync");
    eq(sk_name_default_deployment(NULL), "skolsync");
}

Test(names, default_deployment_keeps_the_old_names)
{
    struct sk_names n = {"skolsync", "web1"};
    char *legacy = sk_name_sink_group_legacy("db");
    eq(sk_name_sink_group(&n, "db", SK_TARGET_SHARED), legacy);
    free(legacy);
}

Test(names, groups_by_kind_of_target)
{
    struct sk_names a = {"kommun.prod", "node-a"}, b = {"kommun.prod", "node-b"};
    eq(sk_name_sink_group(&a, "pg", SK_TARGET_SHARED), "kommun.prod-pg");
    eq(sk_name_sink_group(&b, "pg", SK_TARGET_SHARED), "kommun.prod-pg");
    eq(sk_name_sink_group(&a, "db", SK_TARGET_NODE_LOCAL), "kommun.prod-node-a-db");
    eq(sk_name_sink_group(&b, "db", SK_TARGET_NODE_LOCAL), "kommun.prod-node-b-db");
    /* one group, a member per node */
    eq(sk_name_sink_member(&a, "kommun.prod-pg", SK_TARGET_SHARED, 0xabcdef01u),
       "kommun.prod-pg-node-a-abcdef01");
    eq(sk_name_sink_member(&b, "kommun.prod-pg", SK_TARGET_SHARED, 0xabcdef01u),
       "kommun.prod-pg-node-b-abcdef01");
    eq(sk_name_sink_member(&a, "kommun.prod-node-a-db", SK_TARGET_NODE_LOCAL, 1),
       "kommun.prod-node-a-db-00000001");
    /* the sources' producer: one per node (another node's owner is fenced
     * by the sources group, KIP-447; a restarted node by this id) */
    eq(sk_name_node_txn_id(&a), "kommun.prod.producer-node-a");
    eq(sk_name_node_txn_id(&b), "kommun.prod.producer-node-b");
    eq(sk_name_client(&b, "sink", "pg"), "kommun.prod-node-b-sink-pg");
}

Test(names, two_deployments_never_share_a_name)
{
    struct sk_names a = {"t1", "n"}, b = {"t2", "n"};
    char *ga = sk_name_sink_group(&a, "db", SK_TARGET_SHARED);
    char *gb = sk_name_sink_group(&b, "db", SK_TARGET_SHARED);
    cr_assert_str_neq(ga, gb);
    char *ta = sk_name_node_txn_id(&a), *tb = sk_name_node_txn_id(&b);
    cr_assert_str_neq(ta, tb);
    free(ga);
    free(gb);
    free(ta);
    free(tb);
}

Test(names, validity_and_the_host_name)
{
    cr_assert(sk_name_valid("kommun.prod_1-a", 100));
    cr_assert_not(sk_name_valid("", 100));
    cr_assert_not(sk_name_valid("has space", 100));
    cr_assert_not(sk_name_valid("slash/no", 100));
    cr_assert_not(sk_name_valid("toolong", 6));
    char *host = sk_name_default_node();
    cr_assert(sk_name_valid(host, 64), "%s", host);
    free(host);
}

/* The sources group never equals a sink's group, whatever the sink is called,
 * and its static member is per node. */
Test(names, the_sources_group_is_apart_from_every_sink_group)
{
    struct sk_names n = {.deployment = "sjovik", .node = "n1"};
    eq(sk_name_sources_group(&n), "sjovik.sources");
    eq(sk_name_sources_member(&n), "sjovik.sources-n1");
    char *g = sk_name_sources_group(&n);
    char *shared = sk_name_sink_group(&n, "sources", SK_TARGET_SHARED);
    char *local = sk_name_sink_group(&n, "sources", SK_TARGET_NODE_LOCAL);
    cr_assert_str_neq(g, shared);
    cr_assert_str_neq(g, local);
    free(g);
    free(shared);
    free(local);
}

/* A source's partition of the control topic is the same on every node and
 * in every version: fixed values, not only a range. */
Test(names, a_source_s_partition_is_stable)
{
    cr_assert_eq(sk_ownership_partition("files"), sk_ownership_partition("files"));
    int32_t seen[SK_OWNERSHIP_PARTITIONS] = {0};
    const char *names[] = {"sis", "files", "ist", "egil", "a", "b", "c", "d"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        int32_t p = sk_ownership_partition(names[i]);
        cr_assert(p >= 0 && p < SK_OWNERSHIP_PARTITIONS, "%s -> %d", names[i], p);
        seen[p]++;
    }
    int distinct = 0;
    for (int p = 0; p < SK_OWNERSHIP_PARTITIONS; p++)
        distinct += seen[p] > 0;
    cr_assert_geq(distinct, 6, "the hash spreads sources over partitions");
    /* FNV-1a 32-bit of "a" is 0xe40c292c */
    cr_assert_eq(sk_ownership_partition("a"), (int32_t)(0xe40c292cu % SK_OWNERSHIP_PARTITIONS));
}

/* The sources group's client id names the process behind it, and reads
 * back: the duplicate-node check (ownership.c) decides on host and pid. */
Test(names, the_owner_client_id_carries_host_and_pid)
{
    struct sk_names n = {"kommun.prod", "web-1"};
    char *c = sk_name_owner_client(&n, "host.example.org", 4711);
    cr_assert_str_eq(c, "kommun.prod-web-1-owner-sources.host.example.org.4711");
    char *host = NULL;
    long pid = 0;
    cr_assert(sk_name_owner_client_parse(&n, c, &host, &pid));
    cr_assert_str_eq(host, "host.example.org");
    cr_assert_eq(pid, 4711);
    free(host);
    free(c);
    /* another node, another deployment, no process, no host: not ours */
    struct sk_names other = {"kommun.prod", "web-2"};
    cr_assert_not(
        sk_name_owner_client_parse(&other, "kommun.prod-web-1-owner-sources.h.1", &host, &pid));
    cr_assert_not(sk_name_owner_client_parse(&n, "kommun.prod-web-1-owner-sources", &host, &pid));
    cr_assert_not(sk_name_owner_client_parse(&n, "kommun.prod-web-1-owner-sources.h", &host, &pid));
    cr_assert_not(
        sk_name_owner_client_parse(&n, "kommun.prod-web-1-owner-sources..1", &host, &pid));
    cr_assert_not(
        sk_name_owner_client_parse(&n, "kommun.prod-web-1-owner-sources.h.x1", &host, &pid));
}

Test(names, the_node_of_a_client_id_with_or_without_the_process)
{
    char *n = sk_name_node_of_client("dep-n1-sink-db", "dep", "sink", "db");
    cr_assert_str_eq(n, "n1");
    free(n);
    /* the sources group's: host and pid after it */
    n = sk_name_node_of_client("dep-node-2-owner-sources.host.example.4711", "dep", "owner",
                               "sources");
    cr_assert_str_eq(n, "node-2");
    free(n);
    cr_assert_null(sk_name_node_of_client("other-n1-sink-db", "dep", "sink", "db"));
    cr_assert_null(sk_name_node_of_client("dep-n1-sink-db2", "dep", "sink", "db"));
    cr_assert_null(sk_name_node_of_client("dep--sink-db", "dep", "sink", "db"));
}
