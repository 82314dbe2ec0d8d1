/*
 * test_config.c: the configuration loader and the option tables.
 *
 * Every error test asserts the whole line `FILE:LINE:COL: key.path: what
 * (expected)`, because that line is the user interface of `skolsync check`.
 * Secret tests assert that a secret's value appears in no error text at all.
 */
#include "buf.h"
#include "config.h"

#include <criterion/criterion.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define FIXTURES SK_SOURCE_DIR "/tests/fixtures/config/"

/* ---- a table with every option type ---------------------------------------- */

struct tls_conf {
    bool enabled;
    char *ca;
    int64_t handshake_timeout_ms;
};

struct test_conf {
    char *name;
    char *token;
    int64_t workers;
    bool verbose;
    int64_t poll_interval_ms;
    int64_t buffer;
    struct sk_strlist topics;
    struct sk_strmap properties;
    struct tls_conf tls;
    char *mode;
};

static const char *const modes[] = {"full", "incremental", NULL};

static const struct sk_option tls_options[] = {
    {.name = "enabled",
     .type = SK_OPT_BOOL,
     .def = "false",
     .help = "use TLS",
     .offset = offsetof(struct tls_conf, enabled)},
    {.name = "ca",
     .type = SK_OPT_STRING,
     .help = "CA bundle",
     .offset = offsetof(struct tls_conf, ca)},
    {.name = "handshake_timeout",
     .type = SK_OPT_DURATION,
     .def = "10s",
     .help = "handshake",
     .offset = offsetof(struct tls_conf, handshake_timeout_ms),
     .min = 1000,
     .max = 60000},
    {0},
};

#define REFUSED                                                                                    \
    "${env:} and ${file:} are only for secret fields, whose values are never shown (expected the " \
    "value itself)"

static const struct sk_option test_options[] = {
    {.name = "name",
     .type = SK_OPT_STRING,
     .required = true,
     .help = "instance name",
     .offset = offsetof(struct test_conf, name)},
    {.name = "token",
     .type = SK_OPT_SECRET,
     .help = "API token",
     .offset = offsetof(struct test_conf, token)},
    {.name = "workers",
     .type = SK_OPT_INT,
     .def = "4",
     .help = "threads",
     .offset = offsetof(struct test_conf, workers),
     .min = 1,
     .max = 64},
    {.name = "verbose",
     .type = SK_OPT_BOOL,
     .def = "false",
     .help = "chatty",
     .offset = offsetof(struct test_conf, verbose)},
    {.name = "poll_interval",
     .type = SK_OPT_DURATION,
     .def = "30s",
     .help = "poll every",
     .offset = offsetof(struct test_conf, poll_interval_ms),
     .min = 1000,
     .max = 86400000},
    {.name = "buffer",
     .type = SK_OPT_SIZE,
     .def = "1MiB",
     .help = "buffer size",
     .offset = offsetof(struct test_conf, buffer)},
    {.name = "topics",
     .type = SK_OPT_LIST,
     .def = "[persons, groups, duties]",
     .help = "topics",
     .offset = offsetof(struct test_conf, topics)},
    {.name = "properties",
     .type = SK_OPT_MAP,
     .def = "{acks: all, linger.ms: 5}",
     .help = "librdkafka properties",
     .offset = offsetof(struct test_conf, properties)},
    {.name = "tls",
     .type = SK_OPT_GROUP,
     .help = "TLS",
     .offset = offsetof(struct test_conf, tls),
     .sub = tls_options},
    {.name = "mode",
     .type = SK_OPT_ENUM,
     .def = "full",
     .help = "sync mode",
     .offset = offsetof(struct test_conf, mode),
     .choices = modes},
    {0},
};

#define TEST_NAMES                                                                                 \
    "name, token, workers, verbose, poll_interval, buffer, topics, properties, tls, mode"

/* ---- helpers ------------------------------------------------------------------ */

static struct sk_cnode *load(const char *text, struct sk_config_errors *errs)
{
    return sk_config_load_string(text, strlen(text), "t.yaml", errs);
}

static char *all_errors(const struct sk_config_errors *errs)
{
    size_t len = 1;
    for (size_t i = 0; i < errs->n; i++)
        len += strlen(errs->v[i].text) + 1;
    char *out = calloc(1, len);
    for (size_t i = 0; i < errs->n; i++) {
        strcat(out, errs->v[i].text);
        strcat(out, "\n");
    }
    return out;
}

/* Exactly these error lines, in this order. */
static void expect_errors(const struct sk_config_errors *errs, size_t n, const char *const *want)
{
    char *got = all_errors(errs);
    cr_assert_eq(errs->n, n, "expected %zu errors, got %zu:\n%s", n, errs->n, got);
    for (size_t i = 0; i < n; i++)
        cr_assert_str_eq(errs->v[i].text, want[i], "error %zu differs; all errors:\n%s", i, got);
    free(got);
}

#define EXPECT_ERRORS(errs, ...)                                                                   \
    do {                                                                                           \
        const char *const want_[] = {__VA_ARGS__};                                                 \
        expect_errors((errs), sizeof(want_) / sizeof(want_[0]), want_);                            \
    } while (0)

static void expect_no_errors(const struct sk_config_errors *errs)
{
    char *got = all_errors(errs);
    cr_assert_eq(errs->n, 0, "expected no errors, got:\n%s", got);
    free(got);
}

static void expect_secret_hidden(const struct sk_config_errors *errs, const char *secret)
{
    cr_assert_gt(errs->n, 0, "expected an error");
    for (size_t i = 0; i < errs->n; i++)
        cr_assert_null(strstr(errs->v[i].text, secret), "secret leaked into: %s", errs->v[i].text);
}

/* Loads text, applies test_options to the root and checks the error lines. */
static int apply_root(const char *text, struct test_conf *conf, struct sk_config_errors *errs)
{
    struct sk_cnode *root = load(text, errs);
    cr_assert_not_null(root);
    int n = sk_options_apply(test_options, root, conf, errs);
    sk_cnode_free(root);
    return n;
}

static const struct sk_cnode *at(const struct sk_cnode *root, const char *a, const char *b)
{
    const struct sk_cnode *n = sk_cnode_get(root, a);
    return b ? sk_cnode_get(n, b) : n;
}

/* ---- valid files ------------------------------------------------------------- */

