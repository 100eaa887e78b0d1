/* test_trace.c -- end to end through the library: mark small corpus photos,
 * attack them, trace them against many registered copies. The true copy must
 * be accused within the budget, no innocent ever, unmarked images and a wrong
 * key give no accusation. These are the robustness regression tests. */
#include "testutil.h"
#include "scheme.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>

#define N_INNOCENT 2000

static tm_key *key_a, *key_b;

static tm_key *make_key(uint8_t seed)
{
    uint8_t b[TM_KEY_BYTES];
    for (int i = 0; i < TM_KEY_BYTES; i++) b[i] = (uint8_t)(seed * 31 + i * 7);
    tm_key *k = NULL;
    if (tm_key_from_bytes(b, &k) != TM_OK) {
        fprintf(stderr, "cannot make a test key\n");
        exit(2);
    }
    return k;
}

/* Registry stand-in: the true recipient's copy plus N_INNOCENT others. */
typedef struct fake_registry {
    tm_reg_copy *copies;
    uint8_t (*words)[TM_CODEWORD_BYTES];
    char (*names)[32];
    size_t n;
} fake_registry;

static void fake_registry_fill(fake_registry *r, tm_embedder *e)
{
    r->n = N_INNOCENT + 1;
    r->copies = calloc(r->n, sizeof *r->copies);
    r->words = calloc(r->n, TM_CODEWORD_BYTES);
    r->names = calloc(r->n, 32);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r->copies);
    for (size_t i = 0; i < r->n; i++) {
        if (i == 0) snprintf(r->names[i], 32, "leaker@example.com");
        else snprintf(r->names[i], 32, "innocent-%zu", i);
        CU_ASSERT_EQUAL_FATAL(tm_embedder_codeword(e, r->names[i], r->words[i]), TM_OK);
        r->copies[i].copy_id = (int64_t)i + 1;
        r->copies[i].image_id = tm_embedder_image_id(e);
        r->copies[i].recipient = r->names[i];
        r->copies[i].code_len = TM_CODEWORD_BYTES * 8;
        r->copies[i].codeword = r->words[i];
    }
}

static void fake_registry_free(fake_registry *r)
{
    free(r->copies);
    free(r->words);
    free(r->names);
}

/* Rounds every sample to 8 bits, as writing a file would. */
static void quantise(tm_image *img)
{
    size_t n = (size_t)img->width * img->height;
    for (int c = 0; c < img->channels; c++)
        for (size_t i = 0; i < n; i++) img->plane[c][i] = floorf(img->plane[c][i] + 0.5f);
}

static const char *attacks[] = {
    "png", "jpeg:q=90", "jpeg:q=50", "jpeg:q=30", "webp:q=75", "blur:sigma=1.0", "brightness:20",
    "contrast:0.8", "gamma:1.3", "gray", "noise:sigma=3:seed=7", "crop:0.7", "crop:0.8,jpeg:q=60",
};
#define N_ATTACKS (sizeof attacks / sizeof attacks[0])

static void run_image(const char *name)
{
    tm_image *orig = NULL, *marked = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_load(tm_test_corpus(name), NULL, &orig, NULL), TM_OK);
    tm_embedder *e = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_embedder_create(key_a, orig, NULL, &e), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_embedder_mark(e, "leaker@example.com", &marked), TM_OK);
    quantise(marked);
    double psnr = tm_psnr(orig, marked), ssim = tm_ssim(orig, marked);
    printf("\n    %s: PSNR %.2f dB, SSIM %.4f", name, psnr, ssim);
    CU_ASSERT(psnr >= 40.0);
    CU_ASSERT(ssim >= 0.98);

    fake_registry reg;
    fake_registry_fill(&reg, e);
    tm_trace_params tp;
    tm_trace_params_init(&tp);
    for (size_t a = 0; a < N_ATTACKS; a++) {
        tm_image *sus = NULL;
        char err[128];
        CU_ASSERT_EQUAL_FATAL(tm_attack_apply(attacks[a], marked, &sus, err, sizeof err), TM_OK);
        tm_trace_result r;
        CU_ASSERT_EQUAL_FATAL(tm_trace_run(key_a, sus, reg.copies, reg.n, &tp, &r), TM_OK);
        int ok = r.verdict == TM_VERDICT_ACCUSED && r.n_accused == 1 && r.accused[0].index == 0 &&
                 r.accused[0].log10_p <= -6;
        printf("\n    %-22s %s log10_p %.1f pilot z %.1f", attacks[a], ok ? "accused" : "MISSED",
               r.n_accused ? r.accused[0].log10_p : 0.0, r.pilot_z);
        CU_ASSERT(ok);
        for (size_t k = 0; k < r.n_accused; k++) CU_ASSERT_EQUAL(r.accused[k].index, 0); /* never an innocent */
        tm_trace_result_clear(&r);

        /* the same suspect under another key accuses nobody */
        CU_ASSERT_EQUAL_FATAL(tm_trace_run(key_b, sus, reg.copies, reg.n, &tp, &r), TM_OK);
        CU_ASSERT_EQUAL(r.n_accused, 0);
        CU_ASSERT_NOT_EQUAL(r.verdict, TM_VERDICT_ACCUSED);
        tm_trace_result_clear(&r);
        tm_image_free(sus);

        /* the unmarked original through the same attack accuses nobody */
        CU_ASSERT_EQUAL_FATAL(tm_attack_apply(attacks[a], orig, &sus, err, sizeof err), TM_OK);
        CU_ASSERT_EQUAL_FATAL(tm_trace_run(key_a, sus, reg.copies, reg.n, &tp, &r), TM_OK);
        CU_ASSERT_EQUAL(r.n_accused, 0);
        CU_ASSERT_EQUAL(r.verdict, TM_VERDICT_NONE);
        tm_trace_result_clear(&r);
        tm_image_free(sus);
    }
    printf("\n");
    fake_registry_free(&reg);
    tm_embedder_free(e);
    tm_image_free(marked);
    tm_image_free(orig);
}

