/* cmd_trace.c -- `tracemark trace`: name the recipient whose copy leaked.
 *
 * Loads the registry's copies once, then for every suspect (files, or the
 * images in a directory) reads the mark, scores every copy and prints the
 * verdict as text or as one JSON object per suspect (DESIGN.md contract).
 * An accused row's integrity tag is checked before it is reported: a
 * tampered registry is an error, never evidence. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static void trace_help(void)
{
    printf("Usage: tracemark trace -k KEYFILE -r REGISTRY [OPTIONS] SUSPECT...\n"
           "\n"
           "Reads the mark in each SUSPECT image (JPEG, PNG or WebP; a directory means\n"
           "the images in it), scores every copy recorded in REGISTRY, and accuses a\n"
           "recipient only when the chance that an innocent copy scores as high is below\n"
           "the budget (--fpr), counting every copy scored. Otherwise it says 'none' (no\n"
           "mark under this key) or 'inconclusive' (a mark is there but cannot be\n"
           "attributed, or the image is too small or flat to read).\n"
           "\n"
           "Copies combined by several recipients (averaged, or pieced together) carry\n"
           "all their marks: every copy that passes the bound is accused, and their\n"
           "number ('colluders' in JSON) is the least number of recipients involved.\n"
           "Each colluder's mark is noise to the others', so after the first accusations\n"
           "trace takes the accused copies' marks out of the suspect and scores the\n"
           "rest again, up to four rounds ('round' in JSON); the rounds share the\n"
           "budget, so it holds over all of them.\n"
           "\n"
           "With the unmarked original at hand the trace is far stronger (informed\n"
           "trace): the suspect is registered to it (scale, turn, mirror, shift and\n"
           "shear, found from the images alone), brought back to its frame, and the\n"
           "original, tone-matched, is taken out before the mark is read. trace does\n"
           "this with --original, and by itself when the registry records where the\n"
           "originals are (up to 4 of them) and they are still there, unchanged. A\n"
           "suspect that fits no original is traced blind. The bound holds either way.\n"
           "\n"
           "Options:\n"
           "  -k, --key FILE        the key the copies were marked with\n"
           "  -r, --registry FILE   the registry the copies were recorded in\n"
           "      --fpr P           false-accusation budget per suspect (default 1e-6)\n"
           "      --original FILE   the unmarked original (repeat for several: each is\n"
           "                        tried in turn); replaces those the registry names\n"
           "      --blind           never use an original\n"
           "      --json            one JSON object per suspect on stdout\n"
           "  -j, --jobs N          read N suspects at a time, on N threads (default 1, or\n"
           "                        TRACEMARK_THREADS); results still in the order given\n"
           "      --max-pixels N    refuse images larger than N pixels (default 200000000)\n"
           "  -h, --help            show this help\n"
           "\n"
           "log10_p is the log10 of an upper bound on the probability that any innocent\n"
           "copy among those scored would reach the accused copy's score.\n"
           "\n"
           "Example:\n"
           "  tracemark trace -k team.key -r team.db --json leaked.jpg\n"
           "\n"
           "Exit status: 0 a recipient accused, 1 no accusation (none or inconclusive),\n"
           "2 error (unreadable input, bad key, corrupt or tampered registry).\n");
}

typedef struct suspects {
    char **v;
    size_t n, cap;
} suspects;

static int push(suspects *s, const char *path)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 16;
        char **g = realloc(s->v, nc * sizeof *g);
        if (!g) return -1;
        s->v = g;
        s->cap = nc;
    }
    return (s->v[s->n] = strdup(path)) ? (int)(s->n++, 0) : -1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds path, or the image files directly inside it when it is a directory. */
