/*
 * test_ss12000_api_sink.c: the hub (ss12000-api-sink) opened in-process,
 * serving on 127.0.0.1:0, records applied as the sink driver hands them over,
 * and read back through its SS 12000 API with libcurl:
 *
 *   paging            limit and pageToken walk a type, every id once; a
 *                     record changed during the walk is served again at its
 *                     end
 *   tokens            a tampered token, a well-formed one with a forged
 *                     position or expiry (only the MAC can tell), one for
 *                     another query or client, and one combined with a
 *                     filter: 400; an expired one: 410
 *   delta             meta.modified is the hub's change stamp, so asking
 *                     after the largest one seen finds a record that reached
 *                     the hub late with an older meta.modified; also after a
 *                     restart; meta.created filters on the source's time
 *   by id             GET /{type}/{id}, 404 and 400 in the spec's error shape
 *   deletedEntities   tombstones in their buckets, after, re-creation,
 *                     retention
 *   clients           no or a wrong token 401, a type out of scope 403, the
 *                     scope cuts deletedEntities; the request log names the
 *                     client and no personal data
 *   open              a non-loopback listen without TLS, a client without a
 *                     scope, and an unknown type in a scope are refused
 *   TLS               with tls_cert and tls_key it serves HTTPS, also on a
 *                     non-loopback address
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "connector.h"
#include "model.h"
#include "sk_test.h"
#include "util.h"

#define LMS "Bearer lms-token-0123456789"
#define LIB "Bearer lib-token-0123456789"
#define T1 "2025-08-18T06:00:00+02:00"
#define T2 "2025-08-19T06:00:00+02:00"

static char *dir;
static char *ca_file; /* the certificate a TLS hub is checked against, or NULL */
static struct sk_sink *hub;
static struct skt_recs batch;

static char *hub_yaml(const char *extra)
{
    return skt_fmt("listen: 127.0.0.1:0\nstate_dir: %s\n"
                   "clients: {lms: lms-token-0123456789, lib: lib-token-0123456789}\n"
                   "client_entities: {lms: all, lib: 'Group, organisations'}\n%s",
                   dir, extra ? extra : "");
}

static void open_hub(const char *extra)
{
    if (!dir)
        dir = skt_tmpdir("hub");
    char *yaml = hub_yaml(extra);
    hub = skt_sink_open("ss12000-api-sink", yaml, NULL, 0, "hub-incarnation");
    free(yaml);
}

static void finish(void)
{
    skt_sink_drop(&hub);
    skt_recs_free(&batch);
    free(dir);
    free(ca_file);
    dir = ca_file = NULL;
}

static size_t collect(char *data, size_t size, size_t n, void *ctx)
{
    struct sk_buf *b = ctx;
    sk_buf_putn(b, data, size * n);
    return size * n;
}

/* method path (with its query) at the hub with an Authorization header (NULL: none). */
static long request(const char *method, const char *path, const char *authorization, char **body)
{
    CURL *c = curl_easy_init();
    char *url = skt_fmt("%s%s", hub->ops->target(hub), path);
    struct curl_slist *h = NULL;
    if (authorization) {
        char *line = skt_fmt("Authorization: %s", authorization);
        h = curl_slist_append(h, line);
        free(line);
    }
    struct sk_buf b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    if (ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, ca_file);
    long status = 0;
    cr_assert_eq(curl_easy_perform(c), CURLE_OK, "%s %s", method, url);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(url);
    char *text = sk_buf_take(&b);
    if (body)
        *body = text;
    else
        free(text);
    return status;
}

static long get(const char *path, const char *authorization, char **body)
{
    return request("GET", path, authorization, body);
}

/* GET that must answer want; the body parsed. */
static cJSON *get_json(const char *path, const char *authorization, long want)
{
    char *body;
    long status = get(path, authorization, &body);
    cr_assert_eq(status, want, "GET %s: %ld, expected %ld: %s", path, status, want, body);
    cJSON *j = cJSON_Parse(body);
    cr_assert_not_null(j, "GET %s: not JSON: %s", path, body);
    free(body);
    return j;
}

