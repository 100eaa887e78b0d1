/* visible.c -- the visible watermark: one line of text tiled over the image.
 *
 * FreeType draws the text once, unturned, into two 8-bit coverage strips:
 * the letters (F) and the letters grown by a thin stroke (O, FT_Stroker's
 * outside border, so O >= F). Each image pixel is then mapped into the
 * text's frame (turned by the angle, rows staggered by half a period),
 * wrapped onto one tile and read from the strips bilinearly: one lookup per
 * pixel whatever the angle, the text rasterised once per call. Letters are
 * white over a black outline, laid over the image at the opacity a:
 *   out = in * (1 - a O) + a * 255 F
 * so no sample moves by more than a * 255 and the text reads on dark
 * pictures (the letters) and light ones (the outline) alike.
 *
 * The font is the caller's file, else the build's default (--with-font),
 * else fontconfig's match for DEFAULT_PATTERN. FreeType's library object
 * and fontconfig's configuration are made and destroyed inside the call:
 * no state outlives it (docs/visible.md). */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fontconfig/fontconfig.h>
#include <ft2build.h>
#include FT_FREETYPE_H
#include FT_ADVANCES_H
#include FT_GLYPH_H
#include FT_STROKER_H

#include "internal.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

#define DEFAULT_PATTERN "DejaVu Sans,sans-serif:bold"
#define MAX_STRIP_EM 512.0        /* larger text is rasterised at this em and magnified */
#define STRIP_BUDGET 8000000.0    /* pixels of one strip, so absurd sizes stay cheap */
#define OUTLINE_EM 0.04           /* outline width, in ems (at least one pixel) */
#define ROW_PITCH 2.5             /* line heights from one row of text to the next */

/* FreeType's error messages (its FT_Error_String is compiled out on Debian). */
#undef FTERRORS_H_
#define FT_ERRORDEF(e, v, s) {(e), (s)},
#define FT_ERROR_START_LIST {
#define FT_ERROR_END_LIST {0, NULL}};
static const struct {
    int code;
    const char *msg;
} ft_errors[] =
#include FT_ERRORS_H

static const char *ft_message(FT_Error e)
{
    for (size_t i = 0; ft_errors[i].msg; i++)
        if (ft_errors[i].code == e) return ft_errors[i].msg;
    return "unknown FreeType error";
}

void tm_visible_params_init(tm_visible_params *p)
{
    memset(p, 0, sizeof *p);
    p->opacity = 0.25;
    p->angle_deg = 30.0;
    p->size = 0.05;
}

/* ---- the font ------------------------------------------------------------- */

static tm_status copy_path(const char *src, char *path, size_t cap, char *err, size_t errlen)
{
    size_t n = strlen(src);
    if (!path || n >= cap) return tm_fail(TM_ERR_ARG, err, errlen, "the font path %s is too long", src);
    memcpy(path, src, n + 1);
    return TM_OK;
}

#ifndef TM_DEFAULT_FONT
/* fontconfig's best scalable match for DEFAULT_PATTERN, under a
 * configuration of our own (not fontconfig's process-wide default). */
