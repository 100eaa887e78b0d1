/* webp.c -- WebP decoding and encoding through libwebp, its demuxer and muxer.
 *
 * libwebp reports failures as return values, so nothing here jumps. Decoding
 * takes a still image, lossy (VP8) or lossless (VP8L), with or without alpha,
 * to RGB or RGBA float planes. Animated files are refused with
 * TM_ERR_UNSUPPORTED rather than reduced to their first frame: marking one
 * frame and writing a still would silently change what the recipient gets.
 * The demuxer checks the container (a file cut anywhere, even in a trailing
 * metadata chunk, is TM_ERR_TRUNCATED) and reports the ICCP profile (kept),
 * EXIF (orientation and GPS via tm_exif_parse, never kept) and XMP.
 *
 * Encoding uses the advanced API (WebPConfig/WebPPicture): lossy at the
 * requested quality or lossless, gray expanded to RGB, alpha kept exactly,
 * then the ICC profile (and nothing else) added with the muxer. The result is
 * copied into malloc'd memory so the caller can free() it. */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <webp/decode.h>
#include <webp/demux.h>
#include <webp/encode.h>
#include <webp/mux.h>

#include "internal.h"

/* WebP's default quality when the caller leaves it at 0. */
#define WEBP_DEFAULT_QUALITY 90

/* Maps a libwebp decoder status to ours. */
static tm_status from_vp8_status(VP8StatusCode vs)
{
    switch (vs) {
    case VP8_STATUS_OK: return TM_OK;
    case VP8_STATUS_OUT_OF_MEMORY: return TM_ERR_NOMEM;
    case VP8_STATUS_BITSTREAM_ERROR: return TM_ERR_CORRUPT;
    case VP8_STATUS_UNSUPPORTED_FEATURE: return TM_ERR_UNSUPPORTED;
    case VP8_STATUS_NOT_ENOUGH_DATA: return TM_ERR_TRUNCATED;
    /* Outside incremental decoding, "suspended" means a bitstream ran past
     * the end of its (complete) chunk: damaged, not cut short. */
    case VP8_STATUS_SUSPENDED: return TM_ERR_CORRUPT;
    default: return TM_ERR_INTERNAL;
    }
}

/* Maps a libwebp encoder error to ours. */
static tm_status from_enc_error(WebPEncodingError e)
{
    switch (e) {
    case VP8_ENC_OK: return TM_OK;
    case VP8_ENC_ERROR_OUT_OF_MEMORY:
    case VP8_ENC_ERROR_BITSTREAM_OUT_OF_MEMORY: return TM_ERR_NOMEM;
    case VP8_ENC_ERROR_BAD_DIMENSION: return TM_ERR_DIMENSIONS;
    default: return TM_ERR_INTERNAL;
    }
}

/* Reads the container's chunks: validity, ICC profile into img, EXIF/XMP flags. */
static tm_status read_metadata(const uint8_t *data, size_t len, tm_image *img, tm_image_info *info)
{
    WebPData wd = {data, len};
    WebPDemuxState state;
    WebPDemuxer *dmx = WebPDemuxPartial(&wd, &state);
    if (!dmx) return state == WEBP_DEMUX_PARSING_HEADER ? TM_ERR_TRUNCATED : TM_ERR_CORRUPT;

    tm_status st = TM_OK;
    WebPChunkIterator it;
    if (state != WEBP_DEMUX_DONE) {
        st = TM_ERR_TRUNCATED;
        goto out;
    }
    if (WebPDemuxGetChunk(dmx, "ICCP", 1, &it)) {
        if (it.chunk.size > 0) {
            st = tm_image_set_icc(img, it.chunk.bytes, it.chunk.size);
            info->has_icc = st == TM_OK;
        }
        WebPDemuxReleaseChunkIterator(&it);
        if (st != TM_OK) goto out;
    }
    if (WebPDemuxGetChunk(dmx, "EXIF", 1, &it)) {
        const uint8_t *p = it.chunk.bytes;
        size_t n = it.chunk.size;
        if (n >= 6 && !memcmp(p, "Exif\0\0", 6)) {
            p += 6;
            n -= 6;
        }
        tm_exif_summary ex;
        info->has_exif = 1;
        if (tm_exif_parse(p, n, &ex) == TM_OK) {
            if (ex.orientation >= 1 && ex.orientation <= 8) info->orientation = ex.orientation;
            info->has_gps = ex.has_gps != 0;
        }
        WebPDemuxReleaseChunkIterator(&it);
    }
    if (WebPDemuxGetChunk(dmx, "XMP ", 1, &it)) {
        info->has_xmp = 1;
        WebPDemuxReleaseChunkIterator(&it);
    }
out:
    WebPDemuxDelete(dmx);
    return st;
}

