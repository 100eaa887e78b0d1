/* cmd_trace.c -- `tracemark trace`: name the recipient whose copy leaked.
 *
 * Loads the registry's copies once, then for every suspect (files, or the
 * images in a directory) reads the mark, scores every copy and prints the
 * verdict as text or as one JSON object per suspect (DESIGN.md contract).
 * An accused row's integrity tag is checked before it is reported: a
 * tampered registry is an error, never evidence. */
#define _XOPEN_SOURCE 700 /* realpath */
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
           "the images in it, by extension or, for names without one, by content; -R\n"
           "those below it too), scores every copy recorded in REGISTRY, and accuses a\n"
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
           "  -R, --recursive       search directories given as SUSPECT all the way down\n"
           "                        (not through links to directories)\n"
           "  -j, --jobs N          read N suspects at a time, on N threads (default 1, or\n"
           "                        TRACEMARK_THREADS); results still in the order given\n"
           "      --max-pixels N    refuse images larger than N pixels (default 200000000)\n"
           "  -h, --help            show this help\n"
           "\n"
           "log10_p is the log10 of an upper bound on the probability that any innocent\n"
           "copy among those scored would reach the accused copy's score.\n"
           "\n"
           "Given several suspects, trace ends with a summary: how many were accused,\n"
           "inconclusive or none, and who was accused in how many (on stderr with\n"
           "--json, so stdout holds the JSON lines alone; not with tracemark -q). With\n"
           "tracemark -v, each verdict also lists the best copies not accused.\n"
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

/* True when the file at path looks like an image: by its extension, or,
 * for a name without a known one (downloads often have none), by its first
 * bytes. */
static int looks_like_image(const char *path)
{
    if (tm_format_from_path(path) != TM_FORMAT_UNKNOWN) return 1;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char head[16];
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    return tm_format_sniff(head, n) != TM_FORMAT_UNKNOWN;
}

#define MAX_DEPTH 64 /* directories below a suspect directory, at most */

/* Adds the images in directory path, in name order: those directly in it,
 * and with recursive those in its subdirectories too (never through a
 * symbolic link to a directory, which could loop). A directory that cannot
 * be read is added itself, to be reported. *found counts the images added.
 * Returns -1 when out of memory. */
static int collect_dir(suspects *s, const char *path, int recursive, int depth, size_t *found)
{
    DIR *d = opendir(path);
    if (!d) return push(s, path);
    suspects names = {0};
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) && rc == 0)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) rc = push(&names, e->d_name);
    closedir(d);
    if (names.n) qsort(names.v, names.n, sizeof *names.v, cmp_str);
    for (size_t i = 0; i < names.n && rc == 0; i++) {
        size_t len = strlen(path) + strlen(names.v[i]) + 2;
        char *full = malloc(len);
        if (!full) {
            rc = -1;
            break;
        }
        snprintf(full, len, "%s%s%s", path, path[strlen(path) - 1] == '/' ? "" : "/", names.v[i]);
        struct stat sb;
        if (lstat(full, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            if (recursive && depth < MAX_DEPTH) rc = collect_dir(s, full, recursive, depth + 1, found);
            else if (recursive) cli_note("%s: more than %d directories deep: not searched", full, MAX_DEPTH);
        } else if (stat(full, &sb) == 0 && S_ISREG(sb.st_mode) && looks_like_image(full)) {
            rc = push(s, full);
            ++*found;
        }
        free(full);
    }
    for (size_t i = 0; i < names.n; i++) free(names.v[i]);
    free(names.v);
    return rc;
}

/* Adds path, or the images in it when it is a directory (see collect_dir);
 * a directory with none is added itself, to be reported. */
static int collect(suspects *s, const char *path, int recursive)
{
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) return push(s, path);
    size_t found = 0, first = s->n;
    int rc = collect_dir(s, path, recursive, 0, &found);
    if (rc == 0 && !found && s->n == first) return push(s, path);
    return rc;
}

