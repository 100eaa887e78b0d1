/* registry.c -- the recipient registry, kept in SQLite.
 *
 * Three tables: meta (the key's public fingerprint), images (one row per
 * original: content hash, size, perceptual hash, mark parameters) and copies
 * (one row per recipient's copy: output, codeword and an HMAC tag over the
 * row's fields, so an edit made without the key is evident). A registry is
 * recognised by its application_id; PRAGMA user_version is the schema
 * version, and a newer one is refused rather than misread.
 *
 * Several processes may mark into one registry at once: the file is in WAL
 * mode, every write runs in a BEGIN IMMEDIATE transaction (so no reader ever
 * has to upgrade to a writer and deadlock), SQLite waits up to
 * BUSY_TIMEOUT_MS for a lock and we retry a few more times on top for the
 * cases where it returns SQLITE_BUSY without waiting. Every statement is
 * prepared once per handle and reset after each use, so no read snapshot is
 * held between calls. SQLite's error model stays here: each failure becomes
 * a tm_status plus a message kept in the handle. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/crypto.h>
#include <sqlite3.h>

#include "internal.h"

#define SCHEMA_VERSION 1
#define APPLICATION_ID 0x544d524b /* "TMRK" */
#define BUSY_TIMEOUT_MS 10000
#define BUSY_RETRIES 6
#define MAX_CODE_BITS (1u << 24)
#define TAG_LABEL "registry row"
#define FINGERPRINT_NAME "key_fingerprint"

static const char schema_sql[] =
    "CREATE TABLE meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE images("
    " image_id TEXT PRIMARY KEY,"
    " content_sha256 BLOB NOT NULL,"
    " width INTEGER NOT NULL,"
    " height INTEGER NOT NULL,"
    " original_path TEXT,"
    " phash INTEGER NOT NULL,"
    " params TEXT NOT NULL,"
    " created INTEGER NOT NULL);"
    "CREATE INDEX images_by_sha256 ON images(content_sha256);"
    "CREATE TABLE copies("
    " copy_id INTEGER PRIMARY KEY,"
    " image_id TEXT NOT NULL REFERENCES images(image_id),"
    " recipient TEXT NOT NULL,"
    " out_path TEXT NOT NULL,"
    " out_sha256 BLOB NOT NULL,"
    " created INTEGER NOT NULL,"
    " code_len INTEGER NOT NULL,"
    " codeword BLOB NOT NULL,"
    " tag BLOB NOT NULL,"
    " UNIQUE(image_id, recipient));"
    "CREATE INDEX copies_by_recipient ON copies(recipient);"
    "PRAGMA application_id = 1414353483;" /* APPLICATION_ID */
    "PRAGMA user_version = 1;";          /* SCHEMA_VERSION */

#define COPY_COLUMNS "copy_id, image_id, recipient, out_path, out_sha256, created, code_len, codeword, tag"
#define IMAGE_COLUMNS "image_id, content_sha256, width, height, original_path, phash, params, created"

/* The prepared statements of a handle; preparing them all at open also
 * proves that the tables have the columns we need. */
enum {
    S_META_GET,
    S_META_PUT,
    S_IMAGE_PUT,
    S_IMAGE_GET,
    S_IMAGE_BY_SHA,
    S_IMAGE_LIST,
    S_COPY_FIND,
    S_COPY_INSERT,
    S_COPY_UPDATE,
    S_COPIES_ALL,
    S_COPIES_IMAGE,
    S_COPIES_RECIPIENT,
    S_COPY_ID,
    S_COUNT_ALL,
    S_COUNT_IMAGE,
    S_VERIFY,
    N_STMTS
};

static const char *const stmt_sql[N_STMTS] = {
    [S_META_GET] = "SELECT value FROM meta WHERE name = ?1",
    [S_META_PUT] = "INSERT OR IGNORE INTO meta(name, value) VALUES(?1, ?2)",
    [S_IMAGE_PUT] = "INSERT OR IGNORE INTO images(" IMAGE_COLUMNS ") VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [S_IMAGE_GET] = "SELECT " IMAGE_COLUMNS " FROM images WHERE image_id = ?1",
    [S_IMAGE_BY_SHA] = "SELECT " IMAGE_COLUMNS " FROM images WHERE content_sha256 = ?1"
                       " ORDER BY created, rowid LIMIT 1",
    [S_IMAGE_LIST] = "SELECT " IMAGE_COLUMNS ", (SELECT count(*) FROM copies c"
                     " WHERE c.image_id = images.image_id) FROM images ORDER BY created, rowid",
    [S_COPY_FIND] = "SELECT copy_id FROM copies WHERE image_id = ?1 AND recipient = ?2",
    [S_COPY_INSERT] = "INSERT INTO copies(image_id, recipient, out_path, out_sha256, created,"
                      " code_len, codeword, tag) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [S_COPY_UPDATE] = "UPDATE copies SET image_id = ?1, recipient = ?2, out_path = ?3,"
                      " out_sha256 = ?4, created = ?5, code_len = ?6, codeword = ?7, tag = ?8"
                      " WHERE copy_id = ?9",
    [S_COPIES_ALL] = "SELECT " COPY_COLUMNS " FROM copies ORDER BY copy_id",
    [S_COPIES_IMAGE] = "SELECT " COPY_COLUMNS " FROM copies WHERE image_id = ?1 ORDER BY copy_id",
    [S_COPIES_RECIPIENT] = "SELECT " COPY_COLUMNS " FROM copies WHERE recipient = ?1 ORDER BY copy_id",
    [S_COPY_ID] = "SELECT " COPY_COLUMNS " FROM copies WHERE copy_id = ?1",
    [S_COUNT_ALL] = "SELECT count(*) FROM copies",
    [S_COUNT_IMAGE] = "SELECT count(*) FROM copies WHERE image_id = ?1",
    [S_VERIFY] = "SELECT c.copy_id, c.image_id, c.recipient, c.out_path, c.out_sha256, c.created,"
                 " c.code_len, c.codeword, c.tag, i.image_id IS NOT NULL"
                 " FROM copies c LEFT JOIN images i ON i.image_id = c.image_id ORDER BY c.copy_id",
};

