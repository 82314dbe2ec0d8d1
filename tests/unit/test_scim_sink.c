/*
 * test_scim_sink.c: the scim-sink connector against a real SCIM server
 * (scim2-server from scripts/scim.sh, address in SK_TEST_SCIM): a dataset
 * slice becomes the expected Users and Groups; replays, stale versions and a
 * lost state dir create no duplicates; deletes remove or deactivate; the
 * server's 400 becomes REJECTED with its detail; 429/503 become RETRY with
 * Retry-After; a protected person reaches the server without address, phone
 * or civic number.
 *
 * Tests run in parallel against one server: each uses fresh UUIDs and a
 * userName tag of its own, and looks only at its own resources.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "connector.h"
#include "drivers.h"
#include "model.h"
#include "privacy.h"
#include "sk_test.h"
#include "util.h"

static const struct sk_sink_ops *ops;
static struct sk_sink *sink;
static char *state_dir;
static char tag[16];
static const struct sk_entity *entities[3];
static struct skt_recs batch;
static struct sk_privacy privacy;

/* ---- the SCIM server, read directly --------------------------------------------- */

static const char *scim_url(void)
{
    const char *u = getenv("SK_TEST_SCIM");
    cr_assert(u && *u, "SK_TEST_SCIM is not set: run scripts/scim.sh start and source "
                       "$SK_TESTENV_DIR/scim.env (or scripts/testenv.sh)");
    return u;
}

/* GET base+path; the parsed body (caller frees). */
static cJSON *get_json(const char *path)
{
    char *url = sk_asprintf("%s%s", scim_url(), path), *body = NULL;
    long status = skt_http("GET", url, NULL, 10, &body);
    cr_assert_neq(status, 0, "GET %s: no response", url);
    cJSON *json = cJSON_Parse(body);
    cr_assert_not_null(json, "GET %s: not JSON: %s", url, body);
    free(body);
    free(url);
    return json;
}

/* DELETE base+path behind the sink's back; the status. */
static long http_delete(const char *path)
{
    char *url = sk_asprintf("%s%s", scim_url(), path);
    long status = skt_http("DELETE", url, NULL, 10, NULL);
    cr_assert_neq(status, 0, "DELETE %s: no response", url);
    free(url);
    return status;
}

/* The server's resources of endpoint whose externalId is uuid (a ListResponse's Resources). */
static cJSON *by_external_id(const char *endpoint, const char *uuid)
{
    char *filter = sk_asprintf("externalId eq \"%s\"", uuid);
    char *enc = curl_easy_escape(NULL, filter, 0);
    char *path = sk_asprintf("/%s?filter=%s", endpoint, enc);
    cJSON *list = get_json(path);
    cJSON *res = cJSON_DetachItemFromObjectCaseSensitive(list, "Resources");
    cJSON_Delete(list);
    curl_free(enc);
    free(filter);
    free(path);
    return res ? res : cJSON_CreateArray();
}

/* The one resource with externalId uuid; fails if there are several; NULL if none. */
static cJSON *one(const char *endpoint, const char *uuid)
{
    cJSON *res = by_external_id(endpoint, uuid);
    int n = cJSON_GetArraySize(res);
    cr_assert_leq(n, 1, "%s: %d resources with externalId %s (duplicates)", endpoint, n, uuid);
    cJSON *r = n ? cJSON_DetachItemFromArray(res, 0) : NULL;
    cJSON_Delete(res);
    return r;
}

static const char *s_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void assert_str(const cJSON *o, const char *key, const char *want)
{
    const char *got = s_of(o, key);
    cr_assert(got && strcmp(got, want) == 0, "%s: got %s, expected %s", key, got ? got : "(none)",
              want);
}

/* ---- the sink --------------------------------------------------------------- */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void setup(void)
{
    ops = sk_registry_sink("scim-sink");
    cr_assert_not_null(ops, "scim-sink is not registered");
    (void)scim_url();
    char base[] = "/tmp/sk-scim-XXXXXX";
    cr_assert_not_null(mkdtemp(base));
    state_dir = sk_asprintf("%s/state", base);
    char u[37];
    sk_uuid_random(u);
    snprintf(tag, sizeof(tag), "t%.8s", u);
    entities[0] = sk_entity_by_name("Person");
    entities[1] = sk_entity_by_name("Duty");
    entities[2] = sk_entity_by_name("Group");
    /* the privacy policy the driver applies with this sink type's defaults */
    struct sk_sink_settings none = {0};
    sk_sink_privacy_resolve(&none, ops, &privacy);
}

