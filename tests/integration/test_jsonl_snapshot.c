/*
 * test_jsonl_snapshot.c: jsonl-source in `mode: snapshot` on the real broker
 * into SQLite: each complete file is the whole truth for its type, so an id
 * it no longer holds is deleted; a file still being written deletes nothing;
 * a drop over the delete guard's limits is held until released; an id on two
 * lines ends in Kafka as the sinks keep it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>

#include "model.h"
#include "sk_test.h"
#include "util.h"

struct snap {
    char *dir, *data, *db, *cfg, *log, *name, *topic;
    pid_t pid;
    int admin;
};

static const char *uuid(int n)
{
    static char buf[4][37];
    static int slot;
    char *u = buf[slot++ % 4];
    snprintf(u, 37, "00000000-0000-4000-8000-%012d", n);
    return u;
}

/* persons from..to, one a line; person `changed` with another given name. */
static char *persons(int from, int to, int changed)
{
    char *text = sk_strdup("");
    for (int n = from; n <= to; n++) {
        char *line = skt_fmt("{\"id\":\"%s\",\"meta\":{\"created\":\"2025-01-01T00:00:00Z\","
                             "\"modified\":\"2025-0%d-01T00:00:00Z\"},\"givenName\":\"%s%d\","
                             "\"familyName\":\"F\"}\n",
                             uuid(n), n == changed ? 3 : 2, n == changed ? "Changed" : "G", n);
        char *next = skt_fmt("%s%s", text, line);
        free(text);
        free(line);
        text = next;
    }
    return text;
}

/* Writes an export the way a system should: a new file renamed into place. */
static void drop(const struct snap *s, const char *text)
{
    char *tmp = skt_fmt("%s/.persons.tmp", s->data);
    char *dst = skt_fmt("%s/persons.jsonl", s->data);
    skt_write(tmp, text);
    cr_assert_eq(rename(tmp, dst), 0);
    free(tmp);
    free(dst);
}

/* Runs skolsync with the configuration written by start (again after a stop). */
static void launch(struct snap *s)
{
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", s->cfg, NULL};
    unlink(s->log);
    s->pid = skt_spawn(argv, s->log);
    s->admin = skt_logged_port(s->log, 30000);
    cr_assert_gt(s->admin, 0, "no admin port; see %s", s->log);
}

static struct snap start(const char *tag, const char *first)
{
    struct snap s = {.dir = skt_tmpdir(tag)};
    s.data = skt_fmt("%s/data", s.dir);
    s.db = skt_fmt("%s/out.db", s.dir);
    s.cfg = skt_fmt("%s/skolsync.yaml", s.dir);
    s.log = skt_fmt("%s/daemon.log", s.dir);
    char *prefix = skt_unique_prefix();
    s.name = skt_fmt("snap-%.8s", prefix + 1);
    s.topic = skt_fmt("%spersons", prefix);
    char *mk = skt_fmt("mkdir -p %s", s.data);
    cr_assert_eq(skt_sh(mk, 5, NULL), 0);
    free(mk);
    drop(&s, first);
    char *text = skt_fmt("kafka:\n  brokers: %s\n  topic_prefix: %s\n  partitions: 3\n"
                         "  connect_timeout: 20s\n"
                         "admin:\n  listen: 127.0.0.1:0\n  token: t0ken-snapshot\n"
                         "log:\n  level: info\n"
                         "shutdown_timeout: 20s\n"
                         "sources:\n"
                         "  %s:\n"
                         "    type: jsonl-source\n"
                         "    path: %s\n"
                         "    mode: snapshot\n"
                         "    settle_time: 0s\n"
                         "    batch_size: 4\n"
                         "    poll_interval: 300ms\n"
                         "    delete_guard: {max_count: 5, min_count: 0, max_fraction: 50%%}\n"
                         "sinks:\n"
                         "  db-%.8s:\n"
                         "    type: sqlite-sink\n"
                         "    path: %s\n",
                         skt_brokers(), prefix, s.name, s.data, prefix + 1, s.db);
    skt_write(s.cfg, text);
    free(text);
    free(prefix);
    launch(&s);
    return s;
}

/* sql's value, or NULL until the sink has made its table (the file exists a moment before). */
static char *value(const struct snap *s, const char *sql)
{
    if (access(s->db, R_OK) != 0)
        return NULL;
    char *made = skt_sqlite_value(
        s->db, "select count(*) from sqlite_master where type = 'table' and name = 'persons'",
        NULL);
    bool ready = made && strcmp(made, "1") == 0;
    free(made);
    return ready ? skt_sqlite_value(s->db, sql, NULL) : NULL;
}

