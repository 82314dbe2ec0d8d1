/*
 * oneroster_bundle.c: the mapping from SS 12000 entities to OneRoster 1.2
 * bulk rows (docs/oneroster-mapping.md has the table and the reasons).
 *
 * Owns: which entity becomes which row, the synthetic ids (school years,
 * terms, courses for activities without a syllabus, homeroom courses, roles,
 * enrollments), and referential integrity: every sourcedId a row names exists
 * in the bundle, or the reference is dropped and counted.
 * Must never: read a civic number, an address or (unless include_phone, and
 * never for a protected person) a phone number; log a name (ids only, log.h);
 * depend on anything but the view (the same state gives the same bundle).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "oneroster_internal.h"
#include "util.h"

/* ---- column lists (OneRoster CSV Binding 1.2, docs/oneroster-mapping.md) ---- */

static const char *const sessions_cols[] = {
    "sourcedId", "status",  "dateLastModified", "title",     "type",
    "startDate", "endDate", "parentSourcedId",  "schoolYear"};
enum { S_ID, S_STATUS, S_DLM, S_TITLE, S_TYPE, S_START, S_END, S_PARENT, S_YEAR };

static const char *const orgs_cols[] = {"sourcedId", "status",     "dateLastModified", "name",
                                        "type",      "identifier", "parentSourcedId"};
enum { O_ID, O_STATUS, O_DLM, O_NAME, O_TYPE, O_IDENT, O_PARENT };

static const char *const courses_cols[] = {
    "sourcedId", "status",       "dateLastModified", "schoolYearSourcedId", "title", "courseCode",
    "grades",    "orgSourcedId", "subjects",         "subjectCodes"};
enum { C_ID, C_STATUS, C_DLM, C_YEAR, C_TITLE, C_CODE, C_GRADES, C_ORG, C_SUBJ, C_SUBJCODES };

static const char *const classes_cols[] = {
    "sourcedId",       "status",    "dateLastModified", "title",    "grades",
    "courseSourcedId", "classCode", "classType",        "location", "schoolSourcedId",
    "termSourcedIds",  "subjects",  "subjectCodes",     "periods"};
enum {
    K_ID,
    K_STATUS,
    K_DLM,
    K_TITLE,
    K_GRADES,
    K_COURSE,
    K_CODE,
    K_TYPE,
    K_LOCATION,
    K_SCHOOL,
    K_TERMS,
    K_SUBJ,
    K_SUBJCODES,
    K_PERIODS
};

/* 1.2 (not 1.2.1): resourceSourcedIds is still in users.csv (hanachin/meibo
 * lib/meibo/oneroster/v1_2/user.rb; 1.2.1 moves it to userResources.csv). */
static const char *const users_cols[] = {"sourcedId",
                                         "status",
                                         "dateLastModified",
                                         "enabledUser",
                                         "username",
                                         "userIds",
                                         "givenName",
                                         "familyName",
                                         "middleName",
                                         "identifier",
                                         "email",
                                         "sms",
                                         "phone",
                                         "agentSourcedIds",
                                         "grades",
                                         "password",
                                         "userMasterIdentifier",
                                         "resourceSourcedIds",
                                         "preferredGivenName",
                                         "preferredMiddleName",
                                         "preferredFamilyName",
                                         "primaryOrgSourcedId",
                                         "pronouns"};
enum {
    U_ID,
    U_STATUS,
    U_DLM,
    U_ENABLED,
    U_USERNAME,
    U_USERIDS,
    U_GIVEN,
    U_FAMILY,
    U_MIDDLE,
    U_IDENT,
    U_EMAIL,
    U_SMS,
    U_PHONE,
    U_AGENTS,
    U_GRADES,
    U_PASSWORD,
    U_UMI,
    U_RESOURCES,
    U_PGIVEN,
    U_PMIDDLE,
    U_PFAMILY,
    U_PRIMARY_ORG,
    U_PRONOUNS
};

static const char *const roles_cols[] = {
    "sourcedId", "status",    "dateLastModified", "userSourcedId", "roleType",
    "role",      "beginDate", "endDate",          "orgSourcedId",  "userProfileSourcedId"};
enum { R_ID, R_STATUS, R_DLM, R_USER, R_TYPE, R_ROLE, R_BEGIN, R_END, R_ORG, R_PROFILE };

static const char *const enrollments_cols[] = {
    "sourcedId",     "status", "dateLastModified", "classSourcedId", "schoolSourcedId",
    "userSourcedId", "role",   "primary",          "beginDate",      "endDate"};
enum { E_ID, E_STATUS, E_DLM, E_CLASS, E_SCHOOL, E_USER, E_ROLE, E_PRIMARY, E_BEGIN, E_END };

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* ---- a small string-keyed hash map (keys copied, values opaque) ------------ */

struct hmap {
    char **keys;
    void **vals;
    size_t cap, n;
};

