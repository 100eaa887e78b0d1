/* code.c -- per-copy codewords and the accusation score with its bound.
 *
 * Each image gets keyed per-position biases p_i drawn from the Tardos arcsine
 * density on [t, 1-t]; each (image, recipient) copy gets bits x_i with
 * P(x_i = 1) = p_i from the keyed stream. A suspect yields soft values y_i;
 * copy j scores S_j = sum_i y_i g(x_ji, p_i) with the symmetric Tardos/Skoric
 * weights g(1,p) = sqrt((1-p)/p), g(0,p) = -sqrt(p/(1-p)). For an innocent
 * copy the g terms are independent of y, zero-mean, unit-variance and
 * bounded, so Bernstein's and Hoeffding's inequalities bound its tail for
 * whatever y the suspect gave; and since each term takes one of two known
 * values with known probabilities, the score's moment generating function is
 * known exactly, which gives the Chernoff bound (docs/scheme.md sections 4
 * and 6). */
#include "config.h"

#include <math.h>
#include <string.h>

#include <gsl/gsl_errno.h>
#include <gsl/gsl_roots.h>

#include "scheme.h"

/* Uniform double in [0, 1) from 4 stream bytes. */
static double unit(const uint8_t *b)
{
    uint32_t v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return v / 4294967296.0;
}

tm_status tm_code_bias(const tm_key *key, const char *image_id, double *p)
{
    uint8_t s[TM_CODE_BITS * 4];
    tm_status st = tm_key_stream(key, "code bias v1", image_id, strlen(image_id), s, sizeof s);
    if (st != TM_OK) return st;
    double rt = asin(sqrt(TM_BIAS_CUTOFF));
    for (int i = 0; i < TM_CODE_BITS; i++) {
        double r = rt + unit(s + 4 * i) * (M_PI / 2 - 2 * rt);
        double v = sin(r);
        p[i] = v * v;
    }
    return TM_OK;
}

tm_status tm_code_word(const tm_key *key, const char *image_id, const char *recipient,
                       const double *p, uint8_t *bits)
{
    size_t li = strlen(image_id), lr = strlen(recipient);
    if (li > 256 || lr > 4096) return TM_ERR_ARG;
    uint8_t ctx[256 + 1 + 4096];
    memcpy(ctx, image_id, li);
    ctx[li] = 0;
    memcpy(ctx + li + 1, recipient, lr);
    uint8_t s[TM_CODE_BITS * 4];
    tm_status st = tm_key_stream(key, "codeword v1", ctx, li + 1 + lr, s, sizeof s);
    if (st != TM_OK) return st;
    memset(bits, 0, TM_CODE_BYTES);
    for (int i = 0; i < TM_CODE_BITS; i++)
        if (unit(s + 4 * i) < p[i]) bits[i >> 3] |= (uint8_t)(1u << (i & 7));
    return TM_OK;
}

void tm_scorer_init(tm_scorer *s, const double *y, const double *p)
{
    double d[TM_CODE_BITS];
    s->base = 0;
    s->var = 0;
    s->bmax = 0;
    s->range2 = 0;
    for (int i = 0; i < TM_CODE_BITS; i++) {
        double g1 = sqrt((1 - p[i]) / p[i]), g0 = -sqrt(p[i] / (1 - p[i]));
        s->base += y[i] * g0;
        d[i] = y[i] * (g1 - g0);
        s->var += y[i] * y[i];
        double m = fabs(y[i]) * fmax(g1, -g0);
        if (m > s->bmax) s->bmax = m;
        s->range2 += d[i] * d[i];
        s->p[i] = p[i];
        s->d[i] = d[i];
    }
    /* table[b][v] = sum of d over the set bits of byte value v at byte b */
    for (int b = 0; b < TM_CODE_BYTES; b++) {
        s->table[b][0] = 0;
        for (int v = 1; v < 256; v++) {
            int low = __builtin_ctz((unsigned)v);
            s->table[b][v] = s->table[b][v & (v - 1)] + d[b * 8 + low];
        }
    }
}

double tm_scorer_score(const tm_scorer *s, const uint8_t *bits)
{
    double sum = s->base;
    for (int b = 0; b < TM_CODE_BYTES; b++) sum += s->table[b][bits[b]];
    return sum;
}

