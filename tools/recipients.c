/* recipients.c -- the recipient list of `tracemark mark` (see recipients.h).
 *
 * The checks are the ones a recipient id must pass before it names a copy in
 * the registry and in a file name: not empty, at most CLI_RECIPIENT_MAX
 * bytes, no control character. An id listed twice makes one copy. */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "recipients.h"

static int say(char *err, size_t errlen, int rc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int say(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

int cli_recipients_add(cli_recipients *r, const char *id, const char *where, char *err, size_t errlen)
{
    size_t len = strlen(id);
    if (len == 0) return say(err, errlen, CLI_RCP_BAD_ID, "%s: empty recipient", where);
    if (len > CLI_RECIPIENT_MAX)
        return say(err, errlen, CLI_RCP_BAD_ID, "%s: recipient longer than %d bytes", where, CLI_RECIPIENT_MAX);
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        if (*p < 0x20 || *p == 0x7f) return say(err, errlen, CLI_RCP_BAD_ID, "%s: recipient has a control character", where);
    for (size_t i = 0; i < r->n; i++)
        if (!strcmp(r->id[i], id)) return CLI_RCP_OK; /* listed twice: one copy */
    if (r->n == r->cap) {
        size_t nc = r->cap ? 2 * r->cap : 16;
        char **g = realloc(r->id, nc * sizeof *g);
        if (!g) return say(err, errlen, CLI_RCP_NOMEM, "out of memory");
        r->id = g;
        r->cap = nc;
    }
    if (!(r->id[r->n] = strdup(id))) return say(err, errlen, CLI_RCP_NOMEM, "out of memory");
    r->n++;
    return CLI_RCP_OK;
}

int cli_recipients_read(cli_recipients *r, FILE *f, char *err, size_t errlen)
{
    char line[4096];
    int rc = CLI_RCP_OK, lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            rc = say(err, errlen, CLI_RCP_BAD_FILE, "line %d is too long", lineno);
            break;
        }
        while (len && isspace((unsigned char)line[len - 1])) line[--len] = 0;
        char *s = line;
        while (isspace((unsigned char)*s)) s++;
        if (!*s || *s == '#') continue;
        char where[64];
        snprintf(where, sizeof where, "line %d", lineno);
        if ((rc = cli_recipients_add(r, s, where, err, errlen)) != CLI_RCP_OK) break;
    }
    /* fgets hands over no line once a read has failed, so after a refused
     * line the stream holds no error: at most one of the two is reported */
    if (rc == CLI_RCP_OK && ferror(f)) rc = say(err, errlen, CLI_RCP_BAD_FILE, "read error");
    return rc;
}

void cli_recipients_clear(cli_recipients *r)
{
    for (size_t i = 0; i < r->n; i++) free(r->id[i]);
    free(r->id);
    memset(r, 0, sizeof *r);
}
