/* original.c -- the unmarked original of informed trace, prepared once for
 * any number of suspects (docs/scheme.md section 11).
 *
 * Registration and the difference never need the original at full
 * resolution. The difference is read in the frame where the mark's tile is
 * TM_TILE pixels: the original's luminance averaged over f x f boxes, f its
 * tile scale. Registration's fine level is that frame at most
 * TM_REG_FINE_SIDE a side, softened; its coarse levels are made from the
 * fine one per suspect. So an original costs a quarter of its full-size
 * float luminance or less (a 12 MP photo: 12 MB for the frame, 11 MB for
 * the fine level), and a JPEG is read as stored, never as float planes.
 *
 * The levels here (tm_level) carry their map back to full-size pixels, so a
 * chain of box means and resamplings composes exactly. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheme.h"

void tm_level_free(tm_level *l)
{
    if (l->owned) tm_big_free(l->v);
    memset(l, 0, sizeof *l);
}

tm_level tm_level_view(const float *v, int w, int h)
{
    return (tm_level){.v = (float *)v, .w = w, .h = h, .kx = 1, .ky = 1};
}

/* Adds each b-sample run of row (n = w * b samples) into acc[0..w). */
static void box_add_u8(const uint8_t *restrict row, int w, int b, uint32_t *restrict acc)
{
    if (b == 2)
        for (int x = 0; x < w; x++) acc[x] += (uint32_t)row[2 * x] + row[2 * x + 1];
    else
        for (int x = 0; x < w; x++)
            for (int i = 0; i < b; i++) acc[x] += row[x * b + i];
}

static void box_add_f(const float *restrict row, int w, int b, float *restrict acc)
{
    if (b == 2)
        for (int x = 0; x < w; x++) acc[x] += row[2 * x] + row[2 * x + 1];
    else
        for (int x = 0; x < w; x++)
            for (int i = 0; i < b; i++) acc[x] += row[x * b + i];
}

tm_status tm_level_box(const tm_plane *p, int b, tm_level *out)
{
    memset(out, 0, sizeof *out);
    if (b < 1 || p->w < b || p->h < b) return TM_ERR_ARG;
    int w = p->w / b, h = p->h / b;
    /* 8-bit samples summed exactly in integers, floats in floats (a box of
     * at most TM_TILE_SCALE_MAX^2 = 16 of them, or a few dozen for a
     * registration level) */
    void *acc = malloc((p->u8 ? sizeof(uint32_t) : sizeof(float)) * (size_t)w);
    out->v = tm_big_alloc(sizeof(float) * (size_t)w * h);
    if (!acc || !out->v) {
        free(acc);
        tm_level_free(out);
        return TM_ERR_NOMEM;
    }
    out->owned = 1;
    out->w = w;
    out->h = h;
    out->kx = out->ky = b;
    out->ox = out->oy = 0.5 * (b - 1);
    const float norm = 1.0f / ((float)b * b);
    for (int y = 0; y < h; y++) {
        float *o = out->v + (size_t)y * w;
        if (p->u8) {
            uint32_t *a = acc;
            memset(a, 0, sizeof(uint32_t) * (size_t)w);
            for (int j = 0; j < b; j++) box_add_u8(p->u8 + (size_t)(y * b + j) * p->stride, w, b, a);
            for (int x = 0; x < w; x++) o[x] = (float)a[x] * norm;
        } else {
            float *a = acc;
            memset(a, 0, sizeof(float) * (size_t)w);
            for (int j = 0; j < b; j++) box_add_f(p->f + (size_t)(y * b + j) * p->stride, w, b, a);
            for (int x = 0; x < w; x++) o[x] = a[x] * norm;
        }
    }
    free(acc);
    return TM_OK;
}

