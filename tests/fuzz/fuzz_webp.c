/* fuzz_webp.c -- libFuzzer target for the webp decoder (and encoder round trip). */
#include "fuzz_common.h"
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_one(data, size, tm_webp_decode, tm_webp_encode);
}
