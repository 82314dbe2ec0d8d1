/*
 * test_embedded_restart.c: the embedded broker survives restarts (issue 13,
 * docs/architecture.md §5.8): the daemon with `kafka.brokers: embedded` and
 * `kafka.embedded_dir`, an ss12000-source reading the SS 12000 test server
 * (tests/fixtures/ss12000_server.py) and a sqlite-sink, stopped and started
 * again:
 *
 *   - after a clean stop the second start lists nothing in full at the
 *     server (the source resumes from its restored cursor) and the sink
 *     applies no record (it resumes at its offsets, same incarnation);
 *   - creations, updates and deletions made at the server while the daemon
 *     is down arrive after the restart;
 *   - kill -9 at random moments during a sync, changes (deletions included)
 *     at the server while it is down: after each restart SQLite equals the
 *     server (SK_EMBEDDED_TRIALS, default 10; seed SK_EMBEDDED_SEED);
 *   - a second daemon on the same embedded_dir is refused at start;
 *   - a sink applies only what the store holds: with the store locked by
 *     another process (the journal cannot write), a change at the server
 *     does not reach the target, and /ready says 503 with the sink
 *     retrying; the lock released, it arrives and /ready is 200; locked and
 *     changed again, killed, and changed again, the daemon converges after
 *     the restart with no change lost;
 *   - a truncated and a corrupt store file, with changes (deletions among
 *     them) made at the server while the daemon was down: a clear log line
 *     naming the file, the file moved aside, a full sync, and the target
 *     equal to the server (the deletions by the sinks' snapshot sweep);
 *   - an older copy of the store put back under a target that applied
 *     more: the sink resumes where the store ends and skips nothing;
 *   - a byte flipped inside a stored record: found by its checksum, the
 *     store moved aside, and a sink reading from the start gets no invented
 *     value;
 *   - a delta's records on disk without its cursor: they come again.
 *
 * Needs no Kafka. The server and the daemon die with the test process and
 * are stopped by the suite's fini in every path.
 */
#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <sqlite3.h>

#include "sk_test.h"
#include "skt_ss12000.h"
#include "util.h"

static pid_t g_server = -1, g_daemon = -1;

static void cleanup(void)
{
    skt_stop(&g_daemon, 20000);
    skt_stop(&g_server, 5000);
}

TestSuite(embedded_restart, .fini = cleanup);

struct env {
    char *dir, *cfg, *log, *db, *store;
    char *path; /* the store's file */
    int port;
    int starts, compares;
    unsigned rng; /* change(): the waves of changes at the server */
    char prev[64][37];
    int n_prev, wave;
};

/* source_extra: more options of the source (YAML lines indented by four), or "". */
static void env_setup(struct env *e, const char *tag, int students, unsigned seed,
                      const char *source_extra)
{
    e->dir = skt_tmpdir(tag);
    e->cfg = skt_fmt("%s/skolsync.yaml", e->dir);
    e->log = skt_fmt("%s/daemon.log", e->dir);
    e->db = skt_fmt("%s/target.db", e->dir);
    e->store = skt_fmt("%s/broker", e->dir);
    e->path = skt_fmt("%s/embedded.db", e->store);
    e->port = skt_ss_start(e->dir, students, seed, &g_server);
    char *text = skt_fmt("kafka:\n"
                         "  brokers: embedded\n"
                         "  embedded_dir: %s\n"
                         "log:\n"
                         "  level: info\n"
                         "admin:\n"
                         "  listen: 127.0.0.1:0\n"
                         "shutdown_timeout: 20s\n"
                         "sources:\n"
                         "  sis:\n"
                         "    type: ss12000-source\n"
                         "    url: http://127.0.0.1:%d/v2.0\n"
                         "    page_size: 50\n"
                         "    max_rps: 1000\n"
                         "    poll_interval: 1s\n"
                         "    retry_backoff: 200ms\n"
                         "    retry_backoff_max: 2s\n"
                         "    delete_guard: {min_count: 1000}\n"
                         "%s"
                         "sinks:\n"
                         "  db:\n"
                         "    type: sqlite-sink\n"
                         "    path: %s\n"
                         "    batch_size: 200\n"
                         "    retry_backoff: 200ms\n",
                         e->store, e->port, source_extra, e->db);
    skt_write(e->cfg, text);
    free(text);
}

