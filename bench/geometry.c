/* geometry.c -- what the blind geometric search and the read cost, beside
 * the codec and FFT costs of the same suspect measured in the same run.
 *
 * Marks IMAGE once, makes the suspect with an attack chain (default
 * "scale:0.75,jpeg:q=75": a 20 MP photo gives a 12 MP suspect), encodes it
 * as JPEG, then times RUNS repetitions of each stage on one thread:
 *
 *   decode        libjpeg-turbo decode of the suspect (reference)
 *   fft 4096^2    FFTW single-precision r2c of 4096x4096 (reference)
 *   luma          colour to luminance
 *   estimate      lattice estimate of scale, rotation and stretch (sync.c),
 *                 every stage of it
 *   read          tm_detect_search: screening, the estimate's stages until
 *                 one gives a sure hypothesis, and the final read
 *   trace         tm_trace_run from the decoded suspect, COPIES copies scored
 *
 * and prints median, min and max in milliseconds and the suspect's
 * megapixels per second at the median.
 *
 *   bench/geometry [-r RUNS] [-a ATTACK] [-n COPIES] IMAGE */
#include "config.h"

#include <fftw3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "scheme.h"
#include "sync.h"
#include "tracemark.h"

#define MAX_RUNS BENCH_MAX_RUNS

static void report(const char *stage, double *ms, int runs, double mpix)
{
    double med = bench_median(ms, runs);
    printf("| %s | %.1f | %.1f | %.1f | %.1f |\n", stage, med, ms[0], ms[runs - 1], mpix / (med / 1e3));
}

static int fail(const char *what, tm_status st)
{
    fprintf(stderr, "geometry: %s: %s\n", what, tm_strerror(st));
    return 2;
}