static tm_status fontconfig_match(char *path, size_t cap, int *index, char *err, size_t errlen)
{
    tm_status st = TM_OK;
    FcPattern *pat = NULL, *match = NULL;
    FcChar8 *file = NULL;
    FcResult res = FcResultNoMatch;
    FcConfig *cfg = FcInitLoadConfigAndFonts();
    if (!cfg) {
        st = tm_fail(TM_ERR_INTERNAL, err, errlen, "fontconfig could not load its configuration");
        goto out;
    }
    pat = FcNameParse((const FcChar8 *)DEFAULT_PATTERN);
    if (!pat || !FcPatternAddBool(pat, FC_SCALABLE, FcTrue) || !FcConfigSubstitute(cfg, pat, FcMatchPattern)) {
        st = TM_ERR_NOMEM;
        goto out;
    }
    FcDefaultSubstitute(pat);
    match = FcFontMatch(cfg, pat, &res);
    if (!match || FcPatternGetString(match, FC_FILE, 0, &file) != FcResultMatch || !file || !*file) {
        st = tm_fail(TM_ERR_NOT_FOUND, err, errlen,
                  "fontconfig found no font for \"%s\": install fonts-dejavu-core or name a font file",
                  DEFAULT_PATTERN);
        goto out;
    }
    if (FcPatternGetInteger(match, FC_INDEX, 0, index) != FcResultMatch) *index = 0;
    st = copy_path((const char *)file, path, cap, err, errlen);
out:
    if (match) FcPatternDestroy(match);
    if (pat) FcPatternDestroy(pat);
    if (cfg) FcConfigDestroy(cfg);
    return st;
}
#endif

/* The font file (and face index in it) for font, as tm_visible_font says. */
static tm_status find_font(const char *font, char *path, size_t cap, int *index, char *err, size_t errlen)
{
    *index = 0;
    if (font) {
        if (!*font) return tm_fail(TM_ERR_ARG, err, errlen, "the font file name is empty");
        return copy_path(font, path, cap, err, errlen);
    }
#ifdef TM_DEFAULT_FONT
    return copy_path(TM_DEFAULT_FONT, path, cap, err, errlen);
#else
    return fontconfig_match(path, cap, index, err, errlen);
#endif
}

tm_status tm_visible_font(const char *font, char *path, size_t cap, char *err, size_t errlen)
{
    if (err && errlen) err[0] = 0;
    if (!path || !cap) return tm_fail(TM_ERR_ARG, err, errlen, "no room for the font path");
    path[0] = 0;
    int index;
    return find_font(font, path, cap, &index, err, errlen);
}

/* ---- the text ------------------------------------------------------------- */

/* Decodes strict UTF-8 (no overlong forms, surrogates or code points past
 * U+10FFFF) into cp (room for strlen(s)); the count, or with the offset of
 * the first bad byte in *bad -1 for bad UTF-8, -2 for a control character
 * (the text is one line). */
static int utf8_decode(const char *s, uint32_t *cp, size_t *bad)
{
    const unsigned char *u = (const unsigned char *)s;
    int n = 0;
    size_t i = 0;
    while (u[i]) {
        uint32_t c = u[i];
        int len = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
        if (!len) goto bad;
        if (len > 1) c &= 0x3fu >> (len - 1);
        for (int k = 1; k < len; k++) {
            if ((u[i + k] & 0xc0) != 0x80) goto bad;  /* also stops at the terminator */
            c = c << 6 | (u[i + k] & 0x3fu);
        }
        if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10ffff)) || (c >= 0xd800 && c <= 0xdfff))
            goto bad;
        if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) {
            *bad = i;
            return -2;
        }
        cp[n++] = c;
        i += (size_t)len;
    }
    return n;
bad:
    *bad = i;
    return -1;
}

/* The text drawn once, unturned: two coverage masks of w x h, interleaved
 * so that a bilinear read of both touches one pair of neighbours per row. */
enum { FILL = 0, LINE = 1 };  /* the letters; the letters and their outline */
typedef struct strip {
    int w, h;
    uint8_t *cov;      /* cov[2 * (y * w + x) + FILL or LINE] */
    double scale;      /* strip pixels per image pixel */
    double em;         /* the em, strip pixels */
    double text_w;     /* the text's advance width, strip pixels */
    double line_h;     /* ascender to descender, strip pixels */
} strip;

/* Lays bm (8-bit gray) into layer (FILL, LINE) of s with its top-left
 * pixel at (x0, y0), keeping the larger coverage where glyphs meet; clipped
 * to the strip. */
