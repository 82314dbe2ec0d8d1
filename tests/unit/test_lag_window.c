/*
 * test_lag_window.c: the lag status rules (docs/lag.md "Status") on
 * synthetic samples, the window's bookkeeping, transaction markers not
 * counting as lag, and the JSON/table/exit-code rendering. No broker.
 */
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "lag.h"
#include "util.h"

static struct sk_lag_rules rules(void)
{
    struct sk_lag_rules r;
    sk_lag_rules_default(&r);
    return r;
}

/* Points every 5 s from arrays of committed offsets and end offsets. */
static size_t points(struct sk_lag_point *pts, size_t n, const int64_t *committed,
                     const int64_t *end)
{
    for (size_t i = 0; i < n; i++)
        pts[i] = (struct sk_lag_point){.time_ms = 1000000 + (int64_t)i * 5000,
                                       .committed = committed[i],
                                       .end = end[i],
                                       .lag = end[i] - committed[i],
                                       .lag_seconds = 1};
    return n;
}

static enum sk_lag_status eval(const int64_t *c, const int64_t *e, size_t n, int members)
{
    struct sk_lag_point pts[32];
    struct sk_lag_rules r = rules();
    const char *why = NULL;
    enum sk_lag_status s = sk_lag_evaluate(pts, points(pts, n, c, e), members, &r, &why);
    cr_assert_not_null(why);
    return s;
}

Test(lag_rules, idle_caught_up_group_is_ok_whatever_the_commit_age)
{
    /* Nothing produced, nothing committed for the whole window (and an hour). */
    int64_t c[10] = {50, 50, 50, 50, 50, 50, 50, 50, 50, 50};
    struct sk_lag_point pts[10];
    points(pts, 10, c, c);
    pts[9].time_ms += 3600 * 1000;
    struct sk_lag_rules r = rules();
    for (int members = -1; members <= 1; members++)
        cr_assert_eq(sk_lag_evaluate(pts, 10, members, &r, NULL), SK_LAG_OK, "members %d", members);
    /* A single sample of an idle group without members: still OK (Burrow's false STOP). */
    cr_assert_eq(sk_lag_evaluate(pts, 1, 0, &r, NULL), SK_LAG_OK);
}

Test(lag_rules, growing_lag_while_committing_is_warn)
{
    int64_t c[6] = {10, 20, 30, 40, 50, 60};
    int64_t e[6] = {15, 30, 45, 60, 75, 90};
    cr_assert_eq(eval(c, e, 6, 1), SK_LAG_WARN);
    /* Two points are not a trend. */
    cr_assert_eq(eval(c, e, 2, 1), SK_LAG_OK);
}

Test(lag_rules, decreasing_lag_is_ok)
{
    int64_t c[5] = {10, 40, 70, 90, 95};
    int64_t e[5] = {100, 100, 100, 100, 100};
    cr_assert_eq(eval(c, e, 5, 1), SK_LAG_OK);
}

