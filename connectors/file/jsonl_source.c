/*
 * jsonl_source.c: the jsonl-source connector. Reads SS 12000 entities, one
 * JSON object per line, from one file or from a directory holding a
 * `<collection>.jsonl` file per entity type, and turns each line into a record.
 * The cursor (skolsync.v1.JsonlCursor) keeps, per file, the byte offset and
 * number of the first unread line, the file's "dev:ino" and a fingerprint of
 * what was read (its first bytes and the bytes before the offset).
 *
 * Rotation: a file renamed away and created anew (other inode), truncated
 * (shorter than the offset) or truncated and written again in place, even
 * past the old offset (copytruncate: the fingerprint no longer matches), or
 * written since it was read to its end without growing (its ctime: copied
 * over in place to the same size), is read again from its start. Not
 * noticed: an edit in place in the middle of a large file that also grows it
 * and leaves the first 64 KiB and the 4 KiB before the offset as they were
 * (write a new file and rename it over the old one instead).
 * In a directory only regular files are read, and a symbolic link only when
 * it points inside the directory (follow_symlinks: true allows any).
 * mode: snapshot (each complete file the whole truth): jsonl_snapshot.c.
 *
 * Owns: reading files forward from a cursor. Must never: consume an incomplete
 * last line (its writer may still be writing it; one that is a whole JSON
 * object is complete, its exporter ends the file without a newline), re-read a file from its
 * start unless it was replaced or truncated, keep state between polls that the
 * cursor does not hold but an operator's release (a poll must be repeatable from any cursor it
 * returned, connector.h), or know anything about Kafka.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "connector.h"
#include "log.h"
#include "model.h"
#include "jsonl_internal.h"
#include "util.h"

#define JSONL_SUFFIX ".jsonl"
#define READ_CHUNK (64 * 1024)
/* How much of a file the fingerprint covers: its head, and the tail before the offset. */
#define HEAD_BYTES (64 * 1024)
#define TAIL_BYTES (4 * 1024)

/* What of an over-long line goes to the dead-letter topic. */
#define LONG_LINE_KEPT (64 * 1024)

static const struct sk_option jsonl_options[] = {
    {.name = "path",
     .type = SK_OPT_STRING,
     .required = true,
     .help = "a .jsonl file, or a directory of <collection>.jsonl files (persons.jsonl, ...)",
     .offset = offsetof(struct jsonl_conf, path)},
    {.name = "entity",
     .type = SK_OPT_STRING,
     .help = "entity type of a single file (Person or persons); default: from its name "
             "<collection>.jsonl",
     .offset = offsetof(struct jsonl_conf, entity)},
    {.name = "batch_size",
     .type = SK_OPT_INT,
     .def = "1000",
     .help = "most lines (records and malformed lines) returned by one poll",
     .offset = offsetof(struct jsonl_conf, batch_size),
     .min = 1,
     .max = 1000000},
    {.name = "max_line_size",
     .type = SK_OPT_SIZE,
     .def = "16MiB",
     .help = "longest line read into memory; a longer one goes to the dead-letter topic, cut "
             "to its first 64 KiB",
     .offset = offsetof(struct jsonl_conf, max_line_size),
     .min = 4096,
     .max = 1LL << 30},
    {.name = "follow_symlinks",
     .type = SK_OPT_BOOL,
     .def = "false",
     .help = "in a directory, also read <collection>.jsonl links that point outside it",
     .offset = offsetof(struct jsonl_conf, follow_symlinks)},
    {.name = "validation",
     .type = SK_OPT_ENUM,
     .def = "lenient",
     .choices = SK_VALIDATION_CHOICES,
     .help = SK_VALIDATION_HELP,
     .offset = offsetof(struct jsonl_conf, validation)},
    {.name = "mode",
     .type = SK_OPT_ENUM,
     .def = "incremental",
     .choices = ((const char *const[]){"incremental", "snapshot", NULL}),
     .help = "incremental: lines are changes, followed as files grow; snapshot: each complete "
             "file is the whole truth for its type, ids missing from it are deleted",
     .offset = offsetof(struct jsonl_conf, mode)},
    {.name = "settle_time",
     .type = SK_OPT_DURATION,
     .def = "30s",
     .help = "mode: snapshot: how long a file must have been left unwritten (its mtime) before "
             "it is taken; a writer that pauses in the middle of an export for less is waited for",
     .offset = offsetof(struct jsonl_conf, settle_time),
     .min = 0,
     .max = 86400000},
    {.name = "delete_guard",
     .type = SK_OPT_GROUP,
     .sub = sk_guard_options,
     .help = "mode: snapshot: hold mass deletions until an operator releases them",
     .offset = offsetof(struct jsonl_conf, delete_guard)},
    {.name = NULL},
};

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Adds a file to read; copies name and path. */
static void add_file(struct jsonl_source *src, const char *name, const char *path,
                     const struct sk_entity *entity)
{
    src->files = sk_realloc(src->files, (src->n_files + 1) * sizeof(*src->files));
    src->files[src->n_files++] =
        (struct jsonl_file){.name = sk_strdup(name), .path = sk_strdup(path), .entity = entity};
}