static size_t hash_str(const char *s)
{
    size_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static size_t hmap_index(const struct hmap *m, const char *key)
{
    size_t i = hash_str(key) & (m->cap - 1);
    while (m->keys[i] && strcmp(m->keys[i], key) != 0)
        i = (i + 1) & (m->cap - 1);
    return i;
}

static void **hmap_slot(struct hmap *m, const char *key, bool *created)
{
    if ((m->n + 1) * 2 > m->cap) {
        struct hmap bigger = {.cap = m->cap ? m->cap * 2 : 64};
        bigger.keys = sk_calloc(bigger.cap, sizeof(char *));
        bigger.vals = sk_calloc(bigger.cap, sizeof(void *));
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->keys[i])
                continue;
            size_t j = hmap_index(&bigger, m->keys[i]);
            bigger.keys[j] = m->keys[i];
            bigger.vals[j] = m->vals[i];
        }
        bigger.n = m->n;
        free(m->keys);
        free(m->vals);
        *m = bigger;
    }
    size_t i = hmap_index(m, key);
    if (created)
        *created = !m->keys[i];
    if (!m->keys[i]) {
        m->keys[i] = sk_strdup(key);
        m->n++;
    }
    return &m->vals[i];
}

static void *hmap_get(const struct hmap *m, const char *key)
{
    if (!m->cap || !key)
        return NULL;
    size_t i = hmap_index(m, key);
    return m->keys[i] ? m->vals[i] : NULL;
}

static bool hmap_has(const struct hmap *m, const char *key)
{
    return m->cap && key && m->keys[hmap_index(m, key)] != NULL;
}

static void hmap_free(struct hmap *m, void (*free_val)(void *))
{
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] && free_val)
            free_val(m->vals[i]);
        free(m->keys[i]);
    }
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

/* A growable list of strings (the value type of several maps). */
struct strvec {
    char **v;
    size_t n, cap;
};

static void strvec_add_unique(struct strvec *s, const char *x)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], x) == 0)
            return;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4;
        s->v = sk_realloc(s->v, s->cap * sizeof(char *));
    }
    s->v[s->n++] = sk_strdup(x);
}

static void strvec_free(void *p)
{
    struct strvec *s = p;
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    free(s);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The list as one cell: sorted, comma-separated (the CSV layer quotes it). */
static char *strvec_join(struct strvec *s)
{
    if (!s || s->n == 0)
        return NULL;
    qsort(s->v, s->n, sizeof(char *), cmp_str);
    size_t len = 0;
    for (size_t i = 0; i < s->n; i++)
        len += strlen(s->v[i]) + 1;
    char *out = sk_malloc(len + 1), *p = out;
    for (size_t i = 0; i < s->n; i++)
        p += sprintf(p, "%s%s", i ? "," : "", s->v[i]);
    return out;
}

/* ---- the view ------------------------------------------------------------ */

static int cmp_doc_id(const void *key, const void *elem)
{
    return strcmp(key, ((const struct or_doc *)elem)->id);
}

const struct or_doc *or_coll_find(const struct or_coll *c, const char *id)
{
    if (!id || !c->n)
        return NULL;
    return bsearch(id, c->v, c->n, sizeof(*c->v), cmp_doc_id);
}

static void coll_free(struct or_coll *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].id);
        cJSON_Delete(c->v[i].doc);
    }
    free(c->v);
    memset(c, 0, sizeof(*c));
}

void or_view_free(struct or_view *v)
{
    coll_free(&v->orgs);
    coll_free(&v->persons);
    coll_free(&v->groups);
    coll_free(&v->activities);
    coll_free(&v->duties);
    coll_free(&v->syllabuses);
}

/* ---- JSON helpers -------------------------------------------------------- */

static const char *jstr(const cJSON *obj, const char *key)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(x) && x->valuestring[0] ? x->valuestring : NULL;
}

/* obj.key.id (an ObjectReference). */
static const char *jref(const cJSON *obj, const char *key)
{
    return jstr(cJSON_GetObjectItemCaseSensitive(obj, key), "id");
}

static const cJSON *jarr(const cJSON *obj, const char *key)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsArray(x) ? x : NULL;
}

/* A date "YYYY-MM-DD" as SS 12000 writes it (docs/ss12000-notes.md §2.1); NULL if not one. */
static const char *jdate(const cJSON *obj, const char *key)
{
    const char *s = jstr(obj, key);
    if (!s || strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return NULL;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
            return NULL;
    return s;
}

static bool is_protected(const cJSON *person)
{
    const char *m = jstr(person, "securityMarking");
    return m && (strcmp(m, "Skyddad folkbokföring") == 0 || strcmp(m, "Sekretessmarkering") == 0);
}

/* ---- tables -------------------------------------------------------------- */

static void table_init(struct or_table *t, const char *name, const char *const *cols, size_t n)
{
    memset(t, 0, sizeof(*t));
    t->name = name;
    t->cols = cols;
    t->n_cols = n;
}

static char **row_add(struct or_table *t, const char *id)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->rows = sk_realloc(t->rows, t->cap * sizeof(char **));
    }
    char **row = sk_calloc(t->n_cols, sizeof(char *));
    row[0] = sk_strdup(id);
    t->rows[t->n++] = row;
    return row;
}

