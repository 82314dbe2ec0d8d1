/*
 * sk_test.h: helpers shared by the Criterion tests: temp dirs, running the
 * skolsync binary, generating datasets, comparing a target with a dataset.
 * Every helper fails the calling test (cr_assert) rather than returning
 * an error nobody checks.
 */
#ifndef SK_TEST_H
#define SK_TEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

/* A fresh directory under $TMPDIR; caller frees the string. It stays if the
 * test fails (for its logs) and is removed once the test passed (sk_test.c). */
char *skt_tmpdir(const char *tag);
/* The skolsync binary of this build. */
const char *skt_skolsync(void);
/* The test broker from scripts/testenv.sh; fails the test when unset. */
const char *skt_brokers(void);
/* The daemon's Kafka side on the test broker (transactions on, compacted
 * topics of `partitions` partitions, the persons' topic made): asserts it
 * starts. sk_kafka_destroy it. */
struct sk_kafka;
struct sk_kafka *skt_kafka_start(const char *prefix, int partitions);
/* A one-broker librdkafka mock cluster in this process with `topic` of
 * `partitions` partitions (its address: rd_kafka_mock_cluster_bootstraps);
 * *holder is the handle that owns it: rd_kafka_mock_cluster_destroy, then
 * rd_kafka_destroy(*holder). */
struct rd_kafka_s;
struct rd_kafka_mock_cluster_s;
struct rd_kafka_mock_cluster_s *skt_mock_start(const char *topic, int partitions,
                                               struct rd_kafka_s **holder);
/* A topic prefix unique to this test run, e.g. "t1234abcd." (caller frees). */
char *skt_unique_prefix(void);

/*
 * Creates topic on the test broker (3 partitions) with the topic-level
 * settings kv ("name", "value", ..., NULL), or (create false) sets them on
 * the existing topic: AlterConfigs replaces a topic's settings, so kv are
 * then its only ones. Fails the test when the broker refuses.
 */
void skt_topic_settings(const char *topic, bool create, const char *const *kv);
/* Deletes topic on the test broker (an operator's mistake, for tests of it). */
void skt_topic_delete(const char *topic);
/*
 * The smallest daemon on the test broker: one jsonl-source "files" reading
 * dir/data (skt_generate(seed, students)) and one sqlite-sink "db" writing
 * dir/out.db, under a fresh topic prefix; its config at cfg, and `run` the
 * command line of `skolsync run --once` with it. skt_small_free frees.
 */
struct skt_small {
    char *dir, *data, *prefix, *cfg, *run;
};
void skt_small_setup(struct skt_small *s, const char *tag, int seed, int students);
void skt_small_free(struct skt_small *s);

/* Adds partitions to topic, up to total (what an operator does to scale a topic). */
void skt_topic_partitions(const char *topic, int total);
/* One setting of topic on the test broker as DescribeConfigs gives it (caller frees). */
char *skt_topic_setting(const char *topic, const char *name);

/*
 * The start of a daemon configuration every integration test shares: the
 * test broker, topic_prefix, 3 partitions, connect_timeout 20s, the admin
 * API on a free port, log level and shutdown_timeout. Caller frees.
 */
char *skt_config_head(const char *prefix, const char *log_level, const char *shutdown_timeout);

/*
 * One HTTP request (libcurl; body sent as JSON when not NULL), waiting at most
 * timeout_s. Returns the status, 0 on a transport error; the body in *out
 * (caller frees) unless out is NULL.
 */
long skt_http(const char *method, const char *url, const char *body, int timeout_s, char **out);

/* Writes {"<collection>": [docs...]} as <dir>/<collection>.jsonl, one
 * document a line (for post-mortems and as jsonl-source input). */
void skt_dump_write(const cJSON *dump, const char *dir);

/* Writes text to path (fails the test on error). */
void skt_write(const char *path, const char *text);
/* printf into a new string. */
char *skt_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Runs a shell command line, waiting at most timeout_s; *output (if not
 * NULL) receives stdout+stderr (caller frees). Returns the exit code, or -1
 * if it was killed for the timeout.
 */
int skt_sh(const char *cmd, int timeout_s, char **output);

/* Starts argv (PATH searched) in the background with stdout+stderr to
 * log_path; returns the pid. The child is killed when the test ends. */
