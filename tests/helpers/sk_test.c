/* sk_test.c: see sk_test.h. */
#include "sk_test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <sqlite3.h>

#include "connector.h"
#include "drivers.h"
#include "kafka.h"
#include "model.h"
#include "buf.h"
#include "util.h"

/*
 * A test's temp dirs are kept for a failure's logs and removed once it
 * passed: the dirs of every run had filled this machine's disk (~70 GB).
 * The test, in its worker process, lists each dir it makes in a file the
 * runner named (PRE_ALL); after the test's fini the runner removes the
 * listed dirs of a test that passed (POST_FINI). SKT_KEEP_DIRS=1 keeps all.
 */
#define DIRS_LIST_ENV "SKT_DIRS_LIST"

static const char *tmp_base(void)
{
    const char *base = getenv("TMPDIR");
    return base && *base ? base : "/tmp";
}

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    const char *keep = getenv("SKT_KEEP_DIRS");
    if (keep && strcmp(keep, "0") != 0)
        return;
    char list[PATH_MAX];
    snprintf(list, sizeof(list), "%s/skt-dirs-%d.list", tmp_base(), (int)getpid());
    setenv(DIRS_LIST_ENV, list, 1);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

ReportHook(POST_FINI)(struct criterion_test_stats *stats)
{
    const char *list = getenv(DIRS_LIST_ENV);
    if (!list || stats->test_status != CR_STATUS_PASSED || stats->failed_asserts ||
        stats->crashed || stats->timed_out)
        return;
    FILE *f = fopen(list, "r");
    if (!f)
        return; /* the test made no dir */
    char *test = skt_fmt("%s/%s\t", stats->test->category, stats->test->name);
    size_t n = strlen(test);
    char line[PATH_MAX + 512];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        /* only dirs skt_tmpdir made: a line cut short or altered removes nothing */
        const char *dir = line + n;
        if (strncmp(line, test, n) == 0 && strncmp(dir, tmp_base(), strlen(tmp_base())) == 0 &&
            strstr(dir, "/skolsync-"))
            nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    fclose(f);
    free(test);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    const char *list = getenv(DIRS_LIST_ENV);
    if (list)
        unlink(list);
}

char *skt_tmpdir(const char *tag)
{
    char *path = skt_fmt("%s/skolsync-%s-XXXXXX", tmp_base(), tag);
    cr_assert_not_null(mkdtemp(path), "mkdtemp %s: %s", path, strerror(errno));
    const char *list = getenv(DIRS_LIST_ENV);
    if (list && criterion_current_test) {
        /* one write of one line: the workers of a run append side by side */
        char *line = skt_fmt("%s/%s\t%s\n", criterion_current_test->category,
                             criterion_current_test->name, path);
        int fd = open(list, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0) {
            ssize_t w = write(fd, line, strlen(line));
            (void)w; /* not listed: the dir stays, as before */
            close(fd);
        }
        free(line);
    }
    return path;
}

const char *skt_skolsync(void)
{
    return SK_BINARY_DIR "/skolsync";
}

const char *skt_brokers(void)
{
    const char *b = getenv("SK_TEST_BROKERS");
    cr_assert(b && *b, "SK_TEST_BROKERS is not set: run the suite with `make test` "
                       "(scripts/with-testenv.sh starts the Kafka broker)");
    return b;
}

struct sk_kafka *skt_kafka_start(const char *prefix, int partitions)
{
    struct sk_kafka_conf kc = {.brokers = (char *)skt_brokers(),
                               .topic_prefix = (char *)prefix,
                               .partitions = partitions,
                               .replication_factor = 1,
                               .exactly_once = true,
                               .connect_timeout_ms = 20000};
    struct sk_kafka *k = NULL;
    struct sk_error err = {0};
    const char *cols[] = {"persons"};
    cr_assert_eq(sk_kafka_start(&kc, cols, 1, &k, &err), 0, "%s", err.msg);
    return k;
}

