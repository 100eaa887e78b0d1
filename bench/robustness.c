/* robustness.c -- identification rate per attack over a corpus directory.
 *
 * For every image: mark copies for L leakers, register them among a registry
 * of N copies in all (the rest innocents), attack each leaked copy, trace it
 * against the whole registry at the default budget, and count: identified
 * (the leaker accused, nobody else), wrong (an innocent accused), missed.
 * The null side runs the unmarked original through each attack and the
 * marked copies under a wrong key; any accusation there is a false one.
 * Prints PSNR/SSIM per image and a markdown table per attack.
 *
 * An attack is a pipeline of stages separated by '|': a tracemark attack
 * chain ("scale:0.5,jpeg:q=50"), or ImageMagick's convert run on the image
 * handed over as PNM: "im:ARGS" reads back a PNG, "imjpg:ARGS" a JPEG (ARGS then
 * sets -quality), so results do not hinge on tracemark's own resampler.
 *
 *   bench/robustness [-n COPIES] [-l LEAKERS] [-m MIN_PIXELS] [-a "attack;attack;..."] CORPUS_DIR */
#include "config.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tracemark.h"

#define MAX_ATTACKS 64

static const char *default_attacks =
    "none;jpeg:q=90;jpeg:q=70;jpeg:q=50;jpeg:q=30;webp:q=75;blur:sigma=1.0;brightness:20;contrast:0.8;"
    "gamma:1.3;gray;noise:sigma=3:seed=7;crop:0.7;crop:0.5,jpeg:q=75";

typedef struct tally {
    int trials, identified, wrong, missed, null_trials, null_accused;
    double worst_log10_p; /* weakest correct accusation */
    double ms;
} tally;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static tm_key *key_from_seed(uint8_t seed)
{
    uint8_t b[TM_KEY_BYTES];
    for (int i = 0; i < TM_KEY_BYTES; i++) b[i] = (uint8_t)(seed * 131 + i * 17 + 3);
    tm_key *k = NULL;
    return tm_key_from_bytes(b, &k) == TM_OK ? k : NULL;
}

static void quantise(tm_image *img)
{
    size_t n = (size_t)img->width * img->height;
    for (int c = 0; c < img->channels; c++)
        for (size_t i = 0; i < n; i++) img->plane[c][i] = fminf(255.f, fmaxf(0.f, floorf(img->plane[c][i] + 0.5f)));
}

static char scratch[] = "/tmp/tm-robustness-XXXXXX";

/* img's colour channels as a binary PGM/PPM (8-bit, rounded): the cheapest
 * lossless hand-over to convert for images of tens of megapixels. */
static int write_pnm(const tm_image *img, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ch = img->channels >= 3 ? 3 : 1;
    unsigned char *row = malloc((size_t)img->width * ch);
    int ok = row && fprintf(f, "P%d\n%d %d\n255\n", ch == 3 ? 6 : 5, img->width, img->height) > 0;
    for (size_t y = 0; ok && y < (size_t)img->height; y++) {
        for (size_t x = 0; x < (size_t)img->width; x++)
            for (int c = 0; c < ch; c++) {
                float v = img->plane[c][y * img->width + x];
                row[x * ch + c] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5f);
            }
        ok = fwrite(row, (size_t)ch, (size_t)img->width, f) == (size_t)img->width;
    }
    free(row);
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* in through ImageMagick: convert IN.pnm ARGS OUT.(png|jpg). */
static tm_image *magick(const char *args, int jpeg, const tm_image *in)
{
    char src[64], dst[64], cmd[4096];
    snprintf(src, sizeof src, "%s/in.pnm", scratch);
    snprintf(dst, sizeof dst, "%s/out.%s", scratch, jpeg ? "jpg" : "png");
    tm_image *out = NULL;
    snprintf(cmd, sizeof cmd, "convert %s %s %s %s", src, args, jpeg ? "" : "-define png:compression-level=1", dst);
    if (write_pnm(in, src) != 0 || system(cmd) != 0 || tm_image_load(dst, NULL, &out, NULL) != TM_OK) {
        fprintf(stderr, "robustness: `%s` failed\n", cmd);
        exit(2);
    }
    return out;
}