/* An error answer in the spec's shape {code, message} with this code. */
static void assert_error(const char *path, const char *authorization, long want, const char *code)
{
    cJSON *j = get_json(path, authorization, want);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "code");
    cr_assert(cJSON_IsString(c) && strcmp(c->valuestring, code) == 0, "GET %s: code %s, want %s",
              path, cJSON_IsString(c) ? c->valuestring : "(none)", code);
    cr_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "message")));
    cJSON_Delete(j);
}

static char *new_id(void)
{
    char *id = sk_malloc(37);
    sk_uuid_random(id);
    return id;
}

static void add_person(const char *id, const char *created, const char *modified, const char *given)
{
    char *json = skt_fmt("{\"id\":\"%s\",\"meta\":{\"created\":\"%s\",\"modified\":\"%s\"},"
                         "\"givenName\":\"%s\",\"familyName\":\"Hubb\",\"securityMarking\":"
                         "\"Ingen\"}",
                         id, created, modified, given);
    skt_recs_add(&batch, "Person", NULL, json, NULL);
    free(json);
}

static void add_group(const char *id)
{
    char *json = skt_fmt("{\"id\":\"%s\",\"meta\":{\"created\":\"" T1 "\",\"modified\":\"" T1
                         "\"},\"displayName\":\"7A\",\"groupType\":\"Klass\"}",
                         id);
    skt_recs_add(&batch, "Group", NULL, json, NULL);
    free(json);
}

static void apply(void)
{
    skt_recs_apply_ok(hub, &batch);
    for (size_t i = 0; i < batch.n; i++)
        cr_assert_eq(batch.out[i].kind, SK_APPLIED, "record %zu: %s", i, batch.out[i].err.msg);
    skt_recs_clear(&batch);
}

static const cJSON *data_of(const cJSON *page)
{
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(page, "data");
    cr_assert_not_null(d, "no data member");
    return d;
}

static const char *token_of(const cJSON *page)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(page, "pageToken");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static const char *str_at(const cJSON *obj, const char *a, const char *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, a);
    if (b)
        v = cJSON_GetObjectItemCaseSensitive(v, b);
    cr_assert(cJSON_IsString(v), "no string %s%s%s", a, b ? "." : "", b ? b : "");
    return v->valuestring;
}

/* A value for a query string: '+' and ':' percent-encoded. */
static char *q_enc(const char *v)
{
    CURL *c = curl_easy_init();
    char *e = curl_easy_escape(c, v, 0);
    char *out = sk_strdup(e);
    curl_free(e);
    curl_easy_cleanup(c);
    return out;
}

/* The ids of a list answer, in order, as one comma-separated string (caller frees). */
static char *ids_of(const cJSON *page)
{
    struct sk_buf b = {0};
    const cJSON *x;
    cJSON_ArrayForEach(x, data_of(page))
    {
        sk_buf_printf(&b, "%s%s", b.len ? "," : "", str_at(x, "id", NULL));
    }
    return sk_buf_take(&b);
}

/* ---- paging -------------------------------------------------------------------------- */

Test(ss12000_api_sink, paging_with_limit_and_token, .fini = finish, .timeout = 60)
{
    open_hub(NULL);
    char *ids[5];
    for (int i = 0; i < 5; i++) {
        ids[i] = new_id();
        add_person(ids[i], T1, T1, "Sida");
    }
    apply();
    cJSON *page = get_json("/persons?limit=2", LMS, 200);
    size_t seen = 0, pages = 1;
    struct sk_buf all = {0};
    for (;;) {
        char *got = ids_of(page);
        sk_buf_printf(&all, "%s%s", all.len ? "," : "", got);
        free(got);
        size_t n = (size_t)cJSON_GetArraySize(data_of(page));
        cr_assert(n <= 2, "a page of %zu with limit 2", n);
        seen += n;
        const char *token = token_of(page);
        if (!token)
            break;
        char *enc = q_enc(token);
        char *path = skt_fmt("/persons?pageToken=%s&limit=2", enc);
        cJSON_Delete(page);
        page = get_json(path, LMS, 200);
        pages++;
        free(path);
        free(enc);
        cr_assert(pages <= 5, "paging does not end");
    }
    cJSON_Delete(page);
    cr_assert_eq(seen, 5);
    cr_assert_eq(pages, 3);
    for (int i = 0; i < 5; i++) {
        cr_assert_not_null(strstr(all.p, ids[i]), "%s not listed: %s", ids[i], all.p);
        free(ids[i]);
    }
    sk_buf_free(&all);
    /* Without a limit: one page, no token (max_limit 1000). */
    page = get_json("/persons", LMS, 200);
    cr_assert_eq(cJSON_GetArraySize(data_of(page)), 5);
    cr_assert_null(token_of(page));
    cJSON_Delete(page);
    assert_error("/persons?limit=0", LMS, 400, "invalid_parameter");
    assert_error("/persons?limit=abc", LMS, 400, "invalid_parameter");
}

