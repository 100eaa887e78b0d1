/* attack.c -- distortions a leaked copy may have gone through, for measuring
 * robustness: `tracemark attack SPEC IN OUT` and the robustness sweeps.
 *
 * A spec is a chain of steps separated by commas; a step is a name and
 * colon-separated arguments, positional or key=value:
 *   "jpeg:q=75"   "blur:sigma=1.0"   "crop:0.5"   "gamma:1.2,jpeg:q=50:ss=444"
 * Every step makes a new image; the input is never modified. Randomised
 * steps take a seed, so every measurement is reproducible. */
#include "config.h"

#include <ctype.h>
#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheme.h"

#define MAX_ARGS 4

typedef struct step_args {
    int n;
    char key[MAX_ARGS][16];   /* "" for a positional argument */
    char val[MAX_ARGS][32];
} step_args;

typedef struct attack_def {
    const char *name;
    const char *params;  /* parameter names in positional order, comma-separated */
    const char *usage;
    tm_status (*run)(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen);
} attack_def;

static tm_status fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static tm_status fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return TM_ERR_ARG;
}

/* The value of argument key, or NULL when not given. */
static const char *arg(const step_args *a, const char *key)
{
    for (int i = 0; i < a->n; i++)
        if (!strcmp(a->key[i], key)) return a->val[i];
    return NULL;
}

/* Reads a number argument within [lo, hi] (a whole number when integer),
 * def when absent (NAN: required); -1 on error. */
static int num_arg(const step_args *a, const char *key, double lo, double hi, double def, int integer, double *out)
{
    const char *v = arg(a, key);
    if (!v) {
        if (isnan(def)) return -1;
        *out = def;
        return 0;
    }
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end || !(d >= lo && d <= hi) || (integer && d != floor(d))) return -1;
    *out = d;
    return 0;
}

static tm_status codec_roundtrip(const tm_image *in, const tm_save_options *so, tm_image **out)
{
    uint8_t *buf;
    size_t len;
    tm_status st = tm_image_encode(in, so, &buf, &len);
    if (st != TM_OK) return st;
    st = tm_image_decode(buf, len, NULL, out, NULL);
    free(buf);
    return st;
}

static tm_status a_jpeg(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double q;
    if (num_arg(a, "q", 1, 100, 75, 1, &q)) return fail(err, errlen, "jpeg: q wants a whole number 1..100");
    tm_save_options so;
    tm_save_options_init(&so);
    so.format = TM_FORMAT_JPEG;
    so.quality = (int)q;
    so.subsampling = TM_SS_420;
    const char *ss = arg(a, "ss");
    if (ss) {
        if (!strcmp(ss, "444")) so.subsampling = TM_SS_444;
        else if (!strcmp(ss, "422")) so.subsampling = TM_SS_422;
        else if (!strcmp(ss, "420")) so.subsampling = TM_SS_420;
        else return fail(err, errlen, "jpeg: ss wants 444, 422 or 420");
    }
    return codec_roundtrip(in, &so, out);
}

static tm_status a_webp(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double q;
    if (num_arg(a, "q", 1, 100, 75, 1, &q)) return fail(err, errlen, "webp: q wants a whole number 1..100");
    tm_save_options so;
    tm_save_options_init(&so);
    so.format = TM_FORMAT_WEBP;
    so.quality = (int)q;
    return codec_roundtrip(in, &so, out);
}

static tm_status a_png(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    (void)a;
    (void)err;
    (void)errlen;
    tm_save_options so;
    tm_save_options_init(&so);
    so.format = TM_FORMAT_PNG;
    return codec_roundtrip(in, &so, out);
}

/* Applies f(v, p) to every colour sample, clamped to 0..255. */
static tm_status pointwise(const tm_image *in, tm_image **out, double (*f)(double, double), double p)
{
    tm_status st = tm_image_clone(in, out);
    if (st != TM_OK) return st;
    int nc = tm_color_channels(in);
    size_t n = (size_t)in->width * in->height;
    for (int c = 0; c < nc; c++)
        for (size_t i = 0; i < n; i++) (*out)->plane[c][i] = (float)fmin(255, fmax(0, f((*out)->plane[c][i], p)));
    return TM_OK;
}

