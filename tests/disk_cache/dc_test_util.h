/* dc_test_util.h — helpers shared by the disk cache tests: a deterministic block generator
 * (the reference every read is compared with), scratch directories and file lookups. */
#ifndef HUBFS_DC_TEST_UTIL_H
#define HUBFS_DC_TEST_UTIL_H

#include "disk_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static inline uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* The content of block block_index of the blob identified by seed. */
static inline void fill_block(uint64_t seed, uint64_t block_index, void *buf, size_t len)
{
    uint64_t state = seed * UINT64_C(1000003) + block_index;
    uint8_t *out = buf;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v = splitmix64(&state);
        memcpy(out + i, &v, 8);
    }
    uint64_t v = splitmix64(&state);
    memcpy(out + i, &v, len - i);
}

static inline size_t block_len(uint64_t size, uint32_t block_size, uint64_t index);

/* Bytes [offset, offset + len) of the blob of size bytes identified by seed, whose unit u (of
 * unit_size bytes) is fill_block(seed, u). */
static inline void fill_range(uint64_t seed, uint32_t unit_size, uint64_t size, uint64_t offset, void *buf,
                              size_t len)
{
    uint8_t *unit = malloc(unit_size);
    for (uint64_t u = offset / unit_size; len && u * unit_size < offset + len; u++) {
        uint64_t start = u * unit_size, unit_len = block_len(size, unit_size, u);
        fill_block(seed, u, unit, (size_t)unit_len);
        uint64_t from = start > offset ? start : offset;
        uint64_t to = start + unit_len < offset + len ? start + unit_len : offset + len;
        memcpy((uint8_t *)buf + (from - offset), unit + (from - start), (size_t)(to - from));
    }
    free(unit);
}

static inline bool range_matches(uint64_t seed, uint32_t unit_size, uint64_t size, uint64_t offset,
                                 const void *buf, size_t len)
{
    uint8_t *expected = malloc(len ? len : 1);
    fill_range(seed, unit_size, size, offset, expected, len);
    bool same = memcmp(expected, buf, len) == 0;
    free(expected);
    return same;
}

static inline bool block_matches(uint64_t seed, uint64_t block_index, const void *buf, size_t len)
{
    uint8_t *expected = malloc(len ? len : 1);
    fill_block(seed, block_index, expected, len);
    bool same = memcmp(expected, buf, len) == 0;
    free(expected);
    return same;
}

/* A 64-hex-digit etag made from a seed (the cache only needs it to look like a sha256). */
static inline void make_etag(uint64_t seed, char etag[65])
{
    uint64_t state = seed;
    for (int i = 0; i < 4; i++)
        snprintf(etag + 16 * i, 17, "%016llx", (unsigned long long)splitmix64(&state));
}

static inline size_t block_len(uint64_t size, uint32_t block_size, uint64_t index)
{
    uint64_t offset = index * block_size;
    return (size_t)(size - offset < block_size ? size - offset : block_size);
}

static inline uint64_t block_count(uint64_t size, uint32_t block_size)
{
    return (size + block_size - 1) / block_size;
}

static inline void make_scratch_dir(char path[64])
{
    snprintf(path, 64, "/tmp/hubfs-dc-test-XXXXXX");
    if (!mkdtemp(path)) {
        perror("mkdtemp");
        exit(2);
    }
}

static inline int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static inline void remove_tree(const char *path)
{
    nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Path of the first file in dir whose name starts with prefix and ends with suffix. */
static inline bool find_file(const char *dir_path, const char *prefix, const char *suffix, char *out,
                             size_t out_size)
{
    DIR *dir = opendir(dir_path);
    if (!dir)
        return false;
    bool found = false;
    struct dirent *entry;
    while (!found && (entry = readdir(dir)) != NULL) {
        size_t n = strlen(entry->d_name), s = strlen(suffix);
        if (strncmp(entry->d_name, prefix, strlen(prefix)) == 0 && n > s &&
            strcmp(entry->d_name + n - s, suffix) == 0) {
            snprintf(out, out_size, "%s/%s", dir_path, entry->d_name);
            found = true;
        }
    }
    closedir(dir);
    return found;
}

/* Sum of st_blocks * 512 of the files ending with suffix: what they really occupy on disk. */
static inline uint64_t allocated_bytes(const char *dir_path, const char *suffix)
{
    DIR *dir = opendir(dir_path);
    uint64_t total = 0;
    struct dirent *entry;
    char path[512];
    while (dir && (entry = readdir(dir)) != NULL) {
        size_t n = strlen(entry->d_name), s = strlen(suffix);
        struct stat st;
        if (n > s && strcmp(entry->d_name + n - s, suffix) == 0) {
            snprintf(path, sizeof path, "%s/%s", dir_path, entry->d_name);
            if (stat(path, &st) == 0)
                total += (uint64_t)st.st_blocks * 512;
        }
    }
    if (dir)
        closedir(dir);
    return total;
}

/* HUB/FOLDER/blobs/<sha256 of content>, 0644, as huggingface_hub leaves a download; the name
 * (64 hex digits) into etag. */
static inline void make_hf_blob(const char *hub, const char *folder, const void *content, size_t size,
                                char etag[65])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned digest_len = 0;
    EVP_Digest(content, size, digest, &digest_len, EVP_sha256(), NULL);
    for (unsigned i = 0; i < digest_len && i < 32; i++)
        snprintf(etag + 2 * i, 3, "%02x", digest[i]);
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", hub, folder);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/blobs", hub, folder);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/blobs/%s", hub, folder, etag);
    FILE *out = fopen(path, "wb");
    if (!out || fwrite(content, 1, size, out) != size) {
        perror(path);
        exit(2);
    }
    fclose(out);
    chmod(path, 0644);
}

/* Damages one byte of a cache file in place, as a bad disk or a stray writer would. */
static inline bool flip_byte(const char *path, off_t offset)
{
    int fd = open(path, O_RDWR);
    uint8_t byte = 0;
    bool flipped = fd >= 0 && pread(fd, &byte, 1, offset) == 1;
    byte ^= 0x5a;
    flipped = flipped && pwrite(fd, &byte, 1, offset) == 1;
    if (fd >= 0) close(fd);
    return flipped;
}

static inline bool sanitized_build(void)
{
    const char *s = getenv("HUBFS_SANITIZED");
    return s && strcmp(s, "1") == 0;
}

static inline disk_cache *open_test_cache(const char *dir, uint32_t block_size, uint64_t max_bytes,
                                          const char *hf_hub_cache)
{
    disk_cache_config config = {.directory = dir, .max_bytes = max_bytes, .block_size = block_size,
                                .hf_hub_cache = hf_hub_cache};
    disk_cache *cache = NULL;
    char error[256];
    if (disk_cache_open(&config, &cache, error, sizeof error) != 0) {
        fprintf(stderr, "disk_cache_open(%s): %s\n", dir, error);
        exit(2);
    }
    return cache;
}

#endif
