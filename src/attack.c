/* attack.c -- distortions a leaked copy may have gone through, for measuring
 * robustness: `tracemark attack SPEC IN OUT` and the robustness sweeps.
 *
 * A spec is a chain of steps separated by commas; a step is a name and
 * colon-separated arguments, positional or key=value:
 *   "jpeg:q=75"   "blur:sigma=1.0"   "crop:0.5"   "gamma:1.2,jpeg:q=50:ss=444"
 * Every step makes a new image; the input is never modified. Randomised
 * steps take a seed, so every measurement is reproducible. The geometric
 * steps (scale, aspect, rotate, flip, turn) move every plane, alpha included;
 * scale and aspect use one separable resampler whose kernel widens by 1/F
 * when shrinking, so a downscale is antialiased like a real one.
 * tm_attack_combine mixes several copies first (average, min, max, median,
 * interleave), as colluders holding more than one copy would. */
#include "config.h"

#include <ctype.h>
#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheme.h"

#define MAX_ARGS 4

typedef struct step_args {
    int n;
    char key[MAX_ARGS][16];   /* "" for a positional argument */
    char val[MAX_ARGS][32];
} step_args;

typedef struct attack_def {
    const char *name;
    const char *params;  /* parameter names in positional order, comma-separated */
    const char *usage;
    tm_status (*run)(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen);
} attack_def;

/* The value of argument key, or NULL when not given. */
static const char *arg(const step_args *a, const char *key)
{
    for (int i = 0; i < a->n; i++)
        if (!strcmp(a->key[i], key)) return a->val[i];
    return NULL;
}

/* Reads a number argument within [lo, hi] (a whole number when integer),
 * def when absent (NAN: required); -1 on error. */
static int num_arg(const step_args *a, const char *key, double lo, double hi, double def, int integer, double *out)
{
    const char *v = arg(a, key);
    if (!v) {
        if (isnan(def)) return -1;
        *out = def;
        return 0;
    }
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end || !(d >= lo && d <= hi) || (integer && d != floor(d))) return -1;
    *out = d;
    return 0;
}

static tm_status codec_roundtrip(const tm_image *in, const tm_save_options *so, tm_image **out)
{
    uint8_t *buf;
    size_t len;
    tm_status st = tm_image_encode(in, so, &buf, &len);
    if (st != TM_OK) return st;
    st = tm_image_decode(buf, len, NULL, out, NULL);
    free(buf);
    return st;
}

static tm_status a_jpeg(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double q;
    if (num_arg(a, "q", 1, 100, 75, 1, &q)) return tm_fail_arg(err, errlen, "jpeg: q wants a whole number 1..100");
    tm_save_options so;
    tm_save_options_init(&so);
    so.format = TM_FORMAT_JPEG;
    so.quality = (int)q;
    so.subsampling = TM_SS_420;
    const char *ss = arg(a, "ss");
    if (ss) {
        if (!strcmp(ss, "444")) so.subsampling = TM_SS_444;
        else if (!strcmp(ss, "422")) so.subsampling = TM_SS_422;
        else if (!strcmp(ss, "420")) so.subsampling = TM_SS_420;
        else return tm_fail_arg(err, errlen, "jpeg: ss wants 444, 422 or 420");
    }
    return codec_roundtrip(in, &so, out);
}

static tm_status a_webp(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double q;
    if (num_arg(a, "q", 1, 100, 75, 1, &q)) return tm_fail_arg(err, errlen, "webp: q wants a whole number 1..100");
    tm_save_options so;
    tm_save_options_init(&so);
    so.format = TM_FORMAT_WEBP;
    so.quality = (int)q;
    return codec_roundtrip(in, &so, out);
}

static tm_status a_png(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    (void)a;
    (void)err;
    (void)errlen;
    tm_save_options so;
    tm_save_options_init(&so);
    so.format = TM_FORMAT_PNG;
    return codec_roundtrip(in, &so, out);
}

/* Applies f(v, p) to every colour sample, clamped to 0..255. */
static tm_status pointwise(const tm_image *in, tm_image **out, double (*f)(double, double), double p)
{
    tm_status st = tm_image_clone(in, out);
    if (st != TM_OK) return st;
    int nc = tm_color_channels(in);
    size_t n = (size_t)in->width * in->height;
    for (int c = 0; c < nc; c++)
        for (size_t i = 0; i < n; i++) (*out)->plane[c][i] = (float)fmin(255, fmax(0, f((*out)->plane[c][i], p)));
    return TM_OK;
}

static double f_gamma(double v, double g)
{
    return 255.0 * pow(v / 255.0, 1.0 / g);
}
static double f_brightness(double v, double d)
{
    return v + d;
}
static double f_contrast(double v, double k)
{
    return 127.5 + (v - 127.5) * k;
}

static tm_status a_gamma(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double g;
    if (num_arg(a, "g", 0.1, 10, NAN, 0, &g)) return tm_fail_arg(err, errlen, "gamma: wants a value in 0.1..10, e.g. gamma:1.2");
    return pointwise(in, out, f_gamma, g);
}

static tm_status a_brightness(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double d;
    if (num_arg(a, "d", -255, 255, NAN, 0, &d)) return tm_fail_arg(err, errlen, "brightness: wants an offset in -255..255");
    return pointwise(in, out, f_brightness, d);
}

static tm_status a_contrast(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double k;
    if (num_arg(a, "k", 0, 10, NAN, 0, &k)) return tm_fail_arg(err, errlen, "contrast: wants a factor in 0..10");
    return pointwise(in, out, f_contrast, k);
}

static tm_status a_gray(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    (void)a;
    (void)err;
    (void)errlen;
    tm_image *g;
    tm_status st = tm_image_create(in->width, in->height, 1, &g);
    if (st != TM_OK) return st;
    tm_luma(in, g->plane[0]);
    *out = g;
    return TM_OK;
}

/* Separable Gaussian blur of every colour plane, kernel radius 3 sigma,
 * borders clamped; alpha is copied. */
static tm_status gauss_blur(const tm_image *in, double sigma, tm_image **out)
{
    int r = (int)ceil(3 * sigma);
    double *k = malloc(sizeof(double) * (2 * r + 1));
    int w = in->width, h = in->height;
    float *tmp = malloc(sizeof(float) * (size_t)w * h);
    tm_status st = TM_ERR_NOMEM;
    if (!k || !tmp) goto out;
    double s = 0;
    for (int i = -r; i <= r; i++) s += k[i + r] = exp(-(double)i * i / (2 * sigma * sigma));
    for (int i = 0; i <= 2 * r; i++) k[i] /= s;
    if ((st = tm_image_clone(in, out)) != TM_OK) goto out;
    int nc = tm_color_channels(in);
    for (int c = 0; c < nc; c++) {
        const float *src = in->plane[c];
        float *dst = (*out)->plane[c];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double acc = 0;
                for (int i = -r; i <= r; i++) {
                    int xx = x + i < 0 ? 0 : x + i >= w ? w - 1 : x + i;
                    acc += k[i + r] * src[(size_t)y * w + xx];
                }
                tmp[(size_t)y * w + x] = (float)acc;
            }
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double acc = 0;
                for (int i = -r; i <= r; i++) {
                    int yy = y + i < 0 ? 0 : y + i >= h ? h - 1 : y + i;
                    acc += k[i + r] * tmp[(size_t)yy * w + x];
                }
                dst[(size_t)y * w + x] = (float)acc;
            }
    }
out:
    free(k);
    free(tmp);
    return st;
}

static tm_status a_blur(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double sigma;
    if (num_arg(a, "sigma", 0.1, 20, 1.0, 0, &sigma)) return tm_fail_arg(err, errlen, "blur: sigma wants 0.1..20");
    return gauss_blur(in, sigma, out);
}

/* Unsharp mask: v + amount (v - blur(v)) on every colour plane, clamped to
 * 0..255; the high frequencies are amplified by 1 + amount. */
static tm_status a_sharpen(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double amount, sigma;
    if (num_arg(a, "amount", 0, 10, 1.0, 0, &amount)) return tm_fail_arg(err, errlen, "sharpen: amount wants 0..10");
    if (num_arg(a, "sigma", 0.1, 20, 1.0, 0, &sigma)) return tm_fail_arg(err, errlen, "sharpen: sigma wants 0.1..20");
    tm_status st = gauss_blur(in, sigma, out);
    if (st != TM_OK) return st;
    int nc = tm_color_channels(in);
    size_t n = (size_t)in->width * in->height;
    for (int c = 0; c < nc; c++) {
        const float *src = in->plane[c];
        float *dst = (*out)->plane[c];
        for (size_t i = 0; i < n; i++) dst[i] = (float)fmin(255, fmax(0, src[i] + amount * ((double)src[i] - dst[i])));
    }
    return TM_OK;
}

