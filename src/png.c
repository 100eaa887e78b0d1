/* png.c -- placeholder while the codec is written. */
#include "config.h"
#include "internal.h"
tm_status tm_png_decode(const uint8_t *data, size_t len, const tm_load_options *opts,
                         tm_image **out, tm_image_info *info)
{ (void)data; (void)len; (void)opts; (void)out; (void)info; return TM_ERR_UNSUPPORTED; }
tm_status tm_png_encode(const tm_image *img, const tm_save_options *opts, uint8_t **data, size_t *len)
{ (void)img; (void)opts; (void)data; (void)len; return TM_ERR_UNSUPPORTED; }
