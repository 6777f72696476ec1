/*
** master.h -- the process that owns the listeners and supervises the
** workers: start-up, signals, restarts and reload (see master.c).
*/
#ifndef LUASRV_MASTER_H
#define LUASRV_MASTER_H

#include "cli.h"
#include "listener.h"

/*
** Runs the workers until the server stops; returns the exit code. A
** reload may change the listeners: ls (room for CLI_MAX_LISTEN) and *nls
** are what the master holds when it returns.
*/
int master_run (struct config *cfg, struct listener *ls, int *nls);

#endif
