/* detect.c -- the reading half: from a suspect image (and the key) to m soft
 * values, without the original.
 *
 * 1. Prefilter: a local Wiener residual r = (Y - mean) / (var + nu^2) removes
 *    most of the host image and weights pixels by how much host noise they
 *    carry (docs/scheme.md section 7).
 * 2. Fold r modulo the tile: every period of the mark adds up coherently.
 * 3. One 125x125 FFT; per-ring noise power of the band whitens the bins.
 * 4. Pilot: correlating with the keyed pilot for all 125^2 circular shifts
 *    at once (one inverse FFT) finds where the tile grid starts (crops) and
 *    says whether a mark is there at all (z score, Bonferroni over shifts).
 * 5. Payload: the bins, phase-shifted back to the found origin, are despread
 *    into one soft value per codeword bit. */
#include "config.h"

#include <gsl/gsl_cdf.h>
#include <gsl/gsl_sf_erf.h>
#include <gsl/gsl_statistics_double.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheme.h"
#include "sync.h"

#define RADIUS 3          /* 7x7 local statistics */
#define DIFF_RADIUS 15    /* 31x31 local means for a difference from the original */
#define NU2 4.0           /* assumed mark power in the Wiener weights */

/* dst[x] = mean of src over [x - r, x + r] clipped to the row (w samples):
 * each window summed outright, so the interior vectorises. */
static void box_row(const float *restrict src, float *restrict dst, int w, int r)
{
    for (int x = 0; x < w && x < r; x++) {
        int hi = x + r < w ? x + r : w - 1;
        float acc = 0;
        for (int i = 0; i <= hi; i++) acc += src[i];
        dst[x] = acc / (float)(hi + 1);
    }
    const float inv = 1.0f / (2 * r + 1);
    if (r == RADIUS)
        for (int x = r; x < w - r; x++) { /* the common case, unrolled by the compiler */
            float acc = 0;
            for (int j = 0; j < 2 * RADIUS + 1; j++) acc += src[x - RADIUS + j];
            dst[x] = acc * inv;
        }
    else
        for (int x = r; x < w - r; x++) {
            float acc = 0;
            for (int j = 0; j < 2 * r + 1; j++) acc += src[x - r + j];
            dst[x] = acc * inv;
        }
    for (int x = w - r > r ? w - r : r; x < w; x++) {
        int lo = x - r;
        float acc = 0;
        for (int i = lo; i < w; i++) acc += src[i];
        dst[x] = acc / (float)(w - lo);
    }
}

/* Rows in the window [row - r, row + r] clipped to [0, h). */
static int window_rows(int row, int r, int h)
{
    return (row + r < h ? row + r : h - 1) - (row - r > 0 ? row - r : 0) + 1;
}

/* The rows a read goes through: a window of an image in memory (base, rows
 * stride apart), or a warp's output made row by row (warp). */
typedef struct row_source {
    const float *base;
    size_t stride;
    tm_warp *warp;
} row_source;

/* Row t of src: in memory, or made into slot (w samples). */
static const float *source_row(const row_source *src, int t, float *slot)
{
    if (!src->warp) return src->base + (size_t)t * src->stride;
    tm_warp_row(src->warp, t, slot);
    return slot;
}

/* Wiener residual of the w x h window src whose top-left is pixel (ox, oy)
 * of the suspect, folded modulo the tile into fold (TM_TILE^2) in the
 * suspect's coordinates: with m the local mean over (2 rm + 1)^2 windows and
 * v the local mean of (y - m)^2 over 7x7 ones, both clipped to the image,
 * the residual is (y - m) / (v + NU2). The 7x7 mean (rm = RADIUS) takes out
 * the host but also the lower part of the mark's band; a difference from
 * the original has no host to take out, and a wider one (DIFF_RADIUS) keeps
 * that part, all there is of the mark in a strongly shrunk copy. One
 * streaming pass over the rows: row t brings the mean of row t - rm and the
 * variance and output of row t - rm - RADIUS, through rings of rows, so
 * memory is O(w) whatever h. */
