/* bench.c -- what the bench/ harnesses share beyond timing: a scratch
 * directory removed on every path out (a signal included) and the built
 * program run as a child, timed. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "tracemark.h"

extern char **environ;

/* ---- scratch directory ---------------------------------------------------- */

/* The scratch directory and the paths of its files, global only so that a
 * signal handler can remove them (unlink and rmdir are async-signal-safe). */
#define MAX_FILES 16
static char scratch_dir[4096];
static char scratch[MAX_FILES][4096 + 32];
static int n_scratch;
static const char *tool_name = "bench";
static volatile sig_atomic_t have_scratch;

static void scratch_remove_known(void)
{
    for (int i = 0; i < n_scratch; i++) unlink(scratch[i]);
    rmdir(scratch_dir);
}

static void on_signal(int sig)
{
    if (have_scratch) scratch_remove_known();
    raise(sig); /* SA_RESETHAND: the default action this time */
}

int bench_scratch_create(const char *tool, const char *const *names, int n)
{
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = "/tmp";
    tool_name = tool;
    if (n > MAX_FILES) return -1;
    if (snprintf(scratch_dir, sizeof scratch_dir, "%s/tm-bench-%s-XXXXXX", tmp, tool) >= (int)sizeof scratch_dir ||
        !mkdtemp(scratch_dir)) {
        fprintf(stderr, "%s: cannot make a scratch directory in %s: %s\n", tool, tmp, strerror(errno));
        return -1;
    }
    n_scratch = n;
    for (int i = 0; i < n; i++) snprintf(scratch[i], sizeof scratch[i], "%s/%s", scratch_dir, names[i]);
    have_scratch = 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) sigaction(sigs[i], &sa, NULL);
    return 0;
}

/* Removes everything in the scratch directory (stray temporary files of an
 * interrupted atomic write included), then the directory. */
char *bench_scratch(int i)
{
    return scratch[i];
}

