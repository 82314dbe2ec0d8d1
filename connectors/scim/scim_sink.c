/*
 * scim_sink.c: the scim-sink connector. Provisions SS 12000 persons as SCIM
 * Users and groups as SCIM Groups (RFC 7643/7644) on a SCIM service
 * provider (Entra ID, Okta, an EGIL-style server, ...). See docs/scim-sink.md.
 *
 * Every record is applied by reconciliation: the record updates the local
 * state (scim_state.c), then the user or group it concerns is compared with
 * what was last sent and only the difference goes out. So a replay sends
 * nothing, a Duty arriving after its Person still makes them staff, and a
 * user created after their group still lands in it (the group is marked
 * dirty and sent again). The consumed offsets are kept in the state, in the
 * transaction of what they cover: a new or lost state has none, and the
 * topics are read from the start to fill it (its relations span topics).
 *
 * Owns: options, open and close, the order of a batch, reconciling users
 * and groups, and the outcome of every record. One resource's requests and
 * what their answers mean are scim_resource.c's.
 * Must never: let an older meta.modified overwrite a newer one
 * (docs/architecture.md §4.3), or apply a record of an entity after an
 * earlier record of the same entity was left for retry (per-key order).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "connector.h"
#include "http_client.h"
#include "log.h"
#include "model.h"
#include "scim.h"
#include "state_store.h"
#include "tz.h"
#include "util.h"

static const char *const auth_choices[] = {"none", "bearer", "oauth2", NULL};
static const char *const username_choices[] = {"eppn", "email", "id", NULL};
static const char *const update_choices[] = {"put", "patch", NULL};
static const char *const dialect_choices[] = {"rfc", "entra", "okta", NULL};
static const char *const on_delete_choices[] = {"delete", "deactivate", NULL};

#define OPT(field) offsetof(struct scim_conf, field)

static const struct sk_option scim_options[] = {
    {"url", SK_OPT_STRING, NULL, true,
     "the SCIM base URL, e.g. https://scim.example.se/scim/v2 (/Users and /Groups are below it)",
     OPT(url)},
    {"auth", SK_OPT_ENUM, "none", false, "none, bearer (token) or oauth2 (client credentials)",
     OPT(auth), .choices = auth_choices},
    {"token", SK_OPT_SECRET, NULL, false, "the bearer token (auth: bearer)", OPT(token)},
    {"token_url", SK_OPT_STRING, NULL, false, "OAuth2 token endpoint (auth: oauth2)",
     OPT(token_url)},
    {"client_id", SK_OPT_STRING, NULL, false, "OAuth2 client id", OPT(client_id)},
    {"client_secret", SK_OPT_SECRET, NULL, false, "OAuth2 client secret", OPT(client_secret)},
    {"scope", SK_OPT_STRING, NULL, false, "OAuth2 scope (optional)", OPT(scope)},
    {"ca_file", SK_OPT_STRING, NULL, false, "CA bundle (PEM) to verify the server with",
     OPT(ca_file)},
    {"client_cert", SK_OPT_STRING, NULL, false, "client certificate (PEM) for mutual TLS",
     OPT(client_cert)},
    {"client_key", SK_OPT_STRING, NULL, false, "client key (PEM) for mutual TLS", OPT(client_key)},
    {"insecure_skip_verify", SK_OPT_BOOL, "false", false,
     "do not verify the server's certificate (tests only)", OPT(insecure_skip_verify)},
    {"timeout", SK_OPT_DURATION, "30s", false, "the longest one HTTP request may take",
     OPT(timeout_ms), .min = 100, .max = 600000},
    {"retry_after_max", SK_OPT_DURATION, "5s", false,
     "on 429/503, wait at most this long for Retry-After before reporting retry",
     OPT(retry_after_max_ms), .min = 0, .max = 600000},
    {"max_response_size", SK_OPT_SIZE, "32MiB", false,
     "largest response body accepted, counted decompressed (bounds the memory of a response)",
     OPT(max_response_size), .min = 64 * 1024, .max = 512LL * 1024 * 1024},
    {"users", SK_OPT_LIST, "[students, staff]", false,
     "who gets an account: students (enrolments), staff (duties), guardians (responsibles)",
     OPT(users)},
    {"staff_roles", SK_OPT_LIST, NULL, false,
     "duty roles that make staff, e.g. [Lärare, Rektor] (default: every role)", OPT(staff_roles)},
    {"groups", SK_OPT_LIST, "[Klass, Undervisning]", false,
     "groupType values provisioned as SCIM Groups", OPT(groups)},
    {"username_from", SK_OPT_ENUM, "eppn", false,
     "userName source: eppn (eduPersonPrincipalNames[0]), email (first school e-mail), id (UUID)",
     OPT(username_from), .choices = username_choices},
    {"employee_number_context", SK_OPT_STRING, NULL, false,
     "externalIdentifiers context whose value becomes the enterprise employeeNumber",
     OPT(employee_number_context)},
    {"update", SK_OPT_ENUM, "put", false, "how to update: put (whole resource) or patch",
     OPT(update), .choices = update_choices},
    {"patch_dialect", SK_OPT_ENUM, "rfc", false,
     "PATCH style: rfc (RFC 7644), entra (capitalised ops), okta (path-less replace)",
     OPT(patch_dialect), .choices = dialect_choices},
    {"on_delete", SK_OPT_ENUM, "delete", false,
     "a person who is deleted or no longer qualifies: delete, or deactivate (active=false)",
     OPT(on_delete), .choices = on_delete_choices},
    {"state_dir", SK_OPT_STRING, "scim-state", false,
     "directory of the id map and last-applied state (<state_dir>/<sink name>.db)", OPT(state_dir)},
    {"timezone", SK_OPT_STRING, "Europe/Stockholm", false,
     "the time zone (tz database name) whose date decides whether an enrolment or duty has "
     "ended",
     OPT(timezone)},
    {.name = NULL},
};

static const char *const scim_drop_fields[] = {"civicNo", NULL};

enum kind { K_OTHER, K_PERSON, K_DUTY, K_GROUP };

/* ---- reconciling users and groups --------------------------------------------------- */

