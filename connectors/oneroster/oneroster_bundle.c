/*
 * oneroster_bundle.c: the bundle as data. The seven tables with their exact
 * OneRoster 1.2 headers (CSV Binding 1.2, docs/oneroster-mapping.md), rows of
 * cells, the order the rows are written in; and the view the mapping reads.
 *
 * Owns: the column lists (names and order), the canonical row order (one row
 * per sourcedId), who frees a cell, a row, a table, a view; the view's ids in
 * lower case (or_doc_lower_ids).
 * Must never: decide what a row says (oneroster_map_*.c), write a file
 * (oneroster_out.c), or let the order of the rows depend on the order the
 * records came in. Called by the mapping (oneroster_map.h) and the sink
 * (or_coll_find, or_view_free, or_bundle_free; oneroster_internal.h).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "oneroster_map.h"
#include "util.h"

/* ---- column lists (OneRoster CSV Binding 1.2, docs/oneroster-mapping.md) ----
 * Indexed by the column enums of oneroster_map.h, so a name cannot slip to
 * another column. */

static const char *const sessions_cols[] = {[S_ID] = "sourcedId",
                                            [S_STATUS] = "status",
                                            [S_DLM] = "dateLastModified",
                                            [S_TITLE] = "title",
                                            [S_TYPE] = "type",
                                            [S_START] = "startDate",
                                            [S_END] = "endDate",
                                            [S_PARENT] = "parentSourcedId",
                                            [S_YEAR] = "schoolYear"};

static const char *const orgs_cols[] = {[O_ID] = "sourcedId",
                                        [O_STATUS] = "status",
                                        [O_DLM] = "dateLastModified",
                                        [O_NAME] = "name",
                                        [O_TYPE] = "type",
                                        [O_IDENT] = "identifier",
                                        [O_PARENT] = "parentSourcedId"};

static const char *const courses_cols[] = {
    [C_ID] = "sourcedId",         [C_STATUS] = "status",
    [C_DLM] = "dateLastModified", [C_YEAR] = "schoolYearSourcedId",
    [C_TITLE] = "title",          [C_CODE] = "courseCode",
    [C_GRADES] = "grades",        [C_ORG] = "orgSourcedId",
    [C_SUBJ] = "subjects",        [C_SUBJCODES] = "subjectCodes"};

static const char *const classes_cols[] = {
    [K_ID] = "sourcedId",           [K_STATUS] = "status",
    [K_DLM] = "dateLastModified",   [K_TITLE] = "title",
    [K_GRADES] = "grades",          [K_COURSE] = "courseSourcedId",
    [K_CODE] = "classCode",         [K_TYPE] = "classType",
    [K_LOCATION] = "location",      [K_SCHOOL] = "schoolSourcedId",
    [K_TERMS] = "termSourcedIds",   [K_SUBJ] = "subjects",
    [K_SUBJCODES] = "subjectCodes", [K_PERIODS] = "periods"};

/* 1.2 (not 1.2.1): resourceSourcedIds is still in users.csv (hanachin/meibo
 * lib/meibo/oneroster/v1_2/user.rb; 1.2.1 moves it to userResources.csv). */
static const char *const users_cols[] = {[U_ID] = "sourcedId",
                                         [U_STATUS] = "status",
                                         [U_DLM] = "dateLastModified",
                                         [U_ENABLED] = "enabledUser",
                                         [U_USERNAME] = "username",
                                         [U_USERIDS] = "userIds",
                                         [U_GIVEN] = "givenName",
                                         [U_FAMILY] = "familyName",
                                         [U_MIDDLE] = "middleName",
                                         [U_IDENT] = "identifier",
                                         [U_EMAIL] = "email",
                                         [U_SMS] = "sms",
                                         [U_PHONE] = "phone",
                                         [U_AGENTS] = "agentSourcedIds",
                                         [U_GRADES] = "grades",
                                         [U_PASSWORD] = "password",
                                         [U_UMI] = "userMasterIdentifier",
                                         [U_RESOURCES] = "resourceSourcedIds",
                                         [U_PGIVEN] = "preferredGivenName",
                                         [U_PMIDDLE] = "preferredMiddleName",
                                         [U_PFAMILY] = "preferredFamilyName",
                                         [U_PRIMARY_ORG] = "primaryOrgSourcedId",
                                         [U_PRONOUNS] = "pronouns"};

