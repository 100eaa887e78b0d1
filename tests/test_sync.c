/* test_sync.c -- the geometric attacks and blind geometric synchronisation.
 *
 * The attacks are checked by their mathematical properties: flips and
 * quarter turns are exact permutations (flip twice and turn four times are
 * the identity, turn:90 is a transpose then a top-bottom flip), rotate:0 is
 * the identity, a downscale followed by the inverse upscale of a smooth image
 * comes back close, and every bad argument is refused. The synchronisation is
 * checked end to end: a corpus photo is marked, scaled and rotated (and
 * JPEG-compressed), the estimate must contain the true (scale, rotation) and
 * resampling with it must bring the key's pilot back well above what the
 * unsynchronised detector sees; unmarked photos must score low. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheme.h"
#include "sync.h"

/* ---- helpers ---------------------------------------------------------------- */


/* A smooth RGBA image (band-limited content, alpha a ramp), unrounded. */
static tm_image *smooth(int w, int h)
{
    tm_image *img = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_create(w, h, 4, &img), TM_OK);
    for (int c = 0; c < 4; c++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double v = c == 3 ? 255.0 * x / (w - 1)
                                  : 128 + 60 * sin(0.09 * x + c) * cos(0.07 * y - c) + 20 * sin(0.05 * (x + y));
                img->plane[c][(size_t)y * w + x] = (float)v;
            }
    return img;
}

/* Exact equality of shape and every sample of every plane. */
static int same(const tm_image *a, const tm_image *b)
{
    return tm_test_maxdiff(a, b) == 0.0;
}

/* PSNR of the centred (w - 2m) x (h - 2m) part of a and b (equal shapes). */
static double centre_psnr(const tm_image *a, const tm_image *b, int m)
{
    double se = 0;
    size_t n = 0;
    for (int c = 0; c < 3; c++)
        for (int y = m; y < a->height - m; y++)
            for (int x = m; x < a->width - m; x++) {
                double d = a->plane[c][(size_t)y * a->width + x] - b->plane[c][(size_t)y * b->width + x];
                se += d * d;
                n++;
            }
    return se > 0 ? 10 * log10(255.0 * 255.0 * n / se) : 999;
}

/* ---- attacks ------------------------------------------------------------------ */

static void test_scale_shapes_and_roundtrip(void)
{
    tm_image *in = smooth(160, 120), *copy = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_clone(in, &copy), TM_OK);
    static const char *filters[] = {"", ":filter=lanczos", ":filter=bicubic", ":filter=bilinear", ":filter=box"};
    for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++) {
        char spec[64];
        snprintf(spec, sizeof spec, "scale:0.5%s,scale:2%s", filters[i], filters[i]);
        tm_image *out = tm_test_attack(spec, in);
        CU_ASSERT_EQUAL(out->width, 160);
        CU_ASSERT_EQUAL(out->height, 120);
        CU_ASSERT_EQUAL(out->channels, 4);
        double p = centre_psnr(in, out, 4);
        if (p <= 30) fprintf(stderr, "%s: centre PSNR %.1f dB\n", spec, p);
        CU_ASSERT(p > 30);
        tm_image_free(out);
    }
    CU_ASSERT(same(in, copy)); /* the input is borrowed */
    /* round(w F) x round(h F), and one pixel at least. */
    tm_image *out = tm_test_attack("scale:0.3", in);
    CU_ASSERT_EQUAL(out->width, 48);
    CU_ASSERT_EQUAL(out->height, 36);
    tm_image_free(out);
    out = tm_test_attack("scale:1.37", in);
    CU_ASSERT_EQUAL(out->width, 219);
    CU_ASSERT_EQUAL(out->height, 164);
    tm_image_free(out);
    out = tm_test_attack("scale:0.05", in);
    CU_ASSERT_EQUAL(out->width, 8);
    CU_ASSERT_EQUAL(out->height, 6);
    tm_image_free(out);
    /* Antialiasing: a pixel-level checkerboard shrunk by 4 becomes flat grey
     * (without a widened kernel it would alias into large swings). */
    tm_image *cb = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_create(64, 64, 1, &cb), TM_OK);
    for (int y = 0; y < 64; y++)
        for (int x = 0; x < 64; x++) cb->plane[0][y * 64 + x] = (x + y) % 2 ? 255.0f : 0.0f;
    out = tm_test_attack("scale:0.25", cb);
    for (int y = 2; y < 14; y++)
        for (int x = 2; x < 14; x++) CU_ASSERT(fabs(out->plane[0][y * 16 + x] - 127.5) < 8);
    tm_image_free(out);
    tm_image_free(cb);
    tm_image_free(copy);
    tm_image_free(in);
}

