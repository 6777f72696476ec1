/*
** ctl.c -- the --admin socket's client. One command per connection: the
** words joined by spaces and a newline; the server answers and closes.
** An answer that starts with "error: " is the server refusing the
** command. A reload's answer comes once the new workers serve or failed,
** so a script can chain on it.
*/
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl.h"

#define CTL_WAIT_MS 120000    /* a reload may take its workers' start-up */
#define CTL_WORKER_MS 10000   /* a worker's answer (connections, eval) */


static int usage (void) {
  fputs("usage: luasrv ctl SOCKET COMMAND\n"
        "commands: status, workers, connections [WORKER], shared [NAME "
        "[KEY]],\n          eval WORKER 'lua code', reload, drain\n",
        stderr);
  return 2;
}


static int connect_to (const char *path) {
  struct sockaddr_un sun;
  int fd;
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof sun.sun_path) {
    fprintf(stderr, "luasrv: ctl: socket path too long: %s\n", path);
    return -1;
  }
  strcpy(sun.sun_path, path);
  if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
      connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
    fprintf(stderr, "luasrv: ctl: cannot connect to %s: %s\n", path,
            strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}


static int send_command (int fd, int argc, char **argv) {
  char line[4096];
  size_t n = 0;
  for (int i = 2; i < argc; i++) {
    int k = snprintf(line + n, sizeof line - n, "%s%s", i > 2 ? " " : "",
                     argv[i]);
    if (k < 0 || (size_t)k >= sizeof line - n - 1 || strchr(argv[i], '\n')) {
      fputs("luasrv: ctl: command too long or holds a newline\n", stderr);
      return -1;
    }
    n += (size_t)k;
  }
  line[n++] = '\n';
  if (send(fd, line, n, MSG_NOSIGNAL) != (ssize_t)n) {
    fprintf(stderr, "luasrv: ctl: %s\n", strerror(errno));
    return -1;
  }
  shutdown(fd, SHUT_WR);
  return 0;
}


/*
** Sends the command argv[from..argc-1] and reads the answer into buf
** (cap bytes, NUL-terminated); its length, or -1 (said why).
*/
static long ask (const char *path, int argc, char **argv, char *buf,
                 size_t cap, int wait_ms) {
  size_t got = 0;
  int fd;
  if ((fd = connect_to(path)) < 0) return -1;
  if (send_command(fd, argc, argv) < 0) {
    close(fd);
    return -1;
  }
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    ssize_t n;
    if (poll(&p, 1, wait_ms) <= 0) {
      fputs("luasrv: ctl: no answer\n", stderr);
      close(fd);
      return -1;
    }
    if ((n = read(fd, buf + got, cap - 1 - got)) <= 0) break;
    got += (size_t)n;
    if (got == cap - 1) break;
  }
  close(fd);
  buf[got] = '\0';
  return (long)got;
}


/* Prints an answer; the exit code. */
static int show (const char *buf, long got) {
  if (got < 0) return 1;
  if (strncmp(buf, "error: ", 7) == 0) {
    fprintf(stderr, "luasrv: %s", buf);
    return 1;
  }
  fputs(buf, stdout);
  return got > 0 ? 0 : 1;
}


/* "connections" alone: each worker's in turn, as "workers" lists them. */
static int all_connections (const char *path, char *buf, size_t cap) {
  static char part[65536];
  char workers[] = "workers", connections[] = "connections";
  char *wargv[3] = {NULL, NULL, workers};
  char *line, *save = NULL;
  long got = ask(path, 3, wargv, buf, cap, CTL_WAIT_MS);
  int rc = 0, asked = 0;
  if (got < 0 || strncmp(buf, "error: ", 7) == 0) return show(buf, got);
  for (line = strtok_r(buf, "\n", &save); line != NULL;
       line = strtok_r(NULL, "\n", &save)) {
    char id[16], state[32], *cargv[4] = {NULL, NULL, connections, id};
    if (sscanf(line, "%15s %*s %*s %31s", id, state) != 2 ||
        id[0] < '0' || id[0] > '9' || strcmp(state, "serving") != 0)
      continue;
    asked++;
    got = ask(path, 4, cargv, part, sizeof part, CTL_WORKER_MS);
    if (show(part, got) != 0) rc = 1;
  }
  if (asked == 0) {
    fputs("luasrv: ctl: no worker serves\n", stderr);
    return 1;
  }
  return rc;
}


int ctl_main (int argc, char **argv) {
  static char buf[65536];
  int wait = CTL_WAIT_MS;
  if (argc < 3) return usage();
  if (argc == 3 && strcmp(argv[2], "connections") == 0)
    return all_connections(argv[1], buf, sizeof buf);
  if (strcmp(argv[2], "eval") == 0 || strcmp(argv[2], "connections") == 0)
    wait = CTL_WORKER_MS;
  return show(buf, ask(argv[1], argc, argv, buf, sizeof buf, wait));
}