struct tm_registry {
    sqlite3 *db;
    sqlite3_stmt *stmt[N_STMTS];
    char errmsg[512];
};

/* ---- errors ------------------------------------------------------------- */

static tm_status fail(tm_registry *reg, tm_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static tm_status fail(tm_registry *reg, tm_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reg->errmsg, sizeof reg->errmsg, fmt, ap);
    va_end(ap);
    return st;
}

static tm_status status_of(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE: return TM_OK;
    case SQLITE_NOMEM: return TM_ERR_NOMEM;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return TM_ERR_BUSY;
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM: return TM_ERR_IO;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_SCHEMA:
    case SQLITE_ERROR:
    case SQLITE_MISMATCH: return TM_ERR_REGISTRY;
    case SQLITE_CONSTRAINT: return TM_ERR_ARG;
    default: return TM_ERR_INTERNAL;
    }
}

/* Records SQLite's own message for a failed call, prefixed by what we did. */
static tm_status db_fail(tm_registry *reg, int rc, const char *what)
{
    if ((rc & 0xff) == SQLITE_NOTADB)
        return fail(reg, TM_ERR_REGISTRY, "not a tracemark registry (not a SQLite database)");
    return fail(reg, status_of(rc), "%s: %s", what, reg->db ? sqlite3_errmsg(reg->db) : sqlite3_errstr(rc));
}

const char *tm_registry_errmsg(const tm_registry *reg)
{
    return reg ? reg->errmsg : "out of memory";
}

/* ---- small helpers ------------------------------------------------------ */

static sqlite3_stmt *stmt(tm_registry *reg, int which)
{
    sqlite3_stmt *s = reg->stmt[which];
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return s;
}

/* Runs SQL, retrying when another process holds the lock longer than the
 * busy timeout or SQLite declined to wait. */
static int exec_retry(tm_registry *reg, const char *sql)
{
    for (int attempt = 0;; attempt++) {
        int rc = sqlite3_exec(reg->db, sql, NULL, NULL, NULL);
        if ((rc & 0xff) != SQLITE_BUSY || attempt >= BUSY_RETRIES) return rc;
        sqlite3_sleep(10 + 40 * attempt);
    }
}

static tm_status begin_immediate(tm_registry *reg)
{
    int rc = exec_retry(reg, "BEGIN IMMEDIATE");
    return rc == SQLITE_OK ? TM_OK : db_fail(reg, rc, "cannot start a write transaction");
}

