/*
 * scim.h: the parts of the scim-sink connector and what they share. Internal
 * to connectors/scim/; the core sees only scim_sink_ops.
 *
 *   scim_sink.c   options, open/close, apply: the order of a batch, the
 *                 reconciliation of users and groups, error classes
 *   scim_map.c    SS 12000 Person/Group -> SCIM User/Group bodies, who is a
 *                 student/staff/guardian, PATCH bodies per dialect
 *   scim_http.c   requests through the connectors' HTTP client
 *                 (http_client.h): base URL, SCIM media types, JSON bodies
 *   scim_state.c  the local state (SQLite, on connectors/common/state_store.h):
 *                 id map, last documents, relations
 */
#ifndef SK_SCIM_H
#define SK_SCIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "sk_error.h"

#define SCIM_USER_SCHEMA "urn:ietf:params:scim:schemas:core:2.0:User"
#define SCIM_GROUP_SCHEMA "urn:ietf:params:scim:schemas:core:2.0:Group"
#define SCIM_ENTERPRISE_SCHEMA "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
#define SCIM_PATCH_SCHEMA "urn:ietf:params:scim:api:messages:2.0:PatchOp"
/* state_dir when the option table has not filled it. */
#define SCIM_STATE_DIR_DEFAULT "scim-state"

/* The filled option table (scim_sink.c); strings owned by the core. */
struct scim_conf {
    char *url;
    char *auth;
    char *token;
    char *token_url, *client_id, *client_secret, *scope;
    char *ca_file, *client_cert, *client_key;
    bool insecure_skip_verify;
    int64_t timeout_ms;
    int64_t retry_after_max_ms;
    int64_t max_response_size; /* bytes of one response, decompressed */
    struct sk_strlist users;
    struct sk_strlist staff_roles;
    struct sk_strlist groups;
    char *username_from;
    char *employee_number_context;
    char *update;
    char *patch_dialect;
    char *on_delete;
    char *state_dir;
    char *timezone; /* whose calendar date ends an enrolment or duty */
};

struct sk_probe;
/* scim_probe.c: skolsync check --connect (connector.h, struct sk_probe). */
void scim_probe(const void *conf, struct sk_probe *p);

enum scim_dialect { SCIM_DIALECT_RFC, SCIM_DIALECT_ENTRA, SCIM_DIALECT_OKTA };

/* ---- scim_http.c ----------------------------------------------------------- */

struct scim_http; /* opaque: the HTTP client (its handle and token), the base URL */

struct scim_resp {
    long status; /* HTTP status */
    char *body;  /* NUL-terminated, malloc'ed (may be empty) */
    size_t len;
    int64_t retry_after_ms; /* from Retry-After, -1 if absent */
    cJSON *json;            /* body parsed if it is JSON, else NULL */
    char etag[256];         /* the ETag header, "" if none (http_client.h: SK_HTTP_ETAG_MAX) */
};

/* Checks the auth/TLS options and sets up the handle. NULL with err (FATAL). */
struct scim_http *scim_http_new(const struct scim_conf *conf, const char *component,
                                struct sk_error *err);
void scim_http_free(struct scim_http *h);
/*
 * One request to base URL + path (path starts with '/', query already
 * encoded). body: JSON text or NULL; if_match: an entity tag to send as
 * If-Match, or NULL. Returns 0 when a response arrived (any
 * status, in resp: caller frees with scim_resp_free), -1 with err when none
 * did (RETRIABLE: connection, timeout, token endpoint down; PERMANENT: the
 * body exceeded max_response_size; FATAL: the token endpoint refused our
 * credentials, TLS files). Never puts a token into err.
 */
int scim_http_request(struct scim_http *h, const char *method, const char *path, const char *body,
                      const char *if_match, struct scim_resp *resp, struct sk_error *err);
void scim_resp_free(struct scim_resp *r);
/* "scimType: detail" of a SCIM error response, else a prefix of the body, into out. */
void scim_resp_detail(const struct scim_resp *r, char *out, size_t size);

/* ---- scim_map.c ------------------------------------------------------------ */

/* Today as "YYYY-MM-DD" (UTC), for the endDate checks. */
struct sk_tz;
/* The date (YYYY-MM-DD) at now_s (seconds since the epoch) in zone tz (UTC when NULL). */
void scim_today(const struct sk_tz *tz, int64_t now_s, char out[11]);
/* A student: at least one enrolment that is not cancelled and not ended before today. */
bool scim_person_is_student(const cJSON *person, const char *today);
/* A relation (duty, membership) not ended before today. */
bool scim_relation_current(const cJSON *rel, const char *today);
/*
 * The SCIM User body of an SS 12000 person (caller frees with cJSON_Delete),
 * or NULL with why filled when the person cannot be a user (no userName).
 */
cJSON *scim_user_body(const cJSON *person, const struct scim_conf *conf, char *why,
                      size_t why_size);
/* The SCIM Group body; member_ids are the SCIM ids of its provisioned members. */
cJSON *scim_group_body(const cJSON *group, const char *const *member_ids, size_t n_members);
/*
 * True if the attributes we manage (keys of desired, plus managed keys absent
 * from it) have the same values on the server's resource `have` (extra
 * sub-attributes the server adds, like members[].type, are ignored).
 */
bool scim_same_managed(const cJSON *desired, const cJSON *have, bool is_group);
/*
 * The PatchOp that turns `have` (what the server holds, as last sent or as
 * read) into `desired`, in the given dialect. NULL if nothing differs.
 * Caller frees.
 */
cJSON *scim_patch_body(const cJSON *desired, const cJSON *have, bool is_group,
                       enum scim_dialect dialect);