/* Additive white Gaussian noise, from GSL's MT19937 seeded by the spec. */
static tm_status a_noise(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double sigma, seed;
    if (num_arg(a, "sigma", 0, 100, 2.0, 0, &sigma)) return tm_fail_arg(err, errlen, "noise: sigma wants 0..100");
    if (num_arg(a, "seed", 0, 4294967295.0, 1, 1, &seed)) return tm_fail_arg(err, errlen, "noise: seed wants a whole number 0..4294967295");
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    if (!rng) return TM_ERR_NOMEM;
    gsl_rng_set(rng, (unsigned long)seed + 1); /* GSL maps seed 0 to its default */
    tm_status st = tm_image_clone(in, out);
    if (st == TM_OK) {
        int nc = tm_color_channels(in);
        size_t n = (size_t)in->width * in->height;
        for (int c = 0; c < nc; c++)
            for (size_t i = 0; i < n; i++) {
                double v = (*out)->plane[c][i] + gsl_ran_gaussian_ziggurat(rng, sigma);
                (*out)->plane[c][i] = (float)fmin(255, fmax(0, v));
            }
    }
    gsl_rng_free(rng);
    return st;
}

/* Parses "WxH+X+Y" with every number in 0..TM_MAX_SIDE; 0 on success. */
static int parse_window(const char *v, int *w, int *h, int *x, int *y)
{
    int *dst[4] = {w, h, x, y};
    const char seps[4] = {'x', '+', '+', 0};
    for (int k = 0; k < 4; k++) {
        char *end;
        if (*v < '0' || *v > '9') return -1;
        long n = strtol(v, &end, 10);
        if (n > TM_MAX_SIDE || *end != seps[k]) return -1;
        *dst[k] = (int)n;
        v = end + (k < 3);
    }
    return 0;
}

/* crop:F keeps the centred fraction F of each side; crop:WxH+X+Y a window. */
static tm_status a_crop(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    const char *v = arg(a, "f");
    if (!v) return tm_fail_arg(err, errlen, "crop: wants a fraction (crop:0.5) or a window (crop:640x480+10+20)");
    int w, h, x, y;
    if (strchr(v, 'x')) {
        if (parse_window(v, &w, &h, &x, &y)) return tm_fail_arg(err, errlen, "crop: bad window '%s', want WxH+X+Y", v);
        if (w < 1 || h < 1 || x + w > in->width || y + h > in->height)
            return tm_fail_arg(err, errlen, "crop: window %s is not inside the %dx%d image", v, in->width, in->height);
    } else {
        double f;
        if (num_arg(a, "f", 0.01, 1, NAN, 0, &f)) return tm_fail_arg(err, errlen, "crop: fraction wants 0.01..1");
        w = (int)lround(in->width * f);
        h = (int)lround(in->height * f);
        if (w < 1) w = 1;
        if (h < 1) h = 1;
        x = (in->width - w) / 2;
        y = (in->height - h) / 2;
    }
    tm_status st = tm_image_create(w, h, in->channels, out);
    if (st != TM_OK) return st;
    for (int c = 0; c < in->channels; c++)
        for (int r = 0; r < h; r++)
            memcpy((*out)->plane[c] + (size_t)r * w, in->plane[c] + (size_t)(y + r) * in->width + x, sizeof(float) * w);
    return tm_image_set_icc(*out, in->icc, in->icc_len);
}

/* ---- median, saturation, palette ------------------------------------------ */

static int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* min and max written as selects, which compile to single instructions
 * (fminf/fmaxf must honour NaN and are slower). */
static inline float minf(float a, float b)
{
    return b < a ? b : a;
}
static inline float maxf(float a, float b)
{
    return b > a ? b : a;
}

static float med3(float a, float b, float c)
{
    return maxf(minf(a, b), minf(maxf(a, b), c));
}

/* 3x3 median of one plane: each column triple is sorted once and shared by
 * the three windows that contain it; the median of the nine is then the
 * median of (largest low, median middle, smallest high) of three columns.
 * lo, mi, hi are scratch of w + 2 floats. */
static void median3x3(const float *src, float *dst, int w, int h, float *lo, float *mi, float *hi)
{
    for (int y = 0; y < h; y++) {
        const float *ra = src + (size_t)clampi(y - 1, 0, h - 1) * w, *rb = src + (size_t)y * w;
        const float *rc = src + (size_t)clampi(y + 1, 0, h - 1) * w;
        for (int x = -1; x <= w; x++) {
            int xx = clampi(x, 0, w - 1);
            float a = ra[xx], b = rb[xx], c = rc[xx];
            lo[x + 1] = minf(a, minf(b, c));
            mi[x + 1] = med3(a, b, c);
            hi[x + 1] = maxf(a, maxf(b, c));
        }
        float *drow = dst + (size_t)y * w;
        for (int x = 0; x < w; x++) {
            float l = maxf(lo[x], maxf(lo[x + 1], lo[x + 2]));
            float m = med3(mi[x], mi[x + 1], mi[x + 2]);
            float u = minf(hi[x], minf(hi[x + 1], hi[x + 2]));
            drow[x] = med3(l, m, u);
        }
    }
}

/* First index of sorted s[0..n) whose value is not below v (n when none);
 * branch-free, since the comparisons are unpredictable. */
static int lower_bound(const float *s, int n, float v)
{
    if (n <= 0) return 0;
    const float *base = s;
    while (n > 1) {
        int half = n / 2;
        base = base[half] < v ? base + half : base;
        n -= half;
    }
    return (int)(base - s) + (*base < v);
}

/* In the sorted window s[0..n), replaces one sample equal to old by v,
 * keeping it sorted: only the samples between the two move. */
