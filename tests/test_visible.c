/* test_visible.c -- the visible, tiled text watermark (src/visible.c).
 *
 * Checked by properties of the change it makes to flat and synthetic
 * images, never against stored pixels: how much of the image changes and
 * where, the bound a * 255 on any change, linearity in the opacity, the
 * angle and size showing in the layout, every channel treated alike and
 * alpha kept, the same pixels every time. Every bad parameter must give
 * TM_ERR_ARG, a message naming the problem, and an untouched image. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define W 480
#define H 320
#define TEXT "For review only \xe2\x80\x94 Alice"  /* with an em dash */

static tm_image *clone(const tm_image *img)
{
    tm_image *out = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_clone(img, &out), TM_OK);
    return out;
}

static tm_visible_params params(const char *text)
{
    tm_visible_params p;
    tm_visible_params_init(&p);
    p.text = text;
    return p;
}

/* Applies p to img, asserting success and an empty message. */
static void apply(tm_image *img, const tm_visible_params *p)
{
    char err[256] = "x";
    tm_status st = tm_visible_apply(img, p, err, sizeof err);
    if (st != TM_OK) fprintf(stderr, "tm_visible_apply: %s (%s)\n", tm_strerror(st), err);
    CU_ASSERT_EQUAL_FATAL(st, TM_OK);
    CU_ASSERT_STRING_EQUAL(err, "");
}

/* A copy of img with p applied. */
static tm_image *marked(const tm_image *img, const tm_visible_params *p)
{
    tm_image *out = clone(img);
    apply(out, p);
    return out;
}

/* Whether pixel i of plane c changed by more than half a level. */
static int changed(const tm_image *a, const tm_image *b, int c, size_t i)
{
    return fabsf(a->plane[c][i] - b->plane[c][i]) > 0.5f;
}

/* The fraction of plane-0 pixels in [x0, x1) x [y0, y1) that changed. */
static double changed_in(const tm_image *a, const tm_image *b, int x0, int y0, int x1, int y1)
{
    size_t n = 0;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) n += (size_t)changed(a, b, 0, (size_t)y * a->width + x);
    return (double)n / ((double)(x1 - x0) * (y1 - y0));
}

/* Largest increase and largest decrease (as positive numbers) of plane c. */
static void extremes(const tm_image *orig, const tm_image *out, int c, double *up, double *down)
{
    *up = *down = 0;
    for (size_t i = 0; i < (size_t)orig->width * orig->height; i++) {
        double d = (double)out->plane[c][i] - orig->plane[c][i];
        if (d > *up) *up = d;
        if (-d > *down) *down = -d;
    }
}

/* ---- defaults and the font ----------------------------------------------------- */

static void test_defaults(void)
{
    tm_visible_params p;
    memset(&p, 0x5a, sizeof p);
    tm_visible_params_init(&p);
    CU_ASSERT_PTR_NULL(p.text);
    CU_ASSERT_PTR_NULL(p.font);
    CU_ASSERT_DOUBLE_EQUAL(p.opacity, 0.25, 0);
    CU_ASSERT_DOUBLE_EQUAL(p.angle_deg, 30, 0);
    CU_ASSERT_DOUBLE_EQUAL(p.size, 0.05, 0);
}

static void test_font_lookup(void)
{
    char path[4096], err[256] = "x";
    CU_ASSERT_EQUAL_FATAL(tm_visible_font(NULL, path, sizeof path, err, sizeof err), TM_OK);
    CU_ASSERT_STRING_EQUAL(err, "");
    if (tm_test_verbose()) printf("\n  default font: %s\n", path);
    FILE *f = fopen(path, "rb");
    CU_ASSERT_PTR_NOT_NULL(f);
    if (f) fclose(f);
    /* A named font is taken as it is, unopened. */
    CU_ASSERT_EQUAL(tm_visible_font("/no/such.ttf", path, sizeof path, err, sizeof err), TM_OK);
    CU_ASSERT_STRING_EQUAL(path, "/no/such.ttf");
    CU_ASSERT_EQUAL(tm_visible_font("", path, sizeof path, err, sizeof err), TM_ERR_ARG);
    CU_ASSERT(strlen(err) > 0);
    char small[4];
    CU_ASSERT_EQUAL(tm_visible_font("/no/such.ttf", small, sizeof small, err, sizeof err), TM_ERR_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "too long"));
    CU_ASSERT_EQUAL(tm_visible_font(NULL, NULL, 0, NULL, 0), TM_ERR_ARG);

    /* The default and the same file named give the same pixels. */
    CU_ASSERT_EQUAL_FATAL(tm_visible_font(NULL, path, sizeof path, NULL, 0), TM_OK);
    tm_image *in = tm_test_flat(W, H, 1, 128);
    tm_visible_params p = params(TEXT);
    tm_image *a = marked(in, &p);
    p.font = path;
    tm_image *b = marked(in, &p);
    CU_ASSERT_EQUAL(tm_test_maxdiff(a, b), 0.0);
    tm_image_free(a);
    tm_image_free(b);
    tm_image_free(in);
}

