/*
** log.h -- one-line messages to stderr, prefixed "luasrv: ".
** Every message is written with a single write(2) so lines from several
** workers or threads never interleave.
*/
#ifndef LUASRV_LOG_H
#define LUASRV_LOG_H

#include <stddef.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_setup (enum log_level level, int json);

/*
** --log-file: opens path (appending, created 0644) as descriptor 2, and
** remembers it (a copy) for log_reopen. 0 or -errno (then nothing
** changed). The master's: at start-up, and when a reload changes it.
*/
int log_open (const char *path);

/* --user: the log file (and every reopened one) belongs to uid:gid. */
void log_owner (int uid, int gid);

/*
** SIGUSR1: opens the log file's path again onto descriptor 2 (a rotation
** renamed the old one). 0 (also without --log-file) or -errno; on failure
** the old file stays in use.
*/
int log_reopen (void);

/* The --log-file path, or NULL. */
const char *log_file (void);
int log_parse_level (const char *name, enum log_level *out);
int log_enabled (enum log_level level);

/* printf-style; a trailing newline is added. */
void log_msg (enum log_level level, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));

/* Writes text as it is (it may span several lines), with the prefix. */
void log_text (enum log_level level, const char *text, size_t len);

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
