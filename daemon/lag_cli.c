/*
 * lag_cli.c: `skolsync lag`, the command-line face of lag.c.
 *
 * Owns: option parsing, choosing where to ask (a broker, or the running
 * daemon's /api/v1/lag when the configuration names the embedded broker),
 * the --watch loop and the exit codes (docs/lag.md "Exit codes").
 * Must never: call exit() (tests run it in-process), or talk to the embedded
 * broker itself (it lives inside the daemon's process).
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api_client.h"
#include "daemon.h"
#include "lag.h"
#include "log.h"
#include "util.h"

enum {
    /* could not evaluate: broker or daemon not reachable, or an invalid
     * configuration (never 2, which says a group is in ERR) */
    LAG_EXIT_UNREACHABLE = 3,
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: skolsync lag [-c FILE | --brokers LIST] [--group G]... [--all-groups]\n"
            "                    [--json] [--watch [--interval 5s] [--count N]] [--window N]\n"
            "                    [--timeout 10s] [--stuck-after 60s] [--warn-after 60s]\n"
            "\n"
            "Consumer-group lag per group, topic and partition: committed offset, end\n"
            "offset (last stable offset), lag in records (transaction markers excluded),\n"
            "lag in seconds (age of the first unconsumed record, read, not estimated),\n"
            "members and a status (OK WARN ERR STALL STOP REWIND; docs/lag.md).\n"
            "\n"
            "  -c, --config FILE    brokers and the sinks' groups from FILE; with\n"
            "                       kafka.brokers: embedded, asks the running daemon at\n"
            "                       admin.listen (GET /api/v1/lag)\n"
            "  -b, --brokers LIST   ask these brokers (default: all skolsync-* groups)\n"
            "  -X KEY=VALUE         with --brokers: a librdkafka property, e.g.\n"
            "                       -X security.protocol=sasl_ssl (repeatable, like kcat)\n"
            "  -g, --group G        this group (repeatable)\n"
            "  -a, --all-groups     every group on the cluster\n"
            "  -j, --json           JSON instead of a table (docs/lag.md \"JSON\")\n"
            "  -w, --watch          keep sampling and redraw; statuses use the window\n"
            "  -i, --interval DUR   time between samples with --watch (default 5s)\n"
            "  -n, --count N        stop --watch after N samples\n"
            "      --window N       samples per status window (default 10)\n"
            "  -t, --timeout DUR    per broker request (default 10s)\n"
            "      --stuck-after DUR  no progress with lag this long: STALL/STOP (default 60s)\n"
            "      --warn-after DUR   oldest unconsumed record this old: WARN (default 60s)\n"
            "  -h, --help           this text\n"
            "\n"
            "Exit codes: 0 all OK, 1 some group WARN, 2 some group ERR (a partition\n"
            "STALL, STOP, REWIND or ERR), 3 could not evaluate (broker or daemon\n"
            "unreachable, invalid configuration), 64 bad command line.\n");
}

struct lag_args {
    const char *config, *brokers;
    struct sk_strmap props; /* -X key=value */
    const char **groups;
    size_t n_groups;
    bool all_groups, json, watch;
    int64_t interval_ms, count, timeout_ms;
    struct sk_lag_rules rules;
};

static void props_free(struct sk_strmap *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->keys[i]);
        free(m->values[i]);
    }
    free(m->keys);
    free(m->values);
}

static int parse_duration(const char *what, const char *text, int64_t *out)
{
    if (sk_parse_duration_ms(text, out) == 0 && *out > 0)
        return 0;
    fprintf(stderr, "skolsync lag: %s: \"%s\" is not a duration (e.g. 5s, 500ms, 2m)\n", what,
            text);
    return -1;
}

static int parse_count(const char *what, const char *text, int64_t *out)
{
    if (sk_parse_int(text, out) == 0 && *out > 0)
        return 0;
    fprintf(stderr, "skolsync lag: %s: \"%s\" is not a positive number\n", what, text);
    return -1;
}

