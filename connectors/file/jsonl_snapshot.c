/*
 * jsonl_snapshot.c: jsonl-source's `mode: snapshot`. Each file is a complete
 * export of its type. A generation of a file (its inode, size, mtime and
 * ctime) is taken only when a later poll sees it unchanged, its mtime lies
 * settle_time back and its last byte is a newline: a file still being
 * written, or cut off, is not read. Its lines become records as in
 * incremental mode; once all are read, the ids live in the type's Kafka
 * topic that the file no longer holds become deletions, published at once or
 * held by the delete guard until an operator releases them. The previous
 * snapshot's ids are not kept: they are the ids live in Kafka (this source
 * must be the only writer of its types' topics).
 *
 * An id on several lines: the line the sinks keep (the newest meta.modified)
 * is published again last when it was not the last (republish_kept).
 *
 * Must never: delete anything for a file it could not read whole (a line
 * without a valid id, a file that changed while it was read), or publish
 * held deletions before a release.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jsonl_internal.h"
#include "log.h"
#include "model.h"
#include "util.h"

/* One line's id, its meta.modified (INT64_MIN if none) and where the line is. */
struct id_line {
    char id[37]; /* first: the lookups compare an id with it */
    uint32_t len;
    int64_t at, modified;
};

/* The ids of one file, sorted, in file order for each id, for the lookups of
 * the live-id walk. */
struct idset {
    struct id_line *v;
    size_t n, cap;
};

static int id_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

static int line_cmp(const void *a, const void *b)
{
    const struct id_line *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : (x->at > y->at) - (x->at < y->at);
}

static struct id_line *idset_add(struct idset *s, const char *id)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->v = sk_realloc(s->v, s->cap * sizeof(*s->v));
    }
    struct id_line *l = &s->v[s->n++];
    snprintf(l->id, sizeof(l->id), "%s", id);
    return l;
}

/* Adds the id of the line at file offset `at` to the set; false if the line has no valid id. */
static bool scan_line(const struct sk_entity *e, const char *line, size_t len, int64_t at,
                      struct idset *s)
{
    uint8_t *value = NULL;
    size_t value_len = 0;
    char id[37];
    int64_t modified_us;
    struct sk_error err = {0};
    if (sk_codec_encode(e, line, len, &value, &value_len, id, &modified_us, &err) != 0)
        return false;
    free(value);
    struct id_line *l = idset_add(s, id);
    l->len = (uint32_t)len;
    l->at = at;
    l->modified = modified_us;
    return true;
}

/*
 * Reads every id of the open file into s, holding at most max_line bytes of
 * a line. 1 if the file holds a line without a valid id or one longer than
 * max_line (both dead-lettered: their ids, and so the deletions, cannot be
 * known), 0, -1 on a read error.
 */
static int scan_ids(const struct jsonl_source *src, const struct jsonl_file *f, int fd,
                    struct idset *s, struct sk_error *err)
{
    int fd2 = dup(fd);
    FILE *in = fd2 < 0 ? NULL : fdopen(fd2, "r");
    if (!in) {
        if (fd2 >= 0)
            close(fd2);
        return sk_error_set(err, SK_ERR_RETRIABLE, "%s: %s", f->path, strerror(errno));
    }
    size_t cap = src->max_line + 2;
    char *line = sk_malloc(cap);
    int rc = 0;
    int64_t at = 0;
    while (fgets(line, (int)(cap < INT_MAX ? cap : INT_MAX), in)) {
        size_t n = strlen(line);
        if (n > 0 && line[n - 1] != '\n' && !feof(in)) {
            int c; /* longer than max_line: skip the rest of it */
            while ((c = getc(in)) != EOF && c != '\n')
                ;
            rc = 1;
            continue;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                         line[n - 1] == '\t'))
            n--;
        if (n > 0 && !scan_line(f->entity, line, n, at, s))
            rc = 1;
        at = ftello(in);
    }
    if (ferror(in))
        rc = sk_error_set(err, SK_ERR_RETRIABLE, "%s: read: %s", f->path, strerror(errno));
    free(line);
    fclose(in);
    qsort(s->v, s->n, sizeof(*s->v), line_cmp);
    return rc;
}

