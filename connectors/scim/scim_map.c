/*
 * scim_map.c: SS 12000 entities -> SCIM resources (RFC 7643 §4), and the
 * PATCH bodies (RFC 7644 §3.5.2) in the dialects of docs/architecture.md §10.3.
 *
 * Owns: the mapping table of docs/scim-sink.md. Must never: put anything
 * into a body that the mapping table does not name (the person documents
 * arrive after the privacy policy, but only the mapped fields leave: no
 * civicNo, address, phone, birth date or private e-mail, whatever the policy).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scim.h"
#include "tz.h"
#include "util.h"

void scim_today(const struct sk_tz *tz, int64_t now_s, char out[11])
{
    /* SS 12000 dates are the school's calendar dates: at 00:30 in Stockholm
     * a duty that ended yesterday has ended, although UTC is still there */
    time_t local = (time_t)(now_s + (tz ? sk_tz_offset_at(tz, now_s) : 0));
    struct tm tm;
    gmtime_r(&local, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

static const char *str(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : NULL;
}

/* SS 12000 dates are inclusive (docs/ss12000-notes.md §2.1): a relation ending today still holds.
 */
bool scim_relation_current(const cJSON *rel, const char *today)
{
    const char *end = str(rel, "endDate");
    return !end || strncmp(end, today, 10) >= 0;
}

bool scim_person_is_student(const cJSON *person, const char *today)
{
    const cJSON *enrolments = cJSON_GetObjectItemCaseSensitive(person, "enrolments");
    const cJSON *e;
    cJSON_ArrayForEach(e, enrolments)
    {
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "cancelled")))
            continue;
        if (scim_relation_current(e, today))
            return true;
    }
    return false;
}

/* Account e-mail types (docs/ss12000-notes.md §2.4); "Privat" never leaves. */
static bool work_email(const char *type)
{
    return type && (strcmp(type, "Skola elev") == 0 || strcmp(type, "Skola personal") == 0 ||
                    strcmp(type, "Arbete övrigt") == 0);
}

static const char *first_work_email(const cJSON *person)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(person, "emails"))
    {
        if (work_email(str(e, "type")) && str(e, "value"))
            return str(e, "value");
    }
    return NULL;
}

/*
 * personStatus is an open enum; these are the values that mean the person is
 * gone (emigrated, moved out, deceased, deregistered). Anything else,
 * including no status at all, is an active account.
 */
static bool status_active(const char *status)
{
    static const char *const gone[] = {"Utvandrad", "Utflyttad", "Avliden", "Avregistrerad",
                                       "Avförd",    "Inaktiv",   NULL};
    if (!status)
        return true;
    for (size_t i = 0; gone[i]; i++)
        if (strcmp(status, gone[i]) == 0)
            return false;
    return true;
}

static void add_str(cJSON *obj, const char *key, const char *value)
{
    if (value)
        cJSON_AddStringToObject(obj, key, value);
}

cJSON *scim_user_body(const cJSON *person, const struct scim_conf *conf, char *why, size_t why_size)
{
    const char *id = str(person, "id");
    const char *from = conf->username_from ? conf->username_from : "eppn";
    const char *user_name = NULL;
    if (strcmp(from, "eppn") == 0) {
        const cJSON *eppns = cJSON_GetObjectItemCaseSensitive(person, "eduPersonPrincipalNames");
        const cJSON *first = cJSON_IsArray(eppns) ? eppns->child : NULL;
        user_name = cJSON_IsString(first) && first->valuestring[0] ? first->valuestring : NULL;
    } else if (strcmp(from, "email") == 0) {
        user_name = first_work_email(person);
    } else {
        user_name = id;
    }
    if (!id || !user_name) {
        snprintf(why, why_size, "person has no %s for userName (username_from: %s)",
                 strcmp(from, "eppn") == 0 ? "eduPersonPrincipalName" : "school e-mail", from);
        return NULL;
    }
    cJSON *body = cJSON_CreateObject();
    cJSON *schemas = cJSON_AddArrayToObject(body, "schemas");
    cJSON_AddItemToArray(schemas, cJSON_CreateString(SCIM_USER_SCHEMA));
    cJSON_AddStringToObject(body, "externalId", id);
    cJSON_AddStringToObject(body, "userName", user_name);

    const char *given = str(person, "givenName"), *middle = str(person, "middleName"),
               *family = str(person, "familyName");
    if (given || middle || family) {
        cJSON *name = cJSON_AddObjectToObject(body, "name");
        add_str(name, "familyName", family);
        add_str(name, "givenName", given);
        add_str(name, "middleName", middle);
        char *display =
            sk_asprintf("%s%s%s%s%s", given ? given : "", given && (middle || family) ? " " : "",
                        middle ? middle : "", middle && family ? " " : "", family ? family : "");
        cJSON_AddStringToObject(name, "formatted", display);
        cJSON_AddStringToObject(body, "displayName", display);
        free(display);
    } else {
        /* a protected identity under "minimal": no names arrive, show the account name */
        cJSON_AddStringToObject(body, "displayName", user_name);
    }
    cJSON_AddBoolToObject(body, "active", status_active(str(person, "personStatus")));

    cJSON *emails = NULL;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(person, "emails"))
    {
        if (!work_email(str(e, "type")) || !str(e, "value"))
            continue;
        if (!emails)
            emails = cJSON_AddArrayToObject(body, "emails");
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "value", str(e, "value"));
        cJSON_AddStringToObject(m, "type", "work");
        cJSON_AddBoolToObject(m, "primary", cJSON_GetArraySize(emails) == 0);
        cJSON_AddItemToArray(emails, m);
    }

    const char *ctx = conf->employee_number_context;
    if (ctx && *ctx) {
        const cJSON *x;
        cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(person, "externalIdentifiers"))
        {
            const char *c = str(x, "context"), *v = str(x, "value");
            if (c && v && strcmp(c, ctx) == 0) {
                cJSON_AddItemToArray(schemas, cJSON_CreateString(SCIM_ENTERPRISE_SCHEMA));
                cJSON *ext = cJSON_AddObjectToObject(body, SCIM_ENTERPRISE_SCHEMA);
                cJSON_AddStringToObject(ext, "employeeNumber", v);
                break;
            }
        }
    }
    return body;
}

