/*
 * ctl_check (src/common/ctl.h): the VMM's control messages. Exactly one
 * well-formed 160-byte message passes; every other size, a wrong magic, a
 * non-zero reserved field, an unknown type or an unterminated text is
 * -EBADMSG with a reason, and nothing is copied out.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ctl.h"

static void test_good(void **state)
{
	static const enum ctl_type types[] = { CTL_PAUSE, CTL_RESUME, CTL_STATUS, CTL_REPLY,
					       CTL_EV_BOOTED, CTL_EV_EXIT };
	struct ctl_msg m, out;
	const char *why = "x";

	(void)state;
	for (unsigned i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		ctl_init(&m, types[i], 42, -5, "why");
		m.a = 7;
		memset(&out, 0xaa, sizeof(out));
		assert_int_equal(ctl_check(&m, sizeof(m), &out, &why), 0);
		assert_null(why);
		assert_int_equal(out.type, types[i]);
		assert_int_equal(out.id, 42);
		assert_int_equal(out.result, -5);
		assert_int_equal(out.a, 7);
		assert_string_equal(out.text, "why");
	}
	/* A text as long as it may be is cut, and still terminated. */
	char long_text[300];

	memset(long_text, 'z', sizeof(long_text) - 1);
	long_text[sizeof(long_text) - 1] = 0;
	ctl_init(&m, CTL_EV_EXIT, 0, 0, long_text);
	assert_int_equal(strlen(m.text), CTL_TEXT_MAX - 1);
	assert_int_equal(ctl_check(&m, sizeof(m), &out, &why), 0);
}

static void bad(const void *buf, size_t len)
{
	struct ctl_msg out;
	const char *why = NULL;

	memset(&out, 0x55, sizeof(out));
	assert_int_equal(ctl_check(buf, len, &out, &why), -EBADMSG);
	assert_non_null(why);
	assert_int_equal(out.magic, 0x55555555u); /* untouched */
}

static void test_bad(void **state)
{
	uint8_t buf[2 * sizeof(struct ctl_msg)];
	struct ctl_msg m;

	(void)state;
	ctl_init(&m, CTL_STATUS, 1, 0, NULL);
	memcpy(buf, &m, sizeof(m));
	memset(buf + sizeof(m), 0, sizeof(m));
	for (size_t len = 0; len < sizeof(buf); len++)
		if (len != sizeof(m))
			bad(buf, len);
	m.magic ^= 1;
	bad(&m, sizeof(m));
	ctl_init(&m, CTL_STATUS, 1, 0, NULL);
	m.reserved = 1;
	bad(&m, sizeof(m));
	for (unsigned t = 0; t < 0x10000; t++) {
		if (t == CTL_PAUSE || t == CTL_RESUME || t == CTL_STATUS || t == CTL_REPLY ||
		    t == CTL_EV_BOOTED || t == CTL_EV_EXIT)
			continue;
		ctl_init(&m, CTL_STATUS, 1, 0, NULL);
		m.type = (uint16_t)t;
		bad(&m, sizeof(m));
	}
	ctl_init(&m, CTL_REPLY, 1, 0, NULL);
	memset(m.text, 'a', sizeof(m.text));
	bad(&m, sizeof(m));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_bad),
	};

	return cmocka_run_group_tests_name("ctl", tests, NULL, NULL);
}