static tm_status fold_residual(const row_source *src, int w, int h, int ox, int oy, int rm, float *fold,
                               double *activity)
{
    const int rv = RADIUS, RM = 2 * rm + 1, RV = 2 * rv + 1;
    size_t ww = (size_t)w;
    float *hm = malloc(sizeof(float) * ww * RM);     /* row box means of y */
    float *dv = malloc(sizeof(float) * ww * RV);     /* y - m */
    float *hv = malloc(sizeof(float) * ww * RV);     /* row box means of (y - m)^2 */
    float *line = malloc(sizeof(float) * ww);
    float *made = src->warp ? malloc(sizeof(float) * ww * RM) : NULL; /* rows of a warp */
    const float **rows = malloc(sizeof(*rows) * RM);  /* row t of the source, until t + rm */
    double *cm = calloc(ww, sizeof(double)), *cv = calloc(ww, sizeof(double));
    tm_status st = TM_ERR_NOMEM;
    if (!hm || !dv || !hv || !line || !rows || !cm || !cv || (src->warp && !made)) goto out;
    memset(fold, 0, sizeof(float) * TM_TILE * TM_TILE);
    double act = 0;
    for (int t = 0; t < h + rm + rv; t++) {
        /* Column sums of the row means over rows [t - 2rm, t]. */
        if (t - 2 * rm - 1 >= 0) {
            const float *old = hm + (size_t)((t - 2 * rm - 1) % RM) * ww;
            for (int x = 0; x < w; x++) cm[x] -= old[x];
        }
        if (t < h) {
            float *row = hm + (size_t)(t % RM) * ww;
            rows[t % RM] = source_row(src, t, made ? made + (size_t)(t % RM) * ww : NULL);
            box_row(rows[t % RM], row, w, rm);
            for (int x = 0; x < w; x++) cm[x] += row[x];
        }
        /* Row a = t - rm gets its mean, its deviation and that squared, boxed. */
        int a = t - rm;
        if (a - 2 * rv - 1 >= 0 && a - 2 * rv - 1 < h) {
            const float *old = hv + (size_t)((a - 2 * rv - 1) % RV) * ww;
            for (int x = 0; x < w; x++) cv[x] -= old[x];
        }
        if (a >= 0 && a < h) {
            float inv = 1.0f / (float)window_rows(a, rm, h);
            const float *ya = rows[a % RM];
            float *d = dv + (size_t)(a % RV) * ww, *hrow = hv + (size_t)(a % RV) * ww;
            for (int x = 0; x < w; x++) {
                d[x] = ya[x] - (float)cm[x] * inv;
                line[x] = d[x] * d[x];
            }
            box_row(line, hrow, w, rv);
            for (int x = 0; x < w; x++) cv[x] += hrow[x];
        }
        /* Row b = a - rv is complete: fold its residual. */
        int b = a - rv;
        if (b >= 0) {
            float inv = 1.0f / (float)window_rows(b, rv, h);
            const float *d = dv + (size_t)(b % RV) * ww;
            float *frow = fold + (size_t)((b + oy) % TM_TILE) * TM_TILE;
            float *q = line; /* the row's residual, then folded */
            float part[8] = {0};
            int x = 0;
            for (; x + 8 <= w; x += 8)
                for (int j = 0; j < 8; j++) {
                    float v = (float)cv[x + j] * inv;
                    part[j] += v;
                    q[x + j] = d[x + j] / (v + (float)NU2);
                }
            for (; x < w; x++) {
                float v = (float)cv[x] * inv;
                act += v;
                q[x] = d[x] / (v + (float)NU2);
            }
            for (int j = 0; j < 8; j++) act += part[j];
            for (int x0 = 0, u = ox % TM_TILE; x0 < w;) {
                int len = TM_TILE - u < w - x0 ? TM_TILE - u : w - x0;
                for (int i = 0; i < len; i++) frow[u + i] += q[x0 + i];
                x0 += len;
                u = 0;
            }
        }
    }
    *activity = act / ((double)w * h);
    st = TM_OK;
out:
    free(hm);
    free(dv);
    free(hv);
    free(line);
    free(made);
    free(rows);
    free(cm);
    free(cv);
    return st;
}

/* exp(2 pi i j / T) for j = 0 .. T-1: every shift the reading undoes is a
 * whole number of pixels, so the phase of a bin is a table lookup. */
typedef struct phase_table {
    double c[TM_TILE], s[TM_TILE];
} phase_table;

static void phase_table_init(phase_table *t)
{
    for (int j = 0; j < TM_TILE; j++) {
        t->c[j] = cos(2 * M_PI * j / TM_TILE);
        t->s[j] = sin(2 * M_PI * j / TM_TILE);
    }
}

/* The phase index (fy dy + ky dx) mod T of every bin for one circular
 * shift (dy, dx), as a row part and a column part: two lookups per chip. */
typedef struct shift_index {
    int row[TM_TILE], col[TM_TILE / 2 + 1];
} shift_index;

