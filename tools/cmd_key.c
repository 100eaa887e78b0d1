/* cmd_key.c -- `tracemark keygen`: create a new secret key file and print
 * its public fingerprint (the one registries record). */
#include "config.h"

#include <getopt.h>
#include <stdio.h>

#include "cli.h"

static void keygen_help(void)
{
    printf("Usage: tracemark keygen KEYFILE\n"
           "\n"
           "Creates a new secret key: 256 bits from the operating system's random\n"
           "generator, written to KEYFILE with mode 0600. Every mark, codeword and\n"
           "registry tag derives from this key; keep it secret and back it up, since\n"
           "marked copies cannot be traced without it. An existing file is never\n"
           "overwritten. On success the key's public fingerprint (16 hex digits) is\n"
           "printed; registries made with the key record the same fingerprint.\n"
           "\n"
           "Options:\n"
           "  -h, --help   show this help\n"
           "\n"
           "Example:\n"
           "  tracemark keygen ~/.tracemark/design-team.key\n"
           "\n"
           "Exit status: 0 key created, 2 error (file exists, cannot write).\n");
}

int cmd_keygen(int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case 'h': keygen_help(); return CLI_OK;
        default: return cli_usage("keygen", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return cli_usage("keygen", "missing KEYFILE");
    if (optind + 1 < argc) return cli_usage("keygen", "too many arguments");
    const char *path = argv[optind];

    tm_status st = tm_key_generate(path);
    if (st != TM_OK) return cli_status(path, st);
    tm_key *key = NULL;
    char fp[17];
    st = tm_key_load(path, &key);
    if (st == TM_OK) st = tm_key_fingerprint(key, fp);
    tm_key_free(key);
    if (st != TM_OK) return cli_status(path, st);
    printf("%s\n", fp);
    return CLI_OK;
}
