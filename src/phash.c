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
    float *y = malloc(sizeof(float) * (size_t)img->width * img->height);
    if (!y) return TM_ERR_NOMEM;
    tm_luma(img, y);
    tm_plane p = tm_plane_float(y, img->width, img->height);
    tm_status st = tm_phash_luma(&p, hash);
    free(y);
    return st;
}

tm_status tm_phash_luma(const tm_plane *y, uint64_t *hash)
{
    int w = y->w, h = y->h;
    if (!hash || w <= 0 || h <= 0) return TM_ERR_ARG;
    float *in = fftwf_malloc(sizeof(float) * N * N), *out = fftwf_malloc(sizeof(float) * N * N);
    float *row = malloc(sizeof(float) * (size_t)w);
    tm_status st = TM_ERR_NOMEM;
    fftwf_plan plan = NULL;
    if (!in || !out || !row) goto out;
    /* Area average onto N x N cells (each pixel to the cell holding its
     * centre): the columns of a cell are contiguous, so each row adds N
     * runs. */
    double sum[N * N] = {0};
    int nx[N] = {0}, ny[N] = {0}, x0[N + 1];
    for (int xx = 0; xx < w; xx++) nx[(int)((xx + 0.5) * N / w)]++;
    x0[0] = 0;
    for (int cx = 0; cx < N; cx++) x0[cx + 1] = x0[cx] + nx[cx];
    for (int yy = 0; yy < h; yy++) {
        int cy = (int)((yy + 0.5) * N / h);
        ny[cy]++;
        tm_plane_row(y, yy, 0, w, row);
        for (int cx = 0; cx < N; cx++) {
            float part[8] = {0};
            int k = x0[cx];
            for (; k + 8 <= x0[cx + 1]; k += 8)
                for (int j = 0; j < 8; j++) part[j] += row[k + j];
            double run = 0;
            for (; k < x0[cx + 1]; k++) run += row[k];
            for (int j = 0; j < 8; j++) run += part[j];
            sum[cy * N + cx] += run;
        }
    }
    for (int i = 0; i < N * N; i++) {
        int cnt = ny[i / N] * nx[i % N];
        in[i] = cnt ? (float)(sum[i] / cnt) : 0.0f;
    }
    if (!(plan = tm_fft_plan(TM_FFT_DCT2, N, N))) {
        st = TM_ERR_INTERNAL;
        goto out;
    }
    fftwf_execute_r2r(plan, in, out);
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
    free(row);
    fftwf_free(in);
    fftwf_free(out);
    return st;
}
