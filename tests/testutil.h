/* testutil.h -- shared helpers for the CUnit suites. */
#ifndef TM_TESTUTIL_H
#define TM_TESTUTIL_H

#include <CUnit/Basic.h>
#include <stddef.h>
#include <stdint.h>

#include "tracemark.h"

/* Whether TM_TEST_VERBOSE asks for the figures behind the assertions. */
int tm_test_verbose(void);

/* Runs one suite of NULL-terminated tests; returns the process exit code. */
int tm_test_main(const char *suite, CU_TestInfo *tests);

/* A fresh private directory for this test program, removed at exit. */
const char *tm_test_tmpdir(void);

/* Builds "<tmpdir>/<name>" into a static-lifetime buffer (tests only). */
const char *tm_test_path(const char *name);

/* Path of a bundled corpus photo (corpus/NAME under the source tree). */
const char *tm_test_corpus(const char *name);

/* Deterministic synthetic image: smooth gradients plus seeded texture, so
 * codecs see realistic structure; values in 0..255 (integers when round). */
tm_image *tm_test_synthetic(int w, int h, int channels, uint32_t seed, int round);

/* A constant image: every colour sample v, alpha (2 or 4 channels) 200. */
tm_image *tm_test_flat(int w, int h, int channels, float v);

/* Largest absolute sample difference between two images of equal shape,
 * or -1 when the shapes differ. */
double tm_test_maxdiff(const tm_image *a, const tm_image *b);

/* PSNR in dB over all colour channels (alpha ignored); 999 when identical. */
double tm_test_psnr(const tm_image *a, const tm_image *b);

/* Applies an attack spec, asserting success and an empty error message;
 * never returns NULL. */
tm_image *tm_test_attack(const char *spec, const tm_image *in);

/* Reads a whole file (asserting success) into a malloc'd buffer. */
uint8_t *tm_test_slurp(const char *path, size_t *len);

/* Writes a buffer to a file (asserting success). */
void tm_test_spit(const char *path, const void *data, size_t len);

#endif
