/*
 * test_privacy.c: the personal-data policy (proto/privacy.h) end to end, on
 * the real broker, across all four sink types at once: one `run --once` of a
 * jsonl-source and a sqlite-sink, a postgres-sink (own schema), a scim-sink
 * (SK_TEST_SCIM) and a oneroster-csv-sink, every sink with its type's
 * DEFAULT policy and the log at debug level. Then:
 *
 *  1. no protected person's address, phone number or civic number reaches the
 *     SCIM server or any OneRoster file, and no civic number of the dataset
 *     at all (both drop civicNo by default); neither do the two sinks' local
 *     state databases hold one;
 *  2. the database sinks keep everything (default "allow"): the sqlite
 *     database equals the dataset, protected persons' docs included;
 *  3. no civic number of the dataset appears in the daemon's output;
 *  4. a per-sink override works: a second run with `protected_identities:
 *     skip` and `drop_fields: [addresses]` on the sqlite sink deletes the
 *     protected persons from it (tombstones, also for a person who became
 *     protected) and leaves no person doc with addresses.
 *
 * The generator gives protected persons no address or phone (as a real
 * register would), which would make check 1 vacuous; the test therefore
 * gives each of them a distinctive address and phone number, and also marks
 * a guardian (with a real household address) protected.
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include "sk_test.h"
#include "util.h"

/* ---- the dataset's personal data ------------------------------------------ */

#define MAX_NEEDLES 8

struct person {
    char id[37];
    bool protected_;
    char civic[32];
    char *needles[MAX_NEEDLES]; /* street addresses and phone numbers */
    size_t n_needles;
    char given[128];
};

struct dataset {
    struct person *p;
    size_t n;
    char (*civics)[32]; /* every civic number of every version of every person */
    size_t n_civics;
};

static void dataset_free(struct dataset *d)
{
    for (size_t i = 0; i < d->n; i++)
        for (size_t k = 0; k < d->p[i].n_needles; k++)
            free(d->p[i].needles[k]);
    free(d->p);
    free(d->civics);
    memset(d, 0, sizeof(*d));
}

static bool is_protected_marking(const cJSON *doc)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(doc, "securityMarking");
    return cJSON_IsString(m) && (strcmp(m->valuestring, "Skyddad folkbokföring") == 0 ||
                                 strcmp(m->valuestring, "Sekretessmarkering") == 0);
}

/* Reads persons.jsonl; the last line of an id wins (appended updates). */
static struct dataset load_persons(const char *data)
{
    struct dataset d = {0};
    char *path = skt_fmt("%s/persons.jsonl", data);
    size_t len;
    char *text = sk_read_file(path, &len);
    cr_assert_not_null(text, "cannot read %s", path);
    size_t cap = 0, ccap = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        cJSON *doc = cJSON_Parse(line);
        if (!doc)
            continue;
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(doc, "id");
        cr_assert(cJSON_IsString(id));
        struct person *p = NULL;
        for (size_t i = 0; i < d.n && !p; i++)
            if (strcmp(d.p[i].id, id->valuestring) == 0)
                p = &d.p[i];
        if (!p) {
            if (d.n == cap) {
                cap = cap ? cap * 2 : 256;
                d.p = realloc(d.p, cap * sizeof(*d.p));
            }
            p = &d.p[d.n++];
            memset(p, 0, sizeof(*p));
            snprintf(p->id, sizeof(p->id), "%s", id->valuestring);
        }
        for (size_t k = 0; k < p->n_needles; k++)
            free(p->needles[k]);
        p->n_needles = 0;
        p->civic[0] = p->given[0] = '\0';
        p->protected_ = is_protected_marking(doc);
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(doc, "givenName");
        if (cJSON_IsString(g))
            snprintf(p->given, sizeof(p->given), "%s", g->valuestring);
        const cJSON *civ = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(doc, "civicNo"), "value");
        if (cJSON_IsString(civ)) {
            snprintf(p->civic, sizeof(p->civic), "%s", civ->valuestring);
            if (d.n_civics == ccap) {
                ccap = ccap ? ccap * 2 : 256;
                d.civics = realloc(d.civics, ccap * sizeof(*d.civics));
            }
            snprintf(d.civics[d.n_civics++], 32, "%s", civ->valuestring);
        }
        const cJSON *x;
        cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(doc, "addresses"))
        {
            const cJSON *s = cJSON_GetObjectItemCaseSensitive(x, "streetAddress");
            if (cJSON_IsString(s) && p->n_needles < MAX_NEEDLES)
                p->needles[p->n_needles++] = strdup(s->valuestring);
        }
        cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(doc, "phoneNumbers"))
        {
            const cJSON *s = cJSON_GetObjectItemCaseSensitive(x, "value");
            if (cJSON_IsString(s) && p->n_needles < MAX_NEEDLES)
                p->needles[p->n_needles++] = strdup(s->valuestring);
        }
        cJSON_Delete(doc);
    }
    free(text);
    free(path);
    /*
     * The generator draws phone numbers from a small fictional range and
     * guardians share a household address: a protected person's value that
     * an unprotected person also has is legitimately elsewhere, so it is not
     * searched for (the values the test gave protected persons are unique).
     */
    for (size_t i = 0; i < d.n; i++) {
        struct person *p = &d.p[i];
        if (!p->protected_)
            continue;
        for (size_t k = 0; k < p->n_needles;) {
            bool shared = false;
            for (size_t j = 0; j < d.n && !shared; j++)
                for (size_t m = 0; !d.p[j].protected_ && m < d.p[j].n_needles && !shared; m++)
                    shared = strcmp(d.p[j].needles[m], p->needles[k]) == 0;
            if (shared) {
                free(p->needles[k]);
                p->needles[k] = p->needles[--p->n_needles];
            } else {
                k++;
            }
        }
    }
    return d;
}

