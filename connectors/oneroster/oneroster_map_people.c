/*
 * oneroster_map_people.c: the people side of the mapping SS 12000 ->
 * OneRoster 1.2 (docs/oneroster-mapping.md): roles, users and enrollments.
 *
 * Owns: who becomes a user (a person with a role: a student by an active
 * enrolment, staff by a duty, a guardian of a student in the bundle), the
 * DutyRole and RelationType tables, the synthetic role and enrollment ids,
 * what of a person a users row says (username, e-mail, grade, agents), and
 * referential integrity of what these rows name (the reference is dropped
 * and counted otherwise). Runs after oneroster_map_schools.c: enrollments
 * are into the classes it made.
 * Must never: read a civic number, an address or (unless include_phone, and
 * never for a protected person) a phone number; log a name (ids only,
 * log.h); depend on anything but the view (the same state gives the same
 * bundle).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "model.h"
#include "oneroster_map.h"
#include "privacy.h"
#include "util.h"

static bool is_protected(const cJSON *person)
{
    return sk_privacy_marking_is_protected(or_jstr(person, "securityMarking"));
}

/* ---- roles and users ---- */

/* Adds a role row (one per user, org and role; the user's first is primary). */
static void add_role(struct or_build *b, const char *user, const char *org, const char *role,
                     const char *begin, const char *end)
{
    char key[160];
    snprintf(key, sizeof(key), "%s_%s_%s", user, org, role);
    bool created;
    or_hmap_slot(&b->role_keys, key, &created);
    if (!created)
        return;
    char **row = or_row_add(b->out, &b->out->t[OR_ROLES], key);
    bool first;
    void **po = or_hmap_slot(&b->primary_org, user, &first);
    if (first)
        *po = sk_strdup(org);
    *or_hmap_slot(&b->users, user, NULL) = (void *)1;
    if (strcmp(role, "student") == 0)
        *or_hmap_slot(&b->students, user, NULL) = (void *)1;
    or_set(b->out, row, R_USER, user);
    or_set(b->out, row, R_TYPE, first ? "primary" : "secondary");
    or_set(b->out, row, R_ROLE, role);
    or_set(b->out, row, R_BEGIN, begin);
    or_set(b->out, row, R_END, or_end_after(begin, end));
    or_set(b->out, row, R_ORG, org);
}

static bool enrolment_active(const cJSON *e)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "cancelled");
    return !cJSON_IsTrue(c);
}

static void build_student_roles(struct or_build *b)
{
    for (size_t i = 0; i < b->view->persons.n; i++) {
        const struct or_doc *p = &b->view->persons.v[i];
        struct sk_json_arena *arena;
        const cJSON *doc = or_doc_open(p, &arena);
        const cJSON *e;
        cJSON_ArrayForEach(e, or_jarr(doc, "enrolments"))
        {
            if (!enrolment_active(e))
                continue;
            const char *org = or_jref(e, "enroledAt");
            if (!org || !or_coll_find(&b->view->orgs, org)) {
                or_dangling(b, "enrolment org", p->id, org);
                continue;
            }
            add_role(b, p->id, org, "student", or_jdate(e, "startDate"), or_jdate(e, "endDate"));
        }
        sk_json_arena_free(arena);
    }
}

/* SS 12000 DutyRole (docs/ss12000-notes.md §2.4) -> OneRoster 1.2 role. */
static const char *duty_role(const char *r)
{
    static const struct {
        const char *duty, *role;
    } map[] = {
        {"Rektor", "principal"},
        {"Förskolechef", "principal"},
        {"Lärare", "teacher"},
        {"Förstelärare", "teacher"},
        {"Förskollärare", "teacher"},
        {"Speciallärare/specialpedagog", "teacher"},
        {"Fritidspedagog", "teacher"},
        {"Lärarassistent", "aide"},
        {"Barnskötare", "aide"},
        {"Bibliotekarie", "aide"},
        {"Övrig pedagogisk personal", "aide"},
        {"Annan personal", "aide"},
        {"Kurator", "counselor"},
        {"Studie- och yrkesvägledare", "counselor"},
        {"Skolpsykolog", "counselor"},
        {"Skolsköterska", "counselor"},
        {"Skolläkare", "counselor"},
        {"Skoladministratör", "siteAdministrator"},
        {"Övrig arbetsledning", "siteAdministrator"},
    };
    for (size_t i = 0; r && i < N_OF(map); i++)
        if (strcmp(r, map[i].duty) == 0)
            return map[i].role;
    return "aide";
}

