/*
 * config.c: YAML text -> a tree of sk_cnode that remembers where every value
 * came from, ${env:}/${file:} substitution, the error list, and the
 * declarative option tables (Fluent Bit's config_map) that validate a map of
 * that tree and fill a connector's struct.
 *
 * Owns: the libyaml event parser, substitution, value parsers (bool,
 * duration, size, int), option validation.
 * Must never: print a secret's value (every message shows a value through
 * shown_value()/sk_cnode_display()), stop at the first error (`skolsync
 * check` reports them all), know any connector, or log (it reports errors
 * to its caller).
 *
 * Out of memory aborts, as sk_malloc() does: a half-loaded configuration is
 * worse than no daemon.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "buf.h"
#include "util.h"

/* Deeper nesting than this is a mistake (or an attack on the recursion). */
#define MAX_DEPTH 64
/* Limits on what we read into memory. */
#define MAX_CONFIG_BYTES (16u << 20)
#define MAX_SECRET_FILE_BYTES (1u << 20)

static const char HIDDEN[] = "********";

/* Messages said from more than one place (macros keep printf format checking). */
#define MSG_ANCHOR "anchors and aliases are not supported (expected the value written out in full)"
#define MSG_TAG "tag \"%s\" is not supported (expected plain YAML without tags)"
#define MSG_REFERENCE                                                                              \
    "${env:} and ${file:} are only for secret fields, whose values are never shown (expected "     \
    "the value itself)"
#define MSG_BAD_DEFAULT                                                                            \
    "option \"%s%s\" has an invalid default (expected %s; this is a bug in the option table)"

/* Duration units, largest first: the parser and the bound printer share them. */
static const struct {
    const char *unit;
    int64_t ms;
} duration_units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
#define N_DURATION_UNITS (sizeof(duration_units) / sizeof(duration_units[0]))

/* ---- memory and strings -------------------------------------------------- */

/* Frees a string that may hold a secret, wiping it first. */
static void free_wiped(char *s, bool secret)
{
    if (s && secret)
        explicit_bzero(s, strlen(s));
    free(s);
}

/* Reads a whole file into a NUL-terminated buffer. 0 or an errno value. */
static int read_whole_file(const char *path, size_t limit, char **out, size_t *out_len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno;
    struct sk_buf b = {0};
    char chunk[4096];
    size_t n;
    int rc = 0;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (b.len + n > limit) {
            rc = EFBIG;
            break;
        }
        sk_buf_putn(&b, chunk, n);
    }
    if (!rc && ferror(f))
        rc = errno ? errno : EIO;
    explicit_bzero(chunk, sizeof(chunk));
    fclose(f);
    if (rc) {
        sk_buf_wipe(&b);
        return rc;
    }
    *out_len = b.len;
    *out = sk_buf_take(&b);
    return 0;
}

/* ---- the error list ------------------------------------------------------ */

static void errors_vadd(struct sk_config_errors *errs, const char *file, int line, int col,
                        const char *path, const char *fmt, va_list ap)
{
    if (!errs)
        return;
    if (errs->n >= SK_CONFIG_MAX_ERRORS) {
        errs->more++;
        return;
    }
    struct sk_buf b = {0};
    if (file) {
        sk_buf_puts(&b, file);
        if (line > 0)
            sk_buf_printf(&b, ":%d:%d", line, col);
        sk_buf_puts(&b, ": ");
    }
    if (path && *path) {
        sk_buf_puts(&b, path);
        sk_buf_puts(&b, ": ");
    }
    sk_buf_vprintf(&b, fmt, ap);
    if (errs->n == errs->cap) {
        errs->cap = errs->cap ? errs->cap * 2 : 8;
        errs->v = sk_realloc(errs->v, errs->cap * sizeof(*errs->v));
    }
    errs->v[errs->n++].text = sk_buf_take(&b);
}

void sk_config_errors_add_at(struct sk_config_errors *errs, const char *file, int line, int col,
                             const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    errors_vadd(errs, file, line, col, path, fmt, ap);
    va_end(ap);
}

static void errors_vadd_node(struct sk_config_errors *errs, const struct sk_cnode *node,
                             const char *fmt, va_list ap)
{
    if (!errs)
        return;
    if (!node) {
        errors_vadd(errs, NULL, 0, 0, NULL, fmt, ap);
        return;
    }
    char *path = sk_cnode_path(node);
    errors_vadd(errs, node->file, node->line, node->col, path, fmt, ap);
    free(path);
}

void sk_config_errors_add(struct sk_config_errors *errs, const struct sk_cnode *node,
                          const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    errors_vadd_node(errs, node, fmt, ap);
    va_end(ap);
}

void sk_config_errors_free(struct sk_config_errors *errs)
{
    if (!errs)
        return;
    for (size_t i = 0; i < errs->n; i++)
        free(errs->v[i].text);
    free(errs->v);
    errs->v = NULL;
    errs->n = errs->cap = errs->more = 0;
}

/* ---- the tree ------------------------------------------------------------ */

void sk_cnode_free(struct sk_cnode *node)
{
    if (!node)
        return;
    for (size_t i = 0; i < node->n_kids; i++)
        sk_cnode_free(node->kids[i]);
    free(node->kids);
    free(node->key);
    free_wiped(node->value, node->secret);
    /* The root owns the file name every node of its tree points at. */
    if (!node->parent)
        free((char *)node->file);
    free(node);
}

const struct sk_cnode *sk_cnode_get(const struct sk_cnode *map, const char *key)
{
    if (!map || map->kind != SK_CNODE_MAP || !key)
        return NULL;
    for (size_t i = 0; i < map->n_kids; i++)
        if (map->kids[i]->key && strcmp(map->kids[i]->key, key) == 0)
            return map->kids[i];
    return NULL;
}

char *sk_cnode_path(const struct sk_cnode *node)
{
    size_t depth = 0;
    for (const struct sk_cnode *n = node; n; n = n->parent)
        depth++;
    if (depth == 0)
        return sk_strdup("");
    const struct sk_cnode **chain = sk_calloc(depth, sizeof(*chain));
    size_t i = depth;
    for (const struct sk_cnode *n = node; n; n = n->parent)
        chain[--i] = n;
    struct sk_buf b = {0};
    for (i = 1; i < depth; i++) { /* chain[0] is the root: no name */
        const struct sk_cnode *n = chain[i];
        if (n->parent->kind == SK_CNODE_SEQ) {
            sk_buf_printf(&b, "[%zu]", n->index);
        } else {
            if (b.len)
                sk_buf_puts(&b, ".");
            sk_buf_puts(&b, n->key ? n->key : "?");
        }
    }
    free(chain);
    return sk_buf_take(&b);
}

