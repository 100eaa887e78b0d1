/* report.c -- what a robustness sweep (lab.c) writes: JSON with every trial
 * and the summary, a self-contained HTML report, and markdown tables.
 *
 * The HTML page has no external resource: the plots are SVG drawn here
 * (identification rate against attack strength for each family of the
 * grid, the accusation bound of leaked copies against the nulls', the
 * pilot's strength), the thumbnails are data: URIs (base64 by OpenSSL's
 * EVP_EncodeBlock). Documents are built in memory with open_memstream and
 * written with tm_file_write_atomic, so a failed or interrupted run leaves
 * no half-written file. */
#include "config.h"

#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- small writers ----------------------------------------------------------- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20) fprintf(f, "\\u%04x", *p);
            else fputc(*p, f);
        }
    }
    fputc('"', f);
}

/* A JSON number (null when not finite: JSON has no NaN). */
static void json_num(FILE *f, const char *fmt, double v)
{
    if (isfinite(v)) fprintf(f, fmt, v);
    else fputs("null", f);
}

/* Text with &, <, >, " and ' escaped for HTML and SVG. */
static void html(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* A number for display, "-" when not finite. */
static void num(FILE *f, const char *fmt, double v)
{
    if (isfinite(v)) fprintf(f, fmt, v);
    else fputs("&ndash;", f);
}

/* Opens an in-memory stream; finish with close_doc. */
typedef struct doc {
    FILE *f;
    char *buf;
    size_t len;
} doc;

static tm_status open_doc(doc *d)
{
    d->buf = NULL;
    d->len = 0;
    d->f = open_memstream(&d->buf, &d->len);
    return d->f ? TM_OK : TM_ERR_NOMEM;
}

/* Closes the stream and, when path is set, writes the document atomically. */
static tm_status close_doc(doc *d, const char *path)
{
    int bad = ferror(d->f);
    if (fclose(d->f) != 0) bad = 1;
    tm_status st = bad ? TM_ERR_NOMEM : TM_OK;
    if (st == TM_OK && path) st = tm_file_write_atomic(path, d->buf, d->len, 0644, 0);
    if (st != TM_OK || path) {
        free(d->buf);
        d->buf = NULL;
    }
    return st;
}

/* What both report writers start with: a finished sweep, its curves and an
 * open document; on failure nothing is left to free. */
static tm_status begin_report(const tm_lab *lab, const char *path, tm_lab_curve **curves, size_t *n_curves, doc *d)
{
    if (!lab || !path || !tm_lab_complete(lab)) return TM_ERR_ARG;
    tm_status st = tm_lab_curves(tm_lab_get_grid(lab), 2, curves, n_curves);
    if (st != TM_OK) return st;
    if ((st = open_doc(d)) != TM_OK) tm_lab_curves_free(*curves, *n_curves);
    return st;
}

static double rate(size_t k, size_t n)
{
    return n ? 100.0 * (double)k / (double)n : NAN;
}

/* ---- JSON ---------------------------------------------------------------------- */

static void json_tally(FILE *f, const tm_lab_tally *t)
{
    fprintf(f, "\"trials\": %zu, \"identified\": %zu, \"identified_rate\": ", t->trials, t->identified);
    json_num(f, "%.4g", t->trials ? (double)t->identified / (double)t->trials : NAN);
    fprintf(f, ", \"all_colluders\": %zu, \"wrong\": %zu, \"missed_none\": %zu, \"missed_inconclusive\": %zu, ",
            t->all_colluders, t->wrong, t->missed_none, t->missed_inconclusive);
    fprintf(f, "\"null_trials\": %zu, \"null_accused\": %zu, \"innocents_scored\": %zu, \"weakest_log10_p\": ",
            t->null_trials, t->null_accused, t->innocents_scored);
    json_num(f, "%.2f", t->weakest_log10_p);
    fputs(", \"mean_trace_ms\": ", f);
    json_num(f, "%.1f", t->mean_trace_ms);
}

tm_status tm_lab_write_json(const tm_lab *lab, const char *path)
{
    tm_lab_curve *curves = NULL;
    size_t n_curves = 0;
    doc d;
    tm_status st = begin_report(lab, path, &curves, &n_curves, &d);
    if (st != TM_OK) return st;
    const tm_lab_params *p = tm_lab_get_params(lab);
    const tm_lab_grid *g = tm_lab_get_grid(lab);
    FILE *f = d.f;
    fprintf(f, "{\n\"tool\": \"tracemark robustness\",\n\"version\": ");
    json_str(f, tm_version());
    fputs(",\n\"command\": ", f);
    if (p->command) json_str(f, p->command);
    else fputs("null", f);
    fprintf(f, ",\n\"params\": {\"copies\": %zu, \"leakers\": %zu, \"fpr\": %g, \"min_pixels\": %llu, \"jobs\": %d, "
               "\"null_traces\": %d, \"informed\": %s, ",
            p->n_copies, p->n_leakers, p->fpr, (unsigned long long)p->min_pixels, p->jobs, p->null_traces,
            p->informed ? "true" : "false");
    fputs("\"strength\": ", f);
    if (p->strength > 0) fprintf(f, "%g", p->strength);
    else fputs("null", f);
    fputs(", \"key_fingerprint\": ", f);
    json_str(f, tm_lab_get_key_fingerprint(lab));
    fprintf(f, "},\n\"wall_ms\": %.0f,\n\"grid\": [", tm_lab_wall_ms(lab));
    for (size_t a = 0; a < tm_lab_grid_size(g); a++) {
        fputs(a ? ", " : "", f);
        json_str(f, tm_lab_grid_attack(g, a));
    }
    fputs("],\n\"images\": [\n", f);
    for (size_t i = 0; i < tm_lab_image_count(lab); i++) {
        const tm_lab_image *im = tm_lab_image_at(lab, i);
        fputs(i ? ",\n  {\"name\": " : "  {\"name\": ", f);
        json_str(f, im->name);
        fputs(", \"path\": ", f);
        json_str(f, im->path);
        fprintf(f, ", \"width\": %d, \"height\": %d, \"skipped\": %s, \"psnr\": ", im->width, im->height,
                im->skipped ? "true" : "false");
        json_num(f, "%.2f", im->psnr);
        fputs(", \"ssim\": ", f);
        json_num(f, "%.5f", im->ssim);
        fputs(", \"mark_ms\": ", f);
        json_num(f, "%.0f", im->mark_ms);
        fputc('}', f);
    }
    fputs("\n],\n\"summary\": {\"attacks\": [\n", f);
    for (size_t a = 0; a < tm_lab_grid_size(g); a++) {
        tm_lab_tally t;
        tm_lab_tally_attack(lab, a, &t);
        fputs(a ? ",\n  {\"attack\": " : "  {\"attack\": ", f);
        json_str(f, tm_lab_grid_attack(g, a));
        fputs(", ", f);
        json_tally(f, &t);
        fputc('}', f);
    }
    tm_lab_tally all;
    tm_lab_tally_attack(lab, (size_t)-1, &all);
    fputs("\n], \"total\": {", f);
    json_tally(f, &all);
    fprintf(f, "}, \"false_accusations\": %zu},\n\"curves\": [", all.wrong + all.null_accused);
    for (size_t c = 0; c < n_curves; c++) {
        fputs(c ? ",\n  {\"family\": " : "\n  {\"family\": ", f);
        json_str(f, curves[c].family);
        fputs(", \"pattern\": ", f);
        json_str(f, curves[c].pattern);
        fputs(", \"points\": [", f);
        for (size_t k = 0; k < curves[c].n; k++) {
            tm_lab_tally t;
            tm_lab_tally_attack(lab, curves[c].attack[k], &t);
            fprintf(f, "%s{\"x\": %g, \"attack\": ", k ? ", " : "", curves[c].x[k]);
            json_str(f, tm_lab_grid_attack(g, curves[c].attack[k]));
            fputs(", \"identified_rate\": ", f);
            json_num(f, "%.4g", t.trials ? (double)t.identified / (double)t.trials : NAN);
            fputc('}', f);
        }
        fputs("]}", f);
    }
    fputs("\n],\n\"trials\": [\n", f);
    for (size_t i = 0; i < tm_lab_trial_count(lab); i++) {
        const tm_lab_trial *t = tm_lab_trial_at(lab, i);
        fputs(i ? ",\n  {\"image\": " : "  {\"image\": ", f);
        json_str(f, tm_lab_image_at(lab, t->image)->name);
        fputs(", \"attack\": ", f);
        json_str(f, tm_lab_grid_attack(g, t->attack));
        fprintf(f, ", \"kind\": \"%s\", \"leaker\": ", tm_lab_kind_name(t->kind));
        if (t->leaker >= 0) fprintf(f, "\"leaker-%d\"", (int)t->leaker);
        else fputs("null", f);
        fprintf(f, ", \"colluders\": %d, \"colluders_accused\": %d, \"registered\": %s", t->colluders,
                t->colluders_accused, t->registered ? "true" : "false");
        static const char *const verdicts[] = {"none", "accused", "inconclusive"};
        fprintf(f, ", \"outcome\": \"%s\", \"verdict\": \"%s\", \"score\": ", tm_lab_outcome_name(t->outcome),
                (unsigned)t->verdict < 3 ? verdicts[t->verdict] : "unknown");
        json_num(f, "%.4g", t->score);
        fputs(", \"z\": ", f);
        json_num(f, "%.2f", t->z);
        fputs(", \"log10_p\": ", f);
        json_num(f, "%.2f", t->log10_p);
        fputs(", \"innocent_log10_p\": ", f);
        json_num(f, "%.2f", t->innocent_log10_p);
        fputs(", \"pilot_z\": ", f);
        json_num(f, "%.2f", t->pilot_z);
        fputs(", \"pilot_log10_p\": ", f);
        json_num(f, "%.2f", t->pilot_log10_p);
        fputs(", \"transform\": {\"scale\": ", f);
        json_num(f, "%.4g", t->scale);
        fputs(", \"rotation_deg\": ", f);
        json_num(f, "%.3g", t->rotation_deg);
        fputs(", \"aspect\": ", f);
        json_num(f, "%.4g", t->aspect);
        fprintf(f, ", \"flip\": %s, \"offset\": [%d, %d]}, \"width\": %d, \"height\": %d, \"attack_ms\": %.0f, "
                   "\"trace_ms\": %.0f}",
                t->flip ? "true" : "false", t->offset_x, t->offset_y, t->width, t->height, t->attack_ms, t->trace_ms);
    }
    fputs("\n]\n}\n", f);
    tm_lab_curves_free(curves, n_curves);
    return close_doc(&d, path);
}

/* ---- markdown -------------------------------------------------------------------- */

/* s inside a markdown table cell's code span: '|' escaped. */
static void md_code(FILE *f, const char *s)
{
    fputc('`', f);
    for (; *s; s++) {
        if (*s == '|') fputc('\\', f);
        fputc(*s, f);
    }
    fputc('`', f);
}

static void md_num(FILE *f, const char *fmt, double v)
{
    if (isfinite(v)) fprintf(f, fmt, v);
    else fputs("-", f);
}

static void md_tally_row(FILE *f, const tm_lab_tally *t)
{
    fprintf(f, " | %zu/%zu", t->identified, t->trials);
    if (t->trials) fprintf(f, " (%.1f%%)", rate(t->identified, t->trials));
    fprintf(f, " | %zu | %zu/%zu | ", t->wrong, t->missed_none, t->missed_inconclusive);
    md_num(f, "%.1f", t->weakest_log10_p);
    fprintf(f, " | %zu | %zu | ", t->null_trials, t->null_accused);
    md_num(f, "%.0f", t->mean_trace_ms);
    fputs(" |\n", f);
}

/* How the null side was sampled, in words. */
static const char *null_plan_text(const tm_lab_params *p)
{
    return p->null_traces >= 2   ? "nulls: unmarked original and wrong key for every image and attack"
           : p->null_traces == 1 ? "nulls: unmarked original or wrong key, alternating over images and attacks"
                                 : "no null traces";
}

/* How suspects were traced, in words. */
static const char *trace_mode_text(const tm_lab_params *p)
{
    return p->informed ? "informed trace (with the original)" : "blind trace";
}

/* The per-image counts of leak trials: identified and all. */
static void image_counts(const tm_lab *lab, size_t image, size_t *ident, size_t *n, size_t *false_acc)
{
    *ident = *n = *false_acc = 0;
    for (size_t i = 0; i < tm_lab_trial_count(lab); i++) {
        const tm_lab_trial *t = tm_lab_trial_at(lab, i);
        if (t->image != image) continue;
        if (t->outcome == TM_LAB_WRONG) (*false_acc)++;
        if (t->kind != TM_LAB_LEAK) continue;
        (*n)++;
        if (t->outcome == TM_LAB_IDENTIFIED) (*ident)++;
    }
}

static void count_images(const tm_lab *lab, size_t *swept, size_t *skipped)
{
    *swept = *skipped = 0;
    for (size_t i = 0; i < tm_lab_image_count(lab); i++) {
        if (tm_lab_image_at(lab, i)->skipped) (*skipped)++;
        else (*swept)++;
    }
}

tm_status tm_lab_summary_markdown(const tm_lab *lab, char **text)
{
    if (!lab || !text) return TM_ERR_ARG;
    *text = NULL;
    const tm_lab_params *p = tm_lab_get_params(lab);
    const tm_lab_grid *g = tm_lab_get_grid(lab);
    doc d;
    tm_status st = open_doc(&d);
    if (st != TM_OK) return st;
    FILE *f = d.f;
    size_t swept, skipped;
    count_images(lab, &swept, &skipped);
    tm_lab_tally all;
    tm_lab_tally_attack(lab, (size_t)-1, &all);
    fprintf(f, "%zu images swept (%zu skipped), %zu attacks; registry of %zu copies per image, %zu leaked; budget %g; "
               "%s; %s; %d worker%s, %.1f s\n\n",
            swept, skipped, tm_lab_grid_size(g), p->n_copies, p->n_leakers, p->fpr, null_plan_text(p),
            trace_mode_text(p), p->jobs, p->jobs == 1 ? "" : "s", tm_lab_wall_ms(lab) / 1e3);
    fputs("| attack | identified | wrong accusation | missed none/inconclusive | weakest log10_p | null trials | "
          "null accusations | mean trace ms |\n|---|---|---|---|---|---|---|---|\n",
          f);
    for (size_t a = 0; a < tm_lab_grid_size(g); a++) {
        tm_lab_tally t;
        tm_lab_tally_attack(lab, a, &t);
        fputs("| ", f);
        md_code(f, tm_lab_grid_attack(g, a));
        md_tally_row(f, &t);
    }
    fputs("| **all**", f);
    md_tally_row(f, &all);
    fprintf(f, "\nFalse accusations: %zu in %zu null traces (unmarked originals, wrong key) and %zu among %zu innocent "
               "copies scored in leak traces.\n\n",
            all.null_accused, all.null_trials, all.wrong, all.innocents_scored);
    fputs("| image | size | PSNR dB | SSIM | identified |\n|---|---|---|---|---|\n", f);
    for (size_t i = 0; i < tm_lab_image_count(lab); i++) {
        const tm_lab_image *im = tm_lab_image_at(lab, i);
        fputs("| ", f);
        md_code(f, im->name);
        fprintf(f, " | %dx%d | ", im->width, im->height);
        if (im->skipped) {
            fputs("skipped (below the pixel minimum) | | |\n", f);
            continue;
        }
        md_num(f, "%.2f", im->psnr);
        fputs(" | ", f);
        md_num(f, "%.4f", im->ssim);
        size_t k, n, fa;
        image_counts(lab, i, &k, &n, &fa);
        fprintf(f, " | %zu/%zu |\n", k, n);
    }
    if ((st = close_doc(&d, NULL)) != TM_OK) return st;
    *text = d.buf;
    return TM_OK;
}

/* ---- HTML: plots ------------------------------------------------------------------- */

#define BLUE "#2563eb"
#define RED "#dc2626"
#define GREY "#6b7280"
#define ORANGE "#d97706"

/* A "nice" step for about n ticks over span. */
static double nice_step(double span, int n)
{
    double raw = span / n, mag = pow(10, floor(log10(raw))), r = raw / mag;
    return (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
}

/* Identification rate against the curve's number. */
static void svg_curve(FILE *f, const tm_lab *lab, const tm_lab_curve *c)
{
    const tm_lab_grid *g = tm_lab_get_grid(lab);
    const double W = 356, H = 236, L = 46, R = 14, T = 54, B = 40;
    double pw = W - L - R, ph = H - T - B;
    double x0 = c->x[0], x1 = c->x[c->n - 1];
    if (x1 - x0 < 1e-12) x0 -= 1, x1 += 1;
    double pad = (x1 - x0) * 0.05;
    x0 -= pad;
    x1 += pad;
#define SX(v) (L + ((v) - x0) / (x1 - x0) * pw)
#define SY(v) (T + ph - (v) / 100.0 * ph)
    fprintf(f, "<svg class=\"plot\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\">\n", W, H, W, H);
    fputs("<text x=\"10\" y=\"18\" class=\"t\">", f);
    html(f, c->family);
    fputs("</text>\n<text x=\"10\" y=\"34\" class=\"s\">", f);
    const char *brace = strstr(c->pattern, "{}");
    if (brace) {
        char *pre = strndup(c->pattern, (size_t)(brace - c->pattern));
        html(f, pre ? pre : "");
        free(pre);
        fputs("<tspan class=\"x\">x</tspan>", f);
        html(f, brace + 2);
    } else {
        html(f, c->pattern);
    }
    fputs("</text>\n", f);
    for (int y = 0; y <= 100; y += 25) {
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>", L, L + pw, SY(y), SY(y));
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"ya\">%d%%</text>\n", L - 5, SY(y) + 4, y);
    }
    /* x ticks at the points (thinned when crowded) */
    double last = -1e9;
    for (size_t k = 0; k < c->n; k++) {
        double px = SX(c->x[k]);
        if (px - last < 26) continue;
        last = px;
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"axis\"/>", px, px, T + ph, T + ph + 4);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"xa\">%g</text>\n", px, T + ph + 16, c->x[k]);
    }
    fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"axis\"/>\n", L, L + pw, T + ph, T + ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"xl\">x: ", L + pw / 2, H - 6);
    html(f, c->family);
    fputs("</text>\n", f);
    fputs("<polyline class=\"line\" points=\"", f);
    for (size_t k = 0; k < c->n; k++) {
        tm_lab_tally t;
        tm_lab_tally_attack(lab, c->attack[k], &t);
        if (t.trials) fprintf(f, "%.1f,%.1f ", SX(c->x[k]), SY(rate(t.identified, t.trials)));
    }
    fputs("\"/>\n", f);
    for (size_t k = 0; k < c->n; k++) {
        tm_lab_tally t;
        tm_lab_tally_attack(lab, c->attack[k], &t);
        if (!t.trials) continue;
        double r = rate(t.identified, t.trials);
        int bad = t.wrong + t.null_accused > 0;
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"><title>", SX(c->x[k]), SY(r), bad ? RED : BLUE);
        html(f, tm_lab_grid_attack(g, c->attack[k]));
        fprintf(f, ": %zu/%zu identified (%.1f%%), %zu wrong, %zu false on the null side</title></circle>\n",
                t.identified, t.trials, r, t.wrong, t.null_accused);
    }
    fputs("</svg>\n", f);
