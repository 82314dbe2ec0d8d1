/*
 * fuzz_config.c: YAML text -> sk_config_load_string -> the tree -> an option
 * table with every option type (a group inside a group, a secret, bounds,
 * list/map defaults) -> sk_options_free. Also walks the tree's paths.
 *
 * Substitution runs with a fixed environment (set once, below) and a
 * ${file:} that can only read tests/fixtures/config/ (fopen_guard.c).
 * Property checked beyond "no crash": no error message ever shows a
 * secret's value (config.h: "Must never print a secret's value").
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fopen_guard.h"

#define FIXTURE_DIR SK_SOURCE_DIR "/tests/fixtures/config/"
#define ENV_SECRET "Zq9-env-secret-Xv7"
#define FILE_SECRET "s3cr3t-from-file" /* tests/fixtures/config/secret.txt */

struct inner {
    char *name;
    int64_t port;
};

struct group {
    char *host;      /* required */
    char *password;  /* secret */
    int64_t timeout; /* duration, bounded */
    struct inner inner;
};

struct conf {
    char *path;
    char *token;
    int64_t count;
    bool enabled;
    int64_t interval;
    int64_t max_size;
    struct sk_strlist entities;
    struct sk_strmap props;
    struct sk_strlist empty_list;
    char *mode;
    struct group group;
    struct group optional_group;
};

static const struct sk_option inner_options[] = {
    {"name", SK_OPT_STRING, "x", false, "a name", offsetof(struct inner, name)},
    {"port", SK_OPT_INT, "9092", false, "a port", offsetof(struct inner, port), .min = 1,
     .max = 65535},
    {0},
};

static const struct sk_option group_options[] = {
    {"host", SK_OPT_STRING, NULL, true, "required", offsetof(struct group, host)},
    {"password", SK_OPT_SECRET, NULL, false, "secret", offsetof(struct group, password)},
    {"timeout", SK_OPT_DURATION, "30s", false, "bounded", offsetof(struct group, timeout),
     .min = 100, .max = 3600000},
    {"inner", SK_OPT_GROUP, NULL, false, "nested", offsetof(struct group, inner),
     .sub = inner_options},
    {0},
};

static const struct sk_option options[] = {
    {"path", SK_OPT_STRING, NULL, true, "required string", offsetof(struct conf, path)},
    {"token", SK_OPT_SECRET, NULL, false, "secret", offsetof(struct conf, token)},
    {"count", SK_OPT_INT, "1000", false, "bounded int", offsetof(struct conf, count), .min = 1,
     .max = 1000000},
    {"enabled", SK_OPT_BOOL, "true", false, "bool", offsetof(struct conf, enabled)},
    {"interval", SK_OPT_DURATION, "5s", false, "duration", offsetof(struct conf, interval)},
    {"max_size", SK_OPT_SIZE, "1MiB", false, "size", offsetof(struct conf, max_size), .min = 1024,
     .max = 64LL << 20},
    {"entities", SK_OPT_LIST, "[persons, groups]", false, "list", offsetof(struct conf, entities)},
    {"props", SK_OPT_MAP, "{acks: all, linger.ms: 5}", false, "map", offsetof(struct conf, props)},
    {"empty_list", SK_OPT_LIST, "~", false, "list without default",
     offsetof(struct conf, empty_list)},
    {"mode", SK_OPT_ENUM, "full", false, "enum", offsetof(struct conf, mode),
     .choices = (const char *const[]){"full", "delta", NULL}},
    {"group", SK_OPT_GROUP, NULL, true, "required group", offsetof(struct conf, group),
     .sub = group_options},
    {"optional_group", SK_OPT_GROUP, NULL, false, "optional group",
     offsetof(struct conf, optional_group), .sub = group_options},
    {0},
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    sk_fuzz_allow_dir(FIXTURE_DIR);
    clearenv();
    setenv("SK_FUZZ_TOKEN", ENV_SECRET, 1);
    setenv("SK_FUZZ_EMPTY", "", 1);
    setenv("SK_FUZZ_PORT", "9092", 1);
    return 0;
}

static void check_no_secret(const struct sk_config_errors *errs, const char *secret,
                            const uint8_t *data, size_t size)
{
    if (memmem(data, size, secret, strlen(secret)))
        return; /* written in the input itself: not a leak */
    for (size_t i = 0; i < errs->n; i++) {
        if (strstr(errs->v[i].text, secret)) {
            fprintf(stderr, "secret leaked into an error: %s\n", errs->v[i].text);
            abort();
        }
    }
}

/* Paths and display of every node (what error messages are made of). */
static void walk(const struct sk_cnode *node, size_t *budget)
{
    if (!*budget)
        return;
    (*budget)--;
    free(sk_cnode_path(node));
    const char *shown = sk_cnode_display(node);
    if (node->secret && strcmp(shown, "********") != 0)
        abort();
    for (size_t i = 0; i < node->n_kids; i++)
        walk(node->kids[i], budget);
}

static void apply(const struct sk_cnode *map, struct sk_config_errors *errs)
{
    struct conf conf;
    memset(&conf, 0, sizeof(conf));
    sk_options_apply(options, map, &conf, errs);
    sk_options_free(options, &conf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sk_config_errors errs = {0};
    sk_fuzz_guard(1);
    struct sk_cnode *root =
        sk_config_load_string((const char *)data, size, FIXTURE_DIR "fuzz.yaml", &errs);
    if (!root && errs.n == 0) {
        fprintf(stderr, "no tree and no error\n");
        abort();
    }
    if (root) {
        if (root->kind != SK_CNODE_MAP)
            abort(); /* config.h: the root is a map */
        size_t budget = 10000;
        walk(root, &budget);
        apply(root, &errs);
        /* As daemon_config.c does for connector entries: every map one level down too. */
        for (size_t i = 0; i < root->n_kids && i < 64; i++)
            for (size_t k = 0; k < root->kids[i]->n_kids && k < 64; k++)
                if (root->kids[i]->kids[k]->kind == SK_CNODE_MAP)
                    apply(root->kids[i]->kids[k], &errs);
        apply(NULL, &errs);
    }
    check_no_secret(&errs, ENV_SECRET, data, size);
    check_no_secret(&errs, FILE_SECRET, data, size);
    sk_fuzz_guard(0);
    sk_cnode_free(root);
    sk_config_errors_free(&errs);
    return 0;
}
