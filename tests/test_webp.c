/* test_webp.c -- the WebP codec: exact lossless round trips, lossy quality,
 * alpha, the ICC profile kept, EXIF/XMP (added here with libwebpmux) reported
 * and dropped, animations refused, and damaged files turned into errors. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <webp/decode.h>
#include <webp/demux.h>
#include <webp/encode.h>
#include <webp/mux.h>

#include "internal.h"

/* ---- helpers ------------------------------------------------------------- */

static uint8_t *encode(const tm_image *img, int lossless, int quality, size_t *len)
{
    tm_save_options o;
    tm_save_options_init(&o);
    o.format = TM_FORMAT_WEBP;
    o.lossless = lossless;
    o.quality = quality;
    uint8_t *data = NULL;
    CU_ASSERT_EQUAL(tm_webp_encode(img, &o, &data, len), TM_OK);
    return data;
}

static tm_status decode_with(const uint8_t *data, size_t len, uint64_t max_pixels,
                             tm_image **img, tm_image_info *info)
{
    tm_load_options o;
    tm_load_options_init(&o);
    if (max_pixels) o.max_pixels = max_pixels;
    memset(info, 0, sizeof *info);
    info->orientation = 1;
    *img = NULL;
    return tm_webp_decode(data, len, &o, img, info);
}

static tm_status decode(const uint8_t *data, size_t len, tm_image **img, tm_image_info *info)
{
    return decode_with(data, len, 0, img, info);
}

/* Number of chunks named fourcc in a WebP file, -1 when it does not demux. */
static int count_chunks(const uint8_t *data, size_t len, const char *fourcc)
{
    WebPData wd = {data, len};
    WebPDemuxer *d = WebPDemux(&wd);
    if (!d) return -1;
    int n = 0;
    WebPChunkIterator it;
    if (WebPDemuxGetChunk(d, fourcc, 1, &it)) {
        n = it.num_chunks;
        WebPDemuxReleaseChunkIterator(&it);
    }
    WebPDemuxDelete(d);
    return n;
}