pid_t skt_spawn(char *const argv[], const char *log_path);
/*
 * The port a spawned fixture (the SS 12000 server, flaky_proxy.py) wrote as
 * "LISTENING 127.0.0.1:PORT" to log_path, waiting up to timeout_ms; fails the
 * test if pid exits first or the time passes (what names it in the message).
 */
int skt_listening_port(pid_t pid, const char *log_path, int timeout_ms, const char *what);
/* SIGTERM, then SIGKILL after timeout_ms; *pid = -1. The exit code as
 * skt_wait gives it (0 if there was no child). */
int skt_stop(pid_t *pid, int timeout_ms);
/* Waits for pid up to timeout_ms: its exit code, -2 if still running, 128+sig if killed. */
int skt_wait(pid_t pid, int timeout_ms);

/* Runs the dataset generator into dir. */
void skt_generate(const char *dir, int seed, int students);

/* Number of non-blank lines over every *.jsonl in dir. */
size_t skt_count_records(const char *dir);

/* Appends n persons with fresh ids (first, first+1, ...) to dir/persons.jsonl. */
void skt_append_persons(const char *dir, int first, int n);

/* JSON equality with object key order ignored. */
bool skt_json_equal(const cJSON *a, const cJSON *b);
/* GET http://127.0.0.1:port/path as JSON (caller deletes), or NULL unless 200 and JSON. */
cJSON *skt_get_json(int port, const char *path);
/* A member of o: the string ("" if it is none), the number (-1 if it is none). */
const char *skt_jstr(const cJSON *o, const char *key);
double skt_jnum(const cJSON *o, const char *key);

/*
 * Compares a sqlite-sink database with a jsonl dataset: every collection's
 * table holds exactly the dataset's ids, each doc equal to the input
 * document. Returns true if equal; else false with the first difference in why.
 */
bool skt_db_matches_dataset(const char *db_path, const char *data_dir, char *why, size_t why_size);
/* skt_db_matches_dataset every 500 ms until it holds or timeout_ms passed (why: the last
 * difference). */
bool skt_db_converges(const char *db_path, const char *data_dir, int timeout_ms, char *why,
                      size_t why_size);

struct sk_sink;
struct sk_error;
struct sk_outcome;

/*
 * Opens a connector the way the core does: its conf struct filled from the
 * YAML options text by its option table, then open(). Fails the test on any
 * configuration or open error. entities NULL = all 18. Close with
 * skt_sink_close / skt_source_close (frees everything).
 */
struct sk_source;
struct sk_entity;
struct sk_sink *skt_sink_open(const char *type, const char *yaml,
                              const struct sk_entity *const *entities, size_t n_entities,
                              const char *incarnation);
/* The same with a name (NULL: "test-sink") and open's result: 0 with *out
 * set, or open's error in err and *out NULL (everything freed). */
int skt_sink_try_open(const char *type, const char *name, const char *yaml,
                      const struct sk_entity *const *entities, size_t n_entities,
                      const char *incarnation, struct sk_sink **out, struct sk_error *err);
void skt_sink_close(struct sk_sink *s); /* NULL is fine */
/* Closes *s (NULL is fine) and sets it to NULL. */
void skt_sink_drop(struct sk_sink **s);
struct sk_source *skt_source_open(const char *type, const char *yaml);
void skt_source_close(struct sk_source *s);

/*
 * Records as the sink driver hands them to a sink (connector.h, struct
 * sk_record). skt_record_decode: r->value decoded by the driver's own code
 * (sk_sink_decode) with privacy applied (NULL: keep everything): r->doc,
 * r->json and r->modified_us filled, or r->value NULL when the policy made
 * the record a delete; a value that does not decode is left as it is (what a
 * sink would get if the driver were bypassed). skt_record_free frees value,
 * doc and json.
 */
struct sk_record;
struct sk_privacy;
void skt_record_decode(struct sk_record *r, const struct sk_privacy *privacy);
void skt_record_free(struct sk_record *r);

/*
 * A batch of records for a sink, built as above. skt_recs_add: the SS 12000
 * document json of the entity type `entity` (a name or a collection)
 * encoded, then decoded as the driver does; json NULL: a tombstone of key
 * (key NULL: the document's id). Its topic is the collection, partition 0,
 * offset its index in the batch: the caller may change them.
 */
