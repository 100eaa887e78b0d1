/* test_attack.c -- the attack chains used to measure robustness.
 *
 * Each attack is checked by a property of its result (shape, exact window,
 * identity at neutral parameters, variance added or removed, codec fidelity),
 * never against stored output. Every bad spec must give TM_ERR_ARG, a message
 * naming the problem, and no image. The input is never modified. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#define W 96
#define H 64

/* The test image: rounded synthetic RGB (seed 5), so PNG is exactly lossless. */
static tm_image *rgb(void)
{
    tm_image *img = tm_test_synthetic(W, H, 3, 5, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(img);
    return img;
}

/* A smooth RGB image with faint texture (integer samples), what lossy
 * codecs are made for: the synthetic image's strong white texture is
 * erased by JPEG at every quality, which would hide the quality knob. */
static tm_image *smooth_rgb(void)
{
    tm_image *img = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_create(W, H, 3, &img), TM_OK);
    uint32_t s = 777;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                double v = 128 + 60 * sin(0.11 * x + c) * cos(0.07 * y - c) + 30.0 * x / W + (double)(s % 7) - 3;
                img->plane[c][(size_t)y * W + x] = (float)floor(v + 0.5);
            }
    return img;
}

static void stats(const tm_image *img, int c, double *mean, double *var)
{
    size_t n = (size_t)img->width * img->height;
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) s += img->plane[c][i];
    *mean = s / n;
    for (size_t i = 0; i < n; i++) s2 += (img->plane[c][i] - *mean) * (img->plane[c][i] - *mean);
    *var = s2 / (n - 1);
}

/* Largest |a - b| over one plane of each. */
static double plane_maxdiff(const tm_image *a, int ca, const tm_image *b, int cb)
{
    double m = 0;
    for (size_t i = 0; i < (size_t)a->width * a->height; i++)
        m = fmax(m, fabs((double)a->plane[ca][i] - b->plane[cb][i]));
    return m;
}

/* ---- every listed attack ---------------------------------------------------- */

static const struct {
    const char *name, *spec;
    int w, h, channels;
} examples[] = {
    {"jpeg", "jpeg:q=90:ss=444", W, H, 3},
    {"webp", "webp:q=90", W, H, 3},
    {"png", "png", W, H, 3},
    {"blur", "blur:sigma=1.5", W, H, 3},
    {"noise", "noise:sigma=3:seed=7", W, H, 3},
    {"gamma", "gamma:1.2", W, H, 3},
    {"brightness", "brightness:10", W, H, 3},
    {"contrast", "contrast:1.1", W, H, 3},
    {"gray", "gray", W, H, 1},
    {"crop", "crop:0.5", W / 2, H / 2, 3},
    {"scale", "scale:0.5", W / 2, H / 2, 3},
    {"aspect", "aspect:1.5", W * 3 / 2, H, 3},
    {"rotate", "rotate:10:crop=0", W, H, 3},
    {"flip", "flip:h", W, H, 3},
    {"turn", "turn:90", H, W, 3},
    {"sharpen", "sharpen:amount=1.5:sigma=1", W, H, 3},
    {"median", "median:r=2", W, H, 3},
    {"saturation", "saturation:1.5", W, H, 3},
    {"quantize", "quantize:colors=16:dither=1", W, H, 3},
    {"screenshot", "screenshot:side=48:q=90", 40, 24, 3}, /* 48x32, less 4 px each edge */
    {"bend", "bend:strength=2:seed=3", W, H, 3},
};
#define N_EXAMPLES (sizeof examples / sizeof examples[0])

static void test_usage_lists_every_attack(void)
{
    int seen[N_EXAMPLES] = {0};
    size_t i;
    for (i = 0; tm_attack_usage(i); i++) {
        const char *u = tm_attack_usage(i);
        size_t n = strcspn(u, ":[ ");
        CU_ASSERT(n > 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(u, "  ")); /* a description follows the syntax */
        int found = 0;
        for (size_t k = 0; k < N_EXAMPLES; k++)
            if (strlen(examples[k].name) == n && !strncmp(u, examples[k].name, n)) {
                found = 1;
                seen[k]++;
            }
        if (!found) fprintf(stderr, "usage line %zu names an attack this suite does not know: %s\n", i, u);
        CU_ASSERT(found);
        CU_ASSERT_PTR_NOT_NULL(u);
    }
    CU_ASSERT_EQUAL(i, N_EXAMPLES);
    for (size_t k = 0; k < N_EXAMPLES; k++) {
        if (seen[k] != 1) fprintf(stderr, "attack %s listed %d times\n", examples[k].name, seen[k]);
        CU_ASSERT_EQUAL(seen[k], 1);
    }
    CU_ASSERT_PTR_NULL(tm_attack_usage(N_EXAMPLES));
    CU_ASSERT_PTR_NULL(tm_attack_usage((size_t)-1));
}

static void test_examples_run_and_keep_input(void)
{
    tm_image *in = rgb();
    const uint8_t icc[] = {9, 8, 7, 6};
    CU_ASSERT_EQUAL(tm_image_set_icc(in, icc, sizeof icc), TM_OK);
    tm_image *copy = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_clone(in, &copy), TM_OK);
    for (size_t k = 0; k < N_EXAMPLES; k++) {
        tm_image *out = tm_test_attack(examples[k].spec, in);
        if (out->width != examples[k].w || out->height != examples[k].h || out->channels != examples[k].channels)
            fprintf(stderr, "'%s' gave %dx%dx%d\n", examples[k].spec, out->width, out->height, out->channels);
        CU_ASSERT_EQUAL(out->width, examples[k].w);
        CU_ASSERT_EQUAL(out->height, examples[k].h);
        CU_ASSERT_EQUAL(out->channels, examples[k].channels);
        CU_ASSERT_PTR_NOT_EQUAL(out->plane[0], in->plane[0]);
        tm_image_free(out);
        /* The input is borrowed: untouched, pixels and colour description. */
        if (tm_test_maxdiff(in, copy) != 0.0) fprintf(stderr, "'%s' modified its input\n", examples[k].spec);
        CU_ASSERT_EQUAL(tm_test_maxdiff(in, copy), 0.0);
        CU_ASSERT_EQUAL_FATAL(in->icc_len, sizeof icc);
        CU_ASSERT_EQUAL(memcmp(in->icc, icc, sizeof icc), 0);
    }
    /* A whole chain of them, too. */
    tm_image *out = tm_test_attack("gamma:0.8,brightness:-5,contrast:1.3,blur:sigma=0.7,noise:sigma=4,jpeg:q=60,crop:0.8", in);
    CU_ASSERT_EQUAL(tm_test_maxdiff(in, copy), 0.0);
    tm_image_free(out);
    tm_image_free(copy);
    tm_image_free(in);
}

/* ---- crop ------------------------------------------------------------------- */

/* out must equal the window (x, y, out->width, out->height) of in, every plane. */
static int is_window(const tm_image *in, const tm_image *out, int x, int y)
{
    if (out->channels != in->channels) return 0;
    for (int c = 0; c < in->channels; c++)
        for (int r = 0; r < out->height; r++)
            for (int q = 0; q < out->width; q++)
                if (out->plane[c][(size_t)r * out->width + q] != in->plane[c][(size_t)(y + r) * in->width + x + q])
                    return 0;
    return 1;
}

static void test_crop(void)
{
    tm_image *in = tm_test_synthetic(W, H, 4, 11, 0); /* RGBA, unrounded */
    CU_ASSERT_PTR_NOT_NULL_FATAL(in);
    const uint8_t icc[] = {1, 2, 3};
    CU_ASSERT_EQUAL(tm_image_set_icc(in, icc, sizeof icc), TM_OK);
    static const struct {
        const char *spec;
        int w, h, x, y;
    } cases[] = {
        {"crop:0.5", W / 2, H / 2, W / 4, H / 4},
        {"crop:f=0.5", W / 2, H / 2, W / 4, H / 4},
        {"crop:0.3", 29, 19, 33, 22},  /* lround(28.8), lround(19.2), centred */
        {"crop:1", W, H, 0, 0},
        {"crop:20x10+5+7", 20, 10, 5, 7},
        {"crop:96x64+0+0", W, H, 0, 0},
        {"crop:1x1+95+63", 1, 1, 95, 63},
        {"crop:96x1+0+63", W, 1, 0, 63},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tm_image *out = tm_test_attack(cases[k].spec, in);
        int ok = out->width == cases[k].w && out->height == cases[k].h && is_window(in, out, cases[k].x, cases[k].y);
        if (!ok) fprintf(stderr, "'%s' gave %dx%d, not the expected window\n", cases[k].spec, out->width, out->height);
        CU_ASSERT(ok);
        CU_ASSERT_EQUAL(out->channels, 4);
        CU_ASSERT_EQUAL(out->icc_len, sizeof icc);
        if (out->icc_len == sizeof icc) CU_ASSERT_EQUAL(memcmp(out->icc, icc, sizeof icc), 0);
        tm_image_free(out);
    }
    tm_image_free(in);
}

