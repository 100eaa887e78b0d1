/* embed.c -- the marking half: analyse an original once, then make one
 * marked copy per recipient cheaply.
 *
 * tm_embedder_create does everything that depends only on the original: the
 * content hash and image id, the luminance plane, the perceptual mask and the
 * global strength, folded into one per-pixel gain. tm_embedder_mark then only
 * synthesises the recipient's tile (one small inverse FFT) and adds
 * gain * tile to R, G and B alike, which changes luminance by exactly that
 * and leaves the chroma untouched (docs/scheme.md section 5). */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheme.h"

struct tm_embedder {
    const tm_key *key;
    const tm_image *orig;
    float *gain;              /* per pixel: strength * mask */
    tm_layout *layout;
    tm_tile_fft *fft;
    int side;                 /* the tile's: TM_TILE * tm_mark_tile_scale */
    float *tile;
    double p[TM_CODE_BITS];
    uint8_t sha[32];
    char id[33];
    double strength;
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
    const float *r = img->plane[0], *g = img->plane[1], *b = img->plane[2];
    for (size_t i = 0; i < n; i++) y[i] = 0.299f * r[i] + 0.587f * g[i] + 0.114f * b[i];
}

tm_status tm_image_content_hash(const tm_image *img, uint8_t sha[32])
{
    size_t n = (size_t)img->width * img->height;
    size_t len = 32 + n * img->channels;
    uint8_t *buf = malloc(len);
    if (!buf) return TM_ERR_NOMEM;
    memset(buf, 0, 32);
    snprintf((char *)buf, 32, "tm1 %d %d %d", img->width, img->height, img->channels);
    uint8_t *p = buf + 32;
    for (int c = 0; c < img->channels; c++)
        for (size_t i = 0; i < n; i++) *p++ = tm_to_u8(img->plane[c][i]);
    tm_status st = tm_sha256(buf, len, sha);
    free(buf);
    return st;
}

tm_status tm_embedder_create(const tm_key *key, const tm_image *orig, const tm_mark_params *params,
                             tm_embedder **out)
{
    if (!key || !orig || !out) return TM_ERR_ARG;
    *out = NULL;
    tm_mark_params defaults;
    if (!params) {
        tm_mark_params_init(&defaults);
        params = &defaults;
    }
    if (!(params->strength >= 0) || params->strength > 50) return TM_ERR_ARG;
    size_t n = (size_t)orig->width * orig->height;
    tm_status st = TM_ERR_NOMEM;
    float *y = NULL;
    tm_embedder *e = calloc(1, sizeof *e);
    if (!e) goto out;
    e->key = key;
    e->orig = orig;
    e->strength = params->strength;
    e->gain = malloc(n * sizeof(float));
    y = malloc(n * sizeof(float));
    if (!e->gain || !y) goto out;
    if ((st = tm_image_content_hash(orig, e->sha)) != TM_OK) goto out;
    for (int i = 0; i < 16; i++) snprintf(e->id + 2 * i, 3, "%02x", e->sha[i]);
    if ((st = tm_code_bias(key, e->id, e->p)) != TM_OK) goto out;
    if ((st = tm_layout_create(key, &e->layout)) != TM_OK) goto out;
    e->side = TM_TILE * tm_mark_tile_scale(orig->width, orig->height);
    if ((st = tm_tile_fft_create_side(e->side, &e->fft)) != TM_OK) goto out;
    if (!(e->tile = malloc(sizeof(float) * (size_t)e->side * e->side))) {
        st = TM_ERR_NOMEM;
        goto out;
    }
    tm_luma(orig, y);
    if ((st = tm_mask_compute(y, orig->width, orig->height, e->gain)) != TM_OK) goto out;
    /* Scale so the RMS change is the strength, but never beyond a small
     * amplitude on flat areas (mask weight 1): flat images stay clean. */
    double ms = 0;
    for (size_t i = 0; i < n; i++) ms += (double)e->gain[i] * e->gain[i];
    ms /= (double)n;
    double alpha = ms > 0 ? fmin(params->strength / sqrt(ms), TM_FLAT_FRACTION * params->strength) : 0;
    for (size_t i = 0; i < n; i++) e->gain[i] = (float)(e->gain[i] * alpha);
    *out = e;
    e = NULL;
    st = TM_OK;
out:
    free(y);
    tm_embedder_free(e);
    return st;
}

void tm_embedder_free(tm_embedder *e)
{
    if (!e) return;
    free(e->gain);
    free(e->tile);
    tm_layout_free(e->layout);
    tm_tile_fft_free(e->fft);
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

tm_status tm_embedder_codeword(const tm_embedder *e, const char *recipient, uint8_t bits[TM_CODEWORD_BYTES])
{
    if (!e || !recipient || !*recipient) return TM_ERR_ARG;
    return tm_code_word(e->key, e->id, recipient, e->p, bits);
}

tm_status tm_embedder_mark(tm_embedder *e, const char *recipient, tm_image **out)
{
    if (!e || !recipient || !out) return TM_ERR_ARG;
    *out = NULL;
    uint8_t bits[TM_CODE_BYTES];
    tm_status st = tm_embedder_codeword(e, recipient, bits);
    if (st != TM_OK) return st;
    if ((st = tm_pattern_tile(e->layout, bits, e->fft, e->tile)) != TM_OK) return st;
    tm_image *img;
    if ((st = tm_image_clone(e->orig, &img)) != TM_OK) return st;
    int w = img->width, h = img->height;
    int nc = img->channels >= 3 ? 3 : 1;
    int side = e->side;
    for (int yy = 0; yy < h; yy++) {
        const float *trow = e->tile + (size_t)(yy % side) * side;
        const float *g = e->gain + (size_t)yy * w;
        for (int c = 0; c < nc; c++) {
            float *row = img->plane[c] + (size_t)yy * w;
            for (int x0 = 0; x0 < w; x0 += side) {
                int len = w - x0 < side ? w - x0 : side;
                for (int i = 0; i < len; i++) row[x0 + i] += g[x0 + i] * trow[i];
            }
        }
    }
    *out = img;
    return TM_OK;
}
