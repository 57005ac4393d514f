/* fs.h — the hubfs FUSE filesystem: `hubfs mount MOUNTPOINT [options]`, and the one control a
 * reader of a mounted file has beyond read(2): telling the mount what it will read next. */
#ifndef HUBFS_FS_H
#define HUBFS_FS_H

#include <stdint.h>
#include <sys/ioctl.h>

/* Parses mount options, mounts and runs the FUSE loop until unmounted or signalled.
 * argv[0] is "mount" (or the mount helper's name). Returns a process exit status. */
int fs_mount_command(int argc, char **argv);

/* HUBFS_IOC_WILLNEED — ioctl(fd, HUBFS_IOC_WILLNEED, &hint) on a file open on a hubfs mount
 * (read-only is fine): the byte ranges the caller will read soon. The mount fetches them in the
 * background with full parallelism, nearby ranges coalesced, within its memory budget and into
 * its persistent cache, so the reads that follow find their bytes present. Each call appends
 * (up to HUBFS_WILLNEED_MAX_RANGES ranges per call; call again for more). Anywhere else the
 * ioctl fails (ENOTTY, EINVAL...) and a caller should just ignore that. Returns 0. */
#define HUBFS_WILLNEED_MAX_RANGES 1000

struct hubfs_willneed_range {
    uint64_t offset;
    uint64_t length;
};

struct hubfs_willneed {
    uint32_t count;              /* ranges used */
    uint32_t reserved;           /* 0 */
    struct hubfs_willneed_range ranges[HUBFS_WILLNEED_MAX_RANGES];
};

#define HUBFS_IOC_WILLNEED _IOW('h', 1, struct hubfs_willneed)

#endif
