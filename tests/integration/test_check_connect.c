/*
 * test_check_connect.c: `skolsync check --connect` against the real test
 * services (scripts/testenv.sh): the embedded broker with files, the test
 * Kafka broker and an unreachable one, PostgreSQL (a good login, a wrong
 * password, a role lacking CREATE) and the SCIM server. Each case checks the
 * exit code and the `ok` / `FAIL` lines, and that a check changes nothing.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <libpq-fe.h>

#include "kafka.h"
#include "model.h"
#include "sk_test.h"
#include "skt_ss12000.h"
#include "util.h"

/* `PROGRAM check -c cfg --connect` (program NULL: this build's skolsync):
 * stdout+stderr, *rc. */
static char *check(const char *cfg, const char *program, int timeout_s, int *rc)
{
    char *cmd = skt_fmt("%s check -c %s --connect", program ? program : skt_skolsync(), cfg);
    char *out = NULL;
    *rc = skt_sh(cmd, timeout_s, &out);
    free(cmd);
    return out;
}

/* Lines of out that start with tag ("ok   ", "FAIL "). */
static size_t count_lines(const char *out, const char *tag)
{
    size_t n = 0;
    for (const char *l = out; l && *l;) {
        if (strncmp(l, tag, strlen(tag)) == 0)
            n++;
        const char *nl = strchr(l, '\n');
        l = nl ? nl + 1 : NULL;
    }
    return n;
}

/* The line starting with prefix, or fail the test. */
static void expect_line(const char *out, const char *prefix, const char *contains)
{
    for (const char *l = out; l && *l;) {
        const char *nl = strchr(l, '\n');
        size_t len = nl ? (size_t)(nl - l) : strlen(l);
        if (strncmp(l, prefix, strlen(prefix)) == 0) {
            char *text = skt_fmt("%.*s", (int)len, l);
            bool has = strstr(text, contains) != NULL;
            free(text);
            cr_assert(has, "line \"%s\" lacks \"%s\" in:\n%s", prefix, contains, out);
            return;
        }
        l = nl ? nl + 1 : NULL;
    }
    cr_assert_fail("no line \"%s\" in:\n%s", prefix, out);
}

static char *write_config(const char *dir, const char *text)
{
    char *path = skt_fmt("%s/skolsync.yaml", dir);
    skt_write(path, text);
    return path;
}

/* Writes text (freed here) as dir's configuration and checks it; program as in check. */
static char *check_text(const char *dir, char *text, const char *program, int timeout_s, int *rc)
{
    char *cfg = write_config(dir, text);
    chmod(cfg, 0644);
    char *out = check(cfg, program, timeout_s, rc);
    free(cfg);
    free(text);
    return out;
}

Test(check_connect, embedded_files_and_sqlite_pass, .timeout = 60)
{
    char *dir = skt_tmpdir("cc-embedded");
    char *data = skt_fmt("%s/data", dir);
    mkdir(data, 0755);
    char *persons = skt_fmt("%s/persons.jsonl", data);
    skt_write(persons, "{\"id\": \"5c7bd4a4-8c4f-4bb1-9f59-2b4b0d5c6a11\"}\n");
    char *text = skt_fmt("kafka: {brokers: embedded}\n"
                         "sources:\n  files: {type: jsonl-source, path: %s}\n"
                         "sinks:\n  db: {type: sqlite-sink, path: %s/out.db}\n",
                         data, dir);
    int rc;
    char *out = check_text(dir, text, NULL, 30, &rc);
    cr_assert_eq(rc, 0, "%s", out);
    expect_line(out, "ok   kafka:", "embedded");
    expect_line(out, "ok   files path:", "1 collection file(s) readable (persons.jsonl)");
    expect_line(out, "ok   db path:", "will be created");
    cr_assert_eq(count_lines(out, "ok   "), 3, "%s", out);
    cr_assert_eq(count_lines(out, "FAIL "), 0, "%s", out);
    /* a check creates nothing */
    char *db = skt_fmt("%s/out.db", dir);
    cr_assert_neq(access(db, F_OK), 0, "check created %s", db);
    free(db);
    free(out);
    free(persons);
    free(data);
    free(dir);
}

