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
 * prints and never exits. It uses GSL, whose default error handler aborts the
 * process: a program should call gsl_set_error_handler_off() (the library
 * checks every GSL status), as the tracemark program does. */
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
    int luma_only;             /* decode to one plane, the BT.601 luminance (all tracing reads):
                                  a YCbCr JPEG's Y is taken as stored, skipping its chroma */
    int max_side;              /* 0, or shrink an image whose longer side (upright) exceeds this
                                  to that side (Lanczos-3, antialiased; the other side rounded):
                                  a lower-resolution delivery, the same pixels every time */
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

/* tm_file_write_atomic in two steps, for writes that must wait for
 * something else (mark commits its registry rows in between): stage writes
 * and fsyncs the bytes to a new temporary beside path (its name into tmp,
 * cap >= PATH_MAX), nothing left on failure; publish puts it under path
 * (as tm_file_write_atomic's exclusive says) or, failing, removes it. */
TM_API tm_status tm_file_stage(const char *path, const void *data, size_t len, int mode, char *tmp, size_t cap);
TM_API tm_status tm_file_publish(const char *tmp, const char *path, int exclusive);

/* Reads a whole file into a malloc'd buffer, refusing files above max_len. */
TM_API tm_status tm_file_read(const char *path, size_t max_len, uint8_t **data, size_t *len);

/* ---- quality metrics ---------------------------------------------------- */

/* PSNR in dB between the colour channels of two equal-sized images (alpha
 * ignored); 999 when identical, negative when the shapes differ. */
TM_API double tm_psnr(const tm_image *a, const tm_image *b);

/* Mean SSIM (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5) of the two
 * images' luminance; NAN when the shapes or colour channel counts differ, the
 * images are under 11 pixels on a side, or memory runs out. */
TM_API double tm_ssim(const tm_image *a, const tm_image *b);

/* SHA-256 of the decoded pixels (8-bit quantised) and shape: the identity of
 * an original, whatever file it came from. */
TM_API tm_status tm_image_content_hash(const tm_image *img, uint8_t sha[32]);

/* 64-bit perceptual hash (DCT of the 32x32 luminance thumbnail): nearby for
 * the same picture after recompression or resizing, far for other pictures;
 * compare with the Hamming distance. */
TM_API tm_status tm_image_phash(const tm_image *img, uint64_t *hash);

/* ---- keys -------------------------------------------------------------- */

/* A 256-bit secret. Every pseudo-random pattern, codeword and integrity tag
 * derives from it with HMAC-SHA256 and a purpose label; without it nothing in
 * a marked image or the registry can be read or forged. */
typedef struct tm_key tm_key;

#define TM_KEY_BYTES 32

/* Creates a new key file (OS CSPRNG, mode 0600); never overwrites (TM_ERR_EXISTS). */
TM_API tm_status tm_key_generate(const char *path);

/* Writes key as a new key file (mode 0600), e.g. one made by
 * tm_key_from_bytes; never overwrites (TM_ERR_EXISTS). */
TM_API tm_status tm_key_save(const tm_key *key, const char *path);

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

/* The recipient registry: a SQLite file recording every original image and
 * every marked copy (recipient, output, codeword) so trace can score all
 * copies. Each copy row carries an HMAC tag under the key, so an edited row
 * is evident; the file holds no secret, only the key's public fingerprint.
 * Writers in several processes may share one registry (WAL mode, waits and
 * retries on locks). A handle is used by one thread at a time. */
typedef struct tm_registry tm_registry;

/* Image ids are 32 lowercase hex digits chosen by the caller. */
#define TM_IMAGE_ID_LEN 32

/* One original image. Strings are owned by the struct when filled in by the
 * registry (release with tm_reg_image_clear); borrowed when passed in. */
typedef struct tm_reg_image {
    char image_id[TM_IMAGE_ID_LEN + 1];
    uint8_t content_sha256[32];  /* tm_image_content_hash of the original (decoded pixels) */
    int width, height;
    char *original_path;         /* may be NULL */
    uint64_t phash;              /* 64-bit perceptual hash (caller's) */
    char *params;                /* JSON text describing the mark parameters */
    int64_t created;             /* unix time; 0 on put = now */
} tm_reg_image;

/* One marked copy. When filled in by the registry all pointers point into
 * the block returned by a load call; when passed in they are borrowed. */
typedef struct tm_reg_copy {
    int64_t copy_id;             /* assigned by the registry; ignored on put */
    const char *image_id;
    const char *recipient;
    const char *out_path;
    uint8_t out_sha256[32];      /* SHA-256 of the marked file */
    int64_t created;             /* unix time; 0 on put = now */
    uint32_t code_len;           /* m, the number of codeword bits */
    const uint8_t *codeword;     /* (m + 7) / 8 bytes, bits packed LSB first */
    uint8_t tag[32];             /* HMAC of the row; computed on put */
} tm_reg_copy;

