/* xform.c -- FFTW plans for the scheme's transforms.
 *
 * FFTW's planner is process-global and not thread-safe, while executing a
 * plan is thread-safe. So every plan the library uses comes from one cache
 * (tm_fft_plan), made once per shape under the one mutex below (the
 * library's only global state) and then executed by any number of callers on
 * their own arrays (FFTW's new-array execute functions: arrays from
 * fftwf_malloc, laid out as planned). Plans live as long as the process.
 *
 * Plans are made with FFTW_ESTIMATE, which keeps them, and so every result,
 * the same from run to run (STYLE: determinism). TRACEMARK_FFTW_WISDOM names
 * a wisdom file to opt into FFTW_MEASURE plans instead: the wisdom is read at
 * the first plan and written back (atomically) whenever a new plan adds to
 * it, so only the first process on a machine pays for measuring. Measured
 * plans may round differently, so a copy marked with them can differ from one
 * marked without in the last bit of a few samples; what is detected does not
 * change. */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "scheme.h"

static pthread_mutex_t planner_lock = PTHREAD_MUTEX_INITIALIZER;

/* Shapes cached: the tile sides (4), the sync window, the mask's strip, the
 * phash, registration's canvases (tm_fft_good_size's ladder: three per
 * octave): well under a hundred. */
#define MAX_PLANS 256

typedef struct plan_entry {
    tm_fft_kind kind;
    int n0, n1;
    fftwf_plan plan;
} plan_entry;

static plan_entry plans[MAX_PLANS];
static int n_plans;
static int planner_ready;
static unsigned planner_flags = FFTW_ESTIMATE;
static char *wisdom_path;
static char *wisdom_saved; /* the wisdom as last read or written: only news is written */

/* Once, under the lock: the flags, and the wisdom when asked for. */
static void planner_init(void)
{
    if (planner_ready) return;
    planner_ready = 1;
    const char *w = getenv("TRACEMARK_FFTW_WISDOM");
    if (!w || !*w || !(wisdom_path = strdup(w))) return;
    planner_flags = FFTW_MEASURE;
    if (fftwf_import_wisdom_from_filename(wisdom_path)) wisdom_saved = fftwf_export_wisdom_to_string();
    /* else none yet, or unreadable: measured afresh and written */
}

/* Writes the accumulated wisdom to wisdom_path through a temporary file, so
 * a reader never sees half of it, when it holds something the file does not;
 * a failure only costs the next process a measurement. */
static void wisdom_save(void)
{
    char *text = fftwf_export_wisdom_to_string();
    if (!text) return;
    if (wisdom_saved && !strcmp(text, wisdom_saved)) {
        free(text);
        return;
    }
    if (tm_file_write_atomic(wisdom_path, text, strlen(text), 0644, 0) != TM_OK) {
        free(text);
        return;
    }
    free(wisdom_saved);
    wisdom_saved = text;
}

/* A new plan of the shape on scratch arrays (FFTW_MEASURE overwrites them). */
static fftwf_plan plan_make(tm_fft_kind kind, int n0, int n1)
{
    size_t nr = 0, nc = 0;
    switch (kind) {
    case TM_FFT_R2C:
    case TM_FFT_C2R: nr = (size_t)n0 * n1, nc = (size_t)n0 * (n1 / 2 + 1); break;
    case TM_FFT_DCT2: nr = (size_t)n0 * n1; break;
    case TM_FFT_DCT2_BLOCKS: nr = (size_t)n0 * n0 * TM_DCT_STRIP; break;
    }
    float *a = fftwf_malloc(sizeof(float) * nr), *b = fftwf_malloc(sizeof(float) * nr);
    fftwf_complex *c = nc ? fftwf_malloc(sizeof(fftwf_complex) * nc) : NULL;
    fftwf_plan p = NULL;
    if (a && b && (c || !nc)) {
        unsigned fl = planner_flags;
        fftw_r2r_kind dct[2] = {FFTW_REDFT10, FFTW_REDFT10};
        int n[2] = {n0, n0}, embed[2] = {n0, n0 * TM_DCT_STRIP};
        switch (kind) {
        case TM_FFT_R2C: p = fftwf_plan_dft_r2c_2d(n0, n1, a, c, fl); break;
        case TM_FFT_C2R: p = fftwf_plan_dft_c2r_2d(n0, n1, c, a, fl); break;
        case TM_FFT_DCT2: p = fftwf_plan_r2r_2d(n0, n1, a, b, dct[0], dct[1], fl); break;
        case TM_FFT_DCT2_BLOCKS:
            p = fftwf_plan_many_r2r(2, n, TM_DCT_STRIP, a, embed, 1, n0, b, embed, 1, n0, dct, fl);
            break;
        }
    }
    fftwf_free(a);
    fftwf_free(b);
    fftwf_free(c);
    return p;
}

fftwf_plan tm_fft_plan(tm_fft_kind kind, int n0, int n1)
{
    if (n0 < 1 || n1 < 1) return NULL;
    fftwf_plan p = NULL;
    pthread_mutex_lock(&planner_lock);
    planner_init();
    for (int i = 0; i < n_plans && !p; i++)
        if (plans[i].kind == kind && plans[i].n0 == n0 && plans[i].n1 == n1) p = plans[i].plan;
    if (!p && n_plans < MAX_PLANS && (p = plan_make(kind, n0, n1))) {
        plans[n_plans++] = (plan_entry){kind, n0, n1, p};
        if (wisdom_path) wisdom_save();
    }
    pthread_mutex_unlock(&planner_lock);
    return p;
}

int tm_fft_good_size(int n)
{
    static const int steps[3] = {4, 5, 6}; /* 2^k times 1, 5/4 and 3/2 */
    for (int base = 16;; base *= 2)
        for (int i = 0; i < 3; i++)
            if (base / 4 * steps[i] >= n || base > (1 << 26)) return base / 4 * steps[i];
}

struct tm_tile_fft {
    int side;
    float *spatial;
    fftwf_complex *spectrum;
    fftwf_plan fwd, inv;      /* from the cache */
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
    t->fwd = tm_fft_plan(TM_FFT_R2C, side, side);
    t->inv = tm_fft_plan(TM_FFT_C2R, side, side);
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
    fftwf_execute_dft_r2c(t->fwd, t->spatial, t->spectrum);
}

void tm_tile_fft_inverse(tm_tile_fft *t)
{
    fftwf_execute_dft_c2r(t->inv, t->spectrum, t->spatial);
}