/* 0, -1 after --help, or SK_EXIT_USAGE. */
static int parse_args(int argc, char **argv, struct lag_args *a)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"brokers", required_argument, NULL, 'b'},
        {"group", required_argument, NULL, 'g'},
        {"all-groups", no_argument, NULL, 'a'},
        {"json", no_argument, NULL, 'j'},
        {"watch", no_argument, NULL, 'w'},
        {"interval", required_argument, NULL, 'i'},
        {"count", required_argument, NULL, 'n'},
        {"window", required_argument, NULL, 'W'},
        {"timeout", required_argument, NULL, 't'},
        {"stuck-after", required_argument, NULL, 'S'},
        {"warn-after", required_argument, NULL, 'A'},
        {"property", required_argument, NULL, 'X'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    optind = 1;
    int c;
    int64_t v;
    while ((c = getopt_long(argc, argv, "c:b:g:ajwi:n:t:X:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            a->config = optarg;
            break;
        case 'b':
            a->brokers = optarg;
            break;
        case 'X': {
            const char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg) {
                fprintf(stderr, "skolsync lag: -X \"%s\": expected KEY=VALUE\n", optarg);
                return SK_EXIT_USAGE;
            }
            size_t n = a->props.n + 1;
            a->props.keys = sk_realloc(a->props.keys, n * sizeof(char *));
            a->props.values = sk_realloc(a->props.values, n * sizeof(char *));
            a->props.keys[a->props.n] = sk_strndup(optarg, (size_t)(eq - optarg));
            a->props.values[a->props.n] = sk_strdup(eq + 1);
            a->props.n = n;
            break;
        }
        case 'g':
            a->groups = sk_realloc(a->groups, (a->n_groups + 1) * sizeof(*a->groups));
            a->groups[a->n_groups++] = optarg;
            break;
        case 'a':
            a->all_groups = true;
            break;
        case 'j':
            a->json = true;
            break;
        case 'w':
            a->watch = true;
            break;
        case 'i':
            if (parse_duration("--interval", optarg, &a->interval_ms))
                return SK_EXIT_USAGE;
            break;
        case 'n':
            if (parse_count("--count", optarg, &a->count))
                return SK_EXIT_USAGE;
            break;
        case 'W':
            if (parse_count("--window", optarg, &v) || v > 1000)
                return SK_EXIT_USAGE;
            a->rules.window = (size_t)v;
            break;
        case 't':
            if (parse_duration("--timeout", optarg, &a->timeout_ms))
                return SK_EXIT_USAGE;
            break;
        case 'S':
            if (parse_duration("--stuck-after", optarg, &a->rules.stuck_ms))
                return SK_EXIT_USAGE;
            break;
        case 'A':
            if (parse_duration("--warn-after", optarg, &a->rules.warn_lag_ms))
                return SK_EXIT_USAGE;
            break;
        default:
            return sk_cli_help(c, usage);
        }
    }
    if (sk_cli_no_more_args("skolsync lag", argc, argv))
        return SK_EXIT_USAGE;
    if (a->config && a->brokers) {
        fprintf(stderr, "skolsync lag: -c and --brokers exclude each other\n");
        return SK_EXIT_USAGE;
    }
    if (a->props.n && !a->brokers) {
        fprintf(stderr, "skolsync lag: -X goes with --brokers (with -c, kafka.properties "
                        "of the configuration apply)\n");
        return SK_EXIT_USAGE;
    }
    if (a->all_groups && a->n_groups) {
        fprintf(stderr, "skolsync lag: --group and --all-groups exclude each other\n");
        return SK_EXIT_USAGE;
    }
    if (a->count && !a->watch) {
        fprintf(stderr, "skolsync lag: --count needs --watch\n");
        return SK_EXIT_USAGE;
    }
    if (!a->config && !a->brokers)
        a->config = SK_DEFAULT_CONFIG;
    return 0;
}

/* ---- one sample, from a broker or from the daemon -------------------------- */

struct lag_source {
    /* A broker: */
    struct sk_lag_collect_options collect;
    struct sk_lag_window *window;
    /* Or the daemon (api.base set): */
    struct sk_api api;
    const char *const *only; /* --group filter on the daemon's answer */
    size_t n_only;
    /* Who owns what, from the configuration (names.h); freed with the source. */
    char **sink_groups, *sources_group, *sources_topic;
    const char **sink_names, **source_names, **sink_nodes;
};

/* Names the owners with the configuration: each sink's group, and the
 * sources group with its control topic (docs/architecture.md §5.10). */
