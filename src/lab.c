/* lab.c -- the robustness sweep engine behind `tracemark robustness`.
 *
 * A sweep takes a corpus of images and a grid of attacks. For each image it
 * analyses the original once, synthesises a registry of N copies from their
 * codewords (no registry file: trace only needs the codewords), marks the
 * copies of L leakers, and for every attack traces the attacked leaked copy
 * under the key (a "leak" trial), the same suspect traced with another key
 * against the registry that key would have made (its codewords drawn under
 * it: a suspect carrying someone else's mark), and the unmarked original
 * through the same attack (the two "null" trials, where any accusation is a
 * false one). Each trace becomes one tm_lab_trial.
 *
 * An attack is a pipeline of stages separated by '|': a tracemark chain
 * (tm_attack_apply), "none", or ImageMagick's convert on the image handed
 * over as a binary PNM ("im:ARGS" reads a PNG back, "imjpg:ARGS" a JPEG), so
 * results need not hinge on tracemark's own resampler. A first stage
 * "collude:C:SPEC" makes the suspect from C marked copies (the leaked copy
 * and the next C-1) with tm_attack_combine's SPEC ("average,jpeg:q=85"):
 * such a trial is traced once per image, and counts the colluders accused. convert is started
 * with posix_spawnp, its arguments split on blanks (quotes group), no shell.
 *
 * Parallelism is by fork()ed worker processes, one image at a time each,
 * largest files first, each worker in its own process group so the parent
 * can end a worker together with a convert it started. Processes rather than
 * threads because: a 20 MP image needs ~1 GB at its peak and a process gives
 * all of it back when the image is done; a crash or an out-of-memory kill in
 * one image ends one worker, which the parent reports, not the whole sweep;
 * the libraries underneath (FFTW's planner, libjpeg error managers, GSL's
 * handler) keep their process-global state to themselves; and no locking is
 * needed because nothing is shared. Workers send fixed-size records (and a
 * few thumbnails) to the parent over a socket pair each; the parent keeps
 * everything and sorts the trials at the end, so the result does not depend
 * on the number of workers or their timing.
 *
 * The report (report.c) reads the lab through the accessors below and the
 * internal ones in internal.h. */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "internal.h"
#include "scheme.h"

extern char **environ;

/* ---- grids ----------------------------------------------------------------- */

struct tm_lab_grid {
    size_t n;
    char **spec;
};

/* The default grid: the distortions of tm_attack_apply at a few strengths
 * each, in families the report draws as curves, kept small enough that the
 * bundled corpus runs in a few minutes on two cores. */
static const char default_grid[] =
    "# tracemark robustness: the default attack grid, one of each kind of\n"
    "# distortion (a few strengths for the main families), sized so the bundled\n"
    "# corpus runs in a few minutes on two cores. An attack is a pipeline of\n"
    "# stages separated by '|' (tracemark attack chains; im:/imjpg: run\n"
    "# ImageMagick); attacks differing in one number become a curve.\n"
    "#\n"
    "# the copy as handed out (8-bit, lossless)\n"
    "none\n"
    "# recompression\n"
    "jpeg:q=50\n"
    "jpeg:q=30\n"
    "jpeg:q=10\n"
    "webp:q=75\n"
    "# resizing\n"
    "scale:0.35\n"
    "scale:0.5\n"
    "scale:2\n"
    "# centred crops (the fraction of each side kept), an off-centre corner\n"
    "crop:0.7\n"
    "crop:0.5\n"
    "im:-gravity northwest -crop 50%x50%+0+0 +repage\n"
    "# rotation with the borders cropped, mirror and quarter turn, stretch\n"
    "rotate:2:crop=1\n"
    "rotate:5:crop=1\n"
    "flip:h,turn:90\n"
    "aspect:0.9\n"
    "# filters and noise\n"
    "blur:sigma=1.5\n"
    "median:r=1,sharpen:amount=2\n"
    "noise:sigma=8:seed=7\n"
    "noise:sigma=16:seed=7\n"
    "# tone, colour and palette\n"
    "gamma:1.5,brightness:-20,contrast:0.8,saturation:0.5,quantize:colors=64\n"
    "# StirMark bending, a screen capture, a chain\n"
    "bend:strength=3\n"
    "screenshot\n"
    "crop:0.6,scale:0.6,jpeg:q=60\n"
    "# collusion: 2 and 3 copies averaged, 2 pieced together, then JPEG q85\n"
    "collude:2:average,jpeg:q=85\n"
    "collude:3:average,jpeg:q=85\n"
    "collude:2:interleave,jpeg:q=85\n";

const char *tm_lab_grid_default_text(void)
{
    return default_grid;
}


/* s[0..len) without leading and trailing blanks: *start and the new length. */
static size_t trim(const char *s, size_t len, const char **start)
{
    while (len && isspace((unsigned char)*s)) s++, len--;
    while (len && isspace((unsigned char)s[len - 1])) len--;
    *start = s;
    return len;
}

#define COLLUDE "collude:"
#define MAX_COLLUDERS 16

/* The number of copies a stage "collude:C:SPEC" (stage[0..len)) combines,
 * with *combine pointing at SPEC: 0 when the stage is not one, -1 when it is
 * malformed. */
static int collude_stage(const char *stage, size_t len, const char **combine)
{
    size_t k = strlen(COLLUDE);
    if (len < k || strncmp(stage, COLLUDE, k)) return 0;
    int c = 0;
    size_t i = k;
    while (i < len && isdigit((unsigned char)stage[i]) && c <= MAX_COLLUDERS) c = 10 * c + (stage[i++] - '0');
    if (i == k || i >= len || stage[i] != ':' || i + 1 == len || c < 2 || c > MAX_COLLUDERS) return -1;
    *combine = stage + i + 1;
    return c;
}

/* The copies an attack combines: C for "collude:C:...", else 1. */
static int colluders_of(const char *spec)
{
    const char *st, *combine;
    size_t len = trim(spec, strcspn(spec, "|"), &st);
    int c = collude_stage(st, len, &combine);
    return c > 1 ? c : 1;
}

/* Checks the pipeline shape of one attack: no empty stage, ImageMagick
 * stages with arguments, "none" alone, "collude:C:SPEC" first. */
static tm_status check_shape(const char *spec, char *err, size_t errlen)
{
    const char *s = spec;
    int n_stages = 0, has_none = 0;
    for (;;) {
        const char *bar = strchr(s, '|'), *st, *combine;
        size_t len = trim(s, bar ? (size_t)(bar - s) : strlen(s), &st);
        if (len == 0) return tm_fail_arg(err, errlen, "attack '%s': empty stage", spec);
        int c = collude_stage(st, len, &combine);
        if (c < 0)
            return tm_fail_arg(err, errlen, "attack '%s': want collude:C:SPEC with C copies, 2..%d, and a combine spec "
                               "(collude:3:average,jpeg:q=85)", spec, MAX_COLLUDERS);
        if (c > 0 && n_stages > 0)
            return tm_fail_arg(err, errlen, "attack '%s': collude:C:SPEC can only be the first stage", spec);
        if ((len == 3 && !strncmp(st, "im:", 3)) || (len == 6 && !strncmp(st, "imjpg:", 6)))
            return tm_fail_arg(err, errlen, "attack '%s': an ImageMagick stage wants convert arguments (im:-resize 50%%)", spec);
        if (len == 4 && !strncmp(st, "none", 4)) has_none = 1;
        n_stages++;
        if (!bar) break;
        s = bar + 1;
    }
    if (has_none && n_stages > 1) return tm_fail_arg(err, errlen, "attack '%s': 'none' is an attack of its own, not a stage", spec);
    return TM_OK;
}

tm_status tm_lab_grid_parse(const char *text, tm_lab_grid **out, char *err, size_t errlen)
{
    if (err && errlen) err[0] = 0;
    if (!text || !out) return TM_ERR_ARG;
    *out = NULL;
    tm_lab_grid *g = calloc(1, sizeof *g);
    if (!g) return TM_ERR_NOMEM;
    tm_status st = TM_OK;
    size_t cap = 0;
    const char *s = text;
    while (*s) {
        size_t llen = strcspn(s, "\n");
        const char *line;
        size_t len = trim(s, llen, &line);
        if (len && *line != '#') {
            /* ';' separates attacks within a line */
            const char *p = line, *end = line + len;
            while (p <= end) {
                const char *semi = memchr(p, ';', (size_t)(end - p));
                const char *a;
                size_t alen = trim(p, semi ? (size_t)(semi - p) : (size_t)(end - p), &a);
                if (alen) {
                    if (g->n == cap) {
                        size_t nc = cap ? 2 * cap : 16;
                        char **grown = realloc(g->spec, nc * sizeof *grown);
                        if (!grown) {
                            st = TM_ERR_NOMEM;
                            goto out;
                        }
                        g->spec = grown;
                        cap = nc;
                    }
                    char *copy = malloc(alen + 1);
                    if (!copy) {
                        st = TM_ERR_NOMEM;
                        goto out;
                    }
                    memcpy(copy, a, alen);
                    copy[alen] = 0;
                    g->spec[g->n++] = copy;
                    if ((st = check_shape(copy, err, errlen)) != TM_OK) goto out;
                }
                if (!semi) break;
                p = semi + 1;
            }
        }
        s += llen;
        if (*s == '\n') s++;
    }
    if (g->n == 0) st = tm_fail_arg(err, errlen, "the attack grid is empty");
out:
    if (st != TM_OK) {
        tm_lab_grid_free(g);
        return st;
    }
    *out = g;
    return TM_OK;
}

void tm_lab_grid_free(tm_lab_grid *g)
{
    if (!g) return;
    for (size_t i = 0; i < g->n; i++) free(g->spec[i]);
    free(g->spec);
    free(g);
}

size_t tm_lab_grid_size(const tm_lab_grid *g)
{
    return g ? g->n : 0;
}

const char *tm_lab_grid_attack(const tm_lab_grid *g, size_t i)
{
    return g && i < g->n ? g->spec[i] : NULL;
}

static tm_status grid_copy(const tm_lab_grid *src, tm_lab_grid **out)
{
    tm_lab_grid *g = calloc(1, sizeof *g);
    if (!g) return TM_ERR_NOMEM;
    g->spec = calloc(src->n ? src->n : 1, sizeof *g->spec);
    if (!g->spec) {
        free(g);
        return TM_ERR_NOMEM;
    }
    for (; g->n < src->n; g->n++)
        if (!(g->spec[g->n] = strdup(src->spec[g->n]))) {
            tm_lab_grid_free(g);
            return TM_ERR_NOMEM;
        }
    *out = g;
    return TM_OK;
}

