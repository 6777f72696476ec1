/*
** listener.h -- listening sockets: socket, bind, listen, and the Unix
** socket file's life (stale files replaced, live ones refused, removed at
** exit by the process that created them).
*/
#ifndef LUASRV_LISTENER_H
#define LUASRV_LISTENER_H

#include <sys/types.h>
#include "address.h"

struct listener {
  struct address addr;        /* as bound (port 0 replaced by the real one) */
  int fd;                     /* non-blocking, close-on-exec; -1 if closed */
  int stream;                 /* TCP or Unix stream */
  int created_path;           /* we created the Unix socket file */
  pid_t owner;                /* process that may unlink the file */
  char name[ADDRESS_STRLEN];  /* "tcp://127.0.0.1:80", for logs and Lua */
};

struct listen_opts {
  int backlog;
  int reuse_port;
  int unix_mode;              /* chmod for Unix socket files; -1 = umask */
};

/*
** Opens a listener for addr. Returns 0, or -1 with "cannot listen on
** ADDR: REASON" in err.
*/
int listener_open (struct listener *l, const struct address *addr,
                   const struct listen_opts *o, char *err, size_t errlen);

/*
** Takes over fd, a listening socket passed by systemd (socket
** activation): learns its transport and address from the socket itself.
** The Unix socket file stays systemd's (never removed by us). Returns 0,
** or -1 with the reason in err (fd is left open then).
*/
int listener_adopt (struct listener *l, int fd, char *err, size_t errlen);

/* Is fd a socket for addr (same transport and address)? */
int listener_matches (int fd, const struct address *addr);

/* Closes the socket; removes the Unix file if this process created it. */
void listener_close (struct listener *l);

/*
** Removes the Unix socket file only. Async-signal-safe (used on the
** second SIGINT).
*/
void listener_unlink (const struct listener *l);

#endif
