/* pattern.c -- the keyed tile: which spectral dimensions carry the pilot and
 * which carry each codeword bit, and the synthesis of the spatial tile.
 *
 * The mark is periodic with period TM_TILE, so it is built from the DFT of one
 * tile (a DCT basis is not periodic and would show seams at tile borders).
 * Every real dimension (real or imaginary part of a bin) inside the mid band
 * is a chip; a keyed permutation deals TM_CHIPS_PER_BIT chips to each of the
 * m codeword bits and the rest to the pilot, each with a keyed sign. The
 * layout depends on the key alone, so a suspect is read once whatever image
 * it came from (docs/scheme.md section 2). */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "scheme.h"

/* Uniform index in [0, n) from a keyed 32-bit word, by rejection. */
static uint32_t uniform_index(const uint8_t *stream, size_t *pos, size_t len, uint32_t n, int *ok)
{
    uint32_t lim = UINT32_MAX - UINT32_MAX % n;
    while (*pos + 4 <= len) {
        uint32_t v = (uint32_t)stream[*pos] | (uint32_t)stream[*pos + 1] << 8 |
                     (uint32_t)stream[*pos + 2] << 16 | (uint32_t)stream[*pos + 3] << 24;
        *pos += 4;
        if (v < lim) return v % n;
    }
    *ok = 0;
    return 0;
}

tm_status tm_layout_create(const tm_key *key, tm_layout **out)
{
    *out = NULL;
    /* Enumerate the band: rows ky 1..T/2-1 (row 0 and T/2 hold self-conjugate
     * bins), every column; two real dimensions per bin. */
    size_t cap = 0;
    for (int ky = 1; ky < TM_TILE / 2; ky++)
        for (int kx = 0; kx < TM_TILE; kx++) {
            int fx = kx <= TM_TILE / 2 ? kx : kx - TM_TILE;
            double r = sqrt((double)fx * fx + (double)ky * ky);
            if (r >= TM_BAND_LO && r <= TM_BAND_HI) cap += 2;
        }
    size_t n_payload = (size_t)TM_CODE_BITS * TM_CHIPS_PER_BIT;
    if (cap < n_payload + 64) return TM_ERR_INTERNAL;

    tm_status st = TM_ERR_NOMEM;
    tm_chip *all = malloc(cap * sizeof *all);
    size_t slen = cap * 16 + 64;
    uint8_t *stream = malloc(slen);
    tm_layout *lay = calloc(1, sizeof *lay);
    if (!all || !stream || !lay) goto out;
    size_t n = 0;
    for (int ky = 1; ky < TM_TILE / 2; ky++)
        for (int kx = 0; kx < TM_TILE; kx++) {
            int fx = kx <= TM_TILE / 2 ? kx : kx - TM_TILE;
            double r = sqrt((double)fx * fx + (double)ky * ky);
            if (r < TM_BAND_LO || r > TM_BAND_HI) continue;
            for (int im = 0; im < 2; im++) {
                all[n].ky = (uint16_t)ky;
                all[n].kx = (uint16_t)kx;
                all[n].imag = (uint8_t)im;
                all[n].ring = (uint16_t)lround(r);
                all[n].sign = 1;
                n++;
            }
        }
    st = tm_key_stream(key, "tile layout v1", NULL, 0, stream, slen);
    if (st != TM_OK) goto out;
    /* Fisher-Yates with keyed indices, then keyed signs. */
    size_t pos = 0;
    int ok = 1;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = uniform_index(stream, &pos, slen, (uint32_t)(i + 1), &ok);
        tm_chip tmp = all[i];
        all[i] = all[j];
        all[j] = tmp;
    }
    for (size_t i = 0; i < n; i++) {
        if (pos >= slen) ok = 0;
        else all[i].sign = (stream[pos++] & 1) ? 1 : -1;
    }
    if (!ok) {
        st = TM_ERR_INTERNAL;
        goto out;
    }
    lay->payload = malloc(n_payload * sizeof(tm_chip));
    lay->pilot = malloc((n - n_payload) * sizeof(tm_chip));
    if (!lay->payload || !lay->pilot) {
        st = TM_ERR_NOMEM;
        goto out;
    }
    memcpy(lay->payload, all, n_payload * sizeof(tm_chip));
    memcpy(lay->pilot, all + n_payload, (n - n_payload) * sizeof(tm_chip));
    lay->n_pilot = n - n_payload;
    *out = lay;
    lay = NULL;
    st = TM_OK;
out:
    free(all);
    free(stream);
    tm_layout_free(lay);
    return st;
}

void tm_layout_free(tm_layout *lay)
{
    if (!lay) return;
    free(lay->pilot);
    free(lay->payload);
    free(lay);
}

/* Sets chip c in the spectrum of a side x side tile: the same signed
 * frequency (cycles per tile) as in the TM_TILE layout. */
static void put_chip(fftwf_complex *spec, int side, const tm_chip *c, float v)
{
    size_t row = c->kx <= TM_TILE / 2 ? c->kx : (size_t)side - (TM_TILE - c->kx);
    spec[row * (size_t)(side / 2 + 1) + c->ky][c->imag] = v;
}

tm_status tm_pattern_tile(const tm_layout *lay, const uint8_t *bits, tm_tile_fft *fft, float *tile)
{
    int side = tm_tile_fft_side(fft);
    size_t n = (size_t)side * side;
    fftwf_complex *spec = tm_tile_fft_spectrum(fft);
    memset(spec, 0, sizeof(fftwf_complex) * (size_t)side * (side / 2 + 1));
    for (size_t i = 0; i < lay->n_pilot; i++) put_chip(spec, side, &lay->pilot[i], lay->pilot[i].sign);
    for (int b = 0; b < TM_CODE_BITS; b++) {
        float v = (bits[b >> 3] >> (b & 7)) & 1 ? 1.0f : -1.0f;
        const tm_chip *c = &lay->payload[(size_t)b * TM_CHIPS_PER_BIT];
        for (int k = 0; k < TM_CHIPS_PER_BIT; k++) put_chip(spec, side, &c[k], v * c[k].sign);
    }
    tm_tile_fft_inverse(fft);
    const float *sp = tm_tile_fft_spatial(fft);
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)sp[i] * sp[i];
    float norm = ss > 0 ? (float)(1.0 / sqrt(ss / (double)n)) : 0.0f;
    for (size_t i = 0; i < n; i++) tile[i] = sp[i] * norm;
    return TM_OK;
}
