/*
** lload.h -- the handler script and its modules, read from disk once per
** process (see lload.c).
*/
#ifndef LUASRV_LLOAD_H
#define LUASRV_LLOAD_H

#include <lua.h>

/* luaL_loadfile, from the process's copy of the file after the first. */
int lload_script (lua_State *L, const char *path);

/* Replaces package.searchers' Lua and C searchers by cached ones. */
void lload_install (lua_State *L);

#endif
