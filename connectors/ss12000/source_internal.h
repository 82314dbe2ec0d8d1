/*
 * source_internal.h: what the parts of the ss12000-source share: the run's
 * steps, the cursor unpacked, the source's state, and the functions of
 * source_options.c (the option tables), source_cursor.c (the cursor message),
 * source_page.c (what a page says: required fields, bytes cJSON would
 * break, the server's reason, paging that never ends), source_run.c (the
 * run's state machine), source_list.c (the list steps), source_deleted.c
 * (the deletedEntities step) and source_guard.c (deletions: reconciliation,
 * the delete guard, the run's end). source.c is the connector: poll, open,
 * close and the settling of stored batches.
 * Not for use outside connectors/ss12000/.
 */
#ifndef SK_SS12000_SOURCE_INTERNAL_H
#define SK_SS12000_SOURCE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "connector.h"
#include "model.h"
#include "source.h"
#include "tz.h"

/* Where a run is: the steps of one entity type's turn, then the deletions.
 * The numbers are stored in the cursor (Ss12000Cursor.step): never renumber. */
enum step {
    STEP_NONE = 0,
    STEP_FULL = 1,
    STEP_MODIFIED = 2,
    STEP_CREATED = 3,
    STEP_DELETED = 4,
    STEP_WINDOW = 5, /* CalendarEvent: the events that entered the moved window */
};
#define DELETED_MARK INT64_MIN      /* dedupe map: we published a tombstone */
#define NO_MODIFIED (INT64_MIN + 1) /* dedupe map: published, no meta.modified */
#define MAX_REQUESTS_PER_POLL 40
#define MAX_POLL_MS 5000
#define TEXT_MAX 64
#define TYPE_BACKOFF_MAX_MS (15 * 60 * 1000) /* longest a failing type waits between tries */
/* Restarts of one chain in a run after a 400 (refused) or 410 (expired) on its page token. */
#define TOKEN_400_RESTARTS_MAX 1
#define TOKEN_410_RESTARTS_MAX 3
/* longest pageToken followed: it goes into a URL (servers refuse 8-16 KiB) and
 * into the cursor record (its size bounded by the broker's message.max.bytes) */
#define PAGE_TOKEN_MAX 16384

/* One type's part of the cursor, unpacked. */
struct tstate {
    char mod_text[TEXT_MAX];
    int64_t mod_us;
    bool has_mod;
    char cre_text[TEXT_MAX];
    int64_t cre_us;
    bool has_cre;
    bool full_done;
    int64_t last_full_us;
    bool missing;
    int64_t window_end_us; /* CalendarEvent: the window's end a completed chain read up to */
};

struct del {
    int type;
    char id[37];
    int64_t at_us; /* released/rejected: when */
};

struct dels {
    struct del *v;
    size_t n, cap;
    struct sk_idmap index; /* id -> its live entry's position + 1 (0: taken out again) */
};

/* The whole cursor, unpacked (ss_cursor_free gives back what it holds). */
struct cstate {
    struct tstate t[SK_ENTITY_COUNT];
    int64_t seq;
    int64_t deleted_t0_us;
    bool deleted_missing;
    bool run_active;
    int64_t run_t0;
    int run_types[SK_ENTITY_COUNT];
    int n_run_types;
    bool run_deletes;
    int type_index;
    enum step step;
    char *page_token; /* malloc'ed or NULL */
    char chain_mod_text[TEXT_MAX];
    int64_t chain_mod_us;
    bool has_chain_mod;
    char chain_cre_text[TEXT_MAX];
    int64_t chain_cre_us;
    bool has_chain_cre;
    uint64_t done;
    /* The delete guard's sets (cursor fields held, released, rejected). */
    struct dels held, released, rejected;
};

/* A part of the run that fails on its own: a type, or deletedEntities (ss_part_failed). */
struct ss_failing {
    int fails;           /* failed answers in a row (error status, a page that is not one) */
    int64_t retry_at_us; /* failing on its own: left out of runs until then (its backoff) */
    bool endless;        /* the paging guard failed it: only a chain that ends clears it */
};