static size_t n_protected(const struct dataset *d)
{
    size_t n = 0;
    for (size_t i = 0; i < d->n; i++)
        n += d->p[i].protected_;
    return n;
}

/*
 * Where in text a civic number shows up: as stored (YYYYMMDDNNNN), without
 * the century (YYMMDDNNNN, which the 12-digit form contains) or as
 * YYMMDD-NNNN. NULL if nowhere.
 */
static const char *find_civic(const char *text, const char *civic)
{
    size_t n = strlen(civic);
    if (n < 10)
        return strstr(text, civic);
    const char *short10 = civic + n - 10;
    const char *hit = strstr(text, short10);
    if (hit)
        return hit;
    char dashed[16];
    snprintf(dashed, sizeof(dashed), "%.6s-%.4s", short10, short10 + 6);
    return strstr(text, dashed);
}

/* A copy of len bytes with NULs (binary files: SQLite) turned into newlines. */
static char *text_copy(const char *text, size_t len)
{
    char *c = malloc(len + 1);
    cr_assert_not_null(c);
    for (size_t i = 0; i < len; i++)
        c[i] = text[i] ? text[i] : '\n';
    c[len] = '\0';
    return c;
}

/* Fails the test if text holds any civic number of the dataset. */
static void assert_no_civic(const struct dataset *d, const char *text, size_t len,
                            const char *where)
{
    char *s = text_copy(text, len);
    for (size_t i = 0; i < d->n_civics; i++) {
        const char *hit = find_civic(s, d->civics[i]);
        cr_assert_null(hit, "civic number %s found in %s: ...%.120s...", d->civics[i], where,
                       hit > s + 40 ? hit - 40 : s);
    }
    free(s);
}

/* Fails the test if text holds a protected person's civic number, address or phone. */
static void assert_no_protected_data(const struct dataset *d, const char *text, size_t len,
                                     const char *where)
{
    char *s = text_copy(text, len);
    for (size_t i = 0; i < d->n; i++) {
        const struct person *p = &d->p[i];
        if (!p->protected_)
            continue;
        if (p->civic[0])
            cr_assert_null(find_civic(s, p->civic),
                           "protected person %s: civic number %s found in %s", p->id, p->civic,
                           where);
        for (size_t k = 0; k < p->n_needles; k++) {
            const char *hit = strstr(s, p->needles[k]);
            cr_assert_null(hit, "protected person %s: \"%s\" found in %s: ...%.120s...", p->id,
                           p->needles[k], where, hit > s + 40 ? hit - 40 : s);
        }
    }
    free(s);
}

