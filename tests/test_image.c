/* test_image.c -- the image object, orientation, format dispatch, budgets. */
#include "testutil.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "config.h"

static void test_create_free(void)
{
    tm_image *img = NULL;
    CU_ASSERT_EQUAL(tm_image_create(0, 5, 3, &img), TM_ERR_ARG);
    CU_ASSERT_PTR_NULL(img);
    CU_ASSERT_EQUAL(tm_image_create(5, 5, 0, &img), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_image_create(5, 5, 5, &img), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_image_create(TM_MAX_SIDE + 1, 5, 1, &img), TM_ERR_DIMENSIONS);
    CU_ASSERT_EQUAL_FATAL(tm_image_create(7, 3, 4, &img), TM_OK);
    CU_ASSERT_EQUAL(img->width, 7);
    CU_ASSERT_EQUAL(img->height, 3);
    CU_ASSERT_EQUAL(img->channels, 4);
    for (int c = 0; c < 4; c++) {
        CU_ASSERT_PTR_NOT_NULL(img->plane[c]);
        CU_ASSERT_EQUAL(img->plane[c][20], 0.0f);
    }
    tm_image_free(img);
    tm_image_free(NULL);
}

static void test_clone_and_icc(void)
{
    tm_image *a = tm_test_synthetic(16, 9, 3, 7, 0), *b = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    const uint8_t icc[] = {1, 2, 3, 4, 5};
    CU_ASSERT_EQUAL(tm_image_set_icc(a, icc, sizeof icc), TM_OK);
    a->has_gamma = 1;
    a->gamma = 45455;
    CU_ASSERT_EQUAL_FATAL(tm_image_clone(a, &b), TM_OK);
    CU_ASSERT_EQUAL(tm_test_maxdiff(a, b), 0.0);
    CU_ASSERT_EQUAL(b->icc_len, sizeof icc);
    CU_ASSERT_EQUAL(memcmp(b->icc, icc, sizeof icc), 0);
    CU_ASSERT_PTR_NOT_EQUAL(a->icc, b->icc);
    CU_ASSERT_EQUAL(b->gamma, 45455u);
    b->plane[0][0] += 1;
    CU_ASSERT_EQUAL(tm_test_maxdiff(a, b), 1.0);
    CU_ASSERT_EQUAL(tm_image_set_icc(b, NULL, 0), TM_OK);
    CU_ASSERT_PTR_NULL(b->icc);
    CU_ASSERT_EQUAL(tm_image_set_icc(b, NULL, 3), TM_ERR_ARG);
    tm_image_free(a);
    tm_image_free(b);
}

/* A 3x2 stored image with value 10*y + x, and the upright result of each EXIF
 * orientation written out by hand from the EXIF specification's pictures. */