struct ss_type {
    const struct sk_entity *e;
    bool enabled;
    bool no_created;        /* the server refused meta.created.after (400) */
    bool windowed;          /* CalendarEvent: read through the startTime window */
    bool skipped;           /* reported to the core as skipped (404/403) */
    struct sk_idmap seen;   /* dedupe: id -> meta.modified µs, acknowledged only */
    struct sk_idset listed; /* ids of the full listing under way */
    struct sk_idmap bad;    /* id -> meta.modified µs of a version dead-lettered, acknowledged */
    int64_t listed_run;     /* run t0 whose listing `listed` holds from its start; 0 = none */
    bool snapshot_open;     /* the listing under way began a snapshot (connector.h) and
                               every entity of it so far is in Kafka */
    int64_t live_count;     /* live ids in Kafka at the last reconciliation of run live_run */
    int64_t live_run;
    /* Windowed types: id -> startTime µs of what was read (reconciliation). */
    struct sk_idmap start;
    struct ss_failing failing;
};

/* A change the batch carries that the dedupe map learns once it is stored. */
struct pending {
    int type;
    bool keyed;         /* false: the id was no UUID, nothing to remember */
    bool bad;           /* a version that failed validation, dead-lettered (ss_type.bad) */
    int64_t val;        /* meta.modified µs, NO_MODIFIED, or DELETED_MARK */
    struct sk_idkey id; /* parsed once (the maps take keys) */
};

/* A batch handed out and not yet stored, and what it tells once it is. */
struct pend_batch {
    uint8_t *cursor; /* the cursor it carries */
    size_t len;
    size_t pend_end; /* pend[0 .. pend_end): its changes and those of the batches before it */
    char *held_json; /* the held list its cursor carries */
    size_t held;
    bool ends_run; /* it completes its run */
    bool release;  /* it applied the operator's release request */
};

/*
 * Paging that never ends: a server that hands back a pageToken it already
 * sent (a loop), or tokens with empty pages for ever, kept the source
 * "running" with /ready green and later types never reached. The guard
 * remembers the tokens of the chain under way (a digest each) and how many
 * empty pages came in a row; it lives beside the cursor, not in it. A poll
 * repeated from an older cursor (the last one failed, or its batch was not
 * stored) starts it afresh (ss_paging_guard_forget): the tokens it reads
 * again are the ones it read before, not a loop. A hit fails the chain's
 * type (or deletedEntities) like any error of its own (ss_part_failed):
 * the first in a row fails the poll, the next the type alone.
 *
 * Empty pages with a token are allowed by the spec: a server that filters
 * after paging (per-client permission scopes) sends one for every page
 * whose records the client may not see, so a run of them is normal. 100 in
 * a row (100 * page_size records none of which the client may see) is
 * taken for a server that never lets the chain end.
 */
#define EMPTY_PAGES_MAX 100 /* empty pages with a token, in a row */

struct paging_guard {
    char chain[64]; /* which chain: type, step, run, and where it started */
    uint64_t *tokens;
    size_t n, cap;
    int empty_in_a_row;
    bool hit; /* the last page failed the guard (ss_part_failed takes it) */
};

struct ss_source {
    struct sk_source *self;
    const struct ss_conf *conf;
    const char *component;
    char *base; /* url without a trailing slash */
    double max_fraction;
    struct ss_http *http;
    struct ss_hook *hook;
    struct ss_type types[SK_ENTITY_COUNT];
    bool any_enabled;

    /* Ack detection: the batches handed out and not yet stored (a chain the
     * driver stores in one transaction, source.c), and what they carried. */
    struct pend_batch *pb;
    size_t n_pb, cap_pb;
    struct pending *pend;
    size_t n_pend, cap_pend;
    struct sk_idmap pend_index; /* id -> value, the records of those batches (dedupe within) */

    /* The run's accumulators, valid for run acc_run (its t0). */
    int64_t acc_run;
    struct sk_idset run_seen; /* ids read in this run (not deleted by it: T0 rule) */
    struct dels run_dels;
    int64_t del_chain_run; /* run whose deletedEntities chain started in this process */
    struct ss_failing del_failing; /* deletedEntities failing on its own (source_deleted.c) */

    /* Delete guard: an operator's request, applied from the cursor handed
     * out last on (until its batch is stored: the held list it reported;
     * pend_batch.release says which batch applied it). */
    struct sk_release *release;
    char *reported_json;   /* the held list the core has */

    struct sk_tz *tz;  /* server_timezone */
    bool warned_naive; /* a timestamp without an offset was read (warned once) */
    bool strict;       /* validation: strict */
    bool warned_deleted_missing;
    struct paging_guard guard;
    /* The chain whose page token was refused or expired, and how often it restarted. */
    char restart_chain[64];
    int restarts_400, restarts_410;
    int64_t poll_interval_us; /* the core's setting for this source */
    int64_t last_regular_us;  /* start of the last run that covered every type */
};

