/* test_register.c -- informed trace: registration of attacked copies to
 * their original (scale, turn, mirror, crop, recompression, tone changes),
 * the difference image, and tracing through it. */
#include "testutil.h"
#include "scheme.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tm_image *load(const char *name)
{
    tm_image *img = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_load(tm_test_corpus(name), NULL, &img, NULL), TM_OK);
    return img;
}

static float *luma(const tm_image *img)
{
    float *y = malloc(sizeof(float) * (size_t)img->width * img->height);
    CU_ASSERT_PTR_NOT_NULL_FATAL(y);
    tm_luma(img, y);
    return y;
}

/* tm_register, then the check of the fine detail the difference makes. */
static void register_full(const float *yo, const tm_image *o, const float *ys, const tm_image *s, tm_registration *r)
{
    CU_ASSERT_EQUAL_FATAL(tm_register(yo, o->width, o->height, ys, s->width, s->height, r), TM_OK);
    if (!r->found) return;
    tm_image *d = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_register_difference(yo, o->width, o->height, ys, s->width, s->height, 1, r, &d), TM_OK);
    CU_ASSERT_EQUAL(d != NULL, r->found);
    tm_image_free(d);
}

/* Where the suspect's centre lands in the original, by the registration. */
static void centre_in_original(const tm_registration *r, const tm_image *s, double *x, double *y)
{
    double cx = 0.5 * (s->width - 1), cy = 0.5 * (s->height - 1);
    *x = r->affine[0] + r->affine[1] * cx + r->affine[2] * cy;
    *y = r->affine[3] + r->affine[4] * cx + r->affine[5] * cy;
}

typedef struct geo_case {
    const char *attack;
    double scale, rotation; /* expected suspect/original size, CCW turn */
    int flip;
    double cx, cy;          /* where the suspect's centre is in the original, as a share of its sides */
    double aspect;          /* width factor / height factor; 0 means 1 */
} geo_case;

static void check_cases(const char *photo, const geo_case *cases, size_t n)
{
    tm_image *orig = load(photo);
    float *yo = luma(orig);
    for (size_t i = 0; i < n; i++) {
        const geo_case *c = &cases[i];
        tm_image *sus = tm_test_attack(c->attack, orig);
        float *ys = luma(sus);
        tm_registration r;
        register_full(yo, orig, ys, sus, &r);
        double x, y;
        centre_in_original(&r, sus, &x, &y);
        double dx = x - c->cx * (orig->width - 1), dy = y - c->cy * (orig->height - 1);
        double drot = fmod(r.rotation_deg - c->rotation + 540, 360) - 180;
        double aspect = c->aspect > 0 ? c->aspect : 1;
        int ok = r.found && fabs(r.scale / c->scale - 1) < 0.01 && fabs(drot) < 0.5 && r.flip == c->flip &&
                 hypot(dx, dy) < 2.0 / c->scale && fabs(r.aspect / aspect - 1) < 0.01;
        if (!ok || tm_test_verbose())
            fprintf(stderr, "%s %s: found %d scale %.4f rot %.3f aspect %.4f flip %d ncc %.3f detail %.3f overlap %.2f "
                    "centre off by %.2f px\n", photo, c->attack, r.found, r.scale, r.rotation_deg, r.aspect, r.flip, r.ncc,
                    r.detail, r.overlap, hypot(dx, dy));
        CU_ASSERT(ok);
        free(ys);
        tm_image_free(sus);
    }
    free(yo);
    tm_image_free(orig);
}

static void test_geometry(void)
{
    static const geo_case cases[] = {
        {"jpeg:q=10", 1, 0, 0, 0.5, 0.5, 0},
        {"rotate:8,aspect:1.1,jpeg:q=80", 1.04881, 8, 0, 0.5, 0.5, 1.1}, /* stretched along the suspect's axes */
        {"scale:0.25", 0.25, 0, 0, 0.5, 0.5, 0},
        {"crop:0.32,jpeg:q=60", 1, 0, 0, 0.5, 0.5, 0},
        {"crop:400x300+900+100", 1, 0, 0, 1099.5 / 1679, 249.5 / 1049, 0},
        {"rotate:30,jpeg:q=70", 1, 30, 0, 0.5, 0.5, 0},
        {"rotate:-117:crop=0", 1, -117, 0, 0.5, 0.5, 0},
        {"scale:0.6,rotate:200", 0.6, -160, 0, 0.5, 0.5, 0},
        {"flip:h,rotate:12", 1, 12, 1, 0.5, 0.5, 0},
        {"scale:1.7,crop:0.4", 1.7, 0, 0, 0.5, 0.5, 0},
        {"screenshot:side=700,gamma:1.4,contrast:0.8", 700.0 / 1680, 0, 0, 0.5, 0.5, 0},
    };
    check_cases("mate_Dune.jpg", cases, sizeof cases / sizeof cases[0]);
}

/* An image that is not the original is not registered: a fit of its smooth
 * content can reach a high NCC, its detail does not follow. */
static void test_other_image(void)
{
    tm_image *a = load("mate_Dune.jpg"), *b = load("mate_Storm.jpg");
    float *ya = luma(a), *yb = luma(b);
    tm_registration r;
    register_full(ya, a, yb, b, &r);
    if (r.found || tm_test_verbose())
        fprintf(stderr, "other image: found %d ncc %.3f detail %.3f\n", r.found, r.ncc, r.detail);
    CU_ASSERT_FALSE(r.found);
    free(ya);
    free(yb);
    tm_image_free(a);
    tm_image_free(b);
}

