/* register.c -- informed trace: where a suspect lies in the unmarked
 * original, and the suspect with the original taken out (docs/scheme.md
 * section 11). The original comes prepared (original.c): its frame and its
 * fine level; the suspect's levels are made once per trace
 * (tm_reg_suspect_init), whatever the number of originals tried.
 *
 * Coarse: both images shrunk by the same factor from their fine levels (the
 * original to COARSE_SIDE, less when the suspect would keep fewer than
 * COARSE_SUSPECT), so a copy at its marked size has the same pixel scale.
 * Fourier-Mellin: the magnitude spectra, resampled on log-radius x angle,
 * turn a scaling and a turn into a shift, found by phase correlation. Each of
 * the strongest shifts (and no change at all, for plain crops) gives a scale
 * and a turn, the turn also plus 180 degrees; the suspect is brought back by
 * each and the shift is where its masked NCC with the original peaks (four
 * FFT correlations). The mirrored suspect gets the same when nothing fits,
 * then a sweep of scales. The best candidate is polished as a full affine
 * map by GSL's Nelder-Mead simplex on 1 - NCC, at the coarse scale, then at
 * the fine levels (softened).
 *
 * The difference: the suspect minus the original through the tone curve
 * that best predicts the suspect from it (least squares per tone bin:
 * brightness, contrast, gamma or any monotone curve), in the original's
 * frame. A suspect with more pixels than the frame covers is first shrunk to
 * the frame's density; one with fewer is compared in its own frame, with the
 * original brought there through the same loss of resolution, and the
 * difference carried back. The mark survives it, the host mostly does not.
 * Nothing here looks at a key or a codeword. */
#include "config.h"

#include <fftw3.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_multilarge_nlinear.h>
#include <gsl/gsl_multimin.h>

#include "scheme.h"

#define COARSE_SIDE 512      /* the coarse search's long side (original) .. */
#define COARSE_SUSPECT 192   /* .. unless the suspect's would be shorter than this */
#define LP_RADII 256         /* log-polar samples: radii .. */
#define LP_ANGLES 360        /* .. and angles over [0, 180) degrees */
#define FMT_PEAKS 16         /* scale/turn peaks tried (the true one is often not among the first few) */
#define COARSE_SAMPLES 16384 /* suspect samples in the cost, coarse .. */
#define FINE_SAMPLES 65536   /* .. and fine */
#define FOUND_NCC 0.8        /* registered: the overlap correlates at least this .. */
#define FOUND_OVERLAP 0.5    /* .. over at least this share of the suspect */
#define SURE_NCC 0.98        /* a coarse fit this good ends the coarse search */
#define TONE_BINS 64
#define SWEEP_MIN 0.1        /* scales (suspect / original) searched .. */
#define SWEEP_MAX 5.0
#define SWEEP_STEP 1.08      /* .. in steps of 8% when Fourier-Mellin finds nothing */
#define MAX_ANISO 1.5        /* largest stretch or shear fitted (singular value ratio) */

typedef struct grey {
    float *v;
    int w, h;
} grey;

static void grey_free(grey *g)
{
    free(g->v);
    g->v = NULL;
}

/* y (w x h) shrunk to nw x nh (Lanczos, antialiased), or copied. */
static tm_status shrink(const float *y, int w, int h, int nw, int nh, grey *out)
{
    out->w = nw;
    out->h = nh;
    out->v = malloc(sizeof(float) * (size_t)nw * nh);
    if (!out->v) return TM_ERR_NOMEM;
    if (nw == w && nh == h) {
        memcpy(out->v, y, sizeof(float) * (size_t)w * h);
        return TM_OK;
    }
    tm_image in = {.width = w, .height = h, .channels = 1};
    in.plane[0] = (float *)y;
    tm_image *r;
    tm_status st = tm_resample(&in, nw, nh, &r);
    if (st != TM_OK) {
        grey_free(out);
        return st;
    }
    memcpy(out->v, r->plane[0], sizeof(float) * (size_t)nw * nh);
    tm_image_free(r);
    return TM_OK;
}

/* ---- affine maps: x' = m[0] + m[1] x + m[2] y, y' = m[3] + m[4] x + m[5] y ---- */

static void aff_apply(const double *m, double x, double y, double *u, double *v)
{
    *u = m[0] + m[1] * x + m[2] * y;
    *v = m[3] + m[4] * x + m[5] * y;
}

/* r = a after b */
static void aff_compose(const double *a, const double *b, double *r)
{
    double t[6] = {a[0] + a[1] * b[0] + a[2] * b[3], a[1] * b[1] + a[2] * b[4], a[1] * b[2] + a[2] * b[5],
                   a[3] + a[4] * b[0] + a[5] * b[3], a[4] * b[1] + a[5] * b[4], a[4] * b[2] + a[5] * b[5]};
    memcpy(r, t, sizeof t);
}

static int aff_invert(const double *m, double *r)
{
    double det = m[1] * m[5] - m[2] * m[4];
    if (!(fabs(det) > 1e-12)) return -1;
    double t[6];
    t[1] = m[5] / det;
    t[2] = -m[2] / det;
    t[4] = -m[4] / det;
    t[5] = m[1] / det;
    t[0] = -(t[1] * m[0] + t[2] * m[3]);
    t[3] = -(t[4] * m[0] + t[5] * m[3]);
    memcpy(r, t, sizeof t);
    return 0;
}

/* Pixel-centre coordinates of an image shrunk by kx, ky into the full one
 * (with factors below 1, full into shrunk). */
static void aff_unshrink(double kx, double ky, double *m)
{
    double t[6] = {0.5 * kx - 0.5, kx, 0, 0.5 * ky - 0.5, 0, ky};
    memcpy(m, t, sizeof t);
}

/* ---- phase correlation ---- */

/* The shift of the peak at (y, x) of the periodic surface c (n0 x n1):
 * wrapped to (-n/2, n/2], refined by a parabola through its neighbours. */
static void peak_shift(const float *c, int n0, int n1, int y, int x, double *dy, double *dx)
{
    float v = c[(size_t)y * n1 + x];
    float ym = c[(size_t)((y - 1 + n0) % n0) * n1 + x], yp = c[(size_t)((y + 1) % n0) * n1 + x];
    float xm = c[(size_t)y * n1 + (x - 1 + n1) % n1], xp = c[(size_t)y * n1 + (x + 1) % n1];
    double oy = (ym - yp) / (2.0 * (ym - 2 * v + yp)), ox = (xm - xp) / (2.0 * (xm - 2 * v + xp));
    if (!isfinite(oy) || fabs(oy) > 1) oy = 0;
    if (!isfinite(ox) || fabs(ox) > 1) ox = 0;
    *dy = (y > n0 / 2 ? y - n0 : y) + oy;
    *dx = (x > n1 / 2 ? x - n1 : x) + ox;
}

typedef struct pc {
    int n0, n1;             /* rows, columns */
    float *a, *b;           /* real inputs, then the correlation surface */
    fftwf_complex *fa, *fb;
    fftwf_plan fwd, inv;
} pc;

static void pc_free(pc *p)
{
    fftwf_free(p->a);
    fftwf_free(p->b);
    fftwf_free(p->fa);
    fftwf_free(p->fb);
}

static tm_status pc_init(pc *p, int n0, int n1)
{
    memset(p, 0, sizeof *p);
    p->n0 = n0;
    p->n1 = n1;
    size_t nr = (size_t)n0 * n1, nc = (size_t)n0 * (n1 / 2 + 1);
    p->a = fftwf_malloc(sizeof(float) * nr);
    p->b = fftwf_malloc(sizeof(float) * nr);
    p->fa = fftwf_malloc(sizeof(fftwf_complex) * nc);
    p->fb = fftwf_malloc(sizeof(fftwf_complex) * nc);
    p->fwd = tm_fft_plan(TM_FFT_R2C, n0, n1);
    p->inv = tm_fft_plan(TM_FFT_C2R, n0, n1);
    if (!p->a || !p->b || !p->fa || !p->fb || !p->fwd || !p->inv) {
        pc_free(p);
        return TM_ERR_NOMEM;
    }
    return TM_OK;
}

/* Peaks of the phase correlation of p->a and p->b: shifts (dy, dx) with
 * b(x) ~ a(x - d), wrapped to (-n/2, n/2], sub-pixel, strongest first; the
 * surface is left in p->a. Returns how many (at most max). */
