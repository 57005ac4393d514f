/* namespace.c — nodes, the (parent, name) index, repo pinning and tree listings. */
#include "namespace.h"

#include "log.h"
#include "repo_meta.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdlib.h>
#include <string.h>

#define NAME_BUCKETS (1u << 16)
#define MAX_HUB_NAME 96

typedef struct name_link {
    uint64_t parent;
    const char *name;            /* the node's own name */
    uint64_t ino;
    struct name_link *next;
} name_link;

typedef struct child_list {
    uint64_t *inos;
    size_t count, capacity;
} child_list;

typedef struct stats_entry {
    char *name;
    repo_stats *stats;
} stats_entry;

struct fs_namespace {
    fs_context *context;
    pthread_mutex_t lock;
    fs_node **nodes;             /* nodes[ino - 1] */
    child_list *children;        /* children[ino - 1] */
    size_t node_count, node_capacity;
    name_link *buckets[NAME_BUCKETS];
    fs_repo **repos;
    size_t repo_count, repo_capacity;
    stats_entry *stats;
    size_t stats_count, stats_capacity;
};

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
    return link ? names->nodes[link->ino - 1] : NULL;
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

static bool add_child(fs_namespace *names, uint64_t parent, uint64_t ino)
{
    child_list *list = &names->children[parent - 1];
    if (!grow((void **)&list->inos, &list->capacity, list->count + 1, sizeof *list->inos))
        return false;
    list->inos[list->count++] = ino;
    return true;
}

/* Creates a node; with link set it is also entered under (parent, name). Lock held. */
static fs_node *add_node(fs_namespace *names, uint64_t parent, const char *name, fs_node_kind kind, bool link)
{
    size_t old_capacity = names->node_capacity;
    if (!grow((void **)&names->nodes, &names->node_capacity, names->node_count + 1, sizeof *names->nodes))
        return NULL;
    if (names->node_capacity != old_capacity &&
        !grow((void **)&names->children, &old_capacity, names->node_capacity, sizeof *names->children))
        return NULL;
    fs_node *node = calloc(1, sizeof *node);
    name_link *entry = link ? calloc(1, sizeof *entry) : NULL;
    if (!node || !(node->name = strdup(name)) || (link && !entry)) {
        if (node) free(node->name);
        free(node);
        free(entry);
        return NULL;
    }
    node->ino = names->node_count + 1;
    node->parent = parent;
    node->kind = kind;
    if (parent) {
        fs_node *parent_node = names->nodes[parent - 1];
        node->repo = parent_node->repo;
        node->repo_type = parent_node->repo_type;
    }
    names->nodes[names->node_count++] = node;
    if (link) {
        *entry = (name_link){.parent = parent, .name = node->name, .ino = node->ino};
        size_t bucket = name_bucket(parent, name);
        entry->next = names->buckets[bucket];
        names->buckets[bucket] = entry;
        if (!add_child(names, parent, node->ino))
            return NULL;
    }
    return node;
}

fs_namespace *namespace_new(fs_context *context)
{
    fs_namespace *names = calloc(1, sizeof *names);
    if (!names)
        return NULL;
    names->context = context;
    pthread_mutex_init(&names->lock, NULL);
    fs_node *root = add_node(names, 0, "", NODE_ROOT, false);
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
    fs_node *node = ino >= 1 && ino <= names->node_count ? names->nodes[ino - 1] : NULL;
    pthread_mutex_unlock(&names->lock);
    return node;
}

/* Hub names: letters, digits, '-', '_', '.', not starting with '-' or '.'. Checking here keeps
 * desktop probes (.Trash, .git, autorun.inf...) from reaching the Hub. */
