/*
 * main.c: the command line. Parses arguments and hands over to the daemon,
 * the checker or the connector listing; owns no other logic.
 *
 *   skolsync run -c FILE [--once]
 *   skolsync check -c FILE [--connect]
 *   skolsync connectors [TYPE | --man]
 *   skolsync version
 * and hands lag, dlq, status, pause, resume, restart and release to their
 * files (lag_cli.c, dlq.c, admin_cli.c).
 */
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <librdkafka/rdkafka.h>

#include "api_client.h"
#include "daemon.h"
#include "dlq.h"
#include "lag.h"
#include "log.h"
#include "manpage.h"
#include "util.h"

static void usage_main(FILE *out)
{
    fprintf(out,
            "usage: skolsync COMMAND [OPTIONS]\n"
            "\n"
            "Keeps SS 12000 school data in sync through Kafka.\n"
            "\n"
            "commands:\n"
            "  run -c FILE [--once]   run the sources and sinks of a configuration\n"
            "  check -c FILE [--connect]  validate a configuration (and reach its systems)\n"
            "  connectors [TYPE]      list connector types, or one type's options\n"
            "  status [-c FILE] [--json]  the running daemon's connectors and lag\n"
            "  pause NAME [-c FILE]   stop one connector of the running daemon fetching\n"
            "  resume NAME [-c FILE]  take a paused connector up again\n"
            "  restart NAME [-c FILE] close and open one connector again\n"
            "  release SOURCE -c FILE publish held deletions (--list, --ids, --type, --reject)\n"
            "  dlq list|replay -c FILE  list dead letters, or re-inject them after a fix\n"
            "  lag [-c FILE|--brokers B] consumer lag per group and partition, with a status\n"
            "  version                print versions\n"
            "\n"
            "`skolsync COMMAND --help` describes a command. Exit codes: 0 success,\n"
            "1 runtime failure, 2 invalid configuration, 64 bad command line.\n");
}

static void usage_run(FILE *out)
{
    fprintf(out, "usage: skolsync run [-c FILE] [--once]\n"
                 "\n"
                 "Runs every source and sink in FILE (default " SK_DEFAULT_CONFIG ")\n"
                 "until SIGTERM or SIGINT.\n"
                 "\n"
                 "  -c, --config FILE  the configuration\n"
                 "      --once         every source completes one full poll cycle, every sink\n"
                 "                     drains to zero lag, then exit 0 (cron jobs, demo, tests)\n"
                 "  -h, --help         this text\n"
                 "\n"
                 "Exit codes: 0 success, 1 runtime failure, 2 invalid configuration,\n"
                 "64 bad command line.\n");
}

static void usage_check(FILE *out)
{
    fprintf(out, "usage: skolsync check [-c FILE] [--connect]\n"
                 "\n"
                 "Validates FILE completely and prints every error as\n"
                 "FILE:LINE:COL: key.path: message. Without --connect nothing is contacted.\n"
                 "\n"
                 "  -c, --config FILE  the configuration (default " SK_DEFAULT_CONFIG ")\n"
                 "      --connect      then reach Kafka and every source's and sink's system,\n"
                 "                     one line per check: `ok   WHAT: found`, `FAIL WHAT: what\n"
                 "                     failed (how to fix it)`, `--   WHAT: not checked`;\n"
                 "                     nothing is created or changed, no secret is printed\n"
                 "  -h, --help         this text\n"
                 "\n"
                 "Exit codes: 0 valid (and, with --connect, every check passed), 1 a check\n"
                 "failed, 2 invalid configuration, 64 bad command line.\n");
}

static void usage_connectors(FILE *out)
{
    fprintf(out, "usage: skolsync connectors [TYPE | --man]\n"
                 "\n"
                 "Without TYPE: lists the source and sink types. With TYPE: prints its\n"
                 "options with type, default and help. --man: every key of the\n"
                 "configuration in roff, the reference part of skolsync.yaml(5).\n");
}

