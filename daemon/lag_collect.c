/*
 * lag_collect.c: one sample of consumer-group lag from the brokers: the
 * groups, their committed offsets and members, the partitions' watermarks,
 * and the first unconsumed record of each lagging partition (its age).
 *
 * Owns: its own short-lived Kafka client per collection (admin requests,
 * watermark queries and the reader of first unconsumed records all go
 * through it, so nothing queues behind a sink's fetches).
 * Must never: call DescribeConsumerGroups on the embedded broker (the 2.0.2
 * mock aborts on it), commit an offset, or join a group (the reader only
 * assigns).
 */
#include "lag.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "kafka.h"
#include "log.h"
#include "ownership.h"
#include "util.h"

/* Never starts with "skolsync-": the reader never joins or commits, but if it
 * ever did it must not show up among the groups it monitors. */
#define READER_GROUP "_skolsync_lag_reader"

/* ---- collection ------------------------------------------------------------ */

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    /* The caller reports what failed in one line; the client's own chatter
     * (connection refused, retries) is for debugging. */
    (void)rk;
    (void)level;
    sk_debug("lag", "librdkafka %s: %s", fac, buf);
}

static rd_kafka_t *client_new(const struct sk_lag_collect_options *o, struct sk_error *err)
{
    /* Tuning a user's kafka.properties may override: small prefetch, since
     * the reader wants one record (or up to exact_bound) per partition. */
    static const char *const defaults[] = {"fetch.wait.max.ms", "100", "queued.max.messages.kbytes",
                                           "1024", NULL};
    rd_kafka_conf_t *conf;
    if (o->kafka) {
        /* the daemon's own monitor: named by its deployment and node */
        const struct sk_names *n = sk_kafka_names(o->kafka);
        char *cid = sk_asprintf("%s-%s-lag", n->deployment, n->node);
        conf = sk_kafka_conf_new(o->kafka, cid, defaults, err);
        free(cid);
        if (!conf)
            return NULL;
    } else {
        conf = rd_kafka_conf_new();
        if (sk_kafka_conf_set(conf, "bootstrap.servers", o->brokers, err) ||
            sk_kafka_conf_set(conf, "client.id", "skolsync-lag", err))
            goto fail;
        for (size_t i = 0; defaults[i]; i += 2)
            if (sk_kafka_conf_set(conf, defaults[i], defaults[i + 1], err))
                goto fail;
        for (size_t i = 0; o->properties && i < o->properties->n; i++)
            if (sk_kafka_conf_set(conf, o->properties->keys[i], o->properties->values[i], err))
                goto fail;
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    /* What the numbers mean depends on these, so no property may change them:
     * committed records only (the end is the last stable offset, aborted
     * records and markers are skipped), never a commit, never a join. */
    if (sk_kafka_conf_set(conf, "isolation.level", "read_committed", err) ||
        sk_kafka_conf_set(conf, "group.id", READER_GROUP, err) ||
        sk_kafka_conf_set(conf, "enable.auto.commit", "false", err) ||
        sk_kafka_conf_set(conf, "enable.auto.offset.store", "false", err) ||
        sk_kafka_conf_set(conf, "enable.partition.eof", "true", err) ||
        sk_kafka_conf_set(conf, "auto.offset.reset", "earliest", err) ||
        sk_kafka_conf_set(conf, "allow.auto.create.topics", "false", err))
        goto fail;
    char errstr[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        sk_error_set(err, SK_ERR_FATAL, "cannot create Kafka client: %s", errstr);
        goto fail;
    }
    return rk;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

static rd_kafka_AdminOptions_t *admin_options(rd_kafka_t *rk, rd_kafka_admin_op_t op,
                                              int64_t timeout_ms)
{
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, op);
    char errstr[256];
    rd_kafka_AdminOptions_set_request_timeout(opts, (int)timeout_ms, errstr, sizeof(errstr));
    return opts;
}

static bool has_prefix(const char *s, const char *prefix)
{
    return !prefix || !*prefix || strncmp(s, prefix, strlen(prefix)) == 0;
}

static int cmp_group(const void *a, const void *b)
{
    return strcmp(((const struct sk_lag_group *)a)->group, ((const struct sk_lag_group *)b)->group);
}

static int cmp_part(const void *a, const void *b)
{
    const struct sk_lag_partition *x = a, *y = b;
    int c = strcmp(x->topic, y->topic);
    return c ? c : (x->partition > y->partition) - (x->partition < y->partition);
}

static void add_group(struct sk_lag_report *r, const char *name)
{
    for (size_t i = 0; i < r->n_groups; i++)
        if (strcmp(r->groups[i].group, name) == 0)
            return;
    r->groups = sk_realloc(r->groups, (r->n_groups + 1) * sizeof(*r->groups));
    struct sk_lag_group *g = &r->groups[r->n_groups++];
    memset(g, 0, sizeof(*g));
    g->group = sk_strdup(name);
}

static int list_groups(rd_kafka_t *rk, rd_kafka_queue_t *q, const struct sk_lag_collect_options *o,
                       struct sk_lag_report *r, int brokers, struct sk_error *err)
{
    rd_kafka_AdminOptions_t *opts =
        admin_options(rk, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPS, o->timeout_ms);
    rd_kafka_ListConsumerGroups(rk, opts, q);
    rd_kafka_AdminOptions_destroy(opts);
    r->requests.list_groups += brokers; /* one ListGroups per broker */
    rd_kafka_event_t *ev = sk_kafka_admin_wait(q, RD_KAFKA_EVENT_LISTCONSUMERGROUPS_RESULT,
                                               "ListConsumerGroups", o->timeout_ms, err);
    if (!ev)
        return -1;
    const rd_kafka_ListConsumerGroups_result_t *res = rd_kafka_event_ListConsumerGroups_result(ev);
    size_t n = 0, n_err = 0;
    const rd_kafka_ConsumerGroupListing_t **list =
        rd_kafka_ListConsumerGroups_result_valid(res, &n);
    const rd_kafka_error_t **errs = rd_kafka_ListConsumerGroups_result_errors(res, &n_err);
    for (size_t i = 0; i < n_err; i++)
        sk_warn("lag", "ListConsumerGroups: %s", rd_kafka_error_string(errs[i]));
    const char *prefix = o->all_groups ? NULL : (o->prefix ? o->prefix : "skolsync-");
    for (size_t i = 0; i < n; i++) {
        const char *id = rd_kafka_ConsumerGroupListing_group_id(list[i]);
        if (has_prefix(id, prefix) && strcmp(id, READER_GROUP) != 0)
            add_group(r, id);
    }
    rd_kafka_event_destroy(ev);
    if (n == 0 && n_err > 0)
        return sk_error_set(err, SK_ERR_RETRIABLE, "ListConsumerGroups: %s",
                            rd_kafka_error_string(errs[0]));
    return 0;
}

/* asked: the partitions to ask for (NULL: all the group committed to). */
static void group_offsets(rd_kafka_t *rk, rd_kafka_queue_t *q,
                          const struct sk_lag_collect_options *o, struct sk_lag_report *r,
                          struct sk_lag_group *g, const rd_kafka_topic_partition_list_t *asked)
{
    rd_kafka_ListConsumerGroupOffsets_t *req =
        rd_kafka_ListConsumerGroupOffsets_new(g->group, asked);
    /* a coordinator's request: librdkafka's timeout is never reached, the
     * client is destroyed at the sample's end (§8.14h) */
    rd_kafka_AdminOptions_t *opts =
        sk_kafka_coord_options(rk, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS);
    /* 2.0.2: exactly one group per call (docs/architecture.md §8.8). */
    rd_kafka_ListConsumerGroupOffsets(rk, &req, 1, opts, q);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_ListConsumerGroupOffsets_destroy(req);
    r->requests.offset_fetch++;
    struct sk_error err = {0};
    rd_kafka_event_t *ev = sk_kafka_admin_wait(q, RD_KAFKA_EVENT_LISTCONSUMERGROUPOFFSETS_RESULT,
                                               "ListConsumerGroupOffsets", o->timeout_ms, &err);
    if (!ev) {
        g->error = sk_strdup(err.msg);
        return;
    }
    size_t n = 0;
    const rd_kafka_ListConsumerGroupOffsets_result_t *lr =
        rd_kafka_event_ListConsumerGroupOffsets_result(ev);
    const rd_kafka_group_result_t **res = rd_kafka_ListConsumerGroupOffsets_result_groups(lr, &n);
    for (size_t i = 0; i < n; i++) {
        const rd_kafka_error_t *e = rd_kafka_group_result_error(res[i]);
        if (e) {
            g->error = sk_strdup(rd_kafka_error_string(e));
            continue;
        }
        const rd_kafka_topic_partition_list_t *parts = rd_kafka_group_result_partitions(res[i]);
        for (int j = 0; parts && j < parts->cnt; j++) {
            const rd_kafka_topic_partition_t *tp = &parts->elems[j];
            if (tp->offset < 0 && !tp->err && o->n_topics == 0)
                continue; /* asked for every topic: only those it reads matter */
            g->parts = sk_realloc(g->parts, (g->n_parts + 1) * sizeof(*g->parts));
            struct sk_lag_partition *p = &g->parts[g->n_parts++];
            memset(p, 0, sizeof(*p));
            p->topic = sk_strdup(tp->topic);
            p->partition = tp->partition;
            p->committed = tp->offset >= 0 ? tp->offset : -1;
            p->low = p->end = p->lag = p->first_ts_ms = -1;
            p->lag_seconds = -1;
            if (tp->err)
                p->error = sk_asprintf("offset fetch: %s", rd_kafka_err2str(tp->err));
        }
    }
    rd_kafka_event_destroy(ev);
    if (g->n_parts > 1)
        qsort(g->parts, g->n_parts, sizeof(*g->parts), cmp_part);
}

/*
 * The partitions of asked that group reads, when the caller said which topics
 * each group reads (o->group_topics); NULL otherwise. Caller destroys.
 */
static rd_kafka_topic_partition_list_t *own_partitions(const struct sk_lag_collect_options *o,
                                                       const char *group,
                                                       const rd_kafka_topic_partition_list_t *asked)
{
    if (!o->group_topics || !asked)
        return NULL;
    size_t g = 0;
    while (g < o->n_groups && strcmp(o->groups[g], group) != 0)
        g++;
    if (g == o->n_groups)
        return NULL;
    rd_kafka_topic_partition_list_t *own = rd_kafka_topic_partition_list_new(asked->cnt);
    for (int i = 0; i < asked->cnt; i++)
        for (size_t t = 0; t < o->n_group_topics[g]; t++)
            if (strcmp(asked->elems[i].topic, o->group_topics[g][t]) == 0)
                rd_kafka_topic_partition_list_add(own, asked->elems[i].topic,
                                                  asked->elems[i].partition);
    return own;
}

/* The index of the sink whose group this is (o->sink_groups), or -1. */
static ptrdiff_t sink_index(const struct sk_lag_collect_options *o, const char *group)
{
    for (size_t i = 0; o->sink_groups && i < o->n_sinks; i++)
        if (strcmp(o->sink_groups[i], group) == 0)
            return (ptrdiff_t)i;
    return -1;
}

/* The sink whose group this is, when the caller said (o->sink_groups); NULL otherwise. */
static const char *sink_of(const struct sk_lag_collect_options *o, const char *group)
{
    ptrdiff_t i = sink_index(o, group);
    return i < 0 ? NULL : o->sink_names[i];
}

/* A member's node: read from its client id, as GET /api/v1/cluster reads it
 * (names.h), when the deployment and the sink are known; else the client id. */
static char *member_node(const struct sk_lag_collect_options *o, const char *group,
                         const char *client)
{
    const char *sink = sink_of(o, group);
    char *node =
        o->deployment && sink ? sk_name_node_of_client(client, o->deployment, "sink", sink) : NULL;
    return node ? node : sk_strdup(client);
}

/* Each source's owner from the sources group's description: the reading
 * GET /api/v1/cluster makes (ownership.h), so the two never disagree. */
static void source_owners(const struct sk_lag_collect_options *o, struct sk_lag_report *r,
                          const rd_kafka_ConsumerGroupDescription_t *desc)
{
    cJSON *members = cJSON_CreateArray();
    struct sk_group_ref ref = {o->sources_group, "owner", "sources"};
    sk_ownership_members_json(members, desc, &ref, o->deployment ? o->deployment : "");
    for (size_t i = 0; i < r->n_sources; i++) {
        const char *owner =
            sk_ownership_owner_of(members, o->sources_group, o->sources_topic, r->sources[i].name);
        if (owner)
            r->sources[i].owner = sk_strdup(owner);
    }
    cJSON_Delete(members);
}

/* The node a node-local sink's group is of (o->sink_nodes), or NULL. */
static const char *node_of_local(const struct sk_lag_collect_options *o, const char *group)
{
    ptrdiff_t i = o->sink_nodes ? sink_index(o, group) : -1;
    return i < 0 ? NULL : o->sink_nodes[i];
}

/* Each partition's owner: the node of the member assigned it (none while the
 * group is empty or rebalancing). */
static void partition_owners(struct sk_lag_group *g)
{
    for (size_t i = 0; i < g->n_parts; i++) {
        struct sk_lag_partition *p = &g->parts[i];
        char *tp = sk_asprintf("%s/%" PRId32, p->topic, p->partition);
        for (size_t m = 0; m < g->n_members && !p->owner; m++)
            for (size_t a = 0; a < g->members[m].n_assignment && !p->owner; a++)
                if (strcmp(g->members[m].assignment[a], tp) == 0)
                    p->owner = sk_strdup(g->members[m].node);
        free(tp);
    }
}

static void describe_groups(rd_kafka_t *rk, rd_kafka_queue_t *q,
                            const struct sk_lag_collect_options *o, struct sk_lag_report *r)
{
    bool sources = o->sources_group && o->sources_topic && r->n_sources > 0;
    size_t n_names = r->n_groups + sources;
    if (n_names == 0)
        return;
    const char **names = sk_calloc(n_names, sizeof(*names));
    for (size_t i = 0; i < r->n_groups; i++)
        names[i] = r->groups[i].group;
    if (sources) /* one call for both: batched per coordinator anyway */
        names[r->n_groups] = o->sources_group;
    rd_kafka_AdminOptions_t *opts = /* a coordinator's request (§8.14h) */
        sk_kafka_coord_options(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS);
    rd_kafka_DescribeConsumerGroups(rk, names, n_names, opts, q);
    rd_kafka_AdminOptions_destroy(opts);
    free(names);
    r->requests.describe_groups++; /* batched per coordinator */
    struct sk_error err = {0};
    rd_kafka_event_t *ev = sk_kafka_admin_wait(q, RD_KAFKA_EVENT_DESCRIBECONSUMERGROUPS_RESULT,
                                               "DescribeConsumerGroups", o->timeout_ms, &err);
    if (!ev) {
        sk_warn("lag", "members unknown: %s", err.msg);
        return;
    }
    size_t n = 0;
    const rd_kafka_DescribeConsumerGroups_result_t *dr =
        rd_kafka_event_DescribeConsumerGroups_result(ev);
    const rd_kafka_ConsumerGroupDescription_t **descs =
        rd_kafka_DescribeConsumerGroups_result_groups(dr, &n);
    for (size_t i = 0; i < n; i++) {
        const char *id = rd_kafka_ConsumerGroupDescription_group_id(descs[i]);
        if (rd_kafka_ConsumerGroupDescription_error(descs[i]))
            continue;
        if (sources && strcmp(id, o->sources_group) == 0) {
            source_owners(o, r, descs[i]);
            continue;
        }
        struct sk_lag_group *g = NULL;
        for (size_t k = 0; k < r->n_groups && !g; k++)
            if (strcmp(r->groups[k].group, id) == 0)
                g = &r->groups[k];
        if (!g)
            continue;
        g->members_known = true;
        g->state = sk_strdup(
            rd_kafka_consumer_group_state_name(rd_kafka_ConsumerGroupDescription_state(descs[i])));
        size_t nm = rd_kafka_ConsumerGroupDescription_member_count(descs[i]);
        g->members = nm ? sk_calloc(nm, sizeof(*g->members)) : NULL;
        for (size_t k = 0; k < nm; k++) {
            const rd_kafka_MemberDescription_t *md =
                rd_kafka_ConsumerGroupDescription_member(descs[i], k);
            struct sk_lag_member *m = &g->members[g->n_members++];
            m->client_id = sk_strdup(rd_kafka_MemberDescription_client_id(md));
            m->consumer_id = sk_strdup(rd_kafka_MemberDescription_consumer_id(md));
            m->host = sk_strdup(rd_kafka_MemberDescription_host(md));
            m->node = member_node(o, g->group, m->client_id);
            const rd_kafka_MemberAssignment_t *ma = rd_kafka_MemberDescription_assignment(md);
            const rd_kafka_topic_partition_list_t *tps =
                ma ? rd_kafka_MemberAssignment_partitions(ma) : NULL;
            if (tps && tps->cnt > 0) {
                m->assignment = sk_calloc((size_t)tps->cnt, sizeof(char *));
                for (int t = 0; t < tps->cnt; t++)
                    m->assignment[m->n_assignment++] =
                        sk_asprintf("%s/%" PRId32, tps->elems[t].topic, tps->elems[t].partition);
            }
        }
        partition_owners(g);
        const char *node = nm ? NULL : node_of_local(o, g->group);
        if (node) { /* read by the node's shared consumer: no member to see */
            g->members_known = false;
            for (size_t p = 0; p < g->n_parts; p++)
                if (!g->parts[p].owner)
                    g->parts[p].owner = sk_strdup(node);
        }
    }
    rd_kafka_event_destroy(ev);
}

/* One partition the reader is assigned to. */
struct reading {
    struct sk_lag_partition *p;
    int64_t read, first_ts;
    bool exact, done, at_end;
};

static void reading_finish(rd_kafka_t *rk, struct reading *x, bool at_end)
{
    x->done = true;
    x->at_end = at_end;
    /* Stop fetching it: nothing more of this partition is needed. */
    rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(one, x->p->topic, x->p->partition);
    rd_kafka_pause_partitions(rk, one);
    rd_kafka_topic_partition_list_destroy(one);
}

/*
 * Reads, from every partition that may have lag, the first consumable record
 * at or after its committed offset (its timestamp is the seconds-lag) and,
 * when the gap is at most exact_bound, counts the consumable records up to
 * the sampled end (markers and aborted records are skipped by the client).
 */
static void read_first_records(rd_kafka_t *rk, const struct sk_lag_collect_options *o,
                               struct sk_lag_report *r)
{
    size_t n = 0, cap = 0;
    struct reading *v = NULL;
    rd_kafka_topic_partition_list_t *assign = rd_kafka_topic_partition_list_new(16);
    for (size_t i = 0; i < r->n_groups; i++) {
        struct sk_lag_group *g = &r->groups[i];
        for (size_t j = 0; j < g->n_parts; j++) {
            struct sk_lag_partition *p = &g->parts[j];
            if (p->error)
                continue;
            int64_t from = p->committed >= 0 ? p->committed : p->low;
            if (from < p->low)
                from = p->low; /* records deleted unread: the first that is left */
            if (p->end <= from) {
                sk_lag_partition_settle(p, 0, true, -1, r->time_ms);
                continue;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                v = sk_realloc(v, cap * sizeof(*v));
            }
            v[n++] =
                (struct reading){.p = p, .first_ts = -1, .exact = p->end - from <= o->exact_bound};
            /* A partition is assigned once per round: groups at the same
             * committed offset share the read, a group at another offset is
             * read in a later round (within the same budget). */
            bool dup = false;
            for (int k = 0; k < assign->cnt; k++)
                if (assign->elems[k].partition == p->partition &&
                    strcmp(assign->elems[k].topic, p->topic) == 0)
                    dup = true;
            if (!dup)
                rd_kafka_topic_partition_list_add(assign, p->topic, p->partition)->offset = from;
        }
    }
    int64_t deadline = sk_mono_ms() + o->read_ms;
    size_t left = n;
    /* A partition watched by several groups is read once per distinct start:
     * rounds re-assign what is still unread. */
    while (left > 0 && assign->cnt > 0 && sk_mono_ms() < deadline) {
        rd_kafka_assign(rk, assign);
        /* A partition paused when an earlier round finished it stays paused
         * across assignments: resume this round's. */
        rd_kafka_resume_partitions(rk, assign);
        r->requests.read_partitions += assign->cnt;
        while (sk_mono_ms() < deadline) {
            bool round_done = true;
            for (size_t i = 0; i < n && round_done; i++)
                for (int k = 0; k < assign->cnt && round_done; k++)
                    if (!v[i].done && v[i].p->partition == assign->elems[k].partition &&
                        strcmp(v[i].p->topic, assign->elems[k].topic) == 0 &&
                        (v[i].p->committed >= 0 ? v[i].p->committed : v[i].p->low) ==
                            assign->elems[k].offset)
                        round_done = false;
            if (round_done)
                break;
            rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
            if (!m)
                continue;
            if (!m->rkt) {
                rd_kafka_message_destroy(m);
                continue;
            }
            const char *topic = rd_kafka_topic_name(m->rkt);
            for (size_t i = 0; i < n; i++) {
                struct reading *x = &v[i];
                if (x->done || x->p->partition != m->partition || strcmp(x->p->topic, topic) != 0)
                    continue;
                int64_t from = x->p->committed >= 0 ? x->p->committed : x->p->low;
                if (from < x->p->low)
                    from = x->p->low;
                bool in_round = false;
                for (int k = 0; k < assign->cnt; k++)
                    if (assign->elems[k].partition == m->partition &&
                        strcmp(assign->elems[k].topic, topic) == 0 &&
                        assign->elems[k].offset == from)
                        in_round = true;
                if (!in_round)
                    continue;
                if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                    reading_finish(rk, x, true);
                } else if (m->err) {
                    x->p->error = sk_asprintf("read: %s", rd_kafka_message_errstr(m));
                    reading_finish(rk, x, false);
                } else if (m->offset >= x->p->end) {
                    reading_finish(rk, x, true); /* beyond the sampled end */
                } else {
                    if (x->read++ == 0)
                        x->first_ts = rd_kafka_message_timestamp(m, NULL);
                    r->requests.read_records++;
                    if (!x->exact || m->offset + 1 >= x->p->end)
                        reading_finish(rk, x, m->offset + 1 >= x->p->end);
                }
                if (x->done)
                    left--;
            }
            rd_kafka_message_destroy(m);
        }
        rd_kafka_assign(rk, NULL);
        /* Next round: the partitions still unread at another start offset. */
        rd_kafka_topic_partition_list_destroy(assign);
        assign = rd_kafka_topic_partition_list_new(16);
        for (size_t i = 0; i < n; i++) {
            if (v[i].done || v[i].read > 0)
                continue;
            int64_t from = v[i].p->committed >= 0 ? v[i].p->committed : v[i].p->low;
            if (from < v[i].p->low)
                from = v[i].p->low;
            bool dup = false;
            for (int k = 0; k < assign->cnt; k++)
                if (assign->elems[k].partition == v[i].p->partition &&
                    strcmp(assign->elems[k].topic, v[i].p->topic) == 0)
                    dup = true;
            if (!dup)
                rd_kafka_topic_partition_list_add(assign, v[i].p->topic, v[i].p->partition)
                    ->offset = from;
        }
    }
    rd_kafka_topic_partition_list_destroy(assign);
    int64_t now = sk_now_us() / 1000;
    for (size_t i = 0; i < n; i++)
        sk_lag_partition_settle(v[i].p, v[i].read, v[i].at_end, v[i].first_ts, now);
    free(v);
}