static void test_astronaut(void)
{
    run_image("skimage_astronaut.png");
}

static void test_coffee(void)
{
    run_image("skimage_coffee.png");
}

static void test_rocket(void)
{
    run_image("skimage_rocket.jpg");
}

/* At zero strength a copy is the original, to within half an 8-bit step. */
static void test_zero_strength_roundtrip(void)
{
    tm_image *orig = tm_test_synthetic(300, 200, 3, 5, 1), *copy = NULL;
    tm_mark_params mp;
    tm_mark_params_init(&mp);
    mp.strength = 0;
    tm_embedder *e = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_embedder_create(key_a, orig, &mp, &e), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_embedder_mark(e, "alice", &copy), TM_OK);
    CU_ASSERT(tm_test_maxdiff(orig, copy) < 0.5);
    tm_image_free(copy);
    tm_embedder_free(e);
    tm_image_free(orig);
}

/* Same key, image and recipient: identical copy and codeword; another
 * recipient: another codeword; chroma untouched. */
static void test_deterministic_and_luma_only(void)
{
    tm_image *orig = tm_test_synthetic(256, 256, 3, 9, 1), *a = NULL, *b = NULL, *c = NULL;
    tm_embedder *e1 = NULL, *e2 = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_embedder_create(key_a, orig, NULL, &e1), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_embedder_create(key_a, orig, NULL, &e2), TM_OK);
    CU_ASSERT_STRING_EQUAL(tm_embedder_image_id(e1), tm_embedder_image_id(e2));
    CU_ASSERT_EQUAL_FATAL(tm_embedder_mark(e1, "alice", &a), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_embedder_mark(e2, "alice", &b), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_embedder_mark(e2, "bob", &c), TM_OK);
    CU_ASSERT_EQUAL(tm_test_maxdiff(a, b), 0.0);
    CU_ASSERT(tm_test_maxdiff(a, c) > 0.0);
    uint8_t wa[TM_CODEWORD_BYTES], wb[TM_CODEWORD_BYTES];
    CU_ASSERT_EQUAL(tm_embedder_codeword(e1, "alice", wa), TM_OK);
    CU_ASSERT_EQUAL(tm_embedder_codeword(e1, "bob", wb), TM_OK);
    CU_ASSERT_NOT_EQUAL(memcmp(wa, wb, sizeof wa), 0);
    CU_ASSERT_EQUAL(tm_embedder_codeword(e1, "", wb), TM_ERR_ARG);
    /* R, G and B move together: Cb and Cr are unchanged */
    double worst = 0;
    for (size_t i = 0; i < 256 * 256; i++) {
        double dr = a->plane[0][i] - orig->plane[0][i], dg = a->plane[1][i] - orig->plane[1][i];
        double db = a->plane[2][i] - orig->plane[2][i];
        worst = fmax(worst, fmax(fabs(dr - dg), fabs(dr - db)));
    }
    CU_ASSERT(worst < 1e-3);
    tm_image_free(a);
    tm_image_free(b);
    tm_image_free(c);
    tm_embedder_free(e1);
    tm_embedder_free(e2);
    tm_image_free(orig);
}

/* The original handed out and marked in place (the visible-mark path):
 * the same copy as tm_embedder_mark; another size refused, img untouched. */
static void test_mark_onto(void)
{
    tm_image *orig = tm_test_synthetic(256, 192, 3, 11, 1), *a = NULL, *b = NULL, *small = NULL;
    tm_embedder *e = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_embedder_create(key_a, orig, NULL, &e), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_embedder_mark(e, "alice", &a), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_embedder_original(e, &b), TM_OK);
    CU_ASSERT_EQUAL(tm_test_maxdiff(b, orig), 0.0);
    CU_ASSERT_EQUAL(tm_embedder_mark_onto(e, "alice", b), TM_OK);
    CU_ASSERT_EQUAL(tm_test_maxdiff(a, b), 0.0);
    CU_ASSERT_EQUAL_FATAL(tm_image_create(128, 96, 3, &small), TM_OK);
    CU_ASSERT_EQUAL(tm_embedder_mark_onto(e, "alice", small), TM_ERR_DIMENSIONS);
    CU_ASSERT_EQUAL(small->plane[0][0], 0.0f);
    CU_ASSERT_EQUAL(tm_embedder_mark_onto(e, "", b), TM_ERR_ARG);
    tm_image_free(a);
    tm_image_free(b);
    tm_image_free(small);
    tm_embedder_free(e);
    tm_image_free(orig);
}

