/* A full disk: the cache lives on a 2 MiB tmpfs mounted in a private mount namespace (so the
 * mount disappears with this process whatever happens; it is also unmounted explicitly).
 * 1. No free-space floor: a write that hits ENOSPC returns it, leaves no record, frees what it
 *    had written and spoils nothing; once space is back, writes work again.
 * 2. The default 5% floor: the cache refuses to fill the disk past it, and evicts idle blobs to
 *    stay above it. */
#include "check.h"
#include "dc_test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

enum { BS = 128 * 1024 };

static char mount_point[64];

static void write_id_map(const char *path, const char *map)
{
    int fd = open(path, O_WRONLY);
    if (fd >= 0) {
        if (write(fd, map, strlen(map)) < 0)
            perror(path);
        close(fd);
    }
}

/* A private mount namespace; unprivileged users get one inside a user namespace. */
static void enter_mount_namespace(void)
{
    if (unshare(CLONE_NEWNS) != 0) {
        char map[64];
        uid_t uid = getuid();
        gid_t gid = getgid();
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
            perror("unshare: this test needs root or unprivileged user namespaces");
            exit(2);
        }
        write_id_map("/proc/self/setgroups", "deny");
        snprintf(map, sizeof map, "0 %u 1", (unsigned)uid);
        write_id_map("/proc/self/uid_map", map);
        snprintf(map, sizeof map, "0 %u 1", (unsigned)gid);
        write_id_map("/proc/self/gid_map", map);
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        perror("making mounts private");
        exit(2);
    }
    make_scratch_dir(mount_point);
    if (mount("tmpfs", mount_point, "tmpfs", 0, "size=2m,mode=0700") != 0) {
        perror("mount tmpfs");
        exit(2);
    }
}

static void leave_mount_namespace(void)
{
    umount2(mount_point, MNT_DETACH);
    rmdir(mount_point);
}

static uint64_t free_bytes(void)
{
    struct statvfs fs;
    statvfs(mount_point, &fs);
    return (uint64_t)fs.f_bavail * fs.f_frsize;
}

/* Fills the filesystem to the last byte, then gives back leave bytes. */
static void fill_disk(const char *path, off_t leave)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    static uint8_t chunk[64 * 1024];
    for (size_t size = sizeof chunk; size >= 512; size /= 2)
        while (write(fd, chunk, size) == (ssize_t)size)
            ;
    struct stat st;
    fstat(fd, &st);
    CHECK_EQ_INT(ftruncate(fd, st.st_size - leave), 0);
    close(fd);
}

typedef struct full_blob {
    char etag[65];
    uint64_t seed;
    disk_cache_blob_key key;
} full_blob;

static void make_blob(full_blob *blob, uint64_t seed, uint64_t blocks)
{
    blob->seed = seed;
    make_etag(seed, blob->etag);
    blob->key = (disk_cache_blob_key){.etag = blob->etag, .size = blocks * BS};
}

static int write_block(disk_cache *cache, const full_blob *blob, uint64_t index)
{
    static uint8_t buf[BS];
    fill_block(blob->seed, index, buf, BS);
    return disk_cache_write_block(cache, &blob->key, index, buf, BS);
}

static int read_block(disk_cache *cache, const full_blob *blob, uint64_t index)
{
    static uint8_t buf[BS];
    if (!disk_cache_read_block(cache, &blob->key, index, buf, BS))
        return 0;
    return block_matches(blob->seed, index, buf, BS) ? 1 : -1;
}

/* The raw record of a block in the index file (format: cache_files.h). */
static bool record_says_present(const char *dir, const full_blob *blob, uint64_t index)
{
    char path[512];
    uint8_t marker[4] = {0};
    if (!find_file(dir, blob->etag, ".index", path, sizeof path))
        return false;
    int fd = open(path, O_RDONLY);
    ssize_t n = pread(fd, marker, sizeof marker, 512 + 8 * (off_t)index);
    close(fd);
    return n == 4 && memcmp(marker, "PRES", 4) == 0;
}