static void build_staff_roles(struct or_build *b)
{
    for (size_t i = 0; i < b->view->duties.n; i++) {
        const struct or_doc *d = &b->view->duties.v[i];
        const char *person = or_jref(d->doc, "person");
        const char *org = or_jref(d->doc, "dutyAt");
        if (!person || !or_coll_find(&b->view->persons, person)) {
            or_dangling(b, "duty person", d->id, person);
            continue;
        }
        if (!org || !or_coll_find(&b->view->orgs, org)) {
            or_dangling(b, "duty org", d->id, org);
            continue;
        }
        add_role(b, person, org, duty_role(or_jstr(d->doc, "dutyRole")),
                 or_jdate(d->doc, "startDate"), or_jdate(d->doc, "endDate"));
    }
}

static void add_agent(struct or_build *b, const char *of, const char *agent)
{
    bool created;
    void **slot = or_hmap_slot(&b->agents, of, &created);
    if (created)
        *slot = sk_calloc(1, sizeof(struct or_strvec));
    or_strvec_add_unique(*slot, agent);
}

/* RelationType (docs/ss12000-notes.md §2.4): custodians and trustees are guardians, others
 * relatives. */
static const char *relation_role(const char *rel)
{
    if (!rel || strcmp(rel, "Vårdnadshavare") == 0 || strcmp(rel, "God man") == 0)
        return "guardian";
    return "relative";
}

/* Guardians of the students in the bundle, at their student's primary org. */
static void build_guardian_roles(struct or_build *b)
{
    for (size_t i = 0; i < b->view->persons.n; i++) {
        const struct or_doc *p = &b->view->persons.v[i];
        /* Students are built first: a student's primary org is a school of hers. */
        const char *org = or_hmap_get(&b->primary_org, p->id);
        if (!org || !or_hmap_has(&b->students, p->id))
            continue;
        struct sk_json_arena *arena;
        const cJSON *doc = or_doc_open(p, &arena);
        const cJSON *r;
        cJSON_ArrayForEach(r, or_jarr(doc, "responsibles"))
        {
            const char *g = or_jref(r, "person");
            if (!g || !or_coll_find(&b->view->persons, g) || strcmp(g, p->id) == 0) {
                or_dangling(b, "responsible (missing, or the person herself)", p->id, g);
                continue;
            }
            add_role(b, g, org, relation_role(or_jstr(r, "relationType")), NULL, NULL);
            add_agent(b, p->id, g);
            add_agent(b, g, p->id);
        }
        sk_json_arena_free(arena);
    }
}

/* CEDS grade of a student's first active enrolment ("KG", "01".."13"), or NULL. */
static const char *student_grade(const cJSON *person, char buf[4])
{
    const cJSON *e;
    cJSON_ArrayForEach(e, or_jarr(person, "enrolments"))
    {
        if (!enrolment_active(e))
            continue;
        const char *st = or_jstr(e, "schoolType");
        const cJSON *y = cJSON_GetObjectItemCaseSensitive(e, "schoolYear");
        if (!st)
            return NULL;
        if (strcmp(st, "FS") == 0)
            return "PK";
        if (strcmp(st, "FKLASS") == 0)
            return "KG";
        if (!cJSON_IsNumber(y))
            return NULL;
        int n = y->valueint;
        if ((strcmp(st, "GR") == 0 || strcmp(st, "GRS") == 0 || strcmp(st, "SP") == 0 ||
             strcmp(st, "SAM") == 0) &&
            n >= 1 && n <= 10)
            snprintf(buf, 4, "%02d", n);
        else if ((strcmp(st, "GY") == 0 || strcmp(st, "GYS") == 0) && n >= 1 && n <= 4)
            snprintf(buf, 4, "%02d", n + 9);
        else
            return NULL;
        return buf;
    }
    return NULL;
}

static bool school_email_type(const char *t)
{
    return t && (strcmp(t, "Skola elev") == 0 || strcmp(t, "Skola personal") == 0);
}