/* once: --once of run; connect: --connect of check (NULL: not an option of the command). */
static int parse_common(int argc, char **argv, const char **config, bool *once, bool *connect,
                        void (*usage)(FILE *))
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"once", no_argument, NULL, 'o'},
        {"connect", no_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            *config = optarg;
            break;
        case 'o':
            if (!once) {
                usage(stderr);
                return SK_EXIT_USAGE;
            }
            *once = true;
            break;
        case 'C':
            if (!connect) {
                usage(stderr);
                return SK_EXIT_USAGE;
            }
            *connect = true;
            break;
        default:
            return sk_cli_help(c, usage);
        }
    }
    if (sk_cli_no_more_args("skolsync", argc, argv)) {
        usage(stderr);
        return SK_EXIT_USAGE;
    }
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    const char *config = SK_DEFAULT_CONFIG;
    bool once = false;
    int rc = parse_common(argc, argv, &config, &once, NULL, usage_run);
    if (rc)
        return rc < 0 ? 0 : rc;
    struct sk_daemon_config *cfg = sk_cli_config_load(config, false);
    if (!cfg)
        return SK_EXIT_CONFIG;
    enum sk_log_level level = SK_LOG_INFO;
    sk_log_level_parse(cfg->core.log.level, &level);
    sk_log_setup(level, strcmp(cfg->core.log.format, "json") == 0);
    struct sk_run_options opt = {.once = once, .summary = stdout};
    rc = sk_daemon_run(cfg, &opt);
    sk_daemon_config_free(cfg);
    return rc;
}

static int cmd_check(int argc, char **argv)
{
    const char *config = SK_DEFAULT_CONFIG;
    bool connect = false;
    int rc = parse_common(argc, argv, &config, NULL, &connect, usage_check);
    if (rc)
        return rc < 0 ? 0 : rc;
    struct sk_daemon_config *cfg = sk_cli_config_load(config, false);
    if (!cfg)
        return SK_EXIT_CONFIG;
    printf("%s: valid (%zu source(s), %zu sink(s))\n", config, cfg->n_sources, cfg->n_sinks);
    fflush(stdout);
    rc = SK_EXIT_OK;
    if (connect) {
        /* The lines say what failed; log lines would only repeat it on stderr. */
        sk_log_setup(SK_LOG_ERROR, false);
        rc = sk_check_connect(cfg, stdout);
    }
    sk_daemon_config_free(cfg);
    return rc;
}

static void print_options(const struct sk_option *t, const char *prefix)
{
    for (; t->name; t++) {
        char name[128];
        snprintf(name, sizeof(name), "%s%s", prefix, t->name);
        printf("  %-28s %-9s %-12s %s%s\n", name, sk_opt_type_name(t->type),
               t->required ? "(required)"
               : t->def    ? t->def
                           : "-",
               t->help ? t->help : "",
               t->type == SK_OPT_SECRET ? " [secret: use ${env:...} or ${file:...}]" : "");
        if (t->type == SK_OPT_ENUM && t->choices) {
            printf("  %-28s %-9s %-12s one of:", "", "", "");
            for (const char *const *c = t->choices; *c; c++)
                printf(" %s", *c);
            printf("\n");
        }
        if ((t->type == SK_OPT_GROUP || t->type == SK_OPT_GROUPS) && t->sub) {
            char sub[192];
            snprintf(sub, sizeof(sub), "%s.%s", name, t->type == SK_OPT_GROUPS ? "<name>." : "");
            print_options(t->sub, sub);
        }
    }
}

