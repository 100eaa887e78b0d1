/* sync.c -- blind estimation of the scale and rotation of the tiled mark,
 * and the warp of a suspect's luminance back to the marked frame.
 *
 * Every band bin of the 125-pixel tile has the same magnitude, so a marked
 * image scaled by s and turned by theta carries spectral lines at
 * R(theta) k / (125 s) for every integer k with 4 <= |k| <= 20, whatever the
 * key and the recipient. The estimate analyses a centred window of at most
 * 1024 x 1024 pixels, once at full resolution and, for larger suspects, once
 * averaged over 2x2 blocks (four times the area: enlarged copies put their
 * lattice at low frequencies where the host is strong), and for very long
 * ones over 4x4 blocks too. Each pass: a
 * local-mean residual over the local RMS (the host's structure mostly goes),
 * a Tukey window, one FFT, and the power spectrum divided by its local
 * average (the host's 1/f falloff goes). Then:
 *   1. hypotheses: the autocorrelation (inverse FFT of the whitened band
 *      power) of a lattice is a lattice; each of its strongest peaks is read
 *      as several lattice vectors ((1,0), (1,1), (2,0), (2,1), (1,2)) so a
 *      peak at a multiple of the period cannot lock the estimate onto it.
 *      The autocorrelation sums every bin, lattice or not, so on small or weak
 *      images it misses; line searches over pure scalings and pure rotations
 *      of the score below add the common cases;
 *   2. scoring: the mean whitened power at all predicted lattice points (off
 *      the axes, where the host's own lines sit), in null standard
 *      deviations; a coarse grid on the spectrum's 3x3 maximum (a point
 *      between two grid steps still reads its peak), a finer one on the raw
 *      spectrum, then GSL's Nelder-Mead simplex for sub-bin accuracy (about
 *      0.01% in scale and 0.01 degree on 1-3 MP).
 * The passes and, within each, the similarity and stretch searches run as
 * stages (tm_sync_next), so a caller sure of an early answer skips the rest.
 * No key is needed and nothing here depends on it. */
#include "config.h"

#include <gsl/gsl_errno.h>
#include <gsl/gsl_multimin.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "scheme.h"
#include "sync.h"

#define WIN 1024           /* FFT side: centred window of at most WIN x WIN pixels */
#define PRE_RADIUS 3       /* 7x7 local statistics for the residual */
#define PRE_NU2 4.0        /* floor of the local variance */
#define TAPER 0.15         /* Tukey window: taper fraction at each end */
#define STRETCH_GAIN 1.1  /* a stretched lattice must score this much more than the unstretched fit */
#define CLIP 12.0          /* whitened power cap: one host line cannot dominate a score */
#define N_PEAKS 10         /* autocorrelation peaks turned into hypotheses */
#define MAX_HYP 64
#define N_REFINE 6         /* hypotheses refined to full accuracy */
#define MIN_POINTS 24      /* fewer usable lattice points: no score */
#define ASPECT_SEARCH 0.15 /* |log aspect| searched: 0.86 .. 1.16 */
#define MAX_LOG_ASPECT 0.2 /* and never refined beyond */
/* The long side from which a suspect may show the lattice beyond
 * TM_SYNC_SCALE_MAX: a tile of f = round(L / TM_TILE_SCALE_SIDE) periods on
 * an original of long side L, enlarged e times, has the scale f e <= L e /
 * TM_TILE_SCALE_SIDE + e / 2 in a suspect of long side L e; with e <= 2.5
 * that passes 5 only from L e > 3.75 TM_TILE_SCALE_SIDE. */
#define HUGE_SIDE (15 * TM_TILE_SCALE_SIDE / 4)

typedef struct lattice_k {
    float kx, ky, r;
} lattice_k;

/* The whitened power spectrum and the lattice vectors scored against it. */
typedef struct spectrum {
    int n, nc;             /* FFT side, n / 2 + 1 */
    float *pw;             /* n x nc whitened, clipped power */
    float *pb;             /* its 3x3 maximum, for coarse search */
    double mu, sd, mub, sdb; /* their means and deviations over the band */
    lattice_k *k;          /* band vectors off the axes, half plane, by radius */
    int nk;
} spectrum;

/* ---- prefilter ------------------------------------------------------------ */

/* dst[x] = mean of src[x-r .. x+r] (clipped to the line), n samples. */
static void box_line(const float *src, float *dst, int n, int r)
{
    double acc = 0, inv = 1.0 / (2 * r + 1);
    for (int i = 0; i <= r && i < n; i++) acc += src[i];
    for (int x = 0; x < n; x++) {
        int lo = x - r, hi = x + r;
        int cnt = (hi < n ? hi : n - 1) - (lo > 0 ? lo : 0) + 1;
        dst[x] = (float)(cnt == 2 * r + 1 ? acc * inv : acc / cnt);
        if (hi + 1 < n) acc += src[hi + 1];
        if (lo >= 0) acc -= src[lo];
    }
}

/* Box mean of src (w x h), radius r, clamped borders, into dst (may alias src);
 * tmp holds w x h floats, col w floats (running sums of at most 2r+1 rows). */
static void box_mean(const float *src, float *dst, float *tmp, float *col, int w, int h, int r)
{
    for (int y = 0; y < h; y++) box_line(src + (size_t)y * w, tmp + (size_t)y * w, w, r);
    memset(col, 0, sizeof(float) * w);
    for (int y = 0; y <= r && y < h; y++)
        for (int x = 0; x < w; x++) col[x] += tmp[(size_t)y * w + x];
    for (int y = 0; y < h; y++) {
        int lo = y - r, hi = y + r;
        float inv = 1.0f / (float)((hi < h ? hi : h - 1) - (lo > 0 ? lo : 0) + 1);
        float *d = dst + (size_t)y * w;
        for (int x = 0; x < w; x++) d[x] = col[x] * inv;
        if (hi + 1 < h)
            for (int x = 0; x < w; x++) col[x] += tmp[(size_t)(hi + 1) * w + x];
        if (lo >= 0)
            for (int x = 0; x < w; x++) col[x] -= tmp[(size_t)lo * w + x];
    }
}

/* Tukey window: flat in the middle, cosine tapers over TAPER of each end, so
 * the lines stay narrow while most pixels count fully. */
static double taper(int i, int n)
{
    double t = (i + 0.5) / n, e = t < 0.5 ? t : 1 - t;
    return e >= TAPER ? 1 : 0.5 - 0.5 * cos(M_PI * e / TAPER);
}

/* Residual of the rw x rh window of y at (x0, y0), y averaged over f x f
 * blocks first, over the local RMS, times a Tukey window, into the top-left of
 * buf (n x n, zero elsewhere); scratch holds 3 rw rh floats. */