/* Too small or flat suspects are inconclusive, never accused. */
static void test_unreadable_suspects(void)
{
    tm_image *orig = tm_test_synthetic(256, 256, 3, 3, 1), *copy = NULL, *tiny = NULL, *flat = NULL;
    tm_embedder *e = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_embedder_create(key_a, orig, NULL, &e), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_embedder_mark(e, "leaker@example.com", &copy), TM_OK);
    fake_registry reg;
    fake_registry_fill(&reg, e);
    char err[64];
    CU_ASSERT_EQUAL_FATAL(tm_attack_apply("crop:40x40+10+10", copy, &tiny, err, sizeof err), TM_OK);
    tm_trace_result r;
    CU_ASSERT_EQUAL_FATAL(tm_trace_run(key_a, tiny, reg.copies, reg.n, NULL, &r), TM_OK);
    CU_ASSERT_EQUAL(r.verdict, TM_VERDICT_INCONCLUSIVE);
    CU_ASSERT_EQUAL(r.n_accused, 0);
    tm_trace_result_clear(&r);
    CU_ASSERT_EQUAL_FATAL(tm_image_create(300, 300, 3, &flat), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_trace_run(key_a, flat, reg.copies, reg.n, NULL, &r), TM_OK);
    CU_ASSERT_EQUAL(r.verdict, TM_VERDICT_INCONCLUSIVE);
    tm_trace_result_clear(&r);
    /* a trace with no copies at all: the mark is seen, nobody can be named */
    CU_ASSERT_EQUAL_FATAL(tm_trace_run(key_a, copy, NULL, 0, NULL, &r), TM_OK);
    CU_ASSERT_EQUAL(r.verdict, TM_VERDICT_INCONCLUSIVE);
    tm_trace_result_clear(&r);
    tm_trace_params tp;
    tm_trace_params_init(&tp);
    tp.fpr = 0;
    CU_ASSERT_EQUAL(tm_trace_run(key_a, copy, reg.copies, reg.n, &tp, &r), TM_ERR_ARG);
    fake_registry_free(&reg);
    tm_embedder_free(e);
    tm_image_free(orig);
    tm_image_free(copy);
    tm_image_free(tiny);
    tm_image_free(flat);
}

/* Flips and quarter turns (the EXIF orientation transforms applied to a
 * marked copy) are traced, and the transform is reported: flip, then a
 * counter-clockwise turn. */
static void test_flips_and_turns(void)
{
    static const struct {
        int orientation, flip, rot;
    } cases[] = {{2, 1, 0}, {3, 0, 180}, {4, 1, 180}, {5, 1, 90}, {6, 0, -90}, {7, 1, -90}, {8, 0, 90}};
    tm_image *orig = NULL, *marked = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_load(tm_test_corpus("skimage_coffee.png"), NULL, &orig, NULL), TM_OK);
    tm_embedder *e = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_embedder_create(key_a, orig, NULL, &e), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_embedder_mark(e, "leaker@example.com", &marked), TM_OK);
    fake_registry reg;
    fake_registry_fill(&reg, e);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tm_image *turned = NULL, *sus = NULL;
        char err[64];
        CU_ASSERT_EQUAL_FATAL(tm_image_clone(marked, &turned), TM_OK);
        CU_ASSERT_EQUAL_FATAL(tm_image_orient(turned, cases[k].orientation), TM_OK);
        CU_ASSERT_EQUAL_FATAL(tm_attack_apply("jpeg:q=75", turned, &sus, err, sizeof err), TM_OK);
        tm_trace_result r;
        CU_ASSERT_EQUAL_FATAL(tm_trace_run(key_a, sus, reg.copies, reg.n, NULL, &r), TM_OK);
        int ok = r.verdict == TM_VERDICT_ACCUSED && r.n_accused == 1 && r.accused[0].index == 0;
        if (!ok || r.flip != cases[k].flip || fabs(r.rotation_deg - cases[k].rot) >= 0.5)
            fprintf(stderr, "orientation %d: verdict %d, flip %d rot %.0f (want %d %d)\n", cases[k].orientation,
                    r.verdict, r.flip, r.rotation_deg, cases[k].flip, cases[k].rot);
        CU_ASSERT(ok);
        CU_ASSERT_EQUAL(r.flip, cases[k].flip);
        CU_ASSERT(fabs(r.rotation_deg - cases[k].rot) < 0.5);
        tm_trace_result_clear(&r);
        tm_image_free(turned);
        tm_image_free(sus);
    }
    fake_registry_free(&reg);
    tm_embedder_free(e);
    tm_image_free(marked);
    tm_image_free(orig);
}

/* A corpus photo, one leaker's marked copy, and a registry of its copies. */
typedef struct marked_photo {
    tm_image *orig, *marked;
    tm_embedder *e;
    fake_registry reg;
} marked_photo;

static void marked_photo_open(const char *name, marked_photo *mp)
{
    mp->orig = mp->marked = NULL;
    mp->e = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_load(tm_test_corpus(name), NULL, &mp->orig, NULL), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_embedder_create(key_a, mp->orig, NULL, &mp->e), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_embedder_mark(mp->e, "leaker@example.com", &mp->marked), TM_OK);
    quantise(mp->marked);
    fake_registry_fill(&mp->reg, mp->e);
}

