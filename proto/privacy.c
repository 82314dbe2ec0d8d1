/* privacy.c: see privacy.h. */
#include "privacy.h"

#include <string.h>
#include <strings.h>

static const char *const mode_names[] = {"allow", "minimal", "skip"};

int sk_protected_mode_parse(const char *text, enum sk_protected_mode *out)
{
    for (int i = 0; i < 3; i++) {
        if (strcmp(text, mode_names[i]) == 0) {
            *out = (enum sk_protected_mode)i;
            return 0;
        }
    }
    return -1;
}

const char *sk_protected_mode_name(enum sk_protected_mode mode)
{
    return (unsigned)mode < 3 ? mode_names[mode] : "?";
}

/*
 * Keys are matched without regard to case, and every match counts: a record
 * may come with "civicNo" twice (the codec keeps the second in _unknown and
 * gives both back) or as "CivicNo", and a target may read another copy than
 * the first (PostgreSQL's jsonb keeps the last). So a marking is read from
 * every copy, and a field is dropped in every copy.
 */
static bool key_is(const cJSON *x, const char *key)
{
    return x->string && strcasecmp(x->string, key) == 0;
}

/* Deletes every member of obj named key (any case). */
static void delete_all(cJSON *obj, const char *key)
{
    for (cJSON *x = obj->child, *next; x; x = next) {
        next = x->next;
        if (key_is(x, key))
            cJSON_Delete(cJSON_DetachItemViaPointer(obj, x));
    }
}

/* The protected markings (privacy.h), each as written in NFC and in NFD (the
 * ö decomposed): a byte comparison with the NFC form alone missed the NFD one. */
static const char *const protected_markings[][2] = {
    {"Skyddad folkbokföring", "Skyddad folkbokfo\xcc\x88ring"},
    {"Sekretessmarkering", "Sekretessmarkering"},
};
#define N_MARKINGS (sizeof(protected_markings) / sizeof(protected_markings[0]))

const char *sk_privacy_marking(size_t i)
{
    return i < N_MARKINGS ? protected_markings[i][0] : NULL;
}

/* The NFC form of marking when it is a protected one, else NULL. */
static const char *protected_nfc(const char *marking)
{
    for (size_t i = 0; marking && i < N_MARKINGS; i++)
        if (!strcmp(marking, protected_markings[i][0]) ||
            !strcmp(marking, protected_markings[i][1]))
            return protected_markings[i][0];
    return NULL;
}

bool sk_privacy_marking_is_protected(const char *marking)
{
    return protected_nfc(marking) != NULL;
}

/* The protected marking of obj's own securityMarking (any copy), in NFC, or NULL. */
static const char *marked_protected(const cJSON *obj)
{
    for (const cJSON *x = obj->child; x; x = x->next) {
        const char *nfc = key_is(x, "securityMarking") && cJSON_IsString(x)
                              ? protected_nfc(x->valuestring)
                              : NULL;
        if (nfc)
            return nfc;
    }
    return NULL;
}

/* A protected obj keeps one securityMarking, the protected one in NFC: what
 * a target's own query reads (the hub's SQL, a postgres-sink's purge) is
 * then what was decided here, whichever copy it reads. */
static void mark_protected(cJSON *obj, const char *marking)
{
    delete_all(obj, "securityMarking");
    cJSON_AddStringToObject(obj, "securityMarking", marking);
}

bool sk_privacy_is_protected(const struct sk_entity *e, const cJSON *doc)
{
    if (!e || strcmp(e->name, "Person") != 0 || !doc)
        return false;
    return marked_protected(doc) != NULL;
}

/*
 * A reference to a protected person anywhere in a document (the spec's
 * PersonReference: id, displayName, securityMarking; a group's memberships, a
 * person's responsibles, a placement's child and owners, a duty's person)
 * carries the person's name in its displayName: it goes. The reference (its
 * id) stays: what relates to the person still does.
 */
static void strip_protected_names(cJSON *node)
{
    for (cJSON *x = node ? node->child : NULL; x; x = x->next) {
        const char *marking = cJSON_IsObject(x) ? marked_protected(x) : NULL;
        if (marking) {
            delete_all(x, "displayName");
            mark_protected(x, marking);
        }
        if (cJSON_IsObject(x) || cJSON_IsArray(x))
            strip_protected_names(x);
    }
}

/* Removes the dotted path from obj, every copy of each step; descends through
 * arrays of objects. */
static void drop_path(cJSON *obj, const char *path)
{
    if (!obj)
        return;
    if (cJSON_IsArray(obj)) {
        for (cJSON *x = obj->child; x; x = x->next)
            drop_path(x, path);
        return;
    }
    if (!cJSON_IsObject(obj))
        return;
    const char *dot = strchr(path, '.');
    if (!dot) {
        delete_all(obj, path);
        return;
    }
    char head[128];
    size_t n = (size_t)(dot - path);
    if (n >= sizeof(head))
        return;
    memcpy(head, path, n);
    head[n] = '\0';
    for (cJSON *x = obj->child; x; x = x->next)
        if (key_is(x, head))
            drop_path(x, dot + 1);
}

static bool school_email(const cJSON *email)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(email, "type");
    return cJSON_IsString(t) && (strcmp(t->valuestring, "Skola elev") == 0 ||
                                 strcmp(t->valuestring, "Skola personal") == 0);
}

/* Keeps only what an account needs (privacy.h). */
static void minimise(cJSON *doc)
{
    static const char *const keep[] = {"id",
                                       "meta",
                                       "securityMarking",
                                       "personStatus",
                                       "eduPersonPrincipalNames",
                                       "emails",
                                       "enrolments",
                                       NULL};
    cJSON *x = doc->child;
    while (x) {
        cJSON *next = x->next;
        bool kept = false;
        for (size_t i = 0; keep[i] && !kept; i++)
            kept = x->string && strcmp(x->string, keep[i]) == 0;
        if (!kept)
            cJSON_Delete(cJSON_DetachItemViaPointer(doc, x));
        x = next;
    }
    cJSON *emails = cJSON_GetObjectItemCaseSensitive(doc, "emails");
    if (cJSON_IsArray(emails)) {
        cJSON *e = emails->child;
        while (e) {
            cJSON *next = e->next;
            if (!school_email(e))
                cJSON_Delete(cJSON_DetachItemViaPointer(emails, e));
            e = next;
        }
        if (!emails->child)
            cJSON_DeleteItemFromObjectCaseSensitive(doc, "emails");
    }
}

enum sk_privacy_verdict sk_privacy_apply(const struct sk_privacy *p, const struct sk_entity *e,
                                         cJSON *doc)
{
    const char *marking = e && doc && !strcmp(e->name, "Person") ? marked_protected(doc) : NULL;
    if (marking) {
        if (p->protected_mode == SK_PROTECTED_SKIP)
            return SK_PRIVACY_DELETE;
        mark_protected(doc, marking);
        if (p->protected_mode == SK_PROTECTED_MINIMAL)
            minimise(doc);
    }
    if (p->protected_mode != SK_PROTECTED_ALLOW)
        strip_protected_names(doc);
    for (size_t i = 0; i < p->drop_fields.n; i++)
        drop_path(doc, p->drop_fields.v[i]);
    return SK_PRIVACY_KEEP;
}