static void window_replace(float *s, int n, float old, float v)
{
    if (v == old) return;
    int p = lower_bound(s, n, old);
    if (v > old) { /* s[p+1 .. q-1] move down one */
        int q = p + 1 + lower_bound(s + p + 1, n - p - 1, v);
        memmove(s + p, s + p + 1, sizeof(float) * (q - 1 - p));
        s[q - 1] = v;
    } else { /* s[q .. p-1] move up one */
        int q = lower_bound(s, p, v);
        memmove(s + q + 1, s + q, sizeof(float) * (p - q));
        s[q] = v;
    }
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Median of radius r >= 2 of one plane. Along each row a sorted copy of the
 * window is kept; a step right swaps each sample of the leaving column for
 * the one of the entering column in its row, by two binary searches and a
 * move of the samples between them: 2R+1 replacements per pixel instead of
 * a selection over (2R+1)^2 samples. (A merge pass per step measured no
 * faster.) cols maps x - r .. x + r (clamped) for x = -r .. w - 1 + r; rows
 * and win are scratch of 2r+1 pointers and (2r+1)^2 floats. */
static void median_sliding(const float *src, float *dst, int w, int h, int r, const int *cols, const float **rows, float *win)
{
    int side = 2 * r + 1, n = side * side;
    for (int y = 0; y < h; y++) {
        for (int j = 0; j < side; j++) rows[j] = src + (size_t)clampi(y + j - r, 0, h - 1) * w;
        int k = 0;
        for (int j = 0; j < side; j++)
            for (int i = 0; i < side; i++) win[k++] = rows[j][cols[i]];
        qsort(win, n, sizeof(float), cmp_float);
        float *drow = dst + (size_t)y * w;
        drow[0] = win[n / 2];
        for (int x = 1; x < w; x++) {
            int leave = cols[x - 1], enter = cols[x + 2 * r]; /* columns x-1-r and x+r */
            if (leave != enter)
                for (int j = 0; j < side; j++) window_replace(win, n, rows[j][leave], rows[j][enter]);
            drow[x] = win[n / 2];
        }
    }
}

/* median:R replaces each colour sample by the median of its (2R+1)^2
 * neighbourhood, borders clamped; alpha is copied. */
static tm_status a_median(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double rr;
    if (num_arg(a, "r", 1, 5, 1, 1, &rr)) return tm_fail_arg(err, errlen, "median: r wants a whole number 1..5");
    int r = (int)rr, w = in->width, h = in->height, side = 2 * r + 1;
    /* r = 1: three rows of w + 2 floats; r > 1: one window */
    float *scratch = malloc(sizeof(float) * (r == 1 ? 3 * ((size_t)w + 2) : (size_t)side * side));
    const float **rows = malloc(sizeof(*rows) * side);
    int *cols = malloc(sizeof(int) * ((size_t)w + 2 * r));
    tm_status st = TM_ERR_NOMEM;
    if (!scratch || !rows || !cols) goto out;
    if ((st = tm_image_clone(in, out)) != TM_OK) goto out;
    for (int x = -r; x < w + r; x++) cols[x + r] = clampi(x, 0, w - 1);
    int nc = tm_color_channels(in);
    for (int c = 0; c < nc; c++) {
        if (r == 1)
            median3x3(in->plane[c], (*out)->plane[c], w, h, scratch, scratch + w + 2, scratch + 2 * (w + 2));
        else
            median_sliding(in->plane[c], (*out)->plane[c], w, h, r, cols, rows, scratch);
    }
out:
    free(scratch);
    free(rows);
    free(cols);
    return st;
}

/* saturation:K moves each colour K times as far from its BT.601 luma as it
 * was (0 greys, 1 keeps, 2 doubles the chroma); grey images are copied. */
static tm_status a_saturation(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double k;
    if (num_arg(a, "k", 0, 4, NAN, 0, &k)) return tm_fail_arg(err, errlen, "saturation: wants a factor in 0..4, e.g. saturation:1.5");
    tm_status st = tm_image_clone(in, out);
    if (st != TM_OK || tm_color_channels(in) < 3) return st;
    size_t n = (size_t)in->width * in->height;
    for (size_t i = 0; i < n; i++) {
        double y = 0.299 * in->plane[0][i] + 0.587 * in->plane[1][i] + 0.114 * in->plane[2][i];
        for (int c = 0; c < 3; c++) (*out)->plane[c][i] = (float)fmin(255, fmax(0, y + k * (in->plane[c][i] - y)));
    }
    return TM_OK;
}

/* Palette reduction as a GIF encoder does it. The samples are rounded to 8
 * bits; an image with at most N colours keeps exactly those. Otherwise the
 * palette comes from Heckbert's median cut over a histogram of 6-bit (grey:
 * 8-bit) cells: the box to cut is the most populous one for the first N/2
 * cuts, then the one with the largest population times volume; it is cut
 * across its longest side at the median pixel, and each entry is the mean of
 * the pixels in its box. Every pixel then takes its nearest entry (lowest
 * index on ties), found among the candidates of its 8x8x8 cell: the entries
 * no farther from the cell than the cell's farthest point is from the entry
 * nearest to its far side. */

#define PAL_MAX 256

typedef struct palette {
    int nc;                 /* 1 (grey) or 3 */
    int n;
    int col[PAL_MAX][3];
    /* nearest-entry lookup: grey is a table; RGB a lazily filled candidate
     * list per cell (ncand -1: not yet computed) */
    uint8_t lut[256];
    int16_t *ncand;
    uint8_t *cand;          /* 32768 * n */
} palette;

typedef struct mc_box {
    int lo[3], hi[3];
    uint64_t count;
} mc_box;

typedef struct mc_hist {
    int nc, bits, side;     /* side = 1 << bits cells per axis */
    uint32_t *count;
    uint64_t *sum;          /* nc sums of 8-bit samples per cell */
} mc_hist;

static size_t mc_cell(const mc_hist *hs, const int *p)
{
    size_t i = 0;
    for (int c = 0; c < hs->nc; c++) i = i * hs->side + p[c];
    return i;
}

/* Loops p over every cell of box b (unused axes of a grey box are 0..0). */
#define MC_FOR_CELLS(b, p)                                   \
    for (p[0] = (b)->lo[0]; p[0] <= (b)->hi[0]; p[0]++)         \
        for (p[1] = (b)->lo[1]; p[1] <= (b)->hi[1]; p[1]++)     \
            for (p[2] = (b)->lo[2]; p[2] <= (b)->hi[2]; p[2]++)

/* Shrinks b to the cells that hold pixels and counts them. */
static void mc_shrink(const mc_hist *hs, mc_box *b)
{
    int p[3], lo[3] = {hs->side, hs->side, hs->side}, hi[3] = {-1, -1, -1};
    uint64_t n = 0;
    MC_FOR_CELLS(b, p)
    {
        uint32_t k = hs->count[mc_cell(hs, p)];
        if (!k) continue;
        n += k;
        for (int c = 0; c < hs->nc; c++) {
            if (p[c] < lo[c]) lo[c] = p[c];
            if (p[c] > hi[c]) hi[c] = p[c];
        }
    }
    for (int c = 0; c < hs->nc; c++) {
        b->lo[c] = lo[c];
        b->hi[c] = hi[c];
    }
    b->count = n;
}

/* Cuts box b across its longest side at the median pixel into b and *nb. */
static void mc_cut(const mc_hist *hs, mc_box *b, mc_box *nb)
{
    int ax = 0;
    for (int c = 1; c < hs->nc; c++)
        if (b->hi[c] - b->lo[c] > b->hi[ax] - b->lo[ax]) ax = c;
    uint64_t marg[256] = {0};
    int p[3];
    MC_FOR_CELLS(b, p) marg[p[ax]] += hs->count[mc_cell(hs, p)];
    uint64_t acc = 0;
    int s = b->lo[ax];
    for (; s < b->hi[ax] - 1; s++)
        if ((acc += marg[s]) * 2 >= b->count) break;
    *nb = *b;
    b->hi[ax] = s;
    nb->lo[ax] = s + 1;
    mc_shrink(hs, b);
    mc_shrink(hs, nb);
}

static tm_status palette_median_cut(const tm_image *in, int ncol, palette *pal)
{
    mc_hist hs = {.nc = pal->nc, .bits = pal->nc == 3 ? 6 : 8};
    hs.side = 1 << hs.bits;
    size_t ncell = (size_t)1 << (hs.bits * hs.nc);
    mc_box *box = malloc(sizeof(mc_box) * ncol);
    hs.count = calloc(ncell, sizeof(uint32_t));
    hs.sum = calloc(ncell * hs.nc, sizeof(uint64_t));
    tm_status st = TM_ERR_NOMEM;
    if (!box || !hs.count || !hs.sum) goto out;
    size_t n = (size_t)in->width * in->height;
    for (size_t i = 0; i < n; i++) {
        int p[3] = {0, 0, 0};
        for (int c = 0; c < hs.nc; c++) p[c] = tm_to_u8(in->plane[c][i]) >> (8 - hs.bits);
        size_t cell = mc_cell(&hs, p);
        hs.count[cell]++;
        for (int c = 0; c < hs.nc; c++) hs.sum[cell * hs.nc + c] += tm_to_u8(in->plane[c][i]);
    }
    for (int c = 0; c < 3; c++) {
        box[0].lo[c] = 0;
        box[0].hi[c] = c < hs.nc ? hs.side - 1 : 0;
    }
    mc_shrink(&hs, &box[0]);
    int nbox = 1;
    while (nbox < ncol) {
        int best = -1;
        double best_key = 0;
        for (int i = 0; i < nbox; i++) {
            double vol = 1;
            int cuttable = 0;
            for (int c = 0; c < hs.nc; c++) {
                vol *= box[i].hi[c] - box[i].lo[c] + 1;
                cuttable |= box[i].hi[c] > box[i].lo[c];
            }
            double key = (double)box[i].count * (nbox < ncol / 2 ? 1 : vol);
            if (cuttable && key > best_key) {
                best = i;
                best_key = key;
            }
        }
        if (best < 0) break; /* every box is a single cell */
        mc_cut(&hs, &box[best], &box[nbox]);
        nbox++;
    }
    pal->n = nbox;
    for (int i = 0; i < nbox; i++) {
        uint64_t s[3] = {0, 0, 0};
        int p[3];
        MC_FOR_CELLS(&box[i], p)
        for (int c = 0; c < hs.nc; c++) s[c] += hs.sum[mc_cell(&hs, p) * hs.nc + c];
        for (int c = 0; c < hs.nc; c++) pal->col[i][c] = (int)((s[c] + box[i].count / 2) / box[i].count);
    }
    st = TM_OK;
out:
    free(box);
    free(hs.count);
    free(hs.sum);
    return st;
}

/* When the image has at most ncol distinct 8-bit colours, makes them the
 * palette (ascending) and sets *found to 1; to 0 when there are more. */
static tm_status palette_exact(const tm_image *in, int ncol, palette *pal, int *found)
{
    size_t nbits = (size_t)1 << (8 * pal->nc), n = (size_t)in->width * in->height;
    uint64_t *seen = calloc(nbits / 64 + 1, sizeof(uint64_t));
    if (!seen) return TM_ERR_NOMEM;
    int distinct = 0;
    for (size_t i = 0; i < n && distinct <= ncol; i++) {
        uint32_t key = 0;
        for (int c = 0; c < pal->nc; c++) key = key << 8 | tm_to_u8(in->plane[c][i]);
        if (!(seen[key / 64] >> (key % 64) & 1)) {
            seen[key / 64] |= (uint64_t)1 << (key % 64);
            distinct++;
        }
    }
    *found = distinct <= ncol;
    if (*found) {
        pal->n = 0;
        for (size_t key = 0; key < nbits; key++) {
            if (!seen[key / 64]) { /* skip empty words */
                key += 63;
                continue;
            }
            if (seen[key / 64] >> (key % 64) & 1) {
                for (int c = 0; c < pal->nc; c++) pal->col[pal->n][c] = (int)(key >> (8 * (pal->nc - 1 - c)) & 255);
                pal->n++;
            }
        }
    }
    free(seen);
    return TM_OK;
}

static int dist2(const int *a, const int *b, int nc)
{
    int d = 0;
    for (int c = 0; c < nc; c++) d += (a[c] - b[c]) * (a[c] - b[c]);
    return d;
}

/* Index of the palette entry nearest to the 8-bit colour v. */
static int palette_nearest(palette *pal, const int *v)
{
    if (pal->nc == 1) return pal->lut[v[0]];
    int cell = (v[0] >> 3) << 10 | (v[1] >> 3) << 5 | v[2] >> 3;
    uint8_t *cand = pal->cand + (size_t)cell * pal->n;
    if (pal->ncand[cell] < 0) {
        int lo[3] = {v[0] & ~7, v[1] & ~7, v[2] & ~7}, mind[PAL_MAX], far = INT32_MAX;
        for (int i = 0; i < pal->n; i++) {
            int dn = 0, df = 0;
            for (int c = 0; c < 3; c++) {
                int p = pal->col[i][c], hi = lo[c] + 7;
                int near = p < lo[c] ? lo[c] - p : p > hi ? p - hi : 0;
                int fa = p - lo[c] > hi - p ? p - lo[c] : hi - p;
                dn += near * near;
                df += fa * fa;
            }
            mind[i] = dn;
            if (df < far) far = df;
        }
        int k = 0;
        for (int i = 0; i < pal->n; i++)
            if (mind[i] <= far) cand[k++] = (uint8_t)i;
        pal->ncand[cell] = (int16_t)k;
    }
    int best = cand[0], bd = dist2(v, pal->col[cand[0]], 3);
    for (int k = 1; k < pal->ncand[cell]; k++) {
        int d = dist2(v, pal->col[cand[k]], 3);
        if (d < bd) {
            bd = d;
            best = cand[k];
        }
    }
    return best;
}

static tm_status palette_index_init(palette *pal)
{
    if (pal->nc == 1) {
        for (int v = 0; v < 256; v++) {
            int best = 0;
            for (int i = 1; i < pal->n; i++)
                if (abs(pal->col[i][0] - v) < abs(pal->col[best][0] - v)) best = i;
            pal->lut[v] = (uint8_t)best;
        }
        return TM_OK;
    }
    pal->ncand = malloc(sizeof(int16_t) * 32768);
    pal->cand = malloc((size_t)32768 * pal->n);
    if (!pal->ncand || !pal->cand) return TM_ERR_NOMEM;
    for (int i = 0; i < 32768; i++) pal->ncand[i] = -1;
    return TM_OK;
}

/* quantize[:colors=N][:dither=0|1] maps the colour planes to a palette of at
 * most N colours; dither=1 diffuses each pixel's error to its unvisited
 * neighbours (Floyd-Steinberg, rows left to right). Alpha is copied. */
static tm_status a_quantize(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double ncol, dither;
    if (num_arg(a, "colors", 2, PAL_MAX, PAL_MAX, 1, &ncol)) return tm_fail_arg(err, errlen, "quantize: colors wants a whole number 2..256");
    if (num_arg(a, "dither", 0, 1, 0, 1, &dither)) return tm_fail_arg(err, errlen, "quantize: dither wants 0 or 1");
    int nc = tm_color_channels(in) >= 3 ? 3 : 1, w = in->width, h = in->height;
    palette *pal = calloc(1, sizeof *pal);
    float *ebuf = NULL;
    tm_status st = TM_ERR_NOMEM;
    *out = NULL;
    if (!pal) goto out;
    pal->nc = nc;
    int exact;
    if ((st = palette_exact(in, (int)ncol, pal, &exact)) != TM_OK) goto out;
    if (!exact && (st = palette_median_cut(in, (int)ncol, pal)) != TM_OK) goto out;
    if ((st = palette_index_init(pal)) != TM_OK) goto out;
    st = TM_ERR_NOMEM;
    if (dither != 0 && !(ebuf = calloc(2 * ((size_t)w + 2) * nc, sizeof(float)))) goto out;
    if ((st = tm_image_clone(in, out)) != TM_OK) goto out;
    float *cur = ebuf, *nxt = ebuf ? ebuf + ((size_t)w + 2) * nc : NULL; /* error rows, index (x + 1) * nc + c */
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            size_t i = (size_t)y * w + x;
            int v[3];
            float want[3];
            for (int c = 0; c < nc; c++) {
                want[c] = in->plane[c][i];
                if (cur) want[c] = fminf(255.0f, fmaxf(0.0f, want[c] + cur[(x + 1) * nc + c]));
                v[c] = tm_to_u8(want[c]);
            }
            const int *p = pal->col[palette_nearest(pal, v)];
            for (int c = 0; c < nc; c++) {
                (*out)->plane[c][i] = (float)p[c];
                if (!cur) continue;
                float e = want[c] - (float)p[c];
                cur[(x + 2) * nc + c] += e * (7.0f / 16);
                nxt[x * nc + c] += e * (3.0f / 16);
                nxt[(x + 1) * nc + c] += e * (5.0f / 16);
                nxt[(x + 2) * nc + c] += e * (1.0f / 16);
            }
        }
        if (cur) {
            float *t = cur;
            cur = nxt;
            nxt = t;
            memset(nxt, 0, sizeof(float) * ((size_t)w + 2) * nc);
        }
    }
    st = TM_OK;
