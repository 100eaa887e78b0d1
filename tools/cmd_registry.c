/* cmd_registry.c -- `tracemark registry`: create, list, show, verify,
 * export, merge and snapshot the recipient registry. Parsing and printing
 * only; the registry logic lives in src/registry.c. */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"

static void registry_help(void)
{
    printf("Usage: tracemark registry init     -r REGISTRY [-k KEYFILE]\n"
           "       tracemark registry list     -r REGISTRY [--copies] [--json]\n"
           "       tracemark registry show     -r REGISTRY [--json] ID\n"
           "       tracemark registry verify   -r REGISTRY -k KEYFILE [--json]\n"
           "       tracemark registry export   -r REGISTRY (--json | --csv) [-k KEYFILE]\n"
           "       tracemark registry stats    -r REGISTRY [--json] [-k KEYFILE]\n"
           "       tracemark registry merge    -r DEST -k KEYFILE [--json] SRC...\n"
           "       tracemark registry snapshot -r REGISTRY [--json] FILE\n"
           "\n"
           "The registry (a SQLite file) records every original image that was marked\n"
           "and every copy handed out: who received it, where it was written and the\n"
           "codeword its mark carries. `tracemark mark` fills it; `tracemark trace`\n"
           "reads it to name the recipient of a leaked copy. Each image and copy row\n"
           "carries a tag computed with the key, so a row edited without the key is\n"
           "detected, and a journal chained under the key records every row written,\n"
           "so rows deleted, put back, restored or swapped are detected too.\n"
           "\n"
           "Subcommands:\n"
           "  init     create an empty registry (bound to KEYFILE's fingerprint if given)\n"
           "  list     one line per original image with its number of copies, or with\n"
           "           --copies one line per copy (id, recipient, image, output, date)\n"
           "  show     the rows of ID: an image id (32 hex digits), a copy id (a number)\n"
           "           or a recipient\n"
           "  verify   check the file, the key, every row's tag and the journal; each\n"
           "           finding is reported on stderr as 'tracemark: REGISTRY: copy N:\n"
           "           reason' (or 'image ID: ...', 'journal entry N ...'). When all is\n"
           "           good it prints the journal's head: write it down after marking;\n"
           "           a registry later rolled back to an earlier state shows an earlier\n"
           "           head\n"
           "  export   every image and copy, with hashes, codewords and tags, for a case\n"
           "           file: one JSON document, or CSV with one row per copy (fields\n"
           "           quoted; a field that a spreadsheet would run as a formula, one\n"
           "           starting with = + - @, is prefixed with '). With -k, the\n"
           "           registry is verified first and the result goes in the JSON\n"
           "  stats    how many images, copies and recipients, the first and last\n"
           "           copy's date, the file's size; with -k, the journal's length\n"
           "           and head\n"
           "  merge    add each SRC registry (another host's, marked with the same key)\n"
           "           to DEST, which is created if missing. Each SRC is read only and\n"
           "           must verify in full (as verify) before anything is taken from\n"
           "           it, and DEST too. An image both have must agree on its content,\n"
           "           size, perceptual hash and parameters (DEST's original path and\n"
           "           date are kept); a copy both have (same image and recipient) must\n"
           "           have the same codeword, output path and output hash, and is then\n"
           "           already present. Any other difference is a conflict and the\n"
           "           merge is refused. New copies get new ids in DEST, tagged and\n"
           "           journaled there. All or nothing: on any refusal DEST is left as\n"
           "           it was; merging a SRC again adds nothing. One line per SRC, then\n"
           "           DEST's journal head (write it down)\n"
           "  snapshot a consistent copy of REGISTRY as it stands (others may be writing\n"
           "           to it) in the new FILE: the same rows, copy ids and journal, in a\n"
           "           file readers can use from read-only storage (trace workers)\n"
           "\n"
           "Options:\n"
           "  -r, --registry=FILE  the registry file\n"
           "  -k, --key=FILE       the secret key file (see `tracemark keygen`)\n"
           "      --copies         list: one line per copy instead of per image\n"
           "      --json           print one JSON object on stdout\n"
           "      --csv            export: CSV, one row per copy, with a header row\n"
           "  -h, --help           show this help\n"
           "\n"
           "Examples:\n"
           "  tracemark registry list -r designs.reg\n"
           "  tracemark registry show -r designs.reg alice@example.com\n"
           "  tracemark registry verify -r designs.reg -k team.key\n"
           "  tracemark registry export -r designs.reg --csv > case-2026-17.csv\n"
           "  tracemark registry merge -r designs.reg -k team.key host1.reg host2.reg\n"
           "\n"
           "Exit status: 0 success (verify: every row is good); 1 show found nothing, or\n"
           "verify found bad rows; 2 error (missing or damaged registry, wrong key; merge:\n"
           "a SRC refused or in conflict, DEST unchanged).\n");
}