/* A window whose right or bottom edge would overflow int must be refused,
 * not read out of bounds (it once was). Run in a child so that a crash
 * fails this test only. */
static void test_crop_window_overflow(void)
{
    static const char *specs[] = {"crop:100x10+2147483600+0", "crop:10x50+0+2147483600"};
    for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
        fflush(NULL);
        pid_t pid = fork();
        CU_ASSERT_FATAL(pid >= 0);
        if (pid == 0) {
            tm_image *in = tm_test_synthetic(200, 100, 3, 1, 1), *out = NULL;
            tm_status st = in ? tm_attack_apply(specs[k], in, &out, NULL, 0) : TM_ERR_NOMEM;
            int refused = st == TM_ERR_ARG && !out;
            tm_image_free(out);
            tm_image_free(in);
            _exit(refused ? 0 : 1);
        }
        int status = 0;
        CU_ASSERT_EQUAL_FATAL(waitpid(pid, &status, 0), pid);
        if (WIFSIGNALED(status)) fprintf(stderr, "'%s' crashed with signal %d\n", specs[k], WTERMSIG(status));
        else if (WEXITSTATUS(status)) fprintf(stderr, "'%s' was not refused with TM_ERR_ARG\n", specs[k]);
        CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
}

/* ---- colour and grey ------------------------------------------------------- */

static void test_gray(void)
{
    tm_image *in = rgb();
    tm_image *out = tm_test_attack("gray", in);
    CU_ASSERT_EQUAL(out->channels, 1);
    double m = 0;
    for (size_t i = 0; i < (size_t)W * H; i++) {
        double want = 0.299 * in->plane[0][i] + 0.587 * in->plane[1][i] + 0.114 * in->plane[2][i];
        m = fmax(m, fabs(out->plane[0][i] - want));
    }
    CU_ASSERT(m < 1e-3);
    /* Grey of grey changes nothing. */
    tm_image *again = tm_test_attack("gray", out);
    CU_ASSERT_EQUAL(tm_test_maxdiff(out, again), 0.0);
    tm_image_free(again);
    tm_image_free(out);
    tm_image_free(in);
}

static void test_pointwise_identities(void)
{
    tm_image *in = tm_test_synthetic(W, H, 4, 12, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(in);
    static const char *ids[] = {"gamma:1", "brightness:0", "contrast:1", "noise:sigma=0", "crop:1", "gamma:g=1", "brightness:d=0", "contrast:k=1"};
    for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) {
        tm_image *out = tm_test_attack(ids[k], in);
        double d = tm_test_maxdiff(in, out);
        if (!(d <= 1e-4)) fprintf(stderr, "'%s' is not the identity: max diff %g\n", ids[k], d);
        CU_ASSERT(d <= 1e-4);
        tm_image_free(out);
    }
    tm_image_free(in);
}

static void test_pointwise_values(void)
{
    tm_image *in = rgb(); /* integer samples in 0..255 */
    tm_image *b = tm_test_attack("brightness:40", in);
    tm_image *d = tm_test_attack("brightness:-255", in);
    tm_image *k0 = tm_test_attack("contrast:0", in);
    tm_image *k2 = tm_test_attack("contrast:2", in);
    tm_image *g = tm_test_attack("gamma:2", in);
    int bad = 0, clamped = 0;
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < (size_t)W * H; i++) {
            double v = in->plane[c][i];
            if (b->plane[c][i] != (float)fmin(255, v + 40)) bad++;
            clamped += v + 40 > 255;
            if (d->plane[c][i] != 0.0f) bad++;
            if (k0->plane[c][i] != 127.5f) bad++;
            if (fabs(k2->plane[c][i] - fmin(255, fmax(0, 127.5 + 2 * (v - 127.5)))) > 1e-4) bad++;
            if (fabs(g->plane[c][i] - 255 * sqrt(v / 255)) > 1e-3) bad++;
            if (b->plane[c][i] > 255 || k2->plane[c][i] > 255 || k2->plane[c][i] < 0) bad++;
        }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(clamped > 0); /* the clamp at 255 was exercised */
    tm_image_free(b);
    tm_image_free(d);
    tm_image_free(k0);
    tm_image_free(k2);
    tm_image_free(g);
    tm_image_free(in);

    /* Alpha is not a colour: pointwise changes leave it alone. */
    tm_image *rgba = tm_test_flat(16, 16, 4, 100), *out = tm_test_attack("brightness:50,contrast:2", rgba);
    CU_ASSERT_EQUAL(plane_maxdiff(rgba, 3, out, 3), 0.0);
    CU_ASSERT(plane_maxdiff(rgba, 0, out, 0) > 50);
    tm_image_free(out);
    tm_image_free(rgba);
}

/* ---- blur and noise -------------------------------------------------------- */

static void test_blur(void)
{
    /* 128 plus uniform noise in [-40, 40] (xorshift seed 12345). */
    const uint32_t seed = 12345;
    uint32_t s = seed;
    tm_image *in = tm_test_flat(64, 64, 2, 128);
    for (size_t i = 0; i < 64 * 64; i++) {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        in->plane[0][i] = 128.0f + (float)(s % 81) - 40.0f;
    }
    double m0, v0, m1, v1, m2, v2;
    stats(in, 0, &m0, &v0);
    tm_image *b1 = tm_test_attack("blur:sigma=1", in), *b2 = tm_test_attack("blur:2", in), *bd = tm_test_attack("blur", in);
    stats(b1, 0, &m1, &v1);
    stats(b2, 0, &m2, &v2);
    /* White noise through a unit-sum Gaussian keeps 1/(4 pi sigma^2) of its
     * variance: 0.08 at sigma 1, 0.02 at sigma 2. */
    if (!(v1 < 0.15 * v0 && v2 < 0.5 * v1))
        fprintf(stderr, "seed %u: variance %.1f, blurred %.2f (sigma 1), %.2f (sigma 2)\n", seed, v0, v1, v2);
    CU_ASSERT(v1 < 0.15 * v0);
    CU_ASSERT(v1 > 0.03 * v0);
    CU_ASSERT(v2 < 0.5 * v1);
    CU_ASSERT(fabs(m1 - m0) < 1.0);
    CU_ASSERT_EQUAL(tm_test_maxdiff(b1, bd), 0.0); /* default sigma 1 */
    CU_ASSERT_EQUAL(plane_maxdiff(in, 1, b1, 1), 0.0); /* alpha untouched */
    tm_image_free(b1);
    tm_image_free(b2);
    tm_image_free(bd);
    tm_image_free(in);

    /* A constant image stays constant (the kernel sums to one). */
    tm_image *c = tm_test_flat(20, 20, 3, 77), *cb = tm_test_attack("blur:sigma=3", c);
    CU_ASSERT(tm_test_maxdiff(c, cb) < 1e-3);
    tm_image_free(cb);
    tm_image_free(c);
}

static void test_noise(void)
{
    tm_image *in = tm_test_flat(W, H, 3, 128);
    tm_image *a = tm_test_attack("noise:sigma=5:seed=3", in), *a2 = tm_test_attack("noise:sigma=5:seed=3", in);
    tm_image *b = tm_test_attack("noise:sigma=5:seed=4", in), *p = tm_test_attack("noise:5:3", in);
    tm_image *def = tm_test_attack("noise:sigma=5", in), *one = tm_test_attack("noise:sigma=5:seed=1", in);
    double sum = 0, sum2 = 0;
    size_t n = (size_t)W * H * 3, differ = 0;
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < (size_t)W * H; i++) {
            double d = a->plane[c][i] - 128.0;
            sum += d;
            sum2 += d * d;
            differ += a->plane[c][i] != b->plane[c][i];
        }
    double mean = sum / n, var = sum2 / n - mean * mean;
    /* n = 18432 samples: sd of the variance estimate 25 sqrt(2/n) = 0.26. */
    if (fabs(var - 25) > 2 || fabs(mean) > 0.2) fprintf(stderr, "noise:sigma=5:seed=3 added mean %.3f variance %.2f\n", mean, var);
    CU_ASSERT(fabs(var - 25) <= 2);
    CU_ASSERT(fabs(mean) <= 0.2);
    CU_ASSERT_EQUAL(tm_test_maxdiff(a, a2), 0.0);      /* same seed, same noise */
    CU_ASSERT_EQUAL(tm_test_maxdiff(a, p), 0.0);       /* positional = named */
    CU_ASSERT_EQUAL(tm_test_maxdiff(def, one), 0.0);   /* documented default seed 1 */
    CU_ASSERT(differ > n * 9 / 10);                    /* another seed, other noise */
    tm_image_free(a);
    tm_image_free(a2);
    tm_image_free(b);
    tm_image_free(p);
    tm_image_free(def);
    tm_image_free(one);
    tm_image_free(in);

    /* Clamped to 0..255. */
    tm_image *w = tm_test_flat(32, 32, 1, 255), *wn = tm_test_attack("noise:sigma=20", w);
    float mx = 0, mn = 255;
    for (size_t i = 0; i < 32 * 32; i++) {
        mx = fmaxf(mx, wn->plane[0][i]);
        mn = fminf(mn, wn->plane[0][i]);
    }
    CU_ASSERT(mx <= 255.0f);
    CU_ASSERT(mn < 240.0f);
    tm_image_free(wn);
    tm_image_free(w);
}

