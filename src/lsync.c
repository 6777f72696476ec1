/*
** lsync.c -- luasrv.semaphore and luasrv.queue: waiting for another task
** of the same state rather than for a socket. A waiter is a small object
** on its own coroutine's stack, linked into the semaphore's or queue's
** list in arrival order, and marked to-be-closed: whatever ends the wait
** (a grant, the timeout, an error, the light thread killed, the request
** cut) unlinks it. What a waiter waits for is handed to it (a unit of the
** count, a value, room) by the task that posts, so that wake-ups are
** first come, first served and nothing is lost between the grant and the
** moment the waiter runs again; a waiter that goes away holding a grant
** gives it back.
**
** A task in a loop (the event model's requests, light threads and
** timers) yields through sched_wait and is woken by the model's .wake.
** A request waiting there also watches its own connection: a client that
** resets it ends the wait with nil, "closed". A task that blocks (sync,
** fork, thread, and init) has nobody in its state who could post while
** it waits: a wait with a timeout sleeps it out and times out, one
** without returns nil, "deadlock" at once.
*/
#include <sys/socket.h>

#include <lauxlib.h>
#include <lua.h>

#include "lsrv.h"

#define SEM_MT "luasrv.semaphore"
#define QUEUE_MT "luasrv.queue"
#define WAITER_MT "luasrv.waiter"

enum { W_WAITING, W_GRANTED, W_CLOSED, W_GONE, W_DONE };

struct waiter;

struct wlist {
  struct waiter *head, *tail;
};

struct waiter {
  struct task *t;
  struct wlist *list;         /* linked in it while waiting */
  struct waiter *next, *prev;
  struct lconn *watch;        /* the request's connection it watches */
  int state;
  int kind;                   /* what it waits for, below */
  lua_Integer n;              /* a semaphore's units */
  double deadline;            /* 0: none */
};

enum { K_SEM, K_POP, K_PUSH };

/*
** Grants are handed one at a time: the next waiter is granted when the
** last one granted has run (or gone), so that they also run in the order
** they came (the loop's timers do not keep an order among equals).
*/
struct sem {
  lua_Integer count;
  struct wlist waiters;
  struct waiter *handed;      /* granted, not run yet */
};

/*
** A queue's values are in its user value 1, a table used as a ring from
** first to first + len - 1. User value 2 holds what waiters are handed or
** bring, keyed by their waiter (a light userdata).
*/
struct queue {
  lua_Integer first, len, cap;  /* cap 0: unbounded */
  int closed;
  struct wlist pop, push;
  struct waiter *handed_pop, *handed_push;  /* as struct sem's handed */
};


static void wl_append (struct wlist *l, struct waiter *w) {
  w->list = l;
  w->next = NULL;
  w->prev = l->tail;
  if (l->tail != NULL) l->tail->next = w;
  else l->head = w;
  l->tail = w;
}


static void wl_unlink (struct waiter *w) {
  struct wlist *l = w->list;
  if (l == NULL) return;
  if (w->prev != NULL) w->prev->next = w->next;
  else l->head = w->next;
  if (w->next != NULL) w->next->prev = w->prev;
  else l->tail = w->prev;
  w->next = w->prev = NULL;
  w->list = NULL;
}


/* Ends w's wait with state st and resumes its task at the loop's turn. */
static void wake_waiter (struct waiter *w, int st) {
  struct task *t = w->t;
  wl_unlink(w);
  w->state = st;
  if (w->watch != NULL && w->watch->waiter == t) w->watch->waiter = NULL;
  w->watch = NULL;
  t->x->ops->wake(t->x, t);
}


/* {====================================================== waiting */

/* The connection a request task watches while it waits, or NULL. */
static struct lconn *watchable (struct task *t) {
  struct lconn *c = t->req;
  if (c == NULL || t->th != NULL || c->io.fd < 0 ||
      (c->io.flags & (LC_DGRAM | LC_OUTBOUND)) || c->waiter != NULL)
    return NULL;
  return c;
}