Test(check_connect, unreadable_files_and_missing_directory_fail, .timeout = 60)
{
    char *dir = skt_tmpdir("cc-unreadable");
    chmod(dir, 0755); /* the check may run as nobody, below */
    char *persons = skt_fmt("%s/persons.jsonl", dir);
    skt_write(persons, "{}\n");
    chmod(persons, 0);
    char *text = skt_fmt("kafka: {brokers: embedded}\n"
                         "sources:\n  files: {type: jsonl-source, path: %s}\n"
                         "sinks:\n  db: {type: sqlite-sink, path: %s/missing/out.db}\n",
                         persons, dir);
    /* root reads any file: run the check as nobody then, from a copy of the
     * binary (a checkout under /root is out of nobody's reach) */
    char *as_nobody = NULL;
    if (geteuid() == 0) {
        char *cp = skt_fmt("cp %s %s/skolsync", skt_skolsync(), dir);
        cr_assert_eq(skt_sh(cp, 10, NULL), 0, "%s", cp);
        free(cp);
        as_nobody = skt_fmt("setpriv --reuid=65534 --regid=65534 --clear-groups %s/skolsync", dir);
    }
    int rc;
    char *out = check_text(dir, text, as_nobody, 30, &rc);
    free(as_nobody);
    cr_assert_eq(rc, 1, "%s", out);
    char *missing = skt_fmt("%s/missing", dir);
    expect_line(out, "FAIL files path:", persons);
    expect_line(out, "FAIL files path:", "not readable");
    expect_line(out, "FAIL db path:", missing);
    expect_line(out, "FAIL db path:", "(create it, or correct the path)");
    expect_line(out, "ok   kafka:", "embedded");
    free(missing);
    free(out);
    free(persons);
    free(dir);
}

Test(check_connect, files_that_are_no_database_or_empty_directories_or_fifos_fail, .timeout = 60)
{
    char *dir = skt_tmpdir("cc-files");
    char *empty = skt_fmt("%s/empty", dir);
    mkdir(empty, 0755);
    char *notdb = skt_fmt("%s/not.db", dir);
    skt_write(notdb, "not a database, just text long enough\n");
    char *db = skt_fmt("%s/real.db", dir);
    skt_sqlite_exec(db, "CREATE TABLE t(x)");
    /* a collection's name on a FIFO: the source would not read it (retrying) */
    char *fifo = skt_fmt("%s/fifo", dir), *persons = skt_fmt("%s/fifo/persons.jsonl", dir);
    mkdir(fifo, 0755);
    cr_assert_eq(mkfifo(persons, 0600), 0);
    char *text = skt_fmt("kafka: {brokers: embedded}\n"
                         "sources:\n  files: {type: jsonl-source, path: %s}\n"
                         "  fifo: {type: jsonl-source, path: %s}\n"
                         "sinks:\n"
                         "  text: {type: sqlite-sink, path: %s}\n"
                         "  real: {type: sqlite-sink, path: %s}\n"
                         "  csv: {type: oneroster-csv-sink, state_dir: %s, output_dir: %s/out}\n",
                         empty, fifo, notdb, db, dir, dir);
    int rc;
    char *out = check_text(dir, text, NULL, 30, &rc);
    cr_assert_eq(rc, 1, "%s", out);
    expect_line(out, "FAIL files path:", "holds no <collection>.jsonl file");
    expect_line(out, "FAIL fifo path:", "persons.jsonl: a FIFO, not a regular file");
    free(fifo);
    free(persons);
    expect_line(out, "FAIL text path:", "not an SQLite database");
    expect_line(out, "ok   real path:", "an SQLite database, readable and writable");
    expect_line(out, "FAIL csv output_dir:", "/out: No such file or directory");
    expect_line(out, "ok   csv state_dir:", "oneroster-state.db does not exist yet");
    cr_assert_eq(count_lines(out, "FAIL "), 4, "%s", out);
    free(out);
    free(db);
    free(notdb);
    free(empty);
    free(dir);
}

