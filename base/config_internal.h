/*
 * config_internal.h: what the parts of the configuration loader share
 * (config_tree.c, config_yaml.c, config_refs.c, config_values.c,
 * config_options.c). Not for use outside base/config_*.c.
 */
#ifndef SK_CONFIG_INTERNAL_H
#define SK_CONFIG_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* What any message shows instead of a secret. */
#define SK_CONFIG_HIDDEN "********"

/* Duration units, largest first: the parser and the bound printer share them. */
struct sk_duration_unit {
    const char *unit;
    int64_t ms;
};
extern const struct sk_duration_unit sk_duration_units[];
#define SK_N_DURATION_UNITS 5

/* Frees a string that may hold a secret, wiping it first. */
void sk_config_free_wiped(char *s, bool secret);
/* Reads a whole regular file (at most limit bytes) into a NUL-terminated buffer, never
 * blocking on a FIFO or a device. 0, an errno value or SK_CONFIG_NOT_REGULAR. */
#define SK_CONFIG_NOT_REGULAR (-1)
int sk_config_read_file(const char *path, size_t limit, char **out, size_t *out_len);

/* The error list, with an explicit position or at a node. */
void sk_config_errors_vadd(struct sk_config_errors *errs, const char *file, int line, int col,
                           const char *path, const char *fmt, va_list ap);
void sk_config_errors_vadd_node(struct sk_config_errors *errs, const struct sk_cnode *node,
                                const char *fmt, va_list ap);

/* "a map", "a sequence", "a single value" */
const char *sk_cnode_kind_phrase(const struct sk_cnode *node);
/* YAML's null in plain style; a value from a substitution is text, even when empty. */
bool sk_cnode_is_null(const struct sk_cnode *node);
/* Appends kid to parent's kids and sets kid->index. */
void sk_cnode_attach(struct sk_cnode *parent, struct sk_cnode *kid);

/*
 * YAML text -> tree (config_yaml.c). any_root: a scalar or sequence may be
 * the top (option defaults); subst: replace ${env:}/${file:} references,
 * except below the top-level keys in keep (sk_config_substitute).
 */
struct sk_cnode *sk_config_load_text(const char *text, size_t len, const char *name,
                                     struct sk_config_errors *errs, bool any_root, bool subst,
                                     const char *const *keep);
/* Replaces ${env:NAME} and ${file:PATH} in every scalar below root (config_refs.c);
 * relative paths are taken from dir (dir_len bytes), or the working directory.
 * Below the top-level keys in keep (NULL-terminated, or NULL) references are
 * left as written, marked secret. */
void sk_config_substitute(struct sk_cnode *root, const char *dir, size_t dir_len,
                          const char *const *keep, struct sk_config_errors *errs);

#endif