static int cmd_connectors(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage_connectors(stdout);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "--man") == 0) {
        sk_manpage_write_options(stdout);
        return fflush(stdout) == 0 && !ferror(stdout) ? SK_EXIT_OK : SK_EXIT_RUNTIME;
    }
    if (argc > 2) {
        usage_connectors(stderr);
        return SK_EXIT_USAGE;
    }
    if (argc == 1) {
        printf("sources:\n");
        for (size_t i = 0; sk_registry_sources[i]; i++)
            printf("  %-20s %s\n", sk_registry_sources[i]->type, sk_registry_sources[i]->summary);
        printf("sinks:\n");
        for (size_t i = 0; sk_registry_sinks[i]; i++)
            printf("  %-20s %s\n", sk_registry_sinks[i]->type, sk_registry_sinks[i]->summary);
        return 0;
    }
    const struct sk_source_ops *src = sk_registry_source(argv[1]);
    const struct sk_sink_ops *snk = sk_registry_sink(argv[1]);
    if (!src && !snk) {
        fprintf(stderr, "skolsync: unknown connector type \"%s\" (see `skolsync connectors`)\n",
                argv[1]);
        return SK_EXIT_USAGE;
    }
    printf("%s: %s\n\n", argv[1], src ? src->summary : snk->summary);
    printf("  %-28s %-9s %-12s %s\n", "option", "type", "default", "description");
    print_options(src ? sk_source_settings_options : sk_sink_settings_options, "");
    print_options(src ? src->options : snk->options, "");
    if (snk) {
        printf("\nprivacy defaults of %s: protected_identities %s, drop_fields [", snk->type,
               snk->default_protected ? snk->default_protected : "allow");
        for (size_t i = 0; snk->default_drop_fields && snk->default_drop_fields[i]; i++)
            printf("%s%s", i ? ", " : "", snk->default_drop_fields[i]);
        printf("]\n");
    }
    return 0;
}

static int cmd_version(void)
{
    printf("skolsync %s (librdkafka %s, SS 12000 2.1.0)\n", SK_VERSION, rd_kafka_version_str());
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage_main(stderr);
        return SK_EXIT_USAGE;
    }
    /* Once, before any thread exists (libcurl's global state is not thread-safe to set up). */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    /* glibc gives each busy thread an arena of its own (up to 8 per core),
     * and each keeps its freed heap: a daemon of ~25 threads after a 100k
     * sync held 49 MB of heap with the default, 28 MB with two (bench
     * memory scenario). MALLOC_ARENA_MAX in the environment still wins. */
    if (!getenv("MALLOC_ARENA_MAX"))
        mallopt(M_ARENA_MAX, 2);
    /* glibc raises its mmap threshold to the size of each large block freed
     * (up to 32 MB) and its trim threshold to twice that, and a thread
     * arena's top is given back only past the trim threshold (malloc_trim
     * does not trim it). After a OneRoster bundle's MBs the heap top then
     * stayed resident: 34-36 MB steady instead of 27-28 in the bench memory
     * scenario, depending on which arena the bundle's thread had. A fixed
     * threshold (glibc's default value) keeps the dynamic one off: blocks of
     * 128 KB and more are mapped and unmapped, the top is trimmed past 128 KB.
     * MALLOC_MMAP_THRESHOLD_ or GLIBC_TUNABLES in the environment still win. */
    if (!getenv("MALLOC_MMAP_THRESHOLD_") && !getenv("GLIBC_TUNABLES"))
        mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    const char *cmd = argv[1];
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "check") == 0)
        return cmd_check(argc - 1, argv + 1);
    if (strcmp(cmd, "connectors") == 0)
        return cmd_connectors(argc - 1, argv + 1);
    if (strcmp(cmd, "lag") == 0)
        return sk_cmd_lag(argc - 1, argv + 1);
    if (strcmp(cmd, "dlq") == 0)
        return sk_cmd_dlq(argc - 1, argv + 1);
    if (strcmp(cmd, "status") == 0)
        return sk_cmd_status(argc - 1, argv + 1);
    if (strcmp(cmd, "release") == 0 || strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0 ||
        strcmp(cmd, "restart") == 0)
        return sk_cmd_connector_action(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0)
        return cmd_version();
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage_main(stdout);
        return 0;
    }
    fprintf(stderr, "skolsync: unknown command \"%s\"\n", cmd);
    usage_main(stderr);
    return SK_EXIT_USAGE;
}
