/* The local-file source: a directory of the local filesystem (a hubfs mount included). Reads
 * are preads. Kernel read-ahead is off for every file (a header read must not pull weight
 * bytes); the ranges a load plans are advised to the kernel a window ahead of the reads
 * instead, so a lazy mount sees them coming without fetching the whole plan at once. */
#include "source.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* How far ahead of a read the planned ranges are advised: what 16 reads of 8 MiB cover. */
#define ADVICE_WINDOW_BYTES (128u << 20)

typedef struct local_source {
    loader_source base;
    char *directory;             /* "" for the current directory */
    loader_plan_hook plan_hook;
} local_source;

typedef struct local_file {
    loader_file base;
    int fd;
    loader_plan_hook plan_hook;
    loader_range *planned;       /* from will_need, sorted by offset */
    size_t planned_count;
    atomic_size_t advised;       /* planned[0, advised) have been advised */
} local_file;

static void advise_ahead(local_file *f, uint64_t offset)
{
    size_t next = atomic_load(&f->advised);
    while (next < f->planned_count && f->planned[next].offset < offset + ADVICE_WINDOW_BYTES) {
        if (!atomic_compare_exchange_weak(&f->advised, &next, next + 1)) continue;
        posix_fadvise(f->fd, (off_t)f->planned[next].offset, (off_t)f->planned[next].length,
                      POSIX_FADV_WILLNEED);
        next++;
    }
}

static int local_file_read_at(loader_file *file, uint64_t offset, void *buf, size_t len, char *err,
                              size_t errlen)
{
    local_file *f = (local_file *)file;
    if (f->planned_count) advise_ahead(f, offset);
    return pread_full(f->fd, buf, len, offset, err, errlen);
}

/* Hands the plan to the file's filesystem when it takes plans (the hook), else keeps it for
 * read_at to advise a window at a time. */
static void local_file_will_need(loader_file *file, const loader_range *ranges, size_t count)
{
    local_file *f = (local_file *)file;
    if (f->plan_hook && f->plan_hook(f->fd, ranges, count))
        return;
    loader_keep_plan(&f->planned, &f->planned_count, ranges, count);
    atomic_store(&f->advised, 0);
}

static void local_file_close(loader_file *file)
{
    local_file *f = (local_file *)file;
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    free(f->planned);
    free(f);
}

static const loader_file_ops local_file_ops = {
    .read_at = local_file_read_at,
    .will_need = local_file_will_need,
    .close = local_file_close,
};

static int local_open(loader_source *source, const char *name, loader_file **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    char *path = join_location(source->location, name);
    local_file *f = calloc(1, sizeof *f);
    int rc = -1;
    struct stat st;
    if (f) {
        f->base.ops = &local_file_ops;
        f->fd = -1;
        atomic_init(&f->advised, 0);
    }
    if (!path || !f) {
        fail(err, errlen, "out of memory");
        goto done;
    }
    /* O_NONBLOCK: a FIFO posing as a shard must fail, not hang the open. */
    f->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (f->fd < 0 || fstat(f->fd, &st) != 0) {
        fail(err, errlen, "%s: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        fail(err, errlen, "%s: not a regular file", path);
        goto done;
    }
    f->base.size = (uint64_t)st.st_size;
    f->plan_hook = ((local_source *)source)->plan_hook;
    /* No kernel read-ahead: reading the 8-byte length and the header must not pull weight
     * bytes (on a lazy mount, a network fetch); loads drive their reads explicitly. */
    posix_fadvise(f->fd, 0, 0, POSIX_FADV_RANDOM);
    *out = &f->base;
    f = NULL;
    rc = 0;
done:
    local_file_close(f ? &f->base : NULL);
    free(path);
    return rc;
}

static int local_contains(loader_source *source, const char *name, char *err, size_t errlen)
{
    char *path = join_location(source->location, name);
    if (!path) return fail(err, errlen, "out of memory");
    int found = access(path, F_OK) == 0;
    free(path);
    return found;
}

static int local_list(loader_source *source, void (*each)(void *ctx, const char *name, uint64_t size),
                      void *ctx, char *err, size_t errlen)
{
    local_source *s = (local_source *)source;
    const char *dir = s->directory[0] ? s->directory : ".";
    DIR *d = opendir(dir);
    if (!d) return fail(err, errlen, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, 0) == 0 && S_ISREG(st.st_mode))
            each(ctx, e->d_name, (uint64_t)st.st_size);
    }
    closedir(d);
    return 0;
}

static void local_destroy(loader_source *source)
{
    local_source *s = (local_source *)source;
    if (!s) return;
    free(s->directory);
    free(s);
}

static const loader_source_ops local_source_ops = {
    .contains = local_contains,
    .list = local_list,
    .open = local_open,
    .destroy = local_destroy,
};

int loader_source_open_local(const char *directory, loader_source **out, char *err, size_t errlen)
{
    return loader_source_open_local_hooked(directory, NULL, out, err, errlen);
}

int loader_source_open_local_hooked(const char *directory, loader_plan_hook hook, loader_source **out,
                                    char *err, size_t errlen)
{
    *out = NULL;
    local_source *s = calloc(1, sizeof *s);
    if (!s || !(s->directory = strdup(directory ? directory : ""))) {
        free(s);
        return fail(err, errlen, "out of memory");
    }
    s->base = (loader_source){.ops = &local_source_ops, .location = s->directory};
    s->plan_hook = hook;
    *out = &s->base;
    return 0;
}