static void marked_photo_close(marked_photo *mp)
{
    fake_registry_free(&mp->reg);
    tm_embedder_free(mp->e);
    tm_image_free(mp->marked);
    tm_image_free(mp->orig);
}

/* Traces the marked copy (or, with unmarked, the original) after spec; for
 * the original, asserts that nobody is accused. The caller clears *r. */
static void trace_attacked(const marked_photo *mp, const char *spec, int unmarked, tm_trace_result *r)
{
    tm_image *sus = NULL;
    char err[128];
    CU_ASSERT_EQUAL_FATAL(tm_attack_apply(spec, unmarked ? mp->orig : mp->marked, &sus, err, sizeof err), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_trace_run(key_a, sus, mp->reg.copies, mp->reg.n, NULL, r), TM_OK);
    if (unmarked) CU_ASSERT_EQUAL(r->n_accused, 0);
    tm_image_free(sus);
}

/* True when the leaker's copy (index 0), and only it, is accused. */
static int leaker_accused(const tm_trace_result *r)
{
    return r->verdict == TM_VERDICT_ACCUSED && r->n_accused == 1 && r->accused[0].index == 0;
}

/* Scaling and rotation, blind: traced and the transform reported (scale as
 * suspect/original, rotation counter-clockwise). */
static void test_scale_and_rotation(void)
{
    static const struct {
        const char *spec;
        double scale, rot;
        int flip;
    } cases[] = {
        {"scale:0.5,jpeg:q=75", 0.5, 0, 0},   {"scale:1.5", 1.5, 0, 0},
        {"rotate:-5,jpeg:q=80", 1, -5, 0},    {"rotate:3", 1, 3, 0},
        {"scale:0.7,rotate:2", 0.7, 2, 0},    {"turn:90,scale:0.8", 0.8, 90, 0},
        {"flip:h,rotate:4", 1, 4, 1},         {"scale:0.4,jpeg:q=85", 0.4, 0, 0},
        {"crop:256x256+301+177,jpeg:q=85", 1, 0, 0},
    };
    marked_photo mp;
    marked_photo_open("mate_Dune.jpg", &mp);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        for (int m = 0; m < 2; m++) { /* the marked copy, then the unmarked original */
            tm_trace_result r;
            trace_attacked(&mp, cases[k].spec, m, &r);
            if (!m) {
                int ok = leaker_accused(&r);
                int geom = fabs(r.scale / cases[k].scale - 1) < 0.02 && fabs(r.rotation_deg - cases[k].rot) < 0.5 &&
                           r.flip == cases[k].flip;
                printf("\n    %-22s %s log10_p %.1f, scale %.3f rotation %.2f flip %d", cases[k].spec,
                       ok ? "accused" : "MISSED", r.n_accused ? r.accused[0].log10_p : 0.0, r.scale, r.rotation_deg,
                       r.flip);
                CU_ASSERT(ok);
                CU_ASSERT(geom);
            }
            tm_trace_result_clear(&r);
        }
    }
    printf("\n");
    marked_photo_close(&mp);
}

/* A small suspect at its marked geometry reports exactly the identity under
 * every key: a lattice estimate a hair off it (0.05% in scale, 0.02 degree
 * on a 640x427 photo) moves no pixel by half a pixel and is the same
 * hypothesis. Before that rule, one key in about 20-40 reported it. */
static void test_identity_on_small_suspects(void)
{
    tm_image *orig = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_load(tm_test_corpus("skimage_rocket.jpg"), NULL, &orig, NULL), TM_OK);
    int off = 0;
    for (int k = 0; k < 40; k++) {
        tm_key *key = make_key((uint8_t)(100 + k));
        tm_embedder *e = NULL;
        tm_image *m = NULL;
        CU_ASSERT_EQUAL_FATAL(tm_embedder_create(key, orig, NULL, &e), TM_OK);
        CU_ASSERT_EQUAL_FATAL(tm_embedder_mark(e, "bob", &m), TM_OK);
        tm_trace_result r;
        CU_ASSERT_EQUAL_FATAL(tm_trace_run(key, m, NULL, 0, NULL, &r), TM_OK);
        off += r.scale != 1 || r.rotation_deg != 0 || r.aspect != 1 || r.flip;
        tm_trace_result_clear(&r);
        tm_image_free(m);
        tm_embedder_free(e);
        tm_key_free(key);
    }
    CU_ASSERT_EQUAL(off, 0);
    tm_image_free(orig);
}

/* Weak marks on smooth photos: low JPEG quality at the plain size and after
 * the commonest resizes (half, three quarters), where a tile period that is
 * a multiple of the 8-pixel JPEG block would fold the block artefacts onto
 * the mark (docs/scheme.md section 2), and where the pilot's peak is near
 * chance level, so the alignment is chosen by pilot and payload energy. */
