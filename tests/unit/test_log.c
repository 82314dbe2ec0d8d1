/*
 * test_log.c: the log sink (base/log.c) against text from outside: a server's
 * error body or a file name with a newline and a forged log line after it,
 * terminal escapes (hostile input #5); and the limiter for lines outside
 * input can trigger at will (#12).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "kafka.h"
#include "log.h"
#include "util.h"

/* Runs fn with stderr going to a file; returns what it wrote (caller frees). */
static char *captured(void (*fn)(void))
{
    char path[] = "/tmp/skt-log-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fd);
    size_t len = 0;
    char *text = sk_read_file(path, &len);
    unlink(path);
    cr_assert_not_null(text);
    return text;
}

static size_t lines_of(const char *text)
{
    size_t n = 0;
    for (const char *p = text; *p; p++)
        n += *p == '\n';
    return n;
}

static void forged(void)
{
    sk_log_setup(SK_LOG_INFO, false);
    sk_warn("sis", "HTTP 500: %s",
            "oops\n2099-01-01T00:00:00.000Z error main: FORGED\r\x1b[2J\x07");
}

Test(log, control_characters_cannot_forge_a_line_or_drive_the_terminal)
{
    char *out = captured(forged);
    cr_assert_eq(lines_of(out), 1, "one call, one line:\n%s", out);
    cr_assert(strstr(out, "oops\\n2099-01-01T00:00:00.000Z error main: FORGED\\r\\x1b[2J\\x07\n"),
              "%s", out);
    cr_assert_null(strchr(out, '\x1b'), "a raw escape reached the terminal");
    free(out);
}

static void forged_json(void)
{
    sk_log_setup(SK_LOG_INFO, true);
    sk_warn("sis", "%s", "a\nb\x1b");
    sk_log_setup(SK_LOG_INFO, false);
}

Test(log, json_lines_escape_control_characters_too)
{
    char *out = captured(forged_json);
    cr_assert_eq(lines_of(out), 1, "%s", out);
    cr_assert(strstr(out, "\"msg\":\"a\\u000ab\\u001b\""), "%s", out);
    free(out);
}

static void flood(void)
{
    sk_log_setup(SK_LOG_INFO, false);
    static struct sk_log_limit lim;
    for (int i = 0; i < 1000; i++)
        sk_log_limited(&lim, 60000, SK_LOG_WARN, "sis", "refused call %d", i);
}

Test(log, limited_lines_are_logged_once_per_interval_and_counted)
{
    uint64_t before = sk_log_suppressed_total();
    char *out = captured(flood);
    cr_assert_eq(lines_of(out), 1, "%s", out);
    cr_assert(strstr(out, "refused call 0\n"), "%s", out);
    cr_assert_eq(sk_log_suppressed_total() - before, 999);
    free(out);
}

static void after_interval(void)
{
    sk_log_setup(SK_LOG_INFO, false);
    struct sk_log_limit lim = {0};
    sk_log_limited(&lim, 50, SK_LOG_WARN, "sis", "first");
    sk_log_limited(&lim, 50, SK_LOG_WARN, "sis", "second");
    sk_log_limited(&lim, 50, SK_LOG_WARN, "sis", "third");
    usleep(80000);
    sk_log_limited(&lim, 50, SK_LOG_WARN, "sis", "fourth");
}

Test(log, the_next_logged_line_says_how_many_were_left_out)
{
    char *out = captured(after_interval);
    cr_assert_eq(lines_of(out), 2, "%s", out);
    cr_assert(strstr(out, "sis: first\n"), "%s", out);
    cr_assert(strstr(out, "sis: fourth (and 2 more like it, not logged)\n"), "%s", out);
    free(out);
}

static void keyed(void)
{
    sk_log_setup(SK_LOG_INFO, false);
    for (int i = 0; i < 100; i++) {
        sk_log_limited_key("key-a", 60000, SK_LOG_WARN, "lib", "a %d", i);
        sk_log_limited_key("key-b", 60000, SK_LOG_WARN, "lib", "b %d", i);
    }
    /* more keys than the table holds: each new key is said at once */
    for (int i = 0; i < 200; i++)
        sk_log_limited_key(i % 2 ? "odd" : "even", 60000, SK_LOG_WARN, "lib", "k%03d", i);
    for (int i = 0; i < 200; i++) {
        char key[32];
        snprintf(key, sizeof(key), "many-%d", i);
        sk_log_limited_key(key, 60000, SK_LOG_WARN, "lib", "m%03d", i);
    }
}

Test(log, keyed_limiters_limit_each_key_on_its_own)
{
    uint64_t before = sk_log_suppressed_total();
    char *out = captured(keyed);
    cr_assert(strstr(out, "lib: a 0\n") && strstr(out, "lib: b 0\n"), "%s", out);
    cr_assert_null(strstr(out, "lib: a 1\n"), "%s", out);
    cr_assert(strstr(out, "lib: k000\n") && strstr(out, "lib: k001\n"), "%s", out);
    cr_assert_null(strstr(out, "lib: k002\n"), "%s", out);
    for (int i = 0; i < 200; i++) {
        char line[32];
        snprintf(line, sizeof(line), "lib: m%03d\n", i);
        cr_assert(strstr(out, line), "a new key was held back by the table: %s", line);
    }
    cr_assert_eq(lines_of(out), 2 + 2 + 200, "%s", out);
    cr_assert_eq(sk_log_suppressed_total() - before, 99 * 2 + 99 * 2);
    free(out);
}

/* librdkafka's log callback, as a deleted topic makes a consumer call it. */
static void kafka_lines(void)
{
    sk_log_setup(SK_LOG_INFO, false);
    for (int i = 0; i < 50; i++)
        sk_kafka_log_line("rdkafka#consumer-1", 4, "COMMITFAIL", "Offset commit failed");
    sk_kafka_log_line("rdkafka#consumer-2", 4, "COMMITFAIL", "Offset commit failed");
    sk_kafka_log_line("rdkafka#consumer-1", 3, "FAIL", "Connection refused");
    for (int i = 0; i < 3; i++)
        sk_kafka_log_line("rdkafka#consumer-1", 5, "GETPID", "notice");
}

Test(log, librdkafka_warnings_are_limited_per_client_and_facility)
{
    char *out = captured(kafka_lines);
    cr_assert_eq(lines_of(out), 1 + 1 + 1 + 3, "%s", out);
    cr_assert(strstr(out, "warn  kafka: rdkafka#consumer-1: COMMITFAIL: Offset commit failed\n"),
              "%s", out);
    cr_assert(strstr(out, "kafka: rdkafka#consumer-2: COMMITFAIL"), "%s", out);
    cr_assert(strstr(out, "error kafka: rdkafka#consumer-1: FAIL: Connection refused"), "%s", out);
    free(out);
}
