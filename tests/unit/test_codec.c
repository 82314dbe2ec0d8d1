/*
 * test_codec.c: the SS 12000 entity table and the JSON <-> protobuf codec
 * (proto/model.c, codec.c, proto/ss12000.proto).
 *
 * The round trip runs over one maximal document per entity type
 * (tests/fixtures/codec/<collection>.json): every field the proto defines is
 * set somewhere in it, and every repeated field has 2+ items; the test checks
 * that itself, so a fixture or proto drifting apart fails here.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"
#include "util.h"
#include "ss12000.pb-c.h"

#define FIXTURES SK_SOURCE_DIR "/tests/fixtures/codec/"

/* ---- helpers ------------------------------------------------------------- */

/* Whole file, NUL-terminated, malloc'ed (caller frees); fails the test if unreadable. */
static char *read_fixture(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof(path), FIXTURES "%s", name);
    FILE *fp = fopen(path, "rb");
    cr_assert_not_null(fp, "cannot open %s", path);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

/*
 * Semantic JSON equality: object key order is ignored, everything else is
 * exact (numbers compared with ==, strings byte for byte, arrays in order).
 * Written here rather than cJSON_Compare, whose numbers compare with an epsilon.
 */
static bool json_equal(const cJSON *a, const cJSON *b)
{
    if (!a || !b)
        return a == b;
    if ((a->type & 0xFF) != (b->type & 0xFF))
        return false;
    if (cJSON_IsNumber(a))
        return a->valuedouble == b->valuedouble;
    if (cJSON_IsString(a))
        return strcmp(a->valuestring, b->valuestring) == 0;
    if (cJSON_IsArray(a)) {
        const cJSON *x = a->child, *y = b->child;
        for (; x && y; x = x->next, y = y->next)
            if (!json_equal(x, y))
                return false;
        return !x && !y;
    }
    if (cJSON_IsObject(a)) {
        if (cJSON_GetArraySize(a) != cJSON_GetArraySize(b))
            return false;
        for (const cJSON *x = a->child; x; x = x->next)
            if (!json_equal(x, cJSON_GetObjectItemCaseSensitive(b, x->string)))
                return false;
        return true;
    }
    return true; /* null, true, false: the type says it all */
}

/* Fails the test, printing both documents, unless they are json_equal. */
static void expect_json_equal(const cJSON *got, const cJSON *want, const char *what)
{
    if (json_equal(got, want))
        return;
    char *g = cJSON_Print(got), *w = cJSON_Print(want);
    cr_expect_fail("%s: JSON differs\n--- got:\n%s\n--- want:\n%s", what, g ? g : "(null)",
                   w ? w : "(null)");
    free(g);
    free(w);
}

static const struct sk_entity *entity(const char *name)
{
    const struct sk_entity *e = sk_entity_by_name(name);
    cr_assert_not_null(e, "no entity %s", name);
    return e;
}

/* JSON text -> message -> JSON object (caller cJSON_Deletes); asserts success. */
static cJSON *through_message(const char *name, const char *json, char id[37])
{
    struct sk_error err = {0};
    ProtobufCMessage *m = sk_codec_from_json_text(entity(name), json, strlen(json), id, &err);
    cr_assert_not_null(m, "%s: %s", name, err.msg);
    cJSON *out = sk_codec_to_json(m);
    protobuf_c_message_free_unpacked(m, NULL);
    cr_assert_not_null(out);
    return out;
}

/* Asserts that JSON text in round-trips to JSON text want (semantically). */
static void expect_roundtrip(const char *name, const char *in, const char *want)
{
    char id[37];
    cJSON *got = through_message(name, in, id);
    cJSON *w = cJSON_Parse(want);
    cr_assert_not_null(w, "bad test JSON: %s", want);
    expect_json_equal(got, w, name);
    cJSON_Delete(got);
    cJSON_Delete(w);
}

/* JSON text -> packed bytes -> JSON text, compared with want (semantically). */
static void expect_record_roundtrip(const char *name, const char *in, const char *want)
{
    uint8_t *bytes = NULL;
    size_t n = 0;
    char id[37];
    int64_t mod;
    struct sk_error err = {0};
    cr_assert_eq(sk_codec_encode(entity(name), in, strlen(in), &bytes, &n, id, &mod, &err), 0, "%s",
                 err.msg);
    char *json = sk_codec_decode(entity(name), bytes, n, &mod, &err);
    cr_assert_not_null(json, "%s", err.msg);
    cJSON *got = cJSON_Parse(json), *w = cJSON_Parse(want);
    cr_assert_not_null(got, "decode printed invalid JSON: %s", json);
    expect_json_equal(got, w, name);
    cJSON_Delete(got);
    cJSON_Delete(w);
    free(json);
    free(bytes);
}

/* ---- the entity table -------------------------------------------------------- */

Test(entities, table_has_18_types_each_keyed_by_a_string_id)
{
    size_t n = 0;
    for (const struct sk_entity *const *e = sk_entities; *e; e++, n++) {
        const ProtobufCFieldDescriptor *id =
            protobuf_c_message_descriptor_get_field_by_name((*e)->desc, "id");
        cr_assert_not_null(id, "%s has no id field", (*e)->name);
        cr_expect_eq(id->type, PROTOBUF_C_TYPE_STRING, "%s.id", (*e)->name);
        cr_expect_eq(id->label, PROTOBUF_C_LABEL_OPTIONAL, "%s.id", (*e)->name);
        cr_expect_not_null(protobuf_c_message_descriptor_get_field_by_name((*e)->desc, "meta"),
                           "%s has no meta", (*e)->name);
        cr_expect_eq(sk_entity_by_name((*e)->name), *e);
        cr_expect_eq(sk_entity_by_collection((*e)->collection), *e);
        cr_expect_eq(sk_entity_by_deleted_key((*e)->deleted_key), *e);
        cr_expect_eq((*e)->path[0], '/');
        /* The schema name is the package plus the EndPointsEnum name. */
        char want[64];
        snprintf(want, sizeof(want), "ss12000.v2.%s", (*e)->name);
        cr_expect_str_eq(sk_entity_schema(*e), want);
        cr_expect_eq((*e)->has_meta, strcmp((*e)->name, "SchoolUnitOffering") != 0, "%s has_meta",
                     (*e)->name);
    }
    cr_assert_eq(n, SK_ENTITY_COUNT);
    cr_assert_eq(n, 18);
}

