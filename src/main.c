/*
** main.c -- luasrv's entry point: parse the command line, open the
** listeners, run the master and its workers, and map outcomes to exit codes (0 clean,
** 1 cannot start or run, 2 usage).
*/
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "listener.h"
#include "log.h"
#include "master.h"
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


/*
** Writes the master's pid to path (--pidfile) through a temporary file
** and rename(2), so a reader never sees a half-written file.
*/
static int write_pidfile (const char *path) {
  char tmp[4096];
  FILE *f;
  if (snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid()) >=
      (int)sizeof tmp) {
    log_error("error: pid file name too long");
    return -1;
  }
  f = fopen(tmp, "w");
  if (f != NULL && fprintf(f, "%d\n", (int)getpid()) < 0) {
    fclose(f);
    f = NULL;
  }
  if (f == NULL || fclose(f) != 0 || rename(tmp, path) < 0) {
    log_error("error: cannot write pid file %s: %s", path, strerror(errno));
    unlink(tmp);
    return -1;
  }
  return 0;
}


/*
** --user USER[:GROUP]: resolved here, where a typo can still stop the
** start; the workers switch to it after fork, so the master keeps the
** rights to remove socket files and start workers, as nginx's does.
*/
static int resolve_user (struct config *cfg) {
  char name[256];
  const char *spec = cfg->user, *colon = strchr(spec, ':');
  struct passwd *pw;
  snprintf(name, sizeof name, "%.*s",
           (int)(colon ? (size_t)(colon - spec) : strlen(spec)), spec);
  if ((pw = getpwnam(name)) == NULL) {
    log_error("error: --user: no user '%s'", name);
    return -1;
  }
  cfg->uid = pw->pw_uid;
  cfg->gid = pw->pw_gid;
  if (colon != NULL) {
    struct group *gr = getgrnam(colon + 1);
    if (gr == NULL) {
      log_error("error: --user: no group '%s'", colon + 1);
      return -1;
    }
    cfg->gid = gr->gr_gid;
  }
  if (geteuid() != 0 && cfg->uid != geteuid()) {
    log_error("error: --user %s: only root can switch users", spec);
    return -1;
  }
  cfg->setuser = 1;
  return 0;
}


/*
** The Unix socket files luasrv created belong to --user: its workers and
** its group's clients (with --unix-mode 660) can use them.
*/
static int chown_sockets (const struct config *cfg, struct listener *ls) {
  for (int i = 0; i < cfg->nlisten; i++) {
    const char *path;
    if (!ls[i].created_path) continue;
    path = ((const struct sockaddr_un *)&ls[i].addr.sa)->sun_path;
    if (chown(path, (uid_t)cfg->uid, (gid_t)cfg->gid) < 0) {
      log_error("error: --user: cannot give %s to %s: %s", path, cfg->user,
                strerror(errno));
      return -1;
    }
  }
  return 0;
}


int main (int argc, char **argv) {
  static struct config cfg;
  static struct listener ls[CLI_MAX_LISTEN];
  char err[512];
  int rc = 1, wrote_pid = 0;
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
  if (cfg.pidfile != NULL) {
    if (write_pidfile(cfg.pidfile) < 0) goto out;
    wrote_pid = 1;
  }
  if (cfg.user != NULL && (resolve_user(&cfg) < 0 ||
                           chown_sockets(&cfg, ls) < 0))
    goto out;
  rc = master_run(&cfg, ls, cfg.nlisten);
out:
  if (wrote_pid) unlink(cfg.pidfile);  /* never another server's */
  for (int i = 0; i < cfg.nlisten; i++) listener_close(&ls[i]);
  return rc;
}