typedef struct reg_opts {
    const char *registry;
    const char *keyfile;
    int json;
    int csv;
    int copies;
} reg_opts;

/* ---- output helpers ------------------------------------------------------ */

static void fmt_time(int64_t t, char buf[32])
{
    time_t tt = (time_t)t;
    struct tm tmv;
    if (!gmtime_r(&tt, &tmv) || !strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tmv)) snprintf(buf, 32, "%lld", (long long)t);
}

static void fmt_hex(const uint8_t *p, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[p[i] >> 4];
        out[2 * i + 1] = hx[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int reg_error(const reg_opts *o, tm_registry *reg, tm_status st)
{
    return cli_registry_status(o->registry, reg, st);
}

static int open_registry(const reg_opts *o, int create, tm_registry **reg)
{
    tm_status st = tm_registry_open(o->registry, create, reg);
    if (st == TM_OK) return CLI_OK;
    reg_error(o, *reg, st);
    tm_registry_free(*reg);
    *reg = NULL;
    return CLI_ERR;
}

/* A copy as a JSON object, left open for more members (close it with '}'). */
static void json_copy_open(FILE *f, const tm_reg_copy *c)
{
    char t[32], sha[65];
    fmt_time(c->created, t);
    fmt_hex(c->out_sha256, 32, sha);
    fprintf(f, "{\"copy\": %lld, \"recipient\": ", (long long)c->copy_id);
    cli_json_string(f, c->recipient);
    fputs(", \"image\": ", f);
    cli_json_string(f, c->image_id);
    fputs(", \"output\": ", f);
    cli_json_string(f, c->out_path);
    fprintf(f, ", \"output_sha256\": \"%s\", \"created\": \"%s\", \"code_bits\": %u", sha, t, c->code_len);
}

static void json_copy(FILE *f, const tm_reg_copy *c)
{
    json_copy_open(f, c);
    fputc('}', f);
}

static void human_copy_line(const tm_reg_copy *c)
{
    char t[32];
    fmt_time(c->created, t);
    printf("%-7lld %-28s %s  %s  %s\n", (long long)c->copy_id, c->recipient, c->image_id, t, c->out_path);
}

static void human_copy_header(void)
{
    printf("%-7s %-28s %-32s  %-20s  %s\n", "COPY", "RECIPIENT", "IMAGE", "CREATED", "OUTPUT");
}

static void print_copies(const reg_opts *o, const tm_reg_copy *arr, size_t n)
{
    if (o->json) {
        fputs("[", stdout);
        for (size_t i = 0; i < n; i++) {
            if (i) fputs(", ", stdout);
            json_copy(stdout, &arr[i]);
        }
        fputs("]", stdout);
        return;
    }
    if (n) human_copy_header();
    for (size_t i = 0; i < n; i++) human_copy_line(&arr[i]);
}

static void json_image(FILE *f, const tm_reg_image *img, uint64_t n_copies)
{
    char t[32], sha[65];
    fmt_time(img->created, t);
    fmt_hex(img->content_sha256, 32, sha);
    fprintf(f, "{\"image\": \"%s\", \"width\": %d, \"height\": %d, \"original\": ", img->image_id, img->width,
            img->height);
    if (img->original_path) cli_json_string(f, img->original_path);
    else fputs("null", f);
    fprintf(f, ", \"sha256\": \"%s\", \"phash\": \"%016llx\", \"params\": ", sha, (unsigned long long)img->phash);
    cli_json_string(f, img->params);
    fprintf(f, ", \"created\": \"%s\", \"copies\": %llu}", t, (unsigned long long)n_copies);
}

/* ---- init ----------------------------------------------------------------- */

static int registry_init(const reg_opts *o)
{
    struct stat sb;
    if (stat(o->registry, &sb) == 0) return cli_status(o->registry, TM_ERR_EXISTS);
    tm_key *key = NULL;
    tm_registry *reg = NULL;
    int rc = CLI_ERR;
    char fp[17] = "";
    if (o->keyfile) {
        tm_status st = tm_key_load(o->keyfile, &key);
        if (st == TM_OK) st = tm_key_fingerprint(key, fp);
        if (st != TM_OK) {
            cli_input_status(o->keyfile, st);
            goto out;
        }
    }
    if (open_registry(o, 1, &reg) != CLI_OK) goto out;
    if (key) {
        tm_status st = tm_registry_check_key(reg, key);
        if (st != TM_OK) {
            reg_error(o, reg, st);
            goto out;
        }
        printf("%s: created, bound to key %s\n", o->registry, fp);
    } else {
        printf("%s: created\n", o->registry);
    }
    rc = CLI_OK;
out:
    tm_registry_free(reg);
    tm_key_free(key);
    return rc;
}

/* ---- list ----------------------------------------------------------------- */

typedef struct list_state {
    const reg_opts *o;
    size_t n;
} list_state;

static int list_one_image(void *ud, const tm_reg_image *img, uint64_t n_copies)
{
    list_state *ls = ud;
    if (ls->o->json) {
        fputs(ls->n ? ", " : "", stdout);
        json_image(stdout, img, n_copies);
    } else {
        char t[32], size[32];
        if (!ls->n) printf("%-32s  %-11s %7s  %-20s  %s\n", "IMAGE", "SIZE", "COPIES", "CREATED", "ORIGINAL");
        fmt_time(img->created, t);
        snprintf(size, sizeof size, "%dx%d", img->width, img->height);
        printf("%-32s  %-11s %7llu  %-20s  %s\n", img->image_id, size, (unsigned long long)n_copies, t,
               img->original_path ? img->original_path : "-");
    }
    ls->n++;
    return 0;
}

static int registry_list(const reg_opts *o)
{
    tm_registry *reg = NULL;
    if (open_registry(o, 0, &reg) != CLI_OK) return CLI_ERR;
    int rc = CLI_ERR;
    tm_reg_copy *arr = NULL;
    size_t n = 0;
    tm_status st;
    if (o->copies) {
        st = tm_registry_load_copies(reg, NULL, &arr, &n);
        if (st != TM_OK) {
            reg_error(o, reg, st);
            goto out;
        }
        if (o->json) {
            fputs("{\"registry\": ", stdout);
            cli_json_string(stdout, o->registry);
            fputs(", \"copies\": ", stdout);
        }
        print_copies(o, arr, n);
        if (o->json) fputs("}\n", stdout);
    } else {
        /* Images stream out as they are read, so a JSON document can only be
         * started once the registry has opened (done above). */
        list_state ls = {o, 0};
        if (o->json) {
            fputs("{\"registry\": ", stdout);
            cli_json_string(stdout, o->registry);
            fputs(", \"images\": [", stdout);
        }
        st = tm_registry_list_images(reg, list_one_image, &ls);
        if (o->json) fputs("]}\n", stdout);
        if (st != TM_OK) {
            reg_error(o, reg, st);
            goto out;
        }
    }
    rc = CLI_OK;
out:
    tm_reg_copies_free(arr, n);
    tm_registry_free(reg);
    return rc;
}

/* ---- show ----------------------------------------------------------------- */

static int is_image_id(const char *s)
{
    size_t i = 0;
    for (; s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return i == TM_IMAGE_ID_LEN;
}

static void human_image(const tm_reg_image *img, uint64_t n_copies)
{
    char t[32], sha[65];
    fmt_time(img->created, t);
    fmt_hex(img->content_sha256, 32, sha);
    printf("image %s\n", img->image_id);
    printf("  size       %dx%d\n", img->width, img->height);
    printf("  original   %s\n", img->original_path ? img->original_path : "-");
    printf("  sha256     %s\n", sha);
    printf("  phash      %016llx\n", (unsigned long long)img->phash);
    printf("  params     %s\n", img->params ? img->params : "");
    printf("  created    %s\n", t);
    printf("  copies     %llu\n", (unsigned long long)n_copies);
}

static int registry_show(const reg_opts *o, const char *id)
{
    tm_registry *reg = NULL;
    if (open_registry(o, 0, &reg) != CLI_OK) return CLI_ERR;
    int rc = CLI_ERR, have_image = 0;
    tm_reg_image img;
    memset(&img, 0, sizeof img);
    tm_reg_copy *arr = NULL;
    size_t n = 0;
    tm_status st = TM_ERR_NOT_FOUND;

    if (is_image_id(id)) {
        st = tm_registry_get_image(reg, id, &img);
        if (st == TM_OK) {
            have_image = 1;
            st = tm_registry_load_copies(reg, id, &arr, &n);
        }
    }
    if (st == TM_ERR_NOT_FOUND) {
        uint64_t num;
        if (cli_parse_u64(id, &num) == 0 && num <= INT64_MAX) {
            st = tm_registry_get_copy(reg, (int64_t)num, &arr);
            if (st == TM_OK) n = 1;
        }
    }
    if (st == TM_ERR_NOT_FOUND) {
        st = tm_registry_load_copies_by_recipient(reg, id, &arr, &n);
        if (st == TM_OK && n == 0) st = TM_ERR_NOT_FOUND;
    }
    if (st == TM_ERR_NOT_FOUND) {
        cli_error(o->registry, "no image, copy or recipient '%s'", id);
        rc = CLI_NONE;
        goto out;
    }
    if (st != TM_OK) {
        reg_error(o, reg, st);
        goto out;
    }

    if (o->json) {
        fputs("{\"registry\": ", stdout);
        cli_json_string(stdout, o->registry);
        fputs(", \"query\": ", stdout);
        cli_json_string(stdout, id);
        fputs(", \"image\": ", stdout);
        if (have_image) json_image(stdout, &img, n);
        else fputs("null", stdout);
        fputs(", \"copies\": ", stdout);
        print_copies(o, arr, n);
        fputs("}\n", stdout);
    } else if (have_image) {
        human_image(&img, n);
        if (n) putchar('\n');
        print_copies(o, arr, n);
    } else {
        for (size_t i = 0; i < n; i++) {
            const tm_reg_copy *c = &arr[i];
            char t[32], sha[65];
            fmt_time(c->created, t);
            fmt_hex(c->out_sha256, 32, sha);
            if (i) putchar('\n');
            printf("copy %lld\n", (long long)c->copy_id);
            printf("  recipient  %s\n", c->recipient);
            printf("  image      %s\n", c->image_id);
            printf("  output     %s\n", c->out_path);
            printf("  sha256     %s\n", sha);
            printf("  created    %s\n", t);
            printf("  code bits  %u\n", c->code_len);
        }
    }
    rc = CLI_OK;
out:
    tm_reg_image_clear(&img);
    tm_reg_copies_free(arr, n);
    tm_registry_free(reg);
    return rc;
}

/* ---- verify --------------------------------------------------------------- */

typedef struct bad_list {
    const reg_opts *o;
    int64_t *ids;
    char **why;
    size_t n, cap;
    int oom;
} bad_list;

static void on_bad_row(void *ud, int64_t copy_id, const char *why)
{
    bad_list *b = ud;
    if (copy_id > 0) cli_error(b->o->registry, "copy %lld: %s", (long long)copy_id, why);
    else cli_error(b->o->registry, "%s", why);
    if (!b->o->json || b->oom) return;
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 16;
        int64_t *ids = realloc(b->ids, cap * sizeof *ids);
        if (ids) b->ids = ids;
        char **w = ids ? realloc(b->why, cap * sizeof *w) : NULL;
        if (!w) {
            b->oom = 1;
            return;
        }
        b->why = w;
        b->cap = cap;
    }
    char *copy = malloc(strlen(why) + 1);
    if (!copy) {
        b->oom = 1;
        return;
    }
    strcpy(copy, why);
    b->ids[b->n] = copy_id;
    b->why[b->n++] = copy;
}

static int registry_verify(const reg_opts *o)
{
    if (!o->keyfile) return cli_usage("registry verify", "missing -k KEYFILE");
    tm_key *key = NULL;
    tm_registry *reg = NULL;
    bad_list bad = {o, NULL, NULL, 0, 0, 0};
    int rc = CLI_ERR;
    tm_status st = tm_key_load(o->keyfile, &key);
    if (st != TM_OK) {
        cli_input_status(o->keyfile, st);
        goto out;
    }
    if (open_registry(o, 0, &reg) != CLI_OK) goto out;
    uint64_t total = 0;
    st = tm_registry_count_copies(reg, NULL, &total);
    size_t n_bad = 0;
    if (st == TM_OK) st = tm_registry_verify(reg, key, on_bad_row, &bad, &n_bad);
    if (st != TM_OK && st != TM_ERR_TAMPERED) {
        reg_error(o, reg, st);
        goto out;
    }
    if (bad.oom) {
        cli_status(o->registry, TM_ERR_NOMEM);
        goto out;
    }
    /* the journal's head, to be written down (a rollback shows an earlier one) */
    uint64_t entries = 0;
    char head[17] = "";
    if (!n_bad && (st = tm_registry_journal(reg, key, &entries, head)) != TM_OK) {
        reg_error(o, reg, st);
        goto out;
    }
    if (o->json) {
        fputs("{\"registry\": ", stdout);
        cli_json_string(stdout, o->registry);
        fprintf(stdout, ", \"copies\": %llu, \"ok\": %s, \"journal\": {\"entries\": %llu, \"head\": ",
                (unsigned long long)total, n_bad ? "false" : "true", (unsigned long long)entries);
        if (head[0]) fprintf(stdout, "\"%s\"}", head);
        else fputs("null}", stdout);
        fputs(", \"bad\": [", stdout);
        for (size_t i = 0; i < bad.n; i++) {
            if (bad.ids[i] > 0) fprintf(stdout, "%s{\"copy\": %lld, \"reason\": ", i ? ", " : "", (long long)bad.ids[i]);
            else fprintf(stdout, "%s{\"copy\": null, \"reason\": ", i ? ", " : "");
            cli_json_string(stdout, bad.why[i]);
            fputs("}", stdout);
        }
        fputs("]}\n", stdout);
    } else if (n_bad) {
        printf("%s: %zu finding%s, %llu copies checked: failed verification\n", o->registry, n_bad,
               n_bad == 1 ? "" : "s", (unsigned long long)total);
    } else if (head[0]) {
        printf("%s: %llu copies verified, all good; journal of %llu entries, head %s\n", o->registry,
               (unsigned long long)total, (unsigned long long)entries, head);
    } else {
        printf("%s: %llu copies verified, all good\n", o->registry, (unsigned long long)total);
    }
    rc = n_bad ? CLI_NONE : CLI_OK;
out:
    for (size_t i = 0; i < bad.n; i++) free(bad.why[i]);
    free(bad.why);
    free(bad.ids);
    tm_registry_free(reg);
    tm_key_free(key);
    return rc;
}

/* ---- export and stats ----------------------------------------------------- */

/* One CSV field, RFC 4180: quoted, quotes doubled; a leading = + - @ gets
 * a ' so that a spreadsheet shows the text instead of running it. */
static void csv_field(const char *v, int last)
{
    putchar('"');
    if (v && strchr("=+-@", v[0]) && v[0]) putchar('\'');
    for (const char *p = v ? v : ""; *p; p++) {
        if (*p == '"') putchar('"');
        putchar(*p);
    }
    putchar('"');
    putchar(last ? '\n' : ',');
}

/* The key's view of the registry, when -k is given: verified (findings
 * counted), and the journal's length and head. */
typedef struct key_view {
    int have;
    size_t findings;
    uint64_t entries;
    char head[17];
} key_view;

static int key_view_load(const reg_opts *o, tm_registry *reg, key_view *kv)
{
    memset(kv, 0, sizeof *kv);
    if (!o->keyfile) return CLI_OK;
    tm_key *key = NULL;
    tm_status st = tm_key_load(o->keyfile, &key);
    if (st != TM_OK) {
        cli_input_status(o->keyfile, st);
        return CLI_ERR;
    }
    st = tm_registry_verify(reg, key, NULL, NULL, &kv->findings);
    if (st == TM_OK || st == TM_ERR_TAMPERED) {
        tm_status hs = tm_registry_journal(reg, key, &kv->entries, kv->head);
        if (hs != TM_OK) kv->head[0] = '\0';
        st = TM_OK;
    }
    tm_key_free(key);
    if (st != TM_OK) return reg_error(o, reg, st);
    kv->have = 1;
    return CLI_OK;
}

static void json_key_view(const key_view *kv)
{
    if (!kv->have) {
        fputs("null", stdout);
        return;
    }
    printf("{\"verified\": %s, \"findings\": %zu, \"entries\": %llu, \"head\": ", kv->findings ? "false" : "true",
           kv->findings, (unsigned long long)kv->entries);
    if (kv->head[0]) printf("\"%s\"}", kv->head);
    else fputs("null}", stdout);
}

/* A copy's codeword in hex, malloc'd (NULL when out of memory). */
static char *codeword_hex(const tm_reg_copy *c)
{
    size_t nb = (c->code_len + 7u) / 8u;
    char *cw = malloc(2 * nb + 1);
    if (cw) fmt_hex(c->codeword, nb, cw);
    return cw;
}

static int export_image(void *ud, const tm_reg_image *img, uint64_t n_copies)
{
    size_t *n = ud;
    fputs(*n ? ", " : "", stdout);
    json_image(stdout, img, n_copies);
    (*n)++;
    return 0;
}

static int registry_export(const reg_opts *o)
{
    if (o->json == o->csv) return cli_usage("registry export", "want one of --json or --csv");
    tm_registry *reg = NULL;
    if (open_registry(o, 0, &reg) != CLI_OK) return CLI_ERR;
    int rc = CLI_ERR;
    tm_reg_copy *arr = NULL;
    size_t n = 0, n_images = 0;
    key_view kv;
    tm_status st = tm_registry_load_copies(reg, NULL, &arr, &n);
    if (st != TM_OK) {
        reg_error(o, reg, st);
        goto out;
    }
    if (key_view_load(o, reg, &kv) != CLI_OK) goto out;
    if (o->csv) {
        static const char *const head[] = {"copy", "recipient", "image", "output", "output_sha256", "created",
                                           "code_bits", "codeword", "tag"};
        for (size_t i = 0; i < sizeof head / sizeof head[0]; i++) csv_field(head[i], i + 1 == sizeof head / sizeof head[0]);
        for (size_t i = 0; i < n; i++) {
            const tm_reg_copy *c = &arr[i];
            char id[24], t[32], sha[65], bits[16], tag[65];
            char *cw = codeword_hex(c);
            if (!cw) {
                cli_error(NULL, "out of memory");
                goto out;
            }
            snprintf(id, sizeof id, "%lld", (long long)c->copy_id);
            snprintf(bits, sizeof bits, "%u", c->code_len);
            fmt_time(c->created, t);
            fmt_hex(c->out_sha256, 32, sha);
            fmt_hex(c->tag, 32, tag);
            const char *row[] = {id, c->recipient, c->image_id, c->out_path, sha, t, bits, cw, tag};
            for (size_t k = 0; k < sizeof row / sizeof row[0]; k++) csv_field(row[k], k + 1 == sizeof row / sizeof row[0]);
            free(cw);
        }
    } else {
        char now[32];
        fmt_time((int64_t)time(NULL), now);
        fputs("{\"registry\": ", stdout);
        cli_json_string(stdout, o->registry);
        printf(", \"exported\": \"%s\", \"key\": ", now);
        json_key_view(&kv);
        fputs(", \"images\": [", stdout);
        st = tm_registry_list_images(reg, export_image, &n_images);
        fputs("], \"copies\": [", stdout);
        for (size_t i = 0; i < n; i++) {
            const tm_reg_copy *c = &arr[i];
            char *cw = codeword_hex(c), tag[65];
            if (!cw) {
                cli_error(NULL, "out of memory");
                goto out;
            }
            fmt_hex(c->tag, 32, tag);
            fputs(i ? ", " : "", stdout);
            json_copy_open(stdout, c);
            printf(", \"codeword\": \"%s\", \"tag\": \"%s\"}", cw, tag);
            free(cw);
        }
        fputs("]}\n", stdout);
        if (st != TM_OK) {
            reg_error(o, reg, st);
            goto out;
        }
    }
    rc = CLI_OK;
out:
    tm_reg_copies_free(arr, n);
    tm_registry_free(reg);
    return rc;
}

static int count_image(void *ud, const tm_reg_image *img, uint64_t n_copies)
{
    (void)img;
    (void)n_copies;
    (*(size_t *)ud)++;
    return 0;
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int registry_stats(const reg_opts *o)
{
    tm_registry *reg = NULL;
    if (open_registry(o, 0, &reg) != CLI_OK) return CLI_ERR;
    int rc = CLI_ERR;
    tm_reg_copy *arr = NULL;
    const char **who = NULL;
    size_t n = 0;
    key_view kv;
    size_t images = 0;
    tm_status st = tm_registry_load_copies(reg, NULL, &arr, &n);
    if (st == TM_OK) st = tm_registry_list_images(reg, count_image, &images);
    if (st != TM_OK) {
        reg_error(o, reg, st);
        goto out;
    }
    if (key_view_load(o, reg, &kv) != CLI_OK) goto out;
    who = malloc((n ? n : 1) * sizeof *who);
    if (!who) {
        cli_error(NULL, "out of memory");
        goto out;
    }
    int64_t first = 0, last = 0;
    for (size_t i = 0; i < n; i++) {
        who[i] = arr[i].recipient;
        if (!i || arr[i].created < first) first = arr[i].created;
        if (!i || arr[i].created > last) last = arr[i].created;
    }
    qsort(who, n, sizeof *who, cmp_cstr);
    size_t recipients = 0;
    for (size_t i = 0; i < n; i++) recipients += !i || strcmp(who[i], who[i - 1]);
    struct stat sb;
    long long bytes = stat(o->registry, &sb) == 0 ? (long long)sb.st_size : -1;
    char t0[32] = "-", t1[32] = "-";
    if (n) fmt_time(first, t0), fmt_time(last, t1);
    if (o->json) {
        fputs("{\"registry\": ", stdout);
        cli_json_string(stdout, o->registry);
        printf(", \"bytes\": %lld, \"images\": %zu, \"copies\": %zu, \"recipients\": %zu, \"first\": ", bytes,
               images, n, recipients);
        if (n) printf("\"%s\", \"last\": \"%s\"", t0, t1);
        else fputs("null, \"last\": null", stdout);
        fputs(", \"key\": ", stdout);
        json_key_view(&kv);
        fputs("}\n", stdout);
    } else {
        printf("registry    %s (%lld bytes)\n", o->registry, bytes);
        printf("images      %zu\n", images);
        printf("copies      %zu, to %zu recipient%s\n", n, recipients, recipients == 1 ? "" : "s");
        printf("first copy  %s\nlast copy   %s\n", t0, t1);
        if (kv.have) {
            printf("verified    %s\n", kv.findings ? "NO: run 'tracemark registry verify'" : "yes");
            if (kv.head[0]) printf("journal     %llu entries, head %s\n", (unsigned long long)kv.entries, kv.head);
        }
    }
    rc = CLI_OK;
out:
    free(who);
    tm_reg_copies_free(arr, n);
    tm_registry_free(reg);
    return rc;
}

/* ---- merge and snapshot -------------------------------------------------- */

static void json_merge_source(const char *file, const tm_merge_stats *m, int first)
{
    fputs(first ? "" : ", ", stdout);
    fputs("{\"file\": ", stdout);
    cli_json_string(stdout, file);
    printf(", \"images\": %llu, \"images_added\": %llu, \"copies\": %llu, \"copies_added\": %llu, "
           "\"copies_present\": %llu}",
           (unsigned long long)m->images, (unsigned long long)m->images_added, (unsigned long long)m->copies,
           (unsigned long long)m->copies_added, (unsigned long long)(m->copies - m->copies_added));
}

static int registry_merge(const reg_opts *o, int nsrc, char **srcs)
{
    if (!o->keyfile) return cli_usage("registry merge", "missing -k KEYFILE");
    tm_key *key = NULL;
    tm_registry *dest = NULL;
    tm_registry **src = calloc((size_t)nsrc, sizeof *src);
    tm_merge_stats *ms = calloc((size_t)nsrc, sizeof *ms);
    int rc = CLI_ERR, batch = 0;
    tm_status st;
    if (!src || !ms) {
        cli_error(NULL, "out of memory");
        goto out;
    }
    if ((st = tm_key_load(o->keyfile, &key)) != TM_OK) {
        cli_input_status(o->keyfile, st);
        goto out;
    }
    /* the shards first: one that cannot be read is refused before DEST is touched */
    for (int i = 0; i < nsrc; i++)
        if ((st = tm_registry_open_readonly(srcs[i], &src[i])) != TM_OK) {
            cli_registry_status(srcs[i], src[i], st);
            goto out;
        }
    if (open_registry(o, 1, &dest) != CLI_OK) goto out;
    if ((st = tm_registry_check_key(dest, key)) != TM_OK || (st = tm_registry_begin(dest)) != TM_OK) {
        reg_error(o, dest, st);
        goto out;
    }
    batch = 1;
    /* DEST verified once, under the write lock the merges then use */
    if ((st = tm_registry_verify_whole(dest, key)) != TM_OK) {
        reg_error(o, dest, st);
        goto out;
    }
    for (int i = 0; i < nsrc; i++)
        if ((st = tm_registry_merge(dest, src[i], key, &ms[i])) != TM_OK) {
            if (ms[i].src_at_fault) cli_registry_status(srcs[i], src[i], st);
            else reg_error(o, dest, st);
            goto out;
        }
    st = tm_registry_commit(dest);
    batch = 0;
    uint64_t entries = 0, total = 0, added = 0;
    char head[17] = "";
    if (st == TM_OK) st = tm_registry_journal(dest, key, &entries, head);
    if (st == TM_OK) st = tm_registry_count_copies(dest, NULL, &total);
    if (st != TM_OK) {
        reg_error(o, dest, st);
        goto out;
    }
    for (int i = 0; i < nsrc; i++) added += ms[i].copies_added;
    if (o->json) {
        fputs("{\"registry\": ", stdout);
        cli_json_string(stdout, o->registry);
        fputs(", \"sources\": [", stdout);
        for (int i = 0; i < nsrc; i++) json_merge_source(srcs[i], &ms[i], i == 0);
        printf("], \"added\": %llu, \"copies\": %llu, \"journal\": {\"entries\": %llu, \"head\": ",
               (unsigned long long)added, (unsigned long long)total, (unsigned long long)entries);
        if (head[0]) printf("\"%s\"}}\n", head);
        else fputs("null}}\n", stdout);
    } else {
        for (int i = 0; i < nsrc; i++) {
            const tm_merge_stats *m = &ms[i];
            printf("%s: %llu image%s (%llu new), %llu cop%s: %llu added, %llu already present%s\n", srcs[i],
                   (unsigned long long)m->images, m->images == 1 ? "" : "s", (unsigned long long)m->images_added,
                   (unsigned long long)m->copies, m->copies == 1 ? "y" : "ies", (unsigned long long)m->copies_added,
                   (unsigned long long)(m->copies - m->copies_added),
                   m->copies_added || m->images_added ? "" : " (merged before: nothing to add)");
        }
        printf("%s: %llu cop%s added from %d registr%s, %llu in all", o->registry, (unsigned long long)added,
               added == 1 ? "y" : "ies", nsrc, nsrc == 1 ? "y" : "ies", (unsigned long long)total);
        if (head[0]) printf("; journal of %llu entries, head %s", (unsigned long long)entries, head);
        putchar('\n');
    }
    rc = CLI_OK;
out:
    if (batch) tm_registry_rollback(dest);
    tm_registry_free(dest);
    for (int i = 0; src && i < nsrc; i++) tm_registry_free(src[i]);
    free(src);
    free(ms);
    tm_key_free(key);
    return rc;
}

static int registry_snapshot(const reg_opts *o, const char *file)
{
    tm_registry *reg = NULL, *snap = NULL;
    int rc = CLI_ERR;
    uint64_t n = 0;
    tm_status st = tm_registry_open_readonly(o->registry, &reg);
    if (st != TM_OK) {
        reg_error(o, reg, st);
        goto out;
    }
    if ((st = tm_registry_snapshot(reg, file)) != TM_OK) {
        cli_registry_status(file, reg, st);
        goto out;
    }
    /* counted in the snapshot itself: the registry may have moved on */
    if ((st = tm_registry_open_readonly(file, &snap)) != TM_OK || (st = tm_registry_count_copies(snap, NULL, &n)) != TM_OK) {
        cli_registry_status(file, snap, st);
        goto out;
    }
    if (o->json) {
        fputs("{\"registry\": ", stdout);
        cli_json_string(stdout, o->registry);
        fputs(", \"snapshot\": ", stdout);
        cli_json_string(stdout, file);
        printf(", \"copies\": %llu}\n", (unsigned long long)n);
    } else {
        printf("%s: snapshot of %s, %llu cop%s\n", file, o->registry, (unsigned long long)n, n == 1 ? "y" : "ies");
    }
    rc = CLI_OK;
out:
    tm_registry_free(snap);
    tm_registry_free(reg);
    return rc;
}

/* ---- dispatch ------------------------------------------------------------- */

int cmd_registry(int argc, char **argv)
{
    enum { OPT_JSON = 256, OPT_COPIES, OPT_CSV };
    static const struct option opts[] = {
        {"registry", required_argument, NULL, 'r'},
        {"key", required_argument, NULL, 'k'},
        {"json", no_argument, NULL, OPT_JSON},
        {"csv", no_argument, NULL, OPT_CSV},
        {"copies", no_argument, NULL, OPT_COPIES},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
#define SUBCOMMANDS "init, list, show, verify, export, stats, merge or snapshot"
    if (argc < 2) return cli_usage("registry", "missing subcommand (" SUBCOMMANDS ")");
    const char *sub = argv[1];
    if (!strcmp(sub, "-h") || !strcmp(sub, "--help")) {
        registry_help();
        return CLI_OK;
    }
    static const char *const subs[] = {"init", "list", "show", "verify", "export", "stats", "merge", "snapshot"};
    size_t which = 0;
    while (which < sizeof subs / sizeof subs[0] && strcmp(sub, subs[which])) which++;
    if (which == sizeof subs / sizeof subs[0])
        return cli_usage("registry", "unknown subcommand '%s' (" SUBCOMMANDS ")", sub);

    char cmd[32];
    snprintf(cmd, sizeof cmd, "registry %s", sub);
    reg_opts o = {NULL, NULL, 0, 0, 0};
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc - 1, argv + 1, ":r:k:h", opts, NULL)) != -1) {
        switch (c) {
        case 'r': o.registry = optarg; break;
        case 'k': o.keyfile = optarg; break;
        case OPT_JSON: o.json = 1; break;
        case OPT_COPIES: o.copies = 1; break;
        case OPT_CSV: o.csv = 1; break;
        case 'h': registry_help(); return CLI_OK;
        case ':': return cli_usage(cmd, "option '%s' needs an argument", argv[optind]);
        default: return cli_usage(cmd, "unknown option '%s'", argv[optind]);
        }
    }
    int nargs = argc - 1 - optind;
    char **args = argv + 1 + optind;
    if (!o.registry) return cli_usage(cmd, "missing -r REGISTRY");
    if (o.copies && strcmp(sub, "list")) return cli_usage(cmd, "--copies applies to list only");
    if (o.csv && strcmp(sub, "export")) return cli_usage(cmd, "--csv applies to export only");
    if (!strcmp(sub, "show")) {
        if (nargs != 1) return cli_usage(cmd, nargs ? "too many arguments" : "missing ID");
        return registry_show(&o, args[0]);
    }
    if (!strcmp(sub, "merge")) {
        if (nargs < 1) return cli_usage(cmd, "missing SRC registry");
        return registry_merge(&o, nargs, args);
    }
    if (!strcmp(sub, "snapshot")) {
        if (nargs != 1) return cli_usage(cmd, nargs ? "too many arguments" : "missing FILE");
        return registry_snapshot(&o, args[0]);
    }
    if (nargs) return cli_usage(cmd, "unexpected argument '%s'", args[0]);
    if (!strcmp(sub, "init")) return registry_init(&o);
    if (!strcmp(sub, "list")) return registry_list(&o);
    if (!strcmp(sub, "export")) return registry_export(&o);
    if (!strcmp(sub, "stats")) return registry_stats(&o);
    return registry_verify(&o);
}
