/* cmd_robustness.c -- `tracemark robustness [OPTIONS] [CORPUS_DIR]`: sweep a
 * corpus through a grid of attacks (the library's lab.c does the work, in
 * worker processes) and report identification rate, false accusations and
 * invisibility as markdown, JSON and an HTML report. This file parses the
 * options, shows progress on a terminal, turns Ctrl-C into a clean stop and
 * prints. */
#include "config.h"

#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#ifndef TM_CORPUS_DIR
#define TM_CORPUS_DIR NULL
#endif

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

static void robustness_help(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t n_default = 0;
    tm_lab_grid *g = NULL;
    if (tm_lab_grid_parse(tm_lab_grid_default_text(), &g, NULL, 0) == TM_OK) n_default = tm_lab_grid_size(g);
    tm_lab_grid_free(g);
    printf("Usage: tracemark robustness [OPTIONS] [CORPUS_DIR]\n"
           "\n"
           "Measures how well the mark survives: every JPEG, PNG and WebP image of\n"
           "CORPUS_DIR goes through every attack of a grid. Per image, copies are marked\n"
           "for the leakers (-l) among a registry of N copies (-n, synthesised from their\n"
           "codewords: no registry file); each leaked copy is attacked and traced at the\n"
           "budget. The null side traces the unmarked original through the same attack,\n"
           "and the attacked leaked copy under a wrong key: any accusation there is false.\n"
           "Every leak trace also scores the N-1 other copies, innocents that must not be\n"
           "accused: a large -n (100000) adds innocent scorings for little time.\n"
           "A markdown summary goes to stdout; --json writes every trial, --report an HTML\n"
           "page with plots (identification rate against attack strength, true copies\n"
           "against nulls, PSNR/SSIM per image, the mark shown on one image).\n"
           "\n"
           "CORPUS_DIR defaults to corpus/ in the source tree tracemark was built from\n"
           "(%s); an installed tracemark wants it given.\n"
           "\n"
           "An attack is a pipeline of stages separated by '|', each one of:\n"
           "  CHAIN        a tracemark attack chain: jpeg:q=50, crop:0.5,jpeg:q=75\n"
           "               ('tracemark attack --help' lists the steps)\n"
           "  none         the marked copy as handed out (8-bit, lossless)\n"
           "  im:ARGS      ImageMagick: convert IN.pnm ARGS OUT.png (words split at\n"
           "               blanks, quotes group, no shell)\n"
           "  imjpg:ARGS   the same, read back from OUT.jpg (ARGS should set -quality)\n"
           "  collude:C:SPEC  first stage only: C marked copies (the leaked copy and the\n"
           "               next C-1, 2..16) combined by a 'tracemark attack' combine spec,\n"
           "               e.g. collude:3:average,jpeg:q=85; traced once per image, and\n"
           "               counted as identified when at least one colluder and nobody\n"
           "               else is accused (the report also counts every colluder)\n"
           "e.g. \"scale:0.8|imjpg:-quality 70\". The built-in grid has %zu attacks\n"
           "(--list-grid prints it); -a or --grid replace it. Every attack is tried on a\n"
           "small synthetic image before any work, so a bad spec fails at once. Attacks\n"
           "that differ in one number only (jpeg:q=90, jpeg:q=50, ...) become a curve\n"
           "in the report.\n"
           "\n"
           "Options:\n"
           "  -a, --attacks \"A;B\"    the attacks to run, separated by ';'\n"
           "      --grid FILE        read the attacks from FILE: one per line, '#' starts\n"
           "                         a comment line\n"
           "      --list-grid        print the grid and exit (a grid given is checked\n"
           "                         first: each attack tried once)\n"
           "  -n, --copies N         registry size per image, leakers included (default 1000)\n"
           "  -l, --leakers L        leaked copies per image (default 1)\n"
           "  -m, --min-pixels P     skip images with fewer than P pixels (default 0)\n"
           "      --fpr P            per-trace false-accusation budget (default 1e-6)\n"
           "      --nulls N          null traces per image and attack (default 1): 2 =\n"
           "                         the unmarked original and the wrong key; 1 = one of\n"
           "                         the two, alternating over images and attacks, so\n"
           "                         both kinds cover every attack at half the cost;\n"
           "                         0 = none\n"
           "  -j, --jobs N           worker processes, one image at a time each, largest\n"
           "                         first (default: online CPUs, here %ld)\n"
           "  -k, --key KEYFILE      mark under this key (default: a fixed built-in lab\n"
           "                         key, so runs are reproducible)\n"
           "      --strength S       mark strength, RMS luminance change (default 2.0)\n"
           "      --informed         trace with the unmarked original, as 'trace --original'\n"
           "                         does (its null traces too)\n"
           "      --json FILE        write every trial and the summary as JSON\n"
           "      --report FILE      write the HTML report (self-contained: no external\n"
           "                         resource; open it in any browser)\n"
           "      --showcase NAME    the image whose mark the report shows (default: the\n"
           "                         first of at least 1 MP)\n"
           "  -f, --force            replace existing --json/--report files\n"
           "  -q, --quiet            no progress bar, no summary on stdout (as tracemark -q)\n"
           "  -h, --help             show this help\n"
           "\n"
           "Progress goes to stderr when it is a terminal. Ctrl-C (or SIGTERM) stops the\n"
           "workers, removes the scratch directory (under $TMPDIR or /tmp) and writes\n"
           "nothing. A worker needs about 2 GB at the peak of a 20 MP image (scale:2\n"
           "makes it 80 MP): lower -j if memory is short.\n"
           "\n"
           "Examples:\n"
           "  tracemark robustness --json sweep.json --report sweep.html\n"
           "  tracemark robustness -a \"jpeg:q=50;scale:0.5;crop:0.6\" ~/photos\n"
           "  tracemark robustness --grid bench/grids/geometric.grid -n 10000 -l 3 -m 1000000\n"
           "\n"
           "Exit status: 0 the sweep ran (whatever it identified), 2 error (nothing\n"
           "written), 3 the sweep ran but accused an innocent at least once: a false\n"
           "accusation, which the bound promises not to happen (outputs are written).\n"
           "Interrupted, it ends by the signal (130 in a shell for Ctrl-C).\n",
           TM_CORPUS_DIR ? TM_CORPUS_DIR : "none recorded", n_default, cpus > 0 ? cpus : 1);
}

