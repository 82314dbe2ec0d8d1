/*
 * oneroster_map_schools.c: the school side of the mapping SS 12000 ->
 * OneRoster 1.2 (docs/oneroster-mapping.md): orgs, academic sessions,
 * courses and classes.
 *
 * Owns: which organisation, activity, Klass group and syllabus becomes which
 * row; the org types; the synthetic ids (school years sy-YYYY and their terms
 * sy-YYYY-ht/-vt, course-<activity> for an activity without a syllabus,
 * homeroom-<school>); which classes are skipped, and referential integrity of
 * what these rows name (the reference is dropped and counted otherwise).
 * Must never: read a person (oneroster_map_people.c); log a name (ids only,
 * log.h); depend on anything but the view (the same state gives the same
 * bundle).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "model.h"
#include "oneroster_map.h"
#include "util.h"

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

/*
 * o's parent as orgs.csv names it: one in the view, and not one whose own
 * chain of parents leads back to o (an importer walking up a cycle never
 * ends; every org on a cycle loses its parent, whatever the order). NULL:
 * none.
 */
static const char *org_parent(const struct or_build *b, const struct or_doc *o)
{
    const char *parent = or_jref(o->doc, "parentOrganisation");
    if (!or_coll_find(&b->view->orgs, parent))
        return NULL;
    const char *p = parent;
    for (size_t n = 0; p && n < b->view->orgs.n; n++) {
        if (strcmp(p, o->id) == 0)
            return NULL;
        const struct or_doc *up = or_coll_find(&b->view->orgs, p);
        p = up ? or_jref(up->doc, "parentOrganisation") : NULL;
    }
    return parent;
}

static void build_orgs(struct or_build *b)
{
    struct or_table *t = &b->out->t[OR_ORGS];
    for (size_t i = 0; i < b->view->orgs.n; i++) {
        const struct or_doc *o = &b->view->orgs.v[i];
        const char *type = or_jstr(o->doc, "organisationType");
        char **row = or_row_add(b->out, t, o->id);
        const char *name = or_jstr(o->doc, "displayName");
        or_set(b->out, row, O_NAME, name ? name : o->id);
        or_set(b->out, row, O_TYPE, org_type(type));
        const char *ident = or_jstr(o->doc, "schoolUnitCode");
        or_set(b->out, row, O_IDENT, ident ? ident : or_jstr(o->doc, "organisationCode"));
        const char *parent = org_parent(b, o);
        or_set(b->out, row, O_PARENT, parent);
        if (!parent && or_jref(o->doc, "parentOrganisation"))
            or_dangling(b, "org parent (missing, or a cycle)", o->id,
                        or_jref(o->doc, "parentOrganisation"));
    }
}

/* The top of org's parent chain in orgs.csv (a district, usually). */
static const char *root_org(const struct or_build *b, const char *org)
{
    const struct or_doc *o = or_coll_find(&b->view->orgs, org);
    for (const char *p; o && (p = org_parent(b, o));)
        o = or_coll_find(&b->view->orgs, p);
    return o ? o->id : org;
}

/* org, or the nearest org above it in orgs.csv, that is a school (Skolenhet); NULL if none. */
static const char *school_of(const struct or_build *b, const char *org)
{
    const struct or_doc *o = or_coll_find(&b->view->orgs, org);
    while (o && strcmp(org_type(or_jstr(o->doc, "organisationType")), "school") != 0) {
        const char *p = org_parent(b, o);
        o = p ? or_coll_find(&b->view->orgs, p) : NULL;
    }
    return o ? o->id : NULL;
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

static void build_sessions(struct or_build *b, const struct years *ys)
{
    struct or_table *t = &b->out->t[OR_SESSIONS];
    for (size_t i = 0; i < ys->n; i++) {
        const struct year *x = &ys->v[i];
        char id[32], title[64], year[8], start[DATE_LEN], end[DATE_LEN];
        snprintf(year, sizeof(year), "%d", x->y);
        snprintf(id, sizeof(id), "sy-%d", x->y);
        snprintf(title, sizeof(title), "Läsår %d/%02d", x->y - 1, x->y % 100);
        char **row = or_row_add(b->out, t, id);
        or_set(b->out, row, S_TITLE, title);
        or_set(b->out, row, S_TYPE, "schoolYear");
        or_set(b->out, row, S_START, x->start);
        or_set(b->out, row, S_END, x->end);
        or_set(b->out, row, S_YEAR, year);
        *or_hmap_slot(&b->sessions, id, NULL) = (void *)1;
        for (int autumn = 1; autumn >= 0; autumn--) {
            if (!term_range(x, autumn, start, end))
                continue;
            char tid[40];
            snprintf(tid, sizeof(tid), "sy-%d-%s", x->y, autumn ? "ht" : "vt");
            snprintf(title, sizeof(title), "%s %d", autumn ? "HT" : "VT", autumn ? x->y - 1 : x->y);
            row = or_row_add(b->out, t, tid);
            or_set(b->out, row, S_TITLE, title);
            or_set(b->out, row, S_TYPE, "semester");
            or_set(b->out, row, S_START, start);
            or_set(b->out, row, S_END, end);
            or_set(b->out, row, S_PARENT, id);
            or_set(b->out, row, S_YEAR, year);
            *or_hmap_slot(&b->sessions, tid, NULL) = (void *)1;
        }
    }
}

/* The terms a class from start to end (NULL: open) overlaps, as one cell. */
static char *class_terms(struct or_build *b, const struct years *ys, const char *start,
                         const char *end)
{
    struct or_strvec terms = {0};
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
            or_strvec_add_unique(&terms, tid);
        }
    }
    if (terms.n == 0) {
        char sid[32];
        snprintf(sid, sizeof(sid), "sy-%d", first);
        if (or_hmap_has(&b->sessions, sid))
            or_strvec_add_unique(&terms, sid);
    }
    char *cell = or_strvec_join(&terms);
    or_strvec_clear(&terms);
    return cell;
}

