/* image.c -- the planar float image, format dispatch, orientation, budgets.
 *
 * Pixels are float planes in 0..255 whatever the file's depth: the marking
 * and tracing arithmetic is floating point anyway (transforms, masks,
 * correlation), a float holds every 8- and 16-bit sample exactly, and one type
 * keeps every algorithm free of per-depth variants (docs/image-io.md). */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "scheme.h"

void tm_load_options_init(tm_load_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->max_pixels = TM_DEFAULT_MAX_PIXELS;
}

void tm_save_options_init(tm_save_options *opts)
{
    memset(opts, 0, sizeof *opts);
}

tm_status tm_check_dimensions(uint64_t w, uint64_t h, uint64_t max_pixels)
{
    if (w == 0 || h == 0 || w > TM_MAX_SIDE || h > TM_MAX_SIDE) return TM_ERR_DIMENSIONS;
    if (w * h > max_pixels) return TM_ERR_TOO_LARGE;
    return TM_OK;
}

tm_status tm_image_create(int width, int height, int channels, tm_image **out)
{
    if (!out) return TM_ERR_ARG;
    *out = NULL;
    if (channels < 1 || channels > 4 || width <= 0 || height <= 0) return TM_ERR_ARG;
    if (width > TM_MAX_SIDE || height > TM_MAX_SIDE) return TM_ERR_DIMENSIONS;
    tm_image *img = calloc(1, sizeof *img);
    if (!img) return TM_ERR_NOMEM;
    img->width = width;
    img->height = height;
    img->channels = channels;
    size_t n = (size_t)width * (size_t)height;
    for (int c = 0; c < channels; c++) {
        img->plane[c] = tm_big_alloc(n * sizeof(float));
        if (!img->plane[c]) {
            tm_image_free(img);
            return TM_ERR_NOMEM;
        }
    }
    *out = img;
    return TM_OK;
}

void tm_image_free(tm_image *img)
{
    if (!img) return;
    for (int c = 0; c < 4; c++) tm_big_free(img->plane[c]);
    free(img->icc);
    free(img);
}

tm_status tm_image_set_icc(tm_image *img, const void *data, size_t len)
{
    if (!img || (len && !data)) return TM_ERR_ARG;
    uint8_t *copy = NULL;
    if (len) {
        copy = malloc(len);
        if (!copy) return TM_ERR_NOMEM;
        memcpy(copy, data, len);
    }
    free(img->icc);
    img->icc = copy;
    img->icc_len = len;
    return TM_OK;
}

tm_status tm_image_clone(const tm_image *src, tm_image **out)
{
    if (!src || !out) return TM_ERR_ARG;
    tm_image *img;
    tm_status st = tm_image_create(src->width, src->height, src->channels, &img);
    if (st != TM_OK) return st;
    size_t n = (size_t)src->width * (size_t)src->height;
    for (int c = 0; c < src->channels; c++) memcpy(img->plane[c], src->plane[c], n * sizeof(float));
    st = tm_image_set_icc(img, src->icc, src->icc_len);
    if (st != TM_OK) {
        tm_image_free(img);
        return st;
    }
    img->has_gamma = src->has_gamma;
    img->gamma = src->gamma;
    img->has_srgb = src->has_srgb;
    img->srgb_intent = src->srgb_intent;
    img->has_chrm = src->has_chrm;
    memcpy(img->chrm, src->chrm, sizeof img->chrm);
    *out = img;
    return TM_OK;
}

/* EXIF orientation o maps a stored pixel to its upright place. For output pixel
 * (x, y) of the upright image (size W x H) this returns the stored index. */
static size_t oriented_src_index(int o, int x, int y, int sw, int sh)
{
    int sx, sy;
    switch (o) {
    case 2: sx = sw - 1 - x; sy = y; break;            /* mirror horizontal */
    case 3: sx = sw - 1 - x; sy = sh - 1 - y; break;   /* rotate 180 */
    case 4: sx = x; sy = sh - 1 - y; break;            /* mirror vertical */
    case 5: sx = y; sy = x; break;                     /* transpose */
    case 6: sx = y; sy = sh - 1 - x; break;            /* rotate 90 CW */
    case 7: sx = sw - 1 - y; sy = sh - 1 - x; break;   /* transverse */
    case 8: sx = sw - 1 - y; sy = x; break;            /* rotate 270 CW */
    default: sx = x; sy = y; break;
    }
    return (size_t)sy * (size_t)sw + (size_t)sx;
}

