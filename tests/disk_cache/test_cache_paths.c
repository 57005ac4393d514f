/* Where the caches live and what the daemon accepts there (fs/disk_cache_path.h, fs/cache_dir.h):
 * the default directories never fall back to /tmp when HOME and HF_HOME are unset (systemd runs
 * fstab mounts so), and a cache directory on a path another user controls (created by another
 * uid in a sticky directory like /tmp, a symlink they planted, a directory writable by others)
 * is refused with a reason, touching nothing there: the cache deletes, truncates and chmods what
 * it adopts. The other user is real: a child process switched to uid 65534 creates their files
 * (the test runs as root, like an fstab mount). */
#include "cache_dir.h"
#include "check.h"
#include "dc_test_util.h"
#include "disk_cache_path.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/wait.h>

enum { NOBODY = 65534 };

/* ---- the default directories -------------------------------------------------------------- */

static void check_default(const char *home, const char *expected_dir, const char *expected_hub)
{
    char *dir = cache_dir_default(), *hub = cache_dir_hf_hub_cache();
    char want_dir[4096], want_hub[4096];
    snprintf(want_dir, sizeof want_dir, "%s%s", home, expected_dir);
    snprintf(want_hub, sizeof want_hub, "%s%s", home, expected_hub);
    CHECK(dir && strcmp(dir, want_dir) == 0);
    CHECK(hub && strcmp(hub, want_hub) == 0);
    CHECK(dir && strncmp(dir, "/tmp", 4) != 0);
    CHECK(hub && strncmp(hub, "/tmp", 4) != 0);
    if (dir && strcmp(dir, want_dir) != 0)
        fprintf(stderr, "  default cache dir: %s, expected %s\n", dir, want_dir);
    free(dir);
    free(hub);
}

static void test_defaults_never_fall_back_to_tmp(void)
{
    struct passwd *entry = getpwuid(geteuid());
    CHECK(entry && entry->pw_dir[0] == '/');
    if (!entry)
        return;
    char passwd_home[4096];
    snprintf(passwd_home, sizeof passwd_home, "%s", entry->pw_dir);
    unsetenv("HF_HUB_CACHE");

    /* As systemd runs an fstab mount: the home of the password entry. */
    unsetenv("HOME");
    unsetenv("HF_HOME");
    check_default(passwd_home, "/.cache/huggingface/hubfs", "/.cache/huggingface/hub");
    /* A HOME that is no absolute path is no home either. */
    setenv("HOME", "relative/home", 1);
    check_default(passwd_home, "/.cache/huggingface/hubfs", "/.cache/huggingface/hub");
    setenv("HOME", "", 1);
    check_default(passwd_home, "/.cache/huggingface/hubfs", "/.cache/huggingface/hub");
    /* HOME and HF_HOME still win when set; HF_HUB_CACHE for the hub cache. */
    setenv("HOME", "/home/someone", 1);
    check_default("/home/someone", "/.cache/huggingface/hubfs", "/.cache/huggingface/hub");
    setenv("HF_HOME", "/srv/hf", 1);
    check_default("/srv/hf", "/hubfs", "/hub");
    setenv("HF_HUB_CACHE", "/data/hub", 1);
    char *hub = cache_dir_hf_hub_cache();
    CHECK(hub && strcmp(hub, "/data/hub") == 0);
    free(hub);
    unsetenv("HF_HUB_CACHE");
    unsetenv("HF_HOME");
    unsetenv("HOME");
}

/* ---- another user's files ----------------------------------------------------------------- */

