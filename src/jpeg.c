/* jpeg.c -- JPEG decoding and encoding through the libjpeg API (libjpeg-turbo).
 *
 * libjpeg reports errors by calling error_exit, which by default prints and
 * exits. Here it longjmps back to the one function that holds the libjpeg
 * calls (decode_run / encode_run); everything that must survive the jump
 * lives in a context struct owned by the caller, so no local of the jumping
 * function is read after the jump, and the caller does all the cleanup.
 *
 * Decoding is defensive: the pixel budget is checked right after the header
 * and before any pixel memory is allocated; a premature end of data is
 * TM_ERR_TRUNCATED and the warnings about damaged scan data are
 * TM_ERR_CORRUPT (libjpeg would otherwise hand back grey garbage with TM_OK;
 * a bad ICC chunk only loses the profile and is tolerated); a progress
 * monitor refuses absurd numbers of progressive scans, each of which costs a
 * pass over the whole coefficient buffer. Output is 1-channel gray or 3-channel
 * RGB; CMYK and YCCK become RGB. Orientation is only reported, never applied.
 * Two cheaper outputs serve marking and tracing: the components exactly as
 * stored (tm_jpeg_planes: no upsampling, no colour conversion, and the chroma
 * passes to the copy untouched), and the luminance alone (libjpeg then skips
 * the chroma's inverse DCT).
 *
 * Encoding writes JFIF, plus the ICC profile when the image carries one, and
 * nothing else: identifying metadata must not ride along with a marked copy. */
#include "config.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h> /* after jpeglib.h: its message list depends on jconfig.h */

#include "internal.h"

/* More progressive scans than this is a denial-of-service attempt, not a
 * photograph (encoders use about 10). */
#define TM_JPEG_MAX_SCANS 1000

/* Largest ICC profile jpeg_write_icc_profile can split into APP2 markers. */
#define TM_JPEG_MAX_ICC (255u * 65519u)

/* The error manager: libjpeg's, plus where to jump and why. */
typedef struct jpeg_err {
    struct jpeg_error_mgr pub;   /* must be first: libjpeg sees only this */
    jmp_buf jump;
    tm_status status;            /* the reason reported after the jump */
    int decoding;                /* errors mean bad data (decode) or a bug (encode) */
} jpeg_err;

/* Maps a fatal libjpeg message code to a status. */
static tm_status status_from_code(int code, int decoding)
{
    switch (code) {
    case JERR_OUT_OF_MEMORY: return TM_ERR_NOMEM;
    case JERR_EMPTY_IMAGE:
    case JERR_IMAGE_TOO_BIG: return TM_ERR_DIMENSIONS;
    case JERR_INPUT_EMPTY: return TM_ERR_TRUNCATED;
    case JERR_NO_SOI: return TM_ERR_FORMAT;
    case JERR_BAD_PRECISION:
    case JERR_SOF_UNSUPPORTED:
    case JERR_ARITH_NOTIMPL:
    case JERR_NOT_COMPILED: return TM_ERR_UNSUPPORTED;
    default: return decoding ? TM_ERR_CORRUPT : TM_ERR_INTERNAL;
    }
}

/* error_exit replacement: record why and jump back; never returns. */
static void on_error_exit(j_common_ptr cinfo)
{
    jpeg_err *err = (jpeg_err *)cinfo->err;
    err->status = status_from_code(err->pub.msg_code, err->decoding);
    longjmp(err->jump, 1);
}

/* True for the warnings that mean the decoded pixels would be wrong.
 * Stray bytes between markers (JWRN_EXTRANEOUS_DATA) are not among them:
 * many real-world encoders leave some, the pixels are intact, and a leaked
 * copy must still be traceable. Damage inside a scan shows as one of these. */
static int warning_is_corruption(int code)
{
    switch (code) {
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_ARITH_BAD_CODE:
    case JWRN_MUST_RESYNC:
    case JWRN_NOT_SEQUENTIAL:
    case JWRN_BOGUS_PROGRESSION:
        return 1;
    default:
        return 0;
    }
}