Test(config, valid_file_fills_every_option_type)
{
    setenv("SK_TEST_TOKEN", "tok-123", 1);
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = sk_config_load(FIXTURES "valid.yaml", &errs);
    expect_no_errors(&errs);
    cr_assert_not_null(root);

    const struct sk_cnode *opts = at(at(root, "sources", "hr"), "options", NULL);
    cr_assert_not_null(opts);
    struct test_conf conf = {0};
    cr_assert_eq(sk_options_apply(test_options, opts, &conf, &errs), 0);
    expect_no_errors(&errs);

    cr_assert_str_eq(conf.name, "hr-system");
    cr_assert_str_eq(conf.token, "tok-123");
    cr_assert_eq(conf.workers, 8);
    cr_assert(conf.verbose);
    cr_assert_eq(conf.poll_interval_ms, 90 * 60 * 1000);
    cr_assert_eq(conf.buffer, 64 * 1024);
    cr_assert_eq(conf.topics.n, 2);
    cr_assert_str_eq(conf.topics.v[0], "persons");
    cr_assert_str_eq(conf.topics.v[1], "groups");
    cr_assert_eq(conf.properties.n, 3);
    cr_assert_str_eq(conf.properties.keys[0], "acks");
    cr_assert_str_eq(conf.properties.values[0], "all");
    cr_assert_not(conf.properties.secret[0]);
    cr_assert_str_eq(conf.properties.keys[1], "sasl.password");
    cr_assert_str_eq(conf.properties.values[1], "s3cr3t-from-file"); /* newline stripped */
    cr_assert(conf.properties.secret[1]);
    cr_assert_str_eq(conf.properties.values[2], "Bearer tok-123");
    cr_assert(conf.properties.secret[2]);
    cr_assert(conf.tls.enabled);
    cr_assert_str_eq(conf.tls.ca, "/etc/ssl/ca.pem");
    cr_assert_eq(conf.tls.handshake_timeout_ms, 10000); /* default inside a given group */
    cr_assert_str_eq(conf.mode, "incremental");

    /* Positions: a map entry is where its key is; value_line/col where the value is. */
    const struct sk_cnode *workers = sk_cnode_get(opts, "workers");
    cr_assert_eq(workers->line, 8);
    cr_assert_eq(workers->col, 7);
    cr_assert_eq(workers->value_line, 8);
    cr_assert_eq(workers->value_col, 16);
    cr_assert_str_eq(workers->file, FIXTURES "valid.yaml");

    /* Secrets are flagged and displayed masked; plain values are shown. */
    const struct sk_cnode *token = sk_cnode_get(opts, "token");
    cr_assert(token->secret);
    cr_assert_str_eq(sk_cnode_display(token), "********");
    cr_assert_not(workers->secret);
    cr_assert_str_eq(sk_cnode_display(workers), "8");

    /* Sequences: paths with indices, and the $${ escape. */
    const struct sk_cnode *sinks = sk_cnode_get(root, "sinks");
    cr_assert_eq(sinks->kind, SK_CNODE_SEQ);
    cr_assert_eq(sinks->n_kids, 2);
    const struct sk_cnode *path = sk_cnode_get(sinks->kids[1], "path");
    cr_assert_str_eq(path->value, "literal ${not_a_var} and $$ alone");
    cr_assert_not(path->secret, "an escape is not a substitution");
    char *p = sk_cnode_path(path);
    cr_assert_str_eq(p, "sinks[1].path");
    free(p);
    p = sk_cnode_path(sk_cnode_get(opts, "poll_interval"));
    cr_assert_str_eq(p, "sources.hr.options.poll_interval");
    free(p);

    sk_options_free(test_options, &conf);
    cr_assert_null(conf.name);
    cr_assert_null(conf.properties.keys);
    cr_assert_null(conf.tls.ca);
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
}

Test(config, defaults_apply_for_absent_keys)
{
    struct sk_config_errors errs = {0};
    struct test_conf conf = {0};
    cr_assert_eq(apply_root("name: x\n", &conf, &errs), 0);
    expect_no_errors(&errs);
    cr_assert_null(conf.token);
    cr_assert_eq(conf.workers, 4);
    cr_assert_not(conf.verbose);
    cr_assert_eq(conf.poll_interval_ms, 30000);
    cr_assert_eq(conf.buffer, 1024 * 1024);
    cr_assert_eq(conf.topics.n, 3);
    cr_assert_str_eq(conf.topics.v[2], "duties");
    cr_assert_eq(conf.properties.n, 2);
    cr_assert_str_eq(conf.properties.keys[1], "linger.ms");
    cr_assert_str_eq(conf.properties.values[1], "5");
    /* an absent group gets its own defaults */
    cr_assert_not(conf.tls.enabled);
    cr_assert_null(conf.tls.ca);
    cr_assert_eq(conf.tls.handshake_timeout_ms, 10000);
    cr_assert_str_eq(conf.mode, "full");
    sk_options_free(test_options, &conf);
    sk_config_errors_free(&errs);
}

Test(config, null_value_means_default)
{
    struct sk_config_errors errs = {0};
    struct test_conf conf = {0};
    cr_assert_eq(apply_root("name: x\nworkers:\npoll_interval: ~\ntls:\n", &conf, &errs), 0);
    expect_no_errors(&errs);
    cr_assert_eq(conf.workers, 4);
    cr_assert_eq(conf.poll_interval_ms, 30000);
    cr_assert_eq(conf.tls.handshake_timeout_ms, 10000);
    sk_options_free(test_options, &conf);
    sk_config_errors_free(&errs);
}

Test(config, list_from_a_single_scalar)
{
    struct sk_config_errors errs = {0};
    struct test_conf conf = {0};
    cr_assert_eq(apply_root("name: x\ntopics: persons\n", &conf, &errs), 0);
    cr_assert_eq(conf.topics.n, 1);
    cr_assert_str_eq(conf.topics.v[0], "persons");
    sk_options_free(test_options, &conf);
    sk_config_errors_free(&errs);
}

Test(config, list_items_must_be_scalars)
{
    struct sk_config_errors errs = {0};
    struct test_conf conf = {0};
    cr_assert_eq(apply_root("name: x\ntopics:\n  - a\n  - {b: c}\n  - d\n", &conf, &errs), 1);
    EXPECT_ERRORS(&errs, "t.yaml:4:5: topics[1]: got a map (expected a string)");
    cr_assert_eq(conf.topics.n, 2);
    cr_assert_str_eq(conf.topics.v[1], "d");
    sk_options_free(test_options, &conf);
    sk_config_errors_free(&errs);
}

/* A key or value from the file is quoted in errors: its control characters
 * are escaped, so `check` prints one line per error and drives no terminal. */