Test(lag_rules, stuck_commit_with_members_is_stall)
{
    int64_t c[10] = {10, 10, 10, 10, 10, 10, 10, 10, 10, 10};
    int64_t e[10] = {12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    cr_assert_eq(eval(c, e, 10, 1), SK_LAG_STALL);
    /* Not yet a full window nor a minute: not judged stuck yet. */
    cr_assert_neq(eval(c, e, 5, 1), SK_LAG_STALL);
}

Test(lag_rules, stuck_commit_without_known_members_is_stop)
{
    int64_t c[10] = {10, 10, 10, 10, 10, 10, 10, 10, 10, 10};
    int64_t e[10] = {12, 12, 12, 12, 12, 12, 12, 12, 12, 12};
    cr_assert_eq(eval(c, e, 10, -1), SK_LAG_STOP);
}

Test(lag_rules, lag_and_no_members_is_stop_from_one_sample)
{
    int64_t c[1] = {10}, e[1] = {25};
    cr_assert_eq(eval(c, e, 1, 0), SK_LAG_STOP);
    /* The same with members, one sample, fresh records: nothing to say yet. */
    cr_assert_eq(eval(c, e, 1, 1), SK_LAG_OK);
}

Test(lag_rules, stuck_for_longer_than_threshold_is_stuck_before_the_window_fills)
{
    int64_t c[3] = {10, 10, 10}, e[3] = {20, 20, 20};
    struct sk_lag_point pts[3];
    points(pts, 3, c, e);
    pts[2].time_ms = pts[0].time_ms + 61000;
    struct sk_lag_rules r = rules();
    cr_assert_eq(sk_lag_evaluate(pts, 3, 1, &r, NULL), SK_LAG_STALL);
    cr_assert_eq(sk_lag_evaluate(pts, 3, -1, &r, NULL), SK_LAG_STOP);
}

Test(lag_rules, recent_catch_up_restarts_the_stuck_clock)
{
    /* Caught up at the 8th sample, then records arrived: not stuck. */
    int64_t c[10] = {10, 10, 10, 10, 10, 10, 10, 10, 10, 10};
    int64_t e[10] = {10, 10, 10, 10, 10, 10, 10, 10, 12, 14};
    cr_assert_eq(eval(c, e, 10, 1), SK_LAG_OK);
    cr_assert_eq(eval(c, e, 10, -1), SK_LAG_OK);
}

Test(lag_rules, rewind_is_rewind_until_recovered)
{
    int64_t c[5] = {100, 110, 40, 50, 60};
    int64_t e[5] = {120, 130, 140, 150, 160};
    cr_assert_eq(eval(c, e, 5, 1), SK_LAG_REWIND);
    int64_t c2[5] = {100, 110, 40, 80, 120};
    int64_t e2[5] = {120, 130, 140, 150, 160};
    cr_assert_neq(eval(c2, e2, 5, 1), SK_LAG_REWIND);
}

Test(lag_rules, old_first_unconsumed_record_is_warn)
{
    int64_t c[1] = {10}, e[1] = {12};
    struct sk_lag_point pts[1];
    points(pts, 1, c, e);
    pts[0].lag_seconds = 61;
    struct sk_lag_rules r = rules();
    cr_assert_eq(sk_lag_evaluate(pts, 1, 1, &r, NULL), SK_LAG_WARN);
    pts[0].lag_seconds = 59;
    cr_assert_eq(sk_lag_evaluate(pts, 1, 1, &r, NULL), SK_LAG_OK);
}

Test(lag_rules, behind_by_half_the_tombstone_retention_is_err)
{
    /* catching up (rule 6 would say OK), but its oldest record is 2 h old */
    int64_t c[5] = {10, 40, 70, 90, 95};
    int64_t e[5] = {100, 100, 100, 100, 100};
    struct sk_lag_point pts[5];
    points(pts, 5, c, e);
    pts[4].lag_seconds = 2 * 3600;
    struct sk_lag_rules r = rules();
    const char *why = NULL;
    cr_assert_eq(sk_lag_evaluate(pts, 5, 1, &r, &why), SK_LAG_OK, "no rule without retention");
    r.tombstone_ms = 4 * 3600 * 1000LL;
    cr_assert_eq(sk_lag_evaluate(pts, 5, 1, &r, &why), SK_LAG_ERR);
    cr_assert(strstr(why, "tombstone retention"), "%s", why);
    pts[4].lag_seconds = 2 * 3600 - 1; /* under half: catching up, OK */
    cr_assert_eq(sk_lag_evaluate(pts, 5, 1, &r, NULL), SK_LAG_OK);
    pts[4].lag_seconds = -1; /* unknown age: nothing to judge by */
    cr_assert_eq(sk_lag_evaluate(pts, 5, 1, &r, NULL), SK_LAG_OK);
    /* a stuck consumer stays STALL: what is wrong first */
    int64_t cs[10] = {10, 10, 10, 10, 10, 10, 10, 10, 10, 10};
    int64_t es[10] = {12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    struct sk_lag_point st[10];
    points(st, 10, cs, es);
    st[9].lag_seconds = 3 * 3600;
    cr_assert_eq(sk_lag_evaluate(st, 10, 1, &r, NULL), SK_LAG_STALL);
    /* caught up: OK however old the last record */
    pts[4].committed = pts[4].end;
    pts[4].lag = 0;
    pts[4].lag_seconds = 0;
    cr_assert_eq(sk_lag_evaluate(pts, 5, 1, &r, NULL), SK_LAG_OK);
}

Test(lag_rules, allowed_lag_counts_as_caught_up)
{
    int64_t c[1] = {10}, e[1] = {12};
    struct sk_lag_point pts[1];
    points(pts, 1, c, e);
    struct sk_lag_rules r = rules();
    r.allowed_lag = 2;
    cr_assert_eq(sk_lag_evaluate(pts, 1, 0, &r, NULL), SK_LAG_OK);
}

/* ---- transaction markers ---------------------------------------------------- */

static struct sk_lag_partition part(int64_t committed, int64_t end)
{
    return (struct sk_lag_partition){.topic = "t",
                                     .committed = committed,
                                     .low = 0,
                                     .end = end,
                                     .lag = -1,
                                     .first_ts_ms = -1,
                                     .lag_seconds = -1};
}

Test(lag_settle, transaction_markers_are_not_lag)
{
    /* Committed after the last record; the commit marker makes the LSO one more. */
    struct sk_lag_partition p = part(10, 11);
    sk_lag_partition_settle(&p, 0, true, -1, 5000);
    cr_assert_eq(p.lag, 0);
    cr_assert(p.lag_exact);
    cr_assert_eq(p.lag_seconds, 0);
    /* Five transactions' markers and an aborted batch, nothing consumable. */
    p = part(10, 30);
    sk_lag_partition_settle(&p, 0, true, -1, 5000);
    cr_assert_eq(p.lag, 0);
}

Test(lag_settle, counted_records_and_seconds_from_the_first)
{
    struct sk_lag_partition p = part(10, 21); /* 10 records + a marker */
    sk_lag_partition_settle(&p, 10, true, 2000, 32000);
    cr_assert_eq(p.lag, 10);
    cr_assert(p.lag_exact);
    cr_assert_float_eq(p.lag_seconds, 30.0, 1e-9);
}

Test(lag_settle, uncounted_gap_is_an_upper_bound)
{
    struct sk_lag_partition p = part(0, 5000);
    sk_lag_partition_settle(&p, 1, false, 1000, 4000);
    cr_assert_eq(p.lag, 5000);
    cr_assert_not(p.lag_exact);
    cr_assert_float_eq(p.lag_seconds, 3.0, 1e-9);
    /* Reader ran out of time before any record: seconds unknown. */
    p = part(0, 5000);
    sk_lag_partition_settle(&p, 0, false, -1, 4000);
    cr_assert_eq(p.lag, 5000);
    cr_assert_lt(p.lag_seconds, 0);
}

/* ---- the window --------------------------------------------------------------- */

static struct sk_lag_report *report(int64_t t, int64_t committed, int64_t end, int members)
{
    struct sk_lag_report *r = sk_calloc(1, sizeof(*r));
    r->time_ms = t;
    r->brokers = sk_strdup("b:9092");
    r->n_groups = 1;
    r->groups = sk_calloc(1, sizeof(*r->groups));
    struct sk_lag_group *g = &r->groups[0];
    g->group = sk_strdup("skolsync-db");
    g->members_known = members >= 0;
    if (members > 0) {
        g->n_members = 1;
        g->members = sk_calloc(1, sizeof(*g->members));
        g->members[0].client_id = sk_strdup("skolsync-sink-db");
        g->members[0].host = sk_strdup("/127.0.0.1");
        g->members[0].consumer_id = sk_strdup("m-1");
    }
    g->state = sk_strdup(members > 0 ? "Stable" : "Empty");
    g->n_parts = 1;
    g->parts = sk_calloc(1, sizeof(*g->parts));
    struct sk_lag_partition *p = &g->parts[0];
    *p = part(committed, end);
    p->topic = sk_strdup("s.persons");
    sk_lag_partition_settle(p, end - committed, true, end > committed ? t - 2000 : -1, t);
    return r;
}

Test(lag_window, statuses_over_samples_and_json_shape)
{
    struct sk_lag_rules r = rules();
    r.window = 4;
    struct sk_lag_window *w = sk_lag_window_new(&r);
    cr_assert_null(sk_lag_window_json(w));
    cr_assert_eq(sk_lag_window_status(w), SK_LAG_OK);
    for (int i = 0; i < 6; i++)
        sk_lag_window_add(w, report(1000000 + i * 5000, 10, 20 + i, 1));
    cr_assert_eq(sk_lag_window_status(w), SK_LAG_ERR); /* STALL maps to ERR for the group */
    cJSON *j = sk_lag_window_json(w);
    cr_assert_not_null(j);
    cr_assert_str_eq(cJSON_GetObjectItem(j, "status")->valuestring, "ERR");
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "window"), "samples")->valueint, 4);
    cJSON *g = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "groups"), 0);
    cr_assert_str_eq(cJSON_GetObjectItem(g, "group")->valuestring, "skolsync-db");
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(g, "members")), 1);
    cJSON *p = cJSON_GetArrayItem(cJSON_GetObjectItem(g, "partitions"), 0);
    cr_assert_str_eq(cJSON_GetObjectItem(p, "status")->valuestring, "STALL");
    cr_assert_eq(cJSON_GetObjectItem(p, "lag")->valueint, 15);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(p, "lag_exact")));
    cr_assert_float_eq(cJSON_GetObjectItem(p, "lag_seconds")->valuedouble, 2.0, 1e-9);
    cr_assert_eq(sk_lag_exit_code(sk_lag_json_status(j)), 2);

    /* The table renders the same JSON. */
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    sk_lag_json_table(j, out);
    fclose(out);
    cr_assert(strstr(text, "GROUP"), "%s", text);
    cr_assert(strstr(text, "STALL"), "%s", text);
    cr_assert(strstr(text, "skolsync-db: ERR, state Stable, 1 member(s)"), "%s", text);
    free(text);
    cJSON_Delete(j);

    /* It catches up: OK again at once. */
    sk_lag_window_add(w, report(1100000, 30, 30, 1));
    cr_assert_eq(sk_lag_window_status(w), SK_LAG_OK);
    sk_lag_window_destroy(w);
}

