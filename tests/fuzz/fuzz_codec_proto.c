/*
 * fuzz_codec_proto.c: protobuf bytes, as the sink driver takes them from
 * Kafka (daemon/sink_driver.c: unpack + sk_codec_to_json), -> JSON, for every
 * entity type in turn. Kafka is outside input: a topic may hold anything.
 *
 * Property beyond "no crash": once decoded, the JSON is a fixed point. If it
 * encodes (it has a valid id), decode(encode(json)) encodes to the same
 * bytes again. (The first pass may normalise: a 64-bit value beyond 2^53 or
 * a non-object _unknown cannot come from JSON, model.h.)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

static void fail(const struct sk_entity *e, const char *what, const char *a, const char *b)
{
    fprintf(stderr, "%s: %s\n  first:  %s\n  second: %s\n", e->name, what, a ? a : "(null)",
            b ? b : "(null)");
    abort();
}

static void one(const struct sk_entity *e, const uint8_t *data, size_t size)
{
    struct sk_error err = {0};
    int64_t modified;
    char *text = sk_codec_decode(e, data, size, &modified, &err);
    if (!text) {
        if (err.cls != SK_ERR_PERMANENT)
            fail(e, "decode failed but not PERMANENT", err.msg, NULL);
        return;
    }
    uint8_t *b1 = NULL, *b2 = NULL;
    size_t n1 = 0, n2 = 0;
    char id[37];
    if (sk_codec_encode(e, text, strlen(text), &b1, &n1, id, NULL, &err) == 0) {
        char *text1 = sk_codec_decode(e, b1, n1, NULL, &err);
        if (!text1)
            fail(e, "our own bytes do not decode", text, err.msg);
        if (sk_codec_encode(e, text1, strlen(text1), &b2, &n2, id, NULL, &err) < 0)
            fail(e, "normalised JSON does not encode", text1, err.msg);
        if (n1 != n2 || memcmp(b1, b2, n1) != 0)
            fail(e, "normalised JSON is not a fixed point", text, text1);
        free(text1);
    }
    free(b1);
    free(b2);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (size_t i = 0; sk_entities[i]; i++)
        one(sk_entities[i], data, size);
    return 0;
}
