/* cmd_mark.c -- `tracemark mark`: one original in, one marked copy per
 * recipient out, each recorded in the registry.
 *
 * The original is decoded and analysed once; each copy costs one tile
 * synthesis, one pass of additions and one encode. Copies are first written
 * and fsync'd under temporary names beside their final ones, then all
 * registry rows go in one short transaction, and only then are the copies
 * renamed into place: a file under a copy's name is always complete and
 * registered, whenever the run is killed. If anything fails before the
 * commit, the temporaries are removed and no row is left, so a failed run
 * leaves the disk and the registry as they were. A run killed after its
 * commit leaves rows for copies not yet in place; run again, it finds the
 * copies already in place identical to what it makes (marking is
 * deterministic) and completes. */
#define _XOPEN_SOURCE 700 /* realpath */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "recipients.h"

static void mark_help(void)
{
    printf("Usage: tracemark mark -k KEYFILE -r REGISTRY --recipient ID [--recipient ID ...]\n"
           "                      [--recipients FILE] (-o OUT | --out-dir DIR) [OPTIONS] IN\n"
           "\n"
           "Makes one copy of the image IN per recipient, each carrying an invisible mark\n"
           "that only KEYFILE can read and that names that recipient's copy, and records\n"
           "every copy in REGISTRY (created if missing). Identifying metadata (EXIF, GPS,\n"
           "XMP, IPTC, comments) never reaches a copy; the ICC profile does.\n"
           "\n"
           "With --out-dir, copies are named STEM.RECIPIENT.EXT after IN (recipient made\n"
           "file-name safe; a short hash is added when two would collide), or after\n"
           "--name's template: {stem} (IN's name without its extension), {recipient}\n"
           "(file-name safe, as above), {n} (the recipient's number, from 1), {ext},\n"
           "and {{ }} for braces; it must hold {recipient} or {n}, and no '/'. -o OUT is\n"
           "for a single recipient. The output format follows OUT's extension, or IN's with\n"
           "--out-dir (--format to choose). A JPEG copy keeps IN's estimated quality and\n"
           "chroma subsampling unless --quality is given.\n"
           "\n"
           "--max-size delivers a lower resolution, for recipients who do not need full\n"
           "detail: IN is shrunk (antialiased) so its longer side is at most PX pixels,\n"
           "and the mark is made at that size, so a copy traces at the size delivered.\n"
           "The registry records IN as the original; an informed trace shrinks it the\n"
           "same way.\n"
           "\n"
           "--visible puts a visible, tiled, semi-transparent text across the whole copy\n"
           "before the invisible mark, e.g. 'For review only - %%r' (%%r: the recipient,\n"
           "%%%% a percent sign): a deterrent for drafts; the invisible mark still traces\n"
           "under it. The font is --visible-font's, else fontconfig's DejaVu Sans Bold.\n"
           "\n"
           "Options:\n"
           "  -k, --key FILE          secret key (from 'tracemark keygen')\n"
           "  -r, --registry FILE     recipient registry (SQLite)\n"
           "      --recipient ID      a recipient (repeatable), e.g. an e-mail address\n"
           "      --recipients FILE   recipients, one per line ('#' comments, blanks skipped)\n"
           "  -o, --output OUT        the copy, for exactly one recipient\n"
           "  -d, --out-dir DIR       directory for the copies (created if missing)\n"
           "      --format FMT        jpg, png or webp (with --out-dir)\n"
           "      --name TEMPLATE     copies' names in --out-dir, e.g. '{stem}-{recipient}.{ext}'\n"
           "                          (default '{stem}.{recipient}.{ext}')\n"
           "  -q, --quality Q         JPEG/WebP quality 1..100\n"
           "      --max-size PX       shrink IN so its longer side is at most PX (256..65500)\n"
           "      --visible TEXT      draw TEXT (%%r: the recipient) visibly across the copy\n"
           "      --visible-opacity O the letters' opacity, in (0, 1] (default 0.25)\n"
           "      --visible-angle DEG the text's slant, counter-clockwise (default 30)\n"
           "      --visible-size F    letter size, a fraction of the shorter side (default 0.05)\n"
           "      --visible-font FILE a TrueType/OpenType font file\n"
           "      --strength S        mark strength, RMS luminance change (default 2.0)\n"
           "      --max-pixels N      refuse images larger than N pixels (default 200000000)\n"
           "  -f, --force             replace existing output files\n"
           "  -j, --jobs N            make N copies at a time, on N threads (default 1,\n"
           "                          or TRACEMARK_THREADS); the copies are the same\n"
           "      --json              print the copies made as one JSON object\n"
           "  -h, --help              show this help\n"
           "\n"
           "Example:\n"
           "  tracemark mark -k team.key -r team.db --recipient alice@example.com \\\n"
           "      --recipient bob@example.com --out-dir out/ design.jpg\n"
           "\n"
           "Exit status: 0 all copies made and recorded, 2 error (nothing kept).\n");
}