/* A connector type without a probe says so and does not fail the check. */
Test(check_connect, a_type_without_a_probe_says_so_and_passes, .timeout = 30)
{
    char *dir = skt_tmpdir("cc-noprobe");
    char *text =
        skt_fmt("kafka: {brokers: embedded}\n"
                "sinks:\n  hub: {type: ss12000-api-sink, listen: 127.0.0.1:0, "
                "state_dir: %s/hub, clients: {lms: {token: t0ken-0123456789, entities: all}}}\n"
                "  db: {type: sqlite-sink, path: %s/out.db}\n",
                dir, dir);
    int rc;
    char *out = check_text(dir, text, NULL, 30, &rc);
    cr_assert_eq(rc, 0, "%s", out);
    expect_line(out, "--   hub:", "no connection check for ss12000-api-sink");
    expect_line(out, "ok   db path:", "will be created");
    free(out);
    free(dir);
}

/* ---- SS 12000 --------------------------------------------------------------- */

/* One page of each configured type, calendarEvents inside the window the source sends;
 * a server that is not there fails at the first type, without waiting for the others. */
Test(check_connect, ss12000_source_reads_one_page_of_each_type, .timeout = 90)
{
    char *dir = skt_tmpdir("cc-ss12000");
    pid_t server;
    int port = skt_ss_start(dir, 10, 7, &server);
    char *text = skt_fmt("kafka: {brokers: embedded}\n"
                         "sources:\n  sis: {type: ss12000-source, url: http://127.0.0.1:%d/v2.0,"
                         " entities: [Person, CalendarEvent]}\n"
                         "sinks:\n  db: {type: sqlite-sink, path: %s/out.db}\n",
                         port, dir);
    int rc;
    char *out = check_text(dir, text, NULL, 60, &rc);
    cr_assert_eq(rc, 0, "%s", out);
    expect_line(out, "ok   sis persons:", "answered a page (1 record");
    expect_line(out, "ok   sis calendarEvents:", "answered a page");
    free(out);
    text = skt_fmt("kafka: {brokers: embedded}\n"
                   "sources:\n  sis: {type: ss12000-source, url: http://127.0.0.1:%d/nowhere}\n"
                   "sinks:\n  db: {type: sqlite-sink, path: %s/out.db}\n",
                   port, dir);
    out = check_text(dir, text, NULL, 60, &rc);
    cr_assert_eq(rc, 1, "%s", out);
    expect_line(out, "FAIL sis organisations:", "HTTP 404");
    free(out);
    text = skt_fmt("kafka: {brokers: embedded}\n"
                   "sources:\n  sis: {type: ss12000-source, url: http://127.0.0.1:9/v2.0,"
                   " request_timeout: 3s}\n"
                   "sinks:\n  db: {type: sqlite-sink, path: %s/out.db}\n",
                   dir);
    out = check_text(dir, text, NULL, 60, &rc);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert_eq(count_lines(out, "FAIL sis"), 1, "one failure, not one per type:\n%s", out);
    free(out);
    skt_stop(&server, 5000);
    free(dir);
}

/* ---- PostgreSQL ------------------------------------------------------------- */

static void pg_run(const char *sql)
{
    PGconn *c = (PGconn *)skt_pg_connect();
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    PGresult *res = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(res);
    cr_assert(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql,
              PQresultErrorMessage(res));
    PQclear(res);
    PQfinish(c);
}

static bool pg_schema_exists(const char *schema)
{
    PGconn *c = (PGconn *)skt_pg_connect();
    const char *params[] = {schema};
    PGresult *res = PQexecParams(c, "SELECT 1 FROM pg_namespace WHERE nspname = $1", 1, NULL,
                                 params, NULL, NULL, 0);
    bool exists = PQntuples(res) > 0;
    PQclear(res);
    PQfinish(c);
    return exists;
}

static char *pg_check(const char *tag, const char *conninfo, const char *schema, int *rc)
{
    char *dir = skt_tmpdir(tag);
    char *text = skt_fmt("kafka: {brokers: embedded}\n"
                         "sinks:\n  pg:\n    type: postgres-sink\n"
                         "    conninfo: ${env:SK_CC_CONNINFO}\n"
                         "    schema: %s\n    connect_timeout: 5s\n",
                         schema);
    setenv("SK_CC_CONNINFO", conninfo, 1);
    char *out = check_text(dir, text, NULL, 30, rc);
    unsetenv("SK_CC_CONNINFO");
    free(dir);
    return out;
}