/* ---- HTTP (libcurl) ------------------------------------------------------- */

static const char *scim_url(void)
{
    const char *u = getenv("SK_TEST_SCIM");
    cr_assert(u && *u, "SK_TEST_SCIM is not set: run under scripts/with-testenv.sh "
                       "(scripts/scim.sh starts the SCIM server)");
    return u;
}

/* The User whose externalId is id, or NULL (caller deletes). */
static cJSON *scim_user_by_external_id(const char *id)
{
    char *url = skt_fmt("%s/Users?filter=externalId%%20eq%%20%%22%s%%22", scim_url(), id);
    char *body = NULL;
    long st = skt_http("GET", url, NULL, 20, &body);
    cr_assert_eq(st, 200, "GET %s: %ld %s", url, st, body);
    cJSON *list = cJSON_Parse(body);
    cr_assert_not_null(list, "%s", body);
    const cJSON *total = cJSON_GetObjectItemCaseSensitive(list, "totalResults");
    cr_assert(cJSON_IsNumber(total), "%s", body);
    cr_assert_leq(total->valueint, 1, "%d Users with externalId %s", total->valueint, id);
    cJSON *user = NULL;
    if (total->valueint == 1)
        user = cJSON_DetachItemFromArray(cJSON_GetObjectItemCaseSensitive(list, "Resources"), 0);
    cJSON_Delete(list);
    free(body);
    free(url);
    return user;
}

/* Every User on the server (all pages), as one JSON array text. */
static char *scim_all_users(size_t *count)
{
    cJSON *all = cJSON_CreateArray();
    int start = 1;
    for (int page = 0; page < 1000; page++) {
        char *url = skt_fmt("%s/Users?startIndex=%d&count=200", scim_url(), start);
        char *body = NULL;
        long st = skt_http("GET", url, NULL, 20, &body);
        cr_assert_eq(st, 200, "GET %s: %ld %s", url, st, body);
        cJSON *list = cJSON_Parse(body);
        cr_assert_not_null(list, "%s", body);
        cJSON *res = cJSON_GetObjectItemCaseSensitive(list, "Resources");
        int got = cJSON_GetArraySize(res);
        int total = cJSON_GetObjectItemCaseSensitive(list, "totalResults")->valueint;
        while (res && res->child)
            cJSON_AddItemToArray(all, cJSON_DetachItemViaPointer(res, res->child));
        cJSON_Delete(list);
        free(body);
        free(url);
        start += got;
        if (got == 0 || start > total)
            break;
    }
    *count = (size_t)cJSON_GetArraySize(all);
    char *text = cJSON_PrintUnformatted(all);
    cJSON_Delete(all);
    return text;
}

/* ---- files ------------------------------------------------------------------ */

/* Calls fn for every regular file below dir (symlinks are not followed). */
static void walk_files(const char *dir, void (*fn)(void *ctx, const char *path), void *ctx)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "opendir %s", dir);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *p = skt_fmt("%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0) {
            if (S_ISDIR(st.st_mode))
                walk_files(p, fn, ctx);
            else if (S_ISREG(st.st_mode))
                fn(ctx, p);
        }
        free(p);
    }
    closedir(d);
}

struct scan {
    const struct dataset *d;
    size_t files, csv_files;
    bool civic_any; /* every civic number of the dataset, not only protected ones */
};

static void scan_file(void *ctx, const char *path)
{
    struct scan *s = ctx;
    size_t len = 0;
    char *text = sk_read_file(path, &len);
    cr_assert_not_null(text, "read %s", path);
    s->files++;
    size_t pl = strlen(path);
    if (pl > 4 && strcmp(path + pl - 4, ".csv") == 0)
        s->csv_files++;
    assert_no_protected_data(s->d, text, len, path);
    if (s->civic_any)
        assert_no_civic(s->d, text, len, path);
    free(text);
}

/* ---- setup ---------------------------------------------------------------- */

struct setup {
    char *dir, *data, *db, *cfg, *prefix, *suffix, *schema, *scim_state, *or_state, *or_out;
};

