/*
 * postgres_sink.h: what the postgres-sink offers beyond its ops table
 * (postgres_sink_ops, found through the registry as "postgres-sink").
 */
#ifndef SK_POSTGRES_SINK_H
#define SK_POSTGRES_SINK_H

#include <stdint.h>

struct sk_sink;

/*
 * Statements sent to the server since open (every round trip counts: BEGIN,
 * COMMIT, each bulk statement). For tests and debug logs: it shows that a
 * batch goes in a handful of statements, not one per record. 0 if not open.
 */
uint64_t postgres_sink_round_trips(const struct sk_sink *self);

/* The sink's connection (libpq's PGconn), NULL if none. For tests only. */
struct pg_conn;
struct pg_conn *postgres_sink_connection(const struct sk_sink *self);

#endif
