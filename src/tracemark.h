/* tracemark.h -- the one public header of libtracemark.
 *
 * tracemark marks each recipient's copy of an image with a keyed, invisible,
 * recipient-specific spread-spectrum mark, records the copy in a registry,
 * and traces a leaked copy back to its recipient with a stated bound on the
 * chance of accusing an innocent.
 *
 * Conventions: every fallible call returns a tm_status (TM_OK == 0); objects
 * come in _create/_free pairs and _free(NULL) is a no-op; pointer parameters
 * are borrowed unless the comment says the call takes them; the library never
 * prints and never exits. */
#ifndef TRACEMARK_H
#define TRACEMARK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(TM_BUILDING_LIBRARY) && defined(__GNUC__)
#define TM_API __attribute__((visibility("default")))
#else
#define TM_API
#endif

/* ---- errors ------------------------------------------------------------ */

/* Stable numbers: scripts and bindings may rely on them. Never renumber. */
typedef enum tm_status {
    TM_OK = 0,
    TM_ERR_NOMEM = 1,        /* out of memory */
    TM_ERR_IO = 2,           /* file could not be opened, read or written */
    TM_ERR_FORMAT = 3,       /* not an image in a supported format */
    TM_ERR_TRUNCATED = 4,    /* image data ends early */
    TM_ERR_CORRUPT = 5,      /* image data is damaged or inconsistent */
    TM_ERR_TOO_LARGE = 6,    /* image exceeds the pixel budget */
    TM_ERR_DIMENSIONS = 7,   /* zero or absurd width/height */
    TM_ERR_UNSUPPORTED = 8,  /* valid but unsupported feature */
    TM_ERR_ARG = 9,          /* invalid argument or option value */
    TM_ERR_EXISTS = 10,      /* refusing to overwrite an existing file */
    TM_ERR_KEY = 11,         /* key file missing, malformed or wrong size */
    TM_ERR_KEY_PERMS = 12,   /* key file readable by group or others */
    TM_ERR_CRYPTO = 13,      /* the crypto library failed */
    TM_ERR_REGISTRY = 14,    /* registry missing, corrupt or wrong schema */
    TM_ERR_TAMPERED = 15,    /* registry row fails its integrity check */
    TM_ERR_BUSY = 16,        /* registry locked by another writer too long */
    TM_ERR_NOT_FOUND = 17,   /* no such image/copy/recipient */
    TM_ERR_INTERNAL = 18     /* a library we call failed unexpectedly */
} tm_status;

/* A short, constant English description of a status; never NULL. */
TM_API const char *tm_strerror(tm_status st);

/* The library version as "MAJOR.MINOR.PATCH". */
TM_API const char *tm_version(void);

/* ---- images ------------------------------------------------------------ */

typedef enum tm_format {
    TM_FORMAT_UNKNOWN = 0,
    TM_FORMAT_JPEG = 1,
    TM_FORMAT_PNG = 2,
    TM_FORMAT_WEBP = 3
} tm_format;

/* Chroma subsampling of a JPEG (as read, or as wanted when encoding). */
typedef enum tm_subsampling {
    TM_SS_UNKNOWN = 0,  /* when encoding: choose (4:2:0 below q90, else 4:4:4) */
    TM_SS_444 = 1,
    TM_SS_422 = 2,
    TM_SS_420 = 3,
    TM_SS_440 = 4,
    TM_SS_411 = 5,
    TM_SS_GRAY = 6
} tm_subsampling;

/* Planar image, one float plane per channel, nominal range 0..255 whatever
 * the file's bit depth (16-bit samples are stored as v/257, which floats hold
 * exactly). Channels: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA; alpha is always the
 * last plane. The colour description (ICC profile, PNG gAMA/cHRM/sRGB) rides
 * along so it can be written to outputs; identifying metadata never does. */
typedef struct tm_image {
    int width;
    int height;
    int channels;
    float *plane[4];       /* owned; plane[c][y * width + x] */
    uint8_t *icc;          /* owned ICC profile or NULL */
    size_t icc_len;
    int has_gamma;         /* PNG gAMA present */
    uint32_t gamma;        /* gAMA value * 100000 */
    int has_srgb;          /* PNG sRGB present */
    int srgb_intent;
    int has_chrm;          /* PNG cHRM present */
    uint32_t chrm[8];      /* white x,y, red x,y, green x,y, blue x,y (* 100000) */
} tm_image;

/* What a file carried, filled in by tm_image_load (and shown by `inspect`). */
typedef struct tm_image_info {
    tm_format format;
    int width, height;         /* as stored, before orientation */
    int bit_depth;             /* 8 or 16 */
    int channels;              /* as decoded (see tm_image) */
    int orientation;           /* EXIF orientation 1..8 found (already applied); 1 if none */
    int jpeg_quality;          /* estimated JPEG quality 1..100, 0 if not JPEG/unknown */
    tm_subsampling subsampling;
    int progressive;           /* JPEG progressive or PNG interlaced */
    int cmyk;                  /* JPEG stored as CMYK/YCCK */
    int palette;               /* PNG palette image */
    int lossless;              /* WebP lossless (VP8L) */
    int has_icc;
    int has_exif;
    int has_gps;               /* EXIF GPS IFD present */
    int has_xmp;
    int has_iptc;
    int has_comment;           /* JPEG COM marker(s) */
    int n_text;                /* PNG tEXt/zTXt/iTXt chunks (XMP counted in has_xmp) */
} tm_image_info;