/* emit_message replacement: a premature end of data or corrupt entropy data
 * ends the decode at once; other warnings (an unknown JFIF revision, a bad
 * ICC chunk, ...) and all trace messages are tolerated silently. */
static void on_emit_message(j_common_ptr cinfo, int msg_level)
{
    jpeg_err *err = (jpeg_err *)cinfo->err;
    if (msg_level >= 0) return;
    int code = err->pub.msg_code;
    if (code == JWRN_JPEG_EOF) {
        err->status = TM_ERR_TRUNCATED;
        longjmp(err->jump, 1);
    }
    if (warning_is_corruption(code)) {
        err->status = TM_ERR_CORRUPT;
        longjmp(err->jump, 1);
    }
    err->pub.num_warnings++;
}

/* output_message replacement: the library never prints. */
static void on_output_message(j_common_ptr cinfo)
{
    (void)cinfo;
}

/* Installs the longjmp error manager into cinfo->err. */
static struct jpeg_error_mgr *error_init(jpeg_err *err, int decoding)
{
    jpeg_std_error(&err->pub);
    err->pub.error_exit = on_error_exit;
    err->pub.emit_message = on_emit_message;
    err->pub.output_message = on_output_message;
    err->status = TM_ERR_INTERNAL;
    err->decoding = decoding;
    return &err->pub;
}

/* Progress monitor: refuses a stream with more than TM_JPEG_MAX_SCANS scans. */
static void on_progress(j_common_ptr cinfo)
{
    if (!cinfo->is_decompressor) return;
    j_decompress_ptr dinfo = (j_decompress_ptr)cinfo;
    if (dinfo->input_scan_number > TM_JPEG_MAX_SCANS) {
        jpeg_err *err = (jpeg_err *)cinfo->err;
        err->status = TM_ERR_CORRUPT;
        longjmp(err->jump, 1);
    }
}

/* ---- header analysis ---------------------------------------------------- */

/* The IJG (libjpeg) base luminance table, natural order (ITU-T T.81 K.1). */
static const unsigned std_luminance[DCTSIZE2] = {
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99
};

/* Estimates the IJG quality 1..100 whose scaled luminance table is closest
 * (least absolute difference) to tbl; 0 when there is no table. */
static int estimate_quality(const JQUANT_TBL *tbl)
{
    if (!tbl) return 0;
    unsigned maxval = 255; /* baseline tables clamp at 255, 16-bit ones do not */
    for (int i = 0; i < DCTSIZE2; i++)
        if (tbl->quantval[i] > 255) maxval = 32767;
    int best = 0;
    unsigned long best_err = 0;
    for (int q = 1; q <= 100; q++) {
        long scale = q < 50 ? 5000 / q : 200 - 2 * q;
        unsigned long e = 0;
        for (int i = 0; i < DCTSIZE2; i++) {
            long v = ((long)std_luminance[i] * scale + 50) / 100;
            if (v < 1) v = 1;
            if (v > (long)maxval) v = (long)maxval;
            long d = v - (long)tbl->quantval[i];
            e += (unsigned long)(d < 0 ? -d : d);
        }
        if (best == 0 || e < best_err) {
            best = q;
            best_err = e;
        }
    }
    return best;
}

/* Names the chroma subsampling from the components' sampling factors. */
static tm_subsampling subsampling_of(const struct jpeg_decompress_struct *cinfo)
{
    if (cinfo->num_components == 1) return TM_SS_GRAY;
    if (cinfo->num_components < 3) return TM_SS_UNKNOWN;
    const jpeg_component_info *c = cinfo->comp_info;
    int h = c[1].h_samp_factor, v = c[1].v_samp_factor;
    if (c[2].h_samp_factor != h || c[2].v_samp_factor != v) return TM_SS_UNKNOWN;
    if (h <= 0 || v <= 0 || c[0].h_samp_factor % h || c[0].v_samp_factor % v) return TM_SS_UNKNOWN;
    int hr = c[0].h_samp_factor / h, vr = c[0].v_samp_factor / v;
    if (hr == 1 && vr == 1) return TM_SS_444;
    if (hr == 2 && vr == 1) return TM_SS_422;
    if (hr == 2 && vr == 2) return TM_SS_420;
    if (hr == 1 && vr == 2) return TM_SS_440;
    if (hr == 4 && vr == 1) return TM_SS_411;
    return TM_SS_UNKNOWN;
}