cJSON *scim_group_body(const cJSON *group, const char *const *member_ids, size_t n_members)
{
    cJSON *body = cJSON_CreateObject();
    cJSON *schemas = cJSON_AddArrayToObject(body, "schemas");
    cJSON_AddItemToArray(schemas, cJSON_CreateString(SCIM_GROUP_SCHEMA));
    add_str(body, "externalId", str(group, "id"));
    const char *name = str(group, "displayName");
    cJSON_AddStringToObject(body, "displayName", name ? name : str(group, "id"));
    cJSON *members = cJSON_AddArrayToObject(body, "members");
    for (size_t i = 0; i < n_members; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "value", member_ids[i]);
        cJSON_AddStringToObject(m, "type", "User");
        cJSON_AddItemToArray(members, m);
    }
    return body;
}

/* ---- comparing and patching -------------------------------------------------- */

/* The attributes the sink owns: all it sends and may have to remove. */
static const char *const user_managed[] = {"externalId",           "userName", "name",
                                           "displayName",          "active",   "emails",
                                           SCIM_ENTERPRISE_SCHEMA, NULL};
static const char *const group_managed[] = {"externalId", "displayName", "members", NULL};

/*
 * want ⊆ have: every value we send is on the server (objects: each of our
 * keys; arrays: same length, element-wise; strings as sent). Server-side
 * additions (members[].type, $ref, display) do not count as a difference.
 */
static bool subset(const cJSON *want, const cJSON *have)
{
    if (!want || !have)
        return want == have;
    if (cJSON_IsObject(want)) {
        if (!cJSON_IsObject(have))
            return false;
        const cJSON *w;
        cJSON_ArrayForEach(w, want)
        {
            if (!subset(w, cJSON_GetObjectItemCaseSensitive(have, w->string)))
                return false;
        }
        return true;
    }
    if (cJSON_IsArray(want)) {
        if (!cJSON_IsArray(have) || cJSON_GetArraySize(want) != cJSON_GetArraySize(have))
            return false;
        /* order-insensitive for members (servers need not keep order) */
        const cJSON *w;
        cJSON_ArrayForEach(w, want)
        {
            bool found = false;
            const cJSON *h;
            cJSON_ArrayForEach(h, have)
            {
                if (subset(w, h)) {
                    found = true;
                    break;
                }
            }
            if (!found)
                return false;
        }
        return true;
    }
    return cJSON_Compare(want, have, true);
}

bool scim_same_managed(const cJSON *desired, const cJSON *have, bool is_group)
{
    const char *const *keys = is_group ? group_managed : user_managed;
    for (size_t i = 0; keys[i]; i++) {
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(desired, keys[i]);
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(have, keys[i]);
        if (!w) {
            /* absent on our side: the server must not hold a value either */
            if (h && !cJSON_IsNull(h) && !(cJSON_IsArray(h) && !h->child))
                return false;
            continue;
        }
        if (cJSON_IsArray(w) && !w->child && (!h || cJSON_IsNull(h)))
            continue; /* an empty list and no list are the same */
        if (!subset(w, h))
            return false;
    }
    return true;
}

/* Entra capitalises the op (docs/architecture.md §10.3); RFC 7644 and Okta use lower case. */
static const char *op_name(const char *op, enum scim_dialect d)
{
    if (d != SCIM_DIALECT_ENTRA)
        return op;
    if (strcmp(op, "add") == 0)
        return "Add";
    if (strcmp(op, "remove") == 0)
        return "Remove";
    return "Replace";
}

static void add_op(cJSON *ops, const char *op, const char *path, const cJSON *value,
                   enum scim_dialect d)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "op", op_name(op, d));
    if (path)
        cJSON_AddStringToObject(o, "path", path);
    if (value)
        cJSON_AddItemToObject(o, "value", cJSON_Duplicate(value, true));
    cJSON_AddItemToArray(ops, o);
}

