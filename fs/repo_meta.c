/* repo_meta.c — revision→commit files, commit dates and tree listings as JSON under
 * DIR/<repo>/. */
#include "repo_meta.h"

#include "disk_cache_path.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_TREE_JSON (256u << 20)

static const char *type_name(hub_repo_type type)
{
    return type == HUB_REPO_DATASET ? "datasets" : type == HUB_REPO_SPACE ? "spaces" : "models";
}

/* DIR/models--org--name; the repo id has exactly one '/' (validated upstream). */
static bool repo_path(char *out, size_t size, const char *dir, const hub_repo *repo)
{
    const char *slash = strchr(repo->id, '/');
    if (!slash)
        return false;
    int n = snprintf(out, size, "%s/%s--%.*s--%s", dir, type_name(repo->type), (int)(slash - repo->id),
                     repo->id, slash + 1);
    return n > 0 && (size_t)n < size;
}

static void hex_encode(char *out, size_t size, const char *text)
{
    size_t n = 0;
    for (; *text && n + 3 < size; text++, n += 2)
        snprintf(out + n, 3, "%02x", (unsigned char)*text);
    out[n] = '\0';
}

/* DIR/models--org--name, opened as a directory nobody else controls (disk_cache_path.h): the
 * daemon writes and reads these files by name, often as root. -1 with errno when refused. */