static bool is_hub_name(const char *name, size_t length)
{
    if (length == 0 || length > MAX_HUB_NAME || name[0] == '.' || name[0] == '-')
        return false;
    for (size_t i = 0; i < length; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.'))
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
    pthread_mutex_destroy(&repo->tree_lock);
    free(repo);
}

static fs_repo *new_repo(hub_repo_type type, const char *id, const char *revision, const char *commit)
{
    fs_repo *repo = calloc(1, sizeof *repo);
    if (!repo)
        return NULL;
    pthread_mutex_init(&repo->tree_lock, NULL);
    repo->id = strdup(id);
    repo->revision = strdup(revision);
    size_t size = strlen(id) + strlen(revision) + 16;
    repo->display_name = malloc(size);
    if (!repo->id || !repo->revision || !repo->display_name) {
        free_repo(repo);
        return NULL;
    }
    snprintf(repo->display_name, size, "%s%s@%s", type == HUB_REPO_DATASET ? "datasets/" : "", id, revision);
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
    if (link) {
        child_list *siblings = &names->children[parent - 1];
        for (size_t i = 0; i < siblings->count; i++)
            if (siblings->inos[i] == link->ino)
                siblings->inos[i] = node->ino;
        link->ino = node->ino;
        link->name = node->name;
    }
    names->nodes[parent - 1]->visible = true;
    return node;
}

static void log_refusal(const char *display_name, const hub_error *err)
{
    const char *hint = "";
    switch (err->status) {
    case HUB_ERR_REPO_NOT_FOUND: hint = " (check the name; a private repo needs a token: HF_TOKEN or --token-file)"; break;
    case HUB_ERR_UNAUTHORIZED: hint = " (set a valid token: HF_TOKEN or --token-file)"; break;
    case HUB_ERR_GATED: hint = " (accept the model's terms on its Hub page, with the account of your token)"; break;
    default: break;
    }
    fs_log_limited(display_name, "%s: %s: %s%s", display_name, hub_status_name(err->status), err->message, hint);
}

/* Pins revision of repo: the Hub, or offline the commit remembered in the metadata. */
static int pin_revision(fs_namespace *names, const hub_repo *repo, const char *revision, const char *display_name,
                        char commit[HUB_SHA_HEX_LEN + 1])
{
    fs_context *context = names->context;
    hub_error err = {0};
    hub_status status = hub_resolve_revision(context->hub, repo, revision, commit, &err);
    if (status == HUB_OK) {
        if (context->metadata_dir)
            repo_meta_save_commit(context->metadata_dir, repo, revision, commit);
        return 0;
    }
    if (status == HUB_ERR_OFFLINE) {
        if (context->metadata_dir && repo_meta_load_commit(context->metadata_dir, repo, revision, commit))
            return 0;
        if (hub_is_commit_sha(revision)) {   /* already pinned by name: its tree may be cached */
            memcpy(commit, revision, HUB_SHA_HEX_LEN + 1);
            return 0;
        }
        fs_log_limited(display_name, "offline: not cached: %s (HF_HUB_OFFLINE=1; open it once online to cache it)",
                       display_name);
        return ENOENT;
    }
    log_refusal(display_name, &err);
    /* The Hub answers 401 for a private repo (or any repo) to a caller without a token: a
     * token might open it, so it reads as "permission denied"; with a token it answers 404. */
    if (status == HUB_ERR_REPO_NOT_FOUND && err.http_status == 401)
        return EACCES;
    return remote_errno_of(status);
}

static int open_repo(fs_namespace *names, fs_node *org, const char *name, fs_node **out)
{
    const char *at = strchr(name, '@');
    size_t base_length = at ? (size_t)(at - name) : strlen(name);
    char revision[256] = "main";
    if (!is_hub_name(name, base_length) || (at && !decode_revision(at + 1, revision, sizeof revision)))
        return ENOENT;
    char id[2 * MAX_HUB_NAME + 2];
    snprintf(id, sizeof id, "%s/%.*s", org->name, (int)base_length, name);
    char display[sizeof id + sizeof revision + 16];
    snprintf(display, sizeof display, "%s%s@%s", org->repo_type == HUB_REPO_DATASET ? "datasets/" : "", id, revision);
    hub_repo hub = {.type = org->repo_type, .id = id};
    char commit[HUB_SHA_HEX_LEN + 1];
    int error = pin_revision(names, &hub, revision, display, commit);
    if (error)
        return error;
    fs_repo *repo = new_repo(org->repo_type, id, revision, commit);
    pthread_mutex_lock(&names->lock);
    fs_node *node = find_child(names, org->ino, name);   /* a concurrent lookup may have won */
    if (!node && repo)
        node = add_repo_node(names, org->ino, name, repo, false);
    else {
        free_repo(repo);
    }
    pthread_mutex_unlock(&names->lock);
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

/* Fetches the repo's tree: the Hub, or offline the listing remembered in the metadata. */
static int fetch_tree(fs_namespace *names, fs_repo *repo, hub_tree *tree, bool *from_metadata)
{
    fs_context *context = names->context;
    hub_error err = {0};
    *from_metadata = false;
    hub_status status = hub_list_tree(context->hub, &repo->hub, repo->commit, tree, &err);
    if (status == HUB_OK) {
        if (context->metadata_dir)
            repo_meta_save_tree(context->metadata_dir, &repo->hub, repo->commit, tree);
        return 0;
    }
    if (status == HUB_ERR_OFFLINE) {
        if (context->metadata_dir && repo_meta_load_tree(context->metadata_dir, &repo->hub, repo->commit, tree)) {
            *from_metadata = true;
            return 0;
        }
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

int namespace_lookup(fs_namespace *names, uint64_t parent, const char *name, fs_node **out)
{
    fs_node *dir;
    int error = directory_with_tree(names, parent, &dir);
    if (error)
        return error;
    pthread_mutex_lock(&names->lock);
    fs_node *node = find_child(names, parent, name);
    bool creates_org = !node && (dir->kind == NODE_ROOT || dir->kind == NODE_DATASETS_DIR) &&
                       is_hub_name(name, strlen(name));
    if (creates_org)
        node = add_node(names, parent, name, NODE_ORG, true);
    pthread_mutex_unlock(&names->lock);
    if (node) {
        *out = node;
        return 0;
    }
    if (creates_org)
        return ENOMEM;
    if (dir->kind == NODE_ORG)
        return open_repo(names, dir, name, out);
    return ENOENT;
}

int namespace_list(fs_namespace *names, uint64_t ino, fs_dir_entry **entries_out, size_t *count_out)
{
    fs_node *dir;
    int error = directory_with_tree(names, ino, &dir);
    if (error)
        return error;
    pthread_mutex_lock(&names->lock);
    child_list *list = &names->children[ino - 1];
    fs_dir_entry *entries = calloc(list->count ? list->count : 1, sizeof *entries);
    size_t count = 0;
    for (size_t i = 0; entries && i < list->count; i++) {
        fs_node *child = names->nodes[list->inos[i] - 1];
        if (child->kind == NODE_ORG && !child->visible)
            continue;
        entries[count].ino = child->ino;
        entries[count].is_directory = child->kind != NODE_FILE && child->kind != NODE_STATS_FILE;
        if (!(entries[count].name = strdup(child->name)))
            break;
        count++;
    }
    pthread_mutex_unlock(&names->lock);
    if (!entries)
        return ENOMEM;
    *entries_out = entries;
    *count_out = count;
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
    char commit[HUB_SHA_HEX_LEN + 1];
    int error = pin_revision(names, &old->hub, old->revision, old->display_name, commit);
    if (error)
        return error;
    memcpy(commit_out, commit, sizeof commit);
    pthread_mutex_lock(&names->lock);
    name_link *link = find_link(names, repo_node->parent, repo_node->name);
    fs_node *current = link ? names->nodes[link->ino - 1] : repo_node;
    if (strcmp(current->repo->commit, commit) != 0) {
        fs_repo *repo = new_repo(old->hub.type, old->id, old->revision, commit);
        if (repo && add_repo_node(names, repo_node->parent, repo_node->name, repo, true))
            *replaced = true;
        else {
            free_repo(repo);
            error = ENOMEM;
        }
    }
    pthread_mutex_unlock(&names->lock);
    if (*replaced)
        fs_log("%s: now pinned at commit %s (open files keep theirs)", old->display_name, commit);
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
    for (size_t i = 0; i < names->node_count; i++) {
        remote_file_free(names->nodes[i]->file);
        free(names->nodes[i]->name);
        free(names->nodes[i]);
    }
    for (size_t i = 0; i < names->node_capacity && names->children; i++)
        free(names->children[i].inos);
    for (size_t i = 0; i < names->repo_count; i++)
        free_repo(names->repos[i]);
    for (size_t i = 0; i < names->stats_count; i++) {
        free(names->stats[i].name);
        free(names->stats[i].stats);
    }
    free(names->stats);
    free(names->repos);
    free(names->nodes);
    free(names->children);
    pthread_mutex_destroy(&names->lock);
    free(names);
}
