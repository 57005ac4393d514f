/* Mount options: sizes, the command line, and the mount helper's -o list. */
#include "check.h"
#include "options.h"

#include <stdlib.h>
#include <string.h>

#define MIB (1024ULL * 1024ULL)

static void sizes(void)
{
    uint64_t bytes;
    CHECK(fs_parse_size("50G", &bytes) && bytes == 50ULL * 1024 * MIB);
    CHECK(fs_parse_size("8M", &bytes) && bytes == 8 * MIB);
    CHECK(fs_parse_size("1.5K", &bytes) && bytes == 1536);
    CHECK(fs_parse_size("4096", &bytes) && bytes == 4096);
    CHECK(fs_parse_size("2GiB", &bytes) && bytes == 2048 * MIB);
    CHECK(!fs_parse_size("", &bytes));
    CHECK(!fs_parse_size("-1G", &bytes));
    CHECK(!fs_parse_size("12Q", &bytes));
    CHECK(!fs_parse_size("1e30T", &bytes));
    CHECK(!fs_parse_size("M", &bytes));
}

static void command_line(void)
{
    char *argv[] = {"mount", "/mnt/hf", "--cache-size", "20G", "--memory-budget=256M", "--block-size", "4M",
                    "--threads", "8", "--no-disk-cache", "-f", "-o", "allow_other,readahead_max=64M",
                    "--fallback-endpoint", "https://huggingface.co", "--trace-reads", "reads.tsv", NULL};
    fs_options o;
    char error[256];
    CHECK_EQ_INT(fs_options_parse(17, argv, false, &o, error, sizeof error), 0);
    CHECK(o.trace_reads && strcmp(o.trace_reads, "reads.tsv") == 0);
    CHECK(o.fallback_endpoint && strcmp(o.fallback_endpoint, "https://huggingface.co") == 0);
    CHECK(o.mountpoint && strcmp(o.mountpoint, "/mnt/hf") == 0);
    CHECK_EQ_INT(o.cache_size, 20ULL * 1024 * MIB);
    CHECK_EQ_INT(o.memory_budget, 256 * MIB);
    CHECK_EQ_INT(o.block_size, 4 * MIB);
    CHECK_EQ_INT(o.readahead_max, 64 * MIB);
    CHECK_EQ_INT(o.threads, 8);
    CHECK(!o.disk_cache_enabled && o.foreground);
    CHECK(o.passthrough);   /* on unless refused */
    CHECK(o.fuse_options && strcmp(o.fuse_options, "allow_other") == 0);
    fs_options_clear(&o);
    char *no_passthrough[] = {"mount", "/mnt/hf", "--no-passthrough", "--threads", "4", NULL};
    CHECK_EQ_INT(fs_options_parse(5, no_passthrough, false, &o, error, sizeof error), 0);
    CHECK(!o.passthrough && o.threads == 4 && o.disk_cache_enabled);
    CHECK_EQ_INT(o.receive_buffer, 4 * MIB);   /* the default */
    fs_options_clear(&o);
    char *buffers[] = {"mount", "/mnt/hf", "--receive-buffer", "1M", "-o", "receive_buffer=96K", NULL};
    CHECK_EQ_INT(fs_options_parse(6, buffers, false, &o, error, sizeof error), 0);
    CHECK_EQ_INT(o.receive_buffer, 96 * 1024);   /* the last one given */
    fs_options_clear(&o);
    char *autotuned[] = {"mount", "/mnt/hf", "--receive-buffer=0", NULL};
    CHECK_EQ_INT(fs_options_parse(3, autotuned, false, &o, error, sizeof error), 0);
    CHECK_EQ_INT(o.receive_buffer, 0);
    fs_options_clear(&o);
}