/* ---- codecs ---------------------------------------------------------------- */

static void test_codecs(void)
{
    tm_image *in = smooth_rgb();
    static const char *good[] = {"jpeg:q=90", "jpeg:q=90:ss=444", "webp:q=90"};
    for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
        tm_image *out = tm_test_attack(good[k], in);
        double p = tm_test_psnr(in, out);
        if (!(p > 35 && p < 999)) fprintf(stderr, "'%s': PSNR %.2f dB\n", good[k], p);
        CU_ASSERT(p > 35);
        CU_ASSERT(p < 999); /* it really went through the lossy codec */
        tm_image_free(out);
    }
    /* The parameters are honoured: lower quality is worse, 4:4:4 differs
     * from the default 4:2:0, positional q equals named q, the default is
     * q=75. */
    tm_image *j90 = tm_test_attack("jpeg:q=90", in), *j20 = tm_test_attack("jpeg:q=20", in), *j90p = tm_test_attack("jpeg:90", in);
    tm_image *j444 = tm_test_attack("jpeg:q=90:ss=444", in), *j420 = tm_test_attack("jpeg:q=90:ss=420", in);
    tm_image *jd = tm_test_attack("jpeg", in), *j75 = tm_test_attack("jpeg:q=75", in);
    tm_image *w90 = tm_test_attack("webp:q=90", in), *w20 = tm_test_attack("webp:q=20", in);
    if (tm_test_verbose())
        fprintf(stderr, "PSNR jpeg q20 %.2f q90 %.2f q90 444 %.2f; webp q20 %.2f q90 %.2f\n", tm_test_psnr(in, j20),
                tm_test_psnr(in, j90), tm_test_psnr(in, j444), tm_test_psnr(in, w20), tm_test_psnr(in, w90));
    CU_ASSERT(tm_test_psnr(in, j20) < tm_test_psnr(in, j90) - 3);
    CU_ASSERT(tm_test_psnr(in, w20) < tm_test_psnr(in, w90) - 2);
    CU_ASSERT_EQUAL(tm_test_maxdiff(j90, j90p), 0.0);
    CU_ASSERT_EQUAL(tm_test_maxdiff(j90, j420), 0.0);
    CU_ASSERT(tm_test_maxdiff(j90, j444) > 0);
    CU_ASSERT_EQUAL(tm_test_maxdiff(jd, j75), 0.0);
    tm_image *all[] = {j90, j20, j90p, j444, j420, jd, j75, w90, w20};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) tm_image_free(all[k]);

    /* PNG is 8-bit: exact on integer samples, within half a step otherwise. */
    tm_image *png = tm_test_attack("png", in);
    CU_ASSERT_EQUAL(tm_test_maxdiff(in, png), 0.0);
    tm_image_free(png);
    tm_image *fl = tm_test_synthetic(W, H, 3, 6, 0), *flp = tm_test_attack("png", fl);
    double d = tm_test_maxdiff(fl, flp);
    CU_ASSERT(d > 0 && d <= 0.5 + 1e-4);
    tm_image_free(flp);
    tm_image_free(fl);
    tm_image_free(in);
}

/* ---- chains ------------------------------------------------------------------ */

static void test_chains(void)
{
    tm_image *in = rgb();
    tm_image *chain = tm_test_attack("crop:0.5,gray", in);
    CU_ASSERT_EQUAL(chain->width, W / 2);
    CU_ASSERT_EQUAL(chain->height, H / 2);
    CU_ASSERT_EQUAL(chain->channels, 1);
    tm_image *c1 = tm_test_attack("crop:0.5", in), *c2 = tm_test_attack("gray", c1);
    CU_ASSERT_EQUAL(tm_test_maxdiff(chain, c2), 0.0);
    tm_image *spaced = tm_test_attack("  crop:0.5 ,\tgray  ", in);
    CU_ASSERT_EQUAL(tm_test_maxdiff(chain, spaced), 0.0);
    tm_image_free(spaced);
    tm_image_free(c2);
    tm_image_free(c1);
    tm_image_free(chain);

    /* Order matters and is left to right. */
    tm_image *bc = tm_test_attack("brightness:100,contrast:0", in), *cb = tm_test_attack("contrast:0,brightness:100", in);
    CU_ASSERT_EQUAL(bc->plane[0][0], 127.5f);
    CU_ASSERT_EQUAL(cb->plane[0][0], 227.5f);
    CU_ASSERT_EQUAL(bc->plane[2][W * H - 1], 127.5f);
    CU_ASSERT_EQUAL(cb->plane[2][W * H - 1], 227.5f);
    tm_image_free(bc);
    tm_image_free(cb);
    /* Crop of a crop composes: 0.5 then a window. */
    tm_image *cc = tm_test_attack("crop:0.5,crop:10x5+3+2", in);
    CU_ASSERT_EQUAL(cc->width, 10);
    CU_ASSERT_EQUAL(cc->height, 5);
    CU_ASSERT(is_window(in, cc, W / 4 + 3, H / 4 + 2));
    tm_image_free(cc);
    tm_image_free(in);
}

/* ---- sharpen ------------------------------------------------------------------ */

static void test_sharpen(void)
{
    /* Unsharp mask is v + A (v - blur_S(v)): check it against the blur step. */
    tm_image *in = smooth_rgb();
    tm_image *bl = tm_test_attack("blur:sigma=2", in), *sh = tm_test_attack("sharpen:amount=0.5:sigma=2", in);
    double worst = 0;
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < (size_t)W * H; i++) {
            double v = in->plane[c][i], want = fmin(255, fmax(0, v + 0.5 * (v - bl->plane[c][i])));
            worst = fmax(worst, fabs(sh->plane[c][i] - want));
        }
    if (worst > 1e-3) fprintf(stderr, "sharpen differs from v + A (v - blur) by %g\n", worst);
    CU_ASSERT(worst <= 1e-3);
    CU_ASSERT(tm_test_maxdiff(in, sh) > 1); /* and it did something */
    tm_image *pos = tm_test_attack("sharpen:0.5:2", in), *def = tm_test_attack("sharpen", in), *one = tm_test_attack("sharpen:1:1", in);
    CU_ASSERT_EQUAL(tm_test_maxdiff(sh, pos), 0.0);
    CU_ASSERT_EQUAL(tm_test_maxdiff(def, one), 0.0); /* documented defaults */
    tm_image *zero = tm_test_attack("sharpen:amount=0", in);
    CU_ASSERT(tm_test_maxdiff(in, zero) <= 1e-4);
    tm_image *all[] = {bl, sh, pos, def, one, zero};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) tm_image_free(all[k]);
    tm_image_free(in);

    /* A step edge 64 | 192 overshoots on both sides; far from it nothing moves;
     * alpha is not touched. */
    tm_image *edge = tm_test_flat(40, 8, 2, 64);
    for (int y = 0; y < 8; y++)
        for (int x = 20; x < 40; x++) edge->plane[0][y * 40 + x] = 192;
    tm_image *se = tm_test_attack("sharpen:amount=1:sigma=1", edge);
    float lo = 255, hi = 0;
    for (int x = 0; x < 40; x++) {
        lo = fminf(lo, se->plane[0][3 * 40 + x]);
        hi = fmaxf(hi, se->plane[0][3 * 40 + x]);
    }
    if (!(lo < 50 && hi > 206)) fprintf(stderr, "sharpened edge spans %.1f..%.1f, wanted overshoot past 64..192\n", lo, hi);
    CU_ASSERT(lo < 50);
    CU_ASSERT(hi > 206);
    CU_ASSERT(fabsf(se->plane[0][3 * 40 + 2] - 64) < 1e-3);
    CU_ASSERT(fabsf(se->plane[0][3 * 40 + 37] - 192) < 1e-3);
    CU_ASSERT_EQUAL(plane_maxdiff(edge, 1, se, 1), 0.0);
    tm_image_free(se);
    tm_image_free(edge);

    /* White noise: out = (1 + A) v - A blur(v) keeps more than twice the
     * variance at A = 1 (about 3.4 times), and more with a larger A. */
    uint32_t s = 4242;
    tm_image *nz = tm_test_flat(64, 64, 1, 128);
    for (size_t i = 0; i < 64 * 64; i++) {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        nz->plane[0][i] = 128.0f + (float)(s % 41) - 20.0f;
    }
    tm_image *n1 = tm_test_attack("sharpen:1", nz), *n2 = tm_test_attack("sharpen:2", nz);
    double m0, v0, m1, v1, m2, v2;
    stats(nz, 0, &m0, &v0);
    stats(n1, 0, &m1, &v1);
    stats(n2, 0, &m2, &v2);
    if (!(v1 > 2.5 * v0 && v1 < 4.5 * v0 && v2 > 1.5 * v1)) fprintf(stderr, "seed 4242: variance %.1f, sharpened %.1f (A=1), %.1f (A=2)\n", v0, v1, v2);
    CU_ASSERT(v1 > 2.5 * v0);
    CU_ASSERT(v1 < 4.5 * v0);
    CU_ASSERT(v2 > 1.5 * v1);
    CU_ASSERT(fabs(m1 - m0) < 1.0);
    tm_image_free(n1);
    tm_image_free(n2);
    tm_image_free(nz);

    /* A constant image stays constant. */
    tm_image *c = tm_test_flat(20, 20, 3, 77), *cs = tm_test_attack("sharpen:amount=5:sigma=3", c);
    CU_ASSERT(tm_test_maxdiff(c, cs) < 1e-3);
    tm_image_free(cs);
    tm_image_free(c);
}