static void set(char **row, int col, const char *value)
{
    free(row[col]);
    row[col] = value ? sk_strdup(value) : NULL;
}

static void set_own(char **row, int col, char *value)
{
    free(row[col]);
    row[col] = value;
}

static int cmp_row(const void *a, const void *b, void *ctx)
{
    const struct or_table *t = ctx;
    char *const *x = *(char **const *)a, *const *y = *(char **const *)b;
    for (size_t i = 0; i < t->n_cols; i++) {
        int c = strcmp(x[i] ? x[i] : "", y[i] ? y[i] : "");
        if (c)
            return c;
    }
    return 0;
}

static void row_free(char **row, size_t n_cols)
{
    for (size_t i = 0; i < n_cols; i++)
        free(row[i]);
    free(row);
}

/*
 * Sorted by the whole row (sourcedId first), one row per sourcedId (the
 * smallest): the same state gives byte-identical files, whatever order the
 * records came in.
 */
static void sort_unique(struct or_table *t)
{
    if (t->n < 2)
        return; /* also: rows is NULL for an empty table, which qsort_r must not get */
    qsort_r(t->rows, t->n, sizeof(char **), cmp_row, t);
    size_t k = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (k && strcmp(t->rows[k - 1][0], t->rows[i][0]) == 0) {
            row_free(t->rows[i], t->n_cols);
            continue;
        }
        t->rows[k++] = t->rows[i];
    }
    t->n = k;
}

void or_bundle_free(struct or_bundle *b)
{
    for (int i = 0; i < OR_N_TABLES; i++) {
        struct or_table *t = &b->t[i];
        for (size_t r = 0; r < t->n; r++)
            row_free(t->rows[r], t->n_cols);
        free(t->rows);
        t->rows = NULL;
        t->n = t->cap = 0;
    }
}

/* ---- the build ----------------------------------------------------------- */

struct build {
    const struct or_view *view;
    const struct or_build_opts *opts;
    const char *component;
    struct or_bundle *out;
    struct hmap users;        /* person id -> (void *)1 once the user has a role */
    struct hmap students;     /* person id -> (void *)1 with a student role */
    struct hmap primary_org;  /* person id -> char * org of the primary role */
    struct hmap agents;       /* person id -> struct strvec * of agent person ids */
    struct hmap role_keys;    /* "user_org_role" -> (void *)1 */
    struct hmap classes;      /* class id -> (void *)1 */
    struct hmap courses;      /* course id -> (void *)1 */
    struct hmap syllabus_org; /* syllabus id -> char * org for the course */
    struct hmap sessions;     /* session id -> (void *)1 */
};

static void dangling(struct build *b, const char *what, const char *from, const char *to)
{
    b->out->stats.dangling++;
    sk_debug(b->component, "dropped reference: %s %s -> %s (not in the bundle)", what,
             from ? from : "?", to ? to : "(none)");
}

/* ---- orgs ---- */

/* SS 12000 OrganisationType (docs/ss12000-notes.md §2.4) -> OneRoster org type. */
static const char *org_type(const char *t)
{
    if (!t)
        return "local";
    if (strcmp(t, "Huvudman") == 0)
        return "district";
    if (strcmp(t, "Skolenhet") == 0)
        return "school";
    if (strcmp(t, "Övrigt") == 0)
        return "department";
    return "local"; /* Förvaltning, Verksamhetsområde, Rektorsområde, Skola, Bolag, Varumärke */
}

static void build_orgs(struct build *b)
{
    struct or_table *t = &b->out->t[OR_ORGS];
    for (size_t i = 0; i < b->view->orgs.n; i++) {
        const struct or_doc *o = &b->view->orgs.v[i];
        const char *type = jstr(o->doc, "organisationType");
        char **row = row_add(t, o->id);
        const char *name = jstr(o->doc, "displayName");
        set(row, O_NAME, name ? name : o->id);
        set(row, O_TYPE, org_type(type));
        const char *ident = jstr(o->doc, "schoolUnitCode");
        set(row, O_IDENT, ident ? ident : jstr(o->doc, "organisationCode"));
        const char *parent = jref(o->doc, "parentOrganisation");
        if (parent && or_coll_find(&b->view->orgs, parent))
            set(row, O_PARENT, parent);
        else if (parent)
            dangling(b, "org parent", o->id, parent);
    }
}

/* The top of o's parent chain among the orgs in the bundle (a district, usually). */
static const char *root_org(const struct build *b, const char *org)
{
    for (int depth = 0; depth < 32; depth++) {
        const struct or_doc *o = or_coll_find(&b->view->orgs, org);
        const char *parent = o ? jref(o->doc, "parentOrganisation") : NULL;
        if (!parent || !or_coll_find(&b->view->orgs, parent))
            return org;
        org = parent;
    }
    return org;
}

/* ---- school years and terms ---- */

#define MAX_YEARS 64
#define DATE_LEN 24 /* "YYYY-MM-DD" and room for what snprintf fears an int may print */

