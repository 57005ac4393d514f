/* options.c — command-line and -o parsing for `hubfs mount` and mount.hubfs. */
#include "options.h"

#include "cache_dir.h"
#include "hub.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIB (1024ULL * 1024ULL)

void fs_options_print_help(FILE *out)
{
    fputs("usage: hubfs mount MOUNTPOINT [options]\n"
          "       mount.hubfs SOURCE MOUNTPOINT -o key=value,...   (fstab: hubfs /hf fuse.hubfs defaults,cache_size=20G 0 0)\n\n"
          "Shows Hugging Face Hub repos as read-only directories, fetched lazily:\n"
          "  MOUNTPOINT/ORG/NAME             a model at its main branch\n"
          "  MOUNTPOINT/ORG/NAME@REV         at a branch, tag or commit (percent-encoded: NAME@refs%2Fpr%2F1)\n"
          "  MOUNTPOINT/datasets/ORG/NAME    a dataset\n"
          "  MOUNTPOINT/.hubfs/stats         counters as JSON\n"
          "A branch is pinned to its commit at first access. To move to the branch's new head:\n"
          "  getfattr -n user.hubfs.refresh MOUNTPOINT/ORG/NAME   (prints the commit; open files keep theirs)\n"
          "Files carry the xattrs user.hubfs.commit, user.hubfs.etag and user.hubfs.cached_bytes.\n\n"
          "options (also as -o key=value, with '_' for '-'):\n"
          "  --endpoint URL        Hub endpoint (default $HF_ENDPOINT or https://huggingface.co)\n"
          "  --fallback-endpoint URL  where requests go while the endpoint fails (a site cache's\n"
          "                        Hub, e.g. https://huggingface.co); the token goes to both\n"
          "  --token-file FILE     read the token from FILE (default $HF_TOKEN, $HF_HOME/token)\n"
          "  --ca-bundle FILE      trust the CAs in FILE (PEM) instead of the system's, for the Hub and\n"
          "                        its CDN (default $CURL_CA_BUNDLE, $REQUESTS_CA_BUNDLE, $SSL_CERT_FILE)\n"
          "  --cache-dir DIR       persistent cache (default $HF_HOME/hubfs, else ~/.cache/huggingface/hubfs\n"
          "                        with ~ from $HOME or the user's passwd entry, /var/cache/hubfs for a\n"
          "                        root without a home; never /tmp). It must be yours, and no directory\n"
          "                        above it writable by others (sticky ones like /tmp aside): else unused\n"
          "  --cache-size SIZE     cap of the persistent cache (default 50G)\n"
          "  --no-disk-cache       keep nothing on disk\n"
          "  --no-passthrough      read files the cache holds whole through the daemon too (else,\n"
          "                        as root on Linux >= 6.9, the kernel reads them from the cache\n"
          "                        like local files: no per-read verification, no --trace-reads lines)\n"
          "  --memory-budget SIZE  memory for read-ahead, prefetch and cached blocks, all files\n"
          "                        together; what the kernel's page cache holds is not kept twice\n"
          "                        (default 208M, or 4 blocks if larger: the daemon stays under 256 MiB;\n"
          "                        more lets a loader that reads a model in its own order have more\n"
          "                        of it prefetched)\n"
          "  --block-size SIZE     unit of the memory cache's bookkeeping (default 8M); reads fetch\n"
          "                        what they need, pages of 4 KiB, not whole blocks\n"
          "  --readahead-max SIZE  largest read-ahead and prefetch window of one file (default 128M;\n"
          "                        0 disables both)\n"
          "  --receive-buffer SIZE socket receive buffer of each connection (default 4M; used only where\n"
          "                        net.core.rmem_max allows that much, else and with 0 the kernel sizes it)\n"
          "  --threads N           fetch threads; one file runs at most 3/4 of them (default 32)\n"
          "  --exact-slices        accepted for old fstab lines; does nothing (reads always fetch\n"
          "                        about what they read)\n"
          "  --trace-reads FILE    append a line per read the kernel sends to FILE (tab-separated: when,\n"
          "                        how long it waited, file, offset, length, read-ahead it asked for,\n"
          "                        result, tensor): what a slow tool waits for\n"
          "  -f, --foreground      stay in the foreground, logging to stderr (else to syslog)\n"
          "  -d                    FUSE debug output (implies -f)\n"
          "  -o OPT[,OPT...]       our keys above, or FUSE mount options (allow_other, ...)\n"
          "  --help, --version\n\n"
          "environment: HF_ENDPOINT, HF_TOKEN, HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE=1 (serve only what is cached),\n"
          "  HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY (also in lowercase, which wins).\n"
          "Unmount with `hubfs umount MOUNTPOINT` (waits for the daemon; names processes still holding\n"
          "  files), `fusermount3 -u MOUNTPOINT`, or SIGINT/SIGTERM to the daemon.\n",
          out);
}