Test(entities, order_names_and_quirky_paths)
{
    static const char *const order[] = {
        "Organisation",
        "Programme",
        "Syllabus",
        "SchoolUnitOffering",
        "Person",
        "Duty",
        "Group",
        "Placement",
        "Activity",
        "CalendarEvent",
        "Attendance",
        "AttendanceEvent",
        "AttendanceSchedule",
        "Absence",
        "Grade",
        "StudyPlan",
        "Resource",
        "Room",
    };
    for (size_t i = 0; i < 18; i++)
        cr_expect_str_eq(sk_entities[i]->name, order[i]);
    cr_expect_null(sk_entities[18]);

    const struct sk_entity *sp = entity("StudyPlan");
    cr_expect_str_eq(sp->path, "/studyplans");
    cr_expect_str_eq(sp->collection, "studyPlans");
    const struct sk_entity *as = entity("AttendanceSchedule");
    cr_expect_str_eq(as->path, "/attendanceSchedule");
    cr_expect_str_eq(as->collection, "attendanceSchedules");
    cr_expect_str_eq(as->deleted_key, "attendanceSchedules");
    const struct sk_entity *act = entity("Activity");
    cr_expect_str_eq(act->deleted_key, "activitites");
    cr_expect_str_eq(act->deleted_alt, "activities");
    cr_expect_eq(sk_entity_by_deleted_key("activities"), act);
    cr_expect_eq(sk_entity_by_deleted_key("activitites"), act);
    cr_expect_eq(sk_entity_by_collection("persons"), entity("Person"));
    cr_expect_null(sk_entity_by_name("person"));
    cr_expect_null(sk_entity_by_name(NULL));
    cr_expect_null(sk_entity_by_collection("nope"));
    cr_expect_null(sk_entity_by_deleted_key(""));
}

/* ---- the maximal round trip ---------------------------------------------------- */

/* Largest count seen per field descriptor while walking fixture messages. */
struct seen {
    const ProtobufCFieldDescriptor *f;
    size_t max_n;
};
static struct seen seen_fields[1024];
static size_t n_seen;

static void note_field(const ProtobufCFieldDescriptor *f, size_t n)
{
    for (size_t i = 0; i < n_seen; i++) {
        if (seen_fields[i].f == f) {
            if (n > seen_fields[i].max_n)
                seen_fields[i].max_n = n;
            return;
        }
    }
    cr_assert_lt(n_seen, sizeof(seen_fields) / sizeof(seen_fields[0]));
    seen_fields[n_seen++] = (struct seen){f, n};
}

static size_t seen_count(const ProtobufCFieldDescriptor *f)
{
    for (size_t i = 0; i < n_seen; i++)
        if (seen_fields[i].f == f)
            return seen_fields[i].max_n;
    return 0;
}

/* Records every present field of m (recursively); asserts no _unknown anywhere. */
static void walk_message(const ProtobufCMessage *m, const char *path)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m;
        if (f->id == 15000) {
            const char *unknown = *(char *const *)(base + f->offset);
            cr_expect_null(unknown, "%s: fixture key not in the proto: %s", path,
                           unknown ? unknown : "");
            continue;
        }
        size_t n;
        if (f->label == PROTOBUF_C_LABEL_REPEATED)
            n = *(const size_t *)(base + f->quantifier_offset);
        else if (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE)
            n = *(void *const *)(base + f->offset) != NULL;
        else
            n = *(const protobuf_c_boolean *)(base + f->quantifier_offset) != 0;
        if (n)
            note_field(f, n);
        if (f->type != PROTOBUF_C_TYPE_MESSAGE || !n)
            continue;
        char sub[256];
        snprintf(sub, sizeof(sub), "%s.%s", path, f->name);
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++)
                walk_message(arr[k], sub);
        } else {
            walk_message(*(ProtobufCMessage *const *)(base + f->offset), sub);
        }
    }
}

/* Asserts every field reachable from d was seen, and repeated ones with 2+ items. */
static void expect_maximal(const ProtobufCMessageDescriptor *d, const char *path)
{
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->id == 15000)
            continue;
        size_t n = seen_count(f);
        cr_expect_gt(n, 0, "fixture never sets %s.%s", path, f->name);
        if (f->label == PROTOBUF_C_LABEL_REPEATED)
            cr_expect_geq(n, 2, "fixture has fewer than 2 items in %s.%s", path, f->name);
        if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            char sub[256];
            snprintf(sub, sizeof(sub), "%s.%s", path, f->name);
            expect_maximal(f->descriptor, sub);
        }
    }
}

ParameterizedTestParameters(roundtrip, maximal_document)
{
    static int idx[SK_ENTITY_COUNT];
    for (int i = 0; i < SK_ENTITY_COUNT; i++)
        idx[i] = i;
    return cr_make_param_array(int, idx, SK_ENTITY_COUNT);
}

ParameterizedTest(int *i, roundtrip, maximal_document)
{
    const struct sk_entity *e = sk_entities[*i];
    char name[128];
    snprintf(name, sizeof(name), "%s.json", e->collection);
    size_t len;
    char *text = read_fixture(name, &len);
    cJSON *want = cJSON_Parse(text);
    cr_assert_not_null(want, "%s does not parse", name);
    const char *want_id = cJSON_GetObjectItemCaseSensitive(want, "id")->valuestring;

    /* JSON -> message: every key maps to a field, every field is exercised. */
    struct sk_error err = {0};
    char id[37];
    ProtobufCMessage *m = sk_codec_from_json_text(e, text, len, id, &err);
    cr_assert_not_null(m, "%s: %s", e->name, err.msg);
    cr_assert_eq(m->descriptor, e->desc);
    cr_expect_str_eq(id, want_id);
    n_seen = 0;
    walk_message(m, e->name);
    expect_maximal(e->desc, e->name);

    /* message -> JSON */
    cJSON *got = sk_codec_to_json(m);
    protobuf_c_message_free_unpacked(m, NULL);
    expect_json_equal(got, want, e->name);
    cJSON_Delete(got);

    /* JSON -> packed bytes -> JSON, the record path */
    uint8_t *bytes = NULL;
    size_t n_bytes = 0;
    int64_t mod_enc = 0, mod_dec = 0, mod_want;
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(want, "meta");
    cr_assert_eq(sk_time_parse_us(cJSON_GetObjectItemCaseSensitive(meta, "modified")->valuestring,
                                  &mod_want),
                 0);
    cr_assert_eq(sk_codec_encode(e, text, len, &bytes, &n_bytes, id, &mod_enc, &err), 0, "%s: %s",
                 e->name, err.msg);
    cr_expect_gt(n_bytes, 0);
    cr_expect_eq(mod_enc, mod_want);
    char *json = sk_codec_decode(e, bytes, n_bytes, &mod_dec, &err);
    cr_assert_not_null(json, "%s: %s", e->name, err.msg);
    cr_expect_eq(mod_dec, mod_want);
    cr_expect_null(strchr(json, '\n'), "decode output is not compact");
    got = cJSON_Parse(json);
    expect_json_equal(got, want, e->name);

    cJSON_Delete(got);
    free(json);
    free(bytes);
    cJSON_Delete(want);
    free(text);
}

/* ---- losslessness beyond the spec ---------------------------------------------- */

#define PID "9d4c2b1a-3e5f-4a6b-8c7d-1e2f3a4b5c6d"

