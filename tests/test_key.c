/* test_key.c -- the key file and the keyed primitives.
 *
 * The expected vectors were computed independently with the openssl command
 * line (key = bytes 00..1f):
 *   printf 'LABEL\000CTX' | openssl dgst -sha256 -mac HMAC -macopt hexkey:KEY
 *   head -c N /dev/zero | openssl enc -aes-256-ctr -K SUBKEY -iv 00..00
 * so they check this implementation against another one, not against itself. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const uint8_t key_bytes[TM_KEY_BYTES] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
    0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15,
    0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f};

static void unhex(const char *h, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        CU_ASSERT_FATAL(sscanf(h + 2 * i, "%2x", &v) == 1);
        out[i] = (uint8_t)v;
    }
}

static tm_key *fixed_key(void)
{
    tm_key *k = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_key_from_bytes(key_bytes, &k), TM_OK);
    return k;
}

static void check_stream(const char *label, const void *ctx, size_t ctx_len, const char *hex)
{
    tm_key *k = fixed_key();
    uint8_t want[48], got[48];
    unhex(hex, want, sizeof want);
    CU_ASSERT_EQUAL(tm_key_stream(k, label, ctx, ctx_len, got, sizeof got), TM_OK);
    if (memcmp(want, got, sizeof got) != 0) {
        fprintf(stderr, "stream mismatch for label '%s'\n", label);
        CU_FAIL("keystream differs from the openssl reference");
    }
    tm_key_free(k);
}

static void test_stream_vectors(void)
{
    check_stream("tracemark test", "abc", 3,
                 "135a5feda7e1a062508df5c8a4d03a21d6efeb62bc963143"
                 "beb63396ab698065dc38e4890f2cd7b3279d64dcac5a05fe");
    static const uint8_t c4[4] = {1, 2, 3, 4};
    check_stream("codeword", c4, 4,
                 "922a877e1ec35e11f3b670726c65f21af06d89fb77e9f6b9"
                 "6978ff837f67f0462139e78aa9d4399a3de230e9386d0574");
    check_stream("x", NULL, 0,
                 "4727629ebfbe1aa9ee8b7f4d0715db942a5263bd4ed97aaf"
                 "f1a1446da83884f317fee9ec7f9030d5abb51f8ee0868651");
    check_stream("tracemark test", "abd", 3,
                 "957667a9bb82d1ac36a93d8910d3e78ce79c0a0c1d2be784"
                 "92ad5916ae43a12385c4f08c1776554385beec5fc13a880d");
}

/* A long stream (not a multiple of the AES block) against its openssl digest. */
static void test_stream_long(void)
{
    tm_key *k = fixed_key();
    size_t n = 1000003;
    uint8_t *buf = malloc(n), digest[32], want[32];
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    CU_ASSERT_EQUAL(tm_key_stream(k, "tracemark test", "abc", 3, buf, n), TM_OK);
    CU_ASSERT_EQUAL(tm_sha256(buf, n, digest), TM_OK);
    unhex("9ee608a77d6175bc19f4b3ad40ddd073674f926e2168b0dc7a3a9e815d91ff8c", want, 32);
    CU_ASSERT(memcmp(digest, want, 32) == 0);
    free(buf);
    tm_key_free(k);
}

static void test_hmac_and_fingerprint(void)
{
    tm_key *k = fixed_key();
    uint8_t mac[32], want[32];
    CU_ASSERT_EQUAL(tm_key_hmac(k, "registry row", "hello", 5, mac), TM_OK);
    unhex("21069a2f4e8a29b01fef76f5cffeb6927acefcf194a3c3da51ece96c36b4596d", want, 32);
    CU_ASSERT(memcmp(mac, want, 32) == 0);
    char fp[17];
    CU_ASSERT_EQUAL(tm_key_fingerprint(k, fp), TM_OK);
    CU_ASSERT_STRING_EQUAL(fp, "495833a2b1579b5d");
    tm_key_free(k);
}

static void test_sha256(void)
{
    uint8_t d[32], want[32];
    CU_ASSERT_EQUAL(tm_sha256("abc", 3, d), TM_OK);
    unhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", want, 32);
    CU_ASSERT(memcmp(d, want, 32) == 0);
    CU_ASSERT_EQUAL(tm_sha256(NULL, 0, d), TM_OK);
    CU_ASSERT_EQUAL(tm_sha256(NULL, 1, d), TM_ERR_ARG);
}