static void test_weak_marks(void)
{
    static const char *photos[] = {"mate_Storm.jpg", "plasma_DarkestHour.jpg"};
    static const char *specs[] = {"scale:0.5,jpeg:q=50", "jpeg:q=12", "scale:0.75,jpeg:q=40", "scale:0.7,jpeg:q=35"};
    for (size_t p = 0; p < sizeof photos / sizeof photos[0]; p++) {
        marked_photo mp;
        marked_photo_open(photos[p], &mp);
        for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++)
            for (int m = 0; m < 2; m++) { /* the marked copy, then the unmarked original */
                tm_trace_result r;
                trace_attacked(&mp, specs[k], m, &r);
                if (!m) {
                    int ok = leaker_accused(&r);
                    printf("\n    %-22s %-20s %s log10_p %.1f, pilot z %.1f, scale %.3f", photos[p], specs[k],
                           ok ? "accused" : "MISSED", r.n_accused ? r.accused[0].log10_p : 0.0, r.pilot_z, r.scale);
                    CU_ASSERT(ok);
                }
                tm_trace_result_clear(&r);
            }
        marked_photo_close(&mp);
    }
    printf("\n");
}

/* Large originals carry an enlarged tile (tm_mark_tile_scale): copies as
 * marked, crops of them, and screen-sized copies all trace, and the scale
 * reported against the original is the copy's. */
static void test_large_original(void)
{
    CU_ASSERT_EQUAL(tm_mark_tile_scale(1920, 1080), 1);
    CU_ASSERT_EQUAL(tm_mark_tile_scale(1080, 3839), 1);
    CU_ASSERT_EQUAL(tm_mark_tile_scale(3840, 100), 2);
    CU_ASSERT_EQUAL(tm_mark_tile_scale(6399, 4000), 2);
    CU_ASSERT_EQUAL(tm_mark_tile_scale(6400, 4000), 3);
    CU_ASSERT_EQUAL(tm_mark_tile_scale(65500, 65500), 4);
    static const struct {
        const char *spec;
        double scale;
    } cases[] = {
        {"png", 1},
        {"screenshot", 1280.0 / 4352},
        {"crop:512x512+1900+1000,jpeg:q=85", 1},
        {"scale:0.5,rotate:3,jpeg:q=75", 0.5},
    };
    marked_photo mp;
    marked_photo_open("lomiri_Bridge_by_Sander_Klootwijk.jpg", &mp);
    CU_ASSERT_EQUAL(tm_mark_tile_scale(mp.orig->width, mp.orig->height), 2);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (int m = 0; m < 2; m++) { /* the marked copy, then the unmarked original */
            tm_trace_result r;
            trace_attacked(&mp, cases[k].spec, m, &r);
            if (!m) {
                int ok = leaker_accused(&r);
                tm_trace_result_set_original(&r, mp.orig->width, mp.orig->height);
                printf("\n    %-34s %s log10_p %.1f, scale %.3f", cases[k].spec, ok ? "accused" : "MISSED",
                       r.n_accused ? r.accused[0].log10_p : 0.0, r.scale);
                CU_ASSERT(ok);
                CU_ASSERT(fabs(r.scale / cases[k].scale - 1) < 0.02);
            }
            tm_trace_result_clear(&r);
        }
    printf("\n");
    marked_photo_close(&mp);
}

/* A JPEG original marked as stored (tm_embedder_create_data): the same file
 * gives the same image id every time; its JPEG copy carries the same change
 * of luminance as the float path's copy, with the chroma as stored, and is
 * traced to its recipient alone; a PNG copy of it is the float path's copy
 * exactly. */
