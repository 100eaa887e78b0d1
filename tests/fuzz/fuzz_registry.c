/* fuzz_registry.c -- libFuzzer target for a registry file from outside:
 * the input is written to a temporary file, opened as a registry (never
 * created) and put through what `tracemark registry verify` and `trace` do
 * with it: bind the key, verify every row, load the copies (all, and each
 * image's), check each copy's tag and list the images. The file is removed,
 * with any -wal, -shm or -journal beside it, after each input.
 *
 * The key is the bytes 00 01 .. 1f. The seeds (tests/data/fuzz/registry/)
 * are registries written by `tracemark mark` under it, so the fuzzer starts
 * from files whose fingerprint and row tags are right; its key file is
 * "tracemark-key-v1" and, on a second line, the 64 hex digits 000102...1f.
 *
 * Besides the absence of memory errors, the answers must agree: a registry
 * that verifies has no bad row and every copy it loads passes its tag
 * check and counts as many copies as it loads; the bad rows reported are
 * the ones counted. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tracemark.h"

#define MAX_IMAGES 8    /* images whose copies are loaded on their own */

static tm_key *key;

/* The temporary directory: tmpfs when there is one, so no input waits on a disk. */
static const char *tmp_dir(void)
{
    struct stat sb;
    if (stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) && access("/dev/shm", W_OK) == 0) return "/dev/shm";
    return "/tmp";
}

static void init(void)
{
    uint8_t b[TM_KEY_BYTES];
    for (int i = 0; i < TM_KEY_BYTES; i++) b[i] = (uint8_t)i; /* 00 01 .. 1f, as the seeds' key file */
    if (tm_key_from_bytes(b, &key) != TM_OK) abort();
}

/* Writes data to a new temporary file; its name goes into path. */
static int write_temp(const uint8_t *data, size_t size, char *path, size_t cap)
{
    snprintf(path, cap, "%s/tm-fuzz-registry-XXXXXX", tmp_dir());
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    for (size_t off = 0; off < size;) {
        ssize_t k = write(fd, data + off, size - off);
        if (k <= 0) {
            close(fd);
            unlink(path);
            return -1;
        }
        off += (size_t)k;
    }
    close(fd);
    return 0;
}

static void remove_temp(const char *path)
{
    static const char *const sfx[] = {"", "-wal", "-shm", "-journal"};
    char p[4200];
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        snprintf(p, sizeof p, "%s%s", path, sfx[i]);
        unlink(p);
    }
}

typedef struct findings {
    size_t n;
} findings;

static void on_bad(void *ud, int64_t copy_id, const char *why)
{
    (void)copy_id;
    if (!why || !why[0]) abort(); /* each finding says what is wrong */
    ((findings *)ud)->n++;
}

/* Reads every byte a loaded copy points to, so a short block shows. */
static unsigned touch_copy(const tm_reg_copy *c)
{
    if (!c->image_id || !c->recipient || !c->out_path || (c->code_len && !c->codeword)) abort();
    unsigned sum = (unsigned)strlen(c->image_id) + (unsigned)strlen(c->recipient) + (unsigned)strlen(c->out_path);
    for (size_t i = 0; i < (c->code_len + 7u) / 8u; i++) sum += c->codeword[i];
    return sum;
}

typedef struct listing {
    size_t n;
    char ids[MAX_IMAGES][TM_IMAGE_ID_LEN + 1];
} listing;

static int on_image(void *ud, const tm_reg_image *img, uint64_t n_copies)
{
    listing *l = ud;
    (void)n_copies;
    if (strlen(img->image_id) > TM_IMAGE_ID_LEN) abort();
    if (img->original_path) (void)strlen(img->original_path);
    if (img->params) (void)strlen(img->params);
    if (l->n < MAX_IMAGES) memcpy(l->ids[l->n++], img->image_id, TM_IMAGE_ID_LEN + 1);
    return 0;
}

/* The registry at path, as the commands use one. */
static void run(const char *path)
{
    tm_registry *reg = NULL;
    tm_status st = tm_registry_open(path, 0, &reg);
    if (!reg || !tm_registry_errmsg(reg)) abort(); /* set even on failure (no malloc fails here) */
    if (st != TM_OK) goto out;
    /* as the commands do, though verify and the loads need no binding: a
     * registry the key cannot be bound to still gets read */
    (void)tm_registry_check_key(reg, key);

    findings f = {0};
    size_t n_bad = 0;
    tm_status vst = tm_registry_verify(reg, key, on_bad, &f, &n_bad);
    if (n_bad != f.n || (vst == TM_OK && n_bad)) abort();

    tm_reg_copy *copies = NULL;
    size_t n = 0;
    volatile unsigned sink = 0;
    if (tm_registry_load_copies(reg, NULL, &copies, &n) == TM_OK) {
        if (n && !copies) abort();
        for (size_t i = 0; i < n; i++) {
            sink += touch_copy(&copies[i]);
            tm_status cst = tm_reg_copy_check(key, &copies[i]);
            if (vst == TM_OK && cst != TM_OK) abort(); /* verified, yet a row fails its tag */
        }
        /* count(*) reads an index, the load the table: in a damaged file
         * they may disagree, in one that verifies they must not */
        uint64_t count = 0;
        if (tm_registry_count_copies(reg, NULL, &count) == TM_OK && vst == TM_OK && count != n) abort();
    }
    tm_reg_copies_free(copies, n);

    listing l = {0};
    if (tm_registry_list_images(reg, on_image, &l) == TM_OK) {
        for (size_t i = 0; i < l.n; i++) {
            copies = NULL;
            n = 0;
            if (tm_registry_load_copies(reg, l.ids[i], &copies, &n) == TM_OK)
                for (size_t k = 0; k < n; k++) sink += touch_copy(&copies[k]);
            tm_reg_copies_free(copies, n);
            tm_reg_image img;
            if (tm_registry_get_image(reg, l.ids[i], &img) == TM_OK) tm_reg_image_clear(&img);
        }
    }
    (void)sink;
out:
    tm_registry_free(reg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!key) init();
    char path[4096];
    if (write_temp(data, size, path, sizeof path)) return 0;
    run(path);
    remove_temp(path);
    return 0;
}