Test(config, control_characters_in_errors_are_escaped)
{
    struct sk_config_errors errs = {0};
    struct test_conf conf = {0};
    const char *text = "name: x\n"
                       "\"k\\e[2J\\nX\\r\\x7f\\t\": 1\n"
                       "workers: \"\\e]0;title\\a\"\n";
    cr_assert_eq(apply_root(text, &conf, &errs), 2);
    EXPECT_ERRORS(&errs,
                  "t.yaml:2:1: k\\x1b[2J\\nX\\r\\x7f\\t: unknown option "
                  "\"k\\x1b[2J\\nX\\r\\x7f\\t\" (expected one of: " TEST_NAMES ")",
                  "t.yaml:3:1: workers: \"\\x1b]0;title\\x07\" is not an integer (expected e.g. "
                  "42)");
    sk_options_free(test_options, &conf);
    sk_config_errors_free(&errs);
}

/* A required string given as "" is as good as missing (a sqlite-sink's
 * `path: ""` passed check and wrote to a temporary database). */
Test(config, required_string_may_not_be_empty)
{
    struct sk_config_errors errs = {0};
    struct test_conf conf = {0};
    cr_assert_eq(apply_root("name: \"\"\ntls:\n  ca: ''\n", &conf, &errs), 1);
    EXPECT_ERRORS(&errs, "t.yaml:1:1: name: empty value (expected a non-empty string)");
    cr_assert_str_eq(conf.tls.ca, "", "an optional string may be empty");
    sk_options_free(test_options, &conf);
    sk_config_errors_free(&errs);
}

/* A NUL in a quoted key once cut the key short ("pa\0th" became "pa", and
 * so any option it liked); keys are checked as values are. */
Test(config, nul_in_key_or_value_is_an_error)
{
    struct sk_config_errors errs = {0};
    const char *text = "a:\n  \"name\\0x\": 1\n  b: \"v\\0w\"\n";
    struct sk_cnode *root = load(text, &errs);
    EXPECT_ERRORS(&errs, "t.yaml:2:3: a.name: the key contains a NUL character (expected text)",
                  "t.yaml:3:3: a.b: the value contains a NUL character (expected text)");
    cr_assert_null(at(root, "a", "name"), "the value under the cut key is dropped");
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
}

Test(config, group_recursion_reports_nested_paths)
{
    struct sk_config_errors errs = {0};
    struct test_conf conf = {0};
    const char *text = "name: x\n"
                       "tls:\n"
                       "  enabled: maybe\n"
                       "  handshake_timeout: 2m\n"
                       "  cert: /x\n";
    cr_assert_eq(apply_root(text, &conf, &errs), 3);
    EXPECT_ERRORS(&errs,
                  "t.yaml:5:3: tls.cert: unknown option \"cert\" (expected one of: enabled, ca, "
                  "handshake_timeout)",
                  "t.yaml:3:3: tls.enabled: \"maybe\" is not a boolean (expected true/false, "
                  "yes/no or on/off)",
                  "t.yaml:4:3: tls.handshake_timeout: \"2m\" is out of range (expected 1s to 1m)");
    sk_options_free(test_options, &conf);
    sk_config_errors_free(&errs);
}

Test(config, required_option_inside_absent_group_is_reported)
{
    static const struct sk_option inner[] = {
        {.name = "url", .type = SK_OPT_STRING, .required = true, .offset = 0},
        {0},
    };
    static const struct sk_option outer[] = {
        {.name = "api", .type = SK_OPT_GROUP, .offset = 0, .sub = inner},
        {0},
    };
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = load("sources:\n  hr:\n    other: 1\n", &errs);
    char *conf[1] = {NULL};
    const struct sk_cnode *hr = at(root, "sources", "hr");
    cr_assert_eq(sk_options_apply(outer, hr, conf, &errs), 2);
    EXPECT_ERRORS(
        &errs, "t.yaml:3:5: sources.hr.other: unknown option \"other\" (expected one of: api)",
        "t.yaml:2:3: sources.hr: missing required option \"api.url\" (expected a string)");
    sk_options_free(outer, conf);
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
}

/* A map of groups (SK_OPT_GROUPS): each entry validated by the nested table into
 * a struct of its own, every mistake at its own line and column. */
struct test_client {
    char *token;
    struct sk_strlist orgs;
    int64_t limit;
};

static const struct sk_option client_options[] = {
    {.name = "token",
     .type = SK_OPT_SECRET,
     .required = true,
     .offset = offsetof(struct test_client, token)},
    {.name = "orgs", .type = SK_OPT_LIST, .offset = offsetof(struct test_client, orgs)},
    {.name = "limit",
     .type = SK_OPT_INT,
     .def = "7",
     .min = 1,
     .max = 9,
     .offset = offsetof(struct test_client, limit)},
    {0},
};

Test(config, map_of_groups)
{
    static const struct sk_option outer[] = {
        {.name = "clients",
         .type = SK_OPT_GROUPS,
         .offset = 0,
         .sub = client_options,
         .sub_size = sizeof(struct test_client)},
        {0},
    };
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = load("clients:\n  a: {token: x, orgs: [o1, o2]}\n"
                                 "  b:\n    token: y\n    limit: 3\n",
                                 &errs);
    struct sk_groupmap clients = {0};
    cr_assert_eq(sk_options_apply(outer, root, &clients, &errs), 0, "%s", all_errors(&errs));
    cr_assert_eq(clients.n, 2);
    cr_assert_str_eq(clients.keys[0], "a");
    cr_assert_str_eq(clients.keys[1], "b");
    const struct test_client *a = sk_groupmap_at(&clients, &outer[0], 0);
    const struct test_client *b = sk_groupmap_at(&clients, &outer[0], 1);
    cr_assert_str_eq(a->token, "x");
    cr_assert_eq(a->orgs.n, 2);
    cr_assert_str_eq(a->orgs.v[1], "o2");
    cr_assert_eq(a->limit, 7, "the default applies per entry");
    cr_assert_str_eq(b->token, "y");
    cr_assert_eq(b->limit, 3);
    sk_options_free(outer, &clients);
    cr_assert_eq(clients.n, 0);
    sk_cnode_free(root);

    root = load("clients:\n  a: {orgs: o1}\n  b: 5\n  c:\n    token: z\n    limit: 10\n"
                "    tokn: q\n",
                &errs);
    cr_assert_eq(sk_options_apply(outer, root, &clients, &errs), 4);
    EXPECT_ERRORS(&errs,
                  "t.yaml:2:3: clients.a: missing required option \"token\" (expected a "
                  "secret, e.g. ${env:NAME} or ${file:PATH})",
                  "t.yaml:3:3: clients.b: got a single value (expected a map of options)",
                  "t.yaml:7:5: clients.c.tokn: unknown option \"tokn\" (expected one of: token, "
                  "orgs, limit)",
                  "t.yaml:6:5: clients.c.limit: \"10\" is out of range (expected 1 to 9)");
    sk_options_free(outer, &clients);
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
}

