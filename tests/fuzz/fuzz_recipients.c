/* fuzz_recipients.c -- libFuzzer target for the recipients file of
 * `tracemark mark --recipients FILE` (tools/recipients.c), read from memory
 * through the same stdio calls as from a file. Whatever the bytes, every id
 * kept must be one the command accepts on its own: non-empty, at most
 * CLI_RECIPIENT_MAX bytes, no control character, no surrounding blank, and
 * listed once; a failure must say why. */
#include "config.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recipients.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0; /* fmemopen wants a buffer */
    FILE *f = fmemopen((void *)data, size, "r");
    if (!f) return 0;
    cli_recipients r = {0};
    char err[160] = "";
    int rc = cli_recipients_read(&r, f, err, sizeof err);
    fclose(f);
    if (rc != CLI_RCP_OK && !err[0]) abort();
    if (rc != CLI_RCP_OK && rc != CLI_RCP_BAD_ID && rc != CLI_RCP_BAD_FILE && rc != CLI_RCP_NOMEM) abort();
    if (r.n > r.cap || (r.n && !r.id)) abort();
    for (size_t i = 0; i < r.n; i++) {
        const char *id = r.id[i];
        size_t len = strlen(id);
        if (len == 0 || len > CLI_RECIPIENT_MAX) abort();
        if (isspace((unsigned char)id[0]) || isspace((unsigned char)id[len - 1]) || id[0] == '#') abort();
        for (size_t k = 0; k < len; k++)
            if ((unsigned char)id[k] < 0x20 || id[k] == 0x7f) abort();
        for (size_t j = 0; j < i; j++)
            if (!strcmp(r.id[j], id)) abort();
    }
    /* an id already kept adds nothing the second time */
    if (r.n) {
        size_t n = r.n;
        if (cli_recipients_add(&r, r.id[0], "again", err, sizeof err) != CLI_RCP_OK || r.n != n) abort();
    }
    cli_recipients_clear(&r);
    return 0;
}