/* The recipients, in the order first given (recipients.h). */
typedef cli_recipients mark_job;

/* Reports a failure of the recipient list; returns -1. */
static int recipients_failed(int rc, const char *path, const char *err)
{
    if (rc == CLI_RCP_BAD_ID) cli_usage("mark", "%s", err);
    else if (rc == CLI_RCP_BAD_FILE) cli_error(path, "%s", err);
    else cli_error(NULL, "out of memory");
    return -1;
}

static int add_recipient(mark_job *job, const char *id, const char *where)
{
    char err[160];
    int rc = cli_recipients_add(job, id, where, err, sizeof err);
    return rc == CLI_RCP_OK ? 0 : recipients_failed(rc, NULL, err);
}

static int read_recipients(mark_job *job, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return cli_error(path, "cannot open the recipients file"), -1;
    char err[160];
    int rc = cli_recipients_read(job, f, err, sizeof err);
    fclose(f);
    return rc == CLI_RCP_OK ? 0 : recipients_failed(rc, path, err);
}

/* File-name-safe form of a recipient id: [a-z0-9._@-], others become '-'. */
static void slugify(const char *id, char *out, size_t cap)
{
    size_t j = 0;
    for (const unsigned char *p = (const unsigned char *)id; *p && j + 1 < cap && j < 80; p++) {
        unsigned char c = (unsigned char)tolower(*p);
        out[j++] = (isalnum(c) || c == '.' || c == '_' || c == '@' || c == '-') && c < 0x80 ? (char)c : '-';
    }
    out[j] = 0;
    if ((j == 0 || out[0] == '.') && j + 2 <= cap) { /* no hidden or empty names */
        memmove(out + 1, out, j + 1);
        out[0] = 'r';
    }
}

static const char *ext_of(tm_format f)
{
    return f == TM_FORMAT_PNG ? "png" : f == TM_FORMAT_WEBP ? "webp" : "jpg";
}

/* Makes output names for every recipient: DIR/STEM.SLUG.EXT, made unique. */
#define DEFAULT_NAME "{stem}.{recipient}.{ext}"

/* TEMPLATE expanded into out (cap bytes): 0, or -1 with why set (an unknown
 * placeholder, an unclosed brace, a '/', or a name too long). */
static int expand_name(const char *tpl, const char *stem, const char *slug, size_t n, const char *ext, char *out,
                       size_t cap, const char **why)
{
    size_t len = 0;
    char num[24];
    snprintf(num, sizeof num, "%zu", n);
    for (const char *p = tpl; *p;) {
        const char *add = p;
        size_t k = 1;
        if (*p == '/') return *why = "holds a '/'", -1;
        if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
            p += 2;
        } else if (*p == '}') {
            return *why = "has a '}' with no '{'", -1;
        } else if (*p == '{') {
            const char *end = strchr(p, '}');
            if (!end) return *why = "has a '{' with no '}'", -1;
            size_t w = (size_t)(end - p - 1);
            if (w == 4 && !strncmp(p + 1, "stem", 4)) add = stem;
            else if (w == 9 && !strncmp(p + 1, "recipient", 9)) add = slug;
            else if (w == 1 && p[1] == 'n') add = num;
            else if (w == 3 && !strncmp(p + 1, "ext", 3)) add = ext;
            else return *why = "has an unknown placeholder (known: {stem} {recipient} {n} {ext})", -1;
            k = strlen(add);
            p = end + 1;
        } else {
            p++;
        }
        if (len + k >= cap) return *why = "makes a name too long", -1;
        memcpy(out + len, add, k);
        len += k;
    }
    out[len] = '\0';
    return 0;
}