/* Runs the command as uid/gid 65534 (no supplementary groups) in a child; its exit status. */
static int as_nobody(const char *what, const char *a, const char *b)
{
    pid_t child = fork();
    if (child == 0) {
        if (setgroups(0, NULL) != 0 || setgid(NOBODY) != 0 || setuid(NOBODY) != 0)
            _exit(3);
        int r = strcmp(what, "mkdir") == 0 ? mkdir(a, 0777) : strcmp(what, "symlink") == 0 ? symlink(a, b) : -1;
        _exit(r == 0 ? 0 : 4);
    }
    int status = 0;
    waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

typedef struct place {
    char shared[64];   /* like /tmp: root's, 1777 */
    char victim[128];  /* a directory of root's that the cache must not touch */
} place;

static const char *const victim_files[] = {"weights.data", "header.prefix", ".tmp-1-x", "old.index", "lock"};

static void make_place(place *p)
{
    make_scratch_dir(p->shared);
    CHECK_EQ_INT(chmod(p->shared, 01777), 0);
    snprintf(p->victim, sizeof p->victim, "%s-victim", p->shared);
    CHECK_EQ_INT(mkdir(p->victim, 0755), 0);
    CHECK_EQ_INT(chmod(p->victim, 0755), 0);
    for (size_t i = 0; i < sizeof victim_files / sizeof *victim_files; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", p->victim, victim_files[i]);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        CHECK(fd >= 0 && write(fd, "precious", 8) == 8);
        close(fd);
    }
}

/* The victim directory is exactly as made: same mode, every file there with its bytes. */
static void check_victim_untouched(const place *p)
{
    struct stat st;
    CHECK_EQ_INT(stat(p->victim, &st), 0);
    CHECK_EQ_INT(st.st_mode & 07777, 0755);
    for (size_t i = 0; i < sizeof victim_files / sizeof *victim_files; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", p->victim, victim_files[i]);
        CHECK_EQ_INT(stat(path, &st), 0);
        CHECK_EQ_INT(st.st_size, 8);
        CHECK_EQ_INT(st.st_mode & 07777, 0644);
    }
    char path[256];
    snprintf(path, sizeof path, "%s/blocks", p->victim);
    CHECK(access(path, F_OK) != 0);
}

static void remove_place(place *p)
{
    remove_tree(p->shared);
    remove_tree(p->victim);
}

/* Opening the cache at path must fail, saying why (what). */
static void check_refused(const char *path, const char *what)
{
    disk_cache_config config = {.directory = path, .block_size = 64 * 1024};
    disk_cache *cache = NULL;
    char error[1024] = "";
    CHECK(disk_cache_open(&config, &cache, error, sizeof error) != 0);
    CHECK(cache == NULL);
    CHECK_STR_CONTAINS(error, what);
    disk_cache_close(cache);
}

static void check_accepted(const char *path)
{
    disk_cache *cache = open_test_cache(path, 64 * 1024, 0, NULL);
    struct stat st;
    CHECK_EQ_INT(stat(path, &st), 0);
    CHECK_EQ_INT(st.st_mode & 07777, 0700);
    disk_cache_close(cache);
}

static void test_another_users_directories_are_refused(void)
{
    place p;
    make_place(&p);
    char path[512], link[256];

    /* The attack: the cache directory is another user's symlink to any directory. */
    snprintf(link, sizeof link, "%s/cache", p.shared);
    CHECK_EQ_INT(as_nobody("symlink", p.victim, link), 0);
    check_refused(link, "symlink owned by uid 65534");
    snprintf(path, sizeof path, "%s/blocks", link);
    check_refused(path, "symlink owned by uid 65534");
    check_victim_untouched(&p);

    /* A directory they created on the way, with their symlink as the blocks directory. */
    snprintf(path, sizeof path, "%s/hubfs", p.shared);
    CHECK_EQ_INT(as_nobody("mkdir", path, NULL), 0);
    snprintf(link, sizeof link, "%s/hubfs/blocks", p.shared);
    CHECK_EQ_INT(as_nobody("symlink", p.victim, link), 0);
    check_refused(link, "owned by uid 65534");
    check_victim_untouched(&p);
    snprintf(path, sizeof path, "%s/hubfs/other", p.shared);
    check_refused(path, "owned by uid 65534");
    CHECK(access(path, F_OK) != 0);   /* nothing was created in their directory */

    /* The sticky directory itself is no cache directory: anyone may add files there. */
    check_refused(p.shared, "writable by group or others");

    /* Below a sticky directory, what we create is ours: accepted. So is our own symlink. */
    snprintf(path, sizeof path, "%s/mine/blocks", p.shared);
    check_accepted(path);
    snprintf(link, sizeof link, "%s/my-link", p.shared);
    CHECK_EQ_INT(symlink("mine", link), 0);
    snprintf(path, sizeof path, "%s/my-link/./blocks", p.shared);
    check_accepted(path);
    snprintf(link, sizeof link, "%s/mine/up", p.shared);
    CHECK_EQ_INT(symlink("../mine/blocks", link), 0);   /* a relative target with ".." */
    check_accepted(link);
    remove_place(&p);
}

static void test_directories_others_may_write_are_refused(void)
{
    char root[64], path[256];
    make_scratch_dir(root);
    /* Ours, but writable by others and not sticky: anyone could swap what is below. */
    snprintf(path, sizeof path, "%s/open", root);
    CHECK_EQ_INT(mkdir(path, 0777), 0);
    CHECK_EQ_INT(chmod(path, 0777), 0);
    snprintf(path, sizeof path, "%s/open/blocks", root);
    check_refused(path, "writable by group or others");
    CHECK(access(path, F_OK) != 0);

    /* The cache directory itself: another user's, or ours but group-writable. */
    snprintf(path, sizeof path, "%s/theirs", root);
    CHECK_EQ_INT(mkdir(path, 0700), 0);
    CHECK_EQ_INT(chown(path, NOBODY, NOBODY), 0);
    check_refused(path, "owned by uid 65534");
    struct stat st;
    CHECK_EQ_INT(stat(path, &st), 0);
    CHECK_EQ_INT(st.st_uid, NOBODY);   /* not taken over either */
    snprintf(path, sizeof path, "%s/shared-group", root);
    CHECK_EQ_INT(mkdir(path, 0770), 0);
    CHECK_EQ_INT(chmod(path, 0770), 0);
    check_refused(path, "writable by group or others");
    CHECK_EQ_INT(stat(path, &st), 0);
    CHECK_EQ_INT(st.st_mode & 07777, 0770);

    /* A file where a directory should be. */
    snprintf(path, sizeof path, "%s/file", root);
    close(open(path, O_WRONLY | O_CREAT, 0600));
    check_refused(path, "not a directory");

    /* Ours and only ours, loosely readable: accepted and made private. */
    snprintf(path, sizeof path, "%s/loose", root);
    CHECK_EQ_INT(mkdir(path, 0755), 0);
    check_accepted(path);
    remove_tree(root);
}

/* The walk itself: a path through a symlink loop ends with a reason, never hangs. */
static void test_symlink_loops_end(void)
{
    char root[64], a[128], b[128], error[1024] = "";
    make_scratch_dir(root);
    snprintf(a, sizeof a, "%s/a", root);
    snprintf(b, sizeof b, "%s/b", root);
    CHECK_EQ_INT(symlink("b", a), 0);
    CHECK_EQ_INT(symlink("a", b), 0);
    CHECK_EQ_INT(cache_path_open_dir(a, CACHE_PATH_CREATE, error, sizeof error), -1);
    CHECK_EQ_INT(errno, ELOOP);
    CHECK_STR_CONTAINS(error, "too many symlinks");
    remove_tree(root);
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_cache_paths: needs root (it acts as another user too)\n");
        return 1;
    }
    test_defaults_never_fall_back_to_tmp();
    test_another_users_directories_are_refused();
    test_directories_others_may_write_are_refused();
    test_symlink_loops_end();
    return check_finish("test_cache_paths");
}
