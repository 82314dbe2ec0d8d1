/*
 * skt_ss12000.h: the SS 12000 test server (tests/fixtures/ss12000_server.py,
 * docs/ss12000-test-server.md) as the crash and restart tests drive it:
 * start it, change its data the way a SIS does, read its data and its
 * request log. Every helper fails the calling test (cr_assert) on error.
 */
#ifndef SKT_SS12000_H
#define SKT_SS12000_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

/*
 * Starts the server with a generated dataset of `students` under base
 * /v2.0, its log in <dir>/server.log; *pid gets its pid (it dies with the
 * test process). Returns its port once it listens.
 */
int skt_ss_start(const char *dir, int students, unsigned seed, pid_t *pid);

/* POST /_control/<op> with body; the answer must be 200 or 201. */
void skt_ss_ctl(int port, const char *op, const char *body);

/* The server's current data: {collection: [entities]} (caller deletes it). */
cJSON *skt_ss_dump(int port);
/* Entities over every collection of a dump. */
size_t skt_ss_dump_total(const cJSON *dump);

/* A uniform draw in [lo, hi] from a trial's generator. */
int skt_draw(unsigned *rng, int lo, int hi);

/*
 * One wave of changes, the way a SIS makes them: updates (bumping
 * meta.modified) of persons, groups, activities and rooms, new versions of
 * records the previous wave changed, deletes (at most 4 per type a wave,
 * under the delete guard's thresholds), new persons, a membership change.
 * Returns the number of changes; keeps the ids it updated in prev, their
 * number (at most 10; prev holds 64) in *n_prev.
 */
int skt_ss_mutate(int port, int wave, unsigned *rng, char prev[][37], int *n_prev);

/* The sequence number of the last request the server logged (GET /_control/stats). */
long skt_ss_last_seq(int port);
/*
 * List requests logged after seq that are full listings: the first page of
 * a collection without meta.modified.after or meta.created.after (a delta
 * carries one, a following page a pageToken). Returns how many; the first
 * one's path and query in first.
 */
int skt_ss_full_listings(int port, long seq, char *first, size_t first_size);

#endif