const char *sk_cnode_display(const struct sk_cnode *node)
{
    if (!node)
        return "(none)";
    if (node->secret)
        return HIDDEN;
    switch (node->kind) {
    case SK_CNODE_SCALAR:
        return node->value ? node->value : "";
    case SK_CNODE_MAP:
        return "(map)";
    case SK_CNODE_SEQ:
        return "(sequence)";
    }
    return "";
}

static const char *kind_phrase(const struct sk_cnode *node)
{
    switch (node->kind) {
    case SK_CNODE_MAP:
        return "a map";
    case SK_CNODE_SEQ:
        return "a sequence";
    case SK_CNODE_SCALAR:
        break;
    }
    return "a single value";
}

/* YAML's null in plain style: an empty value, "~" or "null". A value that came
 * from a substitution is text, even when empty: `key: ${env:EMPTY}` is "". */
static bool is_null(const struct sk_cnode *node)
{
    if (node->kind != SK_CNODE_SCALAR || node->quoted || node->secret)
        return false;
    const char *v = node->value;
    return !*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
           strcmp(v, "NULL") == 0;
}

/* Appends kid; the array doubles at powers of two (a million items is no
 * million reallocations). */
static void cnode_attach(struct sk_cnode *parent, struct sk_cnode *kid)
{
    size_t n = parent->n_kids;
    if (n >= 4 ? (n & (n - 1)) == 0 : n == 0)
        parent->kids = sk_realloc(parent->kids, (n >= 4 ? 2 * n : 4) * sizeof(*parent->kids));
    kid->index = n;
    parent->kids[parent->n_kids++] = kid;
}

/* ---- the parser ---------------------------------------------------------- */

/* One open MAP or SEQ while events stream in. */
struct frame {
    struct sk_cnode *node;
    bool detached; /* not attached to the tree (dropped): freed when it ends */
    bool is_key;   /* a map or sequence used as a key: skipped */
    /* MAP only: the key whose value comes next. */
    bool have_key;
    bool drop_value; /* that value is dropped (duplicate or unusable key) */
    char *key;
    int key_line, key_col;
    /* MAP only, once it is large: its keys hashed, so that the duplicate
     * check of each new key is not a walk over all the others. */
    struct sk_cnode **keyset;
    size_t keyset_cap, keyset_n; /* slots; kids hashed so far */
};

struct loader {
    char *file;      /* the name in messages; the root takes ownership */
    const char *dir; /* directory for relative ${file:} paths, NULL = cwd */
    size_t dir_len;
    const char *text; /* the input, to place reader errors */
    size_t len;
    struct sk_config_errors *errs;
    bool any_root; /* accept a scalar or sequence at the top (option defaults) */
    struct frame stack[MAX_DEPTH];
    size_t depth;
    struct sk_cnode *root;
    int n_docs;
    bool fatal; /* the result is unusable: return no tree */
};

#define KEYSET_FROM 16 /* maps with fewer keys are searched in order */