static void test_aspect(void)
{
    tm_image *in = smooth(160, 120);
    tm_image *out = tm_test_attack("aspect:1.5", in);
    CU_ASSERT_EQUAL(out->width, 240);
    CU_ASSERT_EQUAL(out->height, 120);
    tm_image *back = tm_test_attack("aspect:1.5,aspect:0.6666666667", in);
    CU_ASSERT_EQUAL_FATAL(back->width, 160);
    CU_ASSERT(centre_psnr(in, back, 4) > 35);
    /* aspect:1 is the identity: the kernel is 1 at 0 and 0 at the other integers. */
    tm_image *one = tm_test_attack("aspect:1", in);
    CU_ASSERT(tm_test_maxdiff(one, in) < 1e-3);
    tm_image_free(one);
    tm_image_free(back);
    tm_image_free(out);
    tm_image_free(in);
}

static void test_flip_turn_permutations(void)
{
    tm_image *in = tm_test_synthetic(37, 23, 4, 3, 0); /* odd sizes, RGBA */
    CU_ASSERT_PTR_NOT_NULL_FATAL(in);
    tm_image *a = tm_test_attack("flip:h,flip:h", in), *b = tm_test_attack("flip:v,flip:v", in);
    CU_ASSERT(same(a, in));
    CU_ASSERT(same(b, in));
    tm_image_free(a);
    tm_image_free(b);
    a = tm_test_attack("flip:h", in);
    CU_ASSERT(!same(a, in));
    for (int c = 0; c < 4; c++) /* alpha too */
        CU_ASSERT_EQUAL(a->plane[c][5 * 37 + 0], in->plane[c][5 * 37 + 36]);
    tm_image_free(a);
    a = tm_test_attack("flip:v", in);
    CU_ASSERT_EQUAL(a->plane[3][0], in->plane[3][22 * 37]);
    tm_image_free(a);

    a = tm_test_attack("turn:90,turn:90,turn:90,turn:90", in);
    CU_ASSERT(same(a, in));
    tm_image_free(a);
    a = tm_test_attack("turn:90", in);
    CU_ASSERT_EQUAL(a->width, 23);
    CU_ASSERT_EQUAL(a->height, 37);
    /* turn:90 (counterclockwise) = transpose, then top-bottom flip. */
    int ok = 1;
    for (int c = 0; c < 4; c++)
        for (int y = 0; y < 37; y++)
            for (int x = 0; x < 23; x++) {
                float t = in->plane[c][(size_t)x * 37 + (36 - y)]; /* transpose(in)[36 - y][x] */
                ok &= a->plane[c][(size_t)y * 23 + x] == t;
            }
    CU_ASSERT(ok);
    tm_image *b2 = tm_test_attack("turn:270", in), *c3 = tm_test_attack("turn:90,turn:90,turn:90", in);
    CU_ASSERT(same(b2, c3));
    tm_image_free(b2);
    tm_image_free(c3);
    b2 = tm_test_attack("turn:180", in);
    c3 = tm_test_attack("flip:h,flip:v", in);
    CU_ASSERT(same(b2, c3));
    tm_image_free(b2);
    tm_image_free(c3);
    /* rotate:90 agrees with the exact quarter turn (same direction). */
    b2 = tm_test_attack("rotate:90", in);
    CU_ASSERT_EQUAL_FATAL(b2->width, 23);
    CU_ASSERT_EQUAL_FATAL(b2->height, 37);
    CU_ASSERT(tm_test_maxdiff(a, b2) < 1e-3);
    tm_image_free(b2);
    tm_image_free(a);
    tm_image_free(in);
}