/* Progress on a terminal (cli_progress); a stop signal ends the run. */
static int on_progress(void *ud, size_t done, size_t total)
{
    if (stop_signal) return 1;
    cli_progress_show(ud, done, total);
    return 0;
}

/* The command line as one string, arguments with blanks or quotes quoted. */
static char *command_line(int argc, char **argv)
{
    size_t len = 32;
    for (int i = 0; i < argc; i++) len += 4 * strlen(argv[i]) + 3;
    char *s = malloc(len), *p = s;
    if (!s) return NULL;
    p += sprintf(p, "tracemark");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int plain = *a && strcspn(a, " \t\n'\"\\$`|;&<>()*?[]#~!{}") == strlen(a);
        *p++ = ' ';
        if (plain) {
            p += sprintf(p, "%s", a);
            continue;
        }
        *p++ = '\'';
        for (; *a; a++) {
            if (*a == '\'') p += sprintf(p, "'\\''");
            else *p++ = *a;
        }
        *p++ = '\'';
        *p = 0;
    }
    return s;
}

/* Refuses an output that exists (without --force) or whose directory is not
 * writable, before minutes of work are spent. */
static int check_output(const char *path, int force)
{
    if (!path) return CLI_OK;
    if (!force && access(path, F_OK) == 0) {
        cli_error(path, "file exists (use --force to replace it)");
        return CLI_ERR;
    }
    char *dir = strdup(path);
    if (!dir) {
        cli_error(NULL, "out of memory");
        return CLI_ERR;
    }
    char *slash = strrchr(dir, '/');
    const char *d = slash ? (slash == dir ? "/" : (*slash = 0, dir)) : ".";
    int ok = access(d, W_OK) == 0;
    if (!ok) cli_error(path, "cannot write in %s", d);
    free(dir);
    return ok ? CLI_OK : CLI_ERR;
}

/* Installs on_signal for sig unless the signal is ignored (a background job). */
static void catch_signal(int sig)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, NULL, &old) == 0 && old.sa_handler == SIG_IGN) return;
    sigaction(sig, &sa, NULL);
}

enum { OPT_GRID = 256, OPT_LIST_GRID, OPT_FPR, OPT_NULLS, OPT_STRENGTH, OPT_INFORMED, OPT_JSON, OPT_REPORT, OPT_SHOWCASE };

