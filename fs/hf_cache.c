/* hf_cache.c — finding, checking and reading complete blobs of the huggingface_hub cache
 * (rules: hf_cache.h).
 *
 * Locking. cache->lock guards the table and every entry's fields except its immutable key.
 * It is never held during a path walk, a hash or a read: an entry is marked busy while its
 * lookup or hash runs unlocked, and others wait on `changed`. An entry is freed only with no
 * user, and its descriptor is closed or replaced only with no reader. */
#include "hf_cache.h"

#include "clock.h"
#include "disk_cache_path.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum {
    BUCKETS = 1024,
    MAX_ENTRIES = 4096,           /* beyond, idle entries are forgotten (verdicts with them) */
    MAX_OPEN_BLOBS = 32,          /* descriptors kept open, least recently used closed first */
    MISS_TTL_SECONDS = 5,         /* a download may complete meanwhile */
    REVALIDATE_SECONDS = 30,      /* an open blob may have been deleted or replaced meanwhile */
    HASH_CHUNK = 1 << 20,
    MAX_DIGEST_LEN = 64,
    MAX_FOLDER_LEN = 255,
};

/* The version of a file a verdict is about. */
typedef struct identity {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
} identity;

enum verdict { VERDICT_UNKNOWN, VERDICT_GOOD, VERDICT_BAD };

typedef struct hf_blob {
    struct hf_blob *next;         /* in its bucket */
    char *folder;                 /* the key: immutable, read unlocked by the busy thread */
    char etag[MAX_DIGEST_LEN + 1];
    uint64_t size;
    unsigned users;               /* threads holding a pointer to it */
    unsigned readers;             /* threads reading fd */
    bool busy;                    /* a lookup or hash runs unlocked */
    bool hashing;
    bool looked_up;               /* fd (or its absence) is what a lookup at checked_at found */
    int fd;
    bool has_identity;
    identity id;                  /* of the file fd is, or was */
    enum verdict verdict;         /* about id */
    time_t checked_at;
    uint64_t last_use;
} hf_blob;

struct hf_cache {
    char *root;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    hf_blob *buckets[BUCKETS];
    size_t entries, open_fds;
    uint64_t use_clock;
    atomic_uint_fast64_t verified, rejected;
};

bool hf_cache_is_hex_digest(const char *etag)
{
    size_t len = 0;
    for (; etag[len]; len++) {
        char c = etag[len];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) || len >= MAX_DIGEST_LEN)
            return false;
    }
    return len == 40 || len == 64;
}

bool hf_cache_is_repo_folder(const char *folder)
{
    static const char *const prefixes[] = {"models--", "datasets--", "spaces--"};
    size_t len = strnlen(folder, MAX_FOLDER_LEN + 1);
    if (len > MAX_FOLDER_LEN || strchr(folder, '/'))
        return false;
    for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++) {
        size_t n = strlen(prefixes[i]);
        if (len > n && strncmp(folder, prefixes[i], n) == 0)
            return true;
    }
    return false;
}

int hf_cache_open(const char *root, hf_cache **out)
{
    *out = NULL;
    hf_cache *cache = calloc(1, sizeof *cache);
    if (!cache || !(cache->root = cache_path_absolute(root))) {
        free(cache);
        return ENOMEM;
    }
    pthread_mutex_init(&cache->lock, NULL);
    pthread_cond_init(&cache->changed, NULL);
    *out = cache;
    return 0;
}

static void close_fd(hf_cache *cache, hf_blob *e)
{
    if (e->fd >= 0) {
        close(e->fd);
        cache->open_fds--;
    }
    e->fd = -1;
}

static void free_entry(hf_cache *cache, hf_blob *e)
{
    close_fd(cache, e);
    free(e->folder);
    free(e);
}

void hf_cache_close(hf_cache *cache)
{
    if (!cache)
        return;
    for (size_t i = 0; i < BUCKETS; i++) {
        for (hf_blob *e = cache->buckets[i], *next; e; e = next) {
            next = e->next;
            free_entry(cache, e);
        }
    }
    pthread_cond_destroy(&cache->changed);
    pthread_mutex_destroy(&cache->lock);
    free(cache->root);
    free(cache);
}