static void test_rotate(void)
{
    tm_image *in = smooth(96, 64), *copy = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_clone(in, &copy), TM_OK);
    tm_image *a = tm_test_attack("rotate:0", in), *b = tm_test_attack("rotate:0:crop=0:interp=bilinear", in);
    CU_ASSERT(same(a, in));
    CU_ASSERT(same(b, in));
    tm_image_free(a);
    tm_image_free(b);

    /* crop=0 keeps the size; there and back again is close in the centre. */
    a = tm_test_attack("rotate:5:crop=0,rotate:-5:crop=0", in);
    CU_ASSERT_EQUAL(a->width, 96);
    CU_ASSERT_EQUAL(a->height, 64);
    double p = centre_psnr(in, a, 12);
    if (p <= 35) fprintf(stderr, "rotate 5 and back: centre PSNR %.1f\n", p);
    CU_ASSERT(p > 35);
    tm_image_free(a);

    /* Corners: mid-grey and transparent with crop=0; none left with crop=1. */
    a = tm_test_attack("rotate:30:crop=0", in);
    CU_ASSERT_EQUAL(a->plane[0][0], 128.0f);
    CU_ASSERT_EQUAL(a->plane[3][0], 0.0f);
    CU_ASSERT(a->plane[3][32 * 96 + 48] > 100); /* the centre keeps its alpha */
    tm_image_free(a);
    /* Largest upright rectangle in a 96x64 turned 30 degrees: 64 x 36.95. */
    a = tm_test_attack("rotate:30", in);
    CU_ASSERT_EQUAL(a->width, 64);
    CU_ASSERT_EQUAL(a->height, 36);
    tm_image_free(a);
    a = tm_test_attack("rotate:-30", in);
    CU_ASSERT_EQUAL(a->width, 64);
    CU_ASSERT_EQUAL(a->height, 36);
    tm_image_free(a);
    /* Direction: counterclockwise, so a bright spot right of the centre moves up. */
    tm_image *spot = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_create(65, 65, 1, &spot), TM_OK);
    for (int y = 28; y <= 36; y++)
        for (int x = 50; x <= 58; x++) spot->plane[0][y * 65 + x] = 255;
    a = tm_test_attack("rotate:90:crop=0", spot);
    CU_ASSERT(a->plane[0][(65 - 1 - 54) * 65 + 32] > 250);
    CU_ASSERT(a->plane[0][32 * 65 + 54] < 5);
    tm_image_free(a);
    tm_image_free(spot);
    CU_ASSERT(same(in, copy));
    tm_image_free(copy);
    tm_image_free(in);
}

static void test_bad_geometry_specs(void)
{
    tm_image *in = smooth(32, 24);
    static const char *bad[] = {
        "scale",        "scale:0",           "scale:9",           "scale:0.04",          "scale:abc",
        "scale:0.5:filter=nearest", "scale:0.5:filter=", "scale:0.5:q=3", "scale:0.5:lanczos:1",
        "aspect",       "aspect:3",          "aspect:0.4",        "rotate",              "rotate:400",
        "rotate:5:crop=2", "rotate:5:crop=0.5", "rotate:5:interp=lanczos", "rotate:x", "flip",
        "flip:x",       "flip:hv",           "flip:h:v",          "turn",                "turn:45",
        "turn:90.5",    "turn:360",          "turn:-90",          "turn:0",              "scale:0.01",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tm_image *out = (tm_image *)1;
        char err[256] = "";
        tm_status st = tm_attack_apply(bad[i], in, &out, err, sizeof err);
        if (st != TM_ERR_ARG) fprintf(stderr, "'%s' was accepted\n", bad[i]);
        CU_ASSERT_EQUAL(st, TM_ERR_ARG);
        CU_ASSERT_PTR_NULL(out);
        CU_ASSERT(strlen(err) > 0);
    }
    tm_image_free(in);
}

/* ---- synchronisation ---------------------------------------------------------- */

static tm_key *test_key(void)
{
    uint8_t kb[TM_KEY_BYTES];
    for (int i = 0; i < TM_KEY_BYTES; i++) kb[i] = (uint8_t)(i * 7 + 1);
    tm_key *key = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_key_from_bytes(kb, &key), TM_OK);
    return key;
}