static tm_status commit(tm_registry *reg)
{
    int rc = exec_retry(reg, "COMMIT");
    if (rc == SQLITE_OK) return TM_OK;
    tm_status st = db_fail(reg, rc, "cannot commit");
    if (!sqlite3_get_autocommit(reg->db)) sqlite3_exec(reg->db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

static void rollback_quiet(tm_registry *reg)
{
    if (!sqlite3_get_autocommit(reg->db)) sqlite3_exec(reg->db, "ROLLBACK", NULL, NULL, NULL);
}

static int valid_image_id(const char *id)
{
    if (!id) return 0;
    size_t i = 0;
    for (; id[i]; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f'))) return 0;
    return i == TM_IMAGE_ID_LEN;
}

static char *dup_text(sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    if (!t) return NULL;
    size_t n = (size_t)sqlite3_column_bytes(s, col);
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, t, n);
        d[n] = '\0';
    }
    return d;
}

static void copy_blob32(sqlite3_stmt *s, int col, uint8_t out[32])
{
    const void *b = sqlite3_column_blob(s, col);
    int n = sqlite3_column_bytes(s, col);
    memset(out, 0, 32);
    if (b && n > 0) memcpy(out, b, n < 32 ? (size_t)n : 32);
}

/* ---- open and close ----------------------------------------------------- */

typedef struct probe {
    int app_id, version, n_objects;
} probe;

static tm_status int_query(tm_registry *reg, const char *sql, int *out, int n_out)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(reg->db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            for (int i = 0; i < n_out; i++) out[i] = sqlite3_column_int(s, i);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(s);
    return rc == SQLITE_OK ? TM_OK : db_fail(reg, rc, "cannot read the registry");
}

/* One statement, so one snapshot: a registry being created by another
 * process is seen either blank or complete. */
static tm_status probe_file(tm_registry *reg, probe *p)
{
    int v[3] = {0, 0, 0};
    tm_status st = int_query(reg,
                             "SELECT (SELECT application_id FROM pragma_application_id),"
                             " (SELECT user_version FROM pragma_user_version),"
                             " (SELECT count(*) FROM sqlite_master)",
                             v, 3);
    p->app_id = v[0];
    p->version = v[1];
    p->n_objects = v[2];
    return st;
}

static int is_blank(const probe *p)
{
    return p->app_id == 0 && p->version == 0 && p->n_objects == 0;
}

/* Creates the schema in a blank database; a concurrent creator may win the
 * race, in which case its schema is kept. */
static tm_status init_schema(tm_registry *reg)
{
    /* journal_mode cannot change inside a transaction; it persists in the file. */
    int rc = exec_retry(reg, "PRAGMA journal_mode = WAL");
    if (rc != SQLITE_OK) return db_fail(reg, rc, "cannot switch to WAL mode");
    tm_status st = begin_immediate(reg);
    if (st != TM_OK) return st;
    probe p;
    st = probe_file(reg, &p);
    if (st != TM_OK) goto out;
    if (is_blank(&p)) {
        rc = sqlite3_exec(reg->db, schema_sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            st = db_fail(reg, rc, "cannot create the registry");
            goto out;
        }
    }
    st = commit(reg);
out:
    if (st != TM_OK) rollback_quiet(reg);
    return st;
}

static tm_status check_schema(tm_registry *reg, const probe *p)
{
    if (p->app_id != APPLICATION_ID) {
        if (p->n_objects == 0) return fail(reg, TM_ERR_REGISTRY, "not a tracemark registry (empty database)");
        return fail(reg, TM_ERR_REGISTRY, "not a tracemark registry (a SQLite database of another program)");
    }
    if (p->version > SCHEMA_VERSION)
        return fail(reg, TM_ERR_REGISTRY,
                    "registry has a newer schema (version %d; this tracemark reads version %d): upgrade tracemark",
                    p->version, SCHEMA_VERSION);
    if (p->version < 1) return fail(reg, TM_ERR_REGISTRY, "registry has an unknown schema version %d", p->version);
    static const char *const tables[] = {"meta", "images", "copies"};
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        char sql[128];
        int n = 0;
        snprintf(sql, sizeof sql, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '%s'",
                 tables[i]);
        tm_status st = int_query(reg, sql, &n, 1);
        if (st != TM_OK) return st;
        if (n != 1) return fail(reg, TM_ERR_REGISTRY, "registry is damaged: table '%s' is missing", tables[i]);
    }
    return TM_OK;
}

tm_status tm_registry_open(const char *path, int create, tm_registry **out)
{
    if (!out) return TM_ERR_ARG;
    tm_registry *reg = calloc(1, sizeof *reg);
    *out = reg;
    if (!reg) return TM_ERR_NOMEM;
    if (!path || !*path) return fail(reg, TM_ERR_ARG, "no registry file given");

    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (!create) return fail(reg, TM_ERR_REGISTRY, "no such registry");
    } else if (S_ISDIR(sb.st_mode)) {
        return fail(reg, TM_ERR_IO, "is a directory, not a registry");
    }

    /* NOMUTEX: a handle is used by one thread at a time (see the header),
     * so SQLite's per-call connection lock is pure cost (15% of a load). */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    int rc = sqlite3_open_v2(path, &reg->db, flags, NULL);
    if (rc != SQLITE_OK) return db_fail(reg, rc, "cannot open the registry");
    sqlite3_busy_timeout(reg->db, BUSY_TIMEOUT_MS);

    probe p;
    tm_status st = probe_file(reg, &p);
    if (st != TM_OK) return st;
    if (is_blank(&p) && create) {
        st = init_schema(reg);
        if (st == TM_OK) st = probe_file(reg, &p);
        if (st != TM_OK) return st;
    }
    st = check_schema(reg, &p);
    if (st != TM_OK) return st;

    /* Per-connection settings: enforce image references; fsync each commit
     * (a lost row would be a copy nobody can be traced to). */
    rc = sqlite3_exec(reg->db, "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL", NULL, NULL, NULL);
    if (rc != SQLITE_OK) return db_fail(reg, rc, "cannot configure the registry");
    for (int i = 0; i < N_STMTS; i++) {
        rc = sqlite3_prepare_v2(reg->db, stmt_sql[i], -1, &reg->stmt[i], NULL);
        if (rc != SQLITE_OK) {
            if ((rc & 0xff) == SQLITE_ERROR)
                return fail(reg, TM_ERR_REGISTRY, "registry is damaged: %s", sqlite3_errmsg(reg->db));
            return db_fail(reg, rc, "cannot read the registry");
        }
    }
    return TM_OK;
}

void tm_registry_free(tm_registry *reg)
{
    if (!reg) return;
    for (int i = 0; i < N_STMTS; i++) sqlite3_finalize(reg->stmt[i]);
    if (reg->db) {
        rollback_quiet(reg);
        sqlite3_close_v2(reg->db);
    }
    free(reg);
}

/* Guards entry points against the failed-open handle. */
static tm_status usable(tm_registry *reg)
{
    if (!reg) return TM_ERR_ARG;
    if (!reg->stmt[N_STMTS - 1]) return fail(reg, TM_ERR_ARG, "registry is not open");
    reg->errmsg[0] = '\0';
    return TM_OK;
}

/* ---- transactions ------------------------------------------------------- */