/* A school address first; another only for a person without a protected identity. */
static const char *person_email(const cJSON *p, bool protected_identity)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, or_jarr(p, "emails"))
    {
        if (school_email_type(or_jstr(e, "type")) && or_jstr(e, "value"))
            return or_jstr(e, "value");
    }
    if (protected_identity)
        return NULL;
    cJSON_ArrayForEach(e, or_jarr(p, "emails"))
    {
        if (or_jstr(e, "value"))
            return or_jstr(e, "value");
    }
    return NULL;
}

static const char *person_phone(const cJSON *p, bool mobile)
{
    const cJSON *ph;
    cJSON_ArrayForEach(ph, or_jarr(p, "phoneNumbers"))
    {
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ph, "mobile")) == mobile &&
            or_jstr(ph, "value"))
            return or_jstr(ph, "value");
    }
    return NULL;
}

static void build_users(struct or_build *b)
{
    struct or_table *t = &b->out->t[OR_USERS];
    for (size_t i = 0; i < b->view->persons.n; i++) {
        const struct or_doc *p = &b->view->persons.v[i];
        if (!or_hmap_has(&b->users, p->id))
            continue;
        struct sk_json_arena *arena;
        const cJSON *doc = or_doc_open(p, &arena);
        bool prot = is_protected(doc);
        char **row = or_row_add(b->out, t, p->id);
        const char *status = or_jstr(doc, "personStatus");
        or_set(b->out, row, U_ENABLED, !status || strcmp(status, "Aktiv") == 0 ? "true" : "false");
        const cJSON *eppns = or_jarr(doc, "eduPersonPrincipalNames");
        const char *username = eppns && cJSON_IsString(eppns->child) && eppns->child->valuestring[0]
                                   ? eppns->child->valuestring
                                   : NULL;
        const char *email = person_email(doc, prot);
        or_set(b->out, row, U_USERNAME, username ? username : email ? email : p->id);
        /* Under protected_identities: minimal the names are gone (privacy.h);
         * givenName/familyName are required, so a neutral placeholder. */
        const char *given = or_jstr(doc, "givenName"), *family = or_jstr(doc, "familyName");
        or_set(b->out, row, U_GIVEN, given ? given : "-");
        or_set(b->out, row, U_FAMILY, family ? family : "-");
        or_set(b->out, row, U_MIDDLE, or_jstr(doc, "middleName"));
        or_set(b->out, row, U_EMAIL, email);
        if (b->opts->include_phone && !prot) {
            or_set(b->out, row, U_SMS, person_phone(doc, true));
            or_set(b->out, row, U_PHONE, person_phone(doc, false));
        }
        struct or_strvec *agents = or_hmap_get(&b->agents, p->id);
        if (agents) {
            struct or_strvec kept = {0};
            for (size_t k = 0; k < agents->n; k++)
                if (or_hmap_has(&b->users, agents->v[k]))
                    or_strvec_add_unique(&kept, agents->v[k]);
            or_set_own(b->out, row, U_AGENTS, or_strvec_join(&kept));
            or_strvec_clear(&kept);
        }
        char grade[4];
        const char *org = or_hmap_get(&b->primary_org, p->id);
        if (or_hmap_has(&b->students, p->id))
            or_set(b->out, row, U_GRADES, student_grade(doc, grade));
        or_set(b->out, row, U_PRIMARY_ORG, org);
        sk_json_arena_free(arena);
    }
}

/* ---- enrollments ---- */

static void add_enrollment(struct or_build *b, const char *cls, const char *school,
                           const char *user, const char *role, const char *primary,
                           const char *begin, const char *end)
{
    char id[160];
    snprintf(id, sizeof(id), "%s_%s_%s", cls, user, role);
    char **row = or_row_add(b->out, &b->out->t[OR_ENROLLMENTS], id);
    or_set(b->out, row, E_CLASS, cls);
    or_set(b->out, row, E_SCHOOL, school);
    or_set(b->out, row, E_USER, user);
    or_set(b->out, row, E_ROLE, role);
    or_set(b->out, row, E_PRIMARY, primary);
    or_set(b->out, row, E_BEGIN, begin);
    or_set(b->out, row, E_END, or_end_after(begin, end));
}