/* Loads a corpus photo, optionally cut to a window first (NULL: whole). */
static tm_image *photo(const char *name, const char *window)
{
    tm_image *img = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_load(tm_test_corpus(name), NULL, &img, NULL), TM_OK);
    if (window) {
        tm_image *c = tm_test_attack(window, img);
        tm_image_free(img);
        img = c;
    }
    return img;
}

static tm_image *mark(const tm_key *key, const tm_image *orig)
{
    tm_embedder *e = NULL;
    tm_image *m = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_embedder_create(key, orig, NULL, &e), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_embedder_mark(e, "alice", &m), TM_OK);
    tm_embedder_free(e);
    return m;
}

#define MAX_CANDS 8

static int estimate(const tm_image *img, tm_geom *c)
{
    float *y = malloc(sizeof(float) * (size_t)img->width * img->height);
    CU_ASSERT_PTR_NOT_NULL_FATAL(y);
    tm_luma(img, y);
    int n = 0;
    CU_ASSERT_EQUAL(tm_sync_estimate(y, img->width, img->height, c, MAX_CANDS, &n), TM_OK);
    free(y);
    CU_ASSERT(n >= 1 && n <= MAX_CANDS);
    int ident = 0;
    for (int i = 0; i < n; i++) {
        ident |= c[i].scale == 1 && c[i].rotation_deg == 0 && c[i].log_aspect == 0;
        CU_ASSERT(c[i].rotation_deg > -45 && c[i].rotation_deg <= 45);
        CU_ASSERT(i == 0 || c[i].score <= c[i - 1].score || (c[i].scale == 1 && c[i].rotation_deg == 0));
    }
    CU_ASSERT(ident);
    return n;
}

static double pilot_z(const tm_key *key, const tm_image *img)
{
    tm_detection d;
    CU_ASSERT_EQUAL_FATAL(tm_detect_run(key, img, &d), TM_OK);
    return d.pilot_z;
}

/* Marks the photo, attacks it, and requires the true geometry among the
 * candidates (0.2% in scale and aspect, 0.1 degree) and a readable pilot
 * after resampling with it. */
static void check_sync_aspect(const tm_key *key, const tm_image *marked, const char *spec, double s, double th,
                              double aspect)
{
    tm_image *a = tm_test_attack(spec, marked);
    tm_geom c[MAX_CANDS];
    int n = estimate(a, c), hit = -1;
    for (int i = 0; i < n && hit < 0; i++)
        if (fabs(c[i].scale / s - 1) < 0.002 && fabs(c[i].rotation_deg - th) < 0.1 &&
            fabs(c[i].log_aspect - log(aspect)) < 0.002)
            hit = i;
    double z0 = pilot_z(key, a), z = 0;
    if (hit >= 0) {
        tm_image *r = NULL;
        float *y = malloc(sizeof(float) * (size_t)a->width * a->height);
        CU_ASSERT_PTR_NOT_NULL_FATAL(y);
        tm_luma(a, y);
        CU_ASSERT_EQUAL_FATAL(tm_sync_warp(y, a->width, a->height, &c[hit], 4096, &r), TM_OK);
        z = pilot_z(key, r);
        tm_image_free(r);
        free(y);
    }
    const tm_geom *e = &c[hit >= 0 ? hit : 0];
    fprintf(stderr, "\n  %-34s true (%.3f, %+.1f, %.3f) est #%d (%.5f, %+.4f, %.4f) score %.1f, pilot z %.1f (no sync %.1f)",
            spec, s, th, aspect, hit, e->scale, e->rotation_deg, exp(e->log_aspect), e->score, z, z0);
    CU_ASSERT(hit >= 0);
    CU_ASSERT(z > 6.5); /* the unsynced z0 is a null maximum, about 4.5 */
    CU_ASSERT(z > z0 + 2);
    tm_image_free(a);
}

static void check_sync(const tm_key *key, const tm_image *marked, const char *spec, double s, double th)
{
    check_sync_aspect(key, marked, spec, s, th, 1.0);
}

