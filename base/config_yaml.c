/*
 * config_yaml.c: YAML text -> a tree of sk_cnode that remembers where every value
 * came from (the libyaml event parser). Every problem is reported, none stops
 * the parse early unless the text is not YAML; anchors, aliases, tags and
 * duplicate keys are refused.
 */
#include "config_internal.h"

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
/* The most of a configuration file read into memory. */
#define MAX_CONFIG_BYTES (16u << 20)

/* Messages said from more than one place (macros keep printf format checking). */
#define MSG_ANCHOR "anchors and aliases are not supported (expected the value written out in full)"
#define MSG_TAG "tag \"%s\" is not supported (expected plain YAML without tags)"

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
        sk_config_errors_vadd(ld->errs, ld->file, (int)mark.line + 1, (int)mark.column + 1, path,
                              fmt, ap);
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
    sk_config_errors_vadd_node(ld->errs, &tmp, fmt, ap);
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
        sk_cnode_attach(top->node, node);
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
    if (strlen(top->key) != ev->data.scalar.length) {
        /* "path\0x" would be read as "path": its value is dropped instead. */
        err_at_next(ld, ev->start_mark, NULL, "the key contains a NUL character (expected text)");
        top->drop_value = true;
        return;
    }
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
        return; /* "---" and nothing else: an empty map, made by sk_config_load_text() */
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

/* ---- loading ------------------------------------------------------------- */

struct sk_cnode *sk_config_load_text(const char *text, size_t len, const char *name,
                                     struct sk_config_errors *errs, bool any_root, bool subst,
                                     const char *const *keep)
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
        sk_config_substitute(root, ld.dir, ld.dir_len, keep, ld.errs);
    return root;
}

struct sk_cnode *sk_config_load_string(const char *text, size_t len, const char *name,
                                       struct sk_config_errors *errs)
{
    return sk_config_load_text(text ? text : "", text ? len : 0, name, errs, false, true, NULL);
}

struct sk_cnode *sk_config_load(const char *path, struct sk_config_errors *errs)
{
    return sk_config_load_keeping(path, NULL, errs);
}

struct sk_cnode *sk_config_load_keeping(const char *path, const char *const *keep,
                                        struct sk_config_errors *errs)
{
    char *text = NULL;
    size_t len = 0;
    int rc = sk_config_read_file(path, MAX_CONFIG_BYTES, &text, &len);
    if (rc == SK_CONFIG_NOT_REGULAR) {
        sk_config_errors_add_at(errs, path, 0, 0, NULL,
                                "the configuration is not a regular file (expected a readable "
                                "YAML file, not a FIFO, device or directory)");
        return NULL;
    }
    if (rc) {
        sk_config_errors_add_at(errs, path, 0, 0, NULL,
                                "cannot read the configuration: %s (expected a readable YAML "
                                "file)",
                                strerror(rc));
        return NULL;
    }
    struct sk_cnode *root = sk_config_load_text(text, len, path, errs, false, true, keep);
    free(text);
    return root;
}