/* ---- classes and courses ---- */

static bool is_klass(const cJSON *group)
{
    const char *t = or_jstr(group, "groupType");
    return t && strcmp(t, "Klass") == 0;
}

/* An activity's or a group's end date, unless it lies before the start (then open). */
static const char *class_end(const cJSON *doc)
{
    return or_end_after(or_jdate(doc, "startDate"), or_jdate(doc, "endDate"));
}

/*
 * A class needs a start date, a school and a term. Its school: its
 * organisation if that is a school (schoolSourcedId must name an org of type
 * school), else the nearest school above it (an activity of a school's
 * department). Its terms (*terms, a cell the caller owns): none only when
 * its school years did not fit in MAX_YEARS. NULL: skip it.
 */
static const char *class_school(struct or_build *b, const char *id, const cJSON *doc,
                                const struct years *ys, char **terms)
{
    const char *org = or_jref(doc, "organisation");
    const char *start = or_jdate(doc, "startDate");
    if (!start) {
        b->out->stats.skipped_classes++;
        sk_debug(b->component, "class %s skipped: no startDate", id);
        return NULL;
    }
    const char *school = school_of(b, org);
    if (!school) {
        b->out->stats.skipped_classes++;
        or_dangling(b, "class school (none, or no school at or above it)", id, org);
        return NULL;
    }
    *terms = class_terms(b, ys, start, class_end(doc));
    if (!*terms) {
        b->out->stats.skipped_classes++;
        sk_debug(b->component, "class %s skipped: more than %d school years", id, MAX_YEARS);
        return NULL;
    }
    return school;
}

static void course_row(struct or_build *b, const char *id, const char *title, const char *code,
                       const char *org, const char *subject, const char *subject_code)
{
    if (or_hmap_has(&b->courses, id))
        return;
    *or_hmap_slot(&b->courses, id, NULL) = (void *)1;
    char **row = or_row_add(b->out, &b->out->t[OR_COURSES], id);
    or_set(b->out, row, C_TITLE, title ? title : id);
    or_set(b->out, row, C_CODE, code);
    or_set(b->out, row, C_ORG, org);
    /* subjects and subjectCodes are parallel lists: both or neither. */
    if (subject && subject_code) {
        or_set_item(b->out, row, C_SUBJ, subject);
        or_set_item(b->out, row, C_SUBJCODES, subject_code);
    }
}

static void note_years(struct or_build *b, struct years *ys)
{
    for (size_t i = 0; i < b->view->activities.n; i++) {
        const cJSON *a = b->view->activities.v[i].doc;
        if (or_jdate(a, "startDate"))
            years_note(ys, or_jdate(a, "startDate"), class_end(a));
    }
    for (size_t i = 0; i < b->view->groups.n; i++) {
        struct sk_json_arena *arena;
        const cJSON *g = or_doc_open(&b->view->groups.v[i], &arena);
        if (is_klass(g) && or_jdate(g, "startDate"))
            years_note(ys, or_jdate(g, "startDate"), class_end(g));
        sk_json_arena_free(arena);
    }
}

