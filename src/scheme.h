/* scheme.h -- the marking scheme's constants and the internal interfaces
 * between its parts (docs/scheme.md explains the math, section by section).
 *
 *   xform.c  FFTW plans behind the planner mutex (tile DFT, 8x8 block DCT)
 *   mask.c   perceptual mask from block-DCT texture energy        (scheme 3)
 *   pattern.c keyed tile patterns: pilot and payload chips        (scheme 2)
 *   code.c   per-copy codewords, accusation scores, bounds        (scheme 4, 6)
 *   embed.c / detect.c  the two halves                            (scheme 5)
 */
#ifndef TM_SCHEME_H
#define TM_SCHEME_H

#include <fftw3.h>
#include <string.h>

#include "internal.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif
#ifndef M_LN10
#define M_LN10 2.30258509299404568402
#endif

#define TM_SCHEME_VERSION 3         /* 2: the tile grows with the original; 3: odd 125-pixel tile */
#define TM_TILE 125                /* period of the mark, pixels */
#define TM_CODE_BITS 256           /* m: codeword length */
#define TM_CODE_BYTES (TM_CODE_BITS / 8)
_Static_assert(TM_CODE_BYTES == TM_CODEWORD_BYTES, "public codeword size");
#define TM_BAND_LO 4.0             /* band radius in DFT bins of the tile: 4/125 .. */
#define TM_BAND_HI 20.0            /* .. 20/125 cycles per pixel */
#define TM_CHIPS_PER_BIT 4         /* real DFT dimensions per codeword bit */
#define TM_BIAS_CUTOFF 0.1         /* Tardos bias density on [t, 1-t] */
#define TM_DEFAULT_STRENGTH 2.0    /* target RMS luminance change, 0..255 units */
#define TM_FLAT_FRACTION 0.5       /* flat areas get at most this * strength RMS */
#define TM_TILE_SCALE_SIDE 2560    /* the tile grows by 1 per this many pixels of the long side .. */
#define TM_TILE_SCALE_MAX 4        /* .. up to 4 * TM_TILE */

/* ---- xform.c ---- */

/* The transforms the library plans (xform.c). */
typedef enum tm_fft_kind {
    TM_FFT_R2C,         /* n0 x n1 real to n0 x (n1 / 2 + 1) complex, out of place */
    TM_FFT_C2R,         /* and back, unnormalised (destroys its input) */
    TM_FFT_DCT2,        /* n0 x n1 DCT-II (REDFT10 on both axes), out of place */
    TM_FFT_DCT2_BLOCKS, /* TM_DCT_STRIP n0 x n0 blocks side by side (rows of TM_DCT_STRIP n0
                           samples): each one's DCT-II, out of place */
} tm_fft_kind;
#define TM_DCT_STRIP 64

/* The process's one plan of that shape (n1 unused for TM_FFT_DCT2_BLOCKS),
 * made on first use; NULL when FFTW cannot. Never destroyed; run it with
 * FFTW's new-array execute functions on fftwf_malloc'd arrays of the
 * planned layout, from any thread. */
fftwf_plan tm_fft_plan(tm_fft_kind kind, int n0, int n1);

/* The least size >= n (and >= 16) of the form 2^k, 5 * 2^k or 3 * 2^k:
 * transforms FFTW runs fast, three to an octave, so that canvases fitted
 * to images share a few cached plans. */
int tm_fft_good_size(int n);

/* ---- pattern.c ---- */

/* One real dimension of the tile spectrum in FFTW's r2c layout, index
 * [kx * (T/2+1) + ky]: kx runs over the full first dimension (0..T-1, meaning
 * frequency kx or kx-T), ky over the halved one (1..T/2-1 used); imag says
 * whether the chip is the real or the imaginary part. */
typedef struct tm_chip {
    uint16_t ky, kx;
    uint8_t imag;
    int8_t sign;     /* keyed +-1 */
    uint16_t ring;   /* integer radius, for noise whitening */
} tm_chip;

/* The key's fixed layout: which dimensions carry the pilot and which carry
 * each codeword bit, with their keyed signs. Shared by all images. */
typedef struct tm_layout {
    tm_chip *pilot;
    size_t n_pilot;
    tm_chip *payload;  /* TM_CODE_BITS * TM_CHIPS_PER_BIT, bit i at [i*C, (i+1)*C) */
} tm_layout;

tm_status tm_layout_create(const tm_key *key, tm_layout **out);
void tm_layout_free(tm_layout *lay);

