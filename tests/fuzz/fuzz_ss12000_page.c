/*
 * fuzz_ss12000_page.c: a list page of an SS 12000 server (outside input) the
 * way ss12000-source reads it: the byte check (NUL, \u0000, invalid UTF-8),
 * the byte spans of the data list's items, the page parsed by cJSON, and
 * each item through the codec of one entity type.
 *
 * Input: byte 0 picks the entity type, the rest is the page body.
 * Properties: spans lie inside the body, in order, never overlapping; when
 * the body passes the check and parses to an object whose "data" (the first
 * key cJSON reads as "data", escaped or not) is a list, there is one span per
 * item and each span's text parses to a value equal to its item; an
 * item the codec accepts packs, unpacks and prints back to an object with
 * the same id. The source's own parse (sk_json_arena_parse) accepts exactly
 * what cJSON accepts and prints the same, and sk_codec_pack_json (the
 * source's packing, from an arena) gives the bytes of the malloc'ed
 * message's pack. Its verdict on the numbers (sk_json_arena_inexact, read
 * as it parses) is the scan's (sk_json_number_inexact) for a page and for
 * each item's span parsed alone (where the source looks for the item).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "model.h"

/* The parse's verdict on text's numbers (in arena) is the scan's, when the
 * parse read the whole text (what follows the value is no number of it;
 * the scan is for valid JSON only). */
static void same_number_verdict(const char *text, size_t len, const struct sk_json_arena *arena)
{
    size_t end = sk_json_arena_end(arena);
    while (end < len && (unsigned char)text[end] <= ' ')
        end++;
    if (end != len)
        return;
    size_t scan_at = 0, parse_at = 0;
    const char *scan = sk_json_number_inexact(text, len, &scan_at);
    const char *parse = sk_json_arena_inexact(arena, &parse_at);
    if (!scan != !parse || (scan && parse_at != scan_at)) {
        fprintf(stderr, "numbers: the scan says %s at %zu, the parse %s at %zu\n",
                scan ? "inexact" : "exact", scan_at, parse ? "inexact" : "exact", parse_at);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const struct sk_entity *e = sk_entities[data[0] % SK_ENTITY_COUNT];
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    size_t at = 0;
    const char *bad = sk_json_text_bad(body, len, &at);
    if (bad && at >= len)
        abort();
    size_t(*spans)[2] = NULL;
    size_t n = sk_json_array_spans(body, len, "data", &spans);
    for (size_t k = 0; k < n; k++) {
        if (spans[k][0] > spans[k][1] || spans[k][1] > len || (k && spans[k][0] < spans[k - 1][1]))
            abort();
    }
    cJSON *doc = cJSON_ParseWithLength(body, len);
    struct sk_json_arena *arena = NULL;
    cJSON *fast = sk_json_arena_parse(body, len, &arena);
    if (!doc != !fast)
        abort();
    if (doc) {
        char *a = cJSON_PrintUnformatted(doc), *b = cJSON_PrintUnformatted(fast);
        if (a && b && strcmp(a, b) != 0)
            abort();
        free(a);
        free(b);
    }
    /* A page is an object (the scan takes a number's whole run, the parse
     * what strtod reads: the same in a container) */
    if (cJSON_IsObject(fast) || cJSON_IsArray(fast))
        same_number_verdict(body, len, arena);
    sk_json_arena_free(arena);
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(doc, "data");
    /* any page: the spans follow the key cJSON takes, also among duplicates */
    if (!bad && cJSON_IsArray(items)) {
        if ((size_t)cJSON_GetArraySize(items) != n)
            abort();
        size_t k = 0;
        const cJSON *item;
        cJSON_ArrayForEach(item, items)
        {
            /* Printed, not cJSON_Compare: that one is not reflexive on duplicate keys. */
            cJSON *again = cJSON_ParseWithLength(body + spans[k][0], spans[k][1] - spans[k][0]);
            char *a = again ? cJSON_PrintUnformatted(again) : NULL;
            char *b = cJSON_PrintUnformatted(item);
            if (!a || !b || strcmp(a, b) != 0)
                abort();
            free(a);
            free(b);
            cJSON_Delete(again);
            struct sk_json_arena *span_arena;
            cJSON *span =
                sk_json_arena_parse(body + spans[k][0], spans[k][1] - spans[k][0], &span_arena);
            if (cJSON_IsObject(span) || cJSON_IsArray(span))
                same_number_verdict(body + spans[k][0], spans[k][1] - spans[k][0], span_arena);
            sk_json_arena_free(span_arena);
            k++;
        }
    }
    const cJSON *list = cJSON_IsArray(items) ? items : NULL;
    const cJSON *item;
    cJSON_ArrayForEach(item, list)
    {
        char id[37];
        struct sk_error err = {0};
        ProtobufCMessage *m = sk_codec_from_json(e, item, id, &err);
        if (!m)
            continue;
        size_t plen = protobuf_c_message_get_packed_size(m);
        uint8_t *packed = malloc(plen ? plen : 1);
        protobuf_c_message_pack(m, packed);
        protobuf_c_message_free_unpacked(m, NULL);
        uint8_t *fast_packed = NULL;
        size_t fast_len = 0;
        char fast_id[37];
        if (sk_codec_pack_json(e, item, &fast_packed, &fast_len, fast_id, NULL, &err) != 0 ||
            fast_len != plen || memcmp(fast_packed, packed, plen) != 0 || strcmp(fast_id, id) != 0)
            abort();
        free(fast_packed);
        int64_t modified;
        char *text = sk_codec_decode(e, packed, plen, &modified, &err);
        free(packed);
        if (!text)
            abort();
        cJSON *back = cJSON_Parse(text);
        const char *bid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(back, "id"));
        if (!bid || strcmp(bid, id) != 0)
            abort();
        cJSON_Delete(back);
        free(text);
    }
    cJSON_Delete(doc);
    free(spans);
    return 0;
}
