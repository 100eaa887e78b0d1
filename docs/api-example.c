/* api-example.c -- the tracemark C API in one small program: mark one image
 * for one recipient, record the copy in a registry, then read the copy back
 * as a leaked suspect and trace it to its recipient. docs/api.md walks
 * through it step by step.
 *
 * Usage: api-example IMAGE WORKDIR
 *
 * WORKDIR (made if missing) gets example.key (the secret key: made on the
 * first run, reused after), example.db (the registry) and copy.EXT (the
 * marked copy, in IMAGE's format). Exit status as `tracemark trace`: 0 the
 * recipient was accused, 1 not, 2 an error (one line on stderr).
 *
 * Build it against an installed tracemark:
 *     cc api-example.c $(pkg-config --cflags --libs tracemark)
 * (`make check` builds it in the tree and runs it: tests/cli/test_api_example.sh
 * and, against a `make install` in a DESTDIR, tests/cli/test_install.sh.) */
#define _POSIX_C_SOURCE 200809L /* mkdir, unlink */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gsl/gsl_errno.h> /* gsl_set_error_handler_off, as tracemark.h asks */
#include <tracemark.h>

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

#define RECIPIENT "alice@example.com"

/* Reports a failed call as one line: what failed, the library's short
 * description of the status, and the registry's detail when it has one. */
static void report(const char *what, tm_status st, const tm_registry *reg)
{
    const char *detail = reg ? tm_registry_errmsg(reg) : "";
    fprintf(stderr, "api-example: %s: %s%s%s\n", what, tm_strerror(st), *detail ? ": " : "", detail);
}

