/*
** lload.h -- the handler script and its modules, read from disk once per
** process (see lload.c).
*/
#ifndef LUASRV_LLOAD_H
#define LUASRV_LLOAD_H

#include <lua.h>

/* luaL_loadfile, from the process's copy of the file after the first. */
int lload_script (lua_State *L, const char *path);

/*
** The master's copy of a generation's script: lload_read reads a whole
** file (NULL with errno set; free it), and lload_seed, in a worker just
** forked, makes those bytes the process's copy of path, so that a worker
** started again after a crash runs its generation's script, not whatever
** the file holds by then.
*/
char *lload_read (const char *path, size_t *len);
void lload_seed (const char *path, const char *data, size_t len);

/* Replaces package.searchers' Lua and C searchers by cached ones. */
void lload_install (lua_State *L);

#endif
