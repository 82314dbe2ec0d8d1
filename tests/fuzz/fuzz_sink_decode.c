/*
 * fuzz_sink_decode.c: what the sink driver does with a record value from
 * Kafka (daemon/sink_driver.c, decode()): protobuf_c_message_unpack for the
 * topic's entity type, sk_codec_to_json, the sink's privacy policy
 * (sk_privacy_apply, proto/privacy.c) and meta.modified, then the exact
 * printer the sinks use (sk_json_print). Kafka is outside input.
 *
 * Input: byte 0 picks the entity type, byte 1 the policy (protected mode and
 * which drop_fields), the rest is the record value.
 * Property: a protected person is never kept whole under `skip`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "privacy.h"

static char *drops[] = {"civicNo",
                        "addresses",
                        "enrolments.educationCode",
                        "meta.created",
                        "externalIdentifiers.value",
                        "_unknown",
                        ""};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    const struct sk_entity *e = sk_entities[data[0] % SK_ENTITY_COUNT];
    struct sk_privacy policy = {
        .protected_mode = (enum sk_protected_mode)(data[1] % 3),
        .drop_fields = {.v = drops + (data[1] / 3) % 4, .n = 3},
    };
    data += 2;
    size -= 2;

    ProtobufCMessage *msg = protobuf_c_message_unpack(e->desc, NULL, size, data);
    if (!msg)
        return 0;
    cJSON *doc = sk_codec_to_json(msg);
    protobuf_c_message_free_unpacked(msg, NULL);
    if (!doc)
        abort(); /* NULL only on OOM (model.h) */
    bool was_protected = sk_privacy_is_protected(e, doc);
    enum sk_privacy_verdict verdict = sk_privacy_apply(&policy, e, doc);
    if (was_protected && policy.protected_mode == SK_PROTECTED_SKIP && verdict != SK_PRIVACY_DELETE)
        abort();
    if (verdict == SK_PRIVACY_KEEP) {
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(doc, "meta");
        const cJSON *mod = meta ? cJSON_GetObjectItemCaseSensitive(meta, "modified") : NULL;
        int64_t us;
        if (cJSON_IsString(mod))
            (void)sk_time_parse_us(mod->valuestring, &us);
        free(sk_json_print(doc));
    }
    cJSON_Delete(doc);
    return 0;
}
