/*
 * test_broker_outage.c: the real Kafka broker stops for 30 s in the middle of
 * a sync and starts again (same port, same data): the daemon recovers by
 * itself and the target ends equal to the input, nothing lost. The node-local
 * sink reads through the shared consumer (the default), whose group offsets
 * go unanswered all the while, and the cluster view is asked meanwhile.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "sk_test.h"
#include "util.h"

static int count_rows(const char *db)
{
    char *q = skt_fmt("sqlite3 %s 'SELECT (SELECT count(*) FROM attendances) + (SELECT count(*) "
                      "FROM persons)' 2>/dev/null",
                      db);
    char *out = NULL;
    skt_sh(q, 10, &out);
    int n = atoi(out);
    free(out);
    free(q);
    return n;
}

Test(broker_outage, broker_down_30s_mid_sync_then_back, .timeout = 400)
{
    const char *env_dir = getenv("SK_TESTENV_DIR");
    cr_assert(env_dir && *env_dir, "SK_TESTENV_DIR is not set: run the suite with `make test`");
    char *dir = skt_tmpdir("outage");
    char *data = skt_fmt("%s/data", dir), *db = skt_fmt("%s/out.db", dir);
    char *cfg = skt_fmt("%s/skolsync.yaml", dir), *log = skt_fmt("%s/daemon.log", dir);
    char *prefix = skt_unique_prefix();
    char *suffix = strndup(prefix + 1, 8);
    skt_generate(data, 51, 800);
    char *text = skt_fmt("kafka:\n  brokers: %s\n  topic_prefix: %s\n"
                         "admin:\n  listen: 127.0.0.1:0\n"
                         "shutdown_timeout: 20s\n"
                         "sources:\n  files-%s:\n    type: jsonl-source\n    path: %s\n"
                         "    batch_size: 300\n    poll_interval: 1s\n    retry_backoff_max: 3s\n"
                         "sinks:\n  db-%s:\n    type: sqlite-sink\n    path: %s\n"
                         "    retry_backoff_max: 3s\n",
                         skt_brokers(), prefix, suffix, data, suffix, db);
    skt_write(cfg, text);
    char *argv[] = {(char *)skt_skolsync(), "run", "-c", cfg, NULL};
    pid_t pid = skt_spawn(argv, log);
    for (int i = 0; i < 300 && count_rows(db) == 0; i++)
        usleep(100000);
    cr_assert_gt(count_rows(db), 0, "the sync never started (log %s)", log);
    int port = skt_logged_port(log, 30000);
    cr_assert_gt(port, 0, "no admin port (log %s)", log);

    char *stop =
        skt_fmt("SK_TESTENV_DIR=%s %s/scripts/kafka.sh stop --keep-data", env_dir, SK_SOURCE_DIR);
    char *start = skt_fmt("SK_TESTENV_DIR=%s %s/scripts/kafka.sh start", env_dir, SK_SOURCE_DIR);
    char *out = NULL;
    cr_assert_eq(skt_sh(stop, 60, &out), 0, "%s", out);
    free(out);
    int during = count_rows(db);
    /* The cluster view asked while the broker is away: its group description
     * once timed out on the sources group's client, and the lookup it left
     * there aborted the daemon when the broker came back (architecture.md
     * §8.14h). Whatever it answers, the daemon must live on. */
    int64_t asked = sk_mono_ms();
    cJSON *view = skt_get_json(port, "/api/v1/cluster");
    cJSON_Delete(view);
    int64_t left = 30000 - (sk_mono_ms() - asked);
    if (left > 0)
        usleep((useconds_t)left * 1000);
    cr_assert_eq(skt_sh(start, 120, &out), 0, "%s", out);
    free(out);
    cr_assert_eq(skt_wait(pid, 0), -2, "the daemon died while the broker was down (log %s)", log);
    cr_log_info("rows when the broker stopped: %d", during);

    /* recovers by itself: the target converges */
    char why[2048] = "";
    bool equal = false;
    for (int i = 0; i < 240 && !equal; i++) {
        equal = skt_db_matches_dataset(db, data, why, sizeof(why));
        if (!equal)
            usleep(500000);
    }
    kill(pid, SIGTERM);
    int rc = skt_wait(pid, 30000);
    cr_assert(equal, "did not converge after the broker came back: %s (log %s)", why, log);
    cr_assert_eq(rc, 0, "exit %d after SIGTERM (log %s)", rc, log);
}