static void test_enospc_without_floor(void)
{
    char dir[128], filler[128];
    snprintf(dir, sizeof dir, "%s/cache1", mount_point);
    snprintf(filler, sizeof filler, "%s/filler", mount_point);
    disk_cache_config config = {.directory = dir, .block_size = BS, .min_free_percent = -1};
    disk_cache *cache = NULL;
    char error[256];
    CHECK_EQ_INT(disk_cache_open(&config, &cache, error, sizeof error), 0);
    full_blob blob;
    make_blob(&blob, 700, 12);
    for (uint64_t i = 0; i < 3; i++)
        CHECK_EQ_INT(write_block(cache, &blob, i), 0);
    CHECK(record_says_present(dir, &blob, 2));

    /* Room for half a block: the write gets halfway, then fails. */
    fill_disk(filler, BS / 2);
    uint64_t free_before = free_bytes();
    CHECK(free_before >= BS / 2 && free_before < BS);
    CHECK_EQ_INT(write_block(cache, &blob, 3), ENOSPC);
    CHECK(!record_says_present(dir, &blob, 3));
    CHECK_EQ_INT(read_block(cache, &blob, 3), 0);
    CHECK_EQ_INT(free_bytes(), free_before); /* the half written was given back */
    for (uint64_t i = 0; i < 3; i++)
        CHECK_EQ_INT(read_block(cache, &blob, i), 1);
    /* Not one byte left: a prefix cannot be written either, and leaves no temporary file. */
    char filler2[160];
    snprintf(filler2, sizeof filler2, "%s2", filler);
    fill_disk(filler2, 0);
    size_t len = 0;
    char prefix[64];
    CHECK_EQ_INT(disk_cache_write_prefix(cache, &blob.key, filler, 100), ENOSPC);
    CHECK(!disk_cache_read_prefix(cache, &blob.key, prefix, sizeof prefix, &len));
    char temp_path[512];
    CHECK(!find_file(dir, ".tmp-", "", temp_path, sizeof temp_path));
    disk_cache_counters counters;
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.write_failures, 2);
    CHECK_EQ_INT(counters.bytes_stored, 3 * BS);

    /* Space is back: writing works again, and the failure left nothing behind. */
    CHECK_EQ_INT(unlink(filler), 0);
    CHECK_EQ_INT(unlink(filler2), 0);
    for (uint64_t i = 3; i < 6; i++)
        CHECK_EQ_INT(write_block(cache, &blob, i), 0);
    for (uint64_t i = 0; i < 6; i++)
        CHECK_EQ_INT(read_block(cache, &blob, i), 1);
    disk_cache_close(cache);

    CHECK_EQ_INT(disk_cache_open(&config, &cache, error, sizeof error), 0);
    for (uint64_t i = 0; i < 6; i++)
        CHECK_EQ_INT(read_block(cache, &blob, i), 1);
    CHECK_EQ_INT(read_block(cache, &blob, 6), 0);
    disk_cache_close(cache);
    remove_tree(dir);
}

static void test_free_space_floor(void)
{
    char dir[128];
    snprintf(dir, sizeof dir, "%s/cache2", mount_point);
    disk_cache_config config = {.directory = dir, .block_size = BS}; /* default floor: 5% */
    disk_cache *cache = NULL;
    char error[256];
    CHECK_EQ_INT(disk_cache_open(&config, &cache, error, sizeof error), 0);
    struct statvfs fs;
    statvfs(mount_point, &fs);
    uint64_t floor_bytes = (uint64_t)fs.f_blocks * fs.f_frsize / 20;

    full_blob old_blob, new_blob;
    make_blob(&old_blob, 800, 16);
    make_blob(&new_blob, 801, 16);
    uint64_t stored = 0;
    int err = 0;
    while (stored < 16 && (err = write_block(cache, &old_blob, stored)) == 0)
        stored++;
    CHECK_EQ_INT(err, ENOSPC);       /* 16 blocks are 2 MiB: it cannot all fit */
    CHECK(stored >= 10);
    CHECK(free_bytes() >= floor_bytes);
    CHECK(free_bytes() < floor_bytes + BS + 8192); /* refused only when really near the floor */
    for (uint64_t i = 0; i < stored; i++)
        CHECK_EQ_INT(read_block(cache, &old_blob, i), 1);

    /* Another blob needs room: the idle, least recently used one goes. */
    CHECK_EQ_INT(write_block(cache, &new_blob, 0), 0);
    CHECK_EQ_INT(read_block(cache, &new_blob, 0), 1);
    CHECK_EQ_INT(read_block(cache, &old_blob, 0), 0);
    CHECK(free_bytes() >= floor_bytes);
    disk_cache_counters counters;
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.evictions, 1);
    CHECK_EQ_INT(counters.bytes_stored, BS);
    disk_cache_close(cache);
    remove_tree(dir);
}

int main(void)
{
    enter_mount_namespace();
    test_enospc_without_floor();
    test_free_space_floor();
    leave_mount_namespace();
    return check_finish("test_disk_cache_full");
}
