/* ops_dir.c — directory listings: a snapshot taken at opendir, served by offset. */
#include "ops.h"

#include "context.h"
#include "namespace.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

typedef struct dir_snapshot {
    fs_handle link;
    char *buffer;                /* fuse_add_direntry records, ".", ".." included */
    size_t length;
} dir_snapshot;

static bool append_entry(fuse_req_t req, dir_snapshot *snapshot, size_t *capacity, const char *name,
                         uint64_t ino, bool is_directory)
{
    struct stat st = {.st_ino = ino, .st_mode = is_directory ? S_IFDIR : S_IFREG};
    size_t needed = fuse_add_direntry(req, NULL, 0, name, NULL, 0);
    if (snapshot->length + needed > *capacity) {
        size_t wanted = (*capacity ? *capacity * 2 : 4096) + needed;
        char *grown = realloc(snapshot->buffer, wanted);
        if (!grown)
            return false;
        snapshot->buffer = grown;
        *capacity = wanted;
    }
    fuse_add_direntry(req, snapshot->buffer + snapshot->length, needed, name, &st,
                      (off_t)(snapshot->length + needed));
    snapshot->length += needed;
    return true;
}

static void close_dir_snapshot(fs_handle *handle)
{
    dir_snapshot *snapshot = (dir_snapshot *)handle;
    free(snapshot->buffer);
    free(snapshot);
}

void hubfs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fs_context *context = fuse_req_userdata(req);
    fs_dir_entry *entries;
    size_t count;
    int error = namespace_list(context->names, ino, &entries, &count);
    if (error) {
        fuse_reply_err(req, error);
        return;
    }
    fs_node *node = namespace_get(context->names, ino);
    dir_snapshot *snapshot = calloc(1, sizeof *snapshot);
    size_t capacity = 0;
    bool ok = snapshot && append_entry(req, snapshot, &capacity, ".", ino, true) &&
              append_entry(req, snapshot, &capacity, "..", node->parent ? node->parent : ino, true);
    for (size_t i = 0; ok && i < count; i++)
        ok = append_entry(req, snapshot, &capacity, entries[i].name, entries[i].ino, entries[i].is_directory);
    namespace_free_listing(entries, count);
    if (!ok) {
        if (snapshot)
            free(snapshot->buffer);
        free(snapshot);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    fs_handle_track(context, &snapshot->link, close_dir_snapshot);
    fi->fh = (uint64_t)(uintptr_t)snapshot;
    fi->cache_readdir = node->kind != NODE_ROOT && node->kind != NODE_ORG && node->kind != NODE_DATASETS_DIR;
    fi->keep_cache = fi->cache_readdir;
    if (fuse_reply_open(req, fi) != 0)
        fs_handle_close(context, &snapshot->link);
}

void hubfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)ino;
    dir_snapshot *snapshot = (dir_snapshot *)(uintptr_t)fi->fh;
    if (off < 0 || (size_t)off >= snapshot->length) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    /* Hand out whole records only: each is a 24-byte head (ino, off, namelen, type) and the
     * name, padded to 8 bytes. */
    size_t start = (size_t)off, end = start;
    while (end + 24 <= snapshot->length) {
        uint32_t name_length;
        memcpy(&name_length, snapshot->buffer + end + 16, sizeof name_length);
        size_t record = (24 + (size_t)name_length + 7) & ~(size_t)7;
        if (end + record > snapshot->length || end + record - start > size)
            break;
        end += record;
    }
    reply_with_copy(req, snapshot->buffer + start, end - start);
}

void hubfs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    fs_handle_close(fuse_req_userdata(req), (fs_handle *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

#define STATFS_UNIT 4096u

/* The persistent cache's room: its cap, or what the disk under it still has when that is less. */
static uint64_t cache_room(const fs_context *context, uint64_t used)
{
    uint64_t cap = context->options.cache_size;
    uint64_t room = cap > used ? cap - used : 0;
    struct statvfs disk;
    if (context->metadata_dir && statvfs(context->metadata_dir, &disk) == 0) {
        uint64_t disk_free = (uint64_t)disk.f_bavail * disk.f_frsize;
        if (!cap || disk_free < room)
            room = disk_free;
    }
    return room;
}

/* df shows the persistent cache: Size its cap, Used what it holds, Avail what it can still take
 * (nothing without one). The Hub's bytes are not local, so they count nowhere here. */
void hubfs_statfs(fuse_req_t req, fuse_ino_t ino)
{
    (void)ino;
    fs_context *context = fuse_req_userdata(req);
    struct statvfs st = {0};
    st.f_bsize = context->options.block_size;
    st.f_frsize = STATFS_UNIT;
    st.f_namemax = 255;
    st.f_files = namespace_node_count(context->names);
    if (context->disk) {
        disk_cache_counters counters;
        disk_cache_get_counters(context->disk, &counters);
        uint64_t used = counters.bytes_stored, room = cache_room(context, used);
        uint64_t size = context->options.cache_size ? context->options.cache_size : used + room;
        st.f_blocks = (fsblkcnt_t)(size / STATFS_UNIT);
        st.f_bfree = st.f_bavail = (fsblkcnt_t)(room / STATFS_UNIT);
        if (st.f_bfree > st.f_blocks)
            st.f_bfree = st.f_bavail = st.f_blocks;
    }
    fuse_reply_statfs(req, &st);
}