rd_kafka_mock_cluster_t *skt_mock_start(const char *topic, int partitions, rd_kafka_t **holder)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    cr_assert_eq(rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr)),
                 RD_KAFKA_CONF_OK);
    *holder = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(*holder, "%s", errstr);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(*holder, 1);
    cr_assert_not_null(mc);
    cr_assert_eq(rd_kafka_mock_topic_create(mc, topic, partitions, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    return mc;
}

/*
 * The prefixes this test process made, whose topics go when it ends: the
 * test broker runs under the machine's limit of open files (20 000), and one
 * run of the suite made ~6 000 partitions that stayed (each test its own
 * topics), so a broker that ran a few suites died of "Too many open files".
 */
static char *made_prefixes[64];
static size_t n_made;

static void delete_made_topics(void)
{
    const char *brokers = getenv("SK_TEST_BROKERS");
    if (!brokers || !*brokers || !n_made)
        return;
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk)
        return;
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(rk, 1, NULL, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_DeleteTopic_t **del = calloc((size_t)md->topic_cnt + 1, sizeof(*del));
        size_t n = 0;
        for (int t = 0; del && t < md->topic_cnt; t++)
            for (size_t i = 0; i < n_made; i++)
                if (strncmp(md->topics[t].topic, made_prefixes[i], strlen(made_prefixes[i])) == 0) {
                    del[n++] = rd_kafka_DeleteTopic_new(md->topics[t].topic);
                    break;
                }
        if (n) {
            rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
            rd_kafka_DeleteTopics(rk, del, n, NULL, q);
            rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000); /* errors: nothing to do */
            if (ev)
                rd_kafka_event_destroy(ev);
            rd_kafka_queue_destroy(q);
        }
        for (size_t i = 0; i < n; i++)
            rd_kafka_DeleteTopic_destroy(del[i]);
        free(del);
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_destroy(rk);
}

char *skt_unique_prefix(void)
{
    char uuid[37];
    sk_uuid_random(uuid);
    char *prefix = skt_fmt("t%.8s.", uuid);
    if (n_made < sizeof(made_prefixes) / sizeof(made_prefixes[0])) {
        if (n_made == 0)
            atexit(delete_made_topics);
        made_prefixes[n_made++] = strdup(prefix);
    }
    return prefix;
}

/* A client of the test broker for admin requests (caller destroys). */
static rd_kafka_t *admin_client(void)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", skt_brokers(), errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(rk, "%s", errstr);
    return rk;
}

void skt_topic_settings(const char *topic, bool create, const char *const *kv)
{
    char errstr[256];
    rd_kafka_t *rk = admin_client();
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_NewTopic_t *nt = NULL;
    rd_kafka_ConfigResource_t *res = NULL;
    if (create) {
        nt = rd_kafka_NewTopic_new(topic, 3, 1, errstr, sizeof(errstr));
        cr_assert_not_null(nt, "%s", errstr);
        for (size_t i = 0; kv[i]; i += 2)
            rd_kafka_NewTopic_set_config(nt, kv[i], kv[i + 1]);
        rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
    } else {
        res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);
        for (size_t i = 0; kv[i]; i += 2)
            rd_kafka_ConfigResource_set_config(res, kv[i], kv[i + 1]);
        rd_kafka_AlterConfigs(rk, &res, 1, NULL, q);
    }
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    cr_assert_not_null(ev, "the admin request timed out");
    size_t n = 0;
    const char *why = rd_kafka_event_error(ev) ? rd_kafka_event_error_string(ev) : NULL;
    if (!why && create) {
        const rd_kafka_topic_result_t **r =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
        why = n == 1 && !rd_kafka_topic_result_error(r[0]) ? NULL : "CreateTopics failed";
    } else if (!why) {
        const rd_kafka_ConfigResource_t **r =
            rd_kafka_AlterConfigs_result_resources(rd_kafka_event_AlterConfigs_result(ev), &n);
        why = n == 1 && !rd_kafka_ConfigResource_error(r[0]) ? NULL : "AlterConfigs failed";
    }
    cr_assert_null(why, "%s %s=%s: %s", topic, kv[0], kv[1], why);
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    if (nt)
        rd_kafka_NewTopic_destroy(nt);
    if (res)
        rd_kafka_ConfigResource_destroy(res);
    rd_kafka_destroy(rk);
}

