/*
** lfile.c -- luasrv.openfile: an open file for req:sendfile ("luasrv.file").
** Opening once and asking the descriptor (file:stat) what it is means the
** attributes a handler puts in its answer are those of the bytes it
** sends, even when the name is given to another file meanwhile. Reading
** is not here: the bytes go from the descriptor to the socket.
*/
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "fileopen.h"
#include "lsrv.h"

#define LFILE_MT "luasrv.file"

struct lfile {
  int fd;                     /* -1: closed */
};


int lfile_push (lua_State *L, const char *path, int nofollow) {
  struct lfile *f = lua_newuserdatauv(L, sizeof *f, 0);
  f->fd = -1;  /* closed until opened, as liolib's handles */
  luaL_setmetatable(L, LFILE_MT);
  if ((f->fd = fileopen(path, nofollow)) < 0) {
    int rc = f->fd;
    f->fd = -1;
    lua_pop(L, 1);
    return rc;
  }
  return f->fd;
}


int lfile_check (lua_State *L, int idx) {
  return ((struct lfile *)luaL_checkudata(L, idx, LFILE_MT))->fd;
}


static struct lfile *tofile (lua_State *L) {
  return luaL_checkudata(L, 1, LFILE_MT);
}


/* luasrv.openfile(path [, opts]) -> file | nil, err */
int lfile_openfile (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int nofollow = 0, rc;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "symlinks");
    nofollow = lua_type(L, -1) != LUA_TNIL && !lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  if ((rc = lfile_push(L, path, nofollow)) < 0) {
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: %s", path, strerror(-rc));
    return 2;
  }
  return 1;
}


static const char *mode_name (mode_t m) {
  if (S_ISREG(m)) return "file";
  if (S_ISDIR(m)) return "directory";
  if (S_ISLNK(m)) return "link";
  if (S_ISSOCK(m)) return "socket";
  if (S_ISFIFO(m)) return "named pipe";
  if (S_ISCHR(m)) return "char device";
  if (S_ISBLK(m)) return "block device";
  return "other";
}


static void setint (lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}


/* file:stat() -> table | nil, err: lfs.attributes' names, of the descriptor */
static int f_stat (lua_State *L) {
  struct lfile *f = tofile(L);
  struct stat st;
  if (f->fd < 0 || fstat(f->fd, &st) < 0) {
    int en = f->fd < 0 ? EBADF : errno;
    luaL_pushfail(L);
    lua_pushstring(L, f->fd < 0 ? "closed" : strerror(en));
    return 2;
  }
  lua_createtable(L, 0, 10);
  lua_pushstring(L, mode_name(st.st_mode));
  lua_setfield(L, -2, "mode");
  setint(L, "size", (lua_Integer)st.st_size);
  setint(L, "modification", (lua_Integer)st.st_mtime);
  setint(L, "access", (lua_Integer)st.st_atime);
  setint(L, "change", (lua_Integer)st.st_ctime);
  setint(L, "dev", (lua_Integer)st.st_dev);
  setint(L, "ino", (lua_Integer)st.st_ino);
  setint(L, "nlink", (lua_Integer)st.st_nlink);
  setint(L, "uid", (lua_Integer)st.st_uid);
  setint(L, "gid", (lua_Integer)st.st_gid);
  return 1;
}


static int f_close (lua_State *L) {
  struct lfile *f = tofile(L);
  if (f->fd < 0) {
    luaL_pushfail(L);
    lua_pushliteral(L, "closed");
    return 2;
  }
  close(f->fd);
  f->fd = -1;
  lua_pushboolean(L, 1);
  return 1;
}


static int f_gc (lua_State *L) {
  struct lfile *f = tofile(L);
  if (f->fd >= 0) close(f->fd);
  f->fd = -1;
  return 0;
}


static int f_tostring (lua_State *L) {
  struct lfile *f = tofile(L);
  if (f->fd < 0) lua_pushliteral(L, "luasrv.file (closed)");
  else lua_pushfstring(L, "luasrv.file (%d)", f->fd);
  return 1;
}


static const luaL_Reg f_methods[] = {
  {"stat", f_stat},
  {"close", f_close},
  {NULL, NULL}
};

static const luaL_Reg f_meta[] = {
  {"__gc", f_gc},
  {"__close", f_gc},
  {"__tostring", f_tostring},
  {NULL, NULL}
};


void lfile_register (lua_State *L) {
  luaL_newmetatable(L, LFILE_MT);
  luaL_setfuncs(L, f_meta, 0);
  luaL_newlib(L, f_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}