static void test_orientation(void)
{
    static const struct {
        int o, w, h;
        float px[6];
    } cases[] = {
        {1, 3, 2, {0, 1, 2, 10, 11, 12}},
        {2, 3, 2, {2, 1, 0, 12, 11, 10}},
        {3, 3, 2, {12, 11, 10, 2, 1, 0}},
        {4, 3, 2, {10, 11, 12, 0, 1, 2}},
        {5, 2, 3, {0, 10, 1, 11, 2, 12}},
        {6, 2, 3, {10, 0, 11, 1, 12, 2}},
        {7, 2, 3, {12, 2, 11, 1, 10, 0}},
        {8, 2, 3, {2, 12, 1, 11, 0, 10}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tm_image *img;
        CU_ASSERT_EQUAL_FATAL(tm_image_create(3, 2, 2, &img), TM_OK);
        for (int y = 0; y < 2; y++)
            for (int x = 0; x < 3; x++) {
                img->plane[0][y * 3 + x] = (float)(10 * y + x);
                img->plane[1][y * 3 + x] = (float)(100 + 10 * y + x);
            }
        CU_ASSERT_EQUAL(tm_image_orient(img, cases[k].o), TM_OK);
        CU_ASSERT_EQUAL(img->width, cases[k].w);
        CU_ASSERT_EQUAL(img->height, cases[k].h);
        int ok = 1;
        for (int i = 0; i < 6; i++) {
            if (img->plane[0][i] != cases[k].px[i]) ok = 0;
            if (img->plane[1][i] != 100 + cases[k].px[i]) ok = 0;
        }
        if (!ok) fprintf(stderr, "orientation %d wrong\n", cases[k].o);
        CU_ASSERT_TRUE(ok);
        tm_image_free(img);
    }
    tm_image *img;
    CU_ASSERT_EQUAL_FATAL(tm_image_create(2, 2, 1, &img), TM_OK);
    CU_ASSERT_EQUAL(tm_image_orient(img, 0), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_image_orient(img, 9), TM_ERR_ARG);
    tm_image_free(img);
}

static void test_formats(void)
{
    CU_ASSERT_EQUAL(tm_format_sniff("\xff\xd8\xff\xe0", 4), TM_FORMAT_JPEG);
    CU_ASSERT_EQUAL(tm_format_sniff("\x89PNG\r\n\x1a\n", 8), TM_FORMAT_PNG);
    CU_ASSERT_EQUAL(tm_format_sniff("RIFF\0\0\0\0WEBPVP8 ", 16), TM_FORMAT_WEBP);
    CU_ASSERT_EQUAL(tm_format_sniff("GIF89a", 6), TM_FORMAT_UNKNOWN);
    CU_ASSERT_EQUAL(tm_format_sniff(NULL, 0), TM_FORMAT_UNKNOWN);
    CU_ASSERT_EQUAL(tm_format_from_path("a/b.JPG"), TM_FORMAT_JPEG);
    CU_ASSERT_EQUAL(tm_format_from_path("x.jpeg"), TM_FORMAT_JPEG);
    CU_ASSERT_EQUAL(tm_format_from_path("x.png"), TM_FORMAT_PNG);
    CU_ASSERT_EQUAL(tm_format_from_path("x.webp"), TM_FORMAT_WEBP);
    CU_ASSERT_EQUAL(tm_format_from_path("x.gif"), TM_FORMAT_UNKNOWN);
    CU_ASSERT_EQUAL(tm_format_from_path("dir.png/file"), TM_FORMAT_UNKNOWN);
    CU_ASSERT_EQUAL(tm_format_from_path("noext"), TM_FORMAT_UNKNOWN);
    CU_ASSERT_STRING_EQUAL(tm_format_name(TM_FORMAT_WEBP), "webp");
    CU_ASSERT_STRING_EQUAL(tm_subsampling_name(TM_SS_420), "4:2:0");
}

static void test_decode_rejects(void)
{
    tm_image *img = (tm_image *)1;
    CU_ASSERT_EQUAL(tm_image_decode("GIF89a....garbage", 17, NULL, &img, NULL), TM_ERR_FORMAT);
    CU_ASSERT_PTR_NULL(img);
    CU_ASSERT_EQUAL(tm_image_decode("", 0, NULL, &img, NULL), TM_ERR_FORMAT);
    CU_ASSERT_EQUAL(tm_image_decode("\xff\xd8", 2, NULL, &img, NULL), TM_ERR_TRUNCATED);
    CU_ASSERT_EQUAL(tm_image_load(tm_test_path("does-not-exist.png"), NULL, &img, NULL), TM_ERR_IO);
    CU_ASSERT_EQUAL(tm_image_load(tm_test_tmpdir(), NULL, &img, NULL), TM_ERR_IO);
}

static void test_dimensions_budget(void)
{
    CU_ASSERT_EQUAL(tm_check_dimensions(0, 10, TM_DEFAULT_MAX_PIXELS), TM_ERR_DIMENSIONS);
    CU_ASSERT_EQUAL(tm_check_dimensions(10, 0, TM_DEFAULT_MAX_PIXELS), TM_ERR_DIMENSIONS);
    CU_ASSERT_EQUAL(tm_check_dimensions(100000, 100000, UINT64_MAX), TM_ERR_DIMENSIONS);
    CU_ASSERT_EQUAL(tm_check_dimensions(20000, 20000, TM_DEFAULT_MAX_PIXELS), TM_ERR_TOO_LARGE);
    CU_ASSERT_EQUAL(tm_check_dimensions(10000, 10000, TM_DEFAULT_MAX_PIXELS), TM_OK);
    CU_ASSERT_EQUAL(tm_check_dimensions(1000, 1000, 999999), TM_ERR_TOO_LARGE);
    tm_load_options lo;
    tm_load_options_init(&lo);
    CU_ASSERT_EQUAL(lo.max_pixels, 200000000ULL);
}

static void test_encode_args(void)
{
    tm_image *img = tm_test_synthetic(8, 8, 3, 1, 1);
    tm_save_options so;
    tm_save_options_init(&so);
    uint8_t *data = (uint8_t *)1;
    size_t len = 1;
    CU_ASSERT_EQUAL(tm_image_encode(img, &so, &data, &len), TM_ERR_ARG); /* no format */
    CU_ASSERT_EQUAL(tm_image_save(img, tm_test_path("x.tiff"), NULL), TM_ERR_ARG);
    CU_ASSERT_EQUAL(access(tm_test_path("x.tiff"), F_OK), -1);
    tm_image_free(img);
}

/* max_side shrinks on load to the longer side asked, keeping the shape and
 * the mean; an image that fits is read exactly as without it, planes too. */
static void test_max_side(void)
{
    tm_image *src = tm_test_synthetic(300, 200, 3, 7, 1), *got = NULL, *plain = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(src);
    static const tm_format fmts[] = {TM_FORMAT_PNG, TM_FORMAT_JPEG};
    for (size_t f = 0; f < 2; f++) {
        tm_save_options so;
        tm_save_options_init(&so);
        so.format = fmts[f];
        uint8_t *data;
        size_t len;
        CU_ASSERT_EQUAL_FATAL(tm_image_encode(src, &so, &data, &len), TM_OK);
        tm_load_options lo;
        tm_load_options_init(&lo);
        CU_ASSERT_EQUAL(tm_image_decode(data, len, &lo, &plain, NULL), TM_OK);
        lo.max_side = 120;
        CU_ASSERT_EQUAL(tm_image_decode(data, len, &lo, &got, NULL), TM_OK);
        if (got && plain) {
            CU_ASSERT_EQUAL(got->width, 120);
            CU_ASSERT_EQUAL(got->height, 80);
            double ma = 0, mb = 0;
            for (size_t i = 0; i < 300 * 200; i++) ma += plain->plane[1][i];
            for (size_t i = 0; i < 120 * 80; i++) mb += got->plane[1][i];
            CU_ASSERT_DOUBLE_EQUAL(ma / (300 * 200), mb / (120 * 80), 1.0);
        }
        tm_image_free(got);
        lo.max_side = 300; /* fits: the same pixels */
        CU_ASSERT_EQUAL(tm_image_decode(data, len, &lo, &got, NULL), TM_OK);
        if (got && plain) CU_ASSERT_EQUAL(tm_test_maxdiff(got, plain), 0);
        tm_image_free(got);
        /* planes: kept when the image fits, not when it is shrunk */
        tm_jpeg_planes *planes = NULL;
        got = NULL;
        CU_ASSERT_EQUAL(tm_image_decode_planes(data, len, &lo, &got, &planes, NULL), TM_OK);
        CU_ASSERT_EQUAL(planes != NULL, fmts[f] == TM_FORMAT_JPEG);
        tm_jpeg_planes_free(planes);
        tm_image_free(got);
        lo.max_side = 150;
        planes = NULL;
        got = NULL;
        CU_ASSERT_EQUAL(tm_image_decode_planes(data, len, &lo, &got, &planes, NULL), TM_OK);
        CU_ASSERT_PTR_NULL(planes);
        CU_ASSERT_TRUE(got && got->width == 150 && got->height == 100);
        tm_image_free(got);
        lo.max_side = -1;
        CU_ASSERT_EQUAL(tm_image_decode(data, len, &lo, &got, NULL), TM_ERR_ARG);
        tm_image_free(plain);
        free(data);
    }
    tm_image_free(src);
}

static void test_strerror(void)
{
    for (int s = TM_OK; s <= TM_ERR_INTERNAL; s++) {
        const char *m = tm_strerror((tm_status)s);
        CU_ASSERT_PTR_NOT_NULL(m);
        CU_ASSERT_STRING_NOT_EQUAL(m, "unknown status");
        for (int t = TM_OK; t < s; t++) CU_ASSERT_STRING_NOT_EQUAL(m, tm_strerror((tm_status)t));
    }
    CU_ASSERT_STRING_EQUAL(tm_strerror((tm_status)999), "unknown status");
    CU_ASSERT_STRING_EQUAL(tm_version(), PACKAGE_VERSION);
}

static CU_TestInfo tests[] = {
    {"create and free", test_create_free},
    {"clone and icc", test_clone_and_icc},
    {"exif orientations 1..8", test_orientation},
    {"format sniffing and names", test_formats},
    {"decode rejects non-images", test_decode_rejects},
    {"dimension and pixel budget", test_dimensions_budget},
    {"encode argument checks", test_encode_args},
    {"max_side shrinks on load", test_max_side},
    {"status strings", test_strerror},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tm_test_main("image", tests);
}