/* Opens the registry at path; with create, makes an empty one if the file is
 * missing (never otherwise). TM_ERR_REGISTRY when the file is not a tracemark
 * registry or has a newer schema. On failure *out is still set, unless out of
 * memory, to a handle good only for tm_registry_errmsg and tm_registry_free. */
TM_API tm_status tm_registry_open(const char *path, int create, tm_registry **out);

/* Opens the existing registry at path for reading only: nothing is ever
 * written to the file (tm_registry_check_key binds the key without storing
 * a fingerprint or bringing an older schema up to date; writes fail with
 * TM_ERR_ARG), so it may be another host's shard or a copy on read-only
 * storage. Failures as tm_registry_open. */
TM_API tm_status tm_registry_open_readonly(const char *path, tm_registry **out);

/* Closes the registry (rolling back an unfinished batch); NULL is a no-op. */
TM_API void tm_registry_free(tm_registry *reg);

/* Detail of the last failure on reg (e.g. SQLite's message, "copy 12: ...");
 * "" when there is none; valid until the next call on reg. Never NULL. */
TM_API const char *tm_registry_errmsg(const tm_registry *reg);

/* Binds the registry to key (which must outlive the handle's writes):
 * stores its fingerprint the first time; returns TM_ERR_KEY if the registry
 * was made with another key. A registry of an earlier schema, on a file that
 * may be written, is brought up to date in the same step once all its rows
 * verify (otherwise nothing changes: it stays readable as it is, and writes
 * fail with TM_ERR_TAMPERED and the reason); call it before opening a batch.
 * Writes need it first. */
TM_API tm_status tm_registry_check_key(tm_registry *reg, const tm_key *key);

/* Starts a batch of writes (one transaction, waiting for other writers). */
TM_API tm_status tm_registry_begin(tm_registry *reg);

/* Makes the current batch durable. */
TM_API tm_status tm_registry_commit(tm_registry *reg);

/* Abandons the current batch; TM_OK when there is none. */
TM_API tm_status tm_registry_rollback(tm_registry *reg);

/* Records an original image, tagged and journaled under the bound key; an
 * existing row with the same image_id is kept unchanged and the call
 * succeeds. */
TM_API tm_status tm_registry_put_image(tm_registry *reg, const tm_reg_image *img);

/* Fills *out with the image image_id (TM_ERR_NOT_FOUND if absent). */
TM_API tm_status tm_registry_get_image(tm_registry *reg, const char *image_id,
                                       tm_reg_image *out);

/* Fills *out with the earliest image whose content has this SHA-256. */
TM_API tm_status tm_registry_find_image_by_sha256(tm_registry *reg, const uint8_t sha256[32],
                                                  tm_reg_image *out);

/* Frees the strings a get/find call put in img and zeroes it. */
TM_API void tm_reg_image_clear(tm_reg_image *img);

/* Calls fn for each image (oldest first) with its number of copies; a
 * non-zero return from fn stops the walk. img is valid during the call only. */
TM_API tm_status tm_registry_list_images(tm_registry *reg,
                                         int (*fn)(void *ud, const tm_reg_image *img,
                                                   uint64_t n_copies),
                                         void *ud);

/* Records a copy with its tag under key (bound to the registry first if no
 * key is) and journals it; the same (image_id, recipient) again replaces the
 * earlier row. *copy_id (may be NULL) gets its id. */
TM_API tm_status tm_registry_put_copy(tm_registry *reg, const tm_key *key,
                                      const tm_reg_copy *c, int64_t *copy_id);

/* Loads all copies, or those of one image (image_id non-NULL), in copy_id
 * order into one block *arr of *n entries; free it with tm_reg_copies_free. */
TM_API tm_status tm_registry_load_copies(tm_registry *reg, const char *image_id,
                                         tm_reg_copy **arr, size_t *n);

/* Loads the copies given to one recipient, as tm_registry_load_copies. */
TM_API tm_status tm_registry_load_copies_by_recipient(tm_registry *reg, const char *recipient,
                                                      tm_reg_copy **arr, size_t *n);

/* Loads one copy by id into *arr (one entry); TM_ERR_NOT_FOUND if absent. */
TM_API tm_status tm_registry_get_copy(tm_registry *reg, int64_t copy_id, tm_reg_copy **arr);

/* Frees a block from a load call; NULL is a no-op. */
TM_API void tm_reg_copies_free(tm_reg_copy *arr, size_t n);

/* *n = the number of copies, of all images or of image_id. */
TM_API tm_status tm_registry_count_copies(tm_registry *reg, const char *image_id, uint64_t *n);

