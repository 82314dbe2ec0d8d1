/*
 * test_ss12000_api_scope.c: the hub's clients and scopes
 * (docs/ss12000-api-sink.md, "Clients and scopes"), against the hub
 * in-process (tests/helpers/skt_hub.h):
 *
 *   organisations   a client scoped to one school sees exactly what belongs
 *                   to it (its sub-units, persons through enrolments, duties
 *                   and as guardians, groups, activities, calendar events)
 *                   in lists, by id (404 otherwise) and deletedEntities, and
 *                   nothing of another school; a person that arrived before
 *                   its school belongs to it; hub_client_sees agrees
 *   attributes      a missing attribute group removes its fields (civic
 *                   numbers, private e-mail, ...) or its types (403)
 *   privacy         per client: protected persons minimal, absent or in
 *                   full; drop_fields; a person absent for a client leaves
 *                   no trace (deletedEntities, page shapes, webhooks)
 *   relationships   relationship.* reads no duty, placement, group or
 *                   child outside the client's organisations
 *   upgrade         a state from before scopes gets its links at open
 *   tokens          a wrong token 401; OAuth2 client credentials at
 *                   POST /token: good, wrong secret, wrong grant, Basic and
 *                   form credentials, an expired access token 401
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <sqlite3.h>

#include "buf.h"
#include "privacy.h"
#include "ss12000api/hub.h"
#include "skt_hub.h"
#include "util.h"

/* Organisations: the municipality K with schools A and B; A1 is a unit of A. */
#define K "00000000-0000-4000-8000-00000000000a"
#define A "00000000-0000-4000-8000-0000000000a1"
#define A1 "00000000-0000-4000-8000-0000000000a2"
#define B "00000000-0000-4000-8000-0000000000b1"
/* Persons: a student of A1, a student of B, a teacher of A (a duty), the A student's guardian. */
#define PA "00000000-0000-4000-8000-000000000101"
#define PB "00000000-0000-4000-8000-000000000102"
#define TA "00000000-0000-4000-8000-000000000103"
#define GA "00000000-0000-4000-8000-000000000104"
#define DA "00000000-0000-4000-8000-000000000201"
#define GRA "00000000-0000-4000-8000-000000000301"
#define GRB "00000000-0000-4000-8000-000000000302"
#define ACTA "00000000-0000-4000-8000-000000000401"
#define ACTB "00000000-0000-4000-8000-000000000402"
#define CEA "00000000-0000-4000-8000-000000000501"
#define CEB "00000000-0000-4000-8000-000000000502"

#define META "\"meta\":{\"created\":\"" T1 "\",\"modified\":\"" T1 "\"}"

static const char *const scoped_clients =
    "  lms: {token: lms-token-0123456789, entities: all, protected_identities: allow}\n"
    "  school_a: {token: school-a-token-0123456789, entities: all, organisations: [" A "],\n"
    "             protected_identities: allow}\n";

static void add(const char *entity, const char *json)
{
    skt_recs_add(&skt_hub_batch, entity, NULL, json, NULL);
}

static void add_org(const char *id, const char *parent)
{
    char *json = parent ? skt_fmt("{\"id\":\"%s\"," META ",\"displayName\":\"o\","
                                  "\"organisationType\":\"Skolenhet\","
                                  "\"parentOrganisation\":{\"id\":\"%s\"}}",
                                  id, parent)
                        : skt_fmt("{\"id\":\"%s\"," META ",\"displayName\":\"o\","
                                  "\"organisationType\":\"Huvudman\"}",
                                  id);
    add("Organisation", json);
    free(json);
}

static void add_person(const char *id, const char *enroled_at, const char *guardian)
{
    struct sk_buf b = {0};
    sk_buf_printf(&b, "{\"id\":\"%s\"," META ",\"givenName\":\"P\",\"familyName\":\"Q\"", id);
    if (enroled_at)
        sk_buf_printf(&b, ",\"enrolments\":[{\"enroledAt\":{\"id\":\"%s\"},\"schoolType\":\"GR\"}]",
                      enroled_at);
    if (guardian)
        sk_buf_printf(&b, ",\"responsibles\":[{\"person\":{\"id\":\"%s\"}}]", guardian);
    sk_buf_puts(&b, "}");
    add("Person", b.p);
    sk_buf_free(&b);
}

/* Two schools and what belongs to each; persons first, their organisations after. */
static void two_schools(void)
{
    add_person(PA, A1, GA);
    add_person(PB, B, NULL);
    add_person(TA, NULL, NULL);
    add_person(GA, NULL, NULL);
    skt_hub_apply();
    add_org(K, NULL);
    add_org(A, K);
    add_org(A1, A);
    add_org(B, K);
    add("Duty", "{\"id\":\"" DA "\"," META ",\"person\":{\"id\":\"" TA "\"},\"dutyAt\":{\"id\":\"" A
                "\"},\"dutyRole\":\"Lärare\"}");
    add("Group", "{\"id\":\"" GRA "\"," META ",\"displayName\":\"7A\",\"groupType\":\"Klass\","
                 "\"organisation\":{\"id\":\"" A "\"}}");
    add("Group", "{\"id\":\"" GRB "\"," META ",\"displayName\":\"7B\",\"groupType\":\"Klass\","
                 "\"organisation\":{\"id\":\"" B "\"}}");
    add("Activity", "{\"id\":\"" ACTA "\"," META ",\"displayName\":\"Ma\",\"organisation\":{\"id\":"
                    "\"" A "\"}}");
    add("Activity", "{\"id\":\"" ACTB "\"," META ",\"displayName\":\"Sv\",\"organisation\":{\"id\":"
                    "\"" B "\"}}");
    add("CalendarEvent", "{\"id\":\"" CEA "\"," META ",\"activity\":{\"id\":\"" ACTA "\"},"
                         "\"startTime\":\"" T1 "\",\"endTime\":\"" T2 "\"}");
    add("CalendarEvent", "{\"id\":\"" CEB "\"," META ",\"activity\":{\"id\":\"" ACTB "\"},"
                         "\"startTime\":\"" T1 "\",\"endTime\":\"" T2 "\"}");
    skt_hub_apply();
}

/* ids (comma-separated, freed here) sorted; caller frees. */
static char *sorted(char *ids)
{
    size_t n = 0;
    char *v[64], *save = NULL;
    for (char *t = strtok_r(ids, ",", &save); t && n < 64; t = strtok_r(NULL, ",", &save))
        v[n++] = t;
    for (size_t i = 1; i < n; i++)
        for (size_t k = i; k > 0 && strcmp(v[k - 1], v[k]) > 0; k--) {
            char *x = v[k];
            v[k] = v[k - 1];
            v[k - 1] = x;
        }
    struct sk_buf b = {0};
    for (size_t i = 0; i < n; i++)
        sk_buf_printf(&b, "%s%s", i ? "," : "", v[i]);
    free(ids);
    return b.p ? sk_buf_take(&b) : sk_strdup("");
}

/* The ids of a whole listing, sorted, comma-separated; caller frees. */
static char *listed(const char *path, const char *authorization)
{
    cJSON *page = skt_hub_get_json(path, authorization, 200);
    cr_assert_null(skt_hub_token(page), "one page expected");
    char *ids = skt_hub_ids(page);
    cJSON_Delete(page);
    return sorted(ids);
}