/* Each Activity is a scheduled class; its course is its Syllabus, or its own. */
static void build_activity_classes(struct or_build *b, const struct years *ys)
{
    struct or_table *t = &b->out->t[OR_CLASSES];
    for (size_t i = 0; i < b->view->activities.n; i++) {
        const struct or_doc *a = &b->view->activities.v[i];
        char *terms;
        const char *school = class_school(b, a->id, a->doc, ys, &terms);
        if (!school)
            continue;
        const char *title = or_jstr(a->doc, "displayName");
        const char *syl_id = or_jref(a->doc, "syllabus");
        const struct or_doc *syl = or_coll_find(&b->view->syllabuses, syl_id);
        char course[64];
        const char *subject = NULL, *subject_code = NULL;
        if (syl) {
            snprintf(course, sizeof(course), "%s", syl->id);
            subject = or_jstr(syl->doc, "subjectName");
            subject_code = or_jstr(syl->doc, "subjectCode");
            /* The course's org: the district of the first school using it
             * (activities are visited in id order, so this is stable). */
            bool created;
            void **slot = or_hmap_slot(&b->syllabus_org, syl->id, &created);
            if (created)
                *slot = sk_strdup(root_org(b, school));
        } else {
            if (syl_id)
                or_dangling(b, "activity syllabus", a->id, syl_id);
            snprintf(course, sizeof(course), "course-%s", a->id);
            course_row(b, course, title, NULL, school, NULL, NULL);
        }
        char **row = or_row_add(b->out, t, a->id);
        or_set(b->out, row, K_TITLE, title ? title : a->id);
        or_set(b->out, row, K_COURSE, course);
        or_set(b->out, row, K_TYPE, "scheduled");
        or_set(b->out, row, K_SCHOOL, school);
        or_set_own(b->out, row, K_TERMS, terms);
        if (subject && subject_code) {
            or_set_item(b->out, row, K_SUBJ, subject);
            or_set_item(b->out, row, K_SUBJCODES, subject_code);
        }
        *or_hmap_slot(&b->classes, a->id, NULL) = sk_strdup(school);
    }
}

/* A Klass group (its id and tree) is a homeroom class, under one homeroom course per school. */
static void homeroom_class(struct or_build *b, const struct years *ys, const char *id,
                           const cJSON *doc)
{
    if (!is_klass(doc))
        return;
    char *terms;
    const char *school = class_school(b, id, doc, ys, &terms);
    if (!school)
        return;
    char course[64];
    snprintf(course, sizeof(course), "homeroom-%s", school);
    course_row(b, course, "Klass", NULL, school, NULL, NULL);
    const char *title = or_jstr(doc, "displayName");
    char **row = or_row_add(b->out, &b->out->t[OR_CLASSES], id);
    or_set(b->out, row, K_TITLE, title ? title : id);
    or_set(b->out, row, K_COURSE, course);
    or_set(b->out, row, K_CODE, title);
    or_set(b->out, row, K_TYPE, "homeroom");
    or_set(b->out, row, K_SCHOOL, school);
    or_set_own(b->out, row, K_TERMS, terms);
    *or_hmap_slot(&b->classes, id, NULL) = sk_strdup(school);
}

static void build_homeroom_classes(struct or_build *b, const struct years *ys)
{
    for (size_t i = 0; i < b->view->groups.n; i++) {
        const struct or_doc *g = &b->view->groups.v[i];
        struct sk_json_arena *arena;
        homeroom_class(b, ys, g->id, or_doc_open(g, &arena));
        sk_json_arena_free(arena);
    }
}

/* Courses for the syllabuses some class uses (an unused one has no org to sit in). */
static void build_syllabus_courses(struct or_build *b)
{
    for (size_t i = 0; i < b->view->syllabuses.n; i++) {
        const struct or_doc *s = &b->view->syllabuses.v[i];
        const char *org = or_hmap_get(&b->syllabus_org, s->id);
        if (!org)
            continue;
        const char *title = or_jstr(s->doc, "courseName");
        const char *code = or_jstr(s->doc, "courseCode");
        course_row(b, s->id, title ? title : or_jstr(s->doc, "subjectName"),
                   code ? code : or_jstr(s->doc, "subjectCode"), org,
                   or_jstr(s->doc, "subjectName"), or_jstr(s->doc, "subjectCode"));
    }
}

void or_map_schools(struct or_build *b)
{
    struct years *ys = sk_calloc(1, sizeof(*ys));
    build_orgs(b);
    note_years(b, ys);
    build_sessions(b, ys);
    build_activity_classes(b, ys);
    build_homeroom_classes(b, ys);
    build_syllabus_courses(b);
    free(ys);
}
