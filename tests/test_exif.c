/* test_exif.c -- the EXIF (TIFF) block parser: orientation, GPS, and that
 * every malformed block is refused without reading outside it.
 *
 * Blocks are assembled here byte by byte in both byte orders, and each parse
 * runs on an exact-size heap copy so AddressSanitizer sees any overread. */
#include "testutil.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A growable little TIFF writer for one byte order. */
typedef struct tiff_buf {
    uint8_t b[512];
    size_t len;
    int big;
} tiff_buf;

static void put16(tiff_buf *t, size_t off, unsigned v)
{
    if (t->big) {
        t->b[off] = (uint8_t)(v >> 8);
        t->b[off + 1] = (uint8_t)v;
    } else {
        t->b[off] = (uint8_t)v;
        t->b[off + 1] = (uint8_t)(v >> 8);
    }
}

static void put32(tiff_buf *t, size_t off, uint32_t v)
{
    if (t->big) {
        put16(t, off, v >> 16);
        put16(t, off + 2, v & 0xFFFF);
    } else {
        put16(t, off, v & 0xFFFF);
        put16(t, off + 2, v >> 16);
    }
}

typedef struct entry {
    unsigned tag, type;
    uint32_t count, value; /* value: SHORTs go in the first two bytes */
} entry;

/* Header + IFD0 at offset 8 holding n entries, next-IFD link `next`, then
 * (when gps is set) a one-entry GPS IFD whose offset the caller can use. */
static size_t gps_ifd_offset(size_t n)
{
    return 8 + 2 + 12 * n + 4;
}

static void build(tiff_buf *t, int big, const entry *e, size_t n, uint32_t next, int gps_ifd)
{
    memset(t, 0, sizeof *t);
    t->big = big;
    t->b[0] = t->b[1] = big ? 'M' : 'I';
    put16(t, 2, 42);
    put32(t, 4, 8);
    put16(t, 8, (unsigned)n);
    for (size_t i = 0; i < n; i++) {
        size_t o = 10 + 12 * i;
        put16(t, o, e[i].tag);
        put16(t, o + 2, e[i].type);
        put32(t, o + 4, e[i].count);
        if (e[i].type == 3 && e[i].count == 1) put16(t, o + 8, e[i].value & 0xFFFF);
        else put32(t, o + 8, e[i].value);
    }
    put32(t, 10 + 12 * n, next);
    t->len = gps_ifd_offset(n);
    if (gps_ifd) {
        size_t g = t->len;
        put16(t, g, 1);            /* one entry: GPSVersionID */
        put16(t, g + 2, 0);
        put16(t, g + 4, 1);        /* BYTE */
        put32(t, g + 6, 4);
        t->b[g + 10] = 2;
        t->b[g + 11] = 2;
        put32(t, g + 14, 0);
        t->len = g + 18;
    }
}

/* Parses data[0..len) from an exact-size heap copy. */
static tm_status parse(const uint8_t *data, size_t len, tm_exif_summary *s)
{
    uint8_t *copy = malloc(len ? len : 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
    if (len) memcpy(copy, data, len);
    tm_status st = tm_exif_parse(copy, len, s);
    free(copy);
    return st;
}

static void test_orientation_both_orders(void)
{
    for (int big = 0; big <= 1; big++)
        for (unsigned o = 1; o <= 8; o++) {
            entry e[] = {{0x010F, 2, 4, 0}, {0x0112, 3, 1, o}, {0x011A, 5, 1, 0}};
            tiff_buf t;
            build(&t, big, e, 3, 0, 0);
            tm_exif_summary s = {0, 7};
            CU_ASSERT_EQUAL(parse(t.b, t.len, &s), TM_OK);
            CU_ASSERT_EQUAL(s.orientation, (int)o);
            CU_ASSERT_EQUAL(s.has_gps, 0);
        }
}

static void test_orientation_invalid_values(void)
{
    static const struct {
        unsigned type;
        uint32_t count, value;
    } bad[] = {
        {3, 1, 0}, {3, 1, 9}, {3, 1, 0xFFFF}, /* out of 1..8 */
        {4, 1, 6},                            /* LONG, not SHORT */
        {3, 2, 6},                            /* two values */
        {3, 0, 6},                            /* none */
    };
    for (int big = 0; big <= 1; big++)
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            entry e[] = {{0x0112, bad[i].type, bad[i].count, bad[i].value}};
            tiff_buf t;
            build(&t, big, e, 1, 0, 0);
            tm_exif_summary s = {5, 0};
            CU_ASSERT_EQUAL(parse(t.b, t.len, &s), TM_OK);
            CU_ASSERT_EQUAL(s.orientation, 1);
        }
    /* No orientation tag at all. */
    entry e[] = {{0x010F, 2, 4, 0}};
    tiff_buf t;
    build(&t, 0, e, 1, 0, 0);
    tm_exif_summary s = {5, 1};
    CU_ASSERT_EQUAL(parse(t.b, t.len, &s), TM_OK);
    CU_ASSERT_EQUAL(s.orientation, 1);
    CU_ASSERT_EQUAL(s.has_gps, 0);
}