static double f_gamma(double v, double g)
{
    return 255.0 * pow(v / 255.0, 1.0 / g);
}
static double f_brightness(double v, double d)
{
    return v + d;
}
static double f_contrast(double v, double k)
{
    return 127.5 + (v - 127.5) * k;
}

static tm_status a_gamma(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double g;
    if (num_arg(a, "g", 0.1, 10, NAN, 0, &g)) return fail(err, errlen, "gamma: wants a value in 0.1..10, e.g. gamma:1.2");
    return pointwise(in, out, f_gamma, g);
}

static tm_status a_brightness(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double d;
    if (num_arg(a, "d", -255, 255, NAN, 0, &d)) return fail(err, errlen, "brightness: wants an offset in -255..255");
    return pointwise(in, out, f_brightness, d);
}

static tm_status a_contrast(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double k;
    if (num_arg(a, "k", 0, 10, NAN, 0, &k)) return fail(err, errlen, "contrast: wants a factor in 0..10");
    return pointwise(in, out, f_contrast, k);
}

static tm_status a_gray(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    (void)a;
    (void)err;
    (void)errlen;
    tm_image *g;
    tm_status st = tm_image_create(in->width, in->height, 1, &g);
    if (st != TM_OK) return st;
    tm_luma(in, g->plane[0]);
    *out = g;
    return TM_OK;
}

/* Separable Gaussian blur of every colour plane, kernel radius 3 sigma. */
static tm_status a_blur(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double sigma;
    if (num_arg(a, "sigma", 0.1, 20, 1.0, 0, &sigma)) return fail(err, errlen, "blur: sigma wants 0.1..20");
    int r = (int)ceil(3 * sigma);
    double *k = malloc(sizeof(double) * (2 * r + 1));
    int w = in->width, h = in->height;
    float *tmp = malloc(sizeof(float) * (size_t)w * h);
    tm_status st = TM_ERR_NOMEM;
    if (!k || !tmp) goto out;
    double s = 0;
    for (int i = -r; i <= r; i++) s += k[i + r] = exp(-(double)i * i / (2 * sigma * sigma));
    for (int i = 0; i <= 2 * r; i++) k[i] /= s;
    if ((st = tm_image_clone(in, out)) != TM_OK) goto out;
    int nc = tm_color_channels(in);
    for (int c = 0; c < nc; c++) {
        const float *src = in->plane[c];
        float *dst = (*out)->plane[c];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double acc = 0;
                for (int i = -r; i <= r; i++) {
                    int xx = x + i < 0 ? 0 : x + i >= w ? w - 1 : x + i;
                    acc += k[i + r] * src[(size_t)y * w + xx];
                }
                tmp[(size_t)y * w + x] = (float)acc;
            }
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double acc = 0;
                for (int i = -r; i <= r; i++) {
                    int yy = y + i < 0 ? 0 : y + i >= h ? h - 1 : y + i;
                    acc += k[i + r] * tmp[(size_t)yy * w + x];
                }
                dst[(size_t)y * w + x] = (float)acc;
            }
    }
out:
    free(k);
    free(tmp);
    return st;
}

