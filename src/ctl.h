/*
** ctl.h -- "luasrv ctl PATH COMMAND [ARG...]": the client of a running
** server's --admin socket (the server side is in master.c).
*/
#ifndef LUASRV_CTL_H
#define LUASRV_CTL_H

/*
** argv[0] is "ctl". Sends the command line, prints the reply to stdout
** (an "error: " reply to stderr); returns the exit code: 0, 1 when the
** server answered an error or cannot be reached, 2 on a usage error.
*/
int ctl_main (int argc, char **argv);

#endif
