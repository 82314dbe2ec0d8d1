/*
 * test_package.c: `make deb` gives a package lintian finds no error in,
 * that installs into a fresh root (dpkg --root), whose unit verifies there,
 * whose manual pages open from there, and whose configuration, edited by
 * the operator, survives an upgrade to a higher version.
 *
 * The packages are built in build/deb (incrementally, by scripts/deb.sh,
 * exactly as `make deb` builds them). The fresh root holds only what dpkg
 * and the checks need from a Debian 12 system: /dev/null, /bin/sh and /bin/rm (dpkg
 * runs the maintainer scripts chrooted into it), for systemd-analyze the
 * system's targets and /bin/kill (the unit's ExecReload=), and stand-ins
 * for systemctl and deb-systemd-* that log how the maintainer scripts
 * call them (with /run/systemd/system, as on a machine booted by systemd).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "sk_test.h"

/* Runs cmd; fails the test with its output unless it exits 0. Returns the output. */
static char *must(const char *cmd, int timeout_s)
{
    char *out = NULL;
    int rc = skt_sh(cmd, timeout_s, &out);
    cr_assert_eq(rc, 0, "exit %d: %s\n%s", rc, cmd, out);
    return out;
}

/* Builds the package with Debian revision release; returns the .deb's path. */
static char *build_deb(int release)
{
    char *cmd = skt_fmt("%s/scripts/deb.sh %s/deb %d 2>%s/deb-%d.log", SK_SOURCE_DIR, SK_BINARY_DIR,
                        release, SK_BINARY_DIR, release);
    char *deb = must(cmd, 600);
    deb[strcspn(deb, "\n")] = '\0';
    cr_assert_eq(access(deb, R_OK), 0, "no package at \"%s\"", deb);
    free(cmd);
    return deb;
}

/* A root with an empty dpkg database and the few host files named above. */
static char *fresh_root(void)
{
    char *root = skt_tmpdir("debroot");
    char *cmd = skt_fmt(
        "set -e; cd %s; mkdir -p var/lib/dpkg/updates var/lib/dpkg/info var/lib/dpkg/triggers "
        "bin lib64 lib/x86_64-linux-gnu lib/systemd/system; touch var/lib/dpkg/status; "
        "mkdir -p dev; mknod -m 666 dev/null c 1 3; "
        "cp /bin/dash bin/sh; cp /bin/kill bin/kill; cp /bin/rm bin/rm; "
        "cp /lib/x86_64-linux-gnu/libc.so.6 lib/x86_64-linux-gnu/; "
        "cp /lib64/ld-linux-x86-64.so.2 lib64/; cp /lib/systemd/system/*.target "
        "lib/systemd/system/",
        root);
    free(must(cmd, 30));
    free(cmd);
    /* systemd "runs" in the root: the maintainer scripts' calls are logged. */
    const char *tools[] = {"systemctl", "deb-systemd-invoke", "deb-systemd-helper", NULL};
    for (const char **t = tools; *t; t++) {
        char *path = skt_fmt("%s/bin/%s", root, *t);
        skt_write(path, "#!/bin/sh\necho \"${0##*/} $*\" >> /systemd-calls\n");
        cr_assert_eq(chmod(path, 0755), 0);
        free(path);
    }
    cmd = skt_fmt("mkdir -p %s/run/systemd/system", root);
    free(must(cmd, 10));
    free(cmd);
    return root;
}

/* The calls the maintainer scripts made since the last look, one a line. */
static char *systemd_calls(const char *root)
{
    char *cmd = skt_fmt("cat %s/systemd-calls 2>/dev/null; rm -f %s/systemd-calls", root, root);
    char *out = NULL;
    skt_sh(cmd, 10, &out);
    free(cmd);
    return out;
}

static void expect_calls(const char *root, const char *expected, const char *when)
{
    char *calls = systemd_calls(root);
    cr_expect_str_eq(calls, expected, "%s called:\n%s", when, calls);
    free(calls);
}

/* dpkg on the root, e.g. args "-i PACKAGE" or "-P skolsync". */
static void dpkg(const char *root, const char *args)
{
    char *cmd =
        skt_fmt("dpkg --root=%s --log=%s/dpkg.log --force-depends %s </dev/null", root, root, args);
    free(must(cmd, 120));
    free(cmd);
}

static void expect_file(const char *root, const char *path)
{
    char *full = skt_fmt("%s%s", root, path);
    cr_expect_eq(access(full, F_OK), 0, "the package did not install %s", path);
    free(full);
}

static char *installed_version(const char *root)
{
    char *cmd = skt_fmt("dpkg-query --admindir=%s/var/lib/dpkg -W -f='${Version} ${Status}' "
                        "skolsync",
                        root);
    char *out = must(cmd, 30);
    free(cmd);
    return out;
}

