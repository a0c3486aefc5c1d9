/* Idempotency keys (see idem.h): a list under one lock, at most IDEM_MAX. */
#include "daemon/idem.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

struct entry {
	struct entry *next;
	char tenant[64], key[IDEM_KEY_MAX + 1];
	unsigned char hash[32];
	bool done;
	unsigned status;
	char *answer;
	int64_t at; /* when answered */
};

struct idem {
	pthread_mutex_t mu;
	struct entry *list;
	unsigned n;
};

int idem_create(struct idem **out)
{
	struct idem *t = calloc(1, sizeof(*t));

	*out = t;
	if (!t)
		return -ENOMEM;
	pthread_mutex_init(&t->mu, NULL);
	return 0;
}

static void entry_free(struct entry *e)
{
	free(e->answer);
	free(e);
}

void idem_free(struct idem *t)
{
	struct entry *e, *n;

	if (!t)
		return;
	for (e = t->list; e; e = n) {
		n = e->next;
		entry_free(e);
	}
	pthread_mutex_destroy(&t->mu);
	free(t);
}

/* Under t->mu: drop answered entries past their time; if still full, the
 * oldest answered one. */
static void trim_locked(struct idem *t, int64_t now_s)
{
	struct entry **pp, **oldest = NULL;

	for (pp = &t->list; *pp;) {
		struct entry *e = *pp;

		if (e->done && now_s - e->at > IDEM_TTL_S) {
			*pp = e->next;
			entry_free(e);
			t->n--;
			continue;
		}
		if (e->done && (!oldest || e->at <= (*oldest)->at))
			oldest = pp;
		pp = &e->next;
	}
	if (t->n >= IDEM_MAX && oldest) {
		struct entry *e = *oldest;

		*oldest = e->next;
		entry_free(e);
		t->n--;
	}
}

static struct entry *find_locked(struct idem *t, const char *tenant, const char *key)
{
	for (struct entry *e = t->list; e; e = e->next)
		if (!strcmp(e->tenant, tenant) && !strcmp(e->key, key))
			return e;
	return NULL;
}

enum idem_state idem_begin(struct idem *t, const char *tenant, const char *key, const void *body,
			   size_t len, int64_t now_s, unsigned *status, char **answer)
{
	unsigned char hash[EVP_MAX_MD_SIZE];
	unsigned hlen = 0;
	enum idem_state st;
	struct entry *e;

	*answer = NULL;
	*status = 0;
	if (!EVP_Digest(body, len, hash, &hlen, EVP_sha256(), NULL) || hlen != 32)
		return IDEM_FULL;
	pthread_mutex_lock(&t->mu);
	e = find_locked(t, tenant, key);
	if (!e || (e->done && now_s - e->at > IDEM_TTL_S)) {
		/* a new key: make room (an expired one goes here too) */
		trim_locked(t, now_s);
		e = NULL;
	}
	if (e) {
		if (memcmp(e->hash, hash, 32)) {
			st = IDEM_MISMATCH;
		} else if (!e->done) {
			st = IDEM_BUSY;
		} else {
			st = IDEM_DONE;
			*status = e->status;
			*answer = strdup(e->answer);
			if (!*answer)
				st = IDEM_FULL;
		}
	} else if (t->n >= IDEM_MAX || !(e = calloc(1, sizeof(*e)))) {
		st = IDEM_FULL;
	} else {
		snprintf(e->tenant, sizeof(e->tenant), "%s", tenant);
		snprintf(e->key, sizeof(e->key), "%s", key);
		memcpy(e->hash, hash, 32);
		e->next = t->list;
		t->list = e;
		t->n++;
		st = IDEM_NEW;
	}
	pthread_mutex_unlock(&t->mu);
	return st;
}

void idem_finish(struct idem *t, const char *tenant, const char *key, unsigned status,
		 const char *answer, int64_t now_s)
{
	struct entry **pp, *e;

	pthread_mutex_lock(&t->mu);
	for (pp = &t->list; (e = *pp); pp = &e->next)
		if (!e->done && !strcmp(e->tenant, tenant) && !strcmp(e->key, key))
			break;
	if (e) {
		e->answer = status ? strdup(answer ? answer : "") : NULL;
		if (!e->answer) {
			*pp = e->next;
			entry_free(e);
			t->n--;
		} else {
			e->done = true;
			e->status = status;
			e->at = now_s;
		}
	}
	pthread_mutex_unlock(&t->mu);
}
