/* tracemark.c -- the command-line front end: global options, the command
 * table and dispatch, and the helpers every subcommand shares. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <pthread.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef HAVE_SYS_PRCTL_H
#include <sys/prctl.h>
#endif

#include <gsl/gsl_errno.h>

#include "cli.h"

static int cmd_help(int argc, char **argv);

static const cli_command commands[] = {
    {"keygen", cmd_keygen, "create a new secret key file (mode 0600)"},
    {"mark", cmd_mark, "make marked copies of an image, one per recipient"},
    {"trace", cmd_trace, "name the recipient whose copy a leaked image is"},
    {"attack", cmd_attack, "distort an image as a leak might (robustness tests)"},
    {"robustness", cmd_robustness, "sweep a corpus through a grid of attacks: JSON and HTML report"},
    {"registry", cmd_registry, "list, show and verify the recipient registry"},
    {"strip", cmd_strip, "re-write an image without identifying metadata"},
    {"inspect", cmd_inspect, "show what an image file carries (size, codec, metadata)"},
    {"help", cmd_help, "show help for tracemark or one command"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

/* Copies src into dst (cap bytes) as one line, so that a library's
 * multi-line detail or a file name with a newline in it cannot split an
 * error message: in a message a newline becomes "; " and any other control
 * character a space; in a name (is_name) each control character is '?'. */
static void one_line(char *dst, size_t cap, const char *src, int is_name)
{
    size_t j = 0;
    for (const unsigned char *p = (const unsigned char *)src; *p && j + 3 < cap; p++) {
        int ctl = *p < 0x20 || *p == 0x7f;
        if (is_name) {
            dst[j++] = ctl ? '?' : (char)*p;
        } else if (*p == '\n') {
            while (j && dst[j - 1] == ' ') j--;
            if (p[1] && j) dst[j++] = ';', dst[j++] = ' ';
        } else {
            dst[j++] = ctl ? ' ' : (char)*p;
        }
    }
    if (!is_name)
        while (j && (dst[j - 1] == ' ' || dst[j - 1] == ';')) j--;
    dst[j] = 0;
}

/* Prints "tracemark: [<what>: ]<message>" as one line. */
static void vreport(const char *what, const char *fmt, va_list ap)
{
    char msg[1024], line[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    fputs("tracemark: ", stderr);
    if (what) {
        one_line(line, sizeof line, what, 1);
        fprintf(stderr, "%s: ", line);
    }
    one_line(line, sizeof line, msg, 0);
    fputs(line, stderr);
    fputc('\n', stderr);
}

void cli_error(const char *what, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(what, fmt, ap);
    va_end(ap);
}

int cli_status(const char *what, tm_status st)
{
    cli_error(what, "%s", tm_strerror(st));
    return CLI_ERR;
}

/* strerror(err) with a lowercase first letter, as the other messages. */
static const char *errno_text(int err, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s", strerror(err));
    if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z')) buf[0] = (char)(buf[0] - 'A' + 'a');
    return buf;
}

int cli_input_status(const char *path, tm_status st)
{
    if (st == TM_ERR_IO || st == TM_ERR_KEY) {
        struct stat sb;
        char buf[128];
        const char *why = NULL;
        if (lstat(path, &sb) != 0)
            why = errno == ENOENT ? "no such file" : errno_text(errno, buf, sizeof buf);
        else if (S_ISLNK(sb.st_mode) && stat(path, &sb) != 0)
            why = errno == ENOENT ? "dangling symbolic link (its target does not exist)" : errno_text(errno, buf, sizeof buf);
        else if (S_ISDIR(sb.st_mode))
            why = "is a directory, not a file";
        else if (!S_ISREG(sb.st_mode))
            why = "not a regular file";
        else if (access(path, R_OK) != 0)
            why = errno_text(errno, buf, sizeof buf);
        if (why) {
            cli_error(path, "%s%s", st == TM_ERR_KEY ? "cannot read the key file: " : "", why);
            return CLI_ERR;
        }
    }
    return cli_status(path, st);
}

void cli_errno_error(const char *what, const char *doing, int err)
{
    char buf[128];
    cli_error(what, "%s: %s", doing, errno_text(err, buf, sizeof buf));
}

int cli_output_status(const char *path, tm_status st, int err)
{
    if (st == TM_ERR_IO && err) cli_errno_error(path, "cannot write the file", err);
    else cli_status(path, st);
    return CLI_ERR;
}

int cli_registry_status(const char *path, const tm_registry *reg, tm_status st)
{
    const char *m = reg ? tm_registry_errmsg(reg) : "";
    if (m && *m) cli_error(path, "%s", m);
    else cli_status(path, st);
    return CLI_ERR;
}

int cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(cmd, fmt, ap);
    va_end(ap);
    fprintf(stderr, "Try 'tracemark %s%s--help'.\n", cmd ? cmd : "", cmd ? " " : "");
    return CLI_ERR;
}

