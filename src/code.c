/* code.c -- per-copy codewords and the accusation score with its bound.
 *
 * Each image gets keyed per-position biases p_i drawn from the Tardos arcsine
 * density on [t, 1-t]; each (image, recipient) copy gets bits x_i with
 * P(x_i = 1) = p_i from the keyed stream. A suspect yields soft values y_i;
 * copy j scores S_j = sum_i y_i g(x_ji, p_i) with the symmetric Tardos/Skoric
 * weights g(1,p) = sqrt((1-p)/p), g(0,p) = -sqrt(p/(1-p)). For an innocent
 * copy the g terms are independent of y, zero-mean, unit-variance and
 * bounded, so Bernstein's and Hoeffding's inequalities bound its tail for
 * whatever y the suspect gave (docs/scheme.md sections 4 and 6). */
#include "config.h"

#include <math.h>
#include <string.h>

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

double tm_scorer_log10_tail(const tm_scorer *s, double score)
{
    if (!(score > 0) || s->var <= 0) return 0.0;
    /* Bernstein: P(S >= s) <= exp(-(s^2/2) / (V + b s / 3)). */
    double bern = -(score * score / 2) / (s->var + s->bmax * score / 3);
    /* Hoeffding: P(S >= s) <= exp(-2 s^2 / sum(range_i^2)). */
    double hoef = s->range2 > 0 ? -2 * score * score / s->range2 : 0;
    double ln = fmin(bern, hoef);
    return ln / M_LN10;
}
