/*
 * hub_sink.c: the ss12000-api-sink connector: its options, open and close,
 * and the sink side (apply, offsets). The state is the shared state store's
 * SQLite file (<state_dir>/<sink name>.db, mode 0600) with the hub's own
 * tables (hub_store.c); the rows and the offsets of a batch are written in
 * one transaction (delivery rule 3: exactly-once apply). What it serves:
 * hub_http.c; the whole design: docs/ss12000-api-sink.md.
 *
 * Owns: the options and what they may hold (client names, scopes). Must
 * never: open without a scope for every client (a client without one would
 * read nothing or, worse, everything), or serve before the state is open.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hub.h"
#include "hub_subs.h"
#include "util.h"

#define OPT(f) offsetof(struct hub_conf, f)

static const struct sk_option hub_options[] = {
    {.name = "listen",
     .type = SK_OPT_STRING,
     .required = true,
     .help = "host:port the API is served on; plain HTTP only on a loopback address",
     .offset = OPT(listen)},
    {.name = "state_dir",
     .type = SK_OPT_STRING,
     .def = "ss12000-api-state",
     .help = "directory of the hub's state (<state_dir>/<sink name>.db, mode 0600)",
     .offset = OPT(state_dir)},
    {.name = "tls_cert",
     .type = SK_OPT_STRING,
     .help = "PEM certificate (chain) file: serve HTTPS",
     .offset = OPT(tls_cert)},
    {.name = "tls_key",
     .type = SK_OPT_STRING,
     .help = "PEM private key file of tls_cert",
     .offset = OPT(tls_key)},
    {.name = "clients",
     .type = SK_OPT_MAP,
     .required = true,
     .help = "client name -> its bearer token (use ${file:...} or ${env:...})",
     .offset = OPT(clients)},
    {.name = "client_entities",
     .type = SK_OPT_MAP,
     .required = true,
     .help = "client name -> the entity types it may read (Person, groups, ...; comma-separated; "
             "all)",
     .offset = OPT(client_entities)},
    {.name = "page_token_ttl",
     .type = SK_OPT_DURATION,
     .def = "1h",
     .help = "how long a pageToken stays valid (410 Gone after)",
     .offset = OPT(page_token_ttl_ms),
     .min = 1000,
     .max = INT32_MAX * 1000LL},
    {.name = "deleted_retention",
     .type = SK_OPT_DURATION,
     .def = "90d",
     .help = "how long /deletedEntities lists a deletion",
     .offset = OPT(deleted_retention_ms),
     .min = 60000,
     .max = INT32_MAX * 1000LL},
    {.name = "max_limit",
     .type = SK_OPT_INT,
     .def = "1000",
     .help = "the largest page served (also the page size when a request gives no limit)",
     .offset = OPT(max_limit),
     .min = 1,
     .max = 100000},
    {.name = "threads",
     .type = SK_OPT_INT,
     .def = "4",
     .help = "HTTP threads answering requests",
     .offset = OPT(threads),
     .min = 1,
     .max = 64},
    {.name = "webhook_ttl",
     .type = SK_OPT_DURATION,
     .def = "7d",
     .help = "how long a subscription lives after its creation or last renewal (PATCH)",
     .offset = OPT(webhook_ttl_ms),
     .min = 1000,
     .max = 365LL * 86400000},
    {.name = "webhook_batch",
     .type = SK_OPT_DURATION,
     .def = "250ms",
     .help = "changes within this window after the first go out as one callback",
     .offset = OPT(webhook_batch_ms),
     .min = 0,
     .max = 1000},
    {.name = NULL},
};

/* A client name goes into logs and page tokens: plain characters only. */
static bool client_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", name[i]))
            return false;
    return true;
}

static bool served(const struct hub *h, const struct sk_entity *e)
{
    for (size_t i = 0; i < h->n_entities; i++)
        if (h->entities[i] == e)
            return true;
    return false;
}

/* "Person, groups" or "all" -> may_read; -1 with err naming the client. */
static int read_scope(const struct hub *h, struct hub_client *c, const char *text,
                      struct sk_error *err)
{
    char *copy = sk_strdup(text), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(copy, ", ", &save); t && rc == 0; t = strtok_r(NULL, ", ", &save)) {
        const struct sk_entity *e = sk_entity_by_name(t);
        if (!e)
            e = sk_entity_by_collection(t);
        if (strcmp(t, "all") == 0) {
            for (size_t i = 0; i < h->n_entities; i++)
                c->may_read[sk_entity_index(h->entities[i])] = true;
        } else if (!e) {
            rc = sk_error_set(err, SK_ERR_FATAL, "client_entities.%s: \"%s\" is no entity type",
                              c->name, t);
        } else if (!served(h, e)) {
            rc = sk_error_set(err, SK_ERR_FATAL,
                              "client_entities.%s: %s is not among this sink's entities", c->name,
                              e->name);
        } else {
            c->may_read[sk_entity_index(e)] = true;
        }
    }
    free(copy);
    return rc;
}

static const char *map_get(const struct sk_strmap *map, const char *key)
{
    for (size_t i = 0; i < map->n; i++)
        if (strcmp(map->keys[i], key) == 0)
            return map->values[i];
    return NULL;
}

