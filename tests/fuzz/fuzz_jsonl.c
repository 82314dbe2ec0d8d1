/*
 * fuzz_jsonl.c: file content -> the jsonl-source connector, driven through
 * its ops table as the source driver drives it: open on a single
 * <collection>.jsonl file, then poll from each returned cursor until `more`
 * is false, with a batch size of 1-8 lines.
 *
 * Input: byte 0 picks the batch size, byte 1 the entity type, the rest is the
 * file. Properties (jsonl_source.c): every complete non-blank line becomes
 * exactly one record (the codec's bytes, its id as key) or one bad input
 * (the line's bytes, "<file>:<line>"), in order across polls; no poll
 * returns more than batch_size of them; an incomplete last line is not
 * consumed unless it is a whole JSON object; a poll from the last cursor
 * returns nothing.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "connector.h"
#include "model.h"
#include "util.h"

extern const struct sk_source_ops jsonl_source_ops;

/* The core's source services, which this target does not link (no daemon):
 * no Kafka behind the source, nothing held, nothing released. */
void sk_source_set_held(struct sk_source *self, uint64_t held) {}
bool sk_source_take_release(struct sk_source *self)
{
    return false;
}
void sk_source_count_incomplete(struct sk_source *self, const struct sk_entity *e) {}
int sk_source_live_ids(struct sk_source *self, const struct sk_entity *e,
                       void (*fn)(void *ctx, const char *id), void *ctx, struct sk_error *err)
{
    return 0; /* an empty topic */
}

static char dir[64];

static void remove_scratch(void)
{
    rmdir(dir); /* each input's file is unlinked after it */
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    snprintf(dir, sizeof(dir), "%s/sk-fuzz-jsonl-XXXXXX",
             access("/dev/shm", W_OK) ? "/tmp" : "/dev/shm");
    if (!mkdtemp(dir))
        abort();
    atexit(remove_scratch);
    return 0;
}

/* One complete, non-blank line as jsonl_source.c sees it (one trailing \r cut). */
struct line {
    const char *text;
    size_t len;
    long number; /* 1-based */
};

static size_t split_lines(const uint8_t *p, size_t n, struct line *out)
{
    size_t count = 0, start = 0;
    long number = 1;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\n')
            continue;
        size_t end = i;
        if (end > start && p[end - 1] == '\r')
            end--;
        for (size_t k = start; k < end; k++) {
            if (p[k] != ' ' && p[k] != '\t' && p[k] != '\r') {
                out[count++] = (struct line){(const char *)p + start, end - start, number};
                break;
            }
        }
        start = i + 1;
        number++;
    }
    /* after the last newline: a line once it is a whole JSON object */
    const char *tail = (const char *)p + start, *end = NULL;
    cJSON *obj = start < n && p[n - 1] == '}'
                     ? cJSON_ParseWithLengthOpts(tail, n - start, &end, false)
                     : NULL;
    if (cJSON_IsObject(obj) && end == (const char *)p + n)
        out[count++] = (struct line){tail, n - start, number};
    cJSON_Delete(obj);
    return count;
}

/*
 * The lines a poll consumed, in order, against what it returned: each line
 * the codec accepts is the next record (same key and bytes), each it rejects
 * the next bad input (the line's bytes, "<file>:<line>").
 */
