/* registry.c -- what tracing costs as the registry grows: scoring per copy,
 * the in-memory trace and the `tracemark trace` command, at each size
 * (issue 6; the bar is scoring <= 0.3 us per copy at 10^6 copies).
 *
 * Marks IMAGE once under a fixed key, makes the leaker's copy and attacks it
 * with "jpeg:q=75" (the suspect, kept as a JPEG q=100 of the attacked pixels
 * so the chain's compression is the one that counts), synthesizes the
 * registry from codewords (tm_embedder_codeword: "leaker", then
 * "innocent-1", ...; the largest size once, smaller sizes are its prefixes),
 * then for each SIZE times RUNS repetitions on one thread of:
 *
 *   scoring          tm_trace_score: trace.c's per-copy loop (image id
 *                    lookup, score, tail bound, accused or top list) over
 *                    SIZE copies, from the soft values read once: ns per copy
 *   tm_trace_run     the decoded suspect to a verdict, SIZE copies in memory
 *                    (detection included)
 *   tracemark trace  the program (-t) on the suspect's file with a SQLite
 *                    registry of SIZE copies, blind: process start, key,
 *                    registry load, decode, trace
 *
 * and the registry build: the time tm_registry_put_copy batches (open, put,
 * commit, close) took to bring the registry file to SIZE copies, summed over
 * the batches that grew it from empty. Detection alone and the program's
 * start (`tracemark --version`) are printed as references. The leaker must
 * be accused, alone, by each path at each size: exit 1 if not, 2 on error.
 * Scratch files live in a directory under $TMPDIR (or /tmp), removed on
 * every path out, a signal included.
 *
 *   bench/registry [-r RUNS] [-s SIZES] [-t TRACEMARK] IMAGE */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "scheme.h"
#include "tracemark.h"

#define MAX_RUNS BENCH_MAX_RUNS
#define MAX_SIZES 16
#define MAX_COPIES 10000000 /* about 2 GB of synthesized copies */
#define NAME_LEN 24         /* "innocent-" and up to 14 digits */
#define ATTACK "jpeg:q=75"

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

/* One table row: scoring in ns per copy (median, min, max), the trace and
 * the program at the median, the registry build. */
static void report(size_t n, double *score_ms, double *trace_ms, double *cli_ms, int runs, double build_s)
{
    double per = 1e6 / (double)n, med = bench_median(score_ms, runs);
    printf("| %zu | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f |\n", n, med * per, score_ms[0] * per,
           score_ms[runs - 1] * per, bench_median(trace_ms, runs), bench_median(cli_ms, runs), build_s);
    fflush(stdout);
}

static int fail(const char *what, tm_status st)
{
    fprintf(stderr, "registry: %s: %s\n", what, tm_strerror(st));
    return 2;
}

/* Parses "1000,10000" into sizes[], sorted and without repeats. */
static int parse_sizes(const char *s, size_t *sizes, int *n)
{
    *n = 0;
    while (*s) {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (end == s || errno || v < 1 || v > MAX_COPIES || (*end && *end != ',') || *n == MAX_SIZES) return -1;
        sizes[(*n)++] = (size_t)v;
        s = *end ? end + 1 : end;
    }
    if (*n == 0) return -1;
    qsort(sizes, (size_t)*n, sizeof *sizes, cmp_size);
    int k = 1;
    for (int i = 1; i < *n; i++)
        if (sizes[i] != sizes[k - 1]) sizes[k++] = sizes[i];
    *n = k;
    return 0;
}

/* ---- scratch files ----------------------------------------------------------- */

enum { F_KEY, F_SUSPECT, F_REG, F_REG_WAL, F_REG_SHM, F_REG_JOURNAL, F_OUT, N_FILES };
static const char *const file_name[N_FILES] = {"key", "suspect.jpg", "registry.db", "registry.db-wal",
                                               "registry.db-shm", "registry.db-journal", "trace.out"};

