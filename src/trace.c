/* trace.c -- from a suspect image and the registry's copies to a verdict.
 *
 * The suspect is read once (detect.c) into m soft values; every copy is then
 * scored with a table lookup per codeword byte (code.c), O(pixels + N m).
 * Each score gets an upper bound on the chance that an innocent copy scores
 * that high (Bernstein/Hoeffding, and for scores that could reach the level
 * the exact Chernoff bound; valid whatever the suspect is, because an innocent codeword is
 * independent of it), multiplied by the number of copies scored (Bonferroni).
 * A copy is accused only when that corrected bound is within its round's
 * share of the budget. Copies combined by several colluders share the
 * suspect's soft values, so each colluder's mark is noise to the others':
 * after a round accuses someone, the next one takes the accused copies' marks
 * out of the soft values (least squares, GSL) and scores the image's other
 * copies again (docs/scheme.md section 6). */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_cdf.h>
#include <gsl/gsl_multifit.h>

#include "scheme.h"

void tm_trace_params_init(tm_trace_params *p)
{
    memset(p, 0, sizeof *p);
    p->fpr = 1e-6;
}

void tm_trace_result_set_original(tm_trace_result *r, int width, int height)
{
    if (r && width > 0 && height > 0) r->scale /= tm_mark_tile_scale(width, height);
}

void tm_trace_result_clear(tm_trace_result *r)
{
    if (!r) return;
    free(r->accused);
    memset(r, 0, sizeof *r);
}

/* Scorers per distinct image id, found by open addressing on the id. */
typedef struct image_slot {
    const char *id;
    tm_scorer *scorer;
} image_slot;

static uint64_t id_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

static int cmp_accusation(const void *a, const void *b)
{
    const tm_accusation *x = a, *y = b;
    if (x->round != y->round) return x->round < y->round ? -1 : 1;
    return x->log10_p < y->log10_p ? -1 : x->log10_p > y->log10_p;
}

/* Inserts acc into the top list (sorted by score, descending) of capacity cap. */
static void keep_top(tm_accusation *top, size_t *n, size_t cap, const tm_accusation *acc)
{
    if (*n == cap && acc->score <= top[cap - 1].score) return;
    size_t i = *n < cap ? (*n)++ : cap - 1;
    while (i > 0 && top[i - 1].score < acc->score) {
        top[i] = top[i - 1];
        i--;
    }
    top[i] = *acc;
}

tm_status tm_trace_run(const tm_key *key, const tm_image *suspect, const tm_reg_copy *copies, size_t n,
                       const tm_trace_params *params, tm_trace_result *out)
{
    if (!key || !suspect || !out || (n && !copies)) return TM_ERR_ARG;
    memset(out, 0, sizeof *out);
    if (params && !(params->fpr > 0 && params->fpr < 1)) return TM_ERR_ARG;
    tm_detection *det = malloc(sizeof *det);
    if (!det) return TM_ERR_NOMEM;
    tm_status st = tm_detect_search(key, suspect, det);
    if (st == TM_OK) st = tm_trace_score(key, det, copies, n, params, out);
    free(det);
    return st;
}

