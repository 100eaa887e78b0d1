/* testutil.c -- shared helpers for the CUnit suites. */
#define _DEFAULT_SOURCE
#include "testutil.h"

#include <gsl/gsl_errno.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[512];

int tm_test_verbose(void)
{
    const char *v = getenv("TM_TEST_VERBOSE");
    return v && *v && strcmp(v, "0") != 0;
}

static void remove_tmpdir(void)
{
    if (!tmpdir[0]) return;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", tmpdir);
}

const char *tm_test_tmpdir(void)
{
    if (!tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/tmtest-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            exit(2);
        }
        atexit(remove_tmpdir);
    }
    return tmpdir;
}

const char *tm_test_path(const char *name)
{
    static char bufs[8][768];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", tm_test_tmpdir(), name);
    return b;
}

const char *tm_test_corpus(const char *name)
{
    static char bufs[4][768];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/corpus/%s", TM_SRCDIR, name);
    return b;
}

/* xorshift32: test data only, never key material. */
static uint32_t xs(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

tm_image *tm_test_synthetic(int w, int h, int channels, uint32_t seed, int round)
{
    tm_image *img;
    if (tm_image_create(w, h, channels, &img) != TM_OK) return NULL;
    uint32_t s = seed * 2654435761u + 1u;
    for (int c = 0; c < channels; c++) {
        float *p = img->plane[c];
        double fx = 0.013 * (c + 1), fy = 0.021 / (c + 1);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double v = 128 + 70 * sin(fx * x + 0.3 * c) * cos(fy * y) + 30.0 * x / w - 15.0 * y / h;
                v += (double)(xs(&s) % 25) - 12.0; /* texture */
                if (v < 0) v = 0;
                if (v > 255) v = 255;
                p[(size_t)y * w + x] = round ? (float)floor(v + 0.5) : (float)v;
            }
    }
    return img;
}

double tm_test_maxdiff(const tm_image *a, const tm_image *b)
{
    if (a->width != b->width || a->height != b->height || a->channels != b->channels) return -1;
    double m = 0;
    size_t n = (size_t)a->width * a->height;
    for (int c = 0; c < a->channels; c++)
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)a->plane[c][i] - b->plane[c][i]);
            if (d > m) m = d;
        }
    return m;
}

double tm_test_psnr(const tm_image *a, const tm_image *b)
{
    return tm_psnr(a, b);
}

tm_image *tm_test_attack(const char *spec, const tm_image *in)
{
    tm_image *out = NULL;
    char err[256] = "";
    tm_status st = tm_attack_apply(spec, in, &out, err, sizeof err);
    if (st != TM_OK) fprintf(stderr, "attack '%s': %s (%s)\n", spec, tm_strerror(st), err);
    CU_ASSERT_EQUAL_FATAL(st, TM_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_STRING_EQUAL(err, "");
    return out;
}

uint8_t *tm_test_slurp(const char *path, size_t *len)
{
    uint8_t *data = NULL;
    tm_status st = tm_file_read(path, (size_t)1 << 30, &data, len);
    CU_ASSERT_EQUAL_FATAL(st, TM_OK);
    return data;
}

void tm_test_spit(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fwrite(data, 1, len, f), len);
    CU_ASSERT_EQUAL(fclose(f), 0);
}

int tm_test_main(const char *suite, CU_TestInfo *tests)
{
    gsl_set_error_handler_off(); /* as the program does: the library checks every status */
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_SuiteInfo suites[] = {{suite, NULL, NULL, NULL, NULL, tests}, CU_SUITE_INFO_NULL};
    if (CU_register_suites(suites) != CUE_SUCCESS) {
        CU_cleanup_registry();
        return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    unsigned run = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    if (run == 0) return 2;
    return failed ? 1 : 0;
}

tm_image *tm_test_flat(int w, int h, int channels, float v)
{
    tm_image *img = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_create(w, h, channels, &img), TM_OK);
    int nc = channels == 2 || channels == 4 ? channels - 1 : channels;
    for (int c = 0; c < channels; c++)
        for (size_t i = 0; i < (size_t)w * h; i++) img->plane[c][i] = c < nc ? v : 200.0f;
    return img;
}