/* TM_OK when c's tag matches its fields under key, else TM_ERR_TAMPERED
 * (trace checks the rows it accuses with this). */
TM_API tm_status tm_reg_copy_check(const tm_key *key, const tm_reg_copy *c);

/* Checks the whole registry: SQLite's quick_check (TM_ERR_REGISTRY if it
 * fails), the key's fingerprint (TM_ERR_KEY), then every copy's tag, codeword
 * length and image, every image's tag, and the journal: each row must be the
 * journal's last record of it, each entry must follow from the one before,
 * the head must match the last entry, and every row the journal records
 * must still be there. Calls bad(ud, copy_id, why) for each finding (bad
 * may be NULL; copy_id is 0 for findings about images and the journal,
 * which why names); *n_bad (may be NULL) gets their number; TM_ERR_TAMPERED
 * if any. A registry of schema 1 has no journal: its copies are checked. */
TM_API tm_status tm_registry_verify(tm_registry *reg, const tm_key *key,
                                   void (*bad)(void *ud, int64_t copy_id, const char *why),
                                   void *ud, size_t *n_bad);

/* tm_registry_verify for a yes or no: TM_ERR_TAMPERED with the number of
 * findings and the first in tm_registry_errmsg. */
TM_API tm_status tm_registry_verify_whole(tm_registry *reg, const tm_key *key);

/* The checks of one copy a trace relies on, without a walk of the whole
 * registry: its tag, and that the journal's last record of it is this row
 * and follows from the entry before. TM_ERR_TAMPERED (errmsg says why). */
TM_API tm_status tm_registry_check_copy(tm_registry *reg, const tm_key *key, const tm_reg_copy *c);

/* The journal's length (*entries) and head (the first 16 hex digits of its
 * HMAC, to be written down: a registry rolled back to an earlier state, or
 * with its last rows removed, shows an earlier head), after checking the
 * head against the last entry (TM_ERR_TAMPERED if it does not match). 0 and
 * "" for an empty journal or a registry of schema 1. */
TM_API tm_status tm_registry_journal(tm_registry *reg, const tm_key *key, uint64_t *entries, char head[17]);

/* What tm_registry_merge took from one source registry. */
typedef struct tm_merge_stats {
    uint64_t images, images_added;  /* the source's image rows; those new to the destination */
    uint64_t copies, copies_added;  /* the source's copies; those new to the destination (the
                                       rest were there already: same image, recipient,
                                       codeword, output path and output hash) */
    int src_at_fault;               /* on failure: 1 when src was refused (damaged, another key,
                                       fails verification, or in conflict with dest) and
                                       tm_registry_errmsg(src) says why; 0 when dest's does */
} tm_merge_stats;

/* Merges src (another host's registry made with the same key; may be opened
 * read-only) into dest, whose key must be bound: src is first verified in
 * full (tm_registry_verify: every tag and its journal; TM_ERR_KEY for
 * another key's registry, TM_ERR_TAMPERED naming the first finding), then
 * its images and copies are added to dest under new copy ids, tagged and
 * journaled as tm_registry_put_copy would. An image already in dest must
 * agree on content hash, size, perceptual hash and mark parameters (dest's
 * row is kept: its original path and date stand); a copy already in dest
 * (same image and recipient) must have the same codeword, output path and
 * output hash, and is then left as it is. Any disagreement is refused as a
 * conflict (TM_ERR_EXISTS, both rows named). All in one transaction of dest,
 * or in the caller's batch when one is open (to be rolled back on failure):
 * on failure dest is unchanged. Merging a source again adds nothing. dest
 * is not verified here: tm_registry_verify_whole it first, in the same batch.
 * *ms (may be NULL) gets the counts. */
TM_API tm_status tm_registry_merge(tm_registry *dest, tm_registry *src, const tm_key *key, tm_merge_stats *ms);

/* Writes a consistent copy of the registry as it stands at one moment (other
 * processes may be writing to it) to a new file at path, page for page: the
 * same rows, copy ids, journal and head. The copy uses a rollback journal,
 * not WAL, so readers need no shared-memory file beside it (it can sit on
 * read-only storage, one per trace worker). TM_ERR_EXISTS if path exists;
 * a batch must not be open on reg. */
TM_API tm_status tm_registry_snapshot(tm_registry *reg, const char *path);

/* ---- marking ------------------------------------------------------------ */

/* Codeword length of the current scheme, in bytes (bits packed LSB first). */
#define TM_CODEWORD_BYTES 32

typedef struct tm_mark_params {
    double strength;   /* target RMS luminance change in 0..255 units; default 2.0 (~42 dB) */
} tm_mark_params;

/* Fills *p with defaults. */
TM_API void tm_mark_params_init(tm_mark_params *p);