/* Whether TEMPLATE is one --name accepts: expands, and names each copy apart. */
static int check_name(const char *tpl)
{
    char a[256], b[256];
    const char *why = NULL;
    if (expand_name(tpl, "s", "r1", 1, "e", a, sizeof a, &why) ||
        expand_name(tpl, "s", "r2", 2, "e", b, sizeof b, &why))
        return cli_usage("mark", "--name '%s' %s", tpl, why);
    if (!strcmp(a, b)) return cli_usage("mark", "--name '%s' must hold {recipient} or {n}", tpl);
    if (!strcmp(a, ".") || !strcmp(a, "..") || !a[0]) return cli_usage("mark", "--name '%s' names no file", tpl);
    return 0;
}

static int make_names(const mark_job *job, const char *in, const char *dir, const char *tpl, tm_format fmt,
                      char **names)
{
    const char *base = strrchr(in, '/');
    base = base ? base + 1 : in;
    char stem[256];
    snprintf(stem, sizeof stem, "%s", base);
    char *dot = strrchr(stem, '.');
    if (dot && dot != stem) *dot = 0;
    for (size_t i = 0; i < job->n; i++) {
        char slug[128], path[4096];
        slugify(job->id[i], slug, sizeof slug);
        int clash = 0;
        for (size_t k = 0; k < job->n; k++) {
            char other[128];
            if (k == i) continue;
            slugify(job->id[k], other, sizeof other);
            if (!strcmp(slug, other)) clash = 1;
        }
        if (clash) { /* disambiguate with a hash of the exact id */
            uint8_t h[32];
            tm_sha256(job->id[i], strlen(job->id[i]), h);
            size_t l = strlen(slug);
            snprintf(slug + l, sizeof slug - l, "-%02x%02x%02x%02x", h[0], h[1], h[2], h[3]);
        }
        char name[1024];
        const char *why = NULL;
        if (expand_name(tpl, stem, slug, i + 1, ext_of(fmt), name, sizeof name, &why))
            return cli_error(NULL, "--name '%s' %s", tpl, why), -1;
        snprintf(path, sizeof path, "%s/%s", dir, name);
        if (!(names[i] = strdup(path))) return cli_error(NULL, "out of memory"), -1;
    }
    return 0;
}

static void hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* The visible text for recipient into out (cap bytes): the template with
 * %r the recipient and %% a percent sign. Returns -1 with *why set when the
 * template holds another % or the text does not fit. */
static int expand_visible(const char *tpl, const char *recipient, char *out, size_t cap, const char **why)
{
    size_t j = 0;
    for (const char *p = tpl; *p; p++) {
        const char *piece = p;
        size_t len = 1;
        if (*p == '%') {
            if (p[1] == 'r') piece = recipient, len = strlen(recipient);
            else if (p[1] != '%') return *why = "has a '%' that is neither %r nor %%", -1;
            p++;
        }
        if (j + len >= cap) return *why = "makes a text longer than 256 bytes", -1;
        memcpy(out + j, piece, len);
        j += len;
    }
    out[j] = 0;
    return 0;
}

/* The copies of one run, made by cli_parallel's threads: each index is one
 * recipient's codeword, copy, hash and atomic write. After a failure the
 * copies not yet begun are skipped (status TM_ERR_INTERNAL, never
 * reported: the first failure in recipient order is a real one). */
typedef struct copies_run {
    tm_embedder *emb;
    const tm_save_options *so;
    const tm_visible_params *vis; /* the visible watermark (its text a template), or NULL */
    const mark_job *job;
    char **names;
    char **tmps;    /* the staged copies' temporary names */
    uint8_t (*shas)[32];
    uint8_t (*words)[TM_CODEWORD_BYTES];
    tm_status *sts;
    int *errs;      /* errno of a failed write */
    cli_progress progress;
    pthread_mutex_t lock;  /* failed, done and the progress line */
    int failed;
    size_t done;
} copies_run;