static void env_free(struct env *e)
{
    free(e->dir);
    free(e->cfg);
    free(e->log);
    free(e->db);
    free(e->store);
    free(e->path);
}

static bool alive(pid_t pid)
{
    return pid > 0 && waitpid(pid, NULL, WNOHANG) == 0;
}

static void log_mark(struct env *e, const char *what)
{
    FILE *f = fopen(e->log, "a");
    if (f) {
        fprintf(f, "\n===== test_embedded_restart: %s =====\n", what);
        fclose(f);
    }
}

static void daemon_start(struct env *e)
{
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", e->cfg, NULL};
    char *mark = skt_fmt("start %d", ++e->starts);
    log_mark(e, mark);
    free(mark);
    g_daemon = skt_spawn(argv, e->log);
}

static void daemon_stop(struct env *e)
{
    int rc = skt_stop(&g_daemon, 30000);
    cr_assert_eq(rc, 0, "the daemon did not stop cleanly on SIGTERM (%d); log %s", rc, e->log);
}

static void daemon_kill9(struct env *e)
{
    cr_assert(alive(g_daemon), "the daemon exited by itself (log %s)", e->log);
    kill(g_daemon, SIGKILL);
    int rc = skt_wait(g_daemon, 10000);
    g_daemon = -1;
    cr_assert_eq(rc, 128 + SIGKILL, "kill -9: the daemon ended with %d (log %s)", rc, e->log);
}

/* The sqlite-sink's database equals the server's current data. */
static bool db_equals_server(struct env *e, char *why, size_t why_size)
{
    cJSON *dump = skt_ss_dump(e->port);
    char *expect = skt_fmt("%s/expect-%d", e->dir, ++e->compares);
    skt_dump_write(dump, expect);
    bool ok = skt_db_matches_dataset(e->db, expect, why, why_size);
    cJSON_Delete(dump);
    free(expect);
    return ok;
}

/* Waits (bounded) until the target equals the server; returns the ms it took. */
static int64_t wait_equal(struct env *e, int timeout_s, const char *when)
{
    int64_t t0 = sk_mono_ms();
    char why[2048] = "";
    for (;;) {
        cr_assert(alive(g_daemon), "%s: the daemon exited (log %s)", when, e->log);
        if (db_equals_server(e, why, sizeof(why)))
            return sk_mono_ms() - t0;
        cr_assert_lt(sk_mono_ms() - t0, (int64_t)timeout_s * 1000,
                     "%s: SQLite differs from the server after %d s: %s (log %s)", when, timeout_s,
                     why, e->log);
        usleep(300000);
    }
}

/* One wave of changes at the server (deletions among them). */
static void change(struct env *e)
{
    cr_assert_gt(skt_ss_mutate(e->port, ++e->wave, &e->rng, e->prev, &e->n_prev), 0);
}

/* A synced state, stopped cleanly. */
static void sync_and_stop(struct env *e)
{
    daemon_start(e);
    wait_equal(e, 120, "first sync");
    daemon_stop(e);
}

/*
 * `skolsync run --once`: the source completes one poll cycle and the sink
 * drains. Its output goes to the log too; returns it (caller frees).
 */
static char *run_once(struct env *e)
{
    char *cmd = skt_fmt("%s run --once -c %s 2>&1", skt_skolsync(), e->cfg);
    char *out = NULL;
    int rc = skt_sh(cmd, 120, &out);
    char *mark = skt_fmt("run --once %d", ++e->starts);
    log_mark(e, mark);
    free(mark);
    FILE *f = fopen(e->log, "a");
    if (f) {
        fputs(out, f);
        fclose(f);
    }
    cr_assert_eq(rc, 0, "run --once: exit %d\n%s", rc, out);
    free(cmd);
    return out;
}

static int log_count(struct env *e, const char *text)
{
    size_t len;
    char *all = sk_read_file(e->log, &len);
    int n = 0;
    for (const char *at = all; at && (at = strstr(at, text)) != NULL; at++)
        n++;
    free(all);
    return n;
}

/* One cycle (run_once), then the target equals the server and the log says line (if any). */
static void once_equal(struct env *e, const char *when, const char *line)
{
    free(run_once(e));
    char why[2048];
    cr_assert(db_equals_server(e, why, sizeof(why)), "%s: %s (log %s)", when, why, e->log);
    cr_assert(!line || log_count(e, line) > 0, "%s: no \"%s\" in the log %s", when, line, e->log);
}