static int pc_run(pc *p, double *dy, double *dx, double *height, int max)
{
    int n0 = p->n0, n1 = p->n1, nc = n1 / 2 + 1;
    fftwf_execute_dft_r2c(p->fwd, p->a, p->fa);
    fftwf_execute_dft_r2c(p->fwd, p->b, p->fb);
    for (size_t i = 0; i < (size_t)n0 * nc; i++) {
        double re = p->fb[i][0] * p->fa[i][0] + p->fb[i][1] * p->fa[i][1];
        double im = p->fb[i][1] * p->fa[i][0] - p->fb[i][0] * p->fa[i][1];
        double mag = hypot(re, im);
        p->fa[i][0] = mag > 0 ? (float)(re / mag) : 0;
        p->fa[i][1] = mag > 0 ? (float)(im / mag) : 0;
    }
    fftwf_execute_dft_c2r(p->inv, p->fa, p->a);
    const float *c = p->a;
    int n = 0;
    for (int y = 0; y < n0; y++)
        for (int x = 0; x < n1; x++) {
            float v = c[(size_t)y * n1 + x];
            if (n == max && v <= height[max - 1]) continue;
            int peak = 1;
            for (int j = -2; j <= 2 && peak; j++)
                for (int i = -2; i <= 2 && peak; i++) {
                    if (!i && !j) continue;
                    float u = c[(size_t)((y + j + n0) % n0) * n1 + (x + i + n1) % n1];
                    peak = v > u || (v == u && (j > 0 || (j == 0 && i > 0)));
                }
            if (!peak) continue;
            int k = n < max ? n++ : max - 1;
            while (k > 0 && height[k - 1] < v) {
                height[k] = height[k - 1];
                dy[k] = dy[k - 1];
                dx[k] = dx[k - 1];
                k--;
            }
            peak_shift(c, n0, n1, y, x, &dy[k], &dx[k]);
            height[k] = v;
        }
    for (int k = 0; k < n; k++) height[k] /= (double)n0 * n1;
    return n;
}

/* A cosine taper at each border, 6% of the side wide: enough to keep the
 * borders' jumps out of the spectrum, narrow enough to leave the corners in
 * (a suspect cut from a corner must still find it). */
static double taper(double t, double n)
{
    double e = fmax(2.0, 0.06 * n);
    if (t < 0 || t > n - 1) return 0;
    double d = fmin(t, n - 1 - t);
    return d >= e ? 1 : 0.5 - 0.5 * cos(M_PI * d / e);
}

static double grey_mean(const grey *g)
{
    double s = 0;
    for (size_t i = 0; i < (size_t)g->w * g->h; i++) s += g->v[i];
    return s / ((double)g->w * g->h);
}

/* g, mean removed and tapered, at the top left of the n0 x n1 array dst. */
static void canvas_put(const grey *g, float *dst, int n0, int n1)
{
    double mu = grey_mean(g);
    memset(dst, 0, sizeof(float) * (size_t)n0 * n1);
    for (int y = 0; y < g->h && y < n0; y++) {
        double ty = taper(y, g->h);
        for (int x = 0; x < g->w && x < n1; x++)
            dst[(size_t)y * n1 + x] = (float)((g->v[(size_t)y * g->w + x] - mu) * ty * taper(x, g->w));
    }
}

/* The log-polar map (LP_RADII x LP_ANGLES) of the magnitude spectrum of g
 * on an n x n canvas: log(1 + |F|) at radii r0 .. r1 (log spaced) and angles
 * [0, 180), each radius' mean over the angles removed (the isotropic part
 * says nothing of a turn and little of a scale), tapered along the radius. */
static tm_status log_polar(pc *p, const grey *g, int n, double r0, double r1, float *lp)
{
    canvas_put(g, p->a, n, n);
    fftwf_execute_dft_r2c(p->fwd, p->a, p->fa);
    int nc = n / 2 + 1;
    float *mag = p->b; /* n x nc magnitudes */
    for (size_t i = 0; i < (size_t)n * nc; i++) mag[i] = (float)log1p(hypot(p->fa[i][0], p->fa[i][1]));
    double lr = log(r1 / r0) / (LP_RADII - 1);
    for (int i = 0; i < LP_RADII; i++) {
        double r = r0 * exp(lr * i), sum = 0;
        float *row = lp + (size_t)i * LP_ANGLES;
        for (int j = 0; j < LP_ANGLES; j++) {
            double th = M_PI * j / LP_ANGLES;
            double u = r * cos(th), v = r * sin(th); /* u: column frequency, v: row frequency */
            if (u < 0) {
                u = -u;
                v = -v;
            }
            int u0 = (int)floor(u), v0 = (int)floor(v);
            double fu = u - u0, fv = v - v0, acc = 0;
            for (int b = 0; b < 2; b++)
                for (int a = 0; a < 2; a++) {
                    int uu = u0 + a, vv = ((v0 + b) % n + n) % n;
                    if (uu >= nc) uu = nc - 1;
                    acc += (a ? fu : 1 - fu) * (b ? fv : 1 - fv) * mag[(size_t)vv * nc + uu];
                }
            row[j] = (float)acc;
            sum += acc;
        }
        double mu = sum / LP_ANGLES, w = 0.5 - 0.5 * cos(2 * M_PI * (i + 0.5) / LP_RADII);
        for (int j = 0; j < LP_ANGLES; j++) row[j] = (float)((row[j] - mu) * w);
    }
    return TM_OK;
}

/* Bilinear sample of g at (x, y), inside [0, w - 1) x [0, h - 1). */
static inline double bilinear(const grey *g, double x, double y)
{
    int x0 = (int)x, y0 = (int)y;
    double fx = x - x0, fy = y - y0;
    const float *p = g->v + (size_t)y0 * g->w + x0;
    return (1 - fy) * (p[0] + fx * (p[1] - p[0])) + fy * (p[g->w] + fx * (p[g->w + 1] - p[g->w]));
}

/* Catmull-Rom weights of the four taps around fraction t (the kernel of
 * tm_interp's bicubic). */
static inline void cubic_weights(double t, double *w)
{
    double t2 = t * t, t3 = t2 * t;
    w[0] = 0.5 * (-t3 + 2 * t2 - t);
    w[1] = 0.5 * (3 * t3 - 5 * t2 + 2);
    w[2] = 0.5 * (-3 * t3 + 4 * t2 + t);
    w[3] = 0.5 * (t3 - t2);
}

/* ---- the cost: 1 - NCC of suspect samples against the original ---- */

typedef struct fit {
    const grey *o;
    const float *sx, *sy, *sv; /* suspect sample positions and values */
    size_t n;
} fit;

/* NCC of the samples with the original sampled through m (suspect ->
 * original, bilinear), over those that land inside; *overlap the share. */
static double fit_ncc(const fit *f, const double *m, double *overlap)
{
    double s1 = 0, s2 = 0, v1 = 0, v2 = 0, sv = 0;
    size_t k = 0;
    const int w = f->o->w, h = f->o->h;
    for (size_t i = 0; i < f->n; i++) {
        double x, y;
        aff_apply(m, f->sx[i], f->sy[i], &x, &y);
        if (!(x >= 0 && y >= 0 && x < w - 1 && y < h - 1)) continue;
        double v = bilinear(f->o, x, y), s = f->sv[i];
        s1 += s;
        s2 += s * s;
        v1 += v;
        v2 += v * v;
        sv += s * v;
        k++;
    }
    *overlap = f->n ? (double)k / f->n : 0;
    if (k < 64) return 0;
    double cs = s2 - s1 * s1 / k, cv = v2 - v1 * v1 / k, c = sv - s1 * v1 / k;
    return cs > 0 && cv > 0 ? c / sqrt(cs * cv) : 0;
}

/* The simplex works on a map written about the suspect's centre (cx, cy),
 * its linear part times the suspect's extent: all six numbers are then
 * displacements in original pixels, of comparable sensitivity. */
typedef struct polish_ctx {
    const fit *f;
    double cx, cy, ext;
} polish_ctx;

static void from_vars(const polish_ctx *c, const double *v, double *m)
{
    m[1] = v[1] / c->ext, m[2] = v[2] / c->ext, m[4] = v[4] / c->ext, m[5] = v[5] / c->ext;
    m[0] = v[0] - m[1] * c->cx - m[2] * c->cy;
    m[3] = v[3] - m[4] * c->cx - m[5] * c->cy;
}

static void to_vars(const polish_ctx *c, const double *m, double *v)
{
    v[0] = m[0] + m[1] * c->cx + m[2] * c->cy;
    v[3] = m[3] + m[4] * c->cx + m[5] * c->cy;
    v[1] = m[1] * c->ext, v[2] = m[2] * c->ext, v[4] = m[4] * c->ext, v[5] = m[5] * c->ext;
}

/* Whether m's linear part is a plausible copy's: the scale within the
 * searched range and the stretch or shear at most MAX_ANISO (the ratio of
 * its singular values). Without this a fit can squeeze the whole suspect
 * onto a smooth patch of the original, which correlates with anything. */
static int plausible(const double *m)
{
    double t = m[1] * m[1] + m[2] * m[2] + m[4] * m[4] + m[5] * m[5], det = fabs(m[1] * m[5] - m[2] * m[4]);
    double disc = sqrt(fmax(0, t * t - 4 * det * det));
    double s1 = sqrt(0.5 * (t + disc)), s2 = sqrt(fmax(0, 0.5 * (t - disc))), g = sqrt(det);
    return s2 > 0 && s1 <= MAX_ANISO * s2 && g >= 1 / (SWEEP_MAX * 1.25) && g <= 1.25 / SWEEP_MIN;
}

