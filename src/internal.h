/* internal.h -- declarations shared between library files, never installed.
 *
 * The codec files (jpeg.c, png.c, webp.c) each contain their library's error
 * model; image.c dispatches to them and owns the pixel-budget policy. */
#ifndef TM_INTERNAL_H
#define TM_INTERNAL_H

#include "tracemark.h"

/* Compressed files above this size are refused before reading them. */
#define TM_MAX_FILE_BYTES ((size_t)1 << 30)

/* Default pixel budget: 200 megapixels. */
#define TM_DEFAULT_MAX_PIXELS 200000000ULL

/* Hard ceiling for either side, whatever the budget: keeps every index
 * computation inside int and size_t without overflow checks at each use. */
#define TM_MAX_SIDE 65500

/* Zeroed memory for pixel planes and other whole-image buffers, freed with
 * tm_big_free (NULL is a no-op). Large ones are mapped on their own with
 * transparent huge pages asked for: a first touch then costs one fault per
 * 2 MB instead of per 4 kB, which on a virtual machine is most of the price
 * of a fresh buffer (docs/performance.md). */
void *tm_big_alloc(size_t bytes);
void tm_big_free(void *p);

/* TM_OK when w x h is a sane size within max_pixels, else the reason. */
tm_status tm_check_dimensions(uint64_t w, uint64_t h, uint64_t max_pixels);

/* Codec entry points. Decoders fill *out (EXIF orientation NOT yet applied;
 * info->orientation says what image.c must apply) and info (never NULL here).
 * Encoders return a malloc'd buffer. */
tm_status tm_jpeg_decode(const uint8_t *data, size_t len, const tm_load_options *opts,
                         tm_image **out, tm_image_info *info);
tm_status tm_jpeg_encode(const tm_image *img, const tm_save_options *opts,
                         uint8_t **data, size_t *len);
tm_status tm_png_decode(const uint8_t *data, size_t len, const tm_load_options *opts,
                        tm_image **out, tm_image_info *info);
tm_status tm_png_encode(const tm_image *img, const tm_save_options *opts,
                        uint8_t **data, size_t *len);
tm_status tm_webp_decode(const uint8_t *data, size_t len, const tm_load_options *opts,
                         tm_image **out, tm_image_info *info);
tm_status tm_webp_encode(const tm_image *img, const tm_save_options *opts,
                         uint8_t **data, size_t *len);

/* A JPEG's components exactly as stored: 8-bit YCbCr (or gray), each at its
 * own sampled size, the luminance at full resolution. Marking changes only
 * the luminance, so a JPEG original is read this way and each copy encoded
 * from it with the chroma untouched: no upsampling, no colour conversion, no
 * chroma rounding (docs/image-io.md). */
typedef struct tm_jpeg_planes {
    int width, height;          /* the image's (plane 0's samples) */
    int ncomp;                  /* 1 (gray) or 3 (YCbCr) */
    int h_samp[3], v_samp[3];   /* sampling factors as stored */
    int cw[3], ch[3];           /* each component's size in samples */
    size_t stride[3];           /* samples per allocated row: whole blocks */
    size_t rows[3];             /* allocated rows: whole iMCU rows */
    uint8_t *plane[3];
    uint8_t *icc;               /* the ICC profile, or NULL */
    size_t icc_len;
} tm_jpeg_planes;

void tm_jpeg_planes_free(tm_jpeg_planes *p);

/* tm_jpeg_decode, except that when planes is not NULL and the stream can be
 * read as tm_jpeg_planes (YCbCr or gray, orientation 1, luminance at full
 * resolution) it is, into *planes, and *out stays NULL. */
tm_status tm_jpeg_decode_planes(const uint8_t *data, size_t len, const tm_load_options *opts,
                                tm_image **out, tm_jpeg_planes **planes, tm_image_info *info);

/* An image file's bytes (at most TM_MAX_FILE_BYTES), as tm_image_load reads
 * them: a missing file is TM_ERR_IO. */
tm_status tm_image_file_read(const char *path, uint8_t **data, size_t *len);

/* tm_image_decode, reading a JPEG into *planes when it can (see above). */
tm_status tm_image_decode_planes(const void *data, size_t len, const tm_load_options *opts,
                                 tm_image **out, tm_jpeg_planes **planes, tm_image_info *info);

/* Encodes p's components at their own sampling, with luma (laid out as
 * p->plane[0]; NULL for p's own) as the luminance. */