static void shift_index_init(shift_index *si, int dy, int dx)
{
    for (int kx = 0; kx < TM_TILE; kx++) {
        int fy = kx <= TM_TILE / 2 ? kx : kx - TM_TILE;
        si->row[kx] = ((fy * dy) % TM_TILE + TM_TILE) % TM_TILE;
    }
    for (int ky = 0; ky <= TM_TILE / 2; ky++) si->col[ky] = (ky * dx) % TM_TILE;
}

static double chip_value(const fftwf_complex *spec, const tm_chip *c, const phase_table *ph, const shift_index *si)
{
    /* Undo a circular shift of the tile by (dy, dx): multiply by exp(+2 pi i k.d / T). */
    int j = si->row[c->kx] + si->col[c->ky];
    j = j >= TM_TILE ? j - TM_TILE : j;
    const float *v = spec[(size_t)c->kx * (TM_TILE / 2 + 1) + c->ky];
    double re = v[0] * ph->c[j] - v[1] * ph->s[j], im = v[0] * ph->s[j] + v[1] * ph->c[j];
    return c->imag ? im : re;
}

#define N_PEAKS 8 /* origin candidates per symmetry and reading */
#define TM_RINGS 64

/* The eight symmetries of the square tile: dst(u, v) = src(P_d(u, v)) with
 * P_d = optional transpose (bit 2), then negate x (bit 0) and/or y (bit 1).
 * When the suspect is the original with its pixel coordinates mapped by P_d,
 * permuting its fold by P_d restores the original fold up to a shift. */
static void dihedral_permute(const float *src, float *dst, int d)
{
    for (int v = 0; v < TM_TILE; v++)
        for (int u = 0; u < TM_TILE; u++) {
            int x = d & 4 ? v : u, yy = d & 4 ? u : v;
            if (d & 1) x = TM_TILE - 1 - x;
            if (d & 2) yy = TM_TILE - 1 - yy;
            dst[v * TM_TILE + u] = src[yy * TM_TILE + x];
        }
}

#define SPEC_BINS (TM_TILE * (TM_TILE / 2 + 1))

/* Each band bin's weight, 1 / its noise power per dimension, for the
 * spectrum spec; zero outside the band and beyond ring max_ring, so those
 * bins are left out of every read. The noise power is the mean power of the
 * bin's ring over its band dimensions (pilot and payload), or the bin's own
 * power when that is larger: a bin swollen by a periodic artefact (a JPEG
 * block grid, a screen's pixel pattern) then counts for little instead of
 * flooding the read. The weights depend on the suspect alone, and on bin
 * magnitudes only, which no shift of the tile changes. */
static void bin_weights(const tm_layout *lay, const fftwf_complex *spec, int max_ring, float *wbin)
{
    double level[TM_RINGS] = {0};
    int n[TM_RINGS] = {0};
    const tm_chip *sets[2] = {lay->pilot, lay->payload};
    size_t counts[2] = {lay->n_pilot, (size_t)TM_CODE_BITS * TM_CHIPS_PER_BIT};
    for (int s = 0; s < 2; s++)
        for (size_t i = 0; i < counts[s]; i++) {
            const tm_chip *c = &sets[s][i];
            const float *v = spec[(size_t)c->kx * (TM_TILE / 2 + 1) + c->ky];
            level[c->ring] += c->imag ? (double)v[1] * v[1] : (double)v[0] * v[0];
            n[c->ring]++;
        }
    memset(wbin, 0, sizeof(float) * SPEC_BINS);
    for (int s = 0; s < 2; s++)
        for (size_t i = 0; i < counts[s]; i++) {
            const tm_chip *c = &sets[s][i];
            if (c->ring > max_ring) continue;
            size_t idx = (size_t)c->kx * (TM_TILE / 2 + 1) + c->ky;
            double own = 0.5 * ((double)spec[idx][0] * spec[idx][0] + (double)spec[idx][1] * spec[idx][1]);
            double noise = fmax(level[c->ring] / n[c->ring], own);
            wbin[idx] = noise > 0 ? (float)(1.0 / noise) : 0.f;
        }
}

/* For the tile spectrum spec: its band bins' weights (wbin, bin_weights),
 * and the pilot correlation for every circular shift in null standard
 * deviations (corr), with its peak (*z); fft is the workspace. */