/* ---- median ------------------------------------------------------------------- */

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The median filter by definition: sort the clamped window, take the middle. */
static float median_ref(const float *p, int w, int h, int x, int y, int r)
{
    float win[121];
    int k = 0;
    for (int j = -r; j <= r; j++)
        for (int i = -r; i <= r; i++) {
            int xx = x + i < 0 ? 0 : x + i >= w ? w - 1 : x + i, yy = y + j < 0 ? 0 : y + j >= h ? h - 1 : y + j;
            win[k++] = p[(size_t)yy * w + xx];
        }
    qsort(win, k, sizeof(float), cmp_float);
    return win[k / 2];
}

static void test_median(void)
{
    /* Every radius, on real-valued and on tie-heavy samples, odd sizes. */
    static const char *specs[] = {"median:r=1", "median:r=2", "median:r=3", "median:r=5"};
    for (int round = 0; round < 2; round++) {
        tm_image *in = tm_test_synthetic(37, 23, 4, 21 + round, round);
        CU_ASSERT_PTR_NOT_NULL_FATAL(in);
        if (round) /* few levels: many equal samples in every window */
            for (size_t i = 0; i < 37 * 23; i++) in->plane[1][i] = floorf(in->plane[1][i] / 32);
        for (int k = 0; k < 4; k++) {
            int r = k < 3 ? k + 1 : 5;
            tm_image *out = tm_test_attack(specs[k], in);
            int bad = 0;
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < 23; y++)
                    for (int x = 0; x < 37; x++)
                        bad += out->plane[c][y * 37 + x] != median_ref(in->plane[c], 37, 23, x, y, r);
            if (bad) fprintf(stderr, "'%s' (round %d): %d samples differ from the sorted-window median\n", specs[k], round, bad);
            CU_ASSERT_EQUAL(bad, 0);
            CU_ASSERT_EQUAL(plane_maxdiff(in, 3, out, 3), 0.0); /* alpha copied */
            tm_image_free(out);
        }
        tm_image_free(in);
    }

    /* Isolated impulses vanish, a straight edge survives exactly. */
    tm_image *imp = tm_test_flat(30, 20, 1, 100);
    imp->plane[0][5 * 30 + 5] = 255;
    imp->plane[0][10 * 30 + 20] = 0;
    imp->plane[0][0] = 255; /* a corner: clamped border */
    for (int y = 0; y < 20; y++)
        for (int x = 25; x < 30; x++) imp->plane[0][y * 30 + x] = 200;
    tm_image *m = tm_test_attack("median", imp), *m1 = tm_test_attack("median:1", imp);
    CU_ASSERT_EQUAL(tm_test_maxdiff(m, m1), 0.0); /* default r = 1 */
    int bad = 0;
    for (int y = 0; y < 20; y++)
        for (int x = 0; x < 30; x++) bad += m->plane[0][y * 30 + x] != (x < 25 ? 100.0f : 200.0f);
    CU_ASSERT_EQUAL(bad, 0);
    tm_image_free(m);
    tm_image_free(m1);
    tm_image_free(imp);
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* r = 1 must cope with a 12-megapixel photo: one plane of 4000x3000 well
 * within a second of CPU (a 3x3 sort per pixel would be several). */