static void test_gps_pointer(void)
{
    for (int big = 0; big <= 1; big++)
        for (unsigned type = 4; type <= 13; type += 9) { /* LONG and IFD types */
            entry e[] = {{0x0112, 3, 1, 6}, {0x8825, type, 1, (uint32_t)gps_ifd_offset(2)}};
            tiff_buf t;
            build(&t, big, e, 2, 0, 1);
            tm_exif_summary s = {0, 0};
            CU_ASSERT_EQUAL(parse(t.b, t.len, &s), TM_OK);
            CU_ASSERT_EQUAL(s.has_gps, 1);
            CU_ASSERT_EQUAL(s.orientation, 6);
        }
}

/* On any error the summary holds the "nothing known" defaults. */
static void expect_corrupt(const uint8_t *data, size_t len)
{
    tm_exif_summary s = {6, 1};
    CU_ASSERT_EQUAL(parse(data, len, &s), TM_ERR_CORRUPT);
    CU_ASSERT_EQUAL(s.orientation, 1);
    CU_ASSERT_EQUAL(s.has_gps, 0);
}

static void test_bad_header(void)
{
    entry e[] = {{0x0112, 3, 1, 3}};
    tiff_buf t;
    build(&t, 0, e, 1, 0, 0);
    for (size_t len = 0; len < 8; len++) expect_corrupt(t.b, len);

    tiff_buf u = t;
    u.b[1] = 'M'; /* "IM" */
    expect_corrupt(u.b, u.len);
    u = t;
    u.b[0] = u.b[1] = 'X';
    expect_corrupt(u.b, u.len);
    u = t;
    put16(&u, 2, 43); /* wrong magic */
    expect_corrupt(u.b, u.len);
    u = t;
    u.b[0] = u.b[1] = 'M'; /* little-endian body under a big-endian mark */
    expect_corrupt(u.b, u.len);

    tm_exif_summary s;
    CU_ASSERT_EQUAL(tm_exif_parse(NULL, 0, &s), TM_ERR_CORRUPT);
    CU_ASSERT_EQUAL(tm_exif_parse(t.b, t.len, NULL), TM_ERR_ARG);
}

static void test_bad_offsets_and_counts(void)
{
    for (int big = 0; big <= 1; big++) {
        entry e[] = {{0x0112, 3, 1, 8}, {0x8825, 4, 1, (uint32_t)gps_ifd_offset(2)}};
        tiff_buf t, u;
        build(&t, big, e, 2, 0, 1);

        static const uint32_t ifd0_offsets[] = {0, 4, 7, 0xFFFFFFF0u, 0xFFFFFFFFu};
        for (size_t i = 0; i < sizeof ifd0_offsets / sizeof ifd0_offsets[0]; i++) {
            u = t;
            put32(&u, 4, ifd0_offsets[i]);
            expect_corrupt(u.b, u.len);
        }
        u = t;
        put32(&u, 4, (uint32_t)u.len); /* IFD0 exactly at the end */
        expect_corrupt(u.b, u.len);
        u = t;
        put32(&u, 4, (uint32_t)u.len - 1); /* count word half outside */
        expect_corrupt(u.b, u.len);

        /* Entry counts the block cannot hold, or none at all. */
        static const unsigned counts[] = {0, 4, 100, 0xFFFF};
        for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
            u = t;
            put16(&u, 8, counts[i]);
            expect_corrupt(u.b, u.len);
        }

        /* GPS pointer past the end, into the header, or to an IFD whose
         * entries run off the end. */
        static const uint32_t gps_offsets[] = {0, 3, 0x7FFFFFFFu, 0xFFFFFFFFu};
        for (size_t i = 0; i < sizeof gps_offsets / sizeof gps_offsets[0]; i++) {
            u = t;
            put32(&u, 10 + 12 + 8, gps_offsets[i]);
            expect_corrupt(u.b, u.len);
        }
        u = t;
        put32(&u, 10 + 12 + 8, (uint32_t)u.len);
        expect_corrupt(u.b, u.len);
        u = t;
        put16(&u, gps_ifd_offset(2), 500); /* GPS IFD count overflowing */
        expect_corrupt(u.b, u.len);
        u = t;
        put16(&u, 10 + 12 + 2, 3); /* GPS pointer typed SHORT */
        expect_corrupt(u.b, u.len);
        u = t;
        put32(&u, 10 + 12 + 4, 2); /* GPS pointer with two values */
        expect_corrupt(u.b, u.len);

        /* The next-IFD link missing (block cut right after the entries) or
         * pointing outside. */
        expect_corrupt(t.b, 10 + 12 * 2 + 2);
        u = t;
        put32(&u, 10 + 12 * 2, 0xFFFFFF00u);
        expect_corrupt(u.b, u.len);
    }
}