static double fit_cost(const gsl_vector *x, void *params)
{
    const polish_ctx *c = params;
    double v[6], m[6], ov;
    for (int i = 0; i < 6; i++) v[i] = gsl_vector_get(x, i);
    from_vars(c, v, m);
    if (!plausible(m)) return 2;
    double r = fit_ncc(c->f, m, &ov);
    /* sliding off the original would raise the NCC of what is left */
    return 1 - r * fmin(1.0, ov / FOUND_OVERLAP);
}

/* s at (x, y), smoothed by the binomial [1 2 1] / 4 along both axes
 * (borders clamped). */
static float soft_at(const grey *s, int x, int y)
{
    float acc = 0;
    static const float w[3] = {0.25f, 0.5f, 0.25f};
    for (int j = -1; j <= 1; j++) {
        int yy = y + j < 0 ? 0 : y + j >= s->h ? s->h - 1 : y + j;
        const float *r = s->v + (size_t)yy * s->w;
        float row = 0;
        for (int i = -1; i <= 1; i++) {
            int xx = x + i < 0 ? 0 : x + i >= s->w ? s->w - 1 : x + i;
            row += w[i + 1] * r[xx];
        }
        acc += w[j + 1] * row;
    }
    return acc;
}

/* Samples of s on a grid of at most max points (positions in s's own
 * pixels), softened when soft is set. At the fine level both sides are
 * softened (the original's level comes so): bilinear sampling smooths the
 * original by an amount that depends on the sub-pixel offset, and against a
 * suspect that compression has smoothed that would pull the fit towards
 * half-pixel offsets; smoothing both first makes the extra amount small
 * against what they share. */
static tm_status fit_init(fit *f, const grey *o, const grey *s, size_t max, int soft)
{
    memset(f, 0, sizeof *f);
    f->o = o;
    int step = 1;
    while ((size_t)(s->w / step) * (size_t)(s->h / step) > max) step++;
    size_t n = (size_t)((s->w + step - 1) / step) * (size_t)((s->h + step - 1) / step);
    float *buf = malloc(sizeof(float) * 3 * n);
    if (!buf) return TM_ERR_NOMEM;
    f->sx = buf;
    f->sy = buf + n;
    f->sv = buf + 2 * n;
    size_t k = 0;
    for (int y = step / 2; y < s->h; y += step)
        for (int x = step / 2; x < s->w; x += step) {
            buf[k] = (float)x;
            buf[n + k] = (float)y;
            buf[2 * n + k] = soft ? soft_at(s, x, y) : s->v[(size_t)y * s->w + x];
            k++;
        }
    f->n = k;
    return TM_OK;
}

static void fit_free(fit *f)
{
    free((void *)f->sx);
}

/* Nelder-Mead polish of m (suspect -> original) on f's cost, from steps of
 * px suspect pixels down to a hundredth of that, restarted once from where
 * it stopped (a simplex can collapse early). Returns the NCC reached. */
static tm_status polish(const fit *f, int sw, int sh, double px, double *m, double *ncc, double *overlap)
{
    polish_ctx c = {f, 0.5 * (sw - 1), 0.5 * (sh - 1), fmax(sw, sh)};
    gsl_multimin_function fn = {fit_cost, 6, &c};
    gsl_vector *x = gsl_vector_alloc(6), *step = gsl_vector_alloc(6);
    gsl_multimin_fminimizer *nm = gsl_multimin_fminimizer_alloc(gsl_multimin_fminimizer_nmsimplex2, 6);
    tm_status st = TM_ERR_NOMEM;
    if (!x || !step || !nm) goto out;
    double scale = sqrt(fabs(m[1] * m[5] - m[2] * m[4])) * px, v[6];
    double best = fit_ncc(f, m, overlap);
    for (int pass = 0; pass < 2; pass++) {
        to_vars(&c, m, v);
        for (int i = 0; i < 6; i++) {
            gsl_vector_set(x, i, v[i]);
            gsl_vector_set(step, i, pass ? 0.25 * scale : scale);
        }
        st = TM_ERR_INTERNAL;
        if (gsl_multimin_fminimizer_set(nm, &fn, x, step) != GSL_SUCCESS) goto out;
        for (int it = 0; it < 800; it++) {
            int rc = gsl_multimin_fminimizer_iterate(nm);
            if (rc == GSL_ENOPROG) break;
            if (rc != GSL_SUCCESS) goto out;
            if (gsl_multimin_test_size(gsl_multimin_fminimizer_size(nm), 0.01 * scale) == GSL_SUCCESS) break;
        }
        const gsl_vector *b = gsl_multimin_fminimizer_x(nm);
        double t[6], ov;
        for (int i = 0; i < 6; i++) v[i] = gsl_vector_get(b, i);
        from_vars(&c, v, t);
        double r = fit_ncc(f, t, &ov);
        if (r >= best) {
            memcpy(m, t, sizeof t);
            best = r;
            *overlap = ov;
        }
    }
    *ncc = best;
    st = TM_OK;
out:
    gsl_vector_free(x);
    gsl_vector_free(step);
    if (nm) gsl_multimin_fminimizer_free(nm);
    return st;
}

/* ---- the fine polish: Gauss-Newton on the pixels ---- */

/* The least-squares form of the same fit, for the fine level: the suspect
 * samples s_i against gain * o(M x_i) + bias, M in polish_ctx's variables,
 * so the six map numbers and the two tone numbers come out together. Where
 * a sample lands off the original its residual is 0. At the optimum over
 * gain and bias the sum of squares is (1 - NCC^2) times the suspect's
 * variance, so this finds the map fit_ncc would (there with bilinear
 * samples, here bicubic). */
typedef struct lm_ctx {
    polish_ctx c;
} lm_ctx;


/* Bicubic (Catmull-Rom) sample of g at (x, y) and its gradient; 0 where
 * the taps fall outside. The bilinear sample the coarse fit uses has a
 * derivative that jumps at every pixel boundary (where an unattacked copy's
 * samples all land), which stalls Gauss-Newton; Catmull-Rom's is
 * continuous. */
static int cubic_grad(const grey *g, double x, double y, double *v, double *dx, double *dy)
{
    if (!(x >= 1 && y >= 1 && x < g->w - 2 && y < g->h - 2)) return 0;
    int x0 = (int)x, y0 = (int)y;
    double tx = x - x0, ty = y - y0, wx[4], wy[4], dwx[4], dwy[4];
    cubic_weights(tx, wx);
    cubic_weights(ty, wy);
    double tx2 = tx * tx, ty2 = ty * ty;
    dwx[0] = 0.5 * (-3 * tx2 + 4 * tx - 1), dwx[1] = 0.5 * (9 * tx2 - 10 * tx);
    dwx[2] = 0.5 * (-9 * tx2 + 8 * tx + 1), dwx[3] = 0.5 * (3 * tx2 - 2 * tx);
    dwy[0] = 0.5 * (-3 * ty2 + 4 * ty - 1), dwy[1] = 0.5 * (9 * ty2 - 10 * ty);
    dwy[2] = 0.5 * (-9 * ty2 + 8 * ty + 1), dwy[3] = 0.5 * (3 * ty2 - 2 * ty);
    const float *r = g->v + (size_t)(y0 - 1) * g->w + x0 - 1;
    double val = 0, gx = 0, gy = 0;
    for (int j = 0; j < 4; j++, r += g->w) {
        double a = wx[0] * r[0] + wx[1] * r[1] + wx[2] * r[2] + wx[3] * r[3];
        double d = dwx[0] * r[0] + dwx[1] * r[1] + dwx[2] * r[2] + dwx[3] * r[3];
        val += wy[j] * a;
        gx += wy[j] * d;
        gy += dwy[j] * a;
    }
    *v = val, *dx = gx, *dy = gy;
    return 1;
}

/* Sample i's residual and Jacobian row under map m, gain and bias; 0 when
 * it lands off the original. */
static int lm_row(const lm_ctx *l, const double *m, double gain, double bias, size_t i, double *res, double *row)
{
    const fit *f = l->c.f;
    double px, py, o, gx, gy;
    aff_apply(m, f->sx[i], f->sy[i], &px, &py);
    if (!cubic_grad(f->o, px, py, &o, &gx, &gy)) return 0;
    *res = gain * o + bias - f->sv[i];
    if (row) {
        double ux = (f->sx[i] - l->c.cx) / l->c.ext, uy = (f->sy[i] - l->c.cy) / l->c.ext;
        gx *= gain, gy *= gain;
        row[0] = gx, row[1] = gx * ux, row[2] = gx * uy;
        row[3] = gy, row[4] = gy * ux, row[5] = gy * uy;
        row[6] = o, row[7] = 1;
    }
    return 1;
}