/* "persons.jsonl" -> the persons entity, or NULL. */
static const struct sk_entity *entity_of_file_name(const char *name)
{
    if (!has_suffix(name, JSONL_SUFFIX))
        return NULL;
    size_t n = strlen(name) - strlen(JSONL_SUFFIX);
    char collection[256];
    if (n == 0 || n >= sizeof(collection))
        return NULL;
    memcpy(collection, name, n);
    collection[n] = '\0';
    return sk_entity_by_collection(collection);
}

/*
 * Directory mode: every collection's file, in the entity table's dependency
 * order (organisations first), whether it exists yet or not: a file that
 * appears later is read from then on. Names not read: warn_unread_names,
 * at each poll that finds the directory's names changed.
 */
static void add_dir_files(struct jsonl_source *src, const char *dir)
{
    size_t existing = 0;
    for (size_t i = 0; sk_entities[i]; i++) {
        char *name = sk_asprintf("%s%s", sk_entities[i]->collection, JSONL_SUFFIX);
        char *path = sk_asprintf("%s/%s", dir, name);
        if (access(path, F_OK) == 0) {
            existing++;
            src->writes |= 1u << i;
        }
        add_file(src, name, path, sk_entities[i]);
        free(name);
        free(path);
    }
    if (existing == 0)
        sk_warn(src->component, "%s: no <collection>.jsonl files yet", dir);
}

/*
 * The collection a file name not read seems meant for: its part before the
 * first dot, in any case ("Persons.jsonl", "persons.json",
 * "persons.jsonl.gz", "PERSONS.JSONL"), or NULL.
 */
static const struct sk_entity *meant_for(const char *name)
{
    char collection[64];
    size_t n = strcspn(name, ".");
    if (n == 0 || n >= sizeof(collection) || entity_of_file_name(name))
        return NULL;
    for (size_t i = 0; i < n; i++)
        collection[i] = (char)tolower((unsigned char)name[i]);
    collection[n] = '\0';
    return sk_entity_by_collection(collection);
}

/*
 * Directory mode: says which files there are not read though they look like
 * an export (a name in another case, another suffix, compressed, a *.jsonl
 * of no collection). Hidden files are left out: rsync's temporary
 * `.persons.jsonl.XXXXXX` becomes persons.jsonl by a rename.
 */
static void warn_unread_names(struct jsonl_source *src, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const struct sk_entity *e = de->d_name[0] == '.' ? NULL : meant_for(de->d_name);
        if (e)
            sk_warn(src->component,
                    "%s/%s: not read: the file of %s is %s%s (that name, lower "
                    "case, uncompressed)",
                    dir, de->d_name, e->name, e->collection, JSONL_SUFFIX);
        else if (de->d_name[0] != '.' && has_suffix(de->d_name, JSONL_SUFFIX) &&
                 !entity_of_file_name(de->d_name))
            sk_warn(src->component,
                    "%s/%s: not an SS 12000 collection (expected <collection>.jsonl, "
                    "e.g. persons.jsonl); ignored",
                    dir, de->d_name);
    }
    closedir(d);
}

static void jsonl_close(struct sk_source *self)
{
    struct jsonl_source *src = self->priv;
    if (!src)
        return;
    for (size_t i = 0; i < src->n_files; i++) {
        free(src->files[i].name);
        free(src->files[i].path);
    }
    free(src->files);
    free(src->dir_real);
    free(src->pos);
    free(src->fp);
    free(src->fp_ptrs);
    free(src->buf);
    free(src);
    self->priv = NULL;
}

