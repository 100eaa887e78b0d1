/* trace.c -- from a suspect image and the registry's copies to a verdict.
 *
 * The suspect is read once (detect.c) into m soft values; every copy is then
 * scored with a table lookup per codeword byte (code.c), O(pixels + N m).
 * Each score gets an upper bound on the chance that an innocent copy scores
 * that high (Bernstein/Hoeffding, and for scores of TM_EXACT_BOUND_Z standard
 * deviations or more the exact Chernoff bound; valid whatever the suspect is, because an innocent codeword is
 * independent of it), multiplied by the number of copies scored (Bonferroni). A copy is accused only when that corrected bound is
 * within the budget (docs/scheme.md section 6). */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
    tm_status st = TM_ERR_NOMEM;
    if (!slots) goto out;

    /* Count the copies that can be scored first: the correction uses it. */
    size_t n_scorable = 0;
    for (size_t i = 0; i < n; i++)
        if (copies[i].code_len == TM_CODE_BITS && copies[i].codeword && copies[i].image_id) n_scorable++;
    out->n_scored = n_scorable;
    out->log10_correction = n_scorable > 0 ? log10((double)n_scorable) : 0;
    double log10_budget = log10(params->fpr);

    const char *last_id = NULL;
    const tm_scorer *last = NULL;
    for (size_t i = 0; i < n; i++) {
        const tm_reg_copy *c = &copies[i];
        if (c->code_len != TM_CODE_BITS || !c->codeword || !c->image_id) continue;
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
        const tm_scorer *s = last;
        tm_accusation acc;
        acc.index = i;
        acc.score = tm_scorer_score(s, c->codeword);
        acc.z = s->var > 0 ? acc.score / sqrt(s->var) : 0;
        double tail = tm_scorer_log10_tail_fast(s, acc.score);
        if (acc.z >= TM_EXACT_BOUND_Z) tail = tm_scorer_log10_tail(s, acc.score);
        acc.log10_p = fmin(0.0, tail + out->log10_correction);
        if (acc.log10_p <= log10_budget && det->usable) {
            if (out->n_accused == acc_cap) {
                size_t nc = acc_cap ? 2 * acc_cap : 4;
                tm_accusation *g = realloc(out->accused, nc * sizeof *g);
                if (!g) goto out;
                out->accused = g;
                acc_cap = nc;
            }
            out->accused[out->n_accused++] = acc;
        } else {
            keep_top(out->top, &out->n_top, TM_TRACE_TOP, &acc);
        }
    }
    if (out->n_accused > 1) qsort(out->accused, out->n_accused, sizeof *out->accused, cmp_accusation);

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
    free(slots);
    if (st != TM_OK) tm_trace_result_clear(out);
    return st;
}