Test(lag_window, gone_partitions_are_forgotten)
{
    struct sk_lag_window *w = sk_lag_window_new(NULL);
    sk_lag_window_add(w, report(1000, 10, 10, 1));
    struct sk_lag_report *r = report(2000, 10, 10, 1);
    free(r->groups[0].group);
    r->groups[0].group = sk_strdup("skolsync-other");
    sk_lag_window_add(w, r);
    cJSON *j = sk_lag_window_json(w);
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "window"), "samples")->valueint, 1);
    cJSON_Delete(j);
    sk_lag_window_destroy(w);
}

Test(lag_window, stopped_group_is_err_from_a_single_sample)
{
    struct sk_lag_window *w = sk_lag_window_new(NULL);
    sk_lag_window_add(w, report(1000, 10, 30, 0));
    cJSON *j = sk_lag_window_json(w);
    cJSON *p = cJSON_GetArrayItem(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "groups"), 0), "partitions"),
        0);
    cr_assert_str_eq(cJSON_GetObjectItem(p, "status")->valuestring, "STOP");
    cr_assert_str_eq(cJSON_GetObjectItem(j, "status")->valuestring, "ERR");
    cJSON_Delete(j);
    sk_lag_window_destroy(w);
}

Test(lag_exit, codes)
{
    cr_assert_eq(sk_lag_exit_code(SK_LAG_OK), 0);
    cr_assert_eq(sk_lag_exit_code(SK_LAG_WARN), 1);
    cr_assert_eq(sk_lag_exit_code(SK_LAG_ERR), 2);
    cr_assert_eq(sk_lag_exit_code(SK_LAG_STOP), 2);
    cr_assert_eq(sk_lag_exit_code(SK_LAG_STALL), 2);
    cr_assert_eq(sk_lag_exit_code(SK_LAG_REWIND), 2);
}