static tm_status prefilter(const float *y, int w, int f, int x0, int y0, int rw, int rh, int n, float *scratch,
                           float *buf)
{
    size_t m = (size_t)rw * rh;
    float *reg = scratch, *mean = scratch + m, *tmp = scratch + 2 * m;
    float *col = malloc(sizeof(float) * rw);
    double *hx = malloc(sizeof(double) * rw), *hy = malloc(sizeof(double) * rh);
    tm_status st = TM_ERR_NOMEM;
    if (!col || !hx || !hy) goto out;
    if (f == 1) {
        for (int r = 0; r < rh; r++) memcpy(reg + (size_t)r * rw, y + (size_t)(y0 + r) * w + x0, sizeof(float) * rw);
    } else {
        float inv = 1.0f / (float)(f * f);
        for (int r = 0; r < rh; r++) {
            float *d = reg + (size_t)r * rw;
            memset(d, 0, sizeof(float) * rw);
            for (int j = 0; j < f; j++) {
                const float *src = y + (size_t)(y0 + r * f + j) * w + x0;
                for (int c = 0; c < rw; c++)
                    for (int i = 0; i < f; i++) d[c] += src[c * f + i];
            }
            for (int c = 0; c < rw; c++) d[c] *= inv;
        }
    }
    box_mean(reg, mean, tmp, col, rw, rh, PRE_RADIUS);
    for (size_t i = 0; i < m; i++) {
        reg[i] -= mean[i];
        mean[i] = reg[i] * reg[i];
    }
    box_mean(mean, mean, tmp, col, rw, rh, PRE_RADIUS);
    for (int i = 0; i < rw; i++) hx[i] = taper(i, rw);
    for (int i = 0; i < rh; i++) hy[i] = taper(i, rh);
    memset(buf, 0, sizeof(float) * (size_t)n * n);
    for (int r = 0; r < rh; r++) {
        const float *rr = reg + (size_t)r * rw, *vv = mean + (size_t)r * rw;
        float *d = buf + (size_t)r * n, wy = (float)hy[r];
        for (int c = 0; c < rw; c++) d[c] = wy * (float)hx[c] * rr[c] / sqrtf(vv[c] + (float)PRE_NU2);
    }
    st = TM_OK;
out:
    free(col);
    free(hx);
    free(hy);
    return st;
}

/* ---- whitened spectrum ------------------------------------------------------- */

/* pw = power / its local mean over (2b+1)^2 bins (rows wrap, columns clamp),
 * capped at CLIP. tmp and acc hold n * nc floats and nc doubles. */
static void whiten(const fftwf_complex *f, float *pw, float *tmp, double *acc, int n, int nc, int b)
{
    size_t len = (size_t)n * nc;
    for (size_t i = 0; i < len; i++) pw[i] = f[i][0] * f[i][0] + f[i][1] * f[i][1];
    /* Along columns (frequency x), clamped. */
    for (int r = 0; r < n; r++) box_line(pw + (size_t)r * nc, tmp + (size_t)r * nc, nc, b);
    /* Along rows (frequency y), circular. */
    memset(acc, 0, sizeof(double) * nc);
    for (int d = -b; d <= b; d++) {
        const float *t = tmp + (size_t)((d + n) % n) * nc;
        for (int x = 0; x < nc; x++) acc[x] += t[x];
    }
    double inv = 1.0 / (2 * b + 1);
    for (int r = 0; r < n; r++) {
        float *p = pw + (size_t)r * nc;
        for (int x = 0; x < nc; x++) {
            float loc = (float)(acc[x] * inv);
            float v = loc > 0 ? p[x] / loc : 0;
            p[x] = v < (float)CLIP ? v : (float)CLIP;
        }
        const float *out_row = tmp + (size_t)((r - b + n) % n) * nc, *in_row = tmp + (size_t)((r + b + 1) % n) * nc;
        for (int x = 0; x < nc; x++) acc[x] += in_row[x] - out_row[x];
    }
}

/* Band limits in bins for an FFT of side n: every scale in the search range. */
/* The 8x8 JPEG block grid of the suspect (every 8 / f pixels of the analysed
 * window) leaves spectral peaks at its harmonics, and near them when its
 * strength varies over the image. They are never the mark, but a lattice
 * point close to one (at scale 0.512, ring 8 of the tile falls on 1/8 cycle
 * per pixel) would pull the fit: the whitened power within JPEG_MASK bins of
 * every harmonic is set to its expected level, 1. */
#define JPEG_MASK 8
static void mask_block_grid(float *pw, int n, int nc, int f)
{
    int step = n * f / 8;
    if (step <= 2 * JPEG_MASK) return;
    for (int hy = 0; hy < n; hy += step)
        for (int hx = 0; hx < nc; hx += step)
            for (int dy = -JPEG_MASK; dy <= JPEG_MASK; dy++)
                for (int dx = -JPEG_MASK; dx <= JPEG_MASK; dx++) {
                    int x = hx + dx, r = ((hy + dy) % n + n) % n;
                    if (x < 0 || x >= nc || dx * dx + dy * dy > JPEG_MASK * JPEG_MASK) continue;
                    pw[(size_t)r * nc + x] = 1.0f;
                }
}

static double band_lo(int n)
{
    return TM_BAND_LO * n / (TM_TILE * TM_SYNC_SCALE_MAX);
}
static double band_hi(int n)
{
    return 0.49 * n;
}

/* Is bin (fx, fy) (signed frequencies) in the band and off the axes? */
static int band_bin(int fx, int fy, int n)
{
    if (abs(fx) <= 1 || abs(fy) <= 1) return 0;
    double r2 = (double)fx * fx + (double)fy * fy, lo = band_lo(n), hi = band_hi(n);
    return r2 >= lo * lo && r2 <= hi * hi;
}

/* Mean and deviation of p (a whitened power) over the band. */
static void band_stats(const spectrum *sp, const float *p, double *mu, double *sd)
{
    double s = 0, s2 = 0;
    size_t cnt = 0;
    for (int r = 0; r < sp->n; r++) {
        int fy = r <= sp->n / 2 ? r : r - sp->n;
        for (int x = 0; x < sp->nc; x++) {
            if (!band_bin(x, fy, sp->n)) continue;
            double v = p[(size_t)r * sp->nc + x];
            s += v;
            s2 += v * v;
            cnt++;
        }
    }
    *mu = cnt ? s / cnt : 1;
    *sd = cnt ? sqrt(fmax(s2 / cnt - *mu * *mu, 1e-12)) : 1;
}

/* pb = the maximum of pw over 3x3 bins (rows wrap, columns clamp); row holds
 * nc floats. A lattice point that falls between two steps of a coarse search
 * still reads its peak's full height, where an average would spread it. */
static inline float max2f(float a, float b)
{
    return a > b ? a : b; /* no NaN here: one instruction, where fmaxf is a call */
}

static void max3(const float *pw, float *pb, float *row, int n, int nc)
{
    for (int r = 0; r < n; r++) {
        const float *a = pw + (size_t)((r + n - 1) % n) * nc, *b = pw + (size_t)r * nc;
        const float *c = pw + (size_t)((r + 1) % n) * nc;
        for (int x = 0; x < nc; x++) row[x] = max2f(max2f(a[x], b[x]), c[x]);
        float *d = pb + (size_t)r * nc;
        d[0] = nc > 1 ? max2f(row[0], row[1]) : row[0];
        for (int x = 1; x + 1 < nc; x++) d[x] = max2f(max2f(row[x - 1], row[x]), row[x + 1]);
        if (nc > 1) d[nc - 1] = max2f(row[nc - 2], row[nc - 1]);
    }
}

static int cmp_radius(const void *a, const void *b)
{
    float ra = ((const lattice_k *)a)->r, rb = ((const lattice_k *)b)->r;
    return (ra > rb) - (ra < rb);
}

