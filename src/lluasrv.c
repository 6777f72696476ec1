/*
** lluasrv.c -- require "luasrv": sleep, now, log, and the functions of
** lconnect.c, lfile.c, lspawn.c, lsync.c and ltimer.c. sleep waits through sched_wait, as I/O does.
*/
#include <errno.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "log.h"
#include "lsrv.h"



static int sleep_k (lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  if (sched_result(L, status) == ERR_CUT)
    return luaL_error(L, "request cut short: the server is shutting down");
  return 0;
}


static int luasrv_sleep (lua_State *L) {
  lua_Number secs = luaL_checknumber(L, 1);
  luaL_argcheck(L, secs >= 0, 1, "must be >= 0");
  if (sched_wait(L, NULL, 0, monotonic_now() + (double)secs, 0, sleep_k) ==
      ERR_CUT)
    return luaL_error(L, "request cut short: the server is shutting down");
  return 0;
}


static int luasrv_now (lua_State *L) {
  lua_pushnumber(L, (lua_Number)monotonic_now());
  return 1;
}


/* luasrv.log(...): the arguments, tostring'ed and joined by spaces. */
static int luasrv_log (lua_State *L) {
  int n = lua_gettop(L);
  luaL_Buffer b;
  size_t len;
  const char *s;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    luaL_tolstring(L, i, NULL);
    if (i > 1) luaL_addchar(&b, ' ');
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  s = lua_tolstring(L, -1, &len);
  log_text(LOG_INFO, s, len);
  return 0;
}


static const luaL_Reg funcs[] = {
  {"sleep", luasrv_sleep},
  {"now", luasrv_now},
  {"log", luasrv_log},
  {"connect", luasrv_connect},  /* lconnect.c */
  {"spawn", lspawn_spawn},      /* lspawn.c */
  {"wait", lspawn_wait},
  {"kill", lspawn_kill},
  {"openfile", lfile_openfile},  /* lfile.c */
  {NULL, NULL}
};


int luaopen_luasrv (lua_State *L) {
  lspawn_open(L);
  luaL_newlib(L, funcs);
  lua_pushliteral(L, "luasrv 0.1.0");
  lua_setfield(L, -2, "version");
  lshdict_push(L);  /* luasrv.shared.NAME: the --shared dictionaries */
  lua_setfield(L, -2, "shared");
  lsync_push_semaphore(L);  /* lsync.c */
  lua_setfield(L, -2, "semaphore");
  lsync_push_queue(L);
  lua_setfield(L, -2, "queue");
  ltimer_push(L);  /* ltimer.c */
  lua_setfield(L, -2, "timer");
  lua_pushlightuserdata(L, &lsrv_park_token);  /* req:recv's, parking */
  lua_setfield(L, -2, "PARKED");
  return 1;
}