/* ---- what changes, how much, where ----------------------------------------------- */

static void test_mid_gray(void)
{
    tm_image *in = tm_test_flat(W, H, 1, 128);
    tm_visible_params p = params(TEXT);
    tm_image *out = marked(in, &p);
    double frac = changed_in(in, out, 0, 0, W, H);
    double up, down;
    extremes(in, out, 0, &up, &down);
    if (tm_test_verbose()) printf("\n  changed %.1f%%, up %.2f, down %.2f\n", 100 * frac, up, down);
    CU_ASSERT(frac > 0.02 && frac < 0.40);
    /* White letters and a black outline, each at a quarter: 0.25 * 127 and 0.25 * 128. */
    CU_ASSERT(up > 25 && up <= 0.25 * 127 + 1e-3);
    CU_ASSERT(down > 25 && down <= 0.25 * 128 + 1e-3);
    /* Spread over the whole image: every quadrant, every quarter band. */
    for (int q = 0; q < 4; q++) {
        int x0 = (q % 2) * W / 2, y0 = (q / 2) * H / 2;
        double f = changed_in(in, out, x0, y0, x0 + W / 2, y0 + H / 2);
        if (!(f > 0.01)) fprintf(stderr, "quadrant %d: %.2f%% changed\n", q, 100 * f);
        CU_ASSERT(f > 0.01);
    }
    for (int b = 0; b < 4; b++) {
        CU_ASSERT(changed_in(in, out, b * W / 4, 0, (b + 1) * W / 4, H) > 0.01);
        CU_ASSERT(changed_in(in, out, 0, b * H / 4, W, (b + 1) * H / 4) > 0.01);
    }
    tm_image_free(out);
    tm_image_free(in);
}

static void test_reads_on_dark_and_light(void)
{
    tm_visible_params p = params(TEXT);
    double up, down;
    /* On a dark image the letters show: up to 0.25 * (255 - 20). */
    tm_image *dark = tm_test_flat(W, H, 1, 20);
    tm_image *out = marked(dark, &p);
    extremes(dark, out, 0, &up, &down);
    CU_ASSERT(up > 0.9 * 0.25 * 235 && up <= 0.25 * 235 + 1e-3);
    CU_ASSERT(down <= 0.25 * 20 + 1e-3);
    double frac = changed_in(dark, out, 0, 0, W, H);
    CU_ASSERT(frac > 0.02 && frac < 0.40);
    tm_image_free(out);
    tm_image_free(dark);
    /* On a light one the outline does: down to 0.25 * 240 darker. */
    tm_image *light = tm_test_flat(W, H, 1, 240);
    out = marked(light, &p);
    extremes(light, out, 0, &up, &down);
    CU_ASSERT(down > 0.9 * 0.25 * 240 && down <= 0.25 * 240 + 1e-3);
    CU_ASSERT(up <= 0.25 * 15 + 1e-3);
    frac = changed_in(light, out, 0, 0, W, H);
    CU_ASSERT(frac > 0.02 && frac < 0.40);
    tm_image_free(out);
    tm_image_free(light);
}

/* The change is a * (255 F - in O): twice the opacity, twice the change;
 * at opacity 1 the letters are white and the outline black. */
