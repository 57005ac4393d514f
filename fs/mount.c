/* mount.c — `hubfs mount` and mount.hubfs: parse options, build the filesystem's parts, mount,
 * detach from the terminal once the mount is up (so startup errors are still seen), run the
 * multithreaded FUSE loop, and take everything down on unmount, SIGINT or SIGTERM. */
#include "fs.h"

#include "cache_dir.h"
#include "context.h"
#include "log.h"
#include "namespace.h"
#include "ops.h"
#include "passthrough.h"
#include "remote_file.h"
#include "umount.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FUSE_IDLE_THREADS 16
#define FUSE_MAX_THREADS 64
#define STORE_THREADS 4   /* the persistent cache syncs each run: overlap them */
/* How far the persistent cache may fall behind the network (fetcher.h). On this VM's disk, shared
 * with the bench's server reading the model, a cold loopback read of 3 GB kept its oldest queued
 * store under 250 ms (not always under 100 ms); behind a disk throttled to 150 MB/s it grew
 * without bound and the read went at the disk's pace, 2x slower. */
#define STORE_LAG_MAX_NS INT64_C(500000000)
/* What the first read of a safetensors file fetches: most headers fit, so inspecting a model
 * costs one round trip per shard. */
#define SAFETENSORS_HEADER_PROBE (64u << 10)
/* The first prefetch window along a learnt tensor order; it doubles while predictions hold. */
#define FIRST_PREFETCH_WINDOW (16u << 20)
/* How often the exit watcher looks whether the FUSE loop is ending. */
#define EXIT_WATCH_INTERVAL_MS 100

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

/* The Hub client's word on its endpoint: logged, and counted in .hubfs/stats. */
static void on_endpoint_event(void *arg, hub_endpoint_event event, const char *message)
{
    fs_stats *stats = arg;
    if (event == HUB_FALLBACK_REQUEST)
        atomic_fetch_add_explicit(&stats->fallback_requests, 1, memory_order_relaxed);
    if (event == HUB_ENDPOINT_DOWN)
        atomic_fetch_add_explicit(&stats->endpoint_failures, 1, memory_order_relaxed);
    if (message)
        fs_log("%s", message);
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
    if (context->options.fallback_endpoint && !(config.fallback_endpoint = strdup(context->options.fallback_endpoint)))
        result = startup_fail(s, "out of memory");
    config.on_endpoint_event = on_endpoint_event;
    config.on_endpoint_event_arg = &context->stats;
    if (!result && context->options.token_file &&
        hub_config_read_token_file(&config, context->options.token_file, &err) != HUB_OK)
        result = startup_fail(s, "--token-file: %s", err.message);
    if (!result && context->options.ca_bundle &&
        hub_config_set_ca_bundle(&config, context->options.ca_bundle, "--ca-bundle", &err) != HUB_OK)
        result = startup_fail(s, "%s", err.message);
    /* Room for every fetch thread and for lookups: a connection limit below the thread count
     * would queue healthy files' transfers behind a slow one's. */
    config.max_connections = context->options.threads + 8;
    config.receive_buffer_bytes = (long)context->options.receive_buffer;
    if (!result && hub_client_new(&config, &context->hub, &err) != HUB_OK)
        result = startup_fail(s, "cannot start the Hub client: %s", err.message);
    hub_config_clear(&config);
    return result;
}

/* A cache that can't be opened is a warning, not a failure: the mount works without it. */
static void open_disk_cache(fs_context *context)
{
    const fs_options *o = &context->options;
    if (!o->disk_cache_enabled)
        return;
    char error[1024] = "";
    if (cache_dir_open_blocks(o->cache_dir, o->cache_size, DISK_CACHE_UNIT, &context->disk, error,
                              sizeof error) == 0)
        context->metadata_dir = cache_dir_metadata(o->cache_dir);
    else
        fs_log("persistent cache disabled: %s: %s (check --cache-dir)", o->cache_dir, error);
}

static int build_context(fs_context *context, startup *s)
{
    const fs_options *o = &context->options;
    int error = o->trace_reads ? read_trace_open(o->trace_reads, &context->trace) : 0;
    if (error)
        return startup_fail(s, "--trace-reads %s: %s", o->trace_reads, strerror(error));
    if (make_hub_client(context, s))
        return -1;
    open_disk_cache(context);
    /* Several shards prefetch at once: each order's window is a quarter of the budget where the
     * link answers at once, up to half of it over a link with a first-byte delay
     * (remote_file.c, prefetch_window); twice that once its predictions keep coming true and the
     * budget has room (planner.c, CONFIDENT_PREDICTIONS). */
    context->planner = (planner_config){.max_ahead = o->readahead_max, .header_probe = SAFETENSORS_HEADER_PROBE,
                                        .first_prefetch = FIRST_PREFETCH_WINDOW,
                                        .max_prefetch = o->memory_budget / 4};
    context->blocks = block_cache_new(o->memory_budget, o->block_size);
    /* One file's runs may hold three quarters of the threads: over a 20 ms link at 40 MB/s per
     * connection, a cold sequential read with half of them (16) ran 5-8 % slower than the
     * block reader of 41c4483 (whole 8 MiB blocks on 16 threads); with 24, as fast (bench,
     * alternating runs). The quarter left keeps other files' readers from waiting behind its
     * read-ahead. */
    fetcher_config fetch = {.threads = o->threads, .per_file_cap = o->threads - o->threads / 4,
                            .load = remote_file_load_run};
    if (context->disk) {
        fetch.store = remote_file_store_run;
        fetch.store_threads = STORE_THREADS;
        fetch.store_lag_max_ns = STORE_LAG_MAX_NS;
    }
    context->fetch_pool = context->blocks ? fetcher_new(context->blocks, &fetch) : NULL;
    context->names = namespace_new(context);
    if (!context->blocks || !context->fetch_pool || !context->names)
        return startup_fail(s, "out of memory while starting");
    return 0;
}

