/*
 * sink_hub.c: the shared consumer of a node's node-local sinks. See
 * sink_hub.h and docs/architecture.md §6.4.1.
 *
 * Positions. Each attached sink has, per partition, the next offset it
 * needs (`next`). The client is assigned every partition at the lowest
 * `next` among the sinks, and a record goes to a sink only when its offset
 * is at or past that sink's `next`, which then moves past it: records a sink
 * had already (a newcomer made the client fetch from further back) are
 * passed over, never handed again. A sink's partition is `ready` only once
 * the client was assigned at or before its `next`: until then what the
 * client fetches for the others may lie past records this sink still needs,
 * and taking it would skip them. librdkafka drops what it fetched under an
 * earlier assignment (its version barrier), so after rd_kafka_assign every
 * record polled belongs to the new positions.
 *
 * Back-pressure. A sink's queue holds up to its budget of bytes (its share
 * of the daemon's prefetch, sk_sink_prefetch_kbytes); past it the client
 * pauses every partition, for all sinks, until every queue is down to half.
 * A record polled while paused is still handed (librdkafka refetches from
 * after the last record polled, so nothing is fetched twice or lost). A
 * record in several queues is one librdkafka message with a count of
 * holders (struct sk_hub_msg), so 100 sinks hold one copy, not 100.
 *
 * A paused sink (an operator's pause, a retry's backoff) is suspended: it
 * holds nobody back, and on resume it is attached again at its positions.
 *
 * Failure is loud: a fatal error of the client fails the hub, every sink
 * on it fails with the reason (sink_driver.c), and the holder forgets the
 * hub, so the restarted sinks make a new one.
 */
#include "sink_hub.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "runner.h"
#include "util.h"

/* A client of the hub: the current one, or one replaced (renew) that lives
 * on until nothing made from it is held (its messages, commit queues). */
struct hub_client {
    rd_kafka_t *rk;
    atomic_int refs;
    bool offsets;            /* the group offsets' client: it never fetches */
    struct hub_client *next; /* the hub's retired list */
};

struct sk_hub_msg {
    rd_kafka_message_t *m;
    struct hub_client *client;
    atomic_int holders;
    size_t bytes;
};

struct hub;

struct member_part {
    char *topic;
    int32_t partition;
    int64_t next;  /* the next offset to hand it (RD_KAFKA_OFFSET_BEGINNING: any) */
    int64_t taken; /* the next offset it takes from its queue: where a new client resumes */
    bool ready;    /* the client was assigned at or before next */
};

struct sk_hub_member {
    struct hub *hub;
    char *name;
    struct member_part *parts;
    size_t n_parts;
    bool suspended;
    /* its queue: a ring of records (guarded by hub->mu) */
    struct sk_hub_msg **ring;
    size_t cap, head, count, bytes, budget;
    struct sk_runner *runner; /* its Kafka errors and statistics are counted there */
    pthread_cond_t cv;
    /* group commits (sink thread only) */
    rd_kafka_queue_t *commit_q;
    struct hub_client *commit_client;      /* the one commit_q was made from */
    bool commit_out;                       /* a request is in flight */
    int64_t commit_sent_ms;                /* when it was sent */
    int64_t commit_retry_ms;               /* after a failed one: not sent again before */
    rd_kafka_topic_partition_list_t *sent; /* what it carries */
    rd_kafka_topic_partition_list_t *owed; /* sent once the one in flight answered */
    char *owed_group;
    int64_t commit_warned_ms;
};

struct hub {
    struct sk_sink_hubs *holder;
    struct hub_client *client;  /* the current one */
    struct hub_client *offsets; /* the group offsets' client (NULL: made at the next commit) */
    struct hub_client *retired; /* replaced, until nothing of theirs is held */
    bool renew;                 /* a sink found the fetch stopped: a new client */
    char renew_why[512];
    pthread_t thread;
    pthread_mutex_t mu;
    struct sk_hub_member **members;
    size_t n_members;
    bool reassign; /* a member's positions changed: assign again */
    bool paused;   /* back-pressure: every partition paused */
    bool stop;
    bool failed;
    struct sk_log_limit error_log; /* its client's errors */
    char why[512];
};

struct sk_sink_hubs {
    struct sk_kafka *kafka;
    bool once;
    pthread_mutex_t mu;
    struct hub *current; /* NULL: none, or the last one failed */
};

/* Most records handed in one turn of the hub's thread (under its lock). */
#define HUB_BURST 1000

/* How long the hub's thread waits in one poll: also how soon it resumes
 * after a queue went down to half, or assigns again for a newcomer. */
