/*
 * The sink driver's batch decode (daemon/drivers.h, sk_sink_decode_batch): a
 * large batch decoded in two halves on two threads gives each record exactly
 * what sk_sink_decode gives it alone, rejections and privacy deletes included.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "drivers.h"
#include "model.h"
#include "util.h"

#define N 300

static struct sk_record recs[N], expect[N];
static cJSON *docs[N], *expect_docs[N];
static struct sk_outcome outs[N];
static bool rejected[N];
static size_t json_at[N], todo[N];
static struct sk_buf json[2];
/* The values, which a policy delete takes off the record without freeing. */
static uint8_t *values[N], *copies[N];

static void encode_person(size_t i, struct sk_record *r)
{
    const char *marking = i % 7 == 3 ? "Sekretessmarkering" : "Ingen";
    char *doc = sk_asprintf("{\"id\":\"00000000-0000-4000-8000-%012zx\",\"meta\":{\"created\":"
                            "\"2024-01-01T00:00:00Z\",\"modified\":\"2024-02-%02zuT10:00:00Z\"},"
                            "\"givenName\":\"Åsa \\\"%zu\\\"\",\"familyName\":\"Öberg\\n\","
                            "\"securityMarking\":\"%s\",\"civicNo\":{\"value\":\"20100101%04zu\"}}",
                            i, 1 + i % 28, i, marking, i);
    struct sk_error err = {0};
    char id[37];
    int64_t modified_us;
    r->entity = sk_entity_by_collection("persons");
    cr_assert_eq(sk_codec_encode(r->entity, doc, strlen(doc), &r->value, &r->value_len, id,
                                 &modified_us, &err),
                 0, "%s", err.msg);
    memcpy(r->key, id, sizeof(r->key));
    free(doc);
}

/* Records 0..n: persons, every 50th a value that does not unpack, every 40th
 * under another entity's key, every 30th a tombstone (not handed to the
 * decode, as the driver does). */
static size_t setup(size_t n)
{
    memset(recs, 0, sizeof(recs));
    memset(expect, 0, sizeof(expect));
    size_t n_todo = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % 50 == 49) {
            recs[i].entity = sk_entity_by_collection("persons");
            recs[i].value = (uint8_t *)sk_strdup("\xff\xff\xff garbage");
            recs[i].value_len = 12;
        } else if (i % 30 != 29) {
            encode_person(i, &recs[i]);
            if (i % 40 == 39)
                memcpy(recs[i].key, "00000000-0000-4000-8000-ffffffffffff", 37);
        } else {
            recs[i].entity = sk_entity_by_collection("persons");
        }
        expect[i] = recs[i];
        values[i] = recs[i].value;
        copies[i] = NULL;
        if (recs[i].value) {
            todo[n_todo++] = i;
            /* the serial decode's own copy */
            expect[i].value = copies[i] = sk_malloc(recs[i].value_len);
            memcpy(expect[i].value, recs[i].value, recs[i].value_len);
        }
        outs[i].kind = SK_APPLIED;
        rejected[i] = false;
    }
    return n_todo;
}

static void check(size_t n, const struct sk_privacy *privacy)
{
    for (size_t i = 0; i < n; i++) {
        if (!expect[i].value) {
            cr_assert_null(recs[i].json, "record %zu: a tombstone got text", i);
            continue;
        }
        struct sk_buf one = {0};
        struct sk_error err = {0};
        int rc = sk_sink_decode(privacy, &expect[i], &expect_docs[i], &one, &err);
        cr_assert_eq(rejected[i], rc < 0, "record %zu: rejected %d, alone %d", i, rejected[i],
                     rc);
        if (rc < 0) {
            cr_assert_eq(outs[i].kind, SK_REJECTED);
            cr_assert_str_eq(outs[i].err.msg, err.msg);
        } else if (rc == 1) {
            cr_assert_null(recs[i].value, "record %zu: the policy's delete was lost", i);
            cr_assert_null(recs[i].json);
        } else {
            cr_assert_not_null(recs[i].json, "record %zu has no text", i);
            cr_assert_str_eq(recs[i].json, one.p, "record %zu", i);
            cr_assert_eq(recs[i].json_len, expect[i].json_len);
            cr_assert_eq(recs[i].modified_us, expect[i].modified_us);
            cr_assert_eq(outs[i].kind, SK_APPLIED);
        }
        sk_buf_free(&one);
    }
}