/* Synthesises the spatial tile (side^2 floats, unit RMS, side that of fft) of
 * the pilot plus the payload for codeword bits (packed LSB first). A side of
 * f * TM_TILE puts every chip at the same cycles per tile, which makes the
 * exact band-limited f-times enlargement of the TM_TILE tile (tm_mark_tile_scale).
 * Uses the caller's FFTW buffers (see tm_tile_fft). */
typedef struct tm_tile_fft tm_tile_fft;
tm_status tm_tile_fft_create(tm_tile_fft **out);       /* side TM_TILE */
tm_status tm_tile_fft_create_side(int side, tm_tile_fft **out);
void tm_tile_fft_free(tm_tile_fft *t);
int tm_tile_fft_side(const tm_tile_fft *t);
float *tm_tile_fft_spatial(tm_tile_fft *t);            /* side*side reals */
fftwf_complex *tm_tile_fft_spectrum(tm_tile_fft *t);   /* side*(side/2+1) */
void tm_tile_fft_forward(tm_tile_fft *t);              /* spatial -> spectrum */
void tm_tile_fft_inverse(tm_tile_fft *t);              /* spectrum -> spatial (unnormalised) */

tm_status tm_pattern_tile(const tm_layout *lay, const uint8_t *bits, tm_tile_fft *fft, float *tile);

/* ---- mask.c ---- */

/* A luminance plane to analyse: float samples (tm_luma's) or 8-bit ones (a
 * JPEG's Y as stored), rows stride samples apart. */
typedef struct tm_plane {
    const float *f;    /* one of f and u8 */
    const uint8_t *u8;
    size_t stride;
    int w, h;
} tm_plane;

static inline tm_plane tm_plane_float(const float *y, int w, int h)
{
    return (tm_plane){.f = y, .stride = (size_t)w, .w = w, .h = h};
}

/* Samples x0 .. x0 + n - 1 of row y of p, as floats, into out. */
static inline void tm_plane_row(const tm_plane *p, int y, int x0, int n, float *restrict out)
{
    if (p->f) {
        memcpy(out, p->f + (size_t)y * p->stride + (size_t)x0, sizeof(float) * (size_t)n);
        return;
    }
    const uint8_t *restrict in = p->u8 + (size_t)y * p->stride + (size_t)x0;
    for (int i = 0; i < n; i++) out[i] = in[i];
}

/* The mask's weights are kept in 8.8 fixed point: TM_GAIN_ONE is 1. */
#define TM_GAIN_ONE 256

/* Perceptual mask of luminance y: one weight per pixel in [1, 8] (y->w x
 * y->h of them, times TM_GAIN_ONE), 1 on flat areas, growing with texture;
 * *mean_sq (may be NULL) gets the mean of the squared weights. */
tm_status tm_mask_compute(const tm_plane *y, uint16_t *mask, double *mean_sq);

/* ---- phash.c ---- */

/* tm_image_phash of the image whose luminance is y. */
tm_status tm_phash_luma(const tm_plane *y, uint64_t *hash);

/* ---- code.c ---- */

/* Keyed per-position biases p[i] of an image's code (Tardos arcsine density). */
tm_status tm_code_bias(const tm_key *key, const char *image_id, double *p);

/* Keyed codeword of (image, recipient): bit i is 1 with probability p[i]. */
tm_status tm_code_word(const tm_key *key, const char *image_id, const char *recipient,
                       const double *p, uint8_t *bits);

/* Scoring of an image's copies against soft values y[0..m). */
typedef struct tm_scorer {
    double base;                 /* sum_i y_i g0_i */
    double table[TM_CODE_BYTES][256];
    double var;                  /* sum_i y_i^2 (variance of an innocent score) */
    double bmax;                 /* max_i |y_i g_i| over both bit values */
    double range2;               /* sum_i (range of y_i g_i)^2, for Hoeffding */
    double p[TM_CODE_BITS];      /* the biases, and ... */
    double d[TM_CODE_BITS];      /* ... y_i (g1_i - g0_i): S = base + sum of d over the set bits */
} tm_scorer;

void tm_scorer_init(tm_scorer *s, const double *y, const double *p);
double tm_scorer_score(const tm_scorer *s, const uint8_t *bits);

