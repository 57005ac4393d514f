/* log.h — the daemon's log lines on stderr (syslog once detached), rate-limited per key (a repo id) so a program
 * retrying a refused path doesn't flood the log. Never pass a token to these. */
#ifndef HUBFS_LOG_H
#define HUBFS_LOG_H

#define FS_LOG_INTERVAL_SECONDS 30

/* A daemon has no terminal: its lines go to syslog (daemon facility) from then on. */
void fs_log_use_syslog(void);

/* One line "hubfs: <message>", always. */
void fs_log(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* Same, unless a line with this key was written in the last FS_LOG_INTERVAL_SECONDS. */
void fs_log_limited(const char *key, const char *format, ...) __attribute__((format(printf, 2, 3)));

#endif
