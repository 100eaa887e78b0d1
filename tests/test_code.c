/* test_code.c -- keyed Tardos codewords, the accusation score and its bound.
 *
 * The heart of this suite is "the bound is honest": for fixed soft values y
 * (well-behaved, heavy-tailed, skewed, degenerate, and a real one read from
 * an unmarked image), the scores of many innocent codewords made by the real
 * generator must exceed the threshold whose stated tail bound is 10^-k no
 * more often than 10^-k allows (with binomial slack). The bound is proved for
 * any y, so every y below must pass; none was chosen to make it pass.
 *
 * Random numbers come from GSL's MT19937 with fixed seeds printed on failure;
 * codewords come from fixed keys, so every run sees the same data. Set
 * TM_TEST_VERBOSE=1 to print the empirical rates beside their bounds. */
#include "testutil.h"
#include "scheme.h"

#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define M TM_CODE_BITS
#define N_INNOCENT 300000

static const char IMAGE_ID[] = "0123456789abcdef0123456789abcdef";

/* A fixed test key: bytes seed, seed+7, seed+14, ... */
static tm_key *make_key(uint8_t seed)
{
    uint8_t b[TM_KEY_BYTES];
    for (int i = 0; i < TM_KEY_BYTES; i++) b[i] = (uint8_t)(seed + 7 * i);
    tm_key *k = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_key_from_bytes(b, &k), TM_OK);
    return k;
}

static void image_id(unsigned n, char id[TM_IMAGE_ID_LEN + 1])
{
    snprintf(id, TM_IMAGE_ID_LEN + 1, "%08x%08x%016x", n * 2654435761u, n, 0xabcu);
}

static int bit(const uint8_t *bits, int i)
{
    return bits[i >> 3] >> (i & 7) & 1;
}

static gsl_rng *rng_new(unsigned long seed)
{
    gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    gsl_rng_set(r, seed);
    return r;
}

/* ---- the pool of innocent codewords, made once -------------------------- */

static uint8_t (*pool)[TM_CODE_BYTES];
static double pool_p[M];

static void pool_free(void)
{
    free(pool);
    pool = NULL;
}

/* N_INNOCENT codewords "innocent-%d" of IMAGE_ID under key 1, by tm_code_word. */
static const uint8_t (*innocents(void))[TM_CODE_BYTES]
{
    if (pool) return (const uint8_t(*)[TM_CODE_BYTES])pool;
    tm_key *k = make_key(1);
    CU_ASSERT_EQUAL_FATAL(tm_code_bias(k, IMAGE_ID, pool_p), TM_OK);
    pool = malloc(sizeof *pool * N_INNOCENT);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pool);
    atexit(pool_free);
    char r[32];
    for (int j = 0; j < N_INNOCENT; j++) {
        snprintf(r, sizeof r, "innocent-%d", j);
        if (tm_code_word(k, IMAGE_ID, r, pool_p, pool[j]) != TM_OK) {
            tm_key_free(k);
            pool_free();
            CU_FAIL_FATAL("tm_code_word failed making the innocent pool");
        }
    }
    tm_key_free(k);
    return (const uint8_t(*)[TM_CODE_BYTES])pool;
}

/* ---- biases --------------------------------------------------------------- */

static void test_bias_deterministic(void)
{
    tm_key *k1 = make_key(1), *k1b = make_key(1), *k2 = make_key(2);
    double a[M], b[M], c[M], d[M];
    char other[TM_IMAGE_ID_LEN + 1];
    image_id(7, other);
    CU_ASSERT_EQUAL(tm_code_bias(k1, IMAGE_ID, a), TM_OK);
    CU_ASSERT_EQUAL(tm_code_bias(k1b, IMAGE_ID, b), TM_OK);
    CU_ASSERT_EQUAL(memcmp(a, b, sizeof a), 0);
    CU_ASSERT_EQUAL(tm_code_bias(k1, other, c), TM_OK);
    CU_ASSERT_EQUAL(tm_code_bias(k2, IMAGE_ID, d), TM_OK);
    /* Another image or key gives an unrelated vector, not a near copy. */
    int same_c = 0, same_d = 0;
    for (int i = 0; i < M; i++) {
        same_c += a[i] == c[i];
        same_d += a[i] == d[i];
    }
    CU_ASSERT_EQUAL(same_c, 0);
    CU_ASSERT_EQUAL(same_d, 0);
    tm_key_free(k1);
    tm_key_free(k1b);
    tm_key_free(k2);
}