/* log10 of an upper bound on P(innocent score >= score); 0 when score <= 0.
 * _fast is the smaller of Bernstein's and Hoeffding's, a few operations;
 * the other also takes the Chernoff bound from the score's exact moment
 * generating function, optimised over its parameter, which is never weaker
 * and much tighter in the tails (about 6,000 exponentials a call). */
double tm_scorer_log10_tail_fast(const tm_scorer *s, double score);
double tm_scorer_log10_tail(const tm_scorer *s, double score);

/* Scores below this many standard deviations get only the fast bound in
 * trace: no bound can take them to an accusation (the Gaussian tail at 3 sd
 * is 1.3e-3), and the exact one costs too much to spend on every copy. With
 * many copies the start moves up to TM_EXACT_BOUND_MARGIN below the
 * Gaussian z of the accusation level per copy (7.1 sd for 10^6 copies at
 * the default budget, so from 4.6): at 10^6 copies the exact bound for the
 * 0.13% of innocents above 3 sd cost more than scoring them all. */
#define TM_EXACT_BOUND_Z 3.0
#define TM_EXACT_BOUND_MARGIN 2.5

/* Accusation rounds: round r (1-based) accuses at fpr / 2^r, the last at the
 * same level as the one before, so the rounds' levels add up to fpr. */
#define TM_TRACE_ROUNDS 4
/* Originals tm_trace_run_informed tries at most (the rest are ignored). */
#define TM_TRACE_ORIGINALS_MAX 64
/* Copies whose marks a later round takes out at most. */
#define TM_TRACE_REMOVE_MAX 16
/* A later round rescores only the copies that reached this z in round 1.
 * Taking c - 1 equal colluders' marks out of the soft values lowers their
 * spread by at most sqrt(c) (when no noise is left besides the marks), so a
 * colluder under 2 sd in round 1 could pass a later round's level (over 5
 * sd at the default budget, even for 10 copies) only among seven or more
 * colluders; an innocent reaches 2 sd in about 2% of cases, so a later round
 * costs a few percent of round 1. */
#define TM_TRACE_RESCORE_Z 2.0

/* ---- attack.c, for register.c ---- */

/* in resampled to ow x oh: Lanczos-3, widened when shrinking, factors
 * ow / width and oh / height, content centred, values clamped to 0..255. */
tm_status tm_resample(const tm_image *in, int ow, int oh, tm_image **out);

/* Sample of plane p (w x h) at (x, y): bicubic (Catmull-Rom) or bilinear,
 * borders clamped. */
double tm_interp(const float *p, int w, int h, double x, double y, int cubic);

/* ---- original.c ---- */

/* A luminance image at a reduced scale, with its map back to the full-size
 * image: its pixel (x, y) is full-size pixel (ox + kx x, oy + ky y), pixel
 * centres at integers. v is tm_big_alloc'd when owned, borrowed otherwise. */
typedef struct tm_level {
    float *v;
    int w, h;
    double kx, ky, ox, oy;
    int owned;
} tm_level;

void tm_level_free(tm_level *l);                        /* and zeroes *l */
tm_level tm_level_view(const float *v, int w, int h);   /* borrowed, at full size */
/* p's means over b x b boxes (the last partial row and column dropped). */
tm_status tm_level_box(const tm_plane *p, int b, tm_level *out);
/* in resized to w x h (box means over the whole part of the factor, then
 * Lanczos for the rest), its map carried over; always a new, owned level. */
tm_status tm_level_resize(const tm_level *in, int w, int h, tm_level *out);
/* in resampled to w x h by Lanczos alone, as tm_resample does: the band a
 * resampler leaves, for comparing with a resampled copy. */
tm_status tm_level_resample(const tm_level *in, int w, int h, tm_level *out);
/* in resized to at most side pixels a side, aspect kept (a copy when it is
 * at most 10% larger: resampling by so little buys nothing). */
tm_status tm_level_fit(const tm_level *in, int side, tm_level *out);
/* [1 2 1] / 4 along both axes, in place. */
tm_status tm_level_soften(tm_level *l);
/* The map of l's pixels to full-size pixels as an affine map (register.c's
 * layout: x' = m[0] + m[1] x + m[2] y, y' = m[3] + m[4] x + m[5] y). */
void tm_level_to_full(const tm_level *l, double m[6]);

#define TM_REG_FINE_SIDE 2048 /* registration's fine level, at most this long a side (+10% for box means alone) */

