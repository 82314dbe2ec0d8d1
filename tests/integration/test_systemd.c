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

/* A second install (an upgrade by `make install`) keeps the operator's
 * edited configuration and puts the new default next to it. */
Test(systemd, install_keeps_an_edited_config, .timeout = 180)
{
    char *dest = skt_tmpdir("install-twice");
    char *cmd = skt_fmt("DESTDIR=%s cmake --install %s", dest, SK_BINARY_DIR);
    char *out = NULL;
    cr_assert_eq(skt_sh(cmd, 100, &out), 0, "%s", out);
    free(out);
    char *conf = skt_fmt("%s/etc/skolsync/skolsync.yaml", dest);
    char *dist = skt_fmt("%s.dist", conf);
    cr_assert_neq(access(dist, F_OK), 0, "a first install wrote %s", dist);
    skt_write(conf, "# the operator's own configuration\n");

    cr_assert_eq(skt_sh(cmd, 100, &out), 0, "%s", out);
    cr_expect_not_null(strstr(out, "Keeping"), "the install did not say it kept the file:\n%s",
                       out);
    free(out);
    char *cat = skt_fmt("cat %s", conf);
    cr_assert_eq(skt_sh(cat, 10, &out), 0);
    cr_expect_str_eq(out, "# the operator's own configuration\n", "the install overwrote %s", conf);
    free(out);
    char *cmp = skt_fmt("cmp %s %s/etc/skolsync.yaml", dist, SK_SOURCE_DIR);
    cr_expect_eq(skt_sh(cmp, 10, &out), 0, "%s is not the new default: %s", dist, out);
    free(out);
    free(cmp);
    free(cat);
    free(dist);
    free(conf);
    free(cmd);
    free(dest);
}

/* `make install` configures the build without tests and builds none. */
Test(systemd, make_install_builds_no_tests, .timeout = 600)
{
    char *build = skt_fmt("%s/install-notests", SK_BINARY_DIR);
    char *dest = skt_tmpdir("install-notests");
    char *cmd = skt_fmt("make -C %s install BUILD=%s DESTDIR=%s PREFIX=/usr 2>&1", SK_SOURCE_DIR,
                        build, dest);
    char *out = NULL;
    cr_assert_eq(skt_sh(cmd, 580, &out), 0, "%s", out);
    free(out);
    free(cmd);
    cmd = skt_fmt("ls %s/tests 2>/dev/null | grep -c '^test_' || true", build);
    cr_assert_eq(skt_sh(cmd, 10, &out), 0);
    cr_expect_str_eq(out, "0\n", "make install built test binaries");
    free(out);
    free(cmd);
    char *bin = skt_fmt("%s/usr/bin/skolsync", dest);
    char *man = skt_fmt("%s/usr/share/man/man5/skolsync.yaml.5.gz", dest);
    cr_expect_eq(access(bin, X_OK), 0, "no %s", bin);
    cr_expect_eq(access(man, R_OK), 0, "no %s", man);
    free(man);
    free(bin);
    free(dest);
    free(build);
}