static void expect_list(const char *path, const char *authorization, const char *want)
{
    char *got = listed(path, authorization);
    cr_assert_str_eq(got, want, "%s", path);
    free(got);
}

#define SA "Bearer school-a-token-0123456789"

/* hub_client_sees (the webhooks' question) on the open hub, the type by name. */
static bool sees(const char *client, const char *type, const char *id)
{
    return hub_client_sees(skt_hub->priv, client, sk_entity_by_name(type), id);
}

/* Pages of one through path's page tokens: the ids served, in order; caller frees. */
static char *walked(const char *path, const char *authorization)
{
    struct sk_buf all = {0};
    char *next = skt_fmt("%s?limit=1", path);
    for (int pages = 0; next && pages < 50; pages++) {
        cJSON *page = skt_hub_get_json(next, authorization, 200);
        char *ids = skt_hub_ids(page);
        if (*ids)
            sk_buf_printf(&all, "%s%s", all.len ? "," : "", ids);
        free(ids);
        free(next);
        next = NULL;
        if (skt_hub_token(page)) {
            char *t = skt_hub_escape(skt_hub_token(page));
            next = skt_fmt("%s?limit=1&pageToken=%s", path, t);
            free(t);
        }
        cJSON_Delete(page);
    }
    cr_assert_null(next, "more than 50 pages");
    return all.p ? sk_buf_take(&all) : sk_strdup("");
}

Test(ss12000_api_scope, a_school_client_sees_exactly_its_school, .fini = skt_hub_finish,
     .timeout = 60)
{
    skt_hub_open_clients(scoped_clients, NULL);
    two_schools();
    /* A and its unit A1, not the municipality above it nor school B. */
    expect_list("/organisations", SA, A "," A1);
    expect_list("/organisations", LMS, K "," A "," A1 "," B);
    /* Persons: PA (enrolled at A1, which arrived after PA), TA (a duty at A), GA (PA's
     * guardian); not PB. */
    expect_list("/persons", SA, PA "," TA "," GA);
    expect_list("/duties", SA, DA);
    expect_list("/groups", SA, GRA);
    expect_list("/activities", SA, ACTA);
    expect_list("/calendarEvents", SA, CEA);
    /* Paging through the scope: each of its persons once, in the hub's order. */
    char *paged = walked("/persons", SA);
    cr_assert_str_eq(paged, PA "," TA "," GA, "%s", paged);
    free(paged);
    /* By id: what is not the client's is not found, never forbidden. */
    skt_hub_assert_error("/persons/" PB, SA, 404, "not_found");
    skt_hub_assert_error("/groups/" GRB, SA, 404, "not_found");
    skt_hub_assert_error("/organisations/" K, SA, 404, "not_found");
    cJSON *pa = skt_hub_get_json("/persons/" PA, SA, 200);
    cr_assert_str_eq(skt_hub_str(pa, "id", NULL), PA);
    cJSON_Delete(pa);
    /* The subscriptions helper's question gets the same answers. */
    cr_assert(sees("school_a", "Person", PA));
    cr_assert(sees("school_a", "Person", TA));
    cr_assert_not(sees("school_a", "Person", PB));
    cr_assert_not(sees("school_a", "CalendarEvent", CEB));
    cr_assert(sees("lms", "Person", PB));
    cr_assert_not(sees("nobody", "Person", PA));
    /* The duty goes: the teacher no longer belongs to A. */
    skt_recs_add(&skt_hub_batch, "Duty", DA, NULL, NULL);
    skt_hub_apply();
    expect_list("/persons", SA, PA "," GA);
    /* Deletions: of the two students deleted, A's client learns of its own only. */
    skt_recs_add(&skt_hub_batch, "Person", PA, NULL, NULL);
    skt_recs_add(&skt_hub_batch, "Person", PB, NULL, NULL);
    skt_hub_apply();
    cJSON *del = skt_hub_get_json("/deletedEntities?entities=Person,Duty", SA, 200);
    char *text = cJSON_PrintUnformatted(skt_hub_data(del));
    cr_assert_str_eq(text, "{\"persons\":[\"" PA "\"],\"duties\":[\"" DA "\"]}", "%s", text);
    free(text);
    cJSON_Delete(del);
    /* A webhook about a deletion goes to whom the record belonged to. */
    cr_assert(sees("school_a", "Person", PA));
    cr_assert_not(sees("school_a", "Person", PB));
    del = skt_hub_get_json("/deletedEntities?entities=Person", LMS, 200);
    text = cJSON_PrintUnformatted(skt_hub_data(del));
    cr_assert_str_eq(text, "{\"persons\":[\"" PA "\",\"" PB "\"]}", "%s", text);
    free(text);
    cJSON_Delete(del);
}

/* A school moved under another organisation takes what belongs to it along. */
Test(ss12000_api_scope, descendants_follow_a_moved_unit, .fini = skt_hub_finish, .timeout = 60)
{
    skt_hub_open_clients(scoped_clients, NULL);
    two_schools();
    expect_list("/groups", SA, GRA);
    add_org(B, A); /* B becomes a unit of A */
    skt_hub_apply();
    expect_list("/groups", SA, GRA "," GRB);
    expect_list("/persons", SA, PA "," PB "," TA "," GA);
}

/* Closes the hub, runs sql on its state (an older version's, made by hand), opens it again. */
static void reopen_after(const char *sql, const char *clients)
{
    skt_sink_drop(&skt_hub);
    char *db_path = skt_fmt("%s/test-sink.db", skt_hub_dir);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(db_path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);
    free(db_path);
    skt_hub_open_clients(clients, NULL);
}

/* A state from before scopes (no links) gets them at open, from the stored documents. */
Test(ss12000_api_scope, links_are_made_at_open_for_an_older_state, .fini = skt_hub_finish,
     .timeout = 60)
{
    skt_hub_open_clients(scoped_clients, NULL);
    two_schools();
    reopen_after("DELETE FROM hub_link; DELETE FROM hub_meta WHERE key = 'links_version'",
                 scoped_clients);
    expect_list("/persons", SA, PA "," TA "," GA);
    expect_list("/calendarEvents", SA, CEA);
}

/* ---- attribute groups and privacy per client ------------------------------------------- */

#define PROT "00000000-0000-4000-8000-000000000601"
#define FULL "00000000-0000-4000-8000-000000000602"

static void add_full_persons(void)
{
    const char *rest = META ",\"givenName\":\"Ada\",\"familyName\":\"Q\",\"civicNo\":{\"value\":"
                            "\"200001011234\"},\"birthDate\":\"2000-01-01\",\"sex\":\"Kvinna\","
                            "\"emails\":[{\"value\":\"a@home.se\",\"type\":\"Privat\"},{\"value\":"
                            "\"a@skola.se\",\"type\":\"Skola elev\"}],\"phoneNumbers\":[{\"value\":"
                            "\"070\",\"type\":\"Mobil\"}],\"enrolments\":[{\"enroledAt\":{\"id\":"
                            "\"" A "\"},\"schoolType\":\"GR\"}]";
    char *json = skt_fmt("{\"id\":\"" FULL "\",%s}", rest);
    add("Person", json);
    free(json);
    json = skt_fmt("{\"id\":\"" PROT "\",%s,\"securityMarking\":\"Skyddad folkbokföring\"}", rest);
    add("Person", json);
    free(json);
    skt_hub_apply();
}

