/*
 * hub_expand.c: expand and expandReferenceNames on a served document, as
 * the SS 12000 2.1 OpenAPI file defines them (docs/ss12000-notes.md §2.1):
 * with expand=..., the related entities come in "_embedded" (the spec's
 * …Expanded schemas); with expandReferenceNames=true, every reference
 * ({"id": ...}) gets the displayName of the entity it names.
 *
 * Owns: which relation each expand name follows, the embedded shapes, the
 * name of an entity. Must never: read another entity except through fetch()
 * (the one place a client's visibility must be applied: an entity the
 * client may not see is neither embedded nor named), or change what the
 * document itself holds besides displayName in references and _embedded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub.h"
#include "hub_query.h"
#include "util.h"

/* What a reader may see: the types it may read, and its view (organisations, attribute groups,
 * privacy; NULL: everything of those types). */
struct seen {
    uint32_t types;
    const struct hub_view *view;
};

/*
 * Every related entity this file reads: the served documents of collection
 * whose row matches cond (SQL on c.doc / c.id with ?1 = the expanding
 * document's id, ?2 = its JSON), appended to into (an array), in id order.
 * A type the client may not read (or the hub does not consume) has none.
 *
 * VISIBILITY: a client scoped to some organisations sees here only what it
 * may see in a list (the view's scope clause on hub_rows r), each document
 * filtered by its attribute groups and privacy (hub_store_served); nowhere
 * else in this file reads another entity.
 */
static int fetch(sqlite3 *db, const struct seen *have, const char *collection, const char *cond,
                 const char *id, const char *json, cJSON *into, struct sk_error *err)
{
    const struct sk_entity *target = sk_entity_by_collection(collection);
    int i = sk_entity_index(target);
    if (i < 0 || !(have->types & (1u << i)))
        return 0;
    const struct hub_view *view = have->view;
    char *sql = sk_asprintf("SELECT c.doc, r.stamp FROM \"%s\" c JOIN hub_rows r ON "
                            "r.collection = ?3 AND r.id = c.id WHERE (%s)%s ORDER BY c.id",
                            collection, cond, view && view->scope_sql ? view->scope_sql : "");
    sqlite3_stmt *q;
    int rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    free(sql);
    if (rc != SQLITE_OK)
        return sk_error_set(err, SK_ERR_RETRIABLE, "expanding %s: %s", collection,
                            sqlite3_errmsg(db));
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, json, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, collection, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        cJSON *doc = hub_store_served(target, (const char *)sqlite3_column_text(q, 0),
                                      sqlite3_column_int64(q, 1), view, NULL);
        if (doc)
            cJSON_AddItemToArray(into, doc);
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE)
        return sk_error_set(err, SK_ERR_RETRIABLE, "expanding %s: %s", collection,
                            sqlite3_errmsg(db));
    return 0;
}

/* ---- expand ------------------------------------------------------------------------- */

enum shape {
    S_LIST,     /* the related documents as they are served */
    S_ONE,      /* the first (only) one, or no member */
    S_FRAGMENT, /* one group without its memberships (GroupFragment) */
    S_SPECIAL,  /* built by a function below */
};

struct expansion {
    const char *collection, *name; /* the type expanding, the expand value (= the _embedded key) */
    const char *target;            /* the collection it reads */
    const char *cond;              /* fetch()'s cond */
    enum shape shape;
};

#define OWN(path) "c.id = json_extract(?2,'$." path ".id')"
#define OWN_LIST(arr, sub)                                                                         \
    "c.id IN (SELECT json_extract(x.value,'$" sub "') FROM json_each(?2,'$." arr "') x)"
#define BACK(path) "json_extract(c.doc,'$." path ".id') = ?1"
/* The documents whose array (hub_refs.c) holds the expanding document's id. */
#define IN_REFS(coll, name) "c.id IN " HUB_REFS(coll, name, "?1")