#define HUB_POLL_MS 50

struct sk_sink_hubs *sk_sink_hubs_new(struct sk_kafka *k, bool once)
{
    struct sk_sink_hubs *h = sk_calloc(1, sizeof(*h));
    h->kafka = k;
    h->once = once;
    pthread_mutex_init(&h->mu, NULL);
    return h;
}

void sk_sink_hubs_free(struct sk_sink_hubs *h)
{
    if (!h)
        return;
    pthread_mutex_destroy(&h->mu);
    free(h);
}

void sk_sink_hub_release(struct sk_hub_msg *w)
{
    if (w && atomic_fetch_sub(&w->holders, 1) == 1) {
        rd_kafka_message_destroy(w->m);
        atomic_fetch_sub(&w->client->refs, 1);
        free(w);
    }
}

/* ---- positions ------------------------------------------------------------------ */

static struct member_part *member_part(struct sk_hub_member *m, const char *topic,
                                       int32_t partition)
{
    for (size_t i = 0; i < m->n_parts; i++)
        if (m->parts[i].partition == partition && strcmp(m->parts[i].topic, topic) == 0)
            return &m->parts[i];
    return NULL;
}

static void member_set_parts(struct sk_hub_member *m, const rd_kafka_topic_partition_list_t *from)
{
    for (size_t i = 0; i < m->n_parts; i++)
        free(m->parts[i].topic);
    free(m->parts);
    m->parts = sk_calloc((size_t)from->cnt + 1, sizeof(*m->parts));
    m->n_parts = (size_t)from->cnt;
    for (int i = 0; i < from->cnt; i++) {
        m->parts[i].topic = sk_strdup(from->elems[i].topic);
        m->parts[i].partition = from->elems[i].partition;
        m->parts[i].next =
            from->elems[i].offset < 0 ? RD_KAFKA_OFFSET_BEGINNING : from->elems[i].offset;
        m->parts[i].taken = m->parts[i].next;
    }
}

/* The lower of two positions, BEGINNING lowest. */
static int64_t lower(int64_t a, int64_t b)
{
    if (a == RD_KAFKA_OFFSET_BEGINNING || b == RD_KAFKA_OFFSET_BEGINNING)
        return RD_KAFKA_OFFSET_BEGINNING;
    return a < b ? a : b;
}

static void hub_fail_locked(struct hub *hub, const char *why);

/* Pauses (or resumes) every partition of the client's assignment (hub->mu held). */
static void pause_all(struct hub *hub, bool pause)
{
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(hub->client->rk, &a) || !a)
        return;
    if (a->cnt)
        (pause ? rd_kafka_pause_partitions : rd_kafka_resume_partitions)(hub->client->rk, a);
    rd_kafka_topic_partition_list_destroy(a);
    hub->paused = pause;
}

/* Back-pressure: pauses every partition while a queue is over its budget,
 * resumes once each is down to half (hub->mu held). */
static void pressure(struct hub *hub)
{
    bool over = false, under_half = true;
    for (size_t i = 0; i < hub->n_members; i++) {
        struct sk_hub_member *m = hub->members[i];
        over |= m->bytes > m->budget;
        under_half &= m->bytes <= m->budget / 2;
    }
    if (over == hub->paused || (!over && !under_half))
        return;
    pause_all(hub, over);
}

/* Assigns the union of the members' partitions, each at the lowest next
 * (hub->mu held, hub thread). */
static void assign_all(struct hub *hub)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
    for (size_t i = 0; i < hub->n_members; i++) {
        struct sk_hub_member *m = hub->members[i];
        if (m->suspended)
            continue;
        for (size_t j = 0; j < m->n_parts; j++) {
            struct member_part *p = &m->parts[j];
            rd_kafka_topic_partition_t *tp =
                rd_kafka_topic_partition_list_find(l, p->topic, p->partition);
            if (tp)
                tp->offset = lower(tp->offset, p->next);
            else
                rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = p->next;
        }
    }
    /* A partition paused by back-pressure stays paused through an assign
     * (librdkafka keeps the application's pause on the partition), while
     * the hub counts the new assignment as fetching: with no queue over its
     * budget nothing would resume it, and every sink on the hub would wait
     * for records that are never fetched. So resume them first. */
    if (hub->paused)
        pause_all(hub, false);
    rd_kafka_resp_err_t e = rd_kafka_assign(hub->client->rk, l->cnt ? l : NULL);
    if (e) {
        char why[300];
        snprintf(why, sizeof(why), "shared consumer: assign: %s", rd_kafka_err2str(e));
        hub_fail_locked(hub, why);
    }
    for (size_t i = 0; i < hub->n_members; i++)
        for (size_t j = 0; j < hub->members[i]->n_parts; j++)
            hub->members[i]->parts[j].ready = true;
    rd_kafka_topic_partition_list_destroy(l);
    hub->reassign = false;
    hub->paused = false; /* a new assignment fetches */
}