static bool eligible(struct scim_sink *s, const char *uuid, const cJSON *person)
{
    if (!person)
        return false;
    if (s->want_students && scim_person_is_student(person, s->today))
        return true;
    if (s->want_staff && scim_state_has_duty(s->state, uuid, &s->conf->staff_roles))
        return true;
    return s->want_guardians && scim_state_is_guardian(s->state, uuid);
}

/* Brings person uuid's account in line with the state. */
static int reconcile_user(struct scim_sink *s, const char *uuid, bool explicit_delete,
                          struct sk_error *err)
{
    cJSON *person = NULL;
    scim_state_get_doc(s->state, "Person", uuid, &person, NULL);
    bool changed = false;
    int rc;
    if (eligible(s, uuid, person)) {
        char why[200];
        cJSON *body = scim_user_body(person, s->conf, why, sizeof(why));
        if (!body)
            rc = sk_error_set(err, SK_ERR_PERMANENT, "%s", why);
        else
            rc = scim_resource_upsert(s, "User", uuid, body, &changed, err);
        cJSON_Delete(body);
        cJSON_Delete(person);
    } else {
        cJSON_Delete(person);
        rc = scim_resource_remove(s, "User", uuid, explicit_delete, s->deactivate, &changed, err);
    }
    /* a user that got or lost its SCIM id changes the member lists naming it */
    if (changed)
        scim_state_mark_groups_of(s->state, uuid);
    return rc;
}

/*
 * A person reconciled because of another entity's record (a student's
 * guardian, a duty's former holder): a rejection is theirs, not the record's,
 * and is only logged; a retry holds the record back.
 */
static int reconcile_related(struct scim_sink *s, const char *uuid, const char *why,
                             struct sk_error *err)
{
    struct sk_error own = {0};
    if (reconcile_user(s, uuid, false, &own) == 0)
        return 0;
    if (own.cls == SK_ERR_PERMANENT) {
        sk_warn(s->component, "person %s (%s): %s", uuid, why, own.msg);
        return 0;
    }
    return sk_error_set(err, own.cls, "%s %s: %s", why, uuid, own.msg);
}