static void teardown(void)
{
    skt_sink_drop(&sink);
    skt_recs_free(&batch);
    sk_sink_privacy_free(&privacy);
    if (!state_dir)
        return; /* setup failed before it made one */
    char *base = sk_strdup(state_dir);
    *strrchr(base, '/') = '\0';
    nftw(base, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(base);
    free(state_dir);
    state_dir = NULL;
}

static int open_with(const char *extra_yaml, const char *url, struct sk_error *err)
{
    char *yaml = sk_asprintf("url: %s\nstate_dir: %s\ntimeout: 10s\n%s", url ? url : scim_url(),
                             state_dir, extra_yaml ? extra_yaml : "");
    int rc = skt_sink_try_open("scim-sink", "scim-test", yaml, entities, 3, "test", &sink, err);
    free(yaml);
    return rc;
}

static void open_sink(const char *extra_yaml)
{
    struct sk_error err = {0};
    cr_assert_eq(open_with(extra_yaml, NULL, &err), 0, "%s", err.msg);
}

/* Adds a record as the sink driver hands it over, with this sink type's privacy defaults. */
static void add_json(const char *entity, const char *json)
{
    skt_recs_add(&batch, entity, NULL, json, &privacy);
}

static void add_tombstone(const char *entity, const char *uuid)
{
    skt_recs_add(&batch, entity, uuid, NULL, NULL);
}

static void apply_all(void)
{
    struct sk_error err = {0};
    cr_assert_eq(skt_recs_apply(sink, &batch, &err), 0, "%s", err.msg);
}

/* What the state keeps as the next offset of persons [0]; -1 if none. */
static int64_t stored_next(void)
{
    struct sk_offsets offs = {0};
    struct sk_error err = {0};
    cr_assert_eq(sink->ops->stored_offsets(sink, &offs, &err), 0, "%s", err.msg);
    int64_t next = -1;
    for (size_t i = 0; i < offs.n; i++)
        if (strcmp(offs.v[i].topic, "persons") == 0 && offs.v[i].partition == 0)
            next = offs.v[i].next_offset;
    sk_offsets_free(&offs);
    return next;
}

static void assert_all_applied(void)
{
    for (size_t i = 0; i < batch.n; i++)
        cr_assert_eq(batch.out[i].kind, SK_APPLIED, "record %zu (%s %s): outcome %d: %s", i,
                     batch.v[i].entity->name, batch.v[i].key, batch.out[i].kind,
                     batch.out[i].err.msg);
}

/* ---- the dataset slice ---------------------------------------------------------- */

#define META(mod) "\"meta\":{\"created\":\"2025-01-01T00:00:00Z\",\"modified\":\"" mod "\"}"
#define T1 "2025-08-18T06:00:00+02:00"
#define T2 "2025-08-19T06:00:00+02:00"

struct ids {
    char school[37], s[5][37], teacher[37], head[37], guardian[37], nobody[37];
    char d_teacher[37], d_head[37], g_class[37], g_teach[37], g_mentor[37];
};

static void new_ids(struct ids *x)
{
    char(*all[])[37] = {&x->school,    &x->s[0],    &x->s[1],    &x->s[2],     &x->s[3],
                        &x->s[4],      &x->teacher, &x->head,    &x->guardian, &x->nobody,
                        &x->d_teacher, &x->d_head,  &x->g_class, &x->g_teach,  &x->g_mentor};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        sk_uuid_random(*all[i]);
}

static void add_student(const struct ids *x, int i, const char *modified, const char *given,
                        const char *extra)
{
    char *json = sk_asprintf(
        "{\"id\":\"%s\"," META(
            "%s") ",\"givenName\":\"%s\",\"familyName\":\"Elev%d\","
                  "\"eduPersonPrincipalNames\":[\"%s.s%d@edu.example.se\"],"
                  "\"emails\":[{\"value\":\"%s.s%d@edu.example.se\",\"type\":\"Skola elev\"},"
                  "{\"value\":\"private%d@example.com\",\"type\":\"Privat\"}],"
                  "\"securityMarking\":\"Ingen\",\"personStatus\":\"Aktiv\","
                  "\"civicNo\":{\"value\":\"20120101238%d\",\"nationality\":\"SE\"},"
                  "\"enrolments\":[{\"enroledAt\":{\"id\":\"%s\"},\"schoolType\":\"GR\","
                  "\"schoolYear\":7,"
                  "\"startDate\":\"2025-08-18\"}],"
                  "\"responsibles\":[{\"person\":{\"id\":\"%s\"},\"relationType\":"
                  "\"Vårdnadshavare\"}]%s}",
        x->s[i], modified, given, i, tag, i, tag, i, i, i, x->school, x->guardian,
        extra ? extra : "");
    add_json("Person", json);
    free(json);
}

/* Persons with a role in the tests; modified T1 unless said otherwise. */
static void add_people(const struct ids *x)
{
    for (int i = 0; i < 3; i++)
        add_student(x, i, T1, i == 1 ? "Bo" : "Alva", i == 2 ? ",\"middleName\":\"Maria\"" : NULL);
    char *json;
    const char *staff[] = {x->teacher, x->head};
    for (int i = 0; i < 2; i++) {
        json = sk_asprintf(
            "{\"id\":\"%s\"," META(
                T1) ",\"givenName\":\"Per%d\",\"familyName\":"
                    "\"Personal\",\"eduPersonPrincipalNames\":[\"%s.staff%d@edu.example.se\"],"
                    "\"emails\":[{\"value\":\"%s.staff%d@edu.example.se\",\"type\":"
                    "\"Skola personal\"}],\"externalIdentifiers\":[{\"value\":\"E%d\","
                    "\"context\":\"hr\",\"globallyUnique\":false}]}",
            staff[i], i, tag, i, tag, i, i);
        add_json("Person", json);
        free(json);
    }
    json = sk_asprintf(
        "{\"id\":\"%s\"," META(T1) ",\"givenName\":\"Gun\",\"familyName\":\"Vh\","
                                   "\"eduPersonPrincipalNames\":[\"%s.guardian@example.se\"]}",
        x->guardian, tag);
    add_json("Person", json);
    free(json);
    json = sk_asprintf(
        "{\"id\":\"%s\"," META(T1) ",\"givenName\":\"No\",\"familyName\":\"Body\","
                                   "\"eduPersonPrincipalNames\":[\"%s.nobody@example.se\"]}",
        x->nobody, tag);
    add_json("Person", json);
    free(json);
}

static void add_duty(const char *id, const char *person, const char *role, const char *modified)
{
    char *json =
        sk_asprintf("{\"id\":\"%s\"," META("%s") ",\"person\":{\"id\":\"%s\"},"
                                                 "\"dutyAt\":{\"id\":\"%s\"},\"dutyRole\":\"%s\","
                                                 "\"startDate\":\"2019-08-01\"}",
                    id, modified, person, person, role);
    add_json("Duty", json);
    free(json);
}

static void add_group(const char *id, const char *name, const char *type, const char *modified,
                      const char *const *members, size_t n)
{
    char *list = sk_strdup("");
    for (size_t i = 0; i < n; i++) {
        char *next = sk_asprintf("%s%s{\"person\":{\"id\":\"%s\"},\"startDate\":\"2025-08-18\"}",
                                 list, i ? "," : "", members[i]);
        free(list);
        list = next;
    }
    char *json = sk_asprintf(
        "{\"id\":\"%s\"," META("%s") ",\"displayName\":\"%s %s\","
                                     "\"groupType\":\"%s\",\"organisation\":{\"id\":\"%s\"},"
                                     "\"startDate\":\"2025-08-18\",\"groupMemberships\":[%s]}",
        id, modified, tag, name, type, id, list);
    add_json("Group", json);
    free(json);
    free(list);
}

/* Groups first: the sink must still create the users before the groups. */
static void add_slice(const struct ids *x)
{
    const char *klass[] = {x->s[0], x->s[1], x->s[2], x->nobody};
    const char *teach[] = {x->s[0], x->teacher};
    add_group(x->g_class, "7A", "Klass", T1, klass, 4);
    add_group(x->g_teach, "Ma 7A", "Undervisning", T1, teach, 2);
    add_group(x->g_mentor, "Mentor", "Mentor", T1, klass, 2);
    add_people(x);
    add_duty(x->d_teacher, x->teacher, "Lärare", T1);
    add_duty(x->d_head, x->head, "Rektor", T1);
}

static char *scim_id_of(const char *uuid)
{
    cJSON *u = one("Users", uuid);
    cr_assert_not_null(u, "user %s missing", uuid);
    char *id = sk_strdup(s_of(u, "id"));
    cJSON_Delete(u);
    return id;
}

/* The group's member ids equal exactly the SCIM ids of these persons. */
static void assert_members(const char *group, const char *const *persons, size_t n)
{
    cJSON *g = one("Groups", group);
    cr_assert_not_null(g, "group %s missing", group);
    const cJSON *members = cJSON_GetObjectItemCaseSensitive(g, "members");
    cr_assert_eq((size_t)cJSON_GetArraySize(members), n, "group %s: %d members, expected %zu",
                 group, cJSON_GetArraySize(members), n);
    for (size_t i = 0; i < n; i++) {
        char *id = scim_id_of(persons[i]);
        bool found = false;
        const cJSON *m;
        cJSON_ArrayForEach(m, members) found = found || strcmp(s_of(m, "value"), id) == 0;
        cr_assert(found, "group %s lacks member %s (%s)", group, persons[i], id);
        free(id);
    }
    cJSON_Delete(g);
}

static void assert_slice(const struct ids *x)
{
    for (int i = 0; i < 3; i++) {
        cJSON *u = one("Users", x->s[i]);
        cr_assert_not_null(u, "student %d not provisioned", i);
        char *user_name = sk_asprintf("%s.s%d@edu.example.se", tag, i);
        assert_str(u, "userName", user_name);
        assert_str(u, "externalId", x->s[i]);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(u, "name");
        assert_str(name, "givenName", i == 1 ? "Bo" : "Alva");
        char *family = sk_asprintf("Elev%d", i);
        assert_str(name, "familyName", family);
        if (i == 2)
            assert_str(name, "middleName", "Maria");
        cr_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(u, "active")));
        const cJSON *emails = cJSON_GetObjectItemCaseSensitive(u, "emails");
        cr_assert_eq(cJSON_GetArraySize(emails), 1, "only the school e-mail goes out");
        assert_str(cJSON_GetArrayItem(emails, 0), "value", user_name);
        assert_str(cJSON_GetArrayItem(emails, 0), "type", "work");
        free(family);
        free(user_name);
        cJSON_Delete(u);
    }
    const char *staff[] = {x->teacher, x->head};
    for (int i = 0; i < 2; i++) {
        cJSON *u = one("Users", staff[i]);
        cr_assert_not_null(u, "staff %d not provisioned", i);
        char *user_name = sk_asprintf("%s.staff%d@edu.example.se", tag, i);
        assert_str(u, "userName", user_name);
        assert_str(cJSON_GetObjectItemCaseSensitive(u, "name"), "familyName", "Personal");
        free(user_name);
        cJSON_Delete(u);
    }
    cJSON *g = one("Users", x->guardian);
    cr_assert_null(g, "guardians are not users by default");
    cJSON *n = one("Users", x->nobody);
    cr_assert_null(n, "a person with no enrolment or duty is not a user");
    const char *klass[] = {x->s[0], x->s[1], x->s[2]};
    const char *teach[] = {x->s[0], x->teacher};
    assert_members(x->g_class, klass, 3);
    assert_members(x->g_teach, teach, 2);
    cJSON *m = one("Groups", x->g_mentor);
    cr_assert_null(m, "Mentor groups are not in the default groups option");
    cJSON *c = one("Groups", x->g_class);
    char *want = sk_asprintf("%s 7A", tag);
    assert_str(c, "displayName", want);
    free(want);
    cJSON_Delete(c);
}

