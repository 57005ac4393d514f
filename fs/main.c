/* The hubfs command: one binary, a table of subcommands. Installed also as mount.hubfs, the
 * helper mount(8) runs for fstab entries of type fuse.hubfs. inspect and load take local paths
 * (a mount's included) and, through the glue, hf:// URLs: the loader knows nothing of the Hub. */
#include "fs.h"
#include "hub.h"
#include "loader_cli.h"
#include "sources.h"
#include "umount.h"

#include <libgen.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>

typedef struct subcommand {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} subcommand;

/* A model at a local path or an hf:// URL; what the user should know goes to stderr. */
static int open_model(const char *location, loader_model **out, char *err, size_t errlen)
{
    char notice[GLUE_NOTICE_LEN];
    int rc = glue_model_open(location, NULL, out, notice, err, errlen);
    if (notice[0])
        fprintf(stderr, "hubfs: note: %s\n", notice);
    return rc;
}

static int inspect_command(int argc, char **argv)
{
    return loader_cli_inspect(argc, argv, open_model);
}

static int load_command(int argc, char **argv)
{
    return loader_cli_load(argc, argv, open_model);
}

static const subcommand subcommands[] = {
    {"mount", fs_mount_command, "mount Hub repos as a read-only filesystem"},
    {"umount", fs_umount_command, "detach a mount, even with files in use, and wait for its daemon"},
    {"inspect", inspect_command, "list the tensors of a model (reads headers only)"},
    {"load", load_command, "load a tensor-parallel rank's slices to a device or host memory"},
};

static void print_usage(FILE *out)
{
    fprintf(out, "hubfs %s — Hugging Face Hub repos as lazy local files\n\n", hub_version());
    fprintf(out, "usage: hubfs <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        fprintf(out, "  %-8s %s\n", subcommands[i].name, subcommands[i].summary);
    fprintf(out, "\nRun `hubfs <command> --help` for a command's options.\n");
}

/* Every range read borrows and returns half a MiB of libcurl buffer on the Hub client's thread.
 * glibc's defaults hand such memory back to the system at once (an arena trim, or an unmap)
 * and fault it in, zeroed, for the next read: a cold read of a 3 GB model trimmed 680 MB that
 * way. Freed memory up to these sizes stays with the process for the next request instead. */
#define ALLOCATOR_KEEP_BYTES (16 << 20)
#define ALLOCATOR_MAP_ABOVE (4 << 20)

static void keep_freed_buffers(void)
{
    (void)mallopt(M_TRIM_THRESHOLD, ALLOCATOR_KEEP_BYTES);
    (void)mallopt(M_MMAP_THRESHOLD, ALLOCATOR_MAP_ABOVE);
}

int main(int argc, char **argv)
{
    keep_freed_buffers();
    const char *program = basename(argv[0]);
    if (strcmp(program, "mount.hubfs") == 0 || strcmp(program, "mount.fuse.hubfs") == 0)
        return fs_mount_command(argc, argv);
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        print_usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("hubfs %s\n", hub_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        if (strcmp(argv[1], subcommands[i].name) == 0)
            return subcommands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "hubfs: unknown command '%s'\n\n", argv[1]);
    print_usage(stderr);
    return 2;
}