/* A record changed while a client pages moves behind its position: served again, not lost. */
Test(ss12000_api_sink, a_change_while_paging_is_served_in_the_same_walk, .fini = finish,
     .timeout = 60)
{
    open_hub(NULL);
    char *a = new_id(), *b = new_id(), *c = new_id();
    add_person(a, T1, T1, "A");
    add_person(b, T1, T1, "B");
    add_person(c, T1, T1, "C");
    apply();
    cJSON *page = get_json("/persons?limit=1", LMS, 200);
    char *first = ids_of(page);
    cr_assert_str_eq(first, a);
    char *path = skt_fmt("/persons?pageToken=%s&limit=1", token_of(page));
    cJSON_Delete(page);
    add_person(a, T1, T2, "A igen"); /* A, already served, changes */
    apply();
    struct sk_buf walk = {0};
    sk_buf_puts(&walk, first);
    for (int i = 0; path && i < 5; i++) {
        page = get_json(path, LMS, 200);
        char *ids = ids_of(page);
        sk_buf_printf(&walk, ",%s", ids);
        free(ids);
        free(path);
        path = token_of(page) ? skt_fmt("/persons?pageToken=%s&limit=1", token_of(page)) : NULL;
        cJSON_Delete(page);
    }
    char *want = skt_fmt("%s,%s,%s,%s", a, b, c, a);
    cr_assert_str_eq(walk.p, want, "the walk");
    free(want);
    sk_buf_free(&walk);
    free(first);
    free(a);
    free(b);
    free(c);
}

/* A page token of /persons?limit=1 after two persons were stored (caller frees). */
static char *first_token(void)
{
    char *a = new_id(), *b = new_id();
    add_person(a, T1, T1, "Ett");
    add_person(b, T1, T1, "Två");
    apply();
    free(a);
    free(b);
    cJSON *page = get_json("/persons?limit=1", LMS, 200);
    cr_assert_not_null(token_of(page));
    char *token = sk_strdup(token_of(page));
    cJSON_Delete(page);
    return token;
}

Test(ss12000_api_sink, tampered_or_misused_token_is_400, .fini = finish, .timeout = 60)
{
    open_hub(NULL);
    char *token = first_token();
    char *path = skt_fmt("/persons?pageToken=%s", token);
    cJSON_Delete(get_json(path, LMS, 200)); /* intact: served */
    free(path);
    /* One character of the position changed: the MAC no longer matches. */
    for (size_t at = 0; at < 3; at++) {
        char *bad = sk_strdup(token);
        size_t i = strlen(bad) / 4 + at * 7;
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        path = skt_fmt("/persons?pageToken=%s", bad);
        assert_error(path, LMS, 400, "invalid_page_token");
        free(path);
        free(bad);
    }
    assert_error("/persons?pageToken=garbage", LMS, 400, "invalid_page_token");
    /* The right token for another type, another endpoint, another client's hands. */
    path = skt_fmt("/groups?pageToken=%s", token);
    assert_error(path, LMS, 400, "invalid_page_token");
    free(path);
    path = skt_fmt("/deletedEntities?pageToken=%s", token);
    assert_error(path, LMS, 400, "invalid_page_token");
    free(path);
    char *enc = q_enc(T1);
    path = skt_fmt("/persons?pageToken=%s&meta.modified.after=%s", token, enc);
    assert_error(path, LMS, 400, "invalid_parameter");
    free(path);
    free(enc);
    free(token);
}

