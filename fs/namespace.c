/* namespace.c — nodes by inode number and by (parent, name), orgs from the Hub's listings,
 * repo pinning and tree listings, misses remembered, and forgetting what the kernel dropped. */
#include "namespace.h"

#include "clock.h"
#include "inode_table.h"
#include "log.h"
#include "negative_cache.h"
#include "org_listing.h"
#include "repo_meta.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NAME_BUCKETS (1u << 16)
#define MAX_HUB_NAME 96
#define ORG_LISTING_TTL_S 300        /* an org's repos are listed again after this long */
#define MISSES_REMEMBERED 4096
#define MISS_TTL_S 60                /* a name the Hub refused is asked about again after this */

typedef struct name_link {
    uint64_t parent;
    const char *name;            /* the node's own name */
    uint64_t ino;
    struct name_link *next;
} name_link;

typedef struct stats_entry {
    char *name;
    repo_stats *stats;
} stats_entry;

struct fs_namespace {
    fs_context *context;
    pthread_mutex_t lock;
    inode_table nodes;
    uint64_t next_ino;           /* never reused: the kernel may still hold a forgotten one */
    name_link *buckets[NAME_BUCKETS];
    fs_repo **repos;
    size_t repo_count, repo_capacity;
    stats_entry *stats;
    size_t stats_count, stats_capacity;
    negative_cache *misses;      /* "m:ORG", "d:ORG/NAME@REV"...: what the Hub refused lately */
};

/* ---- nodes by (parent, name) -------------------------------------------------------------- */

static size_t name_bucket(uint64_t parent, const char *name)
{
    uint64_t h = 1469598103934665603ULL ^ parent * 0x9E3779B97F4A7C15ULL;
    for (; *name; name++)
        h = (h ^ (unsigned char)*name) * 1099511628211ULL;
    return (size_t)(h % NAME_BUCKETS);
}

static name_link *find_link(fs_namespace *names, uint64_t parent, const char *name)
{
    for (name_link *link = names->buckets[name_bucket(parent, name)]; link; link = link->next)
        if (link->parent == parent && strcmp(link->name, name) == 0)
            return link;
    return NULL;
}

static fs_node *find_child(fs_namespace *names, uint64_t parent, const char *name)
{
    name_link *link = find_link(names, parent, name);
    return link ? inode_table_find(&names->nodes, link->ino) : NULL;
}

static void unlink_name(fs_namespace *names, const fs_node *node)
{
    for (name_link **link = &names->buckets[name_bucket(node->parent, node->name)]; *link; link = &(*link)->next)
        if ((*link)->ino == node->ino) {
            name_link *gone = *link;
            *link = gone->next;
            free(gone);
            return;
        }
}

static bool grow(void **array, size_t *capacity, size_t needed, size_t element)
{
    if (needed <= *capacity)
        return true;
    size_t wanted = *capacity ? *capacity * 2 : 64;
    while (wanted < needed)
        wanted *= 2;
    void *grown = realloc(*array, wanted * element);
    if (!grown)
        return false;
    memset((char *)grown + *capacity * element, 0, (wanted - *capacity) * element);
    *array = grown;
    *capacity = wanted;
    return true;
}

static bool add_child(fs_node *parent, uint64_t ino)
{
    fs_child_list *list = &parent->children;
    if (!grow((void **)&list->inos, &list->capacity, list->count + 1, sizeof *list->inos))
        return false;
    list->inos[list->count++] = ino;
    return true;
}

static void remove_child(fs_node *parent, uint64_t ino)
{
    fs_child_list *list = &parent->children;
    for (size_t i = 0; i < list->count; i++)
        if (list->inos[i] == ino) {
            list->inos[i] = list->inos[--list->count];
            return;
        }
}

static void free_node(fs_node *node)
{
    remote_file_free(node->file);
    org_listing_free(node->listing);
    free(node->children.inos);
    free(node->name);
    free(node);
}