/* ---- option errors, one class per test ------------------------------------------ */

Test(config, four_mistakes_give_four_errors)
{
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = sk_config_load(FIXTURES "four_errors.yaml", &errs);
    cr_assert_not_null(root);
    struct test_conf conf = {0};
    cr_assert_eq(sk_options_apply(test_options, root, &conf, &errs), 4);
    EXPECT_ERRORS(&errs,
                  FIXTURES "four_errors.yaml:3:1: pol_interval: unknown option \"pol_interval\" "
                           "(expected one of: " TEST_NAMES ")",
                  FIXTURES
                  "four_errors.yaml:4:1: workers: \"0\" is out of range (expected 1 to 64)",
                  FIXTURES "four_errors.yaml:5:1: buffer: \"ten\" is not a size (expected e.g. "
                           "512, 64KiB, 10MB)",
                  FIXTURES "four_errors.yaml:6:1: mode: \"fast\" is not a valid choice (expected "
                           "one of: full, incremental)");
    sk_options_free(test_options, &conf);
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
}

Test(config, missing_required_points_at_the_map)
{
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = load("sources:\n  hr:\n    options:\n      workers: 2\n", &errs);
    struct test_conf conf = {0};
    const struct sk_cnode *opts = at(at(root, "sources", "hr"), "options", NULL);
    cr_assert_eq(sk_options_apply(test_options, opts, &conf, &errs), 1);
    EXPECT_ERRORS(&errs, "t.yaml:3:5: sources.hr.options: missing required option \"name\" "
                         "(expected a string)");
    sk_options_free(test_options, &conf);
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
}

Test(config, required_option_left_empty)
{
    struct sk_config_errors errs = {0};
    struct test_conf conf = {0};
    cr_assert_eq(apply_root("name:\n", &conf, &errs), 1);
    EXPECT_ERRORS(&errs, "t.yaml:1:1: name: no value (expected a string)");
    sk_options_free(test_options, &conf);
    sk_config_errors_free(&errs);
}

Test(config, wrong_types)
{
    struct sk_config_errors errs = {0};
    struct test_conf conf = {0};
    const char *text = "name: [a, b]\n"
                       "workers: {n: 1}\n"
                       "topics: {a: b}\n"
                       "properties: [a]\n"
                       "tls: yes\n";
    cr_assert_eq(apply_root(text, &conf, &errs), 5);
    EXPECT_ERRORS(&errs, "t.yaml:1:1: name: got a sequence (expected a string)",
                  "t.yaml:2:1: workers: got a map (expected an integer)",
                  "t.yaml:3:1: topics: got a map (expected a list of strings)",
                  "t.yaml:4:1: properties: got a sequence (expected a map of key: value)",
                  "t.yaml:5:1: tls: got a single value (expected a map of options)");
    /* a wrong group still gets its defaults */
    cr_assert_eq(conf.tls.handshake_timeout_ms, 10000);
    sk_options_free(test_options, &conf);
    sk_config_errors_free(&errs);
}

Test(config, bad_values_of_each_kind)
{
    struct sk_config_errors errs = {0};
    struct test_conf conf = {0};
    const char *text = "name: x\n"
                       "workers: many\n"
                       "verbose: maybe\n"
                       "poll_interval: 5 minutes\n"
                       "buffer: -1\n";
    cr_assert_eq(apply_root(text, &conf, &errs), 4);
    EXPECT_ERRORS(&errs, "t.yaml:2:1: workers: \"many\" is not an integer (expected e.g. 42)",
                  "t.yaml:3:1: verbose: \"maybe\" is not a boolean (expected true/false, yes/no "
                  "or on/off)",
                  "t.yaml:4:1: poll_interval: \"5 minutes\" is not a duration (expected e.g. "
                  "30s, 5m, 24h)",
                  "t.yaml:5:1: buffer: \"-1\" is not a size (expected e.g. 512, 64KiB, 10MB)");
    sk_options_free(test_options, &conf);
    sk_config_errors_free(&errs);
}

Test(config, bounds)
{
    struct sk_config_errors errs = {0};
    struct test_conf conf = {0};
    cr_assert_eq(apply_root("name: x\nworkers: 64\npoll_interval: 1s\n", &conf, &errs), 0);
    cr_assert_eq(conf.workers, 64);
    cr_assert_eq(conf.poll_interval_ms, 1000);
    sk_options_free(test_options, &conf);

    struct test_conf conf2 = {0};
    const char *text = "name: x\nworkers: 65\npoll_interval: 999ms\n"
                       "buffer: 99999999999999999999\n";
    cr_assert_eq(apply_root(text, &conf2, &errs), 3);
    EXPECT_ERRORS(&errs, "t.yaml:2:1: workers: \"65\" is out of range (expected 1 to 64)",
                  "t.yaml:3:1: poll_interval: \"999ms\" is out of range (expected 1s to 1d)",
                  "t.yaml:4:1: buffer: \"99999999999999999999\" is too large (expected a size "
                  "that fits in 64 bits)");
    sk_options_free(test_options, &conf2);
    sk_config_errors_free(&errs);
}

Test(config, unknown_key_in_sequence_item)
{
    static const struct sk_option sink_options[] = {
        {.name = "name", .type = SK_OPT_STRING, .offset = 0},
        {.name = "path", .type = SK_OPT_STRING, .offset = sizeof(char *)},
        {0},
    };
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = load("sinks:\n  - name: a\n  - name: b\n    pth: /x\n", &errs);
    const struct sk_cnode *sinks = sk_cnode_get(root, "sinks");
    char *conf[2] = {NULL, NULL};
    cr_assert_eq(sk_options_apply(sink_options, sinks->kids[1], conf, &errs), 1);
    EXPECT_ERRORS(&errs, "t.yaml:4:5: sinks[1].pth: unknown option \"pth\" (expected one of: "
                         "name, path)");
    sk_options_free(sink_options, conf);
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
}

Test(config, options_on_a_non_map)
{
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = load("options: 3\n", &errs);
    struct test_conf conf = {0};
    cr_assert_eq(sk_options_apply(test_options, sk_cnode_get(root, "options"), &conf, &errs), 1);
    EXPECT_ERRORS(&errs, "t.yaml:1:1: options: got a single value (expected a map of options)");
    sk_options_free(test_options, &conf);
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
}

