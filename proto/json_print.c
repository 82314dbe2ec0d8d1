/*
 * json_print.c: JSON text from a cJSON tree with every number exact (the
 * shortest text that reads back as the same double; cJSON's own printer
 * rounds to 15 digits). Split from codec.c, which turns entities into and
 * out of protobuf; the sinks print every document through here once.
 */
#include "model.h"

#include <math.h> /* isfinite, signbit: macros, no libm */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

static void jb_string(struct sk_buf *b, const char *s)
{
    sk_buf_putn(b, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        sk_buf_putn(b, run, (size_t)(s - run));
        char esc[8];
        switch (c) {
        case '"':
            sk_buf_putn(b, "\\\"", 2);
            break;
        case '\\':
            sk_buf_putn(b, "\\\\", 2);
            break;
        case '\n':
            sk_buf_putn(b, "\\n", 2);
            break;
        case '\r':
            sk_buf_putn(b, "\\r", 2);
            break;
        case '\t':
            sk_buf_putn(b, "\\t", 2);
            break;
        default:
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            sk_buf_putn(b, esc, 6);
        }
        run = s + 1;
    }
    sk_buf_putn(b, run, (size_t)(s - run));
    sk_buf_putn(b, "\"", 1);
}

/*
 * A number as the shortest of "%.15g" to "%.17g" that reads back as the same
 * double. An integer below 10^15 in magnitude (counts and minutes, most
 * numbers of SS 12000) prints as its digits, which is what "%.15g" gives it,
 * without snprintf and strtod: they were ~7 % of a sink's decode. -0 and
 * larger integers ("%.15g" writes 1e+15) take the general path.
 */
static void jb_number(struct sk_buf *b, double d)
{
    char num[32];
    if (d > -1e15 && d < 1e15 && d == (double)(int64_t)d && !(d == 0 && signbit(d))) {
        int64_t n = (int64_t)d;
        uint64_t u = n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n;
        char *p = num + sizeof(num);
        do {
            *--p = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (n < 0)
            *--p = '-';
        sk_buf_putn(b, p, (size_t)(num + sizeof(num) - p));
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(num, sizeof(num), "%.*g", prec, d);
        if (strtod(num, NULL) == d)
            break;
    }
    sk_buf_putn(b, num, strlen(num));
}

static void jb_value(struct sk_buf *b, const cJSON *v)
{
    switch (v->type & 0xFF) {
    case cJSON_NULL:
        sk_buf_putn(b, "null", 4);
        break;
    case cJSON_False:
        sk_buf_putn(b, "false", 5);
        break;
    case cJSON_True:
        sk_buf_putn(b, "true", 4);
        break;
    case cJSON_Raw:
        sk_buf_putn(b, v->valuestring, strlen(v->valuestring));
        break;
    case cJSON_String:
        jb_string(b, v->valuestring);
        break;
    case cJSON_Number:
        if (!isfinite(v->valuedouble)) {
            sk_buf_putn(b, "null", 4);
            break;
        }
        /* the shortest text that reads back exactly (see numbers_exact) */
        jb_number(b, v->valuedouble);
        break;
    case cJSON_Array:
        sk_buf_putn(b, "[", 1);
        for (const cJSON *x = v->child; x; x = x->next) {
            jb_value(b, x);
            if (x->next)
                sk_buf_putn(b, ",", 1);
        }
        sk_buf_putn(b, "]", 1);
        break;
    case cJSON_Object:
        sk_buf_putn(b, "{", 1);
        for (const cJSON *x = v->child; x; x = x->next) {
            jb_string(b, x->string ? x->string : "");
            sk_buf_putn(b, ":", 1);
            jb_value(b, x);
            if (x->next)
                sk_buf_putn(b, ",", 1);
        }
        sk_buf_putn(b, "}", 1);
        break;
    default:
        sk_buf_putn(b, "null", 4);
    }
}

/* Returned text: malloc'ed, NUL-terminated; caller frees with free(). */
char *sk_json_print(const cJSON *v)
{
    struct sk_buf b = {0};
    jb_value(&b, v);
    return sk_buf_take(&b);
}

size_t sk_json_print_into(const cJSON *v, struct sk_buf *b)
{
    size_t before = b->len;
    jb_value(b, v);
    return b->len - before;
}
