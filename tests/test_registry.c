/* test_registry.c -- the recipient registry: round trips, replacement of a
 * recipient's copy, tamper evidence (rows edited behind the library's back
 * with raw SQLite), key binding, refusal of files that are not registries,
 * two processes writing at once, loading a large registry, merging shards
 * (conflicts and untrusted shards refused, the destination unchanged to the
 * byte) and snapshots. */
#include "testutil.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const uint8_t key_a[TM_KEY_BYTES] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                            17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static const char *image1 = "00112233445566778899aabbccddeeff";
static const char *image2 = "ffeeddccbbaa99887766554433221100";

static tm_key *make_key(int variant)
{
    uint8_t b[TM_KEY_BYTES];
    memcpy(b, key_a, sizeof b);
    b[0] ^= (uint8_t)variant;
    tm_key *k = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_key_from_bytes(b, &k), TM_OK);
    return k;
}

/* Deterministic codeword bytes for (copy index, length). */
static void fill_codeword(uint8_t *cw, uint32_t bits, uint32_t seed)
{
    uint32_t s = seed * 2654435761u + 7u;
    size_t n = (bits + 7) / 8;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        cw[i] = (uint8_t)s;
    }
    if (bits % 8) cw[n - 1] &= (uint8_t)((1u << (bits % 8)) - 1);
}

static tm_registry *open_reg(const char *path, int create)
{
    tm_registry *reg = NULL;
    tm_status st = tm_registry_open(path, create, &reg);
    if (st != TM_OK) fprintf(stderr, "open %s: %s (%s)\n", path, tm_strerror(st), tm_registry_errmsg(reg));
    CU_ASSERT_EQUAL_FATAL(st, TM_OK);
    return reg;
}

static void put_image(tm_registry *reg, const char *id, int w)
{
    tm_reg_image img;
    memset(&img, 0, sizeof img);
    snprintf(img.image_id, sizeof img.image_id, "%s", id);
    for (int i = 0; i < 32; i++) img.content_sha256[i] = (uint8_t)(i * 7 + w);
    img.width = w;
    img.height = 480;
    img.original_path = (char *)"in/photo.jpg";
    img.phash = 0xfedcba9876543210ull;
    img.params = (char *)"{\"strength\":1.0,\"m\":512}";
    img.created = 1700000000;
    CU_ASSERT_EQUAL_FATAL(tm_registry_put_image(reg, &img), TM_OK);
}

static int64_t put_copy(tm_registry *reg, const tm_key *key, const char *image, const char *recipient,
                        const char *out_path, uint32_t bits, uint32_t seed)
{
    uint8_t cw[2048];
    fill_codeword(cw, bits, seed);
    tm_reg_copy c;
    memset(&c, 0, sizeof c);
    c.image_id = image;
    c.recipient = recipient;
    c.out_path = out_path;
    for (int i = 0; i < 32; i++) c.out_sha256[i] = (uint8_t)(seed + i);
    c.created = 1700000100 + seed;
    c.code_len = bits;
    c.codeword = cw;
    int64_t id = -1;
    tm_status st = tm_registry_put_copy(reg, key, &c, &id);
    if (st != TM_OK) fprintf(stderr, "put_copy: %s (%s)\n", tm_strerror(st), tm_registry_errmsg(reg));
    CU_ASSERT_EQUAL(st, TM_OK);
    return id;
}

static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) fprintf(stderr, "raw sql failed: %s\n", err ? err : "?");
    CU_ASSERT_EQUAL(rc, SQLITE_OK);
    sqlite3_free(err);
    sqlite3_close(db);
}

/* A registry with image1 (copies to alice, bob, carol) and image2 (dave). */
static void make_sample(const char *path, const tm_key *key)
{
    tm_registry *reg = open_reg(path, 1);
    CU_ASSERT_EQUAL(tm_registry_check_key(reg, key), TM_OK);
    put_image(reg, image1, 640);
    put_image(reg, image2, 800);
    CU_ASSERT_EQUAL(tm_registry_begin(reg), TM_OK);
    put_copy(reg, key, image1, "alice@example.com", "out/alice.jpg", 512, 1);
    put_copy(reg, key, image1, "bob@example.com", "out/bob.jpg", 13, 2);
    put_copy(reg, key, image1, "carol", "out/carol.png", 1, 3);
    CU_ASSERT_EQUAL(tm_registry_commit(reg), TM_OK);
    put_copy(reg, key, image2, "dave", "", 8, 4);
    tm_registry_free(reg);
}

struct bad_rows {
    int64_t ids[16];
    char why[16][400];
    size_t n;
};

static void collect_bad(void *ud, int64_t copy_id, const char *why)
{
    struct bad_rows *b = ud;
    if (b->n < 16) {
        b->ids[b->n] = copy_id;
        snprintf(b->why[b->n], sizeof b->why[0], "%s", why);
    }
    b->n++;
}

static int count_images(void *ud, const tm_reg_image *img, uint64_t n_copies)
{
    int *seen = ud;
    if (!strcmp(img->image_id, image1)) {
        CU_ASSERT_EQUAL(n_copies, 3);
        CU_ASSERT_STRING_EQUAL(img->params, "{\"strength\":1.0,\"m\":512}");
    } else {
        CU_ASSERT_STRING_EQUAL(img->image_id, image2);
        CU_ASSERT_EQUAL(n_copies, 1);
    }
    (*seen)++;
    return 0;
}

