/*
 * oneroster_map.c: the mapping from SS 12000 entities to OneRoster 1.2 bulk
 * rows (docs/oneroster-mapping.md has the table and the reasons): one build's
 * run, and what every one of its steps uses.
 *
 * Owns: the order of the two sides (the school side first: the people side
 * enrolls into its classes; each side orders its own steps), the build's
 * indexes and their lifetime, reading SS 12000 JSON (a member that is not
 * the expected type is absent), and the count of dropped references.
 * Must never: log a name (ids only, log.h); depend on anything but the view
 * (the same state gives the same bundle). What becomes which row is in
 * oneroster_map_schools.c and oneroster_map_people.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "oneroster_map.h"
#include "util.h"

/* ---- a small string-keyed hash map (keys copied, values opaque) ------------ */

static size_t hash_str(const char *s)
{
    size_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

size_t or_str_slot(const char *const *keys, size_t cap, const char *key)
{
    size_t i = hash_str(key) & (cap - 1);
    while (keys[i] && strcmp(keys[i], key) != 0)
        i = (i + 1) & (cap - 1);
    return i;
}

static size_t hmap_index(const struct or_hmap *m, const char *key)
{
    return or_str_slot((const char *const *)m->keys, m->cap, key);
}

void **or_hmap_slot(struct or_hmap *m, const char *key, bool *created)
{
    if ((m->n + 1) * 2 > m->cap) {
        struct or_hmap bigger = {.cap = m->cap ? m->cap * 2 : 64};
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

void *or_hmap_get(const struct or_hmap *m, const char *key)
{
    if (!m->cap || !key)
        return NULL;
    size_t i = hmap_index(m, key);
    return m->keys[i] ? m->vals[i] : NULL;
}

bool or_hmap_has(const struct or_hmap *m, const char *key)
{
    return m->cap && key && m->keys[hmap_index(m, key)] != NULL;
}

static void hmap_free(struct or_hmap *m, void (*free_val)(void *))
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

/* ---- lists of strings ------------------------------------------------------ */

void or_strvec_add_unique(struct or_strvec *s, const char *x)
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

void or_strvec_clear(struct or_strvec *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof(*s));
}

static void strvec_free(void *p)
{
    if (p)
        or_strvec_clear(p);
    free(p);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The list as one cell: sorted, comma-separated (the CSV layer quotes it). */
char *or_strvec_join(struct or_strvec *s)
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

/* ---- JSON readers --------------------------------------------------------- */

/* Only spaces and control characters: what a cell shows of it is blank (oneroster_out.c). */
static bool blank(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s > ' ' && *s != 0x7f)
            return false;
    return true;
}

const char *or_jstr(const cJSON *obj, const char *key)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(x) && !blank(x->valuestring) ? x->valuestring : NULL;
}

/* obj.key.id (an ObjectReference). */
const char *or_jref(const cJSON *obj, const char *key)
{
    return or_jstr(cJSON_GetObjectItemCaseSensitive(obj, key), "id");
}

const cJSON *or_jarr(const cJSON *obj, const char *key)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsArray(x) ? x : NULL;
}

/* A date "YYYY-MM-DD" as SS 12000 writes it (docs/ss12000-notes.md §2.1), a day that
 * exists, in the years 1000..9998 (its school year has four digits too); NULL if not one. */
const char *or_jdate(const cJSON *obj, const char *key)
{
    const char *s = or_jstr(obj, key);
    if (!s || strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return NULL;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
            return NULL;
    int y = atoi(s), m = atoi(s + 5), d = atoi(s + 8);
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1000 || y > 9998 || m < 1 || m > 12 || d < 1 || d > days[m - 1] + (m == 2 && leap))
        return NULL;
    return s;
}

const char *or_end_after(const char *start, const char *end)
{
    return start && end && strcmp(end, start) < 0 ? NULL : end;
}

/* ---- the build ----------------------------------------------------------- */

void or_dangling(struct or_build *b, const char *what, const char *from, const char *to)
{
    b->out->stats.dangling++;
    sk_debug(b->component, "dropped reference: %s %s -> %s (not in the bundle)", what,
             from ? from : "?", to ? to : "(none)");
}

void or_bundle_build(struct or_view *view, const struct or_build_opts *opts, const char *component,
                     struct or_bundle *out)
{
    or_bundle_init(out);
    struct or_build b = {.view = view, .opts = opts, .component = component, .out = out};
    or_map_schools(&b);
    or_map_people(&b);
    or_bundle_sort(out);
    hmap_free(&b.users, NULL);
    hmap_free(&b.students, NULL);
    hmap_free(&b.primary_org, free);
    hmap_free(&b.agents, strvec_free);
    hmap_free(&b.role_keys, NULL);
    hmap_free(&b.classes, free);
    hmap_free(&b.courses, NULL);
    hmap_free(&b.syllabus_org, free);
    hmap_free(&b.sessions, NULL);
}