struct year {
    int y;                /* the calendar year the school year ends in */
    char start[DATE_LEN]; /* earliest class day within the year's window */
    char end[DATE_LEN];   /* latest */
};

struct years {
    struct year v[MAX_YEARS];
    size_t n;
};

/* 2026-08-17 -> 2027: a Swedish school year runs August..June; July 1 starts the next. */
static int school_year_of(const char *date)
{
    int y = atoi(date), m = atoi(date + 5);
    return m >= 7 ? y + 1 : y;
}

static struct year *year_get(struct years *ys, int y)
{
    for (size_t i = 0; i < ys->n; i++)
        if (ys->v[i].y == y)
            return &ys->v[i];
    if (ys->n == MAX_YEARS)
        return NULL;
    struct year *x = &ys->v[ys->n++];
    x->y = y;
    x->start[0] = x->end[0] = '\0';
    return x;
}

/* Years a class from start to end (NULL: open) covers; at most 10. */
static void class_years(const char *start, const char *end, int *first, int *last)
{
    *first = school_year_of(start);
    *last = end ? school_year_of(end) : *first;
    if (*last < *first)
        *last = *first;
    if (*last - *first > 9)
        *last = *first + 9;
}

static void years_note(struct years *ys, const char *start, const char *end)
{
    int first, last;
    class_years(start, end, &first, &last);
    for (int y = first; y <= last; y++) {
        struct year *x = year_get(ys, y);
        if (!x)
            return;
        char ws[DATE_LEN], we[DATE_LEN];
        snprintf(ws, sizeof(ws), "%04d-07-01", y - 1);
        snprintf(we, sizeof(we), "%04d-06-30", y);
        const char *s = strcmp(start, ws) > 0 ? start : ws;
        const char *e = end && strcmp(end, we) < 0 ? end : we;
        if (!x->start[0] || strcmp(s, x->start) < 0)
            snprintf(x->start, sizeof(x->start), "%s", s);
        if (!x->end[0] || strcmp(e, x->end) > 0)
            snprintf(x->end, sizeof(x->end), "%s", e);
    }
}

/* The two terms of year y: HT (autumn, ends Dec 31) and VT (spring, from Jan 1). */
static bool term_range(const struct year *x, bool autumn, char start[DATE_LEN], char end[DATE_LEN])
{
    char cut[DATE_LEN];
    if (autumn) {
        snprintf(cut, sizeof(cut), "%04d-12-31", x->y - 1);
        if (strcmp(x->start, cut) > 0)
            return false;
        snprintf(start, DATE_LEN, "%s", x->start);
        snprintf(end, DATE_LEN, "%s", strcmp(x->end, cut) < 0 ? x->end : cut);
    } else {
        snprintf(cut, sizeof(cut), "%04d-01-01", x->y);
        if (strcmp(x->end, cut) < 0)
            return false;
        snprintf(start, DATE_LEN, "%s", strcmp(x->start, cut) > 0 ? x->start : cut);
        snprintf(end, DATE_LEN, "%s", x->end);
    }
    return true;
}

static void build_sessions(struct build *b, const struct years *ys)
{
    struct or_table *t = &b->out->t[OR_SESSIONS];
    for (size_t i = 0; i < ys->n; i++) {
        const struct year *x = &ys->v[i];
        char id[32], title[64], year[8], start[DATE_LEN], end[DATE_LEN];
        snprintf(year, sizeof(year), "%d", x->y);
        snprintf(id, sizeof(id), "sy-%d", x->y);
        snprintf(title, sizeof(title), "Läsår %d/%02d", x->y - 1, x->y % 100);
        char **row = row_add(t, id);
        set(row, S_TITLE, title);
        set(row, S_TYPE, "schoolYear");
        set(row, S_START, x->start);
        set(row, S_END, x->end);
        set(row, S_YEAR, year);
        *hmap_slot(&b->sessions, id, NULL) = (void *)1;
        for (int autumn = 1; autumn >= 0; autumn--) {
            if (!term_range(x, autumn, start, end))
                continue;
            char tid[40];
            snprintf(tid, sizeof(tid), "sy-%d-%s", x->y, autumn ? "ht" : "vt");
            snprintf(title, sizeof(title), "%s %d", autumn ? "HT" : "VT", autumn ? x->y - 1 : x->y);
            row = row_add(t, tid);
            set(row, S_TITLE, title);
            set(row, S_TYPE, "semester");
            set(row, S_START, start);
            set(row, S_END, end);
            set(row, S_PARENT, id);
            set(row, S_YEAR, year);
            *hmap_slot(&b->sessions, tid, NULL) = (void *)1;
        }
    }
}

