/*
 * skt_ss12000.c: the SS 12000 test server as tests drive it. See skt_ss12000.h.
 */
#include "skt_ss12000.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "sk_test.h"
#include "util.h"

#define SERVER SK_SOURCE_DIR "/tests/fixtures/ss12000_server.py"

/* A uniform draw in [lo, hi] from the trial's generator. */
int skt_draw(unsigned *rng, int lo, int hi)
{
    return lo + (int)(rand_r(rng) % (unsigned)(hi - lo + 1));
}

int skt_ss_start(const char *dir, int students, unsigned seed, pid_t *pid)
{
    char *log = skt_fmt("%s/server.log", dir);
    char *st = skt_fmt("%d", students), *sd = skt_fmt("%u", seed);
    char *argv[] = {"python3",    SERVER, "--port", "0", "--base", "/v2.0",
                    "--students", st,     "--seed", sd,  NULL};
    *pid = skt_spawn(argv, log);
    /* data generation: about 1 s per 10 000 records */
    int port = skt_listening_port(*pid, log, 120000, "the test server");
    free(st);
    free(sd);
    free(log);
    return port;
}

void skt_ss_ctl(int port, const char *op, const char *body)
{
    char *url = skt_fmt("http://127.0.0.1:%d/_control/%s", port, op);
    char *out = NULL;
    long st = skt_http("POST", url, body, 120, &out);
    cr_assert(st == 200 || st == 201, "POST /_control/%s %s: %ld %s", op, body, st, out);
    free(out);
    free(url);
}

/* GET /_control/<what> as JSON (caller deletes it). */
static cJSON *control_get(int port, const char *what)
{
    char *url = skt_fmt("http://127.0.0.1:%d/_control/%s", port, what);
    char *out = NULL;
    long st = skt_http("GET", url, NULL, 120, &out);
    cr_assert_eq(st, 200, "GET /_control/%s: %ld", what, st);
    cJSON *d = cJSON_Parse(out);
    cr_assert_not_null(d, "GET /_control/%s: not JSON", what);
    free(out);
    free(url);
    return d;
}

/* The server's current data: {collection: [entities]}. */
cJSON *skt_ss_dump(int port)
{
    return control_get(port, "dump");
}

size_t skt_ss_dump_total(const cJSON *d)
{
    size_t n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, d) n += (size_t)cJSON_GetArraySize(c);
    return n;
}

/* A random entity id of a collection in the dump (NULL if it is empty). */
static const char *pick_id(const cJSON *dump, const char *coll, unsigned *rng)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(dump, coll);
    int n = arr ? cJSON_GetArraySize(arr) : 0;
    if (n == 0)
        return NULL;
    const cJSON *e = cJSON_GetArrayItem(arr, skt_draw(rng, 0, n - 1));
    return cJSON_GetObjectItemCaseSensitive(e, "id")->valuestring;
}

static void update(int port, const char *coll, const char *id, const char *field, const char *value)
{
    char *body = skt_fmt("{\"collection\":\"%s\",\"id\":\"%s\",\"patch\":{\"%s\":\"%s\"}}", coll,
                         id, field, value);
    skt_ss_ctl(port, "update", body);
    free(body);
}

/*
 * One wave of changes, the way a SIS makes them: updates (bumping
 * meta.modified) of persons, groups, activities and rooms, new versions of
 * records the previous wave changed, deletes (at most 4 per type a wave,
 * under the delete guard's thresholds), new persons, a membership change.
 * Returns the number of changes; keeps the ids it updated in *prev.
 */