/* Gives the protected persons (and one guardian, made protected) addresses and phones. */
static const char augment_py[] =
    "import json,sys\n"
    "p=sys.argv[1]+'/persons.jsonl'\n"
    "ps=[json.loads(l) for l in open(p,encoding='utf-8') if l.strip()]\n"
    "prot=('Skyddad folkbokföring','Sekretessmarkering')\n"
    "def staff(x): return any(e.get('type')=='Skola personal' for e in x.get('emails',[]))\n"
    "g=[x for x in ps if x.get('securityMarking') not in prot and x.get('addresses')\n"
    "   and x.get('phoneNumbers') and not x.get('enrolments') and not staff(x)][0]\n"
    "g['securityMarking']='Skyddad folkbokföring'\n"
    "n=0\n"
    "for x in ps:\n"
    "  if x.get('securityMarking') in prot:\n"
    "    n+=1\n"
    "    x.setdefault('addresses',[]).append({'type':'Folkbokföring',\n"
    "      'streetAddress':'Skyddsgränd %d'%n,'postalCode':'199 %02d'%n,'locality':'Hemliga',\n"
    "      'country':'Sverige'})\n"
    "    x.setdefault('phoneNumbers',[]).append({'value':'070-999 %02d %02d'%(n,n),\n"
    "      'type':'Hem','mobile':True})\n"
    "    if 'civicNo' not in x: x['civicNo']={'value':'19800101%04d'%(9000+n),'nationality':'SE'}\n"
    "with open(p,'w',encoding='utf-8') as f:\n"
    "  for x in ps: f.write(json.dumps(x,ensure_ascii=False)+'\\n')\n"
    "print(n)\n";

/*
 * Appends a newer version of every person; one staff member with an address
 * and a phone becomes protected (Sekretessmarkering) in it.
 */
static const char update_py[] =
    "import datetime,json,sys\n"
    "p=sys.argv[1]+'/persons.jsonl'\n"
    "now=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')\n"
    "ps=[json.loads(l) for l in open(p,encoding='utf-8') if l.strip()]\n"
    "prot=('Skyddad folkbokföring','Sekretessmarkering')\n"
    "def staff(x): return any(e.get('type')=='Skola personal' for e in x.get('emails',[]))\n"
    "s=[x for x in ps if staff(x) and x.get('securityMarking') not in prot\n"
    "   and x.get('addresses') and x.get('phoneNumbers')][0]\n"
    "s['securityMarking']='Sekretessmarkering'\n"
    "with open(p,'a',encoding='utf-8') as f:\n"
    "  for x in ps:\n"
    "    x['meta']['modified']=now\n"
    "    f.write(json.dumps(x,ensure_ascii=False)+'\\n')\n"
    "print(s['id'])\n";

static char *run_python(const char *script, const char *arg)
{
    char *path = skt_fmt("%s.py", arg);
    skt_write(path, script);
    char *cmd = skt_fmt("python3 %s %s", path, arg);
    char *out = NULL;
    int rc = skt_sh(cmd, 60, &out);
    cr_assert_eq(rc, 0, "%s:\n%s", cmd, out);
    free(cmd);
    free(path);
    return out;
}

static void write_config(const struct setup *s, const char *sqlite_extra)
{
    char *head = skt_config_head(s->prefix, "debug", "30s");
    char *text = skt_fmt("%s"
                         "sources:\n"
                         "  files-%s:\n"
                         "    type: jsonl-source\n"
                         "    path: %s\n"
                         "    batch_size: 500\n"
                         "sinks:\n"
                         "  db-%s:\n"
                         "    type: sqlite-sink\n"
                         "    path: %s\n"
                         "%s"
                         "  pg-%s:\n"
                         "    type: postgres-sink\n"
                         "    conninfo: ${env:SK_TEST_PG}\n"
                         "    schema: %s\n"
                         "  scim-%s:\n"
                         "    type: scim-sink\n"
                         "    url: %s\n"
                         "    state_dir: %s\n"
                         "  or-%s:\n"
                         "    type: oneroster-csv-sink\n"
                         "    state_dir: %s\n"
                         "    output_dir: %s\n"
                         "    idle: 1s\n",
                         head, s->suffix, s->data, s->suffix, s->db,
                         sqlite_extra ? sqlite_extra : "", s->suffix, s->schema, s->suffix,
                         scim_url(), s->scim_state, s->suffix, s->or_state, s->or_out);
    skt_write(s->cfg, text);
    free(text);
    free(head);
}