static void test_round_trip(void)
{
    const char *path = tm_test_path("rt.reg");
    tm_key *key = make_key(0);
    make_sample(path, key);

    tm_registry *reg = open_reg(path, 0);
    CU_ASSERT_EQUAL(tm_registry_check_key(reg, key), TM_OK);
    tm_reg_image img;
    CU_ASSERT_EQUAL_FATAL(tm_registry_get_image(reg, image1, &img), TM_OK);
    CU_ASSERT_STRING_EQUAL(img.image_id, image1);
    CU_ASSERT_EQUAL(img.width, 640);
    CU_ASSERT_EQUAL(img.height, 480);
    CU_ASSERT_STRING_EQUAL(img.original_path, "in/photo.jpg");
    CU_ASSERT_EQUAL(img.phash, 0xfedcba9876543210ull);
    CU_ASSERT_EQUAL(img.created, 1700000000);
    CU_ASSERT_EQUAL(img.content_sha256[1], 7 + 640 % 256);
    uint8_t sha[32];
    memcpy(sha, img.content_sha256, 32);
    tm_reg_image_clear(&img);
    CU_ASSERT_PTR_NULL(img.params);

    CU_ASSERT_EQUAL(tm_registry_find_image_by_sha256(reg, sha, &img), TM_OK);
    CU_ASSERT_STRING_EQUAL(img.image_id, image1);
    tm_reg_image_clear(&img);
    sha[0] ^= 1;
    CU_ASSERT_EQUAL(tm_registry_find_image_by_sha256(reg, sha, &img), TM_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(tm_registry_get_image(reg, "0123456789abcdef0123456789abcdef", &img), TM_ERR_NOT_FOUND);

    /* Putting the same image again keeps the first row. */
    tm_reg_image again;
    memset(&again, 0, sizeof again);
    snprintf(again.image_id, sizeof again.image_id, "%s", image1);
    again.width = again.height = 1;
    again.params = (char *)"{}";
    CU_ASSERT_EQUAL(tm_registry_put_image(reg, &again), TM_OK);
    CU_ASSERT_EQUAL(tm_registry_get_image(reg, image1, &img), TM_OK);
    CU_ASSERT_EQUAL(img.width, 640);
    tm_reg_image_clear(&img);

    int seen = 0;
    CU_ASSERT_EQUAL(tm_registry_list_images(reg, count_images, &seen), TM_OK);
    CU_ASSERT_EQUAL(seen, 2);

    tm_reg_copy *arr = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(tm_registry_load_copies(reg, NULL, &arr, &n), TM_OK);
    CU_ASSERT_EQUAL_FATAL(n, 4);
    static const uint32_t bits[] = {512, 13, 1, 8};
    static const char *who[] = {"alice@example.com", "bob@example.com", "carol", "dave"};
    for (size_t i = 0; i < n; i++) {
        uint8_t want[64];
        fill_codeword(want, bits[i], (uint32_t)i + 1);
        CU_ASSERT_EQUAL(arr[i].code_len, bits[i]);
        CU_ASSERT(memcmp(arr[i].codeword, want, (bits[i] + 7) / 8) == 0);
        CU_ASSERT_STRING_EQUAL(arr[i].recipient, who[i]);
        CU_ASSERT_STRING_EQUAL(arr[i].image_id, i < 3 ? image1 : image2);
        CU_ASSERT_EQUAL(arr[i].created, 1700000100 + (int64_t)i + 1);
        CU_ASSERT_EQUAL(arr[i].out_sha256[5], (uint8_t)(i + 1 + 5));
        CU_ASSERT_EQUAL(tm_reg_copy_check(key, &arr[i]), TM_OK);
        if (i) CU_ASSERT(arr[i].copy_id > arr[i - 1].copy_id);
    }
    CU_ASSERT_STRING_EQUAL(arr[0].out_path, "out/alice.jpg");
    CU_ASSERT_STRING_EQUAL(arr[3].out_path, "");
    int64_t bob_id = arr[1].copy_id;
    /* A changed field no longer matches the tag. */
    arr[1].created++;
    CU_ASSERT_EQUAL(tm_reg_copy_check(key, &arr[1]), TM_ERR_TAMPERED);
    tm_reg_copies_free(arr, n);

    CU_ASSERT_EQUAL(tm_registry_load_copies(reg, image2, &arr, &n), TM_OK);
    CU_ASSERT_EQUAL(n, 1);
    tm_reg_copies_free(arr, n);
    CU_ASSERT_EQUAL(tm_registry_load_copies(reg, "0123456789abcdef0123456789abcdef", &arr, &n), TM_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_PTR_NULL(arr);
    CU_ASSERT_EQUAL(tm_registry_load_copies_by_recipient(reg, "carol", &arr, &n), TM_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(arr[0].code_len, 1);
    tm_reg_copies_free(arr, n);
    CU_ASSERT_EQUAL_FATAL(tm_registry_get_copy(reg, bob_id, &arr), TM_OK);
    CU_ASSERT_STRING_EQUAL(arr[0].recipient, "bob@example.com");
    tm_reg_copies_free(arr, 1);
    CU_ASSERT_EQUAL(tm_registry_get_copy(reg, 999, &arr), TM_ERR_NOT_FOUND);

    uint64_t cnt = 0;
    CU_ASSERT_EQUAL(tm_registry_count_copies(reg, NULL, &cnt), TM_OK);
    CU_ASSERT_EQUAL(cnt, 4);
    CU_ASSERT_EQUAL(tm_registry_count_copies(reg, image1, &cnt), TM_OK);
    CU_ASSERT_EQUAL(cnt, 3);

    size_t nbad = 99;
    CU_ASSERT_EQUAL(tm_registry_verify(reg, key, NULL, NULL, &nbad), TM_OK);
    CU_ASSERT_EQUAL(nbad, 0);
    tm_registry_free(reg);
    tm_key_free(key);
}

static void test_same_recipient_replaces(void)
{
    const char *path = tm_test_path("replace.reg");
    tm_key *key = make_key(0);
    make_sample(path, key);
    tm_registry *reg = open_reg(path, 0);
    tm_reg_copy *arr = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(tm_registry_load_copies_by_recipient(reg, "bob@example.com", &arr, &n), TM_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    int64_t first = arr[0].copy_id;
    tm_reg_copies_free(arr, n);

    int64_t again = put_copy(reg, key, image1, "bob@example.com", "out/bob-v2.jpg", 13, 2);
    CU_ASSERT_EQUAL(again, first);
    CU_ASSERT_EQUAL(tm_registry_load_copies_by_recipient(reg, "bob@example.com", &arr, &n), TM_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(arr[0].out_path, "out/bob-v2.jpg");
    tm_reg_copies_free(arr, n);
    /* The same recipient of another image is another copy. */
    put_copy(reg, key, image2, "bob@example.com", "out/bob2.jpg", 13, 5);
    uint64_t cnt;
    CU_ASSERT_EQUAL(tm_registry_count_copies(reg, NULL, &cnt), TM_OK);
    CU_ASSERT_EQUAL(cnt, 5);
    CU_ASSERT_EQUAL(tm_registry_verify(reg, key, NULL, NULL, NULL), TM_OK);
    tm_registry_free(reg);
    tm_key_free(key);
}

static tm_status verify_quiet(const char *path, const tm_key *key)
{
    tm_registry *reg = open_reg(path, 0);
    tm_status st = tm_registry_verify(reg, key, NULL, NULL, NULL);
    tm_registry_free(reg);
    return st;
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(in);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    char buf[8192];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, in)) > 0) CU_ASSERT_EQUAL(fwrite(buf, 1, k, out), k);
    fclose(in);
    CU_ASSERT_EQUAL(fclose(out), 0);
}

/* verify of path under key: want_n findings, want_id (0: one about an
 * image or the journal) among them with a reason holding want_reason. */
static void expect_finding(const char *path, const tm_key *key, size_t want_n, int64_t want_id,
                           const char *want_reason)
{
    tm_registry *reg = open_reg(path, 0);
    struct bad_rows b;
    memset(&b, 0, sizeof b);
    size_t nbad = 0;
    CU_ASSERT_EQUAL(tm_registry_verify(reg, key, collect_bad, &b, &nbad), TM_ERR_TAMPERED);
    CU_ASSERT_EQUAL(nbad, want_n);
    CU_ASSERT_EQUAL(b.n, want_n);
    int seen = 0;
    for (size_t i = 0; i < b.n && i < 16; i++) seen |= b.ids[i] == want_id && strstr(b.why[i], want_reason);
    if (!seen || b.n != want_n) {
        fprintf(stderr, "%s: no finding %lld '%s' among:\n", path, (long long)want_id, want_reason);
        for (size_t i = 0; i < b.n && i < 16; i++) fprintf(stderr, "  %lld: %s\n", (long long)b.ids[i], b.why[i]);
        CU_FAIL("finding missing");
    }
    char msg[64];
    snprintf(msg, sizeof msg, "%zu finding%s failed", want_n, want_n == 1 ? "" : "s");
    CU_ASSERT_PTR_NOT_NULL(strstr(tm_registry_errmsg(reg), msg));
    tm_registry_free(reg);
}

/* Applies sql to a fresh sample registry and expects verify to find it. */
static void expect_tampered(const char *name, const char *sql, size_t want_n, int64_t want_id,
                            const char *want_reason)
{
    const char *path = tm_test_path(name);
    tm_key *key = make_key(0);
    make_sample(path, key);
    raw_exec(path, sql);
    expect_finding(path, key, want_n, want_id, want_reason);
    tm_key_free(key);
}

static void test_tamper_detected(void)
{
    expect_tampered("t1.reg", "UPDATE copies SET recipient = 'mallory' WHERE copy_id = 2", 1, 2, "tag");
    expect_tampered("t2.reg", "UPDATE copies SET codeword = x'ff' || substr(codeword, 2) WHERE copy_id = 1", 1, 1,
                    "tag");
    expect_tampered("t3.reg", "UPDATE copies SET code_len = 600 WHERE copy_id = 1", 1, 1, "code_len 600");
    expect_tampered("t3b.reg", "UPDATE copies SET code_len = 9223372036854775807 WHERE copy_id = 1", 1, 1,
                    "impossible code length");
    expect_tampered("t4.reg", "UPDATE copies SET out_path = 'elsewhere.jpg' WHERE copy_id = 4", 1, 4, "tag");
    expect_tampered("t5.reg", "PRAGMA foreign_keys = OFF; DELETE FROM images WHERE image_id = '"
                    "ffeeddccbbaa99887766554433221100'", 2, 4, "no image row");
    expect_tampered("t6.reg", "UPDATE copies SET tag = x'00' WHERE copy_id = 3", 1, 3, "tag");
    /* A row moved to another image keeps its fields but not its tag. */
    expect_tampered("t7.reg", "UPDATE copies SET image_id = 'ffeeddccbbaa99887766554433221100' WHERE copy_id = 3",
                    1, 3, "tag");
    /* Image rows are tagged too: the original's path, as an example. */
    expect_tampered("t8.reg", "UPDATE images SET original_path = '/tmp/other.jpg'", 2, 0, "image ");
}

/* What the journal sees that row tags alone cannot: rows deleted, put back
 * under another id, swapped, restored to an earlier version; entries
 * removed from the journal, in the middle or at the end. */
static void test_journal(void)
{
    tm_key *key = make_key(0);
    const char *path = tm_test_path("j0.reg");
    make_sample(path, key);
    tm_registry *reg = open_reg(path, 0);
    uint64_t entries = 0;
    char head[17], head2[17];
    CU_ASSERT_EQUAL(tm_registry_journal(reg, key, &entries, head), TM_OK);
    CU_ASSERT_EQUAL(entries, 6); /* 2 images, 4 copies */
    CU_ASSERT_EQUAL(strlen(head), 16);
    tm_reg_copy *arr = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(tm_registry_load_copies(reg, NULL, &arr, &n), TM_OK);
    CU_ASSERT_EQUAL_FATAL(n, 4);
    for (size_t i = 0; i < n; i++) CU_ASSERT_EQUAL(tm_registry_check_copy(reg, key, &arr[i]), TM_OK);
    tm_reg_copies_free(arr, n);
    tm_registry_free(reg);

    expect_tampered("j1.reg", "DELETE FROM copies WHERE copy_id = 2", 1, 2, "deleted");
    expect_tampered("j2.reg",
                    "CREATE TEMP TABLE c AS SELECT * FROM copies WHERE copy_id = 2; DELETE FROM copies WHERE"
                    " copy_id = 2; UPDATE c SET copy_id = 9; INSERT INTO copies SELECT * FROM c",
                    2, 9, "not in the journal");
    expect_tampered("j3.reg",
                    "UPDATE copies SET copy_id = 99 WHERE copy_id = 1; UPDATE copies SET copy_id = 1 WHERE copy_id"
                    " = 2; UPDATE copies SET copy_id = 2 WHERE copy_id = 99",
                    2, 2, "not the version");
    expect_tampered("j4.reg", "DELETE FROM journal WHERE seq = 3", 2, 0, "journal entries 3 to 3 are missing");
    expect_tampered("j5.reg", "DELETE FROM copies WHERE copy_id = 4; DELETE FROM journal WHERE seq = 6", 1, 0,
                    "head does not match");
    expect_tampered("j6.reg", "UPDATE journal SET ref = '3' WHERE seq = 4", 2, 0, "does not follow");

    /* A copy replaced, then its earlier row put back. */
    path = tm_test_path("j7.reg");
    make_sample(path, key);
    raw_exec(path, "CREATE TABLE old AS SELECT * FROM copies WHERE copy_id = 1");
    reg = open_reg(path, 0);
    CU_ASSERT_EQUAL(tm_registry_check_key(reg, key), TM_OK);
    put_copy(reg, key, image1, "alice@example.com", "out/alice2.jpg", 512, 5);
    CU_ASSERT_EQUAL(tm_registry_journal(reg, key, &entries, head2), TM_OK);
    CU_ASSERT_EQUAL(entries, 7);
    CU_ASSERT(strcmp(head, head2) != 0);
    tm_registry_free(reg);
    CU_ASSERT_EQUAL(verify_quiet(path, key), TM_OK);
    raw_exec(path, "DELETE FROM copies WHERE copy_id = 1; INSERT INTO copies SELECT * FROM old; DROP TABLE old");
    expect_finding(path, key, 1, 1, "not the version");
    reg = open_reg(path, 0);
    CU_ASSERT_EQUAL_FATAL(tm_registry_get_copy(reg, 1, &arr), TM_OK);
    CU_ASSERT_EQUAL(tm_reg_copy_check(key, arr), TM_OK); /* its own tag still holds */
    CU_ASSERT_EQUAL(tm_registry_check_copy(reg, key, arr), TM_ERR_TAMPERED);
    CU_ASSERT_PTR_NOT_NULL(strstr(tm_registry_errmsg(reg), "not the version"));
    tm_reg_copies_free(arr, 1);
    tm_registry_free(reg);

    /* The head moved back to an earlier value is caught (it is an HMAC of
     * the last entry, not a copy of it). */
    path = tm_test_path("j8.reg");
    make_sample(path, key);
    raw_exec(path, "DELETE FROM copies WHERE copy_id = 4; DELETE FROM journal WHERE seq = 6;"
                   " UPDATE meta SET value = '5:' || hex(randomblob(32)) WHERE name = 'journal_head'");
    expect_finding(path, key, 1, 0, "head does not match");
    reg = open_reg(path, 0);
    CU_ASSERT_EQUAL(tm_registry_journal(reg, key, &entries, head), TM_ERR_TAMPERED);
    tm_registry_free(reg);
    tm_key_free(key);
}

/* A registry written by schema 1 (tests/data/registry/v1.db: image1 with
 * copies to alice, bob and carol under key_a) is read as it is, and brought
 * to schema 2 when bound to its key: journaled, its images tagged. */
static void test_schema1_upgrade(void)
{
    tm_key *key = make_key(0);
    const char *path = tm_test_path("v1.reg");
    char src[4096];
    snprintf(src, sizeof src, "%s/tests/data/registry/v1.db", TM_SRCDIR);
    copy_file(src, path);
    tm_registry *reg = open_reg(path, 0);
    uint64_t entries = 9;
    char head[17];
    CU_ASSERT_EQUAL(tm_registry_journal(reg, key, &entries, head), TM_OK);
    CU_ASSERT_EQUAL(entries, 0);
    CU_ASSERT_EQUAL(tm_registry_verify(reg, key, NULL, NULL, NULL), TM_OK);
    CU_ASSERT_EQUAL(tm_registry_check_key(reg, key), TM_OK);
    CU_ASSERT_EQUAL(tm_registry_journal(reg, key, &entries, head), TM_OK);
    CU_ASSERT_EQUAL(entries, 4);
    put_copy(reg, key, image1, "dave", "out/dave.jpg", 256, 7);
    tm_registry_free(reg);
    CU_ASSERT_EQUAL(verify_quiet(path, key), TM_OK);
    raw_exec(path, "DELETE FROM copies WHERE recipient = 'bob'");
    expect_finding(path, key, 1, 2, "deleted");

    /* One bad row: not upgraded, and left as it was. */
    path = tm_test_path("v1bad.reg");
    copy_file(src, path);
    raw_exec(path, "UPDATE copies SET recipient = 'mallory' WHERE copy_id = 3");
    reg = open_reg(path, 0);
    CU_ASSERT_EQUAL(tm_registry_check_key(reg, key), TM_OK); /* still readable */
    CU_ASSERT_EQUAL(tm_registry_journal(reg, key, &entries, head), TM_OK);
    CU_ASSERT_EQUAL(entries, 0);
    tm_reg_image img;
    memset(&img, 0, sizeof img);
    snprintf(img.image_id, sizeof img.image_id, "%s", image2);
    img.width = img.height = 8;
    CU_ASSERT_EQUAL(tm_registry_put_image(reg, &img), TM_ERR_TAMPERED); /* writes need the upgrade */
    CU_ASSERT_PTR_NOT_NULL(strstr(tm_registry_errmsg(reg), "copy 3 fails its integrity check"));
    tm_registry_free(reg);
    expect_finding(path, key, 1, 3, "tag");
    tm_key_free(key);
}

static void test_wrong_key(void)
{
    const char *path = tm_test_path("key.reg");
    tm_key *key = make_key(0), *other = make_key(1);
    make_sample(path, key);
    tm_registry *reg = open_reg(path, 0);
    CU_ASSERT_EQUAL(tm_registry_check_key(reg, other), TM_ERR_KEY);
    char fp[17], msg[64];
    CU_ASSERT_EQUAL(tm_key_fingerprint(key, fp), TM_OK);
    snprintf(msg, sizeof msg, "another key (fingerprint %s)", fp);
    CU_ASSERT_PTR_NOT_NULL(strstr(tm_registry_errmsg(reg), msg));
    CU_ASSERT_EQUAL(tm_registry_verify(reg, other, NULL, NULL, NULL), TM_ERR_KEY);
    CU_ASSERT_EQUAL(tm_registry_check_key(reg, key), TM_OK);
    tm_registry_free(reg);

    /* Without a stored fingerprint, a wrong key shows up as bad tags and a
     * broken journal: 4 copies, 2 images, 6 entries and the head. */
    raw_exec(path, "DELETE FROM meta WHERE name = 'key_fingerprint'");
    reg = open_reg(path, 0);
    size_t nbad = 0;
    CU_ASSERT_EQUAL(tm_registry_verify(reg, other, NULL, NULL, &nbad), TM_ERR_TAMPERED);
    CU_ASSERT_EQUAL(nbad, 13);
    tm_registry_free(reg);
    tm_key_free(key);
    tm_key_free(other);
}

static void expect_not_registry(const char *path, int create, const char *want)
{
    tm_registry *reg = NULL;
    tm_status st = tm_registry_open(path, create, &reg);
    CU_ASSERT_EQUAL(st, TM_ERR_REGISTRY);
    CU_ASSERT_PTR_NOT_NULL_FATAL(reg);
    if (!strstr(tm_registry_errmsg(reg), want)) {
        fprintf(stderr, "%s: message '%s' lacks '%s'\n", path, tm_registry_errmsg(reg), want);
        CU_FAIL("unexpected message");
    }
    /* The failed handle refuses further use. */
    uint64_t n;
    CU_ASSERT_EQUAL(tm_registry_count_copies(reg, NULL, &n), TM_ERR_ARG);
    tm_registry_free(reg);
}

static void test_not_a_registry(void)
{
    uint8_t junk[4096];
    uint32_t s = 12345;
    for (size_t i = 0; i < sizeof junk; i++) {
        s = s * 1103515245u + 12345u;
        junk[i] = (uint8_t)(s >> 16);
    }
    const char *p = tm_test_path("random.reg");
    tm_test_spit(p, junk, sizeof junk);
    expect_not_registry(p, 0, "not a SQLite database");
    expect_not_registry(p, 1, "not a SQLite database");

    p = tm_test_path("empty.reg");
    tm_test_spit(p, "", 0);
    expect_not_registry(p, 0, "not a tracemark registry");

    p = tm_test_path("other.db");
    raw_exec(p, "CREATE TABLE songs(title TEXT); INSERT INTO songs VALUES('x')");
    expect_not_registry(p, 0, "another program");
    expect_not_registry(p, 1, "another program");

    tm_key *key = make_key(0);
    p = tm_test_path("future.reg");
    make_sample(p, key);
    raw_exec(p, "PRAGMA user_version = 99");
    expect_not_registry(p, 0, "newer schema");

    p = tm_test_path("old.reg");
    make_sample(p, key);
    raw_exec(p, "PRAGMA user_version = 0");
    expect_not_registry(p, 0, "unknown schema");

    p = tm_test_path("notable.reg");
    make_sample(p, key);
    raw_exec(p, "DROP TABLE copies");
    expect_not_registry(p, 0, "table 'copies' is missing");

    p = tm_test_path("nocolumn.reg");
    make_sample(p, key);
    raw_exec(p, "ALTER TABLE images RENAME COLUMN phash TO something");
    expect_not_registry(p, 0, "damaged");

    p = tm_test_path("missing.reg");
    expect_not_registry(p, 0, "no such registry");
    struct stat sb;
    CU_ASSERT_NOT_EQUAL(stat(p, &sb), 0);

    tm_registry *reg = NULL;
    CU_ASSERT_EQUAL(tm_registry_open(tm_test_tmpdir(), 0, &reg), TM_ERR_IO);
    tm_registry_free(reg);
    tm_key_free(key);
}

static void test_batches_and_args(void)
{
    const char *path = tm_test_path("batch.reg");
    tm_key *key = make_key(0);
    tm_registry *reg = open_reg(path, 1);
    tm_reg_image bare;
    memset(&bare, 0, sizeof bare);
    snprintf(bare.image_id, sizeof bare.image_id, "%s", image2);
    bare.width = bare.height = 8;
    CU_ASSERT_EQUAL(tm_registry_put_image(reg, &bare), TM_ERR_ARG); /* no key bound */
    CU_ASSERT_PTR_NOT_NULL(strstr(tm_registry_errmsg(reg), "no key bound"));
    CU_ASSERT_EQUAL(tm_registry_check_key(reg, key), TM_OK);
    put_image(reg, image1, 100);

    CU_ASSERT_EQUAL(tm_registry_begin(reg), TM_OK);
    CU_ASSERT_EQUAL(tm_registry_begin(reg), TM_ERR_ARG);
    put_copy(reg, key, image1, "gone", "x.jpg", 64, 1);
    CU_ASSERT_EQUAL(tm_registry_rollback(reg), TM_OK);
    CU_ASSERT_EQUAL(tm_registry_commit(reg), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_registry_rollback(reg), TM_OK);
    uint64_t n = 9;
    CU_ASSERT_EQUAL(tm_registry_count_copies(reg, NULL, &n), TM_OK);
    CU_ASSERT_EQUAL(n, 0);

    uint8_t cw[4] = {1, 2, 3, 4};
    tm_reg_copy c;
    memset(&c, 0, sizeof c);
    c.image_id = "0123456789abcdef0123456789abcdef";
    c.recipient = "x";
    c.out_path = "x.jpg";
    c.code_len = 32;
    c.codeword = cw;
    CU_ASSERT_EQUAL(tm_registry_put_copy(reg, key, &c, NULL), TM_ERR_NOT_FOUND);
    CU_ASSERT_PTR_NOT_NULL(strstr(tm_registry_errmsg(reg), "not in the registry"));
    c.image_id = "0123456789ABCDEF0123456789ABCDEF";
    CU_ASSERT_EQUAL(tm_registry_put_copy(reg, key, &c, NULL), TM_ERR_ARG);
    c.image_id = image1;
    c.recipient = "";
    CU_ASSERT_EQUAL(tm_registry_put_copy(reg, key, &c, NULL), TM_ERR_ARG);
    c.recipient = "x";
    c.code_len = 0;
    CU_ASSERT_EQUAL(tm_registry_put_copy(reg, key, &c, NULL), TM_ERR_ARG);
    c.code_len = 32;
    int64_t id = 0;
    CU_ASSERT_EQUAL(tm_registry_put_copy(reg, key, &c, &id), TM_OK);
    CU_ASSERT(id > 0);
    /* created 0 means now. */
    tm_reg_copy *arr;
    CU_ASSERT_EQUAL_FATAL(tm_registry_get_copy(reg, id, &arr), TM_OK);
    CU_ASSERT(arr[0].created > 1700000000);
    tm_reg_copies_free(arr, 1);
    CU_ASSERT_EQUAL(tm_registry_verify(reg, key, NULL, NULL, NULL), TM_OK);

    tm_reg_image img;
    memset(&img, 0, sizeof img);
    snprintf(img.image_id, sizeof img.image_id, "nothex");
    img.width = img.height = 1;
    CU_ASSERT_EQUAL(tm_registry_put_image(reg, &img), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_registry_open(path, 0, NULL), TM_ERR_ARG);
    tm_registry *none = NULL;
    CU_ASSERT_EQUAL(tm_registry_open("", 0, &none), TM_ERR_ARG);
    tm_registry_free(none);
    tm_registry_free(reg);
    tm_registry_free(NULL);
    tm_key_free(key);
}

/* Two processes insert 200 copies each, in batches, at the same time. */
static int child_writer(const char *path, int which, int go_fd)
{
    char c;
    if (read(go_fd, &c, 1) < 0) return 3;
    tm_key *key = NULL;
    if (tm_key_from_bytes(key_a, &key) != TM_OK) return 4;
    tm_registry *reg = NULL;
    if (tm_registry_open(path, 0, &reg) != TM_OK) return 5;
    uint8_t cw[32];
    int rc = 0;
    for (int batch = 0; batch < 4 && !rc; batch++) {
        if (tm_registry_begin(reg) != TM_OK) {
            rc = 6;
            break;
        }
        for (int i = 0; i < 50; i++) {
            char who[64];
            snprintf(who, sizeof who, "writer%d-%d", which, batch * 50 + i);
            fill_codeword(cw, 256, (uint32_t)(which * 1000 + batch * 50 + i));
            tm_reg_copy cp;
            memset(&cp, 0, sizeof cp);
            cp.image_id = image1;
            cp.recipient = who;
            cp.out_path = who;
            cp.code_len = 256;
            cp.codeword = cw;
            tm_status st = tm_registry_put_copy(reg, key, &cp, NULL);
            if (st != TM_OK) {
                fprintf(stderr, "writer %d: %s (%s)\n", which, tm_strerror(st), tm_registry_errmsg(reg));
                rc = 7;
                break;
            }
        }
        tm_status st = rc ? tm_registry_rollback(reg) : tm_registry_commit(reg);
        if (st != TM_OK) {
            fprintf(stderr, "writer %d: %s (%s)\n", which, tm_strerror(st), tm_registry_errmsg(reg));
            rc = 8;
        }
    }
    tm_registry_free(reg);
    tm_key_free(key);
    return rc;
}

static void test_concurrent_writers(void)
{
    const char *path = tm_test_path("concurrent.reg");
    tm_key *key = make_key(0);
    tm_registry *reg = open_reg(path, 1);
    CU_ASSERT_EQUAL(tm_registry_check_key(reg, key), TM_OK);
    put_image(reg, image1, 100);
    tm_registry_free(reg);
    tm_key_free(key); /* children must not inherit (and "leak") the parent's heap */

    int go[2];
    CU_ASSERT_EQUAL_FATAL(pipe(go), 0);
    pid_t pids[2];
    for (int w = 0; w < 2; w++) {
        fflush(NULL);
        pids[w] = fork();
        CU_ASSERT_FATAL(pids[w] >= 0);
        if (pids[w] == 0) {
            close(go[1]);
            _exit(child_writer(path, w, go[0]));
        }
    }
    close(go[0]);
    close(go[1]); /* both children see EOF and start together */
    for (int w = 0; w < 2; w++) {
        int status = 0;
        CU_ASSERT_EQUAL(waitpid(pids[w], &status, 0), pids[w]);
        CU_ASSERT(WIFEXITED(status));
        if (WEXITSTATUS(status) != 0) fprintf(stderr, "writer %d exited %d\n", w, WEXITSTATUS(status));
        CU_ASSERT_EQUAL(WEXITSTATUS(status), 0);
    }
    key = make_key(0);
    reg = open_reg(path, 0);
    uint64_t n = 0;
    CU_ASSERT_EQUAL(tm_registry_count_copies(reg, NULL, &n), TM_OK);
    CU_ASSERT_EQUAL(n, 400);
    size_t nbad = 1;
    CU_ASSERT_EQUAL(tm_registry_verify(reg, key, NULL, NULL, &nbad), TM_OK);
    CU_ASSERT_EQUAL(nbad, 0);
    tm_registry_free(reg);
    tm_key_free(key);
}

/* Two processes creating the same new registry at once both succeed. */
static void test_concurrent_create(void)
{
    const char *path = tm_test_path("create-race.reg");
    pid_t pids[4];
    for (int w = 0; w < 4; w++) {
        fflush(NULL);
        pids[w] = fork();
        CU_ASSERT_FATAL(pids[w] >= 0);
        if (pids[w] == 0) {
            tm_registry *reg = NULL;
            tm_status st = tm_registry_open(path, 1, &reg);
            if (st != TM_OK) fprintf(stderr, "create race: %s\n", tm_registry_errmsg(reg));
            tm_registry_free(reg);
            _exit(st == TM_OK ? 0 : 1);
        }
    }
    for (int w = 0; w < 4; w++) {
        int status = 0;
        CU_ASSERT_EQUAL(waitpid(pids[w], &status, 0), pids[w]);
        CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    tm_registry_free(open_reg(path, 0));
}

static void test_load_many(void)
{
    const char *path = tm_test_path("many.reg");
    tm_key *key = make_key(0);
    tm_registry *reg = open_reg(path, 1);
    CU_ASSERT_EQUAL(tm_registry_check_key(reg, key), TM_OK);
    put_image(reg, image1, 100);
    put_image(reg, image2, 100);
    enum { N = 100000 };
    CU_ASSERT_EQUAL_FATAL(tm_registry_begin(reg), TM_OK);
    for (int i = 0; i < N; i++) {
        char who[32];
        snprintf(who, sizeof who, "r%06d", i);
        put_copy(reg, key, i % 2 ? image2 : image1, who, who, 512, (uint32_t)i);
    }
    CU_ASSERT_EQUAL_FATAL(tm_registry_commit(reg), TM_OK);
    tm_registry_free(reg);

    reg = open_reg(path, 0);
    tm_reg_copy *arr = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(tm_registry_load_copies(reg, NULL, &arr, &n), TM_OK);
    CU_ASSERT_EQUAL_FATAL(n, N);
    static const size_t probes[] = {0, 1, 4567, 77777, N - 1};
    for (size_t k = 0; k < sizeof probes / sizeof probes[0]; k++) {
        size_t i = probes[k];
        char who[32];
        uint8_t want[64];
        snprintf(who, sizeof who, "r%06zu", i);
        fill_codeword(want, 512, (uint32_t)i);
        CU_ASSERT_STRING_EQUAL(arr[i].recipient, who);
        CU_ASSERT_STRING_EQUAL(arr[i].image_id, i % 2 ? image2 : image1);
        CU_ASSERT(memcmp(arr[i].codeword, want, 64) == 0);
        CU_ASSERT_EQUAL(tm_reg_copy_check(key, &arr[i]), TM_OK);
    }
    tm_reg_copies_free(arr, n);
    CU_ASSERT_EQUAL_FATAL(tm_registry_load_copies(reg, image2, &arr, &n), TM_OK);
    CU_ASSERT_EQUAL(n, N / 2);
    tm_reg_copies_free(arr, n);
    tm_registry_free(reg);
    tm_key_free(key);
}

/* ---- merging shards ------------------------------------------------------ */

/* An image row with every field a merge compares given. */
static void put_image_as(tm_registry *reg, const char *id, int w, int h, int sha_salt, uint64_t phash,
                         const char *params, const char *path, int64_t created)
{
    tm_reg_image img;
    memset(&img, 0, sizeof img);
    snprintf(img.image_id, sizeof img.image_id, "%s", id);
    for (int i = 0; i < 32; i++) img.content_sha256[i] = (uint8_t)(i * 7 + sha_salt);
    img.width = w;
    img.height = h;
    img.original_path = (char *)path;
    img.phash = phash;
    img.params = (char *)params;
    img.created = created;
    CU_ASSERT_EQUAL_FATAL(tm_registry_put_image(reg, &img), TM_OK);
}

#define PARAMS "{\"strength\":1.0,\"m\":512}"
#define PHASH 0xfedcba9876543210ull

/* Shard A (host 1): image1 to alice and bob. */
static void make_shard_a(const char *path, const tm_key *key)
{
    tm_registry *reg = open_reg(path, 1);
    CU_ASSERT_EQUAL(tm_registry_check_key(reg, key), TM_OK);
    put_image_as(reg, image1, 640, 480, 640, PHASH, PARAMS, "/host1/photo.jpg", 1700000000);
    put_copy(reg, key, image1, "alice@example.com", "out/alice.jpg", 512, 1);
    put_copy(reg, key, image1, "bob@example.com", "out/bob.jpg", 512, 2);
    tm_registry_free(reg);
}

/* Shard B (host 2): image1 (its original elsewhere, marked later) to alice
 * again, the very copy A has, and to carol; image2 to dave. */
static void make_shard_b(const char *path, const tm_key *key)
{
    tm_registry *reg = open_reg(path, 1);
    CU_ASSERT_EQUAL(tm_registry_check_key(reg, key), TM_OK);
    put_image_as(reg, image2, 800, 480, 800, PHASH, PARAMS, "/host2/other.jpg", 1700000500);
    put_image_as(reg, image1, 640, 480, 640, PHASH, PARAMS, "/host2/photo.jpg", 1700000900);
    put_copy(reg, key, image2, "dave", "out/dave.jpg", 512, 4);
    put_copy(reg, key, image1, "alice@example.com", "out/alice.jpg", 512, 1);
    put_copy(reg, key, image1, "carol", "out/carol.png", 512, 3);
    tm_registry_free(reg);
}

static tm_registry *open_ro(const char *path)
{
    tm_registry *reg = NULL;
    tm_status st = tm_registry_open_readonly(path, &reg);
    if (st != TM_OK) fprintf(stderr, "open_readonly %s: %s (%s)\n", path, tm_strerror(st), tm_registry_errmsg(reg));
    CU_ASSERT_EQUAL_FATAL(st, TM_OK);
    return reg;
}

/* Merges the registry at src_path into the one at dest_path (created if
 * missing) under key; returns the status, with *ms and the message. */
static tm_status merge_files(const char *dest_path, const char *src_path, const tm_key *key, tm_merge_stats *ms,
                             char *msg, size_t cap)
{
    tm_registry *dest = open_reg(dest_path, 1), *src = open_ro(src_path);
    tm_status st = tm_registry_check_key(dest, key);
    CU_ASSERT_EQUAL(st, TM_OK);
    if (st == TM_OK) st = tm_registry_merge(dest, src, key, ms);
    if (msg) snprintf(msg, cap, "%s", tm_registry_errmsg(ms->src_at_fault ? src : dest));
    tm_registry_free(src);
    tm_registry_free(dest);
    return st;
}

static int same_bytes(const uint8_t *a, size_t na, const char *path)
{
    size_t nb = 0;
    uint8_t *b = tm_test_slurp(path, &nb);
    int same = na == nb && memcmp(a, b, na) == 0;
    free(b);
    return same;
}

static void test_merge_shards(void)
{
    char a[768], b[768], dest[768];
    snprintf(a, sizeof a, "%s", tm_test_path("shard-a.reg"));
    snprintf(b, sizeof b, "%s", tm_test_path("shard-b.reg"));
    snprintf(dest, sizeof dest, "%s", tm_test_path("merged.reg"));
    tm_key *key = make_key(0);
    make_shard_a(a, key);
    make_shard_b(b, key);
    size_t na = 0, nb = 0;
    uint8_t *a_bytes = tm_test_slurp(a, &na), *b_bytes = tm_test_slurp(b, &nb);

    tm_merge_stats ms;
    char msg[512];
    CU_ASSERT_EQUAL(merge_files(dest, a, key, &ms, msg, sizeof msg), TM_OK);
    CU_ASSERT_EQUAL(ms.images, 1);
    CU_ASSERT_EQUAL(ms.images_added, 1);
    CU_ASSERT_EQUAL(ms.copies, 2);
    CU_ASSERT_EQUAL(ms.copies_added, 2);
    tm_status st = merge_files(dest, b, key, &ms, msg, sizeof msg);
    if (st != TM_OK) fprintf(stderr, "merge b: %s\n", msg);
    CU_ASSERT_EQUAL(st, TM_OK);
    CU_ASSERT_EQUAL(ms.images, 2);
    CU_ASSERT_EQUAL(ms.images_added, 1); /* image1 was there */
    CU_ASSERT_EQUAL(ms.copies, 3);
    CU_ASSERT_EQUAL(ms.copies_added, 2); /* alice's copy was there */
    /* the shards were only read */
    CU_ASSERT(same_bytes(a_bytes, na, a));
    CU_ASSERT(same_bytes(b_bytes, nb, b));

    /* DEST verifies: tags, journal (2 images + 4 copies), head */
    CU_ASSERT_EQUAL(verify_quiet(dest, key), TM_OK);
    tm_registry *reg = open_reg(dest, 0);
    uint64_t entries = 0;
    char head[17];
    CU_ASSERT_EQUAL(tm_registry_journal(reg, key, &entries, head), TM_OK);
    CU_ASSERT_EQUAL(entries, 6);
    tm_reg_image img;
    CU_ASSERT_EQUAL_FATAL(tm_registry_get_image(reg, image1, &img), TM_OK);
    CU_ASSERT_STRING_EQUAL(img.original_path, "/host1/photo.jpg"); /* DEST's row kept */
    CU_ASSERT_EQUAL(img.created, 1700000000);
    tm_reg_image_clear(&img);
    CU_ASSERT_EQUAL_FATAL(tm_registry_get_image(reg, image2, &img), TM_OK);
    CU_ASSERT_STRING_EQUAL(img.original_path, "/host2/other.jpg"); /* new: as the shard had it */
    CU_ASSERT_EQUAL(img.created, 1700000500);
    CU_ASSERT_EQUAL(img.width, 800);
    tm_reg_image_clear(&img);

    /* copy ids are DEST's, in merge order; the rows are the shards' */
    tm_reg_copy *arr = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(tm_registry_load_copies(reg, NULL, &arr, &n), TM_OK);
    CU_ASSERT_EQUAL_FATAL(n, 4);
    static const char *who[] = {"alice@example.com", "bob@example.com", "dave", "carol"};
    static const uint32_t seed[] = {1, 2, 4, 3};
    for (size_t i = 0; i < n; i++) {
        uint8_t want[64];
        fill_codeword(want, 512, seed[i]);
        CU_ASSERT_EQUAL(arr[i].copy_id, (int64_t)i + 1);
        CU_ASSERT_STRING_EQUAL(arr[i].recipient, who[i]);
        CU_ASSERT_EQUAL(arr[i].created, 1700000100 + seed[i]);
        CU_ASSERT_EQUAL(arr[i].out_sha256[0], (uint8_t)seed[i]);
        CU_ASSERT(memcmp(arr[i].codeword, want, 64) == 0);
        CU_ASSERT_EQUAL(tm_registry_check_copy(reg, key, &arr[i]), TM_OK);
    }
    tm_reg_copies_free(arr, n);
    tm_registry_free(reg);

    /* Again: nothing added, DEST unchanged to the byte. */
    size_t nd = 0;
    uint8_t *d_bytes = tm_test_slurp(dest, &nd);
    CU_ASSERT_EQUAL(merge_files(dest, a, key, &ms, NULL, 0), TM_OK);
    CU_ASSERT_EQUAL(ms.copies, 2);
    CU_ASSERT_EQUAL(ms.copies_added, 0);
    CU_ASSERT_EQUAL(ms.images_added, 0);
    CU_ASSERT_EQUAL(merge_files(dest, b, key, &ms, NULL, 0), TM_OK);
    CU_ASSERT_EQUAL(ms.copies_added, 0);
    CU_ASSERT(same_bytes(d_bytes, nd, dest));
    /* and the merged registry merged into a fresh one is a copy of it */
    char again[768];
    snprintf(again, sizeof again, "%s", tm_test_path("merged2.reg"));
    CU_ASSERT_EQUAL(merge_files(again, dest, key, &ms, NULL, 0), TM_OK);
    CU_ASSERT_EQUAL(ms.copies_added, 4);
    CU_ASSERT_EQUAL(verify_quiet(again, key), TM_OK);
    free(d_bytes);
    free(a_bytes);
    free(b_bytes);
    tm_key_free(key);
}

/* Shard B with one thing changed against A, merged after A: refused as a
 * conflict naming what differs, DEST unchanged to the byte. */
static void expect_conflict(const char *name, int what, const char *want)
{
    char a[768], b[768], dest[768];
    snprintf(a, sizeof a, "%s", tm_test_path("conflict-a.reg"));
    snprintf(b, sizeof b, "%s-b", tm_test_path(name));
    snprintf(dest, sizeof dest, "%s-dest", tm_test_path(name));
    tm_key *key = make_key(0);
    struct stat sb;
    if (stat(a, &sb) != 0) make_shard_a(a, key);
    tm_merge_stats ms;
    CU_ASSERT_EQUAL_FATAL(merge_files(dest, a, key, &ms, NULL, 0), TM_OK);

    tm_registry *reg = open_reg(b, 1);
    CU_ASSERT_EQUAL(tm_registry_check_key(reg, key), TM_OK);
    put_image_as(reg, image2, 800, 480, 800, PHASH, PARAMS, "/host2/other.jpg", 1700000500); /* new: fine */
    put_image_as(reg, image1, what == 2 ? 641 : 640, 480, what == 1 ? 99 : 640, what == 3 ? PHASH ^ 1 : PHASH,
                 what == 4 ? "{\"strength\":2.0,\"m\":512}" : PARAMS, "/host2/photo.jpg", 1700000900);
    put_copy(reg, key, image2, "dave", "out/dave.jpg", 512, 4); /* new: fine, merged before the conflict */
    put_copy(reg, key, image1, "carol", "out/carol.png", 512, 3);
    if (what == 5) put_copy(reg, key, image1, "bob@example.com", "out/bob.jpg", 512, 9);   /* other codeword */
    if (what == 6) put_copy(reg, key, image1, "bob@example.com", "out/bob2.jpg", 512, 2);  /* other path */
    if (what == 7) {                                                                      /* other bytes */
        uint8_t cw[64];
        fill_codeword(cw, 512, 2);
        tm_reg_copy c;
        memset(&c, 0, sizeof c);
        c.image_id = image1;
        c.recipient = "bob@example.com";
        c.out_path = "out/bob.jpg";
        for (int i = 0; i < 32; i++) c.out_sha256[i] = (uint8_t)(2 + i + (i == 31));
        c.created = 1700000102;
        c.code_len = 512;
        c.codeword = cw;
        CU_ASSERT_EQUAL(tm_registry_put_copy(reg, key, &c, NULL), TM_OK);
    }
    tm_registry_free(reg);

    size_t nd = 0;
    uint8_t *before = tm_test_slurp(dest, &nd);
    char msg[512];
    tm_status st = merge_files(dest, b, key, &ms, msg, sizeof msg);
    CU_ASSERT_EQUAL(st, TM_ERR_EXISTS);
    CU_ASSERT_EQUAL(ms.src_at_fault, 1);
    CU_ASSERT_EQUAL(ms.copies_added, 0);
    if (!strstr(msg, "conflict") || !strstr(msg, want)) {
        fprintf(stderr, "%s: message '%s' lacks 'conflict' or '%s'\n", name, msg, want);
        CU_FAIL("conflict message");
    }
    CU_ASSERT(same_bytes(before, nd, dest));
    CU_ASSERT_EQUAL(verify_quiet(dest, key), TM_OK);
    reg = open_reg(dest, 0);
    uint64_t n = 0;
    CU_ASSERT_EQUAL(tm_registry_count_copies(reg, NULL, &n), TM_OK);
    CU_ASSERT_EQUAL(n, 2);
    tm_registry_free(reg);
    free(before);
    tm_key_free(key);
}

static void test_merge_conflicts(void)
{
    expect_conflict("c-sha", 1, "content hash");
    expect_conflict("c-size", 2, "size (641x480 here, 640x480 there)");
    expect_conflict("c-phash", 3, "perceptual hash");
    expect_conflict("c-params", 4, "mark parameters");
    expect_conflict("c-codeword", 5, "another codeword than the destination's copy 2");
    expect_conflict("c-path", 6, "'bob@example.com' was given two copies of image");
    expect_conflict("c-bytes", 7, "here ('out/bob.jpg', sha256 0203");
    char both[128];
    snprintf(both, sizeof both, "copy 2 in the destination ('out/bob.jpg'");
    expect_conflict("c-path2", 6, both);
}

/* Shards that are not to be trusted, and wrong uses. */
static void test_merge_refused(void)
{
    char a[768], dest[768], bad[768];
    snprintf(a, sizeof a, "%s", tm_test_path("refuse-a.reg"));
    snprintf(dest, sizeof dest, "%s", tm_test_path("refuse-dest.reg"));
    tm_key *key = make_key(0), *other = make_key(1);
    make_shard_a(a, key);
    tm_merge_stats ms;
    CU_ASSERT_EQUAL_FATAL(merge_files(dest, a, key, &ms, NULL, 0), TM_OK);
    size_t nd = 0;
    uint8_t *before = tm_test_slurp(dest, &nd);

    static const struct {
        const char *name, *sql;
        tm_status st;
        const char *want;
    } cases[] = {
        {"r-edit.reg", "UPDATE copies SET recipient = 'mallory' WHERE copy_id = 2", TM_ERR_TAMPERED,
         "fails verification (1 finding, the first: copy 2: tag does not match"},
        {"r-deleted.reg", "DELETE FROM copies WHERE copy_id = 1", TM_ERR_TAMPERED, "copy 1: deleted"},
        {"r-journal.reg", "DELETE FROM journal WHERE seq = 3; UPDATE journal SET seq = 3 WHERE seq = 4",
         TM_ERR_TAMPERED, "fails verification"},
        {"r-image.reg", "UPDATE images SET phash = 5", TM_ERR_TAMPERED, "image 00112233445566778899aabbccddeeff"},
        {"r-fp.reg", "UPDATE meta SET value = '0123456789abcdef' WHERE name = 'key_fingerprint'", TM_ERR_KEY,
         "another key (fingerprint 0123456789abcdef)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(bad, sizeof bad, "%s", tm_test_path(cases[i].name));
        tm_registry *reg = open_reg(bad, 1);
        CU_ASSERT_EQUAL(tm_registry_check_key(reg, key), TM_OK);
        put_image_as(reg, image1, 640, 480, 640, PHASH, PARAMS, "/host3/photo.jpg", 1700000000);
        put_copy(reg, key, image1, "erin", "out/erin.jpg", 512, 11);
        put_copy(reg, key, image1, "frank", "out/frank.jpg", 512, 12);
        tm_registry_free(reg);
        raw_exec(bad, cases[i].sql);
        char msg[512];
        tm_status st = merge_files(dest, bad, key, &ms, msg, sizeof msg);
        CU_ASSERT_EQUAL(st, cases[i].st);
        CU_ASSERT_EQUAL(ms.src_at_fault, 1);
        if (!strstr(msg, cases[i].want)) {
            fprintf(stderr, "%s: message '%s' lacks '%s'\n", cases[i].name, msg, cases[i].want);
            CU_FAIL("refusal message");
        }
        CU_ASSERT(same_bytes(before, nd, dest));
    }

    /* A shard made with another key. */
    snprintf(bad, sizeof bad, "%s", tm_test_path("r-other.reg"));
    make_shard_a(bad, other);
    char msg[512], fp[17], want[64];
    CU_ASSERT_EQUAL(merge_files(dest, bad, key, &ms, msg, sizeof msg), TM_ERR_KEY);
    CU_ASSERT_EQUAL(ms.src_at_fault, 1);
    CU_ASSERT_EQUAL(tm_key_fingerprint(other, fp), TM_OK);
    snprintf(want, sizeof want, "another key (fingerprint %s)", fp);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, want));
    CU_ASSERT(same_bytes(before, nd, dest));
    /* ... also when it holds no fingerprint: its tags do not verify */
    raw_exec(bad, "DELETE FROM meta WHERE name = 'key_fingerprint'");
    CU_ASSERT_EQUAL(merge_files(dest, bad, key, &ms, msg, sizeof msg), TM_ERR_TAMPERED);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "tag does not match"));
    CU_ASSERT(same_bytes(before, nd, dest));

    /* Wrong uses: DEST without its key, another key, a read-only DEST, itself. */
    tm_registry *d = open_reg(dest, 0), *s = open_ro(a);
    CU_ASSERT_EQUAL(tm_registry_merge(d, s, key, &ms), TM_ERR_ARG); /* no key bound */
    CU_ASSERT_PTR_NOT_NULL(strstr(tm_registry_errmsg(d), "no key bound"));
    CU_ASSERT_EQUAL(ms.src_at_fault, 0);
    CU_ASSERT_EQUAL(tm_registry_check_key(d, other), TM_ERR_KEY);
    CU_ASSERT_EQUAL(tm_registry_check_key(d, key), TM_OK);
    CU_ASSERT_EQUAL(tm_registry_merge(d, s, other, &ms), TM_ERR_KEY);
    CU_ASSERT_EQUAL(tm_registry_merge(d, d, key, &ms), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_registry_merge(d, s, NULL, NULL), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_registry_check_key(s, key), TM_OK);
    CU_ASSERT_EQUAL(tm_registry_merge(s, d, key, &ms), TM_ERR_ARG); /* s is read-only */
    CU_ASSERT_PTR_NOT_NULL(strstr(tm_registry_errmsg(s), "read-only"));
    tm_registry_free(s);
    tm_registry_free(d);
    CU_ASSERT(same_bytes(before, nd, dest));
    free(before);
    tm_key_free(key);
    tm_key_free(other);
}

