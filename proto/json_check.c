/*
 * json_check.c: byte-level checks of JSON text from outside, before cJSON
 * sees it. cJSON keeps invalid UTF-8 as it is and ends a string at a NUL (a
 * raw one, or one written \u0000), so a value would be stored broken or
 * silently cut; these checks find such bytes and their position, so that
 * the record holding them is dead-lettered instead (see model.h). Also the
 * rule for a number a double would change (sk_json_number_exact), which the
 * arena parse applies to each number as it reads it.
 *
 * Must never: allocate for text that passes (the check runs on every page
 * and every line), or read past len.
 */
#include <math.h> /* isfinite: a macro, no libm */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "util.h"

size_t sk_utf8_len(const char *text, size_t n)
{
    const unsigned char *s = (const unsigned char *)text;
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t k;
    unsigned cp;
    if (c >= 0xc2 && c <= 0xdf) {
        k = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        k = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        k = 4;
        cp = c & 0x07;
    } else {
        return 0; /* a continuation byte, an overlong lead (c0, c1) or beyond U+10FFFF */
    }
    if (n < k)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((k == 3 && cp < 0x800) || (k == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0; /* overlong, out of range, or a UTF-16 surrogate */
    return k;
}

/* Word tricks (Bit Twiddling Hacks, "determine if a word has a byte equal to
 * n"): the high bit of each zero byte of v is set, and maybe of bytes above
 * the first zero byte too (a borrow), never below it. */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
static uint64_t zero_bytes(uint64_t v)
{
    return (v - ONES) & ~v & HIGHS;
}

/*
 * How many of the 8 bytes at s need no look: ASCII, none NUL, '"' or '\\'.
 * Most of a page is such bytes; going past them 8 at a time made this check
 * ~3x cheaper (it runs over every page: bench/analysis.md §1), and jumping
 * straight to the first byte that needs a look (quotes come every few bytes
 * in JSON) made it cheaper again. Each mask's lowest set bit is exact, so
 * the lowest of their union is the first such byte.
 */
static unsigned plain_bytes(const unsigned char *s)
{
    uint64_t v;
    memcpy(&v, s, 8);
    uint64_t m =
        (v & HIGHS) | zero_bytes(v) | zero_bytes(v ^ (ONES * '"')) | zero_bytes(v ^ (ONES * '\\'));
    if (!m)
        return 8;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return (unsigned)__builtin_ctzll(m) / 8; /* the first byte in memory is the lowest */
#else
    return 0; /* look at each byte */
#endif
}

const char *sk_json_text_bad(const char *text, size_t len, size_t *at)
{
    const unsigned char *s = (const unsigned char *)text;
    bool in_string = false;
    for (size_t i = 0; i < len;) {
        if (i + 8 <= len) {
            unsigned n = plain_bytes(s + i);
            i += n;
            if (n == 8)
                continue;
        }
        unsigned char c = s[i];
        if (c == 0) {
            *at = i;
            return "a NUL byte";
        }
        if (c >= 0x80) {
            size_t k = sk_utf8_len(text + i, len - i);
            if (!k) {
                *at = i;
                return "invalid UTF-8";
            }
            i += k;
            continue;
        }
        if (c == '"') {
            in_string = !in_string;
        } else if (c == '\\' && in_string && i + 1 < len) {
            if (s[i + 1] == 'u' && i + 5 < len && memcmp(s + i + 2, "0000", 4) == 0) {
                *at = i;
                return "a \\u0000 escape (a NUL character)";
            }
            i += 2; /* the escaped character cannot end the string */
            continue;
        }
        i++;
    }
    return NULL;
}

/* ---- numbers ------------------------------------------------------------------ */

/* A decimal number: sign, 0.d1d2...dn x 10^point, n <= 17, dn not 0 (n 0: zero). */
struct decimal {
    bool neg;
    char digits[18];
    size_t n;
    long point;
};

/*
 * The decimal value of the JSON number s[0, len) (the grammar cJSON took),
 * false if it has more than 17 significant digits (no double prints so).
 */
static bool decimal_of(const char *s, size_t len, struct decimal *d)
{
    size_t i = 0, sig = 0; /* digits since the first nonzero one */
    long exp = 0;
    bool frac = false;
    *d = (struct decimal){.neg = len > 0 && s[0] == '-'};
    for (i = d->neg; i < len && s[i] != 'e' && s[i] != 'E'; i++) {
        if (s[i] == '.') {
            frac = true;
            continue;
        }
        if (!frac && (sig > 0 || s[i] != '0'))
            d->point++;
        if (sig == 0 && s[i] == '0') {
            d->point -= frac; /* a leading zero after the point */
            continue;
        }
        if (s[i] != '0' && sig >= sizeof(d->digits) - 1)
            return false;
        if (sig < sizeof(d->digits) - 1)
            d->digits[sig] = s[i];
        sig++;
        if (s[i] != '0')
            d->n = sig;
    }
    bool exp_neg = i + 1 < len && s[i + 1] == '-';
    for (i += i + 1 < len && (s[i + 1] == '-' || s[i + 1] == '+') ? 2 : 1; i < len; i++)
        exp = exp < 100000 ? exp * 10 + (s[i] - '0') : exp; /* far beyond a double's range */
    d->point = d->n ? d->point + (exp_neg ? -exp : exp) : 0;
    return true;
}

/*
 * The codec prints the double cJSON read with the fewest of 15, 16 or 17
 * digits that read back as that double (codec.c, numbers_exact): a number
 * comes out as it came in exactly when that print has its digits.
 */
bool sk_json_number_exact(const char *s, size_t len)
{
    struct decimal in, out;
    if (!decimal_of(s, len, &in))
        return false;
    if (in.n == 0 || (in.n <= 15 && in.point > -300 && in.point < 300))
        return true; /* DBL_DIG: 15 digits survive a double both ways */
    char text[48];
    snprintf(text, sizeof(text), "%s0.%.*se%ld", in.neg ? "-" : "", (int)in.n, in.digits, in.point);
    double v = strtod(text, NULL); /* the value of s, so cJSON's double */
    if (!isfinite(v) || v == 0)
        return false; /* beyond a double's range, or below it */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(text, sizeof(text), "%.*e", prec - 1, v);
        if (strtod(text, NULL) == v)
            break;
    }
    char *e = strchr(text, 'e');
    if (!e || !decimal_of(text, (size_t)(e - text) + 1 + strlen(e + 1), &out))
        return false;
    return in.neg == out.neg && in.n == out.n && in.point == out.point &&
           memcmp(in.digits, out.digits, in.n) == 0;
}

/* The index of the quote that ends the string whose text starts at i, or len.
 * Past bytes that are no quote or backslash 8 at a time: most of a record is
 * strings, and stepping through them byte by byte made this check 13 % of a
 * jsonl-source's samples (100k persons, 2026-12-05). */
static size_t string_end(const char *text, size_t len, size_t i)
{
    const unsigned char *s = (const unsigned char *)text;
    while (i < len) {
        if (i + 8 <= len) {
            unsigned n = plain_bytes(s + i);
            i += n;
            if (n == 8)
                continue;
        }
        if (s[i] == '"')
            return i;
        i += s[i] == '\\' ? 2 : 1; /* an escaped byte cannot end the string */
    }
    return len;
}

/* The arena parse decides this as it reads each number (json_arena.c); this
 * scan is what its verdict is tested against (test_json_arena.c, fuzz), on
 * no record path (it was a second pass over every jsonl line). */
const char *sk_json_number_inexact(const char *text, size_t len, size_t *at)
{
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '"') {
            i = string_end(text, len, i + 1);
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t n = 1;
            while (i + n < len && text[i + n] && strchr("0123456789+-eE.", text[i + n]))
                n++;
            if (!sk_json_number_exact(text + i, n)) {
                *at = i;
                return SK_JSON_INEXACT;
            }
            i += n - 1;
        }
    }
    return NULL;
}

