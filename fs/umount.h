/* umount.h — `hubfs umount MOUNTPOINT [--timeout SECONDS] [--no-wait]`: detaches a hubfs mount
 * even while files on it are open or mapped (a model loaded by transformers keeps its shards
 * mapped until the process exits, so a plain unmount fails with "Device or resource busy"),
 * then waits for the daemon to exit, saying which processes still hold files of it. */
#ifndef HUBFS_UMOUNT_H
#define HUBFS_UMOUNT_H

#include <stdbool.h>

/* argv[0] is "umount". Returns a process exit status: 0 once the daemon exited (or right after
 * detaching with --no-wait), 1 when it failed or --timeout passed first, 2 for bad usage. */
int fs_umount_command(int argc, char **argv);

/* Whether a hubfs mount is attached at path (canonical, as realpath gives it). Reads
 * /proc/self/mountinfo only: never touches the mount itself. */
bool fs_hubfs_mounted_at(const char *path);

#endif