static void test_sync_small_photo(void)
{
    tm_key *key = test_key();
    tm_image *orig = photo("skimage_astronaut.png", NULL), *m = mark(key, orig);
    check_sync(key, m, "scale:0.75", 0.75, 0);
    check_sync(key, m, "rotate:-5", 1, -5);
    check_sync(key, m, "rotate:3,jpeg:q=75", 1, 3);
    check_sync(key, m, "scale:0.75,rotate:-5,jpeg:q=75", 0.75, -5);
    tm_image_free(m);
    tm_image_free(orig);
    tm_key_free(key);
}

static void test_sync_photo(void)
{
    tm_key *key = test_key();
    tm_image *orig = photo("mate_Dune.jpg", "crop:1024x768+328+141"), *m = mark(key, orig);
    check_sync(key, m, "scale:0.5", 0.5, 0);
    check_sync(key, m, "scale:1.5", 1.5, 0);
    check_sync(key, m, "scale:0.5,rotate:3,jpeg:q=75", 0.5, 3);
    check_sync(key, m, "scale:2,rotate:-5,jpeg:q=75", 2, -5);
    check_sync(key, m, "scale:1.5,rotate:3,jpeg:q=75", 1.5, 3);
    /* Non-uniform resizes: aspect:F widens by F, so the mean scale is sqrt(F). */
    check_sync_aspect(key, m, "aspect:1.03", sqrt(1.03), 0, 1.03);
    check_sync_aspect(key, m, "aspect:0.9,jpeg:q=75", sqrt(0.9), 0, 0.9);
    check_sync_aspect(key, m, "scale:0.7,aspect:1.08", 0.7 * sqrt(1.08), 0, 1.08);
    check_sync_aspect(key, m, "rotate:2,aspect:0.95", sqrt(0.95), 2, 0.95);
    tm_image_free(m);
    tm_image_free(orig);
    tm_key_free(key);
}

/* A flat sunset sky enlarged 2.5x: the lattice sits at low frequencies
 * where the sky's gradient is strong and every line is sharp. The coarse
 * search, on an average over 5x5 bins, lost it from 2.4x on. */
static void test_sync_enlarged_sky(void)
{
    tm_key *key = test_key();
    tm_image *orig = photo("plasma_EveningGlow.jpg", "crop:1024x768+768+416"), *m = mark(key, orig);
    check_sync(key, m, "scale:2.5", 2.5, 0);
    check_sync(key, m, "scale:2.4,jpeg:q=75", 2.4, 0);
    tm_image_free(m);
    tm_image_free(orig);
    tm_key_free(key);
}

/* Flips and quarter turns leave the lattice's (scale, rotation mod 90) alone. */
static void test_sync_flip_turn_invariant(void)
{
    tm_key *key = test_key();
    tm_image *orig = photo("skimage_astronaut.png", NULL), *m = mark(key, orig);
    static const char *specs[] = {"flip:h,rotate:3", "turn:90,rotate:3", "turn:270,flip:v,rotate:3"};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        tm_image *a = tm_test_attack(specs[i], m);
        tm_geom c[MAX_CANDS];
        int n = estimate(a, c);
        CU_ASSERT(n >= 1);
        CU_ASSERT(fabs(c[0].scale - 1) < 0.002 && fabs(c[0].rotation_deg - 3) < 0.1);
        tm_image_free(a);
    }
    tm_image_free(m);
    tm_image_free(orig);
    tm_key_free(key);
}

/* Unmarked photos: every candidate's lattice score stays low, while the same
 * photos marked score far higher at the true geometry. Measured (top score,
 * unmarked / marked): astronaut 4-5 / 27, Dune window about 4 / 100+. */
#define NULL_SCORE_MAX 8.0

