/*
 * hub_refs.c: a side table of the values inside arrays that filters and
 * expand look up from the other side, kept at apply time:
 *
 *   hub_refs(collection, name, ref, id)
 *     the document collection/id holds ref in the array the name stands
 *     for (a group's members, a child's responsibles, a person's
 *     eduPersonPrincipalNames, …).
 *
 * An expression index cannot index an array's members; without this table
 * "the children of this guardian" (expand=responsibleFor) reads every
 * person once per expanded person, and a page of 1 000 guardians among
 * 100 000 persons reads 10^8 documents.
 *
 * Owns: which arrays are indexed, keeping the rows equal to the stored
 * documents (in the batch's transaction: delivery rule 3), and filling the
 * table again when the state was filled under another version of the list
 * (REFS_VERSION: bump it when the list changes).
 * Must never: be read for a type the hub does not consume (no rows), or
 * keep the rows of a deleted document.
 */
#include <stdlib.h>
#include <string.h>

#include "hub.h"
#include "hub_query.h"
#include "util.h"

struct ref_def {
    const char *collection, *name;
    const char *array; /* the JSON path of the array */
    const char *value; /* the member's value, from x.value */
};

static const struct ref_def refs[] = {
    {"persons", "responsible", "$.responsibles", "json_extract(x.value,'$.person.id')"},
    {"persons", "eppn", "$.eduPersonPrincipalNames", "x.value"},
    {"persons", "enroledAt", "$.enrolments", "json_extract(x.value,'$.enroledAt.id')"},
    {"groups", "member", "$.groupMemberships", "json_extract(x.value,'$.person.id')"},
    {"placements", "owner", "$.owners", "json_extract(x.value,'$.id')"},
    {"duties", "group", "$.assignmentRole", "json_extract(x.value,'$.group.id')"},
    {"activities", "group", "$.groups", "json_extract(x.value,'$.id')"},
    {"activities", "teacher", "$.teachers", "json_extract(x.value,'$.duty.id')"},
};
#define N_REFS (sizeof(refs) / sizeof(refs[0]))

/* Whether the JSON text may hold the member "key" (a cheap test before a statement). */
static bool has_key(const char *doc, size_t len, const char *key)
{
    size_t klen = strlen(key);
    const char *end = doc + len;
    for (const char *at = doc; (at = memchr(at, '"', (size_t)(end - at))); at++)
        if ((size_t)(end - at) > klen + 1 && memcmp(at + 1, key, klen) == 0 && at[klen + 1] == '"')
            return true;
    return false;
}

/* Fills the rows of every document of def's collection (the backfill). */
static int fill(struct sk_state *st, const struct ref_def *def, struct sk_error *err)
{
    char *sql = sk_asprintf("INSERT OR IGNORE INTO hub_refs(collection, name, ref, id) SELECT "
                            "'%s', '%s', %s, c.id FROM \"%s\" c, json_each(c.doc, '%s') x "
                            "WHERE %s IS NOT NULL",
                            def->collection, def->name, def->value, def->collection, def->array,
                            def->value);
    int rc = sk_state_exec(st, sql, err);
    free(sql);
    return rc;
}

/* The version of refs[]: a state filled under another version is filled again at open. */
#define REFS_VERSION 2

int hub_refs_schema(struct sk_state *st, const struct hub *h, struct sk_error *err)
{
    sqlite3_stmt *q;
    if (sk_state_prepare(st,
                         "SELECT (SELECT 1 FROM sqlite_schema WHERE name = 'hub_refs') AND "
                         "(SELECT value FROM hub_meta WHERE key = 'refs_version') = ?1",
                         &q, err) < 0)
        return -1;
    sqlite3_bind_int(q, 1, REFS_VERSION);
    bool current = sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int(q, 0) == 1;
    sqlite3_finalize(q);
    if (sk_state_exec(st,
                      "CREATE TABLE IF NOT EXISTS hub_refs(collection TEXT NOT NULL, name TEXT "
                      "NOT NULL, ref TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY(collection, "
                      "name, ref, id)) WITHOUT ROWID;"
                      "CREATE INDEX IF NOT EXISTS hub_refs_doc ON hub_refs(collection, id);",
                      err) < 0)
        return -1;
    if (current) /* kept at apply time ever since */
        return 0;
    if (sk_state_exec(st, "DELETE FROM hub_refs", err) < 0)
        return -1;
    for (size_t i = 0; i < N_REFS; i++)
        for (size_t k = 0; k < h->n_entities; k++)
            if (strcmp(h->entities[k]->collection, refs[i].collection) == 0 &&
                fill(st, &refs[i], err) < 0)
                return -1;
    char *sql = sk_asprintf(
        "INSERT OR REPLACE INTO hub_meta(key, value) VALUES('refs_version', %d)", REFS_VERSION);
    int rc = sk_state_exec(st, sql, err);
    free(sql);
    return rc;
}

int hub_refs_put(struct sk_state *st, const char *collection, const char *id, const char *doc,
                 size_t doc_len, struct sk_error *err)
{
    bool indexed = false;
    for (size_t i = 0; i < N_REFS; i++)
        indexed |= strcmp(refs[i].collection, collection) == 0;
    if (!indexed) /* most types: nothing to keep, no statement per record */
        return 0;
    sqlite3_stmt *q;
    if (sk_state_prepare(st, "DELETE FROM hub_refs WHERE collection = ?1 AND id = ?2", &q, err) < 0)
        return -1;
    sqlite3_bind_text(q, 1, collection, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    int rc = sk_state_run(st, q, true, err);
    sqlite3_finalize(q);
    for (size_t i = 0; i < N_REFS && rc == 0 && doc; i++) {
        const struct ref_def *def = &refs[i];
        if (strcmp(def->collection, collection) != 0 || !has_key(doc, doc_len, def->array + 2))
            continue;
        char *sql = sk_asprintf("INSERT OR IGNORE INTO hub_refs(collection, name, ref, id) "
                                "SELECT ?1, '%s', %s, ?2 FROM json_each(?3, '%s') x WHERE %s IS "
                                "NOT NULL",
                                def->name, def->value, def->array, def->value);
        rc = sk_state_prepare(st, sql, &q, err);
        free(sql);
        if (rc < 0)
            return -1;
        sqlite3_bind_text(q, 1, collection, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 3, doc, (int)doc_len, SQLITE_STATIC);
        rc = sk_state_run(st, q, true, err);
        sqlite3_finalize(q);
    }
    return rc;
}