/* A new role's name, unique to this run. */
static char *new_role(void)
{
    char uuid[37];
    sk_uuid_random(uuid);
    return skt_fmt("sk_cc_%.8s", uuid);
}

Test(check_connect, postgres_login_and_schema_pass, .timeout = 60)
{
    char *schema = new_role(); /* a schema that does not exist */
    int rc;
    char *out = pg_check("cc-pg", skt_pg_conninfo(), schema, &rc);
    cr_assert_eq(rc, 0, "%s", out);
    expect_line(out, "ok   pg login:", "PostgreSQL ");
    expect_line(out, "ok   pg schema", "may create it");
    cr_assert_not(pg_schema_exists(schema), "the check created schema %s", schema);
    free(out);
    free(schema);
}

Test(check_connect, postgres_wrong_password_fails_without_showing_it, .timeout = 60)
{
    /* Members of sk_password_login log in with a password (scripts/pg.sh's
     * pg_hba.conf); everyone else is trusted on loopback. */
    char *role = new_role();
    char *sql = skt_fmt("DO $$BEGIN CREATE ROLE sk_password_login NOLOGIN; EXCEPTION WHEN "
                        "duplicate_object THEN NULL; END$$; "
                        "CREATE ROLE %s LOGIN PASSWORD 'the-right-one' IN ROLE sk_password_login",
                        role);
    pg_run(sql);
    const char *pg = skt_pg_conninfo();
    char *conninfo = skt_fmt("%s user=%s password=Wr0ngPassw0rd", pg, role);
    int rc;
    char *out = pg_check("cc-pgpw", conninfo, "skolsync", &rc);
    char *drop = skt_fmt("DROP ROLE %s", role);
    pg_run(drop);
    cr_assert_eq(rc, 1, "%s", out);
    expect_line(out, "FAIL pg login:", "password authentication failed");
    expect_line(out, "FAIL pg login:", "(check user and password in conninfo)");
    cr_assert_null(strstr(out, "Wr0ngPassw0rd"), "the password was printed:\n%s", out);
    free(drop);
    free(out);
    free(conninfo);
    free(sql);
    free(role);
}

Test(check_connect, postgres_role_lacking_create_fails_naming_the_privilege, .timeout = 60)
{
    char *role = new_role();
    char *schema = skt_fmt("%s_s", role);
    char *sql = skt_fmt("CREATE ROLE %s LOGIN; CREATE SCHEMA %s; GRANT USAGE ON SCHEMA %s TO %s",
                        role, schema, schema, role);
    pg_run(sql);
    char *conninfo = skt_fmt("%s user=%s", skt_pg_conninfo(), role);
    int rc_schema, rc_db;
    /* an existing schema with USAGE only, and a missing one without CREATE on the database */
    char *on_schema = pg_check("cc-pgpriv", conninfo, schema, &rc_schema);
    char *on_db = pg_check("cc-pgpriv", conninfo, "sk_cc_nowhere", &rc_db);
    char *drop = skt_fmt("DROP SCHEMA %s; DROP ROLE %s", schema, role);
    pg_run(drop);
    cr_assert_eq(rc_schema, 1, "%s", on_schema);
    expect_line(on_schema, "ok   pg login:", role);
    char *grant = skt_fmt("GRANT CREATE ON SCHEMA \"%s\" TO \"%s\";", schema, role);
    expect_line(on_schema, "FAIL pg schema", "lacks the CREATE privilege on schema");
    expect_line(on_schema, "FAIL pg schema", grant);
    cr_assert_eq(rc_db, 1, "%s", on_db);
    expect_line(on_db, "FAIL pg schema", "lacks the CREATE privilege on database");
    expect_line(on_db, "FAIL pg schema", "CREATE SCHEMA \"sk_cc_nowhere\" AUTHORIZATION");
    cr_assert_not(pg_schema_exists("sk_cc_nowhere"));
    free(grant);
    free(drop);
    free(on_db);
    free(on_schema);
    free(conninfo);
    free(sql);
    free(schema);
    free(role);
}

