/*
** lstate.c -- a Lua state for serving: load the handler script, find its
** hooks, build the server tables and the request flow, run hooks with a
** traceback (lua.c's docall). The flow itself is Lua, so that it yields
** wherever a handler does, in every model.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lload.h"
#include "log.h"
#include "lsrv.h"

static const char *const hook_names[] = {
  "init", "verify_request", "setup", "handle", "finish", "handle_error",
  "service_actions", "server_close", NULL
};

/*
** The life of one request, as socketserver's BaseRequestHandler: setup,
** handle, finish (also when handle raised, not when setup raised), errors
** to handle_error, and the connection closed at the end. A handler that
** returns the token of req:recv (PARKED) ends the coroutine here, with
** the request: its rest runs from resumed, in a coroutine of its own,
** when the connection turns readable (model_event.c); why: it timed out
** or the worker stops, and the request ends without its continuation.
*/
static const char flow_src[] =
  "local hooks, traceback, default_error, done, now, join, proxy, tls,\n"
  "  PARKED = ...\n"
  "local xpcall = xpcall\n"
  "local verify, setup, handle, finish, handle_error = hooks.verify_request,\n"
  "  hooks.setup, hooks.handle, hooks.finish, hooks.handle_error\n"
  "local function report(req, err)\n"
  "  if handle_error then\n"
  "    local ok, err2 = xpcall(handle_error, traceback, req, err)\n"
  "    if ok then return end\n"
  "    default_error(req, err)\n"
  "    default_error(req, 'in handle_error: ' .. tostring(err2))\n"
  "  else\n"
  "    default_error(req, err)\n"
  "  end\n"
  "end\n"
  "local function verified(req, t0)\n"
  "  if not verify then return true end\n"
  "  local ok, res = xpcall(verify, traceback, req.client_address, req.server)\n"
  "  if not ok then report(req, res) end\n"
  "  if not ok or not res then\n"
  "    req:close()\n"
  "    if done then done(req, ok and 2 or 1, t0) end\n"
  "    return false\n"
  "  end\n"
  "  return true\n"
  "end\n"
  "local function tail(req, t0, ok, err)\n"
  "  if ok and err == PARKED then return PARKED, req end\n"
  "  join()\n"
  "  local ok2, err2 = true\n"
  "  if finish then ok2, err2 = xpcall(finish, traceback, req); join() end\n"
  "  if not ok then report(req, err) end\n"
  "  if not ok2 then report(req, err2) end\n"
  "  req:close()\n"
  "  if done then done(req, (ok and ok2) and 0 or 1, t0) end\n"
  "end\n"
  "local function resumed(fn, req, state, why)\n"
  "  if why then return tail(req, nil, true) end\n"
  "  return tail(req, nil, xpcall(fn, traceback, req, state))\n"
  "end\n"
  "local function flow(req, skip_verify)\n"
  "  local t0 = done and now()\n"
  "  if proxy and not proxy(req) then return end\n"
  "  if verify and not skip_verify and not verified(req, t0) then return end\n"
  "  if tls and not tls(req) then return end\n"
  "  if setup then\n"
  "    local ok, err = xpcall(setup, traceback, req)\n"
  "    if not ok then\n"
  "      join()\n"
  "      report(req, err)\n"
  "      req:close()\n"
  "      if done then done(req, 1, t0) end\n"
  "      return\n"
  "    end\n"
  "  end\n"
  "  return tail(req, t0, xpcall(handle, traceback, req))\n"
  "end\n"
  "if not (verify or setup or finish or done or proxy or tls) then\n"
  "  flow = function(req)\n"  /* the same with no step to skip: a datagram's
                                ** flow runs per datagram */
  "    local ok, err = xpcall(handle, traceback, req)\n"
  "    if ok and err == PARKED then return PARKED, req end\n"
  "    join()\n"
  "    if not ok then report(req, err) end\n"
  "    req:close()\n"
  "  end\n"
  "end\n"
  "return flow, verified, resumed\n";


