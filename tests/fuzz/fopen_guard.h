/* fopen_guard.h: see fopen_guard.c. Link with -Wl,--wrap=fopen,--wrap=open. */
#ifndef SK_FUZZ_FOPEN_GUARD_H
#define SK_FUZZ_FOPEN_GUARD_H

#include <stdio.h>

/* dir must end in '/' and live as long as the process. */
void sk_fuzz_allow_dir(const char *dir);
/* 1 while an input runs: fopen and open outside the allowed directories fail (ENOENT). */
void sk_fuzz_guard(int on);

#endif
