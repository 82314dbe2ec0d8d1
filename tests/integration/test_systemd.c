/*
 * test_systemd.c: the unit file passes systemd's own checks, and
 * `cmake --install` puts binary, unit and reference config at FHS paths.
 * (READY=1/STOPPING=1 over NOTIFY_SOCKET is checked in test_cli.c.)
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "sk_test.h"

/* The unit as installed, but pointing at this build's binary. */
static char *unit_for_build(void)
{
    char *dir = skt_tmpdir("unit");
    char *unit = skt_fmt("%s/skolsync.service", dir);
    char *cmd = skt_fmt("sed 's#/usr/local/bin/skolsync#%s#g' %s/systemd/skolsync.service > %s",
                        skt_skolsync(), SK_SOURCE_DIR, unit);
    cr_assert_eq(skt_sh(cmd, 10, NULL), 0);
    free(cmd);
    return unit;
}

Test(systemd, unit_verifies)
{
    char *unit = unit_for_build();
    char *cmd = skt_fmt("systemd-analyze verify %s", unit);
    char *out = NULL;
    int rc = skt_sh(cmd, 60, &out);
    cr_assert_eq(rc, 0, "systemd-analyze verify failed:\n%s", out);
    free(out);
}

Test(systemd, unit_exposure_is_ok_or_better)
{
    char *unit = unit_for_build();
    char *cmd = skt_fmt("systemd-analyze security --offline=yes %s", unit);
    char *out = NULL;
    int rc = skt_sh(cmd, 60, &out);
    cr_assert_eq(rc, 0, "%s", out);
    const char *line = strstr(out, "Overall exposure level for skolsync.service:");
    cr_assert_not_null(line, "%s", out);
    double level = atof(line + strlen("Overall exposure level for skolsync.service:"));
    cr_log_info("exposure %.1f", level);
    /* systemd rates 0-1.9 SAFE, 2.0-4.9 OK, then MEDIUM/EXPOSED/UNSAFE */
    cr_assert(strstr(line, " OK") || strstr(line, " SAFE"), "exposure worse than OK: %.80s", line);
    cr_assert_leq(level, 4.9);
    free(out);
}

Test(systemd, install_puts_files_at_fhs_paths, .timeout = 120)
{
    char *dest = skt_tmpdir("install");
    char *cmd = skt_fmt("DESTDIR=%s cmake --install %s", dest, SK_BINARY_DIR);
    char *out = NULL;
    int rc = skt_sh(cmd, 100, &out);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    char *prefix = NULL;
    cr_assert_eq(skt_sh("sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' " SK_BINARY_DIR
                        "/CMakeCache.txt",
                        10, &prefix),
                 0);
    prefix[strcspn(prefix, "\n")] = '\0';
    char *bin = skt_fmt("%s%s/bin/skolsync", dest, prefix);
    char *unit = skt_fmt("%s%s/lib/systemd/system/skolsync.service", dest, prefix);
    char *conf = skt_fmt("%s/etc/skolsync/skolsync.yaml", dest);
    cr_assert_eq(access(bin, X_OK), 0, "no %s", bin);
    cr_assert_eq(access(unit, R_OK), 0, "no %s", unit);
    cr_assert_eq(access(conf, R_OK), 0, "no %s", conf);
    char *grep = skt_fmt("grep -q '^ExecStart=%s/bin/skolsync run' %s", prefix, unit);
    cr_assert_eq(skt_sh(grep, 10, NULL), 0, "the installed unit does not name %s/bin/skolsync",
                 prefix);
}