/* meta.version of a resource, to tell whether it was written (caller frees). */
static char *version_of(const char *endpoint, const char *uuid)
{
    cJSON *r = one(endpoint, uuid);
    cr_assert_not_null(r, "%s %s missing", endpoint, uuid);
    char *v = sk_strdup(s_of(cJSON_GetObjectItemCaseSensitive(r, "meta"), "version"));
    cJSON_Delete(r);
    return v;
}

TestSuite(scim_sink, .init = setup, .fini = teardown, .timeout = 120);

Test(scim_sink, dataset_slice_becomes_users_and_groups)
{
    struct ids x;
    new_ids(&x);
    open_sink(NULL);
    add_slice(&x);
    apply_all();
    assert_all_applied();
    assert_slice(&x);
}

Test(scim_sink, replay_creates_no_duplicates_and_changes_nothing)
{
    struct ids x;
    new_ids(&x);
    open_sink(NULL);
    add_slice(&x);
    apply_all();
    assert_all_applied();
    int64_t last = -1;
    for (size_t i = 0; i < batch.n; i++)
        if (strcmp(batch.v[i].topic, "persons") == 0)
            last = batch.v[i].offset;
    cr_assert_eq(stored_next(), last + 1, "the batch's offsets kept in the state");
    char *v_user = version_of("Users", x.s[0]), *v_group = version_of("Groups", x.g_class);
    apply_all(); /* the same records again, as after a rebalance */
    assert_all_applied();
    assert_slice(&x); /* one() fails on duplicates */
    char *v_user2 = version_of("Users", x.s[0]), *v_group2 = version_of("Groups", x.g_class);
    cr_assert_str_eq(v_user, v_user2, "a replay rewrote the user");
    cr_assert_str_eq(v_group, v_group2, "a replay rewrote the group");
    free(v_user);
    free(v_user2);
    free(v_group);
    free(v_group2);
}

Test(scim_sink, older_version_after_newer_is_ignored)
{
    struct ids x;
    new_ids(&x);
    open_sink(NULL);
    add_student(&x, 0, T2, "Ny", NULL);
    apply_all();
    assert_all_applied();
    skt_recs_clear(&batch);
    add_student(&x, 0, T1, "Gammal", NULL);
    apply_all();
    assert_all_applied();
    cJSON *u = one("Users", x.s[0]);
    cr_assert_not_null(u);
    assert_str(cJSON_GetObjectItemCaseSensitive(u, "name"), "givenName", "Ny");
    cJSON_Delete(u);
}

Test(scim_sink, delete_removes_the_user_and_its_memberships)
{
    struct ids x;
    new_ids(&x);
    open_sink(NULL);
    add_slice(&x);
    apply_all();
    assert_all_applied();
    skt_recs_clear(&batch);
    add_tombstone("Person", x.s[1]);
    add_tombstone("Person", x.nobody); /* never a user: a delete of something missing */
    add_tombstone("Group", x.g_teach);
    char never[37];
    sk_uuid_random(never);
    add_tombstone("Person", never); /* never seen at all */
    apply_all();
    assert_all_applied();
    cJSON *u = one("Users", x.s[1]);
    cr_assert_null(u, "deleted person still a user");
    cJSON *g = one("Groups", x.g_teach);
    cr_assert_null(g, "deleted group still there");
    const char *klass[] = {x.s[0], x.s[2]};
    assert_members(x.g_class, klass, 2); /* the server keeps dangling members: we re-send */
}

Test(scim_sink, deactivate_sets_active_false)
{
    struct ids x;
    new_ids(&x);
    open_sink("on_delete: deactivate\n");
    add_student(&x, 0, T1, "Alva", NULL);
    add_student(&x, 1, T1, "Bo", NULL);
    apply_all();
    skt_recs_clear(&batch);
    add_tombstone("Person", x.s[0]);
    /* a student whose enrolment is cancelled no longer qualifies either */
    char *json =
        sk_asprintf("{\"id\":\"%s\"," META(
                        T2) ",\"givenName\":\"Bo\",\"familyName\":"
                            "\"Elev1\",\"eduPersonPrincipalNames\":[\"%s.s1@edu.example.se\"],"
                            "\"enrolments\":[{\"enroledAt\":{\"id\":\"%s\"},\"schoolType\":\"GR\","
                            "\"startDate\":\"2025-08-18\",\"cancelled\":true}]}",
                    x.s[1], tag, x.school);
    add_json("Person", json);
    free(json);
    apply_all();
    assert_all_applied();
    for (int i = 0; i < 2; i++) {
        cJSON *u = one("Users", x.s[i]);
        cr_assert_not_null(u, "deactivated user %d was deleted", i);
        cr_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(u, "active")), "user %d active",
                  i);
        cJSON_Delete(u);
    }
    /* a replay of the delete sends nothing more and stays inactive */
    apply_all();
    assert_all_applied();
}

Test(scim_sink, lost_state_dir_is_rebuilt_by_external_id)
{
    struct ids x;
    new_ids(&x);
    open_sink(NULL);
    add_slice(&x);
    apply_all();
    assert_all_applied();
    char *id_before = scim_id_of(x.s[0]);
    skt_sink_drop(&sink);
    char *cmd = sk_asprintf("rm -rf '%s'", state_dir);
    cr_assert_eq(system(cmd), 0);
    free(cmd);
    open_sink(NULL);
    apply_all();
    assert_all_applied();
    assert_slice(&x);
    char *id_after = scim_id_of(x.s[0]);
    cr_assert_str_eq(id_before, id_after, "the user was created again");
    free(id_before);
    free(id_after);
}

Test(scim_sink, server_400_rejects_the_record_with_its_detail)
{
    struct ids x;
    new_ids(&x);
    open_sink(NULL);
    add_student(&x, 0, T1, "Alva", NULL);
    /* PRECIS (RFC 8265) forbids spaces in a userName: the server answers 400 */
    char *json =
        sk_asprintf("{\"id\":\"%s\"," META(
                        T1) ",\"givenName\":\"Bad\",\"familyName\":"
                            "\"Name\",\"eduPersonPrincipalNames\":[\"%s bad name@edu.example.se\"],"
                            "\"enrolments\":[{\"enroledAt\":{\"id\":\"%s\"},\"schoolType\":\"GR\","
                            "\"startDate\":\"2025-08-18\"}]}",
                    x.s[1], tag, x.school);
    add_json("Person", json);
    free(json);
    add_student(&x, 2, T1, "Cia", NULL);
    apply_all();
    cr_assert_eq(batch.out[0].kind, SK_APPLIED, "%s", batch.out[0].err.msg);
    cr_assert_eq(batch.out[1].kind, SK_REJECTED);
    cr_assert_eq(batch.out[1].err.cls, SK_ERR_PERMANENT);
    cr_assert(strstr(batch.out[1].err.msg, "400") && strstr(batch.out[1].err.msg, "spaces"),
              "no server detail in: %s", batch.out[1].err.msg);
    cr_assert_eq(batch.out[2].kind, SK_APPLIED, "%s", batch.out[2].err.msg);
    cJSON *u = one("Users", x.s[2]);
    cr_assert_not_null(u, "the record after the rejected one was not applied");
    cJSON_Delete(u);
}