/* The tile's band vectors k off the axes, one of each +-k pair, by radius. */
static tm_status lattice_make(spectrum *sp)
{
    int hi = (int)TM_BAND_HI;
    sp->k = malloc(sizeof(lattice_k) * (size_t)(2 * hi + 1) * (hi + 1));
    if (!sp->k) return TM_ERR_NOMEM;
    sp->nk = 0;
    for (int ky = 1; ky <= hi; ky++)
        for (int kx = -hi; kx <= hi; kx++) {
            double r = sqrt((double)kx * kx + (double)ky * ky);
            if (kx == 0 || r < TM_BAND_LO || r > TM_BAND_HI) continue;
            sp->k[sp->nk++] = (lattice_k){(float)kx, (float)ky, (float)r};
        }
    qsort(sp->k, (size_t)sp->nk, sizeof(lattice_k), cmp_radius);
    return TM_OK;
}

/* Lattice evidence for (scale s, rotation th degrees, log aspect la) on the
 * raw (coarse = 0) or 3x3-maximum power: mean whitened power at the predicted
 * points (bilinear), in null standard deviations of such a mean. The suspect
 * maps marked offsets u to D R s u (sync.h), so the tile's frequencies k / 125
 * land at D^-1 R k / (125 s): x divided by sqrt(aspect), y multiplied. */
static double lattice_score(const spectrum *sp, int coarse, double s, double th, double la)
{
    const float *p = coarse ? sp->pb : sp->pw;
    double mu = coarse ? sp->mub : sp->mu, sd = coarse ? sp->sdb : sp->sd;
    int n = sp->n, nc = sp->nc;
    double a = th * M_PI / 180, c = cos(a), sn = sin(a), g = n / (TM_TILE * s);
    double gx = g * exp(-0.5 * la), gy = g * exp(0.5 * la);
    double lim = band_hi(n), sum = 0;
    int cnt = 0;
    /* The coarse searches read every other lattice vector: the pooled power
     * already covers neighbouring bins, and half the points find the peak. */
    for (int i = 0; i < sp->nk; i += coarse ? 2 : 1) {
        double kx = sp->k[i].kx, ky = sp->k[i].ky;
        double fx = gx * (c * kx + sn * ky), fy = gy * (-sn * kx + c * ky);
        if (fabs(fx) > lim || fabs(fy) > lim) continue;
        if (fx < 0) {
            fx = -fx;
            fy = -fy;
        }
        int x0 = (int)fx, y0 = (int)floor(fy);
        double ax = fx - x0, ay = fy - y0;
        y0 = y0 < 0 ? y0 + n : y0; /* |fy| < n / 2, so one wrap suffices */
        int y1 = y0 + 1 < n ? y0 + 1 : 0;
        if (x0 + 1 >= nc) continue;
        const float *r0 = p + (size_t)y0 * nc, *r1 = p + (size_t)y1 * nc;
        sum += (1 - ay) * ((1 - ax) * r0[x0] + ax * r0[x0 + 1]) + ay * ((1 - ax) * r1[x0] + ax * r1[x0 + 1]);
        cnt++;
    }
    if (cnt < MIN_POINTS) return 0;
    return (sum / cnt - mu) / sd * sqrt((double)cnt);
}

/* ---- hypotheses and refinement ------------------------------------------------- */

/* Reduces a lattice angle to (-45, 45]. */
static double wrap45(double th)
{
    th -= 90 * floor(th / 90 + 0.5);
    if (th <= -45) th += 90;
    return th;
}

/* True when two hypotheses are the same within tol (relative scale, degrees). */
static int same_geom(const tm_geom *a, const tm_geom *b, double ts, double ta)
{
    return fabs(log(a->scale / b->scale)) < ts && fabs(wrap45(a->rotation_deg - b->rotation_deg)) < ta &&
           fabs(a->log_aspect - b->log_aspect) < ts;
}

/* Radius in bins of the band's top harmonic for scale s: a step of 1 / that
 * (relative scale, or radians) moves the outermost lattice points by a bin. */
static double top_radius(const spectrum *sp, double s)
{
    return fmin(TM_BAND_HI * sp->n / (TM_TILE * s), band_hi(sp->n));
}

/* Best score on a (2m+1)^2 grid around g, steps of `bins` at the top harmonic. */
static void grid_refine(const spectrum *sp, int coarse, tm_geom *g, int m, double bins)
{
    tm_geom best = *g;
    best.score = -INFINITY;
    double ds = bins / top_radius(sp, g->scale), dt = ds * 180 / M_PI;
    for (int i = -m; i <= m; i++)
        for (int j = -m; j <= m; j++) {
            double s = g->scale * exp(i * ds), t = g->rotation_deg + j * dt;
            if (s < TM_SYNC_SCALE_MIN * 0.97 || s > TM_SYNC_SCALE_MAX * 1.03) continue;
            double v = lattice_score(sp, coarse, s, t, g->log_aspect);
            if (v > best.score) best = (tm_geom){.scale = s, .rotation_deg = t, .score = v, .log_aspect = g->log_aspect};
        }
    if (best.score > -INFINITY) *g = best;
}

static double nm_cost(const gsl_vector *x, void *params)
{
    const spectrum *sp = params;
    double la = x->size > 2 ? gsl_vector_get(x, 2) : 0;
    double ls = gsl_vector_get(x, 0);
    if (fabs(la) > MAX_LOG_ASPECT || ls < log(TM_SYNC_SCALE_MIN) || ls > log(TM_SYNC_SCALE_MAX)) return 0;
    return -lattice_score(sp, 0, exp(gsl_vector_get(x, 0)), gsl_vector_get(x, 1), la);
}

/* Nelder-Mead polish of g on the full-harmonic score: over scale and rotation,
 * and the aspect too when g has one (a square lattice keeps its aspect at
 * exactly 1, so hypotheses without one are not given the freedom to fit
 * noise with it). */
static tm_status simplex_refine(const spectrum *sp, tm_geom *g)
{
    tm_status st = TM_ERR_NOMEM;
    size_t dim = g->log_aspect != 0 ? 3 : 2;
    gsl_multimin_function f = {nm_cost, dim, (void *)sp};
    gsl_vector *x = gsl_vector_alloc(dim), *step = gsl_vector_alloc(dim);
    gsl_multimin_fminimizer *m = gsl_multimin_fminimizer_alloc(gsl_multimin_fminimizer_nmsimplex2, dim);
    if (!x || !step || !m) goto out;
    gsl_vector_set(x, 0, log(g->scale));
    gsl_vector_set(x, 1, g->rotation_deg);
    double ds = 0.25 / top_radius(sp, g->scale);
    gsl_vector_set(step, 0, ds);
    gsl_vector_set(step, 1, ds * 180 / M_PI);
    if (dim == 3) {
        gsl_vector_set(x, 2, g->log_aspect);
        gsl_vector_set(step, 2, 2 * ds);
    }
    st = TM_ERR_INTERNAL;
    if (gsl_multimin_fminimizer_set(m, &f, x, step) != GSL_SUCCESS) goto out;
    for (int it = 0; it < 60 * (int)dim; it++) {
        int rc = gsl_multimin_fminimizer_iterate(m);
        if (rc == GSL_ENOPROG) break;
        if (rc != GSL_SUCCESS) goto out;
        if (gsl_multimin_test_size(gsl_multimin_fminimizer_size(m), 0.01 * ds) == GSL_SUCCESS) break;
    }
    double v = -gsl_multimin_fminimizer_minimum(m);
    if (v > g->score) {
        const gsl_vector *b = gsl_multimin_fminimizer_x(m);
        *g = (tm_geom){.scale = exp(gsl_vector_get(b, 0)), .rotation_deg = gsl_vector_get(b, 1), .score = v,
                       .log_aspect = dim == 3 ? gsl_vector_get(b, 2) : 0};
    }
    st = TM_OK;
out:
    gsl_vector_free(x);
    gsl_vector_free(step);
    if (m) gsl_multimin_fminimizer_free(m);
    return st;
}