tm_status tm_jpeg_encode_planes(const tm_jpeg_planes *p, const uint8_t *luma, int quality, int progressive,
                                uint8_t **data, size_t *len);

/* EXIF (TIFF-structured) block parser, shared by the three codecs. data points
 * at the TIFF header ("II*\0" / "MM\0*"), i.e. after any "Exif\0\0" prefix. */
typedef struct tm_exif_summary {
    int orientation;  /* 1..8, 1 when absent or invalid */
    int has_gps;      /* GPS IFD pointer present */
} tm_exif_summary;
tm_status tm_exif_parse(const uint8_t *data, size_t len, tm_exif_summary *out);

/* Number of colour planes (alpha, always last, excluded). */
static inline int tm_color_channels(const tm_image *img)
{
    return img->channels == 2 || img->channels == 4 ? img->channels - 1 : img->channels;
}

/* Rounds a 0..255 float sample to an 8-bit value with clamping. */
static inline uint8_t tm_to_u8(float v)
{
    if (!(v > 0.0f)) return 0;  /* also NaN */
    if (v >= 255.0f) return 255;
    return (uint8_t)(v + 0.5f);
}

/* Rounds a 0..255 float sample to a 16-bit value (v * 257) with clamping. */
static inline uint16_t tm_to_u16(float v)
{
    float s = v * 257.0f;
    if (!(s > 0.0f)) return 0;
    if (s >= 65535.0f) return 65535;
    return (uint16_t)(s + 0.5f);
}

/* Writes the printf-style message into err (errlen bytes, may be NULL) and
 * returns st (tm_fail_arg: TM_ERR_ARG): the one-line reason a call failed. */
tm_status tm_fail(tm_status st, char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
tm_status tm_fail_arg(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- robustness lab (lab.c sweeps, report.c writes) ------------------------ */

/* A curve of the report: attacks of the grid that differ in one number only
 * (jpeg:q=90, jpeg:q=50, jpeg:q=30), found by parsing the specs. */
typedef struct tm_lab_curve {
    char *family;      /* what the number measures: "JPEG quality", else "STEP KEY" */
    char *pattern;     /* the shared spec, the number shown as "{}" */
    size_t n;
    size_t *attack;    /* grid indices, by increasing x */
    double *x;         /* the number in each */
} tm_lab_curve;

/* Groups g's attacks into the curves with at least min_points (>= 2) attacks,
 * in order of first appearance in the grid; an attack with several numbers
 * may sit on several curves. Free with tm_lab_curves_free. */
tm_status tm_lab_curves(const tm_lab_grid *g, size_t min_points, tm_lab_curve **curves, size_t *n);
void tm_lab_curves_free(tm_lab_curve *c, size_t n);

/* The images a sweep makes of each original for the report. */
enum {
    TM_LAB_THUMB_ORIG,         /* the original, long side <= 360 px (JPEG) */
    TM_LAB_THUMB_MARKED,       /* the marked copy, the same size (JPEG) */
    TM_LAB_THUMB_AMPLITUDE,    /* local RMS of the mark's luminance change, amplified (PNG) */
    TM_LAB_THUMB_CROP_ORIG,    /* 180 x 180 where the mark is strongest, full resolution (PNG) */
    TM_LAB_THUMB_CROP_MARKED,
    TM_LAB_THUMB_CROP_DIFF,    /* the signed change there, 128 + gain * d (PNG) */
    TM_LAB_THUMB_ICON,         /* the original, long side <= 120 px (JPEG) */
    TM_LAB_THUMBS
};

typedef struct tm_lab_thumb {
    uint8_t *data;             /* encoded file */
    size_t len;
    tm_format format;
    int width, height;
    double gain;               /* amplification of a difference image, else 1 */
} tm_lab_thumb;

/* What report.c reads from a lab besides the public accessors. */
const tm_lab_params *tm_lab_get_params(const tm_lab *lab);
const tm_lab_grid *tm_lab_get_grid(const tm_lab *lab);
const char *tm_lab_get_key_fingerprint(const tm_lab *lab);

/* Thumbnail which (TM_LAB_THUMB_*) of image i, or NULL when there is none. */
const tm_lab_thumb *tm_lab_get_thumb(const tm_lab *lab, size_t image, int which);

/* The image the report shows side by side: params.showcase, else the first
 * of >= 1 MP, else the first swept; (size_t)-1 when none has thumbnails. */
size_t tm_lab_showcase_image(const tm_lab *lab);

#endif /* TM_INTERNAL_H */
