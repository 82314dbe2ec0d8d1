/*
 * daemon_config.c: the daemon's configuration: the core's own keys (kafka,
 * log, ...) and one entry per source and sink, each validated against the
 * core's settings table and its connector's option table.
 *
 * A connector entry mixes both kinds of keys:
 *     sources:
 *       demo-files:
 *         type: jsonl-source      # core
 *         poll_interval: 5s       # core
 *         path: build/demo-data   # the connector's own option
 * Every error of the whole file is collected; nothing is opened here.
 */
#include <ctype.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "daemon.h"
#include "http.h"
#include "model.h"
#include "util.h"

static const struct sk_option log_options[] = {
    {"level", SK_OPT_ENUM, "info", false, "error, warn, info or debug",
     offsetof(struct sk_log_conf, level),
     .choices = (const char *const[]){"error", "warn", "info", "debug", NULL}},
    {"format", SK_OPT_ENUM, "text", false, "text or json (one object per line)",
     offsetof(struct sk_log_conf, format), .choices = (const char *const[]){"text", "json", NULL}},
    {0},
};

static const struct sk_option admin_options[] = {
    {"listen", SK_OPT_STRING, "127.0.0.1:9720", false,
     "HTTP address for metrics, health, the API, the status page and webhooks "
     "(host:port: an IPv4 address, [IPv6] or localhost; port 0 = any free one; \"off\" = no "
     "HTTP server)",
     offsetof(struct sk_admin_conf, listen)},
    {"token", SK_OPT_SECRET, NULL, false,
     "bearer token required by every state-changing API call (not empty; without it those "
     "calls are refused)",
     offsetof(struct sk_admin_conf, token)},
    {"max_body", SK_OPT_SIZE, "1MiB", false, "largest accepted request body",
     offsetof(struct sk_admin_conf, max_body), .min = 1024, .max = 64LL << 20},
    {"max_connections", SK_OPT_INT, "256", false, "connections open at once (all clients)",
     offsetof(struct sk_admin_conf, max_connections), .min = 4, .max = 4096},
    {"max_connections_per_client", SK_OPT_INT, "32", false,
     "connections open at once from one client address (a webhook proxy counts as one)",
     offsetof(struct sk_admin_conf, max_connections_per_client), .min = 1, .max = 4096},
    {"header_timeout", SK_OPT_DURATION, "10s", false,
     "a connection that has not sent a whole request head this long after it connected (or "
     "after its last answer) is closed",
     offsetof(struct sk_admin_conf, header_timeout_ms), .min = 500, .max = 300000},
    {0},
};

static const struct sk_option node_options[] = {
    {"name", SK_OPT_STRING, NULL, false,
     "this daemon's name in its deployment: per-node consumer groups and member ids derive "
     "from it (default: the host name; real Kafka clusters only: refused with the embedded "
     "broker)",
     offsetof(struct sk_node_conf, name)},
    {0},
};

/* The top level, without `sources` and `sinks` (handled below). */
const struct sk_option sk_core_options[] = {
    {"admin", SK_OPT_GROUP, NULL, false, "the HTTP server", offsetof(struct sk_core_conf, admin),
     .sub = admin_options},
    {"kafka", SK_OPT_GROUP, NULL, false, "where Kafka is and how topics are made",
     offsetof(struct sk_core_conf, kafka), .sub = sk_kafka_options},
    {"log", SK_OPT_GROUP, NULL, false, "logging", offsetof(struct sk_core_conf, log),
     .sub = log_options},
    {"node", SK_OPT_GROUP, NULL, false, "this daemon among the nodes of its deployment",
     offsetof(struct sk_core_conf, node), .sub = node_options},
    {"shutdown_timeout", SK_OPT_DURATION, "30s", false,
     "how long a graceful stop may take before connectors are abandoned",
     offsetof(struct sk_core_conf, shutdown_timeout_ms), .min = 100, .max = 3600000},
    {"progress_interval", SK_OPT_DURATION, "30s", false,
     "how often progress is logged (every 2s with --once or on a terminal)",
     offsetof(struct sk_core_conf, progress_interval_ms), .min = 100, .max = 86400000},
    {"lag_interval", SK_OPT_DURATION, "5s", false,
     "how often the daemon samples its sinks' consumer lag (/api/v1/lag, /metrics)",
     offsetof(struct sk_core_conf, lag_interval_ms), .min = 500, .max = 3600000},
    {0},
};

