/* hub_source.h — the Hub source's parts (private to glue/): the source (hub_source.c: the
 * pinned commit and its files) and its open files (hub_source_file.c: reads). */
#ifndef HUBFS_GLUE_HUB_SOURCE_H
#define HUBFS_GLUE_HUB_SOURCE_H

#include "blob_cache.h"
#include "hub.h"
#include "source.h"

typedef struct hub_source_entry {
    const char *name;                /* relative to the source's root directory */
    const hub_tree_entry *entry;
} hub_source_entry;

typedef struct hub_source {
    loader_source base;
    char *location;                  /* base.location: the URL up to the root directory */
    hub_client *client;
    hub_repo repo;                   /* repo.id is repo_id */
    char *repo_id;
    char commit[HUB_SHA_HEX_LEN + 1];
    char *hf_repo_folder;            /* "models--ORG--NAME": its huggingface_hub cache folder */
    blob_cache *cache;
    hub_tree tree;
    hub_source_entry *files;         /* the files under the root, sorted by name */
    size_t file_count;
} hub_source;

/* Formats a message into err and returns -1, so that `return glue_fail(...)` reads. */
int glue_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Opens one file of the source: nothing is fetched until it is read. */
int hub_source_file_open(hub_source *source, const hub_tree_entry *entry, loader_file **out,
                         char *err, size_t errlen);

#endif
