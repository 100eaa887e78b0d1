/* mask.c -- the perceptual mask: where the mark may be strong.
 *
 * Noise hides in texture and shows on flat skies and smooth skin. Texture is
 * measured per 8x8 block as the RMS of its block-DCT coefficients of order
 * u+v >= 3 (FFTW r2r, REDFT10): unlike the plain local variance, this ignores
 * smooth gradients, which carry low-order energy but mask nothing. The block
 * activity a is eroded against its 3x3 neighbourhood mean (so a flat block
 * beside an edge stays quiet) and mapped to the weight sqrt(1 + 2 a^2 / C2):
 * SSIM's contrast-structure term loses about n^2 / (2 a^2 + C2 + n^2) when
 * noise of RMS n is added where the signal's RMS is a, so a noise amplitude
 * proportional to sqrt(C2 + 2 a^2) costs the same SSIM everywhere, and flat
 * areas (weight 1) get the least. Weights are interpolated bilinearly to
 * pixels so no block grid shows (docs/scheme.md section 3). */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "scheme.h"

#define B 8
#define SSIM_C2 58.5225  /* (0.03 * 255)^2, SSIM's contrast constant */
#define MASK_HI 8.0       /* no region gets more than 8x the flat-area amplitude */

/* Block activities of luminance y into act[bh][bw]: a strip of 8 rows at a
 * time, TM_DCT_STRIP blocks per transform (the cached plan's layout). */
static tm_status block_activity(const tm_plane *y, int bw, int bh, float *act)
{
    const int S = TM_DCT_STRIP, span = S * B; /* blocks and samples across a chunk */
    int chunks = (bw + S - 1) / S;
    size_t chunk = (size_t)B * span;
    float *in = fftwf_malloc(sizeof(float) * chunk * chunks);
    float *out = fftwf_malloc(sizeof(float) * chunk * chunks);
    fftwf_plan plan = tm_fft_plan(TM_FFT_DCT2_BLOCKS, B, B);
    tm_status st = !in || !out ? TM_ERR_NOMEM : !plan ? TM_ERR_INTERNAL : TM_OK;
    if (st != TM_OK) goto out;
    memset(in, 0, sizeof(float) * chunk * chunks); /* blocks past the last stay empty */
    /* REDFT10 is unnormalised: an orthonormal AC coefficient is raw / 16 for 8x8. */
    const double scale = 1.0 / (16.0 * 16.0 * B * B);
    for (int by = 0; by < bh; by++) {
        for (int c = 0; c < chunks; c++) {
            int x0 = c * span, n = bw * B - x0 < span ? bw * B - x0 : span;
            for (int r = 0; r < B; r++) tm_plane_row(y, by * B + r, x0, n, in + c * chunk + (size_t)r * span);
            fftwf_execute_r2r(plan, in + c * chunk, out + c * chunk);
        }
        for (int bx = 0; bx < bw; bx++) {
            const float *blk = out + (size_t)(bx / S) * chunk + (size_t)(bx % S) * B;
            float e = 0;
            for (int v = 0; v < B; v++) {
                const float *cf = blk + (size_t)v * span;
                for (int u = v < 3 ? 3 - v : 0; u < B; u++) e += cf[u] * cf[u];
            }
            act[by * bw + bx] = (float)sqrt(e * scale);
        }
    }
out:
    fftwf_free(in);
    fftwf_free(out);
    return st;
}

/* For pixel p, the two block centres around it (clamped to 0..nb-1) and the
 * weight of the second. */
static double cell(int p, int nb, int *i0, int *i1)
{
    double f = (p + 0.5) / B - 0.5;
    int a = (int)floor(f);
    double t = f - a;
    *i0 = a < 0 ? 0 : a > nb - 1 ? nb - 1 : a;
    *i1 = a + 1 > nb - 1 ? nb - 1 : a + 1 < 0 ? 0 : a + 1;
    return t;
}

tm_status tm_mask_compute(const tm_plane *y, uint16_t *mask, double *mean_sq)
{
    int w = y->w, h = y->h, bw = w / B, bh = h / B;
    size_t npx = (size_t)w * h;
    if (mean_sq) *mean_sq = 1.0;
    if (bw < 1 || bh < 1) {
        for (size_t i = 0; i < npx; i++) mask[i] = TM_GAIN_ONE;
        return TM_OK;
    }
    float *act = malloc(sizeof(float) * (size_t)bw * bh);
    float *m = malloc(sizeof(float) * (size_t)bw * bh);
    if (!act || !m) {
        free(act);
        free(m);
        return TM_ERR_NOMEM;
    }
    tm_status st = block_activity(y, bw, bh, act);
    if (st != TM_OK) goto out;
    for (int by = 0; by < bh; by++)
        for (int bx = 0; bx < bw; bx++) {
            double s = 0;
            int n = 0;
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int yy = by + dy, xx = bx + dx;
                    if (yy < 0 || yy >= bh || xx < 0 || xx >= bw) continue;
                    s += act[yy * bw + xx];
                    n++;
                }
            double a = fmin(act[by * bw + bx], s / n);
            m[by * bw + bx] = (float)fmin(MASK_HI, sqrt(1 + 2 * a * a / SSIM_C2));
        }
    /* Bilinear interpolation between block centres: the columns' cells and
     * weights once, then per row a blend of two interpolated block rows. */
    st = TM_ERR_NOMEM;
    int *cx = malloc(sizeof(int) * 2 * (size_t)w);
    float *tx = malloc(sizeof(float) * (size_t)w);
    float *top = malloc(sizeof(float) * (size_t)w), *bot = malloc(sizeof(float) * (size_t)w);
    if (cx && tx && top && bot) {
        for (int xx = 0; xx < w; xx++) tx[xx] = (float)cell(xx, bw, &cx[2 * xx], &cx[2 * xx + 1]);
        int row0 = -1, row1 = -1;
        double sq = 0;
        for (int yy = 0; yy < h; yy++) {
            int y0, y1;
            float ty = (float)cell(yy, bh, &y0, &y1);
            if (y0 != row0 || y1 != row1) {
                const float *m0 = m + (size_t)y0 * bw, *m1 = m + (size_t)y1 * bw;
                for (int xx = 0; xx < w; xx++) {
                    float t = tx[xx];
                    int a = cx[2 * xx], b = cx[2 * xx + 1];
                    top[xx] = m0[a] + (m0[b] - m0[a]) * t;
                    bot[xx] = m1[a] + (m1[b] - m1[a]) * t;
                }
                row0 = y0;
                row1 = y1;
            }
            const float *restrict tp = top, *restrict bp = bot;
            uint16_t *restrict o = mask + (size_t)yy * w;
            float part[8] = {0};
            int xx = 0;
            for (; xx + 8 <= w; xx += 8)
                for (int j = 0; j < 8; j++) {
                    float v = tp[xx + j] + (bp[xx + j] - tp[xx + j]) * ty;
                    o[xx + j] = (uint16_t)(v * TM_GAIN_ONE + 0.5f);
                    part[j] += v * v;
                }
            for (; xx < w; xx++) {
                float v = tp[xx] + (bp[xx] - tp[xx]) * ty;
                o[xx] = (uint16_t)(v * TM_GAIN_ONE + 0.5f);
                sq += v * v;
            }
            for (int j = 0; j < 8; j++) sq += part[j];
        }
        if (mean_sq) *mean_sq = sq / (double)npx;
        st = TM_OK;
    }
    free(cx);
    free(tx);
    free(top);
    free(bot);
out:
    free(act);
    free(m);
    return st;
}
