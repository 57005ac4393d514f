/* hub_source.c — a Hub repo at a pinned commit as a loader source: the revision is pinned once,
 * the tree listed once (files and sizes, and the etags that key the persistent cache), both
 * remembered beside the cache for offline use as a mount does. */
#include "hub_source.h"

#include "repo_meta.h"
#include "hub_url.h"
#include "sources.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads in flight and their size: a CDN connection carries ~50 MB/s after a round trip of
 * tens of ms, so many 2 MiB ranges at once (what a mount's fetch threads do) fill a link. */
#define HUB_READER_THREADS 32
#define HUB_READ_CHUNK_BYTES (2u << 20)

int glue_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int compare_entries(const void *a, const void *b)
{
    return strcmp(((const hub_source_entry *)a)->name, ((const hub_source_entry *)b)->name);
}

static const hub_source_entry *find_file(const hub_source *s, const char *name)
{
    hub_source_entry key = {.name = name};
    return bsearch(&key, s->files, s->file_count, sizeof *s->files, compare_entries);
}

static int hub_contains(loader_source *source, const char *name, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    return find_file((hub_source *)source, name) != NULL;
}

static int hub_list(loader_source *source, void (*each)(void *ctx, const char *name, uint64_t size),
                    void *ctx, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    const hub_source *s = (const hub_source *)source;
    for (size_t i = 0; i < s->file_count; i++)
        if (!strchr(s->files[i].name, '/')) each(ctx, s->files[i].name, s->files[i].entry->size);
    return 0;
}

static int hub_open(loader_source *source, const char *name, loader_file **out, char *err,
                    size_t errlen)
{
    hub_source *s = (hub_source *)source;
    const hub_source_entry *found = find_file(s, name);
    if (!found)
        return glue_fail(err, errlen, "%s/%s: no such file in the repo at commit %.12s",
                         s->location, name, s->commit);
    return hub_source_file_open(s, found->entry, out, err, errlen);
}

static void hub_destroy(loader_source *source)
{
    hub_source *s = (hub_source *)source;
    if (!s) return;
    free(s->files);
    hub_tree_free(&s->tree);
    hub_client_free(s->client);
    blob_cache_close(s->cache);
    free(s->hf_repo_folder);
    free(s->repo_id);
    free(s->location);
    free(s);
}

static const loader_source_ops hub_source_ops = {
    .contains = hub_contains,
    .list = hub_list,
    .open = hub_open,
    .destroy = hub_destroy,
};

static int start_client(hub_source *s, char *err, size_t errlen)
{
    hub_config config;
    hub_error e = {0};
    if (hub_config_from_env(&config, &e) != HUB_OK)
        return glue_fail(err, errlen, "configuration: %s", e.message);
    if (config.max_connections < HUB_READER_THREADS) config.max_connections = HUB_READER_THREADS;
    hub_status status = hub_client_new(&config, &s->client, &e);
    hub_config_clear(&config);
    if (status != HUB_OK) return glue_fail(err, errlen, "cannot start the Hub client: %s", e.message);
    return 0;
}

static int offline_miss(const char *what, const hub_url *u, char *err, size_t errlen)
{
    return glue_fail(err, errlen, "%s: %s is not cached, and HF_HUB_OFFLINE=1 forbids asking the "
                     "Hub: open it once online (or unset HF_HUB_OFFLINE)", u->repo_text, what);
}

/* The Hub's answer, remembered for offline use; offline, the remembered one. */
static int pin_revision(hub_source *s, const hub_url *u, char *err, size_t errlen)
{
    const char *metadata = blob_cache_metadata_dir(s->cache);
    hub_error e = {0};
    hub_status status = hub_resolve_revision(s->client, &s->repo, u->revision, s->commit, &e);
    if (status == HUB_OK) {
        if (metadata) repo_meta_save_commit(metadata, &s->repo, u->revision, s->commit);
        return 0;
    }
    if (status != HUB_ERR_OFFLINE) return glue_fail(err, errlen, "%s: %s", u->repo_text, e.message);
    if (metadata && repo_meta_load_commit(metadata, &s->repo, u->revision, s->commit)) return 0;
    if (!hub_is_commit_sha(u->revision)) return offline_miss("its revision", u, err, errlen);
    memcpy(s->commit, u->revision, sizeof s->commit); /* pinned by name: its tree may be cached */
    return 0;
}

/* The commit's file list: remembered in the metadata (a commit's tree never changes, so a later
 * load asks the Hub only for the revision), else the Hub's. */
static int list_tree(hub_source *s, const hub_url *u, char *err, size_t errlen)
{
    const char *metadata = blob_cache_metadata_dir(s->cache);
    if (metadata && repo_meta_load_tree(metadata, &s->repo, s->commit, &s->tree)) return 0;
    hub_error e = {0};
    hub_status status = hub_list_tree(s->client, &s->repo, s->commit, &s->tree, &e);
    if (status == HUB_OK) {
        if (metadata) repo_meta_save_tree(metadata, &s->repo, s->commit, &s->tree);
        return 0;
    }
    if (status != HUB_ERR_OFFLINE) return glue_fail(err, errlen, "%s: %s", u->repo_text, e.message);
    return offline_miss("its file list", u, err, errlen);
}

static const hub_tree_entry *tree_entry(const hub_tree *tree, const char *path)
{
    for (size_t i = 0; i < tree->count; i++)
        if (strcmp(tree->entries[i].path, path) == 0) return &tree->entries[i];
    return NULL;
}

/* The source's root directory from the URL's path, and the file the URL names, if any. */
static int choose_root(hub_source *s, const hub_url *u, char **root, char **file, char *err,
                       size_t errlen)
{
    const hub_tree_entry *named = u->path[0] ? tree_entry(&s->tree, u->path) : NULL;
    if (u->path[0] && !named)
        return glue_fail(err, errlen, "%s: no file or directory '%s' in the repo at commit %.12s",
                         u->repo_text, u->path, s->commit);
    const char *slash = strrchr(u->path, '/');
    if (!named || named->is_directory) {
        *root = strdup(u->path);
    } else {
        *root = slash ? strndup(u->path, (size_t)(slash - u->path)) : strdup("");
        *file = strdup(slash ? slash + 1 : u->path);
        if (!*file) return glue_fail(err, errlen, "out of memory");
    }
    return *root ? 0 : glue_fail(err, errlen, "out of memory");
}

/* The files under root, named relative to it and sorted for lookups. */
static int index_files(hub_source *s, const char *root, char *err, size_t errlen)
{
    size_t root_len = strlen(root);
    s->files = calloc(s->tree.count ? s->tree.count : 1, sizeof *s->files);
    if (!s->files) return glue_fail(err, errlen, "out of memory");
    for (size_t i = 0; i < s->tree.count; i++) {
        const hub_tree_entry *e = &s->tree.entries[i];
        if (e->is_directory) continue;
        if (root_len && (strncmp(e->path, root, root_len) != 0 || e->path[root_len] != '/')) continue;
        s->files[s->file_count++] = (hub_source_entry){e->path + (root_len ? root_len + 1 : 0), e};
    }
    qsort(s->files, s->file_count, sizeof *s->files, compare_entries);
    return 0;
}

static char *hf_repo_folder(const hub_repo *repo)
{
    const char *kind = repo->type == HUB_REPO_DATASET ? "datasets" : repo->type == HUB_REPO_SPACE ? "spaces" : "models";
    const char *slash = strchr(repo->id, '/');
    char *folder = NULL;
    if (slash && asprintf(&folder, "%s--%.*s--%s", kind, (int)(slash - repo->id), repo->id, slash + 1) < 0)
        folder = NULL;
    return folder;
}

static int open_repo(hub_source *s, const hub_url *u, const glue_options *o, char **file,
                     char *notice, char *err, size_t errlen)
{
    char *root = NULL;
    s->repo_id = strdup(u->repo_id);
    s->repo = (hub_repo){.type = u->type, .id = s->repo_id};
    if (!s->repo_id || !(s->hf_repo_folder = hf_repo_folder(&s->repo)))
        return glue_fail(err, errlen, "out of memory");
    if (start_client(s, err, errlen) != 0 ||
        blob_cache_open(o->cache_dir, !o->no_disk_cache, &s->cache, notice, err, errlen) != 0 ||
        pin_revision(s, u, err, errlen) != 0 || list_tree(s, u, err, errlen) != 0 ||
        choose_root(s, u, &root, file, err, errlen) != 0 || index_files(s, root, err, errlen) != 0) {
        free(root);
        return -1;
    }
    int n = asprintf(&s->location, "%s%s%s", u->repo_text, root[0] ? "/" : "", root);
    free(root);
    if (n < 0) {
        s->location = NULL;
        return glue_fail(err, errlen, "out of memory");
    }
    s->base.location = s->location;
    return 0;
}

int glue_hub_source_open(const char *url, const glue_options *options, loader_source **out,
                         char **file, char *notice, char *err, size_t errlen)
{
    static const glue_options defaults = {0};
    *out = NULL;
    *file = NULL;
    notice[0] = '\0';
    hub_url u;
    if (hub_url_parse(url, &u, err, errlen) != 0) return -1;
    hub_source *s = calloc(1, sizeof *s);
    int rc = s ? 0 : glue_fail(err, errlen, "out of memory");
    if (s) {
        s->base = (loader_source){.ops = &hub_source_ops, .location = "",
                                  .reader_threads = HUB_READER_THREADS,
                                  .chunk_bytes = HUB_READ_CHUNK_BYTES};
        rc = open_repo(s, &u, options ? options : &defaults, file, notice, err, errlen);
    }
    hub_url_clear(&u);
    if (rc != 0) {
        hub_destroy(s ? &s->base : NULL);
        free(*file);
        *file = NULL;
        return -1;
    }
    *out = &s->base;
    return 0;
}
