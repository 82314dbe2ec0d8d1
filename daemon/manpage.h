/*
 * manpage.h: the reference part of skolsync.yaml(5), written in roff from
 * the option tables that validate a configuration, so the manual cannot
 * drift from what `skolsync check` accepts.
 */
#ifndef SK_MANPAGE_H
#define SK_MANPAGE_H

#include <stdio.h>

/*
 * Writes the sections CORE KEYS, SOURCES, SINKS, SOURCE TYPES and SINK
 * TYPES: every key of sk_core_options, the source and sink settings tables
 * and every registered connector's table (nested groups as dotted names),
 * each as a .TP paragraph whose tag is the key in bold. CMake splices this
 * into man/skolsync.yaml.5.in (`skolsync connectors --man`).
 */
void sk_manpage_write_options(FILE *out);

/* Writes text for a roff text line: backslashes, minus signs, a leading
 * dot or quote and every non-ASCII character (as \[uXXXX]) escaped. */
void sk_manpage_write_text(FILE *out, const char *text);

#endif
