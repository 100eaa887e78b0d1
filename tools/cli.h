/* cli.h -- what the tracemark subcommands share: the command table entry
 * type, one-line error reporting, option parsing helpers and JSON output.
 * No algorithm lives under tools/: commands parse, call the library, print. */
#ifndef TM_CLI_H
#define TM_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "tracemark.h"

/* Exit codes, as grep: 0 found/ok, 1 nothing found, 2 error. */
enum { CLI_OK = 0, CLI_NONE = 1, CLI_ERR = 2 };

typedef struct cli_command {
    const char *name;
    int (*run)(int argc, char **argv);  /* argv[0] is the command name */
    const char *summary;
} cli_command;

/* Prints "tracemark: <what>: <message>" to stderr as one line (what may be
 * NULL; newlines and control characters in either are flattened). */
void cli_error(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reports a library status for a file: "tracemark: <file>: <strerror>". */
int cli_status(const char *what, tm_status st);

/* Reports that the input file path (an image or a key) could not be read:
 * for an I/O or key failure, what is wrong with the file when that can be
 * seen (missing, a directory, a dangling link, no permission), else
 * tm_strerror(st). Returns CLI_ERR. */
int cli_input_status(const char *path, tm_status st);

/* Reports that the output file path could not be written: with err (the
 * errno of the failure, 0 if unknown) for an I/O failure, e.g. "cannot write
 * the file: file too large". Returns CLI_ERR. */
int cli_output_status(const char *path, tm_status st, int err);

/* Prints "tracemark: <what>: <doing>: <strerror(err)>" (see cli_error). */
void cli_errno_error(const char *what, const char *doing, int err);

/* Reports a registry failure for the file path: the registry's own detail
 * when it has one (reg may be NULL), else tm_strerror(st). Returns CLI_ERR. */
int cli_registry_status(const char *path, const tm_registry *reg, tm_status st);

/* Reports a usage error for cmd plus a hint line; returns CLI_ERR. Messages
 * and names are printed on one line whatever they contain. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reports the option getopt_long refused for cmd (c is what it returned:
 * ':' for a missing argument when the option string starts with ':');
 * returns CLI_ERR. */
int cli_bad_option(const char *cmd, int c, char **argv);

/* Parses a whole non-negative integer / a finite double; 0 on success. */
int cli_parse_u64(const char *s, uint64_t *out);
int cli_parse_double(const char *s, double *out);

/* Parses a --max-pixels value into lo; on error reports it for cmd and
 * returns CLI_ERR. */
int cli_parse_max_pixels(const char *cmd, const char *arg, tm_load_options *lo);

/* Parses a --jobs value (1..256 threads) into *jobs; on error reports it
 * for cmd and returns CLI_ERR. cli_default_jobs, for a command given no
 * --jobs, gives TRACEMARK_THREADS, or 1 when it is unset or empty, and
 * refuses a bad value the same way. */
int cli_parse_jobs(const char *cmd, const char *arg, int *jobs);
int cli_default_jobs(const char *cmd, int *jobs);

/* Calls fn(ctx, i) for every i in [0, n), on up to jobs threads (the caller's
 * among them), each i once, in no fixed order; returns when all are done. */
void cli_parallel(size_t n, int jobs, void (*fn)(void *ctx, size_t i), void *ctx);

/* Writes s as a JSON string literal (quotes and escapes included). */
void cli_json_string(FILE *f, const char *s);

/* Writes v with printf format fmt, or null when v is not finite (JSON has no NaN). */
void cli_json_number(FILE *f, const char *fmt, double v);

/* True when the stream is a terminal (progress output is shown only then). */
int cli_isatty(FILE *f);

/* How much the program says besides its results, from the global options
 * before COMMAND: -q (CLI_QUIET: no progress, notes or summaries), none
 * (CLI_NORMAL), -v (CLI_VERBOSE: also the details behind each result).
 * Errors and warnings are printed whatever it is. */
enum { CLI_QUIET = -1, CLI_NORMAL = 0, CLI_VERBOSE = 1 };
extern int cli_verbosity;

/* Prints "tracemark: note: <message>" on stderr, unless quiet. */
void cli_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* True when output to f may be coloured: f is a terminal, NO_COLOR is unset
 * or empty (https://no-color.org) and TERM is not "dumb". */
int cli_colour(FILE *f);

/* A progress bar on stderr: drawn only when stderr is a terminal and the
 * program is not quiet, at most ten times a second; cli_progress_clear
 * wipes it before other output. what names the units ("copies"). */
typedef struct cli_progress {
    const char *what;
    int tty, drawn;
    double t0, last;
} cli_progress;

void cli_progress_start(cli_progress *p, const char *what);
void cli_progress_show(cli_progress *p, size_t done, size_t total);
void cli_progress_clear(cli_progress *p);

/* The subcommands. */
int cmd_strip(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_registry(int argc, char **argv);
int cmd_mark(int argc, char **argv);
int cmd_trace(int argc, char **argv);
int cmd_attack(int argc, char **argv);
int cmd_robustness(int argc, char **argv);

#endif