/* ---- applying an attack ---------------------------------------------------- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* img's colour channels as a binary PGM/PPM (8-bit, rounded): the cheapest
 * lossless hand-over to convert for images of tens of megapixels. */
static tm_status write_pnm(const tm_image *img, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f) return TM_ERR_IO;
    int ch = img->channels >= 3 ? 3 : 1;
    unsigned char *row = malloc((size_t)img->width * ch);
    int ok = row && fprintf(f, "P%d\n%d %d\n255\n", ch == 3 ? 6 : 5, img->width, img->height) > 0;
    for (size_t y = 0; ok && y < (size_t)img->height; y++) {
        for (size_t x = 0; x < (size_t)img->width; x++)
            for (int c = 0; c < ch; c++) row[x * ch + c] = tm_to_u8(img->plane[c][y * img->width + x]);
        ok = fwrite(row, (size_t)ch, (size_t)img->width, f) == (size_t)img->width;
    }
    free(row);
    if (fclose(f) != 0) ok = 0;
    if (!ok) return row ? TM_ERR_IO : TM_ERR_NOMEM;
    return TM_OK;
}

#define MAX_IM_ARGS 64

/* Splits s in place into words at blanks; '...' and "..." group (quotes
 * dropped). Returns the number of words, -1 when too many or a quote is open. */
static int split_words(char *s, char **words, int max)
{
    int n = 0;
    char *w = s;
    while (*s) {
        while (isspace((unsigned char)*s)) s++;
        if (!*s) break;
        if (n == max) return -1;
        words[n++] = w;
        while (*s && !isspace((unsigned char)*s)) {
            if (*s == '\'' || *s == '"') {
                char q = *s++;
                while (*s && *s != q) *w++ = *s++;
                if (*s != q) return -1;
                s++;
            } else {
                *w++ = *s++;
            }
        }
        if (*s) s++;
        *w++ = 0;
    }
    return n;
}

/* The first line of a small text file into buf ("" when unreadable). */
static void first_line(const char *path, char *buf, size_t cap)
{
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    if (fgets(buf, (int)cap, f)) buf[strcspn(buf, "\r\n")] = 0;
    fclose(f);
}

/* in through ImageMagick: convert DIR/in.pnm ARGS DIR/out.(png|jpg), read back. */
static tm_status magick(const char *args, int jpeg, const tm_image *in, const char *dir, tm_image **out, char *err,
                        size_t errlen)
{
    char src[4096], dst[4096], log[4096];
    snprintf(src, sizeof src, "%s/in.pnm", dir);
    snprintf(dst, sizeof dst, "%s/out.%s", dir, jpeg ? "jpg" : "png");
    snprintf(log, sizeof log, "%s/convert.log", dir);
    char *words = strdup(args);
    char *argv[MAX_IM_ARGS + 8];
    tm_status st = TM_ERR_NOMEM;
    posix_spawn_file_actions_t fa;
    int fa_ok = 0;
    if (!words) goto out;
    int n = split_words(words, argv + 2, MAX_IM_ARGS);
    if (n < 0) {
        st = tm_fail_arg(err, errlen, "convert arguments '%s': unbalanced quote or more than %d words", args, MAX_IM_ARGS);
        goto out;
    }
    argv[0] = (char *)"convert";
    argv[1] = src;
    int k = n + 2;
    if (!jpeg) {
        argv[k++] = (char *)"-define";
        argv[k++] = (char *)"png:compression-level=1";
    }
    argv[k++] = dst;
    argv[k] = NULL;
    if ((st = write_pnm(in, src)) != TM_OK) {
        tm_fail_arg(err, errlen, "cannot write %s: %s", src, tm_strerror(st));
        goto out;
    }
    unlink(dst);
    if (posix_spawn_file_actions_init(&fa) != 0) goto out;
    fa_ok = 1;
    if (posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0600) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, 1, 2) != 0)
        goto out;
    pid_t pid;
    int rc = posix_spawnp(&pid, "convert", &fa, NULL, argv, environ);
    if (rc != 0) {
        st = tm_fail_arg(err, errlen, "cannot run ImageMagick's convert (%s): install imagemagick", strerror(rc));
        goto out;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            st = tm_fail_arg(err, errlen, "waiting for convert: %s", strerror(errno));
            goto out;
        }
    if (WIFSIGNALED(status)) {
        st = tm_fail_arg(err, errlen, "convert killed by signal %d", WTERMSIG(status));
        goto out;
    }
    if (WEXITSTATUS(status) != 0) {
        char line[256];
        first_line(log, line, sizeof line);
        st = tm_fail_arg(err, errlen, "convert %s: %s", args,
                  WEXITSTATUS(status) == 127 ? "ImageMagick's convert not found: install imagemagick"
                  : line[0]                  ? line
                                             : "failed");
        goto out;
    }
    st = tm_image_load(dst, NULL, out, NULL);
    if (st != TM_OK) tm_fail_arg(err, errlen, "convert %s: cannot read its output: %s", args, tm_strerror(st));
    unlink(dst);
out:
    if (fa_ok) posix_spawn_file_actions_destroy(&fa);
    unlink(src);
    free(words);
    return st;
}

/* Applies one attack (a '|' pipeline) to in[0], or for "collude:C:SPEC" to
 * in[0..C) (n_in of them given), giving a new *out; convert's files go in
 * dir. TM_ERR_ARG with the reason in err for a bad stage. */
static tm_status lab_attack(const char *spec, const tm_image *const *in, size_t n_in, const char *dir, tm_image **out,
                            char *err, size_t errlen)
{
    *out = NULL;
    char *copy = strdup(spec);
    if (!copy) return TM_ERR_NOMEM;
    tm_image *cur = NULL;
    tm_status st = TM_OK;
    char *save = NULL;
    for (char *stage = strtok_r(copy, "|", &save); stage; stage = strtok_r(NULL, "|", &save)) {
        const char *s;
        size_t len = trim(stage, strlen(stage), &s);
        stage[(s - stage) + len] = 0;
        const tm_image *src = cur ? cur : in[0];
        tm_image *next = NULL;
        const char *combine;
        int c = collude_stage(s, len, &combine);
        if (c > 0 && (size_t)c > n_in)
            st = tm_fail_arg(err, errlen, "collusion of %d copies, %zu at hand", c, n_in);
        else if (c > 0)
            st = tm_attack_combine(combine, in, (size_t)c, &next, err, errlen);
        else if (!strcmp(s, "none"))
            st = tm_image_clone(src, &next);
        else if (!strncmp(s, "im:", 3))
            st = magick(s + 3, 0, src, dir, &next, err, errlen);
        else if (!strncmp(s, "imjpg:", 6))
            st = magick(s + 6, 1, src, dir, &next, err, errlen);
        else
            st = tm_attack_apply(s, src, &next, err, errlen);
        tm_image_free(cur);
        cur = next;
        if (st != TM_OK) break;
    }
    free(copy);
    if (st != TM_OK) {
        tm_image_free(cur);
        return st;
    }
    *out = cur;
    return TM_OK;
}

/* ---- the lab ----------------------------------------------------------------- */

typedef struct lab_image_priv {
    tm_lab_image pub;
    char *path, *name;
    off_t file_size;
    tm_lab_thumb thumb[TM_LAB_THUMBS];
} lab_image_priv;

struct tm_lab {
    tm_lab_params params;
    char *tmp_dir, *showcase, *command;  /* owned copies of the params' strings */
    tm_lab_grid *grid;
    tm_key *own_key;                     /* the built-in key when none was given */
    const tm_key *key;
    tm_key *wrong_key;
    char fingerprint[17];
    char *scratch;                       /* private directory, removed by tm_lab_free */
    lab_image_priv *img;
    size_t n_img, cap_img;
    tm_lab_trial *trial;
    size_t n_trial, cap_trial;
    int ran, complete;
    double wall_ms;
    size_t progress_done, progress_total;
    tm_lab_progress_fn progress;
    void *progress_ud;
    int stop;                            /* the progress callback asked to stop */
    char errmsg[1024];
};

static tm_status lab_fail(tm_lab *lab, tm_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static tm_status lab_fail(tm_lab *lab, tm_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lab->errmsg, sizeof lab->errmsg, fmt, ap);
    va_end(ap);
    return st;
}

void tm_lab_params_init(tm_lab_params *p)
{
    memset(p, 0, sizeof *p);
    p->n_copies = 1000;
    p->n_leakers = 1;
    p->fpr = 1e-6;
    p->jobs = 1;
    p->null_traces = 1;
}

const char *tm_lab_errmsg(const tm_lab *lab)
{
    return lab ? lab->errmsg : "";
}

/* Removes path and, for a directory, everything under it (no symlink is
 * followed). 0 on success. */
static int remove_tree(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0) return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(sb.st_mode)) return unlink(path);
    DIR *d = opendir(path);
    if (!d) return -1;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        size_t len = strlen(path) + strlen(e->d_name) + 2;
        char *child = malloc(len);
        if (!child) {
            rc = -1;
            break;
        }
        snprintf(child, len, "%s/%s", path, e->d_name);
        if (remove_tree(child) != 0) rc = -1;
        free(child);
    }
    closedir(d);
    return rmdir(path) == 0 ? rc : -1;
}

/* A synthetic RGB probe with texture and gradients (deterministic), at least
 * w x h, for checking attacks before any real work. */
static tm_status probe_image(int w, int h, tm_image **out)
{
    tm_status st = tm_image_create(w, h, 3, out);
    if (st != TM_OK) return st;
    uint32_t s = 0x9e3779b9u;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                s ^= s << 13, s ^= s >> 17, s ^= s << 5;
                double v = 128 + 60 * sin(0.05 * x + c) * cos(0.07 * y) + (double)(s % 21) - 10;
                (*out)->plane[c][(size_t)y * w + x] = (float)v;
            }
    return TM_OK;
}

/* The smallest probe size on which every explicit crop window of spec
 * ("crop:WxH+X+Y") fits, at least 384 x 288. */
static void probe_size(const char *spec, int *w, int *h)
{
    *w = 384;
    *h = 288;
    for (const char *p = strstr(spec, "crop:"); p; p = strstr(p + 1, "crop:")) {
        int cw, ch, cx, cy;
        if (sscanf(p + 5, "%dx%d+%d+%d", &cw, &ch, &cx, &cy) == 4 && cw > 0 && ch > 0 && cx >= 0 && cy >= 0 &&
            cw + cx <= 16384 && ch + cy <= 16384) {
            if (cw + cx > *w) *w = cw + cx;
            if (ch + cy > *h) *h = ch + cy;
        }
    }
}

