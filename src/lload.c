/*
** lload.c -- the handler script and the modules it requires, read from
** disk once per process and kept in memory, so that every further Lua
** state is built without opening a file.
**
** The thread model makes a state per thread, on demand: when the clients
** had taken every descriptor (ulimit -n), a new state could not open the
** script, nor the modules it requires (package.searchpath tests each file
** with fopen), so the pool stopped growing and the held connections
** waited. Here the first state of a process reads the script and each
** module's file; later states load the same bytes from memory, and C
** modules from the luaopen_ function the first state found (the library
** stays loaded: its handle is pinned once more with RTLD_NOLOAD).
**
** A module is remembered under its name and the package.path (cpath) it
** was found with, so a state that changes the path finds its own files.
** The cache is shared by the threads of a process, under one mutex; it
** lives as long as the process (a reload starts new workers).
*/
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lload.h"

struct entry {
  char *key;                  /* "L" or "C", the name, '\0', the path */
  size_t keylen;
  char *file;                 /* where it was found */
  char *data;                 /* a Lua file's bytes (NULL for C) */
  size_t len;
  lua_CFunction open;         /* a C module's luaopen_ function */
  struct entry *next;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct entry *entries;


/* The entry for key, or NULL (mu held). */
static struct entry *lookup (const char *key, size_t keylen) {
  for (struct entry *e = entries; e != NULL; e = e->next)
    if (e->keylen == keylen && memcmp(e->key, key, keylen) == 0) return e;
  return NULL;
}


/* Copies what lookup found into *out (mu held); 1 if found. */
static int find (const char *key, size_t keylen, struct entry *out) {
  struct entry *e;
  pthread_mutex_lock(&mu);
  if ((e = lookup(key, keylen)) != NULL) *out = *e;
  pthread_mutex_unlock(&mu);
  return e != NULL;
}


/* Remembers an entry; a copy of every field is made. Quietly does
** nothing without memory: the next state reads the file again. */
static void remember (const char *key, size_t keylen, const char *file,
                      const char *data, size_t len, lua_CFunction open) {
  struct entry *e = calloc(1, sizeof *e);
  if (e == NULL) return;
  e->key = malloc(keylen);
  e->file = strdup(file);
  e->data = data != NULL ? malloc(len ? len : 1) : NULL;
  if (e->key == NULL || e->file == NULL || (data != NULL && e->data == NULL)) {
    free(e->key);
    free(e->file);
    free(e->data);
    free(e);
    return;
  }
  memcpy(e->key, key, keylen);
  e->keylen = keylen;
  if (data != NULL) memcpy(e->data, data, len);
  e->len = len;
  e->open = open;
  pthread_mutex_lock(&mu);
  if (lookup(key, keylen) == NULL) {  /* another thread may have been first */
    e->next = entries;
    entries = e;
    e = NULL;
  }
  pthread_mutex_unlock(&mu);
  if (e != NULL) {
    free(e->key);
    free(e->file);
    free(e->data);
    free(e);
  }
}


/* Reads a whole file; NULL with errno set. */
char *lload_read (const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *data = NULL;
  size_t cap = 0, n = 0;
  if (f == NULL) return NULL;
  for (;;) {
    if (n == cap) {
      char *d = realloc(data, cap = cap ? 2 * cap : 8192);
      if (d == NULL) {
        free(data);
        fclose(f);
        errno = ENOMEM;
        return NULL;
      }
      data = d;
    }
    size_t got = fread(data + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
  }
  if (ferror(f)) {
    int e = errno;
    free(data);
    fclose(f);
    errno = e ? e : EIO;
    return NULL;
  }
  fclose(f);
  *len = n;
  return data;
}


/*
** Loads a chunk from bytes as luaL_loadfilex loads a file: a UTF-8 BOM is
** skipped, and so is a first line starting with '#' (its newline kept,
** so line numbers stay right).
*/
static int load_bytes (lua_State *L, const char *data, size_t len,
                       const char *file) {
  int rc;
  if (len >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0) {
    data += 3;
    len -= 3;
  }
  if (len > 0 && data[0] == '#') {
    const char *nl = memchr(data, '\n', len);
    size_t skip = nl != NULL ? (size_t)(nl - data) : len;
    data += skip;
    len -= skip;
  }
  lua_pushfstring(L, "@%s", file);
  rc = luaL_loadbufferx(L, data, len, lua_tostring(L, -1), NULL);
  lua_remove(L, -2);  /* the chunk name */
  return rc;
}


void lload_seed (const char *path, const char *data, size_t len) {
  size_t keylen = strlen(path) + 2;
  char *key = malloc(keylen);
  if (key == NULL) return;  /* the worker reads the file */
  key[0] = 'S';
  memcpy(key + 1, path, keylen - 1);
  remember(key, keylen, path, data, len, NULL);
  free(key);
}


int lload_script (lua_State *L, const char *path) {
  struct entry e;
  size_t keylen = strlen(path) + 2;
  char *key = malloc(keylen), *data;
  size_t len;
  int rc;
  if (key == NULL) return luaL_loadfile(L, path);
  key[0] = 'S';
  memcpy(key + 1, path, keylen - 1);
  if (find(key, keylen, &e)) {
    free(key);
    return load_bytes(L, e.data, e.len, e.file);
  }
  if ((data = lload_read(path, &len)) == NULL) {
    free(key);
    lua_pushfstring(L, "cannot open %s: %s", path, strerror(errno));
    return LUA_ERRFILE;
  }
  rc = load_bytes(L, data, len, path);
  if (rc == LUA_OK) remember(key, keylen, path, data, len, NULL);
  free(data);
  free(key);
  return rc;
}


/* Pushes the key of module name for kind 'L' or 'C' from package.path or
** package.cpath (upvalue 1: the package table). */
static void push_key (lua_State *L, const char *kind, const char *name) {
  lua_getfield(L, lua_upvalueindex(1), *kind == 'L' ? "path" : "cpath");
  lua_pushfstring(L, "%s%s", kind, name);
  lua_pushlstring(L, "", 1);
  lua_rotate(L, -3, -1);  /* kind..name, "\0", path */
  if (lua_type(L, -1) != LUA_TSTRING) {
    lua_pop(L, 1);
    lua_pushliteral(L, "");
  }
  lua_concat(L, 3);
}


/*
** The searcher for Lua modules, in place of package.searchers[2]: the
** same search (package.searchpath over package.path), then the bytes
** from the cache or, the first time, from the file.
*/
static int search_lua (lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  struct entry e;
  size_t keylen, len;
  const char *key;
  char *data;
  push_key(L, "L", name);                            /* 2: key */
  key = lua_tolstring(L, 2, &keylen);
  if (find(key, keylen, &e)) {
    if (load_bytes(L, e.data, e.len, e.file) != LUA_OK)
      return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s",
                        name, e.file, lua_tostring(L, -1));
    lua_pushstring(L, e.file);
    return 2;
  }
  lua_getfield(L, lua_upvalueindex(1), "searchpath");
  lua_pushvalue(L, 1);
  lua_getfield(L, lua_upvalueindex(1), "path");
  lua_call(L, 2, 2);                                 /* 3: file or nil, 4: msg */
  if (lua_isnil(L, 3)) {  /* not found: searchpath's list of the tries */
    lua_pushvalue(L, 4);
    return 1;
  }
  if ((data = lload_read(lua_tostring(L, 3), &len)) == NULL)
    return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s",
                      name, lua_tostring(L, 3), strerror(errno));
  if (load_bytes(L, data, len, lua_tostring(L, 3)) != LUA_OK) {
    free(data);
    return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s",
                      name, lua_tostring(L, 3), lua_tostring(L, -1));
  }
  remember(key, keylen, lua_tostring(L, 3), data, len, NULL);
  free(data);
  lua_pushvalue(L, 3);
  return 2;
}