static void pilot_scan(const tm_layout *lay, tm_tile_fft *fft, int max_ring, const fftwf_complex *spec, float *wbin,
                       float *corr, double *z)
{
    bin_weights(lay, spec, max_ring, wbin);

    /* Pilot correlation for every circular shift: A(k) = w_k F(k) conj(P(k)). */
    fftwf_complex *a = tm_tile_fft_spectrum(fft);
    memset(a, 0, sizeof(fftwf_complex) * TM_TILE * (TM_TILE / 2 + 1));
    for (size_t i = 0; i < lay->n_pilot; i++) {
        const tm_chip *c = &lay->pilot[i];
        size_t idx = (size_t)c->kx * (TM_TILE / 2 + 1) + c->ky;
        double wgt = wbin[idx];
        double fr = spec[idx][0], fi = spec[idx][1];
        if (!c->imag) { /* F conj(s) */
            a[idx][0] += (float)(wgt * c->sign * fr);
            a[idx][1] += (float)(wgt * c->sign * fi);
        } else { /* F conj(i s) = -i s F */
            a[idx][0] += (float)(wgt * c->sign * fi);
            a[idx][1] += (float)(-wgt * c->sign * fr);
        }
    }
    tm_tile_fft_inverse(fft);
    memcpy(corr, tm_tile_fft_spatial(fft), sizeof(float) * TM_TILE * TM_TILE);
    double sum = 0, sum2 = 0, best = -INFINITY;
    for (int i = 0; i < TM_TILE * TM_TILE; i++) {
        sum += corr[i];
        sum2 += (double)corr[i] * corr[i];
    }
    double nn = (double)TM_TILE * TM_TILE, mu = sum / nn, sd = sqrt(fmax(sum2 / nn - mu * mu, 1e-30));
    for (int i = 0; i < TM_TILE * TM_TILE; i++) {
        corr[i] = (float)((corr[i] - mu) / sd);
        if (corr[i] > best) best = corr[i];
    }
    *z = best;
}

/* The n strongest circular local maxima (3x3) of corr, strongest first. */
static void top_peaks(const float *corr, int *py, int *px, int *n, int want)
{
    float val[N_PEAKS];
    *n = 0;
    for (int y = 0; y < TM_TILE; y++)
        for (int x = 0; x < TM_TILE; x++) {
            float v = corr[y * TM_TILE + x];
            if (*n == want && v <= val[want - 1]) continue; /* too weak to enter, maximum or not */
            int rows[3] = {(y + TM_TILE - 1) % TM_TILE, y, (y + 1) % TM_TILE};
            int cols[3] = {(x + TM_TILE - 1) % TM_TILE, x, (x + 1) % TM_TILE};
            int is_max = 1;
            for (int i = 0; i < 3 && is_max; i++)
                for (int j = 0; j < 3; j++)
                    if ((i != 1 || j != 1) && corr[rows[i] * TM_TILE + cols[j]] > v) {
                        is_max = 0;
                        break;
                    }
            if (!is_max) continue;
            int i = *n < want ? (*n)++ : want - 1;
            while (i > 0 && val[i - 1] < v) {
                val[i] = val[i - 1];
                py[i] = py[i - 1];
                px[i] = px[i - 1];
                i--;
            }
            val[i] = v;
            py[i] = y;
            px[i] = x;
        }
}

/* Soft values with the tile origin at (dy, dx): each bit's weighted, signed
 * sum of its chips (weights: bin_weights). Returns the payload's energy,
 * the sum over bits of y^2 / var(y): when no mark is aligned there it is
 * what any shift gives, and it grows by the mark's energy when one is,
 * whatever the copy's bits. */
static double despread(const tm_layout *lay, const fftwf_complex *spec, const float *wbin,
                       const phase_table *ph, int dy, int dx, double *y)
{
    double energy = 0;
    shift_index si;
    shift_index_init(&si, dy, dx);
    for (int b = 0; b < TM_CODE_BITS; b++) {
        double s = 0, var = 0;
        const tm_chip *c = &lay->payload[(size_t)b * TM_CHIPS_PER_BIT];
        for (int k = 0; k < TM_CHIPS_PER_BIT; k++) {
            double wgt = wbin[(size_t)c[k].kx * (TM_TILE / 2 + 1) + c[k].ky];
            s += c[k].sign * wgt * chip_value(spec, &c[k], ph, &si);
            var += wgt;
        }
        y[b] = s;
        if (var > 0) energy += s * s / var;
    }
    return energy;
}

/* The payload energy's mean and standard deviation over NULL_SHIFTS fixed
 * shifts spread over the tile: an empirical null for this spectrum and
 * weighting (a shift that happened to be aligned would only make the test
 * more cautious). */