static void owners_from_config(const struct sk_daemon_config *cfg, struct lag_source *s)
{
    const struct sk_kafka_conf *kc = &cfg->core.kafka;
    struct sk_names names = {kc->deployment, kc->node_name};
    s->sink_groups = sk_calloc(cfg->n_sinks + 1, sizeof(char *));
    s->sink_names = sk_calloc(cfg->n_sinks + 1, sizeof(char *));
    s->sink_nodes = sk_calloc(cfg->n_sinks + 1, sizeof(char *));
    for (size_t i = 0; i < cfg->n_sinks; i++) {
        enum sk_sink_target kind = cfg->sinks[i].ops->target_kind;
        s->sink_groups[i] = sk_name_sink_group(&names, cfg->sinks[i].name, kind);
        s->sink_names[i] = cfg->sinks[i].name;
        /* its group is this node's; on the shared consumer it has no member */
        if (kind == SK_TARGET_NODE_LOCAL && kc->shared_consumer)
            s->sink_nodes[i] = kc->node_name;
    }
    s->source_names = sk_calloc(cfg->n_sources + 1, sizeof(char *));
    for (size_t i = 0; i < cfg->n_sources; i++)
        s->source_names[i] = cfg->sources[i].name;
    s->sources_group = sk_name_sources_group(&names);
    s->sources_topic = sk_asprintf("%s_sources", kc->topic_prefix ? kc->topic_prefix : "skolsync.");
    s->collect.deployment = kc->deployment;
    s->collect.sink_groups = (const char *const *)s->sink_groups;
    s->collect.sink_names = s->sink_names;
    s->collect.sink_nodes = s->sink_nodes;
    s->collect.n_sinks = cfg->n_sinks;
    s->collect.sources_group = s->sources_group;
    s->collect.sources_topic = s->sources_topic;
    s->collect.sources = s->source_names;
    s->collect.n_sources = cfg->n_sources;
}

static void lag_source_free(struct lag_source *s)
{
    for (size_t i = 0; i < s->collect.n_sinks; i++)
        free(s->sink_groups[i]);
    free(s->sink_groups);
    free(s->sink_names);
    free(s->sink_nodes);
    free(s->source_names);
    free(s->sources_group);
    free(s->sources_topic);
    sk_lag_window_destroy(s->window);
    sk_api_close(&s->api);
}

#define LAG_PATH "/api/v1/lag"

/* GET /api/v1/lag: the daemon's windows for its own groups, same JSON as --json. */
static cJSON *ask_daemon(const struct lag_source *s, int64_t timeout_ms)
{
    struct sk_api_answer answer;
    sk_api_call(&s->api, "skolsync lag", "GET", LAG_PATH, NULL, timeout_ms, &answer);
    cJSON *j = sk_api_answer_json(&s->api, "skolsync lag", LAG_PATH, &answer);
    sk_api_answer_free(&answer);
    if (!j || s->n_only == 0)
        return j;
    /* Keep only the asked-for groups; the overall status follows them. */
    cJSON *groups = cJSON_GetObjectItemCaseSensitive(j, "groups");
    enum sk_lag_status worst = SK_LAG_OK;
    for (int i = cJSON_GetArraySize(groups) - 1; i >= 0; i--) {
        cJSON *g = cJSON_GetArrayItem(groups, i);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(g, "group");
        bool keep = false;
        for (size_t k = 0; k < s->n_only && cJSON_IsString(name); k++)
            keep |= strcmp(name->valuestring, s->only[k]) == 0;
        if (!keep) {
            cJSON_DeleteItemFromArray(groups, i);
            continue;
        }
        enum sk_lag_status gs = sk_lag_json_status(g);
        if (gs > worst)
            worst = gs;
    }
    cJSON_ReplaceItemInObjectCaseSensitive(j, "status",
                                           cJSON_CreateString(sk_lag_status_name(worst)));
    return j;
}

/* One evaluated sample as JSON, or NULL (reported) when it could not be taken. */
static cJSON *sample(struct lag_source *s, int64_t timeout_ms)
{
    if (s->api.base)
        return ask_daemon(s, timeout_ms);
    struct sk_lag_report *r = NULL;
    struct sk_error err = {0};
    if (sk_lag_collect(&s->collect, &r, &err)) {
        fprintf(stderr, "skolsync lag: %s\n", err.msg);
        return NULL;
    }
    sk_lag_window_add(s->window, r);
    return sk_lag_window_json(s->window);
}

static void print(const cJSON *j, bool json, FILE *out)
{
    if (json) {
        char *text = cJSON_PrintUnformatted(j);
        fprintf(out, "%s\n", text);
        free(text);
    } else {
        sk_lag_json_table(j, out);
    }
    fflush(out);
}

