/* cli.c: what every command's option parsing ends with (daemon.h). */
#include <getopt.h>
#include <stdio.h>

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