/*
 * token with its payload's field `field` (0-based, '|'-separated) set to
 * value and the original MAC kept: a well-formed token only the MAC can tell
 * from a real one. Caller frees.
 */
static char *forged(const char *token, int field, const char *value)
{
    char *cmd =
        skt_fmt("python3 -c \"import base64, sys\n"
                "p, m = sys.argv[1].split('.')\n"
                "f = base64.urlsafe_b64decode(p + '=' * (-len(p) %% 4)).decode().split('|')\n"
                "f[%d] = sys.argv[2]\n"
                "q = base64.urlsafe_b64encode('|'.join(f).encode()).decode().rstrip('=')\n"
                "print(q + '.' + m, end='')\" '%s' '%s'",
                field, token, value);
    char *out = NULL;
    cr_assert_eq(skt_sh(cmd, 30, &out), 0, "%s", out);
    free(cmd);
    return out;
}

Test(ss12000_api_sink, forged_position_or_expiry_is_400, .fini = finish, .timeout = 60)
{
    open_hub(NULL);
    char *token = first_token();
    char *same = forged(token, 0, "v1"); /* unchanged: the helper keeps a real token real */
    char *path = skt_fmt("/persons?pageToken=%s", same);
    cJSON_Delete(get_json(path, LMS, 200));
    free(path);
    free(same);
    /* Back to the start of the list: well-formed, so only the MAC tells. */
    char *start = forged(token, 4, "-9223372036854775808");
    path = skt_fmt("/persons?pageToken=%s", start);
    assert_error(path, LMS, 400, "invalid_page_token");
    free(path);
    free(start);
    /* An expiry moved: 400, not 410 (expiry is read only from an intact token). */
    char *moved = forged(token, 3, "1");
    path = skt_fmt("/persons?pageToken=%s", moved);
    assert_error(path, LMS, 400, "invalid_page_token");
    free(path);
    free(moved);
    free(token);
}

Test(ss12000_api_sink, token_of_another_client_is_400, .fini = finish, .timeout = 60)
{
    open_hub(NULL);
    char *a = new_id(), *b = new_id();
    add_group(a);
    add_group(b);
    apply();
    cJSON *page = get_json("/groups?limit=1", LMS, 200);
    char *path = skt_fmt("/groups?pageToken=%s", token_of(page));
    cJSON_Delete(get_json(path, LMS, 200));
    assert_error(path, LIB, 400, "invalid_page_token");
    cJSON_Delete(page);
    free(path);
    free(a);
    free(b);
}

Test(ss12000_api_sink, expired_token_is_410, .fini = finish, .timeout = 60)
{
    open_hub("page_token_ttl: 1s\n");
    char *token = first_token();
    char *path = skt_fmt("/persons?pageToken=%s", token);
    sk_sleep_ms(1300);
    assert_error(path, LMS, 410, "page_token_expired");
    free(path);
    free(token);
}

/* ---- delta consistency ------------------------------------------------------------------ */

/* The largest meta.modified of a list answer, as a client keeps it (caller frees). */
static char *max_modified(const char *path)
{
    cJSON *page = get_json(path, LMS, 200);
    int64_t best = INT64_MIN;
    char *text = NULL;
    const cJSON *x;
    cJSON_ArrayForEach(x, data_of(page))
    {
        const char *m = str_at(x, "meta", "modified");
        int64_t us;
        cr_assert_eq(sk_time_parse_us(m, &us), 0, "meta.modified %s", m);
        if (us > best) {
            best = us;
            free(text);
            text = sk_strdup(m);
        }
    }
    cJSON_Delete(page);
    cr_assert_not_null(text, "%s: nothing listed", path);
    return text;
}

