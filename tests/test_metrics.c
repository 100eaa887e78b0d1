/* test_metrics.c -- PSNR and SSIM, the invisibility measures.
 *
 * PSNR is checked against its closed form for a known error; SSIM against
 * its defining properties (1 for identical images, symmetric, falling with
 * noise, luminance-only for a constant offset) and against an independent,
 * deliberately naive implementation: double precision, one full 11x11
 * Gaussian window per output pixel, variances by two passes. Noise comes from
 * GSL's MT19937 with fixed seeds printed on failure. */
#include "testutil.h"

#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int nc_of(const tm_image *img)
{
    return img->channels == 2 || img->channels == 4 ? img->channels - 1 : img->channels;
}

static tm_image *clone(const tm_image *img)
{
    tm_image *c = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_clone(img, &c), TM_OK);
    return c;
}

/* A copy of img with d added to every colour sample (no clamping). */
static tm_image *offset(const tm_image *img, double d)
{
    tm_image *c = clone(img);
    for (int ch = 0; ch < nc_of(c); ch++)
        for (size_t i = 0; i < (size_t)c->width * c->height; i++) c->plane[ch][i] = (float)(c->plane[ch][i] + d);
    return c;
}

/* A copy of img plus sigma * (a fixed Gaussian field from seed) on every
 * colour sample: the same field for every sigma, so only the scale changes. */
static tm_image *noisy(const tm_image *img, double sigma, unsigned long seed)
{
    tm_image *c = clone(img);
    gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    gsl_rng_set(r, seed);
    for (int ch = 0; ch < nc_of(c); ch++)
        for (size_t i = 0; i < (size_t)c->width * c->height; i++)
            c->plane[ch][i] = (float)(c->plane[ch][i] + sigma * gsl_ran_gaussian(r, 1.0));
    gsl_rng_free(r);
    return c;
}

/* ---- an independent SSIM -------------------------------------------------- */

static double luma_at(const tm_image *img, int x, int y)
{
    size_t i = (size_t)y * img->width + x;
    if (img->channels < 3) return img->plane[0][i];
    return 0.299 * img->plane[0][i] + 0.587 * img->plane[1][i] + 0.114 * img->plane[2][i];
}

/* Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 0.01,
 * K2 0.03, L 255, averaged over every window lying inside the image. */
static double ref_ssim(const tm_image *a, const tm_image *b)
{
    double g[11], gs = 0, wgt[11][11];
    for (int i = 0; i < 11; i++) gs += g[i] = exp(-(i - 5.0) * (i - 5.0) / (2 * 1.5 * 1.5));
    for (int i = 0; i < 11; i++)
        for (int j = 0; j < 11; j++) wgt[i][j] = g[i] * g[j] / (gs * gs);
    const double c1 = pow(0.01 * 255, 2), c2 = pow(0.03 * 255, 2);
    double total = 0;
    long n = 0;
    for (int y0 = 0; y0 + 11 <= a->height; y0++)
        for (int x0 = 0; x0 + 11 <= a->width; x0++) {
            double ma = 0, mb = 0;
            for (int i = 0; i < 11; i++)
                for (int j = 0; j < 11; j++) {
                    ma += wgt[i][j] * luma_at(a, x0 + j, y0 + i);
                    mb += wgt[i][j] * luma_at(b, x0 + j, y0 + i);
                }
            double va = 0, vb = 0, cov = 0;
            for (int i = 0; i < 11; i++)
                for (int j = 0; j < 11; j++) {
                    double da = luma_at(a, x0 + j, y0 + i) - ma, db = luma_at(b, x0 + j, y0 + i) - mb;
                    va += wgt[i][j] * da * da;
                    vb += wgt[i][j] * db * db;
                    cov += wgt[i][j] * da * db;
                }
            total += (2 * ma * mb + c1) * (2 * cov + c2) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            n++;
        }
    return total / n;
}

/* ---- PSNR ------------------------------------------------------------------ */

static void test_identical(void)
{
    static const int chans[] = {1, 2, 3, 4};
    for (size_t k = 0; k < 4; k++) {
        tm_image *a = tm_test_synthetic(40, 30, chans[k], 3, 0), *b = clone(a);
        CU_ASSERT_EQUAL(tm_psnr(a, b), 999.0);
        CU_ASSERT_EQUAL(tm_psnr(a, a), 999.0);
        CU_ASSERT_DOUBLE_EQUAL(tm_ssim(a, b), 1.0, 1e-9);
        CU_ASSERT_DOUBLE_EQUAL(tm_ssim(a, a), 1.0, 1e-9);
        tm_image_free(a);
        tm_image_free(b);
    }
    /* The smallest size SSIM accepts: one window. */
    tm_image *s = tm_test_synthetic(11, 11, 3, 4, 0);
    CU_ASSERT_DOUBLE_EQUAL(tm_ssim(s, s), 1.0, 1e-9);
    tm_image_free(s);
}