static bool group_wanted(struct scim_sink *s, const cJSON *group)
{
    if (!group)
        return false;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(group, "groupType");
    if (s->conf->groups.n == 0)
        return true;
    return cJSON_IsString(type) && scim_strlist_has(&s->conf->groups, type->valuestring);
}

static int reconcile_group(struct scim_sink *s, const char *uuid, bool explicit_delete,
                           struct sk_error *err)
{
    cJSON *group = NULL;
    scim_state_get_doc(s->state, "Group", uuid, &group, NULL);
    bool changed;
    int rc;
    if (group_wanted(s, group)) {
        struct sk_strlist ids = {0};
        scim_state_member_ids(s->state, uuid, &ids);
        cJSON *body = scim_group_body(group, (const char *const *)ids.v, ids.n);
        rc = scim_resource_upsert(s, "Group", uuid, body, &changed, err);
        cJSON_Delete(body);
        scim_strlist_free(&ids);
    } else {
        /* groups have no "active": on_delete applies to users only */
        rc = scim_resource_remove(s, "Group", uuid, explicit_delete, false, &changed, err);
    }
    cJSON_Delete(group);
    if (rc == 0)
        scim_state_clear_dirty(s->state, uuid);
    return rc;
}

/*
 * Sends the groups whose member lists changed because a user got or lost a
 * SCIM id. A group the server rejects stays as it is (its own record will
 * show the error); one that cannot be sent now stays dirty for next time.
 */
static int flush_dirty_groups(struct scim_sink *s, struct sk_error *err)
{
    struct sk_strlist dirty = {0};
    scim_state_dirty_groups(s->state, &dirty);
    int rc = 0;
    for (size_t i = 0; i < dirty.n && rc == 0 && !s->unavailable && !s->fatal; i++) {
        struct sk_error e = {0};
        if (reconcile_group(s, dirty.v[i], false, &e) == 0)
            continue;
        if (e.cls == SK_ERR_PERMANENT) {
            sk_warn(s->component, "group %s: %s", dirty.v[i], e.msg);
            scim_state_clear_dirty(s->state, dirty.v[i]);
            continue;
        }
        *err = e;
        rc = -1;
    }
    scim_strlist_free(&dirty);
    return rc;
}

/* ---- applying one record ------------------------------------------------------------ */

static const char *ref_id(const cJSON *obj, const char *key, char out[37])
{
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(obj, key);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(ref, "id");
    if (!cJSON_IsString(id) || sk_uuid_normalize(id->valuestring, out) != 0)
        return NULL;
    return out;
}

/* The stale-update guard (docs/architecture.md §4.3): older than what was applied is a no-op. */
static bool stale(const struct sk_record *r, bool known, int64_t applied_us)
{
    return known && applied_us != INT64_MIN && r->modified_us != INT64_MIN &&
           r->modified_us < applied_us;
}

static int apply_person(struct scim_sink *s, const struct sk_record *r, struct sk_error *err)
{
    struct sk_strlist guardians = {0};
    scim_state_responsibles(s->state, r->key, &guardians);
    int rc;
    if (!r->doc) {
        scim_state_del_doc(s->state, "Person", r->key);
        scim_state_set_responsibles(s->state, r->key, NULL);
        rc = reconcile_user(s, r->key, true, err);
    } else {
        if (!scim_state_put_doc(s->state, "Person", r->key, r->json, r->json_len, r->modified_us)) {
            sk_debug(s->component, "person %s: older than the applied version, skipped", r->key);
            scim_strlist_free(&guardians);
            return 0;
        }
        struct sk_strlist now = {0};
        if (scim_person_is_student(r->doc, s->today)) {
            const cJSON *resp;
            cJSON_ArrayForEach(resp, cJSON_GetObjectItemCaseSensitive(r->doc, "responsibles"))
            {
                char g[37];
                if (ref_id(resp, "person", g) && !scim_strlist_has(&now, g))
                    scim_strlist_add(&now, g);
            }
        }
        scim_state_set_responsibles(s->state, r->key, &now);
        for (size_t i = 0; i < now.n; i++)
            if (!scim_strlist_has(&guardians, now.v[i]))
                scim_strlist_add(&guardians, now.v[i]);
        scim_strlist_free(&now);
        rc = reconcile_user(s, r->key, false, err);
    }
    /* guardians come and go with their students' responsibles */
    for (size_t i = 0; rc == 0 && s->want_guardians && i < guardians.n; i++)
        rc = reconcile_related(s, guardians.v[i], "guardian", err);
    scim_strlist_free(&guardians);
    return rc;
}