void skt_topic_delete(const char *topic)
{
    rd_kafka_t *rk = admin_client();
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteTopic_t *d = rd_kafka_DeleteTopic_new(topic);
    rd_kafka_DeleteTopics(rk, &d, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    cr_assert(ev && !rd_kafka_event_error(ev), "DeleteTopics %s: %s", topic,
              ev ? rd_kafka_event_error_string(ev) : "timed out");
    size_t n = 0;
    const rd_kafka_topic_result_t **r =
        rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &n);
    cr_assert(n == 1 && !rd_kafka_topic_result_error(r[0]), "DeleteTopics %s failed", topic);
    rd_kafka_event_destroy(ev);
    rd_kafka_DeleteTopic_destroy(d);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

void skt_small_setup(struct skt_small *s, const char *tag, int seed, int students)
{
    s->dir = skt_tmpdir(tag);
    s->data = skt_fmt("%s/data", s->dir);
    skt_generate(s->data, seed, students);
    s->prefix = skt_unique_prefix();
    char *head = skt_config_head(s->prefix, "info", "10s");
    s->cfg = skt_fmt("%s/skolsync.yaml", s->dir);
    char *text = skt_fmt("%ssources:\n  files:\n    type: jsonl-source\n    path: %s\n"
                         "sinks:\n  db:\n    type: sqlite-sink\n    path: %s/out.db\n",
                         head, s->data, s->dir);
    skt_write(s->cfg, text);
    s->run = skt_fmt("%s run --once -c %s", skt_skolsync(), s->cfg);
    free(text);
    free(head);
}

void skt_small_free(struct skt_small *s)
{
    free(s->dir);
    free(s->data);
    free(s->prefix);
    free(s->cfg);
    free(s->run);
}

void skt_topic_partitions(const char *topic, int total)
{
    char errstr[256];
    rd_kafka_t *rk = admin_client();
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_NewPartitions_t *np = rd_kafka_NewPartitions_new(topic, (size_t)total, errstr,
                                                              sizeof(errstr));
    cr_assert_not_null(np, "%s", errstr);
    rd_kafka_CreatePartitions(rk, &np, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    cr_assert(ev && !rd_kafka_event_error(ev), "CreatePartitions %s: %s", topic,
              ev ? rd_kafka_event_error_string(ev) : "timed out");
    size_t n = 0;
    const rd_kafka_topic_result_t **r =
        rd_kafka_CreatePartitions_result_topics(rd_kafka_event_CreatePartitions_result(ev), &n);
    cr_assert(n == 1 && !rd_kafka_topic_result_error(r[0]), "CreatePartitions %s: %s", topic,
              n == 1 ? rd_kafka_topic_result_error_string(r[0]) : "no result");
    rd_kafka_event_destroy(ev);
    rd_kafka_NewPartitions_destroy(np);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

char *skt_topic_setting(const char *topic, const char *name)
{
    rd_kafka_t *rk = admin_client();
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_ConfigResource_t *res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);
    rd_kafka_DescribeConfigs(rk, &res, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    cr_assert(ev && !rd_kafka_event_error(ev), "DescribeConfigs %s: %s", topic,
              ev ? rd_kafka_event_error_string(ev) : "timed out");
    size_t n = 0, cnt = 0;
    const rd_kafka_ConfigResource_t **r =
        rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev), &n);
    cr_assert(n == 1 && !rd_kafka_ConfigResource_error(r[0]), "DescribeConfigs %s failed", topic);
    const rd_kafka_ConfigEntry_t **e = rd_kafka_ConfigResource_configs(r[0], &cnt);
    char *value = NULL;
    for (size_t i = 0; i < cnt && !value; i++)
        if (strcmp(rd_kafka_ConfigEntry_name(e[i]), name) == 0)
            value = strdup(rd_kafka_ConfigEntry_value(e[i]) ? rd_kafka_ConfigEntry_value(e[i])
                                                           : "");
    cr_assert_not_null(value, "%s has no setting %s", topic, name);
    rd_kafka_event_destroy(ev);
    rd_kafka_ConfigResource_destroy(res);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return value;
}

void skt_dump_write(const cJSON *dump, const char *dir)
{
    mkdir(dir, 0755);
    const cJSON *c;
    cJSON_ArrayForEach(c, dump)
    {
        char *path = skt_fmt("%s/%s.jsonl", dir, c->string);
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f, "%s: %s", path, strerror(errno));
        const cJSON *e;
        cJSON_ArrayForEach(e, c)
        {
            char *line = cJSON_PrintUnformatted(e);
            fprintf(f, "%s\n", line);
            free(line);
        }
        fclose(f);
        free(path);
    }
}

struct http_body {
    char *p;
    size_t n;
};

static size_t http_body_add(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct http_body *b = ud;
    size_t add = size * nmemb;
    b->p = realloc(b->p, b->n + add + 1);
    memcpy(b->p + b->n, ptr, add);
    b->n += add;
    b->p[b->n] = '\0';
    return add;
}

long skt_http(const char *method, const char *url, const char *body, int timeout_s, char **out)
{
    CURL *c = curl_easy_init();
    cr_assert_not_null(c);
    struct http_body b = {.p = strdup(""), .n = 0};
    struct curl_slist *h = body ? curl_slist_append(NULL, "Content-Type: application/json") : NULL;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (h)
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_body_add);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)timeout_s);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    if (out)
        *out = b.p;
    else
        free(b.p);
    return status;
}

