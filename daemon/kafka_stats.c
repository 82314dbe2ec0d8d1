/* kafka_stats.c: sk_kafka_stats_parse (kafka.h): the figures of librdkafka's statistics JSON. */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "kafka.h"

static int64_t stat_of(const cJSON *o, const char *name)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(n) && n->valuedouble > 0 ? (int64_t)n->valuedouble : 0;
}

void sk_kafka_stats_parse(const char *json, size_t len, struct sk_kafka_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->rtt_us = -1;
    cJSON *doc = cJSON_ParseWithLength(json, len);
    if (!doc)
        return;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(doc, "name");
    if (cJSON_IsString(name))
        snprintf(out->client, sizeof(out->client), "%s", name->valuestring);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(doc, "type");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "producer") == 0) {
        /* messages sent again (a leader moved, a request failed): a partition
         * transmitted more than was produced to it */
        const cJSON *topics = cJSON_GetObjectItemCaseSensitive(doc, "topics");
        for (const cJSON *t = topics ? topics->child : NULL; t; t = t->next) {
            const cJSON *parts = cJSON_GetObjectItemCaseSensitive(t, "partitions");
            for (const cJSON *p = parts ? parts->child : NULL; p; p = p->next) {
                int64_t again = stat_of(p, "txmsgs") - stat_of(p, "msgs");
                if (again > 0)
                    out->retries += again;
            }
        }
    }
    const cJSON *brokers = cJSON_GetObjectItemCaseSensitive(doc, "brokers");
    for (const cJSON *b = brokers ? brokers->child : NULL; b; b = b->next) {
        const cJSON *rtt = cJSON_GetObjectItemCaseSensitive(b, "rtt");
        const cJSON *avg = rtt ? cJSON_GetObjectItemCaseSensitive(rtt, "avg") : NULL;
        if (cJSON_IsNumber(avg) && (int64_t)avg->valuedouble > out->rtt_us)
            out->rtt_us = (int64_t)avg->valuedouble;
        out->retries += stat_of(b, "txretries");
    }
    cJSON_Delete(doc);
}
