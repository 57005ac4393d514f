/* negative_cache.c — a fixed ring of entries (new ones replace the oldest) indexed by a chained
 * hash of their keys. */
#include "negative_cache.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define NO_SLOT SIZE_MAX

typedef struct miss {
    char *key;                   /* NULL: the slot is free */
    uint64_t hash;
    int error;
    int64_t expires;
    size_t next_in_bucket;
} miss;

struct negative_cache {
    pthread_mutex_t lock;
    miss *slots;
    size_t capacity, count;
    size_t cursor;               /* the slot a new key takes: the oldest once all are used */
    size_t *buckets;             /* heads of the chains; bucket_count is a power of two */
    size_t bucket_count;
    int64_t ttl;
};

static uint64_t hash_of(const char *key)
{
    uint64_t h = 1469598103934665603ULL;   /* FNV-1a */
    for (; *key; key++)
        h = (h ^ (unsigned char)*key) * 1099511628211ULL;
    return h;
}

negative_cache *negative_cache_new(size_t capacity, int64_t ttl_seconds)
{
    if (capacity == 0 || capacity > (SIZE_MAX >> 2))
        return NULL;
    negative_cache *cache = calloc(1, sizeof *cache);
    if (!cache)
        return NULL;
    cache->bucket_count = 1;
    while (cache->bucket_count < capacity)
        cache->bucket_count <<= 1;
    cache->slots = calloc(capacity, sizeof *cache->slots);
    cache->buckets = malloc(cache->bucket_count * sizeof *cache->buckets);
    if (!cache->slots || !cache->buckets) {
        free(cache->slots);
        free(cache->buckets);
        free(cache);
        return NULL;
    }
    for (size_t i = 0; i < cache->bucket_count; i++)
        cache->buckets[i] = NO_SLOT;
    cache->capacity = capacity;
    cache->ttl = ttl_seconds;
    pthread_mutex_init(&cache->lock, NULL);
    return cache;
}

static void empty_slots(negative_cache *cache)
{
    for (size_t i = 0; i < cache->capacity; i++) {
        free(cache->slots[i].key);
        cache->slots[i].key = NULL;
    }
    for (size_t i = 0; i < cache->bucket_count; i++)
        cache->buckets[i] = NO_SLOT;
    cache->count = 0;
    cache->cursor = 0;
}

void negative_cache_free(negative_cache *cache)
{
    if (!cache)
        return;
    empty_slots(cache);
    free(cache->slots);
    free(cache->buckets);
    pthread_mutex_destroy(&cache->lock);
    free(cache);
}

/* The slot holding key, or NO_SLOT. Lock held. */
static size_t find_slot(const negative_cache *cache, const char *key, uint64_t hash)
{
    for (size_t i = cache->buckets[hash & (cache->bucket_count - 1)]; i != NO_SLOT;
         i = cache->slots[i].next_in_bucket)
        if (cache->slots[i].hash == hash && strcmp(cache->slots[i].key, key) == 0)
            return i;
    return NO_SLOT;
}

/* Takes slot out of its chain and frees its key. Lock held. */
static void evict(negative_cache *cache, size_t slot)
{
    miss *victim = &cache->slots[slot];
    size_t *link = &cache->buckets[victim->hash & (cache->bucket_count - 1)];
    while (*link != slot)
        link = &cache->slots[*link].next_in_bucket;
    *link = victim->next_in_bucket;
    free(victim->key);
    victim->key = NULL;
    cache->count--;
}

int negative_cache_get(negative_cache *cache, const char *key, int64_t now)
{
    uint64_t hash = hash_of(key);
    pthread_mutex_lock(&cache->lock);
    size_t slot = find_slot(cache, key, hash);
    int error = slot != NO_SLOT && now < cache->slots[slot].expires ? cache->slots[slot].error : 0;
    pthread_mutex_unlock(&cache->lock);
    return error;
}

void negative_cache_put(negative_cache *cache, const char *key, int error, int64_t now)
{
    uint64_t hash = hash_of(key);
    pthread_mutex_lock(&cache->lock);
    size_t slot = find_slot(cache, key, hash);
    if (slot == NO_SLOT) {
        char *copy = strdup(key);
        if (!copy) {
            pthread_mutex_unlock(&cache->lock);
            return;
        }
        slot = cache->cursor;
        cache->cursor = (cache->cursor + 1) % cache->capacity;
        if (cache->slots[slot].key)
            evict(cache, slot);
        size_t *head = &cache->buckets[hash & (cache->bucket_count - 1)];
        cache->slots[slot] = (miss){.key = copy, .hash = hash, .next_in_bucket = *head};
        *head = slot;
        cache->count++;
    }
    cache->slots[slot].error = error;
    cache->slots[slot].expires = now + cache->ttl;
    pthread_mutex_unlock(&cache->lock);
}

void negative_cache_clear(negative_cache *cache)
{
    pthread_mutex_lock(&cache->lock);
    empty_slots(cache);
    pthread_mutex_unlock(&cache->lock);
}

size_t negative_cache_count(negative_cache *cache)
{
    pthread_mutex_lock(&cache->lock);
    size_t count = cache->count;
    pthread_mutex_unlock(&cache->lock);
    return count;
}