static int collect(suspects *s, const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) return push(s, path);
    DIR *d = opendir(path);
    if (!d) return push(s, path); /* reported as unreadable later */
    size_t first = s->n;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) && rc == 0) {
        if (tm_format_from_path(e->d_name) == TM_FORMAT_UNKNOWN) continue;
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", path, e->d_name);
        rc = push(s, full);
    }
    closedir(d);
    if (s->n > first) qsort(s->v + first, s->n - first, sizeof *s->v, cmp_str);
    if (rc == 0 && s->n == first) return push(s, path); /* no images in it: reported, not skipped */
    return rc;
}

/* The unmarked originals an informed trace tries, in order. */
typedef struct originals {
    const tm_original **o;
    char **path;
    size_t n;
} originals;

#define AUTO_ORIGINALS 4 /* the registry's originals used without --original, at most */

static void originals_free(originals *os)
{
    for (size_t i = 0; i < os->n; i++) {
        tm_original_free((tm_original *)os->o[i]);
        free(os->path[i]);
    }
    free(os->o);
    free(os->path);
    memset(os, 0, sizeof *os);
}

/* Reads the original at path (its luminance, prepared for registration).
 * When want_id is given, the file must be the original of that registry
 * image (its image id, which the content determines); otherwise it is
 * skipped with a note. Returns -1 after an error message. */
static int originals_add(originals *os, const char *path, const char *want_id, const tm_load_options *lo)
{
    tm_original *o = NULL;
    char id[TM_IMAGE_ID_LEN + 1] = "";
    tm_status st = tm_original_load(path, lo, &o, id);
    if (want_id && (st != TM_OK || strcmp(id, want_id) != 0)) {
        fprintf(stderr, "tracemark: note: %s: %s; traced without it\n", path,
                st == TM_OK ? "not the original the registry recorded there (its content changed)" : tm_strerror(st));
        tm_original_free(o);
        return 0;
    }
    if (st != TM_OK) return cli_input_status(path, st), -1;
    const tm_original **go = realloc(os->o, (os->n + 1) * sizeof *go);
    if (go) os->o = go;
    char **gp = go ? realloc(os->path, (os->n + 1) * sizeof *gp) : NULL;
    if (gp) os->path = gp;
    char *dup = gp ? strdup(path) : NULL;
    if (!dup) {
        tm_original_free(o);
        cli_error(NULL, "out of memory");
        return -1;
    }
    os->o[os->n] = o;
    os->path[os->n++] = dup;
    return 0;
}

/* The registry's originals that are still where it recorded them. */
typedef struct recorded {
    char *id[AUTO_ORIGINALS], *path[AUTO_ORIGINALS];
    size_t n, found;
} recorded;

static int recorded_one(void *ud, const tm_reg_image *img, uint64_t n_copies)
{
    recorded *r = ud;
    (void)n_copies;
    if (!img->original_path || access(img->original_path, R_OK) != 0) return 0;
    if (r->found++ < AUTO_ORIGINALS) {
        r->id[r->n] = strdup(img->image_id);
        r->path[r->n] = strdup(img->original_path);
        r->n++;
    }
    return 0;
}

static const char *verdict_name(tm_verdict v)
{
    return v == TM_VERDICT_ACCUSED ? "accused" : v == TM_VERDICT_INCONCLUSIVE ? "inconclusive" : "none";
}

static void json_copy(const tm_reg_copy *c, const tm_accusation *a)
{
    printf("{\"recipient\": ");
    cli_json_string(stdout, c->recipient);
    printf(", \"image\": \"%s\", \"copy_id\": %lld, \"score\": ", c->image_id, (long long)c->copy_id);
    cli_json_number(stdout, "%.4g", a->score);
    printf(", \"z\": ");
    cli_json_number(stdout, "%.2f", a->z);
    printf(", \"log10_p\": ");
    cli_json_number(stdout, "%.2f", a->log10_p);
    printf(", \"round\": %d}", a->round);
}

