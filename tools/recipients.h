/* recipients.h -- the recipient list of `tracemark mark`: ids given with
 * --recipient and read from a --recipients file, checked and made unique.
 * Kept out of cmd_mark.c, and printing nothing, so that the fuzz target
 * tests/fuzz/fuzz_recipients.c runs the same parser the program does; the
 * command turns each failure into its one-line message. */
#ifndef TM_RECIPIENTS_H
#define TM_RECIPIENTS_H

#include <stddef.h>
#include <stdio.h>

/* Longest recipient id accepted, in bytes. */
#define CLI_RECIPIENT_MAX 256

/* The ids in the order first given; each is owned (strdup'd). */
typedef struct cli_recipients {
    char **id;
    size_t n, cap;
} cli_recipients;

/* Outcomes: a refused id (a usage error), a bad file (an error about the
 * file), or no memory. The reason, when there is one, goes into err. */
enum { CLI_RCP_OK = 0, CLI_RCP_BAD_ID = 1, CLI_RCP_BAD_FILE = 2, CLI_RCP_NOMEM = 3 };

/* Adds id (copied) unless it is already listed. An empty id, one longer than
 * CLI_RECIPIENT_MAX bytes or one with a control character is refused with
 * CLI_RCP_BAD_ID and "WHERE: reason" in err. */
int cli_recipients_add(cli_recipients *r, const char *id, const char *where, char *err, size_t errlen);

/* Adds the ids of a recipients file, one per line with blanks around it
 * dropped; blank lines and lines starting with '#' are skipped. A line of
 * 4095 bytes or more, or a read error, gives CLI_RCP_BAD_FILE; a refused id
 * CLI_RCP_BAD_ID with "line N: reason". Stops at the first failure, keeping
 * the ids added before it. */
int cli_recipients_read(cli_recipients *r, FILE *f, char *err, size_t errlen);

/* Frees the ids and zeroes r. */
void cli_recipients_clear(cli_recipients *r);

#endif
