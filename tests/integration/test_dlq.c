/*
 * test_dlq.c: a record the target refuses lands in the DLQ with its context,
 * `skolsync dlq list` shows it, and after the target is fixed `skolsync dlq
 * replay` puts it back on its topic, where the sink applies it, unless the
 * topic holds a later record for its key (a deletion it would undo). A source's
 * dead letter (jsonl-source, ss12000-source) names its entity type, so replay
 * can encode it again, and a letter replay cannot re-publish makes it fail.
 * A record Kafka can never take (larger than its message size) is
 * dead-lettered, the records after it arrive, and once the topic takes it a
 * replay delivers it.
 * Real broker and real PostgreSQL (SK_TEST_BROKERS, SK_TEST_PG).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <librdkafka/rdkafka.h>

#include "model.h"
#include "sk_test.h"
#include "util.h"

static char *pg_query(const char *sql)
{
    const char *pg = getenv("SK_TEST_PG");
    cr_assert(pg && *pg, "SK_TEST_PG is not set: run the suite with `make test`");
    char *cmd = skt_fmt("psql '%s' -Atc \"%s\"", pg, sql);
    char *out = NULL;
    int rc = skt_sh(cmd, 30, &out);
    cr_assert_eq(rc, 0, "%s:\n%s", cmd, out);
    free(cmd);
    out[strcspn(out, "\n")] = '\0';
    return out;
}

/*
 * Adds a copy of the first entity of a .jsonl file with a new id and a field of
 * n random characters from alphabet, as line `at` (0-based; -1: the last).
 */
static void add_large(const char *path, const char *id, const char *field, int n,
                      const char *alphabet, int at)
{
    char *py = skt_fmt("python3 - <<'EOF'\n"
                       "import json, random\n"
                       "p='%s'\n"
                       "lines=open(p,encoding='utf-8').readlines()\n"
                       "d=json.loads(lines[0])\n"
                       "d['id']='%s'\n"
                       "r=random.Random(1)\n"
                       "d['%s']=''.join(r.choice('%s') for _ in range(%d))\n"
                       "at=%d\n"
                       "lines.insert(len(lines) if at < 0 else at,"
                       "json.dumps(d,ensure_ascii=False)+'\\n')\n"
                       "open(p,'w',encoding='utf-8').writelines(lines)\n"
                       "EOF",
                       path, id, field, alphabet, n, at);
    char *out = NULL;
    cr_assert_eq(skt_sh(py, 20, &out), 0, "%s", out);
    free(out);
    free(py);
}

/* Produces one record to topic's partition as any producer could; header, when
 * not NULL, is "name=value"; value NULL is a tombstone. */
static void produce_raw(const char *topic, int32_t partition, const char *key, const void *value,
                        size_t len, const char *header)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    cr_assert_eq(
        rd_kafka_conf_set(conf, "bootstrap.servers", skt_brokers(), errstr, sizeof(errstr)),
        RD_KAFKA_CONF_OK);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(p, "%s", errstr);
    rd_kafka_headers_t *h = rd_kafka_headers_new(1);
    if (header) {
        const char *eq = strchr(header, '=');
        rd_kafka_header_add(h, header, eq - header, eq + 1, -1);
    }
    cr_assert_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                                   RD_KAFKA_V_KEY(key, strlen(key)),
                                   RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_HEADERS(h),
                                   RD_KAFKA_V_END),
                 RD_KAFKA_RESP_ERR_NO_ERROR);
    cr_assert_eq(rd_kafka_flush(p, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);
}

/* `skolsync dlq replay` with args (which letters; NULL: all) re-publishes one
 * letter and skips none; then `run` applies it. */
static void replay_one_and_run(const char *cfg, const char *args, const char *run)
{
    char *replay = skt_fmt("%s dlq replay -c %s %s", skt_skolsync(), cfg, args ? args : "");
    char *out = NULL;
    int rc = skt_sh(replay, 60, &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "replayed 1 dead letter(s), skipped 0"), "%s", out);
    free(out);
    rc = skt_sh(run, 200, &out);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    free(replay);
}

