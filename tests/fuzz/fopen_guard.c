/*
 * fopen_guard.c: keeps ${file:PATH} substitution (config.c) inside the
 * directories a fuzz target allows while an input runs. Linked with
 * -Wl,--wrap=fopen, so every fopen of the target's own code and of sk_base
 * comes here; libFuzzer's files and calls outside an input pass through.
 * Without it the fuzzer could read /dev/stdin, /proc/kmsg or a FIFO and hang.
 */
#include "fopen_guard.h"

#include <errno.h>
#include <string.h>

FILE *__real_fopen(const char *path, const char *mode);
FILE *__wrap_fopen(const char *path, const char *mode);

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

FILE *__wrap_fopen(const char *path, const char *mode)
{
    if (!in_input)
        return __real_fopen(path, mode);
    for (size_t i = 0; i < n_allowed; i++)
        if (strncmp(path, allowed[i], strlen(allowed[i])) == 0 && !strstr(path, ".."))
            return __real_fopen(path, mode);
    errno = ENOENT;
    return NULL;
}
