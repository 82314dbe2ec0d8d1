/*
 * hub_scope.c: who sees what on the hub: the clients built from their
 * configuration, the attribute groups (which fields or types each group
 * stands for), what each record belongs to (organisations, kept in
 * hub_link at apply time) and the clause that limits a read to a client's
 * organisations. docs/ss12000-api-sink.md, "Clients and scopes", has the
 * tables this file implements.
 *
 *   hub_link(src_coll, src_id, collection, id, kind, target)
 *     written from the document of src: record collection/id belongs to
 *     organisation target (kind 'org'), has parent organisation target
 *     (kind 'parent', organisations only), or belongs wherever record
 *     kind/target (kind = a collection) belongs, or is a protected person
 *     (kind 'protected', target '': privacy.h's markings). A record's own
 *     rows (src = itself) outlive its deletion until its tombstone is
 *     purged, so deletedEntities is scoped too, and a protected person's
 *     deletion stays hidden from whom it was hidden; rows a record gave others
 *     (a duty makes its person belong to the duty's organisation) go with it.
 *   hub_withheld(collection, id, stamp, since_us)
 *     a person stored unprotected (so shown to protected_identities: skip
 *     clients) who then became protected, with the change stamp and the
 *     time of that write: a deletion for skip clients (deletedEntities,
 *     webhooks), as every other sink makes of it (privacy.h). Gone when the
 *     person is stored unprotected again, or purged with the tombstones.
 *
 * Links point at ids, not at stored rows: a person may arrive before the
 * organisation of its enrolment, and still belongs to it. Descendants of an
 * organisation are resolved when a request is answered (the parent links as
 * they are then), so a school moved under another organisation moves with
 * everything that belongs to it.
 *
 * Owns: the visibility rule and the per-client document filter. Must never:
 * answer 403 or anything but "not found" for a record outside a client's
 * organisations (hub_http.c answers 404), let a client see a type one of
 * its missing attribute groups removes, or let a row a client may not see
 * count anywhere in its answers: the clause leaves out protected persons for
 * protected_identities: skip (alive or deleted), so pages are filled past
 * them and end where the visible rows end.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub.h"
#include "log.h"
#include "util.h"

/* ---- attribute groups ----------------------------------------------------------- */

enum email_kind { EMAIL_NONE, EMAIL_PRIVATE, EMAIL_SCHOOL };

struct attr_group {
    const char *name;
    const char *types[4];  /* entity types it stands for (403 without it) */
    const char *fields[3]; /* field paths it removes from every document (drop_fields) */
    enum email_kind email; /* e-mail addresses of these types it removes from persons */
};

/* EduCloud's scopes (issue 18), as the SS 12000 2.1 types and fields they remove. */
static const struct attr_group attr_groups[] = {
    {"organisation_data", {"Organisation"}, {NULL}, EMAIL_NONE},
    {"activities", {"Activity", "CalendarEvent"}, {NULL}, EMAIL_NONE},
    {"duties", {"Duty"}, {NULL}, EMAIL_NONE},
    {"grades", {"Grade"}, {NULL}, EMAIL_NONE},
    {"groups", {"Group"}, {NULL}, EMAIL_NONE},
    {"placements", {"Placement", "AttendanceSchedule"}, {NULL}, EMAIL_NONE},
    {"study_plans", {"StudyPlan"}, {NULL}, EMAIL_NONE},
    {"students", {NULL}, {"enrolments", "groupMemberships"}, EMAIL_NONE},
    {"guardians", {NULL}, {"responsibles", "owners"}, EMAIL_NONE},
    {"private_email", {NULL}, {NULL}, EMAIL_PRIVATE},
    {"school_email", {NULL}, {NULL}, EMAIL_SCHOOL},
    {"phone_numbers", {NULL}, {"phoneNumbers"}, EMAIL_NONE},
    {"addresses", {NULL}, {"addresses"}, EMAIL_NONE},
    {"photos", {NULL}, {"photo"}, EMAIL_NONE},
    {"civic_numbers", {NULL}, {"civicNo"}, EMAIL_NONE},
    {"external_identifiers", {NULL}, {"externalIdentifiers"}, EMAIL_NONE},
    {"sex", {NULL}, {"sex"}, EMAIL_NONE},
    {"birth_date", {NULL}, {"birthDate"}, EMAIL_NONE},
};
#define N_ATTR_GROUPS (sizeof(attr_groups) / sizeof(attr_groups[0]))