Test(lossless, unknown_keys_top_level_and_nested_survive)
{
    const char *doc =
        "{\"id\":\"" PID "\",\"givenName\":\"Åsa\",\"vendorX\":{\"a\":[1,2,{\"b\":null}]},"
        "\"_embedded\":{\"duties\":[{\"id\":\"x\"}]},"
        "\"meta\":{\"modified\":\"2025-01-01T00:00:00Z\",\"etag\":\"W/1\"},"
        "\"civicNo\":{\"value\":\"201201012384\",\"checked\":true},"
        "\"emails\":[{\"value\":\"a@b.se\",\"type\":\"Privat\",\"verified\":false},"
        "{\"value\":\"c@d.se\",\"primary\":1}],"
        "\"responsibles\":[{\"person\":{\"id\":\"" PID "\",\"extra\":\"ö\"},"
        "\"relationType\":\"God man\"}],"
        "\"_unknown\":\"a key that looks like ours\"}";
    expect_roundtrip("Person", doc, doc);
    expect_record_roundtrip("Person", doc, doc);

    /* And the unknowns really are in _unknown, not dropped into some field. */
    char id[37];
    struct sk_error err = {0};
    Ss12000__V2__Person *p = (Ss12000__V2__Person *)sk_codec_from_json_text(entity("Person"), doc,
                                                                            strlen(doc), id, &err);
    cr_assert_not_null(p, "%s", err.msg);
    cr_assert_not_null(p->_unknown);
    cJSON *u = cJSON_Parse(p->_unknown);
    cr_expect_not_null(cJSON_GetObjectItemCaseSensitive(u, "vendorX"));
    cr_expect_not_null(cJSON_GetObjectItemCaseSensitive(u, "_embedded"));
    cr_expect_not_null(cJSON_GetObjectItemCaseSensitive(u, "_unknown"));
    cr_expect_null(cJSON_GetObjectItemCaseSensitive(u, "givenName"));
    cJSON_Delete(u);
    cr_assert_not_null(p->meta);
    cr_expect_str_eq(p->meta->_unknown, "{\"etag\":\"W/1\"}");
    cr_assert_eq(p->n_emails, 2);
    cr_expect_str_eq(p->emails[0]->_unknown, "{\"verified\":false}");
    cr_expect_null(p->emails[1]->type);
    cr_expect_str_eq(p->emails[1]->_unknown, "{\"primary\":1}");
    cr_expect_str_eq(p->responsibles[0]->person->_unknown, "{\"extra\":\"ö\"}");
    protobuf_c_message_free_unpacked(&p->base, NULL);
}

Test(lossless, null_values_survive)
{
    const char *doc = "{\"id\":\"" PID "\",\"middleName\":null,\"familyName\":\"Öberg\","
                      "\"civicNo\":null,\"emails\":null,"
                      "\"enrolments\":[{\"enroledAt\":{\"id\":\"" PID "\",\"displayName\":null},"
                      "\"endDate\":null,\"cancelled\":null}]}";
    expect_roundtrip("Person", doc, doc);
}

Test(lossless, values_of_the_wrong_type_survive)
{
    const char *doc = "{\"id\":\"" PID "\",\"meta\":{\"created\":5},"
                      "\"dutyPercent\":\"100\",\"hoursPerYear\":12.5,\"description\":17,"
                      "\"signature\":[\"a\"],\"person\":\"not an object\","
                      "\"assignmentRole\":{\"group\":{}},\"startDate\":true}";
    expect_roundtrip("Duty", doc, doc);

    /* Arrays: empty, mixed, and with a wrong element type keep their shape. */
    const char *doc2 = "{\"id\":\"" PID "\",\"eduPersonPrincipalNames\":[],"
                       "\"emails\":[{\"value\":\"a@b.se\"},\"x\"],"
                       "\"addresses\":[{\"countyCode\":\"01\",\"municipalityCode\":1e300}],"
                       "\"externalIdentifiers\":[{\"globallyUnique\":\"yes\"},{}],"
                       "\"phoneNumbers\":[null]}";
    expect_roundtrip("Person", doc2, doc2);
    expect_record_roundtrip("Person", doc2, doc2);
}

Test(lossless, integers_beyond_double_precision_and_fractions_are_not_truncated)
{
    char id[37];
    cJSON *got = through_message("Room", "{\"id\":\"" PID "\",\"seats\":1.5}", id);
    cJSON *seats = cJSON_GetObjectItemCaseSensitive(got, "seats");
    cr_assert(cJSON_IsNumber(seats));
    cr_expect_eq(seats->valuedouble, 1.5);
    cJSON_Delete(got);

    got = through_message("Room", "{\"id\":\"" PID "\",\"seats\":-9007199254740992}", id);
    cr_expect_eq(cJSON_GetObjectItemCaseSensitive(got, "seats")->valuedouble, -9007199254740992.0);
    cJSON_Delete(got);
}

Test(lossless, doubles_keep_their_exact_value)
{
    /*
     * cJSON alone prints 0.30000000000000004 as 0.3 and 2^53-1 as
     * 9.00719925474099e+15 (its 15-digit test allows one ulp): the codec must not.
     */
    const char *doc = "{\"id\":\"" PID "\",\"pi\":3.141592653589793,\"tiny\":1e-300,"
                      "\"tenth\":0.1,\"sum\":0.30000000000000004,\"big\":1.7976931348623157e308,"
                      "\"neg\":-0.000123456789012345,\"int\":9007199254740991,"
                      "\"nested\":[{\"x\":2.0000000000000004}]}";
    expect_roundtrip("Room", doc, doc);
    expect_record_roundtrip("Room", doc, doc);
    /* And an integer field with the largest exact value. */
    const char *seats = "{\"id\":\"" PID "\",\"seats\":9007199254740991}";
    expect_record_roundtrip("Room", seats, seats);
}