static void check_batch(const struct sk_entity *e, const struct line *lines, size_t n,
                        const struct sk_batch *b)
{
    size_t r = 0, k = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t *value = NULL;
        size_t value_len = 0;
        char id[37];
        struct sk_error err = {0};
        if (sk_codec_encode(e, lines[i].text, lines[i].len, &value, &value_len, id, NULL, &err) ==
            0) {
            if (r >= b->n || strcmp(b->recs[r].key, id) != 0 || b->recs[r].value_len != value_len ||
                memcmp(b->recs[r].value, value, value_len) != 0) {
                fprintf(stderr, "line %ld: not the next record\n", lines[i].number);
                abort();
            }
            r++;
        } else {
            char where[320];
            snprintf(where, sizeof(where), "%s.jsonl:%ld", e->collection, lines[i].number);
            if (k >= b->n_bad || b->bad[k].raw_len != lines[i].len ||
                memcmp(b->bad[k].raw, lines[i].text, lines[i].len) != 0 ||
                strcmp(b->bad[k].where, where) != 0) {
                fprintf(stderr, "line %ld: not the next bad input\n", lines[i].number);
                abort();
            }
            k++;
        }
        free(value);
    }
    if (r != b->n || k != b->n_bad) {
        fprintf(stderr, "poll returned %zu records + %zu bad for %zu lines\n", b->n, b->n_bad, n);
        abort();
    }
}

static void copy_cursor(struct sk_cursor *dst, const struct sk_batch *b)
{
    if (!b->has_cursor)
        return;
    free(dst->data);
    dst->len = b->cursor.len;
    dst->data = sk_malloc(dst->len ? dst->len : 1);
    memcpy(dst->data, b->cursor.data, dst->len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int batch_size = 1 + data[0] % 8;
    const struct sk_entity *e = sk_entities[data[1] % SK_ENTITY_COUNT];
    data += 2;
    size -= 2;

    char path[128];
    snprintf(path, sizeof(path), "%s/%s.jsonl", dir, e->collection);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();

    /* The conf as the core fills it: from YAML through the option table. */
    char yaml[256];
    snprintf(yaml, sizeof(yaml), "path: %s\nbatch_size: %d\n", path, batch_size);
    struct sk_config_errors errs = {0};
    struct sk_cnode *root = sk_config_load_string(yaml, strlen(yaml), "fuzz.yaml", &errs);
    struct sk_source src = {.ops = &jsonl_source_ops, .name = "fuzz"};
    src.conf = sk_calloc(1, jsonl_source_ops.conf_size);
    if (!root || sk_options_apply(jsonl_source_ops.options, root, src.conf, &errs) != 0)
        abort();
    sk_cnode_free(root);
    sk_config_errors_free(&errs);

    struct sk_error err = {0};
    if (jsonl_source_ops.open(&src, &err) != 0) {
        fprintf(stderr, "open: %s\n", err.msg);
        abort();
    }
    struct line *lines = sk_calloc(size / 2 + 1, sizeof(*lines));
    size_t want = split_lines(data, size, lines), got = 0;
    struct sk_cursor cursor = {0};
    struct sk_batch batch = {0};
    for (size_t polls = 0;; polls++) {
        if (polls > want + 1) {
            fprintf(stderr, "no progress after %zu polls\n", polls);
            abort();
        }
        sk_batch_reset(&batch);
        if (jsonl_source_ops.poll(&src, &cursor, &batch, &err) != 0) {
            fprintf(stderr, "poll: %s\n", err.msg);
            abort();
        }
        size_t n = batch.n + batch.n_bad;
        if (n > (size_t)batch_size) {
            fprintf(stderr, "poll returned %zu lines, batch_size %d\n", n, batch_size);
            abort();
        }
        check_batch(e, lines + got, n, &batch);
        got += n;
        copy_cursor(&cursor, &batch);
        if (!batch.more)
            break;
    }
    if (got != want) {
        fprintf(stderr, "%zu records + bad inputs for %zu non-blank lines\n", got, want);
        abort();
    }
    /* Nothing new: a poll from the final cursor returns nothing and no cursor. */
    sk_batch_reset(&batch);
    if (jsonl_source_ops.poll(&src, &cursor, &batch, &err) != 0 || batch.n || batch.n_bad ||
        batch.more || batch.has_cursor) {
        fprintf(stderr, "a poll after the end returned something\n");
        abort();
    }
    sk_batch_free(&batch);
    free(cursor.data);
    free(lines);
    jsonl_source_ops.close(&src);
    sk_options_free(jsonl_source_ops.options, src.conf);
    free(src.conf);
    unlink(path);
    return 0;
}