/* ---- substitution -------------------------------------------------------------- */

Test(config, env_substitution_inside_text)
{
    setenv("SK_T_USER", "alice", 1);
    setenv("SK_T_HOST", "db.example", 1);
    struct sk_config_errors errs = {0};
    struct sk_cnode *root =
        load("dsn: \"postgres://${env:SK_T_USER}@${env:SK_T_HOST}/x\"\nplain: a$b\n", &errs);
    expect_no_errors(&errs);
    const struct sk_cnode *dsn = sk_cnode_get(root, "dsn");
    cr_assert_str_eq(dsn->value, "postgres://alice@db.example/x");
    cr_assert(dsn->secret);
    cr_assert_str_eq(sk_cnode_display(dsn), "********");
    const struct sk_cnode *plain = sk_cnode_get(root, "plain");
    cr_assert_str_eq(plain->value, "a$b");
    cr_assert_not(plain->secret);
    sk_cnode_free(root);
}

Test(config, missing_env_var)
{
    unsetenv("SK_T_NOPE");
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = load("kafka:\n  password: \"x${env:SK_T_NOPE}\"\n", &errs);
    cr_assert_not_null(root, "a tree comes back with substitution errors");
    EXPECT_ERRORS(&errs, "t.yaml:2:3: kafka.password: environment variable SK_T_NOPE is not set");
    cr_assert(at(root, "kafka", "password")->secret);
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
}

Test(config, file_substitution_relative_to_config_dir)
{
    struct sk_config_errors errs = {0};
    const char *text = "a: ${file:secret.txt}\nb: ${file:two_newlines.txt}\n";
    struct sk_cnode *root =
        sk_config_load_string(text, strlen(text), FIXTURES "inline.yaml", &errs);
    expect_no_errors(&errs);
    cr_assert_str_eq(sk_cnode_get(root, "a")->value, "s3cr3t-from-file");
    cr_assert_str_eq(sk_cnode_get(root, "b")->value, "two-newlines\n", "only one newline goes");
    cr_assert(sk_cnode_get(root, "a")->secret);
    sk_cnode_free(root);
}

Test(config, unreadable_file_substitution)
{
    struct sk_config_errors errs = {0};
    const char *text = "a:\n  b: \"key=${file:nope.txt}\"\n";
    struct sk_cnode *root = sk_config_load_string(text, strlen(text), "/etc/sk/c.yaml", &errs);
    EXPECT_ERRORS(&errs, "/etc/sk/c.yaml:2:3: a.b: cannot read file \"/etc/sk/nope.txt\": No such "
                         "file or directory (expected ${file:nope.txt} to name a readable file)");
    cr_assert(at(root, "a", "b")->secret);
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
}

/* A FIFO (or a device) as ${file:} would block the loader, and a SIGHUP
 * reload with it the daemon's main loop: refused at once, as is a directory. */
Test(config, file_substitution_of_a_fifo_is_refused_at_once, .timeout = 10)
{
    char dir[] = "/tmp/sk-cfg-fifo-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char fifo[64], yaml[64];
    snprintf(fifo, sizeof(fifo), "%s/secret", dir);
    snprintf(yaml, sizeof(yaml), "%s/c.yaml", dir);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    struct sk_config_errors errs = {0};
    const char *text = "a: ${file:secret}\nb: ${file:.}\n";
    struct sk_cnode *root = sk_config_load_string(text, strlen(text), yaml, &errs);
    char *want_a = sk_asprintf("%s:1:1: a: file \"%s/secret\" is not a regular file (expected "
                               "${file:secret} to name a readable file, not a FIFO, device or "
                               "directory)",
                               yaml, dir);
    char *want_b = sk_asprintf("%s:2:1: b: file \"%s/.\" is not a regular file (expected "
                               "${file:.} to name a readable file, not a FIFO, device or "
                               "directory)",
                               yaml, dir);
    EXPECT_ERRORS(&errs, want_a, want_b);
    sk_config_errors_free(&errs);
    sk_cnode_free(root);

    /* The configuration itself (-c FIFO) likewise. */
    cr_assert_null(sk_config_load(fifo, &errs));
    char *want_c = sk_asprintf("%s: the configuration is not a regular file (expected a readable "
                               "YAML file, not a FIFO, device or directory)",
                               fifo);
    EXPECT_ERRORS(&errs, want_c);
    sk_config_errors_free(&errs);
    free(want_a);
    free(want_b);
    free(want_c);
    unlink(fifo);
    rmdir(dir);
}

Test(config, unknown_and_unterminated_substitutions)
{
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = load("a: ${foo:bar}\nb: ${env:X\nc: ${env:}\n", &errs);
    EXPECT_ERRORS(&errs,
                  "t.yaml:1:1: a: unknown substitution at character 1 of the value (expected "
                  "${env:NAME} or ${file:PATH}; write $${ for a literal ${)",
                  "t.yaml:2:1: b: unterminated \"${\" (expected ${env:NAME} or ${file:PATH}; "
                  "write $${ for a literal ${)",
                  "t.yaml:3:1: c: empty name in ${env:} (expected ${env:NAME})");
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
}

/* A literal password that happens to hold "${" is no reference: the error
 * says where, not what (it once quoted "${ssW0rd-secret-part}"). */
Test(config, unknown_substitution_does_not_quote_the_value)
{
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = load("token: \"pa${ssW0rd-secret-part}\"\n", &errs);
    EXPECT_ERRORS(&errs, "t.yaml:1:1: token: unknown substitution at character 3 of the value "
                         "(expected ${env:NAME} or ${file:PATH}; write $${ for a literal ${)");
    expect_secret_hidden(&errs, "ssW0rd");
    cr_assert(sk_cnode_get(root, "token")->secret);
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
}

/* The admin commands leave the connectors' references unread ("keep"): the
 * escape $${ is no reference there either (`status` once refused a path that
 * `check` passed), and is written out as a full load does. */