Test(scim_sink, protected_person_reaches_the_server_minimised)
{
    struct ids x;
    new_ids(&x);
    open_sink(NULL);
    char *json = sk_asprintf(
        "{\"id\":\"%s\"," META(
            T1) ",\"givenName\":\"Hemlig\",\"familyName\":\"Person\","
                "\"eduPersonPrincipalNames\":[\"%s.prot@edu.example.se\"],"
                "\"emails\":[{\"value\":\"%s.prot@edu.example.se\",\"type\":\"Skola elev\"},"
                "{\"value\":\"hemlig@example.com\",\"type\":\"Privat\"}],"
                "\"securityMarking\":\"Skyddad "
                "folkbokföring\",\"civicNo\":{\"value\":\"201201012384\"},"
                "\"addresses\":[{\"type\":\"Folkbokföring\",\"streetAddress\":\"Gömd väg 1\"}],"
                "\"phoneNumbers\":[{\"value\":\"+46701234567\",\"type\":\"Hem\"}],"
                "\"enrolments\":[{\"enroledAt\":{\"id\":\"%s\"},\"schoolType\":\"GR\","
                "\"startDate\":\"2025-08-18\"}]}",
        x.s[0], tag, tag, x.school);
    add_json("Person", json);
    free(json);
    apply_all();
    assert_all_applied();
    cJSON *u = one("Users", x.s[0]);
    cr_assert_not_null(u, "a protected student still gets an account (minimal)");
    char *text = cJSON_PrintUnformatted(u);
    const char *banned[] = {"201201012384", "Gömd",      "+46701234567", "hemlig@example.com",
                            "Hemlig",       "addresses", "phoneNumbers"};
    for (size_t i = 0; i < sizeof(banned) / sizeof(banned[0]); i++)
        cr_assert_null(strstr(text, banned[i]), "\"%s\" reached the server: %s", banned[i], text);
    char *user_name = sk_asprintf("%s.prot@edu.example.se", tag);
    assert_str(u, "userName", user_name);
    free(user_name);
    free(text);
    cJSON_Delete(u);
}

Test(scim_sink, user_name_taken_by_someone_else_is_rejected)
{
    struct ids x;
    new_ids(&x);
    open_sink(NULL);
    add_student(&x, 0, T1, "Alva", NULL);
    /* another person with the same eduPersonPrincipalName: 409 uniqueness, and
     * no resource with its own externalId to adopt */
    char *json =
        sk_asprintf("{\"id\":\"%s\"," META(
                        T1) ",\"givenName\":\"Dubbel\",\"familyName\":"
                            "\"Elev\",\"eduPersonPrincipalNames\":[\"%s.S0@edu.example.se\"],"
                            "\"enrolments\":[{\"enroledAt\":{\"id\":\"%s\"},\"schoolType\":\"GR\","
                            "\"startDate\":\"2025-08-18\"}]}",
                    x.s[1], tag, x.school);
    add_json("Person", json);
    free(json);
    apply_all();
    cr_assert_eq(batch.out[0].kind, SK_APPLIED, "%s", batch.out[0].err.msg);
    cr_assert_eq(batch.out[1].kind, SK_REJECTED);
    cr_assert(strstr(batch.out[1].err.msg, "409") && strstr(batch.out[1].err.msg, "uniqueness"),
              "%s", batch.out[1].err.msg);
    cJSON *u = one("Users", x.s[1]);
    cr_assert_null(u, "the duplicate was created anyway");
}

/* Deletes uuid's user on the server behind the sink's back. */
static void delete_by_hand(const char *uuid)
{
    char *id = scim_id_of(uuid);
    char *path = sk_asprintf("/Users/%s", id);
    cr_assert_eq(http_delete(path), 204);
    free(path);
    free(id);
}

/* Alva applied, her user deleted by hand, then a change of hers: the
 * update's 404 (PUT or PATCH, as yaml says) creates the user again. */
static void change_after_deleted_by_hand(const char *yaml, struct ids *x)
{
    new_ids(x);
    open_sink(yaml);
    add_student(x, 0, T1, "Alva", NULL);
    apply_all();
    assert_all_applied();
    delete_by_hand(x->s[0]);
    skt_recs_clear(&batch);
    add_student(x, 0, T2, "Alva-Li", NULL);
    apply_all();
    assert_all_applied();
    cJSON *u = one("Users", x->s[0]);
    cr_assert_not_null(u, "an update answered 404 must create the user again");
    assert_str(cJSON_GetObjectItemCaseSensitive(u, "name"), "givenName", "Alva-Li");
    cJSON_Delete(u);
}

Test(scim_sink, user_deleted_on_the_server_is_created_again)
{
    struct ids x;
    change_after_deleted_by_hand(NULL, &x);
}