/* Answers every read still waiting: the fetch threads end (their transfers aborted), completing
 * or failing every run a read waits for. Before the session goes: a read is a request to answer. */
static void stop_fetching(fs_context *context)
{
    hub_client_cancel_all(context->hub);
    fetcher_free(context->fetch_pool);
    context->fetch_pool = NULL;
}

static void destroy_context(fs_context *context)
{
    if (context->fetch_pool)
        stop_fetching(context);
    namespace_free(context->names);      /* closes the Hub handles of files */
    block_cache_free(context->blocks);
    read_trace_close(context->trace);   /* after the last read was answered */
    if (context->disk)
        disk_cache_close(context->disk);
    hub_client_free(context->hub);
    free(context->metadata_dir);
    fs_options_clear(&context->options);
    pthread_mutex_destroy(&context->handles_lock);
    pthread_mutex_destroy(&context->open_files_lock);
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

/* Watches for the loop's end (unmount, SIGTERM): at once, every transfer is aborted, so that a
 * FUSE worker stuck in a lookup on a dead server returns and the loop can end in seconds. */
typedef struct exit_watch {
    struct fuse_session *session;
    hub_client *hub;
    pthread_mutex_t lock;
    pthread_cond_t loop_over;
    bool over;
} exit_watch;

static void *watch_exit(void *arg)
{
    exit_watch *watch = arg;
    pthread_mutex_lock(&watch->lock);
    while (!watch->over && !fuse_session_exited(watch->session)) {
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_nsec += EXIT_WATCH_INTERVAL_MS * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&watch->loop_over, &watch->lock, &deadline);
    }
    pthread_mutex_unlock(&watch->lock);
    hub_client_cancel_all(watch->hub);
    return NULL;
}

static int run_loop(struct fuse_session *session, hub_client *hub)
{
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    if (!config)
        return -ENOMEM;
    fuse_loop_cfg_set_clone_fd(config, 1);
    fuse_loop_cfg_set_idle_threads(config, FUSE_IDLE_THREADS);
    fuse_loop_cfg_set_max_threads(config, FUSE_MAX_THREADS);
    exit_watch watch = {.session = session, .hub = hub};
    pthread_mutex_init(&watch.lock, NULL);
    pthread_cond_init(&watch.loop_over, NULL);
    pthread_t watcher;
    bool watching = pthread_create(&watcher, NULL, watch_exit, &watch) == 0;
    int result = fuse_session_loop_mt(session, config);
    pthread_mutex_lock(&watch.lock);
    watch.over = true;
    pthread_cond_signal(&watch.loop_over);
    pthread_mutex_unlock(&watch.lock);
    if (watching)
        pthread_join(watcher, NULL);
    pthread_cond_destroy(&watch.loop_over);
    pthread_mutex_destroy(&watch.lock);
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
    pthread_mutex_init(&context.open_files_lock, NULL);
    context.options = *options;
    memset(options, 0, sizeof *options);
    signal(SIGPIPE, SIG_IGN);
    int status = 1;
    char mounted_at[PATH_MAX];
    struct fuse_session *session = NULL;
    if (build_context(&context, s) == 0 && (session = new_session(&context, s))) {
        context.session = session;
        if (fuse_set_signal_handlers(session) != 0)
            startup_fail(s, "cannot install signal handlers");
        else if (!realpath(context.options.mountpoint, mounted_at))
            startup_fail(s, "cannot mount on %s: %s", context.options.mountpoint, strerror(errno));
        else if (fuse_session_mount(session, context.options.mountpoint) != 0)
            startup_fail(s, "cannot mount on %s (does it exist, is it empty, is /dev/fuse usable?)",
                         context.options.mountpoint);
        else {
            if (context.options.passthrough && context.disk)
                context.passthrough = passthrough_new(session);
            report_startup(s, true);
            if (!context.options.foreground)
                detach_stdio();
            /* libfuse's threads may meet an error on /dev/fuse while the kernel tears down a
             * lazily detached mount: only an error while still mounted is a failure. */
            int loop = run_loop(session, context.hub);
            status = loop < 0 && fs_hubfs_mounted_at(mounted_at) ? 1 : 0;
            if (loop < 0 && status == 0)
                fs_log("the FUSE loop ended with error %d after the mount was detached", loop);
            stop_fetching(&context);
            fuse_session_unmount(session);
            passthrough *pt = context.passthrough;
            context.passthrough = NULL;      /* the device is closed: nothing to tell the kernel */
            fs_handle_close_all(&context);   /* releases a signal cut short */
            passthrough_free(pt);
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
