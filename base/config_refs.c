/*
 * config_refs.c: ${env:NAME} and ${file:PATH} references in scalar values.
 *
 * Must never: show what a reference resolved to (the node is marked secret,
 * and a file's content is wiped from memory once copied).
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

/* The most of a ${file:} read into memory. */
#define MAX_SECRET_FILE_BYTES (1u << 20)

struct refs {
    const char *dir; /* directory for relative ${file:} paths, NULL = cwd */
    size_t dir_len;
    struct sk_config_errors *errs;
};

/* ---- substitution -------------------------------------------------------- */

static bool subst_env(struct refs *ld, const struct sk_cnode *node, const char *name, size_t len,
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

static bool subst_file(struct refs *ld, const struct sk_cnode *node, const char *path_text,
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
    int rc = sk_config_read_file(path.p, MAX_SECRET_FILE_BYTES, &content, &content_len);
    bool ok = false;
    if (rc == SK_CONFIG_NOT_REGULAR) {
        sk_config_errors_add(ld->errs, node,
                             "file \"%s\" is not a regular file (expected ${file:%.*s} to "
                             "name a readable file, not a FIFO, device or directory)",
                             path.p, (int)len, path_text);
    } else if (rc) {
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
    sk_config_free_wiped(content, true);
    free(path.p);
    return ok;
}

/* Replaces ${env:NAME} and ${file:PATH} in a scalar; $${ is a literal ${. */
static void substitute(struct refs *ld, struct sk_cnode *node)
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
            /* Not quoted: "${" is often part of a literal password, and the
             * rest of it would be printed. */
            sk_config_errors_add(ld->errs, node,
                                 "unknown substitution at character %zu of the value (expected "
                                 "${env:NAME} or ${file:PATH}; write $${ for a literal ${)",
                                 (size_t)(p - s) + 1);
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

/* s holds a reference: a "${" that is not the escape "$${". */
static bool has_reference(const char *s)
{
    for (const char *p = s; (p = strchr(p, '$'));) {
        if (strncmp(p, "$${", 3) == 0)
            p += 3;
        else if (strncmp(p, "${", 2) == 0)
            return true;
        else
            p++;
    }
    return false;
}

/* resolve: substitute; else only mark every scalar holding a reference
 * secret. A value with only the escape $${ is written out either way, so
 * that `path: /data/cost$${x}` is the same to an admin command as to check. */
static void substitute_tree(struct refs *ld, struct sk_cnode *node, bool resolve)
{
    if (node->kind == SK_CNODE_SCALAR) {
        if (resolve || !has_reference(node->value))
            substitute(ld, node);
        else
            node->secret = true;
        return;
    }
    for (size_t i = 0; i < node->n_kids; i++)
        substitute_tree(ld, node->kids[i], resolve);
}

static bool kept(const char *const *keep, const char *key)
{
    for (; keep && key && *keep; keep++)
        if (strcmp(*keep, key) == 0)
            return true;
    return false;
}

void sk_config_substitute(struct sk_cnode *root, const char *dir, size_t dir_len,
                          const char *const *keep, struct sk_config_errors *errs)
{
    struct refs r = {.dir = dir, .dir_len = dir_len, .errs = errs};
    if (root->kind != SK_CNODE_MAP) {
        substitute_tree(&r, root, true);
        return;
    }
    for (size_t i = 0; i < root->n_kids; i++)
        substitute_tree(&r, root->kids[i], !kept(keep, root->kids[i]->key));
}
