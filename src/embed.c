/* embed.c -- the marking half: analyse an original once, then make one
 * marked copy per recipient cheaply.
 *
 * tm_embedder_create does everything that depends only on the original: the
 * content hash and image id, the luminance plane, the perceptual mask and the
 * global strength, folded into one per-pixel gain, and the perceptual hash.
 * tm_embedder_mark then only synthesises the recipient's tile (one small
 * inverse FFT) and adds gain * tile to R, G and B alike, which changes
 * luminance by exactly that and leaves the chroma untouched (docs/scheme.md
 * section 5).
 *
 * tm_embedder_create_data reads a JPEG original as stored (tm_jpeg_planes)
 * when it can, and tm_embedder_mark_encode then writes each JPEG copy by
 * adding gain * tile to the stored luminance and encoding the stored chroma
 * as it is: the same change to the same luminance, at the cost of little
 * more than the entropy coding. Any other copy comes from the float planes,
 * decoded on first need. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <pthread.h>

#include "scheme.h"

/* What making one copy writes: the recipient's tile (float, and in 8.8
 * fixed point for the JPEG path), its FFT workspace, and a JPEG copy's
 * luminance. */
typedef struct copy_ws {
    tm_tile_fft *fft;
    float *tile;              /* alpha * the recipient's tile */
    int16_t *tile16;          /* alpha * tile * TM_GAIN_ONE, rounded: the JPEG copies' */
    uint8_t *luma8;           /* a JPEG copy's luminance in the planes' layout, or NULL */
    struct copy_ws *next;
} copy_ws;

static void ws_free(copy_ws *w);

struct tm_embedder {
    const tm_key *key;
    const tm_image *orig;     /* the original as float planes: borrowed, or owned */
    tm_image *owned;          /* decoded here (from data, or lazily from src) */
    tm_jpeg_planes *planes;   /* a JPEG original as stored (tm_embedder_create_data) */
    tm_subsampling planes_ss; /* their subsampling */
    uint8_t *src;             /* the encoded original, for a float decode on demand */
    size_t src_len;
    tm_load_options lo;
    int width, height;
    uint16_t *gain;           /* per pixel: the perceptual mask, times TM_GAIN_ONE */
    tm_mark_params params;    /* as asked, or the defaults */
    float alpha;              /* the global strength: a copy adds alpha * gain * tile */
    tm_layout *layout;
    int side;                 /* the tile's: TM_TILE * tm_mark_tile_scale */
    /* Copy workspaces not in use, so copies can be made from several threads
     * at once; the decode of the float original on first need is made under
     * the same lock. */
    pthread_mutex_t lock;
    struct copy_ws *idle;
    double p[TM_CODE_BITS];
    uint8_t sha[32];
    char id[33];
    uint64_t phash;
};

/* Large originals get a proportionally larger tile, so the mark keeps the
 * same number of periods across the picture and lives at the same fraction
 * of its Nyquist frequency: a copy shrunk to fit a screen (a 6000-pixel photo
 * to 1280) then sees its tile at a scale the detector reads (0.2 .. 5). */
int tm_mark_tile_scale(int width, int height)
{
    int side = width > height ? width : height;
    int f = (side + TM_TILE_SCALE_SIDE / 2) / TM_TILE_SCALE_SIDE;
    return f < 1 ? 1 : f > TM_TILE_SCALE_MAX ? TM_TILE_SCALE_MAX : f;
}

void tm_mark_params_init(tm_mark_params *p)
{
    memset(p, 0, sizeof *p);
    p->strength = TM_DEFAULT_STRENGTH;
}

/* Luminance (BT.601, as JPEG) of an image's colour channels. */
void tm_luma(const tm_image *img, float *y)
{
    size_t n = (size_t)img->width * img->height;
    if (img->channels < 3) {
        memcpy(y, img->plane[0], n * sizeof(float));
        return;
    }
    const float *restrict r = img->plane[0], *restrict g = img->plane[1], *restrict b = img->plane[2];
    float *restrict v = y;
    for (size_t i = 0; i < n; i++) v[i] = 0.299f * r[i] + 0.587f * g[i] + 0.114f * b[i];
}

/* Streams a content hash: a 32-byte header (the text zero-padded), then the
 * samples. */