/* ---- queues --------------------------------------------------------------------- */

static void queue_push(struct sk_hub_member *m, struct sk_hub_msg *w)
{
    if (m->count == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        struct sk_hub_msg **ring = sk_calloc(cap, sizeof(*ring));
        for (size_t i = 0; i < m->count; i++)
            ring[i] = m->ring[(m->head + i) % m->cap];
        free(m->ring);
        m->ring = ring;
        m->cap = cap;
        m->head = 0;
    }
    m->ring[(m->head + m->count++) % m->cap] = w;
    m->bytes += w->bytes;
    atomic_fetch_add(&w->holders, 1);
    pthread_cond_signal(&m->cv);
}

static struct sk_hub_msg *queue_pop(struct sk_hub_member *m)
{
    if (!m->count)
        return NULL;
    struct sk_hub_msg *w = m->ring[m->head];
    m->head = (m->head + 1) % m->cap;
    m->count--;
    m->bytes -= w->bytes;
    return w;
}

static void queue_clear(struct sk_hub_member *m)
{
    struct sk_hub_msg *w;
    while ((w = queue_pop(m)) != NULL)
        sk_sink_hub_release(w);
}

/* Hands a polled message to every member it is for (hub->mu held). */
static void dispatch(struct hub *hub, rd_kafka_message_t *msg)
{
    struct sk_hub_msg *w = sk_calloc(1, sizeof(*w));
    w->m = msg;
    w->client = hub->client;
    atomic_fetch_add(&hub->client->refs, 1);
    atomic_init(&w->holders, 1); /* the hub's own, dropped below */
    w->bytes = msg->len + msg->key_len + sizeof(*msg);
    const char *topic = msg->rkt ? rd_kafka_topic_name(msg->rkt) : NULL;
    if (!msg->err) {
        /* parsed once here: rd_kafka_message_headers parses on its first
         * call, which the sinks' threads would otherwise race on */
        rd_kafka_headers_t *hdrs;
        (void)rd_kafka_message_headers(msg, &hdrs);
    }
    for (size_t i = 0; i < hub->n_members; i++) {
        struct sk_hub_member *m = hub->members[i];
        if (m->suspended)
            continue;
        if (!topic) { /* an error of the client: everyone's */
            queue_push(m, w);
            continue;
        }
        struct member_part *p = member_part(m, topic, msg->partition);
        if (!p || !p->ready)
            continue;
        if (msg->err) { /* a partition's end or error */
            if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF ||
                p->next == RD_KAFKA_OFFSET_BEGINNING || msg->offset >= p->next)
                queue_push(m, w);
            continue;
        }
        if (p->next != RD_KAFKA_OFFSET_BEGINNING && msg->offset < p->next)
            continue; /* it had this one: the client fetches from further back for another */
        p->next = msg->offset + 1;
        queue_push(m, w);
    }
    sk_sink_hub_release(w);
}

static void hub_fail_locked(struct hub *hub, const char *why)
{
    if (hub->failed)
        return;
    hub->failed = true;
    snprintf(hub->why, sizeof(hub->why), "%s", why);
    sk_error_log("sink-hub", "%s: every sink on it fails", why);
    for (size_t i = 0; i < hub->n_members; i++)
        pthread_cond_signal(&hub->members[i]->cv);
    /* the restarted sinks make a new hub (sk_sink_hub_attach): this one
     * ends with its last sink */
}

/* The client's own errors (a broker down): counted for every sink on it
 * (skolsync_kafka_errors_total) and logged once per interval, as a sink's
 * own consumer's are (sk_runner_kafka_error); a fatal one is caught by the
 * thread (rd_kafka_fatal_error). On librdkafka's threads. */
static void hub_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    (void)err;
    struct hub *hub = opaque;
    pthread_mutex_lock(&hub->mu);
    for (size_t i = 0; i < hub->n_members; i++)
        atomic_fetch_add(&hub->members[i]->runner->kafka_errors, 1);
    pthread_mutex_unlock(&hub->mu);
    sk_log_limited(&hub->error_log, SK_KAFKA_ERROR_INTERVAL_MS, SK_LOG_WARN, "sink-hub",
                   "kafka: %s", reason);
}

/* Its statistics (kafka.statistics): every sink on it reports them as its
 * own consumer's (request retries, round-trip time). */
