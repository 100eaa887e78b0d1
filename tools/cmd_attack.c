/* cmd_attack.c -- `tracemark attack SPEC IN OUT`: apply a distortion chain to
 * an image, as a leak might, to measure what a mark survives. */
#include "config.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void attack_list(FILE *f)
{
    for (size_t i = 0; tm_attack_usage(i); i++) fprintf(f, "  %s\n", tm_attack_usage(i));
}

static void attack_help(void)
{
    printf("Usage: tracemark attack [OPTIONS] SPEC IN OUT\n"
           "\n"
           "Applies the attack chain SPEC to IN and writes OUT (format from its extension;\n"
           "a JPEG or WebP OUT is written at quality 100 unless --quality says otherwise, so\n"
           "the chain's own compression is what counts; PNG is lossless). Steps are\n"
           "separated by commas, arguments by colons: \"scale:0.8,jpeg:q=75\".\n"
           "\n"
           "Attacks:\n");
    attack_list(stdout);
    printf("\n"
           "Options:\n"
           "  -q, --quality Q     quality of a JPEG/WebP OUT (default 100)\n"
           "  -f, --force         replace OUT if it exists\n"
           "      --list          list the attacks and exit\n"
           "  -h, --help          show this help\n"
           "\n"
           "Example:\n"
           "  tracemark attack \"jpeg:q=50\" copy.jpg leaked.png\n"
           "\n"
           "Exit status: 0 written, 2 error.\n");
}

int cmd_attack(int argc, char **argv)
{
    static const struct option opts[] = {
        {"quality", required_argument, NULL, 'q'},
        {"force", no_argument, NULL, 'f'},
        {"list", no_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int quality = 100, force = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "q:fh", opts, NULL)) != -1) {
        uint64_t u;
        switch (c) {
        case 'q':
            if (cli_parse_u64(optarg, &u) || u < 1 || u > 100) return cli_usage("attack", "--quality wants 1..100, not '%s'", optarg);
            quality = (int)u;
            break;
        case 'f': force = 1; break;
        case 'l': attack_list(stdout); return CLI_OK;
        case 'h': attack_help(); return CLI_OK;
        default: return cli_usage("attack", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 3) return cli_usage("attack", "want SPEC, IN and OUT");
    const char *spec = argv[optind], *in = argv[optind + 1], *out = argv[optind + 2];
    tm_save_options so;
    tm_save_options_init(&so);
    so.format = tm_format_from_path(out);
    so.quality = quality;
    if (so.format == TM_FORMAT_UNKNOWN)
        return cli_usage("attack", "%s: cannot tell the output format: use .jpg, .jpeg, .png or .webp", out);
    if (so.format == TM_FORMAT_JPEG) so.subsampling = TM_SS_444;
    if (!force && access(out, F_OK) == 0) {
        cli_error(out, "file exists (use --force to replace it)");
        return CLI_ERR;
    }
    tm_image *img, *res;
    tm_status st = tm_image_load(in, NULL, &img, NULL);
    if (st != TM_OK) return cli_status(in, st);
    char err[256];
    st = tm_attack_apply(spec, img, &res, err, sizeof err);
    tm_image_free(img);
    if (st != TM_OK) {
        if (st == TM_ERR_ARG && err[0]) {
            cli_error(NULL, "bad attack spec \"%s\": %s", spec, err);
            fprintf(stderr, "Valid attacks:\n");
            attack_list(stderr);
            return CLI_ERR;
        }
        return cli_status(in, st);
    }
    st = tm_image_save(res, out, &so);
    tm_image_free(res);
    if (st != TM_OK) return cli_status(out, st);
    return CLI_OK;
}
