/*
 * produce.h: producing one message with back-pressure, and what a failed
 * produce or delivery means for the record.
 *
 * Owns: the wait on a full local queue (the one back-pressure point of every
 * producer of the daemon) and the classification of produce errors.
 * Must never: retry an error itself (librdkafka retries what can be retried;
 * the drivers decide what a failure means for their batch).
 */
#ifndef SK_PRODUCE_H
#define SK_PRODUCE_H

#include <stdbool.h>
#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include "sk_error.h"

/*
 * Produces one message (key and value copied), waiting while the local queue
 * is full and serving rk's callbacks meanwhile: the caller is not back until
 * the queue has room. Takes hdrs (may be NULL) whatever happens. Returns the
 * error of the last attempt, RD_KAFKA_RESP_ERR_NO_ERROR when queued.
 */
rd_kafka_resp_err_t sk_produce(rd_kafka_t *rk, const char *topic, const void *key, size_t key_len,
                               const void *value, size_t value_len, rd_kafka_headers_t *hdrs,
                               void *opaque);
/* The same to one partition (RD_KAFKA_PARTITION_UA: the key's). */
rd_kafka_resp_err_t sk_produce_to(rd_kafka_t *rk, const char *topic, int32_t partition,
                                  const void *key, size_t key_len, const void *value,
                                  size_t value_len, rd_kafka_headers_t *hdrs, void *opaque);

/*
 * True when the record can never be produced, whatever the retries: too large
 * for the producer's or the broker's message size, or refused as invalid.
 * Such a record goes to the dead-letter topic; every other error is retried
 * (or, for RD_KAFKA_RESP_ERR__FATAL, cured by a new producer).
 */
bool sk_produce_never(rd_kafka_resp_err_t e);

/* Sets err for a produce or delivery error e on topic: FATAL, PERMANENT (never) or RETRIABLE. */
int sk_produce_error(struct sk_error *err, rd_kafka_resp_err_t e, const char *topic);

#endif