/* Runs every attack of the grid once on a probe image. */
static tm_status check_grid(tm_lab *lab)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/probe", lab->scratch);
    if (mkdir(dir, 0700) != 0) return lab_fail(lab, TM_ERR_IO, "%s: %s", dir, strerror(errno));
    tm_status st = TM_OK;
    for (size_t i = 0; i < lab->grid->n && st == TM_OK; i++) {
        const char *spec = lab->grid->spec[i];
        int w, h;
        probe_size(spec, &w, &h);
        tm_image *probe = NULL, *res = NULL;
        char err[512] = "";
        st = probe_image(w, h, &probe);
        const tm_image *copies[MAX_COLLUDERS];
        for (int k = 0; k < MAX_COLLUDERS; k++) copies[k] = probe;
        if (st == TM_OK) st = lab_attack(spec, copies, MAX_COLLUDERS, dir, &res, err, sizeof err);
        if (st != TM_OK && st != TM_ERR_NOMEM)
            st = lab_fail(lab, TM_ERR_ARG, "attack '%s': %s", spec, err[0] ? err : tm_strerror(st));
        tm_image_free(probe);
        tm_image_free(res);
    }
    remove_tree(dir);
    return st;
}

/* A key derived from a label: the built-in lab key, and wrong keys. */
static tm_status derive_key(const tm_key *from, const char *label, tm_key **out)
{
    uint8_t b[32];
    tm_status st = from ? tm_key_hmac(from, label, NULL, 0, b) : tm_sha256(label, strlen(label), b);
    if (st == TM_OK) st = tm_key_from_bytes(b, out);
    memset(b, 0, sizeof b);
    return st;
}

static char *dup_or_null(const char *s, int *nomem)
{
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *nomem = 1;
    return d;
}

tm_status tm_lab_create(const tm_lab_params *p, const tm_lab_grid *grid, const tm_key *key, tm_lab **out)
{
    if (!out) return TM_ERR_ARG;
    *out = NULL;
    tm_lab *lab = calloc(1, sizeof *lab);
    if (!lab) return TM_ERR_NOMEM;
    *out = lab;
    if (!p || !grid || grid->n == 0) return lab_fail(lab, TM_ERR_ARG, "no parameters or an empty attack grid");
    lab->params = *p;
    if (p->n_leakers < 1 || p->n_copies <= p->n_leakers || p->n_copies > 100000000)
        return lab_fail(lab, TM_ERR_ARG, "want at least one leaker and more copies than leakers (%zu copies, %zu leakers)",
                        p->n_copies, p->n_leakers);
    for (size_t a = 0; a < grid->n; a++)
        if ((size_t)colluders_of(grid->spec[a]) >= p->n_copies)
            return lab_fail(lab, TM_ERR_ARG, "attack '%s' combines %d copies: want more copies than that (%zu)",
                            grid->spec[a], colluders_of(grid->spec[a]), p->n_copies);
    if (!(p->fpr > 0 && p->fpr < 1)) return lab_fail(lab, TM_ERR_ARG, "the budget wants 0 < fpr < 1");
    if (p->jobs < 0 || p->jobs > 1024) return lab_fail(lab, TM_ERR_ARG, "jobs wants 0..1024");
    if (p->null_traces < 0 || p->null_traces > 2) return lab_fail(lab, TM_ERR_ARG, "null traces want 0, 1 or 2");
    if (!(p->strength >= 0 && p->strength <= 50)) return lab_fail(lab, TM_ERR_ARG, "strength wants 0..50 (0 = default)");
    int nomem = 0;
    lab->tmp_dir = dup_or_null(p->tmp_dir ? p->tmp_dir : "/tmp", &nomem);
    lab->showcase = dup_or_null(p->showcase, &nomem);
    lab->command = dup_or_null(p->command, &nomem);
    lab->params.tmp_dir = lab->tmp_dir;
    lab->params.showcase = lab->showcase;
    lab->params.command = lab->command;
    if (nomem || grid_copy(grid, &lab->grid) != TM_OK) return TM_ERR_NOMEM;
    tm_status st;
    if (!key) {
        if ((st = derive_key(NULL, "tracemark robustness lab key", &lab->own_key)) != TM_OK) return st;
        key = lab->own_key;
    }
    lab->key = key;
    if ((st = derive_key(key, "tracemark robustness lab: a wrong key", &lab->wrong_key)) != TM_OK) return st;
    if ((st = tm_key_fingerprint(key, lab->fingerprint)) != TM_OK) return st;
    size_t len = strlen(lab->tmp_dir) + 32;
    if (!(lab->scratch = malloc(len))) return TM_ERR_NOMEM;
    snprintf(lab->scratch, len, "%s/tm-robustness-XXXXXX", lab->tmp_dir);
    if (!mkdtemp(lab->scratch)) {
        st = lab_fail(lab, TM_ERR_IO, "%s: cannot make a scratch directory: %s", lab->scratch, strerror(errno));
        free(lab->scratch);
        lab->scratch = NULL;
        return st;
    }
    return check_grid(lab);
}

void tm_lab_free(tm_lab *lab)
{
    if (!lab) return;
    if (lab->scratch) remove_tree(lab->scratch);
    free(lab->scratch);
    for (size_t i = 0; i < lab->n_img; i++) {
        free(lab->img[i].path);
        free(lab->img[i].name);
        for (int k = 0; k < TM_LAB_THUMBS; k++) free(lab->img[i].thumb[k].data);
    }
    free(lab->img);
    free(lab->trial);
    tm_lab_grid_free(lab->grid);
    tm_key_free(lab->own_key);
    tm_key_free(lab->wrong_key);
    free(lab->tmp_dir);
    free(lab->showcase);
    free(lab->command);
    free(lab);
}

tm_status tm_lab_add_image(tm_lab *lab, const char *path)
{
    if (!lab || !path) return TM_ERR_ARG;
    if (lab->ran) return lab_fail(lab, TM_ERR_ARG, "the sweep has already run");
    if (lab->n_img >= UINT32_MAX - 1) return lab_fail(lab, TM_ERR_ARG, "too many images");
    struct stat sb;
    if (stat(path, &sb) != 0) return lab_fail(lab, TM_ERR_IO, "%s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return lab_fail(lab, TM_ERR_IO, "%s: not a regular file", path);
    if (lab->n_img == lab->cap_img) {
        size_t nc = lab->cap_img ? 2 * lab->cap_img : 32;
        lab_image_priv *g = realloc(lab->img, nc * sizeof *g);
        if (!g) return TM_ERR_NOMEM;
        lab->img = g;
        lab->cap_img = nc;
    }
    lab_image_priv *im = &lab->img[lab->n_img];
    memset(im, 0, sizeof *im);
    const char *slash = strrchr(path, '/');
    im->path = strdup(path);
    im->name = strdup(slash ? slash + 1 : path);
    if (!im->path || !im->name) {
        free(im->path);
        free(im->name);
        return TM_ERR_NOMEM;
    }
    im->file_size = sb.st_size;
    im->pub.path = im->path;
    im->pub.name = im->name;
    im->pub.psnr = im->pub.ssim = im->pub.mark_ms = NAN;
    lab->n_img++;
    return TM_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

tm_status tm_lab_add_dir(tm_lab *lab, const char *dir, size_t *n_added)
{
    if (n_added) *n_added = 0;
    if (!lab || !dir) return TM_ERR_ARG;
    DIR *d = opendir(dir);
    if (!d) return lab_fail(lab, TM_ERR_IO, "%s: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    tm_status st = TM_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || tm_format_from_path(e->d_name) == TM_FORMAT_UNKNOWN) continue;
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 32;
            char **g = realloc(names, nc * sizeof *g);
            if (!g) {
                st = TM_ERR_NOMEM;
                goto out;
            }
            names = g;
            cap = nc;
        }
        if (!(names[n] = strdup(e->d_name))) {
            st = TM_ERR_NOMEM;
            goto out;
        }
        n++;
    }
    if (n) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n && st == TM_OK; i++) {
        size_t len = strlen(dir) + strlen(names[i]) + 2;
        char *path = malloc(len);
        if (!path) {
            st = TM_ERR_NOMEM;
            break;
        }
        snprintf(path, len, "%s/%s", dir, names[i]);
        st = tm_lab_add_image(lab, path);
        free(path);
        if (st == TM_OK && n_added) (*n_added)++;
    }
out:
    closedir(d);
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return st;
}

/* ---- recording results ------------------------------------------------------- */

/* What a worker reports about an image once it is decoded and marked. */
typedef struct image_rec {
    uint32_t image;
    int32_t width, height, skipped;
    double psnr, ssim, mark_ms;
} image_rec;

/* A thumbnail's description; its encoded bytes follow on the wire. */
typedef struct thumb_rec {
    uint32_t image, which;
    int32_t format, width, height;
    double gain;
} thumb_rec;

/* Where run_image sends its results: straight into the lab (fd < 0), or to
 * the parent over a socket (in a worker). */
typedef struct sink {
    tm_lab *lab;
    int fd;
} sink;

enum { MSG_IMAGE = 1, MSG_TRIAL, MSG_THUMB, MSG_DONE, MSG_ERROR };

typedef struct msg_hdr {
    uint32_t type, len;
} msg_hdr;

/* Writes len bytes, retrying after interruptions; 0 on success. */
static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Reads exactly len bytes: 1 on success, 0 at a clean end before any byte,
 * -1 on error or an end in the middle. */
static int read_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, p + got, len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) return got == 0 ? 0 : -1;
        got += (size_t)r;
    }
    return 1;
}

static int send_msg(int fd, uint32_t type, const void *a, size_t alen, const void *b, size_t blen)
{
    msg_hdr h = {type, (uint32_t)(alen + blen)};
    return write_all(fd, &h, sizeof h) || (alen && write_all(fd, a, alen)) || (blen && write_all(fd, b, blen)) ? -1 : 0;
}

static void store_image(tm_lab *lab, const image_rec *r)
{
    if (r->image >= lab->n_img) return;
    tm_lab_image *im = &lab->img[r->image].pub;
    im->width = r->width;
    im->height = r->height;
    im->skipped = r->skipped;
    im->psnr = r->psnr;
    im->ssim = r->ssim;
    im->mark_ms = r->mark_ms;
}

/* Which null traces follow leaked copy l of image idx through attack a: with
 * two per image and attack, the wrong key on every leaked copy and the
 * unmarked original once; with one, either the wrong key on the first leaked
 * copy or the unmarked original, alternating over images and attacks. */
static void null_plan(const tm_lab *lab, size_t idx, size_t a, size_t l, int *wrong_key, int *unmarked)
{
    int n = lab->params.null_traces;
    *wrong_key = n >= 2 || (n == 1 && l == 0 && (idx + a) % 2 == 1);
    *unmarked = l == 0 && (n >= 2 || (n == 1 && (idx + a) % 2 == 0));
}