tm_status tm_registry_begin(tm_registry *reg)
{
    tm_status st = usable(reg);
    if (st != TM_OK) return st;
    if (!sqlite3_get_autocommit(reg->db)) return fail(reg, TM_ERR_ARG, "a batch is already open");
    return begin_immediate(reg);
}

tm_status tm_registry_commit(tm_registry *reg)
{
    tm_status st = usable(reg);
    if (st != TM_OK) return st;
    if (sqlite3_get_autocommit(reg->db)) return fail(reg, TM_ERR_ARG, "no batch is open");
    return commit(reg);
}

tm_status tm_registry_rollback(tm_registry *reg)
{
    tm_status st = usable(reg);
    if (st != TM_OK) return st;
    if (sqlite3_get_autocommit(reg->db)) return TM_OK;
    int rc = sqlite3_exec(reg->db, "ROLLBACK", NULL, NULL, NULL);
    return rc == SQLITE_OK ? TM_OK : db_fail(reg, rc, "cannot roll back");
}

/* Starts our own transaction for a single write unless the caller has a
 * batch open; *own says whether we must finish it. */
static tm_status write_begin(tm_registry *reg, int *own)
{
    *own = sqlite3_get_autocommit(reg->db);
    return *own ? begin_immediate(reg) : TM_OK;
}

static tm_status write_end(tm_registry *reg, int own, tm_status st)
{
    if (!own) return st;
    if (st == TM_OK) return commit(reg);
    rollback_quiet(reg);
    return st;
}

/* ---- key binding -------------------------------------------------------- */

/* *found = whether meta holds a fingerprint; fp gets it. */
static tm_status get_fingerprint(tm_registry *reg, char fp[17], int *found)
{
    sqlite3_stmt *s = stmt(reg, S_META_GET);
    sqlite3_bind_text(s, 1, FINGERPRINT_NAME, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    *found = 0;
    tm_status st = TM_OK;
    if (rc == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(s, 0);
        snprintf(fp, 17, "%s", t ? t : "");
        *found = 1;
    } else if (rc != SQLITE_DONE) {
        st = db_fail(reg, rc, "cannot read the key fingerprint");
    }
    sqlite3_reset(s);
    return st;
}

static tm_status compare_fingerprint(tm_registry *reg, const char *have, const char *mine)
{
    if (strcmp(have, mine) == 0) return TM_OK;
    return fail(reg, TM_ERR_KEY, "registry was made with another key (fingerprint %s)", have);
}

tm_status tm_registry_check_key(tm_registry *reg, const tm_key *key)
{
    tm_status st = usable(reg);
    if (st != TM_OK) return st;
    if (!key) return fail(reg, TM_ERR_ARG, "no key");
    char mine[17], have[17];
    int found, own = 0;
    st = tm_key_fingerprint(key, mine);
    if (st != TM_OK) return fail(reg, st, "cannot compute the key fingerprint");
    st = get_fingerprint(reg, have, &found);
    if (st != TM_OK || found) return st != TM_OK ? st : compare_fingerprint(reg, have, mine);

    /* First use: store ours, unless a concurrent process just stored one. */
    st = write_begin(reg, &own);
    if (st != TM_OK) return st;
    sqlite3_stmt *s = stmt(reg, S_META_PUT);
    sqlite3_bind_text(s, 1, FINGERPRINT_NAME, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, mine, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) st = db_fail(reg, rc, "cannot store the key fingerprint");
    if (st == TM_OK) st = get_fingerprint(reg, have, &found);
    if (st == TM_OK) st = compare_fingerprint(reg, have, mine);
    return write_end(reg, own, st);
}

/* ---- images ------------------------------------------------------------- */

tm_status tm_registry_put_image(tm_registry *reg, const tm_reg_image *img)
{
    tm_status st = usable(reg);
    if (st != TM_OK) return st;
    if (!img || !valid_image_id(img->image_id))
        return fail(reg, TM_ERR_ARG, "image id must be %d lowercase hex digits", TM_IMAGE_ID_LEN);
    if (img->width <= 0 || img->height <= 0) return fail(reg, TM_ERR_ARG, "image has no size");
    int own;
    st = write_begin(reg, &own);
    if (st != TM_OK) return st;
    sqlite3_stmt *s = stmt(reg, S_IMAGE_PUT);
    sqlite3_bind_text(s, 1, img->image_id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 2, img->content_sha256, 32, SQLITE_STATIC);
    sqlite3_bind_int(s, 3, img->width);
    sqlite3_bind_int(s, 4, img->height);
    if (img->original_path) sqlite3_bind_text(s, 5, img->original_path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 6, (sqlite3_int64)img->phash);
    sqlite3_bind_text(s, 7, img->params ? img->params : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 8, img->created ? img->created : (int64_t)time(NULL));
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) st = db_fail(reg, rc, "cannot record the image");
    return write_end(reg, own, st);
}

/* Fills out from a row of IMAGE_COLUMNS. */
static tm_status read_image(tm_registry *reg, sqlite3_stmt *s, tm_reg_image *out)
{
    const char *id = (const char *)sqlite3_column_text(s, 0);
    snprintf(out->image_id, sizeof out->image_id, "%s", id ? id : "");
    copy_blob32(s, 1, out->content_sha256);
    out->width = sqlite3_column_int(s, 2);
    out->height = sqlite3_column_int(s, 3);
    out->phash = (uint64_t)sqlite3_column_int64(s, 5);
    out->created = sqlite3_column_int64(s, 7);
    out->original_path = dup_text(s, 4);
    out->params = dup_text(s, 6);
    if ((sqlite3_column_type(s, 4) != SQLITE_NULL && !out->original_path) || !out->params) {
        tm_reg_image_clear(out);
        return fail(reg, TM_ERR_NOMEM, "out of memory");
    }
    return TM_OK;
}