/* ---- informed trace, end to end ------------------------------------------ */

#define N_COPIES 300

/* Informed trace names the leaker through attacks that leave blind trace
 * little (or nothing), accuses no innocent, and the unmarked original
 * through the same attack accuses nobody. Figures printed with
 * TM_TEST_VERBOSE. */
static void test_informed_trace(void)
{
    uint8_t kb[TM_KEY_BYTES];
    for (int i = 0; i < TM_KEY_BYTES; i++) kb[i] = (uint8_t)(i * 13 + 5);
    tm_key *key = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_key_from_bytes(kb, &key), TM_OK);
    tm_image *orig = load("mate_Dune.jpg"), *other = load("mate_Storm.jpg"), *marked = NULL;
    tm_embedder *e = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_embedder_create(key, orig, NULL, &e), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_embedder_mark(e, "r-0", &marked), TM_OK);
    static tm_reg_copy copies[N_COPIES];
    static uint8_t words[N_COPIES][TM_CODEWORD_BYTES];
    static char names[N_COPIES][16];
    for (int i = 0; i < N_COPIES; i++) {
        snprintf(names[i], sizeof names[i], "r-%d", i);
        CU_ASSERT_EQUAL_FATAL(tm_embedder_codeword(e, names[i], words[i]), TM_OK);
        copies[i] = (tm_reg_copy){.copy_id = i + 1, .image_id = tm_embedder_image_id(e), .recipient = names[i],
                                  .code_len = TM_CODEWORD_BYTES * 8, .codeword = words[i]};
    }
    static const char *attacks[] = {
        "jpeg:q=10",
        "scale:0.25,jpeg:q=50",
        "crop:0.32,jpeg:q=40",
        "rotate:37,jpeg:q=50",
        "rotate:-152:crop=0,scale:0.5,jpeg:q=60",
        "screenshot:side=800,gamma:1.2,screenshot:side=700:q=60",
    };
    const tm_image *originals[2] = {other, orig};
    for (size_t a = 0; a < sizeof attacks / sizeof attacks[0]; a++) {
        tm_image *sus = tm_test_attack(attacks[a], marked), *null = tm_test_attack(attacks[a], orig);
        tm_trace_result blind, inf, nul;
        CU_ASSERT_EQUAL_FATAL(tm_trace_run(key, sus, copies, N_COPIES, NULL, &blind), TM_OK);
        /* the wrong original first, once: it is tried and passed over */
        const tm_image *const *og = a == 0 ? originals : originals + 1;
        size_t nog = a == 0 ? 2 : 1;
        CU_ASSERT_EQUAL_FATAL(tm_trace_run_informed(key, sus, og, nog, copies, N_COPIES, NULL, &inf), TM_OK);
        CU_ASSERT_EQUAL_FATAL(tm_trace_run_informed(key, null, og, nog, copies, N_COPIES, NULL, &nul), TM_OK);
        int ok = inf.verdict == TM_VERDICT_ACCUSED && inf.n_accused == 1 && inf.accused[0].index == 0;
        if (!ok || tm_test_verbose())
            fprintf(stderr, "%-50s blind %s %.1f | informed (original %d, ncc %.3f, residual %.1f) %s %.1f | null %s\n",
                    attacks[a], blind.n_accused ? "accused" : "-", blind.n_accused ? blind.accused[0].log10_p : 0,
                    inf.original, inf.registration.ncc, inf.registration.residual, inf.n_accused ? "accused" : "-",
                    inf.n_accused ? inf.accused[0].log10_p : 0, nul.n_accused ? "ACCUSED" : "none");
        CU_ASSERT(ok);
        CU_ASSERT_EQUAL(inf.original, (int)nog - 1);
        CU_ASSERT(inf.informed && inf.registration.found);
        for (size_t k = 0; k < inf.n_accused; k++) CU_ASSERT_EQUAL(inf.accused[k].index, 0);
        /* at least as strong as blind, where blind accuses */
        if (blind.n_accused && ok) CU_ASSERT(inf.accused[0].log10_p <= blind.accused[0].log10_p + 1);
        CU_ASSERT_EQUAL(nul.n_accused, 0);
        CU_ASSERT_NOT_EQUAL(nul.verdict, TM_VERDICT_ACCUSED);
        tm_trace_result_clear(&blind);
        tm_trace_result_clear(&inf);
        tm_trace_result_clear(&nul);
        tm_image_free(sus);
        tm_image_free(null);
    }
    /* only the wrong original: traced blind, said so */
    tm_image *sus = tm_test_attack("jpeg:q=50", marked);
    tm_trace_result r;
    CU_ASSERT_EQUAL_FATAL(tm_trace_run_informed(key, sus, originals, 1, copies, N_COPIES, NULL, &r), TM_OK);
    CU_ASSERT(r.informed && !r.registration.found && r.original == -1);
    CU_ASSERT(r.n_accused == 1 && r.accused[0].index == 0);
    tm_trace_result_clear(&r);
    tm_image_free(sus);
    tm_embedder_free(e);
    tm_image_free(marked);
    tm_image_free(orig);
    tm_image_free(other);
    tm_key_free(key);
}

static CU_TestInfo tests[] = {
    {"informed trace: stronger than blind, no false accusation", test_informed_trace},
    {"scale, turn, mirror, crop, tones", test_geometry},
    {"another image is not registered", test_other_image},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tm_test_main("register", tests);
}