/*
** Is this traceback line one of luasrv's own frames: the request flow
** (chunk "=flow"), the xpcall that runs each hook, or the C entry at the
** bottom of a coroutine or a hook call?
*/
static int own_frame (const char *line, size_t len) {
  static const char *const own[] = {
    "\t[C]: in function 'xpcall'", "\t[C]: in ?", NULL
  };
  if (len > 6 && memcmp(line, "\tflow:", 6) == 0) return 1;
  for (int i = 0; own[i] != NULL; i++)
    if (len == strlen(own[i]) && memcmp(line, own[i], len) == 0) return 1;
  return 0;
}


/* Replaces the traceback on top by one that shows the user's frames only. */
static void user_frames (lua_State *L) {
  size_t len;
  const char *s = lua_tolstring(L, -1, &len), *end = s + len;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  while (s < end) {
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    size_t n = nl != NULL ? (size_t)(nl - s) : (size_t)(end - s);
    if (!own_frame(s, n)) {
      if (luaL_bufflen(&b) > 0) luaL_addchar(&b, '\n');
      luaL_addlstring(&b, s, n);
    }
    s += n + (nl != NULL);
  }
  luaL_pushresult(&b);
  lua_remove(L, -2);
}


/* Message handler: the message (made a string) plus the user's traceback. */
static int msghandler (lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)",
                            luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  user_frames(L);
  return 1;
}


/* default_error(req, err): socketserver's handle_error, one log entry. */
static int default_error (lua_State *L) {
  const char *err = luaL_tolstring(L, 2, NULL);
  const char *addr;
  lua_getfield(L, 1, "client_address");
  addr = luaL_tolstring(L, -1, NULL);
  lua_pushfstring(L, "error handling request from %s: %s", addr, err);
  log_text(LOG_ERROR, lua_tostring(L, -1), lua_rawlen(L, -1));
  return 0;
}


void lstate_report (lua_State *L, struct lconn *c, const char *msg) {
  char peer[ADDRESS_STRLEN];
  (void)L;
  address_format_peer((struct sockaddr *)&c->peer, c->peerlen, peer,
                      sizeof peer);
  log_error("error handling request from %s: %s", peer, msg);
}


static int server_shutdown (lua_State *L) {
  worker_stop(lsrv_ctx(L)->w);
  return 0;
}


/* Builds one server table per listener; leaves the array on the stack. */
static void push_servers (lua_State *L, struct lctx *x) {
  struct worker *w = x->w;
  lua_createtable(L, w->nls, 0);
  for (int i = 0; i < w->nls; i++) {
    lua_createtable(L, 0, 6);
    lua_pushstring(L, w->ls[i].name);
    lua_setfield(L, -2, "address");
    lua_pushstring(L, transport_name(w->ls[i].addr.tr));
    lua_setfield(L, -2, "transport");
    lua_pushstring(L, model_name(w->cfg->model));
    lua_setfield(L, -2, "model");
    lua_pushinteger(L, w->id);
    lua_setfield(L, -2, "worker");
    lua_pushcfunction(L, server_shutdown);
    lua_setfield(L, -2, "shutdown");
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "listeners");  /* every server table lists all */
    lua_rawseti(L, -2, i + 1);
  }
}


/* Checks the hooks table at the top of the stack. */
static int check_hooks (lua_State *L, const char *script, char *err,
                        size_t errlen) {
  for (int i = 0; hook_names[i] != NULL; i++) {
    int t = lua_getfield(L, -1, hook_names[i]);
    lua_pop(L, 1);
    if (t == LUA_TNIL && strcmp(hook_names[i], "handle") == 0) {
      snprintf(err, errlen, "%s: no 'handle' function (return a table with "
               "handle, or define a global function handle)", script);
      return -1;
    }
    if (t != LUA_TNIL && t != LUA_TFUNCTION) {
      snprintf(err, errlen, "%s: hook '%s' is a %s, not a function", script,
               hook_names[i], lua_typename(L, t));
      return -1;
    }
  }
  return 0;
}


