/* bigalloc.c -- zeroed memory for whole-image buffers (see internal.h).
 *
 * Anonymous mappings and madvise are outside POSIX, hence _DEFAULT_SOURCE,
 * here alone. */
#define _DEFAULT_SOURCE
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

/* Buffers from this size on are mapped in whole huge pages, at a huge-page
 * boundary, so that transparent huge pages can back all of them: a first
 * touch then costs one 2 MB fault instead of 512 small ones, about a quarter
 * of the time. A buffer of 1920x1080 bytes is a little under 2 MB, and one of
 * 4.2 MB a little over two huge pages; mapped to the byte, the first would
 * get none and the second one. Below BIG_MAP, where zeroing a whole huge
 * page would cost more than the small faults it saves, calloc'd. Either way
 * a header of BIG_HEAD bytes (keeping 64-byte alignment) records how. */
#define HUGE ((size_t)2 << 20)
#define BIG_MAP ((size_t)1 << 20)
#define BIG_HEAD 64

void *tm_big_alloc(size_t bytes)
{
    if (bytes > SIZE_MAX - BIG_HEAD - 2 * HUGE) return NULL;
    size_t len = bytes + BIG_HEAD;
    uint8_t *base;
    if (len >= BIG_MAP) {
        /* Map a huge page more than the whole huge pages asked for and keep
         * the aligned part. */
        len = (len + HUGE - 1) & ~(HUGE - 1);
        uint8_t *raw = mmap(NULL, len + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (raw == MAP_FAILED) return NULL;
        base = (uint8_t *)(((uintptr_t)raw + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
        if (base > raw) munmap(raw, (size_t)(base - raw));
        if (raw + HUGE > base) munmap(base + len, (size_t)(raw + HUGE - base));
#ifdef MADV_HUGEPAGE
        (void)madvise(base, len, MADV_HUGEPAGE); /* a hint: refused is fine */
#endif
    } else if (!(base = calloc(1, len))) {
        return NULL;
    }
    memcpy(base, &len, sizeof len);
    return base + BIG_HEAD;
}

void tm_big_free(void *p)
{
    if (!p) return;
    uint8_t *base = (uint8_t *)p - BIG_HEAD;
    size_t len;
    memcpy(&len, base, sizeof len);
    if (len >= BIG_MAP) munmap(base, len);
    else free(base);
}