static tm_status get_image_by(tm_registry *reg, sqlite3_stmt *s, tm_reg_image *out, const char *what)
{
    tm_status st;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) st = read_image(reg, s, out);
    else if (rc == SQLITE_DONE) st = fail(reg, TM_ERR_NOT_FOUND, "%s is not in the registry", what);
    else st = db_fail(reg, rc, "cannot read images");
    sqlite3_reset(s);
    return st;
}

tm_status tm_registry_get_image(tm_registry *reg, const char *image_id, tm_reg_image *out)
{
    if (out) memset(out, 0, sizeof *out);
    tm_status st = usable(reg);
    if (st != TM_OK) return st;
    if (!image_id || !out) return fail(reg, TM_ERR_ARG, "no image id");
    sqlite3_stmt *s = stmt(reg, S_IMAGE_GET);
    sqlite3_bind_text(s, 1, image_id, -1, SQLITE_STATIC);
    char what[TM_IMAGE_ID_LEN + 16];
    snprintf(what, sizeof what, "image %.*s", TM_IMAGE_ID_LEN, image_id);
    return get_image_by(reg, s, out, what);
}

tm_status tm_registry_find_image_by_sha256(tm_registry *reg, const uint8_t sha256[32],
                                           tm_reg_image *out)
{
    if (out) memset(out, 0, sizeof *out);
    tm_status st = usable(reg);
    if (st != TM_OK) return st;
    if (!sha256 || !out) return fail(reg, TM_ERR_ARG, "no content hash");
    sqlite3_stmt *s = stmt(reg, S_IMAGE_BY_SHA);
    sqlite3_bind_blob(s, 1, sha256, 32, SQLITE_STATIC);
    return get_image_by(reg, s, out, "an image with this content");
}

void tm_reg_image_clear(tm_reg_image *img)
{
    if (!img) return;
    free(img->original_path);
    free(img->params);
    memset(img, 0, sizeof *img);
}

tm_status tm_registry_list_images(tm_registry *reg,
                                  int (*fn)(void *ud, const tm_reg_image *img, uint64_t n_copies),
                                  void *ud)
{
    tm_status st = usable(reg);
    if (st != TM_OK) return st;
    if (!fn) return fail(reg, TM_ERR_ARG, "no callback");
    sqlite3_stmt *s = stmt(reg, S_IMAGE_LIST);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        tm_reg_image img;
        memset(&img, 0, sizeof img);
        const char *id = (const char *)sqlite3_column_text(s, 0);
        snprintf(img.image_id, sizeof img.image_id, "%s", id ? id : "");
        copy_blob32(s, 1, img.content_sha256);
        img.width = sqlite3_column_int(s, 2);
        img.height = sqlite3_column_int(s, 3);
        img.original_path = (char *)sqlite3_column_text(s, 4);
        img.phash = (uint64_t)sqlite3_column_int64(s, 5);
        img.params = (char *)sqlite3_column_text(s, 6);
        img.created = sqlite3_column_int64(s, 7);
        if (fn(ud, &img, (uint64_t)sqlite3_column_int64(s, 8))) {
            rc = SQLITE_DONE;
            break;
        }
    }
    if (rc != SQLITE_DONE) st = db_fail(reg, rc, "cannot list images");
    sqlite3_reset(s);
    return st;
}

/* ---- copies ------------------------------------------------------------- */

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

/* The tag of a row: HMAC over a canonical serialization in which every
 * field is length-prefixed (8 bytes big-endian) and integers are 8 bytes
 * big-endian, so no two different rows serialize alike. copy_id is not
 * covered: SQLite assigns it and it names the row rather than describing it. */
static tm_status row_tag(const tm_key *key, const char *image_id, const char *recipient,
                         const char *out_path, const uint8_t out_sha256[32], int64_t created,
                         uint64_t code_len, const uint8_t *codeword, size_t cw_len,
                         uint8_t tag[32])
{
    const void *field[4] = {image_id, recipient, out_path, out_sha256};
    size_t flen[4] = {strlen(image_id), strlen(recipient), strlen(out_path), 32};
    size_t total = 7 * 8 + flen[0] + flen[1] + flen[2] + flen[3] + 8 + cw_len;
    uint8_t stack[1024], *buf = total <= sizeof stack ? stack : malloc(total);
    if (!buf) return TM_ERR_NOMEM;
    uint8_t *p = buf;
    for (int i = 0; i < 4; i++) {
        put_u64(p, flen[i]);
        p += 8;
        memcpy(p, field[i], flen[i]);
        p += flen[i];
    }
    put_u64(p, 8);
    put_u64(p + 8, (uint64_t)created);
    put_u64(p + 16, code_len);
    put_u64(p + 24, cw_len);
    p += 32;
    if (cw_len) memcpy(p, codeword, cw_len);
    p += cw_len;
    tm_status st = tm_key_hmac(key, TAG_LABEL, buf, (size_t)(p - buf), tag);
    if (buf != stack) free(buf);
    return st;
}