Test(check_connect, postgres_schema_of_a_newer_skolsync_fails, .timeout = 60)
{
    char *schema = new_role();
    char *sql = skt_fmt("CREATE SCHEMA %s; CREATE TABLE %s.skolsync_migrations (version int); "
                        "INSERT INTO %s.skolsync_migrations VALUES (1)",
                        schema, schema, schema);
    pg_run(sql);
    int rc;
    char *out = pg_check("cc-pgnewer", skt_pg_conninfo(), schema, &rc);
    cr_assert_eq(rc, 0, "%s", out);
    expect_line(out, "ok   pg schema", "exists (at migration 1)");
    free(out);
    char *newer = skt_fmt("INSERT INTO %s.skolsync_migrations VALUES (99)", schema);
    pg_run(newer);
    free(newer);
    out = pg_check("cc-pgnewer", skt_pg_conninfo(), schema, &rc);
    char *drop = skt_fmt("SET client_min_messages TO warning; DROP SCHEMA %s CASCADE", schema);
    pg_run(drop);
    cr_assert_eq(rc, 1, "%s", out);
    expect_line(out, "FAIL pg schema", "is at migration 99, newer than this skolsync knows");
    free(drop);
    free(out);
    free(sql);
    free(schema);
}

/* ---- SCIM ------------------------------------------------------------------- */

/* A scim-sink at url (extra: more of its options, indented by 4). */
static char *scim_check(const char *tag, const char *url, const char *extra, int *rc)
{
    char *dir = skt_tmpdir(tag);
    char *text = skt_fmt("kafka: {brokers: embedded}\n"
                         "sinks:\n  accounts:\n    type: scim-sink\n    url: %s\n"
                         "    state_dir: %s/state\n%s",
                         url, dir, extra ? extra : "");
    char *out = check_text(dir, text, NULL, 60, rc);
    char *state = skt_fmt("%s/state", dir);
    cr_assert_neq(access(state, F_OK), 0, "the check made %s", state);
    free(state);
    free(dir);
    return out;
}

Test(check_connect, scim_service_provider_config, .timeout = 90)
{
    const char *url = getenv("SK_TEST_SCIM");
    cr_assert(url && *url, "SK_TEST_SCIM is not set: run under scripts/with-testenv.sh");
    int rc;
    char *out = scim_check("cc-scim", url, NULL, &rc);
    cr_assert_eq(rc, 0, "%s", out);
    expect_line(out, "ok   accounts auth:", "answered 200");
    expect_line(out, "ok   accounts ServiceProviderConfig:", "SCIM 2.0");
    expect_line(out, "ok   accounts state_dir:", "will be made");
    free(out);

    char *wrong = skt_fmt("%s/not-scim", url);
    out = scim_check("cc-scim-wrong", wrong, NULL, &rc);
    cr_assert_eq(rc, 1, "%s", out);
    expect_line(out, "FAIL accounts ServiceProviderConfig:", "answered HTTP 404");
    expect_line(out, "FAIL accounts ServiceProviderConfig:", "(check url");
    free(out);
    free(wrong);

    /* OAuth2 with a token endpoint that gives no token: auth fails, and
     * the client secret is not shown */
    char *oauth = skt_fmt("    auth: oauth2\n    token_url: %s/no-token-here\n"
                          "    client_id: skolsync\n    client_secret: ${env:SK_CC_SECRET}\n",
                          url);
    setenv("SK_CC_SECRET", "S3cretOfTheClient", 1);
    out = scim_check("cc-scim-oauth", url, oauth, &rc);
    unsetenv("SK_CC_SECRET");
    cr_assert_eq(rc, 1, "%s", out);
    expect_line(out, "FAIL accounts auth:", "token request to");
    expect_line(out,
                "FAIL accounts auth:", "(check token_url, client_id, client_secret and scope)");
    cr_assert_null(strstr(out, "S3cretOfTheClient"), "the secret was printed:\n%s", out);
    cr_assert_null(strstr(out, "ServiceProviderConfig"), "no token, no second request:\n%s", out);
    free(out);
    free(oauth);
}

/* ---- Kafka ------------------------------------------------------------------ */