char *skt_config_head(const char *prefix, const char *log_level, const char *shutdown_timeout)
{
    return skt_fmt("kafka:\n"
                   "  brokers: %s\n"
                   "  topic_prefix: %s\n"
                   "  partitions: 3\n"
                   "  connect_timeout: 20s\n"
                   "admin:\n"
                   "  listen: 127.0.0.1:0\n"
                   "log:\n"
                   "  level: %s\n"
                   "shutdown_timeout: %s\n",
                   skt_brokers(), prefix, log_level, shutdown_timeout);
}

void skt_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "open %s: %s", path, strerror(errno));
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

char *skt_fmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    cr_assert(vasprintf(&s, fmt, ap) >= 0);
    va_end(ap);
    return s;
}

int skt_sh(const char *cmd, int timeout_s, char **output)
{
    char path[] = "/tmp/skolsync-sh-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        setpgid(0, 0);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(fd);
    int rc = skt_wait(pid, timeout_s * 1000);
    if (rc == -2) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        rc = -1;
    }
    if (output) {
        size_t len;
        *output = sk_read_file(path, &len);
        if (!*output)
            *output = strdup("");
    }
    unlink(path);
    return rc;
}

pid_t skt_spawn(char *const argv[], const char *log_path)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        /* never outlive the test (a failed assertion ends it at once) */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

int skt_listening_port(pid_t pid, const char *log_path, int timeout_ms, const char *what)
{
    static const char mark[] = "LISTENING 127.0.0.1:";
    int port = 0;
    for (int waited = 0; !port; waited += 100) {
        size_t len;
        char *text = sk_read_file(log_path, &len);
        const char *m = text ? strstr(text, mark) : NULL;
        if (m)
            port = atoi(m + strlen(mark));
        free(text);
        if (port)
            break;
        cr_assert(waitpid(pid, NULL, WNOHANG) == 0, "%s exited at start (see %s)", what, log_path);
        cr_assert_lt(waited, timeout_ms, "%s did not listen within %d ms (see %s)", what,
                     timeout_ms, log_path);
        usleep(100000);
    }
    return port;
}

int skt_stop(pid_t *pid, int timeout_ms)
{
    if (*pid <= 0)
        return 0;
    kill(*pid, SIGTERM);
    int rc = skt_wait(*pid, timeout_ms);
    if (rc == -2) {
        kill(*pid, SIGKILL);
        skt_wait(*pid, 10000);
    }
    *pid = -1;
    return rc;
}

int skt_wait(pid_t pid, int timeout_ms)
{
    for (int waited = 0;; waited += 20) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            if (WIFEXITED(status))
                return WEXITSTATUS(status);
            return 128 + WTERMSIG(status);
        }
        if (waited >= timeout_ms)
            return -2;
        usleep(20000);
    }
}

void skt_generate(const char *dir, int seed, int students)
{
    char *cmd = skt_fmt("python3 %s/tests/fixtures/ss12000_gen.py --seed %d --students %d "
                        "--out %s",
                        SK_SOURCE_DIR, seed, students, dir);
    char *out = NULL;
    int rc = skt_sh(cmd, 300, &out);
    cr_assert_eq(rc, 0, "generator failed: %s\n%s", cmd, out);
    free(out);
    free(cmd);
}

size_t skt_count_records(const char *dir)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 6, ".jsonl") != 0)
            continue;
        char *p = skt_fmt("%s/%s", dir, e->d_name);
        size_t len;
        char *text = sk_read_file(p, &len);
        cr_assert_not_null(text);
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
            if (strspn(line, " \t\r") != strlen(line))
                n++;
        free(text);
        free(p);
    }
    closedir(d);
    return n;
}

bool skt_json_equal(const cJSON *a, const cJSON *b)
{
    if (!a || !b)
        return a == b;
    if ((a->type & 0xff) != (b->type & 0xff))
        return false;
    if (cJSON_IsObject(a)) {
        if (cJSON_GetArraySize(a) != cJSON_GetArraySize(b))
            return false;
        for (const cJSON *x = a->child; x; x = x->next)
            if (!skt_json_equal(x, cJSON_GetObjectItemCaseSensitive(b, x->string)))
                return false;
        return true;
    }
    if (cJSON_IsArray(a)) {
        const cJSON *y = b->child;
        for (const cJSON *x = a->child; x; x = x->next, y = y->next)
            if (!y || !skt_json_equal(x, y))
                return false;
        return y == NULL;
    }
    return cJSON_Compare(a, b, true);
}

/* A set of UUID strings (open addressing), to let the last line of an id win. */
struct idset {
    char (*v)[37];
    size_t cap, n;
};