tm_status tm_trace_run_informed(const tm_key *key, const tm_image *suspect, const tm_original *const *originals,
                                size_t n_originals, const tm_reg_copy *copies, size_t n,
                                const tm_trace_params *params, tm_trace_result *out)
{
    if (!key || !suspect || !out || (n && !copies) || (n_originals && !originals)) return TM_ERR_ARG;
    memset(out, 0, sizeof *out);
    if (params && !(params->fpr > 0 && params->fpr < 1)) return TM_ERR_ARG;
    size_t npx = (size_t)suspect->width * suspect->height;
    /* the suspect's luminance: its own plane when it has no colour */
    float *ys = tm_color_channels(suspect) < 3 ? NULL : tm_big_alloc(sizeof(float) * npx);
    const float *y = ys ? ys : suspect->plane[0];
    tm_detection *det = malloc(sizeof *det);
    tm_image *diff = NULL;
    tm_registration reg = {0}, tried = {0}; /* tried: the closest attempt */
    tm_reg_suspect rs = {0};
    const tm_original *used = NULL;
    int used_k = -1;
    tm_status st = TM_ERR_NOMEM;
    if ((!ys && tm_color_channels(suspect) >= 3) || !det) goto out;
    if (ys) tm_luma(suspect, ys);
    /* a suspect too small to read a mark from is not worth registering */
    int small = npx < (size_t)TM_TILE * TM_TILE;
    if (n_originals > TM_TRACE_ORIGINALS_MAX) n_originals = TM_TRACE_ORIGINALS_MAX;
    if (!small && n_originals) {
        st = tm_reg_suspect_init(y, suspect->width, suspect->height, &rs);
        if (st == TM_ERR_ARG) small = 1; /* too small to register */
        else if (st != TM_OK) goto out;
    }
    /* the originals tried nearest first by perceptual hash: a copy that was
     * only recompressed or rescaled fits the first one tried */
    size_t order[TM_TRACE_ORIGINALS_MAX];
    int dist[TM_TRACE_ORIGINALS_MAX];
    uint64_t hs = 0;
    tm_plane sp = tm_plane_float(y, suspect->width, suspect->height);
    int have_hash = !small && n_originals > 1 && tm_phash_luma(&sp, &hs) == TM_OK;
    for (size_t k = 0; k < n_originals; k++) {
        dist[k] = have_hash && originals[k] ? __builtin_popcountll(hs ^ originals[k]->phash) : 0;
        size_t j = k;
        for (; j > 0 && dist[order[j - 1]] > dist[k]; j--) order[j] = order[j - 1];
        order[j] = k;
    }
    for (size_t q = 0; q < n_originals && !used && !small; q++) {
        size_t k = order[q];
        const tm_original *o = originals[k];
        st = TM_ERR_ARG;
        if (!o) goto out;
        st = tm_register(o, &rs, &reg);
        if (st == TM_ERR_ARG) { /* too small to register */
            memset(&reg, 0, sizeof reg);
            st = TM_OK;
        }
        if (st != TM_OK) goto out;
        if (!reg.found) {
            if (reg.ncc > tried.ncc) tried = reg;
            continue;
        }
        /* the difference in the original's frame, where the detector reads
         * the mark at its marked geometry */
        st = tm_register_difference(o, &rs, &reg, &diff);
        if (st == TM_ERR_DIMENSIONS) reg.found = 0, st = TM_OK;
        if (st != TM_OK) goto out;
        if (reg.found) {
            used = o;
            used_k = (int)k;
        } else if (reg.ncc > tried.ncc) {
            tried = reg;
        }
    }
    tm_reg_suspect_free(&rs);
    tm_big_free(ys);
    ys = NULL;
    /* The difference is in the original's frame (at most at the suspect's
     * resolution). It is read, and so is the suspect itself, and the reading
     * with more evidence of the mark (pilot and payload energy, no codeword)
     * is scored: a registration that fits but leaves more of the host than
     * it removes cannot make the trace weaker than a blind one. */
    int from_diff = 0;
    if ((st = tm_detect_search(key, suspect, det)) != TM_OK) goto out;
    if (used) {
        tm_detection *dd = malloc(sizeof *dd);
        if (!dd) {
            st = TM_ERR_NOMEM;
            goto out;
        }
        if ((st = tm_detect_difference(key, diff, dd)) != TM_OK) {
            free(dd);
            goto out;
        }
        if (dd->usable && (!det->usable || dd->evidence >= det->evidence)) {
            *det = *dd;
            from_diff = 1;
        }
        free(dd);
    }
    st = tm_trace_score(key, det, copies, n, params, out);
    if (st == TM_OK) {
        out->informed = 1;
        out->original = used_k;
        out->difference = from_diff;
        out->registration = used ? reg : tried;
        if (from_diff) {
            out->scale = reg.scale * used->tile_scale;
            out->rotation_deg = reg.rotation_deg;
            out->flip = reg.flip;
            out->aspect = reg.aspect;
        }
    }
out:
    tm_reg_suspect_free(&rs);
    tm_big_free(ys);
    free(det);
    tm_image_free(diff);
    return st;
}

/* The level of accusation round r (1-based): fpr / 2^r, the last round at
 * the level of the one before, so that they add up to fpr. */
