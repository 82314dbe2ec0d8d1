/*
 * admin_cli.c: the operator's daily commands against a running daemon, all
 * through its admin API (api_client.h) with admin.token from the
 * configuration, so no connector secret is needed (sk_cli_config_load):
 *
 *   skolsync status [-c FILE] [--json]          connectors, states, lag, last errors
 *   skolsync pause|resume|restart NAME [-c FILE]
 *   skolsync release SOURCE [-c FILE] [--list] [--ids ID,...] [--type TYPE] [--reject]
 *
 * Owns: these commands' arguments, output and exit codes.
 * Must never: print the token.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "api_client.h"
#include "buf.h"
#include "daemon.h"
#include "util.h"

/* What an action on one connector does, for its usage text. */
static const struct {
    const char *name, *what;
} actions[] = {
    {"pause", "stops fetching (a sink applies what it holds first) and stays in its group"},
    {"resume", "takes up a paused connector again"},
    {"restart", "closes and opens the connector again, as the supervisor does after a failure"},
};

static const char *action_what(const char *action)
{
    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++)
        if (strcmp(actions[i].name, action) == 0)
            return actions[i].what;
    return NULL;
}

/* -c FILE (and --json when json is not NULL); the operands after the options in *first. */
static int parse(int argc, char **argv, const char **config, bool *json, void (*usage)(FILE *),
                 int *first)
{
    static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                             {"json", no_argument, NULL, 'j'},
                                             {"help", no_argument, NULL, 'h'},
                                             {0}};
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "c:jh", longopts, NULL)) != -1) {
        if (c == 'c')
            *config = optarg;
        else if (c == 'j' && json)
            *json = true;
        else
            return sk_cli_help(c == 'j' ? '?' : c, usage);
    }
    *first = optind;
    return 0;
}

/* The daemon of the configuration at path, through its API; -1 said on stderr. */
static int open_api(const char *path, struct sk_api *api)
{
    struct sk_daemon_config *cfg = sk_cli_config_load(path, true);
    if (!cfg)
        return -1;
    int rc = sk_api_open(&cfg->core.admin, "skolsync", api);
    sk_daemon_config_free(cfg);
    return rc;
}

/*
 * NAME goes into the URL, so only a name the configuration could hold is
 * sent: "../dlq/replay#" reached POST /api/v1/dlq/replay (curl resolves the
 * dots, '#' cuts the rest). 0, or SK_EXIT_USAGE said on stderr.
 */
static int check_name(const char *cmd, const char *name)
{
    if (sk_connector_name_valid(name))
        return 0;
    struct sk_buf shown = {0};
    sk_buf_put_escaped(&shown, name);
    fprintf(stderr,
            "skolsync %s: \"%s\" is not a connector name (expected lowercase letters, digits, "
            "- and _, at most 100)\n",
            cmd, shown.p ? shown.p : "");
    sk_buf_free(&shown);
    return SK_EXIT_USAGE;
}

static const char *action_now; /* for usage_action */

static void usage_action(FILE *out)
{
    fprintf(out,
            "usage: skolsync %s NAME [-c FILE]\n"
            "\n"
            "NAME: %s, through the running daemon's API (POST /api/v1/connectors/NAME/%s\n"
            "with admin.token from FILE, default " SK_DEFAULT_CONFIG "). Prints the\n"
            "connector's state once the change holds. Exit 0 when it holds, 1 when the\n"
            "daemon refused or could not be reached or the change was not in effect\n"
            "within 10 s, 2 invalid configuration, 64 bad command line.\n",
            action_now, action_what(action_now), action_now);
}

static int cmd_release(int argc, char **argv);

int sk_cmd_connector_action(int argc, char **argv)
{
    if (strcmp(argv[0], "release") == 0)
        return cmd_release(argc, argv);
    action_now = argv[0];
    const char *config = SK_DEFAULT_CONFIG;
    int first = 0;
    int rc = parse(argc, argv, &config, NULL, usage_action, &first);
    if (rc)
        return rc < 0 ? SK_EXIT_OK : rc;
    if (first != argc - 1) {
        usage_action(stderr);
        return SK_EXIT_USAGE;
    }
    if (check_name(action_now, argv[first]))
        return SK_EXIT_USAGE;
    struct sk_api api;
    if (open_api(config, &api))
        return SK_EXIT_CONFIG;
    char *path = sk_asprintf("/api/v1/connectors/%s/%s", argv[first], action_now);
    struct sk_api_answer answer;
    long status = sk_api_call(&api, "skolsync", "POST", path, NULL, 30000, &answer);
    free(path);
    sk_api_close(&api);
    if (status)
        printf("%s\n", answer.body);
    if (status == 202)
        fprintf(stderr, "skolsync: %s asked for, but not in effect within 10 s\n", action_now);
    sk_api_answer_free(&answer);
    return status == 200 ? SK_EXIT_OK : SK_EXIT_RUNTIME;
}

