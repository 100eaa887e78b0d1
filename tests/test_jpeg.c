/* test_jpeg.c -- the JPEG codec: round trips, CMYK, EXIF orientation,
 * metadata in and (not) out, the bundled corpus, and hostile input.
 *
 * Files with features our encoder never writes (CMYK, APP markers, absurd
 * scan scripts) are made here with libjpeg directly, so every case is built
 * in code and nothing depends on a stored blob beyond the corpus photos. */
#include "testutil.h"
#include "internal.h"
#include "scheme.h"

#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jpeglib.h>

/* ---- helpers ------------------------------------------------------------- */

/* Encodes img with our encoder; asserts success. */
static uint8_t *encode(const tm_image *img, int quality, tm_subsampling ss, int progressive, size_t *len)
{
    tm_save_options o;
    tm_save_options_init(&o);
    o.format = TM_FORMAT_JPEG;
    o.quality = quality;
    o.subsampling = ss;
    o.progressive = progressive;
    uint8_t *data = NULL;
    tm_status st = tm_image_encode(img, &o, &data, len);
    CU_ASSERT_EQUAL_FATAL(st, TM_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    return data;
}

/* Decodes through the public entry point (orientation applied). */
static tm_status decode(const uint8_t *data, size_t len, tm_image **img, tm_image_info *info)
{
    return tm_image_decode(data, len, NULL, img, info);
}

/* One extra marker for the libjpeg test writer. */
typedef struct test_marker {
    int code;
    const uint8_t *data;
    unsigned len;
} test_marker;

/* What the libjpeg test writer should produce. */
typedef struct test_jpeg_spec {
    int w, h, comps;
    J_COLOR_SPACE in_cs;
    J_COLOR_SPACE jpeg_cs;     /* JCS_UNKNOWN: libjpeg's default for in_cs */
    int adobe;                 /* -1 default, 0 off, 1 on */
    int quality;
    const uint8_t *pixels;     /* interleaved, w * h * comps */
    const test_marker *markers;
    int n_markers;
    const uint8_t *icc;
    unsigned icc_len;
    const jpeg_scan_info *scans;
    int n_scans;
} test_jpeg_spec;

typedef struct test_err {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
} test_err;

static void test_error_exit(j_common_ptr cinfo)
{
    char msg[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, msg);
    fprintf(stderr, "test libjpeg writer: %s\n", msg);
    longjmp(((test_err *)cinfo->err)->jump, 1);
}

/* The libjpeg part of write_jpeg, kept apart so no local is read after a jump. */
static int write_jpeg_run(struct jpeg_compress_struct *ci, test_err *err, const test_jpeg_spec *s,
                          unsigned char **buf, unsigned long *size)
{
    ci->err = jpeg_std_error(&err->pub);
    err->pub.error_exit = test_error_exit;
    if (setjmp(err->jump)) return 0;
    jpeg_create_compress(ci);
    jpeg_mem_dest(ci, buf, size);
    ci->image_width = (JDIMENSION)s->w;
    ci->image_height = (JDIMENSION)s->h;
    ci->input_components = s->comps;
    ci->in_color_space = s->in_cs;
    jpeg_set_defaults(ci);
    if (s->jpeg_cs != JCS_UNKNOWN) jpeg_set_colorspace(ci, s->jpeg_cs);
    if (s->adobe >= 0) ci->write_Adobe_marker = (boolean)s->adobe;
    jpeg_set_quality(ci, s->quality, TRUE);
    if (s->scans) {
        ci->scan_info = s->scans;
        ci->num_scans = s->n_scans;
    }
    jpeg_start_compress(ci, TRUE);
    for (int i = 0; i < s->n_markers; i++)
        jpeg_write_marker(ci, s->markers[i].code, s->markers[i].data, s->markers[i].len);
    if (s->icc) jpeg_write_icc_profile(ci, s->icc, s->icc_len);
    while (ci->next_scanline < ci->image_height) {
        JSAMPROW row = (JSAMPROW)(s->pixels + (size_t)ci->next_scanline * (size_t)s->w * (size_t)s->comps);
        jpeg_write_scanlines(ci, &row, 1);
    }
    jpeg_finish_compress(ci);
    return 1;
}

/* Writes a JPEG with libjpeg itself; asserts success; free() the result. */
static uint8_t *write_jpeg(const test_jpeg_spec *s, size_t *len)
{
    struct jpeg_compress_struct ci;
    test_err err;
    unsigned char *buf = NULL;
    unsigned long size = 0;
    int ok = write_jpeg_run(&ci, &err, s, &buf, &size);
    jpeg_destroy_compress(&ci);
    CU_ASSERT_TRUE_FATAL(ok);
    *len = size;
    return buf;
}

/* Interleaved 8-bit copy of an image's first n channels. */
static uint8_t *interleave(const tm_image *img, int n)
{
    size_t px = (size_t)img->width * (size_t)img->height;
    uint8_t *p = malloc(px * (size_t)n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    for (size_t i = 0; i < px; i++)
        for (int c = 0; c < n; c++) p[i * (size_t)n + (size_t)c] = tm_to_u8(img->plane[c][i]);
    return p;
}

/* Marker census of a JPEG: count[m] = occurrences of marker 0xFFm. Returns 0
 * when the stream is malformed (so a failed walk fails the test). */
static int walk_markers(const uint8_t *d, size_t len, unsigned count[256])
{
    memset(count, 0, 256 * sizeof count[0]);
    if (len < 2 || d[0] != 0xFF || d[1] != 0xD8) return 0;
    count[0xD8]++;
    size_t i = 2;
    while (i + 1 < len) {
        if (d[i] != 0xFF) return 0;
        uint8_t m = d[i + 1];
        if (m == 0xFF) { i++; continue; } /* fill byte */
        count[m]++;
        i += 2;
        if (m == 0xD9) return i == len;
        if (m >= 0xD0 && m <= 0xD7) continue;
        if (i + 2 > len) return 0;
        size_t seg = (size_t)d[i] << 8 | d[i + 1];
        if (seg < 2 || i + seg > len) return 0;
        i += seg;
        if (m == 0xDA) { /* entropy-coded data runs to the next real marker */
            while (i + 1 < len && !(d[i] == 0xFF && d[i + 1] != 0x00 && (d[i + 1] < 0xD0 || d[i + 1] > 0xD7)))
                i++;
        }
    }
    return 0;
}

/* Offset of the first SOFn marker's segment (its length field), 0 if none. */
static size_t find_sof(const uint8_t *d, size_t len)
{
    for (size_t i = 2; i + 9 < len; i++)
        if (d[i] == 0xFF && (d[i + 1] == 0xC0 || d[i + 1] == 0xC1 || d[i + 1] == 0xC2)) return i + 2;
    return 0;
}

/* Offset just past the SOS header of the first scan, 0 if none. */
static size_t find_scan_data(const uint8_t *d, size_t len)
{
    for (size_t i = 2; i + 3 < len; i++)
        if (d[i] == 0xFF && d[i + 1] == 0xDA) return i + 2 + ((size_t)d[i + 2] << 8 | d[i + 3]);
    return 0;
}

/* ---- round trips ---------------------------------------------------------- */

static void test_roundtrip_gray(void)
{
    for (int ch = 1; ch <= 2; ch++) {
        tm_image *src = tm_test_synthetic(97, 61, ch, 11, 1), *dst = NULL;
        CU_ASSERT_PTR_NOT_NULL_FATAL(src);
        size_t len;
        uint8_t *data = encode(src, 95, TM_SS_420 /* ignored for gray */, 0, &len);
        tm_image_info info;
        CU_ASSERT_EQUAL_FATAL(decode(data, len, &dst, &info), TM_OK);
        CU_ASSERT_EQUAL(dst->width, 97);
        CU_ASSERT_EQUAL(dst->height, 61);
        CU_ASSERT_EQUAL(dst->channels, 1);
        CU_ASSERT_EQUAL(info.format, TM_FORMAT_JPEG);
        CU_ASSERT_EQUAL(info.channels, 1);
        CU_ASSERT_EQUAL(info.bit_depth, 8);
        CU_ASSERT_EQUAL(info.subsampling, TM_SS_GRAY);
        CU_ASSERT_EQUAL(info.progressive, 0);
        CU_ASSERT_EQUAL(info.cmyk, 0);
        CU_ASSERT_EQUAL(info.orientation, 1);
        CU_ASSERT_TRUE(abs(info.jpeg_quality - 95) <= 2);
        CU_ASSERT_TRUE(tm_test_psnr(src, dst) > 35.0);
        free(data);
        tm_image_free(src);
        tm_image_free(dst);
    }
}

static void test_roundtrip_rgb_subsampling(void)
{
    static const struct {
        tm_subsampling ss;
        double min_psnr;
    } cases[] = {
        {TM_SS_444, 35.0}, {TM_SS_422, 30.0}, {TM_SS_420, 30.0}, {TM_SS_440, 30.0}, {TM_SS_411, 28.0},
    };
    tm_image *src = tm_test_synthetic(97, 61, 3, 21, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(src);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        uint8_t *data = encode(src, 95, cases[i].ss, 0, &len);
        tm_image *dst = NULL;
        tm_image_info info;
        CU_ASSERT_EQUAL_FATAL(decode(data, len, &dst, &info), TM_OK);
        CU_ASSERT_EQUAL(dst->width, 97);
        CU_ASSERT_EQUAL(dst->height, 61);
        CU_ASSERT_EQUAL(dst->channels, 3);
        CU_ASSERT_EQUAL(info.channels, 3);
        CU_ASSERT_EQUAL(info.subsampling, cases[i].ss);
        CU_ASSERT_EQUAL(info.progressive, 0);
        double psnr = tm_test_psnr(src, dst);
        if (psnr <= cases[i].min_psnr)
            fprintf(stderr, "%s: psnr %.2f\n", tm_subsampling_name(cases[i].ss), psnr);
        CU_ASSERT_TRUE(psnr > cases[i].min_psnr);
        free(data);
        tm_image_free(dst);
    }
    tm_image_free(src);
}

static void test_quality_estimate(void)
{
    static const int qualities[] = {10, 30, 50, 75, 85, 90, 95, 100};
    for (int ch = 1; ch <= 3; ch += 2) {
        tm_image *src = tm_test_synthetic(64, 40, ch, 5, 1);
        CU_ASSERT_PTR_NOT_NULL_FATAL(src);
        for (size_t i = 0; i < sizeof qualities / sizeof qualities[0]; i++) {
            size_t len;
            uint8_t *data = encode(src, qualities[i], TM_SS_UNKNOWN, 0, &len);
            tm_image *dst = NULL;
            tm_image_info info;
            CU_ASSERT_EQUAL_FATAL(decode(data, len, &dst, &info), TM_OK);
            if (abs(info.jpeg_quality - qualities[i]) > 2)
                fprintf(stderr, "quality %d estimated as %d\n", qualities[i], info.jpeg_quality);
            CU_ASSERT_TRUE(abs(info.jpeg_quality - qualities[i]) <= 2);
            free(data);
            tm_image_free(dst);
        }
        tm_image_free(src);
    }
}

static void test_progressive(void)
{
    tm_image *src = tm_test_synthetic(97, 61, 3, 31, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(src);
    static const tm_subsampling ss[] = {TM_SS_444, TM_SS_420};
    for (size_t i = 0; i < 2; i++) {
        size_t blen, plen;
        uint8_t *base = encode(src, 95, ss[i], 0, &blen);
        uint8_t *prog = encode(src, 95, ss[i], 1, &plen);
        CU_ASSERT_TRUE(blen != plen || memcmp(base, prog, blen) != 0);
        tm_image *b = NULL, *p = NULL;
        tm_image_info bi, pi;
        CU_ASSERT_EQUAL_FATAL(decode(base, blen, &b, &bi), TM_OK);
        CU_ASSERT_EQUAL_FATAL(decode(prog, plen, &p, &pi), TM_OK);
        CU_ASSERT_EQUAL(bi.progressive, 0);
        CU_ASSERT_EQUAL(pi.progressive, 1);
        CU_ASSERT_EQUAL(pi.subsampling, ss[i]);
        CU_ASSERT_TRUE(abs(pi.jpeg_quality - 95) <= 2);
        /* Same quantised coefficients, only the order of coding differs. */
        CU_ASSERT_EQUAL(tm_test_maxdiff(b, p), 0.0);
        if (ss[i] == TM_SS_444) CU_ASSERT_TRUE(tm_test_psnr(src, p) > 35.0);
        unsigned count[256];
        CU_ASSERT_TRUE(walk_markers(prog, plen, count));
        CU_ASSERT_EQUAL(count[0xC2], 1);
        CU_ASSERT_TRUE(count[0xDA] > 1);
        free(base);
        free(prog);
        tm_image_free(b);
        tm_image_free(p);
    }
    tm_image_free(src);
}

static void test_default_subsampling(void)
{
    static const struct {
        int quality;
        tm_subsampling want;
        int want_q;
    } cases[] = {{85, TM_SS_420, 85}, {89, TM_SS_420, 89}, {90, TM_SS_444, 90}, {0, TM_SS_444, 90}};
    tm_image *src = tm_test_synthetic(48, 32, 3, 41, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(src);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        uint8_t *data = encode(src, cases[i].quality, TM_SS_UNKNOWN, 0, &len);
        tm_image *dst = NULL;
        tm_image_info info;
        CU_ASSERT_EQUAL_FATAL(decode(data, len, &dst, &info), TM_OK);
        CU_ASSERT_EQUAL(info.subsampling, cases[i].want);
        CU_ASSERT_TRUE(abs(info.jpeg_quality - cases[i].want_q) <= 2);
        free(data);
        tm_image_free(dst);
    }
    tm_image_free(src);
}

static void test_encode_alpha_and_args(void)
{
    tm_image *rgba = tm_test_synthetic(40, 24, 4, 51, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rgba);
    size_t len;
    uint8_t *data = encode(rgba, 95, TM_SS_444, 0, &len);
    tm_image *dst = NULL;
    tm_image_info info;
    CU_ASSERT_EQUAL_FATAL(decode(data, len, &dst, &info), TM_OK);
    CU_ASSERT_EQUAL(dst->channels, 3); /* alpha dropped */
    CU_ASSERT_TRUE(tm_test_psnr(rgba, dst) > 35.0);
    free(data);
    tm_image_free(dst);

    tm_save_options o;
    tm_save_options_init(&o);
    o.format = TM_FORMAT_JPEG;
    uint8_t *out = (uint8_t *)1;
    size_t olen = 7;
    o.quality = 101;
    CU_ASSERT_EQUAL(tm_jpeg_encode(rgba, &o, &out, &olen), TM_ERR_ARG);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_EQUAL(olen, 0);
    o.quality = -5;
    CU_ASSERT_EQUAL(tm_jpeg_encode(rgba, &o, &out, &olen), TM_ERR_ARG);
    o.quality = 80;
    o.subsampling = TM_SS_GRAY; /* not a chroma layout for a colour image */
    CU_ASSERT_EQUAL(tm_jpeg_encode(rgba, &o, &out, &olen), TM_ERR_ARG);
    o.subsampling = (tm_subsampling)42;
    CU_ASSERT_EQUAL(tm_jpeg_encode(rgba, &o, &out, &olen), TM_ERR_ARG);
    o.subsampling = TM_SS_UNKNOWN;
    CU_ASSERT_EQUAL(tm_jpeg_encode(NULL, &o, &out, &olen), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_jpeg_encode(rgba, NULL, &out, &olen), TM_ERR_ARG);
    tm_image_free(rgba);
}

/* Our encoder writes JFIF and the picture, nothing that could identify. */
static void test_output_markers_plain(void)
{
    tm_image *src = tm_test_synthetic(33, 17, 3, 61, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(src);
    for (int prog = 0; prog <= 1; prog++) {
        size_t len;
        uint8_t *data = encode(src, 80, TM_SS_UNKNOWN, prog, &len);
        unsigned count[256];
        CU_ASSERT_TRUE(walk_markers(data, len, count));
        CU_ASSERT_EQUAL(count[0xE0], 1);
        CU_ASSERT_TRUE(len > 20 && memcmp(data + 6, "JFIF", 5) == 0);
        for (int m = 0xE1; m <= 0xEF; m++) CU_ASSERT_EQUAL(count[m], 0);
        CU_ASSERT_EQUAL(count[0xFE], 0);
        CU_ASSERT_EQUAL(count[prog ? 0xC2 : 0xC0], 1);
        CU_ASSERT_EQUAL(count[0xD9], 1);
        free(data);
    }
    tm_image_free(src);
}

/* ---- CMYK ----------------------------------------------------------------- */

static void test_cmyk(void)
{
    /* Ink C=0.2 M=0.4 Y=0.6 K~0.1 is RGB (1-C)(1-K) etc. = (184, 138, 92). */
    static const uint8_t ink[4] = {51, 102, 153, 25};
    static const float want[3] = {184, 138, 92};
    static const struct {
        J_COLOR_SPACE jcs;
        int adobe, inverted;
        tm_subsampling ss;
    } cases[] = {
        {JCS_CMYK, 1, 1, TM_SS_444},  /* Photoshop: Adobe marker, 255 - ink stored */
        {JCS_YCCK, 1, 1, TM_SS_420},  /* Photoshop's YCCK (Adobe transform 2); libjpeg's 2x2 luma */
        {JCS_CMYK, 0, 0, TM_SS_444},  /* no Adobe marker: plain ink values */
    };
    enum { W = 24, H = 16 };
    uint8_t *px = malloc((size_t)W * H * 4);
    CU_ASSERT_PTR_NOT_NULL_FATAL(px);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (size_t p = 0; p < (size_t)W * H; p++)
            for (int c = 0; c < 4; c++) px[p * 4 + (size_t)c] = cases[i].inverted ? (uint8_t)(255 - ink[c]) : ink[c];
        test_jpeg_spec s = {W, H, 4, JCS_CMYK, cases[i].jcs, cases[i].adobe, 100, px, NULL, 0, NULL, 0, NULL, 0};
        size_t len;
        uint8_t *data = write_jpeg(&s, &len);
        unsigned count[256];
        CU_ASSERT_TRUE(walk_markers(data, len, count));
        CU_ASSERT_EQUAL(count[0xEE], (unsigned)cases[i].adobe);
        tm_image *img = NULL;
        tm_image_info info;
        CU_ASSERT_EQUAL_FATAL(decode(data, len, &img, &info), TM_OK);
        CU_ASSERT_EQUAL(info.cmyk, 1);
        CU_ASSERT_EQUAL(info.channels, 3);
        CU_ASSERT_EQUAL(img->channels, 3);
        CU_ASSERT_EQUAL(info.subsampling, cases[i].ss);
        double worst = 0;
        for (int c = 0; c < 3; c++)
            for (size_t p = 0; p < (size_t)W * H; p++) {
                double d = fabs((double)img->plane[c][p] - want[c]);
                if (d > worst) worst = d;
            }
        if (worst > 3) fprintf(stderr, "cmyk case %zu: off by %.1f\n", i, worst);
        CU_ASSERT_TRUE(worst <= 3.0);
        free(data);
        tm_image_free(img);
    }
    free(px);
}

/* ---- EXIF ------------------------------------------------------------------ */

/* "Exif\0\0" + a TIFF block with IFD0 = {Orientation, [GPS pointer]} and,
 * with gps, a one-entry GPS IFD. Returns the length written into out. */
static unsigned make_exif(uint8_t *out, int big, int orientation, int gps)
{
    uint8_t *t = out + 6;
    memcpy(out, "Exif\0\0", 6);
    unsigned n = gps ? 2 : 1;
    unsigned gps_off = 8 + 2 + 12 * n + 4;
    unsigned end = gps ? gps_off + 2 + 12 + 4 : gps_off;
    memset(t, 0, end);
#define P16(o, v) do { unsigned v_ = (v); if (big) { t[o] = (uint8_t)(v_ >> 8); t[(o) + 1] = (uint8_t)v_; } \
                       else { t[o] = (uint8_t)v_; t[(o) + 1] = (uint8_t)(v_ >> 8); } } while (0)
#define P32(o, v) do { uint32_t w_ = (v); if (big) { P16(o, w_ >> 16); P16((o) + 2, w_ & 0xFFFF); } \
                       else { P16(o, w_ & 0xFFFF); P16((o) + 2, w_ >> 16); } } while (0)
    t[0] = t[1] = big ? 'M' : 'I';
    P16(2, 42);
    P32(4, 8);
    P16(8, n);
    P16(10, 0x0112);
    P16(12, 3);
    P32(14, 1);
    P16(18, (unsigned)orientation);
    if (gps) {
        P16(22, 0x8825);
        P16(24, 4);
        P32(26, 1);
        P32(30, gps_off);
        P16(gps_off, 1);
        P16(gps_off + 2, 0); /* GPSVersionID, BYTE x4 inline */
        P16(gps_off + 4, 1);
        P32(gps_off + 6, 4);
        t[gps_off + 10] = 2;
        t[gps_off + 11] = 2;
    }
#undef P16
#undef P32
    return 6 + end;
}

/* Stored 24x16 gray image of six flat 8x8 blocks; corners a, b (top), c, d. */
enum { EX_W = 24, EX_H = 16 };
static const uint8_t ex_a = 30, ex_b = 90, ex_c = 150, ex_d = 210;

static uint8_t ex_block_value(int bx, int by)
{
    static const uint8_t v[2][3] = {{30, 60, 90}, {150, 180, 210}};
    return v[by][bx];
}

static void test_exif_orientation(void)
{
    /* Upright corner values (TL, TR, BL, BR) for each orientation, from the
     * EXIF specification's description of where row 0 / column 0 go. */
    const uint8_t want[9][4] = {
        {0, 0, 0, 0},
        {ex_a, ex_b, ex_c, ex_d}, /* 1 */
        {ex_b, ex_a, ex_d, ex_c}, /* 2 mirror horizontal */
        {ex_d, ex_c, ex_b, ex_a}, /* 3 rotate 180 */
        {ex_c, ex_d, ex_a, ex_b}, /* 4 mirror vertical */
        {ex_a, ex_c, ex_b, ex_d}, /* 5 transpose */
        {ex_c, ex_a, ex_d, ex_b}, /* 6 rotate 90 CW */
        {ex_d, ex_b, ex_c, ex_a}, /* 7 transverse */
        {ex_b, ex_d, ex_a, ex_c}, /* 8 rotate 90 CCW */
    };
    uint8_t px[EX_W * EX_H];
    for (int y = 0; y < EX_H; y++)
        for (int x = 0; x < EX_W; x++) px[y * EX_W + x] = ex_block_value(x / 8, y / 8);
    for (int big = 0; big <= 1; big++)
        for (int o = 1; o <= 8; o++) {
            uint8_t exif[128];
            test_marker m = {JPEG_APP0 + 1, exif, make_exif(exif, big, o, 0)};
            test_jpeg_spec s = {EX_W, EX_H, 1, JCS_GRAYSCALE, JCS_UNKNOWN, -1, 100, px, &m, 1, NULL, 0, NULL, 0};
            size_t len;
            uint8_t *data = write_jpeg(&s, &len);
            tm_image *img = NULL;
            tm_image_info info;
            CU_ASSERT_EQUAL_FATAL(decode(data, len, &img, &info), TM_OK);
            CU_ASSERT_EQUAL(info.has_exif, 1);
            CU_ASSERT_EQUAL(info.has_gps, 0);
            CU_ASSERT_EQUAL(info.orientation, o);
            CU_ASSERT_EQUAL(info.width, EX_W); /* as stored */
            CU_ASSERT_EQUAL(info.height, EX_H);
            int w = o >= 5 ? EX_H : EX_W, h = o >= 5 ? EX_W : EX_H;
            CU_ASSERT_EQUAL_FATAL(img->width, w);
            CU_ASSERT_EQUAL_FATAL(img->height, h);
            const float *p = img->plane[0];
            /* Sample one pixel inside each corner block. */
            float got[4] = {p[1 * w + 1], p[1 * w + w - 2], p[(h - 2) * w + 1], p[(h - 2) * w + w - 2]};
            for (int k = 0; k < 4; k++) {
                if (fabsf(got[k] - want[o][k]) > 2.0f)
                    fprintf(stderr, "orientation %d (%s) corner %d: %.0f, want %u\n", o, big ? "MM" : "II", k,
                            got[k], want[o][k]);
                CU_ASSERT_TRUE(fabsf(got[k] - want[o][k]) <= 2.0f);
            }
            free(data);
            tm_image_free(img);
        }
}

/* A damaged EXIF block is reported but costs neither the picture nor its
 * upright-ness guess (orientation 1). */
static void test_exif_corrupt_tolerated(void)
{
    uint8_t px[EX_W * EX_H];
    memset(px, 128, sizeof px);
    uint8_t exif[128];
    unsigned n = make_exif(exif, 0, 6, 1);
    exif[6 + 4] = 0xF0; /* IFD0 offset far past the end */
    test_marker m = {JPEG_APP0 + 1, exif, n};
    test_jpeg_spec s = {EX_W, EX_H, 1, JCS_GRAYSCALE, JCS_UNKNOWN, -1, 90, px, &m, 1, NULL, 0, NULL, 0};
    size_t len;
    uint8_t *data = write_jpeg(&s, &len);
    tm_image *img = NULL;
    tm_image_info info;
    CU_ASSERT_EQUAL_FATAL(decode(data, len, &img, &info), TM_OK);
    CU_ASSERT_EQUAL(info.has_exif, 1);
    CU_ASSERT_EQUAL(info.orientation, 1);
    CU_ASSERT_EQUAL(info.has_gps, 0);
    CU_ASSERT_EQUAL(img->width, EX_W);
    free(data);
    tm_image_free(img);
}

/* ---- metadata in, not out -------------------------------------------------- */

static void test_metadata_stripped(void)
{
    tm_image *src = tm_test_synthetic(40, 30, 3, 71, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(src);
    uint8_t *px = interleave(src, 3);

    uint8_t exif[128];
    unsigned exif_len = make_exif(exif, 1, 1, 1);
    static const char xmp[] = "http://ns.adobe.com/xap/1.0/\0<x:xmpmeta xmlns:x='adobe:ns:meta/'/>";
    static const char iptc[] = "Photoshop 3.0\0008BIM\004\004\0\0\0\0\0\012\034\002\005\0\004leak";
    static const char com[] = "copy for alice@example.com";
    enum { ICC_LEN = 70000 }; /* two APP2 chunks */
    uint8_t *icc = malloc(ICC_LEN);
    CU_ASSERT_PTR_NOT_NULL_FATAL(icc);
    uint32_t r = 12345;
    for (size_t i = 0; i < ICC_LEN; i++) {
        r = r * 1103515245u + 12345u;
        icc[i] = (uint8_t)(r >> 16);
    }
    test_marker m[] = {
        {JPEG_APP0 + 1, exif, exif_len},
        {JPEG_APP0 + 1, (const uint8_t *)xmp, sizeof xmp - 1},
        {JPEG_APP0 + 13, (const uint8_t *)iptc, sizeof iptc - 1},
        {JPEG_COM, (const uint8_t *)com, sizeof com - 1},
    };
    test_jpeg_spec s = {40, 30, 3, JCS_RGB, JCS_UNKNOWN, -1, 92, px, m, 4, icc, ICC_LEN, NULL, 0};
    size_t len;
    uint8_t *data = write_jpeg(&s, &len);

    tm_image *img = NULL;
    tm_image_info info;
    CU_ASSERT_EQUAL_FATAL(decode(data, len, &img, &info), TM_OK);
    CU_ASSERT_EQUAL(info.has_exif, 1);
    CU_ASSERT_EQUAL(info.has_gps, 1);
    CU_ASSERT_EQUAL(info.has_xmp, 1);
    CU_ASSERT_EQUAL(info.has_iptc, 1);
    CU_ASSERT_EQUAL(info.has_comment, 1);
    CU_ASSERT_EQUAL(info.has_icc, 1);
    CU_ASSERT_EQUAL_FATAL(img->icc_len, (size_t)ICC_LEN);
    CU_ASSERT_EQUAL(memcmp(img->icc, icc, ICC_LEN), 0);

    size_t olen;
    uint8_t *out = encode(img, 90, TM_SS_UNKNOWN, 0, &olen);
    unsigned count[256];
    CU_ASSERT_TRUE(walk_markers(out, olen, count));
    CU_ASSERT_EQUAL(count[0xE1], 0); /* EXIF, XMP */
    CU_ASSERT_EQUAL(count[0xED], 0); /* IPTC */
    CU_ASSERT_EQUAL(count[0xFE], 0); /* COM */
    CU_ASSERT_EQUAL(count[0xE0], 1); /* JFIF */
    CU_ASSERT_EQUAL(count[0xE2], 2); /* the ICC profile, in two chunks */
    for (int k = 0xE3; k <= 0xEF; k++) CU_ASSERT_EQUAL(count[k], 0);

    tm_image *again = NULL;
    tm_image_info info2;
    CU_ASSERT_EQUAL_FATAL(decode(out, olen, &again, &info2), TM_OK);
    CU_ASSERT_EQUAL(info2.has_icc, 1);
    CU_ASSERT_EQUAL(info2.has_exif, 0);
    CU_ASSERT_EQUAL(info2.has_gps, 0);
    CU_ASSERT_EQUAL(info2.has_xmp, 0);
    CU_ASSERT_EQUAL(info2.has_iptc, 0);
    CU_ASSERT_EQUAL(info2.has_comment, 0);
    CU_ASSERT_EQUAL_FATAL(again->icc_len, (size_t)ICC_LEN);
    CU_ASSERT_EQUAL(memcmp(again->icc, icc, ICC_LEN), 0);
    CU_ASSERT_TRUE(tm_test_psnr(src, again) > 30.0);

    free(out);
    tm_image_free(again);
    tm_image_free(img);
    free(data);
    free(icc);
    free(px);
    tm_image_free(src);
}

/* ---- corpus ------------------------------------------------------------------ */

static int is_real_subsampling(tm_subsampling ss)
{
    return ss >= TM_SS_444 && ss <= TM_SS_GRAY;
}

static void check_corpus_file(const char *name, tm_image_info *info)
{
    tm_image *img = NULL;
    tm_status st = tm_image_load(tm_test_corpus(name), NULL, &img, info);
    if (st != TM_OK) fprintf(stderr, "%s: %s\n", name, tm_strerror(st));
    CU_ASSERT_EQUAL_FATAL(st, TM_OK);
    CU_ASSERT_EQUAL(info->format, TM_FORMAT_JPEG);
    CU_ASSERT_EQUAL(info->bit_depth, 8);
    CU_ASSERT_TRUE(info->channels == 1 || info->channels == 3);
    CU_ASSERT_EQUAL(img->channels, info->channels);
    CU_ASSERT_TRUE(is_real_subsampling(info->subsampling));
    CU_ASSERT_TRUE(info->jpeg_quality >= 1 && info->jpeg_quality <= 100);
    CU_ASSERT_TRUE(info->orientation >= 1 && info->orientation <= 8);
    int swap = info->orientation >= 5;
    CU_ASSERT_EQUAL(img->width, swap ? info->height : info->width);
    CU_ASSERT_EQUAL(img->height, swap ? info->width : info->height);
    CU_ASSERT_EQUAL(info->has_icc, img->icc != NULL);
    tm_image_free(img);
}

static void test_corpus(void)
{
    char dir[700];
    snprintf(dir, sizeof dir, "%s/corpus", TM_SRCDIR);
    DIR *dh = opendir(dir);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dh);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dh)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 4, ".jpg") != 0) continue;
        tm_image_info info;
        check_corpus_file(de->d_name, &info);
        n++;
    }
    closedir(dh);
    CU_ASSERT_TRUE(n >= 10);

    tm_image_info info;
    check_corpus_file("skimage_rocket.jpg", &info);
    CU_ASSERT_EQUAL(info.has_icc, 1);
    check_corpus_file("plasma_ColorfulCups.jpg", &info);
    CU_ASSERT_EQUAL(info.has_exif, 1);
    CU_ASSERT_EQUAL(info.has_gps, 1);
    check_corpus_file("plasma_Grey.jpg", &info);
    CU_ASSERT_EQUAL(info.channels, 1);
    CU_ASSERT_EQUAL(info.subsampling, TM_SS_GRAY);
}

