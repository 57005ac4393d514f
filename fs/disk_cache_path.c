/* disk_cache_path.c — the trusted walk of cache paths (rules: disk_cache_path.h). */
#include "disk_cache_path.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
    MAX_SYMLINKS = 40,   /* the kernel's own limit */
    MAX_DEPTH = 256,
};

/* The directories walked so far, "/" first, each open O_PATH and already checked. */
typedef struct walk {
    int fds[MAX_DEPTH];
    size_t shown_lengths[MAX_DEPTH];
    size_t depth;
    char shown[PATH_MAX];        /* the resolved path, for messages */
    char *error;
    size_t error_size;
} walk;

static int fail(walk *w, int err, const char *format, ...) __attribute__((format(printf, 3, 4)));
static int fail(walk *w, int err, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    if (w->error_size)
        vsnprintf(w->error, w->error_size, format, args);
    va_end(args);
    errno = err;
    return -1;
}

static bool owned_by_us_or_root(const struct stat *st)
{
    return st->st_uid == 0 || st->st_uid == geteuid();
}

bool cache_path_trusted(const struct stat *st, bool allow_sticky)
{
    bool others_write = (st->st_mode & (S_IWGRP | S_IWOTH)) != 0;
    bool sticky_dir = S_ISDIR(st->st_mode) && (st->st_mode & S_ISVTX);
    return owned_by_us_or_root(st) && (!others_write || (allow_sticky && sticky_dir));
}

static int top(const walk *w)
{
    return w->fds[w->depth - 1];
}

/* The path of name inside the current directory, for messages. */
static const char *shown_child(const walk *w, const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", w->shown, name);
    return buf;
}

static bool push(walk *w, int fd, const char *name)
{
    if (w->depth == MAX_DEPTH) {
        close(fd);
        return false;
    }
    w->shown_lengths[w->depth] = strlen(w->shown);
    w->fds[w->depth++] = fd;
    size_t used = strlen(w->shown);
    snprintf(w->shown + used, sizeof w->shown - used, "/%s", name);
    return true;
}

static void pop(walk *w)
{
    close(w->fds[--w->depth]);
    w->shown[w->shown_lengths[w->depth]] = '\0';
}

/* Whether a directory on the way may be passed through. */
static int check_passage(walk *w, const struct stat *st, const char *shown)
{
    if (!owned_by_us_or_root(st))
        return fail(w, EPERM, "%s is owned by uid %u, not by root or uid %u (the user hubfs runs as): "
                    "another user could redirect hubfs's files; remove it or choose another directory",
                    shown, (unsigned)st->st_uid, (unsigned)geteuid());
    if (!cache_path_trusted(st, true))
        return fail(w, EPERM, "%s is writable by group or others, who could replace what hubfs uses there: "
                    "run chmod go-w on it, or choose another directory", shown);
    return 0;
}

/* The last directory is the cache's own: ours alone. */
static int check_own(walk *w, const struct stat *st)
{
    const char *shown = w->shown[0] ? w->shown : "/";
    if (st->st_uid != geteuid())
        return fail(w, EPERM, "%s belongs to uid %u, not to uid %u (the user hubfs runs as): choose a "
                    "directory of your own", shown, (unsigned)st->st_uid, (unsigned)geteuid());
    if (st->st_mode & (S_IWGRP | S_IWOTH))
        return fail(w, EPERM, "%s is writable by group or others: run chmod go-w on it, or choose "
                    "another directory", shown);
    return 0;
}

