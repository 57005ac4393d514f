/* sources.h — opening models from local paths and from the Hub without a mount.
 *
 * The loader reads through a source (loader/source.h) and knows nothing of the Hub; this part
 * provides the Hub-backed source, so that `hubfs inspect`, `hubfs load` (and the Python
 * bindings) take hf:// URLs where a mount cannot be had:
 *
 *     hf://[datasets/|spaces/]ORG/NAME[@REV][/PATH]
 *
 * REV is a branch, tag or commit, pinned to its commit once (a '/' in it is written %2F, as on
 * a mount: NAME@refs%2Fpr%2F1; refs/pr/N and refs/convert/parquet are understood as they are).
 * PATH is a file of the repo (a .safetensors file) or a directory holding a model; the default
 * is the repo's root.
 *
 * Same environment as a mount: HF_ENDPOINT, HF_TOKEN / HUGGING_FACE_HUB_TOKEN / the token file,
 * HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE=1 (only what is cached), the timeouts and retries of
 * hub.h. Same persistent cache as a mount ($HF_HOME/hubfs: fs/cache_dir.h), so that what a load
 * fetched a later mount or load reuses and the other way round, and complete blobs of the
 * huggingface_hub cache are read from disk. The cache directory is held by one process at a
 * time: when a mount (or another load) holds it, the source works without it (complete
 * huggingface_hub blobs are still used) and says so in the notice.
 *
 * Reads fetch exactly the ranges asked (rounded out to the cache's units when those are small,
 * so that whatever is fetched can be stored), in the caller's threads, with the Hub client's
 * retries. A .safetensors file's header is fetched as the mount does it: its first 64 KiB, then
 * exactly the rest of the header when it is longer, and kept in memory while the file is open.
 *
 * Functions return 0 or -1 with a message a user can act on in (err, errlen); nothing prints. */
#ifndef HUBFS_GLUE_SOURCES_H
#define HUBFS_GLUE_SOURCES_H

#include "loader.h"
#include "source.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GLUE_NOTICE_LEN 512

typedef struct glue_options {
    const char *cache_dir;   /* NULL: the mount's default, $HF_HOME/hubfs */
    bool no_disk_cache;      /* keep nothing on disk (huggingface_hub blobs are still read) */
} glue_options;

/* True when location is an hf:// URL rather than a local path. */
bool glue_is_hub_url(const char *location);

/* Opens an hf:// URL as a source. *file is NULL when the URL names a directory (a model), else
 * the name, inside the source, of the one file it names (free it). notice (GLUE_NOTICE_LEN
 * bytes) is set to something the user should know that is not an error, or "". */
int glue_hub_source_open(const char *url, const glue_options *options, loader_source **out,
                         char **file, char *notice, char *err, size_t errlen);

/* A model from a local path (loader_model_open) or an hf:// URL. options may be NULL. */
int glue_model_open(const char *location, const glue_options *options, loader_model **out,
                    char *notice, char *err, size_t errlen);

#endif