static bool in_table(const struct sk_option *t, const char *key)
{
    for (; t->name; t++)
        if (strcmp(t->name, key) == 0)
            return true;
    return false;
}

/*
 * A view of map holding only the entries whose key is (or is not) in table,
 * plus the entries in `also`. Shares the kids; free with view_free().
 */
static struct sk_cnode *view(const struct sk_cnode *map, const struct sk_option *table,
                             bool keep_listed)
{
    struct sk_cnode *v = sk_malloc(sizeof(*v));
    *v = *map;
    v->kids = sk_calloc(map->n_kids + 1, sizeof(*v->kids));
    v->n_kids = 0;
    for (size_t i = 0; i < map->n_kids; i++)
        if (in_table(table, map->kids[i]->key) == keep_listed)
            v->kids[v->n_kids++] = map->kids[i];
    return v;
}

static void view_free(struct sk_cnode *v)
{
    if (v) {
        free(v->kids);
        free(v);
    }
}

bool sk_connector_name_valid(const char *s)
{
    if (!*s || strlen(s) > 100)
        return false;
    for (; *s; s++)
        if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) && *s != '-' && *s != '_')
            return false;
    return true;
}

/*
 * kafka.topic_prefix becomes part of every topic name: Kafka allows only
 * [A-Za-z0-9._-] and at most 249 characters, and the longest name is the
 * prefix plus the longest collection (or "_cursors"). A longer prefix once
 * passed check and crashed librdkafka; refuse it here, with its position.
 */
#define KAFKA_TOPIC_MAX 249
static void check_topic_prefix(const struct sk_daemon_config *cfg, struct sk_config_errors *errs)
{
    const char *prefix = cfg->core.kafka.topic_prefix;
    const struct sk_cnode *at = sk_cnode_get(sk_cnode_get(cfg->tree, "kafka"), "topic_prefix");
    if (!prefix || !at)
        return;
    size_t longest = strlen("_cursors");
    for (size_t i = 0; sk_entities[i]; i++)
        if (strlen(sk_entities[i]->collection) > longest)
            longest = strlen(sk_entities[i]->collection);
    size_t len = strlen(prefix);
    for (const char *p = prefix; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-') {
            sk_config_errors_add(errs, at,
                                 "character %zu is not allowed in a Kafka topic name (expected "
                                 "letters, digits, '.', '_' and '-')",
                                 (size_t)(p - prefix) + 1);
            return;
        }
    }
    if (len + longest > KAFKA_TOPIC_MAX)
        sk_config_errors_add(errs, at,
                             "%zu characters is too long (expected at most %zu: topic names hold "
                             "at most %d characters, and the longest is the prefix + \"%s\")",
                             len, KAFKA_TOPIC_MAX - longest, KAFKA_TOPIC_MAX,
                             longest == strlen("_cursors") ? "_cursors" : "a collection name");
}

/*
 * kafka.deployment and node.name become part of consumer group,
 * transactional and client ids (names.h): Kafka's name characters only, and
 * short enough to leave room for the connector names. Unset, they are
 * resolved here (from the topic prefix and the host name), so every reader
 * of the configuration (run, lag, dlq) derives the same names.
 */