struct tm_original {
    int width, height;   /* full size */
    int tile_scale;      /* f = tm_mark_tile_scale */
    tm_level frame;      /* f x f box means: the mark's tile is TM_TILE pixels here */
    tm_level fine;       /* the frame at most TM_REG_FINE_SIDE a side, softened */
    uint64_t phash;      /* of the frame */
};

/* ---- register.c ---- */

/* A suspect's luminance prepared for registration: box means over
 * box_b x box_b (none when box_b is 1) and the fine level, at most about
 * TM_REG_FINE_SIDE a side (the box level itself when that is small enough,
 * or the suspect itself when it is). full is borrowed. */
typedef struct tm_reg_suspect {
    tm_plane full;
    int box_b;
    tm_level box;
    tm_level fine;       /* unsoftened; may borrow box's or full's pixels */
} tm_reg_suspect;

tm_status tm_reg_suspect_init(const float *y, int w, int h, tm_reg_suspect *out);
void tm_reg_suspect_free(tm_reg_suspect *s);

/* Registers suspect s to original o: out->found says whether it was; the
 * rest as in tm_registration. */
tm_status tm_register(const tm_original *o, const tm_reg_suspect *s, tm_registration *out);

/* The suspect minus the tone-matched original, in the original's frame (f x
 * f box means, f its tile scale): a one-channel image (128 + difference; 128
 * where the suspect does not reach) of the frame pixels the suspect covers
 * (their bounding box). Sets
 * r->detail, the correlation of the two images' fine detail: below
 * TM_REG_DETAIL the fit is of smooth content only, r->found is cleared and
 * *out stays NULL. Sets r->residual. */
#define TM_REG_DETAIL 0.1
tm_status tm_register_difference(const tm_original *o, const tm_reg_suspect *s, tm_registration *r,
                                 tm_image **out);

/* ---- embed.c / detect.c ---- */

/* The content hash of a JPEG original read as stored: its components'
 * samples, each at its own sampling (docs/scheme.md section 5). */
tm_status tm_planes_content_hash(const tm_jpeg_planes *p, uint8_t sha[32]);
/* An image id (TM_IMAGE_ID_LEN hex digits and a NUL) from a content hash. */
void tm_image_id_hex(const uint8_t sha[32], char *id);

/* Luminance (BT.601) of img's colour channels into y (width*height floats). */
void tm_luma(const tm_image *img, float *y);

/* A pilot is "present" below this log10 p-value (after the shift search). */
#define TM_PILOT_LOG10_P (-4.0)

typedef struct tm_detection {
    double y[TM_CODE_BITS];   /* soft values, unit noise per chip */
    double pilot_z;           /* best pilot correlation, in null standard deviations */
    double pilot_log10_p;     /* Bonferroni over the TM_TILE^2 shifts searched */
    double evidence;          /* pilot z and payload energy z of the alignment read, combined */
    int offset_x, offset_y;   /* where the tile grid starts in the (re-oriented) suspect */
    int dihedral;             /* 0..7: the flip/quarter-turn found (see detect.c) */
    double scale;             /* geometric hypothesis read (tm_detect_search) */
    double rotation_deg;
    double aspect;            /* width stretch / height stretch (sync.h) */
    double activity;          /* mean local variance: ~0 for flat images */
    int usable;               /* enough pixels and texture to read a mark */
} tm_detection;

/* Reads the soft values of a suspect in the marked frame (searching the tile
 * shift and the eight flips/quarter turns, no scale or rotation). */
tm_status tm_detect_run(const tm_key *key, const tm_image *img, tm_detection *out);

/* As tm_detect_run, after a blind search for scale and rotation (sync.c):
 * each lattice hypothesis is screened, the best one is read. */
tm_status tm_detect_search(const tm_key *key, const tm_image *img, tm_detection *out);

/* As tm_detect_run, for the difference of a suspect from its original
 * (tm_register_difference: one plane, in the marked frame, so no search):
 * read twice, with the prefilter's local mean over 7 x 7 pixels and over
 * 31 x 31 (with little host left to take out, that keeps the lower part of
 * the mark's band, all that a strong shrink leaves of it), the reading with
 * more evidence kept. */
tm_status tm_detect_difference(const tm_key *key, const tm_image *diff, tm_detection *out);

/* tm_trace_run after its detection: scores the n copies against det's soft
 * values and gives the verdict (bench/registry times this alone). */
tm_status tm_trace_score(const tm_key *key, const tm_detection *det, const tm_reg_copy *copies, size_t n,
                         const tm_trace_params *params, tm_trace_result *out);

#endif
