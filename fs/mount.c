/* mount.c — `hubfs mount` and mount.hubfs: parse options, build the filesystem's parts, mount,
 * detach from the terminal once the mount is up (so startup errors are still seen), run the
 * multithreaded FUSE loop, and take everything down on unmount, SIGINT or SIGTERM. */
#include "fs.h"

#include "context.h"
#include "log.h"
#include "namespace.h"
#include "ops.h"
#include "remote_file.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FUSE_IDLE_THREADS 16
#define FUSE_MAX_THREADS 64
#define STORE_THREADS 4   /* the persistent cache syncs each block: overlap them */
/* The first read-ahead of a stream reading a file from its start: 4 blocks of 4 ranges keep 16
 * requests in flight from the start, what a high-latency link needs. */
#define WHOLE_FILE_READAHEAD_BLOCKS 4

/* Where startup errors go: stderr in the foreground, the waiting parent's pipe otherwise. */
typedef struct startup {
    int report_fd;               /* -1 in the foreground */
    bool reported;
    char message[1024];
} startup;

static int startup_fail(startup *s, const char *format, ...) __attribute__((format(printf, 2, 3)));
static int startup_fail(startup *s, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(s->message, sizeof s->message, format, args);
    va_end(args);
    return -1;
}

static int read_token_file(const char *path, hub_config *config, startup *s)
{
    FILE *in = fopen(path, "r");
    if (!in)
        return startup_fail(s, "cannot read the token file %s: %s", path, strerror(errno));
    char token[4096];
    size_t n = fread(token, 1, sizeof token - 1, in);
    fclose(in);
    token[n] = '\0';
    char *start = token;
    while (*start == ' ' || *start == '\t' || *start == '\n' || *start == '\r')
        start++;
    char *end = start + strlen(start);
    while (end > start && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
        *--end = '\0';
    free(config->token);
    config->token = *start ? strdup(start) : NULL;
    explicit_bzero(token, sizeof token);
    return 0;
}

static int make_hub_client(fs_context *context, startup *s)
{
    hub_config config;
    hub_error err = {0};
    if (hub_config_from_env(&config, &err) != HUB_OK)
        return startup_fail(s, "configuration: %s", err.message);
    int result = 0;
    if (context->options.endpoint) {
        free(config.endpoint);
        config.endpoint = strdup(context->options.endpoint);
        size_t n = config.endpoint ? strlen(config.endpoint) : 0;
        while (n > 0 && config.endpoint[n - 1] == '/')
            config.endpoint[--n] = '\0';
    }
    if (context->options.token_file)
        result = read_token_file(context->options.token_file, &config, s);
    if (!result && hub_client_new(&config, &context->hub, &err) != HUB_OK)
        result = startup_fail(s, "cannot start the Hub client: %s", err.message);
    hub_config_clear(&config);
    return result;
}

static char *joined_path(const char *dir, const char *leaf)
{
    size_t size = strlen(dir) + strlen(leaf) + 2;
    char *path = malloc(size);
    if (path)
        snprintf(path, size, "%s/%s", dir, leaf);
    return path;
}

/* mkdir -p with 0700 for the directories we create. */
static int make_directories(const char *path)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return ENAMETOOLONG;
    for (char *c = buf + 1; *c; c++) {
        if (*c != '/')
            continue;
        *c = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return errno;
        *c = '/';
    }
    return mkdir(buf, 0700) != 0 && errno != EEXIST ? errno : 0;
}

static char *hf_hub_cache_dir(void)
{
    const char *explicit_dir = getenv("HF_HUB_CACHE");
    if (explicit_dir && *explicit_dir)
        return strdup(explicit_dir);
    const char *hf_home = getenv("HF_HOME");
    if (hf_home && *hf_home)
        return joined_path(hf_home, "hub");
    const char *home = getenv("HOME");
    return joined_path(home && *home ? home : "/tmp", ".cache/huggingface/hub");
}

