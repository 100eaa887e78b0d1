/* key.c -- the secret key: its file format and the keyed primitives.
 *
 * A key is 32 bytes from the OS CSPRNG, stored as a two-line text file
 * ("tracemark-key-v1", then 64 hex digits) with mode 0600. Everything secret
 * in tracemark derives from it through two primitives: tm_key_hmac
 * (HMAC-SHA256 over label || 0x00 || data, the label separating purposes) and
 * tm_key_stream (AES-256-CTR keystream, zero IV, under a per-(label, context)
 * subkey made by tm_key_hmac), so patterns are bit-identical on every machine.
 *
 * OpenSSL's error model stays in this file: its error queue is cleared before
 * each call and drained after a failure, and every failure becomes
 * TM_ERR_CRYPTO. The loaded key holds a ready HMAC context that each call
 * duplicates, so a const key may be shared by threads. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "internal.h"

#define KEY_MAGIC "tracemark-key-v1"
#define KEY_FILE_MAX 256 /* a valid key file is 82 bytes; anything larger is not one */

struct tm_key {
    uint8_t bytes[TM_KEY_BYTES];
    EVP_MAC *mac;          /* HMAC implementation, fetched once */
    EVP_MAC_CTX *hmac;     /* initialised with the key; duplicated per call */
    EVP_CIPHER *aes_ctr;   /* AES-256-CTR implementation, fetched once */
    int locked;            /* mlock'ed */
};

static const char hexdigits[] = "0123456789abcdef";

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

tm_status tm_key_from_bytes(const uint8_t bytes[TM_KEY_BYTES], tm_key **out)
{
    if (!bytes || !out) return TM_ERR_ARG;
    *out = NULL;
    tm_status st = TM_ERR_CRYPTO;
    tm_key *k = calloc(1, sizeof *k);
    /* kept out of swap where the limits allow (best effort: an unprivileged
     * RLIMIT_MEMLOCK of 0 refuses, and the key still works) */
    if (k) k->locked = mlock(k, sizeof *k) == 0;
    if (!k) return TM_ERR_NOMEM;
    memcpy(k->bytes, bytes, TM_KEY_BYTES);

    ERR_clear_error();
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    k->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!k->mac) goto out;
    k->hmac = EVP_MAC_CTX_new(k->mac);
    if (!k->hmac) goto out;
    if (!EVP_MAC_init(k->hmac, k->bytes, TM_KEY_BYTES, params)) goto out;
    k->aes_ctr = EVP_CIPHER_fetch(NULL, "AES-256-CTR", NULL);
    if (!k->aes_ctr) goto out;
    *out = k;
    k = NULL;
    st = TM_OK;
out:
    ERR_clear_error();
    tm_key_free(k);
    return st;
}

void tm_key_free(tm_key *key)
{
    if (!key) return;
    EVP_MAC_CTX_free(key->hmac);
    EVP_MAC_free(key->mac);
    EVP_CIPHER_free(key->aes_ctr);
    int locked = key->locked;
    OPENSSL_cleanse(key, sizeof *key);
    if (locked) munlock(key, sizeof *key);
    free(key);
}

/* Writes raw as a new key file (mode 0600, never over an existing file). */
static tm_status write_key_file(const char *path, const uint8_t raw[TM_KEY_BYTES])
{
    char text[sizeof KEY_MAGIC + 2 * TM_KEY_BYTES + 2];
    size_t n = 0;
    memcpy(text, KEY_MAGIC "\n", sizeof KEY_MAGIC);
    n += sizeof KEY_MAGIC;
    for (size_t i = 0; i < TM_KEY_BYTES; i++) {
        text[n++] = hexdigits[raw[i] >> 4];
        text[n++] = hexdigits[raw[i] & 15];
    }
    text[n++] = '\n';
    tm_status st = tm_file_write_atomic(path, text, n, 0600, 1);
    OPENSSL_cleanse(text, sizeof text);
    return st;
}

tm_status tm_key_generate(const char *path)
{
    if (!path || !*path) return TM_ERR_ARG;
    uint8_t raw[TM_KEY_BYTES];
    tm_status st = TM_ERR_CRYPTO;

    /* Checked first so an existing file is reported as such, not masked by
     * a CSPRNG failure; tm_file_write_atomic re-checks race-free with link(). */
    if (access(path, F_OK) == 0) return TM_ERR_EXISTS;
    ERR_clear_error();
    if (RAND_bytes(raw, sizeof raw) == 1) st = write_key_file(path, raw);
    ERR_clear_error();
    OPENSSL_cleanse(raw, sizeof raw);
    return st;
}

tm_status tm_key_save(const tm_key *key, const char *path)
{
    if (!key || !path || !*path) return TM_ERR_ARG;
    return write_key_file(path, key->bytes);
}

/* Parses the key file text; TM_ERR_KEY unless it is exactly the magic line,
 * 64 hex digits and an optional final newline. */
