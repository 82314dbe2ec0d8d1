/*
 * json_arena.c: a JSON parser that builds the same cJSON tree as
 * cJSON_ParseWithLength (cJSON 1.7.15), with every node and string in one
 * arena that is freed at once (model.h, sk_json_arena_parse).
 *
 * Why: a page of 1000 SS 12000 entities is ~100 000 cJSON nodes and strings,
 * each malloc'ed and freed on its own; with the fastbin consolidation their
 * frees set off, that was a quarter of the source's CPU (bench/analysis.md
 * §1). It must never accept or refuse another text than cJSON does, nor
 * give another tree (tests/unit/test_json_arena.c and fuzz_ss12000_page
 * compare the two); a tree from here must never reach cJSON_Delete or a
 * cJSON call that frees or adds a node. It also owns the verdict on each
 * number a double would change (sk_json_arena_inexact), read where the
 * digits are: a record path must not scan its text a second time for them.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

/* cJSON 1.7.15 refuses deeper nesting (CJSON_NESTING_LIMIT). */
#define NESTING_LIMIT 1000

struct arena_block {
    struct arena_block *next;
    size_t size, used;
    max_align_t data[];
};

struct sk_json_arena {
    struct arena_block *blocks; /* the newest first */
    size_t block_size;
    size_t end;        /* after the value read */
    bool inexact;      /* a number sk_json_number_exact refuses, the first at: */
    size_t inexact_at; /* its offset in the text */
};

struct parser {
    const unsigned char *p, *end, *text;
    struct sk_json_arena *a;
    size_t depth;
};

static void *arena_get(struct sk_json_arena *a, size_t n)
{
    n = (n + _Alignof(max_align_t) - 1) & ~(size_t)(_Alignof(max_align_t) - 1);
    struct arena_block *b = a->blocks;
    if (!b || b->size - b->used < n) {
        size_t size = n > a->block_size ? n : a->block_size;
        b = malloc(sizeof(*b) + size);
        if (!b)
            return NULL;
        b->size = size;
        b->used = 0;
        b->next = a->blocks;
        a->blocks = b;
    }
    void *r = (char *)b->data + b->used;
    b->used += n;
    return r;
}

static cJSON *new_node(struct parser *ps)
{
    cJSON *n = arena_get(ps->a, sizeof(cJSON));
    if (n)
        memset(n, 0, sizeof(*n));
    return n;
}

static void skip_ws(struct parser *ps)
{
    while (ps->p < ps->end && *ps->p <= 32)
        ps->p++;
}

/* cJSON's parse_hex4: a digit that is not hex makes the whole value 0 (not an error). */
static unsigned hex4(const unsigned char *s)
{
    unsigned h = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = s[i];
        if (c >= '0' && c <= '9')
            h = (h << 4) | (c - '0');
        else if (c >= 'A' && c <= 'F')
            h = (h << 4) | (c - 'A' + 10);
        else if (c >= 'a' && c <= 'f')
            h = (h << 4) | (c - 'a' + 10);
        else
            return 0;
    }
    return h;
}

/* \uXXXX (or a surrogate pair) at in, before end, as UTF-8 at *out; the
 * length of the escape read, 0 if cJSON refuses it. */
static size_t utf16_escape(const unsigned char *in, const unsigned char *end, unsigned char **out)
{
    if (end - in < 6)
        return 0;
    unsigned long cp = hex4(in + 2);
    size_t seq = 6;
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return 0;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        const unsigned char *second = in + 6;
        if (end - second < 6 || second[0] != '\\' || second[1] != 'u')
            return 0;
        unsigned low = hex4(second + 2);
        if (low < 0xDC00 || low > 0xDFFF)
            return 0;
        cp = 0x10000 + (((cp & 0x3FF) << 10) | (low & 0x3FF));
        seq = 12;
    }
    unsigned char *o = *out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        *out = o + 1;
    } else if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        *out = o + 2;
    } else if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        *out = o + 3;
    } else {
        o[0] = (unsigned char)(0xF0 | (cp >> 18));
        o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[3] = (unsigned char)(0x80 | (cp & 0x3F));
        *out = o + 4;
    }
    return seq;
}

