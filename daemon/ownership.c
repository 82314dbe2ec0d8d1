/* ownership.c: the sources group and the partitions this node owns. See ownership.h. */
#include "ownership.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "util.h"

/* After a fatal error of the group's client, a new one after this long. */
#define RECREATE_MS 10000
#define DESCRIBE_TIMEOUT_MS 5000
/* The cluster view's answer is reused this long (sk_ownership_describe). */
#define VIEW_REUSE_MS 1000

struct sk_ownership {
    struct sk_kafka *kafka;
    char *topic, *group, *member, *client, *host;
    sk_ownership_changed_fn changed;
    void *ctx;
    pthread_mutex_t mu; /* guards rk against a describe while it is replaced */
    rd_kafka_t *rk;
    int64_t recreate_at_ms; /* 0: the client is healthy */
    atomic_bool owned[SK_OWNERSHIP_PARTITIONS];
    /* The group's metadata at the last assignment (member, generation),
     * serialised: the sources' commits carry it (sk_ownership_fence). */
    pthread_mutex_t md_mu;
    void *md;
    size_t md_size;
    /* The cluster view's describes (sk_ownership_describe), one at a time */
    pthread_mutex_t view_mu;
    rd_kafka_t *view_rk; /* kept after an answer; ended after a request left unanswered */
    char *view_key;      /* the groups the answer kept is of */
    cJSON *view_members; /* that answer; NULL: it failed, with view_err */
    struct sk_error view_err;
    int64_t view_ms; /* when it came */
    bool view_busy;  /* a describe is under way */
};

/* Keeps the client's group metadata now (rk NULL: forgets it). */
static void fence_keep(struct sk_ownership *o, rd_kafka_t *rk)
{
    void *buf = NULL;
    size_t size = 0;
    if (rk) {
        rd_kafka_consumer_group_metadata_t *md = rd_kafka_consumer_group_metadata(rk);
        rd_kafka_error_t *e = md ? rd_kafka_consumer_group_metadata_write(md, &buf, &size) : NULL;
        if (e) {
            sk_warn("ownership", "group %s: metadata: %s", o->group, rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
            buf = NULL;
        }
        if (md)
            rd_kafka_consumer_group_metadata_destroy(md);
    }
    pthread_mutex_lock(&o->md_mu);
    if (o->md)
        rd_kafka_mem_free(NULL, o->md);
    o->md = buf;
    o->md_size = size;
    pthread_mutex_unlock(&o->md_mu);
}

rd_kafka_consumer_group_metadata_t *sk_ownership_fence(void *ctx)
{
    struct sk_ownership *o = ctx;
    rd_kafka_consumer_group_metadata_t *md = NULL;
    pthread_mutex_lock(&o->md_mu);
    rd_kafka_error_t *e =
        o->md ? rd_kafka_consumer_group_metadata_read(&md, o->md, o->md_size) : NULL;
    pthread_mutex_unlock(&o->md_mu);
    if (e) {
        rd_kafka_error_destroy(e);
        md = NULL;
    }
    return md;
}

const char *sk_ownership_topic(const struct sk_ownership *o)
{
    return o->topic;
}

int32_t sk_ownership_partition(const char *source)
{
    uint32_t h = 2166136261u; /* FNV-1a: stable across nodes and versions */
    for (const char *c = source; *c; c++)
        h = (h ^ (unsigned char)*c) * 16777619u;
    return (int32_t)(h % SK_OWNERSHIP_PARTITIONS);
}

static void set_owned(struct sk_ownership *o, const rd_kafka_topic_partition_list_t *parts)
{
    for (int p = 0; p < SK_OWNERSHIP_PARTITIONS; p++)
        atomic_store(&o->owned[p], false);
    for (int i = 0; parts && i < parts->cnt; i++)
        if (parts->elems[i].partition >= 0 && parts->elems[i].partition < SK_OWNERSHIP_PARTITIONS &&
            strcmp(parts->elems[i].topic, o->topic) == 0)
            atomic_store(&o->owned[parts->elems[i].partition], true);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct sk_ownership *o = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        set_owned(o, parts);
        fence_keep(o, rk); /* the new generation, before a source starts */
        rd_kafka_assign(rk, parts);
        /* nothing is ever read: the partitions only say who owns what */
        rd_kafka_pause_partitions(rk, parts);
        sk_info("ownership", "group %s assigned %d partition(s)", o->group, parts->cnt);
        o->changed(o->ctx);
        return;
    }
    /* Revoked (or an error): stop the sources first, then let the group go
     * on, so another node is handed a source only once it stopped here. */
    set_owned(o, NULL);
    sk_info("ownership", "group %s revoked the partitions%s", o->group,
            rd_kafka_assignment_lost(rk) ? " (assignment lost)" : "");
    o->changed(o->ctx);
    rd_kafka_assign(rk, NULL);
}