/* The setup of env_setup (no source_extra), synced once and stopped cleanly. */
static void env_synced(struct env *e, const char *tag, unsigned seed)
{
    env_setup(e, tag, 30, seed, "");
    sync_and_stop(e);
    e->rng = seed;
}

/* The admin port the running daemon logged last. */
static int last_port(struct env *e)
{
    static const char mark[] = "HTTP server on http://127.0.0.1:";
    size_t len;
    char *all = sk_read_file(e->log, &len);
    const char *last = NULL;
    for (const char *at = all; at && (at = strstr(at, mark)) != NULL; at++)
        last = at;
    int port = last ? atoi(last + strlen(mark)) : 0;
    free(all);
    cr_assert_gt(port, 0, "no admin port in %s", e->log);
    return port;
}

/*
 * Waits (bounded) until the daemon started last reports a consumer lag of 0
 * for its sink; port_before is the admin port of the process before it.
 */
static void wait_no_lag(struct env *e, int port_before, int timeout_s)
{
    double lag = -1;
    for (int64_t t0 = sk_mono_ms(); lag != 0 && sk_mono_ms() - t0 < timeout_s * 1000LL;) {
        int port = last_port(e);
        char *url = skt_fmt("http://127.0.0.1:%d/api/v1/lag", port);
        char *out = NULL;
        cJSON *j = port != port_before && skt_http("GET", url, NULL, 10, &out) == 200
                       ? cJSON_Parse(out)
                       : NULL;
        const cJSON *g = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "groups"), 0);
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(g, "lag");
        lag = cJSON_IsNumber(n) ? n->valuedouble : -1;
        cJSON_Delete(j);
        free(out);
        free(url);
        if (lag != 0)
            usleep(500000);
    }
    cr_assert_eq(lag, 0, "the sink's lag after the restart is %.0f records, not 0 (log %s)", lag,
                 e->log);
}

Test(embedded_restart, clean_restart_lists_nothing_in_full_and_applies_nothing, .timeout = 300)
{
    struct env e = {0};
    /* Without the overlap window: a delta asks from 5 min before the
     * watermark, and the source's dedupe map does not survive a restart, so
     * it would publish the records of those minutes again (identical: the
     * target would not change, but the sink would count them applied). */
    env_setup(&e, "estore-clean", 30, 1301, "    overlap: 0s\n");
    sync_and_stop(&e);
    long seq = skt_ss_last_seq(e.port);

    char *out = run_once(&e);
    cr_assert(strstr(out, "embedded broker restored from"), "no restore:\n%s", out);
    cr_assert(strstr(out, "sink db (sqlite-sink): 0 records applied"),
              "the sink applied records after a clean restart:\n%s", out);
    char first[512];
    int full = skt_ss_full_listings(e.port, seq, first, sizeof(first));
    cr_assert_eq(full, 0, "%d full listing(s) after a clean restart, e.g. %s", full, first);
    cr_assert_gt(skt_ss_last_seq(e.port), seq, "the source asked the server nothing");
    char why[2048];
    cr_assert(db_equals_server(&e, why, sizeof(why)), "%s", why);
    /* The restored broker has no group offsets: a sink with nothing to
     * apply tells the group where it resumed, or every restored record
     * would count as lag (and trip the lag alerts) until new ones came. */
    int port_before = last_port(&e);
    daemon_start(&e);
    wait_no_lag(&e, port_before, 30);
    daemon_stop(&e);
    free(out);
    env_free(&e);
}

Test(embedded_restart, changes_made_while_down_arrive_after_restart, .timeout = 300)
{
    struct env e = {0};
    env_setup(&e, "estore-down", 30, 1302, "");
    sync_and_stop(&e);
    long seq = skt_ss_last_seq(e.port);
    unsigned rng = 1302;
    char prev[64][37];
    int n_prev = 0;
    int changes = skt_ss_mutate(e.port, 1, &rng, prev, &n_prev);
    cr_assert_gt(changes, 20);
    daemon_start(&e);
    int64_t ms = wait_equal(&e, 60, "after the changes made while down");
    daemon_stop(&e);
    char first[512];
    int full = skt_ss_full_listings(e.port, seq, first, sizeof(first));
    cr_assert_eq(full, 0, "%d full listing(s): deletions must come from the delta, e.g. %s", full,
                 first);
    cr_log_info("embedded_restart: %d changes made while down arrived %lld ms after the restart",
                changes, (long long)ms);
    env_free(&e);
}

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : dflt;
}