/* The recipient's copy with the visible watermark drawn first, then the
 * invisible mark over it (so the letters do not cut into the mark), encoded
 * into *data. The text was checked for every recipient before any work. */
static tm_status visible_copy(tm_embedder *emb, const tm_visible_params *vis, const char *who,
                              const tm_save_options *so, uint8_t **data, size_t *len)
{
    char text[TM_VISIBLE_MAX_TEXT + 1];
    const char *why;
    tm_visible_params vp = *vis;
    if (expand_visible(vis->text, who, text, sizeof text, &why)) return TM_ERR_ARG;
    vp.text = text;
    tm_image *img = NULL;
    tm_status st = tm_embedder_original(emb, &img);
    if (st == TM_OK) st = tm_visible_apply(img, &vp, NULL, 0);
    if (st == TM_OK) st = tm_embedder_mark_onto(emb, who, img);
    if (st == TM_OK) st = tm_image_encode(img, so, data, len);
    tm_image_free(img);
    return st;
}

/* Checks the visible watermark before any work: every recipient's text
 * (tm_visible_check), and the font, found once for all the copies (into
 * font, cap bytes) and loaded by one drawing on a small image. Returns -1
 * after an error message. */
static int check_visible(const tm_visible_params *vis, const mark_job *job, char *font, size_t cap)
{
    char err[256] = "";
    if (tm_visible_font(vis->font, font, cap, err, sizeof err) != TM_OK)
        return cli_error(NULL, "--visible: %s", err[0] ? err : "no font found"), -1;
    char text[TM_VISIBLE_MAX_TEXT + 1];
    tm_visible_params vp = *vis;
    vp.text = text;
    vp.font = font;
    for (size_t i = 0; i < job->n; i++) {
        const char *why;
        if (expand_visible(vis->text, job->id[i], text, sizeof text, &why))
            return cli_usage("mark", "--visible '%s' %s (for %s)", vis->text, why, job->id[i]), -1;
        if (tm_visible_check(&vp, err, sizeof err) != TM_OK) return cli_error(NULL, "--visible: %s", err), -1;
    }
    tm_image *probe = NULL;
    if (tm_image_create(64, 64, 3, &probe) != TM_OK) return cli_error(NULL, "out of memory"), -1;
    tm_status st = tm_visible_apply(probe, &vp, err, sizeof err); /* the last recipient's text */
    tm_image_free(probe);
    if (st != TM_OK) return cli_error(NULL, "--visible: %s", err), -1;
    return 0;
}

static void make_copy(void *ctx, size_t i)
{
    copies_run *cr = ctx;
    pthread_mutex_lock(&cr->lock);
    int skip = cr->failed;
    pthread_mutex_unlock(&cr->lock);
    if (skip) {
        cr->sts[i] = TM_ERR_INTERNAL;
        return;
    }
    uint8_t *data = NULL;
    size_t len = 0;
    const char *who = cr->job->id[i];
    tm_status st = tm_embedder_codeword(cr->emb, who, cr->words[i]);
    if (st == TM_OK && cr->vis) st = visible_copy(cr->emb, cr->vis, who, cr->so, &data, &len);
    else if (st == TM_OK) st = tm_embedder_mark_encode(cr->emb, who, cr->so, &data, &len);
    if (st == TM_OK) st = tm_sha256(data, len, cr->shas[i]);
    char tmp[PATH_MAX];
    if (st == TM_OK) st = tm_file_stage(cr->names[i], data, len, 0644, tmp, sizeof tmp);
    cr->errs[i] = st == TM_OK ? 0 : errno;
    if (st == TM_OK && !(cr->tmps[i] = strdup(tmp))) {
        unlink(tmp);
        st = TM_ERR_NOMEM;
    }
    free(data);
    cr->sts[i] = st;
    pthread_mutex_lock(&cr->lock);
    if (st == TM_OK) {
        cr->done++;
        cli_progress_show(&cr->progress, cr->done, cr->job->n);
    } else {
        cr->failed = 1;
    }
    pthread_mutex_unlock(&cr->lock);
}

/* Whether the file at path is the copy the registry records for (image,
 * recipient) at that path, byte for byte: what a run killed after its
 * commit left in place, and what this run would write again. */