/*
** Pushes a new waiter for the running task, marked to-be-closed, with
** obj (the semaphore or queue at index 1) as its user value.
*/
static struct waiter *new_waiter (lua_State *L, int kind, double timeout) {
  struct waiter *w = lua_newuserdatauv(L, sizeof *w, 1);
  w->t = lsrv_task(L);
  w->list = NULL;
  w->next = w->prev = NULL;
  w->watch = NULL;
  w->state = W_WAITING;
  w->kind = kind;
  w->n = 0;
  w->deadline = timeout >= 0 ? monotonic_now() + timeout : 0;
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  luaL_setmetatable(L, WAITER_MT);
  lua_toclose(L, -1);
  return w;
}


/*
** Waits (yields, in a loop) until w is granted, closed, or times out.
** The continuation k runs whatever the outcome; it calls wait_again when
** the wake was only its connection telling it something.
*/
static int wait_yield (lua_State *L, struct waiter *w, lua_KContext kc,
                       lua_KFunction k) {
  w->watch = watchable(w->t);
  return sched_wait(L, w->watch, EV_READ, w->deadline, kc, k);
}


/*
** Did the client of c go away? A reset or a failed connection: a client
** that only shut its sending side down (as many do once they have sent
** their request) still waits for its answer.
*/
static int client_gone (struct lconn *c) {
  int err = 0;
  socklen_t len = sizeof err;
  if (c->io.fd < 0 || (c->io.flags & LC_CLOSED)) return 1;
  if (!(c->io.flags & LC_RDHUP)) return 0;
  return getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0;
}


/*
** After a wake: 0 if w is to wait again (its watched connection only had
** input for it, or the wake came early), 1 when the wait is over: w was
** granted or its queue closed, the client hung up (W_GONE) or the time
** ran out (still W_WAITING).
*/
static int wait_over (struct waiter *w) {
  struct lconn *c = w->watch;
  if (w->state != W_WAITING) return 1;
  w->watch = NULL;
  if (c != NULL && c->waiter == w->t) c->waiter = NULL;
  if (c != NULL && client_gone(c)) {
    wl_unlink(w);
    w->state = W_GONE;
    return 1;
  }
  if (w->deadline > 0 && monotonic_now() >= w->deadline) {
    wl_unlink(w);
    return 1;
  }
  return 0;
}


/*
** A wait that cannot yield: a timeout of 0 (nothing to wait for), or a
** task that has nobody to post while it waits. Sleeps out the timeout
** and returns nil, "timeout"; with none, nil, "deadlock".
*/
static int wait_blocked (lua_State *L, double timeout) {
  luaL_pushfail(L);
  if (timeout < 0) {
    lua_pushliteral(L, "deadlock");
    return 2;
  }
  if (timeout > 0 &&
      sched_wait(L, NULL, 0, monotonic_now() + timeout, 0, NULL) == ERR_CUT)
    return luaL_error(L, "request cut short: the server is shutting down");
  lua_pushliteral(L, "timeout");
  return 2;
}


/* The outcome of a wait that ended without a grant. */
static int wait_failed (lua_State *L, struct waiter *w) {
  luaL_pushfail(L);
  if (w->state == W_CLOSED || w->state == W_GONE)
    lua_pushliteral(L, "closed");
  else lua_pushliteral(L, "timeout");
  w->state = W_DONE;
  return 2;
}


/* An optional timeout at index i: < 0 when none. */
static double opt_timeout (lua_State *L, int i) {
  lua_Number t;
  if (lua_isnoneornil(L, i)) return -1;
  t = luaL_checknumber(L, i);
  luaL_argcheck(L, t >= 0, i, "timeout must be >= 0");
  return (double)t;
}

/* }====================================================== */


/* {====================================================== semaphores */

static struct sem *checksem (lua_State *L) {
  return luaL_checkudata(L, 1, SEM_MT);
}


/* Hands units to the waiters in order while the count covers them. */
static void sem_grant (struct sem *s) {
  struct waiter *w = s->waiters.head;
  if (s->handed == NULL && w != NULL && s->count >= w->n) {
    s->count -= w->n;
    s->handed = w;
    wake_waiter(w, W_GRANTED);
  }
}