/* Strongest local maxima of the autocorrelation a (n x n, lags wrapped) at
 * lags of length [rmin, rmax] in the upper half plane, sub-pixel; returns
 * their count. */
static int acf_peaks(const float *a, int n, double rmin, double rmax, double *px, double *py)
{
    float val[N_PEAKS];
    int cnt = 0, rm = (int)ceil(rmax);
    for (int dy = 0; dy <= rm; dy++)
        for (int dx = -rm; dx <= rm; dx++) {
            double r = sqrt((double)dx * dx + (double)dy * dy);
            if (r < rmin || r > rmax || (dy == 0 && dx <= 0)) continue;
            float v = a[(size_t)dy * n + (dx + n) % n];
            if (v <= 0 || (cnt == N_PEAKS && v <= val[N_PEAKS - 1])) continue;
            int is_max = 1;
            for (int j = -2; j <= 2 && is_max; j++)
                for (int i = -2; i <= 2; i++) {
                    if (!i && !j) continue;
                    if (a[(size_t)((dy + j + n) % n) * n + (dx + i + n) % n] > v) {
                        is_max = 0;
                        break;
                    }
                }
            if (!is_max) continue;
            /* Parabolic vertex in each direction. */
            double l = a[(size_t)dy * n + (dx - 1 + n) % n], rr = a[(size_t)dy * n + (dx + 1 + n) % n];
            double u = a[(size_t)((dy - 1 + n) % n) * n + (dx + n) % n], d = a[(size_t)((dy + 1) % n) * n + (dx + n) % n];
            double ox = l - 2 * v + rr < 0 ? 0.5 * (l - rr) / (l - 2 * v + rr) : 0;
            double oy = u - 2 * v + d < 0 ? 0.5 * (u - d) / (u - 2 * v + d) : 0;
            int k = cnt < N_PEAKS ? cnt++ : N_PEAKS - 1;
            while (k > 0 && val[k - 1] < v) {
                val[k] = val[k - 1];
                px[k] = px[k - 1];
                py[k] = py[k - 1];
                k--;
            }
            val[k] = v;
            px[k] = dx + ox;
            py[k] = dy + oy;
        }
    return cnt;
}

static int cmp_score(const void *a, const void *b)
{
    double sa = ((const tm_geom *)a)->score, sb = ((const tm_geom *)b)->score;
    return (sa < sb) - (sa > sb);
}

/* Adds g to hyp[0..*nh) unless a near-duplicate is there. */
static void hyp_add(tm_geom *hyp, int *nh, tm_geom g)
{
    if (!(g.scale >= TM_SYNC_SCALE_MIN * 0.97 && g.scale <= TM_SYNC_SCALE_MAX * 1.03)) return;
    for (int i = 0; i < *nh; i++)
        if (same_geom(&hyp[i], &g, 0.01, 0.5)) return;
    if (*nh < MAX_HYP) hyp[(*nh)++] = g;
}

enum scan { SCAN_SCALE, SCAN_ROTATION, SCAN_SCALE_ASPECT };

/* Best coarse score over the aspects at (s, th): steps of 1.5 bins at the top
 * harmonic across |log aspect| <= ASPECT_SEARCH, the square lattice (aspect 1)
 * left out. Keeping the mean scale s (pin 0), or, with pins == 3, also the
 * width's scale (pin 1) or the height's (pin 2): a similarity fitted to a
 * stretched lattice tends to lock onto one axis's lines. */
static tm_geom best_aspect(const spectrum *sp, double s, double th, int pins)
{
    tm_geom best = {.scale = s, .rotation_deg = th, .score = -INFINITY};
    double da = 3.0 / top_radius(sp, s);
    for (double la = da; la <= ASPECT_SEARCH; la += da)
        for (int sign = -1; sign <= 1; sign += 2)
            for (int pin = 0; pin < pins; pin++) {
                double l = sign * la, sm = pin == 0 ? s : s * exp(pin == 1 ? -0.5 * l : 0.5 * l);
                double v = lattice_score(sp, 1, sm, th, l);
                if (v > best.score) best = (tm_geom){.scale = sm, .rotation_deg = th, .score = v, .log_aspect = l};
            }
    return best;
}

/* Keeps the `keep` best local maxima of the coarse score along a line of
 * hypotheses, steps of 1.5 bins at the top harmonic: scale over the search
 * range at rotation th (SCAN_SCALE; with the best aspect at each scale,
 * SCAN_SCALE_ASPECT) or rotation over (-45, 45] at scale s0 (SCAN_ROTATION). */
static void line_search(const spectrum *sp, enum scan mode, double s0, double th, tm_geom *hyp, int *nh, int keep)
{
    tm_geom best[4];
    if (keep > 4) keep = 4;
    int nb = 0;
    double prev2 = -INFINITY, prev = -INFINITY;
    tm_geom gprev = {.scale = 0};
    double s = mode == SCAN_ROTATION ? s0 : TM_SYNC_SCALE_MIN, t = mode == SCAN_ROTATION ? -45 : th;
    for (;;) {
        tm_geom g = mode == SCAN_SCALE_ASPECT ? best_aspect(sp, s, t, 1)
                                              : (tm_geom){.scale = s, .rotation_deg = t, .score = lattice_score(sp, 1, s, t, 0)};
        double v = g.score;
        if (prev > prev2 && prev >= v) { /* gprev is a local maximum */
            if (nb < keep) best[nb++] = gprev;
            else if (gprev.score > best[keep - 1].score) best[keep - 1] = gprev;
            for (int k = nb - 1; k > 0 && best[k - 1].score < best[k].score; k--) {
                tm_geom x = best[k];
                best[k] = best[k - 1];
                best[k - 1] = x;
            }
        }
        prev2 = prev;
        prev = v;
        gprev = g;
        double step = 1.5 / top_radius(sp, s);
        if (mode == SCAN_ROTATION) {
            t += step * 180 / M_PI;
            if (t > 45) break;
        } else {
            s *= exp(step);
            if (s > TM_SYNC_SCALE_MAX) break;
        }
    }
    for (int i = 0; i < nb; i++) hyp_add(hyp, nh, best[i]);
}

/* Buffers and plans for one analysis window, reused by every pass. The
 * arrays share one mapping (tm_big_alloc: huge pages where the system gives
 * them), so a trace's fresh process faults them in a few large pages. */
