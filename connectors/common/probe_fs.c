/* probe_fs.c: file-system checks for connection probes (probe_fs.h). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "probe_fs.h"
#include "util.h"

#define FIX_RIGHTS "give the user skolsync runs as write access to it (chown or chmod)"

/* How to fix what dir_problem found. */
#define FIX_DIR(missing) ((missing) ? "create it, or correct the path" : FIX_RIGHTS)

/*
 * NULL when dir is an existing directory this user may create files in,
 * else why not; *missing: it does not exist.
 */
static const char *dir_problem(const char *dir, bool *missing)
{
    struct stat st;
    *missing = false;
    if (stat(dir, &st) < 0) {
        *missing = errno == ENOENT;
        return strerror(errno);
    }
    if (!S_ISDIR(st.st_mode))
        return "not a directory";
    if (access(dir, W_OK | X_OK) < 0)
        return "not writable by this user";
    return NULL;
}

bool sk_probe_dir_writable(struct sk_probe *p, const char *what, const char *dir)
{
    bool missing;
    const char *problem = dir_problem(dir, &missing);
    if (problem) {
        sk_probe_fail(p, what, FIX_DIR(missing), "directory %s: %s", dir, problem);
        return false;
    }
    sk_probe_ok(p, what, "directory %s exists and is writable", dir);
    return true;
}

/* The directory part of path (caller frees). */
static char *dir_of(const char *path)
{
    char *copy = sk_strdup(path);
    char *dir = sk_strdup(dirname(copy));
    free(copy);
    return dir;
}

static bool missing_file(struct sk_probe *p, const char *what, const char *path, bool dir_made)
{
    char *dir = dir_of(path);
    struct stat st;
    /* a directory the connector makes itself needs a writable parent instead */
    bool make_dir = dir_made && stat(dir, &st) < 0 && errno == ENOENT;
    char *where = make_dir ? dir_of(dir) : sk_strdup(dir);
    const char *verb = make_dir ? "made" : "created";
    bool missing;
    const char *problem = dir_problem(where, &missing);
    if (problem)
        sk_probe_fail(p, what, FIX_DIR(missing), "%s cannot be %s: directory %s: %s",
                      make_dir ? dir : path, verb, where, problem);
    else
        sk_probe_ok(p, what, "%s does not exist yet; %s will be %s in %s", path,
                    make_dir ? "its directory" : "it", verb, where);
    free(where);
    free(dir);
    return problem == NULL;
}

bool sk_probe_sqlite_file(struct sk_probe *p, const char *what, const char *path, bool dir_made)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        if (errno == ENOENT)
            return missing_file(p, what, path, dir_made);
        sk_probe_fail(p, what, "correct the path, or " FIX_RIGHTS, "%s: %s", path, strerror(errno));
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        sk_probe_fail(p, what, "point it at a database file", "%s: not a regular file", path);
        return false;
    }
    char *dir = dir_of(path);
    bool missing;
    const char *problem = dir_problem(dir, &missing);
    if (problem) {
        /* SQLite writes path-wal and path-shm next to the database. */
        sk_probe_fail(p, what, FIX_RIGHTS, "directory %s (for the -wal and -shm files): %s", dir,
                      problem);
        free(dir);
        return false;
    }
    free(dir);
    int fd = access(path, R_OK | W_OK) == 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0) {
        sk_probe_fail(p, what, "give the user skolsync runs as read and write access to it",
                      "%s: not readable and writable by this user", path);
        return false;
    }
    /* The file format's first 16 bytes (sqlite.org/fileformat.html §1.3.1);
     * an empty file is a database SQLite has not written yet. */
    char head[16];
    ssize_t n = read(fd, head, sizeof(head));
    close(fd);
    if (n != 0 && (n != (ssize_t)sizeof(head) || memcmp(head, "SQLite format 3", 16) != 0)) {
        sk_probe_fail(p, what, "point it at the database, or move the file away",
                      "%s: not an SQLite database", path);
        return false;
    }
    sk_probe_ok(p, what, "%s: %s, readable and writable", path,
                n == 0 ? "an empty file" : "an SQLite database");
    return true;
}
