/*
** wsframe.h -- WebSocket frames (RFC 6455 5) below the Lua binding: a
** client frame's header read and checked, masking, a server frame's
** header, and a UTF-8 validator that can be fed a message piece by
** piece. No sockets and no Lua here (lws.c binds them to connections).
*/
#ifndef LUASRV_WSFRAME_H
#define LUASRV_WSFRAME_H

#include <stddef.h>
#include <stdint.h>

/* Opcodes */
#define WS_CONT   0x0
#define WS_TEXT   0x1
#define WS_BINARY 0x2
#define WS_CLOSE  0x8
#define WS_PING   0x9
#define WS_PONG   0xA

/* The header of a client frame. */
struct wsframe {
  unsigned opcode;
  int fin;
  unsigned char key[4];       /* the mask key (a client frame has one) */
  uint64_t len;               /* payload bytes */
};

/*
** Reads the header of the frame at p (n bytes there) sent by a client,
** inside a message of type kind (0: none begun; WS_TEXT or WS_BINARY: a
** fragmented one goes on), whose data frames may carry at most max
** bytes. Returns the header's length (f filled), 0 when p does not hold
** all of it yet, or -code, the close code to fail the connection with
** (1002 or 1009), with *why saying what was wrong. A bad header is told
** as soon as the bytes that make it bad are there.
*/
int wsframe_parse (const unsigned char *p, size_t n, unsigned kind,
                   uint64_t max, struct wsframe *f, const char **why);

/*
** Masks (or unmasks: the same) n bytes of p in place with key, the
** first byte of p being byte 0 of the payload.
*/
void wsframe_mask (unsigned char *p, size_t n, const unsigned char key[4]);

/*
** Writes the header of an unmasked (server) frame into out (room for
** WSFRAME_HEAD_MAX bytes); returns its length.
*/
#define WSFRAME_HEAD_MAX 10
size_t wsframe_head (unsigned char *out, unsigned opcode, int fin,
                     uint64_t len);

/*
** UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above
** U+10FFFF), validated as the bytes come: the state after n more bytes
** of p, from state (UTF8_ACCEPT at a text's start). UTF8_ACCEPT after
** the last byte: the text is whole and valid; UTF8_REJECT: invalid
** from there on, whatever follows; any other state: a code point is
** still incomplete, and the next piece may complete it.
*/
#define UTF8_ACCEPT 0
#define UTF8_REJECT 1
unsigned utf8_step (unsigned state, const unsigned char *p, size_t n);

#endif