static struct setup make_setup(int students)
{
    struct setup s;
    s.dir = skt_tmpdir("privacy");
    s.data = skt_fmt("%s/data", s.dir);
    s.db = skt_fmt("%s/out.db", s.dir);
    s.cfg = skt_fmt("%s/skolsync.yaml", s.dir);
    s.prefix = skt_unique_prefix();
    s.suffix = strndup(s.prefix + 1, 8);
    s.schema = skt_fmt("privacy_%s", s.suffix);
    s.scim_state = skt_fmt("%s/scim-state", s.dir);
    s.or_state = skt_fmt("%s/or-state", s.dir);
    s.or_out = skt_fmt("%s/or-out", s.dir);
    cr_assert_eq(mkdir(s.or_state, 0700), 0);
    cr_assert_eq(mkdir(s.or_out, 0700), 0);
    skt_generate(s.data, 41, students);
    char *n = run_python(augment_py, s.data);
    cr_log_info("privacy: %d protected persons given an address and a phone", atoi(n));
    free(n);
    write_config(&s, NULL);
    return s;
}

static char *run_once(const struct setup *s, int *rc)
{
    char *cmd = skt_fmt("cd %s && %s run --once -c %s", s->dir, skt_skolsync(), s->cfg);
    char *out = NULL;
    *rc = skt_sh(cmd, 240, &out);
    free(cmd);
    static int runs;
    char *log = skt_fmt("%s/run-%d.log", s->dir, ++runs);
    skt_write(log, out);
    free(log);
    return out;
}

/* ---- the checks ------------------------------------------------------------ */

/* 1: SCIM. Returns how many protected persons have a User. */
static size_t check_scim(const struct dataset *d)
{
    size_t provisioned = 0;
    for (size_t i = 0; i < d->n; i++) {
        const struct person *p = &d->p[i];
        if (!p->protected_)
            continue;
        cJSON *u = scim_user_by_external_id(p->id);
        if (!u)
            continue;
        provisioned++;
        char *text = cJSON_PrintUnformatted(u);
        char *where = skt_fmt("SCIM User of protected person %s", p->id);
        assert_no_protected_data(d, text, strlen(text), where);
        cr_assert_null(cJSON_GetObjectItemCaseSensitive(u, "addresses"), "%s: %s", where, text);
        cr_assert_null(cJSON_GetObjectItemCaseSensitive(u, "phoneNumbers"), "%s: %s", where, text);
        /* minimal: no names either */
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(u, "name");
        cr_assert(!cJSON_GetObjectItemCaseSensitive(name, "givenName") &&
                      !cJSON_GetObjectItemCaseSensitive(name, "familyName"),
                  "%s has a name under protected_identities: minimal: %s", where, text);
        if (p->given[0])
            cr_assert_null(strstr(text, p->given), "%s carries the given name: %s", where, text);
        free(where);
        free(text);
        cJSON_Delete(u);
    }
    size_t n_users = 0;
    char *all = scim_all_users(&n_users);
    size_t ours = 0;
    for (size_t i = 0; i < d->n; i++)
        ours += strstr(all, d->p[i].id) != NULL;
    cr_log_info("privacy: SCIM server: %zu Users, %zu of this dataset, %zu protected", n_users,
                ours, provisioned);
    cr_assert_gt(ours, 20, "too few Users of this dataset on the SCIM server (%zu)", ours);
    assert_no_civic(d, all, strlen(all), "the SCIM server's Users");
    assert_no_protected_data(d, all, strlen(all), "the SCIM server's Users");
    free(all);
    return provisioned;
}

