/* disk_cache_path.h — reaching the caches' directories without trusting what others control
 * (private to fs/).
 *
 * The daemon often runs as root (an fstab mount), deletes, truncates and chmods files in its
 * cache directory, and serves huggingface_hub blobs as repo files: a directory another user can
 * change (a /tmp/.cache they created, a symlink they planted) must never be used. So a path is
 * walked one component at a time from "/", each opened with O_NOFOLLOW and checked:
 *
 *   - every directory on the way is owned by root or by the daemon's user, and is not writable
 *     by group or others unless it is sticky (like /tmp: others may add entries there, but not
 *     rename or remove ours, and whatever they add is theirs, so it fails the owner rule);
 *   - a symlink on the way is followed only when it is owned by root or the daemon's user (its
 *     directory passed the rule above, so nobody else put it there); its target is walked by
 *     the same rules, so it may lead anywhere those allow, e.g. ~/.cache -> /scratch/me/cache;
 *   - with CACHE_PATH_OWN the directory reached belongs to the daemon's user and is writable by
 *     nobody else (the caches' own directories; sticky is no excuse there);
 *   - with CACHE_PATH_CREATE missing directories are created 0700 (so they are ours).
 *
 * Refusals say which component broke which rule and what to do.
 */
#ifndef HUBFS_DISK_CACHE_PATH_H
#define HUBFS_DISK_CACHE_PATH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

enum {
    CACHE_PATH_CREATE = 1 << 0,
    CACHE_PATH_OWN = 1 << 1,
};

/* Opens the directory at path (absolute, or relative to the working directory) by the rules
 * above. Returns a descriptor (O_RDONLY | O_DIRECTORY) or -1 with errno set (EPERM when a rule
 * refused it) and the reason in error. */
int cache_path_open_dir(const char *path, int flags, char *error, size_t error_size);

/* Whether a file or directory with this status may be trusted: owned by root or the daemon's
 * user, and not writable by group or others (sticky directories excepted when allow_sticky). */
bool cache_path_trusted(const struct stat *st, bool allow_sticky);

/* path made absolute against the working directory (malloc'd; NULL with errno set): what is
 * kept to be used by path later, after the daemon has moved to "/". */
char *cache_path_absolute(const char *path);

/* The daemon user's home directory: $HOME when it is an absolute path, else the home of the
 * password database entry of the effective uid. False when neither names a directory path
 * (the entry may say "/" or "/nonexistent": no home to keep a cache in). */
bool cache_path_home(char *out, size_t size);

#endif