/* The trials of one image: a leak per leaked copy and attack, plus the
 * nulls; a collusion attack is traced once (its leaked copy is the first
 * colluder), with the nulls of the first leaked copy. */
static size_t trials_per_image(const tm_lab *lab)
{
    size_t n = 0;
    int nt = lab->params.null_traces;
    for (size_t a = 0; a < lab->grid->n; a++) {
        size_t nl = colluders_of(lab->grid->spec[a]) > 1 ? 1 : lab->params.n_leakers;
        n += nl + (nt >= 2 ? nl + 1 : nt == 1 ? 1 : 0);
    }
    return n;
}

static tm_status store_trial(tm_lab *lab, const tm_lab_trial *t)
{
    if (lab->n_trial == lab->cap_trial) {
        size_t nc = lab->cap_trial ? 2 * lab->cap_trial : 256;
        tm_lab_trial *g = realloc(lab->trial, nc * sizeof *g);
        if (!g) return TM_ERR_NOMEM;
        lab->trial = g;
        lab->cap_trial = nc;
    }
    lab->trial[lab->n_trial++] = *t;
    lab->progress_done++;
    return TM_OK;
}

static tm_status store_thumb(tm_lab *lab, const thumb_rec *r, const uint8_t *data, size_t len)
{
    if (r->image >= lab->n_img || r->which >= TM_LAB_THUMBS) return TM_OK;
    tm_lab_thumb *t = &lab->img[r->image].thumb[r->which];
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) return TM_ERR_NOMEM;
    memcpy(copy, data, len);
    free(t->data);
    t->data = copy;
    t->len = len;
    t->format = (tm_format)r->format;
    t->width = r->width;
    t->height = r->height;
    t->gain = r->gain;
    return TM_OK;
}

/* Asks the progress callback whether to go on; sets lab->stop when not. */
static int should_stop(tm_lab *lab)
{
    if (!lab->stop && lab->progress && lab->progress(lab->progress_ud, lab->progress_done, lab->progress_total))
        lab->stop = 1;
    return lab->stop;
}

static tm_status sink_image(sink *s, const image_rec *r)
{
    if (s->fd >= 0) return send_msg(s->fd, MSG_IMAGE, r, sizeof *r, NULL, 0) ? TM_ERR_IO : TM_OK;
    store_image(s->lab, r);
    if (r->skipped) s->lab->progress_done += trials_per_image(s->lab);
    return TM_OK;
}

/* A stopped in-process sweep unwinds through run_image with this status. */
#define STOPPED TM_ERR_INTERNAL

static tm_status sink_trial(sink *s, const tm_lab_trial *t)
{
    if (s->fd >= 0) return send_msg(s->fd, MSG_TRIAL, t, sizeof *t, NULL, 0) ? TM_ERR_IO : TM_OK;
    tm_status st = store_trial(s->lab, t);
    if (st == TM_OK && should_stop(s->lab)) return STOPPED;
    return st;
}

static tm_status sink_thumb(sink *s, const thumb_rec *r, const uint8_t *data, size_t len)
{
    if (s->fd >= 0) return send_msg(s->fd, MSG_THUMB, r, sizeof *r, data, len) ? TM_ERR_IO : TM_OK;
    return store_thumb(s->lab, r, data, len);
}

/* ---- thumbnails ---------------------------------------------------------------- */

static float luma_at(const tm_image *img, size_t i)
{
    if (tm_color_channels(img) >= 3) return 0.299f * img->plane[0][i] + 0.587f * img->plane[1][i] + 0.114f * img->plane[2][i];
    return img->plane[0][i];
}

/* Area-averages the w x h plane src into the ow x oh plane dst. */
static void box_reduce(const float *src, int w, int h, float *dst, int ow, int oh)
{
    for (int oy = 0; oy < oh; oy++) {
        int y0 = (int)((double)oy * h / oh), y1 = (int)((double)(oy + 1) * h / oh);
        if (y1 <= y0) y1 = y0 + 1;
        for (int ox = 0; ox < ow; ox++) {
            int x0 = (int)((double)ox * w / ow), x1 = (int)((double)(ox + 1) * w / ow);
            if (x1 <= x0) x1 = x0 + 1;
            double s = 0;
            for (int y = y0; y < y1; y++)
                for (int x = x0; x < x1; x++) s += src[(size_t)y * w + x];
            dst[(size_t)oy * ow + ox] = (float)(s / ((double)(y1 - y0) * (x1 - x0)));
        }
    }
}

/* Replaces the w x h plane p by its mean over (2r+1)^2 windows (clamped
 * at the borders). */
