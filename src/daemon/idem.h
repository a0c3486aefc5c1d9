/*
 * Idempotency keys for kilnd's creates: a client that retries a
 * POST /v1/sandboxes with the same Idempotency-Key gets the first answer
 * again, not a second sandbox. Keys are per tenant, kept IDEM_TTL_S after
 * their answer, at most IDEM_MAX of them (the oldest answered one goes first;
 * when every one is still in progress a new key is refused).
 */
#ifndef KILN_DAEMON_IDEM_H
#define KILN_DAEMON_IDEM_H

#include <stddef.h>
#include <stdint.h>

#define IDEM_KEY_MAX 255
#define IDEM_MAX 4096
#define IDEM_TTL_S (24 * 3600)

struct idem;

enum idem_state {
	IDEM_NEW,      /* claimed: run the request, then idem_finish */
	IDEM_BUSY,     /* the same key's first request is still running */
	IDEM_DONE,     /* *status and *answer (malloc'd) are the first answer */
	IDEM_MISMATCH, /* the key came with a different body */
	IDEM_FULL,     /* IDEM_MAX keys in progress */
};

int idem_create(struct idem **out);
void idem_free(struct idem *t);
/* body: the request's bytes (compared by SHA-256). now_s: wall clock. */
enum idem_state idem_begin(struct idem *t, const char *tenant, const char *key, const void *body,
			   size_t len, int64_t now_s, unsigned *status, char **answer);
/* The answer of a claimed key; status 0 forgets the key (a retry runs again). */
void idem_finish(struct idem *t, const char *tenant, const char *key, unsigned status,
		 const char *answer, int64_t now_s);

#endif