static bool has(const cJSON *doc, const char *field)
{
    return cJSON_GetObjectItemCaseSensitive(doc, field) != NULL;
}

static cJSON *person(const char *id, const char *authorization)
{
    char *path = skt_fmt("/persons/%s", id);
    cJSON *doc = skt_hub_get_json(path, authorization, 200);
    free(path);
    return doc;
}

Test(ss12000_api_scope, attribute_groups_remove_their_fields_and_types, .fini = skt_hub_finish,
     .timeout = 60)
{
    skt_hub_open_clients(
        "  lms: {token: lms-token-0123456789, entities: all, protected_identities: allow}\n"
        "  narrow: {token: narrow-token-0123456789, entities: all, attributes: [students,"
        " school_email, sex]}\n",
        NULL);
    add_full_persons();
    cJSON *p = person(FULL, "Bearer narrow-token-0123456789");
    cr_assert(has(p, "enrolments") && has(p, "sex") && has(p, "givenName"));
    cr_assert_not(has(p, "civicNo") || has(p, "birthDate") || has(p, "phoneNumbers"));
    const cJSON *emails = cJSON_GetObjectItemCaseSensitive(p, "emails");
    cr_assert_eq(cJSON_GetArraySize(emails), 1, "the private address is gone");
    cr_assert_str_eq(skt_hub_str(cJSON_GetArrayItem(emails, 0), "type", NULL), "Skola elev");
    cJSON_Delete(p);
    /* The same from a list. */
    cJSON *page = skt_hub_get_json("/persons", "Bearer narrow-token-0123456789", 200);
    const cJSON *x;
    cJSON_ArrayForEach(x, skt_hub_data(page))
    {
        cr_assert_not(has(x, "civicNo"));
    }
    cJSON_Delete(page);
    /* A client with every group sees it all. */
    p = person(FULL, LMS);
    cr_assert(has(p, "civicNo") && has(p, "birthDate") && has(p, "phoneNumbers"));
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(p, "emails")), 2);
    cJSON_Delete(p);
    /* Types of a missing group: forbidden like a type out of entities. */
    skt_hub_assert_error("/duties", "Bearer narrow-token-0123456789", 403, "forbidden");
    skt_hub_assert_error("/organisations", "Bearer narrow-token-0123456789", 403, "forbidden");
    cJSON_Delete(skt_hub_get_json("/duties", LMS, 200));
}

Test(ss12000_api_scope, protected_persons_per_client, .fini = skt_hub_finish, .timeout = 60)
{
    skt_hub_open_clients(
        "  full: {token: full-token-0123456789, entities: all, protected_identities: allow}\n"
        "  min: {token: min-token-0123456789, entities: all, drop_fields: [familyName]}\n"
        "  skip: {token: skip-token-0123456789, entities: all, protected_identities: skip}\n",
        NULL);
    add_full_persons();
    cJSON *p = person(PROT, "Bearer full-token-0123456789");
    cr_assert(has(p, "civicNo") && has(p, "givenName"));
    cJSON_Delete(p);
    /* minimal (the default): only what an account needs (proto/privacy.h). */
    p = person(PROT, "Bearer min-token-0123456789");
    cr_assert(has(p, "enrolments") && has(p, "securityMarking"));
    cr_assert_not(has(p, "civicNo") || has(p, "givenName") || has(p, "birthDate"));
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(p, "emails")), 1);
    cJSON_Delete(p);
    p = person(FULL, "Bearer min-token-0123456789");
    cr_assert(has(p, "givenName") && has(p, "civicNo"), "not protected: in full");
    cr_assert_not(has(p, "familyName"), "but for its drop_fields");
    cJSON_Delete(p);
    /* skip: absent, by id and in lists. */
    skt_hub_assert_error("/persons/" PROT, "Bearer skip-token-0123456789", 404, "not_found");
    expect_list("/persons", "Bearer skip-token-0123456789", FULL);
    expect_list("/persons", "Bearer full-token-0123456789", PROT "," FULL);
}

/* ---- tokens -------------------------------------------------------------------------------- */

#define OAUTH_CLIENTS                                                                              \
    "  vendor: {oauth2: {client_id: vendor-app, client_secret: vendor-secret-0123456789},\n"       \
    "           entities: [Group]}\n"                                                              \
    "  lms: {token: lms-token-0123456789, entities: all}\n"

struct answer {
    long status;
    char *body;
    char *www_authenticate;
};

static size_t collect(char *data, size_t size, size_t n, void *ctx)
{
    sk_buf_putn(ctx, data, size * n);
    return size * n;
}

static size_t header(char *data, size_t size, size_t n, void *ctx)
{
    char **www = ctx;
    if (size * n > 18 && strncasecmp(data, "WWW-Authenticate: ", 18) == 0) {
        free(*www);
        *www = sk_strndup(data + 18, strcspn(data + 18, "\r\n"));
    }
    return size * n;
}

/* POST form to /token, with user:password as HTTP Basic unless NULL. */
static struct answer post_token(const char *form, const char *basic)
{
    CURL *c = curl_easy_init();
    char *url = skt_fmt("%s/token", skt_hub->ops->target(skt_hub));
    struct sk_buf b = {0};
    struct answer a = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, form);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &a.www_authenticate);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    if (basic) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERPWD, basic);
    }
    cr_assert_eq(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a.status);
    curl_easy_cleanup(c);
    free(url);
    a.body = b.p ? sk_buf_take(&b) : sk_strdup("");
    return a;
}

static void answer_free(struct answer *a)
{
    free(a->body);
    free(a->www_authenticate);
}

/* The OAuth2 error of an answer (RFC 6749 §5.2). */
static void expect_oauth_error(struct answer a, long status, const char *error)
{
    cr_assert_eq(a.status, status, "%ld: %s", a.status, a.body);
    cJSON *j = cJSON_Parse(a.body);
    cr_assert_str_eq(skt_hub_str(j, "error", NULL), error);
    cJSON_Delete(j);
    answer_free(&a);
}

/* An access token from a good request; caller frees. */
static char *access_token(struct answer a, int64_t want_expires_in)
{
    cr_assert_eq(a.status, 200, "%s", a.body);
    cJSON *j = cJSON_Parse(a.body);
    cr_assert_str_eq(skt_hub_str(j, "token_type", NULL), "Bearer");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(j, "expires_in");
    cr_assert(cJSON_IsNumber(exp) && (int64_t)exp->valuedouble == want_expires_in);
    char *bearer = skt_fmt("Bearer %s", skt_hub_str(j, "access_token", NULL));
    cJSON_Delete(j);
    answer_free(&a);
    return bearer;
}

/* GET /groups with a bearer token, the body (caller frees). */
static char *curl_get_quiet(const char *authorization)
{
    char *body = NULL;
    cr_assert_eq(skt_hub_get("/groups", authorization, &body), 200);
    return body;
}

