/*
 * test_sink_contract.c: what every sink promises, run against each of them
 * (sqlite-sink, postgres-sink, scim-sink, oneroster-csv-sink,
 * ss12000-api-sink) with records as
 * the sink driver hands them over (tests/helpers, skt_recs_add):
 *
 *   upsert              a newer version replaces the stored one
 *   stale               an older meta.modified changes nothing (and is APPLIED),
 *                       in a later batch or the same one
 *   tombstone           a delete removes the document (a missing one is no
 *                       error; a batch's order decides between an upsert
 *                       and a delete of one id)
 *   unknown fields      fields the model does not know are kept
 *   lossless            a double such as 0.30000000000000004 and a string with
 *                       å, an emoji and escaped control characters come out
 *                       exactly as the SS 12000 JSON had them
 *   reopen              what was applied (and the offsets, where the sink
 *                       keeps them) is there after close and open
 *   poison              a record the sink cannot apply is REJECTED, the rest
 *                       of its batch applied
 *   keys                the snapshot sweep's view (connector.h, keys): every
 *                       stored person with its document, none deleted
 *
 * What "stored" means per sink: the row's doc in its SQLite table
 * (sqlite-sink), the jsonb doc column (postgres-sink), the document in the
 * state the bundles are written from (oneroster-csv-sink; it drops fields no
 * OneRoster column uses, none of those used here), the document in the
 * local state (scim-sink), and the document in the state the hub serves from
 * (ss12000-api-sink). The SCIM server keeps only the attributes the
 * mapping makes (userName, name, ...): for it the lossless test checks the
 * mapped name.givenName on the server as well.
 */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <curl/curl.h>

#include "connector.h"
#include "model.h"
#include "sk_test.h"
#include "util.h"

#define T1 "2025-08-18T06:00:00+02:00"
#define T2 "2025-08-19T06:00:00+02:00"
/* Not a double cJSON's printer keeps (it prints 15 digits: 0.3). */
#define EXACT_DOUBLE "0.30000000000000004"
/* å, an emoji, and control characters that JSON escapes. */
#define HARD_STRING "Åsa 😀 rad\ntvå\tflik"
#define HARD_STRING_JSON "Åsa 😀 rad\\ntvå\\tflik"

/* One sink under test: how to open it, and where it keeps a person's document. */
struct target {
    const char *type;
    void (*setup)(void);
    void (*teardown)(void);
    /* The stored document of person id as text, or NULL if none; caller frees. */
    char *(*stored)(const char *id);
};

static const struct target *cur;
static char *dir, *yaml;
static struct sk_sink *sink;
static struct skt_recs batch;
static char school[37], tag[9];

/* ---- the targets ------------------------------------------------------------------ */

/* The doc column of a person in the SQLite database at path (the SQLite-backed sinks). */
static char *sqlite_doc(const char *path, const char *id)
{
    return skt_sqlite_value(path, "SELECT doc FROM persons WHERE id = ?1", id);
}

static void sqlite_setup(void)
{
    yaml = skt_fmt("path: %s/sink.db\n", dir);
}

static char *sqlite_stored(const char *id)
{
    char *path = skt_fmt("%s/sink.db", dir);
    char *doc = sqlite_doc(path, id);
    free(path);
    return doc;
}

static void oneroster_setup(void)
{
    char *out = skt_fmt("%s/out", dir);
    cr_assert_eq(mkdir(out, 0700), 0);
    yaml = skt_fmt("state_dir: %s\noutput_dir: %s\nidle: 1h\n", dir, out);
    free(out);
}

static char *oneroster_stored(const char *id)
{
    char *path = skt_fmt("%s/oneroster-state.db", dir);
    char *doc = sqlite_doc(path, id);
    free(path);
    return doc;
}

static const char *scim_url(void)
{
    const char *u = getenv("SK_TEST_SCIM");
    cr_assert(u && *u, "SK_TEST_SCIM is not set: source $SK_TESTENV_DIR/env (scripts/testenv.sh)");
    return u;
}

static void scim_setup(void)
{
    yaml = skt_fmt("url: %s\nstate_dir: %s\ntimeout: 10s\n", scim_url(), dir);
}

