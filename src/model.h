/*
** model.h -- the concurrency models. Each serves a worker's listeners
** until the worker stops and returns the process exit code. They share
** the helpers below for what every model does the same way.
*/
#ifndef LUASRV_MODEL_H
#define LUASRV_MODEL_H

#include <sys/socket.h>
#include "worker.h"

struct lctx;
struct waitops;

int model_sync_serve (struct worker *w);
int model_event_serve (struct worker *w);
int model_fork_serve (struct worker *w);
int model_thread_serve (struct worker *w);

/* Largest datagram we receive whole (UDP's maximum payload is 65,507). */
#define DGRAM_MAX 65536

/*
** Loads the script into a new state for w with ops and runs init.
** Returns NULL after logging the error.
*/
struct lctx *model_start (struct worker *w, const struct waitops *ops);

/*
** Tells the master the worker serves (its states are loaded and init
** ran), or prints the startup lines when there is no master. Call once,
** before the first request.
*/
void model_ready (struct worker *w);

/* Runs server_close and closes the state. */
void model_finish (struct lctx *x);

/* Counts a request; with --once the first request starts the stop. */
void model_count_request (struct worker *w);

/* accept4 that retries EINTR; returns fd or -errno. */
int model_accept (int lfd, struct sockaddr_storage *peer, socklen_t *len);

/* recvfrom of one datagram into buf; returns its length or -errno. */
long model_recv (int fd, char *buf, size_t cap,
                 struct sockaddr_storage *peer, socklen_t *len);

#endif