Test(ss12000_api_scope, oauth2_client_credentials, .fini = skt_hub_finish, .timeout = 60)
{
    skt_hub_open_clients(OAUTH_CLIENTS, "access_token_ttl: 1h\n");
    skt_hub_add_group(GRA);
    skt_hub_apply();
    /* Credentials in the form, then by HTTP Basic: both give a token that reads. */
    char *t1 = access_token(post_token("grant_type=client_credentials&client_id=vendor-app&"
                                       "client_secret=vendor-secret-0123456789",
                                       NULL),
                            3600);
    char *t2 = access_token(
        post_token("grant_type=client_credentials", "vendor-app:vendor-secret-0123456789"), 3600);
    expect_list("/groups", t1, GRA);
    expect_list("/groups", t2, GRA);
    skt_hub_assert_error("/persons", t1, 403, "forbidden"); /* its own scope */
    /* A token altered by one character is nobody's. */
    t1[strlen(t1) - 3] = t1[strlen(t1) - 3] == 'A' ? 'B' : 'A';
    skt_hub_assert_error("/groups", t1, 401, "unauthorized");
    /* Wrong secret, unknown client, wrong grant, nothing at all. */
    struct answer a = post_token("grant_type=client_credentials", "vendor-app:wrong-secret-0123");
    cr_assert_not_null(a.www_authenticate);
    cr_assert_not_null(strstr(a.www_authenticate, "Basic"), "%s", a.www_authenticate);
    expect_oauth_error(a, 401, "invalid_client");
    expect_oauth_error(post_token("grant_type=client_credentials&client_id=nobody&client_secret="
                                  "vendor-secret-0123456789",
                                  NULL),
                       401, "invalid_client");
    expect_oauth_error(post_token("grant_type=password", "vendor-app:vendor-secret-0123456789"),
                       400, "unsupported_grant_type");
    expect_oauth_error(post_token("client_id=vendor-app", NULL), 400, "invalid_request");
    expect_oauth_error(post_token("grant_type=client_credentials&grant_type=client_credentials",
                                  "vendor-app:vendor-secret-0123456789"),
                       400, "invalid_request");
    /* A static-token client has no client credentials. */
    expect_oauth_error(post_token("grant_type=client_credentials", "lms:lms-token-0123456789"), 401,
                       "invalid_client");
    /* The log names the client, never its secret or the token it got. */
    struct skt_hub_log log = skt_hub_log_begin();
    char *t3 = access_token(
        post_token("grant_type=client_credentials", "vendor-app:vendor-secret-0123456789"), 3600);
    free(curl_get_quiet(t3));
    char *logged = skt_hub_log_end(&log);
    cr_assert_not_null(strstr(logged, "client vendor: POST /token -> 200"), "%s", logged);
    cr_assert_not_null(strstr(logged, "client vendor: GET /groups -> 200"), "%s", logged);
    cr_assert_null(strstr(logged, "vendor-secret"), "%s", logged);
    cr_assert_null(strstr(logged, t3 + 7), "the access token was logged: %s", logged);
    free(logged);
    free(t3);
    /* GET /token is no way to ask. */
    cr_assert_eq(skt_hub_get("/token", NULL, NULL), 405);
    free(t1);
    free(t2);
}

Test(ss12000_api_scope, expired_or_wrong_token_is_401, .fini = skt_hub_finish, .timeout = 60)
{
    skt_hub_open_clients(OAUTH_CLIENTS, "access_token_ttl: 1s\n");
    char *t = access_token(
        post_token("grant_type=client_credentials", "vendor-app:vendor-secret-0123456789"), 1);
    cJSON_Delete(skt_hub_get_json("/groups", t, 200));
    usleep(1300 * 1000);
    skt_hub_assert_error("/groups", t, 401, "unauthorized");
    skt_hub_assert_error("/groups", "Bearer lms-token-012345678", 401, "unauthorized");
    skt_hub_assert_error("/groups", NULL, 401, "unauthorized");
    free(t);
}

#define DB "00000000-0000-4000-8000-000000000202" /* TA's duty at B */

/* The ids of a bare array (a lookup's answer) or of an _embedded list, sorted; caller frees. */
static char *ids_of(const cJSON *arr)
{
    cJSON *page = cJSON_CreateObject();
    cJSON_AddItemToObject(page, "data", cJSON_Duplicate(arr, true));
    char *ids = skt_hub_ids(page);
    cJSON_Delete(page);
    return sorted(ids);
}

static void expect_lookup(const char *authorization, const char *want)
{
    char *out = NULL;
    long status = skt_hub_send("POST", "/persons/lookup", authorization,
                               "{\"ids\":[\"" PA "\",\"" PB "\",\"" TA "\"]}", &out);
    cr_assert_eq(status, 200, "%s", out);
    cJSON *j = cJSON_Parse(out);
    cr_assert(cJSON_IsArray(j), "%s", out);
    char *got = ids_of(j);
    cr_assert_str_eq(got, want, "%s", out);
    free(got);
    cJSON_Delete(j);
    free(out);
}

/* The hub with two_schools(), where TA teaches at B as well (from 2020): a duty A's client may
 * not see. */
static void two_schools_teaching_at_b(void)
{
    skt_hub_open_clients(scoped_clients, NULL);
    two_schools();
    add("Duty", "{\"id\":\"" DB "\"," META ",\"person\":{\"id\":\"" TA "\"},\"dutyAt\":{\"id\":\"" B
                "\"},\"dutyRole\":\"Lärare\",\"startDate\":\"2020-01-01\"}");
    skt_hub_apply();
}

Test(ss12000_api_scope, lookups_and_expansions_stay_in_the_school, .fini = skt_hub_finish,
     .timeout = 60)
{
    two_schools_teaching_at_b();
    expect_lookup(SA, PA "," TA);
    expect_lookup(LMS, PA "," PB "," TA);

    /* TA's duties, expanded: A's client gets A's duty only; the municipality's both. */
    cJSON *ta = skt_hub_get_json("/persons/" TA "?expand=duties", SA, 200);
    const cJSON *emb = cJSON_GetObjectItemCaseSensitive(ta, "_embedded");
    char *got = ids_of(cJSON_GetObjectItemCaseSensitive(emb, "duties"));
    cr_assert_str_eq(got, DA, "%s", got);
    free(got);
    cJSON_Delete(ta);
    ta = skt_hub_get_json("/persons/" TA "?expand=duties", LMS, 200);
    emb = cJSON_GetObjectItemCaseSensitive(ta, "_embedded");
    got = ids_of(cJSON_GetObjectItemCaseSensitive(emb, "duties"));
    cr_assert_str_eq(got, DA "," DB, "%s", got);
    free(got);
    cJSON_Delete(ta);

    /* Reference names: A's parent, the municipality, is outside A's client's scope, so it is
     * not named for it; the municipality's client gets its name. */
    cJSON *o = skt_hub_get_json("/organisations/" A "?expandReferenceNames=true", LMS, 200);
    cr_assert_not_null(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "parentOrganisation"),
                                         "displayName"),
        "the municipality's client gets the parent's name");
    cJSON_Delete(o);
    o = skt_hub_get_json("/organisations/" A "?expandReferenceNames=true", SA, 200);
    cr_assert_null(cJSON_GetObjectItemCaseSensitive(
                       cJSON_GetObjectItemCaseSensitive(o, "parentOrganisation"), "displayName"),
                   "A's client got the name of an organisation it may not see");
    cJSON_Delete(o);
    /* A's own unit names its school. */
    o = skt_hub_get_json("/organisations/" A1 "?expandReferenceNames=true", SA, 200);
    cr_assert_not_null(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "parentOrganisation"),
                                         "displayName"),
        "A's own school is named");
    cJSON_Delete(o);
}