int cmd_robustness(int argc, char **argv)
{
    static const struct option opts[] = {
        {"attacks", required_argument, NULL, 'a'},
        {"grid", required_argument, NULL, OPT_GRID},
        {"list-grid", no_argument, NULL, OPT_LIST_GRID},
        {"copies", required_argument, NULL, 'n'},
        {"leakers", required_argument, NULL, 'l'},
        {"min-pixels", required_argument, NULL, 'm'},
        {"fpr", required_argument, NULL, OPT_FPR},
        {"nulls", required_argument, NULL, OPT_NULLS},
        {"jobs", required_argument, NULL, 'j'},
        {"key", required_argument, NULL, 'k'},
        {"strength", required_argument, NULL, OPT_STRENGTH},
        {"informed", no_argument, NULL, OPT_INFORMED},
        {"json", required_argument, NULL, OPT_JSON},
        {"report", required_argument, NULL, OPT_REPORT},
        {"showcase", required_argument, NULL, OPT_SHOWCASE},
        {"force", no_argument, NULL, 'f'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    tm_lab_params lp;
    tm_lab_params_init(&lp);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    lp.jobs = cpus > 0 ? (int)(cpus > 1024 ? 1024 : cpus) : 1;
    const char *attacks = NULL, *grid_file = NULL, *key_file = NULL, *json = NULL, *report = NULL;
    int list_grid = 0, force = 0, c, rc = CLI_ERR;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "a:n:l:m:j:k:fqh", opts, NULL)) != -1) {
        uint64_t u;
        double v;
        switch (c) {
        case 'a': attacks = optarg; break;
        case OPT_GRID: grid_file = optarg; break;
        case OPT_LIST_GRID: list_grid = 1; break;
        case 'n':
            if (cli_parse_u64(optarg, &u) || u < 2 || u > 100000000)
                return cli_usage("robustness", "--copies wants 2..100000000, not '%s'", optarg);
            lp.n_copies = (size_t)u;
            break;
        case 'l':
            if (cli_parse_u64(optarg, &u) || u < 1 || u > 1000)
                return cli_usage("robustness", "--leakers wants 1..1000, not '%s'", optarg);
            lp.n_leakers = (size_t)u;
            break;
        case 'm':
            if (cli_parse_u64(optarg, &u)) return cli_usage("robustness", "--min-pixels wants a whole number, not '%s'", optarg);
            lp.min_pixels = u;
            break;
        case OPT_FPR:
            if (cli_parse_double(optarg, &v) || !(v > 0 && v < 1))
                return cli_usage("robustness", "--fpr wants a probability 0 < P < 1, not '%s'", optarg);
            lp.fpr = v;
            break;
        case OPT_NULLS:
            if (cli_parse_u64(optarg, &u) || u > 2) return cli_usage("robustness", "--nulls wants 0, 1 or 2, not '%s'", optarg);
            lp.null_traces = (int)u;
            break;
        case 'j':
            if (cli_parse_u64(optarg, &u) || u < 1 || u > 1024)
                return cli_usage("robustness", "--jobs wants 1..1024, not '%s'", optarg);
            lp.jobs = (int)u;
            break;
        case 'k': key_file = optarg; break;
        case OPT_STRENGTH:
            if (cli_parse_double(optarg, &v) || !(v > 0 && v <= 50))
                return cli_usage("robustness", "--strength wants 0 < S <= 50, not '%s'", optarg);
            lp.strength = v;
            break;
        case OPT_INFORMED: lp.informed = 1; break;
        case OPT_JSON: json = optarg; break;
        case OPT_REPORT: report = optarg; break;
        case OPT_SHOWCASE: lp.showcase = optarg; break;
        case 'f': force = 1; break;
        case 'q': cli_verbosity = CLI_QUIET; break;
        case 'h': robustness_help(); return CLI_OK;
        default: return cli_usage("robustness", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind > 1) return cli_usage("robustness", "want at most one CORPUS_DIR");
    if (attacks && grid_file) return cli_usage("robustness", "give the attacks with -a or with --grid, not both");
    if (lp.n_copies <= lp.n_leakers)
        return cli_usage("robustness", "want more copies (-n %zu) than leakers (-l %zu)", lp.n_copies, lp.n_leakers);
    if (json && report && !strcmp(json, report)) return cli_usage("robustness", "--json and --report name the same file");

    /* the grid */
    uint8_t *grid_text = NULL;
    size_t grid_len = 0;
    tm_status st;
    if (grid_file) {
        if ((st = tm_file_read(grid_file, (size_t)1 << 20, &grid_text, &grid_len)) != TM_OK) return cli_status(grid_file, st);
        uint8_t *z = realloc(grid_text, grid_len + 1);
        if (!z) {
            free(grid_text);
            cli_error(NULL, "out of memory");
            return CLI_ERR;
        }
        grid_text = z;
        grid_text[grid_len] = 0;
    }
    const char *text = grid_text ? (const char *)grid_text : attacks ? attacks : tm_lab_grid_default_text();
    if (list_grid && !grid_text && !attacks) {
        fputs(text, stdout);
        return CLI_OK;
    }
    tm_lab_grid *grid = NULL;
    tm_key *key = NULL;
    tm_lab *lab = NULL;
    char *cmdline = NULL, *md = NULL, err[512] = "";
    cli_progress prog = {0};
    st = tm_lab_grid_parse(text, &grid, err, sizeof err);
    free(grid_text);
    if (st != TM_OK) {
        if (st == TM_ERR_ARG && err[0]) cli_error(grid_file ? grid_file : "robustness", "%s", err);
        else cli_status(grid_file ? grid_file : "robustness", st);
        goto out;
    }
    const char *tmp = getenv("TMPDIR");
    lp.tmp_dir = tmp && *tmp ? tmp : "/tmp";
    if (list_grid) {
        /* a grid given is checked as a sweep checks it: each attack tried once */
        if ((st = tm_lab_create(&lp, grid, NULL, &lab)) != TM_OK) {
            const char *m = tm_lab_errmsg(lab);
            if (m[0]) cli_error(grid_file ? grid_file : "robustness", "%s", m);
            else cli_status("robustness", st);
            goto out;
        }
        for (size_t i = 0; i < tm_lab_grid_size(grid); i++) printf("%s\n", tm_lab_grid_attack(grid, i));
        rc = CLI_OK;
        goto out;
    }

    /* the corpus and the outputs, checked before any work */
    const char *dir = optind < argc ? argv[optind] : TM_CORPUS_DIR;
    if (!dir) {
        rc = cli_usage("robustness", "no CORPUS_DIR given and none recorded at build time");
        goto out;
    }
    if (access(dir, R_OK | X_OK) != 0) {
        cli_error(dir, "cannot read this corpus directory%s", optind < argc ? "" : " (the default; give CORPUS_DIR)");
        goto out;
    }
    if (check_output(json, force) != CLI_OK || check_output(report, force) != CLI_OK) goto out;
    if (key_file && (st = tm_key_load(key_file, &key)) != TM_OK) {
        cli_status(key_file, st);
        goto out;
    }
    lp.command = cmdline = command_line(argc, argv);

    /* stop cleanly on Ctrl-C or SIGTERM: the library ends the workers */
    catch_signal(SIGINT);
    catch_signal(SIGTERM);
    catch_signal(SIGHUP);
    st = tm_lab_create(&lp, grid, key, &lab);
    if (st != TM_OK) {
        const char *m = tm_lab_errmsg(lab);
        if (m[0]) cli_error("robustness", "%s", m);
        else cli_status("robustness", st);
        goto out;
    }
    size_t n_images = 0;
    if ((st = tm_lab_add_dir(lab, dir, &n_images)) != TM_OK) {
        cli_error(dir, "%s", tm_lab_errmsg(lab)[0] ? tm_lab_errmsg(lab) : tm_strerror(st));
        goto out;
    }
    if (n_images == 0) {
        cli_error(dir, "no JPEG, PNG or WebP images here");
        goto out;
    }
    cli_progress_start(&prog, "trials");
    st = tm_lab_run(lab, on_progress, &prog);
    cli_progress_clear(&prog);
    if (stop_signal) goto out;
    if (st != TM_OK) {
        cli_error("robustness", "%s", tm_lab_errmsg(lab)[0] ? tm_lab_errmsg(lab) : tm_strerror(st));
        goto out;
    }
    if (!tm_lab_complete(lab)) {
        cli_error("robustness", "stopped before the end");
        goto out;
    }
    if (json && (st = tm_lab_write_json(lab, json)) != TM_OK) {
        cli_status(json, st);
        goto out;
    }
    if (report && (st = tm_lab_write_html(lab, report)) != TM_OK) {
        cli_status(report, st);
        if (json) unlink(json); /* all or nothing */
        goto out;
    }
    if (cli_verbosity != CLI_QUIET) {
        if ((st = tm_lab_summary_markdown(lab, &md)) != TM_OK) {
            cli_status("robustness", st);
            goto out;
        }
        fputs(md, stdout);
        fflush(stdout);
    }
    tm_lab_tally all;
    tm_lab_tally_attack(lab, (size_t)-1, &all);
    if (all.wrong + all.null_accused) {
        cli_error("robustness", "%zu false accusation%s: %zu in null traces, %zu of innocent copies in leak traces",
                  all.wrong + all.null_accused, all.wrong + all.null_accused == 1 ? "" : "s", all.null_accused, all.wrong);
        rc = 3;
    } else {
        rc = CLI_OK;
    }
out:
    cli_progress_clear(&prog);
    tm_lab_free(lab); /* removes the scratch directory */
    tm_lab_grid_free(grid);
    tm_key_free(key);
    free(cmdline);
    free(md);
    if (stop_signal) {
        int sig = stop_signal;
        cli_error("robustness", "interrupted: workers stopped, nothing written");
        signal(sig, SIG_DFL);
        raise(sig);
    }
    return rc;
}
