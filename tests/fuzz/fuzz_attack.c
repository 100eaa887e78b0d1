/* fuzz_attack.c -- libFuzzer target for the attack-spec parser and the
 * attacks behind it: the input is a spec ("jpeg:q=85,scale:0.5"), applied
 * with tm_attack_apply to a tiny synthetic image and, as a combine spec
 * ("average,gray"), with tm_attack_combine to a few of them. Which image is
 * used follows from the input's length, so every shape gets fuzzed.
 *
 * An attack's output may be far larger than its input (scale:8 is 64 times
 * the pixels), so before running a spec its worst case is bounded from the
 * step names and scale factors, and a spec that could exceed MAX_PIXELS at
 * any step, or MAX_WORK pixels over all its steps, is not run: each run
 * stays within a few MB and a fraction of a second, whatever the API would
 * allow. */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_errno.h>

#include "tracemark.h"

#define MAX_SPEC 512
#define MAX_PIXELS (1u << 16)  /* largest image any step may make (1 MB in four planes) */
#define MAX_WORK (1u << 18)    /* pixels summed over the steps */
#define QUANTIZE_WORK (1u << 15) /* quantize's tables cost about 17 MB whatever the size */
#define N_COPIES 4

static const struct {
    int w, h, channels;
} shapes[] = {{24, 16, 3}, {24, 16, 1}, {13, 7, 4}, {16, 24, 2}, {2, 1, 3}};
#define N_SHAPES (sizeof shapes / sizeof shapes[0])

/* images[s][k]: copy k of shape s (different content, same shape); the
 * attacks read them, and pristine holds the same pixels to check that no
 * attack writes to its input */
static tm_image *images[N_SHAPES][N_COPIES], *pristine[N_SHAPES][N_COPIES];

/* Integer samples (exact in every lossless codec): a gradient, a checker
 * and a xorshift texture, so every step has detail to work on; the alpha
 * plane, where there is one, varies too. */
static tm_image *synthetic(int w, int h, int channels, uint32_t seed)
{
    tm_image *img = NULL;
    if (tm_image_create(w, h, channels, &img) != TM_OK) abort();
    uint32_t s = seed * 2654435761u + 1;
    for (int c = 0; c < channels; c++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                int v = (x * 255) / (w > 1 ? w - 1 : 1) / 2 + ((x / 3 + y / 3 + c) % 2) * 60 + (int)(s % 64);
                img->plane[c][(size_t)y * w + x] = (float)(v > 255 ? 255 : v);
            }
    return img;
}

static void init(void)
{
    gsl_set_error_handler_off(); /* the library checks every GSL status */
    for (size_t s = 0; s < N_SHAPES; s++)
        for (int k = 0; k < N_COPIES; k++) {
            images[s][k] = synthetic(shapes[s].w, shapes[s].h, shapes[s].channels, (uint32_t)(s * N_COPIES + k));
            pristine[s][k] = synthetic(shapes[s].w, shapes[s].h, shapes[s].channels, (uint32_t)(s * N_COPIES + k));
        }
}

/* True when the step at s (up to its comma) is the named one, as the
 * parser reads names: blanks before it, then the name ending at ':', at a
 * blank or at the end of the step. */
static int step_is(const char *s, const char *name)
{
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(name);
    return !strncmp(s, name, n) && (s[n] == ':' || s[n] == ',' || s[n] == 0 || isspace((unsigned char)s[n]));
}

/* The factor of the scale step at s as the parser will read it (its first
 * positional argument or f=), or 8, the largest it accepts, when there is
 * no such number: the step is refused then, or it is at most 8. */