static void patch_round(const char *dialect)
{
    struct ids x;
    new_ids(&x);
    char *yaml = sk_asprintf("update: patch\npatch_dialect: %s\nemployee_number_context: hr\n"
                             "users: [students, staff, guardians]\n",
                             dialect);
    open_sink(yaml);
    free(yaml);
    add_slice(&x);
    apply_all();
    assert_all_applied();
    cJSON *g = one("Users", x.guardian);
    cr_assert_not_null(g, "users: guardians provisions the students' responsibles");
    cJSON_Delete(g);
    cJSON *t = one("Users", x.teacher);
    cr_assert_not_null(t);
    assert_str(cJSON_GetObjectItemCaseSensitive(
                   t, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"),
               "employeeNumber", "E0");
    cJSON_Delete(t);
    skt_recs_clear(&batch);
    /* name change, middleName gone; the class loses a member */
    add_student(&x, 2, T2, "Nytt", NULL);
    const char *klass[] = {x.s[0], x.s[2]};
    add_group(x.g_class, "7A", "Klass", T2, klass, 2);
    apply_all();
    assert_all_applied();
    cJSON *u = one("Users", x.s[2]);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(u, "name");
    assert_str(name, "givenName", "Nytt");
    cr_assert_null(cJSON_GetObjectItemCaseSensitive(name, "middleName"), "middleName not removed");
    cJSON_Delete(u);
    assert_members(x.g_class, klass, 2);
}

Test(scim_sink, patch_rfc)
{
    patch_round("rfc");
}

Test(scim_sink, patch_entra)
{
    patch_round("entra");
}

Test(scim_sink, patch_okta)
{
    patch_round("okta");
}

Test(scim_sink, staff_follow_their_duties)
{
    struct ids x;
    new_ids(&x);
    open_sink("staff_roles: [Lärare]\n");
    add_people(&x);
    apply_all();
    assert_all_applied();
    cJSON *t = one("Users", x.teacher);
    cr_assert_null(t, "no duty yet: not staff");
    skt_recs_clear(&batch);
    add_duty(x.d_teacher, x.teacher, "Lärare", T1);
    add_duty(x.d_head, x.head, "Rektor", T1); /* not in staff_roles */
    apply_all();
    assert_all_applied();
    t = one("Users", x.teacher);
    cr_assert_not_null(t, "a Duty after the Person makes them staff");
    cJSON_Delete(t);
    cJSON *h = one("Users", x.head);
    cr_assert_null(h, "staff_roles filters Rektor out");
    skt_recs_clear(&batch);
    add_tombstone("Duty", x.d_teacher);
    apply_all();
    assert_all_applied();
    t = one("Users", x.teacher);
    cr_assert_null(t, "the duty is gone: so is the account");
}

/* ---- a server that throttles ------------------------------------------------------ */

struct canned {
    int fd;
    const char *response; /* the same answer to everything, or */
    const char *(*answer)(struct canned *c, const char *request); /* one per request */
    int token_requests, bearer_ok, served;
    char seen[4096]; /* "METHOD path" of every request, a line each */
    /* check_no_write: Alva's outcome and a piece of its reason */
    enum sk_outcome_kind want;
    const char *want_text;
    const char *pages[2]; /* lookup_pages: answers to a lookup, the second for startIndex=2 */
};

/* Reads one request: headers and Content-Length bytes of body. */
static void read_request(int fd, char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (;;) {
        ssize_t k = read(fd, buf + n, size - 1 - n);
        if (k <= 0)
            return;
        n += (size_t)k;
        buf[n] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (!end)
            continue;
        const char *cl = strcasestr(buf, "content-length:");
        size_t want = (size_t)(end + 4 - buf) + (cl && cl < end ? (size_t)atol(cl + 15) : 0);
        if (n >= want || n == size - 1)
            return;
    }
}

/* Appends "METHOD path" (without the query) of req to c->seen. */
static void note_request(struct canned *c, const char *req)
{
    size_t method = strcspn(req, " \r\n");
    size_t path = req[method] == ' ' ? strcspn(req + method + 1, " ?\r\n") : 0;
    size_t used = strlen(c->seen);
    snprintf(c->seen + used, sizeof(c->seen) - used, "%.*s\n", (int)(method + 1 + path), req);
}

static void *serve(void *arg)
{
    struct canned *c = arg;
    for (;;) {
        int fd = accept(c->fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        char buf[16384];
        read_request(fd, buf, sizeof(buf));
        note_request(c, buf);
        const char *response = c->answer ? c->answer(c, buf) : c->response;
        ssize_t w = write(fd, response, strlen(response));
        (void)w;
        c->served++;
        close(fd);
    }
}

static void with_server(struct canned *c, void (*check)(const char *url, struct canned *c))
{
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(c->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    getsockname(c->fd, (struct sockaddr *)&a, &len);
    cr_assert_eq(listen(c->fd, 8), 0);
    pthread_t t;
    pthread_create(&t, NULL, serve, c);
    char *url = sk_asprintf("http://127.0.0.1:%d", ntohs(a.sin_port));
    check(url, c);
    shutdown(c->fd, SHUT_RDWR);
    close(c->fd);
    pthread_join(t, NULL);
    free(url);
}

static void with_canned_server(const char *response,
                               void (*check)(const char *url, struct canned *c))
{
    struct canned c = {.response = response};
    with_server(&c, check);
}

static void check_throttled(const char *url, struct canned *c)
{
    struct sk_error err = {0};
    char *base = sk_asprintf("%s/v2", url);
    cr_assert_eq(open_with("retry_after_max: 1s\n", base, &err), 0, "%s", err.msg);
    free(base);
    struct ids x;
    new_ids(&x);
    add_student(&x, 0, T1, "Alva", NULL);
    add_student(&x, 1, T1, "Bo", NULL);
    int64_t t0 = sk_mono_ms();
    apply_all();
    int64_t took = sk_mono_ms() - t0;
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(batch.out[i].kind, SK_RETRY, "record %d: %d", i, batch.out[i].kind);
        cr_assert_eq(batch.out[i].err.cls, SK_ERR_RETRIABLE);
        cr_assert(strstr(batch.out[i].err.msg, "429") &&
                      strstr(batch.out[i].err.msg, "Retry-After 7"),
                  "%s", batch.out[i].err.msg);
    }
    cr_assert_geq(took, 900, "Retry-After not honoured up to retry_after_max (%lld ms)",
                  (long long)took);
    cr_assert_lt(took, 5000, "waited once per record instead of once per batch");
    /* a restart must read them again: no offset past a record to retry */
    cr_assert_eq(stored_next(), -1, "offsets stored past records left for retry");
}

Test(scim_sink, throttling_is_retry_with_retry_after)
{
    with_canned_server("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n"
                       "Content-Type: application/scim+json\r\nContent-Length: 2\r\n"
                       "Connection: close\r\n\r\n{}",
                       check_throttled);
}

static void check_unauthorised(const char *url, struct canned *c)
{
    struct sk_error err = {0};
    char *base = sk_asprintf("%s/v2", url);
    cr_assert_eq(open_with("auth: bearer\ntoken: s3cr3t-token\n", base, &err), 0, "%s", err.msg);
    free(base);
    struct ids x;
    new_ids(&x);
    add_student(&x, 0, T1, "Alva", NULL);
    cr_assert_eq(skt_recs_apply(sink, &batch, &err), -1);
    cr_assert_eq(err.cls, SK_ERR_FATAL, "%s", err.msg);
    cr_assert(strstr(err.msg, "401"), "%s", err.msg);
    cr_assert_null(strstr(err.msg, "s3cr3t"), "the token leaked into: %s", err.msg);
}

Test(scim_sink, unauthorised_is_fatal_and_does_not_leak_the_token)
{
    with_canned_server("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/scim+json\r\n"
                       "Content-Length: 2\r\nConnection: close\r\n\r\n{}",
                       check_unauthorised);
}

Test(scim_sink, connection_refused_is_retry)
{
    struct sk_error err = {0};
    cr_assert_eq(open_with(NULL, "http://127.0.0.1:9/v2", &err), 0, "%s", err.msg);
    struct ids x;
    new_ids(&x);
    add_student(&x, 0, T1, "Alva", NULL);
    apply_all();
    cr_assert_eq(batch.out[0].kind, SK_RETRY);
    cr_assert_eq(batch.out[0].err.cls, SK_ERR_RETRIABLE, "%s", batch.out[0].err.msg);
    cr_assert_eq(stored_next(), -1, "an offset stored past a record left for retry");
}

/* An OAuth2 token endpoint and a SCIM server that wants its token. */
static const char *oauth_answer(struct canned *c, const char *req)
{
    static const char token[] =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
        "Content-Length: 43\r\n\r\n{\"access_token\":\"tok-42\",\"expires_in\":3600}";
    static const char bad_client[] =
        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nConnection: close\r\n"
        "Content-Length: 26\r\n\r\n{\"error\":\"invalid_client\"}";
    static const char unauthorised[] =
        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    static const char empty[] =
        "HTTP/1.1 200 OK\r\nContent-Type: application/scim+json\r\nConnection: close\r\n"
        "Content-Length: 33\r\n\r\n{\"totalResults\":0,\"Resources\":[]}";
    static const char created[] =
        "HTTP/1.1 201 Created\r\nContent-Type: application/scim+json\r\nConnection: close\r\n"
        "Content-Length: 12\r\n\r\n{\"id\":\"u-1\"}";
    if (strncmp(req, "POST /token", 11) == 0) {
        c->token_requests++;
        bool ok = strstr(req, "grant_type=client_credentials") && strstr(req, "client_id=cid") &&
                  strstr(req, "client_secret=p%40ss") && strstr(req, "scope=scim.write");
        return ok ? token : bad_client;
    }
    if (!strstr(req, "Authorization: Bearer tok-42"))
        return unauthorised;
    c->bearer_ok++;
    if (strncmp(req, "GET /v2/Users?filter=", 21) == 0)
        return empty;
    if (strncmp(req, "POST /v2/Users ", 15) == 0)
        return created;
    return unauthorised;
}

static void check_oauth(const char *url, struct canned *c)
{
    struct sk_error err = {0};
    char *yaml = sk_asprintf("auth: oauth2\ntoken_url: %s/token\nclient_id: cid\n"
                             "client_secret: p@ss\nscope: scim.write\n",
                             url);
    char *base = sk_asprintf("%s/v2", url);
    cr_assert_eq(open_with(yaml, base, &err), 0, "%s", err.msg);
    free(yaml);
    free(base);
    struct ids x;
    new_ids(&x);
    add_student(&x, 0, T1, "Alva", NULL);
    add_student(&x, 1, T1, "Bo", NULL);
    apply_all();
    assert_all_applied();
    cr_assert_eq(c->token_requests, 1, "the token is cached: %d token requests", c->token_requests);
    cr_assert_eq(c->bearer_ok, 4, "lookup + create per student with the token: %d", c->bearer_ok);
}

Test(scim_sink, oauth2_client_credentials_token_is_fetched_once)
{
    struct canned c = {.answer = oauth_answer};
    with_server(&c, check_oauth);
}

static void check_oauth_refused(const char *url, struct canned *c)
{
    struct sk_error err = {0};
    char *yaml = sk_asprintf("auth: oauth2\ntoken_url: %s/token\nclient_id: wrong\n"
                             "client_secret: nope-secret\n",
                             url);
    char *base = sk_asprintf("%s/v2", url);
    cr_assert_eq(open_with(yaml, base, &err), 0, "%s", err.msg);
    free(yaml);
    free(base);
    struct ids x;
    new_ids(&x);
    add_student(&x, 0, T1, "Alva", NULL);
    cr_assert_eq(skt_recs_apply(sink, &batch, &err), -1);
    cr_assert_eq(err.cls, SK_ERR_FATAL, "%s", err.msg);
    cr_assert(strstr(err.msg, "invalid_client"), "%s", err.msg);
    cr_assert_null(strstr(err.msg, "nope-secret"), "the secret leaked into: %s", err.msg);
}

Test(scim_sink, oauth2_refused_credentials_are_fatal)
{
    struct canned c = {.answer = oauth_answer};
    with_server(&c, check_oauth_refused);
}

/* ---- servers that bend the RFC (hostile input #16) ------------------------ */

#define SCIM_OK(status, body)                                                                      \
    "HTTP/1.1 " status "\r\nContent-Type: application/scim+json\r\nConnection: close\r\n\r\n" body

/* A server that ignores filter=: every lookup answers with everyone it has. */
static const char *ignores_filter(struct canned *c, const char *req)
{
    if (strncmp(req, "GET ", 4) == 0)
        return SCIM_OK(
            "200 OK",
            "{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:ListResponse\"],"
            "\"totalResults\":1,\"Resources\":[{\"schemas\":[\"urn:ietf:params:scim:schemas:core:"
            "2.0:User\"],\"id\":\"u-other\",\"externalId\":\"11111111-2222-4333-8444-"
            "555555555555\","
            "\"userName\":\"someone.else\"}]}");
    c->bearer_ok++; /* here: a write, which must never come */
    return SCIM_OK("201 Created", "{\"id\":\"u-new\"}");
}

/* Opens the sink on the loopback server at url (its /v2) with extra options. */
static void open_on(const char *url, const char *yaml)
{
    struct sk_error err = {0};
    char *base = sk_asprintf("%s/v2", url);
    cr_assert_eq(open_with(yaml, base, &err), 0, "%s", err.msg);
    free(base);
}

/* Opens the sink on the loopback server at url and adds Alva (and Bo when two). */
static void open_on_with_students(const char *url, int students)
{
    open_on(url, NULL);
    struct ids x;
    new_ids(&x);
    add_student(&x, 0, T1, "Alva", NULL);
    if (students > 1)
        add_student(&x, 1, T1, "Bo", NULL);
}

/* The batch of two students fails as a whole, FATAL with c->want_text in its
 * reason, and no write (counted in bearer_ok by the answer) reached the server. */
static void check_stops(const char *url, struct canned *c)
{
    struct sk_error err = {0};
    open_on_with_students(url, 2);
    cr_assert_eq(skt_recs_apply(sink, &batch, &err), -1, "the batch must fail as a whole");
    cr_assert_eq(err.cls, SK_ERR_FATAL, "%s", err.msg);
    cr_assert(strstr(err.msg, c->want_text), "%s", err.msg);
    cr_assert_eq(c->bearer_ok, 0, "%d write(s) reached the server", c->bearer_ok);
}

/* Regression: against such a server a sync made 1 POST and then 219 PUTs to the
 * same user (one account for everyone), and said "706 records applied". */
Test(scim_sink, a_server_that_ignores_filter_fails_the_sink_before_any_write)
{
    struct canned c = {.answer = ignores_filter, .want_text = "ignores filter="};
    with_server(&c, check_stops);
}

/* A server that answers 201 with the resource, minus an attribute it dropped. */
static const char *drops_name(struct canned *c, const char *req)
{
    static char out[8192];
    if (strncmp(req, "GET ", 4) == 0)
        return SCIM_OK("200 OK",
                       "{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:ListResponse\"],"
                       "\"totalResults\":0,\"Resources\":[]}");
    const char *body = strstr(req, "\r\n\r\n");
    cJSON *doc = body ? cJSON_Parse(body + 4) : NULL;
    cJSON_DeleteItemFromObject(doc, "name");
    cJSON_AddStringToObject(doc, "id", "u-1");
    char *text = cJSON_PrintUnformatted(doc);
    snprintf(out, sizeof(out), SCIM_OK("201 Created", "%s"), text ? text : "{}");
    free(text);
    cJSON_Delete(doc);
    c->bearer_ok++;
    return out;
}

static void check_drops_name(const char *url, struct canned *c)
{
    struct sk_error err = {0};
    open_on_with_students(url, 1);
    cr_assert_eq(skt_recs_apply(sink, &batch, &err), 0, "%s", err.msg);
    cr_assert_eq(c->bearer_ok, 1, "one POST");
    cr_assert_eq(batch.out[0].kind, SK_REJECTED, "counted as applied although dropped");
    cr_assert(strstr(batch.out[0].err.msg, "lacks \"name\""), "%s", batch.out[0].err.msg);
}

Test(scim_sink, an_attribute_the_server_drops_silently_is_reported_not_applied)
{
    struct canned c = {.answer = drops_name};
    with_server(&c, check_drops_name);
}

/* ---- servers stricter and looser than scim2-server ------------------------------ */

#define SCIM_LIST "urn:ietf:params:scim:api:messages:2.0:ListResponse"
#define SCIM_ERROR_BODY(type, detail)                                                              \
    "{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:Error\"],\"scimType\":\"" type          \
    "\",\"detail\":\"" detail "\"}"

/* The externalId a lookup asks for (the quoted UUID of its filter), into out. */
static const char *req_uuid(const char *req, char out[37])
{
    const char *q = strstr(req, "%22");
    snprintf(out, 37, "%s", q ? q + 3 : "");
    return out;
}

static const char *req_body(const char *req)
{
    const char *b = strstr(req, "\r\n\r\n");
    return b ? b + 4 : "";
}

/* A server of one User (SCIM id u-1) whose quirks the test sets. */
static struct {
    long patch_status;   /* PATCH answered with this status (0: like PUT) */
    bool created_bare;   /* 201 with a Location and no body */
    long needs_version;  /* a write without If-Match: the version is answered this (412, 428) */
    bool etag_header;    /* the version in an ETag header too, not only in meta.version */
    int version;         /* W/"<version>" of the User, counted up by each write */
    char user[8192];     /* the User it holds, "" if none */
    char last_put[8192]; /* the body of the last PUT */
} fake;

/* fake.user with its meta.version. */
static const char *fake_user_now(void)
{
    static char text[8500];
    cJSON *doc = cJSON_Parse(fake.user);
    cJSON_DeleteItemFromObject(doc, "meta");
    cJSON *meta = cJSON_AddObjectToObject(doc, "meta");
    char v[32];
    snprintf(v, sizeof(v), "W/\"%d\"", fake.version);
    cJSON_AddStringToObject(meta, "version", v);
    char *t = cJSON_PrintUnformatted(doc);
    snprintf(text, sizeof(text), "%s", t ? t : "");
    free(t);
    cJSON_Delete(doc);
    return text;
}

static const char *fake_server(struct canned *c, const char *req)
{
    static char out[20000];
    if (fake.needs_version && strncmp(req, "GET /v2/Users/u-1 ", 18) == 0) {
        char etag[64] = "";
        if (fake.etag_header)
            snprintf(etag, sizeof(etag), "ETag: W/\"%d\"\r\n", fake.version);
        snprintf(out, sizeof(out),
                 "HTTP/1.1 200 OK\r\n%sContent-Type: application/scim+json\r\n"
                 "Connection: close\r\n\r\n%s",
                 etag, fake.user[0] ? fake_user_now() : "{}");
        return out;
    }
    if (fake.needs_version && strncmp(req, "GET ", 4) != 0 && strncmp(req, "POST ", 5) != 0) {
        char want[64];
        snprintf(want, sizeof(want), "If-Match: W/\"%d\"\r\n", fake.version);
        if (!strcasestr(req, want)) {
            snprintf(out, sizeof(out),
                     "HTTP/1.1 %ld Precondition\r\nContent-Type: application/scim+json\r\n"
                     "Connection: close\r\n\r\n" SCIM_ERROR_BODY("", "If-Match required"),
                     fake.needs_version);
            return out;
        }
        fake.version++;
    }
    if (strncmp(req, "PATCH /v2/Users/u-1 ", 20) == 0 && !fake.patch_status) {
        snprintf(out, sizeof(out), SCIM_OK("200 OK", "%s"), fake_user_now());
        return out;
    }
    if (strncmp(req, "DELETE /v2/Users/u-1 ", 21) == 0) {
        fake.user[0] = '\0';
        return "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
    }
    if (strncmp(req, "GET /v2/Users?", 14) == 0) {
        snprintf(out, sizeof(out),
                 SCIM_OK("200 OK", "{\"schemas\":[\"" SCIM_LIST "\"],\"totalResults\":%d,"
                                   "\"Resources\":[%s]}"),
                 fake.user[0] ? 1 : 0, fake.user);
        return out;
    }
    if (strncmp(req, "PATCH ", 6) == 0 && fake.patch_status) {
        snprintf(out, sizeof(out),
                 "HTTP/1.1 %ld Not Implemented\r\nContent-Type: application/scim+json\r\n"
                 "Connection: close\r\n\r\n" SCIM_ERROR_BODY("", "PATCH is not supported"),
                 fake.patch_status);
        return out;
    }
    bool post = strncmp(req, "POST /v2/Users ", 15) == 0;
    if (post || strncmp(req, "PUT /v2/Users/u-1 ", 18) == 0) {
        cJSON *doc = cJSON_Parse(req_body(req));
        cJSON_DeleteItemFromObject(doc, "id");
        cJSON_AddStringToObject(doc, "id", "u-1");
        char *text = cJSON_PrintUnformatted(doc);
        snprintf(fake.user, sizeof(fake.user), "%s", text ? text : "");
        if (!post)
            snprintf(fake.last_put, sizeof(fake.last_put), "%s", req_body(req));
        free(text);
        cJSON_Delete(doc);
        if (post && fake.created_bare)
            return "HTTP/1.1 201 Created\r\nLocation: http://127.0.0.1/v2/Users/u-1\r\n"
                   "Content-Length: 0\r\nConnection: close\r\n\r\n";
        snprintf(out, sizeof(out), SCIM_OK("%s", "%s"), post ? "201 Created" : "200 OK",
                 fake.user);
        return out;
    }
    return SCIM_OK("404 Not Found", SCIM_ERROR_BODY("", "no such resource"));
}

/* On the fake server with extra options: Alva created, renamed Alva-Li, and
 * deleted when `deleted`, a batch each, every one applied. */
static void fake_rounds(const char *url, const char *yaml, bool deleted)
{
    open_on(url, yaml);
    struct ids x;
    new_ids(&x);
    for (int round = 0; round < (deleted ? 3 : 2); round++) {
        skt_recs_clear(&batch);
        if (round < 2)
            add_student(&x, 0, round ? T2 : T1, round ? "Alva-Li" : "Alva", NULL);
        else
            add_tombstone("Person", x.s[0]);
        apply_all();
        assert_all_applied();
    }
}

static void check_created_bare(const char *url, struct canned *c)
{
    fake_rounds(url, NULL, false);
    cr_assert(strstr(c->seen, "PUT /v2/Users/u-1\n"), "the change did not reach u-1:\n%s",
              c->seen);
    cr_assert_null(strstr(strstr(c->seen, "POST") + 4, "POST"), "created twice:\n%s", c->seen);
}

/* Before: "create: HTTP 201 without an id" (retry), and the user's next try
 * waited for the driver's backoff before its lookup found it. */
Test(scim_sink, a_created_answer_without_a_body_is_found_by_external_id)
{
    struct canned c = {.answer = fake_server};
    fake.created_bare = true;
    with_server(&c, check_created_bare);
}

static void check_no_patch(const char *url, struct canned *c)
{
    fake_rounds(url, "update: patch\non_delete: deactivate\n", true);
    cJSON *put = cJSON_Parse(fake.last_put);
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(put, "active")),
              "not deactivated with PUT: %s", fake.last_put);
    cr_assert(strstr(fake.last_put, "Alva-Li"), "the PUT lost the user's attributes: %s",
              fake.last_put);
    cJSON_Delete(put);
    cr_assert_null(strstr(strstr(c->seen, "PATCH") + 5, "PATCH"),
                   "PATCH asked again after the server refused it:\n%s", c->seen);
}

