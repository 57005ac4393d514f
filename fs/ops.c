/* ops.c — the thin adapter to the kernel: the low-level FUSE operations, each a short
 * function over the namespace and the reader; the table at the bottom is the table of contents. */
#include "ops.h"

#include "fs.h"
#include "log.h"
#include "namespace.h"
#include "passthrough.h"
#include "reader.h"
#include "remote_file.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PINNED_TIMEOUT 86400.0   /* content under a commit never changes */
#define LISTING_TIMEOUT 1.0      /* the root and org listings grow as repos are looked up */
#define NEGATIVE_TIMEOUT 1.0
#define MAX_READ_SIZE (4u << 20)
#define PREFERRED_IO_SIZE (64u << 10)
#define KERNEL_READAHEAD (64u << 10)

static time_t mount_time;

static fs_context *context_of(fuse_req_t req) { return fuse_req_userdata(req); }

static bool is_directory_kind(fs_node_kind kind)
{
    return kind != NODE_FILE && kind != NODE_STATS_FILE;
}

static double attr_timeout_of(const fs_node *node)
{
    switch (node->kind) {
    case NODE_ROOT: case NODE_DATASETS_DIR: case NODE_ORG: case NODE_STATS_FILE: return LISTING_TIMEOUT;
    default: return PINNED_TIMEOUT;
    }
}

/* A repo's files carry its commit's date, the same on every machine and every mount (rsync and
 * make see nothing changed); the directories above them, whose listings grow, the mount's. */
static time_t time_of(const fs_node *node)
{
    return node->repo && node->repo->commit_date > 0 ? (time_t)node->repo->commit_date : mount_time;
}

static void fill_attr(const fs_node *node, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = node->ino;
    st->st_mode = is_directory_kind(node->kind) ? S_IFDIR | 0555 : S_IFREG | 0444;
    st->st_nlink = is_directory_kind(node->kind) ? 2 : 1;
    st->st_size = (off_t)node->size;
    /* What buffered readers size their reads by (Python's io, stdio): 8 MiB here made f.read(8)
     * an 8 MiB read; 64 KiB keeps a small read, with the kernel's read-ahead after it, within
     * 128 KiB. Large copies (cp, cat, dd) choose their own sizes. */
    st->st_blksize = PREFERRED_IO_SIZE;
    st->st_blocks = (blkcnt_t)((node->size + 511) / 512);
    st->st_uid = getuid();
    st->st_gid = getgid();
    st->st_atime = st->st_mtime = st->st_ctime = time_of(node);
}

static void hubfs_init(void *userdata, struct fuse_conn_info *conn)
{
    passthrough_ask_in_init(((fs_context *)userdata)->passthrough);
    mount_time = time(NULL);
    conn->max_background = 64;
    conn->congestion_threshold = 48;
    conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;   /* pinned content: the page cache stays valid */
    /* The kernel's read-ahead only sizes requests: the planner decides what the network fetches.
     * Its default window (128 KiB, read twice over past a small read, and around every mmap
     * touch) alone made a header read or a tensor touch cost 256 KiB. */
    conn->max_readahead = KERNEL_READAHEAD;
}

static void hubfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    fs_context *context = context_of(req);
    fs_node *node;
    int error = namespace_lookup(context->names, parent, name, &node);
    struct fuse_entry_param entry = {0};
    if (error == ENOENT) {
        entry.entry_timeout = NEGATIVE_TIMEOUT;   /* ino 0: a cached "no such entry" */
        fuse_reply_entry(req, &entry);
        return;
    }
    if (error) {
        fuse_reply_err(req, error);
        return;
    }
    entry.ino = node->ino;
    entry.attr_timeout = attr_timeout_of(node);
    entry.entry_timeout = node->kind == NODE_ORG ? LISTING_TIMEOUT : PINNED_TIMEOUT;
    fill_attr(node, &entry.attr);
    if (fuse_reply_entry(req, &entry) != 0)
        namespace_forget(context->names, node->ino, 1);   /* the kernel never got this reference */
}

static void hubfs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    namespace_forget(context_of(req)->names, ino, nlookup);
    fuse_reply_none(req);
}

static void hubfs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    for (size_t i = 0; i < count; i++)
        namespace_forget(context_of(req)->names, forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

static void hubfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    fs_node *node = namespace_get(context_of(req)->names, ino);
    if (!node) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct stat st;
    fill_attr(node, &st);
    fuse_reply_attr(req, &st, attr_timeout_of(node));
}

/* Every change is refused the same way, with one line saying so. */
static void refuse_write(fuse_req_t req, fuse_ino_t ino, const char *what)
{
    fs_node *node = namespace_get(context_of(req)->names, ino);
    const char *key = node && node->repo ? node->repo->display_name : "/";
    fs_log_limited(key, "%s refused under %s: hubfs is read-only (Hub repos change through commits)", what, key);
    fuse_reply_err(req, EROFS);
}