static int attr_group_index(const char *name)
{
    for (size_t i = 0; i < N_ATTR_GROUPS; i++)
        if (strcmp(attr_groups[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* ---- clients ---------------------------------------------------------------------- */

/* A client name goes into logs, metrics and page tokens: plain characters only. */
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

bool hub_consumes(const struct hub *h, const struct sk_entity *e)
{
    for (size_t i = 0; i < h->n_entities; i++)
        if (h->entities[i] == e)
            return true;
    return false;
}

/* entities: names (Person), collections (persons) or all, items also comma-separated. */
static int read_entities(const struct hub *h, struct hub_client *c, const struct sk_strlist *l,
                         struct sk_error *err)
{
    int rc = 0;
    for (size_t k = 0; k < l->n && rc == 0; k++) {
        char *copy = sk_strdup(l->v[k]), *save = NULL;
        for (char *t = strtok_r(copy, ", ", &save); t && rc == 0; t = strtok_r(NULL, ", ", &save)) {
            const struct sk_entity *e = sk_entity_by_name(t);
            if (!e)
                e = sk_entity_by_collection(t);
            if (strcmp(t, "all") == 0) {
                for (size_t i = 0; i < h->n_entities; i++)
                    c->may_read[sk_entity_index(h->entities[i])] = true;
            } else if (!e) {
                rc = sk_error_set(err, SK_ERR_FATAL,
                                  "clients.%s.entities: \"%s\" is no entity type", c->name, t);
            } else if (!hub_consumes(h, e)) {
                rc = sk_error_set(err, SK_ERR_FATAL,
                                  "clients.%s.entities: %s is not among this sink's entities",
                                  c->name, e->name);
            } else {
                c->may_read[sk_entity_index(e)] = true;
            }
        }
        free(copy);
    }
    return rc;
}

static void add_drop(struct sk_strlist *l, const char *path)
{
    l->v = sk_realloc(l->v, (l->n + 1) * sizeof(*l->v));
    l->v[l->n++] = sk_strdup(path);
}

/* attributes: the groups it may see; each one missing takes its types and fields away. */
static int read_attributes(struct hub_client *c, const struct sk_strlist *l, struct sk_error *err)
{
    bool seen[N_ATTR_GROUPS] = {false};
    for (size_t k = 0; k < l->n; k++) {
        if (strcmp(l->v[k], "all") == 0) {
            for (size_t i = 0; i < N_ATTR_GROUPS; i++)
                seen[i] = true;
            continue;
        }
        int i = attr_group_index(l->v[k]);
        if (i < 0)
            return sk_error_set(err, SK_ERR_FATAL,
                                "clients.%s.attributes: \"%s\" is no attribute group (see "
                                "docs/ss12000-api-sink.md)",
                                c->name, l->v[k]);
        seen[i] = true;
    }
    for (size_t i = 0; i < N_ATTR_GROUPS; i++) {
        if (seen[i])
            continue;
        const struct attr_group *g = &attr_groups[i];
        for (size_t t = 0; t < 4 && g->types[t]; t++)
            c->may_read[sk_entity_index(sk_entity_by_name(g->types[t]))] = false;
        for (size_t f = 0; f < 3 && g->fields[f]; f++)
            add_drop(&c->privacy.drop_fields, g->fields[f]);
        c->hide_private_email |= g->email == EMAIL_PRIVATE;
        c->hide_school_email |= g->email == EMAIL_SCHOOL;
    }
    return 0;
}

static int read_organisations(struct hub_client *c, const struct sk_strlist *l,
                              struct sk_error *err)
{
    c->orgs = l->n ? sk_calloc(l->n, sizeof(*c->orgs)) : NULL;
    for (size_t k = 0; k < l->n; k++)
        if (sk_uuid_normalize(l->v[k], c->orgs[c->n_orgs++]) < 0)
            return sk_error_set(err, SK_ERR_FATAL,
                                "clients.%s.organisations: \"%s\" is not an organisation id (a "
                                "UUID)",
                                c->name, l->v[k]);
    return 0;
}

static int read_credentials(struct hub_client *c, const struct hub_client_conf *cc,
                            struct sk_error *err)
{
    bool oauth2 = cc->oauth2.client_id || cc->oauth2.client_secret;
    if (!cc->token == !oauth2)
        return sk_error_set(err, SK_ERR_FATAL, "clients.%s: give either token or oauth2", c->name);
    if (cc->token && strlen(cc->token) < 16)
        return sk_error_set(err, SK_ERR_FATAL,
                            "clients.%s.token: the token is shorter than 16 characters", c->name);
    if (oauth2 && (!cc->oauth2.client_id || !*cc->oauth2.client_id || !cc->oauth2.client_secret))
        return sk_error_set(err, SK_ERR_FATAL,
                            "clients.%s.oauth2: client_id and client_secret go together", c->name);
    if (oauth2 && strlen(cc->oauth2.client_secret) < 16)
        return sk_error_set(err, SK_ERR_FATAL,
                            "clients.%s.oauth2.client_secret: shorter than 16 characters", c->name);
    c->token = cc->token;
    c->client_id = cc->oauth2.client_id;
    c->client_secret = cc->oauth2.client_secret;
    return 0;
}

static bool rules_ok(void); /* below, with the rules */

int hub_clients_build(struct hub *h, struct sk_error *err)
{
    if (!rules_ok())
        return sk_error_set(err, SK_ERR_FATAL,
                            "a belongs rule names a kind the scope clause "
                            "does not look up (a bug in hub_scope.c)");
    const struct sk_groupmap *m = &h->conf->clients;
    if (m->n == 0)
        return sk_error_set(err, SK_ERR_FATAL, "clients: at least one client is needed");
    h->clients = sk_calloc(m->n, sizeof(*h->clients));
    for (size_t i = 0; i < m->n; i++) {
        const struct hub_client_conf *cc =
            (const struct hub_client_conf *)((const char *)m->items + i * sizeof(*cc));
        struct hub_client *c = &h->clients[h->n_clients++];
        c->name = m->keys[i];
        if (!client_name_ok(c->name))
            return sk_error_set(err, SK_ERR_FATAL,
                                "clients: \"%s\" is not a client name (1-64 of A-Z a-z 0-9 . _ -)",
                                c->name);
        for (size_t k = 0; k < cc->drop_fields.n; k++)
            add_drop(&c->privacy.drop_fields, cc->drop_fields.v[k]);
        if (sk_protected_mode_parse(cc->protected_identities, &c->privacy.protected_mode) < 0)
            return sk_error_set(err, SK_ERR_FATAL, "clients.%s.protected_identities: invalid",
                                c->name);
        if (read_credentials(c, cc, err) < 0 || read_entities(h, c, &cc->entities, err) < 0 ||
            read_attributes(c, &cc->attributes, err) < 0 ||
            read_organisations(c, &cc->organisations, err) < 0)
            return -1;
        for (size_t k = 0; k < i; k++)
            if (c->client_id && h->clients[k].client_id &&
                strcmp(c->client_id, h->clients[k].client_id) == 0)
                return sk_error_set(err, SK_ERR_FATAL,
                                    "clients.%s.oauth2.client_id: also the client_id of %s",
                                    c->name, h->clients[k].name);
        h->any_scoped |= hub_client_limited(c);
    }
    return 0;
}

void hub_clients_free(struct hub *h)
{
    for (size_t i = 0; i < h->n_clients; i++) {
        struct sk_strlist *l = &h->clients[i].privacy.drop_fields;
        for (size_t k = 0; k < l->n; k++)
            free(l->v[k]);
        free(l->v);
        free(h->clients[i].orgs);
    }
    free(h->clients);
    h->clients = NULL;
    h->n_clients = 0;
}

/* ---- the document filter ---------------------------------------------------------- */

static void filter_emails(const struct hub_client *c, cJSON *doc)
{
    cJSON *emails = cJSON_GetObjectItemCaseSensitive(doc, "emails");
    if (!cJSON_IsArray(emails))
        return;
    cJSON *x = emails->child;
    while (x) {
        cJSON *next = x->next;
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(x, "type");
        bool school = cJSON_IsString(t) && strncmp(t->valuestring, "Skola ", 6) == 0;
        if (school ? c->hide_school_email : c->hide_private_email)
            cJSON_Delete(cJSON_DetachItemViaPointer(emails, x));
        x = next;
    }
    if (!emails->child)
        cJSON_DeleteItemFromObjectCaseSensitive(doc, "emails");
}

bool hub_scope_filter(const struct hub_client *c, const struct sk_entity *e, cJSON *doc)
{
    if (sk_privacy_apply(&c->privacy, e, doc) == SK_PRIVACY_DELETE)
        return false;
    if (c->hide_private_email || c->hide_school_email)
        filter_emails(c, doc);
    return true;
}

/* ---- what a record belongs to ----------------------------------------------------- */

/*
 * A rule: the records at subject (NULL: the record itself) belong, by kind,
 * to the ids at target (NULL: the record's own id). Paths walk arrays.
 */
struct belongs_rule {
    const char *type;
    const char *subject;
    const char *kind; /* "org", "parent", or the collection of the record target names */
    const char *target;
};

static const struct belongs_rule belongs_rules[] = {
    {"Organisation", NULL, "org", NULL},
    {"Organisation", NULL, "parent", "parentOrganisation.id"},
    {"Person", NULL, "org", "enrolments.enroledAt.id"},
    {"Person", "responsibles.person.id", "persons", NULL}, /* a guardian: where the child is */
    {"Duty", NULL, "org", "dutyAt.id"},
    {"Duty", "person.id", "org", "dutyAt.id"},
    {"Placement", NULL, "org", "placedAt.id"},
    {"Placement", "child.id", "org", "placedAt.id"},
    {"Placement", "owners.id", "org", "placedAt.id"},
    {"Group", NULL, "org", "organisation.id"},
    {"Group", "groupMemberships.person.id", "org", "organisation.id"},
    {"Activity", NULL, "org", "organisation.id"},
    {"Grade", NULL, "org", "organisation.id"},
    {"Resource", NULL, "org", "owner.id"},
    {"Room", NULL, "org", "owner.id"},
    {"SchoolUnitOffering", NULL, "org", "offeredAt.id"},
    {"CalendarEvent", NULL, "activities", "activity.id"},
    {"Attendance", NULL, "persons", "student.id"},
    {"AttendanceEvent", NULL, "persons", "person.id"},
    {"AttendanceEvent", NULL, "groups", "group.id"},
    {"AttendanceSchedule", NULL, "placements", "placement.id"},
    {"StudyPlan", NULL, "persons", "student.id"},
    {"AggregatedAttendance", NULL, "activities", "activity.id"},
    {"AggregatedAttendance", NULL, "persons", "student.id"},
};
#define N_RULES (sizeof(belongs_rules) / sizeof(belongs_rules[0]))
/* The kinds of the rules above that name another record (the clause looks them up). */
#define THROUGH_KINDS "'persons', 'activities', 'groups', 'placements'"

/* Every rule through another record is looked up by the clause (a table bug otherwise). */
static bool rules_ok(void)
{
    for (size_t i = 0; i < N_RULES; i++) {
        const char *kind = belongs_rules[i].kind;
        char quoted[40];
        snprintf(quoted, sizeof(quoted), "'%s'", kind);
        if (strcmp(kind, "org") != 0 && strcmp(kind, "parent") != 0 &&
            !strstr(THROUGH_KINDS, quoted))
            return false;
    }
    return true;
}

/* Types without a rule (Programme, Syllabus): catalogue data, seen by every client of the type. */
static bool has_rules(const struct sk_entity *e)
{
    for (size_t i = 0; i < N_RULES; i++)
        if (strcmp(belongs_rules[i].type, e->name) == 0)
            return true;
    return false;
}

struct ids {
    char (*v)[37];
    size_t n;
};

/* Every UUID string at the dotted path below node (through arrays). */
static void collect(const cJSON *node, const char *path, struct ids *out)
{
    if (cJSON_IsArray(node)) {
        for (const cJSON *x = node->child; x; x = x->next)
            collect(x, path, out);
        return;
    }
    if (!*path) {
        char id[37];
        if (cJSON_IsString(node) && sk_uuid_normalize(node->valuestring, id) == 0 &&
            out->n < 4096) {
            out->v = sk_realloc(out->v, (out->n + 1) * sizeof(*out->v));
            memcpy(out->v[out->n++], id, 37);
        }
        return;
    }
    const char *dot = strchr(path, '.');
    size_t n = dot ? (size_t)(dot - path) : strlen(path);
    char key[64];
    if (!cJSON_IsObject(node) || n >= sizeof(key))
        return;
    memcpy(key, path, n);
    key[n] = '\0';
    collect(cJSON_GetObjectItemCaseSensitive(node, key), dot ? dot + 1 : "", out);
}

static void ids_of(const cJSON *doc, const char *path, const char *self, struct ids *out)
{
    if (path) {
        collect(doc, path, out);
        return;
    }
    out->v = sk_realloc(out->v, sizeof(*out->v));
    snprintf(out->v[0], 37, "%s", self);
    out->n = 1;
}

int hub_scope_schema(struct sk_state *st, struct sk_error *err)
{
    return sk_state_exec(
        st,
        "CREATE TABLE IF NOT EXISTS hub_link(src_coll TEXT NOT NULL, src_id TEXT NOT NULL, "
        "collection TEXT NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL, target TEXT NOT NULL, "
        "UNIQUE(collection, id, kind, target, src_coll, src_id));"
        "CREATE INDEX IF NOT EXISTS hub_link_src ON hub_link(src_coll, src_id);"
        "CREATE INDEX IF NOT EXISTS hub_link_kind ON hub_link(collection, kind, target);"
        /* (new in 2026-12: an older state gets the table empty; who was shown before is
         * not known there) */
        "CREATE TABLE IF NOT EXISTS hub_withheld(collection TEXT NOT NULL, id TEXT NOT NULL, "
        "stamp INTEGER NOT NULL, since_us INTEGER NOT NULL, PRIMARY KEY(collection, id)) "
        "WITHOUT ROWID;"
        "CREATE INDEX IF NOT EXISTS hub_withheld_stamp ON hub_withheld(stamp, id);",
        err);
}

static int run_sql(struct hub *h, const char *sql, const char *a, const char *b, int64_t n,
                   struct sk_error *err)
{
    sqlite3_stmt *q;
    if (sk_state_prepare(h->state, sql, &q, err) < 0)
        return -1;
    if (a)
        sqlite3_bind_text(q, 1, a, -1, SQLITE_STATIC);
    if (b)
        sqlite3_bind_text(q, 2, b, -1, SQLITE_STATIC);
    if (!a)
        sqlite3_bind_int64(q, 1, n);
    int rc = sk_state_run(h->state, q, false, err);
    sqlite3_finalize(q);
    return rc;
}

static int put_links(struct hub *h, const char *coll, const char *id, const char *subject_coll,
                     const struct ids *subjects, const char *kind, const struct ids *targets,
                     struct sk_error *err)
{
    sqlite3_stmt *q;
    if (sk_state_prepare(h->state,
                         "INSERT OR IGNORE INTO hub_link(src_coll, src_id, collection, id, kind, "
                         "target) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                         &q, err) < 0)
        return -1;
    int rc = 0;
    for (size_t s = 0; s < subjects->n && rc == 0; s++) {
        for (size_t t = 0; t < targets->n && rc == 0; t++) {
            sqlite3_reset(q);
            sqlite3_bind_text(q, 1, coll, -1, SQLITE_STATIC);
            sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
            sqlite3_bind_text(q, 3, subject_coll, -1, SQLITE_STATIC);
            sqlite3_bind_text(q, 4, subjects->v[s], -1, SQLITE_STATIC);
            sqlite3_bind_text(q, 5, kind, -1, SQLITE_STATIC);
            sqlite3_bind_text(q, 6, targets->v[t], -1, SQLITE_STATIC);
            rc = sk_state_run(h->state, q, false, err);
        }
    }
    sqlite3_finalize(q);
    return rc;
}

int hub_scope_put(struct hub *h, const struct sk_entity *e, const char *id, const cJSON *doc,
                  struct sk_error *err)
{
    const char *coll = e->collection;
    if (run_sql(h, "DELETE FROM hub_link WHERE src_coll = ?1 AND src_id = ?2", coll, id, 0, err) <
        0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < N_RULES && rc == 0; i++) {
        const struct belongs_rule *r = &belongs_rules[i];
        if (strcmp(r->type, e->name) != 0)
            continue;
        struct ids subjects = {0}, targets = {0};
        ids_of(doc, r->subject, id, &subjects);
        ids_of(doc, r->target, id, &targets);
        /* A subject elsewhere is a person (the only kind the rules name). */
        rc = put_links(h, coll, id, r->subject ? "persons" : coll, &subjects, r->kind, &targets,
                       err);
        free(subjects.v);
        free(targets.v);
    }
    if (rc == 0 && sk_privacy_is_protected(e, doc))
        rc = run_sql(h,
                     "INSERT OR IGNORE INTO hub_link(src_coll, src_id, collection, id, kind, "
                     "target) VALUES(?1, ?2, ?1, ?2, 'protected', '')",
                     coll, id, 0, err);
    return rc;
}

int hub_scope_withheld(struct hub *h, const struct sk_entity *e, const char *id, const cJSON *doc,
                       int64_t stamp, bool *withheld, struct sk_error *err)
{
    *withheld = false;
    if (strcmp(e->collection, "persons") != 0)
        return 0;
    if (!sk_privacy_is_protected(e, doc)) /* shown again: a change, no longer a deletion */
        return run_sql(h, "DELETE FROM hub_withheld WHERE collection = ?1 AND id = ?2",
                       e->collection, id, 0, err);
    /* Held before (alive or a tombstone) and not marked protected: it was shown. */
    sqlite3_stmt *q;
    if (sk_state_prepare(h->state,
                         "INSERT OR IGNORE INTO hub_withheld(collection, id, stamp, since_us) "
                         "SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM hub_rows WHERE "
                         "collection = ?1 AND id = ?2) AND NOT EXISTS (SELECT 1 FROM hub_link "
                         "WHERE collection = ?1 AND id = ?2 AND kind = 'protected')",
                         &q, err) < 0)
        return -1;
    sqlite3_bind_text(q, 1, e->collection, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, stamp);
    sqlite3_bind_int64(q, 4, sk_now_us());
    int rc = sk_state_run(h->state, q, false, err);
    sqlite3_finalize(q);
    *withheld = rc == 0 && sqlite3_changes(sk_state_db(h->state)) > 0;
    return rc;
}

int hub_scope_removed(struct hub *h, const struct sk_entity *e, const char *id,
                      struct sk_error *err)
{
    return run_sql(h,
                   "DELETE FROM hub_link WHERE src_coll = ?1 AND src_id = ?2 AND NOT "
                   "(collection = ?1 AND id = ?2)",
                   e->collection, id, 0, err);
}

int hub_scope_purge(struct hub *h, int64_t before_us, struct sk_error *err)
{
    if (run_sql(h, "DELETE FROM hub_withheld WHERE since_us < ?1", NULL, NULL, before_us, err) <
        0)
        return -1;
    return run_sql(h,
                   "DELETE FROM hub_link WHERE (src_coll, src_id) IN (SELECT collection, id FROM "
                   "hub_rows WHERE deleted_us IS NOT NULL AND deleted_us < ?1)",
                   NULL, NULL, before_us, err);
}

/* ---- links made again --------------------------------------------------------------- */

/* The rules' version: a hub whose links were made under another (or none) makes them again.
 * 2: protected persons are marked (kind 'protected'). */
#define LINKS_VERSION 2

struct rebuild {
    struct hub *h;
    const struct sk_entity *e;
    int rc;
    struct sk_error *err;
};

static void rebuild_one(void *ctx, const char *key, const char *doc)
{
    struct rebuild *rb = ctx;
    cJSON *j = rb->rc == 0 && doc ? cJSON_Parse(doc) : NULL;
    if (j)
        rb->rc = hub_scope_put(rb->h, rb->e, key, j, rb->err);
    cJSON_Delete(j);
}

static int64_t links_version(struct hub *h)
{
    sqlite3_stmt *q;
    int64_t v = 0;
    if (sqlite3_prepare_v2(sk_state_db(h->state),
                           "SELECT value FROM hub_meta WHERE key = 'links_version'", -1, &q,
                           NULL) != SQLITE_OK)
        return 0;
    if (sqlite3_step(q) == SQLITE_ROW)
        v = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return v;
}

int hub_scope_load(struct hub *h, struct sk_error *err)
{
    int64_t version = links_version(h);
    if (version == LINKS_VERSION)
        return 0;
    if (sk_state_begin(h->state, err) < 0)
        return -1;
    /* Tombstones keep the links they had: their documents are gone. A person's made before
     * protected persons were marked may have been one: hidden from skip clients, as a
     * tombstone without links is from clients with organisations. */
    int rc = sk_state_exec(h->state,
                           "DELETE FROM hub_link WHERE (src_coll, src_id) NOT IN (SELECT "
                           "collection, id FROM hub_rows WHERE deleted_us IS NOT NULL)",
                           err);
    if (rc == 0 && version < 2)
        rc = sk_state_exec(h->state,
                           "INSERT OR IGNORE INTO hub_link(src_coll, src_id, collection, id, "
                           "kind, target) SELECT collection, id, collection, id, 'protected', '' "
                           "FROM hub_rows WHERE collection = 'persons' AND deleted_us IS NOT NULL",
                           err);
    for (size_t i = 0; rc == 0 && i < h->n_entities; i++) {
        struct rebuild rb = {h, h->entities[i], 0, err};
        rc = sk_state_keys(h->state, h->entities[i]->collection, rebuild_one, &rb, err);
        if (rc == 0)
            rc = rb.rc;
    }
    if (rc == 0)
        rc = run_sql(h, "INSERT OR REPLACE INTO hub_meta(key, value) VALUES('links_version', ?1)",
                     NULL, NULL, LINKS_VERSION, err);
    if (rc == 0 && sk_state_commit(h->state, err) == 0) {
        sk_log(SK_LOG_INFO, h->name, "made what each record belongs to anew (scopes version %d)",
               LINKS_VERSION);
        return 0;
    }
    sk_state_rollback(h->state);
    return -1;
}

/* ---- the read side ---------------------------------------------------------------- */

/* 'a','b',... of the client's organisations and all their descendants now; -1 with err. */
static int scope_orgs(sqlite3 *db, const struct hub_client *c, struct sk_buf *out,
                      struct sk_error *err)
{
    struct sk_buf seeds = {0};
    for (size_t i = 0; i < c->n_orgs; i++)
        sk_buf_printf(&seeds, "%s('%s')", i ? "," : "", c->orgs[i]); /* UUIDs: checked at open */
    char *sql = sk_asprintf(
        "WITH RECURSIVE s(o) AS (VALUES %s UNION SELECT l.id FROM hub_link l JOIN s ON "
        "l.collection = 'organisations' AND l.kind = 'parent' AND l.target = s.o) SELECT o FROM s",
        seeds.p);
    sk_buf_free(&seeds);
    sqlite3_stmt *q;
    int rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    free(sql);
    if (rc != SQLITE_OK)
        return sk_error_set(err, SK_ERR_RETRIABLE, "reading the hub's scopes: %s",
                            sqlite3_errmsg(db));
    size_t n = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        char id[37];
        if (sk_uuid_normalize((const char *)sqlite3_column_text(q, 0), id) == 0)
            sk_buf_printf(out, "%s'%s'", n++ ? "," : "", id);
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE)
        return sk_error_set(err, SK_ERR_RETRIABLE, "reading the hub's scopes: %s",
                            sqlite3_errmsg(db));
    return 0;
}

bool hub_client_skips(const struct hub_client *c)
{
    return c->privacy.protected_mode == SK_PROTECTED_SKIP;
}

bool hub_client_limited(const struct hub_client *c)
{
    return c->n_orgs > 0 || hub_client_skips(c);
}

/* A protected person (alive or deleted) is no row at all for a skip client. */
#define NOT_HIDDEN                                                                                 \
    " AND (r.collection <> 'persons' OR NOT EXISTS (SELECT 1 FROM hub_link p WHERE"                \
    " p.collection = r.collection AND p.id = r.id AND p.kind = 'protected'))"

/* The clause of c's organisations, leaving out protected persons for skip clients if hide. */
static char *clause_of(sqlite3 *db, const struct hub_client *c, bool hide, struct sk_error *err)
{
    if (!c)
        return sk_strdup("");
    const char *hidden = hide && hub_client_skips(c) ? NOT_HIDDEN : "";
    if (c->n_orgs == 0)
        return sk_strdup(hidden);
    struct sk_buf orgs = {0}, open = {0};
    if (scope_orgs(db, c, &orgs, err) < 0) {
        sk_buf_free(&orgs);
        return NULL;
    }
    for (int i = 0; i < SK_ENTITY_COUNT; i++)
        if (!has_rules(sk_entities[i]))
            sk_buf_printf(&open, "%s'%s'", open.len ? "," : "", sk_entities[i]->collection);
    /* Per row: an index lookup on hub_link(collection, id, ...), and for a link through
     * another record one more; the organisation list is a constant. */
    const char *in = orgs.len ? orgs.p : "''";
    char *clause = sk_asprintf(
        " AND (r.collection IN (%s)"
        " OR EXISTS (SELECT 1 FROM hub_link m WHERE m.collection = r.collection AND m.id = r.id"
        " AND m.kind = 'org' AND m.target IN (%s))"
        " OR EXISTS (SELECT 1 FROM hub_link m JOIN hub_link t ON t.collection = m.kind AND t.id ="
        " m.target AND t.kind = 'org' AND t.target IN (%s) WHERE m.collection = r.collection AND"
        " m.id = r.id AND m.kind IN (%s)))%s",
        open.len ? open.p : "''", in, in, THROUGH_KINDS, hidden);
    sk_buf_free(&orgs);
    sk_buf_free(&open);
    return clause;
}

char *hub_scope_clause(sqlite3 *db, const struct hub_client *c, struct sk_error *err)
{
    return clause_of(db, c, true, err);
}

char *hub_scope_orgs_clause(sqlite3 *db, const struct hub_client *c, struct sk_error *err)
{
    return clause_of(db, c, false, err);
}

const struct hub_client *hub_client_by_name(const struct hub *h, const char *name)
{
    for (size_t i = 0; name && i < h->n_clients; i++)
        if (strcmp(h->clients[i].name, name) == 0)
            return &h->clients[i];
    return NULL;
}

/* SELECT 1 for one record (?1 collection, ?2 id) under clause (freed here); NULL with err. */
static sqlite3_stmt *seen_stmt(sqlite3 *db, char *clause, struct sk_error *err)
{
    sqlite3_stmt *q = NULL;
    if (!clause)
        return NULL;
    char *sql = sk_asprintf("SELECT 1 FROM hub_rows r WHERE r.collection = ?1 AND r.id = ?2%s",
                            clause);
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK)
        sk_error_set(err, SK_ERR_RETRIABLE, "reading the hub's scopes: %s", sqlite3_errmsg(db));
    free(sql);
    free(clause);
    return q;
}

/* 1 if the record x changed is a row of q, 0 if not, -1 with err. */
static int seen_one(sqlite3 *db, sqlite3_stmt *q, const struct hub_change *x, struct sk_error *err)
{
    sqlite3_bind_text(q, 1, sk_entities[x->type]->collection, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, x->id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
        return rc == SQLITE_ROW;
    return sk_error_set(err, SK_ERR_RETRIABLE, "reading the hub's scopes: %s", sqlite3_errmsg(db));
}

uint32_t hub_scope_seen(struct hub *h, const struct hub_client *c, const struct hub_change *v,
                        size_t n, uint32_t want, uint32_t *deleted)
{
    uint32_t gone = 0;
    if (!deleted)
        deleted = &gone;
    *deleted = 0;
    uint32_t readable = 0;
    for (int k = 0; k < SK_ENTITY_COUNT; k++)
        if (c->may_read[k])
            readable |= 1u << k;
    want &= readable;
    if (!want || !hub_client_limited(c)) { /* every record of a type it may read */
        for (size_t i = 0; i < n; i++)
            if (v[i].deleted)
                *deleted |= want & (1u << v[i].type);
        return want;
    }
    struct sk_error err = {0};
    sqlite3 *db = hub_reader_take(h, &err);
    bool skips = hub_client_skips(c);
    sqlite3_stmt *q = db ? seen_stmt(db, hub_scope_clause(db, c, &err), &err) : NULL;
    /* A person it was shown who became protected: a deletion, if of its organisations. */
    sqlite3_stmt *qw = q && skips ? seen_stmt(db, hub_scope_orgs_clause(db, c, &err), &err) : NULL;
    uint32_t seen = 0;
    for (size_t i = 0; q && (qw || !skips) && i < n; i++) {
        uint32_t bit = 1u << v[i].type;
        bool withheld = skips && v[i].withheld, gone_now = v[i].deleted || withheld;
        if (!(want & bit) || ((gone_now ? *deleted : seen) & bit))
            continue; /* not asked, or known to be seen already */
        int rc = seen_one(db, withheld ? qw : q, &v[i], &err);
        if (rc < 0)
            break;
        if (rc && !gone_now) /* a deletion is no change: a hidden one of its type stays so */
            seen |= bit;
        if (rc && gone_now)
            *deleted |= bit;
    }
    sqlite3_finalize(qw);
    sqlite3_finalize(q);
    if (db)
        hub_reader_give(h, db);
    if (err.msg[0]) {
        sk_log(SK_LOG_ERROR, h->name, "client %s: %s", c->name, err.msg);
        *deleted = 0;
        return 0;
    }
    return seen;
}

bool hub_client_sees(struct hub *h, const char *client, const struct sk_entity *e, const char *id)
{
    const struct hub_client *c = hub_client_by_name(h, client);
    int k = sk_entity_index(e);
    if (!c || k < 0)
        return false;
    struct hub_change one = {.type = k};
    snprintf(one.id, sizeof(one.id), "%s", id);
    return hub_scope_seen(h, c, &one, 1, 1u << k, NULL) != 0;
}