void hf_cache_get_counters(hf_cache *cache, hf_cache_counters *out)
{
    out->blobs_verified = cache ? atomic_load(&cache->verified) : 0;
    out->blobs_rejected = cache ? atomic_load(&cache->rejected) : 0;
}

/* ---- the table (lock held) ---------------------------------------------------------------- */

static size_t bucket_of(const char *folder, const char *etag, uint64_t size)
{
    uint64_t hash = UINT64_C(1469598103934665603) ^ size;
    for (const char *c = etag; *c; c++)
        hash = (hash ^ (unsigned char)*c) * UINT64_C(1099511628211);
    for (const char *c = folder; *c; c++)
        hash = (hash ^ (unsigned char)*c) * UINT64_C(1099511628211);
    return (size_t)(hash % BUCKETS);
}

/* Forgets every entry nobody holds (the table only remembers; nothing is lost but time). */
static void forget_idle(hf_cache *cache)
{
    for (size_t i = 0; i < BUCKETS; i++) {
        for (hf_blob **slot = &cache->buckets[i]; *slot;) {
            hf_blob *e = *slot;
            if (e->users || e->busy) {
                slot = &e->next;
                continue;
            }
            *slot = e->next;
            free_entry(cache, e);
            cache->entries--;
        }
    }
}

/* The entry of (folder, etag, size), created when new, with a use taken. NULL: no memory. */
static hf_blob *acquire(hf_cache *cache, const char *folder, const char *etag, uint64_t size)
{
    size_t bucket = bucket_of(folder, etag, size);
    for (hf_blob *e = cache->buckets[bucket]; e; e = e->next) {
        if (e->size == size && strcmp(e->etag, etag) == 0 && strcmp(e->folder, folder) == 0) {
            e->users++;
            return e;
        }
    }
    if (cache->entries >= MAX_ENTRIES)
        forget_idle(cache);
    hf_blob *e = calloc(1, sizeof *e);
    if (!e || !(e->folder = strdup(folder))) {
        free(e);
        return NULL;
    }
    snprintf(e->etag, sizeof e->etag, "%s", etag);
    e->size = size;
    e->fd = -1;
    e->users = 1;
    e->next = cache->buckets[bucket];
    cache->buckets[bucket] = e;
    cache->entries++;
    return e;
}

/* Bounds the open descriptors: closes the least recently used idle ones (their verdicts stay). */
static void trim_open_fds(hf_cache *cache)
{
    while (cache->open_fds > MAX_OPEN_BLOBS) {
        hf_blob *oldest = NULL;
        for (size_t i = 0; i < BUCKETS; i++)
            for (hf_blob *e = cache->buckets[i]; e; e = e->next)
                if (e->fd >= 0 && !e->readers && !e->busy && (!oldest || e->last_use < oldest->last_use))
                    oldest = e;
        if (!oldest)
            return;
        close_fd(cache, oldest);
        oldest->looked_up = false;
    }
}

/* ---- looking a blob up (unlocked) --------------------------------------------------------- */

static void identity_of(const struct stat *st, identity *id)
{
    *id = (identity){.dev = st->st_dev, .ino = st->st_ino, .size = st->st_size, .mtime = st->st_mtim,
                     .ctime = st->st_ctim};
}

