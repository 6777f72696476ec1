/*
** fileopen.c -- open a file to send (see fileopen.h): openat2's
** RESOLVE_NO_SYMLINKS where the kernel has it, else a walk of the path
** with O_NOFOLLOW at every part. Either way a link anywhere refuses the
** open, so a caller that checked the path's parts can trust the file it
** gets to be under the directory it checked.
*/
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fileopen.h"

#define OPEN_FLAGS (O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)


/* openat that retries EINTR; the descriptor or -errno. */
static int open_at (int dir, const char *name, int flags) {
  int fd;
  do fd = openat(dir, name, flags);
  while (fd < 0 && errno == EINTR);
  return fd >= 0 ? fd : -errno;
}


/*
** One part of the walk, name, relative to dir: a directory (O_PATH, so
** only search permission is needed, as for a path) or, last, the file.
** A link opened as itself (O_PATH | O_NOFOLLOW) is refused here.
*/
static int open_part (int dir, const char *name, int last) {
  struct stat st;
  int fd, rc;
  if (last) return open_at(dir, name, OPEN_FLAGS | O_NOFOLLOW);
  fd = open_at(dir, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return fd;
  if (fstat(fd, &st) < 0) rc = -errno;
  else if (S_ISLNK(st.st_mode)) rc = -ELOOP;
  else if (!S_ISDIR(st.st_mode)) rc = -ENOTDIR;
  else return fd;
  close(fd);
  return rc;
}


int fileopen_walk (const char *path) {
  char part[NAME_MAX + 1];
  const char *p = path;
  int dir = AT_FDCWD, rc = -ENOENT;
  if (*p == '/') {
    if ((dir = open_at(AT_FDCWD, "/", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
      return dir;
  }
  for (;;) {  /* bounded: each pass takes one part of path */
    size_t n;
    int fd;
    while (*p == '/') p++;
    n = strcspn(p, "/");
    if (n == 0) break;  /* "" or "/": nothing to open */
    if (n > NAME_MAX) {
      rc = -ENAMETOOLONG;
      break;
    }
    memcpy(part, p, n);
    part[n] = '\0';
    p += n;
    while (*p == '/') p++;
    fd = open_part(dir, part, *p == '\0');
    if (dir != AT_FDCWD) close(dir);
    dir = AT_FDCWD;
    if (fd < 0 || *p == '\0') return fd;
    dir = fd;
  }
  if (dir != AT_FDCWD) close(dir);
  return rc;
}


int fileopen (const char *path, int nofollow) {
  int fd;
  if (!nofollow) return open_at(AT_FDCWD, path, OPEN_FLAGS);
#ifdef SYS_openat2
  {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (unsigned long long)(OPEN_FLAGS | O_NOFOLLOW);
    how.resolve = RESOLVE_NO_SYMLINKS;
    do fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
    while (fd < 0 && errno == EINTR);
    if (fd >= 0) return fd;
    if (errno != ENOSYS) return -errno;
  }
#endif
  (void)fd;
  return fileopen_walk(path);
}