#undef SX
#undef SY
}

/* A deterministic jitter in [-1, 1] for dot k. */
static double jitter(size_t k)
{
    uint32_t h = (uint32_t)k * 2654435761u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    return (h % 2001) / 1000.0 - 1;
}

typedef enum { VAL_LOG10_P, VAL_PILOT_Z } strip_value;

/* The rows of a strip plot: which trials, and which of their numbers. */
typedef struct strip_row {
    const char *label, *colour;
    tm_lab_kind kind;
    int other;  /* the best other copy's bound instead of the trial's own */
} strip_row;

/* The value a row plots for trial t (NAN when it has none). */
static double strip_value_of(const tm_lab_trial *t, const strip_row *r, strip_value what)
{
    if (what == VAL_PILOT_Z) return t->pilot_z;
    return r->other ? -t->innocent_log10_p : -t->log10_p;
}

/* One row per trial kind, one dot per trial: -log10 of the accusation bound
 * (with the threshold the budget sets) or the pilot's z. */
static void svg_strip(FILE *f, const tm_lab *lab, strip_value what)
{
    const tm_lab_params *p = tm_lab_get_params(lab);
    static const strip_row bound_rows[] = {
        {"leaked copy: the leaker's copy", BLUE, TM_LAB_LEAK, 0},
        {"leaked copy: best other copy", ORANGE, TM_LAB_LEAK, 1},
        {"null: unmarked original", GREY, TM_LAB_NULL_UNMARKED, 0},
        {"null: wrong key", GREY, TM_LAB_NULL_WRONG_KEY, 0},
    };
    static const strip_row pilot_rows[] = {
        {"leaked copy", BLUE, TM_LAB_LEAK, 0},
        {"null: unmarked original", GREY, TM_LAB_NULL_UNMARKED, 0},
        {"null: wrong key", GREY, TM_LAB_NULL_WRONG_KEY, 0},
    };
    const strip_row *rows = what == VAL_LOG10_P ? bound_rows : pilot_rows;
    int nr = what == VAL_LOG10_P ? 4 : 3;
    const double W = 1100, L = 210, R = 20, T = 40, row_h = 46, B = 46;
    double H = T + nr * row_h + B, pw = W - L - R;
    double thr = -log10(p->fpr), vmax = what == VAL_LOG10_P ? thr * 1.5 : 5, vmin = 0;
    size_t missing = 0, n = tm_lab_trial_count(lab);
    for (size_t i = 0; i < n; i++) {
        const tm_lab_trial *t = tm_lab_trial_at(lab, i);
        for (int r = 0; r < nr; r++) {
            if (t->kind != rows[r].kind) continue;
            double v = strip_value_of(t, &rows[r], what);
            if (isfinite(v) && v > vmax) vmax = v;
            if (isfinite(v) && v < vmin) vmin = v;
        }
    }
    double step = nice_step(vmax - vmin, 10);
    vmax = ceil(vmax / step) * step;
    vmin = floor(vmin / step) * step;
#define SX(v) (L + ((v) - vmin) / (vmax - vmin) * pw)
    fprintf(f, "<svg class=\"plot\" width=\"100%%\" viewBox=\"0 0 %.0f %.0f\" role=\"img\">\n", W, H);
    fprintf(f, "<text x=\"10\" y=\"20\" class=\"t\">%s</text>\n",
            what == VAL_LOG10_P ? "Accusation strength: &#8722;log10 of the bound on an innocent scoring this high"
                                : "Mark presence: pilot z (the key's synchronisation pattern)");
    for (double v = vmin; v <= vmax + step / 2; v += step) {
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>", SX(v), SX(v), T,
                T + nr * row_h);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"xa\">%g</text>\n", SX(v), T + nr * row_h + 16,
                fabs(v) < step / 2 ? 0.0 : v);
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"xl\">%s</text>\n", L + pw / 2, H - 8,
            what == VAL_LOG10_P ? "&#8722;log10 p (Bonferroni over the registry included; bounds above 1 read as 0)"
                                : "pilot z");
    for (int r = 0; r < nr; r++) {
        double cy = T + row_h * (r + 0.5);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"ya\">%s</text>\n", L - 10, cy + 4, rows[r].label);
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"sep\"/>\n", L, L + pw,
                T + row_h * (r + 1), T + row_h * (r + 1));
    }
    for (size_t i = 0; i < n; i++) {
        const tm_lab_trial *t = tm_lab_trial_at(lab, i);
        for (int r = 0; r < nr; r++) {
            if (t->kind != rows[r].kind) continue;
            double v = strip_value_of(t, &rows[r], what);
            int hollow = 0;
            if (!isfinite(v)) {
                if (r == 0) missing++;
                v = 0;
                hollow = 1;
            }
            double cy = T + row_h * (r + 0.5) + jitter(i * 4 + (size_t)r) * row_h * 0.36;
            /* red: a false accusation (the innocent copy's dot, or a null's) */
            int accused = t->outcome == TM_LAB_WRONG && (t->kind != TM_LAB_LEAK || rows[r].other);
            const char *col = accused ? RED : rows[r].colour;
            if (hollow)
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.6\" fill=\"none\" stroke=\"%s\"/>", SX(v), cy, col);
            else
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.6\" fill=\"%s\" class=\"dot\"/>", SX(v), cy, col);
        }
        if (i % 8 == 7) fputc('\n', f);
    }
    fputc('\n', f);
    if (what == VAL_LOG10_P) {
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"thr\"/>", SX(thr), SX(thr), T - 6,
                T + nr * row_h);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"thrl\">accuse &#8594; (budget %g)</text>\n", SX(thr) + 4,
                T - 8, p->fpr);
    }
    fputs("</svg>\n", f);
    if (what == VAL_LOG10_P && missing)
        fprintf(f, "<p class=\"note\">Hollow dots at 0: %zu leaked copies whose own copy was neither accused nor among "
                   "the 5 best-scoring (its bound is then weaker than theirs).</p>\n",
                missing);