static double round_level(double fpr, int r)
{
    return ldexp(fpr, -(r < TM_TRACE_ROUNDS ? r : TM_TRACE_ROUNDS - 1));
}

static int scorable(const tm_reg_copy *c)
{
    return c->code_len == TM_CODE_BITS && c->codeword && c->image_id;
}

/* acc for copy c under scorer s, with the bound corrected by log10 of the
 * number of copies scored; the exact bound from z_exact standard deviations
 * on (exact_from). */
static void assess(const tm_scorer *s, const tm_reg_copy *c, size_t i, double correction, double z_exact,
                   tm_accusation *acc)
{
    acc->index = i;
    acc->score = tm_scorer_score(s, c->codeword);
    acc->z = s->var > 0 ? acc->score / sqrt(s->var) : 0;
    double tail = tm_scorer_log10_tail_fast(s, acc->score);
    if (acc->z >= z_exact) tail = tm_scorer_log10_tail(s, acc->score);
    acc->log10_p = fmin(0.0, tail + correction);
    acc->round = 0;
}

static tm_status accuse(tm_trace_result *out, size_t *cap, const tm_accusation *acc)
{
    if (out->n_accused == *cap) {
        size_t nc = *cap ? 2 * *cap : 4;
        tm_accusation *g = realloc(out->accused, nc * sizeof *g);
        if (!g) return TM_ERR_NOMEM;
        out->accused = g;
        *cap = nc;
    }
    out->accused[out->n_accused++] = *acc;
    return TM_OK;
}

/* Where the exact bound starts: TM_EXACT_BOUND_MARGIN standard deviations
 * below the Gaussian z of round 1's level per copy (log10 level, correction
 * the log10 of the number of copies), and never below TM_EXACT_BOUND_Z.
 * Under it no bound could reach the level; skipping the exact one there only
 * costs tightness in the reported bound of copies not accused. */
static double exact_from(double log10_level, double correction)
{
    double q = pow(10, log10_level - correction);
    return fmax(TM_EXACT_BOUND_Z, q > 0 && q < 0.5 ? gsl_cdf_ugaussian_Qinv(q) - TM_EXACT_BOUND_MARGIN : 0);
}

/* Rounds 2..TM_TRACE_ROUNDS, once round 1 has accused someone. Each takes the
 * marks of the copies accused so far, of the strongest one's image, out of
 * the soft values: y' = y - A b with A's columns the copies' bit signs
 * (2x - 1) and b their least-squares amplitudes; then scores that image's
 * candidates (cand: copies not accused that reached TM_TRACE_RESCORE_Z in
 * round 1) against y'. y' is a function of the suspect and of the
 * accused copies' codewords only, which an innocent copy's codeword is
 * independent of, so the bound holds for every innocent as in round 1 as
 * long as no innocent was accused before; each round spends its own share of
 * the budget, so the chance of any false accusation over all rounds stays
 * within fpr. Choosing whom to rescore by their round-1 score can only drop
 * accusations, never add one, so it keeps the bound too. */
