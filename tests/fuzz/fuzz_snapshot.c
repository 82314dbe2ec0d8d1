/*
 * fuzz_snapshot.c: a snapshot marker's value as the sink driver reads it
 * from Kafka (daemon/snapshot.c, sk_snapshot_marker_parse), then fed to a
 * sink's snapshot tracker on partitions and with keys the input picks.
 * Kafka is outside input: anyone who can produce to a topic can write one.
 *
 * Input: byte 0 the partition of the marker, byte 1 how many records follow
 * it, then the marker's JSON.
 * Properties: a parsed marker has 1..SK_SNAPSHOT_MAX_PARTITIONS partitions
 * and NUL-terminated texts; the tracker never completes a snapshot whose
 * every partition did not begin.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int32_t part = data[0];
    int records = data[1] % 8;
    struct sk_snapshot_marker m;
    if (!sk_snapshot_marker_parse(data + 2, size - 2, &m))
        return 0;
    if (m.partitions < 1 || m.partitions > SK_SNAPSHOT_MAX_PARTITIONS ||
        memchr(m.id, '\0', sizeof(m.id)) == NULL ||
        memchr(m.source, '\0', sizeof(m.source)) == NULL ||
        memchr(m.field, '\0', sizeof(m.field)) == NULL)
        abort();
    struct sk_snapshot_track t = {0};
    struct sk_snapshot_marker begin = m, end = m;
    begin.phase = SK_SNAPSHOT_BEGIN;
    end.phase = SK_SNAPSHOT_END;
    sk_snapshot_track_begin(&t, &begin, part);
    for (int i = 0; i < records; i++) {
        char key[37];
        snprintf(key, sizeof(key), "00000000-0000-4000-8000-%012d", i);
        sk_snapshot_track_record(&t, part + i - 2, key, i % 3 ? m.source : "other");
    }
    bool complete = sk_snapshot_track_end(&t, &end, part);
    if (complete && m.partitions != 1)
        abort(); /* only one partition began */
    sk_snapshot_track_free(&t);
    return 0;
}
