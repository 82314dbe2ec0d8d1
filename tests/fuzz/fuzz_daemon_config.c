/*
 * fuzz_daemon_config.c: a whole skolsync.yaml -> sk_daemon_config_load: the
 * core's keys, then every source and sink entry against the settings table
 * and the option table of its connector type (the real ones, from the
 * registry). The file is written to a scratch directory, which also holds a
 * copy of tests/fixtures/config/secret.txt for ${file:secret.txt}; nothing
 * else can be read (fopen_guard.c). The environment is fixed.
 *
 * Properties: NULL comes with an error and a config with none; no error
 * message shows a substituted secret.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "daemon.h"
#include "fopen_guard.h"

#define ENV_SECRET "Zq9-env-secret-Xv7"
#define FILE_SECRET "s3cr3t-from-file"

static char dir[64];
static char dir_slash[80];
static char path[96];

/* The scratch directory goes when the fuzzer exits normally. */
static void remove_scratch(void)
{
    char secret[96];
    snprintf(secret, sizeof(secret), "%s/secret.txt", dir);
    unlink(path);
    unlink(secret);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    snprintf(dir, sizeof(dir), "%s/sk-fuzz-config-XXXXXX",
             access("/dev/shm", W_OK) ? "/tmp" : "/dev/shm");
    if (!mkdtemp(dir))
        abort();
    snprintf(dir_slash, sizeof(dir_slash), "%s/", dir);
    snprintf(path, sizeof(path), "%s/skolsync.yaml", dir);
    char secret[96];
    snprintf(secret, sizeof(secret), "%s/secret.txt", dir);
    FILE *f = fopen(secret, "w");
    if (!f || fputs(FILE_SECRET "\n", f) < 0 || fclose(f) != 0)
        abort();
    atexit(remove_scratch);
    sk_fuzz_allow_dir(dir_slash);
    clearenv();
    setenv("SK_FUZZ_TOKEN", ENV_SECRET, 1);
    setenv("SK_FUZZ_EMPTY", "", 1);
    return 0;
}

static void check_no_secret(const struct sk_config_errors *errs, const char *secret,
                            const uint8_t *data, size_t size)
{
    if (memmem(data, size, secret, strlen(secret)))
        return;
    for (size_t i = 0; i < errs->n; i++) {
        if (strstr(errs->v[i].text, secret)) {
            fprintf(stderr, "secret leaked into an error: %s\n", errs->v[i].text);
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    struct sk_config_errors errs = {0};
    sk_fuzz_guard(1);
    struct sk_daemon_config *cfg = sk_daemon_config_load(path, &errs);
    sk_fuzz_guard(0);
    if (!cfg && errs.n == 0) {
        fprintf(stderr, "no configuration and no error\n");
        abort();
    }
    if (cfg && errs.n) {
        fprintf(stderr, "a configuration with errors: %s\n", errs.v[0].text);
        abort();
    }
    check_no_secret(&errs, ENV_SECRET, data, size);
    check_no_secret(&errs, FILE_SECRET, data, size);
    sk_daemon_config_free(cfg);
    sk_config_errors_free(&errs);
    return 0;
}
