/*
 * embedded_store.h: the embedded broker's state on disk (docs/architecture.md
 * §5.8): an SQLite database in WAL mode under kafka.embedded_dir holding
 * every record of every topic of the in-process mock cluster, restored into
 * a new mock cluster before any connector starts, so cursors, the entity
 * topics and the broker incarnation survive a restart.
 *
 * Owns: the store file (`<dir>/embedded.db`) and its lock (`<dir>/lock`), the
 * journal thread that copies the mock's records into it, the restore, the
 * compaction at open, moving a damaged file aside, the persisted incarnation.
 * Must never: write a cursor record before the records it covers (§5.8, the
 * watermark order), let a sink apply a record that is not on disk yet
 * (sk_estore_await), or restore records at other offsets than the ones sinks
 * stored under the same incarnation.
 *
 * Called by kafka.c on the main thread (open, start, close); sk_estore_await
 * from any sink thread.
 */
#ifndef SK_EMBEDDED_STORE_H
#define SK_EMBEDDED_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "sk_error.h"

struct sk_kafka;
struct sk_estore;

/*
 * Opens the store in dir (created if missing, locked against a second
 * process), compacts it when most of it is overwritten, and produces every
 * stored record back into k's mock cluster at its original partition and
 * offset. A damaged store file is logged, moved aside and replaced by an
 * empty one. Returns 0 with *out (caller closes it with sk_estore_close), or
 * -1 with err (FATAL: the directory is unusable, locked, or the restore
 * failed).
 */
int sk_estore_open(struct sk_kafka *k, const char *dir, struct sk_estore **out,
                   struct sk_error *err);

/* "embedded-<uuid>": kept across restarts, new after compaction or a damaged store (§5.9). */
const char *sk_estore_incarnation(const struct sk_estore *s);

/* Starts the journal thread over every topic the cluster has now. 0, or -1 with err. */
int sk_estore_start(struct sk_estore *s, struct sk_error *err);

/*
 * Stops the journal after a last round (call once no client produces any
 * more), closes the file and frees s. NULL is fine.
 */
void sk_estore_close(struct sk_estore *s);

/*
 * The sink's gate: returns 0 once every message of msgs is in the store
 * (NULL s: at once), -1 if *stop became true first, and 1 with the reason in
 * why while the store cannot write (a full disk): the caller says so and
 * calls again. A sink that applied only what is on disk never stores an
 * offset past the restored log end after a kill -9, so resuming at its
 * offsets skips nothing.
 */
int sk_estore_await(struct sk_estore *s, rd_kafka_message_t *const *msgs, size_t n,
                    const atomic_bool *stop, char *why, size_t why_size);

/*
 * Where a sink's target may be ahead of the store: a sink never applies past
 * the store (sk_estore_await), so a target that stored, under the same
 * incarnation, an offset past the end the store restored applied records the
 * store lost (an older copy put back, a -wal deleted or torn after a kill
 * -9), and the broker gives those offsets to new records: the sink must
 * resume at that end. sk_estore_first_look is true once per sink name in a
 * process (later assignments may hold offsets this process journaled);
 * sk_estore_restored_end is the offset after the last record of topic
 * [partition] restored at start, -1 if the journal does not copy it (NULL s,
 * not started, a topic created later).
 */
bool sk_estore_first_look(struct sk_estore *s, const char *sink);
int64_t sk_estore_restored_end(const struct sk_estore *s, const char *topic, int32_t partition);

#endif