static int check_node_free(struct sk_ownership *o, struct sk_error *err);

/* check: first see whether another live daemon already is this node
 * (at start only: a client made again after a fatal error is ours). */
static rd_kafka_t *client_new(struct sk_ownership *o, bool check, struct sk_error *err)
{
    /* clang-format off */
    const char *const defaults[] = {
        "session.timeout.ms", "10000", /* SK_OWNERSHIP_SESSION_MS */
        "heartbeat.interval.ms", "1000",
        NULL};
    /* clang-format on */
    rd_kafka_conf_t *conf = sk_kafka_conf_new(o->kafka, o->client, defaults, err);
    if (!conf)
        return NULL;
    /* Eager assignment (2.0.2's cooperative-sticky has known bugs, §8), and
     * a static member per node: a restarted node takes its sources back at
     * once, a dead one keeps them until its session ends. */
    if (sk_kafka_conf_set(conf, "group.id", o->group, err) ||
        sk_kafka_conf_set(conf, "group.instance.id", o->member, err) ||
        sk_kafka_conf_set(conf, "partition.assignment.strategy", "roundrobin", err) ||
        sk_kafka_conf_set(conf, "enable.auto.commit", "false", err) ||
        sk_kafka_conf_set(conf, "auto.offset.reset", "latest", err)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_opaque(conf, o);
    char errstr[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        sk_error_set(err, SK_ERR_FATAL, "cannot create the sources group's consumer: %s", errstr);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    if (check && check_node_free(o, err)) {
        rd_kafka_destroy(rk);
        return NULL;
    }
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, o->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (e) {
        rd_kafka_destroy(rk);
        sk_error_set(err, SK_ERR_FATAL, "cannot join group %s: %s", o->group, rd_kafka_err2str(e));
        return NULL;
    }
    sk_info("ownership", "joining group %s on %s (member %s)", o->group, o->topic, o->member);
    return rk;
}

/* The first line of /proc/<pid>/comm (pid 0: this process) into buf; false if unreadable. */
static bool read_comm(long pid, char *buf, size_t size)
{
    char path[64];
    if (pid)
        snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
    else
        snprintf(path, sizeof(path), "/proc/self/comm");
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool ok = fgets(buf, (int)size, f) != NULL;
    fclose(f);
    if (ok)
        buf[strcspn(buf, "\n")] = '\0';
    return ok;
}

/* Whether process pid of this host still runs (and is not this one). A pid
 * that a program other than ours took over since is not a daemon: its
 * command name (/proc/<pid>/comm) differs from ours. */
static bool other_process_alive(long pid)
{
    if (pid <= 0 || pid > 0x7fffffffL || pid == (long)getpid())
        return false;
    if (kill((pid_t)pid, 0) != 0 && errno != EPERM)
        return false;
    char mine[64], theirs[64];
    if (read_comm(0, mine, sizeof(mine)) && read_comm(pid, theirs, sizeof(theirs)) &&
        strcmp(mine, theirs) != 0)
        return false;
    return true;
}

/* A DescribeConsumerGroups answer, and the client made for it. */
struct described {
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    rd_kafka_event_t *ev;
    const rd_kafka_ConsumerGroupDescription_t **descs;
    size_t n;
};

/*
 * Describes the groups on rk, or on a client made for it (rk NULL); either
 * is ended by described_end unless described_keep took it back (§8.14h: a
 * coordinator's request left unanswered must end with its client, not time
 * out inside librdkafka, so never on the group's own long-lived client).
 * 0, or -1 with err.
 */
static int describe(struct sk_ownership *o, rd_kafka_t *rk, const char **groups, size_t n,
                    struct described *d, struct sk_error *err)
{
    *d = (struct described){.rk = rk};
    if (!d->rk) {
        char *cid = sk_name_client(sk_kafka_names(o->kafka), "owner", "describe");
        d->rk = sk_kafka_reader_new(o->kafka, cid, err);
        free(cid);
    }
    if (!d->rk)
        return -1;
    d->q = rd_kafka_queue_new(d->rk);
    rd_kafka_AdminOptions_t *opts =
        sk_kafka_coord_options(d->rk, RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS);
    rd_kafka_DescribeConsumerGroups(d->rk, groups, n, opts, d->q);
    rd_kafka_AdminOptions_destroy(opts);
    d->ev = sk_kafka_admin_wait(d->q, RD_KAFKA_EVENT_DESCRIBECONSUMERGROUPS_RESULT,
                                "DescribeConsumerGroups", DESCRIBE_TIMEOUT_MS, err);
    if (!d->ev)
        return -1;
    d->descs = rd_kafka_DescribeConsumerGroups_result_groups(
        rd_kafka_event_DescribeConsumerGroups_result(d->ev), &d->n);
    return 0;
}

static void described_end(struct described *d)
{
    if (d->ev)
        rd_kafka_event_destroy(d->ev);
    if (d->q)
        rd_kafka_queue_destroy(d->q); /* every object before its handle */
    if (d->rk)
        sk_kafka_destroy_within(d->rk, SK_KAFKA_DESTROY_MS, "ownership");
    *d = (struct described){0};
}

/* After an answer: its client, to describe with again (nothing of it is pending). */
static rd_kafka_t *described_keep(struct described *d)
{
    rd_kafka_t *rk = d->rk;
    d->rk = NULL;
    return rk;
}

/*
 * Two daemons with one node.name would share a static member: each join
 * fences the other, and neither runs a source for long. Before joining,
 * the group is described: a member with this node's member id from another
 * host, or from a live other process of this host, is another daemon with
 * this name, and the start is refused (-1, err says why). Our own previous
 * run, dead but still a member until its session ends, is simply replaced
 * (static membership is made for that). A group that cannot be described in
 * time does not block the start: a warning, and the join goes on (the
 * fencing then still shows as a fatal error of the group's client).
 */
static int check_node_free(struct sk_ownership *o, struct sk_error *err)
{
    const struct sk_names *names = sk_kafka_names(o->kafka);
    const char *groups[] = {o->group};
    struct described d;
    struct sk_error derr = {0};
    int rc = 0;
    if (describe(o, NULL, groups, 1, &d, &derr)) {
        sk_warn(
            "ownership",
            "cannot tell whether another daemon already runs as node %s (%s); joining %s anyway",
            names->node, derr.msg, o->group);
        goto out;
    }
    size_t nd = d.n;
    const rd_kafka_ConsumerGroupDescription_t **descs = d.descs;
    for (size_t i = 0; i < nd && !rc; i++) {
        const rd_kafka_error_t *ge = rd_kafka_ConsumerGroupDescription_error(descs[i]);
        if (ge && rd_kafka_error_code(ge) == RD_KAFKA_RESP_ERR_GROUP_ID_NOT_FOUND)
            continue; /* the first node of a new deployment */
        if (ge) {
            sk_warn("ownership",
                    "cannot tell whether another daemon already runs as node %s (%s: %s); "
                    "joining anyway",
                    names->node, o->group, rd_kafka_error_string(ge));
            continue;
        }
        size_t nm = rd_kafka_ConsumerGroupDescription_member_count(descs[i]);
        for (size_t k = 0; k < nm && !rc; k++) {
            const rd_kafka_MemberDescription_t *md =
                rd_kafka_ConsumerGroupDescription_member(descs[i], k);
            const char *instance = rd_kafka_MemberDescription_group_instance_id(md);
            if (!instance || strcmp(instance, o->member) != 0)
                continue;
            const char *client = rd_kafka_MemberDescription_client_id(md);
            const char *addr = rd_kafka_MemberDescription_host(md);
            char *host = NULL;
            long pid = 0;
            if (!sk_name_owner_client_parse(names, client, &host, &pid)) {
                /* An older daemon's client id says nothing of its process:
                 * it may be this node's previous run; do not refuse on a guess. */
                sk_warn("ownership",
                        "group %s already has a member %s (client %s at %s) that does not say "
                        "which process it is; joining: if it is another live daemon with node.name "
                        "%s, the two fence each other",
                        o->group, instance, client, addr ? addr : "?", names->node);
                continue;
            }
            bool here = strcmp(host, o->host) == 0;
            if (!here || other_process_alive(pid)) {
                /* Why and what to do first: err.msg holds 512 characters. */
                sk_error_log("ownership",
                             "group %s has member %s from client %s at %s: two daemons with "
                             "one node.name fence each other, so this one does not start%s",
                             o->group, instance, client, addr ? addr : "?",
                             here ? ""
                                  : " (if that daemon was stopped or moved away less than 10 s "
                                    "ago, its session ends then: start again after it)");
                sk_error_set(err, SK_ERR_FATAL,
                             "node %s of deployment %s already runs on host %s (pid %ld%s, "
                             "client %s): give each daemon its own node.name",
                             names->node, names->deployment, host, pid, here ? ", alive" : "",
                             client);
                rc = -1;
            } else {
                sk_info("ownership",
                        "group %s still has this node's previous run (client %s, pid %ld, no "
                        "longer running): replacing it",
                        o->group, client, pid);
            }
            free(host);
        }
    }
out:
    described_end(&d);
    return rc;
}

struct sk_ownership *sk_ownership_start(struct sk_kafka *k, sk_ownership_changed_fn changed,
                                        void *ctx, struct sk_error *err)
{
    struct sk_ownership *o = sk_calloc(1, sizeof(*o));
    const struct sk_names *names = sk_kafka_names(k);
    o->kafka = k;
    o->changed = changed;
    o->ctx = ctx;
    o->topic = sk_asprintf("%s_sources", sk_kafka_prefix(k));
    o->group = sk_name_sources_group(names);
    o->member = sk_name_sources_member(names);
    o->host = sk_name_host();
    o->client = sk_name_owner_client(names, o->host, (long)getpid());
    pthread_mutex_init(&o->mu, NULL);
    pthread_mutex_init(&o->md_mu, NULL);
    pthread_mutex_init(&o->view_mu, NULL);
    for (int p = 0; p < SK_OWNERSHIP_PARTITIONS; p++)
        atomic_init(&o->owned[p], false);
    const char *topics[] = {o->topic};
    if (sk_kafka_ensure_topics(k, topics, 1, true, SK_OWNERSHIP_PARTITIONS, err) ||
        !(o->rk = client_new(o, true, err))) {
        sk_ownership_stop(o);
        return NULL;
    }
    return o;
}

/* A fatal error (another live member with this node's name fenced us, an
 * authorisation refused): nothing is owned; a new client after a while. */
static void client_failed(struct sk_ownership *o, const char *why)
{
    sk_error_log("ownership", "group %s: %s; running no source, trying again in %d s", o->group,
                 why, RECREATE_MS / 1000);
    set_owned(o, NULL);
    o->changed(o->ctx);
    fence_keep(o, NULL); /* a new client is a new member */
    pthread_mutex_lock(&o->mu);
    rd_kafka_t *rk = o->rk;
    o->rk = NULL;
    pthread_mutex_unlock(&o->mu);
    rd_kafka_consumer_close(rk);
    sk_kafka_destroy_within(rk, SK_KAFKA_DESTROY_MS, "sources group");
    o->recreate_at_ms = sk_mono_ms() + RECREATE_MS;
}

void sk_ownership_poll(struct sk_ownership *o)
{
    if (!o->rk) {
        if (sk_mono_ms() < o->recreate_at_ms)
            return;
        struct sk_error err = {0};
        rd_kafka_t *rk = client_new(o, false, &err);
        if (!rk) {
            sk_error_log("ownership", "%s", err.msg);
            o->recreate_at_ms = sk_mono_ms() + RECREATE_MS;
            return;
        }
        pthread_mutex_lock(&o->mu);
        o->rk = rk;
        pthread_mutex_unlock(&o->mu);
    }
    rd_kafka_message_t *m;
    while ((m = rd_kafka_consumer_poll(o->rk, 0))) {
        rd_kafka_resp_err_t e = m->err;
        rd_kafka_message_destroy(m);
        if (e == RD_KAFKA_RESP_ERR__FATAL) {
            char why[512];
            rd_kafka_fatal_error(o->rk, why, sizeof(why));
            client_failed(o, why);
            return;
        }
        if (e && e != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            sk_warn("ownership", "group %s: %s", o->group, rd_kafka_err2str(e));
    }
}

bool sk_ownership_owns(struct sk_ownership *o, const char *source)
{
    return atomic_load(&o->owned[sk_ownership_partition(source)]);
}

const char *sk_ownership_group(const struct sk_ownership *o)
{
    return o->group;
}

void sk_ownership_stop(struct sk_ownership *o)
{
    if (!o)
        return;
    /* Without the consumer's close: a static member leaves no group on
     * close and commits nothing, and the close waited for the group round
     * under way: after a broker restart, a SIGTERM that came while this
     * member was rejoining kept the daemon alive past its shutdown, its
     * connectors long stopped (test_broker_outage in CI, 2026-12-04). */
    if (o->rk)
        rd_kafka_destroy_flags(o->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    pthread_mutex_destroy(&o->mu);
    if (o->md)
        rd_kafka_mem_free(NULL, o->md);
    pthread_mutex_destroy(&o->md_mu);
    if (o->view_rk)
        sk_kafka_destroy_within(o->view_rk, SK_KAFKA_DESTROY_MS, "cluster view");
    cJSON_Delete(o->view_members);
    free(o->view_key);
    pthread_mutex_destroy(&o->view_mu);
    free(o->topic);
    free(o->group);
    free(o->member);
    free(o->client);
    free(o->host);
    free(o);
}

void sk_ownership_members_json(cJSON *out, const rd_kafka_ConsumerGroupDescription_t *desc,
                               const struct sk_group_ref *g, const char *deployment)
{
    size_t nm = rd_kafka_ConsumerGroupDescription_member_count(desc);
    for (size_t k = 0; k < nm; k++) {
        const rd_kafka_MemberDescription_t *md = rd_kafka_ConsumerGroupDescription_member(desc, k);
        const char *client = rd_kafka_MemberDescription_client_id(md);
        char *node = sk_name_node_of_client(client, deployment, g->role, g->connector);
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "group", g->group);
        cJSON_AddStringToObject(m, "node", node ? node : client);
        free(node);
        cJSON *parts = cJSON_AddArrayToObject(m, "partitions");
        const rd_kafka_MemberAssignment_t *ma = rd_kafka_MemberDescription_assignment(md);
        const rd_kafka_topic_partition_list_t *tps =
            ma ? rd_kafka_MemberAssignment_partitions(ma) : NULL;
        for (int t = 0; tps && t < tps->cnt; t++) {
            char *tp = sk_asprintf("%s/%" PRId32, tps->elems[t].topic, tps->elems[t].partition);
            cJSON_AddItemToArray(parts, cJSON_CreateString(tp));
            free(tp);
        }
        cJSON_AddItemToArray(out, m);
    }
}

/* Describes the groups on *rk (NULL: a new client), which is left
 * holding the client to keep (one that answered) or NULL. */
static cJSON *view_describe(struct sk_ownership *o, rd_kafka_t **rk,
                            const struct sk_group_ref *groups, size_t n, struct sk_error *err)
{
    const char **names = sk_calloc(n ? n : 1, sizeof(*names));
    for (size_t i = 0; i < n; i++)
        names[i] = groups[i].group;
    cJSON *out = NULL;
    struct described d;
    if (describe(o, *rk, names, n, &d, err) == 0) {
        out = cJSON_CreateArray();
        const char *deployment = sk_kafka_names(o->kafka)->deployment;
        for (size_t i = 0; i < d.n; i++) {
            const char *id = rd_kafka_ConsumerGroupDescription_group_id(d.descs[i]);
            for (size_t g = 0; g < n; g++)
                if (strcmp(groups[g].group, id) == 0 &&
                    !rd_kafka_ConsumerGroupDescription_error(d.descs[i]))
                    sk_ownership_members_json(out, d.descs[i], &groups[g], deployment);
        }
    }
    /* answered: kept for the next; not: ended with its request */
    *rk = out ? described_keep(&d) : NULL;
    described_end(&d);
    free(names);
    return out;
}

cJSON *sk_ownership_describe(struct sk_ownership *o, const struct sk_group_ref *groups, size_t n,
                             int64_t *age_ms, struct sk_error *err)
{
    struct sk_buf b = {0};
    for (size_t i = 0; i < n; i++) {
        sk_buf_puts(&b, groups[i].group);
        sk_buf_putc(&b, '\n');
    }
    char *key = sk_buf_take(&b);
    pthread_mutex_lock(&o->view_mu);
    bool same = o->view_key && strcmp(o->view_key, key) == 0;
    if (!(same && sk_mono_ms() - o->view_ms < VIEW_REUSE_MS) && !o->view_busy) {
        /* This thread describes; one that comes meanwhile answers with the
         * last description instead of waiting for the broker too (the
         * admin server has two threads: /ready and /metrics stay served). */
        o->view_busy = true;
        rd_kafka_t *rk = o->view_rk;
        o->view_rk = NULL;
        pthread_mutex_unlock(&o->view_mu);
        struct sk_error derr = {0};
        cJSON *members = view_describe(o, &rk, groups, n, &derr);
        pthread_mutex_lock(&o->view_mu);
        o->view_rk = rk;
        cJSON_Delete(o->view_members);
        o->view_members = members;
        o->view_err = derr;
        free(o->view_key);
        o->view_key = key;
        key = NULL;
        o->view_ms = sk_mono_ms();
        o->view_busy = false;
        same = true;
    }
    cJSON *out = NULL;
    if (!same)
        sk_error_set(err, SK_ERR_RETRIABLE, "a description of the groups is under way");
    else if (!(out = o->view_members ? cJSON_Duplicate(o->view_members, true) : NULL))
        *err = o->view_err;
    *age_ms = sk_mono_ms() - o->view_ms;
    pthread_mutex_unlock(&o->view_mu);
    free(key);
    return out;
}

const char *sk_ownership_owner_of(const cJSON *members, const char *group, const char *topic,
                                  const char *source)
{
    char *want = sk_asprintf("%s/%" PRId32, topic, sk_ownership_partition(source));
    const char *owner = NULL;
    const cJSON *m, *tp;
    cJSON_ArrayForEach(m, members)
    {
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(m, "group");
        const cJSON *node = cJSON_GetObjectItemCaseSensitive(m, "node");
        if (!cJSON_IsString(g) || strcmp(g->valuestring, group) != 0 || !cJSON_IsString(node))
            continue;
        cJSON_ArrayForEach(tp, cJSON_GetObjectItemCaseSensitive(m, "partitions"))
        {
            if (!owner && cJSON_IsString(tp) && strcmp(tp->valuestring, want) == 0)
                owner = node->valuestring;
        }
    }
    free(want);
    return owner;
}
