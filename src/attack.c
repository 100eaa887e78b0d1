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
 * when shrinking, so a downscale is antialiased like a real one. */
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

static tm_status fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static tm_status fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return TM_ERR_ARG;
}

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
    if (num_arg(a, "q", 1, 100, 75, 1, &q)) return fail(err, errlen, "jpeg: q wants a whole number 1..100");
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
        else return fail(err, errlen, "jpeg: ss wants 444, 422 or 420");
    }
    return codec_roundtrip(in, &so, out);
}

static tm_status a_webp(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double q;
    if (num_arg(a, "q", 1, 100, 75, 1, &q)) return fail(err, errlen, "webp: q wants a whole number 1..100");
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
    if (num_arg(a, "g", 0.1, 10, NAN, 0, &g)) return fail(err, errlen, "gamma: wants a value in 0.1..10, e.g. gamma:1.2");
    return pointwise(in, out, f_gamma, g);
}

static tm_status a_brightness(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double d;
    if (num_arg(a, "d", -255, 255, NAN, 0, &d)) return fail(err, errlen, "brightness: wants an offset in -255..255");
    return pointwise(in, out, f_brightness, d);
}

static tm_status a_contrast(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double k;
    if (num_arg(a, "k", 0, 10, NAN, 0, &k)) return fail(err, errlen, "contrast: wants a factor in 0..10");
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

/* Separable Gaussian blur of every colour plane, kernel radius 3 sigma. */
static tm_status a_blur(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double sigma;
    if (num_arg(a, "sigma", 0.1, 20, 1.0, 0, &sigma)) return fail(err, errlen, "blur: sigma wants 0.1..20");
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

/* Additive white Gaussian noise, from GSL's MT19937 seeded by the spec. */
static tm_status a_noise(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double sigma, seed;
    if (num_arg(a, "sigma", 0, 100, 2.0, 0, &sigma)) return fail(err, errlen, "noise: sigma wants 0..100");
    if (num_arg(a, "seed", 0, 4294967295.0, 1, 1, &seed)) return fail(err, errlen, "noise: seed wants a whole number 0..4294967295");
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
    if (!v) return fail(err, errlen, "crop: wants a fraction (crop:0.5) or a window (crop:640x480+10+20)");
    int w, h, x, y;
    if (strchr(v, 'x')) {
        if (parse_window(v, &w, &h, &x, &y)) return fail(err, errlen, "crop: bad window '%s', want WxH+X+Y", v);
        if (w < 1 || h < 1 || x + w > in->width || y + h > in->height)
            return fail(err, errlen, "crop: window %s is not inside the %dx%d image", v, in->width, in->height);
    } else {
        double f;
        if (num_arg(a, "f", 0.01, 1, NAN, 0, &f)) return fail(err, errlen, "crop: fraction wants 0.01..1");
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

static int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
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

/* scale:F[:filter=...] resizes both sides by F (output round(w F) x round(h F)). */
static tm_status a_scale(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double f;
    if (num_arg(a, "f", 0.05, 8, NAN, 0, &f)) return fail(err, errlen, "scale: wants a factor in 0.05..8, e.g. scale:0.5");
    const resample_filter *flt = &filters[0];
    const char *name = arg(a, "filter");
    if (name) {
        flt = NULL;
        for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++)
            if (!strcmp(filters[i].name, name)) flt = &filters[i];
        if (!flt) return fail(err, errlen, "scale: filter wants lanczos, bicubic, bilinear or box");
    }
    long ow = lround(in->width * f), oh = lround(in->height * f);
    if (ow < 1 || oh < 1 || ow > TM_MAX_SIDE || oh > TM_MAX_SIDE)
        return fail(err, errlen, "scale: %dx%d scaled by %g gives an empty or oversized image", in->width, in->height, f);
    return resample(in, (int)ow, (int)oh, f, f, flt, out);
}

/* aspect:F stretches the width by F, keeping the height (Lanczos-3). */
static tm_status a_aspect(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double f;
    if (num_arg(a, "f", 0.5, 2, NAN, 0, &f)) return fail(err, errlen, "aspect: wants a width factor in 0.5..2");
    long ow = lround(in->width * f);
    if (ow < 1 || ow > TM_MAX_SIDE) return fail(err, errlen, "aspect: width %d stretched by %g is out of range", in->width, f);
    return resample(in, (int)ow, in->height, f, 1, &filters[0], out);
}

/* Sample of plane p (w x h) at (x, y) with the given kernel (bicubic: 4x4
 * taps, bilinear: 2x2), borders clamped. */
static double interp(const float *p, int w, int h, double x, double y, int cubic)
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
    if (num_arg(a, "deg", -360, 360, NAN, 0, &deg)) return fail(err, errlen, "rotate: wants an angle in -360..360 degrees");
    if (num_arg(a, "crop", 0, 1, 1, 1, &crop)) return fail(err, errlen, "rotate: crop wants 1 or 0");
    int cubic = 1;
    const char *ip = arg(a, "interp");
    if (ip) {
        if (!strcmp(ip, "bilinear")) cubic = 0;
        else if (strcmp(ip, "bicubic")) return fail(err, errlen, "rotate: interp wants bicubic or bilinear");
    }
    int w = in->width, h = in->height, ow = w, oh = h;
    double th = deg * M_PI / 180, ct = cos(th), snt = sin(th);
    if (crop != 0) {
        double rw, rh;
        inner_rect(w, h, th, &rw, &rh);
        ow = (int)floor(rw + 1e-6);
        oh = (int)floor(rh + 1e-6);
        if (ow < 1 || oh < 1) return fail(err, errlen, "rotate: nothing of a %dx%d image is left after cropping", w, h);
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
                double val = inside || crop != 0 ? interp(in->plane[c], w, h, sx, sy, cubic) : c < nc ? 128 : 0;
                (*out)->plane[c][(size_t)y * ow + x] = (float)fmin(255, fmax(0, val));
            }
        }
    return TM_OK;
}

/* flip:h mirrors left-right, flip:v top-bottom; every plane, exactly. */
static tm_status a_flip(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    const char *ax = arg(a, "axis");
    if (!ax || (strcmp(ax, "h") && strcmp(ax, "v"))) return fail(err, errlen, "flip: wants h or v");
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
        return fail(err, errlen, "turn: wants 90, 180 or 270");
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
};
#define N_ATTACKS (sizeof attacks / sizeof attacks[0])

const char *tm_attack_usage(size_t i)
{
    return i < N_ATTACKS ? attacks[i].usage : NULL;
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

/* Parses one step "name:a:k=v" (len bytes at s) into its definition and args. */
static tm_status parse_step(const char *s, size_t len, const attack_def **def, step_args *a, char *err, size_t errlen)
{
    char buf[160];
    if (len == 0 || len >= sizeof buf) return fail(err, errlen, "empty or overlong step in the attack spec");
    memcpy(buf, s, len);
    buf[len] = 0;
    memset(a, 0, sizeof *a);
    char *save = NULL, *tok = strtok_r(buf, ":", &save);
    if (!tok) return fail(err, errlen, "empty step in the attack spec");
    *def = NULL;
    for (size_t i = 0; i < N_ATTACKS; i++)
        if (!strcmp(attacks[i].name, tok)) *def = &attacks[i];
    if (!*def) return fail(err, errlen, "unknown attack '%s'", tok);
    int pos = 0;
    while ((tok = strtok_r(NULL, ":", &save))) {
        if (a->n == MAX_ARGS) return fail(err, errlen, "%s: too many arguments", (*def)->name);
        char *eq = strchr(tok, '=');
        const char *key = tok, *val = tok;
        char name[16];
        if (eq) {
            *eq = 0;
            val = eq + 1;
        } else if (!param_name((*def)->params, pos++, name, sizeof name)) {
            return fail(err, errlen, "%s: unexpected argument '%s'", (*def)->name, tok);
        } else {
            key = name;
        }
        if (!*key || !*val || !param_known((*def)->params, key))
            return fail(err, errlen, "%s: unknown argument '%s'", (*def)->name, tok);
        if (arg(a, key)) return fail(err, errlen, "%s: '%s' given twice", (*def)->name, key);
        if (strlen(key) >= sizeof a->key[0] || strlen(val) >= sizeof a->val[0])
            return fail(err, errlen, "%s: argument '%s' too long", (*def)->name, tok);
        strcpy(a->key[a->n], key);
        strcpy(a->val[a->n], val);
        a->n++;
    }
    return TM_OK;
}

tm_status tm_attack_apply(const char *spec, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    if (err && errlen) err[0] = 0;
    if (!spec || !in || !out) return TM_ERR_ARG;
    *out = NULL;
    tm_image *cur = NULL;
    const char *s = spec;
    for (;;) {
        while (isspace((unsigned char)*s)) s++;
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        while (len > 0 && isspace((unsigned char)s[len - 1])) len--;
        const attack_def *def = NULL;
        step_args a;
        tm_status st = parse_step(s, len, &def, &a, err, errlen);
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