static int apply_duty(struct scim_sink *s, const struct sk_record *r, struct sk_error *err)
{
    char before[37] = "";
    int64_t applied_us = INT64_MIN;
    bool known = scim_state_get_duty(s->state, r->key, before, &applied_us) == 1;
    char person[37] = "";
    if (!r->doc) {
        scim_state_del_duty(s->state, r->key);
    } else {
        if (stale(r, known, applied_us))
            return 0;
        if (!ref_id(r->doc, "person", person))
            return sk_error_set(err, SK_ERR_PERMANENT, "duty without a valid person.id");
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(r->doc, "dutyRole");
        scim_state_put_duty(s->state, r->key, person,
                            cJSON_IsString(role) ? role->valuestring : NULL,
                            scim_relation_current(r->doc, s->today), r->modified_us);
    }
    if (!s->want_staff)
        return 0;
    /* a duty moved to another person: the previous holder may stop being staff */
    if (known && before[0] && strcmp(before, person) != 0 &&
        reconcile_related(s, before, "former duty holder", err) < 0)
        return -1;
    if (!person[0])
        return 0;
    int rc = reconcile_user(s, person, false, err);
    if (rc < 0 && err->cls == SK_ERR_PERMANENT) {
        char msg[sizeof(err->msg)];
        snprintf(msg, sizeof(msg), "%s", err->msg);
        sk_error_set(err, SK_ERR_PERMANENT, "person %s: %s", person, msg);
    }
    return rc;
}

static int apply_group(struct scim_sink *s, const struct sk_record *r, struct sk_error *err)
{
    if (!r->doc) {
        scim_state_del_doc(s->state, "Group", r->key);
        scim_state_set_members(s->state, r->key, NULL);
        return reconcile_group(s, r->key, true, err);
    }
    if (!scim_state_put_doc(s->state, "Group", r->key, r->json, r->json_len, r->modified_us))
        return 0; /* older than the applied version */
    struct sk_strlist persons = {0};
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(r->doc, "groupMemberships"))
    {
        char p[37];
        if (scim_relation_current(m, s->today) && ref_id(m, "person", p) &&
            !scim_strlist_has(&persons, p))
            scim_strlist_add(&persons, p);
    }
    scim_state_set_members(s->state, r->key, &persons);
    scim_strlist_free(&persons);
    return reconcile_group(s, r->key, false, err);
}

/* ---- the order of a batch --------------------------------------------------------- */

static enum kind kind_of(const struct sk_record *r)
{
    if (!r->entity)
        return K_OTHER;
    if (strcmp(r->entity->name, "Person") == 0)
        return K_PERSON;
    if (strcmp(r->entity->name, "Duty") == 0)
        return K_DUTY;
    if (strcmp(r->entity->name, "Group") == 0)
        return K_GROUP;
    return K_OTHER;
}

/*
 * Phases: users (persons, duties) created and updated, then groups created
 * and updated (so their members exist), then groups deleted, then users
 * deleted (EGIL's order, docs/architecture.md §10.1). A key's records all go in the phase
 * of its last record, so one entity's records stay in order.
 */
static int phase_of(const struct sk_record *r)
{
    bool del = r->value == NULL;
    switch (kind_of(r)) {
    case K_GROUP:
        return del ? 2 : 1;
    case K_PERSON:
    case K_DUTY:
        return del ? 3 : 0;
    default:
        return 0;
    }
}

struct slot {
    const struct sk_record *rec;
    size_t index; /* into recs */
    size_t run;   /* records of the same entity and key share a run */
    int phase;
};