static void test_shape_mismatch(void)
{
    tm_image *a = tm_test_synthetic(40, 30, 3, 1, 1);
    tm_image *w = tm_test_synthetic(41, 30, 3, 1, 1), *h = tm_test_synthetic(40, 31, 3, 1, 1);
    tm_image *g = tm_test_synthetic(40, 30, 1, 1, 1), *rgba = tm_test_synthetic(40, 30, 4, 1, 1);
    tm_image *ga = tm_test_synthetic(40, 30, 2, 1, 1);
    CU_ASSERT(tm_psnr(a, w) < 0);
    CU_ASSERT(tm_psnr(w, a) < 0);
    CU_ASSERT(tm_psnr(a, h) < 0);
    CU_ASSERT(tm_psnr(a, g) < 0);   /* 3 colour channels against 1 */
    CU_ASSERT(tm_psnr(g, rgba) < 0);
    CU_ASSERT(tm_psnr(a, ga) < 0);
    CU_ASSERT(tm_psnr(a, NULL) < 0);
    CU_ASSERT(tm_psnr(NULL, a) < 0);
    CU_ASSERT(isnan(tm_ssim(a, w)));
    CU_ASSERT(isnan(tm_ssim(h, a)));
    CU_ASSERT(isnan(tm_ssim(a, g)));   /* 3 colour channels against 1 */
    CU_ASSERT(isnan(tm_ssim(a, NULL)));
    CU_ASSERT(isnan(tm_ssim(NULL, a)));
    /* Alpha is no colour channel: RGB against RGBA of the same colour is fine. */
    for (int c = 0; c < 3; c++) memcpy(rgba->plane[c], a->plane[c], sizeof(float) * 40 * 30);
    CU_ASSERT_EQUAL(tm_psnr(a, rgba), 999.0);
    CU_ASSERT_DOUBLE_EQUAL(tm_ssim(a, rgba), 1.0, 1e-9);
    memcpy(ga->plane[0], g->plane[0], sizeof(float) * 40 * 30);
    CU_ASSERT_EQUAL(tm_psnr(g, ga), 999.0);
    tm_image *all[] = {a, w, h, g, rgba, ga};
    for (size_t k = 0; k < 6; k++) tm_image_free(all[k]);

    /* SSIM needs one whole 11x11 window. */
    static const int sizes[][2] = {{10, 40}, {40, 10}, {10, 10}, {1, 1}};
    for (size_t k = 0; k < 4; k++) {
        tm_image *t = tm_test_synthetic(sizes[k][0], sizes[k][1], 3, 2, 1);
        CU_ASSERT_PTR_NOT_NULL_FATAL(t);
        CU_ASSERT(isnan(tm_ssim(t, t)));
        CU_ASSERT_EQUAL(tm_psnr(t, t), 999.0); /* PSNR has no such limit */
        tm_image_free(t);
    }
}

static void test_psnr_known_error(void)
{
    static const double ds[] = {0.5, 1, 3, 7.25, 40, -12};
    static const int chans[] = {1, 3, 4};
    for (size_t c = 0; c < 3; c++)
        for (size_t k = 0; k < sizeof ds / sizeof ds[0]; k++) {
            /* Integer samples, and d a short binary fraction: every difference
             * is exact in float, so the closed form must hold to rounding. */
            tm_image *a = tm_test_synthetic(37, 23, chans[c], 8, 1), *b = offset(a, ds[k]);
            if (chans[c] == 4)
                for (size_t i = 0; i < 37 * 23; i++) b->plane[3][i] = (float)(i % 256); /* alpha ignored */
            double want = 20 * log10(255 / fabs(ds[k])), got = tm_psnr(a, b);
            if (fabs(got - want) > 1e-6) fprintf(stderr, "%d channels, offset %g: PSNR %.9f, want %.9f\n", chans[c], ds[k], got, want);
            CU_ASSERT_DOUBLE_EQUAL(got, want, 1e-6);
            CU_ASSERT_DOUBLE_EQUAL(tm_psnr(b, a), want, 1e-6);
            tm_image_free(a);
            tm_image_free(b);
        }
    /* An error in one channel of three counts a third of the squared error. */
    tm_image *a = tm_test_synthetic(37, 23, 3, 9, 1), *b = clone(a);
    for (size_t i = 0; i < 37 * 23; i++) b->plane[1][i] += 6.0f;
    CU_ASSERT_DOUBLE_EQUAL(tm_psnr(a, b), 20 * log10(255 / 6.0) + 10 * log10(3.0), 1e-6);
    /* One sample off by 255 in a 100-pixel grey image: MSE 650.25, 20 dB. */
    tm_image *g = NULL, *g2 = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_create(10, 10, 1, &g), TM_OK);
    g2 = clone(g);
    g2->plane[0][57] = 255;
    CU_ASSERT_DOUBLE_EQUAL(tm_psnr(g, g2), 20.0, 1e-9);
    tm_image_free(g);
    tm_image_free(g2);
    tm_image_free(a);
    tm_image_free(b);
}

