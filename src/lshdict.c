/*
** lshdict.c -- luasrv.shared.NAME: the shared dictionaries (shdict.c)
** for Lua, as OpenResty's ngx.shared.DICT (methods called with ':').
** Arguments are checked and every Lua allocation made outside the
** zone's lock: nothing here can raise an error while it is held.
*/
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lsrv.h"
#include "shdict.h"

#define SHDICT_MT "luasrv.shdict"

struct lshd {
  struct shdict *d;
  int index;                  /* in the registry: its name */
};


static struct shdict *check_dict (lua_State *L) {
  return ((struct lshd *)luaL_checkudata(L, 1, SHDICT_MT))->d;
}


static const char *check_key (lua_State *L, int i, size_t *len) {
  if (lua_isnoneornil(L, i)) luaL_argerror(L, i, "nil key");
  return luaL_checklstring(L, i, len);
}


static void check_value (lua_State *L, int i, struct shd_val *v) {
  memset(v, 0, sizeof *v);
  switch (lua_type(L, i)) {
    case LUA_TNONE: case LUA_TNIL: v->type = SHD_NIL; break;
    case LUA_TBOOLEAN: v->type = SHD_BOOL; v->b = lua_toboolean(L, i); break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, i)) {
        v->type = SHD_INT;
        v->i = (int64_t)lua_tointeger(L, i);
      }
      else {
        v->type = SHD_NUM;
        v->n = (double)lua_tonumber(L, i);
      }
      break;
    case LUA_TSTRING: v->type = SHD_STR; v->s = lua_tolstring(L, i, &v->len); break;
    default:
      luaL_typeerror(L, i, "string, number, boolean or nil");
  }
}


static void check_number (lua_State *L, int i, struct shd_val *v) {
  luaL_checknumber(L, i);
  if (lua_type(L, i) != LUA_TNUMBER) luaL_typeerror(L, i, "number");
  check_value(L, i, v);
}


static double check_ttl (lua_State *L, int i) {
  lua_Number t = luaL_optnumber(L, i, 0);
  luaL_argcheck(L, t >= 0 && t <= 1e9, i, "bad ttl (seconds, 0 = never)");
  return (double)t;
}


static void push_value (lua_State *L, const struct shd_val *v) {
  switch (v->type) {
    case SHD_STR: lua_pushlstring(L, v->s, v->len); break;
    case SHD_INT: lua_pushinteger(L, (lua_Integer)v->i); break;
    case SHD_NUM: lua_pushnumber(L, (lua_Number)v->n); break;
    case SHD_BOOL: lua_pushboolean(L, v->b); break;
    default: lua_pushnil(L); break;
  }
}


/* nil, message [, forcible] */
static int fail (lua_State *L, int rc, size_t klen, int forcible, int nres) {
  lua_pushnil(L);
  if (rc == SHD_BADKEY) lua_pushstring(L, klen == 0 ? "empty key" : "key too long");
  else lua_pushstring(L, shdict_strerror(rc));
  if (nres == 3) lua_pushboolean(L, forcible);
  return nres;
}


/*
** dict:get(key), and dict:lpop(key) / rpop when pop (left: lpop): the
** value, or nil (absent, or an empty list), or nil, err. The value is
** copied out under the lock into buf; one bigger than buf (SHD_AGAIN,
** v.len its size) is asked for again with scratch space that big.
*/
static int fetch (lua_State *L, int pop, int left) {
  struct shdict *d = check_dict(L);
  size_t klen, cap = 512;
  const char *key = check_key(L, 2, &klen);
  char stackbuf[512], *buf = stackbuf;
  struct shd_val v;
  int rc;
  while ((rc = pop ? shdict_pop(d, left, key, klen, &v, buf, cap) :
               shdict_get(d, key, klen, &v, buf, cap)) == SHD_AGAIN) {
    if (buf != stackbuf) lua_pop(L, 1);
    cap = v.len;
    buf = lua_newuserdatauv(L, cap, 0);  /* scratch, outside the lock */
  }
  if (rc == SHD_NOTFOUND) {
    lua_pushnil(L);
    return 1;
  }
  if (rc < 0) return fail(L, rc, klen, 0, 2);
  push_value(L, &v);
  return 1;
}

/* dict:get(key) -> value, or nil */
static int l_get (lua_State *L) { return fetch(L, 0, 0); }