/* Sets self->priv (freed by jsonl_close, also when open fails). */
static int jsonl_open(struct sk_source *self, struct sk_error *err)
{
    const struct jsonl_conf *conf = self->conf;
    struct jsonl_source *src = sk_calloc(1, sizeof(*src));
    self->priv = src;
    src->component = self->name ? self->name : "jsonl-source";
    src->batch_size = (size_t)conf->batch_size; /* defaults and bounds: the option table */
    src->max_line = (size_t)conf->max_line_size;
    src->snapshot = conf->mode && strcmp(conf->mode, "snapshot") == 0;
    src->settle_ms = conf->settle_time;
    if (sk_guard_fraction(&conf->delete_guard, &src->max_fraction, err))
        goto fail;

    struct stat st;
    if (!conf->path || stat(conf->path, &st) < 0) {
        sk_error_set(err, SK_ERR_FATAL, "path %s: %s", conf->path ? conf->path : "(none)",
                     conf->path ? strerror(errno) : "required");
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        if (conf->entity) {
            sk_error_set(err, SK_ERR_FATAL,
                         "entity: applies to a single file; %s is a directory, whose file "
                         "names give the entity types",
                         conf->path);
            goto fail;
        }
        add_dir_files(src, conf->path);
        src->dir_real = realpath(conf->path, NULL);
        src->follow_symlinks = conf->follow_symlinks;
        if (!src->dir_real) {
            sk_error_set(err, SK_ERR_FATAL, "path %s: %s", conf->path, strerror(errno));
            goto fail;
        }
    } else if (S_ISREG(st.st_mode)) {
        const struct sk_entity *e;
        if (conf->entity) {
            e = sk_entity_by_name(conf->entity);
            if (!e)
                e = sk_entity_by_collection(conf->entity);
            if (!e) {
                sk_error_set(err, SK_ERR_FATAL,
                             "entity: unknown entity type '%s' (expected a name such as Person "
                             "or a collection such as persons)",
                             conf->entity);
                goto fail;
            }
        } else {
            e = entity_of_file_name(base_name(conf->path));
            if (!e) {
                sk_error_set(err, SK_ERR_FATAL,
                             "path %s: the file name does not name a collection "
                             "(<collection>.jsonl, e.g. persons.jsonl); set entity",
                             conf->path);
                goto fail;
            }
        }
        add_file(src, base_name(conf->path), conf->path, e);
        src->writes = 1u << sk_entity_index(e);
    } else {
        sk_error_set(err, SK_ERR_FATAL, "path %s: neither a regular file nor a directory",
                     conf->path);
        goto fail;
    }

    src->pos = sk_calloc(src->n_files, sizeof(*src->pos));
    src->fp = sk_calloc(src->n_files, sizeof(*src->fp));
    src->fp_ptrs = sk_calloc(src->n_files, sizeof(*src->fp_ptrs));
    src->buf_cap = READ_CHUNK;
    src->buf = sk_malloc(src->buf_cap);
    /* the types of the files there are: a directory's file that comes later
     * is read all the same (and its topic readied then) */
    self->writes = src->writes;
    return 0;
fail:
    jsonl_close(self);
    return -1;
}

/* Positions from the cursor; files it does not name start at their beginning. */
static int load_cursor(struct jsonl_source *src, const struct sk_cursor *cursor,
                       struct sk_error *err)
{
    for (size_t i = 0; i < src->n_files; i++)
        src->pos[i] =
            (struct jsonl_pos){.offset = 0, .line = 1, .size = -1, .mtime_ns = -1, .ctime_ns = -1};
    if (!cursor || !cursor->data || cursor->len == 0)
        return 0;
    Skolsync__V1__JsonlCursor *c =
        skolsync__v1__jsonl_cursor__unpack(NULL, cursor->len, cursor->data);
    if (!c)
        return sk_error_set(err, SK_ERR_FATAL,
                            "the stored cursor is not a skolsync.v1.JsonlCursor (%zu bytes); "
                            "reset the cursor",
                            cursor->len);
    for (size_t k = 0; k < c->n_files; k++) {
        const Skolsync__V1__JsonlCursor__FilePos *fp = c->files[k];
        for (size_t i = 0; fp->file && i < src->n_files; i++) {
            if (strcmp(fp->file, src->files[i].name) != 0)
                continue;
            struct jsonl_pos *p = &src->pos[i];
            p->known = true;
            p->offset = fp->has_offset && fp->offset > 0 ? fp->offset : 0;
            p->line = fp->has_line && fp->line > 0 ? fp->line : 1;
            snprintf(p->inode, sizeof(p->inode), "%s", fp->inode ? fp->inode : "");
            p->has_print =
                fp->has_head_len && fp->has_head_hash && fp->has_tail_len && fp->has_tail_hash;
            p->head_len = fp->head_len;
            p->head_hash = fp->head_hash;
            p->tail_len = fp->tail_len;
            p->tail_hash = fp->tail_hash;
            p->size = fp->has_size ? fp->size : -1;
            p->mtime_ns = fp->has_mtime_ns ? fp->mtime_ns : -1;
            p->ctime_ns = fp->has_ctime_ns ? fp->ctime_ns : -1;
            p->state = fp->has_snap_state ? (int)fp->snap_state : SNAP_SEEN;
            p->held = fp->has_held ? fp->held : 0;
            break;
        }
    }
    skolsync__v1__jsonl_cursor__free_unpacked(c, NULL);
    return 0;
}