typedef struct tm_load_options {
    uint64_t max_pixels;       /* refuse larger images before allocating; default 200e6 */
} tm_load_options;

/* Fills *opts with defaults. */
TM_API void tm_load_options_init(tm_load_options *opts);

typedef struct tm_save_options {
    tm_format format;          /* TM_FORMAT_UNKNOWN: from the path's extension */
    int quality;               /* JPEG/WebP 1..100; 0 = default 90 */
    tm_subsampling subsampling;/* JPEG chroma subsampling; TM_SS_UNKNOWN = choose */
    int progressive;           /* JPEG progressive */
    int bit_depth;             /* PNG 8 or 16; 0 = 8 */
    int lossless;              /* WebP lossless */
} tm_save_options;

/* Fills *opts with defaults. */
TM_API void tm_save_options_init(tm_save_options *opts);

/* Allocates a zeroed width x height image with 1..4 channels into *out. */
TM_API tm_status tm_image_create(int width, int height, int channels, tm_image **out);

/* Frees an image and everything it owns; NULL is a no-op. */
TM_API void tm_image_free(tm_image *img);

/* Deep copy of src (pixels and colour description) into *out. */
TM_API tm_status tm_image_clone(const tm_image *src, tm_image **out);

/* Replaces img's ICC profile by a copy of data[0..len) (len 0 removes it). */
TM_API tm_status tm_image_set_icc(tm_image *img, const void *data, size_t len);

/* Applies an EXIF orientation (1..8) so the pixels become upright. */
TM_API tm_status tm_image_orient(tm_image *img, int orientation);

/* Guesses the format from a file's first bytes. */
TM_API tm_format tm_format_sniff(const void *data, size_t len);

/* Guesses the wanted format from a path's extension (.jpg .jpeg .png .webp). */
TM_API tm_format tm_format_from_path(const char *path);

/* Name of a format ("jpeg", "png", "webp", "unknown"). */
TM_API const char *tm_format_name(tm_format fmt);

/* Name of a subsampling ("4:2:0", ..., "gray", "unknown"). */
TM_API const char *tm_subsampling_name(tm_subsampling ss);

/* Decodes an image held in memory; info may be NULL; opts NULL = defaults. */
TM_API tm_status tm_image_decode(const void *data, size_t len, const tm_load_options *opts,
                                 tm_image **out, tm_image_info *info);

/* Reads and decodes an image file (EXIF orientation applied). */
TM_API tm_status tm_image_load(const char *path, const tm_load_options *opts,
                               tm_image **out, tm_image_info *info);

/* Encodes img into a malloc'd buffer (*data, *len) that the caller frees with
 * free(); opts->format must be set. Only the colour description is written. */
TM_API tm_status tm_image_encode(const tm_image *img, const tm_save_options *opts,
                                 uint8_t **data, size_t *len);

/* Encodes img and writes it to path atomically (temp file, fsync, rename);
 * on failure nothing is left at path or beside it. */
TM_API tm_status tm_image_save(const tm_image *img, const char *path,
                               const tm_save_options *opts);

/* Writes data[0..len) to path atomically; with exclusive, refuses to replace
 * an existing file (TM_ERR_EXISTS); mode is the new file's permission bits. */
TM_API tm_status tm_file_write_atomic(const char *path, const void *data, size_t len,
                                      int mode, int exclusive);

/* Reads a whole file into a malloc'd buffer, refusing files above max_len. */
TM_API tm_status tm_file_read(const char *path, size_t max_len, uint8_t **data, size_t *len);

/* ---- keys -------------------------------------------------------------- */

/* A 256-bit secret. Every pseudo-random pattern, codeword and integrity tag
 * derives from it with HMAC-SHA256 and a purpose label; without it nothing in
 * a marked image or the registry can be read or forged. */
typedef struct tm_key tm_key;

#define TM_KEY_BYTES 32

/* Creates a new key file (OS CSPRNG, mode 0600); never overwrites (TM_ERR_EXISTS). */
TM_API tm_status tm_key_generate(const char *path);

/* Loads a key file; refuses one readable by group or others (TM_ERR_KEY_PERMS). */
TM_API tm_status tm_key_load(const char *path, tm_key **out);

/* Wraps raw key bytes (for tests and embedding programs). */
TM_API tm_status tm_key_from_bytes(const uint8_t bytes[TM_KEY_BYTES], tm_key **out);

/* Wipes and frees a key; NULL is a no-op. */
TM_API void tm_key_free(tm_key *key);

/* Fills out[0..len) with the keyed stream for (label, ctx): AES-256-CTR under
 * the subkey HMAC-SHA256(key, label || 0x00 || ctx), zero IV. Bit-identical on
 * every machine for the same inputs. */
TM_API tm_status tm_key_stream(const tm_key *key, const char *label, const void *ctx,
                               size_t ctx_len, void *out, size_t len);

/* mac = HMAC-SHA256(key, label || 0x00 || data). */
TM_API tm_status tm_key_hmac(const tm_key *key, const char *label, const void *data,
                             size_t len, uint8_t mac[32]);

/* A public 16-hex-digit fingerprint of the key (an HMAC of a fixed label), so
 * a registry can tell a wrong key without holding any secret. */
TM_API tm_status tm_key_fingerprint(const tm_key *key, char hex[17]);

/* out = SHA-256(data). */
TM_API tm_status tm_sha256(const void *data, size_t len, uint8_t out[32]);

/* ---- registry ---------------------------------------------------------- */

#ifdef __cplusplus
}
#endif

#endif /* TRACEMARK_H */