static int store (lua_State *L, enum shd_mode mode) {
  struct shdict *d = check_dict(L);
  size_t klen;
  const char *key = check_key(L, 2, &klen);
  struct shd_val v;
  double ttl;
  int forcible, rc;
  check_value(L, 3, &v);
  ttl = check_ttl(L, 4);
  rc = shdict_store(d, mode, key, klen, &v, ttl, &forcible);
  if (rc < 0) return fail(L, rc, klen, forcible, 3);
  lua_pushboolean(L, 1);
  lua_pushnil(L);
  lua_pushboolean(L, forcible);
  return 3;
}

/* dict:set(key, value [, ttl]) -> true, nil, forcible | nil, err, forcible */
static int l_set (lua_State *L) { return store(L, SHD_SET); }
static int l_add (lua_State *L) { return store(L, SHD_ADD); }
static int l_replace (lua_State *L) { return store(L, SHD_REPLACE); }


/* dict:incr(key, n [, init [, init_ttl]]) -> new, nil, forcible | nil, err */
static int l_incr (lua_State *L) {
  struct shdict *d = check_dict(L);
  size_t klen;
  const char *key = check_key(L, 2, &klen);
  struct shd_val delta, init, out;
  double ttl;
  int forcible, rc, has_init = !lua_isnoneornil(L, 4);
  check_number(L, 3, &delta);
  if (has_init) check_number(L, 4, &init);
  ttl = check_ttl(L, 5);
  rc = shdict_incr(d, key, klen, &delta, has_init ? &init : NULL, ttl, &out,
                   &forcible);
  if (rc < 0) return fail(L, rc, klen, forcible, 3);
  push_value(L, &out);
  lua_pushnil(L);
  lua_pushboolean(L, forcible);
  return 3;
}


static int l_delete (lua_State *L) {
  struct shdict *d = check_dict(L);
  size_t klen;
  const char *key = check_key(L, 2, &klen);
  int rc = shdict_delete(d, key, klen);
  if (rc < 0) return fail(L, rc, klen, 0, 2);
  lua_pushboolean(L, 1);
  return 1;
}


/* dict:ttl(key) -> seconds left (0: never expires) | nil, "not found" */
static int l_ttl (lua_State *L) {
  struct shdict *d = check_dict(L);
  size_t klen;
  const char *key = check_key(L, 2, &klen);
  double secs;
  int rc = shdict_ttl(d, key, klen, &secs);
  if (rc < 0) return fail(L, rc, klen, 0, 2);
  lua_pushnumber(L, (lua_Number)secs);
  return 1;
}


/* The keys, packed as (size_t length, bytes) into a malloc'd buffer. */
struct keybuf {
  char *p;
  size_t len, cap;
  int oom;
};