#define DEPLOYMENT_MAX 100
#define NODE_NAME_MAX 64
static void resolve_names(struct sk_daemon_config *cfg, struct sk_config_errors *errs)
{
    struct sk_kafka_conf *k = &cfg->core.kafka;
    const struct sk_cnode *at = sk_cnode_get(sk_cnode_get(cfg->tree, "kafka"), "deployment");
    if (k->deployment && !sk_name_valid(k->deployment, DEPLOYMENT_MAX) && at)
        sk_config_errors_add(errs, at,
                             "not a deployment name (expected 1 to %d letters, digits, '.', '_' "
                             "or '-')",
                             DEPLOYMENT_MAX);
    if (!k->deployment)
        k->deployment = sk_name_default_deployment(k->topic_prefix);
    at = sk_cnode_get(sk_cnode_get(cfg->tree, "node"), "name");
    if (cfg->core.node.name && !sk_name_valid(cfg->core.node.name, NODE_NAME_MAX) && at)
        sk_config_errors_add(errs, at,
                             "not a node name (expected 1 to %d letters, digits, '.', '_' or '-')",
                             NODE_NAME_MAX);
    if (!cfg->core.node.name)
        cfg->core.node.name = sk_name_default_node();
    k->node_name = cfg->core.node.name;
}

/*
 * The embedded broker lives inside this one daemon: it is one node by
 * nature, and nothing else ever joins its cluster. kafka.deployment (which
 * keeps the deployments that share a cluster apart) and node.name (which
 * tells the nodes of a deployment apart) name what only exists on a real
 * cluster; set there they would suggest a deployment of several nodes that
 * cannot be, so they are refused rather than silently ignored. Unset, they
 * still take their defaults (group names, /api/v1/cluster). It is the mock
 * cluster, which speaks plaintext only: with TLS or SASL
 * (kafka.properties.security.protocol) every client retried for ever.
 */
static void check_embedded(const struct sk_daemon_config *cfg, struct sk_config_errors *errs)
{
    const char *brokers = cfg->core.kafka.brokers;
    if (brokers && strcmp(brokers, "embedded") != 0)
        return;
    const struct sk_cnode *at = sk_cnode_get(sk_cnode_get(cfg->tree, "kafka"), "deployment");
    if (at)
        sk_config_errors_add(errs, at,
                             "not allowed with kafka.brokers: embedded (the embedded broker is a "
                             "single node inside this daemon, and a deployment name only matters "
                             "on a real Kafka cluster that several daemons or deployments share)");
    at = sk_cnode_get(sk_cnode_get(cfg->tree, "node"), "name");
    if (at)
        sk_config_errors_add(errs, at,
                             "not allowed with kafka.brokers: embedded (the embedded broker is a "
                             "single node inside this daemon, and a node name only matters among "
                             "the daemons of a deployment on a real Kafka cluster)");
    at = sk_cnode_get(sk_cnode_get(sk_cnode_get(cfg->tree, "kafka"), "properties"),
                      "security.protocol");
    if (at && at->value &&
        (strcasecmp(at->value, "ssl") == 0 || strcasecmp(at->value, "sasl_ssl") == 0 ||
         strcasecmp(at->value, "sasl_plaintext") == 0))
        sk_config_errors_add(errs, at,
                             "not allowed with kafka.brokers: embedded (the embedded broker "
                             "speaks plaintext only: every client would fail to connect)");
}

/*
 * admin.listen is parsed as the HTTP server will parse it (one parser,
 * sk_http_listen_parse), and admin.token must be one an Authorization header
 * can carry: an empty one (a credential file left empty) turned every
 * state-changing call off without a word. Leaving the key out still does,
 * on purpose (the API then answers 403 and says why).
 */