#undef SX
}

/* ---- HTML: page ------------------------------------------------------------------------ */

static const char css[] =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;color:#1d2330;"
    "background:#f5f6f8;margin:0}\n"
    "main{max-width:1200px;margin:0 auto;padding:22px 24px 40px}\n"
    "h1{font-size:23px;margin:0 0 4px}h2{font-size:17px;margin:30px 0 10px;padding-bottom:4px;"
    "border-bottom:1px solid #d7dbe2}\n"
    ".meta{color:#566074;margin:2px 0}.note{color:#566074;font-size:12.5px;max-width:1000px}\n"
    ".verdict{padding:10px 14px;border-radius:6px;margin:14px 0;font-weight:600}\n"
    ".ok{background:#e2f3e7;color:#155e36}.bad{background:#fde2e2;color:#8a1b1b}\n"
    "table{border-collapse:collapse;background:#fff;font-size:12.5px;border:1px solid #e1e4ea}\n"
    "th,td{padding:3px 9px;border-bottom:1px solid #eceef2;text-align:right;white-space:nowrap}\n"
    "th{background:#eef0f4;font-weight:600;white-space:normal;vertical-align:bottom}td.l,th.l{text-align:left}"
    "td.bad{color:#b91c1c;font-weight:600}.meta code{word-break:break-all}\n"
    "code{font:12px ui-monospace,'DejaVu Sans Mono',Menlo,monospace}\n"
    ".cards{display:flex;flex-wrap:wrap;gap:12px}.card{background:#fff;border:1px solid #e1e4ea;border-radius:6px;"
    "padding:6px}\n"
    "svg.plot{display:block;font-family:inherit}svg .t{font-size:13px;font-weight:600;fill:#1d2330}\n"
    "svg .s{font:11px ui-monospace,'DejaVu Sans Mono',monospace;fill:#566074}svg .x{fill:#2563eb;font-weight:700}\n"
    "svg .grid{stroke:#e5e7eb}svg .axis{stroke:#9ca3af}svg .sep{stroke:#eef0f3}\n"
    "svg .xa{font-size:10.5px;fill:#566074;text-anchor:middle}svg .ya{font-size:10.5px;fill:#566074;text-anchor:end}\n"
    "svg .xl{font-size:11px;fill:#566074;text-anchor:middle}svg .line{fill:none;stroke:#2563eb;stroke-width:2}\n"
    "svg .thr{stroke:#dc2626;stroke-width:1.5;stroke-dasharray:5 3}svg .thrl{font-size:11px;fill:#dc2626}\n"
    "svg .dot{fill-opacity:.55;stroke-width:1.2}\n"
    ".pics{display:flex;gap:12px;flex-wrap:wrap}figure{margin:0;background:#fff;border:1px solid #e1e4ea;"
    "border-radius:6px;padding:5px}\n"
    "figure img{display:block;max-width:100%;image-rendering:auto}figure img.px{image-rendering:pixelated}\n"
    "figcaption{font-size:12px;color:#566074;margin-top:4px;max-width:360px}img.icon{display:block;height:40px}\n";