static int by_key(const void *a, const void *b)
{
    const struct slot *x = a, *y = b;
    const struct sk_record *rx = x->rec, *ry = y->rec;
    if (rx->entity != ry->entity)
        return (uintptr_t)rx->entity < (uintptr_t)ry->entity ? -1 : 1;
    int c = strcmp(rx->key, ry->key);
    if (c)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int by_phase(const void *a, const void *b)
{
    const struct slot *x = a, *y = b;
    if (x->phase != y->phase)
        return x->phase - y->phase;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* The processing order of recs, with per-key runs. Caller frees. */
static struct slot *plan(const struct sk_record *recs, size_t n, size_t *n_runs)
{
    struct slot *slots = sk_calloc(n, sizeof(*slots));
    for (size_t i = 0; i < n; i++) {
        slots[i].rec = &recs[i];
        slots[i].index = i;
    }
    qsort(slots, n, sizeof(*slots), by_key);
    size_t runs = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && recs[slots[j + 1].index].entity == recs[slots[i].index].entity &&
               strcmp(recs[slots[j + 1].index].key, recs[slots[i].index].key) == 0)
            j++;
        int phase = phase_of(&recs[slots[j].index]);
        for (size_t k = i; k <= j; k++) {
            slots[k].run = runs;
            slots[k].phase = phase;
        }
        runs++;
        i = j + 1;
    }
    qsort(slots, n, sizeof(*slots), by_phase);
    *n_runs = runs;
    return slots;
}

static void set_outcome(struct sk_outcome *o, const struct sk_error *err)
{
    o->err = *err;
    o->kind = err->cls == SK_ERR_PERMANENT ? SK_REJECTED : SK_RETRY;
}

/*
 * The batch's offsets, in the transaction of the state they cover: past
 * every record of a partition, or up to its first record to retry (the
 * driver applies the batch again from there, and a restart must not pass
 * it; what follows it is applied again, which sends nothing new).
 */
static int store_offsets(struct scim_sink *s, const char *incarnation,
                         const struct sk_record *recs, size_t n, const struct sk_outcome *out,
                         struct sk_error *err)
{
    bool retry = false;
    for (size_t i = 0; i < n && !retry; i++)
        retry = out[i].kind == SK_RETRY;
    struct sk_offsets o = {0};
    for (size_t i = 0; i < n; i++) {
        if (!recs[i].topic || recs[i].offset < 0 || out[i].kind == SK_RETRY)
            continue;
        bool held = false;
        for (size_t j = 0; retry && j < n && !held; j++)
            held = out[j].kind == SK_RETRY && recs[j].offset < recs[i].offset &&
                   recs[j].partition == recs[i].partition && recs[j].topic &&
                   strcmp(recs[j].topic, recs[i].topic) == 0;
        if (!held)
            sk_offsets_add(&o, recs[i].topic, recs[i].partition, recs[i].offset + 1);
    }
    int rc = o.n ? sk_state_store_offsets(scim_state_store(s->state), incarnation, &o, err) : 0;
    sk_offsets_free(&o);
    return rc;
}

/* After the users' phase and after the deletes: member lists that changed meanwhile. */
static void flush_groups_into(struct scim_sink *s, const struct sk_record *recs, size_t n,
                              struct sk_outcome *out)
{
    struct sk_error err = {0};
    if (s->unavailable || s->fatal || flush_dirty_groups(s, &err) == 0)
        return;
    (void)recs;
    /* the records are applied; hold the batch's last one back so the driver
     * retries and the groups go out then */
    for (size_t i = n; i-- > 0;) {
        if (out[i].kind == SK_APPLIED) {
            set_outcome(&out[i], &err);
            return;
        }
    }
}