/* ---- filters read only what the client is shown ---------------------------------------- */

#define GUARD "00000000-0000-4000-8000-000000000105"
#define PL "00000000-0000-4000-8000-000000000701"
#define NOCIV "Bearer nociv-token-0123456789"
#define MIN "Bearer min-token-0123456789"
#define NOGUARD "Bearer noguard-token-0123456789"

static long post_lookup(const char *path, const char *authorization, const char *body,
                        char **ids)
{
    char *text = NULL;
    long status = skt_hub_send("POST", path, authorization, body, &text);
    cJSON *arr = cJSON_Parse(text);
    *ids = NULL;
    if (cJSON_IsArray(arr)) {
        struct sk_buf b = {0};
        const cJSON *x;
        cJSON_ArrayForEach(x, arr)
        {
            sk_buf_printf(&b, "%s%s", b.len ? "," : "", skt_hub_str(x, "id", NULL));
        }
        *ids = b.p ? sk_buf_take(&b) : sk_strdup("");
    }
    cJSON_Delete(arr);
    free(text);
    return status;
}

/*
 * A filter, a lookup key, a sortkey or an expansion is not an oracle for what
 * the client is not shown. Before, they read the stored documents: a client
 * without civic_numbers found a person by civic number (and paged through
 * all of them under sortkey=CivicNoAsc), a client with the default
 * protected_identities found a protected person by name one letter at a
 * time, and a client without guardians learnt who owns a placement through
 * owner=, personIds, expand=ownedPlacements and relationship.entity.type.
 */
Test(ss12000_api_scope, filters_read_only_what_the_client_is_shown, .fini = skt_hub_finish,
     .timeout = 60)
{
    skt_hub_open_clients(
        "  lms: {token: lms-token-0123456789, entities: all, protected_identities: allow}\n"
        "  nociv: {token: nociv-token-0123456789, entities: all, protected_identities: allow,\n"
        "          attributes: [students, organisation_data]}\n"
        "  min: {token: min-token-0123456789, entities: all}\n"
        "  noguard: {token: noguard-token-0123456789, entities: all,\n"
        "            protected_identities: allow, attributes: [placements, students]}\n",
        NULL);
    add_full_persons();
    add_person(GUARD, NULL, NULL);
    add("Placement", "{\"id\":\"" PL "\"," META ",\"child\":{\"id\":\"" FULL "\"},\"owners\":"
                     "[{\"id\":\"" GUARD "\"}],\"placedAt\":{\"id\":\"" A "\"}}");
    skt_hub_apply();
    /* a field the client's attribute groups remove: 403, in every form */
    expect_list("/persons?civicNo=200001011234", LMS, PROT "," FULL);
    skt_hub_assert_error("/persons?civicNo=200001011234", NOCIV, 403, "forbidden");
    skt_hub_assert_error("/persons?sortkey=CivicNoAsc", NOCIV, 403, "forbidden");
    char *ids = NULL;
    cr_assert_eq(post_lookup("/persons/lookup", NOCIV, "{\"civicNos\":[\"200001011234\"]}", &ids),
                 403);
    free(ids);
    /* a type it may not read (Placement) relates nothing */
    expect_list("/persons?relationship.entity.type=placement.child", LMS, FULL);
    expect_list("/persons?relationship.entity.type=placement.child", NOCIV, "");
    /* a protected person the client sees minimised is not found by what it does not see */
    expect_list("/persons?civicNo=200001011234", MIN, FULL);
    expect_list("/persons?nameContains=Ada", MIN, FULL);
    expect_list("/persons?nameContains=Ada", LMS, PROT "," FULL);
    cr_assert_eq(post_lookup("/persons/lookup", MIN, "{\"civicNos\":[\"200001011234\"]}", &ids),
                 200);
    cr_assert_str_eq(ids, FULL);
    free(ids);
    char *order = walked("/persons", MIN); /* unsorted: every person once */
    free(order);
    cJSON *page = skt_hub_get_json("/persons?sortkey=GivenNameAsc&limit=5", MIN, 200);
    ids = skt_hub_ids(page);
    cr_assert_str_eq(ids, PROT "," FULL "," GUARD, "a protected person sorts as without a name");
    free(ids);
    cJSON_Delete(page);
    /* owners without guardians: refused, or nothing */
    skt_hub_assert_error("/placements?owner=" GUARD, NOGUARD, 403, "forbidden");
    expect_list("/placements?owner=" GUARD, LMS, PL);
    skt_hub_assert_error("/persons/" GUARD "?expand=ownedPlacements", NOGUARD, 403, "forbidden");
    skt_hub_assert_error("/placements/" PL "?expand=owners", NOGUARD, 403, "forbidden");
    cr_assert_eq(post_lookup("/placements/lookup", NOGUARD, "{\"personIds\":[\"" GUARD "\"]}",
                             &ids),
                 200);
    cr_assert_str_eq(ids, "", "personIds found the owner");
    free(ids);
    cr_assert_eq(post_lookup("/placements/lookup", NOGUARD, "{\"personIds\":[\"" FULL "\"]}",
                             &ids),
                 200);
    cr_assert_str_eq(ids, PL, "the child is in its own right");
    free(ids);
    expect_list("/persons?relationship.entity.type=placement.owner", LMS, GUARD);
    expect_list("/persons?relationship.entity.type=placement.owner", NOGUARD, "");
}

/*
 * Every protected marking of privacy.h hides a person from a filter the client
 * may not read by: the hub's SQL condition is made from that list (it held a
 * copy of its own before 2026-12-06, which a marking added in one place only
 * would have let through).
 */
Test(ss12000_api_scope, every_protected_marking_hides_a_person_from_filters,
     .fini = skt_hub_finish, .timeout = 60)
{
    skt_hub_open_clients(
        "  lms: {token: lms-token-0123456789, entities: all, protected_identities: allow}\n"
        "  min: {token: min-token-0123456789, entities: all}\n",
        NULL);
    static const char *const marked[] = {"00000000-0000-4000-8000-000000000721",
                                         "00000000-0000-4000-8000-000000000722",
                                         "00000000-0000-4000-8000-000000000723"};
    struct sk_buf all = {0};
    size_t n = 0;
    for (; sk_privacy_marking(n); n++) {
        cr_assert_lt(n, sizeof(marked) / sizeof(marked[0]), "more markings than the test has ids");
        char *json = skt_fmt("{\"id\":\"%s\"," META ",\"givenName\":\"Ada\",\"familyName\":\"Q\","
                             "\"securityMarking\":\"%s\"}",
                             marked[n], sk_privacy_marking(n));
        add("Person", json);
        free(json);
        sk_buf_printf(&all, "%s,", marked[n]);
    }
    cr_assert_geq(n, 2, "privacy.h names %zu protected marking(s)", n);
#define ADA "00000000-0000-4000-8000-000000000729"
    add("Person", "{\"id\":\"" ADA "\"," META ",\"givenName\":\"Ada\",\"familyName\":\"Q\"}");
    sk_buf_puts(&all, ADA);
    skt_hub_apply();
    /* a client that sees protected persons minimised does not find them by name */
    expect_list("/persons?nameContains=Ada", MIN, ADA);
    /* one shown them finds each */
    expect_list("/persons?nameContains=Ada", "Bearer lms-token-0123456789", all.p);
#undef ADA
    sk_buf_free(&all);
}