static void teardown(size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(values[i]);
        free(copies[i]);
        cJSON_Delete(docs[i]);
        cJSON_Delete(expect_docs[i]);
        docs[i] = expect_docs[i] = NULL;
    }
    sk_buf_free(&json[0]);
    sk_buf_free(&json[1]);
}

Test(sink_decode, a_large_batch_decodes_in_two_halves_exactly_as_record_by_record)
{
    size_t n_todo = setup(N);
    struct sk_privacy privacy = {.protected_mode = SK_PROTECTED_SKIP};
    int threads =
        sk_sink_decode_batch(&privacy, recs, docs, outs, rejected, todo, n_todo, json, json_at);
    cr_assert_eq(threads, sysconf(_SC_NPROCESSORS_ONLN) > 1 ? 2 : 1);
    if (threads == 2)
        cr_assert_gt(json[1].len, 0, "the second half's text is in the second buffer");
    check(N, &privacy);
    size_t deletes = 0, bad = 0;
    for (size_t i = 0; i < N; i++) {
        deletes += values[i] && !recs[i].value && !rejected[i];
        bad += rejected[i];
    }
    cr_assert_gt(deletes, 20, "protected persons were skipped on both halves");
    size_t foreign = 0;
    for (size_t i = 39; i < N; i += 40)
        foreign += i % 30 != 29 && i % 50 != 49;
    cr_assert_eq(bad, N / 50 + foreign);
    teardown(N);
}

Test(sink_decode, a_small_batch_is_decoded_on_the_calling_thread)
{
    size_t n = SK_DECODE_SPLIT_MIN - 1;
    size_t n_todo = setup(n);
    cr_assert_lt(n_todo, SK_DECODE_SPLIT_MIN);
    struct sk_privacy privacy = {0};
    cr_assert_eq(
        sk_sink_decode_batch(&privacy, recs, docs, outs, rejected, todo, n_todo, json, json_at),
        1);
    cr_assert_eq(json[1].len, 0);
    check(n, &privacy);
    teardown(n);
}

/* A value whose id is not its record's key (a foreign producer's mistake)
 * is rejected, not stored under the key; an id in capitals is the same id. */
Test(sink_decode, a_value_of_another_entity_than_its_key_is_rejected)
{
    struct sk_privacy privacy = {0};
    struct sk_record r = {0};
    encode_person(5, &r);
    cJSON *doc = NULL;
    struct sk_buf one = {0};
    struct sk_error err = {0};
    cr_assert_eq(sk_sink_decode(&privacy, &r, &doc, &one, &err), 0, "%s", err.msg);
    cJSON_Delete(doc);
    memcpy(r.key, "00000000-0000-4000-8000-000000000006", 37);
    cr_assert_eq(sk_sink_decode(&privacy, &r, &doc, &one, &err), -1);
    cr_assert_null(doc);
    cr_assert_eq(err.cls, SK_ERR_PERMANENT);
    cr_assert_str_eq(err.msg, "value's id 00000000-0000-4000-8000-000000000005 is not the "
                              "record's key 00000000-0000-4000-8000-000000000006");
    free(r.value);

    /* capitals in the value's id: the same entity */
    const char *upper = "{\"id\":\"ABCDEF00-0000-4000-8000-00000000000A\",\"meta\":{\"created\":"
                        "\"2024-01-01T00:00:00Z\",\"modified\":\"2024-02-01T10:00:00Z\"},"
                        "\"givenName\":\"A\",\"familyName\":\"B\"}";
    struct sk_record u = {.entity = sk_entity_by_collection("persons")};
    char id[37];
    int64_t modified_us;
    cr_assert_eq(sk_codec_encode(u.entity, upper, strlen(upper), &u.value, &u.value_len, id,
                                 &modified_us, &err),
                 0, "%s", err.msg);
    memcpy(u.key, "abcdef00-0000-4000-8000-00000000000a", 37);
    cr_assert_eq(sk_sink_decode(&privacy, &u, &doc, &one, &err), 0, "%s", err.msg);
    cJSON_Delete(doc);
    free(u.value);
    sk_buf_free(&one);
}

