/*
 * hub_sink.c: the ss12000-api-sink connector: its options, open and close,
 * and the sink side (apply, offsets). The state is the shared state store's
 * SQLite file (<state_dir>/<sink name>.db, mode 0600) with the hub's own
 * tables (hub_store.c); the rows and the offsets of a batch are written in
 * one transaction (delivery rule 3: exactly-once apply). What it serves:
 * hub_http.c; the whole design: docs/ss12000-api-sink.md.
 *
 * Owns: the options. Must never: open without the entity types of every
 * client (a client without them would read nothing or, worse, everything;
 * hub_scope.c checks what they hold), or serve before the state is open.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hub.h"
#include "hub_subs.h"
#include "log.h"
#include "util.h"

#define OPT(f) offsetof(struct hub_conf, f)
#define COPT(f) offsetof(struct hub_client_conf, f)

static const struct sk_option oauth2_options[] = {
    {.name = "client_id",
     .type = SK_OPT_STRING,
     .help = "the client_id it sends to POST /token",
     .offset = offsetof(struct hub_oauth2_conf, client_id)},
    {.name = "client_secret",
     .type = SK_OPT_SECRET,
     .help = "its client_secret (at least 16 characters)",
     .offset = offsetof(struct hub_oauth2_conf, client_secret)},
    {.name = NULL},
};

static const char *const protected_modes[] = {"allow", "minimal", "skip", NULL};

static const struct sk_option client_options[] = {
    {.name = "token",
     .type = SK_OPT_SECRET,
     .help = "a static bearer token (at least 16 characters); or oauth2",
     .offset = COPT(token)},
    {.name = "oauth2",
     .type = SK_OPT_GROUP,
     .help = "OAuth2 client credentials (POST /token); or token",
     .offset = COPT(oauth2),
     .sub = oauth2_options},
    {.name = "entities",
     .type = SK_OPT_LIST,
     .required = true,
     .help = "the entity types it may read (Person, groups, ...), or all",
     .offset = COPT(entities)},
    {.name = "attributes",
     .type = SK_OPT_LIST,
     .def = "[all]",
     .help = "the attribute groups it may see (civic_numbers, addresses, ...), or all",
     .offset = COPT(attributes)},
    {.name = "organisations",
     .type = SK_OPT_LIST,
     .help = "organisation ids it may see, with what belongs to them; absent: all",
     .offset = COPT(organisations)},
    {.name = "drop_fields",
     .type = SK_OPT_LIST,
     .help = "field paths removed from what it is served (civicNo, enrolments.educationCode)",
     .offset = COPT(drop_fields)},
    {.name = "protected_identities",
     .type = SK_OPT_ENUM,
     .def = "minimal",
     .help = "persons with a protected identity: allow, minimal or skip (absent for it)",
     .offset = COPT(protected_identities),
     .choices = protected_modes},
    {.name = NULL},
};

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
     .type = SK_OPT_GROUPS,
     .required = true,
     .help = "client name -> {token or oauth2, entities, attributes, organisations, drop_fields, "
             "protected_identities}",
     .offset = OPT(clients),
     .sub = client_options,
     .sub_size = sizeof(struct hub_client_conf)},
    {.name = "access_token_ttl",
     .type = SK_OPT_DURATION,
     .def = "1h",
     .help = "how long an access token from POST /token is valid (OAuth2 clients)",
     .offset = OPT(access_token_ttl_ms),
     .min = 1000,
     .max = 7 * 86400 * 1000LL},
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
    {.name = "max_connections",
     .type = SK_OPT_INT,
     .def = "256",
     .help = "open connections in all; more are refused at accept",
     .offset = OPT(max_connections),
     .min = 1,
     .max = 65536},
    {.name = "max_connections_per_client",
     .type = SK_OPT_INT,
     .def = "64",
     .help = "open connections from one address (a vendor behind one NAT counts once)",
     .offset = OPT(max_connections_per_client),
     .min = 1,
     .max = 65536},
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
    hub_clients_free(h);
    free(h->db_path);
    free(h->changes);
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
    if (hub_clients_build(h, err) < 0)
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
    if (!h->state || hub_store_load(h, err) < 0 || hub_scope_load(h, err) < 0 ||
        hub_subs_open(h, err) < 0 || hub_http_start(h, err) < 0)
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
    h->batch_modified = h->batch_deleted = h->batch_withheld = 0;
    h->n_changes = 0;
    int rc = sk_state_apply(h->state, self->incarnation, recs, n, out, hub_store_record,
                            hub_store_finish, h, err);
    if (rc == 0) /* committed: now subscribers may read it */
        hub_subs_changed(h, h->batch_modified, h->batch_deleted, h->batch_withheld);
    return rc;
}

/* The first catch-up of a copy: from now on it is served (hub.h, complete). */
static void hub_caught_up(struct sk_sink *self)
{
    struct hub *h = self->priv;
    if (atomic_load(&h->complete))
        return;
    struct sk_error err = {0};
    if (hub_store_mark_complete(h, &err) < 0) { /* served all the same; kept at the next start */
        sk_warn(h->name, "keeping the copy's completeness: %s", err.msg);
        atomic_store(&h->complete, true);
    }
    sk_info(h->name, "its copy caught up with the topics: serving the API");
}

