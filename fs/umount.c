/* umount.c — `hubfs umount`: find the mount and its daemon, detach lazily, wait for the daemon. */
#include "umount.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define PID_XATTR "user.hubfs.pid"
#define HOLDERS_SHOWN 8
#define QUIET_WAIT_MS 1000           /* no word about holders when the daemon ends this soon */

typedef struct umount_request {
    const char *mountpoint;
    long timeout_s;              /* < 0: wait as long as it takes */
    bool wait;
} umount_request;

typedef struct mount_entry {
    char path[PATH_MAX];
    unsigned mount_id;
    unsigned major, minor;
} mount_entry;

static int usage_error(const char *message)
{
    fprintf(stderr, "hubfs umount: %s\nusage: hubfs umount MOUNTPOINT [--timeout SECONDS] [--no-wait]\n", message);
    return 2;
}

static void print_help(void)
{
    printf("usage: hubfs umount MOUNTPOINT [--timeout SECONDS] [--no-wait]\n\n"
           "Detaches a hubfs mount at once, even while programs still have files of it open or\n"
           "mapped (a loaded model's shards), and waits for the daemon to exit: it does once the\n"
           "last of those files is closed. Meanwhile the mount is gone from the namespace and\n"
           "nothing new can be opened through it; the command names the processes it waits for.\n\n"
           "  --timeout SECONDS   stop waiting after this long (exit status 1; the daemon still\n"
           "                      exits on its own once the files are closed)\n"
           "  --no-wait           detach and return at once\n");
}

static int parse_arguments(int argc, char **argv, umount_request *request)
{
    *request = (umount_request){.timeout_s = -1, .wait = true};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_help();
            return 0;
        }
        if (strcmp(argv[i], "--no-wait") == 0) {
            request->wait = false;
        } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            char *end;
            errno = 0;
            request->timeout_s = strtol(argv[++i], &end, 10);
            if (errno || *end || end == argv[i] || request->timeout_s < 0)
                return usage_error("--timeout takes a whole number of seconds");
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "hubfs umount: unknown option '%s'\n", argv[i]);
            return 2;
        } else if (request->mountpoint) {
            return usage_error("one mountpoint only");
        } else {
            request->mountpoint = argv[i];
        }
    }
    return request->mountpoint ? -1 : usage_error("missing MOUNTPOINT");
}

/* Undoes mountinfo's octal escapes (\040 for a space) in place. */
static void unescape_octal(char *text)
{
    char *out = text;
    for (char *in = text; *in; out++) {
        if (in[0] == '\\' && in[1] >= '0' && in[1] <= '3' && isdigit((unsigned char)in[2]) &&
            isdigit((unsigned char)in[3])) {
            *out = (char)((in[1] - '0') * 64 + (in[2] - '0') * 8 + (in[3] - '0'));
            in += 4;
        } else {
            *out = *in++;
        }
    }
    *out = '\0';
}

/* The topmost hubfs mount at path (realpath'd) from /proc/self/mountinfo. */
static bool find_hubfs_mount(const char *path, mount_entry *out)
{
    FILE *info = fopen("/proc/self/mountinfo", "r");
    if (!info)
        return false;
    bool found = false;
    char line[4 * PATH_MAX];
    while (fgets(line, sizeof line, info)) {
        unsigned id, parent, major, minor;
        char mountpoint[PATH_MAX], root[PATH_MAX];
        const char *tail = strstr(line, " - ");
        if (!tail || sscanf(line, "%u %u %u:%u %4095s %4095s", &id, &parent, &major, &minor, root, mountpoint) != 6)
            continue;
        unescape_octal(mountpoint);
        if (strcmp(mountpoint, path) != 0)
            continue;
        bool is_hubfs = strncmp(tail + 3, "fuse.hubfs ", 11) == 0;
        found = is_hubfs;   /* a later mount over it hides the earlier ones */
        if (is_hubfs)
            *out = (mount_entry){.mount_id = id, .major = major, .minor = minor};
    }
    fclose(info);
    if (found)
        snprintf(out->path, sizeof out->path, "%s", path);
    return found;
}

bool fs_hubfs_mounted_at(const char *path)
{
    mount_entry entry;
    return find_hubfs_mount(path, &entry);
}

/* The daemon's pid, as it tells through the mount's root; 0 when it does not answer. */
static pid_t daemon_pid(const char *mountpoint)
{
    char value[32];
    ssize_t n = getxattr(mountpoint, PID_XATTR, value, sizeof value - 1);
    if (n <= 0)
        return 0;
    value[n] = '\0';
    char *end;
    long pid = strtol(value, &end, 10);
    return *end == '\0' && pid > 0 && pid <= INT_MAX ? (pid_t)pid : 0;
}

/* Whether pid runs hubfs (its argv[0] says so): never wait on a stranger that took the pid. */
static bool runs_hubfs(pid_t pid)
{
    char path[64], argv0[PATH_MAX] = "";
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    FILE *cmdline = fopen(path, "r");
    if (!cmdline)
        return false;
    size_t n = fread(argv0, 1, sizeof argv0 - 1, cmdline);
    fclose(cmdline);
    argv0[n] = '\0';
    return strstr(argv0, "hubfs") != NULL;
}