/* True when a saved marker's data starts with the len bytes of sig. */
static int marker_has_prefix(const struct jpeg_marker_struct *m, const char *sig, size_t len)
{
    return m->data_length >= len && memcmp(m->data, sig, len) == 0;
}

/* Sets the metadata flags and the orientation from the saved markers. */
static void scan_markers(const struct jpeg_decompress_struct *cinfo, tm_image_info *info)
{
    static const char exif_sig[] = "Exif\0"; /* 6 bytes with the implicit NUL */
    static const char xmp_sig[] = "http://ns.adobe.com/xap/1.0/";
    static const char xmp_ext_sig[] = "http://ns.adobe.com/xmp/extension/";
    static const char iptc_sig[] = "Photoshop 3.0";
    for (const struct jpeg_marker_struct *m = cinfo->marker_list; m; m = m->next) {
        if (m->marker == JPEG_APP0 + 1) {
            if (marker_has_prefix(m, exif_sig, sizeof exif_sig)) {
                if (info->has_exif) continue; /* only the first EXIF block counts */
                info->has_exif = 1;
                tm_exif_summary sum;
                /* A damaged EXIF block must not cost the picture: it is
                 * reported, and tm_exif_parse leaves orientation 1. */
                (void)tm_exif_parse(m->data + sizeof exif_sig, m->data_length - sizeof exif_sig, &sum);
                info->orientation = sum.orientation;
                info->has_gps = sum.has_gps;
            } else if (marker_has_prefix(m, xmp_sig, sizeof xmp_sig) ||
                       marker_has_prefix(m, xmp_ext_sig, sizeof xmp_ext_sig)) {
                info->has_xmp = 1;
            }
        } else if (m->marker == JPEG_APP0 + 13) {
            if (marker_has_prefix(m, iptc_sig, sizeof iptc_sig)) info->has_iptc = 1;
        } else if (m->marker == JPEG_COM) {
            info->has_comment = 1;
        }
    }
}

/* ---- decoding ------------------------------------------------------------ */

/* Everything the decoder needs across a longjmp; owned by tm_jpeg_decode. */
typedef struct jpeg_dec {
    struct jpeg_decompress_struct cinfo;
    jpeg_err err;
    struct jpeg_progress_mgr progress;
    const uint8_t *data;
    size_t len;
    uint64_t max_pixels;
    tm_image_info *info;
    int luma_only;        /* decode Y alone when the stream is YCbCr */
    int want_planes;      /* into planes when the stream allows it */
    tm_image *img;        /* the result, built here ... */
    tm_jpeg_planes *planes; /* ... or this */
    JOCTET *icc;          /* malloc'd by jpeg_read_icc_profile */
    unsigned int icc_len;
} jpeg_dec;

/* Converts one decoded scanline into row y of the planar image. */
static void store_row(jpeg_dec *d, const JSAMPLE *restrict row, int y)
{
    tm_image *img = d->img;
    size_t w = (size_t)img->width, base = (size_t)y * w;
    J_COLOR_SPACE cs = d->cinfo.out_color_space;
    if (cs == JCS_GRAYSCALE) {
        float *restrict v = img->plane[0] + base;
        for (size_t x = 0; x < w; x++) v[x] = (float)row[x];
    } else if (cs == JCS_RGB) {
        float *restrict r = img->plane[0] + base, *restrict g = img->plane[1] + base, *restrict b = img->plane[2] + base;
        for (size_t x = 0; x < w; x++) {
            r[x] = (float)row[3 * x];
            g[x] = (float)row[3 * x + 1];
            b[x] = (float)row[3 * x + 2];
        }
    } else {
        /* CMYK: Photoshop (which writes the Adobe marker) stores 255 - ink;
         * other writers store ink. RGB = (1 - C)(1 - K) etc., in integers so
         * the result is exact and the same everywhere. */
        int inverted = d->cinfo.saw_Adobe_marker;
        for (size_t x = 0; x < w; x++) {
            const JSAMPLE *px = row + 4 * x;
            unsigned k = inverted ? px[3] : 255u - px[3];
            for (int c = 0; c < 3; c++) {
                unsigned v = inverted ? px[c] : 255u - px[c];
                img->plane[c][base + x] = (float)((v * k + 127) / 255);
            }
        }
    }
}