Test(lag_cli, usage_and_bad_arguments_without_a_broker)
{
    char *argv1[] = {"lag", "--bogus", NULL};
    cr_assert_eq(sk_lag_cli(2, argv1, stderr), 64);
    char *argv2[] = {"lag", "--brokers", "x:1", "-c", "f.yaml", NULL};
    cr_assert_eq(sk_lag_cli(5, argv2, stderr), 64);
    char *argv3[] = {"lag", "--brokers", "x:1", "--count", "2", NULL};
    cr_assert_eq(sk_lag_cli(5, argv3, stderr), 64);
    char *argv4[] = {"lag", "--help", NULL};
    cr_assert_eq(sk_lag_cli(2, argv4, stderr), 0);
}

Test(lag_cli, unreachable_broker_is_exit_3)
{
    /* Port 1 on loopback: refused at once. */
    char *argv[] = {"lag", "--brokers", "127.0.0.1:1", "--timeout", "2s", NULL};
    cr_assert_eq(sk_lag_cli(5, argv, stderr), 3);
}

/* ---- the daemon's path: its own Kafka handle on the embedded broker ---------- */

#include <librdkafka/rdkafka.h>

#include "kafka.h"

Test(lag_embedded, collect_on_the_embedded_broker_never_describes_groups, .timeout = 60)
{
    struct sk_kafka_conf kc = {.brokers = "embedded",
                               .topic_prefix = "lagt.",
                               .partitions = 1,
                               .replication_factor = 1,
                               .connect_timeout_ms = 10000};
    const char *cols[] = {"persons"};
    struct sk_kafka *k = NULL;
    struct sk_error err = {0};
    cr_assert_eq(sk_kafka_start(&kc, cols, 1, &k, &err), 0, "%s", err.msg);
    char *topic = sk_kafka_topic_for(k, "persons");
    rd_kafka_conf_t *conf = sk_kafka_conf_new(k, "lag-test-producer", NULL, &err);
    char errstr[256];
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(p, "%s", errstr);
    int64_t ts = sk_now_us() / 1000 - 30000;
    for (int i = 0; i < 5; i++)
        cr_assert_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(0),
                                       RD_KAFKA_V_KEY("k", 1), RD_KAFKA_V_VALUE("v", 1),
                                       RD_KAFKA_V_TIMESTAMP(i < 2 ? ts - 1000 : ts + i),
                                       RD_KAFKA_V_END),
                     0);
    cr_assert_eq(rd_kafka_flush(p, 10000), 0);
    rd_kafka_destroy(p);

    /* The group committed 2: three records (the first at ts+2) wait. */
    conf = sk_kafka_conf_new(k, "lag-test-consumer", NULL, &err);
    cr_assert_eq(sk_kafka_conf_set(conf, "group.id", "skolsync-emb", &err), 0);
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(c, "%s", errstr);
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(offs, topic, 0)->offset = 2;
    cr_assert_eq(rd_kafka_commit(c, offs, 0), 0);
    rd_kafka_topic_partition_list_destroy(offs);
    rd_kafka_destroy(c);
    /* A second group on the same partition at another offset (4): read in a second round. */
    conf = sk_kafka_conf_new(k, "lag-test-consumer2", NULL, &err);
    cr_assert_eq(sk_kafka_conf_set(conf, "group.id", "skolsync-emb2", &err), 0);
    c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    offs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(offs, topic, 0)->offset = 4;
    cr_assert_eq(rd_kafka_commit(c, offs, 0), 0);
    rd_kafka_topic_partition_list_destroy(offs);
    rd_kafka_destroy(c);

    const char *groups[] = {"skolsync-emb", "skolsync-emb2"};
    struct sk_lag_collect_options o = {
        .kafka = k, .groups = groups, .n_groups = 2, .describe_members = true, .timeout_ms = 5000};
    struct sk_lag_report *r = NULL;
    cr_assert_eq(sk_lag_collect(&o, &r, &err), 0, "%s", err.msg);
    cr_assert_eq(r->requests.describe_groups, 0);
    cr_assert_eq(r->n_groups, 2);
    cr_assert_not(r->groups[0].members_known);
    cr_assert_eq(r->groups[1].n_parts, 1);
    cr_assert_eq(r->groups[1].parts[0].lag, 1);
    cr_assert_eq(r->groups[1].parts[0].first_ts_ms, ts + 4);
    cr_assert_eq(r->requests.list_offsets, 2, "one watermark query for the shared partition");
    cr_assert_eq(r->groups[0].n_parts, 1, "error: %s",
                 r->groups[0].error ? r->groups[0].error : "-");
    struct sk_lag_partition *part0 = &r->groups[0].parts[0];
    cr_assert_eq(part0->committed, 2);
    cr_assert_eq(part0->end, 5);
    cr_assert_eq(part0->lag, 3);
    cr_assert(part0->lag_exact);
    cr_assert_eq(part0->first_ts_ms, ts + 2);
    cr_assert_geq(part0->lag_seconds, 29.0);
    struct sk_lag_window *w = sk_lag_window_new(NULL);
    sk_lag_window_add(w, r);
    /* Members unknown, one sample, fresh enough: nothing to accuse yet. */
    cr_assert_eq(sk_lag_window_status(w), SK_LAG_OK);
    sk_lag_window_destroy(w);
    free(topic);
    sk_kafka_destroy(k);
}