typedef struct workspace {
    spectrum sp;
    float *block;          /* owns buf, spec, sp.pw, sp.pb, tmp and pre */
    float *buf, *tmp, *pre;
    double *acc;
    fftwf_complex *spec;
    fftwf_plan fwd, inv;   /* from the cache */
    int f;                 /* block size of the spectrum in sp, 0 for none yet */
    tm_geom hyp[MAX_HYP];  /* the similarity stage's raw hypotheses */
    int nhyp;
} workspace;

static void workspace_free(workspace *ws)
{
    tm_big_free(ws->block);
    free(ws->sp.k);
    free(ws->acc);
}

static tm_status workspace_init(workspace *ws, int nn)
{
    memset(ws, 0, sizeof *ws);
    ws->sp.n = nn;
    ws->sp.nc = nn / 2 + 1;
    /* Each part a multiple of 64 bytes, so each starts aligned for FFTW. */
    size_t sq = (size_t)nn * nn, len = ((size_t)nn * ws->sp.nc + 15) & ~(size_t)15;
    ws->block = tm_big_alloc(sizeof(float) * (4 * sq + 2 * len + 3 * len));
    ws->acc = malloc(sizeof(double) * ws->sp.nc);
    if (!ws->block || !ws->acc) return TM_ERR_NOMEM;
    ws->buf = ws->block;                        /* nn x nn */
    ws->pre = ws->buf + sq;                     /* 3 nn x nn, the prefilter's */
    ws->spec = (fftwf_complex *)(ws->pre + 3 * sq); /* len complex */
    ws->sp.pw = (float *)(ws->spec + len);
    ws->sp.pb = ws->sp.pw + len;
    ws->tmp = ws->sp.pb + len;
    tm_status st = lattice_make(&ws->sp);
    if (st != TM_OK) return st;
    ws->fwd = tm_fft_plan(TM_FFT_R2C, nn, nn);
    ws->inv = tm_fft_plan(TM_FFT_C2R, nn, nn);
    return ws->fwd && ws->inv ? TM_OK : TM_ERR_INTERNAL;
}

/* The whitened spectrum of y averaged over f x f blocks, into ws->sp;
 * *ident gets the identity's score when f == 1. */
static tm_status spectrum_of(workspace *ws, const float *y, int w, int h, int f, double *ident)
{
    spectrum *sp = &ws->sp;
    int nn = sp->n, nc = sp->nc;
    int rw = w / f < nn ? w / f : nn, rh = h / f < nn ? h / f : nn;
    tm_status st = prefilter(y, w, f, (w - rw * f) / 2, (h - rh * f) / 2, rw, rh, nn, ws->pre, ws->buf);
    if (st != TM_OK) return st;
    fftwf_execute_dft_r2c(ws->fwd, ws->buf, ws->spec);
    whiten(ws->spec, sp->pw, ws->tmp, ws->acc, nn, nc, nn / 64);
    mask_block_grid(sp->pw, nn, nc, f);
    max3(sp->pw, sp->pb, ws->tmp, nn, nc);
    band_stats(sp, sp->pw, &sp->mu, &sp->sd);
    band_stats(sp, sp->pb, &sp->mub, &sp->sdb);
    if (f == 1) *ident = lattice_score(sp, 0, 1, 0, 0);
    return TM_OK;
}

/* Refines copies of the nr strongest of hyp[0..nh) (sorted) to full
 * accuracy and appends them to out[*nout..], scales in suspect pixels
 * (blocks of f). */
static tm_status refine_best(const spectrum *sp, tm_geom *hyp, int nh, int nr, int f, tm_geom *out, int *nout)
{
    tm_status st;
    for (int i = 0; i < nh && i < nr; i++) {
        tm_geom g = hyp[i];
        grid_refine(sp, 0, &g, 3, 0.4);
        if ((st = simplex_refine(sp, &g)) != TM_OK) return st;
        if (g.log_aspect != 0) {
            /* A stretch must earn its parameter: where the upper rings are
             * gone, a slightly stretched lattice can fit the remaining points
             * a little better than the true, unstretched one. */
            tm_geom flat = {.scale = g.scale, .rotation_deg = g.rotation_deg};
            flat.score = lattice_score(sp, 0, flat.scale, flat.rotation_deg, 0);
            if ((st = simplex_refine(sp, &flat)) != TM_OK) return st;
            if (g.score < STRETCH_GAIN * flat.score) g = flat;
        }
        g.rotation_deg = wrap45(g.rotation_deg);
        g.scale *= f;
        out[(*nout)++] = g;
    }
    return TM_OK;
}

/* The similarity stage on the spectrum in ws (blocks of f): hypotheses from
 * the autocorrelation and from line searches over plain scalings and plain
 * rotations, scored, tried with stretches, and the best N_REFINE refined
 * into out[*nout..]. Its raw hypotheses are kept in ws for the stretch
 * stage. */
static tm_status search_similar(workspace *ws, int f, tm_geom *out, int *nout)
{
    spectrum *sp = &ws->sp;
    int nn = sp->n, nc = sp->nc;
    tm_geom *hyp = ws->hyp;
    int nh = 0;

    /* 1. Hypotheses from the autocorrelation of the band's whitened power. */
    for (int r = 0; r < nn; r++) {
        int fy = r <= nn / 2 ? r : r - nn;
        for (int x = 0; x < nc; x++) {
            size_t i = (size_t)r * nc + x;
            ws->spec[i][0] = band_bin(x, fy, nn) ? (float)(sp->pw[i] - sp->mu) : 0.0f;
            ws->spec[i][1] = 0;
        }
    }
    fftwf_execute_dft_c2r(ws->inv, ws->spec, ws->buf);
    double px[N_PEAKS], py[N_PEAKS];
    double rmax = fmin(nn / 2.0 - 3, 1.5 * TM_TILE * TM_SYNC_SCALE_MAX);
    int np = acf_peaks(ws->buf, nn, 0.85 * TM_TILE * TM_SYNC_SCALE_MIN, rmax, px, py);
    static const int mvec[][2] = {{1, 0}, {1, 1}, {2, 0}, {2, 1}, {1, 2}};
    for (int p = 0; p < np; p++) {
        double len_v = hypot(px[p], py[p]), phi = atan2(py[p], px[p]) * 180 / M_PI;
        for (size_t k = 0; k < sizeof mvec / sizeof mvec[0]; k++) {
            double lm = hypot(mvec[k][0], mvec[k][1]), alpha = atan2(mvec[k][1], mvec[k][0]) * 180 / M_PI;
            hyp_add(hyp, &nh, (tm_geom){.scale = len_v / (TM_TILE * lm), .rotation_deg = wrap45(alpha - phi)});
        }
    }

    /* Plain scalings and plain rotations, the common cases, get a direct
     * line search: the autocorrelation is far less sensitive than the score. */
    line_search(sp, SCAN_SCALE, 0, 0, hyp, &nh, 3);
    for (int k = 1; k <= TM_TILE_SCALE_MAX; k++) /* the tile scales of large originals, turned */
        if ((double)k / f <= TM_SYNC_SCALE_MAX) line_search(sp, SCAN_ROTATION, (double)k / f, 0, hyp, &nh, k == 1 ? 3 : 2);

    /* 2. Score each on the pooled power around its raw position; the
     * strongest may be stretched lattices seen as similarities (a turn, then
     * a non-uniform resize): try aspects; refine the best. */
    for (int i = 0; i < nh; i++) grid_refine(sp, 1, &hyp[i], 3, 1.5);
    qsort(hyp, (size_t)nh, sizeof hyp[0], cmp_score);
    for (int i = 0; i < nh && i < 2 * N_REFINE; i++) {
        if (hyp[i].log_aspect != 0) continue;
        tm_geom g = best_aspect(sp, hyp[i].scale, hyp[i].rotation_deg, 3);
        grid_refine(sp, 1, &g, 2, 1.5);
        if (g.score > hyp[i].score) hyp[i] = g;
    }
    qsort(hyp, (size_t)nh, sizeof hyp[0], cmp_score);
    ws->nhyp = nh;
    return refine_best(sp, hyp, nh, N_REFINE, f, out, nout);
}