/* An <img> of an encoded thumbnail as a data: URI. */
static tm_status img_tag(FILE *f, const tm_lab_thumb *t, const char *cls, const char *alt, int w, int h)
{
    size_t cap = 4 * ((t->len + 2) / 3) + 1;
    unsigned char *b64 = malloc(cap);
    if (!b64) return TM_ERR_NOMEM;
    EVP_EncodeBlock(b64, t->data, (int)t->len);
    fprintf(f, "<img%s%s%s src=\"data:image/%s;base64,%s\" width=\"%d\" height=\"%d\" alt=\"", cls ? " class=\"" : "",
            cls ? cls : "", cls ? "\"" : "", t->format == TM_FORMAT_PNG ? "png" : "jpeg", b64, w, h);
    html(f, alt);
    fputs("\">", f);
    free(b64);
    return TM_OK;
}

static void tally_cells(FILE *f, const tm_lab_tally *t)
{
    double r = rate(t->identified, t->trials);
    if (isfinite(r))
        fprintf(f, "<td style=\"background:hsl(%.0f,70%%,88%%)\">%.1f%% (%zu/%zu)</td>", r * 1.2, r, t->identified,
                t->trials);
    else
        fputs("<td>&ndash;</td>", f);
    fprintf(f, "<td%s>%zu</td><td>%zu</td><td>%zu</td>", t->wrong ? " class=\"bad\"" : "", t->wrong, t->missed_none,
            t->missed_inconclusive);
    fprintf(f, "<td>%zu</td><td%s>%zu</td><td>", t->null_trials, t->null_accused ? " class=\"bad\"" : "", t->null_accused);
    num(f, "%.1f", t->weakest_log10_p);
    fputs("</td><td>", f);
    num(f, "%.0f", t->mean_trace_ms);
    fputs("</td>", f);
}