static void lm_unpack(const lm_ctx *l, const gsl_vector *x, double *m, double *gain, double *bias)
{
    double v[6];
    for (int i = 0; i < 6; i++) v[i] = gsl_vector_get(x, i);
    from_vars(&l->c, v, m);
    *gain = gsl_vector_get(x, 6);
    *bias = gsl_vector_get(x, 7);
}

static int lm_f(const gsl_vector *x, void *params, gsl_vector *fv)
{
    const lm_ctx *l = params;
    double m[6], gain, bias;
    lm_unpack(l, x, m, &gain, &bias);
    for (size_t i = 0; i < l->c.f->n; i++) {
        double r = 0;
        lm_row(l, m, gain, bias, i, &r, NULL);
        gsl_vector_set(fv, i, r);
    }
    return GSL_SUCCESS;
}

/* GSL's large-problem interface: v = J u or J^T u, and J^T J (lower
 * triangle) when asked, one sample at a time: the n x 8 Jacobian is never
 * stored. */
static int lm_df(CBLAS_TRANSPOSE_t trans, const gsl_vector *x, const gsl_vector *u, void *params, gsl_vector *v,
                 gsl_matrix *jtj)
{
    const lm_ctx *l = params;
    double m[6], gain, bias, acc[8][8] = {{0}}, jt[8] = {0};
    lm_unpack(l, x, m, &gain, &bias);
    for (size_t i = 0; i < l->c.f->n; i++) {
        double r, row[8];
        int in = lm_row(l, m, gain, bias, i, &r, row);
        if (trans == CblasNoTrans && v) {
            double d = 0;
            if (in)
                for (int k = 0; k < 8; k++) d += row[k] * gsl_vector_get(u, k);
            gsl_vector_set(v, i, d);
        }
        if (!in) continue;
        if (trans == CblasTrans && v) {
            double ui = gsl_vector_get(u, i);
            for (int k = 0; k < 8; k++) jt[k] += row[k] * ui;
        }
        if (jtj)
            for (int a = 0; a < 8; a++)
                for (int b = 0; b <= a; b++) acc[a][b] += row[a] * row[b];
    }
    if (trans == CblasTrans && v)
        for (int k = 0; k < 8; k++) gsl_vector_set(v, k, jt[k]);
    if (jtj)
        for (int a = 0; a < 8; a++)
            for (int b = 0; b <= a; b++) gsl_matrix_set(jtj, a, b, acc[a][b]);
    return GSL_SUCCESS;
}

/* Levenberg-Marquardt (GSL's trust-region solver) polish of m (suspect ->
 * original) on f's samples; kept only when the NCC improves and the map
 * stays plausible. */
static tm_status polish_lm(const fit *f, int sw, int sh, double *m, double *ncc, double *overlap)
{
    lm_ctx l = {{f, 0.5 * (sw - 1), 0.5 * (sh - 1), fmax(sw, sh)}};
    double best = fit_ncc(f, m, overlap);
    *ncc = best;
    if (f->n < 64) return TM_OK;
    /* the starting gain and bias: the regression of the samples on the
     * original through m */
    double s1 = 0, s2 = 0, o1 = 0, o2 = 0, so = 0, k = 0;
    for (size_t i = 0; i < f->n; i++) {
        double px, py, o, gx, gy;
        aff_apply(m, f->sx[i], f->sy[i], &px, &py);
        if (!cubic_grad(f->o, px, py, &o, &gx, &gy)) continue;
        s1 += f->sv[i], s2 += (double)f->sv[i] * f->sv[i], o1 += o, o2 += o * o, so += o * f->sv[i], k++;
    }
    if (k < 64 || !(o2 - o1 * o1 / k > 0)) return TM_OK;
    double gain = (so - s1 * o1 / k) / (o2 - o1 * o1 / k), bias = (s1 - gain * o1) / k;

    gsl_multilarge_nlinear_parameters prm = gsl_multilarge_nlinear_default_parameters();
    prm.trs = gsl_multilarge_nlinear_trs_lm;
    prm.solver = gsl_multilarge_nlinear_solver_cholesky;
    gsl_multilarge_nlinear_workspace *w = gsl_multilarge_nlinear_alloc(gsl_multilarge_nlinear_trust, &prm, f->n, 8);
    gsl_vector *x = gsl_vector_alloc(8);
    tm_status st = TM_ERR_NOMEM;
    if (!w || !x) goto out;
    double v[6];
    to_vars(&l.c, m, v);
    for (int i = 0; i < 6; i++) gsl_vector_set(x, i, v[i]);
    gsl_vector_set(x, 6, gain);
    gsl_vector_set(x, 7, bias);
    gsl_multilarge_nlinear_fdf fdf = {.f = lm_f, .df = lm_df, .fvv = NULL, .n = f->n, .p = 8, .params = &l};
    st = TM_ERR_INTERNAL;
    if (gsl_multilarge_nlinear_init(x, &fdf, w) != GSL_SUCCESS) goto out;
    int info = 0;
    /* steps of a hundredth of a pixel (the variables are hundreds of
     * pixels), no progress, or a dozen steps end it: from the coarse fit
     * the first few steps take it there */
    int rc = gsl_multilarge_nlinear_driver(12, 1e-5, 1e-10, 1e-10, NULL, NULL, &info, w);
    st = TM_OK;
    if (rc != GSL_SUCCESS && rc != GSL_EMAXITER && rc != GSL_ENOPROG) goto out;
    const gsl_vector *b = gsl_multilarge_nlinear_position(w);
    double t[6], ov;
    for (int i = 0; i < 6; i++) v[i] = gsl_vector_get(b, i);
    from_vars(&l.c, v, t);
    double r = fit_ncc(f, t, &ov);
    if (plausible(t) && r >= best && ov >= fmin(*overlap, FOUND_OVERLAP)) {
        memcpy(m, t, sizeof t);
        *ncc = r;
        *overlap = ov;
    }
out:
    gsl_vector_free(x);
    if (w) gsl_multilarge_nlinear_free(w);
    return st;
}

/* ---- coarse search ---- */

/* ---- masked normalised cross-correlation over all shifts ---- */

/* A template (the suspect brought back into the original's frame) is
 * placed on an n x n canvas with its mask; its NCC with the original at
 * every shift d (template(x) against o(x - d), over the template's mask)
 * comes from four FFT correlations (Padfield's masked NCC). Phase
 * correlation would whiten the spectrum, which lets a small template's noise
 * win; the NCC is what the candidates are judged by anyway. */
typedef struct matcher {
    int n, nc;
    float *t, *m;                  /* template and mask (real n x n) */
    float *c[4];                   /* the correlations */
    fftwf_complex *fo, *fo2, *fso; /* the original's spectra: values, squares, support */
    fftwf_complex *ft, *fm, *prod;
    fftwf_plan fwd, inv;
} matcher;

static void matcher_free(matcher *q)
{
    fftwf_free(q->t);
    fftwf_free(q->m);
    for (int i = 0; i < 4; i++) fftwf_free(q->c[i]);
    fftwf_free(q->fo);
    fftwf_free(q->fo2);
    fftwf_free(q->fso);
    fftwf_free(q->ft);
    fftwf_free(q->fm);
    fftwf_free(q->prod);
}

static tm_status matcher_init(matcher *q, const grey *o, int n)
{
    memset(q, 0, sizeof *q);
    q->n = n;
    q->nc = n / 2 + 1;
    size_t nr = (size_t)n * n, nc = (size_t)n * q->nc;
    q->t = fftwf_malloc(sizeof(float) * nr);
    q->m = fftwf_malloc(sizeof(float) * nr);
    int ok = q->t && q->m;
    for (int i = 0; i < 4; i++) ok &= (q->c[i] = fftwf_malloc(sizeof(float) * nr)) != NULL;
    fftwf_complex **spec[6] = {&q->fo, &q->fo2, &q->fso, &q->ft, &q->fm, &q->prod};
    for (int i = 0; i < 6; i++) ok &= (*spec[i] = fftwf_malloc(sizeof(fftwf_complex) * nc)) != NULL;
    q->fwd = tm_fft_plan(TM_FFT_R2C, n, n);
    q->inv = tm_fft_plan(TM_FFT_C2R, n, n);
    if (!ok || !q->fwd || !q->inv) {
        matcher_free(q);
        return TM_ERR_NOMEM;
    }
    /* the original, mean removed (smaller sums, less rounding), its squares
     * and its support, each at the canvas' top left */
    double mu = grey_mean(o);
    for (int k = 0; k < 3; k++) {
        memset(q->t, 0, sizeof(float) * nr);
        for (int y = 0; y < o->h && y < n; y++)
            for (int x = 0; x < o->w && x < n; x++) {
                double v = o->v[(size_t)y * o->w + x] - mu;
                q->t[(size_t)y * n + x] = (float)(k == 0 ? v : k == 1 ? v * v : 1);
            }
        fftwf_execute_dft_r2c(q->fwd, q->t, k == 0 ? q->fo : k == 1 ? q->fo2 : q->fso);
    }
    return TM_OK;
}