void bench_scratch_remove(void)
{
    if (!have_scratch) return;
    DIR *d = opendir(scratch_dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                char p[sizeof scratch[0] + 256];
                snprintf(p, sizeof p, "%s/%s", scratch_dir, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    scratch_remove_known();
    have_scratch = 0;
}

/* ---- the program ------------------------------------------------------------ */

/* When program is libtool's wrapper script (the build tree's program linked
 * to the uninstalled shared library), the binary it wraps into real (made
 * absolute) and the environment the wrapper would give it (the binary's
 * directory first in LD_LIBRARY_PATH) into *env (free with env_free):
 * otherwise every timed run would include a bash start. 1 when unwrapped,
 * 0 when the program is to be run as it is. */
int bench_unwrap_libtool(const char *program, char *real, size_t cap, char ***env)
{
    static const char tag[] = "temporary wrapper script for ";
    char head[512], path[4096];
    FILE *f = fopen(program, "r");
    if (!f) return 0;
    size_t n = fread(head, 1, sizeof head - 1, f);
    fclose(f);
    head[n] = '\0';
    const char *p = strstr(head, tag);
    if (strncmp(head, "#!", 2) != 0 || !p) return 0;
    p += sizeof tag - 1;
    const char *slash = strrchr(program, '/');
    int dir_len = slash ? (int)(slash - program + 1) : 0;
    if (snprintf(path, sizeof path, "%.*s%.*s", dir_len, program, (int)strcspn(p, "\n"), p) >= (int)sizeof path)
        return 0;
    char cwd[4096] = "";
    const char *rel = path;
    while (rel[0] == '.' && rel[1] == '/') rel += 2;
    if (path[0] != '/' && !getcwd(cwd, sizeof cwd)) return 0;
    if (snprintf(real, cap, "%s%s%s", cwd, *cwd ? "/" : "", rel) >= (int)cap || access(real, X_OK) != 0) return 0;
    size_t ne = 0;
    while (environ[ne]) ne++;
    const char *old = getenv("LD_LIBRARY_PATH");
    size_t len = strlen(real) + (old ? strlen(old) : 0) + 32;
    char **e = calloc(ne + 2, sizeof *e);
    char *var = malloc(len);
    if (!e || !var) {
        free(e);
        free(var);
        return 0;
    }
    snprintf(var, len, "LD_LIBRARY_PATH=%.*s%s%s", (int)(strrchr(real, '/') - real), real, old && *old ? ":" : "",
             old ? old : "");
    size_t k = 0;
    e[k++] = var;
    for (size_t i = 0; i < ne; i++)
        if (strncmp(environ[i], "LD_LIBRARY_PATH=", 16) != 0) e[k++] = environ[i];
    e[k] = NULL;
    *env = e;
    return 1;
}

void bench_env_free(char **env)
{
    if (!env) return;
    free(env[0]);
    free(env);
}

/* Runs argv (argv[0] the program's path) in environment env with stdout into
 * out_path; *ms gets the wall time from spawn to exit, *status the exit
 * status (-1 when it died of a signal). -1 with errno when it could not be
 * run. */
int bench_run_program(char *const argv[], char *const env[], const char *out_path, double *ms, int *status)
{
    posix_spawn_file_actions_t fa;
    int err = posix_spawn_file_actions_init(&fa);
    if (err) {
        errno = err;
        return -1;
    }
    err = posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid;
    double t0 = bench_now_ms();
    if (!err) err = posix_spawn(&pid, argv[0], &fa, NULL, argv, env ? env : environ);
    posix_spawn_file_actions_destroy(&fa);
    if (err) {
        errno = err;
        return -1;
    }
    int ws;
    while (waitpid(pid, &ws, 0) < 0)
        if (errno != EINTR) return -1;
    *ms = bench_now_ms() - t0;
    *status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
    return 0;
}

/* Whether the program's text output names "leaker" as the one recipient
 * accused; the output goes to stderr when it does not. */
int bench_output_accuses_leaker(const char *out_path)
{
    uint8_t *data = NULL;
    size_t len = 0;
    if (tm_file_read(out_path, 1 << 20, &data, &len) != TM_OK) return 0;
    char *text = realloc(data, len + 1);
    if (!text) {
        free(data);
        return 0;
    }
    text[len] = '\0';
    size_t accused = 0;
    for (const char *p = text; (p = strstr(p, ": ACCUSED ")); p++) accused++;
    int ok = accused == 1 && strstr(text, ": ACCUSED leaker (") != NULL;
    if (!ok) fprintf(stderr, "%s: `tracemark trace` printed:\n%s", tool_name, text);
    free(text);
    return ok;
}

tm_status bench_registry_add(const char *path, const tm_key *key, const tm_reg_image *ri, const tm_reg_copy *copies,
                             size_t from, size_t to)
{
    tm_registry *reg = NULL;
    tm_status st = tm_registry_open(path, ri != NULL, &reg);
    if (st == TM_OK) st = tm_registry_check_key(reg, key);
    if (st == TM_OK) st = tm_registry_begin(reg);
    if (st == TM_OK && ri) st = tm_registry_put_image(reg, ri);
    char out_path[128];
    for (size_t i = from; i < to && st == TM_OK; i++) {
        tm_reg_copy c = copies[i];
        snprintf(out_path, sizeof out_path, "copies/%s.jpg", c.recipient);
        c.out_path = out_path;
        st = tm_registry_put_copy(reg, key, &c, NULL);
    }
    if (st == TM_OK) st = tm_registry_commit(reg);
    if (st != TM_OK) {
        const char *m = reg ? tm_registry_errmsg(reg) : "";
        fprintf(stderr, "%s: %s: %s%s%s\n", tool_name, path, tm_strerror(st), *m ? ": " : "", m);
    }
    tm_registry_free(reg); /* rolls back a batch left open by a failure */
    return st;
}
