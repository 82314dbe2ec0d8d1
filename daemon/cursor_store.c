/*
 * cursor_store.c: reads a source's last cursor from `<prefix>_cursors`.
 *
 * The topic is compacted with one partition, keyed by source name. We read
 * it from the beginning to its end under read_committed (so the end is the
 * last stable offset: a cursor in an aborted or open transaction is never
 * seen) and keep the last value for our key. A tombstone resets the cursor.
 * Writing happens in the source driver, inside the batch's transaction.
 */
#include <stdlib.h>
#include <string.h>

#include "drivers.h"
#include "log.h"
#include "util.h"

int sk_cursor_store_load(struct sk_kafka *k, const char *name, struct sk_cursor *out,
                         struct sk_error *err)
{
    out->data = NULL;
    out->len = 0;
    char *client_id = sk_asprintf("skolsync-cursor-%s", name);
    rd_kafka_t *rk = sk_kafka_reader_new(k, client_id, err);
    free(client_id);
    if (!rk)
        return -1;
    const char *topic = sk_kafka_cursor_topic(k);
    int rc = 0;
    int64_t lo = 0, hi = 0;
    rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk, topic, 0, &lo, &hi, 15000);
    if (e) {
        rc = sk_error_set(err, SK_ERR_RETRIABLE, "reading %s: %s", topic, rd_kafka_err2str(e));
        goto done;
    }
    if (hi <= lo)
        goto done; /* empty: no cursor */

    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    e = rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (e) {
        rc = sk_error_set(err, SK_ERR_RETRIABLE, "reading %s: %s", topic, rd_kafka_err2str(e));
        goto done;
    }
    size_t name_len = strlen(name);
    int64_t deadline = sk_mono_ms() + 60000;
    for (;;) {
        if (sk_mono_ms() > deadline) {
            rc = sk_error_set(err, SK_ERR_RETRIABLE, "reading %s timed out", topic);
            break;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(m);
            break;
        }
        if (m->err) {
            rc = sk_error_set(err, SK_ERR_RETRIABLE, "reading %s: %s", topic,
                              rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            break;
        }
        if (m->key_len == name_len && memcmp(m->key, name, name_len) == 0) {
            free(out->data);
            out->data = NULL;
            out->len = 0;
            if (m->payload) {
                out->data = sk_malloc(m->len ? m->len : 1);
                memcpy(out->data, m->payload, m->len);
                out->len = m->len;
            }
        }
        rd_kafka_message_destroy(m);
    }
done:
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    if (rc) {
        free(out->data);
        out->data = NULL;
        out->len = 0;
    }
    return rc;
}