/* In the caller's batch, a failed merge takes back only its own rows. */
static void test_merge_in_batch(void)
{
    char a[768], dest[768], b[768];
    snprintf(a, sizeof a, "%s", tm_test_path("batch-a.reg"));
    snprintf(b, sizeof b, "%s", tm_test_path("batch-b.reg"));
    snprintf(dest, sizeof dest, "%s", tm_test_path("batch-dest.reg"));
    tm_key *key = make_key(0);
    make_shard_a(a, key);
    make_shard_b(b, key);
    raw_exec(b, "PRAGMA foreign_keys = OFF; UPDATE copies SET codeword = x'00' || substr(codeword, 2)"
                " WHERE recipient = 'alice@example.com'");
    tm_registry *d = open_reg(dest, 1), *sa = open_ro(a), *sb = open_ro(b);
    CU_ASSERT_EQUAL(tm_registry_check_key(d, key), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_registry_begin(d), TM_OK);
    put_image_as(d, image2, 800, 480, 800, PHASH, PARAMS, "/here/other.jpg", 1700000000);
    put_copy(d, key, image2, "zoe", "out/zoe.jpg", 512, 20);
    tm_merge_stats ms;
    CU_ASSERT_EQUAL(tm_registry_merge(d, sa, key, &ms), TM_OK);
    CU_ASSERT_EQUAL(ms.copies_added, 2);
    CU_ASSERT_EQUAL(tm_registry_merge(d, sb, key, &ms), TM_ERR_TAMPERED); /* its alice row was edited */
    CU_ASSERT_EQUAL(ms.src_at_fault, 1);
    CU_ASSERT_EQUAL(tm_registry_commit(d), TM_OK);
    uint64_t n = 0;
    CU_ASSERT_EQUAL(tm_registry_count_copies(d, NULL, &n), TM_OK);
    CU_ASSERT_EQUAL(n, 3); /* zoe and shard A's two */
    tm_registry_free(sb);
    tm_registry_free(sa);
    tm_registry_free(d);
    CU_ASSERT_EQUAL(verify_quiet(dest, key), TM_OK);
    tm_key_free(key);
}