typedef struct hasher {
    EVP_MD_CTX *ctx;
    int ok;
} hasher;

static void hash_begin(hasher *h, const char *header)
{
    uint8_t buf[32] = {0};
    snprintf((char *)buf, sizeof buf, "%s", header);
    h->ctx = EVP_MD_CTX_new();
    h->ok = h->ctx && EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) && EVP_DigestUpdate(h->ctx, buf, sizeof buf);
}

static void hash_update(hasher *h, const void *data, size_t len)
{
    if (h->ok && len) h->ok = EVP_DigestUpdate(h->ctx, data, len);
}

static tm_status hash_end(hasher *h, uint8_t sha[32])
{
    unsigned int n = 0;
    int ok = h->ok && EVP_DigestFinal_ex(h->ctx, sha, &n) && n == 32;
    EVP_MD_CTX_free(h->ctx);
    ERR_clear_error();
    return ok ? TM_OK : h->ctx ? TM_ERR_CRYPTO : TM_ERR_NOMEM;
}

tm_status tm_image_content_hash(const tm_image *img, uint8_t sha[32])
{
    if (!img || !sha) return TM_ERR_ARG;
    char header[32];
    snprintf(header, sizeof header, "tm1 %d %d %d", img->width, img->height, img->channels);
    hasher h;
    hash_begin(&h, header);
    /* Each plane's samples, 8-bit quantised, a chunk at a time. */
    uint8_t chunk[16384];
    size_t n = (size_t)img->width * img->height;
    for (int c = 0; c < img->channels; c++)
        for (size_t i = 0; i < n; i += sizeof chunk) {
            size_t m = n - i < sizeof chunk ? n - i : sizeof chunk;
            const float *restrict src = img->plane[c] + i;
            for (size_t k = 0; k < m; k++) chunk[k] = tm_to_u8(src[k]);
            hash_update(&h, chunk, m);
        }
    return hash_end(&h, sha);
}

tm_status tm_planes_content_hash(const tm_jpeg_planes *p, uint8_t sha[32])
{
    char header[32];
    snprintf(header, sizeof header, "tm1y %d %d %d", p->width, p->height, p->ncomp);
    hasher h;
    hash_begin(&h, header);
    for (int c = 0; c < p->ncomp; c++) {
        uint8_t f[2] = {(uint8_t)p->h_samp[c], (uint8_t)p->v_samp[c]};
        hash_update(&h, f, 2);
        for (int y = 0; y < p->ch[c]; y++) hash_update(&h, p->plane[c] + (size_t)y * p->stride[c], (size_t)p->cw[c]);
    }
    return hash_end(&h, sha);
}

void tm_image_id_hex(const uint8_t sha[32], char *id)
{
    for (int i = 0; i < TM_IMAGE_ID_LEN / 2; i++) snprintf(id + 2 * i, 3, "%02x", sha[i]);
}

/* Everything that follows from the original's content hash (e->sha) and
 * luminance y (e->width x e->height): the code's biases, the layout, the
 * tile workspace, the per-pixel gain and strength, the perceptual hash. */
static tm_status analyse(tm_embedder *e, const tm_plane *y)
{
    size_t n = (size_t)e->width * e->height;
    tm_status st;
    tm_image_id_hex(e->sha, e->id);
    if ((st = tm_code_bias(e->key, e->id, e->p)) != TM_OK) return st;
    if ((st = tm_layout_create(e->key, &e->layout)) != TM_OK) return st;
    e->side = TM_TILE * tm_mark_tile_scale(e->width, e->height);
    e->gain = tm_big_alloc(n * sizeof(uint16_t));
    if (!e->gain) return TM_ERR_NOMEM;
    if ((st = tm_phash_luma(y, &e->phash)) != TM_OK) return st;
    double ms;
    if ((st = tm_mask_compute(y, e->gain, &ms)) != TM_OK) return st;
    /* Scale so the RMS change is the strength, but never beyond a small
     * amplitude on flat areas (mask weight 1): flat images stay clean. */
    double s = e->params.strength;
    e->alpha = (float)(ms > 0 ? fmin(s / sqrt(ms), TM_FLAT_FRACTION * s) : 0);
    return TM_OK;
}

/* A new embedder for key and params (NULL: the defaults), once params are
 * found sane, or the reason not. */