/* ---- SSIM ------------------------------------------------------------------ */

static void test_ssim_falls_with_noise(void)
{
    const unsigned long seed = 1234;
    tm_image *a = tm_test_synthetic(64, 64, 3, 21, 0);
    static const double sig[] = {1, 2, 5, 10};
    double prev = 1.0, v[4];
    int ok = 1;
    for (size_t k = 0; k < 4; k++) {
        tm_image *b = noisy(a, sig[k], seed);
        v[k] = tm_ssim(a, b);
        /* Symmetric up to rounding. */
        CU_ASSERT_DOUBLE_EQUAL(tm_ssim(b, a), v[k], 1e-9);
        if (!(v[k] < prev && v[k] > 0)) ok = 0;
        prev = v[k];
        tm_image_free(b);
    }
    if (!ok) fprintf(stderr, "seed %lu: SSIM at sigma 1, 2, 5, 10: %.5f %.5f %.5f %.5f\n", seed, v[0], v[1], v[2], v[3]);
    CU_ASSERT(ok);
    /* Noise of sd 1 is nearly invisible, sd 10 is not. */
    CU_ASSERT(v[0] > 0.95);
    CU_ASSERT(v[3] < 0.8);
    tm_image_free(a);
}

static void test_ssim_constant_offset(void)
{
    tm_image *a = tm_test_synthetic(64, 48, 3, 22, 0);
    tm_image *small = offset(a, 5), *large = offset(a, 60);
    double s5 = tm_ssim(a, small), s60 = tm_ssim(a, large);
    /* A constant offset leaves the variances and covariance alone: only the
     * luminance term (2 ma mb + c1) / (ma^2 + mb^2 + c1) moves. */
    if (!(s5 > 0.99 && s5 < 1 && s60 < s5 - 0.02))
        fprintf(stderr, "SSIM for offset 5: %.6f, offset 60: %.6f\n", s5, s60);
    CU_ASSERT(s5 > 0.99);
    CU_ASSERT(s5 < 1.0);
    CU_ASSERT(s60 < s5 - 0.02);
    CU_ASSERT(s60 > 0.5);
    /* On a constant image the whole SSIM is that term, in closed form. */
    tm_image *f = offset(a, 0), *f2;
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < 64 * 48; i++) f->plane[c][i] = 100;
    f2 = offset(f, 30);
    const double c1 = pow(0.01 * 255, 2);
    CU_ASSERT_DOUBLE_EQUAL(tm_ssim(f, f2), (2 * 100.0 * 130.0 + c1) / (100.0 * 100 + 130.0 * 130 + c1), 1e-5);
    tm_image_free(f);
    tm_image_free(f2);
    tm_image_free(small);
    tm_image_free(large);
    tm_image_free(a);
}

static void test_ssim_ignores_alpha(void)
{
    tm_image *a = tm_test_synthetic(32, 32, 4, 23, 0), *b = clone(a);
    for (size_t i = 0; i < 32 * 32; i++) b->plane[3][i] = (float)(255 - i % 256);
    CU_ASSERT_DOUBLE_EQUAL(tm_ssim(a, b), 1.0, 1e-9);
    tm_image_free(a);
    tm_image_free(b);
}

