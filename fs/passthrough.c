/* passthrough.c — FUSE passthrough on libfuse 3.14: the session's I/O hooks that amend two
 * replies, the backing-file ioctls, and the count of opens per inode (passthrough.h). */
#include "passthrough.h"

#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

/* The kernel's side of the protocol (include/uapi/linux/fuse.h, 7.40), which neither libfuse
 * 3.14 nor Debian 12's kernel headers describe. */
enum {
    KERNEL_INIT_EXT = 1u << 30,          /* flags2 is read */
    KERNEL_PASSTHROUGH_FLAG2 = 1u << 5,  /* FUSE_PASSTHROUGH, bit 37 of the 64 flags */
    KERNEL_FOPEN_KEEP_CACHE = 1u << 1,
    KERNEL_FOPEN_PASSTHROUGH = 1u << 7,
    /* Filesystems a backing file's may lie on (ext4, xfs...) have depth 0; 1 leaves room for an
     * overlay on top of the mount. */
    BACKING_STACK_DEPTH = 1,
    INODE_BUCKETS = 1024,
};

typedef struct reply_header {
    uint32_t len;
    int32_t error;
    uint64_t unique;
} reply_header;

typedef struct init_reply {
    uint32_t major, minor, max_readahead, flags;
    uint16_t max_background, congestion_threshold;
    uint32_t max_write, time_gran;
    uint16_t max_pages, map_alignment;
    uint32_t flags2, max_stack_depth;
} init_reply;
_Static_assert(offsetof(init_reply, flags2) == 32 && offsetof(init_reply, max_stack_depth) == 36,
               "fuse_init_out layout");

typedef struct open_reply {
    uint64_t fh;
    uint32_t open_flags;
    int32_t backing_id;
} open_reply;

typedef struct backing_map {
    int32_t fd;
    uint32_t flags;
    uint64_t padding;
} backing_map;

#define KERNEL_DEV_IOC_BACKING_OPEN _IOW(229, 1, backing_map)
#define KERNEL_DEV_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)

/* The opens of one inode. */
typedef struct inode_modes {
    uint64_t ino;
    unsigned daemon_opens;       /* through the page cache and our reads */
    unsigned kernel_opens;       /* passthrough, all with backing_id */
    unsigned choosers;           /* opens deciding, the lock dropped while they open the blob */
    int backing_id;
    struct inode_modes *next;
} inode_modes;

struct passthrough {
    int device_fd;
    atomic_bool off;             /* the kernel refused, or we lost count: no more passthrough */
    pthread_mutex_t lock;
    inode_modes *buckets[INODE_BUCKETS];
};

/* What the reply this thread sends next must carry (set just before libfuse sends it). */
static _Thread_local struct {
    bool init;
    bool open;
    int backing_id;
} pending;

static void amend_reply(struct iovec *iov, int count)
{
    bool init = pending.init, open = pending.open;
    pending.init = pending.open = false;
    if (count < 2 || iov[0].iov_len != sizeof(reply_header))
        return;
    const reply_header *header = iov[0].iov_base;
    if (header->error != 0 || header->unique == 0)
        return;
    if (init && iov[1].iov_len >= sizeof(init_reply)) {
        init_reply *reply = iov[1].iov_base;
        if (reply->flags & KERNEL_INIT_EXT) {
            reply->flags2 |= KERNEL_PASSTHROUGH_FLAG2;
            reply->max_stack_depth = BACKING_STACK_DEPTH;
        }
    }
    if (open && iov[1].iov_len == sizeof(open_reply)) {
        open_reply *reply = iov[1].iov_base;
        reply->open_flags = (reply->open_flags & ~KERNEL_FOPEN_KEEP_CACHE) | KERNEL_FOPEN_PASSTHROUGH;
        reply->backing_id = pending.backing_id;
    }
}

static ssize_t hooked_writev(int fd, struct iovec *iov, int count, void *userdata)
{
    (void)userdata;
    if (pending.init || pending.open)
        amend_reply(iov, count);
    return writev(fd, iov, count);
}

static ssize_t hooked_read(int fd, void *buf, size_t len, void *userdata)
{
    (void)userdata;
    return read(fd, buf, len);
}

passthrough *passthrough_new(struct fuse_session *session)
{
    passthrough *pt = calloc(1, sizeof *pt);
    if (!pt)
        return NULL;
    pt->device_fd = fuse_session_fd(session);
    pthread_mutex_init(&pt->lock, NULL);
    const struct fuse_custom_io io = {.read = hooked_read, .writev = hooked_writev};
    if (fuse_session_custom_io(session, &io, pt->device_fd) != 0) {
        passthrough_free(pt);
        return NULL;
    }
    return pt;
}

void passthrough_free(passthrough *pt)
{
    if (!pt)
        return;
    for (size_t i = 0; i < INODE_BUCKETS; i++)
        while (pt->buckets[i]) {
            inode_modes *next = pt->buckets[i]->next;
            free(pt->buckets[i]);
            pt->buckets[i] = next;
        }
    pthread_mutex_destroy(&pt->lock);
    free(pt);
}