/* doc of the entity of collection, encoded and decoded under privacy: sk_sink_decode's
 * result (1: the policy deleted it), the document in *d (NULL then). */
static int decoded(const char *collection, const char *doc, const struct sk_privacy *privacy,
                   cJSON **d, struct sk_buf *text)
{
    struct sk_record r = {.entity = sk_entity_by_collection(collection)};
    struct sk_error err = {0};
    char id[37];
    int64_t modified_us;
    cr_assert_eq(sk_codec_encode(r.entity, doc, strlen(doc), &r.value, &r.value_len, id,
                                 &modified_us, &err),
                 0, "%s", err.msg);
    memcpy(r.key, id, sizeof(r.key));
    uint8_t *value = r.value; /* a policy delete takes it off the record */
    int rc = sk_sink_decode(privacy, &r, d, text, &err);
    cr_assert_geq(rc, 0, "%s", err.msg);
    free(value);
    return rc;
}

/* A group whose membership names a protected person and an unprotected one, decoded. */
static cJSON *decoded_group(enum sk_protected_mode mode, struct sk_buf *text)
{
    const char *doc =
        "{\"id\":\"00000000-0000-4000-8000-0000000000aa\",\"meta\":{\"created\":"
        "\"2024-01-01T00:00:00Z\",\"modified\":\"2024-02-01T10:00:00Z\"},\"displayName\":\"7A\","
        "\"groupType\":\"Klass\",\"groupMemberships\":["
        "{\"person\":{\"id\":\"00000000-0000-4000-8000-000000000001\",\"displayName\":"
        "\"Wilma Öberg\",\"securityMarking\":\"Skyddad folkbokföring\"}},"
        "{\"person\":{\"id\":\"00000000-0000-4000-8000-000000000002\",\"displayName\":"
        "\"Bo Ek\",\"securityMarking\":\"Ingen\"}}]}";
    struct sk_privacy privacy = {.protected_mode = mode};
    cJSON *d = NULL;
    cr_assert_eq(decoded("groups", doc, &privacy, &d, text), 0);
    return d;
}

/*
 * A reference to a protected person in another entity (a group's
 * memberships here) carries the person's name: minimal and skip take it
 * out, the reference stays. Before, the policy looked at Person documents
 * only, and a sink with minimal stored "Wilma Öberg" in the group.
 */
Test(sink_decode, a_protected_person_named_in_another_entity_loses_the_name)
{
    enum sk_protected_mode modes[] = {SK_PROTECTED_MINIMAL, SK_PROTECTED_SKIP,
                                      SK_PROTECTED_ALLOW};
    for (size_t m = 0; m < 3; m++) {
        struct sk_buf text = {0};
        cJSON *d = decoded_group(modes[m], &text);
        cJSON *members = cJSON_GetObjectItemCaseSensitive(d, "groupMemberships");
        cJSON *prot = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(members, 0), "person");
        cJSON *open = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(members, 1), "person");
        cr_assert_not_null(cJSON_GetObjectItemCaseSensitive(prot, "id"), "the reference stays");
        cr_assert_not_null(cJSON_GetObjectItemCaseSensitive(open, "displayName"));
        bool named = cJSON_GetObjectItemCaseSensitive(prot, "displayName") != NULL;
        cr_assert_eq(named, modes[m] == SK_PROTECTED_ALLOW, "mode %d: %s", (int)modes[m], text.p);
        cr_assert_eq(strstr(text.p, "Wilma") != NULL, modes[m] == SK_PROTECTED_ALLOW, "%s",
                     text.p);
        cJSON_Delete(d);
        sk_buf_free(&text);
    }
}