/* True when the stream can be read as tm_jpeg_planes: YCbCr or gray, stored
 * upright, luminance at full resolution, 8-bit samples of at most 4x4
 * sampling (so an iMCU row is at most 32 lines). */
static int planes_fit(const struct jpeg_decompress_struct *ci, const tm_image_info *info)
{
    if (info->orientation != 1 || ci->data_precision != 8) return 0;
    if (!(ci->jpeg_color_space == JCS_YCbCr && ci->num_components == 3) &&
        !(ci->jpeg_color_space == JCS_GRAYSCALE && ci->num_components == 1))
        return 0;
    const jpeg_component_info *c = ci->comp_info;
    if (c[0].h_samp_factor != ci->max_h_samp_factor || c[0].v_samp_factor != ci->max_v_samp_factor) return 0;
    for (int i = 0; i < ci->num_components; i++)
        if (c[i].h_samp_factor > 4 || c[i].v_samp_factor > 4) return 0;
    return 1;
}

void tm_jpeg_planes_free(tm_jpeg_planes *p)
{
    if (!p) return;
    for (int c = 0; c < 3; c++) tm_big_free(p->plane[c]);
    free(p->icc);
    free(p);
}

/* Decodes the started stream's components into d->planes (allocated here, to
 * whole blocks across and whole iMCU rows down, as libjpeg writes them). */
static tm_status read_planes(jpeg_dec *d)
{
    struct jpeg_decompress_struct *ci = &d->cinfo;
    tm_jpeg_planes *p = calloc(1, sizeof *p);
    if (!p) return TM_ERR_NOMEM;
    d->planes = p;
    p->width = (int)ci->image_width;
    p->height = (int)ci->image_height;
    p->ncomp = ci->num_components;
    int imcu = ci->max_v_samp_factor * DCTSIZE;
    size_t imcu_rows = (ci->image_height + (JDIMENSION)imcu - 1) / (JDIMENSION)imcu;
    for (int c = 0; c < p->ncomp; c++) {
        const jpeg_component_info *k = &ci->comp_info[c];
        p->h_samp[c] = k->h_samp_factor;
        p->v_samp[c] = k->v_samp_factor;
        p->cw[c] = (int)k->downsampled_width;
        p->ch[c] = (int)k->downsampled_height;
        p->stride[c] = (size_t)k->width_in_blocks * DCTSIZE;
        p->rows[c] = imcu_rows * (size_t)k->v_samp_factor * DCTSIZE;
        if (!(p->plane[c] = tm_big_alloc(p->rows[c] * p->stride[c]))) return TM_ERR_NOMEM;
    }
    if (d->icc) {
        p->icc = d->icc;
        p->icc_len = d->icc_len;
        d->icc = NULL;
    }
    ci->raw_data_out = TRUE;
    jpeg_start_decompress(ci);
    JSAMPROW rows[3][4 * DCTSIZE];
    JSAMPARRAY comp[3] = {rows[0], rows[1], rows[2]};
    for (size_t r = 0; ci->output_scanline < ci->output_height; r++) {
        for (int c = 0; c < p->ncomp; c++) {
            int n = p->v_samp[c] * DCTSIZE;
            for (int i = 0; i < n; i++) rows[c][i] = p->plane[c] + (r * (size_t)n + (size_t)i) * p->stride[c];
        }
        if (jpeg_read_raw_data(ci, comp, (JDIMENSION)imcu) != (JDIMENSION)imcu) return TM_ERR_CORRUPT;
    }
    jpeg_finish_decompress(ci);
    return TM_OK;
}