static tm_status embedder_new(const tm_key *key, const tm_mark_params *params, tm_embedder **out)
{
    tm_mark_params p;
    if (params) p = *params;
    else tm_mark_params_init(&p);
    if (!(p.strength >= 0) || p.strength > 50) return TM_ERR_ARG;
    tm_embedder *e = calloc(1, sizeof *e);
    if (!e) return TM_ERR_NOMEM;
    if (pthread_mutex_init(&e->lock, NULL)) {
        free(e);
        return TM_ERR_NOMEM;
    }
    e->key = key;
    e->params = p;
    *out = e;
    return TM_OK;
}

/* Analysis of a float original: hash, luminance, then analyse(). */
static tm_status analyse_image(tm_embedder *e, const tm_image *orig)
{
    e->orig = orig;
    e->width = orig->width;
    e->height = orig->height;
    tm_status st = tm_image_content_hash(orig, e->sha);
    if (st != TM_OK) return st;
    float *y = tm_big_alloc(sizeof(float) * (size_t)orig->width * orig->height);
    if (!y) return TM_ERR_NOMEM;
    tm_luma(orig, y);
    tm_plane p = tm_plane_float(y, orig->width, orig->height);
    st = analyse(e, &p);
    tm_big_free(y);
    return st;
}

tm_status tm_embedder_create(const tm_key *key, const tm_image *orig, const tm_mark_params *params,
                             tm_embedder **out)
{
    if (!key || !orig || !out) return TM_ERR_ARG;
    *out = NULL;
    tm_embedder *e = NULL;
    tm_status st = embedder_new(key, params, &e);
    if (st == TM_OK && (st = analyse_image(e, orig)) == TM_OK) *out = e;
    else tm_embedder_free(e);
    return st;
}

tm_status tm_embedder_create_data(const tm_key *key, const void *data, size_t len, const tm_load_options *lo,
                                  const tm_mark_params *params, tm_embedder **out, tm_image_info *info)
{
    if (!key || !data || !out) return TM_ERR_ARG;
    *out = NULL;
    tm_image_info local;
    if (!info) info = &local;
    tm_embedder *e = NULL;
    tm_status st = embedder_new(key, params, &e);
    if (st != TM_OK) return st;
    if (lo) e->lo = *lo;
    else tm_load_options_init(&e->lo);
    e->lo.luma_only = 0;
    if ((st = tm_image_decode_planes(data, len, &e->lo, &e->owned, &e->planes, info)) != TM_OK) goto out;
    if (!e->planes) {
        st = analyse_image(e, e->owned);
        goto out;
    }
    /* A JPEG read as stored: keep its bytes for any copy that is not a JPEG
     * of the same sampling, and analyse its luminance plane. */
    const tm_jpeg_planes *p = e->planes;
    e->planes_ss = info->subsampling;
    e->width = p->width;
    e->height = p->height;
    st = TM_ERR_NOMEM;
    e->src = malloc(len);
    if (!e->src) goto out;
    memcpy(e->src, data, len);
    e->src_len = len;
    if ((st = tm_planes_content_hash(p, e->sha)) != TM_OK) goto out;
    tm_plane y = {.u8 = p->plane[0], .stride = p->stride[0], .w = p->width, .h = p->height};
    st = analyse(e, &y);
out:
    if (st == TM_OK) *out = e;
    else tm_embedder_free(e);
    return st;
}

tm_status tm_embedder_load(const tm_key *key, const char *path, const tm_load_options *lo,
                           const tm_mark_params *params, tm_embedder **out, tm_image_info *info)
{
    if (!out) return TM_ERR_ARG;
    *out = NULL;
    uint8_t *data;
    size_t len;
    tm_status st = tm_image_file_read(path, &data, &len);
    if (st != TM_OK) return st;
    st = tm_embedder_create_data(key, data, len, lo, params, out, info);
    free(data);
    return st;
}

void tm_embedder_free(tm_embedder *e)
{
    if (!e) return;
    tm_big_free(e->gain);
    tm_image_free(e->owned);
    tm_jpeg_planes_free(e->planes);
    free(e->src);
    tm_layout_free(e->layout);
    while (e->idle) {
        copy_ws *w = e->idle;
        e->idle = w->next;
        ws_free(w);
    }
    pthread_mutex_destroy(&e->lock);
    free(e);
}