/* Before: 501 was retried for ever ("retrying"), 405 dead-lettered every update. */
Test(scim_sink, a_server_without_patch_is_updated_and_deactivated_with_put)
{
    struct canned c = {.answer = fake_server};
    fake.patch_status = 501;
    with_server(&c, check_no_patch);
}

Test(scim_sink, a_server_that_refuses_patch_with_405_is_updated_with_put)
{
    struct canned c = {.answer = fake_server};
    fake.patch_status = 405;
    with_server(&c, check_no_patch);
}

/* Lookups answered from c->pages (%s: the externalId asked for); every write
 * is counted in bearer_ok. */
static const char *lookup_pages(struct canned *c, const char *req)
{
    static char out[4096];
    char uuid[37];
    if (strncmp(req, "GET ", 4) != 0) {
        c->bearer_ok++;
        return SCIM_OK("201 Created", "{\"id\":\"u-1\"}");
    }
    const char *page = c->pages[strstr(req, "startIndex=2") && c->pages[1] ? 1 : 0];
    snprintf(out, sizeof(out), page, req_uuid(req, uuid));
    return out;
}

/* Alva's record has the outcome c->want, c->want_text in its reason, and no
 * write (counted in bearer_ok by the answer) reached the server. */
static void check_no_write(const char *url, struct canned *c)
{
    open_on_with_students(url, 1);
    apply_all();
    cr_assert_eq(batch.out[0].kind, c->want, "outcome %d: %s", batch.out[0].kind,
                 batch.out[0].err.msg);
    cr_assert(strstr(batch.out[0].err.msg, c->want_text), "%s", batch.out[0].err.msg);
    cr_assert_eq(c->bearer_ok, 0, "a write reached the server:\n%s", c->seen);
}