static void summary_table(FILE *f, const tm_lab *lab)
{
    const tm_lab_grid *g = tm_lab_get_grid(lab);
    fputs("<table><tr><th class=\"l\">attack</th><th>identified</th><th>wrong accusations</th>"
          "<th>missed: none</th><th>missed: inconclusive</th><th>null trials</th><th>null accusations</th>"
          "<th>weakest log10 p</th><th>mean trace ms</th></tr>\n",
          f);
    for (size_t a = 0; a < tm_lab_grid_size(g); a++) {
        tm_lab_tally t;
        tm_lab_tally_attack(lab, a, &t);
        fputs("<tr><td class=\"l\"><code>", f);
        html(f, tm_lab_grid_attack(g, a));
        fputs("</code></td>", f);
        tally_cells(f, &t);
        fputs("</tr>\n", f);
    }
    tm_lab_tally all;
    tm_lab_tally_attack(lab, (size_t)-1, &all);
    fputs("<tr><th class=\"l\">all attacks</th>", f);
    tally_cells(f, &all);
    fputs("</tr></table>\n", f);
}

/* The attacks that combine several copies: how often at least one
 * colluder, and every colluder, was accused, over the images at least
 * min_pixels large (0: all). */
static void collusion_table(FILE *f, const tm_lab *lab, uint64_t min_pixels)
{
    const tm_lab_grid *g = tm_lab_get_grid(lab);
    int header = 0;
    for (size_t a = 0; a < tm_lab_grid_size(g); a++) {
        size_t n = 0, one = 0, all = 0, wrong = 0, nulls = 0, null_acc = 0;
        int c = 0;
        for (size_t i = 0; i < tm_lab_trial_count(lab); i++) {
            const tm_lab_trial *t = tm_lab_trial_at(lab, i);
            const tm_lab_image *im = tm_lab_image_at(lab, t->image);
            if (t->attack != a || (uint64_t)im->width * (uint64_t)im->height < min_pixels) continue;
            if (t->kind != TM_LAB_LEAK) {
                nulls++;
                null_acc += t->outcome == TM_LAB_WRONG;
                continue;
            }
            if (t->colluders < 2) break; /* not a collusion attack */
            c = t->colluders;
            n++;
            one += t->colluders_accused > 0;
            all += t->colluders_accused == t->colluders;
            wrong += t->outcome == TM_LAB_WRONG;
        }
        if (!n) continue;
        if (!header++)
            fputs("<table><tr><th class=\"l\">attack</th><th>copies combined</th><th>trials</th>"
                  "<th>at least one colluder accused</th><th>every colluder accused</th>"
                  "<th>innocents accused</th><th>null trials</th><th>null accusations</th></tr>\n",
                  f);
        fputs("<tr><td class=\"l\"><code>", f);
        html(f, tm_lab_grid_attack(g, a));
        fprintf(f, "</code></td><td>%d</td><td>%zu</td><td>%.1f%% (%zu)</td><td>%.1f%% (%zu)</td>", c, n,
                rate(one, n), one, rate(all, n), all);
        fprintf(f, "<td%s>%zu</td><td>%zu</td><td%s>%zu</td></tr>\n", wrong ? " class=\"bad\"" : "", wrong, nulls,
                null_acc ? " class=\"bad\"" : "", null_acc);
    }
    if (header) fputs("</table>\n", f);
    else fputs("<p>None in this grid (a collusion attack starts with <code>collude:C:SPEC</code>).</p>\n", f);
}