/*
 * Whether st (of the generation's inode) still shows p's generation: size,
 * mtime and ctime, which no writer can put back. A ctime p does not know (a
 * cursor from before it was kept) is taken from st.
 */
static bool same_generation(struct jsonl_pos *p, const struct stat *st)
{
    if (p->size != (int64_t)st->st_size || p->mtime_ns != jsonl_ns(st->st_mtim))
        return false;
    if (p->ctime_ns < 0)
        p->ctime_ns = jsonl_ns(st->st_ctim);
    return p->ctime_ns == jsonl_ns(st->st_ctim);
}

struct gone {
    const struct idset *file;
    struct idset dels; /* live in Kafka, not in the file */
    int64_t live;
};

static void gone_id(void *ctx, const char *id)
{
    struct gone *g = ctx;
    g->live++;
    if (g->file->n && bsearch(id, g->file->v, g->file->n, sizeof(*g->file->v), id_cmp))
        return;
    idset_add(&g->dels, id);
}

/*
 * An id on several lines of one file: a sink keeps the line whose
 * meta.modified is not older than the one it holds (the stale-update guard;
 * the arriving one when either has none), Kafka's compaction the last line.
 * Where they differ, the line the sinks kept is published again after the
 * last, so that a target filled again from the topic gets it too. Returns
 * how many ids were on more than one line.
 */
static size_t republish_kept(const struct jsonl_file *f, int fd, const struct idset *s,
                             struct jsonl_poll *poll)
{
    size_t dups = 0;
    for (size_t i = 0, j; i < s->n; i = j) {
        size_t kept = i;
        for (j = i + 1; j < s->n && strcmp(s->v[j].id, s->v[i].id) == 0; j++) {
            int64_t was = s->v[kept].modified, now = s->v[j].modified;
            if (was == INT64_MIN || now == INT64_MIN || now >= was)
                kept = j;
        }
        dups += j - i > 1;
        if (kept == j - 1)
            continue;
        const struct id_line *l = &s->v[kept];
        char *line = sk_malloc(l->len ? l->len : 1);
        uint8_t *value = NULL;
        size_t value_len = 0;
        char id[37];
        struct sk_error err = {0};
        if (pread(fd, line, l->len, l->at) == (ssize_t)l->len &&
            sk_codec_encode(f->entity, line, l->len, &value, &value_len, id, NULL, &err) == 0)
            sk_batch_add(poll->out, f->entity, id, value, value_len, poll->observed_us);
        free(line);
    }
    return dups;
}

/*
 * The file has been read whole: its deletions are published, or held (unless
 * released). Returns 0, -1 with poll->err.
 */