static char *ids_after(const char *field, const char *when)
{
    char *enc = q_enc(when);
    char *path = skt_fmt("/persons?%s=%s", field, enc);
    cJSON *page = get_json(path, LMS, 200);
    char *ids = ids_of(page);
    cJSON_Delete(page);
    free(path);
    free(enc);
    return ids;
}

Test(ss12000_api_sink, modified_after_finds_a_late_record, .fini = finish, .timeout = 60)
{
    open_hub(NULL);
    char *a = new_id(), *late = new_id(), *c = new_id();
    add_person(a, T1, T2, "Tidig");
    apply();
    char *seen = max_modified("/persons");
    char *ids = ids_after("meta.modified.after", seen);
    cr_assert_str_empty(ids, "nothing changed after %s: %s", seen, ids);
    free(ids);
    /* It reaches the hub after A, with an older meta.modified (a lagging SIS clock). */
    add_person(late, T1, T1, "Sen");
    apply();
    ids = ids_after("meta.modified.after", seen);
    cr_assert_str_eq(ids, late, "after %s", seen);
    free(ids);
    /* before: the other side of the same stamp. */
    ids = ids_after("meta.modified.before", seen);
    cr_assert_str_empty(ids, "before %s: %s", seen, ids);
    free(ids);
    /* An identical replay changes nothing a client has to fetch again. */
    free(seen);
    seen = max_modified("/persons");
    add_person(late, T1, T1, "Sen");
    apply();
    ids = ids_after("meta.modified.after", seen);
    cr_assert_str_empty(ids, "a replay was served again: %s", ids);
    free(ids);
    /* Stamps keep growing over a restart. */
    skt_sink_drop(&hub);
    open_hub(NULL);
    add_person(c, T1, T1, "Efter omstart");
    apply();
    ids = ids_after("meta.modified.after", seen);
    cr_assert_str_eq(ids, c);
    free(ids);
    free(seen);
    free(a);
    free(late);
    free(c);
}

Test(ss12000_api_sink, created_filters_on_meta_created, .fini = finish, .timeout = 60)
{
    open_hub(NULL);
    char *old = new_id(), *young = new_id();
    add_person(old, "2024-01-01T00:00:00Z", T1, "Gammal");
    add_person(young, "2025-06-01T00:00:00+02:00", T1, "Ung");
    apply();
    char *ids = ids_after("meta.created.after", "2025-01-01T00:00:00+01:00");
    cr_assert_str_eq(ids, young);
    free(ids);
    ids = ids_after("meta.created.before", "2025-01-01T00:00:00Z");
    cr_assert_str_eq(ids, old);
    free(ids);
    /* An unencoded '+' arrives as a space and still reads as the offset. */
    cJSON *page = get_json("/persons?meta.created.after=2025-01-01T00:00:00+01:00", LMS, 200);
    cr_assert_eq(cJSON_GetArraySize(data_of(page)), 1);
    cJSON_Delete(page);
    assert_error("/persons?meta.created.after=yesterday", LMS, 400, "invalid_parameter");
    /* A filter the hub does not implement is refused, not ignored. */
    assert_error("/persons?civicNo=200001011234", LMS, 400, "unsupported_parameter");
    free(old);
    free(young);
}

/* ---- by id -------------------------------------------------------------------------- */