int skt_ss_mutate(int port, int wave, unsigned *rng, char prev[][37], int *n_prev)
{
    cJSON *dump = skt_ss_dump(port);
    int changes = 0;
    static const struct {
        const char *coll, *field;
        int n;
    } upd[] = {{"persons", "givenName", 20},
               {"groups", "displayName", 8},
               {"activities", "displayName", 6},
               {"rooms", "displayName", 4}};
    char keep[64][37];
    int n_keep = 0;
    for (size_t u = 0; u < sizeof(upd) / sizeof(upd[0]); u++) {
        for (int k = 0; k < upd[u].n; k++) {
            const char *id = pick_id(dump, upd[u].coll, rng);
            if (!id)
                break;
            char *v = skt_fmt("Ändrad %d.%d", wave, k);
            update(port, upd[u].coll, id, upd[u].field, v);
            free(v);
            changes++;
            if (u == 0 && n_keep < 64)
                snprintf(keep[n_keep++], 37, "%s", id);
        }
    }
    /* newer versions of what the previous wave changed */
    for (int k = 0; k < *n_prev; k++) {
        char *v = skt_fmt("Ändrad igen %d.%d", wave, k);
        char *body = skt_fmt("{\"collection\":\"persons\",\"id\":\"%s\",\"patch\":{\"givenName\":"
                             "\"%s\"}}",
                             prev[k], v);
        char *url = skt_fmt("http://127.0.0.1:%d/_control/update", port);
        long st = skt_http("POST", url, body, 120, NULL); /* 404 if an earlier wave deleted it */
        cr_assert(st == 200 || st == 404, "update: %ld", st);
        changes += st == 200;
        free(url);
        free(body);
        free(v);
    }
    static const char *const del[] = {"persons", "rooms", "calendarEvents", "attendances"};
    for (size_t d = 0; d < sizeof(del) / sizeof(del[0]); d++) {
        cJSON *fresh = skt_ss_dump(port); /* not one deleted twice */
        for (int k = 0; k < 4; k++) {
            const char *id = pick_id(fresh, del[d], rng);
            if (!id)
                break;
            char *body = skt_fmt("{\"collection\":\"%s\",\"id\":\"%s\"}", del[d], id);
            char *url = skt_fmt("http://127.0.0.1:%d/_control/delete", port);
            long st = skt_http("POST", url, body, 120, NULL);
            cr_assert(st == 200 || st == 404, "delete: %ld", st);
            changes += st == 200;
            free(url);
            free(body);
        }
        cJSON_Delete(fresh);
    }
    char created[37] = "";
    for (int k = 0; k < 3; k++) {
        sk_uuid_random(created);
        char *body = skt_fmt("{\"collection\":\"persons\",\"entity\":{\"id\":\"%s\","
                             "\"givenName\":\"Ny %d.%d\",\"familyName\":\"Elev\"}}",
                             created, wave, k);
        skt_ss_ctl(port, "create", body);
        free(body);
        changes++;
    }
    const char *group = pick_id(dump, "groups", rng);
    if (group) {
        char *body =
            skt_fmt("{\"group\":\"%s\",\"person\":\"%s\",\"action\":\"add\"}", group, created);
        skt_ss_ctl(port, "membership", body);
        free(body);
        changes++;
    }
    memcpy(prev, keep, sizeof(keep[0]) * (size_t)n_keep);
    *n_prev = n_keep > 10 ? 10 : n_keep;
    cJSON_Delete(dump);
    return changes;
}

/* GET /_control/stats?since=seq (caller deletes it). */
static cJSON *stats_since(int port, long seq)
{
    char *what = skt_fmt("stats?since=%ld", seq);
    cJSON *stats = control_get(port, what);
    free(what);
    return stats;
}

long skt_ss_last_seq(int port)
{
    cJSON *stats = stats_since(port, 0x7fffffffL);
    const cJSON *total = cJSON_GetObjectItemCaseSensitive(stats, "total");
    cr_assert(cJSON_IsNumber(total), "stats without a total");
    long seq = (long)total->valuedouble;
    cJSON_Delete(stats);
    return seq;
}

static bool has_param(const cJSON *req, const char *name)
{
    const cJSON *kv;
    cJSON_ArrayForEach(kv, cJSON_GetObjectItemCaseSensitive(req, "params"))
    {
        const cJSON *k = cJSON_GetArrayItem(kv, 0);
        if (cJSON_IsString(k) && strcmp(k->valuestring, name) == 0)
            return true;
    }
    return false;
}

int skt_ss_full_listings(int port, long seq, char *first, size_t first_size)
{
    cJSON *stats = stats_since(port, seq);
    int n = 0;
    first[0] = '\0';
    const cJSON *req;
    cJSON_ArrayForEach(req, cJSON_GetObjectItemCaseSensitive(stats, "requests"))
    {
        const cJSON *method = cJSON_GetObjectItemCaseSensitive(req, "method");
        const cJSON *path = cJSON_GetObjectItemCaseSensitive(req, "path");
        if (!cJSON_IsString(method) || strcmp(method->valuestring, "GET") != 0 ||
            !cJSON_IsString(path) || strncmp(path->valuestring, "/v2.0/", 6) != 0)
            continue;
        const char *coll = path->valuestring + 6;
        /* a collection, not one entity (/persons/<id>) nor the deletions */
        if (strchr(coll, '/') || strcmp(coll, "deletedEntities") == 0 || !*coll)
            continue;
        if (has_param(req, "pageToken") || has_param(req, "meta.modified.after") ||
            has_param(req, "meta.created.after"))
            continue;
        if (!n++) {
            const cJSON *q = cJSON_GetObjectItemCaseSensitive(req, "query");
            snprintf(first, first_size, "%s?%s", path->valuestring,
                     cJSON_IsString(q) ? q->valuestring : "");
        }
    }
    cJSON_Delete(stats);
    return n;
}
