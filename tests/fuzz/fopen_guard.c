/*
 * fopen_guard.c: keeps ${file:PATH} substitution (config_refs.c) inside the
 * directories a fuzz target allows while an input runs. Linked with
 * -Wl,--wrap=fopen,--wrap=open, so every fopen and open of the target's own
 * code and of sk_base comes here; libFuzzer's files and calls outside an
 * input pass through. Without it the fuzzer could read the machine's files
 * (the loader itself refuses FIFOs and devices).
 */
#include "fopen_guard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/types.h>

FILE *__real_fopen(const char *path, const char *mode);
FILE *__wrap_fopen(const char *path, const char *mode);
int __real_open(const char *path, int flags, ...);
int __wrap_open(const char *path, int flags, ...);

static const char *allowed[4];
static size_t n_allowed;
static int in_input;

void sk_fuzz_allow_dir(const char *dir)
{
    if (n_allowed < sizeof(allowed) / sizeof(allowed[0]))
        allowed[n_allowed++] = dir;
}

void sk_fuzz_guard(int on)
{
    in_input = on;
}

static int may_open(const char *path)
{
    if (!in_input)
        return 1;
    for (size_t i = 0; i < n_allowed; i++)
        if (strncmp(path, allowed[i], strlen(allowed[i])) == 0 && !strstr(path, ".."))
            return 1;
    return 0;
}

FILE *__wrap_fopen(const char *path, const char *mode)
{
    if (may_open(path))
        return __real_fopen(path, mode);
    errno = ENOENT;
    return NULL;
}

int __wrap_open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    if (may_open(path))
        return __real_open(path, flags, mode);
    errno = ENOENT;
    return -1;
}