static tm_status smooth(float *p, int w, int h, int r)
{
    float *tmp = malloc(sizeof(float) * (size_t)w * h);
    if (!tmp) return TM_ERR_NOMEM;
    for (int pass = 0; pass < 2; pass++) {
        const float *src = pass ? tmp : p;
        float *dst = pass ? p : tmp;
        int n = pass ? h : w, m = pass ? w : h;
        for (int j = 0; j < m; j++)
            for (int i = 0; i < n; i++) {
                double s = 0;
                int c = 0;
                for (int k = i - r; k <= i + r; k++) {
                    if (k < 0 || k >= n) continue;
                    s += pass ? src[(size_t)k * w + j] : src[(size_t)j * w + k];
                    c++;
                }
                dst[pass ? (size_t)i * w + j : (size_t)j * w + i] = (float)(s / c);
            }
    }
    free(tmp);
    return TM_OK;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The size of a thumbnail of w x h whose longer side is at most side. */
static void thumb_size(int w, int h, int side, int *ow, int *oh)
{
    double f = (double)side / (w > h ? w : h);
    if (f > 1) f = 1;
    *ow = (int)lround(w * f);
    *oh = (int)lround(h * f);
    if (*ow < 1) *ow = 1;
    if (*oh < 1) *oh = 1;
}

/* Encodes img (JPEG for photographs, PNG for the difference maps) and sends it. */
static tm_status send_thumb(sink *s, uint32_t image, int which, const tm_image *img, tm_format fmt, double gain)
{
    tm_save_options so;
    tm_save_options_init(&so);
    so.format = fmt;
    so.quality = 88;
    uint8_t *data = NULL;
    size_t len = 0;
    tm_status st = tm_image_encode(img, &so, &data, &len);
    if (st != TM_OK) return st;
    thumb_rec r = {image, (uint32_t)which, (int32_t)fmt, img->width, img->height, gain};
    st = sink_thumb(s, &r, data, len);
    free(data);
    return st;
}

/* A box-averaged thumbnail of img's colour planes, long side at most side. */
static tm_status shrink(const tm_image *img, int side, tm_image **out)
{
    int ow, oh, nc = tm_color_channels(img);
    thumb_size(img->width, img->height, side, &ow, &oh);
    tm_status st = tm_image_create(ow, oh, nc, out);
    if (st != TM_OK) return st;
    for (int c = 0; c < nc; c++) box_reduce(img->plane[c], img->width, img->height, (*out)->plane[c], ow, oh);
    return TM_OK;
}

/* A side x side (or smaller) window of img's colour planes at (x0, y0). */
static tm_status window(const tm_image *img, int x0, int y0, int w, int h, tm_image **out)
{
    int nc = tm_color_channels(img);
    tm_status st = tm_image_create(w, h, nc, out);
    if (st != TM_OK) return st;
    for (int c = 0; c < nc; c++)
        for (int y = 0; y < h; y++)
            memcpy((*out)->plane[c] + (size_t)y * w, img->plane[c] + (size_t)(y0 + y) * img->width + x0, sizeof(float) * w);
    return TM_OK;
}

#define THUMB_SIDE 360
#define ICON_SIDE 120
#define CROP_SIDE 180

/* The thumbnails of one image (TM_LAB_THUMB_*): original and marked copy
 * shrunk, the mark's local amplitude (RMS of the luminance change over each
 * thumbnail pixel, amplified to fill the range), the same three at full
 * resolution where the mark is strongest (the change signed, mid-grey =
 * none), and an icon for the per-image table. */
static tm_status make_thumbs(sink *s, uint32_t image, const tm_image *orig, const tm_image *marked)
{
    int w = orig->width, h = orig->height;
    size_t n = (size_t)w * h;
    tm_image *t = NULL, *amp = NULL, *crop = NULL, *diff = NULL;
    float *d2 = malloc(sizeof(float) * n);
    tm_status st = TM_ERR_NOMEM;
    if (!d2) goto out;
    if ((st = shrink(orig, THUMB_SIDE, &t)) != TM_OK || (st = send_thumb(s, image, TM_LAB_THUMB_ORIG, t, TM_FORMAT_JPEG, 1)))
        goto out;
    tm_image_free(t);
    t = NULL;
    if ((st = shrink(orig, ICON_SIDE, &t)) != TM_OK || (st = send_thumb(s, image, TM_LAB_THUMB_ICON, t, TM_FORMAT_JPEG, 1)))
        goto out;
    tm_image_free(t);
    t = NULL;
    if ((st = shrink(marked, THUMB_SIDE, &t)) != TM_OK ||
        (st = send_thumb(s, image, TM_LAB_THUMB_MARKED, t, TM_FORMAT_JPEG, 1)))
        goto out;
    for (size_t i = 0; i < n; i++) {
        float d = luma_at(marked, i) - luma_at(orig, i);
        d2[i] = d * d;
    }
    if ((st = tm_image_create(t->width, t->height, 1, &amp)) != TM_OK) goto out;
    box_reduce(d2, w, h, amp->plane[0], amp->width, amp->height);
    /* a mean over about 2% of the width, so the map shows the mask rather
     * than the speckle of the pattern itself */
    size_t na = (size_t)amp->width * amp->height;
    if ((st = smooth(amp->plane[0], amp->width, amp->height, amp->width / 100 + 1)) != TM_OK) goto out;
    size_t peak = 0;
    for (size_t i = 0; i < na; i++) {
        d2[i] = amp->plane[0][i] = sqrtf(amp->plane[0][i]);
        if (amp->plane[0][i] > amp->plane[0][peak]) peak = i;
    }
    /* white at the 99.5th percentile (a few clipped pixels beat a dark map) */
    qsort(d2, na, sizeof *d2, cmp_float);
    double top = d2[na - 1 - na / 200];
    double gain = top > 0 ? 255 / top : 1;
    for (size_t i = 0; i < na; i++) amp->plane[0][i] = (float)fmin(255, amp->plane[0][i] * gain);
    if ((st = send_thumb(s, image, TM_LAB_THUMB_AMPLITUDE, amp, TM_FORMAT_PNG, gain)) != TM_OK) goto out;

    /* the full-resolution views are centred where the mark is strongest:
     * where a careful eye would look for it */
    int cw = w < CROP_SIDE ? w : CROP_SIDE, ch = h < CROP_SIDE ? h : CROP_SIDE;
    double px = ((double)(peak % (size_t)amp->width) + 0.5) * w / amp->width;
    double py = ((double)(peak / (size_t)amp->width) + 0.5) * h / amp->height;
    int x0 = (int)lround(px - cw / 2.0), y0 = (int)lround(py - ch / 2.0);
    x0 = x0 < 0 ? 0 : x0 > w - cw ? w - cw : x0;
    y0 = y0 < 0 ? 0 : y0 > h - ch ? h - ch : y0;
    if ((st = window(orig, x0, y0, cw, ch, &crop)) != TM_OK ||
        (st = send_thumb(s, image, TM_LAB_THUMB_CROP_ORIG, crop, TM_FORMAT_PNG, 1)) != TM_OK)
        goto out;
    tm_image_free(crop);
    crop = NULL;
    if ((st = window(marked, x0, y0, cw, ch, &crop)) != TM_OK ||
        (st = send_thumb(s, image, TM_LAB_THUMB_CROP_MARKED, crop, TM_FORMAT_PNG, 1)) != TM_OK)
        goto out;
    if ((st = tm_image_create(cw, ch, 1, &diff)) != TM_OK) goto out;
    double ss = 0;
    for (int y = 0; y < ch; y++)
        for (int x = 0; x < cw; x++) {
            size_t i = (size_t)(y0 + y) * w + x0 + x;
            float d = luma_at(marked, i) - luma_at(orig, i);
            diff->plane[0][(size_t)y * cw + x] = d;
            ss += (double)d * d;
        }
    double rms = sqrt(ss / ((double)cw * ch));
    gain = rms > 0 ? floor(127 / (3 * rms)) : 1;
    if (gain < 1) gain = 1;
    for (size_t i = 0; i < (size_t)cw * ch; i++) diff->plane[0][i] = (float)(128 + gain * diff->plane[0][i]);
    st = send_thumb(s, image, TM_LAB_THUMB_CROP_DIFF, diff, TM_FORMAT_PNG, gain);
out:
    free(d2);
    tm_image_free(t);
    tm_image_free(amp);
    tm_image_free(crop);
    tm_image_free(diff);
    return st;
}

/* ---- one image ------------------------------------------------------------------- */

/* Rounds a marked image to 8-bit samples, as the file handed out would be. */
static void quantise(tm_image *img)
{
    size_t n = (size_t)img->width * img->height;
    for (int c = 0; c < img->channels; c++)
        for (size_t i = 0; i < n; i++) img->plane[c][i] = tm_to_u8(img->plane[c][i]);
}

/* Fills the score fields and outcome of t from a trace result; the suspect
 * was made from copies leaker .. leaker + t->colluders - 1 (leaker -1 and no
 * colluders for a null trial). The score fields are the strongest
 * colluder's. */
static void classify(tm_lab_trial *t, const tm_trace_result *r, int32_t leaker)
{
    t->verdict = r->verdict;
    t->score = t->z = t->log10_p = NAN;
    t->innocent_log10_p = NAN;
    t->colluders_accused = 0;
    int wrong = 0;
    const tm_accusation *best = NULL, *mine = NULL, *other = NULL;
    for (size_t k = 0; k < r->n_accused; k++) {
        const tm_accusation *a = &r->accused[k];
        if (leaker >= 0 && (int64_t)a->index >= leaker && (int64_t)a->index < (int64_t)leaker + t->colluders) {
            t->colluders_accused++;
            if (!mine || a->log10_p < mine->log10_p) mine = a;
        } else {
            wrong = 1;
            if (!other || a->log10_p < other->log10_p) other = a;
        }
        if (!best || a->log10_p < best->log10_p) best = a;
    }
    int hit = t->colluders_accused > 0;
    for (size_t k = 0; k < r->n_top; k++) {
        const tm_accusation *a = &r->top[k];
        if (leaker >= 0 && (int64_t)a->index >= leaker && (int64_t)a->index < (int64_t)leaker + t->colluders) {
            if (!mine) mine = a;
        } else if (!other || a->log10_p < other->log10_p) {
            other = a;
        }
        if (!best || a->log10_p < best->log10_p) best = a;
    }
    if (leaker >= 0) {
        if (mine) t->score = mine->score, t->z = mine->z, t->log10_p = mine->log10_p;
        if (other) t->innocent_log10_p = other->log10_p;
        t->outcome = wrong                                  ? TM_LAB_WRONG
                     : hit                                  ? TM_LAB_IDENTIFIED
                     : r->verdict == TM_VERDICT_NONE        ? TM_LAB_MISSED_NONE
                                                            : TM_LAB_MISSED_INCONCLUSIVE;
    } else {
        if (best) t->score = best->score, t->z = best->z, t->log10_p = best->log10_p, t->innocent_log10_p = best->log10_p;
        t->outcome = r->n_accused ? TM_LAB_WRONG : r->verdict == TM_VERDICT_NONE ? TM_LAB_NULL_NONE : TM_LAB_NULL_INCONCLUSIVE;
    }
    t->pilot_z = r->pilot_z;
    t->pilot_log10_p = r->pilot_log10_p;
    t->scale = r->scale;
    t->rotation_deg = r->rotation_deg;
    t->aspect = r->aspect;
    t->flip = r->flip;
    t->offset_x = r->offset_x;
    t->offset_y = r->offset_y;
}

/* Traces sus under key against the copies (informed when ref, orig's
 * prepared form, is given) and sends the trial. */
static tm_status trace_one(sink *s, const tm_key *key, const tm_image *sus, const tm_image *orig,
                           const tm_original *ref, const tm_reg_copy *copies, size_t n, tm_lab_trial *t,
                           int32_t leaker, char *err, size_t errlen, const char *what)
{
    tm_trace_params tp;
    tm_trace_params_init(&tp);
    tp.fpr = s->lab->params.fpr;
    tm_trace_result r;
    double t0 = now_ms();
    tm_status st = ref ? tm_trace_run_informed(key, sus, &ref, 1, copies, n, &tp, &r)
                       : tm_trace_run(key, sus, copies, n, &tp, &r);
    if (st != TM_OK) {
        tm_fail_arg(err, errlen, "%s: trace: %s", what, tm_strerror(st));
        return st;
    }
    t->trace_ms = now_ms() - t0;
    tm_trace_result_set_original(&r, orig->width, orig->height);
    t->leaker = leaker;
    t->width = sus->width;
    t->height = sus->height;
    classify(t, &r, leaker);
    t->registered = r.informed && r.registration.found;
    tm_trace_result_clear(&r);
    return sink_trial(s, t);
}

/* The whole sweep of image idx: decode, mark, attack, trace; results go to
 * the sink. dir is this process's scratch directory. */
static tm_status run_image(tm_lab *lab, uint32_t idx, const char *dir, sink *s, char *err, size_t errlen)
{
    const lab_image_priv *im = &lab->img[idx];
    const tm_lab_params *p = &lab->params;
    size_t nc = p->n_copies, nl = p->n_leakers;
    tm_image *orig = NULL, *marked = NULL, *sus = NULL;
    tm_image *coll[MAX_COLLUDERS] = {NULL}; /* coll[0] is marked, borrowed */
    tm_embedder *emb = NULL;
    tm_original *ref = NULL; /* informed sweeps: the original prepared once */
    tm_reg_copy *copies = NULL, *wcopies = NULL; /* wcopies: the registry as the wrong key made it */
    uint8_t(*words)[TM_CODEWORD_BYTES] = NULL, (*wwords)[TM_CODEWORD_BYTES] = NULL;
    double *wbias = NULL;
    char(*names)[32] = NULL;
    err[0] = 0;
    tm_status st = tm_image_load(im->path, NULL, &orig, NULL);
    if (st != TM_OK) {
        tm_fail_arg(err, errlen, "%s: %s", im->path, tm_strerror(st));
        goto out;
    }
    image_rec rec = {idx, orig->width, orig->height, 0, NAN, NAN, NAN};
    if ((uint64_t)orig->width * orig->height < p->min_pixels) {
        rec.skipped = 1;
        st = sink_image(s, &rec);
        goto out;
    }
    tm_mark_params mp;
    tm_mark_params_init(&mp);
    if (p->strength > 0) mp.strength = p->strength;
    double t0 = now_ms();
    if ((st = tm_embedder_create(lab->key, orig, &mp, &emb)) != TM_OK) {
        tm_fail_arg(err, errlen, "%s: analysing the original: %s", im->name, tm_strerror(st));
        goto out;
    }
    if (p->informed && (st = tm_original_create(orig, &ref)) != TM_OK) {
        tm_fail_arg(err, errlen, "%s: preparing the original: %s", im->name, tm_strerror(st));
        goto out;
    }
    copies = calloc(nc, sizeof *copies);
    wcopies = calloc(nc, sizeof *wcopies);
    words = calloc(nc, TM_CODEWORD_BYTES);
    wwords = calloc(nc, TM_CODEWORD_BYTES);
    wbias = calloc(TM_CODE_BITS, sizeof *wbias);
    names = calloc(nc, 32);
    st = TM_ERR_NOMEM;
    if (!copies || !wcopies || !words || !wwords || !wbias || !names) goto out;
    /* The wrong-key null is a suspect marked under another key, traced with
     * ours against our registry: its copies' codewords are the wrong key's
     * (drawn with that key's biases, as the scorer assumes), so the suspect's
     * mark is independent of every one of them. */
    const char *id = tm_embedder_image_id(emb);
    if ((st = tm_code_bias(lab->wrong_key, id, wbias)) != TM_OK) goto out;
    for (size_t i = 0; i < nc; i++) {
        snprintf(names[i], 32, i < nl ? "leaker-%zu" : "innocent-%zu", i);
        if ((st = tm_embedder_codeword(emb, names[i], words[i])) != TM_OK ||
            (st = tm_code_word(lab->wrong_key, id, names[i], wbias, wwords[i])) != TM_OK)
            goto out;
        copies[i].copy_id = (int64_t)i + 1;
        copies[i].image_id = id;
        copies[i].recipient = names[i];
        copies[i].code_len = TM_CODEWORD_BYTES * 8;
        copies[i].codeword = words[i];
        wcopies[i] = copies[i];
        wcopies[i].codeword = wwords[i];
    }
    /* The copies a collusion attack combines besides the leaked one. */
    int max_c = 1;
    for (size_t a = 0; a < lab->grid->n; a++)
        if (colluders_of(lab->grid->spec[a]) > max_c) max_c = colluders_of(lab->grid->spec[a]);
    const tm_image *origs[MAX_COLLUDERS];
    for (int k = 0; k < MAX_COLLUDERS; k++) origs[k] = orig;
    for (size_t l = 0; l < nl; l++) {
        if ((st = tm_embedder_mark(emb, names[l], &marked)) != TM_OK) {
            tm_fail_arg(err, errlen, "%s: marking: %s", im->name, tm_strerror(st));
            goto out;
        }
        quantise(marked);
        coll[0] = marked;
        if (l == 0) {
            rec.mark_ms = now_ms() - t0;
            rec.psnr = tm_psnr(orig, marked);
            rec.ssim = tm_ssim(orig, marked);
            if ((st = sink_image(s, &rec)) != TM_OK || (st = make_thumbs(s, idx, orig, marked)) != TM_OK) goto out;
            for (int k = 1; k < max_c; k++) {
                if ((st = tm_embedder_mark(emb, names[k], &coll[k])) != TM_OK) {
                    tm_fail_arg(err, errlen, "%s: marking: %s", im->name, tm_strerror(st));
                    goto out;
                }
                quantise(coll[k]);
            }
        }
        for (size_t a = 0; a < lab->grid->n; a++) {
            const char *spec = lab->grid->spec[a];
            int c = colluders_of(spec);
            if (c > 1 && l > 0) continue; /* traced once, with the first leaked copy */
            char what[600], why[512] = "";
            snprintf(what, sizeof what, "%s: attack '%s'", im->name, spec);
            tm_lab_trial t;
            memset(&t, 0, sizeof t);
            t.image = idx;
            t.attack = (uint32_t)a;
            double ta = now_ms();
            if ((st = lab_attack(spec, (const tm_image *const *)coll, (size_t)max_c, dir, &sus, why, sizeof why)) !=
                TM_OK) {
                tm_fail_arg(err, errlen, "%s: %s", what, why[0] ? why : tm_strerror(st));
                goto out;
            }
            t.attack_ms = now_ms() - ta;
            t.kind = TM_LAB_LEAK;
            t.colluders = c;
            if ((st = trace_one(s, lab->key, sus, orig, ref, copies, nc, &t, (int32_t)l, err, errlen, what)) != TM_OK) goto out;
            int wrong_key, unmarked;
            null_plan(lab, idx, a, l, &wrong_key, &unmarked);
            t.kind = TM_LAB_NULL_WRONG_KEY;
            t.colluders = 0;
            if (wrong_key &&
                (st = trace_one(s, lab->wrong_key, sus, orig, ref, wcopies, nc, &t, -1, err, errlen, what)) != TM_OK)
                goto out;
            tm_image_free(sus);
            sus = NULL;
            if (unmarked) {
                ta = now_ms();
                if ((st = lab_attack(spec, origs, MAX_COLLUDERS, dir, &sus, why, sizeof why)) != TM_OK) {
                    tm_fail_arg(err, errlen, "%s (on the original): %s", what, why[0] ? why : tm_strerror(st));
                    goto out;
                }
                t.attack_ms = now_ms() - ta;
                t.kind = TM_LAB_NULL_UNMARKED;
                if ((st = trace_one(s, lab->key, sus, orig, ref, copies, nc, &t, -1, err, errlen, what)) != TM_OK) goto out;
                tm_image_free(sus);
                sus = NULL;
            }
        }
        tm_image_free(marked);
        marked = NULL;
    }
    st = TM_OK;
out:
    if (st != TM_OK && !lab->stop && !err[0]) tm_fail_arg(err, errlen, "%s: %s", im->name, tm_strerror(st));
    tm_image_free(sus);
    tm_image_free(marked);
    for (int k = 1; k < MAX_COLLUDERS; k++) tm_image_free(coll[k]);
    tm_embedder_free(emb);
    tm_original_free(ref);
    tm_image_free(orig);
    free(copies);
    free(wcopies);
    free(words);
    free(wwords);
    free(wbias);
    free(names);
    return st;
}

/* ---- running: in this process or in workers -------------------------------------- */

/* The order images are handed out: largest files first, so the longest
 * jobs do not start last. */
static void order_images(const tm_lab *lab, uint32_t *order)
{
    for (size_t i = 0; i < lab->n_img; i++) order[i] = (uint32_t)i;
    /* insertion sort: corpora are small, and qsort has no context argument */
    for (size_t i = 1; i < lab->n_img; i++) {
        uint32_t v = order[i];
        size_t j = i;
        while (j > 0 && lab->img[order[j - 1]].file_size < lab->img[v].file_size) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = v;
    }
}

static tm_status run_here(tm_lab *lab, const uint32_t *order)
{
    char dir[4096], err[1024];
    snprintf(dir, sizeof dir, "%s/w0", lab->scratch);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return lab_fail(lab, TM_ERR_IO, "%s: %s", dir, strerror(errno));
    sink s = {lab, -1};
    for (size_t i = 0; i < lab->n_img; i++) {
        tm_status st = run_image(lab, order[i], dir, &s, err, sizeof err);
        /* an interruption may surface as an error first (a killed convert) */
        if (lab->stop || should_stop(lab)) return TM_OK;
        if (st != TM_OK) return lab_fail(lab, st, "%s", err);
    }
    lab->complete = 1;
    return TM_OK;
}

/* The signals that end a process by default and that a caller may catch:
 * a worker restores their default action. */
static const int stop_sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

typedef struct worker {
    pid_t pid;
    int fd;
    int busy;        /* an image is out with this worker */
    uint32_t image;
    int done;        /* its socket reached the end */
} worker;

/* A worker's life: read an image index, sweep it, report, until the parent
 * closes the socket. Never returns. */
static void worker_main(tm_lab *lab, int fd, int k, pid_t parent)
{
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
    if (getppid() != parent) _exit(3); /* the parent died before prctl */
    char dir[4096], err[4400];
    snprintf(dir, sizeof dir, "%s/w%d", lab->scratch, k);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, sizeof err, "%s: %s", dir, strerror(errno));
        send_msg(fd, MSG_ERROR, err, strlen(err), NULL, 0);
        _exit(1);
    }
    sink s = {lab, fd};
    for (;;) {
        uint32_t idx;
        int r = read_all(fd, &idx, sizeof idx);
        if (r == 0) _exit(0);
        if (r < 0 || idx >= lab->n_img) _exit(1);
        tm_status st = run_image(lab, idx, dir, &s, err, sizeof err);
        if (st != TM_OK) {
            send_msg(fd, MSG_ERROR, err, strlen(err), NULL, 0);
            _exit(1);
        }
        if (send_msg(fd, MSG_DONE, &idx, sizeof idx, NULL, 0)) _exit(1);
    }
}