int cli_bad_option(const char *cmd, int c, char **argv)
{
    const char *opt = optind > 0 ? argv[optind - 1] : "?";
    if (c == ':') return cli_usage(cmd, "option '%s' needs an argument", opt);
    return cli_usage(cmd, "unknown option '%s'", opt);
}

int cli_parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

int cli_parse_double(const char *s, double *out)
{
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

int cli_parse_max_pixels(const char *cmd, const char *arg, tm_load_options *lo)
{
    uint64_t v;
    if (cli_parse_u64(arg, &v) || v == 0) return cli_usage(cmd, "--max-pixels wants a positive integer, not '%s'", arg);
    lo->max_pixels = v;
    return CLI_OK;
}

#define MAX_JOBS 256

int cli_parse_jobs(const char *cmd, const char *arg, int *jobs)
{
    uint64_t v;
    if (cli_parse_u64(arg, &v) || v < 1 || v > MAX_JOBS)
        return cli_usage(cmd, "--jobs wants a whole number of threads, 1..%d, not '%s'", MAX_JOBS, arg);
    *jobs = (int)v;
    return CLI_OK;
}

int cli_default_jobs(const char *cmd, int *jobs)
{
    const char *env = getenv("TRACEMARK_THREADS");
    *jobs = 1;
    if (!env || !*env) return CLI_OK;
    uint64_t v;
    if (cli_parse_u64(env, &v) || v < 1 || v > MAX_JOBS)
        return cli_usage(cmd, "TRACEMARK_THREADS wants a whole number of threads, 1..%d, not '%s'", MAX_JOBS, env);
    *jobs = (int)v;
    return CLI_OK;
}

/* What the threads of cli_parallel share. */
typedef struct parallel {
    void (*fn)(void *ctx, size_t i);
    void *ctx;
    size_t n, next;
    pthread_mutex_t lock;
} parallel;

static void *parallel_worker(void *arg)
{
    parallel *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        size_t i = p->next < p->n ? p->next++ : p->n;
        pthread_mutex_unlock(&p->lock);
        if (i == p->n) return NULL;
        p->fn(p->ctx, i);
    }
}

void cli_parallel(size_t n, int jobs, void (*fn)(void *ctx, size_t i), void *ctx)
{
    parallel p = {.fn = fn, .ctx = ctx, .n = n};
    pthread_t tid[MAX_JOBS];
    int started = 0;
    if (jobs > 1 && n > 1 && !pthread_mutex_init(&p.lock, NULL)) {
        /* The calling thread is one of the jobs; a thread that cannot be
         * started only means fewer of them. */
        while (started < jobs - 1 && (size_t)started + 1 < n &&
               !pthread_create(&tid[started], NULL, parallel_worker, &p))
            started++;
        parallel_worker(&p);
        for (int t = 0; t < started; t++) pthread_join(tid[t], NULL);
        pthread_mutex_destroy(&p.lock);
        return;
    }
    for (size_t i = 0; i < n; i++) fn(ctx, i);
}

void cli_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20) fprintf(f, "\\u%04x", *p);
            else fputc(*p, f);
        }
    }
    fputc('"', f);
}

void cli_json_number(FILE *f, const char *fmt, double v)
{
    if (isfinite(v)) fprintf(f, fmt, v);
    else fputs("null", f);
}

int cli_isatty(FILE *f)
{
    return isatty(fileno(f));
}

int cli_verbosity = CLI_NORMAL;

void cli_note(const char *fmt, ...)
{
    if (cli_verbosity == CLI_QUIET) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cli_error(NULL, "note: %s", msg);
}

int cli_colour(FILE *f)
{
    const char *no = getenv("NO_COLOR"), *term = getenv("TERM");
    return cli_isatty(f) && !(no && *no) && !(term && !strcmp(term, "dumb"));
}

static double monotonic_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void cli_progress_start(cli_progress *p, const char *what)
{
    p->what = what;
    p->tty = cli_verbosity != CLI_QUIET && cli_isatty(stderr);
    p->drawn = 0;
    p->t0 = monotonic_s();
    p->last = -1;
}