/*
 * Sets the batch's cursor to the positions, unless they are the ones the poll
 * started from (nothing new to store).
 */
static void store_cursor(struct jsonl_source *src, const struct sk_cursor *old,
                         struct sk_batch *out)
{
    Skolsync__V1__JsonlCursor c = SKOLSYNC__V1__JSONL_CURSOR__INIT;
    c.files = src->fp_ptrs;
    for (size_t i = 0; i < src->n_files; i++) {
        const struct jsonl_pos *p = &src->pos[i];
        if (!p->known)
            continue;
        Skolsync__V1__JsonlCursor__FilePos *fp = &src->fp[c.n_files];
        skolsync__v1__jsonl_cursor__file_pos__init(fp);
        fp->file = src->files[i].name;
        fp->has_offset = fp->has_line = true;
        fp->offset = p->offset;
        fp->line = p->line;
        fp->inode = (char *)p->inode;
        if (p->has_print) {
            fp->has_head_len = fp->has_head_hash = fp->has_tail_len = fp->has_tail_hash = true;
            fp->head_len = p->head_len;
            fp->head_hash = p->head_hash;
            fp->tail_len = p->tail_len;
            fp->tail_hash = p->tail_hash;
        }
        fp->has_ctime_ns = p->ctime_ns >= 0;
        fp->ctime_ns = p->ctime_ns;
        if (src->snapshot) {
            fp->has_size = fp->has_mtime_ns = fp->has_snap_state = true;
            fp->size = p->size;
            fp->mtime_ns = p->mtime_ns;
            fp->snap_state = (uint32_t)p->state;
            fp->has_held = p->held > 0;
            fp->held = p->held;
        }
        src->fp_ptrs[c.n_files++] = fp;
    }
    size_t len = skolsync__v1__jsonl_cursor__get_packed_size(&c);
    uint8_t *data = sk_malloc(len);
    skolsync__v1__jsonl_cursor__pack(&c, data);
    if (old && old->data && old->len == len && memcmp(old->data, data, len) == 0) {
        free(data);
        return;
    }
    sk_batch_set_cursor(out, data, len);
}

static bool is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return false;
    return true;
}

/* s[0, n) is one JSON object and ends with its closing brace. */
static bool whole_object(const char *s, size_t n)
{
    if (n == 0 || s[n - 1] != '}')
        return false;
    const char *end = NULL;
    cJSON *obj = cJSON_ParseWithLengthOpts(s, n, &end, false);
    bool whole = cJSON_IsObject(obj) && end == s + n;
    cJSON_Delete(obj);
    return whole;
}

/*
 * One complete line -> a record, or a bad input when the codec rejects it
 * (bad JSON, not an object, missing or invalid id). -1 only for an error
 * that is not about the line.
 */
static int take_line(const struct jsonl_file *f, int64_t line_no, const char *line, size_t len,
                     struct jsonl_poll *poll)
{
    uint8_t *value = NULL;
    size_t value_len = 0;
    char id[37];
    int64_t modified_us;
    struct sk_error e = {0};
    const char *missing = NULL;
    if (sk_codec_encode_checked(f->entity, line, len, &value, &value_len, id, &modified_us,
                                &missing, &e) == 0) {
        if (!missing || !poll->strict) {
            if (missing)
                sk_source_count_incomplete(poll->self, f->entity);
            sk_batch_add(poll->out, f->entity, id, value, value_len, poll->observed_us);
            return 0;
        }
        free(value);
        sk_error_set(&e, SK_ERR_PERMANENT, "%s %s: required field %s missing", f->entity->name, id,
                     missing);
    }
    if (e.cls != SK_ERR_PERMANENT) {
        *poll->err = e;
        return -1;
    }
    char where[320];
    snprintf(where, sizeof(where), "%s:%" PRId64, f->name, line_no);
    sk_batch_add_bad(poll->out, f->entity, NULL, (uint8_t *)sk_strndup(line, len), len, where, &e);
    return 0;
}

/*
 * Reads the complete lines of one open file from p's position while the batch
 * has room, advancing p past each line taken (and past blank lines). Returns
 * 0 at the file's end (an incomplete last line stays unread; a whole JSON
 * object without its newline is taken), 1 when the batch
 * is full and a complete non-blank line is still waiting, -1 on error.
 */
/*
 * The line at file offset `at` is longer than max_line_size: find its end
 * without holding it. Returns the offset just after its '\n', or -1 if the
 * file ends first (the line is not complete yet: it stays unread), -2 on a
 * read error.
 */
