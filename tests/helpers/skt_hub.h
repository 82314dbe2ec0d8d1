/*
 * skt_hub.h: the ss12000-api-sink (the hub) under test, for the tests of its
 * API (test_ss12000_api_*.c): one hub per test process, opened in-process
 * on 127.0.0.1:0 with two clients, records applied as the sink driver hands
 * them over, and requests with libcurl. Every helper fails the test rather
 * than returning an error.
 */
#ifndef SKT_HUB_H
#define SKT_HUB_H

#include <cjson/cJSON.h>

#include "sk_test.h"

/* The two clients: lms may read everything, lib groups and organisations. */
#define LMS "Bearer lms-token-0123456789"
#define LIB "Bearer lib-token-0123456789"
#define T1 "2025-08-18T06:00:00+02:00"
#define T2 "2025-08-19T06:00:00+02:00"

extern char *skt_hub_dir;             /* its state_dir (made by skt_hub_open if NULL) */
extern char *skt_hub_ca_file;         /* the certificate a TLS hub is checked against, or NULL */
extern struct sk_sink *skt_hub;       /* the open hub */
extern struct skt_recs skt_hub_batch; /* records for the next skt_hub_apply */

/* Opens the hub with extra YAML options appended (NULL: none), caught up with its
 * topics as the sink driver says (what it applies next is served). */
void skt_hub_open(const char *extra);
/* The same, not told it caught up: a copy still filling, unless it was complete once. */
void skt_hub_open_filling(const char *extra);
/* The same with other clients: the entries of clients:, each line indented by two spaces. */
void skt_hub_open_clients(const char *clients, const char *extra);
/* Closes it and frees everything above (a Criterion .fini). */
void skt_hub_finish(void);
/* Applies skt_hub_batch (every record must be APPLIED) and empties it. */
void skt_hub_apply(void);
/* Adds a Person / a Group (class 7A, created and modified T1) to skt_hub_batch. */
void skt_hub_add_person(const char *id, const char *created, const char *modified,
                        const char *given);
void skt_hub_add_group(const char *id);
/* A random lowercase UUID; caller frees. */
char *skt_hub_new_id(void);

/*
 * method path (with its query) at the hub with an Authorization header
 * (NULL: none): the status, the body in *body unless body is NULL (caller
 * frees).
 */
long skt_hub_request(const char *method, const char *path, const char *authorization, char **body);
/* The same with a JSON request body (NULL: none). */
long skt_hub_send(const char *method, const char *path, const char *authorization,
                  const char *request, char **body);
long skt_hub_get(const char *path, const char *authorization, char **body);
/* GET that must answer want; the body parsed (caller deletes). */
cJSON *skt_hub_get_json(const char *path, const char *authorization, long want);
/* GET that must answer want with an error in the spec's shape {code, message} and this code. */
void skt_hub_assert_error(const char *path, const char *authorization, long want, const char *code);

/* stderr (the log) into a file from begin to end; end returns what was logged (caller frees). */
struct skt_hub_log {
    char file[32];
    int fd, saved;
};
struct skt_hub_log skt_hub_log_begin(void);
char *skt_hub_log_end(struct skt_hub_log *log);

/* A page's data member (fails without one), its pageToken (NULL on the last page). */
const cJSON *skt_hub_data(const cJSON *page);
const char *skt_hub_token(const cJSON *page);
/* The string obj.a (or obj.a.b); fails if it is not one. */
const char *skt_hub_str(const cJSON *obj, const char *a, const char *b);
/* The ids of a list page, in order, comma-separated; caller frees. */
char *skt_hub_ids(const cJSON *page);
/* v percent-encoded for a query string; caller frees. */
char *skt_hub_escape(const char *v);

#endif
