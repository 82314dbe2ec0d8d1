/*
 * json_print.c: JSON text from a cJSON tree with every number exact (the
 * shortest text that reads back as the same double; cJSON's own printer
 * rounds to 15 digits). Split from codec.c, which turns entities into and
 * out of protobuf; the sinks print every document through here once.
 */
#include "model.h"

#include <math.h> /* isfinite: a macro, no libm */
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

static void jb_value(struct sk_buf *b, const cJSON *v)
{
    char num[32];
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
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(num, sizeof(num), "%.*g", prec, v->valuedouble);
            if (strtod(num, NULL) == v->valuedouble)
                break;
        }
        sk_buf_putn(b, num, strlen(num));
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