static void test_median_large(void)
{
    tm_image *in = tm_test_synthetic(4000, 3000, 1, 8, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(in);
    double t = cpu_seconds();
    tm_image *out = tm_test_attack("median:r=1", in);
    t = cpu_seconds() - t;
    if (t > 2) fprintf(stderr, "median:r=1 on 4000x3000 took %.2f s of CPU\n", t);
    CU_ASSERT(t < 2);
    /* Spot-check against the definition. */
    int bad = 0;
    for (int k = 0; k < 2000; k++) {
        int x = (k * 7919) % 4000, y = (k * 104729) % 3000;
        bad += out->plane[0][(size_t)y * 4000 + x] != median_ref(in->plane[0], 4000, 3000, x, y, 1);
    }
    CU_ASSERT_EQUAL(bad, 0);
    tm_image_free(out);
    tm_image_free(in);
}

/* ---- saturation --------------------------------------------------------------- */

static void test_saturation(void)
{
    tm_image *in = tm_test_synthetic(W, H, 4, 13, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(in);
    tm_image *k1 = tm_test_attack("saturation:1", in), *k0 = tm_test_attack("saturation:0", in);
    tm_image *k2 = tm_test_attack("saturation:k=2", in), *kh = tm_test_attack("saturation:0.5", in);
    CU_ASSERT(tm_test_maxdiff(in, k1) <= 1e-4);
    int bad = 0, unclamped = 0;
    for (size_t i = 0; i < (size_t)W * H; i++) {
        double y = 0.299 * in->plane[0][i] + 0.587 * in->plane[1][i] + 0.114 * in->plane[2][i];
        int clamped = 0;
        for (int c = 0; c < 3; c++) {
            if (fabs(k0->plane[c][i] - y) > 1e-3) bad++;                                  /* K = 0: grey */
            if (fabs(kh->plane[c][i] - (y + 0.5 * (in->plane[c][i] - y))) > 1e-3) bad++;   /* chroma halved */
            double want = y + 2 * (in->plane[c][i] - y);
            if (want < 0 || want > 255) clamped = 1;
            else if (fabs(k2->plane[c][i] - want) > 1e-3) bad++;                            /* chroma doubled */
            if (k2->plane[c][i] < 0 || k2->plane[c][i] > 255) bad++;
        }
        if (!clamped) { /* luma kept where nothing clipped */
            unclamped++;
            double y2 = 0.299 * k2->plane[0][i] + 0.587 * k2->plane[1][i] + 0.114 * k2->plane[2][i];
            if (fabs(y2 - y) > 1e-3) bad++;
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(unclamped > W * H / 2);
    CU_ASSERT_EQUAL(plane_maxdiff(in, 3, k2, 3), 0.0); /* alpha untouched */
    tm_image_free(k1);
    tm_image_free(k0);
    tm_image_free(k2);
    tm_image_free(kh);
    tm_image_free(in);

    /* Grey images have no chroma: any K leaves them alone. */
    tm_image *g = tm_test_synthetic(W, H, 2, 14, 0), *gs = tm_test_attack("saturation:3", g);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_EQUAL(tm_test_maxdiff(g, gs), 0.0);
    tm_image_free(gs);
    tm_image_free(g);
}

/* ---- quantize ----------------------------------------------------------------- */

/* Number of distinct colours (colour planes only, alpha ignored). */
static int count_colours(const tm_image *img, int nc)
{
    size_t n = (size_t)img->width * img->height;
    uint32_t *keys = malloc(sizeof(uint32_t) * n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(keys);
    for (size_t i = 0; i < n; i++) {
        uint32_t k = 0;
        for (int c = 0; c < nc; c++) k = k << 8 | (uint32_t)lrintf(img->plane[c][i]);
        keys[i] = k;
    }
    int distinct = 0;
    for (size_t i = 0; i < n; i++) { /* n is small in these tests */
        size_t j = 0;
        while (j < i && keys[j] != keys[i]) j++;
        distinct += j == i;
    }
    free(keys);
    return distinct;
}

/* Largest distance by which a pixel of out misses the nearest colour that
 * out uses, from its 8-bit input colour: 0 when every pixel took its
 * nearest palette entry. */
static double nearest_violation(const tm_image *in, const tm_image *out)
{
    size_t n = (size_t)in->width * in->height;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double v[3], mine = 0, best = 1e30;
        for (int c = 0; c < 3; c++) {
            v[c] = floor(in->plane[c][i] + 0.5);
            mine += (v[c] - out->plane[c][i]) * (v[c] - out->plane[c][i]);
        }
        for (size_t j = 0; j < n; j += 1) {
            double d = 0;
            for (int c = 0; c < 3; c++) d += (v[c] - out->plane[c][j]) * (v[c] - out->plane[c][j]);
            best = fmin(best, d);
        }
        worst = fmax(worst, mine - best);
    }
    return worst;
}

static void test_quantize(void)
{
    tm_image *in = tm_test_synthetic(48, 32, 4, 15, 0); /* thousands of colours */
    CU_ASSERT_PTR_NOT_NULL_FATAL(in);
    CU_ASSERT(count_colours(in, 3) > 1000);
    static const int ns[] = {2, 4, 16, 256};
    double prev = 0;
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        char spec[32];
        snprintf(spec, sizeof spec, "quantize:colors=%d", ns[k]);
        tm_image *out = tm_test_attack(spec, in);
        int nc = count_colours(out, 3);
        double viol = nearest_violation(in, out), p = tm_test_psnr(in, out);
        int integral = 1;
        for (int c = 0; c < 3; c++)
            for (size_t i = 0; i < 48 * 32; i++) integral &= out->plane[c][i] == floorf(out->plane[c][i]);
        if (nc > ns[k] || viol > 0 || p <= prev)
            fprintf(stderr, "'%s': %d colours, nearest missed by %g, PSNR %.2f (fewer colours gave %.2f)\n", spec, nc, viol, p, prev);
        CU_ASSERT(nc <= ns[k]);
        CU_ASSERT(nc >= ns[k] / 2); /* the palette is used, not wasted */
        CU_ASSERT_EQUAL(viol, 0.0);
        CU_ASSERT(p > prev + 1);    /* more colours, closer */
        CU_ASSERT(integral);        /* a GIF palette is 8-bit */
        CU_ASSERT_EQUAL(plane_maxdiff(in, 3, out, 3), 0.0);
        prev = p;
        tm_image_free(out);
    }
    /* Deterministic; default 256 colours; positional = named. */
    tm_image *a = tm_test_attack("quantize", in), *b = tm_test_attack("quantize:256", in), *c = tm_test_attack("quantize:colors=256:dither=0", in);
    CU_ASSERT_EQUAL(tm_test_maxdiff(a, b), 0.0);
    CU_ASSERT_EQUAL(tm_test_maxdiff(a, c), 0.0);
    tm_image_free(a);
    tm_image_free(b);
    tm_image_free(c);
    tm_image_free(in);

    /* An image with no more colours than the palette keeps them exactly. */
    tm_image *few = tm_test_flat(20, 10, 3, 0);
    static const float cols[5][3] = {{0, 0, 0}, {255, 255, 255}, {12, 200, 7}, {13, 200, 7}, {90, 91, 92}};
    for (size_t i = 0; i < 200; i++)
        for (int ch = 0; ch < 3; ch++) few->plane[ch][i] = cols[(i * 7) % 5][ch];
    tm_image *f5 = tm_test_attack("quantize:colors=5", few), *f256 = tm_test_attack("quantize", few), *f4 = tm_test_attack("quantize:4", few);
    CU_ASSERT_EQUAL(tm_test_maxdiff(few, f5), 0.0);
    CU_ASSERT_EQUAL(tm_test_maxdiff(few, f256), 0.0);
    CU_ASSERT(count_colours(f4, 3) <= 4);
    CU_ASSERT(tm_test_maxdiff(few, f4) > 0);
    tm_image_free(f5);
    tm_image_free(f256);
    tm_image_free(f4);
    tm_image_free(few);

    /* Median cut finds two clusters: two colours land on their means. */
    tm_image *two = tm_test_flat(32, 32, 3, 0);
    uint32_t s = 99;
    double sum[2][3] = {{0}}, cnt[2] = {0};
    for (size_t i = 0; i < 32 * 32; i++) {
        int k = (i / 32 + i % 32) % 2;
        cnt[k]++;
        for (int ch = 0; ch < 3; ch++) {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            float base = k ? (ch == 0 ? 200 : 50) : 20;
            two->plane[ch][i] = base + (float)(s % 9);
            sum[k][ch] += two->plane[ch][i];
        }
    }
    tm_image *t2 = tm_test_attack("quantize:colors=2", two);
    double off = 0;
    for (size_t i = 0; i < 32 * 32; i++) {
        int k = (i / 32 + i % 32) % 2;
        for (int ch = 0; ch < 3; ch++) off = fmax(off, fabs(t2->plane[ch][i] - sum[k][ch] / cnt[k]));
    }
    if (off > 1) fprintf(stderr, "quantize:2 put a cluster %.2f from its mean\n", off);
    CU_ASSERT(off <= 1);
    tm_image_free(t2);
    tm_image_free(two);

    /* Grey stays grey: one plane, at most N levels. */
    tm_image *g = tm_test_synthetic(64, 16, 1, 16, 0), *gq = tm_test_attack("quantize:colors=3", g);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_EQUAL(gq->channels, 1);
    CU_ASSERT(count_colours(gq, 1) <= 3);
    CU_ASSERT(count_colours(gq, 1) >= 2);
    tm_image_free(gq);
    tm_image_free(g);
}

/* Floyd-Steinberg trades pointwise error for local averages: on a smooth
 * ramp (along a line of colours, so that 4 entries span it) the blurred
 * dithered image is closer to the blurred original than the blurred banded
 * one. */
static void test_quantize_dither(void)
{
    tm_image *in = tm_test_flat(128, 32, 3, 0);
    for (int y = 0; y < 32; y++)
        for (int x = 0; x < 128; x++) {
            in->plane[0][y * 128 + x] = (float)(2 * x);
            in->plane[1][y * 128 + x] = (float)(255 - 2 * x);
            in->plane[2][y * 128 + x] = (float)(40 + x);
        }
    tm_image *band = tm_test_attack("quantize:colors=4", in), *dith = tm_test_attack("quantize:colors=4:dither=1", in);
    tm_image *dith2 = tm_test_attack("quantize:4:1", in);
    CU_ASSERT(count_colours(dith, 3) <= 4);
    CU_ASSERT(tm_test_maxdiff(band, dith) > 0);
    CU_ASSERT_EQUAL(tm_test_maxdiff(dith, dith2), 0.0); /* deterministic */
    tm_image *bi = tm_test_attack("blur:2", in), *bb = tm_test_attack("blur:2", band), *bd = tm_test_attack("blur:2", dith);
    double pb = tm_test_psnr(bi, bb), pd = tm_test_psnr(bi, bd);
    if (!(pd > pb + 3)) fprintf(stderr, "blurred PSNR: banded %.2f dB, dithered %.2f dB\n", pb, pd);
    CU_ASSERT(pd > pb + 3);
    tm_image *all[] = {band, dith, dith2, bi, bb, bd, in};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) tm_image_free(all[k]);

    /* The diffusion itself, against a plain Floyd-Steinberg over the two grey
     * levels the palette chose: the running value (sample plus the error
     * pushed to it, clamped to 0..255) is rounded and takes its nearest
     * level; what is left goes 7/16 right, 3/16 down-left, 5/16 down and 1/16
     * down-right. */
    enum { GW = 50, GH = 12 };
    tm_image *g = tm_test_synthetic(GW, GH, 1, 17, 0), *gd = tm_test_attack("quantize:colors=2:dither=1", g);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    float lv[2] = {gd->plane[0][0], gd->plane[0][0]};
    for (size_t i = 0; i < GW * GH; i++) {
        lv[0] = fminf(lv[0], gd->plane[0][i]);
        lv[1] = fmaxf(lv[1], gd->plane[0][i]);
    }
    CU_ASSERT(lv[0] < lv[1]);
    float err[2][GW + 2] = {{0}};
    int bad = 0;
    for (int y = 0; y < GH; y++) {
        float *cur = err[y % 2], *nxt = err[(y + 1) % 2];
        for (int x = 0; x < GW; x++) {
            float want = fminf(255.0f, fmaxf(0.0f, g->plane[0][y * GW + x] + cur[x + 1]));
            float r = floorf(want + 0.5f), p = fabsf(r - lv[0]) <= fabsf(r - lv[1]) ? lv[0] : lv[1];
            bad += gd->plane[0][y * GW + x] != p;
            float e = want - p;
            cur[x + 2] += e * (7.0f / 16);
            nxt[x] += e * (3.0f / 16);
            nxt[x + 1] += e * (5.0f / 16);
            nxt[x + 2] += e * (1.0f / 16);
        }
        memset(cur, 0, sizeof err[0]);
    }
    if (bad) fprintf(stderr, "quantize:2:1 differs from Floyd-Steinberg at %d of %d pixels\n", bad, GW * GH);
    CU_ASSERT_EQUAL(bad, 0);
    tm_image_free(gd);
    tm_image_free(g);
}

/* ---- screenshot --------------------------------------------------------------- */

/* The preset is exactly the chain it is made of. */
static void test_screenshot(void)
{
    tm_image *in = smooth_rgb(); /* 96x64 */
    static const struct {
        const char *preset, *chain;
        int w, h;
    } cases[] = {
        {"screenshot:side=48", "scale:0.5,crop:40x24+4+4,jpeg:q=75", 40, 24},
        {"screenshot:side=48:q=95", "scale:0.5,crop:40x24+4+4,jpeg:q=95", 40, 24},
        {"screenshot:48:20", "scale:0.5,crop:40x24+4+4,jpeg:q=20", 40, 24},
        {"screenshot", "crop:88x56+4+4,jpeg:q=75", 88, 56},        /* 1280: no upscaling */
        {"screenshot:side=96", "crop:88x56+4+4,jpeg:q=75", 88, 56}, /* fits already */
        {"screenshot:side=24", "scale:0.25,crop:16x8+4+4,jpeg:q=75", 16, 8},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tm_image *a = tm_test_attack(cases[k].preset, in), *b = tm_test_attack(cases[k].chain, in);
        double d = tm_test_maxdiff(a, b);
        if (a->width != cases[k].w || a->height != cases[k].h || d != 0)
            fprintf(stderr, "'%s' gave %dx%d, %g from '%s'\n", cases[k].preset, a->width, a->height, d, cases[k].chain);
        CU_ASSERT_EQUAL(a->width, cases[k].w);
        CU_ASSERT_EQUAL(a->height, cases[k].h);
        CU_ASSERT_EQUAL(d, 0.0);
        tm_image_free(a);
        tm_image_free(b);
    }
    /* Portrait: the longest side is the height; an inexact factor rounds. */
    tm_image *tall = tm_test_attack("turn:90,screenshot:side=48", in);
    CU_ASSERT_EQUAL(tall->width, 24);
    CU_ASSERT_EQUAL(tall->height, 40);
    tm_image_free(tall);
    tm_image *odd = tm_test_attack("screenshot:side=50", in); /* 50 x 33.33 -> 50x33 */
    CU_ASSERT_EQUAL(odd->width, 42);
    CU_ASSERT_EQUAL(odd->height, 25);
    tm_image_free(odd);
    /* Lower quality really is worse. */
    tm_image *q90 = tm_test_attack("screenshot:q=90", in), *q20 = tm_test_attack("screenshot:q=20", in);
    tm_image *ref = tm_test_attack("crop:88x56+4+4", in);
    CU_ASSERT(tm_test_psnr(ref, q20) < tm_test_psnr(ref, q90) - 3);
    tm_image_free(q90);
    tm_image_free(q20);
    tm_image_free(ref);
    /* Nothing left once the border is gone. */
    tm_image *tiny = tm_test_flat(40, 8, 3, 50), *out = tiny;
    char err[256] = "";
    CU_ASSERT_EQUAL(tm_attack_apply("screenshot", tiny, &out, err, sizeof err), TM_ERR_ARG);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "too small"));
    tm_image_free(tiny);
    tm_image_free(in);
}

