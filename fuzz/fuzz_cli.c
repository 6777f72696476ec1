/*
** fuzz_cli.c -- cli_parse on an argv made of the input split at NUL bytes
** (argv[0] is "luasrv"; at most 300 arguments, so the 64-listener and
** 64-rule limits are reached). Each argument is its own heap block of
** exactly its size, so reads past an argument are caught.
** Checked: the result is one of the three; CLI_USAGE leaves a terminated,
** non-empty reason; CLI_RUN leaves a script, a listener unless --check,
** counts within their arrays, listener texts that are argv strings (or
** their tails after '='), and every numeric field within the range its
** option promises.
** An input that starts with "@config\0" is a configuration file's text
** instead (cli_parse_text): the same checks, its strings inside the text,
** a failure's reason starting "FILE:LINE: ".
*/
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fuzz_common.h"

#define MAX_ARGS 300

int LLVMFuzzerInitialize (int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  /* --help and --version print to stdout: keep the fuzzer's output clean */
  int fd = open("/dev/null", O_WRONLY);
  if (fd >= 0) dup2(fd, 1), close(fd);
  return 0;
}


/* Is p inside one of the arguments? */
static int in_argv (const char *p, int argc, char **argv) {
  for (int i = 0; i < argc; i++)
    if (p >= argv[i] && p <= argv[i] + strlen(argv[i])) return 1;
  return 0;
}


/* Is p inside text[0..n]? */
static int in_text (const char *p, const char *text, size_t n) {
  return p >= text && p <= text + n;
}


static void config_text (const uint8_t *data, size_t size) {
  static struct config cfg;
  char *argv[] = {(char *)"luasrv", (char *)"x.lua", (char *)"--tcp",
                  (char *)"1", NULL};
  char err[256], *text = malloc(size + 1);
  memcpy(text, data, size);
  text[size] = '\0';
  CHECK(cli_parse(4, argv, &cfg, err, sizeof err) == CLI_RUN, "defaults");
  memset(err, 'x', sizeof err);
  if (cli_parse_text("f.conf", text, &cfg, err, sizeof err) < 0)
    CHECK(memchr(err, '\0', sizeof err) != NULL &&
          strncmp(err, "f.conf:", 7) == 0, "no FILE:LINE reason");
  else {
    CHECK(cfg.script == argv[1] || in_text(cfg.script, text, size), "script");
    CHECK(cfg.nlisten >= 1 && cfg.nlisten <= CLI_MAX_LISTEN, "nlisten");
    for (int k = 1; k < cfg.nlisten; k++)
      CHECK(in_text(cfg.listen[k].text, text, size), "listen text");
    CHECK(cfg.workers >= 1 && cfg.workers <= 1024, "workers %d", cfg.workers);
    CHECK(cfg.nacl >= 0 && cfg.nacl <= CLI_MAX_ACL, "nacl %d", cfg.nacl);
    CHECK(cfg.nshared >= 0 && cfg.nshared <= CLI_MAX_SHARED, "nshared");
  }
  free(text);
}


int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  static struct config cfg;
  if (size >= 8 && memcmp(data, "@config", 8) == 0) {
    config_text(data + 8, size - 8);
    return 0;
  }
  char *argv[MAX_ARGS + 2], err[256];
  int argc = 1;
  size_t i = 0;
  argv[0] = strdup("luasrv");
  while (i < size && argc < MAX_ARGS) {
    size_t n = strnlen((const char *)data + i, size - i);
    argv[argc] = malloc(n + 1);
    memcpy(argv[argc], data + i, n);
    argv[argc++][n] = '\0';
    i += n + 1;
  }
  argv[argc] = NULL;
  for (int k = 1; k < argc; k++)  /* files are the "@config" inputs' part */
    if (strncmp(argv[k], "--config", 8) == 0) goto done;
  memset(err, 'x', sizeof err);
  enum cli_result r = cli_parse(argc, argv, &cfg, err, sizeof err);
  CHECK(r == CLI_RUN || r == CLI_EXIT_OK || r == CLI_USAGE, "result %d", r);
  if (r == CLI_USAGE)
    CHECK(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0' &&
          err[0] != 'x', "no reason given");
  if (r == CLI_RUN) {
    CHECK(cfg.script != NULL && in_argv(cfg.script, argc, argv), "script");
    CHECK(cfg.check || cfg.nlisten > 0, "no listener");
    CHECK(cfg.nlisten >= 0 && cfg.nlisten <= CLI_MAX_LISTEN, "nlisten %d",
          cfg.nlisten);
    CHECK(cfg.nacl >= 0 && cfg.nacl <= CLI_MAX_ACL, "nacl %d", cfg.nacl);
    for (int k = 0; k < cfg.nlisten; k++) {
      CHECK(cfg.listen[k].tr <= TR_UNIXGRAM, "transport %d", cfg.listen[k].tr);
      CHECK(in_argv(cfg.listen[k].text, argc, argv), "listen text");
    }
    for (int k = 0; k < cfg.nacl; k++) {
      const struct acl_rule *a = &cfg.acl[k];
      CHECK(a->allow == 0 || a->allow == 1, "acl allow %d", a->allow);
      CHECK(a->family == AF_UNSPEC || a->family == AF_INET ||
            a->family == AF_INET6, "acl family %d", a->family);
    }
    CHECK((unsigned)cfg.model <= MODEL_EVENT, "model %d", cfg.model);
    CHECK(cfg.workers >= 1 && cfg.workers <= 1024, "workers %d", cfg.workers);
    CHECK(cfg.max_children >= 1 && cfg.max_children <= 100000, "children");
    CHECK(cfg.max_threads >= 1 && cfg.max_threads <= 100000, "threads");
    CHECK(cfg.max_connections >= 1 && cfg.max_connections <= 10000000, "conns");
    CHECK(cfg.backlog >= 1 && cfg.backlog <= 1000000, "backlog");
    CHECK(cfg.max_per_source >= 0 && cfg.max_per_source <= 10000000, "mps");
    CHECK(cfg.timeout >= 0 && cfg.timeout <= 1e9, "timeout %g", cfg.timeout);
    CHECK(cfg.grace >= 0 && cfg.grace <= 1e9, "grace %g", cfg.grace);
    CHECK(cfg.cpu_limit >= 0 && cfg.cpu_limit <= 1e9, "cpu %g", cfg.cpu_limit);
    CHECK(cfg.max_line > 0 && cfg.max_line <= SIZE_MAX / 2, "max_line %zu",
          cfg.max_line);
    CHECK(cfg.memory_limit <= SIZE_MAX / 2, "memory_limit %zu",
          cfg.memory_limit);
    CHECK(cfg.unix_mode >= -1 && cfg.unix_mode <= 07777, "mode %o",
          cfg.unix_mode);
    CHECK(cfg.log_level >= 0 && cfg.log_level <= 3, "level %d", cfg.log_level);
    CHECK(cfg.once == 0 || cfg.once == 1, "once");
    CHECK(cfg.user == NULL || in_argv(cfg.user, argc, argv), "user");
    CHECK(cfg.pidfile == NULL || in_argv(cfg.pidfile, argc, argv), "pidfile");
  }
done:
  for (int k = 0; k < argc; k++) free(argv[k]);
  return 0;
}