static void test_jpeg_marked_as_stored(void)
{
    uint8_t *jpg = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(tm_file_read(tm_test_corpus("skimage_rocket.jpg"), 1 << 26, &jpg, &len), TM_OK);
    tm_embedder *e = NULL, *e2 = NULL;
    tm_image_info info;
    CU_ASSERT_EQUAL_FATAL(tm_embedder_create_data(key_a, jpg, len, NULL, NULL, &e, &info), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_embedder_create_data(key_a, jpg, len, NULL, NULL, &e2, NULL), TM_OK);
    CU_ASSERT_STRING_EQUAL(tm_embedder_image_id(e), tm_embedder_image_id(e2));
    CU_ASSERT_EQUAL(tm_embedder_phash(e), tm_embedder_phash(e2));
    int w, h;
    tm_embedder_size(e, &w, &h);
    CU_ASSERT_EQUAL(w, info.width);
    CU_ASSERT_EQUAL(h, info.height);

    tm_image *orig = NULL, *fl = NULL, *copy = NULL, *png = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_decode(jpg, len, NULL, &orig, NULL), TM_OK);
    /* The perceptual hash of the stored luminance is that of the pixels, or nearly. */
    uint64_t ph;
    CU_ASSERT_EQUAL(tm_image_phash(orig, &ph), TM_OK);
    CU_ASSERT(__builtin_popcountll(ph ^ tm_embedder_phash(e)) <= 2);

    tm_save_options so;
    tm_save_options_init(&so);
    so.format = TM_FORMAT_JPEG;
    so.quality = 95;
    so.subsampling = info.subsampling;
    uint8_t *data = NULL;
    size_t dlen = 0;
    CU_ASSERT_EQUAL_FATAL(tm_embedder_mark_encode(e, "leaker@example.com", &so, &data, &dlen), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_image_decode(data, dlen, NULL, &copy, NULL), TM_OK);
    free(data);
    CU_ASSERT_EQUAL_FATAL(tm_embedder_mark(e, "leaker@example.com", &fl), TM_OK);
    /* The luminance change of the JPEG copy against the float copy's. */
    size_t n = (size_t)w * h;
    float *y0 = malloc(n * sizeof(float)), *y1 = malloc(n * sizeof(float)), *y2 = malloc(n * sizeof(float));
    CU_ASSERT_PTR_NOT_NULL_FATAL(y0 && y1 && y2);
    tm_luma(orig, y0);
    tm_luma(copy, y1);
    tm_luma(fl, y2);
    double sab = 0, saa = 0, sbb = 0;
    for (size_t i = 0; i < n; i++) {
        double a = y1[i] - y0[i], b = y2[i] - y0[i];
        sab += a * b;
        saa += a * a;
        sbb += b * b;
    }
    double corr = sab / sqrt(saa * sbb);
    if (corr <= 0.8) fprintf(stderr, "JPEG copy against float copy: correlation %.3f\n", corr);
    CU_ASSERT(corr > 0.8);
    free(y0);
    free(y1);
    free(y2);

    /* Traced to its recipient as it is and through attacks. */
    fake_registry reg;
    fake_registry_fill(&reg, e);
    static const char *specs[] = {NULL, "jpeg:q=50", "scale:0.6,jpeg:q=75", "crop:0.6,rotate:3"};
    for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
        tm_image *sus = specs[k] ? tm_test_attack(specs[k], copy) : copy;
        CU_ASSERT_PTR_NOT_NULL_FATAL(sus);
        tm_trace_result r;
        CU_ASSERT_EQUAL_FATAL(tm_trace_run(key_a, sus, reg.copies, reg.n, NULL, &r), TM_OK);
        if (r.n_accused != 1 || r.accused[0].index != 0)
            fprintf(stderr, "JPEG copy marked as stored, %s: %zu accused\n", specs[k] ? specs[k] : "as is", r.n_accused);
        CU_ASSERT_EQUAL(r.n_accused, 1);
        if (r.n_accused >= 1) CU_ASSERT_EQUAL(r.accused[0].index, 0);
        tm_trace_result_clear(&r);
        if (sus != copy) tm_image_free(sus);
    }
    fake_registry_free(&reg);

    so.format = TM_FORMAT_PNG;
    CU_ASSERT_EQUAL_FATAL(tm_embedder_mark_encode(e, "leaker@example.com", &so, &data, &dlen), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_image_decode(data, dlen, NULL, &png, NULL), TM_OK);
    free(data);
    quantise(fl);
    for (int c = 0; c < fl->channels; c++)
        for (size_t i = 0; i < n; i++) fl->plane[c][i] = fminf(255.0f, fmaxf(0.0f, fl->plane[c][i]));
    CU_ASSERT_EQUAL(tm_test_maxdiff(png, fl), 0.0);

    tm_image_free(orig);
    tm_image_free(fl);
    tm_image_free(copy);
    tm_image_free(png);
    tm_embedder_free(e);
    tm_embedder_free(e2);
    free(jpg);
}

/* Copies made from several threads at once are those made one by one: a
 * JPEG original's stored-component copies, and PNG copies, whose float
 * original is decoded on first need by whichever thread asks first. */
#define N_WHO 6
#define N_THREADS 3
typedef struct copy_job {
    tm_embedder *e;
    const tm_save_options *so;
    int first;            /* recipients first, first + N_THREADS, ... */
    uint8_t *data[N_WHO];
    size_t len[N_WHO];
    tm_status st;
} copy_job;

static const char *who[N_WHO] = {"ann", "ben", "cy", "di", "ed", "flo"};

static void *copy_worker(void *arg)
{
    copy_job *j = arg;
    j->st = TM_OK;
    for (int i = j->first; i < N_WHO && j->st == TM_OK; i += N_THREADS)
        j->st = tm_embedder_mark_encode(j->e, who[i], j->so, &j->data[i], &j->len[i]);
    return NULL;
}

static void test_copies_from_threads(void)
{
    uint8_t *jpg = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(tm_file_read(tm_test_corpus("skimage_rocket.jpg"), 1 << 26, &jpg, &len), TM_OK);
    for (int fmt = 0; fmt < 2; fmt++) {
        tm_save_options so;
        tm_save_options_init(&so);
        so.format = fmt ? TM_FORMAT_PNG : TM_FORMAT_JPEG;
        so.quality = 85;
        tm_embedder *one = NULL, *many = NULL;
        CU_ASSERT_EQUAL_FATAL(tm_embedder_create_data(key_a, jpg, len, NULL, NULL, &one, NULL), TM_OK);
        CU_ASSERT_EQUAL_FATAL(tm_embedder_create_data(key_a, jpg, len, NULL, NULL, &many, NULL), TM_OK);
        uint8_t *ref[N_WHO];
        size_t ref_len[N_WHO];
        for (int i = 0; i < N_WHO; i++)
            CU_ASSERT_EQUAL_FATAL(tm_embedder_mark_encode(one, who[i], &so, &ref[i], &ref_len[i]), TM_OK);
        copy_job jobs[N_THREADS];
        pthread_t tid[N_THREADS];
        memset(jobs, 0, sizeof jobs);
        for (int t = 0; t < N_THREADS; t++) {
            jobs[t] = (copy_job){.e = many, .so = &so, .first = t};
            CU_ASSERT_EQUAL_FATAL(pthread_create(&tid[t], NULL, copy_worker, &jobs[t]), 0);
        }
        for (int t = 0; t < N_THREADS; t++) pthread_join(tid[t], NULL);
        int same = 0;
        for (int t = 0; t < N_THREADS; t++) {
            CU_ASSERT_EQUAL(jobs[t].st, TM_OK);
            for (int i = t; i < N_WHO; i += N_THREADS) {
                same += jobs[t].len[i] == ref_len[i] && jobs[t].data[i] && !memcmp(jobs[t].data[i], ref[i], ref_len[i]);
                free(jobs[t].data[i]);
            }
        }
        CU_ASSERT_EQUAL(same, N_WHO);
        /* and the copies differ from one recipient to the next */
        CU_ASSERT(ref_len[0] != ref_len[1] || memcmp(ref[0], ref[1], ref_len[0]) != 0);
        for (int i = 0; i < N_WHO; i++) free(ref[i]);
        tm_embedder_free(one);
        tm_embedder_free(many);
    }
    free(jpg);
}