/* ---- element spans ------------------------------------------------------------ */

/* What cJSON skips between tokens: every byte up to and including the space
 * (the spans must split a page where cJSON does). */
static bool is_ws(char c)
{
    return (unsigned char)c <= 0x20;
}

static size_t skip_ws(const char *s, size_t len, size_t i)
{
    while (i < len && is_ws(s[i]))
        i++;
    return i;
}

/* s[i] is '"': the index after the closing quote, or len. */
static size_t skip_string(const char *s, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return len;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/*
 * Whether the string s[i..end) (end is skip_string's: after the closing
 * quote) names key (ASCII) as cJSON reads it: decoded, so "d\u0061ta" is
 * "data", and cut at a \u0000 (cJSON's strings end at a NUL). Compared raw,
 * a page with "d\u0061ta" before "data" had the spans of the second array
 * while cJSON took the first: its bad items were checked against another
 * item's bytes.
 */
static bool key_is(const char *s, size_t i, size_t end, const char *key)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    if (end - i < 2 || s[end - 1] != '"')
        return false; /* not closed */
    size_t k = 0;
    for (i++, end--; i < end; i++) {
        unsigned c = (unsigned char)s[i];
        if (c == '\\') {
            char e = ++i < end ? s[i] : '\0';
            if (e == 'u') {
                if (end - i <= 4)
                    return false;
                c = 0;
                for (size_t h = 1; h <= 4; h++) {
                    int v = hex_digit(s[i + h]);
                    if (v < 0)
                        return false;
                    c = c * 16 + (unsigned)v;
                }
                i += 4;
            } else {
                const char *at = e ? strchr(from, e) : NULL;
                if (!at)
                    return false;
                c = (unsigned char)to[at - from];
            }
        }
        if (c == 0)
            return key[k] == '\0';
        if (key[k] == '\0' || (unsigned char)key[k] != c)
            return false; /* a code point over 0x7f never matches an ASCII key */
        k++;
    }
    return key[k] == '\0';
}