static void print_json(const char *file, const tm_trace_result *r, const tm_reg_copy *copies, const originals *os,
                       double fpr, double ms)
{
    printf("{\"file\": ");
    cli_json_string(stdout, file);
    printf(", \"verdict\": \"%s\", \"accused\": [", verdict_name(r->verdict));
    for (size_t i = 0; i < r->n_accused; i++) {
        if (i) printf(", ");
        json_copy(&copies[r->accused[i].index], &r->accused[i]);
    }
    printf("], \"colluders\": %zu, \"bound\": %g, \"transform\": {\"scale\": ", r->n_accused, fpr);
    cli_json_number(stdout, "%.4g", r->scale);
    printf(", \"rotation_deg\": ");
    cli_json_number(stdout, "%.3g", r->rotation_deg);
    printf(", \"aspect\": ");
    cli_json_number(stdout, "%.4g", r->aspect);
    printf(", \"flip\": %s, \"offset\": [%d, %d]}, \"elapsed_ms\": %.0f, \"reason\": ", r->flip ? "true" : "false",
           r->offset_x, r->offset_y, ms);
    cli_json_string(stdout, r->reason);
    printf(", \"informed\": ");
    if (!r->informed) {
        printf("null");
    } else {
        const tm_registration *g = &r->registration;
        printf("{\"original\": ");
        if (r->original >= 0) cli_json_string(stdout, os->path[r->original]);
        else printf("null");
        printf(", \"registered\": %s, \"read\": \"%s\", \"ncc\": ", g->found ? "true" : "false",
               r->difference ? "difference" : "suspect");
        cli_json_number(stdout, "%.4f", g->ncc);
        if (g->found) {
            printf(", \"detail\": ");
            cli_json_number(stdout, "%.3f", g->detail);
            printf(", \"overlap\": ");
            cli_json_number(stdout, "%.3f", g->overlap);
            printf(", \"residual\": ");
            cli_json_number(stdout, "%.2f", g->residual);
            printf(", \"scale\": ");
            cli_json_number(stdout, "%.5g", g->scale);
            printf(", \"rotation_deg\": ");
            cli_json_number(stdout, "%.4g", g->rotation_deg);
            printf(", \"aspect\": ");
            cli_json_number(stdout, "%.4g", g->aspect);
            printf(", \"flip\": %s, \"affine\": [", g->flip ? "true" : "false");
            for (int i = 0; i < 6; i++) {
                if (i) printf(", ");
                cli_json_number(stdout, "%.6g", g->affine[i]);
            }
            printf("]");
        }
        printf("}");
    }
    printf(", \"copies_scored\": %zu, \"pilot_z\": ", r->n_scored);
    cli_json_number(stdout, "%.2f", r->pilot_z);
    printf(", \"pilot_log10_p\": ");
    cli_json_number(stdout, "%.2f", r->pilot_log10_p);
    printf(", \"candidates\": [");
    for (size_t i = 0; i < r->n_top; i++) {
        if (i) printf(", ");
        json_copy(&copies[r->top[i].index], &r->top[i]);
    }
    printf("]}\n");
}

/* "6.3e-24" for a log10 value, so people read probabilities, not exponents. */
static void fmt_prob(double log10_p, char *buf, size_t cap)
{
    double e = floor(log10_p), m = pow(10, log10_p - e);
    if (log10_p > -3) snprintf(buf, cap, "%.3g", pow(10, log10_p));
    else snprintf(buf, cap, "%.1fe%.0f", m, e);
}

