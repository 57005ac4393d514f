/* options.h — `hubfs mount` options, from the command line or, for the mount(8) helper
 * (`mount.hubfs SOURCE MOUNTPOINT -o opts`), from -o. Our own -o keys (cache_dir=,
 * cache_size=, memory_budget=, block_size=, readahead_max=, receive_buffer=, threads=, endpoint=,
 * fallback_endpoint=, token_file=, ca_bundle=, trace_reads=, no_disk_cache, no_passthrough) are
 * taken out; the rest go to FUSE. */
#ifndef HUBFS_OPTIONS_H
#define HUBFS_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct fs_options {
    char *mountpoint;
    char *endpoint;              /* NULL: HF_ENDPOINT or the default */
    char *fallback_endpoint;     /* NULL: none; where requests go while the endpoint is down */
    char *token_file;            /* NULL: HF_TOKEN and friends */
    char *ca_bundle;             /* NULL: CURL_CA_BUNDLE and friends, else the system store */
    char *cache_dir;
    char *trace_reads;           /* NULL: no read trace */
    uint64_t cache_size;
    bool disk_cache_enabled;
    bool passthrough;            /* the kernel reads files the disk cache holds whole itself */
    uint64_t memory_budget;
    bool memory_budget_given;    /* else the default grows to hold 4 blocks of a larger --block-size */
    uint32_t block_size;
    uint64_t readahead_max;
    uint64_t receive_buffer;     /* SO_RCVBUF asked of each connection; 0: the kernel's autotuning */
    int threads;
    bool foreground;
    bool debug;
    bool show_help;
    bool show_version;
    char *fuse_options;          /* comma-separated, passed to FUSE after "ro"; NULL when none */
} fs_options;

/* Parses argv (argv[0] is "mount" or the helper's name; mount_helper selects the
 * SOURCE MOUNTPOINT form). Returns 0, or -1 with a message in error. */
int fs_options_parse(int argc, char **argv, bool mount_helper, fs_options *out, char *error,
                     size_t error_size);
void fs_options_clear(fs_options *options);
void fs_options_print_help(FILE *out);

/* "50G", "8M", "4096", "1.5G" (binary units K M G T) → bytes. */
bool fs_parse_size(const char *text, uint64_t *bytes_out);

#endif