#define NULL_SHIFTS 32
static void energy_null(const tm_layout *lay, const fftwf_complex *spec, const float *wbin, const phase_table *ph,
                        double *mean, double *sd)
{
    double e[NULL_SHIFTS], yb[TM_CODE_BITS];
    for (int j = 0; j < NULL_SHIFTS; j++)
        e[j] = despread(lay, spec, wbin, ph, (37 * j + 11) % TM_TILE, (71 * j + 53) % TM_TILE, yb);
    *mean = gsl_stats_mean(e, 1, NULL_SHIFTS);
    *sd = fmax(gsl_stats_sd_m(e, 1, NULL_SHIFTS, *mean), 1e-30);
}

/* Reads the luminance window src (w x h, top-left at pixel (ox, oy) of the
 * suspect) with the key's layout and a tile FFT workspace
 * made by the caller, so a search over several hypotheses builds
 * them once (tm_detect_search). */
static tm_status detect_luma(const tm_layout *lay, tm_tile_fft *fft, const row_source *src, int w, int h, int ox,
                             int oy, int max_ring, int rm, tm_detection *out)
{
    memset(out, 0, sizeof *out);
    out->pilot_log10_p = 0;
    out->scale = 1.0;
    out->aspect = 1.0;
    float *fold = NULL, *corr = NULL;
    fftwf_complex *spec = NULL;
    tm_status st = TM_ERR_NOMEM;
    float *wbin = malloc(sizeof(float) * SPEC_BINS);
    phase_table ph;
    phase_table_init(&ph);

    out->usable = (uint64_t)w * h >= (uint64_t)TM_TILE * TM_TILE && w >= TM_TILE / 2 && h >= TM_TILE / 2;
    fold = malloc(sizeof(float) * TM_TILE * TM_TILE);
    spec = malloc(sizeof(fftwf_complex) * 8 * SPEC_BINS); /* one per symmetry */
    corr = malloc(sizeof(float) * TM_TILE * TM_TILE);
    if (!fold || !spec || !corr || !wbin) goto out;
    double activity;
    if ((st = fold_residual(src, w, h, ox, oy, rm, fold, &activity)) != TM_OK) goto out;
    out->activity = activity;
    if (activity < 0.01) out->usable = 0; /* flat: nothing to read */

    /* Flips and quarter turns of the suspect permute its folded tile (up to a
     * shift, which the pilot search absorbs): all eight are tried.
     * Compression wipes out the upper rings first, and a shrink moves them
     * to higher frequencies still, so besides all rings, those that stay
     * within the mark's own band (at most max_ring) and the lower half of
     * these are read alone: up to three readings.
     * For each, the strongest pilot peaks (and the uncropped origin) are
     * despread; the alignment kept is the one with the most evidence, pilot z
     * and payload energy z together (docs/scheme.md section 7). Every one of
     * these is a function of the suspect alone, independent of any innocent
     * codeword, so choosing among them leaves the accusation bound intact. */
    int cut[3], readings = 0, top = max_ring < (int)TM_BAND_HI ? max_ring : (int)TM_BAND_HI;
    cut[readings++] = TM_RINGS;
    if (top < (int)TM_BAND_HI) cut[readings++] = top;
    if (top / 2 > (int)TM_BAND_LO) cut[readings++] = top / 2 + (int)TM_BAND_LO / 2;
    out->pilot_z = -INFINITY;
    out->evidence = -INFINITY;
    for (int d = 0; d < 8; d++) { /* the eight spectra, the same for every reading */
        dihedral_permute(fold, tm_tile_fft_spatial(fft), d);
        tm_tile_fft_forward(fft);
        memcpy(spec + (size_t)d * SPEC_BINS, tm_tile_fft_spectrum(fft), sizeof(fftwf_complex) * SPEC_BINS);
    }
    for (int rd = 0; rd < readings; rd++)
        for (int d = 0; d < 8; d++) {
            const fftwf_complex *sd = spec + (size_t)d * SPEC_BINS;
            double z;
            pilot_scan(lay, fft, cut[rd], sd, wbin, corr, &z);
            if (z > out->pilot_z) out->pilot_z = z;
            int hy[N_PEAKS + 1], hx[N_PEAKS + 1], nh = 0;
            top_peaks(corr, hy, hx, &nh, N_PEAKS);
            if (d == 0) {
                hy[nh] = 0;
                hx[nh] = 0;
                nh++;
            }
            double e_mean, e_sd;
            energy_null(lay, sd, wbin, &ph, &e_mean, &e_sd);
            for (int k = 0; k < nh; k++) {
                double y_k[TM_CODE_BITS];
                double z_e = (despread(lay, sd, wbin, &ph, hy[k], hx[k], y_k) - e_mean) / e_sd;
                double e = (corr[hy[k] * TM_TILE + hx[k]] + z_e) / sqrt(2.0);
                if (e > out->evidence) {
                    out->evidence = e;
                    out->dihedral = d;
                    out->offset_y = hy[k];
                    out->offset_x = hx[k];
                    memcpy(out->y, y_k, sizeof y_k);
                }
            }
        }
    /* P(max of 8 T^2 null correlations per reading >= z) <= readings 8 T^2 Q(z). */
    double lq = out->pilot_z > 0 ? log10(gsl_cdf_ugaussian_Q(out->pilot_z) + 1e-300) : 0;
    if (out->pilot_z > 30) lq = (-out->pilot_z * out->pilot_z / 2 - log(out->pilot_z * sqrt(2 * M_PI))) / M_LN10;
    out->pilot_log10_p = fmin(0.0, lq + log10(readings * 8.0 * TM_TILE * TM_TILE));
    st = TM_OK;
out:
    free(fold);
    free(corr);
    free(wbin);
    free(spec);
    return st;
}

