/* fs.h — the hubfs FUSE filesystem: `hubfs mount MOUNTPOINT [options]`. */
#ifndef HUBFS_FS_H
#define HUBFS_FS_H

/* Parses mount options, mounts and runs the FUSE loop until unmounted or signalled.
 * argv[0] is "mount" (or the mount helper's name). Returns a process exit status. */
int fs_mount_command(int argc, char **argv);

#endif