tm_status tm_level_resize(const tm_level *in, int w, int h, tm_level *out)
{
    memset(out, 0, sizeof *out);
    if (w < 1 || h < 1 || !in->v) return TM_ERR_ARG;
    tm_level box = {0};
    const tm_level *src = in;
    tm_status st;
    int b = (int)floor(fmin((double)in->w / w, (double)in->h / h) + 1e-9);
    if (b >= 2) {
        tm_plane p = tm_plane_float(in->v, in->w, in->h);
        if ((st = tm_level_box(&p, b, &box)) != TM_OK) return st;
        /* the box's map composed with in's */
        box.ox = in->ox + in->kx * box.ox;
        box.oy = in->oy + in->ky * box.oy;
        box.kx *= in->kx;
        box.ky *= in->ky;
        src = &box;
        if (box.w == w && box.h == h) {
            *out = box;
            return TM_OK;
        }
    }
    if (src->w == w && src->h == h) { /* a copy, so out owns its pixels */
        out->v = tm_big_alloc(sizeof(float) * (size_t)w * h);
        if (!out->v) return TM_ERR_NOMEM;
        memcpy(out->v, src->v, sizeof(float) * (size_t)w * h);
        out->owned = 1;
        out->w = w, out->h = h;
        out->kx = src->kx, out->ky = src->ky, out->ox = src->ox, out->oy = src->oy;
        return TM_OK;
    }
    st = tm_level_resample(src, w, h, out);
    tm_level_free(&box);
    return st;
}

tm_status tm_level_resample(const tm_level *in, int w, int h, tm_level *out)
{
    memset(out, 0, sizeof *out);
    if (w < 1 || h < 1 || !in->v) return TM_ERR_ARG;
    tm_image view = {.width = in->w, .height = in->h, .channels = 1};
    view.plane[0] = in->v;
    tm_image *r = NULL;
    tm_status st = tm_resample(&view, w, h, &r);
    if (st != TM_OK) return st;
    /* resampled pixel x is source pixel (x + 0.5) k - 0.5, k = source / new */
    double kx = (double)in->w / w, ky = (double)in->h / h;
    out->v = r->plane[0];
    r->plane[0] = NULL;
    tm_image_free(r);
    out->owned = 1;
    out->w = w, out->h = h;
    out->ox = in->ox + in->kx * (0.5 * kx - 0.5);
    out->oy = in->oy + in->ky * (0.5 * ky - 0.5);
    out->kx = in->kx * kx;
    out->ky = in->ky * ky;
    return TM_OK;
}

tm_status tm_level_fit(const tm_level *in, int side, tm_level *out)
{
    int lo = in->w > in->h ? in->w : in->h;
    if (lo <= side + side / 10) return tm_level_resize(in, in->w, in->h, out); /* a copy */
    double k = (double)lo / side;
    int w = (int)fmax(1, lround(in->w / k)), h = (int)fmax(1, lround(in->h / k));
    return tm_level_resize(in, w, h, out);
}

/* Row r of l smoothed along itself into out. */
static void soften_row(const tm_level *l, int r, float *restrict out)
{
    const float *restrict v = l->v + (size_t)r * l->w;
    int w = l->w;
    for (int x = 0; x < w; x++) out[x] = 0.25f * (v[x > 0 ? x - 1 : 0] + 2 * v[x] + v[x < w - 1 ? x + 1 : w - 1]);
}

tm_status tm_level_soften(tm_level *l)
{
    int w = l->w, h = l->h;
    /* three rows smoothed along themselves: the one above, this one, the
     * one below; each row is written once its neighbours are taken */
    float *buf = malloc(sizeof(float) * 3 * (size_t)w);
    if (!buf) return TM_ERR_NOMEM;
    float *up = buf, *mid = buf + w, *down = buf + 2 * (size_t)w;
    soften_row(l, 0, mid);
    memcpy(up, mid, sizeof(float) * (size_t)w);
    for (int y = 0; y < h; y++) {
        if (y + 1 < h) soften_row(l, y + 1, down);
        else memcpy(down, mid, sizeof(float) * (size_t)w);
        float *o = l->v + (size_t)y * w;
        for (int x = 0; x < w; x++) o[x] = 0.25f * (up[x] + 2 * mid[x] + down[x]);
        float *t = up;
        up = mid, mid = down, down = t;
    }
    free(buf);
    return TM_OK;
}