/* Ends every worker still running, with whatever it started (its process
 * group), and reaps them. Closing the sockets first makes a worker blocked
 * on a full socket fail at once; one that ignores SIGTERM for 2 s gets
 * SIGKILL. */
static void end_workers(worker *w, int n)
{
    for (int k = 0; k < n; k++)
        if (w[k].fd >= 0) {
            close(w[k].fd);
            w[k].fd = -1;
        }
    for (int k = 0; k < n; k++)
        if (w[k].pid > 0) kill(-w[k].pid, SIGTERM);
    for (int k = 0; k < n; k++) {
        if (w[k].pid <= 0) continue;
        /* wait for the worker, then for a convert it started to go too */
        int reaped = 0;
        for (int tries = 0; tries < 400; tries++) {
            if (!reaped) {
                pid_t r = waitpid(w[k].pid, NULL, WNOHANG);
                reaped = r == w[k].pid || (r < 0 && errno != EINTR);
            }
            if (reaped && kill(-w[k].pid, 0) != 0) break;
            if (tries == 200) kill(-w[k].pid, SIGKILL);
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (!reaped) waitpid(w[k].pid, NULL, 0); /* SIGKILL was sent: cannot last */
        w[k].pid = 0;
    }
}

/* Reads and handles one message from worker k: 0 when fine, 1 at the end of
 * its stream, -1 on an error (lab->errmsg set). */
static int handle_msg(tm_lab *lab, worker *wk, uint8_t **buf, size_t *cap)
{
    msg_hdr h;
    int r = read_all(wk->fd, &h, sizeof h);
    if (r == 0) return 1;
    if (r < 0 || h.len > (64u << 20)) {
        lab_fail(lab, TM_ERR_INTERNAL, "lost a worker's results");
        return -1;
    }
    if (h.len + 1 > *cap) {
        uint8_t *g = realloc(*buf, h.len + 1);
        if (!g) {
            lab_fail(lab, TM_ERR_NOMEM, "out of memory");
            return -1;
        }
        *buf = g;
        *cap = h.len + 1;
    }
    if (h.len && read_all(wk->fd, *buf, h.len) != 1) {
        lab_fail(lab, TM_ERR_INTERNAL, "lost a worker's results");
        return -1;
    }
    uint8_t *b = *buf;
    switch (h.type) {
    case MSG_IMAGE: {
        image_rec rec;
        if (h.len != sizeof rec) break;
        memcpy(&rec, b, sizeof rec);
        store_image(lab, &rec);
        if (rec.skipped) lab->progress_done += trials_per_image(lab);
        return 0;
    }
    case MSG_TRIAL: {
        tm_lab_trial t;
        if (h.len != sizeof t) break;
        memcpy(&t, b, sizeof t);
        if (store_trial(lab, &t) != TM_OK) {
            lab_fail(lab, TM_ERR_NOMEM, "out of memory");
            return -1;
        }
        return 0;
    }
    case MSG_THUMB: {
        thumb_rec rec;
        if (h.len < sizeof rec) break;
        memcpy(&rec, b, sizeof rec);
        if (store_thumb(lab, &rec, b + sizeof rec, h.len - sizeof rec) != TM_OK) {
            lab_fail(lab, TM_ERR_NOMEM, "out of memory");
            return -1;
        }
        return 0;
    }
    case MSG_DONE:
        wk->busy = 0;
        return 0;
    case MSG_ERROR:
        b[h.len] = 0;
        lab_fail(lab, TM_ERR_INTERNAL, "%s", (char *)b);
        return -1;
    }
    lab_fail(lab, TM_ERR_INTERNAL, "a worker sent a malformed record");
    return -1;
}

/* Hands the next image to worker wk, or tells it there is none (closing its
 * half of the socket). 0 on success. */
static int dispatch(worker *wk, const uint32_t *order, size_t n, size_t *next)
{
    if (*next < n) {
        wk->image = order[(*next)++];
        wk->busy = 1;
        return write_all(wk->fd, &wk->image, sizeof wk->image);
    }
    shutdown(wk->fd, SHUT_WR);
    return 0;
}

/* Describes how worker pid ended, for an error message. */
static void describe_exit(tm_lab *lab, const worker *wk, int status)
{
    const char *name = lab->img[wk->image].name;
    if (WIFSIGNALED(status))
        lab_fail(lab, TM_ERR_INTERNAL, "%s: the worker sweeping it was killed by signal %d%s", name, WTERMSIG(status),
                 WTERMSIG(status) == SIGKILL ? " (out of memory?)" : "");
    else
        lab_fail(lab, TM_ERR_INTERNAL, "%s: the worker sweeping it exited with status %d", name, WEXITSTATUS(status));
}

static tm_status run_workers(tm_lab *lab, const uint32_t *order)
{
    int n = lab->params.jobs;
    if ((size_t)n > lab->n_img) n = (int)lab->n_img;
    worker *w = calloc((size_t)n, sizeof *w);
    struct pollfd *pfd = calloc((size_t)n, sizeof *pfd);
    uint8_t *buf = NULL;
    size_t cap = 0, next = 0;
    tm_status st = TM_ERR_NOMEM;
    if (!w || !pfd) goto out;
    for (int k = 0; k < n; k++) w[k].fd = -1;
    fflush(NULL); /* nothing buffered may be written twice */
    pid_t parent = getpid();
    st = TM_OK;
    for (int k = 0; k < n && st == TM_OK; k++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
            st = lab_fail(lab, TM_ERR_INTERNAL, "socketpair: %s", strerror(errno));
            break;
        }
        /* the terminating signals wait, blocked, until the new worker has
         * given up the caller's handlers for the default ones */
        sigset_t block, old;
        sigemptyset(&block);
        for (size_t i = 0; i < sizeof stop_sigs / sizeof stop_sigs[0]; i++) sigaddset(&block, stop_sigs[i]);
        pthread_sigmask(SIG_BLOCK, &block, &old);
        pid_t pid = fork();
        if (pid == 0) {
            setpgid(0, 0);
            close(sv[0]);
            for (int j = 0; j < k; j++) close(w[j].fd);
            for (size_t i = 0; i < sizeof stop_sigs / sizeof stop_sigs[0]; i++) signal(stop_sigs[i], SIG_DFL);
            signal(SIGPIPE, SIG_DFL);
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            worker_main(lab, sv[1], k, parent);
        }
        if (pid > 0) setpgid(pid, pid); /* also here: whichever runs first */
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (pid < 0) {
            close(sv[0]);
            close(sv[1]);
            st = lab_fail(lab, TM_ERR_INTERNAL, "fork: %s", strerror(errno));
            break;
        }
        close(sv[1]);
        w[k].pid = pid;
        w[k].fd = sv[0];
        if (dispatch(&w[k], order, lab->n_img, &next))
            st = lab_fail(lab, TM_ERR_INTERNAL, "cannot reach a worker: %s", strerror(errno));
    }
    int live = n;
    while (st == TM_OK && live > 0) {
        if (should_stop(lab)) break;
        int np = 0;
        for (int k = 0; k < n; k++)
            if (!w[k].done) {
                pfd[np].fd = w[k].fd;
                pfd[np].events = POLLIN;
                pfd[np].revents = 0;
                np++;
            }
        int pr = poll(pfd, (nfds_t)np, 200);
        if (pr < 0 && errno != EINTR) {
            st = lab_fail(lab, TM_ERR_INTERNAL, "poll: %s", strerror(errno));
            break;
        }
        if (pr <= 0) continue;
        for (int k = 0, j = 0; k < n && st == TM_OK; k++) {
            if (w[k].done) continue;
            short re = pfd[j++].revents;
            if (!re) continue;
            int was_busy = w[k].busy;
            int r = handle_msg(lab, &w[k], &buf, &cap);
            if (r < 0) {
                st = TM_ERR_INTERNAL;
            } else if (r == 1) {
                int status = 0;
                while (waitpid(w[k].pid, &status, 0) < 0 && errno == EINTR) {
                }
                w[k].pid = 0;
                w[k].done = 1;
                live--;
                if (w[k].busy || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                    if (should_stop(lab)) break;
                    describe_exit(lab, &w[k], status);
                    st = TM_ERR_INTERNAL;
                }
            } else if (was_busy && !w[k].busy && dispatch(&w[k], order, lab->n_img, &next)) {
                st = lab_fail(lab, TM_ERR_INTERNAL, "cannot reach a worker: %s", strerror(errno));
            }
        }
    }
    if (st == TM_OK && !lab->stop) lab->complete = 1;
out:
    if (w) end_workers(w, n);
    free(w);
    free(pfd);
    free(buf);
    if (lab->stop && st != TM_ERR_NOMEM) {
        lab->errmsg[0] = 0;
        return TM_OK;
    }
    return st;
}