/* The truncated arcsine law: p = sin^2 r, r uniform on [rt, pi/2 - rt] with
 * rt = asin(sqrt t), so F(q) = (asin(sqrt q) - rt) / (pi/2 - 2 rt). */
static double arcsine_cdf(double q)
{
    double rt = asin(sqrt(TM_BIAS_CUTOFF));
    return (asin(sqrt(q)) - rt) / (M_PI / 2 - 2 * rt);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void test_bias_distribution(void)
{
    enum { IMAGES = 400 };
    const size_t n = (size_t)IMAGES * M;
    double *all = malloc(sizeof(double) * n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(all);
    tm_key *k = make_key(3);
    char id[TM_IMAGE_ID_LEN + 1];
    int out_of_range = 0;
    double lo = 1, hi = 0, sum = 0;
    for (unsigned j = 0; j < IMAGES; j++) {
        image_id(j, id);
        CU_ASSERT_EQUAL_FATAL(tm_code_bias(k, id, all + (size_t)j * M), TM_OK);
    }
    for (size_t i = 0; i < n; i++) {
        /* 1e-12: sin^2(asin(sqrt t)) may round a hair below t. */
        if (!(all[i] >= TM_BIAS_CUTOFF - 1e-12 && all[i] <= 1 - TM_BIAS_CUTOFF + 1e-12)) out_of_range++;
        lo = fmin(lo, all[i]);
        hi = fmax(hi, all[i]);
        sum += all[i];
    }
    if (out_of_range) fprintf(stderr, "%d biases outside [t, 1-t] (min %g max %g)\n", out_of_range, lo, hi);
    CU_ASSERT_EQUAL(out_of_range, 0);
    /* The density is heaviest at the ends: with 102400 draws both ends are
     * reached to within 1e-3. */
    CU_ASSERT(lo < TM_BIAS_CUTOFF + 1e-3);
    CU_ASSERT(hi > 1 - TM_BIAS_CUTOFF - 1e-3);
    /* Symmetric about 1/2: mean 1/2, sd of one draw < 0.33. */
    CU_ASSERT_DOUBLE_EQUAL(sum / n, 0.5, 5 * 0.33 / sqrt((double)n));

    /* Fractions below several points, each within 5 binomial sd of F(q). */
    static const double qs[] = {0.15, 0.2, 0.3, 0.5, 0.7, 0.85};
    for (size_t t = 0; t < sizeof qs / sizeof qs[0]; t++) {
        size_t below = 0;
        for (size_t i = 0; i < n; i++) below += all[i] < qs[t];
        double f = (double)below / n, want = arcsine_cdf(qs[t]);
        double tol = 5 * sqrt(want * (1 - want) / n);
        if (fabs(f - want) > tol)
            fprintf(stderr, "bias fraction below %.2f: %.5f, arcsine law says %.5f (tol %.5f)\n", qs[t], f, want, tol);
        CU_ASSERT(fabs(f - want) <= tol);
    }
    /* Power: a plausible wrong law, uniform on [t, 1-t], sits outside these
     * tolerances at every point but the median. */
    int separated = 0;
    for (size_t t = 0; t < sizeof qs / sizeof qs[0]; t++) {
        double want = arcsine_cdf(qs[t]), unif = (qs[t] - TM_BIAS_CUTOFF) / (1 - 2 * TM_BIAS_CUTOFF);
        separated += fabs(want - unif) > 2 * 5 * sqrt(want * (1 - want) / n);
    }
    CU_ASSERT_EQUAL(separated, 5);

    /* Kolmogorov-Smirnov over all draws: D < 1.95/sqrt(n) (alpha 0.001). */
    double dmax = 0;
    qsort(all, n, sizeof(double), cmp_double);
    for (size_t i = 0; i < n; i++) {
        double F = arcsine_cdf(fmin(fmax(all[i], TM_BIAS_CUTOFF), 1 - TM_BIAS_CUTOFF));
        dmax = fmax(dmax, fmax(fabs(F - (double)i / n), fabs(F - (double)(i + 1) / n)));
    }
    if (dmax >= 1.95 / sqrt((double)n)) fprintf(stderr, "KS distance to the truncated arcsine law %.5f\n", dmax);
    CU_ASSERT(dmax < 1.95 / sqrt((double)n));
    tm_key_free(k);
    free(all);
}

/* ---- codewords ------------------------------------------------------------ */

static void test_word_deterministic(void)
{
    tm_key *k = make_key(1), *k2 = make_key(2);
    double p[M];
    CU_ASSERT_EQUAL_FATAL(tm_code_bias(k, IMAGE_ID, p), TM_OK);
    uint8_t a[TM_CODE_BYTES], b[TM_CODE_BYTES], c[TM_CODE_BYTES], d[TM_CODE_BYTES], e[TM_CODE_BYTES];
    CU_ASSERT_EQUAL(tm_code_word(k, IMAGE_ID, "alice", p, a), TM_OK);
    CU_ASSERT_EQUAL(tm_code_word(k, IMAGE_ID, "alice", p, b), TM_OK);
    CU_ASSERT_EQUAL(memcmp(a, b, sizeof a), 0);
    CU_ASSERT_EQUAL(tm_code_word(k, IMAGE_ID, "bob", p, c), TM_OK);
    CU_ASSERT_EQUAL(tm_code_word(k2, IMAGE_ID, "alice", p, d), TM_OK);
    char other[TM_IMAGE_ID_LEN + 1];
    image_id(7, other);
    CU_ASSERT_EQUAL(tm_code_word(k, other, "alice", p, e), TM_OK);
    /* Two independent words with these biases agree on ~60% of bits; a
     * different word must differ in at least 30 of 256. */
    int dc = 0, dd = 0, de = 0;
    for (int i = 0; i < M; i++) {
        dc += bit(a, i) != bit(c, i);
        dd += bit(a, i) != bit(d, i);
        de += bit(a, i) != bit(e, i);
    }
    CU_ASSERT(dc >= 30);
    CU_ASSERT(dd >= 30);
    CU_ASSERT(de >= 30);
    /* The separator keeps (image, recipient) pairs apart: "ab"+"c" != "a"+"bc". */
    uint8_t f[TM_CODE_BYTES], g[TM_CODE_BYTES];
    CU_ASSERT_EQUAL(tm_code_word(k, "ab", "c", p, f), TM_OK);
    CU_ASSERT_EQUAL(tm_code_word(k, "a", "bc", p, g), TM_OK);
    CU_ASSERT_NOT_EQUAL(memcmp(f, g, sizeof f), 0);
    tm_key_free(k);
    tm_key_free(k2);
}

static void test_word_extremes_and_limits(void)
{
    tm_key *k = make_key(1);
    double p0[M], p1[M];
    for (int i = 0; i < M; i++) {
        p0[i] = 0;
        p1[i] = 1;
    }
    uint8_t w[TM_CODE_BYTES];
    static const uint8_t zeros[TM_CODE_BYTES], ones[TM_CODE_BYTES] = {
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255};
    CU_ASSERT_EQUAL(tm_code_word(k, IMAGE_ID, "x", p0, w), TM_OK);
    CU_ASSERT_EQUAL(memcmp(w, zeros, sizeof w), 0);
    CU_ASSERT_EQUAL(tm_code_word(k, IMAGE_ID, "x", p1, w), TM_OK);
    CU_ASSERT_EQUAL(memcmp(w, ones, sizeof w), 0);

    /* Documented-by-code limits: image id <= 256 bytes, recipient <= 4096. */
    char *big = malloc(4098);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    memset(big, 'r', 4097);
    big[4097] = 0;
    CU_ASSERT_EQUAL(tm_code_word(k, IMAGE_ID, big, p1, w), TM_ERR_ARG);
    big[4096] = 0;
    CU_ASSERT_EQUAL(tm_code_word(k, IMAGE_ID, big, p1, w), TM_OK);
    big[257] = 0;
    CU_ASSERT_EQUAL(tm_code_word(k, big, "x", p1, w), TM_ERR_ARG);
    big[256] = 0;
    CU_ASSERT_EQUAL(tm_code_word(k, big, "x", p1, w), TM_OK);
    free(big);
    tm_key_free(k);
}

static void test_word_frequencies(void)
{
    enum { R = 2000 };
    tm_key *k = make_key(4);
    double p[M];
    CU_ASSERT_EQUAL_FATAL(tm_code_bias(k, IMAGE_ID, p), TM_OK);
    static int ones[M];
    static int both[M]; /* bit i and bit i+1 both set: independence of neighbours */
    memset(ones, 0, sizeof ones);
    memset(both, 0, sizeof both);
    char r[32];
    uint8_t w[TM_CODE_BYTES];
    for (int j = 0; j < R; j++) {
        snprintf(r, sizeof r, "recipient %d", j);
        CU_ASSERT_EQUAL_FATAL(tm_code_word(k, IMAGE_ID, r, p, w), TM_OK);
        for (int i = 0; i < M; i++) {
            ones[i] += bit(w, i);
            if (i + 1 < M) both[i] += bit(w, i) & bit(w, i + 1);
        }
    }
    double mad = 0, zmax = 0, zpair = 0;
    for (int i = 0; i < M; i++) {
        double f = (double)ones[i] / R;
        mad += fabs(f - p[i]);
        zmax = fmax(zmax, fabs(f - p[i]) / sqrt(p[i] * (1 - p[i]) / R));
        if (i + 1 < M) {
            double q = p[i] * p[i + 1];
            zpair = fmax(zpair, fabs((double)both[i] / R - q) / sqrt(q * (1 - q) / R));
        }
    }
    mad /= M;
    /* E|f - p| ~ 0.8 sqrt(p(1-p)/R) <= 0.009 here; a generator ignoring p
     * (p = 1/2 everywhere) gives ~0.2. Max over 256 positions of |z| stays
     * below 4.5 (P ~ 256 * 7e-6). */
    if (mad > 0.012 || zmax > 4.5 || zpair > 4.5)
        fprintf(stderr, "codeword frequencies: mean |f-p| %.4f, max |z| %.2f, max pair |z| %.2f\n", mad, zmax, zpair);
    CU_ASSERT(mad <= 0.012);
    CU_ASSERT(zmax <= 4.5);
    CU_ASSERT(zpair <= 4.5);
    tm_key_free(k);
}

/* ---- the scorer ----------------------------------------------------------- */

static double g_weight(int x, double p)
{
    return x ? sqrt((1 - p) / p) : -sqrt(p / (1 - p));
}

static double direct_score(const double *y, const double *p, const uint8_t *bits)
{
    double s = 0;
    for (int i = 0; i < M; i++) s += y[i] * g_weight(bit(bits, i), p[i]);
    return s;
}

static void test_scorer_matches_direct_sum(void)
{
    const unsigned long seed = 20240501;
    gsl_rng *rng = rng_new(seed);
    tm_key *k = make_key(5);
    int bad = 0;
    for (int trial = 0; trial < 50; trial++) {
        double p[M], y[M];
        char id[TM_IMAGE_ID_LEN + 1];
        image_id((unsigned)trial, id);
        CU_ASSERT_EQUAL_FATAL(tm_code_bias(k, id, p), TM_OK);
        double scale = pow(10, gsl_rng_uniform(rng) * 6 - 3); /* 1e-3 .. 1e3 */
        for (int i = 0; i < M; i++) y[i] = scale * gsl_ran_gaussian(rng, 1.0);
        tm_scorer s;
        tm_scorer_init(&s, y, p);
        /* The fields the bound rests on, from their definitions. */
        double var = 0, bmax = 0, range2 = 0;
        for (int i = 0; i < M; i++) {
            double g1 = g_weight(1, p[i]), g0 = g_weight(0, p[i]);
            var += y[i] * y[i];
            bmax = fmax(bmax, fmax(fabs(y[i] * g1), fabs(y[i] * g0)));
            range2 += (y[i] * (g1 - g0)) * (y[i] * (g1 - g0));
        }
        if (fabs(s.var - var) > 1e-9 * var || fabs(s.bmax - bmax) > 1e-9 * bmax ||
            fabs(s.range2 - range2) > 1e-9 * range2)
            bad++;
        for (int j = 0; j < 40; j++) {
            uint8_t w[TM_CODE_BYTES];
            for (int b = 0; b < TM_CODE_BYTES; b++) w[b] = (uint8_t)gsl_rng_uniform_int(rng, 256);
            if (j == 0) memset(w, 0, sizeof w);
            if (j == 1) memset(w, 255, sizeof w);
            double want = direct_score(y, p, w), got = tm_scorer_score(&s, w);
            /* Relative to the score's natural size sqrt(var): a score can be
             * near 0 while its terms are not. */
            if (fabs(got - want) > 1e-9 * (fabs(want) + sqrt(var))) {
                if (bad < 5) fprintf(stderr, "seed %lu trial %d word %d: score %.17g, direct sum %.17g\n", seed, trial, j, got, want);
                bad++;
            }
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
    tm_key_free(k);
    gsl_rng_free(rng);
}

static void test_tail_shape(void)
{
    const unsigned long seed = 77;
    gsl_rng *rng = rng_new(seed);
    tm_key *k = make_key(6);
    double p[M], y[M], zero[M] = {0};
    CU_ASSERT_EQUAL_FATAL(tm_code_bias(k, IMAGE_ID, p), TM_OK);
    for (int i = 0; i < M; i++) y[i] = gsl_ran_gaussian(rng, 1.0);
    tm_scorer s;
    tm_scorer_init(&s, y, p);
    CU_ASSERT_EQUAL(tm_scorer_log10_tail(&s, 0.0), 0.0);
    CU_ASSERT_EQUAL(tm_scorer_log10_tail(&s, -1.0), 0.0);
    CU_ASSERT_EQUAL(tm_scorer_log10_tail(&s, -1e300), 0.0);
    /* Strictly decreasing and never above 0 (a probability bound). */
    double prev = 0;
    int bad = 0;
    for (double sc = 0.01; sc < 1e4; sc *= 1.1) {
        double t = tm_scorer_log10_tail(&s, sc);
        if (!(t < prev) || !(t <= 0)) {
            if (bad < 3) fprintf(stderr, "seed %lu: log10 tail(%g) = %g after %g\n", seed, sc, t, prev);
            bad++;
        }
        prev = t;
    }
    CU_ASSERT_EQUAL(bad, 0);
    /* At the score's own sd the bound is weak but finite; far out it is tiny. */
    double sd = sqrt(s.var);
    CU_ASSERT(tm_scorer_log10_tail(&s, sd) > -1.0);
    CU_ASSERT(tm_scorer_log10_tail(&s, 20 * sd) < -10.0);
    /* The fast bound equals the smaller of Bernstein and Hoeffding, from y
     * and p directly; the exact Chernoff bound is never weaker, and far out
     * much stronger. */
    double var = 0, bmax = 0, range2 = 0;
    for (int i = 0; i < M; i++) {
        double g1 = g_weight(1, p[i]), g0 = g_weight(0, p[i]);
        var += y[i] * y[i];
        bmax = fmax(bmax, fabs(y[i]) * fmax(g1, -g0));
        range2 += y[i] * y[i] * (g1 - g0) * (g1 - g0);
    }
    for (double f = 0.5; f <= 16; f *= 2) {
        double sc = f * sd;
        double bern = -(sc * sc / 2) / (var + bmax * sc / 3), hoef = -2 * sc * sc / range2;
        CU_ASSERT_DOUBLE_EQUAL(tm_scorer_log10_tail_fast(&s, sc), fmin(bern, hoef) / M_LN10, 1e-9 * fabs(bern));
        CU_ASSERT(tm_scorer_log10_tail(&s, sc) <= tm_scorer_log10_tail_fast(&s, sc) + 1e-12);
    }
    CU_ASSERT(tm_scorer_log10_tail(&s, 8 * sd) < tm_scorer_log10_tail_fast(&s, 8 * sd) - 3);
    /* y all zero: no evidence, bound 1. */
    tm_scorer z;
    tm_scorer_init(&z, zero, p);
    CU_ASSERT_EQUAL(tm_scorer_log10_tail(&z, 5.0), 0.0);
    tm_key_free(k);
    gsl_rng_free(rng);
}

/* ---- the bound is honest ------------------------------------------------ */

/* The score whose log10 bound is target (< 0), by bisection. */
static double threshold_for(const tm_scorer *s, double target)
{
    double lo = 0, hi = sqrt(s->var) + 1e-300;
    while (tm_scorer_log10_tail(s, hi) > target) hi *= 2;
    for (int it = 0; it < 200; it++) {
        double mid = (lo + hi) / 2;
        if (tm_scorer_log10_tail(s, mid) > target) lo = mid;
        else hi = mid;
    }
    return hi;
}

typedef struct yvec {
    char name[64];
    double y[M];
    int check_loose;   /* the bound must not be absurdly loose for this y (all
                          but the two-valued spike, whose 1e-1 threshold lies
                          beyond the largest score it can take) */
} yvec;

/* Fills the soft-value vectors the bound is tried on. */
static size_t make_yvecs(yvec *v, const double *p, unsigned long seed)
{
    gsl_rng *rng = rng_new(seed);
    size_t n = 0;
    int order[M]; /* positions by increasing p: the most skewed first */
    for (int i = 0; i < M; i++) order[i] = i;
    for (int i = 1; i < M; i++)
        for (int j = i; j > 0 && p[order[j]] < p[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }

    snprintf(v[n].name, sizeof v[n].name, "gaussian");
    for (int i = 0; i < M; i++) v[n].y[i] = gsl_ran_gaussian(rng, 1.0);
    v[n++].check_loose = 1;

    snprintf(v[n].name, sizeof v[n].name, "student-t, 2 dof");
    for (int i = 0; i < M; i++) v[n].y[i] = gsl_ran_tdist(rng, 2.0);
    v[n++].check_loose = 1;

    /* Three huge outliers where g(1,p) is largest: the score's right tail is
     * then a few rare big jumps, the worst case for a Gaussian-style bound. */
    snprintf(v[n].name, sizeof v[n].name, "gaussian + 3 outliers of 60 at smallest p");
    for (int i = 0; i < M; i++) v[n].y[i] = gsl_ran_gaussian(rng, 1.0);
    for (int k = 0; k < 3; k++) v[n].y[order[k]] = 60;
    v[n++].check_loose = 1;

    snprintf(v[n].name, sizeof v[n].name, "all equal +1");
    for (int i = 0; i < M; i++) v[n].y[i] = 1;
    v[n++].check_loose = 1;

    snprintf(v[n].name, sizeof v[n].name, "all equal -3");
    for (int i = 0; i < M; i++) v[n].y[i] = -3;
    v[n++].check_loose = 1;

    /* y = 1 only on the most skewed quarter: a sum of right-skewed terms. */
    snprintf(v[n].name, sizeof v[n].name, "skewed: 1 on the 64 smallest p");
    memset(v[n].y, 0, sizeof v[n].y);
    for (int k = 0; k < M / 4; k++) v[n].y[order[k]] = 1;
    v[n++].check_loose = 1;

    /* A single bit decides: S takes two values. */
    snprintf(v[n].name, sizeof v[n].name, "one spike at the smallest p");
    memset(v[n].y, 0, sizeof v[n].y);
    v[n].y[order[0]] = 1000;
    v[n++].check_loose = 0;

    gsl_rng_free(rng);
    return n;
}

/* Soft values read by the real detector from an unmarked synthetic image. */
static void detector_y(double *y)
{
    tm_image *img = tm_test_synthetic(256, 256, 3, 99, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(img);
    tm_key *k = make_key(1);
    tm_detection det;
    CU_ASSERT_EQUAL_FATAL(tm_detect_run(k, img, &det), TM_OK);
    memcpy(y, det.y, sizeof det.y);
    tm_key_free(k);
    tm_image_free(img);
}

static void test_bound_is_honest(void)
{
    const unsigned long seed = 4242;
    const uint8_t(*words)[TM_CODE_BYTES] = innocents();
    yvec *v = calloc(10, sizeof *v);
    double *score = malloc(sizeof(double) * N_INNOCENT);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_PTR_NOT_NULL_FATAL(score);
    size_t nv = make_yvecs(v, pool_p, seed);
    snprintf(v[nv].name, sizeof v[nv].name, "detector on an unmarked image");
    detector_y(v[nv].y);
    v[nv++].check_loose = 1;

    static const double targets[] = {-1, -2, -3, -4};
    for (size_t t = 0; t < nv; t++) {
        tm_scorer s;
        tm_scorer_init(&s, v[t].y, pool_p);
        double mean = 0, m2 = 0;
        for (int j = 0; j < N_INNOCENT; j++) {
            score[j] = tm_scorer_score(&s, words[j]);
            mean += score[j];
        }
        mean /= N_INNOCENT;
        for (int j = 0; j < N_INNOCENT; j++) m2 += (score[j] - mean) * (score[j] - mean);
        m2 /= N_INNOCENT - 1;
        /* An innocent score is centred with variance sum y^2 (the g terms are
         * zero-mean, unit-variance): a generator or weight error shows here. */
        double sd = sqrt(s.var);
        int centred = fabs(mean) <= 5 * sd / sqrt((double)N_INNOCENT);
        int var_ok = fabs(m2 / s.var - 1) <= 0.05;
        if (!centred || !var_ok)
            fprintf(stderr, "y '%s' (seed %lu): innocent mean %.4g (sd %.4g), variance %.4g vs sum y^2 %.4g\n",
                    v[t].name, seed, mean, sd, m2, s.var);
        CU_ASSERT(centred);
        CU_ASSERT(var_ok);

        for (size_t q = 0; q < sizeof targets / sizeof targets[0]; q++) {
            double th = threshold_for(&s, targets[q]);
            /* The bound is continuous up to the largest score there is,
             * where it drops to nothing (no innocent can score more): the
             * two-valued spike's threshold lies there. */
            double at = tm_scorer_log10_tail(&s, th);
            if (v[t].check_loose) CU_ASSERT_DOUBLE_EQUAL(at, targets[q], 1e-6);
            CU_ASSERT(at <= targets[q] + 1e-6);
            size_t count = 0;
            for (int j = 0; j < N_INNOCENT; j++) count += score[j] >= th;
            double bound = pow(10, targets[q]) * N_INNOCENT;
            double allowed = bound + 4 * sqrt(bound) + 1;
            if (tm_test_verbose() || count > allowed)
                fprintf(stderr, "y '%s' (seed %lu): bound 1e%+.0f at S=%.4g (%.2f sd): %zu of %d innocents reach it (allowed %.0f)\n",
                        v[t].name, seed, targets[q], th, th / sd, count, N_INNOCENT, allowed);
            CU_ASSERT(count <= allowed);
            /* Not absurdly loose: at a stated 1e-1, at least 1e-4 of the
             * innocents reach the threshold (a scorer returning inflated
             * scores, or a bound that is far too weak, fails this). */
            if (q == 0 && v[t].check_loose) {
                if ((double)count < 1e-4 * N_INNOCENT)
                    fprintf(stderr, "y '%s': bound at 1e-1 is absurdly loose (%zu of %d)\n", v[t].name, count, N_INNOCENT);
                CU_ASSERT((double)count >= 1e-4 * N_INNOCENT);
            }
        }
    }
    free(score);
    free(v);
}

/* Adversarial check of the test itself: a scorer whose scores are inflated
 * by 3 sd must be caught by the honesty test above (so the test can fail). */
static void test_bound_test_can_fail(void)
{
    const uint8_t(*words)[TM_CODE_BYTES] = innocents();
    const unsigned long seed = 9;
    gsl_rng *rng = rng_new(seed);
    double y[M];
    for (int i = 0; i < M; i++) y[i] = gsl_ran_gaussian(rng, 1.0);
    tm_scorer s;
    tm_scorer_init(&s, y, pool_p);
    double th = threshold_for(&s, -3), shift = 3 * sqrt(s.var);
    size_t count = 0;
    for (int j = 0; j < N_INNOCENT; j++) count += tm_scorer_score(&s, words[j]) + shift >= th;
    double bound = 1e-3 * N_INNOCENT;
    CU_ASSERT(count > bound + 4 * sqrt(bound) + 1);
    gsl_rng_free(rng);
}

/* ---- the true copy is found --------------------------------------------- */

static void test_true_copy_found(void)
{
    const unsigned long seed = 31337;
    const double a = 1.0;
    const uint8_t(*words)[TM_CODE_BYTES] = innocents();
    gsl_rng *rng = rng_new(seed);
    tm_key *k = make_key(1);
    double worst_gap = INFINITY;
    for (int trial = 0; trial < 10; trial++) {
        char r[32];
        uint8_t x[TM_CODE_BYTES];
        snprintf(r, sizeof r, "guilty-%d", trial);
        CU_ASSERT_EQUAL_FATAL(tm_code_word(k, IMAGE_ID, r, pool_p, x), TM_OK);
        double y[M];
        for (int i = 0; i < M; i++) y[i] = a * (2 * bit(x, i) - 1) + gsl_ran_gaussian(rng, 1.0);
        tm_scorer s;
        tm_scorer_init(&s, y, pool_p);
        double guilty = tm_scorer_log10_tail(&s, tm_scorer_score(&s, x));
        double best = -INFINITY;
        for (int j = 0; j < N_INNOCENT; j++) best = fmax(best, tm_scorer_score(&s, words[j]));
        double innocent = tm_scorer_log10_tail(&s, best);
        /* The guilty copy passes a 1e-6 budget over 100 copies (log10 < -8)
         * and sits many decades below the best of the innocents, while the
         * best innocent, Bonferroni-corrected over the pool, stays above
         * 1e-3 (which an honest bound guarantees with probability 0.999). */
        if (tm_test_verbose() || !(guilty < -8 && guilty < innocent - 6))
            fprintf(stderr, "seed %lu trial %d: guilty log10 tail %.2f, best innocent %.2f\n", seed, trial, guilty, innocent);
        CU_ASSERT(guilty < -8);
        CU_ASSERT(guilty < innocent - 6);
        CU_ASSERT(innocent + log10((double)N_INNOCENT) > -3);
        worst_gap = fmin(worst_gap, innocent - guilty);
    }
    if (tm_test_verbose()) fprintf(stderr, "true copy: smallest gap to the best innocent %.2f decades\n", worst_gap);
    tm_key_free(k);
    gsl_rng_free(rng);
}

/* With soft values on 16 positions only, the innocent score takes 2^16
 * values whose probabilities are known: the exact Chernoff bound must lie
 * above the exact tail everywhere, and close to it in the tail (a loose
 * bound, or one below the truth, fails). */
static void test_exact_bound_against_enumeration(void)
{
    enum { K = 16 };
    gsl_rng *rng = rng_new(2718);
    tm_key *k = make_key(9);
    double p[M], y[M] = {0};
    CU_ASSERT_EQUAL_FATAL(tm_code_bias(k, IMAGE_ID, p), TM_OK);
    int pos[K];
    for (int j = 0; j < K; j++) {
        pos[j] = j * (M / K) + 3;
        y[pos[j]] = gsl_ran_gaussian(rng, 1.0);
    }
    tm_scorer s;
    tm_scorer_init(&s, y, p);
    /* Every outcome's score and probability, then tails from the top. */
    double(*out)[2] = malloc(sizeof *out * (1u << K));
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    for (unsigned w = 0; w < 1u << K; w++) {
        double sc = 0, pr = 1;
        for (int j = 0; j < K; j++) {
            int x = (w >> j) & 1;
            sc += y[pos[j]] * g_weight(x, p[pos[j]]);
            pr *= x ? p[pos[j]] : 1 - p[pos[j]];
        }
        out[w][0] = sc;
        out[w][1] = pr;
    }
    qsort(out, 1u << K, sizeof *out, cmp_double); /* by score: each pair's first */
    double tail = 0, worst_gap = 0;
    int below = 0, checked = 0;
    for (long w = (1L << K) - 1; w >= 0; w--) {
        tail += out[w][1];
        if (out[w][0] <= 0) break;
        if (w > 0 && out[w - 1][0] == out[w][0]) continue; /* ties: the tail at the last of them */
        double b = tm_scorer_log10_tail(&s, out[w][0]), t = log10(tail);
        if (b < t - 1e-9) {
            if (below < 3) fprintf(stderr, "exact bound %g below the exact tail %g at score %g\n", b, t, out[w][0]);
            below++;
        }
        if (t > -6 && b - t > worst_gap) worst_gap = b - t;
        checked++;
    }
    CU_ASSERT(checked > 1000);
    CU_ASSERT_EQUAL(below, 0);
    /* Within two orders of magnitude wherever the tail is above 1e-6. */
    if (tm_test_verbose() || worst_gap > 2) fprintf(stderr, "exact bound: worst log10 gap over the exact tail %.3f\n", worst_gap);
    CU_ASSERT(worst_gap <= 2);
    free(out);
    tm_key_free(k);
    gsl_rng_free(rng);
}

static CU_TestInfo tests[] = {
    {"bias is keyed and deterministic", test_bias_deterministic},
    {"bias follows the truncated arcsine law", test_bias_distribution},
    {"codeword is keyed and deterministic", test_word_deterministic},
    {"codeword extremes and length limits", test_word_extremes_and_limits},
    {"codeword bit frequencies follow p", test_word_frequencies},
    {"scorer equals the direct sum", test_scorer_matches_direct_sum},
    {"tail bound shape", test_tail_shape},
    {"tail bound is honest on 3e5 innocents", test_bound_is_honest},
    {"exact bound against the enumerated tail", test_exact_bound_against_enumeration},
    {"honesty test catches inflated scores", test_bound_test_can_fail},
    {"true copy stands out", test_true_copy_found},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tm_test_main("code", tests);
}