/* The terms a class from start to end (NULL: open) overlaps, as one cell. */
static char *class_terms(struct build *b, const struct years *ys, const char *start,
                         const char *end)
{
    struct strvec terms = {0};
    int first, last;
    class_years(start, end, &first, &last);
    for (size_t i = 0; i < ys->n; i++) {
        const struct year *x = &ys->v[i];
        if (x->y < first || x->y > last)
            continue;
        for (int autumn = 1; autumn >= 0; autumn--) {
            char ts[DATE_LEN], te[DATE_LEN], tid[40];
            if (!term_range(x, autumn, ts, te))
                continue;
            if (strcmp(start, te) > 0 || (end && strcmp(end, ts) < 0))
                continue;
            snprintf(tid, sizeof(tid), "sy-%d-%s", x->y, autumn ? "ht" : "vt");
            strvec_add_unique(&terms, tid);
        }
    }
    if (terms.n == 0) {
        char sid[32];
        snprintf(sid, sizeof(sid), "sy-%d", first);
        if (hmap_has(&b->sessions, sid))
            strvec_add_unique(&terms, sid);
    }
    char *cell = strvec_join(&terms);
    for (size_t i = 0; i < terms.n; i++)
        free(terms.v[i]);
    free(terms.v);
    return cell;
}

/* ---- classes and courses ---- */

static bool is_klass(const cJSON *group)
{
    const char *t = jstr(group, "groupType");
    return t && strcmp(t, "Klass") == 0;
}

/* A class needs a start date and a school in the bundle; NULL school: skip it. */
static const char *class_school(struct build *b, const char *id, const cJSON *doc, const char *key)
{
    const char *school = jref(doc, key);
    if (!jdate(doc, "startDate")) {
        b->out->stats.skipped_classes++;
        sk_debug(b->component, "class %s skipped: no startDate", id);
        return NULL;
    }
    if (!school || !or_coll_find(&b->view->orgs, school)) {
        b->out->stats.skipped_classes++;
        dangling(b, "class school", id, school);
        return NULL;
    }
    return school;
}

static void course_row(struct build *b, const char *id, const char *title, const char *code,
                       const char *org, const char *subject, const char *subject_code)
{
    if (hmap_has(&b->courses, id))
        return;
    *hmap_slot(&b->courses, id, NULL) = (void *)1;
    char **row = row_add(&b->out->t[OR_COURSES], id);
    set(row, C_TITLE, title ? title : id);
    set(row, C_CODE, code);
    set(row, C_ORG, org);
    /* subjects and subjectCodes are parallel lists: both or neither. */
    if (subject && subject_code) {
        set(row, C_SUBJ, subject);
        set(row, C_SUBJCODES, subject_code);
    }
}

static void note_years(struct build *b, struct years *ys)
{
    for (size_t i = 0; i < b->view->activities.n; i++) {
        const cJSON *a = b->view->activities.v[i].doc;
        if (jdate(a, "startDate"))
            years_note(ys, jdate(a, "startDate"), jdate(a, "endDate"));
    }
    for (size_t i = 0; i < b->view->groups.n; i++) {
        const cJSON *g = b->view->groups.v[i].doc;
        if (is_klass(g) && jdate(g, "startDate"))
            years_note(ys, jdate(g, "startDate"), jdate(g, "endDate"));
    }
}

/* Each Activity is a scheduled class; its course is its Syllabus, or its own. */
static void build_activity_classes(struct build *b, const struct years *ys)
{
    struct or_table *t = &b->out->t[OR_CLASSES];
    for (size_t i = 0; i < b->view->activities.n; i++) {
        const struct or_doc *a = &b->view->activities.v[i];
        const char *school = class_school(b, a->id, a->doc, "organisation");
        if (!school)
            continue;
        const char *title = jstr(a->doc, "displayName");
        const char *syl_id = jref(a->doc, "syllabus");
        const struct or_doc *syl = or_coll_find(&b->view->syllabuses, syl_id);
        char course[64];
        const char *subject = NULL, *subject_code = NULL;
        if (syl) {
            snprintf(course, sizeof(course), "%s", syl->id);
            subject = jstr(syl->doc, "subjectName");
            subject_code = jstr(syl->doc, "subjectCode");
            /* The course's org: the district of the first school using it
             * (activities are visited in id order, so this is stable). */
            bool created;
            void **slot = hmap_slot(&b->syllabus_org, syl->id, &created);
            if (created)
                *slot = sk_strdup(root_org(b, school));
        } else {
            if (syl_id)
                dangling(b, "activity syllabus", a->id, syl_id);
            snprintf(course, sizeof(course), "course-%s", a->id);
            course_row(b, course, title, NULL, school, NULL, NULL);
        }
        char **row = row_add(t, a->id);
        set(row, K_TITLE, title ? title : a->id);
        set(row, K_COURSE, course);
        set(row, K_TYPE, "scheduled");
        set(row, K_SCHOOL, school);
        set_own(row, K_TERMS,
                class_terms(b, ys, jdate(a->doc, "startDate"), jdate(a->doc, "endDate")));
        if (subject && subject_code) {
            set(row, K_SUBJ, subject);
            set(row, K_SUBJCODES, subject_code);
        }
        *hmap_slot(&b->classes, a->id, NULL) = (void *)1;
    }
}