/* ---- the client side of GET /api/v1/lag (the daemon answers on the embedded broker) --- */

#include <unistd.h>

#include "http.h"

static void serve_lag(void *ctx, const struct sk_http_request *req, struct sk_http_response *resp)
{
    struct sk_lag_window *w = ctx;
    cJSON *j = sk_lag_window_json(w);
    resp->status = j ? 200 : 503;
    resp->body = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
}

Test(lag_cli, embedded_config_asks_the_daemon_and_filters_groups, .timeout = 30)
{
    /* What the daemon keeps: two groups, one stopped with lag. */
    struct sk_lag_window *w = sk_lag_window_new(NULL);
    struct sk_lag_report *r = report(1000, 10, 30, 0);
    r->n_groups = 2;
    r->groups = sk_realloc(r->groups, 2 * sizeof(*r->groups));
    struct sk_lag_report *ok = report(1000, 5, 5, 1);
    r->groups[1] = ok->groups[0];
    free(r->groups[1].group);
    r->groups[1].group = sk_strdup("skolsync-fine");
    ok->n_groups = 0;
    sk_lag_report_free(ok);
    sk_lag_window_add(w, r);

    struct sk_error err = {0};
    struct sk_http *h = sk_http_start("127.0.0.1:0", NULL, &err);
    cr_assert_not_null(h, "%s", err.msg);
    cr_assert_eq(sk_http_route(h, "GET", "/api/v1/lag", serve_lag, w, &err), 0, "%s", err.msg);
    char dir[] = "/tmp/lagcliXXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char cfg[256];
    snprintf(cfg, sizeof(cfg), "%s/skolsync.yaml", dir);
    FILE *f = fopen(cfg, "w");
    fprintf(f,
            "kafka:\n  brokers: embedded\nadmin:\n  listen: 127.0.0.1:%d\n"
            "sources:\n  files:\n    type: jsonl-source\n    path: %s\n"
            "sinks:\n  db:\n    type: sqlite-sink\n    path: %s/out.db\n",
            sk_http_port(h), dir, dir);
    fclose(f);

    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    char *all[] = {"lag", "-c", cfg, "--json", NULL};
    int rc = sk_lag_cli(4, all, out);
    fclose(out);
    cr_assert_eq(rc, 2, "%s", text);
    cr_assert(strstr(text, "\"STOP\"") && strstr(text, "skolsync-fine"), "%s", text);
    free(text);

    out = open_memstream(&text, &len);
    char *one[] = {"lag", "-c", cfg, "--group", "skolsync-fine", NULL};
    rc = sk_lag_cli(5, one, out);
    fclose(out);
    cr_assert_eq(rc, 0, "%s", text);
    cr_assert(strstr(text, "skolsync-fine: OK"), "%s", text);
    cr_assert_null(strstr(text, "skolsync-db"), "%s", text);
    free(text);

    /* No daemon there: could not evaluate. */
    sk_http_stop(h);
    char *again[] = {"lag", "-c", cfg, "--timeout", "2s", NULL};
    cr_assert_eq(sk_lag_cli(5, again, stderr), 3);
    sk_lag_window_destroy(w);
}
