/* exif.c -- placeholder. */
#include "config.h"
#include "internal.h"
tm_status tm_exif_parse(const uint8_t *data, size_t len, tm_exif_summary *out)
{ (void)data; (void)len; out->orientation = 1; out->has_gps = 0; return TM_OK; }