Test(lossless, non_ascii_and_escapes)
{
    /* \u escapes decode to UTF-8 (also a surrogate pair); raw UTF-8 stays as is. */
    const char *in = "{\"id\":\"" PID "\",\"displayName\":\"S\\u00e5l \\u00c4 \\u00f6 "
                     "\\ud83d\\ude00 \\\"q\\\" \\\\ \\n\",\"description\":\"Åäö ÅÄÖ é ß\"}";
    const char *want = "{\"id\":\"" PID "\","
                       "\"displayName\":\"Sål Ä ö \xF0\x9F\x98\x80 \\\"q\\\" "
                       "\\\\ \\n\",\"description\":\"Åäö ÅÄÖ é ß\"}";
    expect_roundtrip("Resource", in, want);
    expect_record_roundtrip("Resource", in, want);

    char id[37];
    struct sk_error err = {0};
    Ss12000__V2__Resource *r = (Ss12000__V2__Resource *)sk_codec_from_json_text(
        entity("Resource"), in, strlen(in), id, &err);
    cr_assert_not_null(r, "%s", err.msg);
    cr_expect_str_eq(r->displayname, "S\xC3\xA5l \xC3\x84 \xC3\xB6 \xF0\x9F\x98\x80 \"q\" \\ \n");
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

Test(lossless, timestamps_are_kept_verbatim)
{
    const char *doc = "{\"id\":\"" PID "\","
                      "\"meta\":{\"created\":\"2025-01-01T00:00:00.123456789+02:00\","
                      "\"modified\":\"2025-06-01T12:00:00-00:30\"},"
                      "\"startTime\":\"2025-01-01T08:00:00Z\","
                      "\"endTime\":\"2025-01-01T09:00:00.5+02:00\"}";
    expect_roundtrip("Absence", doc, doc);
}

Test(lossless, duplicate_keys_all_survive)
{
    char id[37];
    cJSON *got = through_message(
        "Room", "{\"id\":\"" PID "\",\"seats\":1,\"seats\":2,\"displayName\":\"a\"}", id);
    int n = 0;
    double sum = 0;
    for (const cJSON *c = got->child; c; c = c->next)
        if (strcmp(c->string, "seats") == 0) {
            n++;
            sum += c->valuedouble;
        }
    cr_expect_eq(n, 2);
    cr_expect_eq(sum, 3.0);
    cJSON_Delete(got);
}

/* Packs doc (one JSON object) as entity name; the bytes are malloc'ed. */
static uint8_t *pack_text(const char *name, const char *doc, size_t *len)
{
    cJSON *obj = cJSON_Parse(doc);
    cr_assert_not_null(obj, "test JSON does not parse: %s", doc);
    uint8_t *out = NULL;
    char id[37];
    struct sk_error err = {0};
    cr_assert_eq(sk_codec_pack_json(entity(name), obj, &out, len, id, NULL, &err), 0, "%s",
                 err.msg);
    cJSON_Delete(obj);
    return out;
}

/* The field lookup tries the fields after the last match first (codec.c
 * field_for_key): any other order must give the same message. */
Test(codec, keys_in_any_order_pack_to_the_same_bytes)
{
    static const char *const keys[] = {
        "\"id\":\"" PID "\"",
        "\"meta\":{\"created\":\"2025-01-01T00:00:00Z\",\"modified\":\"2025-02-01T00:00:00Z\"}",
        "\"givenName\":\"Åsa\"",
        "\"familyName\":\"Öberg\"",
        "\"eduPersonPrincipalNames\":[\"a@b.se\"]",
        "\"civicNo\":{\"value\":\"201201012384\",\"nationality\":\"SE\"}",
        "\"birthDate\":\"2012-01-01\"",
        "\"personStatus\":\"Aktiv\"",
        "\"emails\":[{\"value\":\"a@b.se\",\"type\":\"Privat\"}]",
        "\"photo\":\"x\"",
        "\"responsibles\":[{\"person\":{\"id\":\"" PID "\"},\"relationType\":\"Vårdnadshavare\"}]",
    };
    enum { N = sizeof(keys) / sizeof(keys[0]) };
    static const int orders[][N] = {
        {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10},  /* the spec's order */
        {10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0},  /* reversed: every key misses the hint */
        {3, 0, 10, 2, 7, 1, 9, 4, 6, 8, 5},  /* shuffled */
        {0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9},  /* pairs swapped: a step back each time */
    };
    uint8_t *first = NULL;
    size_t first_len = 0;
    for (size_t o = 0; o < sizeof(orders) / sizeof(orders[0]); o++) {
        char doc[2048] = "{";
        for (int k = 0; k < N; k++) {
            strcat(doc, keys[orders[o][k]]);
            strcat(doc, k + 1 < N ? "," : "}");
        }
        size_t len;
        uint8_t *bytes = pack_text("Person", doc, &len);
        if (!first) {
            first = bytes;
            first_len = len;
            /* and nothing went to _unknown: every key found its field */
            Ss12000__V2__Person *p = ss12000__v2__person__unpack(NULL, len, bytes);
            cr_assert_not_null(p);
            cr_expect_null(p->_unknown);
            cr_expect_str_eq(p->familyname, "Öberg");
            cr_expect_str_eq(p->photo, "x");
            ss12000__v2__person__free_unpacked(p, NULL);
            continue;
        }
        cr_expect_eq(len, first_len, "order %zu: %zu bytes, not %zu", o, len, first_len);
        cr_expect(len == first_len && memcmp(bytes, first, len) == 0, "order %zu: other bytes", o);
        free(bytes);
    }
    free(first);
}

/* ---- quirk spellings ------------------------------------------------------------------ */

Test(quirks, titleEngish_is_accepted_and_normalised)
{
    /* 2.0 spelling in Syllabus.specialisationCourseContent ... */
    expect_roundtrip("Syllabus",
                     "{\"id\":\"" PID "\",\"specialisationCourseContent\":"
                     "{\"title\":\"Å\",\"titleEngish\":\"English title\"}}",
                     "{\"id\":\"" PID "\",\"specialisationCourseContent\":"
                     "{\"title\":\"Å\",\"titleEnglish\":\"English title\"}}");
    /* ... and in Grade.diplomaProject. */
    expect_roundtrip("Grade", "{\"id\":\"" PID "\",\"diplomaProject\":{\"titleEngish\":\"T\"}}",
                     "{\"id\":\"" PID "\",\"diplomaProject\":{\"titleEnglish\":\"T\"}}");
    /* The 2.1 spelling as well, and both at once keep the second as an unknown. */
    expect_roundtrip("Grade", "{\"id\":\"" PID "\",\"diplomaProject\":{\"titleEnglish\":\"T\"}}",
                     "{\"id\":\"" PID "\",\"diplomaProject\":{\"titleEnglish\":\"T\"}}");
    const char *both = "{\"id\":\"" PID "\","
                       "\"diplomaProject\":{\"titleEnglish\":\"A\",\"titleEngish\":\"B\"}}";
    expect_roundtrip("Grade", both, both);

    char id[37];
    struct sk_error err = {0};
    const char *doc =
        "{\"id\":\"" PID "\",\"specialisationCourseContent\":{\"titleEngish\":\"E\"}}";
    Ss12000__V2__Syllabus *s = (Ss12000__V2__Syllabus *)sk_codec_from_json_text(
        entity("Syllabus"), doc, strlen(doc), id, &err);
    cr_assert_not_null(s, "%s", err.msg);
    cr_assert_not_null(s->specialisationcoursecontent);
    cr_expect_str_eq(s->specialisationcoursecontent->titleenglish, "E");
    cr_expect_null(s->specialisationcoursecontent->_unknown);
    protobuf_c_message_free_unpacked(&s->base, NULL);

    /* An alias only applies where its target exists: elsewhere it is just unknown. */
    expect_roundtrip("Room", "{\"id\":\"" PID "\",\"titleEngish\":\"x\"}",
                     "{\"id\":\"" PID "\",\"titleEngish\":\"x\"}");
}

/* ---- ids and bad input ------------------------------------------------------------------ */

static void expect_permanent(const char *name, const char *json, size_t len)
{
    char id[37];
    struct sk_error err = {0};
    ProtobufCMessage *m = sk_codec_from_json_text(entity(name), json, len, id, &err);
    cr_expect_null(m, "accepted: %.*s", (int)len, json);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    cr_expect_eq(err.cls, SK_ERR_PERMANENT, "class %d for %.*s", err.cls, (int)len, json);
    cr_expect_neq(err.msg[0], '\0');

    uint8_t *out = NULL;
    size_t n = 0;
    int64_t mod = 0;
    struct sk_error err2 = {0};
    cr_expect_eq(sk_codec_encode(entity(name), json, len, &out, &n, id, &mod, &err2), -1);
    cr_expect_null(out);
    cr_expect_eq(err2.cls, SK_ERR_PERMANENT);
}

#define EXPECT_PERMANENT(name, lit) expect_permanent(name, lit, strlen(lit))

Test(ids, invalid_or_missing_id_is_permanent)
{
    EXPECT_PERMANENT("Person", "{\"givenName\":\"Åsa\"}");
    EXPECT_PERMANENT("Person", "{\"id\":null}");
    EXPECT_PERMANENT("Person", "{\"id\":42}");
    EXPECT_PERMANENT("Person", "{\"id\":\"\"}");
    EXPECT_PERMANENT("Person", "{\"id\":\"9d4c2b1a-3e5f-4a6b-8c7d-1e2f3a4b5c6\"}");
    EXPECT_PERMANENT("Person", "{\"id\":\"9d4c2b1a-3e5f-4a6b-8c7d-1e2f3a4b5c6d0\"}");
    EXPECT_PERMANENT("Person", "{\"id\":\"9d4c2b1a3e5f-4a6b-8c7d-1e2f3a4b5c6d0\"}");
    EXPECT_PERMANENT("Person", "{\"id\":\"9d4c2b1a-3e5f-4a6b-8c7d-1e2f3a4b5c6g\"}");
    EXPECT_PERMANENT("Person", "{\"id\":\" 9d4c2b1a-3e5f-4a6b-8c7d-1e2f3a4b5c6\"}");
    EXPECT_PERMANENT("Person", "{\"id\":\"{9d4c2b1a-3e5f-4a6b-8c7d-1e2f3a4b5c6d}\"}");
    /* SchoolUnitOffering has no id in the spec, but needs one to be keyed. */
    EXPECT_PERMANENT("SchoolUnitOffering", "{\"offeredAt\":{\"id\":\"" PID "\"}}");
}

Test(ids, uppercase_id_is_lowercased)
{
    const char *doc = "{\"id\":\"9D4C2B1A-3E5F-4A6B-8C7D-1E2F3A4B5C6D\",\"displayName\":\"R\","
                      "\"owner\":{\"id\":\"C0B7E1D2-6F0A-4D8E-8A51-3E2F4B6C7D12\"}}";
    char id[37];
    cJSON *got = through_message("Room", doc, id);
    cr_expect_str_eq(id, PID);
    cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(got, "id")->valuestring, PID);
    /* Only the record's own id is normalised; references stay verbatim. */
    cr_expect_str_eq(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(got, "owner"), "id")
            ->valuestring,
        "C0B7E1D2-6F0A-4D8E-8A51-3E2F4B6C7D12");
    cJSON_Delete(got);
}