/* A schema 1 shard is merged as it is (read, never upgraded), and a
 * read-only handle never writes: no fingerprint stored, no upgrade. */
static void test_merge_schema1_and_readonly(void)
{
    tm_key *key = make_key(0);
    char v1[768], dest[768], src[4096];
    snprintf(v1, sizeof v1, "%s", tm_test_path("shard-v1.reg"));
    snprintf(dest, sizeof dest, "%s", tm_test_path("dest-v1.reg"));
    snprintf(src, sizeof src, "%s/tests/data/registry/v1.db", TM_SRCDIR);
    copy_file(src, v1);
    size_t n1 = 0;
    uint8_t *v1_bytes = tm_test_slurp(v1, &n1);
    tm_merge_stats ms;
    CU_ASSERT_EQUAL(merge_files(dest, v1, key, &ms, NULL, 0), TM_OK);
    CU_ASSERT_EQUAL(ms.images_added, 1);
    CU_ASSERT_EQUAL(ms.copies_added, 3);
    CU_ASSERT(same_bytes(v1_bytes, n1, v1)); /* not upgraded */
    CU_ASSERT_EQUAL(verify_quiet(dest, key), TM_OK);
    free(v1_bytes);

    /* an unbound registry opened read-only: the key binds, nothing is stored */
    char unbound[768];
    snprintf(unbound, sizeof unbound, "%s", tm_test_path("unbound.reg"));
    tm_registry_free(open_reg(unbound, 1));
    size_t nu = 0;
    uint8_t *u_bytes = tm_test_slurp(unbound, &nu);
    tm_registry *reg = open_ro(unbound);
    CU_ASSERT_EQUAL(tm_registry_check_key(reg, key), TM_OK);
    tm_reg_image img;
    memset(&img, 0, sizeof img);
    snprintf(img.image_id, sizeof img.image_id, "%s", image1);
    img.width = img.height = 8;
    CU_ASSERT_EQUAL(tm_registry_put_image(reg, &img), TM_ERR_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(tm_registry_errmsg(reg), "read-only"));
    tm_registry_free(reg);
    CU_ASSERT(same_bytes(u_bytes, nu, unbound));
    free(u_bytes);
    reg = NULL;
    CU_ASSERT_EQUAL(tm_registry_open_readonly(tm_test_path("nowhere.reg"), &reg), TM_ERR_REGISTRY);
    tm_registry_free(reg);
    tm_key_free(key);
}