/* Runs the script; leaves its hooks table on the stack. */
static int load_script (lua_State *L, const char *script, char *err,
                        size_t errlen) {
  if (lload_script(L, script) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    return -1;
  }
  if (lua_isnil(L, -1)) {  /* globals style */
    lua_pop(L, 1);
    lua_pushglobaltable(L);
  }
  else if (!lua_istable(L, -1)) {
    snprintf(err, errlen, "%s: the script returned a %s (return a table of "
             "hooks, or nothing and define them as globals)", script,
             luaL_typename(L, -1));
    return -1;
  }
  return check_hooks(L, script, err, errlen);
}


/*
** Lets scripts require luasrv's own Lua modules (luasrv.test, and the
** protocol helpers): from the tree the binary was built in (EXE/../lua)
** and from where `make install` puts them (LUASRV_LUADIR), ahead of
** Lua's own path.
*/
static void add_module_path (lua_State *L) {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  luaL_Buffer b;
  lua_getglobal(L, "package");
  luaL_buffinit(L, &b);
  if (n > 0) {
    char *slash;
    exe[n] = '\0';
    if ((slash = strrchr(exe, '/')) != NULL) {
      *slash = '\0';
      lua_pushfstring(L, "%s/../lua/?.lua;%s/../lua/?/init.lua;", exe, exe);
      luaL_addvalue(&b);
    }
  }
#ifdef LUASRV_LUADIR
  luaL_addstring(&b, LUASRV_LUADIR "/?.lua;" LUASRV_LUADIR "/?/init.lua;");
#endif
  lua_getfield(L, -2, "path");
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
}


static void openlibs (lua_State *L) {
  luaL_openlibs(L);
  add_module_path(L);
  lload_install(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_luasrv);
  lua_setfield(L, -2, "luasrv");
  { int luaopen_luasrv_ngxc (lua_State *); lua_pushcfunction(L, luaopen_luasrv_ngxc); lua_setfield(L, -2, "luasrv.ngxc"); }  /* lngxc.c */
  { int luaopen_luasrv_respc (lua_State *); lua_pushcfunction(L, luaopen_luasrv_respc); lua_setfield(L, -2, "luasrv.respc"); }  /* lresp.c */
  lua_pop(L, 1);
  luaopen_lconn(L);
  lconnect_open(L);
}


static int flow_now (lua_State *L) {
  lua_pushnumber(L, (lua_Number)monotonic_now());
  return 1;
}


/*
** done(req, outcome, t0): the end of a request, for --metrics and
** --access-log. outcome: 0 ok, 1 a hook raised, 2 verify_request refused.
*/
static int flow_done (lua_State *L) {
  struct lconn *c = lua_touserdata(L, 1);
  struct worker *w = lsrv_ctx(L)->w;
  int outcome = (int)lua_tointeger(L, 2);
  double secs;
  static const char *const names[] = {"ok", "error", "refused"};
  if (c == NULL || c->tag != &lsrv_conn_tag || outcome < 0 || outcome > 2)
    return 0;
  /* a parked request's flow ends in resumed, which has no t0: its start */
  secs = monotonic_now() - (lua_isnumber(L, 3) ? lua_tonumber(L, 3) : c->born);
  if (w->mslot != NULL) {
    metrics_request(w->mslot, outcome, c->io.nin, c->io.nout, secs);
    atomic_store_explicit(&w->mslot->lua_bytes, lsrv_ctx(L)->mem_used,
                          memory_order_relaxed);
  }
  if (w->cfg->access_log) {
    char peer[ADDRESS_STRLEN];
    address_format_peer((struct sockaddr *)&c->peer, c->peerlen, peer,
                        sizeof peer);
    log_info("access %s %s in=%llu out=%llu time=%.6f %s", peer,
             transport_name(w->ls[c->lindex].addr.tr), c->io.nin, c->io.nout, secs,
             names[outcome]);
  }
  return 0;
}


