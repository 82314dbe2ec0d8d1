/*
 * snapshot.h: snapshot markers and the sink's snapshot sweep
 * (docs/architecture.md §4.6).
 *
 * A source that lists every entity of a type (a full listing, never a
 * window or a filter) says so in its batches (connector.h, snapshot_begin
 * and snapshot_end). The source driver then writes a marker to every
 * partition of the type's topic: "begin" before the listing's first record,
 * "end" after its last, in the same transaction as those records. A sink
 * that read every partition from its begin marker to its end marker knows
 * every entity the source system had: what its target holds beyond that
 * (and beyond what came after the markers) was deleted while nobody
 * listened, and the sink driver deletes it through the sink's own apply.
 *
 * Markers are records with the key SK_SNAPSHOT_KEY (not a UUID, so nothing
 * takes one for an entity), the header skolsync-control: snapshot and a
 * small JSON value. Only the drivers read them: sinks and live-id readers
 * skip them.
 */
#ifndef SK_SNAPSHOT_H
#define SK_SNAPSHOT_H

#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "idmap.h"
#include "model.h"

#define SK_SNAPSHOT_KEY "skolsync-snapshot"
#define SK_CONTROL_HEADER "skolsync-control"

enum sk_snapshot_phase { SK_SNAPSHOT_BEGIN, SK_SNAPSHOT_END };

struct sk_snapshot_marker {
    enum sk_snapshot_phase phase;
    char id[64]; /* one listing: "<source>@<µs when it began>" */
    char source[128];
    int32_t partitions; /* of the topic when the marker was written */
    /* A windowed listing (connector.h, sk_snapshot_window): field[0] '\0' if none. */
    char field[32];
    int64_t from_us, to_us;
};

/* The marker's value (JSON text; caller frees). */
char *sk_snapshot_marker_value(const struct sk_snapshot_marker *m);
/* Headers of a marker (the producer takes them). */
rd_kafka_headers_t *sk_snapshot_marker_headers(const char *source);
/*
 * Whether m is a control record of the drivers (1: a snapshot marker, *out
 * filled; -1: a control record this version does not read, or a marker it
 * cannot parse) or a record like any other (0).
 */
int sk_snapshot_marker_read(const rd_kafka_message_t *m, struct sk_snapshot_marker *out);
/* A marker's value (Kafka: outside input): true with *out filled if it is a valid one. */
bool sk_snapshot_marker_parse(const void *value, size_t len, struct sk_snapshot_marker *out);

/* ---- the sink's side ------------------------------------------------------ */

#define SK_SNAPSHOT_MAX_PARTITIONS 256

/* One entity topic's snapshot under way, as one sink consumer sees it. */
struct sk_snapshot_track {
    bool active;
    struct sk_snapshot_marker marker; /* its begin marker */
    uint8_t begun[SK_SNAPSHOT_MAX_PARTITIONS / 8];
    uint8_t ended[SK_SNAPSHOT_MAX_PARTITIONS / 8];
    int32_t n_begun, n_ended;
    bool other_source;    /* a record of another source came on a begun partition */
    struct sk_idset keys; /* every key applied on a begun partition since its begin */
};

/* A begin marker on partition p: a new snapshot (forgetting one under way) or one more partition.
 */
void sk_snapshot_track_begin(struct sk_snapshot_track *t, const struct sk_snapshot_marker *m,
                             int32_t p);
/* A record applied on partition p (source: its skolsync-source header, or NULL). */
void sk_snapshot_track_record(struct sk_snapshot_track *t, int32_t p, const char *key,
                              const char *source);
/*
 * An end marker on partition p. True when that completes the snapshot (every
 * partition saw its begin and its end): the caller sweeps unless
 * other_source, then calls sk_snapshot_track_reset.
 */
bool sk_snapshot_track_end(struct sk_snapshot_track *t, const struct sk_snapshot_marker *m,
                           int32_t p);
/* Forgets the snapshot (a partition revoked, the sweep done); keeps memory for the next. */
void sk_snapshot_track_reset(struct sk_snapshot_track *t);
void sk_snapshot_track_free(struct sk_snapshot_track *t);

#endif