static int finish(struct jsonl_source *src, const struct jsonl_file *f, int fd, struct jsonl_pos *p,
                  bool released, struct jsonl_poll *poll)
{
    struct idset ids = {0};
    struct gone g = {.file = &ids};
    int rc = scan_ids(src, f, fd, &ids, poll->err);
    struct stat st;
    if (rc >= 0 && (fstat(fd, &st) != 0 || !same_generation(p, &st))) {
        /* Written again between the read and the scan (in place: same
         * inode): what was scanned may be a half-written file. The next
         * poll sees a new generation. */
        sk_warn(src->component, "%s: changed while it was read; no deletions from it", f->path);
        rc = 0;
        goto out;
    }
    size_t dups = rc >= 0 ? republish_kept(f, fd, &ids, poll) : 0;
    if (dups)
        sk_warn(src->component,
                "%s: %zu id(s) on more than one line; the line of the newest meta.modified of "
                "each is the one kept",
                f->path, dups);
    if (rc == 1) {
        sk_warn(src->component,
                "%s: a line without a valid id, or over max_line_size (dead-lettered); no "
                "deletions from this snapshot",
                f->path);
        p->state = SNAP_DONE;
        p->held = 0;
        rc = 0;
        goto out;
    }
    if (rc < 0 || sk_source_live_ids(poll->self, f->entity, gone_id, &g, poll->err) < 0) {
        rc = -1;
        goto out;
    }
    char why[256] = "";
    const struct jsonl_conf *conf = poll->self->conf;
    if (!released && sk_guard_holds(&conf->delete_guard, src->max_fraction, f->entity->collection,
                                    g.dels.n, g.live, why, sizeof(why))) {
        p->state = SNAP_HELD;
        p->held = (int64_t)g.dels.n;
        sk_warn(src->component,
                "%s: delete guard: holding %zu deletion(s) (%s); release with `skolsync release "
                "%s` or POST /api/v1/connectors/%s/release",
                f->path, g.dels.n, why, poll->self->name, poll->self->name);
        goto out;
    }
    for (size_t k = 0; k < g.dels.n; k++)
        sk_batch_add(poll->out, f->entity, g.dels.v[k].id, NULL, 0, poll->observed_us);
    if (g.dels.n)
        sk_info(src->component, "%s: %zu id(s) no longer in the snapshot: %s deletion(s) published",
                f->path, g.dels.n, released ? "released" : "their");
    p->state = SNAP_DONE;
    p->held = 0;
out:
    free(ids.v);
    free(g.dels.v);
    return rc;
}

int jsonl_snapshot_file(struct jsonl_source *src, size_t i, bool released, struct jsonl_poll *poll)
{
    struct jsonl_file *f = &src->files[i];
    struct jsonl_pos *p = &src->pos[i];
    struct stat st;
    char inode[sizeof(p->inode)];
    int fd = jsonl_poll_open(src, f, &st, inode, poll);
    if (fd < 0)
        return fd == -2 ? 0 : -1; /* no file is no snapshot: nothing deleted */
    int64_t mtime_ns = jsonl_ns(st.st_mtim);
    int rc = 0;
    p->known = true;
    if (strcmp(p->inode, inode) != 0 || !same_generation(p, &st)) {
        /* A new generation (or one still changing): taken once it holds still. */
        if (p->state == SNAP_READING)
            sk_warn(src->component, "%s: changed while it was read; waiting for it to settle",
                    f->path);
        *p = (struct jsonl_pos){.offset = 0,
                                .line = 1,
                                .known = true,
                                .size = (int64_t)st.st_size,
                                .mtime_ns = mtime_ns,
                                .ctime_ns = jsonl_ns(st.st_ctim),
                                .state = SNAP_SEEN};
        memcpy(p->inode, inode, sizeof(inode));
        goto out;
    }
    if (p->state == SNAP_SEEN) {
        /* Written moments ago: its writer may only have paused (between two
         * types of an export, a slow query), with the file ending in a
         * newline; taken, it would delete every id still to come. */
        if (poll->observed_us - mtime_ns / 1000 < src->settle_ms * 1000)
            goto out;
        char last = 0;
        if (st.st_size == 0 || pread(fd, &last, 1, st.st_size - 1) != 1 || last != '\n') {
            /* Empty, or cut off after its last newline: not a whole export.
             * Said (hourly): an exporter that never ends its last line would
             * otherwise leave the source idle without a word. */
            if (st.st_size > 0)
                sk_log_limited(&f->cut_log, 3600 * 1000, SK_LOG_WARN, src->component,
                               "%s: does not end with a newline; not taken as a snapshot until "
                               "it does (cut off, or its exporter leaves the last line open)",
                               f->path);
            goto out;
        }
        sk_info(src->component, "%s: a new snapshot (%jd bytes)", f->path, (intmax_t)st.st_size);
        p->state = SNAP_READING;
    }
    if (p->state == SNAP_READING) {
        rc = jsonl_read_lines(src, f, fd, p, poll);
        if (rc == 0)
            rc = finish(src, f, fd, p, false, poll);
    } else if (p->state == SNAP_HELD && released) {
        rc = finish(src, f, fd, p, true, poll);
    }
out:
    close(fd);
    return rc;
}