out:
    if (st != TM_OK) {
        tm_image_free(*out);
        *out = NULL;
    }
    if (pal) {
        free(pal->ncand);
        free(pal->cand);
    }
    free(pal);
    free(ebuf);
    return st;
}

/* ---- geometry ------------------------------------------------------------ */

/* A new w x h image with in's channels and colour description. */
static tm_status new_like(const tm_image *in, int w, int h, tm_image **out)
{
    tm_status st = tm_image_create(w, h, in->channels, out);
    if (st != TM_OK) return st;
    (*out)->has_gamma = in->has_gamma;
    (*out)->gamma = in->gamma;
    (*out)->has_srgb = in->has_srgb;
    (*out)->srgb_intent = in->srgb_intent;
    (*out)->has_chrm = in->has_chrm;
    memcpy((*out)->chrm, in->chrm, sizeof in->chrm);
    if ((st = tm_image_set_icc(*out, in->icc, in->icc_len)) != TM_OK) {
        tm_image_free(*out);
        *out = NULL;
    }
    return st;
}

static double sinc(double x)
{
    return x == 0 ? 1.0 : sin(M_PI * x) / (M_PI * x);
}
static double k_box(double x)
{
    return x >= -0.5 && x < 0.5;
}
static double k_bilinear(double x)
{
    x = fabs(x);
    return x < 1 ? 1 - x : 0;
}
/* Keys' cubic convolution kernel with a = -0.5 (Catmull-Rom). */
static double k_bicubic(double x)
{
    x = fabs(x);
    if (x < 1) return (1.5 * x - 2.5) * x * x + 1;
    if (x < 2) return ((-0.5 * x + 2.5) * x - 4) * x + 2;
    return 0;
}
static double k_lanczos3(double x)
{
    return fabs(x) < 3 ? sinc(x) * sinc(x / 3) : 0;
}