Test(input, non_object_top_level_is_permanent)
{
    EXPECT_PERMANENT("Person", "[{\"id\":\"" PID "\"}]");
    EXPECT_PERMANENT("Person", "\"" PID "\"");
    EXPECT_PERMANENT("Person", "42");
    EXPECT_PERMANENT("Person", "null");
    EXPECT_PERMANENT("Person", "");
    EXPECT_PERMANENT("Person", "{\"id\":\"" PID "\"");
    EXPECT_PERMANENT("Person", "{\"id\":\"" PID "\"} trailing");
    /* Trailing whitespace is fine (a file or HTTP body ends in a newline). */
    char id_ws[37];
    cJSON *ok = through_message("Person", "{\"id\":\"" PID "\"}\r\n \t", id_ws);
    cJSON_Delete(ok);
    /* Length is honoured: the text need not be NUL-terminated. */
    expect_permanent("Person", "{\"id\":\"" PID "\"}", 10);

    char id[37];
    struct sk_error err = {0};
    cJSON *arr = cJSON_CreateArray();
    cr_expect_null(sk_codec_from_json(entity("Person"), arr, id, &err));
    cr_expect_eq(err.cls, SK_ERR_PERMANENT);
    cJSON_Delete(arr);
}

Test(input, decode_of_garbage_is_an_error_not_a_crash)
{
    static const uint8_t garbage[][8] = {
        {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, /* bad varint tag */
        {0x0a, 0x7f, 'a', 'b'},                           /* id: length beyond the end */
        {0x12, 0x05, 0x0a, 0x09, 'x'},                    /* meta: nested length beyond its end */
        {0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /* start-group wire type */
        {0x08, 0x01},                                     /* id (string) sent as varint */
    };
    const struct sk_entity *e = entity("Person");
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
        struct sk_error err = {0};
        int64_t mod = 0;
        char *json = sk_codec_decode(e, garbage[i], sizeof(garbage[i]), &mod, &err);
        cr_expect_null(json, "garbage %zu decoded to %s", i, json ? json : "");
        free(json);
        cr_expect_eq(err.cls, SK_ERR_PERMANENT, "garbage %zu", i);
    }
    /* Every truncation of a valid record either decodes or fails cleanly. */
    size_t len;
    char *text = read_fixture("persons.json", &len);
    uint8_t *bytes;
    size_t n;
    char id[37];
    int64_t mod;
    struct sk_error err = {0};
    cr_assert_eq(sk_codec_encode(e, text, len, &bytes, &n, id, &mod, &err), 0, "%s", err.msg);
    for (size_t cut = 0; cut < n; cut++) {
        char *json = sk_codec_decode(e, bytes, cut, &mod, &err);
        free(json);
    }
    free(bytes);
    free(text);
}

Test(input, modified_absent_or_unparseable_is_int64_min)
{
    static const char *const docs[] = {
        "{\"id\":\"" PID "\"}",
        "{\"id\":\"" PID "\",\"meta\":{\"created\":\"2025-01-01T00:00:00Z\"}}",
        "{\"id\":\"" PID "\",\"meta\":{\"modified\":\"2025-01-01\"}}",
        "{\"id\":\"" PID "\",\"meta\":{\"modified\":null}}",
        "{\"id\":\"" PID "\",\"meta\":\"2025-01-01T00:00:00Z\"}",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        uint8_t *bytes = NULL;
        size_t n;
        char id[37];
        int64_t mod = 0;
        struct sk_error err = {0};
        cr_assert_eq(
            sk_codec_encode(entity("Room"), docs[i], strlen(docs[i]), &bytes, &n, id, &mod, &err),
            0, "%s", err.msg);
        cr_expect_eq(mod, INT64_MIN, "doc %zu", i);
        mod = 0;
        char *json = sk_codec_decode(entity("Room"), bytes, n, &mod, &err);
        cr_assert_not_null(json);
        cr_expect_eq(mod, INT64_MIN, "doc %zu", i);
        /* The unparseable value itself still round-trips. */
        cJSON *got = cJSON_Parse(json), *want = cJSON_Parse(docs[i]);
        expect_json_equal(got, want, docs[i]);
        cJSON_Delete(got);
        cJSON_Delete(want);
        free(json);
        free(bytes);
    }
}

/* ---- value checks -------------------------------------------------------------------------- */

Test(values, uuid_normalize)
{
    char out[37];
    cr_expect_eq(sk_uuid_normalize("9D4C2B1A-3E5F-4A6B-8C7D-1E2F3A4B5C6D", out), 0);
    cr_expect_str_eq(out, PID);
    cr_expect_eq(sk_uuid_normalize(PID, out), 0);
    cr_expect_str_eq(out, PID);
    cr_expect_eq(sk_uuid_normalize("00000000-0000-0000-0000-000000000000", out), 0);
    static const char *const bad[] = {
        "",
        "9d4c2b1a",
        PID "0",
        "9d4c2b1a-3e5f-4a6b-8c7d_1e2f3a4b5c6d",
        "9d4c2b1a3e5f4a6b8c7d1e2f3a4b5c6d",
        "9d4c2b1a-3e5f-4a6b-8c7d-1e2f3a4b5c6z",
        "+d4c2b1a-3e5f-4a6b-8c7d-1e2f3a4b5c6d",
        "9d4c2b1a-3e5f-4a6b-8c7d-1e2f3a4b5c6 ",
        "9d4c2b1a--e5f-4a6b-8c7d-1e2f3a4b5c6d",  /* a dash for a digit */
        "9d4c2b1a03e5f-4a6b-8c7d-1e2f3a4b5c6d",  /* a digit for a dash */
        "-d4c2b1a-3e5f-4a6b-8c7d-1e2f3a4b5c6d",
        "9d4c2b1a-3e5f-4a6b-8c7d-1e2f3a4b5c6\xc3",
        "9d4c2b1a-3e5f-4a6b-8c7d-1e2f3a4b5c\x00d",
        "------------------------------------",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memcpy(out, "untouched", 10);
        cr_expect_eq(sk_uuid_normalize(bad[i], out), -1, "accepted %s", bad[i]);
        cr_expect_str_eq(out, "untouched", "a refused text was written out: %s", bad[i]);
    }
    cr_expect_eq(sk_uuid_normalize(NULL, out), -1);
}

Test(values, time_parse_us)
{
    static const struct {
        const char *text;
        int64_t us;
    } good[] = {
        {"2024-06-20T16:40:03.125+02:00", 1718894403125000},
        {"2024-06-20T14:40:03.125Z", 1718894403125000},
        {"2024-06-20t14:40:03.125z", 1718894403125000},
        {"2024-06-20 14:40:03.125Z", 1718894403125000},
        {"2025-09-02T06:15:00Z", 1756793700000000},
        {"1970-01-01T00:00:00Z", 0},
        {"1970-01-01T00:00:00+00:00", 0},
        {"1970-01-01T00:00:00-00:00", 0},
        {"2000-02-29T23:59:59.999999-05:30", 951888599999999},
        {"2000-02-29T23:59:59.9999999-05:30", 951888599999999}, /* truncated to µs */
        {"1969-12-31T23:59:59.5Z", -500000},
        {"2016-12-31T23:59:60Z", 1483228800000000}, /* leap second */
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        int64_t us = 42;
        cr_expect_eq(sk_time_parse_us(good[i].text, &us), 0, "rejected %s", good[i].text);
        cr_expect_eq(us, good[i].us, "%s: %lld", good[i].text, (long long)us);
    }
    static const char *const bad[] = {
        "",
        "2024-06-20",
        "2024-06-20T16:40:03",    /* no offset */
        "2024-06-20T16:40+02:00", /* no seconds */
        "2024-06-20T16:40:03.+02:00",
        "2024-06-20T16:40:03+0200",
        "2024-06-20T16:40:03+02",
        "2024-13-20T16:40:03Z",
        "2023-02-29T16:40:03Z",
        "2024-06-31T16:40:03Z",
        "2024-06-20T24:00:00Z",
        "2024-06-20T16:60:03Z",
        "2024-06-20T16:40:03+24:00",
        "2024-06-20T16:40:03Zjunk",
        "2024-06-20X16:40:03Z",
        "20240620T164003Z",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t us;
        cr_expect_eq(sk_time_parse_us(bad[i], &us), -1, "accepted %s", bad[i]);
    }
    int64_t us;
    cr_expect_eq(sk_time_parse_us(NULL, &us), -1);
}

/* The comparison the round trip relies on must itself see differences. */
Test(values, json_equal_ignores_order_only)
{
    cJSON *a = cJSON_Parse("{\"a\":1,\"b\":[1,2],\"c\":{\"d\":\"å\",\"e\":null}}");
    cJSON *b = cJSON_Parse("{\"c\":{\"e\":null,\"d\":\"å\"},\"b\":[1,2],\"a\":1}");
    cr_expect(json_equal(a, b));
    static const char *const differ[] = {
        "{\"a\":1,\"b\":[2,1],\"c\":{\"d\":\"å\",\"e\":null}}",
        "{\"a\":1,\"b\":[1,2],\"c\":{\"d\":\"a\",\"e\":null}}",
        "{\"a\":1,\"b\":[1,2],\"c\":{\"d\":\"å\"}}",
        "{\"a\":1,\"b\":[1,2],\"c\":{\"d\":\"å\",\"e\":false}}",
        "{\"a\":1.0000001,\"b\":[1,2],\"c\":{\"d\":\"å\",\"e\":null}}",
        "{\"a\":\"1\",\"b\":[1,2],\"c\":{\"d\":\"å\",\"e\":null}}",
        "{\"a\":1,\"b\":[1,2],\"c\":{\"d\":\"å\",\"e\":null},\"f\":0}",
        "{\"a\":1,\"b\":[1,2,3],\"c\":{\"d\":\"å\",\"e\":null}}",
    };
    for (size_t i = 0; i < sizeof(differ) / sizeof(differ[0]); i++) {
        cJSON *c = cJSON_Parse(differ[i]);
        cr_assert_not_null(c);
        cr_expect_not(json_equal(a, c), "equal: %s", differ[i]);
        cr_expect_not(json_equal(c, a), "equal: %s", differ[i]);
        cJSON_Delete(c);
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
}

/* ---- bytes cJSON would keep broken or cut (hostile input #13) ------------- */

static const char *bad_at(const char *text, size_t len, size_t *at)
{
    *at = (size_t)-1;
    return sk_json_text_bad(text, len, at);
}

/* The check skips plain runs 8 bytes at a time: a bad byte is found at
 * every offset of a long text, also next to and inside such runs. */
Test(codec, text_check_finds_bad_bytes_at_every_offset_of_a_long_text)
{
    static const struct {
        const char *bytes, *what;
        size_t n;
    } cases[] = {
        {"\0", "a NUL byte", 1},
        {"\\u0000", "a \\u0000 escape (a NUL character)", 6},
        {"\xff", "invalid UTF-8", 1},
        {"\xed\xa0\x80", "invalid UTF-8", 3},
    };
    char text[80];
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        for (size_t pos = 1; pos + cases[c].n + 1 < sizeof(text); pos++) {
            memset(text, 'a', sizeof(text));
            text[0] = '"';
            text[sizeof(text) - 1] = '"';
            memcpy(text + pos, cases[c].bytes, cases[c].n);
            size_t at;
            const char *bad = bad_at(text, sizeof(text), &at);
            cr_assert_not_null(bad, "%s at %zu not found", cases[c].what, pos);
            cr_assert_str_eq(bad, cases[c].what, "at %zu", pos);
            cr_assert_eq(at, pos, "%s: found at %zu, not %zu", cases[c].what, at, pos);
        }
    }
    /* an escaped quote does not end the string, at any offset */
    for (size_t pos = 1; pos + 9 < sizeof(text); pos++) {
        memset(text, 'a', sizeof(text));
        text[0] = '"';
        text[sizeof(text) - 1] = '"';
        memcpy(text + pos, "\\\"\\u0000", 8);
        size_t at;
        cr_assert_not_null(bad_at(text, sizeof(text), &at), "at %zu", pos);
        cr_assert_eq(at, pos + 2);
    }
}

Test(codec, text_check_finds_nul_escaped_nul_and_invalid_utf8_with_their_position)
{
    size_t at;
    cr_assert_null(bad_at("{\"a\":\"åäö 😀 \\n\\t\\\\u0000\"}", 29, &at),
                   "valid UTF-8, and an escaped backslash before u0000 is text");
    const char nul[] = "{\"a\":\"x\0y\"}";
    cr_assert_str_eq(bad_at(nul, sizeof(nul) - 1, &at), "a NUL byte");
    cr_assert_eq(at, 7);
    cr_assert_str_eq(bad_at("{\"a\":\"x\\u0000y\"}", 16, &at),
                     "a \\u0000 escape (a NUL character)");
    cr_assert_eq(at, 7);
    const char *invalid[] = {
        "{\"a\":\"\xff\"}",             /* never in UTF-8 */
        "{\"a\":\"\xc3\"}",             /* cut sequence */
        "{\"a\":\"\xc0\xaf\"}",         /* overlong '/' */
        "{\"a\":\"\xe0\x80\xaf\"}",     /* overlong, 3 bytes */
        "{\"a\":\"\xed\xa0\x80\"}",     /* a UTF-16 surrogate */
        "{\"a\":\"\xf4\x90\x80\x80\"}", /* beyond U+10FFFF */
    };
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        cr_assert_str_eq(bad_at(invalid[i], strlen(invalid[i]), &at), "invalid UTF-8", "case %zu",
                         i);
        cr_assert_eq(at, 6, "case %zu", i);
    }
    /* the codec refuses such text with the position, never stores it cut */
    char id[37];
    struct sk_error err = {0};
    const char person[] =
        "{\"id\":\"3f1c5a0e-0000-4000-8000-000000000001\",\"givenName\":\"A\0B\"}";
    cr_assert_null(
        sk_codec_from_json_text(sk_entity_by_name("Person"), person, sizeof(person) - 1, id, &err));
    cr_assert_str_eq(err.msg, "Person: a NUL byte at byte 59");
    cr_assert_eq(err.cls, SK_ERR_PERMANENT);
}

