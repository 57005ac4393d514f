/* ops_xattr.c — extended attributes: what a file is (commit, etag, bytes cached locally), the
 * refresh control: reading user.hubfs.refresh on a repo directory pins its revision again, on an
 * org directory lists its repos again (getxattr, because a read-only mount refuses every
 * setxattr in the kernel already), and on the mount's root what `hubfs umount` and tests ask:
 * the daemon's pid and how many inodes it holds. */
#include "ops.h"

#include "context.h"
#include "namespace.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define XATTR_COMMIT "user.hubfs.commit"
#define XATTR_ETAG "user.hubfs.etag"
#define XATTR_CACHED_BYTES "user.hubfs.cached_bytes"
#define XATTR_REFRESH "user.hubfs.refresh"
#define XATTR_PID "user.hubfs.pid"
#define XATTR_INODES "user.hubfs.inodes"

static void reply_value(fuse_req_t req, const char *value, size_t length, size_t size)
{
    if (size == 0)
        fuse_reply_xattr(req, length);
    else if (size < length)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, value, length);
}

static uint64_t cached_bytes_of(fs_context *context, const remote_file *file)
{
    if (!context->disk)
        return 0;
    disk_cache_blob_key key = {.etag = file->etag, .size = file->source.size,
                               .hf_repo_folder = file->repo->hf_folder};
    return disk_cache_cached_bytes(context->disk, &key);
}

static void refresh(fuse_req_t req, fs_context *context, fs_node *node, size_t size)
{
    char commit[HUB_SHA_HEX_LEN + 1];
    bool replaced = false;
    int error = namespace_refresh(context->names, node, commit, &replaced);
    if (error) {
        fuse_reply_err(req, error);
        return;
    }
    /* getxattr holds no directory lock, so the kernel's cached entry can be dropped here. */
    if (replaced && context->session)
        fuse_lowlevel_notify_inval_entry(context->session, node->parent, node->name, strlen(node->name));
    reply_value(req, commit, strlen(commit), size);
}

static void refresh_org(fuse_req_t req, fs_context *context, fs_node *node, size_t size)
{
    size_t repos = 0;
    int error = namespace_refresh_org(context->names, node, &repos);
    if (error) {
        fuse_reply_err(req, error);
        return;
    }
    char value[32];
    int n = snprintf(value, sizeof value, "%zu", repos);
    reply_value(req, value, (size_t)n, size);
}

static void reply_number(fuse_req_t req, uint64_t number, size_t size)
{
    char value[32];
    int n = snprintf(value, sizeof value, "%" PRIu64, number);
    reply_value(req, value, (size_t)n, size);
}

void hubfs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    fs_context *context = fuse_req_userdata(req);
    fs_node *node = namespace_get(context->names, ino);
    if (!node) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (strcmp(name, XATTR_REFRESH) == 0 && node->kind == NODE_REPO) {
        refresh(req, context, node, size);
    } else if (strcmp(name, XATTR_REFRESH) == 0 && node->kind == NODE_ORG) {
        refresh_org(req, context, node, size);
    } else if (strcmp(name, XATTR_PID) == 0 && node->kind == NODE_ROOT) {
        reply_number(req, (uint64_t)getpid(), size);
    } else if (strcmp(name, XATTR_INODES) == 0 && node->kind == NODE_ROOT) {
        reply_number(req, namespace_node_count(context->names), size);
    } else if (strcmp(name, XATTR_COMMIT) == 0 && node->repo) {
        reply_value(req, node->repo->commit, strlen(node->repo->commit), size);
    } else if (strcmp(name, XATTR_ETAG) == 0 && node->file) {
        reply_value(req, node->file->etag, strlen(node->file->etag), size);
    } else if (strcmp(name, XATTR_CACHED_BYTES) == 0 && node->file) {
        reply_number(req, cached_bytes_of(context, node->file), size);
    } else {
        fuse_reply_err(req, ENODATA);
    }
}

void hubfs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    fs_context *context = fuse_req_userdata(req);
    fs_node *node = namespace_get(context->names, ino);
    if (!node) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    static const char file_names[] = XATTR_COMMIT "\0" XATTR_ETAG "\0" XATTR_CACHED_BYTES "\0";
    static const char repo_names[] = XATTR_COMMIT "\0";
    if (node->file)
        reply_value(req, file_names, sizeof file_names - 1, size);
    else if (node->repo)
        reply_value(req, repo_names, sizeof repo_names - 1, size);
    else
        reply_value(req, "", 0, size);
}