/*
 * Bytes cJSON keeps broken or cuts short (a NUL, \u0000, invalid UTF-8), or
 * a number a double does not hold exactly (the page's parse says so,
 * sk_json_arena_inexact), somewhere in a page: the records that hold them
 * are found by their byte spans and dead-lettered with the position, the
 * others go on. A page without them (nearly all) costs one scan.
 */
struct ss_page_check {
    const char *body;
    size_t (*spans)[2]; /* of the data list's items, only when the page has either */
    size_t n_spans;
    bool inexact;      /* the page holds such a number, the first at: */
    size_t inexact_at; /* (its offset in the body) */
};

/* A page item refused before it is taken: why, and its text as the server sent it. */
struct ss_item_refusal {
    struct sk_error err;
    const char *text;
    size_t len;
};

/* ---- source_options.c ------------------------------------------------------- */

extern const struct sk_option ss12000_source_options[];

/* ---- source_cursor.c -------------------------------------------------------- */

/* cursor (NULL or empty: none yet) -> st. 0 or -1 with err (FATAL: not ours). */
int ss_cursor_load(const struct sk_cursor *cursor, struct cstate *st, struct sk_error *err);
/* Frees what st holds (page token, the delete guard's sets). */
void ss_cursor_free(struct cstate *st);
/* st -> a packed Ss12000Cursor (malloc'ed, caller frees) of *len bytes. */
uint8_t *ss_cursor_pack(const struct cstate *st, size_t *len);
/* Copies src into dst, cut to TEXT_MAX - 1 bytes. */
void ss_text_copy(char dst[TEXT_MAX], const char *src);

/* ---- source_page.c ---------------------------------------------------------- */

/* Before a page's items are taken: which of them hold bytes cJSON breaks. */
struct ss_page_check ss_page_check(const struct ss_resp *r);
/* Dead-letters item k of the page if its bytes are bad; true if it did. */
bool ss_page_item_bad(const struct ss_page_check *pc, size_t k, const struct sk_entity *e,
                      const char *url, struct sk_batch *out);
/* Whether item k of the page holds a number a double does not hold exactly:
 * true with *why filled (PERMANENT, the position in the item; its text is
 * the body's). */
bool ss_page_item_inexact(const struct ss_page_check *pc, size_t k, const struct sk_entity *e,
                          struct ss_item_refusal *why);
#define REASON_MAX 96
/* What the server said about an error, short and printable. */
void ss_server_reason(const struct ss_resp *r, char out[REASON_MAX]);
/*
 * A list or deletedEntities page: the document (caller frees), its data and
 * next token; NULL with err (RETRIABLE) for an answer other than 200 (with
 * the server's short reason) or a body that is not a JSON page.
 */
cJSON *ss_parse_page(struct ss_resp *r, const char *url, const cJSON **data, const char **next,
                     struct sk_error *err);
/* One page of a chain: -1 with err (RETRIABLE, g->hit set) when paging would never end. */
void ss_paging_guard_forget(struct paging_guard *g);
int ss_paging_guard_page(struct paging_guard *g, const char *chain, int page_no, size_t items,
                         const char *next, const char *url, struct sk_error *err);

/* ---- source_run.c ----------------------------------------------------------- */

/* us as RFC 3339 with the offset off_min (minutes east of UTC), µs precision. */
void ss_format_time(int64_t us, int off_min, char out[TEXT_MAX]);

/* `skolsync check --connect` (source_probe.c). */
void ss_probe(const void *conf, struct sk_probe *p);
/* Forgets the chain under way: its page token and the maxima it read. */
void ss_chain_reset(struct cstate *st);
/* Positions st at type index k of the run (or the deletes, or the end). */
void ss_enter_type(struct ss_source *src, struct cstate *st, int k);
/* Starts a run: its types, its T0, empty accumulators. */
void ss_start_run(struct ss_source *src, struct cstate *st);
/* The next step after a completed chain. */
void ss_advance(struct ss_source *src, struct cstate *st);
/* One step of the run: one request, or the run's end. -1 with err. */
int ss_run_step(struct ss_source *src, struct cstate *st, struct sk_batch *out,
                struct sk_error *err);
