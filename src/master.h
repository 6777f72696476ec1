/*
** master.h -- the process that owns the listeners and supervises the
** workers: start-up, signals, restarts and reload (see master.c).
*/
#ifndef LUASRV_MASTER_H
#define LUASRV_MASTER_H

#include "cli.h"
#include "listener.h"

/* Runs the workers until the server stops; returns the exit code. */
int master_run (const struct config *cfg, struct listener *ls, int nls);

#endif