static int64_t long_line_end(int fd, int64_t at)
{
    char chunk[64 * 1024];
    for (;;) {
        ssize_t got = pread(fd, chunk, sizeof(chunk), at);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return -2;
        if (got == 0)
            return -1;
        char *nl = memchr(chunk, '\n', (size_t)got);
        if (nl)
            return at + (nl - chunk) + 1;
        at += got;
    }
}

int jsonl_read_lines(struct jsonl_source *src, const struct jsonl_file *f, int fd,
                     struct jsonl_pos *p, struct jsonl_poll *poll)
{
    int64_t base = p->offset; /* file offset of buf[0] */
    size_t len = 0;           /* bytes in buf */
    size_t start = 0;         /* first unconsumed byte in buf */
    size_t scanned = 0;       /* buf[start, scanned) holds no '\n' */
    for (;;) {
        char *nl = memchr(src->buf + scanned, '\n', len - scanned);
        if (!nl) {
            /* Need more bytes: keep the unconsumed tail, read behind it. */
            if (start > 0) {
                memmove(src->buf, src->buf + start, len - start);
                base += (int64_t)start;
                len -= start;
                start = 0;
            }
            scanned = len;
            if (len >= src->max_line) {
                /* Never buffer a line past max_line_size: dead-letter its
                 * start with its position and go on after its end. */
                if (poll->budget == 0)
                    return 1;
                int64_t next = long_line_end(fd, base + (int64_t)len);
                if (next == -2)
                    return sk_error_set(poll->err, SK_ERR_RETRIABLE, "%s: read: %s", f->path,
                                        strerror(errno));
                if (next == -1)
                    return 0;
                size_t kept = len < LONG_LINE_KEPT ? len : LONG_LINE_KEPT;
                struct sk_error e = {0};
                sk_error_set(&e, SK_ERR_PERMANENT,
                             "%s: line of %" PRId64 " bytes, longer than max_line_size (%zu); "
                             "its first %zu bytes kept",
                             f->entity->name, next - 1 - base, src->max_line, kept);
                char where[320];
                snprintf(where, sizeof(where), "%s:%" PRId64, f->name, p->line);
                uint8_t *raw = sk_malloc(kept);
                memcpy(raw, src->buf, kept);
                sk_batch_add_bad(poll->out, f->entity, NULL, raw, kept, where, &e);
                poll->budget--;
                base = p->offset = next;
                p->line++;
                len = start = scanned = 0;
                continue;
            }
            if (len == src->buf_cap) {
                src->buf_cap *= 2;
                src->buf = sk_realloc(src->buf, src->buf_cap);
            }
            ssize_t got = pread(fd, src->buf + len, src->buf_cap - len, base + (int64_t)len);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0)
                return sk_error_set(poll->err, SK_ERR_RETRIABLE, "%s: read: %s", f->path,
                                    strerror(errno));
            if (got == 0) {
                /* The file ends without a newline. A whole JSON object there
                 * is taken: its exporter writes none after the last line (a
                 * writer still at it has not closed the object yet); a
                 * newline after it later is a blank line. Else it waits. */
                if (!whole_object(src->buf, len))
                    return 0;
                if (poll->budget == 0)
                    return 1;
                if (take_line(f, p->line, src->buf, len, poll) < 0)
                    return -1;
                poll->budget--;
                p->offset = base + (int64_t)len;
                p->line++;
                return 0;
            }
            len += (size_t)got;
            continue;
        }
        size_t end = (size_t)(nl - src->buf);
        const char *line = src->buf + start;
        size_t line_len = end - start;
        if (line_len > 0 && line[line_len - 1] == '\r')
            line_len--; /* CRLF files */
        if (!is_blank(line, line_len)) {
            if (poll->budget == 0)
                return 1;
            if (take_line(f, p->line, line, line_len, poll) < 0)
                return -1;
            poll->budget--;
        }
        start = scanned = end + 1;
        p->offset = base + (int64_t)start;
        p->line++;
    }
}

/* FNV-1a 64 of len bytes of fd at off; false if they cannot all be read. */
static bool hash_range(struct jsonl_source *src, int fd, int64_t off, size_t len, uint64_t *out)
{
    uint64_t h = 1469598103934665603ULL;
    size_t done = 0;
    while (done < len) {
        size_t want = len - done < src->buf_cap ? len - done : src->buf_cap;
        ssize_t got = pread(fd, src->buf, want, off + (int64_t)done);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return false;
        for (ssize_t i = 0; i < got; i++)
            h = (h ^ (unsigned char)src->buf[i]) * 1099511628211ULL;
        done += (size_t)got;
    }
    *out = h;
    return true;
}