static void test_opacity(void)
{
    tm_image *in = tm_test_synthetic(W, H, 1, 3, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(in);
    tm_visible_params p = params(TEXT);
    p.opacity = 0.25;
    tm_image *a = marked(in, &p);
    p.opacity = 0.5;
    tm_image *b = marked(in, &p);
    double worst = 0, sa = 0, sb = 0;
    for (size_t i = 0; i < (size_t)W * H; i++) {
        double da = (double)a->plane[0][i] - in->plane[0][i], db = (double)b->plane[0][i] - in->plane[0][i];
        worst = fmax(worst, fabs(db - 2 * da));
        sa += fabs(da);
        sb += fabs(db);
    }
    if (tm_test_verbose()) printf("\n  mean |change| %.3f at 0.25, %.3f at 0.5; linearity error %.2g\n",
                                  sa / (W * H), sb / (W * H), worst);
    CU_ASSERT(sb > 1.9 * sa);
    CU_ASSERT(worst < 1e-3);
    CU_ASSERT(tm_test_maxdiff(in, a) <= 0.25 * 255 + 1e-3);
    CU_ASSERT(tm_test_maxdiff(in, b) <= 0.5 * 255 + 1e-3);
    tm_image_free(a);
    tm_image_free(b);

    tm_image *gray = tm_test_flat(W, H, 1, 128);
    p.opacity = 1;
    tm_image *c = marked(gray, &p);
    float lo = 255, hi = 0;
    for (size_t i = 0; i < (size_t)W * H; i++) {
        lo = fminf(lo, c->plane[0][i]);
        hi = fmaxf(hi, c->plane[0][i]);
    }
    CU_ASSERT(hi > 254.5f && hi <= 255.0f + 1e-3f);
    CU_ASSERT(lo < 0.5f && lo >= -1e-3f);
    tm_image_free(c);
    tm_image_free(gray);
    tm_image_free(in);
}

/* Image rows (by_row) or columns with no change at all. */
static int untouched_lines(const tm_image *a, const tm_image *b, int by_row)
{
    int n = 0, lines = by_row ? a->height : a->width, len = by_row ? a->width : a->height;
    for (int l = 0; l < lines; l++) {
        int any = 0;
        for (int k = 0; k < len && !any; k++)
            any = changed(a, b, 0, by_row ? (size_t)l * a->width + k : (size_t)k * a->width + l);
        n += !any;
    }
    return n;
}

static void test_angle(void)
{
    tm_image *in = tm_test_flat(W, H, 1, 128);
    tm_visible_params p = params(TEXT);
    p.angle_deg = 0;
    tm_image *a0 = marked(in, &p);
    p.angle_deg = 45;
    tm_image *a45 = marked(in, &p);
    p.angle_deg = 90;
    tm_image *a90 = marked(in, &p);
    p.angle_deg = -180;
    tm_image *a180 = marked(in, &p);
    /* Level text leaves whole rows between its lines untouched; turned by
     * 45 degrees, every row crosses some text. Upright text leaves columns. */
    int rows0 = untouched_lines(in, a0, 1), rows45 = untouched_lines(in, a45, 1);
    int cols90 = untouched_lines(in, a90, 0), cols0 = untouched_lines(in, a0, 0);
    if (tm_test_verbose()) printf("\n  untouched rows: %d at 0, %d at 45; columns: %d at 0, %d at 90\n", rows0, rows45, cols0, cols90);
    CU_ASSERT(rows0 > H / 5);
    CU_ASSERT(rows45 < H / 20);
    CU_ASSERT(cols90 > W / 5);
    CU_ASSERT(cols0 < cols90 / 2);  /* level text leaves only slits between repeats */
    /* Different masks: a pixel changed under one angle mostly is not under the other. */
    size_t both = 0, either = 0, flip = 0;
    for (size_t i = 0; i < (size_t)W * H; i++) {
        int c0 = changed(in, a0, 0, i), c45 = changed(in, a45, 0, i);
        both += c0 && c45;
        either += c0 || c45;
        flip += a0->plane[0][i] != a180->plane[0][i];
    }
    CU_ASSERT(either > 0 && (double)both / either < 0.5);
    CU_ASSERT(flip > (size_t)W * H / 50);  /* upside down is another picture */
    tm_image_free(a0);
    tm_image_free(a45);
    tm_image_free(a90);
    tm_image_free(a180);
    tm_image_free(in);
}

/* The tallest run of consecutive rows with a change: one line of text. */
static int tallest_run(const tm_image *a, const tm_image *b)
{
    int best = 0, run = 0;
    for (int y = 0; y < a->height; y++) {
        int any = 0;
        for (int x = 0; x < a->width && !any; x++) any = changed(a, b, 0, (size_t)y * a->width + x);
        run = any ? run + 1 : 0;
        if (run > best) best = run;
    }
    return best;
}

static void test_size(void)
{
    tm_image *in = tm_test_flat(900, 600, 1, 128);
    tm_visible_params p = params(TEXT);
    p.angle_deg = 0;
    p.size = 0.04;
    tm_image *small = marked(in, &p);
    p.size = 0.08;
    tm_image *big = marked(in, &p);
    int hs = tallest_run(in, small), hb = tallest_run(in, big);
    if (tm_test_verbose()) printf("\n  line height %d px at 0.04, %d px at 0.08 of 600\n", hs, hb);
    /* An em of 24 px: the line with its outline is a little taller. */
    CU_ASSERT(hs >= 20 && hs <= 40);
    CU_ASSERT((double)hb / hs > 1.7 && (double)hb / hs < 2.3);
    tm_image_free(small);
    tm_image_free(big);
    /* The largest size and the longest text stay within the strip budget. */
    char longest[TM_VISIBLE_MAX_TEXT + 1];
    memset(longest, 'M', TM_VISIBLE_MAX_TEXT);
    longest[TM_VISIBLE_MAX_TEXT] = 0;
    p.text = longest;
    p.size = 1;
    p.angle_deg = 30;
    tm_image *huge = marked(in, &p);
    CU_ASSERT(changed_in(in, huge, 0, 0, 900, 600) > 0.05);
    tm_image_free(huge);
    tm_image_free(in);
}

/* ---- channels, determinism, odd images ---------------------------------------------- */

static void test_channels(void)
{
    tm_visible_params p = params(TEXT);
    tm_image *g = tm_test_flat(W, H, 1, 128);
    tm_image *gm = marked(g, &p);
    for (int ch = 2; ch <= 4; ch++) {
        tm_image *in = tm_test_flat(W, H, ch, 128);
        tm_image *out = marked(in, &p);
        int nc = ch == 2 || ch == 4 ? ch - 1 : ch;
        /* Each colour plane changes exactly as the gray image does. */
        for (int c = 0; c < nc; c++)
            CU_ASSERT_EQUAL(memcmp(out->plane[c], gm->plane[0], (size_t)W * H * sizeof(float)), 0);
        /* Alpha is kept. */
        if (nc < ch)
            CU_ASSERT_EQUAL(memcmp(out->plane[nc], in->plane[nc], (size_t)W * H * sizeof(float)), 0);
        tm_image_free(out);
        tm_image_free(in);
    }
    /* A coloured image: every channel changes at the same pixels. */
    tm_image *rgb = tm_test_flat(W, H, 3, 0);
    for (size_t i = 0; i < (size_t)W * H; i++) {
        rgb->plane[0][i] = 50;
        rgb->plane[1][i] = 128;
        rgb->plane[2][i] = 200;
    }
    tm_image *out = marked(rgb, &p);
    size_t n = 0, disagree = 0;
    for (size_t i = 0; i < (size_t)W * H; i++) {
        int r = out->plane[0][i] != rgb->plane[0][i], gg = out->plane[1][i] != rgb->plane[1][i],
            b = out->plane[2][i] != rgb->plane[2][i];
        n += r;
        disagree += r != gg || gg != b;
    }
    CU_ASSERT(n > (size_t)W * H / 50);
    CU_ASSERT_EQUAL(disagree, 0);
    tm_image_free(out);
    tm_image_free(rgb);
    tm_image_free(gm);
    tm_image_free(g);
}

static void test_deterministic(void)
{
    tm_image *in = tm_test_synthetic(W + 7, H + 3, 3, 11, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(in);
    tm_visible_params p = params("Confidential \xe2\x80\x94 r\xc3\xa9sum\xc3\xa9 #42");
    p.angle_deg = -17.5;
    p.opacity = 0.4;
    tm_image *a = marked(in, &p);
    tm_image *b = marked(in, &p);
    for (int c = 0; c < 3; c++)
        CU_ASSERT_EQUAL(memcmp(a->plane[c], b->plane[c], (size_t)(W + 7) * (H + 3) * sizeof(float)), 0);
    CU_ASSERT(tm_test_maxdiff(in, a) > 10);
    tm_image_free(a);
    tm_image_free(b);
    tm_image_free(in);
}

static void test_tiny_images(void)
{
    static const int sizes[][3] = {{1, 1, 1}, {1, 1, 4}, {2, 3, 3}, {1, 300, 1}, {300, 1, 3}, {7, 7, 2}, {16, 9, 3}};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        tm_image *img = tm_test_flat(sizes[k][0], sizes[k][1], sizes[k][2], 128);
        tm_visible_params p = params(TEXT);
        p.angle_deg = 45;
        apply(img, &p);
        p.size = 1;
        p.opacity = 1;
        apply(img, &p);
        for (int c = 0; c < img->channels; c++)
            for (size_t i = 0; i < (size_t)img->width * img->height; i++)
                CU_ASSERT(img->plane[c][i] >= 0 && img->plane[c][i] <= 255);
        tm_image_free(img);
    }
}

static void test_text(void)
{
    tm_image *in = tm_test_flat(W, H, 1, 128);
    /* Beyond Latin-1, and a character the font lacks (its box is drawn). */
    tm_visible_params p = params("F\xc3\xbcr Zo\xc3\xab \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac \xe2\x9c\x93 \xf0\x9f\x82\xa1");
    tm_image *out = marked(in, &p);
    CU_ASSERT(changed_in(in, out, 0, 0, W, H) > 0.01);
    tm_image_free(out);
    /* Spaces only: nothing to draw, nothing changed. */
    p.text = "   ";
    out = marked(in, &p);
    CU_ASSERT_EQUAL(tm_test_maxdiff(in, out), 0.0);
    tm_image_free(out);
    tm_image_free(in);
}

/* ---- errors --------------------------------------------------------------------------- */

/* p must be refused with TM_ERR_ARG and a message holding want, leaving
 * img untouched. */
static void refused(tm_image *img, const tm_visible_params *p, const char *want)
{
    tm_image *copy = clone(img);
    char err[256] = "";
    tm_status st = tm_visible_apply(img, p, err, sizeof err);
    if (st != TM_ERR_ARG || !strstr(err, want))
        fprintf(stderr, "text '%s': %s, '%s' (wanted '%s')\n", p->text ? p->text : "(null)", tm_strerror(st), err,
                want);
    CU_ASSERT_EQUAL(st, TM_ERR_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
    CU_ASSERT_EQUAL(tm_test_maxdiff(img, copy), 0.0);
    /* Without room for a message it still fails. */
    CU_ASSERT_EQUAL(tm_visible_apply(img, p, NULL, 0), TM_ERR_ARG);
    char tiny[5];
    CU_ASSERT_EQUAL(tm_visible_apply(img, p, tiny, sizeof tiny), TM_ERR_ARG);
    CU_ASSERT_EQUAL(strlen(tiny), sizeof tiny - 1);
    /* tm_visible_check says the same of all but the font, which it does not open */
    char cerr[256] = "";
    tm_status cst = tm_visible_check(p, cerr, sizeof cerr);
    if (p->font) {
        CU_ASSERT_EQUAL(cst, TM_OK);
    } else {
        CU_ASSERT(cst == st && !strcmp(cerr, err));
    }
    tm_image_free(copy);
}

static void test_errors(void)
{
    tm_image *img = tm_test_synthetic(64, 48, 3, 2, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(img);
    tm_visible_params p = params(NULL);
    refused(img, &p, "empty");
    p.text = "";
    refused(img, &p, "empty");
    char longer[TM_VISIBLE_MAX_TEXT + 2];
    memset(longer, 'a', TM_VISIBLE_MAX_TEXT + 1);
    longer[TM_VISIBLE_MAX_TEXT + 1] = 0;
    p.text = longer;
    refused(img, &p, "257 bytes");
    longer[TM_VISIBLE_MAX_TEXT] = 0;  /* exactly the limit is fine */
    apply(img, &p);

    static const struct {
        const char *text, *want;
    } texts[] = {
        {"ab\xff", "not valid UTF-8 (byte 3"},
        {"abc\xc3", "not valid UTF-8 (byte 4"},         /* truncated */
        {"\xc0\xaf", "not valid UTF-8"},                 /* overlong '/' */
        {"\xe0\x80\xaf", "not valid UTF-8"},             /* overlong, 3 bytes */
        {"\xed\xa0\x80", "not valid UTF-8"},             /* a surrogate */
        {"\xf4\x90\x80\x80", "not valid UTF-8"},         /* past U+10FFFF */
        {"\x80x", "not valid UTF-8 (byte 1"},            /* a stray continuation */
        {"\xe2\x80", "not valid UTF-8"},
        {"two\nlines", "control character (byte 4)"},
        {"tab\there", "control character"},
        {"\xc2\x85", "control character"},               /* NEL */
    };
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++) {
        p = params(texts[k].text);
        refused(img, &p, texts[k].want);
    }

    static const double opacities[] = {0, -0.1, 1.0001, 2, NAN, INFINITY};
    for (size_t k = 0; k < sizeof opacities / sizeof opacities[0]; k++) {
        p = params(TEXT);
        p.opacity = opacities[k];
        refused(img, &p, "opacity");
    }
    static const double angles[] = {180.5, -181, NAN, INFINITY};
    for (size_t k = 0; k < sizeof angles / sizeof angles[0]; k++) {
        p = params(TEXT);
        p.angle_deg = angles[k];
        refused(img, &p, "angle");
    }
    static const double sizes[] = {0, -0.05, 1.5, NAN};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        p = params(TEXT);
        p.size = sizes[k];
        refused(img, &p, "size");
    }
    /* The ends of the ranges are accepted. */
    p = params(TEXT);
    p.opacity = 1;
    p.angle_deg = -180;
    p.size = 1;
    apply(img, &p);
    p.angle_deg = 180;
    apply(img, &p);

    /* Fonts that do not load. */
    p = params(TEXT);
    p.font = "/nonexistent/dir/font.ttf";
    refused(img, &p, "cannot load the font /nonexistent/dir/font.ttf");
    p.font = "";
    refused(img, &p, "font");
    const char *junk = tm_test_path("junk.ttf");
    tm_test_spit(junk, "this is not a font file at all, only text\n", 42);
    p.font = junk;
    refused(img, &p, "cannot load the font");
    const char *empty = tm_test_path("empty.ttf");
    tm_test_spit(empty, "", 0);
    p.font = empty;
    refused(img, &p, "cannot load the font");
    p.font = tm_test_tmpdir();  /* a directory */
    refused(img, &p, "cannot load the font");

    /* Missing arguments. */
    p = params(TEXT);
    char err[128] = "";
    CU_ASSERT_EQUAL(tm_visible_apply(NULL, &p, err, sizeof err), TM_ERR_ARG);
    CU_ASSERT(strlen(err) > 0);
    CU_ASSERT_EQUAL(tm_visible_apply(img, NULL, err, sizeof err), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_visible_check(NULL, err, sizeof err), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_visible_check(&p, err, sizeof err), TM_OK);
    CU_ASSERT_STRING_EQUAL(err, "");
    tm_image bad = *img;
    bad.channels = 5;
    CU_ASSERT_EQUAL(tm_visible_apply(&bad, &p, err, sizeof err), TM_ERR_ARG);
    bad.channels = 3;
    bad.plane[1] = NULL;
    CU_ASSERT_EQUAL(tm_visible_apply(&bad, &p, err, sizeof err), TM_ERR_ARG);
    tm_image_free(img);
}

/* With TM_TEST_VERBOSE, the time on a corpus photo (not asserted). */
static void test_timing(void)
{
    if (!tm_test_verbose()) return;
    tm_image *img = NULL;
    if (tm_image_load(tm_test_corpus("lomiri_sunset_by_Aitzol_Berasategi.jpg"), NULL, &img, NULL) != TM_OK) return;
    tm_visible_params p = params(TEXT);
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        tm_image *c = clone(img);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        apply(c, &p);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        best = fmin(best, (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
        tm_image_free(c);
    }
    printf("\n  %dx%d: best of 5 %.1f ms\n", img->width, img->height, best);
    tm_image_free(img);
}

static CU_TestInfo tests[] = {
    {"defaults", test_defaults},
    {"font lookup", test_font_lookup},
    {"mid gray: how much, how far, where", test_mid_gray},
    {"reads on dark and light", test_reads_on_dark_and_light},
    {"linear in the opacity", test_opacity},
    {"angle", test_angle},
    {"size", test_size},
    {"channels and alpha", test_channels},
    {"deterministic", test_deterministic},
    {"tiny images", test_tiny_images},
    {"unicode and blank text", test_text},
    {"errors", test_errors},
    {"timing (TM_TEST_VERBOSE)", test_timing},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tm_test_main("visible", tests);
}