/* Creates a node; with link set it is also entered under (parent, name). Lock held. */
static fs_node *add_node(fs_namespace *names, uint64_t parent, const char *name, fs_node_kind kind, bool link)
{
    fs_node *parent_node = parent ? inode_table_find(&names->nodes, parent) : NULL;
    fs_node *node = calloc(1, sizeof *node);
    name_link *entry = link ? calloc(1, sizeof *entry) : NULL;
    bool ok = node && (node->name = strdup(name)) && (!link || entry);
    if (ok) {
        node->ino = names->next_ino;
        ok = inode_table_insert(&names->nodes, node);
        if (ok && link && !add_child(parent_node, node->ino)) {
            inode_table_remove(&names->nodes, node->ino);
            ok = false;
        }
    }
    if (!ok) {
        if (node)
            free(node->name);
        free(node);
        free(entry);
        return NULL;
    }
    names->next_ino++;
    node->parent = parent;
    node->kind = kind;
    if (parent_node) {
        node->repo = parent_node->repo;
        node->repo_type = parent_node->repo_type;
    }
    if (link) {
        *entry = (name_link){.parent = parent, .name = node->name, .ino = node->ino};
        size_t bucket = name_bucket(parent, name);
        entry->next = names->buckets[bucket];
        names->buckets[bucket] = entry;
    }
    return node;
}

/* An org nobody needs any more: the kernel forgot it and no repo below it was pinned. */
static bool is_disposable(const fs_node *node)
{
    return node->kind == NODE_ORG && node->lookups == 0 && node->children.count == 0 &&
           !node->listing_fetch_running;
}

/* Takes a node out of every index and frees it. Lock held. */
static void remove_node(fs_namespace *names, fs_node *node)
{
    unlink_name(names, node);
    fs_node *parent = inode_table_find(&names->nodes, node->parent);
    if (parent)
        remove_child(parent, node->ino);
    inode_table_remove(&names->nodes, node->ino);
    free_node(node);
}

fs_namespace *namespace_new(fs_context *context)
{
    fs_namespace *names = calloc(1, sizeof *names);
    if (!names)
        return NULL;
    names->context = context;
    names->next_ino = FUSE_ROOT_ID;
    pthread_mutex_init(&names->lock, NULL);
    names->misses = negative_cache_new(MISSES_REMEMBERED, MISS_TTL_S);
    fs_node *root = names->misses ? add_node(names, 0, "", NODE_ROOT, false) : NULL;
    fs_node *control = root ? add_node(names, FUSE_ROOT_ID, ".hubfs", NODE_CONTROL_DIR, true) : NULL;
    fs_node *datasets = control ? add_node(names, FUSE_ROOT_ID, "datasets", NODE_DATASETS_DIR, true) : NULL;
    if (datasets)
        datasets->repo_type = HUB_REPO_DATASET;
    if (!datasets || !add_node(names, control->ino, "stats", NODE_STATS_FILE, true)) {
        namespace_free(names);
        return NULL;
    }
    return names;
}

fs_node *namespace_get(fs_namespace *names, uint64_t ino)
{
    pthread_mutex_lock(&names->lock);
    fs_node *node = inode_table_find(&names->nodes, ino);
    pthread_mutex_unlock(&names->lock);
    return node;
}

size_t namespace_node_count(fs_namespace *names)
{
    pthread_mutex_lock(&names->lock);
    size_t count = names->nodes.count;
    pthread_mutex_unlock(&names->lock);
    return count;
}

void namespace_forget(fs_namespace *names, uint64_t ino, uint64_t count)
{
    pthread_mutex_lock(&names->lock);
    fs_node *node = inode_table_find(&names->nodes, ino);
    if (node) {
        node->lookups = count < node->lookups ? node->lookups - count : 0;
        if (is_disposable(node))
            remove_node(names, node);
    }
    pthread_mutex_unlock(&names->lock);
}

/* Hub names (huggingface_hub's validate_repo_id): letters, digits, '-', '_', '.', starting and
 * ending with a letter, digit or '_', without "--" or "..", at most 96 bytes. Checking here
 * keeps desktop probes (.Trash, .git, autorun.inf...) and invented junk from the Hub. */