/* The fingerprint of what lies before p->offset now. */
static bool fingerprint(struct jsonl_source *src, int fd, const struct jsonl_pos *p,
                        struct jsonl_pos *out)
{
    out->head_len = (uint32_t)(p->offset < HEAD_BYTES ? p->offset : HEAD_BYTES);
    out->tail_len = (uint32_t)(p->offset < TAIL_BYTES ? p->offset : TAIL_BYTES);
    return hash_range(src, fd, 0, out->head_len, &out->head_hash) &&
           hash_range(src, fd, p->offset - out->tail_len, out->tail_len, &out->tail_hash);
}

/* Why a file of mode m is not read, or NULL for a regular file. */
static const char *not_regular(mode_t m)
{
    if (S_ISREG(m))
        return NULL;
    return S_ISDIR(m)    ? "a directory, not a regular file"
           : S_ISFIFO(m) ? "a FIFO, not a regular file"
                         : "not a regular file";
}

/*
 * Opens one of the directory's files. Only a regular file is read (a FIFO
 * would block open and read for ever), and a link only to a file inside the
 * directory unless follow_symlinks. The check is made on what was opened
 * (/proc/self/fd), so a link swapped meanwhile cannot slip through. Returns
 * the fd, -2 with *why when the file is refused, -1 with errno.
 */
static int open_file(struct jsonl_source *src, const struct jsonl_file *f, struct stat *st,
                     const char **why)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -1;
    *why = NULL;
    if (fstat(fd, st) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    char real[PATH_MAX];
    *why = not_regular(st->st_mode);
    if (!*why && src->dir_real && !src->follow_symlinks) {
        char link[64];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, real, sizeof(real) - 1);
        size_t dl = strlen(src->dir_real);
        if (n < 0) {
            *why = "its real path cannot be read";
        } else {
            real[n] = '\0';
            if (strncmp(real, src->dir_real, dl) != 0 || (real[dl] != '/' && dl > 1))
                *why = "a link to a file outside the directory (follow_symlinks: true allows it)";
        }
    }
    if (*why) {
        close(fd);
        return -2;
    }
    return fd;
}

/*
 * Opens a file for a poll and sets inode to its "dev:ino". Returns the fd,
 * -2 when there is nothing to read (it does not exist (yet)), -1 with
 * poll->err: a file there under a collection's name that cannot be read
 * (not readable, a FIFO, a directory, a link out of the directory) is the
 * operator's to fix, so the source says so (retrying) rather than idling.
 */
int jsonl_poll_open(struct jsonl_source *src, struct jsonl_file *f, struct stat *st, char inode[48],
                    struct jsonl_poll *poll)
{
    const char *why = NULL;
    int fd = open_file(src, f, st, &why);
    if (fd == -1 && errno == ENOENT)
        return -2;
    if (fd == -1)
        return sk_error_set(poll->err, SK_ERR_RETRIABLE, "%s: %s", f->path, strerror(errno));
    if (fd == -2) {
        f->refused = true;
        return sk_error_set(poll->err, SK_ERR_RETRIABLE, "%s: %s; not read", f->path, why);
    }
    if (f->refused)
        sk_info(src->component, "%s: readable again", f->path);
    f->refused = false;
    snprintf(inode, 48, "%ju:%ju", (uintmax_t)st->st_dev, (uintmax_t)st->st_ino);
    return fd;
}

/*
 * One file: notices a replaced (other inode), truncated (shorter than the
 * position) or rewritten (fingerprint changed: copytruncate) file and
 * restarts it from the beginning, then reads its lines. A file that does not
 * exist (yet) has nothing to read and keeps its position.
 * Returns as read_lines.
 */
