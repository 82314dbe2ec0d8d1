/*
 * test_ss12000_api_paging.c: paging through the hub (ss12000-api-sink),
 * opened in-process on 127.0.0.1:0 (tests/helpers/skt_hub.h):
 *
 *   paging            limit and pageToken walk a type, every id once; a
 *                     record changed during the walk is served again at its
 *                     end; deletedEntities pages the same way
 *   tokens            a tampered token, a well-formed one with a forged
 *                     position or expiry (only the MAC can tell), one for
 *                     another query or client, and one combined with a
 *                     filter: 400; an expired one: 410
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "connector.h"
#include "sk_test.h"
#include "skt_hub.h"
#include "util.h"

/* ---- paging -------------------------------------------------------------------------- */

Test(ss12000_api_paging, paging_with_limit_and_token, .fini = skt_hub_finish, .timeout = 60)
{
    skt_hub_open(NULL);
    char *ids[5];
    for (int i = 0; i < 5; i++) {
        ids[i] = skt_hub_new_id();
        skt_hub_add_person(ids[i], T1, T1, "Sida");
    }
    skt_hub_apply();
    cJSON *page = skt_hub_get_json("/persons?limit=2", LMS, 200);
    size_t seen = 0, pages = 1;
    struct sk_buf all = {0};
    for (;;) {
        char *got = skt_hub_ids(page);
        sk_buf_printf(&all, "%s%s", all.len ? "," : "", got);
        free(got);
        size_t n = (size_t)cJSON_GetArraySize(skt_hub_data(page));
        cr_assert(n <= 2, "a page of %zu with limit 2", n);
        seen += n;
        const char *token = skt_hub_token(page);
        if (!token)
            break;
        char *enc = skt_hub_escape(token);
        char *path = skt_fmt("/persons?pageToken=%s&limit=2", enc);
        cJSON_Delete(page);
        page = skt_hub_get_json(path, LMS, 200);
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
    page = skt_hub_get_json("/persons", LMS, 200);
    cr_assert_eq(cJSON_GetArraySize(skt_hub_data(page)), 5);
    cr_assert_null(skt_hub_token(page));
    cJSON_Delete(page);
    skt_hub_assert_error("/persons?limit=0", LMS, 400, "invalid_parameter");
    skt_hub_assert_error("/persons?limit=abc", LMS, 400, "invalid_parameter");
}

/* A record changed while a client pages moves behind its position: served again, not lost. */
Test(ss12000_api_paging, a_change_while_paging_is_served_in_the_same_walk, .fini = skt_hub_finish,
     .timeout = 60)
{
    skt_hub_open(NULL);
    char *a = skt_hub_new_id(), *b = skt_hub_new_id(), *c = skt_hub_new_id();
    skt_hub_add_person(a, T1, T1, "A");
    skt_hub_add_person(b, T1, T1, "B");
    skt_hub_add_person(c, T1, T1, "C");
    skt_hub_apply();
    cJSON *page = skt_hub_get_json("/persons?limit=1", LMS, 200);
    char *first = skt_hub_ids(page);
    cr_assert_str_eq(first, a);
    char *path = skt_fmt("/persons?pageToken=%s&limit=1", skt_hub_token(page));
    cJSON_Delete(page);
    skt_hub_add_person(a, T1, T2, "A igen"); /* A, already served, changes */
    skt_hub_apply();
    struct sk_buf walk = {0};
    sk_buf_puts(&walk, first);
    for (int i = 0; path && i < 5; i++) {
        page = skt_hub_get_json(path, LMS, 200);
        char *ids = skt_hub_ids(page);
        sk_buf_printf(&walk, ",%s", ids);
        free(ids);
        free(path);
        path = skt_hub_token(page) ? skt_fmt("/persons?pageToken=%s&limit=1", skt_hub_token(page))
                                   : NULL;
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
    char *a = skt_hub_new_id(), *b = skt_hub_new_id();
    skt_hub_add_person(a, T1, T1, "Ett");
    skt_hub_add_person(b, T1, T1, "Två");
    skt_hub_apply();
    free(a);
    free(b);
    cJSON *page = skt_hub_get_json("/persons?limit=1", LMS, 200);
    cr_assert_not_null(skt_hub_token(page));
    char *token = sk_strdup(skt_hub_token(page));
    cJSON_Delete(page);
    return token;
}

Test(ss12000_api_paging, tampered_or_misused_token_is_400, .fini = skt_hub_finish, .timeout = 60)
{
    skt_hub_open(NULL);
    char *token = first_token();
    char *path = skt_fmt("/persons?pageToken=%s", token);
    cJSON_Delete(skt_hub_get_json(path, LMS, 200)); /* intact: served */
    free(path);
    /* One character of the position changed: the MAC no longer matches. */
    for (size_t at = 0; at < 3; at++) {
        char *bad = sk_strdup(token);
        size_t i = strlen(bad) / 4 + at * 7;
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        path = skt_fmt("/persons?pageToken=%s", bad);
        skt_hub_assert_error(path, LMS, 400, "invalid_page_token");
        free(path);
        free(bad);
    }
    skt_hub_assert_error("/persons?pageToken=garbage", LMS, 400, "invalid_page_token");
    /* The right token for another type, another endpoint, another client's hands. */
    path = skt_fmt("/groups?pageToken=%s", token);
    skt_hub_assert_error(path, LMS, 400, "invalid_page_token");
    free(path);
    path = skt_fmt("/deletedEntities?pageToken=%s", token);
    skt_hub_assert_error(path, LMS, 400, "invalid_page_token");
    free(path);
    char *enc = skt_hub_escape(T1);
    path = skt_fmt("/persons?pageToken=%s&meta.modified.after=%s", token, enc);
    skt_hub_assert_error(path, LMS, 400, "invalid_parameter");
    free(path);
    free(enc);
    free(token);
}

/* The bytes of a token's base64url, as text with every byte outside ' '..'~' as '.'. */
static char *token_bytes(const char *token)
{
    char *cmd = skt_fmt("python3 -c \"import base64, sys\n"
                        "t = sys.argv[1]\n"
                        "b = base64.urlsafe_b64decode(t + '=' * (-len(t) %% 4))\n"
                        "print(''.join(chr(c) if 32 <= c < 127 else '.' for c in b), end='')\" "
                        "'%s'",
                        token);
    char *out = NULL;
    cr_assert_eq(skt_sh(cmd, 30, &out), 0, "%s", out);
    free(cmd);
    return out;
}

/*
 * A token's payload is sealed, not only signed: its position is the last row
 * read, which may be one the client is not shown, or a value its scope
 * removes (a protected person's name, a civic number). Before, the payload
 * was base64 of the text, and a client read them in its own tokens.
 */
Test(ss12000_api_paging, a_token_shows_nothing_it_holds, .fini = skt_hub_finish, .timeout = 60)
{
    skt_hub_open(NULL);
    char *a = skt_hub_new_id(), *b = skt_hub_new_id();
    skt_hub_add_person(a, T1, T1, "Aaberg");
    skt_hub_add_person(b, T1, T1, "Zetterlund");
    skt_hub_apply();
    cJSON *page = skt_hub_get_json("/persons?sortkey=GivenNameAsc&limit=1", LMS, 200);
    const char *token = skt_hub_token(page);
    cr_assert_not_null(token);
    char *bytes = token_bytes(token);
    char *first = skt_hub_ids(page);
    cr_assert_null(strstr(bytes, "persons"), "%s", bytes);
    cr_assert_null(strstr(bytes, "aaberg"), "the sort value in clear: %s", bytes);
    cr_assert_null(strstr(bytes, first), "the row's id in clear: %s", bytes);
    cr_assert_null(strstr(bytes, "GivenName"), "the query in clear: %s", bytes);
    char *path = skt_fmt("/persons?pageToken=%s", token);
    cJSON *next = skt_hub_get_json(path, LMS, 200);
    char *second = skt_hub_ids(next);
    cr_assert_str_eq(second, b);
    cJSON_Delete(next);
    cJSON_Delete(page);
    free(second);
    free(path);
    free(first);
    free(bytes);
    free(a);
    free(b);
}

Test(ss12000_api_paging, token_of_another_client_is_400, .fini = skt_hub_finish, .timeout = 60)
{
    skt_hub_open(NULL);
    char *a = skt_hub_new_id(), *b = skt_hub_new_id();
    skt_hub_add_group(a);
    skt_hub_add_group(b);
    skt_hub_apply();
    cJSON *page = skt_hub_get_json("/groups?limit=1", LMS, 200);
    char *path = skt_fmt("/groups?pageToken=%s", skt_hub_token(page));
    cJSON_Delete(skt_hub_get_json(path, LMS, 200));
    skt_hub_assert_error(path, LIB, 400, "invalid_page_token");
    cJSON_Delete(page);
    free(path);
    free(a);
    free(b);
}

Test(ss12000_api_paging, expired_token_is_410, .fini = skt_hub_finish, .timeout = 60)
{
    skt_hub_open("page_token_ttl: 1s\n");
    char *token = first_token();
    char *path = skt_fmt("/persons?pageToken=%s", token);
    sk_sleep_ms(1300);
    skt_hub_assert_error(path, LMS, 410, "page_token_expired");
    free(path);
    free(token);
}

/* The ids of a deletedEntities page's persons bucket, comma-separated (caller frees). */
static char *deleted_persons(const cJSON *page)
{
    struct sk_buf b = {0};
    const cJSON *x;
    cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(skt_hub_data(page), "persons"))
    {
        sk_buf_printf(&b, "%s%s", b.len ? "," : "", x->valuestring);
    }
    return sk_buf_take(&b);
}

Test(ss12000_api_paging, deleted_entities_pages_with_limit_and_token, .fini = skt_hub_finish,
     .timeout = 60)
{
    skt_hub_open(NULL);
    char *ids[3];
    for (int i = 0; i < 3; i++) {
        ids[i] = skt_hub_new_id();
        skt_hub_add_person(ids[i], T1, T1, "Borta");
    }
    skt_hub_apply();
    for (int i = 0; i < 3; i++)
        skt_recs_add(&skt_hub_batch, "Person", ids[i], NULL, NULL);
    skt_hub_apply();
    cJSON *page = skt_hub_get_json("/deletedEntities?limit=2&entities=Person", LMS, 200);
    char *first = deleted_persons(page);
    char *want = skt_fmt("%s,%s", ids[0], ids[1]);
    cr_assert_str_eq(first, want, "in the order they were deleted");
    cr_assert_not_null(skt_hub_token(page));
    char *path = skt_fmt("/deletedEntities?pageToken=%s&entities=Person", skt_hub_token(page));
    skt_hub_assert_error(path, LMS, 400, "invalid_parameter"); /* a filter beside the token */
    free(path);
    path = skt_fmt("/deletedEntities?pageToken=%s&limit=2", skt_hub_token(page));
    cJSON *next = skt_hub_get_json(path, LMS, 200);
    char *rest = deleted_persons(next);
    cr_assert_str_eq(rest, ids[2]);
    cr_assert_null(skt_hub_token(next));
    cr_assert_null(cJSON_GetObjectItemCaseSensitive(skt_hub_data(next), "groups"),
                   "the follow-up keeps the first request's entities");
    free(path);
    path = skt_fmt("/persons?pageToken=%s", skt_hub_token(page));
    skt_hub_assert_error(path, LMS, 400, "invalid_page_token"); /* not a list's token */
    cJSON_Delete(page);
    cJSON_Delete(next);
    free(path);
    free(rest);
    free(want);
    free(first);
    for (int i = 0; i < 3; i++)
        free(ids[i]);
}

/* ---- the calendar window --------------------------------------------------------------- */

/*
 * calendarEvents takes the spec's startTime.onOrAfter/onOrBefore (its only
 * required list parameters; skolsync's own source always sends them),
 * compared as instants, carried on by the page token; other types refuse
 * them.
 */
Test(ss12000_api_paging, calendar_window_filters_on_start_time, .fini = skt_hub_finish,
     .timeout = 60)
{
    skt_hub_open(NULL);
    static const char *const starts[] = {"2026-10-01T08:00:00+02:00", "2026-10-15T08:00:00Z",
                                         "2026-10-20T01:30:00+02:00", "2026-11-01T08:00:00+01:00",
                                         "2026-10-31T23:30:00-02:00"};
    char *ids[5];
    for (int i = 0; i < 5; i++) {
        ids[i] = skt_hub_new_id();
        char *json = skt_fmt("{\"id\":\"%s\",\"startTime\":\"%s\",\"endTime\":\"%s\","
                             "\"activity\":{\"id\":\"7e000000-0000-4000-8000-000000000001\"},"
                             "\"meta\":{\"created\":\"2026-09-01T00:00:00Z\","
                             "\"modified\":\"2026-09-01T00:00:00Z\"}}",
                             ids[i], starts[i], starts[i]);
        skt_recs_add(&skt_hub_batch, "CalendarEvent", NULL, json, NULL);
        free(json);
    }
    skt_hub_apply();
    /* October 10 to 31 (UTC): the 2nd and 3rd; the 5th is 1 November 01:30Z; limit 1: two pages */
    cJSON *page = skt_hub_get_json("/calendarEvents?startTime.onOrAfter=2026-10-10T00:00:00Z"
                                   "&startTime.onOrBefore=2026-10-31T23:59:59Z&limit=1",
                                   LMS, 200);
    const cJSON *data = skt_hub_data(page);
    cr_assert_eq(cJSON_GetArraySize(data), 1);
    char seen[2][37];
    snprintf(seen[0], 37, "%s", skt_hub_str(cJSON_GetArrayItem(data, 0), "id", NULL));
    char *path = skt_fmt("/calendarEvents?pageToken=%s&limit=5", skt_hub_token(page));
    cJSON_Delete(page);
    page = skt_hub_get_json(path, LMS, 200);
    data = skt_hub_data(page);
    cr_assert_eq(cJSON_GetArraySize(data), 1, "the token did not carry the window");
    snprintf(seen[1], 37, "%s", skt_hub_str(cJSON_GetArrayItem(data, 0), "id", NULL));
    cr_assert_null(skt_hub_token(page));
    cJSON_Delete(page);
    free(path);
    bool two = strcmp(seen[0], ids[1]) == 0 || strcmp(seen[1], ids[1]) == 0;
    bool three = strcmp(seen[0], ids[2]) == 0 || strcmp(seen[1], ids[2]) == 0;
    cr_assert(two && three, "the window held other events");
    skt_hub_assert_error("/persons?startTime.onOrAfter=2026-10-10T00:00:00Z", LMS, 400,
                         "unsupported_parameter");
    skt_hub_assert_error("/calendarEvents?startTime.onOrAfter=yesterday", LMS, 400,
                         "invalid_parameter");
    for (int i = 0; i < 5; i++)
        free(ids[i]);
}