static tm_status image_table(FILE *f, const tm_lab *lab)
{
    fputs("<table><tr><th class=\"l\"></th><th class=\"l\">image</th><th>size</th><th>MP</th><th>PSNR dB</th>"
          "<th>SSIM</th><th>mark ms</th><th>identified</th><th>false accusations</th></tr>\n",
          f);
    for (size_t i = 0; i < tm_lab_image_count(lab); i++) {
        const tm_lab_image *im = tm_lab_image_at(lab, i);
        const tm_lab_thumb *icon = tm_lab_get_thumb(lab, i, TM_LAB_THUMB_ICON);
        fputs("<tr><td class=\"l\">", f);
        if (icon) {
            tm_status st = img_tag(f, icon, "icon", im->name, icon->width * 40 / (icon->height ? icon->height : 1), 40);
            if (st != TM_OK) return st;
        }
        fputs("</td><td class=\"l\"><code>", f);
        html(f, im->name);
        fprintf(f, "</code></td><td>%d&#215;%d</td><td>%.1f</td>", im->width, im->height,
                (double)im->width * im->height / 1e6);
        if (im->skipped) {
            fputs("<td class=\"l\" colspan=\"5\">skipped: below the pixel minimum</td></tr>\n", f);
            continue;
        }
        fprintf(f, "<td%s>", im->psnr < 40 ? " class=\"bad\"" : "");
        num(f, "%.2f", im->psnr);
        fprintf(f, "</td><td%s>", im->ssim < 0.98 ? " class=\"bad\"" : "");
        num(f, "%.4f", im->ssim);
        fputs("</td><td>", f);
        num(f, "%.0f", im->mark_ms);
        size_t k, n, fa;
        image_counts(lab, i, &k, &n, &fa);
        fprintf(f, "</td><td>%zu/%zu (%.0f%%)</td><td%s>%zu</td></tr>\n", k, n, n ? rate(k, n) : 0.0,
                fa ? " class=\"bad\"" : "", fa);
    }
    fputs("</table>\n", f);
    return TM_OK;
}