int main(int argc, char **argv)
{
    int runs = 7, n_copies = 1000, c;
    const char *spec = "scale:0.75,jpeg:q=75";
    while ((c = getopt(argc, argv, "r:a:n:")) != -1) {
        if (c == 'r') runs = atoi(optarg);
        else if (c == 'a') spec = optarg;
        else if (c == 'n') n_copies = atoi(optarg);
        else return 2;
    }
    if (optind != argc - 1 || runs < 1 || runs > MAX_RUNS || n_copies < 1) {
        fprintf(stderr, "usage: geometry [-r RUNS (1..%d)] [-a ATTACK] [-n COPIES] IMAGE\n", MAX_RUNS);
        return 2;
    }
    uint8_t kb[TM_KEY_BYTES];
    for (int i = 0; i < TM_KEY_BYTES; i++) kb[i] = (uint8_t)(i * 29 + 7);
    tm_key *key = NULL;
    tm_image *orig = NULL, *marked = NULL, *attacked = NULL, *suspect = NULL;
    tm_embedder *emb = NULL;
    tm_status st;
    if ((st = tm_key_from_bytes(kb, &key)) != TM_OK) return fail("key", st);
    if ((st = tm_image_load(argv[optind], NULL, &orig, NULL)) != TM_OK) return fail(argv[optind], st);
    if ((st = tm_embedder_create(key, orig, NULL, &emb)) != TM_OK) return fail("embedder", st);
    if ((st = tm_embedder_mark(emb, "leaker", &marked)) != TM_OK) return fail("mark", st);
    char err[256] = "";
    if ((st = tm_attack_apply(spec, marked, &attacked, err, sizeof err)) != TM_OK) {
        fprintf(stderr, "geometry: %s: %s\n", spec, err);
        return 2;
    }
    tm_save_options so;
    tm_save_options_init(&so);
    so.format = TM_FORMAT_JPEG;
    so.quality = 100; /* the chain's own compression is what counts */
    uint8_t *jpg = NULL;
    size_t jpg_len = 0;
    if ((st = tm_image_encode(attacked, &so, &jpg, &jpg_len)) != TM_OK) return fail("encode", st);
    if ((st = tm_image_decode(jpg, jpg_len, NULL, &suspect, NULL)) != TM_OK) return fail("decode", st);

    /* The registry: the leaker's copy among n_copies. */
    tm_reg_copy *copies = calloc((size_t)n_copies, sizeof *copies);
    uint8_t(*words)[TM_CODEWORD_BYTES] = calloc((size_t)n_copies, TM_CODEWORD_BYTES);
    char(*names)[32] = calloc((size_t)n_copies, 32);
    size_t n = (size_t)suspect->width * suspect->height;
    float *y = malloc(n * sizeof *y);
    float *fin = fftwf_malloc(sizeof(float) * 4096 * 4096);
    fftwf_complex *fout = fftwf_malloc(sizeof(fftwf_complex) * 4096 * 2049);
    if (!copies || !words || !names || !y || !fin || !fout) return fail("memory", TM_ERR_NOMEM);
    for (int i = 0; i < n_copies; i++) {
        snprintf(names[i], 32, i ? "innocent-%d" : "leaker", i);
        tm_embedder_codeword(emb, names[i], words[i]);
        copies[i] = (tm_reg_copy){.copy_id = i + 1, .image_id = tm_embedder_image_id(emb), .recipient = names[i],
                                  .code_len = TM_CODEWORD_BYTES * 8, .codeword = words[i]};
    }
    fftwf_plan plan = fftwf_plan_dft_r2c_2d(4096, 4096, fin, fout, FFTW_ESTIMATE);
    for (size_t i = 0; i < (size_t)4096 * 4096; i++) fin[i] = (float)(i % 251);

    double t_dec[MAX_RUNS], t_fft[MAX_RUNS], t_luma[MAX_RUNS], t_est[MAX_RUNS], t_read[MAX_RUNS],
        t_trace[MAX_RUNS];
    tm_trace_params tp;
    tm_trace_params_init(&tp);
    int identified = 0;
    for (int r = 0; r < runs; r++) {
        double t0 = bench_now_ms();
        tm_image *dec = NULL;
        if ((st = tm_image_decode(jpg, jpg_len, NULL, &dec, NULL)) != TM_OK) return fail("decode", st);
        t_dec[r] = bench_now_ms() - t0;
        tm_image_free(dec);

        t0 = bench_now_ms();
        fftwf_execute(plan);
        t_fft[r] = bench_now_ms() - t0;

        t0 = bench_now_ms();
        tm_luma(suspect, y);
        t_luma[r] = bench_now_ms() - t0;

        tm_geom cands[6];
        int ng = 0;
        t0 = bench_now_ms();
        if ((st = tm_sync_estimate(y, suspect->width, suspect->height, cands, 6, &ng)) != TM_OK)
            return fail("estimate", st);
        t_est[r] = bench_now_ms() - t0;

        tm_detection *det = malloc(sizeof *det);
        if (!det) return fail("memory", TM_ERR_NOMEM);
        t0 = bench_now_ms();
        if ((st = tm_detect_search(key, suspect, det)) != TM_OK) return fail("read", st);
        t_read[r] = bench_now_ms() - t0;
        free(det);

        tm_trace_result res;
        t0 = bench_now_ms();
        if ((st = tm_trace_run(key, suspect, copies, (size_t)n_copies, &tp, &res)) != TM_OK) return fail("trace", st);
        t_trace[r] = bench_now_ms() - t0;
        identified += res.n_accused == 1 && res.accused[0].index == 0;
        tm_trace_result_clear(&res);
    }
    double mp = n / 1e6;
    printf("suspect: %s through `%s`, %dx%d (%.1f MP); %d runs, one thread; leaker identified in %d/%d\n\n",
           argv[optind], spec, suspect->width, suspect->height, mp, runs, identified, runs);
    printf("| stage | median ms | min ms | max ms | MP/s (the FFT: of its input) |\n|---|---|---|---|---|\n");
    report("decode (libjpeg-turbo, reference)", t_dec, runs, mp);
    report("FFTW r2c 4096x4096 (reference)", t_fft, runs, 4096.0 * 4096 / 1e6);
    report("luma", t_luma, runs, mp);
    report("lattice estimate", t_est, runs, mp);
    report("estimate + screening + read", t_read, runs, mp);
    char label[64];
    snprintf(label, sizeof label, "trace, %d copies", n_copies);
    report(label, t_trace, runs, mp);

    fftwf_destroy_plan(plan);
    fftwf_free(fin);
    fftwf_free(fout);
    free(y);
    free(copies);
    free(words);
    free(names);
    free(jpg);
    tm_image_free(suspect);
    tm_image_free(attacked);
    tm_image_free(marked);
    tm_image_free(orig);
    tm_embedder_free(emb);
    tm_key_free(key);
    return identified == runs ? 0 : 1;
}