/* out = correlation of the spectrum a with the original's spectrum b:
 * sum_x a(x) b(x - d), for every d. */
static void matcher_corr(matcher *q, const fftwf_complex *a, const fftwf_complex *b, float *out)
{
    size_t nc = (size_t)q->n * q->nc;
    for (size_t i = 0; i < nc; i++) {
        q->prod[i][0] = a[i][0] * b[i][0] + a[i][1] * b[i][1];
        q->prod[i][1] = a[i][1] * b[i][0] - a[i][0] * b[i][1];
    }
    fftwf_execute_dft_c2r(q->inv, q->prod, out);
    float norm = 1.0f / ((float)q->n * q->n);
    for (size_t i = 0; i < (size_t)q->n * q->n; i++) out[i] *= norm;
}

/* The shift (dx, dy) with the best NCC of the template in q->t / q->m,
 * among those where at least FOUND_OVERLAP of the mask lies on the
 * original, wrapped to (-n/2, n/2], sub-pixel. 0 when none qualifies. */
static int matcher_run(matcher *q, double *dx, double *dy)
{
    int n = q->n;
    double nm = 0, st = 0, stt = 0;
    for (size_t i = 0; i < (size_t)n * n; i++) {
        nm += q->m[i];
        st += q->t[i];
        stt += (double)q->t[i] * q->t[i];
    }
    if (nm < 16) return 0;
    double vt = stt - st * st / nm;
    if (!(vt > 0)) return 0;
    fftwf_execute_dft_r2c(q->fwd, q->t, q->ft);
    fftwf_execute_dft_r2c(q->fwd, q->m, q->fm);
    matcher_corr(q, q->ft, q->fo, q->c[0]);  /* sum m t o */
    matcher_corr(q, q->fm, q->fo, q->c[1]);  /* sum m o */
    matcher_corr(q, q->fm, q->fo2, q->c[2]); /* sum m o^2 */
    matcher_corr(q, q->fm, q->fso, q->c[3]); /* sum m (o's support) */
    float *ncc = q->t; /* the template is no longer needed */
    int bi = -1;
    for (size_t i = 0; i < (size_t)n * n; i++) {
        double s1 = q->c[0][i], s2 = q->c[1][i], s3 = q->c[2][i], cover = q->c[3][i];
        double vo = s3 - s2 * s2 / nm, r = 0;
        if (cover >= FOUND_OVERLAP * nm && vo > 1e-6 * nm) r = (s1 - st * s2 / nm) / sqrt(vt * vo);
        ncc[i] = (float)r;
        if (r > 0 && (bi < 0 || r > ncc[bi])) bi = (int)i;
    }
    if (bi < 0) return 0;
    peak_shift(ncc, n, n, bi / n, bi % n, dy, dx);
    return 1;
}

/* The suspect s brought back by scale sc and turn th (radians) into the
 * original's n x n canvas frame, centred: t(x) = s(M x + c) where it
 * reaches, M the similarity, with the mask m; fills c. */
static void back_warp(const grey *s, double sc, double th, matcher *q, double *c)
{
    int n = q->n;
    double m1 = sc * cos(th), m2 = -sc * sin(th), m4 = sc * sin(th), m5 = sc * cos(th);
    double cx = 0.5 * (n - 1), cy = 0.5 * (n - 1);
    c[0] = 0.5 * (s->w - 1) - (m1 * cx + m2 * cy);
    c[1] = 0.5 * (s->h - 1) - (m4 * cx + m5 * cy);
    double mu = grey_mean(s);
    for (int y = 0; y < n; y++)
        for (int x = 0; x < n; x++) {
            double u = c[0] + m1 * x + m2 * y, v = c[1] + m4 * x + m5 * y;
            int in = u >= 0 && v >= 0 && u < s->w - 1 && v < s->h - 1;
            q->t[(size_t)y * n + x] = in ? (float)(bilinear(s, u, v) - mu) : 0;
            q->m[(size_t)y * n + x] = (float)in;
        }
}

typedef struct cand {
    double m[6]; /* suspect -> original, coarse pixels */
    double ncc, overlap;
} cand;

/* The search's state: the matcher on the original, samples of the suspect,
 * and the best candidate so far. */
typedef struct search {
    const grey *o, *s;
    matcher q;
    fit f;
    cand best;
} search;

/* Tries scale sc and turn th (radians): the suspect brought back by them,
 * the shift by masked NCC, the candidate scored on the suspect's samples. */
static void try_similarity(search *z, double sc, double th)
{
    double c[2], dx, dy;
    back_warp(z->s, sc, th, &z->q, c);
    if (!matcher_run(&z->q, &dx, &dy)) return;
    /* t(x) = o(x - d) and t(x) = s(M x + c): s(y) = o(M^-1 (y - c) - d) */
    double mm[6] = {c[0], sc * cos(th), -sc * sin(th), c[1], sc * sin(th), sc * cos(th)}, inv[6];
    if (aff_invert(mm, inv)) return;
    inv[0] -= dx;
    inv[3] -= dy;
    cand cd;
    memcpy(cd.m, inv, sizeof inv);
    cd.ncc = fit_ncc(&z->f, cd.m, &cd.overlap);
    if (cd.overlap < FOUND_OVERLAP) cd.ncc *= cd.overlap / FOUND_OVERLAP;
    if (cd.ncc > z->best.ncc) z->best = cd;
}

/* The sweep of scales at the quarter turns, at half the coarse resolution
 * or less (the original at most COARSE_SIDE / 2 a side):
 * candidates are told apart by their overlap's correlation, which needs no
 * more. The winner is carried back to z's frame and kept if better. */
static tm_status sweep_scales(search *z)
{
    grey o2 = {0}, s2 = {0};
    search h = {.best = {.ncc = -2}};
    tm_status st;
    int f = 2, lo = z->o->w > z->o->h ? z->o->w : z->o->h;
    while (lo / f > COARSE_SIDE / 2) f *= 2;
    int w2 = (z->o->w + f - 1) / f, h2 = (z->o->h + f - 1) / f, sw2 = (z->s->w + f - 1) / f, sh2 = (z->s->h + f - 1) / f;
    if ((st = shrink(z->o->v, z->o->w, z->o->h, w2, h2, &o2)) != TM_OK) goto out;
    if ((st = shrink(z->s->v, z->s->w, z->s->h, sw2, sh2, &s2)) != TM_OK) goto out;
    h.o = &o2;
    h.s = &s2;
    if ((st = matcher_init(&h.q, &o2, tm_fft_good_size(w2 > h2 ? w2 : h2))) != TM_OK || (st = fit_init(&h.f, &o2, &s2, COARSE_SAMPLES, 0)) != TM_OK)
        goto out;
    for (double sc = SWEEP_MIN; sc <= SWEEP_MAX && h.best.ncc < FOUND_NCC; sc *= SWEEP_STEP)
        for (int quarter = 0; quarter < 4 && h.best.ncc < FOUND_NCC; quarter++) try_similarity(&h, sc, quarter * M_PI / 2);
    if (h.best.ncc > -2) {
        double up[6], down[6], t[6];
        aff_unshrink((double)z->o->w / w2, (double)z->o->h / h2, up); /* half original -> original */
        aff_unshrink((double)sw2 / z->s->w, (double)sh2 / z->s->h, down); /* suspect -> half suspect */
        cand cd;
        aff_compose(h.best.m, down, t);
        aff_compose(up, t, cd.m);
        cd.ncc = fit_ncc(&z->f, cd.m, &cd.overlap);
        if (cd.overlap < FOUND_OVERLAP) cd.ncc *= cd.overlap / FOUND_OVERLAP;
        if (cd.ncc > z->best.ncc) z->best = cd;
    }
    st = TM_OK;
out:
    matcher_free(&h.q);
    fit_free(&h.f);
    grey_free(&o2);
    grey_free(&s2);
    return st;
}

/* The best coarse candidate for s against o (both shrunk alike). First no
 * change at all, then the Fourier-Mellin peaks, strongest first, each turn
 * also plus 180 degrees (the first fit of SURE_NCC ends it); when none fits and
 * sweep is set, a sweep of scales at the quarter turns (an enlarged crop
 * shares too little of the original's spectrum for Fourier-Mellin). */