const char *tm_embedder_image_id(const tm_embedder *e)
{
    return e->id;
}

void tm_embedder_content_sha256(const tm_embedder *e, uint8_t sha[32])
{
    memcpy(sha, e->sha, 32);
}

uint64_t tm_embedder_phash(const tm_embedder *e)
{
    return e->phash;
}

void tm_embedder_size(const tm_embedder *e, int *width, int *height)
{
    *width = e->width;
    *height = e->height;
}

tm_status tm_embedder_codeword(const tm_embedder *e, const char *recipient, uint8_t bits[TM_CODEWORD_BYTES])
{
    if (!e || !recipient || !*recipient) return TM_ERR_ARG;
    return tm_code_word(e->key, e->id, recipient, e->p, bits);
}

static void ws_free(copy_ws *w)
{
    if (!w) return;
    tm_tile_fft_free(w->fft);
    free(w->tile);
    free(w->tile16);
    tm_big_free(w->luma8);
    free(w);
}

/* An idle copy workspace of e's, or a new one. */
static tm_status ws_take(tm_embedder *e, copy_ws **out)
{
    pthread_mutex_lock(&e->lock);
    copy_ws *w = e->idle;
    if (w) e->idle = w->next;
    pthread_mutex_unlock(&e->lock);
    if (!w) {
        size_t n = (size_t)e->side * e->side;
        tm_status st = TM_ERR_NOMEM;
        if (!(w = calloc(1, sizeof *w))) return st;
        w->tile = malloc(sizeof(float) * n);
        w->tile16 = malloc(sizeof(int16_t) * n);
        if (e->planes) w->luma8 = tm_big_alloc(e->planes->rows[0] * e->planes->stride[0]);
        if (w->tile && w->tile16 && (w->luma8 || !e->planes)) st = tm_tile_fft_create_side(e->side, &w->fft);
        if (st != TM_OK) {
            ws_free(w);
            return st;
        }
    }
    *out = w;
    return TM_OK;
}

static void ws_give(tm_embedder *e, copy_ws *w)
{
    pthread_mutex_lock(&e->lock);
    w->next = e->idle;
    e->idle = w;
    pthread_mutex_unlock(&e->lock);
}

/* The recipient's tile times the strength into w->tile (and w->tile16). */
static tm_status make_tile(const tm_embedder *e, copy_ws *w, const char *recipient)
{
    uint8_t bits[TM_CODE_BYTES];
    tm_status st = tm_embedder_codeword(e, recipient, bits);
    if (st == TM_OK) st = tm_pattern_tile(e->layout, bits, w->fft, w->tile);
    size_t n = (size_t)e->side * e->side;
    for (size_t i = 0; i < n; i++) {
        float v = w->tile[i] *= e->alpha;
        v = v * TM_GAIN_ONE;
        v = v > 32767.0f ? 32767.0f : v < -32767.0f ? -32767.0f : v;
        w->tile16[i] = (int16_t)lrintf(v);
    }
    return st;
}

/* The float original, decoded from the kept bytes on first need. */
static tm_status float_original(tm_embedder *e)
{
    pthread_mutex_lock(&e->lock);
    tm_status st = TM_OK;
    if (!e->orig) {
        st = tm_image_decode(e->src, e->src_len, &e->lo, &e->owned, NULL);
        if (st == TM_OK && (e->owned->width != e->width || e->owned->height != e->height)) st = TM_ERR_INTERNAL;
        if (st == TM_OK) e->orig = e->owned;
    }
    pthread_mutex_unlock(&e->lock);
    return st;
}

/* Adds cw's tile, through the mask, to img (the original's size). */
static void add_mark(const tm_embedder *e, const copy_ws *cw, tm_image *img)
{
    int w = img->width, h = img->height;
    int nc = img->channels >= 3 ? 3 : 1;
    int side = e->side;
    for (int yy = 0; yy < h; yy++) {
        const float *trow = cw->tile + (size_t)(yy % side) * side;
        const uint16_t *g = e->gain + (size_t)yy * w;
        for (int c = 0; c < nc; c++) {
            float *row = img->plane[c] + (size_t)yy * w;
            for (int x0 = 0; x0 < w; x0 += side) {
                int len = w - x0 < side ? w - x0 : side;
                for (int i = 0; i < len; i++) row[x0 + i] += (float)g[x0 + i] * (1.0f / TM_GAIN_ONE) * trow[i];
            }
        }
    }
}

