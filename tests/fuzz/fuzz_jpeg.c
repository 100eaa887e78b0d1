/* fuzz_jpeg.c -- libFuzzer target for the jpeg decoder (and encoder round trip). */
#include "fuzz_common.h"
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_one(data, size, tm_jpeg_decode, tm_jpeg_encode);
}