/* Each Klass group is a homeroom class, under one homeroom course per school. */
static void build_homeroom_classes(struct build *b, const struct years *ys)
{
    struct or_table *t = &b->out->t[OR_CLASSES];
    for (size_t i = 0; i < b->view->groups.n; i++) {
        const struct or_doc *g = &b->view->groups.v[i];
        if (!is_klass(g->doc))
            continue;
        const char *school = class_school(b, g->id, g->doc, "organisation");
        if (!school)
            continue;
        char course[64];
        snprintf(course, sizeof(course), "homeroom-%s", school);
        course_row(b, course, "Klass", NULL, school, NULL, NULL);
        const char *title = jstr(g->doc, "displayName");
        char **row = row_add(t, g->id);
        set(row, K_TITLE, title ? title : g->id);
        set(row, K_COURSE, course);
        set(row, K_CODE, title);
        set(row, K_TYPE, "homeroom");
        set(row, K_SCHOOL, school);
        set_own(row, K_TERMS,
                class_terms(b, ys, jdate(g->doc, "startDate"), jdate(g->doc, "endDate")));
        *hmap_slot(&b->classes, g->id, NULL) = (void *)1;
    }
}

/* Courses for the syllabuses some class uses (an unused one has no org to sit in). */
static void build_syllabus_courses(struct build *b)
{
    for (size_t i = 0; i < b->view->syllabuses.n; i++) {
        const struct or_doc *s = &b->view->syllabuses.v[i];
        const char *org = hmap_get(&b->syllabus_org, s->id);
        if (!org)
            continue;
        const char *title = jstr(s->doc, "courseName");
        const char *code = jstr(s->doc, "courseCode");
        course_row(b, s->id, title ? title : jstr(s->doc, "subjectName"),
                   code ? code : jstr(s->doc, "subjectCode"), org, jstr(s->doc, "subjectName"),
                   jstr(s->doc, "subjectCode"));
    }
}

/* ---- roles and users ---- */

/* Adds a role row (one per user, org and role; the user's first is primary). */
static void add_role(struct build *b, const char *user, const char *org, const char *role,
                     const char *begin, const char *end)
{
    char key[160];
    snprintf(key, sizeof(key), "%s_%s_%s", user, org, role);
    bool created;
    hmap_slot(&b->role_keys, key, &created);
    if (!created)
        return;
    char **row = row_add(&b->out->t[OR_ROLES], key);
    bool first;
    void **po = hmap_slot(&b->primary_org, user, &first);
    if (first)
        *po = sk_strdup(org);
    *hmap_slot(&b->users, user, NULL) = (void *)1;
    if (strcmp(role, "student") == 0)
        *hmap_slot(&b->students, user, NULL) = (void *)1;
    set(row, R_USER, user);
    set(row, R_TYPE, first ? "primary" : "secondary");
    set(row, R_ROLE, role);
    set(row, R_BEGIN, begin);
    set(row, R_END, end);
    set(row, R_ORG, org);
}

static bool enrolment_active(const cJSON *e)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "cancelled");
    return !cJSON_IsTrue(c);
}

static void build_student_roles(struct build *b)
{
    for (size_t i = 0; i < b->view->persons.n; i++) {
        const struct or_doc *p = &b->view->persons.v[i];
        const cJSON *e;
        cJSON_ArrayForEach(e, jarr(p->doc, "enrolments"))
        {
            if (!enrolment_active(e))
                continue;
            const char *org = jref(e, "enroledAt");
            if (!org || !or_coll_find(&b->view->orgs, org)) {
                dangling(b, "enrolment org", p->id, org);
                continue;
            }
            add_role(b, p->id, org, "student", jdate(e, "startDate"), jdate(e, "endDate"));
        }
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

static void build_staff_roles(struct build *b)
{
    for (size_t i = 0; i < b->view->duties.n; i++) {
        const struct or_doc *d = &b->view->duties.v[i];
        const char *person = jref(d->doc, "person");
        const char *org = jref(d->doc, "dutyAt");
        if (!person || !or_coll_find(&b->view->persons, person)) {
            dangling(b, "duty person", d->id, person);
            continue;
        }
        if (!org || !or_coll_find(&b->view->orgs, org)) {
            dangling(b, "duty org", d->id, org);
            continue;
        }
        add_role(b, person, org, duty_role(jstr(d->doc, "dutyRole")), jdate(d->doc, "startDate"),
                 jdate(d->doc, "endDate"));
    }
}

static void add_agent(struct build *b, const char *of, const char *agent)
{
    bool created;
    void **slot = hmap_slot(&b->agents, of, &created);
    if (created)
        *slot = sk_calloc(1, sizeof(struct strvec));
    strvec_add_unique(*slot, agent);
}

/* RelationType (docs/ss12000-notes.md §2.4): custodians and trustees are guardians, others relatives. */
static const char *relation_role(const char *rel)
{
    if (!rel || strcmp(rel, "Vårdnadshavare") == 0 || strcmp(rel, "God man") == 0)
        return "guardian";
    return "relative";
}

/* Guardians of the students in the bundle, at their student's primary org. */
static void build_guardian_roles(struct build *b)
{
    for (size_t i = 0; i < b->view->persons.n; i++) {
        const struct or_doc *p = &b->view->persons.v[i];
        /* Students are built first: a student's primary org is a school of hers. */
        const char *org = hmap_get(&b->primary_org, p->id);
        if (!org || !hmap_has(&b->students, p->id))
            continue;
        const cJSON *r;
        cJSON_ArrayForEach(r, jarr(p->doc, "responsibles"))
        {
            const char *g = jref(r, "person");
            if (!g || !or_coll_find(&b->view->persons, g)) {
                dangling(b, "responsible", p->id, g);
                continue;
            }
            add_role(b, g, org, relation_role(jstr(r, "relationType")), NULL, NULL);
            add_agent(b, p->id, g);
            add_agent(b, g, p->id);
        }
    }
}

/* CEDS grade of a student's first active enrolment ("KG", "01".."13"), or NULL. */
static const char *student_grade(const cJSON *person, char buf[4])
{
    const cJSON *e;
    cJSON_ArrayForEach(e, jarr(person, "enrolments"))
    {
        if (!enrolment_active(e))
            continue;
        const char *st = jstr(e, "schoolType");
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
    cJSON_ArrayForEach(e, jarr(p, "emails"))
    {
        if (school_email_type(jstr(e, "type")) && jstr(e, "value"))
            return jstr(e, "value");
    }
    if (protected_identity)
        return NULL;
    cJSON_ArrayForEach(e, jarr(p, "emails"))
    {
        if (jstr(e, "value"))
            return jstr(e, "value");
    }
    return NULL;
}

static const char *person_phone(const cJSON *p, bool mobile)
{
    const cJSON *ph;
    cJSON_ArrayForEach(ph, jarr(p, "phoneNumbers"))
    {
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ph, "mobile")) == mobile &&
            jstr(ph, "value"))
            return jstr(ph, "value");
    }
    return NULL;
}