Test(ss12000_api_sink, by_id, .fini = finish, .timeout = 60)
{
    open_hub(NULL);
    char *id = new_id();
    add_person(id, T1, T2, "Hämtad");
    apply();
    char *path = skt_fmt("/persons/%s", id);
    cJSON *doc = get_json(path, LMS, 200);
    cr_assert_str_eq(str_at(doc, "id", NULL), id);
    cr_assert_str_eq(str_at(doc, "givenName", NULL), "Hämtad");
    cr_assert_str_eq(str_at(doc, "meta", "created"), T1, "meta.created is the source's");
    int64_t stamp, source;
    cr_assert_eq(sk_time_parse_us(str_at(doc, "meta", "modified"), &stamp), 0);
    sk_time_parse_us(T2, &source);
    cr_assert_gt(stamp, source, "meta.modified is the hub's stamp");
    cJSON_Delete(doc);
    free(path);
    for (char *p = id; *p; p++)
        *p = (char)(*p >= 'a' && *p <= 'f' ? *p - 32 : *p);
    path = skt_fmt("/persons/%s", id);
    cJSON_Delete(get_json(path, LMS, 200)); /* upper case reads the same entity */
    free(path);
    char *other = new_id();
    path = skt_fmt("/persons/%s", other);
    assert_error(path, LMS, 404, "not_found");
    free(path);
    path = skt_fmt("/groups/%s", id); /* an id of another type */
    assert_error(path, LMS, 404, "not_found");
    free(path);
    assert_error("/persons/not-a-uuid", LMS, 400, "invalid_id");
    /* Only GET is served (lookups and subscriptions are not yet). */
    cr_assert_eq(request("POST", "/persons/lookup", LMS, NULL), 405);
    cr_assert_eq(request("POST", "/persons", LMS, NULL), 405);
    cr_assert_eq(request("DELETE", "/deletedEntities", LMS, NULL), 405);
    assert_error("/nosuchthing", LMS, 404, "not_found");
    free(other);
    free(id);
}

/* ---- deletedEntities ----------------------------------------------------------------------- */

static char *deleted_ids(const char *query, const char *authorization, const char *bucket)
{
    char *path = skt_fmt("/deletedEntities%s", query);
    cJSON *page = get_json(path, authorization, 200);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(data_of(page), bucket);
    cr_assert(cJSON_IsArray(ids), "%s: no bucket %s", path, bucket);
    struct sk_buf b = {0};
    const cJSON *x;
    cJSON_ArrayForEach(x, ids)
    {
        sk_buf_printf(&b, "%s%s", b.len ? "," : "", x->valuestring);
    }
    cJSON_Delete(page);
    free(path);
    return sk_buf_take(&b);
}

Test(ss12000_api_sink, deleted_entities_from_tombstones, .fini = finish, .timeout = 60)
{
    open_hub(NULL);
    char *gone = new_id(), *kept = new_id(), *never = new_id();
    add_person(gone, T1, T1, "Borta");
    add_person(kept, T1, T1, "Kvar");
    apply();
    char *before = max_modified("/persons");
    skt_recs_add(&batch, "Person", gone, NULL, NULL);
    skt_recs_add(&batch, "Person", never, NULL, NULL); /* the hub never had it */
    apply();
    char *ids = deleted_ids("", LMS, "persons");
    cr_assert_str_eq(ids, gone);
    free(ids);
    ids = deleted_ids("", LMS, "activitites"); /* the spec's spelling of the bucket */
    cr_assert_str_empty(ids);
    free(ids);
    char *enc = q_enc(before), *q = skt_fmt("?after=%s", enc);
    ids = deleted_ids(q, LMS, "persons");
    cr_assert_str_eq(ids, gone, "deleted after the last change seen");
    free(ids);
    free(q);
    free(enc);
    cJSON *page = get_json("/deletedEntities?entities=Group", LMS, 200);
    cr_assert_null(cJSON_GetObjectItemCaseSensitive(data_of(page), "persons"),
                   "entities=Group lists persons");
    cJSON_Delete(page);
    char *path = skt_fmt("/persons/%s", gone);
    assert_error(path, LMS, 404, "not_found");
    free(path);
    /* Created again: no longer deleted. */
    add_person(gone, T1, T2, "Tillbaka");
    apply();
    ids = deleted_ids("", LMS, "persons");
    cr_assert_str_empty(ids);
    free(ids);
    free(before);
    free(gone);
    free(kept);
    free(never);
}