static char *scim_stored(const char *id)
{
    char *path = skt_fmt("%s/test-sink.db", dir); /* <state_dir>/<sink name>.db */
    char *doc = sqlite_doc(path, id);
    free(path);
    return doc;
}

/* The hub keeps its documents in the state store's tables (<state_dir>/<sink name>.db). */
static void hub_setup(void)
{
    yaml = skt_fmt(
        "listen: 127.0.0.1:0\nstate_dir: %s\nclients: {c: {token: contract-token-0123456789, "
        "entities: all}}\n",
        dir);
}

static char schema[32];

static PGconn *pg(void)
{
    PGconn *c = skt_pg_connect();
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    return c;
}

static void pg_setup(void)
{
    snprintf(schema, sizeof(schema), "sk_contract_%s", tag);
    const char *ci = getenv("SK_TEST_PG");
    yaml = skt_fmt("conninfo: '%s'\nschema: '%s'\nconnect_timeout: 5s\n", ci ? ci : "", schema);
}

static void pg_teardown(void)
{
    PGconn *c = pg();
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    char *sql = skt_fmt("DROP SCHEMA IF EXISTS \"%s\" CASCADE", schema);
    PQclear(PQexec(c, sql));
    free(sql);
    PQfinish(c);
}

static char *pg_stored(const char *id)
{
    PGconn *c = pg();
    char *sql = skt_fmt("SELECT doc::text FROM \"%s\".persons WHERE id = '%s'", schema, id);
    PGresult *r = PQexec(c, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
    char *doc = PQntuples(r) ? sk_strdup(PQgetvalue(r, 0, 0)) : NULL;
    PQclear(r);
    free(sql);
    PQfinish(c);
    return doc;
}

static const struct target sqlite_target = {"sqlite-sink", sqlite_setup, NULL, sqlite_stored};
static const struct target postgres_target = {"postgres-sink", pg_setup, pg_teardown, pg_stored};
static const struct target scim_target = {"scim-sink", scim_setup, NULL, scim_stored};
static const struct target hub_target = {"ss12000-api-sink", hub_setup, NULL, scim_stored};
static const struct target oneroster_target = {"oneroster-csv-sink", oneroster_setup, NULL,
                                               oneroster_stored};

/* ---- the harness -------------------------------------------------------------------- */

static void open_sink(void)
{
    sink = skt_sink_open(cur->type, yaml, NULL, 0, "contract-incarnation");
}

static void start(const struct target *t)
{
    cur = t;
    dir = skt_tmpdir("contract");
    char u[37];
    sk_uuid_random(u);
    snprintf(tag, sizeof(tag), "%.8s", u);
    sk_uuid_random(school);
    t->setup();
    open_sink();
}

static void finish(void)
{
    skt_sink_close(sink);
    sink = NULL;
    skt_recs_free(&batch);
    if (cur && cur->teardown)
        cur->teardown();
    free(yaml);
    free(dir);
    yaml = dir = NULL;
    cur = NULL;
}

/*
 * A student (the scim-sink provisions students) with meta.modified and
 * givenName; extra is more JSON members. The record's offset is its index.
 */
static void add_person(const char *id, const char *modified, const char *given, const char *extra)
{
    char *json = skt_fmt(
        "{\"id\":\"%s\",\"meta\":{\"created\":\"2025-01-01T00:00:00Z\",\"modified\":\"%s\"},"
        "\"givenName\":\"%s\",\"familyName\":\"Kontrakt\","
        "\"eduPersonPrincipalNames\":[\"c%s.%.8s@edu.example.se\"],"
        "\"securityMarking\":\"Ingen\",\"personStatus\":\"Aktiv\","
        "\"enrolments\":[{\"enroledAt\":{\"id\":\"%s\"},\"schoolType\":\"GR\",\"schoolYear\":7,"
        "\"startDate\":\"2025-08-18\"}]%s}",
        id, modified, given, tag, id, school, extra ? extra : "");
    skt_recs_add(&batch, "Person", NULL, json, NULL);
    free(json);
}

/* Applies the batch (every record APPLIED) and empties it. */
static void apply(void)
{
    skt_recs_apply_ok(sink, &batch);
    for (size_t i = 0; i < batch.n; i++)
        cr_assert_eq(batch.out[i].kind, SK_APPLIED, "%s: record %zu: %s", cur->type, i,
                     batch.out[i].err.msg);
    skt_recs_clear(&batch);
}

/* The stored document of id, parsed (NULL if none); caller frees. */
static cJSON *stored(const char *id)
{
    char *text = cur->stored(id);
    if (!text)
        return NULL;
    cJSON *doc = cJSON_Parse(text);
    cr_assert_not_null(doc, "%s: stored document is not JSON: %s", cur->type, text);
    free(text);
    return doc;
}

static void assert_given(const char *id, const char *want)
{
    cJSON *doc = stored(id);
    cr_assert_not_null(doc, "%s: person %s is not stored", cur->type, id);
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(doc, "givenName");
    cr_assert(cJSON_IsString(g) && strcmp(g->valuestring, want) == 0,
              "%s: givenName \"%s\", expected \"%s\"", cur->type,
              cJSON_IsString(g) ? g->valuestring : "(none)", want);
    cJSON_Delete(doc);
}

static char *new_id(void)
{
    char *id = sk_malloc(37);
    sk_uuid_random(id);
    return id;
}

/* ---- the behaviours --------------------------------------------------------------- */

static void upsert(void)
{
    char *id = new_id();
    add_person(id, T1, "Första", NULL);
    apply();
    assert_given(id, "Första");
    add_person(id, T2, "Andra", NULL);
    apply();
    assert_given(id, "Andra");
    free(id);
}

static void stale_update_ignored(void)
{
    char *id = new_id(), *other = new_id();
    add_person(id, T2, "Nyare", NULL);
    apply();
    add_person(id, T1, "Äldre", NULL); /* replayed, or read again from the source */
    apply();
    assert_given(id, "Nyare");
    add_person(other, T2, "Nyare", NULL); /* newer then older in one batch */
    add_person(other, T1, "Äldre", NULL);
    apply();
    assert_given(other, "Nyare");
    /* instants, not text: T2 is 04:00Z; 05:00Z is newer although its text sorts
     * before T2's, and 06:30+02:00 (04:30Z) is older although it sorts after */
    add_person(id, "2025-08-19T05:00:00Z", "Senare", NULL);
    apply();
    assert_given(id, "Senare");
    add_person(id, "2025-08-19T06:30:00+02:00", "Tidigare", NULL);
    apply();
    assert_given(id, "Senare");
    free(id);
    free(other);
}

static void assert_gone(const char *id)
{
    char *doc = cur->stored(id);
    cr_assert_null(doc, "%s: still stored after the tombstone: %s", cur->type, doc);
}

static void tombstone_deletes(void)
{
    char *id = new_id(), *never = new_id(), *again = new_id(), *back = new_id();
    add_person(id, T1, "Borta", NULL);
    add_person(back, T2, "Tillbaka", NULL);
    apply();
    skt_recs_add(&batch, "Person", id, NULL, NULL);
    skt_recs_add(&batch, "Person", never, NULL, NULL); /* no such row: nothing to do */
    apply();
    assert_gone(id);
    assert_gone(never);
    add_person(again, T1, "Kort", NULL); /* upsert then delete in one batch: deleted */
    skt_recs_add(&batch, "Person", again, NULL, NULL);
    skt_recs_add(&batch, "Person", back, NULL, NULL); /* delete then upsert: present, */
    add_person(back, T1, "Igen", NULL);               /* although older than the deleted version */
    apply();
    assert_gone(again);
    assert_given(back, "Igen");
    free(id);
    free(never);
    free(again);
    free(back);
}

static void unknown_fields_kept(void)
{
    char *id = new_id();
    add_person(id, T1, "Okänd", ",\"xContract\":{\"level\":3,\"tags\":[\"a\",\"b\"]}");
    apply();
    cJSON *doc = stored(id);
    cr_assert_not_null(doc);
    cJSON *want = cJSON_Parse("{\"level\":3,\"tags\":[\"a\",\"b\"]}");
    cr_assert(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(doc, "xContract"), want, true),
              "%s: the unknown field xContract was not kept", cur->type);
    cJSON_Delete(want);
    cJSON_Delete(doc);
    free(id);
}