/* The trials that went wrong: misses and wrong accusations, at most max. */
static void failures_table(FILE *f, const tm_lab *lab, size_t max)
{
    const tm_lab_grid *g = tm_lab_get_grid(lab);
    size_t shown = 0, total = 0;
    for (size_t i = 0; i < tm_lab_trial_count(lab); i++) {
        const tm_lab_trial *t = tm_lab_trial_at(lab, i);
        if (t->outcome == TM_LAB_IDENTIFIED || t->outcome == TM_LAB_NULL_NONE || t->outcome == TM_LAB_NULL_INCONCLUSIVE)
            continue;
        total++;
        if (shown == max) continue;
        if (shown++ == 0)
            fputs("<table><tr><th class=\"l\">image</th><th class=\"l\">attack</th><th class=\"l\">trial</th>"
                  "<th class=\"l\">outcome</th><th>pilot z</th><th>own log10 p</th><th>best other log10 p</th>"
                  "<th>recovered scale</th><th>rotation</th><th>suspect</th></tr>\n",
                  f);
        fputs("<tr><td class=\"l\"><code>", f);
        html(f, tm_lab_image_at(lab, t->image)->name);
        fputs("</code></td><td class=\"l\"><code>", f);
        html(f, tm_lab_grid_attack(g, t->attack));
        fprintf(f, "</code></td><td class=\"l\">%s</td><td class=\"l%s\">%s</td><td>", tm_lab_kind_name(t->kind),
                t->outcome == TM_LAB_WRONG ? " bad" : "", tm_lab_outcome_name(t->outcome));
        num(f, "%.1f", t->pilot_z);
        fputs("</td><td>", f);
        num(f, "%.1f", t->log10_p);
        fputs("</td><td>", f);
        num(f, "%.1f", t->innocent_log10_p);
        fputs("</td><td>", f);
        num(f, "%.3f", t->scale);
        fputs("</td><td>", f);
        num(f, "%.2f&#176;", t->rotation_deg);
        fprintf(f, "</td><td>%d&#215;%d</td></tr>\n", t->width, t->height);
    }
    if (shown) fputs("</table>\n", f);
    if (total == 0) fputs("<p>None: every leaked copy was identified and no null trial accused anyone.</p>\n", f);
    else if (total > shown) fprintf(f, "<p class=\"note\">%zu more in the JSON output.</p>\n", total - shown);
}

static tm_status showcase(FILE *f, const tm_lab *lab)
{
    size_t i = tm_lab_showcase_image(lab);
    if (i == (size_t)-1) return TM_OK;
    const tm_lab_image *im = tm_lab_image_at(lab, i);
    fputs("<h2>What the mark looks like: <code>", f);
    html(f, im->name);
    fputs("</code></h2>\n", f);
    const tm_lab_thumb *crop = tm_lab_get_thumb(lab, i, TM_LAB_THUMB_CROP_ORIG);
    fprintf(f, "<p class=\"note\">PSNR %.2f dB, SSIM %.4f at the default strength. Top: the whole image shrunk; the third "
               "panel is the local amplitude of the mark (RMS of its luminance change over each thumbnail pixel), "
               "showing where the perceptual mask lets it hide. Bottom: %d&#215;%d pixels at full resolution "
               "where the mark is strongest (where a careful eye would find it first) and the signed change there, "
               "amplified.</p>\n",
            im->psnr, im->ssim, crop ? crop->width : 0, crop ? crop->height : 0);
    static const struct {
        int which;
        const char *caption;
        const char *cls;
    } rows[2][3] = {
        {{TM_LAB_THUMB_ORIG, "original", NULL},
         {TM_LAB_THUMB_MARKED, "marked copy", NULL},
         {TM_LAB_THUMB_AMPLITUDE, "mark amplitude", NULL}},
        {{TM_LAB_THUMB_CROP_ORIG, "original, 1:1", "px"},
         {TM_LAB_THUMB_CROP_MARKED, "marked copy, 1:1", "px"},
         {TM_LAB_THUMB_CROP_DIFF, "difference, 1:1", "px"}},
    };
    for (int r = 0; r < 2; r++) {
        fputs("<div class=\"pics\">\n", f);
        for (int k = 0; k < 3; k++) {
            const tm_lab_thumb *t = tm_lab_get_thumb(lab, i, rows[r][k].which);
            if (!t) continue;
            int scale = r == 1 ? 2 : 1; /* crops shown at 200% */
            fputs("<figure>", f);
            tm_status st = img_tag(f, t, rows[r][k].cls, rows[r][k].caption, t->width * scale, t->height * scale);
            if (st != TM_OK) return st;
            fputs("<figcaption>", f);
            html(f, rows[r][k].caption);
            if (rows[r][k].which == TM_LAB_THUMB_AMPLITUDE)
                fprintf(f, " (white = %.2f grey levels RMS)", t->gain > 0 ? 255 / t->gain : 0);
            if (rows[r][k].which == TM_LAB_THUMB_CROP_DIFF)
                fprintf(f, " (mid-grey = unchanged, amplified &#215;%.0f)", t->gain);
            if (r == 1) fputs(", shown at 200%", f);
            fputs("</figcaption></figure>\n", f);
        }
        fputs("</div>\n", f);
        if (r == 0) fputs("<div style=\"height:12px\"></div>\n", f);
    }
    return TM_OK;
}

