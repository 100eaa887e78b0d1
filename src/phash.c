/* phash.c -- a 64-bit perceptual hash of an image, recorded with each
 * original in the registry so a leaked copy can be matched to its original
 * even after recompression or mild edits (Zauner's DCT hash): luminance
 * area-averaged to 32x32, its 2-D DCT-II (FFTW r2r), and one bit per
 * coefficient of the 8x8 lowest frequencies: above or below their median
 * (the DC term's bit compares the mean with that median). */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "scheme.h"

#define N 32

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

tm_status tm_image_phash(const tm_image *img, uint64_t *hash)
{
    if (!img || !hash) return TM_ERR_ARG;
    int w = img->width, h = img->height;
    size_t n = (size_t)w * h;
    float *y = malloc(n * sizeof(float));
    float *in = fftwf_malloc(sizeof(float) * N * N), *out = fftwf_malloc(sizeof(float) * N * N);
    tm_status st = TM_ERR_NOMEM;
    fftwf_plan plan = NULL;
    if (!y || !in || !out) goto out;
    tm_luma(img, y);
    /* Area average onto N x N cells (each pixel to the cell holding its centre). */
    double sum[N * N] = {0};
    int cnt[N * N] = {0};
    for (int yy = 0; yy < h; yy++) {
        int cy = (int)((yy + 0.5) * N / h);
        for (int xx = 0; xx < w; xx++) {
            int cx = (int)((xx + 0.5) * N / w);
            sum[cy * N + cx] += y[(size_t)yy * w + xx];
            cnt[cy * N + cx]++;
        }
    }
    for (int i = 0; i < N * N; i++) in[i] = cnt[i] ? (float)(sum[i] / cnt[i]) : 0.0f;
    tm_fftw_lock();
    plan = fftwf_plan_r2r_2d(N, N, in, out, FFTW_REDFT10, FFTW_REDFT10, FFTW_ESTIMATE);
    tm_fftw_unlock();
    if (!plan) {
        st = TM_ERR_INTERNAL;
        goto out;
    }
    fftwf_execute(plan);
    float low[64], sorted[63];
    for (int v = 0; v < 8; v++)
        for (int u = 0; u < 8; u++) low[v * 8 + u] = out[v * N + u];
    memcpy(sorted, low + 1, sizeof sorted);
    qsort(sorted, 63, sizeof(float), cmp_float);
    float median = sorted[31];
    uint64_t bits = 0;
    for (int i = 0; i < 64; i++)
        if (low[i] > median) bits |= (uint64_t)1 << i;
    *hash = bits;
    st = TM_OK;
out:
    tm_fftw_lock();
    if (plan) fftwf_destroy_plan(plan);
    tm_fftw_unlock();
    free(y);
    fftwf_free(in);
    fftwf_free(out);
    return st;
}