/* The SCIM server's user of person id: name.givenName is what the mapping makes of givenName. */
static void assert_scim_given(const char *id, const char *want)
{
    char *filter = skt_fmt("externalId eq \"%s\"", id);
    char *enc = curl_easy_escape(NULL, filter, 0);
    char *url = skt_fmt("%s/Users?filter=%s", scim_url(), enc);
    char *body = NULL;
    cr_assert_eq(skt_http("GET", url, NULL, 10, &body), 200, "GET %s: %s", url, body);
    cJSON *list = cJSON_Parse(body);
    const cJSON *user = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(list, "Resources"), 0);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(user, "name");
    const cJSON *given = cJSON_GetObjectItemCaseSensitive(name, "givenName");
    cr_assert(cJSON_IsString(given) && strcmp(given->valuestring, want) == 0,
              "SCIM user of %s: name.givenName %s, expected \"%s\"", id,
              cJSON_IsString(given) ? given->valuestring : "(none)", want);
    cJSON_Delete(list);
    free(body);
    free(url);
    curl_free(enc);
    free(filter);
}

static void lossless(void)
{
    char *id = new_id();
    add_person(id, T1, HARD_STRING_JSON, ",\"xScore\":" EXACT_DOUBLE);
    apply();
    char *text = cur->stored(id);
    cr_assert_not_null(text);
    cr_assert(strstr(text, EXACT_DOUBLE), "%s: the double is not stored exactly: %s", cur->type,
              text);
    free(text);
    cJSON *doc = stored(id);
    const cJSON *score = cJSON_GetObjectItemCaseSensitive(doc, "xScore");
    cr_assert(cJSON_IsNumber(score) && score->valuedouble == 0.30000000000000004,
              "%s: xScore is not 0.30000000000000004", cur->type);
    cJSON_Delete(doc);
    assert_given(id, HARD_STRING);
    if (cur == &scim_target)
        assert_scim_given(id, HARD_STRING);
    free(id);
}