Test(config, keeping_references_knows_the_escape)
{
    char dir[] = "/tmp/sk-cfg-keep-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof(path), "%s/c.yaml", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("sinks:\n"
          "  db:\n"
          "    path: /data/cost$${x}\n"
          "    token: ${env:SK_T_KEEP_UNSET}\n"
          "    mixed: $${a}${env:SK_T_KEEP_UNSET}\n",
          f);
    fclose(f);
    unsetenv("SK_T_KEEP_UNSET");
    static const char *const keep[] = {"sinks", NULL};
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = sk_config_load_keeping(path, keep, &errs);
    expect_no_errors(&errs);
    const struct sk_cnode *db = at(root, "sinks", "db");
    cr_assert_not(sk_cnode_get(db, "path")->secret);
    cr_assert_str_eq(sk_cnode_get(db, "path")->value, "/data/cost${x}");
    cr_assert(sk_cnode_get(db, "token")->secret);
    cr_assert_str_eq(sk_cnode_get(db, "token")->value, "${env:SK_T_KEEP_UNSET}");
    cr_assert(sk_cnode_get(db, "mixed")->secret);
    cr_assert_str_eq(sk_cnode_get(db, "mixed")->value, "$${a}${env:SK_T_KEEP_UNSET}");
    sk_cnode_free(root);
    unlink(path);
    rmdir(dir);
}

Test(config, secret_never_printed)
{
    /* Values that fail every parser, delivered through ${env:}. */
    setenv("SK_T_SECRET_DUR", "hunter2-duration", 1);
    setenv("SK_T_SECRET_INT", "hunter2-int", 1);
    setenv("SK_T_SECRET_BIG", "4242424242", 1);
    setenv("SK_T_SECRET_BOOL", "hunter2-bool", 1);
    setenv("SK_T_SECRET_SIZE", "hunter2-size", 1);
    setenv("SK_T_SECRET_MODE", "hunter2-mode", 1);
    const char *text = "name: x\n"
                       "poll_interval: ${env:SK_T_SECRET_DUR}\n"
                       "workers: ${env:SK_T_SECRET_INT}\n"
                       "verbose: \"${env:SK_T_SECRET_BOOL}\"\n"
                       "buffer: pre-${env:SK_T_SECRET_SIZE}\n"
                       "mode: ${env:SK_T_SECRET_MODE}\n"
                       "tls:\n"
                       "  handshake_timeout: ${env:SK_T_SECRET_BIG}\n";
    struct sk_config_errors errs = {0};
    struct test_conf conf = {0};
    /* A reference outside a secret field is refused before its value is
     * parsed, so no message can show it. */
    cr_assert_eq(apply_root(text, &conf, &errs), 6);
    EXPECT_ERRORS(&errs, "t.yaml:3:1: workers: " REFUSED, "t.yaml:4:1: verbose: " REFUSED,
                  "t.yaml:2:1: poll_interval: " REFUSED, "t.yaml:5:1: buffer: " REFUSED,
                  "t.yaml:8:3: tls.handshake_timeout: " REFUSED, "t.yaml:6:1: mode: " REFUSED);
    expect_secret_hidden(&errs, "hunter2");
    expect_secret_hidden(&errs, "4242424242");
    sk_options_free(test_options, &conf);
    sk_config_errors_free(&errs);
}

Test(config, secret_option_written_as_literal_is_accepted_and_hidden)
{
    struct sk_config_errors errs = {0};
    struct test_conf conf = {0};
    cr_assert_eq(apply_root("name: x\ntoken: plain-literal-token\n", &conf, &errs), 0);
    cr_assert_str_eq(conf.token, "plain-literal-token");
    sk_options_free(test_options, &conf);

    /* A secret-typed option whose literal breaks an enum-like rule is still masked. */
    static const char *const secret_choices[] = {"a", NULL};
    static const struct sk_option t[] = {
        {.name = "token", .type = SK_OPT_SECRET, .offset = 0},
        {.name = "key", .type = SK_OPT_ENUM, .offset = sizeof(char *), .choices = secret_choices},
        {0},
    };
    struct sk_cnode *root = load("token: [plain-literal-token]\nkey: ${env:SK_T_K}\n", &errs);
    cr_assert_eq(errs.n, 1); /* SK_T_K is unset */
    char *c[2] = {NULL, NULL};
    sk_options_apply(t, root, c, &errs);
    expect_secret_hidden(&errs, "plain-literal-token");
    EXPECT_ERRORS(&errs, "t.yaml:2:1: key: environment variable SK_T_K is not set",
                  "t.yaml:1:1: token: got a sequence (expected a secret, e.g. ${env:NAME} or "
                  "${file:PATH})",
                  "t.yaml:2:1: key: " REFUSED);
    sk_options_free(t, c);
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
}

/* ---- YAML structure --------------------------------------------------------------- */

Test(config, yaml_syntax_error_position)
{
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = sk_config_load(FIXTURES "syntax_error.yaml", &errs);
    cr_assert_null(root);
    EXPECT_ERRORS(&errs, FIXTURES "syntax_error.yaml:3:8: did not find expected ',' or ']' "
                                  "(while parsing a flow sequence)");
    sk_config_errors_free(&errs);

    root = load("a: b: c\n", &errs);
    cr_assert_null(root);
    EXPECT_ERRORS(&errs, "t.yaml:1:5: mapping values are not allowed in this context");
    sk_config_errors_free(&errs);
}

Test(config, duplicate_key)
{
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = sk_config_load(FIXTURES "duplicate_key.yaml", &errs);
    cr_assert_not_null(root);
    EXPECT_ERRORS(&errs, FIXTURES "duplicate_key.yaml:4:3: kafka.brokers: duplicate key "
                                  "\"brokers\" (first defined at line 2, column 3)");
    /* the first one stays */
    cr_assert_str_eq(at(root, "kafka", "brokers")->value, "localhost:9092");
    cr_assert_eq(sk_cnode_get(root, "kafka")->n_kids, 2);
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
}

Test(config, alias_and_anchor_rejected)
{
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = sk_config_load(FIXTURES "alias.yaml", &errs);
    EXPECT_ERRORS(&errs,
                  FIXTURES "alias.yaml:1:1: defaults: anchors and aliases are not supported "
                           "(expected the value written out in full)",
                  FIXTURES "alias.yaml:4:3: sources.hr: aliases (*defaults) are not supported "
                           "(expected the value written out in full)");
    cr_assert_null(at(root, "sources", "hr"), "an alias adds no value");
    sk_cnode_free(root);
    sk_config_errors_free(&errs);

    /* An anchor on a key, and an alias as a key (its value is dropped). */
    root = load("m:\n  &k a: 1\n  *k : 2\n  b: 3\n", &errs);
    EXPECT_ERRORS(&errs,
                  "t.yaml:2:3: m.a: anchors and aliases are not supported (expected the value "
                  "written out in full)",
                  "t.yaml:3:3: m: aliases (*k) are not supported (expected the value written out "
                  "in full)");
    cr_assert_eq(sk_cnode_get(root, "m")->n_kids, 2);
    cr_assert_str_eq(at(root, "m", "b")->value, "3");
    sk_cnode_free(root);
    sk_config_errors_free(&errs);

    /* In a sequence the later items keep their indices. */
    root = load("s:\n  - &a x\n  - *a\n  - c: *a\n", &errs);
    EXPECT_ERRORS(&errs,
                  "t.yaml:2:5: s[0]: anchors and aliases are not supported (expected the value "
                  "written out in full)",
                  "t.yaml:3:5: s[1]: aliases (*a) are not supported (expected the value written "
                  "out in full)",
                  "t.yaml:4:5: s[2].c: aliases (*a) are not supported (expected the value written "
                  "out in full)");
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
}