/* The unmarked originals an informed trace tries, in order. */
typedef struct originals {
    const tm_original **o;
    char **path;
    char (*id)[TM_IMAGE_ID_LEN + 1]; /* each one's image id */
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
    free(os->id);
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
        cli_note("%s: %s; traced without it", path,
                st == TM_OK ? "not the original the registry recorded there (its content changed)" : tm_strerror(st));
        tm_original_free(o);
        return 0;
    }
    if (st != TM_OK) return cli_input_status(path, st), -1;
    const tm_original **go = realloc(os->o, (os->n + 1) * sizeof *go);
    if (go) os->o = go;
    char **gp = go ? realloc(os->path, (os->n + 1) * sizeof *gp) : NULL;
    if (gp) os->path = gp;
    char (*gi)[TM_IMAGE_ID_LEN + 1] = gp ? realloc(os->id, (os->n + 1) * sizeof *gi) : NULL;
    if (gi) os->id = gi;
    char *dup = gi ? strdup(path) : NULL;
    if (!dup) {
        tm_original_free(o);
        cli_error(NULL, "out of memory");
        return -1;
    }
    os->o[os->n] = o;
    snprintf(os->id[os->n], sizeof os->id[0], "%s", id);
    os->path[os->n++] = dup;
    return 0;
}

/* The registry's originals that are still where it recorded them, with
 * the longer side they were marked at (smaller than the file's when mark
 * was given --max-size: the file is then shrunk as mark shrank it). */
typedef struct recorded {
    char *id[AUTO_ORIGINALS], *path[AUTO_ORIGINALS];
    int side[AUTO_ORIGINALS];
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
        r->side[r->n] = img->width > img->height ? img->width : img->height;
        r->n++;
    }
    return 0;
}

/* The longer sides the registry marked an original at, for an original
 * given by hand: a file it records by path is read at that path's side;
 * another whose own content is no registry image may be one mark shrank
 * (--max-size), so the sides of the images of its shape come next. */
#define GIVEN_SIDES 4

typedef struct given_sides {
    const char *where;          /* the file's real path, or NULL */
    int w, h;                   /* its size, upright */
    int side[GIVEN_SIDES];
    size_t n;
    int by_path;
} given_sides;

static int given_one(void *ud, const tm_reg_image *img, uint64_t n_copies)
{
    given_sides *g = ud;
    (void)n_copies;
    int side = img->width > img->height ? img->width : img->height;
    if (g->where && img->original_path && !strcmp(img->original_path, g->where)) {
        g->side[0] = side, g->n = 1, g->by_path = 1;
        return 1;
    }
    int lo = g->w > g->h ? g->w : g->h;
    double k = (double)side / lo; /* a shrink of the file keeps its shape within rounding */
    if (side >= lo || fabs(g->w * k - img->width) > 1 || fabs(g->h * k - img->height) > 1) return 0;
    for (size_t i = 0; i < g->n; i++)
        if (g->side[i] == side) return 0;
    if (g->n < GIVEN_SIDES) g->side[g->n++] = side;
    return 0;
}

/* Adds the original given at path, shrunk as the registry says mark shrank
 * it when it can tell. Returns -1 after an error message. */
