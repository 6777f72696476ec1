/*
** fuzz_common.h -- what every libFuzzer target here shares: a check that
** aborts with a message (libFuzzer turns the abort into a crash report
** and saves the input), whatever NDEBUG says.
*/
#ifndef LUASRV_FUZZ_COMMON_H
#define LUASRV_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond, ...) do { \
    if (!(cond)) { \
      fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__); \
      fputc('\n', stderr); \
      abort(); \
    } \
  } while (0)

int LLVMFuzzerTestOneInput (const unsigned char *data, size_t size);
int LLVMFuzzerInitialize (int *argc, char ***argv);

#endif