static tm_status parse_key_text(const char *text, size_t len, uint8_t raw[TM_KEY_BYTES])
{
    size_t mlen = strlen(KEY_MAGIC);
    if (len < mlen + 1 + 2 * TM_KEY_BYTES) return TM_ERR_KEY;
    if (memcmp(text, KEY_MAGIC, mlen) != 0 || text[mlen] != '\n') return TM_ERR_KEY;
    const char *h = text + mlen + 1;
    size_t rest = len - (mlen + 1 + 2 * TM_KEY_BYTES);
    if (rest > 1 || (rest == 1 && h[2 * TM_KEY_BYTES] != '\n')) return TM_ERR_KEY;
    for (size_t i = 0; i < TM_KEY_BYTES; i++) {
        int hi = hexval((unsigned char)h[2 * i]), lo = hexval((unsigned char)h[2 * i + 1]);
        if (hi < 0 || lo < 0) return TM_ERR_KEY;
        raw[i] = (uint8_t)(hi << 4 | lo);
    }
    return TM_OK;
}

tm_status tm_key_load(const char *path, tm_key **out)
{
    if (!path || !out) return TM_ERR_ARG;
    *out = NULL;
    char text[KEY_FILE_MAX + 1];
    uint8_t raw[TM_KEY_BYTES];
    size_t got = 0;
    tm_status st = TM_ERR_IO;

    int fd = open(path, O_RDONLY | O_NOCTTY);
    if (fd < 0) return errno == ENOENT || errno == ENOTDIR ? TM_ERR_KEY : TM_ERR_IO;
    /* Permissions are judged on the opened file itself, not the name. */
    struct stat sb;
    if (fstat(fd, &sb) != 0) goto out;
    if (!S_ISREG(sb.st_mode)) {
        st = TM_ERR_KEY;
        goto out;
    }
    if (sb.st_mode & (S_IRWXG | S_IRWXO)) {
        st = TM_ERR_KEY_PERMS;
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, text + got, sizeof text - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            goto out;
        }
        if (r == 0) break;
        got += (size_t)r;
        if (got == sizeof text) break;
    }
    if (got > KEY_FILE_MAX) {
        st = TM_ERR_KEY;
        goto out;
    }
    st = parse_key_text(text, got, raw);
    if (st == TM_OK) st = tm_key_from_bytes(raw, out);
out:
    close(fd);
    OPENSSL_cleanse(text, sizeof text);
    OPENSSL_cleanse(raw, sizeof raw);
    return st;
}

tm_status tm_key_hmac(const tm_key *key, const char *label, const void *data,
                      size_t len, uint8_t mac[32])
{
    if (!key || !label || (!data && len) || !mac) return TM_ERR_ARG;
    tm_status st = TM_ERR_CRYPTO;
    size_t outl = 0;
    ERR_clear_error();
    EVP_MAC_CTX *c = EVP_MAC_CTX_dup(key->hmac);
    if (!c) goto out;
    /* strlen + 1 takes the label's terminating NUL as the 0x00 separator. */
    if (!EVP_MAC_update(c, (const unsigned char *)label, strlen(label) + 1)) goto out;
    if (len && !EVP_MAC_update(c, data, len)) goto out;
    if (!EVP_MAC_final(c, mac, &outl, 32) || outl != 32) goto out;
    st = TM_OK;
out:
    ERR_clear_error();
    EVP_MAC_CTX_free(c);
    return st;
}

tm_status tm_key_stream(const tm_key *key, const char *label, const void *ctx,
                        size_t ctx_len, void *out, size_t len)
{
    if (!key || !label || (!ctx && ctx_len) || (!out && len)) return TM_ERR_ARG;
    uint8_t subkey[32];
    static const uint8_t zero_iv[16];
    tm_status st = tm_key_hmac(key, label, ctx, ctx_len, subkey);
    if (st != TM_OK) return st;
    st = TM_ERR_CRYPTO;
    ERR_clear_error();
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c) goto out;
    if (!EVP_EncryptInit_ex2(c, key->aes_ctr, subkey, zero_iv, NULL)) goto out;
    /* Keystream = encryption of zeros, done in place in chunks EVP's int
     * lengths can hold. */
    if (len) memset(out, 0, len);
    uint8_t *p = out;
    size_t left = len;
    while (left > 0) {
        int chunk = left > (1u << 30) ? (1 << 30) : (int)left;
        int outl = 0;
        if (!EVP_EncryptUpdate(c, p, &outl, p, chunk) || outl != chunk) goto out;
        p += chunk;
        left -= (size_t)chunk;
    }
    st = TM_OK;
out:
    ERR_clear_error();
    EVP_CIPHER_CTX_free(c);
    OPENSSL_cleanse(subkey, sizeof subkey);
    if (st != TM_OK && len) memset(out, 0, len);
    return st;
}

tm_status tm_key_fingerprint(const tm_key *key, char hex[17])
{
    if (!key || !hex) return TM_ERR_ARG;
    uint8_t mac[32];
    tm_status st = tm_key_hmac(key, "tracemark fingerprint", "", 0, mac);
    if (st != TM_OK) return st;
    for (int i = 0; i < 8; i++) {
        hex[2 * i] = hexdigits[mac[i] >> 4];
        hex[2 * i + 1] = hexdigits[mac[i] & 15];
    }
    hex[16] = '\0';
    return TM_OK;
}

tm_status tm_sha256(const void *data, size_t len, uint8_t out[32])
{
    if ((!data && len) || !out) return TM_ERR_ARG;
    unsigned int n = 0;
    ERR_clear_error();
    int ok = EVP_Digest(len ? data : "", len, out, &n, EVP_sha256(), NULL);
    ERR_clear_error();
    return ok && n == 32 ? TM_OK : TM_ERR_CRYPTO;
}