/* Makes the key's layout and a tile FFT workspace (freed by detect_end). */
static tm_status detect_begin(const tm_key *key, tm_layout **lay, tm_tile_fft **fft)
{
    *lay = NULL;
    *fft = NULL;
    tm_status st = tm_layout_create(key, lay);
    if (st == TM_OK) st = tm_tile_fft_create(fft);
    return st;
}

static void detect_end(tm_layout *lay, tm_tile_fft *fft)
{
    tm_layout_free(lay);
    tm_tile_fft_free(fft);
}

tm_status tm_detect_run(const tm_key *key, const tm_image *img, tm_detection *out)
{
    if (!key || !img || !out) return TM_ERR_ARG;
    tm_layout *lay;
    tm_tile_fft *fft;
    float *y = malloc(sizeof(float) * (size_t)img->width * img->height);
    tm_status st = y ? detect_begin(key, &lay, &fft) : TM_ERR_NOMEM;
    if (st == TM_OK) {
        tm_luma(img, y);
        row_source src = {.base = y, .stride = (size_t)img->width};
        st = detect_luma(lay, fft, &src, img->width, img->height, 0, 0, TM_RINGS, RADIUS, out);
    }
    if (y) detect_end(lay, fft);
    free(y);
    return st;
}

tm_status tm_detect_difference(const tm_key *key, const tm_image *diff, tm_detection *out)
{
    if (!key || !diff || !out || diff->channels != 1) return TM_ERR_ARG;
    tm_layout *lay;
    tm_tile_fft *fft;
    tm_detection *wide = malloc(sizeof *wide);
    tm_status st = wide ? detect_begin(key, &lay, &fft) : TM_ERR_NOMEM;
    if (st != TM_OK) {
        free(wide);
        return st;
    }
    /* Read with the blind prefilter and with the wide one: what a
     * difference holds besides the mark (tone left over, the host where the
     * fit is off) decides which keeps more of it. The one with more evidence
     * is kept, a choice made from the difference alone; its pilot p-value
     * pays for the two. */
    int w = diff->width, h = diff->height;
    row_source src = {.base = diff->plane[0], .stride = (size_t)w};
    st = detect_luma(lay, fft, &src, w, h, 0, 0, TM_RINGS, RADIUS, out);
    if (st == TM_OK) st = detect_luma(lay, fft, &src, w, h, 0, 0, TM_RINGS, DIFF_RADIUS, wide);
    if (st == TM_OK) {
        if (wide->evidence > out->evidence) *out = *wide;
        out->pilot_log10_p = fmin(0.0, out->pilot_log10_p + log10(2.0));
        /* a difference too flat to read says the suspect is the original,
         * no mark: read (and finding none) when it covers a tile */
        if (!out->usable && out->activity < 0.01 && (size_t)w * h >= (size_t)TM_TILE * TM_TILE) out->usable = 1;
    }
    detect_end(lay, fft);
    free(wide);
    return st;
}

/* Lattice candidates asked of sync.c; of these the identity and the
 * strongest N_SCREEN others are screened with the pilot, and so are the
 * enlarged tiles of large originals as marked (scales 2 .. TM_TILE_SCALE_MAX):
 * a crop of such a copy may be too small for the lattice to show. */
#define N_GEOM 6
#define N_SCREEN 2
#define MAX_SCREEN (TM_SYNC_MAX_STAGES * N_SCREEN + TM_TILE_SCALE_MAX)
/* Screening reads a central window resampled to about SCREEN_SIDE pixels a
 * side; the final read at most FINAL_SIDE, so cost and memory stay bounded
 * whatever the suspect's size and scale. */
