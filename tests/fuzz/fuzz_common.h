/* fuzz_common.h -- shared body of the decoder fuzz targets: decode the input
 * with a small pixel budget (so the fuzzer explores parsing, not allocation)
 * and, when it decodes, re-encode it to exercise the writer on odd shapes. */
#ifndef TM_FUZZ_COMMON_H
#define TM_FUZZ_COMMON_H
#include <stdlib.h>
#include "internal.h"

typedef tm_status (*fuzz_decoder)(const uint8_t *, size_t, const tm_load_options *, tm_image **, tm_image_info *);
typedef tm_status (*fuzz_encoder)(const tm_image *, const tm_save_options *, uint8_t **, size_t *);

static int fuzz_one(const uint8_t *data, size_t size, fuzz_decoder dec, fuzz_encoder enc)
{
    tm_load_options lo;
    tm_load_options_init(&lo);
    lo.max_pixels = 1u << 20;
    tm_image *img = NULL;
    tm_image_info info = {0};
    info.orientation = 1;
    if (dec(data, size, &lo, &img, &info) == TM_OK) {
        if (info.orientation < 1 || info.orientation > 8) abort();
        if (img->width < 1 || img->height < 1 || img->channels < 1 || img->channels > 4) abort();
        if ((uint64_t)img->width * img->height <= 4096) {
            tm_save_options so;
            tm_save_options_init(&so);
            uint8_t *out = NULL;
            size_t len = 0;
            if (enc(img, &so, &out, &len) == TM_OK && len == 0) abort();
            free(out);
        }
    }
    tm_image_free(img);
    return 0;
}
#endif
