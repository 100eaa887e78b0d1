/* png.c -- PNG decoding and encoding through libpng's full API.
 *
 * libpng reports errors by longjmp; that model stays inside this file. Each
 * direction keeps everything it owns in one context struct, and the setjmp
 * sits in a tiny "guarded" function whose only job is to call the body, so no
 * automatic variable is ever read after a jump; the public entry points free
 * whatever the context holds, whichever way the body ended.
 *
 * Decoding reads from memory, refuses oversized images before allocating any
 * row (a header peek, libpng's user limits, then tm_check_dimensions), expands
 * palette/low-depth/tRNS data to gray, gray+alpha, RGB or RGBA and stores
 * samples as floats (16-bit as v/257). The colour description is kept exactly
 * as written: gAMA, cHRM, sRGB and the metadata chunks are taken raw (libpng
 * is told to treat them as unknown chunks and pass them to a callback) so
 * libpng's colour-space reconciliation cannot invent or drop values and text
 * chunks are counted without being inflated or stored; iCCP goes through
 * libpng so a profile it rejects is simply dropped. No gamma or colour transform is ever
 * applied to the pixels. Warnings are swallowed: the library never prints.
 *
 * Encoding writes gray, gray+alpha, RGB or RGBA at 8 or 16 bits, plus only
 * the colour description (iCCP or sRGB, gAMA, cHRM): never text, eXIf or
 * time chunks, which could identify the source. */
#include "config.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Largest single ancillary chunk libpng may allocate (iCCP, zTXt...). */
#define PNG_CHUNK_MAX ((png_alloc_size_t)16 << 20)

/* Chunks read raw (as "unknown") instead of being interpreted by libpng. */
static const png_byte raw_chunks[] = "gAMA\0cHRM\0sRGB\0eXIf\0tEXt\0zTXt\0iTXt";
#define RAW_CHUNK_COUNT 7

static const char xmp_keyword[] = "XML:com.adobe.xmp";

typedef struct png_reader {
    const uint8_t *data;
    size_t len;
    size_t pos;
    const tm_load_options *opts;
    tm_image_info *info;
    tm_status status;      /* set by callbacks before they raise an error */
    /* The colour description as read, moved into img once it exists. */
    int has_gamma, has_chrm, has_srgb, srgb_intent;
    uint32_t gamma, chrm[8];
    int seen_exif;
    png_structp png;
    png_infop pinfo;
    uint8_t *rows;         /* one row, or the whole image when interlaced */
    tm_image *img;
} png_reader;

typedef struct png_writer {
    const tm_image *img;
    int depth16;
    tm_status status;
    png_structp png;
    png_infop pinfo;
    uint8_t *row;
    uint8_t *buf;          /* the encoded file, grown by write_cb */
    size_t len;
    size_t cap;
} png_writer;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* libpng error callback: keep a status a callback already chose, then jump. */
static void on_read_error(png_structp png, png_const_charp msg)
{
    (void)msg;
    png_reader *r = png_get_error_ptr(png);
    if (r && r->status == TM_OK) r->status = TM_ERR_CORRUPT;
    png_longjmp(png, 1);
}

/* Same for writing: a failure there is ours or libpng's, never the data's. */
static void on_write_error(png_structp png, png_const_charp msg)
{
    (void)msg;
    png_writer *w = png_get_error_ptr(png);
    if (w && w->status == TM_OK) w->status = TM_ERR_INTERNAL;
    png_longjmp(png, 1);
}

/* libpng warning callback: the library never prints, so warnings vanish. */
static void on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* Feeds libpng from the memory buffer; running out means a truncated file. */
static void read_cb(png_structp png, png_bytep out, size_t n)
{
    png_reader *r = png_get_io_ptr(png);
    if (n > r->len - r->pos) {
        r->status = TM_ERR_TRUNCATED;
        png_error(png, "unexpected end of data");
    }
    memcpy(out, r->data + r->pos, n);
    r->pos += n;
}

/* Appends libpng's output to the growing buffer. */
static void write_cb(png_structp png, png_bytep in, size_t n)
{
    png_writer *w = png_get_io_ptr(png);
    if (n > w->cap - w->len) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap - w->len < n) {
            if (cap > SIZE_MAX / 2) {
                w->status = TM_ERR_NOMEM;
                png_error(png, "output too large");
            }
            cap *= 2;
        }
        uint8_t *p = realloc(w->buf, cap);
        if (!p) {
            w->status = TM_ERR_NOMEM;
            png_error(png, "out of memory");
        }
        w->buf = p;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, in, n);
    w->len += n;
}