bool fs_parse_size(const char *text, uint64_t *bytes_out)
{
    if (!text || !*text)
        return false;
    errno = 0;
    char *end;
    double value = strtod(text, &end);
    if (errno || end == text || !isfinite(value) || value < 0)
        return false;
    double unit = 1;
    if (*end) {
        switch (*end) {
        case 'k': case 'K': unit = 1024.0; break;
        case 'm': case 'M': unit = 1024.0 * 1024; break;
        case 'g': case 'G': unit = 1024.0 * 1024 * 1024; break;
        case 't': case 'T': unit = 1024.0 * 1024 * 1024 * 1024; break;
        default: return false;
        }
        end++;
        if (*end == 'i' || *end == 'I') end++;
        if (*end == 'b' || *end == 'B') end++;
        if (*end)
            return false;
    }
    double bytes = value * unit;
    if (bytes >= 18446744073709551615.0)
        return false;
    *bytes_out = (uint64_t)bytes;
    return true;
}

static int fail(char *error, size_t error_size, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(error, error_size, format, args);
    va_end(args);
    return -1;
}

static int replace_string(char **slot, const char *value)
{
    char *copy = strdup(value);
    if (!copy)
        return -1;
    free(*slot);
    *slot = copy;
    return 0;
}

static int append_fuse_option(fs_options *options, const char *option)
{
    size_t old_length = options->fuse_options ? strlen(options->fuse_options) : 0;
    char *joined = realloc(options->fuse_options, old_length + strlen(option) + 2);
    if (!joined)
        return -1;
    if (old_length)
        joined[old_length++] = ',';
    strcpy(joined + old_length, option);
    options->fuse_options = joined;
    return 0;
}

/* Options mount(8) and fstab use that mean nothing to FUSE or to us. */
static bool is_ignored_mount_option(const char *option)
{
    static const char *const ignored[] = {"defaults", "rw", "ro", "auto", "noauto", "nofail",
                                          "_netdev", "user", "users", "nouser", "owner", NULL};
    for (size_t i = 0; ignored[i]; i++)
        if (strcmp(option, ignored[i]) == 0)
            return true;
    return strncmp(option, "x-", 2) == 0 || strncmp(option, "comment=", 8) == 0;
}

/* name with '_' spelt '-' (-o takes either), cut to fit key. */
static void normalize_key(const char *name, char key[32])
{
    size_t n = 0;
    for (; name[n] && n + 1 < 32; n++)
        key[n] = name[n] == '_' ? '-' : name[n];
    key[n] = '\0';
}

/* Our options that take no value. */
static bool is_switch(const char *name)
{
    static const char *const switches[] = {"no-disk-cache", "no-passthrough", "exact-slices", "foreground", NULL};
    char key[32];
    normalize_key(name, key);
    for (size_t i = 0; switches[i]; i++)
        if (strcmp(key, switches[i]) == 0)
            return true;
    return false;
}

/* Applies one of our options; name uses '-' or '_'. Returns 1 when known, 0 when not ours,
 * -1 on a bad value. */