/* One partition's offset from a batched answer, or its error. */
static rd_kafka_resp_err_t answer(const rd_kafka_topic_partition_list_t *l,
                                  rd_kafka_resp_err_t call, const char *topic, int32_t partition,
                                  int64_t *offset)
{
    const rd_kafka_topic_partition_t *el = rd_kafka_topic_partition_list_find(l, topic, partition);
    if (!el)
        return RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION;
    if (el->err)
        return el->err;
    if (el->offset < 0) /* no answer for it: the request as a whole failed */
        return call ? call : RD_KAFKA_RESP_ERR__TIMED_OUT;
    *offset = el->offset;
    return RD_KAFKA_RESP_ERR_NO_ERROR;
}

/*
 * Start and end offsets of every distinct partition, shared by every group
 * that committed to it: two batched ListOffsets per broker
 * (sk_kafka_list_offsets), where one query per partition cost 200 round
 * trips for 100 partitions. The end honours isolation.level: it is the
 * last stable offset.
 */
static void query_watermarks(rd_kafka_t *rk, const struct sk_lag_collect_options *o,
                             struct sk_lag_report *r, int brokers)
{
    rd_kafka_topic_partition_list_t *hi = rd_kafka_topic_partition_list_new(16);
    for (size_t i = 0; i < r->n_groups; i++)
        for (size_t j = 0; j < r->groups[i].n_parts; j++) {
            const struct sk_lag_partition *p = &r->groups[i].parts[j];
            if (!rd_kafka_topic_partition_list_find(hi, p->topic, p->partition))
                rd_kafka_topic_partition_list_add(hi, p->topic, p->partition);
        }
    if (hi->cnt == 0) {
        rd_kafka_topic_partition_list_destroy(hi);
        return;
    }
    rd_kafka_topic_partition_list_t *lo = rd_kafka_topic_partition_list_copy(hi);
    rd_kafka_resp_err_t e_lo =
        sk_kafka_list_offsets(rk, lo, RD_KAFKA_OFFSET_BEGINNING, (int)o->timeout_ms);
    rd_kafka_resp_err_t e_hi =
        sk_kafka_list_offsets(rk, hi, RD_KAFKA_OFFSET_END, (int)o->timeout_ms);
    /* one request per leader: at most one per broker for each of the two */
    r->requests.list_offsets += 2 * (hi->cnt < brokers ? hi->cnt : brokers);
    for (size_t i = 0; i < r->n_groups; i++)
        for (size_t j = 0; j < r->groups[i].n_parts; j++) {
            struct sk_lag_partition *p = &r->groups[i].parts[j];
            int64_t low = -1, end = -1;
            rd_kafka_resp_err_t e = answer(lo, e_lo, p->topic, p->partition, &low);
            if (!e)
                e = answer(hi, e_hi, p->topic, p->partition, &end);
            if (e) {
                if (!p->error)
                    p->error = sk_asprintf("watermarks: %s", rd_kafka_err2str(e));
                continue;
            }
            p->low = low;
            p->end = end;
        }
    rd_kafka_topic_partition_list_destroy(lo);
    rd_kafka_topic_partition_list_destroy(hi);
}