/* Sets up where to ask from the configuration; an exit code on failure, else 0. */
static int from_config(const struct lag_args *a, struct lag_source *s,
                       struct sk_daemon_config **cfg_out, const char ***groups, size_t *n_groups)
{
    struct sk_daemon_config *cfg = sk_cli_config_load(a->config, true);
    if (!cfg)
        return SK_EXIT_CONFIG;
    *cfg_out = cfg;
    const struct sk_kafka_conf *kc = &cfg->core.kafka;
    if (kc->brokers && strcmp(kc->brokers, "embedded") == 0) {
        /* The embedded broker lives in the daemon's process: only it can answer. */
        if (sk_api_open(&cfg->core.admin, "skolsync lag", &s->api))
            return SK_EXIT_CONFIG;
        s->only = a->groups;
        s->n_only = a->n_groups;
        return 0;
    }
    s->collect.brokers = kc->brokers;
    s->collect.properties = &kc->properties;
    owners_from_config(cfg, s);
    if (!a->n_groups && !a->all_groups && cfg->n_sinks > 0) {
        /* The configuration's own sinks' groups (names.h). */
        struct sk_names names = {kc->deployment, kc->node_name};
        *groups = sk_calloc(cfg->n_sinks, sizeof(char *));
        for (size_t i = 0; i < cfg->n_sinks; i++)
            (*groups)[(*n_groups)++] =
                sk_name_sink_group(&names, cfg->sinks[i].name, cfg->sinks[i].ops->target_kind);
    }
    return 0;
}

int sk_lag_cli(int argc, char **argv, FILE *out)
{
    struct lag_args a = {.interval_ms = 5000, .timeout_ms = 10000};
    sk_lag_rules_default(&a.rules);
    int rc = parse_args(argc, argv, &a);
    if (rc) {
        free(a.groups);
        props_free(&a.props);
        return rc < 0 ? 0 : rc;
    }
    struct lag_source s = {0};
    struct sk_daemon_config *cfg = NULL;
    const char **cfg_groups = NULL;
    size_t n_cfg_groups = 0;
    if (a.config) {
        rc = from_config(&a, &s, &cfg, &cfg_groups, &n_cfg_groups);
        if (rc) {
            rc = LAG_EXIT_UNREACHABLE; /* not 2: that says a group is in ERR */
            goto done;
        }
        /* what the daemon sets on the topics it creates; the embedded
         * broker's store keeps tombstones (the daemon answers there) */
        if (!s.api.base)
            a.rules.tombstone_ms = cfg->core.kafka.tombstone_retention_ms;
    } else {
        s.collect.brokers = a.brokers;
        s.collect.properties = &a.props;
    }
    s.collect.groups = a.n_groups ? a.groups : cfg_groups;
    s.collect.n_groups = a.n_groups ? a.n_groups : n_cfg_groups;
    s.collect.all_groups = a.all_groups;
    s.collect.describe_members = true; /* lag.c refuses it on the embedded broker */
    s.collect.timeout_ms = a.timeout_ms;
    s.window = sk_lag_window_new(&a.rules);

    bool tty = isatty(fileno(out));
    int64_t taken = 0;
    rc = LAG_EXIT_UNREACHABLE;
    for (;;) {
        int64_t started = sk_mono_ms();
        cJSON *j = sample(&s, a.timeout_ms);
        taken++;
        if (j) {
            if (a.watch && tty && !a.json)
                fprintf(out, "\033[H\033[2J"); /* redraw in place on a terminal only */
            print(j, a.json, out);
            rc = sk_lag_exit_code(sk_lag_json_status(j));
            cJSON_Delete(j);
        } else {
            rc = LAG_EXIT_UNREACHABLE;
        }
        if (!a.watch || (a.count && taken >= a.count))
            break;
        int64_t wait = a.interval_ms - (sk_mono_ms() - started);
        if (wait > 0)
            sk_sleep_ms(wait);
    }
done:
    lag_source_free(&s);
    for (size_t i = 0; i < n_cfg_groups; i++)
        free((char *)cfg_groups[i]);
    free(cfg_groups);
    free(a.groups);
    props_free(&a.props);
    sk_daemon_config_free(cfg);
    return rc;
}

int sk_cmd_lag(int argc, char **argv)
{
    return sk_lag_cli(argc, argv, stdout);
}
