/* registry.c -- the recipient registry, kept in SQLite.
 *
 * Four tables: meta (the key's public fingerprint, the journal's head),
 * images (one row per original: content hash, size, perceptual hash, mark
 * parameters), copies (one row per recipient's copy: output, codeword) and
 * journal. Every image and copy row carries an HMAC tag over its fields, so
 * an edit made without the key is evident; the journal records each row
 * written, in order, as a hash chain under the key (entry k's link is an
 * HMAC over entry k - 1's link, k, what was written and its tag), and meta
 * holds an HMAC of the last entry: a row deleted, put back under another id,
 * restored to an earlier version or swapped with another no longer matches
 * the journal, and entries removed from the journal break the chain or its
 * head. A registry is recognised by its application_id; PRAGMA user_version
 * is the schema version, and a newer one is refused rather than misread. A
 * registry of schema 1 (no journal, no image tags) is read as it is and
 * brought to schema 2, its rows verified first, when it is bound to its key
 * on a handle that may write.
 *
 * Shards made on several marking hosts under one key are merged row by row
 * (tm_registry_merge): each source verified in full, each new row tagged and
 * journaled again in the destination, any disagreement refused. A snapshot
 * for trace workers is a page copy by SQLite's backup API, in rollback
 * journal mode so that it can be read from read-only storage.
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

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <sqlite3.h>

#include "internal.h"

#define SCHEMA_VERSION 2
#define APPLICATION_ID 0x544d524b /* "TMRK" */
#define BUSY_TIMEOUT_MS 10000
#define BUSY_RETRIES 6
#define MAX_CODE_BITS (1u << 24)
#define TAG_LABEL "registry row"
#define IMAGE_TAG_LABEL "registry image"
#define LINK_LABEL "registry journal"
#define HEAD_LABEL "registry head"
#define FINGERPRINT_NAME "key_fingerprint"
#define HEAD_NAME "journal_head"

enum { J_IMAGE = 1, J_COPY = 2 }; /* journal kinds */

/* The journal: schema 2's addition, made by the schema and by the upgrade. */
#define JOURNAL_SQL                                                                                     \
    "CREATE TABLE journal(seq INTEGER PRIMARY KEY, kind INTEGER NOT NULL, ref TEXT NOT NULL,"           \
    " row_tag BLOB NOT NULL, link BLOB NOT NULL);"                                                      \
    "CREATE INDEX journal_by_ref ON journal(kind, ref, seq);"

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
    " created INTEGER NOT NULL,"
    " tag BLOB);"
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
    "CREATE INDEX copies_by_recipient ON copies(recipient);" JOURNAL_SQL
    "PRAGMA application_id = 1414353483;" /* APPLICATION_ID */
    "PRAGMA user_version = 2;";          /* SCHEMA_VERSION */

/* Schema 1 to 2, in the transaction that then fills the journal. */
static const char upgrade_sql[] = "ALTER TABLE images ADD COLUMN tag BLOB;" JOURNAL_SQL "PRAGMA user_version = 2;";

#define COPY_COLUMNS "copy_id, image_id, recipient, out_path, out_sha256, created, code_len, codeword, tag"
#define IMAGE_COLUMNS "image_id, content_sha256, width, height, original_path, phash, params, created"

/* The prepared statements of a handle; preparing them all at open also
 * proves that the tables have the columns we need. */
enum {
    S_META_GET,
    S_META_PUT,
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
    S_COPY_PAIR,
    S_COUNT_ALL,
    S_COUNT_IMAGE,
    S_VERIFY,
    /* schema 2 only, prepared once the file has it */
    S_V2,
    S_IMAGE_PUT = S_V2,
    S_IMAGE_TAG,
    S_IMAGES_TAGGED,
    S_META_SET,
    S_J_LAST,
    S_J_ADD,
    S_J_ALL,
    S_J_OF,
    S_J_AT,
    S_J_GONE_COPIES,
    S_J_GONE_IMAGES,
    N_STMTS
};

static const char *const stmt_sql[N_STMTS] = {
    [S_META_GET] = "SELECT value FROM meta WHERE name = ?1",
    [S_META_PUT] = "INSERT OR IGNORE INTO meta(name, value) VALUES(?1, ?2)",
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
    [S_COPY_PAIR] = "SELECT " COPY_COLUMNS " FROM copies WHERE image_id = ?1 AND recipient = ?2",
    [S_COUNT_ALL] = "SELECT count(*) FROM copies",
    [S_COUNT_IMAGE] = "SELECT count(*) FROM copies WHERE image_id = ?1",
    [S_VERIFY] = "SELECT c.copy_id, c.image_id, c.recipient, c.out_path, c.out_sha256, c.created,"
                 " c.code_len, c.codeword, c.tag, i.image_id IS NOT NULL"
                 " FROM copies c LEFT JOIN images i ON i.image_id = c.image_id ORDER BY c.copy_id",
    [S_IMAGE_PUT] = "INSERT OR IGNORE INTO images(" IMAGE_COLUMNS ", tag) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [S_IMAGE_TAG] = "UPDATE images SET tag = ?2 WHERE image_id = ?1",
    [S_IMAGES_TAGGED] = "SELECT " IMAGE_COLUMNS ", tag FROM images ORDER BY created, rowid",
    [S_META_SET] = "INSERT OR REPLACE INTO meta(name, value) VALUES(?1, ?2)",
    [S_J_LAST] = "SELECT seq, link FROM journal ORDER BY seq DESC LIMIT 1",
    [S_J_ADD] = "INSERT INTO journal(seq, kind, ref, row_tag, link) VALUES(?1, ?2, ?3, ?4, ?5)",
    [S_J_ALL] = "SELECT seq, kind, ref, row_tag, link FROM journal ORDER BY seq",
    [S_J_OF] = "SELECT seq, row_tag, link FROM journal WHERE kind = ?1 AND ref = ?2 ORDER BY seq DESC LIMIT 1",
    [S_J_AT] = "SELECT link FROM journal WHERE seq = ?1",
    [S_J_GONE_COPIES] = "SELECT ref, max(seq) FROM journal j WHERE kind = 2 AND NOT EXISTS"
                        " (SELECT 1 FROM copies c WHERE c.copy_id = CAST(j.ref AS INTEGER)) GROUP BY ref ORDER BY 2",
    [S_J_GONE_IMAGES] = "SELECT ref, max(seq) FROM journal j WHERE kind = 1 AND NOT EXISTS"
                        " (SELECT 1 FROM images i WHERE i.image_id = j.ref) GROUP BY ref ORDER BY 2",
};