/* Builds the flow from the hooks table at the top; pops it. */
static void make_flow (lua_State *L, struct lctx *x) {
  int rc = luaL_loadbuffer(L, flow_src, sizeof flow_src - 1, "=flow");
  int counted = x->w->mslot != NULL || x->w->cfg->access_log;
  lua_assert(rc == LUA_OK);
  (void)rc;
  lua_insert(L, -2);  /* flow chunk below the hooks */
  lua_pushcfunction(L, msghandler);
  lua_pushcfunction(L, default_error);
  if (counted) lua_pushcfunction(L, flow_done);
  else lua_pushnil(L);  /* nothing to count: the flow skips it */
  lua_pushcfunction(L, flow_now);
  lua_pushcfunction(L, lspawn_join);  /* waits for the request's threads */
  if (x->w->cfg->proxy_protocol) lua_pushcfunction(L, lconn_proxy);
  else lua_pushnil(L);  /* no PROXY header expected: the flow skips it */
  lua_pushnil(L);  /* no --tls listener: no handshake step */
  for (int i = 0; i < x->w->nls; i++)
    if (x->w->ls[i].addr.tr == TR_TLS) {
      lua_pop(L, 1);
      lua_pushcfunction(L, ltls_accept);
      break;
    }
  lua_pushlightuserdata(L, &lsrv_park_token);
  lua_call(L, 9, 3);
  x->resumed_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  x->verify_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  x->flow_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}


/*
** The state's allocator: counts what the state holds so --memory-limit
** can refuse an allocation. Lua answers a refusal with a full collection
** and, if that is not enough, the error "not enough memory" in the code
** that asked: the request fails, the state and the worker go on.
*/
static void *l_alloc (void *ud, void *ptr, size_t osize, size_t nsize) {
  struct lctx *x = ud;
  size_t old = ptr != NULL ? osize : 0;  /* without ptr, osize is a type */
  void *p;
  if (nsize == 0) {
    free(ptr);
    x->mem_used -= old;
    return NULL;
  }
  if (x->mem_limit > 0 && nsize > old &&
      x->mem_used + (nsize - old) > x->mem_limit)
    return NULL;
  if ((p = realloc(ptr, nsize)) != NULL) x->mem_used = x->mem_used - old + nsize;
  else x->sys_oom = 1;
  return p;
}


/* {====================================================== --cpu-limit */

#define CPU_HOOK_COUNT 10000  /* VM instructions between checks */

static double cpu_now (void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}


void lstate_cpu_begin (struct lctx *x, struct task *t, int fresh) {
  if (x->w->cfg->cpu_limit <= 0) return;
  if (fresh) t->cpu_used = 0;
  x->cpu_task = t;
  x->cpu_mark = cpu_now();
}


void lstate_cpu_end (struct lctx *x) {
  double now;
  if (x->cpu_task == NULL) return;
  now = cpu_now();
  x->cpu_task->cpu_used += now - x->cpu_mark;
  x->cpu_task = NULL;
}


/*
** Runs every CPU_HOOK_COUNT instructions in every thread of the state
** (lua_newthread copies the hook). A request past its limit gets an
** error where it runs; its count restarts, so finish and handle_error
** get a budget of their own, and a handler that catches the error and
** loops on gets it again one limit later.
*/
static void cpu_hook (lua_State *L, lua_Debug *ar) {
  struct lctx *x = lsrv_ctx(L);
  struct task *t = x->cpu_task;
  double now, limit = x->w->cfg->cpu_limit;
  (void)ar;
  if (t == NULL) return;  /* init, service_actions, server_close */
  now = cpu_now();
  if (t->cpu_used + (now - x->cpu_mark) <= limit) return;
  t->cpu_used = 0;
  x->cpu_mark = now;
  luaL_error(L, "cpu limit exceeded (%f s)", limit);
}

/* }====================================================== */