typedef struct resample_filter {
    const char *name;
    double (*k)(double);
    double support;   /* kernel is zero beyond +-support (at scale 1) */
} resample_filter;

static const resample_filter filters[] = {
    {"lanczos", k_lanczos3, 3}, {"bicubic", k_bicubic, 2}, {"bilinear", k_bilinear, 1}, {"box", k_box, 0.5}};

/* Taps of a 1-D resampling from n_in to n_out samples with exact factor f
 * (the centres of both lines coincide): output i reads ntap inputs from
 * first[i] (clamped at the borders) with weights wt[i * ntap ..]. When
 * downscaling the kernel is widened by 1/f, so it also antialiases. */
typedef struct taps {
    int ntap;
    int *first;
    float *wt;
} taps;

static void taps_free(taps *t)
{
    free(t->first);
    free(t->wt);
}

static tm_status taps_make(int n_in, int n_out, double f, const resample_filter *flt, taps *t)
{
    double stretch = f < 1 ? 1 / f : 1;
    double support = flt->support * stretch;
    t->ntap = (int)ceil(2 * support) + 1;
    t->first = malloc(sizeof(int) * n_out);
    t->wt = malloc(sizeof(float) * n_out * t->ntap);
    if (!t->first || !t->wt) {
        taps_free(t);
        return TM_ERR_NOMEM;
    }
    for (int i = 0; i < n_out; i++) {
        double centre = (i + 0.5 - n_out / 2.0) / f + n_in / 2.0 - 0.5;
        int first = (int)floor(centre - support) + 1;
        if (flt->k == k_box) first = (int)ceil(centre - support - 1e-9); /* half-open box */
        double sum = 0;
        float *w = t->wt + (size_t)i * t->ntap;
        for (int k = 0; k < t->ntap; k++) sum += w[k] = (float)flt->k((first + k - centre) / stretch);
        if (sum == 0) { /* cannot happen for these kernels; nearest sample then */
            first = (int)lround(centre);
            memset(w, 0, sizeof(float) * t->ntap);
            w[0] = 1;
            sum = 1;
        }
        for (int k = 0; k < t->ntap; k++) w[k] = (float)(w[k] / sum);
        t->first[i] = first;
    }
    return TM_OK;
}

/* Separable resampling of every plane of in to ow x oh with exact factors fx,
 * fy (content centred), values clamped to 0..255. */
static tm_status resample(const tm_image *in, int ow, int oh, double fx, double fy, const resample_filter *flt,
                          tm_image **out)
{
    int w = in->width, h = in->height;
    taps tx = {0}, ty = {0};
    float *tmp = malloc(sizeof(float) * (size_t)ow * h);
    tm_status st = TM_ERR_NOMEM;
    *out = NULL;
    if (!tmp) goto out;
    if ((st = taps_make(w, ow, fx, flt, &tx)) != TM_OK) goto out;
    if ((st = taps_make(h, oh, fy, flt, &ty)) != TM_OK) goto out;
    if ((st = new_like(in, ow, oh, out)) != TM_OK) goto out;
    for (int c = 0; c < in->channels; c++) {
        const float *src = in->plane[c];
        for (int y = 0; y < h; y++) {
            const float *row = src + (size_t)y * w;
            for (int x = 0; x < ow; x++) {
                const float *wt = tx.wt + (size_t)x * tx.ntap;
                double acc = 0;
                for (int k = 0; k < tx.ntap; k++) acc += wt[k] * row[clampi(tx.first[x] + k, 0, w - 1)];
                tmp[(size_t)y * ow + x] = (float)acc;
            }
        }
        float *dst = (*out)->plane[c];
        for (int y = 0; y < oh; y++) {
            const float *wt = ty.wt + (size_t)y * ty.ntap;
            float *drow = dst + (size_t)y * ow;
            for (int x = 0; x < ow; x++) drow[x] = 0;
            for (int k = 0; k < ty.ntap; k++) {
                const float *srow = tmp + (size_t)clampi(ty.first[y] + k, 0, h - 1) * ow;
                for (int x = 0; x < ow; x++) drow[x] += wt[k] * srow[x];
            }
            for (int x = 0; x < ow; x++) drow[x] = fminf(255.0f, fmaxf(0.0f, drow[x]));
        }
    }
out:
    free(tmp);
    taps_free(&tx);
    taps_free(&ty);
    return st;
}

tm_status tm_resample(const tm_image *in, int ow, int oh, tm_image **out)
{
    if (!in || !out || ow < 1 || oh < 1) return TM_ERR_ARG;
    return resample(in, ow, oh, (double)ow / in->width, (double)oh / in->height, &filters[0], out);
}

/* scale:F[:filter=...] resizes both sides by F (output round(w F) x round(h F)). */
static tm_status a_scale(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double f;
    if (num_arg(a, "f", 0.05, 8, NAN, 0, &f)) return tm_fail_arg(err, errlen, "scale: wants a factor in 0.05..8, e.g. scale:0.5");
    const resample_filter *flt = &filters[0];
    const char *name = arg(a, "filter");
    if (name) {
        flt = NULL;
        for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++)
            if (!strcmp(filters[i].name, name)) flt = &filters[i];
        if (!flt) return tm_fail_arg(err, errlen, "scale: filter wants lanczos, bicubic, bilinear or box");
    }
    long ow = lround(in->width * f), oh = lround(in->height * f);
    if (ow < 1 || oh < 1 || ow > TM_MAX_SIDE || oh > TM_MAX_SIDE)
        return tm_fail_arg(err, errlen, "scale: %dx%d scaled by %g gives an empty or oversized image", in->width, in->height, f);
    return resample(in, (int)ow, (int)oh, f, f, flt, out);
}

/* aspect:F stretches the width by F, keeping the height (Lanczos-3). */
static tm_status a_aspect(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double f;
    if (num_arg(a, "f", 0.5, 2, NAN, 0, &f)) return tm_fail_arg(err, errlen, "aspect: wants a width factor in 0.5..2");
    long ow = lround(in->width * f);
    if (ow < 1 || ow > TM_MAX_SIDE) return tm_fail_arg(err, errlen, "aspect: width %d stretched by %g is out of range", in->width, f);
    return resample(in, (int)ow, in->height, f, 1, &filters[0], out);
}

/* Sample of plane p (w x h) at (x, y) with the given kernel (bicubic: 4x4
 * taps, bilinear: 2x2), borders clamped. */
double tm_interp(const float *p, int w, int h, double x, double y, int cubic)
{
    int r = cubic ? 2 : 1;
    int x0 = (int)floor(x) - r + 1, y0 = (int)floor(y) - r + 1;
    double acc = 0;
    for (int j = 0; j < 2 * r; j++) {
        double wy = cubic ? k_bicubic(y - (y0 + j)) : k_bilinear(y - (y0 + j));
        if (wy == 0) continue;
        const float *row = p + (size_t)clampi(y0 + j, 0, h - 1) * w;
        double racc = 0;
        for (int i = 0; i < 2 * r; i++) {
            double wx = cubic ? k_bicubic(x - (x0 + i)) : k_bilinear(x - (x0 + i));
            racc += wx * row[clampi(x0 + i, 0, w - 1)];
        }
        acc += wy * racc;
    }
    return acc;
}

/* Width and height of the largest axis-aligned rectangle inside a w x h
 * rectangle rotated by angle a (radians). Either it touches all four rotated
 * sides, or (for thin shapes) it is limited by the short side alone. */
static void inner_rect(double w, double h, double a, double *rw, double *rh)
{
    double s = fabs(sin(a)), c = fabs(cos(a));
    int wide = w >= h;
    double lng = wide ? w : h, shrt = wide ? h : w;
    if (shrt <= 2 * s * c * lng || fabs(s - c) < 1e-10) {
        double x = 0.5 * shrt;
        *rw = wide ? x / s : x / c;
        *rh = wide ? x / c : x / s;
    } else {
        double c2 = c * c - s * s;
        *rw = (w * c - h * s) / c2;
        *rh = (h * c - w * s) / c2;
    }
}

/* rotate:DEG[:crop=1|0][:interp=bicubic|bilinear] turns the content DEG
 * degrees counterclockwise about the centre. crop=1 keeps the largest
 * axis-aligned rectangle inside the turned image; crop=0 keeps the size and
 * fills the uncovered corners with mid-grey (transparent where there is alpha). */