/* Adds chunks (fourcc, bytes) to a WebP file with libwebpmux; malloc'd result. */
static uint8_t *with_chunk(const uint8_t *data, size_t len, const char *fourcc,
                           const void *bytes, size_t n, size_t *out_len)
{
    WebPData in = {data, len}, chunk = {bytes, n}, out;
    WebPDataInit(&out);
    WebPMux *mux = WebPMuxCreate(&in, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(mux);
    CU_ASSERT_EQUAL(WebPMuxSetChunk(mux, fourcc, &chunk, 1), WEBP_MUX_OK);
    CU_ASSERT_EQUAL(WebPMuxAssemble(mux, &out), WEBP_MUX_OK);
    WebPMuxDelete(mux);
    uint8_t *res = malloc(out.size);
    CU_ASSERT_PTR_NOT_NULL_FATAL(res);
    memcpy(res, out.bytes, out.size);
    *out_len = out.size;
    WebPDataClear(&out);
    return res;
}

/* EXIF (TIFF, big-endian) with orientation 6 and a GPS IFD holding only
 * GPSVersionID; optionally behind the "Exif\0\0" prefix some writers add. */
static const uint8_t exif_o6_gps[] = {
    'E', 'x', 'i', 'f', 0, 0,
    'M', 'M', 0, 42, 0, 0, 0, 8,
    0, 2,
    0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0,
    0x88, 0x25, 0, 4, 0, 0, 0, 1, 0, 0, 0, 38,
    0, 0, 0, 0,
    0, 1,
    0x00, 0x00, 0, 1, 0, 0, 0, 4, 2, 2, 0, 0,
    0, 0, 0, 0};

/* ---- round trips ------------------------------------------------------------- */

static void lossless_case(int channels)
{
    tm_image *a = tm_test_synthetic(67, 41, channels, 30u + (uint32_t)channels, 1), *b = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    if (channels == 4) /* fully transparent pixels must keep their colour */
        for (int i = 0; i < 200; i++) a->plane[3][i] = 0.0f;
    size_t len;
    uint8_t *data = encode(a, 1, 0, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    tm_image_info info;
    CU_ASSERT_EQUAL_FATAL(decode(data, len, &b, &info), TM_OK);
    CU_ASSERT_EQUAL(info.format, TM_FORMAT_WEBP);
    CU_ASSERT_EQUAL(info.lossless, 1);
    CU_ASSERT_EQUAL(info.channels, channels);
    CU_ASSERT_EQUAL(info.bit_depth, 8);
    CU_ASSERT_EQUAL(info.width, 67);
    CU_ASSERT_EQUAL(info.height, 41);
    CU_ASSERT_EQUAL(info.has_icc + info.has_exif + info.has_xmp, 0);
    CU_ASSERT_EQUAL(tm_test_maxdiff(a, b), 0.0);
    tm_image_free(a);
    tm_image_free(b);
    free(data);
}

static void test_lossless_rgb(void)
{
    lossless_case(3);
}

static void test_lossless_rgba(void)
{
    lossless_case(4);
}

/* Gray becomes RGB (gray+alpha RGBA) with three equal colour planes. */
static void test_gray_expanded(void)
{
    for (int ch = 1; ch <= 2; ch++) {
        tm_image *a = tm_test_synthetic(20, 11, ch, 4, 1), *b = NULL;
        CU_ASSERT_PTR_NOT_NULL_FATAL(a);
        size_t len;
        uint8_t *data = encode(a, 1, 0, &len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(data);
        tm_image_info info;
        CU_ASSERT_EQUAL_FATAL(decode(data, len, &b, &info), TM_OK);
        CU_ASSERT_EQUAL_FATAL(b->channels, ch + 2);
        int bad = 0;
        for (int i = 0; i < 20 * 11; i++) {
            for (int c = 0; c < 3; c++) bad += b->plane[c][i] != a->plane[0][i];
            if (ch == 2) bad += b->plane[3][i] != a->plane[1][i];
        }
        CU_ASSERT_EQUAL(bad, 0);
        tm_image_free(a);
        tm_image_free(b);
        free(data);
    }
}

static void test_lossy(void)
{
    tm_image *a = tm_test_synthetic(160, 120, 3, 77, 0), *b = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    size_t len, len20;
    uint8_t *data = encode(a, 0, 0, &len);  /* 0 = default quality 90 */
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    tm_image_info info;
    CU_ASSERT_EQUAL_FATAL(decode(data, len, &b, &info), TM_OK);
    CU_ASSERT_EQUAL(info.lossless, 0);
    CU_ASSERT_EQUAL(info.channels, 3);
    CU_ASSERT_EQUAL(b->width, 160);
    CU_ASSERT_EQUAL(b->height, 120);
    double psnr = tm_test_psnr(a, b);
    CU_ASSERT(psnr > 30.0);
    CU_ASSERT(psnr < 100.0);  /* lossy really is lossy */
    tm_image_free(b);

    uint8_t *d20 = encode(a, 0, 20, &len20);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d20);
    CU_ASSERT(len20 < len);
    CU_ASSERT_EQUAL_FATAL(decode(d20, len20, &b, &info), TM_OK);
    CU_ASSERT(tm_test_psnr(a, b) < psnr);
    tm_image_free(b);
    tm_image_free(a);
    free(data);
    free(d20);
}

static void test_lossy_alpha_exact(void)
{
    tm_image *a = tm_test_synthetic(64, 48, 4, 78, 1), *b = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    size_t len;
    uint8_t *data = encode(a, 0, 90, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    tm_image_info info;
    CU_ASSERT_EQUAL_FATAL(decode(data, len, &b, &info), TM_OK);
    CU_ASSERT_EQUAL(info.lossless, 0);
    CU_ASSERT_EQUAL_FATAL(b->channels, 4);
    CU_ASSERT_EQUAL(memcmp(a->plane[3], b->plane[3], 64 * 48 * sizeof(float)), 0);
    CU_ASSERT(tm_test_psnr(a, b) > 30.0);
    tm_image_free(a);
    tm_image_free(b);
    free(data);
}

/* ---- metadata ------------------------------------------------------------------ */

static void test_icc_roundtrip(void)
{
    uint8_t icc[300];
    for (int i = 0; i < (int)sizeof icc; i++) icc[i] = (uint8_t)(i * 31 + 7);
    for (int lossless = 0; lossless <= 1; lossless++) {
        tm_image *a = tm_test_synthetic(33, 17, 3, 5, 1), *b = NULL;
        CU_ASSERT_PTR_NOT_NULL_FATAL(a);
        CU_ASSERT_EQUAL_FATAL(tm_image_set_icc(a, icc, sizeof icc), TM_OK);
        size_t len;
        uint8_t *data = encode(a, lossless, 0, &len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(data);
        CU_ASSERT_EQUAL(count_chunks(data, len, "ICCP"), 1);
        CU_ASSERT_EQUAL(count_chunks(data, len, "EXIF"), 0);
        CU_ASSERT_EQUAL(count_chunks(data, len, "XMP "), 0);
        tm_image_info info;
        CU_ASSERT_EQUAL_FATAL(decode(data, len, &b, &info), TM_OK);
        CU_ASSERT_EQUAL(info.has_icc, 1);
        CU_ASSERT_EQUAL(info.lossless, lossless);
        CU_ASSERT_EQUAL_FATAL(b->icc_len, sizeof icc);
        CU_ASSERT_EQUAL(memcmp(b->icc, icc, sizeof icc), 0);
        if (lossless) CU_ASSERT_EQUAL(tm_test_maxdiff(a, b), 0.0);
        tm_image_free(a);
        tm_image_free(b);
        free(data);
    }
}

/* EXIF and XMP added with libwebpmux are reported, then never written back. */
static void exif_case(int with_prefix)
{
    tm_image *a = tm_test_synthetic(24, 10, 3, 6, 1), *b = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    size_t len, len1, len2;
    uint8_t *plain = encode(a, 1, 0, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(plain);
    const uint8_t *ex = with_prefix ? exif_o6_gps : exif_o6_gps + 6;
    size_t exlen = with_prefix ? sizeof exif_o6_gps : sizeof exif_o6_gps - 6;
    uint8_t *d1 = with_chunk(plain, len, "EXIF", ex, exlen, &len1);
    static const char xmp[] = "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"/>";
    uint8_t *d2 = with_chunk(d1, len1, "XMP ", xmp, sizeof xmp - 1, &len2);
    CU_ASSERT_EQUAL(count_chunks(d2, len2, "EXIF"), 1);

    tm_image_info info;
    CU_ASSERT_EQUAL_FATAL(decode(d2, len2, &b, &info), TM_OK);
    CU_ASSERT_EQUAL(info.has_exif, 1);
    CU_ASSERT_EQUAL(info.has_xmp, 1);
    CU_ASSERT_EQUAL(info.orientation, 6);
    CU_ASSERT_EQUAL(info.has_gps, 1);
    CU_ASSERT_EQUAL(b->width, 24);  /* the codec itself never rotates */
    CU_ASSERT_EQUAL(tm_test_maxdiff(a, b), 0.0);

    /* Written back, only the pixels remain. */
    size_t olen;
    uint8_t *out = encode(b, 1, 0, &olen);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL(count_chunks(out, olen, "EXIF"), 0);
    CU_ASSERT_EQUAL(count_chunks(out, olen, "XMP "), 0);
    tm_image_free(b);

    /* tm_image_decode applies the orientation. */
    CU_ASSERT_EQUAL_FATAL(tm_image_decode(d2, len2, NULL, &b, &info), TM_OK);
    CU_ASSERT_EQUAL(info.width, 24);
    CU_ASSERT_EQUAL(b->width, 10);
    CU_ASSERT_EQUAL(b->height, 24);
    tm_image_free(b);
    tm_image_free(a);
    free(out);
    free(plain);
    free(d1);
    free(d2);
}

static void test_exif_plain(void)
{
    exif_case(0);
}

static void test_exif_prefixed(void)
{
    exif_case(1);
}

/* A broken EXIF block is still reported as present, without orientation. */
static void test_exif_garbage(void)
{
    tm_image *a = tm_test_synthetic(8, 8, 3, 2, 1), *b = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    size_t len, len1;
    uint8_t *plain = encode(a, 0, 0, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(plain);
    uint8_t *d1 = with_chunk(plain, len, "EXIF", "garbage!", 8, &len1);
    tm_image_info info;
    CU_ASSERT_EQUAL_FATAL(decode(d1, len1, &b, &info), TM_OK);
    CU_ASSERT_EQUAL(info.has_exif, 1);
    CU_ASSERT_EQUAL(info.orientation, 1);
    tm_image_free(a);
    tm_image_free(b);
    free(plain);
    free(d1);
}

static void test_animation_refused(void)
{
    WebPAnimEncoderOptions eo;
    CU_ASSERT_FATAL(WebPAnimEncoderOptionsInit(&eo));
    WebPAnimEncoder *enc = WebPAnimEncoderNew(16, 16, &eo);
    CU_ASSERT_PTR_NOT_NULL_FATAL(enc);
    WebPConfig cfg;
    CU_ASSERT_FATAL(WebPConfigInit(&cfg));
    cfg.lossless = 1;
    uint8_t rgba[16 * 16 * 4];
    for (int f = 0; f < 2; f++) {
        WebPPicture pic;
        CU_ASSERT_FATAL(WebPPictureInit(&pic));
        pic.use_argb = 1;
        pic.width = pic.height = 16;
        for (int i = 0; i < (int)sizeof rgba; i++) rgba[i] = (uint8_t)(i * (f + 3));
        CU_ASSERT_FATAL(WebPPictureImportRGBA(&pic, rgba, 16 * 4));
        CU_ASSERT(WebPAnimEncoderAdd(enc, &pic, f * 100, &cfg));
        WebPPictureFree(&pic);
    }
    CU_ASSERT(WebPAnimEncoderAdd(enc, NULL, 200, NULL));
    WebPData anim;
    WebPDataInit(&anim);
    CU_ASSERT_FATAL(WebPAnimEncoderAssemble(enc, &anim));
    WebPAnimEncoderDelete(enc);
    tm_image *img;
    tm_image_info info;
    CU_ASSERT_EQUAL(decode(anim.bytes, anim.size, &img, &info), TM_ERR_UNSUPPORTED);
    CU_ASSERT_PTR_NULL(img);
    WebPDataClear(&anim);
}

/* ---- bad input ------------------------------------------------------------------- */

static void test_truncated(void)
{
    tm_image *a = tm_test_synthetic(96, 64, 3, 9, 0), *img = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    uint8_t icc[200];
    memset(icc, 0x42, sizeof icc);
    CU_ASSERT_EQUAL_FATAL(tm_image_set_icc(a, icc, sizeof icc), TM_OK);
    tm_image_info info;
    for (int lossless = 0; lossless <= 1; lossless++) {
        size_t len;
        uint8_t *data = encode(a, lossless, 0, &len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(data);
        size_t cuts[] = {0, 5, 11, 12, 16, 25, 40, 100, 300, len / 2, len - 10, len - 1};
        for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
            tm_status st = decode(data, cuts[i], &img, &info);
            if (st != TM_ERR_TRUNCATED)
                printf("\ncut at %zu of %zu: %s\n", cuts[i], len, tm_strerror(st));
            CU_ASSERT_EQUAL(st, TM_ERR_TRUNCATED);
            CU_ASSERT_PTR_NULL(img);
        }
        CU_ASSERT_EQUAL(decode(data, len, &img, &info), TM_OK);
        tm_image_free(img);
        free(data);
    }
    tm_image_free(a);
}

static void test_corrupt(void)
{
    tm_image *a = tm_test_synthetic(48, 32, 3, 10, 0), *img = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    size_t len;
    uint8_t *data = encode(a, 0, 0, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    tm_image_info info;
    /* Simple lossy file: RIFF header, "VP8 " chunk header, frame tag, start code. */
    CU_ASSERT_EQUAL_FATAL(memcmp(data + 12, "VP8 ", 4), 0);
    CU_ASSERT_EQUAL(data[23], 0x9d);
    data[23] ^= 0xff;  /* the VP8 start code */
    CU_ASSERT_EQUAL(decode(data, len, &img, &info), TM_ERR_CORRUPT);
    CU_ASSERT_PTR_NULL(img);
    data[23] ^= 0xff;
    memcpy(data + 12, "ABCD", 4);  /* an unknown first chunk */
    CU_ASSERT_NOT_EQUAL(decode(data, len, &img, &info), TM_OK);
    CU_ASSERT_PTR_NULL(img);
    free(data);

    static const uint8_t png_sig[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    CU_ASSERT_EQUAL(decode(png_sig, sizeof png_sig - 1, &img, &info), TM_ERR_FORMAT);
    CU_ASSERT_EQUAL(decode((const uint8_t *)"RIFF\0\0", 6, &img, &info), TM_ERR_TRUNCATED);
    CU_ASSERT_EQUAL(decode((const uint8_t *)"GIF8", 4, &img, &info), TM_ERR_FORMAT);
    static const uint8_t junk[] = "RIFF\x20\0\0\0WEBPjunkjunkjunkjunkjunkjunkjunkjunk";
    CU_ASSERT_NOT_EQUAL(decode(junk, sizeof junk - 1, &img, &info), TM_OK);
    CU_ASSERT_PTR_NULL(img);
    tm_image_free(a);
}

/* One byte flipped at a time: never a crash, only sane statuses. */
static void test_fuzz_flips(void)
{
    tm_image *a = tm_test_synthetic(24, 16, 4, 11, 1), *img = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    uint8_t icc[40];
    memset(icc, 7, sizeof icc);
    CU_ASSERT_EQUAL_FATAL(tm_image_set_icc(a, icc, sizeof icc), TM_OK);
    tm_image_info info;
    for (int lossless = 0; lossless <= 1; lossless++) {
        size_t len;
        uint8_t *data = encode(a, lossless, 0, &len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(data);
        int odd = 0, errors = 0;
        for (size_t i = 0; i < len; i++) {
            data[i] ^= 0xa5;
            tm_status st = decode(data, len, &img, &info);
            odd += st != TM_OK && st != TM_ERR_CORRUPT && st != TM_ERR_TRUNCATED &&
                   st != TM_ERR_UNSUPPORTED && st != TM_ERR_FORMAT && st != TM_ERR_DIMENSIONS &&
                   st != TM_ERR_TOO_LARGE;
            errors += st != TM_OK;
            if (st == TM_OK) CU_ASSERT(img && img->width > 0 && (img->channels == 3 || img->channels == 4));
            tm_image_free(img);
            img = NULL;
            data[i] ^= 0xa5;
        }
        CU_ASSERT_EQUAL(odd, 0);
        CU_ASSERT(errors > 0);
        free(data);
    }
    tm_image_free(a);
}

/* A lossless header claiming a size: the budget refuses it before decoding. */
static size_t vp8l_header(uint8_t out[30], uint32_t w, uint32_t h)
{
    uint32_t bits = (w - 1) | (h - 1) << 14;
    memcpy(out, "RIFF", 4);
    out[4] = 22;
    out[5] = out[6] = out[7] = 0;
    memcpy(out + 8, "WEBPVP8L", 8);
    out[16] = 10;
    out[17] = out[18] = out[19] = 0;
    out[20] = 0x2f;
    for (int k = 0; k < 4; k++) out[21 + k] = (uint8_t)(bits >> (8 * k));
    memset(out + 25, 0, 5);
    return 30;
}

static void test_budget(void)
{
    uint8_t buf[30];
    tm_image *img;
    tm_image_info info;
    size_t len = vp8l_header(buf, 16000, 16000);
    CU_ASSERT_EQUAL(decode_with(buf, len, 1000000, &img, &info), TM_ERR_TOO_LARGE);
    CU_ASSERT_PTR_NULL(img);
    /* Within budget the same header fails later, for lack of image data. */
    len = vp8l_header(buf, 100, 100);
    tm_status st = decode_with(buf, len, 1000000, &img, &info);
    CU_ASSERT(st == TM_ERR_CORRUPT || st == TM_ERR_TRUNCATED);
    CU_ASSERT_PTR_NULL(img);
}

static void test_encode_args(void)
{
    tm_image *a = tm_test_synthetic(8, 8, 3, 1, 1), *wide = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    tm_save_options o;
    tm_save_options_init(&o);
    o.format = TM_FORMAT_WEBP;
    o.quality = 101;
    uint8_t *data = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(tm_webp_encode(a, &o, &data, &len), TM_ERR_ARG);
    CU_ASSERT_PTR_NULL(data);
    o.quality = 0;
    CU_ASSERT_EQUAL_FATAL(tm_image_create(WEBP_MAX_DIMENSION + 1, 1, 3, &wide), TM_OK);
    CU_ASSERT_EQUAL(tm_webp_encode(wide, &o, &data, &len), TM_ERR_UNSUPPORTED);
    CU_ASSERT_PTR_NULL(data);
    tm_image_free(wide);
    tm_image_free(a);
}

static CU_TestInfo tests[] = {
    {"lossless RGB identical", test_lossless_rgb},
    {"lossless RGBA identical", test_lossless_rgba},
    {"gray expanded to RGB", test_gray_expanded},
    {"lossy q90 PSNR and quality", test_lossy},
    {"lossy alpha exact", test_lossy_alpha_exact},
    {"ICC round trip", test_icc_roundtrip},
    {"EXIF orientation and XMP", test_exif_plain},
    {"EXIF with Exif\\0\\0 prefix", test_exif_prefixed},
    {"EXIF garbage", test_exif_garbage},
    {"animation refused", test_animation_refused},
    {"truncated", test_truncated},
    {"corrupt", test_corrupt},
    {"byte flips", test_fuzz_flips},
    {"pixel budget", test_budget},
    {"encode arguments", test_encode_args},
    CU_TEST_INFO_NULL};

int main(void)
{
    return tm_test_main("webp", tests);
}