/* ---- hostile input ------------------------------------------------------------ */

static void test_empty(void)
{
    tm_image *img = (tm_image *)1;
    tm_image_info info;
    CU_ASSERT_EQUAL(tm_jpeg_decode((const uint8_t *)"", 0, NULL, &img, &info), TM_ERR_TRUNCATED);
    CU_ASSERT_PTR_NULL(img);
    CU_ASSERT_NOT_EQUAL(tm_image_decode("", 0, NULL, &img, &info), TM_OK);
    CU_ASSERT_EQUAL(tm_jpeg_decode((const uint8_t *)"\xFF\xD8", 2, NULL, &img, &info), TM_ERR_TRUNCATED);
    CU_ASSERT_EQUAL(tm_jpeg_decode((const uint8_t *)"\xFF\xD8\xFF\xD9", 4, NULL, &img, &info), TM_ERR_CORRUPT);
    CU_ASSERT_EQUAL(tm_jpeg_decode((const uint8_t *)"GIF89a-not-a-jpeg", 17, NULL, &img, &info), TM_ERR_FORMAT);
    CU_ASSERT_EQUAL(tm_jpeg_decode(NULL, 5, NULL, &img, &info), TM_ERR_ARG);
}

/* Every cut of a valid file, from inside the header to just before EOI, is
 * reported as truncated and yields no image. */