static char *kafka_config(const char *dir, const char *brokers, const char *prefix,
                          const char *timeout)
{
    char *data = skt_fmt("%s/data", dir);
    mkdir(data, 0755);
    char *persons = skt_fmt("%s/persons.jsonl", data);
    skt_write(persons, "{}\n");
    char *text = skt_fmt("kafka: {brokers: \"%s\", topic_prefix: %s, connect_timeout: %s}\n"
                         "sources:\n  files: {type: jsonl-source, path: %s}\n",
                         brokers, prefix, timeout, data);
    char *cfg = write_config(dir, text);
    free(text);
    free(persons);
    free(data);
    return cfg;
}

Test(check_connect, real_broker_topics_missing_then_present, .timeout = 120)
{
    char *dir = skt_tmpdir("cc-kafka");
    char *prefix = skt_unique_prefix();
    char *cfg = kafka_config(dir, skt_brokers(), prefix, "20s");
    int rc;
    char *out = check(cfg, NULL, 60, &rc);
    cr_assert_eq(rc, 0, "%s", out);
    expect_line(out, "ok   kafka brokers:", "1 broker(s)");
    expect_line(out, "ok   kafka topics:", "0 exist, the other 20 may be created");
    expect_line(out, "--   kafka transactions:", "only proven at start");
    free(out);
    /* validate_only created nothing: the same answer again */
    out = check(cfg, NULL, 60, &rc);
    expect_line(out, "ok   kafka topics:", "0 exist");
    free(out);

    /* the daemon's own topic setup, then every topic is there */
    struct sk_kafka_conf kc = {.brokers = (char *)skt_brokers(),
                               .topic_prefix = prefix,
                               .partitions = 3,
                               .replication_factor = 1,
                               .connect_timeout_ms = 20000};
    const char *cols[SK_ENTITY_COUNT];
    size_t n = 0;
    for (; sk_entities[n]; n++)
        cols[n] = sk_entities[n]->collection;
    struct sk_kafka *k = NULL;
    struct sk_error err = {0};
    cr_assert_eq(sk_kafka_start(&kc, cols, n, &k, &err), 0, "%s", err.msg);
    sk_kafka_destroy(k);
    out = check(cfg, NULL, 60, &rc);
    cr_assert_eq(rc, 0, "%s", out);
    expect_line(out, "ok   kafka topics:", "all 20 needed exist");
    expect_line(out, "ok   kafka topic settings:",
                "the 19 existing entity and cursor topics are compacted");
    cr_assert(!strstr(out, "keep a deletion for less"), "%s", out);
    cr_assert_eq(count_lines(out, "FAIL "), 0, "%s", out);
    /* made compacted, keeping a deletion kafka.tombstone_retention (7 days), not Kafka's 1 */
    char *topic = skt_fmt("%spersons", prefix);
    char *setting = skt_topic_setting(topic, "delete.retention.ms");
    cr_assert_str_eq(setting, "604800000", "%s", topic);
    free(setting);
    setting = skt_topic_setting(topic, "cleanup.policy");
    cr_assert_str_eq(setting, "compact", "%s", topic);
    free(setting);
    free(topic);
    free(out);
    free(cfg);
    free(prefix);
    free(dir);
}

/*
 * Topics made beforehand by an operator (or a cluster's defaults) that
 * delete old records: a new target replaying them would miss every entity
 * older than the retention, and a sink behind it every deletion. The check
 * names each one with its settings, and the daemon refuses to start on them
 * until they are compacted; a compacted topic with unlimited retention
 * beside "delete" is fine.
 */