Test(codec, array_spans_find_each_element_of_a_page_without_parsing_it)
{
    const char page[] =
        " {\"pageToken\": \"a]}\\\"\", \"x\": {\"data\": [1]},"
        " \"data\" : [ {\"id\": \"1\", \"s\": \"}]\"} , [1, {\"a\": 2}], \"q\\\"\", 7 ] }";
    size_t(*spans)[2] = NULL;
    size_t n = sk_json_array_spans(page, sizeof(page) - 1, "data", &spans);
    cr_assert_eq(n, 4);
    const char *want[] = {"{\"id\": \"1\", \"s\": \"}]\"}", "[1, {\"a\": 2}]", "\"q\\\"\"", "7"};
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(strncmp(page + spans[i][0], want[i], spans[i][1] - spans[i][0]), 0,
                     "element %zu: %.*s", i, (int)(spans[i][1] - spans[i][0]), page + spans[i][0]);
    free(spans);
    cr_assert_eq(sk_json_array_spans("[1]", 3, "data", &spans), 0);
    free(spans);
    /* a page after a UTF-8 byte order mark, which cJSON skips (found by fuzz_ss12000_page) */
    const char bom[] = "\xEF\xBB\xBF{\"data\": [1, 22]}";
    cr_assert_eq(sk_json_array_spans(bom, sizeof(bom) - 1, "data", &spans), 2);
    cr_assert_eq(spans[1][0], 16);
    cr_assert_eq(spans[1][1], 18);
    free(spans);
}