/* The mark's period in an original of this size is 125 * f pixels, f this
 * (1 up to a long side of 3839 pixels, then 1 more per 2560, at most 4):
 * divide a trace's lattice scale by f to get the copy's size relative to the
 * original (tm_trace_result_set_original does). */
TM_API int tm_mark_tile_scale(int width, int height);

/* The analysis of one original, shared by all its copies. Once made, an
 * embedder may make copies (tm_embedder_codeword, tm_embedder_mark,
 * tm_embedder_mark_encode) from several threads at once, each with its own
 * workspace; create and free it from one. */
typedef struct tm_embedder tm_embedder;

/* Analyses orig (borrowed: it and key must outlive the embedder). */
TM_API tm_status tm_embedder_create(const tm_key *key, const tm_image *orig,
                                    const tm_mark_params *params, tm_embedder **out);

/* Decodes the encoded original data (len bytes; lo as tm_image_decode, NULL
 * for defaults; its luma_only is ignored), describes it in *info (may be NULL)
 * and analyses it. A JPEG is read as stored when it can be (YCbCr or gray,
 * upright): its JPEG copies then keep its chroma untouched and cost little
 * more than encoding (tm_embedder_mark_encode). Its content hash is then that
 * of the stored components, not of tm_image_content_hash; the same file always
 * gives the same image id. key must outlive the embedder. */
TM_API tm_status tm_embedder_create_data(const tm_key *key, const void *data, size_t len,
                                         const tm_load_options *lo, const tm_mark_params *params,
                                         tm_embedder **out, tm_image_info *info);

/* tm_embedder_create_data of the file at path. */
TM_API tm_status tm_embedder_load(const tm_key *key, const char *path, const tm_load_options *lo,
                                  const tm_mark_params *params, tm_embedder **out, tm_image_info *info);

/* Frees an embedder; NULL is a no-op. */
TM_API void tm_embedder_free(tm_embedder *e);

/* The original's size and 64-bit perceptual hash (see tm_image_phash). */
TM_API void tm_embedder_size(const tm_embedder *e, int *width, int *height);
TM_API uint64_t tm_embedder_phash(const tm_embedder *e);

/* The original's image id: 32 hex digits of its content hash. */
TM_API const char *tm_embedder_image_id(const tm_embedder *e);

/* The original's full content hash. */
TM_API void tm_embedder_content_sha256(const tm_embedder *e, uint8_t sha[32]);

/* The codeword the recipient's copy carries (deterministic in key, image, recipient). */
TM_API tm_status tm_embedder_codeword(const tm_embedder *e, const char *recipient,
                                      uint8_t bits[TM_CODEWORD_BYTES]);

/* Makes the recipient's marked copy as a new image (*out, caller frees). */
TM_API tm_status tm_embedder_mark(tm_embedder *e, const char *recipient, tm_image **out);

/* The unmarked original as a new image (*out, caller frees): the pixels
 * the marks are added to. */
TM_API tm_status tm_embedder_original(tm_embedder *e, tm_image **out);

/* Adds the recipient's mark to img in place: an image of the original's
 * size made from it (tm_embedder_original), e.g. with a visible watermark
 * drawn on it (tm_visible_apply). The mark hides where the original's
 * texture does: its mask is the original's. TM_ERR_DIMENSIONS for another
 * size. tm_embedder_mark is tm_embedder_original then this. */
TM_API tm_status tm_embedder_mark_onto(tm_embedder *e, const char *recipient, tm_image *img);

/* Makes the recipient's marked copy as an encoded file (*data, malloc'd, *len
 * bytes) with options so. */
TM_API tm_status tm_embedder_mark_encode(tm_embedder *e, const char *recipient, const tm_save_options *so,
                                         uint8_t **data, size_t *len);

/* JSON describing the scheme parameters recorded with each image. */
TM_API const char *tm_scheme_params_json(void);

/* ---- visible watermark -------------------------------------------------- */

/* A semi-transparent line of text ("For review only - Alice") tiled over
 * the whole image, in staggered rows turned by an angle: light letters with
 * a thin dark outline, so it reads on dark and light pictures alike. It is
 * drawn with FreeType, in a font found through fontconfig unless named
 * (docs/visible.md); `mark --visible` draws it before the invisible mark. */

/* The longest text tm_visible_apply accepts, in bytes. */
#define TM_VISIBLE_MAX_TEXT 256

typedef struct tm_visible_params {
    const char *text;  /* UTF-8, one line, the recipient already substituted */
    double opacity;    /* of the letters, in (0, 1]; default 0.25 */
    double angle_deg;  /* counter-clockwise, in [-180, 180]; default 30 */
    double size;       /* the font's em as a fraction of the image's shorter side,
                          in (0, 1]; default 0.05 */
    const char *font;  /* a font file, or NULL: the default (tm_visible_font) */
} tm_visible_params;