static int recorded_here(tm_registry *reg, const char *image_id, const char *recipient, const char *path)
{
    tm_reg_copy *rows = NULL;
    size_t n = 0;
    if (tm_registry_load_copies_by_recipient(reg, recipient, &rows, &n) != TM_OK) return 0;
    int same = 0;
    for (size_t i = 0; i < n && !same; i++) {
        if (strcmp(rows[i].image_id, image_id) || strcmp(rows[i].out_path, path)) continue;
        uint8_t *data = NULL, sha[32];
        size_t len = 0;
        same = tm_file_read(path, (size_t)1 << 30, &data, &len) == TM_OK && tm_sha256(data, len, sha) == TM_OK &&
               memcmp(sha, rows[i].out_sha256, 32) == 0;
        free(data);
    }
    tm_reg_copies_free(rows, n);
    return same;
}

int cmd_mark(int argc, char **argv)
{
    static const struct option opts[] = {
        {"key", required_argument, NULL, 'k'},
        {"registry", required_argument, NULL, 'r'},
        {"recipient", required_argument, NULL, 'R'},
        {"recipients", required_argument, NULL, 'F'},
        {"output", required_argument, NULL, 'o'},
        {"out-dir", required_argument, NULL, 'd'},
        {"name", required_argument, NULL, 'N'},
        {"format", required_argument, NULL, 'T'},
        {"quality", required_argument, NULL, 'q'},
        {"strength", required_argument, NULL, 'S'},
        {"max-pixels", required_argument, NULL, 'M'},
        {"max-size", required_argument, NULL, 'X'},
        {"visible", required_argument, NULL, 'V'},
        {"visible-opacity", required_argument, NULL, 'A'},
        {"visible-angle", required_argument, NULL, 'G'},
        {"visible-size", required_argument, NULL, 'Z'},
        {"visible-font", required_argument, NULL, 'P'},
        {"force", no_argument, NULL, 'f'},
        {"jobs", required_argument, NULL, 'j'},
        {"json", no_argument, NULL, 'J'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *keyfile = NULL, *regfile = NULL, *output = NULL, *outdir = NULL, *name_tpl = NULL;
    tm_format fmt = TM_FORMAT_UNKNOWN;
    int quality = 0, force = 0, json = 0, jobs = 1, jobs_set = 0, made_dir = 0, c, rc = CLI_ERR;
    tm_mark_params mp;
    tm_mark_params_init(&mp);
    tm_load_options lo;
    tm_load_options_init(&lo);
    tm_visible_params vis;
    tm_visible_params_init(&vis);
    int vis_tuned = 0; /* a --visible-* option given */
    mark_job job = {0};
    char **names = NULL;
    char **tmps = NULL;
    int64_t *ids = NULL;
    tm_key *key = NULL;
    tm_registry *reg = NULL;
    tm_embedder *emb = NULL;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":k:r:o:d:q:fj:h", opts, NULL)) != -1) {
        uint64_t u;
        double d;
        switch (c) {
        case 'k': keyfile = optarg; break;
        case 'r': regfile = optarg; break;
        case 'R':
            if (add_recipient(&job, optarg, "--recipient")) goto out;
            break;
        case 'F':
            if (read_recipients(&job, optarg)) goto out;
            break;
        case 'o': output = optarg; break;
        case 'd': outdir = optarg; break;
        case 'N':
            if (check_name(optarg)) goto out;
            name_tpl = optarg;
            break;
        case 'T':
            if (!strcmp(optarg, "jpg") || !strcmp(optarg, "jpeg")) fmt = TM_FORMAT_JPEG;
            else if (!strcmp(optarg, "png")) fmt = TM_FORMAT_PNG;
            else if (!strcmp(optarg, "webp")) fmt = TM_FORMAT_WEBP;
            else {
                cli_usage("mark", "--format wants jpg, png or webp, not '%s'", optarg);
                goto out;
            }
            break;
        case 'q':
            if (cli_parse_u64(optarg, &u) || u < 1 || u > 100) {
                cli_usage("mark", "--quality wants 1..100, not '%s'", optarg);
                goto out;
            }
            quality = (int)u;
            break;
        case 'S':
            if (cli_parse_double(optarg, &d) || d <= 0 || d > 20) {
                cli_usage("mark", "--strength wants a number in (0, 20], not '%s'", optarg);
                goto out;
            }
            mp.strength = d;
            break;
        case 'M':
            if (cli_parse_max_pixels("mark", optarg, &lo)) goto out;
            break;
        case 'X':
            if (cli_parse_u64(optarg, &u) || u < 256 || u > 65500) {
                cli_usage("mark", "--max-size wants a longer side of 256..65500 pixels, not '%s'", optarg);
                goto out;
            }
            lo.max_side = (int)u;
            break;
        case 'V': vis.text = optarg; break;
        case 'A':
            if (cli_parse_double(optarg, &vis.opacity) || !(vis.opacity > 0 && vis.opacity <= 1)) {
                cli_usage("mark", "--visible-opacity wants a number in (0, 1], not '%s'", optarg);
                goto out;
            }
            vis_tuned = 1;
            break;
        case 'G':
            if (cli_parse_double(optarg, &vis.angle_deg) || vis.angle_deg < -180 || vis.angle_deg > 180) {
                cli_usage("mark", "--visible-angle wants degrees in [-180, 180], not '%s'", optarg);
                goto out;
            }
            vis_tuned = 1;
            break;
        case 'Z':
            if (cli_parse_double(optarg, &vis.size) || !(vis.size > 0 && vis.size <= 1)) {
                cli_usage("mark", "--visible-size wants a fraction in (0, 1], not '%s'", optarg);
                goto out;
            }
            vis_tuned = 1;
            break;
        case 'P':
            vis.font = optarg;
            vis_tuned = 1;
            break;
        case 'f': force = 1; break;
        case 'j':
            if (cli_parse_jobs("mark", optarg, &jobs)) goto out;
            jobs_set = 1;
            break;
        case 'J': json = 1; break;
        case 'h':
            mark_help();
            rc = CLI_OK;
            goto out;
        default: cli_bad_option("mark", c, argv); goto out;
        }
    }
    if (optind + 1 != argc) {
        cli_usage("mark", optind >= argc ? "want the input image IN" : "want exactly one input image");
        goto out;
    }
    const char *in = argv[optind];
    if (!jobs_set && cli_default_jobs("mark", &jobs)) goto out;
    if (!keyfile || !regfile) {
        cli_usage("mark", "want --key and --registry");
        goto out;
    }
    if (job.n == 0) {
        cli_usage("mark", "want at least one --recipient or a --recipients file");
        goto out;
    }
    if (!!output == !!outdir) {
        cli_usage("mark", "want either -o OUT (one recipient) or --out-dir DIR");
        goto out;
    }
    if (output && name_tpl) {
        cli_usage("mark", "--name names the copies of --out-dir; -o OUT names its own");
        goto out;
    }
    if (vis_tuned && !vis.text) {
        cli_usage("mark", "--visible-opacity, --visible-angle, --visible-size and --visible-font go with --visible TEXT");
        goto out;
    }
    char font[4096];
    if (vis.text) {
        if (check_visible(&vis, &job, font, sizeof font)) goto out;
        vis.font = font;
        if (cli_verbosity == CLI_VERBOSE)
            fprintf(stderr, "tracemark: visible text '%s' in %s, opacity %g, at %g deg, size %g\n", vis.text, font,
                    vis.opacity, vis.angle_deg, vis.size);
    }
    if (output && job.n != 1) {
        cli_usage("mark", "-o names one copy but there are %zu recipients: use --out-dir", job.n);
        goto out;
    }
    if (output) {
        fmt = tm_format_from_path(output);
        if (fmt == TM_FORMAT_UNKNOWN) {
            cli_usage("mark", "%s: cannot tell the output format: use .jpg, .jpeg, .png or .webp", output);
            goto out;
        }
    } else if (fmt == TM_FORMAT_UNKNOWN) {
        fmt = tm_format_from_path(in);
        if (fmt == TM_FORMAT_UNKNOWN) fmt = TM_FORMAT_JPEG;
    }

    tm_status st = tm_key_load(keyfile, &key);
    if (st != TM_OK) {
        cli_input_status(keyfile, st);
        goto out;
    }
    tm_image_info info;
    st = tm_embedder_load(key, in, &lo, &mp, &emb, &info);
    if (st != TM_OK) {
        cli_input_status(in, st);
        goto out;
    }
    if (cli_verbosity == CLI_VERBOSE) {
        int w, h;
        tm_embedder_size(emb, &w, &h);
        int sw = info.orientation >= 5 ? info.height : info.width, sh = info.orientation >= 5 ? info.width : info.height;
        fprintf(stderr, "tracemark: %s: %dx%d %s", in, sw, sh, tm_format_name(info.format));
        if (w != sw || h != sh) fprintf(stderr, ", shrunk to %dx%d", w, h);
        fprintf(stderr, "; image %s; mark period %d px, strength %g\n", tm_embedder_image_id(emb),
                125 * tm_mark_tile_scale(w, h), mp.strength);
    }
    if (outdir) { /* made here is removed again if the run fails */
        struct stat sb;
        if (mkdir(outdir, 0755) == 0) {
            made_dir = 1;
        } else if (errno != EEXIST) {
            cli_errno_error(outdir, "cannot create the output directory", errno);
            goto out;
        } else if (stat(outdir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            cli_error(outdir, "exists and is not a directory");
            goto out;
        } else if (access(outdir, W_OK | X_OK) != 0) {
            cli_errno_error(outdir, "cannot write in the output directory", errno);
            goto out;
        }
    }
    names = calloc(job.n, sizeof *names);
    tmps = calloc(job.n, sizeof *tmps);
    ids = calloc(job.n, sizeof *ids);
    if (!names || !tmps || !ids) {
        cli_error(NULL, "out of memory");
        goto out;
    }
    if (output) {
        if (!(names[0] = strdup(output))) goto out;
    } else if (make_names(&job, in, outdir, name_tpl ? name_tpl : DEFAULT_NAME, fmt, names)) {
        goto out;
    }
    st = tm_registry_open(regfile, 1, &reg);
    if (st == TM_OK) st = tm_registry_check_key(reg, key);
    if (st != TM_OK) {
        cli_registry_status(regfile, reg, st);
        goto out;
    }
    /* Before any work: each name free, or a file to replace (--force), or
     * the very copy recorded there already. Renames into place come after
     * the registry's commit, so what could make one fail is refused here. */
    for (size_t i = 0; i < job.n; i++) {
        struct stat sb;
        if (lstat(names[i], &sb) != 0) continue;
        if (!S_ISREG(sb.st_mode)) {
            cli_error(names[i], "exists and is not a file");
            goto out;
        }
        if (!force && !recorded_here(reg, tm_embedder_image_id(emb), job.id[i], names[i])) {
            cli_error(names[i], "file exists (use --force to replace it)");
            goto out;
        }
    }
    tm_save_options so;
    tm_save_options_init(&so);
    so.format = fmt;
    so.quality = quality ? quality : info.jpeg_quality;
    if (fmt == TM_FORMAT_JPEG && info.format == TM_FORMAT_JPEG) so.subsampling = info.subsampling;
    if (fmt == TM_FORMAT_PNG && info.bit_depth == 16) so.bit_depth = 16;
    uint8_t (*shas)[32] = calloc(job.n, 32);
    uint8_t (*words)[TM_CODEWORD_BYTES] = calloc(job.n, TM_CODEWORD_BYTES);
    tm_status *sts = calloc(job.n, sizeof *sts);
    int *errs = calloc(job.n, sizeof *errs);
    if (!shas || !words || !sts || !errs) {
        free(shas);
        free(words);
        free(sts);
        free(errs);
        cli_error(NULL, "out of memory");
        goto out;
    }
    copies_run cr = {.emb = emb, .so = &so, .job = &job, .names = names, .shas = shas, .words = words,
                     .sts = sts, .errs = errs, .tmps = tmps, .vis = vis.text ? &vis : NULL};
    cli_progress_start(&cr.progress, "copies");
    pthread_mutex_init(&cr.lock, NULL);
    cli_parallel(job.n, jobs, make_copy, &cr);
    pthread_mutex_destroy(&cr.lock);
    cli_progress_clear(&cr.progress);
    int failed = 0;
    for (size_t i = 0; i < job.n && !failed; i++)
        if (sts[i] != TM_OK) { /* the first failure in recipient order; later ones may not have run */
            cli_output_status(names[i], sts[i], errs[i]);
            failed = 1;
        }
    free(sts);
    free(errs);

    if (!failed) {
        tm_reg_image ri;
        memset(&ri, 0, sizeof ri);
        snprintf(ri.image_id, sizeof ri.image_id, "%s", tm_embedder_image_id(emb));
        tm_embedder_content_sha256(emb, ri.content_sha256);
        tm_embedder_size(emb, &ri.width, &ri.height);
        char *where = realpath(in, NULL); /* so trace finds it from anywhere */
        ri.original_path = where ? where : (char *)in;
        ri.phash = tm_embedder_phash(emb);
        ri.params = (char *)tm_scheme_params_json();
        int64_t now = (int64_t)time(NULL);
        if (st == TM_OK) st = tm_registry_begin(reg);
        if (st == TM_OK) st = tm_registry_put_image(reg, &ri);
        for (size_t i = 0; i < job.n && st == TM_OK; i++) {
            tm_reg_copy rc_;
            memset(&rc_, 0, sizeof rc_);
            rc_.image_id = ri.image_id;
            rc_.recipient = job.id[i];
            rc_.out_path = names[i];
            memcpy(rc_.out_sha256, shas[i], 32);
            rc_.created = now;
            rc_.code_len = TM_CODEWORD_BYTES * 8;
            rc_.codeword = words[i];
            st = tm_registry_put_copy(reg, key, &rc_, &ids[i]);
        }
        if (st == TM_OK) st = tm_registry_commit(reg);
        if (st != TM_OK) {
            cli_registry_status(regfile, reg, st);
            tm_registry_rollback(reg);
            failed = 1;
        }
        free(where);
    }
    /* Recorded: the copies go in place. A failure now leaves rows for
     * copies not in place (no file names a copy the registry lacks). */
    for (size_t i = 0; i < job.n && !failed; i++) {
        if ((st = tm_file_publish(tmps[i], names[i], 0)) != TM_OK) {
            cli_output_status(names[i], st, errno);
            failed = 1;
        }
        free(tmps[i]);
        tmps[i] = NULL;
    }
    if (failed) {
        for (size_t i = 0; i < job.n; i++)
            if (tmps[i]) unlink(tmps[i]);
        free(shas);
        free(words);
        goto out;
    }

    if (json) {
        printf("{\"image\": \"%s\", \"input\": ", tm_embedder_image_id(emb));
        cli_json_string(stdout, in);
        printf(", \"copies\": [");
        for (size_t i = 0; i < job.n; i++) {
            char h[65];
            hex(shas[i], 32, h);
            printf("%s{\"recipient\": ", i ? ", " : "");
            cli_json_string(stdout, job.id[i]);
            printf(", \"copy_id\": %lld, \"file\": ", (long long)ids[i]);
            cli_json_string(stdout, names[i]);
            printf(", \"sha256\": \"%s\"}", h);
        }
        printf("]}\n");
    } else {
        for (size_t i = 0; i < job.n; i++) {
            printf("%s -> %s", job.id[i], names[i]);
            if (cli_verbosity == CLI_VERBOSE) {
                char h[65];
                hex(shas[i], 32, h);
                printf(" (copy %lld, sha256 %s)", (long long)ids[i], h);
            }
            putchar('\n');
        }
        printf("marked %zu cop%s of %s (image %s) in %s\n", job.n, job.n == 1 ? "y" : "ies", in,
               tm_embedder_image_id(emb), regfile);
    }
    free(shas);
    free(words);
    rc = CLI_OK;
out:
    if (rc != CLI_OK && made_dir) rmdir(outdir); /* only if still empty */
    tm_embedder_free(emb);
    tm_registry_free(reg);
    tm_key_free(key);
    for (size_t i = 0; names && i < job.n; i++) free(names[i]);
    for (size_t i = 0; tmps && i < job.n; i++) free(tmps[i]);
    cli_recipients_clear(&job);
    free(names);
    free(tmps);
    free(ids);
    return rc;
}