double tm_scorer_log10_tail_fast(const tm_scorer *s, double score)
{
    if (!(score > 0) || s->var <= 0) return 0.0;
    /* Bernstein: P(S >= s) <= exp(-(s^2/2) / (V + b s / 3)). */
    double bern = -(score * score / 2) / (s->var + s->bmax * score / 3);
    /* Hoeffding: P(S >= s) <= exp(-2 s^2 / sum(range_i^2)). */
    double hoef = s->range2 > 0 ? -2 * score * score / s->range2 : 0;
    double ln = fmin(bern, hoef);
    return ln / M_LN10;
}

/* The Chernoff exponent f(l) = K(l) - l s and its derivative, where
 * K(l) = l base + sum_i log(1 - p_i + p_i e^(l d_i)) is the innocent score's
 * cumulant generating function: P(S >= s) <= exp(f(l)) for every l >= 0.
 * For large l, K(l) and l s are both near l S_max (S_max = base + the
 * positive d_i, the largest score there is), so f is computed as
 * l (S_max - s) plus terms that shrink with l; the rounding of S_max - s is
 * covered by adding l * slack, which keeps the bound an upper bound (and
 * finite) even when s is the largest score rounded differently. */
typedef struct chernoff {
    const tm_scorer *s;
    double gap;    /* S_max - s + slack */
} chernoff;

static double chernoff_f(double l, void *arg)
{
    const chernoff *c = arg;
    const tm_scorer *s = c->s;
    double f = l * c->gap;
    for (int i = 0; i < TM_CODE_BITS; i++) {
        double x = l * s->d[i], p = s->p[i];
        f += s->d[i] > 0 ? log(p + (1 - p) * exp(-x)) : log1p(p * expm1(x));
    }
    return f;
}

static double chernoff_df(double l, void *arg)
{
    const chernoff *c = arg;
    const tm_scorer *s = c->s;
    double f = c->gap;
    for (int i = 0; i < TM_CODE_BITS; i++) {
        double x = l * s->d[i], p = s->p[i];
        if (s->d[i] > 0) f -= s->d[i] * (1 - p) * exp(-x) / (p + (1 - p) * exp(-x));
        else f += s->d[i] * p * exp(x) / (1 - p + p * exp(x));
    }
    return f;
}

double tm_scorer_log10_tail(const tm_scorer *s, double score)
{
    double fast = tm_scorer_log10_tail_fast(s, score);
    if (fast == 0.0 || !isfinite(fast) || !isfinite(s->base)) return fast;
    /* f is convex with f(0) = 0 and f'(0) = slack - score < 0 (an innocent
     * score is centred), so its minimum is where f' = 0. Bracket it by
     * doubling, then Brent. Any l gives a valid bound, so a root found
     * loosely only costs tightness. */
    double smax = s->base, mag = fabs(s->base) + fabs(score);
    for (int i = 0; i < TM_CODE_BITS; i++) {
        if (s->d[i] > 0) smax += s->d[i];
        mag += fabs(s->d[i]);
    }
    chernoff c = {s, smax - score + 1e-12 * mag};
    double lo = 0, hi = 1 / sqrt(s->var);
    if (!(chernoff_df(0, &c) < 0)) return fast;
    for (int k = 0; k < 64 && chernoff_df(hi, &c) < 0; k++) lo = hi, hi *= 2;
    double l = hi;
    /* GSL's error handler aborts by default, and setting it is not
     * thread-safe: the solver is only started on a finite bracket with a
     * sign change, where neither it nor the (finite) function can fail. */
    double dhi = chernoff_df(hi, &c);
    if (dhi >= 0 && isfinite(dhi)) {
        gsl_function fn = {chernoff_df, &c};
        gsl_root_fsolver *r = gsl_root_fsolver_alloc(gsl_root_fsolver_brent);
        if (r && gsl_root_fsolver_set(r, &fn, lo, hi) == GSL_SUCCESS) {
            for (int it = 0; it < 100; it++) {
                if (gsl_root_fsolver_iterate(r) != GSL_SUCCESS) break;
                if (gsl_root_test_interval(gsl_root_fsolver_x_lower(r), gsl_root_fsolver_x_upper(r), 0, 1e-10) ==
                    GSL_SUCCESS)
                    break;
            }
            l = gsl_root_fsolver_root(r);
        }
        gsl_root_fsolver_free(r);
    }
    double f = chernoff_f(l, &c);
    return fmin(fast, fmin(f, 0.0) / M_LN10);
}
