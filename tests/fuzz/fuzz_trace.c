/* fuzz_trace.c -- libFuzzer target for the trace path end to end: the input
 * is decoded as `tracemark trace` reads a suspect (a small pixel budget here;
 * the luminance only for inputs of odd length, as the command does, every
 * channel for the others) and traced blind with tm_trace_run against a fixed
 * registry built in memory once, under the key 00 01 .. 1f: the copies of
 * eight recipients of a synthetic original, two copies of another image and
 * one row trace cannot score (a short codeword).
 *
 * The seeds are JPEG and PNG files (tests/data/fuzz/jpeg, png) and copies of
 * that original marked for recipient 0 (tests/data/fuzz/trace), which trace
 * accuses, so the accusation rounds are fuzzed too. The result must be
 * consistent whatever the image: accusations within the budget, indices in
 * range, finite scores, the verdict following from them. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_errno.h>

#include "tracemark.h"

#define MAX_PIXELS (1u << 16)  /* 256 x 256 */
#define ORIG_W 160
#define ORIG_H 160
#define N_MARKED 8             /* copies of the original */
#define N_OTHER 2              /* copies of another image */
#define N_ROWS (N_MARKED + N_OTHER + 1)

static tm_key *key;
static tm_embedder *emb;       /* owns the original's image id */
static tm_image *original;
static tm_reg_copy rows[N_ROWS];
static uint8_t words[N_ROWS][TM_CODEWORD_BYTES];
static char names[N_ROWS][32];
static const char other_id[] = "00112233445566778899aabbccddeeff";

/* A smooth picture with faint texture and integer samples, what a photo
 * looks like to the mask: the mark is strong enough to trace at this size. */
static tm_image *synthetic_original(void)
{
    tm_image *img = NULL;
    if (tm_image_create(ORIG_W, ORIG_H, 3, &img) != TM_OK) abort();
    uint32_t s = 777;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < ORIG_H; y++)
            for (int x = 0; x < ORIG_W; x++) {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                double v = 128 + 60 * sin(0.11 * x + c) * cos(0.07 * y - c) + 30.0 * x / ORIG_W + (double)(s % 17) - 8;
                img->plane[c][(size_t)y * ORIG_W + x] = (float)floor(v + 0.5);
            }
    return img;
}

static void init(void)
{
    gsl_set_error_handler_off(); /* the library checks every GSL status */
    uint8_t b[TM_KEY_BYTES];
    for (int i = 0; i < TM_KEY_BYTES; i++) b[i] = (uint8_t)i;
    if (tm_key_from_bytes(b, &key) != TM_OK) abort();
    original = synthetic_original();
    if (tm_embedder_create(key, original, NULL, &emb) != TM_OK) abort();
    for (int i = 0; i < N_ROWS; i++) {
        tm_reg_copy *c = &rows[i];
        snprintf(names[i], sizeof names[i], "recipient-%d", i);
        c->copy_id = i + 1;
        c->recipient = names[i];
        c->out_path = names[i];
        c->codeword = words[i];
        c->code_len = TM_CODEWORD_BYTES * 8;
        if (i < N_MARKED) {
            c->image_id = tm_embedder_image_id(emb);
            if (tm_embedder_codeword(emb, names[i], words[i]) != TM_OK) abort();
        } else {
            c->image_id = other_id;
            if (tm_key_stream(key, "fuzz other image", names[i], strlen(names[i]), words[i], TM_CODEWORD_BYTES) != TM_OK)
                abort();
        }
    }
    rows[N_ROWS - 1].code_len = 8; /* not this scheme's length: never scored */
}

static void check_accusation(const tm_accusation *a, int accused, double log10_fpr)
{
    if (a->index >= N_ROWS - 1) abort(); /* out of range, or the unscorable row */
    if (!isfinite(a->score) || !isfinite(a->z) || !isfinite(a->log10_p) || a->log10_p > 0) abort();
    if (accused && (a->round < 1 || a->log10_p > log10_fpr + 1e-9)) abort();
    if (!accused && a->round != 0) abort();
}

/* What any trace result must hold, whatever the suspect. */
static void check(const tm_trace_result *r, const tm_trace_params *tp)
{
    double log10_fpr = log10(tp->fpr);
    if (r->verdict != TM_VERDICT_NONE && r->verdict != TM_VERDICT_ACCUSED && r->verdict != TM_VERDICT_INCONCLUSIVE)
        abort();
    if (!r->reason || (r->verdict == TM_VERDICT_ACCUSED) != (r->n_accused > 0)) abort();
    if (r->n_scored != N_ROWS - 1 || r->n_accused > N_ROWS - 1 || r->n_top > TM_TRACE_TOP) abort();
    if (r->n_accused && !r->accused) abort();
    for (size_t i = 0; i < r->n_accused; i++) {
        check_accusation(&r->accused[i], 1, log10_fpr);
        for (size_t j = 0; j < i; j++)
            if (r->accused[j].index == r->accused[i].index) abort(); /* accused twice */
    }
    for (size_t i = 0; i < r->n_top; i++) {
        check_accusation(&r->top[i], 0, log10_fpr);
        for (size_t j = 0; j < r->n_accused; j++)
            if (r->accused[j].index == r->top[i].index) abort(); /* the top list holds copies not accused */
    }
    if (!(r->pilot_log10_p <= 0) || !isfinite(r->pilot_z)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!key) init();
    tm_load_options lo;
    tm_load_options_init(&lo);
    lo.max_pixels = MAX_PIXELS;
    lo.luma_only = size & 1;
    tm_image *suspect = NULL;
    if (tm_image_decode(data, size, &lo, &suspect, NULL) != TM_OK) return 0;
    if ((uint64_t)suspect->width * suspect->height > MAX_PIXELS) abort(); /* the budget holds */
    tm_trace_params tp;
    tm_trace_params_init(&tp);
    tm_trace_result r;
    if (tm_trace_run(key, suspect, rows, N_ROWS, &tp, &r) == TM_OK) check(&r, &tp);
    tm_trace_result_clear(&r);
    tm_image_free(suspect);
    return 0;
}
