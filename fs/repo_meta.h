/* repo_meta.h — per-repo metadata kept under the cache directory so a mount works offline
 * (HF_HUB_OFFLINE=1): which commit a revision was pinned to, and each commit's tree listing
 * (JSON). Written atomically (temporary file + rename) each time the Hub answers. */
#ifndef HUBFS_REPO_META_H
#define HUBFS_REPO_META_H

#include "hub.h"

#include <stdbool.h>

int repo_meta_save_commit(const char *dir, const hub_repo *repo, const char *revision, const char *commit);
bool repo_meta_load_commit(const char *dir, const hub_repo *repo, const char *revision,
                           char commit_out[HUB_SHA_HEX_LEN + 1]);

int repo_meta_save_tree(const char *dir, const hub_repo *repo, const char *commit, const hub_tree *tree);
/* Fills out (free with repo_meta_tree_free); false when absent or malformed. */
bool repo_meta_load_tree(const char *dir, const hub_repo *repo, const char *commit, hub_tree *out);
void repo_meta_tree_free(hub_tree *tree);

#endif