static void check_admin(const struct sk_daemon_config *cfg, struct sk_config_errors *errs)
{
    const struct sk_cnode *admin = sk_cnode_get(cfg->tree, "admin");
    const struct sk_cnode *at = sk_cnode_get(admin, "listen");
    const char *listen = cfg->core.admin.listen;
    struct sockaddr_storage ss;
    socklen_t len;
    const char *why;
    if (at && listen && strcmp(listen, "off") != 0 &&
        (why = sk_http_listen_parse(listen, &ss, &len)) != NULL)
        sk_config_errors_add(errs, at, "\"%s\" is not an address to listen on: %s",
                             sk_cnode_display(at), why);
    at = sk_cnode_get(admin, "token");
    const char *token = cfg->core.admin.token;
    if (!at || !token)
        return;
    if (!*token)
        sk_config_errors_add(errs, at,
                             "empty (expected the bearer token of the state-changing API calls; "
                             "leave the key out to refuse them all)");
    else if (isspace((unsigned char)token[0]) || isspace((unsigned char)token[strlen(token) - 1]))
        sk_config_errors_add(errs, at,
                             "begins or ends with white space, which an Authorization header "
                             "cannot carry (expected the token alone; ${file:} removes one "
                             "trailing newline)");
}

/*
 * kafka.brokers and kafka.embedded_dir empty: the first was taken for a real
 * cluster without an address (the start waited out connect_timeout), the
 * second failed the embedded broker's start. kafka.properties are tried by
 * librdkafka itself (sk_kafka_properties_check).
 */
static void check_kafka(const struct sk_daemon_config *cfg, struct sk_config_errors *errs)
{
    const struct sk_cnode *kafka = sk_cnode_get(cfg->tree, "kafka");
    const struct sk_kafka_conf *k = &cfg->core.kafka;
    const struct sk_cnode *at = sk_cnode_get(kafka, "brokers");
    if (at && k->brokers && !k->brokers[strspn(k->brokers, " ,\t")])
        sk_config_errors_add(errs, at,
                             "empty value (expected host:port,... or \"embedded\")");
    at = sk_cnode_get(kafka, "embedded_dir");
    if (at && k->embedded_dir && !*k->embedded_dir)
        sk_config_errors_add(errs, at, "empty value (expected a directory, or \"off\")");
    sk_kafka_properties_check(sk_cnode_get(kafka, "properties"), errs);
}

static char *type_list(bool sources)
{
    size_t len = 1;
    for (size_t i = 0; sources ? sk_registry_sources[i] != NULL : sk_registry_sinks[i] != NULL; i++)
        len += strlen(sources ? sk_registry_sources[i]->type : sk_registry_sinks[i]->type) + 2;
    char *s = sk_calloc(len, 1);
    for (size_t i = 0; sources ? sk_registry_sources[i] != NULL : sk_registry_sinks[i] != NULL;
         i++) {
        if (i)
            strcat(s, ", ");
        strcat(s, sources ? sk_registry_sources[i]->type : sk_registry_sinks[i]->type);
    }
    return s;
}

/* Validates one connector entry's two halves. Returns the connector's options table. */
static void *load_entry(const struct sk_cnode *entry, const struct sk_option *settings_table,
                        void *settings, const struct sk_option *conn_table, size_t conf_size,
                        struct sk_config_errors *errs)
{
    struct sk_cnode *core = view(entry, settings_table, true);
    sk_options_apply(settings_table, core, settings, errs);
    view_free(core);
    if (!conn_table)
        return NULL;
    void *conf = sk_calloc(1, conf_size ? conf_size : 1);
    struct sk_cnode *own = view(entry, settings_table, false);
    sk_options_apply(conn_table, own, conf, errs);
    view_free(own);
    return conf;
}

static const struct sk_cnode *entry_type(const struct sk_cnode *entry,
                                         struct sk_config_errors *errs)
{
    const struct sk_cnode *t = sk_cnode_get(entry, "type");
    if (!t)
        sk_config_errors_add(errs, entry, "missing required option \"type\" (a connector type)");
    else if (t->kind != SK_CNODE_SCALAR || t->secret)
        t = NULL; /* reported by the settings table (a reference is refused there) */
    return t;
}