static void test_stream_separation(void)
{
    tm_key *k = fixed_key();
    uint8_t a[64], b[64], c[64], d[64];
    CU_ASSERT_EQUAL(tm_key_stream(k, "pattern", "img1", 4, a, 64), TM_OK);
    CU_ASSERT_EQUAL(tm_key_stream(k, "pattern", "img2", 4, b, 64), TM_OK);
    CU_ASSERT_EQUAL(tm_key_stream(k, "patterm", "img1", 4, c, 64), TM_OK);
    /* The separator makes ("ab", "c") and ("a", "bc") different inputs. */
    CU_ASSERT_EQUAL(tm_key_stream(k, "patter", "nimg1", 5, d, 64), TM_OK);
    CU_ASSERT(memcmp(a, b, 64) != 0);
    CU_ASSERT(memcmp(a, c, 64) != 0);
    CU_ASSERT(memcmp(a, d, 64) != 0);

    uint8_t other_bytes[TM_KEY_BYTES];
    memcpy(other_bytes, key_bytes, sizeof other_bytes);
    other_bytes[31] ^= 1;
    tm_key *k2 = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_key_from_bytes(other_bytes, &k2), TM_OK);
    CU_ASSERT_EQUAL(tm_key_stream(k2, "pattern", "img1", 4, b, 64), TM_OK);
    CU_ASSERT(memcmp(a, b, 64) != 0);
    tm_key_free(k2);
    tm_key_free(k);
}

static void test_stream_prefix(void)
{
    tm_key *k = fixed_key();
    uint8_t lng[1000], shrt[1000];
    CU_ASSERT_EQUAL(tm_key_stream(k, "prefix", "c", 1, lng, sizeof lng), TM_OK);
    size_t lens[] = {0, 1, 15, 16, 17, 31, 500, 999};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        memset(shrt, 0xaa, sizeof shrt);
        CU_ASSERT_EQUAL(tm_key_stream(k, "prefix", "c", 1, shrt, lens[i]), TM_OK);
        CU_ASSERT(memcmp(lng, shrt, lens[i]) == 0);
        if (lens[i] < sizeof shrt) CU_ASSERT_EQUAL(shrt[lens[i]], 0xaa);
    }
    /* Deterministic: the same request twice gives the same bytes. */
    CU_ASSERT_EQUAL(tm_key_stream(k, "prefix", "c", 1, shrt, sizeof shrt), TM_OK);
    CU_ASSERT(memcmp(lng, shrt, sizeof lng) == 0);
    tm_key_free(k);
}

static void test_generate_and_load(void)
{
    const char *path = tm_test_path("gen.key");
    CU_ASSERT_EQUAL_FATAL(tm_key_generate(path), TM_OK);
    struct stat sb;
    CU_ASSERT_EQUAL_FATAL(stat(path, &sb), 0);
    CU_ASSERT_EQUAL(sb.st_mode & 0777, 0600);
    CU_ASSERT_EQUAL(sb.st_size, 17 + 64 + 1);

    size_t len;
    uint8_t *before = tm_test_slurp(path, &len);
    CU_ASSERT_EQUAL(tm_key_generate(path), TM_ERR_EXISTS);
    size_t len2;
    uint8_t *after = tm_test_slurp(path, &len2);
    CU_ASSERT(len == len2 && memcmp(before, after, len) == 0);

    tm_key *k = NULL;
    CU_ASSERT_EQUAL(tm_key_load(path, &k), TM_OK);
    CU_ASSERT_PTR_NOT_NULL(k);
    char fp1[17], fp2[17];
    CU_ASSERT_EQUAL(tm_key_fingerprint(k, fp1), TM_OK);
    CU_ASSERT_EQUAL(strlen(fp1), 16);
    tm_key_free(k);

    /* Two generated keys differ. */
    const char *path2 = tm_test_path("gen2.key");
    CU_ASSERT_EQUAL_FATAL(tm_key_generate(path2), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_key_load(path2, &k), TM_OK);
    CU_ASSERT_EQUAL(tm_key_fingerprint(k, fp2), TM_OK);
    CU_ASSERT_STRING_NOT_EQUAL(fp1, fp2);
    tm_key_free(k);
    free(before);
    free(after);
}

static void test_load_fixed_file(void)
{
    const char *path = tm_test_path("fixed.key");
    const char *text = "tracemark-key-v1\n000102030405060708090A0B0C0D0E0F"
                       "101112131415161718191a1b1c1d1e1f\n";
    tm_test_spit(path, text, strlen(text));
    CU_ASSERT_EQUAL_FATAL(chmod(path, 0600), 0);
    tm_key *k = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_key_load(path, &k), TM_OK);
    char fp[17];
    CU_ASSERT_EQUAL(tm_key_fingerprint(k, fp), TM_OK);
    CU_ASSERT_STRING_EQUAL(fp, "495833a2b1579b5d");
    tm_key_free(k);
}

/* A key made from bytes saves to the same file text as the hand-written
 * one above, mode 0600, and never over an existing file. */
