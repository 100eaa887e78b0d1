/* cmd_image.c -- `tracemark strip` and `tracemark inspect`: the metadata
 * commands. strip re-encodes an image with only its colour description, so
 * EXIF (GPS, camera serials), XMP, IPTC and comments are gone; inspect shows
 * what a file carries before it is shared. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void strip_help(void)
{
    printf("Usage: tracemark strip [OPTIONS] IN OUT\n"
           "\n"
           "Re-writes IN as OUT without identifying metadata: EXIF (with GPS position,\n"
           "camera and serial numbers), XMP, IPTC, comments and PNG text chunks are not\n"
           "copied. The EXIF orientation is applied to the pixels so the copy looks the\n"
           "same everywhere; the ICC profile and PNG gamma/chromaticity are kept so the\n"
           "colours do too. OUT's format follows its extension (.jpg .jpeg .png .webp).\n"
           "A JPEG output keeps the input's estimated quality and chroma subsampling\n"
           "unless --quality is given. OUT is written atomically.\n"
           "\n"
           "Options:\n"
           "  -q, --quality Q       JPEG/WebP quality 1..100\n"
           "      --max-pixels N    refuse images larger than N pixels (default 200000000)\n"
           "  -f, --force           replace OUT if it exists\n"
           "  -h, --help            show this help\n"
           "\n"
           "Example:\n"
           "  tracemark strip holiday.jpg holiday-clean.jpg\n"
           "\n"
           "Exit status: 0 written, 2 error.\n");
}

int cmd_strip(int argc, char **argv)
{
    static const struct option opts[] = {
        {"quality", required_argument, NULL, 'q'},
        {"max-pixels", required_argument, NULL, 'M'},
        {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    tm_load_options lo;
    tm_load_options_init(&lo);
    int quality = 0, force = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":q:fh", opts, NULL)) != -1) {
        uint64_t v;
        switch (c) {
        case 'q':
            if (cli_parse_u64(optarg, &v) || v < 1 || v > 100)
                return cli_usage("strip", "--quality wants 1..100, not '%s'", optarg);
            quality = (int)v;
            break;
        case 'M':
            if (cli_parse_max_pixels("strip", optarg, &lo)) return CLI_ERR;
            break;
        case 'f': force = 1; break;
        case 'h': strip_help(); return CLI_OK;
        default: return cli_bad_option("strip", c, argv);
        }
    }
    if (argc - optind != 2) return cli_usage("strip", "want IN and OUT");
    const char *in = argv[optind], *out = argv[optind + 1];

    tm_save_options so;
    tm_save_options_init(&so);
    so.format = tm_format_from_path(out);
    if (so.format == TM_FORMAT_UNKNOWN)
        return cli_usage("strip", "%s: cannot tell the output format: use .jpg, .jpeg, .png or .webp", out);
    if (!force && access(out, F_OK) == 0) {
        cli_error(out, "file exists (use --force to replace it)");
        return CLI_ERR;
    }

    tm_image *img;
    tm_image_info info;
    tm_status st = tm_image_load(in, &lo, &img, &info);
    if (st != TM_OK) return cli_input_status(in, st);
    so.quality = quality ? quality : (info.jpeg_quality ? info.jpeg_quality : 0);
    if (so.format == TM_FORMAT_JPEG && info.format == TM_FORMAT_JPEG) {
        so.subsampling = info.subsampling;
        so.progressive = info.progressive;
    }
    if (so.format == TM_FORMAT_PNG && info.bit_depth == 16) so.bit_depth = 16;
    st = tm_image_save(img, out, &so);
    int err = errno;
    tm_image_free(img);
    if (st != TM_OK) return cli_output_status(out, st, err);
    return CLI_OK;
}

static void inspect_help(void)
{
    printf("Usage: tracemark inspect [OPTIONS] FILE...\n"
           "\n"
           "Shows what an image file carries before you share it: format, size, bit\n"
           "depth, JPEG quality estimate and chroma subsampling, colour profile, and the\n"
           "identifying metadata (EXIF with or without GPS position, XMP, IPTC,\n"
           "comments, PNG text chunks). 'tracemark strip' removes the latter.\n"
           "\n"
           "Options:\n"
           "      --json            one JSON object per file on stdout\n"
           "      --max-pixels N    refuse images larger than N pixels (default 200000000)\n"
           "  -h, --help            show this help\n"
           "\n"
           "Example:\n"
           "  tracemark inspect --json photo.jpg\n"
           "\n"
           "Exit status: 0 all files read, 2 a file could not be read.\n");
}

static const char *yes_no(int v)
{
    return v ? "yes" : "no";
}

static void inspect_text(const char *file, const tm_image *img, const tm_image_info *in)
{
    printf("%s:\n", file);
    printf("  format:        %s%s\n", tm_format_name(in->format),
           in->format == TM_FORMAT_WEBP ? (in->lossless ? " (lossless)" : " (lossy)") : "");
    printf("  size:          %dx%d", img->width, img->height);
    if (in->orientation != 1) printf(" (stored %dx%d, EXIF orientation %d applied)", in->width, in->height, in->orientation);
    printf("\n  channels:      %d, %d-bit\n", in->channels, in->bit_depth);
    if (in->format == TM_FORMAT_JPEG) {
        printf("  jpeg:          quality ~%d, %s, %s%s\n", in->jpeg_quality, tm_subsampling_name(in->subsampling),
               in->progressive ? "progressive" : "baseline", in->cmyk ? ", CMYK" : "");
    } else if (in->format == TM_FORMAT_PNG) {
        printf("  png:           %s%s\n", in->progressive ? "interlaced" : "not interlaced", in->palette ? ", palette" : "");
    }
    printf("  icc profile:   %s", yes_no(in->has_icc));
    if (in->has_icc) printf(" (%zu bytes, kept by strip)", img->icc_len);
    printf("\n  exif:          %s%s\n", yes_no(in->has_exif), in->has_gps ? " -- WITH GPS POSITION" : "");
    printf("  xmp:           %s\n", yes_no(in->has_xmp));
    printf("  iptc:          %s\n", yes_no(in->has_iptc));
    printf("  comment:       %s\n", yes_no(in->has_comment));
    if (in->format == TM_FORMAT_PNG) printf("  text chunks:   %d\n", in->n_text);
    int identifying = in->has_exif || in->has_xmp || in->has_iptc || in->has_comment || in->n_text;
    printf("  identifying metadata: %s\n", identifying ? "present (remove with 'tracemark strip')" : "none");
}

static void inspect_json(const char *file, const tm_image *img, const tm_image_info *in)
{
    fputs("{\"file\": ", stdout);
    cli_json_string(stdout, file);
    printf(", \"format\": \"%s\", \"width\": %d, \"height\": %d, \"stored_width\": %d, \"stored_height\": %d, "
           "\"channels\": %d, \"bit_depth\": %d, \"orientation\": %d, \"jpeg_quality\": %d, \"subsampling\": \"%s\", "
           "\"progressive\": %s, \"cmyk\": %s, \"palette\": %s, \"lossless\": %s, \"icc_bytes\": %zu, "
           "\"exif\": %s, \"gps\": %s, \"xmp\": %s, \"iptc\": %s, \"comment\": %s, \"text_chunks\": %d}\n",
           tm_format_name(in->format), img->width, img->height, in->width, in->height, in->channels, in->bit_depth,
           in->orientation, in->jpeg_quality, tm_subsampling_name(in->subsampling),
           in->progressive ? "true" : "false", in->cmyk ? "true" : "false", in->palette ? "true" : "false",
           in->lossless ? "true" : "false", img->icc_len, in->has_exif ? "true" : "false",
           in->has_gps ? "true" : "false", in->has_xmp ? "true" : "false", in->has_iptc ? "true" : "false",
           in->has_comment ? "true" : "false", in->n_text);
}

int cmd_inspect(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"max-pixels", required_argument, NULL, 'M'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    tm_load_options lo;
    tm_load_options_init(&lo);
    int json = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 'M':
            if (cli_parse_max_pixels("inspect", optarg, &lo)) return CLI_ERR;
            break;
        case 'h': inspect_help(); return CLI_OK;
        default: return cli_bad_option("inspect", c, argv);
        }
    }
    if (optind >= argc) return cli_usage("inspect", "want at least one FILE");
    int rc = CLI_OK;
    for (int i = optind; i < argc; i++) {
        tm_image *img;
        tm_image_info info;
        tm_status st = tm_image_load(argv[i], &lo, &img, &info);
        if (st != TM_OK) {
            rc = cli_input_status(argv[i], st);
            continue;
        }
        if (json) inspect_json(argv[i], img, &info);
        else inspect_text(argv[i], img, &info);
        tm_image_free(img);
    }
    return rc;
}