/* The index after the value starting at s[i] (any JSON value), or len. */
static size_t skip_value(const char *s, size_t len, size_t i)
{
    if (i >= len)
        return len;
    if (s[i] == '"')
        return skip_string(s, len, i);
    if (s[i] != '{' && s[i] != '[') {
        while (i < len && !is_ws(s[i]) && s[i] != ',' && s[i] != '}' && s[i] != ']')
            i++;
        return i;
    }
    size_t depth = 0;
    while (i < len) {
        if (s[i] == '"') {
            i = skip_string(s, len, i);
            continue;
        }
        if (s[i] == '{' || s[i] == '[')
            depth++;
        else if ((s[i] == '}' || s[i] == ']') && --depth == 0)
            return i + 1;
        i++;
    }
    return len;
}

size_t sk_json_array_spans(const char *s, size_t len, const char *key, size_t (**spans)[2])
{
    *spans = NULL;
    /* cJSON skips a UTF-8 byte order mark (with more than 4 bytes), so the spans do too */
    size_t bom = len > 4 && memcmp(s, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    size_t i = skip_ws(s, len, bom), n = 0, cap = 0;
    if (i >= len || s[i] != '{')
        return 0;
    i = skip_ws(s, len, i + 1);
    while (i < len && s[i] == '"') {
        size_t kend = skip_string(s, len, i);
        bool match = key_is(s, i, kend, key);
        i = skip_ws(s, len, kend);
        if (i >= len || s[i] != ':')
            return n;
        i = skip_ws(s, len, i + 1);
        if (match && i < len && s[i] == '[') {
            i = skip_ws(s, len, i + 1);
            while (i < len && s[i] != ']') {
                size_t end = skip_value(s, len, i);
                if (n == cap) {
                    cap = cap ? cap * 2 : 64;
                    *spans = sk_realloc(*spans, cap * sizeof(**spans));
                }
                (*spans)[n][0] = i;
                (*spans)[n][1] = end;
                n++;
                i = skip_ws(s, len, end);
                if (i < len && s[i] == ',')
                    i = skip_ws(s, len, i + 1);
                else
                    break;
            }
            return n;
        }
        i = skip_ws(s, len, skip_value(s, len, i));
        if (i < len && s[i] == ',')
            i = skip_ws(s, len, i + 1);
        else
            break;
    }
    return n;
}