/* Fills *p with defaults (text NULL: the caller must set it). */
TM_API void tm_visible_params_init(tm_visible_params *p);

/* Writes to path (cap bytes) the font file tm_visible_apply would use for
 * font (NULL: the configured default, else fontconfig's best match for
 * "DejaVu Sans:bold"); TM_ERR_NOT_FOUND with the reason in err when there is
 * none. The file itself is not opened. */
TM_API tm_status tm_visible_font(const char *font, char *path, size_t cap, char *err, size_t errlen);

/* Draws the text of p tiled over img's colour channels in place (alpha
 * untouched), the same pixels every time for the same inputs. Bad
 * parameters, text that is not one line of UTF-8 and a font file that does
 * not load give TM_ERR_ARG, no default font TM_ERR_NOT_FOUND, with the
 * reason in err (may be NULL); img is then left as it was. */
TM_API tm_status tm_visible_apply(tm_image *img, const tm_visible_params *p, char *err, size_t errlen);

/* The checks tm_visible_apply makes of p but the font's: parameters in
 * range, text one line of UTF-8 within TM_VISIBLE_MAX_TEXT bytes (the same
 * statuses and messages), without drawing anything. */
TM_API tm_status tm_visible_check(const tm_visible_params *p, char *err, size_t errlen);

/* ---- attacks ------------------------------------------------------------ */

/* Applies an attack chain, e.g. "jpeg:q=50" or "crop:0.5,jpeg:q=75", to in,
 * giving a new image *out. A bad spec gives TM_ERR_ARG with the reason in
 * err (may be NULL). */
TM_API tm_status tm_attack_apply(const char *spec, const tm_image *in, tm_image **out,
                                 char *err, size_t errlen);

/* One line of usage for the i-th attack, or NULL past the last. */
TM_API const char *tm_attack_usage(size_t i);

/* Combines n (2..16) borrowed images of one size and channel count, as
 * colluders holding several copies would, into a new *out: spec is a combine
 * mode (average, min, max, median, interleave[:block=B]), optionally followed
 * by an attack chain applied to the result ("average,jpeg:q=75"). A bad spec,
 * count or mismatched image gives TM_ERR_ARG with the reason in err. */
TM_API tm_status tm_attack_combine(const char *spec, const tm_image *const *in, size_t n,
                                   tm_image **out, char *err, size_t errlen);

/* One line of usage for the i-th combine mode, or NULL past the last. */
TM_API const char *tm_attack_combine_usage(size_t i);

/* ---- tracing ------------------------------------------------------------ */

typedef enum tm_verdict {
    TM_VERDICT_NONE = 0,          /* no mark under this key */
    TM_VERDICT_ACCUSED = 1,       /* at least one copy passes the bound */
    TM_VERDICT_INCONCLUSIVE = 2   /* mark present but unattributable, or image unreadable */
} tm_verdict;

typedef struct tm_trace_params {
    double fpr;        /* per-trace false-accusation budget; default 1e-6 */
} tm_trace_params;

/* Fills *p with defaults. */
TM_API void tm_trace_params_init(tm_trace_params *p);

/* One scored copy. */
typedef struct tm_accusation {
    size_t index;      /* into the copies array given to tm_trace_run */
    double score;      /* accusation score S */
    double z;          /* S over the innocent score's standard deviation */
    double log10_p;    /* log10 of an upper bound on the chance that any innocent
                          copy among those scored reaches S (Bonferroni included) */
    int round;         /* accused in round 1, or in a later round, scored once the
                          marks of the copies already accused were taken out of
                          the suspect's soft values (0: not accused) */
} tm_accusation;

#define TM_TRACE_TOP 5

/* Where a suspect lies in the original (informed trace): the affine map
 * from suspect pixel (x, y) to original pixel (a[0] + a[1] x + a[2] y,
 * a[3] + a[4] x + a[5] y), pixel centres at integers. */
typedef struct tm_registration {
    int found;             /* the suspect was registered to the original */
    double affine[6];
    double scale;          /* suspect size / original size: 1 / sqrt|det| */
    double rotation_deg;   /* counter-clockwise turn of the suspect, (-180, 180] */
    double aspect;         /* then stretched: width factor / height factor */
    int flip;              /* the suspect is mirrored (before the turn) */
    double overlap;        /* share of the suspect that falls inside the original */
    double ncc;            /* correlation of the suspect with the original over the overlap */
    double detail;         /* the same for their fine detail (what says the fit is right) */
    double residual;       /* RMS of their difference, 8-bit levels */
} tm_registration;

