/* repo_meta.h — per-repo metadata kept under the cache directory so a mount works offline
 * (HF_HUB_OFFLINE=1): which commit a revision was pinned to, each commit's date and tree listing
 * (JSON). Written atomically (temporary file + rename) each time the Hub answers. */
#ifndef HUBFS_REPO_META_H
#define HUBFS_REPO_META_H

#include "hub.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int repo_meta_save_commit(const char *dir, const hub_repo *repo, const char *revision, const char *commit);
bool repo_meta_load_commit(const char *dir, const hub_repo *repo, const char *revision,
                           char commit_out[HUB_SHA_HEX_LEN + 1]);

/* The commit's date (Unix seconds), so that an offline mount shows the times an online one did. */
int repo_meta_save_date(const char *dir, const hub_repo *repo, const char *commit, int64_t date);
bool repo_meta_load_date(const char *dir, const hub_repo *repo, const char *commit, int64_t *date_out);

/* The NAMEs of author's repos of a type that have metadata here (at most max_names; the author
 * compared without case): what was pinned before, so what an offline mount can open. Free with
 * hub_repo_list_free. Returns 0 or an errno value (ENOENT: no metadata yet). */
int repo_meta_list_repos(const char *dir, hub_repo_type type, const char *author, size_t max_names,
                         hub_repo_list *out);

int repo_meta_save_tree(const char *dir, const hub_repo *repo, const char *commit, const hub_tree *tree);
/* Fills out (free with repo_meta_tree_free); false when absent or malformed. */
bool repo_meta_load_tree(const char *dir, const hub_repo *repo, const char *commit, hub_tree *out);
void repo_meta_tree_free(hub_tree *tree);

#endif
