/*
** replay.c -- runs a fuzz target over files without libFuzzer (or clang),
** so `make test` replays every corpus and regression input with the
** ordinary compiler: one TAP line per file. A target that finds a bug
** aborts (its CHECK), which spec/run reports as a failure.
*/
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef REPLAY_TARGET
#define REPLAY_TARGET "target"
#endif

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);
int LLVMFuzzerInitialize (int *argc, char ***argv) __attribute__((weak));


static int cmp (const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}


/* The files of fuzz/corpus/TARGET and fuzz/regress/TARGET, sorted. */
static int collect (char ***out) {
  static const char *const dirs[] = {"fuzz/corpus/", "fuzz/regress/"};
  char **files = NULL;
  int n = 0, cap = 0;
  for (int d = 0; d < 2; d++) {
    char dir[256];
    DIR *dp;
    struct dirent *e;
    snprintf(dir, sizeof dir, "%s%s", dirs[d], REPLAY_TARGET);
    if ((dp = opendir(dir)) == NULL) continue;
    while ((e = readdir(dp)) != NULL) {
      size_t len;
      if (e->d_name[0] == '.') continue;
      if (n == cap) {
        cap = cap ? 2 * cap : 64;
        if ((files = realloc(files, (size_t)cap * sizeof *files)) == NULL) exit(2);
      }
      len = strlen(dir) + strlen(e->d_name) + 2;
      if ((files[n] = malloc(len)) == NULL) exit(2);
      snprintf(files[n++], len, "%s/%s", dir, e->d_name);
    }
    closedir(dp);
  }
  if (n > 0) qsort(files, (size_t)n, sizeof *files, cmp);
  *out = files;
  return n;
}


int main (int argc, char **argv) {
  int n = 0, nfiles;
  char **files;
  /* TAP goes to our own copy of stdout: a target may silence stdout */
  FILE *tap = fdopen(dup(1), "w");
  if (tap == NULL) return 2;
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  if (argc > 1) {
    files = argv + 1;
    nfiles = argc - 1;
  }
  else nfiles = collect(&files);
  for (int i = 0; i < nfiles; i++) {
    FILE *f = fopen(files[i], "rb");
    uint8_t *buf;
    long len;
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0 ||
        (buf = malloc((size_t)len + 1)) == NULL ||
        fread(buf, 1, (size_t)len, f) != (size_t)len) {
      fprintf(tap, "not ok %d - %s: cannot read it\n", ++n, files[i]);
      if (f) fclose(f);
      continue;
    }
    fclose(f);
    fflush(tap);
    LLVMFuzzerTestOneInput(buf, (size_t)len);
    free(buf);
    fprintf(tap, "ok %d - replay %s\n", ++n, files[i]);
  }
  fprintf(tap, "1..%d\n", n);
  fclose(tap);
  if (files != argv + 1) {  /* collected: ours to free (LeakSanitizer) */
    for (int i = 0; i < nfiles; i++) free(files[i]);
    free(files);
  }
  return 0;
}
