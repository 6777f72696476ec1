/*
** log.c -- one-line messages to stderr, prefixed "luasrv: ".
** Text format is "luasrv: MESSAGE"; the JSON format writes one object per
** line with time, level, pid and msg. Levels filter what is written.
*/
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* Written once at start-up, before any worker or thread exists. */
static enum log_level max_level = LOG_INFO;
static int json_format = 0;

static const char *const level_names[] = {"error", "warn", "info", "debug"};


void log_setup (enum log_level level, int json) {
  max_level = level;
  json_format = json;
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
