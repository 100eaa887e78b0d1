/* diffimage.c -- renders what a mark changes, for people to look at:
 * writes OUT_PREFIX-marked.png (a marked copy), OUT_PREFIX-diff.png (the
 * luminance change amplified GAIN times around mid-grey) and prints PSNR and
 * SSIM. An optional window WxH+X+Y crops all outputs to a region of interest.
 *
 *   bench/diffimage IN OUT_PREFIX [GAIN] [WxH+X+Y] */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tracemark.h"

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: diffimage IN OUT_PREFIX [GAIN] [WxH+X+Y]\n");
        return 2;
    }
    double gain = argc > 3 ? atof(argv[3]) : 20;
    uint8_t kb[TM_KEY_BYTES];
    for (int i = 0; i < TM_KEY_BYTES; i++) kb[i] = (uint8_t)(i * 11 + 5);
    tm_key *key = NULL;
    tm_image *orig = NULL, *marked = NULL, *diff = NULL, *a = NULL, *b = NULL;
    tm_embedder *e = NULL;
    if (tm_key_from_bytes(kb, &key) || tm_image_load(argv[1], NULL, &orig, NULL) ||
        tm_embedder_create(key, orig, NULL, &e) || tm_embedder_mark(e, "recipient@example.com", &marked))
        return 2;
    size_t n = (size_t)orig->width * orig->height;
    for (int c = 0; c < marked->channels; c++)
        for (size_t i = 0; i < n; i++) marked->plane[c][i] = fminf(255, fmaxf(0, floorf(marked->plane[c][i] + 0.5f)));
    printf("%s: PSNR %.2f dB, SSIM %.4f\n", argv[1], tm_psnr(orig, marked), tm_ssim(orig, marked));
    if (tm_image_create(orig->width, orig->height, 1, &diff)) return 2;
    int nc = orig->channels >= 3 ? 3 : 1;
    for (size_t i = 0; i < n; i++) {
        double d = 0;
        for (int c = 0; c < nc; c++) d += marked->plane[c][i] - orig->plane[c][i];
        diff->plane[0][i] = (float)fmin(255, fmax(0, 128 + gain * d / nc));
    }
    char path[4096], err[128];
    tm_image *outs[2] = {marked, diff};
    const char *names[2] = {"marked", "diff"};
    for (int k = 0; k < 2; k++) {
        tm_image *img = outs[k];
        if (argc > 4) {
            char spec[128];
            snprintf(spec, sizeof spec, "crop:%s", argv[4]);
            if (tm_attack_apply(spec, outs[k], k ? &b : &a, err, sizeof err)) {
                fprintf(stderr, "diffimage: %s\n", err);
                return 2;
            }
            img = k ? b : a;
        }
        snprintf(path, sizeof path, "%s-%s.png", argv[2], names[k]);
        if (tm_image_save(img, path, NULL)) return 2;
    }
    tm_image_free(a);
    tm_image_free(b);
    tm_image_free(diff);
    tm_image_free(marked);
    tm_embedder_free(e);
    tm_image_free(orig);
    tm_key_free(key);
    return 0;
}