/* Waits up to timeout_s for sql to give want. */
static bool wait_value(const struct snap *s, const char *sql, const char *want, int timeout_s)
{
    for (int i = 0; i < timeout_s * 4; i++) {
        char *v = value(s, sql);
        bool ok = v && strcmp(v, want) == 0;
        free(v);
        if (ok)
            return true;
        usleep(250000);
    }
    return false;
}

static long long held(const struct snap *s)
{
    char *url = skt_fmt("http://127.0.0.1:%d/metrics", s->admin);
    char *text = NULL;
    skt_http("GET", url, NULL, 10, &text);
    free(url);
    char *needle = skt_fmt("skolsync_held_deletions{connector=\"%s\"} ", s->name);
    const char *p = text ? strstr(text, needle) : NULL;
    long long v = p ? atoll(p + strlen(needle)) : -1;
    free(needle);
    free(text);
    return v;
}

static bool wait_held(const struct snap *s, long long want, int timeout_s)
{
    for (int i = 0; i < timeout_s * 4; i++) {
        if (held(s) == want)
            return true;
        usleep(250000);
    }
    return false;
}

static void stop(struct snap *s)
{
    cr_expect_eq(skt_stop(&s->pid, 30000), 0, "skolsync did not stop cleanly; see %s", s->log);
}

/*
 * The givenName of key's last record in topic (its 3 partitions, read from
 * their start, read_committed), what a target filled again from the
 * compacted topic would get; "" if there is none or it is a tombstone.
 */