static void blit(strip *s, int layer, const FT_Bitmap *bm, int x0, int y0)
{
    int w = s->w, h = s->h;
    if (bm->pixel_mode != FT_PIXEL_MODE_GRAY || !bm->buffer) return;
    int rows = (int)bm->rows, cols = (int)bm->width;
    size_t step = (size_t)(bm->pitch < 0 ? -bm->pitch : bm->pitch);
    for (int r = 0; r < rows; r++) {
        int y = y0 + r;
        if (y < 0 || y >= h) continue;
        /* FreeType's buffer starts at the lowest address: the top row when
         * the pitch is positive, the bottom one when it is negative. */
        const uint8_t *src = bm->buffer + (size_t)(bm->pitch < 0 ? rows - 1 - r : r) * step;
        uint8_t *dst = s->cov + 2 * (size_t)y * (size_t)w + (size_t)layer;
        for (int c = 0; c < cols; c++) {
            int x = x0 + c;
            if (x >= 0 && x < w && src[c] > dst[2 * x]) dst[2 * x] = src[c];
        }
    }
}

/* The kerned pen advance from prev to glyph gi, 26.6 pixels (0 without a
 * kerning table). */
static FT_Pos kern(FT_Face face, FT_UInt prev, FT_UInt gi)
{
    FT_Vector d = {0, 0};
    if (!prev || !gi || !FT_HAS_KERNING(face)) return 0;
    if (FT_Get_Kerning(face, prev, gi, FT_KERNING_UNFITTED, &d)) return 0;
    return d.x;
}

/* Rasterises the n code points cp in the face at an em of em image pixels
 * (or smaller, within the strip budget, then s->scale < 1) into s. */