static int64_t stored_offset(const char *topic)
{
    struct sk_offsets offs = {0};
    struct sk_error err = {0};
    cr_assert_eq(sink->ops->stored_offsets(sink, &offs, &err), 0, "%s", err.msg);
    int64_t next = -1;
    for (size_t i = 0; i < offs.n; i++)
        if (strcmp(offs.v[i].topic, topic) == 0 && offs.v[i].partition == 0)
            next = offs.v[i].next_offset;
    sk_offsets_free(&offs);
    return next;
}

static void offsets_resumed_after_reopen(void)
{
    char *id = new_id();
    add_person(id, T1, "Kvar", NULL);
    add_person(id, T2, "Kvar igen", NULL);
    batch.v[1].offset = 41;
    apply();
    skt_sink_close(sink);
    open_sink();
    assert_given(id, "Kvar igen");
    if (sink->ops->stored_offsets) {
        cr_assert_eq(stored_offset("persons"), 42, "%s: next offset after a reopen", cur->type);
        skt_sink_close(sink); /* another broker incarnation sees none of them */
        sink = skt_sink_open(cur->type, yaml, NULL, 0, "another-incarnation");
        cr_assert_eq(stored_offset("persons"), -1, "%s: offsets of another incarnation", cur->type);
    } else {
        cr_assert_null(sink->ops->mark_offsets, "%s: marks offsets it cannot return", cur->type);
    }
    free(id);
}

static void poison_isolated(void)
{
    char *a = new_id(), *b = new_id(), *c = new_id();
    add_person(a, T1, "Före", NULL);
    uint8_t *garbage = sk_malloc(4);
    memcpy(garbage, "\xff\xff\xff\xff", 4); /* not a Person: no document to apply */
    skt_recs_add_raw(&batch, "Person", b, garbage, 4);
    add_person(c, T1, "Efter", NULL);
    skt_recs_apply_ok(sink, &batch);
    cr_assert_eq(batch.out[0].kind, SK_APPLIED, "%s: %s", cur->type, batch.out[0].err.msg);
    cr_assert_eq(batch.out[1].kind, SK_REJECTED, "%s: the poison record: %d", cur->type,
                 batch.out[1].kind);
    cr_assert_eq(batch.out[1].err.cls, SK_ERR_PERMANENT);
    cr_assert_str_neq(batch.out[1].err.msg, "");
    cr_assert_eq(batch.out[2].kind, SK_APPLIED, "%s: %s", cur->type, batch.out[2].err.msg);
    skt_recs_clear(&batch);
    assert_given(a, "Före");
    assert_given(c, "Efter");
    char *doc = cur->stored(b);
    cr_assert_null(doc, "%s: the poison record was stored: %s", cur->type, doc);
    if (sink->ops->stored_offsets)
        cr_assert_eq(stored_offset("persons"), 3, "%s: a rejected record counts (DLQ)", cur->type);
    free(a);
    free(b);
    free(c);
}