Test(dlq, refused_record_is_listed_and_replayed_after_a_fix, .timeout = 240)
{
    char *dir = skt_tmpdir("dlq");
    char *data = skt_fmt("%s/data", dir);
    char *cfg = skt_fmt("%s/skolsync.yaml", dir);
    char *prefix = skt_unique_prefix();
    char *suffix = strndup(prefix + 1, 8);
    char *schema = skt_fmt("dlq_%s", suffix);
    skt_generate(data, 31, 10);
    /* An organisation whose display name is too long for the btree index on it:
     * PostgreSQL refuses the row (54000), the sink dead-letters that record. */
    char *orgs = skt_fmt("%s/organisations.jsonl", data);
    add_large(orgs, "0bad0000-0000-4000-8000-000000000001", "displayName", 12000,
              "abcdefghijklmnopqrstuvwxyzåäö", -1);
    char *out = NULL;
    char *text = skt_fmt("kafka:\n  brokers: %s\n  topic_prefix: %s\n"
                         "admin:\n  listen: 127.0.0.1:0\n"
                         "sources:\n  files-%s:\n    type: jsonl-source\n    path: %s\n"
                         "sinks:\n  pg-%s:\n    type: postgres-sink\n    conninfo: \"%s\"\n"
                         "    schema: %s\n",
                         skt_brokers(), prefix, suffix, data, suffix, getenv("SK_TEST_PG"), schema);
    skt_write(cfg, text);

    char *run = skt_fmt("%s run --once -c %s", skt_skolsync(), cfg);
    int rc = skt_sh(run, 200, &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "1 dead-lettered"), "the refused record was not dead-lettered:\n%s", out);
    free(out);
    char *q = skt_fmt("SELECT count(*) FROM %s.organisations WHERE id = "
                      "'0bad0000-0000-4000-8000-000000000001'",
                      schema);
    char *n = pg_query(q);
    cr_assert_str_eq(n, "0");
    free(n);

    /* listed with where it came from and why */
    char *list = skt_fmt("%s dlq list -c %s", skt_skolsync(), cfg);
    rc = skt_sh(list, 60, &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "\"key\":\"0bad0000-0000-4000-8000-000000000001\""), "%s", out);
    cr_assert(strstr(out, "organisations\",\"partition\""), "no original topic:\n%s", out);
    cr_assert(strstr(out, "index row"), "no error text:\n%s", out);
    free(out);

    /* the operator fixes the target, then replays */
    char *fix = skt_fmt("DROP INDEX %s.organisations_display_name_idx", schema);
    free(pg_query(fix));
    replay_one_and_run(cfg, NULL, run);
    n = pg_query(q);
    cr_assert_str_eq(n, "1", "the replayed record did not reach the target");
    free(n);
    char *drop = skt_fmt("DROP SCHEMA %s CASCADE", schema);
    free(pg_query(drop));
}

/*
 * A refused record whose key was deleted after it (the tombstone a snapshot
 * source publishes for an entity gone from its export) is superseded, not
 * replayed: put back after the tombstone it would be the key's latest record,
 * and every sink would create the deleted entity again. A letter with no
 * later record for its key is replayed.
 */
