/* Unit tests of the misses the namespace remembers (negative_cache.h): answers kept for their
 * time to live only, the oldest dropped past the capacity, so a flood of invented names keeps
 * memory flat and each name costs at most one Hub request a minute. */
#include <errno.h>
#include <stdio.h>

#include "check.h"
#include "negative_cache.h"

static void test_answers_expire(void)
{
    negative_cache *cache = negative_cache_new(8, 60);
    CHECK(cache != NULL);
    CHECK_EQ_INT(negative_cache_get(cache, "m:ghost", 100), 0);
    negative_cache_put(cache, "m:ghost", ENOENT, 100);
    negative_cache_put(cache, "m:org/private@main", EACCES, 100);
    CHECK_EQ_INT(negative_cache_get(cache, "m:ghost", 100), ENOENT);
    CHECK_EQ_INT(negative_cache_get(cache, "m:ghost", 159), ENOENT);
    CHECK_EQ_INT(negative_cache_get(cache, "m:ghost", 160), 0);          /* a minute later: ask again */
    CHECK_EQ_INT(negative_cache_get(cache, "m:org/private@main", 120), EACCES);
    CHECK_EQ_INT(negative_cache_get(cache, "d:ghost", 100), 0);          /* a dataset org is another name */
    negative_cache_put(cache, "m:ghost", ENOENT, 200);                   /* asked again: kept anew, once */
    CHECK_EQ_INT(negative_cache_get(cache, "m:ghost", 259), ENOENT);
    CHECK_EQ_INT(negative_cache_count(cache), 2);
    negative_cache_clear(cache);
    CHECK_EQ_INT(negative_cache_count(cache), 0);
    CHECK_EQ_INT(negative_cache_get(cache, "m:ghost", 201), 0);
    negative_cache_free(cache);
}

static void test_capacity_bounds_it(void)
{
    enum { CAPACITY = 64, NAMES = 100000 };
    negative_cache *cache = negative_cache_new(CAPACITY, 60);
    char key[64];
    for (int i = 0; i < NAMES; i++) {
        snprintf(key, sizeof key, "m:invented-%d", i);
        negative_cache_put(cache, key, ENOENT, 0);
        if (negative_cache_count(cache) > CAPACITY)
            break;
    }
    CHECK_EQ_INT(negative_cache_count(cache), CAPACITY);
    int kept = 0;
    for (int i = 0; i < NAMES; i++) {
        snprintf(key, sizeof key, "m:invented-%d", i);
        kept += negative_cache_get(cache, key, 1) == ENOENT;
    }
    CHECK_EQ_INT(kept, CAPACITY);
    for (int i = NAMES - CAPACITY; i < NAMES; i++) {     /* the newest are the ones kept */
        snprintf(key, sizeof key, "m:invented-%d", i);
        CHECK(negative_cache_get(cache, key, 1) == ENOENT);
    }
    negative_cache_free(cache);
    CHECK(negative_cache_new(0, 60) == NULL);
}

int main(void)
{
    test_answers_expire();
    test_capacity_bounds_it();
    return check_finish("negative_cache");
}
