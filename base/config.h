/*
 * config.h: YAML configuration as a tree that remembers where every value
 * came from, and the declarative option tables that validate it.
 *
 * Owns: parsing (libyaml, config_yaml.c), ${env:NAME}/${file:PATH}
 * references (config_refs.c), the tree and the error list (config_tree.c),
 * value parsers (config_values.c) and option validation (config_options.c).
 * Must never: print a secret's value, stop at the first error (`skolsync
 * check` reports them all), or know any connector.
 *
 * Every error reads  FILE:LINE:COL: key.path: what is wrong (what was expected)
 */
#ifndef SK_CONFIG_H
#define SK_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- the tree ---------------------------------------------------------- */

enum sk_cnode_kind { SK_CNODE_SCALAR, SK_CNODE_MAP, SK_CNODE_SEQ };

struct sk_cnode {
    enum sk_cnode_kind kind;
    char *key;        /* key in the parent map, NULL in a sequence or at the root */
    char *value;      /* SCALAR: the text after substitution; NULL for MAP/SEQ */
    bool secret;      /* the value came (partly) from ${env:} or ${file:}: never print it */
    bool quoted;      /* the scalar was quoted in YAML (so "null"/"true" stay strings) */
    const char *file; /* the file it was read from (owned by the tree) */
    int line, col;    /* 1-based position of the value (for a map entry: of its key) */
    int value_line, value_col; /* 1-based position of the value itself (= line/col outside maps) */
    struct sk_cnode **kids;    /* MAP: entries (each with key), SEQ: items */
    size_t n_kids;
    size_t index; /* position among the parent's kids (the next one while not attached) */
    struct sk_cnode *parent;
};

/* ---- the error list ------------------------------------------------------ */

struct sk_config_error {
    char *text; /* the whole line, "FILE:LINE:COL: path: what (expected)"; control
                 * characters escaped (\n, \x1b), as in the log */
};

/* A file can hold millions of mistakes (an alias bomb): the first
 * SK_CONFIG_MAX_ERRORS are kept, the rest only counted. */
#define SK_CONFIG_MAX_ERRORS 1000

struct sk_config_errors {
    struct sk_config_error *v;
    size_t n, cap;
    size_t more; /* errors past SK_CONFIG_MAX_ERRORS, counted, not kept */
};