/* A cache that can't be opened is a warning, not a failure: the mount works without it. */
static void open_disk_cache(fs_context *context)
{
    const fs_options *o = &context->options;
    if (!o->disk_cache_enabled)
        return;
    char *blocks_dir = joined_path(o->cache_dir, "blocks");
    char *hub_cache = hf_hub_cache_dir();
    char error[256] = "";
    int made = make_directories(o->cache_dir);
    disk_cache_config config = {.directory = blocks_dir, .max_bytes = o->cache_size,
                                .block_size = o->block_size, .hf_hub_cache = hub_cache};
    if (made == 0 && blocks_dir && disk_cache_open(&config, &context->disk, error, sizeof error) == 0) {
        context->metadata_dir = joined_path(o->cache_dir, "repos");
    } else {
        context->disk = NULL;
        fs_log("persistent cache disabled: %s: %s (check --cache-dir)", o->cache_dir,
               made ? strerror(made) : error);
    }
    free(blocks_dir);
    free(hub_cache);
}

static int build_context(fs_context *context, startup *s)
{
    const fs_options *o = &context->options;
    if (make_hub_client(context, s))
        return -1;
    open_disk_cache(context);
    context->readahead = (readahead_config){.block_size = o->block_size, .initial_window = o->block_size,
                                            .max_window = o->readahead_max,
                                            .whole_file_window = WHOLE_FILE_READAHEAD_BLOCKS * o->block_size};
    context->blocks = block_cache_new(o->memory_budget, o->block_size, remote_file_load_block);
    /* Off by default: piece fetches save bytes but cost a round trip each, which a Hub CDN's
     * latency turns into a 7x slower tensor-parallel load (measured with the WAN bench). */
    if (context->blocks && o->exact_slices)
        block_cache_set_range_loader(context->blocks, remote_file_load_block_range);
    context->fetch_pool = !context->blocks ? NULL
        : fetcher_new(context->blocks, o->threads, context->disk ? remote_file_store_block : NULL, STORE_THREADS);
    context->names = namespace_new(context);
    if (!context->blocks || !context->fetch_pool || !context->names)
        return startup_fail(s, "out of memory while starting");
    return 0;
}

static void destroy_context(fs_context *context)
{
    fetcher_free(context->fetch_pool);
    namespace_free(context->names);      /* closes the Hub handles of files */
    block_cache_free(context->blocks);
    if (context->disk)
        disk_cache_close(context->disk);
    hub_client_free(context->hub);
    free(context->metadata_dir);
    fs_options_clear(&context->options);
    pthread_mutex_destroy(&context->handles_lock);
}

static struct fuse_session *new_session(fs_context *context, startup *s)
{
    const fs_options *o = &context->options;
    size_t size = 64 + (o->fuse_options ? strlen(o->fuse_options) : 0);
    char *mount_options = malloc(size);
    if (!mount_options) {
        startup_fail(s, "out of memory");
        return NULL;
    }
    snprintf(mount_options, size, "ro,default_permissions,fsname=hubfs,subtype=hubfs%s%s",
             o->fuse_options ? "," : "", o->fuse_options ? o->fuse_options : "");
    char *argv[] = {"hubfs", "-o", mount_options, o->debug ? "-d" : NULL, NULL};
    struct fuse_args args = FUSE_ARGS_INIT(o->debug ? 4 : 3, argv);
    struct fuse_session *session = fuse_session_new(&args, hubfs_operations(), sizeof(struct fuse_lowlevel_ops), context);
    fuse_opt_free_args(&args);
    free(mount_options);
    if (!session)
        startup_fail(s, "FUSE refused the options '%s' (see hubfs mount --help)", o->fuse_options ? o->fuse_options : "");
    return session;
}

static int run_loop(struct fuse_session *session)
{
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    if (!config)
        return -ENOMEM;
    fuse_loop_cfg_set_clone_fd(config, 1);
    fuse_loop_cfg_set_idle_threads(config, FUSE_IDLE_THREADS);
    fuse_loop_cfg_set_max_threads(config, FUSE_MAX_THREADS);
    int result = fuse_session_loop_mt(session, config);
    fuse_loop_cfg_destroy(config);
    return result;
}