static int cmp_trial(const void *a, const void *b)
{
    const tm_lab_trial *x = a, *y = b;
    if (x->image != y->image) return x->image < y->image ? -1 : 1;
    if (x->attack != y->attack) return x->attack < y->attack ? -1 : 1;
    if (x->kind != y->kind) return x->kind < y->kind ? -1 : 1;
    return (x->leaker > y->leaker) - (x->leaker < y->leaker);
}

tm_status tm_lab_run(tm_lab *lab, tm_lab_progress_fn progress, void *ud)
{
    if (!lab) return TM_ERR_ARG;
    if (lab->ran) return lab_fail(lab, TM_ERR_ARG, "the sweep has already run");
    if (!lab->scratch) return lab_fail(lab, TM_ERR_ARG, "the lab was not created successfully");
    lab->ran = 1;
    if (lab->n_img == 0) return lab_fail(lab, TM_ERR_ARG, "no images to sweep");
    if (lab->showcase) {
        size_t i = 0;
        while (i < lab->n_img && strcmp(lab->img[i].name, lab->showcase)) i++;
        if (i == lab->n_img) return lab_fail(lab, TM_ERR_NOT_FOUND, "showcase image '%s' is not in the corpus", lab->showcase);
    }
    lab->progress = progress;
    lab->progress_ud = ud;
    lab->progress_total = lab->n_img * trials_per_image(lab);
    uint32_t *order = malloc(lab->n_img * sizeof *order);
    if (!order) return TM_ERR_NOMEM;
    order_images(lab, order);
    double t0 = now_ms();
    tm_status st = lab->params.jobs == 0 ? run_here(lab, order) : run_workers(lab, order);
    free(order);
    lab->wall_ms = now_ms() - t0;
    if (lab->n_trial > 1) qsort(lab->trial, lab->n_trial, sizeof *lab->trial, cmp_trial);
    if (lab->complete && progress) progress(ud, lab->progress_total, lab->progress_total);
    return st;
}

int tm_lab_complete(const tm_lab *lab)
{
    return lab && lab->complete;
}

/* ---- results ------------------------------------------------------------------------ */

size_t tm_lab_image_count(const tm_lab *lab)
{
    return lab ? lab->n_img : 0;
}

const tm_lab_image *tm_lab_image_at(const tm_lab *lab, size_t i)
{
    return lab && i < lab->n_img ? &lab->img[i].pub : NULL;
}

size_t tm_lab_trial_count(const tm_lab *lab)
{
    return lab ? lab->n_trial : 0;
}

const tm_lab_trial *tm_lab_trial_at(const tm_lab *lab, size_t i)
{
    return lab && i < lab->n_trial ? &lab->trial[i] : NULL;
}

double tm_lab_wall_ms(const tm_lab *lab)
{
    return lab ? lab->wall_ms : 0;
}

void tm_lab_tally_attack(const tm_lab *lab, size_t attack, tm_lab_tally *out)
{
    memset(out, 0, sizeof *out);
    out->weakest_log10_p = NAN;
    double ms = 0;
    if (!lab) return;
    for (size_t i = 0; i < lab->n_trial; i++) {
        const tm_lab_trial *t = &lab->trial[i];
        if (attack != (size_t)-1 && t->attack != attack) continue;
        if (t->kind != TM_LAB_LEAK) {
            out->null_trials++;
            if (t->outcome == TM_LAB_WRONG) out->null_accused++;
            continue;
        }
        out->trials++;
        out->innocents_scored += lab->params.n_copies - (size_t)t->colluders;
        ms += t->trace_ms;
        switch (t->outcome) {
        case TM_LAB_IDENTIFIED:
            out->identified++;
            if (t->colluders_accused >= t->colluders) out->all_colluders++;
            if (isnan(out->weakest_log10_p) || t->log10_p > out->weakest_log10_p) out->weakest_log10_p = t->log10_p;
            break;
        case TM_LAB_WRONG: out->wrong++; break;
        case TM_LAB_MISSED_NONE: out->missed_none++; break;
        default: out->missed_inconclusive++; break;
        }
    }
    out->mean_trace_ms = out->trials ? ms / (double)out->trials : NAN;
}

const char *tm_lab_outcome_name(tm_lab_outcome o)
{
    static const char *const names[] = {"identified", "wrong-accusation", "missed-none", "missed-inconclusive",
                                        "null-none", "null-inconclusive"};
    return (unsigned)o < sizeof names / sizeof names[0] ? names[o] : "unknown";
}

