/* namespace.h — the inode table: the root, orgs, repos pinned at a commit, their directories
 * and files (from one tree listing per pinned repo), and the control directory .hubfs.
 *
 *   /                      .hubfs, datasets, and the orgs in use
 *   /ORG                   ORG's models, from the Hub's listing API (cached for minutes)
 *   /ORG/NAME[@REV]        a model at REV (default main), pinned at first lookup
 *   /datasets/ORG[/NAME]   the same for datasets
 *   /.hubfs/stats          counters
 *
 * An org exists when the Hub lists a repo of it the token can see (offline: when one was pinned
 * before); any other name is ENOENT, and so is a repo the Hub does not know. Such misses are
 * remembered for a minute (bounded), so probes of invented names cost one Hub request per name
 * at most, and names that are no valid Hub names never reach the Hub.
 *
 * The kernel's references are counted (FUSE nlookup): an org node goes when the kernel forgot it
 * and no repo below it was pinned. Repo nodes and their trees stay until unmount (open files and
 * a refresh's predecessor point at them). Inode numbers are never reused.
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

struct org_listing;

typedef struct fs_child_list {
    uint64_t *inos;
    size_t count, capacity;
} fs_child_list;

typedef struct fs_node {
    uint64_t ino;
    uint64_t parent;
    char *name;
    fs_node_kind kind;
    hub_repo_type repo_type;     /* NODE_ORG: the kind of repos below */
    fs_repo *repo;               /* NODE_REPO, NODE_DIR, NODE_FILE */
    remote_file *file;           /* NODE_FILE */
    uint64_t size;

    /* namespace.c's own, under its lock */
    uint64_t lookups;            /* the kernel's references (nlookup) */
    fs_child_list children;
    struct org_listing *listing; /* NODE_ORG: its repos; NULL when the Hub could not say */
    int64_t listed_at;           /* monotonic seconds */
    bool listing_fetch_running;
    bool visible;                /* NODE_ORG: listed at the root once known to have a repo */
} fs_node;

/* An inode number for directory entries whose node does not exist yet (a repo listed by the
 * Hub, not looked up): libfuse's FUSE_UNKNOWN_INO. */
#define NAMESPACE_UNKNOWN_INO 0xffffffffu

typedef struct fs_dir_entry {
    uint64_t ino;
    bool is_directory;
    char *name;
} fs_dir_entry;

fs_namespace *namespace_new(fs_context *context);
void namespace_free(fs_namespace *names);

/* The node of an inode number the kernel holds, NULL when unknown. */
fs_node *namespace_get(fs_namespace *names, uint64_t ino);

/* Finds name in directory parent, asking the Hub for unseen orgs and repos. Returns 0 or an
 * errno value (ENOENT, EACCES, EIO, ENOTDIR), having logged why when the Hub refused. A node
 * returned counts one kernel reference: namespace_forget it when the reply does not reach the
 * kernel. */
int namespace_lookup(fs_namespace *names, uint64_t parent, const char *name, fs_node **out);

/* Writes the name of the shard after `name` in a sharded checkpoint ("PREFIX-00002-of-00004SUFFIX",
 * both counters of one width, at most 9 digits) into out; false when name is no such shard, the
 * last one, or out is too small. */
bool namespace_next_shard_name(const char *name, char *out, size_t size);

/* The shard after file ino's in a sharded checkpoint, in the same folder
 * ("model-00002-of-00004.safetensors": "model-00003-of-00004.safetensors"); NULL when there is
 * none. *is_first: file ino is the checkpoint's first shard. Counts no kernel reference (remote
 * files live until unmount) and asks the Hub nothing. */
remote_file *namespace_next_shard(fs_namespace *names, uint64_t ino, bool *is_first);

/* The kernel dropped count references to ino (FUSE forget): a node nobody needs goes. */
void namespace_forget(fs_namespace *names, uint64_t ino, uint64_t count);

/* A snapshot of a directory's entries (free with namespace_free_listing). An org's are the
 * repos the Hub lists (fetched when older than a few minutes) and those pinned by name. */
int namespace_list(fs_namespace *names, uint64_t dir, fs_dir_entry **entries_out, size_t *count_out);
void namespace_free_listing(fs_dir_entry *entries, size_t count);

/* Pins a repo node's revision again. Writes the commit now pinned; *replaced tells whether the
 * name now leads to a new node (the kernel's entry for (parent, name) must be invalidated). */
int namespace_refresh(fs_namespace *names, fs_node *repo_node, char commit_out[HUB_SHA_HEX_LEN + 1],
                      bool *replaced);

/* Lists an org's repos again now, and forgets every remembered miss. Writes how many repos the
 * listing has. */
int namespace_refresh_org(fs_namespace *names, fs_node *org_node, size_t *repo_count_out);

/* Nodes alive now (the root's own included). */
size_t namespace_node_count(fs_namespace *names);

/* Per-repo counters, for the stats file (the views point into the namespace; free the array). */
int namespace_repo_stats(fs_namespace *names, repo_stats_view **views_out, size_t *count_out);

#endif
