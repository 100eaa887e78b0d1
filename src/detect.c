/* detect.c -- the reading half: from a suspect image (and the key) to m soft
 * values, without the original.
 *
 * 1. Prefilter: a local Wiener residual r = (Y - mean) / (var + nu^2) removes
 *    most of the host image and weights pixels by how much host noise they
 *    carry (docs/scheme.md section 7).
 * 2. Fold r modulo the tile: every period of the mark adds up coherently.
 * 3. One 128x128 FFT; per-ring noise power of the band whitens the bins.
 * 4. Pilot: correlating with the keyed pilot for all 128^2 circular shifts
 *    at once (one inverse FFT) finds where the tile grid starts (crops) and
 *    says whether a mark is there at all (z score, Bonferroni over shifts).
 * 5. Payload: the bins, phase-shifted back to the found origin, are despread
 *    into one soft value per codeword bit. */
#include "config.h"

#include <gsl/gsl_cdf.h>
#include <gsl/gsl_sf_erf.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheme.h"
#include "sync.h"

#define RADIUS 3          /* 7x7 local statistics */
#define NU2 4.0           /* assumed mark power in the Wiener weights */

/* dst[x] = mean of src over [x - r, x + r] clipped to the row (w samples). */
static void box_row(const float *src, float *dst, int w, int r)
{
    double acc = 0;
    int lo = 0, hi = -1;
    for (int x = 0; x < w; x++) {
        int want_hi = x + r < w ? x + r : w - 1, want_lo = x - r > 0 ? x - r : 0;
        while (hi < want_hi) acc += src[++hi];
        while (lo < want_lo) acc -= src[lo++];
        dst[x] = (float)(acc / (hi - lo + 1));
    }
}

/* Rows in the window [row - r, row + r] clipped to [0, h). */
static int window_rows(int row, int r, int h)
{
    return (row + r < h ? row + r : h - 1) - (row - r > 0 ? row - r : 0) + 1;
}

#define RING (2 * RADIUS + 1)

/* Wiener residual of the w x h window y (rows stride apart) whose top-left is
 * pixel (ox, oy) of the suspect, folded modulo the tile into fold (TM_TILE^2)
 * in the suspect's coordinates: with m
 * the local mean and v the local mean of (y - m)^2 over 7x7 windows clipped
 * to the image, the residual is (y - m) / (v + NU2). One streaming pass over
 * the rows: row t brings the mean of row t - r and the variance and output of
 * row t - 2r, through rings of 2r + 1 rows, so memory is O(w) whatever h. */
