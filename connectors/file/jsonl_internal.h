/*
 * jsonl_internal.h: what jsonl_source.c (the connector, following files as
 * they grow) and jsonl_snapshot.c (mode: snapshot, each complete file the
 * whole truth for its type) share.
 */
#ifndef SK_JSONL_INTERNAL_H
#define SK_JSONL_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "connector.h"
#include "delete_guard.h"
#include "log.h"
#include "jsonl_cursor.pb-c.h"

struct jsonl_conf {
    char *path;
    char *entity;
    int64_t batch_size;
    bool follow_symlinks;
    int64_t max_line_size;
    char *validation;    /* lenient|strict (connector.h, SK_VALIDATION_CHOICES) */
    char *mode;          /* incremental|snapshot */
    int64_t settle_time; /* mode: snapshot: ms a file's mtime must lie back before it is taken */
    struct sk_guard_conf delete_guard;
};

/* One file this source reads. */
struct jsonl_file {
    char *name; /* relative to the directory, "persons.jsonl": the cursor's key */
    char *path; /* what open() gets */
    const struct sk_entity *entity;
    bool refused; /* not read (not a regular file, a link out of the directory) at the last poll */
    struct sk_log_limit cut_log; /* mode: snapshot: "does not end with a newline" */
};

/* How far one file has been read: a JsonlCursor.FilePos, unpacked. */
struct jsonl_pos {
    int64_t offset; /* byte offset of the first unread line */
    int64_t line;   /* its 1-based number */
    char inode[48]; /* "dev:ino", "" if not known yet (jsonl_poll_open) */
    bool known;     /* in the cursor, or seen by this poll: goes into the new cursor */
    bool has_print; /* the fingerprint below is set */
    uint32_t head_len, tail_len;
    uint64_t head_hash, tail_hash;
    /* The file's ctime: incremental mode, when it was read to its end (-1:
     * it was not, or not known); mode: snapshot, the generation's. */
    int64_t ctime_ns;
    /* mode: snapshot: the generation (size, mtime, ctime) seen with inode, what
     * has been done with it (enum jsonl_snap) and the deletions held for it. */
    int64_t size, mtime_ns;
    int state;
    int64_t held;
};

static inline int64_t jsonl_ns(struct timespec t)
{
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* What a snapshot-mode file's generation went through (JsonlCursor.FilePos.snap_state). */
enum jsonl_snap {
    SNAP_SEEN = 0,    /* seen once; taken when unchanged at the next poll and complete */
    SNAP_READING = 1, /* its lines are being read */
    SNAP_DONE = 2,    /* read, its deletions published */
    SNAP_HELD = 3,    /* read, its deletions held by the delete guard */
};

struct jsonl_source {
    const char *component;     /* for log lines */
    char *dir_real;            /* directory mode: the directory's real path; NULL for one file */
    struct timespec dir_mtime; /* its mtime when its names were last looked at */
    bool follow_symlinks;
    struct jsonl_file *files;
    size_t n_files;
    uint32_t writes; /* the types of the files there were at open (sk_source.writes) */
    size_t batch_size;
    size_t max_line; /* max_line_size */
    /* Per poll, reused: positions, the cursor being packed, the line buffer. */
    struct jsonl_pos *pos;
    Skolsync__V1__JsonlCursor__FilePos *fp;
    Skolsync__V1__JsonlCursor__FilePos **fp_ptrs;
    char *buf;
    size_t buf_cap;
    bool snapshot;        /* mode: snapshot */
    double max_fraction;  /* delete_guard.max_fraction, parsed */
    int64_t settle_ms;    /* settle_time */
    bool release_pending; /* an operator's release, until a poll reached every file */
};

/* What one poll is filling. */
struct jsonl_poll {
    struct sk_source *self;
    bool strict; /* validation: strict */
    struct sk_batch *out;
    size_t budget; /* lines the batch may still take */
    int64_t observed_us;
    struct sk_error *err;
};

int jsonl_poll_open(struct jsonl_source *src, struct jsonl_file *f, struct stat *st, char inode[48],
                    struct jsonl_poll *poll);
int jsonl_read_lines(struct jsonl_source *src, const struct jsonl_file *f, int fd,
                     struct jsonl_pos *p, struct jsonl_poll *poll);
/* mode: snapshot: one file's poll (jsonl_snapshot.c); returns as jsonl_read_lines. */
int jsonl_snapshot_file(struct jsonl_source *src, size_t i, bool released, struct jsonl_poll *poll);

#endif