static size_t key_hash(const char *key)
{
    size_t h = 1469598103934665603ULL;
    for (const char *p = key; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

static void keyset_put(struct frame *f, struct sk_cnode *kid)
{
    size_t i = key_hash(kid->key) & (f->keyset_cap - 1);
    while (f->keyset[i])
        i = (i + 1) & (f->keyset_cap - 1);
    f->keyset[i] = kid;
}

/* The entry of the frame's map with this key, or NULL. */
static const struct sk_cnode *frame_lookup(struct frame *f, const char *key)
{
    const struct sk_cnode *map = f->node;
    if (map->n_kids < KEYSET_FROM)
        return sk_cnode_get(map, key);
    if ((map->n_kids + 1) * 2 > f->keyset_cap) {
        free(f->keyset);
        f->keyset_cap = 64;
        while ((map->n_kids + 1) * 2 > f->keyset_cap)
            f->keyset_cap *= 2;
        f->keyset = sk_calloc(f->keyset_cap, sizeof(*f->keyset));
        f->keyset_n = 0;
    }
    for (; f->keyset_n < map->n_kids; f->keyset_n++)
        if (map->kids[f->keyset_n]->key)
            keyset_put(f, map->kids[f->keyset_n]);
    for (size_t i = key_hash(key) & (f->keyset_cap - 1); f->keyset[i];
         i = (i + 1) & (f->keyset_cap - 1))
        if (strcmp(f->keyset[i]->key, key) == 0)
            return f->keyset[i];
    return NULL;
}

/* Pops the top frame; frees what it owns and, if dropped, its node. */
static struct frame frame_pop(struct loader *ld)
{
    struct frame f = ld->stack[--ld->depth];
    free(f.key);
    free(f.keyset);
    f.key = NULL;
    f.keyset = NULL;
    return f;
}

static struct frame *top_frame(struct loader *ld)
{
    return ld->depth ? &ld->stack[ld->depth - 1] : NULL;
}

static bool in_key_position(struct loader *ld)
{
    struct frame *top = top_frame(ld);
    return top && top->node->kind == SK_CNODE_MAP && !top->have_key;
}

/* Reports an error at mark for what would be the next node of the tree (its path included). */
static void err_at_next(struct loader *ld, yaml_mark_t mark, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void err_at_next(struct loader *ld, yaml_mark_t mark, const char *key, const char *fmt, ...)
{
    struct frame *top = top_frame(ld);
    va_list ap;
    va_start(ap, fmt);
    if (top && top->node->kind == SK_CNODE_MAP && !top->have_key) {
        /* In key position: the path is the map's own. */
        char *path = sk_cnode_path(top->node);
        errors_vadd(ld->errs, ld->file, (int)mark.line + 1, (int)mark.column + 1, path, fmt, ap);
        free(path);
        va_end(ap);
        return;
    }
    struct sk_cnode tmp = {
        .kind = SK_CNODE_SCALAR,
        .key = (char *)key,
        .file = ld->file,
        .line = (int)mark.line + 1,
        .col = (int)mark.column + 1,
        .parent = top ? top->node : NULL,
        .index = top ? top->node->n_kids : 0,
    };
    if (top && top->node->kind == SK_CNODE_MAP) {
        tmp.key = top->key;
        tmp.line = top->key_line;
        tmp.col = top->key_col;
    }
    errors_vadd_node(ld->errs, &tmp, fmt, ap);
    va_end(ap);
}

/* Creates the node for a value starting at mark and links it to its parent.
 * *detached tells whether the caller must free it once complete. */
static struct sk_cnode *node_new(struct loader *ld, enum sk_cnode_kind kind, yaml_mark_t mark,
                                 bool *detached)
{
    struct sk_cnode *node = sk_calloc(1, sizeof(*node));
    node->kind = kind;
    node->file = ld->file;
    node->line = node->value_line = (int)mark.line + 1;
    node->col = node->value_col = (int)mark.column + 1;
    *detached = false;
    struct frame *top = top_frame(ld);
    if (!top) {
        ld->root = node;
        return node;
    }
    node->parent = top->node;
    node->index = top->node->n_kids; /* the next one, until attached */
    if (top->node->kind == SK_CNODE_MAP) {
        node->key = top->key;
        node->line = top->key_line;
        node->col = top->key_col;
        *detached = top->drop_value;
        top->key = NULL;
        top->have_key = false;
        top->drop_value = false;
    }
    if (!*detached)
        cnode_attach(top->node, node);
    return node;
}

static bool tag_is_standard(const char *tag)
{
    static const char *const ok[] = {"str", "int", "float", "bool", "null", "map", "seq", NULL};
    static const char prefix[] = "tag:yaml.org,2002:";
    if (!tag || strcmp(tag, "!") == 0)
        return true;
    if (strncmp(tag, prefix, sizeof(prefix) - 1) != 0)
        return false;
    for (size_t i = 0; ok[i]; i++)
        if (strcmp(tag + sizeof(prefix) - 1, ok[i]) == 0)
            return true;
    return false;
}

/* Anchors and tags on a node: reported at the node itself. */
static void check_decorations(struct loader *ld, const struct sk_cnode *node,
                              const yaml_char_t *anchor, const yaml_char_t *tag)
{
    if (anchor)
        sk_config_errors_add(ld->errs, node, MSG_ANCHOR);
    if (!tag_is_standard((const char *)tag))
        sk_config_errors_add(ld->errs, node, MSG_TAG, (const char *)tag);
}

static void on_alias(struct loader *ld, const yaml_event_t *ev)
{
    struct frame *top = top_frame(ld);
    err_at_next(ld, ev->start_mark, NULL,
                "aliases (*%s) are not supported (expected the value written out in full)",
                (const char *)ev->data.alias.anchor);
    if (!top)
        return;
    if (top->node->kind == SK_CNODE_MAP && !top->have_key) {
        /* An alias as key: its value has nowhere to go. */
        top->have_key = true;
        top->drop_value = true;
        top->key = NULL;
    } else if (top->node->kind == SK_CNODE_MAP) {
        free(top->key);
        top->key = NULL;
        top->have_key = false;
        top->drop_value = false;
    } else {
        /* A stand-in ("", quoted so it is not null) keeps the later items' indices right. */
        bool detached;
        struct sk_cnode *node = node_new(ld, SK_CNODE_SCALAR, ev->start_mark, &detached);
        node->value = sk_strdup("");
        node->quoted = true;
        if (detached)
            sk_cnode_free(node);
    }
}

static void on_key(struct loader *ld, const yaml_event_t *ev)
{
    struct frame *top = top_frame(ld);
    const char *text = (const char *)ev->data.scalar.value;
    top->have_key = true;
    top->drop_value = false;
    top->key = sk_strndup(text, ev->data.scalar.length);
    top->key_line = (int)ev->start_mark.line + 1;
    top->key_col = (int)ev->start_mark.column + 1;
    if (ev->data.scalar.anchor)
        err_at_next(ld, ev->start_mark, NULL, MSG_ANCHOR);
    if (!tag_is_standard((const char *)ev->data.scalar.tag))
        err_at_next(ld, ev->start_mark, NULL, MSG_TAG, (const char *)ev->data.scalar.tag);
    const struct sk_cnode *first = frame_lookup(top, top->key);
    if (first) {
        err_at_next(ld, ev->start_mark, NULL,
                    "duplicate key \"%s\" (first defined at line %d, column %d)", top->key,
                    first->line, first->col);
        top->drop_value = true;
    }
}

static void on_scalar(struct loader *ld, const yaml_event_t *ev)
{
    if (in_key_position(ld)) {
        on_key(ld, ev);
        return;
    }
    bool null_root =
        ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
        (ev->data.scalar.length == 0 || strcmp((const char *)ev->data.scalar.value, "~") == 0);
    if (!ld->depth && !ld->any_root && null_root)
        return; /* "---" and nothing else: an empty map, made by load_text() */
    if (!ld->depth && !ld->any_root) {
        sk_config_errors_add_at(ld->errs, ld->file, (int)ev->start_mark.line + 1,
                                (int)ev->start_mark.column + 1, NULL,
                                "the top level is a single value (expected a map of settings, "
                                "key: value)");
        ld->fatal = true;
        return;
    }
    bool detached;
    struct sk_cnode *node = node_new(ld, SK_CNODE_SCALAR, ev->start_mark, &detached);
    const char *tag = (const char *)ev->data.scalar.tag;
    node->value = sk_strndup((const char *)ev->data.scalar.value, ev->data.scalar.length);
    node->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE ||
                   (tag && (strcmp(tag, "!") == 0 || strcmp(tag, YAML_STR_TAG) == 0));
    check_decorations(ld, node, ev->data.scalar.anchor, ev->data.scalar.tag);
    if (strlen(node->value) != ev->data.scalar.length)
        sk_config_errors_add(ld->errs, node, "the value contains a NUL character (expected text)");
    if (detached)
        sk_cnode_free(node);
}

static void on_start(struct loader *ld, const yaml_event_t *ev, enum sk_cnode_kind kind)
{
    if (ld->depth == MAX_DEPTH) {
        sk_config_errors_add_at(
            ld->errs, ld->file, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1, NULL,
            "nested deeper than %d levels (expected a flatter file)", MAX_DEPTH);
        ld->fatal = true;
        return;
    }
    const yaml_char_t *anchor =
        kind == SK_CNODE_MAP ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
    const yaml_char_t *tag =
        kind == SK_CNODE_MAP ? ev->data.mapping_start.tag : ev->data.sequence_start.tag;
    if (in_key_position(ld)) {
        err_at_next(ld, ev->start_mark, NULL,
                    "a %s is used as a key (expected a plain key, key: value)",
                    kind == SK_CNODE_MAP ? "map" : "sequence");
        struct sk_cnode *node = sk_calloc(1, sizeof(*node));
        node->kind = kind;
        node->file = ld->file;
        node->parent = top_frame(ld)->node;
        ld->stack[ld->depth++] = (struct frame){.node = node, .detached = true, .is_key = true};
        return;
    }
    if (!ld->depth && kind != SK_CNODE_MAP && !ld->any_root) {
        sk_config_errors_add_at(ld->errs, ld->file, (int)ev->start_mark.line + 1,
                                (int)ev->start_mark.column + 1, NULL,
                                "the top level is a sequence (expected a map of settings, "
                                "key: value)");
        ld->fatal = true;
        return;
    }
    bool detached;
    struct sk_cnode *node = node_new(ld, kind, ev->start_mark, &detached);
    check_decorations(ld, node, anchor, tag);
    ld->stack[ld->depth++] = (struct frame){.node = node, .detached = detached};
}

static void on_end(struct loader *ld)
{
    struct frame f = frame_pop(ld);
    if (f.is_key) {
        sk_cnode_free(f.node);
        struct frame *top = top_frame(ld);
        top->have_key = true;
        top->drop_value = true;
        top->key = NULL;
        return;
    }
    if (f.detached)
        sk_cnode_free(f.node);
}

/* Handles one event; false to stop reading. */
static bool on_event(struct loader *ld, const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++ld->n_docs > 1) {
            sk_config_errors_add_at(ld->errs, ld->file, (int)ev->start_mark.line + 1,
                                    (int)ev->start_mark.column + 1, NULL,
                                    "a second YAML document (expected a single document)");
            return false;
        }
        return true;
    case YAML_ALIAS_EVENT:
        on_alias(ld, ev);
        return true;
    case YAML_SCALAR_EVENT:
        on_scalar(ld, ev);
        return !ld->fatal;
    case YAML_SEQUENCE_START_EVENT:
        on_start(ld, ev, SK_CNODE_SEQ);
        return !ld->fatal;
    case YAML_MAPPING_START_EVENT:
        on_start(ld, ev, SK_CNODE_MAP);
        return !ld->fatal;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        on_end(ld);
        return true;
    case YAML_STREAM_END_EVENT:
        return false;
    default:
        return true;
    }
}

static void report_syntax(struct loader *ld, const yaml_parser_t *parser)
{
    int line = (int)parser->problem_mark.line + 1;
    int col = (int)parser->problem_mark.column + 1;
    if (parser->error == YAML_READER_ERROR) {
        /* The reader knows only a byte offset. */
        line = 1;
        col = 1;
        for (size_t i = 0; i < parser->problem_offset && i < ld->len; i++) {
            if (ld->text[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
    }
    const char *problem = parser->problem ? parser->problem : "invalid YAML";
    if (parser->context)
        sk_config_errors_add_at(ld->errs, ld->file, line, col, NULL, "%s (%s)", problem,
                                parser->context);
    else
        sk_config_errors_add_at(ld->errs, ld->file, line, col, NULL, "%s", problem);
}

/* ---- substitution -------------------------------------------------------- */

static bool subst_env(struct loader *ld, const struct sk_cnode *node, const char *name, size_t len,
                      struct sk_buf *out)
{
    if (len == 0) {
        sk_config_errors_add(ld->errs, node, "empty name in ${env:} (expected ${env:NAME})");
        return false;
    }
    char *var = sk_strndup(name, len);
    const char *value = getenv(var);
    if (!value)
        sk_config_errors_add(ld->errs, node, "environment variable %s is not set", var);
    else
        sk_buf_puts(out, value);
    free(var);
    return value != NULL;
}

static bool subst_file(struct loader *ld, const struct sk_cnode *node, const char *path_text,
                       size_t len, struct sk_buf *out)
{
    if (len == 0) {
        sk_config_errors_add(ld->errs, node, "empty path in ${file:} (expected ${file:PATH})");
        return false;
    }
    struct sk_buf path = {0};
    /* Relative to the configuration file, so a unit's working directory does not matter. */
    if (path_text[0] != '/' && ld->dir) {
        sk_buf_putn(&path, ld->dir, ld->dir_len);
        sk_buf_puts(&path, "/");
    }
    sk_buf_putn(&path, path_text, len);
    char *content = NULL;
    size_t content_len = 0;
    int rc = read_whole_file(path.p, MAX_SECRET_FILE_BYTES, &content, &content_len);
    bool ok = false;
    if (rc) {
        sk_config_errors_add(ld->errs, node,
                             "cannot read file \"%s\": %s (expected ${file:%.*s} "
                             "to name a readable file)",
                             path.p, strerror(rc), (int)len, path_text);
    } else if (strlen(content) != content_len) {
        sk_config_errors_add(ld->errs, node,
                             "file \"%s\" contains a NUL byte (expected text for ${file:%.*s})",
                             path.p, (int)len, path_text);
    } else {
        /* One trailing newline: the one every editor adds. */
        if (content_len && content[content_len - 1] == '\n') {
            content_len--;
            if (content_len && content[content_len - 1] == '\r')
                content_len--;
        }
        sk_buf_putn(out, content, content_len);
        ok = true;
    }
    free_wiped(content, true);
    free(path.p);
    return ok;
}

/* Replaces ${env:NAME} and ${file:PATH} in a scalar; $${ is a literal ${. */
static void substitute(struct loader *ld, struct sk_cnode *node)
{
    const char *s = node->value;
    if (!strchr(s, '$'))
        return;
    struct sk_buf out = {0};
    bool any = false, ok = true;
    sk_buf_putn(&out, "", 0);
    for (const char *p = s; *p;) {
        if (strncmp(p, "$${", 3) == 0) {
            sk_buf_puts(&out, "${");
            p += 3;
            continue;
        }
        if (strncmp(p, "${", 2) != 0) {
            sk_buf_putn(&out, p++, 1);
            continue;
        }
        any = true;
        const char *body = p + 2;
        const char *end = strchr(body, '}');
        if (!end) {
            sk_config_errors_add(ld->errs, node,
                                 "unterminated \"${\" (expected ${env:NAME} or ${file:PATH}; "
                                 "write $${ for a literal ${)");
            ok = false;
            break;
        }
        size_t len = (size_t)(end - body);
        if (len >= 4 && strncmp(body, "env:", 4) == 0) {
            ok &= subst_env(ld, node, body + 4, len - 4, &out);
        } else if (len >= 5 && strncmp(body, "file:", 5) == 0) {
            ok &= subst_file(ld, node, body + 5, len - 5, &out);
        } else {
            sk_config_errors_add(ld->errs, node,
                                 "unknown substitution \"${%.*s}\" (expected ${env:NAME} or "
                                 "${file:PATH}; write $${ for a literal ${)",
                                 (int)len, body);
            ok = false;
        }
        p = end + 1;
    }
    if (any)
        node->secret = true;
    if (!ok) {
        sk_buf_wipe(&out);
        return; /* keep the text as written; it is marked secret all the same */
    }
    free(node->value);
    node->value = sk_buf_take(&out);
}

static void substitute_tree(struct loader *ld, struct sk_cnode *node)
{
    if (node->kind == SK_CNODE_SCALAR) {
        substitute(ld, node);
        return;
    }
    for (size_t i = 0; i < node->n_kids; i++)
        substitute_tree(ld, node->kids[i]);
}

/* ---- loading ------------------------------------------------------------- */

static struct sk_cnode *load_text(const char *text, size_t len, const char *name,
                                  struct sk_config_errors *errs, bool any_root, bool subst)
{
    struct loader ld = {
        .file = sk_strdup(name ? name : "<config>"),
        .text = text,
        .len = len,
        .errs = errs,
        .any_root = any_root,
    };
    const char *slash = strrchr(ld.file, '/');
    if (slash) {
        ld.dir = ld.file;
        ld.dir_len = slash == ld.file ? 1 : (size_t)(slash - ld.file);
    }
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        abort();
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    bool syntax_error = false;
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            report_syntax(&ld, &parser);
            syntax_error = true;
            break;
        }
        bool more = on_event(&ld, &ev);
        yaml_event_delete(&ev);
        if (!more)
            break;
    }
    yaml_parser_delete(&parser);

    /* Frames still open after an error: dropped nodes are not in the tree. */
    while (ld.depth) {
        struct frame f = frame_pop(&ld);
        if (f.detached)
            sk_cnode_free(f.node);
    }
    struct sk_cnode *root = ld.root;
    if (syntax_error || ld.fatal) {
        if (root)
            sk_cnode_free(root); /* frees ld.file with it */
        else
            free(ld.file);
        return NULL;
    }
    if (!root) {
        /* An empty file is an empty map: the option tables say what is missing. */
        root = sk_calloc(1, sizeof(*root));
        root->kind = SK_CNODE_MAP;
        root->file = ld.file;
        root->line = root->col = root->value_line = root->value_col = 1;
    }
    if (subst)
        substitute_tree(&ld, root);
    return root;
}

struct sk_cnode *sk_config_load_string(const char *text, size_t len, const char *name,
                                       struct sk_config_errors *errs)
{
    return load_text(text ? text : "", text ? len : 0, name, errs, false, true);
}

struct sk_cnode *sk_config_load(const char *path, struct sk_config_errors *errs)
{
    char *text = NULL;
    size_t len = 0;
    int rc = read_whole_file(path, MAX_CONFIG_BYTES, &text, &len);
    if (rc) {
        sk_config_errors_add_at(errs, path, 0, 0, NULL,
                                "cannot read the configuration: %s (expected a readable YAML "
                                "file)",
                                strerror(rc));
        return NULL;
    }
    struct sk_cnode *root = load_text(text, len, path, errs, false, true);
    free(text);
    return root;
}

/* ---- value parsers ------------------------------------------------------- */

/* Unsigned decimal digits at *p into *n; -1 if none, -2 on overflow. */
static int parse_digits(const char **p, int64_t *n)
{
    const char *s = *p;
    int64_t v = 0;
    if (*s < '0' || *s > '9')
        return -1;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *s - '0', &v))
            return -2;
    }
    *p = s;
    *n = v;
    return 0;
}