static void print_text(const char *file, const tm_trace_result *r, const tm_reg_copy *copies, const originals *os,
                       double fpr, double ms)
{
    if (r->verdict == TM_VERDICT_ACCUSED) {
        for (size_t i = 0; i < r->n_accused; i++) {
            const tm_reg_copy *c = &copies[r->accused[i].index];
            char p[32];
            fmt_prob(r->accused[i].log10_p, p, sizeof p);
            printf("%s: ACCUSED %s (copy %lld of image %s): chance an innocent copy scores this high <= %s%s\n", file,
                   c->recipient, (long long)c->copy_id, c->image_id, p,
                   r->accused[i].round > 1 ? " (once the marks of the copies accused before it were taken out)" : "");
        }
        if (r->n_accused > 1)
            printf("  collusion: the suspect carries the marks of %zu registered copies, so at least %zu recipients "
                   "combined them (the chance that any of them is innocent is within the budget, %g)\n",
                   r->n_accused, r->n_accused, fpr);
    } else {
        printf("%s: %s: %s (budget %g, %zu copies scored)\n", file,
               r->verdict == TM_VERDICT_NONE ? "NONE" : "INCONCLUSIVE", r->reason, fpr, r->n_scored);
        if (r->n_top && r->top[0].log10_p < -1) {
            const tm_reg_copy *c = &copies[r->top[0].index];
            char p[32];
            fmt_prob(r->top[0].log10_p, p, sizeof p);
            printf("  best candidate: %s, bound %s (not enough to accuse)\n", c->recipient, p);
        }
    }
    printf("  mark pilot z %.1f", r->pilot_z);
    if (r->verdict != TM_VERDICT_NONE) {
        double rot = fabs(r->rotation_deg) < 0.05 ? 0 : r->rotation_deg;
        printf("; suspect is the original");
        if (r->flip) printf(" mirrored");
        if (rot != 0) printf("%s turned %.1f deg counter-clockwise", r->flip ? " and" : "", rot);
        int scaled = fabs(r->scale - 1) > 0.005, stretched = fabs(r->aspect - 1) > 0.005;
        if (scaled) printf("%s scaled %.3gx", r->flip || rot != 0 ? "," : "", r->scale);
        if (stretched) printf("%s stretched %.3gx in width", r->flip || rot != 0 || scaled ? "," : "", r->aspect);
        if (!r->flip && rot == 0 && !scaled && !stretched) printf(" as marked");
        printf(", tile grid at (%d, %d)", r->offset_x, r->offset_y);
    }
    printf("; %.0f ms\n", ms);
    if (r->informed && r->registration.found) {
        const tm_registration *g = &r->registration;
        printf("  informed: the suspect is %s at scale %.3g", os->path[r->original], g->scale);
        if (fabs(g->rotation_deg) >= 0.05) printf(", turned %.1f deg", g->rotation_deg);
        if (g->flip) printf(", mirrored");
        printf(" (correlation %.3f, residual %.1f levels); %s\n", g->ncc, g->residual,
               r->difference ? "the original was taken out before reading"
                             : "the suspect alone showed more of the mark, and was read");
    } else if (r->informed && r->registration.ncc > 0) {
        printf("  informed: the suspect fits no original given (best correlation %.2f): traced blind\n",
               r->registration.ncc);
    } else if (r->informed) {
        printf("  informed: the suspect could not be registered to the original (too small or too flat): traced "
               "blind\n");
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* One suspect read by a thread of cli_parallel: its status, result and time. */
typedef struct traced {
    tm_status st;
    tm_trace_result r;
    double ms;
} traced;

typedef struct trace_run {
    const tm_key *key;
    const originals *orig;
    const tm_load_options *lo;
    const tm_trace_params *tp;
    const tm_reg_copy *copies;
    size_t n_copies;
    char **paths;   /* this chunk's suspects */
    traced *slot;   /* and their results */
} trace_run;

static void trace_one(void *ctx, size_t i)
{
    trace_run *run = ctx;
    traced *t = &run->slot[i];
    double t0 = now_ms();
    tm_image *img;
    memset(t, 0, sizeof *t);
    t->st = tm_image_load(run->paths[i], run->lo, &img, NULL);
    if (t->st != TM_OK) return;
    if (run->orig->n)
        t->st = tm_trace_run_informed(run->key, img, run->orig->o, run->orig->n, run->copies, run->n_copies,
                                      run->tp, &t->r);
    else
        t->st = tm_trace_run(run->key, img, run->copies, run->n_copies, run->tp, &t->r);
    tm_image_free(img);
    t->ms = now_ms() - t0;
}

int cmd_trace(int argc, char **argv)
{
    static const struct option opts[] = {
        {"key", required_argument, NULL, 'k'},
        {"registry", required_argument, NULL, 'r'},
        {"fpr", required_argument, NULL, 'P'},
        {"json", no_argument, NULL, 'J'},
        {"jobs", required_argument, NULL, 'j'},
        {"max-pixels", required_argument, NULL, 'M'},
        {"original", required_argument, NULL, 'O'},
        {"blind", no_argument, NULL, 'B'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *keyfile = NULL, *regfile = NULL;
    int json = 0, jobs = 1, jobs_set = 0, blind = 0, c, rc = CLI_ERR;
    suspects given = {0}; /* --original files */
    originals orig = {0};
    recorded rec = {0};
    tm_trace_params tp;
    tm_trace_params_init(&tp);
    tm_load_options lo;
    tm_load_options_init(&lo);
    lo.luma_only = 1; /* all the trace reads */
    suspects sus = {0};
    tm_key *key = NULL;
    tm_registry *reg = NULL;
    tm_reg_copy *copies = NULL;
    size_t n_copies = 0;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":k:r:j:h", opts, NULL)) != -1) {
        switch (c) {
        case 'k': keyfile = optarg; break;
        case 'r': regfile = optarg; break;
        case 'P':
            if (cli_parse_double(optarg, &tp.fpr) || !(tp.fpr > 0 && tp.fpr < 1)) {
                cli_usage("trace", "--fpr wants a probability in (0, 1), not '%s'", optarg);
                goto out;
            }
            break;
        case 'J': json = 1; break;
        case 'j':
            if (cli_parse_jobs("trace", optarg, &jobs)) goto out;
            jobs_set = 1;
            break;
        case 'M':
            if (cli_parse_max_pixels("trace", optarg, &lo)) goto out;
            break;
        case 'O':
            if (push(&given, optarg)) {
                cli_error(NULL, "out of memory");
                goto out;
            }
            break;
        case 'B': blind = 1; break;
        case 'h':
            trace_help();
            rc = CLI_OK;
            goto out;
        default: cli_bad_option("trace", c, argv); goto out;
        }
    }
    if (!jobs_set && cli_default_jobs("trace", &jobs)) goto out;
    if (!keyfile || !regfile) {
        cli_usage("trace", "want --key and --registry");
        goto out;
    }
    if (optind >= argc) {
        cli_usage("trace", "want at least one SUSPECT image");
        goto out;
    }
    if (blind && given.n) {
        cli_usage("trace", "--blind and --original exclude each other");
        goto out;
    }
    for (int i = optind; i < argc; i++)
        if (collect(&sus, argv[i])) {
            cli_error(NULL, "out of memory");
            goto out;
        }

    tm_status st = tm_key_load(keyfile, &key);
    if (st != TM_OK) {
        cli_input_status(keyfile, st);
        goto out;
    }
    st = tm_registry_open(regfile, 0, &reg);
    if (st == TM_OK) st = tm_registry_check_key(reg, key);
    if (st == TM_OK) st = tm_registry_load_copies(reg, NULL, &copies, &n_copies);
    if (st != TM_OK) {
        cli_registry_status(regfile, reg, st);
        goto out;
    }

    /* The journal's head against its last entry: cheap, and it catches the
     * last rows removed; verify walks the rest. */
    uint64_t entries;
    char head[17];
    if (tm_registry_journal(reg, key, &entries, head) == TM_ERR_TAMPERED)
        fprintf(stderr, "tracemark: %s: warning: %s; run 'tracemark registry verify'\n", regfile,
                tm_registry_errmsg(reg));

    /* The originals: those given, or those the registry recorded, if few. */
    for (size_t i = 0; i < given.n; i++)
        if (originals_add(&orig, given.v[i], NULL, &lo)) goto out;
    if (!blind && !given.n) {
        if ((st = tm_registry_list_images(reg, recorded_one, &rec)) != TM_OK) {
            cli_registry_status(regfile, reg, st);
            goto out;
        }
        if (rec.found > AUTO_ORIGINALS)
            fprintf(stderr, "tracemark: note: the registry names %zu originals that are at hand; give --original to "
                            "trace with one\n", rec.found);
        else
            for (size_t i = 0; i < rec.n; i++)
                if (rec.id[i] && rec.path[i] && originals_add(&orig, rec.path[i], rec.id[i], &lo)) goto out;
    }

    /* Suspects are read CHUNK at a time on the threads, then reported in
     * the order given (the registry handle stays with this thread). */
    size_t chunk = jobs > 1 ? 8 * (size_t)jobs : 1;
    traced *slot = calloc(chunk, sizeof *slot);
    if (!slot) {
        cli_error(NULL, "out of memory");
        goto out;
    }
    trace_run run = {.key = key, .orig = &orig, .lo = &lo, .tp = &tp, .copies = copies, .n_copies = n_copies,
                     .slot = slot};
    int any_error = 0, any_accused = 0;
    for (size_t base = 0; base < sus.n; base += chunk) {
        size_t m = sus.n - base < chunk ? sus.n - base : chunk;
        run.paths = sus.v + base;
        cli_parallel(m, jobs, trace_one, &run);
        for (size_t j = 0; j < m; j++) {
            const char *path = sus.v[base + j];
            tm_trace_result *r = &slot[j].r;
            struct stat sb;
            if (slot[j].st != TM_OK && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
                DIR *d = opendir(path); /* collect kept it: empty of images, or unreadable */
                if (d) cli_error(path, "a directory with no .jpg, .jpeg, .png or .webp file in it");
                else cli_errno_error(path, "cannot read the directory", errno);
                if (d) closedir(d);
                any_error = 1;
                continue;
            }
            if (slot[j].st != TM_OK) {
                cli_input_status(path, slot[j].st);
                any_error = 1;
                continue;
            }
            int tampered = 0;
            for (size_t k = 0; k < r->n_accused; k++) {
                const tm_reg_copy *cp = &copies[r->accused[k].index];
                if (tm_registry_check_copy(reg, key, cp) != TM_OK) {
                    cli_error(regfile, "copy %lld (accused by %s) fails its integrity check: registry tampered (%s)",
                              (long long)cp->copy_id, path, tm_registry_errmsg(reg));
                    tampered = 1;
                }
            }
            /* The geometry relative to the original of the copy named. */
            size_t named = r->n_accused                                    ? r->accused[0].index
                           : r->verdict == TM_VERDICT_INCONCLUSIVE && r->n_top ? r->top[0].index
                                                                             : n_copies;
            tm_reg_image ri;
            if (named < n_copies && tm_registry_get_image(reg, copies[named].image_id, &ri) == TM_OK) {
                tm_trace_result_set_original(r, ri.width, ri.height);
                tm_reg_image_clear(&ri);
            }
            if (tampered) {
                any_error = 1;
            } else {
                if (json) print_json(path, r, copies, &orig, tp.fpr, slot[j].ms);
                else print_text(path, r, copies, &orig, tp.fpr, slot[j].ms);
                if (r->verdict == TM_VERDICT_ACCUSED) any_accused = 1;
            }
            tm_trace_result_clear(r);
            fflush(stdout); /* each verdict whole, before any later error line */
        }
    }
    free(slot);
    rc = any_error ? CLI_ERR : any_accused ? CLI_OK : CLI_NONE;
out:
    tm_reg_copies_free(copies, n_copies);
    tm_registry_free(reg);
    tm_key_free(key);
    for (size_t i = 0; i < sus.n; i++) free(sus.v[i]);
    free(sus.v);
    for (size_t i = 0; i < given.n; i++) free(given.v[i]);
    free(given.v);
    for (size_t i = 0; i < rec.n; i++) free(rec.id[i]), free(rec.path[i]);
    originals_free(&orig);
    return rc;
}
