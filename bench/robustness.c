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
 *   bench/robustness [-n COPIES] [-l LEAKERS] [-a "spec;spec;..."] CORPUS_DIR */
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

static tm_image *attack(const char *spec, const tm_image *in)
{
    tm_image *out = NULL;
    char err[256];
    if (!strcmp(spec, "none")) return tm_image_clone(in, &out) == TM_OK ? out : NULL;
    if (tm_attack_apply(spec, in, &out, err, sizeof err) != TM_OK) {
        fprintf(stderr, "robustness: attack '%s': %s\n", spec, err);
        exit(2);
    }
    return out;
}

int main(int argc, char **argv)
{
    int n_copies = 10000, n_leakers = 3, c;
    const char *spec_list = default_attacks;
    while ((c = getopt(argc, argv, "n:l:a:")) != -1) {
        if (c == 'n') n_copies = atoi(optarg);
        else if (c == 'l') n_leakers = atoi(optarg);
        else if (c == 'a') spec_list = optarg;
        else return 2;
    }
    if (optind != argc - 1 || n_leakers < 1 || n_copies < n_leakers) {
        fprintf(stderr, "usage: robustness [-n COPIES] [-l LEAKERS] [-a \"spec;spec\"] CORPUS_DIR\n");
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
    tm_key_free(key);
    tm_key_free(wrong);
    free(tal);
    free(list);
    return 0;
}