static int hub_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    (void)rk;
    struct hub *hub = opaque;
    struct sk_kafka_stats st; /* parsed once for every sink on the client */
    sk_kafka_stats_parse(json, len, &st);
    pthread_mutex_lock(&hub->mu);
    for (size_t i = 0; i < hub->n_members; i++)
        sk_runner_kafka_stats_apply(hub->members[i]->runner, &st);
    pthread_mutex_unlock(&hub->mu);
    return 0; /* librdkafka frees json */
}

/* The shared client prefetches what one sink's consumer did at most
 * (sk_sink_prefetch_kbytes(1)): the queues behind it are bounded apart. */
#define HUB_PREFETCH_KB 8192

/* An AlterConsumerGroupOffsets unanswered this long (a coordinator down or
 * unreachable): its client is replaced, which ends the request (§8.14h: it
 * must never reach librdkafka's own timeout). */
#define HUB_COMMIT_ANSWER_MS 30000
/* How long a sink that leaves waits for its last request's answer. */
#define HUB_COMMIT_LAST_MS 5000
/* A request answered with an error is sent again after this long. */
#define HUB_COMMIT_RETRY_MS 1000

static struct hub_client *client_new(struct hub *hub, struct sk_error *err)
{
    struct sk_sink_hubs *h = hub->holder;
    const struct sk_names *names = sk_kafka_names(h->kafka);
    char *cid = sk_name_client(names, "sinks", "local");
    char *group = sk_name_local_sinks_group(names);
    char queued[24], fetch[24];
    snprintf(queued, sizeof(queued), "%d", HUB_PREFETCH_KB);
    snprintf(fetch, sizeof(fetch), "%d", HUB_PREFETCH_KB * 1024);
    /* as a sink's own consumer under --once (sink_driver.c, consumer_create):
     * an end is reported by an empty fetch, held fetch.wait.max.ms */
    const char *const defaults[] = {"queued.max.messages.kbytes",
                                    queued,
                                    "fetch.max.bytes",
                                    fetch,
                                    "statistics.interval.ms",
                                    sk_kafka_statistics_interval(h->kafka),
                                    h->once ? "fetch.wait.max.ms" : NULL,
                                    "100",
                                    NULL};
    rd_kafka_conf_t *conf = sk_kafka_conf_new(h->kafka, cid, defaults, err);
    struct hub_client *c = NULL;
    /* group.id only for the admin calls (§8.14a): the client assign()s, it
     * never joins, and commits nothing for that group */
    if (!conf || sk_kafka_conf_set(conf, "group.id", group, err) ||
        sk_kafka_conf_set(conf, "isolation.level", "read_committed", err) ||
        sk_kafka_conf_set(conf, "enable.auto.commit", "false", err) ||
        sk_kafka_conf_set(conf, "enable.auto.offset.store", "false", err) ||
        sk_kafka_conf_set(conf, "auto.offset.reset", "earliest", err) ||
        sk_kafka_conf_set(conf, "enable.partition.eof", "true", err)) {
        if (conf)
            rd_kafka_conf_destroy(conf);
        goto out;
    }
    rd_kafka_conf_set_error_cb(conf, hub_error_cb);
    rd_kafka_t *rk = sk_kafka_client_new(RD_KAFKA_CONSUMER, conf, hub_stats_cb, hub, err);
    if (!rk)
        goto out;
    rd_kafka_poll_set_consumer(rk);
    sk_kafka_consumer_created(h->kafka, rk);
    c = sk_calloc(1, sizeof(*c));
    c->rk = rk;
    sk_info("sink-hub", "shared consumer %s for the node-local sinks, prefetch %s KiB", cid,
            queued);
out:
    free(cid);
    free(group);
    return c;
}

static void client_end(struct hub_client *c)
{
    if (!c)
        return;
    if (!c->offsets)
        rd_kafka_consumer_close(c->rk);
    sk_kafka_destroy_within(c->rk, SK_KAFKA_DESTROY_MS, "sink-hub");
    free(c);
}

/*
 * A new client in place of one that stopped fetching (§8.14f; asked by a
 * sink, sk_sink_hub_renew). What the sinks had not taken from their queues
 * goes back, and each resumes where it last took a record. The old client
 * lives on until the records the sinks hold of it are released (hub->mu
 * held).
 */
