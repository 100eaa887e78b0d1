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

/* A constant image (every colour sample v; alpha, if any, 200). */
static tm_image *flat(int w, int h, int channels, float v)
{
    tm_image *img = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_create(w, h, channels, &img), TM_OK);
    int nc = channels == 2 || channels == 4 ? channels - 1 : channels;
    for (int c = 0; c < channels; c++)
        for (size_t i = 0; i < (size_t)w * h; i++) img->plane[c][i] = c < nc ? v : 200.0f;
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
};
#define N_EXAMPLES (sizeof examples / sizeof examples[0])

static void test_usage_lists_every_attack(void)
{
    int seen[N_EXAMPLES] = {0};
    size_t i;
    for (i = 0; tm_attack_usage(i); i++) {
        const char *u = tm_attack_usage(i);
        size_t n = strcspn(u, ": ");
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
    tm_image *rgba = flat(16, 16, 4, 100), *out = tm_test_attack("brightness:50,contrast:2", rgba);
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
    tm_image *in = flat(64, 64, 2, 128);
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
    tm_image *c = flat(20, 20, 3, 77), *cb = tm_test_attack("blur:sigma=3", c);
    CU_ASSERT(tm_test_maxdiff(c, cb) < 1e-3);
    tm_image_free(cb);
    tm_image_free(c);
}

static void test_noise(void)
{
    tm_image *in = flat(W, H, 3, 128);
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
    tm_image *w = flat(32, 32, 1, 255), *wn = tm_test_attack("noise:sigma=20", w);
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
    if (getenv("TM_TEST_VERBOSE"))
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
    {"chains apply in order", test_chains},
    {"bad specs", test_bad_specs},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tm_test_main("attack", tests);
}