/* Before: no Resources read as "no such user", and the sink created one (a
 * duplicate of the user the server may well hold). */
Test(scim_sink, a_lookup_answered_without_a_list_response_writes_nothing)
{
    struct canned c = {
        .answer = lookup_pages,
        .want = SK_RETRY,
        .want_text = "ListResponse",
        /* a proxy's sign-in page */
        .pages = {"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n"
                  "<html><head><title>Sign in</title></head><body>%s</body></html>"}};
    with_server(&c, check_no_write);
}

/* Page n of a lookup's two matches, one a page. */
#define SCIM_PAGE_OF_2(n)                                                                          \
    SCIM_OK("200 OK", "{\"schemas\":[\"" SCIM_LIST "\"],\"totalResults\":2,\"itemsPerPage\":1,"    \
                      "\"startIndex\":" n ",\"Resources\":[{\"id\":\"u-" n "\",\"externalId\":"  \
                      "\"%s\",\"userName\":\"x" n "\"}]}")

/* Before: the first page's u-1 was adopted and overwritten; u-2, on page 2, never seen. */
Test(scim_sink, a_paged_lookup_with_two_matches_is_rejected_with_both_ids)
{
    struct canned c = {.answer = lookup_pages,
                       .want = SK_REJECTED,
                       .want_text = "u-1, u-2",
                       .pages = {SCIM_PAGE_OF_2("1"), SCIM_PAGE_OF_2("2")}};
    with_server(&c, check_no_write);
}