#define SCREEN_SIDE 1024
#define FINAL_SIDE 4096
/* Below this evidence (pilot and payload z combined) the best screened
 * hypothesis is not taken on trust: up to N_RUNNERS_UP others are read in full. */
#define SURE_EVIDENCE 8.0
#define N_RUNNERS_UP 2

/* True for the identity, and for lattice estimates so close to it that they
 * are the same hypothesis, read as is: within 0.1% in scale, 0.02 degree,
 * or moving no pixel of the w x h suspect (as far as the final read goes)
 * by half a pixel, which on a small suspect is beyond what its lattice can
 * tell apart from the identity. */
static int is_identity(const tm_geom *g, int w, int h)
{
    double ds = fabs(g->scale - 1.0), dt = fabs(g->rotation_deg) * M_PI / 180, da = fabs(g->log_aspect);
    if (ds < 1e-3 && dt < 0.02 * M_PI / 180 && da < 1e-3) return 1;
    double r = 0.5 * hypot(fmin(w, FINAL_SIDE), fmin(h, FINAL_SIDE));
    return r * (ds + dt + 0.5 * da) < 0.5;
}

/* Detection under hypothesis g, on at most side x side pixels of the marked
 * frame, centred (for the identity, a window of the suspect as it is). */
static tm_status detect_under(const tm_layout *lay, tm_tile_fft *fft, const float *y, int w, int h,
                              const tm_geom *g, int side, tm_detection *out)
{
    if (is_identity(g, w, h)) { /* the centred side x side window, as is */
        int cw = w < side ? w : side, ch = h < side ? h : side, ox = (w - cw) / 2, oy = (h - ch) / 2;
        row_source src = {.base = y + (size_t)oy * w + ox, .stride = (size_t)w};
        return detect_luma(lay, fft, &src, cw, ch, ox, oy, TM_RINGS, RADIUS, out);
    }
    /* Ring k lies at k / (125 scale) cycles per suspect pixel: those that a
     * shrink pushed beyond the band's top (TM_BAND_HI / 125) may be gone. */
    int max_ring = (int)floor(TM_BAND_HI * g->scale * fmin(exp(0.5 * g->log_aspect), exp(-0.5 * g->log_aspect)));
    row_source src = {0};
    tm_status st = tm_warp_begin(y, w, h, g, side, &src.warp);
    if (st == TM_OK) {
        int W, H;
        tm_warp_dims(src.warp, &W, &H);
        st = detect_luma(lay, fft, &src, W, H, 0, 0, max_ring, RADIUS, out);
    }
    tm_warp_end(src.warp);
    return st;
}

/* The hypotheses screened so far, most evidence first. */
typedef struct screening {
    tm_geom g[MAX_SCREEN];
    double ev[MAX_SCREEN];
    int order[MAX_SCREEN];
    int n;
} screening;

/* Has g been screened already (a stage repeats an earlier stage's candidates)? */
static int screened(const screening *sc, const tm_geom *g)
{
    for (int i = 0; i < sc->n; i++)
        if (sc->g[i].scale == g->scale && sc->g[i].rotation_deg == g->rotation_deg &&
            sc->g[i].log_aspect == g->log_aspect)
            return 1;
    return 0;
}

/* Screens g on a central window and ranks it; a hypothesis that leaves
 * nothing of the suspect at that scale is dropped. */
static tm_status screen_one(const tm_layout *lay, tm_tile_fft *fft, const float *y, int w, int h, const tm_geom *g,
                            screening *sc, tm_detection *trial)
{
    if (sc->n == MAX_SCREEN) return TM_OK;
    tm_status st = detect_under(lay, fft, y, w, h, g, SCREEN_SIDE, trial);
    if (st == TM_ERR_DIMENSIONS) return TM_OK; /* nothing left at that scale */
    if (st != TM_OK) return st;
    int k = sc->n++, i = k;
    sc->g[k] = *g;
    for (; i > 0 && sc->ev[i - 1] < trial->evidence; i--) {
        sc->ev[i] = sc->ev[i - 1];
        sc->order[i] = sc->order[i - 1];
    }
    sc->ev[i] = trial->evidence;
    sc->order[i] = k;
    return TM_OK;
}

