/* fuzz_exif.c -- libFuzzer target for the EXIF (TIFF IFD) parser. */
#include <stdlib.h>
#include "internal.h"
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tm_exif_summary s;
    if (tm_exif_parse(data, size, &s) == TM_OK && (s.orientation < 1 || s.orientation > 8)) abort();
    return 0;
}