static tm_status draw_text(FT_Library lib, FT_Face face, const char *path, const uint32_t *cp, int n, double em,
                           strip *s, char *err, size_t errlen)
{
    tm_status st = TM_OK;
    FT_Stroker stroker = NULL;
    FT_Error fe;

    /* The strip's em: the image's, unless the strip would pass the budget. */
    FT_Fixed units = 0;
    for (int i = 0; i < n; i++) {
        FT_Fixed adv = 0;
        if (!FT_Get_Advance(face, FT_Get_Char_Index(face, cp[i]), FT_LOAD_NO_SCALE, &adv)) units += adv;
    }
    double width_em = (double)units / face->units_per_EM + 1.0;  /* + margins */
    double em_s = fmin(em, MAX_STRIP_EM);
    if (width_em * 2.0 * em_s * em_s > STRIP_BUDGET) em_s = sqrt(STRIP_BUDGET / (width_em * 2.0));
    em_s = fmax(em_s, 1.0);
    s->em = em_s;
    s->scale = em_s / em;
    if ((fe = FT_Set_Char_Size(face, 0, (FT_F26Dot6)lround(em_s * 64), 72, 72)))
        return tm_fail(TM_ERR_ARG, err, errlen, "cannot load the font %s: %s", path, ft_message(fe));

    /* Pass 1: the pen's travel. Unhinted, so the layout scales linearly. */
    FT_Pos pen = 0;
    FT_UInt prev = 0;
    for (int i = 0; i < n; i++) {
        FT_UInt gi = FT_Get_Char_Index(face, cp[i]);
        pen += kern(face, prev, gi);
        if ((fe = FT_Load_Glyph(face, gi, FT_LOAD_NO_HINTING | FT_LOAD_NO_BITMAP)))
            return tm_fail(TM_ERR_ARG, err, errlen, "cannot load the font %s: %s", path, ft_message(fe));
        pen += face->glyph->advance.x;
        prev = gi;
    }
    if (pen < 0) pen = 0;
    double radius = fmax(1.0, OUTLINE_EM * em_s);
    int margin = (int)ceil(radius + 0.25 * em_s) + 2;
    int asc = (int)ceil(face->size->metrics.ascender / 64.0);
    int desc = (int)ceil(-face->size->metrics.descender / 64.0);
    if (asc < 1) asc = (int)ceil(em_s);
    if (desc < 0) desc = 0;
    s->text_w = pen / 64.0;
    s->line_h = asc + desc;
    s->w = (int)ceil(s->text_w) + 2 * margin;
    s->h = asc + desc + 2 * margin;
    size_t npix = (size_t)s->w * (size_t)s->h;
    s->cov = calloc(npix, 2);
    if (!s->cov) return TM_ERR_NOMEM;

    if ((fe = FT_Stroker_New(lib, &stroker)))
        return fe == FT_Err_Out_Of_Memory ? TM_ERR_NOMEM : tm_fail(TM_ERR_INTERNAL, err, errlen, "FreeType: %s", ft_message(fe));
    FT_Stroker_Set(stroker, (FT_Fixed)lround(radius * 64), FT_STROKER_LINECAP_ROUND, FT_STROKER_LINEJOIN_ROUND, 0);

    /* Pass 2: each glyph at its subpixel pen position (FT_Set_Transform's
     * shift), the letter into fill and line, its stroked border into line. */
    int base = margin + asc;
    pen = 0;
    prev = 0;
    for (int i = 0; i < n; i++) {
        FT_UInt gi = FT_Get_Char_Index(face, cp[i]);
        pen += kern(face, prev, gi);
        prev = gi;
        FT_Pos x64 = (FT_Pos)margin * 64 + pen;
        FT_Vector shift = {x64 & 63, 0};
        int ix = (int)(x64 >> 6);
        FT_Set_Transform(face, NULL, &shift);
        if ((fe = FT_Load_Glyph(face, gi, FT_LOAD_NO_HINTING | FT_LOAD_NO_BITMAP))) goto ft_fail;
        FT_GlyphSlot slot = face->glyph;
        pen += slot->advance.x;
        if (slot->format != FT_GLYPH_FORMAT_OUTLINE) {
            st = tm_fail(TM_ERR_ARG, err, errlen, "cannot load the font %s: it has no outlines", path);
            goto out;
        }
        if (slot->outline.n_contours <= 0) continue;  /* a space */
        FT_Glyph g = NULL;
        if ((fe = FT_Get_Glyph(slot, &g))) goto ft_fail;
        if ((fe = FT_Glyph_StrokeBorder(&g, stroker, 0, 1)) ||
            (fe = FT_Glyph_To_Bitmap(&g, FT_RENDER_MODE_NORMAL, NULL, 1))) {
            FT_Done_Glyph(g);
            goto ft_fail;
        }
        FT_BitmapGlyph bg = (FT_BitmapGlyph)g;
        blit(s, LINE, &bg->bitmap, ix + bg->left, base - bg->top);
        FT_Done_Glyph(g);
        if ((fe = FT_Render_Glyph(slot, FT_RENDER_MODE_NORMAL))) goto ft_fail;
        blit(s, FILL, &slot->bitmap, ix + slot->bitmap_left, base - slot->bitmap_top);
        blit(s, LINE, &slot->bitmap, ix + slot->bitmap_left, base - slot->bitmap_top);
    }
    goto out;
ft_fail:
    st = fe == FT_Err_Out_Of_Memory ? TM_ERR_NOMEM
                                    : tm_fail(TM_ERR_ARG, err, errlen, "cannot draw with the font %s: %s", path, ft_message(fe));
out:
    FT_Set_Transform(face, NULL, NULL);
    FT_Stroker_Done(stroker);
    return st;
}