tm_status tm_reg_copy_check(const tm_key *key, const tm_reg_copy *c)
{
    if (!key || !c || !c->image_id || !c->recipient || !c->out_path || (!c->codeword && c->code_len))
        return TM_ERR_ARG;
    uint8_t tag[32];
    tm_status st = row_tag(key, c->image_id, c->recipient, c->out_path, c->out_sha256, c->created,
                           c->code_len, c->codeword, (c->code_len + 7u) / 8u, tag);
    if (st != TM_OK) return st;
    return CRYPTO_memcmp(tag, c->tag, 32) == 0 ? TM_OK : TM_ERR_TAMPERED;
}

tm_status tm_registry_put_copy(tm_registry *reg, const tm_key *key, const tm_reg_copy *c,
                               int64_t *copy_id)
{
    tm_status st = usable(reg);
    if (st != TM_OK) return st;
    if (!key || !c) return fail(reg, TM_ERR_ARG, "no key or copy");
    if (!valid_image_id(c->image_id))
        return fail(reg, TM_ERR_ARG, "image id must be %d lowercase hex digits", TM_IMAGE_ID_LEN);
    if (!c->recipient || !*c->recipient) return fail(reg, TM_ERR_ARG, "empty recipient");
    if (!c->out_path) return fail(reg, TM_ERR_ARG, "no output path");
    if (c->code_len == 0 || c->code_len > MAX_CODE_BITS || !c->codeword)
        return fail(reg, TM_ERR_ARG, "codeword must have 1..%u bits", MAX_CODE_BITS);

    int64_t created = c->created ? c->created : (int64_t)time(NULL);
    size_t cw_len = (c->code_len + 7u) / 8u;
    uint8_t tag[32];
    st = row_tag(key, c->image_id, c->recipient, c->out_path, c->out_sha256, created, c->code_len,
                 c->codeword, cw_len, tag);
    if (st != TM_OK) return fail(reg, st, "cannot compute the row tag");

    int own;
    st = write_begin(reg, &own);
    if (st != TM_OK) return st;

    sqlite3_stmt *s = stmt(reg, S_COPY_FIND);
    sqlite3_bind_text(s, 1, c->image_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, c->recipient, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    int have = rc == SQLITE_ROW;
    int64_t existing = have ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        st = db_fail(reg, rc, "cannot look up the copy");
        goto out;
    }

    s = stmt(reg, have ? S_COPY_UPDATE : S_COPY_INSERT);
    sqlite3_bind_text(s, 1, c->image_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, c->recipient, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, c->out_path, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 4, c->out_sha256, 32, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, created);
    sqlite3_bind_int64(s, 6, c->code_len);
    sqlite3_bind_blob(s, 7, c->codeword, (int)cw_len, SQLITE_STATIC);
    sqlite3_bind_blob(s, 8, tag, 32, SQLITE_STATIC);
    if (have) sqlite3_bind_int64(s, 9, existing);
    rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        if ((rc & 0xff) == SQLITE_CONSTRAINT)
            st = fail(reg, TM_ERR_NOT_FOUND, "image %s is not in the registry", c->image_id);
        else
            st = db_fail(reg, rc, "cannot record the copy");
        goto out;
    }
    if (copy_id) *copy_id = have ? existing : sqlite3_last_insert_rowid(reg->db);
out:
    return write_end(reg, own, st);
}

/* A growing byte arena for the strings and codewords of a load. */
typedef struct arena {
    uint8_t *p;
    size_t len, cap;
} arena;

static int arena_put(arena *a, const void *src, size_t n, size_t pad_to, int nul, size_t *off)
{
    size_t need = (n > pad_to ? n : pad_to) + (nul ? 1 : 0);
    if (a->cap - a->len < need) {
        size_t cap = a->cap ? a->cap : 4096;
        while (cap - a->len < need) {
            if (cap > SIZE_MAX / 2) return -1;
            cap *= 2;
        }
        uint8_t *p = realloc(a->p, cap);
        if (!p) return -1;
        a->p = p;
        a->cap = cap;
    }
    *off = a->len;
    if (n) memcpy(a->p + a->len, src, n);
    memset(a->p + a->len + n, 0, need - n);
    a->len += need;
    return 0;
}

/* Where each string of a loaded row sits in the arena until the arena has
 * its final address. */
typedef struct row_offsets {
    size_t image_id, recipient, out_path, codeword;
} row_offsets;

/* Steps s (already bound, selecting COPY_COLUMNS) to the end and returns the
 * rows as one block: the array followed by the arena it points into. */