/* dir/name into buf (cap bytes); -1 when it does not fit. */
static int join(char *buf, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

static const char *verdict_name(tm_verdict v)
{
    return v == TM_VERDICT_ACCUSED ? "accused" : v == TM_VERDICT_INCONCLUSIVE ? "inconclusive" : "none";
}

int main(int argc, char **argv)
{
    int rc = 2;                    /* the exit status: an error until shown otherwise */
    tm_status st;
    char key_path[PATH_MAX], reg_path[PATH_MAX], copy_path[PATH_MAX], staged[PATH_MAX] = "";
    char name[32], fpr_hex[17];
    /* Every object the program owns, NULL until made: the one cleanup at
     * `out` frees them all, whichever step failed (each _free(NULL) is a no-op). */
    tm_key *key = NULL;
    tm_registry *reg = NULL;
    tm_embedder *emb = NULL;
    uint8_t *copy_data = NULL;     /* the encoded copy, malloc'd by the library */
    size_t copy_len = 0;
    tm_image *suspect = NULL;
    tm_reg_copy *copies = NULL;    /* one block from tm_registry_load_copies */
    size_t n_copies = 0;
    tm_trace_result result;
    memset(&result, 0, sizeof result); /* so clearing it at `out` is safe at any step */

    if (argc != 3) {
        fprintf(stderr, "usage: api-example IMAGE WORKDIR\n");
        return 2;
    }
    const char *image = argv[1], *workdir = argv[2];

    /* GSL's default error handler aborts the process; the library checks
     * every GSL status itself, so switch the handler off first. */
    gsl_set_error_handler_off();

    if (mkdir(workdir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "api-example: %s: cannot create the directory: %s\n", workdir, strerror(errno));
        goto out;
    }
    if (join(key_path, sizeof key_path, workdir, "example.key") ||
        join(reg_path, sizeof reg_path, workdir, "example.db")) {
        fprintf(stderr, "api-example: %s: path too long\n", workdir);
        goto out;
    }

    /* 1. The key. tm_key_generate never replaces a key file (TM_ERR_EXISTS),
     * so a second run keeps the first run's key, which the registry is bound
     * to. The file is made mode 0600; tm_key_load refuses one that group or
     * others can read. */
    st = tm_key_generate(key_path);
    if (st != TM_OK && st != TM_ERR_EXISTS) {
        report(key_path, st, NULL);
        goto out;
    }
    if ((st = tm_key_load(key_path, &key)) != TM_OK || (st = tm_key_fingerprint(key, fpr_hex)) != TM_OK) {
        report(key_path, st, NULL);
        goto out;
    }
    printf("tracemark %s, key %s (fingerprint %s)\n", tm_version(), key_path, fpr_hex);

    /* 2. The registry, made if missing, then bound to the key: the first
     * key stores its public fingerprint, any other key is refused after. */
    st = tm_registry_open(reg_path, 1, &reg);
    if (st == TM_OK) st = tm_registry_check_key(reg, key);
    if (st != TM_OK) {
        report(reg_path, st, reg);
        goto out;
    }

    /* 3. The embedder: the original decoded and analysed once (a JPEG is
     * read as stored, so its JPEG copies keep its chroma untouched). It
     * borrows the key, which must outlive it. */
    tm_image_info info;
    if ((st = tm_embedder_load(key, image, NULL, NULL, &emb, &info)) != TM_OK) {
        report(image, st, NULL);
        goto out;
    }
    int width, height;
    tm_embedder_size(emb, &width, &height);
    printf("original %s: %dx%d %s, image id %s\n", image, width, height, tm_format_name(info.format),
           tm_embedder_image_id(emb));

    /* 4. The recipient's copy, encoded like the original: same format, its
     * estimated JPEG quality and chroma subsampling, a 16-bit PNG kept 16-bit. */
    tm_save_options so;
    tm_save_options_init(&so);
    so.format = info.format;
    so.quality = info.jpeg_quality; /* 0 (not a JPEG) means the default */
    if (info.format == TM_FORMAT_JPEG) so.subsampling = info.subsampling;
    if (info.format == TM_FORMAT_PNG && info.bit_depth == 16) so.bit_depth = 16;
    snprintf(name, sizeof name, "copy.%s", tm_format_name(info.format));
    if (join(copy_path, sizeof copy_path, workdir, name)) {
        fprintf(stderr, "api-example: %s: path too long\n", workdir);
        goto out;
    }
    uint8_t codeword[TM_CODEWORD_BYTES], copy_sha[32];
    st = tm_embedder_codeword(emb, RECIPIENT, codeword);
    if (st == TM_OK) st = tm_embedder_mark_encode(emb, RECIPIENT, &so, &copy_data, &copy_len);
    if (st == TM_OK) st = tm_sha256(copy_data, copy_len, copy_sha);
    if (st != TM_OK) {
        report("marking the copy", st, NULL);
        goto out;
    }

    /* 5. Record, then publish, as `tracemark mark` does: the copy's bytes go
     * to a temporary beside copy_path first (written and fsync'd), the rows
     * are committed, and only then is the copy renamed into place. A file
     * under the copy's name is then always registered, whenever the program
     * is stopped. The same (image, recipient) again replaces its row. */
    if ((st = tm_file_stage(copy_path, copy_data, copy_len, 0644, staged, sizeof staged)) != TM_OK) {
        report(copy_path, st, NULL);
        goto out;
    }
    tm_reg_image ri;                 /* its strings are borrowed here */
    memset(&ri, 0, sizeof ri);
    snprintf(ri.image_id, sizeof ri.image_id, "%s", tm_embedder_image_id(emb));
    tm_embedder_content_sha256(emb, ri.content_sha256);
    ri.width = width;
    ri.height = height;
    ri.original_path = (char *)image;
    ri.phash = tm_embedder_phash(emb);
    ri.params = (char *)tm_scheme_params_json();
    tm_reg_copy rc_row;              /* likewise; created 0 = now */
    memset(&rc_row, 0, sizeof rc_row);
    rc_row.image_id = ri.image_id;
    rc_row.recipient = RECIPIENT;
    rc_row.out_path = copy_path;
    memcpy(rc_row.out_sha256, copy_sha, 32);
    rc_row.code_len = TM_CODEWORD_BYTES * 8;
    rc_row.codeword = codeword;
    int64_t copy_id = 0;
    st = tm_registry_begin(reg);
    if (st == TM_OK) st = tm_registry_put_image(reg, &ri);
    if (st == TM_OK) st = tm_registry_put_copy(reg, key, &rc_row, &copy_id);
    if (st == TM_OK) st = tm_registry_commit(reg);
    if (st != TM_OK) {
        report(reg_path, st, reg);
        tm_registry_rollback(reg);   /* nothing of this batch is kept */
        goto out;
    }
    st = tm_file_publish(staged, copy_path, 0); /* removes the temporary if it fails */
    staged[0] = '\0';
    if (st != TM_OK) {
        report(copy_path, st, NULL);
        goto out;
    }
    printf("marked %s -> %s (copy %lld, %zu bytes)\n", RECIPIENT, copy_path, (long long)copy_id, copy_len);

    /* 6. Trace the copy as a leaked suspect. Tracing reads luminance only,
     * so decode just that; score it against every copy in the registry. */
    tm_load_options lo;
    tm_load_options_init(&lo);
    lo.luma_only = 1;
    if ((st = tm_image_load(copy_path, &lo, &suspect, NULL)) != TM_OK) {
        report(copy_path, st, NULL);
        goto out;
    }
    if ((st = tm_registry_load_copies(reg, NULL, &copies, &n_copies)) != TM_OK) {
        report(reg_path, st, reg);
        goto out;
    }
    tm_trace_params tp;
    tm_trace_params_init(&tp);      /* false-accusation budget 1e-6 */
    if ((st = tm_trace_run(key, suspect, copies, n_copies, &tp, &result)) != TM_OK) {
        report("tracing the copy", st, NULL);
        goto out;
    }
    printf("trace: %s (%s); %zu cop%s scored, budget %g\n", verdict_name(result.verdict), result.reason,
           n_copies, n_copies == 1 ? "y" : "ies", tp.fpr);

    /* 7. The accused, each row's integrity tag checked first: a tampered
     * registry is an error, never evidence. log10_p bounds the chance that
     * any innocent copy among those scored scores this high. */
    rc = 1;
    for (size_t i = 0; i < result.n_accused; i++) {
        const tm_accusation *a = &result.accused[i];
        const tm_reg_copy *c = &copies[a->index];
        if ((st = tm_registry_check_copy(reg, key, c)) != TM_OK) {
            report(reg_path, st, reg);
            rc = 2;
            goto out;
        }
        printf("accused: %s (copy %lld), log10_p %.2f\n", c->recipient, (long long)c->copy_id, a->log10_p);
        if (strcmp(c->recipient, RECIPIENT) == 0) rc = 0;
    }

out:
    if (staged[0]) unlink(staged);   /* staged but never published */
    tm_trace_result_clear(&result);
    tm_reg_copies_free(copies, n_copies);
    tm_image_free(suspect);
    free(copy_data);
    tm_embedder_free(emb);           /* before the key it borrows */
    tm_registry_free(reg);
    tm_key_free(key);
    return rc;
}