Test(check_connect, topics_that_delete_old_records_are_refused, .timeout = 120)
{
    char *dir = skt_tmpdir("cc-policy");
    char *prefix = skt_unique_prefix();
    char *persons = skt_fmt("%spersons", prefix);
    char *groups = skt_fmt("%sgroups", prefix);
    char *rooms = skt_fmt("%srooms", prefix);
    char *cursors = skt_fmt("%s_cursors", prefix);
    static const char *const deleting[] = {"cleanup.policy", "delete", NULL};
    static const char *const bounded[] = {"cleanup.policy", "compact,delete", "retention.ms",
                                          "604800000", NULL};
    /* kept, but a deletion only for Kafka's default day: said, not refused */
    static const char *const unbounded[] = {"cleanup.policy",
                                            "compact,delete",
                                            "retention.ms",
                                            "-1",
                                            "delete.retention.ms",
                                            "86400000",
                                            NULL};
    static const char *const compacted[] = {"cleanup.policy", "compact", "delete.retention.ms",
                                            "604800000", NULL};
    skt_topic_settings(cursors, true, deleting);
    skt_topic_settings(persons, true, deleting);
    skt_topic_settings(groups, true, bounded);
    skt_topic_settings(rooms, true, unbounded);
    sleep(1); /* until every broker's metadata shows them */
    char *cfg = kafka_config(dir, skt_brokers(), prefix, "20s");
    int rc;
    char *out = check(cfg, NULL, 60, &rc);
    cr_assert_eq(rc, 1, "%s", out);
    expect_line(out, "FAIL kafka topic settings:", "3 topic(s) delete old records");
    char *want = skt_fmt("%s cleanup.policy=delete", persons);
    expect_line(out, "FAIL kafka topic settings:", want);
    free(want);
    want = skt_fmt("%s cleanup.policy=compact,delete retention.ms=604800000;", groups);
    expect_line(out, "FAIL kafka topic settings:", want);
    free(want);
    want = skt_fmt("%s cleanup.policy=delete", cursors);
    expect_line(out, "FAIL kafka topic settings:", want);
    free(want);
    expect_line(out, "FAIL kafka topic settings:", "--add-config cleanup.policy=compact");
    want = skt_fmt("%s cleanup", rooms);
    cr_assert(!strstr(out, want), "unlimited retention beside compaction refused:\n%s", out);
    free(want);
    free(out);

    /* the daemon does not start on them, and says why */
    char *cmd = skt_fmt("%s run --once -c %s", skt_skolsync(), cfg);
    rc = skt_sh(cmd, 60, &out);
    cr_assert_neq(rc, 0, "started on topics that delete old records:\n%s", out);
    want = skt_fmt("%s cleanup.policy=delete", persons);
    cr_assert(strstr(out, want), "the refusal does not name the topic:\n%s", out);
    free(want);
    free(out);

    /* compacted by the operator as the message says: the check passes and the daemon runs */
    skt_topic_settings(persons, false, compacted);
    skt_topic_settings(groups, false, compacted);
    skt_topic_settings(cursors, false, compacted);
    sleep(1); /* the broker applies a topic's new settings in a moment */
    out = check(cfg, NULL, 60, &rc);
    cr_assert_eq(rc, 0, "%s", out);
    expect_line(out, "ok   kafka topic settings:", "are compacted");
    want = skt_fmt("1 topic(s) keep a deletion for less than kafka.tombstone_retention "
                   "(604800000 ms): a sink further behind may never see it (kafka-configs.sh "
                   "--alter --entity-type topics --entity-name TOPIC --add-config "
                   "delete.retention.ms=604800000): %s delete.retention.ms=86400000",
                   rooms);
    expect_line(out, "ok   kafka topic settings:", want);
    free(out);
    rc = skt_sh(cmd, 60, &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, want), "the start does not warn of the short tombstone retention:\n%s",
              out);
    free(want);
    free(out);
    free(cmd);
    free(cfg);
    free(cursors);
    free(rooms);
    free(groups);
    free(persons);
    free(prefix);
    free(dir);
}

Test(check_connect, topics_the_cluster_would_refuse_fail, .timeout = 60)
{
    /* one test broker: replication factor 3 cannot be created */
    char *dir = skt_tmpdir("cc-rf");
    char *prefix = skt_unique_prefix();
    char *text = skt_fmt("kafka: {brokers: \"%s\", topic_prefix: %s, replication_factor: 3}\n"
                         "sinks:\n  db: {type: sqlite-sink, path: %s/out.db}\n",
                         skt_brokers(), prefix, dir);
    int rc;
    char *out = check_text(dir, text, NULL, 60, &rc);
    cr_assert_eq(rc, 1, "%s", out);
    expect_line(out, "FAIL kafka topics:", "20 needed topics are missing");
    expect_line(out, "FAIL kafka topics:",
                "(set kafka.replication_factor to at most the number of brokers)");
    free(out);
    free(prefix);
    free(dir);
}