static tm_status load_rows(tm_registry *reg, sqlite3_stmt *s, tm_reg_copy **arr, size_t *n)
{
    tm_status st = TM_OK;
    tm_reg_copy *v = NULL;
    row_offsets *offs = NULL;
    arena a = {NULL, 0, 0};
    size_t cnt = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (cnt == cap) {
            size_t ncap = cap ? cap * 2 : 256;
            tm_reg_copy *nv = realloc(v, ncap * sizeof *nv);
            if (nv) v = nv;
            row_offsets *no = nv ? realloc(offs, ncap * sizeof *no) : NULL;
            if (!nv || !no) {
                st = fail(reg, TM_ERR_NOMEM, "out of memory loading copies");
                goto out;
            }
            offs = no;
            cap = ncap;
        }
        tm_reg_copy *c = &v[cnt];
        row_offsets *o = &offs[cnt];
        memset(c, 0, sizeof *c);
        c->copy_id = sqlite3_column_int64(s, 0);
        int64_t code_len = sqlite3_column_int64(s, 6);
        if (code_len < 0 || code_len > (int64_t)MAX_CODE_BITS) {
            st = fail(reg, TM_ERR_REGISTRY, "copy %lld: impossible code length %lld",
                      (long long)c->copy_id, (long long)code_len);
            goto out;
        }
        c->code_len = (uint32_t)code_len;
        c->created = sqlite3_column_int64(s, 5);
        copy_blob32(s, 4, c->out_sha256);
        copy_blob32(s, 8, c->tag);

        const char *img = (const char *)sqlite3_column_text(s, 1);
        size_t img_len = (size_t)sqlite3_column_bytes(s, 1);
        /* Copies of one image are usually consecutive: share its id. */
        if (cnt > 0 && img && strlen((const char *)a.p + offs[cnt - 1].image_id) == img_len &&
            memcmp(a.p + offs[cnt - 1].image_id, img, img_len) == 0) {
            o->image_id = offs[cnt - 1].image_id;
        } else if (arena_put(&a, img, img ? img_len : 0, 0, 1, &o->image_id)) {
            goto nomem;
        }
        const void *rec = sqlite3_column_text(s, 2);
        if (arena_put(&a, rec, rec ? (size_t)sqlite3_column_bytes(s, 2) : 0, 0, 1, &o->recipient)) goto nomem;
        const void *path = sqlite3_column_text(s, 3);
        if (arena_put(&a, path, path ? (size_t)sqlite3_column_bytes(s, 3) : 0, 0, 1, &o->out_path)) goto nomem;
        /* A tampered row may hold fewer codeword bytes than code_len needs:
         * pad with zeros so readers of (m + 7) / 8 bytes stay in bounds. */
        const void *cw = sqlite3_column_blob(s, 7);
        size_t cw_len = cw ? (size_t)sqlite3_column_bytes(s, 7) : 0;
        if (arena_put(&a, cw, cw_len, (c->code_len + 7u) / 8u, 0, &o->codeword)) goto nomem;
        cnt++;
    }
    if (rc != SQLITE_DONE) {
        st = db_fail(reg, rc, "cannot read copies");
        goto out;
    }
    if (cnt == 0) {
        *arr = NULL;
        *n = 0;
        goto out;
    }
    size_t head = cnt * sizeof *v;
    tm_reg_copy *block = realloc(v, head + a.len);
    if (!block) goto nomem;
    v = NULL;
    uint8_t *base = (uint8_t *)block + head;
    memcpy(base, a.p, a.len);
    for (size_t i = 0; i < cnt; i++) {
        block[i].image_id = (const char *)base + offs[i].image_id;
        block[i].recipient = (const char *)base + offs[i].recipient;
        block[i].out_path = (const char *)base + offs[i].out_path;
        block[i].codeword = base + offs[i].codeword;
    }
    *arr = block;
    *n = cnt;
    goto out;
nomem:
    st = fail(reg, TM_ERR_NOMEM, "out of memory loading copies");
out:
    sqlite3_reset(s);
    free(v);
    free(offs);
    free(a.p);
    return st;
}

static tm_status load_start(tm_registry *reg, tm_reg_copy **arr, size_t *n)
{
    if (arr) *arr = NULL;
    if (n) *n = 0;
    tm_status st = usable(reg);
    if (st != TM_OK) return st;
    if (!arr || !n) return fail(reg, TM_ERR_ARG, "no output array");
    return TM_OK;
}

tm_status tm_registry_load_copies(tm_registry *reg, const char *image_id, tm_reg_copy **arr, size_t *n)
{
    tm_status st = load_start(reg, arr, n);
    if (st != TM_OK) return st;
    sqlite3_stmt *s = stmt(reg, image_id ? S_COPIES_IMAGE : S_COPIES_ALL);
    if (image_id) sqlite3_bind_text(s, 1, image_id, -1, SQLITE_STATIC);
    return load_rows(reg, s, arr, n);
}

tm_status tm_registry_load_copies_by_recipient(tm_registry *reg, const char *recipient,
                                               tm_reg_copy **arr, size_t *n)
{
    tm_status st = load_start(reg, arr, n);
    if (st != TM_OK) return st;
    if (!recipient) return fail(reg, TM_ERR_ARG, "no recipient");
    sqlite3_stmt *s = stmt(reg, S_COPIES_RECIPIENT);
    sqlite3_bind_text(s, 1, recipient, -1, SQLITE_STATIC);
    return load_rows(reg, s, arr, n);
}

tm_status tm_registry_get_copy(tm_registry *reg, int64_t copy_id, tm_reg_copy **arr)
{
    size_t n = 0;
    tm_status st = load_start(reg, arr, &n);
    if (st != TM_OK) return st;
    sqlite3_stmt *s = stmt(reg, S_COPY_ID);
    sqlite3_bind_int64(s, 1, copy_id);
    st = load_rows(reg, s, arr, &n);
    if (st == TM_OK && n == 0) st = fail(reg, TM_ERR_NOT_FOUND, "copy %lld is not in the registry", (long long)copy_id);
    return st;
}

