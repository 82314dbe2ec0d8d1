/*
 * oneroster_map.h: what the files of the mapping SS 12000 -> OneRoster 1.2
 * share (docs/oneroster-mapping.md):
 *
 *   oneroster_bundle.c       the bundle as data: the tables with their 1.2
 *                            columns, rows and cells, their order; the view
 *   oneroster_map.c          the run of one build (or_bundle_build) and what
 *                            every step uses: id maps, string lists, JSON
 *                            readers, dropped references
 *   oneroster_map_schools.c  orgs, school years and terms, courses, classes
 *   oneroster_map_people.c   roles, users, enrollments
 *
 * Not for use outside these four (oneroster_internal.h is what the sink and
 * the output see). Called from the sink's bundle writer only, one build at a
 * time per struct or_build; nothing here is shared between threads.
 */
#ifndef SK_ONEROSTER_MAP_H
#define SK_ONEROSTER_MAP_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "oneroster_internal.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the columns of each table (OneRoster CSV Binding 1.2) -----------------
 * Indexes into a row; the header names are in oneroster_bundle.c. */

enum { S_ID, S_STATUS, S_DLM, S_TITLE, S_TYPE, S_START, S_END, S_PARENT, S_YEAR };
enum { O_ID, O_STATUS, O_DLM, O_NAME, O_TYPE, O_IDENT, O_PARENT };
enum { C_ID, C_STATUS, C_DLM, C_YEAR, C_TITLE, C_CODE, C_GRADES, C_ORG, C_SUBJ, C_SUBJCODES };
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
enum { R_ID, R_STATUS, R_DLM, R_USER, R_TYPE, R_ROLE, R_BEGIN, R_END, R_ORG, R_PROFILE };
enum { E_ID, E_STATUS, E_DLM, E_CLASS, E_SCHOOL, E_USER, E_ROLE, E_PRIMARY, E_BEGIN, E_END };

/* ---- the bundle as data (oneroster_bundle.c) ------------------------------ */

/* Zeroes out and names every table with its columns. */
void or_bundle_init(struct or_bundle *b);
/* Sorts every table and keeps one row per sourcedId (the same state gives
 * byte-identical files, whatever order the records came in). */
void or_bundle_sort(struct or_bundle *b);
/*
 * A bundle's rows and cells live in its pool (oneroster_bundle.c), freed with
 * the bundle: a cell is never written in place or freed on its own, and the
 * same value in many cells is stored once.
 */
/* A new row of table t of out whose sourcedId is id (copied); its other cells are empty. */
char **or_row_add(struct or_bundle *out, struct or_table *t, const char *id);
/* Cell col of row becomes value (stored in out's pool; NULL: empty). */
void or_set(struct or_bundle *out, char **row, int col, const char *value);
/* The same for a malloc'ed value (or NULL), which is freed. */
void or_set_own(struct or_bundle *out, char **row, int col, char *value);
/* Cell col of a list column (subjects, subjectCodes) becomes the one value
 * given: a comma in it would split it in two, so it is written as a semicolon. */
void or_set_item(struct or_bundle *out, char **row, int col, const char *value);

/* ---- what every step uses (oneroster_map.c) ------------------------------- */

/* Where key is in keys (cap slots, a power of two; open addressing with
 * linear probing, FNV-1a), or the empty slot it would take. The probe of
 * or_hmap and of the bundle's cell pool. */
size_t or_str_slot(const char *const *keys, size_t cap, const char *key);

/* A small string-keyed hash map (keys copied, values opaque). Zero is empty. */
struct or_hmap {
    char **keys;
    void **vals;
    size_t cap, n;
};

/* The value slot of key, added (NULL) if new; *created (if given) says which. */
void **or_hmap_slot(struct or_hmap *m, const char *key, bool *created);
void *or_hmap_get(const struct or_hmap *m, const char *key); /* NULL key: NULL */
bool or_hmap_has(const struct or_hmap *m, const char *key);  /* NULL key: false */

/* A growable list of strings (the value type of several maps). Zero is empty. */
struct or_strvec {
    char **v;
    size_t n, cap;
};

void or_strvec_add_unique(struct or_strvec *s, const char *x); /* x is copied */
void or_strvec_clear(struct or_strvec *s);                     /* empty again */
/* The list as one cell: sorted, comma-separated (the CSV layer quotes it);
 * NULL for an empty list. Sorts s in place. Caller frees. */
char *or_strvec_join(struct or_strvec *s);

/* A string member that shows something (not only spaces and control
 * characters, which the CSV layer writes as spaces: a required cell would be
 * blank), else NULL. */
const char *or_jstr(const cJSON *obj, const char *key);
/* obj.key.id (an ObjectReference), else NULL. */
const char *or_jref(const cJSON *obj, const char *key);
/* An array member, else NULL (cJSON_ArrayForEach takes NULL). */
const cJSON *or_jarr(const cJSON *obj, const char *key);
/* A date "YYYY-MM-DD" as SS 12000 writes it (docs/ss12000-notes.md §2.1), a day that
 * exists, in the years 1000..9998; NULL if not one. */
const char *or_jdate(const cJSON *obj, const char *key);
/* end, unless it lies before start (a range no importer takes): then NULL, an open end. */
const char *or_end_after(const char *start, const char *end);

/* One build: its input, its output and the indexes the steps leave for later steps. */
struct or_build {
    struct or_view *view; /* a step may free what no later step reads */
    const struct or_build_opts *opts;
    const char *component;
    struct or_bundle *out;
    struct or_hmap users;        /* person id -> (void *)1 once the user has a role */
    struct or_hmap students;     /* person id -> (void *)1 with a student role */
    struct or_hmap primary_org;  /* person id -> char * org of the primary role */
    struct or_hmap agents;       /* person id -> struct or_strvec * of agent person ids */
    struct or_hmap role_keys;    /* "user_org_role" -> (void *)1 */
    struct or_hmap classes;      /* class id -> char * its school (schoolSourcedId) */
    struct or_hmap courses;      /* course id -> (void *)1 */
    struct or_hmap syllabus_org; /* syllabus id -> char * org for the course */
    struct or_hmap sessions;     /* session id -> (void *)1 */
};

/* Counts a reference to something not in the bundle, dropped; ids only on the debug line. */
void or_dangling(struct or_build *b, const char *what, const char *from, const char *to);

/* ---- the steps, in the order or_bundle_build runs them -------------------- */

/* Orgs, school years and terms, courses and classes (oneroster_map_schools.c):
 * fills classes, courses, sessions and syllabus_org. */
void or_map_schools(struct or_build *b);
/* Roles, users and enrollments (oneroster_map_people.c); needs the classes. */
void or_map_people(struct or_build *b);

#endif