static int apply_option(fs_options *o, const char *name, const char *value, char *error, size_t error_size)
{
    char key[32];
    normalize_key(name, key);
    if (strcmp(key, "no-disk-cache") == 0) { o->disk_cache_enabled = false; return 1; }
    if (strcmp(key, "no-passthrough") == 0) { o->passthrough = false; return 1; }
    if (strcmp(key, "exact-slices") == 0) return 1;   /* deprecated: what it chose is the default */
    if (strcmp(key, "foreground") == 0) { o->foreground = true; return 1; }
    static const char *const valued[] = {"endpoint", "fallback-endpoint", "token-file", "ca-bundle",
                                         "cache-dir", "cache-size", "memory-budget", "block-size",
                                         "readahead-max", "receive-buffer", "threads", "trace-reads", NULL};
    bool known = false;
    for (size_t i = 0; valued[i]; i++)
        known = known || strcmp(key, valued[i]) == 0;
    if (!known)
        return 0;
    if (!value || !*value)
        return fail(error, error_size, "option %s needs a value", name);
    if (strcmp(key, "endpoint") == 0) return replace_string(&o->endpoint, value) ? -1 : 1;
    if (strcmp(key, "fallback-endpoint") == 0) return replace_string(&o->fallback_endpoint, value) ? -1 : 1;
    if (strcmp(key, "token-file") == 0) return replace_string(&o->token_file, value) ? -1 : 1;
    if (strcmp(key, "ca-bundle") == 0) return replace_string(&o->ca_bundle, value) ? -1 : 1;
    if (strcmp(key, "cache-dir") == 0) return replace_string(&o->cache_dir, value) ? -1 : 1;
    if (strcmp(key, "trace-reads") == 0) return replace_string(&o->trace_reads, value) ? -1 : 1;
    if (strcmp(key, "threads") == 0) {
        char *end;
        long threads = strtol(value, &end, 10);
        if (*end || threads < 1 || threads > 256)
            return fail(error, error_size, "--threads must be a number from 1 to 256, not '%s'", value);
        o->threads = (int)threads;
        return 1;
    }
    uint64_t bytes;
    if (!fs_parse_size(value, &bytes))
        return fail(error, error_size, "option %s: '%s' is not a size (examples: 512M, 20G)", name, value);
    if (strcmp(key, "cache-size") == 0) o->cache_size = bytes;
    else if (strcmp(key, "memory-budget") == 0) {
        o->memory_budget = bytes;
        o->memory_budget_given = true;
    }
    else if (strcmp(key, "readahead-max") == 0) o->readahead_max = bytes;
    else if (strcmp(key, "receive-buffer") == 0) {
        if (bytes > 256 * MIB)
            return fail(error, error_size, "--receive-buffer must be at most 256M, not '%s'", value);
        o->receive_buffer = bytes;
    }
    else {
        if (bytes < 64 * 1024 || bytes > 64 * MIB || (bytes & (bytes - 1)))
            return fail(error, error_size, "--block-size must be a power of two from 64K to 64M, not '%s'", value);
        o->block_size = (uint32_t)bytes;
    }
    return 1;
}

static int parse_o_list(fs_options *o, const char *list, char *error, size_t error_size)
{
    char *copy = strdup(list);
    if (!copy)
        return fail(error, error_size, "out of memory");
    int result = 0;
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item && result == 0; item = strtok_r(NULL, ",", &save)) {
        char *equals = strchr(item, '=');
        if (equals)
            *equals = '\0';
        int applied = apply_option(o, item, equals ? equals + 1 : NULL, error, error_size);
        if (equals)
            *equals = '=';
        if (applied < 0)
            result = -1;
        else if (applied == 0 && !is_ignored_mount_option(item) && append_fuse_option(o, item))
            result = fail(error, error_size, "out of memory");
    }
    free(copy);
    return result;
}

static void set_defaults(fs_options *o)
{
    memset(o, 0, sizeof *o);
    o->cache_size = CACHE_DIR_DEFAULT_MAX_BYTES;
    o->disk_cache_enabled = true;
    o->passthrough = true;
    /* Everything in flight and ahead of readers, with the daemon under 256 MiB in all: pages the
     * kernel was served are not kept, hints and prefetch windows are shares of it. The rest of
     * the daemon takes 30-48 MiB more (libraries, FUSE threads' stacks and buffers, malloc
     * arenas, curl's buffers), the most with 8 ranks loading at once: at 216 MiB they peaked at
     * 257-263 MiB, at 224 MiB from_pretrained at 262-265 MiB. */
    o->memory_budget = 208 * MIB;
    o->block_size = CACHE_DIR_DEFAULT_BLOCK_SIZE;
    o->readahead_max = 128 * MIB;
    o->receive_buffer = HUB_RECEIVE_BUFFER_DEFAULT;
    /* Ranges in flight: a CDN connection carries ~50 MB/s after tens of ms, so a shard read
     * with 16 at once, and a loader's prefetch of other shards with the rest, fill a link. */
    o->threads = 32;
}

