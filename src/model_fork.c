/*
** model_fork.c -- placeholder until the fork model lands (issue 3).
*/
#include "log.h"
#include "model.h"

int model_fork_serve (struct worker *w) {
  (void)w;
  log_error("error: the fork model is not available yet");
  return 1;
}