void tm_level_to_full(const tm_level *l, double m[6])
{
    m[0] = l->ox, m[1] = l->kx, m[2] = 0;
    m[3] = l->oy, m[4] = 0, m[5] = l->ky;
}

/* ---- the original ---- */

/* The original from its luminance y (width x height): the frame, the fine
 * level, the perceptual hash. */
static tm_status original_from_plane(const tm_plane *y, tm_original **out)
{
    *out = NULL;
    if (y->w < 8 || y->h < 8) return TM_ERR_DIMENSIONS;
    tm_original *o = calloc(1, sizeof *o);
    if (!o) return TM_ERR_NOMEM;
    o->width = y->w;
    o->height = y->h;
    o->tile_scale = tm_mark_tile_scale(y->w, y->h);
    tm_status st = tm_level_box(y, o->tile_scale, &o->frame);
    if (st == TM_OK) st = tm_level_fit(&o->frame, TM_REG_FINE_SIDE, &o->fine);
    if (st == TM_OK) st = tm_level_soften(&o->fine);
    if (st == TM_OK) {
        tm_plane fp = tm_plane_float(o->frame.v, o->frame.w, o->frame.h);
        st = tm_phash_luma(&fp, &o->phash);
    }
    if (st != TM_OK) {
        tm_original_free(o);
        return st;
    }
    *out = o;
    return TM_OK;
}

tm_status tm_original_create(const tm_image *img, tm_original **out)
{
    if (!img || !out) return TM_ERR_ARG;
    *out = NULL;
    if (tm_color_channels(img) < 3) {
        tm_plane p = tm_plane_float(img->plane[0], img->width, img->height);
        return original_from_plane(&p, out);
    }
    float *y = tm_big_alloc(sizeof(float) * (size_t)img->width * img->height);
    if (!y) return TM_ERR_NOMEM;
    tm_luma(img, y);
    tm_plane p = tm_plane_float(y, img->width, img->height);
    tm_status st = original_from_plane(&p, out);
    tm_big_free(y);
    return st;
}

tm_status tm_original_load(const char *path, const tm_load_options *lo, tm_original **out, char *image_id)
{
    if (!path || !out) return TM_ERR_ARG;
    *out = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    tm_status st = tm_image_file_read(path, &data, &len);
    if (st != TM_OK) return st;
    /* decoded as tm_embedder_load decodes an original, so the image id is
     * the one mark recorded */
    tm_load_options opts;
    if (lo) opts = *lo;
    else tm_load_options_init(&opts);
    opts.luma_only = 0;
    tm_image *img = NULL;
    tm_jpeg_planes *planes = NULL;
    uint8_t sha[32];
    st = tm_image_decode_planes(data, len, &opts, &img, &planes, NULL);
    free(data);
    if (st != TM_OK) return st;
    if (planes) {
        st = tm_planes_content_hash(planes, sha);
        tm_plane y = {.u8 = planes->plane[0], .stride = planes->stride[0], .w = planes->width, .h = planes->height};
        if (st == TM_OK) st = original_from_plane(&y, out);
    } else {
        st = tm_image_content_hash(img, sha);
        if (st == TM_OK) st = tm_original_create(img, out);
    }
    if (st == TM_OK && image_id) tm_image_id_hex(sha, image_id);
    tm_jpeg_planes_free(planes);
    tm_image_free(img);
    return st;
}

void tm_original_free(tm_original *o)
{
    if (!o) return;
    tm_level_free(&o->frame);
    tm_level_free(&o->fine);
    free(o);
}

void tm_original_size(const tm_original *o, int *width, int *height)
{
    *width = o->width;
    *height = o->height;
}
