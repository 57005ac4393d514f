/* log.c — stderr lines with a per-key rate limit (a small table of key hashes). */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <syslog.h>
#include <time.h>

#define SLOT_COUNT 256

static struct {
    uint64_t key_hash;
    time_t last;
} slots[SLOT_COUNT];
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;

static bool use_syslog;

void fs_log_use_syslog(void)
{
    openlog("hubfs", LOG_PID, LOG_DAEMON);
    use_syslog = true;
}

static void write_line(const char *format, va_list args)
{
    char line[1024];
    vsnprintf(line, sizeof line, format, args);
    if (use_syslog) {
        syslog(LOG_WARNING, "%s", line);
        return;
    }
    fprintf(stderr, "hubfs: %s\n", line);
    fflush(stderr);
}

void fs_log(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    write_line(format, args);
    va_end(args);
}

static uint64_t hash_key(const char *key)
{
    uint64_t h = 1469598103934665603ULL;   /* FNV-1a */
    for (; *key; key++)
        h = (h ^ (unsigned char)*key) * 1099511628211ULL;
    return h | 1;   /* 0 marks an empty slot */
}

/* True when the key may log now; a colliding key simply takes the slot over. */
static int may_log(const char *key)
{
    uint64_t h = hash_key(key);
    time_t now = time(NULL);
    pthread_mutex_lock(&slots_lock);
    size_t slot = (size_t)(h % SLOT_COUNT);
    int allowed = slots[slot].key_hash != h || now - slots[slot].last >= FS_LOG_INTERVAL_SECONDS;
    if (allowed) {
        slots[slot].key_hash = h;
        slots[slot].last = now;
    }
    pthread_mutex_unlock(&slots_lock);
    return allowed;
}

void fs_log_limited(const char *key, const char *format, ...)
{
    if (!may_log(key))
        return;
    va_list args;
    va_start(args, format);
    write_line(format, args);
    va_end(args);
}