static tm_status coarse(const grey *o, const grey *s, int sweep, cand *best)
{
    search z = {.o = o, .s = s, .best = {.ncc = -2}};
    int n = tm_fft_good_size(o->w > o->h ? o->w : o->h);
    pc p = {0}, q = {0};
    float *lpo = malloc(sizeof(float) * LP_RADII * LP_ANGLES), *lps = malloc(sizeof(float) * LP_RADII * LP_ANGLES);
    tm_status st = TM_ERR_NOMEM;
    if (!lpo || !lps) goto out;
    if ((st = matcher_init(&z.q, o, n)) != TM_OK || (st = fit_init(&z.f, o, s, COARSE_SAMPLES, 0)) != TM_OK) goto out;
    /* no change of scale or turn first: a copy cropped or only
     * recompressed fits at once */
    try_similarity(&z, 1, 0);
    if (z.best.ncc >= SURE_NCC) {
        *best = z.best;
        goto out;
    }
    if ((st = pc_init(&p, n, n)) != TM_OK || (st = pc_init(&q, LP_RADII, LP_ANGLES)) != TM_OK) goto out;
    double r0 = 3, r1 = 0.45 * n;
    log_polar(&p, o, n, r0, r1, lpo);
    log_polar(&p, s, n, r0, r1, lps);
    memcpy(q.a, lpo, sizeof(float) * LP_RADII * LP_ANGLES);
    memcpy(q.b, lps, sizeof(float) * LP_RADII * LP_ANGLES);
    double dr[FMT_PEAKS], da[FMT_PEAKS], ht[FMT_PEAKS];
    int np = pc_run(&q, dr, da, ht, FMT_PEAKS);
    double lr = log(r1 / r0) / (LP_RADII - 1);
    for (int k = 0; k < np && z.best.ncc < SURE_NCC; k++) {
        /* |F_s|(rho, phi) = |F_o|(rho + ln sc, phi - th): sc = exp(-d_rho), th = d_phi */
        double sc = exp(-dr[k] * lr), th = M_PI * da[k] / LP_ANGLES;
        if (sc < SWEEP_MIN || sc > SWEEP_MAX) continue;
        try_similarity(&z, sc, th);
        if (z.best.ncc < SURE_NCC) try_similarity(&z, sc, th + M_PI);
    }
    if (sweep && z.best.ncc < FOUND_NCC && (st = sweep_scales(&z)) != TM_OK) goto out;
    *best = z.best;
    st = TM_OK;
out:
    pc_free(&p);
    pc_free(&q);
    matcher_free(&z.q);
    fit_free(&z.f);
    free(lpo);
    free(lps);
    return st;
}

/* s mirrored left-right. */
static tm_status mirror(const grey *s, grey *out)
{
    out->w = s->w;
    out->h = s->h;
    out->v = malloc(sizeof(float) * (size_t)s->w * s->h);
    if (!out->v) return TM_ERR_NOMEM;
    for (int y = 0; y < s->h; y++)
        for (int x = 0; x < s->w; x++) out->v[(size_t)y * s->w + x] = s->v[(size_t)y * s->w + s->w - 1 - x];
    return TM_OK;
}

static int fit_side(int w, int h, int side, int *nw, int *nh)
{
    double k = fmax(1.0, (double)(w > h ? w : h) / side);
    *nw = (int)fmax(1, lround(w / k));
    *nh = (int)fmax(1, lround(h / k));
    return k > 1;
}

tm_status tm_reg_suspect_init(const float *y, int w, int h, tm_reg_suspect *out)
{
    memset(out, 0, sizeof *out);
    if (!y || w < 8 || h < 8) return TM_ERR_ARG;
    out->full = tm_plane_float(y, w, h);
    /* box means down to the fine level's side, or just above it; one more
     * when that alone lands close enough below it (cheaper than Lanczos) */
    const int side = TM_REG_FINE_SIDE, most = TM_REG_FINE_SIDE * 11 / 10;
    int lo = w > h ? w : h, b = lo / side > 1 ? lo / side : 1;
    if (lo / b > most && lo / (b + 1) >= side * 85 / 100) b++;
    out->box_b = b;
    tm_status st = TM_OK;
    tm_level base = tm_level_view(y, w, h);
    if (b > 1) {
        if ((st = tm_level_box(&out->full, b, &out->box)) != TM_OK) return st;
        base = out->box;
        base.owned = 0;
    }
    if ((base.w > base.h ? base.w : base.h) > most) st = tm_level_fit(&base, side, &out->fine);
    else out->fine = base; /* borrowed */
    if (st != TM_OK) tm_reg_suspect_free(out);
    return st;
}

void tm_reg_suspect_free(tm_reg_suspect *s)
{
    tm_level_free(&s->fine);
    tm_level_free(&s->box);
}

static grey grey_of(const tm_level *l)
{
    return (grey){.v = l->v, .w = l->w, .h = l->h};
}

/* m (level a's pixels -> level b's) as a map of a's full-size pixels to
 * b's: to_b_full = B m A^-1. Returns -1 when a's map cannot be inverted. */
static int aff_level_to_full(const tm_level *a, const tm_level *b, const double *m, double *out)
{
    double la[6], lb[6], ia[6], t[6];
    tm_level_to_full(a, la);
    tm_level_to_full(b, lb);
    if (aff_invert(la, ia)) return -1;
    aff_compose(m, ia, t);
    aff_compose(lb, t, out);
    return 0;
}

/* The inverse: a full-size map as one of level a's pixels to level b's. */
static int aff_full_to_level(const tm_level *a, const tm_level *b, const double *full, double *out)
{
    double la[6], lb[6], ib[6], t[6];
    tm_level_to_full(a, la);
    tm_level_to_full(b, lb);
    if (aff_invert(lb, ib)) return -1;
    aff_compose(full, la, t);
    aff_compose(ib, t, out);
    return 0;
}

tm_status tm_register(const tm_original *o, const tm_reg_suspect *s, tm_registration *out)
{
    if (!o || !s || !out) return TM_ERR_ARG;
    memset(out, 0, sizeof *out);
    int ow = o->width, oh = o->height, sw = s->full.w, sh = s->full.h;
    if (ow < 8 || oh < 8 || sw < 8 || sh < 8) return TM_ERR_ARG;
    tm_level lco = {0}, lcs = {0}, lfb = {0};
    grey cm = {0};
    fit f = {0};
    tm_status st;
    /* coarse: the original to COARSE_SIDE, the suspect by the same factor;
     * less shrinking when that would leave a small suspect too few pixels
     * (a screenshot of a large photo), the original then up to twice
     * COARSE_SIDE; both made from the fine levels, which are larger */
    int cow, coh, lo = ow > oh ? ow : oh, ls = sw > sh ? sw : sh;
    double k = fmax(1.0, fmin((double)lo / COARSE_SIDE, (double)ls / COARSE_SUSPECT));
    k = fmax(k, (double)lo / (2 * COARSE_SIDE));
    cow = (int)fmax(8, lround(ow / k));
    coh = (int)fmax(8, lround(oh / k));
    k = (double)ow / cow;
    int csw = (int)fmax(8, lround(sw / k)), csh = (int)fmax(8, lround(sh / k));
    int tw, th;
    if (fit_side(csw, csh, COARSE_SIDE * 2, &tw, &th)) csw = tw, csh = th; /* enlarged suspects */
    if (csw > s->fine.w || csh > s->fine.h) csw = s->fine.w, csh = s->fine.h;
    if ((st = tm_level_resize(&o->fine, cow < o->fine.w ? cow : o->fine.w, coh < o->fine.h ? coh : o->fine.h, &lco)) != TM_OK)
        goto out;
    if ((st = tm_level_resize(&s->fine, csw, csh, &lcs)) != TM_OK) goto out;
    grey co = grey_of(&lco), cs = grey_of(&lcs);
    cand best, alt;
    if ((st = coarse(&co, &cs, 1, &best)) != TM_OK) goto out;
    int flip = 0;
    if (best.ncc < FOUND_NCC) {
        if ((st = mirror(&cs, &cm)) != TM_OK || (st = coarse(&co, &cm, 0, &alt)) != TM_OK) goto out;
        if (alt.ncc > best.ncc) {
            /* mirrored coordinates: x_m = w - 1 - x */
            double fl[6] = {cs.w - 1.0, -1, 0, 0, 0, 1};
            aff_compose(alt.m, fl, best.m);
            best.ncc = alt.ncc;
            flip = 1;
        }
    }
    double m[6], full[6], ncc, ov;
    memcpy(m, best.m, sizeof m);
    if ((st = fit_init(&f, &co, &cs, COARSE_SAMPLES, 0)) != TM_OK) goto out;
    if ((st = polish(&f, cs.w, cs.h, 1.0, m, &ncc, &ov)) != TM_OK) goto out;
    fit_free(&f);
    memset(&f, 0, sizeof f);
    /* fine: the map carried over to the fine levels, both softened; the
     * one with many more pixels to the same area shrunk to the other's
     * density (a screenshot of a large photo, a crop of one), so that the
     * two have one band and the fit's residual is not the detail only one
     * of them has */
    st = TM_ERR_INTERNAL;
    if (aff_level_to_full(&lcs, &lco, m, full) || aff_full_to_level(&s->fine, &o->fine, full, m)) goto out;
    const tm_level *lfo = &o->fine, *lfs = &s->fine;
    double dens = sqrt(fabs(m[1] * m[5] - m[2] * m[4])); /* original fine pixels per suspect fine pixel */
    if (dens > 1.25 || dens < 0.8) {
        const tm_level *big = dens > 1 ? &o->fine : &s->fine;
        double kb = dens > 1 ? dens : 1 / dens;
        int nw = (int)fmax(8, lround(big->w / kb)), nh = (int)fmax(8, lround(big->h / kb));
        if ((st = tm_level_resize(big, nw, nh, &lfb)) != TM_OK) goto out;
        if (dens > 1) {
            if ((st = tm_level_soften(&lfb)) != TM_OK) goto out; /* softened at the suspect's scale, as it is */
            lfo = &lfb;
        } else {
            lfs = &lfb;
        }
        st = TM_ERR_INTERNAL;
        if (aff_full_to_level(lfs, lfo, full, m)) goto out;
    }
    grey fo = grey_of(lfo), fs = grey_of(lfs);
    if ((st = fit_init(&f, &fo, &fs, FINE_SAMPLES, 1)) != TM_OK) goto out;
    if ((st = polish_lm(&f, fs.w, fs.h, m, &ncc, &ov)) != TM_OK) goto out;
    st = TM_ERR_INTERNAL;
    if (aff_level_to_full(lfs, lfo, m, out->affine)) goto out;
    double det = out->affine[1] * out->affine[5] - out->affine[2] * out->affine[4];
    out->flip = flip;
    out->scale = 1 / sqrt(fabs(det));
    /* the turn of the suspect: the original's x axis as seen in the suspect
     * (y down, so counter-clockwise is a negative image angle) */
    double inv[6];
    if (aff_invert(out->affine, inv)) goto out;
    /* inv's linear part is s D R (F when mirrored), D = diag(sqrt a, 1 / sqrt a)
     * the stretch along the suspect's axes: its rows' lengths give a */
    double r1 = hypot(inv[1], inv[2]), r2 = hypot(inv[4], inv[5]);
    out->aspect = r2 > 0 ? r1 / r2 : 1;
    double c = inv[1] / sqrt(out->aspect), sn = inv[4] * sqrt(out->aspect);
    double ang = flip ? -atan2(-sn, -c) * 180 / M_PI : -atan2(sn, c) * 180 / M_PI;
    out->rotation_deg = ang <= -180 ? ang + 360 : ang;
    out->ncc = ncc;
    out->overlap = ov;
    out->found = ncc >= FOUND_NCC && ov >= FOUND_OVERLAP && plausible(out->affine);
    st = TM_OK;
out:
    tm_level_free(&lco);
    tm_level_free(&lcs);
    tm_level_free(&lfb);
    grey_free(&cm);
    fit_free(&f);
    return st;
}