static void renew(struct hub *hub)
{
    hub->renew = false;
    struct sk_error err = {0};
    struct hub_client *c = client_new(hub, &err);
    if (!c) {
        char why[512];
        snprintf(why, sizeof(why), "%.200s; a new shared consumer: %.250s", hub->renew_why,
                 err.msg);
        hub_fail_locked(hub, why);
        return;
    }
    for (size_t i = 0; i < hub->n_members; i++) {
        struct sk_hub_member *m = hub->members[i];
        queue_clear(m);
        for (size_t j = 0; j < m->n_parts; j++) {
            m->parts[j].next = m->parts[j].taken;
            m->parts[j].ready = false;
        }
    }
    hub->client->next = hub->retired;
    hub->retired = hub->client;
    hub->client = c;
    hub->reassign = true;
}

/* Ends the replaced clients nothing is held of any more (hub thread). */
static void retired_end(struct hub *hub, bool all)
{
    pthread_mutex_lock(&hub->mu);
    struct hub_client *done = NULL;
    for (struct hub_client **at = &hub->retired; *at;) {
        struct hub_client *c = *at;
        if (all || atomic_load(&c->refs) == 0) {
            *at = c->next;
            c->next = done;
            done = c;
        } else {
            at = &c->next;
        }
    }
    pthread_mutex_unlock(&hub->mu);
    while (done) {
        struct hub_client *c = done;
        done = c->next;
        client_end(c);
    }
}

static void *hub_thread(void *arg)
{
    struct hub *hub = arg;
    rd_kafka_message_t **burst = sk_calloc(HUB_BURST, sizeof(*burst));
    for (;;) {
        pthread_mutex_lock(&hub->mu);
        bool stop = hub->stop;
        if (!stop && !hub->failed && hub->renew)
            renew(hub);
        if (!stop && !hub->failed && hub->reassign)
            assign_all(hub);
        if (!stop && !hub->failed)
            pressure(hub);
        bool retired = hub->retired != NULL;
        pthread_mutex_unlock(&hub->mu);
        if (stop)
            break;
        if (retired)
            retired_end(hub, false);
        /* What the client holds besides goes in the same turn: a sink that
         * finds its queue empty takes its batch as complete (a lone record is
         * applied at once, sink_driver.c), so a backlog must not trickle in
         * record by record. Polled without the lock: a poll serves the
         * client's error and statistics callbacks, which take it. */
        size_t n = 0;
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(hub->client->rk, HUB_POLL_MS);
        while (msg) {
            burst[n++] = msg;
            msg = n < HUB_BURST ? rd_kafka_consumer_poll(hub->client->rk, 0) : NULL;
        }
        char buf[400];
        rd_kafka_resp_err_t fatal = rd_kafka_fatal_error(hub->client->rk, buf, sizeof(buf));
        pthread_mutex_lock(&hub->mu);
        if (fatal) {
            char why[512];
            snprintf(why, sizeof(why), "shared consumer: fatal error: %s (%s)",
                     rd_kafka_err2name(fatal), buf);
            hub_fail_locked(hub, why);
        }
        for (size_t k = 0; k < n; k++) {
            if (hub->failed)
                rd_kafka_message_destroy(burst[k]);
            else
                dispatch(hub, burst[k]);
        }
        pthread_mutex_unlock(&hub->mu);
    }
    free(burst);
    return NULL;
}

static struct hub *hub_new(struct sk_sink_hubs *h, struct sk_error *err)
{
    struct hub *hub = sk_calloc(1, sizeof(*hub));
    hub->holder = h;
    pthread_mutex_init(&hub->mu, NULL);
    hub->client = client_new(hub, err);
    if (!hub->client)
        goto fail;
    if (sk_thread_start(&hub->thread, hub_thread, hub, "sink-hub", NULL)) {
        sk_error_set(err, SK_ERR_FATAL, "shared consumer: cannot start its thread");
        client_end(hub->client);
        goto fail;
    }
    return hub;
fail:
    pthread_mutex_destroy(&hub->mu);
    free(hub);
    return NULL;
}

/* After its last sink left: nothing of its clients is held any more. */
static void hub_end(struct hub *hub)
{
    pthread_mutex_lock(&hub->mu);
    hub->stop = true;
    pthread_mutex_unlock(&hub->mu);
    pthread_join(hub->thread, NULL);
    retired_end(hub, true);
    client_end(hub->client);
    client_end(hub->offsets);
    pthread_mutex_destroy(&hub->mu);
    free(hub->members);
    free(hub);
}

/* ---- members -------------------------------------------------------------------- */

static void commit_queue_drop(struct sk_hub_member *m, int wait_ms);