/* FFTW plans are made once per shape and shared; every kind plans. */
static void test_plan_cache(void)
{
    fftwf_plan a = tm_fft_plan(TM_FFT_R2C, 125, 125), b = tm_fft_plan(TM_FFT_R2C, 125, 125);
    CU_ASSERT_PTR_NOT_NULL(a);
    CU_ASSERT_PTR_EQUAL(a, b);
    CU_ASSERT_PTR_NOT_EQUAL(a, tm_fft_plan(TM_FFT_C2R, 125, 125));
    CU_ASSERT_PTR_NOT_EQUAL(a, tm_fft_plan(TM_FFT_R2C, 250, 250));
    CU_ASSERT_PTR_NOT_NULL(tm_fft_plan(TM_FFT_DCT2, 32, 32));
    CU_ASSERT_PTR_NOT_NULL(tm_fft_plan(TM_FFT_DCT2_BLOCKS, 8, 8));
    CU_ASSERT_PTR_NULL(tm_fft_plan(TM_FFT_R2C, 0, 8));
    /* Two tile workspaces of one side run the shared plan on their own arrays. */
    tm_tile_fft *t1 = NULL, *t2 = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_tile_fft_create(&t1), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_tile_fft_create(&t2), TM_OK);
    float *s1 = tm_tile_fft_spatial(t1), *s2 = tm_tile_fft_spatial(t2);
    for (int i = 0; i < TM_TILE * TM_TILE; i++) {
        s1[i] = (float)(i % 17);
        s2[i] = (float)(i % 5);
    }
    tm_tile_fft_forward(t1);
    tm_tile_fft_forward(t2);
    double sum1 = 0, sum2 = 0;
    for (int i = 0; i < TM_TILE * TM_TILE; i++) {
        sum1 += i % 17;
        sum2 += i % 5;
    }
    CU_ASSERT_DOUBLE_EQUAL(tm_tile_fft_spectrum(t1)[0][0], sum1, 1e-3 * sum1);
    CU_ASSERT_DOUBLE_EQUAL(tm_tile_fft_spectrum(t2)[0][0], sum2, 1e-3 * sum2);
    tm_tile_fft_free(t1);
    tm_tile_fft_free(t2);
}

/* ---- accusation rounds: synthetic soft values, no image ------------------ */

#define ROUND_COPIES 3000

typedef struct round_pool {
    tm_reg_copy copies[ROUND_COPIES];
    uint8_t words[ROUND_COPIES][TM_CODEWORD_BYTES];
    char names[ROUND_COPIES][24];
    double p[TM_CODE_BITS];
} round_pool;