static void test_truncated(void)
{
    tm_image *src = tm_test_synthetic(64, 48, 3, 81, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(src);
    for (int prog = 0; prog <= 1; prog++) {
        size_t len;
        uint8_t *data = encode(src, 90, TM_SS_420, prog, &len);
        size_t scan = find_scan_data(data, len);
        CU_ASSERT_TRUE_FATAL(scan > 0 && scan < len);
        size_t cuts[] = {3, 4, 5, 11, 20, 30, scan - 1, scan, scan + 1, (scan + len) / 2, len - 3, len - 2, len - 1};
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            uint8_t *cut = malloc(cuts[i]);
            CU_ASSERT_PTR_NOT_NULL_FATAL(cut);
            memcpy(cut, data, cuts[i]);
            tm_image *img = (tm_image *)1;
            tm_image_info info;
            tm_status st = tm_jpeg_decode(cut, cuts[i], NULL, &img, &info);
            if (st != TM_ERR_TRUNCATED)
                fprintf(stderr, "%s cut at %zu of %zu: %s\n", prog ? "progressive" : "baseline", cuts[i], len,
                        tm_strerror(st));
            CU_ASSERT_EQUAL(st, TM_ERR_TRUNCATED);
            CU_ASSERT_PTR_NULL(img);
            free(cut);
        }
        /* And a sweep over every 97th length, through the public entry point. */
        for (size_t l = 3; l < len; l += 97) {
            tm_image *img = NULL;
            tm_status st = tm_image_decode(data, l, NULL, &img, NULL);
            CU_ASSERT_EQUAL(st, TM_ERR_TRUNCATED);
            CU_ASSERT_PTR_NULL(img);
        }
        free(data);
    }
    tm_image_free(src);
}