struct sk_hub_member *sk_sink_hub_attach(struct sk_sink_hubs *h, const char *sink,
                                         const rd_kafka_topic_partition_list_t *from, size_t budget,
                                         struct sk_runner *runner, struct sk_error *err)
{
    pthread_mutex_lock(&h->mu);
    struct hub *hub = h->current;
    if (hub) {
        pthread_mutex_lock(&hub->mu);
        bool failed = hub->failed;
        pthread_mutex_unlock(&hub->mu);
        if (failed) /* it ends with its last sink; the restarted ones get a new client */
            hub = h->current = NULL;
    }
    if (!hub)
        hub = h->current = hub_new(h, err);
    if (!hub) {
        pthread_mutex_unlock(&h->mu);
        return NULL;
    }
    struct sk_hub_member *m = sk_calloc(1, sizeof(*m));
    m->hub = hub;
    m->name = sk_strdup(sink);
    m->budget = budget;
    m->runner = runner;
    pthread_cond_init(&m->cv, NULL);
    member_set_parts(m, from);
    pthread_mutex_lock(&hub->mu);
    hub->members = sk_realloc(hub->members, (hub->n_members + 1) * sizeof(*hub->members));
    hub->members[hub->n_members++] = m;
    hub->reassign = true;
    pthread_mutex_unlock(&hub->mu);
    pthread_mutex_unlock(&h->mu);
    return m;
}

void sk_sink_hub_detach(struct sk_hub_member *m)
{
    if (!m)
        return;
    struct hub *hub = m->hub;
    struct sk_sink_hubs *h = hub->holder;
    commit_queue_drop(m, HUB_COMMIT_LAST_MS); /* a last commit in flight may still land */
    if (m->owed)
        rd_kafka_topic_partition_list_destroy(m->owed);
    free(m->owed_group);
    pthread_mutex_lock(&h->mu);
    pthread_mutex_lock(&hub->mu);
    queue_clear(m);
    size_t k = 0;
    while (k < hub->n_members && hub->members[k] != m)
        k++;
    if (k < hub->n_members)
        hub->members[k] = hub->members[--hub->n_members];
    bool last = hub->n_members == 0;
    pthread_mutex_unlock(&hub->mu);
    if (last && h->current == hub)
        h->current = NULL;
    pthread_mutex_unlock(&h->mu);
    if (last)
        hub_end(hub);
    for (size_t i = 0; i < m->n_parts; i++)
        free(m->parts[i].topic);
    free(m->parts);
    free(m->ring);
    free(m->name);
    pthread_cond_destroy(&m->cv);
    free(m);
}

void sk_sink_hub_suspend(struct sk_hub_member *m)
{
    pthread_mutex_lock(&m->hub->mu);
    m->suspended = true;
    queue_clear(m);
    pthread_mutex_unlock(&m->hub->mu);
}

void sk_sink_hub_resume(struct sk_hub_member *m, const rd_kafka_topic_partition_list_t *from)
{
    pthread_mutex_lock(&m->hub->mu);
    queue_clear(m); /* handed while it changed its mind: it resumes at from */
    if (from) {
        member_set_parts(m, from);
    } else {
        for (size_t j = 0; j < m->n_parts; j++) {
            m->parts[j].next = m->parts[j].taken;
            m->parts[j].ready = false;
        }
    }
    m->suspended = false;
    m->hub->reassign = true;
    pthread_mutex_unlock(&m->hub->mu);
}

rd_kafka_message_t *sk_sink_hub_poll(struct sk_hub_member *m, int timeout_ms,
                                     struct sk_hub_msg **held)
{
    struct hub *hub = m->hub;
    pthread_mutex_lock(&hub->mu);
    if (!m->count && timeout_ms > 0 && !hub->failed) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += timeout_ms / 1000;
        until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!m->count && !hub->failed && pthread_cond_timedwait(&m->cv, &hub->mu, &until) == 0)
            ;
    }
    struct sk_hub_msg *w = queue_pop(m);
    if (w && !w->m->err) { /* where a new client resumes it (renew) */
        struct member_part *p = member_part(m, rd_kafka_topic_name(w->m->rkt), w->m->partition);
        if (p)
            p->taken = w->m->offset + 1;
    }
    pthread_mutex_unlock(&hub->mu);
    *held = w;
    return w ? w->m : NULL;
}

void sk_sink_hub_trim(struct sk_hub_member *m)
{
    pthread_mutex_lock(&m->hub->mu);
    if (!m->count) {
        free(m->ring);
        m->ring = NULL;
        m->cap = m->head = 0;
    }
    pthread_mutex_unlock(&m->hub->mu);
}

size_t sk_sink_hub_queued(struct sk_hub_member *m)
{
    pthread_mutex_lock(&m->hub->mu);
    size_t n = m->count;
    pthread_mutex_unlock(&m->hub->mu);
    return n;
}