/* The string at ps->p (its opening quote) into the arena; NULL if cJSON refuses it. */
static char *parse_string(struct parser *ps)
{
    if (ps->p >= ps->end || *ps->p != '"')
        return NULL;
    const unsigned char *start = ps->p + 1, *q = start;
    bool escaped = false;
    while (q < ps->end && *q != '"') {
        if (*q == '\\') {
            if (q + 1 >= ps->end)
                return NULL;
            escaped = true;
            q++;
        }
        q++;
    }
    if (q >= ps->end)
        return NULL;
    /* An escape never gets longer as UTF-8: the raw length is enough. */
    unsigned char *s = arena_get(ps->a, (size_t)(q - start) + 1), *o = s;
    if (!s)
        return NULL;
    if (!escaped) {
        memcpy(s, start, (size_t)(q - start));
        o += q - start;
    } else {
        for (const unsigned char *in = start; in < q;) {
            if (*in != '\\') {
                *o++ = *in++;
                continue;
            }
            size_t seq = 2;
            switch (in[1]) {
            case 'b':
                *o++ = '\b';
                break;
            case 'f':
                *o++ = '\f';
                break;
            case 'n':
                *o++ = '\n';
                break;
            case 'r':
                *o++ = '\r';
                break;
            case 't':
                *o++ = '\t';
                break;
            case '"':
            case '\\':
            case '/':
                *o++ = in[1];
                break;
            case 'u':
                if (!(seq = utf16_escape(in, q, &o)))
                    return NULL;
                break;
            default:
                return NULL;
            }
            in += seq;
        }
    }
    *o = '\0';
    ps->p = q + 1;
    return (char *)s;
}

/*
 * cJSON's parse_number: the run of [0-9+-eE.] read by strtod. (cJSON 1.7.15
 * read at most 63 characters; Debian's 1.7.15-1+deb12u4 and cJSON 1.7.18 read
 * the whole run, and so does this.) Whether the double holds the number
 * exactly is decided here, where its digits are read anyway: a run of at
 * most 15 digits without an exponent always is (DBL_DIG), so nearly every
 * number costs two compares more; the others ask sk_json_number_exact.
 */
static bool parse_number(struct parser *ps, cJSON *item)
{
    size_t n = 0, other = 0; /* other: bytes of the run that are no digit */
    bool exp = false;
    for (; ps->p + n < ps->end; n++) {
        unsigned char c = ps->p[n];
        if (c >= '0' && c <= '9')
            continue;
        if (c == 'e' || c == 'E')
            exp = true;
        else if (c != '+' && c != '-' && c != '.')
            break;
        other++;
    }
    char small[64], *num = n < sizeof(small) ? small : malloc(n + 1);
    if (!num)
        return false;
    memcpy(num, ps->p, n);
    num[n] = '\0';
    char *after;
    double d = strtod(num, &after);
    size_t used = (size_t)(after - num);
    if (num != small)
        free(num);
    if (!used)
        return false;
    if ((exp || n - other > 15) && !ps->a->inexact &&
        !sk_json_number_exact((const char *)ps->p, used)) {
        ps->a->inexact = true;
        ps->a->inexact_at = (size_t)(ps->p - ps->text);
    }
    item->valuedouble = d;
    item->valueint = d >= INT_MAX ? INT_MAX : d <= (double)INT_MIN ? INT_MIN : (int)d;
    item->type = cJSON_Number;
    ps->p += used;
    return true;
}

static bool parse_value(struct parser *ps, cJSON *item);