static void test_sync_unmarked_low(void)
{
    tm_key *key = test_key();
    static const char *names[] = {"skimage_astronaut.png", "mate_Dune.jpg", "skimage_coffee.png"};
    static const char *specs[] = {"png", "scale:0.75,rotate:3,jpeg:q=75"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        tm_image *orig = photo(names[i], i == 1 ? "crop:1024x768+328+141" : NULL);
        for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
            tm_image *a = tm_test_attack(specs[k], orig);
            tm_geom c[MAX_CANDS];
            int n = estimate(a, c);
            double top = -INFINITY;
            for (int j = 0; j < n; j++) top = fmax(top, c[j].score);
            fprintf(stderr, "\n  unmarked %s %s: top score %.1f", names[i], specs[k], top);
            CU_ASSERT(top < NULL_SCORE_MAX);
            tm_image_free(a);
        }
        tm_image *m = mark(key, orig);
        tm_geom c[MAX_CANDS];
        estimate(m, c);
        fprintf(stderr, "\n  marked %s: top (%.4f, %.3f) score %.1f", names[i], c[0].scale, c[0].rotation_deg, c[0].score);
        CU_ASSERT(c[0].score > 2 * NULL_SCORE_MAX);
        tm_image_free(m);
        tm_image_free(orig);
    }
    tm_key_free(key);
}

/* Warps the luminance plane of img under g (test helper). */
static tm_image *warp(const tm_image *img, const tm_geom *g, int side)
{
    float *y = malloc(sizeof(float) * (size_t)img->width * img->height);
    tm_image *out = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(y);
    tm_luma(img, y);
    CU_ASSERT_EQUAL(tm_sync_warp(y, img->width, img->height, g, side, &out), TM_OK);
    free(y);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    return out;
}

/* RMS difference of the luminance of a and b over their centred common
 * w x h region (b may be larger; it is centred on a). */
static double centre_rms(const tm_image *a, const tm_image *b, int w, int h)
{
    float *ya = malloc(sizeof(float) * (size_t)a->width * a->height);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ya);
    tm_luma(a, ya);
    int ax = (a->width - w) / 2, ay = (a->height - h) / 2, bx = (b->width - w) / 2, by = (b->height - h) / 2;
    double se = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double d = ya[(size_t)(y + ay) * a->width + x + ax] - b->plane[0][(size_t)(y + by) * b->width + x + bx];
            se += d * d;
        }
    free(ya);
    return sqrt(se / ((double)w * h));
}

static void test_sync_warp_geometry(void)
{
    tm_image *in = smooth(160, 120);
    tm_geom id = {.scale = 1};
    tm_image *out = warp(in, &id, 4096);
    CU_ASSERT_EQUAL(out->width, 160);
    CU_ASSERT_EQUAL(out->height, 120);
    CU_ASSERT_EQUAL(out->channels, 1);
    CU_ASSERT(centre_rms(in, out, 150, 110) < 1e-3);
    tm_image_free(out);
    /* The inverse of scale:0.5 brings the picture back. */
    tm_image *small = tm_test_attack("scale:0.5", in);
    tm_geom half = {.scale = 0.5};
    out = warp(small, &half, 4096);
    CU_ASSERT_EQUAL(out->width, 160);
    CU_ASSERT_EQUAL(out->height, 120);
    CU_ASSERT(centre_rms(in, out, 140, 100) < 4);
    tm_image_free(out);
    tm_image_free(small);
    /* Undoing scale:2.5 (box pre-shrink, then 1.25x). */
    tm_image *big = tm_test_attack("scale:2.5", in);
    tm_geom large = {.scale = 2.5};
    out = warp(big, &large, 4096);
    CU_ASSERT(abs(out->width - 160) <= 1 && abs(out->height - 120) <= 1);
    CU_ASSERT(centre_rms(in, out, 140, 100) < 4);
    tm_image_free(out);
    tm_image_free(big);
    /* Undoing an enlargement that was turned too: block means made at once,
     * then the general bicubic map. */
    tm_image *bigrot = tm_test_attack("scale:2.5,rotate:10:crop=0", in);
    tm_geom large_rot = {.scale = 2.5, .rotation_deg = 10};
    out = warp(bigrot, &large_rot, 4096);
    CU_ASSERT(centre_rms(in, out, 60, 40) < 4);
    tm_image_free(out);
    tm_image_free(bigrot);
    /* Undoing rotate:10 (crop=0): the canvas holds all of it, the centre matches. */
    tm_image *rot = tm_test_attack("rotate:10:crop=0", in);
    tm_geom g = {.scale = 1, .rotation_deg = 10};
    out = warp(rot, &g, 4096);
    double c = cos(10 * M_PI / 180), s = sin(10 * M_PI / 180);
    CU_ASSERT_EQUAL(out->width, (int)ceil(160 * c + 120 * s));
    CU_ASSERT_EQUAL(out->height, (int)ceil(160 * s + 120 * c));
    CU_ASSERT(centre_rms(in, out, 60, 40) < 3);
    tm_image_free(out);
    /* The side cap keeps the centre. */
    out = warp(rot, &g, 64);
    CU_ASSERT_EQUAL(out->width, 64);
    CU_ASSERT_EQUAL(out->height, 64);
    CU_ASSERT(centre_rms(in, out, 40, 40) < 3);
    tm_image_free(out);
    tm_image_free(rot);

    /* Bad arguments. */
    float y[16 * 16] = {0};
    tm_geom bad[] = {{0, 0, 0, 0}, {NAN, 0, 0, 0}, {1, NAN, 0, 0}, {1, 1000, 0, 0}, {-1, 0, 0, 0}, {100, 0, 0, 0}, {1, 0, 0, NAN}, {1, 0, 0, 2}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        out = (tm_image *)1;
        CU_ASSERT_EQUAL(tm_sync_warp(y, 16, 16, &bad[i], 64, &out), TM_ERR_ARG);
        CU_ASSERT_PTR_NULL(out);
    }
    CU_ASSERT_EQUAL(tm_sync_warp(NULL, 16, 16, &id, 64, &out), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_sync_warp(y, 16, 16, NULL, 64, &out), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_sync_warp(y, 16, 16, &id, 64, NULL), TM_ERR_ARG);
    tm_geom tiny = {.scale = 8};
    CU_ASSERT_EQUAL(tm_sync_warp(y, 16, 16, &tiny, 64, &out), TM_ERR_DIMENSIONS);
    tm_image_free(in);
}

