/* stages.c -- where the time of `mark` and `trace` goes, stage by stage, on
 * real photos and synthetic sizes, beside the codec and FFT costs of the
 * same pixels measured in the same run (issue 6).
 *
 * Each input is a JPEG: IMAGE as it is (another format is encoded once as
 * JPEG q90 in memory first), or, for -s MP, a deterministic textured RGB
 * picture of about MP megapixels at 16:9 (width a multiple of 16, so -s 2.07
 * gives 1920x1080; sinusoids, a gradient and seeded noise under a smooth
 * envelope, so both the JPEG and the mask see flat and busy parts), encoded
 * once as JPEG q90 4:2:0. The copy is what `tracemark mark` makes for
 * recipient "leaker" (the input's quality and subsampling kept); the trace
 * stages read that copy. One warm-up pass, then RUNS passes on one thread
 * (pin it: taskset -c N), each timing every stage once; stages far below a
 * millisecond are repeated within a pass and reported per call.
 *
 * References (libjpeg-turbo through the TurboJPEG API; FFTW single precision
 * planned with FFTW_ESTIMATE, as the library plans):
 *   djpeg   tjDecompress2 of the same JPEG bytes to 8-bit RGB (gray: gray)
 *   cjpeg   tjCompress2 of the original's 8-bit pixels at q90 4:2:0, and,
 *           when the copy's settings differ, at the copy's quality and
 *           subsampling (what the mark's own encode does: the mark and
 *           batch ratios and the bars use this one)
 *   FFTW    8x8 DCT-II of every block, strip by strip as mask.c plans it;
 *           c2r of the tile side the embedder synthesises; r2c 1024x1024
 *           (the sync window); r2c 125x125 (the read's folded tile)
 *
 * Marking: tm_image_decode, tm_image_decode_planes (a JPEG as stored, what
 * `mark` reads), tm_luma (colour conversion), tm_mask_compute
 * (block DCT included), tm_image_content_hash, tm_embedder_create (hash,
 * luma, mask, gain: the whole analysis), tm_embedder_codeword,
 * tm_tile_fft_inverse and tm_pattern_tile at the embedder's tile side,
 * tm_embedder_mark (codeword, tile, clone, add: the embedding), the marked
 * copy through tm_image_encode q90 4:2:0, tm_image_phash; then the path
 * `mark` takes: tm_embedder_create_data (decode as stored and analysis) and
 * tm_embedder_mark_encode at the copy's settings; then the mark as
 * tools/cmd_mark.c does it for one recipient, bytes to bytes (those two,
 * the codeword and the copy's SHA-256; no files, no registry), and the `tracemark mark`
 * program itself, file to file, with a key and a registry in a scratch
 * directory (process start, key, SQLite commit included).
 *
 * Tracing, on the copy: tm_image_decode, tm_image_decode with luma_only
 * (what `trace` reads), tm_luma, tm_tile_fft_forward
 * (125x125), tm_detect_run (prefilter, fold, tile FFT, pilot, despread,
 * with no geometric search: the prefilter is a static function of detect.c
 * and sync.c with no entry of its own, so prefilter and extraction are timed
 * together), tm_sync_estimate (the geometric search; its 1024x1024 DFTs
 * have no entry either, the FFTW row is their reference), tm_detect_search
 * (search + extraction), tm_trace_score over 1000 copies (registry scoring),
 * tm_trace_run over the same copies, luminance decode + tm_trace_run, and the
 * `tracemark trace` program with a registry of those 1000 copies. A copy at
 * its marked geometry is recognised before any lattice search, so the same
 * two are also timed on the copy resized by 1.03 (RESIZE), where the search
 * runs, beside a djpeg of that file.
 *
 * Batch marking, for each R of -R (default 1,20,100): tm_embedder_create_data
 * once, then R x (codeword, tm_embedder_mark_encode at the copy's settings),
 * beside one djpeg + R cjpeg of the same pixels.
 *
 * Per input: a header, the mark and trace tables (median, min, max ms per
 * call; MP/s of the image, or of the transform for FFT rows; the ratio to
 * the row's reference), the batch table, and a line per bar of the issue
 * that applies: on 12-13 MP, mark file to file <= 1.5 x (djpeg + cjpeg),
 * trace <= 6 x djpeg and 20 copies <= 1.3 x (djpeg + 20 cjpeg); on about
 * 2 MP (1920x1080), mark <= 30 ms. Every pass checks its results: the copy
 * traced in memory and by the program accuses "leaker" alone. Exit 0 when
 * everything ran and checked out (whatever the ratios), 1 when a check
 * failed, 2 on error. Scratch files live in a directory under $TMPDIR (or
 * /tmp), removed on every path out, a signal included.
 *
 *   bench/stages [-r RUNS] [-R RECIPIENTS] [-t TRACEMARK] [IMAGE | -s MP]... */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "bench.h"
#include "scheme.h"
#include "sync.h"
#include "tracemark.h"

#define MAX_RUNS BENCH_MAX_RUNS
/* The second trace suspect: the copy enlarged a little, so no geometry of a
 * copy as marked fits and the lattice search runs; still 12-13 MP for a
 * 12 MP input. */
#define RESIZE_FACTOR "1.03"
#define RESIZE "scale:" RESIZE_FACTOR
#define RESIZE_AREA (1.03 * 1.03)
#define MAX_INPUTS 64
#define MAX_BATCH 8
#define N_COPIES 1000        /* the registry the trace stages score */
#define NAME_LEN 24          /* "innocent-" and a number */
#define MAX_INPUT_BYTES ((size_t)1 << 30)
#define REF_QUALITY 90
#define SYNC_WIN 1024        /* sync.c's analysis window */
#define REPS_TINY 200        /* per pass: codeword */
#define REPS_SMALL 50        /* per pass: 125x125 transforms */
#define REPS_TILE 10         /* per pass: the embedder's tile transforms */

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Parses "1,20,100" into v[], sorted and without repeats; values 1..max. */
static int parse_list(const char *s, int *v, int *n, int max)
{
    *n = 0;
    while (*s) {
        char *end;
        errno = 0;
        long x = strtol(s, &end, 10);
        if (end == s || errno || x < 1 || x > max || (*end && *end != ',') || *n == MAX_BATCH) return -1;
        v[(*n)++] = (int)x;
        s = *end ? end + 1 : end;
    }
    if (*n == 0) return -1;
    qsort(v, (size_t)*n, sizeof *v, cmp_int);
    int k = 1;
    for (int i = 1; i < *n; i++)
        if (v[i] != v[k - 1]) v[k++] = v[i];
    *n = k;
    return 0;
}

static int fail(const char *what, tm_status st)
{
    fprintf(stderr, "stages: %s: %s\n", what, tm_strerror(st));
    return 2;
}

/* ---- scratch files ----------------------------------------------------------- */

enum { F_KEY, F_INPUT, F_COPY, F_REG, F_REG_WAL, F_REG_SHM, F_REG_JOURNAL, F_OUT, F_RESIZED, F_PPM, F_REF, F_REG20, N_FILES };
static const char *const file_name[N_FILES] = {"key",          "input.jpg",       "copy.jpg",
                                               "registry.db",  "registry.db-wal", "registry.db-shm",
                                               "registry.db-journal", "program.out", "resized.jpg",
                                               "ref.ppm",      "ref.jpg",         "registry20.db"};

/* libjpeg-turbo's djpeg and cjpeg programs (Debian: libjpeg-turbo-progs),
 * the references the issue names, when they are installed. */
static char djpeg_prog[4096], cjpeg_prog[4096];

/* name's path in $PATH into buf, or "" when there is none. */
static void find_program(const char *name, char *buf, size_t cap)
{
    buf[0] = 0;
    const char *path = getenv("PATH");
    while (path && *path) {
        const char *end = strchr(path, ':');
        size_t n = end ? (size_t)(end - path) : strlen(path);
        int k = n ? snprintf(buf, cap, "%.*s/%s", (int)n, path, name) : -1;
        if (k > 0 && (size_t)k < cap && access(buf, X_OK) == 0) return;
        path = end ? end + 1 : NULL;
    }
    buf[0] = 0;
}

/* ---- pixels and JPEG references ------------------------------------------- */

static int tj_fail(tjhandle h, const char *what)
{
    fprintf(stderr, "stages: libjpeg-turbo %s: %s\n", what, tjGetErrorStr2(h));
    return 2;
}

static int tj_subsamp(tm_subsampling ss)
{
    switch (ss) {
    case TM_SS_444: return TJSAMP_444;
    case TM_SS_422: return TJSAMP_422;
    case TM_SS_440: return TJSAMP_440;
    case TM_SS_411: return TJSAMP_411;
    case TM_SS_GRAY: return TJSAMP_GRAY;
    default: return TJSAMP_420;
    }
}

/* The colour channels of img as interleaved 8-bit pixels (gray or RGB,
 * alpha dropped) in a malloc'd buffer; *pf gets the TurboJPEG format. */
static unsigned char *pixels_of(const tm_image *img, int *pf)
{
    int nc = tm_color_channels(img) >= 3 ? 3 : 1;
    size_t n = (size_t)img->width * img->height;
    unsigned char *px = malloc(n * (size_t)nc);
    if (!px) return NULL;
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < nc; c++) px[i * (size_t)nc + (size_t)c] = tm_to_u8(img->plane[c][i]);
    *pf = nc == 3 ? TJPF_RGB : TJPF_GRAY;
    return px;
}

