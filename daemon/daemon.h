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

/* Exit codes (documented in README.md "Exit codes"). */
enum {
    SK_EXIT_OK = 0,
    SK_EXIT_RUNTIME = 1, /* a runtime failure: broker unreachable, connector failed */
    SK_EXIT_CONFIG = 2,  /* the configuration is invalid */
    SK_EXIT_USAGE = 64,  /* bad command line (sysexits EX_USAGE) */
};

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

/*
 * Loads and validates a configuration file completely (all errors to errs).
 * Returns NULL if any error was found. Free with sk_daemon_config_free().
 */
struct sk_daemon_config *sk_daemon_config_load(const char *path, struct sk_config_errors *errs);
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