/* luasrv.semaphore.new([n]) */
static int sem_new (lua_State *L) {
  lua_Integer n = luaL_optinteger(L, 1, 0);
  struct sem *s;
  luaL_argcheck(L, n >= 0, 1, "must be >= 0");
  s = lua_newuserdatauv(L, sizeof *s, 0);
  s->count = n;
  s->waiters.head = s->waiters.tail = NULL;
  s->handed = NULL;
  luaL_setmetatable(L, SEM_MT);
  return 1;
}


/* sem:post([n]) */
static int sem_post (lua_State *L) {
  struct sem *s = checksem(L);
  lua_Integer n = luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, n >= 0, 2, "must be >= 0");
  luaL_argcheck(L, s->count <= LUA_MAXINTEGER - n, 2, "count overflows");
  s->count += n;
  sem_grant(s);
  return 0;
}


static int sem_wait_k (lua_State *L, int status, lua_KContext kc) {
  struct waiter *w = lua_touserdata(L, 3);
  (void)status;
  (void)kc;
  if (!wait_over(w)) return wait_yield(L, w, 0, sem_wait_k);
  if (w->state == W_GRANTED) {
    struct sem *s = lua_touserdata(L, 1);
    w->state = W_DONE;
    s->handed = NULL;
    sem_grant(s);  /* the next in line */
    lua_pushboolean(L, 1);
    return 1;
  }
  return wait_failed(L, w);
}


/* sem:wait([timeout]) -> true | nil, "timeout" */
static int sem_wait (lua_State *L) {
  struct sem *s = checksem(L);
  double timeout = opt_timeout(L, 2);
  struct waiter *w;
  lua_settop(L, 2);
  if (s->count > 0 && s->waiters.head == NULL && s->handed == NULL) {
    s->count--;
    lua_pushboolean(L, 1);
    return 1;
  }
  if (timeout == 0 || !sched_switches(lsrv_task(L)))
    return wait_blocked(L, timeout);
  w = new_waiter(L, K_SEM, timeout);  /* index 3 */
  w->n = 1;
  wl_append(&s->waiters, w);
  return wait_yield(L, w, 0, sem_wait_k);
}


static int sem_count (lua_State *L) {
  struct sem *s = checksem(L);
  lua_Integer waiting = 0;
  for (struct waiter *w = s->waiters.head; w != NULL; w = w->next) waiting++;
  lua_pushinteger(L, s->count > 0 ? s->count : -waiting);
  return 1;
}


static int sem_tostring (lua_State *L) {
  struct sem *s = checksem(L);
  lua_pushfstring(L, "luasrv.semaphore (%I): %p", (LUAI_UACINT)s->count,
                  (void *)s);
  return 1;
}

/* }====================================================== */


/* {====================================================== queues */

static struct queue *checkqueue (lua_State *L) {
  return luaL_checkudata(L, 1, QUEUE_MT);
}


/* Appends the value on top (popped) to q at index 1. */
static void q_append (lua_State *L, struct queue *q) {
  lua_getiuservalue(L, 1, 1);
  lua_rotate(L, -2, 1);
  lua_rawseti(L, -2, q->first + q->len);
  lua_pop(L, 1);
  q->len++;
}


/* Pushes and removes the oldest value of q at index 1 (q->len > 0). */
static void q_take (lua_State *L, struct queue *q) {
  lua_getiuservalue(L, 1, 1);
  lua_rawgeti(L, -1, q->first);
  lua_pushnil(L);
  lua_rawseti(L, -3, q->first);
  lua_remove(L, -2);
  q->first++;
  q->len--;
  if (q->len == 0) q->first = 1;
}


/* The values waiters are handed or bring: pushes that table of q at 1. */
static void q_pending (lua_State *L) {
  lua_getiuservalue(L, 1, 2);
}


/* Moves the value of w kept in the pending table to the top (and out). */
static void take_pending (lua_State *L, struct waiter *w) {
  q_pending(L);
  lua_rawgetp(L, -1, w);
  lua_pushnil(L);
  lua_rawsetp(L, -3, w);
  lua_remove(L, -2);
}


/* Keeps the value on top (popped) for w in the pending table. */
static void put_pending (lua_State *L, struct waiter *w) {
  q_pending(L);
  lua_rotate(L, -2, 1);
  lua_rawsetp(L, -2, w);
  lua_pop(L, 1);
}