/* 1: OneRoster files, and the two sinks' state databases. */
static void check_files(const struct setup *s, const struct dataset *d)
{
    struct scan sc = {.d = d, .civic_any = true};
    walk_files(s->or_out, scan_file, &sc);
    cr_assert_gt(sc.csv_files, 3, "no OneRoster bundle in %s", s->or_out);
    /* the export is not vacuous: protected persons are users there (minimal) */
    char *users = skt_fmt("%s/current/users.csv", s->or_out);
    size_t len;
    char *text = sk_read_file(users, &len);
    cr_assert_not_null(text, "no %s", users);
    size_t listed = 0;
    for (size_t i = 0; i < d->n; i++)
        listed += d->p[i].protected_ && strstr(text, d->p[i].id);
    cr_assert_gt(listed, 0, "no protected person in %s", users);
    cr_log_info("privacy: OneRoster: %zu files (%zu csv) clean, %zu protected users listed",
                sc.files, sc.csv_files, listed);
    free(text);
    free(users);
    /* the state kept by scim-sink and oneroster-csv-sink is after the policy too */
    struct scan st = {.d = d, .civic_any = true};
    walk_files(s->scim_state, scan_file, &st);
    walk_files(s->or_state, scan_file, &st);
    cr_assert_gt(st.files, 1);
}

/* 2: the sqlite doc of a person, or NULL. */
static cJSON *sqlite_doc(const char *db_path, const char *id)
{
    char *text = skt_sqlite_value(db_path, "SELECT doc FROM persons WHERE id = ?1", id);
    cJSON *doc = text ? cJSON_Parse(text) : NULL;
    free(text);
    return doc;
}

