/* cmd_attack.c -- `tracemark attack SPEC IN OUT`: apply a distortion chain to
 * an image, as a leak might, to measure what a mark survives; and
 * `tracemark attack MODE IN1 IN2 [IN3...] OUT`: combine several copies first,
 * as colluders would. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void attack_list(FILE *f)
{
    for (size_t i = 0; tm_attack_usage(i); i++) fprintf(f, "  %s\n", tm_attack_usage(i));
}

static void combine_list(FILE *f)
{
    for (size_t i = 0; tm_attack_combine_usage(i); i++) fprintf(f, "  %s\n", tm_attack_combine_usage(i));
}

/* True when a usage line (as tm_attack_usage gives) is for the step name
 * spelt by the len bytes at name. */
static int usage_names(const char *usage, const char *name, size_t len)
{
    return strcspn(usage, ":[ ") == len && !strncmp(usage, name, len);
}

/* True when SPEC's first step names a combine mode that takes the operands
 * as inputs: any such mode with more than one input; with one input, only a
 * name that is no single-image attack ("median" alone is the median filter). */
static int is_combine(const char *spec, int n_inputs)
{
    spec += strspn(spec, " \t");
    size_t len = strcspn(spec, ":, \t");
    int combine = 0, single = 0;
    for (size_t i = 0; tm_attack_combine_usage(i); i++) combine |= usage_names(tm_attack_combine_usage(i), spec, len);
    for (size_t i = 0; tm_attack_usage(i); i++) single |= usage_names(tm_attack_usage(i), spec, len);
    return combine && (n_inputs > 1 || !single);
}

static void attack_help(void)
{
    printf("Usage: tracemark attack [OPTIONS] SPEC IN OUT\n"
           "       tracemark attack [OPTIONS] MODE[,SPEC] IN1 IN2 [IN3...] OUT\n"
           "\n"
           "The first form applies the attack chain SPEC to IN and writes OUT. Steps are\n"
           "separated by commas, arguments by colons: \"scale:0.8,jpeg:q=75\".\n"
           "\n"
           "The second form imitates colluders: it combines 2..16 copies of one size and\n"
           "channel count pixel by pixel with MODE (every operand but the last is an\n"
           "input), then applies the rest of the chain, if any: \"average,jpeg:q=75\".\n"
           "With a single input, median is the median filter, not a combine mode.\n"
           "\n"
           "OUT's format comes from its extension; a JPEG or WebP OUT is written at\n"
           "quality 100 unless --quality says otherwise, so the chain's own compression is\n"
           "what counts; PNG is lossless.\n"
           "\n"
           "Attacks:\n");
    attack_list(stdout);
    printf("\n"
           "Combine modes (first step only):\n");
    combine_list(stdout);
    printf("\n"
           "Options:\n"
           "  -q, --quality Q     quality of a JPEG/WebP OUT (default 100)\n"
           "  -f, --force         replace OUT if it exists\n"
           "      --list          list the attacks and combine modes and exit\n"
           "  -h, --help          show this help\n"
           "\n"
           "Examples:\n"
           "  tracemark attack \"jpeg:q=50\" copy.jpg leaked.png\n"
           "  tracemark attack \"screenshot:side=1024,bend:strength=2\" copy.png leaked.jpg\n"
           "  tracemark attack average alice.png bob.png carol.png colluded.png\n"
           "  tracemark attack \"interleave:block=32,jpeg:q=80\" alice.png bob.png colluded.jpg\n"
           "\n"
           "Exit status: 0 written, 2 error.\n");
}

/* Loads the n inputs, combines them with spec into *res; a CLI exit code. */
static int combine_files(const char *spec, char **paths, int n, tm_image **res)
{
    tm_image **imgs = calloc((size_t)n, sizeof *imgs);
    int rc = CLI_ERR;
    if (!imgs) {
        cli_error(NULL, "out of memory");
        return CLI_ERR;
    }
    for (int i = 0; i < n; i++) {
        tm_status st = tm_image_load(paths[i], NULL, &imgs[i], NULL);
        if (st != TM_OK) {
            rc = cli_input_status(paths[i], st);
            goto out;
        }
        if (i > 0 && (imgs[i]->width != imgs[0]->width || imgs[i]->height != imgs[0]->height ||
                      imgs[i]->channels != imgs[0]->channels)) {
            cli_error(paths[i], "%dx%d with %d channels, but %s is %dx%d with %d: combined copies must match",
                      imgs[i]->width, imgs[i]->height, imgs[i]->channels, paths[0], imgs[0]->width, imgs[0]->height,
                      imgs[0]->channels);
            goto out;
        }
    }
    char err[256];
    tm_status st = tm_attack_combine(spec, (const tm_image *const *)imgs, (size_t)n, res, err, sizeof err);
    if (st == TM_ERR_ARG && err[0])
        cli_error(NULL, "%s", err); /* the library's message names the step */
    else if (st != TM_OK)
        rc = cli_status(paths[0], st);
    else
        rc = CLI_OK;
out:
    for (int i = 0; i < n; i++) tm_image_free(imgs[i]);
    free(imgs);
    return rc;
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
    while ((c = getopt_long(argc, argv, ":q:fh", opts, NULL)) != -1) {
        uint64_t u;
        switch (c) {
        case 'q':
            if (cli_parse_u64(optarg, &u) || u < 1 || u > 100) return cli_usage("attack", "--quality wants 1..100, not '%s'", optarg);
            quality = (int)u;
            break;
        case 'f': force = 1; break;
        case 'l':
            attack_list(stdout);
            combine_list(stdout);
            return CLI_OK;
        case 'h': attack_help(); return CLI_OK;
        default: return cli_bad_option("attack", c, argv);
        }
    }
    int nops = argc - optind;
    if (nops < 3) return cli_usage("attack", "want SPEC, IN and OUT (or a combine MODE, IN1 IN2 ... and OUT)");
    const char *spec = argv[optind], *in = argv[optind + 1], *out = argv[argc - 1];
    int combine = is_combine(spec, nops - 2);
    if (!combine && nops > 3)
        return cli_usage("attack", "only a combine mode (average, min, max, median, interleave) takes several inputs");
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
    tm_image *res = NULL;
    tm_status st;
    if (combine) {
        int rc = combine_files(spec, argv + optind + 1, nops - 2, &res);
        if (rc != CLI_OK) return rc;
    } else {
        tm_image *img;
        st = tm_image_load(in, NULL, &img, NULL);
        if (st != TM_OK) return cli_input_status(in, st);
        char err[256];
        st = tm_attack_apply(spec, img, &res, err, sizeof err);
        tm_image_free(img);
        if (st != TM_OK) {
            if (st == TM_ERR_ARG && err[0] && strncmp(err, "unknown attack", 14) != 0)
                return cli_usage("attack", "bad attack spec \"%s\": %s", spec, err); /* a known step's bad value */
            if (st == TM_ERR_ARG && err[0]) {
                cli_error(NULL, "bad attack spec \"%s\": %s", spec, err);
                fprintf(stderr, "Valid attacks:\n");
                attack_list(stderr);
                return CLI_ERR;
            }
            return cli_status(in, st);
        }
    }
    st = tm_image_save(res, out, &so);
    int err = errno;
    tm_image_free(res);
    if (st != TM_OK) return cli_output_status(out, st, err);
    return CLI_OK;
}
