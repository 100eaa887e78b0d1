/* metrics.c -- image quality measures for invisibility reports: PSNR over the
 * colour channels and SSIM (Wang, Bovik, Sheikh, Simoncelli 2004) on
 * luminance with the usual 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03. */
#include "config.h"

#include <math.h>
#include <stdlib.h>

#include "scheme.h"

double tm_psnr(const tm_image *a, const tm_image *b)
{
    if (!a || !b || a->width != b->width || a->height != b->height || tm_color_channels(a) != tm_color_channels(b))
        return -1;
    size_t n = (size_t)a->width * a->height;
    int nc = tm_color_channels(a);
    double se = 0;
    for (int c = 0; c < nc; c++)
        for (size_t i = 0; i < n; i++) {
            double d = (double)a->plane[c][i] - b->plane[c][i];
            se += d * d;
        }
    double mse = se / ((double)n * nc);
    return mse <= 0 ? 999.0 : 10 * log10(255.0 * 255.0 / mse);
}

/* Separable Gaussian blur (11 taps, sigma 1.5) of src into dst, valid region
 * only: dst is (w-10) x (h-10). */
static void gauss11(const float *src, float *dst, float *tmp, int w, int h)
{
    double k[11], s = 0;
    for (int i = 0; i < 11; i++) s += k[i] = exp(-(i - 5) * (i - 5) / (2 * 1.5 * 1.5));
    for (int i = 0; i < 11; i++) k[i] /= s;
    int ow = w - 10, oh = h - 10;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < ow; x++) {
            double acc = 0;
            for (int i = 0; i < 11; i++) acc += k[i] * src[(size_t)y * w + x + i];
            tmp[(size_t)y * ow + x] = (float)acc;
        }
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            double acc = 0;
            for (int i = 0; i < 11; i++) acc += k[i] * tmp[(size_t)(y + i) * ow + x];
            dst[(size_t)y * ow + x] = (float)acc;
        }
}

double tm_ssim(const tm_image *a, const tm_image *b)
{
    if (!a || !b || a->width != b->width || a->height != b->height || tm_color_channels(a) != tm_color_channels(b))
        return NAN;
    int w = a->width, h = a->height;
    if (w < 11 || h < 11) return NAN;
    size_t n = (size_t)w * h, m = (size_t)(w - 10) * (h - 10);
    float *buf = malloc(sizeof(float) * (n * 4 + m * 5));
    if (!buf) return NAN;
    float *ya = buf, *yb = ya + n, *prod = yb + n, *tmp = prod + n;
    float *mua = tmp + n, *mub = mua + m, *saa = mub + m, *sbb = saa + m, *sab = sbb + m;
    tm_luma(a, ya);
    tm_luma(b, yb);
    gauss11(ya, mua, tmp, w, h);
    gauss11(yb, mub, tmp, w, h);
    for (size_t i = 0; i < n; i++) prod[i] = ya[i] * ya[i];
    gauss11(prod, saa, tmp, w, h);
    for (size_t i = 0; i < n; i++) prod[i] = yb[i] * yb[i];
    gauss11(prod, sbb, tmp, w, h);
    for (size_t i = 0; i < n; i++) prod[i] = ya[i] * yb[i];
    gauss11(prod, sab, tmp, w, h);
    const double c1 = (0.01 * 255) * (0.01 * 255), c2 = (0.03 * 255) * (0.03 * 255);
    double total = 0;
    for (size_t i = 0; i < m; i++) {
        double ma = mua[i], mb = mub[i];
        double va = saa[i] - ma * ma, vb = sbb[i] - mb * mb, cov = sab[i] - ma * mb;
        total += ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
    }
    free(buf);
    return total / (double)m;
}

const char *tm_scheme_params_json(void)
{
#define STR2(x) #x
#define STR(x) STR2(x)
    return "{\"scheme\": " STR(TM_SCHEME_VERSION) ", \"tile\": " STR(TM_TILE) ", \"code_bits\": " STR(
        TM_CODE_BITS) ", \"band\": [" STR(TM_BAND_LO) ", " STR(TM_BAND_HI) "], \"chips_per_bit\": " STR(TM_CHIPS_PER_BIT) ", \"bias_cutoff\": " STR(TM_BIAS_CUTOFF) ", \"tile_scale_side\": " STR(TM_TILE_SCALE_SIDE) ", \"tile_scale_max\": " STR(TM_TILE_SCALE_MAX) "}";
#undef STR
#undef STR2
}
