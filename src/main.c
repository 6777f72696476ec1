/*
** main.c -- luasrv's entry point: parse the command line, open the
** listeners, run the worker, and map outcomes to exit codes (0 clean,
** 1 cannot start or run, 2 usage).
*/
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "listener.h"
#include "log.h"
#include "lsrv.h"
#include "worker.h"


static int check (const struct config *cfg) {
  static const struct waitops blocking = {0, NULL, NULL};
  struct worker w;
  char err[1024];
  struct lctx *x;
  if (worker_init(&w, cfg, NULL, 0, 1) < 0) {
    log_error("error: cannot create pipes");
    return 1;
  }
  x = lstate_new(&w, cfg->script, &blocking, err, sizeof err);
  worker_close(&w);
  if (x == NULL) {
    log_error("error: %s", err);
    return 1;
  }
  lstate_close(x);
  log_msg(LOG_WARN, "%s: ok", cfg->script);
  return 0;
}


static int open_listeners (const struct config *cfg, struct listener *ls) {
  struct listen_opts o = {cfg->backlog, cfg->reuse_port, cfg->unix_mode};
  char err[512];
  for (int i = 0; i < cfg->nlisten; i++) {
    struct address a;
    if (address_parse(cfg->listen[i].tr, cfg->listen[i].text, &a, err,
                      sizeof err) < 0 ||
        listener_open(&ls[i], &a, &o, err, sizeof err) < 0) {
      log_error("error: %s", err);
      while (i-- > 0) listener_close(&ls[i]);
      return -1;
    }
  }
  return 0;
}


int main (int argc, char **argv) {
  static struct config cfg;
  static struct listener ls[CLI_MAX_LISTEN];
  struct worker w;
  char err[512];
  int rc;
  switch (cli_parse(argc, argv, &cfg, err, sizeof err)) {
    case CLI_EXIT_OK: return 0;
    case CLI_USAGE:
      fprintf(stderr, "luasrv: %s\n%s", err, cli_usage_text());
      return 2;
    case CLI_RUN: break;
  }
  log_setup((enum log_level)cfg.log_level, cfg.log_json);
  if (cfg.check) return check(&cfg);
  if (open_listeners(&cfg, ls) < 0) return 1;
  if (worker_init(&w, &cfg, ls, cfg.nlisten, 1) < 0) {
    log_error("error: cannot create pipes");
    return 1;
  }
  worker_signals_install(&w);
  rc = worker_run(&w);
  for (int i = 0; i < cfg.nlisten; i++) listener_close(&ls[i]);
  worker_close(&w);
  return rc;
}