Test(embedded_restart, kill_9_during_syncs_with_changes_while_down, .timeout = 900)
{
    long trials = env_long("SK_EMBEDDED_TRIALS", 10);
    unsigned seed = (unsigned)env_long("SK_EMBEDDED_SEED", 0);
    if (!seed)
        seed = (unsigned)time(NULL) % 1000000u;
    unsigned rng = seed;
    struct env e = {0};
    env_setup(&e, "estore-kill", 60, seed, "");
    cr_log_info(
        "embedded_restart: %ld kill -9 trials, seed %u (replay: SK_EMBEDDED_SEED=%u), dir %s",
        trials, seed, seed, e.dir);
    char prev[64][37];
    int n_prev = 0, wave = 0;
    daemon_start(&e);
    for (long t = 1; t <= trials; t++) {
        /* a sync under way: the first full sync, or a delta after a wave */
        if (t > 1)
            skt_ss_mutate(e.port, ++wave, &rng, prev, &n_prev);
        int ms = t == 1 ? skt_draw(&rng, 1500, 5000) : skt_draw(&rng, 100, 1500);
        usleep((useconds_t)ms * 1000);
        daemon_kill9(&e);
        int changes = skt_ss_mutate(e.port, ++wave, &rng, prev, &n_prev);
        daemon_start(&e);
        char *when = skt_fmt("trial %ld (seed %u, killed %d ms into the sync)", t, seed, ms);
        int64_t took = wait_equal(&e, 90, when);
        cr_log_info("embedded_restart: %s, %d changes while down: equal %lld ms after the restart",
                    when, changes, (long long)took);
        free(when);
    }
    daemon_stop(&e);
    env_free(&e);
}

/*
 * Changes at the server while the daemon is down (deletions among them),
 * damages the store, restarts, and checks the target (deletions included:
 * the empty broker knows nothing to reconcile against, so only the sinks'
 * snapshot sweep removes them), the log line (the nth), the file moved
 * aside and a full sync.
 */
static void damaged_restart(struct env *e, const char *how, void (*damage)(const char *path),
                            int nth, unsigned *rng)
{
    const char *path = e->path;
    char prev[64][37];
    int n_prev = 0;
    cr_assert_gt(skt_ss_mutate(e->port, nth, rng, prev, &n_prev), 0);
    int swept_before = log_count(e, "deleted (gone from the source system)");
    damage(path);
    long seq = skt_ss_last_seq(e->port);
    /* one full cycle of the source (a full sync: the broker starts empty) */
    free(run_once(e));
    char why[2048];
    cr_assert(db_equals_server(e, why, sizeof(why)), "%s: %s (log %s)", how, why, e->log);
    cr_assert_gt(log_count(e, "deleted (gone from the source system)"), swept_before,
                 "%s: no sweep in the log (%s)", how, e->log);
    char *line = skt_fmt("embedded store %s is damaged", path);
    cr_assert_eq(log_count(e, line), nth, "%s: no log line \"%s\" (log %s)", how, line, e->log);
    char *pattern = skt_fmt("%s.damaged-*[0-9]Z", path);
    glob_t g = {0};
    cr_assert_eq(glob(pattern, 0, NULL, &g), 0, "%s: the damaged file was not moved aside", how);
    cr_assert_eq(g.gl_pathc, (size_t)nth, "%s: %zu files moved aside", how, g.gl_pathc);
    globfree(&g);
    char first[512];
    cr_assert_gt(skt_ss_full_listings(e->port, seq, first, sizeof(first)), 0,
                 "%s: no full sync after starting empty", how);
    free(pattern);
    free(line);
}

static void truncate_half(const char *path)
{
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0, "%s: no store after a clean stop", path);
    cr_assert_eq(truncate(path, sb.st_size / 2), 0);
}

static void overwrite_header(const char *path)
{
    int fd = open(path, O_WRONLY);
    cr_assert_geq(fd, 0);
    char junk[4096];
    memset(junk, 0x5a, sizeof(junk));
    cr_assert_eq(pwrite(fd, junk, sizeof(junk), 0), (ssize_t)sizeof(junk));
    close(fd);
}