/*
** Room appeared in q (at index 1): the oldest waiting pushers' values go
** in, in order, and they are told.
*/
static void q_admit (lua_State *L, struct queue *q) {
  struct waiter *w = q->push.head;
  if (q->handed_push == NULL && w != NULL &&
      (q->cap == 0 || q->len < q->cap)) {
    take_pending(L, w);
    q_append(L, q);
    q->handed_push = w;
    wake_waiter(w, W_GRANTED);
  }
}


/* Hands the oldest values to the oldest waiting poppers. */
static void q_deliver (lua_State *L, struct queue *q) {
  struct waiter *w = q->pop.head;
  if (q->handed_pop == NULL && w != NULL && q->len > 0) {
    q_take(L, q);
    put_pending(L, w);
    q->handed_pop = w;
    wake_waiter(w, W_GRANTED);
    q_admit(L, q);
  }
}


/* luasrv.queue.new([capacity]) */
static int queue_new (lua_State *L) {
  lua_Integer cap = luaL_optinteger(L, 1, 0);
  struct queue *q;
  luaL_argcheck(L, cap >= 0, 1, "must be >= 0 (0: no limit)");
  q = lua_newuserdatauv(L, sizeof *q, 2);
  q->first = 1;
  q->len = 0;
  q->cap = cap;
  q->closed = 0;
  q->pop.head = q->pop.tail = q->push.head = q->push.tail = NULL;
  q->handed_pop = q->handed_push = NULL;
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  lua_newtable(L);
  lua_setiuservalue(L, -2, 2);
  luaL_setmetatable(L, QUEUE_MT);
  return 1;
}


static int closed (lua_State *L) {
  luaL_pushfail(L);
  lua_pushliteral(L, "closed");
  return 2;
}


static int push_k (lua_State *L, int status, lua_KContext kc) {
  struct waiter *w = lua_touserdata(L, 4);
  (void)status;
  (void)kc;
  if (!wait_over(w)) return wait_yield(L, w, 0, push_k);
  if (w->state == W_GRANTED) {
    struct queue *q = lua_touserdata(L, 1);
    w->state = W_DONE;
    q->handed_push = NULL;
    q_admit(L, q);
    lua_pushboolean(L, 1);
    return 1;
  }
  return wait_failed(L, w);
}


/* q:push(v [, timeout]) -> true | nil, "timeout" | nil, "closed" */
static int queue_push (lua_State *L) {
  struct queue *q = checkqueue(L);
  double timeout = opt_timeout(L, 3);
  struct waiter *w;
  luaL_argcheck(L, !lua_isnoneornil(L, 2), 2, "a value expected (not nil)");
  lua_settop(L, 3);
  if (q->closed) return closed(L);
  if (q->cap == 0 ||
      (q->len < q->cap && q->push.head == NULL && q->handed_push == NULL)) {
    lua_pushvalue(L, 2);
    q_append(L, q);
    q_deliver(L, q);
    lua_pushboolean(L, 1);
    return 1;
  }
  if (timeout == 0 || !sched_switches(lsrv_task(L)))
    return wait_blocked(L, timeout);
  w = new_waiter(L, K_PUSH, timeout);  /* index 4 */
  lua_pushvalue(L, 2);
  put_pending(L, w);
  wl_append(&q->push, w);
  return wait_yield(L, w, 0, push_k);
}


static int pop_k (lua_State *L, int status, lua_KContext kc) {
  struct waiter *w = lua_touserdata(L, 3);
  (void)status;
  (void)kc;
  if (!wait_over(w)) return wait_yield(L, w, 0, pop_k);
  if (w->state == W_GRANTED) {
    struct queue *q = lua_touserdata(L, 1);
    w->state = W_DONE;
    q->handed_pop = NULL;
    take_pending(L, w);
    q_deliver(L, q);  /* leaves the stack as it found it */
    return 1;
  }
  return wait_failed(L, w);
}


