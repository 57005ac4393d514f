/* negative_cache.h — lookups the Hub answered "no such repo" (or refused), remembered for a
 * while, so that a program probing names it invents does not cost one Hub request, made with
 * the mount owner's token, per probe. Bounded: past its capacity the oldest entry goes first.
 * Thread-safe. Times are the caller's (monotonic seconds), so tests can move the clock. */
#ifndef HUBFS_NEGATIVE_CACHE_H
#define HUBFS_NEGATIVE_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct negative_cache negative_cache;

/* NULL when out of memory (or capacity is 0). */
negative_cache *negative_cache_new(size_t capacity, int64_t ttl_seconds);
void negative_cache_free(negative_cache *cache);

/* The error (an errno value) remembered for key, or 0 when none is or it expired. */
int negative_cache_get(negative_cache *cache, const char *key, int64_t now);

/* Remembers error for key until now + ttl (a newer answer replaces an older one). Silently
 * does nothing without memory: the cache only saves requests. */
void negative_cache_put(negative_cache *cache, const char *key, int error, int64_t now);

/* Forgets everything (a refresh asked the Hub again). */
void negative_cache_clear(negative_cache *cache);

/* Entries held now, expired ones included until they are replaced. */
size_t negative_cache_count(negative_cache *cache);

#endif
