/*
 * test_json_arena.c: the arena JSON parser (proto/json_arena.c) accepts
 * exactly the texts cJSON_ParseWithLength accepts and builds the same tree:
 * hand-picked edge cases (escapes, surrogates, numbers, nesting, BOM,
 * truncation), every prefix of the codec fixtures, and seeded byte flips.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "util.h"

#define FIXTURES SK_SOURCE_DIR "/tests/fixtures/codec/"

/* Same shape as cJSON's: types, keys, values, and the head's prev is the tail. */
static void same_tree(const cJSON *a, const cJSON *b, const char *what)
{
    cr_assert_eq(a->type, b->type, "%s: type", what);
    cr_assert_eq(!a->string, !b->string, "%s: key", what);
    if (a->string)
        cr_assert_str_eq(a->string, b->string, "%s: key", what);
    if (cJSON_IsString(a))
        cr_assert_str_eq(a->valuestring, b->valuestring, "%s: string", what);
    if (cJSON_IsNumber(a)) {
        cr_assert(a->valuedouble == b->valuedouble ||
                      (a->valuedouble != a->valuedouble && b->valuedouble != b->valuedouble),
                  "%s: number", what);
        cr_assert_eq(a->valueint, b->valueint, "%s: valueint", what);
    }
    if (cJSON_IsTrue(a) || cJSON_IsFalse(a))
        cr_assert_eq(a->valueint, b->valueint, "%s: bool", what);
    const cJSON *x = a->child, *y = b->child, *lx = NULL, *ly = NULL;
    for (; x && y; x = x->next, y = y->next) {
        same_tree(x, y, what);
        lx = x;
        ly = y;
    }
    cr_assert(!x && !y, "%s: child count", what);
    if (a->child)
        cr_assert(a->child->prev == lx && b->child->prev == ly, "%s: tail link", what);
}

/* Parses text both ways; true if cJSON accepted it. */
static bool agree(const char *text, size_t len, const char *what)
{
    cJSON *ref = cJSON_ParseWithLength(text, len);
    struct sk_json_arena *arena = (struct sk_json_arena *)0x1;
    cJSON *got = sk_json_arena_parse(text, len, &arena);
    cr_assert_eq(!ref, !got, "%s: cJSON %s, arena %s (%zu bytes: %.*s)", what,
                 ref ? "accepts" : "refuses", got ? "accepts" : "refuses", len,
                 (int)(len < 80 ? len : 80), text);
    if (!got)
        cr_assert_null(arena, "%s: no arena without a tree", what);
    if (ref)
        same_tree(ref, got, what);
    cJSON_Delete(ref);
    sk_json_arena_free(got ? arena : NULL);
    return ref != NULL;
}

#define AGREE(lit) agree(lit, sizeof(lit) - 1, lit)

Test(json_arena, edge_cases_as_cjson)
{
    static const char *const accepted[] = {
        "{}",
        "[]",
        "null",
        "true",
        "false",
        "0",
        "-0",
        "1.5e3",
        "-12.25E-2",
        "\"\"",
        " \t\r\n{ \"a\" : [ 1 , 2 ] } ",
        "{\"a\":1,\"a\":2}",
        "[[[[[]]]]]",
        "\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"",
        "\"\\u00e5\\u00C4\\u20ac\"",
        "\"\\ud83d\\ude00\"",
        "\"\\u0000tail\"",
        "\"\\uzzzz\"", /* cJSON: a bad hex digit is 0 */
        "123abc",
        "[1]junk",
        "1e5e5",
        "9007199254740993",
        "1e400",
        "-1e400",
        "2147483648",
        "-2147483649",
        "0.1",
        "\"raw\x01control\"",
        "\"\xc3\xa5\"",
        "\xEF\xBB\xBF{\"bom\":1}",
        "{\"data\":[{\"id\":\"x\",\"meta\":{\"modified\":\"t\"}}]}",
    };
    static const char *const refused[] = {
        "",
        " ",
        "{",
        "[",
        "[1,]",
        "[,1]",
        "{\"a\"}",
        "{\"a\":}",
        "{a:1}",
        "{\"a\":1,}",
        "\"open",
        "\"bad \\x escape\"",
        "\"\\ud83d\"",
        "\"\\ude00\"",
        "\"\\ud83d\\u0041\"",
        "\"\\u12\"",
        "nul",
        "tru",
        "+1",
        ".5",
        "-",
        "'single'",
        "\xEF\xBB\xBF",
        "[\"a\\",
    };
    for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++)
        cr_expect(agree(accepted[i], strlen(accepted[i]), accepted[i]), "cJSON refuses %s",
                  accepted[i]);
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        cr_expect_not(agree(refused[i], strlen(refused[i]), refused[i]), "cJSON accepts %s",
                      refused[i]);
    /* a NUL inside the text, and a length short of the NUL */
    AGREE("[1,\0 2]");
    agree("{\"a\":12345}", 9, "cut short");
    /* nesting: cJSON's limit is 1000 levels */
    for (int depth = 999; depth <= 1001; depth++) {
        char *deep = malloc((size_t)depth * 2 + 1);
        memset(deep, '[', (size_t)depth);
        memset(deep + depth, ']', (size_t)depth);
        agree(deep, (size_t)depth * 2, "deep");
        free(deep);
    }
    /* a number of more than 63 characters is read as cJSON reads it */
    char longnum[100];
    memset(longnum, '1', sizeof(longnum));
    agree(longnum, sizeof(longnum), "long number");
}

