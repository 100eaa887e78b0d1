/* xform.c -- FFTW plans for the scheme's transforms.
 *
 * FFTW's planner is process-global and not thread-safe: creating or
 * destroying a plan happens under the one mutex below (the library's only
 * global state). Executing a plan is thread-safe, so each object owns its
 * plans and buffers and reuses them for every call ("plan once, execute
 * many"). FFTW_ESTIMATE keeps plans, and so results, identical from run to
 * run (STYLE: determinism). */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>

#include "scheme.h"

static pthread_mutex_t planner_lock = PTHREAD_MUTEX_INITIALIZER;

void tm_fftw_lock(void)
{
    pthread_mutex_lock(&planner_lock);
}

void tm_fftw_unlock(void)
{
    pthread_mutex_unlock(&planner_lock);
}

struct tm_tile_fft {
    int side;
    float *spatial;
    fftwf_complex *spectrum;
    fftwf_plan fwd, inv;
};

tm_status tm_tile_fft_create_side(int side, tm_tile_fft **out)
{
    if (side < TM_TILE) return TM_ERR_ARG;
    tm_tile_fft *t = calloc(1, sizeof *t);
    if (!t) return TM_ERR_NOMEM;
    t->side = side;
    t->spatial = fftwf_malloc(sizeof(float) * (size_t)side * side);
    t->spectrum = fftwf_malloc(sizeof(fftwf_complex) * (size_t)side * (side / 2 + 1));
    if (!t->spatial || !t->spectrum) {
        tm_tile_fft_free(t);
        return TM_ERR_NOMEM;
    }
    tm_fftw_lock();
    t->fwd = fftwf_plan_dft_r2c_2d(side, side, t->spatial, t->spectrum, FFTW_ESTIMATE);
    t->inv = fftwf_plan_dft_c2r_2d(side, side, t->spectrum, t->spatial, FFTW_ESTIMATE);
    tm_fftw_unlock();
    if (!t->fwd || !t->inv) {
        tm_tile_fft_free(t);
        return TM_ERR_INTERNAL;
    }
    *out = t;
    return TM_OK;
}

tm_status tm_tile_fft_create(tm_tile_fft **out)
{
    return tm_tile_fft_create_side(TM_TILE, out);
}

int tm_tile_fft_side(const tm_tile_fft *t)
{
    return t->side;
}

void tm_tile_fft_free(tm_tile_fft *t)
{
    if (!t) return;
    tm_fftw_lock();
    if (t->fwd) fftwf_destroy_plan(t->fwd);
    if (t->inv) fftwf_destroy_plan(t->inv);
    tm_fftw_unlock();
    fftwf_free(t->spatial);
    fftwf_free(t->spectrum);
    free(t);
}

float *tm_tile_fft_spatial(tm_tile_fft *t)
{
    return t->spatial;
}

fftwf_complex *tm_tile_fft_spectrum(tm_tile_fft *t)
{
    return t->spectrum;
}

void tm_tile_fft_forward(tm_tile_fft *t)
{
    fftwf_execute(t->fwd);
}

void tm_tile_fft_inverse(tm_tile_fft *t)
{
    fftwf_execute(t->inv);
}