typedef struct tm_trace_result {
    tm_verdict verdict;
    const char *reason;            /* one English sentence (static) */
    tm_accusation *accused;        /* owned; by round, strongest first in each */
    size_t n_accused;
    tm_accusation top[TM_TRACE_TOP]; /* best-scoring copies not accused */
    size_t n_top;
    size_t n_scored;               /* copies scored */
    double log10_correction;       /* log10 of the multiple-testing factor */
    double pilot_z;                /* strength of the key's pilot pattern */
    double pilot_log10_p;          /* its significance over the shifts searched */
    int offset_x, offset_y;        /* recovered origin of the mark's tile grid */
    double scale;                  /* the mark's period in the suspect / 125; suspect size /
                                      original size after tm_trace_result_set_original */
    double rotation_deg;           /* counter-clockwise turn of the suspect, (-180, 180] */
    int flip;                      /* the suspect is mirrored left-right (before the turn) */
    double aspect;                 /* then stretched: width factor / height factor (1 = none) */
    int informed;                  /* traced by tm_trace_run_informed */
    int original;                  /* the index of the original registered to, or -1 */
    int difference;                /* the suspect minus that original was read (it showed
                                      more evidence of the mark than the suspect alone) */
    tm_registration registration;  /* where the suspect lies in it */
} tm_trace_result;

/* Reads suspect under key and scores copies[0..n) (e.g. from
 * tm_registry_load_copies); fills *out (release with tm_trace_result_clear).
 * Several threads may trace at once with the same key and copies. */
TM_API tm_status tm_trace_run(const tm_key *key, const tm_image *suspect,
                              const tm_reg_copy *copies, size_t n,
                              const tm_trace_params *params, tm_trace_result *out);

/* The unmarked original of an informed trace, prepared once for any number
 * of suspects: its luminance in the frame the mark is read in and at the
 * registration's fine scale (a quarter of the full-size luminance or less),
 * and its perceptual hash. Immutable once made: several threads may trace
 * with one at once. */
typedef struct tm_original tm_original;

/* From a decoded image (borrowed: it may be freed once this returns). */
TM_API tm_status tm_original_create(const tm_image *img, tm_original **out);

/* From a file, as tm_embedder_load reads an original (a JPEG as stored);
 * image_id (TM_IMAGE_ID_LEN + 1 bytes, or NULL) gets the id tm_embedder_load
 * would give it, so a caller can check it is the original a registry
 * image was marked from. lo as for tm_image_load. */
TM_API tm_status tm_original_load(const char *path, const tm_load_options *lo, tm_original **out,
                                  char *image_id);
TM_API void tm_original_free(tm_original *o);
TM_API void tm_original_size(const tm_original *o, int *width, int *height);

/* tm_trace_run with the unmarked original(s) at hand: the suspect is
 * registered to each in turn, nearest first by perceptual hash (at most 64
 * of them), until one fits (Fourier-Mellin phase correlation for scale and
 * rotation, masked NCC for the shift, a sweep of scales when that finds
 * nothing, mirrored suspects too, then an affine fit: GSL's simplex
 * minimiser at the coarse scale, its Levenberg-Marquardt solver at the fine
 * one); the difference from that original, tone-matched, is read in
 * its frame beside the suspect itself, and the reading with more evidence
 * of the mark is scored as tm_trace_run does. When no original fits
 * (out->registration.found 0), the suspect is traced blind. The bound is
 * the same: what is read depends on the suspect and the originals only.
 * out->original gets the index of the original used, -1 if none. */
TM_API tm_status tm_trace_run_informed(const tm_key *key, const tm_image *suspect,
                                       const tm_original *const *originals, size_t n_originals,
                                       const tm_reg_copy *copies, size_t n, const tm_trace_params *params,
                                       tm_trace_result *out);

/* Once the original is known (the accused copy's image in the registry),
 * turns r's scale into suspect size / original size (tm_mark_tile_scale). */
TM_API void tm_trace_result_set_original(tm_trace_result *r, int width, int height);

/* Frees what a trace result owns and zeroes it; NULL is a no-op. */
TM_API void tm_trace_result_clear(tm_trace_result *r);

/* ---- robustness lab ----------------------------------------------------- */

/* A robustness sweep (`tracemark robustness`): every image of a corpus goes
 * through every attack of a grid. Per image, copies are marked for L leakers
 * among a registry of N copies (synthesised from codewords, no file), each
 * leaked copy is attacked and traced; the null side traces the unmarked
 * original through the same attack and the leaked copy under a wrong key.
 * Results are trial records, per-attack tallies, a JSON file and a
 * self-contained HTML report (report.c). */

/* An attack grid: attack specs in order. An attack is a pipeline of stages
 * separated by '|', each a tracemark attack chain (tm_attack_apply), "none",
 * or ImageMagick's convert run on the image handed over as PNM: "im:ARGS"
 * reads back a PNG, "imjpg:ARGS" a JPEG. */