/* [ ... ] or { ... } at ps->p; object: members have keys. */
static bool parse_container(struct parser *ps, cJSON *item, bool object)
{
    unsigned char close = object ? '}' : ']';
    if (ps->depth >= NESTING_LIMIT)
        return false;
    ps->depth++;
    ps->p++; /* the opening bracket */
    skip_ws(ps);
    cJSON *head = NULL, *last = NULL;
    if (ps->p < ps->end && *ps->p == close)
        goto done;
    if (ps->p >= ps->end)
        return false;
    for (;;) {
        cJSON *n = new_node(ps);
        if (!n)
            return false;
        if (!head) {
            head = n;
        } else {
            last->next = n;
            n->prev = last;
        }
        last = n;
        skip_ws(ps);
        if (object) {
            if (!(n->string = parse_string(ps)))
                return false;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':')
                return false;
            ps->p++;
            skip_ws(ps);
        }
        if (!parse_value(ps, n))
            return false;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        break;
    }
    if (ps->p >= ps->end || *ps->p != close)
        return false;
done:
    ps->depth--;
    if (head)
        head->prev = last; /* cJSON's list: the head's prev is the tail */
    item->type = object ? cJSON_Object : cJSON_Array;
    item->child = head;
    ps->p++;
    return true;
}

static bool literal(struct parser *ps, const char *word, size_t n)
{
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return false;
    ps->p += n;
    return true;
}

static bool parse_value(struct parser *ps, cJSON *item)
{
    if (literal(ps, "null", 4)) {
        item->type = cJSON_NULL;
        return true;
    }
    if (literal(ps, "false", 5)) {
        item->type = cJSON_False;
        return true;
    }
    if (literal(ps, "true", 4)) {
        item->type = cJSON_True;
        item->valueint = 1;
        return true;
    }
    if (ps->p >= ps->end)
        return false;
    unsigned char c = *ps->p;
    if (c == '"') {
        item->type = cJSON_String;
        return (item->valuestring = parse_string(ps)) != NULL;
    }
    if (c == '-' || (c >= '0' && c <= '9'))
        return parse_number(ps, item);
    if (c == '[' || c == '{')
        return parse_container(ps, item, c == '{');
    return false;
}

cJSON *sk_json_arena_parse(const char *text, size_t len, struct sk_json_arena **arena)
{
    *arena = NULL;
    if (!text || !len)
        return NULL;
    struct sk_json_arena *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    /* Nodes and strings of a typical page take ~3-5 times its text. */
    size_t bs = len * 4;
    a->block_size = bs < 16384 ? 16384 : bs > (8u << 20) ? (8u << 20) : bs;
    struct parser ps = {.p = (const unsigned char *)text,
                        .end = (const unsigned char *)text + len,
                        .text = (const unsigned char *)text,
                        .a = a};
    /* a UTF-8 byte order mark, as cJSON skips it (only with more than 4 bytes) */
    if (len > 4 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        ps.p += 3;
    skip_ws(&ps);
    cJSON *root = new_node(&ps);
    if (!root || !parse_value(&ps, root)) {
        sk_json_arena_free(a);
        return NULL;
    }
    a->end = (size_t)(ps.p - ps.text);
    *arena = a;
    return root;
}

const char *sk_json_arena_inexact(const struct sk_json_arena *arena, size_t *at)
{
    if (!arena->inexact)
        return NULL;
    *at = arena->inexact_at;
    return SK_JSON_INEXACT;
}

size_t sk_json_arena_end(const struct sk_json_arena *arena)
{
    return arena->end;
}

char *sk_json_arena_strdup(struct sk_json_arena *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *c = arena_get(a, n);
    return c ? memcpy(c, s, n) : NULL;
}

void sk_json_arena_free(struct sk_json_arena *a)
{
    if (!a)
        return;
    while (a->blocks) {
        struct arena_block *b = a->blocks;
        a->blocks = b->next;
        free(b);
    }
    free(a);
}