/*
 * The spans are those of the array cJSON takes: the first key that reads
 * "data" once decoded. Compared raw, "d\u0061ta" before "data" gave the
 * second array's spans, and a bad item of the first was checked against the
 * second's bytes (and stored).
 */
Test(codec, array_spans_follow_the_key_cjson_reads)
{
    const char *pages[] = {
        "{\"d\\u0061ta\": [111, 2], \"data\": [3]}",
        "{\"\\u0064\\u0041ta\": [0], \"\\u0064\\u0061\\u0074\\u0061\": [111, 2], \"data\": [3]}",
        "{\"data\\u0000x\": [111, 2], \"data\": [3]}",
        "{\"dat\\u00e1\": [5], \"data\\\\\": [6], \"dat\\\"\": [7], \"data\": [111, 2]}",
    };
    for (size_t p = 0; p < sizeof(pages) / sizeof(pages[0]); p++) {
        const char *page = pages[p];
        cJSON *doc = cJSON_Parse(page);
        cr_assert_not_null(doc, "%s", page);
        cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(doc, "data")), 2, "%s",
                     page);
        cJSON_Delete(doc);
        size_t(*spans)[2] = NULL;
        cr_assert_eq(sk_json_array_spans(page, strlen(page), "data", &spans), 2, "%s", page);
        cr_assert_eq(strncmp(page + spans[0][0], "111", 3), 0, "%s", page);
        cr_assert_eq(spans[0][1] - spans[0][0], 3, "%s", page);
        free(spans);
    }
}