static void resolve_entities(struct sk_sink_def *def, const struct sk_cnode *entry,
                             struct sk_config_errors *errs)
{
    const struct sk_cnode *list = sk_cnode_get(entry, "entities");
    if (!list || def->settings.entities.n == 0) {
        def->entities = sk_calloc(SK_ENTITY_COUNT, sizeof(*def->entities));
        for (size_t i = 0; sk_entities[i]; i++)
            def->entities[def->n_entities++] = sk_entities[i];
        return;
    }
    def->entities = sk_calloc(def->settings.entities.n, sizeof(*def->entities));
    for (size_t i = 0; i < def->settings.entities.n; i++) {
        const char *name = def->settings.entities.v[i];
        const struct sk_entity *e = sk_entity_by_name(name);
        if (!e)
            e = sk_entity_by_collection(name);
        /* The item it came from (items that are not strings were dropped, so
         * the index may not match): its position, and ******** for a secret. */
        const struct sk_cnode *at = list;
        for (size_t k = 0; list->kind == SK_CNODE_SEQ && k < list->n_kids; k++) {
            if (list->kids[k]->value && strcmp(list->kids[k]->value, name) == 0) {
                at = list->kids[k];
                break;
            }
        }
        if (!e) {
            sk_config_errors_add(errs, at,
                                 "unknown entity type \"%s\" (expected an SS 12000 type such as "
                                 "Person or persons)",
                                 sk_cnode_display(at));
            continue;
        }
        bool dup = false;
        for (size_t j = 0; j < def->n_entities; j++)
            dup |= def->entities[j] == e;
        if (!dup)
            def->entities[def->n_entities++] = e;
    }
}

static void load_section(struct sk_daemon_config *cfg, const struct sk_cnode *section, bool sources,
                         struct sk_config_errors *errs)
{
    if (!section)
        return;
    if (section->kind != SK_CNODE_MAP) {
        sk_config_errors_add(errs, section, "expected a map of %s by name",
                             sources ? "sources" : "sinks");
        return;
    }
    for (size_t i = 0; i < section->n_kids; i++) {
        const struct sk_cnode *entry = section->kids[i];
        if (!sk_connector_name_valid(entry->key))
            sk_config_errors_add(
                errs, entry, "invalid name \"%s\" (expected lowercase letters, digits, - and _)",
                entry->key);
        if (entry->kind != SK_CNODE_MAP) {
            sk_config_errors_add(errs, entry, "expected a map of options");
            continue;
        }
        for (size_t j = 0; j < cfg->n_sources; j++)
            if (strcmp(cfg->sources[j].name, entry->key) == 0)
                sk_config_errors_add(errs, entry, "name \"%s\" is already used by a source",
                                     entry->key);
        for (size_t j = 0; j < cfg->n_sinks; j++)
            if (strcmp(cfg->sinks[j].name, entry->key) == 0)
                sk_config_errors_add(errs, entry, "name \"%s\" is already used by a sink",
                                     entry->key);
        const struct sk_cnode *t = entry_type(entry, errs);
        if (sources) {
            struct sk_source_def *def = &cfg->sources[cfg->n_sources++];
            def->name = sk_strdup(entry->key);
            def->ops = t ? sk_registry_source(t->value) : NULL;
            if (t && !def->ops) {
                char *types = type_list(true);
                sk_config_errors_add(errs, t, "unknown source type \"%s\" (expected one of: %s)",
                                     sk_cnode_display(t), types);
                free(types);
            }
            def->conf = load_entry(entry, sk_source_settings_options, &def->settings,
                                   def->ops ? def->ops->options : NULL,
                                   def->ops ? def->ops->conf_size : 0, errs);
        } else {
            struct sk_sink_def *def = &cfg->sinks[cfg->n_sinks++];
            def->name = sk_strdup(entry->key);
            def->ops = t ? sk_registry_sink(t->value) : NULL;
            if (t && !def->ops) {
                char *types = type_list(false);
                sk_config_errors_add(errs, t, "unknown sink type \"%s\" (expected one of: %s)",
                                     sk_cnode_display(t), types);
                free(types);
            }
            def->conf = load_entry(entry, sk_sink_settings_options, &def->settings,
                                   def->ops ? def->ops->options : NULL,
                                   def->ops ? def->ops->conf_size : 0, errs);
            resolve_entities(def, entry, errs);
        }
    }
}

