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
static void register_full(const tm_original *o, const tm_image *s, tm_registration *r)
{
    float *ys = luma(s);
    tm_reg_suspect rs;
    CU_ASSERT_EQUAL_FATAL(tm_reg_suspect_init(ys, s->width, s->height, &rs), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_register(o, &rs, r), TM_OK);
    if (r->found) {
        tm_image *d = NULL;
        CU_ASSERT_EQUAL_FATAL(tm_register_difference(o, &rs, r, &d), TM_OK);
        CU_ASSERT_EQUAL(d != NULL, r->found);
        tm_image_free(d);
    }
    tm_reg_suspect_free(&rs);
    free(ys);
}

static tm_original *prepare(const tm_image *img)
{
    tm_original *o = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_original_create(img, &o), TM_OK);
    return o;
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
    tm_original *o = prepare(orig);
    for (size_t i = 0; i < n; i++) {
        const geo_case *c = &cases[i];
        tm_image *sus = tm_test_attack(c->attack, orig);
        tm_registration r;
        register_full(o, sus, &r);
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
        tm_image_free(sus);
    }
    tm_original_free(o);
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
    tm_original *oa = prepare(a);
    tm_registration r;
    register_full(oa, b, &r);
    if (r.found || tm_test_verbose())
        fprintf(stderr, "other image: found %d ncc %.3f detail %.3f\n", r.found, r.ncc, r.detail);
    CU_ASSERT_FALSE(r.found);
    tm_original_free(oa);
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
    const tm_original *originals[2] = {prepare(other), prepare(orig)};
    for (size_t a = 0; a < sizeof attacks / sizeof attacks[0]; a++) {
        tm_image *sus = tm_test_attack(attacks[a], marked), *null = tm_test_attack(attacks[a], orig);
        tm_trace_result blind, inf, nul;
        CU_ASSERT_EQUAL_FATAL(tm_trace_run(key, sus, copies, N_COPIES, NULL, &blind), TM_OK);
        /* the wrong original first, once: it is tried and passed over */
        const tm_original *const *og = a == 0 ? originals : originals + 1;
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
    tm_original_free((tm_original *)originals[0]);
    tm_original_free((tm_original *)originals[1]);
    tm_image_free(marked);
    tm_image_free(orig);
    tm_image_free(other);
    tm_key_free(key);
}

/* ---- the prepared original ---------------------------------------------- */

/* tm_original_load gives the image id tm_embedder_load gives, for a JPEG
 * read as stored and for a PNG read as float planes, and refuses what is
 * not an image. */
static void test_original_id(void)
{
    uint8_t kb[TM_KEY_BYTES] = {7};
    tm_key *key = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_key_from_bytes(kb, &key), TM_OK);
    const char *names[] = {"mate_Dune.jpg", "skimage_coffee.png"};
    for (size_t i = 0; i < 2; i++) {
        const char *path = tm_test_corpus(names[i]);
        tm_embedder *e = NULL;
        tm_original *o = NULL;
        char id[TM_IMAGE_ID_LEN + 1] = "";
        CU_ASSERT_EQUAL_FATAL(tm_embedder_load(key, path, NULL, NULL, &e, NULL), TM_OK);
        CU_ASSERT_EQUAL_FATAL(tm_original_load(path, NULL, &o, id), TM_OK);
        CU_ASSERT_STRING_EQUAL(id, tm_embedder_image_id(e));
        int w, h, ew, eh;
        tm_original_size(o, &w, &h);
        tm_embedder_size(e, &ew, &eh);
        CU_ASSERT(w == ew && h == eh);
        tm_original_free(o);
        tm_embedder_free(e);
    }
    tm_original *o = NULL;
    CU_ASSERT_NOT_EQUAL(tm_original_load(tm_test_corpus("SOURCES.md"), NULL, &o, NULL), TM_OK);
    CU_ASSERT_PTR_NULL(o);
    CU_ASSERT_EQUAL(tm_original_load(tm_test_corpus("no-such-file.jpg"), NULL, &o, NULL), TM_ERR_IO);
    tm_image *tiny = NULL;
    CU_ASSERT_EQUAL_FATAL(tm_image_create(5, 5, 1, &tiny), TM_OK);
    CU_ASSERT_EQUAL(tm_original_create(tiny, &o), TM_ERR_DIMENSIONS);
    CU_ASSERT_PTR_NULL(o);
    tm_original_free(NULL);
    tm_image_free(tiny);
    tm_key_free(key);
}