/* The stretch stage, after search_similar on the same spectrum: non-uniform
 * resizes, whose stretched lattice a similarity misses, get a line search
 * over scalings with the best stretch at each; its new hypotheses are
 * scored and refined into out[*nout..]. */
static tm_status search_stretched(workspace *ws, int f, tm_geom *out, int *nout)
{
    const spectrum *sp = &ws->sp;
    int nh = ws->nhyp;
    line_search(sp, SCAN_SCALE_ASPECT, 0, 0, ws->hyp, &nh, 2);
    tm_geom *fresh = ws->hyp + ws->nhyp;
    int nf = nh - ws->nhyp;
    for (int i = 0; i < nf; i++) grid_refine(sp, 1, &fresh[i], 3, 1.5);
    qsort(fresh, (size_t)nf, sizeof fresh[0], cmp_score);
    return refine_best(sp, fresh, nf, nf, f, out, nout);
}

/* The estimate, stage by stage (sync.h): per block size f, the similarity
 * stage, then the stretch stage on the same spectrum. */
struct tm_sync {
    const float *y;
    int w, h;
    int f[TM_SYNC_MAX_STAGES / 2], nf;     /* block sizes of the passes, in order */
    int done;                      /* stages run */
    workspace ws;
    tm_geom all[TM_SYNC_MAX_STAGES * N_REFINE];
    int nall;
    tm_geom ident;
};

tm_status tm_sync_begin(const float *y, int w, int h, tm_sync **out)
{
    if (!y || !out || w < 1 || h < 1) return TM_ERR_ARG;
    tm_sync *s = calloc(1, sizeof *s);
    *out = s;
    if (!s) return TM_ERR_NOMEM;
    *s = (tm_sync){.y = y, .w = w, .h = h, .ident = {.scale = 1}};
    if (w >= TM_TILE && h >= TM_TILE) {
        s->f[s->nf++] = 1;
        /* Enlarged copies put their lattice at low frequencies, where the host
         * is strong: a 2x2-averaged pass over four times the area sees them. */
        if (w >= 4 * TM_TILE && h >= 4 * TM_TILE) s->f[s->nf++] = 2;
        /* A large original's tile (up to TM_TILE_SCALE_MAX x) enlarged too
         * can put the lattice beyond TM_SYNC_SCALE_MAX: a 4x4-averaged pass
         * sees it, when the suspect is long enough to hold such a copy. */
        if ((w > h ? w : h) >= HUGE_SIDE && w >= 8 * TM_TILE && h >= 8 * TM_TILE) s->f[s->nf++] = 4;
    }
    /* The pass that undoes the tile scale a copy of the suspect's size was
     * marked with goes first: it sees the lattice at about scale 1, where
     * the estimate is most precise (a full-resolution pass over a 2x tile
     * can settle half a percent off, on the bins). Ties go to the finer. */
    int f0 = tm_mark_tile_scale(w, h), first = 0;
    for (int i = 1; i < s->nf; i++)
        if (fabs(log((double)s->f[i] / f0)) < fabs(log((double)s->f[first] / f0)) - 1e-9) first = i;
    for (; first > 0; first--) {
        int t = s->f[first];
        s->f[first] = s->f[first - 1];
        s->f[first - 1] = t;
    }
    return s->nf ? workspace_init(&s->ws, WIN) : TM_OK;
}

void tm_sync_end(tm_sync *s)
{
    if (!s) return;
    if (s->nf) workspace_free(&s->ws);
    free(s);
}

tm_status tm_sync_next(tm_sync *s, tm_geom *cands, int max, int *n, int *more)
{
    if (!s || !cands || !n || !more || max < 1) return TM_ERR_ARG;
    *n = 0;
    if (s->done < 2 * s->nf) {
        int f = s->f[s->done / 2];
        tm_status st = TM_OK;
        if (s->ws.f != f) {
            st = spectrum_of(&s->ws, s->y, s->w, s->h, f, &s->ident.score);
            s->ws.f = st == TM_OK ? f : 0;
        }
        if (st == TM_OK)
            st = s->done % 2 ? search_stretched(&s->ws, f, s->all, &s->nall) : search_similar(&s->ws, f, s->all, &s->nall);
        if (st != TM_OK) return st;
        s->done++;
    }
    *more = 2 * s->nf - s->done;
    /* Strongest first, duplicates dropped, the identity always present. */
    tm_geom all[TM_SYNC_MAX_STAGES * N_REFINE];
    memcpy(all, s->all, sizeof(tm_geom) * (size_t)s->nall);
    qsort(all, (size_t)s->nall, sizeof all[0], cmp_score);
    int cnt = 0;
    for (int i = 0; i < s->nall && cnt < max; i++) {
        int dup = 0;
        for (int j = 0; j < cnt; j++) dup |= same_geom(&cands[j], &all[i], 1e-3, 0.05);
        if (!dup) cands[cnt++] = all[i];
    }
    int have_identity = 0;
    for (int j = 0; j < cnt; j++) have_identity |= cands[j].scale == 1 && cands[j].rotation_deg == 0 && cands[j].log_aspect == 0;
    if (!have_identity) {
        if (cnt == max) cnt--;
        cands[cnt++] = s->ident;
    }
    *n = cnt;
    return TM_OK;
}

tm_status tm_sync_estimate(const float *y, int w, int h, tm_geom *cands, int max, int *n)
{
    if (!y || !cands || !n || max < 1 || w < 1 || h < 1) return TM_ERR_ARG;
    *n = 0;
    tm_sync *s;
    tm_status st = tm_sync_begin(y, w, h, &s);
    int more = 1;
    while (st == TM_OK && more) st = tm_sync_next(s, cands, max, n, &more);
    tm_sync_end(s);
    return st;
}

/* ---- warping back to the marked frame -------------------------------------------- */

/* Catmull-Rom weights at PHASES + 1 fractional offsets: a sample position is
 * rounded to 1/PHASES of a pixel, far below what the mark can feel. */
#define PHASES 256
typedef float cubic_lut[PHASES + 1][4];
static cubic_lut lut;

static void lut_init(void)
{
    for (int i = 0; i <= PHASES; i++) {
        double t = (double)i / PHASES, t2 = t * t, t3 = t2 * t;
        lut[i][0] = (float)(-0.5 * t3 + t2 - 0.5 * t);
        lut[i][1] = (float)(1.5 * t3 - 2.5 * t2 + 1);
        lut[i][2] = (float)(-1.5 * t3 + 2 * t2 + 0.5 * t);
        lut[i][3] = (float)(0.5 * t3 - 0.5 * t2);
    }
}

