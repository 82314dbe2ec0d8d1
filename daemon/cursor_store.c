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

struct cursor_read {
    const char *name;
    size_t name_len;
    struct sk_cursor *out;
};

/* Keeps the last value for our key; a tombstone resets the cursor. */
static int keep_last(void *ctx, const rd_kafka_message_t *m)
{
    struct cursor_read *c = ctx;
    if (m->key_len != c->name_len || memcmp(m->key, c->name, c->name_len) != 0)
        return 0;
    free(c->out->data);
    c->out->data = NULL;
    c->out->len = 0;
    if (m->payload) {
        c->out->data = sk_malloc(m->len ? m->len : 1);
        memcpy(c->out->data, m->payload, m->len);
        c->out->len = m->len;
    }
    return 0;
}

int sk_cursor_store_load(struct sk_kafka *k, const char *name, struct sk_cursor *out,
                         struct sk_error *err)
{
    out->data = NULL;
    out->len = 0;
    char *client_id = sk_name_client(sk_kafka_names(k), "cursor", name);
    struct cursor_read c = {.name = name, .name_len = strlen(name), .out = out};
    int rc = sk_kafka_read_to_end(k, client_id, sk_kafka_cursor_topic(k), 0,
                                  RD_KAFKA_OFFSET_BEGINNING, 60000, keep_last, &c, err);
    free(client_id);
    if (rc) {
        free(out->data);
        out->data = NULL;
        out->len = 0;
    }
    return rc;
}