tm_status tm_embedder_original(tm_embedder *e, tm_image **out)
{
    if (!e || !out) return TM_ERR_ARG;
    *out = NULL;
    tm_status st = float_original(e);
    return st == TM_OK ? tm_image_clone(e->orig, out) : st;
}

tm_status tm_embedder_mark_onto(tm_embedder *e, const char *recipient, tm_image *img)
{
    if (!e || !recipient || !img) return TM_ERR_ARG;
    if (img->width != e->width || img->height != e->height) return TM_ERR_DIMENSIONS;
    copy_ws *cw;
    tm_status st = ws_take(e, &cw);
    if (st != TM_OK) return st;
    if ((st = make_tile(e, cw, recipient)) == TM_OK) add_mark(e, cw, img);
    ws_give(e, cw);
    return st;
}

tm_status tm_embedder_mark(tm_embedder *e, const char *recipient, tm_image **out)
{
    if (!e || !recipient || !out) return TM_ERR_ARG;
    tm_status st = tm_embedder_original(e, out);
    if (st == TM_OK && (st = tm_embedder_mark_onto(e, recipient, *out)) != TM_OK) {
        tm_image_free(*out);
        *out = NULL;
    }
    return st;
}

/* The copy's luminance into cw->luma8: the original's plus gain * tile,
 * rounded and clamped; the padding beyond the image as the original's. In
 * integers (gain and tile each in 8.8 fixed point): the same change within
 * a rounding, at a fraction of the cost of converting every sample to float
 * and back. */
static void mark_luma(const tm_embedder *e, copy_ws *cw)
{
    const tm_jpeg_planes *p = e->planes;
    int w = e->width, h = e->height, side = e->side;
    size_t stride = p->stride[0];
    for (int yy = 0; yy < h; yy++) {
        const int16_t *restrict trow = cw->tile16 + (size_t)(yy % side) * side;
        const uint16_t *restrict g = e->gain + (size_t)yy * w;
        const uint8_t *restrict in = p->plane[0] + (size_t)yy * stride;
        uint8_t *restrict o = cw->luma8 + (size_t)yy * stride;
        for (int x0 = 0; x0 < w; x0 += side) {
            int len = w - x0 < side ? w - x0 : side;
            for (int i = 0; i < len; i++) {
                int32_t v = ((int32_t)in[x0 + i] << 16) + (int32_t)g[x0 + i] * trow[i] + (1 << 15);
                v >>= 16;
                o[x0 + i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
        memcpy(o + w, in + w, stride - (size_t)w);
    }
    memcpy(cw->luma8 + (size_t)h * stride, p->plane[0] + (size_t)h * stride, (p->rows[0] - (size_t)h) * stride);
}

tm_status tm_embedder_mark_encode(tm_embedder *e, const char *recipient, const tm_save_options *so,
                                  uint8_t **data, size_t *len)
{
    if (!e || !recipient || !so || !data || !len) return TM_ERR_ARG;
    *data = NULL;
    *len = 0;
    const tm_jpeg_planes *p = e->planes;
    int quality = so->quality ? so->quality : 90;
    if (p && so->format == TM_FORMAT_JPEG && quality >= 1 && quality <= 100 &&
        (p->ncomp == 1 || so->subsampling == TM_SS_UNKNOWN || so->subsampling == e->planes_ss)) {
        copy_ws *cw;
        tm_status st = ws_take(e, &cw);
        if (st != TM_OK) return st;
        if ((st = make_tile(e, cw, recipient)) == TM_OK) {
            mark_luma(e, cw);
            st = tm_jpeg_encode_planes(p, cw->luma8, quality, so->progressive, data, len);
        }
        ws_give(e, cw);
        return st;
    }
    tm_image *copy;
    tm_status st = tm_embedder_mark(e, recipient, &copy);
    if (st != TM_OK) return st;
    st = tm_image_encode(copy, so, data, len);
    tm_image_free(copy);
    return st;
}