/* ---- the difference ---- */

/* The tone curve of suspect values sv (w x h, NAN where undefined) against
 * original values ov (rows ostride apart): the mean suspect value per
 * original tone bin, bins with few samples from a straight-line fit over
 * the others. */
static void tone_curve(const float *sv, const float *ov, int w, int h, size_t ostride, double *curve)
{
    double sum[TONE_BINS] = {0}, cnt[TONE_BINS] = {0};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float v = sv[(size_t)y * w + x];
            if (isnan(v)) continue;
            int bin = (int)fminf(TONE_BINS - 1, fmaxf(0, ov[(size_t)y * ostride + x] * (TONE_BINS / 256.0f)));
            sum[bin] += v;
            cnt[bin] += 1;
        }
    double sx = 0, sy = 0, sxx = 0, sxy = 0, k = 0;
    for (int i = 0; i < TONE_BINS; i++) {
        if (cnt[i] < 16) continue;
        double xc = (i + 0.5) * 256.0 / TONE_BINS, yc = sum[i] / cnt[i];
        sx += cnt[i] * xc, sy += cnt[i] * yc, sxx += cnt[i] * xc * xc, sxy += cnt[i] * xc * yc, k += cnt[i];
    }
    double den = k * sxx - sx * sx, slope = den > 0 ? (k * sxy - sx * sy) / den : 1;
    double icpt = k > 0 ? (sy - slope * sx) / k : 0;
    for (int i = 0; i < TONE_BINS; i++)
        curve[i] = cnt[i] >= 16 ? sum[i] / cnt[i] : icpt + slope * (i + 0.5) * 256.0 / TONE_BINS;
}

static double tone_apply(const double *curve, double v)
{
    double t = v * TONE_BINS / 256.0 - 0.5;
    int i = (int)floor(t);
    if (i < 0) return curve[0];
    if (i >= TONE_BINS - 1) return curve[TONE_BINS - 1];
    return curve[i] + (t - i) * (curve[i + 1] - curve[i]);
}

/* The NCC of the fine detail of a and b (w x h, NAN where undefined): each
 * value less the mean of its 3 x 3 neighbours, where all nine are defined.
 * Smooth content correlates between unrelated photos once a map is fitted to
 * it; detail does only where the map is right. The 3 x 3 sums are made from
 * sums of three along each row (a NAN makes a row sum NAN, and so the
 * whole). */
static double detail_ncc(const float *a, const float *b, int w, int h, size_t bstride)
{
    if (w < 3 || h < 3) return 0;
    float *ra = malloc(sizeof(float) * 3 * (size_t)w), *rb = malloc(sizeof(float) * 3 * (size_t)w);
    if (!ra || !rb) {
        free(ra);
        free(rb);
        return 0;
    }
    double s1 = 0, s2 = 0, t1 = 0, t2 = 0, st = 0, k = 0;
    for (int y = 0; y < h; y++) {
        /* row y's sums of three into slot y % 3 */
        const float *pa = a + (size_t)y * w, *pb = b + (size_t)y * bstride;
        float *qa = ra + (size_t)(y % 3) * w, *qb = rb + (size_t)(y % 3) * w;
        for (int x = 1; x < w - 1; x++) {
            qa[x] = pa[x - 1] + pa[x] + pa[x + 1];
            qb[x] = pb[x - 1] + pb[x] + pb[x + 1];
        }
        if (y < 2) continue;
        int c = y - 1; /* the centre row */
        const float *a0 = ra, *a1 = ra + w, *a2 = ra + 2 * (size_t)w, *b0 = rb, *b1 = rb + w, *b2 = rb + 2 * (size_t)w;
        const float *ca = a + (size_t)c * w, *cb = b + (size_t)c * bstride;
        for (int x = 1; x < w - 1; x++) {
            float ma = a0[x] + a1[x] + a2[x], mb = b0[x] + b1[x] + b2[x];
            if (isnan(ma) || isnan(mb)) continue;
            double u = ca[x] - ma / 9.0, v = cb[x] - mb / 9.0;
            s1 += u, s2 += u * u, t1 += v, t2 += v * v, st += u * v, k++;
        }
    }
    free(ra);
    free(rb);
    if (k < 64) return 0;
    double vu = s2 - s1 * s1 / k, vv = t2 - t1 * t1 / k;
    return vu > 0 && vv > 0 ? (st - s1 * t1 / k) / sqrt(vu * vv) : 0;
}

/* The largest detail_ncc of a and b (w x h, b's rows bstride apart) over
 * 1x1, 2x2 and 4x4 block means (a block with an undefined value is
 * undefined): heavy compression keeps no detail at the pixel scale, but
 * keeps it at 8 pixels. */
static tm_status detail_any_scale(const float *a, const float *b, int w, int h, size_t bstride, double *out)
{
    *out = detail_ncc(a, b, w, h, bstride);
    float *ra = malloc(sizeof(float) * ((size_t)w / 2 + 1) * ((size_t)h / 2 + 1));
    float *rb = malloc(sizeof(float) * ((size_t)w / 2 + 1) * ((size_t)h / 2 + 1));
    if (!ra || !rb) {
        free(ra);
        free(rb);
        return TM_ERR_NOMEM;
    }
    for (int f = 2; f <= 4; f *= 2) {
        int nw = w / f, nh = h / f;
        if (nw < 8 || nh < 8) break;
        for (int y = 0; y < nh; y++)
            for (int x = 0; x < nw; x++) {
                double sa = 0, sb = 0;
                for (int j = 0; j < f; j++)
                    for (int i = 0; i < f; i++) {
                        sa += a[(size_t)(y * f + j) * w + x * f + i];
                        sb += b[(size_t)(y * f + j) * bstride + x * f + i];
                    }
                ra[(size_t)y * nw + x] = (float)(sa / (f * f)); /* NAN stays NAN */
                rb[(size_t)y * nw + x] = (float)(sb / (f * f));
            }
        *out = fmax(*out, detail_ncc(ra, rb, nw, nh, (size_t)nw));
    }
    free(ra);
    free(rb);
    return TM_OK;
}