Test(dlq, a_letter_whose_key_was_deleted_since_is_superseded_not_replayed, .timeout = 240)
{
    static const char gone[] = "0bad0000-0000-4000-8000-000000000002";
    static const char kept[] = "0bad0000-0000-4000-8000-000000000003";
    char *dir = skt_tmpdir("dlq-superseded");
    char *data = skt_fmt("%s/data", dir);
    char *cfg = skt_fmt("%s/skolsync.yaml", dir);
    char *prefix = skt_unique_prefix();
    char *suffix = strndup(prefix + 1, 8);
    char *schema = skt_fmt("dlq_%s", suffix);
    skt_generate(data, 32, 10);
    /* two organisations whose display names the index refuses (54000) */
    char *orgs = skt_fmt("%s/organisations.jsonl", data);
    add_large(orgs, gone, "displayName", 12000, "abcdefghijklmnopqrstuvwxyzåäö", -1);
    add_large(orgs, kept, "displayName", 12000, "abcdefghijklmnopqrstuvwxyzåäö", -1);
    char *text = skt_fmt("kafka:\n  brokers: %s\n  topic_prefix: %s\n"
                         "admin:\n  listen: 127.0.0.1:0\n"
                         "sources:\n  files-%s:\n    type: jsonl-source\n    path: %s\n"
                         "sinks:\n  pg-%s:\n    type: postgres-sink\n    conninfo: \"%s\"\n"
                         "    schema: %s\n",
                         skt_brokers(), prefix, suffix, data, suffix, getenv("SK_TEST_PG"), schema);
    skt_write(cfg, text);
    char *run = skt_fmt("%s run --once -c %s", skt_skolsync(), cfg);
    char *out = NULL;
    int rc = skt_sh(run, 200, &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "2 dead-lettered"), "the refused records were not dead-lettered:\n%s",
              out);
    free(out);

    /* the entity is deleted after its letter, on the partition its record was read from */
    char *list = skt_fmt("%s dlq list -c %s", skt_skolsync(), cfg);
    rc = skt_sh(list, 60, &out);
    cr_assert_eq(rc, 0, "%s", out);
    char *key = skt_fmt("\"key\":\"%s\"", gone);
    const char *at = strstr(out, key);
    cr_assert_not_null(at, "no dead letter of %s:\n%s", gone, out);
    const char *line = at;
    while (line > out && line[-1] != '\n')
        line--;
    const char *part = strstr(line, "\"partition\":");
    cr_assert(part && part < at, "the letter names no partition:\n%s", out);
    int32_t partition = atoi(part + strlen("\"partition\":"));
    free(out);
    char *topic = skt_fmt("%sorganisations", prefix);
    produce_raw(topic, partition, gone, NULL, 0, NULL);

    /* the operator fixes the target and replays both letters */
    char *fix = skt_fmt("DROP INDEX %s.organisations_display_name_idx", schema);
    free(pg_query(fix));
    char *replay = skt_fmt("%s dlq replay -c %s", skt_skolsync(), cfg);
    rc = skt_sh(replay, 60, &out);
    cr_assert_eq(rc, 0, "a superseded letter is no failure:\n%s", out);
    cr_assert(strstr(out, "replayed 1 dead letter(s), skipped 0, superseded 1"), "%s", out);
    cr_assert(strstr(out, "a later tombstone"), "no reason given:\n%s", out);
    free(out);
    rc = skt_sh(run, 200, &out);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    char *q = skt_fmt("SELECT count(*) FILTER (WHERE id = '%s') || ',' || "
                      "count(*) FILTER (WHERE id = '%s') FROM %s.organisations",
                      gone, kept, schema);
    char *n = pg_query(q);
    cr_assert_str_eq(n, "0,1", "want the deleted organisation gone and the other replayed");
    free(n);
    char *drop = skt_fmt("DROP SCHEMA %s CASCADE", schema);
    free(pg_query(drop));
    free(drop);
    free(q);
    free(replay);
    free(fix);
    free(topic);
    free(key);
    free(list);
    free(run);
    free(text);
    free(orgs);
    free(schema);
    free(suffix);
    free(prefix);
    free(cfg);
    free(data);
    free(dir);
}

/* The SS 12000 test server on a free port, with extra arguments; returns the port. */
static int ss12000_server(const char *dir, const char *fault, pid_t *pid)
{
    char *log = skt_fmt("%s/ss12000.log", dir);
    char *argv[] = {"python3",    SK_SOURCE_DIR "/tests/fixtures/ss12000_server.py",
                    "--port",     "0",
                    "--base",     "/v2.0",
                    "--students", "10",
                    "--fault",    (char *)fault,
                    NULL};
    *pid = skt_spawn(argv, log);
    char *cmd = skt_fmt("sed -n 's/^LISTENING 127.0.0.1:\\([0-9]*\\)$/\\1/p' %s", log);
    int port = 0;
    for (int i = 0; i < 150 && !port; i++) {
        usleep(100000);
        char *out = NULL;
        skt_sh(cmd, 5, &out);
        port = atoi(out ? out : "");
        free(out);
    }
    cr_assert(port > 0, "the SS 12000 test server did not start (see %s)", log);
    free(cmd);
    free(log);
    return port;
}