tm_status tm_image_orient(tm_image *img, int orientation)
{
    if (!img || orientation < 1 || orientation > 8) return TM_ERR_ARG;
    if (orientation == 1) return TM_OK;
    int sw = img->width, sh = img->height;
    int swap = orientation >= 5;
    int w = swap ? sh : sw, h = swap ? sw : sh;
    size_t n = (size_t)sw * (size_t)sh;
    float *planes[4] = {0};
    for (int c = 0; c < img->channels; c++) {
        planes[c] = tm_big_alloc(n * sizeof(float));
        if (!planes[c]) {
            for (int k = 0; k < c; k++) tm_big_free(planes[k]);
            return TM_ERR_NOMEM;
        }
    }
    for (int c = 0; c < img->channels; c++) {
        const float *src = img->plane[c];
        float *dst = planes[c];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                dst[(size_t)y * (size_t)w + (size_t)x] = src[oriented_src_index(orientation, x, y, sw, sh)];
        tm_big_free(img->plane[c]);
        img->plane[c] = dst;
    }
    img->width = w;
    img->height = h;
    return TM_OK;
}

tm_format tm_format_sniff(const void *data, size_t len)
{
    const uint8_t *p = data;
    if (!p) return TM_FORMAT_UNKNOWN;
    if (len >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return TM_FORMAT_JPEG;
    if (len >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0) return TM_FORMAT_PNG;
    if (len >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0) return TM_FORMAT_WEBP;
    return TM_FORMAT_UNKNOWN;
}

tm_format tm_format_from_path(const char *path)
{
    const char *dot = path ? strrchr(path, '.') : NULL;
    if (!dot || strchr(dot, '/')) return TM_FORMAT_UNKNOWN;
    if (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".jpe"))
        return TM_FORMAT_JPEG;
    if (!strcasecmp(dot, ".png")) return TM_FORMAT_PNG;
    if (!strcasecmp(dot, ".webp")) return TM_FORMAT_WEBP;
    return TM_FORMAT_UNKNOWN;
}

const char *tm_format_name(tm_format fmt)
{
    switch (fmt) {
    case TM_FORMAT_JPEG: return "jpeg";
    case TM_FORMAT_PNG: return "png";
    case TM_FORMAT_WEBP: return "webp";
    default: return "unknown";
    }
}

const char *tm_subsampling_name(tm_subsampling ss)
{
    switch (ss) {
    case TM_SS_444: return "4:4:4";
    case TM_SS_422: return "4:2:2";
    case TM_SS_420: return "4:2:0";
    case TM_SS_440: return "4:4:0";
    case TM_SS_411: return "4:1:1";
    case TM_SS_GRAY: return "gray";
    default: return "unknown";
    }
}

/* Replaces *img by its luminance, alpha dropped. */
static tm_status to_luma(tm_image **img)
{
    tm_image *y;
    tm_status st = tm_image_create((*img)->width, (*img)->height, 1, &y);
    if (st != TM_OK) return st;
    tm_luma(*img, y->plane[0]);
    tm_image_free(*img);
    *img = y;
    return TM_OK;
}

tm_status tm_image_decode(const void *data, size_t len, const tm_load_options *opts,
                          tm_image **out, tm_image_info *info)
{
    return tm_image_decode_planes(data, len, opts, out, NULL, info);
}

/* Shrinks *img so that its longer side is at most max_side (0: no limit),
 * keeping the aspect ratio (the colour description goes with it). */
static tm_status shrink_to(tm_image **img, int max_side)
{
    tm_image *in = *img;
    int lo = in->width > in->height ? in->width : in->height;
    if (!max_side || lo <= max_side) return TM_OK;
    double k = (double)max_side / lo;
    int w = (int)lround(in->width * k), h = (int)lround(in->height * k);
    tm_image *r = NULL;
    tm_status st = tm_resample(in, w < 1 ? 1 : w, h < 1 ? 1 : h, &r);
    if (st != TM_OK) return st;
    tm_image_free(in);
    *img = r;
    return TM_OK;
}

