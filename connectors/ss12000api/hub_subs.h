/*
 * hub_subs.h: the hub's /subscriptions and the webhooks it sends
 * (docs/ss12000-api-sink.md, "Subscriptions and webhooks").
 *
 * hub_subs.c: the subscriptions (per client, kept in the hub_subs table of
 * the state database and in memory) and their HTTP endpoints. hub_notify.c:
 * the notifier threads that POST the spec's callback to each subscriber
 * whose subscription covers a changed type, batched, with retries.
 *
 * Threads: the HTTP threads create, renew and delete; the sink's thread
 * hands over what a committed batch changed (hub_subs_changed, which only
 * marks and signals: it never waits on a subscriber); the notifier threads
 * deliver. Everything shared is under hub_subs.mu; the subscriptions'
 * database connection (read-write, its own) is under hub_subs.db_mu, never
 * taken while mu is held; a creation holds hub_subs.create_mu (taken before
 * either) from its quota check to its insert.
 */
#ifndef SK_HUB_SUBS_H
#define SK_HUB_SUBS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <sqlite3.h>

#include "hub.h"

/* Notifier threads: a subscriber that hangs holds up one of them, not every delivery. */
#define HUB_NOTIFY_THREADS 4
/* The retries of a failed callback: 500 ms, 1 s, 2 s, ... at most 5 min apart. */
#define HUB_RETRY_FIRST_MS 500
#define HUB_RETRY_MAX_MS (5 * 60 * 1000)
/* One callback attempt, all in (a subscriber answers at once and pulls later). */
#define HUB_CALLBACK_TIMEOUT_MS 5000
/* Subscriptions per client: a client cannot fill the hub's memory or its threads. */
#define HUB_SUBS_PER_CLIENT 100

struct hub_sub {
    char id[37];
    char *client;                   /* the client's name */
    const struct hub_client *owner; /* NULL: no longer configured (kept, never called) */
    char *name, *target;
    uint32_t types;     /* the resourceTypes, by sk_entity_index */
    int64_t expires_us; /* wall clock */
    /* Delivery, under hub_subs.mu. */
    uint32_t pending; /* changed types not yet delivered */
    bool pending_deleted;
    int64_t due_ms; /* sk_mono_ms of the next attempt; 0: nothing to send */
    int attempts;   /* failed attempts in a row */
    bool in_flight;
};

struct sk_http_client;
struct MHD_Connection;
struct hub_subs;

/* A notifier thread and its HTTP client (one libcurl handle: one thread). */
struct hub_notifier {
    struct hub_subs *subs;
    pthread_t thread;
    struct sk_http_client *http;
};

struct hub_subs {
    struct hub *h;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    struct hub_sub **v;
    size_t n, cap;
    bool stop;
    /* Callbacks answered 2xx, attempts failed, subscriptions dropped (read by /metrics). */
    _Atomic uint64_t sent, failed, dropped;
    struct hub_notifier threads[HUB_NOTIFY_THREADS];
    size_t n_threads;
    pthread_mutex_t db_mu;
    sqlite3 *db; /* read-write, the subscriptions' own */
    /* One creation at a time, from counting the client's subscriptions to adding the new one:
     * concurrent POSTs would all count the same number and pass the quota together. */
    pthread_mutex_t create_mu;
};

/* ---- hub_subs.c ------------------------------------------------------------ */

/* The schema of the subscriptions (called from hub_store_schema). */
int hub_subs_schema(struct sk_state *st, struct sk_error *err);
/* Loads the subscriptions and starts the notifier threads; h->subs set (freed by hub_subs_close).
 */
int hub_subs_open(struct hub *h, struct sk_error *err);
/* Stops and joins the threads, frees everything. NULL-safe. */
void hub_subs_close(struct hub *h);
/*
 * What a committed batch changed (by sk_entity_index): marks every
 * subscription that covers and may see one of them; the first mark of a
 * quiet subscription is due webhook_batch later. withheld: types of
 * changes that are deletions for skip clients (hub_change). Never blocks
 * on I/O.
 */
void hub_subs_changed(struct hub *h, uint32_t modified, uint32_t deleted, uint32_t withheld);
/* Takes v[i] out of the list and frees it (under mu). */
void hub_subs_remove_locked(struct hub_subs *s, size_t i);
/* Deletes the row of subscription id of client (under db_mu, so never with mu held): the
 * rows removed (0 or 1), -1 with err. */
int hub_subs_delete_row(struct hub_subs *s, const char *id, const char *client,
                        struct sk_error *err);

/*
 * A request to /subscriptions or /subscriptions/{id} from an authenticated
 * client: the answer's status and body (the spec's shapes) in *status and
 * out, *route the path as logged.
 */
void hub_subs_request(struct hub *h, struct MHD_Connection *c, const struct hub_client *client,
                      const char *method, const char *url, const char *upload, size_t upload_len,
                      int *status, struct sk_buf *out, const char **route);

/* ---- hub_notify.c ---------------------------------------------------------- */

/* Starts the notifier threads; -1 with err. */
int hub_notify_start(struct hub_subs *s, struct sk_error *err);
/* Stops them (an attempt under way ends within HUB_CALLBACK_TIMEOUT_MS) and joins them. */
void hub_notify_stop(struct hub_subs *s);

#endif