int sk_lag_collect(const struct sk_lag_collect_options *opts, struct sk_lag_report **out,
                   struct sk_error *err)
{
    struct sk_lag_collect_options o = *opts;
    if (o.timeout_ms <= 0)
        o.timeout_ms = 10000;
    if (o.read_ms <= 0)
        o.read_ms = 5000;
    if (o.exact_bound <= 0)
        o.exact_bound = 1000;
    bool embedded =
        o.kafka ? sk_kafka_embedded(o.kafka) : (o.brokers && strcmp(o.brokers, "embedded") == 0);
    if (!o.kafka && (!o.brokers || embedded))
        return sk_error_set(err, SK_ERR_FATAL,
                            "no brokers to ask (the embedded broker lives in the daemon: ask it)");
    if (embedded) {
        /* The 2.0.2 mock has no DescribeGroups or ListGroups handler, and the
         * admin calls abort the process there (docs/architecture.md §8.11). */
        o.describe_members = false;
        if (o.n_groups == 0)
            return sk_error_set(err, SK_ERR_FATAL,
                                "the embedded broker cannot list groups: name them");
    }

    rd_kafka_t *rk = client_new(&o, err);
    if (!rk)
        return -1;
    struct sk_lag_report *r = sk_calloc(1, sizeof(*r));
    r->brokers = sk_strdup(o.kafka ? sk_kafka_bootstrap(o.kafka) : o.brokers);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_topic_partition_list_t *asked = NULL;

