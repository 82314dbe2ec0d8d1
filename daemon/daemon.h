/*
 * daemon.h: the whole daemon as the CLI sees it: load and validate a
 * configuration, open connectors, run them under the supervisor, stop.
 */
#ifndef SK_DAEMON_H
#define SK_DAEMON_H

#include <stdbool.h>
#include <stdio.h>

#include "config.h"
#include "drivers.h"
#include "kafka.h"

/* Where every command looks for the configuration without -c. */
#define SK_DEFAULT_CONFIG "/etc/skolsync/skolsync.yaml"

/* Exit codes (documented in README.md "Exit codes"). */
enum {
    SK_EXIT_OK = 0,
    SK_EXIT_RUNTIME = 1, /* a runtime failure: broker unreachable, connector failed */
    SK_EXIT_CONFIG = 2,  /* the configuration is invalid */
    SK_EXIT_USAGE = 64,  /* bad command line (sysexits EX_USAGE) */
};

/*
 * The end of a command's getopt loop: c == 'h' prints usage to stdout and
 * returns -1 (the command then exits 0); any other option prints it to
 * stderr and returns SK_EXIT_USAGE.
 */
int sk_cli_help(int c, void (*usage)(FILE *));
/* SK_EXIT_USAGE, after saying so, if argv holds an argument past optind; else 0. */
int sk_cli_no_more_args(const char *cmd, int argc, char **argv);

struct sk_log_conf {
    char *level;
    char *format;
};

struct sk_admin_conf {
    char *listen;                       /* "127.0.0.1:9720", or "off" */
    char *token;                        /* required by state-changing API calls */
    int64_t max_body;                   /* request body cap */
    int64_t max_connections;            /* open at once, all clients */
    int64_t max_connections_per_client; /* open at once from one address */
    int64_t header_timeout_ms; /* from connect (or the last answer) to a whole request head */
};

struct sk_node_conf {
    char *name; /* this daemon in its deployment; resolved to the host name if unset */
};

struct sk_core_conf {
    struct sk_kafka_conf kafka;
    struct sk_node_conf node;
    struct sk_admin_conf admin;
    struct sk_log_conf log;
    int64_t shutdown_timeout_ms;
    int64_t progress_interval_ms;
    int64_t lag_interval_ms;
};

/* The top-level keys (admin, kafka, log, ...), without `sources` and `sinks`:
 * validates the file and writes skolsync.yaml(5) (manpage.c). */
extern const struct sk_option sk_core_options[];

struct sk_source_def {
    char *name;
    const struct sk_source_ops *ops;
    struct sk_source_settings settings;
    void *conf; /* ops->conf_size bytes, filled from ops->options */
};

struct sk_sink_def {
    char *name;
    const struct sk_sink_ops *ops;
    struct sk_sink_settings settings;
    void *conf;
    const struct sk_entity **entities;
    size_t n_entities;
};

struct sk_daemon_config {
    char *path;
    struct sk_cnode *tree;
    struct sk_core_conf core;
    struct sk_source_def *sources;
    size_t n_sources;
    struct sk_sink_def *sinks;
    size_t n_sinks;
};

/* A name the configuration accepts for a source or sink: 1 to 100 of
 * [a-z0-9_-]. The admin commands check NAME by it before it goes into a URL. */
bool sk_connector_name_valid(const char *s);

/*
 * Loads and validates a configuration file completely (all errors to errs).
 * Returns NULL if any error was found. Free with sk_daemon_config_free().
 */
struct sk_daemon_config *sk_daemon_config_load(const char *path, struct sk_config_errors *errs);
/*
 * For the admin commands (lag, dlq, release), run from a shell that cannot
 * read the connectors' secrets (systemd credentials): references in sources
 * and sinks stay unresolved and unread; kafka and admin are resolved. Never
 * for running connectors.
 */
struct sk_daemon_config *sk_daemon_config_load_admin(const char *path,
                                                     struct sk_config_errors *errs);
/*
 * `skolsync check --connect` (check_connect.c): reaches Kafka and every
 * connector's system, one line per check on out. SK_EXIT_OK if every check
 * passed, SK_EXIT_RUNTIME if one failed.
 */
int sk_check_connect(const struct sk_daemon_config *cfg, FILE *out);
/* `skolsync status` and `pause|resume|restart|release NAME` (admin_cli.c). */
int sk_cmd_status(int argc, char **argv);
int sk_cmd_connector_action(int argc, char **argv);
/* The admin HTTP server's limits of a, or (a NULL) the admin section's defaults. */
void sk_admin_limits(const struct sk_admin_conf *a, struct sk_http_limits *out);
/* A command's configuration (admin: sk_daemon_config_load_admin), its errors on stderr. */
struct sk_daemon_config *sk_cli_config_load(const char *path, bool admin);
void sk_daemon_config_free(struct sk_daemon_config *cfg);

struct sk_run_options {
    bool once;
    FILE *summary; /* where the final summary goes (stdout) */
    /* Tests only: called once Kafka (or the embedded broker) is up, e.g. to
     * inject faults into the embedded mock cluster (sk_kafka_mock). */
    void (*kafka_started)(struct sk_kafka *k, void *ctx);
    void *hook_ctx;
};

/* Runs until SIGTERM/SIGINT (or, with once, until done). Returns an exit code. */
int sk_daemon_run(struct sk_daemon_config *cfg, const struct sk_run_options *opt);

#endif
