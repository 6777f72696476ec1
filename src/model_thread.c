/*
** model_thread.c -- placeholder until the thread model lands (issue 3).
*/
#include "log.h"
#include "model.h"

int model_thread_serve (struct worker *w) {
  (void)w;
  log_error("error: the thread model is not available yet");
  return 1;
}