Test(config, tags)
{
    struct sk_config_errors errs = {0};
    struct sk_cnode *root =
        load("a: !!str 5\nb: !secret x\nc: !!python/object:os.system y\n", &errs);
    EXPECT_ERRORS(&errs,
                  "t.yaml:2:1: b: tag \"!secret\" is not supported (expected plain YAML without "
                  "tags)",
                  "t.yaml:3:1: c: tag \"tag:yaml.org,2002:python/object:os.system\" is not "
                  "supported (expected plain YAML without tags)");
    const struct sk_cnode *a = sk_cnode_get(root, "a");
    cr_assert_str_eq(a->value, "5");
    cr_assert(a->quoted, "!!str makes a string");
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
}

Test(config, multiple_documents)
{
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = load("a: 1\n---\nb: 2\n", &errs);
    EXPECT_ERRORS(&errs, "t.yaml:2:1: a second YAML document (expected a single document)");
    cr_assert_not_null(sk_cnode_get(root, "a"));
    cr_assert_null(sk_cnode_get(root, "b"));
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
}

Test(config, root_must_be_a_map)
{
    struct sk_config_errors errs = {0};
    cr_assert_null(load("- a\n- b\n", &errs));
    cr_assert_null(load("just text\n", &errs));
    EXPECT_ERRORS(&errs,
                  "t.yaml:1:1: the top level is a sequence (expected a map of settings, key: "
                  "value)",
                  "t.yaml:1:1: the top level is a single value (expected a map of settings, key: "
                  "value)");
    sk_config_errors_free(&errs);

    /* An empty file is an empty map; the tables then say what is missing. */
    struct sk_cnode *root = load("# nothing\n", &errs);
    cr_assert_not_null(root);
    cr_assert_eq(root->kind, SK_CNODE_MAP);
    cr_assert_eq(root->n_kids, 0);
    expect_no_errors(&errs);
    sk_cnode_free(root);
    root = load("---\n", &errs);
    cr_assert_not_null(root);
    cr_assert_eq(root->kind, SK_CNODE_MAP);
    expect_no_errors(&errs);
    sk_cnode_free(root);
}

Test(config, invalid_utf8_position)
{
    struct sk_config_errors errs = {0};
    cr_assert_null(load("a: 1\nbc: \xff\n", &errs));
    EXPECT_ERRORS(&errs, "t.yaml:2:5: invalid leading UTF-8 octet");
    sk_config_errors_free(&errs);
}

Test(config, empty_substitution_is_a_value_not_null)
{
    setenv("SK_T_EMPTY", "", 1);
    struct sk_config_errors errs = {0};
    struct test_conf conf = {0};
    cr_assert_eq(apply_root("name: x\ntoken: ${env:SK_T_EMPTY}\n", &conf, &errs), 0);
    expect_no_errors(&errs);
    cr_assert_str_eq(conf.token, "");
    sk_options_free(test_options, &conf);
}

Test(config, complex_key_rejected)
{
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = load("a:\n  ? [1, 2]\n  : 3\n  b: 4\n", &errs);
    EXPECT_ERRORS(&errs, "t.yaml:2:5: a: a sequence is used as a key (expected a plain key, key: "
                         "value)");
    cr_assert_eq(sk_cnode_get(root, "a")->n_kids, 1);
    cr_assert_str_eq(at(root, "a", "b")->value, "4");
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
}

Test(config, unreadable_config_file)
{
    struct sk_config_errors errs = {0};
    cr_assert_null(sk_config_load(FIXTURES "does-not-exist.yaml", &errs));
    EXPECT_ERRORS(&errs, FIXTURES "does-not-exist.yaml: cannot read the configuration: No such "
                                  "file or directory (expected a readable YAML file)");
    sk_config_errors_free(&errs);
}

Test(config, errors_add_formats)
{
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = load("sources:\n  hr:\n    url: x\n", &errs);
    sk_config_errors_add(&errs, at(at(root, "sources", "hr"), "url", NULL), "bad %s (expected %d)",
                         "url", 1);
    sk_config_errors_add_at(&errs, "f.yaml", 7, 9, "a.b", "oops");
    sk_config_errors_add_at(&errs, "f.yaml", 7, 9, NULL, "no path");
    EXPECT_ERRORS(&errs, "t.yaml:3:5: sources.hr.url: bad url (expected 1)",
                  "f.yaml:7:9: a.b: oops", "f.yaml:7:9: no path");
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
    cr_assert_eq(errs.n, 0);
}

/* ---- value parsers ----------------------------------------------------------------- */

Test(config, parse_duration)
{
    struct {
        const char *text;
        int64_t ms;
    } ok[] = {{"250ms", 250},    {"30s", 30000},     {"5m", 300000},
              {"24h", 86400000}, {"1d", 86400000},   {"30", 30000},
              {"0", 0},          {"1h30m", 5400000}, {"1d2h3m4s5ms", 93784005},
              {"1m30s", 90000}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t v = -1;
        cr_assert_eq(sk_parse_duration_ms(ok[i].text, &v), 0, "%s", ok[i].text);
        cr_assert_eq(v, ok[i].ms, "%s", ok[i].text);
    }
    const char *bad[] = {"", "-5s", "1.5h", "5 minutes", "30m1h", "1h30", "s", "5S", "1h1h", "5sm"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v;
        cr_assert_eq(sk_parse_duration_ms(bad[i], &v), -1, "%s", bad[i]);
    }
    int64_t v;
    cr_assert_eq(sk_parse_duration_ms("9223372036854775807", &v), -2);
    cr_assert_eq(sk_parse_duration_ms("999999999999999d", &v), -2);
    cr_assert_eq(sk_parse_duration_ms("99999999999999999999ms", &v), -2);
}