typedef struct tm_lab_grid tm_lab_grid;

/* The built-in default grid as grid text (one attack per line, # comments). */
TM_API const char *tm_lab_grid_default_text(void);

/* Parses grid text into *out: attacks separated by newlines or ';', blanks
 * around them dropped, a line whose first non-blank is '#' a comment. Checks
 * the pipeline shape only (empty stage, "im:" without arguments); arguments
 * are checked by tm_lab_create. TM_ERR_ARG with the reason in err. */
TM_API tm_status tm_lab_grid_parse(const char *text, tm_lab_grid **out, char *err, size_t errlen);

/* Frees a grid; NULL is a no-op. */
TM_API void tm_lab_grid_free(tm_lab_grid *g);

/* The number of attacks, and the i-th attack's spec (NULL past the end). */
TM_API size_t tm_lab_grid_size(const tm_lab_grid *g);
TM_API const char *tm_lab_grid_attack(const tm_lab_grid *g, size_t i);

typedef struct tm_lab_params {
    size_t n_copies;       /* registry size per image, leakers included; default 1000 */
    size_t n_leakers;      /* leaked copies per image; default 1 */
    double fpr;            /* per-trace false-accusation budget; default 1e-6 */
    uint64_t min_pixels;   /* images with fewer pixels are skipped; default 0 */
    int jobs;              /* worker processes; 0 = run in the calling process; default 1 */
    int null_traces;       /* null traces per image and attack: 2 = the unmarked
                              original and the wrong key on every leaked copy;
                              1 = one of the two, alternating over images and
                              attacks (half the cost); 0 = none; default 1 */
    double strength;       /* mark strength (tm_mark_params); 0 = the default */
    int informed;          /* trace with the unmarked original (tm_trace_run_informed) */
    const char *tmp_dir;   /* where the scratch directory goes; NULL = "/tmp" */
    const char *showcase;  /* file name of the image shown side by side in the
                              report; NULL = the first of >= 1 MP by name */
    const char *command;   /* the command line, quoted in the report; may be NULL */
} tm_lab_params;

/* Fills *p with defaults. */
TM_API void tm_lab_params_init(tm_lab_params *p);

/* One sweep: its parameters, images, results and scratch directory. */
typedef struct tm_lab tm_lab;

/* Creates a sweep of grid (copied) under key (borrowed, must outlive the lab;
 * NULL = a fixed built-in lab key). Makes a private scratch directory and
 * checks every attack on a small synthetic probe (ImageMagick stages run
 * convert), so a bad spec fails here, before any work: TM_ERR_ARG with
 * "attack 'SPEC': reason" in tm_lab_errmsg. On failure *out is still set,
 * unless out of memory, to a handle good only for tm_lab_errmsg and
 * tm_lab_free. */
TM_API tm_status tm_lab_create(const tm_lab_params *p, const tm_lab_grid *grid, const tm_key *key, tm_lab **out);

/* Frees a lab and removes its scratch directory; NULL is a no-op. */
TM_API void tm_lab_free(tm_lab *lab);

/* Detail of the last failure ("" when none); never NULL. */
TM_API const char *tm_lab_errmsg(const tm_lab *lab);

/* Adds one image file to the corpus (read when the sweep runs). */
TM_API tm_status tm_lab_add_image(tm_lab *lab, const char *path);

/* Adds the JPEG, PNG and WebP files of dir (by extension, sorted by name);
 * *n_added (may be NULL) gets their number. */
TM_API tm_status tm_lab_add_dir(tm_lab *lab, const char *dir, size_t *n_added);

/* Progress of a running sweep: trials finished of the total expected (an
 * image skipped for its size counts as all its trials). A non-zero return
 * asks the sweep to stop. Called at least every 200 ms while workers run. */
typedef int (*tm_lab_progress_fn)(void *ud, size_t done, size_t total);

/* Runs the sweep, in params.jobs worker processes (fork(), one image at a
 * time each, largest files first; call it from a single-threaded program) or
 * in this process when jobs is 0. A failing image or worker stops everything
 * (error in tm_lab_errmsg). When progress asks to stop, workers are ended and
 * TM_OK is returned with tm_lab_complete() false. Runs once per lab. */
TM_API tm_status tm_lab_run(tm_lab *lab, tm_lab_progress_fn progress, void *ud);

/* True once tm_lab_run has finished every image. */
TM_API int tm_lab_complete(const tm_lab *lab);

typedef enum tm_lab_kind {
    TM_LAB_LEAK = 0,          /* a leaked copy, traced under the key */
    TM_LAB_NULL_UNMARKED = 1, /* the unmarked original, attacked the same way */
    TM_LAB_NULL_WRONG_KEY = 2 /* the attacked leaked copy traced under a wrong key */
} tm_lab_kind;

