/* produce.c: see produce.h. */
#include "produce.h"

rd_kafka_resp_err_t sk_produce(rd_kafka_t *rk, const char *topic, const void *key, size_t key_len,
                               const void *value, size_t value_len, rd_kafka_headers_t *hdrs,
                               void *opaque)
{
    return sk_produce_to(rk, topic, RD_KAFKA_PARTITION_UA, key, key_len, value, value_len, hdrs,
                         opaque);
}

rd_kafka_resp_err_t sk_produce_to(rd_kafka_t *rk, const char *topic, int32_t partition,
                                  const void *key, size_t key_len, const void *value,
                                  size_t value_len, rd_kafka_headers_t *hdrs, void *opaque)
{
    for (;;) {
        rd_kafka_resp_err_t e = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
            RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)value, value_len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
            RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            /* producev owns the headers only when it succeeded */
            if (e && hdrs)
                rd_kafka_headers_destroy(hdrs);
            return e;
        }
        /* back-pressure: delivery reports free the queue */
        rd_kafka_poll(rk, 100);
    }
}

bool sk_produce_never(rd_kafka_resp_err_t e)
{
    switch (e) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE: /* producer's message.max.bytes, or the broker's */
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:     /* the broker's validation refused it */
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
        return true;
    default:
        return false;
    }
}

int sk_produce_error(struct sk_error *err, rd_kafka_resp_err_t e, const char *topic)
{
    enum sk_err_class cls = e == RD_KAFKA_RESP_ERR__FATAL ? SK_ERR_FATAL
                            : sk_produce_never(e)         ? SK_ERR_PERMANENT
                                                          : SK_ERR_RETRIABLE;
    /* skolsync makes its topics at start only: one deleted under a running
     * daemon stays gone (and its records with it) until an operator acts */
    bool gone =
        e == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC || e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
    return sk_error_set(err, cls, "produce to %s: %s%s", topic, rd_kafka_err2str(e),
                        gone ? " (the topic is gone: restart the daemon, which creates it, then "
                               "reset the sources' cursors to publish again what it held)"
                             : "");
}
