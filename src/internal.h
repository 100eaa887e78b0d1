/* internal.h -- declarations shared between library files, never installed.
 *
 * The codec files (jpeg.c, png.c, webp.c) each contain their library's error
 * model; image.c dispatches to them and owns the pixel-budget policy. */
#ifndef TM_INTERNAL_H
#define TM_INTERNAL_H

#include "tracemark.h"

/* Default pixel budget: 200 megapixels. */
#define TM_DEFAULT_MAX_PIXELS 200000000ULL

/* Hard ceiling for either side, whatever the budget: keeps every index
 * computation inside int and size_t without overflow checks at each use. */
#define TM_MAX_SIDE 65500

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

#endif /* TM_INTERNAL_H */