static bool idset_add(struct idset *s, const char *id)
{
    if (s->n * 2 >= s->cap) {
        struct idset bigger = {.cap = s->cap ? s->cap * 2 : 1024};
        bigger.v = calloc(bigger.cap, 37);
        for (size_t i = 0; i < s->cap; i++)
            if (s->v[i][0])
                idset_add(&bigger, s->v[i]);
        free(s->v);
        *s = bigger;
    }
    size_t h = 5381;
    for (const char *p = id; *p; p++)
        h = h * 33 + (unsigned char)*p;
    for (size_t i = h % s->cap;; i = (i + 1) % s->cap) {
        if (!s->v[i][0]) {
            memcpy(s->v[i], id, 37);
            s->n++;
            return true;
        }
        if (strcmp(s->v[i], id) == 0)
            return false;
    }
}

/*
 * Every id of the file (its last line wins, as for appended updates) must be
 * in the table with an equal doc, and the table must hold nothing else.
 */
static bool compare_collection(sqlite3 *db, const struct sk_entity *e, const char *file, char *why,
                               size_t why_size)
{
    size_t len = 0;
    char *text = sk_read_file(file, &len);
    char **lines = NULL;
    size_t n_lines = 0, cap = 0;
    for (char *save = NULL, *line = text ? strtok_r(text, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save)) {
        if (n_lines == cap) {
            cap = cap ? cap * 2 : 256;
            lines = realloc(lines, cap * sizeof(*lines));
        }
        lines[n_lines++] = line;
    }
    sqlite3_stmt *st = NULL;
    char *sql = skt_fmt("SELECT doc FROM \"%s\" WHERE id = ?", e->collection);
    int prc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    free(sql);
    if (prc != SQLITE_OK) {
        snprintf(why, why_size, "%s: %s", e->collection, sqlite3_errmsg(db));
        free(lines);
        free(text);
        return false;
    }
    struct idset seen = {0};
    bool ok = true;
    for (size_t k = n_lines; k-- > 0 && ok;) {
        cJSON *in = cJSON_Parse(lines[k]);
        if (!in)
            continue; /* a malformed line: not expected in the target */
        const cJSON *idn = cJSON_GetObjectItemCaseSensitive(in, "id");
        char id[37];
        if (!cJSON_IsString(idn) || sk_uuid_normalize(idn->valuestring, id) ||
            !idset_add(&seen, id)) {
            cJSON_Delete(in);
            continue;
        }
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) != SQLITE_ROW) {
            snprintf(why, why_size, "%s %s: missing in the database", e->collection, id);
            ok = false;
        } else {
            cJSON *out = cJSON_Parse((const char *)sqlite3_column_text(st, 0));
            /* The input's id may be uppercase; the target's is normalised. */
            cJSON_ReplaceItemInObjectCaseSensitive(in, "id", cJSON_CreateString(id));
            if (!skt_json_equal(in, out)) {
                char *a = cJSON_PrintUnformatted(in), *b = cJSON_PrintUnformatted(out);
                snprintf(why, why_size, "%s %s differs:\n  in:  %.600s\n  out: %.600s",
                         e->collection, id, a, b ? b : "(unparseable)");
                free(a);
                free(b);
                ok = false;
            }
            cJSON_Delete(out);
        }
        cJSON_Delete(in);
    }
    sqlite3_finalize(st);
    size_t expected = seen.n;
    free(seen.v);
    free(lines);
    free(text);
    if (!ok)
        return false;
    char *csql = skt_fmt("SELECT count(*) FROM \"%s\"", e->collection);
    sqlite3_prepare_v2(db, csql, -1, &st, NULL);
    free(csql);
    size_t have = 0;
    if (st && sqlite3_step(st) == SQLITE_ROW)
        have = (size_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (have != expected) {
        snprintf(why, why_size, "%s: %zu rows in the database, %zu in the dataset", e->collection,
                 have, expected);
        return false;
    }
    return true;
}

bool skt_db_matches_dataset(const char *db_path, const char *data_dir, char *why, size_t why_size)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        snprintf(why, why_size, "cannot open %s", db_path);
        sqlite3_close(db);
        return false;
    }
    sqlite3_busy_timeout(db, 10000); /* the daemon may be writing */
    bool ok = true;
    for (size_t i = 0; sk_entities[i] && ok; i++) {
        char *file = skt_fmt("%s/%s.jsonl", data_dir, sk_entities[i]->collection);
        if (access(file, R_OK) == 0)
            ok = compare_collection(db, sk_entities[i], file, why, why_size);
        free(file);
    }
    sqlite3_close(db);
    return ok;
}

bool skt_db_converges(const char *db_path, const char *data_dir, int timeout_ms, char *why,
                      size_t why_size)
{
    for (int waited = 0;; waited += 500) {
        if (skt_db_matches_dataset(db_path, data_dir, why, why_size))
            return true;
        if (waited >= timeout_ms)
            return false;
        usleep(500000);
    }
}