Test(embedded_restart, damaged_store_is_moved_aside_and_synced_again, .timeout = 600)
{
    struct env e = {0};
    env_setup(&e, "estore-damaged", 30, 1304, "");
    sync_and_stop(&e);
    unsigned rng = 1304;
    damaged_restart(&e, "a truncated store", truncate_half, 1, &rng);
    /* a clean stop wrote a good store again; now its first pages are garbage */
    sleep(1); /* the name of the file moved aside has seconds */
    damaged_restart(&e, "a corrupt store", overwrite_header, 2, &rng);
    env_free(&e);
}

/* The first person of the server's data: its id (caller frees). */
static char *first_person(int port)
{
    cJSON *dump = skt_ss_dump(port);
    const cJSON *p = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(dump, "persons"), 0);
    char *id = strdup(cJSON_GetObjectItemCaseSensitive(p, "id")->valuestring);
    cJSON_Delete(dump);
    return id;
}

/* Waits (bounded) until /ready answers want (200 or 503) with text in its body. */
static void wait_ready(struct env *e, long want, const char *text, int timeout_s)
{
    char *url = skt_fmt("http://127.0.0.1:%d/ready", last_port(e));
    long got = 0;
    char *out = NULL;
    for (int i = 0; i < timeout_s * 5; i++) {
        free(out);
        out = NULL;
        got = skt_http("GET", url, NULL, 5, &out);
        if (got == want && out && strstr(out, text))
            break;
        usleep(200000);
    }
    cr_assert(got == want && out && strstr(out, text),
              "/ready did not answer %ld with \"%s\" within %d s: %ld %s (log %s)", want, text,
              timeout_s, got, out ? out : "", e->log);
    free(out);
    free(url);
}

Test(embedded_restart, a_sink_applies_only_what_the_store_holds, .timeout = 300)
{
    struct env e = {0};
    env_setup(&e, "estore-gate", 30, 1305, "");
    daemon_start(&e);
    wait_equal(&e, 120, "first sync");
    /* a second daemon on the same store (by mistake) is refused, and says why */
    char *cmd = skt_fmt("%s run --once -c %s 2>&1", skt_skolsync(), e.cfg), *out = NULL;
    cr_assert_eq(skt_sh(cmd, 30, &out), 1, "a second daemon on %s: %s", e.store, out);
    cr_assert(strstr(out, "is in use by another skolsync process"), "%s", out);
    cr_assert(alive(g_daemon), "the first daemon died (log %s)", e.log);
    free(out);
    free(cmd);
    /* Another process holds the store's write lock: the journal cannot
     * commit (it retries), so nothing new is on disk. */
    const char *path = e.path;
    sqlite3 *lock = NULL;
    cr_assert_eq(sqlite3_open(path, &lock), SQLITE_OK);
    sqlite3_busy_timeout(lock, 10000);
    cr_assert_eq(sqlite3_exec(lock, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(lock));
    char *id = first_person(e.port);
    char *body = skt_fmt("{\"collection\":\"persons\",\"id\":\"%s\",\"patch\":{\"givenName\":"
                         "\"Ej på disk\"}}",
                         id);
    skt_ss_ctl(e.port, "update", body);
    sleep(5); /* several polls (1 s) and journal rounds */
    char *doc = skt_sqlite_value(e.db, "SELECT doc FROM persons WHERE id = ?1", id);
    cr_assert(doc && !strstr(doc, "Ej på disk"),
              "the sink applied a change the store does not hold (log %s)", e.log);
    /* and it says so: waiting on a store that cannot write is not "ready" */
    wait_ready(&e, 503, "db is retrying", 30);
    /* the lock released, the journal writes, the sink applies, and is ready again */
    sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL);
    wait_equal(&e, 60, "the store writable again");
    wait_ready(&e, 200, "ready", 30);
    /* locked again, changed again, and killed while it waits */
    cr_assert_eq(sqlite3_exec(lock, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(lock));
    free(body);
    body = skt_fmt("{\"collection\":\"persons\",\"id\":\"%s\",\"patch\":{\"givenName\":"
                   "\"Inte heller på disk\"}}",
                   id);
    skt_ss_ctl(e.port, "update", body);
    wait_ready(&e, 503, "db is retrying", 30);
    daemon_kill9(&e);
    sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(lock);
    unsigned rng = 1305;
    char prev[64][37];
    int n_prev = 0;
    skt_ss_mutate(e.port, 1, &rng, prev, &n_prev);
    daemon_start(&e);
    wait_equal(&e, 90, "after the restart");
    daemon_stop(&e);
    free(doc);
    free(body);
    free(id);
    env_free(&e);
}

/*
 * The store lost its last commits: an older copy put back, or the -wal
 * deleted or torn after a kill -9. The target applied records the restored
 * log no longer holds, at offsets the restarted broker gives to new ones.
 */
Test(embedded_restart, a_store_older_than_its_target_skips_nothing, .timeout = 300)
{
    struct env e = {0};
    env_synced(&e, "estore-older", 1306);
    char *old = skt_fmt("%s.old", e.path);
    char *cp = skt_fmt("cp %s %s", e.path, old);
    cr_assert_eq(skt_sh(cp, 10, NULL), 0);
    change(&e);
    once_equal(&e, "before", NULL);
    /* the older copy back (a clean stop left no -wal), then more changes */
    cr_assert_eq(rename(old, e.path), 0);
    change(&e);
    once_equal(&e, "the store older than the target", "than the embedded store holds");
    free(cp);
    free(old);
    env_free(&e);
}

/*
 * A byte flipped inside a record's value: SQLite checks its pages, not what
 * a value holds, and the record was restored changed. A sink reading from
 * the start (here: its database deleted) applied a name the source never
 * had, and the source, its cursor restored, never sent the right one.
 */
Test(embedded_restart, a_flipped_byte_in_a_stored_record_is_found, .timeout = 300)
{
    struct env e = {0};
    env_synced(&e, "estore-flip", 1307);
    cJSON *dump = skt_ss_dump(e.port);
    const cJSON *p = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(dump, "persons"), 0);
    const char *name = cJSON_GetObjectItemCaseSensitive(p, "givenName")->valuestring;
    const char *path = e.path;
    size_t len, flipped = 0;
    char *all = sk_read_file(path, &len);
    cr_assert(all, "%s: no store after a clean stop", path);
    for (char *at = all; (at = memmem(at, len - (size_t)(at - all), name, strlen(name))); at++) {
        *at = *at == 'Q' ? 'X' : 'Q'; /* every copy: one of them is a live record */
        flipped++;
    }
    cr_assert_gt(flipped, 0, "\"%s\" not found in %s", name, path);
    FILE *f = fopen(path, "r+b");
    cr_assert(f && fwrite(all, 1, len, f) == len && fclose(f) == 0);
    char *rm = skt_fmt("rm -f %s %s-wal %s-shm", e.db, e.db, e.db);
    cr_assert_eq(skt_sh(rm, 10, NULL), 0);
    once_equal(&e, "a flipped byte in the store", "does not match its checksum");
    free(rm);
    free(all);
    cJSON_Delete(dump);
    env_free(&e);
}

