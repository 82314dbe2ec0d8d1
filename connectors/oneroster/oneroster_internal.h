/*
 * oneroster_internal.h: what the parts of the oneroster-csv-sink share.
 *
 *   oneroster_sink.c    options, the SQLite state (apply, offsets), the timer
 *                       thread that decides when a bundle is due
 *   oneroster_bundle.c, the mapping SS 12000 -> OneRoster 1.2 rows
 *   oneroster_map*.c    (docs/oneroster-mapping.md); pure, no I/O; what
 *                       these four share among themselves is oneroster_map.h
 *   oneroster_out.c     CSV encoding, the zip writer, the atomic publish and
 *                       the rotation of old bundles
 *
 * Not for use outside connectors/oneroster/.
 */
#ifndef SK_ONEROSTER_INTERNAL_H
#define SK_ONEROSTER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "sk_error.h"

/* ---- the state, as read for one bundle ----------------------------------- */

/*
 * One stored entity, owned by its collection. The persons and the groups, the
 * collections that grow with the number of pupils (a group carries its
 * memberships), keep their documents as text: a cJSON tree is ~4 times the
 * bytes of its text, and those two were most of a bundle's peak. A step that
 * reads one parses it (or_doc_open) and frees the tree after.
 */
struct or_doc {
    char *id;
    cJSON *doc; /* the tree; NULL in a collection kept as text */
    char *text; /* compact JSON, its ids in lower case; NULL in the others */
};

/* One collection, sorted by id (strcmp order, as SQLite's BINARY collation). */
struct or_coll {
    struct or_doc *v;
    size_t n;
};

/* Every collection the mapping reads, from one consistent snapshot. */
struct or_view {
    struct or_coll orgs, persons, groups, activities, duties, syllabuses;
};

const struct or_doc *or_coll_find(const struct or_coll *c, const char *id);
/* d's document as a tree: its own, or parsed from its text into *arena
 * (NULL for a tree kept), which sk_json_arena_free frees; never cJSON_Delete. */
struct sk_json_arena;
const cJSON *or_doc_open(const struct or_doc *d, struct sk_json_arena **arena);
void or_view_free(struct or_view *v);
void or_coll_free(struct or_coll *c); /* empty again */
/* Every "id" member in doc that is a UUID becomes lower case, as the keys are:
 * a reference in upper case names the same entity (RFC 4122). */
void or_doc_lower_ids(cJSON *doc);

/* ---- the bundle ---------------------------------------------------------- */

/* One CSV file. Cells are malloc'ed strings or NULL (an empty cell). */
struct or_table {
    const char *name;        /* "users": file users.csv, manifest key file.users */
    const char *const *cols; /* the exact 1.2 header */
    size_t n_cols;
    char ***rows;
    size_t n, cap;
};

enum or_table_id {
    OR_SESSIONS = 0,
    OR_ORGS,
    OR_COURSES,
    OR_CLASSES,
    OR_USERS,
    OR_ROLES,
    OR_ENROLLMENTS,
    OR_N_TABLES
};

struct or_build_opts {
    bool include_phone;     /* users.phone/sms (never for protected persons) */
    bool include_guardians; /* guardians from responsibles as users */
};

/* What the mapping left out, for the log (counts only; ids go to debug lines). */
struct or_build_stats {
    uint64_t dangling;        /* references to something not in the bundle, dropped */
    uint64_t skipped_classes; /* activities/groups that could not become a class */
};

struct or_pool; /* the rows' memory (oneroster_bundle.c) */

struct or_bundle {
    struct or_table t[OR_N_TABLES];
    struct or_build_stats stats;
    struct or_pool *pool;
};

/* Builds every table from the view; rows are sorted and unique by sourcedId.
 * Frees a collection of the view once no later step reads it (the persons
 * before the enrollments, the largest table, are made); or_view_free frees
 * the rest. */
void or_bundle_build(struct or_view *view, const struct or_build_opts *opts, const char *component,
                     struct or_bundle *out);
void or_bundle_free(struct or_bundle *b);

/* ---- output -------------------------------------------------------------- */

struct or_publish_opts {
    const char *output_dir;
    bool zip;
    int64_t keep;            /* bundles kept, >= 1 */
    const char *system_name; /* manifest source.systemName */
    const char *system_code; /* manifest source.systemCode (the sink's name) */
    int64_t now_us;          /* names the bundle */
    /* cells as they are (formula_guard: false); else a cell a spreadsheet
     * would take for a formula starts with a single quote */
    bool formula_verbatim;
};

/* manifest.csv for the bundle. Caller frees. */
char *or_manifest_csv(const struct or_bundle *b, const struct or_publish_opts *o, size_t *len);

/*
 * Writes the bundle into a temporary entry of output_dir, fsyncs it, renames it
 * into place, swaps the `current` (or `current.zip`) symlink, and removes all but
 * the newest `keep` bundles. path_out receives the published path.
 */
int or_publish(const struct or_bundle *b, const struct or_publish_opts *o, char *path_out,
               size_t path_size, struct sk_error *err);
/* Removes leftovers of a publish that crashed (.tmp-* entries). */
void or_publish_cleanup(const char *output_dir);

#endif