static int open_repo_dir(const char *dir, const hub_repo *repo, bool create)
{
    char folder[PATH_MAX], reason[512];
    if (!repo_path(folder, sizeof folder, dir, repo)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return cache_path_open_dir(folder, (create ? CACHE_PATH_CREATE : 0) | CACHE_PATH_OWN, reason, sizeof reason);
}

static int write_atomically(const char *dir, const hub_repo *repo, const char *leaf, const char *data, size_t len)
{
    int dir_fd = open_repo_dir(dir, repo, true);
    if (dir_fd < 0)
        return errno;
    /* A name unique per process and call, so concurrent lookups never share a temp file;
     * created 0600 whatever the umask: the cache is private to its user. */
    static atomic_uint temp_counter;
    char temp[NAME_MAX + 1];
    snprintf(temp, sizeof temp, "%.200s.%d.%u.tmp", leaf, (int)getpid(), atomic_fetch_add(&temp_counter, 1));
    int fd = openat(dir_fd, temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    FILE *out = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!out) {
        int error = errno;
        if (fd >= 0) {
            close(fd);
            unlinkat(dir_fd, temp, 0);
        }
        close(dir_fd);
        return error;
    }
    bool ok = fwrite(data, 1, len, out) == len;
    ok = (fflush(out) == 0) && ok;
    ok = (fsync(fileno(out)) == 0) && ok;
    ok = (fclose(out) == 0) && ok;
    if (!ok || renameat(dir_fd, temp, dir_fd, leaf) != 0) {
        unlinkat(dir_fd, temp, 0);
        close(dir_fd);
        return EIO;
    }
    close(dir_fd);
    return 0;
}

/* Reads DIR/<repo>/leaf whole, up to max bytes, into a NUL-terminated buffer; never through a
 * symlink. */
static char *read_whole(const char *dir, const hub_repo *repo, const char *leaf, size_t max, size_t *len_out)
{
    int dir_fd = open_repo_dir(dir, repo, false);
    int fd = dir_fd >= 0 ? openat(dir_fd, leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) : -1;
    if (dir_fd >= 0)
        close(dir_fd);
    FILE *in = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!in) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    char *data = NULL;
    struct stat st;
    if (fstat(fileno(in), &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size <= max) {
        size_t len = (size_t)st.st_size;
        data = malloc(len + 1);
        if (data && fread(data, 1, len, in) == len) {
            data[len] = '\0';
            *len_out = len;
        } else {
            free(data);
            data = NULL;
        }
    }
    fclose(in);
    return data;
}

/* Every remount confirms the same revision→commit and commit date: rewriting them would cost
 * an fsync on the first open's path each time. */
static int save_unless_same(const char *dir, const hub_repo *repo, const char *leaf, const char *data, size_t len)
{
    size_t stored_len = 0;
    char *stored = read_whole(dir, repo, leaf, len, &stored_len);
    bool same = stored && stored_len == len && memcmp(stored, data, len) == 0;
    free(stored);
    return same ? 0 : write_atomically(dir, repo, leaf, data, len);
}

int repo_meta_save_commit(const char *dir, const hub_repo *repo, const char *revision, const char *commit)
{
    char leaf[600] = "rev-";
    hex_encode(leaf + 4, sizeof leaf - 4, revision);
    return save_unless_same(dir, repo, leaf, commit, strlen(commit));
}

bool repo_meta_load_commit(const char *dir, const hub_repo *repo, const char *revision,
                           char commit_out[HUB_SHA_HEX_LEN + 1])
{
    char leaf[600] = "rev-";
    hex_encode(leaf + 4, sizeof leaf - 4, revision);
    size_t len = 0;
    char *data = read_whole(dir, repo, leaf, 64, &len);
    bool ok = data && hub_is_commit_sha(data);
    if (ok)
        memcpy(commit_out, data, HUB_SHA_HEX_LEN + 1);
    free(data);
    return ok;
}

int repo_meta_save_date(const char *dir, const hub_repo *repo, const char *commit, int64_t date)
{
    char leaf[64], text[32];
    snprintf(leaf, sizeof leaf, "date-%.40s", commit);
    int n = snprintf(text, sizeof text, "%" PRId64 "\n", date);
    return save_unless_same(dir, repo, leaf, text, (size_t)n);
}

bool repo_meta_load_date(const char *dir, const hub_repo *repo, const char *commit, int64_t *date_out)
{
    char leaf[64];
    snprintf(leaf, sizeof leaf, "date-%.40s", commit);
    size_t len = 0;
    char *text = read_whole(dir, repo, leaf, 32, &len);
    char *end = NULL;
    long long date = text ? strtoll(text, &end, 10) : 0;
    bool ok = text && end != text && (*end == '\n' || *end == '\0') && date > 0;
    if (ok)
        *date_out = date;
    free(text);
    return ok;
}

/* The NAME of a folder "<kind>--AUTHOR--NAME" (Hub names never hold "--"), or NULL. */
static const char *name_in_folder(const char *folder, const char *kind, const char *author)
{
    size_t kind_len = strlen(kind), author_len = strlen(author);
    if (strncmp(folder, kind, kind_len) != 0 || strncmp(folder + kind_len, "--", 2) != 0)
        return NULL;
    const char *org = folder + kind_len + 2;
    if (strncasecmp(org, author, author_len) != 0 || strncmp(org + author_len, "--", 2) != 0)
        return NULL;
    const char *name = org + author_len + 2;
    return *name && !strstr(name, "--") && strlen(name) <= 96 ? name : NULL;
}

int repo_meta_list_repos(const char *dir, hub_repo_type type, const char *author, size_t max_names,
                         hub_repo_list *out)
{
    memset(out, 0, sizeof *out);
    char reason[512];
    int fd = cache_path_open_dir(dir, CACHE_PATH_OWN, reason, sizeof reason);
    DIR *listing = fd >= 0 ? fdopendir(fd) : NULL;
    if (!listing) {
        int error = errno;
        if (fd >= 0)
            close(fd);
        return error;
    }
    int error = 0;
    for (struct dirent *entry; !error && out->count < max_names && (entry = readdir(listing));) {
        const char *name = name_in_folder(entry->d_name, type_name(type), author);
        if (name && !hub_repo_list_add(out, name))
            error = ENOMEM;
    }
    closedir(listing);
    if (error)
        hub_repo_list_free(out);
    return error;
}

static cJSON *entry_to_json(const hub_tree_entry *entry)
{
    cJSON *item = cJSON_CreateObject();
    if (!item)
        return NULL;
    cJSON_AddStringToObject(item, "path", entry->path);
    cJSON_AddBoolToObject(item, "dir", entry->is_directory);
    cJSON_AddNumberToObject(item, "size", (double)entry->size);
    cJSON_AddStringToObject(item, "oid", entry->oid);
    if (entry->is_lfs)
        cJSON_AddStringToObject(item, "lfs", entry->lfs_sha256);
    return item;
}

/* What the listing left out, kept with its entries: a remount says so as the first mount did. */
static bool add_listing_gaps(cJSON *object, const hub_tree *tree)
{
    if (tree->skipped && (!cJSON_AddNumberToObject(object, "skipped", (double)tree->skipped) ||
                          !cJSON_AddStringToObject(object, "skipped_shown", tree->skipped_shown)))
        return false;
    return !tree->truncated[0] || cJSON_AddStringToObject(object, "truncated", tree->truncated);
}

int repo_meta_save_tree(const char *dir, const hub_repo *repo, const char *commit, const hub_tree *tree)
{
    cJSON *object = cJSON_CreateObject();
    cJSON *array = object ? cJSON_AddArrayToObject(object, "entries") : NULL;
    bool ok = array && add_listing_gaps(object, tree);
    for (size_t i = 0; ok && i < tree->count; i++) {
        cJSON *item = entry_to_json(&tree->entries[i]);
        ok = item && cJSON_AddItemToArray(array, item);
    }
    char *text = ok ? cJSON_PrintUnformatted(object) : NULL;
    cJSON_Delete(object);
    if (!text)
        return ENOMEM;
    char leaf[64];
    snprintf(leaf, sizeof leaf, "tree-%.40s.json", commit);
    int error = write_atomically(dir, repo, leaf, text, strlen(text));
    free(text);
    return error;
}

/* Same rules as the Hub client: no empty, "." or ".." component, no leading '/'. */
static bool is_safe_relative_path(const char *path)
{
    if (!*path || *path == '/')
        return false;
    const char *part = path;
    for (;;) {
        const char *slash = strchr(part, '/');
        size_t n = slash ? (size_t)(slash - part) : strlen(part);
        if (n == 0 || (n == 1 && part[0] == '.') || (n == 2 && part[0] == '.' && part[1] == '.'))
            return false;
        if (!slash)
            return true;
        part = slash + 1;
    }
}

static bool entry_from_json(const cJSON *item, hub_tree_entry *entry)
{
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(item, "path");
    const cJSON *size = cJSON_GetObjectItemCaseSensitive(item, "size");
    const cJSON *oid = cJSON_GetObjectItemCaseSensitive(item, "oid");
    const cJSON *lfs = cJSON_GetObjectItemCaseSensitive(item, "lfs");
    if (!cJSON_IsString(path) || !is_safe_relative_path(path->valuestring) || !cJSON_IsNumber(size) ||
        size->valuedouble < 0 || size->valuedouble > 9.0e18 || !cJSON_IsString(oid) ||
        strlen(oid->valuestring) > HUB_SHA_HEX_LEN || (lfs && (!cJSON_IsString(lfs) || strlen(lfs->valuestring) > 64)))
        return false;
    entry->path = strdup(path->valuestring);
    entry->is_directory = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(item, "dir"));
    entry->size = (uint64_t)size->valuedouble;
    snprintf(entry->oid, sizeof entry->oid, "%s", oid->valuestring);
    entry->is_lfs = lfs != NULL;
    if (lfs)
        snprintf(entry->lfs_sha256, sizeof entry->lfs_sha256, "%s", lfs->valuestring);
    return entry->path != NULL;
}