/* The current client, held until client_put: a renew may replace it meanwhile. */
static struct hub_client *client_get(struct hub *hub)
{
    pthread_mutex_lock(&hub->mu);
    struct hub_client *c = hub->client;
    atomic_fetch_add(&c->refs, 1);
    pthread_mutex_unlock(&hub->mu);
    return c;
}

static void client_put(struct hub_client *c)
{
    atomic_fetch_sub(&c->refs, 1);
}

int sk_sink_hub_partition_count(struct sk_hub_member *m, const char *topic)
{
    struct hub_client *c = client_get(m->hub);
    int n = sk_kafka_partition_count(c->rk, topic);
    client_put(c);
    return n;
}

void sk_sink_hub_renew(struct sk_hub_member *m, const char *why)
{
    pthread_mutex_lock(&m->hub->mu);
    if (!m->hub->renew && !m->hub->failed) {
        sk_warn(m->name, "%s: replacing the shared consumer", why);
        snprintf(m->hub->renew_why, sizeof(m->hub->renew_why), "%s", why);
        m->hub->renew = true;
    }
    pthread_mutex_unlock(&m->hub->mu);
}

bool sk_sink_hub_failed(struct sk_hub_member *m, char *why, size_t size)
{
    pthread_mutex_lock(&m->hub->mu);
    bool failed = m->hub->failed;
    if (failed)
        snprintf(why, size, "%s", m->hub->why);
    pthread_mutex_unlock(&m->hub->mu);
    return failed;
}

void sk_sink_hub_fail(struct sk_hub_member *m, const char *why)
{
    pthread_mutex_lock(&m->hub->mu);
    hub_fail_locked(m->hub, why);
    pthread_mutex_unlock(&m->hub->mu);
}

/* ---- group commits -------------------------------------------------------------- */

/* The group offsets' client, made if there is none (hub->mu held). */
static struct hub_client *offsets_client_locked(struct hub *hub, struct sk_error *err)
{
    if (hub->offsets)
        return hub->offsets;
    const struct sk_names *names = sk_kafka_names(hub->holder->kafka);
    char *cid = sk_name_client(names, "sinks", "offsets");
    /* a consumer with a group it never joins (§8.14a), not the shared
     * consumer: it is replaced when a request goes unanswered, and the
     * fetches go on */
    rd_kafka_t *rk = sk_kafka_reader_new(hub->holder->kafka, cid, err);
    free(cid);
    if (!rk)
        return NULL;
    hub->offsets = sk_calloc(1, sizeof(*hub->offsets));
    hub->offsets->rk = rk;
    hub->offsets->offsets = true;
    return hub->offsets;
}

/* The sink's queue for commit answers goes, with the client it held;
 * wait_ms: how long a request in flight may still take to answer. */
static void commit_queue_drop(struct sk_hub_member *m, int wait_ms)
{
    if (!m->commit_q)
        return;
    if (m->commit_out && wait_ms > 0) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(m->commit_q, wait_ms);
        if (ev)
            rd_kafka_event_destroy(ev);
    }
    rd_kafka_queue_destroy(m->commit_q); /* every object before its handle */
    client_put(m->commit_client);
    m->commit_q = NULL;
    m->commit_client = NULL;
    m->commit_out = false;
    if (m->sent)
        rd_kafka_topic_partition_list_destroy(m->sent);
    m->sent = NULL;
}

/* The answer to the request in flight, if it came (wait_ms: how long to wait). */
static int commit_answer(struct sk_hub_member *m, int wait_ms, struct sk_error *err)
{
    if (!m->commit_out)
        return 0;
    rd_kafka_event_t *ev = rd_kafka_queue_poll(m->commit_q, wait_ms);
    if (!ev)
        return wait_ms ? sk_error_set(err, SK_ERR_RETRIABLE, "group offsets: no answer") : 0;
    m->commit_out = false;
    int rc = 0;
    const rd_kafka_AlterConsumerGroupOffsets_result_t *res =
        rd_kafka_event_AlterConsumerGroupOffsets_result(ev);
    size_t n = 0;
    const rd_kafka_group_result_t **groups =
        res ? rd_kafka_AlterConsumerGroupOffsets_result_groups(res, &n) : NULL;
    const rd_kafka_error_t *ge = n ? rd_kafka_group_result_error(groups[0]) : NULL;
    const rd_kafka_topic_partition_list_t *parts =
        n ? rd_kafka_group_result_partitions(groups[0]) : NULL;
    rd_kafka_resp_err_t pe = RD_KAFKA_RESP_ERR_NO_ERROR; /* a partition's own refusal */
    for (int i = 0; parts && i < parts->cnt && !pe; i++)
        pe = parts->elems[i].err;
    if (rd_kafka_event_error(ev) || ge || pe)
        rc = sk_error_set(err, SK_ERR_RETRIABLE, "group offsets: %s",
                          ge   ? rd_kafka_error_string(ge)
                          : pe ? rd_kafka_err2str(pe)
                               : rd_kafka_event_error_string(ev));
    rd_kafka_event_destroy(ev);
    if (rc && !m->owed) { /* refused or lost (a broker gone): owed again, in a second */
        m->owed = m->sent;
        m->sent = NULL;
    }
    m->commit_retry_ms = rc ? sk_mono_ms() + HUB_COMMIT_RETRY_MS : 0;
    if (m->sent)
        rd_kafka_topic_partition_list_destroy(m->sent);
    m->sent = NULL;
    return rc;
}

