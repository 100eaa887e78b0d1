/* replay.c -- runs a fuzz target's entry point over its seed directories
 * without libFuzzer, so `make check` (and its sanitizer build) replays every
 * seed, and every input that once crashed a target and was kept beside the
 * seeds, as a regression test. Linked once per target with TM_FUZZ_SEEDS,
 * a ':'-separated list of directories under the source tree; arguments, when
 * given, replace it (files or directories). A missing or empty directory
 * fails, so a moved corpus cannot pass unnoticed. */
#include "config.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tracemark.h"

#define MAX_INPUT ((size_t)1 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Runs one file through the target; 0 on success. */
static int replay_file(const char *path)
{
    uint8_t *data = NULL;
    size_t len = 0;
    tm_status st = tm_file_read(path, MAX_INPUT, &data, &len);
    if (st != TM_OK) {
        fprintf(stderr, "replay: %s: %s\n", path, tm_strerror(st));
        return -1;
    }
    LLVMFuzzerTestOneInput(data, len);
    free(data);
    return 0;
}

/* Runs every regular file of dir, by name; *n counts them. */
static int replay_dir(const char *dir, size_t *n)
{
    struct dirent **ents = NULL;
    int k = scandir(dir, &ents, NULL, alphasort), rc = 0;
    if (k < 0) {
        fprintf(stderr, "replay: %s: cannot read the directory\n", dir);
        return -1;
    }
    for (int i = 0; i < k; i++) {
        char path[4096];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, ents[i]->d_name);
        if (rc == 0 && ents[i]->d_name[0] != '.' && stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
            rc = replay_file(path);
            (*n)++;
        }
        free(ents[i]);
    }
    free(ents);
    return rc;
}

static int replay(const char *what, size_t *n)
{
    struct stat sb;
    if (stat(what, &sb) != 0) {
        fprintf(stderr, "replay: %s: no such file or directory\n", what);
        return -1;
    }
    if (!S_ISDIR(sb.st_mode)) {
        (*n)++;
        return replay_file(what);
    }
    size_t before = *n;
    int rc = replay_dir(what, n);
    if (rc == 0 && *n == before) {
        fprintf(stderr, "replay: %s: no inputs\n", what);
        rc = -1;
    }
    return rc;
}

int main(int argc, char **argv)
{
    size_t n = 0;
    int rc = 0;
    if (argc > 1) {
        for (int i = 1; i < argc && rc == 0; i++) rc = replay(argv[i], &n);
    } else {
        char list[] = TM_FUZZ_SEEDS, *save = NULL;
        for (char *d = strtok_r(list, ":", &save); d && rc == 0; d = strtok_r(NULL, ":", &save)) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", TM_SRCDIR, d);
            rc = replay(path, &n);
        }
    }
    printf("replay: %zu inputs%s\n", n, rc ? ", FAILED" : "");
    return rc ? 1 : 0;
}