/* ---- hidden rows leave no trace ---------------------------------------------------------- */

#define SKIP_CLIENTS                                                                               \
    "  full: {token: full-token-0123456789, entities: all, protected_identities: allow}\n"        \
    "  min: {token: min-token-0123456789, entities: all}\n"                                       \
    "  skip: {token: skip-token-0123456789, entities: all, protected_identities: skip}\n"         \
    "  groups: {token: groups-token-0123456789, entities: [Group]}\n"
#define SKIP "Bearer skip-token-0123456789"
#define H1 "00000000-0000-4000-8000-000000000701"
#define H2 "00000000-0000-4000-8000-000000000702"
#define H3 "00000000-0000-4000-8000-000000000703"
#define V1 "00000000-0000-4000-8000-000000000711"
#define V2 "00000000-0000-4000-8000-000000000712"

/* A person, protected (Skyddad folkbokföring) or not. */
static void add_marked(const char *id, const char *given, bool protect)
{
    char *json = skt_fmt("{\"id\":\"%s\"," META ",\"givenName\":\"%s\",\"familyName\":\"Q\"%s}", id,
                         given, protect ? ",\"securityMarking\":\"Skyddad folkbokföring\"" : "");
    add("Person", json);
    free(json);
}

/* deletedEntities' data member as text; caller frees. */
static char *deletions(const char *path, const char *authorization)
{
    cJSON *page = skt_hub_get_json(path, authorization, 200);
    char *text = cJSON_PrintUnformatted(skt_hub_data(page));
    cJSON_Delete(page);
    return text;
}

static void expect_deletions(const char *path, const char *authorization, const char *want)
{
    char *got = deletions(path, authorization);
    cr_assert_str_eq(got, want, "%s", path);
    free(got);
}

/*
 * A client never shown a person (protected_identities: skip) or a type
 * (entities, attribute groups) learns nothing of its deletions: before
 * 2026-12-05 /deletedEntities listed the ids of deleted protected persons to
 * skip clients, and a webhook told them that one was deleted.
 */
Test(ss12000_api_scope, deletions_of_what_the_client_is_not_shown_stay_hidden,
     .fini = skt_hub_finish, .timeout = 60)
{
    skt_hub_open_clients(SKIP_CLIENTS, NULL);
    add_full_persons();
    add("Group", "{\"id\":\"" GRA "\"," META ",\"displayName\":\"7A\",\"groupType\":\"Klass\"}");
    skt_hub_apply();
    skt_recs_add(&skt_hub_batch, "Person", PROT, NULL, NULL);
    skt_recs_add(&skt_hub_batch, "Person", FULL, NULL, NULL);
    skt_recs_add(&skt_hub_batch, "Group", GRA, NULL, NULL);
    skt_hub_apply();
    expect_deletions("/deletedEntities?entities=Person", SKIP, "{\"persons\":[\"" FULL "\"]}");
    expect_deletions("/deletedEntities?entities=Person",
                     "Bearer full-token-0123456789",
                     "{\"persons\":[\"" PROT "\",\"" FULL "\"]}");
    /* minimal shows the protected person's id: its deletion too */
    expect_deletions("/deletedEntities?entities=Person", "Bearer min-token-0123456789",
                     "{\"persons\":[\"" PROT "\",\"" FULL "\"]}");
    /* one by one: no page holds the hidden deletion, and none is empty */
    cJSON *page = skt_hub_get_json("/deletedEntities?entities=Person&limit=1", SKIP, 200);
    char *text = cJSON_PrintUnformatted(skt_hub_data(page));
    cr_assert_str_eq(text, "{\"persons\":[\"" FULL "\"]}", "%s", text);
    cr_assert_null(skt_hub_token(page), "a token past the last deletion it may see");
    free(text);
    cJSON_Delete(page);
    /* a client without persons: not their deletions; asked for, 403 as /persons is (before
     * 2026-12-05 200 with the type left out) */
    expect_deletions("/deletedEntities", "Bearer groups-token-0123456789",
                     "{\"groups\":[\"" GRA "\"]}");
    skt_hub_assert_error("/persons", "Bearer groups-token-0123456789", 403, "forbidden");
    skt_hub_assert_error("/deletedEntities?entities=Person", "Bearer groups-token-0123456789",
                         403, "forbidden");
    skt_hub_assert_error("/deletedEntities?entities=Person,Group",
                         "Bearer groups-token-0123456789", 403, "forbidden");
    skt_hub_assert_error("/deletedEntities?entities=Group&entities=Person",
                         "Bearer groups-token-0123456789", 403, "forbidden");
    expect_deletions("/deletedEntities?entities=Group", "Bearer groups-token-0123456789",
                     "{\"groups\":[\"" GRA "\"]}");
    /* the webhooks' question agrees */
    cr_assert_not(sees("skip", "Person", PROT));
    cr_assert(sees("skip", "Person", FULL));
    cr_assert(sees("min", "Person", PROT));
    cr_assert_not(sees("groups", "Person", FULL));
    /* A state from before protected persons were marked: which deleted person was one is
     * unknown, so none is shown to a skip client (as a tombstone without links is not to a
     * client with organisations). */
    reopen_after("DELETE FROM hub_link WHERE kind = 'protected'; UPDATE hub_meta SET value = 1 "
                 "WHERE key = 'links_version'",
                 SKIP_CLIENTS);
    expect_deletions("/deletedEntities?entities=Person", SKIP, "{\"persons\":[]}");
    expect_deletions("/deletedEntities?entities=Person", "Bearer full-token-0123456789",
                     "{\"persons\":[\"" PROT "\",\"" FULL "\"]}");
}

/*
 * Hidden rows do not shape a page: it is filled past them, and no page
 * token leads only past hidden rows at the end. Before 2026-12-05 a page
 * whose rows were all hidden came back empty with a token, and the last
 * visible page had a token to an empty one: a skip client could count the
 * protected persons.
 */
