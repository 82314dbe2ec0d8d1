/*
 * probe_fs.h: the file-system checks of `skolsync check --connect` that
 * several connectors share (connector.h, struct sk_probe): a directory that
 * must take new files, and an SQLite database a connector keeps.
 *
 * Owns: looking, with the rights of the user running the check. Must never:
 * create, open for writing or change anything it looks at. Each call reports
 * exactly one check and returns whether it passed.
 */
#ifndef SK_PROBE_FS_H
#define SK_PROBE_FS_H

#include <stdbool.h>

#include "connector.h"

/* dir exists, is a directory, and this user may create files in it. */
bool sk_probe_dir_writable(struct sk_probe *p, const char *what, const char *dir);
/*
 * The SQLite database at path: an existing file must be a regular file,
 * readable and writable, and empty or an SQLite database; a missing one must
 * be creatable (its directory writable; with dir_made, a missing directory
 * is made by the connector, so its parent must be writable instead). The
 * directory takes the -wal and -shm files either way.
 */
bool sk_probe_sqlite_file(struct sk_probe *p, const char *what, const char *path, bool dir_made);

#endif
