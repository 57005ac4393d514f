/* ops.h — the low-level FUSE operations of hubfs (ops.c: files; ops_dir.c: directories;
 * ops_xattr.c: extended attributes and the refresh control). The session's userdata is the
 * fs_context. */
#ifndef HUBFS_OPS_H
#define HUBFS_OPS_H

#include <fuse_lowlevel.h>

const struct fuse_lowlevel_ops *hubfs_operations(void);

void hubfs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void hubfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);

/* fuse_reply_buf from a private copy of data (see ops.c for why). */
void reply_with_copy(fuse_req_t req, const void *data, size_t length);
void hubfs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void hubfs_statfs(fuse_req_t req, fuse_ino_t ino);
void hubfs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void hubfs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);

#endif