int sk_parse_int(const char *text, int64_t *out)
{
    if (!text)
        return -1;
    const char *p = text;
    if (*p == '-' || *p == '+')
        p++;
    if (*p < '0' || *p > '9')
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(text, &end, 10);
    if (*end)
        return -1;
    if (errno == ERANGE)
        return -2;
    *out = (int64_t)v;
    return 0;
}

int sk_parse_bool(const char *text, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", NULL};
    static const char *const no[] = {"false", "no", "off", NULL};
    if (!text)
        return -1;
    for (size_t i = 0; yes[i]; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

int sk_parse_duration_ms(const char *text, int64_t *out)
{
    if (!text || !*text)
        return -1;
    const char *p = text;
    int64_t total = 0, n;
    int rc = parse_digits(&p, &n);
    if (rc)
        return rc;
    if (!*p) { /* a bare number is seconds */
        if (__builtin_mul_overflow(n, 1000, &total))
            return -2;
        *out = total;
        return 0;
    }
    size_t next_unit = 0; /* units go from large to small, each at most once: 1h30m */
    for (;;) {
        size_t u;
        for (u = next_unit; u < N_DURATION_UNITS; u++) {
            size_t ul = strlen(duration_units[u].unit);
            /* "m" must not eat the "m" of "ms" */
            if (strncmp(p, duration_units[u].unit, ul) == 0 &&
                !(ul == 1 && p[0] == 'm' && p[1] == 's'))
                break;
        }
        if (u == N_DURATION_UNITS)
            return -1;
        p += strlen(duration_units[u].unit);
        int64_t part;
        if (__builtin_mul_overflow(n, duration_units[u].ms, &part) ||
            __builtin_add_overflow(total, part, &total))
            return -2;
        next_unit = u + 1;
        if (!*p)
            break;
        rc = parse_digits(&p, &n);
        if (rc)
            return rc;
    }
    *out = total;
    return 0;
}

int sk_parse_size(const char *text, int64_t *out)
{
    static const struct {
        const char *unit;
        int64_t mult;
    } units[] = {
        {"", 1},
        {"b", 1},
        {"kb", 1000},
        {"mb", 1000 * 1000},
        {"gb", 1000 * 1000 * 1000},
        {"tb", 1000LL * 1000 * 1000 * 1000},
        {"kib", 1LL << 10},
        {"mib", 1LL << 20},
        {"gib", 1LL << 30},
        {"tib", 1LL << 40},
    };
    if (!text)
        return -1;
    const char *p = text;
    int64_t n;
    int rc = parse_digits(&p, &n);
    if (rc)
        return rc;
    if (*p == ' ' && p[1])
        p++;
    for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
        if (strcasecmp(p, units[u].unit) == 0) {
            if (__builtin_mul_overflow(n, units[u].mult, out))
                return -2;
            return 0;
        }
    }
    return -1;
}

const char *sk_opt_type_name(enum sk_opt_type type)
{
    switch (type) {
    case SK_OPT_END:
        return "end";
    case SK_OPT_STRING:
        return "string";
    case SK_OPT_SECRET:
        return "secret";
    case SK_OPT_INT:
        return "integer";
    case SK_OPT_BOOL:
        return "boolean";
    case SK_OPT_DURATION:
        return "duration";
    case SK_OPT_SIZE:
        return "size";
    case SK_OPT_LIST:
        return "list";
    case SK_OPT_MAP:
        return "map";
    case SK_OPT_GROUP:
        return "group";
    case SK_OPT_ENUM:
        return "enum";
    }
    return "unknown";
}

/* ---- option tables ------------------------------------------------------- */

/* "a duration (e.g. 30s, 5m, 24h)": what a message says was expected. */
static const char *expected_phrase(enum sk_opt_type type)
{
    switch (type) {
    case SK_OPT_STRING:
        return "a string";
    case SK_OPT_SECRET:
        return "a secret, e.g. ${env:NAME} or ${file:PATH}";
    case SK_OPT_INT:
        return "an integer";
    case SK_OPT_BOOL:
        return "true or false";
    case SK_OPT_DURATION:
        return "a duration, e.g. 30s, 5m, 24h";
    case SK_OPT_SIZE:
        return "a size, e.g. 512, 64KiB, 10MB";
    case SK_OPT_LIST:
        return "a list of strings";
    case SK_OPT_MAP:
        return "a map of key: value";
    case SK_OPT_GROUP:
        return "a map of options";
    case SK_OPT_ENUM:
        return "one of the listed choices";
    case SK_OPT_END:
        break;
    }
    return "a value";
}

static void *field_of(void *conf, const struct sk_option *opt)
{
    return (char *)conf + opt->offset;
}

static void format_duration(char *buf, size_t size, int64_t ms)
{
    if (ms <= 0) {
        snprintf(buf, size, ms == 0 ? "0s" : "%" PRId64 "ms", ms);
        return;
    }
    size_t used = 0;
    buf[0] = '\0';
    for (size_t u = 0; u < N_DURATION_UNITS && used < size; u++) {
        int64_t n = ms / duration_units[u].ms;
        ms %= duration_units[u].ms;
        if (n)
            used += (size_t)snprintf(buf + used, size - used, "%" PRId64 "%s", n,
                                     duration_units[u].unit);
    }
}

static void format_size(char *buf, size_t size, int64_t bytes)
{
    static const struct {
        const char *unit;
        int64_t mult;
    } units[] = {{"TiB", 1LL << 40},
                 {"GiB", 1LL << 30},
                 {"MiB", 1LL << 20},
                 {"KiB", 1LL << 10},
                 {"TB", 1000LL * 1000 * 1000 * 1000},
                 {"GB", 1000 * 1000 * 1000},
                 {"MB", 1000 * 1000},
                 {"KB", 1000}};
    for (size_t u = 0; bytes > 0 && u < sizeof(units) / sizeof(units[0]); u++) {
        if (bytes % units[u].mult == 0) {
            snprintf(buf, size, "%" PRId64 "%s", bytes / units[u].mult, units[u].unit);
            return;
        }
    }
    snprintf(buf, size, "%" PRId64, bytes);
}

static void format_bound(char *buf, size_t size, enum sk_opt_type type, int64_t v)
{
    if (type == SK_OPT_DURATION)
        format_duration(buf, size, v);
    else if (type == SK_OPT_SIZE)
        format_size(buf, size, v);
    else
        snprintf(buf, size, "%" PRId64, v);
}

/* "a, b, c" */
static char *join_choices(const char *const *choices)
{
    struct sk_buf b = {0};
    for (size_t i = 0; choices && choices[i]; i++) {
        if (i)
            sk_buf_puts(&b, ", ");
        sk_buf_puts(&b, choices[i]);
    }
    return sk_buf_take(&b);
}

static char *join_names(const struct sk_option *table)
{
    struct sk_buf b = {0};
    for (const struct sk_option *o = table; o && o->type != SK_OPT_END; o++) {
        if (b.len)
            sk_buf_puts(&b, ", ");
        sk_buf_puts(&b, o->name);
    }
    return sk_buf_take(&b);
}

/* What a message may show of a value: a secret option never shows its value,
 * even when it was written as a plain literal. */
static const char *shown_value(const struct sk_option *opt, const struct sk_cnode *node)
{
    if (opt->type == SK_OPT_SECRET)
        return HIDDEN;
    return sk_cnode_display(node);
}

enum conv { CONV_OK, CONV_SYNTAX, CONV_OVERFLOW, CONV_RANGE, CONV_CHOICE };

/* Converts the text of a scalar option into its field. */
static enum conv convert_scalar(const struct sk_option *opt, const char *text, void *dst)
{
    int64_t v = 0;
    int rc;
    switch (opt->type) {
    case SK_OPT_STRING:
    case SK_OPT_SECRET:
        *(char **)dst = sk_strdup(text);
        return CONV_OK;
    case SK_OPT_ENUM:
        for (size_t i = 0; opt->choices && opt->choices[i]; i++) {
            if (strcmp(opt->choices[i], text) == 0) {
                *(char **)dst = sk_strdup(text);
                return CONV_OK;
            }
        }
        return CONV_CHOICE;
    case SK_OPT_BOOL:
        return sk_parse_bool(text, (bool *)dst) ? CONV_SYNTAX : CONV_OK;
    case SK_OPT_INT:
        rc = sk_parse_int(text, &v);
        break;
    case SK_OPT_DURATION:
        rc = sk_parse_duration_ms(text, &v);
        break;
    case SK_OPT_SIZE:
        rc = sk_parse_size(text, &v);
        break;
    default:
        return CONV_SYNTAX;
    }
    if (rc == -2)
        return CONV_OVERFLOW;
    if (rc)
        return CONV_SYNTAX;
    if (opt->max > opt->min && (v < opt->min || v > opt->max))
        return CONV_RANGE;
    *(int64_t *)dst = v;
    return CONV_OK;
}

static void report_conv(struct sk_config_errors *errs, const struct sk_cnode *node,
                        const struct sk_option *opt, enum conv conv, const char *shown)
{
    char lo[64], hi[64];
    char *choices;
    switch (conv) {
    case CONV_OK:
        return;
    case CONV_SYNTAX:
        switch (opt->type) {
        case SK_OPT_INT:
            sk_config_errors_add(errs, node, "\"%s\" is not an integer (expected e.g. 42)", shown);
            return;
        case SK_OPT_BOOL:
            sk_config_errors_add(errs, node,
                                 "\"%s\" is not a boolean (expected true/false, yes/no or on/off)",
                                 shown);
            return;
        case SK_OPT_DURATION:
            sk_config_errors_add(errs, node,
                                 "\"%s\" is not a duration (expected e.g. 30s, 5m, 24h)", shown);
            return;
        case SK_OPT_SIZE:
            sk_config_errors_add(errs, node,
                                 "\"%s\" is not a size (expected e.g. 512, 64KiB, 10MB)", shown);
            return;
        default:
            sk_config_errors_add(errs, node, "\"%s\" is not valid (expected %s)", shown,
                                 expected_phrase(opt->type));
            return;
        }
    case CONV_OVERFLOW:
        sk_config_errors_add(errs, node,
                             "\"%s\" is too large (expected %s %s that fits in 64 bits)", shown,
                             opt->type == SK_OPT_INT ? "an" : "a", sk_opt_type_name(opt->type));
        return;
    case CONV_RANGE:
        format_bound(lo, sizeof(lo), opt->type, opt->min);
        format_bound(hi, sizeof(hi), opt->type, opt->max);
        sk_config_errors_add(errs, node, "\"%s\" is out of range (expected %s to %s)", shown, lo,
                             hi);
        return;
    case CONV_CHOICE:
        choices = join_choices(opt->choices);
        sk_config_errors_add(errs, node, "\"%s\" is not a valid choice (expected one of: %s)",
                             shown, choices);
        free(choices);
        return;
    }
}

static bool is_scalar_type(enum sk_opt_type type)
{
    return type != SK_OPT_LIST && type != SK_OPT_MAP && type != SK_OPT_GROUP;
}

/* One scalar item of a list or map; false (reported) if it is not a usable scalar. */
static bool check_item(struct sk_config_errors *errs, const struct sk_cnode *item)
{
    if (item->kind != SK_CNODE_SCALAR) {
        sk_config_errors_add(errs, item, "got %s (expected a string)", kind_phrase(item));
        return false;
    }
    if (is_null(item)) {
        sk_config_errors_add(errs, item, "no value (expected a string)");
        return false;
    }
    return true;
}

static void set_list(const struct sk_cnode *node, struct sk_strlist *list,
                     struct sk_config_errors *errs)
{
    if (node->kind == SK_CNODE_SCALAR) {
        list->v = sk_calloc(1, sizeof(*list->v));
        list->v[0] = sk_strdup(node->value);
        list->n = 1;
        return;
    }
    list->v = sk_calloc(node->n_kids, sizeof(*list->v));
    for (size_t i = 0; i < node->n_kids; i++)
        if (check_item(errs, node->kids[i]))
            list->v[list->n++] = sk_strdup(node->kids[i]->value);
}

static void set_map(const struct sk_cnode *node, struct sk_strmap *map,
                    struct sk_config_errors *errs)
{
    map->keys = sk_calloc(node->n_kids, sizeof(*map->keys));
    map->values = sk_calloc(node->n_kids, sizeof(*map->values));
    map->secret = sk_calloc(node->n_kids, sizeof(*map->secret));
    for (size_t i = 0; i < node->n_kids; i++) {
        const struct sk_cnode *kid = node->kids[i];
        if (!check_item(errs, kid))
            continue;
        map->keys[map->n] = sk_strdup(kid->key);
        map->values[map->n] = sk_strdup(kid->value);
        map->secret[map->n] = kid->secret;
        map->n++;
    }
}

static void apply_table(const struct sk_option *table, const struct sk_cnode *map, void *conf,
                        struct sk_config_errors *errs, const struct sk_cnode *anchor,
                        const char *prefix, bool report_missing);

/*
 * A ${env:}/${file:} reference outside a secret field is refused: the value
 * of a path, a name or a number ends up in log lines and error messages
 * (a path that cannot be opened, a topic that cannot be created), where a
 * secret read from a file must never appear. Map values (librdkafka
 * properties) keep their secret flag instead and are masked where shown.
 */
static bool reference_refused(const struct sk_option *opt, const struct sk_cnode *node,
                              struct sk_config_errors *errs)
{
    bool any = node->secret;
    for (size_t i = 0; i < node->n_kids && !any; i++)
        any = node->kids[i]->secret;
    if (!any || opt->type == SK_OPT_SECRET || opt->type == SK_OPT_MAP || opt->type == SK_OPT_GROUP)
        return false;
    sk_config_errors_add(errs, node, MSG_REFERENCE);
    return true;
}

/* Fills one option from its node. */
static void set_from_node(const struct sk_option *opt, const struct sk_cnode *node, void *conf,
                          struct sk_config_errors *errs)
{
    void *dst = field_of(conf, opt);
    if (reference_refused(opt, node, errs))
        return;
    if (opt->type == SK_OPT_GROUP) {
        if (node->kind != SK_CNODE_MAP) {
            sk_config_errors_add(errs, node, "got %s (expected %s)", kind_phrase(node),
                                 expected_phrase(opt->type));
            apply_table(opt->sub, NULL, dst, errs, node, "", false);
            return;
        }
        apply_table(opt->sub, node, dst, errs, node, "", true);
        return;
    }
    if (opt->type == SK_OPT_LIST) {
        if (node->kind == SK_CNODE_MAP) {
            sk_config_errors_add(errs, node, "got a map (expected %s)", expected_phrase(opt->type));
            return;
        }
        set_list(node, dst, errs);
        return;
    }
    if (opt->type == SK_OPT_MAP) {
        if (node->kind != SK_CNODE_MAP) {
            sk_config_errors_add(errs, node, "got %s (expected %s)", kind_phrase(node),
                                 expected_phrase(opt->type));
            return;
        }
        set_map(node, dst, errs);
        return;
    }
    if (node->kind != SK_CNODE_SCALAR) {
        sk_config_errors_add(errs, node, "got %s (expected %s)", kind_phrase(node),
                             expected_phrase(opt->type));
        return;
    }
    report_conv(errs, node, opt, convert_scalar(opt, node->value, dst), shown_value(opt, node));
}

/* Fills one option from its default text; a bad default is a bug in the table. */
static void set_default(const struct sk_option *opt, void *conf, struct sk_config_errors *errs,
                        const struct sk_cnode *anchor, const char *prefix)
{
    void *dst = field_of(conf, opt);
    if (is_scalar_type(opt->type)) {
        struct sk_option unbounded = *opt;
        unbounded.min = unbounded.max = 0; /* a default is trusted to be in range */
        if (convert_scalar(&unbounded, opt->def, dst) != CONV_OK)
            sk_config_errors_add(errs, anchor, MSG_BAD_DEFAULT, prefix, opt->name,
                                 expected_phrase(opt->type));
        return;
    }
    if (!*opt->def)
        return;
    /* Lists and maps: the default is YAML text, e.g. "[a, b]" or "{acks: all}". */
    struct sk_config_errors def_errs = {0};
    struct sk_cnode *node =
        load_text(opt->def, strlen(opt->def), "<default>", &def_errs, true, false);
    bool ok = node && !def_errs.n;
    if (ok && is_null(node))
        ; /* "~": no default after all */
    else if (ok && opt->type == SK_OPT_LIST && node->kind != SK_CNODE_MAP)
        set_list(node, dst, &def_errs);
    else if (ok && opt->type == SK_OPT_MAP && node->kind == SK_CNODE_MAP)
        set_map(node, dst, &def_errs);
    else
        ok = false;
    if (!ok || def_errs.n) {
        sk_config_errors_add(errs, anchor, MSG_BAD_DEFAULT, prefix, opt->name,
                             expected_phrase(opt->type));
    }
    sk_config_errors_free(&def_errs);
    sk_cnode_free(node);
}

/*
 * map may be NULL (the group is absent): defaults apply and missing required
 * options are reported at anchor as "prefix.name".
 */
static void apply_table(const struct sk_option *table, const struct sk_cnode *map, void *conf,
                        struct sk_config_errors *errs, const struct sk_cnode *anchor,
                        const char *prefix, bool report_missing)
{
    if (!table)
        return;
    if (map) {
        for (size_t i = 0; i < map->n_kids; i++) {
            const struct sk_cnode *kid = map->kids[i];
            const struct sk_option *opt = table;
            while (opt->type != SK_OPT_END && strcmp(opt->name, kid->key) != 0)
                opt++;
            if (opt->type != SK_OPT_END)
                continue;
            char *names = join_names(table);
            if (*names)
                sk_config_errors_add(errs, kid, "unknown option \"%s\" (expected one of: %s)",
                                     kid->key, names);
            else
                sk_config_errors_add(errs, kid, "unknown option \"%s\" (expected no options here)",
                                     kid->key);
            free(names);
        }
    }
    for (const struct sk_option *opt = table; opt->type != SK_OPT_END; opt++) {
        const struct sk_cnode *node = sk_cnode_get(map, opt->name);
        if (node && is_null(node)) {
            /* "key:" with nothing after it: the same as leaving the key out, but a
             * required option is reported where it was left empty. */
            if (opt->required) {
                sk_config_errors_add(errs, node, "no value (expected %s)",
                                     expected_phrase(opt->type));
                continue;
            }
            node = NULL;
        }
        if (node) {
            set_from_node(opt, node, conf, errs);
            continue;
        }
        if (opt->required) {
            if (report_missing)
                sk_config_errors_add(errs, anchor, "missing required option \"%s%s\" (expected %s)",
                                     prefix, opt->name, expected_phrase(opt->type));
            continue;
        }
        if (opt->type == SK_OPT_GROUP) {
            char *sub_prefix;
            size_t n = strlen(prefix) + strlen(opt->name) + 2;
            sub_prefix = sk_calloc(n, 1);
            snprintf(sub_prefix, n, "%s%s.", prefix, opt->name);
            apply_table(opt->sub, NULL, field_of(conf, opt), errs, anchor, sub_prefix,
                        report_missing);
            free(sub_prefix);
            continue;
        }
        if (opt->def)
            set_default(opt, conf, errs, anchor, prefix);
    }
}

int sk_options_apply(const struct sk_option *table, const struct sk_cnode *map, void *conf,
                     struct sk_config_errors *errs)
{
    struct sk_config_errors local = {0};
    struct sk_config_errors *out = errs ? errs : &local;
    size_t before = out->n;
    if (map && map->kind != SK_CNODE_MAP) {
        sk_config_errors_add(out, map, "got %s (expected a map of options)", kind_phrase(map));
        apply_table(table, NULL, conf, out, map, "", false);
    } else {
        apply_table(table, map, conf, out, map, "", true);
    }
    int added = (int)(out->n - before);
    sk_config_errors_free(&local);
    return added;
}

void sk_options_free(const struct sk_option *table, void *conf)
{
    for (const struct sk_option *opt = table; opt && opt->type != SK_OPT_END; opt++) {
        void *dst = field_of(conf, opt);
        switch (opt->type) {
        case SK_OPT_STRING:
        case SK_OPT_SECRET:
        case SK_OPT_ENUM: {
            char **s = dst;
            free_wiped(*s, opt->type == SK_OPT_SECRET);
            *s = NULL;
            break;
        }
        case SK_OPT_LIST: {
            struct sk_strlist *list = dst;
            for (size_t i = 0; i < list->n; i++)
                free(list->v[i]);
            free(list->v);
            list->v = NULL;
            list->n = 0;
            break;
        }
        case SK_OPT_MAP: {
            struct sk_strmap *map = dst;
            for (size_t i = 0; i < map->n; i++) {
                free(map->keys[i]);
                free_wiped(map->values[i], map->secret[i]);
            }
            free(map->keys);
            free(map->values);
            free(map->secret);
            memset(map, 0, sizeof(*map));
            break;
        }
        case SK_OPT_GROUP:
            sk_options_free(opt->sub, dst);
            break;
        default:
            break;
        }
    }
}