tm_status tm_webp_decode(const uint8_t *data, size_t len, const tm_load_options *opts,
                         tm_image **out, tm_image_info *info)
{
    if (!out || !opts || !info || (!data && len)) return TM_ERR_ARG;
    *out = NULL;
    /* Only RIFF-contained files (what tm_format_sniff recognises), not the
     * bare VP8/VP8L bitstreams libwebp would also accept. */
    if (len == 0) return TM_ERR_TRUNCATED;
    if (len < 12) return memcmp(data, "RIFF", len < 4 ? len : 4) == 0 ? TM_ERR_TRUNCATED : TM_ERR_FORMAT;
    if (memcmp(data, "RIFF", 4) != 0 || memcmp(data + 8, "WEBP", 4) != 0) return TM_ERR_FORMAT;

    WebPDecoderConfig config;
    if (!WebPInitDecoderConfig(&config)) return TM_ERR_INTERNAL;
    tm_status st = from_vp8_status(WebPGetFeatures(data, len, &config.input));
    if (st != TM_OK) return st;
    const WebPBitstreamFeatures *f = &config.input;
    if (f->has_animation) return TM_ERR_UNSUPPORTED;
    st = tm_check_dimensions((uint64_t)f->width, (uint64_t)f->height, opts->max_pixels);
    if (st != TM_OK) return st;

    int w = f->width, h = f->height, ch = f->has_alpha ? 4 : 3;
    info->format = TM_FORMAT_WEBP;
    info->width = w;
    info->height = h;
    info->bit_depth = 8;
    info->channels = ch;
    info->lossless = f->format == 2;  /* 2 = VP8L */

    tm_image *img = NULL;
    size_t npix = (size_t)w * (size_t)h;
    uint8_t *pix = NULL;
    st = tm_image_create(w, h, ch, &img);
    if (st != TM_OK) goto out;
    st = read_metadata(data, len, img, info);
    if (st != TM_OK) goto out;

    pix = malloc(npix * (size_t)ch);
    if (!pix) {
        st = TM_ERR_NOMEM;
        goto out;
    }
    config.output.colorspace = ch == 4 ? MODE_RGBA : MODE_RGB;
    config.output.is_external_memory = 1;
    config.output.u.RGBA.rgba = pix;
    config.output.u.RGBA.stride = w * ch;
    config.output.u.RGBA.size = npix * (size_t)ch;
    st = from_vp8_status(WebPDecode(data, len, &config));
    WebPFreeDecBuffer(&config.output);
    if (st != TM_OK) goto out;

    for (int c = 0; c < ch; c++) {
        float *dst = img->plane[c];
        for (size_t i = 0; i < npix; i++) dst[i] = pix[i * (size_t)ch + (size_t)c];
    }
    *out = img;
    img = NULL;
out:
    free(pix);
    tm_image_free(img);
    return st;
}

/* Interleaves img as 8-bit RGB or RGBA (gray replicated) into pix. */
static void interleave(const tm_image *img, uint8_t *pix, int out_ch)
{
    size_t n = (size_t)img->width * (size_t)img->height;
    int gray = img->channels <= 2;
    for (size_t i = 0; i < n; i++) {
        uint8_t *d = pix + i * (size_t)out_ch;
        for (int c = 0; c < 3; c++) d[c] = tm_to_u8(img->plane[gray ? 0 : c][i]);
        if (out_ch == 4) d[3] = tm_to_u8(img->plane[img->channels - 1][i]);
    }
}