static void test_ssim_matches_reference(void)
{
    const unsigned long seed = 555;
    tm_image *a = tm_test_synthetic(40, 30, 3, 24, 0), *g = tm_test_synthetic(40, 30, 1, 25, 0);
    tm_image *hc = clone(a), *neg = clone(a), *flat = clone(a), *bright = clone(a);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 30; y++)
            for (int x = 0; x < 40; x++) {
                size_t i = (size_t)y * 40 + x;
                hc->plane[c][i] = (float)(128 + 100 * sin(0.9 * x + c) * cos(0.7 * y));
                neg->plane[c][i] = 255 - hc->plane[c][i];
                flat->plane[c][i] = 90;
                bright->plane[c][i] = (float)(245 + (a->plane[c][i] - 128) / 20);
            }
    struct {
        const char *what;
        tm_image *x, *y;
    } pairs[] = {
        {"noise sd 5", a, noisy(a, 5, seed)},
        {"noise sd 20", a, noisy(a, 20, seed + 1)},
        {"offset 20", a, offset(a, 20)},
        {"offset -50 and noise", a, NULL},
        {"negative (anti-correlated)", hc, neg},
        {"bright, low contrast, noise sd 1", bright, noisy(bright, 1, seed + 3)},
        {"flat image", a, flat},
        {"grey, noise sd 3", g, noisy(g, 3, seed + 2)},
        {"two unrelated images", a, tm_test_synthetic(40, 30, 3, 99, 0)},
    };
    pairs[3].y = offset(pairs[0].y, -50); /* a pair of derived images */
    int bad = 0;
    for (size_t k = 0; k < sizeof pairs / sizeof pairs[0]; k++) {
        double got = tm_ssim(pairs[k].x, pairs[k].y), want = ref_ssim(pairs[k].x, pairs[k].y);
        if (fabs(got - want) > 1e-4 || tm_test_verbose())
            fprintf(stderr, "SSIM %s (seed %lu): %.8f, reference %.8f\n", pairs[k].what, seed, got, want);
        bad += !(fabs(got - want) <= 1e-4);
    }
    CU_ASSERT_EQUAL(bad, 0);
    /* SSIM itself can be negative: an image against its negative (which is
     * why errors are NAN, not a negative number). */
    CU_ASSERT(ref_ssim(hc, neg) < -0.5);
    CU_ASSERT(tm_ssim(hc, neg) < -0.5);
    for (size_t k = 0; k < sizeof pairs / sizeof pairs[0]; k++)
        if (pairs[k].y != neg && pairs[k].y != flat) tm_image_free(pairs[k].y);
    tm_image_free(hc);
    tm_image_free(neg);
    tm_image_free(flat);
    tm_image_free(bright);
    tm_image_free(a);
    tm_image_free(g);
}

static int hamming(uint64_t a, uint64_t b)
{
    return __builtin_popcountll(a ^ b);
}

/* The perceptual hash survives recompression and resizing of one picture and
 * tells different pictures apart. */
static void test_phash(void)
{
    const char *names[] = {"skimage_astronaut.png", "skimage_coffee.png", "skimage_rocket.jpg", "mate_Dune.jpg"};
    uint64_t h[4], hq[4];
    for (int i = 0; i < 4; i++) {
        tm_image *img = NULL, *q = NULL;
        char err[64];
        CU_ASSERT_EQUAL_FATAL(tm_image_load(tm_test_corpus(names[i]), NULL, &img, NULL), TM_OK);
        CU_ASSERT_EQUAL_FATAL(tm_attack_apply("jpeg:q=40,crop:0.97", img, &q, err, sizeof err), TM_OK);
        CU_ASSERT_EQUAL(tm_image_phash(img, &h[i]), TM_OK);
        CU_ASSERT_EQUAL(tm_image_phash(q, &hq[i]), TM_OK);
        uint64_t again;
        CU_ASSERT_EQUAL(tm_image_phash(img, &again), TM_OK);
        CU_ASSERT_EQUAL(again, h[i]);
        if (hamming(h[i], hq[i]) > 6) fprintf(stderr, "%s: distance %d after q40+crop\n", names[i], hamming(h[i], hq[i]));
        CU_ASSERT(hamming(h[i], hq[i]) <= 6);
        tm_image_free(img);
        tm_image_free(q);
    }
    for (int i = 0; i < 4; i++)
        for (int j = i + 1; j < 4; j++) CU_ASSERT(hamming(h[i], h[j]) >= 16);
    CU_ASSERT_EQUAL(tm_image_phash(NULL, &h[0]), TM_ERR_ARG);
}

static CU_TestInfo tests[] = {
    {"perceptual hash", test_phash},
    {"identical images", test_identical},
    {"shape mismatch and tiny images", test_shape_mismatch},
    {"PSNR of a known error", test_psnr_known_error},
    {"SSIM falls as noise grows; symmetric", test_ssim_falls_with_noise},
    {"SSIM of a constant offset", test_ssim_constant_offset},
    {"SSIM ignores alpha", test_ssim_ignores_alpha},
    {"SSIM matches a naive reference", test_ssim_matches_reference},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tm_test_main("metrics", tests);
}