/* ds (w x h, NAN where the suspect does not reach) less the original os
 * (rows ostride apart) through their tone curve, 0 where undefined;
 * r->detail and r->residual set. Returns TM_ERR_DIMENSIONS when too little
 * overlaps; r->found is cleared when the detail does not correlate. */
static tm_status difference_core(float *ds, const float *os, int w, int h, size_t ostride, tm_registration *r)
{
    tm_status st = detail_any_scale(ds, os, w, h, ostride, &r->detail);
    if (st != TM_OK) return st;
    if (r->detail < TM_REG_DETAIL) { /* a fit of smooth content only: not the original */
        r->found = 0;
        return TM_OK;
    }
    double curve[TONE_BINS], ss = 0, cnt = 0;
    tone_curve(ds, os, w, h, ostride, curve);
    for (int y = 0; y < h; y++) {
        float *d = ds + (size_t)y * w;
        const float *o = os + (size_t)y * ostride;
        for (int x = 0; x < w; x++) {
            if (isnan(d[x])) {
                d[x] = 0;
                continue;
            }
            d[x] = (float)(d[x] - tone_apply(curve, o[x]));
            ss += (double)d[x] * d[x];
            cnt++;
        }
    }
    if (cnt < 64) return TM_ERR_DIMENSIONS;
    r->residual = sqrt(ss / cnt);
    return TM_OK;
}

/* dst[y * w + x] = cubic sample of src at m(x0 + x, y0 + y), or outside
 * (a value or NAN) where that falls off src. The position steps by m's
 * columns along a row; inside the border the taps are read directly. */
static void warp_cubic(const tm_level *src, const double *m, int x0, int y0, int w, int h, float outside, float *dst)
{
    const int sw = src->w, sh = src->h;
    for (int y = 0; y < h; y++) {
        double px = m[0] + m[1] * x0 + m[2] * (y0 + y), py = m[3] + m[4] * x0 + m[5] * (y0 + y);
        float *o = dst + (size_t)y * w;
        for (int x = 0; x < w; x++, px += m[1], py += m[4]) {
            if (!(px >= 0 && py >= 0 && px <= sw - 1 && py <= sh - 1)) {
                o[x] = outside;
                continue;
            }
            if (!(px >= 1 && py >= 1 && px < sw - 2 && py < sh - 2)) {
                o[x] = (float)tm_interp(src->v, sw, sh, px, py, 1);
                continue;
            }
            int ix = (int)px, iy = (int)py;
            float fx = (float)(px - ix), fy = (float)(py - iy), wx[4], wy[4];
            float fx2 = fx * fx, fy2 = fy * fy;
            wx[0] = 0.5f * (-fx2 * fx + 2 * fx2 - fx), wx[1] = 0.5f * (3 * fx2 * fx - 5 * fx2 + 2);
            wx[2] = 0.5f * (-3 * fx2 * fx + 4 * fx2 + fx), wx[3] = 0.5f * (fx2 * fx - fx2);
            wy[0] = 0.5f * (-fy2 * fy + 2 * fy2 - fy), wy[1] = 0.5f * (3 * fy2 * fy - 5 * fy2 + 2);
            wy[2] = 0.5f * (-3 * fy2 * fy + 4 * fy2 + fy), wy[3] = 0.5f * (fy2 * fy - fy2);
            const float *r = src->v + (size_t)(iy - 1) * sw + ix - 1;
            float acc = 0;
            for (int j = 0; j < 4; j++, r += sw) acc += wy[j] * (wx[0] * r[0] + wx[1] * r[1] + wx[2] * r[2] + wx[3] * r[3]);
            o[x] = acc;
        }
    }
}

/* The suspect at about the frame's density (dens suspect pixels to a frame
 * pixel, 1 or more): box means (s's own when they are those), Lanczos for
 * what is left of the factor beyond 10%; or the suspect itself. */
static tm_status suspect_at_density(const tm_reg_suspect *s, double dens, tm_level *out)
{
    memset(out, 0, sizeof *out);
    int b = (int)fmax(1, floor(dens + 1e-6));
    tm_level base = tm_level_view(s->full.f, s->full.w, s->full.h), box = {0};
    tm_status st;
    if (b > 1 && b == s->box_b) {
        base = s->box;
        base.owned = 0;
    } else if (b > 1) {
        if ((st = tm_level_box(&s->full, b, &box)) != TM_OK) return st;
        base = box;
    }
    double rem = dens / b;
    if (rem > 1.1) {
        st = tm_level_resize(&base, (int)fmax(8, lround(base.w / rem)), (int)fmax(8, lround(base.h / rem)), out);
        tm_level_free(&box);
        return st;
    }
    *out = base; /* owns box's pixels, or borrows */
    return TM_OK;
}

tm_status tm_register_difference(const tm_original *o, const tm_reg_suspect *s, tm_registration *r, tm_image **out)
{
    if (!o || !s || !r || !out) return TM_ERR_ARG;
    *out = NULL;
    const tm_level *fr = &o->frame;
    int sw = s->full.w, sh = s->full.h;
    double a[6], lf[6], t[6]; /* a: original -> suspect; lf: frame -> original */
    if (aff_invert(r->affine, a)) return TM_ERR_ARG;
    tm_level_to_full(fr, lf);
    /* the frame pixels the suspect covers: its corners' box */
    double x0 = fr->w, y0 = fr->h, x1 = -1, y1 = -1;
    for (int c = 0; c < 4; c++) {
        double x, y;
        aff_apply(r->affine, c & 1 ? sw - 1 : 0, c & 2 ? sh - 1 : 0, &x, &y);
        x = (x - fr->ox) / fr->kx, y = (y - fr->oy) / fr->ky;
        x0 = fmin(x0, x), y0 = fmin(y0, y), x1 = fmax(x1, x), y1 = fmax(y1, y);
    }
    int bx0 = (int)fmax(0, floor(x0)), by0 = (int)fmax(0, floor(y0));
    int bx1 = (int)fmin(fr->w - 1, ceil(x1)), by1 = (int)fmin(fr->h - 1, ceil(y1));
    if (bx1 - bx0 < 7 || by1 - by0 < 7) return TM_ERR_DIMENSIONS;
    int w = bx1 - bx0 + 1, h = by1 - by0 + 1;

    double dens = r->scale * fr->kx; /* suspect pixels per frame pixel, along a side */
    tm_image *d = NULL;
    tm_level lv = {0};
    float *os = NULL, *ds = NULL;
    tm_status st = tm_image_create(w, h, 1, &d);
    if (st != TM_OK) return st;
    float *dv = d->plane[0];
    double m[6];
    if (dens >= 0.9) {
        /* in the frame: the suspect brought there at its density, against
         * the frame's pixels */
        if ((st = suspect_at_density(s, dens, &lv)) != TM_OK) goto out;
        double ls[6], is[6];
        tm_level_to_full(&lv, ls);
        st = TM_ERR_ARG;
        if (aff_invert(ls, is)) goto out;
        aff_compose(a, lf, t);
        aff_compose(is, t, m); /* frame -> suspect level */
        warp_cubic(&lv, m, bx0, by0, w, h, NAN, dv);
        st = difference_core(dv, fr->v + (size_t)by0 * fr->w + bx0, w, h, (size_t)fr->w, r);
        if (st != TM_OK || !r->found) goto out;
    } else {
        /* in the suspect's frame, the original brought there through the
         * same loss of resolution, then carried back */
        size_t ns = (size_t)sw * sh;
        st = TM_ERR_NOMEM;
        if (!(os = tm_big_alloc(sizeof(float) * ns)) || !(ds = tm_big_alloc(sizeof(float) * ns))) goto out;
        int nw = (int)fmax(8, lround(fr->w * dens)), nh = (int)fmax(8, lround(fr->h * dens));
        if ((st = tm_level_resample(fr, nw, nh, &lv)) != TM_OK) goto out;
        double lo[6], io[6];
        tm_level_to_full(&lv, lo);
        st = TM_ERR_ARG;
        if (aff_invert(lo, io)) goto out;
        aff_compose(io, r->affine, m); /* suspect -> original level */
        warp_cubic(&lv, m, 0, 0, sw, sh, NAN, os);
        for (size_t i = 0; i < ns; i++) ds[i] = isnan(os[i]) ? NAN : s->full.f[i];
        if ((st = difference_core(ds, os, sw, sh, (size_t)sw, r)) != TM_OK || !r->found) goto out;
        aff_compose(a, lf, m); /* frame -> suspect */
        tm_level dl = tm_level_view(ds, sw, sh);
        warp_cubic(&dl, m, bx0, by0, w, h, 0, dv);
    }
    for (size_t i = 0; i < (size_t)w * h; i++) dv[i] += 128;
    *out = d;
    d = NULL;
    st = TM_OK;
out:
    tm_big_free(os);
    tm_big_free(ds);
    tm_level_free(&lv);
    tm_image_free(d);
    return st;
}