static struct sk_daemon_config *load(const char *path, const char *const *keep,
                                     struct sk_config_errors *errs)
{
    size_t before = errs->n;
    struct sk_daemon_config *cfg = sk_calloc(1, sizeof(*cfg));
    cfg->path = sk_strdup(path);
    cfg->tree = sk_config_load_keeping(path, keep, errs);
    if (!cfg->tree)
        goto fail;
    if (cfg->tree->kind != SK_CNODE_MAP) {
        sk_config_errors_add(errs, cfg->tree, "expected a map at the top level");
        goto fail;
    }
    static const struct sk_option sections[] = {{"sources"}, {"sinks"}, {0}};
    struct sk_cnode *core = view(cfg->tree, sections, false);
    sk_options_apply(sk_core_options, core, &cfg->core, errs);
    view_free(core);
    check_topic_prefix(cfg, errs);
    resolve_names(cfg, errs);
    check_embedded(cfg, errs);
    check_admin(cfg, errs);
    check_kafka(cfg, errs);

    const struct sk_cnode *srcs = sk_cnode_get(cfg->tree, "sources");
    const struct sk_cnode *snks = sk_cnode_get(cfg->tree, "sinks");
    cfg->sources = sk_calloc(srcs ? srcs->n_kids + 1 : 1, sizeof(*cfg->sources));
    cfg->sinks = sk_calloc(snks ? snks->n_kids + 1 : 1, sizeof(*cfg->sinks));
    load_section(cfg, srcs, true, errs);
    load_section(cfg, snks, false, errs);
    if (cfg->n_sources + cfg->n_sinks == 0)
        sk_config_errors_add(errs, cfg->tree,
                             "no connectors configured (expected a \"sources\" or \"sinks\" map)");
    if (errs->n == before)
        return cfg;
fail:
    sk_daemon_config_free(cfg);
    return NULL;
}

struct sk_daemon_config *sk_daemon_config_load(const char *path, struct sk_config_errors *errs)
{
    return load(path, NULL, errs);
}

void sk_admin_limits(const struct sk_admin_conf *a, struct sk_http_limits *out)
{
    struct sk_admin_conf defaults = {0};
    if (!a) {
        sk_options_apply(admin_options, NULL, &defaults, NULL); /* the table's defaults */
        a = &defaults;
    }
    *out = (struct sk_http_limits){
        .max_body = a->max_body,
        .connections = (unsigned)a->max_connections,
        .per_client = (unsigned)a->max_connections_per_client,
        .header_timeout_ms = a->header_timeout_ms,
    };
    sk_options_free(admin_options, &defaults);
}

struct sk_daemon_config *sk_daemon_config_load_admin(const char *path,
                                                     struct sk_config_errors *errs)
{
    static const char *const connectors[] = {"sources", "sinks", NULL};
    return load(path, connectors, errs);
}

void sk_daemon_config_free(struct sk_daemon_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->n_sources; i++) {
        struct sk_source_def *d = &cfg->sources[i];
        if (d->ops && d->conf)
            sk_options_free(d->ops->options, d->conf);
        free(d->conf);
        sk_options_free(sk_source_settings_options, &d->settings);
        free(d->name);
    }
    for (size_t i = 0; i < cfg->n_sinks; i++) {
        struct sk_sink_def *d = &cfg->sinks[i];
        if (d->ops && d->conf)
            sk_options_free(d->ops->options, d->conf);
        free(d->conf);
        sk_options_free(sk_sink_settings_options, &d->settings);
        free(d->entities);
        free(d->name);
    }
    free(cfg->sources);
    free(cfg->sinks);
    sk_options_free(sk_core_options, &cfg->core);
    sk_cnode_free(cfg->tree);
    free(cfg->path);
    free(cfg);
}