/* Additive white Gaussian noise, from GSL's MT19937 seeded by the spec. */
static tm_status a_noise(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    double sigma, seed;
    if (num_arg(a, "sigma", 0, 100, 2.0, 0, &sigma)) return fail(err, errlen, "noise: sigma wants 0..100");
    if (num_arg(a, "seed", 0, 4294967295.0, 1, 1, &seed)) return fail(err, errlen, "noise: seed wants a whole number 0..4294967295");
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    if (!rng) return TM_ERR_NOMEM;
    gsl_rng_set(rng, (unsigned long)seed + 1); /* GSL maps seed 0 to its default */
    tm_status st = tm_image_clone(in, out);
    if (st == TM_OK) {
        int nc = tm_color_channels(in);
        size_t n = (size_t)in->width * in->height;
        for (int c = 0; c < nc; c++)
            for (size_t i = 0; i < n; i++) {
                double v = (*out)->plane[c][i] + gsl_ran_gaussian_ziggurat(rng, sigma);
                (*out)->plane[c][i] = (float)fmin(255, fmax(0, v));
            }
    }
    gsl_rng_free(rng);
    return st;
}

/* Parses "WxH+X+Y" with every number in 0..TM_MAX_SIDE; 0 on success. */
static int parse_window(const char *v, int *w, int *h, int *x, int *y)
{
    int *dst[4] = {w, h, x, y};
    const char seps[4] = {'x', '+', '+', 0};
    for (int k = 0; k < 4; k++) {
        char *end;
        if (*v < '0' || *v > '9') return -1;
        long n = strtol(v, &end, 10);
        if (n > TM_MAX_SIDE || *end != seps[k]) return -1;
        *dst[k] = (int)n;
        v = end + (k < 3);
    }
    return 0;
}

/* crop:F keeps the centred fraction F of each side; crop:WxH+X+Y a window. */
static tm_status a_crop(const step_args *a, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    const char *v = arg(a, "f");
    if (!v) return fail(err, errlen, "crop: wants a fraction (crop:0.5) or a window (crop:640x480+10+20)");
    int w, h, x, y;
    if (strchr(v, 'x')) {
        if (parse_window(v, &w, &h, &x, &y)) return fail(err, errlen, "crop: bad window '%s', want WxH+X+Y", v);
        if (w < 1 || h < 1 || x + w > in->width || y + h > in->height)
            return fail(err, errlen, "crop: window %s is not inside the %dx%d image", v, in->width, in->height);
    } else {
        double f;
        if (num_arg(a, "f", 0.01, 1, NAN, 0, &f)) return fail(err, errlen, "crop: fraction wants 0.01..1");
        w = (int)lround(in->width * f);
        h = (int)lround(in->height * f);
        if (w < 1) w = 1;
        if (h < 1) h = 1;
        x = (in->width - w) / 2;
        y = (in->height - h) / 2;
    }
    tm_status st = tm_image_create(w, h, in->channels, out);
    if (st != TM_OK) return st;
    for (int c = 0; c < in->channels; c++)
        for (int r = 0; r < h; r++)
            memcpy((*out)->plane[c] + (size_t)r * w, in->plane[c] + (size_t)(y + r) * in->width + x, sizeof(float) * w);
    return tm_image_set_icc(*out, in->icc, in->icc_len);
}

static const attack_def attacks[] = {
    {"jpeg", "q,ss", "jpeg:q=Q[:ss=444|422|420]   JPEG re-encode at quality Q (default 75, 4:2:0)", a_jpeg},
    {"webp", "q", "webp:q=Q                    lossy WebP re-encode at quality Q (default 75)", a_webp},
    {"png", "", "png                         lossless PNG re-save (8-bit rounding)", a_png},
    {"blur", "sigma", "blur:sigma=S                Gaussian blur (default 1.0)", a_blur},
    {"noise", "sigma,seed", "noise:sigma=S[:seed=N]      additive Gaussian noise (default 2.0, seed 1)", a_noise},
    {"gamma", "g", "gamma:G                     gamma correction, 0.1..10", a_gamma},
    {"brightness", "d", "brightness:D                add D to every sample, -255..255", a_brightness},
    {"contrast", "k", "contrast:K                  scale contrast about mid-grey by K", a_contrast},
    {"gray", "", "gray                        convert to greyscale", a_gray},
    {"crop", "f", "crop:F | crop:WxH+X+Y        keep the centred fraction F of each side, or a window", a_crop},
};
#define N_ATTACKS (sizeof attacks / sizeof attacks[0])