/* Opens name in the current directory without following it, creating it when asked. */
static int open_component(walk *w, const char *name, bool create)
{
    char shown[PATH_MAX + NAME_MAX + 2];
    shown_child(w, name, shown, sizeof shown);
    int fd = openat(top(w), name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create) {
        if (mkdirat(top(w), name, 0700) != 0 && errno != EEXIST)
            return fail(w, errno, "cannot create %s: %s", shown, strerror(errno));
        fd = openat(top(w), name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0)
        return fail(w, errno, "cannot open %s: %s", shown, strerror(errno));
    return fd;
}

/* Copies the next component of *cursor into name (skipping slashes); false at the end. */
static bool next_component(const char **cursor, char name[NAME_MAX + 1], bool *too_long)
{
    const char *c = *cursor;
    while (*c == '/')
        c++;
    size_t n = strcspn(c, "/");
    *cursor = c + n;
    *too_long = n > NAME_MAX;
    if (n == 0 || *too_long)
        return false;
    memcpy(name, c, n);
    name[n] = '\0';
    return true;
}

/* pending becomes target + "/" + the rest; an absolute target restarts from "/". */
static int follow_link(walk *w, int link_fd, const struct stat *st, const char *name, char **pending,
                       const char **cursor)
{
    char shown[PATH_MAX + NAME_MAX + 2], target[PATH_MAX];
    shown_child(w, name, shown, sizeof shown);
    if (!owned_by_us_or_root(st))
        return fail(w, EPERM, "%s is a symlink owned by uid %u, not by root or uid %u (the user hubfs runs "
                    "as): another user could redirect hubfs's files; remove it or choose another directory",
                    shown, (unsigned)st->st_uid, (unsigned)geteuid());
    ssize_t n = readlinkat(link_fd, "", target, sizeof target);
    if (n < 0 || (size_t)n >= sizeof target || n == 0)
        return fail(w, n < 0 ? errno : ENAMETOOLONG, "cannot read the symlink %s", shown);
    target[n] = '\0';
    size_t rest = strlen(*cursor);
    char *joined = malloc((size_t)n + rest + 2);
    if (!joined)
        return fail(w, ENOMEM, "out of memory");
    snprintf(joined, (size_t)n + rest + 2, "%s/%s", target, *cursor);
    free(*pending);
    *pending = joined;
    *cursor = joined;
    if (target[0] == '/')
        while (w->depth > 1)
            pop(w);
    return 0;
}

/* One step of the walk: 0 when name was entered or followed, -1 on a refusal. */
static int step(walk *w, const char *name, int flags, char **pending, const char **cursor, int *links)
{
    if (strcmp(name, ".") == 0)
        return 0;
    if (strcmp(name, "..") == 0) {
        if (w->depth > 1)
            pop(w);
        return 0;
    }
    int fd = open_component(w, name, flags & CACHE_PATH_CREATE);
    if (fd < 0)
        return -1;
    char shown[PATH_MAX + NAME_MAX + 2];
    shown_child(w, name, shown, sizeof shown);
    struct stat st;
    int result = 0;
    if (fstat(fd, &st) != 0)
        result = fail(w, errno, "cannot stat %s: %s", shown, strerror(errno));
    else if (S_ISLNK(st.st_mode))
        result = ++*links > MAX_SYMLINKS ? fail(w, ELOOP, "too many symlinks on the way to %s", shown)
                                         : follow_link(w, fd, &st, name, pending, cursor);
    else if (!S_ISDIR(st.st_mode))
        result = fail(w, ENOTDIR, "%s is not a directory", shown);
    else if ((result = check_passage(w, &st, shown)) == 0) {
        if (!push(w, fd, name))
            return fail(w, ENAMETOOLONG, "%s is too deep", shown);
        return 0;
    }
    close(fd);
    return result;
}

char *cache_path_absolute(const char *path)
{
    if (path[0] == '/')
        return strdup(path);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        return NULL;
    size_t size = strlen(cwd) + strlen(path) + 2;
    char *joined = malloc(size);
    if (joined)
        snprintf(joined, size, "%s/%s", cwd, path);
    return joined;
}

static int walk_to(walk *w, const char *path, int flags)
{
    char *pending = cache_path_absolute(path);
    if (!pending)
        return fail(w, errno ? errno : ENOMEM, "cannot resolve %s: %s", path, strerror(errno ? errno : ENOMEM));
    struct stat st;
    int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    int result = root < 0 || fstat(root, &st) != 0 ? fail(w, errno, "cannot open /: %s", strerror(errno))
                                                   : check_passage(w, &st, "/");
    if (root >= 0)
        w->fds[w->depth++] = root;
    const char *cursor = pending;
    char name[NAME_MAX + 1];
    bool too_long = false;
    int links = 0;
    while (result == 0 && next_component(&cursor, name, &too_long))
        result = step(w, name, flags, &pending, &cursor, &links);
    if (result == 0 && too_long)
        result = fail(w, ENAMETOOLONG, "%s has a component longer than %d bytes", path, NAME_MAX);
    free(pending);
    return result;
}

int cache_path_open_dir(const char *path, int flags, char *error, size_t error_size)
{
    walk *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(error, error_size, "out of memory");
        errno = ENOMEM;
        return -1;
    }
    w->error = error;
    w->error_size = error_size;
    int result = walk_to(w, path, flags);
    struct stat st;
    if (result == 0 && (flags & CACHE_PATH_OWN))
        result = fstat(top(w), &st) != 0 ? fail(w, errno, "cannot stat %s: %s", path, strerror(errno))
                                         : check_own(w, &st);
    if (result == 0 && (result = openat(top(w), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        fail(w, errno, "cannot open %s: %s", path, strerror(errno));
    int saved_errno = errno;
    while (w->depth > 0)
        pop(w);
    free(w);
    errno = saved_errno;
    return result;
}

static bool is_directory_path(const char *path)
{
    struct stat st;
    return path && path[0] == '/' && strcmp(path, "/") != 0 && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool cache_path_home(char *out, size_t size)
{
    const char *home = getenv("HOME");
    if (home && home[0] == '/') {
        int n = snprintf(out, size, "%s", home);
        return n > 0 && (size_t)n < size;
    }
    struct passwd entry, *found = NULL;
    char buf[4096];
    if (getpwuid_r(geteuid(), &entry, buf, sizeof buf, &found) != 0 || !found || !is_directory_path(found->pw_dir))
        return false;
    int n = snprintf(out, size, "%s", found->pw_dir);
    return n > 0 && (size_t)n < size;
}
