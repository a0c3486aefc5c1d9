/*
 * kilnd's tenants and their API tokens (docs/daemon.md). The tokens file is
 * JSON and holds only each token's SHA-256, never the token:
 *
 *	{"tenants": [{"name": "acme", "token_sha256": "<64 hex digits>",
 *		      "max_sandboxes": 4, "max_vcpus": 8, "max_memory_mib": 8192,
 *		      "max_timeout_s": 3600, "admin": false}]}
 *
 * Every key but "admin" is required ("admin": true lets the tenant drain the
 * host, POST /v1/drain); unknown keys, duplicate names or hashes, empty
 * lists and out-of-range values are refused with a one-line reason.
 */
#ifndef KILN_DAEMON_TOKENS_H
#define KILN_DAEMON_TOKENS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOKENS_NAME_MAX 63	/* [A-Za-z0-9_.-], 1 to 63 bytes */
#define TOKENS_FILE_MAX (1 << 20)

struct tokens_tenant {
	char name[TOKENS_NAME_MAX + 1];
	unsigned max_sandboxes;	 /* 1 .. 4096 */
	unsigned max_vcpus;	 /* 1 .. 4096 */
	uint64_t max_memory_mib; /* 1 .. 1 << 30 */
	uint64_t max_timeout_s;	 /* 1 .. 30 days */
	bool admin;		 /* may drain the host */
};

struct tokens;

/* 0, or -errno with a one-line reason in err (naming the file and the entry). */
int tokens_load(const char *path, struct tokens **out, char *err, size_t errlen);
void tokens_free(struct tokens *t);
/* The tenant whose token this is, or NULL. The token's SHA-256 is compared
 * with every entry in constant time (no early exit on a match or a byte). */
const struct tokens_tenant *tokens_find(const struct tokens *t, const char *token, size_t len);
size_t tokens_count(const struct tokens *t);

#endif