Test(json_arena, fixtures_their_prefixes_and_byte_flips)
{
    static const char *const names[] = {"persons.json", "calendarEvents.json", "grades.json"};
    unsigned seed = 17;
    for (size_t f = 0; f < sizeof(names) / sizeof(names[0]); f++) {
        char path[512];
        snprintf(path, sizeof(path), FIXTURES "%s", names[f]);
        size_t len;
        char *text = sk_read_file(path, &len);
        cr_assert_not_null(text, "cannot read %s", path);
        cr_assert(agree(text, len, names[f]), "%s is JSON", names[f]);
        for (size_t n = 1; n < len; n++)
            agree(text, n, "prefix");
        static const char flips[] = "\"\\{}[],:0-eu \x01\xff";
        for (int k = 0; k < 3000; k++) {
            char *copy = malloc(len);
            memcpy(copy, text, len);
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % len;
            copy[at] = flips[(seed >> 20) % (sizeof(flips) - 1)];
            agree(copy, len, "byte flip");
            free(copy);
        }
        free(text);
    }
}

Test(json_arena, strdup_lives_as_long_as_the_tree)
{
    struct sk_json_arena *arena;
    cJSON *doc =
        sk_json_arena_parse("{\"meta\":{\"modified\":\"2025-01-01T00:00:00\"}}", 44, &arena);
    cr_assert_not_null(doc);
    cJSON *mod = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItem(doc, "meta"), "modified");
    mod->valuestring = sk_json_arena_strdup(arena, "2025-01-01T00:00:00+01:00");
    char *printed = sk_json_print(doc);
    cr_assert_str_eq(printed, "{\"meta\":{\"modified\":\"2025-01-01T00:00:00+01:00\"}}");
    free(printed);
    sk_json_arena_free(arena);
}

/* The parse's verdict on the numbers of text, checked against the scan
 * (sk_json_number_inexact): the same first number, or none. */
static const char *verdict(const char *text, size_t *at)
{
    struct sk_json_arena *arena;
    cJSON *tree = sk_json_arena_parse(text, strlen(text), &arena);
    cr_assert_not_null(tree, "%s refused", text);
    size_t scan_at = 0, parse_at = 0;
    const char *scan = sk_json_number_inexact(text, strlen(text), &scan_at);
    const char *parse = sk_json_arena_inexact(arena, &parse_at);
    sk_json_arena_free(arena);
    cr_assert_eq(!scan, !parse, "%s: the scan says %s, the parse %s", text,
                 scan ? "inexact" : "exact", parse ? "inexact" : "exact");
    if (scan) {
        cr_assert_str_eq(parse, scan);
        cr_assert_eq(parse_at, scan_at, "%s: at %zu, the scan says %zu", text, parse_at, scan_at);
    }
    *at = parse_at;
    return parse;
}

/*
 * A number a double does not hold exactly (a 19-digit id, 1e400) would be
 * stored changed: the parse says so as it reads the number, where the
 * ss12000-source's pages had no such check at all and the jsonl lines a
 * second scan. Each number as the codec prints it back decides it.
 */