static bool is_hub_name(const char *name, size_t length)
{
    if (length == 0 || length > MAX_HUB_NAME)
        return false;
    for (size_t i = 0; i < length; i++) {
        char c = name[i];
        bool word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        bool edge = i == 0 || i == length - 1;
        if (!word && (edge || (c != '-' && c != '.') || name[i + 1] == c))
            return false;
    }
    return true;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes a revision; false on a malformed escape or a control character. */
static bool decode_revision(const char *encoded, char *out, size_t size)
{
    size_t n = 0;
    for (const char *c = encoded; *c; c++) {
        int value = (unsigned char)*c;
        if (*c == '%') {
            int high = hex_value(c[1]), low = high < 0 ? -1 : hex_value(c[2]);
            if (low < 0)
                return false;
            value = high * 16 + low;
            c += 2;
        }
        if (value < 0x20 || value == 0x7f || n + 1 >= size)
            return false;
        out[n++] = (char)value;
    }
    out[n] = '\0';
    return n > 0;
}

static repo_stats *stats_for(fs_namespace *names, const char *display_name)
{
    for (size_t i = 0; i < names->stats_count; i++)
        if (strcmp(names->stats[i].name, display_name) == 0)
            return names->stats[i].stats;
    if (!grow((void **)&names->stats, &names->stats_capacity, names->stats_count + 1, sizeof *names->stats))
        return NULL;
    stats_entry *entry = &names->stats[names->stats_count];
    entry->name = strdup(display_name);
    entry->stats = calloc(1, sizeof *entry->stats);
    if (!entry->name || !entry->stats) {
        free(entry->name);
        free(entry->stats);
        return NULL;
    }
    names->stats_count++;
    return entry->stats;
}

static void free_repo(fs_repo *repo)
{
    if (!repo)
        return;
    free(repo->id);
    free(repo->revision);
    free(repo->display_name);
    free(repo->hf_folder);
    pthread_mutex_destroy(&repo->tree_lock);
    pthread_mutex_destroy(&repo->pattern_lock);
    free(repo->pattern);
    free(repo);
}

/* huggingface_hub's folder name for a repo: "models--org--name" ("/" becomes "--"). */
static char *hf_cache_folder_of(hub_repo_type type, const char *id)
{
    const char *kind = type == HUB_REPO_DATASET ? "datasets" : type == HUB_REPO_SPACE ? "spaces" : "models";
    size_t size = strlen(kind) + 2 * strlen(id) + 3;
    char *folder = malloc(size);
    if (!folder)
        return NULL;
    size_t n = (size_t)snprintf(folder, size, "%s--", kind);
    for (const char *c = id; *c && n + 3 < size; c++) {
        if (*c == '/') {
            folder[n++] = '-';
            folder[n++] = '-';
        } else {
            folder[n++] = *c;
        }
    }
    folder[n] = '\0';
    return folder;
}

static fs_repo *new_repo(hub_repo_type type, const char *id, const char *revision, const char *commit)
{
    fs_repo *repo = calloc(1, sizeof *repo);
    if (!repo)
        return NULL;
    pthread_mutex_init(&repo->tree_lock, NULL);
    pthread_mutex_init(&repo->pattern_lock, NULL);
    repo->id = strdup(id);
    repo->revision = strdup(revision);
    size_t size = strlen(id) + strlen(revision) + 16;
    repo->display_name = malloc(size);
    if (!repo->id || !repo->revision || !repo->display_name) {
        free_repo(repo);
        return NULL;
    }
    snprintf(repo->display_name, size, "%s%s@%s", type == HUB_REPO_DATASET ? "datasets/" : "", id, revision);
    if (!(repo->hf_folder = hf_cache_folder_of(type, id))) {
        free_repo(repo);
        return NULL;
    }
    repo->hub = (hub_repo){.type = type, .id = repo->id};
    memcpy(repo->commit, commit, HUB_SHA_HEX_LEN + 1);
    return repo;
}

/* Creates the repo node for repo under parent; with replace, the name is moved to it. Lock held. */
static fs_node *add_repo_node(fs_namespace *names, uint64_t parent, const char *name, fs_repo *repo, bool replace)
{
    if (!grow((void **)&names->repos, &names->repo_capacity, names->repo_count + 1, sizeof *names->repos) ||
        !(repo->stats = stats_for(names, repo->display_name)))
        return NULL;
    name_link *link = replace ? find_link(names, parent, name) : NULL;
    fs_node *node = add_node(names, parent, name, NODE_REPO, link == NULL);
    if (!node)
        return NULL;
    node->repo = repo;
    repo->root_ino = node->ino;
    names->repos[names->repo_count++] = repo;
    fs_node *parent_node = inode_table_find(&names->nodes, parent);
    if (link) {
        fs_child_list *siblings = &parent_node->children;
        for (size_t i = 0; i < siblings->count; i++)
            if (siblings->inos[i] == link->ino)
                siblings->inos[i] = node->ino;
        link->ino = node->ino;
        link->name = node->name;
    }
    parent_node->visible = true;
    return node;
}

static void log_refusal(const char *display_name, const hub_error *err)
{
    const char *hint = "";
    switch (err->status) {
    case HUB_ERR_REPO_NOT_FOUND: hint = " (a token can also come from --token-file)"; break;
    case HUB_ERR_UNAUTHORIZED: hint = " (set a valid token: HF_TOKEN or --token-file)"; break;
    case HUB_ERR_GATED: hint = " (accept the model's terms on its Hub page, with the account of your token)"; break;
    default: break;
    }
    fs_log_limited(display_name, "%s: %s: %s%s", display_name, hub_status_name(err->status), err->message, hint);
}

/* Pins revision of repo: the Hub, or offline the commit remembered in the metadata; with the
 * commit's date (0 when neither knows it). */
static int pin_revision(fs_namespace *names, const hub_repo *repo, const char *revision, const char *display_name,
                        hub_revision_info *pinned)
{
    fs_context *context = names->context;
    const char *metadata = context->metadata_dir;
    hub_error err = {0};
    hub_status status = hub_resolve_revision_info(context->hub, repo, revision, pinned, &err);
    if (status == HUB_ERR_OFFLINE && metadata && repo_meta_load_commit(metadata, repo, revision, pinned->commit))
        status = HUB_OK;
    else if (status == HUB_ERR_OFFLINE && hub_is_commit_sha(revision)) {
        memcpy(pinned->commit, revision, HUB_SHA_HEX_LEN + 1);   /* pinned by name: its tree may be cached */
        status = HUB_OK;
    } else if (status == HUB_OK && metadata) {
        repo_meta_save_commit(metadata, repo, revision, pinned->commit);
        if (pinned->date)
            repo_meta_save_date(metadata, repo, pinned->commit, pinned->date);
    }
    if (status == HUB_OK) {
        if (!pinned->date && metadata)
            repo_meta_load_date(metadata, repo, pinned->commit, &pinned->date);
        return 0;
    }
    if (status == HUB_ERR_OFFLINE) {
        fs_log_limited(display_name, "offline: not cached: %s (HF_HUB_OFFLINE=1; open it once online to cache it)",
                       display_name);
        return ENOENT;
    }
    log_refusal(display_name, &err);
    /* A repo not found is ENOENT even when the Hub says 401: it answers so for every missing
     * repo to a caller without a token, and a private one looks exactly the same. */
    return remote_errno_of(status);
}

/* The key of a lookup in the misses: the repo type's letter, then "ORG" or "ORG/NAME@REV". */
static void miss_key(char *out, size_t size, hub_repo_type type, const char *org, const char *name)
{
    char letter = type == HUB_REPO_DATASET ? 'd' : type == HUB_REPO_SPACE ? 's' : 'm';
    snprintf(out, size, "%c:%s%s%s", letter, org, name ? "/" : "", name ? name : "");
}

/* Whether a refusal is the Hub's lasting word on a name (not a failure worth asking again). */
static bool is_lasting_refusal(int error)
{
    return error == ENOENT || error == EACCES;
}

static int open_repo(fs_namespace *names, fs_node *org, const char *name, fs_node **out)
{
    const char *at = strchr(name, '@');
    size_t base_length = at ? (size_t)(at - name) : strlen(name);
    char revision[256] = "main";
    if (!is_hub_name(name, base_length) || (at && !decode_revision(at + 1, revision, sizeof revision)))
        return ENOENT;
    char key[2 * MAX_HUB_NAME + 280];
    miss_key(key, sizeof key, org->repo_type, org->name, name);
    int error = negative_cache_get(names->misses, key, monotonic_seconds());
    if (error)
        return error;
    char id[2 * MAX_HUB_NAME + 2];
    snprintf(id, sizeof id, "%s/%.*s", org->name, (int)base_length, name);
    char display[sizeof id + sizeof revision + 16];
    snprintf(display, sizeof display, "%s%s@%s", org->repo_type == HUB_REPO_DATASET ? "datasets/" : "", id, revision);
    hub_repo hub = {.type = org->repo_type, .id = id};
    hub_revision_info pinned = {0};
    error = pin_revision(names, &hub, revision, display, &pinned);
    if (error) {
        if (is_lasting_refusal(error))
            negative_cache_put(names->misses, key, error, monotonic_seconds());
        return error;
    }
    fs_repo *repo = new_repo(org->repo_type, id, revision, pinned.commit);
    if (repo)
        repo->commit_date = pinned.date;
    pthread_mutex_lock(&names->lock);
    fs_node *node = find_child(names, org->ino, name);   /* a concurrent lookup may have won */
    if (!node && repo)
        node = add_repo_node(names, org->ino, name, repo, false);
    else
        free_repo(repo);
    if (node)
        node->lookups++;
    pthread_mutex_unlock(&names->lock);
    *out = node;
    return node ? 0 : ENOMEM;
}

/* An org exists when a repo of it was pinned before in this cache (no request: orgs are not
 * renamed under a repo that opens, and the repo lookup below says when one is gone) or when the
 * Hub lists one; a refused token is EACCES. When the listing fails otherwise, the name is taken
 * on trust, unlisted, so that a flaky listing API never hides a repo that opens: the repo lookup
 * below it says what is wrong. */
static int lookup_org(fs_namespace *names, fs_node *dir, const char *name, fs_node **out)
{
    if (!is_hub_name(name, strlen(name)))
        return ENOENT;
    char key[MAX_HUB_NAME + 8];
    miss_key(key, sizeof key, dir->repo_type, name, NULL);
    int error = negative_cache_get(names->misses, key, monotonic_seconds());
    if (error)
        return error;
    org_listing *listing = NULL;
    bool pinned_before = org_listing_pinned_before(names->context, dir->repo_type, name);
    if (!pinned_before)
        error = org_listing_fetch(names->context, dir->repo_type, name, false, &listing);
    if (!error && listing && listing->repos.count == 0)
        error = ENOENT;
    if (error == ENOENT || error == EACCES || error == ENOMEM) {
        if (is_lasting_refusal(error))
            negative_cache_put(names->misses, key, error, monotonic_seconds());
        org_listing_free(listing);
        return error;
    }
    pthread_mutex_lock(&names->lock);
    fs_node *node = find_child(names, dir->ino, name);   /* a concurrent lookup may have won */
    if (!node && (node = add_node(names, dir->ino, name, NODE_ORG, true))) {
        node->visible = pinned_before || listing != NULL;
        node->listing = listing;
        node->listed_at = monotonic_seconds();
        listing = NULL;
    }
    if (node)
        node->lookups++;
    pthread_mutex_unlock(&names->lock);
    org_listing_free(listing);
    *out = node;
    return node ? 0 : ENOMEM;
}

/* Enters one tree entry under the repo's root, creating its directories. Lock held. */
static bool add_tree_entry(fs_namespace *names, fs_repo *repo, const hub_tree_entry *entry)
{
    char *path = strdup(entry->path);
    if (!path)
        return false;
    uint64_t dir = repo->root_ino;
    char *save = NULL;
    char *part = strtok_r(path, "/", &save);
    bool ok = true;
    while (part && ok) {
        char *next = strtok_r(NULL, "/", &save);
        fs_node *node = find_child(names, dir, part);
        bool is_leaf_file = !next && !entry->is_directory;
        if (!node) {
            node = add_node(names, dir, part, is_leaf_file ? NODE_FILE : NODE_DIR, true);
            if (node && is_leaf_file) {
                node->size = entry->size;
                node->file = remote_file_new(names->context, repo, entry->path, node->ino, entry->size,
                                             entry->is_lfs ? entry->lfs_sha256 : entry->oid);
            }
            ok = node && (!is_leaf_file || node->file);
        }
        if (ok && node->kind != NODE_DIR)
            break;   /* a file where a directory was expected: the listing is odd; keep the file */
        dir = ok ? node->ino : dir;
        part = next;
    }
    free(path);
    return ok;
}

/* One line on what the listing of repo left out: names no local path can hold, and the part
 * past the listing limits. */
static void log_listing_gaps(const fs_repo *repo, const hub_tree *tree)
{
    if (!tree->skipped && !tree->truncated[0])
        return;
    char skipped[HUB_TREE_SKIPPED_SHOWN_MAX + 96] = "";
    if (tree->skipped)
        snprintf(skipped, sizeof skipped, "%zu entr%s left out (no local path can hold %s, e.g. %s)",
                 tree->skipped, tree->skipped == 1 ? "y" : "ies",
                 tree->skipped == 1 ? "its name" : "their names", tree->skipped_shown);
    char truncated[sizeof tree->truncated + 64] = "";
    if (tree->truncated[0])
        snprintf(truncated, sizeof truncated, "entries past the first %zu left out (the list has %s)",
                 tree->count, tree->truncated);
    fs_log("%s: file list incomplete: %s%s%s", repo->display_name, skipped,
           skipped[0] && truncated[0] ? "; " : "", truncated);
}

/* Fetches the repo's tree: the listing remembered in the metadata (a commit's tree never changes,
 * so a remount asks the Hub only for the revision), else the Hub. */
static int fetch_tree(fs_namespace *names, fs_repo *repo, hub_tree *tree, bool *from_metadata)
{
    fs_context *context = names->context;
    hub_error err = {0};
    *from_metadata = context->metadata_dir && repo_meta_load_tree(context->metadata_dir, &repo->hub, repo->commit, tree);
    if (*from_metadata)
        return 0;
    hub_status status = hub_list_tree(context->hub, &repo->hub, repo->commit, tree, &err);
    if (status == HUB_OK) {
        if (context->metadata_dir)
            repo_meta_save_tree(context->metadata_dir, &repo->hub, repo->commit, tree);
        return 0;
    }
    if (status == HUB_ERR_OFFLINE) {
        fs_log_limited(repo->display_name, "offline: not cached: the file list of %s (HF_HUB_OFFLINE=1)",
                       repo->display_name);
        return EIO;
    }
    log_refusal(repo->display_name, &err);
    int error = remote_errno_of(status);
    return error == ENOENT ? EIO : error;
}

static int ensure_tree(fs_namespace *names, fs_repo *repo)
{
    pthread_mutex_lock(&repo->tree_lock);
    pthread_mutex_lock(&names->lock);
    bool loaded = repo->tree_loaded;
    pthread_mutex_unlock(&names->lock);
    int error = 0;
    if (!loaded) {
        hub_tree tree = {0};
        bool from_metadata;
        error = fetch_tree(names, repo, &tree, &from_metadata);
        if (!error) {
            log_listing_gaps(repo, &tree);   /* again on a remount: the kept listing has its gaps */
            pthread_mutex_lock(&names->lock);
            for (size_t i = 0; i < tree.count && !error; i++)
                if (!add_tree_entry(names, repo, &tree.entries[i]))
                    error = ENOMEM;
            repo->tree_loaded = !error;
            pthread_mutex_unlock(&names->lock);
            if (from_metadata)
                repo_meta_tree_free(&tree);
            else
                hub_tree_free(&tree);
        }
    }
    pthread_mutex_unlock(&repo->tree_lock);
    return error;
}

/* The directory ino, with its repo's tree listed: what lookup and readdir both need first. */
static int directory_with_tree(fs_namespace *names, uint64_t ino, fs_node **dir_out)
{
    fs_node *dir = namespace_get(names, ino);
    if (!dir)
        return ENOENT;
    if (dir->kind == NODE_FILE || dir->kind == NODE_STATS_FILE)
        return ENOTDIR;
    if (dir->kind == NODE_REPO || dir->kind == NODE_DIR) {
        int error = ensure_tree(names, dir->repo);
        if (error)
            return error;
    }
    *dir_out = dir;
    return 0;
}

/* "PREFIX-00002-of-00004SUFFIX": where the counter starts, its width and both numbers. */
typedef struct shard_name {
    const char *digits, *of;
    int width;
    unsigned long index, total;
} shard_name;

static bool parse_shard_name(const char *name, shard_name *out)
{
    const char *of = strstr(name, "-of-");
    if (!of || of == name)
        return false;
    const char *digits = of;
    while (digits > name && digits[-1] >= '0' && digits[-1] <= '9')
        digits--;
    size_t width = (size_t)(of - digits), total_width = strspn(of + 4, "0123456789");
    if (width == 0 || width > 9 || total_width != width)
        return false;
    *out = (shard_name){digits, of, (int)width, strtoul(digits, NULL, 10), strtoul(of + 4, NULL, 10)};
    return true;
}

static bool format_next_shard_name(const char *name, const shard_name *shard, char *out, size_t size)
{
    if (shard->index + 1 > shard->total)
        return false;
    int n = snprintf(out, size, "%.*s%0*lu%s", (int)(shard->digits - name), name, shard->width, shard->index + 1,
                     shard->of);
    return n > 0 && (size_t)n < size;
}

bool namespace_next_shard_name(const char *name, char *out, size_t size)
{
    shard_name shard;
    return parse_shard_name(name, &shard) && format_next_shard_name(name, &shard, out, size);
}

remote_file *namespace_next_shard(fs_namespace *names, uint64_t ino, bool *is_first)
{
    remote_file *next = NULL;
    *is_first = false;
    pthread_mutex_lock(&names->lock);
    fs_node *node = inode_table_find(&names->nodes, ino);
    char name[NAME_MAX + 1];
    shard_name shard;
    if (node && node->kind == NODE_FILE && parse_shard_name(node->name, &shard) &&
        format_next_shard_name(node->name, &shard, name, sizeof name)) {
        *is_first = shard.index <= 1;
        fs_node *sibling = find_child(names, node->parent, name);
        next = sibling && sibling->kind == NODE_FILE ? sibling->file : NULL;
    }
    pthread_mutex_unlock(&names->lock);
    return next;
}

int namespace_lookup(fs_namespace *names, uint64_t parent, const char *name, fs_node **out)
{
    fs_node *dir;
    int error = directory_with_tree(names, parent, &dir);
    if (error)
        return error;
    pthread_mutex_lock(&names->lock);
    fs_node *node = find_child(names, parent, name);
    if (node)
        node->lookups++;
    pthread_mutex_unlock(&names->lock);
    if (node) {
        *out = node;
        return 0;
    }
    if (dir->kind == NODE_ROOT || dir->kind == NODE_DATASETS_DIR)
        return lookup_org(names, dir, name, out);
    if (dir->kind == NODE_ORG)
        return open_repo(names, dir, name, out);
    return ENOENT;
}

/* Lists an org's repos again when forced, when only the first page was read, or when the
 * listing is old; a failure keeps what was listed before. One fetch at a time per org. */
static int update_org_listing(fs_namespace *names, fs_node *org, bool force)
{
    int64_t now = monotonic_seconds();
    pthread_mutex_lock(&names->lock);
    bool wanted = force || !org->listing || !org->listing->whole || now - org->listed_at >= ORG_LISTING_TTL_S;
    bool fetching = wanted && !org->listing_fetch_running;
    org->listing_fetch_running |= fetching;
    pthread_mutex_unlock(&names->lock);
    if (!fetching)
        return 0;
    org_listing *listing = NULL;
    int error = org_listing_fetch(names->context, org->repo_type, org->name, true, &listing);
    pthread_mutex_lock(&names->lock);
    if (!error) {
        org_listing_free(org->listing);
        org->listing = listing;
        org->listed_at = now;
        org->visible |= listing->repos.count > 0;
    }
    org->listing_fetch_running = false;
    pthread_mutex_unlock(&names->lock);
    return error;
}

typedef struct listing_builder {
    fs_dir_entry *entries;
    size_t count, capacity;
} listing_builder;

static bool add_entry(listing_builder *b, const char *name, uint64_t ino, bool is_directory)
{
    if (!grow((void **)&b->entries, &b->capacity, b->count + 1, sizeof *b->entries))
        return false;
    b->entries[b->count] = (fs_dir_entry){.ino = ino, .is_directory = is_directory, .name = strdup(name)};
    return b->entries[b->count++].name != NULL;
}

/* The repos an org's listing names (with their node's inode once looked up), then those pinned
 * by a name the listing lacks (NAME@REV, or a repo the listing did not show). Lock held. */
static bool add_org_entries(fs_namespace *names, const fs_node *org, listing_builder *b)
{
    const hub_repo_list *listed = org->listing ? &org->listing->repos : NULL;
    for (size_t i = 0; listed && i < listed->count; i++) {
        fs_node *child = find_child(names, org->ino, listed->names[i]);
        if (!add_entry(b, listed->names[i], child ? child->ino : NAMESPACE_UNKNOWN_INO, true))
            return false;
    }
    for (size_t i = 0; i < org->children.count; i++) {
        fs_node *child = inode_table_find(&names->nodes, org->children.inos[i]);
        if (!org_listing_contains(org->listing, child->name) && !add_entry(b, child->name, child->ino, true))
            return false;
    }
    return true;
}

/* A directory's own children; orgs only once known to have a repo. Lock held. */
static bool add_child_entries(fs_namespace *names, const fs_node *dir, listing_builder *b)
{
    for (size_t i = 0; i < dir->children.count; i++) {
        fs_node *child = inode_table_find(&names->nodes, dir->children.inos[i]);
        if (child->kind == NODE_ORG && !child->visible)
            continue;
        bool is_directory = child->kind != NODE_FILE && child->kind != NODE_STATS_FILE;
        if (!add_entry(b, child->name, child->ino, is_directory))
            return false;
    }
    return true;
}

int namespace_list(fs_namespace *names, uint64_t ino, fs_dir_entry **entries_out, size_t *count_out)
{
    fs_node *dir;
    int error = directory_with_tree(names, ino, &dir);
    if (error)
        return error;
    if (dir->kind == NODE_ORG)
        update_org_listing(names, dir, false);   /* on failure, what was listed before */
    listing_builder b = {0};
    pthread_mutex_lock(&names->lock);
    bool ok = grow((void **)&b.entries, &b.capacity, 1, sizeof *b.entries) &&
              (dir->kind == NODE_ORG ? add_org_entries(names, dir, &b) : add_child_entries(names, dir, &b));
    pthread_mutex_unlock(&names->lock);
    if (!ok) {
        namespace_free_listing(b.entries, b.count);
        return ENOMEM;
    }
    *entries_out = b.entries;
    *count_out = b.count;
    return 0;
}

void namespace_free_listing(fs_dir_entry *entries, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(entries[i].name);
    free(entries);
}

int namespace_refresh(fs_namespace *names, fs_node *repo_node, char commit_out[HUB_SHA_HEX_LEN + 1], bool *replaced)
{
    *replaced = false;
    if (repo_node->kind != NODE_REPO)
        return EINVAL;
    fs_repo *old = repo_node->repo;
    hub_revision_info pinned = {0};
    int error = pin_revision(names, &old->hub, old->revision, old->display_name, &pinned);
    if (error)
        return error;
    memcpy(commit_out, pinned.commit, sizeof pinned.commit);
    pthread_mutex_lock(&names->lock);
    name_link *link = find_link(names, repo_node->parent, repo_node->name);
    fs_node *current = link ? inode_table_find(&names->nodes, link->ino) : repo_node;
    if (strcmp(current->repo->commit, pinned.commit) != 0) {
        fs_repo *repo = new_repo(old->hub.type, old->id, old->revision, pinned.commit);
        if (repo)
            repo->commit_date = pinned.date;
        if (repo && add_repo_node(names, repo_node->parent, repo_node->name, repo, true))
            *replaced = true;
        else {
            free_repo(repo);
            error = ENOMEM;
        }
    }
    pthread_mutex_unlock(&names->lock);
    if (*replaced)
        fs_log("%s: now pinned at commit %s (open files keep theirs)", old->display_name, pinned.commit);
    return error;
}

int namespace_refresh_org(fs_namespace *names, fs_node *org_node, size_t *repo_count_out)
{
    if (org_node->kind != NODE_ORG)
        return EINVAL;
    negative_cache_clear(names->misses);
    int error = update_org_listing(names, org_node, true);
    pthread_mutex_lock(&names->lock);
    *repo_count_out = org_node->listing ? org_node->listing->repos.count : 0;
    pthread_mutex_unlock(&names->lock);
    return error;
}

int namespace_repo_stats(fs_namespace *names, repo_stats_view **views_out, size_t *count_out)
{
    pthread_mutex_lock(&names->lock);
    repo_stats_view *views = calloc(names->stats_count ? names->stats_count : 1, sizeof *views);
    for (size_t i = 0; views && i < names->stats_count; i++)
        views[i] = (repo_stats_view){.name = names->stats[i].name, .stats = names->stats[i].stats};
    *count_out = names->stats_count;
    pthread_mutex_unlock(&names->lock);
    *views_out = views;
    return views ? 0 : ENOMEM;
}

void namespace_free(fs_namespace *names)
{
    if (!names)
        return;
    for (size_t b = 0; b < NAME_BUCKETS; b++)
        for (name_link *link = names->buckets[b], *next; link; link = next) {
            next = link->next;
            free(link);
        }
    for (size_t i = 0; i < names->nodes.capacity; i++)
        if (names->nodes.slots[i])
            free_node(names->nodes.slots[i]);
    inode_table_clear(&names->nodes);
    for (size_t i = 0; i < names->repo_count; i++)
        free_repo(names->repos[i]);
    for (size_t i = 0; i < names->stats_count; i++) {
        free(names->stats[i].name);
        free(names->stats[i].stats);
    }
    free(names->stats);
    free(names->repos);
    negative_cache_free(names->misses);
    pthread_mutex_destroy(&names->lock);
    free(names);
}