void tm_reg_copies_free(tm_reg_copy *arr, size_t n)
{
    (void)n; /* one block holds the array and everything it points to */
    free(arr);
}

tm_status tm_registry_count_copies(tm_registry *reg, const char *image_id, uint64_t *n)
{
    if (n) *n = 0;
    tm_status st = usable(reg);
    if (st != TM_OK) return st;
    if (!n) return fail(reg, TM_ERR_ARG, "no output");
    sqlite3_stmt *s = stmt(reg, image_id ? S_COUNT_IMAGE : S_COUNT_ALL);
    if (image_id) sqlite3_bind_text(s, 1, image_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) *n = (uint64_t)sqlite3_column_int64(s, 0);
    else st = db_fail(reg, rc, "cannot count copies");
    sqlite3_reset(s);
    return st;
}

/* ---- integrity ---------------------------------------------------------- */

static tm_status quick_check(tm_registry *reg)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(reg->db, "PRAGMA quick_check", -1, &s, NULL);
    tm_status st = TM_OK;
    if (rc != SQLITE_OK) {
        st = db_fail(reg, rc, "cannot check the registry");
        goto out;
    }
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const char *r = (const char *)sqlite3_column_text(s, 0);
        if (!r || strcmp(r, "ok") != 0)
            st = fail(reg, TM_ERR_REGISTRY, "registry file is damaged: %s", r ? r : "?");
    } else {
        st = rc == SQLITE_DONE ? fail(reg, TM_ERR_REGISTRY, "integrity check gave no answer")
                               : db_fail(reg, rc, "integrity check failed");
    }
out:
    sqlite3_finalize(s);
    return st;
}

static void append_reason(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void append_reason(char *buf, size_t cap, const char *fmt, ...)
{
    size_t len = strlen(buf);
    if (len && len + 2 < cap) {
        memcpy(buf + len, "; ", 3);
        len += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    if (len < cap) vsnprintf(buf + len, cap - len, fmt, ap);
    va_end(ap);
}

tm_status tm_registry_verify(tm_registry *reg, const tm_key *key,
                             void (*bad)(void *ud, int64_t copy_id, const char *why), void *ud,
                             size_t *n_bad)
{
    if (n_bad) *n_bad = 0;
    tm_status st = usable(reg);
    if (st != TM_OK) return st;
    if (!key) return fail(reg, TM_ERR_ARG, "no key");
    st = quick_check(reg);
    if (st != TM_OK) return st;

    char mine[17], have[17];
    int found;
    st = tm_key_fingerprint(key, mine);
    if (st != TM_OK) return fail(reg, st, "cannot compute the key fingerprint");
    st = get_fingerprint(reg, have, &found);
    if (st == TM_OK && found) st = compare_fingerprint(reg, have, mine);
    if (st != TM_OK) return st;

    sqlite3_stmt *s = stmt(reg, S_VERIFY);
    size_t nb = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        char why[400] = "";
        int64_t id = sqlite3_column_int64(s, 0);
        const char *image_id = (const char *)sqlite3_column_text(s, 1);
        const char *recipient = (const char *)sqlite3_column_text(s, 2);
        const char *out_path = (const char *)sqlite3_column_text(s, 3);
        uint8_t out_sha[32], tag[32], want[32];
        copy_blob32(s, 4, out_sha);
        int64_t created = sqlite3_column_int64(s, 5);
        int64_t code_len = sqlite3_column_int64(s, 6);
        const uint8_t *cw = sqlite3_column_blob(s, 7);
        size_t cw_len = (size_t)sqlite3_column_bytes(s, 7);
        copy_blob32(s, 8, tag);
        int tag_len = sqlite3_column_bytes(s, 8);
        int has_image = sqlite3_column_int(s, 9);

        if (!image_id || !recipient || !out_path) append_reason(why, sizeof why, "missing field");
        if (!has_image) append_reason(why, sizeof why, "image %s has no image row", image_id ? image_id : "(null)");
        if (code_len <= 0 || code_len > (int64_t)MAX_CODE_BITS || cw_len != (size_t)(code_len + 7) / 8)
            append_reason(why, sizeof why, "codeword holds %zu bytes but code_len %lld needs %lld", cw_len,
                          (long long)code_len, (long long)((code_len + 7) / 8));
        if (sqlite3_column_bytes(s, 4) != 32) append_reason(why, sizeof why, "output hash is not 32 bytes");
        if (image_id && recipient && out_path) {
            tm_status ts = row_tag(key, image_id, recipient, out_path, out_sha, created, (uint64_t)code_len,
                                   cw, cw_len, want);
            if (ts != TM_OK) {
                st = fail(reg, ts, "copy %lld: cannot compute the row tag", (long long)id);
                goto out;
            }
            if (tag_len != 32 || CRYPTO_memcmp(want, tag, 32) != 0)
                append_reason(why, sizeof why, "tag does not match (row altered, or written with another key)");
        }
        if (why[0]) {
            nb++;
            if (bad) bad(ud, id, why);
        }
    }
    if (rc != SQLITE_DONE) {
        st = db_fail(reg, rc, "cannot read copies");
        goto out;
    }
    if (nb) st = fail(reg, TM_ERR_TAMPERED, "%zu cop%s failed verification", nb, nb == 1 ? "y" : "ies");
out:
    sqlite3_reset(s);
    if (n_bad) *n_bad = nb;
    return st;
}