/* Student enrollments for the members of group g in class cls. */
static void enroll_members(struct or_build *b, const char *cls, const char *school,
                           const struct or_doc *g)
{
    struct sk_json_arena *arena;
    const cJSON *doc = or_doc_open(g, &arena);
    const cJSON *m;
    cJSON_ArrayForEach(m, or_jarr(doc, "groupMemberships"))
    {
        const char *person = or_jref(m, "person");
        if (!person || !or_hmap_has(&b->students, person)) {
            or_dangling(b, "group member (no student in the bundle)", g->id, person);
            continue;
        }
        const char *begin = or_jdate(m, "startDate"), *end = or_jdate(m, "endDate");
        add_enrollment(b, cls, school, person, "student", "false",
                       begin ? begin : or_jdate(doc, "startDate"),
                       end ? end : or_jdate(doc, "endDate"));
    }
    sk_json_arena_free(arena);
}

/* The teacher of a duty, if that person is a user in the bundle. */
static const char *duty_teacher(struct or_build *b, const char *from, const char *duty_id)
{
    const struct or_doc *d = or_coll_find(&b->view->duties, duty_id);
    const char *person = d ? or_jref(d->doc, "person") : NULL;
    if (!person || !or_hmap_has(&b->users, person)) {
        or_dangling(b, "teacher duty", from, duty_id);
        return NULL;
    }
    return person;
}

static void build_enrollments(struct or_build *b)
{
    for (size_t i = 0; i < b->view->activities.n; i++) {
        const struct or_doc *a = &b->view->activities.v[i];
        const char *school = or_hmap_get(&b->classes, a->id);
        if (!school)
            continue;
        const cJSON *ref;
        cJSON_ArrayForEach(ref, or_jarr(a->doc, "groups"))
        {
            const struct or_doc *g = or_coll_find(&b->view->groups, or_jstr(ref, "id"));
            if (!g) {
                or_dangling(b, "activity group", a->id, or_jstr(ref, "id"));
                continue;
            }
            enroll_members(b, a->id, school, g);
        }
        /* The first teacher listed is the primary one; a person listed again
         * (the same duty twice, or two duties of hers) is one enrollment. */
        struct or_strvec seen = {0};
        const cJSON *t;
        cJSON_ArrayForEach(t, or_jarr(a->doc, "teachers"))
        {
            const char *person = duty_teacher(b, a->id, or_jref(t, "duty"));
            size_t before = seen.n;
            if (person)
                or_strvec_add_unique(&seen, person);
            if (seen.n == before)
                continue;
            add_enrollment(b, a->id, school, person, "teacher", before == 0 ? "true" : "false",
                           or_jdate(t, "startDate"), or_jdate(t, "endDate"));
        }
        or_strvec_clear(&seen);
    }
    for (size_t i = 0; i < b->view->groups.n; i++) {
        const struct or_doc *g = &b->view->groups.v[i];
        if (or_hmap_has(&b->classes, g->id))
            enroll_members(b, g->id, or_hmap_get(&b->classes, g->id), g);
    }
    /* Mentors (Duty.assignmentRole) teach their homeroom class. */
    for (size_t i = 0; i < b->view->duties.n; i++) {
        const struct or_doc *d = &b->view->duties.v[i];
        const cJSON *ar;
        cJSON_ArrayForEach(ar, or_jarr(d->doc, "assignmentRole"))
        {
            const char *gid = or_jref(ar, "group");
            const char *type = or_jstr(ar, "assignmentRoleType");
            if (!gid || !or_hmap_has(&b->classes, gid) || !type || strcmp(type, "Mentor") != 0)
                continue;
            const char *person = duty_teacher(b, gid, d->id);
            if (person)
                add_enrollment(b, gid, or_hmap_get(&b->classes, gid), person, "teacher", "false",
                               or_jdate(ar, "startDate"), or_jdate(ar, "endDate"));
        }
    }
}

void or_map_people(struct or_build *b)
{
    build_student_roles(b);
    build_staff_roles(b);
    if (b->opts->include_guardians)
        build_guardian_roles(b);
    build_users(b);
    /* No step after the users reads a person: at 1M entities their text is
     * ~50 MB, freed before the enrollments (the largest table) are made. */
    or_coll_free(&b->view->persons);
    build_enrollments(b);
}