static round_pool *round_pool_new(const char *image_id)
{
    round_pool *r = calloc(1, sizeof *r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL_FATAL(tm_code_bias(key_a, image_id, r->p), TM_OK);
    for (size_t i = 0; i < ROUND_COPIES; i++) {
        snprintf(r->names[i], sizeof r->names[i], "r-%zu", i);
        CU_ASSERT_EQUAL_FATAL(tm_code_word(key_a, image_id, r->names[i], r->p, r->words[i]), TM_OK);
        r->copies[i] = (tm_reg_copy){.copy_id = (int64_t)i + 1, .image_id = image_id, .recipient = r->names[i],
                                     .code_len = TM_CODE_BITS, .codeword = r->words[i]};
    }
    return r;
}

/* Soft values of copies 0..k-1 mixed with amplitudes a[], plus unit noise. */
static void round_soft_values(const round_pool *r, const double *a, int k, gsl_rng *rng, tm_detection *det)
{
    memset(det, 0, sizeof *det);
    det->usable = 1;
    det->scale = det->aspect = 1;
    for (int i = 0; i < TM_CODE_BITS; i++) {
        double v = gsl_ran_gaussian(rng, 1.0);
        for (int j = 0; j < k; j++) v += a[j] * (((r->words[j][i >> 3] >> (i & 7)) & 1) ? 1.0 : -1.0);
        det->y[i] = v;
    }
}

/* Three colluders, one of them dominant: round 1 names the strong one and
 * the others' marks are buried under its own; once it is taken out, later
 * rounds name the other two. Every accusation of a later round is within
 * that round's share of the budget, and no innocent is ever accused. */
static void test_collusion_rounds(void)
{
    static const char image_id[] = "rounds-test-image";
    round_pool *r = round_pool_new(image_id);
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    gsl_rng_set(rng, 2718);
    const double a[3] = {1.5, 0.8, 0.8};
    const int trials = 40;
    int all3 = 0, later = 0;
    for (int t = 0; t < trials; t++) {
        tm_detection det;
        round_soft_values(r, a, 3, rng, &det);
        tm_trace_result res;
        CU_ASSERT_EQUAL_FATAL(tm_trace_score(key_a, &det, r->copies, ROUND_COPIES, NULL, &res), TM_OK);
        int named = 0, prev_round = 1;
        for (size_t i = 0; i < res.n_accused; i++) {
            const tm_accusation *acc = &res.accused[i];
            CU_ASSERT(acc->index < 3); /* a colluder, never an innocent */
            CU_ASSERT(acc->round >= prev_round && acc->round <= TM_TRACE_ROUNDS);
            prev_round = acc->round;
            int level = acc->round < TM_TRACE_ROUNDS ? acc->round : TM_TRACE_ROUNDS - 1;
            CU_ASSERT(acc->log10_p <= log10(ldexp(1e-6, -level)) + 1e-9);
            named += acc->index < 3;
            later += acc->round > 1;
        }
        for (size_t i = 0; i < res.n_top; i++) CU_ASSERT(res.top[i].round == 0);
        CU_ASSERT(res.n_accused >= 1 && res.accused[0].index == 0 && res.accused[0].round == 1);
        all3 += named == 3;
        if (tm_test_verbose())
            fprintf(stderr, "rounds trial %d: %zu accused, rounds %d %d %d\n", t, res.n_accused,
                    res.n_accused > 0 ? res.accused[0].round : 0, res.n_accused > 1 ? res.accused[1].round : 0,
                    res.n_accused > 2 ? res.accused[2].round : 0);
        tm_trace_result_clear(&res);
    }
    if (tm_test_verbose()) fprintf(stderr, "rounds: all three named in %d/%d, %d later-round accusations\n", all3, trials, later);
    CU_ASSERT(all3 >= trials * 9 / 10);
    CU_ASSERT(later >= trials); /* the weak two come from later rounds */
    gsl_rng_free(rng);
    free(r);
}

/* The budget holds over all rounds together. At a loose budget (0.2), with a
 * strong single leaker (so the later rounds run on nearly pure noise) and
 * with two colluders of middling strength, count the trials in which any
 * innocent is accused in any round: the bound says at most 20% of them. */
static void test_rounds_keep_the_budget(void)
{
    static const char image_id[] = "rounds-budget-image";
    round_pool *r = round_pool_new(image_id);
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    gsl_rng_set(rng, 1618);
    tm_trace_params tp;
    tm_trace_params_init(&tp);
    tp.fpr = 0.2;
    const int trials = 300;
    int false_trials = 0, later_rounds_run = 0;
    for (int t = 0; t < trials; t++) {
        const double a[2] = {t % 2 ? 1.5 : 0.5, 0.5};
        tm_detection det;
        round_soft_values(r, a, t % 2 ? 1 : 2, rng, &det);
        tm_trace_result res;
        CU_ASSERT_EQUAL_FATAL(tm_trace_score(key_a, &det, r->copies, ROUND_COPIES, &tp, &res), TM_OK);
        int innocent = 0;
        for (size_t i = 0; i < res.n_accused; i++) innocent |= res.accused[i].index >= (size_t)(t % 2 ? 1 : 2);
        false_trials += innocent;
        later_rounds_run += res.n_accused > 0;
        tm_trace_result_clear(&res);
    }
    if (tm_test_verbose())
        fprintf(stderr, "rounds at budget 0.2: innocents accused in %d/%d trials (%d with accusations)\n", false_trials,
                trials, later_rounds_run);
    CU_ASSERT(later_rounds_run >= trials / 2);
    CU_ASSERT(false_trials <= trials / 5 + 4 * sqrt(trials * 0.2 * 0.8));
    gsl_rng_free(rng);
    free(r);
}

static CU_TestInfo tests[] = {
    {"mark onto the original handed out", test_mark_onto},
    {"collusion: later rounds name the weaker colluders", test_collusion_rounds},
    {"collusion: the rounds keep the budget", test_rounds_keep_the_budget},
    {"scale and rotation", test_scale_and_rotation},
    {"identity on small suspects, every key", test_identity_on_small_suspects},
    {"large original: enlarged tile", test_large_original},
    {"weak marks: alignment by evidence", test_weak_marks},
    {"flips and quarter turns", test_flips_and_turns},
    {"zero strength round trip", test_zero_strength_roundtrip},
    {"deterministic, luminance only", test_deterministic_and_luma_only},
    {"JPEG original marked as stored", test_jpeg_marked_as_stored},
    {"FFT plans cached per shape", test_plan_cache},
    {"copies made from several threads are those made one by one", test_copies_from_threads},
    {"small or flat suspects are inconclusive", test_unreadable_suspects},
    {"astronaut: attacks, wrong key, unmarked", test_astronaut},
    {"coffee: attacks, wrong key, unmarked", test_coffee},
    {"rocket: attacks, wrong key, unmarked", test_rocket},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    key_a = make_key(1);
    key_b = make_key(2);
    int rc = tm_test_main("trace", tests);
    tm_key_free(key_a);
    tm_key_free(key_b);
    return rc;
}