struct skt_recs {
    struct sk_record *v; /* grown as records are added: a record pointer holds until the next add */
    struct sk_outcome *out;
    size_t n, cap;
};
struct sk_record *skt_recs_add(struct skt_recs *b, const char *entity, const char *key,
                               const char *json, const struct sk_privacy *privacy);
/* A record with value as its raw value, not decoded (takes value). */
struct sk_record *skt_recs_add_raw(struct skt_recs *b, const char *entity, const char *key,
                                   uint8_t *value, size_t len);
/* apply() on every record of b (outcomes in b->out); returns what apply returned, err filled. */
int skt_recs_apply(struct sk_sink *s, struct skt_recs *b, struct sk_error *err);
/* The same, failing the test unless apply returns 0. */
void skt_recs_apply_ok(struct sk_sink *s, struct skt_recs *b);
/* Frees every record; the batch is empty again (and reusable). */
void skt_recs_clear(struct skt_recs *b);
void skt_recs_free(struct skt_recs *b);

/*
 * The first column of the first row of sql in the SQLite database db_path,
 * read over a connection of its own (read-only); param binds ?1 unless NULL.
 * NULL when there is no row or the value is NULL; caller frees.
 */
char *skt_sqlite_value(const char *db_path, const char *sql, const char *param);
/* Runs sql (several statements allowed) on db_path; fails the test on an error. */
void skt_sqlite_exec(const char *db_path, const char *sql);
/*
 * Once the file exists with tables (a sink made them), an exclusive lock on
 * it (BEGIN EXCLUSIVE), tried every 20 ms for up to timeout_ms: the
 * connection holding it (COMMIT and sqlite3_close end it), or NULL. Asserts
 * nothing: safe on a thread of the test's own.
 */
struct sqlite3 *skt_sqlite_lock_once_made(const char *db_path, int timeout_ms);

/*
 * The test PostgreSQL (SK_TEST_PG, connect timeout 5 s; fails the test when
 * unset): a new connection (check PQstatus; PQfinish it). skt_pg_table: the
 * postgres-sink's table of a collection ("studyPlans" -> "study_plans");
 * caller frees. skt_pg_total_rows: rows over every collection's table of
 * schema, or -1 (no connection, not migrated yet).
 */
struct pg_conn; /* libpq's PGconn */
/* SK_TEST_PG, or fail the test when it is not set. */
const char *skt_pg_conninfo(void);
struct pg_conn *skt_pg_connect(void);
char *skt_pg_table(const char *collection);
long long skt_pg_total_rows(struct pg_conn *c, const char *schema);
/* DROP SCHEMA schema CASCADE, quietly (a suite's fini: NULL, no server, no schema are fine). */
void skt_pg_drop_schema(const char *schema);

/* A TCP port on 127.0.0.1 that was free a moment ago (for a listen address given in advance). */
int skt_free_port(void);

/*
 * The HTTP port a daemon logged ("HTTP server on http://127.0.0.1:PORT") in
 * log_path, waiting up to timeout_ms; 0 if none appeared.
 */
int skt_logged_port(const char *log_path, int timeout_ms);
/* The same for another line: "<text> http://127.0.0.1:PORT" (text: no '#'). */
int skt_logged_port_after(const char *log_path, const char *text, int timeout_ms);
/* Threads of process pid whose name is comm (/proc/PID/task/TID/comm). */
int skt_threads_named(pid_t pid, const char *comm);
/* Lines of the file at path that contain text (grep -F). */
int skt_lines_with(const char *path, const char *text);
/* Waits (polled every 100 ms) until a line of the file contains text; false past timeout_ms. */
bool skt_wait_line(const char *path, const char *text, int timeout_ms);
/* What an ss12000-api-sink logs once its copy caught up and it serves its API. */
#define SKT_HUB_SERVING "its copy caught up with the topics: serving the API"

/* A tiny AF_UNIX datagram listener for NOTIFY_SOCKET tests. */
int skt_notify_listen(const char *path);
/* Appends whatever arrived on fd (non-blocking) to buf. */
void skt_notify_drain(int fd, char *buf, size_t size);

#endif