/* Nothing to flush: the output lives in memory. */
static void flush_cb(png_structp png)
{
    (void)png;
}

/* Copies decoded row y (interleaved, 8 or 16 bits big-endian) into the planes. */
static void store_row(tm_image *img, int y, const uint8_t *row, int depth16)
{
    int ch = img->channels;
    size_t base = (size_t)y * (size_t)img->width;
    for (int c = 0; c < ch; c++) {
        float *dst = img->plane[c] + base;
        if (depth16) {
            for (int x = 0; x < img->width; x++) {
                const uint8_t *s = row + 2 * ((size_t)x * ch + c);
                dst[x] = (float)((unsigned)s[0] << 8 | s[1]) / 257.0f;
            }
        } else {
            for (int x = 0; x < img->width; x++) dst[x] = row[(size_t)x * ch + c];
        }
    }
}

/* libpng hands over each chunk listed in raw_chunks (and any chunk it does
 * not know) here, one at a time, so nothing is stored and no count is capped.
 * Returns 1 (handled), or 0 for an unknown critical chunk so libpng refuses it. */
static int on_chunk(png_structp png, png_unknown_chunkp chunk)
{
    png_reader *r = png_get_user_chunk_ptr(png);
    const char *name = (const char *)chunk->name;
    const uint8_t *d = chunk->data;
    size_t sz = chunk->size;
    if (!memcmp(name, "gAMA", 4)) {
        if (!r->has_gamma && sz == 4 && be32(d) > 0) {
            r->has_gamma = 1;
            r->gamma = be32(d);
        }
    } else if (!memcmp(name, "cHRM", 4)) {
        if (!r->has_chrm && sz == 32) {
            r->has_chrm = 1;
            for (int k = 0; k < 8; k++) r->chrm[k] = be32(d + 4 * k);
        }
    } else if (!memcmp(name, "sRGB", 4)) {
        if (!r->has_srgb && sz == 1 && d[0] <= 3) {
            r->has_srgb = 1;
            r->srgb_intent = d[0];
        }
    } else if (!memcmp(name, "eXIf", 4)) {
        r->info->has_exif = 1;
        if (r->seen_exif++) return 1;  /* only the first one counts */
        if (sz >= 6 && !memcmp(d, "Exif\0\0", 6)) {
            d += 6;
            sz -= 6;
        }
        tm_exif_summary ex;
        if (tm_exif_parse(d, sz, &ex) == TM_OK) {
            if (ex.orientation >= 1 && ex.orientation <= 8) r->info->orientation = ex.orientation;
            r->info->has_gps = ex.has_gps != 0;
        }
    } else if (!memcmp(name, "iTXt", 4) && sz >= sizeof xmp_keyword &&
               !memcmp(d, xmp_keyword, sizeof xmp_keyword)) {
        r->info->has_xmp = 1;
    } else if (!memcmp(name, "tEXt", 4) || !memcmp(name, "zTXt", 4) || !memcmp(name, "iTXt", 4)) {
        r->info->n_text++;
    } else if (!(chunk->name[0] & 0x20)) {
        return 0;
    }
    return 1;
}