tm_status tm_detect_search(const tm_key *key, const tm_image *img, tm_detection *out)
{
    if (!key || !img || !out) return TM_ERR_ARG;
    tm_geom cands[N_GEOM];
    int ng = 0, w = img->width, h = img->height;
    size_t n = (size_t)w * h;
    /* A one-plane suspect (tm_load_options.luma_only) is its own luminance. */
    float *own = img->channels == 1 ? NULL : tm_big_alloc(n * sizeof(float));
    const float *y = img->channels == 1 ? img->plane[0] : own;
    tm_detection *trial = malloc(sizeof *trial);
    screening *sc = calloc(1, sizeof *sc);
    tm_layout *lay = NULL;
    tm_tile_fft *fft = NULL;
    tm_sync *sync = NULL;
    tm_status st = TM_ERR_NOMEM;
    if (!y || !trial || !sc) goto out;
    if ((st = detect_begin(key, &lay, &fft)) != TM_OK) goto out;
    if (own) tm_luma(img, own);

    /* Each hypothesis is screened on a central window; the one with the
     * most evidence of an aligned mark is read in full. First the
     * geometries of a copy as marked, which need no estimate: the identity
     * and the integer tile scales while the suspect holds a tile at that
     * scale. When one is sure and its full read stays sure, that is the
     * answer: the copy was not resized or turned, and the lattice search
     * has nothing to add. */
    for (int f = 1; f <= TM_TILE_SCALE_MAX; f++)
        if (f == 1 || (w >= TM_TILE * f && h >= TM_TILE * f)) {
            tm_geom g = {.scale = f};
            if ((st = screen_one(lay, fft, y, w, h, &g, sc, trial)) != TM_OK) goto out;
        }
    int best = -1, read = -1; /* read: the hypothesis *out holds the full read of */
    if (sc->n && sc->ev[0] >= SURE_EVIDENCE) {
        read = sc->order[0];
        if ((st = detect_under(lay, fft, y, w, h, &sc->g[read], FINAL_SIDE, out)) != TM_OK) goto out;
        if (out->evidence >= SURE_EVIDENCE) best = read;
    }

    /* Otherwise the lattice estimate's strongest other hypotheses are
     * screened too, stage by stage (sync.h): the next stage runs only when
     * no hypothesis so far is sure on screening and in its full read. After
     * the last stage, when the best evidence is still weak, the screening window
     * may have held too little of the suspect (a shrunk copy warped back
     * covers few of its pixels) to rank them, so the runners-up are read in
     * full too and the most evidence wins. Every choice is made from the
     * suspect alone, so the accusation bound holds. */
    if (best < 0 && (st = tm_sync_begin(y, w, h, &sync)) != TM_OK) goto out;
    for (int more = 1; best < 0 && more;) {
        if ((st = tm_sync_next(sync, cands, N_GEOM, &ng, &more)) != TM_OK) goto out;
        for (int k = 0, others = 0; k < ng && others < N_SCREEN; k++)
            if (!is_identity(&cands[k], w, h)) {
                if (!screened(sc, &cands[k]) && (st = screen_one(lay, fft, y, w, h, &cands[k], sc, trial)) != TM_OK)
                    goto out;
                others++;
            }
        int sure = sc->n && sc->ev[0] >= SURE_EVIDENCE;
        if (more && !sure) continue;
        if (!sc->n) {
            st = TM_ERR_DIMENSIONS;
            goto out;
        }
        int top = sc->order[0];
        if (top != read) {
            if ((st = detect_under(lay, fft, y, w, h, &sc->g[top], FINAL_SIDE, out)) != TM_OK) goto out;
            read = top;
        }
        if (more && out->evidence < SURE_EVIDENCE) continue;
        best = top;
        for (int i = 1; i < sc->n && i <= N_RUNNERS_UP && !sure; i++) {
            if ((st = detect_under(lay, fft, y, w, h, &sc->g[sc->order[i]], FINAL_SIDE, trial)) != TM_OK) goto out;
            if (trial->evidence > out->evidence) {
                *out = *trial;
                best = sc->order[i];
            }
        }
    }
    const tm_geom *g = &sc->g[best];
    out->scale = g->scale;
    out->rotation_deg = g->rotation_deg;
    out->aspect = exp(g->log_aspect);
    /* Presence evidence pays for every hypothesis screened. */
    out->pilot_log10_p = fmin(0.0, out->pilot_log10_p + log10(sc->n > 1 ? sc->n : 1));
    /* The suspect must hold a tile's worth of the original at its own scale. */
    if ((double)w * h < (double)TM_TILE * TM_TILE * g->scale * g->scale) out->usable = 0;
out:
    tm_sync_end(sync);
    detect_end(lay, fft);
    tm_big_free(own);
    free(trial);
    free(sc);
    return st;
}