tm_status tm_image_decode_planes(const void *data, size_t len, const tm_load_options *opts,
                                 tm_image **out, tm_jpeg_planes **planes, tm_image_info *info)
{
    if (!out || (!data && len)) return TM_ERR_ARG;
    *out = NULL;
    if (planes) *planes = NULL;
    tm_load_options defaults;
    if (!opts) {
        tm_load_options_init(&defaults);
        opts = &defaults;
    }
    tm_image_info local;
    if (!info) info = &local;
    memset(info, 0, sizeof *info);
    info->orientation = 1;

    if (opts->max_side < 0) return TM_ERR_ARG;
    tm_status st;
    tm_image *img = NULL;
    switch (tm_format_sniff(data, len)) {
    case TM_FORMAT_JPEG: st = tm_jpeg_decode_planes(data, len, opts, &img, planes, info); break;
    case TM_FORMAT_PNG: st = tm_png_decode(data, len, opts, &img, info); break;
    case TM_FORMAT_WEBP: st = tm_webp_decode(data, len, opts, &img, info); break;
    default: return len < 12 && len > 0 ? TM_ERR_TRUNCATED : TM_ERR_FORMAT;
    }
    if (st == TM_OK && !img) { /* read as planes, which are never resized: decoded again if too large */
        if (!opts->max_side || ((*planes)->width <= opts->max_side && (*planes)->height <= opts->max_side))
            return TM_OK;
        tm_jpeg_planes_free(*planes);
        *planes = NULL;
        st = tm_jpeg_decode_planes(data, len, opts, &img, NULL, info);
    }
    if (st == TM_OK && opts->luma_only && img->channels > 1) st = to_luma(&img);
    if (st == TM_OK && info->orientation != 1) st = tm_image_orient(img, info->orientation);
    if (st == TM_OK) st = shrink_to(&img, opts->max_side);
    if (st != TM_OK) {
        tm_image_free(img);
        return st;
    }
    *out = img;
    return TM_OK;
}

tm_status tm_image_file_read(const char *path, uint8_t **data, size_t *len)
{
    tm_status st = tm_file_read(path, TM_MAX_FILE_BYTES, data, len);
    return st == TM_ERR_NOT_FOUND ? TM_ERR_IO : st;
}

tm_status tm_image_load(const char *path, const tm_load_options *opts,
                        tm_image **out, tm_image_info *info)
{
    if (!out) return TM_ERR_ARG;
    *out = NULL;
    uint8_t *data;
    size_t len;
    tm_status st = tm_image_file_read(path, &data, &len);
    if (st != TM_OK) return st;
    st = tm_image_decode(data, len, opts, out, info);
    free(data);
    return st;
}

tm_status tm_image_encode(const tm_image *img, const tm_save_options *opts,
                          uint8_t **data, size_t *len)
{
    if (!img || !opts || !data || !len) return TM_ERR_ARG;
    *data = NULL;
    *len = 0;
    switch (opts->format) {
    case TM_FORMAT_JPEG: return tm_jpeg_encode(img, opts, data, len);
    case TM_FORMAT_PNG: return tm_png_encode(img, opts, data, len);
    case TM_FORMAT_WEBP: return tm_webp_encode(img, opts, data, len);
    default: return TM_ERR_ARG;
    }
}

tm_status tm_image_save(const tm_image *img, const char *path, const tm_save_options *opts)
{
    if (!img || !path) return TM_ERR_ARG;
    tm_save_options o;
    if (opts) o = *opts;
    else tm_save_options_init(&o);
    if (o.format == TM_FORMAT_UNKNOWN) o.format = tm_format_from_path(path);
    if (o.format == TM_FORMAT_UNKNOWN) return TM_ERR_ARG;
    uint8_t *data;
    size_t len;
    tm_status st = tm_image_encode(img, &o, &data, &len);
    if (st != TM_OK) return st;
    st = tm_file_write_atomic(path, data, len, 0644, 0);
    free(data);
    return st;
}