/* Opens the font and draws the text into s (freed by the caller). */
static tm_status render(const char *path, int index, const uint32_t *cp, int n, double em, strip *s, char *err,
                        size_t errlen)
{
    FT_Library lib = NULL;
    FT_Face face = NULL;
    tm_status st;
    /* FreeType says only "cannot open resource"; the system says why. */
    FILE *f = fopen(path, "rb");
    if (!f) return tm_fail(TM_ERR_ARG, err, errlen, "cannot load the font %s: %s", path, strerror(errno));
    fclose(f);
    FT_Error fe = FT_Init_FreeType(&lib);
    if (fe) return fe == FT_Err_Out_Of_Memory ? TM_ERR_NOMEM : tm_fail(TM_ERR_INTERNAL, err, errlen, "FreeType: %s", ft_message(fe));
    if ((fe = FT_New_Face(lib, path, index, &face))) {
        st = fe == FT_Err_Out_Of_Memory ? TM_ERR_NOMEM
                                        : tm_fail(TM_ERR_ARG, err, errlen, "cannot load the font %s: %s", path, ft_message(fe));
        goto out;
    }
    if (!FT_IS_SCALABLE(face) || face->units_per_EM == 0) {
        st = tm_fail(TM_ERR_ARG, err, errlen, "cannot load the font %s: not a scalable (outline) font", path);
        goto out;
    }
    st = draw_text(lib, face, path, cp, n, em, s, err, errlen);
out:
    if (face) FT_Done_Face(face);
    FT_Done_FreeType(lib);
    return st;
}

/* ---- the tiling ----------------------------------------------------------- */

/* Coverage 0..255 of layer of s at (x, y); 0 outside. */
static inline float texel(const strip *s, int layer, int x, int y)
{
    return x >= 0 && y >= 0 && x < s->w && y < s->h ? s->cov[2 * ((size_t)y * (size_t)s->w + (size_t)x) + (size_t)layer]
                                                    : 0.0f;
}

/* The tiling: where image pixel (x, y) falls in the text's frame, in strip
 * pixels, u along the text and v across it, and which tile holds it. */
typedef struct tiling {
    double cu, su;          /* one image pixel's step, turned */
    double pu, pv;          /* the tile's period along u and v */
    double inv_pu, inv_pv;
    double cx, cy;          /* the image centre */
} tiling;

/* The x range [*xa, *xb) of image pixels (clamped to 0..width) whose
 * coordinate t0 + dx * dt (dx = x + 0.5 - cx) lies in [lo, hi), widened by
 * a pixel each side: the per-pixel test decides, so only the widening has
 * to be right. */
static void span(double t0, double dt, double lo, double hi, double cx, int width, int *xa, int *xb)
{
    if (dt == 0.0) {  /* the whole row or none of it */
        *xa = 0;
        *xb = t0 >= lo - 1.0 && t0 < hi + 1.0 ? width : 0;
        return;
    }
    double d1 = (lo - t0) / dt, d2 = (hi - t0) / dt;
    /* Clamped both ways before the conversion: a nearly level dt puts the
     * ends far outside int. */
    double a = fmin(fmax(fmin(d1, d2) + cx - 0.5 - 1.0, 0.0), width);
    double b = fmin(fmax(fmax(d1, d2) + cx - 0.5 + 2.0, 0.0), width);
    *xa = (int)floor(a);
    *xb = b > *xa ? (int)ceil(b) : *xa;
}

/* Blends pixels xa..xb-1 of image row y (index row) that lie in tile (r, c)
 * of the strip s. */