/* A person written with each key of `dup` twice (the codec keeps the second copy in
 * _unknown and gives both back), decoded under mode with drop_fields [civicNo]; 1 if
 * the policy deleted it. */
static int decoded_person(const char *fields, enum sk_protected_mode mode, struct sk_buf *text)
{
    char *doc = sk_asprintf("{\"id\":\"00000000-0000-4000-8000-0000000000bb\",\"meta\":"
                            "{\"created\":\"2024-01-01T00:00:00Z\",\"modified\":"
                            "\"2024-02-01T10:00:00Z\"},\"givenName\":\"Wilma\","
                            "\"familyName\":\"Öberg\",%s}",
                            fields);
    char *drops[] = {"civicNo"};
    struct sk_privacy privacy = {.protected_mode = mode, .drop_fields = {.v = drops, .n = 1}};
    cJSON *d = NULL;
    int rc = decoded("persons", doc, &privacy, &d, text);
    cJSON_Delete(d);
    free(doc);
    return rc;
}

/*
 * A record may hold a key twice or in another case ("civicNo" twice,
 * "CivicNo"): the codec keeps every copy, and a target may read another copy
 * than the first (PostgreSQL's jsonb keeps the last). drop_fields removed
 * the first "civicNo" only, and a protected marking in the second
 * securityMarking (or in NFD) was not seen: the person was stored whole with
 * their civic number.
 */
Test(sink_decode, every_copy_of_a_key_counts_for_the_privacy_policy)
{
    struct sk_buf text = {0};
    cr_assert_eq(decoded_person("\"civicNo\":{\"value\":\"201001011111\"},"
                                "\"civicNo\":{\"value\":\"201001012222\"},"
                                "\"CivicNo\":{\"value\":\"201001013333\"}",
                                SK_PROTECTED_ALLOW, &text),
                 0);
    cr_assert(!strstr(text.p, "20100101") && !strcasestr(text.p, "civicNo"), "%s", text.p);
    const char *marked[] = {
        "\"securityMarking\":\"Ingen\",\"securityMarking\":\"Skyddad folkbokföring\"",
        "\"SecurityMarking\":\"Sekretessmarkering\"",
        "\"securityMarking\":\"Skyddad folkbokfo\xcc\x88ring\"",
    };
    for (size_t i = 0; i < sizeof(marked) / sizeof(marked[0]); i++) {
        sk_buf_free(&text);
        cr_assert_eq(decoded_person(marked[i], SK_PROTECTED_SKIP, &text), 1, "%s: kept %s",
                     marked[i], text.p ? text.p : "");
        sk_buf_free(&text);
        cr_assert_eq(decoded_person(marked[i], SK_PROTECTED_MINIMAL, &text), 0);
        cr_assert(!strstr(text.p, "Wilma") && !strstr(text.p, "Öberg"), "%s", text.p);
        /* one marking left, the protected one in NFC: what a target's query reads */
        const char *m = strstr(text.p, "ecurityMarking\":\"");
        cr_assert(m && !strstr(m + 1, "ecurityMarking") && strstr(text.p, "\"securityMarking\":"),
                  "%s", text.p);
        cr_assert(strstr(m, "Skyddad folkbokföring\"") || strstr(m, "Sekretessmarkering\""),
                  "%s", text.p);
        sk_buf_free(&text);
        cr_assert_eq(decoded_person(marked[i], SK_PROTECTED_ALLOW, &text), 0);
        cr_assert(strstr(text.p, "Wilma"), "%s", text.p);
        m = strstr(text.p, "ecurityMarking\":\"");
        cr_assert(m && !strstr(m + 1, "ecurityMarking"), "allow: one marking: %s", text.p);
    }
    sk_buf_free(&text);
}