static void usage_status(FILE *out)
{
    fprintf(out, "usage: skolsync status [-c FILE] [--json]\n"
                 "\n"
                 "The running daemon's connectors (kind, type, state, records, dead letters,\n"
                 "restarts, last error) and the lag of its sinks' groups, through its API\n"
                 "(GET /api/v1/connectors and /api/v1/lag; with admin.token from FILE the\n"
                 "last errors are shown in full). --json prints both answers as one object.\n"
                 "Exit 0 when every connector runs, is idle or paused; 1 when one has\n"
                 "failed or the daemon could not be reached; 2 invalid configuration;\n"
                 "64 bad command line.\n");
}

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(x) ? x->valuestring : "";
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(x) ? x->valuedouble : 0;
}

static void print_table(const cJSON *conns, const cJSON *lag, FILE *out)
{
    fprintf(out, "%-20s %-6s %-20s %-9s %10s %6s %8s  %s\n", "CONNECTOR", "KIND", "TYPE", "STATE",
            "RECORDS", "DLQ", "RESTARTS", "LAST ERROR");
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(conns, "connectors"))
    {
        fprintf(out, "%-20s %-6s %-20s %-9s %10.0f %6.0f %8.0f  %s\n", str(c, "name"),
                str(c, "kind"), str(c, "type"), str(c, "state"), num(c, "records"),
                num(c, "dead_lettered"), num(c, "restarts"), str(c, "last_error"));
    }
    if (!lag) {
        fprintf(out, "\nlag: no sample yet\n");
        return;
    }
    fprintf(out, "\n%-40s %-6s %10s %12s\n", "GROUP", "STATUS", "LAG", "LAG SECONDS");
    const cJSON *g;
    cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(lag, "groups"))
    {
        fprintf(out, "%-40s %-6s %10.0f %12.1f\n", str(g, "group"), str(g, "status"), num(g, "lag"),
                num(g, "max_lag_seconds"));
    }
}

static void usage_release(FILE *out)
{
    fprintf(out,
            "usage: skolsync release SOURCE [-c FILE] [--ids ID,...] [--type TYPE,...] [--reject]\n"
            "       skolsync release SOURCE [-c FILE] --list\n"
            "\n"
            "The deletions SOURCE's delete guard holds back, through the running daemon's\n"
            "API with admin.token from FILE (default " SK_DEFAULT_CONFIG "). --list prints\n"
            "them, one line per id with its entity type (GET /api/v1/connectors/SOURCE/held).\n"
            "Otherwise they are released (published as deletions, once) or, with --reject,\n"
            "forgotten and the entities kept: all of them, or those of the ids and entity\n"
            "types named (POST /api/v1/connectors/SOURCE/release). Prints the source's state\n"
            "once that holds. Exit 0 when it holds, 1 when the daemon refused or could not\n"
            "be reached or the change was not in effect within 10 s, 2 invalid\n"
            "configuration, 64 bad command line.\n");
}

/* "a,b,c" appended to list as strings. */
static void add_words(cJSON *list, const char *text)
{
    char *copy = sk_strdup(text), *save = NULL;
    for (char *w = strtok_r(copy, ", ", &save); w; w = strtok_r(NULL, ", ", &save))
        cJSON_AddItemToArray(list, cJSON_CreateString(w));
    free(copy);
}

/* The held list answer {"held": N, "types": {...}} as "TYPE ID" lines. */
static void print_held(const cJSON *o, FILE *out)
{
    const cJSON *types = cJSON_GetObjectItemCaseSensitive(o, "types");
    if (!cJSON_IsObject(types)) {
        fprintf(out, "%.0f deletion(s) held; this source does not list them\n", num(o, "held"));
        return;
    }
    fprintf(out, "%-24s %s\n", "ENTITY", "ID");
    const cJSON *t, *id;
    cJSON_ArrayForEach(t, types)
    {
        cJSON_ArrayForEach(id, t)
        {
            fprintf(out, "%-24s %s\n", t->string, cJSON_IsString(id) ? id->valuestring : "");
        }
    }
    fprintf(out, "%.0f deletion(s) held\n", num(o, "held"));
}