static int read_file(struct jsonl_source *src, size_t i, struct jsonl_poll *poll)
{
    struct jsonl_file *f = &src->files[i];
    struct jsonl_pos *p = &src->pos[i];
    struct stat st;
    char inode[sizeof(p->inode)];
    int fd = jsonl_poll_open(src, f, &st, inode, poll);
    if (fd < 0)
        return fd == -2 ? 0 : -1;
    struct jsonl_pos now = {0};
    if (p->inode[0] && strcmp(p->inode, inode) != 0) {
        if (p->offset > 0)
            sk_warn(src->component, "%s: replaced (inode %s, was %s); reading it from the start",
                    f->path, inode, p->inode);
        p->offset = 0;
        p->line = 1;
    } else if ((int64_t)st.st_size < p->offset) {
        sk_warn(src->component,
                "%s: truncated (%jd bytes, was read to %" PRId64 "); reading it from the start",
                f->path, (intmax_t)st.st_size, p->offset);
        p->offset = 0;
        p->line = 1;
    } else if (p->offset > 0 && p->has_print &&
               (!fingerprint(src, fd, p, &now) || now.head_len != p->head_len ||
                now.head_hash != p->head_hash || now.tail_len != p->tail_len ||
                now.tail_hash != p->tail_hash)) {
        sk_warn(src->component,
                "%s: rewritten in place (what was read to %" PRId64
                " changed: truncated and written again?); reading it from the start",
                f->path, p->offset);
        p->offset = 0;
        p->line = 1;
    } else if (p->offset > 0 && (int64_t)st.st_size == p->offset && p->ctime_ns >= 0 &&
               jsonl_ns(st.st_ctim) != p->ctime_ns) {
        /* Written (or its inode changed: chmod, a hard link) since it was read
         * to its end, and no longer: copied over in place to the same size. */
        sk_warn(src->component,
                "%s: written since it was read to its end, not longer (copied over in place?); "
                "reading it from the start",
                f->path);
        p->offset = 0;
        p->line = 1;
    }
    memcpy(p->inode, inode, sizeof(inode));
    p->known = true;
    int rc = 0;
    if ((int64_t)st.st_size > p->offset)
        rc = jsonl_read_lines(src, f, fd, p, poll);
    if (rc >= 0) {
        /* read to its end as it is after the read: the ctime to compare */
        struct stat after;
        p->ctime_ns = fstat(fd, &after) == 0 && (int64_t)after.st_size == p->offset
                          ? jsonl_ns(after.st_ctim)
                          : -1;
        p->has_print = fingerprint(src, fd, p, &now);
        p->head_len = now.head_len;
        p->head_hash = now.head_hash;
        p->tail_len = now.tail_len;
        p->tail_hash = now.tail_hash;
    }
    close(fd);
    return rc;
}

/*
 * Directory mode: where path leads now. A path that is a link swapped to
 * another directory (a deployment's `current -> exports/2026-12-05`) moves
 * with it; measured against the directory of the start, every file of the
 * new one was a link out of the directory, refused until a restart.
 */
static int follow_dir(struct jsonl_source *src, const char *path, struct sk_error *err)
{
    char *real = realpath(path, NULL);
    if (!real)
        return sk_error_set(err, SK_ERR_RETRIABLE, "path %s: %s", path, strerror(errno));
    if (strcmp(real, src->dir_real) != 0) {
        sk_info(src->component, "path %s now leads to %s (was %s)", path, real, src->dir_real);
        free(src->dir_real);
        src->dir_real = real;
    } else {
        free(real);
    }
    return 0;
}

/* Fills out (owned by the driver) with up to batch_size lines after cursor. */
static int jsonl_poll(struct sk_source *self, const struct sk_cursor *cursor, struct sk_batch *out,
                      struct sk_error *err)
{
    struct jsonl_source *src = self->priv;
    const struct jsonl_conf *conf = self->conf;
    /* A file that is not there has nothing to read yet, but the directory was
     * there at open: gone (moved, deleted by an export job), it is an error
     * the operator sees (retrying), not a source that is idle. */
    struct stat dst;
    if (src->dir_real && stat(conf->path, &dst) != 0)
        return sk_error_set(err, SK_ERR_RETRIABLE, "path %s: %s (a directory at start)", conf->path,
                            strerror(errno));
    if (src->dir_real && !S_ISDIR(dst.st_mode))
        return sk_error_set(err, SK_ERR_RETRIABLE, "path %s is no longer a directory", conf->path);
    if (src->dir_real && follow_dir(src, conf->path, err) < 0)
        return -1;
    if (src->dir_real && (dst.st_mtim.tv_sec != src->dir_mtime.tv_sec ||
                          dst.st_mtim.tv_nsec != src->dir_mtime.tv_nsec)) {
        src->dir_mtime = dst.st_mtim; /* names added, removed or renamed */
        warn_unread_names(src, conf->path);
    }
    if (load_cursor(src, cursor, err) < 0)
        return -1;
    struct jsonl_poll poll = {.self = self,
                              .strict = conf->validation && strcmp(conf->validation, "strict") == 0,
                              .out = out,
                              .budget = src->batch_size,
                              .observed_us = sk_now_us(),
                              .err = err};
    bool more = false;
    if (src->snapshot && sk_source_take_release(self))
        src->release_pending = true; /* until a poll went through every file */
    bool released = src->release_pending;
    for (size_t i = 0; i < src->n_files && !more; i++) {
        int rc =
            src->snapshot ? jsonl_snapshot_file(src, i, released, &poll) : read_file(src, i, &poll);
        if (rc < 0) {
            sk_batch_reset(out);
            return -1;
        }
        more = rc == 1;
    }
    store_cursor(src, cursor, out);
    out->more = more;
    if (!more)
        src->release_pending = false;
    if (src->snapshot) {
        uint64_t held = 0;
        for (size_t i = 0; i < src->n_files; i++)
            held += src->pos[i].state == SNAP_HELD ? (uint64_t)src->pos[i].held : 0;
        sk_source_set_held(self, held);
    }
    /* A long line grew the buffer: give the memory back. */
    if (src->buf_cap > 4 * READ_CHUNK) {
        src->buf_cap = READ_CHUNK;
        src->buf = sk_realloc(src->buf, src->buf_cap);
    }
    /* Progress for the status line and page: bytes read of all files. */
    uint64_t done = 0, total = 0;
    for (size_t i = 0; i < src->n_files; i++) {
        struct stat st;
        if (stat(src->files[i].path, &st) != 0)
            continue;
        total += (uint64_t)st.st_size;
        int64_t at = src->pos[i].offset;
        done += (uint64_t)(at < (int64_t)st.st_size ? at : (int64_t)st.st_size);
    }
    out->progress_done = done;
    out->progress_total = total;
    return 0;
}