static void blend_run(tm_image *img, const strip *s, const tiling *t, float fa, int y, size_t row, double r, double c,
                      int xa, int xb)
{
    int nc = tm_color_channels(img);
    double dy = y + 0.5 - t->cy;
    double u0 = -dy * t->su + s->w / 2.0 - r * 0.5 * t->pu, v0 = dy * t->cu + s->h / 2.0;
    for (int x = xa; x < xb; x++) {
        double dx = x + 0.5 - t->cx;
        double v = v0 + dx * t->su;
        if (floor(v * t->inv_pv) != r) continue;
        double fv = v - r * t->pv;
        if (fv >= s->h) continue;
        double u = u0 + dx * t->cu;
        if (floor(u * t->inv_pu) != c) continue;
        double fu = u - c * t->pu;
        if (fu >= s->w) continue;
        double sx = fu - 0.5, sy = fv - 0.5;
        int x0 = (int)floor(sx), y0 = (int)floor(sy);
        float ax = (float)(sx - x0), ay = (float)(sy - y0);
        float w00 = (1 - ax) * (1 - ay), w10 = ax * (1 - ay), w01 = (1 - ax) * ay, w11 = ax * ay;
        float o, f;
        if (x0 >= 0 && y0 >= 0 && x0 + 1 < s->w && y0 + 1 < s->h) {
            const uint8_t *q = s->cov + 2 * ((size_t)y0 * (size_t)s->w + (size_t)x0), *q1 = q + 2 * (size_t)s->w;
            o = w00 * q[LINE] + w10 * q[2 + LINE] + w01 * q1[LINE] + w11 * q1[2 + LINE];
            f = w00 * q[FILL] + w10 * q[2 + FILL] + w01 * q1[FILL] + w11 * q1[2 + FILL];
        } else {  /* at the strip's edge */
            o = w00 * texel(s, LINE, x0, y0) + w10 * texel(s, LINE, x0 + 1, y0) + w01 * texel(s, LINE, x0, y0 + 1) +
                w11 * texel(s, LINE, x0 + 1, y0 + 1);
            f = w00 * texel(s, FILL, x0, y0) + w10 * texel(s, FILL, x0 + 1, y0) + w01 * texel(s, FILL, x0, y0 + 1) +
                w11 * texel(s, FILL, x0 + 1, y0 + 1);
        }
        if (!(o > 0.0f)) continue;
        float keep = 1.0f - fa * (o * (1.0f / 255.0f));
        float add = fa * f; /* a * 255 * (f / 255) */
        for (int ch = 0; ch < nc; ch++) {
            float *p = img->plane[ch] + row + (size_t)x;
            *p = *p * keep + add;
        }
    }
}

/* Lays s over img at opacity a, turned by angle_deg: rows of text ROW_PITCH
 * line heights apart, repeats a text width plus an em apart along a row,
 * each row shifted by half a repeat, a strip centred on the image centre.
 * Each image row visits only the runs of pixels that can fall on a strip
 * (tile row r, tile column c), so the empty part of the tiles costs nothing. */
static void composite(tm_image *img, const strip *s, double a, double angle_deg)
{
    double th = angle_deg * M_PI / 180.0;
    tiling t;
    t.cu = cos(th) * s->scale;
    t.su = sin(th) * s->scale;
    t.pu = fmax(2.0 * s->text_w + s->em, s->w);
    t.pv = fmax(ROW_PITCH * s->line_h, s->h);
    t.inv_pu = 1.0 / t.pu;
    t.inv_pv = 1.0 / t.pv;
    t.cx = img->width / 2.0;
    t.cy = img->height / 2.0;
    double ex = img->width / 2.0;  /* dx runs over [-ex, ex] */
    for (int y = 0; y < img->height; y++) {
        double dy = y + 0.5 - t.cy;
        size_t row = (size_t)y * (size_t)img->width;
        double v0 = dy * t.cu + s->h / 2.0;
        double vlo = v0 - ex * fabs(t.su), vhi = v0 + ex * fabs(t.su);
        for (double r = floor(vlo * t.inv_pv) - 1; r <= floor(vhi * t.inv_pv) + 1; r++) {
            int xa, xb;
            span(v0, t.su, r * t.pv, r * t.pv + s->h, t.cx, img->width, &xa, &xb);
            if (xa >= xb) continue;
            double u0 = -dy * t.su + s->w / 2.0 - r * 0.5 * t.pu;
            double ua = u0 + (xa + 0.5 - t.cx) * t.cu, ub = u0 + (xb - 0.5 - t.cx) * t.cu;
            double clo = floor(fmin(ua, ub) * t.inv_pu) - 1, chi = floor(fmax(ua, ub) * t.inv_pu) + 1;
            for (double c = clo; c <= chi; c++) {
                int ya, yb;
                span(u0, t.cu, c * t.pu, c * t.pu + s->w, t.cx, img->width, &ya, &yb);
                if (ya < xa) ya = xa;
                if (yb > xb) yb = xb;
                if (ya < yb) blend_run(img, s, &t, (float)a, y, row, r, c, ya, yb);
            }
        }
    }
}