static const char *member_value(const cJSON *m)
{
    return str(m, "value");
}

static bool has_member(const cJSON *members, const char *value)
{
    const cJSON *m;
    cJSON_ArrayForEach(m, members)
    {
        const char *v = member_value(m);
        if (v && strcmp(v, value) == 0)
            return true;
    }
    return false;
}

/* members: add the new ones, remove the gone ones by filter path (RFC 7644 §3.5.2.2). */
static void patch_members(cJSON *ops, const cJSON *want, const cJSON *have, enum scim_dialect d)
{
    cJSON *added = cJSON_CreateArray();
    const cJSON *m;
    cJSON_ArrayForEach(m, want)
    {
        if (member_value(m) && !has_member(have, member_value(m)))
            cJSON_AddItemToArray(added, cJSON_Duplicate(m, true));
    }
    if (added->child)
        add_op(ops, "add", "members", added, d);
    cJSON_Delete(added);
    cJSON_ArrayForEach(m, have)
    {
        const char *v = member_value(m);
        if (v && !has_member(want, v)) {
            char *path = sk_asprintf("members[value eq \"%s\"]", v);
            add_op(ops, "remove", path, NULL, d);
            free(path);
        }
    }
}

/* Sub-attributes of the complex attribute key that have holds and want lacks. */
static void remove_dropped(cJSON *ops, const char *key, const cJSON *want, const cJSON *have,
                           enum scim_dialect d)
{
    const cJSON *sub;
    cJSON_ArrayForEach(sub, have)
    {
        if (cJSON_GetObjectItemCaseSensitive(want, sub->string))
            continue;
        /* an extension's attributes are addressed "urn:...:User:employeeNumber" */
        char *path =
            sk_asprintf("%s%s%s", key, strncmp(key, "urn:", 4) == 0 ? ":" : ".", sub->string);
        add_op(ops, "remove", path, NULL, d);
        free(path);
    }
}

cJSON *scim_patch_body(const cJSON *desired, const cJSON *have, bool is_group,
                       enum scim_dialect dialect)
{
    const char *const *keys = is_group ? group_managed : user_managed;
    cJSON *ops = cJSON_CreateArray();
    cJSON *okta_value = NULL; /* Okta: one path-less replace holding every changed attribute */
    for (size_t i = 0; keys[i]; i++) {
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(desired, keys[i]);
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(have, keys[i]);
        bool h_empty = !h || cJSON_IsNull(h) || (cJSON_IsArray(h) && !h->child);
        if (!w || (cJSON_IsArray(w) && !w->child && strcmp(keys[i], "members") != 0)) {
            if (!h_empty)
                add_op(ops, "remove", keys[i], NULL, dialect);
            continue;
        }
        if (strcmp(keys[i], "members") == 0) {
            patch_members(ops, w, h, dialect); /* nothing when the sets agree */
            continue;
        }
        /* a complex attribute replaced or compared whole would keep the
         * sub-attributes we no longer send (middleName; RFC 7644 §3.5.2.3):
         * remove those by path */
        if (cJSON_IsObject(w) && cJSON_IsObject(h))
            remove_dropped(ops, keys[i], w, h, dialect);
        if (subset(w, h))
            continue;
        if (dialect == SCIM_DIALECT_OKTA) {
            if (!okta_value)
                okta_value = cJSON_CreateObject();
            cJSON_AddItemToObject(okta_value, keys[i], cJSON_Duplicate(w, true));
            continue;
        }
        add_op(ops, "replace", keys[i], w, dialect);
    }
    if (okta_value) {
        add_op(ops, "replace", NULL, okta_value, dialect);
        cJSON_Delete(okta_value);
    }
    if (!ops->child) {
        cJSON_Delete(ops);
        return NULL;
    }
    cJSON *body = cJSON_CreateObject();
    cJSON *schemas = cJSON_AddArrayToObject(body, "schemas");
    cJSON_AddItemToArray(schemas, cJSON_CreateString(SCIM_PATCH_SCHEMA));
    cJSON_AddItemToObject(body, "Operations", ops);
    return body;
}

cJSON *scim_deactivate_body(enum scim_dialect dialect)
{
    cJSON *ops = cJSON_CreateArray();
    cJSON *f = cJSON_CreateFalse();
    if (dialect == SCIM_DIALECT_OKTA) {
        cJSON *v = cJSON_CreateObject();
        cJSON_AddFalseToObject(v, "active");
        add_op(ops, "replace", NULL, v, dialect);
        cJSON_Delete(v);
    } else {
        add_op(ops, "replace", "active", f, dialect);
    }
    cJSON_Delete(f);
    cJSON *body = cJSON_CreateObject();
    cJSON *schemas = cJSON_AddArrayToObject(body, "schemas");
    cJSON_AddItemToArray(schemas, cJSON_CreateString(SCIM_PATCH_SCHEMA));
    cJSON_AddItemToObject(body, "Operations", ops);
    return body;
}