const char *tm_attack_usage(size_t i)
{
    return i < N_ATTACKS ? attacks[i].usage : NULL;
}

/* The pos-th name in a comma-separated parameter list; 0 when there is none. */
static int param_name(const char *params, int pos, char *out, size_t cap)
{
    for (int i = 0; *params; i++) {
        const char *end = strchr(params, ',');
        size_t len = end ? (size_t)(end - params) : strlen(params);
        if (i == pos) {
            if (len >= cap) return 0;
            memcpy(out, params, len);
            out[len] = 0;
            return 1;
        }
        if (!end) break;
        params = end + 1;
    }
    return 0;
}

/* True when key is one of the parameter names. */
static int param_known(const char *params, const char *key)
{
    char name[16];
    for (int i = 0; param_name(params, i, name, sizeof name); i++)
        if (!strcmp(name, key)) return 1;
    return 0;
}

/* Parses one step "name:a:k=v" (len bytes at s) into its definition and args. */
static tm_status parse_step(const char *s, size_t len, const attack_def **def, step_args *a, char *err, size_t errlen)
{
    char buf[160];
    if (len == 0 || len >= sizeof buf) return fail(err, errlen, "empty or overlong step in the attack spec");
    memcpy(buf, s, len);
    buf[len] = 0;
    memset(a, 0, sizeof *a);
    char *save = NULL, *tok = strtok_r(buf, ":", &save);
    if (!tok) return fail(err, errlen, "empty step in the attack spec");
    *def = NULL;
    for (size_t i = 0; i < N_ATTACKS; i++)
        if (!strcmp(attacks[i].name, tok)) *def = &attacks[i];
    if (!*def) return fail(err, errlen, "unknown attack '%s'", tok);
    int pos = 0;
    while ((tok = strtok_r(NULL, ":", &save))) {
        if (a->n == MAX_ARGS) return fail(err, errlen, "%s: too many arguments", (*def)->name);
        char *eq = strchr(tok, '=');
        const char *key = tok, *val = tok;
        char name[16];
        if (eq) {
            *eq = 0;
            val = eq + 1;
        } else if (!param_name((*def)->params, pos++, name, sizeof name)) {
            return fail(err, errlen, "%s: unexpected argument '%s'", (*def)->name, tok);
        } else {
            key = name;
        }
        if (!*key || !*val || !param_known((*def)->params, key))
            return fail(err, errlen, "%s: unknown argument '%s'", (*def)->name, tok);
        if (arg(a, key)) return fail(err, errlen, "%s: '%s' given twice", (*def)->name, key);
        if (strlen(key) >= sizeof a->key[0] || strlen(val) >= sizeof a->val[0])
            return fail(err, errlen, "%s: argument '%s' too long", (*def)->name, tok);
        strcpy(a->key[a->n], key);
        strcpy(a->val[a->n], val);
        a->n++;
    }
    return TM_OK;
}

tm_status tm_attack_apply(const char *spec, const tm_image *in, tm_image **out, char *err, size_t errlen)
{
    if (err && errlen) err[0] = 0;
    if (!spec || !in || !out) return TM_ERR_ARG;
    *out = NULL;
    tm_image *cur = NULL;
    const char *s = spec;
    for (;;) {
        while (isspace((unsigned char)*s)) s++;
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        while (len > 0 && isspace((unsigned char)s[len - 1])) len--;
        const attack_def *def = NULL;
        step_args a;
        tm_status st = parse_step(s, len, &def, &a, err, errlen);
        tm_image *next = NULL;
        if (st == TM_OK) st = def->run(&a, cur ? cur : in, &next, err, errlen);
        tm_image_free(cur);
        if (st != TM_OK) {
            tm_image_free(next);
            return st;
        }
        cur = next;
        if (!end) break;
        s = end + 1;
    }
    *out = cur;
    return TM_OK;
}