static tm_image *attack(const char *spec, const tm_image *in)
{
    tm_image *cur = NULL;
    if (tm_image_clone(in, &cur) != TM_OK) exit(2);
    char *copy = strdup(spec), *save = NULL;
    for (char *st = strtok_r(copy, "|", &save); st; st = strtok_r(NULL, "|", &save)) {
        tm_image *next = NULL;
        char err[256];
        if (!strncmp(st, "im:", 3)) next = magick(st + 3, 0, cur);
        else if (!strncmp(st, "imjpg:", 6)) next = magick(st + 6, 1, cur);
        else if (strcmp(st, "none") && tm_attack_apply(st, cur, &next, err, sizeof err) != TM_OK) {
            fprintf(stderr, "robustness: attack '%s': %s\n", st, err);
            exit(2);
        }
        if (next) {
            tm_image_free(cur);
            cur = next;
        }
    }
    free(copy);
    return cur;
}

int main(int argc, char **argv)
{
    int n_copies = 10000, n_leakers = 3, c;
    double min_pixels = 0;
    const char *spec_list = default_attacks;
    while ((c = getopt(argc, argv, "n:l:a:m:")) != -1) {
        if (c == 'n') n_copies = atoi(optarg);
        else if (c == 'l') n_leakers = atoi(optarg);
        else if (c == 'm') min_pixels = atof(optarg);
        else if (c == 'a') spec_list = optarg;
        else return 2;
    }
    if (optind != argc - 1 || n_leakers < 1 || n_copies < n_leakers) {
        fprintf(stderr, "usage: robustness [-n COPIES] [-l LEAKERS] [-m MIN_PIXELS] [-a \"attack;attack\"] CORPUS_DIR\n");
        return 2;
    }
    if (!mkdtemp(scratch)) {
        perror(scratch);
        return 2;
    }
    const char *dir = argv[optind];
    char *specs[MAX_ATTACKS];
    int n_specs = 0;
    char *list = strdup(spec_list), *save = NULL;
    for (char *t = strtok_r(list, ";", &save); t && n_specs < MAX_ATTACKS; t = strtok_r(NULL, ";", &save)) specs[n_specs++] = t;
    tally *tal = calloc((size_t)n_specs, sizeof *tal);
    for (int a = 0; a < n_specs; a++) tal[a].worst_log10_p = -INFINITY;

    DIR *d = opendir(dir);
    if (!d) {
        perror(dir);
        return 2;
    }
    char *files[256];
    int n_files = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n_files < 256)
        if (tm_format_from_path(e->d_name) != TM_FORMAT_UNKNOWN) files[n_files++] = strdup(e->d_name);
    closedir(d);
    qsort(files, (size_t)n_files, sizeof *files, cmp_str);

    tm_key *key = key_from_seed(1), *wrong = key_from_seed(2);
    tm_trace_params tp;
    tm_trace_params_init(&tp);
    printf("| image | size | PSNR dB | SSIM |\n|---|---|---|---|\n");
    double min_psnr = 1e9, min_ssim = 1e9;
    for (int f = 0; f < n_files; f++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, files[f]);
        tm_image *orig = NULL;
        tm_embedder *emb = NULL;
        if (tm_image_load(path, NULL, &orig, NULL) != TM_OK || tm_embedder_create(key, orig, NULL, &emb) != TM_OK) {
            fprintf(stderr, "robustness: cannot load or analyse %s\n", path);
            return 2;
        }
        if ((double)orig->width * orig->height < min_pixels) {
            tm_embedder_free(emb);
            tm_image_free(orig);
            free(files[f]);
            continue;
        }
        tm_reg_copy *copies = calloc((size_t)n_copies, sizeof *copies);
        uint8_t (*words)[TM_CODEWORD_BYTES] = calloc((size_t)n_copies, TM_CODEWORD_BYTES);
        char (*names)[32] = calloc((size_t)n_copies, 32);
        for (int i = 0; i < n_copies; i++) {
            snprintf(names[i], 32, i < n_leakers ? "leaker-%d" : "innocent-%d", i);
            tm_embedder_codeword(emb, names[i], words[i]);
            copies[i].copy_id = i + 1;
            copies[i].image_id = tm_embedder_image_id(emb);
            copies[i].recipient = names[i];
            copies[i].code_len = TM_CODEWORD_BYTES * 8;
            copies[i].codeword = words[i];
        }
        for (int l = 0; l < n_leakers; l++) {
            tm_image *marked = NULL;
            tm_embedder_mark(emb, names[l], &marked);
            quantise(marked);
            if (l == 0) {
                double p = tm_psnr(orig, marked), s = tm_ssim(orig, marked);
                min_psnr = fmin(min_psnr, p);
                min_ssim = fmin(min_ssim, s);
                printf("| %s | %dx%d | %.2f | %.4f |\n", files[f], orig->width, orig->height, p, s);
                fflush(stdout);
            }
            for (int a = 0; a < n_specs; a++) {
                tm_image *sus = attack(specs[a], marked);
                tm_trace_result r;
                double t0 = now_ms();
                if (tm_trace_run(key, sus, copies, (size_t)n_copies, &tp, &r) != TM_OK) return 2;
                tal[a].ms += now_ms() - t0;
                tal[a].trials++;
                int hit = 0, bad = 0;
                for (size_t k = 0; k < r.n_accused; k++) {
                    if (r.accused[k].index == (size_t)l) hit = 1;
                    else bad = 1;
                }
                if (bad) tal[a].wrong++;
                else if (hit) {
                    tal[a].identified++;
                    tal[a].worst_log10_p = fmax(tal[a].worst_log10_p, r.accused[0].log10_p);
                } else {
                    tal[a].missed++;
                    fprintf(stderr, "missed: %s leaker %d `%s`: %s; best %s log10_p %.1f, pilot z %.1f\n", files[f], l,
                            specs[a], r.reason, r.n_top ? copies[r.top[0].index].recipient : "-",
                            r.n_top ? r.top[0].log10_p : 0.0, r.pilot_z);
                }
                tm_trace_result_clear(&r);
                /* null: wrong key on the marked copy */
                if (tm_trace_run(wrong, sus, copies, (size_t)n_copies, &tp, &r) != TM_OK) return 2;
                tal[a].null_trials++;
                if (r.n_accused) tal[a].null_accused++;
                tm_trace_result_clear(&r);
                tm_image_free(sus);
                if (l == 0) { /* null: the unmarked original through the same attack */
                    sus = attack(specs[a], orig);
                    if (tm_trace_run(key, sus, copies, (size_t)n_copies, &tp, &r) != TM_OK) return 2;
                    tal[a].null_trials++;
                    if (r.n_accused) tal[a].null_accused++;
                    tm_trace_result_clear(&r);
                    tm_image_free(sus);
                }
            }
            tm_image_free(marked);
        }
        free(copies);
        free(words);
        free(names);
        tm_embedder_free(emb);
        tm_image_free(orig);
        free(files[f]);
    }
    printf("\nminimum PSNR %.2f dB, minimum SSIM %.4f over %d images\n\n", min_psnr, min_ssim, n_files);
    printf("registry of %d copies per image, %d leaked copies per image, budget %g\n\n", n_copies, n_leakers, tp.fpr);
    printf("| attack | identified | wrong accusation | missed | weakest log10_p | null trials | null accusations | mean trace ms |\n");
    printf("|---|---|---|---|---|---|---|---|\n");
    for (int a = 0; a < n_specs; a++)
        printf("| `%s` | %d/%d (%.1f%%) | %d | %d | %.1f | %d | %d | %.0f |\n", specs[a], tal[a].identified, tal[a].trials,
               100.0 * tal[a].identified / tal[a].trials, tal[a].wrong, tal[a].missed, tal[a].worst_log10_p,
               tal[a].null_trials, tal[a].null_accused, tal[a].ms / tal[a].trials);
    char rm[128];
    snprintf(rm, sizeof rm, "rm -rf %s", scratch);
    if (system(rm) != 0) fprintf(stderr, "robustness: could not remove %s\n", scratch);
    tm_key_free(key);
    tm_key_free(wrong);
    free(tal);
    free(list);
    return 0;
}