/* Per type in the spec's order; a value's bit is its position among its type's rows. */
static const struct expansion expansions[] = {
    {"persons", "duties", "duties", BACK("person"), S_LIST},
    {"persons", "responsibleFor", "persons", IN_REFS("persons", "responsible"), S_SPECIAL},
    {"persons", "placements", "placements", BACK("child"), S_LIST},
    {"persons", "ownedPlacements", "placements", IN_REFS("placements", "owner"), S_LIST},
    {"persons", "groupMemberships", "groups", IN_REFS("groups", "member"), S_SPECIAL},
    {"placements", "child", "persons", OWN("child"), S_ONE},
    {"placements", "owners", "persons", OWN_LIST("owners", ".id"), S_LIST},
    {"duties", "person", "persons", OWN("person"), S_ONE},
    {"groups", "assignmentRoles", "duties", IN_REFS("duties", "group"), S_SPECIAL},
    {"activities", "groups", "groups", OWN_LIST("groups", ".id"), S_LIST},
    {"activities", "teachers", "duties", OWN_LIST("teachers", ".duty.id"), S_LIST},
    {"activities", "syllabus", "syllabuses", OWN("syllabus"), S_ONE},
    {"calendarEvents", "activity", "activities", OWN("activity"), S_ONE},
    {"calendarEvents", "attendance", "attendances", BACK("calendarEvent"), S_LIST},
    {"attendanceEvents", "person", "persons", OWN("person"), S_ONE},
    {"attendanceEvents", "group", "groups", OWN("group"), S_FRAGMENT},
    {"attendanceEvents", "registeredBy", "persons", OWN("registeredBy"), S_ONE},
};

int hub_expand_bit(const struct sk_entity *e, const char *name)
{
    int bit = 0;
    for (size_t i = 0; i < sizeof(expansions) / sizeof(expansions[0]); i++) {
        if (strcmp(expansions[i].collection, e->collection) != 0)
            continue;
        if (strcmp(expansions[i].name, name) == 0)
            return bit;
        bit++;
    }
    return -1;
}

const char *hub_expand_needs(const struct sk_entity *e, const char *name)
{
    static const char *const needs[][3] = {{"persons", "responsibleFor", "responsibles"},
                                           {"persons", "ownedPlacements", "owners"},
                                           {"persons", "groupMemberships", "groupMemberships"},
                                           {"placements", "owners", "owners"}};
    for (size_t i = 0; i < sizeof(needs) / sizeof(needs[0]); i++)
        if (strcmp(needs[i][0], e->collection) == 0 && strcmp(needs[i][1], name) == 0)
            return needs[i][2];
    return NULL;
}

static const char *str_at(const cJSON *obj, const char *a, const char *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, a);
    if (b)
        v = cJSON_GetObjectItemCaseSensitive(v, b);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void copy_member(cJSON *to, const cJSON *from, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(from, key);
    if (v)
        cJSON_AddItemToObject(to, key, cJSON_Duplicate(v, true));
}

/*
 * The special shapes: each related document gives one item per entry of
 * its list (list, with sub naming the reference) that points back at id.
 *   responsibleFor:   {person: {id: child}, relationType}
 *   groupMemberships: {group: GroupFragment, startDate, endDate}
 *   assignmentRoles:  {duty: {id: duty}, assignmentRoleType, startDate, endDate}
 */
