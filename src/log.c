/*
** log.c -- one-line messages to stderr, prefixed "luasrv: ".
** Text format is "luasrv: MESSAGE"; the JSON format writes one object per
** line with time, level, pid and msg. Levels filter what is written.
**
** --log-file FILE is opened onto descriptor 2 itself (dup2), so whatever
** writes to stderr -- a handler's io.stderr, a program it runs -- lands
** there too. Reopening (SIGUSR1, after a rotation renamed the file) opens
** the path again and dup2's it over 2 in one step: a write goes either to
** the old file or to the new, never nowhere.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* Written once at start-up, before any worker or thread exists. */
static enum log_level max_level = LOG_INFO;
static int json_format = 0;

static const char *const level_names[] = {"error", "warn", "info", "debug"};
/* --log-file (a copy), set by the master; NULL: stderr as it was given. */
static char *log_path;
static int log_uid = -1, log_gid = -1;


void log_setup (enum log_level level, int json) {
  max_level = level;
  json_format = json;
}


/* Opens log_path onto descriptor 2; 0 or -errno. */
static int open_onto_stderr (void) {
  int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  int en;
  if (fd < 0) return -errno;
  /* a file the master creates stays writable for --user's workers */
  if (log_uid >= 0 && geteuid() == 0 &&
      fchown(fd, (uid_t)log_uid, (gid_t)log_gid) < 0) {
    en = errno;
    close(fd);
    return -en;
  }
  if (fd != STDERR_FILENO) {
    en = dup2(fd, STDERR_FILENO) < 0 ? -errno : 0;
    close(fd);
    return en;
  }
  return 0;
}


int log_open (const char *path) {
  char *copy = strdup(path), *old = log_path;
  int rc;
  if (copy == NULL) return -ENOMEM;
  log_path = copy;
  if ((rc = open_onto_stderr()) < 0) {
    log_path = old;
    free(copy);
    return rc;
  }
  free(old);
  return 0;
}


void log_owner (int uid, int gid) {
  log_uid = uid;
  log_gid = gid;
  if (log_path != NULL && geteuid() == 0 &&
      fchown(STDERR_FILENO, (uid_t)uid, (gid_t)gid) < 0)
    log_msg(LOG_WARN, "warning: --log-file %s: cannot give it to the "
            "workers' user: %s", log_path, strerror(errno));
}


int log_reopen (void) {
  if (log_path == NULL) return 0;
  return open_onto_stderr();
}


const char *log_file (void) {
  return log_path;
}


int log_parse_level (const char *name, enum log_level *out) {
  for (int i = 0; i <= LOG_DEBUG; i++) {
    if (strcasecmp(name, level_names[i]) == 0) {
      *out = (enum log_level)i;
      return 0;
    }
  }
  return -1;
}


int log_enabled (enum log_level level) {
  return level <= max_level;
}


static void write_all (const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(STDERR_FILENO, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;  /* nowhere to report a failing stderr */
    p += w;
    n -= (size_t)w;
  }
}


/* Appends s[0..n) to out as a JSON string body; returns the new length. */
static size_t json_escape (char *out, size_t pos, size_t cap,
                           const char *s, size_t n) {
  for (size_t i = 0; i < n && pos + 7 < cap; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '"' || ch == '\\') {
      out[pos++] = '\\';
      out[pos++] = (char)ch;
    }
    else if (ch == '\n') { out[pos++] = '\\'; out[pos++] = 'n'; }
    else if (ch == '\t') { out[pos++] = '\\'; out[pos++] = 't'; }
    else if (ch < 0x20) pos += (size_t)snprintf(out + pos, cap - pos, "\\u%04x", ch);
    else out[pos++] = (char)ch;
  }
  return pos;
}


void log_text (enum log_level level, const char *text, size_t len) {
  char line[8192];
  size_t n;
  if (!log_enabled(level)) return;
  if (json_format) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    n = (size_t)snprintf(line, sizeof line,
        "{\"time\":%lld.%03ld,\"level\":\"%s\",\"pid\":%d,\"msg\":\"",
        (long long)ts.tv_sec, ts.tv_nsec / 1000000, level_names[level],
        (int)getpid());
    n = json_escape(line, n, sizeof line - 3, text, len);
    memcpy(line + n, "\"}\n", 3);
    write_all(line, n + 3);
    return;
  }
  if (len > sizeof line - 10) len = sizeof line - 10;  /* cut, never split */
  memcpy(line, "luasrv: ", 8);
  memcpy(line + 8, text, len);
  line[8 + len] = '\n';
  write_all(line, 9 + len);
}


void log_msg (enum log_level level, const char *fmt, ...) {
  char text[4096];
  va_list ap;
  int n;
  if (!log_enabled(level)) return;
  va_start(ap, fmt);
  n = vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof text) n = sizeof text - 1;
  log_text(level, text, (size_t)n);
}