/* keys (the snapshot sweep's view): id -> doc of every person the sink lists. */
struct listed {
    char ids[8][37];
    char *docs[8];
    int n;
};

static void list_one(void *ctx, const char *key, const char *doc)
{
    struct listed *l = ctx;
    cr_assert_lt(l->n, 8, "%s: more keys than persons stored", cur->type);
    snprintf(l->ids[l->n], sizeof(l->ids[l->n]), "%s", key);
    l->docs[l->n++] = doc ? strdup(doc) : NULL;
}

static int listed_at(const struct listed *l, const char *id)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->ids[i], id) == 0)
            return i;
    return -1;
}

static void keys_list_what_is_stored(void)
{
    char *a = new_id(), *b = new_id(), *gone = new_id();
    add_person(a, T1, "Anna", NULL);
    add_person(b, T1, "Bo", NULL);
    add_person(gone, T1, "Borta", NULL);
    apply();
    skt_recs_add(&batch, "Person", gone, NULL, NULL);
    apply();
    cr_assert_not_null(sink->ops->keys, "%s: no keys op: it is never swept", cur->type);
    struct listed l = {0};
    struct sk_error err = {0};
    cr_assert_eq(sink->ops->keys(sink, sk_entity_by_name("Person"), list_one, &l, &err), 0,
                 "%s: %s", cur->type, err.msg);
    cr_assert_eq(l.n, 2, "%s: %d keys listed for 2 persons stored", cur->type, l.n);
    cr_assert_geq(listed_at(&l, a), 0, "%s: a stored person not listed", cur->type);
    cr_assert_geq(listed_at(&l, b), 0, "%s: a stored person not listed", cur->type);
    cr_assert_lt(listed_at(&l, gone), 0, "%s: a deleted person listed", cur->type);
    const char *doc = l.docs[listed_at(&l, a)];
    cr_assert(doc && strstr(doc, "Anna"), "%s: the listed document: %s", cur->type,
              doc ? doc : "(none)");
    for (int i = 0; i < l.n; i++)
        free(l.docs[i]);
    /* keys_only: the same keys, never a document */
    if (sink->ops->keys_only) {
        struct listed k = {0};
        cr_assert_eq(sink->ops->keys_only(sink, sk_entity_by_name("Person"), list_one, &k, &err), 0,
                     "%s: %s", cur->type, err.msg);
        cr_assert_eq(k.n, 2, "%s: keys_only listed %d keys for 2 persons", cur->type, k.n);
        cr_assert(listed_at(&k, a) >= 0 && listed_at(&k, b) >= 0, "%s: keys_only", cur->type);
        for (int i = 0; i < k.n; i++)
            cr_assert_null(k.docs[i], "%s: keys_only gave a document", cur->type);
    }
    free(a);
    free(b);
    free(gone);
}

/* One test per sink and behaviour: sink_contract::<sink>_<behaviour>. */
#define CONTRACT(target, behaviour)                                                                \
    Test(sink_contract, target##_##behaviour, .fini = finish, .timeout = 60)                       \
    {                                                                                              \
        start(&target##_target);                                                                   \
        behaviour();                                                                               \
    }
#define CONTRACT_ALL(behaviour)                                                                    \
    CONTRACT(sqlite, behaviour)                                                                    \
    CONTRACT(postgres, behaviour)                                                                  \
    CONTRACT(scim, behaviour)                                                                      \
    CONTRACT(oneroster, behaviour)                                                                 \
    CONTRACT(hub, behaviour)

CONTRACT_ALL(upsert)
CONTRACT_ALL(stale_update_ignored)
CONTRACT_ALL(tombstone_deletes)
CONTRACT_ALL(unknown_fields_kept)
CONTRACT_ALL(lossless)
CONTRACT_ALL(offsets_resumed_after_reopen)
CONTRACT_ALL(poison_isolated)
CONTRACT_ALL(keys_list_what_is_stored)