/* The decoding work; libpng errors jump out of it (see png_decode_guarded). */
static tm_status png_decode_body(png_reader *r)
{
    png_structp png = r->png;
    png_infop pinfo = r->pinfo;
    uint64_t side = r->opts->max_pixels < TM_MAX_SIDE ? r->opts->max_pixels : TM_MAX_SIDE;

    png_set_read_fn(png, r, read_cb);
    png_set_user_limits(png, side ? (png_uint_32)side : 1, side ? (png_uint_32)side : 1);
    png_set_chunk_malloc_max(png, PNG_CHUNK_MAX);
    png_set_benign_errors(png, 1);
    /* Any CRC error is an error, ancillary chunks included: libpng would hand
     * a damaged raw chunk to on_chunk before noticing. */
    png_set_crc_action(png, PNG_CRC_DEFAULT, PNG_CRC_ERROR_QUIT);
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_ALWAYS, raw_chunks, RAW_CHUNK_COUNT);
    png_set_read_user_chunk_fn(png, r, on_chunk);

    png_read_info(png, pinfo);
    png_uint_32 width, height;
    int depth, color, interlace;
    png_get_IHDR(png, pinfo, &width, &height, &depth, &color, &interlace, NULL, NULL);
    tm_status st = tm_check_dimensions(width, height, r->opts->max_pixels);
    if (st != TM_OK) return st;

    r->info->format = TM_FORMAT_PNG;
    r->info->width = (int)width;
    r->info->height = (int)height;
    r->info->bit_depth = depth == 16 ? 16 : 8;
    r->info->progressive = interlace != PNG_INTERLACE_NONE;
    r->info->palette = color == PNG_COLOR_TYPE_PALETTE;

    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, pinfo, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, pinfo);

    int channels = png_get_channels(png, pinfo);
    int depth16 = png_get_bit_depth(png, pinfo) == 16;
    size_t rowbytes = png_get_rowbytes(png, pinfo);
    if (channels < 1 || channels > 4 || rowbytes != (size_t)width * channels * (depth16 ? 2 : 1))
        return TM_ERR_INTERNAL;
    r->info->channels = channels;

    st = tm_image_create((int)width, (int)height, channels, &r->img);
    if (st != TM_OK) return st;

    png_charp icc_name;
    int icc_comp;
    png_bytep icc;
    png_uint_32 icc_len;
    if (png_get_iCCP(png, pinfo, &icc_name, &icc_comp, &icc, &icc_len) && icc_len) {
        st = tm_image_set_icc(r->img, icc, icc_len);
        if (st != TM_OK) return st;
        r->info->has_icc = 1;
    }

    /* Interlaced images need every row at hand for the later passes. */
    int interlaced = passes > 1;
    size_t nrows = interlaced ? height : 1;
    if (nrows > SIZE_MAX / rowbytes) return TM_ERR_TOO_LARGE;
    r->rows = malloc(nrows * rowbytes);
    if (!r->rows) return TM_ERR_NOMEM;
    if (interlaced) memset(r->rows, 0, nrows * rowbytes);

    for (int pass = 0; pass < passes; pass++) {
        for (png_uint_32 y = 0; y < height; y++) {
            uint8_t *row = interlaced ? r->rows + (size_t)y * rowbytes : r->rows;
            png_read_row(png, row, NULL);
            if (!interlaced) store_row(r->img, (int)y, row, depth16);
        }
    }
    if (interlaced)
        for (png_uint_32 y = 0; y < height; y++)
            store_row(r->img, (int)y, r->rows + (size_t)y * rowbytes, depth16);

    png_read_end(png, pinfo);
    r->img->has_gamma = r->has_gamma;
    r->img->gamma = r->gamma;
    r->img->has_chrm = r->has_chrm;
    memcpy(r->img->chrm, r->chrm, sizeof r->chrm);
    r->img->has_srgb = r->has_srgb;
    r->img->srgb_intent = r->srgb_intent;
    return TM_OK;
}

/* Runs the body with libpng's jump target set; returns the body's status or
 * the one recorded by the error callback. No locals, so none can be clobbered. */
static tm_status png_decode_guarded(png_reader *r)
{
    if (setjmp(png_jmpbuf(r->png))) return r->status != TM_OK ? r->status : TM_ERR_CORRUPT;
    return png_decode_body(r);
}

tm_status tm_png_decode(const uint8_t *data, size_t len, const tm_load_options *opts,
                        tm_image **out, tm_image_info *info)
{
    if (!out || !opts || !info || (!data && len)) return TM_ERR_ARG;
    *out = NULL;
    if (len < 8) {
        /* A prefix of the signature is a cut-off PNG; anything else is not one. */
        return len == 0 || png_sig_cmp(data, 0, len) == 0 ? TM_ERR_TRUNCATED : TM_ERR_FORMAT;
    }
    if (png_sig_cmp(data, 0, 8) != 0) return TM_ERR_FORMAT;

    /* Peek at IHDR (always first) so absurd sizes are refused before libpng
     * does any work at all; libpng's own limits and the check after
     * png_read_info are the authoritative ones. */
    if (len >= 24 && !memcmp(data + 12, "IHDR", 4)) {
        tm_status st = tm_check_dimensions(be32(data + 16), be32(data + 20), opts->max_pixels);
        if (st != TM_OK) return st;
    }

    png_reader r;
    memset(&r, 0, sizeof r);
    r.data = data;
    r.len = len;
    r.opts = opts;
    r.info = info;
    r.status = TM_OK;

    tm_status st = TM_ERR_NOMEM;
    r.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r, on_read_error, on_warning);
    if (!r.png) goto out;
    r.pinfo = png_create_info_struct(r.png);
    if (!r.pinfo) goto out;

    st = png_decode_guarded(&r);
    if (st == TM_OK) {
        *out = r.img;
        r.img = NULL;
    }
out:
    if (r.png) png_destroy_read_struct(&r.png, r.pinfo ? &r.pinfo : NULL, NULL);
    free(r.rows);
    tm_image_free(r.img);
    return st;
}