/* `run --once`, whose output must name each of the NULL-terminated logged, then
 * `dlq list`: its output (caller frees). */
static char *sync_and_list(const char *cfg, const char *const *logged)
{
    char *run = skt_fmt("%s run --once -c %s", skt_skolsync(), cfg);
    char *out = NULL;
    int rc = skt_sh(run, 150, &out);
    cr_assert_eq(rc, 0, "%s", out);
    for (; *logged; logged++)
        cr_assert(strstr(out, *logged), "no \"%s\" in the log:\n%s", *logged, out);
    free(out);
    free(run);
    char *list = skt_fmt("%s dlq list -c %s", skt_skolsync(), cfg);
    rc = skt_sh(list, 60, &out);
    cr_assert_eq(rc, 0, "%s", out);
    free(list);
    return out;
}

Test(dlq, dead_letters_of_every_source_name_their_entity_and_are_replayed, .timeout = 240)
{
    char *dir = skt_tmpdir("dlq-sources");
    /* jsonl-source: one good room, one line that is not JSON */
    char *rooms = skt_fmt("%s/rooms.jsonl", dir);
    skt_write(rooms, "{\"id\":\"7e000000-0000-4000-8000-000000000001\",\"displayName\":\"Sal 1\","
                     "\"owner\":{\"id\":\"7e000000-0000-4000-8000-0000000000ff\"}}\n"
                     "{broken\n");
    /* ss12000-source: one person on a page lacks a required field */
    pid_t server;
    int port = ss12000_server(dir, "bad_record:count=1,paths=/persons,mode=missing", &server);
    char *prefix = skt_unique_prefix();
    char *suffix = strndup(prefix + 1, 8);
    char *db = skt_fmt("%s/out.db", dir);
    char *head = skt_config_head(prefix, "info", "10s");
    char *text = skt_fmt("%ssources:\n  files-%s:\n    type: jsonl-source\n    path: %s\n"
                         "  sis-%s:\n    type: ss12000-source\n"
                         "    url: http://127.0.0.1:%d/v2.0\n"
                         "    entities: [Organisation, Person]\n"
                         "    validation: strict\n"
                         "sinks:\n  db-%s:\n    type: sqlite-sink\n    path: %s\n",
                         head, suffix, rooms, suffix, port, suffix, db);
    char *cfg = skt_fmt("%s/skolsync.yaml", dir);
    skt_write(cfg, text);
    /* one dead letter of each source, each naming its entity type */
    const char *const logged[] = {"dead-lettered rooms.jsonl:2", "required field givenName missing",
                                  NULL};
    char *out = sync_and_list(cfg, logged);
    cr_assert(strstr(out, "\"entity\":\"Room\""), "jsonl-source letter without entity:\n%s", out);
    cr_assert(strstr(out, "\"entity\":\"Person\""), "ss12000-source letter without entity:\n%s",
              out);
    /* personal data masked unless asked, and said so; input that is not JSON withheld */
    cr_assert(strstr(out, "\\\"civicNo\\\":\\\"***\\\"") && strstr(out, "\"masked\":true"),
              "the civic number is not masked:\n%s", out);
    cr_assert(strstr(out, "\"value_hidden\":"), "the broken line is shown:\n%s", out);
    cr_assert(strstr(out, "--show-data shows it"), "masking not said:\n%s", out);
    char *shown = skt_fmt("%s dlq list -c %s --show-data", skt_skolsync(), cfg);
    char *full = NULL;
    cr_assert_eq(skt_sh(shown, 60, &full), 0, "%s", full);
    cr_assert(strstr(full, "\\\"civicNo\\\":{") && strstr(full, "{broken"),
              "--show-data does not show the input:\n%s", full);
    free(full);
    free(shown);
    const char *k = strstr(out, "\"key\":\"");
    cr_assert_not_null(k, "the person's dead letter has no key:\n%s", out);
    char id[37];
    snprintf(id, sizeof(id), "%s", k + 7);
    free(out);

    /* the SS 12000 letter is encoded again and re-published to the persons topic */
    char *sis = skt_fmt("--connector sis-%s", suffix);
    char *run = skt_fmt("%s run --once -c %s", skt_skolsync(), cfg);
    replay_one_and_run(cfg, sis, run);
    /* the replayed version (the server's copy still has its givenName) */
    char *q = skt_fmt("sqlite3 %s \"SELECT json_extract(doc, '$.givenName') IS NULL FROM persons "
                      "WHERE id = '%s'\"",
                      db, id);
    int rc = skt_sh(q, 20, &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_str_eq(out, "1\n", "the replayed person did not reach the target (%s)", id);
    free(out);

    /* the broken line still does not decode: replay says so and fails */
    char *replay = skt_fmt("%s dlq replay -c %s --connector files-%s", skt_skolsync(), cfg, suffix);
    rc = skt_sh(replay, 60, &out);
    cr_assert_neq(rc, 0, "a skipped dead letter must fail the replay:\n%s", out);
    cr_assert(strstr(out, "replayed 0 dead letter(s), skipped 1"), "%s", out);
    cr_assert(strstr(out, "invalid JSON"), "no reason given:\n%s", out);
    free(out);
    free(replay);

    /* the line was read already: the operator replays the letter with the fixed record */
    char *list = skt_fmt("%s dlq list -c %s --connector files-%s", skt_skolsync(), cfg, suffix);
    rc = skt_sh(list, 60, &out);
    cr_assert_eq(rc, 0, "%s", out);
    const char *at = strstr(out, "\"offset\":");
    cr_assert_not_null(at, "the jsonl letter has no offset:\n%s", out);
    long long letter = atoll(at + 9);
    free(out);
    char *fixed = skt_fmt("%s/fixed.json", dir);
    skt_write(fixed, "{\"id\":\"7E000000-0000-4000-8000-000000000002\",\"displayName\":\"Sal 2\","
                     "\"owner\":{\"id\":\"7e000000-0000-4000-8000-0000000000ff\"}}\n");
    char *corrected = skt_fmt("--offset %lld --value-file %s", letter, fixed);
    replay_one_and_run(cfg, corrected, run);
    free(corrected);
    q = skt_fmt("sqlite3 %s \"SELECT json_extract(doc, '$.displayName') FROM rooms WHERE id = "
                "'7e000000-0000-4000-8000-000000000002'\"",
                db);
    rc = skt_sh(q, 20, &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_str_eq(out, "Sal 2\n", "the corrected room did not reach the target");
    free(out);

    /* a corrected value replaces exactly one letter: a range is refused */
    char *wide =
        skt_fmt("%s dlq replay -c %s --from 0 --value-file %s", skt_skolsync(), cfg, fixed);
    rc = skt_sh(wide, 60, &out);
    cr_assert_neq(rc, 0, "a corrected value for a range of letters must be refused:\n%s", out);
    cr_assert(strstr(out, "select it by its offset"), "%s", out);
    free(out);
    skt_stop(&server, 5000);
}

/* Where the message size that refuses the large record is set. */
enum too_large {
    TOPIC_TXN, /* the persons topic's max.message.bytes: the broker refuses, in a transaction */
    TOPIC_ALO, /* the same without transactions (exactly_once: false) */
    PRODUCER,  /* the producer's message.max.bytes: refused before it leaves */
};

ParameterizedTestParameters(dlq, record_kafka_cannot_take_is_dead_lettered)
{
    static enum too_large modes[] = {TOPIC_TXN, TOPIC_ALO, PRODUCER};
    return cr_make_param_array(enum too_large, modes, 3);
}

ParameterizedTest(enum too_large *mode, dlq, record_kafka_cannot_take_is_dead_lettered,
                  .timeout = 200)
{
    char *dir = skt_tmpdir("dlq-too-large");
    char *data = skt_fmt("%s/data", dir);
    skt_generate(data, 41, 10);
    /* A person of ~60 kB as line 2 of persons.jsonl: the lines after it must arrive. */
    char *persons = skt_fmt("%s/persons.jsonl", data);
    /* not compressible: the broker sees the compressed size */
    add_large(persons, "0b160000-0000-4000-8000-000000000001", "givenName", 60000,
              "abcdefghijklmnopqrstuvwxyz0123456789", 1);
    char *out = NULL;
    char *prefix = skt_unique_prefix();
    char *suffix = strndup(prefix + 1, 8);
    char *persons_topic = skt_fmt("%spersons", prefix);
    /* compacted, as skolsync makes its topics: it refuses any other kind */
    static const char *const too_small[] = {"max.message.bytes", "20000", "cleanup.policy",
                                            "compact", NULL};
    static const char *const large_enough[] = {"max.message.bytes", "1000000", "cleanup.policy",
                                               "compact", NULL};
    if (*mode != PRODUCER)
        skt_topic_settings(persons_topic, true, too_small);
    char *db = skt_fmt("%s/out.db", dir);
    char *head = skt_config_head(prefix, "info", "10s");
    char *cfg = skt_fmt("%s/skolsync.yaml", dir);
    /* kafka: opens the head: the mode's settings go right under it */
    cr_assert(strncmp(head, "kafka:\n", 7) == 0, "%s", head);
    char *text = skt_fmt("kafka:\n%s%s"
                         "sources:\n  files-%s:\n    type: jsonl-source\n    path: %s\n"
                         "sinks:\n  db-%s:\n    type: sqlite-sink\n    path: %s\n",
                         *mode == TOPIC_ALO  ? "  exactly_once: false\n"
                         : *mode == PRODUCER ? "  properties:\n    message.max.bytes: \"20000\"\n"
                                             : "",
                         head + 7, suffix, data, suffix, db);
    skt_write(cfg, text);
    /* dead-lettered, listed once with its context */
    const char *const logged[] = {"dead-lettered Person 0b160000-0000-4000-8000-000000000001",
                                  NULL};
    out = sync_and_list(cfg, logged);
    cr_assert(strstr(out, "\"key\":\"0b160000-0000-4000-8000-000000000001\""), "%s", out);
    cr_assert(strstr(out, "\"entity\":\"Person\""), "%s", out);
    char *topic = skt_fmt("\"topic\":\"%spersons\",\"entity\"", prefix);
    cr_assert(strstr(out, topic), "not its topic:\n%s", out);
    cr_assert(!strchr(strchr(out, '\n') + 1, '\n'), "want exactly one dead letter:\n%s", out);
    /* cut to fit the producer's own limit; else whole, to replay once the topic takes it */
    if (*mode == PRODUCER)
        cr_assert(strstr(out, "\"truncated_from\":"), "not marked truncated:\n%s", out);
    else
        cr_assert(!strstr(out, "\"truncated_from\":"), "truncated with room to spare:\n%s", out);
    cr_assert(strstr(out, "too large"), "no reason:\n%s", out);
    free(out);

    if (*mode == PRODUCER) {
        /* every other record arrived: the dataset without the large line */
        char *drop = skt_fmt("sed -i '2d' %s", persons);
        cr_assert_eq(skt_sh(drop, 10, NULL), 0);
    } else {
        /* the operator lets the topic take it, and replays it: all arrived */
        skt_topic_settings(persons_topic, false, large_enough);
        sleep(2); /* the broker applies a topic's new setting in a moment */
        char *run = skt_fmt("%s run --once -c %s", skt_skolsync(), cfg);
        replay_one_and_run(cfg, NULL, run);
    }
    char why[2048] = "";
    cr_assert(skt_db_matches_dataset(db, data, why, sizeof(why)), "%s", why);
}

/*
 * With the daemon up, `dlq list` goes through its API (admin.token), so an
 * admin shell needs no Kafka credentials: a configuration whose kafka
 * section could not reach the broker itself (TLS against a plaintext
 * broker) still lists the letters. With the daemon down it reads Kafka.
 */
Test(dlq, list_goes_through_the_running_daemon, .timeout = 180)
{
    char *dir = skt_tmpdir("dlq-daemon");
    char *rooms = skt_fmt("%s/rooms.jsonl", dir);
    skt_write(rooms, "{broken\n");
    char *prefix = skt_unique_prefix();
    char *head = skt_config_head(prefix, "info", "10s");
    char *port = NULL;
    cr_assert_eq(skt_sh("python3 -c 'import socket; s = socket.socket(); "
                        "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'",
                        10, &port),
                 0);
    port[strcspn(port, "\n")] = '\0';
    char *text = skt_fmt("%ssources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                         "sinks:\n  db:\n    type: sqlite-sink\n    path: %s/out.db\n",
                         head, rooms, dir);
    char *fixed = skt_fmt("  listen: 127.0.0.1:%s\n  token: s3cret\n", port);
    char *with_admin = skt_fmt("%s", text);
    char *at = strstr(with_admin, "  listen: 127.0.0.1:0\n");
    cr_assert_not_null(at);
    char *cfg_text = skt_fmt("%.*s%s%s", (int)(at - with_admin), with_admin, fixed,
                             at + strlen("  listen: 127.0.0.1:0\n"));
    char *cfg = skt_fmt("%s/skolsync.yaml", dir);
    skt_write(cfg, cfg_text);
    /* the admin's copy: a kafka section that cannot reach the broker by itself */
    char *admin_cfg = skt_fmt("%s/admin.yaml", dir);
    char *admin_text = skt_fmt("%s", cfg_text);
    char *k = strstr(admin_text, "  connect_timeout: 20s\n");
    cr_assert_not_null(k);
    char *broken =
        skt_fmt("%.*s  connect_timeout: 5s\n  properties:\n    security.protocol: ssl\n%s",
                (int)(k - admin_text), admin_text, k + strlen("  connect_timeout: 20s\n"));
    skt_write(admin_cfg, broken);
    char *log = skt_fmt("%s/run.log", dir);
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", cfg, NULL};
    pid_t pid = skt_spawn(argv, log);
    char *list = skt_fmt("%s dlq list -c %s", skt_skolsync(), admin_cfg);
    char *out = NULL;
    bool seen = false;
    for (int i = 0; i < 60 && !seen; i++) {
        free(out);
        out = NULL;
        skt_sh(list, 30, &out);
        seen = out && strstr(out, "rooms.jsonl:1");
        if (!seen)
            sleep(1);
    }
    cr_assert(seen, "the running daemon did not answer dlq list:\n%s", out);
    free(out);
    skt_stop(&pid, 10000);
    /* the daemon down: Kafka directly, which this copy cannot reach */
    int rc = skt_sh(list, 60, &out);
    cr_assert_neq(rc, 0, "without the daemon the broken kafka section must fail:\n%s", out);
    free(out);
    free(list);
    free(log);
    free(broken);
    free(admin_text);
    free(admin_cfg);
    free(cfg);
    free(cfg_text);
    free(with_admin);
    free(fixed);
    free(text);
    free(port);
    free(head);
    free(prefix);
    free(rooms);
    free(dir);
}

/*
 * One record written to the persons topic by a producer other than skolsync
 * (anyone who can produce to the topic could), after a sync and before a new
 * person: the sink neither applies it nor passes it over in silence; it is
 * dead-lettered with `reason`, and the person behind it is applied. `tag`
 * names the test's directory; header, when not NULL, is "name=value".
 */
static void foreign_record_is_dead_lettered(const char *tag, const char *key, const void *value,
                                            size_t len, const char *header, const char *reason,
                                            bool replay)
{
    struct skt_small s;
    skt_small_setup(&s, tag, 37, 10);
    const char *run = s.run, *cfg = s.cfg, *data = s.data;
    char *out = NULL;
    cr_assert_eq(skt_sh(run, 120, &out), 0, "%s", out);
    free(out);

    char *topic = skt_fmt("%spersons", s.prefix);
    produce_raw(topic, 0, key, value, len, header);
    /* a new person after it, so the sink has a record to apply behind it */
    skt_append_persons(data, 9000, 1);
    cr_assert_eq(skt_sh(run, 120, &out), 0, "%s", out);
    cr_assert(strstr(out, "sink db (sqlite-sink): 1 records applied, 1 dead-lettered"),
              "the foreign record was not dead-lettered (or the person not applied):\n%s", out);
    free(out);
    char *list = skt_fmt("%s dlq list -c %s", skt_skolsync(), cfg);
    cr_assert_eq(skt_sh(list, 60, &out), 0, "%s", out);
    cr_assert(strstr(out, reason), "no reason \"%s\" in the letter:\n%s", reason, out);
    free(out);
    free(list);
    /* the next start resumes past it: not read, nor dead-lettered, again */
    cr_assert_eq(skt_sh(run, 120, &out), 0, "%s", out);
    cr_assert(strstr(out, "sink db (sqlite-sink): 0 records applied, 0 dead-lettered"),
              "the next start read the foreign record again:\n%s", out);
    free(out);
    if (replay) { /* put back as it was, it says again what it said: refused again */
        char *again = skt_fmt("%s dlq replay -c %s", skt_skolsync(), cfg);
        cr_assert_eq(skt_sh(again, 60, &out), 0, "%s", out);
        free(out);
        free(again);
        cr_assert_eq(skt_sh(run, 120, &out), 0, "%s", out);
        cr_assert(strstr(out, "sink db (sqlite-sink): 0 records applied, 1 dead-lettered"),
                  "the replayed record was not refused again:\n%s", out);
        free(out);
    }
    free(topic);
    skt_small_free(&s);
}

/* A record that claims to be the drivers' own (header skolsync-control) but
 * does not read as one. */
Test(dlq, a_control_record_that_does_not_read_is_dead_lettered, .timeout = 180)
{
    static const char junk[] = "{\"phase\":\"begin\",\"partitions\":1e9";
    foreign_record_is_dead_lettered("dlq-control", "skolsync-snapshot", junk, sizeof(junk) - 1,
                                    "skolsync-control=snapshot", "control record", false);
}

/* A person under another entity's key: stored under the key, it would
 * overwrite the entity the key names with another's document. */
Test(dlq, a_value_whose_id_is_not_its_key_is_dead_lettered, .timeout = 180)
{
    const char *doc = "{\"id\":\"00000000-0000-4000-8000-00000000abcd\",\"givenName\":\"Fel\","
                      "\"familyName\":\"Nyckel\"}";
    uint8_t *value = NULL;
    size_t len = 0;
    char id[37];
    int64_t modified;
    struct sk_error err = {0};
    cr_assert_eq(sk_codec_encode(sk_entity_by_name("Person"), doc, strlen(doc), &value, &len, id,
                                 &modified, &err),
                 0, "%s", err.msg);
    foreign_record_is_dead_lettered("dlq-foreign-id", "00000000-0000-4000-8000-00000000ef01",
                                    value, len, NULL, "is not the record's key", false);
    free(value);
}

/* An organisation on the persons topic, under its own id and saying so in
 * its header: its value parses as a Person (the same field numbers), so only
 * the header tells it apart. */
Test(dlq, a_record_of_another_entity_by_its_header_is_dead_lettered, .timeout = 180)
{
    const char *key = "00000000-0000-4000-8000-00000000ef02";
    char *doc = skt_fmt("{\"id\":\"%s\",\"displayName\":\"Fel skola\","
                        "\"organisationType\":\"Skolenhet\"}",
                        key);
    const struct sk_entity *org = sk_entity_by_name("Organisation");
    uint8_t *value = NULL;
    size_t len = 0;
    char id[37];
    int64_t modified;
    struct sk_error err = {0};
    cr_assert_eq(sk_codec_encode(org, doc, strlen(doc), &value, &len, id, &modified, &err), 0,
                 "%s", err.msg);
    /* the premise: without the header a sink would take it for a person */
    ProtobufCMessage *as_person =
        protobuf_c_message_unpack(sk_entity_by_name("Person")->desc, NULL, len, value);
    cr_assert_not_null(as_person, "the organisation does not parse as a Person");
    protobuf_c_message_free_unpacked(as_person, NULL);
    char *header = skt_fmt("skolsync-schema=%s", sk_entity_schema(org));
    foreign_record_is_dead_lettered("dlq-foreign-schema", key, value, len, header,
                                    "skolsync-schema is ss12000.v2.Organisation", true);
    free(header);
    free(value);
    free(doc);
}