/* Runs libjpeg over d->data; on any failure returns the status and leaves the
 * cleanup to the caller. The only function here that calls setjmp. */
static tm_status decode_run(jpeg_dec *d)
{
    d->cinfo.err = error_init(&d->err, 1);
    if (setjmp(d->err.jump)) return d->err.status;

    jpeg_create_decompress(&d->cinfo);
    d->progress.progress_monitor = on_progress;
    d->cinfo.progress = &d->progress;
    jpeg_mem_src(&d->cinfo, d->data, (unsigned long)d->len);
    jpeg_save_markers(&d->cinfo, JPEG_APP0 + 1, 0xFFFF);  /* EXIF needs the whole block */
    jpeg_save_markers(&d->cinfo, JPEG_APP0 + 2, 0xFFFF);  /* ICC chunks */
    jpeg_save_markers(&d->cinfo, JPEG_APP0 + 13, 32);     /* IPTC: the signature is enough */
    jpeg_save_markers(&d->cinfo, JPEG_APP0 + 14, 32);     /* Adobe (libjpeg also parses it) */
    jpeg_save_markers(&d->cinfo, JPEG_COM, 1);            /* presence only (0 = skip) */
    jpeg_read_header(&d->cinfo, TRUE);

    struct jpeg_decompress_struct *ci = &d->cinfo;
    tm_status st = tm_check_dimensions(ci->image_width, ci->image_height, d->max_pixels);
    if (st != TM_OK) return st;

    tm_image_info *info = d->info;
    info->format = TM_FORMAT_JPEG;
    info->width = (int)ci->image_width;
    info->height = (int)ci->image_height;
    info->bit_depth = 8;
    info->progressive = ci->progressive_mode ? 1 : 0;
    info->subsampling = subsampling_of(ci);
    if (ci->num_components >= 1) {
        int t = ci->comp_info[0].quant_tbl_no;
        if (t >= 0 && t < NUM_QUANT_TBLS) info->jpeg_quality = estimate_quality(ci->quant_tbl_ptrs[t]);
    }

    switch (ci->jpeg_color_space) {
    case JCS_GRAYSCALE:
        ci->out_color_space = JCS_GRAYSCALE;
        info->channels = 1;
        break;
    case JCS_YCbCr:
        ci->out_color_space = d->luma_only ? JCS_GRAYSCALE : JCS_RGB;
        info->channels = d->luma_only ? 1 : 3;
        break;
    case JCS_RGB:
        ci->out_color_space = JCS_RGB;
        info->channels = 3;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        ci->out_color_space = JCS_CMYK; /* libjpeg turns YCCK into CMYK */
        info->channels = 3;
        info->cmyk = 1;
        break;
    default:
        return TM_ERR_UNSUPPORTED; /* 2-component and other exotic streams */
    }

    scan_markers(ci, info);
    if (jpeg_read_icc_profile(ci, &d->icc, &d->icc_len)) info->has_icc = 1;
    if (d->want_planes && planes_fit(ci, info)) return read_planes(d);

    st = tm_image_create(info->width, info->height, info->channels, &d->img);
    if (st != TM_OK) return st;
    if (d->icc) {
        st = tm_image_set_icc(d->img, d->icc, d->icc_len);
        if (st != TM_OK) return st;
    }

    jpeg_start_decompress(ci);
    if ((int)ci->output_width != info->width || (int)ci->output_height != info->height)
        return TM_ERR_INTERNAL;
    /* Freed with the decompressor, so a jump cannot leak it. As many lines
     * per call as libjpeg produces at once. */
    JDIMENSION batch = (JDIMENSION)(ci->rec_outbuf_height > 0 ? ci->rec_outbuf_height : 1);
    JSAMPARRAY rows = (*ci->mem->alloc_sarray)((j_common_ptr)ci, JPOOL_IMAGE,
                                               ci->output_width * (JDIMENSION)ci->output_components, batch);
    while (ci->output_scanline < ci->output_height) {
        int y = (int)ci->output_scanline;
        JDIMENSION got = jpeg_read_scanlines(ci, rows, batch);
        if (got == 0) return TM_ERR_CORRUPT;
        for (JDIMENSION i = 0; i < got; i++) store_row(d, rows[i], y + (int)i);
    }
    jpeg_finish_decompress(ci);
    return TM_OK;
}