static tm_status a_rotate(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double deg, crop;
    if (num_arg(a, "deg", -360, 360, NAN, 0, &deg)) return tm_fail_arg(err, errlen, "rotate: wants an angle in -360..360 degrees");
    if (num_arg(a, "crop", 0, 1, 1, 1, &crop)) return tm_fail_arg(err, errlen, "rotate: crop wants 1 or 0");
    int cubic = 1;
    const char *ip = arg(a, "interp");
    if (ip) {
        if (!strcmp(ip, "bilinear")) cubic = 0;
        else if (strcmp(ip, "bicubic")) return tm_fail_arg(err, errlen, "rotate: interp wants bicubic or bilinear");
    }
    int w = in->width, h = in->height, ow = w, oh = h;
    double th = deg * M_PI / 180, ct = cos(th), snt = sin(th);
    if (crop != 0) {
        double rw, rh;
        inner_rect(w, h, th, &rw, &rh);
        ow = (int)floor(rw + 1e-6);
        oh = (int)floor(rh + 1e-6);
        if (ow < 1 || oh < 1) return tm_fail_arg(err, errlen, "rotate: nothing of a %dx%d image is left after cropping", w, h);
    }
    tm_status st = new_like(in, ow, oh, out);
    if (st != TM_OK) return st;
    int nc = in->channels == 2 || in->channels == 4 ? in->channels - 1 : in->channels;
    double cx = (w - 1) / 2.0, cy = (h - 1) / 2.0, ocx = (ow - 1) / 2.0, ocy = (oh - 1) / 2.0;
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            /* Display (x', y') = R (x, y) with R = [c s; -s c] (y down), inverted. */
            double u = x - ocx, v = y - ocy;
            double sx = cx + u * ct - v * snt, sy = cy + u * snt + v * ct;
            int inside = sx >= -0.5 && sx <= w - 0.5 && sy >= -0.5 && sy <= h - 0.5;
            for (int c = 0; c < in->channels; c++) {
                double val = inside || crop != 0 ? tm_interp(in->plane[c], w, h, sx, sy, cubic) : c < nc ? 128 : 0;
                (*out)->plane[c][(size_t)y * ow + x] = (float)fmin(255, fmax(0, val));
            }
        }
    return TM_OK;
}

/* flip:h mirrors left-right, flip:v top-bottom; every plane, exactly. */
static tm_status a_flip(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    const char *ax = arg(a, "axis");
    if (!ax || (strcmp(ax, "h") && strcmp(ax, "v"))) return tm_fail_arg(err, errlen, "flip: wants h or v");
    int w = in->width, h = in->height, horiz = !strcmp(ax, "h");
    tm_status st = new_like(in, w, h, out);
    if (st != TM_OK) return st;
    for (int c = 0; c < in->channels; c++)
        for (int y = 0; y < h; y++) {
            const float *src = in->plane[c] + (size_t)(horiz ? y : h - 1 - y) * w;
            float *dst = (*out)->plane[c] + (size_t)y * w;
            if (horiz)
                for (int x = 0; x < w; x++) dst[x] = src[w - 1 - x];
            else
                memcpy(dst, src, sizeof(float) * w);
        }
    return TM_OK;
}

/* turn:90|180|270 turns the image by quarter turns counterclockwise, exactly
 * (turn:90 is a transpose followed by a top-bottom flip). */
static tm_status a_turn(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double deg;
    if (num_arg(a, "deg", 90, 270, NAN, 1, &deg) || ((int)deg != 90 && (int)deg != 180 && (int)deg != 270))
        return tm_fail_arg(err, errlen, "turn: wants 90, 180 or 270");
    int q = (int)deg / 90, w = in->width, h = in->height;
    int ow = q == 2 ? w : h, oh = q == 2 ? h : w;
    tm_status st = new_like(in, ow, oh, out);
    if (st != TM_OK) return st;
    for (int c = 0; c < in->channels; c++) {
        const float *src = in->plane[c];
        float *dst = (*out)->plane[c];
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++) {
                int sx, sy;
                if (q == 1) { /* top-right corner comes to the top-left */
                    sx = w - 1 - y;
                    sy = x;
                } else if (q == 2) {
                    sx = w - 1 - x;
                    sy = h - 1 - y;
                } else {
                    sx = y;
                    sy = h - 1 - x;
                }
                dst[(size_t)y * ow + x] = src[(size_t)sy * w + sx];
            }
    }
    return TM_OK;
}

/* ---- presets and bending ------------------------------------------------- */

/* One named argument, for calling a step function from another. */
static step_args one_arg(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static step_args one_arg(const char *key, const char *fmt, ...)
{
    step_args a = {.n = 1};
    snprintf(a.key[0], sizeof a.key[0], "%s", key);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a.val[0], sizeof a.val[0], fmt, ap);
    va_end(ap);
    return a;
}

/* screenshot[:side=PX][:q=Q] imitates a screen capture of the image shown
 * to fit PX pixels: the scale step's Lanczos downscale (never up) so the
 * longest side is PX, the crop step taking 4 pixels off every edge, then the
 * jpeg step at quality Q. */
static tm_status a_screenshot(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double side, q;
    if (num_arg(a, "side", 16, TM_MAX_SIDE, 1280, 1, &side))
        return tm_fail_arg(err, errlen, "screenshot: side wants a whole number of pixels 16..%d", TM_MAX_SIDE);
    if (num_arg(a, "q", 1, 100, 75, 1, &q)) return tm_fail_arg(err, errlen, "screenshot: q wants a whole number 1..100");
    tm_image *shown = NULL, *cropped = NULL;
    const tm_image *cur = in;
    int longest = in->width > in->height ? in->width : in->height;
    tm_status st;
    if (longest > side) {
        /* resample() directly rather than a_scale: a factor below scale's
         * 0.05 floor is legitimate here (a 30000-pixel panorama). */
        double f = side / longest;
        long ow = lround(in->width * f), oh = lround(in->height * f);
        if ((st = resample(in, ow < 1 ? 1 : (int)ow, oh < 1 ? 1 : (int)oh, f, f, &filters[0], &shown)) != TM_OK) goto out;
        cur = shown;
    }
    if (cur->width <= 8 || cur->height <= 8) {
        st = tm_fail_arg(err, errlen, "screenshot: a %dx%d capture is too small to lose its 4-pixel border", cur->width, cur->height);
        goto out;
    }
    step_args ca = one_arg("f", "%dx%d+4+4", cur->width - 8, cur->height - 8), ja = one_arg("q", "%d", (int)q);
    if ((st = a_crop(&ca, cur, &cropped, err, errlen)) != TM_OK) goto out;
    st = a_jpeg(&ja, cropped, out, err, errlen);
out:
    tm_image_free(shown);
    tm_image_free(cropped);
    return st;
}

/* The bending field: each displacement component is a sum of BEND_WAVES
 * plane waves of at most 2 cycles across the image, with keyed directions,
 * phases and amplitudes. A wave sin(u + v) = sin u cos v + cos u sin v is
 * separable, so it is tabulated per column (u) and per row (v). */
#define BEND_WAVES 4

typedef struct bend_field {
    int w, h;
    double amp[2][BEND_WAVES];
    double *su, *cu, *sv, *cv;   /* [(comp * BEND_WAVES + k) * w + x], ... * h + y] */
} bend_field;

static void bend_at(const bend_field *bf, int x, int y, double *d)
{
    for (int comp = 0; comp < 2; comp++) {
        double s = 0;
        for (int k = 0; k < BEND_WAVES; k++) {
            size_t ix = (size_t)(comp * BEND_WAVES + k) * bf->w + x, iy = (size_t)(comp * BEND_WAVES + k) * bf->h + y;
            s += bf->amp[comp][k] * (bf->su[ix] * bf->cv[iy] + bf->cu[ix] * bf->sv[iy]);
        }
        d[comp] = s;
    }
}

/* bend[:strength=S][:seed=N] moves every pixel along a smooth keyed field
 * whose largest displacement is S pixels (StirMark's random bending), and
 * resamples every plane bicubically, borders clamped. The field comes from
 * GSL's MT19937 seeded by N, so it is the same for the same seed. */