void cli_progress_show(cli_progress *p, size_t done, size_t total)
{
    if (!p->tty) return;
    double t = monotonic_s() - p->t0;
    if (t - p->last < 0.1 && done < total) return;
    p->last = t;
    double frac = total ? (double)done / (double)total : 0;
    int width = 30, fill = (int)(frac * width);
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
    bar[width] = 0;
    fprintf(stderr, "\r%3.0f%% [%s] %zu/%zu %s  %d:%02d", 100 * frac, bar, done, total, p->what, (int)t / 60,
            (int)t % 60);
    if (done > 0 && done < total) {
        int left = (int)(t / frac - t);
        fprintf(stderr, "  ~%d:%02d left ", left / 60, left % 60);
    } else {
        fputs("            ", stderr);
    }
    p->drawn = 1;
}

void cli_progress_clear(cli_progress *p)
{
    if (p->tty && p->drawn) fprintf(stderr, "\r%90s\r", "");
    p->drawn = 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: tracemark [-q | -v] COMMAND [OPTIONS] [ARGS]\n"
            "\n"
            "Forensic invisible watermarks: give every recipient of a confidential image\n"
            "a copy carrying a keyed, recipient-specific mark, and trace a leaked copy\n"
            "back to its recipient with a stated bound on the chance of accusing an\n"
            "innocent.\n"
            "\n"
            "Commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(f,
            "\n"
            "Options:\n"
            "  -q, --quiet    before COMMAND: no progress bars, notes or summaries (errors\n"
            "                 and warnings still)\n"
            "  -v, --verbose  before COMMAND: also the details behind each result\n"
            "  -h, --help     show this help\n"
            "  -V, --version  show the version\n"
            "\n"
            "'tracemark help COMMAND' or 'tracemark COMMAND --help' explains one command.\n"
            "Exit status: 0 success (or a recipient accused), 1 nothing found, 2 error.\n"
            "\n"
            "Environment:\n"
            "  TRACEMARK_FFTW_WISDOM  a file of FFTW wisdom: plan transforms by measuring\n"
            "                         (a little faster; a copy may then differ in the last\n"
            "                         bit of a few samples), keeping what was learnt there\n"
            "  TRACEMARK_THREADS      threads for 'mark' and 'trace' when --jobs is not\n"
            "                         given (default 1; the copies and verdicts are the same)\n"
            "  TMPDIR                 where 'robustness' keeps its scratch files\n"
            "  NO_COLOR               when set and not empty, never colour the output (it is\n"
            "                         coloured only on a terminal)\n");
}

static const cli_command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(commands[i].name, name)) return &commands[i];
    return NULL;
}

static int cmd_help(int argc, char **argv)
{
    if (argc < 2) {
        usage(stdout);
        return CLI_OK;
    }
    if (argc > 2) return cli_usage("help", "too many arguments");
    const cli_command *c = find_command(!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ? "help" : argv[1]);
    if (!c || c->run == cmd_help) {
        if (c) {
            printf("Usage: tracemark help [COMMAND]\n\nShows help for tracemark or one of its commands.\n");
            return CLI_OK;
        }
        return cli_usage(NULL, "'%s' is not a tracemark command", argv[1]);
    }
    char *args[] = {(char *)c->name, (char *)"--help", NULL};
    return c->run(2, args);
}

int main(int argc, char **argv)
{
    /* GSL's default error handler aborts; the library checks every status */
    gsl_set_error_handler_off();
    /* A write past the file size limit (ulimit -f) must fail with EFBIG and be
     * reported like a full disk, not kill the program half way. */
    signal(SIGXFSZ, SIG_IGN);
    /* No core dump may carry the key to disk: none is written, and the
     * process is not dumpable (nor open to ptrace by other processes of the
     * same user). */
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
#ifdef HAVE_SYS_PRCTL_H
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
#endif
    int first = 1; /* the global options before COMMAND */
    for (; first < argc; first++) {
        const char *o = argv[first];
        if (!strcmp(o, "-q") || !strcmp(o, "--quiet")) cli_verbosity = CLI_QUIET;
        else if (!strcmp(o, "-v") || !strcmp(o, "--verbose")) cli_verbosity = CLI_VERBOSE;
        else break;
    }
    argc -= first - 1;
    argv += first - 1;
    if (argc < 2) {
        usage(stderr);
        return CLI_ERR;
    }
    const char *name = argv[1];
    if (!strcmp(name, "-h") || !strcmp(name, "--help")) {
        usage(stdout);
        return CLI_OK;
    }
    if (!strcmp(name, "-V") || !strcmp(name, "--version")) {
        printf("tracemark %s\n", tm_version());
        return CLI_OK;
    }
    const cli_command *c = find_command(name);
    if (!c) {
        if (name[0] == '-') return cli_usage(NULL, "unknown option '%s'", name);
        return cli_usage(NULL, "'%s' is not a tracemark command", name);
    }
    return c->run(argc - 1, argv + 1);
}
