/*
** sslmem.h -- OpenSSL's allocator: small blocks in pages of one size
** class each (no malloc chunk header), handshake buffers in page runs of
** their own; given back with sslmem_trim.
*/
#ifndef LUASRV_SSLMEM_H
#define LUASRV_SSLMEM_H

/* Installs the allocator, before anything calls OpenSSL (else: malloc). */
void sslmem_init (void);

/* Gives the spare runs' memory back to the system. */
void sslmem_trim (void);

/* 1 when OpenSSL's blocks are sslmem's, 0 when malloc's (AddressSanitizer,
** valgrind, or OpenSSL allocated before sslmem_init). */
int sslmem_active (void);

#endif