static cJSON *special(const struct expansion *x, const char *id, cJSON *related)
{
    const char *list = strcmp(x->name, "responsibleFor") == 0     ? "responsibles"
                       : strcmp(x->name, "groupMemberships") == 0 ? "groupMemberships"
                                                                  : "assignmentRole";
    const char *sub = strcmp(x->name, "assignmentRoles") == 0 ? "group" : "person";
    cJSON *out = cJSON_CreateArray(), *doc;
    cJSON_ArrayForEach(doc, related)
    {
        const cJSON *entry;
        cJSON_ArrayForEach(entry, cJSON_GetObjectItemCaseSensitive(doc, list))
        {
            const char *ref = str_at(entry, sub, "id");
            if (!ref || strcmp(ref, id) != 0)
                continue;
            cJSON *item = cJSON_CreateObject();
            if (strcmp(x->name, "groupMemberships") == 0) {
                cJSON *group = cJSON_Duplicate(doc, true);
                cJSON_DeleteItemFromObjectCaseSensitive(group, "groupMemberships");
                cJSON_AddItemToObject(item, "group", group);
            } else {
                cJSON *other = cJSON_AddObjectToObject(
                    item, strcmp(x->name, "responsibleFor") == 0 ? "person" : "duty");
                cJSON_AddStringToObject(other, "id", str_at(doc, "id", NULL));
            }
            copy_member(item, entry, "relationType");
            copy_member(item, entry, "assignmentRoleType");
            copy_member(item, entry, "startDate");
            copy_member(item, entry, "endDate");
            cJSON_AddItemToArray(out, item);
        }
    }
    return out;
}

static int expand(sqlite3 *db, const struct seen *have, const struct sk_entity *e, uint32_t bits,
                  cJSON *doc, struct sk_error *err)
{
    const char *id = str_at(doc, "id", NULL);
    char *json = cJSON_PrintUnformatted(doc);
    cJSON *embedded = cJSON_CreateObject();
    int rc = 0, bit = 0;
    for (size_t i = 0; i < sizeof(expansions) / sizeof(expansions[0]) && rc == 0; i++) {
        const struct expansion *x = &expansions[i];
        if (strcmp(x->collection, e->collection) != 0)
            continue;
        if (!(bits & (1u << bit++)))
            continue;
        cJSON *related = cJSON_CreateArray();
        rc = fetch(db, have, x->target, x->cond, id ? id : "", json, related, err);
        cJSON *value = related;
        if (x->shape == S_SPECIAL) {
            value = special(x, id ? id : "", related);
            cJSON_Delete(related);
        } else if (x->shape != S_LIST) {
            value = cJSON_DetachItemFromArray(related, 0);
            cJSON_Delete(related);
            if (value && x->shape == S_FRAGMENT)
                cJSON_DeleteItemFromObjectCaseSensitive(value, "groupMemberships");
        }
        if (value)
            cJSON_AddItemToObject(embedded, x->name, value);
    }
    free(json);
    cJSON_DeleteItemFromObjectCaseSensitive(doc, "_embedded");
    cJSON_AddItemToObject(doc, "_embedded", embedded);
    return rc;
}

/* ---- expandReferenceNames ------------------------------------------------------------- */

/* The member names under which a reference names an entity of a type. */
static const char *const ref_keys[][2] = {
    {"organisation", "organisations"},
    {"parentOrganisation", "organisations"},
    {"dutyAt", "organisations"},
    {"placedAt", "organisations"},
    {"enroledAt", "organisations"},
    {"offeredAt", "organisations"},
    {"owner", "organisations"},
    {"person", "persons"},
    {"child", "persons"},
    {"owners", "persons"},
    {"student", "persons"},
    {"registeredBy", "persons"},
    {"gradingTeacher", "persons"},
    {"reporter", "persons"},
    {"group", "groups"},
    {"groups", "groups"},
    {"duty", "duties"},
    {"activity", "activities"},
    {"parentActivity", "activities"},
    {"syllabus", "syllabuses"},
    {"offeredSyllabuses", "syllabuses"},
    {"programme", "programmes"},
    {"parentProgramme", "programmes"},
    {"offeredProgrammes", "programmes"},
    {"rooms", "rooms"},
    {"resources", "resources"},
};

