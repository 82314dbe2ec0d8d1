/* buf.c: see buf.h. */
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void sk_buf_reserve(struct sk_buf *b, size_t n)
{
    if (b->len + n + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + n + 1)
        cap *= 2;
    b->p = sk_realloc(b->p, cap);
    b->cap = cap;
}

void sk_buf_putn(struct sk_buf *b, const void *data, size_t n)
{
    sk_buf_reserve(b, n);
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void sk_buf_puts(struct sk_buf *b, const char *s)
{
    sk_buf_putn(b, s, strlen(s));
}

void sk_buf_putc(struct sk_buf *b, char c)
{
    sk_buf_putn(b, &c, 1);
}

void sk_buf_json_string(struct sk_buf *b, const char *s)
{
    sk_buf_putc(b, '"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            sk_buf_printf(b, "\\%c", c);
        else if (c < 0x20)
            sk_buf_printf(b, "\\u%04x", c);
        else
            sk_buf_putc(b, (char)c);
    }
    sk_buf_putc(b, '"');
}

void sk_buf_put_escaped(struct sk_buf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n')
            sk_buf_puts(b, "\\n");
        else if (c == '\r')
            sk_buf_puts(b, "\\r");
        else if (c == '\t')
            sk_buf_puts(b, "\\t");
        else if (c < 0x20 || c == 0x7f)
            sk_buf_printf(b, "\\x%02x", c);
        else
            sk_buf_putc(b, (char)c);
    }
}

void sk_buf_vprintf(struct sk_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return;
    sk_buf_reserve(b, (size_t)n);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

void sk_buf_printf(struct sk_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sk_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void sk_buf_reset(struct sk_buf *b)
{
    b->len = 0;
    if (b->p)
        b->p[0] = '\0';
}

char *sk_buf_take(struct sk_buf *b)
{
    char *p = b->p ? b->p : sk_strdup("");
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

void sk_buf_free(struct sk_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void sk_buf_wipe(struct sk_buf *b)
{
    if (b->p)
        explicit_bzero(b->p, b->cap);
    sk_buf_free(b);
}