Test(ss12000_api_scope, hidden_rows_do_not_shape_a_page, .fini = skt_hub_finish, .timeout = 60)
{
    skt_hub_open_clients(SKIP_CLIENTS, NULL);
    add_marked(H1, "H", true);
    add_marked(H2, "H", true);
    skt_hub_apply();
    add_marked(V1, "V", false);
    add_marked(V2, "W", false);
    skt_hub_apply();
    add_marked(H3, "H", true);
    skt_hub_apply();
    /* two rows asked, two visible in all: one full page, no token */
    cJSON *page = skt_hub_get_json("/persons?limit=2", SKIP, 200);
    char *ids = skt_hub_ids(page);
    cr_assert_str_eq(ids, V1 "," V2, "%s", ids);
    cr_assert_null(skt_hub_token(page), "a token that leads past hidden rows only");
    free(ids);
    cJSON_Delete(page);
    /* one by one: two pages, the last without a token */
    char *paged = walked("/persons", SKIP);
    cr_assert_str_eq(paged, V1 "," V2, "%s", paged);
    free(paged);
    cJSON *first = skt_hub_get_json("/persons?limit=1", SKIP, 200);
    cr_assert_not_null(skt_hub_token(first));
    char *t = skt_hub_escape(skt_hub_token(first));
    char *next = skt_fmt("/persons?limit=1&pageToken=%s", t);
    page = skt_hub_get_json(next, SKIP, 200);
    ids = skt_hub_ids(page);
    cr_assert_str_eq(ids, V2, "%s", ids);
    cr_assert_null(skt_hub_token(page), "the last visible page has a token");
    free(ids);
    cJSON_Delete(page);
    free(next);
    free(t);
    cJSON_Delete(first);
    /* sorted, the same: the protected persons sort first by name but are not there */
    page = skt_hub_get_json("/persons?sortkey=GivenNameAsc&limit=2", SKIP, 200);
    ids = skt_hub_ids(page);
    cr_assert_str_eq(ids, V1 "," V2, "%s", ids);
    cr_assert_null(skt_hub_token(page));
    free(ids);
    cJSON_Delete(page);
    /* a client shown them pages through all five */
    paged = walked("/persons", "Bearer full-token-0123456789");
    cr_assert_str_eq(paged, H1 "," H2 "," V1 "," V2 "," H3, "%s", paged);
    free(paged);
}

/* ---- relationships outside the client's organisations ------------------------------------ */

#define PLB "00000000-0000-4000-8000-000000000801"
#define GRB2 "00000000-0000-4000-8000-000000000303"
#define PC "00000000-0000-4000-8000-000000000105"
#define TC "00000000-0000-4000-8000-000000000106"
#define DA2 "00000000-0000-4000-8000-000000000203"
#define DB2 "00000000-0000-4000-8000-000000000204"

/*
 * relationship.* of persons reads only the relationships the client may
 * see: a school's client cannot learn by relationship.organisation (or the
 * dates of a relationship) that one of its persons has a duty, a placement,
 * a group membership or a child at another school. Before 2026-12-05 the
 * conditions read every duty, placement, group and child.
 */
Test(ss12000_api_scope, relationships_outside_the_scope_match_nothing, .fini = skt_hub_finish,
     .timeout = 60)
{
    /* The A teacher has a duty at B too; the A student is in a group and placed at B, with
     * its guardian as owner; B's student has the A student's guardian too. */
    two_schools_teaching_at_b();
    add("Group", "{\"id\":\"" GRB2 "\"," META ",\"displayName\":\"7C\",\"groupType\":\"Klass\","
                 "\"organisation\":{\"id\":\"" B "\"},\"groupMemberships\":[{\"person\":{\"id\":"
                 "\"" PA "\"}}]}");
    add("Placement", "{\"id\":\"" PLB "\"," META ",\"child\":{\"id\":\"" PA "\"},\"owners\":"
                     "[{\"id\":\"" GA "\"}],\"placedAt\":{\"id\":\"" B "\"}}");
    add_person(PB, B, GA);
    /* enrolled at A and at B: its own document shows both enrolments */
    add("Person", "{\"id\":\"" PC "\"," META ",\"givenName\":\"C\",\"enrolments\":[{\"enroledAt\":"
                  "{\"id\":\"" A "\"}},{\"enroledAt\":{\"id\":\"" B "\"}}]}");
    skt_hub_apply();
    expect_list("/persons?relationship.organisation=" B, LMS,
                PA "," PB "," TA "," GA "," PC);
    expect_list("/persons?relationship.organisation=" B, SA, PC);
    expect_list("/persons?relationship.entity.type=duty&relationship.organisation=" B, SA, "");
    expect_list("/persons?relationship.entity.type=duty&relationship.organisation=" B, LMS, TA);
    expect_list("/persons?relationship.entity.type=duty&relationship.organisation=" A, SA, TA);
    expect_list("/persons?relationship.entity.type=groupMembership", SA, "");
    expect_list("/persons?relationship.entity.type=placement.child", SA, "");
    expect_list("/persons?relationship.entity.type=placement.owner", SA, "");
    expect_list("/persons?relationship.entity.type=responsibleFor.enrolment", SA, GA);
    expect_list("/persons?relationship.entity.type=responsibleFor.enrolment"
                "&relationship.organisation=" B,
                SA, "");
    expect_list("/persons?relationship.entity.type=responsibleFor.enrolment"
                "&relationship.organisation=" B,
                LMS, GA);
    /* nor are the dates of a duty at B: TC's duty at A starts in 2024, its duty at B in 2020 */
    add_person(TC, NULL, NULL);
    add("Duty", "{\"id\":\"" DA2 "\"," META ",\"person\":{\"id\":\"" TC "\"},\"dutyAt\":{\"id\":"
                "\"" A "\"},\"dutyRole\":\"Lärare\",\"startDate\":\"2024-08-01\"}");
    add("Duty", "{\"id\":\"" DB2 "\"," META ",\"person\":{\"id\":\"" TC "\"},\"dutyAt\":{\"id\":"
                "\"" B "\"},\"dutyRole\":\"Lärare\",\"startDate\":\"2020-01-01\"}");
    skt_hub_apply();
    expect_list("/persons?relationship.entity.type=duty&relationship.startDate.onOrBefore="
                "2020-06-01",
                LMS, TA "," TC);
    expect_list("/persons?relationship.entity.type=duty&relationship.startDate.onOrBefore="
                "2020-06-01",
                SA, TA);
    expect_list("/persons?relationship.entity.type=enrolment&relationship.organisation=" B, SA,
                PC);
}

/* ---- conditions through another record's side table ----------------------------------- */

#define ACTA2 "00000000-0000-4000-8000-000000000403"
#define CEA2 "00000000-0000-4000-8000-000000000503"

/*
 * member= of activities and student= of calendar events find a person's
 * groups, and through them activities: only groups the client may see. An
 * activity at A taught to a group of B (ACTA2) told A's client, by
 * member=PA, that its student PA is in B's group. Before 2026-12-05 the
 * condition read every group's members from hub_refs.
 */
