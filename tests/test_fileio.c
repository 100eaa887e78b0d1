/* test_fileio.c -- atomic writes and bounded reads. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* Number of entries in dir whose name starts with prefix. */
static int count_prefixed(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    if (!d) return -1;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, prefix, strlen(prefix))) n++;
    closedir(d);
    return n;
}

static void test_write_read(void)
{
    const char *p = tm_test_path("a.bin");
    CU_ASSERT_EQUAL(tm_file_write_atomic(p, "hello", 5, 0640, 0), TM_OK);
    struct stat sb;
    CU_ASSERT_EQUAL_FATAL(stat(p, &sb), 0);
    CU_ASSERT_EQUAL(sb.st_mode & 0777, 0640);
    uint8_t *d;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(tm_file_read(p, 100, &d, &n), TM_OK);
    CU_ASSERT_EQUAL(n, 5);
    CU_ASSERT_EQUAL(memcmp(d, "hello", 5), 0);
    free(d);
    /* replacing works; no temporaries are left beside it */
    CU_ASSERT_EQUAL(tm_file_write_atomic(p, "bye", 3, 0600, 0), TM_OK);
    CU_ASSERT_EQUAL_FATAL(tm_file_read(p, 100, &d, &n), TM_OK);
    CU_ASSERT_EQUAL(n, 3);
    free(d);
    CU_ASSERT_EQUAL(count_prefixed(tm_test_tmpdir(), "a.bin.tmp"), 0);
}

static void test_exclusive(void)
{
    const char *p = tm_test_path("ex.bin");
    CU_ASSERT_EQUAL(tm_file_write_atomic(p, "one", 3, 0600, 1), TM_OK);
    CU_ASSERT_EQUAL(tm_file_write_atomic(p, "two", 3, 0600, 1), TM_ERR_EXISTS);
    uint8_t *d;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(tm_file_read(p, 100, &d, &n), TM_OK);
    CU_ASSERT_EQUAL(memcmp(d, "one", 3), 0);
    free(d);
    CU_ASSERT_EQUAL(count_prefixed(tm_test_tmpdir(), "ex.bin.tmp"), 0);
}

static void test_failures_leave_nothing(void)
{
    CU_ASSERT_EQUAL(tm_file_write_atomic(tm_test_path("no/such/dir/f"), "x", 1, 0600, 0), TM_ERR_IO);
    CU_ASSERT_EQUAL(tm_file_write_atomic(NULL, "x", 1, 0600, 0), TM_ERR_ARG);
    CU_ASSERT_EQUAL(tm_file_write_atomic("", "x", 1, 0600, 0), TM_ERR_ARG);
    /* a directory without write permission (skipped as root, who may write anyway) */
    if (geteuid() != 0) {
        const char *ro = tm_test_path("ro");
        CU_ASSERT_EQUAL_FATAL(mkdir(ro, 0500), 0);
        char p[1024];
        snprintf(p, sizeof p, "%s/f", ro);
        CU_ASSERT_EQUAL(tm_file_write_atomic(p, "x", 1, 0600, 0), TM_ERR_IO);
        CU_ASSERT_EQUAL(count_prefixed(ro, "f"), 0);
        chmod(ro, 0700);
    }
    /* /dev/full: every write fails, nothing may remain */
    if (access("/dev/full", W_OK) == 0) CU_ASSERT_EQUAL(tm_file_write_atomic("/dev/full/x", "x", 1, 0600, 0), TM_ERR_IO);
}

/* A write that fails half way (here past a file size limit, as a full disk
 * would) removes the temporary and leaves errno saying why, for the message. */
static void test_failed_write_keeps_errno(void)
{
    struct rlimit old, lim;
    CU_ASSERT_EQUAL_FATAL(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*was)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = 4096;
    if (old.rlim_max != RLIM_INFINITY && old.rlim_max < lim.rlim_cur) lim.rlim_cur = old.rlim_max;
    CU_ASSERT_EQUAL_FATAL(setrlimit(RLIMIT_FSIZE, &lim), 0);
    static char buf[65536];
    memset(buf, 1, sizeof buf);
    errno = 0;
    tm_status st = tm_file_write_atomic(tm_test_path("toolarge.bin"), buf, sizeof buf, 0600, 0);
    int err = errno;
    CU_ASSERT_EQUAL(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, was);
    CU_ASSERT_EQUAL(st, TM_ERR_IO);
    CU_ASSERT_EQUAL(err, EFBIG);
    CU_ASSERT_EQUAL(count_prefixed(tm_test_tmpdir(), "toolarge.bin"), 0);
    /* and a missing directory says so */
    errno = 0;
    CU_ASSERT_EQUAL(tm_file_write_atomic(tm_test_path("no/such/dir/f"), "x", 1, 0600, 0), TM_ERR_IO);
    CU_ASSERT_EQUAL(errno, ENOENT);
}

static void test_read_limits(void)
{
    const char *p = tm_test_path("big.bin");
    char buf[1000];
    memset(buf, 7, sizeof buf);
    CU_ASSERT_EQUAL(tm_file_write_atomic(p, buf, sizeof buf, 0600, 0), TM_OK);
    uint8_t *d = (uint8_t *)1;
    size_t n = 1;
    CU_ASSERT_EQUAL(tm_file_read(p, 999, &d, &n), TM_ERR_TOO_LARGE);
    CU_ASSERT_PTR_NULL(d);
    CU_ASSERT_EQUAL(tm_file_read(tm_test_path("missing"), 10, &d, &n), TM_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(tm_file_read(tm_test_tmpdir(), 10, &d, &n), TM_ERR_IO);
    CU_ASSERT_EQUAL_FATAL(tm_file_read(p, 1000, &d, &n), TM_OK);
    CU_ASSERT_EQUAL(n, 1000);
    free(d);
}

static CU_TestInfo tests[] = {
    {"write then read", test_write_read},
    {"exclusive never overwrites", test_exclusive},
    {"failures leave nothing", test_failures_leave_nothing},
    {"a failed write keeps errno", test_failed_write_keeps_errno},
    {"read limits", test_read_limits},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tm_test_main("fileio", tests);
}