static bool same_identity(const identity *a, const identity *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
           a->mtime.tv_nsec == b->mtime.tv_nsec && a->ctime.tv_sec == b->ctime.tv_sec &&
           a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* Opens folder/blobs/etag by the rules of hf_cache.h. -1 when absent or refused; refusals
 * (not absences) are logged. */
static int open_blob(const hf_cache *cache, const hf_blob *e, identity *id)
{
    char path[PATH_MAX], error[512];
    int n = snprintf(path, sizeof path, "%s/%s/blobs", cache->root, e->folder);
    if (n < 0 || (size_t)n >= sizeof path)
        return -1;
    int dir_fd = cache_path_open_dir(path, 0, error, sizeof error);
    if (dir_fd < 0) {
        if (errno != ENOENT)
            fs_log_limited(path, "huggingface_hub cache not used: %s", error);
        return -1;
    }
    int fd = openat(dir_fd, e->etag, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    int open_errno = errno;
    close(dir_fd);
    struct stat st;
    const char *refusal =
        fd < 0 ? (open_errno == ELOOP ? "is a symlink (huggingface_hub's blobs are plain files)" : NULL)
        : fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ? "is not a regular file"
        : !cache_path_trusted(&st, false) ? "is not owned by root or the user hubfs runs as, or others may write it"
        : NULL;
    if (refusal)
        fs_log_limited(path, "huggingface_hub blob %s/%s %s: not used", path, e->etag, refusal);
    if (fd >= 0 && (refusal || (uint64_t)st.st_size != e->size)) {   /* a size mismatch: another file */
        close(fd);
        return -1;
    }
    if (fd >= 0)
        identity_of(&st, id);
    return fd;
}

static bool pread_exactly(int fd, void *buf, size_t len, uint64_t offset)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        done += (size_t)n;
    }
    return true;
}

static bool digest_is(const uint8_t *digest, unsigned len, const char *hex)
{
    static const char digits[] = "0123456789abcdef";
    if (strlen(hex) != 2 * (size_t)len)
        return false;
    for (unsigned i = 0; i < len; i++)
        if (hex[2 * i] != digits[digest[i] >> 4] || hex[2 * i + 1] != digits[digest[i] & 15])
            return false;
    return true;
}

/* Hashes the whole blob as huggingface_hub named it: sha256 of the content for a 64-digit name,
 * git's blob sha1 for a 40-digit one. VERDICT_UNKNOWN when it could not be read through. */
static enum verdict hash_blob(int fd, const char *etag, uint64_t size)
{
    bool git = strlen(etag) == 40;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t *chunk = malloc(HASH_CHUNK);
    bool ok = ctx && chunk && EVP_DigestInit_ex(ctx, git ? EVP_sha1() : EVP_sha256(), NULL) == 1;
    if (ok && git) {
        char header[32];
        int n = snprintf(header, sizeof header, "blob %" PRIu64, size);
        ok = EVP_DigestUpdate(ctx, header, (size_t)n + 1) == 1;   /* with its NUL */
    }
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    bool read_through = ok;
    for (uint64_t done = 0; read_through && done < size;) {
        size_t want = size - done < HASH_CHUNK ? (size_t)(size - done) : HASH_CHUNK;
        read_through = pread_exactly(fd, chunk, want, done) && EVP_DigestUpdate(ctx, chunk, want) == 1;
        done += want;
    }
    uint8_t digest[EVP_MAX_MD_SIZE];
    unsigned digest_len = 0;
    bool matches = read_through && EVP_DigestFinal_ex(ctx, digest, &digest_len) == 1 &&
                   digest_is(digest, digest_len, etag);
    EVP_MD_CTX_free(ctx);
    free(chunk);
    return !read_through ? VERDICT_UNKNOWN : matches ? VERDICT_GOOD : VERDICT_BAD;
}

/* ---- states (lock held) ------------------------------------------------------------------- */

/* Makes e->fd what the blob is now, looking it up again when stale and nobody reads it. Waits
 * for another thread's lookup, and for its hash unless !wait_for_hash. */
static void ensure_looked_up(hf_cache *cache, hf_blob *e, bool wait_for_hash)
{
    while (e->busy && (wait_for_hash || !e->hashing))
        pthread_cond_wait(&cache->changed, &cache->lock);
    time_t now = monotonic_seconds();
    time_t ttl = e->fd >= 0 ? REVALIDATE_SECONDS : MISS_TTL_SECONDS;
    if (e->busy || e->readers || (e->looked_up && now - e->checked_at < ttl))
        return;
    e->busy = true;
    pthread_mutex_unlock(&cache->lock);
    identity id;
    int fd = open_blob(cache, e, &id);
    pthread_mutex_lock(&cache->lock);
    close_fd(cache, e);
    e->fd = fd;
    e->looked_up = true;
    e->checked_at = now;
    if (fd >= 0) {
        cache->open_fds++;
        e->last_use = ++cache->use_clock;   /* the newest: not the one trimmed below */
        if (!e->has_identity || !same_identity(&e->id, &id))
            e->verdict = VERDICT_UNKNOWN;
        e->id = id;
        e->has_identity = true;
    }
    e->busy = false;
    pthread_cond_broadcast(&cache->changed);
    trim_open_fds(cache);
}