/* Whether r accuses the leaker's copy (index 0) and nobody else. */
static int leaker_alone(const tm_trace_result *r)
{
    return r->n_accused == 1 && r->accused[0].index == 0;
}

int main(int argc, char **argv)
{
    int runs = 5, n_sizes = 0, c;
    const char *sizes_arg = "1000,10000,100000,1000000", *program = "./tracemark";
    size_t sizes[MAX_SIZES];
    while ((c = getopt(argc, argv, "r:s:t:")) != -1) {
        if (c == 'r') runs = atoi(optarg);
        else if (c == 's') sizes_arg = optarg;
        else if (c == 't') program = optarg;
        else return 2;
    }
    if (optind != argc - 1 || runs < 1 || runs > MAX_RUNS || parse_sizes(sizes_arg, sizes, &n_sizes)) {
        fprintf(stderr, "usage: registry [-r RUNS (1..%d)] [-s SIZES (comma list, 1..%d)] [-t TRACEMARK] IMAGE\n",
                MAX_RUNS, MAX_COPIES);
        return 2;
    }
    if (access(program, X_OK) != 0) {
        fprintf(stderr, "registry: %s: %s (give the program with -t)\n", program, strerror(errno));
        return 2;
    }
    char real[4096], **env = NULL; /* the binary behind libtool's wrapper: no shell start in the times */
    if (bench_unwrap_libtool(program, real, sizeof real, &env)) program = real;
    const char *image = argv[optind];
    size_t n_max = sizes[n_sizes - 1];

    int rc = 2, all_identified = 1;
    tm_status st;
    uint8_t kb[TM_KEY_BYTES];
    for (int i = 0; i < TM_KEY_BYTES; i++) kb[i] = (uint8_t)(i * 29 + 7);
    tm_key *key = NULL;
    tm_image *orig = NULL, *marked = NULL, *attacked = NULL, *suspect = NULL;
    tm_embedder *emb = NULL;
    uint8_t *jpg = NULL;
    size_t jpg_len = 0;
    tm_reg_copy *copies = NULL;
    uint8_t(*words)[TM_CODEWORD_BYTES] = NULL;
    char(*names)[NAME_LEN] = NULL;
    tm_detection *det = NULL;
    tm_trace_result res;
    memset(&res, 0, sizeof res);
    tm_trace_params tp;
    tm_trace_params_init(&tp);
    int progress = isatty(STDERR_FILENO);

    /* The suspect: the leaker's copy through the attack, as a JPEG file and
     * decoded from those same bytes. */
    if ((st = tm_key_from_bytes(kb, &key)) != TM_OK) {
        rc = fail("key", st);
        goto out;
    }
    if ((st = tm_image_load(image, NULL, &orig, NULL)) != TM_OK) {
        rc = fail(image, st);
        goto out;
    }
    if ((st = tm_embedder_create(key, orig, NULL, &emb)) != TM_OK ||
        (st = tm_embedder_mark(emb, "leaker", &marked)) != TM_OK) {
        rc = fail("mark", st);
        goto out;
    }
    char err[256] = "";
    if ((st = tm_attack_apply(ATTACK, marked, &attacked, err, sizeof err)) != TM_OK) {
        fprintf(stderr, "registry: %s: %s\n", ATTACK, err);
        goto out;
    }
    tm_save_options so;
    tm_save_options_init(&so);
    so.format = TM_FORMAT_JPEG;
    so.quality = 100;
    if ((st = tm_image_encode(attacked, &so, &jpg, &jpg_len)) != TM_OK ||
        (st = tm_image_decode(jpg, jpg_len, NULL, &suspect, NULL)) != TM_OK) {
        rc = fail("suspect", st);
        goto out;
    }
    if (bench_scratch_create("registry", file_name, N_FILES)) goto out;
    if ((st = tm_key_save(key, bench_scratch(F_KEY))) != TM_OK) {
        rc = fail(bench_scratch(F_KEY), st);
        goto out;
    }
    if ((st = tm_file_write_atomic(bench_scratch(F_SUSPECT), jpg, jpg_len, 0600, 1)) != TM_OK) {
        rc = fail(bench_scratch(F_SUSPECT), st);
        goto out;
    }

    /* The copies: the leaker's first, then innocents. */
    copies = calloc(n_max, sizeof *copies);
    words = calloc(n_max, TM_CODEWORD_BYTES);
    names = calloc(n_max, NAME_LEN);
    det = malloc(sizeof *det);
    if (!copies || !words || !names || !det) {
        rc = fail("copies", TM_ERR_NOMEM);
        goto out;
    }
    if (progress) fprintf(stderr, "registry: making %zu codewords\n", n_max);
    int64_t now = (int64_t)time(NULL);
    double t0 = bench_now_ms();
    for (size_t i = 0; i < n_max; i++) {
        snprintf(names[i], NAME_LEN, i ? "innocent-%zu" : "leaker", i);
        if ((st = tm_embedder_codeword(emb, names[i], words[i])) != TM_OK) {
            rc = fail("codeword", st);
            goto out;
        }
        copies[i] = (tm_reg_copy){.copy_id = (int64_t)i + 1, .image_id = tm_embedder_image_id(emb),
                                  .recipient = names[i], .created = now, .code_len = TM_CODEWORD_BYTES * 8,
                                  .codeword = words[i]};
    }
    double codeword_s = (bench_now_ms() - t0) / 1e3;
    tm_reg_image ri;
    memset(&ri, 0, sizeof ri);
    snprintf(ri.image_id, sizeof ri.image_id, "%s", tm_embedder_image_id(emb));
    tm_embedder_content_sha256(emb, ri.content_sha256);
    ri.width = orig->width;
    ri.height = orig->height;
    ri.original_path = argv[optind];
    ri.params = (char *)tm_scheme_params_json();
    ri.created = now;
    if ((st = tm_image_phash(orig, &ri.phash)) != TM_OK) {
        rc = fail("phash", st);
        goto out;
    }

    /* References: detection alone (once more first, which also plans the
     * FFTs) and the program's start. */
    double t_det[MAX_RUNS], t_start[MAX_RUNS], t_score[MAX_RUNS], t_trace[MAX_RUNS], t_cli[MAX_RUNS];
    if ((st = tm_detect_search(key, suspect, det)) != TM_OK) {
        rc = fail("detect", st);
        goto out;
    }
    for (int r = 0; r < runs; r++) {
        tm_detection d;
        t0 = bench_now_ms();
        if ((st = tm_detect_search(key, suspect, &d)) != TM_OK) {
            rc = fail("detect", st);
            goto out;
        }
        t_det[r] = bench_now_ms() - t0;
    }
    char *version_argv[] = {(char *)program, "--version", NULL};
    for (int r = 0; r < runs; r++) {
        int status = 0;
        if (bench_run_program(version_argv, env, bench_scratch(F_OUT), &t_start[r], &status) != 0 || status != 0) {
            fprintf(stderr, "registry: %s --version: %s\n", program, status ? "failed" : strerror(errno));
            goto out;
        }
    }

    printf("image: %s, %dx%d; suspect: the leaker's copy through `%s`, %dx%d (%.2f MP), JPEG q100 of %zu bytes; "
           "%d run%s, one thread\n",
           image, orig->width, orig->height, ATTACK, suspect->width, suspect->height,
           suspect->width * (double)suspect->height / 1e6, jpg_len, runs, runs == 1 ? "" : "s");
    printf("references: detection alone (tm_detect_search) %.1f ms median; program start (`%s --version`) "
           "%.1f ms median; %zu codewords made in %.1f s (%.2f us each)\n\n",
           bench_median(t_det, runs), program, bench_median(t_start, runs), n_max, codeword_s,
           codeword_s * 1e6 / (double)n_max);
    printf("| copies | scoring ns/copy (median) | min | max | tm_trace_run ms | `tracemark trace` ms "
           "| registry build s |\n|---|---|---|---|---|---|---|\n");
    fflush(stdout);

    size_t built = 0;
    double build_s = 0;
    /* --blind: the registry records IMAGE as the original, and this measures
     * the blind path (informed trace has its own cost, docs/scheme.md 11) */
    char *trace_argv[] = {(char *)program, "trace", "-k", bench_scratch(F_KEY), "-r", bench_scratch(F_REG),
                          "--blind", bench_scratch(F_SUSPECT), NULL};
    for (int k = 0; k < n_sizes; k++) {
        size_t n = sizes[k];
        int identified = 1;

        if (progress) fprintf(stderr, "registry: %zu copies: building the registry file\n", n);
        t0 = bench_now_ms();
        if (bench_registry_add(bench_scratch(F_REG), key, built ? NULL : &ri, copies, built, n) != TM_OK) goto out;
        build_s += (bench_now_ms() - t0) / 1e3;
        built = n;

        /* Scoring: trace.c's own loop from the soft values on (one warm-up). */
        if (progress) fprintf(stderr, "registry: %zu copies: scoring and tracing\n", n);
        if ((st = tm_trace_score(key, det, copies, n, &tp, &res)) != TM_OK) {
            rc = fail("scoring", st);
            goto out;
        }
        tm_trace_result_clear(&res);
        for (int r = 0; r < runs; r++) {
            t0 = bench_now_ms();
            st = tm_trace_score(key, det, copies, n, &tp, &res);
            t_score[r] = bench_now_ms() - t0;
            if (st != TM_OK) {
                rc = fail("scoring", st);
                goto out;
            }
            identified &= leaker_alone(&res);
            tm_trace_result_clear(&res);
        }

        for (int r = 0; r < runs; r++) {
            t0 = bench_now_ms();
            st = tm_trace_run(key, suspect, copies, n, &tp, &res);
            t_trace[r] = bench_now_ms() - t0;
            if (st != TM_OK) {
                rc = fail("trace", st);
                goto out;
            }
            identified &= leaker_alone(&res);
            tm_trace_result_clear(&res);
        }
        if (!identified) fprintf(stderr, "registry: %zu copies: the leaker is not the one copy accused in memory\n", n);

        for (int r = 0; r < runs; r++) {
            int status;
            if (bench_run_program(trace_argv, env, bench_scratch(F_OUT), &t_cli[r], &status) != 0) {
                fprintf(stderr, "registry: %s: %s\n", program, strerror(errno));
                goto out;
            }
            if (status != 0 && status != 1) {
                if (status < 0)
                    fprintf(stderr, "registry: %zu copies: `%s trace` was killed by a signal\n", n, program);
                else
                    fprintf(stderr, "registry: %zu copies: `%s trace` exited %d, not 0 (accused)\n", n, program,
                            status);
                bench_output_accuses_leaker(bench_scratch(F_OUT));
                goto out;
            }
            int named = bench_output_accuses_leaker(bench_scratch(F_OUT));
            if (status != 0 || !named) {
                fprintf(stderr, "registry: %zu copies: `%s trace` exited %d and did not accuse the leaker alone\n",
                        n, program, status);
                identified = 0;
            }
        }
        all_identified &= identified;
        report(n, t_score, t_trace, t_cli, runs, build_s);
    }
    printf("registry build: cumulative seconds of tm_registry_put_copy batches (open, put, commit, close) growing "
           "one file from empty to each size\n");
    printf("leaker accused alone at every size by the scoring loop, tm_trace_run and `tracemark trace`: %s\n",
           all_identified ? "yes" : "NO");
    rc = all_identified ? 0 : 1;
out:
    bench_scratch_remove();
    bench_env_free(env);
    tm_trace_result_clear(&res);
    free(det);
    free(copies);
    free(words);
    free(names);
    free(jpg);
    tm_image_free(suspect);
    tm_image_free(attacked);
    tm_image_free(marked);
    tm_image_free(orig);
    tm_embedder_free(emb);
    tm_key_free(key);
    return rc;
}