/* Each level's map to full-size pixels is right: on a plane that is linear
 * in x and y, a box mean or a resampled pixel equals the plane at the
 * full-size position its map gives (inside, away from the clamped border),
 * within a twentieth of a level pixel (Lanczos taps sampled off-centre move
 * a ramp by a few hundredths; a map off by half a pixel would move it ten
 * times as far). */
static void test_level_maps(void)
{
    int w = 613, h = 419;
    float *v = malloc(sizeof(float) * (size_t)w * h);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) v[(size_t)y * w + x] = 20 + 0.25f * x + 0.125f * y;
    tm_level full = tm_level_view(v, w, h), box, a, b, c;
    tm_plane p = tm_plane_float(v, w, h);
    CU_ASSERT_EQUAL_FATAL(tm_level_box(&p, 3, &box), TM_OK);
    CU_ASSERT(box.w == w / 3 && box.h == h / 3);
    CU_ASSERT_EQUAL_FATAL(tm_level_resize(&full, 150, 103, &a), TM_OK);  /* box 4, then Lanczos */
    CU_ASSERT_EQUAL_FATAL(tm_level_resize(&box, 97, 66, &b), TM_OK);    /* a level of a level */
    CU_ASSERT_EQUAL_FATAL(tm_level_resample(&full, 260, 190, &c), TM_OK);
    const tm_level *lv[4] = {&box, &a, &b, &c};
    for (int k = 0; k < 4; k++) {
        const tm_level *l = lv[k];
        double worst = 0, tol = 0.05 * (0.25 * l->kx + 0.125 * l->ky); /* the ramp's rise over 1/20 pixel */
        for (int y = l->h / 8; y < l->h - l->h / 8; y++)
            for (int x = l->w / 8; x < l->w - l->w / 8; x++) {
                double fx = l->ox + l->kx * x, fy = l->oy + l->ky * y;
                worst = fmax(worst, fabs(l->v[(size_t)y * l->w + x] - (20 + 0.25 * fx + 0.125 * fy)));
            }
        if (worst > tol || tm_test_verbose())
            fprintf(stderr, "level %d (%dx%d): worst %.4f, at most %.4f\n", k, l->w, l->h, worst, tol);
        CU_ASSERT(worst <= tol);
    }
    tm_level_free(&box);
    tm_level_free(&a);
    tm_level_free(&b);
    tm_level_free(&c);
    tm_level_free(&full); /* borrowed: its pixels stay */
    CU_ASSERT_EQUAL(v[0], 20.0f);
    free(v);
}

/* FFT canvas sizes: at least n, of the ladder 2^k x {1, 5/4, 3/2}, and the
 * least such. */
static void test_good_size(void)
{
    for (int n = 1; n < 5000; n++) {
        int g = tm_fft_good_size(n), m = g;
        CU_ASSERT(g >= n && g >= 16);
        while (m % 2 == 0) m /= 2;
        CU_ASSERT(m == 1 || m == 3 || m == 5);
        for (int s = n < 16 ? 16 : n; s < g; s++) {
            int t = s;
            while (t % 2 == 0) t /= 2;
            int on_ladder = (t == 1 || (t == 3 && s >= 24) || (t == 5 && s >= 20));
            CU_ASSERT_FALSE(on_ladder);
        }
    }
}

static CU_TestInfo tests[] = {
    {"informed trace: stronger than blind, no false accusation", test_informed_trace},
    {"scale, turn, mirror, crop, tones", test_geometry},
    {"another image is not registered", test_other_image},
    {"the prepared original: image id, errors", test_original_id},
    {"levels map back to full-size pixels", test_level_maps},
    {"FFT canvas sizes", test_good_size},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tm_test_main("register", tests);
}