static void verify(hf_cache *cache, hf_blob *e)
{
    e->busy = e->hashing = true;
    int fd = e->fd;
    pthread_mutex_unlock(&cache->lock);
    enum verdict verdict = hash_blob(fd, e->etag, e->size);
    if (verdict == VERDICT_BAD)
        fs_log("huggingface_hub blob %s/%s/blobs/%s is not the file its name says (its %s differs): "
               "not used; delete it so huggingface_hub downloads it again", cache->root, e->folder, e->etag,
               strlen(e->etag) == 40 ? "git blob sha1" : "sha256");
    atomic_fetch_add(verdict == VERDICT_GOOD ? &cache->verified : &cache->rejected, verdict != VERDICT_UNKNOWN);
    pthread_mutex_lock(&cache->lock);
    e->verdict = verdict;
    if (verdict == VERDICT_UNKNOWN)
        e->looked_up = false;    /* it could not be read: look again next time */
    e->busy = e->hashing = false;
    pthread_cond_broadcast(&cache->changed);
}

/* The descriptor of the verified blob with a reader counted, or -1. */
static int verified_fd(hf_cache *cache, hf_blob *e)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        ensure_looked_up(cache, e, true);
        if (e->fd < 0 || e->verdict == VERDICT_BAD)
            return -1;
        if (e->verdict == VERDICT_GOOD) {
            e->readers++;
            e->last_use = ++cache->use_clock;
            return e->fd;
        }
        verify(cache, e);
    }
    return -1;
}

static bool valid_request(const hf_cache *cache, const char *folder, const char *etag)
{
    return cache && folder && etag && hf_cache_is_repo_folder(folder) && hf_cache_is_hex_digest(etag);
}

bool hf_cache_has_blob(hf_cache *cache, const char *folder, const char *etag, uint64_t size)
{
    if (!valid_request(cache, folder, etag))
        return false;
    pthread_mutex_lock(&cache->lock);
    hf_blob *e = acquire(cache, folder, etag, size);
    bool present = false;
    if (e) {
        ensure_looked_up(cache, e, false);
        present = e->fd >= 0 && e->verdict != VERDICT_BAD;
        e->users--;
    }
    pthread_mutex_unlock(&cache->lock);
    return present;
}

int hf_cache_open_verified(hf_cache *cache, const char *folder, const char *etag, uint64_t size)
{
    if (!valid_request(cache, folder, etag))
        return -1;
    pthread_mutex_lock(&cache->lock);
    hf_blob *e = acquire(cache, folder, etag, size);
    int fd = e ? verified_fd(cache, e) : -1;
    int copy = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
    if (fd >= 0)
        e->readers--;
    if (e)
        e->users--;
    pthread_mutex_unlock(&cache->lock);
    return copy;
}

bool hf_cache_read(hf_cache *cache, const char *folder, const char *etag, uint64_t size, uint64_t offset,
                   void *buf, size_t len)
{
    if (!valid_request(cache, folder, etag) || offset > size || len > size - offset)
        return false;
    pthread_mutex_lock(&cache->lock);
    hf_blob *e = acquire(cache, folder, etag, size);
    int fd = e ? verified_fd(cache, e) : -1;
    pthread_mutex_unlock(&cache->lock);
    bool ok = fd >= 0 && pread_exactly(fd, buf, len, offset);
    if (e) {
        pthread_mutex_lock(&cache->lock);
        if (fd >= 0 && --e->readers == 0 && !ok)
            e->looked_up = false;    /* truncated under us, say: look again next time */
        e->users--;
        pthread_mutex_unlock(&cache->lock);
    }
    return ok;
}
