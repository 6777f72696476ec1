/*
** fileopen.h -- opening a file to send: read-only, non-blocking (a FIFO
** put in a file's place does not hold the worker), and on request with
** no symbolic link anywhere in its path. No Lua here.
*/
#ifndef LUASRV_FILEOPEN_H
#define LUASRV_FILEOPEN_H

/*
** Opens path read-only; nofollow: refused (-ELOOP) if any part of the
** path is a symbolic link. Returns the descriptor or -errno.
*/
int fileopen (const char *path, int nofollow);

/*
** The nofollow open of a kernel without openat2 (before Linux 5.6): the
** path walked a part at a time, each opened with O_NOFOLLOW relative to
** the one before. fileopen uses it on ENOSYS; the unit tests call it.
*/
int fileopen_walk (const char *path);

#endif