/* Row r of the k x k block means of y (rows stride apart): the means of
 * the nw blocks of rows k r .. k r + k - 1, into out. A cheap anti-alias
 * before shrinking an enlarged suspect. */
static void shrink_row(const float *restrict y, size_t stride, int nw, int k, int r, float *restrict out)
{
    memset(out, 0, sizeof(float) * nw);
    for (int j = 0; j < k; j++) {
        const float *in = y + (size_t)(k * r + j) * stride;
        /* The common block sides spelt out, so the loops vectorise; the
         * sums in the same order whatever k. */
        if (k == 2)
            for (int xx = 0; xx < nw; xx++) out[xx] += in[2 * xx] + in[2 * xx + 1];
        else if (k == 3)
            for (int xx = 0; xx < nw; xx++) out[xx] = out[xx] + in[3 * xx] + in[3 * xx + 1] + in[3 * xx + 2];
        else if (k == 4)
            for (int xx = 0; xx < nw; xx++)
                out[xx] = out[xx] + in[4 * xx] + in[4 * xx + 1] + in[4 * xx + 2] + in[4 * xx + 3];
        else
            for (int xx = 0; xx < nw; xx++)
                for (int i = 0; i < k; i++) out[xx] += in[xx * k + i];
    }
    float inv = 1.0f / (float)(k * k);
    for (int xx = 0; xx < nw; xx++) out[xx] *= inv;
}

/* Mean of the w x h window y (rows stride apart), over every MEAN_STEP-th
 * row: the value given to samples a warp takes from outside the suspect. */
#define MEAN_STEP 4
static float window_mean(const float *y, size_t stride, int w, int h)
{
    double mean = 0;
    int rows = 0;
    for (int r = 0; r < h; r += MEAN_STEP, rows++) {
        const float *row = y + (size_t)r * stride;
        float part[8] = {0};
        int i = 0;
        for (; i + 8 <= w; i += 8)
            for (int j = 0; j < 8; j++) part[j] += row[i + j];
        for (; i < w; i++) part[0] += row[i];
        for (int j = 0; j < 8; j++) mean += part[j];
    }
    return (float)(mean / ((double)w * rows));
}

/* Output pixel (xx, yy) samples the source at p0 + xx * (dxx, dxy) + yy * (dyx, dyy). */
typedef struct affine {
    double p0x, p0y, dxx, dxy, dyx, dyy;
} affine;

/* Rows of the separable pass's horizontal resampling kept at once: an
 * output row reads 4 consecutive source rows, and a shrink of at most 2x
 * (larger ones are box-averaged first) moves on by at most 3 per row. */
#define HCACHE 8

/* See sync.h: the warp under way, made row by row. */
struct tm_warp {
    const float *src;  /* the region read, or its box-shrunk copy */
    size_t stride;
    int sw, sh, W, H;  /* source samples (block means when k > 1), output */
    int k;             /* block side of the shrink, 1 for none */
    float *srow;       /* a row of block means, when made row by row */
    float fill;        /* the region's mean, for samples outside it */
    affine m;
    float *shrunk;     /* owned, when box-averaged */
    /* The separable case (no rotation): taps per output column and row, and
     * the horizontal resampling of the last HCACHE source rows used. */
    int separable;
    int *fx, *fy;
    const float **wx, **wy;
    float *hrow;       /* HCACHE x W */
    int htag[HCACHE];  /* source row held in each slot, -1 for none */
};

/* First tap and weights of each of n output positions p0 + i * step along a
 * source axis of length len; first < 0 when the taps leave the axis. */
static void axis_taps(double p0, double step, int n, int len, int *first, const float **wt)
{
    for (int i = 0; i < n; i++) {
        double p = p0 + i * step;
        int k = (int)floor(p);
        first[i] = k >= 1 && k + 2 < len ? k - 1 : -1;
        wt[i] = lut[first[i] >= 0 ? (int)((p - k) * PHASES + 0.5) : 0];
    }
}

/* Source row r resampled across (the separable case), from the cache. */
static const float *hpass(tm_warp *wp, int r)
{
    float *t = wp->hrow + (size_t)(r % HCACHE) * wp->W;
    if (wp->htag[r % HCACHE] == r) return t;
    wp->htag[r % HCACHE] = r;
    const float *row = wp->src + (size_t)r * wp->stride;
    if (wp->k > 1) { /* the block means of the region's rows, made here */
        shrink_row(wp->src, wp->stride, wp->sw, wp->k, r, wp->srow);
        row = wp->srow;
    }
    for (int xx = 0; xx < wp->W; xx++) {
        const float *p = row + wp->fx[xx], *w4 = wp->wx[xx];
        t[xx] = wp->fx[xx] < 0 ? wp->fill : w4[0] * p[0] + w4[1] * p[1] + w4[2] * p[2] + w4[3] * p[3];
    }
    return t;
}

/* Four floats in one register (GCC and Clang vector extension): the
 * general map's taps, a row of four at a time, in the scalar order. */
typedef float v4sf __attribute__((vector_size(16)));

/* Fixed-point source coordinates: 32 fractional bits keep a walk across
 * 4096 pixels exact to far below a phase step. */
#define FIX_ONE 4294967296.0
#define PHASE_SHIFT 24 /* 32 - log2(PHASES): a fraction's phase step */

void tm_warp_row(tm_warp *wp, int yy, float *d)
{
    int W = wp->W;
    if (wp->separable) {
        if (wp->fy[yy] < 0) {
            for (int xx = 0; xx < W; xx++) d[xx] = wp->fill;
            return;
        }
        const float w0 = wp->wy[yy][0], w1 = wp->wy[yy][1], w2 = wp->wy[yy][2], w3 = wp->wy[yy][3];
        const float *restrict t0 = hpass(wp, wp->fy[yy]), *restrict t1 = hpass(wp, wp->fy[yy] + 1);
        const float *restrict t2 = hpass(wp, wp->fy[yy] + 2), *restrict t3 = hpass(wp, wp->fy[yy] + 3);
        float *restrict o = d;
        for (int xx = 0; xx < W; xx++) o[xx] = w0 * t0[xx] + w1 * t1[xx] + w2 * t2[xx] + w3 * t3[xx];
        return;
    }
    /* The general map: 4 x 4 bicubic taps per output pixel, the position
     * walked in fixed point. */
    const affine *m = &wp->m;
    int64_t px = (int64_t)llround((m->p0x + yy * m->dyx) * FIX_ONE), py = (int64_t)llround((m->p0y + yy * m->dyy) * FIX_ONE);
    int64_t sx = (int64_t)llround(m->dxx * FIX_ONE), sy = (int64_t)llround(m->dxy * FIX_ONE);
    size_t stride = wp->stride;
    for (int xx = 0; xx < W; xx++, px += sx, py += sy) {
        int x0 = (int)(px >> 32), y0 = (int)(py >> 32);
        if (x0 < 1 || y0 < 1 || x0 + 2 >= wp->sw || y0 + 2 >= wp->sh) {
            d[xx] = wp->fill;
            continue;
        }
        const float *wx = lut[((uint64_t)(uint32_t)px + (1u << (PHASE_SHIFT - 1))) >> PHASE_SHIFT];
        const float *wy = lut[((uint64_t)(uint32_t)py + (1u << (PHASE_SHIFT - 1))) >> PHASE_SHIFT];
        const float *row = wp->src + (size_t)(y0 - 1) * stride + x0 - 1;
        v4sf r0, r1, r2, r3, h;
        memcpy(&r0, row, sizeof r0);
        memcpy(&r1, row + stride, sizeof r1);
        memcpy(&r2, row + 2 * stride, sizeof r2);
        memcpy(&r3, row + 3 * stride, sizeof r3);
        memcpy(&h, wx, sizeof h);
        v4sf v = (wy[0] * r0 + wy[1] * r1 + wy[2] * r2 + wy[3] * r3) * h; /* the 4 columns, weighted */
        d[xx] = v[0] + v[1] + v[2] + v[3];
    }
}