/* ---- bend --------------------------------------------------------------------- */

/* A ramp image whose planes 0 and 1 are the x and y coordinates: bicubic
 * interpolation reproduces them exactly, so a bent copy reads back the
 * displacement at every pixel. */
static tm_image *coords(int w, int h, int channels)
{
    tm_image *img = tm_test_flat(w, h, channels, 50);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            img->plane[0][y * w + x] = (float)x;
            img->plane[1][y * w + x] = (float)y;
        }
    return img;
}

/* Largest and mean displacement read back from a bent coords() image, and
 * the largest change between horizontal neighbours, over pixels at least
 * margin from the border (closer ones may sample outside and be clamped). */
static void displacement(const tm_image *out, int margin, double *dmax, double *dmean, double *rough)
{
    int w = out->width, h = out->height;
    double sum = 0, prev[2] = {0, 0};
    size_t n = 0;
    *dmax = *rough = 0;
    for (int y = margin; y < h - margin; y++)
        for (int x = margin; x < w - margin; x++) {
            double dx = out->plane[0][y * w + x] - x, dy = out->plane[1][y * w + x] - y, d = hypot(dx, dy);
            *dmax = fmax(*dmax, d);
            sum += d;
            n++;
            if (x > margin) *rough = fmax(*rough, hypot(dx - prev[0], dy - prev[1]));
            prev[0] = dx;
            prev[1] = dy;
        }
    *dmean = sum / n;
}

static void test_bend(void)
{
    tm_image *in = coords(160, 120, 3);
    static const unsigned seeds[] = {1, 2, 3, 77};
    for (size_t k = 0; k < sizeof seeds / sizeof seeds[0]; k++) {
        char spec[64];
        snprintf(spec, sizeof spec, "bend:strength=4:seed=%u", seeds[k]);
        tm_image *out = tm_test_attack(spec, in);
        double dmax, dmean, rough;
        displacement(out, 10, &dmax, &dmean, &rough);
        if (!(dmax <= 4 + 1e-3 && dmax > 2.4 && dmean > 0.8 && rough < 0.6))
            fprintf(stderr, "'%s': displacement max %.3f mean %.3f, neighbour change %.3f\n", spec, dmax, dmean, rough);
        CU_ASSERT(dmax <= 4 + 1e-3); /* never more than S */
        CU_ASSERT(dmax > 2.4);       /* and close to it somewhere */
        CU_ASSERT(dmean > 0.8);      /* everywhere moved, not a few pixels */
        CU_ASSERT(rough < 0.6);      /* smoothly */
        CU_ASSERT(plane_maxdiff(in, 2, out, 2) < 1e-3); /* a constant plane stays so */
        tm_image_free(out);
    }
    /* The field is linear in S: half the strength, half the displacement. */
    tm_image *b4 = tm_test_attack("bend:4:5", in), *b2 = tm_test_attack("bend:strength=2:seed=5", in);
    double worst = 0;
    for (int y = 10; y < 110; y++)
        for (int x = 10; x < 150; x++)
            for (int c = 0; c < 2; c++) {
                double ref = c ? y : x;
                worst = fmax(worst, fabs((b2->plane[c][y * 160 + x] - ref) - 0.5 * (b4->plane[c][y * 160 + x] - ref)));
            }
    CU_ASSERT(worst < 1e-3);
    /* Same seed, same bend; another seed, another; defaults S = 1, seed 1. */
    tm_image *again = tm_test_attack("bend:strength=4:seed=5", in), *other = tm_test_attack("bend:strength=4:seed=6", in);
    tm_image *def = tm_test_attack("bend", in), *one = tm_test_attack("bend:1:1", in);
    CU_ASSERT_EQUAL(tm_test_maxdiff(b4, again), 0.0);
    CU_ASSERT(tm_test_maxdiff(b4, other) > 0.5);
    CU_ASSERT_EQUAL(tm_test_maxdiff(def, one), 0.0);
    double dmax, dmean, rough;
    displacement(def, 4, &dmax, &dmean, &rough);
    CU_ASSERT(dmax <= 1 + 1e-3 && dmax > 0.6);
    tm_image *all[] = {b4, b2, again, other, def, one};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) tm_image_free(all[k]);
    /* No bending is the identity (bicubic at whole positions). */
    tm_image *z = tm_test_attack("bend:strength=0", in);
    CU_ASSERT(tm_test_maxdiff(in, z) <= 1e-4);
    tm_image_free(z);
    tm_image_free(in);

    /* Alpha moves with the colours: it is geometry. */
    tm_image *rgba = coords(64, 48, 4);
    for (int y = 0; y < 48; y++)
        for (int x = 0; x < 64; x++) rgba->plane[3][y * 64 + x] = (float)x;
    tm_image *ba = tm_test_attack("bend:3:9", rgba);
    CU_ASSERT(plane_maxdiff(ba, 0, ba, 3) < 1e-4);
    CU_ASSERT(plane_maxdiff(rgba, 3, ba, 3) > 0.5);
    tm_image_free(ba);
    tm_image_free(rgba);
}

/* ---- combining copies ---------------------------------------------------------- */