/* q:pop([timeout]) -> v | nil, "timeout" | nil, "closed" */
static int queue_pop (lua_State *L) {
  struct queue *q = checkqueue(L);
  double timeout = opt_timeout(L, 2);
  struct waiter *w;
  lua_settop(L, 2);
  if (q->len > 0 && q->pop.head == NULL && q->handed_pop == NULL) {
    q_take(L, q);
    q_admit(L, q);
    return 1;
  }
  if (q->closed) return closed(L);
  if (timeout == 0 || !sched_switches(lsrv_task(L)))
    return wait_blocked(L, timeout);
  w = new_waiter(L, K_POP, timeout);  /* index 3 */
  wl_append(&q->pop, w);
  return wait_yield(L, w, 0, pop_k);
}


static int queue_len (lua_State *L) {
  lua_pushinteger(L, checkqueue(L)->len);
  return 1;
}


/*
** q:close(): no more pushes; waiting poppers and pushers get nil,
** "closed"; what is queued can still be popped.
*/
static int queue_close (lua_State *L) {
  struct queue *q = checkqueue(L);
  struct waiter *w;
  q->closed = 1;
  while ((w = q->pop.head) != NULL) wake_waiter(w, W_CLOSED);
  while ((w = q->push.head) != NULL) wake_waiter(w, W_CLOSED);
  return 0;
}


static int queue_tostring (lua_State *L) {
  struct queue *q = checkqueue(L);
  lua_pushfstring(L, "luasrv.queue (%I%s): %p", (LUAI_UACINT)q->len,
                  q->closed ? ", closed" : "", (void *)q);
  return 1;
}

/* }====================================================== */


/*
** A waiter's __close: its wait is over, however it ended. One still
** linked leaves the line; one that was granted and never saw it (its
** task was killed or cut first) gives the grant back.
*/
static int waiter_close (lua_State *L) {
  struct waiter *w = luaL_checkudata(L, 1, WAITER_MT);
  int granted = w->state == W_GRANTED;
  wl_unlink(w);
  if (w->watch != NULL && w->watch->waiter == w->t) w->watch->waiter = NULL;
  w->watch = NULL;
  w->state = W_DONE;
  lua_settop(L, 1);
  lua_getiuservalue(L, 1, 1);  /* the semaphore or queue */
  lua_replace(L, 1);           /* at 1, as its methods have it */
  if (w->kind == K_SEM) {
    struct sem *s = lua_touserdata(L, 1);
    if (s->handed == w) s->handed = NULL;
    if (granted) s->count += w->n;
    sem_grant(s);
    return 0;
  }
  {
    struct queue *q = lua_touserdata(L, 1);
    if (q->handed_pop == w) q->handed_pop = NULL;
    if (q->handed_push == w) q->handed_push = NULL;
    take_pending(L, w);  /* what it was handed, or brought */
    if (granted && w->kind == K_POP) {  /* back to the front */
      lua_getiuservalue(L, 1, 1);
      lua_rotate(L, -2, 1);
      if (q->len == 0) q->first = 1;
      else q->first--;
      lua_rawseti(L, -2, q->first);
      q->len++;
      lua_pop(L, 1);
    }
    q_deliver(L, q);
    q_admit(L, q);
  }
  return 0;
}


static void newmeta (lua_State *L, const char *name, const luaL_Reg *methods,
                     lua_CFunction tostring) {
  luaL_newmetatable(L, name);
  if (methods != NULL) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
  if (tostring != NULL) {
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
}


static const luaL_Reg sem_methods[] = {
  {"post", sem_post},
  {"wait", sem_wait},
  {"count", sem_count},
  {NULL, NULL}
};

static const luaL_Reg queue_methods[] = {
  {"push", queue_push},
  {"pop", queue_pop},
  {"len", queue_len},
  {"close", queue_close},
  {NULL, NULL}
};


/* Pushes the semaphore library (luasrv.semaphore) and sets up the types. */
void lsync_push_semaphore (lua_State *L) {
  newmeta(L, SEM_MT, sem_methods, sem_tostring);
  newmeta(L, QUEUE_MT, queue_methods, queue_tostring);
  luaL_newmetatable(L, WAITER_MT);
  lua_pushcfunction(L, waiter_close);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, sem_new);
  lua_setfield(L, -2, "new");
}


/* Pushes the queue library (luasrv.queue). */
void lsync_push_queue (lua_State *L) {
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, queue_new);
  lua_setfield(L, -2, "new");
}