void passthrough_ask_in_init(passthrough *pt)
{
    if (pt)
        pending.init = true;
}

static void turn_off(passthrough *pt, const char *why)
{
    if (!atomic_exchange(&pt->off, true))
        fs_log("passthrough is off (%s): cached files are read through the daemon", why);
}

/* The backing id of a file descriptor, or -1. */
static int register_backing(passthrough *pt, int fd)
{
    backing_map map = {.fd = fd};
    int id = ioctl(pt->device_fd, KERNEL_DEV_IOC_BACKING_OPEN, &map);
    if (id >= 0)
        return id;
    int err = errno;
    if (err == EPERM)
        turn_off(pt, "the kernel did not enable it, or it needs CAP_SYS_ADMIN");
    else if (err == ENOTTY || err == EOPNOTSUPP || err == EINVAL)
        turn_off(pt, "this kernel has none");
    else if (err == ELOOP)
        turn_off(pt, "the disk cache lies on a stacked filesystem");
    return -1;
}

static void unregister_backing(passthrough *pt, int id)
{
    uint32_t backing_id = (uint32_t)id;
    if (ioctl(pt->device_fd, KERNEL_DEV_IOC_BACKING_CLOSE, &backing_id) != 0)
        fs_log_limited("passthrough-close", "closing passthrough backing file %d: %s", id, strerror(errno));
}

static inode_modes **bucket_of(passthrough *pt, uint64_t ino)
{
    return &pt->buckets[(ino * 0x9E3779B97F4A7C15ull) >> 54];
}

static inode_modes *find_modes(passthrough *pt, uint64_t ino, bool create)
{
    inode_modes **bucket = bucket_of(pt, ino);
    for (inode_modes *m = *bucket; m; m = m->next)
        if (m->ino == ino)
            return m;
    if (!create)
        return NULL;
    inode_modes *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->ino = ino;
    m->backing_id = -1;
    m->next = *bucket;
    *bucket = m;
    return m;
}

static void drop_if_unused(passthrough *pt, inode_modes *m)
{
    if (m->daemon_opens || m->kernel_opens || m->choosers)
        return;
    for (inode_modes **link = bucket_of(pt, m->ino); *link; link = &(*link)->next)
        if (*link == m) {
            *link = m->next;
            free(m);
            return;
        }
}

/* Opens the blob and registers it, the lock dropped meanwhile; -1 when it cannot be. */
static int backing_for(passthrough *pt, inode_modes *m, int (*open_whole)(void *arg), void *arg)
{
    m->choosers++;
    pthread_mutex_unlock(&pt->lock);
    int fd = open_whole(arg);
    int id = fd >= 0 ? register_backing(pt, fd) : -1;
    if (fd >= 0)
        close(fd);
    pthread_mutex_lock(&pt->lock);
    m->choosers--;
    if (id >= 0 && (m->kernel_opens > 0 || m->daemon_opens > 0)) {
        /* Another open decided meanwhile: its choice stands. */
        unregister_backing(pt, id);
        id = m->kernel_opens > 0 ? m->backing_id : -1;
    }
    return id;
}

void passthrough_choose(passthrough *pt, uint64_t ino, int (*open_whole)(void *arg), void *arg,
                        passthrough_open *out)
{
    out->ino = ino;
    out->backing_id = -1;
    if (!pt)
        return;
    pthread_mutex_lock(&pt->lock);
    inode_modes *m = find_modes(pt, ino, true);
    if (!m) {
        turn_off(pt, "out of memory to count opens");
        pthread_mutex_unlock(&pt->lock);
        return;
    }
    int id = -1;
    if (m->kernel_opens > 0)
        id = m->backing_id;
    else if (m->daemon_opens == 0 && !atomic_load(&pt->off))
        id = backing_for(pt, m, open_whole, arg);
    if (id >= 0) {
        m->backing_id = id;
        m->kernel_opens++;
    } else {
        m->daemon_opens++;
    }
    out->backing_id = id;
    pthread_mutex_unlock(&pt->lock);
}

int passthrough_reply_open(passthrough *pt, fuse_req_t req, struct fuse_file_info *fi,
                           const passthrough_open *open)
{
    if (!pt || open->backing_id < 0)
        return fuse_reply_open(req, fi);
    fi->keep_cache = 0;
    pending.open = true;
    pending.backing_id = open->backing_id;
    int result = fuse_reply_open(req, fi);
    pending.open = false;
    return result;
}

void passthrough_release(passthrough *pt, const passthrough_open *open)
{
    if (!pt)
        return;
    pthread_mutex_lock(&pt->lock);
    inode_modes *m = find_modes(pt, open->ino, false);
    if (m && open->backing_id >= 0 && m->kernel_opens > 0) {
        if (--m->kernel_opens == 0) {
            unregister_backing(pt, m->backing_id);
            m->backing_id = -1;
        }
    } else if (m && open->backing_id < 0 && m->daemon_opens > 0) {
        m->daemon_opens--;
    }
    if (m)
        drop_if_unused(pt, m);
    pthread_mutex_unlock(&pt->lock);
}