Test(ss12000_api_scope, members_of_groups_outside_the_scope_match_nothing,
     .fini = skt_hub_finish, .timeout = 60)
{
    skt_hub_open_clients(scoped_clients, NULL);
    two_schools();
    add("Group", "{\"id\":\"" GRB2 "\"," META ",\"displayName\":\"7C\",\"groupType\":\"Klass\","
                 "\"organisation\":{\"id\":\"" B "\"},\"groupMemberships\":[{\"person\":{\"id\":"
                 "\"" PA "\"}}]}");
    add("Group", "{\"id\":\"" GRA "\"," META ",\"displayName\":\"7A\",\"groupType\":\"Klass\","
                 "\"organisation\":{\"id\":\"" A "\"},\"groupMemberships\":[{\"person\":{\"id\":"
                 "\"" TA "\"}}]}");
    add("Activity", "{\"id\":\"" ACTA2 "\"," META ",\"displayName\":\"En\",\"organisation\":{"
                    "\"id\":\"" A "\"},\"groups\":[{\"id\":\"" GRB2 "\"},{\"id\":\"" GRA "\"}]}");
    add("CalendarEvent", "{\"id\":\"" CEA2 "\"," META ",\"activity\":{\"id\":\"" ACTA2 "\"},"
                         "\"startTime\":\"" T1 "\",\"endTime\":\"" T2 "\"}");
    skt_hub_apply();
    expect_list("/activities?member=" PA, LMS, ACTA2);
    expect_list("/activities?member=" PA, SA, "");
    expect_list("/calendarEvents?student=" PA, LMS, CEA2);
    expect_list("/calendarEvents?student=" PA, SA, "");
    char *ids = NULL;
    cr_assert_eq(post_lookup("/activities/lookup", SA, "{\"members\":[\"" PA "\"]}", &ids), 200);
    cr_assert_str_eq(ids, "", "members found B's group");
    free(ids);
    cr_assert_eq(post_lookup("/calendarEvents/lookup", SA, "{\"student\":[\"" PA "\"]}", &ids),
                 200);
    cr_assert_str_eq(ids, "", "student found B's group");
    free(ids);
    /* a group of its own school still counts */
    expect_list("/activities?member=" TA, SA, ACTA2);
    expect_list("/calendarEvents?student=" TA, SA, CEA2);
}

/* ---- a person who becomes protected --------------------------------------------------- */

#define WITHHELD_CLIENTS                                                                           \
    SKIP_CLIENTS                                                                                   \
    "  skip_a: {token: skip-a-token-0123456789, entities: all, protected_identities: skip,\n"     \
    "           organisations: [" A "]}\n"
#define SKIP_A "Bearer skip-a-token-0123456789"
#define FULLC "Bearer full-token-0123456789"

/* A person enrolled at school, protected (Skyddad folkbokföring) or not. */
static void add_enrolled(const char *id, const char *school, const char *given, bool protect)
{
    char *json = skt_fmt("{\"id\":\"%s\"," META ",\"givenName\":\"%s\",\"familyName\":\"Q\","
                         "\"enrolments\":[{\"enroledAt\":{\"id\":\"%s\"}}]%s}",
                         id, given, school,
                         protect ? ",\"securityMarking\":\"Skyddad folkbokföring\"" : "");
    add("Person", json);
    free(json);
}

/* meta.modified of a person as the full client is served it, percent-encoded; caller frees. */
static char *modified_of(const char *id)
{
    cJSON *p = person(id, FULLC);
    char *t = skt_hub_escape(skt_hub_str(p, "meta", "modified"));
    cJSON_Delete(p);
    return t;
}

static void expect_deleted_after(const char *after, const char *authorization, const char *want)
{
    char *path = skt_fmt("/deletedEntities?entities=Person&after=%s", after);
    expect_deletions(path, authorization, want);
    free(path);
}

/*
 * A person a skip client was shown, who then becomes protected, is a
 * deletion for it (as every other sink makes of it, privacy.h): listed in
 * /deletedEntities from the time it became protected, until it is shown
 * again. Before 2026-12-05 the row just vanished from the client's answers,
 * and the vendor kept the last unprotected copy (name, address) for ever.
 */
Test(ss12000_api_scope, a_person_who_becomes_protected_is_a_deletion_for_skip_clients,
     .fini = skt_hub_finish, .timeout = 60)
{
    skt_hub_open_clients(WITHHELD_CLIENTS, NULL);
    add_org(A, NULL);
    add_org(B, NULL);
    add_enrolled(V1, A, "V", false);
    add_enrolled(V2, B, "W", false);
    add_enrolled(H1, A, "H", true); /* protected from the start: never shown */
    skt_hub_apply();
    expect_list("/persons", SKIP, V1 "," V2);
    char *before = modified_of(V2);
    add_enrolled(V1, A, "V", true);
    add_enrolled(V2, B, "W", true);
    add_enrolled(H1, A, "H2", true);
    skt_hub_apply();
    char *became = modified_of(V2);
    expect_list("/persons", SKIP, "");
    expect_deletions("/deletedEntities?entities=Person", SKIP,
                     "{\"persons\":[\"" V1 "\",\"" V2 "\"]}");
    /* its organisations' only */
    expect_deletions("/deletedEntities?entities=Person", SKIP_A, "{\"persons\":[\"" V1 "\"]}");
    /* at the time it became protected: after= finds it once */
    expect_deleted_after(before, SKIP, "{\"persons\":[\"" V1 "\",\"" V2 "\"]}");
    expect_deleted_after(became, SKIP, "{\"persons\":[]}");
    /* a later change while protected does not list it again */
    add_enrolled(V2, B, "W2", true);
    skt_hub_apply();
    expect_deleted_after(became, SKIP, "{\"persons\":[]}");
    expect_deletions("/deletedEntities?entities=Person", SKIP,
                     "{\"persons\":[\"" V1 "\",\"" V2 "\"]}");
    /* clients shown the person (in full, or minimised) see a change, no deletion */
    expect_deletions("/deletedEntities?entities=Person", FULLC, "{\"persons\":[]}");
    expect_deletions("/deletedEntities?entities=Person", MIN, "{\"persons\":[]}");
    cJSON *p = person(V1, MIN);
    cr_assert_not(has(p, "givenName"), "minimal shows no name");
    cJSON_Delete(p);
    cr_assert_not(sees("skip", "Person", V1));
    /* shown again: a change, no longer a deletion */
    add_enrolled(V1, A, "V", false);
    skt_hub_apply();
    expect_list("/persons", SKIP, V1);
    expect_deletions("/deletedEntities?entities=Person", SKIP, "{\"persons\":[\"" V2 "\"]}");
    /* deleted while protected: still the one deletion, at the time it became protected */
    skt_recs_add(&skt_hub_batch, "Person", V2, NULL, NULL);
    skt_hub_apply();
    expect_deletions("/deletedEntities?entities=Person", SKIP, "{\"persons\":[\"" V2 "\"]}");
    expect_deleted_after(became, SKIP, "{\"persons\":[]}");
    /* a deletion is one for every client shown the person */
    expect_deletions("/deletedEntities?entities=Person", FULLC, "{\"persons\":[\"" V2 "\"]}");
    /* a state from before hub_withheld gets the table at open: who was shown before the
     * upgrade is not known, a person shown since is */
    reopen_after("DROP TABLE hub_withheld", WITHHELD_CLIENTS);
    expect_deletions("/deletedEntities?entities=Person", SKIP, "{\"persons\":[]}");
    add_enrolled(V1, A, "V", true);
    skt_hub_apply();
    expect_deletions("/deletedEntities?entities=Person", SKIP_A, "{\"persons\":[\"" V1 "\"]}");
    /* purged with the tombstones, deleted_retention after it was noted (the first batch after
     * open purges) */
    reopen_after("UPDATE hub_withheld SET since_us = 1", WITHHELD_CLIENTS);
    add_org(K, NULL);
    skt_hub_apply();
    expect_deletions("/deletedEntities?entities=Person", SKIP_A, "{\"persons\":[]}");
    free(before);
    free(became);
}