/* ---- skolsync check --connect ----------------------------------------------- */

#define FIX_READ "give the user skolsync runs as read access to it"

/* Directory mode: every <collection>.jsonl there must be readable, and one must exist. */
static void probe_dir(const struct jsonl_conf *conf, struct sk_probe *p)
{
    if (access(conf->path, R_OK | X_OK) < 0) {
        sk_probe_fail(p, "path", FIX_READ, "directory %s: %s", conf->path, strerror(errno));
        return;
    }
    size_t found = 0;
    char first[64] = "";
    for (size_t i = 0; sk_entities[i]; i++) {
        char *file = sk_asprintf("%s/%s%s", conf->path, sk_entities[i]->collection, JSONL_SUFFIX);
        struct stat st;
        bool exists = stat(file, &st) == 0;
        const char *why = exists ? not_regular(st.st_mode) : NULL;
        bool readable = exists && access(file, R_OK) == 0;
        if (why || (exists && !readable)) {
            sk_probe_fail(p, "path", why ? "put the export there as a regular file" : FIX_READ,
                          "%s: %s", file, why ? why : "not readable by this user");
            free(file);
            return;
        }
        if (exists && found++ == 0)
            snprintf(first, sizeof(first), "%s", base_name(file));
        free(file);
    }
    if (found == 0)
        sk_probe_fail(p, "path",
                      "put the export there as <collection>.jsonl (persons.jsonl, ...), or "
                      "correct path",
                      "directory %s holds no <collection>.jsonl file", conf->path);
    else
        sk_probe_ok(p, "path", "directory %s: %zu collection file(s) readable (%s%s)", conf->path,
                    found, first, found > 1 ? ", ..." : "");
}

/* Exists and readable; the files it names match entity types. Reads no line. */
static void jsonl_probe(const void *conf_ptr, struct sk_probe *p)
{
    const struct jsonl_conf *conf = conf_ptr;
    struct stat st;
    if (stat(conf->path, &st) < 0) {
        sk_probe_fail(p, "path", "correct path, or create it", "%s: %s", conf->path,
                      strerror(errno));
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        probe_dir(conf, p);
        return;
    }
    const struct sk_entity *e =
        conf->entity ? sk_entity_by_name(conf->entity) : entity_of_file_name(base_name(conf->path));
    if (!e && conf->entity)
        e = sk_entity_by_collection(conf->entity);
    if (!S_ISREG(st.st_mode) || !e)
        sk_probe_fail(p, "path", "name a .jsonl file of one collection (or set entity)", "%s: %s",
                      conf->path,
                      !S_ISREG(st.st_mode) ? "neither a regular file nor a directory"
                                           : "no entity type (not <collection>.jsonl)");
    else if (access(conf->path, R_OK) < 0)
        sk_probe_fail(p, "path", FIX_READ, "%s: not readable by this user", conf->path);
    else
        sk_probe_ok(p, "path", "%s: readable, %s records", conf->path, e->name);
}

const struct sk_source_ops jsonl_source_ops = {
    .type = "jsonl-source",
    .summary = "SS 12000 entities from <collection>.jsonl files, followed as they grow",
    .options = jsonl_options,
    .conf_size = sizeof(struct jsonl_conf),
    .open = jsonl_open,
    .poll = jsonl_poll,
    .chain_polls = true, /* a poll depends on nothing but its cursor */
    .close = jsonl_close,
    .probe = jsonl_probe,
};
