/*
** lluasrv.c -- require "luasrv": sleep, now, log. In the event model
** sleep yields to the loop; elsewhere it blocks only its request.
*/
#include <errno.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "log.h"
#include "lsrv.h"



static int sleep_k (lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  if (status == LUA_YIELD && lsrv_task(L)->wait_rc == ERR_CUT)
    return luaL_error(L, "request cut short: the server is shutting down");
  return 0;
}


static int luasrv_sleep (lua_State *L) {
  lua_Number secs = luaL_checknumber(L, 1);
  struct task *t = lsrv_task(L);
  struct lctx *x = t->x;
  double until;
  luaL_argcheck(L, secs >= 0, 1, "must be >= 0");
  until = monotonic_now() + (double)secs;
  if (x->ops->yields && t != &x->main_task) {
    x->ops->arm(t, NULL, 0, until);
    lua_pushlightuserdata(L, &lsrv_yield_token);
    return lua_yieldk(L, 1, 0, sleep_k);
  }
  if (worker_block(x->w, -1, 0, until) == ERR_CUT)
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
  {NULL, NULL}
};


int luaopen_luasrv (lua_State *L) {
  lspawn_open(L);
  luaL_newlib(L, funcs);
  lua_pushliteral(L, "luasrv 0.1.0");
  lua_setfield(L, -2, "version");
  lshdict_push(L);  /* luasrv.shared.NAME: the --shared dictionaries */
  lua_setfield(L, -2, "shared");
  return 1;
}
