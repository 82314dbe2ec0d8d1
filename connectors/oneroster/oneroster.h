/*
 * oneroster.h: what the oneroster-csv-sink offers beyond its ops table.
 *
 * The sink writes a bundle by itself (a timer thread, when the topics have
 * been idle for `idle` or `interval` has passed, and on close). Tests and
 * tools that need a bundle at a known moment call this instead of waiting.
 */
#ifndef SK_ONEROSTER_H
#define SK_ONEROSTER_H

#include "connector.h"

/*
 * Builds the bundle from the sink's current state and publishes it now
 * (atomically, as the scheduled write does), whether or not anything changed.
 * Returns 0, or -1 with err. The path of the published bundle (a directory,
 * or a .zip with zip: true) is copied into path_out[path_size] when given.
 */
int oneroster_write_bundle_now(struct sk_sink *self, char *path_out, size_t path_size,
                               struct sk_error *err);

#endif
