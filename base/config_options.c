/*
 * config_options.c: the declarative option tables (Fluent Bit's config_map): validate
 * a map of the tree against a table and fill a connector's struct.
 *
 * Must never: print a secret's value (every message shows a value through
 * shown_value()/sk_cnode_display()), stop at the first error, or know any
 * connector.
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

#include "buf.h"
#include "util.h"

#define MSG_REFERENCE                                                                              \
    "${env:} and ${file:} are only for secret fields, whose values are never shown (expected "     \
    "the value itself)"
#define MSG_BAD_DEFAULT                                                                            \
    "option \"%s%s\" has an invalid default (expected %s; this is a bug in the option table)"

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
    case SK_OPT_GROUPS:
        return "a map of name: {options}";
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
    for (size_t u = 0; u < SK_N_DURATION_UNITS && used < size; u++) {
        int64_t n = ms / sk_duration_units[u].ms;
        ms %= sk_duration_units[u].ms;
        if (n)
            used += (size_t)snprintf(buf + used, size - used, "%" PRId64 "%s", n,
                                     sk_duration_units[u].unit);
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
        return SK_CONFIG_HIDDEN;
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
    return type != SK_OPT_LIST && type != SK_OPT_MAP && type != SK_OPT_GROUP &&
           type != SK_OPT_GROUPS;
}

/* One scalar item of a list or map; false (reported) if it is not a usable scalar. */
static bool check_item(struct sk_config_errors *errs, const struct sk_cnode *item)
{
    if (item->kind != SK_CNODE_SCALAR) {
        sk_config_errors_add(errs, item, "got %s (expected a string)", sk_cnode_kind_phrase(item));
        return false;
    }
    if (sk_cnode_is_null(item)) {
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
    if (!any || opt->type == SK_OPT_SECRET || opt->type == SK_OPT_MAP ||
        opt->type == SK_OPT_GROUP || opt->type == SK_OPT_GROUPS)
        return false;
    sk_config_errors_add(errs, node, MSG_REFERENCE);
    return true;
}

void *sk_groupmap_at(const struct sk_groupmap *m, const struct sk_option *opt, size_t i)
{
    return (char *)m->items + i * opt->sub_size;
}

/* Each entry of node (name: {options}) validated by opt->sub into a struct of its own. */
static void set_groups(const struct sk_option *opt, const struct sk_cnode *node,
                       struct sk_groupmap *m, struct sk_config_errors *errs)
{
    m->keys = sk_calloc(node->n_kids, sizeof(*m->keys));
    m->items = sk_calloc(node->n_kids ? node->n_kids : 1, opt->sub_size);
    for (size_t i = 0; i < node->n_kids; i++) {
        const struct sk_cnode *kid = node->kids[i];
        void *item = sk_groupmap_at(m, opt, m->n);
        m->keys[m->n++] = sk_strdup(kid->key);
        if (kid->kind != SK_CNODE_MAP) {
            sk_config_errors_add(errs, kid, "got %s (expected a map of options)",
                                 sk_cnode_kind_phrase(kid));
            apply_table(opt->sub, NULL, item, errs, kid, "", false);
            continue;
        }
        apply_table(opt->sub, kid, item, errs, kid, "", true);
    }
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
            sk_config_errors_add(errs, node, "got %s (expected %s)", sk_cnode_kind_phrase(node),
                                 expected_phrase(opt->type));
            apply_table(opt->sub, NULL, dst, errs, node, "", false);
            return;
        }
        apply_table(opt->sub, node, dst, errs, node, "", true);
        return;
    }
    if (opt->type == SK_OPT_GROUPS) {
        if (node->kind != SK_CNODE_MAP) {
            sk_config_errors_add(errs, node, "got %s (expected %s)", sk_cnode_kind_phrase(node),
                                 expected_phrase(opt->type));
            return;
        }
        set_groups(opt, node, dst, errs);
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
            sk_config_errors_add(errs, node, "got %s (expected %s)", sk_cnode_kind_phrase(node),
                                 expected_phrase(opt->type));
            return;
        }
        set_map(node, dst, errs);
        return;
    }
    if (node->kind != SK_CNODE_SCALAR) {
        sk_config_errors_add(errs, node, "got %s (expected %s)", sk_cnode_kind_phrase(node),
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
        sk_config_load_text(opt->def, strlen(opt->def), "<default>", &def_errs, true, false, NULL);
    bool ok = node && !def_errs.n;
    if (ok && sk_cnode_is_null(node))
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
        if (node && sk_cnode_is_null(node)) {
            /* "key:" with nothing after it: the same as leaving the key out, but a
             * required option is reported where it was left empty. */
            if (opt->required) {
                sk_config_errors_add(errs, node, "no value (expected %s)",
                                     expected_phrase(opt->type));
                continue;
            }
            node = NULL;
        }
        if (node && opt->required && opt->type == SK_OPT_STRING &&
            node->kind == SK_CNODE_SCALAR && !*node->value) {
            /* `path: ""` is no path: SQLite took it for a temporary database
             * and the data went nowhere. */
            sk_config_errors_add(errs, node, "empty value (expected a non-empty string)");
            continue;
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
        sk_config_errors_add(out, map, "got %s (expected a map of options)",
                             sk_cnode_kind_phrase(map));
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
            sk_config_free_wiped(*s, opt->type == SK_OPT_SECRET);
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
                sk_config_free_wiped(map->values[i], map->secret[i]);
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
        case SK_OPT_GROUPS: {
            struct sk_groupmap *m = dst;
            for (size_t i = 0; i < m->n; i++) {
                free(m->keys[i]);
                sk_options_free(opt->sub, sk_groupmap_at(m, opt, i));
            }
            free(m->keys);
            free(m->items);
            memset(m, 0, sizeof(*m));
            break;
        }
        default:
            break;
        }
    }
}
