/* namespace.h — the inode table: the root, orgs, repos pinned at a commit, their directories
 * and files (from one tree listing per pinned repo), and the control directory .hubfs.
 *
 *   /                      what has been looked up (orgs with a repo found), datasets, .hubfs
 *   /ORG/NAME[@REV]        a model at REV (default main), pinned at first lookup
 *   /datasets/ORG/NAME     a dataset
 *   /.hubfs/stats          counters
 *
 * Inode numbers are never reused and nodes are never freed while mounted, so the kernel's
 * long entry/attr timeouts are always safe. A refresh pins the name again: the name then leads
 * to a new repo node; the old one stays valid for whoever still holds it.
 */
#ifndef HUBFS_NAMESPACE_H
#define HUBFS_NAMESPACE_H

#include "context.h"
#include "remote_file.h"

typedef enum fs_node_kind {
    NODE_ROOT,
    NODE_CONTROL_DIR,
    NODE_STATS_FILE,
    NODE_DATASETS_DIR,
    NODE_ORG,
    NODE_REPO,
    NODE_DIR,
    NODE_FILE,
} fs_node_kind;

typedef struct fs_node {
    uint64_t ino;
    uint64_t parent;
    char *name;
    fs_node_kind kind;
    hub_repo_type repo_type;     /* NODE_ORG: the kind of repos below */
    fs_repo *repo;               /* NODE_REPO, NODE_DIR, NODE_FILE */
    remote_file *file;           /* NODE_FILE */
    uint64_t size;
    bool visible;                /* NODE_ORG: listed once a repo below it was found */
} fs_node;

typedef struct fs_dir_entry {
    uint64_t ino;
    bool is_directory;
    char *name;
} fs_dir_entry;

fs_namespace *namespace_new(fs_context *context);
void namespace_free(fs_namespace *names);

/* The node of an inode number, NULL when unknown. Nodes live until namespace_free. */
fs_node *namespace_get(fs_namespace *names, uint64_t ino);

/* Finds name in directory parent, asking the Hub for unseen repos. Returns 0 or an errno
 * value (ENOENT, EACCES, EIO, ENOTDIR), having logged why when the Hub refused. */
int namespace_lookup(fs_namespace *names, uint64_t parent, const char *name, fs_node **out);

/* A snapshot of a directory's entries (free with namespace_free_listing). */
int namespace_list(fs_namespace *names, uint64_t dir, fs_dir_entry **entries_out, size_t *count_out);
void namespace_free_listing(fs_dir_entry *entries, size_t count);

/* Pins a repo node's revision again. Writes the commit now pinned; *replaced tells whether the
 * name now leads to a new node (the kernel's entry for (parent, name) must be invalidated). */
int namespace_refresh(fs_namespace *names, fs_node *repo_node, char commit_out[HUB_SHA_HEX_LEN + 1],
                      bool *replaced);

/* Per-repo counters, for the stats file (the views point into the namespace; free the array). */
int namespace_repo_stats(fs_namespace *names, repo_stats_view **views_out, size_t *count_out);

#endif