    /* Reachability first, so "cannot reach" is one clear error (exit 3). */
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t me = rd_kafka_metadata(rk, 0, NULL, &md, (int)o.timeout_ms);
    r->requests.metadata++;
    if (me) {
        sk_error_set(err, SK_ERR_RETRIABLE, "cannot reach Kafka at %s within %" PRId64 " ms: %s",
                     r->brokers, o.timeout_ms, rd_kafka_err2str(me));
        goto fail;
    }
    int brokers = md->broker_cnt > 0 ? md->broker_cnt : 1;
    rd_kafka_metadata_destroy(md);
    md = NULL;
    if (embedded || o.n_topics > 0) {
        me = rd_kafka_metadata(rk, 1, NULL, &md, (int)o.timeout_ms);
        r->requests.metadata++;
        if (me) {
            sk_error_set(err, SK_ERR_RETRIABLE, "metadata: %s", rd_kafka_err2str(me));
            goto fail;
        }
        asked = rd_kafka_topic_partition_list_new(16);
        for (int t = 0; t < md->topic_cnt; t++) {
            const rd_kafka_metadata_topic_t *mt = &md->topics[t];
            bool wanted = o.n_topics == 0 && strncmp(mt->topic, "__", 2) != 0;
            for (size_t i = 0; i < o.n_topics && !wanted; i++)
                wanted = strcmp(o.topics[i], mt->topic) == 0;
            for (int pi = 0; wanted && pi < mt->partition_cnt; pi++)
                rd_kafka_topic_partition_list_add(asked, mt->topic, mt->partitions[pi].id);
        }
        rd_kafka_metadata_destroy(md);
    }