static int cmd_release(int argc, char **argv)
{
    static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                             {"list", no_argument, NULL, 'l'},
                                             {"ids", required_argument, NULL, 'i'},
                                             {"type", required_argument, NULL, 't'},
                                             {"reject", no_argument, NULL, 'r'},
                                             {"help", no_argument, NULL, 'h'},
                                             {0}};
    const char *config = SK_DEFAULT_CONFIG;
    bool list = false;
    cJSON *body = cJSON_CreateObject(), *ids = cJSON_CreateArray(), *types = cJSON_CreateArray();
    optind = 1;
    int c, rc = 0;
    while (!rc && (c = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        if (c == 'c')
            config = optarg;
        else if (c == 'l')
            list = true;
        else if (c == 'i')
            add_words(ids, optarg);
        else if (c == 't')
            add_words(types, optarg);
        else if (c == 'r')
            cJSON_AddBoolToObject(body, "reject", true);
        else
            rc = sk_cli_help(c, usage_release);
    }
    bool selective = cJSON_GetArraySize(ids) || cJSON_GetArraySize(types) ||
                     cJSON_GetObjectItemCaseSensitive(body, "reject");
    if (!rc && (optind != argc - 1 || (list && selective))) {
        usage_release(stderr);
        rc = SK_EXIT_USAGE;
    }
    if (!rc)
        rc = check_name("release", argv[optind]);
    cJSON_AddItemToObject(body, "ids", ids);
    cJSON_AddItemToObject(body, "types", types);
    if (!cJSON_GetArraySize(ids))
        cJSON_DeleteItemFromObject(body, "ids");
    if (!cJSON_GetArraySize(types))
        cJSON_DeleteItemFromObject(body, "types");
    char *text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    struct sk_api api;
    if (rc || open_api(config, &api)) {
        free(text);
        return rc ? (rc < 0 ? SK_EXIT_OK : rc) : SK_EXIT_CONFIG;
    }
    char *path = sk_asprintf("/api/v1/connectors/%s/%s", argv[optind], list ? "held" : "release");
    struct sk_api_answer answer;
    long status = sk_api_call(&api, "skolsync", list ? "GET" : "POST", path,
                              selective ? text : NULL, 30000, &answer);
    cJSON *held = list && status == 200 ? cJSON_Parse(answer.body) : NULL;
    if (held)
        print_held(held, stdout);
    else if (status)
        printf("%s\n", answer.body);
    if (status == 202)
        fprintf(stderr, "skolsync: release asked for, but not in effect within 10 s\n");
    cJSON_Delete(held);
    free(path);
    free(text);
    sk_api_answer_free(&answer);
    sk_api_close(&api);
    return status == 200 ? SK_EXIT_OK : SK_EXIT_RUNTIME;
}

int sk_cmd_status(int argc, char **argv)
{
    const char *config = SK_DEFAULT_CONFIG;
    bool json = false;
    int first = 0;
    int rc = parse(argc, argv, &config, &json, usage_status, &first);
    if (rc)
        return rc < 0 ? SK_EXIT_OK : rc;
    if (sk_cli_no_more_args("skolsync status", argc, argv))
        return SK_EXIT_USAGE;
    struct sk_api api;
    if (open_api(config, &api))
        return SK_EXIT_CONFIG;
    struct sk_api_answer a, l;
    sk_api_call(&api, "skolsync", "GET", "/api/v1/connectors", NULL, 10000, &a);
    cJSON *conns = sk_api_answer_json(&api, "skolsync", "/api/v1/connectors", &a);
    /* no lag sample yet is 503: not an error of the daemon */
    long lst = conns ? sk_api_call(&api, "skolsync", "GET", "/api/v1/lag", NULL, 10000, &l) : 0;
    cJSON *lag = lst == 200 ? cJSON_Parse(l.body) : NULL;
    rc = conns ? SK_EXIT_OK : SK_EXIT_RUNTIME;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(conns, "connectors"))
    {
        if (strcmp(str(c, "state"), "failed") == 0)
            rc = SK_EXIT_RUNTIME;
    }
    if (conns && json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemReferenceToObject(o, "connectors",
                                       cJSON_GetObjectItemCaseSensitive(conns, "connectors"));
        cJSON_AddItemToObject(o, "lag", lag ? cJSON_Duplicate(lag, true) : cJSON_CreateNull());
        char *t = cJSON_PrintUnformatted(o);
        printf("%s\n", t);
        free(t);
        cJSON_Delete(o);
    } else if (conns) {
        print_table(conns, lag, stdout);
    }
    cJSON_Delete(lag);
    cJSON_Delete(conns);
    if (lst)
        sk_api_answer_free(&l);
    sk_api_answer_free(&a);
    sk_api_close(&api);
    return rc;
}
