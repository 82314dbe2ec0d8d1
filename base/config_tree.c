/*
 * config_tree.c: the configuration tree (sk_cnode) and the error list.
 *
 * Must never: print a secret's value (sk_cnode_display masks it).
 */
#include "config_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "util.h"

/* ---- memory and strings -------------------------------------------------- */

/* Frees a string that may hold a secret, wiping it first. */
void sk_config_free_wiped(char *s, bool secret)
{
    if (s && secret)
        explicit_bzero(s, strlen(s));
    free(s);
}

/*
 * Reads a whole file into a NUL-terminated buffer. 0, an errno value, or
 * SK_CONFIG_NOT_REGULAR. Only a regular file is read: a FIFO or a device
 * (`${file:/dev/stdin}`, a pipe left where a secret was) would block the
 * reader forever, and a SIGHUP reload with it the main loop, SIGTERM
 * included. O_NONBLOCK makes the open itself return at once on a FIFO
 * without a writer; links are followed, as systemd credentials and
 * Kubernetes secret volumes are links.
 */
int sk_config_read_file(const char *path, size_t limit, char **out, size_t *out_len)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int rc = errno;
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return SK_CONFIG_NOT_REGULAR;
    }
    struct sk_buf b = {0};
    char chunk[4096];
    int rc = 0;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = errno;
            break;
        }
        if (n == 0)
            break;
        if (b.len + (size_t)n > limit) {
            rc = EFBIG;
            break;
        }
        sk_buf_putn(&b, chunk, (size_t)n);
    }
    explicit_bzero(chunk, sizeof(chunk));
    close(fd);
    if (rc) {
        sk_buf_wipe(&b);
        return rc;
    }
    *out_len = b.len;
    *out = sk_buf_take(&b);
    return 0;
}

/* ---- the error list ------------------------------------------------------ */

void sk_config_errors_vadd(struct sk_config_errors *errs, const char *file, int line, int col,
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
    /* A key or value quoted from the file may hold any character ("\e[2J",
     * a newline): escaped, as the log does, so that `check` prints one line
     * per error and drives no terminal. */
    struct sk_buf shown = {0};
    sk_buf_put_escaped(&shown, b.p ? b.p : "");
    sk_buf_free(&b);
    if (errs->n == errs->cap) {
        errs->cap = errs->cap ? errs->cap * 2 : 8;
        errs->v = sk_realloc(errs->v, errs->cap * sizeof(*errs->v));
    }
    errs->v[errs->n++].text = sk_buf_take(&shown);
}

void sk_config_errors_add_at(struct sk_config_errors *errs, const char *file, int line, int col,
                             const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sk_config_errors_vadd(errs, file, line, col, path, fmt, ap);
    va_end(ap);
}

void sk_config_errors_vadd_node(struct sk_config_errors *errs, const struct sk_cnode *node,
                                const char *fmt, va_list ap)
{
    if (!errs)
        return;
    if (!node) {
        sk_config_errors_vadd(errs, NULL, 0, 0, NULL, fmt, ap);
        return;
    }
    char *path = sk_cnode_path(node);
    sk_config_errors_vadd(errs, node->file, node->line, node->col, path, fmt, ap);
    free(path);
}

void sk_config_errors_add(struct sk_config_errors *errs, const struct sk_cnode *node,
                          const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sk_config_errors_vadd_node(errs, node, fmt, ap);
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
    sk_config_free_wiped(node->value, node->secret);
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
        return SK_CONFIG_HIDDEN;
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

const char *sk_cnode_kind_phrase(const struct sk_cnode *node)
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
bool sk_cnode_is_null(const struct sk_cnode *node)
{
    if (node->kind != SK_CNODE_SCALAR || node->quoted || node->secret)
        return false;
    const char *v = node->value;
    return !*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
           strcmp(v, "NULL") == 0;
}

/* Appends kid; the array doubles at powers of two (a million items is no
 * million reallocations). */
void sk_cnode_attach(struct sk_cnode *parent, struct sk_cnode *kid)
{
    size_t n = parent->n_kids;
    if (n >= 4 ? (n & (n - 1)) == 0 : n == 0)
        parent->kids = sk_realloc(parent->kids, (n >= 4 ? 2 * n : 4) * sizeof(*parent->kids));
    kid->index = n;
    parent->kids[parent->n_kids++] = kid;
}