static int add_key (void *ud, const char *key, size_t klen) {
  struct keybuf *b = ud;
  size_t need = b->len + sizeof(size_t) + klen;
  if (need > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    char *p;
    while (cap < need) cap *= 2;
    if ((p = realloc(b->p, cap)) == NULL) {
      b->oom = 1;
      return 1;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, &klen, sizeof klen);
  memcpy(b->p + b->len + sizeof klen, key, klen);
  b->len = need;
  return 0;
}


/* Pushes the keys in the keybuf (a light userdata) as an array. */
static int push_keys (lua_State *L) {
  const struct keybuf *b = lua_touserdata(L, 1);
  int n = 0;
  lua_createtable(L, 0, 0);
  for (size_t off = 0; off < b->len; ) {
    size_t klen;
    memcpy(&klen, b->p + off, sizeof klen);
    lua_pushlstring(L, b->p + off + sizeof klen, klen);
    lua_rawseti(L, -2, ++n);
    off += sizeof klen + klen;
  }
  return 1;
}


/* dict:keys([max]) -> array of up to max keys (default 1024, 0 = all) */
static int l_keys (lua_State *L) {
  struct shdict *d = check_dict(L);
  lua_Integer max = luaL_optinteger(L, 2, 1024);
  struct keybuf b = {NULL, 0, 0, 0};
  int rc;
  luaL_argcheck(L, max >= 0, 2, "must be >= 0");
  luaL_checkstack(L, 4, NULL);
  shdict_keys(d, max > 0x7fffffff ? 0 : (int)max, add_key, &b);
  if (b.oom) {
    free(b.p);
    return luaL_error(L, "not enough memory");
  }
  /* protected, so that a memory error does not leak the buffer */
  lua_pushcfunction(L, push_keys);
  lua_pushlightuserdata(L, &b);
  rc = lua_pcall(L, 1, 1, 0);
  free(b.p);
  if (rc != LUA_OK) return lua_error(L);
  return 1;
}


static int l_flush_all (lua_State *L) {
  shdict_flush_all(check_dict(L));
  return 0;
}


static int l_free_space (lua_State *L) {
  lua_pushinteger(L, (lua_Integer)shdict_free_space(check_dict(L)));
  return 1;
}


static int l_capacity (lua_State *L) {
  lua_pushinteger(L, (lua_Integer)shdict_capacity(check_dict(L)));
  return 1;
}


static int l_tostring (lua_State *L) {
  struct lshd *u = luaL_checkudata(L, 1, SHDICT_MT);
  lua_pushfstring(L, "luasrv.shared.%s", shdict_name_at(u->index));
  return 1;
}


/* dict:lpush(key, value) / rpush -> length | nil, err */
static int push (lua_State *L, int left) {
  struct shdict *d = check_dict(L);
  size_t klen;
  const char *key = check_key(L, 2, &klen);
  struct shd_val v;
  long len;
  int forcible, rc;
  check_value(L, 3, &v);
  luaL_argcheck(L, v.type != SHD_NIL, 3, "value expected (not nil)");
  rc = shdict_push(d, left, key, klen, &v, &len, &forcible);
  if (rc < 0) return fail(L, rc, klen, 0, 2);
  lua_pushinteger(L, (lua_Integer)len);
  return 1;
}

static int l_lpush (lua_State *L) { return push(L, 1); }
static int l_rpush (lua_State *L) { return push(L, 0); }


/* dict:lpop(key) / rpop -> value | nil (empty or absent) | nil, err */
static int l_lpop (lua_State *L) { return fetch(L, 1, 1); }
static int l_rpop (lua_State *L) { return fetch(L, 1, 0); }


/* dict:llen(key) -> length (0: absent) | nil, err */
static int l_llen (lua_State *L) {
  struct shdict *d = check_dict(L);
  size_t klen;
  const char *key = check_key(L, 2, &klen);
  long len;
  int rc = shdict_llen(d, key, klen, &len);
  if (rc < 0) return fail(L, rc, klen, 0, 2);
  lua_pushinteger(L, (lua_Integer)len);
  return 1;
}


static const luaL_Reg methods[] = {
  {"lpush", l_lpush},
  {"rpush", l_rpush},
  {"lpop", l_lpop},
  {"rpop", l_rpop},
  {"llen", l_llen},
  {"get", l_get},
  {"set", l_set},
  {"add", l_add},
  {"replace", l_replace},
  {"incr", l_incr},
  {"delete", l_delete},
  {"ttl", l_ttl},
  {"keys", l_keys},
  {"flush_all", l_flush_all},
  {"free_space", l_free_space},
  {"capacity", l_capacity},
  {NULL, NULL}
};


/*
** luasrv.shared's __index: only names not declared get here. Raising at
** once, where the handler names the dictionary, says what to do, where a
** nil would fail later as "attempt to index a nil value".
*/
static int l_undeclared (lua_State *L) {
  const char *name = luaL_tolstring(L, 2, NULL);
  luaL_where(L, 1);  /* the Lua code that indexed */
  lua_pushfstring(L, "luasrv.shared.%s: no such dictionary (start the "
                  "server with --shared %s:SIZE)", name, name);
  lua_concat(L, 2);
  return lua_error(L);
}


void lshdict_push (lua_State *L) {
  int n = shdict_ndicts();
  if (luaL_newmetatable(L, SHDICT_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "protected");
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
  lua_createtable(L, 0, n);
  for (int i = 0; i < n; i++) {
    struct lshd *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->d = shdict_at(i);
    u->index = i;
    luaL_setmetatable(L, SHDICT_MT);
    lua_setfield(L, -2, shdict_name_at(i));
  }
  lua_createtable(L, 0, 1);  /* pairs() and rawget see the declared only */
  lua_pushcfunction(L, l_undeclared);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
}