/* ---- the call ------------------------------------------------------------- */

/* The checks of tm_visible_check, with the text decoded into cp (*n code
 * points). */
static tm_status check_params(const tm_visible_params *p, uint32_t *cp, int *n, char *err, size_t errlen)
{
    if (err && errlen) err[0] = 0;
    if (!p) return tm_fail(TM_ERR_ARG, err, errlen, "no parameters");
    if (!p->text || !p->text[0]) return tm_fail(TM_ERR_ARG, err, errlen, "the visible text is empty");
    size_t len = strlen(p->text);
    if (len > TM_VISIBLE_MAX_TEXT)
        return tm_fail(TM_ERR_ARG, err, errlen, "the visible text is %zu bytes long, more than %d", len,
                    TM_VISIBLE_MAX_TEXT);
    if (!(p->opacity > 0.0 && p->opacity <= 1.0))
        return tm_fail(TM_ERR_ARG, err, errlen, "visible opacity %g is not in (0, 1]", p->opacity);
    if (!(p->angle_deg >= -180.0 && p->angle_deg <= 180.0))
        return tm_fail(TM_ERR_ARG, err, errlen, "visible angle %g is not in [-180, 180] degrees", p->angle_deg);
    if (!(p->size > 0.0 && p->size <= 1.0))
        return tm_fail(TM_ERR_ARG, err, errlen, "visible text size %g is not in (0, 1] of the shorter side", p->size);
    size_t bad = 0;
    *n = utf8_decode(p->text, cp, &bad);
    if (*n == -2)
        return tm_fail(TM_ERR_ARG, err, errlen, "the visible text holds a control character (byte %zu)", bad + 1);
    if (*n < 0)
        return tm_fail(TM_ERR_ARG, err, errlen, "the visible text is not valid UTF-8 (byte %zu, 0x%02x)", bad + 1,
                    (unsigned)(unsigned char)p->text[bad]);
    return TM_OK;
}

tm_status tm_visible_check(const tm_visible_params *p, char *err, size_t errlen)
{
    uint32_t cp[TM_VISIBLE_MAX_TEXT];
    int n;
    return check_params(p, cp, &n, err, errlen);
}

tm_status tm_visible_apply(tm_image *img, const tm_visible_params *p, char *err, size_t errlen)
{
    if (err && errlen) err[0] = 0;
    if (!img) return tm_fail(TM_ERR_ARG, err, errlen, "no image");
    if (img->width <= 0 || img->height <= 0 || img->channels < 1 || img->channels > 4)
        return tm_fail(TM_ERR_ARG, err, errlen, "not an image: %dx%d with %d channels", img->width, img->height,
                    img->channels);
    for (int c = 0; c < img->channels; c++)
        if (!img->plane[c]) return tm_fail(TM_ERR_ARG, err, errlen, "image plane %d is missing", c);
    uint32_t cp[TM_VISIBLE_MAX_TEXT];
    int n;
    tm_status st = check_params(p, cp, &n, err, errlen);
    if (st != TM_OK) return st;

    char path[4096];
    int index = 0;
    st = find_font(p->font, path, sizeof path, &index, err, errlen);
    if (st != TM_OK) return st;
    int shorter = img->width < img->height ? img->width : img->height;
    double em = fmax(1.0, p->size * shorter);
    strip s = {0};
    st = render(path, index, cp, n, em, &s, err, errlen);
    if (st == TM_OK) composite(img, &s, p->opacity, p->angle_deg);
    free(s.cov);
    return st;
}