static tm_status a_bend(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double strength, seed;
    if (num_arg(a, "strength", 0, 10, 1.0, 0, &strength)) return tm_fail_arg(err, errlen, "bend: strength wants 0..10 pixels");
    if (num_arg(a, "seed", 0, 4294967295.0, 1, 1, &seed)) return tm_fail_arg(err, errlen, "bend: seed wants a whole number 0..4294967295");
    int w = in->width, h = in->height;
    bend_field bf = {.w = w, .h = h};
    size_t nu = (size_t)2 * BEND_WAVES * w, nv = (size_t)2 * BEND_WAVES * h;
    bf.su = malloc(sizeof(double) * 2 * (nu + nv));
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    tm_status st = TM_ERR_NOMEM;
    *out = NULL;
    if (!bf.su || !rng) goto out;
    bf.cu = bf.su + nu;
    bf.sv = bf.cu + nu;
    bf.cv = bf.sv + nv;
    gsl_rng_set(rng, (unsigned long)seed + 1); /* GSL maps seed 0 to its default */
    for (int comp = 0; comp < 2; comp++)
        for (int k = 0; k < BEND_WAVES; k++) {
            double fx = gsl_ran_flat(rng, -2, 2), fy = gsl_ran_flat(rng, -2, 2), ph = gsl_ran_flat(rng, 0, 2 * M_PI);
            bf.amp[comp][k] = gsl_ran_flat(rng, 0.5, 1);
            size_t row = (size_t)comp * BEND_WAVES + k;
            for (int x = 0; x < w; x++) {
                double u = 2 * M_PI * fx * x / w + ph;
                bf.su[row * w + x] = sin(u);
                bf.cu[row * w + x] = cos(u);
            }
            for (int y = 0; y < h; y++) {
                double v = 2 * M_PI * fy * y / h;
                bf.sv[row * h + y] = sin(v);
                bf.cv[row * h + y] = cos(v);
            }
        }
    /* Scale the field so its largest displacement over the image is S. */
    double peak = 0, d[2];
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            bend_at(&bf, x, y, d);
            peak = fmax(peak, hypot(d[0], d[1]));
        }
    double gain = peak > 0 ? strength / peak : 0;
    if ((st = new_like(in, w, h, out)) != TM_OK) goto out;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            bend_at(&bf, x, y, d);
            double sx = x + gain * d[0], sy = y + gain * d[1];
            for (int c = 0; c < in->channels; c++)
                (*out)->plane[c][(size_t)y * w + x] = (float)fmin(255, fmax(0, tm_interp(in->plane[c], w, h, sx, sy, 1)));
        }
out:
    free(bf.su);
    gsl_rng_free(rng);
    return st;
}

static const attack_def attacks[] = {
    {"jpeg", "q,ss", "jpeg:q=Q[:ss=444|422|420]   JPEG re-encode at quality Q (default 75, 4:2:0)", a_jpeg},
    {"webp", "q", "webp:q=Q                    lossy WebP re-encode at quality Q (default 75)", a_webp},
    {"png", "", "png                         lossless PNG re-save (8-bit rounding)", a_png},
    {"blur", "sigma", "blur:sigma=S                Gaussian blur (default 1.0)", a_blur},
    {"noise", "sigma,seed", "noise:sigma=S[:seed=N]      additive Gaussian noise (default 2.0, seed 1)", a_noise},
    {"gamma", "g", "gamma:G                     gamma correction, 0.1..10", a_gamma},
    {"brightness", "d", "brightness:D                add D to every sample, -255..255", a_brightness},
    {"contrast", "k", "contrast:K                  scale contrast about mid-grey by K", a_contrast},
    {"gray", "", "gray                        convert to greyscale", a_gray},
    {"crop", "f", "crop:F | crop:WxH+X+Y        keep the centred fraction F of each side, or a window", a_crop},
    {"scale", "f,filter", "scale:F[:filter=lanczos|bicubic|bilinear|box]  resize both sides by F, 0.05..8 (default Lanczos-3)", a_scale},
    {"aspect", "f", "aspect:F                    stretch the width by F, 0.5..2, keeping the height", a_aspect},
    {"rotate", "deg,crop,interp", "rotate:DEG[:crop=1|0][:interp=bicubic|bilinear]  turn DEG degrees counterclockwise; crop=1 keeps the largest upright rectangle, crop=0 the size (grey corners)", a_rotate},
    {"flip", "axis", "flip:h|v                    mirror left-right (h) or top-bottom (v)", a_flip},
    {"turn", "deg", "turn:90|180|270             exact quarter turns counterclockwise", a_turn},
    {"sharpen", "amount,sigma", "sharpen[:amount=A][:sigma=S]  unsharp mask, A 0..10 (default 1), blur S 0.1..20 (default 1)", a_sharpen},
    {"median", "r", "median[:r=R]                median filter of radius R, 1..5 (default 1)", a_median},
    {"saturation", "k", "saturation:K                scale the chroma about the luma by K, 0..4 (0 greys)", a_saturation},
    {"quantize", "colors,dither", "quantize[:colors=N][:dither=0|1]  GIF-like palette of N colours, 2..256 (default 256), median cut; dither=1 Floyd-Steinberg", a_quantize},
    {"screenshot", "side,q", "screenshot[:side=PX][:q=Q]  screen capture: fit the longest side to PX (default 1280, no upscaling), crop 4 px each edge, JPEG at Q (default 75)", a_screenshot},
    {"bend", "strength,seed", "bend[:strength=S][:seed=N]  StirMark-like smooth random bending of at most S pixels, 0..10 (default 1, seed 1)", a_bend},
};
#define N_ATTACKS (sizeof attacks / sizeof attacks[0])

const char *tm_attack_usage(size_t i)
{
    return i < N_ATTACKS ? attacks[i].usage : NULL;
}

/* ---- combining copies (collusion) ------------------------------------------ */

#define COMBINE_MAX 16

typedef struct combine_def {
    const char *name;
    const char *params;
    const char *usage;
    tm_status (*run)(const step_args *a, const tm_image *const *in, size_t n, tm_image **out, char *err, size_t errlen);
} combine_def;

enum { MIX_AVERAGE, MIX_MIN, MIX_MAX, MIX_MEDIAN };

/* Every sample of the result is the mean, minimum, maximum or median (mean
 * of the middle two for an even n) of that sample in the n inputs, which
 * have in[0]'s shape; every plane, alpha included. */
static tm_status mix_pixelwise(const tm_image *const *in, size_t n, int mode, tm_image **out)
{
    tm_status st = new_like(in[0], in[0]->width, in[0]->height, out);
    if (st != TM_OK) return st;
    size_t np = (size_t)in[0]->width * in[0]->height;
    for (int c = 0; c < in[0]->channels; c++)
        for (size_t i = 0; i < np; i++) {
            float v[COMBINE_MAX];
            v[0] = in[0]->plane[c][i];
            for (size_t k = 1; k < n; k++) v[k] = in[k]->plane[c][i];
            double r = v[0];
            if (mode == MIX_AVERAGE) {
                for (size_t k = 1; k < n; k++) r += v[k];
                r /= (double)n;
            } else if (mode == MIX_MIN) {
                for (size_t k = 1; k < n; k++) r = fmin(r, v[k]);
            } else if (mode == MIX_MAX) {
                for (size_t k = 1; k < n; k++) r = fmax(r, v[k]);
            } else {
                for (size_t k = 1; k < n; k++) { /* insertion sort: n <= 16 */
                    float x = v[k];
                    size_t j = k;
                    for (; j > 0 && v[j - 1] > x; j--) v[j] = v[j - 1];
                    v[j] = x;
                }
                r = n % 2 ? v[n / 2] : 0.5 * ((double)v[n / 2 - 1] + v[n / 2]);
            }
            (*out)->plane[c][i] = (float)r;
        }
    return TM_OK;
}

static tm_status c_average(const step_args *a, const tm_image *const *in, size_t n, tm_image **out, char *err, size_t errlen)
{
    (void)a, (void)err, (void)errlen;
    return mix_pixelwise(in, n, MIX_AVERAGE, out);
}
static tm_status c_min(const step_args *a, const tm_image *const *in, size_t n, tm_image **out, char *err, size_t errlen)
{
    (void)a, (void)err, (void)errlen;
    return mix_pixelwise(in, n, MIX_MIN, out);
}
static tm_status c_max(const step_args *a, const tm_image *const *in, size_t n, tm_image **out, char *err, size_t errlen)
{
    (void)a, (void)err, (void)errlen;
    return mix_pixelwise(in, n, MIX_MAX, out);
}
static tm_status c_median(const step_args *a, const tm_image *const *in, size_t n, tm_image **out, char *err, size_t errlen)
{
    (void)a, (void)err, (void)errlen;
    return mix_pixelwise(in, n, MIX_MEDIAN, out);
}