tm_status tm_jpeg_decode(const uint8_t *data, size_t len, const tm_load_options *opts,
                         tm_image **out, tm_image_info *info)
{
    return tm_jpeg_decode_planes(data, len, opts, out, NULL, info);
}

tm_status tm_jpeg_decode_planes(const uint8_t *data, size_t len, const tm_load_options *opts,
                                tm_image **out, tm_jpeg_planes **planes, tm_image_info *info)
{
    if (!out || !info || (!data && len)) return TM_ERR_ARG;
    *out = NULL;
    if (planes) *planes = NULL;
    if (len == 0) return TM_ERR_TRUNCATED;
    if (len > (unsigned long)-1) return TM_ERR_TOO_LARGE;

    jpeg_dec *d = calloc(1, sizeof *d);
    if (!d) return TM_ERR_NOMEM;
    d->data = data;
    d->len = len;
    d->max_pixels = opts ? opts->max_pixels : TM_DEFAULT_MAX_PIXELS;
    d->luma_only = opts && opts->luma_only;
    d->want_planes = planes != NULL;
    d->info = info;
    memset(info, 0, sizeof *info);
    info->orientation = 1;

    tm_status st = decode_run(d);
    jpeg_destroy_decompress(&d->cinfo);
    free(d->icc);
    if (st == TM_OK) {
        *out = d->img;
        if (planes) *planes = d->planes;
    } else {
        tm_image_free(d->img);
        tm_jpeg_planes_free(d->planes);
    }
    free(d);
    return st;
}

/* ---- encoding ------------------------------------------------------------ */

/* Everything the encoder needs across a longjmp; owned by tm_jpeg_encode. */
typedef struct jpeg_enc {
    struct jpeg_compress_struct cinfo;
    jpeg_err err;
    const tm_image *img;      /* the pixels, or ... */
    const tm_jpeg_planes *planes; /* ... these components as stored, */
    const uint8_t *luma;      /* with this plane (planes' layout) for Y */
    int quality;
    tm_subsampling ss;
    int progressive;
    int gray;
    unsigned char *initbuf;   /* our malloc'd first output buffer */
    unsigned char *outbuf;    /* where libjpeg says the output is */
    unsigned long outsize;
} jpeg_enc;

/* Luma sampling factors for a subsampling (chroma is always 1x1). */
static void luma_factors(tm_subsampling ss, int *h, int *v)
{
    switch (ss) {
    case TM_SS_422: *h = 2; *v = 1; break;
    case TM_SS_420: *h = 2; *v = 2; break;
    case TM_SS_440: *h = 1; *v = 2; break;
    case TM_SS_411: *h = 4; *v = 1; break;
    default: *h = 1; *v = 1; break;
    }
}

/* Rows of float planes to interleaved 8-bit samples, rounded and clamped. */
static void pack_rows(const tm_image *img, int nc, size_t y0, JSAMPARRAY rows, int n)
{
    size_t w = (size_t)img->width;
    for (int i = 0; i < n; i++) {
        JSAMPLE *restrict out = rows[i];
        for (int c = 0; c < nc; c++) {
            const float *restrict src = img->plane[c] + (y0 + (size_t)i) * w;
            for (size_t x = 0; x < w; x++) {
                float v = src[x] + 0.5f;
                v = v > 0.0f ? v : 0.0f; /* also NaN */
                v = v < 255.0f ? v : 255.0f;
                out[x * (size_t)nc + (size_t)c] = (JSAMPLE)(int)v;
            }
        }
    }
}