static int scim_apply(struct sk_sink *self, const struct sk_record *recs, size_t n,
                      struct sk_outcome *out, struct sk_error *err)
{
    struct scim_sink *s = self->priv;
    s->unavailable = s->fatal = false;
    sk_error_clear(&s->unavailable_err);
    sk_error_clear(&s->fatal_err);
    scim_today(s->tz, time(NULL), s->today);
    for (size_t i = 0; i < n; i++) {
        out[i].kind = SK_APPLIED;
        sk_error_clear(&out[i].err);
    }
    if (n == 0)
        return 0;
    if (scim_state_begin(s->state, err) < 0)
        goto fail_all;
    size_t n_runs;
    struct slot *slots = plan(recs, n, &n_runs);
    bool *blocked = sk_calloc(n_runs ? n_runs : 1, sizeof(bool));
    int phase = 0;
    for (size_t k = 0; k < n; k++) {
        const struct sk_record *r = &recs[slots[k].index];
        struct sk_outcome *o = &out[slots[k].index];
        if (slots[k].phase >= 2 && phase < 2) {
            flush_groups_into(s, recs, n, out);
            phase = 2;
        }
        if (s->fatal)
            break;
        if (s->unavailable) {
            set_outcome(o, &s->unavailable_err);
            continue;
        }
        if (blocked[slots[k].run]) {
            sk_error_set(&o->err, SK_ERR_RETRIABLE,
                         "%s %s: an earlier change of it waits for retry", r->entity->name, r->key);
            o->kind = SK_RETRY;
            continue;
        }
        struct sk_error e = {0};
        int rc = 0;
        if (r->value && !r->json) /* the driver decodes every value it hands over */
            rc = sk_error_set(&e, SK_ERR_PERMANENT, "record has a value but no decoded document");
        else
            switch (kind_of(r)) {
            case K_PERSON:
                rc = apply_person(s, r, &e);
                break;
            case K_DUTY:
                rc = apply_duty(s, r, &e);
                break;
            case K_GROUP:
                rc = apply_group(s, r, &e);
                break;
            default:
                break; /* not an entity this sink maps: nothing to do */
            }
        if (rc < 0 && !s->fatal) {
            set_outcome(o, &e);
            if (o->kind == SK_RETRY)
                blocked[slots[k].run] = true;
            else
                sk_debug(s->component, "%s %s rejected", r->entity->name, r->key);
        }
    }
    if (!s->fatal)
        flush_groups_into(s, recs, n, out);
    free(blocked);
    free(slots);
    char state_err[256];
    bool state_failed = scim_state_take_error(s->state, state_err, sizeof(state_err));
    if (s->fatal) {
        scim_state_commit(s->state, err); /* what the server already has, keep */
        *err = s->fatal_err;
        goto fail_all;
    }
    if (state_failed) {
        sk_error_set(err, SK_ERR_RETRIABLE, "%s", state_err);
        scim_state_commit(s->state, err);
        goto fail_all;
    }
    if (store_offsets(s, self->incarnation, recs, n, out, err) < 0) {
        struct sk_error ignored = {0};
        scim_state_commit(s->state, &ignored); /* what the server already has, keep */
        goto fail_all;
    }
    if (scim_state_commit(s->state, err) < 0)
        goto fail_all;
    return 0;
fail_all:
    for (size_t i = 0; i < n; i++) {
        out[i].kind = SK_RETRY;
        out[i].err = *err;
    }
    return -1;
}

/* ---- open / close --------------------------------------------------------------- */

static void scim_close(struct sk_sink *self)
{
    struct scim_sink *s = self->priv;
    if (!s)
        return;
    scim_http_free(s->http);
    scim_state_close(s->state);
    sk_tz_free(s->tz);
    free(s);
    self->priv = NULL;
}

static bool consumes(const struct sk_sink *self, const char *name)
{
    for (size_t i = 0; i < self->n_entities; i++)
        if (strcmp(self->entities[i]->name, name) == 0)
            return true;
    return false;
}

