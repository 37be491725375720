/*
 * base/hex.h: bytes as lowercase hexadecimal, and SHA-256 digests in the two
 * forms strata writes them: 64 hex digits (a layer or chunk id), and OCI's
 * "sha256:" followed by them (a blob's digest); and base64, the standard
 * alphabet with padding, as docker's config.json and tart's config.json
 * (Foundation's base64EncodedString) hold bytes.
 */
#ifndef STRATA_BASE_HEX_H
#define STRATA_BASE_HEX_H

#include <stddef.h>

/* in's n bytes as 2n lowercase hex digits and a NUL: out holds 2n + 1. */
void hex_encode(const unsigned char *in, size_t n, char *out);

/* The 2n hex digits at in as n bytes into out: -1 (out partly written) if
 * one is not a digit or an upper-case one (not the canonical text). */
int hex_decode(const char *in, size_t n, unsigned char *out);

/* SHA-256 of len bytes at data, as 64 hex digits and a NUL. */
void sha256_hex(const void *data, size_t len, char out[65]);

/* A computed SHA-256 as OCI's "sha256:<64 hex>" and a NUL. */
void digest_text(const unsigned char sha256[32], char out[72]);

/* SHA-256 of len bytes at data, as "sha256:<64 hex>". */
void sha256_digest_text(const void *data, size_t len, char out[72]);

/* n bytes at p as base64 with padding, NUL-terminated; NULL if out of
 * memory. Caller frees. */
char *base64_encode(const void *p, size_t n);

/* Standard base64 with padding, and nothing else (no whitespace, no
 * missing or misplaced '='), into *len bytes followed by a NUL (so text
 * reads as a string); NULL if s is not that, or out of memory. Caller
 * frees. */
unsigned char *base64_decode(const char *s, size_t *len);

#endif
