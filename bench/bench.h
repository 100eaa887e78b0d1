/* bench.h -- what the bench/ harnesses share: timing (inline here), scratch
 * files and child programs (bench.c). */
#ifndef TM_BENCH_H
#define TM_BENCH_H

#include <stdlib.h>
#include <time.h>

#include "tracemark.h"

#define BENCH_MAX_RUNS 101

/* Monotonic wall clock in milliseconds. */
static inline double bench_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v[0..runs) (so v[0] is the min, v[runs - 1] the max) and returns
 * its median. */
static inline double bench_median(double *v, int runs)
{
    qsort(v, (size_t)runs, sizeof *v, bench_cmp_double);
    return runs % 2 ? v[runs / 2] : 0.5 * (v[runs / 2 - 1] + v[runs / 2]);
}

/* ---- bench.c -------------------------------------------------------------- */

/* Makes "$TMPDIR/tm-bench-TOOL-XXXXXX" (or under /tmp) with room for the n
 * (<= 16) files names[], and arms SIGINT, SIGTERM and SIGHUP to remove them
 * and the directory; TOOL also prefixes messages. 0, or -1 with a message. */
int bench_scratch_create(const char *tool, const char *const *names, int n);

/* The path of names[i] in the scratch directory. */
char *bench_scratch(int i);

/* Removes everything in the scratch directory (stray temporaries of an
 * interrupted atomic write included), then the directory; idempotent. */
void bench_scratch_remove(void);

/* When program is libtool's wrapper script (the build tree's program linked
 * to the uninstalled library), the binary it wraps into real and the
 * environment the wrapper would give it into *env (free with
 * bench_env_free), so that timed runs do not include a shell's start: 1
 * then, 0 when the program is to be run as it is. */
int bench_unwrap_libtool(const char *program, char *real, size_t cap, char ***env);
void bench_env_free(char **env);

/* Runs argv (argv[0] the program's path) in env (NULL: this process's) with
 * stdout into out_path; *ms gets the wall time from spawn to exit, *status
 * the exit status (-1 when it died of a signal). -1 with errno when it could
 * not be run. */
int bench_run_program(char *const argv[], char *const env[], const char *out_path, double *ms, int *status);

/* Whether `tracemark trace`'s text output in out_path names "leaker" as the
 * one recipient accused; the output goes to stderr when it does not. */
int bench_output_accuses_leaker(const char *out_path);

/* Adds copies[from..to) to the registry file at path in one batch, then
 * closes it (checkpointed as `tracemark mark` leaves it). With ri, the file
 * may be created and the image row is put first; without, both exist. */
tm_status bench_registry_add(const char *path, const tm_key *key, const tm_reg_image *ri, const tm_reg_copy *copies,
                             size_t from, size_t to);

#endif