/* Adds the ICC profile to an encoded still image; result in *assembled
 * (libwebp memory, released with WebPDataClear). */
static tm_status add_icc(const uint8_t *bits, size_t len, const tm_image *img, WebPData *assembled)
{
    WebPData in = {bits, len};
    WebPData icc = {img->icc, img->icc_len};
    WebPMux *mux = WebPMuxCreate(&in, 0);
    if (!mux) return TM_ERR_INTERNAL;
    tm_status st = TM_OK;
    WebPMuxError e = WebPMuxSetChunk(mux, "ICCP", &icc, 0);
    if (e == WEBP_MUX_OK) e = WebPMuxAssemble(mux, assembled);
    if (e != WEBP_MUX_OK) st = e == WEBP_MUX_MEMORY_ERROR ? TM_ERR_NOMEM : TM_ERR_INTERNAL;
    WebPMuxDelete(mux);
    return st;
}

tm_status tm_webp_encode(const tm_image *img, const tm_save_options *opts,
                         uint8_t **data, size_t *len)
{
    if (!img || !opts || !data || !len) return TM_ERR_ARG;
    *data = NULL;
    *len = 0;
    if (img->channels < 1 || img->channels > 4 || img->width <= 0 || img->height <= 0)
        return TM_ERR_ARG;
    if (opts->quality < 0 || opts->quality > 100) return TM_ERR_ARG;
    /* Larger than the format can describe: a limit of WebP, not a bad image. */
    if (img->width > WEBP_MAX_DIMENSION || img->height > WEBP_MAX_DIMENSION)
        return TM_ERR_UNSUPPORTED;

    int alpha = img->channels == 2 || img->channels == 4;
    int out_ch = alpha ? 4 : 3;
    tm_status st = TM_OK;
    WebPConfig config;
    WebPPicture pic;
    WebPMemoryWriter wr;
    WebPData assembled;
    WebPMemoryWriterInit(&wr);
    WebPDataInit(&assembled);
    uint8_t *pix = NULL;
    if (!WebPPictureInit(&pic) || !WebPConfigInit(&config)) return TM_ERR_INTERNAL;

    config.lossless = opts->lossless != 0;
    if (!config.lossless) config.quality = (float)(opts->quality ? opts->quality : WEBP_DEFAULT_QUALITY);
    config.exact = 1;          /* keep RGB under transparent pixels too */
    config.alpha_quality = 100;
    if (!WebPValidateConfig(&config)) {
        st = TM_ERR_INTERNAL;
        goto out;
    }

    pix = malloc((size_t)img->width * (size_t)img->height * (size_t)out_ch);
    if (!pix) {
        st = TM_ERR_NOMEM;
        goto out;
    }
    interleave(img, pix, out_ch);
    pic.use_argb = config.lossless;
    pic.width = img->width;
    pic.height = img->height;
    pic.writer = WebPMemoryWrite;
    pic.custom_ptr = &wr;
    int ok = alpha ? WebPPictureImportRGBA(&pic, pix, img->width * 4)
                   : WebPPictureImportRGB(&pic, pix, img->width * 3);
    if (!ok) {
        st = TM_ERR_NOMEM;
        goto out;
    }
    if (!WebPEncode(&config, &pic)) {
        st = from_enc_error(pic.error_code);
        if (st == TM_OK) st = TM_ERR_INTERNAL;
        goto out;
    }

    const uint8_t *res = wr.mem;
    size_t res_len = wr.size;
    if (img->icc && img->icc_len > 0) {
        st = add_icc(wr.mem, wr.size, img, &assembled);
        if (st != TM_OK) goto out;
        res = assembled.bytes;
        res_len = assembled.size;
    }
    *data = malloc(res_len);
    if (!*data) {
        st = TM_ERR_NOMEM;
        goto out;
    }
    memcpy(*data, res, res_len);
    *len = res_len;
out:
    WebPDataClear(&assembled);
    WebPMemoryWriterClear(&wr);
    WebPPictureFree(&pic);
    free(pix);
    return st;
}