/* interleave[:block=B] cuts the picture into B x B squares; square (i, j)
 * (column i, row j) comes from input (i + j) mod n, so two inputs make a
 * checkerboard and more make diagonal stripes, each input used in turn. */
static tm_status c_interleave(const step_args *a, const tm_image *const *in, size_t n, tm_image **out, char *err, size_t errlen)
{
    double b;
    if (num_arg(a, "block", 1, TM_MAX_SIDE, 64, 1, &b))
        return tm_fail_arg(err, errlen, "interleave: block wants a whole number of pixels 1..%d", TM_MAX_SIDE);
    int w = in[0]->width, h = in[0]->height, bs = (int)b;
    tm_status st = new_like(in[0], w, h, out);
    if (st != TM_OK) return st;
    for (int c = 0; c < in[0]->channels; c++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                size_t i = (size_t)y * w + x;
                (*out)->plane[c][i] = in[(size_t)(x / bs + y / bs) % n]->plane[c][i];
            }
    return TM_OK;
}

static const combine_def combiners[] = {
    {"average", "", "average                     pixel-wise mean of the images", c_average},
    {"min", "", "min                         pixel-wise minimum", c_min},
    {"max", "", "max                         pixel-wise maximum", c_max},
    {"median", "", "median                      pixel-wise median (mean of the middle two for an even count)", c_median},
    {"interleave", "block", "interleave[:block=B]        BxB squares (default 64) taken from the images in turn: (column + row) mod count", c_interleave},
};
#define N_COMBINERS (sizeof combiners / sizeof combiners[0])

const char *tm_attack_combine_usage(size_t i)
{
    return i < N_COMBINERS ? combiners[i].usage : NULL;
}

/* The pos-th name in a comma-separated parameter list; 0 when there is none. */
static int param_name(const char *params, int pos, char *out, size_t cap)
{
    for (int i = 0; *params; i++) {
        const char *end = strchr(params, ',');
        size_t len = end ? (size_t)(end - params) : strlen(params);
        if (i == pos) {
            if (len >= cap) return 0;
            memcpy(out, params, len);
            out[len] = 0;
            return 1;
        }
        if (!end) break;
        params = end + 1;
    }
    return 0;
}

/* True when key is one of the parameter names. */
static int param_known(const char *params, const char *key)
{
    char name[16];
    for (int i = 0; param_name(params, i, name, sizeof name); i++)
        if (!strcmp(name, key)) return 1;
    return 0;
}

/* Parses one step "name:a:k=v" (len bytes at s) into its definition and
 * args: an attack, or a combine mode when combining (then *cdef is set). */
static tm_status parse_step(const char *s, size_t len, int combining, const attack_def **def, const combine_def **cdef,
                            step_args *a, char *err, size_t errlen)
{
    char buf[160];
    if (len == 0 || len >= sizeof buf) return tm_fail_arg(err, errlen, "empty or overlong step in the attack spec");
    memcpy(buf, s, len);
    buf[len] = 0;
    memset(a, 0, sizeof *a);
    char *save = NULL, *tok = strtok_r(buf, ":", &save);
    if (!tok) return tm_fail_arg(err, errlen, "empty step in the attack spec");
    const char *name = NULL, *params = NULL;
    const attack_def *ad = NULL;
    const combine_def *cd = NULL;
    for (size_t i = 0; i < N_ATTACKS; i++)
        if (!strcmp(attacks[i].name, tok)) ad = &attacks[i];
    for (size_t i = 0; i < N_COMBINERS; i++)
        if (!strcmp(combiners[i].name, tok)) cd = &combiners[i];
    if (combining) {
        if (!cd && ad) return tm_fail_arg(err, errlen, "'%s' is not a combine mode: want average, min, max, median or interleave", tok);
        if (!cd) return tm_fail_arg(err, errlen, "unknown combine mode '%s': want average, min, max, median or interleave", tok);
        *cdef = cd;
        name = cd->name;
        params = cd->params;
    } else {
        if (!ad && cd) return tm_fail_arg(err, errlen, "'%s' combines several images, so it can only start a combine spec", tok);
        if (!ad) return tm_fail_arg(err, errlen, "unknown attack '%s'", tok);
        *def = ad;
        name = ad->name;
        params = ad->params;
    }
    int pos = 0;
    while ((tok = strtok_r(NULL, ":", &save))) {
        if (a->n == MAX_ARGS) return tm_fail_arg(err, errlen, "%s: too many arguments", name);
        char *eq = strchr(tok, '=');
        const char *key = tok, *val = tok;
        char pname[16];
        if (eq) {
            *eq = 0;
            val = eq + 1;
        } else if (!param_name(params, pos++, pname, sizeof pname)) {
            return tm_fail_arg(err, errlen, "%s: unexpected argument '%s'", name, tok);
        } else {
            key = pname;
        }
        if (!*key || !*val || !param_known(params, key)) return tm_fail_arg(err, errlen, "%s: unknown argument '%s'", name, tok);
        if (arg(a, key)) return tm_fail_arg(err, errlen, "%s: '%s' given twice", name, key);
        if (strlen(key) >= sizeof a->key[0] || strlen(val) >= sizeof a->val[0])
            return tm_fail_arg(err, errlen, "%s: argument '%s' too long", name, tok);
        strcpy(a->key[a->n], key);
        strcpy(a->val[a->n], val);
        a->n++;
    }
    return TM_OK;
}

/* The step at s without surrounding blanks (*start, *len); returns the comma
 * ending it, or NULL for the last step. */
static const char *step_bounds(const char *s, const char **start, size_t *len)
{
    while (isspace((unsigned char)*s)) s++;
    const char *end = strchr(s, ',');
    size_t n = end ? (size_t)(end - s) : strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) n--;
    *start = s;
    *len = n;
    return end;
}

/* Applies the chain spec to in (borrowed), giving a new *out. */
static tm_status apply_chain(const char *spec, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    tm_image *cur = NULL;
    const char *s = spec;
    for (;;) {
        const char *step;
        size_t len;
        const char *end = step_bounds(s, &step, &len);
        const attack_def *def = NULL;
        step_args a;
        tm_status st = parse_step(step, len, 0, &def, NULL, &a, err, errlen);
        tm_image *next = NULL;
        if (st == TM_OK) st = def->run(&a, cur ? cur : in, &next, err, errlen);
        tm_image_free(cur);
        if (st != TM_OK) {
            tm_image_free(next);
            return st;
        }
        cur = next;
        if (!end) break;
        s = end + 1;
    }
    *out = cur;
    return TM_OK;
}

tm_status tm_attack_apply(const char *spec, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    if (err && errlen) err[0] = 0;
    if (!spec || !in || !out) return TM_ERR_ARG;
    *out = NULL;
    return apply_chain(spec, in, out, err, errlen);
}

tm_status tm_attack_combine(const char *spec, const tm_image *const *in, size_t n, tm_image **out, char *err, size_t errlen)
{
    if (err && errlen) err[0] = 0;
    if (!spec || !in || !out) return TM_ERR_ARG;
    *out = NULL;
    const char *step;
    size_t len;
    const char *end = step_bounds(spec, &step, &len);
    const combine_def *def = NULL;
    step_args a;
    tm_status st = parse_step(step, len, 1, NULL, &def, &a, err, errlen);
    if (st != TM_OK) return st;
    if (n < 2 || n > COMBINE_MAX) return tm_fail_arg(err, errlen, "%s: wants 2..%d images, got %zu", def->name, COMBINE_MAX, n);
    for (size_t i = 0; i < n; i++)
        if (!in[i]) return tm_fail_arg(err, errlen, "%s: image %zu is missing", def->name, i + 1);
    for (size_t i = 1; i < n; i++)
        if (in[i]->width != in[0]->width || in[i]->height != in[0]->height || in[i]->channels != in[0]->channels)
            return tm_fail_arg(err, errlen, "%s: image %zu is %dx%d with %d channels but image 1 is %dx%d with %d; all must match",
                        def->name, i + 1, in[i]->width, in[i]->height, in[i]->channels, in[0]->width, in[0]->height,
                        in[0]->channels);
    tm_image *mix = NULL;
    if ((st = def->run(&a, in, n, &mix, err, errlen)) != TM_OK) {
        tm_image_free(mix);
        return st;
    }
    if (!end) {
        *out = mix;
        return TM_OK;
    }
    st = apply_chain(end + 1, mix, out, err, errlen);
    tm_image_free(mix);
    return st;
}