/* Before: every person was dead-lettered with "HTTP 400: invalidFilter". */
Test(scim_sink, a_server_that_cannot_filter_on_external_id_stops_the_sink)
{
    struct canned c = {
        .response = "HTTP/1.1 400 Bad Request\r\nContent-Type: application/scim+json\r\n"
                    "Connection: close\r\n\r\n" SCIM_ERROR_BODY(
                        "invalidFilter", "Filtering on externalId is not supported"),
        .want_text = "HTTP 400: invalidFilter"};
    with_server(&c, check_stops);
}

/* A url that names no SCIM service (a typo, /scim/v2 left out). Before: every
 * person dead-lettered with "lookup by externalId: HTTP 404". */
Test(scim_sink, a_lookup_answered_404_stops_the_sink)
{
    struct canned c = {.response = "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n"
                                   "Connection: close\r\n\r\n<html><title>Not Found</title></html>",
                       .want_text = "HTTP 404: Not Found"};
    with_server(&c, check_stops);
}

/* Before: a match without an id read as "no such user", and the sink created one. */
Test(scim_sink, a_lookup_match_without_an_id_is_rejected_not_created_again)
{
    struct canned c = {
        .answer = lookup_pages,
        .want = SK_REJECTED,
        .want_text = "without an id",
        .pages = {SCIM_OK("200 OK", "{\"schemas\":[\"" SCIM_LIST "\"],\"totalResults\":1,"
                                    "\"Resources\":[{\"externalId\":\"%s\","
                                    "\"userName\":\"x\"}]}")}};
    with_server(&c, check_no_write);
}

static void check_html_500(const char *url, struct canned *c)
{
    open_on_with_students(url, 1);
    apply_all();
    cr_assert_eq(batch.out[0].kind, SK_RETRY, "%s", batch.out[0].err.msg);
    cr_assert(strstr(batch.out[0].err.msg, "HTTP 500") &&
                  strstr(batch.out[0].err.msg, "Internal Server Error"),
              "%s", batch.out[0].err.msg);
    cr_assert_null(strchr(batch.out[0].err.msg, '<'), "markup in: %s", batch.out[0].err.msg);
}

/* Before: the reason was the page's first 200 bytes, "<!DOCTYPE html>\n<html lang=...". */
Test(scim_sink, a_500_with_an_html_page_is_retry_with_its_title)
{
    with_canned_server("HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\n"
                       "Connection: close\r\n\r\n<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n"
                       "<meta charset=\"utf-8\"><style>body{font-family:sans-serif;margin:0;"
                       "padding:0;background:#fff;color:#333}h1{font-size:2em}</style>\n"
                       "<title>500 Internal Server Error</title></head><body><h1>Oops</h1>"
                       "</body></html>",
                       check_html_500);
}

/* METHOD base+path with body behind the sink's back; the parsed answer (caller frees). */
static cJSON *http_write(const char *method, const char *path, const char *body)
{
    char *url = sk_asprintf("%s%s", scim_url(), path), *out = NULL;
    long status = skt_http(method, url, body, 10, &out);
    cr_assert(status >= 200 && status < 300, "%s %s: HTTP %ld: %s", method, url, status,
              out ? out : "");
    cJSON *json = cJSON_Parse(out);
    free(out);
    free(url);
    return json;
}

/* An account made in the IdP before skolsync ran: same userName, no externalId. */
Test(scim_sink, an_account_made_by_hand_is_rejected_until_it_carries_the_external_id)
{
    struct ids x;
    new_ids(&x);
    open_sink(NULL);
    char *body = sk_asprintf("{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:User\"],"
                             "\"userName\":\"%s.S0@edu.example.se\"}",
                             tag);
    cJSON *made = http_write("POST", "/Users", body);
    free(body);
    char *id = sk_strdup(s_of(made, "id"));
    cJSON_Delete(made);
    add_student(&x, 0, T1, "Alva", NULL);
    apply_all();
    cr_assert_eq(batch.out[0].kind, SK_REJECTED, "%s", batch.out[0].err.msg);
    const char *msg = batch.out[0].err.msg;
    cr_assert(strstr(msg, "409") && strstr(msg, "uniqueness") && strstr(msg, x.s[0]),
              "the reason does not say how to adopt it: %s", msg);
    /* the operator links the account to the person; the next change adopts it */
    char *path = sk_asprintf("/Users/%s", id);
    body = sk_asprintf("{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:PatchOp\"],"
                       "\"Operations\":[{\"op\":\"replace\",\"path\":\"externalId\","
                       "\"value\":\"%s\"}]}",
                       x.s[0]);
    cJSON_Delete(http_write("PATCH", path, body));
    free(body);
    apply_all();
    assert_all_applied();
    char *now = scim_id_of(x.s[0]);
    cr_assert_str_eq(now, id, "not adopted: a second account was made");
    cJSON *u = one("Users", x.s[0]);
    assert_str(cJSON_GetObjectItemCaseSensitive(u, "name"), "givenName", "Alva");
    cJSON_Delete(u);
    free(now);
    free(path);
    free(id);
}

/* A user deleted by hand between two syncs: the PATCH and the deactivation see 404. */
Test(scim_sink, a_user_deleted_by_hand_is_patched_again_or_left_deleted)
{
    struct ids x;
    change_after_deleted_by_hand("update: patch\non_delete: deactivate\n", &x);
    delete_by_hand(x.s[0]);
    skt_recs_clear(&batch);
    add_tombstone("Person", x.s[0]);
    apply_all();
    assert_all_applied();
    cJSON *u = one("Users", x.s[0]);
    cr_assert_null(u, "a deactivation of a user deleted by hand made it again");
}

static void check_if_match(const char *url, struct canned *c, const char *yaml)
{
    fake_rounds(url, yaml, true);
    cr_assert_eq(fake.version, 2, "%d writes with the version in If-Match, expected 2:\n%s",
                 fake.version, c->seen);
}

static void check_if_match_put(const char *url, struct canned *c)
{
    check_if_match(url, c, NULL);
    cr_assert_eq(fake.user[0], '\0', "not deleted:\n%s", c->seen);
}

/* Before: the PUT's and the DELETE's 428 dead-lettered the change and the delete. */
Test(scim_sink, a_server_that_wants_if_match_gets_the_version_of_its_etag)
{
    struct canned c = {.answer = fake_server};
    fake.needs_version = 428;
    fake.etag_header = true;
    with_server(&c, check_if_match_put);
}

static void check_if_match_patch(const char *url, struct canned *c)
{
    check_if_match(url, c, "update: patch\non_delete: deactivate\n");
}

/* The same with PATCH and a deactivation, 412, and the version only in meta.version. */
Test(scim_sink, a_server_that_wants_if_match_gets_the_version_of_its_meta)
{
    struct canned c = {.answer = fake_server};
    fake.needs_version = 412;
    with_server(&c, check_if_match_patch);
}