/* PatchOp setting active=false in the dialect. Caller frees. */
cJSON *scim_deactivate_body(enum scim_dialect dialect);

/* ---- scim_state.c ---------------------------------------------------------- */

struct scim_state; /* opaque: the SQLite database and its statements */
struct sk_state;

/* Opens (creates) dir/<name>.db. NULL with err (FATAL). */
struct scim_state *scim_state_open(const char *dir, const char *name, struct sk_error *err);
void scim_state_close(struct scim_state *st);
/* The shared state store under it: the consumed offsets, the file check (state_store.h). */
struct sk_state *scim_state_store(struct scim_state *st);
int scim_state_begin(struct scim_state *st, struct sk_error *err);
int scim_state_commit(struct scim_state *st, struct sk_error *err);

/* Last applied SS 12000 document of kind ("Person", "Group"); *doc caller frees.
 * Returns 1 found, 0 not found. modified_us INT64_MIN if it had none. */
int scim_state_get_doc(struct scim_state *st, const char *kind, const char *uuid, cJSON **doc,
                       int64_t *modified_us);
/* Stores the document's JSON text unless the stored one has a newer
 * meta.modified (then false: a stale update, nothing changed). */
bool scim_state_put_doc(struct scim_state *st, const char *kind, const char *uuid, const char *json,
                        size_t json_len, int64_t modified_us);
void scim_state_del_doc(struct scim_state *st, const char *kind, const char *uuid);
/* Every document kept of collection (persons, groups; others have none): the sweep's keys. */
int scim_state_keys(struct scim_state *st, const char *collection,
                    void (*fn)(void *ctx, const char *key, const char *doc), void *ctx,
                    struct sk_error *err);

/* Duties: which person holds which role. get returns 1 if known. person[37]. */
int scim_state_get_duty(struct scim_state *st, const char *uuid, char person[37],
                        int64_t *modified_us);
void scim_state_put_duty(struct scim_state *st, const char *uuid, const char *person,
                         const char *role, bool current, int64_t modified_us);
void scim_state_del_duty(struct scim_state *st, const char *uuid);
/* A current duty of person whose role is in roles (roles empty: any role). */
bool scim_state_has_duty(struct scim_state *st, const char *person, const struct sk_strlist *roles);

/* Guardians: the responsibles of students. */
void scim_state_set_responsibles(struct scim_state *st, const char *student,
                                 const struct sk_strlist *guardians);
/* The guardians of student, appended to out (caller frees with scim_strlist_free). */
void scim_state_responsibles(struct scim_state *st, const char *student, struct sk_strlist *out);
bool scim_state_is_guardian(struct scim_state *st, const char *person);

/* Group memberships (current ones, as person UUIDs). */
void scim_state_set_members(struct scim_state *st, const char *group,
                            const struct sk_strlist *persons);
/* The SCIM ids of group's members that are provisioned users, in person order. */
void scim_state_member_ids(struct scim_state *st, const char *group, struct sk_strlist *out);
/* Marks every group that lists person as needing its members re-sent. */
void scim_state_mark_groups_of(struct scim_state *st, const char *person);
/* Groups marked dirty (UUIDs), appended to out. */
void scim_state_dirty_groups(struct scim_state *st, struct sk_strlist *out);
void scim_state_clear_dirty(struct scim_state *st, const char *group);

/* The SCIM side: id and last body sent, per kind ("User", "Group") and UUID.
 * Returns 1 found (id[] filled, *sent caller frees; NULL if unknown), 0 not found. */
int scim_state_get_map(struct scim_state *st, const char *kind, const char *uuid, char **id,
                       char **sent);
void scim_state_put_map(struct scim_state *st, const char *kind, const char *uuid, const char *id,
                        const char *sent);
void scim_state_del_map(struct scim_state *st, const char *kind, const char *uuid);
/* The first SQLite error since the last call, into out (for a batch's error); false if none. */
bool scim_state_take_error(struct scim_state *st, char *out, size_t size);

void scim_strlist_add(struct sk_strlist *l, const char *s);
bool scim_strlist_has(const struct sk_strlist *l, const char *s);
void scim_strlist_free(struct sk_strlist *l);

/* ---- the sink's state, shared by scim_sink.c and scim_resource.c ---------- */

struct scim_sink {
    const char *component;
    const struct scim_conf *conf;
    struct scim_http *http;
    struct scim_state *state;
    enum scim_dialect dialect;
    bool use_patch, deactivate;
    bool no_patch; /* the server answered PATCH with 405 or 501: PUT from then on */
    bool want_students, want_staff, want_guardians;
    struct sk_tz *tz; /* conf->timezone */
    char today[11];
    /* per batch: the server is down or throttling, or refused our credentials */
    bool unavailable;
    struct sk_error unavailable_err;
    bool fatal;
    struct sk_error fatal_err;
};

/*
 * Makes the server hold `desired` (a User or Group, kind "User"/"Group") for
 * uuid. *changed: uuid got a SCIM id the state did not have. 0 or -1 with err
 * (PERMANENT: this record; RETRIABLE: the server is away; FATAL: stop).
 */
int scim_resource_upsert(struct scim_sink *s, const char *kind, const char *uuid,
                         const cJSON *desired, bool *changed, struct sk_error *err);
/*
 * Removes uuid's resource, or sets it inactive when deactivate; an unmapped
 * uuid is looked up on the server only when ask_server (an explicit delete:
 * the state may have been lost). *changed: uuid lost its SCIM id.
 */
int scim_resource_remove(struct scim_sink *s, const char *kind, const char *uuid, bool ask_server,
                         bool deactivate, bool *changed, struct sk_error *err);

#endif