/* Tells the waiting parent how startup went; afterwards the daemon is on its own. */
static void report_startup(startup *s, bool ok)
{
    if (s->reported)
        return;
    s->reported = true;
    if (s->report_fd < 0) {
        if (!ok)
            fprintf(stderr, "hubfs mount: %s\n", s->message);
        return;
    }
    char status = ok ? '0' : '1';
    ssize_t ignored = write(s->report_fd, &status, 1);
    if (!ok)
        ignored = write(s->report_fd, s->message, strlen(s->message));
    (void)ignored;
    close(s->report_fd);
    s->report_fd = -1;
}

/* Leaves the caller's terminal and pipes: whoever started us may wait for their end. */
static void detach_stdio(void)
{
    fs_log_use_syslog();
    int null_fd = open("/dev/null", O_RDWR);
    if (null_fd >= 0) {
        dup2(null_fd, STDIN_FILENO);
        dup2(null_fd, STDOUT_FILENO);
        dup2(null_fd, STDERR_FILENO);
        if (null_fd > STDERR_FILENO)
            close(null_fd);
    }
    if (chdir("/") != 0) {
        /* stays where it was: harmless */
    }
}

/* Builds, mounts, serves until unmounted. Returns the exit status. */
static int serve(fs_options *options, startup *s)
{
    static fs_context context;   /* outlives the FUSE loop's threads */
    memset(&context, 0, sizeof context);
    pthread_mutex_init(&context.handles_lock, NULL);
    context.options = *options;
    memset(options, 0, sizeof *options);
    signal(SIGPIPE, SIG_IGN);
    int status = 1;
    struct fuse_session *session = NULL;
    if (build_context(&context, s) == 0 && (session = new_session(&context, s))) {
        context.session = session;
        if (fuse_set_signal_handlers(session) != 0)
            startup_fail(s, "cannot install signal handlers");
        else if (fuse_session_mount(session, context.options.mountpoint) != 0)
            startup_fail(s, "cannot mount on %s (does it exist, is it empty, is /dev/fuse usable?)",
                         context.options.mountpoint);
        else {
            report_startup(s, true);
            if (!context.options.foreground)
                detach_stdio();
            status = run_loop(session) < 0 ? 1 : 0;
            fuse_session_unmount(session);
            fs_handle_close_all(&context);   /* releases a signal cut short */
        }
        fuse_remove_signal_handlers(session);
    }
    report_startup(s, false);   /* no-op once reported */
    if (session)
        fuse_session_destroy(session);
    destroy_context(&context);
    return status;
}

/* The parent waits for the daemon's word on startup, so `hubfs mount` fails visibly. */
static int wait_for_daemon(int report_fd)
{
    char status = 0;
    ssize_t n = read(report_fd, &status, 1);
    if (n == 1 && status == '0')
        return 0;
    char message[1024] = "the daemon exited during startup";
    if (n == 1) {
        ssize_t m = read(report_fd, message, sizeof message - 1);
        message[m > 0 ? m : 0] = '\0';
    }
    fprintf(stderr, "hubfs mount: %s\n", message);
    return 1;
}

int fs_mount_command(int argc, char **argv)
{
    bool helper = strncmp(basename(argv[0]), "mount.", 6) == 0;
    fs_options options;
    char error[512];
    if (fs_options_parse(argc, argv, helper, &options, error, sizeof error) != 0) {
        fprintf(stderr, "hubfs mount: %s\n", error);
        fs_options_clear(&options);
        return 2;
    }
    if (options.show_help || options.show_version) {
        if (options.show_help)
            fs_options_print_help(stdout);
        else
            printf("hubfs %s\n", hub_version());
        fs_options_clear(&options);
        return 0;
    }
    startup s = {.report_fd = -1};
    if (options.foreground)
        return serve(&options, &s);
    int pipe_fds[2];
    if (pipe(pipe_fds) != 0) {
        fprintf(stderr, "hubfs mount: pipe: %s\n", strerror(errno));
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "hubfs mount: fork: %s\n", strerror(errno));
        return 1;
    }
    if (pid > 0) {
        close(pipe_fds[1]);
        fs_options_clear(&options);
        int status = wait_for_daemon(pipe_fds[0]);
        close(pipe_fds[0]);
        return status;
    }
    close(pipe_fds[0]);
    setsid();
    s.report_fd = pipe_fds[1];
    return serve(&options, &s);
}