static void build_users(struct build *b)
{
    struct or_table *t = &b->out->t[OR_USERS];
    for (size_t i = 0; i < b->view->persons.n; i++) {
        const struct or_doc *p = &b->view->persons.v[i];
        if (!hmap_has(&b->users, p->id))
            continue;
        bool prot = is_protected(p->doc);
        char **row = row_add(t, p->id);
        const char *status = jstr(p->doc, "personStatus");
        set(row, U_ENABLED, !status || strcmp(status, "Aktiv") == 0 ? "true" : "false");
        const cJSON *eppns = jarr(p->doc, "eduPersonPrincipalNames");
        const char *username = eppns && cJSON_IsString(eppns->child) && eppns->child->valuestring[0]
                                   ? eppns->child->valuestring
                                   : NULL;
        const char *email = person_email(p->doc, prot);
        set(row, U_USERNAME, username ? username : email ? email : p->id);
        /* Under protected_identities: minimal the names are gone (privacy.h);
         * givenName/familyName are required, so a neutral placeholder. */
        const char *given = jstr(p->doc, "givenName"), *family = jstr(p->doc, "familyName");
        set(row, U_GIVEN, given ? given : "-");
        set(row, U_FAMILY, family ? family : "-");
        set(row, U_MIDDLE, jstr(p->doc, "middleName"));
        set(row, U_EMAIL, email);
        if (b->opts->include_phone && !prot) {
            set(row, U_SMS, person_phone(p->doc, true));
            set(row, U_PHONE, person_phone(p->doc, false));
        }
        struct strvec *agents = hmap_get(&b->agents, p->id);
        if (agents) {
            struct strvec kept = {0};
            for (size_t k = 0; k < agents->n; k++)
                if (hmap_has(&b->users, agents->v[k]))
                    strvec_add_unique(&kept, agents->v[k]);
            set_own(row, U_AGENTS, strvec_join(&kept));
            for (size_t k = 0; k < kept.n; k++)
                free(kept.v[k]);
            free(kept.v);
        }
        char grade[4];
        const char *org = hmap_get(&b->primary_org, p->id);
        if (hmap_has(&b->students, p->id))
            set(row, U_GRADES, student_grade(p->doc, grade));
        set(row, U_PRIMARY_ORG, org);
    }
}

/* ---- enrollments ---- */

static void add_enrollment(struct build *b, const char *cls, const char *school, const char *user,
                           const char *role, const char *primary, const char *begin,
                           const char *end)
{
    char id[160];
    snprintf(id, sizeof(id), "%s_%s_%s", cls, user, role);
    char **row = row_add(&b->out->t[OR_ENROLLMENTS], id);
    set(row, E_CLASS, cls);
    set(row, E_SCHOOL, school);
    set(row, E_USER, user);
    set(row, E_ROLE, role);
    set(row, E_PRIMARY, primary);
    set(row, E_BEGIN, begin);
    set(row, E_END, end);
}

/* Student enrollments for the members of group g in class cls. */
static void enroll_members(struct build *b, const char *cls, const char *school,
                           const struct or_doc *g)
{
    const cJSON *m;
    cJSON_ArrayForEach(m, jarr(g->doc, "groupMemberships"))
    {
        const char *person = jref(m, "person");
        if (!person || !hmap_has(&b->students, person)) {
            dangling(b, "group member (no student in the bundle)", g->id, person);
            continue;
        }
        const char *begin = jdate(m, "startDate"), *end = jdate(m, "endDate");
        add_enrollment(b, cls, school, person, "student", "false",
                       begin ? begin : jdate(g->doc, "startDate"),
                       end ? end : jdate(g->doc, "endDate"));
    }
}