/* A request unanswered for HUB_COMMIT_ANSWER_MS: its client is retired (the
 * hub ends it once no sink holds it, and with it the request), and what it
 * carried is owed again, unless something newer is. */
static int commit_overdue(struct sk_hub_member *m, struct sk_error *err)
{
    if (!m->commit_out || sk_mono_ms() - m->commit_sent_ms < HUB_COMMIT_ANSWER_MS)
        return 0;
    struct hub *hub = m->hub;
    pthread_mutex_lock(&hub->mu);
    if (hub->offsets == m->commit_client) {
        hub->offsets->next = hub->retired;
        hub->retired = hub->offsets;
        hub->offsets = NULL;
    }
    pthread_mutex_unlock(&hub->mu);
    if (!m->owed) {
        m->owed = m->sent;
        m->sent = NULL;
    }
    commit_queue_drop(m, 0);
    return sk_error_set(err, SK_ERR_RETRIABLE,
                        "group offsets: no answer within %d s; asking again on a new client",
                        HUB_COMMIT_ANSWER_MS / 1000);
}

static int commit_send(struct sk_hub_member *m, const char *group,
                       rd_kafka_topic_partition_list_t *offsets, struct sk_error *err)
{
    pthread_mutex_lock(&m->hub->mu);
    struct hub_client *c = offsets_client_locked(m->hub, err);
    if (c && c != m->commit_client)
        atomic_fetch_add(&c->refs, 1);
    pthread_mutex_unlock(&m->hub->mu);
    if (!c)
        return -1;
    if (c != m->commit_client) { /* the queue is made from the current client, and holds it */
        commit_queue_drop(m, 0);
        m->commit_client = c;
        m->commit_q = rd_kafka_queue_new(c->rk);
    }
    rd_kafka_AlterConsumerGroupOffsets_t *req =
        rd_kafka_AlterConsumerGroupOffsets_new(group, offsets);
    rd_kafka_AdminOptions_t *o =
        sk_kafka_coord_options(c->rk, RD_KAFKA_ADMIN_OP_ALTERCONSUMERGROUPOFFSETS);
    rd_kafka_AlterConsumerGroupOffsets(c->rk, &req, 1, o, m->commit_q);
    rd_kafka_AdminOptions_destroy(o);
    rd_kafka_AlterConsumerGroupOffsets_destroy(req);
    m->commit_out = true;
    m->commit_sent_ms = sk_mono_ms();
    m->sent = offsets;
    return 0;
}

int sk_sink_hub_commit(struct sk_hub_member *m, const char *group,
                       const rd_kafka_topic_partition_list_t *offsets, bool sync,
                       struct sk_error *err)
{
    struct sk_error late = {0};
    if ((commit_answer(m, sync ? 10000 : 0, &late) || commit_overdue(m, &late)) &&
        sk_mono_ms() - m->commit_warned_ms > 60000) {
        /* the group still has a member (its consumer before the shared
         * one, until its session ends), or the coordinator is away: only
         * the lag report waits */
        m->commit_warned_ms = sk_mono_ms();
        sk_warn(m->name, "%s", late.msg);
    }
    if (offsets) {
        if (m->owed)
            rd_kafka_topic_partition_list_destroy(m->owed);
        m->owed = rd_kafka_topic_partition_list_copy(offsets);
        free(m->owed_group);
        m->owed_group = sk_strdup(group);
    }
    if (m->commit_out || !m->owed || sk_mono_ms() < m->commit_retry_ms)
        return 0;
    if (commit_send(m, m->owed_group, m->owed, err))
        return -1;
    m->owed = NULL; /* now m->sent */
    return sync ? commit_answer(m, 10000, err) : 0;
}