static int scim_open(struct sk_sink *self, struct sk_error *err)
{
    const struct scim_conf *conf = self->conf;
    struct scim_sink *s = sk_calloc(1, sizeof(*s));
    self->priv = s;
    s->component = self->name ? self->name : "scim-sink";
    s->conf = conf;
    const char *dialect = conf->patch_dialect ? conf->patch_dialect : "rfc";
    s->dialect = strcmp(dialect, "entra") == 0  ? SCIM_DIALECT_ENTRA
                 : strcmp(dialect, "okta") == 0 ? SCIM_DIALECT_OKTA
                                                : SCIM_DIALECT_RFC;
    s->use_patch = conf->update && strcmp(conf->update, "patch") == 0;
    s->deactivate = conf->on_delete && strcmp(conf->on_delete, "deactivate") == 0;
    for (size_t i = 0; i < conf->users.n; i++) {
        const char *u = conf->users.v[i];
        if (strcmp(u, "students") == 0)
            s->want_students = true;
        else if (strcmp(u, "staff") == 0)
            s->want_staff = true;
        else if (strcmp(u, "guardians") == 0)
            s->want_guardians = true;
        else {
            sk_error_set(err, SK_ERR_FATAL,
                         "users: unknown value \"%s\" (expected students, staff, guardians)", u);
            goto fail;
        }
    }
    if (!self->incarnation) {
        sk_error_set(err, SK_ERR_FATAL, "no broker incarnation given: offsets cannot be kept");
        goto fail;
    }
    if (!(s->tz = sk_tz_load(conf->timezone, err)))
        goto fail;
    if (self->n_entities && !consumes(self, "Person")) {
        sk_error_set(err, SK_ERR_FATAL, "entities: the scim-sink needs Person");
        goto fail;
    }
    if (s->want_staff && self->n_entities && !consumes(self, "Duty"))
        sk_warn(s->component, "users includes staff but the sink does not consume Duty: "
                              "no one will be staff");
    s->http = scim_http_new(conf, s->component, err);
    if (!s->http)
        goto fail;
    s->state = scim_state_open(conf->state_dir ? conf->state_dir : SCIM_STATE_DIR_DEFAULT,
                               s->component, err);
    if (!s->state)
        goto fail;
    return 0;
fail:
    scim_close(self);
    return -1;
}

/* The snapshot sweep's view: the persons and groups whose users and groups it provisioned. */
static int scim_keys(struct sk_sink *self, const struct sk_entity *e,
                     void (*fn)(void *ctx, const char *key, const char *doc), void *ctx,
                     struct sk_error *err)
{
    struct scim_sink *s = self->priv;
    return scim_state_keys(s->state, e->collection, fn, ctx, err);
}

static int scim_mark_offsets(struct sk_sink *self, const struct sk_offsets *offsets,
                             struct sk_error *err)
{
    struct scim_sink *s = self->priv;
    return sk_state_mark_offsets(scim_state_store(s->state), self->incarnation, offsets, err);
}

/* The offsets in the state: a new or lost state has none, and the driver
 * reads the topics from the start to fill it (a replay sends nothing the
 * server already has: ids are found by externalId, bodies compared). */
static int scim_stored_offsets(struct sk_sink *self, struct sk_offsets *out, struct sk_error *err)
{
    struct scim_sink *s = self->priv;
    return sk_state_stored_offsets(scim_state_store(s->state), self->incarnation, out, err);
}

/* The state file deleted or replaced under it: start again, from the start. */
static int scim_health(struct sk_sink *self, struct sk_error *err)
{
    struct scim_sink *s = self->priv;
    return sk_state_check_file(scim_state_store(s->state), err);
}

static const char *scim_target(struct sk_sink *self)
{
    const struct scim_conf *conf = self->conf;
    return conf->url;
}

const struct sk_sink_ops scim_sink_ops = {
    .type = "scim-sink",
    .target_kind = SK_TARGET_SHARED_WHOLE, /* a Duty needs its Person: every partition */
    .summary = "persons and groups as SCIM 2.0 Users and Groups (Entra ID, Okta, EGIL servers)",
    .options = scim_options,
    .conf_size = sizeof(struct scim_conf),
    .default_drop_fields = scim_drop_fields,
    .default_protected = "minimal",
    .open = scim_open,
    .apply = scim_apply,
    .mark_offsets = scim_mark_offsets,
    .stored_offsets = scim_stored_offsets,
    .keys = scim_keys,
    .health = scim_health,
    .target = scim_target,
    .close = scim_close,
    .probe = scim_probe,
};