tm_status tm_lab_write_html(const tm_lab *lab, const char *path)
{
    tm_lab_curve *curves = NULL;
    size_t n_curves = 0;
    doc d;
    tm_status st = begin_report(lab, path, &curves, &n_curves, &d);
    if (st != TM_OK) return st;
    const tm_lab_params *p = tm_lab_get_params(lab);
    const tm_lab_grid *g = tm_lab_get_grid(lab);
    FILE *f = d.f;
    size_t swept, skipped;
    count_images(lab, &swept, &skipped);
    tm_lab_tally all;
    tm_lab_tally_attack(lab, (size_t)-1, &all);
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
               "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
               "<title>tracemark robustness report</title>\n<style>\n%s</style>\n</head>\n<body>\n<main>\n",
            css);
    fputs("<h1>tracemark robustness report</h1>\n", f);
    fprintf(f, "<p class=\"meta\">%zu images swept", swept);
    if (skipped) fprintf(f, " (%zu skipped as too small)", skipped);
    fprintf(f, " &#215; %zu attacks; registry of %zu copies per image, %zu leaked; budget %g per trace; %s; %s; "
               "tracemark %s, key %s; %d worker%s, %.1f s.</p>\n",
            tm_lab_grid_size(g), p->n_copies, p->n_leakers, p->fpr, null_plan_text(p), trace_mode_text(p), tm_version(),
            tm_lab_get_key_fingerprint(lab), p->jobs, p->jobs == 1 ? "" : "s", tm_lab_wall_ms(lab) / 1e3);
    if (p->command) {
        fputs("<p class=\"meta\"><code>", f);
        html(f, p->command);
        fputs("</code></p>\n", f);
    }
    size_t false_acc = all.wrong + all.null_accused;
    fprintf(f, "<div class=\"verdict %s\">%.1f%% of %zu leaked copies identified. ", false_acc ? "bad" : "ok",
            all.trials ? rate(all.identified, all.trials) : 0.0, all.trials);
    if (false_acc)
        fprintf(f, "%zu FALSE ACCUSATIONS: %zu in %zu null traces, %zu among %zu innocent copies scored.</div>\n", false_acc,
                all.null_accused, all.null_trials, all.wrong, all.innocents_scored);
    else
        fprintf(f, "No false accusation: 0 in %zu null traces (unmarked originals, wrong key) and 0 among %zu innocent "
                   "copies scored.</div>\n",
                all.null_trials, all.innocents_scored);

    fputs("<h2>Per attack</h2>\n<p class=\"note\">Identified: the leaker's copy accused and nobody else (for a "
          "collusion, at least one colluder and nobody else). Wrong accusation: a copy other than the leaker's "
          "(the colluders') accused. Missed: none (no mark found) or inconclusive (a mark "
          "but no copy within the bound). Null trials trace the unmarked original through the same attack and the "
          "leaked copy under a wrong key; any accusation there is false. Weakest log10 p: the largest bound among the "
          "identifications (closest to the threshold).</p>\n",
          f);
    summary_table(f, lab);

    fputs("<h2>Collusion</h2>\n<p class=\"note\">Attacks <code>collude:C:SPEC</code> make the suspect from C "
          "marked copies (the leaked copy and C-1 more), combined pixel by pixel (average, min, max, median) or "
          "pieced together (interleave) and then attacked as SPEC says. Every copy whose score passes the bound is "
          "accused; an innocent is any copy not among the C.</p>\n",
          f);
    collusion_table(f, lab, 0);
    fputs("<p class=\"note\">The same, over the images of at least 2 megapixels:</p>\n", f);
    collusion_table(f, lab, 2000000);

    if (n_curves) {
        fputs("<h2>Identification rate against attack strength</h2>\n<p class=\"note\">Attacks of the grid that differ "
              "in one number only, grouped from their specs; a red point had a false accusation.</p>\n"
              "<div class=\"cards\">\n",
              f);
        for (size_t c = 0; c < n_curves; c++) {
            fputs("<div class=\"card\">\n", f);
            svg_curve(f, lab, &curves[c]);
            fputs("</div>\n", f);
        }
        fputs("</div>\n", f);
    }

    fputs("<h2>Leaked copies against the nulls</h2>\n<p class=\"note\">One dot per trace. A copy is accused only right "
          "of the threshold. The leaker's own copy should sit far right; the best other copy of the registry, the "
          "unmarked originals and the wrong key should stay left of the threshold (red if they crossed it).</p>\n"
          "<div class=\"card\">\n",
          f);
    svg_strip(f, lab, VAL_LOG10_P);
    fputs("</div>\n<div style=\"height:12px\"></div>\n<div class=\"card\">\n", f);
    svg_strip(f, lab, VAL_PILOT_Z);
    fputs("</div>\n", f);

    fputs("<h2>Invisibility and identification per image</h2>\n<p class=\"note\">PSNR and SSIM of the marked copy "
          "(8-bit) against the original; below 40 dB or 0.98 in red.</p>\n",
          f);
    if ((st = image_table(f, lab)) != TM_OK) goto out;
    if ((st = showcase(f, lab)) != TM_OK) goto out;
    fputs("<h2>Misses and wrong accusations</h2>\n", f);
    failures_table(f, lab, 300);
    fputs("</main>\n</body>\n</html>\n", f);
out:
    tm_lab_curves_free(curves, n_curves);
    if (st != TM_OK) {
        close_doc(&d, NULL);
        free(d.buf);
        return st;
    }
    return close_doc(&d, path);
}