typedef enum tm_lab_outcome {
    TM_LAB_IDENTIFIED = 0,          /* leak: the leaker accused and nobody else (a
                                       collusion: at least one colluder, and nobody else) */
    TM_LAB_WRONG = 1,               /* leak: a copy other than the leaked one(s) accused;
                                       null: any copy accused */
    TM_LAB_MISSED_NONE = 2,         /* leak: no mark found */
    TM_LAB_MISSED_INCONCLUSIVE = 3, /* leak: mark seen, nobody accused within the bound */
    TM_LAB_NULL_NONE = 4,           /* null: no mark found (right) */
    TM_LAB_NULL_INCONCLUSIVE = 5    /* null: nobody accused (right) */
} tm_lab_outcome;

/* One trace of the sweep. */
typedef struct tm_lab_trial {
    uint32_t image;            /* index into the lab's images */
    uint32_t attack;           /* index into the grid */
    int32_t leaker;            /* the leaked copy's index, -1 for the unmarked original */
    tm_lab_kind kind;
    tm_lab_outcome outcome;
    tm_verdict verdict;
    double score, z, log10_p;  /* leak: the leaker's copy (NAN when it is not
                                  among the accused or the best 5); null: the
                                  best-scoring copy */
    double innocent_log10_p;   /* the best innocent copy (leaks: other than the leaker) */
    double pilot_z, pilot_log10_p;
    double scale;              /* suspect size / original size */
    double rotation_deg, aspect;
    int flip, offset_x, offset_y;
    int width, height;         /* the attacked image */
    double attack_ms, trace_ms;
    int colluders;             /* copies the suspect was made from: 1 for a leak,
                                  C for a "collude:C:..." attack (copies leaker ..
                                  leaker + C - 1), 0 for a null */
    int colluders_accused;     /* how many of them were accused */
    int registered;            /* informed: the suspect was registered to the original */
} tm_lab_trial;

/* One corpus image. */
typedef struct tm_lab_image {
    const char *path;          /* as added */
    const char *name;          /* its file name */
    int width, height;         /* 0 until run */
    int skipped;               /* below min_pixels */
    double psnr, ssim;         /* marked copy (8-bit) against the original */
    double mark_ms;            /* analysis plus one copy */
} tm_lab_image;

/* What the trials of one attack (or of all) add up to. */
typedef struct tm_lab_tally {
    size_t trials;             /* leaked copies traced */
    size_t identified, wrong, missed_none, missed_inconclusive;
    size_t all_colluders;      /* identified with every colluder accused (for a
                                  single leaker, the same as identified) */
    size_t null_trials, null_accused;
    size_t innocents_scored;   /* innocent copies scored in leak trials */
    double weakest_log10_p;    /* largest log10_p of an identification; NAN if none */
    double mean_trace_ms;      /* over leak trials; NAN if none */
} tm_lab_tally;

/* The images added, and the i-th one (NULL past the end). */
TM_API size_t tm_lab_image_count(const tm_lab *lab);
TM_API const tm_lab_image *tm_lab_image_at(const tm_lab *lab, size_t i);

/* The trials recorded, sorted by image, attack, kind and leaker. */
TM_API size_t tm_lab_trial_count(const tm_lab *lab);
TM_API const tm_lab_trial *tm_lab_trial_at(const tm_lab *lab, size_t i);

/* Tallies attack i's trials, or every trial with i == (size_t)-1. */
TM_API void tm_lab_tally_attack(const tm_lab *lab, size_t attack, tm_lab_tally *out);

/* Wall-clock time of tm_lab_run, in milliseconds. */
TM_API double tm_lab_wall_ms(const tm_lab *lab);

/* Short names: "identified", "wrong-accusation", ...; "leak", "null-unmarked",
 * "null-wrong-key". */
TM_API const char *tm_lab_outcome_name(tm_lab_outcome o);
TM_API const char *tm_lab_kind_name(tm_lab_kind k);

/* Writes every trial and the summary as JSON to path, atomically. A lab that
 * has not completed gives TM_ERR_ARG and writes nothing. */
TM_API tm_status tm_lab_write_json(const tm_lab *lab, const char *path);

/* Writes the self-contained HTML report (inline SVG plots, data: URI
 * thumbnails, no external resource) to path, atomically; as tm_lab_write_json. */
TM_API tm_status tm_lab_write_html(const tm_lab *lab, const char *path);

/* The summary as markdown tables (per attack, per image) in a malloc'd
 * string *text that the caller frees. */
TM_API tm_status tm_lab_summary_markdown(const tm_lab *lab, char **text);

#ifdef __cplusplus
}
#endif

#endif /* TRACEMARK_H */