/* The name an entity is shown by: a person's given and family name, else its own name field. */
static char *name_of(const cJSON *doc, const char *collection)
{
    if (strcmp(collection, "persons") == 0) {
        const char *given = str_at(doc, "givenName", NULL),
                   *family = str_at(doc, "familyName", NULL);
        if (!given && !family)
            return NULL;
        return sk_asprintf("%s%s%s", given ? given : "", given && family ? " " : "",
                           family ? family : "");
    }
    const char *name = strcmp(collection, "programmes") == 0 ? str_at(doc, "name", NULL)
                       : strcmp(collection, "syllabuses") == 0
                           ? (str_at(doc, "courseName", NULL) ? str_at(doc, "courseName", NULL)
                                                              : str_at(doc, "subjectName", NULL))
                           : str_at(doc, "displayName", NULL);
    return name ? sk_strdup(name) : NULL;
}

static int name_ref(sqlite3 *db, const struct seen *have, const char *collection, cJSON *ref,
                    struct sk_error *err)
{
    const char *id = str_at(ref, "id", NULL);
    if (!cJSON_IsObject(ref) || !id)
        return 0;
    cJSON *found = cJSON_CreateArray();
    int rc = fetch(db, have, collection, "c.id = ?1", id, "", found, err);
    const cJSON *target = cJSON_GetArrayItem(found, 0);
    char *name = rc == 0 && target ? name_of(target, collection) : NULL;
    if (strcmp(collection, "duties") == 0 && target) { /* a duty is its person's */
        rc = name_ref(db, have, "persons", cJSON_GetObjectItemCaseSensitive(target, "person"), err);
        const char *person = str_at(target, "person", "displayName");
        name = person ? sk_strdup(person) : NULL;
    }
    if (name) {
        cJSON_DeleteItemFromObjectCaseSensitive(ref, "displayName");
        cJSON_AddStringToObject(ref, "displayName", name);
    } else if (target && strcmp(collection, "persons") == 0) {
        /* a person the client is shown without a name (protected, minimal): nor here */
        cJSON_DeleteItemFromObjectCaseSensitive(ref, "displayName");
    }
    free(name);
    cJSON_Delete(found);
    return rc;
}

/* Walks obj's members (not _embedded: those documents are the client's to name) and names refs. */
static int name_refs(sqlite3 *db, const struct seen *have, cJSON *obj, struct sk_error *err)
{
    cJSON *member;
    cJSON_ArrayForEach(member, obj)
    {
        if (member->string && strcmp(member->string, "_embedded") == 0)
            continue;
        const char *target = NULL;
        for (size_t i = 0; member->string && i < sizeof(ref_keys) / sizeof(ref_keys[0]); i++)
            if (strcmp(ref_keys[i][0], member->string) == 0)
                target = ref_keys[i][1];
        if (target && cJSON_IsObject(member) && name_ref(db, have, target, member, err) < 0)
            return -1;
        if (target && cJSON_IsArray(member)) {
            cJSON *ref;
            cJSON_ArrayForEach(ref, member)
            {
                if (name_ref(db, have, target, ref, err) < 0)
                    return -1;
            }
        }
        if ((cJSON_IsObject(member) || cJSON_IsArray(member)) &&
            name_refs(db, have, member, err) < 0)
            return -1;
    }
    return 0;
}

int hub_expand_apply(sqlite3 *db, const struct sk_entity *e, const struct hub_filter *f,
                     const struct hub_view *view, cJSON *doc, struct sk_error *err)
{
    struct seen have = {hub_filter_readable(f), view};
    if (hub_filter_ref_names(f) && name_refs(db, &have, doc, err) < 0)
        return -1;
    uint32_t bits = hub_filter_expand(f);
    return bits ? expand(db, &have, e, bits, doc, err) : 0;
}

const char *hub_expand_bad_collection(void)
{
    for (size_t i = 0; i < sizeof(expansions) / sizeof(expansions[0]); i++)
        if (!sk_entity_by_collection(expansions[i].collection) ||
            !sk_entity_by_collection(expansions[i].target))
            return expansions[i].collection;
    for (size_t i = 0; i < sizeof(ref_keys) / sizeof(ref_keys[0]); i++)
        if (!sk_entity_by_collection(ref_keys[i][1]))
            return ref_keys[i][1];
    return NULL;
}