static void hubfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
    (void)attr; (void)to_set; (void)fi;
    refuse_write(req, ino, "setattr");
}

static void hubfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    (void)name; (void)mode; (void)rdev;
    refuse_write(req, parent, "mknod");
}

static void hubfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    (void)name; (void)mode;
    refuse_write(req, parent, "mkdir");
}

static void hubfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    (void)name;
    refuse_write(req, parent, "unlink");
}

static void hubfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    (void)name;
    refuse_write(req, parent, "rmdir");
}

static void hubfs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    (void)link; (void)name;
    refuse_write(req, parent, "symlink");
}

static void hubfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                         const char *newname, unsigned int flags)
{
    (void)name; (void)newparent; (void)newname; (void)flags;
    refuse_write(req, parent, "rename");
}

static void hubfs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    (void)newparent; (void)newname;
    refuse_write(req, ino, "link");
}

static void hubfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
    (void)name; (void)mode; (void)fi;
    refuse_write(req, parent, "create");
}

static void hubfs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                        struct fuse_file_info *fi)
{
    (void)buf; (void)size; (void)off; (void)fi;
    refuse_write(req, ino, "write");
}

static void hubfs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags)
{
    (void)name; (void)value; (void)size; (void)flags;
    refuse_write(req, ino, "setxattr");
}

static void hubfs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    (void)name;
    refuse_write(req, ino, "removexattr");
}

/* The stats file's handle holds the JSON rendered at open, so a reader sees one snapshot. */
typedef struct stats_snapshot {
    fs_handle link;
    char *text;
    size_t length;
} stats_snapshot;

typedef struct reader_handle {
    fs_handle link;
    fs_context *context;
    open_file *reader;
    passthrough_open mode;
} reader_handle;

void fs_handle_track(fs_context *context, fs_handle *handle, void (*close)(fs_handle *handle))
{
    handle->close = close;
    handle->prev = NULL;
    pthread_mutex_lock(&context->handles_lock);
    handle->next = context->handles;
    if (context->handles)
        context->handles->prev = handle;
    context->handles = handle;
    pthread_mutex_unlock(&context->handles_lock);
}

void fs_handle_close(fs_context *context, fs_handle *handle)
{
    pthread_mutex_lock(&context->handles_lock);
    if (handle->prev) handle->prev->next = handle->next;
    else context->handles = handle->next;
    if (handle->next)
        handle->next->prev = handle->prev;
    pthread_mutex_unlock(&context->handles_lock);
    handle->close(handle);
}

void fs_handle_close_all(fs_context *context)
{
    while (context->handles)
        fs_handle_close(context, context->handles);
}

static void close_stats_snapshot(fs_handle *handle)
{
    stats_snapshot *snapshot = (stats_snapshot *)handle;
    free(snapshot->text);
    free(snapshot);
}

static void close_file_handle(fs_handle *handle)
{
    reader_handle *file = (reader_handle *)handle;
    passthrough_release(file->context->passthrough, &file->mode);
    atomic_fetch_sub_explicit(&file->context->stats.files_open, 1, memory_order_relaxed);
    reader_close(file->reader);
    free(file);
}

static char *render_stats(fs_context *context)
{
    block_cache_counters memory;
    block_cache_get_counters(context->blocks, &memory);
    disk_cache_counters disk;
    if (context->disk)
        disk_cache_get_counters(context->disk, &disk);
    repo_stats_view *repos = NULL;
    size_t repo_count = 0;
    if (namespace_repo_stats(context->names, &repos, &repo_count))
        return NULL;
    fetcher_counters fetches = {0};
    if (context->fetch_pool)
        fetcher_get_counters(context->fetch_pool, &fetches);
    char *text = stats_render_json(&context->stats, &memory, &fetches, context->disk ? &disk : NULL, repos, repo_count);
    free(repos);
    return text;
}

static void open_stats(fuse_req_t req, struct fuse_file_info *fi)
{
    stats_snapshot *snapshot = calloc(1, sizeof *snapshot);
    if (!snapshot || !(snapshot->text = render_stats(context_of(req)))) {
        free(snapshot);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    snapshot->length = strlen(snapshot->text);
    fs_handle_track(context_of(req), &snapshot->link, close_stats_snapshot);
    fi->fh = (uint64_t)(uintptr_t)snapshot;
    fi->direct_io = 1;   /* its size isn't known to stat: the only file read around the page cache */
    if (fuse_reply_open(req, fi) != 0)
        fs_handle_close(context_of(req), &snapshot->link);
}

static void hubfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fs_context *context = context_of(req);
    fs_node *node = namespace_get(context->names, ino);
    if (!node) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
        refuse_write(req, ino, "open for writing");
        return;
    }
    if (node->kind == NODE_STATS_FILE) {
        open_stats(req, fi);
        return;
    }
    if (node->kind != NODE_FILE) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    reader_handle *handle = calloc(1, sizeof *handle);
    if (!handle) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    passthrough_choose(context->passthrough, ino, remote_file_open_whole, node->file, &handle->mode);
    bool kernel_reads = handle->mode.backing_id >= 0;
    int error = reader_open(context, node, !kernel_reads, &handle->reader);
    if (error) {
        passthrough_release(context->passthrough, &handle->mode);
        free(handle);
        fuse_reply_err(req, error);
        return;
    }
    handle->context = context;
    atomic_fetch_add_explicit(&context->stats.files_open, 1, memory_order_relaxed);
    if (kernel_reads)
        atomic_fetch_add_explicit(&context->stats.passthrough_opens, 1, memory_order_relaxed);
    fs_handle_track(context, &handle->link, close_file_handle);
    fi->fh = (uint64_t)(uintptr_t)handle;
    fi->keep_cache = 1;
    if (passthrough_reply_open(context->passthrough, req, fi, &handle->mode) != 0)
        fs_handle_close(context, &handle->link);   /* the open was interrupted: no release will come */
}