static int read_clients(struct hub *h, struct sk_error *err)
{
    const struct hub_conf *conf = h->conf;
    if (conf->clients.n == 0)
        return sk_error_set(err, SK_ERR_FATAL, "clients: at least one client is needed");
    for (size_t i = 0; i < conf->client_entities.n; i++)
        if (!map_get(&conf->clients, conf->client_entities.keys[i]))
            return sk_error_set(err, SK_ERR_FATAL, "client_entities.%s: no such client in clients",
                                conf->client_entities.keys[i]);
    h->clients = sk_calloc(conf->clients.n, sizeof(*h->clients));
    for (size_t i = 0; i < conf->clients.n; i++) {
        struct hub_client *c = &h->clients[h->n_clients++];
        c->name = conf->clients.keys[i];
        c->token = conf->clients.values[i];
        if (!client_name_ok(c->name))
            return sk_error_set(err, SK_ERR_FATAL,
                                "clients: \"%s\" is not a client name (1-64 of A-Z a-z 0-9 . _ -)",
                                c->name);
        if (strlen(c->token) < 16)
            return sk_error_set(err, SK_ERR_FATAL,
                                "clients.%s: the token is shorter than 16 characters", c->name);
        const char *scope = map_get(&conf->client_entities, c->name);
        if (!scope)
            return sk_error_set(err, SK_ERR_FATAL,
                                "client_entities.%s: missing (what may this client read?)",
                                c->name);
        if (read_scope(h, c, scope, err) < 0)
            return -1;
    }
    return 0;
}

static void hub_close(struct sk_sink *self)
{
    struct hub *h = self->priv;
    if (!h)
        return;
    hub_http_stop(h); /* no request runs after this */
    hub_subs_close(h);
    hub_reader_pool_free(h);
    pthread_mutex_destroy(&h->pool_mu);
    sk_state_close(h->state);
    free(h->clients);
    free(h->db_path);
    free(h);
    self->priv = NULL;
}

/* Sets self->priv (freed by hub_close, also when open fails). */
static int hub_open(struct sk_sink *self, struct sk_error *err)
{
    const struct hub_conf *conf = self->conf;
    struct hub *h = sk_calloc(1, sizeof(*h));
    self->priv = h;
    h->name = self->name;
    h->conf = conf;
    h->entities = self->entities;
    h->n_entities = self->n_entities;
    pthread_mutex_init(&h->pool_mu, NULL);
    if (!self->incarnation) {
        sk_error_set(err, SK_ERR_FATAL, "no broker incarnation given: offsets cannot be kept");
        goto fail;
    }
    if (read_clients(h, err) < 0)
        goto fail;
    if (mkdir(conf->state_dir, 0700) < 0 && errno != EEXIST) {
        sk_error_set(err, SK_ERR_FATAL, "state_dir %s: %s", conf->state_dir, strerror(errno));
        goto fail;
    }
    h->db_path = sk_asprintf("%s/%s.db", conf->state_dir, self->name);
    const char **collections = sk_calloc(self->n_entities + 1, sizeof(*collections));
    for (size_t i = 0; i < self->n_entities; i++)
        collections[i] = self->entities[i]->collection;
    struct sk_state_opts o = {.path = h->db_path,
                              .busy_timeout_ms = 5000,
                              .private_file = true, /* person documents */
                              .offsets = true,
                              .collections = collections,
                              .n_collections = self->n_entities,
                              .schema = hub_store_schema,
                              .schema_ctx = h};
    h->state = sk_state_open(&o, err);
    free(collections);
    if (!h->state || hub_store_load(h, err) < 0 || hub_subs_open(h, err) < 0 ||
        hub_http_start(h, err) < 0)
        goto fail;
    return 0;
fail:
    hub_close(self);
    return -1;
}

/* One transaction: every record with its stamp, then the offsets (state_store.h). */
static int hub_apply(struct sk_sink *self, const struct sk_record *recs, size_t n,
                     struct sk_outcome *out, struct sk_error *err)
{
    struct hub *h = self->priv;
    h->batch_modified = h->batch_deleted = 0;
    int rc = sk_state_apply(h->state, self->incarnation, recs, n, out, hub_store_record,
                            hub_store_finish, h, err);
    if (rc == 0) /* committed: now subscribers may read it */
        hub_subs_changed(h, h->batch_modified, h->batch_deleted);
    return rc;
}

static int hub_mark_offsets(struct sk_sink *self, const struct sk_offsets *offsets,
                            struct sk_error *err)
{
    struct hub *h = self->priv;
    return sk_state_mark_offsets(h->state, self->incarnation, offsets, err);
}

/* Appends to out (caller frees with sk_offsets_free) the offsets of this incarnation. */
static int hub_stored_offsets(struct sk_sink *self, struct sk_offsets *out, struct sk_error *err)
{
    struct hub *h = self->priv;
    return sk_state_stored_offsets(h->state, self->incarnation, out, err);
}

/* The snapshot sweep's view: what the hub serves of e. */
static int hub_keys(struct sk_sink *self, const struct sk_entity *e,
                    void (*fn)(void *ctx, const char *key, const char *doc), void *ctx,
                    struct sk_error *err)
{
    struct hub *h = self->priv;
    return sk_state_keys(h->state, e->collection, fn, ctx, err);
}

/* The URL it serves on (the port, when listen gave 0, is the one bound). */
static const char *hub_target(struct sk_sink *self)
{
    return ((struct hub *)self->priv)->target;
}

/* Protected identities: vendors get the minimal person unless configured otherwise. */
const struct sk_sink_ops ss12000_api_sink_ops = {
    .type = "ss12000-api-sink",
    .summary = "serves the SS 12000 2.1 API from the topics (a hub for vendors), state in SQLite",
    .options = hub_options,
    .conf_size = sizeof(struct hub_conf),
    .default_protected = "minimal",
    .target_kind = SK_TARGET_NODE_LOCAL, /* every node serves from its own complete copy */
    .open = hub_open,
    .apply = hub_apply,
    .mark_offsets = hub_mark_offsets,
    .stored_offsets = hub_stored_offsets,
    .keys = hub_keys,
    .target = hub_target,
    .close = hub_close,
};