static double scale_factor(const char *s)
{
    const char *end = strchr(s, ',');
    size_t len = end ? (size_t)(end - s) : strlen(s);
    char step[160];
    if (len >= sizeof step) return 8;
    memcpy(step, s, len);
    step[len] = 0;
    char *save = NULL, *tok = strtok_r(step, ":", &save);
    while (tok && (tok = strtok_r(NULL, ":", &save))) {
        const char *v = strchr(tok, '=') ? (!strncmp(tok, "f=", 2) ? tok + 2 : NULL) : tok;
        if (!v) continue;
        char *e;
        double f = strtod(v, &e);
        return e != v && !*e && f > 0 && f <= 8 ? f : 8;
    }
    return 8;
}

/* Whether spec, run on an image of `pixels`, stays within MAX_PIXELS at
 * every step and MAX_WORK in all. Only scale and aspect enlarge an image:
 * scale by F gives round(w F) x round(h F) <= P F^2 + F (w + h) / 2 + 1/4
 * pixels, and w + h <= P + 1; aspect (F <= 2) at most doubles them. Every
 * other step keeps the count or lowers it (crops, turns, downscales). */
static int affordable(const char *spec, uint64_t pixels)
{
    double p = (double)pixels, work = 0;
    for (const char *s = spec;;) {
        if (step_is(s, "scale")) {
            double f = scale_factor(s);
            p = p * f * f + f * (p + 1) / 2 + 0.25;
        } else if (step_is(s, "aspect")) {
            p *= 2;
        }
        if (p > MAX_PIXELS) return 0;
        work += p + (step_is(s, "quantize") ? QUANTIZE_WORK : 0);
        if (work > MAX_WORK) return 0;
        const char *comma = strchr(s, ',');
        if (!comma) return 1;
        s = comma + 1;
    }
}

static int same_pixels(const tm_image *a, const tm_image *b)
{
    if (a->width != b->width || a->height != b->height || a->channels != b->channels) return 0;
    for (int c = 0; c < a->channels; c++)
        if (memcmp(a->plane[c], b->plane[c], sizeof(float) * (size_t)a->width * a->height)) return 0;
    return 1;
}

/* What every attack promises: on success a sane image of samples in
 * 0..255 (a rounding step over allowed), within the bound affordable()
 * assumed; on failure no image, and a reason when the spec was refused. */
static void check(tm_status st, const tm_image *out, const char *err)
{
    if (st != TM_OK) {
        if (out) abort();
        if (st == TM_ERR_ARG && !err[0]) abort();
        return;
    }
    if (!out || out->width < 1 || out->height < 1 || out->channels < 1 || out->channels > 4) abort();
    size_t n = (size_t)out->width * out->height;
    if (n > MAX_PIXELS) abort();
    for (int c = 0; c < out->channels; c++)
        for (size_t i = 0; i < n; i++) {
            float v = out->plane[c][i];
            if (!(v >= -0.01f && v <= 255.01f)) abort(); /* also NaN */
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        init();
        ready = 1;
    }
    if (size > MAX_SPEC) return 0;
    char spec[MAX_SPEC + 1];
    if (size) memcpy(spec, data, size);
    spec[size] = 0;
    size_t shape = size % N_SHAPES;
    const tm_image *in = images[shape][0];
    if (!affordable(spec, (uint64_t)in->width * in->height)) return 0;

    tm_image *out = NULL;
    char err[256] = "";
    tm_status st = tm_attack_apply(spec, in, &out, err, sizeof err);
    check(st, out, err);
    tm_image_free(out);

    /* The same text as a combine spec of 2..N_COPIES copies; its first step
     * is a combine mode, which keeps the size. */
    size_t n = 2 + size % (N_COPIES - 1);
    const tm_image *copies[N_COPIES];
    for (size_t k = 0; k < n; k++) copies[k] = images[shape][k];
    out = NULL;
    err[0] = 0;
    st = tm_attack_combine(spec, copies, n, &out, err, sizeof err);
    check(st, out, err);
    tm_image_free(out);

    for (int k = 0; k < N_COPIES; k++)
        if (!same_pixels(images[shape][k], pristine[shape][k])) abort(); /* inputs are never modified */
    return 0;
}
