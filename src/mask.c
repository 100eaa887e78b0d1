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

/* Block activities of luminance y into act[bh][bw]. */
static tm_status block_activity(const float *y, int w, int bw, int bh, float *act)
{
    float *in = fftwf_malloc(sizeof(float) * (size_t)B * bw * B);
    float *out = fftwf_malloc(sizeof(float) * (size_t)B * bw * B);
    tm_status st = TM_ERR_NOMEM;
    fftwf_plan plan = NULL;
    if (!in || !out) goto out;
    /* One plan transforms a strip of bw horizontally adjacent blocks. */
    int n[2] = {B, B}, embed[2] = {B, bw * B};
    fftw_r2r_kind kinds[2] = {FFTW_REDFT10, FFTW_REDFT10};
    tm_fftw_lock();
    plan = fftwf_plan_many_r2r(2, n, bw, in, embed, 1, B, out, embed, 1, B, kinds, FFTW_ESTIMATE);
    tm_fftw_unlock();
    st = TM_ERR_INTERNAL;
    if (!plan) goto out;
    /* REDFT10 is unnormalised: an orthonormal AC coefficient is raw / 16 for 8x8. */
    const double scale = 1.0 / (16.0 * 16.0 * B * B);
    for (int by = 0; by < bh; by++) {
        for (int r = 0; r < B; r++) memcpy(in + (size_t)r * bw * B, y + (size_t)(by * B + r) * w, sizeof(float) * bw * B);
        fftwf_execute(plan);
        for (int bx = 0; bx < bw; bx++) {
            double e = 0;
            for (int v = 0; v < B; v++)
                for (int u = 0; u < B; u++)
                    if (u + v >= 3) {
                        double c = out[(size_t)v * bw * B + bx * B + u];
                        e += c * c;
                    }
            act[by * bw + bx] = (float)sqrt(e * scale);
        }
    }
    st = TM_OK;
out:
    tm_fftw_lock();
    if (plan) fftwf_destroy_plan(plan);
    tm_fftw_unlock();
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

tm_status tm_mask_compute(const float *y, int w, int h, float *mask)
{
    int bw = w / B, bh = h / B;
    size_t npx = (size_t)w * h;
    if (bw < 1 || bh < 1) {
        for (size_t i = 0; i < npx; i++) mask[i] = 1.0f;
        return TM_OK;
    }
    float *act = malloc(sizeof(float) * (size_t)bw * bh);
    float *m = malloc(sizeof(float) * (size_t)bw * bh);
    if (!act || !m) {
        free(act);
        free(m);
        return TM_ERR_NOMEM;
    }
    tm_status st = block_activity(y, w, bw, bh, act);
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
    /* Bilinear interpolation between block centres. */
    for (int yy = 0; yy < h; yy++) {
        int y0, y1;
        double ty = cell(yy, bh, &y0, &y1);
        for (int xx = 0; xx < w; xx++) {
            int x0, x1;
            double tx = cell(xx, bw, &x0, &x1);
            double top = m[y0 * bw + x0] * (1 - tx) + m[y0 * bw + x1] * tx;
            double bot = m[y1 * bw + x0] * (1 - tx) + m[y1 * bw + x1] * tx;
            mask[(size_t)yy * w + xx] = (float)(top * (1 - ty) + bot * ty);
        }
    }
out:
    free(act);
    free(m);
    return st;
}