Test(package, builds_lints_installs_verifies_and_keeps_the_config_on_upgrade, .timeout = 900)
{
    char *deb1 = build_deb(1);
    char *deb2 = build_deb(2);

    /* lintian exits non-zero on an error; warnings are listed in the log. */
    char *cmd = skt_fmt("lintian --tag-display-limit 0 %s 2>&1", deb1);
    char *lint = NULL;
    int rc = skt_sh(cmd, 300, &lint);
    cr_log_info("lintian:\n%s", lint);
    cr_assert_eq(rc, 0, "lintian found errors:\n%s", lint);
    cr_assert_null(strstr(lint, "E: "), "%s", lint);
    free(lint);
    free(cmd);

    char *root = fresh_root();
    char *args = skt_fmt("-i %s", deb1);
    dpkg(root, args);
    free(args);
    char *version = installed_version(root);
    cr_assert_str_eq(version, "0.1.0-1 install ok installed");
    free(version);
    const char *files[] = {"/usr/bin/skolsync",
                           "/lib/systemd/system/skolsync.service",
                           "/etc/skolsync/skolsync.yaml",
                           "/etc/skolsync/credentials",
                           "/usr/share/man/man1/skolsync.1.gz",
                           "/usr/share/man/man5/skolsync.yaml.5.gz",
                           "/usr/share/doc/skolsync/README.md",
                           "/usr/share/doc/skolsync/copyright",
                           "/usr/share/doc/skolsync/changelog.Debian.gz",
                           "/usr/share/doc/skolsync/docs/postgres-sink.md",
                           "/usr/share/doc/skolsync/examples/scim.yaml",
                           NULL};
    for (const char **f = files; *f; f++)
        expect_file(root, *f);
    cmd = skt_fmt("grep -qx /etc/skolsync/skolsync.yaml %s/var/lib/dpkg/info/skolsync.conffiles",
                  root);
    cr_expect_eq(skt_sh(cmd, 10, NULL), 0, "skolsync.yaml is not a conffile");
    free(cmd);

    /* A first install makes systemd read the unit and starts nothing. */
    expect_calls(root, "systemctl --system daemon-reload\n", "the first install");

    /* The unit as installed, against the root's files (/usr/bin/skolsync included). */
    cmd = skt_fmt("systemd-analyze verify --root=%s skolsync.service 2>&1", root);
    free(must(cmd, 60));
    free(cmd);
    cmd = skt_fmt("grep -q '^ExecStart=/usr/bin/skolsync run' %s/lib/systemd/system/"
                  "skolsync.service",
                  root);
    cr_expect_eq(skt_sh(cmd, 10, NULL), 0, "the unit does not run /usr/bin/skolsync");
    free(cmd);

    /* Both manual pages open from the installed root, without a warning. */
    const char *pages[] = {"/usr/share/man/man1/skolsync.1.gz",
                           "/usr/share/man/man5/skolsync.yaml.5.gz", NULL};
    const char *expected[] = {"EXIT STATUS", "SINK TYPES"};
    for (size_t i = 0; pages[i]; i++) {
        char *page = NULL;
        cmd = skt_fmt("MANWIDTH=80 man --warnings -l %s%s 2>%s/man.err && test ! -s %s/man.err",
                      root, pages[i], root, root);
        page = must(cmd, 60);
        cr_expect_not_null(strstr(page, expected[i]), "%s renders without %s", pages[i],
                           expected[i]);
        free(page);
        free(cmd);
    }

    /* The operator edits the configuration; an upgrade keeps the edit. */
    char *conf = skt_fmt("%s/etc/skolsync/skolsync.yaml", root);
    cmd = skt_fmt("printf '# edited by the operator\\n' >> %s", conf);
    free(must(cmd, 10));
    free(cmd);
    args = skt_fmt("-i %s", deb2);
    dpkg(root, args);
    free(args);
    version = installed_version(root);
    cr_assert_str_eq(version, "0.1.0-2 install ok installed");
    free(version);
    /* An upgrade restarts the service only if it runs; prerm did not stop it. */
    expect_calls(root,
                 "systemctl --system daemon-reload\n"
                 "deb-systemd-invoke try-restart skolsync.service\n",
                 "the upgrade");
    cmd = skt_fmt("tail -n 1 %s", conf);
    char *last = must(cmd, 10);
    cr_expect_str_eq(last, "# edited by the operator\n", "the upgrade replaced the edited %s",
                     conf);
    free(last);
    free(cmd);
    expect_file(root, "/usr/bin/skolsync");

    /* Removal stops the service and keeps the configuration; purge forgets
     * the unit's enablement and removes state, credentials and the conffile. */
    dpkg(root, "-r skolsync");
    expect_calls(root,
                 "deb-systemd-invoke stop skolsync.service\n"
                 "systemctl --system daemon-reload\n",
                 "removal");
    cr_expect_eq(access(conf, F_OK), 0, "removal (not purge) deleted %s", conf);
    cmd = skt_fmt("mkdir -p %s/var/lib/private/skolsync", root);
    free(must(cmd, 10));
    free(cmd);
    dpkg(root, "-P skolsync");
    expect_calls(root,
                 "deb-systemd-helper purge skolsync.service\n"
                 "systemctl --system daemon-reload\n",
                 "purge");
    cr_expect_neq(access(conf, F_OK), 0, "purge kept %s", conf);
    char *state = skt_fmt("%s/var/lib/private/skolsync", root);
    cr_expect_neq(access(state, F_OK), 0, "purge kept %s", state);
    free(state);
    free(conf);
    free(root);
    free(deb1);
    free(deb2);
}