const char *tm_lab_kind_name(tm_lab_kind k)
{
    static const char *const names[] = {"leak", "null-unmarked", "null-wrong-key"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "unknown";
}

const tm_lab_params *tm_lab_get_params(const tm_lab *lab)
{
    return &lab->params;
}

const tm_lab_grid *tm_lab_get_grid(const tm_lab *lab)
{
    return lab->grid;
}

const char *tm_lab_get_key_fingerprint(const tm_lab *lab)
{
    return lab->fingerprint;
}

const tm_lab_thumb *tm_lab_get_thumb(const tm_lab *lab, size_t image, int which)
{
    if (!lab || image >= lab->n_img || which < 0 || which >= TM_LAB_THUMBS) return NULL;
    const tm_lab_thumb *t = &lab->img[image].thumb[which];
    return t->data ? t : NULL;
}

size_t tm_lab_showcase_image(const tm_lab *lab)
{
    size_t first = (size_t)-1;
    for (size_t i = 0; i < lab->n_img; i++) {
        const lab_image_priv *im = &lab->img[i];
        if (!im->thumb[TM_LAB_THUMB_ORIG].data) continue;
        if (lab->showcase) {
            if (!strcmp(im->name, lab->showcase)) return i;
            continue;
        }
        if ((double)im->pub.width * im->pub.height >= 1e6) return i;
        if (first == (size_t)-1) first = i;
    }
    return first;
}

/* ---- curves: grouping attacks by family and parameter ------------------------------- */

/* A number in an attack spec: where it is, its value and what it measures. */
typedef struct literal {
    size_t start, len;
    double value;
    char step[24], key[24];
} literal;

#define MAX_LITERALS 16

/* The usage line of tracemark attack step name[0..len), or NULL. */
static const char *usage_of(const char *name, size_t len)
{
    for (size_t i = 0; tm_attack_usage(i); i++) {
        const char *u = tm_attack_usage(i);
        if (!strncmp(u, name, len) && (u[len] == ':' || u[len] == '[' || u[len] == ' ' || !u[len])) return u;
    }
    return NULL;
}

/* The name of step name's pos-th positional argument as its usage line
 * spells it ("rotate:DEG[:crop=1|0]" gives "deg", then "crop"); "" if unknown. */
static void positional_name(const char *name, size_t len, int pos, char *out, size_t cap)
{
    out[0] = 0;
    const char *u = usage_of(name, len);
    if (!u) return;
    u += len;
    for (int i = 0;; i++) {
        const char *colon = strchr(u, ':');
        if (!colon) return;
        u = colon + 1;
        size_t n = strcspn(u, ":[] =");
        if (i == pos) {
            size_t k = 0;
            for (; k < n && k + 1 < cap; k++) out[k] = (char)tolower((unsigned char)u[k]);
            out[k] = 0;
            return;
        }
    }
}

/* True when s[0..len) is a whole finite number (an ImageMagick percentage
 * "50%" too when pct); *v gets it. */
static int whole_number(const char *s, size_t len, int pct, double *v)
{
    char buf[40];
    if (len == 0 || len >= sizeof buf) return 0;
    memcpy(buf, s, len);
    buf[len] = 0;
    if (pct && buf[len - 1] == '%') buf[--len] = 0;
    if (!len || !(isdigit((unsigned char)buf[0]) || buf[0] == '-' || buf[0] == '+' || buf[0] == '.')) return 0;
    char *end;
    *v = strtod(buf, &end);
    return *end == 0 && isfinite(*v);
}

/* The numbers in spec, with the step and argument each belongs to. */
static size_t find_literals(const char *spec, literal *lit, size_t max)
{
    size_t n = 0, pos = 0, total = strlen(spec);
    while (pos <= total && n < max) {
        size_t slen = strcspn(spec + pos, "|");
        const char *stage = spec + pos, *body;
        size_t blen = trim(stage, slen, &body);
        if (!strncmp(body, "im:", 3) || !strncmp(body, "imjpg:", 6)) {
            size_t skip = body[2] == ':' ? 3 : 6;
            const char *prev = NULL;
            size_t prev_len = 0;
            for (size_t i = skip; i < blen && n < max;) {
                while (i < blen && isspace((unsigned char)body[i])) i++;
                size_t j = i;
                while (j < blen && !isspace((unsigned char)body[j])) j++;
                if (j > i) {
                    double v;
                    if (whole_number(body + i, j - i, 1, &v) && prev && prev[0] == '-') {
                        literal *l = &lit[n++];
                        l->start = (size_t)(body - spec) + i;
                        l->len = j - i - (body[j - 1] == '%');
                        l->value = v;
                        snprintf(l->step, sizeof l->step, "%s", skip == 3 ? "im" : "imjpg");
                        snprintf(l->key, sizeof l->key, "%.*s", (int)prev_len, prev);
                    }
                    prev = body + i;
                    prev_len = j - i;
                }
                i = j;
            }
        } else {
            /* a tracemark chain: steps at ',', arguments at ':' */
            for (size_t i = 0; i < blen && n < max;) {
                size_t step_len = strcspn(body + i, ",");
                if (i + step_len > blen) step_len = blen - i;
                const char *st;
                size_t tl = trim(body + i, step_len, &st);
                size_t name_len = strcspn(st, ":");
                if (name_len > tl) name_len = tl;
                int positional = 0;
                for (size_t k = name_len; k < tl && n < max;) {
                    size_t a0 = k + 1, alen = strcspn(st + a0, ":");
                    if (a0 + alen > tl) alen = tl - a0;
                    const char *eq = memchr(st + a0, '=', alen);
                    const char *val = eq ? eq + 1 : st + a0;
                    size_t vlen = eq ? alen - (size_t)(eq + 1 - (st + a0)) : alen;
                    double v;
                    literal *l = &lit[n];
                    if (whole_number(val, vlen, 0, &v)) {
                        l->start = (size_t)(val - spec);
                        l->len = vlen;
                        l->value = v;
                        snprintf(l->step, sizeof l->step, "%.*s", (int)name_len, st);
                        if (eq)
                            snprintf(l->key, sizeof l->key, "%.*s", (int)(eq - (st + a0)), st + a0);
                        else
                            positional_name(st, name_len, positional, l->key, sizeof l->key);
                        n++;
                    }
                    if (!eq) positional++;
                    k = a0 + alen;
                }
                i += step_len + 1;
            }
        }
        pos += slen + 1;
    }
    return n;
}

/* True for an on/off argument ("crop=1|0", "dither=0|1" in its usage line):
 * two settings, not a strength to draw a curve over. */
static int is_switch(const literal *l)
{
    const char *u = usage_of(l->step, strlen(l->step));
    char pat[32];
    if (!u || !l->key[0]) return 0;
    snprintf(pat, sizeof pat, ":%s=", l->key);
    const char *p = strstr(u, pat);
    if (!p) return 0;
    p += strlen(pat);
    return !strncmp(p, "1|0", 3) || !strncmp(p, "0|1", 3);
}

/* Readable names of the usual parameters; others read "STEP KEY". */
static const struct {
    const char *step, *key, *family;
} family_names[] = {
    {"jpeg", "q", "JPEG quality"},
    {"webp", "q", "WebP quality"},
    {"imjpg", "-quality", "JPEG quality (ImageMagick)"},
    {"scale", "f", "scale factor"},
    {"crop", "f", "crop: fraction of each side kept"},
    {"rotate", "deg", "rotation, degrees"},
    {"noise", "sigma", "noise sigma"},
    {"blur", "sigma", "blur sigma"},
    {"aspect", "f", "aspect stretch"},
    {"gamma", "g", "gamma"},
    {"brightness", "d", "brightness offset"},
    {"contrast", "k", "contrast factor"},
    {"saturation", "k", "saturation factor"},
    {"median", "r", "median radius"},
    {"quantize", "colors", "palette colours"},
    {"screenshot", "side", "screenshot size, px"},
    {"bend", "strength", "bending, px"},
    {"sharpen", "amount", "sharpening amount"},
    {"im", "-resize", "resize, % (ImageMagick)"},
    {"im", "-rotate", "rotation, degrees (ImageMagick)"},
    {"im", "-quality", "quality (ImageMagick)"},
};

static void family_name(const literal *l, char *out, size_t cap)
{
    for (size_t i = 0; i < sizeof family_names / sizeof family_names[0]; i++)
        if (!strcmp(family_names[i].step, l->step) && !strcmp(family_names[i].key, l->key)) {
            snprintf(out, cap, "%s", family_names[i].family);
            return;
        }
    snprintf(out, cap, "%s %s", l->step, l->key[0] ? l->key : "argument");
}

void tm_lab_curves_free(tm_lab_curve *c, size_t n)
{
    if (!c) return;
    for (size_t i = 0; i < n; i++) {
        free(c[i].family);
        free(c[i].pattern);
        free(c[i].attack);
        free(c[i].x);
    }
    free(c);
}

/* spec with its literal l replaced by "{}", in a new string. */
static char *pattern_of(const char *spec, const literal *l)
{
    size_t len = strlen(spec) - l->len + 3;
    char *p = malloc(len);
    if (p) snprintf(p, len, "%.*s{}%s", (int)l->start, spec, spec + l->start + l->len);
    return p;
}

tm_status tm_lab_curves(const tm_lab_grid *g, size_t min_points, tm_lab_curve **curves, size_t *n_curves)
{
    *curves = NULL;
    *n_curves = 0;
    if (!g) return TM_ERR_ARG;
    if (min_points < 2) min_points = 2;
    tm_lab_curve *c = NULL;
    size_t nc = 0;
    tm_status st = TM_ERR_NOMEM;
    /* every (attack, number) makes a pattern; attacks sharing one form a curve */
    for (size_t a = 0; a < g->n; a++) {
        literal lit[MAX_LITERALS];
        size_t nl = find_literals(g->spec[a], lit, MAX_LITERALS);
        for (size_t k = 0; k < nl; k++) {
            if (is_switch(&lit[k])) continue;
            char *pat = pattern_of(g->spec[a], &lit[k]);
            if (!pat) goto out;
            size_t i = 0;
            while (i < nc && strcmp(c[i].pattern, pat)) i++;
            if (i == nc) {
                tm_lab_curve *grown = realloc(c, (nc + 1) * sizeof *c);
                if (!grown) {
                    free(pat);
                    goto out;
                }
                c = grown;
                memset(&c[nc], 0, sizeof *c);
                char fam[96];
                family_name(&lit[k], fam, sizeof fam);
                c[nc].pattern = pat;
                nc++;
                if (!(c[i].family = strdup(fam))) goto out;
            } else {
                free(pat);
            }
            size_t *ga = realloc(c[i].attack, (c[i].n + 1) * sizeof *ga);
            if (ga) c[i].attack = ga;
            double *gx = realloc(c[i].x, (c[i].n + 1) * sizeof *gx);
            if (gx) c[i].x = gx;
            if (!ga || !gx) goto out;
            c[i].attack[c[i].n] = a;
            c[i].x[c[i].n] = lit[k].value;
            c[i].n++;
        }
    }
    /* keep the curves with enough points, each sorted by x */
    size_t kept = 0;
    for (size_t i = 0; i < nc; i++) {
        if (c[i].n < min_points) {
            free(c[i].family);
            free(c[i].pattern);
            free(c[i].attack);
            free(c[i].x);
            continue;
        }
        for (size_t j = 1; j < c[i].n; j++) {
            double x = c[i].x[j];
            size_t a = c[i].attack[j], k = j;
            for (; k > 0 && c[i].x[k - 1] > x; k--) {
                c[i].x[k] = c[i].x[k - 1];
                c[i].attack[k] = c[i].attack[k - 1];
            }
            c[i].x[k] = x;
            c[i].attack[k] = a;
        }
        c[kept++] = c[i];
    }
    nc = kept;
    if (nc == 0) {
        free(c);
        c = NULL;
    }
    st = TM_OK;
out:
    if (st != TM_OK) {
        tm_lab_curves_free(c, nc);
        return st;
    }
    *curves = c;
    *n_curves = nc;
    return TM_OK;
}
