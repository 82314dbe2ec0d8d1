/*
 * buf.h: the one growable byte/string buffer of skolsync (response bodies,
 * SQL and JSON text, error messages). Always NUL-terminated after the first
 * write, so p can be used as a C string; len excludes the NUL.
 *
 * Owns: its bytes. Must never: fail (out of memory aborts, as sk_malloc).
 * A buffer that held a secret is freed with sk_buf_wipe.
 */
#ifndef SK_BUF_H
#define SK_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct sk_buf {
    char *p; /* NULL until the first write */
    size_t len, cap;
};

/* Room for n more bytes (and the NUL) without another allocation. */
void sk_buf_reserve(struct sk_buf *b, size_t n);
void sk_buf_putn(struct sk_buf *b, const void *data, size_t n);
void sk_buf_puts(struct sk_buf *b, const char *s);
void sk_buf_putc(struct sk_buf *b, char c);
void sk_buf_printf(struct sk_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sk_buf_vprintf(struct sk_buf *b, const char *fmt, va_list ap);
/* s as a JSON string literal, quotes included: '"' and '\\' escaped, control
 * characters as \u00XX, every other byte (UTF-8 included) as it is. */
void sk_buf_json_string(struct sk_buf *b, const char *s);
/*
 * s with every control character (C0 and DEL: a newline, a carriage return,
 * a terminal escape) written as an escape, \n, \r, \t or \xNN; every other
 * byte as it is. For text from outside that goes into a line of its own: a
 * log line, systemd's STATUS=, an error on the operator's terminal.
 */
void sk_buf_put_escaped(struct sk_buf *b, const char *s);
/* Empties the buffer, keeping its memory. */
void sk_buf_reset(struct sk_buf *b);
/* The built string (never NULL; the caller frees it); the buffer is left empty. */
char *sk_buf_take(struct sk_buf *b);
void sk_buf_free(struct sk_buf *b);
/* Frees after overwriting every byte it ever held (secrets). */
void sk_buf_wipe(struct sk_buf *b);

#endif
