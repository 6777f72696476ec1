/*
** listener.c -- listening sockets, in the manner of Redis's anet.c.
** Errors are written into a caller-supplied buffer as one line.
*/
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "listener.h"


static int fail (struct listener *l, const char *what, int en,
                 char *err, size_t errlen) {
  char name[ADDRESS_STRLEN];
  address_format(&l->addr, name, sizeof name);
  snprintf(err, errlen, "cannot listen on %s: %s%s%s", name,
           what ? what : "", what ? ": " : "", strerror(en));
  if (l->fd >= 0) close(l->fd);
  l->fd = -1;
  return -1;
}


/*
** A Unix socket file that already exists is replaced only when nobody is
** listening on it (connect is refused): that is a stale file from a server
** that did not clean up. A live one, or a file that is not a socket, is an
** error.
*/
static int check_unix_path (struct listener *l, char *err, size_t errlen) {
  struct sockaddr_un *sun = (struct sockaddr_un *)&l->addr.sa;
  struct stat st;
  int fd, rc, en;
  if (lstat(sun->sun_path, &st) < 0)
    return errno == ENOENT ? 0 : fail(l, "stat", errno, err, errlen);
  if (!S_ISSOCK(st.st_mode)) {
    char name[ADDRESS_STRLEN];
    address_format(&l->addr, name, sizeof name);
    snprintf(err, errlen, "cannot listen on %s: the path exists and is not "
             "a socket", name);
    return -1;
  }
  fd = socket(AF_UNIX, (l->stream ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC,
              0);
  if (fd < 0) return fail(l, "socket", errno, err, errlen);
  rc = connect(fd, (struct sockaddr *)sun, l->addr.salen);
  en = errno;
  close(fd);
  if (rc == 0 || (en != ECONNREFUSED && en != ENOENT)) {
    char name[ADDRESS_STRLEN];
    address_format(&l->addr, name, sizeof name);
    snprintf(err, errlen, "cannot listen on %s: another server is using "
             "the socket file", name);
    return -1;
  }
  if (unlink(sun->sun_path) < 0 && errno != ENOENT)
    return fail(l, "removing stale socket file", errno, err, errlen);
  return 0;
}


static int set_options (struct listener *l, const struct listen_opts *o) {
  int one = 1;
  int family = l->addr.sa.ss_family;
  if (family == AF_UNIX) return 0;
  if (l->stream &&
      setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
    return -1;
  if (o->reuse_port &&
      setsockopt(l->fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
    return -1;
  /* [::] listens on IPv6 only, so [::] and 0.0.0.0 can both be bound. */
  if (family == AF_INET6 &&
      setsockopt(l->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
    return -1;
  return 0;
}


/* Reads back the bound address so port 0 shows the real port. */
static void learn_address (struct listener *l) {
  socklen_t len = sizeof l->addr.sa;
  if (l->addr.sa.ss_family != AF_UNIX &&
      getsockname(l->fd, (struct sockaddr *)&l->addr.sa, &len) == 0)
    l->addr.salen = len;
  address_format(&l->addr, l->name, sizeof l->name);
}


int listener_open (struct listener *l, const struct address *addr,
                   const struct listen_opts *o, char *err, size_t errlen) {
  int type;
  memset(l, 0, sizeof *l);
  l->addr = *addr;
  l->fd = -1;
  l->stream = transport_is_stream(addr->tr);
  l->owner = getpid();
  address_format(&l->addr, l->name, sizeof l->name);
  if (addr->sa.ss_family == AF_UNIX && check_unix_path(l, err, errlen) < 0)
    return -1;
  type = (l->stream ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC;
  l->fd = socket(addr->sa.ss_family, type, 0);
  if (l->fd < 0) return fail(l, NULL, errno, err, errlen);
  if (set_options(l, o) < 0) return fail(l, "setsockopt", errno, err, errlen);
  if (bind(l->fd, (const struct sockaddr *)&addr->sa, addr->salen) < 0)
    return fail(l, NULL, errno, err, errlen);
  if (addr->sa.ss_family == AF_UNIX) {
    l->created_path = 1;
    if (o->unix_mode >= 0 &&
        chmod(((struct sockaddr_un *)&l->addr.sa)->sun_path,
              (mode_t)o->unix_mode) < 0) {
      int en = errno;
      listener_unlink(l);
      return fail(l, "chmod", en, err, errlen);
    }
  }
  if (l->stream && listen(l->fd, o->backlog) < 0) {
    int en = errno;
    listener_unlink(l);
    return fail(l, NULL, en, err, errlen);
  }
  learn_address(l);
  return 0;
}


/* The transport of socket fd, or -1 when it is none luasrv serves. */
static int fd_transport (int fd, struct sockaddr_storage *sa, socklen_t *len) {
  int type;
  socklen_t tlen = sizeof type;
  *len = sizeof *sa;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0 ||
      getsockname(fd, (struct sockaddr *)sa, len) < 0)
    return -1;
  switch (sa->ss_family) {
    case AF_INET: case AF_INET6:
      return type == SOCK_STREAM ? TR_TCP : type == SOCK_DGRAM ? TR_UDP : -1;
    case AF_UNIX:
      return type == SOCK_STREAM ? TR_UNIX : type == SOCK_DGRAM ? TR_UNIXGRAM : -1;
    default:
      return -1;
  }
}


int listener_matches (int fd, const struct address *addr) {
  struct sockaddr_storage sa;
  socklen_t len;
  int tr = fd_transport(fd, &sa, &len);
  /* TLS is TCP to the kernel */
  if (tr != (int)addr->tr && !(tr == TR_TCP && addr->tr == TR_TLS)) return 0;
  if (sa.ss_family != addr->sa.ss_family) return 0;
  switch (sa.ss_family) {
    case AF_INET: {
      const struct sockaddr_in *a = (const struct sockaddr_in *)&sa,
                               *b = (const struct sockaddr_in *)&addr->sa;
      return a->sin_port == b->sin_port &&
             a->sin_addr.s_addr == b->sin_addr.s_addr;
    }
    case AF_INET6: {
      const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&sa,
                                *b = (const struct sockaddr_in6 *)&addr->sa;
      return a->sin6_port == b->sin6_port &&
             memcmp(&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr) == 0;
    }
    default:
      return strcmp(((const struct sockaddr_un *)&sa)->sun_path,
                    ((const struct sockaddr_un *)&addr->sa)->sun_path) == 0;
  }
}


int listener_adopt (struct listener *l, int fd, char *err, size_t errlen) {
  socklen_t len;
  int tr, fl;
  memset(l, 0, sizeof *l);
  l->fd = -1;
  if ((tr = fd_transport(fd, &l->addr.sa, &len)) < 0) {
    snprintf(err, errlen, "socket activation: descriptor %d is not a TCP, "
             "UDP or Unix socket", fd);
    return -1;
  }
  l->addr.tr = (enum transport)tr;
  l->addr.salen = len;
  l->stream = transport_is_stream(l->addr.tr);
  l->owner = getpid();
  fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
      fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
    snprintf(err, errlen, "socket activation: descriptor %d: %s", fd,
             strerror(errno));
    return -1;
  }
  l->fd = fd;
  address_format(&l->addr, l->name, sizeof l->name);
  return 0;
}


void listener_unlink (const struct listener *l) {
  if (l->created_path && l->owner == getpid())
    unlink(((const struct sockaddr_un *)&l->addr.sa)->sun_path);
}


void listener_close (struct listener *l) {
  if (l->fd >= 0) close(l->fd);
  l->fd = -1;
  listener_unlink(l);
  l->created_path = 0;
}