static tm_image *combine_ok(const char *spec, tm_image **in, size_t n)
{
    tm_image *out = NULL;
    char err[256] = "";
    tm_status st = tm_attack_combine(spec, (const tm_image *const *)in, n, &out, err, sizeof err);
    if (st != TM_OK) fprintf(stderr, "combine '%s' of %zu: %s (%s)\n", spec, n, tm_strerror(st), err);
    CU_ASSERT_EQUAL_FATAL(st, TM_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_STRING_EQUAL(err, "");
    return out;
}

static void test_combine_pixelwise(void)
{
    tm_image *in[4];
    for (int k = 0; k < 4; k++) {
        in[k] = tm_test_synthetic(W, H, 4, 30 + k, 0);
        CU_ASSERT_PTR_NOT_NULL_FATAL(in[k]);
    }
    const uint8_t icc[] = {4, 5, 6};
    CU_ASSERT_EQUAL(tm_image_set_icc(in[0], icc, sizeof icc), TM_OK);
    tm_image *copy0 = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_clone(in[0], &copy0), TM_OK);
    tm_image *avg2 = combine_ok("average", in, 2), *mn = combine_ok("min", in, 3), *mx = combine_ok("max", in, 3);
    tm_image *med3 = combine_ok("median", in, 3), *med4 = combine_ok("median", in, 4), *avg4 = combine_ok("average", in, 4);
    int bad = 0;
    for (int c = 0; c < 4; c++)
        for (size_t i = 0; i < (size_t)W * H; i++) {
            float v[4];
            for (int k = 0; k < 4; k++) v[k] = in[k]->plane[c][i];
            float lo = fminf(v[0], fminf(v[1], v[2])), hi = fmaxf(v[0], fmaxf(v[1], v[2]));
            float mid = v[0] + v[1] + v[2] - lo - hi;
            qsort(v, 4, sizeof(float), cmp_float);
            bad += fabs(avg2->plane[c][i] - 0.5 * ((double)in[0]->plane[c][i] + in[1]->plane[c][i])) > 1e-4;
            bad += fabs(avg4->plane[c][i] - 0.25 * ((double)v[0] + v[1] + v[2] + v[3])) > 1e-4;
            bad += mn->plane[c][i] != lo;
            bad += mx->plane[c][i] != hi;
            bad += fabs(med3->plane[c][i] - mid) > 1e-4;
            bad += fabs(med4->plane[c][i] - 0.5 * ((double)v[1] + v[2])) > 1e-4; /* even count: middle two */
        }
    CU_ASSERT_EQUAL(bad, 0);
    /* The result carries the first image's colour description. */
    CU_ASSERT_EQUAL(avg2->icc_len, sizeof icc);
    /* An image averaged with itself is itself. */
    tm_image *same[2] = {in[0], in[0]};
    tm_image *self = combine_ok("average", same, 2);
    CU_ASSERT_EQUAL(tm_test_maxdiff(self, in[0]), 0.0);
    /* A chain after the mode applies to the combination. */
    tm_image *chained = combine_ok(" max , gray ", in, 3), *g = tm_test_attack("gray", mx);
    CU_ASSERT_EQUAL(chained->channels, 1);
    CU_ASSERT_EQUAL(tm_test_maxdiff(chained, g), 0.0);
    /* Sixteen copies are allowed. */
    tm_image *many[16];
    for (int k = 0; k < 16; k++) many[k] = in[k % 4];
    tm_image *avg16 = combine_ok("average", many, 16);
    CU_ASSERT(tm_test_maxdiff(avg16, avg4) < 1e-3);
    /* Inputs are borrowed: untouched. */
    CU_ASSERT_EQUAL(tm_test_maxdiff(in[0], copy0), 0.0);
    tm_image *all[] = {avg2, mn, mx, med3, med4, avg4, self, chained, g, avg16, copy0};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) tm_image_free(all[k]);
    for (int k = 0; k < 4; k++) tm_image_free(in[k]);
}

static void test_combine_interleave(void)
{
    tm_image *in[3];
    for (int k = 0; k < 3; k++) in[k] = tm_test_flat(W, H, 3, 10.0f * (k + 1)); /* 10, 20, 30 */
    static const struct {
        const char *spec;
        int n, block;
    } cases[] = {
        {"interleave:block=8", 2, 8}, {"interleave:5", 3, 5}, {"interleave", 2, 64}, {"interleave:block=1", 3, 1}, {"interleave:1000", 2, 1000},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tm_image *out = combine_ok(cases[k].spec, in, cases[k].n);
        int bad = 0, used[3] = {0, 0, 0};
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int from = (x / cases[k].block + y / cases[k].block) % cases[k].n;
                float v = out->plane[1][y * W + x];
                bad += v != 10.0f * (from + 1);
                used[(int)lrintf(v / 10) - 1 < 0 ? 0 : (int)lrintf(v / 10) - 1 > 2 ? 2 : (int)lrintf(v / 10) - 1]++;
            }
        if (bad) fprintf(stderr, "'%s' of %d: %d pixels from the wrong copy\n", cases[k].spec, cases[k].n, bad);
        CU_ASSERT_EQUAL(bad, 0);
        if (cases[k].block < W) /* every copy contributes a fair share */
            for (int i = 0; i < cases[k].n; i++) CU_ASSERT(used[i] > W * H / cases[k].n / 2);
        tm_image_free(out);
    }
    for (int k = 0; k < 3; k++) tm_image_free(in[k]);
}

static void test_combine_errors(void)
{
    tm_image *a = tm_test_flat(W, H, 3, 10), *b = tm_test_flat(W, H, 3, 20), *small = tm_test_flat(W / 2, H, 3, 20), *grey = tm_test_flat(W, H, 1, 20);
    tm_image *ab[17];
    for (int k = 0; k < 17; k++) ab[k] = k % 2 ? b : a;
    tm_image *mism[2] = {a, small}, *chan[3] = {a, b, grey}, *hole[3] = {a, NULL, b};
    static const struct {
        const char *spec;
        int set, n;
        const char *want;
    } cases[] = {
        {"average", 0, 1, "wants 2..16 images, got 1"},
        {"median", 0, 17, "wants 2..16 images, got 17"},
        {"min", 0, 0, "wants 2..16"},
        {"max", 1, 2, "image 2 is 48x64 with 3 channels but image 1 is 96x64 with 3"},
        {"average", 2, 3, "image 3 is 96x64 with 1 channels"},
        {"average", 3, 3, "image 2 is missing"},
        {"blur", 0, 2, "'blur' is not a combine mode"},
        {"nosuch", 0, 2, "unknown combine mode 'nosuch'"},
        {"", 0, 2, "empty"},
        {"average:3", 0, 2, "unexpected argument '3'"},
        {"interleave:block=0", 0, 2, "block wants a whole number of pixels 1..65500"},
        {"interleave:block=2.5", 0, 2, "whole number"},
        {"interleave:size=4", 0, 2, "unknown argument 'size'"},
        {"average,jpeg:q=0", 0, 2, "q wants a whole number 1..100"},
        {"average,average", 0, 2, "'average' combines several images"},
        {"average,", 0, 2, "empty"},
    };
    tm_image **sets[] = {ab, mism, chan, hole};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tm_image *out = a;
        char err[256];
        memset(err, 'x', sizeof err);
        err[sizeof err - 1] = 0;
        tm_status st = tm_attack_combine(cases[k].spec, (const tm_image *const *)sets[cases[k].set], cases[k].n, &out, err, sizeof err);
        int ok = st == TM_ERR_ARG && out == NULL && strlen(err) < 200 && strstr(err, cases[k].want);
        if (!ok) fprintf(stderr, "combine '%s' of %d: status %d, message '%.100s' (wanted '%s')\n", cases[k].spec, cases[k].n, st, err, cases[k].want);
        CU_ASSERT(ok);
    }
    tm_image *out = a;
    CU_ASSERT_EQUAL(tm_attack_combine(NULL, (const tm_image *const *)ab, 2, &out, NULL, 0), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_attack_combine("average", NULL, 2, &out, NULL, 0), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_attack_combine("average", (const tm_image *const *)ab, 2, NULL, NULL, 0), TM_ERR_ARG);
    out = a;
    CU_ASSERT_EQUAL(tm_attack_combine("nosuch", (const tm_image *const *)ab, 2, &out, NULL, 0), TM_ERR_ARG);
    CU_ASSERT_PTR_NULL(out);
    /* A success clears an old message. */
    char err[64] = "stale";
    CU_ASSERT_EQUAL(tm_attack_combine("average", (const tm_image *const *)ab, 2, &out, err, sizeof err), TM_OK);
    CU_ASSERT_STRING_EQUAL(err, "");
    tm_image_free(out);

    /* Every mode is listed once; the list ends. */
    static const char *modes[] = {"average", "min", "max", "median", "interleave"};
    size_t i;
    for (i = 0; tm_attack_combine_usage(i); i++) {
        const char *u = tm_attack_combine_usage(i);
        CU_ASSERT(i < 5 && !strncmp(u, modes[i < 5 ? i : 0], strlen(modes[i < 5 ? i : 0])));
        CU_ASSERT_PTR_NOT_NULL(strstr(u, "  "));
    }
    CU_ASSERT_EQUAL(i, 5);
    CU_ASSERT_PTR_NULL(tm_attack_combine_usage((size_t)-1));
    tm_image_free(a);
    tm_image_free(b);
    tm_image_free(small);
    tm_image_free(grey);
}