int skt_logged_port(const char *log_path, int timeout_ms)
{
    return skt_logged_port_after(log_path, "HTTP server on", timeout_ms);
}

int skt_logged_port_after(const char *log_path, const char *text, int timeout_ms)
{
    char *cmd = skt_fmt("sed -n 's#.*%s http://127.0.0.1:\\([0-9]*\\).*#\\1#p' %s", text, log_path);
    int port = 0;
    for (int waited = 0; waited < timeout_ms && port == 0; waited += 100) {
        char *out = NULL;
        skt_sh(cmd, 5, &out);
        port = atoi(out);
        free(out);
        if (port == 0)
            usleep(100000);
    }
    free(cmd);
    return port;
}

int skt_notify_listen(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    cr_assert(fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    unlink(path);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "bind %s: %s", path,
                 strerror(errno));
    return fd;
}

void skt_notify_drain(int fd, char *buf, size_t size)
{
    char msg[4096];
    ssize_t n;
    while ((n = recv(fd, msg, sizeof(msg) - 1, 0)) > 0) {
        msg[n] = '\0';
        size_t used = strlen(buf);
        snprintf(buf + used, size - used, "%s\n", msg);
    }
}

/* ---- connectors as the core opens them -------------------------------------- */

static void *conf_from_yaml(const struct sk_option *table, size_t conf_size, const char *yaml)
{
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = sk_config_load_string(yaml, strlen(yaml), "test.yaml", &errs);
    cr_assert_not_null(root, "%s", errs.n ? errs.v[0].text : "no tree");
    void *conf = sk_calloc(1, conf_size ? conf_size : 1);
    sk_options_apply(table, root, conf, &errs);
    cr_assert_eq(errs.n, 0, "%s", errs.n ? errs.v[0].text : "");
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
    return conf;
}

int skt_sink_try_open(const char *type, const char *name, const char *yaml,
                      const struct sk_entity *const *entities, size_t n_entities,
                      const char *incarnation, struct sk_sink **out, struct sk_error *err)
{
    const struct sk_sink_ops *ops = sk_registry_sink(type);
    cr_assert_not_null(ops, "no sink type %s", type);
    struct sk_sink *s = sk_calloc(1, sizeof(*s));
    s->ops = ops;
    s->name = name ? name : "test-sink";
    s->conf = conf_from_yaml(ops->options, ops->conf_size, yaml);
    s->incarnation = incarnation;
    s->entities = entities ? entities : sk_entities;
    s->n_entities = entities ? n_entities : SK_ENTITY_COUNT;
    *out = NULL;
    int rc = ops->open(s, err);
    if (rc == 0) {
        *out = s;
        return 0;
    }
    sk_options_free(ops->options, s->conf); /* a failed open cleaned up after itself */
    free(s->conf);
    free(s);
    return rc;
}

struct sk_sink *skt_sink_open(const char *type, const char *yaml,
                              const struct sk_entity *const *entities, size_t n_entities,
                              const char *incarnation)
{
    struct sk_sink *s;
    struct sk_error err = {0};
    cr_assert_eq(skt_sink_try_open(type, NULL, yaml, entities, n_entities,
                                   incarnation ? incarnation : "test-incarnation", &s, &err),
                 0, "open %s: %s", type, err.msg);
    return s;
}

void skt_sink_close(struct sk_sink *s)
{
    if (!s)
        return;
    s->ops->close(s);
    sk_options_free(s->ops->options, s->conf);
    free(s->conf);
    free(s);
}

void skt_sink_drop(struct sk_sink **s)
{
    skt_sink_close(*s);
    *s = NULL;
}

struct sk_source *skt_source_open(const char *type, const char *yaml)
{
    const struct sk_source_ops *ops = sk_registry_source(type);
    cr_assert_not_null(ops, "no source type %s", type);
    struct sk_source *s = sk_calloc(1, sizeof(*s));
    s->ops = ops;
    s->name = "test-source";
    s->conf = conf_from_yaml(ops->options, ops->conf_size, yaml);
    struct sk_error err = {0};
    cr_assert_eq(ops->open(s, &err), 0, "open %s: %s", type, err.msg);
    return s;
}

void skt_source_close(struct sk_source *s)
{
    if (!s)
        return;
    s->ops->close(s);
    sk_options_free(s->ops->options, s->conf);
    free(s->conf);
    free(s);
}

/* ---- records as the sink driver hands them over ------------------------------ */