Test(config, parse_size)
{
    struct {
        const char *text;
        int64_t bytes;
    } ok[] = {{"512", 512},         {"512B", 512},
              {"64KiB", 65536},     {"10MiB", 10485760},
              {"1GiB", 1073741824}, {"10MB", 10000000},
              {"1KB", 1000},        {"2GB", 2000000000},
              {"10 MiB", 10485760}, {"0", 0}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t v = -1;
        cr_assert_eq(sk_parse_size(ok[i].text, &v), 0, "%s", ok[i].text);
        cr_assert_eq(v, ok[i].bytes, "%s", ok[i].text);
    }
    const char *bad[] = {"", "-1", "1.5MB", "ten", "10XB", "10 ", "MiB", "1 0"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v;
        cr_assert_eq(sk_parse_size(bad[i], &v), -1, "%s", bad[i]);
    }
    int64_t v;
    cr_assert_eq(sk_parse_size("9223372036854775807", &v), 0);
    cr_assert_eq(sk_parse_size("9223372036854775808", &v), -2);
    cr_assert_eq(sk_parse_size("9000000000GiB", &v), -2);
}

Test(config, parse_bool_and_int)
{
    const char *yes[] = {"true", "TRUE", "Yes", "on", "ON"};
    const char *no[] = {"false", "False", "no", "NO", "off"};
    for (size_t i = 0; i < 5; i++) {
        bool b = false;
        cr_assert_eq(sk_parse_bool(yes[i], &b), 0);
        cr_assert(b, "%s", yes[i]);
        cr_assert_eq(sk_parse_bool(no[i], &b), 0);
        cr_assert_not(b, "%s", no[i]);
    }
    bool b;
    cr_assert_eq(sk_parse_bool("1", &b), -1);
    cr_assert_eq(sk_parse_bool("y", &b), -1);
    cr_assert_eq(sk_parse_bool("", &b), -1);

    int64_t v;
    cr_assert_eq(sk_parse_int("-42", &v), 0);
    cr_assert_eq(v, -42);
    cr_assert_eq(sk_parse_int("+7", &v), 0);
    cr_assert_eq(v, 7);
    cr_assert_eq(sk_parse_int("4x", &v), -1);
    cr_assert_eq(sk_parse_int(" 4", &v), -1);
    cr_assert_eq(sk_parse_int("", &v), -1);
    cr_assert_eq(sk_parse_int("99999999999999999999", &v), -2);
}

Test(config, type_names)
{
    cr_assert_str_eq(sk_opt_type_name(SK_OPT_DURATION), "duration");
    cr_assert_str_eq(sk_opt_type_name(SK_OPT_SECRET), "secret");
    cr_assert_str_eq(sk_opt_type_name(SK_OPT_GROUP), "group");
    cr_assert_str_eq(sk_opt_type_name(SK_OPT_ENUM), "enum");
    cr_assert_str_eq(sk_opt_type_name(SK_OPT_GROUPS), "groups");
}

Test(config, invalid_default_is_reported_as_a_table_bug)
{
    static const struct sk_option t[] = {
        {.name = "n", .type = SK_OPT_INT, .def = "abc", .offset = 0},
        {.name = "m", .type = SK_OPT_MAP, .def = "[a]", .offset = sizeof(int64_t)},
        {0},
    };
    struct {
        int64_t n;
        struct sk_strmap m;
    } conf = {0};
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = load("", &errs);
    cr_assert_eq(sk_options_apply(t, root, &conf, &errs), 2);
    EXPECT_ERRORS(&errs,
                  "t.yaml:1:1: option \"n\" has an invalid default (expected an integer; this is "
                  "a bug in the option table)",
                  "t.yaml:1:1: option \"m\" has an invalid default (expected a map of key: value; "
                  "this is a bug in the option table)");
    sk_options_free(t, &conf);
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
}

/* Regression (hostile input): a reference in a path or a name put the file's
 * content into log lines ("cannot open: path /nonexistent/<content>"). */
Test(config, reference_outside_a_secret_field_is_refused)
{
    setenv("SK_T_SHADOW", "root:$6$hash:19000:0:99999:7:::", 1);
    struct sk_config_errors errs = {0};
    struct test_conf conf = {0};
    const char *text = "name: /nonexistent/${env:SK_T_SHADOW}\n"
                       "token: ${env:SK_T_SHADOW}\n";
    cr_assert_eq(apply_root(text, &conf, &errs), 1);
    EXPECT_ERRORS(&errs, "t.yaml:1:1: name: " REFUSED);
    expect_secret_hidden(&errs, "19000");
    cr_assert_null(conf.name, "the refused value must not reach the struct");
    cr_assert_str_eq(conf.token, "root:$6$hash:19000:0:99999:7:::");
    sk_options_free(test_options, &conf);
    sk_config_errors_free(&errs);
}

/*
 * Regression (hostile input #14): check was quadratic in the number of keys
 * of a map (duplicate check) and of aliases in a sequence (each error's path
 * searched its index): 100 000 keys took 35 s, 300 000 aliases 28 s. Both
 * are linear now; the timeout bounds them loosely (a quadratic loader takes
 * tens of seconds, the linear one well under one), the assertions check that
 * the answers stayed right at that size.
 */
Test(config, large_maps_and_alias_bombs_load_in_linear_time, .timeout = 20)
{
    struct sk_buf text = {0};
    sk_buf_puts(&text, "m:\n");
    for (int i = 0; i < 100000; i++)
        sk_buf_printf(&text, "  k%d: %d\n", i, i);
    sk_buf_puts(&text, "  k17: again\n"); /* line 100002 */
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = load(text.p, &errs);
    EXPECT_ERRORS(
        &errs,
        "t.yaml:100002:3: m.k17: duplicate key \"k17\" (first defined at line 19, column 3)");
    cr_assert_eq(sk_cnode_get(root, "m")->n_kids, 100000);
    cr_assert_str_eq(sk_cnode_get(sk_cnode_get(root, "m"), "k99999")->value, "99999");
    sk_cnode_free(root);
    sk_config_errors_free(&errs);

    sk_buf_reset(&text);
    sk_buf_puts(&text, "x: &a 1\nl:\n");
    for (int i = 0; i < 300000; i++)
        sk_buf_puts(&text, "  - *a\n");
    root = load(text.p, &errs);
    /* the anchor, then one error per alias: the first 1000 kept, the rest counted */
    cr_assert_eq(errs.n, SK_CONFIG_MAX_ERRORS);
    cr_assert_eq(errs.n + errs.more, 300001);
    cr_assert(strstr(errs.v[SK_CONFIG_MAX_ERRORS - 1].text, "l[998]: aliases (*a)"), "%s",
              errs.v[SK_CONFIG_MAX_ERRORS - 1].text);
    cr_assert_eq(sk_cnode_get(root, "l")->n_kids, 300000);
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
    sk_buf_free(&text);
}