/* A marker where entropy-coded data should be is corruption, not success. */
static void test_corrupt_scan(void)
{
    tm_image *src = tm_test_synthetic(64, 48, 3, 91, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(src);
    size_t len;
    uint8_t *data = encode(src, 90, TM_SS_420, 0, &len);
    size_t scan = find_scan_data(data, len);
    CU_ASSERT_TRUE_FATAL(scan > 0);
    size_t mid = (scan + len) / 2;
    data[mid] = 0xFF;
    data[mid + 1] = 0xD9;
    tm_image *img = (tm_image *)1;
    tm_image_info info;
    CU_ASSERT_EQUAL(tm_jpeg_decode(data, len, NULL, &img, &info), TM_ERR_CORRUPT);
    CU_ASSERT_PTR_NULL(img);
    free(data);
    tm_image_free(src);
}

static void test_garbage_after_soi(void)
{
    uint32_t seed = 0xC0FFEEu;
    int bad = 0;
    for (int i = 0; i < 300; i++) {
        size_t len = 2 + 1 + (seed % 2000);
        uint8_t *d = malloc(len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(d);
        d[0] = 0xFF;
        d[1] = 0xD8;
        for (size_t k = 2; k < len; k++) {
            seed = seed * 1664525u + 1013904223u;
            d[k] = (uint8_t)(seed >> 24);
        }
        /* Half the cases start with a marker so libjpeg parses further. */
        if (i & 1 && len > 4) {
            d[2] = 0xFF;
            d[3] = (uint8_t)(0xC0 + i % 0x3F);
        }
        tm_image *img = NULL;
        tm_image_info info;
        tm_status st = tm_jpeg_decode(d, len, NULL, &img, &info);
        if (st == TM_OK || img != NULL ||
            !(st == TM_ERR_TRUNCATED || st == TM_ERR_CORRUPT || st == TM_ERR_UNSUPPORTED ||
              st == TM_ERR_DIMENSIONS || st == TM_ERR_TOO_LARGE || st == TM_ERR_FORMAT))
            bad++;
        tm_image_free(img);
        free(d);
    }
    if (bad) fprintf(stderr, "garbage seed 0xC0FFEE: %d bad results\n", bad);
    CU_ASSERT_EQUAL(bad, 0);
}

/* A small valid gray JPEG whose SOF is then patched by the caller. */
static uint8_t *small_gray(size_t *len, size_t *sof)
{
    uint8_t px[64 * 48];
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(i * 7);
    test_jpeg_spec s = {64, 48, 1, JCS_GRAYSCALE, JCS_UNKNOWN, -1, 75, px, NULL, 0, NULL, 0, NULL, 0};
    uint8_t *d = write_jpeg(&s, len);
    *sof = find_sof(d, *len);
    CU_ASSERT_TRUE_FATAL(*sof > 0);
    return d;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_dimensions(void)
{
    size_t len, sof;
    uint8_t *d = small_gray(&len, &sof);
    /* SOF layout: length(2) precision(1) height(2) width(2) ... */
    tm_image *img = NULL;
    tm_image_info info;

    d[sof + 3] = 60000 >> 8;
    d[sof + 4] = 60000 & 0xFF;
    d[sof + 5] = 60000 >> 8;
    d[sof + 6] = 60000 & 0xFF;
    double t0 = now_seconds();
    CU_ASSERT_EQUAL(tm_image_decode(d, len, NULL, &img, &info), TM_ERR_TOO_LARGE);
    CU_ASSERT_TRUE(now_seconds() - t0 < 1.0); /* refused from the header alone */
    CU_ASSERT_PTR_NULL(img);

    d[sof + 5] = 0; /* width 0 */
    d[sof + 6] = 0;
    tm_status st = tm_image_decode(d, len, NULL, &img, &info);
    CU_ASSERT_TRUE(st == TM_ERR_DIMENSIONS || st == TM_ERR_CORRUPT);
    CU_ASSERT_PTR_NULL(img);

    d[sof + 3] = 0; /* height 0, width 48 */
    d[sof + 4] = 0;
    d[sof + 6] = 48;
    st = tm_image_decode(d, len, NULL, &img, &info);
    CU_ASSERT_TRUE(st == TM_ERR_DIMENSIONS || st == TM_ERR_CORRUPT);

    d[sof + 3] = 0xFF; /* 65535 high: beyond any JPEG decoder's side limit */
    d[sof + 4] = 0xFF;
    st = tm_image_decode(d, len, NULL, &img, &info);
    CU_ASSERT_TRUE(st == TM_ERR_DIMENSIONS || st == TM_ERR_TOO_LARGE);
    CU_ASSERT_PTR_NULL(img);
    free(d);

    /* The budget is exact: 64 x 48 = 3072 pixels. */
    d = small_gray(&len, &sof);
    tm_load_options o;
    tm_load_options_init(&o);
    o.max_pixels = 3071;
    CU_ASSERT_EQUAL(tm_image_decode(d, len, &o, &img, &info), TM_ERR_TOO_LARGE);
    CU_ASSERT_PTR_NULL(img);
    o.max_pixels = 3072;
    CU_ASSERT_EQUAL(tm_image_decode(d, len, &o, &img, &info), TM_OK);
    tm_image_free(img);
    free(d);
}

/* A progressive scan script that refines every coefficient one bit at a time
 * from Al = 10: 11 DC scans plus 63 x 11 AC scans per component. */
static jpeg_scan_info *many_scans(int comps, int *n)
{
    jpeg_scan_info *s = calloc((size_t)(11 + comps * 63 * 11), sizeof *s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int k = 0;
    for (int al = 10; al >= 0; al--) {
        s[k].comps_in_scan = comps;
        for (int c = 0; c < comps; c++) s[k].component_index[c] = c;
        s[k].Ss = s[k].Se = 0;
        s[k].Ah = al == 10 ? 0 : al + 1;
        s[k].Al = al;
        k++;
    }
    for (int c = 0; c < comps; c++)
        for (int coef = 1; coef <= 63; coef++)
            for (int al = 10; al >= 0; al--) {
                s[k].comps_in_scan = 1;
                s[k].component_index[0] = c;
                s[k].Ss = s[k].Se = coef;
                s[k].Ah = al == 10 ? 0 : al + 1;
                s[k].Al = al;
                k++;
            }
    *n = k;
    return s;
}

static void test_scan_limit(void)
{
    enum { W = 16, H = 16 };
    uint8_t px[W * H * 3];
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(i * 13);
    /* Gray: 704 scans, a legal (if silly) file under the limit. */
    int n;
    jpeg_scan_info *scans = many_scans(1, &n);
    CU_ASSERT_EQUAL(n, 704);
    test_jpeg_spec s = {W, H, 1, JCS_GRAYSCALE, JCS_UNKNOWN, -1, 90, px, NULL, 0, NULL, 0, scans, n};
    size_t len;
    uint8_t *d = write_jpeg(&s, &len);
    tm_image *img = NULL;
    tm_image_info info;
    CU_ASSERT_EQUAL(tm_image_decode(d, len, NULL, &img, &info), TM_OK);
    CU_ASSERT_EQUAL(info.progressive, 1);
    tm_image_free(img);
    img = NULL;
    free(d);
    free(scans);

    /* Colour: 2090 scans, refused. */
    scans = many_scans(3, &n);
    CU_ASSERT_EQUAL(n, 2090);
    test_jpeg_spec c = {W, H, 3, JCS_RGB, JCS_UNKNOWN, -1, 90, px, NULL, 0, NULL, 0, scans, n};
    d = write_jpeg(&c, &len);
    CU_ASSERT_EQUAL(tm_image_decode(d, len, NULL, &img, &info), TM_ERR_CORRUPT);
    CU_ASSERT_PTR_NULL(img);
    free(d);
    free(scans);
}

/* Stray bytes between the scan and EOI, as some encoders leave: libjpeg warns
 * "extraneous bytes before marker" but the pixels are intact, so the file
 * must decode, to the same pixels as without them. */
static void test_stray_bytes_tolerated(void)
{
    tm_image *img = tm_test_synthetic(64, 48, 3, 21, 1), *a = NULL, *b = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(img);
    tm_save_options so;
    tm_save_options_init(&so);
    so.format = TM_FORMAT_JPEG;
    uint8_t *data = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(tm_image_encode(img, &so, &data, &len), TM_OK);
    CU_ASSERT_FATAL(len > 4 && data[len - 2] == 0xFF && data[len - 1] == 0xD9);
    uint8_t *stray = malloc(len + 5);
    CU_ASSERT_PTR_NOT_NULL_FATAL(stray);
    memcpy(stray, data, len - 2);
    memcpy(stray + len - 2, "\x01\x02\x03\x04\x05\xFF\xD9", 7);
    CU_ASSERT_EQUAL(tm_image_decode(data, len, NULL, &a, NULL), TM_OK);
    CU_ASSERT_EQUAL(tm_image_decode(stray, len + 5, NULL, &b, NULL), TM_OK);
    if (a && b) CU_ASSERT_EQUAL(tm_test_maxdiff(a, b), 0.0);
    tm_image_free(a);
    tm_image_free(b);
    free(stray);
    free(data);
    tm_image_free(img);
}

/* Mean |a - b| over the w x h samples of two planes with their strides. */
static double plane_mad(const uint8_t *a, size_t sa, const uint8_t *b, size_t sb, int w, int h)
{
    double d = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) d += abs((int)a[(size_t)y * sa + (size_t)x] - (int)b[(size_t)y * sb + (size_t)x]);
    return d / ((double)w * h);
}

/* A YCbCr or gray JPEG reads as its stored components at every sampling
 * and odd size, its Y is the luminance of the RGB decode, and re-encoding
 * the planes (with a changed Y) keeps the sampling, carries the new Y, and
 * leaves the chroma as it was. */
static void test_planes_roundtrip(void)
{
    static const tm_subsampling ss[] = {TM_SS_444, TM_SS_422, TM_SS_420, TM_SS_440, TM_SS_411, TM_SS_GRAY};
    static const int hs[] = {1, 2, 2, 1, 4, 1}, vs[] = {1, 1, 2, 2, 1, 1};
    static const int sizes[][2] = {{37, 23}, {64, 48}, {129, 65}};
    for (size_t k = 0; k < sizeof ss / sizeof ss[0]; k++)
        for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
            int w = sizes[z][0], h = sizes[z][1], gray = ss[k] == TM_SS_GRAY;
            tm_image *src = tm_test_synthetic(w, h, gray ? 1 : 3, (uint32_t)(7 + k + 10 * z), 1);
            CU_ASSERT_PTR_NOT_NULL_FATAL(src);
            size_t len;
            uint8_t *data = encode(src, 90, gray ? TM_SS_UNKNOWN : ss[k], (int)z == 1, &len);
            tm_image *img = NULL, *rgb = NULL;
            tm_jpeg_planes *p = NULL;
            tm_image_info info;
            CU_ASSERT_EQUAL_FATAL(tm_image_decode_planes(data, len, NULL, &img, &p, &info), TM_OK);
            CU_ASSERT_PTR_NULL(img);
            CU_ASSERT_PTR_NOT_NULL_FATAL(p);
            CU_ASSERT_EQUAL(info.subsampling, ss[k]);
            CU_ASSERT_EQUAL(p->ncomp, gray ? 1 : 3);
            CU_ASSERT_EQUAL(p->width, w);
            CU_ASSERT_EQUAL(p->height, h);
            CU_ASSERT_EQUAL(p->cw[0], w);
            CU_ASSERT_EQUAL(p->ch[0], h);
            for (int c = 1; c < p->ncomp; c++) {
                CU_ASSERT_EQUAL(p->cw[c], (w + hs[k] - 1) / hs[k]);
                CU_ASSERT_EQUAL(p->ch[c], (h + vs[k] - 1) / vs[k]);
            }
            for (int c = 0; c < p->ncomp; c++) {
                CU_ASSERT_TRUE(p->stride[c] >= (size_t)p->cw[c] && p->stride[c] % 8 == 0);
                CU_ASSERT_TRUE(p->rows[c] >= (size_t)p->ch[c] && p->rows[c] % 8 == 0);
            }
            /* Y as stored against the luminance of the RGB decode. */
            CU_ASSERT_EQUAL_FATAL(decode(data, len, &rgb, NULL), TM_OK);
            float *y = malloc(sizeof(float) * (size_t)w * h);
            CU_ASSERT_PTR_NOT_NULL_FATAL(y);
            tm_luma(rgb, y);
            double dy = 0;
            for (int r = 0; r < h; r++)
                for (int x = 0; x < w; x++) dy += fabs(y[(size_t)r * w + x] - p->plane[0][(size_t)r * p->stride[0] + x]);
            dy /= (double)w * h;
            if (dy >= 1.5) fprintf(stderr, "%s %dx%d: Y vs luma %.2f\n", tm_subsampling_name(ss[k]), w, h, dy);
            CU_ASSERT_TRUE(dy < 1.5);

            /* Re-encode with Y raised by 12 (clamped). */
            uint8_t *luma = malloc(p->rows[0] * p->stride[0]);
            CU_ASSERT_PTR_NOT_NULL_FATAL(luma);
            for (size_t i = 0; i < p->rows[0] * p->stride[0]; i++) luma[i] = (uint8_t)(p->plane[0][i] > 243 ? 255 : p->plane[0][i] + 12);
            uint8_t *out = NULL;
            size_t out_len = 0;
            CU_ASSERT_EQUAL_FATAL(tm_jpeg_encode_planes(p, luma, 95, 0, &out, &out_len), TM_OK);
            tm_jpeg_planes *q = NULL;
            tm_image_info qi;
            CU_ASSERT_EQUAL_FATAL(tm_image_decode_planes(out, out_len, NULL, &img, &q, &qi), TM_OK);
            CU_ASSERT_PTR_NOT_NULL_FATAL(q);
            CU_ASSERT_EQUAL(qi.subsampling, ss[k]);
            CU_ASSERT_EQUAL(qi.jpeg_quality, 95);
            double d0 = plane_mad(q->plane[0], q->stride[0], luma, p->stride[0], w, h);
            double d1 = plane_mad(q->plane[0], q->stride[0], p->plane[0], p->stride[0], w, h);
            CU_ASSERT_TRUE(d0 < 1.5);
            CU_ASSERT_TRUE(d1 > 8.0);
            for (int c = 1; c < p->ncomp; c++)
                CU_ASSERT_TRUE(plane_mad(q->plane[c], q->stride[c], p->plane[c], p->stride[c], p->cw[c], p->ch[c]) < 1.5);
            free(out);
            free(luma);
            free(y);
            tm_jpeg_planes_free(q);
            tm_jpeg_planes_free(p);
            tm_image_free(rgb);
            tm_image_free(src);
            free(data);
        }
}

/* What cannot be marked as stored comes back as pixels: a turned JPEG
 * (EXIF orientation) upright, CMYK as RGB. luma_only gives one plane: a
 * YCbCr JPEG's stored Y, CMYK's luminance. */
static void test_planes_fallback_and_luma(void)
{
    uint8_t px[EX_W * EX_H];
    for (int y = 0; y < EX_H; y++)
        for (int x = 0; x < EX_W; x++) px[y * EX_W + x] = ex_block_value(x / 8, y / 8);
    uint8_t exif[128];
    test_marker m = {JPEG_APP0 + 1, exif, make_exif(exif, 0, 6, 0)};
    test_jpeg_spec s = {EX_W, EX_H, 1, JCS_GRAYSCALE, JCS_UNKNOWN, -1, 100, px, &m, 1, NULL, 0, NULL, 0};
    size_t len;
    uint8_t *data = write_jpeg(&s, &len);
    tm_image *img = NULL;
    tm_jpeg_planes *p = NULL;
    tm_image_info info;
    CU_ASSERT_EQUAL_FATAL(tm_image_decode_planes(data, len, NULL, &img, &p, &info), TM_OK);
    CU_ASSERT_PTR_NULL(p);
    CU_ASSERT_PTR_NOT_NULL_FATAL(img);
    CU_ASSERT_EQUAL(img->width, EX_H); /* turned upright */
    CU_ASSERT_EQUAL(img->height, EX_W);
    tm_image_free(img);
    free(data);

    static const uint8_t ink[4] = {51, 102, 153, 25};
    uint8_t cmyk[24 * 16 * 4];
    for (size_t i = 0; i < 24 * 16; i++) memcpy(cmyk + 4 * i, ink, 4);
    test_jpeg_spec c = {24, 16, 4, JCS_CMYK, JCS_CMYK, 0, 100, cmyk, NULL, 0, NULL, 0, NULL, 0};
    data = write_jpeg(&c, &len);
    CU_ASSERT_EQUAL_FATAL(tm_image_decode_planes(data, len, NULL, &img, &p, &info), TM_OK);
    CU_ASSERT_PTR_NULL(p);
    CU_ASSERT_PTR_NOT_NULL_FATAL(img);
    CU_ASSERT_EQUAL(img->channels, 3);
    tm_image_free(img);
    tm_load_options lo;
    tm_load_options_init(&lo);
    lo.luma_only = 1;
    CU_ASSERT_EQUAL_FATAL(tm_image_decode(data, len, &lo, &img, NULL), TM_OK);
    CU_ASSERT_EQUAL(img->channels, 1);
    /* RGB (184, 138, 92): luminance 147.5 */
    CU_ASSERT_TRUE(fabsf(img->plane[0][5 * 24 + 5] - 147.5f) < 1.5f);
    tm_image_free(img);
    free(data);

    tm_image *src = tm_test_synthetic(50, 30, 3, 5, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(src);
    data = encode(src, 90, TM_SS_420, 0, &len);
    CU_ASSERT_EQUAL_FATAL(tm_image_decode_planes(data, len, NULL, &img, &p, &info), TM_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    tm_image *y = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_decode(data, len, &lo, &y, &info), TM_OK);
    CU_ASSERT_EQUAL(y->channels, 1);
    CU_ASSERT_EQUAL(info.channels, 1);
    int same = 1;
    for (int r = 0; r < 30; r++)
        for (int x = 0; x < 50; x++)
            if (y->plane[0][r * 50 + x] != p->plane[0][(size_t)r * p->stride[0] + (size_t)x]) same = 0;
    CU_ASSERT_TRUE(same);
    tm_image_free(y);
    tm_jpeg_planes_free(p);
    tm_image_free(src);
    free(data);
}

static CU_TestInfo tests[] = {
    {"stray bytes before EOI tolerated", test_stray_bytes_tolerated},
    {"round trip gray (1 and 2 channels)", test_roundtrip_gray},
    {"round trip RGB at every subsampling", test_roundtrip_rgb_subsampling},
    {"quality estimate within 2", test_quality_estimate},
    {"progressive decodes like baseline", test_progressive},
    {"default subsampling by quality", test_default_subsampling},
    {"alpha dropped, bad options refused", test_encode_alpha_and_args},
    {"output carries JFIF only", test_output_markers_plain},
    {"CMYK, YCCK, Adobe inversion", test_cmyk},
    {"EXIF orientation 1..8, II and MM", test_exif_orientation},
    {"corrupt EXIF tolerated", test_exif_corrupt_tolerated},
    {"metadata read, never written, ICC kept", test_metadata_stripped},
    {"corpus decodes", test_corpus},
    {"empty and non-JPEG input", test_empty},
    {"truncation is TM_ERR_TRUNCATED", test_truncated},
    {"marker inside a scan is corrupt", test_corrupt_scan},
    {"random bytes after SOI", test_garbage_after_soi},
    {"absurd and zero dimensions, exact budget", test_dimensions},
    {"progressive scan limit", test_scan_limit},
    {"components as stored: sampling, Y, re-encode", test_planes_roundtrip},
    {"turned and CMYK read as pixels; luminance only", test_planes_fallback_and_luma},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tm_test_main("jpeg", tests);
}