/*
** The searcher for C modules, around Lua's own (upvalue 2): the luaopen_
** function it found is remembered, its library pinned so that it stays
** loaded whichever state closes first.
*/
static int search_c (lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  struct entry e;
  size_t keylen;
  const char *key;
  lua_CFunction open;
  push_key(L, "C", name);                            /* 2: key */
  key = lua_tolstring(L, 2, &keylen);
  if (find(key, keylen, &e)) {
    lua_pushcfunction(L, e.open);
    lua_pushstring(L, e.file);
    return 2;
  }
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_pushvalue(L, 1);
  lua_call(L, 1, 2);                                 /* 3: loader, 4: file */
  open = lua_tocfunction(L, 3);
  if (open != NULL && lua_getupvalue(L, 3, 1) == NULL && lua_isstring(L, 4)) {
    if (dlopen(lua_tostring(L, 4), RTLD_NOW | RTLD_NOLOAD) != NULL)
      remember(key, keylen, lua_tostring(L, 4), NULL, 0, open);
  }
  lua_settop(L, 4);
  return 2;
}


void lload_install (lua_State *L) {
  lua_getglobal(L, "package");
  if (lua_getfield(L, -1, "searchers") != LUA_TTABLE) {
    lua_pop(L, 2);
    return;
  }
  lua_pushvalue(L, -2);                              /* package */
  lua_pushcclosure(L, search_lua, 1);
  lua_rawseti(L, -2, 2);
  lua_pushvalue(L, -2);                              /* package */
  lua_rawgeti(L, -2, 3);                             /* Lua's C searcher */
  lua_pushcclosure(L, search_c, 2);
  lua_rawseti(L, -2, 3);
  lua_pop(L, 2);
}