/* Hands the planes (Y from e->luma) to libjpeg an iMCU row at a time. */
static void write_planes(jpeg_enc *e)
{
    struct jpeg_compress_struct *ci = &e->cinfo;
    const tm_jpeg_planes *p = e->planes;
    int imcu = ci->max_v_samp_factor * DCTSIZE;
    JSAMPROW rows[3][4 * DCTSIZE];
    JSAMPARRAY comp[3] = {rows[0], rows[1], rows[2]};
    for (size_t r = 0; ci->next_scanline < ci->image_height; r++) {
        for (int c = 0; c < p->ncomp; c++) {
            int n = p->v_samp[c] * DCTSIZE;
            uint8_t *base = c == 0 ? (uint8_t *)e->luma : p->plane[c];
            for (int i = 0; i < n; i++) rows[c][i] = base + (r * (size_t)n + (size_t)i) * p->stride[c];
        }
        jpeg_write_raw_data(ci, comp, (JDIMENSION)imcu);
    }
}

/* Runs libjpeg to compress e->img or e->planes; the cleanup is the caller's.
 * The only function here that calls setjmp. */
static tm_status encode_run(jpeg_enc *e)
{
    e->cinfo.err = error_init(&e->err, 0);
    if (setjmp(e->err.jump)) return e->err.status;

    struct jpeg_compress_struct *ci = &e->cinfo;
    jpeg_create_compress(ci);
    /* libjpeg never frees a caller-supplied first buffer; it mallocs a bigger
     * one when it runs out, and reports it in outbuf at the end. */
    jpeg_mem_dest(ci, &e->outbuf, &e->outsize);

    const tm_image *img = e->img;
    const tm_jpeg_planes *p = e->planes;
    ci->image_width = (JDIMENSION)(p ? p->width : img->width);
    ci->image_height = (JDIMENSION)(p ? p->height : img->height);
    ci->input_components = e->gray ? 1 : 3;
    ci->in_color_space = e->gray ? JCS_GRAYSCALE : p ? JCS_YCbCr : JCS_RGB;
    jpeg_set_defaults(ci); /* YCbCr or gray with a JFIF header, no Adobe marker */
    jpeg_set_quality(ci, e->quality, TRUE);
    if (p) {
        ci->raw_data_in = TRUE;
        for (int c = 0; c < p->ncomp; c++) {
            ci->comp_info[c].h_samp_factor = p->h_samp[c];
            ci->comp_info[c].v_samp_factor = p->v_samp[c];
        }
    } else if (!e->gray) {
        int h, v;
        luma_factors(e->ss, &h, &v);
        ci->comp_info[0].h_samp_factor = h;
        ci->comp_info[0].v_samp_factor = v;
        for (int c = 1; c < 3; c++) {
            ci->comp_info[c].h_samp_factor = 1;
            ci->comp_info[c].v_samp_factor = 1;
        }
    }
    ci->optimize_coding = FALSE;
    ci->dct_method = JDCT_ISLOW; /* the same bytes on every machine */
    if (e->progressive) jpeg_simple_progression(ci);

    jpeg_start_compress(ci, TRUE);
    const uint8_t *icc = p ? p->icc : img->icc;
    size_t icc_len = p ? p->icc_len : img->icc_len;
    if (icc && icc_len) jpeg_write_icc_profile(ci, icc, (unsigned int)icc_len);

    if (p) {
        write_planes(e);
    } else {
        enum { BATCH = 16 };
        JSAMPARRAY rows = (*ci->mem->alloc_sarray)((j_common_ptr)ci, JPOOL_IMAGE,
                                                   ci->image_width * (JDIMENSION)ci->input_components, BATCH);
        while (ci->next_scanline < ci->image_height) {
            JDIMENSION left = ci->image_height - ci->next_scanline;
            int n = left < BATCH ? (int)left : BATCH;
            pack_rows(img, ci->input_components, ci->next_scanline, rows, n);
            jpeg_write_scanlines(ci, rows, (JDIMENSION)n);
        }
    }
    jpeg_finish_compress(ci);
    return TM_OK;
}