/* The teacher of a duty, if that person is a user in the bundle. */
static const char *duty_teacher(struct build *b, const char *from, const char *duty_id)
{
    const struct or_doc *d = or_coll_find(&b->view->duties, duty_id);
    const char *person = d ? jref(d->doc, "person") : NULL;
    if (!person || !hmap_has(&b->users, person)) {
        dangling(b, "teacher duty", from, duty_id);
        return NULL;
    }
    return person;
}

static void build_enrollments(struct build *b)
{
    for (size_t i = 0; i < b->view->activities.n; i++) {
        const struct or_doc *a = &b->view->activities.v[i];
        if (!hmap_has(&b->classes, a->id))
            continue;
        const char *school = jref(a->doc, "organisation");
        const cJSON *ref;
        cJSON_ArrayForEach(ref, jarr(a->doc, "groups"))
        {
            const struct or_doc *g = or_coll_find(&b->view->groups, jstr(ref, "id"));
            if (!g) {
                dangling(b, "activity group", a->id, jstr(ref, "id"));
                continue;
            }
            enroll_members(b, a->id, school, g);
        }
        bool first = true;
        const cJSON *t;
        cJSON_ArrayForEach(t, jarr(a->doc, "teachers"))
        {
            const char *person = duty_teacher(b, a->id, jref(t, "duty"));
            if (!person)
                continue;
            add_enrollment(b, a->id, school, person, "teacher", first ? "true" : "false",
                           jdate(t, "startDate"), jdate(t, "endDate"));
            first = false;
        }
    }
    for (size_t i = 0; i < b->view->groups.n; i++) {
        const struct or_doc *g = &b->view->groups.v[i];
        if (hmap_has(&b->classes, g->id))
            enroll_members(b, g->id, jref(g->doc, "organisation"), g);
    }
    /* Mentors (Duty.assignmentRole) teach their homeroom class. */
    for (size_t i = 0; i < b->view->duties.n; i++) {
        const struct or_doc *d = &b->view->duties.v[i];
        const cJSON *ar;
        cJSON_ArrayForEach(ar, jarr(d->doc, "assignmentRole"))
        {
            const char *gid = jref(ar, "group");
            const char *type = jstr(ar, "assignmentRoleType");
            if (!gid || !hmap_has(&b->classes, gid) || !type || strcmp(type, "Mentor") != 0)
                continue;
            const char *person = duty_teacher(b, gid, d->id);
            const struct or_doc *g = or_coll_find(&b->view->groups, gid);
            if (person && g)
                add_enrollment(b, gid, jref(g->doc, "organisation"), person, "teacher", "false",
                               jdate(ar, "startDate"), jdate(ar, "endDate"));
        }
    }
}

void or_bundle_build(const struct or_view *view, const struct or_build_opts *opts,
                     const char *component, struct or_bundle *out)
{
    memset(out, 0, sizeof(*out));
    table_init(&out->t[OR_SESSIONS], "academicSessions", sessions_cols, N_OF(sessions_cols));
    table_init(&out->t[OR_ORGS], "orgs", orgs_cols, N_OF(orgs_cols));
    table_init(&out->t[OR_COURSES], "courses", courses_cols, N_OF(courses_cols));
    table_init(&out->t[OR_CLASSES], "classes", classes_cols, N_OF(classes_cols));
    table_init(&out->t[OR_USERS], "users", users_cols, N_OF(users_cols));
    table_init(&out->t[OR_ROLES], "roles", roles_cols, N_OF(roles_cols));
    table_init(&out->t[OR_ENROLLMENTS], "enrollments", enrollments_cols, N_OF(enrollments_cols));
    struct build b = {.view = view, .opts = opts, .component = component, .out = out};
    struct years *ys = sk_calloc(1, sizeof(*ys));
    build_orgs(&b);
    note_years(&b, ys);
    build_sessions(&b, ys);
    build_activity_classes(&b, ys);
    build_homeroom_classes(&b, ys);
    build_syllabus_courses(&b);
    build_student_roles(&b);
    build_staff_roles(&b);
    if (opts->include_guardians)
        build_guardian_roles(&b);
    build_users(&b);
    build_enrollments(&b);
    for (int i = 0; i < OR_N_TABLES; i++)
        sort_unique(&out->t[i]);
    free(ys);
    hmap_free(&b.users, NULL);
    hmap_free(&b.students, NULL);
    hmap_free(&b.primary_org, free);
    hmap_free(&b.agents, strvec_free);
    hmap_free(&b.role_keys, NULL);
    hmap_free(&b.classes, NULL);
    hmap_free(&b.courses, NULL);
    hmap_free(&b.syllabus_org, free);
    hmap_free(&b.sessions, NULL);
}