/* ---- bad specs --------------------------------------------------------------- */

static void test_bad_specs(void)
{
    tm_image *in = tm_test_synthetic(32, 24, 3, 2, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(in);
    char overlong[256], longval[64];
    memcpy(overlong, "jpeg:q=", 7);
    memset(overlong + 7, '5', 200);
    overlong[207] = 0;
    memcpy(longval, "jpeg:q=", 7);
    memset(longval + 7, '5', 40);
    longval[47] = 0;
    static const struct {
        const char *spec, *want; /* want: a word the message must contain */
    } cases[] = {
        {"nosuch", "nosuch"},
        {"jpg:q=50", "jpg"},
        {"", "empty"},
        {",", "empty"},
        {"   ", "empty"},
        {"jpeg:q=50,", "empty"},
        {"jpeg:q=50,,gray", "empty"},
        {"jpeg:q=0", "q"},
        {"jpeg:q=101", "q"},
        {"jpeg:q=abc", "q"},
        {"jpeg:q=50x", "q"},
        {"jpeg:ss=411", "ss"},
        {"webp:q=0", "q"},
        {"crop:2", "crop"},
        {"crop:0", "crop"},
        {"crop", "crop"},
        {"crop:10x10+1000+0", "crop"},
        {"crop:10x10+0+20", "crop"},
        {"crop:0x5+0+0", "crop"},
        {"crop:-5x10+0+0", "crop"},
        {"crop:10x10+-1+0", "crop"},
        {"crop:10x10+0+-1", "crop"},
        {"crop:10x10+0+0junk", "crop"},
        {"crop:99999999999x1+0+0", "crop"},
        {"crop:10x10+0", "crop"},
        {"gamma", "gamma"},
        {"gamma:0", "gamma"},
        {"gamma:nan", "gamma"},
        {"brightness:300", "brightness"},
        {"contrast:-1", "contrast"},
        {"blur:sigma=0", "blur"},
        {"noise:sigma=-1", "noise"},
        {"noise:sigma=2:seed=-1", "seed"},
        {"jpeg:q=50:ss=444:a=1:b=2:c=3", "unknown argument 'a'"},
        {"jpeg:=5", "unknown argument"},
        {"jpeg:averyveryverylongkey=5", "unknown argument"},
        {"jpeg:quality=20", "unknown argument 'quality'"},
        {"blur:s=5", "unknown argument 's'"},
        {"jpeg:50:q=60", "given twice"},
        {"jpeg:q=50:q=40", "given twice"},
        {"gray:1", "unexpected argument '1'"},
        {"png:x", "unexpected argument 'x'"},
        {"crop:0.5:junk", "unexpected argument 'junk'"},
        {"jpeg:50:444:9", "unexpected argument '9'"},
        {"jpeg:q=50.7", "whole number"},
        {"noise:seed=1.5", "whole number"},
        {"jpeg:q=", "unknown argument"},
        {"crop:0.5,nosuch", "nosuch"},   /* the second step fails */
        {"gray,jpeg:q=0", "q"},
        {"sharpen:amount=-1", "amount wants 0..10"},
        {"sharpen:amount=11", "amount wants 0..10"},
        {"sharpen:sigma=0", "sigma wants 0.1..20"},
        {"sharpen:1:2:3", "unexpected argument '3'"},
        {"median:r=0", "r wants a whole number 1..5"},
        {"median:6", "r wants a whole number 1..5"},
        {"median:r=1.5", "whole number"},
        {"median:radius=2", "unknown argument 'radius'"},
        {"saturation", "saturation: wants a factor in 0..4"},
        {"saturation:4.5", "0..4"},
        {"saturation:-0.1", "0..4"},
        {"saturation:k=x", "0..4"},
        {"quantize:colors=1", "colors wants a whole number 2..256"},
        {"quantize:257", "2..256"},
        {"quantize:colors=16.5", "whole number"},
        {"quantize:dither=2", "dither wants 0 or 1"},
        {"quantize:16:yes", "dither wants 0 or 1"},
        {"screenshot:side=15", "side wants a whole number of pixels 16..65500"},
        {"screenshot:side=65501", "16..65500"},
        {"screenshot:q=0", "q wants a whole number 1..100"},
        {"screenshot:1024:75:x", "unexpected argument 'x'"},
        {"bend:strength=10.5", "strength wants 0..10"},
        {"bend:-1", "strength wants 0..10"},
        {"bend:seed=-3", "seed wants a whole number 0..4294967295"},
        {"bend:1:4294967296", "seed"},
        {"average", "'average' combines several images"},
        {"gray,interleave:block=8", "'interleave' combines several images"},
    };
    tm_image *sentinel = in; /* any non-NULL value: *out must be reset */
    for (size_t k = 0; k < sizeof cases / sizeof cases[0] + 2; k++) {
        const char *spec = k < sizeof cases / sizeof cases[0] ? cases[k].spec : k == sizeof cases / sizeof cases[0] ? overlong : longval;
        const char *want = k < sizeof cases / sizeof cases[0] ? cases[k].want : k == sizeof cases / sizeof cases[0] ? "overlong" : "too long";
        tm_image *out = sentinel;
        char err[256];
        memset(err, 'x', sizeof err);
        err[sizeof err - 1] = 0;
        tm_status st = tm_attack_apply(spec, in, &out, err, sizeof err);
        /* err was filled with 'x': a message must be written and terminated. */
        int ok = st == TM_ERR_ARG && out == NULL && err[0] && strlen(err) < 200 && strstr(err, want);
        if (!ok)
            fprintf(stderr, "bad spec '%.60s': status %d, out %s, message '%.100s' (wanted it to mention '%s')\n", spec, st,
                    out ? "set" : "NULL", err, want);
        CU_ASSERT(ok);
        if (out && out != sentinel) tm_image_free(out);
    }
    /* No message buffer, or a tiny one, is fine. */
    tm_image *out = sentinel;
    CU_ASSERT_EQUAL(tm_attack_apply("nosuch", in, &out, NULL, 0), TM_ERR_ARG);
    CU_ASSERT_PTR_NULL(out);
    char tiny[8];
    memset(tiny, 'x', sizeof tiny);
    CU_ASSERT_EQUAL(tm_attack_apply("nosuch", in, &out, tiny, sizeof tiny), TM_ERR_ARG);
    CU_ASSERT_PTR_NOT_NULL(memchr(tiny, 0, sizeof tiny));
    CU_ASSERT(strlen(tiny) == sizeof tiny - 1);
    /* A success clears an old message. */
    char err[64] = "stale";
    CU_ASSERT_EQUAL(tm_attack_apply("gray", in, &out, err, sizeof err), TM_OK);
    CU_ASSERT_STRING_EQUAL(err, "");
    tm_image_free(out);
    /* Missing arguments. */
    CU_ASSERT_EQUAL(tm_attack_apply(NULL, in, &out, NULL, 0), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_attack_apply("gray", NULL, &out, NULL, 0), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_attack_apply("gray", in, NULL, NULL, 0), TM_ERR_ARG);
    tm_image_free(in);
}

static CU_TestInfo tests[] = {
    {"usage lists every attack once", test_usage_lists_every_attack},
    {"every attack runs; input untouched", test_examples_run_and_keep_input},
    {"crop fraction and window", test_crop},
    {"crop window overflow refused", test_crop_window_overflow},
    {"gray", test_gray},
    {"neutral parameters are identities", test_pointwise_identities},
    {"gamma, brightness, contrast values", test_pointwise_values},
    {"blur", test_blur},
    {"noise", test_noise},
    {"jpeg, webp, png", test_codecs},
    {"sharpen", test_sharpen},
    {"median matches its definition", test_median},
    {"median r=1 on 12 megapixels", test_median_large},
    {"saturation", test_saturation},
    {"quantize palette and nearest colours", test_quantize},
    {"quantize dither", test_quantize_dither},
    {"screenshot is its chain", test_screenshot},
    {"bend displacement field", test_bend},
    {"combine average, min, max, median", test_combine_pixelwise},
    {"combine interleave", test_combine_interleave},
    {"combine errors", test_combine_errors},
    {"chains apply in order", test_chains},
    {"bad specs", test_bad_specs},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tm_test_main("attack", tests);
}
