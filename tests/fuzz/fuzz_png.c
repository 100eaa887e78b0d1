/* fuzz_png.c -- libFuzzer target for the png decoder (and encoder round trip). */
#include "fuzz_common.h"
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_one(data, size, tm_png_decode, tm_png_encode);
}
