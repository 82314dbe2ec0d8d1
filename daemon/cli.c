/* cli.c: what every command's option parsing ends with (daemon.h). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "daemon.h"

int sk_cli_help(int c, void (*usage)(FILE *))
{
    if (c == 'h') {
        usage(stdout);
        return -1;
    }
    usage(stderr);
    return SK_EXIT_USAGE;
}

int sk_cli_no_more_args(const char *cmd, int argc, char **argv)
{
    if (optind >= argc)
        return 0;
    fprintf(stderr, "%s: unexpected argument \"%s\"\n", cmd, argv[optind]);
    return SK_EXIT_USAGE;
}

struct sk_daemon_config *sk_cli_config_load(const char *path, bool admin)
{
    struct sk_config_errors errs = {0};
    struct sk_daemon_config *cfg =
        admin ? sk_daemon_config_load_admin(path, &errs) : sk_daemon_config_load(path, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "%s\n", errs.v[i].text);
    if (errs.more)
        fprintf(stderr, "... and %zu more error(s) not shown\n", errs.more);
    if (errs.n)
        fprintf(stderr, "skolsync: %zu error(s) in %s\n", errs.n + errs.more, path);
    sk_config_errors_free(&errs);
    return cfg;
}