/* Encodes 8-bit pixels at q90 (4:2:0, or gray) into a malloc'd *jpg. */
static int encode_q90(tjhandle tjc, const unsigned char *px, int w, int h, int pf, uint8_t **jpg, size_t *len)
{
    unsigned char *buf = NULL;
    unsigned long size = 0;
    int ss = pf == TJPF_GRAY ? TJSAMP_GRAY : TJSAMP_420;
    if (tjCompress2(tjc, px, w, 0, h, pf, &buf, &size, ss, REF_QUALITY, 0) != 0) {
        tjFree(buf);
        return tj_fail(tjc, "encode");
    }
    *jpg = malloc(size);
    if (*jpg) memcpy(*jpg, buf, size);
    *len = size;
    tjFree(buf);
    return *jpg ? 0 : fail("input", TM_ERR_NOMEM);
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The synthetic size for mp megapixels: 16:9, width a multiple of 16. */
static void synth_size(double mp, int *w, int *h)
{
    long k = lround(sqrt(mp * 1e6 * 16.0 / 9.0) / 16.0);
    if (k < 4) k = 4;
    *w = (int)(16 * k);
    *h = (int)(9 * k);
}

/* A deterministic textured w x h RGB picture: a vertical gradient, broad and
 * fine sinusoids (the finest of a 5-7 pixel period) and seeded noise, the
 * fine texture under a smooth envelope so that part of the picture is flat. */
static unsigned char *synth_pixels(int w, int h)
{
    enum { K = 4 };
    const double fx[K] = {2.3, 13.0, w / 6.5, 57.0}, fy[K] = {1.7, 9.0, h / 5.3, 31.0};
    size_t n = (size_t)w * h;
    unsigned char *px = malloc(n * 3);
    float *cx = malloc(sizeof(float) * K * (size_t)w), *cy = malloc(sizeof(float) * K * (size_t)h);
    float *ex = malloc(sizeof(float) * (size_t)w), *ey = malloc(sizeof(float) * (size_t)h);
    if (!px || !cx || !cy || !ex || !ey) {
        free(px);
        px = NULL;
        goto out;
    }
    uint64_t seed = 0x7472616365ULL;
    for (int k = 0; k < K; k++) {
        double phx = (double)(splitmix64(&seed) >> 11) * 0x1p-53 * 2 * M_PI;
        double phy = (double)(splitmix64(&seed) >> 11) * 0x1p-53 * 2 * M_PI;
        for (int x = 0; x < w; x++) cx[k * w + x] = (float)sin(2 * M_PI * fx[k] * x / w + phx);
        for (int y = 0; y < h; y++) cy[k * h + y] = (float)cos(2 * M_PI * fy[k] * y / h + phy);
    }
    for (int x = 0; x < w; x++) ex[x] = (float)sin(2 * M_PI * 1.5 * x / w);
    for (int y = 0; y < h; y++) ey[y] = (float)cos(2 * M_PI * 1.0 * y / h);
    for (int y = 0; y < h; y++) {
        double g = (double)y / h;
        for (int x = 0; x < w; x++) {
            uint64_t r = splitmix64(&seed);
            double nz = (double)(r & 0xffff) / 32768.0 - 1.0, nc = (double)((r >> 16) & 0xffff) / 32768.0 - 1.0;
            double env = 0.5 + 0.5 * ex[x] * ey[y];
            double v = 100 + 60 * g + 40 * cx[x] * cy[y] + 22 * cx[w + x] * cy[h + y] +
                       env * (16 * cx[2 * w + x] * cy[2 * h + y] + 24 * nz);
            double a3 = cx[3 * w + x] * cy[3 * h + y];
            double rgb[3] = {v + 18 * a3 + 6 * nc, 0.95 * v + 5, 0.8 * v + 30 * (1 - g) - 6 * nc};
            unsigned char *p = px + 3 * ((size_t)y * w + x);
            for (int c = 0; c < 3; c++) p[c] = (unsigned char)lrint(rgb[c] < 0 ? 0 : rgb[c] > 255 ? 255 : rgb[c]);
        }
    }
out:
    free(cx);
    free(cy);
    free(ex);
    free(ey);
    return px;
}

/* ---- FFTW references ------------------------------------------------------- */

/* The transforms of the same sizes as the library's, on its data. */
typedef struct fft_refs {
    int bw, bh;                    /* 8x8 blocks per row and column */
    float *dct_in, *dct_out;
    fftwf_plan dct;
    int side;                      /* the embedder's tile */
    fftwf_complex *tile_spec, *tile_save;
    float *tile_out;
    fftwf_plan tile;
    float *win_in, *small_in;
    fftwf_complex *win_out, *small_out;
    fftwf_plan win, small;
} fft_refs;

static void fft_refs_free(fft_refs *f)
{
    if (f->dct) fftwf_destroy_plan(f->dct);
    if (f->tile) fftwf_destroy_plan(f->tile);
    if (f->win) fftwf_destroy_plan(f->win);
    if (f->small) fftwf_destroy_plan(f->small);
    fftwf_free(f->dct_in);
    fftwf_free(f->dct_out);
    fftwf_free(f->tile_spec);
    fftwf_free(f->tile_save);
    fftwf_free(f->tile_out);
    fftwf_free(f->win_in);
    fftwf_free(f->win_out);
    fftwf_free(f->small_in);
    fftwf_free(f->small_out);
    memset(f, 0, sizeof *f);
}

/* Plans the references for a w x h image and a tile of side side; the
 * spectrum tm_tile_fft_inverse and the c2r reference start from is spec. */
static tm_status fft_refs_create(fft_refs *f, int w, int h, int side, const fftwf_complex *spec)
{
    memset(f, 0, sizeof *f);
    f->bw = w / 8;
    f->bh = h / 8;
    f->side = side;
    size_t nt = (size_t)side * (side / 2 + 1);
    size_t strip = (size_t)64 * (f->bw > 0 ? f->bw : 1);
    f->dct_in = fftwf_malloc(sizeof(float) * strip);
    f->dct_out = fftwf_malloc(sizeof(float) * strip);
    f->tile_spec = fftwf_malloc(sizeof(fftwf_complex) * nt);
    f->tile_save = fftwf_malloc(sizeof(fftwf_complex) * nt);
    f->tile_out = fftwf_malloc(sizeof(float) * (size_t)side * side);
    f->win_in = fftwf_malloc(sizeof(float) * SYNC_WIN * SYNC_WIN);
    f->win_out = fftwf_malloc(sizeof(fftwf_complex) * SYNC_WIN * (SYNC_WIN / 2 + 1));
    f->small_in = fftwf_malloc(sizeof(float) * TM_TILE * TM_TILE);
    f->small_out = fftwf_malloc(sizeof(fftwf_complex) * TM_TILE * (TM_TILE / 2 + 1));
    if (!f->dct_in || !f->dct_out || !f->tile_spec || !f->tile_save || !f->tile_out || !f->win_in || !f->win_out ||
        !f->small_in || !f->small_out)
        return TM_ERR_NOMEM;
    memcpy(f->tile_save, spec, sizeof(fftwf_complex) * nt);
    for (size_t i = 0; i < (size_t)SYNC_WIN * SYNC_WIN; i++) f->win_in[i] = (float)(i % 251);
    for (size_t i = 0; i < (size_t)TM_TILE * TM_TILE; i++) f->small_in[i] = (float)(i % 13);
    if (f->bw > 0 && f->bh > 0) {
        int n[2] = {8, 8}, embed[2] = {8, f->bw * 8};
        fftw_r2r_kind kinds[2] = {FFTW_REDFT10, FFTW_REDFT10};
        f->dct = fftwf_plan_many_r2r(2, n, f->bw, f->dct_in, embed, 1, 8, f->dct_out, embed, 1, 8, kinds,
                                     FFTW_ESTIMATE);
        if (!f->dct) return TM_ERR_INTERNAL;
    }
    f->tile = fftwf_plan_dft_c2r_2d(side, side, f->tile_spec, f->tile_out, FFTW_ESTIMATE);
    f->win = fftwf_plan_dft_r2c_2d(SYNC_WIN, SYNC_WIN, f->win_in, f->win_out, FFTW_ESTIMATE);
    f->small = fftwf_plan_dft_r2c_2d(TM_TILE, TM_TILE, f->small_in, f->small_out, FFTW_ESTIMATE);
    return f->tile && f->win && f->small ? TM_OK : TM_ERR_INTERNAL;
}

/* The block DCT of luminance y (w wide), strip by strip as mask.c does it. */
static double fft_dct(fft_refs *f, const float *y, int w)
{
    if (!f->dct) return 0;
    double t0 = bench_now_ms();
    for (int by = 0; by < f->bh; by++) {
        for (int r = 0; r < 8; r++)
            memcpy(f->dct_in + (size_t)r * f->bw * 8, y + (size_t)(by * 8 + r) * w, sizeof(float) * f->bw * 8);
        fftwf_execute(f->dct);
    }
    return bench_now_ms() - t0;
}

/* One c2r of the tile (it destroys its input: refilled, untimed). */
static double fft_tile(fft_refs *f)
{
    double ms = 0;
    for (int k = 0; k < REPS_TILE; k++) {
        memcpy(f->tile_spec, f->tile_save, sizeof(fftwf_complex) * (size_t)f->side * (f->side / 2 + 1));
        double t0 = bench_now_ms();
        fftwf_execute(f->tile);
        ms += bench_now_ms() - t0;
    }
    return ms / REPS_TILE;
}

/* ---- the benchmark of one input -------------------------------------------- */

enum {
    /* marking */
    M_DJPEG, M_CJPEG_REF, M_CJPEG_COPY, M_CODEC, M_FFT_DCT, M_FFT_TILE, M_DECODE, M_DECODE_PLANES, M_LUMA, M_MASK,
    M_HASH, M_CREATE, M_CREATE_DATA, M_CODEWORD, M_TILE_INV, M_PATTERN, M_MARK, M_ENCODE, M_MARK_ENCODE, M_PHASH,
    M_MARK_ALL, M_MARK_CLI, M_START, M_PIPE, M_DJPEG_PROG, M_CJPEG_PROG, M_MARK20_CLI,
    /* tracing */
    T_DJPEG, T_FFT_WIN, T_FFT_125, T_DECODE, T_DECODE_LUMA, T_LUMA, T_TILE_FWD, T_DETECT, T_SYNC, T_SEARCH, T_SCORE, T_TRACE,
    T_TRACE_ALL, T_TRACE_CLI, T_DJPEG_RS, T_TRACE_RS, T_TRACE_RS_CLI, T_DJPEG_PROG, T_DJPEG_PROG_RS,
    /* informed tracing, with the original */
    T_ORIGINAL, T_REGISTER, T_DIFFERENCE, T_INFORMED, T_INFORMED_CLI, T_INFORMED_RS, T_INFORMED_RS_CLI, N_STAGES
};

typedef struct bench {
    int runs;
    const char *program;
    char *const *env;
    const tm_key *key;
    tm_trace_params tp;
    int progress;
    char name[512];
    /* the input, the original decoded, its 8-bit pixels */
    uint8_t *jpg;
    size_t jpg_len;
    tm_image *orig;
    tm_image_info info;
    int w, h;
    double mp;
    tm_save_options so_copy, so_ref;  /* as `mark` writes the copy; q90 4:2:0 */
    int q_copy;
    tm_subsampling ss_copy;
    int copy_differs;                 /* the copy's settings are not q90 4:2:0 */
    tjhandle tjd, tjc;
    unsigned char *pix, *decbuf;
    int pix_pf;
    int ref_diff;                     /* max |djpeg - tm_image_decode|, -1 n/a */
    /* marking */
    float *y, *tile;
    uint16_t *mask;
    tm_embedder *emb, *emb_data;     /* of the float original; of the file, as `mark` */
    tm_layout *lay;
    tm_tile_fft *tfft, *tfft125;
    int side;
    uint8_t bits[TM_CODE_BYTES];
    fft_refs fr;
    /* tracing */
    uint8_t *copy_jpg, *resized_jpg;  /* the copy; the copy resized by RESIZE, re-encoded alike */
    size_t copy_len, resized_len;
    tm_image *suspect;
    tm_load_options luma_only;
    float *ys;
    tm_detection *det;
    tm_reg_copy *copies;
    uint8_t (*words)[TM_CODE_BYTES];
    char (*names)[NAME_LEN];
    int cli_same;                     /* the program's copy == the in-process copy */
    int wrong;                        /* checks failed */
    double t[N_STAGES][MAX_RUNS];
} bench;

static void bench_clear(bench *b)
{
    free(b->jpg);
    tm_image_free(b->orig);
    if (b->tjd) tjDestroy(b->tjd);
    if (b->tjc) tjDestroy(b->tjc);
    free(b->pix);
    free(b->decbuf);
    free(b->y);
    free(b->mask);
    free(b->tile);
    tm_embedder_free(b->emb);
    tm_embedder_free(b->emb_data);
    tm_layout_free(b->lay);
    tm_tile_fft_free(b->tfft);
    tm_tile_fft_free(b->tfft125);
    fft_refs_free(&b->fr);
    free(b->copy_jpg);
    free(b->resized_jpg);
    tm_image_free(b->suspect);
    free(b->ys);
    free(b->det);
    free(b->copies);
    free(b->words);
    free(b->names);
}

/* djpeg: the TurboJPEG decode of jpg[0..len) into b->decbuf (header
 * included), in the pixel format a JPEG of its colour space decodes to. */
static int tj_decode(bench *b, const uint8_t *jpg, size_t len, double *ms)
{
    int w, h, ss, cs;
    double t0 = bench_now_ms();
    if (tjDecompressHeader3(b->tjd, jpg, (unsigned long)len, &w, &h, &ss, &cs) != 0) return tj_fail(b->tjd, "header");
    if ((size_t)w * h > (size_t)(b->w * (double)b->h * RESIZE_AREA + 65536)) return fail("djpeg", TM_ERR_DIMENSIONS);
    int pf = ss == TJSAMP_GRAY ? TJPF_GRAY : cs == TJCS_CMYK || cs == TJCS_YCCK ? TJPF_CMYK : TJPF_RGB;
    if (tjDecompress2(b->tjd, jpg, (unsigned long)len, b->decbuf, w, 0, h, pf, 0) != 0 &&
        tjGetErrorCode(b->tjd) == TJERR_FATAL)
        return tj_fail(b->tjd, "decode");
    *ms = bench_now_ms() - t0;
    return 0;
}

/* cjpeg: the TurboJPEG encode of the original's 8-bit pixels. */
static int tj_encode(bench *b, int quality, tm_subsampling ss, double *ms)
{
    unsigned char *buf = NULL;
    unsigned long size = 0;
    int tss = b->pix_pf == TJPF_GRAY ? TJSAMP_GRAY : tj_subsamp(ss);
    double t0 = bench_now_ms();
    int rc = tjCompress2(b->tjc, b->pix, b->w, 0, b->h, b->pix_pf, &buf, &size, tss, quality, 0);
    tjFree(buf);
    *ms = bench_now_ms() - t0;
    return rc ? tj_fail(b->tjc, "encode") : 0;
}

/* The mark of tools/cmd_mark.c for one recipient, from the input's bytes to
 * the copy's, without the files and the registry: decode, analysis,
 * codeword, mark, encode at the input's quality and subsampling, the copy's
 * SHA-256, the original's perceptual hash. *out (may be NULL) gets the
 * copy's bytes (malloc'd). */
static tm_status mark_bytes(const tm_key *key, const uint8_t *jpg, size_t len, uint8_t **out, size_t *out_len)
{
    tm_embedder *emb = NULL;
    uint8_t *data = NULL, words[TM_CODEWORD_BYTES], sha[32];
    size_t dlen = 0;
    tm_image_info info;
    tm_save_options so;
    tm_save_options_init(&so);
    tm_status st = tm_embedder_create_data(key, jpg, len, NULL, NULL, &emb, &info);
    if (st == TM_OK) st = tm_embedder_codeword(emb, "leaker", words);
    if (st == TM_OK) {
        so.format = TM_FORMAT_JPEG;
        so.quality = info.jpeg_quality;
        if (info.format == TM_FORMAT_JPEG) so.subsampling = info.subsampling;
        st = tm_embedder_mark_encode(emb, "leaker", &so, &data, &dlen);
    }
    if (st == TM_OK) st = tm_sha256(data, dlen, sha);
    if (st == TM_OK) (void)tm_embedder_phash(emb);
    if (st == TM_OK && out) {
        *out = data;
        *out_len = dlen;
        data = NULL;
    }
    free(data);
    tm_embedder_free(emb);
    return st;
}

/* Whether r accuses copy 0 ("leaker") and nobody else; says so when not. */
static int leaker_alone(bench *b, const tm_trace_result *r, const char *path)
{
    if (r->n_accused == 1 && r->accused[0].index == 0) return 1;
    fprintf(stderr, "stages: %s: %s did not accuse the leaker alone (verdict %d, %zu accused, pilot z %.1f)\n",
            b->name, path, (int)r->verdict, r->n_accused, r->pilot_z);
    b->wrong++;
    return 0;
}

/* Reads the input (or makes it), decodes it and prepares every stage's
 * inputs; checks the references and the program against the library. */
static int bench_prepare(bench *b, const char *path, double mp)
{
    tm_status st;
    tm_image *tmp = NULL;
    int rc = 2;
    if (!(b->tjd = tjInitDecompress()) || !(b->tjc = tjInitCompress())) {
        fprintf(stderr, "stages: libjpeg-turbo: %s\n", tjGetErrorStr2(NULL));
        return 2;
    }
    if (path) {
        if ((st = tm_file_read(path, MAX_INPUT_BYTES, &b->jpg, &b->jpg_len)) != TM_OK) return fail(path, st);
        if (tm_format_sniff(b->jpg, b->jpg_len) != TM_FORMAT_JPEG) {
            /* Not a JPEG: its pixels as a JPEG q90 are the input. */
            int pf;
            tm_format fmt = tm_format_sniff(b->jpg, b->jpg_len);
            if ((st = tm_image_decode(b->jpg, b->jpg_len, NULL, &tmp, NULL)) != TM_OK) return fail(path, st);
            unsigned char *px = pixels_of(tmp, &pf);
            free(b->jpg);
            b->jpg = NULL;
            if (!px) {
                tm_image_free(tmp);
                return fail(path, TM_ERR_NOMEM);
            }
            rc = encode_q90(b->tjc, px, tmp->width, tmp->height, pf, &b->jpg, &b->jpg_len);
            free(px);
            if (rc) {
                tm_image_free(tmp);
                return rc;
            }
            snprintf(b->name, sizeof b->name, "%s (%s, encoded as JPEG q90 in memory)", path, tm_format_name(fmt));
            tm_image_free(tmp);
            tmp = NULL;
        } else {
            snprintf(b->name, sizeof b->name, "%s", path);
        }
    } else {
        int w, h;
        synth_size(mp, &w, &h);
        unsigned char *px = synth_pixels(w, h);
        if (!px) return fail("synthetic image", TM_ERR_NOMEM);
        rc = encode_q90(b->tjc, px, w, h, TJPF_RGB, &b->jpg, &b->jpg_len);
        free(px);
        if (rc) return rc;
        snprintf(b->name, sizeof b->name, "synthetic -s %g", mp);
    }

    /* The original as the library sees it, and the copy's settings as
     * cmd_mark.c chooses them. */
    if ((st = tm_image_decode(b->jpg, b->jpg_len, NULL, &b->orig, &b->info)) != TM_OK) return fail(b->name, st);
    b->w = b->orig->width;
    b->h = b->orig->height;
    b->mp = (double)b->w * b->h / 1e6;
    size_t n = (size_t)b->w * b->h;
    tm_save_options_init(&b->so_copy);
    b->so_copy.format = TM_FORMAT_JPEG;
    b->so_copy.quality = b->info.jpeg_quality;
    b->so_copy.subsampling = b->info.subsampling;
    tm_save_options_init(&b->so_ref);
    b->so_ref.format = TM_FORMAT_JPEG;
    b->so_ref.quality = REF_QUALITY;
    b->so_ref.subsampling = TM_SS_420;
    b->q_copy = b->so_copy.quality ? b->so_copy.quality : REF_QUALITY;
    b->ss_copy = b->so_copy.subsampling;
    if (b->ss_copy == TM_SS_UNKNOWN) b->ss_copy = b->q_copy < 90 ? TM_SS_420 : TM_SS_444; /* jpeg.c's choice */
    if (!(b->pix = pixels_of(b->orig, &b->pix_pf))) return fail("pixels", TM_ERR_NOMEM);
    if (b->pix_pf == TJPF_GRAY) b->ss_copy = TM_SS_GRAY;
    b->copy_differs = b->q_copy != REF_QUALITY || (b->pix_pf != TJPF_GRAY && b->ss_copy != TM_SS_420);
    b->decbuf = malloc((size_t)(n * RESIZE_AREA + 65536) * 4); /* the resized copy's pixels too */
    b->y = malloc(n * sizeof(float));
    b->mask = malloc(n * sizeof(uint16_t));
    b->ys = malloc(n * sizeof(float));
    b->det = malloc(sizeof *b->det);
    b->copies = calloc(N_COPIES, sizeof *b->copies);
    b->words = calloc(N_COPIES, TM_CODE_BYTES);
    b->names = calloc(N_COPIES, NAME_LEN);
    if (!b->decbuf || !b->y || !b->mask || !b->ys || !b->det || !b->copies || !b->words || !b->names)
        return fail("memory", TM_ERR_NOMEM);

    /* The reference decode must give the library's pixels (same codec, same
     * IDCT and upsampling); compared when no orientation was applied. */
    double ms;
    if ((rc = tj_decode(b, b->jpg, b->jpg_len, &ms))) return rc;
    b->ref_diff = -1;
    if (b->info.orientation == 1 && !b->info.cmyk) {
        int nc = b->pix_pf == TJPF_GRAY ? 1 : 3;
        b->ref_diff = 0;
        for (size_t i = 0; i < n; i++)
            for (int c = 0; c < nc; c++) {
                int d = abs((int)b->decbuf[i * (size_t)nc + (size_t)c] - (int)tm_to_u8(b->orig->plane[c][i]));
                if (d > b->ref_diff) b->ref_diff = d;
            }
    }

    /* Marking: the analysis, the key's layout, the tile workspaces. */
    tm_luma(b->orig, b->y);
    if ((st = tm_embedder_create(b->key, b->orig, NULL, &b->emb)) != TM_OK) return fail("embedder", st);
    if ((st = tm_embedder_codeword(b->emb, "leaker", b->bits)) != TM_OK) return fail("codeword", st);
    if ((st = tm_embedder_create_data(b->key, b->jpg, b->jpg_len, NULL, NULL, &b->emb_data, NULL)) != TM_OK)
        return fail("embedder from the file", st);
    tm_load_options_init(&b->luma_only);
    b->luma_only.luma_only = 1;
    b->side = TM_TILE * tm_mark_tile_scale(b->w, b->h);
    if ((st = tm_layout_create(b->key, &b->lay)) != TM_OK) return fail("layout", st);
    if ((st = tm_tile_fft_create_side(b->side, &b->tfft)) != TM_OK || (st = tm_tile_fft_create(&b->tfft125)) != TM_OK)
        return fail("tile FFT", st);
    if (!(b->tile = malloc(sizeof(float) * (size_t)b->side * b->side))) return fail("memory", TM_ERR_NOMEM);
    /* The spectrum of the leaker's tile, as tm_pattern_tile leaves it just
     * before its inverse DFT: the input of the inverse-transform rows. */
    fftwf_complex *spec = tm_tile_fft_spectrum(b->tfft);
    size_t nspec = (size_t)b->side * (b->side / 2 + 1);
    fftwf_complex *saved = fftwf_malloc(sizeof(fftwf_complex) * nspec);
    if (!saved) return fail("memory", TM_ERR_NOMEM);
    memset(spec, 0, sizeof(fftwf_complex) * nspec);
    for (size_t i = 0; i < b->lay->n_pilot; i++) {
        const tm_chip *c = &b->lay->pilot[i];
        size_t row = c->kx <= TM_TILE / 2 ? c->kx : (size_t)b->side - (TM_TILE - c->kx);
        spec[row * (size_t)(b->side / 2 + 1) + c->ky][c->imag] = c->sign;
    }
    memcpy(saved, spec, sizeof(fftwf_complex) * nspec);
    st = fft_refs_create(&b->fr, b->w, b->h, b->side, saved);
    fftwf_free(saved);
    if (st != TM_OK) return fail("FFTW plans", st);
    float *sp125 = tm_tile_fft_spatial(b->tfft125);
    for (size_t i = 0; i < (size_t)TM_TILE * TM_TILE; i++) sp125[i] = (float)(i % 13);

    /* The registry of N_COPIES copies of the file as `mark` reads it: the
     * leaker's first, then innocents. */
    for (int i = 0; i < N_COPIES; i++) {
        snprintf(b->names[i], NAME_LEN, i ? "innocent-%d" : "leaker", i);
        if ((st = tm_embedder_codeword(b->emb_data, b->names[i], b->words[i])) != TM_OK) return fail("codeword", st);
        b->copies[i] = (tm_reg_copy){.copy_id = i + 1, .image_id = tm_embedder_image_id(b->emb_data),
                                     .recipient = b->names[i], .code_len = TM_CODEWORD_BYTES * 8,
                                     .codeword = b->words[i]};
    }

    /* The copy, the suspect read from it, and its detection for scoring. */
    if ((st = mark_bytes(b->key, b->jpg, b->jpg_len, &b->copy_jpg, &b->copy_len)) != TM_OK) return fail("mark", st);
    if ((st = tm_image_decode(b->copy_jpg, b->copy_len, NULL, &b->suspect, NULL)) != TM_OK)
        return fail("the copy", st);
    if (b->suspect->width != b->w || b->suspect->height != b->h) return fail("the copy", TM_ERR_DIMENSIONS);
    tm_luma(b->suspect, b->ys);
    if ((st = tm_detect_search(b->key, b->suspect, b->det)) != TM_OK) return fail("detect", st);

    /* The copy resized by RESIZE and written at its own settings: a suspect
     * the geometric search must find. */
    tm_image *rs = NULL;
    char why[256];
    if ((st = tm_attack_apply(RESIZE, b->suspect, &rs, why, sizeof why)) != TM_OK) return fail(why, st);
    st = tm_image_encode(rs, &b->so_copy, &b->resized_jpg, &b->resized_len);
    tm_image_free(rs);
    if (st != TM_OK) return fail("the resized copy", st);
    if ((st = tm_file_write_atomic(bench_scratch(F_RESIZED), b->resized_jpg, b->resized_len, 0600, 0)) != TM_OK)
        return fail(bench_scratch(F_RESIZED), st);

    /* The program: the input as a file, a new registry, one mark (which
     * creates the registry and must write the same bytes as mark_bytes),
     * then the innocents so `tracemark trace` scores N_COPIES copies. */
    for (int f = F_COPY; f <= F_REG_JOURNAL; f++) unlink(bench_scratch(f));
    if ((st = tm_file_write_atomic(bench_scratch(F_INPUT), b->jpg, b->jpg_len, 0600, 0)) != TM_OK)
        return fail(bench_scratch(F_INPUT), st);
    char *mark_argv[] = {(char *)b->program, "mark", "-k", bench_scratch(F_KEY), "-r", bench_scratch(F_REG), "--recipient",
                         "leaker", "-f", "-o", bench_scratch(F_COPY), bench_scratch(F_INPUT), NULL};
    int status;
    if (bench_run_program(mark_argv, b->env, bench_scratch(F_OUT), &ms, &status) != 0) {
        fprintf(stderr, "stages: %s: %s\n", b->program, strerror(errno));
        return 2;
    }
    if (status != 0) {
        fprintf(stderr, "stages: %s: `%s mark` exited %d\n", b->name, b->program, status);
        return 2;
    }
    uint8_t *cli_copy = NULL;
    size_t cli_len = 0;
    if ((st = tm_file_read(bench_scratch(F_COPY), MAX_INPUT_BYTES, &cli_copy, &cli_len)) != TM_OK)
        return fail(bench_scratch(F_COPY), st);
    b->cli_same = cli_len == b->copy_len && !memcmp(cli_copy, b->copy_jpg, cli_len);
    free(cli_copy);
    if (bench_registry_add(bench_scratch(F_REG), b->key, NULL, b->copies, 1, N_COPIES) != TM_OK) return 2;
    return 0;
}

/* Runs argv (stdout to F_OUT) into *ms; 2 with a message when it fails. */
static int run_ref(bench *b, char *const argv[], double *ms)
{
    int status;
    if (bench_run_program(argv, NULL, bench_scratch(F_OUT), ms, &status) != 0 || status != 0) {
        fprintf(stderr, "stages: %s: %s %s\n", b->name, argv[0], status ? "failed" : strerror(errno));
        return 2;
    }
    return 0;
}

/* The programs' own times (djpeg and cjpeg are installed): `djpeg | cjpeg`
 * of the input at the copy's quality and sampling, through sh; djpeg of the
 * input to a file and one cjpeg of that file (the batch's reference); djpeg
 * of the copy and of the resized copy; and `tracemark mark` of 20 copies. */
static int program_refs(bench *b, int r)
{
    double (*t)[MAX_RUNS] = b->t;
    static const char *const sample[] = {[TM_SS_444] = "1x1", [TM_SS_422] = "2x1", [TM_SS_420] = "2x2",
                                         [TM_SS_440] = "1x2", [TM_SS_411] = "4x1"};
    char q[16], cmd[3 * 4096 + 64], opt[32];
    snprintf(q, sizeof q, "%d", b->q_copy);
    if (b->ss_copy == TM_SS_GRAY) snprintf(opt, sizeof opt, "-grayscale");
    else snprintf(opt, sizeof opt, "-sample %s", sample[b->ss_copy]);
    int k = snprintf(cmd, sizeof cmd, "'%s' '%s' | '%s' -quality %s %s", djpeg_prog, bench_scratch(F_INPUT),
                     cjpeg_prog, q, opt);
    if (k < 0 || (size_t)k >= sizeof cmd) return fail("the djpeg | cjpeg command", TM_ERR_ARG);
    char *pipe_argv[] = {"/bin/sh", "-c", cmd, NULL};
    char *djpeg_argv[] = {djpeg_prog, "-outfile", bench_scratch(F_PPM), bench_scratch(F_INPUT), NULL};
    char *cjpeg_argv[] = {cjpeg_prog, "-quality", q, "-sample", "1x1", "-outfile", bench_scratch(F_REF),
                          bench_scratch(F_PPM), NULL};
    if (b->ss_copy == TM_SS_GRAY) cjpeg_argv[3] = "-grayscale", cjpeg_argv[4] = "-baseline";
    else cjpeg_argv[4] = (char *)sample[b->ss_copy];
    char *copy_argv[] = {djpeg_prog, "-outfile", "/dev/null", bench_scratch(F_COPY), NULL};
    char *rs_argv[] = {djpeg_prog, "-outfile", "/dev/null", bench_scratch(F_RESIZED), NULL};
    int rc;
    if ((rc = run_ref(b, pipe_argv, &t[M_PIPE][r])) || (rc = run_ref(b, djpeg_argv, &t[M_DJPEG_PROG][r])) ||
        (rc = run_ref(b, cjpeg_argv, &t[M_CJPEG_PROG][r])) || (rc = run_ref(b, copy_argv, &t[T_DJPEG_PROG][r])) ||
        (rc = run_ref(b, rs_argv, &t[T_DJPEG_PROG_RS][r])))
        return rc;
    /* 20 copies by the program, into the scratch directory. */
    char *argv[6 + 2 * 20 + 4 + 1];
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", bench_scratch(F_INPUT));
    *strrchr(dir, '/') = 0;
    int n = 0;
    argv[n++] = (char *)b->program;
    argv[n++] = "mark";
    argv[n++] = "-k";
    argv[n++] = bench_scratch(F_KEY);
    argv[n++] = "-r";
    argv[n++] = bench_scratch(F_REG20); /* a registry of its own, new each run */
    for (int i = 0; i < 20; i++) {
        argv[n++] = "--recipient";
        argv[n++] = b->names[i];
    }
    argv[n++] = "-f";
    argv[n++] = "--out-dir";
    argv[n++] = dir;
    argv[n++] = bench_scratch(F_INPUT);
    argv[n] = NULL;
    unlink(bench_scratch(F_REG20));
    int status;
    if (bench_run_program(argv, b->env, bench_scratch(F_OUT), &t[M_MARK20_CLI][r], &status) != 0 || status != 0) {
        fprintf(stderr, "stages: %s: `%s mark` of 20 copies %s\n", b->name, b->program,
                status ? "failed" : strerror(errno));
        return 2;
    }
    return 0;
}

/* Runs argv (a `tracemark trace`) into *ms; a verdict other than the
 * leaker alone counts as a wrong result. */
static int trace_program(bench *b, char **argv, double *ms, const char *what)
{
    int status;
    if (bench_run_program(argv, b->env, bench_scratch(F_OUT), ms, &status) != 0) {
        fprintf(stderr, "stages: %s: %s\n", b->program, strerror(errno));
        return 2;
    }
    if (status != 0 && status != 1) {
        fprintf(stderr, "stages: %s: %s exited %d\n", b->name, what, status);
        return 2;
    }
    if (status != 0 || !bench_output_accuses_leaker(bench_scratch(F_OUT))) {
        fprintf(stderr, "stages: %s: %s exited %d and did not accuse the leaker alone\n", b->name, what, status);
        b->wrong++;
    }
    return 0;
}

/* The copy's registration to ref and its difference, timed apart. */
static int bench_informed(bench *b, const tm_original *ref, double *reg_ms, double *diff_ms)
{
    tm_reg_suspect rs;
    tm_registration reg;
    tm_image *d = NULL;
    double t0 = bench_now_ms();
    tm_status st = tm_reg_suspect_init(b->ys, b->w, b->h, &rs);
    if (st == TM_OK) st = tm_register(ref, &rs, &reg);
    *reg_ms = bench_now_ms() - t0;
    if (st == TM_OK && !reg.found) {
        fprintf(stderr, "stages: %s: the copy was not registered to its original\n", b->name);
        b->wrong++;
    }
    t0 = bench_now_ms();
    if (st == TM_OK && reg.found) st = tm_register_difference(ref, &rs, &reg, &d);
    *diff_ms = bench_now_ms() - t0;
    tm_image_free(d);
    tm_reg_suspect_free(&rs);
    return st == TM_OK ? 0 : fail("registration", st);
}

/* One pass over every stage, the times into column r; 0, 1 (a check
 * failed) or 2 (error). */
static int bench_pass(bench *b, int r)
{
    double (*t)[MAX_RUNS] = b->t, t0, ms;
    tm_status st;
    int rc, status;

    /* ---- marking: references */
    if ((rc = tj_decode(b, b->jpg, b->jpg_len, &t[M_DJPEG][r]))) return rc;
    if ((rc = tj_encode(b, REF_QUALITY, TM_SS_420, &t[M_CJPEG_REF][r]))) return rc;
    if (!b->copy_differs) t[M_CJPEG_COPY][r] = t[M_CJPEG_REF][r];
    else if ((rc = tj_encode(b, b->q_copy, b->ss_copy, &t[M_CJPEG_COPY][r]))) return rc;
    t[M_CODEC][r] = t[M_DJPEG][r] + t[M_CJPEG_COPY][r];
    t[M_FFT_DCT][r] = fft_dct(&b->fr, b->y, b->w);
    t[M_FFT_TILE][r] = fft_tile(&b->fr);

    /* ---- marking: the library's stages */
    tm_image *img = NULL;
    t0 = bench_now_ms();
    st = tm_image_decode(b->jpg, b->jpg_len, NULL, &img, NULL);
    t[M_DECODE][r] = bench_now_ms() - t0;
    tm_image_free(img);
    if (st != TM_OK) return fail("decode", st);

    tm_jpeg_planes *planes = NULL;
    t0 = bench_now_ms();
    st = tm_image_decode_planes(b->jpg, b->jpg_len, NULL, &img, &planes, NULL);
    t[M_DECODE_PLANES][r] = bench_now_ms() - t0;
    tm_image_free(img);
    tm_jpeg_planes_free(planes);
    if (st != TM_OK) return fail("decode as stored", st);

    t0 = bench_now_ms();
    tm_luma(b->orig, b->y);
    t[M_LUMA][r] = bench_now_ms() - t0;

    t0 = bench_now_ms();
    tm_plane yp = tm_plane_float(b->y, b->w, b->h);
    st = tm_mask_compute(&yp, b->mask, NULL);
    t[M_MASK][r] = bench_now_ms() - t0;
    if (st != TM_OK) return fail("mask", st);

    uint8_t sha[32];
    t0 = bench_now_ms();
    st = tm_image_content_hash(b->orig, sha);
    t[M_HASH][r] = bench_now_ms() - t0;
    if (st != TM_OK) return fail("content hash", st);

    tm_embedder *emb = NULL;
    t0 = bench_now_ms();
    st = tm_embedder_create(b->key, b->orig, NULL, &emb);
    t[M_CREATE][r] = bench_now_ms() - t0;
    tm_embedder_free(emb);
    if (st != TM_OK) return fail("embedder", st);

    emb = NULL;
    t0 = bench_now_ms();
    st = tm_embedder_create_data(b->key, b->jpg, b->jpg_len, NULL, NULL, &emb, NULL);
    t[M_CREATE_DATA][r] = bench_now_ms() - t0;
    tm_embedder_free(emb);
    if (st != TM_OK) return fail("embedder from the file", st);

    uint8_t bits[TM_CODE_BYTES];
    t0 = bench_now_ms();
    for (int k = 0; k < REPS_TINY && st == TM_OK; k++) st = tm_embedder_codeword(b->emb, "leaker", bits);
    t[M_CODEWORD][r] = (bench_now_ms() - t0) / REPS_TINY;
    if (st != TM_OK) return fail("codeword", st);

    fftwf_complex *spec = tm_tile_fft_spectrum(b->tfft);
    size_t nspec = (size_t)b->side * (b->side / 2 + 1);
    ms = 0;
    for (int k = 0; k < REPS_TILE; k++) {
        memcpy(spec, b->fr.tile_save, sizeof(fftwf_complex) * nspec);
        t0 = bench_now_ms();
        tm_tile_fft_inverse(b->tfft);
        ms += bench_now_ms() - t0;
    }
    t[M_TILE_INV][r] = ms / REPS_TILE;

    t0 = bench_now_ms();
    for (int k = 0; k < REPS_TILE && st == TM_OK; k++) st = tm_pattern_tile(b->lay, b->bits, b->tfft, b->tile);
    t[M_PATTERN][r] = (bench_now_ms() - t0) / REPS_TILE;
    if (st != TM_OK) return fail("pattern", st);

    tm_image *copy = NULL;
    t0 = bench_now_ms();
    st = tm_embedder_mark(b->emb, "leaker", &copy);
    t[M_MARK][r] = bench_now_ms() - t0;
    if (st != TM_OK) return fail("mark", st);

    uint8_t *data = NULL;
    size_t len = 0;
    t0 = bench_now_ms();
    st = tm_image_encode(copy, &b->so_ref, &data, &len);
    t[M_ENCODE][r] = bench_now_ms() - t0;
    free(data);
    tm_image_free(copy);
    if (st != TM_OK) return fail("encode", st);

    t0 = bench_now_ms();
    st = tm_embedder_mark_encode(b->emb_data, "leaker", &b->so_copy, &data, &len);
    t[M_MARK_ENCODE][r] = bench_now_ms() - t0;
    free(data);
    if (st != TM_OK) return fail("mark and encode", st);

    uint64_t ph;
    t0 = bench_now_ms();
    st = tm_image_phash(b->orig, &ph);
    t[M_PHASH][r] = bench_now_ms() - t0;
    if (st != TM_OK) return fail("phash", st);

    t0 = bench_now_ms();
    st = mark_bytes(b->key, b->jpg, b->jpg_len, NULL, NULL);
    t[M_MARK_ALL][r] = bench_now_ms() - t0;
    if (st != TM_OK) return fail("mark in process", st);

    char *mark_argv[] = {(char *)b->program, "mark", "-k", bench_scratch(F_KEY), "-r", bench_scratch(F_REG), "--recipient",
                         "leaker", "-f", "-o", bench_scratch(F_COPY), bench_scratch(F_INPUT), NULL};
    if (bench_run_program(mark_argv, b->env, bench_scratch(F_OUT), &t[M_MARK_CLI][r], &status) != 0) {
        fprintf(stderr, "stages: %s: %s\n", b->program, strerror(errno));
        return 2;
    }
    if (status != 0) {
        fprintf(stderr, "stages: %s: `%s mark` exited %d\n", b->name, b->program, status);
        return 2;
    }
    if (djpeg_prog[0] && cjpeg_prog[0] && (rc = program_refs(b, r))) return rc;

    char *version_argv[] = {(char *)b->program, "--version", NULL};
    if (bench_run_program(version_argv, b->env, bench_scratch(F_OUT), &t[M_START][r], &status) != 0 || status != 0) {
        fprintf(stderr, "stages: %s --version: %s\n", b->program, status ? "failed" : strerror(errno));
        return 2;
    }

    /* ---- tracing: references */
    if ((rc = tj_decode(b, b->copy_jpg, b->copy_len, &t[T_DJPEG][r]))) return rc;
    t0 = bench_now_ms();
    fftwf_execute(b->fr.win);
    t[T_FFT_WIN][r] = bench_now_ms() - t0;
    t0 = bench_now_ms();
    for (int k = 0; k < REPS_SMALL; k++) fftwf_execute(b->fr.small);
    t[T_FFT_125][r] = (bench_now_ms() - t0) / REPS_SMALL;

    /* ---- tracing: the library's stages */
    t0 = bench_now_ms();
    st = tm_image_decode(b->copy_jpg, b->copy_len, NULL, &img, NULL);
    t[T_DECODE][r] = bench_now_ms() - t0;
    tm_image_free(img);
    if (st != TM_OK) return fail("decode the copy", st);

    t0 = bench_now_ms();
    st = tm_image_decode(b->copy_jpg, b->copy_len, &b->luma_only, &img, NULL);
    t[T_DECODE_LUMA][r] = bench_now_ms() - t0;
    tm_image_free(img);
    if (st != TM_OK) return fail("decode the copy's luminance", st);

    t0 = bench_now_ms();
    tm_luma(b->suspect, b->ys);
    t[T_LUMA][r] = bench_now_ms() - t0;

    t0 = bench_now_ms();
    for (int k = 0; k < REPS_SMALL; k++) tm_tile_fft_forward(b->tfft125);
    t[T_TILE_FWD][r] = (bench_now_ms() - t0) / REPS_SMALL;

    tm_detection d;
    t0 = bench_now_ms();
    st = tm_detect_run(b->key, b->suspect, &d);
    t[T_DETECT][r] = bench_now_ms() - t0;
    if (st != TM_OK) return fail("detect", st);

    tm_geom cands[6];
    int ng = 0;
    t0 = bench_now_ms();
    st = tm_sync_estimate(b->ys, b->w, b->h, cands, 6, &ng);
    t[T_SYNC][r] = bench_now_ms() - t0;
    if (st != TM_OK) return fail("sync estimate", st);

    t0 = bench_now_ms();
    st = tm_detect_search(b->key, b->suspect, &d);
    t[T_SEARCH][r] = bench_now_ms() - t0;
    if (st != TM_OK) return fail("detect search", st);

    tm_trace_result res;
    t0 = bench_now_ms();
    st = tm_trace_score(b->key, b->det, b->copies, N_COPIES, &b->tp, &res);
    t[T_SCORE][r] = bench_now_ms() - t0;
    if (st != TM_OK) return fail("scoring", st);
    leaker_alone(b, &res, "tm_trace_score");
    tm_trace_result_clear(&res);

    t0 = bench_now_ms();
    st = tm_trace_run(b->key, b->suspect, b->copies, N_COPIES, &b->tp, &res);
    t[T_TRACE][r] = bench_now_ms() - t0;
    if (st != TM_OK) return fail("trace", st);
    leaker_alone(b, &res, "tm_trace_run");
    tm_trace_result_clear(&res);

    t0 = bench_now_ms();
    st = tm_image_decode(b->copy_jpg, b->copy_len, &b->luma_only, &img, NULL);
    if (st == TM_OK) st = tm_trace_run(b->key, img, b->copies, N_COPIES, &b->tp, &res);
    t[T_TRACE_ALL][r] = bench_now_ms() - t0;
    tm_image_free(img);
    if (st != TM_OK) return fail("decode + trace", st);
    leaker_alone(b, &res, "decode + tm_trace_run");
    tm_trace_result_clear(&res);

    /* ---- informed: the original prepared, the copy registered to it, the
     * difference; then the whole informed trace (the original prepared
     * once, as `trace` does for all its suspects) */
    tm_original *ref = NULL;
    t0 = bench_now_ms();
    st = tm_original_load(bench_scratch(F_INPUT), NULL, &ref, NULL);
    t[T_ORIGINAL][r] = bench_now_ms() - t0;
    if (st != TM_OK) return fail("tm_original_load", st);
    if ((rc = bench_informed(b, ref, &t[T_REGISTER][r], &t[T_DIFFERENCE][r]))) {
        tm_original_free(ref);
        return rc;
    }
    t0 = bench_now_ms();
    st = tm_image_decode(b->copy_jpg, b->copy_len, &b->luma_only, &img, NULL);
    if (st == TM_OK)
        st = tm_trace_run_informed(b->key, img, (const tm_original *const *)&ref, 1, b->copies, N_COPIES, &b->tp, &res);
    t[T_INFORMED][r] = bench_now_ms() - t0;
    tm_image_free(img);
    if (st != TM_OK) {
        tm_original_free(ref);
        return fail("decode + tm_trace_run_informed", st);
    }
    leaker_alone(b, &res, "decode + tm_trace_run_informed");
    tm_trace_result_clear(&res);

    /* the program: blind (the geometric search alone), then as it runs by
     * default, informed by the original the registry recorded */
    char *blind_argv[] = {(char *)b->program, "trace", "--blind", "-k", bench_scratch(F_KEY), "-r",
                          bench_scratch(F_REG), bench_scratch(F_COPY), NULL};
    char *informed_argv[] = {(char *)b->program, "trace", "-k", bench_scratch(F_KEY), "-r", bench_scratch(F_REG),
                             bench_scratch(F_COPY), NULL};
    if ((rc = trace_program(b, blind_argv, &t[T_TRACE_CLI][r], "`trace --blind`")) ||
        (rc = trace_program(b, informed_argv, &t[T_INFORMED_CLI][r], "`trace`"))) {
        tm_original_free(ref);
        return rc;
    }

    /* ---- the resized copy: the search runs */
    if ((rc = tj_decode(b, b->resized_jpg, b->resized_len, &t[T_DJPEG_RS][r]))) return rc;
    t0 = bench_now_ms();
    st = tm_image_decode(b->resized_jpg, b->resized_len, &b->luma_only, &img, NULL);
    if (st == TM_OK) st = tm_trace_run(b->key, img, b->copies, N_COPIES, &b->tp, &res);
    t[T_TRACE_RS][r] = bench_now_ms() - t0;
    tm_image_free(img);
    if (st != TM_OK) return fail("decode + trace of the resized copy", st);
    leaker_alone(b, &res, "decode + tm_trace_run of the resized copy");
    tm_trace_result_clear(&res);
    t0 = bench_now_ms();
    st = tm_image_decode(b->resized_jpg, b->resized_len, &b->luma_only, &img, NULL);
    if (st == TM_OK)
        st = tm_trace_run_informed(b->key, img, (const tm_original *const *)&ref, 1, b->copies, N_COPIES, &b->tp, &res);
    t[T_INFORMED_RS][r] = bench_now_ms() - t0;
    tm_image_free(img);
    tm_original_free(ref);
    if (st != TM_OK) return fail("decode + tm_trace_run_informed of the resized copy", st);
    leaker_alone(b, &res, "decode + tm_trace_run_informed of the resized copy");
    tm_trace_result_clear(&res);
    blind_argv[7] = informed_argv[6] = bench_scratch(F_RESIZED);
    if ((rc = trace_program(b, blind_argv, &t[T_TRACE_RS_CLI][r], "`trace --blind` of the resized copy")) ||
        (rc = trace_program(b, informed_argv, &t[T_INFORMED_RS_CLI][r], "`trace` of the resized copy")))
        return rc;
    return b->wrong ? 1 : 0;
}

/* One batch: decode + analysis once, then copies x (codeword, mark, encode
 * at the copy's settings); *ms the wall time. */
static int bench_batch(bench *b, int copies, double *ms)
{
    tm_embedder *emb = NULL;
    uint8_t words[TM_CODE_BYTES], *data = NULL;
    size_t len;
    double t0 = bench_now_ms();
    tm_status st = tm_embedder_create_data(b->key, b->jpg, b->jpg_len, NULL, NULL, &emb, NULL);
    for (int i = 0; i < copies && st == TM_OK; i++) {
        st = tm_embedder_codeword(emb, b->names[i], words);
        if (st == TM_OK) st = tm_embedder_mark_encode(emb, b->names[i], &b->so_copy, &data, &len);
        free(data);
        data = NULL;
    }
    *ms = bench_now_ms() - t0;
    tm_embedder_free(emb);
    return st == TM_OK ? 0 : fail("batch", st);
}

/* ---- output ----------------------------------------------------------------- */

static const char *fmt_ms(char *buf, size_t cap, double ms)
{
    if (ms < 0.1) snprintf(buf, cap, "%.4f", ms);
    else if (ms < 1) snprintf(buf, cap, "%.3f", ms);
    else if (ms < 10) snprintf(buf, cap, "%.2f", ms);
    else snprintf(buf, cap, "%.1f", ms);
    return buf;
}

/* One table row: median, min, max of ms[0..runs) (sorted in place), the
 * megapixels per second of mpix at the median (none when mpix is 0), and
 * the ratio to ref (none when ref is 0). */
static void row(const char *stage, double *ms, int runs, double mpix, double ref, const char *ref_name)
{
    char a[32], mn[32], mx[32], rate[32] = "-", ratio[96] = "-";
    double med = bench_median(ms, runs);
    if (mpix > 0 && med > 0) snprintf(rate, sizeof rate, "%.1f", mpix / (med / 1e3));
    if (ref > 0) snprintf(ratio, sizeof ratio, "%.2f x %s", med / ref, ref_name);
    printf("| %s | %s | %s | %s | %s | %s |\n", stage, fmt_ms(a, sizeof a, med), fmt_ms(mn, sizeof mn, ms[0]),
           fmt_ms(mx, sizeof mx, ms[runs - 1]), rate, ratio);
}

static double med(bench *b, int stage)
{
    return bench_median(b->t[stage], b->runs);
}

static const char *verdict(double value, double bar)
{
    return value <= bar ? "MET" : "NOT MET";
}

static void print_tables(bench *b)
{
    int runs = b->runs, S = b->side;
    double mp = b->mp;
    double djpeg = med(b, M_DJPEG), cjpeg_ref = med(b, M_CJPEG_REF), cjpeg = med(b, M_CJPEG_COPY);
    double codec = med(b, M_CODEC), dct = med(b, M_FFT_DCT), c2r = med(b, M_FFT_TILE);
    double djpeg_copy = med(b, T_DJPEG), win = med(b, T_FFT_WIN), r2c125 = med(b, T_FFT_125);
    char copy_set[64], lbl[192];
    snprintf(copy_set, sizeof copy_set, "q%d %s", b->q_copy, tm_subsampling_name(b->ss_copy));

    printf("\n## %s\n\n", b->name);
    printf("%dx%d (%.2f MP), JPEG q~%d %s%s, %zu bytes; %d run%s after one warm-up, one thread. Copies written at %s "
           "(the input's, as `mark` keeps them), tile %dx%d; copy %zu bytes.\n",
           b->w, b->h, mp, b->info.jpeg_quality, tm_subsampling_name(b->info.subsampling),
           b->info.progressive ? " progressive" : "", b->jpg_len, runs, runs == 1 ? "" : "s", copy_set, S, S,
           b->copy_len);
    if (b->ref_diff < 0) printf("Reference decode against tm_image_decode: not compared (orientation or CMYK).\n");
    else
        printf("Reference decode against tm_image_decode: %s.\n",
               b->ref_diff == 0 ? "identical pixels" : "DIFFERENT pixels");
    if (b->ref_diff > 0) printf("(largest difference %d)\n", b->ref_diff);
    printf("`tracemark mark` wrote %s bytes as the in-process mark.\n\n", b->cli_same ? "the same" : "DIFFERENT");

    printf("### mark\n\n| stage | median ms | min | max | MP/s | x reference |\n|---|---|---|---|---|---|\n");
    row("djpeg: tjDecompress2 to RGB (reference)", b->t[M_DJPEG], runs, mp, 0, "");
    row("cjpeg: tjCompress2 q90 4:2:0 (reference)", b->t[M_CJPEG_REF], runs, mp, 0, "");
    if (b->copy_differs) {
        snprintf(lbl, sizeof lbl, "cjpeg: tjCompress2 %s, the copy's settings (reference)", copy_set);
        row(lbl, b->t[M_CJPEG_COPY], runs, mp, 0, "");
    }
    row("djpeg + cjpeg (reference)", b->t[M_CODEC], runs, mp, 0, "");
    row("FFTW 8x8 DCT-II of every block (reference)", b->t[M_FFT_DCT], runs, mp, 0, "");
    snprintf(lbl, sizeof lbl, "FFTW c2r %dx%d (reference)", S, S);
    row(lbl, b->t[M_FFT_TILE], runs, S * (double)S / 1e6, 0, "");
    row("decode: tm_image_decode to float planes", b->t[M_DECODE], runs, mp, djpeg, "djpeg");
    row("decode as stored: tm_image_decode_planes (JPEG components)", b->t[M_DECODE_PLANES], runs, mp, djpeg, "djpeg");
    row("colour conversion: tm_luma", b->t[M_LUMA], runs, mp, djpeg, "djpeg");
    row("perceptual mask: tm_mask_compute (block DCT included)", b->t[M_MASK], runs, mp, dct, "FFTW DCT");
    row("content hash: tm_image_content_hash", b->t[M_HASH], runs, mp, djpeg, "djpeg");
    row("analysis: tm_embedder_create (hash, luma, mask, gain, phash)", b->t[M_CREATE], runs, mp, codec,
        "(djpeg + cjpeg)");
    row("decode + analysis: tm_embedder_create_data, as `mark`", b->t[M_CREATE_DATA], runs, mp, djpeg, "djpeg");
    row("codeword: tm_embedder_codeword", b->t[M_CODEWORD], runs, 0, 0, "");
    snprintf(lbl, sizeof lbl, "inverse DFT %dx%d: tm_tile_fft_inverse", S, S);
    row(lbl, b->t[M_TILE_INV], runs, S * (double)S / 1e6, c2r, "FFTW c2r");
    snprintf(lbl, sizeof lbl, "pattern synthesis: tm_pattern_tile %dx%d", S, S);
    row(lbl, b->t[M_PATTERN], runs, S * (double)S / 1e6, c2r, "FFTW c2r");
    row("embed: tm_embedder_mark (codeword, tile, clone, add)", b->t[M_MARK], runs, mp, cjpeg, "cjpeg");
    row("encode: tm_image_encode q90 4:2:0 of the copy", b->t[M_ENCODE], runs, mp, cjpeg_ref, "cjpeg q90 4:2:0");
    snprintf(lbl, sizeof lbl, "embed + encode %s: tm_embedder_mark_encode, as `mark`", copy_set);
    row(lbl, b->t[M_MARK_ENCODE], runs, mp, cjpeg, "cjpeg");
    row("perceptual hash: tm_image_phash", b->t[M_PHASH], runs, mp, djpeg, "djpeg");
    row("**mark in process**, bytes to bytes as `mark`", b->t[M_MARK_ALL], runs, mp, codec, "(djpeg + cjpeg)");
    row("**`tracemark mark`**, file to file", b->t[M_MARK_CLI], runs, mp, codec, "(djpeg + cjpeg)");
    row("program start: `tracemark --version` (reference)", b->t[M_START], runs, 0, 0, "");
    if (djpeg_prog[0] && cjpeg_prog[0]) {
        double pipe = med(b, M_PIPE);
        snprintf(lbl, sizeof lbl, "`djpeg | cjpeg` %s, the programs (reference)", copy_set);
        row(lbl, b->t[M_PIPE], runs, mp, 0, "");
        row("`djpeg` program to a PPM file (reference)", b->t[M_DJPEG_PROG], runs, mp, 0, "");
        snprintf(lbl, sizeof lbl, "`cjpeg` program %s of that file (reference)", copy_set);
        row(lbl, b->t[M_CJPEG_PROG], runs, mp, 0, "");
        row("**`tracemark mark`**, file to file, against the programs", b->t[M_MARK_CLI], runs, mp, pipe,
            "`djpeg | cjpeg`");
        row("**`tracemark mark`**, 20 copies, against the programs", b->t[M_MARK20_CLI], runs, 20 * mp,
            med(b, M_DJPEG_PROG) + 20 * med(b, M_CJPEG_PROG), "(djpeg + 20 cjpeg)");
    }

    printf("\n### trace (the copy, %d copies in the registry)\n\n"
           "| stage | median ms | min | max | MP/s | x reference |\n|---|---|---|---|---|---|\n",
           N_COPIES);
    row("djpeg of the copy: tjDecompress2 (reference)", b->t[T_DJPEG], runs, mp, 0, "");
    row("FFTW r2c 1024x1024 (reference)", b->t[T_FFT_WIN], runs, SYNC_WIN * (double)SYNC_WIN / 1e6, 0, "");
    row("FFTW r2c 125x125 (reference)", b->t[T_FFT_125], runs, TM_TILE * (double)TM_TILE / 1e6, 0, "");
    row("decode: tm_image_decode of the copy", b->t[T_DECODE], runs, mp, djpeg_copy, "djpeg");
    row("decode the luminance: tm_image_decode, luma_only, as `trace`", b->t[T_DECODE_LUMA], runs, mp, djpeg_copy,
        "djpeg");
    row("colour conversion: tm_luma", b->t[T_LUMA], runs, mp, djpeg_copy, "djpeg");
    row("forward DFT 125x125: tm_tile_fft_forward", b->t[T_TILE_FWD], runs, TM_TILE * (double)TM_TILE / 1e6, r2c125,
        "FFTW r2c");
    row("prefilter + extraction, no search: tm_detect_run", b->t[T_DETECT], runs, mp, djpeg_copy, "djpeg");
    row("geometric search: tm_sync_estimate", b->t[T_SYNC], runs, mp, win, "FFTW r2c 1024^2");
    row("search + extraction: tm_detect_search", b->t[T_SEARCH], runs, mp, djpeg_copy, "djpeg");
    row("registry scoring: tm_trace_score", b->t[T_SCORE], runs, 0, djpeg_copy, "djpeg");
    row("tm_trace_run", b->t[T_TRACE], runs, mp, djpeg_copy, "djpeg");
    row("**trace in process**: luminance decode + tm_trace_run", b->t[T_TRACE_ALL], runs, mp, djpeg_copy, "djpeg");
    row("**`tracemark trace --blind`**, file to verdict", b->t[T_TRACE_CLI], runs, mp, djpeg_copy, "djpeg");
    double djpeg_rs = med(b, T_DJPEG_RS), mp_rs = mp * RESIZE_AREA;
    row("djpeg of the copy resized by " RESIZE_FACTOR " (reference)", b->t[T_DJPEG_RS], runs, mp_rs, 0, "");
    row("**trace in process**, the resized copy (the search runs)", b->t[T_TRACE_RS], runs, mp_rs, djpeg_rs, "djpeg");
    row("**`tracemark trace --blind`**, the resized copy", b->t[T_TRACE_RS_CLI], runs, mp_rs, djpeg_rs, "djpeg");
    row("informed: the original prepared, tm_original_load (once per `trace`)", b->t[T_ORIGINAL], runs, mp,
        djpeg_copy, "djpeg");
    row("informed: registration of the copy, tm_register", b->t[T_REGISTER], runs, mp, djpeg_copy, "djpeg");
    row("informed: the difference, tm_register_difference", b->t[T_DIFFERENCE], runs, mp, djpeg_copy, "djpeg");
    row("**informed trace in process**: luminance decode + tm_trace_run_informed", b->t[T_INFORMED], runs, mp,
        djpeg_copy, "djpeg");
    row("**informed trace in process**, the resized copy", b->t[T_INFORMED_RS], runs, mp_rs, djpeg_rs, "djpeg");
    row("**`tracemark trace`** (informed: the registry's original), file to verdict", b->t[T_INFORMED_CLI], runs,
        mp, djpeg_copy, "djpeg");
    row("**`tracemark trace`** (informed), the resized copy", b->t[T_INFORMED_RS_CLI], runs, mp_rs, djpeg_rs,
        "djpeg");
    if (djpeg_prog[0] && cjpeg_prog[0]) {
        row("`djpeg` program of the copy (reference)", b->t[T_DJPEG_PROG], runs, mp, 0, "");
        row("**`tracemark trace --blind`**, the copy, against the program", b->t[T_TRACE_CLI], runs, mp,
            med(b, T_DJPEG_PROG), "`djpeg`");
        row("**`tracemark trace`** (informed), the copy, against the program", b->t[T_INFORMED_CLI], runs, mp,
            med(b, T_DJPEG_PROG), "`djpeg`");
        row("`djpeg` program of the resized copy (reference)", b->t[T_DJPEG_PROG_RS], runs, mp_rs, 0, "");
        row("**`tracemark trace --blind`**, the resized copy, against the program", b->t[T_TRACE_RS_CLI], runs,
            mp_rs, med(b, T_DJPEG_PROG_RS), "`djpeg`");
        row("**`tracemark trace`** (informed), the resized copy, against the program", b->t[T_INFORMED_RS_CLI],
            runs, mp_rs, med(b, T_DJPEG_PROG_RS), "`djpeg`");
    }
    fflush(stdout);
}

/* Runs and prints the batch table, then the bars that apply. */
static int batch_and_bars(bench *b, const int *batch, int n_batch)
{
    int runs = b->runs, rc;
    double djpeg = med(b, M_DJPEG), cjpeg = med(b, M_CJPEG_COPY), batch20 = -1;
    char m[32], lo[32], hi[32], per[32], cj[32];
    printf("\n### batch: one decode and analysis, then R x (codeword, mark, encode q%d %s)\n\n"
           "| R | total ms | min | max | ms per copy | cjpeg ms | per copy x cjpeg | total x (djpeg + R cjpeg) |\n"
           "|---|---|---|---|---|---|---|---|\n",
           b->q_copy, tm_subsampling_name(b->ss_copy));
    for (int k = 0; k < n_batch; k++) {
        double t[MAX_RUNS];
        int copies = batch[k];
        if (b->progress) fprintf(stderr, "stages: %s: batch of %d\n", b->name, copies);
        for (int r = 0; r < runs; r++)
            if ((rc = bench_batch(b, copies, &t[r]))) return rc;
        double total = bench_median(t, runs);
        double ref = djpeg + copies * cjpeg;
        if (copies == 20) batch20 = total / ref;
        printf("| %d | %s | %s | %s | %s | %s | %.2f | %.2f |\n", copies, fmt_ms(m, sizeof m, total),
               fmt_ms(lo, sizeof lo, t[0]), fmt_ms(hi, sizeof hi, t[runs - 1]), fmt_ms(per, sizeof per, total / copies),
               fmt_ms(cj, sizeof cj, cjpeg), total / copies / cjpeg, total / ref);
        fflush(stdout);
    }

    /* The bars of issue 6 that apply to this size. */
    double codec = med(b, M_CODEC), djpeg_copy = med(b, T_DJPEG);
    int twelve = b->mp >= 11.5 && b->mp <= 13.5, two = b->mp >= 1.7 && b->mp <= 2.5;
    if (twelve || two) printf("\n### bars (medians of this run)\n\n");
    if (twelve) {
        double x = med(b, M_MARK_ALL) / codec, y = med(b, M_MARK_CLI) / codec;
        printf("- mark file to file, in process: %.2f x (djpeg + cjpeg), bar 1.5: %s\n", x, verdict(x, 1.5));
        printf("- mark file to file, `tracemark mark`: %.2f x (djpeg + cjpeg), bar 1.5: %s\n", y, verdict(y, 1.5));
        x = med(b, T_TRACE_ALL) / djpeg_copy;
        y = med(b, T_TRACE_CLI) / djpeg_copy;
        printf("- trace, decode + tm_trace_run (%d copies): %.2f x djpeg, bar 6: %s\n", N_COPIES, x, verdict(x, 6));
        printf("- trace, `tracemark trace --blind` (%d copies): %.2f x djpeg, bar 6: %s\n", N_COPIES, y,
               verdict(y, 6));
        x = med(b, T_TRACE_RS) / med(b, T_DJPEG_RS);
        y = med(b, T_TRACE_RS_CLI) / med(b, T_DJPEG_RS);
        printf("- trace of the copy resized by %s (the search runs), in process: %.2f x djpeg, bar 6: %s\n",
               RESIZE_FACTOR, x, verdict(x, 6));
        printf("- trace of the copy resized by %s, `tracemark trace --blind`: %.2f x djpeg, bar 6: %s\n",
               RESIZE_FACTOR, y, verdict(y, 6));
        x = med(b, T_INFORMED_CLI) / djpeg_copy;
        y = med(b, T_INFORMED_RS_CLI) / med(b, T_DJPEG_RS);
        printf("- (informed, `tracemark trace` as it runs by default: the copy %.2f x djpeg, the resized copy "
               "%.2f x djpeg)\n", x, y);
        if (batch20 > 0)
            printf("- 20 copies: %.2f x (djpeg + 20 cjpeg), bar 1.3: %s\n", batch20, verdict(batch20, 1.3));
        else printf("- 20 copies: not measured (add 20 to -R)\n");
        if (djpeg_prog[0] && cjpeg_prog[0]) {
            printf("\nAgainst libjpeg-turbo's own programs, as the issue states the bars:\n\n");
            x = med(b, M_MARK_CLI) / med(b, M_PIPE);
            printf("- `tracemark mark`, file to file: %.2f x `djpeg | cjpeg`, bar 1.5: %s\n", x, verdict(x, 1.5));
            x = med(b, T_TRACE_CLI) / med(b, T_DJPEG_PROG);
            printf("- `tracemark trace --blind` of the copy: %.2f x `djpeg`, bar 6: %s\n", x, verdict(x, 6));
            x = med(b, T_TRACE_RS_CLI) / med(b, T_DJPEG_PROG_RS);
            printf("- `tracemark trace --blind` of the resized copy (the search runs): %.2f x `djpeg`, bar 6: %s\n",
                   x, verdict(x, 6));
            x = med(b, T_INFORMED_CLI) / med(b, T_DJPEG_PROG);
            double y2 = med(b, T_INFORMED_RS_CLI) / med(b, T_DJPEG_PROG_RS);
            printf("- (informed `tracemark trace`: the copy %.2f x `djpeg`, the resized copy %.2f x `djpeg`)\n", x,
                   y2);
            x = med(b, M_MARK20_CLI) / (med(b, M_DJPEG_PROG) + 20 * med(b, M_CJPEG_PROG));
            printf("- `tracemark mark` of 20 copies: %.2f x (`djpeg` + 20 `cjpeg`), bar 1.3: %s\n", x,
                   verdict(x, 1.3));
        }
    }
    if (two) {
        double x = med(b, M_MARK_ALL), y = med(b, M_MARK_CLI);
        printf("- mark %dx%d in process: %.1f ms, bar 30 ms (1920x1080): %s\n", b->w, b->h, x, verdict(x, 30));
        printf("- mark %dx%d, `tracemark mark`: %.1f ms, bar 30 ms (1920x1080): %s\n", b->w, b->h, y, verdict(y, 30));
        if (djpeg_prog[0] && cjpeg_prog[0])
            printf("- (`djpeg | cjpeg` of the same file, the programs: %.1f ms)\n", med(b, M_PIPE));
    }
    if (b->wrong) printf("\n%d check%s FAILED (see stderr): these timings are not of a working mark.\n", b->wrong,
                         b->wrong == 1 ? "" : "s");
    fflush(stdout);
    return 0;
}

/* Everything for one input: 0, 1 (a check failed) or 2 (error). */
static int bench_input(const char *path, double mp, int runs, const char *program, char *const *env,
                       const tm_key *key, const int *batch, int n_batch)
{
    bench *b = calloc(1, sizeof *b);
    if (!b) return fail("memory", TM_ERR_NOMEM);
    b->runs = runs;
    b->program = program;
    b->env = env;
    b->key = key;
    b->progress = isatty(STDERR_FILENO);
    tm_trace_params_init(&b->tp);
    int rc = bench_prepare(b, path, mp);
    for (int r = -1; r < runs && !rc; r++) { /* r == -1: the warm-up, kept in column 0 until run 0 */
        if (b->progress) fprintf(stderr, "stages: %s: %s %d/%d\n", b->name, r < 0 ? "warm-up" : "run", r + 1, runs);
        rc = bench_pass(b, r < 0 ? 0 : r);
        if (rc == 1) rc = 0; /* counted in b->wrong, reported with the tables */
    }
    if (!rc) print_tables(b);
    if (!rc) rc = batch_and_bars(b, batch, n_batch);
    if (!rc && b->wrong) rc = 1;
    bench_clear(b);
    free(b);
    return rc;
}

static int usage(FILE *f)
{
    fprintf(f, "usage: stages [-r RUNS (1..%d)] [-R RECIPIENTS (comma list, 1..%d)] [-t TRACEMARK] "
               "[IMAGE | -s MP]...\n",
            MAX_RUNS, N_COPIES);
    return f == stdout ? 0 : 2;
}

int main(int argc, char **argv)
{
    int runs = 5, batch[MAX_BATCH], n_batch = 0, n_in = 0;
    const char *program = "./tracemark", *batch_arg = "1,20,100";
    struct {
        const char *path;
        double mp;
    } in[MAX_INPUTS];
    /* By hand, not getopt: images and -s sizes are benchmarked in the order given. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(stdout);
        if (a[0] == '-' && a[1] && strchr("rRst", a[1]) && !a[2]) {
            if (++i == argc) return usage(stderr);
            const char *v = argv[i];
            char *end;
            if (a[1] == 'r') {
                long x = strtol(v, &end, 10);
                if (*end || x < 1 || x > MAX_RUNS) return usage(stderr);
                runs = (int)x;
            } else if (a[1] == 'R') {
                batch_arg = v;
            } else if (a[1] == 't') {
                program = v;
            } else {
                double x = strtod(v, &end);
                if (*end || !(x >= 0.05 && x <= 150) || n_in == MAX_INPUTS) return usage(stderr);
                in[n_in].path = NULL;
                in[n_in++].mp = x;
            }
        } else if (a[0] == '-' && a[1]) {
            return usage(stderr);
        } else {
            if (n_in == MAX_INPUTS) return usage(stderr);
            in[n_in].path = a;
            in[n_in++].mp = 0;
        }
    }
    if (n_in == 0 || parse_list(batch_arg, batch, &n_batch, N_COPIES)) return usage(stderr);
    if (access(program, X_OK) != 0) {
        fprintf(stderr, "stages: %s: %s (give the program with -t)\n", program, strerror(errno));
        return 2;
    }

    char real[4096], **env = NULL;
    const char *wrapper = NULL;
    if (bench_unwrap_libtool(program, real, sizeof real, &env)) {
        wrapper = program;
        program = real;
    }

    uint8_t kb[TM_KEY_BYTES];
    for (int i = 0; i < TM_KEY_BYTES; i++) kb[i] = (uint8_t)(i * 29 + 7);
    tm_key *key = NULL;
    tm_status st = tm_key_from_bytes(kb, &key);
    if (st != TM_OK) {
        bench_env_free(env);
        return fail("key", st);
    }
    int rc = 0;
    find_program("djpeg", djpeg_prog, sizeof djpeg_prog);
    find_program("cjpeg", cjpeg_prog, sizeof cjpeg_prog);
    if (!djpeg_prog[0] || !cjpeg_prog[0])
        fprintf(stderr, "stages: djpeg or cjpeg not found in PATH (Debian: libjpeg-turbo-progs): "
                        "the programs' own times are left out\n");
    if (bench_scratch_create("stages", file_name, N_FILES)) rc = 2;
    else if ((st = tm_key_save(key, bench_scratch(F_KEY))) != TM_OK) rc = fail(bench_scratch(F_KEY), st);
    printf("# bench/stages: where `mark` and `trace` spend their time (issue 6)\n\n"
           "Per call, milliseconds; references measured in the same run on the same bytes and pixels; "
           "x reference = median / the reference's median.\n");
    if (wrapper)
        printf("Program rows run %s, the binary behind libtool's wrapper script %s, with the library directory "
               "first in LD_LIBRARY_PATH as the wrapper does (the wrapper itself would add a bash start to each).\n",
               program, wrapper);
    else printf("Program rows run %s.\n", program);
    for (int i = 0; i < n_in && rc != 2; i++) {
        int r = bench_input(in[i].path, in[i].mp, runs, program, env, key, batch, n_batch);
        if (r > rc) rc = r;
    }
    bench_scratch_remove();
    tm_key_free(key);
    bench_env_free(env);
    fftwf_cleanup();
    return rc;
}