static const char *const roles_cols[] = {
    [R_ID] = "sourcedId",         [R_STATUS] = "status",
    [R_DLM] = "dateLastModified", [R_USER] = "userSourcedId",
    [R_TYPE] = "roleType",        [R_ROLE] = "role",
    [R_BEGIN] = "beginDate",      [R_END] = "endDate",
    [R_ORG] = "orgSourcedId",     [R_PROFILE] = "userProfileSourcedId"};

static const char *const enrollments_cols[] = {[E_ID] = "sourcedId",
                                               [E_STATUS] = "status",
                                               [E_DLM] = "dateLastModified",
                                               [E_CLASS] = "classSourcedId",
                                               [E_SCHOOL] = "schoolSourcedId",
                                               [E_USER] = "userSourcedId",
                                               [E_ROLE] = "role",
                                               [E_PRIMARY] = "primary",
                                               [E_BEGIN] = "beginDate",
                                               [E_END] = "endDate"};

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

const cJSON *or_doc_open(const struct or_doc *d, struct sk_json_arena **arena)
{
    *arena = NULL;
    if (!d->text)
        return d->doc;
    /* The arena parser: one allocation for a document's nodes, not one per node. */
    const cJSON *tree = sk_json_arena_parse(d->text, strlen(d->text), arena);
    if (!tree) {
        /* The text was printed from a tree (load_coll): only memory can fail here. */
        fprintf(stderr, "skolsync: out of memory parsing a stored document\n");
        abort();
    }
    return tree;
}

void or_doc_lower_ids(cJSON *doc)
{
    cJSON *x;
    cJSON_ArrayForEach(x, doc)
    {
        char id[37];
        if (cJSON_IsString(x) && x->string && strcmp(x->string, "id") == 0 &&
            sk_uuid_normalize(x->valuestring, id) == 0)
            memcpy(x->valuestring, id, sizeof(id)); /* the same length */
        or_doc_lower_ids(x);
    }
}

void or_coll_free(struct or_coll *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].id);
        cJSON_Delete(c->v[i].doc);
        free(c->v[i].text);
    }
    free(c->v);
    memset(c, 0, sizeof(*c));
}

void or_view_free(struct or_view *v)
{
    or_coll_free(&v->orgs);
    or_coll_free(&v->persons);
    or_coll_free(&v->groups);
    or_coll_free(&v->activities);
    or_coll_free(&v->duties);
    or_coll_free(&v->syllabuses);
}

/* ---- the pool: every row and cell of a bundle --------------------------------
 *
 * Allocated from blocks and freed with the bundle. A cell's value is stored
 * once however many cells hold it: at 1M entities the 258 000 enrollments
 * name 11 000 classes, 73 schools, two roles and a few dates, and a malloc'ed
 * copy per cell (and a row array of its own) was ~430 bytes an enrollment.
 * A sourcedId (column 0) is unique within its table and is copied without
 * the lookup. The lookup table goes once the bundle is sorted (or_bundle_sort). */

struct pool_block {
    struct pool_block *next;
    size_t size, used;
    max_align_t data[];
};

struct or_pool {
    struct pool_block *blocks; /* the newest first */
    const char **slots;        /* the stored values, open addressing, at most 3/4 full */
    size_t cap, n;
};

#define POOL_BLOCK ((size_t)256 * 1024)

static void *pool_alloc(struct or_pool *p, size_t n, size_t align)
{
    struct pool_block *b = p->blocks;
    size_t at = b ? (b->used + align - 1) & ~(align - 1) : 0;
    if (b && at + n <= b->size) {
        b->used = at + n;
        return (char *)b->data + at;
    }
    if (b && n > POOL_BLOCK / 4) {
        /* a large value gets a block of its own behind the current one,
         * which keeps its free rest for the small values that follow */
        struct pool_block *own = sk_malloc(sizeof(*own) + n);
        own->size = own->used = n;
        own->next = b->next;
        b->next = own;
        return own->data;
    }
    size_t size = n > POOL_BLOCK ? n : POOL_BLOCK;
    b = sk_malloc(sizeof(*b) + size);
    b->size = size;
    b->used = n;
    b->next = p->blocks;
    p->blocks = b;
    return b->data;
}

static char *pool_copy(struct or_pool *p, const char *s)
{
    size_t len = strlen(s);
    char *c = pool_alloc(p, len + 1, 1);
    memcpy(c, s, len + 1);
    return c;
}