/* Replies from a copy owned by this thread: the kernel may hand the bytes to the reader,
 * which may close the handle (freeing its buffer on another thread) before writev returns. */
void reply_with_copy(fuse_req_t req, const void *data, size_t length)
{
    char *copy = malloc(length ? length : 1);
    if (!copy) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    memcpy(copy, data, length);
    fuse_reply_buf(req, copy, length);
    free(copy);
}

static void read_stats(fuse_req_t req, stats_snapshot *snapshot, size_t size, off_t off)
{
    if ((uint64_t)off >= snapshot->length) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    size_t n = snapshot->length - (size_t)off;
    reply_with_copy(req, snapshot->text + off, n < size ? n : size);
}

static void hubfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    fs_node *node = namespace_get(context_of(req)->names, ino);
    if (node && node->kind == NODE_STATS_FILE) {
        read_stats(req, (stats_snapshot *)(uintptr_t)fi->fh, size, off);
        return;
    }
    if (size > MAX_READ_SIZE)
        size = MAX_READ_SIZE;
    reader_read(((reader_handle *)(uintptr_t)fi->fh)->reader, req, (uint64_t)off, size);
}

/* HUBFS_IOC_WILLNEED (fs.h): the ranges a reader announces; everything else is not ours. */
static void hubfs_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg, struct fuse_file_info *fi,
                        unsigned flags, const void *in_buf, size_t in_bufsz, size_t out_bufsz)
{
    (void)arg; (void)out_bufsz;
    fs_node *node = namespace_get(context_of(req)->names, ino);
    if (cmd != HUBFS_IOC_WILLNEED || (flags & FUSE_IOCTL_DIR) || !node || node->kind != NODE_FILE || !fi->fh) {
        fuse_reply_err(req, ENOTTY);
        return;
    }
    const struct hubfs_willneed *hint = in_buf;
    if (in_bufsz < sizeof *hint || hint->count > HUBFS_WILLNEED_MAX_RANGES) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    reader_handle *handle = (reader_handle *)(uintptr_t)fi->fh;
    if (handle->mode.backing_id >= 0) {   /* the kernel reads it from a local file: nothing to fetch */
        fuse_reply_ioctl(req, 0, NULL, 0);
        return;
    }
    reader_hint ranges[HUBFS_WILLNEED_MAX_RANGES];
    for (uint32_t i = 0; i < hint->count; i++)
        ranges[i] = (reader_hint){.offset = hint->ranges[i].offset, .length = hint->ranges[i].length};
    int error = reader_hint_ranges(handle->reader, ranges, hint->count);
    if (error)
        fuse_reply_err(req, error);
    else
        fuse_reply_ioctl(req, 0, NULL, 0);
}

static void hubfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    if (fi->fh)
        fs_handle_close(context_of(req), (fs_handle *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops operations = {
    .init = hubfs_init,
    .lookup = hubfs_lookup,
    .forget = hubfs_forget,
    .forget_multi = hubfs_forget_multi,
    .getattr = hubfs_getattr,
    .setattr = hubfs_setattr,
    .mknod = hubfs_mknod,
    .mkdir = hubfs_mkdir,
    .unlink = hubfs_unlink,
    .rmdir = hubfs_rmdir,
    .symlink = hubfs_symlink,
    .rename = hubfs_rename,
    .link = hubfs_link,
    .create = hubfs_create,
    .open = hubfs_open,
    .read = hubfs_read,
    .ioctl = hubfs_ioctl,
    .write = hubfs_write,
    .release = hubfs_release,
    .opendir = hubfs_opendir,
    .readdir = hubfs_readdir,
    .releasedir = hubfs_releasedir,
    .statfs = hubfs_statfs,
    .setxattr = hubfs_setxattr,
    .getxattr = hubfs_getxattr,
    .listxattr = hubfs_listxattr,
    .removexattr = hubfs_removexattr,
};

const struct fuse_lowlevel_ops *hubfs_operations(void) { return &operations; }