/*
 * A restart after a delta's records were journaled but before its cursor
 * was (the journal writes a cursor only after its records, so a kill -9
 * can leave this): the source polls again from the older cursor and the
 * records come again, changing nothing that is right. The reverse, a
 * cursor on disk without its records, the journal never writes (§5.8).
 */
Test(embedded_restart, records_journaled_without_their_cursor_come_again, .timeout = 300)
{
    struct env e = {0};
    env_synced(&e, "estore-nocursor", 1308);
    const char *path = e.path;
    static const char cursors[] = "(SELECT id FROM estore_topics WHERE name LIKE '%_cursors')";
    char *sql = skt_fmt("SELECT max(offset) FROM estore_records WHERE topic = %s", cursors);
    char *last = skt_sqlite_value(path, sql, NULL);
    cr_assert(last, "no cursor in %s", path);
    change(&e);
    free(run_once(&e));
    /* the delta's records stay, its cursors go */
    char *after = skt_sqlite_value(path, sql, NULL);
    cr_assert(after && atol(after) > atol(last), "the delta stored no cursor (log %s)", e.log);
    free(sql);
    sql = skt_fmt("DELETE FROM estore_records WHERE topic = %s AND offset > %s", cursors, last);
    skt_sqlite_exec(path, sql);
    change(&e);
    long seq = skt_ss_last_seq(e.port);
    once_equal(&e, "the cursors lost", NULL);
    char first[512];
    cr_assert_eq(skt_ss_full_listings(e.port, seq, first, sizeof(first)), 0,
                 "a full listing: the older cursor was lost too (%s)", first);
    free(sql);
    free(after);
    free(last);
    env_free(&e);
}