static tm_status fold_residual(const float *y, int w, int h, size_t stride, int ox, int oy, float *fold,
                               double *activity)
{
    const int r = RADIUS;
    size_t ww = (size_t)w;
    float *hm = malloc(sizeof(float) * ww * RING);   /* row box means of y */
    float *dv = malloc(sizeof(float) * ww * RING);   /* y - m */
    float *hv = malloc(sizeof(float) * ww * RING);   /* row box means of (y - m)^2 */
    float *line = malloc(sizeof(float) * ww);
    double *cm = calloc(ww, sizeof(double)), *cv = calloc(ww, sizeof(double));
    tm_status st = TM_ERR_NOMEM;
    if (!hm || !dv || !hv || !line || !cm || !cv) goto out;
    memset(fold, 0, sizeof(float) * TM_TILE * TM_TILE);
    double act = 0;
    for (int t = 0; t < h + 2 * r; t++) {
        /* Column sums of the row means over rows [t - 2r, t]. */
        if (t - 2 * r - 1 >= 0) {
            const float *old = hm + (size_t)((t - 2 * r - 1) % RING) * ww;
            for (int x = 0; x < w; x++) cm[x] -= old[x];
        }
        if (t < h) {
            float *row = hm + (size_t)(t % RING) * ww;
            box_row(y + (size_t)t * stride, row, w, r);
            for (int x = 0; x < w; x++) cm[x] += row[x];
        }
        /* Row a = t - r gets its mean, its deviation and that squared, boxed. */
        int a = t - r;
        if (a - 2 * r - 1 >= 0 && a - 2 * r - 1 < h) {
            const float *old = hv + (size_t)((a - 2 * r - 1) % RING) * ww;
            for (int x = 0; x < w; x++) cv[x] -= old[x];
        }
        if (a >= 0 && a < h) {
            float inv = 1.0f / (float)window_rows(a, r, h);
            const float *src = y + (size_t)a * stride;
            float *d = dv + (size_t)(a % RING) * ww, *hrow = hv + (size_t)(a % RING) * ww;
            for (int x = 0; x < w; x++) {
                d[x] = src[x] - (float)cm[x] * inv;
                line[x] = d[x] * d[x];
            }
            box_row(line, hrow, w, r);
            for (int x = 0; x < w; x++) cv[x] += hrow[x];
        }
        /* Row b = t - 2r is complete: fold its residual. */
        int b = t - 2 * r;
        if (b >= 0) {
            float inv = 1.0f / (float)window_rows(b, r, h);
            const float *d = dv + (size_t)(b % RING) * ww;
            float *frow = fold + (size_t)((b + oy) % TM_TILE) * TM_TILE;
            for (int x = 0, u = ox % TM_TILE; x < w; x++, u = u + 1 < TM_TILE ? u + 1 : 0) {
                float v = (float)cv[x] * inv;
                act += v;
                frow[u] += d[x] / (v + (float)NU2);
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
    free(cm);
    free(cv);
    return st;
}

static double chip_value(const fftwf_complex *spec, const tm_chip *c, double dy, double dx)
{
    /* Undo a circular shift of the tile by (dy, dx): multiply by exp(+2 pi i k.d / T). */
    int fy = c->kx < TM_TILE / 2 ? c->kx : c->kx - TM_TILE;
    double th = 2 * M_PI * (fy * dy + c->ky * dx) / TM_TILE;
    const float *v = spec[(size_t)c->kx * (TM_TILE / 2 + 1) + c->ky];
    double re = v[0] * cos(th) - v[1] * sin(th), im = v[0] * sin(th) + v[1] * cos(th);
    return c->imag ? im : re;
}

#define N_HYPOTHESES 4
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

/* Noise power per ring over every band dimension (pilot and payload). */
static void ring_noise(const tm_layout *lay, const fftwf_complex *spec, double *ring_pow)
{
    int ring_n[TM_RINGS] = {0};
    for (int r = 0; r < TM_RINGS; r++) ring_pow[r] = 0;
    const tm_chip *sets[2] = {lay->pilot, lay->payload};
    size_t counts[2] = {lay->n_pilot, (size_t)TM_CODE_BITS * TM_CHIPS_PER_BIT};
    for (int s = 0; s < 2; s++)
        for (size_t i = 0; i < counts[s]; i++) {
            double v = chip_value(spec, &sets[s][i], 0, 0);
            ring_pow[sets[s][i].ring] += v * v;
            ring_n[sets[s][i].ring]++;
        }
    for (int r = 0; r < TM_RINGS; r++) ring_pow[r] = ring_n[r] ? ring_pow[r] / ring_n[r] : 0;
}

/* The spectrum (into spec) of the tile in fft's spatial buffer, its noise
 * power per ring (ring_pow; zero beyond max_ring, so those
 * rings are left out of every read), and the pilot correlation for every
 * circular shift (corr) with its peak in null standard deviations (*z). */
static void pilot_scan(const tm_layout *lay, tm_tile_fft *fft, int max_ring, fftwf_complex *spec, double *ring_pow,
                       float *corr, double *z)
{
    tm_tile_fft_forward(fft);
    memcpy(spec, tm_tile_fft_spectrum(fft), sizeof(fftwf_complex) * TM_TILE * (TM_TILE / 2 + 1));
    ring_noise(lay, spec, ring_pow);
    for (int r = max_ring + 1; r < TM_RINGS; r++) ring_pow[r] = 0;

    /* Pilot correlation for every circular shift: A(k) = w_k F(k) conj(P(k)). */
    fftwf_complex *a = tm_tile_fft_spectrum(fft);
    memset(a, 0, sizeof(fftwf_complex) * TM_TILE * (TM_TILE / 2 + 1));
    for (size_t i = 0; i < lay->n_pilot; i++) {
        const tm_chip *c = &lay->pilot[i];
        double wgt = ring_pow[c->ring] > 0 ? 1.0 / ring_pow[c->ring] : 0;
        size_t idx = (size_t)c->kx * (TM_TILE / 2 + 1) + c->ky;
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
        if (corr[i] > best) best = corr[i];
    }
    double nn = (double)TM_TILE * TM_TILE, mu = sum / nn, sd = sqrt(fmax(sum2 / nn - mu * mu, 1e-30));
    *z = (best - mu) / sd;
}

/* The n strongest circular local maxima (3x3) of corr, strongest first. */
static void top_peaks(const float *corr, int *py, int *px, int *n, int want)
{
    float val[N_HYPOTHESES];
    *n = 0;
    for (int y = 0; y < TM_TILE; y++)
        for (int x = 0; x < TM_TILE; x++) {
            float v = corr[y * TM_TILE + x];
            int is_max = 1;
            for (int dy = -1; dy <= 1 && is_max; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    if (!dy && !dx) continue;
                    int yy = (y + dy + TM_TILE) % TM_TILE, xx = (x + dx + TM_TILE) % TM_TILE;
                    if (corr[yy * TM_TILE + xx] > v) {
                        is_max = 0;
                        break;
                    }
                }
            if (!is_max || (*n == want && v <= val[want - 1])) continue;
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

/* Soft values with the tile origin at (dy, dx): each bit's weighted,
 * signed sum of its chips, weights 1 / ring noise power. */
static void despread(const tm_layout *lay, const fftwf_complex *spec, const double *ring_pow, double dy, double dx,
                     double *y)
{
    for (int b = 0; b < TM_CODE_BITS; b++) {
        double s = 0;
        const tm_chip *c = &lay->payload[(size_t)b * TM_CHIPS_PER_BIT];
        for (int k = 0; k < TM_CHIPS_PER_BIT; k++) {
            double wgt = ring_pow[c[k].ring] > 0 ? 1.0 / ring_pow[c[k].ring] : 0;
            s += c[k].sign * wgt * chip_value(spec, &c[k], dy, dx);
        }
        y[b] = s;
    }
}

/* Reads the luminance window y (w x h, rows stride apart, top-left at pixel
 * (ox, oy) of the suspect) with the key's layout and a tile FFT workspace
 * made by the caller, so a search over several hypotheses builds
 * them once (tm_detect_search). */
static tm_status detect_luma(const tm_layout *lay, tm_tile_fft *fft, const float *y, int w, int h, size_t stride,
                             int ox, int oy, int max_ring, tm_detection *out)
{
    memset(out, 0, sizeof *out);
    out->pilot_log10_p = 0;
    out->scale = 1.0;
    out->aspect = 1.0;
    float *fold = NULL, *corr = NULL, *corr_d = NULL;
    fftwf_complex *spec = NULL, *spec_d = NULL;
    tm_status st = TM_ERR_NOMEM;
    double ring_pow[TM_RINGS] = {0}, ring_d[TM_RINGS];

    out->usable = (uint64_t)w * h >= (uint64_t)TM_TILE * TM_TILE && w >= TM_TILE / 2 && h >= TM_TILE / 2;
    fold = malloc(sizeof(float) * TM_TILE * TM_TILE);
    spec = fftwf_malloc(sizeof(fftwf_complex) * TM_TILE * (TM_TILE / 2 + 1));
    spec_d = fftwf_malloc(sizeof(fftwf_complex) * TM_TILE * (TM_TILE / 2 + 1));
    corr = malloc(sizeof(float) * TM_TILE * TM_TILE);
    corr_d = malloc(sizeof(float) * TM_TILE * TM_TILE);
    if (!fold || !spec || !spec_d || !corr || !corr_d) goto out;
    double activity;
    if ((st = fold_residual(y, w, h, stride, ox, oy, fold, &activity)) != TM_OK) goto out;
    out->activity = activity;
    if (activity < 0.01) out->usable = 0; /* flat: nothing to read */

    /* Flips and quarter turns of the suspect permute its folded tile (up to a
     * shift, which the pilot search absorbs): try all eight and keep the one
     * whose pilot stands out most (docs/scheme.md section 7). */
    /* A shrunk suspect moves the upper rings to frequencies its compression
     * tends to wipe out: then the rings that stay within the mark's own band
     * (at most max_ring) are also read alone, as a second reading. */
    int readings = max_ring < (int)TM_BAND_HI ? 2 : 1;
    out->pilot_z = -INFINITY;
    for (int rd = 0; rd < readings; rd++)
        for (int d = 0; d < 8; d++) {
            dihedral_permute(fold, tm_tile_fft_spatial(fft), d);
            double z;
            pilot_scan(lay, fft, rd ? max_ring : TM_RINGS, spec_d, ring_d, corr_d, &z);
            if (z > out->pilot_z) {
                out->pilot_z = z;
                out->dihedral = d;
                memcpy(spec, spec_d, sizeof(fftwf_complex) * TM_TILE * (TM_TILE / 2 + 1));
                memcpy(ring_pow, ring_d, sizeof ring_pow);
                memcpy(corr, corr_d, sizeof(float) * TM_TILE * TM_TILE);
            }
        }
    /* P(max of 8 T^2 null correlations per reading >= z) <= readings 8 T^2 Q(z). */
    double lq = out->pilot_z > 0 ? log10(gsl_cdf_ugaussian_Q(out->pilot_z) + 1e-300) : 0;
    if (out->pilot_z > 30) lq = (-out->pilot_z * out->pilot_z / 2 - log(out->pilot_z * sqrt(2 * M_PI))) / M_LN10;
    out->pilot_log10_p = fmin(0.0, lq + log10(readings * 8.0 * TM_TILE * TM_TILE));

    /* Origin hypotheses: the strongest pilot peaks and the uncropped origin.
     * The one whose soft values carry the most energy wins. Both the peaks and
     * the energy are functions of the suspect alone, independent of any
     * innocent codeword, so choosing among them leaves the bound intact. */
    int hy[N_HYPOTHESES + 1], hx[N_HYPOTHESES + 1], nh = 0;
    top_peaks(corr, hy, hx, &nh, N_HYPOTHESES);
    if (out->dihedral == 0) {
        hy[nh] = 0;
        hx[nh] = 0;
        nh++;
    }
    double best_energy = -1;
    for (int k = 0; k < nh; k++) {
        double y_k[TM_CODE_BITS], energy = 0;
        despread(lay, spec, ring_pow, hy[k], hx[k], y_k);
        for (int b = 0; b < TM_CODE_BITS; b++) energy += y_k[b] * y_k[b];
        if (energy > best_energy) {
            best_energy = energy;
            memcpy(out->y, y_k, sizeof y_k);
            out->offset_y = hy[k];
            out->offset_x = hx[k];
        }
    }
    st = TM_OK;
out:
    free(fold);
    free(corr);
    free(corr_d);
    fftwf_free(spec);
    fftwf_free(spec_d);
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
        st = detect_luma(lay, fft, y, img->width, img->height, (size_t)img->width, 0, 0, TM_RINGS, out);
    }
    if (y) detect_end(lay, fft);
    free(y);
    return st;
}

/* Lattice candidates asked of sync.c; of these the identity and the
 * strongest N_SCREEN others are screened with the pilot, and so are the
 * enlarged tiles of large originals as marked (scales 2 .. TM_TILE_SCALE_MAX):
 * a crop of such a copy may be too small for the lattice to show. */
#define N_GEOM 6
#define N_SCREEN 2
#define MAX_SCREEN (N_SCREEN + TM_TILE_SCALE_MAX)
/* Screening reads a central window resampled to about SCREEN_SIDE pixels a
 * side; the final read at most FINAL_SIDE, so cost and memory stay bounded
 * whatever the suspect's size and scale. */
#define SCREEN_SIDE 1024
#define FINAL_SIDE 4096

/* True for the identity, and for lattice estimates so close to it (0.1% in
 * scale, 0.02 degree) that they are the same hypothesis: read as is. */
static int is_identity(const tm_geom *g)
{
    return fabs(g->scale - 1.0) < 1e-3 && fabs(g->rotation_deg) < 0.02 && fabs(g->log_aspect) < 1e-3;
}

/* Detection under hypothesis g, on at most side x side pixels of the marked
 * frame, centred (for the identity, a window of the suspect as it is). */
static tm_status detect_under(const tm_layout *lay, tm_tile_fft *fft, const float *y, int w, int h,
                              const tm_geom *g, int side, tm_detection *out)
{
    if (is_identity(g)) { /* the centred side x side window, as is */
        int cw = w < side ? w : side, ch = h < side ? h : side, ox = (w - cw) / 2, oy = (h - ch) / 2;
        return detect_luma(lay, fft, y + (size_t)oy * w + ox, cw, ch, (size_t)w, ox, oy, TM_RINGS, out);
    }
    /* Ring k lies at k / (128 scale) cycles per suspect pixel: those that a
     * shrink pushed beyond the band's top (TM_BAND_HI / 128) may be gone. */
    int max_ring = (int)floor(TM_BAND_HI * g->scale * fmin(exp(0.5 * g->log_aspect), exp(-0.5 * g->log_aspect)));
    tm_image *warped = NULL;
    tm_status st = tm_sync_warp(y, w, h, g, side, &warped);
    if (st == TM_OK)
        st = detect_luma(lay, fft, warped->plane[0], warped->width, warped->height, (size_t)warped->width, 0, 0,
                         max_ring, out);
    tm_image_free(warped);
    return st;
}

tm_status tm_detect_search(const tm_key *key, const tm_image *img, tm_detection *out)
{
    if (!key || !img || !out) return TM_ERR_ARG;
    tm_geom cands[N_GEOM];
    int ng = 0;
    size_t n = (size_t)img->width * img->height;
    float *y = malloc(n * sizeof(float));
    tm_detection *trial = malloc(sizeof *trial);
    tm_layout *lay = NULL;
    tm_tile_fft *fft = NULL;
    tm_status st = TM_ERR_NOMEM;
    if (!y || !trial) goto out;
    if ((st = detect_begin(key, &lay, &fft)) != TM_OK) goto out;
    tm_luma(img, y);
    if ((st = tm_sync_estimate(y, img->width, img->height, cands, N_GEOM, &ng)) != TM_OK) goto out;

    /* The hypotheses screened: the identity and the integer tile scales
     * while the suspect holds a tile at that scale, then the strongest
     * other lattice estimates. */
    tm_geom screen[MAX_SCREEN];
    int ns = 0;
    for (int f = 1; f <= TM_TILE_SCALE_MAX; f++)
        if (f == 1 || (img->width >= TM_TILE * f && img->height >= TM_TILE * f)) screen[ns++] = (tm_geom){.scale = f};
    for (int k = 0, others = 0; k < ng && others < N_SCREEN; k++)
        if (!is_identity(&cands[k])) {
            screen[ns++] = cands[k];
            others++;
        }

    /* Keep the one whose pilot stands out most: a choice made from the
     * suspect alone, so the accusation bound holds. */
    int best = 0, screened = 0;
    double best_z = -INFINITY;
    for (int k = 0; k < ns; k++) {
        st = detect_under(lay, fft, y, img->width, img->height, &screen[k], SCREEN_SIDE, trial);
        if (st == TM_ERR_DIMENSIONS) continue; /* nothing left at that scale */
        if (st != TM_OK) goto out;
        screened++;
        if (trial->pilot_z > best_z) {
            best_z = trial->pilot_z;
            best = k;
        }
    }
    const tm_geom *g = &screen[best];
    if ((st = detect_under(lay, fft, y, img->width, img->height, g, FINAL_SIDE, out)) != TM_OK) goto out;
    out->scale = g->scale;
    out->rotation_deg = g->rotation_deg;
    out->aspect = exp(g->log_aspect);
    /* Presence evidence pays for every hypothesis screened. */
    out->pilot_log10_p = fmin(0.0, out->pilot_log10_p + log10(screened > 1 ? screened : 1));
    /* The suspect must hold a tile's worth of the original at its own scale. */
    if ((double)img->width * img->height < (double)TM_TILE * TM_TILE * g->scale * g->scale) out->usable = 0;
out:
    detect_end(lay, fft);
    free(y);
    free(trial);
    return st;
}