static void test_save(void)
{
    uint8_t raw[TM_KEY_BYTES];
    for (int i = 0; i < TM_KEY_BYTES; i++) raw[i] = (uint8_t)i;
    tm_key *k = NULL, *back = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_key_from_bytes(raw, &k), TM_OK);
    const char *path = tm_test_path("saved.key");
    CU_ASSERT_EQUAL_FATAL(tm_key_save(k, path), TM_OK);
    struct stat sb;
    CU_ASSERT_EQUAL_FATAL(stat(path, &sb), 0);
    CU_ASSERT_EQUAL(sb.st_mode & 0777, 0600);
    size_t len;
    char *text = (char *)tm_test_slurp(path, &len);
    const char *want = "tracemark-key-v1\n000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
    CU_ASSERT(len == strlen(want) && memcmp(text, want, len) == 0);
    free(text);
    CU_ASSERT_EQUAL(tm_key_save(k, path), TM_ERR_EXISTS);
    CU_ASSERT_EQUAL_FATAL(tm_key_load(path, &back), TM_OK);
    char fp[17];
    CU_ASSERT_EQUAL(tm_key_fingerprint(back, fp), TM_OK);
    CU_ASSERT_STRING_EQUAL(fp, "495833a2b1579b5d");
    CU_ASSERT_EQUAL(tm_key_save(NULL, path), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_key_save(k, ""), TM_ERR_ARG);
    tm_key_free(k);
    tm_key_free(back);
}

static void test_load_perms(void)
{
    const char *path = tm_test_path("perm.key");
    CU_ASSERT_EQUAL_FATAL(tm_key_generate(path), TM_OK);
    tm_key *k = NULL;
    static const int bad_modes[] = {0644, 0640, 0604, 0610, 0602};
    for (size_t i = 0; i < sizeof bad_modes / sizeof bad_modes[0]; i++) {
        CU_ASSERT_EQUAL_FATAL(chmod(path, (mode_t)bad_modes[i]), 0);
        CU_ASSERT_EQUAL(tm_key_load(path, &k), TM_ERR_KEY_PERMS);
        CU_ASSERT_PTR_NULL(k);
    }
    CU_ASSERT_EQUAL_FATAL(chmod(path, 0400), 0);
    CU_ASSERT_EQUAL(tm_key_load(path, &k), TM_OK);
    tm_key_free(k);
}

static void test_load_malformed(void)
{
    static const char *bad[] = {
        "",
        "tracemark-key-v1\n",
        "tracemark-key-v2\n000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
        "tracemark-key-v1\n000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e\n",
        "tracemark-key-v1\n000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f00\n",
        "tracemark-key-v1\n000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1g\n",
        "tracemark-key-v1\n000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\nextra\n",
        "tracemark-key-v1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
    };
    const char *path = tm_test_path("bad.key");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tm_test_spit(path, bad[i], strlen(bad[i]));
        CU_ASSERT_EQUAL_FATAL(chmod(path, 0600), 0);
        tm_key *k = NULL;
        tm_status st = tm_key_load(path, &k);
        if (st != TM_ERR_KEY) fprintf(stderr, "malformed key %zu gave status %d\n", i, (int)st);
        CU_ASSERT_EQUAL(st, TM_ERR_KEY);
        CU_ASSERT_PTR_NULL(k);
    }
    /* A large file is refused without being read whole. */
    char big[4096];
    memset(big, 'a', sizeof big);
    tm_test_spit(path, big, sizeof big);
    CU_ASSERT_EQUAL_FATAL(chmod(path, 0600), 0);
    tm_key *k = NULL;
    CU_ASSERT_EQUAL(tm_key_load(path, &k), TM_ERR_KEY);

    tm_status st = tm_key_load(tm_test_path("no-such.key"), &k);
    CU_ASSERT(st == TM_ERR_KEY || st == TM_ERR_IO);
    CU_ASSERT_EQUAL(tm_key_load(tm_test_tmpdir(), &k), TM_ERR_KEY);
}

static void test_bad_args(void)
{
    tm_key *k = fixed_key();
    uint8_t buf[8], mac[32];
    CU_ASSERT_EQUAL(tm_key_stream(NULL, "a", NULL, 0, buf, 8), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_key_stream(k, NULL, NULL, 0, buf, 8), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_key_stream(k, "a", NULL, 3, buf, 8), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_key_stream(k, "a", NULL, 0, NULL, 8), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_key_stream(k, "a", NULL, 0, NULL, 0), TM_OK);
    CU_ASSERT_EQUAL(tm_key_hmac(k, NULL, "", 0, mac), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_key_generate(tm_test_path("no-dir/x.key")), TM_ERR_IO);
    CU_ASSERT_EQUAL(tm_key_generate(""), TM_ERR_ARG);
    tm_key_free(k);
    tm_key_free(NULL);
}

static CU_TestInfo tests[] = {
    {"stream matches openssl vectors", test_stream_vectors},
    {"long stream matches openssl digest", test_stream_long},
    {"hmac and fingerprint vectors", test_hmac_and_fingerprint},
    {"sha256 vector", test_sha256},
    {"streams differ by label, context and key", test_stream_separation},
    {"stream prefix property", test_stream_prefix},
    {"generate 0600, never overwrite, load", test_generate_and_load},
    {"load a hand-written key file", test_load_fixed_file},
    {"save a key made from bytes", test_save},
    {"load refuses group/other permissions", test_load_perms},
    {"load rejects malformed files", test_load_malformed},
    {"argument checks", test_bad_args},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tm_test_main("key", tests);
}