/*
 * A meta.modified more than a day ahead of the clock is refused: the stale
 * guard keeps the newest one, so one record dated 9999-12-31 froze its
 * entity in every target (later changes counted as stale, applied silently)
 * and a source's delta watermark asked for changes after it.
 */
Test(codec, a_modified_far_ahead_of_the_clock_is_refused)
{
    const struct sk_entity *e = sk_entity_by_name("Organisation");
    char id[37];
    uint8_t *out = NULL;
    size_t len;
    int64_t mod;
    struct sk_error err = {0};
    const char *ahead = "{\"id\":\"00000000-0000-4000-8000-000000000001\",\"displayName\":\"S\","
                        "\"organisationType\":\"Skolenhet\",\"meta\":{\"modified\":"
                        "\"9999-12-31T23:59:59Z\"}}";
    cr_assert_eq(sk_codec_encode(e, ahead, strlen(ahead), &out, &len, id, &mod, &err), -1);
    cr_assert_eq(err.cls, SK_ERR_PERMANENT);
    cr_assert(strstr(err.msg, "9999-12-31T23:59:59Z") && strstr(err.msg, "ahead"), "%s", err.msg);
    /* an hour ahead (a server's clock running fast) is taken */
    time_t soon = time(NULL) + 3600;
    char when[32];
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime(&soon));
    char *near = sk_asprintf("{\"id\":\"00000000-0000-4000-8000-000000000001\",\"displayName\":"
                             "\"S\",\"organisationType\":\"Skolenhet\",\"meta\":{\"modified\":"
                             "\"%s\"}}",
                             when);
    sk_error_clear(&err);
    cr_assert_eq(sk_codec_encode(e, near, strlen(near), &out, &len, id, &mod, &err), 0, "%s",
                 err.msg);
    free(out);
    free(near);
}

/* What the codec prints of any double (the fewest of 15-17 digits that read
 * back) is a number it takes back: a decoded record encodes again. */
Test(codec, every_double_it_prints_is_a_number_it_takes)
{
    srand(12000);
    for (int i = 0; i < 200000; i++) {
        uint64_t bits = ((uint64_t)rand() << 42) ^ ((uint64_t)rand() << 21) ^ (uint64_t)rand();
        double v;
        memcpy(&v, &bits, sizeof(v));
        if (!isfinite(v) || v == 0)
            continue;
        char text[40];
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(text, sizeof(text), "%.*g", prec, v);
            if (strtod(text, NULL) == v)
                break;
        }
        size_t at;
        cr_assert_null(sk_json_number_inexact(text, strlen(text), &at), "%s refused", text);
    }
}

/* The general rule: the fewest of 15-17 digits that read back. */
static void number_reference(double v, char *text, size_t size)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(text, size, "%.*g", prec, v);
        if (strtod(text, NULL) == v)
            break;
    }
}

/* Integers below 10^15 print without snprintf (json_print.c): the same bytes
 * as the general rule, at the edges too; -0, 10^15 and up, and fractions keep
 * the general rule's text ("-0", "1e+15"). */
Test(codec, an_integer_prints_as_the_general_rule_prints_it)
{
    // clang-format off
    double edges[] = {0,       -0.0,     1,        -1,      9,         10,     -10,
                      99,      100,      12345,    -54321,  1e14,      -1e14,  999999999999999,
                      -999999999999999,  1e15,     -1e15,   1e15 + 1,  2e15,   9007199254740991,
                      -9007199254740992, 0.5,      -0.5,    1800.25,   1e300,  123456789.0,
                      4294967296.0,      -2147483648.0};
    // clang-format on
    char want[40];
    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]) + 100000; i++) {
        double v;
        if (i < sizeof(edges) / sizeof(edges[0])) {
            v = edges[i];
        } else {
            /* integers of every length up to 17 digits, either sign */
            int64_t n = ((int64_t)rand() << 31 ^ rand()) % (int64_t)1e17, div = 1;
            for (int k = rand() % 17; k > 0; k--)
                div *= 10;
            v = (double)(n / div) * (rand() % 2 ? 1 : -1);
        }
        number_reference(v, want, sizeof(want));
        cJSON *num = cJSON_CreateNumber(v);
        char *got = sk_json_print(num);
        cr_assert_str_eq(got, want, "%.17g printed as %s, not %s", v, got, want);
        free(got);
        cJSON_Delete(num);
    }
}

/*
 * The record path (a jsonl line, a record replayed from the DLQ) refuses a
 * number a double would change, with its position, as its parse reads it
 * (no scan of its own any more); what follows the object is still only
 * whitespace, and a number it holds exactly is taken.
 */
Test(codec, the_record_path_refuses_a_number_a_double_changes_where_it_is)
{
    const struct sk_entity *e = entity("Person");
    static const char *const refused[] = {"12345678901234567890", "1e400", "1e-400", "2e308"};
    static const char *const taken[] = {"-0", "0.1", "1.7976931348623157e308", "1e308"};
    for (size_t i = 0; i < 4; i++) {
        for (int pass = 0; pass < 2; pass++) {
            char *doc = sk_asprintf("{\"id\":\"3f1c5a0e-0000-4000-8000-000000000001\",\"x\":[1,%s]}"
                                    "\n",
                                    pass ? taken[i] : refused[i]);
            uint8_t *out = NULL;
            size_t len = 0;
            char id[37];
            int64_t mod;
            struct sk_error err = {0};
            int rc = sk_codec_encode(e, doc, strlen(doc), &out, &len, id, &mod, &err);
            if (pass) {
                cr_expect_eq(rc, 0, "%s: %s", taken[i], err.msg);
            } else {
                cr_expect_eq(rc, -1, "%s taken", refused[i]);
                cr_expect_str_eq(err.msg,
                                 "Person: a number a double does not hold exactly at byte 52",
                                 "%s: %s", refused[i], err.msg);
                cr_expect_null(sk_codec_from_json_text(e, doc, strlen(doc), id, &err), "%s",
                               refused[i]);
            }
            free(out);
            free(doc);
        }
    }
    static const char *const trailing[] = {"{\"id\":\"3f1c5a0e-0000-4000-8000-000000000001\"} x",
                                           "{\"id\":\"3f1c5a0e-0000-4000-8000-000000000001\"}{}"};
    for (size_t i = 0; i < 2; i++) {
        struct sk_error err = {0};
        char id[37];
        cr_expect_null(sk_codec_from_json_text(e, trailing[i], strlen(trailing[i]), id, &err));
        cr_expect_str_eq(err.msg, "Person: invalid JSON", "%s", trailing[i]);
    }
}