static void mount_helper(void)
{
    char *argv[] = {"mount.hubfs", "hubfs", "/hf", "-o", "rw,defaults,cache_size=20G,cache_dir=/var/cache/h,"
                    "endpoint=http://127.0.0.1:9,nosuid,x-systemd.automount,_netdev,"
                    "fallback_endpoint=https://hub.example,trace_reads=/var/log/hubfs-reads.tsv", "-n", NULL};
    fs_options o;
    char error[256];
    CHECK_EQ_INT(fs_options_parse(6, argv, true, &o, error, sizeof error), 0);
    CHECK(o.mountpoint && strcmp(o.mountpoint, "/hf") == 0);
    CHECK_EQ_INT(o.cache_size, 20ULL * 1024 * MIB);
    CHECK(o.cache_dir && strcmp(o.cache_dir, "/var/cache/h") == 0);
    CHECK(o.endpoint && strcmp(o.endpoint, "http://127.0.0.1:9") == 0);
    CHECK(o.fallback_endpoint && strcmp(o.fallback_endpoint, "https://hub.example") == 0);
    CHECK(o.trace_reads && strcmp(o.trace_reads, "/var/log/hubfs-reads.tsv") == 0);
    CHECK(o.fuse_options && strcmp(o.fuse_options, "nosuid") == 0);
    CHECK(!o.foreground);
    fs_options_clear(&o);
    /* The retired option stays accepted (old fstab lines) and never reaches FUSE. */
    char *exact[] = {"mount.hubfs", "hubfs", "/hf", "-o", "exact_slices", NULL};
    CHECK_EQ_INT(fs_options_parse(5, exact, true, &o, error, sizeof error), 0);
    CHECK(o.fuse_options == NULL || strstr(o.fuse_options, "exact") == NULL);
    fs_options_clear(&o);
    char *no_passthrough[] = {"mount.hubfs", "hubfs", "/hf", "-o", "no_passthrough,allow_other", NULL};
    CHECK_EQ_INT(fs_options_parse(5, no_passthrough, true, &o, error, sizeof error), 0);
    CHECK(!o.passthrough && o.fuse_options && strcmp(o.fuse_options, "allow_other") == 0);
    fs_options_clear(&o);
}

static void refusals(void)
{
    fs_options o;
    char error[256];
    char *no_mountpoint[] = {"mount", NULL};
    CHECK_EQ_INT(fs_options_parse(1, no_mountpoint, false, &o, error, sizeof error), -1);
    CHECK_STR_CONTAINS(error, "MOUNTPOINT");
    fs_options_clear(&o);
    char *bad_size[] = {"mount", "/m", "--cache-size", "lots", NULL};
    CHECK_EQ_INT(fs_options_parse(4, bad_size, false, &o, error, sizeof error), -1);
    CHECK_STR_CONTAINS(error, "not a size");
    fs_options_clear(&o);
    char *bad_block[] = {"mount", "/m", "--block-size", "3M", NULL};
    CHECK_EQ_INT(fs_options_parse(4, bad_block, false, &o, error, sizeof error), -1);
    CHECK_STR_CONTAINS(error, "power of two");
    fs_options_clear(&o);
    char *tiny_budget[] = {"mount", "/m", "--memory-budget", "16M", NULL};
    CHECK_EQ_INT(fs_options_parse(4, tiny_budget, false, &o, error, sizeof error), -1);
    CHECK_STR_CONTAINS(error, "at least 4 blocks");
    fs_options_clear(&o);
    char *huge_buffer[] = {"mount", "/m", "--receive-buffer", "1G", NULL};
    CHECK_EQ_INT(fs_options_parse(4, huge_buffer, false, &o, error, sizeof error), -1);
    CHECK_STR_CONTAINS(error, "--receive-buffer must be at most 256M");
    fs_options_clear(&o);
    char *large_blocks[] = {"mount", "/m", "--block-size", "64M", NULL};   /* the default budget makes room */
    CHECK_EQ_INT(fs_options_parse(4, large_blocks, false, &o, error, sizeof error), 0);
    CHECK_EQ_INT(o.memory_budget, 256 * MIB);
    fs_options_clear(&o);
    char *unknown[] = {"mount", "/m", "--frobnicate", NULL};
    CHECK_EQ_INT(fs_options_parse(3, unknown, false, &o, error, sizeof error), -1);
    CHECK_STR_CONTAINS(error, "unknown option");
    fs_options_clear(&o);
    char *two[] = {"mount", "/a", "/b", NULL};
    CHECK_EQ_INT(fs_options_parse(3, two, false, &o, error, sizeof error), -1);
    fs_options_clear(&o);
}

static void default_cache_dir_follows_hf_home(void)
{
    setenv("HF_HOME", "/srv/hf", 1);
    char *argv[] = {"mount", "/m", NULL};
    fs_options o;
    char error[256];
    CHECK_EQ_INT(fs_options_parse(2, argv, false, &o, error, sizeof error), 0);
    CHECK(o.cache_dir && strcmp(o.cache_dir, "/srv/hf/hubfs") == 0);
    CHECK_EQ_INT(o.block_size, 8 * MIB);
    CHECK_EQ_INT(o.memory_budget, 208 * MIB);
    CHECK_EQ_INT(o.threads, 32);
    fs_options_clear(&o);
}

int main(void)
{
    sizes();
    command_line();
    mount_helper();
    refusals();
    default_cache_dir_follows_hf_home();
    return check_finish("test_options");
}