static size_t slot_of(const struct or_pool *p, const char *s)
{
    return or_str_slot(p->slots, p->cap, s);
}

/* The pool's one copy of s. */
static const char *pool_value(struct or_pool *p, const char *s)
{
    if ((p->n + 1) * 4 > p->cap * 3) {
        struct or_pool old = *p;
        p->cap = old.cap ? old.cap * 2 : 1024;
        p->slots = sk_calloc(p->cap, sizeof(*p->slots));
        for (size_t i = 0; i < old.cap; i++)
            if (old.slots[i])
                p->slots[slot_of(p, old.slots[i])] = old.slots[i];
        free(old.slots);
    }
    size_t i = slot_of(p, s);
    if (!p->slots[i]) {
        p->slots[i] = pool_copy(p, s);
        p->n++;
    }
    return p->slots[i];
}

static void pool_free(struct or_pool *p)
{
    if (!p)
        return;
    while (p->blocks) {
        struct pool_block *next = p->blocks->next;
        free(p->blocks);
        p->blocks = next;
    }
    free(p->slots);
    free(p);
}

/* ---- tables -------------------------------------------------------------- */

static void table_init(struct or_table *t, const char *name, const char *const *cols, size_t n)
{
    memset(t, 0, sizeof(*t));
    t->name = name;
    t->cols = cols;
    t->n_cols = n;
}

void or_bundle_init(struct or_bundle *b)
{
    memset(b, 0, sizeof(*b));
    table_init(&b->t[OR_SESSIONS], "academicSessions", sessions_cols, N_OF(sessions_cols));
    table_init(&b->t[OR_ORGS], "orgs", orgs_cols, N_OF(orgs_cols));
    table_init(&b->t[OR_COURSES], "courses", courses_cols, N_OF(courses_cols));
    table_init(&b->t[OR_CLASSES], "classes", classes_cols, N_OF(classes_cols));
    table_init(&b->t[OR_USERS], "users", users_cols, N_OF(users_cols));
    table_init(&b->t[OR_ROLES], "roles", roles_cols, N_OF(roles_cols));
    table_init(&b->t[OR_ENROLLMENTS], "enrollments", enrollments_cols, N_OF(enrollments_cols));
    b->pool = sk_calloc(1, sizeof(*b->pool));
}

char **or_row_add(struct or_bundle *out, struct or_table *t, const char *id)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->rows = sk_realloc(t->rows, t->cap * sizeof(char **));
    }
    char **row = pool_alloc(out->pool, t->n_cols * sizeof(char *), _Alignof(char *));
    memset(row, 0, t->n_cols * sizeof(char *));
    row[0] = pool_copy(out->pool, id);
    t->rows[t->n++] = row;
    return row;
}

void or_set(struct or_bundle *out, char **row, int col, const char *value)
{
    row[col] = value ? (char *)pool_value(out->pool, value) : NULL;
}

void or_set_own(struct or_bundle *out, char **row, int col, char *value)
{
    or_set(out, row, col, value);
    free(value);
}

void or_set_item(struct or_bundle *out, char **row, int col, const char *value)
{
    if (!value || !strchr(value, ',')) {
        or_set(out, row, col, value);
        return;
    }
    char *item = sk_strdup(value);
    for (char *p = item; (p = strchr(p, ',')); p++)
        *p = ';';
    or_set_own(out, row, col, item);
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
        if (k && strcmp(t->rows[k - 1][0], t->rows[i][0]) == 0)
            continue; /* its memory is the pool's */
        t->rows[k++] = t->rows[i];
    }
    t->n = k;
}

void or_bundle_sort(struct or_bundle *b)
{
    for (int i = 0; i < OR_N_TABLES; i++)
        sort_unique(&b->t[i]);
    /* No cell is set after this: the lookup table goes before the files are written. */
    free(b->pool->slots);
    b->pool->slots = NULL;
    b->pool->cap = b->pool->n = 0;
}

void or_bundle_free(struct or_bundle *b)
{
    for (int i = 0; i < OR_N_TABLES; i++) {
        struct or_table *t = &b->t[i];
        free(t->rows);
        t->rows = NULL;
        t->n = t->cap = 0;
    }
    pool_free(b->pool);
    b->pool = NULL;
}