/* Runs e (its source, quality and options set) into a malloc'd buffer. */
static tm_status encode(jpeg_enc *e, size_t raw_bytes, size_t icc_len, uint8_t **data, size_t *len)
{
    /* A first buffer of a quarter of the raw size (plus the profile) holds
     * nearly every photo at the usual qualities without regrowth. */
    size_t cap = raw_bytes / 4u + 65536u + icc_len + icc_len / 8u;
    if (cap > (unsigned long)-1) cap = (unsigned long)-1;
    e->initbuf = malloc(cap);
    if (!e->initbuf) return TM_ERR_NOMEM;
    e->outbuf = e->initbuf;
    e->outsize = (unsigned long)cap;

    tm_status st = encode_run(e);
    jpeg_destroy_compress(&e->cinfo);
    if (st != TM_OK) {
        if (e->outbuf != e->initbuf) free(e->outbuf);
        free(e->initbuf);
        return st;
    }
    if (e->outbuf != e->initbuf) free(e->initbuf); /* libjpeg moved to a buffer of its own (malloc'd) */
    uint8_t *shrunk = realloc(e->outbuf, e->outsize ? e->outsize : 1);
    *data = shrunk ? shrunk : e->outbuf;
    *len = e->outsize;
    return TM_OK;
}

tm_status tm_jpeg_encode_planes(const tm_jpeg_planes *p, const uint8_t *luma, int quality, int progressive,
                                uint8_t **data, size_t *len)
{
    if (!p || !data || !len || quality < 1 || quality > 100) return TM_ERR_ARG;
    *data = NULL;
    *len = 0;
    if (p->icc && p->icc_len > TM_JPEG_MAX_ICC) return TM_ERR_UNSUPPORTED;
    jpeg_enc *e = calloc(1, sizeof *e);
    if (!e) return TM_ERR_NOMEM;
    e->planes = p;
    e->luma = luma ? luma : p->plane[0];
    e->quality = quality;
    e->progressive = progressive != 0;
    e->gray = p->ncomp == 1;
    size_t raw = 0;
    for (int c = 0; c < p->ncomp; c++) raw += (size_t)p->cw[c] * (size_t)p->ch[c];
    tm_status st = encode(e, raw, p->icc ? p->icc_len : 0, data, len);
    free(e);
    return st;
}

tm_status tm_jpeg_encode(const tm_image *img, const tm_save_options *opts,
                         uint8_t **data, size_t *len)
{
    if (!img || !opts || !data || !len) return TM_ERR_ARG;
    *data = NULL;
    *len = 0;
    if (img->channels < 1 || img->channels > 4 || img->width <= 0 || img->height <= 0 ||
        img->width > TM_MAX_SIDE || img->height > TM_MAX_SIDE)
        return TM_ERR_ARG;
    for (int c = 0; c < img->channels; c++)
        if (!img->plane[c]) return TM_ERR_ARG;
    int gray = img->channels <= 2;
    int quality = opts->quality ? opts->quality : 90;
    if (quality < 1 || quality > 100) return TM_ERR_ARG;
    tm_subsampling ss = opts->subsampling;
    if (!gray) {
        if (ss == TM_SS_UNKNOWN) ss = quality < 90 ? TM_SS_420 : TM_SS_444;
        if (ss < TM_SS_444 || ss > TM_SS_411) return TM_ERR_ARG;
    }
    if (img->icc && img->icc_len > TM_JPEG_MAX_ICC) return TM_ERR_UNSUPPORTED;

    jpeg_enc *e = calloc(1, sizeof *e);
    if (!e) return TM_ERR_NOMEM;
    e->img = img;
    e->quality = quality;
    e->ss = ss;
    e->progressive = opts->progressive != 0;
    e->gray = gray;
    size_t raw = (size_t)img->width * (size_t)img->height * (gray ? 1u : 3u);
    tm_status st = encode(e, raw, img->icc ? img->icc_len : 0, data, len);
    free(e);
    return st;
}