/* Handles argv[*i], consuming its value when separate. 1 = handled, 0 = positional, -1 = error. */
static int parse_flag(fs_options *o, int argc, char **argv, int *i, char *error, size_t error_size)
{
    const char *arg = argv[*i];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) { o->show_help = true; return 1; }
    if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) { o->show_version = true; return 1; }
    if (strcmp(arg, "-f") == 0 || strcmp(arg, "--foreground") == 0) { o->foreground = true; return 1; }
    if (strcmp(arg, "-d") == 0 || strcmp(arg, "--debug") == 0) { o->debug = o->foreground = true; return 1; }
    if (strcmp(arg, "-n") == 0 || strcmp(arg, "-s") == 0 || strcmp(arg, "-v") == 0)
        return 1;   /* mount(8) helper flags: no mtab, sloppy, verbose */
    if (strncmp(arg, "-o", 2) == 0) {
        const char *list = arg[2] ? arg + 2 : (*i + 1 < argc ? argv[++*i] : NULL);
        if (!list)
            return fail(error, error_size, "-o needs a list of options");
        return parse_o_list(o, list, error, error_size) ? -1 : 1;
    }
    if (strncmp(arg, "--", 2) != 0)
        return arg[0] == '-' && arg[1] ? fail(error, error_size, "unknown option '%s'", arg) : 0;
    char name[64];
    const char *equals = strchr(arg, '=');
    size_t name_length = equals ? (size_t)(equals - arg - 2) : strlen(arg + 2);
    if (name_length >= sizeof name)
        return fail(error, error_size, "unknown option '%s'", arg);
    memcpy(name, arg + 2, name_length);
    name[name_length] = '\0';
    const char *value = equals ? equals + 1 : NULL;
    if (!is_switch(name) && !value && *i + 1 < argc)
        value = argv[++*i];
    int applied = apply_option(o, name, value, error, error_size);
    if (applied == 0)
        return fail(error, error_size, "unknown option '%s' (see hubfs mount --help)", arg);
    return applied;
}

int fs_options_parse(int argc, char **argv, bool mount_helper, fs_options *o, char *error, size_t error_size)
{
    set_defaults(o);
    int positional = 0;
    for (int i = 1; i < argc; i++) {
        int handled = parse_flag(o, argc, argv, &i, error, error_size);
        if (handled < 0)
            return -1;
        if (handled > 0)
            continue;
        positional++;
        if (mount_helper && positional == 1)
            continue;   /* SOURCE: the fstab device field, meaningless here */
        if (o->mountpoint)
            return fail(error, error_size, "unexpected argument '%s' (one mountpoint only)", argv[i]);
        if (replace_string(&o->mountpoint, argv[i]))
            return fail(error, error_size, "out of memory");
    }
    if (o->show_help || o->show_version)
        return 0;
    if (!o->mountpoint)
        return fail(error, error_size, "missing MOUNTPOINT (usage: hubfs mount MOUNTPOINT [options])");
    if (!o->memory_budget_given && o->memory_budget < 4ULL * o->block_size)
        o->memory_budget = 4ULL * o->block_size;
    if (o->memory_budget < 4ULL * o->block_size)
        return fail(error, error_size, "--memory-budget must hold at least 4 blocks (%lluM with %lluM blocks)",
                    (unsigned long long)(4ULL * o->block_size / MIB), (unsigned long long)(o->block_size / MIB));
    if (!o->cache_dir && o->disk_cache_enabled && !(o->cache_dir = cache_dir_default()))
        return fail(error, error_size, "no home directory for the persistent cache (HOME is unset and uid %u "
                    "has none in the password database): pass --cache-dir DIR, or --no-disk-cache",
                    (unsigned)geteuid());
    return 0;
}

void fs_options_clear(fs_options *o)
{
    free(o->mountpoint);
    free(o->endpoint);
    free(o->fallback_endpoint);
    free(o->token_file);
    free(o->ca_bundle);
    free(o->cache_dir);
    free(o->trace_reads);
    free(o->fuse_options);
    memset(o, 0, sizeof *o);
}