static tm_status later_rounds(const tm_key *key, const tm_detection *det, const tm_reg_copy *copies,
                              const size_t *cand, size_t n_cand, double fpr, double z_exact, tm_trace_result *out,
                              size_t *cap)
{
    const size_t m = TM_CODE_BITS;
    gsl_matrix *a = NULL;
    gsl_vector *y = gsl_vector_alloc(m), *b = NULL, *res = gsl_vector_alloc(m);
    gsl_matrix *cov = NULL;
    gsl_multifit_linear_workspace *w = NULL;
    tm_scorer *s = malloc(sizeof *s);
    double p[TM_CODE_BITS], yr[TM_CODE_BITS];
    tm_status st = TM_ERR_NOMEM;
    if (!y || !res || !s) goto out;
    const char *image = copies[out->accused[0].index].image_id;
    if ((st = tm_code_bias(key, image, p)) != TM_OK) goto out;
    for (int r = 2; r <= TM_TRACE_ROUNDS; r++) {
        size_t idx[TM_TRACE_REMOVE_MAX], k = 0;
        for (size_t i = 0; i < out->n_accused && k < TM_TRACE_REMOVE_MAX; i++)
            if (!strcmp(copies[out->accused[i].index].image_id, image)) idx[k++] = out->accused[i].index;
        st = TM_ERR_NOMEM;
        gsl_matrix_free(a);
        gsl_matrix_free(cov);
        gsl_vector_free(b);
        gsl_multifit_linear_free(w);
        a = gsl_matrix_alloc(m, k);
        cov = gsl_matrix_alloc(k, k);
        b = gsl_vector_alloc(k);
        w = gsl_multifit_linear_alloc(m, k);
        if (!a || !cov || !b || !w) goto out;
        for (size_t i = 0; i < m; i++) {
            gsl_vector_set(y, i, det->y[i]);
            for (size_t j = 0; j < k; j++) {
                int bit = (copies[idx[j]].codeword[i >> 3] >> (i & 7)) & 1;
                gsl_matrix_set(a, i, j, bit ? 1.0 : -1.0);
            }
        }
        double chisq;
        if (gsl_multifit_linear(a, y, b, cov, &chisq, w) != GSL_SUCCESS ||
            gsl_multifit_linear_residuals(a, y, b, res) != GSL_SUCCESS) {
            st = TM_ERR_INTERNAL;
            goto out;
        }
        for (size_t i = 0; i < m; i++) yr[i] = gsl_vector_get(res, i);
        tm_scorer_init(s, yr, p);
        double level = log10(round_level(fpr, r));
        size_t before = out->n_accused;
        for (size_t q = 0; q < n_cand; q++) {
            size_t i = cand[q];
            const tm_reg_copy *c = &copies[i];
            if (strcmp(c->image_id, image)) continue;
            int done = 0;
            for (size_t j = 0; j < before && !done; j++) done = out->accused[j].index == i;
            if (done) continue;
            tm_accusation acc;
            assess(s, c, i, out->log10_correction, z_exact, &acc);
            acc.round = r;
            if (acc.log10_p <= level && (st = accuse(out, cap, &acc)) != TM_OK) goto out;
        }
        if (out->n_accused == before) break;
    }
    st = TM_OK;
out:
    gsl_matrix_free(a);
    gsl_matrix_free(cov);
    gsl_vector_free(b);
    gsl_vector_free(y);
    gsl_vector_free(res);
    gsl_multifit_linear_free(w);
    free(s);
    return st;
}