/* The estimate stage by stage: similarities first, then stretches, each
 * stage's list holding every earlier stage's candidates, and the last one
 * the same as tm_sync_estimate's. */
static void test_sync_stages(void)
{
    tm_key *key = test_key();
    tm_image *orig = photo("skimage_astronaut.png", NULL), *m = mark(key, orig);
    static const char *specs[] = {"scale:0.75", "aspect:0.9"};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        tm_image *a = tm_test_attack(specs[i], m);
        float *y = malloc(sizeof(float) * (size_t)a->width * a->height);
        CU_ASSERT_PTR_NOT_NULL_FATAL(y);
        tm_luma(a, y);
        tm_sync *s = NULL;
        tm_geom c[MAX_CANDS], all[MAX_CANDS];
        int n = 0, more = -1, stages = 0, n_all = 0;
        CU_ASSERT_EQUAL_FATAL(tm_sync_begin(y, a->width, a->height, &s), TM_OK);
        while (more) {
            int before = more;
            CU_ASSERT_EQUAL_FATAL(tm_sync_next(s, c, MAX_CANDS, &n, &more), TM_OK);
            CU_ASSERT(before < 0 || more == before - 1);
            stages++;
            if (stages == 1 && i == 0) /* a plain scaling: the first stage finds it */
                CU_ASSERT(fabs(c[0].scale / 0.75 - 1) < 0.002 && c[0].log_aspect == 0);
        }
        CU_ASSERT_EQUAL(stages, 2); /* 384 or 461 pixels: the full-resolution pass only */
        if (i == 1) /* the stretch, found by the second stage */
            CU_ASSERT(fabs(c[0].log_aspect - log(0.9)) < 0.002);
        tm_sync_end(s);
        CU_ASSERT_EQUAL(tm_sync_estimate(y, a->width, a->height, all, MAX_CANDS, &n_all), TM_OK);
        CU_ASSERT_EQUAL(n_all, n);
        for (int k = 0; k < n && k < n_all; k++)
            CU_ASSERT(all[k].scale == c[k].scale && all[k].rotation_deg == c[k].rotation_deg &&
                      all[k].log_aspect == c[k].log_aspect);
        free(y);
        tm_image_free(a);
    }
    /* No stage for a suspect smaller than a tile: the identity at once. */
    float tiny[64 * 64] = {0};
    tm_sync *s = NULL;
    tm_geom c[2];
    int n = 0, more = -1;
    CU_ASSERT_EQUAL_FATAL(tm_sync_begin(tiny, 64, 64, &s), TM_OK);
    CU_ASSERT_EQUAL(tm_sync_next(s, c, 2, &n, &more), TM_OK);
    CU_ASSERT(n == 1 && more == 0 && c[0].scale == 1);
    CU_ASSERT_EQUAL(tm_sync_next(NULL, c, 2, &n, &more), TM_ERR_ARG);
    tm_sync_end(s);
    tm_sync_end(NULL);
    CU_ASSERT_EQUAL(tm_sync_begin(NULL, 64, 64, &s), TM_ERR_ARG);
    tm_image_free(m);
    tm_image_free(orig);
    tm_key_free(key);
}

