/* status.c -- the status table, failure messages and the library version. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

const char *tm_strerror(tm_status st)
{
    switch (st) {
    case TM_OK: return "success";
    case TM_ERR_NOMEM: return "out of memory";
    case TM_ERR_IO: return "cannot read or write the file";
    case TM_ERR_FORMAT: return "not a JPEG, PNG or WebP image";
    case TM_ERR_TRUNCATED: return "image data is truncated";
    case TM_ERR_CORRUPT: return "image data is corrupt";
    case TM_ERR_TOO_LARGE: return "image exceeds the pixel budget (see --max-pixels)";
    case TM_ERR_DIMENSIONS: return "image has zero or absurd dimensions";
    case TM_ERR_UNSUPPORTED: return "unsupported image feature";
    case TM_ERR_ARG: return "invalid argument";
    case TM_ERR_EXISTS: return "file exists, refusing to overwrite";
    case TM_ERR_KEY: return "key file is missing, malformed or of the wrong size";
    case TM_ERR_KEY_PERMS: return "key file is readable by group or others (chmod 600 it)";
    case TM_ERR_CRYPTO: return "cryptographic library failure";
    case TM_ERR_REGISTRY: return "registry is missing, corrupt or of an unknown schema";
    case TM_ERR_TAMPERED: return "registry row fails its integrity check";
    case TM_ERR_BUSY: return "registry is locked by another process";
    case TM_ERR_NOT_FOUND: return "not found";
    case TM_ERR_INTERNAL: return "internal library failure";
    }
    return "unknown status";
}

const char *tm_version(void)
{
    return PACKAGE_VERSION;
}

static tm_status vfail(tm_status st, char *err, size_t errlen, const char *fmt, va_list ap)
{
    if (err && errlen) vsnprintf(err, errlen, fmt, ap);
    return st;
}

tm_status tm_fail(tm_status st, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(st, err, errlen, fmt, ap);
    va_end(ap);
    return st;
}

tm_status tm_fail_arg(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(TM_ERR_ARG, err, errlen, fmt, ap);
    va_end(ap);
    return TM_ERR_ARG;
}