void tm_warp_dims(const tm_warp *wp, int *W, int *H)
{
    *W = wp->W;
    *H = wp->H;
}

void tm_warp_end(tm_warp *wp)
{
    if (!wp) return;
    tm_big_free(wp->shrunk);
    free(wp->fx);
    free(wp->fy);
    free(wp->wx);
    free(wp->wy);
    free(wp->hrow);
    free(wp->srow);
    free(wp);
}

/* See sync.h. Samples that fall outside the suspect get its mean. Only
 * luminance is read by the detector, so only luminance is warped, and only
 * the centred part of it that the (at most side x side) output reaches is
 * read or box-averaged. */
tm_status tm_warp_begin(const float *y, int w, int h, const tm_geom *g, int side, tm_warp **out)
{
    if (!y || !g || !out || w < 1 || h < 1 || side < 8) return TM_ERR_ARG;
    *out = NULL;
    if (!(g->scale >= 0.05 && g->scale <= 20) || !(fabs(g->rotation_deg) <= 360) || !(fabs(g->log_aspect) <= 1))
        return TM_ERR_ARG;
    double a = g->rotation_deg * M_PI / 180, c = cos(a), sn = sin(a), s = g->scale;
    double ax = exp(0.5 * g->log_aspect), ay = 1 / ax; /* the stretch D */
    double uw = w / ax, uh = h / ay;                    /* the suspect unstretched */
    double ow = ceil((uw * fabs(c) + uh * fabs(sn)) / s), oh = ceil((uw * fabs(sn) + uh * fabs(c)) / s);
    int W = (int)fmin(ow, side), H = (int)fmin(oh, side);
    if (W < 8 || H < 8) return TM_ERR_DIMENSIONS;

    /* Output (xx, yy) samples the suspect at its centre + (xx - ocx) * (dxx,
     * dxy) + (yy - ocy) * (dyx, dyy): the region read is the centred box
     * those reach, plus the taps and one shrink block. */
    int k = s >= 2 ? (int)floor(s) : 1;
    double dxx = ax * s * c, dxy = -ay * s * sn, dyx = ax * s * sn, dyy = ay * s * c;
    double ex = 0.5 * (fabs(dxx) * (W - 1) + fabs(dyx) * (H - 1)) + 2 * k + 2;
    double ey = 0.5 * (fabs(dxy) * (W - 1) + fabs(dyy) * (H - 1)) + 2 * k + 2;
    double cx0 = (w - 1) / 2.0, cy0 = (h - 1) / 2.0;
    int x0 = (int)fmax(0, floor(cx0 - ex)), y0 = (int)fmax(0, floor(cy0 - ey));
    int sw = (int)fmin(w, ceil(cx0 + ex) + 1) - x0, sh = (int)fmin(h, ceil(cy0 + ey) + 1) - y0;
    tm_warp *wp = calloc(1, sizeof *wp);
    if (!wp) return TM_ERR_NOMEM;
    wp->src = y + (size_t)y0 * w + x0;
    wp->stride = (size_t)w;
    wp->W = W;
    wp->H = H;
    double cx = cx0 - x0, cy = cy0 - y0; /* the suspect's centre in the region */
    wp->k = k;
    if (k > 1) { /* block i covers region pixels k i .. k i + k - 1 */
        sw /= k;
        sh /= k;
        cx = (cx - (k - 1) / 2.0) / k;
        cy = (cy - (k - 1) / 2.0) / k;
        dxx /= k, dxy /= k, dyx /= k, dyy /= k;
    }
    tm_status st = TM_ERR_DIMENSIONS;
    if (sw < 4 || sh < 4) goto out;
    wp->sw = sw;
    wp->sh = sh;
    static pthread_once_t lut_once = PTHREAD_ONCE_INIT;
    pthread_once(&lut_once, lut_init);
    double ocx = (W - 1) / 2.0, ocy = (H - 1) / 2.0;
    affine *m = &wp->m;
    *m = (affine){.dxx = dxx, .dxy = dxy, .dyx = dyx, .dyy = dyy};
    m->p0x = cx - ocx * m->dxx - ocy * m->dyx;
    m->p0y = cy - ocx * m->dxy - ocy * m->dyy;
    /* Axis-aligned when the off-axis terms move no sample by a 20th of a
     * pixel: rows, then columns, 4 + 4 taps, and the block means made row by
     * row. Otherwise the block means are made at once. */
    wp->separable = fabs(m->dxy) * W + fabs(m->dyx) * H < 0.05;
    st = TM_ERR_NOMEM;
    wp->fill = window_mean(wp->src, wp->stride, sw * k, sh * k);
    if (k > 1 && !wp->separable) {
        if (!(wp->shrunk = tm_big_alloc((size_t)sw * sh * sizeof(float)))) goto out;
        for (int r = 0; r < sh; r++) shrink_row(wp->src, wp->stride, sw, k, r, wp->shrunk + (size_t)r * sw);
        wp->src = wp->shrunk;
        wp->stride = (size_t)sw;
        wp->k = 1;
    }
    st = TM_OK;
    if (wp->separable) {
        wp->fx = malloc(sizeof(int) * W);
        wp->fy = malloc(sizeof(int) * H);
        wp->wx = malloc(sizeof(float *) * W);
        wp->wy = malloc(sizeof(float *) * H);
        wp->hrow = malloc(sizeof(float) * HCACHE * W);
        wp->srow = k > 1 ? malloc(sizeof(float) * sw) : NULL;
        if (!wp->fx || !wp->fy || !wp->wx || !wp->wy || !wp->hrow || (k > 1 && !wp->srow)) {
            st = TM_ERR_NOMEM;
            goto out;
        }
        axis_taps(m->p0x, m->dxx, W, sw, wp->fx, wp->wx);
        axis_taps(m->p0y, m->dyy, H, sh, wp->fy, wp->wy);
        for (int i = 0; i < HCACHE; i++) wp->htag[i] = -1;
    }
out:
    if (st != TM_OK) tm_warp_end(wp);
    else *out = wp;
    return st;
}

tm_status tm_sync_warp(const float *y, int w, int h, const tm_geom *g, int side, tm_image **out)
{
    if (!out) return TM_ERR_ARG;
    *out = NULL;
    tm_warp *wp;
    tm_status st = tm_warp_begin(y, w, h, g, side, &wp);
    if (st != TM_OK) return st;
    if ((st = tm_image_create(wp->W, wp->H, 1, out)) == TM_OK)
        for (int yy = 0; yy < wp->H; yy++) tm_warp_row(wp, yy, (*out)->plane[0] + (size_t)yy * wp->W);
    tm_warp_end(wp);
    return st;
}