/* Its state file deleted or replaced under it: start again (and serve the new one). */
static int hub_health(struct sk_sink *self, struct sk_error *err)
{
    struct hub *h = self->priv;
    return sk_state_check_file(h->state, err);
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

/* ---- metrics per client (connector.h, sk_sink_ops.metrics) ------------------------------ */

static const struct sk_metric_family hub_metric_families[] = {
    {"skolsync_hub_requests_total", "counter", "Requests a client of the hub made"},
    {"skolsync_hub_records_served_total", "counter", "Records the hub served a client"},
    {"skolsync_hub_errors_total", "counter", "Answers 4xx and 5xx the hub gave a client"},
    {"skolsync_hub_request_duration_seconds", "histogram", "Time the hub took to answer"},
    {"skolsync_hub_webhooks_total", "counter",
     "Webhook callbacks the hub made, by result (sent: answered 2xx; failed: retried)"},
    {"skolsync_hub_subscriptions_dropped_total", "counter",
     "Subscriptions dropped because their callbacks failed after they expired"},
    {NULL, NULL, NULL},
};

static void hub_metrics(struct sk_sink *self, size_t family, struct sk_buf *out)
{
    const struct hub *h = self->priv;
    const char *name = hub_metric_families[family].name;
    if (family >= 4) { /* the hub's webhooks, all clients together */
        const struct hub_subs *s = h ? h->subs : NULL;
        if (!s)
            return;
        if (family == 4)
            sk_buf_printf(out,
                          "%s{connector=\"%s\",result=\"sent\"} %llu\n"
                          "%s{connector=\"%s\",result=\"failed\"} %llu\n",
                          name, self->name, (unsigned long long)atomic_load(&s->sent), name,
                          self->name, (unsigned long long)atomic_load(&s->failed));
        else
            sk_buf_printf(out, "%s{connector=\"%s\"} %llu\n", name, self->name,
                          (unsigned long long)atomic_load(&s->dropped));
        return;
    }
    for (size_t i = 0; h && i < h->n_clients; i++) {
        const struct hub_client_stats *st = &h->clients[i].stats;
        char labels[160];
        snprintf(labels, sizeof(labels), "connector=\"%s\",client=\"%s\"", self->name,
                 h->clients[i].name);
        unsigned long long cum = 0;
        switch (family) {
        case 0:
        case 1:
            sk_buf_printf(out, "%s{%s} %llu\n", name, labels,
                          (unsigned long long)atomic_load(family ? &st->records : &st->requests));
            break;
        case 2:
            sk_buf_printf(out, "%s{%s,status=\"4xx\"} %llu\n%s{%s,status=\"5xx\"} %llu\n", name,
                          labels, (unsigned long long)atomic_load(&st->status_4xx), name, labels,
                          (unsigned long long)atomic_load(&st->status_5xx));
            break;
        default:
            for (size_t b = 0; b <= HUB_LATENCY_BUCKETS; b++) {
                cum += atomic_load(&st->latency[b]);
                if (b < HUB_LATENCY_BUCKETS)
                    sk_buf_printf(out, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels,
                                  hub_latency_bounds_ms[b] / 1000.0, cum);
                else
                    sk_buf_printf(out, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, cum);
            }
            sk_buf_printf(out, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", name, labels,
                          (double)atomic_load(&st->latency_sum_us) / 1e6, name, labels, cum);
        }
    }
}

/* The status API: per client how it authenticates, its scope and its counters (no secret). */
static void hub_status(struct sk_sink *self, cJSON *out)
{
    const struct hub *h = self->priv;
    cJSON *arr = cJSON_AddArrayToObject(out, "clients");
    for (size_t i = 0; h && i < h->n_clients; i++) {
        const struct hub_client *c = &h->clients[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", c->name);
        cJSON_AddStringToObject(o, "auth", c->token ? "token" : "oauth2");
        cJSON_AddNumberToObject(o, "organisations", (double)c->n_orgs); /* 0: all */
        cJSON_AddNumberToObject(o, "requests", (double)atomic_load(&c->stats.requests));
        cJSON_AddNumberToObject(o, "records", (double)atomic_load(&c->stats.records));
        cJSON_AddNumberToObject(o, "errors_4xx", (double)atomic_load(&c->stats.status_4xx));
        cJSON_AddNumberToObject(o, "errors_5xx", (double)atomic_load(&c->stats.status_5xx));
        cJSON_AddItemToArray(arr, o);
    }
}

/* The hub stores persons in full; each client's own protected_identities (default minimal)
 * decides what it is served (hub_scope.c). */
const struct sk_sink_ops ss12000_api_sink_ops = {
    .type = "ss12000-api-sink",
    .summary = "serves the SS 12000 2.1 API from the topics (a hub for vendors), state in SQLite",
    .options = hub_options,
    .conf_size = sizeof(struct hub_conf),
    .default_protected = "allow",
    .target_kind = SK_TARGET_NODE_LOCAL, /* every node serves from its own complete copy */
    .open = hub_open,
    .apply = hub_apply,
    .mark_offsets = hub_mark_offsets,
    .stored_offsets = hub_stored_offsets,
    .keys = hub_keys,
    .health = hub_health,
    .caught_up = hub_caught_up,
    .target = hub_target,
    .close = hub_close,
    .metric_families = hub_metric_families,
    .metrics = hub_metrics,
    .status = hub_status,
};