/* Converts image row y to interleaved 8- or 16-bit (big-endian) samples. */
static void load_row(const tm_image *img, int y, uint8_t *row, int depth16)
{
    int ch = img->channels;
    size_t base = (size_t)y * (size_t)img->width;
    for (int c = 0; c < ch; c++) {
        const float *src = img->plane[c] + base;
        if (depth16) {
            for (int x = 0; x < img->width; x++) {
                uint16_t v = tm_to_u16(src[x]);
                uint8_t *d = row + 2 * ((size_t)x * ch + c);
                d[0] = (uint8_t)(v >> 8);
                d[1] = (uint8_t)(v & 0xff);
            }
        } else {
            for (int x = 0; x < img->width; x++) row[(size_t)x * ch + c] = tm_to_u8(src[x]);
        }
    }
}

/* The encoding work; libpng errors jump out of it (see png_encode_guarded). */
static tm_status png_encode_body(png_writer *w)
{
    static const int color_of[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                    PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
    const tm_image *img = w->img;
    png_structp png = w->png;
    png_infop pinfo = w->pinfo;

    png_set_write_fn(png, w, write_cb, flush_cb);
    /* A colour chunk libpng finds inconsistent is dropped, not fatal. */
    png_set_benign_errors(png, 1);
    png_set_IHDR(png, pinfo, (png_uint_32)img->width, (png_uint_32)img->height,
                 w->depth16 ? 16 : 8, color_of[img->channels], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (img->has_gamma && img->gamma > 0)
        png_set_gAMA_fixed(png, pinfo, (png_fixed_point)img->gamma);
    if (img->has_chrm) {
        const uint32_t *c = img->chrm;
        png_set_cHRM_fixed(png, pinfo, (png_fixed_point)c[0], (png_fixed_point)c[1],
                           (png_fixed_point)c[2], (png_fixed_point)c[3], (png_fixed_point)c[4],
                           (png_fixed_point)c[5], (png_fixed_point)c[6], (png_fixed_point)c[7]);
    }
    /* iCCP and sRGB exclude each other; the full profile says more. */
    if (img->icc && img->icc_len > 0 && img->icc_len <= 0xffffffffu)
        png_set_iCCP(png, pinfo, "ICC profile", PNG_COMPRESSION_TYPE_BASE, img->icc,
                     (png_uint_32)img->icc_len);
    else if (img->has_srgb && img->srgb_intent >= 0 && img->srgb_intent <= 3)
        png_set_sRGB(png, pinfo, img->srgb_intent);
    png_write_info(png, pinfo);

    w->row = malloc((size_t)img->width * img->channels * (w->depth16 ? 2 : 1));
    if (!w->row) return TM_ERR_NOMEM;
    for (int y = 0; y < img->height; y++) {
        load_row(img, y, w->row, w->depth16);
        png_write_row(png, w->row);
    }
    png_write_end(png, NULL);
    return TM_OK;
}

/* Runs the body with libpng's jump target set (cf. png_decode_guarded). */
static tm_status png_encode_guarded(png_writer *w)
{
    if (setjmp(png_jmpbuf(w->png))) return w->status != TM_OK ? w->status : TM_ERR_INTERNAL;
    return png_encode_body(w);
}

tm_status tm_png_encode(const tm_image *img, const tm_save_options *opts,
                        uint8_t **data, size_t *len)
{
    if (!img || !opts || !data || !len) return TM_ERR_ARG;
    *data = NULL;
    *len = 0;
    if (img->channels < 1 || img->channels > 4 || img->width <= 0 || img->height <= 0)
        return TM_ERR_ARG;
    if (opts->bit_depth != 0 && opts->bit_depth != 8 && opts->bit_depth != 16) return TM_ERR_ARG;
    if (img->width > TM_MAX_SIDE || img->height > TM_MAX_SIDE) return TM_ERR_DIMENSIONS;

    png_writer w;
    memset(&w, 0, sizeof w);
    w.img = img;
    w.depth16 = opts->bit_depth == 16;
    w.status = TM_OK;

    tm_status st = TM_ERR_NOMEM;
    w.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &w, on_write_error, on_warning);
    if (!w.png) goto out;
    w.pinfo = png_create_info_struct(w.png);
    if (!w.pinfo) goto out;

    st = png_encode_guarded(&w);
    if (st == TM_OK) {
        *data = w.buf;
        *len = w.len;
        w.buf = NULL;
    }
out:
    if (w.png) png_destroy_write_struct(&w.png, w.pinfo ? &w.pinfo : NULL);
    free(w.row);
    free(w.buf);
    return st;
}
