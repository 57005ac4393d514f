/* hf_cache.c — finding and reading complete blobs of the huggingface_hub cache. */
#include "hf_cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum {
    LOOKUP_SLOTS = 2048,          /* open addressing; cleared when half full */
    LOOKUP_MAX_ENTRIES = LOOKUP_SLOTS / 2,
    MISS_TTL_SECONDS = 5,         /* a download may complete meanwhile */
    MAX_DIGEST_LEN = 64,
};

typedef struct lookup_entry {
    bool used;
    char etag[MAX_DIGEST_LEN + 1];
    uint64_t size;
    char *path;                   /* NULL: not found at checked_at */
    time_t checked_at;
} lookup_entry;

struct hf_cache {
    char *root;
    pthread_mutex_t lock;
    lookup_entry *slots;
    size_t entries;
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

int hf_cache_open(const char *root, hf_cache **out)
{
    *out = NULL;
    hf_cache *cache = calloc(1, sizeof *cache);
    if (!cache)
        return ENOMEM;
    cache->root = strdup(root);
    cache->slots = calloc(LOOKUP_SLOTS, sizeof *cache->slots);
    if (!cache->root || !cache->slots) {
        free(cache->root);
        free(cache->slots);
        free(cache);
        return ENOMEM;
    }
    pthread_mutex_init(&cache->lock, NULL);
    *out = cache;
    return 0;
}

static void clear_lookups(hf_cache *cache)
{
    for (size_t i = 0; i < LOOKUP_SLOTS; i++)
        free(cache->slots[i].path);
    memset(cache->slots, 0, LOOKUP_SLOTS * sizeof *cache->slots);
    cache->entries = 0;
}

void hf_cache_close(hf_cache *cache)
{
    if (!cache)
        return;
    clear_lookups(cache);
    pthread_mutex_destroy(&cache->lock);
    free(cache->slots);
    free(cache->root);
    free(cache);
}

static time_t monotonic_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec;
}

static size_t slot_of(const char *etag, uint64_t size)
{
    uint64_t hash = 1469598103934665603ULL ^ size;
    for (const char *c = etag; *c; c++)
        hash = (hash ^ (unsigned char)*c) * 1099511628211ULL;
    return (size_t)(hash % LOOKUP_SLOTS);
}

/* The slot holding (etag, size), or the free slot where it goes. Lock held. */
static lookup_entry *find_slot(hf_cache *cache, const char *etag, uint64_t size)
{
    for (size_t i = slot_of(etag, size);; i = (i + 1) % LOOKUP_SLOTS) {
        lookup_entry *entry = &cache->slots[i];
        if (!entry->used || (entry->size == size && strcmp(entry->etag, etag) == 0))
            return entry;
    }
}

/* Searches every repo folder for blobs/<etag> of the given size. Returns a malloc'd path. */
static char *search_repos(const char *root, const char *etag, uint64_t size)
{
    DIR *dir = opendir(root);
    if (!dir)
        return NULL;
    char *found = NULL;
    char path[PATH_MAX];
    struct dirent *repo;
    while (!found && (repo = readdir(dir)) != NULL) {
        if (repo->d_name[0] == '.')
            continue;
        int n = snprintf(path, sizeof path, "%s/%s/blobs/%s", root, repo->d_name, etag);
        struct stat st;
        if (n < 0 || (size_t)n >= sizeof path || stat(path, &st) != 0)
            continue;
        if (S_ISREG(st.st_mode) && (uint64_t)st.st_size == size)
            found = strdup(path);
    }
    closedir(dir);
    return found;
}

/* Copies the blob's path into path_out when a complete blob is known or found now.
 * forget_known drops a remembered path first (it stopped working). */
static bool locate_blob(hf_cache *cache, const char *etag, uint64_t size, bool forget_known,
                        char path_out[PATH_MAX])
{
    if (!hf_cache_is_hex_digest(etag))
        return false;
    time_t now = monotonic_seconds();
    pthread_mutex_lock(&cache->lock);
    lookup_entry *entry = find_slot(cache, etag, size);
    if (entry->used && forget_known && entry->path) {
        free(entry->path);
        entry->path = NULL;
        entry->checked_at = now - MISS_TTL_SECONDS; /* search again now */
    }
    bool fresh = entry->used && (entry->path || now - entry->checked_at < MISS_TTL_SECONDS);
    if (fresh) {
        bool known = entry->path != NULL;
        if (known)
            snprintf(path_out, PATH_MAX, "%s", entry->path);
        pthread_mutex_unlock(&cache->lock);
        return known;
    }
    pthread_mutex_unlock(&cache->lock);

    /* The directory walk runs unlocked; a racing search of the same etag is harmless. */
    char *path = search_repos(cache->root, etag, size);

    pthread_mutex_lock(&cache->lock);
    if (cache->entries >= LOOKUP_MAX_ENTRIES)
        clear_lookups(cache);
    entry = find_slot(cache, etag, size);
    if (!entry->used) {
        entry->used = true;
        snprintf(entry->etag, sizeof entry->etag, "%s", etag);
        entry->size = size;
        cache->entries++;
    }
    free(entry->path);
    entry->path = path;
    entry->checked_at = now;
    if (path)
        snprintf(path_out, PATH_MAX, "%s", path);
    pthread_mutex_unlock(&cache->lock);
    return path != NULL;
}

bool hf_cache_has_blob(hf_cache *cache, const char *etag, uint64_t size)
{
    char path[PATH_MAX];
    return cache && locate_blob(cache, etag, size, false, path);
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

bool hf_cache_read(hf_cache *cache, const char *etag, uint64_t size, uint64_t offset, void *buf,
                   size_t len)
{
    if (!cache || offset > size || len > size - offset)
        return false;
    char path[PATH_MAX];
    /* Second try: the remembered blob may have been deleted (huggingface-cli delete-cache). */
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!locate_blob(cache, etag, size, attempt > 0, path))
            return false;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        struct stat st;
        bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == size &&
                  pread_exactly(fd, buf, len, offset);
        close(fd);
        if (ok)
            return true;
    }
    return false;
}
