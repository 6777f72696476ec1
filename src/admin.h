/*
** admin.h -- the worker's side of the console (--admin): the master hands
** a worker a request ("connections" or "eval CODE") with the ctl client's
** socket over the worker's channel, and the worker answers that client
** itself and closes it.
*/
#ifndef LUASRV_ADMIN_H
#define LUASRV_ADMIN_H

struct mloop;
struct lconn;
struct lctx;
struct admin_out;

/* Answers the request waiting on ml->w->admin_fd (the skeleton's loop). */
void admin_request (struct mloop *ml);

/*
** A blocking model with one request at a time (sync): the console's
** requests are also read while that request waits (worker_block):
** "connections" is answered there, "eval" waits for the request's end.
*/
void admin_watch_blocking (struct mloop *ml);

/* Runs a request admin_watch_blocking's hook took (the loop's turn). */
void admin_pending (struct mloop *ml);

/*
** Runs an eval's chunk in state x (its loop's thread, between requests)
** and answers client fd.
*/
void admin_eval (struct lctx *x, int fd, const char *code);

/* Sends text to a console client and closes it. */
void admin_reply (int fd, const char *text);

/* Adds a line for connection c to o: waits is "read", "write", "sleep"
** or "running". */
void admin_conn (struct admin_out *o, const struct lconn *c,
                 const char *waits);

#endif