static void test_loops(void)
{
    for (int big = 0; big <= 1; big++) {
        /* GPS IFD pointer back at IFD0. */
        entry e[] = {{0x0112, 3, 1, 2}, {0x8825, 4, 1, 8}};
        tiff_buf t;
        build(&t, big, e, 2, 0, 0);
        expect_corrupt(t.b, t.len);
        /* IFD0's next link pointing at itself. */
        entry f[] = {{0x0112, 3, 1, 2}};
        build(&t, big, f, 1, 8, 0);
        expect_corrupt(t.b, t.len);
        /* A forward link to a real place is fine (IFD1 is not read). */
        build(&t, big, f, 1, (uint32_t)gps_ifd_offset(1), 1);
        tm_exif_summary s;
        CU_ASSERT_EQUAL(parse(t.b, t.len, &s), TM_OK);
        CU_ASSERT_EQUAL(s.orientation, 2);
    }
}

/* Every prefix of a valid block is either refused or parsed in bounds. */
static void test_every_truncation(void)
{
    entry e[] = {{0x010F, 2, 4, 0}, {0x0112, 3, 1, 5}, {0x8825, 4, 1, (uint32_t)gps_ifd_offset(3)}};
    tiff_buf t;
    build(&t, 1, e, 3, 0, 1);
    tm_exif_summary s;
    CU_ASSERT_EQUAL(parse(t.b, t.len, &s), TM_OK);
    CU_ASSERT_EQUAL(s.orientation, 5);
    CU_ASSERT_EQUAL(s.has_gps, 1);
    for (size_t len = 0; len < t.len; len++) expect_corrupt(t.b, len);
}

/* xorshift32 for the mutation loop; the seed is fixed and printed on failure. */
static uint32_t xs(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static void test_mutations(void)
{
    entry e[] = {{0x010F, 2, 4, 0}, {0x0112, 3, 1, 7}, {0x8825, 4, 1, (uint32_t)gps_ifd_offset(3)}};
    uint32_t seed = 0x5EED1234u;
    int ok = 0, corrupt = 0, bad = 0;
    for (int i = 0; i < 20000; i++) {
        tiff_buf t;
        build(&t, i & 1, e, 3, 0, 1);
        int flips = 1 + (int)(xs(&seed) % 4);
        for (int k = 0; k < flips; k++) t.b[xs(&seed) % t.len] = (uint8_t)xs(&seed);
        size_t len = xs(&seed) % 8 == 0 ? xs(&seed) % (t.len + 1) : t.len;
        tm_exif_summary s;
        tm_status st = parse(t.b, len, &s);
        if (st == TM_OK) ok++;
        else if (st == TM_ERR_CORRUPT) corrupt++;
        if ((st != TM_OK && st != TM_ERR_CORRUPT) || s.orientation < 1 || s.orientation > 8 ||
            (s.has_gps != 0 && s.has_gps != 1))
            bad++;
    }
    if (bad) fprintf(stderr, "mutation seed 0x5EED1234: %d bad results\n", bad);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_TRUE(ok > 0);      /* both outcomes were exercised */
    CU_ASSERT_TRUE(corrupt > 0);
}

static CU_TestInfo tests[] = {
    {"orientation 1..8, II and MM", test_orientation_both_orders},
    {"invalid orientation values read as 1", test_orientation_invalid_values},
    {"GPS IFD pointer", test_gps_pointer},
    {"bad byte order, magic, short blocks", test_bad_header},
    {"offsets past the end, huge counts", test_bad_offsets_and_counts},
    {"IFD loops", test_loops},
    {"every truncation refused", test_every_truncation},
    {"random mutations stay in bounds", test_mutations},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tm_test_main("exif", tests);
}