static void test_sync_estimate_edges(void)
{
    float y[64 * 64];
    for (int i = 0; i < 64 * 64; i++) y[i] = (float)((i * 37) % 251);
    tm_geom c[4];
    int n = -1;
    CU_ASSERT_EQUAL(tm_sync_estimate(NULL, 64, 64, c, 4, &n), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_sync_estimate(y, 64, 64, NULL, 4, &n), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_sync_estimate(y, 64, 64, c, 0, &n), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_sync_estimate(y, 64, 64, c, 4, NULL), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_sync_estimate(y, 0, 64, c, 4, &n), TM_ERR_ARG);
    /* Smaller than a tile: only the identity. */
    CU_ASSERT_EQUAL(tm_sync_estimate(y, 64, 64, c, 4, &n), TM_OK);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT(c[0].scale == 1 && c[0].rotation_deg == 0);
    /* max == 1 still gives the identity. */
    tm_key *key = test_key();
    tm_image *orig = photo("skimage_astronaut.png", NULL), *m = mark(key, orig);
    tm_image *a = tm_test_attack("scale:0.75", m);
    float *ya = malloc(sizeof(float) * (size_t)a->width * a->height);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ya);
    tm_luma(a, ya);
    CU_ASSERT_EQUAL(tm_sync_estimate(ya, a->width, a->height, c, 1, &n), TM_OK);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT(c[0].scale == 1 && c[0].rotation_deg == 0);
    CU_ASSERT_EQUAL(tm_sync_estimate(ya, a->width, a->height, c, 2, &n), TM_OK);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT(fabs(c[0].scale - 0.75) < 0.0015);
    CU_ASSERT(c[1].scale == 1 && c[1].rotation_deg == 0);
    free(ya);
    tm_image_free(a);
    tm_image_free(m);
    tm_image_free(orig);
    tm_key_free(key);
}

int main(void)
{
    CU_TestInfo tests[] = {
        {"scale: shapes, filters, 0.5 then 2 comes back", test_scale_shapes_and_roundtrip},
        {"aspect stretches the width only", test_aspect},
        {"flip and turn are exact permutations", test_flip_turn_permutations},
        {"rotate: identity, inverse, corners, crop size, direction", test_rotate},
        {"bad geometric specs are refused", test_bad_geometry_specs},
        {"sync recovers scale and rotation (512x512 photo)", test_sync_small_photo},
        {"sync recovers scale and rotation (1024x768 photo)", test_sync_photo},
        {"sync finds a flat sky enlarged 2.4-2.5x", test_sync_enlarged_sky},
        {"sync ignores flips and quarter turns", test_sync_flip_turn_invariant},
        {"sync: unmarked photos score low", test_sync_unmarked_low},
        {"sync warp: identity, inverse scale, canvas, cap, arguments", test_sync_warp_geometry},
        {"sync estimate: arguments, tiny images, identity slot", test_sync_estimate_edges},
        {"sync estimate stage by stage: similarities, then stretches", test_sync_stages},
        CU_TEST_INFO_NULL,
    };
    return tm_test_main("sync", tests);
}