/* A string of the file into buf, printable ASCII only (it goes to the log as it is). */
static void copy_printable(char *buf, size_t size, const cJSON *item)
{
    const char *from = cJSON_IsString(item) ? item->valuestring : "";
    size_t n = 0;
    for (; from[n] && n + 1 < size; n++)
        buf[n] = from[n] >= 0x20 && from[n] < 0x7f ? from[n] : '?';
    buf[n] = '\0';
}

static void load_listing_gaps(const cJSON *object, hub_tree *out)
{
    const cJSON *skipped = cJSON_GetObjectItemCaseSensitive(object, "skipped");
    if (cJSON_IsNumber(skipped) && skipped->valuedouble >= 1 && skipped->valuedouble < 1e15) {
        out->skipped = (size_t)skipped->valuedouble;
        copy_printable(out->skipped_shown, sizeof out->skipped_shown,
                       cJSON_GetObjectItemCaseSensitive(object, "skipped_shown"));
    }
    copy_printable(out->truncated, sizeof out->truncated,
                   cJSON_GetObjectItemCaseSensitive(object, "truncated"));
}

bool repo_meta_load_tree(const char *dir, const hub_repo *repo, const char *commit, hub_tree *out)
{
    char leaf[64];
    snprintf(leaf, sizeof leaf, "tree-%.40s.json", commit);
    size_t len = 0;
    char *text = read_whole(dir, repo, leaf, MAX_TREE_JSON, &len);
    cJSON *root = text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    memset(out, 0, sizeof *out);
    if (cJSON_IsObject(root))
        load_listing_gaps(root, out);
    /* A bare array: a cache written before the gaps were kept. */
    const cJSON *array = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "entries") : root;
    bool ok = cJSON_IsArray(array);
    size_t count = ok ? (size_t)cJSON_GetArraySize(array) : 0;
    out->entries = calloc(count ? count : 1, sizeof *out->entries);
    out->count = 0;
    ok = ok && out->entries;
    const cJSON *item;
    cJSON_ArrayForEach(item, array) {
        if (!ok || !entry_from_json(item, &out->entries[out->count])) {
            ok = false;
            break;
        }
        out->count++;
    }
    cJSON_Delete(root);
    if (!ok) {
        repo_meta_tree_free(out);
        memset(out, 0, sizeof *out);
    }
    return ok;
}

void repo_meta_tree_free(hub_tree *tree)
{
    for (size_t i = 0; tree->entries && i < tree->count; i++)
        free(tree->entries[i].path);
    free(tree->entries);
    tree->entries = NULL;
    tree->count = 0;
}