/* A snapshot is the registry page for page, taken while another handle
 * holds uncommitted writes (which it does not see), and needs no WAL. */
static void test_snapshot(void)
{
    tm_key *key = make_key(0);
    char path[768], snap[768], snap2[768];
    snprintf(path, sizeof path, "%s", tm_test_path("snap-src.reg"));
    snprintf(snap, sizeof snap, "%s", tm_test_path("snap.reg"));
    snprintf(snap2, sizeof snap2, "%s", tm_test_path("snap2.reg"));
    make_sample(path, key);
    tm_registry *writer = open_reg(path, 0), *reg = open_ro(path);
    CU_ASSERT_EQUAL(tm_registry_check_key(writer, key), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_registry_begin(writer), TM_OK);
    put_copy(writer, key, image2, "uncommitted", "x.jpg", 64, 30);
    CU_ASSERT_EQUAL(tm_registry_snapshot(reg, snap), TM_OK);
    CU_ASSERT_EQUAL(tm_registry_snapshot(reg, snap), TM_ERR_EXISTS);
    CU_ASSERT_EQUAL(tm_registry_snapshot(writer, snap2), TM_ERR_ARG); /* its batch is open */
    CU_ASSERT_EQUAL(tm_registry_commit(writer), TM_OK);
    tm_registry_free(writer);

    tm_registry *copy = open_ro(snap);
    tm_reg_copy *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    CU_ASSERT_EQUAL_FATAL(tm_registry_load_copies(copy, NULL, &x, &nx), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_registry_load_copies(reg, NULL, &y, &ny), TM_OK);
    CU_ASSERT_EQUAL_FATAL(nx, 4);
    CU_ASSERT_EQUAL_FATAL(ny, 5);
    for (size_t i = 0; i < nx; i++) {
        CU_ASSERT_EQUAL(x[i].copy_id, y[i].copy_id);
        CU_ASSERT_STRING_EQUAL(x[i].recipient, y[i].recipient);
        CU_ASSERT(memcmp(x[i].tag, y[i].tag, 32) == 0);
        CU_ASSERT_EQUAL(tm_registry_check_copy(copy, key, &x[i]), TM_OK);
    }
    tm_reg_copies_free(x, nx);
    tm_reg_copies_free(y, ny);
    uint64_t entries = 0;
    char head[17];
    CU_ASSERT_EQUAL(tm_registry_journal(copy, key, &entries, head), TM_OK);
    CU_ASSERT_EQUAL(entries, 6);
    CU_ASSERT_EQUAL(tm_registry_verify(copy, key, NULL, NULL, NULL), TM_OK);
    tm_registry_free(copy);
    tm_registry_free(reg);
    size_t n = 0;
    uint8_t *bytes = tm_test_slurp(snap, &n);
    CU_ASSERT_FATAL(n > 100);
    CU_ASSERT_EQUAL(bytes[18], 1); /* rollback journal, not WAL */
    CU_ASSERT_EQUAL(bytes[19], 1);
    free(bytes);
    tm_key_free(key);
}

static CU_TestInfo tests[] = {
    {"round trip of images and copies", test_round_trip},
    {"same recipient again replaces the row", test_same_recipient_replaces},
    {"edited rows are reported by verify", test_tamper_detected},
    {"the journal: deletions, swaps, restores, truncation", test_journal},
    {"a schema 1 registry is read, then upgraded", test_schema1_upgrade},
    {"wrong key is refused", test_wrong_key},
    {"files that are not registries are refused", test_not_a_registry},
    {"batches, rollback and argument checks", test_batches_and_args},
    {"two processes write at once", test_concurrent_writers},
    {"four processes create at once", test_concurrent_create},
    {"load 10^5 copies", test_load_many},
    {"merge two shards, then again: nothing added", test_merge_shards},
    {"merge conflicts refused, the destination unchanged", test_merge_conflicts},
    {"merge refuses tampered and other-key shards", test_merge_refused},
    {"merge in a batch takes back only its own rows", test_merge_in_batch},
    {"merge a schema 1 shard; read-only handles never write", test_merge_schema1_and_readonly},
    {"snapshot: a consistent copy, page for page", test_snapshot},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tm_test_main("registry", tests);
}
