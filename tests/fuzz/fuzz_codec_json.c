/*
 * fuzz_codec_json.c: SS 12000 JSON text -> protobuf -> JSON -> protobuf.
 * The first byte picks the entity type (sk_entities order), the rest is the
 * JSON a source read from an SIS or a file.
 *
 * Property (model.h, "Losslessness"): when the first encode succeeds, the
 * decoded JSON encodes again, to the same bytes, and decodes to the same
 * text. Anything else is a crash. The encode refuses a number a double
 * does not hold exactly (its parse decides) where the scan
 * (sk_json_number_inexact) finds one, and only there.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

static void fail(const char *what, const struct sk_entity *e, const char *a, const char *b)
{
    fprintf(stderr, "%s: %s\n  first:  %s\n  second: %s\n", e->name, what, a ? a : "(null)",
            b ? b : "(null)");
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const struct sk_entity *e = sk_entities[data[0] % SK_ENTITY_COUNT];
    const char *json = (const char *)data + 1;
    size_t len = size - 1;

    uint8_t *bytes1 = NULL, *bytes2 = NULL;
    size_t len1 = 0, len2 = 0;
    char id1[37], id2[37];
    int64_t mod1 = 0, mod2 = 0;
    struct sk_error err = {0};
    /* the scan only where the encode read valid JSON: taken, or refused for a number */
    size_t at = 0;
    char refusal[128];
    if (sk_codec_encode(e, json, len, &bytes1, &len1, id1, &mod1, &err) < 0) {
        if (err.cls != SK_ERR_PERMANENT)
            fail("encode failed but not PERMANENT", e, err.msg, NULL);
        bool inexact = strstr(err.msg, SK_JSON_INEXACT) != NULL;
        snprintf(refusal, sizeof(refusal), "%s: %s at byte %zu", e->name,
                 inexact && sk_json_number_inexact(json, len, &at) ? SK_JSON_INEXACT : "nothing",
                 at);
        if (inexact && strcmp(err.msg, refusal) != 0)
            fail("refused for a number, the scan finds another or none", e, err.msg, refusal);
        return 0;
    }
    if (sk_json_number_inexact(json, len, &at)) {
        snprintf(refusal, sizeof(refusal), "the number at byte %zu", at);
        fail("took a number the scan finds inexact", e, refusal, NULL);
    }
    char *text1 = sk_codec_decode(e, bytes1, len1, &mod2, &err);
    if (!text1)
        fail("our own bytes do not decode", e, err.msg, NULL);
    if (mod1 != mod2)
        fail("meta.modified differs after decode", e, text1, NULL);
    if (sk_codec_encode(e, text1, strlen(text1), &bytes2, &len2, id2, &mod2, &err) < 0)
        fail("decoded JSON does not encode again", e, text1, err.msg);
    if (strcmp(id1, id2) != 0)
        fail("id differs", e, id1, id2);
    if (mod1 != mod2)
        fail("meta.modified differs after re-encode", e, text1, NULL);
    char *text2 = sk_codec_decode(e, bytes2, len2, NULL, &err);
    if (!text2)
        fail("re-encoded bytes do not decode", e, text1, err.msg);
    if (len1 != len2 || memcmp(bytes1, bytes2, len1) != 0)
        fail("JSON -> protobuf -> JSON -> protobuf changed the bytes", e, text1, text2);
    if (strcmp(text1, text2) != 0)
        fail("protobuf -> JSON is not stable", e, text1, text2);
    free(bytes1);
    free(bytes2);
    free(text1);
    free(text2);
    return 0;
}