/* Appends one error at node (its file, line, column and key path). */
void sk_config_errors_add(struct sk_config_errors *errs, const struct sk_cnode *node,
                          const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Appends an error at an explicit position (used by the parser for YAML syntax errors). */
void sk_config_errors_add_at(struct sk_config_errors *errs, const char *file, int line, int col,
                             const char *path, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
void sk_config_errors_free(struct sk_config_errors *errs);

/*
 * Loads and parses path. Returns the root (a MAP) or NULL; errors (syntax,
 * unreadable file, failed substitution) go to errs. Caller frees the tree with
 * sk_cnode_free(). A tree may be returned together with errors (duplicate key,
 * alias, tag, second document, failed substitution); NULL comes with an error
 * when the file is unreadable, is not valid YAML, nests too deep or its top
 * level is not a map. An empty file is an empty map. The root owns `file`.
 */
struct sk_cnode *sk_config_load(const char *path, struct sk_config_errors *errs);
/* The same, but ${env:}/${file:} references below the top-level keys in keep
 * (NULL-terminated) are left as written, marked secret and never read: for a
 * command that does not need those sections' secrets. */
struct sk_cnode *sk_config_load_keeping(const char *path, const char *const *keep,
                                        struct sk_config_errors *errs);
/* The same from a string in memory; name is used as FILE in error messages. */
struct sk_cnode *sk_config_load_string(const char *text, size_t len, const char *name,
                                       struct sk_config_errors *errs);
void sk_cnode_free(struct sk_cnode *node);

/* Map lookup by key (NULL if absent or node is not a map). */
const struct sk_cnode *sk_cnode_get(const struct sk_cnode *map, const char *key);
/* Dotted key path from the root, e.g. "sinks.db.path" or "sources[0].path". Caller frees. */
char *sk_cnode_path(const struct sk_cnode *node);
/* For logs and messages: the value, or "********" if it is secret. Never NULL. */
const char *sk_cnode_display(const struct sk_cnode *node);

/* ---- option tables ------------------------------------------------------- */

enum sk_opt_type {
    SK_OPT_END = 0,  /* terminates a table */
    SK_OPT_STRING,   /* char *            */
    SK_OPT_SECRET,   /* char *, never printed; expected to come from ${env:}/${file:} */
    SK_OPT_INT,      /* int64_t           */
    SK_OPT_BOOL,     /* bool  (true/false/yes/no/on/off) */
    SK_OPT_DURATION, /* int64_t milliseconds; "250ms", "30s", "5m", "24h", "1d"; bare number = s */
    SK_OPT_SIZE,     /* int64_t bytes; "512", "64KiB", "10MiB", "1GiB", "10MB" */
    SK_OPT_LIST,     /* struct sk_strlist; a YAML sequence of scalars (a scalar becomes one item) */
    SK_OPT_MAP,      /* struct sk_strmap; a YAML map of scalars (e.g. librdkafka properties) */
    SK_OPT_GROUP,    /* a nested map validated by .sub into the struct at .offset */
    SK_OPT_ENUM,     /* char *, one of .choices (a NULL-terminated list) */
    SK_OPT_GROUPS,   /* struct sk_groupmap; a map of name -> a group validated by .sub */
};

struct sk_strlist {
    char **v;
    size_t n;
};

struct sk_strmap {
    char **keys;
    char **values;
    bool *secret; /* per value: came from a substitution */
    size_t n;
};

/* SK_OPT_GROUPS: names in file order, each with a struct of .sub_size bytes filled by .sub. */
struct sk_groupmap {
    char **keys;
    void *items; /* n structs of .sub_size bytes; sk_groupmap_at() */
    size_t n;
};

struct sk_option {
    const char *name;
    enum sk_opt_type type;
    const char *def; /* default as YAML text, NULL for none */
    bool required;
    const char *help;            /* one line, printed by `skolsync connectors TYPE` */
    size_t offset;               /* offsetof(the connector's conf struct, field) */
    const struct sk_option *sub; /* SK_OPT_GROUP, SK_OPT_GROUPS: the nested table */
    size_t sub_size;             /* SK_OPT_GROUPS: sizeof the struct .sub fills */
    const char *const *choices;  /* SK_OPT_ENUM */
    int64_t min, max;            /* SK_OPT_INT/DURATION/SIZE bounds when max > min */
};

/*
 * Validates map against table and fills conf (a zeroed struct the table's
 * offsets point into). Unknown keys, missing required options, bad types and
 * out-of-range values are all reported to errs (every one, not just the
 * first). Defaults are applied for absent options. Returns the number of
 * errors added. Strings put into conf are owned by conf: release them with
 * sk_options_free(table, conf).
 */
int sk_options_apply(const struct sk_option *table, const struct sk_cnode *map, void *conf,
                     struct sk_config_errors *errs);
void sk_options_free(const struct sk_option *table, void *conf);
/* The i-th group of an SK_OPT_GROUPS option (opt: its row, for the size). */
void *sk_groupmap_at(const struct sk_groupmap *m, const struct sk_option *opt, size_t i);

/* Value parsers (also used by the core for its own keys). 0 on success. */
int sk_parse_duration_ms(const char *text, int64_t *out);
int sk_parse_size(const char *text, int64_t *out);
int sk_parse_bool(const char *text, bool *out);
/* A decimal 64-bit integer with an optional sign. 0 on success, -1 if not a
 * number, -2 if it does not fit. (The two other number parsers also return -2
 * on overflow and -1 on anything else.) */
int sk_parse_int(const char *text, int64_t *out);
const char *sk_opt_type_name(enum sk_opt_type type);

#endif