/*
 * GET url, a page of the chain under way. 1: r holds an answer for the step
 * to read (caller frees it); 0: a page token was expired (410) or refused
 * (400), the chain starts over (the warning ends with `again`); -1 with err.
 * A chain restarts at most TOKEN_400_RESTARTS_MAX (TOKEN_410_RESTARTS_MAX)
 * times in a run: then the 400 (410) is the step's answer, an error.
 */
int ss_chain_get(struct ss_source *src, struct cstate *st, const char *url, const char *again,
                 struct ss_resp *r, struct sk_error *err);
/*
 * The page in r: its document (caller frees), data and next token, having
 * passed the paging guard of chain (page_no 0: its first page). list: data
 * must be a list of entities. NULL with err (RETRIABLE; src->guard.hit set
 * when paging would never end).
 */
cJSON *ss_chain_page(struct ss_source *src, struct ss_resp *r, const char *url, const char *chain,
                     int page_no, bool list, const cJSON **data, const char **next,
                     struct sk_error *err);

/*
 * A part of the run failed with err (RETRIABLE): type i, or deletedEntities
 * (i < 0). -1: the poll fails (the first failure in a row); 0: the part
 * fails on its own for its backoff, err is cleared, and the caller moves
 * the run on without it. ss_part_ok: it answered a page (chain_end: the
 * last of its chain; a part whose paging never ended is cleared only so).
 */
int ss_part_failed(struct ss_source *src, int i, long status, struct sk_error *err);
void ss_part_ok(struct ss_source *src, int i, bool chain_end);

/* Tells the core (once per change) whether type i is skipped: not served. */
void ss_set_skipped(struct ss_source *src, int i, bool skipped);
/* True if type i is read through a startTime window (CalendarEvent, calendar_window). */
bool ss_windowed(const struct ss_source *src, int i);
/* The window of the run under way: [*lo, *hi], µs since the epoch (UTC). */
void ss_window(const struct ss_source *src, const struct cstate *st, int64_t *lo, int64_t *hi);

/* ---- source_list.c ---------------------------------------------------------- */

/* The list request of the current step of type i (malloc'ed, caller frees). */
char *ss_list_url(struct ss_source *src, const struct cstate *st, int i);
/* One request of a list step (full or delta). -1 with err. */
int ss_list_step(struct ss_source *src, struct cstate *st, struct sk_batch *out,
                 struct sk_error *err);

/* ---- source_deleted.c ------------------------------------------------------- */

/* One request of the deletedEntities step. -1 with err. */
int ss_deleted_step(struct ss_source *src, struct cstate *st, struct sk_batch *out,
                    struct sk_error *err);

/* ---- source_guard.c --------------------------------------------------------- */

/* Adds id (if not in d already); the live entry of id. */
struct del *ss_dels_add(struct dels *d, int type, const char *id);
bool ss_dels_live(const struct dels *d, const struct del *x);
void ss_dels_clear(struct dels *d); /* keeps the memory */
void ss_dels_free(struct dels *d);  /* gives it back; the set stays usable */
/* A change of the batch under way, learnt by the dedupe map once it is stored. */
void ss_pend_add(struct ss_source *src, int type, const char *id, int64_t val, bool bad);
/* The same with the id parsed already; NULL: no UUID, nothing to remember. */
void ss_pend_add_key(struct ss_source *src, int type, const struct sk_idkey *id, int64_t val,
                     bool bad);
void ss_pend_clear(struct ss_source *src);
/* Keeps the first n pending changes only (a failed poll's own are dropped). */
void ss_pend_truncate(struct ss_source *src, size_t n);
/* The live entries of d. */
size_t ss_dels_count(const struct dels *d);
/* st's held deletions as JSON {"Person": [ids], ...} (malloc'ed). */
char *ss_held_json(const struct cstate *st);
/*
 * Full reconciliation of type i: ids live in Kafka the listing lacked become
 * deletions; of a windowed type only those last read inside the window.
 */
int ss_reconcile(struct ss_source *src, const struct cstate *st, int i, struct sk_error *err);
/* The run's end: its deletions published, or held by the delete guard. -1 with err. */
int ss_finish_run(struct ss_source *src, struct cstate *st, struct sk_batch *out,
                  struct sk_error *err);
/* Applies an operator's request to st's held deletions (tombstones into out). */
void ss_apply_release(struct ss_source *src, struct cstate *st, const struct sk_release *r,
                      struct sk_batch *out);

#endif