tm_status tm_trace_score(const tm_key *key, const tm_detection *det, const tm_reg_copy *copies, size_t n,
                         const tm_trace_params *params, tm_trace_result *out)
{
    if (!key || !det || !out || (n && !copies)) return TM_ERR_ARG;
    memset(out, 0, sizeof *out);
    tm_trace_params defaults;
    if (!params) {
        tm_trace_params_init(&defaults);
        params = &defaults;
    }
    if (!(params->fpr > 0 && params->fpr < 1)) return TM_ERR_ARG;
    out->original = -1;
    out->pilot_z = det->pilot_z;
    out->pilot_log10_p = det->pilot_log10_p;
    out->offset_x = det->offset_x;
    out->offset_y = det->offset_y;
    /* detect.c's symmetry d as "the original, mirrored left-right when flip,
     * then turned rotation_deg counter-clockwise", which gives the suspect. */
    static const struct {
        int flip, rot;
    } dihedral[8] = {{0, 0}, {1, 0}, {1, 180}, {0, 180}, {1, 90}, {0, 270}, {0, 90}, {1, 270}};
    out->flip = dihedral[det->dihedral].flip;
    out->rotation_deg = fmod(dihedral[det->dihedral].rot + det->rotation_deg + 360.0, 360.0);
    if (out->rotation_deg > 180) out->rotation_deg -= 360;
    out->scale = det->scale;
    out->aspect = det->aspect;

    size_t cap = 16;
    while (cap < 2 * n + 16) cap *= 2;
    image_slot *slots = calloc(cap, sizeof *slots);
    tm_scorer **owned = NULL;
    size_t n_owned = 0, acc_cap = 0;
    size_t *cand = NULL, n_cand = 0, cand_cap = 0; /* not accused, z >= TM_TRACE_RESCORE_Z */
    tm_status st = TM_ERR_NOMEM;
    if (!slots) goto out;

    /* Count the copies that can be scored first: the correction uses it. */
    size_t n_scorable = 0;
    for (size_t i = 0; i < n; i++) n_scorable += scorable(&copies[i]);
    out->n_scored = n_scorable;
    out->log10_correction = n_scorable > 0 ? log10((double)n_scorable) : 0;
    double level = log10(round_level(params->fpr, 1)), z_exact = exact_from(level, out->log10_correction);

    const char *last_id = NULL;
    const tm_scorer *last = NULL;
    for (size_t i = 0; i < n; i++) {
        const tm_reg_copy *c = &copies[i];
        if (!scorable(c)) continue;
        if (c->image_id != last_id) { /* rows of one image share the string: look it up once */
            size_t h = (size_t)id_hash(c->image_id) & (cap - 1);
            while (slots[h].id && strcmp(slots[h].id, c->image_id)) h = (h + 1) & (cap - 1);
            if (!slots[h].id) {
                double p[TM_CODE_BITS];
                tm_scorer *s = malloc(sizeof *s);
                tm_scorer **grown = realloc(owned, (n_owned + 1) * sizeof *owned);
                if (!s || !grown) {
                    free(s);
                    if (grown) owned = grown;
                    goto out;
                }
                owned = grown;
                owned[n_owned++] = s;
                if ((st = tm_code_bias(key, c->image_id, p)) != TM_OK) goto out;
                st = TM_ERR_NOMEM;
                tm_scorer_init(s, det->y, p);
                slots[h].id = c->image_id;
                slots[h].scorer = s;
            }
            last_id = c->image_id;
            last = slots[h].scorer;
        }
        tm_accusation acc;
        assess(last, c, i, out->log10_correction, z_exact, &acc);
        if (acc.log10_p <= level && det->usable) {
            acc.round = 1;
            if (accuse(out, &acc_cap, &acc) != TM_OK) goto out;
        } else {
            keep_top(out->top, &out->n_top, TM_TRACE_TOP, &acc);
            if (acc.z >= TM_TRACE_RESCORE_Z && det->usable) {
                if (n_cand == cand_cap) {
                    size_t nc = cand_cap ? 2 * cand_cap : 64;
                    size_t *g = realloc(cand, nc * sizeof *g);
                    if (!g) goto out;
                    cand = g;
                    cand_cap = nc;
                }
                cand[n_cand++] = i;
            }
        }
    }
    if (out->n_accused > 1) qsort(out->accused, out->n_accused, sizeof *out->accused, cmp_accusation);
    if (out->n_accused) {
        if ((st = later_rounds(key, det, copies, cand, n_cand, params->fpr, z_exact, out, &acc_cap)) != TM_OK) goto out;
        /* The top list holds copies not accused. */
        size_t kept = 0;
        for (size_t t = 0; t < out->n_top; t++) {
            int done = 0;
            for (size_t j = 0; j < out->n_accused && !done; j++) done = out->accused[j].index == out->top[t].index;
            if (!done) out->top[kept++] = out->top[t];
        }
        out->n_top = kept;
        if (out->n_accused > 1) qsort(out->accused, out->n_accused, sizeof *out->accused, cmp_accusation);
    }

    if (!det->usable) {
        out->verdict = TM_VERDICT_INCONCLUSIVE;
        out->reason = "the image is too small or too flat to carry a readable mark";
    } else if (out->n_accused) {
        out->verdict = TM_VERDICT_ACCUSED;
        out->reason = "a registered copy's codeword matches the mark";
    } else if (det->pilot_log10_p < TM_PILOT_LOG10_P) {
        out->verdict = TM_VERDICT_INCONCLUSIVE;
        out->reason = n_scorable ? "a mark under this key is present but no registered copy matches within the bound"
                                 : "a mark under this key is present but the registry has no copies to score";
    } else {
        out->verdict = TM_VERDICT_NONE;
        out->reason = "no mark under this key was found";
    }
    st = TM_OK;
out:
    for (size_t i = 0; i < n_owned; i++) free(owned[i]);
    free(owned);
    free(cand);
    free(slots);
    if (st != TM_OK) tm_trace_result_clear(out);
    return st;
}