Test(ss12000_api_sink, deleted_entities_kept_for_retention, .fini = finish, .timeout = 60)
{
    open_hub(NULL);
    char *old = new_id(), *recent = new_id(), *other = new_id();
    add_person(old, T1, T1, "Gammal");
    add_person(recent, T1, T1, "Ny");
    apply();
    skt_recs_add(&batch, "Person", old, NULL, NULL);
    skt_recs_add(&batch, "Person", recent, NULL, NULL);
    apply();
    skt_sink_drop(&hub);
    /* One tombstone is 91 days old, past the default retention of 90 days. */
    char *db = skt_fmt("%s/test-sink.db", dir);
    char *sql = skt_fmt("UPDATE hub_rows SET deleted_us = deleted_us - 91 * 86400000000 "
                        "WHERE id = '%s'",
                        old);
    skt_sqlite_exec(db, sql);
    open_hub(NULL);
    add_person(other, T1, T1, "Utlösare"); /* a batch runs the purge */
    apply();
    char *ids = deleted_ids("", LMS, "persons");
    cr_assert_str_eq(ids, recent);
    free(ids);
    free(sql);
    free(db);
    free(old);
    free(recent);
    free(other);
}

/* ---- clients -------------------------------------------------------------------------- */

Test(ss12000_api_sink, token_and_scope, .fini = finish, .timeout = 60)
{
    open_hub(NULL);
    char *p = new_id(), *g = new_id();
    add_person(p, T1, T1, "Skyddad");
    add_group(g);
    apply();
    skt_recs_add(&batch, "Person", p, NULL, NULL);
    skt_recs_add(&batch, "Group", g, NULL, NULL);
    apply();
    add_group(g);
    apply();
    assert_error("/groups", NULL, 401, "unauthorized");
    assert_error("/groups", "Bearer lms-token-012345678", 401, "unauthorized");
    assert_error("/groups", "Bearer lms-token-0123456789x", 401, "unauthorized");
    assert_error("/groups", "Basic bG1zOmxtcw==", 401, "unauthorized");
    assert_error("/nosuchthing", NULL, 401, "unauthorized"); /* nothing about paths before */
    /* lib may read groups and organisations only. */
    cJSON *page = get_json("/groups", LIB, 200);
    cr_assert_eq(cJSON_GetArraySize(data_of(page)), 1);
    cJSON_Delete(page);
    assert_error("/persons", LIB, 403, "forbidden");
    char *path = skt_fmt("/persons/%s", p);
    assert_error(path, LIB, 403, "forbidden");
    free(path);
    /* Its deletedEntities holds only its types: no persons bucket, no person id. */
    char *body;
    cr_assert_eq(get("/deletedEntities", LIB, &body), 200);
    cr_assert_null(strstr(body, p), "lib sees a deleted person: %s", body);
    cr_assert_null(strstr(body, "\"persons\""), "%s", body);
    cr_assert_not_null(strstr(body, "\"organisations\":[]"), "%s", body);
    free(body);
    free(p);
    free(g);
}

/* Runs a request with stderr in a file; returns what was logged (caller frees). */
static char *logged_get(const char *path, const char *authorization)
{
    char file[] = "/tmp/skt-hublog-XXXXXX";
    int fd = mkstemp(file);
    cr_assert(fd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    get(path, authorization, NULL);
    sk_sleep_ms(50);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fd);
    size_t len;
    char *text = sk_read_file(file, &len);
    unlink(file);
    cr_assert_not_null(text);
    return text;
}

Test(ss12000_api_sink, request_log_names_client_not_data, .fini = finish, .timeout = 60)
{
    open_hub(NULL);
    char *id = new_id();
    add_person(id, T1, T1, "Loggfri");
    apply();
    char *path = skt_fmt("/persons/%s?x=199001011234", id);
    char *log = logged_get(path, LMS);
    cr_assert_not_null(strstr(log, "client lms: GET /persons/{id} -> 400"), "%s", log);
    free(log);
    free(path);
    path = skt_fmt("/persons/%s", id);
    log = logged_get(path, LMS);
    cr_assert_not_null(strstr(log, "client lms: GET /persons/{id} -> 200 (1 records"), "%s", log);
    cr_assert_null(strstr(log, id), "the id was logged: %s", log);
    cr_assert_null(strstr(log, "Loggfri"), "a name was logged: %s", log);
    free(log);
    log = logged_get("/persons?civicNo=199001011234", LMS);
    cr_assert_not_null(strstr(log, "client lms: GET /persons -> 400"), "%s", log);
    cr_assert_null(strstr(log, "199001011234"), "a civic number was logged: %s", log);
    free(log);
    log = logged_get("/persons", "Bearer wrong-token-0123456789");
    cr_assert_not_null(strstr(log, "client (none): GET (other) -> 401"), "%s", log);
    cr_assert_null(strstr(log, "wrong-token"), "a token was logged: %s", log);
    free(log);
    free(path);
    free(id);
}