static char *last_given_name(const char *topic, const char *key)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", skt_brokers(), errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "group.id", "skt-last-given-name", errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "isolation.level", "read_committed", errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(rk, "%s", errstr);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(3);
    for (int p = 0; p < 3; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    char *name = sk_strdup("");
    for (int i = 0, ends = 0; i < 300 && ends < 3; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        ends += m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
        if (!m->err && m->key_len == strlen(key) && memcmp(m->key, key, m->key_len) == 0) {
            struct sk_error err = {0};
            char *json = m->len ? sk_codec_decode(sk_entity_by_collection("persons"), m->payload,
                                                  m->len, NULL, &err)
                                : NULL;
            const char *at = json ? strstr(json, "\"givenName\":\"") : NULL;
            free(name);
            name = at ? sk_strndup(at + 13, strcspn(at + 13, "\"")) : sk_strdup("");
            free(json);
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return name;
}

#define COUNT "select count(*) from persons"

TestSuite(jsonl_snapshot);

Test(jsonl_snapshot, a_drop_deletes_what_it_lost_adds_and_changes_the_rest, .timeout = 120)
{
    char *first = persons(1, 12, 0);
    struct snap s = start("snap-drop", first);
    free(first);
    cr_assert(wait_value(&s, COUNT, "12", 40), "first snapshot not stored; see %s", s.log);
    /* The next export: 1 gone, 2 changed, 13 new. */
    char *next = persons(2, 13, 2);
    drop(&s, next);
    free(next);
    char *gone = skt_fmt("select count(*) from persons where id = '%s'", uuid(1));
    cr_assert(wait_value(&s, gone, "0", 40), "the id missing from the snapshot was not deleted");
    free(gone);
    char *changed =
        skt_fmt("select json_extract(doc, '$.givenName') from persons where id = '%s'", uuid(2));
    cr_assert(wait_value(&s, changed, "Changed2", 20), "the change did not arrive");
    free(changed);
    cr_assert(wait_value(&s, COUNT, "12", 20));
    char *added = skt_fmt("select count(*) from persons where id = '%s'", uuid(13));
    cr_assert(wait_value(&s, added, "1", 20), "the new id did not arrive");
    free(added);
    cr_assert_eq(held(&s), 0);
    /* A drop with a line whose id cannot be read: 2 and 3 are missing, but
     * the unreadable line may be one of them, so nothing is deleted. */
    char *rest = persons(4, 13, 0);
    char *bad = skt_fmt("%s{\"id\": \"not-a-uuid\", \"givenName\": \"X\"}\n", rest);
    drop(&s, bad);
    free(rest);
    free(bad);
    char *cmd = skt_fmt("grep -q 'no deletions from this snapshot' %s", s.log);
    bool warned = false;
    for (int i = 0; i < 120 && !warned; i++) {
        warned = skt_sh(cmd, 5, NULL) == 0;
        if (!warned)
            usleep(250000);
    }
    free(cmd);
    cr_assert(warned, "the unreadable line was not reported; see %s", s.log);
    sleep(1);
    char *v = value(&s, COUNT);
    cr_assert_str_eq(v, "12", "a drop with an unreadable line deleted rows");
    free(v);
    stop(&s);
}

Test(jsonl_snapshot, a_partial_drop_deletes_nothing_and_a_mass_drop_is_held_until_released,
     .timeout = 150)
{
    char *first = persons(1, 12, 0);
    struct snap s = start("snap-guard", first);
    free(first);
    cr_assert(wait_value(&s, COUNT, "12", 40), "first snapshot not stored; see %s", s.log);
    /* A file still being written: eleven lines, the last without its newline
     * yet (if it were taken, its deletion of 12 would pass the guard). */
    char *part = persons(1, 11, 0);
    part[strlen(part) - 1] = '\0';
    drop(&s, part);
    free(part);
    sleep(3); /* ten polls */
    char *v = value(&s, COUNT);
    cr_assert_str_eq(v, "12", "a file whose last line lacks its newline deleted rows");
    free(v);
    /* A complete export of 3: 9 missing, more than max_count 5: held. */
    char *few = persons(1, 3, 0);
    drop(&s, few);
    free(few);
    cr_assert(wait_held(&s, 9, 30), "held: %lld, expected 9; see %s", held(&s), s.log);
    sleep(2);
    v = value(&s, COUNT);
    cr_assert_str_eq(v, "12", "held deletions were published");
    free(v);
    /* A restart still holds them (the cursor says so), and publishes nothing. */
    stop(&s);
    launch(&s);
    cr_assert(wait_held(&s, 9, 30), "held after a restart: %lld; see %s", held(&s), s.log);
    sleep(2);
    v = value(&s, COUNT);
    cr_assert_str_eq(v, "12", "held deletions were published after a restart");
    free(v);
    /* Released: published once, the gauge goes to 0. */
    char *url = skt_fmt("http://127.0.0.1:%d/api/v1/connectors/%s/release", s.admin, s.name);
    char *cmd = skt_fmt("curl -s -o /dev/null -w '%%{http_code}' -X POST "
                        "-H 'Authorization: Bearer t0ken-snapshot' %s",
                        url);
    char *code = NULL;
    skt_sh(cmd, 10, &code);
    cr_assert(code && strncmp(code, "200", 3) == 0, "release answered %s", code ? code : "");
    free(code);
    free(cmd);
    free(url);
    cr_assert(wait_value(&s, COUNT, "3", 30), "the released deletions did not arrive");
    cr_assert(wait_held(&s, 0, 10), "held after the release: %lld", held(&s));
    stop(&s);
}

/* One id on two lines of an export, the newer meta.modified first: the sink
 * keeps that one (the stale-update guard), and Kafka's last record for the
 * id must be it too, or a target filled again from the compacted topic gets
 * the older one. It was the older one (the last line). */
Test(jsonl_snapshot, an_id_on_two_lines_ends_in_kafka_as_the_sink_keeps_it, .timeout = 120)
{
    char *first = persons(1, 3, 0);
    struct snap s = start("snap-dup", first);
    free(first);
    cr_assert(wait_value(&s, COUNT, "3", 40), "first snapshot not stored; see %s", s.log);
    /* 2 as Changed2 (modified March), then as G2 (February) */
    char *newer = persons(2, 2, 2), *rest = persons(1, 3, 0);
    char *both = skt_fmt("%s%s", newer, rest);
    drop(&s, both);
    free(newer);
    free(rest);
    free(both);
    char *kept =
        skt_fmt("select json_extract(doc, '$.givenName') from persons where id = '%s'", uuid(2));
    cr_assert(wait_value(&s, kept, "Changed2", 40), "the sink did not keep the newer line");
    free(kept);
    char *cmd = skt_fmt("grep -q 'id(s) on more than one line' %s", s.log);
    for (int i = 0; i < 40 && skt_sh(cmd, 5, NULL) != 0; i++)
        usleep(250000);
    free(cmd);
    sleep(1); /* the snapshot's last batch stored */
    char *last = last_given_name(s.topic, uuid(2));
    cr_assert_str_eq(last, "Changed2", "Kafka's last record of the id is not the one kept");
    free(last);
    stop(&s);
}