void skt_record_decode(struct sk_record *r, const struct sk_privacy *privacy)
{
    static const struct sk_privacy keep_all = {0};
    struct sk_buf json = {0};
    cJSON *doc = NULL;
    struct sk_error err = {0};
    uint8_t *value = r->value;
    int rc = value ? sk_sink_decode(privacy ? privacy : &keep_all, r, &doc, &json, &err) : -1;
    if (rc == 0)
        r->json = sk_buf_take(&json);
    sk_buf_free(&json);
    if (rc == 1)
        free(value); /* the policy made it a delete: no value */
}

void skt_record_free(struct sk_record *r)
{
    free(r->value);
    cJSON_Delete((cJSON *)r->doc);
    free((char *)r->json);
    r->value = NULL;
    r->doc = NULL;
    r->json = NULL;
}

static struct sk_record *recs_next(struct skt_recs *b, const char *entity)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        b->v = sk_realloc(b->v, b->cap * sizeof(*b->v));
        b->out = sk_realloc(b->out, b->cap * sizeof(*b->out));
    }
    const struct sk_entity *e = sk_entity_by_name(entity);
    if (!e)
        e = sk_entity_by_collection(entity);
    cr_assert_not_null(e, "no entity type %s", entity);
    struct sk_record *r = &b->v[b->n];
    memset(r, 0, sizeof(*r));
    r->entity = e;
    r->topic = e->collection;
    r->offset = (int64_t)b->n++;
    r->modified_us = INT64_MIN;
    return r;
}

struct sk_record *skt_recs_add(struct skt_recs *b, const char *entity, const char *key,
                               const char *json, const struct sk_privacy *privacy)
{
    struct sk_record *r = recs_next(b, entity);
    if (key)
        snprintf(r->key, sizeof(r->key), "%s", key);
    if (!json)
        return r;
    struct sk_error err = {0};
    char id[37];
    int64_t modified_us;
    cr_assert_eq(sk_codec_encode(r->entity, json, strlen(json), &r->value, &r->value_len, id,
                                 &modified_us, &err),
                 0, "%s: %s", err.msg, json);
    if (!key)
        snprintf(r->key, sizeof(r->key), "%s", id);
    skt_record_decode(r, privacy);
    cr_assert(!r->value || r->json, "%s does not decode", json);
    return r;
}

struct sk_record *skt_recs_add_raw(struct skt_recs *b, const char *entity, const char *key,
                                   uint8_t *value, size_t len)
{
    struct sk_record *r = recs_next(b, entity);
    snprintf(r->key, sizeof(r->key), "%s", key);
    r->value = value;
    r->value_len = len;
    return r;
}

int skt_recs_apply(struct sk_sink *s, struct skt_recs *b, struct sk_error *err)
{
    sk_error_clear(err);
    for (size_t i = 0; i < b->n; i++) {
        b->out[i].kind = SK_APPLIED;
        sk_error_clear(&b->out[i].err);
    }
    return s->ops->apply(s, b->v, b->n, b->out, err);
}

void skt_recs_apply_ok(struct sk_sink *s, struct skt_recs *b)
{
    struct sk_error err = {0};
    cr_assert_eq(skt_recs_apply(s, b, &err), 0, "apply: %s", err.msg);
}

void skt_recs_clear(struct skt_recs *b)
{
    for (size_t i = 0; i < b->n; i++)
        skt_record_free(&b->v[i]);
    b->n = 0;
}

void skt_recs_free(struct skt_recs *b)
{
    skt_recs_clear(b);
    free(b->v);
    free(b->out);
    memset(b, 0, sizeof(*b));
}

/* ---- the test PostgreSQL --------------------------------------------------------- */

const char *skt_pg_conninfo(void)
{
    const char *ci = getenv("SK_TEST_PG");
    cr_assert(ci && *ci, "SK_TEST_PG is not set: run under scripts/with-testenv.sh");
    return ci;
}

PGconn *skt_pg_connect(void)
{
    const char *ci = skt_pg_conninfo();
    char *full = skt_fmt("%s connect_timeout=5", ci);
    PGconn *c = PQconnectdb(full);
    free(full);
    return c;
}

char *skt_pg_table(const char *collection)
{
    struct sk_buf b = {0};
    for (const char *p = collection; *p; p++) {
        if (*p >= 'A' && *p <= 'Z') {
            sk_buf_putc(&b, '_');
            sk_buf_putc(&b, (char)(*p - 'A' + 'a'));
        } else {
            sk_buf_putc(&b, *p);
        }
    }
    return sk_buf_take(&b);
}

