/* snapshot.c: see snapshot.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "kafka.h"
#include "snapshot.h"
#include "util.h"

char *sk_snapshot_marker_value(const struct sk_snapshot_marker *m)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "phase", m->phase == SK_SNAPSHOT_BEGIN ? "begin" : "end");
    cJSON_AddStringToObject(o, "snapshot", m->id);
    cJSON_AddStringToObject(o, "source", m->source);
    cJSON_AddNumberToObject(o, "partitions", m->partitions);
    if (m->field[0]) {
        cJSON *w = cJSON_AddObjectToObject(o, "window");
        cJSON_AddStringToObject(w, "field", m->field);
        /* µs as text: a double holds them exactly only up to 2^53 */
        char n[32];
        snprintf(n, sizeof(n), "%lld", (long long)m->from_us);
        cJSON_AddStringToObject(w, "from_us", n);
        snprintf(n, sizeof(n), "%lld", (long long)m->to_us);
        cJSON_AddStringToObject(w, "to_us", n);
    }
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

rd_kafka_headers_t *sk_snapshot_marker_headers(const char *source)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(3);
    rd_kafka_header_add(h, SK_CONTROL_HEADER, -1, "snapshot", -1);
    rd_kafka_header_add(h, "skolsync-source", -1, source, -1);
    rd_kafka_header_add(h, "content-type", -1, "application/json", -1);
    return h;
}

/* A string member of o copied into out (size n); false if absent or too long. */
static bool copy_member(const cJSON *o, const char *name, char *out, size_t n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= n)
        return false;
    memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
    return true;
}

int sk_snapshot_marker_read(const rd_kafka_message_t *m, struct sk_snapshot_marker *out)
{
    char control[32];
    if (sk_kafka_header(m, SK_CONTROL_HEADER, control, sizeof(control)) != 0)
        return 0;
    if (strcmp(control, "snapshot") != 0 || !m->payload)
        return -1;
    return sk_snapshot_marker_parse(m->payload, m->len, out) ? 1 : -1;
}

bool sk_snapshot_marker_parse(const void *value, size_t len, struct sk_snapshot_marker *out)
{
    cJSON *o = cJSON_ParseWithLength(value, len);
    memset(out, 0, sizeof(*out));
    char phase[16];
    const cJSON *parts = o ? cJSON_GetObjectItemCaseSensitive(o, "partitions") : NULL;
    bool ok = o && copy_member(o, "phase", phase, sizeof(phase)) &&
              copy_member(o, "snapshot", out->id, sizeof(out->id)) &&
              copy_member(o, "source", out->source, sizeof(out->source)) && cJSON_IsNumber(parts) &&
              parts->valuedouble >= 1 && parts->valuedouble <= SK_SNAPSHOT_MAX_PARTITIONS &&
              (strcmp(phase, "begin") == 0 || strcmp(phase, "end") == 0);
    const cJSON *w = ok ? cJSON_GetObjectItemCaseSensitive(o, "window") : NULL;
    if (w) {
        char from[32], to[32];
        ok = copy_member(w, "field", out->field, sizeof(out->field)) && out->field[0] &&
             copy_member(w, "from_us", from, sizeof(from)) &&
             copy_member(w, "to_us", to, sizeof(to));
        char *end1 = NULL, *end2 = NULL;
        if (ok) {
            out->from_us = strtoll(from, &end1, 10);
            out->to_us = strtoll(to, &end2, 10);
            ok = *end1 == '\0' && *end2 == '\0' && end1 != from && end2 != to;
        }
    }
    if (ok) {
        out->phase = strcmp(phase, "begin") == 0 ? SK_SNAPSHOT_BEGIN : SK_SNAPSHOT_END;
        out->partitions = (int32_t)parts->valuedouble;
    }
    cJSON_Delete(o);
    return ok;
}

/* ---- the sink's side ------------------------------------------------------ */

static bool bit(const uint8_t *set, int32_t p)
{
    return set[p / 8] & (1u << (p % 8));
}

static void set_bit(uint8_t *set, int32_t p)
{
    set[p / 8] |= (uint8_t)(1u << (p % 8));
}

void sk_snapshot_track_reset(struct sk_snapshot_track *t)
{
    struct sk_idset keys = t->keys;
    sk_idset_clear(&keys);
    memset(t, 0, sizeof(*t));
    t->keys = keys;
}

void sk_snapshot_track_free(struct sk_snapshot_track *t)
{
    sk_idset_free(&t->keys);
    memset(t, 0, sizeof(*t));
}

void sk_snapshot_track_begin(struct sk_snapshot_track *t, const struct sk_snapshot_marker *m,
                             int32_t p)
{
    if (p < 0 || p >= m->partitions)
        return;
    if (!t->active || strcmp(t->marker.id, m->id) != 0) {
        sk_snapshot_track_reset(t);
        t->active = true;
        t->marker = *m;
    }
    if (!bit(t->begun, p)) {
        set_bit(t->begun, p);
        t->n_begun++;
    }
}

void sk_snapshot_track_record(struct sk_snapshot_track *t, int32_t p, const char *key,
                              const char *source)
{
    if (!t->active || p < 0 || p >= SK_SNAPSHOT_MAX_PARTITIONS || !bit(t->begun, p))
        return;
    if (source && strcmp(source, t->marker.source) != 0)
        t->other_source = true;
    struct sk_idkey k;
    if (sk_idkey_parse(key, &k)) /* a key that is no UUID: nothing a sweep could name */
        sk_idset_add_key(&t->keys, &k);
}

bool sk_snapshot_track_end(struct sk_snapshot_track *t, const struct sk_snapshot_marker *m,
                           int32_t p)
{
    if (!t->active || strcmp(t->marker.id, m->id) != 0 || p < 0 || p >= m->partitions ||
        !bit(t->begun, p))
        return false;
    if (!bit(t->ended, p)) {
        set_bit(t->ended, p);
        t->n_ended++;
    }
    return t->n_begun == t->marker.partitions && t->n_ended == t->marker.partitions;
}