/* Lazy unmount: root does it itself, anyone else through fusermount3 (setuid). */
static int detach(const char *mountpoint)
{
    if (geteuid() == 0)
        return umount2(mountpoint, MNT_DETACH) == 0 ? 0 : errno;
    pid_t child = fork();
    if (child < 0)
        return errno;
    if (child == 0) {
        execlp("fusermount3", "fusermount3", "-u", "-z", "--", mountpoint, (char *)NULL);
        fprintf(stderr, "hubfs umount: cannot run fusermount3: %s\n", strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR)
        continue;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : EPERM;
}

/* Whether any descriptor of process dir (a /proc/PID path) is a file of the mount. */
static bool has_open_file(const char *proc, unsigned mount_id)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/fdinfo", proc);
    DIR *fds = opendir(path);
    if (!fds)
        return false;
    bool found = false;
    for (struct dirent *fd; !found && (fd = readdir(fds));) {
        if (fd->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/fdinfo/%s", proc, fd->d_name);
        FILE *info = fopen(path, "r");
        char line[128];
        unsigned id;
        while (info && !found && fgets(line, sizeof line, info))
            found = sscanf(line, "mnt_id: %u", &id) == 1 && id == mount_id;
        if (info)
            fclose(info);
    }
    closedir(fds);
    return found;
}

/* Whether process dir maps a file of the mount (the device major:minor in its maps). */
static bool has_mapped_file(const char *proc, unsigned major, unsigned minor)
{
    char path[PATH_MAX], line[PATH_MAX + 128];
    snprintf(path, sizeof path, "%s/maps", proc);
    FILE *maps = fopen(path, "r");
    bool found = false;
    unsigned map_major, map_minor;
    while (maps && !found && fgets(line, sizeof line, maps))
        found = sscanf(line, "%*s %*s %*s %x:%x", &map_major, &map_minor) == 2 && map_major == major &&
                map_minor == minor;
    if (maps)
        fclose(maps);
    return found;
}

/* Says which processes hold files of the mount open or mapped (the daemon excepted). */
static void name_holders(const mount_entry *mount, pid_t daemon)
{
    DIR *procs = opendir("/proc");
    if (!procs)
        return;
    char shown[HOLDERS_SHOWN * 48] = "";
    size_t count = 0, used = 0;
    for (struct dirent *entry; (entry = readdir(procs));) {
        char proc[300], comm[64] = "?";
        if (!isdigit((unsigned char)entry->d_name[0]) || atoi(entry->d_name) == daemon)
            continue;
        snprintf(proc, sizeof proc, "/proc/%s", entry->d_name);
        if (!has_open_file(proc, mount->mount_id) && !has_mapped_file(proc, mount->major, mount->minor))
            continue;
        char path[320];
        snprintf(path, sizeof path, "%s/comm", proc);
        FILE *comm_file = fopen(path, "r");
        if (comm_file && fgets(comm, sizeof comm, comm_file))
            comm[strcspn(comm, "\n")] = '\0';
        if (comm_file)
            fclose(comm_file);
        if (count++ < HOLDERS_SHOWN && used < sizeof shown)
            used += (size_t)snprintf(shown + used, sizeof shown - used, "%s%s (%s)", used ? ", " : "",
                                     entry->d_name, comm);
    }
    closedir(procs);
    if (count)
        fprintf(stderr, "hubfs umount: %s is detached; the daemon (pid %d) exits once these close its files: "
                "%s%s\n", mount->path, (int)daemon, shown, count > HOLDERS_SHOWN ? ", ..." : "");
    else
        fprintf(stderr, "hubfs umount: %s is detached; waiting for the daemon (pid %d) to exit\n", mount->path,
                (int)daemon);
}

static long elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
}

/* Whether the process is gone: through its pidfd when there is one, else by its pid. */
static bool has_exited(int pidfd, pid_t pid, int wait_ms)
{
    if (pidfd >= 0) {
        struct pollfd ready = {.fd = pidfd, .events = POLLIN};
        return poll(&ready, 1, wait_ms) > 0;
    }
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return true;
    struct timespec pause = {.tv_sec = wait_ms / 1000, .tv_nsec = (wait_ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
    return kill(pid, 0) != 0 && errno == ESRCH;
}

static int open_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    return -1;
#endif
}

/* Waits for the daemon; after a quiet second, names what it waits for. */
static int wait_for_exit(const umount_request *request, const mount_entry *mount, pid_t daemon, int pidfd)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    bool told = false;
    for (;;) {
        if (has_exited(pidfd, daemon, 100))
            return 0;
        long waited = elapsed_ms(&start);
        if (!told && waited >= QUIET_WAIT_MS) {
            name_holders(mount, daemon);
            told = true;
        }
        if (request->timeout_s >= 0 && waited >= request->timeout_s * 1000) {
            fprintf(stderr, "hubfs umount: gave up waiting after %lds: the daemon (pid %d) still serves open "
                    "files; it exits by itself once they are closed\n", request->timeout_s, (int)daemon);
            return 1;
        }
    }
}

int fs_umount_command(int argc, char **argv)
{
    umount_request request;
    int parsed = parse_arguments(argc, argv, &request);
    if (parsed >= 0)
        return parsed;
    char path[PATH_MAX];
    mount_entry mount;
    if (!realpath(request.mountpoint, path) || !find_hubfs_mount(path, &mount)) {
        fprintf(stderr, "hubfs umount: %s is not a hubfs mount\n", request.mountpoint);
        return 1;
    }
    pid_t daemon = daemon_pid(path);
    if (daemon && !runs_hubfs(daemon))
        daemon = 0;
    int pidfd = daemon ? open_pidfd(daemon) : -1;
    int error = detach(path);
    if (error) {
        fprintf(stderr, "hubfs umount: cannot unmount %s: %s (only its owner or root may)\n", path,
                strerror(error));
        if (pidfd >= 0)
            close(pidfd);
        return 1;
    }
    int status = 0;
    if (!daemon)
        fprintf(stderr, "hubfs umount: %s detached; its daemon did not answer (it may have died), so there is "
                "nothing to wait for\n", path);
    else if (request.wait)
        status = wait_for_exit(&request, &mount, daemon, pidfd);
    if (pidfd >= 0)
        close(pidfd);
    return status;
}
