/* fuzz_jpeg.c -- libFuzzer target for the jpeg decoder (and encoder round
 * trip): the pixel decode, the luminance-only decode every traced suspect
 * goes through, and the read of the stored components that marking uses,
 * with their re-encode. */
#include "fuzz_common.h"

/* The components as stored: their layout must hold what libjpeg wrote. */
static void fuzz_planes(const uint8_t *data, size_t size)
{
    tm_load_options lo;
    tm_load_options_init(&lo);
    lo.max_pixels = 1u << 20;
    tm_image *img = NULL;
    tm_jpeg_planes *p = NULL;
    tm_image_info info = {0};
    info.orientation = 1;
    if (tm_jpeg_decode_planes(data, size, &lo, &img, &p, &info) == TM_OK && p) {
        if (img || (p->ncomp != 1 && p->ncomp != 3)) abort();
        for (int c = 0; c < p->ncomp; c++)
            if (p->cw[c] < 1 || p->ch[c] < 1 || (size_t)p->cw[c] > p->stride[c] || (size_t)p->ch[c] > p->rows[c])
                abort();
        if (p->cw[0] != p->width || p->ch[0] != p->height) abort();
        if ((uint64_t)p->width * p->height <= 4096) {
            uint8_t *out = NULL;
            size_t len = 0;
            if (tm_jpeg_encode_planes(p, NULL, 75, 0, &out, &len) == TM_OK && len == 0) abort();
            free(out);
        }
    }
    tm_image_free(img);
    tm_jpeg_planes_free(p);
}

/* The luminance alone: one plane whatever the stream. */
static void fuzz_luma(const uint8_t *data, size_t size)
{
    tm_load_options lo;
    tm_load_options_init(&lo);
    lo.max_pixels = 1u << 20;
    lo.luma_only = 1;
    tm_image *img = NULL;
    if (tm_image_decode(data, size, &lo, &img, NULL) == TM_OK && img->channels != 1) abort();
    tm_image_free(img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_planes(data, size);
    fuzz_luma(data, size);
    return fuzz_one(data, size, tm_jpeg_decode, tm_jpeg_encode);
}
