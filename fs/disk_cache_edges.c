/* disk_cache_edges.c — the parts of units that writes covered only in part, kept until a later
 * write covers the rest of the unit.
 *
 * A reader's runs start and end on pages, the cache's units are larger: the unit between two
 * runs is covered half by each. When the first run is stored, the unit is not complete; when
 * the second is, the first's bytes may have left memory. Without this the unit would never be
 * stored, the blob never whole, and a file read once from end to end would fetch it again.
 */
#include "disk_cache_internal.h"

#include <stdlib.h>
#include <string.h>

static void clear_edge(unit_edge *edge)
{
    free(edge->etag);
    free(edge->bytes);
    *edge = (unit_edge){0};
}

void dc_edges_init(edge_stash *stash)
{
    memset(stash, 0, sizeof *stash);
    pthread_mutex_init(&stash->lock, NULL);
}

void dc_edges_free(edge_stash *stash)
{
    for (size_t i = 0; i < EDGE_SLOTS; i++)
        clear_edge(&stash->slots[i]);
    pthread_mutex_destroy(&stash->lock);
}

static bool same_unit(const unit_edge *edge, const char *etag, uint64_t blob_size, uint64_t unit)
{
    return edge->etag && edge->blob_size == blob_size && edge->unit == unit && strcmp(edge->etag, etag) == 0;
}

/* The slot holding the unit, else a free one, else the least recently used. stash->lock held. */
static unit_edge *slot_for(edge_stash *stash, const char *etag, uint64_t blob_size, uint64_t unit)
{
    unit_edge *victim = NULL;
    for (size_t i = 0; i < EDGE_SLOTS; i++) {
        unit_edge *edge = &stash->slots[i];
        if (same_unit(edge, etag, blob_size, unit))
            return edge;
        if (victim && !victim->etag)
            continue;
        if (!edge->etag || !victim || edge->used < victim->used)
            victim = edge;
    }
    clear_edge(victim);
    return victim;
}

/* A free slot takes the unit; false when out of memory. */
static bool claim(unit_edge *edge, const char *etag, uint64_t blob_size, uint64_t unit, size_t unit_len)
{
    if (edge->etag)
        return true;
    edge->etag = strdup(etag);
    /* Aligned: a unit it completes is written with O_DIRECT, not copied into the page cache. */
    void *bytes = NULL;
    edge->bytes = posix_memalign(&bytes, DISK_CACHE_DIRECT_ALIGNMENT, unit_len ? unit_len : 1) == 0 ? bytes : NULL;
    if (!edge->etag || !edge->bytes) {
        clear_edge(edge);
        return false;
    }
    edge->blob_size = blob_size;
    edge->unit = unit;
    return true;
}

uint8_t *dc_edges_merge(edge_stash *stash, const char *etag, uint64_t blob_size, uint64_t unit, size_t unit_len,
                        size_t from, const uint8_t *part, size_t len)
{
    size_t to = from + len;
    uint8_t *whole = NULL;
    pthread_mutex_lock(&stash->lock);
    unit_edge *edge = slot_for(stash, etag, blob_size, unit);
    if (claim(edge, etag, blob_size, unit, unit_len)) {
        /* A part apart from the one kept replaces it: the newer is the likelier to go on. */
        bool joins = edge->to > edge->from && from <= edge->to && to >= edge->from;
        memcpy(edge->bytes + from, part, len);
        edge->from = joins && edge->from < from ? edge->from : from;
        edge->to = joins && edge->to > to ? edge->to : to;
        edge->used = ++stash->clock;
        if (edge->from == 0 && edge->to == unit_len) {
            whole = edge->bytes;
            edge->bytes = NULL;
            clear_edge(edge);
        }
    }
    pthread_mutex_unlock(&stash->lock);
    return whole;
}