long long skt_pg_total_rows(PGconn *c, const char *schema)
{
    if (PQstatus(c) != CONNECTION_OK)
        return -1;
    struct sk_buf sql = {0};
    sk_buf_puts(&sql, "SELECT 0");
    for (size_t i = 0; i < SK_ENTITY_COUNT; i++) {
        char *t = skt_pg_table(sk_entities[i]->collection);
        sk_buf_printf(&sql, " + (SELECT count(*) FROM \"%s\".\"%s\")", schema, t);
        free(t);
    }
    PGresult *r = PQexec(c, sql.p);
    long long n = PQresultStatus(r) == PGRES_TUPLES_OK ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    sk_buf_free(&sql);
    return n;
}

void skt_sqlite_exec(const char *db_path, const char *sql)
{
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(db_path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000); /* the daemon may be writing */
    char *msg = NULL;
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, &msg), SQLITE_OK, "%s: %s", db_path, msg);
    sqlite3_close(db);
}

struct sqlite3 *skt_sqlite_lock_once_made(const char *db_path, int timeout_ms)
{
    sqlite3 *db = NULL;
    bool locked = false;
    for (int waited = 0; waited < timeout_ms && !locked; waited += 20, usleep(20 * 1000)) {
        if (access(db_path, F_OK) != 0)
            continue;
        if (!db && sqlite3_open(db_path, &db) != SQLITE_OK)
            break;
        sqlite3_stmt *st = NULL;
        bool tables = sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master", -1, &st, NULL) ==
                          SQLITE_OK &&
                      sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) > 0;
        sqlite3_finalize(st);
        locked = tables && sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL) == SQLITE_OK;
    }
    if (!locked) {
        sqlite3_close(db);
        db = NULL;
    }
    return db;
}

char *skt_sqlite_value(const char *db_path, const char *sql, const char *param)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK, "%s",
                 db_path);
    /* The daemon may hold the write lock a moment (opening the file, a
     * checkpoint): a reader waits instead of failing the test. */
    sqlite3_busy_timeout(db, 10000);
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    if (param)
        sqlite3_bind_text(st, 1, param, -1, SQLITE_TRANSIENT);
    char *out = NULL;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        out = sk_strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
}

void skt_append_persons(const char *dir, int first, int n)
{
    char *path = skt_fmt("%s/persons.jsonl", dir);
    FILE *f = fopen(path, "a");
    cr_assert_not_null(f);
    for (int i = first; i < first + n; i++)
        fprintf(f,
                "{\"id\":\"00000000-0000-4000-8000-%012d\",\"givenName\":\"Åsa\","
                "\"familyName\":\"Nyström %d\",\"meta\":{\"created\":\"2026-02-01T10:00:00+01:00\","
                "\"modified\":\"2026-02-01T10:00:00+01:00\"}}\n",
                i, i);
    fclose(f);
    free(path);
}

cJSON *skt_get_json(int port, const char *path)
{
    char *url = skt_fmt("http://127.0.0.1:%d%s", port, path);
    char *body = NULL;
    long st = skt_http("GET", url, NULL, 10, &body);
    free(url);
    cJSON *o = st == 200 && body ? cJSON_Parse(body) : NULL;
    free(body);
    return o;
}

const char *skt_jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

double skt_jnum(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

void skt_pg_drop_schema(const char *schema)
{
    if (!schema)
        return;
    PGconn *c = skt_pg_connect();
    if (PQstatus(c) == CONNECTION_OK) {
        char *sql = skt_fmt(
            "SET client_min_messages TO warning; DROP SCHEMA IF EXISTS \"%s\" CASCADE", schema);
        PQclear(PQexec(c, sql));
        free(sql);
    }
    PQfinish(c);
}

int skt_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t len = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &len);
    close(fd);
    return ntohs(sa.sin_port);
}

bool skt_wait_line(const char *path, const char *text, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 100) {
        if (skt_lines_with(path, text) > 0)
            return true;
        usleep(100000);
    }
    return false;
}

int skt_lines_with(const char *path, const char *text)
{
    char *cmd = skt_fmt("grep -cF '%s' %s", text, path);
    char *out = NULL;
    skt_sh(cmd, 10, &out);
    int n = atoi(out ? out : "0");
    free(out);
    free(cmd);
    return n;
}

int skt_threads_named(pid_t pid, const char *comm)
{
    char *dir = skt_fmt("/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "%s", dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char *path = skt_fmt("%s/%s/comm", dir, e->d_name);
        char name[64] = "";
        FILE *f = fopen(path, "r");
        if (f && fgets(name, sizeof(name), f))
            name[strcspn(name, "\n")] = '\0';
        if (f)
            fclose(f);
        n += strcmp(name, comm) == 0;
        free(path);
    }
    closedir(d);
    free(dir);
    return n;
}