Test(json_arena, numbers_a_double_does_not_hold_are_reported_where_they_are)
{
    static const char *const exact[] = {
        "0",
        "-0",
        "0.0",
        "0.1",
        "-0.1",
        "1.50",
        "1e308",
        "1.7976931348623157e308",
        "123456789012345",
        "-123456789012345",
        "1234567890123456",
        "0.30000000000000004",
        "9007199254740992",
        "1.5e+3",
        "1.5E-3",
        "-2.5e-300",
        "1e+2",
        "1E-5",
        "0.05",
        "100000000000000000000000",
        "2.2250738585072014e-308",
        "-1.7976931348623157E+308",
        "0.000000000000001234",
        "123456789012345.0000",
    };
    static const char *const inexact[] = {
        "2e308",
        "-2e308",
        "1e400",
        "1e-400",
        "-1e-400",
        "4.9e-324",
        "5e-324",
        "9007199254740993",
        "12345678901234567",
        "1234567890123456789",
        "-1234567890123456789",
        "12345678901234567890",
        "0.1000000000000000000001",
        "-1.00000000000000000001",
        "1.7976931348623159e308",
        "1234567890123456.7",
    };
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
        char *text = sk_asprintf("{\"s\":\"123456789012345678\",\"v\":[1,%s]}", exact[i]);
        size_t at;
        cr_expect_null(verdict(text, &at), "%s: refused", exact[i]);
        free(text);
    }
    for (size_t i = 0; i < sizeof(inexact) / sizeof(inexact[0]); i++) {
        char *text = sk_asprintf("{\"s\":\"123456789012345678\",\"v\":[1,%s, 1e999]}", inexact[i]);
        size_t at = 0;
        cr_expect_str_eq(verdict(text, &at), SK_JSON_INEXACT, "%s: taken", inexact[i]);
        cr_expect_eq(at, 33, "%s: at %zu", inexact[i], at); /* the first of the two */
        free(text);
    }
}

/* n random decimal digits at out, the first not 0 if lead. */
static size_t digits(char *out, size_t n, bool lead)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (char)('0' + (i == 0 && lead ? 1 + rand() % 9 : rand() % 10));
    return n;
}

/* A random JSON number: any sign, 1-22 digits, a fraction, an exponent up to 400. */
static size_t random_number(char *out)
{
    size_t n = 0;
    if (rand() % 2)
        out[n++] = '-';
    size_t int_digits = 1 + (size_t)rand() % 22;
    n += rand() % 8 == 0 ? (out[n] = '0', 1) : digits(out + n, int_digits, true);
    if (rand() % 2) {
        out[n++] = '.';
        n += digits(out + n, 1 + (size_t)rand() % 22, false);
    }
    if (rand() % 2) {
        out[n++] = "eE"[rand() % 2];
        if (rand() % 2)
            out[n++] = "+-"[rand() % 2];
        n += (size_t)snprintf(out + n, 8, "%d", rand() % (rand() % 4 ? 20 : 401));
    }
    return n;
}

/* Random numbers and doubles printed 15-17 digits, a few to a text: the
 * parse flags the first number the scan flags, at the same byte. */
Test(json_arena, its_number_verdict_is_the_scans_on_random_numbers)
{
    srand(12000);
    size_t flagged = 0;
    for (int round = 0; round < 100000; round++) {
        char text[512];
        size_t n = (size_t)snprintf(text, sizeof(text), "{\"k\":\"x\",\"v\":[");
        for (int k = rand() % 4; k >= 0; k--) {
            if (rand() % 3 == 0) {
                uint64_t bits =
                    ((uint64_t)rand() << 42) ^ ((uint64_t)rand() << 21) ^ (uint64_t)rand();
                double d;
                memcpy(&d, &bits, sizeof(d));
                if (d != d || d - d != 0)
                    d = 1;
                n += (size_t)snprintf(text + n, 32, "%.*g", 15 + rand() % 3, d);
            } else {
                n += random_number(text + n);
            }
            text[n++] = k ? ',' : ']';
        }
        snprintf(text + n, sizeof(text) - n, "}");
        size_t at;
        flagged += verdict(text, &at) != NULL;
    }
    cr_assert(flagged > 10000 && flagged < 90000, "%zu texts flagged: not a mix", flagged);
}