static int given_add(originals *os, tm_registry *reg, const char *path, const tm_load_options *lo)
{
    if (originals_add(os, path, NULL, lo)) return -1;
    tm_original *o = (tm_original *)os->o[os->n - 1];
    tm_reg_image ri;
    given_sides g = {.where = realpath(path, NULL)};
    tm_original_size(o, &g.w, &g.h);
    /* its content is a registry image, and not recorded at a smaller side by path */
    int known = tm_registry_get_image(reg, os->id[os->n - 1], &ri) == TM_OK;
    if (known) tm_reg_image_clear(&ri);
    tm_registry_list_images(reg, given_one, &g);
    free((char *)g.where);
    if (known && !(g.by_path && g.side[0] < (g.w > g.h ? g.w : g.h))) return 0;
    for (size_t i = 0; i < g.n; i++) {
        tm_load_options slo = *lo;
        slo.max_side = g.side[i];
        tm_original *s = NULL;
        char id[TM_IMAGE_ID_LEN + 1];
        if (tm_original_load(path, &slo, &s, id) != TM_OK) continue;
        if (tm_registry_get_image(reg, id, &ri) == TM_OK) {
            tm_reg_image_clear(&ri);
            tm_original_free(o);
            os->o[os->n - 1] = s;
            snprintf(os->id[os->n - 1], sizeof os->id[0], "%s", id);
            return 0;
        }
        tm_original_free(s);
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

/* The verdict word, in colour where the terminal allows (cli_colour). */
static const char *verdict_word(tm_verdict v, int colour)
{
    if (!colour) return v == TM_VERDICT_ACCUSED ? "ACCUSED" : v == TM_VERDICT_INCONCLUSIVE ? "INCONCLUSIVE" : "NONE";
    return v == TM_VERDICT_ACCUSED ? "\033[1;31mACCUSED\033[0m"
           : v == TM_VERDICT_INCONCLUSIVE ? "\033[1;33mINCONCLUSIVE\033[0m"
                                          : "\033[1;32mNONE\033[0m";
}

static void print_text(const char *file, const tm_trace_result *r, const tm_reg_copy *copies, const originals *os,
                       double fpr, double ms)
{
    int colour = cli_colour(stdout);
    if (r->verdict == TM_VERDICT_ACCUSED) {
        for (size_t i = 0; i < r->n_accused; i++) {
            const tm_reg_copy *c = &copies[r->accused[i].index];
            char p[32];
            fmt_prob(r->accused[i].log10_p, p, sizeof p);
            printf("%s: %s %s (copy %lld of image %s): chance an innocent copy scores this high <= %s%s\n", file,
                   verdict_word(r->verdict, colour), c->recipient, (long long)c->copy_id, c->image_id, p,
                   r->accused[i].round > 1 ? " (once the marks of the copies accused before it were taken out)" : "");
        }
        if (r->n_accused > 1)
            printf("  collusion: the suspect carries the marks of %zu registered copies, so at least %zu recipients "
                   "combined them (the chance that any of them is innocent is within the budget, %g)\n",
                   r->n_accused, r->n_accused, fpr);
    } else {
        printf("%s: %s: %s (budget %g, %zu copies scored)\n", file, verdict_word(r->verdict, colour), r->reason,
               fpr, r->n_scored);
        if (r->n_top && r->top[0].log10_p < -1 && cli_verbosity != CLI_VERBOSE) {
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
        int ow, oh;
        tm_original_size(os->o[r->original], &ow, &oh);
        printf("  informed: the suspect is %s (%dx%d) at scale %.3g", os->path[r->original], ow, oh, g->scale);
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
    if (cli_verbosity == CLI_VERBOSE) {
        printf("  scored %zu copies; the best not accused:%s\n", r->n_scored, r->n_top ? "" : " none");
        for (size_t i = 0; i < r->n_top; i++) {
            const tm_accusation *a = &r->top[i];
            char p[32];
            fmt_prob(a->log10_p, p, sizeof p);
            printf("    %s (copy %lld): score %.4g, z %.2f, bound %s\n", copies[a->index].recipient,
                   (long long)copies[a->index].copy_id, a->score, a->z, p);
        }
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

/* What a trace of many suspects found, for the summary at the end. */
typedef struct tally {
    size_t files, accused, inconclusive, none, errors;
    const char **who; /* recipients accused (pointing into the copies), with counts */
    size_t *count, n_who;
} tally;

static int tally_accused(tally *t, const char *recipient)
{
    for (size_t i = 0; i < t->n_who; i++)
        if (!strcmp(t->who[i], recipient)) return (int)(t->count[i]++, 0);
    const char **gw = realloc(t->who, (t->n_who + 1) * sizeof *gw);
    if (gw) t->who = gw;
    size_t *gc = gw ? realloc(t->count, (t->n_who + 1) * sizeof *gc) : NULL;
    if (!gc) return -1;
    t->count = gc;
    t->who[t->n_who] = recipient;
    t->count[t->n_who++] = 1;
    return 0;
}

static void tally_add(tally *t, const tm_trace_result *r, const tm_reg_copy *copies)
{
    t->files++;
    if (r->verdict == TM_VERDICT_ACCUSED) t->accused++;
    else if (r->verdict == TM_VERDICT_INCONCLUSIVE) t->inconclusive++;
    else t->none++;
    for (size_t k = 0; k < r->n_accused; k++)
        if (tally_accused(t, copies[r->accused[k].index].recipient)) t->errors++; /* out of memory: counted, not named */
}

/* The summary: on stdout after text verdicts, on stderr after JSON lines
 * (whose stdout holds one object per suspect and nothing else). Recipients
 * by the number of suspects they are accused in, most first. */
static void tally_print(tally *t, FILE *f)
{
    fprintf(f, "summary: %zu suspect%s: %zu accused, %zu inconclusive, %zu none, %zu error%s\n", t->files,
            t->files == 1 ? "" : "s", t->accused, t->inconclusive, t->none, t->errors, t->errors == 1 ? "" : "s");
    for (size_t i = 1; i < t->n_who; i++) /* insertion sort, stable: ties keep first-seen order */
        for (size_t j = i; j > 0 && t->count[j] > t->count[j - 1]; j--) {
            const char *w = t->who[j];
            size_t c = t->count[j];
            t->who[j] = t->who[j - 1], t->count[j] = t->count[j - 1];
            t->who[j - 1] = w, t->count[j - 1] = c;
        }
    for (size_t i = 0; i < t->n_who; i++)
        fprintf(f, "  %s: accused in %zu suspect%s\n", t->who[i], t->count[i], t->count[i] == 1 ? "" : "s");
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
        {"recursive", no_argument, NULL, 'R'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *keyfile = NULL, *regfile = NULL;
    int json = 0, jobs = 1, jobs_set = 0, blind = 0, recursive = 0, c, rc = CLI_ERR;
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
    while ((c = getopt_long(argc, argv, ":k:r:j:Rh", opts, NULL)) != -1) {
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
        case 'R': recursive = 1; break;
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
        if (collect(&sus, argv[i], recursive)) {
            cli_error(NULL, "out of memory");
            goto out;
        }

    tm_status st = tm_key_load(keyfile, &key);
    if (st != TM_OK) {
        cli_input_status(keyfile, st);
        goto out;
    }
    st = tm_registry_open_readonly(regfile, &reg); /* trace never writes to the registry */
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
        if (given_add(&orig, reg, given.v[i], &lo)) goto out;
    if (!blind && !given.n) {
        if ((st = tm_registry_list_images(reg, recorded_one, &rec)) != TM_OK) {
            cli_registry_status(regfile, reg, st);
            goto out;
        }
        if (rec.found > AUTO_ORIGINALS)
            cli_note("the registry names %zu originals that are at hand; give --original to trace with one",
                     rec.found);
        else
            for (size_t i = 0; i < rec.n; i++) {
                tm_load_options rlo = lo;
                rlo.max_side = rec.side[i];
                if (rec.id[i] && rec.path[i] && originals_add(&orig, rec.path[i], rec.id[i], &rlo)) goto out;
            }
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
    tally sum = {0};
    cli_progress prog;
    cli_progress_start(&prog, "suspects");
    if (sus.n < 2) prog.tty = 0;
    for (size_t base = 0; base < sus.n; base += chunk) {
        size_t m = sus.n - base < chunk ? sus.n - base : chunk;
        run.paths = sus.v + base;
        cli_progress_show(&prog, base, sus.n);
        cli_parallel(m, jobs, trace_one, &run);
        cli_progress_clear(&prog);
        for (size_t j = 0; j < m; j++) {
            const char *path = sus.v[base + j];
            tm_trace_result *r = &slot[j].r;
            struct stat sb;
            if (slot[j].st != TM_OK && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
                DIR *d = opendir(path); /* collect kept it: empty of images, or unreadable */
                if (d) cli_error(path, "a directory with no JPEG, PNG or WebP image in it%s", recursive ? "" : " (-R searches below it)");
                else cli_errno_error(path, "cannot read the directory", errno);
                if (d) closedir(d);
                any_error = 1;
                sum.errors++;
                continue;
            }
            if (slot[j].st != TM_OK) {
                cli_input_status(path, slot[j].st);
                any_error = 1;
                sum.errors++;
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
                sum.errors++;
            } else {
                if (json) print_json(path, r, copies, &orig, tp.fpr, slot[j].ms);
                else print_text(path, r, copies, &orig, tp.fpr, slot[j].ms);
                if (r->verdict == TM_VERDICT_ACCUSED) any_accused = 1;
                tally_add(&sum, r, copies);
            }
            tm_trace_result_clear(r);
            fflush(stdout); /* each verdict whole, before any later error line */
        }
    }
    cli_progress_clear(&prog);
    if (sus.n > 1 && cli_verbosity != CLI_QUIET) tally_print(&sum, json ? stderr : stdout);
    free(sum.who);
    free(sum.count);
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
