/*
 * kilnd's Idempotency-Keys: a first claim runs, a retry with the same body
 * gets the first answer, a different body is a mismatch, a key in progress
 * is busy, keys are per tenant, a forgotten answer lets a retry run again,
 * answers expire after IDEM_TTL_S, and the table never holds more than
 * IDEM_MAX keys (the oldest answer goes; all in progress: full).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/idem.h"

static const char body1[] = "{\"image\":\"tiny\"}", body2[] = "{\"image\":\"debian\"}";

static enum idem_state begin(struct idem *t, const char *tenant, const char *key,
			     const char *body, int64_t now, unsigned *status, char **answer)
{
	return idem_begin(t, tenant, key, body, strlen(body), now, status, answer);
}

static void test_replay_mismatch_busy(void **state)
{
	struct idem *t;
	unsigned status;
	char *answer;

	(void)state;
	assert_int_equal(idem_create(&t), 0);
	assert_int_equal(begin(t, "acme", "k1", body1, 100, &status, &answer), IDEM_NEW);
	assert_int_equal(begin(t, "acme", "k1", body1, 100, &status, &answer), IDEM_BUSY);
	assert_int_equal(begin(t, "acme", "k1", body2, 100, &status, &answer), IDEM_MISMATCH);
	/* another tenant's key of the same name is its own */
	assert_int_equal(begin(t, "other", "k1", body1, 100, &status, &answer), IDEM_NEW);
	idem_finish(t, "acme", "k1", 201, "{\"id\":\"sb-1\"}", 101);
	assert_int_equal(begin(t, "acme", "k1", body1, 102, &status, &answer), IDEM_DONE);
	assert_int_equal(status, 201);
	assert_string_equal(answer, "{\"id\":\"sb-1\"}");
	free(answer);
	assert_int_equal(begin(t, "acme", "k1", body2, 102, &status, &answer), IDEM_MISMATCH);
	/* status 0 forgets: the retry runs again */
	idem_finish(t, "other", "k1", 0, NULL, 103);
	assert_int_equal(begin(t, "other", "k1", body1, 104, &status, &answer), IDEM_NEW);
	idem_free(t);
}

static void test_expiry(void **state)
{
	struct idem *t;
	unsigned status;
	char *answer;

	(void)state;
	assert_int_equal(idem_create(&t), 0);
	assert_int_equal(begin(t, "acme", "k", body1, 1000, &status, &answer), IDEM_NEW);
	idem_finish(t, "acme", "k", 400, "{}", 1000);
	assert_int_equal(begin(t, "acme", "k", body1, 1000 + IDEM_TTL_S, &status, &answer),
			 IDEM_DONE);
	free(answer);
	assert_int_equal(begin(t, "acme", "k", body2, 1001 + IDEM_TTL_S, &status, &answer),
			 IDEM_NEW);
	idem_free(t);
}

static void test_bounded(void **state)
{
	struct idem *t;
	unsigned status;
	char key[32], *answer;

	(void)state;
	assert_int_equal(idem_create(&t), 0);
	for (int i = 0; i < IDEM_MAX; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_int_equal(begin(t, "acme", key, body1, 10, &status, &answer), IDEM_NEW);
	}
	/* every key in progress: no room */
	assert_int_equal(begin(t, "acme", "one-more", body1, 10, &status, &answer), IDEM_FULL);
	idem_finish(t, "acme", "k7", 201, "{\"id\":\"sb-7\"}", 11);
	idem_finish(t, "acme", "k8", 201, "{\"id\":\"sb-8\"}", 12);
	/* the oldest answer (k7) makes room, k8 stays */
	assert_int_equal(begin(t, "acme", "one-more", body1, 13, &status, &answer), IDEM_NEW);
	assert_int_equal(begin(t, "acme", "k8", body1, 13, &status, &answer), IDEM_DONE);
	assert_string_equal(answer, "{\"id\":\"sb-8\"}");
	free(answer);
	/* k7 was forgotten: it runs again, in k8's room; then nothing is left to give */
	assert_int_equal(begin(t, "acme", "k7", body1, 14, &status, &answer), IDEM_NEW);
	assert_int_equal(begin(t, "acme", "k8", body1, 14, &status, &answer), IDEM_FULL);
	idem_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_replay_mismatch_busy),
		cmocka_unit_test(test_expiry),
		cmocka_unit_test(test_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