Test(check_connect, unreachable_broker_fails_within_connect_timeout, .timeout = 60)
{
    char *dir = skt_tmpdir("cc-nobroker");
    char *cfg = kafka_config(dir, "127.0.0.1:1", "skolsync.", "3s");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc;
    char *out = check(cfg, NULL, 30, &rc);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_assert_eq(rc, 1, "%s", out);
    expect_line(out, "FAIL kafka brokers:", "cannot reach Kafka at 127.0.0.1:1 within 3000 ms");
    expect_line(out, "FAIL kafka brokers:", "(check kafka.brokers");
    /* why, in librdkafka's words */
    expect_line(out, "FAIL kafka brokers:", "Connection refused");
    expect_line(out, "ok   files path:", "readable");
    cr_assert_lt(took, 10.0, "took %.1f s with connect_timeout 3s", took);
    free(out);
    free(cfg);
    free(dir);
}

Test(check_connect, sasl_the_broker_does_not_speak_fails_without_the_password, .timeout = 60)
{
    char *dir = skt_tmpdir("cc-sasl");
    char *text = skt_fmt("kafka:\n  brokers: \"%s\"\n  connect_timeout: 3s\n"
                         "  properties: {security.protocol: SASL_PLAINTEXT, sasl.mechanisms: "
                         "PLAIN, sasl.username: skolsync, sasl.password: \"${env:SK_CC_KP}\"}\n"
                         "sinks:\n  db: {type: sqlite-sink, path: %s/out.db}\n",
                         skt_brokers(), dir);
    setenv("SK_CC_KP", "Kafk4Passw0rd", 1);
    int rc;
    char *out = check_text(dir, text, NULL, 30, &rc);
    unsetenv("SK_CC_KP");
    cr_assert_eq(rc, 1, "%s", out);
    expect_line(out, "FAIL kafka brokers:", "SASL");
    expect_line(out, "FAIL kafka brokers:", "security settings in kafka.properties");
    cr_assert_null(strstr(out, "Kafk4Passw0rd"), "the password was printed:\n%s", out);
    free(out);
    free(dir);
}

Test(check_connect, connect_is_an_option_of_check_only, .timeout = 30)
{
    char *cmd = skt_fmt("%s run --connect -c /dev/null", skt_skolsync());
    cr_assert_eq(skt_sh(cmd, 10, NULL), 64);
    free(cmd);
    cmd = skt_fmt("%s check --connect --help", skt_skolsync());
    char *out = NULL;
    cr_assert_eq(skt_sh(cmd, 10, &out), 0);
    cr_assert_not_null(strstr(out, "--connect"), "%s", out);
    free(out);
    free(cmd);
}

/* An operator adds partitions to an entity topic after records were written
 * (to spread a shared target over more nodes): keys move, and a key's old
 * record stays in its old partition for good. The next start refuses. */
Test(check_connect, partitions_added_after_records_are_refused, .timeout = 180)
{
    struct skt_small s;
    skt_small_setup(&s, "cc-partitions", 45, 20);
    const char *cmd = s.run, *cfg = s.cfg;
    char *out = NULL;
    cr_assert_eq(skt_sh(cmd, 120, &out), 0, "%s", out);
    free(out);
    /* a restart as it was: every key where it belongs */
    cr_assert_eq(skt_sh(cmd, 120, &out), 0, "a restart was refused:\n%s", out);
    free(out);
    int rc;
    out = check(cfg, NULL, 60, &rc);
    cr_assert_eq(rc, 0, "%s", out);
    expect_line(out, "ok   kafka key placement:", "where their key belongs");
    free(out);

    char *persons = skt_fmt("%spersons", s.prefix);
    skt_topic_partitions(persons, 6);
    sleep(1); /* until every broker's metadata shows them */
    rc = skt_sh(cmd, 120, &out);
    cr_assert_neq(rc, 0, "started on a topic whose keys moved:\n%s", out);
    cr_assert(strstr(out, "not in the partition their key belongs in"), "%s", out);
    char *named = skt_fmt("%s[", persons);
    cr_assert(strstr(out, named), "the refusal does not name the topic:\n%s", out);
    free(named);
    free(out);
    out = check(cfg, NULL, 60, &rc);
    cr_assert_eq(rc, 1, "%s", out);
    expect_line(out, "FAIL kafka key placement:", "not in the partition their key belongs in");
    free(out);
    free(persons);
    skt_small_free(&s);
}
