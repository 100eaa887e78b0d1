/* fileio.c -- whole-file reads and atomic writes.
 *
 * Every output of tracemark goes through tm_file_write_atomic (or its two
 * halves, tm_file_stage and tm_file_publish, when something must happen in
 * between): the bytes go to a temporary file in the target directory, are
 * fsync'd, and the temporary is renamed over (or, when exclusive, hard-linked
 * to) the final name, so a crash or a full disk never leaves a half-written
 * image, key or report behind. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* fsync the directory holding path so the rename itself is durable. */
static void sync_parent_dir(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir) return;
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

tm_status tm_file_stage(const char *path, const void *data, size_t len, int mode, char *tmp, size_t cap)
{
    if (!path || !*path || (!data && len) || !tmp || cap < PATH_MAX) return TM_ERR_ARG;
    if (strlen(path) + 16 >= PATH_MAX) return TM_ERR_ARG;
    snprintf(tmp, cap, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) return TM_ERR_IO;
    if (fchmod(fd, (mode_t)mode) == 0 && write_all(fd, data, len) == 0 && fsync(fd) == 0) {
        if (close(fd) == 0) return TM_OK;
        fd = -1;
    }
    int err = errno; /* the write's reason (EFBIG, ENOSPC...) outlives the cleanup */
    if (fd >= 0) close(fd);
    unlink(tmp);
    errno = err;
    return TM_ERR_IO;
}

tm_status tm_file_publish(const char *tmp, const char *path, int exclusive)
{
    if (!tmp || !path || !*path) return TM_ERR_ARG;
    tm_status st = TM_OK;
    if (exclusive) {
        /* link() fails if the name exists, so a racing writer cannot be clobbered. */
        if (link(tmp, path) != 0) st = errno == EEXIST ? TM_ERR_EXISTS : TM_ERR_IO;
    } else if (rename(tmp, path) != 0) {
        st = TM_ERR_IO;
    }
    int err = errno;
    if (st != TM_OK || exclusive) unlink(tmp);
    if (st == TM_OK) sync_parent_dir(path);
    errno = err;
    return st;
}

tm_status tm_file_write_atomic(const char *path, const void *data, size_t len,
                               int mode, int exclusive)
{
    if (!path || !*path || (!data && len)) return TM_ERR_ARG;
    if (exclusive && access(path, F_OK) == 0) return TM_ERR_EXISTS;
    char tmp[PATH_MAX];
    tm_status st = tm_file_stage(path, data, len, mode, tmp, sizeof tmp);
    return st == TM_OK ? tm_file_publish(tmp, path, exclusive) : st;
}

tm_status tm_file_read(const char *path, size_t max_len, uint8_t **data, size_t *len)
{
    if (!path || !data || !len) return TM_ERR_ARG;
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return errno == ENOENT ? TM_ERR_NOT_FOUND : TM_ERR_IO;

    tm_status st = TM_ERR_IO;
    uint8_t *buf = NULL;
    struct stat sb;
    if (fstat(fd, &sb) != 0) goto out;
    if (!S_ISREG(sb.st_mode)) {
        st = TM_ERR_IO;
        goto out;
    }
    if ((uint64_t)sb.st_size > (uint64_t)max_len) {
        st = TM_ERR_TOO_LARGE;
        goto out;
    }
    size_t cap = (size_t)sb.st_size;
    buf = malloc(cap ? cap : 1);
    if (!buf) {
        st = TM_ERR_NOMEM;
        goto out;
    }
    size_t got = 0;
    while (got < cap) {
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0) {
            if (errno == EINTR) continue;
            goto out;
        }
        if (n == 0) break; /* file shrank while reading: take what is there */
        got += (size_t)n;
    }
    *data = buf;
    *len = got;
    buf = NULL;
    st = TM_OK;
out:
    free(buf);
    close(fd);
    return st;
}