    for (size_t i = 0; i < o.n_groups; i++)
        add_group(r, o.groups[i]);
    if (o.n_sources > 0) {
        r->sources = sk_calloc(o.n_sources, sizeof(*r->sources));
        for (size_t i = 0; i < o.n_sources; i++)
            r->sources[r->n_sources++] = (struct sk_lag_source){
                .name = sk_strdup(o.sources[i]), .partition = sk_ownership_partition(o.sources[i])};
    }
    if (o.n_groups == 0 && list_groups(rk, q, &o, r, brokers, err))
        goto fail;
    if (r->n_groups > 1)
        qsort(r->groups, r->n_groups, sizeof(*r->groups), cmp_group);
    size_t failed = 0;
    for (size_t i = 0; i < r->n_groups; i++) {
        rd_kafka_topic_partition_list_t *own = own_partitions(&o, r->groups[i].group, asked);
        /* A queue per group: a late answer for one group (its wait ran out)
         * must not be read as the next group's offsets. */
        rd_kafka_queue_t *gq = rd_kafka_queue_new(rk);
        group_offsets(rk, gq, &o, r, &r->groups[i], own ? own : asked);
        rd_kafka_queue_destroy(gq);
        if (own)
            rd_kafka_topic_partition_list_destroy(own);
        failed += r->groups[i].error != NULL;
    }
    if (r->n_groups > 0 && failed == r->n_groups) {
        sk_error_set(err, SK_ERR_RETRIABLE, "group %s: %s", r->groups[0].group, r->groups[0].error);
        goto fail;
    }
    if (o.describe_members)
        describe_groups(rk, q, &o, r);
    r->time_ms = sk_now_us() / 1000;
    query_watermarks(rk, &o, r, brokers);
    read_first_records(rk, &o, r);
    if (asked)
        rd_kafka_topic_partition_list_destroy(asked);
    rd_kafka_queue_destroy(q);
    rd_kafka_consumer_close(rk);
    sk_kafka_destroy_within(rk, SK_KAFKA_DESTROY_MS, "lag");
    *out = r;
    return 0;
fail:
    if (asked)
        rd_kafka_topic_partition_list_destroy(asked);
    rd_kafka_queue_destroy(q);
    rd_kafka_consumer_close(rk);
    sk_kafka_destroy_within(rk, SK_KAFKA_DESTROY_MS, "lag");
    sk_lag_report_free(r);
    return -1;
}