struct tm_registry {
    sqlite3 *db;
    sqlite3_stmt *stmt[N_STMTS];
    int version;        /* the file's schema version, once open */
    int ready;          /* opened and prepared */
    int readonly;       /* opened by tm_registry_open_readonly: never written */
    const tm_key *key;  /* bound by tm_registry_check_key */
    char refused[512];  /* why an older schema was not brought up to date */
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
    static const char *const tables[] = {"meta", "images", "copies", "journal"};
    for (size_t i = 0; i < (p->version >= 2 ? 4u : 3u); i++) {
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

/* A new registry file made whole before it appears under path: the schema
 * written into a temporary beside it, which is then linked to path (never
 * over a file another process made meanwhile, which is then used as it is)
 * and unlinked. A kill leaves a complete registry or none, at most a
 * temporary. */
static tm_status create_file(tm_registry *reg, const char *path)
{
    size_t n = strlen(path) + 16;
    char *tmp = malloc(n);
    if (!tmp) return fail(reg, TM_ERR_NOMEM, "out of memory");
    snprintf(tmp, n, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        tm_status st = fail(reg, TM_ERR_IO, "cannot create the registry: %s", strerror(errno));
        free(tmp);
        return st;
    }
    mode_t um = umask(0); /* the mode a plain create would give (mkstemp's is 0600) */
    umask(um);
    (void)fchmod(fd, 0666 & ~um);
    close(fd);
    tm_status st = TM_OK;
    int rc = sqlite3_open_v2(tmp, &reg->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) st = db_fail(reg, rc, "cannot create the registry");
    else st = init_schema(reg);
    sqlite3_close_v2(reg->db); /* the last connection: the WAL is folded in and removed */
    reg->db = NULL;
    if (st == TM_OK && link(tmp, path) != 0 && errno != EEXIST) {
        /* a file system without hard links: renamed, unless one appeared */
        struct stat sb;
        int e = errno;
        if ((e == EPERM || e == ENOTSUP || e == EOPNOTSUPP) && stat(path, &sb) != 0) e = rename(tmp, path) ? errno : 0;
        if (e) st = fail(reg, TM_ERR_IO, "cannot create the registry: %s", strerror(e));
    }
    unlink(tmp);
    free(tmp);
    return st;
}

/* Prepares statements [from, to); preparing them also proves that the
 * tables have the columns they name. */
static tm_status prepare(tm_registry *reg, int from, int to)
{
    for (int i = from; i < to; i++) {
        int rc = sqlite3_prepare_v2(reg->db, stmt_sql[i], -1, &reg->stmt[i], NULL);
        if (rc != SQLITE_OK) {
            if ((rc & 0xff) == SQLITE_ERROR)
                return fail(reg, TM_ERR_REGISTRY, "registry is damaged: %s", sqlite3_errmsg(reg->db));
            return db_fail(reg, rc, "cannot read the registry");
        }
    }
    return TM_OK;
}

/* tm_registry_open and tm_registry_open_readonly (create is then 0). */
static tm_status open_registry(const char *path, int create, int readonly, tm_registry **out)
{
    if (!out) return TM_ERR_ARG;
    tm_registry *reg = calloc(1, sizeof *reg);
    *out = reg;
    if (!reg) return TM_ERR_NOMEM;
    reg->readonly = readonly;
    if (!path || !*path) return fail(reg, TM_ERR_ARG, "no registry file given");

    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (!create) return fail(reg, TM_ERR_REGISTRY, "no such registry");
        tm_status st = create_file(reg, path);
        if (st != TM_OK) return st;
    } else if (S_ISDIR(sb.st_mode)) {
        return fail(reg, TM_ERR_IO, "is a directory, not a registry");
    } else if (access(path, R_OK) != 0) {
        return fail(reg, TM_ERR_IO, "cannot open the registry: %s", strerror(errno));
    }

    /* NOMUTEX: a handle is used by one thread at a time (see the header),
     * so SQLite's per-call connection lock is pure cost (15% of a load). */
    int flags = (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_NOMUTEX |
                (create ? SQLITE_OPEN_CREATE : 0);
    int rc = sqlite3_open_v2(path, &reg->db, flags, NULL);
    if (rc != SQLITE_OK) return db_fail(reg, rc, "cannot open the registry");
    sqlite3_busy_timeout(reg->db, BUSY_TIMEOUT_MS);
    /* The file may be hostile: no triggers or views of its own run with our
     * writes, and SQL cannot corrupt it on purpose (defensive mode). */
    sqlite3_db_config(reg->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    sqlite3_db_config(reg->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);

    probe p;
    tm_status st = probe_file(reg, &p);
    if (st != TM_OK && (sqlite3_errcode(reg->db) & 0xff) == SQLITE_READONLY)
        return fail(reg, TM_ERR_IO, "cannot read the registry here: it is in WAL mode and SQLite cannot create its "
                                    "-shm file beside it (a read-only directory); copy it somewhere writable, or "
                                    "read a 'tracemark registry snapshot' of it");
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
    rc = sqlite3_exec(reg->db, "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA cell_size_check = ON",
                      NULL, NULL, NULL);
    if (rc != SQLITE_OK) return db_fail(reg, rc, "cannot configure the registry");
    reg->version = p.version;
    st = prepare(reg, 0, p.version >= 2 ? N_STMTS : S_V2);
    if (st == TM_OK) reg->ready = 1;
    return st;
}

tm_status tm_registry_open(const char *path, int create, tm_registry **out)
{
    return open_registry(path, create, 0, out);
}

tm_status tm_registry_open_readonly(const char *path, tm_registry **out)
{
    return open_registry(path, 0, 1, out);
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
    if (!reg->ready) return fail(reg, TM_ERR_ARG, "registry is not open");
    reg->errmsg[0] = '\0';
    return TM_OK;
}

/* Guards the write entry points: the key bound (tm_registry_check_key,
 * which also brings an older schema up to date). */
static tm_status writable(tm_registry *reg)
{
    if (reg->readonly) return fail(reg, TM_ERR_ARG, "registry was opened read-only");
    if (!reg->key) return fail(reg, TM_ERR_ARG, "no key bound to the registry (tm_registry_check_key first)");
    if (reg->refused[0]) return fail(reg, TM_ERR_TAMPERED, "%s", reg->refused);
    if (reg->version < SCHEMA_VERSION)
        return fail(reg, TM_ERR_REGISTRY, "registry has schema version %d and cannot be written until upgraded",
                    reg->version);
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

/* ---- tags and the journal ---------------------------------------------- */

/* A canonical serialization: every field length-prefixed (8 bytes
 * big-endian) and integers 8 bytes big-endian, so no two different rows
 * serialize alike. */
typedef struct ser {
    uint8_t stack[1024], *p;
    size_t len, cap;
    int oom;
} ser;

static void ser_init(ser *b)
{
    b->p = b->stack;
    b->len = 0;
    b->cap = sizeof b->stack;
    b->oom = 0;
}

static void ser_bytes(ser *b, const void *d, size_t n)
{
    if (b->oom) return;
    if (b->cap - b->len < n) {
        size_t cap = 2 * (b->len + n);
        uint8_t *q = b->p == b->stack ? malloc(cap) : realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        if (b->p == b->stack) memcpy(q, b->stack, b->len);
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void ser_u64(ser *b, uint64_t v)
{
    uint8_t q[8];
    for (int i = 7; i >= 0; i--) {
        q[i] = (uint8_t)v;
        v >>= 8;
    }
    ser_bytes(b, q, 8);
}

static void ser_field(ser *b, const void *d, size_t n)
{
    ser_u64(b, n);
    ser_bytes(b, d, n);
}

static void ser_text(ser *b, const char *t)
{
    ser_field(b, t, strlen(t));
}

/* HMAC of the serialization under label, and the buffer freed. */
static tm_status ser_mac(ser *b, const tm_key *key, const char *label, uint8_t mac[32])
{
    tm_status st = b->oom ? TM_ERR_NOMEM : tm_key_hmac(key, label, b->p, b->len, mac);
    if (b->p != b->stack) free(b->p);
    return st;
}

/* The tag of a copy row. copy_id is not covered: SQLite assigns it and it
 * names the row rather than describing it (the journal binds the two). */
static tm_status row_tag(const tm_key *key, const char *image_id, const char *recipient, const char *out_path,
                         const uint8_t out_sha256[32], int64_t created, uint64_t code_len, const uint8_t *codeword,
                         size_t cw_len, uint8_t tag[32])
{
    ser b;
    ser_init(&b);
    ser_text(&b, image_id);
    ser_text(&b, recipient);
    ser_text(&b, out_path);
    ser_field(&b, out_sha256, 32);
    ser_u64(&b, 8);
    ser_u64(&b, (uint64_t)created);
    ser_u64(&b, code_len);
    ser_field(&b, codeword, cw_len);
    return ser_mac(&b, key, TAG_LABEL, tag);
}

/* The tag of an image row; original_path NULL and "" differ. */
static tm_status image_tag(const tm_key *key, const tm_reg_image *img, uint8_t tag[32])
{
    ser b;
    ser_init(&b);
    ser_text(&b, img->image_id);
    ser_field(&b, img->content_sha256, 32);
    ser_u64(&b, (uint64_t)(int64_t)img->width);
    ser_u64(&b, (uint64_t)(int64_t)img->height);
    ser_u64(&b, img->original_path != NULL);
    ser_text(&b, img->original_path ? img->original_path : "");
    ser_u64(&b, img->phash);
    ser_text(&b, img->params ? img->params : "");
    ser_u64(&b, (uint64_t)img->created);
    return ser_mac(&b, key, IMAGE_TAG_LABEL, tag);
}

/* Journal entry seq's link: an HMAC over the previous entry's link (zeros
 * before the first), seq, and what was written (kind, ref, the row's tag). */
static tm_status link_of(const tm_key *key, const uint8_t prev[32], int64_t seq, int kind, const char *ref,
                         const uint8_t row_tag_[32], uint8_t link[32])
{
    ser b;
    ser_init(&b);
    ser_bytes(&b, prev, 32);
    ser_u64(&b, (uint64_t)seq);
    ser_u64(&b, (uint64_t)kind);
    ser_text(&b, ref);
    ser_bytes(&b, row_tag_, 32);
    return ser_mac(&b, key, LINK_LABEL, link);
}

/* The head kept in meta: "SEQ:HEX", HEX an HMAC over the last entry's seq
 * and link, so the head cannot be moved back without the key. */
static tm_status head_text(const tm_key *key, int64_t seq, const uint8_t link[32], char out[96])
{
    ser b;
    ser_init(&b);
    ser_u64(&b, (uint64_t)seq);
    ser_bytes(&b, link, 32);
    uint8_t mac[32];
    tm_status st = ser_mac(&b, key, HEAD_LABEL, mac);
    if (st != TM_OK) return st;
    int n = snprintf(out, 96, "%lld:", (long long)seq);
    for (int i = 0; i < 32; i++) snprintf(out + n + 2 * i, 3, "%02x", mac[i]);
    return TM_OK;
}

static int blob32(sqlite3_stmt *s, int col, uint8_t out[32])
{
    copy_blob32(s, col, out);
    return sqlite3_column_bytes(s, col) == 32;
}

/* The last entry: *seq 0 and zero link when the journal is empty. */
static tm_status journal_last(tm_registry *reg, int64_t *seq, uint8_t link[32])
{
    sqlite3_stmt *s = stmt(reg, S_J_LAST);
    int rc = sqlite3_step(s);
    *seq = 0;
    memset(link, 0, 32);
    if (rc == SQLITE_ROW) {
        *seq = sqlite3_column_int64(s, 0);
        copy_blob32(s, 1, link);
    }
    sqlite3_reset(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? TM_OK : db_fail(reg, rc, "cannot read the journal");
}

static tm_status meta_set(tm_registry *reg, const char *name, const char *value)
{
    sqlite3_stmt *s = stmt(reg, S_META_SET);
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? TM_OK : db_fail(reg, rc, "cannot write the registry");
}

/* Appends (kind, ref, tag) to the journal and moves the head, in the
 * caller's transaction. */
static tm_status journal_add(tm_registry *reg, const tm_key *key, int kind, const char *ref, const uint8_t tag[32])
{
    int64_t seq;
    uint8_t link[32];
    char head[96];
    tm_status st = journal_last(reg, &seq, link);
    if (st != TM_OK) return st;
    seq++;
    if ((st = link_of(key, link, seq, kind, ref, tag, link)) != TM_OK ||
        (st = head_text(key, seq, link, head)) != TM_OK)
        return fail(reg, st, "cannot compute the journal link");
    sqlite3_stmt *s = stmt(reg, S_J_ADD);
    sqlite3_bind_int64(s, 1, seq);
    sqlite3_bind_int(s, 2, kind);
    sqlite3_bind_text(s, 3, ref, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 4, tag, 32, SQLITE_STATIC);
    sqlite3_bind_blob(s, 5, link, 32, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) return db_fail(reg, rc, "cannot write the journal");
    return meta_set(reg, HEAD_NAME, head);
}

/* The journal's last record of (kind, ref): found 0 when there is none. */
typedef struct jentry {
    int found;
    int64_t seq;
    uint8_t row_tag[32], link[32];
} jentry;

static tm_status journal_of(tm_registry *reg, int kind, const char *ref, jentry *e)
{
    sqlite3_stmt *s = stmt(reg, S_J_OF);
    sqlite3_bind_int(s, 1, kind);
    sqlite3_bind_text(s, 2, ref, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    memset(e, 0, sizeof *e);
    if (rc == SQLITE_ROW) {
        e->found = 1;
        e->seq = sqlite3_column_int64(s, 0);
        copy_blob32(s, 1, e->row_tag);
        copy_blob32(s, 2, e->link);
    }
    sqlite3_reset(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? TM_OK : db_fail(reg, rc, "cannot read the journal");
}

/* Whether the stored head is the HMAC of the last entry (an empty journal
 * and no head agree). */
static tm_status head_agrees(tm_registry *reg, const tm_key *key, int64_t seq, const uint8_t link[32], int *ok,
                             char want[96])
{
    char have[96] = "";
    want[0] = '\0';
    int found = 0;
    sqlite3_stmt *s = stmt(reg, S_META_GET);
    sqlite3_bind_text(s, 1, HEAD_NAME, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(s, 0);
        snprintf(have, sizeof have, "%s", t ? t : "");
        found = 1;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_fail(reg, rc, "cannot read the journal head");
    if (seq == 0) {
        *ok = !found;
        return TM_OK;
    }
    tm_status st = head_text(key, seq, link, want);
    if (st != TM_OK) return fail(reg, st, "cannot compute the journal head");
    *ok = found && strcmp(want, have) == 0;
    return TM_OK;
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

static tm_status read_image(tm_registry *reg, sqlite3_stmt *s, tm_reg_image *out);

/* Where verify's findings go. */
typedef struct sink {
    void (*bad)(void *ud, int64_t copy_id, const char *why);
    void *ud;
    size_t n;
} sink;

static tm_status verify_copies(tm_registry *reg, const tm_key *key, sink *k);

/* The findings of a verify: how many, and the first (its copy, 0 for an
 * image or the journal, and why). */
typedef struct finding {
    size_t n;
    int64_t id;
    char why[400];
} finding;

static void note_finding(void *ud, int64_t copy_id, const char *why)
{
    finding *f = ud;
    if (f->n++) return;
    f->id = copy_id;
    snprintf(f->why, sizeof f->why, "%s", why);
}

/* Schema 1 to 2 in the caller's transaction: every copy's tag checked (a
 * registry already edited is not given a journal that would vouch for the
 * edit), then the new column and table, each image tagged, and one journal
 * entry per image and per copy, in the order they were made. */
static tm_status upgrade(tm_registry *reg, const tm_key *key)
{
    probe p;
    tm_status st = probe_file(reg, &p);
    if (st != TM_OK) return st;
    if (p.version < 2) {
        finding first = {0, 0, ""};
        sink k = {note_finding, &first, 0};
        if ((st = verify_copies(reg, key, &k)) != TM_OK) return st;
        if (k.n)
            return fail(reg, TM_ERR_TAMPERED,
                        "copy %lld fails its integrity check (%s), so the registry is not brought to schema %d: "
                        "see 'tracemark registry verify'",
                        (long long)first.id, first.why, SCHEMA_VERSION);
        int rc = sqlite3_exec(reg->db, upgrade_sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK) return db_fail(reg, rc, "cannot bring the registry to the new schema");
    }
    if ((st = prepare(reg, S_V2, N_STMTS)) != TM_OK) return st;
    reg->version = SCHEMA_VERSION;
    if (p.version >= 2) return TM_OK; /* another process did it */

    /* Images first (a few), then copies, streamed. */
    tm_reg_image *imgs = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *s = stmt(reg, S_IMAGES_TAGGED);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            tm_reg_image *g = realloc(imgs, cap * sizeof *g);
            if (!g) {
                st = fail(reg, TM_ERR_NOMEM, "out of memory");
                break;
            }
            imgs = g;
        }
        memset(&imgs[n], 0, sizeof imgs[n]);
        if ((st = read_image(reg, s, &imgs[n])) != TM_OK) break;
        n++;
    }
    sqlite3_reset(s);
    if (st == TM_OK && rc != SQLITE_DONE) st = db_fail(reg, rc, "cannot read images");
    for (size_t i = 0; i < n && st == TM_OK; i++) {
        uint8_t tag[32];
        if ((st = image_tag(key, &imgs[i], tag)) != TM_OK) {
            st = fail(reg, st, "cannot compute an image tag");
            break;
        }
        s = stmt(reg, S_IMAGE_TAG);
        sqlite3_bind_text(s, 1, imgs[i].image_id, -1, SQLITE_STATIC);
        sqlite3_bind_blob(s, 2, tag, 32, SQLITE_STATIC);
        rc = sqlite3_step(s);
        sqlite3_reset(s);
        st = rc == SQLITE_DONE ? journal_add(reg, key, J_IMAGE, imgs[i].image_id, tag)
                               : db_fail(reg, rc, "cannot tag an image");
    }
    for (size_t i = 0; i < n; i++) tm_reg_image_clear(&imgs[i]);
    free(imgs);
    s = stmt(reg, S_VERIFY);
    while (st == TM_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        char ref[24];
        uint8_t tag[32];
        snprintf(ref, sizeof ref, "%lld", (long long)sqlite3_column_int64(s, 0));
        blob32(s, 8, tag);
        st = journal_add(reg, key, J_COPY, ref, tag);
    }
    if (st == TM_OK && rc != SQLITE_DONE) st = db_fail(reg, rc, "cannot read copies");
    sqlite3_reset(s);
    return st;
}

/* A failed upgrade is rolled back with its transaction: the handle goes
 * back to schema 1's statements. */
static void upgrade_undo(tm_registry *reg, int version)
{
    for (int i = S_V2; i < N_STMTS; i++) {
        sqlite3_finalize(reg->stmt[i]);
        reg->stmt[i] = NULL;
    }
    reg->version = version;
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
    if (st == TM_OK && found) st = compare_fingerprint(reg, have, mine);
    if (st != TM_OK) return st;
    /* Done, unless the fingerprint is to be stored (first use) or an older
     * schema brought up to date: neither on a read-only file, nor on a
     * read-only handle (whatever the file), which only reads. */
    int old = reg->version < SCHEMA_VERSION;
    if ((found && !old) || (found && sqlite3_db_readonly(reg->db, "main") == 1) || reg->readonly) {
        reg->key = key;
        return TM_OK;
    }
    if (old && !sqlite3_get_autocommit(reg->db))
        return fail(reg, TM_ERR_ARG, "bind the key before opening a batch: the registry needs a new schema");
    st = write_begin(reg, &own);
    if (st != TM_OK) return st;
    if (!found) { /* first use: store ours, unless a concurrent process just stored one */
        sqlite3_stmt *s = stmt(reg, S_META_PUT);
        sqlite3_bind_text(s, 1, FINGERPRINT_NAME, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, mine, -1, SQLITE_STATIC);
        int rc = sqlite3_step(s);
        sqlite3_reset(s);
        if (rc != SQLITE_DONE) st = db_fail(reg, rc, "cannot store the key fingerprint");
        if (st == TM_OK) st = get_fingerprint(reg, have, &found);
        if (st == TM_OK) st = compare_fingerprint(reg, have, mine);
    }
    int version = reg->version;
    if (st == TM_OK && old) st = upgrade(reg, key);
    st = write_end(reg, own, st);
    if (st != TM_OK && old) upgrade_undo(reg, version);
    if (st == TM_ERR_TAMPERED && old) {
        /* read as it is (a trace still checks each row it relies on), but
         * never written: writable() gives the reason */
        snprintf(reg->refused, sizeof reg->refused, "%s", reg->errmsg);
        st = TM_OK;
    }
    if (st == TM_OK) reg->key = key;
    return st;
}

/* ---- images ------------------------------------------------------------- */

/* Records row (params set, created not 0) with its tag under key and
 * journals it, in the caller's transaction; *added 0 when a row with its id
 * is there already, which is kept. */
static tm_status image_insert(tm_registry *reg, const tm_key *key, const tm_reg_image *row, int *added)
{
    uint8_t tag[32];
    *added = 0;
    tm_status st = image_tag(key, row, tag);
    if (st != TM_OK) return fail(reg, st, "cannot compute the image tag");
    sqlite3_stmt *s = stmt(reg, S_IMAGE_PUT);
    sqlite3_bind_text(s, 1, row->image_id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 2, row->content_sha256, 32, SQLITE_STATIC);
    sqlite3_bind_int(s, 3, row->width);
    sqlite3_bind_int(s, 4, row->height);
    if (row->original_path) sqlite3_bind_text(s, 5, row->original_path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 6, (sqlite3_int64)row->phash);
    sqlite3_bind_text(s, 7, row->params, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 8, row->created);
    sqlite3_bind_blob(s, 9, tag, 32, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) return db_fail(reg, rc, "cannot record the image");
    if (sqlite3_changes(reg->db) == 0) return TM_OK;
    *added = 1;
    return journal_add(reg, key, J_IMAGE, row->image_id, tag);
}

tm_status tm_registry_put_image(tm_registry *reg, const tm_reg_image *img)
{
    tm_status st = usable(reg);
    if (st != TM_OK) return st;
    if (!img || !valid_image_id(img->image_id))
        return fail(reg, TM_ERR_ARG, "image id must be %d lowercase hex digits", TM_IMAGE_ID_LEN);
    if (img->width <= 0 || img->height <= 0) return fail(reg, TM_ERR_ARG, "image has no size");
    if ((st = writable(reg)) != TM_OK) return st;
    tm_reg_image row = *img;
    if (!row.params) row.params = (char *)"{}";
    if (!row.created) row.created = (int64_t)time(NULL);
    int own, added;
    st = write_begin(reg, &own);
    if (st != TM_OK) return st;
    st = image_insert(reg, reg->key, &row, &added);
    return write_end(reg, own, st);
}

/* A row of IMAGE_COLUMNS as a view: its strings are the statement's, valid
 * until it steps again. */
static void image_view(sqlite3_stmt *s, tm_reg_image *img)
{
    memset(img, 0, sizeof *img);
    const char *id = (const char *)sqlite3_column_text(s, 0);
    snprintf(img->image_id, sizeof img->image_id, "%s", id ? id : "");
    copy_blob32(s, 1, img->content_sha256);
    img->width = sqlite3_column_int(s, 2);
    img->height = sqlite3_column_int(s, 3);
    img->original_path = (char *)sqlite3_column_text(s, 4);
    img->phash = (uint64_t)sqlite3_column_int64(s, 5);
    img->params = (char *)sqlite3_column_text(s, 6);
    img->created = sqlite3_column_int64(s, 7);
}

/* Fills out from a row of IMAGE_COLUMNS, its strings copied. */
static tm_status read_image(tm_registry *reg, sqlite3_stmt *s, tm_reg_image *out)
{
    image_view(s, out);
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
        image_view(s, &img);
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

/* Whether key is the one bound to reg (another handle on the same key
 * counts: same fingerprint). */
static int same_key(const tm_registry *reg, const tm_key *key)
{
    if (key == reg->key) return 1;
    char a[17], b[17];
    return tm_key_fingerprint(key, a) == TM_OK && tm_key_fingerprint(reg->key, b) == TM_OK && !strcmp(a, b);
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
    if (!reg->key && (st = tm_registry_check_key(reg, key)) != TM_OK) return st;
    if ((st = writable(reg)) != TM_OK) return st;
    if (!same_key(reg, key)) return fail(reg, TM_ERR_KEY, "copy written with a key other than the registry's");

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
    int64_t id = have ? existing : sqlite3_last_insert_rowid(reg->db);
    char ref[24];
    snprintf(ref, sizeof ref, "%lld", (long long)id);
    if ((st = journal_add(reg, key, J_COPY, ref, tag)) != TM_OK) goto out;
    if (copy_id) *copy_id = id;
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

static void report(sink *k, int64_t id, const char *why)
{
    k->n++;
    if (k->bad) k->bad(k->ud, id, why);
}

/* Whether e, the journal's last record of a row, is that row as stored
 * (tag): 1, or 0 with the reason appended to why. */
static int entry_matches(const jentry *e, const uint8_t tag[32], char *why, size_t cap)
{
    if (!e->found)
        append_reason(why, cap, "not in the journal (added behind tracemark's back, or a deleted row put back "
                                "under a new id)");
    else if (CRYPTO_memcmp(e->row_tag, tag, 32) != 0)
        append_reason(why, cap, "not the version the journal last recorded (entry %lld): an earlier version "
                                "restored, or rows swapped", (long long)e->seq);
    else
        return 1;
    return 0;
}

/* entry_matches for the journal's last record of (kind, ref). */
static tm_status journal_check(tm_registry *reg, int kind, const char *ref, const uint8_t tag[32], char *why,
                               size_t cap)
{
    jentry e;
    tm_status st = journal_of(reg, kind, ref, &e);
    if (st == TM_OK) entry_matches(&e, tag, why, cap);
    return st;
}

static tm_status verify_copies(tm_registry *reg, const tm_key *key, sink *k)
{
    sqlite3_stmt *s = stmt(reg, S_VERIFY);
    tm_status st = TM_OK;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        char why[600] = "";
        int64_t id = sqlite3_column_int64(s, 0);
        const char *image_id = (const char *)sqlite3_column_text(s, 1);
        const char *recipient = (const char *)sqlite3_column_text(s, 2);
        const char *out_path = (const char *)sqlite3_column_text(s, 3);
        uint8_t out_sha[32], tag[32], want[32];
        int sha_ok = blob32(s, 4, out_sha), tag_ok = blob32(s, 8, tag);
        int64_t created = sqlite3_column_int64(s, 5);
        int64_t code_len = sqlite3_column_int64(s, 6);
        const uint8_t *cw = sqlite3_column_blob(s, 7);
        size_t cw_len = (size_t)sqlite3_column_bytes(s, 7);
        int has_image = sqlite3_column_int(s, 9);

        if (!image_id || !recipient || !out_path) append_reason(why, sizeof why, "missing field");
        if (!has_image) append_reason(why, sizeof why, "image %s has no image row", image_id ? image_id : "(null)");
        if (code_len <= 0 || code_len > (int64_t)MAX_CODE_BITS)
            append_reason(why, sizeof why, "impossible code length %lld", (long long)code_len);
        else if (cw_len != (size_t)(code_len + 7) / 8)
            append_reason(why, sizeof why, "codeword holds %zu bytes but code_len %lld needs %lld", cw_len,
                          (long long)code_len, (long long)((code_len + 7) / 8));
        if (!sha_ok) append_reason(why, sizeof why, "output hash is not 32 bytes");
        if (image_id && recipient && out_path) {
            st = row_tag(key, image_id, recipient, out_path, out_sha, created, (uint64_t)code_len, cw, cw_len, want);
            if (st != TM_OK) {
                st = fail(reg, st, "copy %lld: cannot compute the row tag", (long long)id);
                break;
            }
            if (!tag_ok || CRYPTO_memcmp(want, tag, 32) != 0)
                append_reason(why, sizeof why, "tag does not match (row altered, or written with another key)");
        }
        if (reg->version >= 2) {
            char ref[24];
            snprintf(ref, sizeof ref, "%lld", (long long)id);
            if ((st = journal_check(reg, J_COPY, ref, tag, why, sizeof why)) != TM_OK) break;
        }
        if (why[0]) report(k, id, why);
    }
    if (st == TM_OK && rc != SQLITE_DONE) st = db_fail(reg, rc, "cannot read copies");
    sqlite3_reset(s);
    return st;
}

static tm_status verify_images(tm_registry *reg, const tm_key *key, sink *k)
{
    sqlite3_stmt *s = stmt(reg, S_IMAGES_TAGGED);
    tm_status st = TM_OK;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        tm_reg_image img;
        image_view(s, &img);
        uint8_t tag[32], want[32];
        int tag_ok = blob32(s, 8, tag);
        char why[600] = "";
        if ((st = image_tag(key, &img, want)) != TM_OK) {
            st = fail(reg, st, "cannot compute an image tag");
            break;
        }
        if (!tag_ok || CRYPTO_memcmp(want, tag, 32) != 0)
            append_reason(why, sizeof why, "tag does not match (row altered, or written with another key)");
        if ((st = journal_check(reg, J_IMAGE, img.image_id, tag, why, sizeof why)) != TM_OK) break;
        if (why[0]) {
            char line[700];
            snprintf(line, sizeof line, "image %s: %s", img.image_id, why);
            report(k, 0, line);
        }
    }
    if (st == TM_OK && rc != SQLITE_DONE) st = db_fail(reg, rc, "cannot read images");
    sqlite3_reset(s);
    return st;
}

/* The chain from its first entry, its head, and the rows it records that
 * are gone. */
static tm_status verify_journal(tm_registry *reg, const tm_key *key, sink *k)
{
    uint8_t prev[32] = {0};
    int64_t expect = 1;
    char why[300];
    sqlite3_stmt *s = stmt(reg, S_J_ALL);
    tm_status st = TM_OK;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(s, 0);
        int kind = sqlite3_column_int(s, 1);
        const char *ref = (const char *)sqlite3_column_text(s, 2);
        uint8_t tag[32], link[32], want[32];
        int ok = blob32(s, 3, tag);
        ok &= blob32(s, 4, link);
        if (seq != expect) {
            snprintf(why, sizeof why, "journal entries %lld to %lld are missing", (long long)expect,
                     (long long)seq - 1);
            report(k, 0, why);
        }
        if (ok && ref) {
            if ((st = link_of(key, prev, seq, kind, ref, tag, want)) != TM_OK) {
                st = fail(reg, st, "cannot compute a journal link");
                break;
            }
            ok = CRYPTO_memcmp(want, link, 32) == 0;
        }
        if (!ok && seq == expect) {
            snprintf(why, sizeof why, "journal entry %lld does not follow the one before (it, or an entry before "
                     "it, was altered or removed)", (long long)seq);
            report(k, 0, why);
        }
        memcpy(prev, link, 32);
        expect = seq + 1;
    }
    sqlite3_reset(s);
    if (st != TM_OK) return st;
    if (rc != SQLITE_DONE) return db_fail(reg, rc, "cannot read the journal");
    int head_ok;
    char head[96];
    if ((st = head_agrees(reg, key, expect - 1, prev, &head_ok, head)) != TM_OK) return st;
    if (!head_ok)
        report(k, 0, "the journal's head does not match its last entry (entries removed from its end, or the head "
                     "altered)");

    for (int kind = J_COPY; kind >= J_IMAGE; kind--) {
        s = stmt(reg, kind == J_COPY ? S_J_GONE_COPIES : S_J_GONE_IMAGES);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            const char *ref = (const char *)sqlite3_column_text(s, 0);
            long long seq = sqlite3_column_int64(s, 1);
            if (kind == J_COPY) {
                snprintf(why, sizeof why, "deleted: the journal records it (entry %lld) but the registry has no "
                         "such row", seq);
                report(k, ref ? strtoll(ref, NULL, 10) : 0, why);
            } else {
                snprintf(why, sizeof why, "image %.40s: deleted: the journal records it (entry %lld) but the "
                         "registry has no such row", ref ? ref : "?", seq);
                report(k, 0, why);
            }
        }
        sqlite3_reset(s);
        if (rc != SQLITE_DONE) return db_fail(reg, rc, "cannot read the journal");
    }
    return TM_OK;
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

    sink k = {bad, ud, 0};
    st = verify_copies(reg, key, &k);
    if (st == TM_OK && reg->version >= 2) st = verify_images(reg, key, &k);
    if (st == TM_OK && reg->version >= 2) st = verify_journal(reg, key, &k);
    if (n_bad) *n_bad = k.n;
    if (st == TM_OK && k.n)
        st = fail(reg, TM_ERR_TAMPERED, "%zu finding%s failed verification", k.n, k.n == 1 ? "" : "s");
    return st;
}

tm_status tm_registry_check_copy(tm_registry *reg, const tm_key *key, const tm_reg_copy *c)
{
    tm_status st = usable(reg);
    if (st != TM_OK) return st;
    if (!key || !c) return fail(reg, TM_ERR_ARG, "no key or copy");
    st = tm_reg_copy_check(key, c);
    if (st == TM_ERR_TAMPERED)
        return fail(reg, st, "copy %lld: tag does not match (row altered)", (long long)c->copy_id);
    if (st != TM_OK || reg->version < 2) return st;
    char ref[24], why[300] = "";
    snprintf(ref, sizeof ref, "%lld", (long long)c->copy_id);
    jentry e;
    if ((st = journal_of(reg, J_COPY, ref, &e)) != TM_OK) return st;
    if (entry_matches(&e, c->tag, why, sizeof why)) {
        /* the entry follows from the one before it */
        uint8_t prev[32] = {0}, want[32];
        int have_prev = e.seq == 1;
        if (!have_prev) {
            sqlite3_stmt *s = stmt(reg, S_J_AT);
            sqlite3_bind_int64(s, 1, e.seq - 1);
            int rc = sqlite3_step(s);
            if (rc == SQLITE_ROW) have_prev = blob32(s, 0, prev);
            sqlite3_reset(s);
            if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_fail(reg, rc, "cannot read the journal");
        }
        if ((st = link_of(key, prev, e.seq, J_COPY, ref, e.row_tag, want)) != TM_OK)
            return fail(reg, st, "cannot compute a journal link");
        if (have_prev && CRYPTO_memcmp(want, e.link, 32) == 0) return TM_OK;
        snprintf(why, sizeof why, "its journal entry %lld does not follow the one before", (long long)e.seq);
    }
    return fail(reg, TM_ERR_TAMPERED, "copy %lld: %s", (long long)c->copy_id, why);
}

tm_status tm_registry_journal(tm_registry *reg, const tm_key *key, uint64_t *entries, char head[17])
{
    if (entries) *entries = 0;
    if (head) head[0] = '\0';
    tm_status st = usable(reg);
    if (st != TM_OK) return st;
    if (!key || !entries || !head) return fail(reg, TM_ERR_ARG, "no key or output");
    if (reg->version < 2) return TM_OK;
    int64_t seq;
    uint8_t link[32];
    char text[96];
    if ((st = journal_last(reg, &seq, link)) != TM_OK) return st;
    if (seq == 0) return TM_OK;
    int ok;
    if ((st = head_agrees(reg, key, seq, link, &ok, text)) != TM_OK) return st;
    if (!ok) return fail(reg, TM_ERR_TAMPERED, "the journal's head does not match its last entry");
    *entries = (uint64_t)seq;
    snprintf(head, 17, "%s", strchr(text, ':') + 1);
    return TM_OK;
}

/* ---- merging shards, and snapshots -------------------------------------- */

tm_status tm_registry_verify_whole(tm_registry *reg, const tm_key *key)
{
    finding f = {0, 0, ""};
    tm_status st = tm_registry_verify(reg, key, note_finding, &f, NULL);
    if (st != TM_ERR_TAMPERED || !f.n) return st;
    char first[440];
    if (f.id > 0) snprintf(first, sizeof first, "copy %lld: %s", (long long)f.id, f.why);
    else snprintf(first, sizeof first, "%s", f.why);
    return fail(reg, st, "fails verification (%zu finding%s, the first: %s): see 'tracemark registry verify'", f.n,
                f.n == 1 ? "" : "s", first);
}

static void hex_prefix(const uint8_t *p, char out[17])
{
    for (int i = 0; i < 8; i++) snprintf(out + 2 * i, 3, "%02x", p[i]);
}

/* What differs between two rows of one image, as far as a trace cares (its
 * original's path and its date may differ from host to host), written to
 * why; 0 when nothing does. */
static int image_differs(const tm_reg_image *a, const tm_reg_image *b, char *why, size_t cap)
{
    why[0] = '\0';
    if (memcmp(a->content_sha256, b->content_sha256, 32) != 0) append_reason(why, cap, "content hash");
    if (a->width != b->width || a->height != b->height)
        append_reason(why, cap, "size (%dx%d here, %dx%d there)", a->width, a->height, b->width, b->height);
    if (a->phash != b->phash)
        append_reason(why, cap, "perceptual hash (%016llx here, %016llx there)", (unsigned long long)a->phash,
                      (unsigned long long)b->phash);
    if (strcmp(a->params ? a->params : "", b->params ? b->params : "") != 0) append_reason(why, cap, "mark parameters");
    return why[0] != '\0';
}

/* The source's images into dest: new ones recorded as they are (tagged,
 * journaled), known ones compared. */
static tm_status merge_images(tm_registry *dest, tm_registry *src, const tm_key *key, tm_merge_stats *ms)
{
    sqlite3_stmt *s = stmt(src, S_IMAGE_LIST);
    tm_status st = TM_OK;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        tm_reg_image img;
        image_view(s, &img);
        ms->images++;
        if (!valid_image_id(img.image_id) || img.width <= 0 || img.height <= 0 || !img.params) {
            ms->src_at_fault = 1;
            st = fail(src, TM_ERR_REGISTRY, "image %.40s: not a valid image row", img.image_id);
            break;
        }
        sqlite3_stmt *d = stmt(dest, S_IMAGE_GET);
        sqlite3_bind_text(d, 1, img.image_id, -1, SQLITE_STATIC);
        int drc = sqlite3_step(d);
        if (drc == SQLITE_ROW) {
            tm_reg_image have;
            char why[300];
            image_view(d, &have);
            if (image_differs(&img, &have, why, sizeof why)) {
                ms->src_at_fault = 1;
                st = fail(src, TM_ERR_EXISTS,
                          "conflict: image %s is in the destination with another %s (two different originals under "
                          "one image id, or marked by another version of tracemark)",
                          img.image_id, why);
            }
            sqlite3_reset(d);
        } else if (drc == SQLITE_DONE) {
            int added;
            sqlite3_reset(d);
            st = image_insert(dest, key, &img, &added);
            ms->images_added += (uint64_t)added;
        } else {
            st = db_fail(dest, drc, "cannot read images");
            sqlite3_reset(d);
        }
        if (st != TM_OK) break;
    }
    if (st == TM_OK && rc != SQLITE_DONE) {
        ms->src_at_fault = 1;
        st = db_fail(src, rc, "cannot read images");
    }
    sqlite3_reset(s);
    return st;
}

/* Compares the source's copy (row of s) with dest's copy of the same image
 * and recipient (row of d): TM_OK when they are the same copy. */
static tm_status same_copy(tm_registry *src, sqlite3_stmt *s, sqlite3_stmt *d, tm_merge_stats *ms)
{
    int64_t id = sqlite3_column_int64(s, 0), did = sqlite3_column_int64(d, 0);
    const char *image_id = (const char *)sqlite3_column_text(s, 1);
    const char *recipient = (const char *)sqlite3_column_text(s, 2);
    const char *path = (const char *)sqlite3_column_text(s, 3), *dpath = (const char *)sqlite3_column_text(d, 3);
    int n = sqlite3_column_bytes(s, 7), dn = sqlite3_column_bytes(d, 7);
    const void *cw = sqlite3_column_blob(s, 7), *dcw = sqlite3_column_blob(d, 7);
    uint8_t sha[32], dsha[32];
    copy_blob32(s, 4, sha);
    copy_blob32(d, 4, dsha);
    if (sqlite3_column_int64(s, 6) != sqlite3_column_int64(d, 6) || n != dn || (n && memcmp(cw, dcw, (size_t)n))) {
        ms->src_at_fault = 1;
        return fail(src, TM_ERR_EXISTS,
                    "conflict: copy %lld (image %s, recipient '%s') has another codeword than the destination's copy "
                    "%lld of that image and recipient; a codeword follows from the key, the image and the recipient, "
                    "so one of the two was made with another key or another scheme",
                    (long long)id, image_id, recipient, (long long)did);
    }
    if (strcmp(path, dpath ? dpath : "") != 0 || memcmp(sha, dsha, 32) != 0) {
        char h[17], dh[17];
        hex_prefix(sha, h);
        hex_prefix(dsha, dh);
        ms->src_at_fault = 1;
        return fail(src, TM_ERR_EXISTS,
                    "conflict: recipient '%s' was given two copies of image %s: copy %lld here ('%s', sha256 %s...), "
                    "copy %lld in the destination ('%s', sha256 %s...)%s; a recipient's copy of an image is "
                    "recorded once",
                    recipient, image_id, (long long)id, path, h, (long long)did, dpath ? dpath : "", dh,
                    memcmp(sha, dsha, 32) ? "" : ", the same bytes at two paths");
    }
    return TM_OK;
}

/* The source's copies into dest: each new one under a new copy id, tagged
 * and journaled as put_copy does; known ones compared. */
static tm_status merge_copies(tm_registry *dest, tm_registry *src, const tm_key *key, tm_merge_stats *ms)
{
    sqlite3_stmt *s = stmt(src, S_COPIES_ALL);
    tm_status st = TM_OK;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(s, 0);
        const char *image_id = (const char *)sqlite3_column_text(s, 1);
        const char *recipient = (const char *)sqlite3_column_text(s, 2);
        const char *out_path = (const char *)sqlite3_column_text(s, 3);
        uint8_t out_sha[32], tag[32];
        int sha_ok = blob32(s, 4, out_sha);
        int64_t created = sqlite3_column_int64(s, 5), code_len = sqlite3_column_int64(s, 6);
        const uint8_t *cw = sqlite3_column_blob(s, 7);
        size_t cw_len = (size_t)sqlite3_column_bytes(s, 7);
        ms->copies++;
        /* verified already; checked again so nothing here reads out of bounds */
        if (!image_id || !recipient || !*recipient || !out_path || !sha_ok || !cw || code_len <= 0 ||
            code_len > (int64_t)MAX_CODE_BITS || cw_len != (size_t)(code_len + 7) / 8) {
            ms->src_at_fault = 1;
            st = fail(src, TM_ERR_REGISTRY, "copy %lld: not a valid copy row", (long long)id);
            break;
        }
        sqlite3_stmt *d = stmt(dest, S_COPY_PAIR);
        sqlite3_bind_text(d, 1, image_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(d, 2, recipient, -1, SQLITE_STATIC);
        int drc = sqlite3_step(d);
        if (drc == SQLITE_ROW) st = same_copy(src, s, d, ms);
        else if (drc != SQLITE_DONE) st = db_fail(dest, drc, "cannot look up the copy");
        sqlite3_reset(d);
        if (st != TM_OK) break;
        if (drc == SQLITE_ROW) continue; /* there already */

        st = row_tag(key, image_id, recipient, out_path, out_sha, created, (uint64_t)code_len, cw, cw_len, tag);
        if (st != TM_OK) {
            st = fail(dest, st, "cannot compute the row tag");
            break;
        }
        d = stmt(dest, S_COPY_INSERT);
        sqlite3_bind_text(d, 1, image_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(d, 2, recipient, -1, SQLITE_STATIC);
        sqlite3_bind_text(d, 3, out_path, -1, SQLITE_STATIC);
        sqlite3_bind_blob(d, 4, out_sha, 32, SQLITE_STATIC);
        sqlite3_bind_int64(d, 5, created);
        sqlite3_bind_int64(d, 6, code_len);
        sqlite3_bind_blob(d, 7, cw, (int)cw_len, SQLITE_STATIC);
        sqlite3_bind_blob(d, 8, tag, 32, SQLITE_STATIC);
        drc = sqlite3_step(d);
        sqlite3_reset(d);
        if (drc != SQLITE_DONE) {
            st = db_fail(dest, drc, "cannot record the copy");
            break;
        }
        char ref[24];
        snprintf(ref, sizeof ref, "%lld", (long long)sqlite3_last_insert_rowid(dest->db));
        if ((st = journal_add(dest, key, J_COPY, ref, tag)) != TM_OK) break;
        ms->copies_added++;
    }
    if (st == TM_OK && rc != SQLITE_DONE) {
        ms->src_at_fault = 1;
        st = db_fail(src, rc, "cannot read copies");
    }
    sqlite3_reset(s);
    return st;
}

tm_status tm_registry_merge(tm_registry *dest, tm_registry *src, const tm_key *key, tm_merge_stats *ms)
{
    tm_merge_stats local;
    if (!ms) ms = &local;
    memset(ms, 0, sizeof *ms);
    tm_status st = usable(dest);
    if (st != TM_OK) return st;
    if ((st = usable(src)) != TM_OK) {
        ms->src_at_fault = 1;
        return st;
    }
    if (!key) return fail(dest, TM_ERR_ARG, "no key");
    if (src == dest) return fail(dest, TM_ERR_ARG, "a registry handle cannot be merged into itself");
    if ((st = writable(dest)) != TM_OK) return st;
    if (!same_key(dest, key)) return fail(dest, TM_ERR_KEY, "merging with a key other than the registry's");

    /* One read snapshot of the source for the verify and the copy. */
    int own_read = sqlite3_get_autocommit(src->db);
    if (own_read) {
        int rc = exec_retry(src, "BEGIN");
        if (rc != SQLITE_OK) {
            ms->src_at_fault = 1;
            return db_fail(src, rc, "cannot read the registry");
        }
    }
    if ((st = tm_registry_verify_whole(src, key)) != TM_OK) {
        ms->src_at_fault = 1;
        goto out;
    }
    /* Our own transaction, or a savepoint in the caller's batch, so that a
     * failure takes back all of this call and nothing before it. */
    int own;
    if ((st = write_begin(dest, &own)) != TM_OK) goto out;
    if (!own) {
        int rc = sqlite3_exec(dest->db, "SAVEPOINT tm_merge", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            st = db_fail(dest, rc, "cannot start the merge");
            goto out;
        }
    }
    st = merge_images(dest, src, key, ms);
    if (st == TM_OK) st = merge_copies(dest, src, key, ms);
    if (own) {
        st = write_end(dest, own, st);
    } else if (st == TM_OK) {
        int rc = sqlite3_exec(dest->db, "RELEASE tm_merge", NULL, NULL, NULL);
        if (rc != SQLITE_OK) st = db_fail(dest, rc, "cannot finish the merge");
    } else {
        sqlite3_exec(dest->db, "ROLLBACK TO tm_merge; RELEASE tm_merge", NULL, NULL, NULL);
    }
    if (st != TM_OK) ms->images_added = ms->copies_added = 0;
out:
    if (own_read) rollback_quiet(src); /* it only read */
    return st;
}

tm_status tm_registry_snapshot(tm_registry *reg, const char *path)
{
    tm_status st = usable(reg);
    if (st != TM_OK) return st;
    if (!path || !*path) return fail(reg, TM_ERR_ARG, "no snapshot file given");
    if (!sqlite3_get_autocommit(reg->db)) return fail(reg, TM_ERR_ARG, "a batch is open on the registry");
    struct stat sb;
    if (lstat(path, &sb) == 0) return fail(reg, TM_ERR_EXISTS, "file exists, refusing to overwrite");

    size_t n = strlen(path) + 16;
    char *tmp = malloc(n);
    if (!tmp) return fail(reg, TM_ERR_NOMEM, "out of memory");
    snprintf(tmp, n, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        st = fail(reg, TM_ERR_IO, "cannot create the snapshot: %s", strerror(errno));
        free(tmp);
        return st;
    }
    mode_t um = umask(0); /* the mode a plain create would give */
    umask(um);
    (void)fchmod(fd, 0666 & ~um);
    close(fd);

    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(tmp, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        /* One step copies every page under one read lock: a consistent
         * state even while others write. Busy only in rollback mode. */
        sqlite3_backup *b = sqlite3_backup_init(db, "main", reg->db, "main");
        if (!b) {
            rc = sqlite3_errcode(db);
        } else {
            for (int attempt = 0;; attempt++) {
                rc = sqlite3_backup_step(b, -1);
                if (((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED) || attempt >= BUSY_RETRIES) break;
                sqlite3_sleep(10 + 40 * attempt);
            }
            int frc = sqlite3_backup_finish(b);
            rc = rc == SQLITE_DONE ? frc : rc;
        }
    }
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, "PRAGMA journal_mode = DELETE", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        st = fail(reg, status_of(rc) == TM_OK ? TM_ERR_INTERNAL : status_of(rc), "cannot write the snapshot: %s",
                  db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close_v2(db);
    if (st == TM_OK && link(tmp, path) != 0) {
        int e = errno;
        if ((e == EPERM || e == ENOTSUP || e == EOPNOTSUPP) && lstat(path, &sb) != 0) e = rename(tmp, path) ? errno : 0;
        if (e == EEXIST) st = fail(reg, TM_ERR_EXISTS, "file exists, refusing to overwrite");
        else if (e) st = fail(reg, TM_ERR_IO, "cannot write the snapshot: %s", strerror(e));
    }
    unlink(tmp);
    free(tmp);
    return st;
}