/* ---- open --------------------------------------------------------------------------- */

/* open with these options fails FATAL with why in its message. */
static void assert_refused(const char *listen, const char *clients, const char *scopes,
                           const char *extra, const char *why)
{
    char *yaml = skt_fmt("listen: %s\nstate_dir: %s\nclients: %s\nclient_entities: %s\n%s", listen,
                         dir, clients, scopes, extra);
    struct sk_sink *s = NULL;
    struct sk_error err = {0};
    int rc =
        skt_sink_try_open("ss12000-api-sink", NULL, yaml, NULL, 0, "hub-incarnation", &s, &err);
    skt_sink_drop(&s);
    cr_assert_eq(rc, -1, "opened: %s", yaml);
    cr_assert_eq(err.cls, SK_ERR_FATAL);
    cr_assert_not_null(strstr(err.msg, why), "%s: %s", yaml, err.msg);
    free(yaml);
}

Test(ss12000_api_sink, open_refuses_unsafe_or_unclear_configuration, .fini = finish, .timeout = 60)
{
    dir = skt_tmpdir("hub");
    const char *a = "{a: aaaaaaaaaaaaaaaaaaaa}", *all = "{a: all}";
    assert_refused("0.0.0.0:0", a, all, "", "TLS");
    assert_refused("127.0.0.1:0", "{a: aaaaaaaaaaaaaaaaaaaa, b: bbbbbbbbbbbbbbbbbbbb}", all, "",
                   "client_entities.b");
    assert_refused("127.0.0.1:0", a, "{a: 'persons, Pupils'}", "", "Pupils");
    assert_refused("127.0.0.1:0", "{a: short}", all, "", "shorter than 16");
    assert_refused("127.0.0.1:0", a, all, "tls_cert: /nonexistent.pem\n", "go together");
}

/* ---- TLS -------------------------------------------------------------------------------- */

Test(ss12000_api_sink, tls_serves_https_beyond_loopback, .fini = finish, .timeout = 60)
{
    dir = skt_tmpdir("hub");
    char *cmd = skt_fmt("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
                        "-addext subjectAltName=IP:127.0.0.1 -keyout %s/key.pem -out %s/cert.pem",
                        dir, dir);
    char *out = NULL;
    cr_assert_eq(skt_sh(cmd, 30, &out), 0, "%s: %s", cmd, out);
    free(out);
    free(cmd);
    ca_file = skt_fmt("%s/cert.pem", dir);
    char *tls = skt_fmt("tls_cert: %s/cert.pem\ntls_key: %s/key.pem\n", dir, dir);
    open_hub(tls);
    cr_assert_eq(strncmp(hub->ops->target(hub), "https://127.0.0.1:", 18), 0, "%s",
                 hub->ops->target(hub));
    char *g = new_id();
    add_group(g);
    apply();
    cJSON *page = get_json("/groups", LIB, 200);
    cr_assert_eq(cJSON_GetArraySize(data_of(page)), 1);
    cJSON_Delete(page);
    skt_sink_drop(&hub);
    /* Any address, once TLS is configured. */
    char *any = skt_fmt("listen: 0.0.0.0:0\nstate_dir: %s\nclients: {a: aaaaaaaaaaaaaaaaaaaa}\n"
                        "client_entities: {a: all}\n%s",
                        dir, tls);
    hub = skt_sink_open("ss12000-api-sink", any, NULL, 0, "hub-incarnation");
    cr_assert_eq(strncmp(hub->ops->target(hub), "https://0.0.0.0:", 16), 0);
    free(any);
    free(tls);
    free(g);
}