static void check_postgres(const struct setup *s, const struct dataset *d)
{
    PGconn *c = PQconnectdb(getenv("SK_TEST_PG"));
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    char *sql = skt_fmt("SELECT count(*), count(*) FILTER (WHERE doc ? 'civicNo') FROM "
                        "\"%s\".persons",
                        s->schema);
    PGresult *r = PQexec(c, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
    size_t rows = (size_t)atol(PQgetvalue(r, 0, 0)), with_civic = (size_t)atol(PQgetvalue(r, 0, 1));
    cr_assert_eq(rows, d->n, "postgres persons: %zu rows, %zu in the dataset", rows, d->n);
    cr_assert_eq(with_civic, d->n, "postgres keeps civicNo by default: %zu of %zu", with_civic,
                 d->n);
    PQclear(r);
    free(sql);
    for (size_t i = 0; i < d->n; i++) {
        const struct person *p = &d->p[i];
        if (!p->protected_)
            continue;
        sql = skt_fmt("SELECT doc->'civicNo'->>'value', doc::text FROM \"%s\".persons WHERE "
                      "id = '%s'",
                      s->schema, p->id);
        r = PQexec(c, sql);
        cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
        cr_assert_eq(PQntuples(r), 1, "protected person %s missing in postgres", p->id);
        cr_assert_str_eq(PQgetvalue(r, 0, 0), p->civic, "postgres %s", p->id);
        for (size_t k = 0; k < p->n_needles; k++)
            cr_assert(strstr(PQgetvalue(r, 0, 1), p->needles[k]),
                      "postgres (allow) lost \"%s\" of %s", p->needles[k], p->id);
        PQclear(r);
        free(sql);
    }
    PQfinish(c);
}

static void drop_schema(const struct setup *s)
{
    PGconn *c = PQconnectdb(getenv("SK_TEST_PG"));
    if (PQstatus(c) == CONNECTION_OK) {
        char *sql =
            skt_fmt("SET client_min_messages TO warning; DROP SCHEMA \"%s\" CASCADE", s->schema);
        PQclear(PQexec(c, sql));
        free(sql);
    }
    PQfinish(c);
}

Test(privacy, default_policy_of_every_sink_then_a_per_sink_override, .timeout = 480)
{
    struct setup s = make_setup(60);
    struct dataset d = load_persons(s.data);
    size_t prot = n_protected(&d);
    cr_log_info("privacy: %zu persons, %zu protected, %zu civic numbers", d.n, prot, d.n_civics);
    cr_assert_geq(prot, 3, "the dataset has too few protected persons (%zu)", prot);

    /* ---- run 1: every sink with its default policy ---- */
    int rc;
    char *out = run_once(&s, &rc);
    cr_assert_eq(rc, 0, "run --once failed (%d):\n%s", rc, out);
    cr_assert(strstr(out, " debug "), "no debug output:\n%.2000s", out);

    /* 3: no civic number (nor a protected address or phone) in the log */
    assert_no_civic(&d, out, strlen(out), "the daemon's output (run 1)");
    assert_no_protected_data(&d, out, strlen(out), "the daemon's output (run 1)");

    /* 2: the database sinks keep everything */
    char why[2048] = "";
    cr_assert(skt_db_matches_dataset(s.db, s.data, why, sizeof(why)), "sqlite: %s", why);
    for (size_t i = 0; i < d.n; i++) {
        if (!d.p[i].protected_)
            continue;
        cJSON *doc = sqlite_doc(s.db, d.p[i].id);
        cr_assert_not_null(doc, "protected person %s missing in sqlite", d.p[i].id);
        const cJSON *civ = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(doc, "civicNo"), "value");
        cr_assert(cJSON_IsString(civ) && strcmp(civ->valuestring, d.p[i].civic) == 0,
                  "sqlite (allow) lost the civicNo of %s", d.p[i].id);
        cr_assert(cJSON_GetObjectItemCaseSensitive(doc, "addresses"));
        cJSON_Delete(doc);
    }
    check_postgres(&s, &d);

    /* 1: SCIM and OneRoster */
    size_t prov = check_scim(&d);
    cr_assert_gt(prov, 0, "no protected person was provisioned on SCIM (minimal keeps them)");
    check_files(&s, &d);
    free(out);

    /* ---- run 2: sqlite-sink overrides skip + drop addresses; all persons updated,
     *      one staff member becomes protected ---- */
    char *became = run_python(update_py, s.data);
    became[strcspn(became, "\n")] = '\0';
    write_config(&s, "    protected_identities: skip\n    drop_fields: [addresses]\n");
    dataset_free(&d);
    d = load_persons(s.data);
    cr_assert_eq(n_protected(&d), prot + 1);
    /* the staff member was stored with everything before */
    cJSON *before = sqlite_doc(s.db, became);
    cr_assert(before && cJSON_GetObjectItemCaseSensitive(before, "addresses"));
    cJSON_Delete(before);

    out = run_once(&s, &rc);
    cr_assert_eq(rc, 0, "second run failed (%d):\n%s", rc, out);
    assert_no_civic(&d, out, strlen(out), "the daemon's output (run 2)");
    assert_no_protected_data(&d, out, strlen(out), "the daemon's output (run 2)");

    /* 4: protected persons are gone from sqlite, nobody has addresses, the rest stays */
    size_t kept = 0;
    for (size_t i = 0; i < d.n; i++) {
        cJSON *doc = sqlite_doc(s.db, d.p[i].id);
        if (d.p[i].protected_) {
            cr_assert_null(doc, "protected person %s%s still in sqlite under skip", d.p[i].id,
                           strcmp(d.p[i].id, became) == 0 ? " (became protected)" : "");
            continue;
        }
        cr_assert_not_null(doc, "person %s lost from sqlite", d.p[i].id);
        cr_assert_null(cJSON_GetObjectItemCaseSensitive(doc, "addresses"),
                       "person %s keeps addresses under drop_fields: [addresses]", d.p[i].id);
        if (d.p[i].civic[0])
            cr_assert(cJSON_GetObjectItemCaseSensitive(doc, "civicNo"),
                      "drop_fields replaced the list: civicNo must stay in sqlite (%s)", d.p[i].id);
        kept++;
        cJSON_Delete(doc);
    }
    cr_log_info("privacy: run 2: sqlite keeps %zu persons, %zu protected deleted", kept,
                n_protected(&d));
    /* the other sinks still follow their defaults, the newly protected person included */
    check_postgres(&s, &d);
    cr_assert_geq(check_scim(&d), prov);
    cJSON *u = scim_user_by_external_id(became);
    if (u) { /* a staff member with a duty: still a user, now minimal */
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(u, "name");
        cr_assert_null(cJSON_GetObjectItemCaseSensitive(name, "familyName"),
                       "the newly protected person %s kept their name on SCIM", became);
        cJSON_Delete(u);
    }
    check_files(&s, &d);
    free(out);
    free(became);
    drop_schema(&s);
    dataset_free(&d);
}