struct lctx *lstate_new (struct worker *w, const char *script,
                         const struct sched_ops *ops, char *err, size_t errlen) {
  struct lctx *x = calloc(1, sizeof *x);
  lua_State *L;
  if (x == NULL || (L = luaL_newstate()) == NULL) {
    snprintf(err, errlen, "cannot create a Lua state: %s", strerror(ENOMEM));
    free(x);
    return NULL;
  }
  x->w = w;
  x->ops = ops;
  x->script = script;
  /* luaL_newstate's panic and warning functions, our allocator: both
  ** allocate with malloc, so the blocks allocated so far stay valid. */
  x->mem_used = (size_t)lua_gc(L, LUA_GCCOUNT) * 1024 +
                (size_t)lua_gc(L, LUA_GCCOUNTB);
  x->mem_limit = w->cfg->memory_limit;
  lua_setallocf(L, l_alloc, x);
  /*
  ** The generational collector, as lua.c runs its scripts: a request's
  ** objects die young, and a young collection sweeps only them. The
  ** incremental default did a whole cycle's sweep in one step of about
  ** 1 ms (its step is 8 KB of allocation times stepmul 100: for a
  ** 1 MB heap, all of it), which every request in flight then waited
  ** for: the p99 of scripts/http.lua's /json was p50 plus that step. A
  ** young collection here is a third of it, and a request costs 4% fewer
  ** instructions (callgrind, /hello and /json). A script may go back
  ** with collectgarbage("incremental").
  */
  lua_gc(L, LUA_GCGEN, 0, 0);
  if (w->cfg->cpu_limit > 0) lua_sethook(L, cpu_hook, LUA_MASKCOUNT, CPU_HOOK_COUNT);
  bufpool_init(&x->pool);
  x->main_task.x = x;
  x->main_task.co = L;
  x->main_task.ref = LUA_NOREF;
  timer_init(&x->main_task.timer, NULL, &x->main_task);
  lsrv_settask(L, &x->main_task);  /* before anything can run */
  openlibs(L);
  push_servers(L, x);
  x->servers_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (load_script(L, script, err, errlen) < 0) {
    lstate_close(x);
    return NULL;
  }
  lua_pushvalue(L, -1);
  x->hooks_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  make_flow(L, x);
  lua_settop(L, 0);
  return x;
}


void lstate_close (struct lctx *x) {
  if (x == NULL) return;
  lua_close(x->main_task.co);
  bufpool_free(&x->pool);
  free(x);
}


/* call_hook(x, name, fatal): looks the hook up and calls it; raises. */
static int call_hook (lua_State *L) {
  struct lctx *x = lua_touserdata(L, 1);
  const char *name = lua_touserdata(L, 2);
  int fatal = lua_toboolean(L, 3);
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, x->hooks_ref);
  if (lua_getfield(L, -1, name) != LUA_TFUNCTION) return 0;
  if (fatal) lua_pushnil(L);
  else lua_pushcfunction(L, msghandler);
  lua_insert(L, -2);  /* message handler under the hook */
  lua_rawgeti(L, LUA_REGISTRYINDEX, x->servers_ref);
  lua_rawgeti(L, -1, 1);  /* the first listener's server table */
  lua_remove(L, -2);
  if (lua_pcall(L, 1, 0, fatal ? 0 : -3) != LUA_OK) {
    const char *msg = luaL_tolstring(L, -1, NULL);
    if (fatal) log_error("error: %s", msg);
    else log_error("error in %s: %s", name, msg);
    lua_pushboolean(L, 1);
    return 1;
  }
  return 0;
}


/*
** Calls hook NAME with the first listener's server table, if the script
** has it. A fatal hook (init) reports its error as the one line
** "error: FILE:LINE: MSG" the server exits with; the others log the
** error with its traceback and the server goes on. All of it runs
** protected: looking the hook up may need memory the state lacks.
*/
int lstate_call_hook (struct lctx *x, const char *name, int fatal) {
  lua_State *L = lsrv_L(x);
  int top = lua_gettop(L), rc = 0;
  lua_pushcfunction(L, call_hook);
  lua_pushlightuserdata(L, x);
  lua_pushlightuserdata(L, (void *)name);
  lua_pushboolean(L, fatal);
  if (lua_pcall(L, 3, 1, 0) != LUA_OK) {
    log_error("error in %s: %s", name, lua_tostring(L, -1));
    rc = -1;
  }
  else if (lua_toboolean(L, -1)) rc = -1;
  lua_settop(L, top);
  return rc;
}


int lstate_verify (struct lctx *x) {
  lua_State *L = lsrv_L(x);
  int ok;
  lua_rawgeti(L, LUA_REGISTRYINDEX, x->verify_ref);
  lua_pushvalue(L, -2);  /* verify step, req */
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {  /* the step catches the rest */
    log_error("error in verify_request: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return 0;
  }
  ok = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return ok;
}


void lstate_push_flow (lua_State *L, struct lctx *x) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, x->flow_ref);
}
