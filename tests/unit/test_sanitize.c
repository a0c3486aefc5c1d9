/*
 * text_sanitize (src/common/sanitize.h): guest text made safe for a
 * terminal. Kept: printable ASCII and valid UTF-8 outside the control and
 * bidi ranges. Escaped as \xNN: C0, DEL, C1 (raw or UTF-8), invalid or
 * overlong UTF-8, bidi overrides; a backslash doubles. Bounded and cut at a
 * piece boundary with "...".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sanitize.h"

static const char *san(const char *in, size_t len, size_t cap)
{
	static char out[1024];

	assert_true(cap <= sizeof(out));
	return text_sanitize(out, cap, in, len);
}

#define S(lit) san(lit, sizeof(lit) - 1, 1024)

static void test_kept(void **state)
{
	assert_string_equal(S("plain text: 42 {ok} [x] ~"), "plain text: 42 {ok} [x] ~");
	assert_string_equal(S("gr\xc3\xbc\xc3\x9f \xe2\x82\xac \xf0\x9f\x94\xa5"),
			    "gr\xc3\xbc\xc3\x9f \xe2\x82\xac \xf0\x9f\x94\xa5");
	assert_string_equal(S(""), "");
}

static void test_escaped(void **state)
{
	assert_string_equal(S("\x1b[2J\x1b]0;t\x07"), "\\x1b[2J\\x1b]0;t\\x07");
	assert_string_equal(S("a\r\nb\tc\bd\x7f"), "a\\x0d\\x0ab\\x09c\\x08d\\x7f");
	assert_string_equal(S("\x9b" "6n"), "\\x9b6n");		 /* raw C1 CSI */
	assert_string_equal(S("\xc2\x9b" "6n"), "\\xc2\\x9b6n");	 /* C1 in UTF-8 */
	assert_string_equal(S("\xe2\x80\xae" "gnp.exe"), "\\xe2\\x80\\xaegnp.exe"); /* RLO */
	assert_string_equal(S("\xc0\xaf"), "\\xc0\\xaf");		 /* overlong '/' */
	assert_string_equal(S("\xed\xa0\x80"), "\\xed\\xa0\\x80");	 /* surrogate */
	assert_string_equal(S("\xe2\x82"), "\\xe2\\x82");		 /* truncated */
	assert_string_equal(S("\xff\xfe"), "\\xff\\xfe");
	assert_string_equal(S("a\\x1b"), "a\\\\x1b"); /* no forged escapes */
	assert_string_equal(san("a\0b", 3, 64), "a\\x00b");
}

static void test_bounded(void **state)
{
	char big[600], out[64];

	memset(big, 'x', sizeof(big));
	text_sanitize(out, sizeof(out), big, sizeof(big));
	assert_int_equal(strlen(out), sizeof(out) - 1);
	assert_memory_equal(out + sizeof(out) - 4, "...", 3);
	/* Exactly fitting text is not cut. */
	assert_string_equal(san("abcdef", 6, 7), "abcdef");
	assert_string_equal(san("abcdefg", 7, 7), "abc...");
	/* An escape is never cut in half. */
	memset(big, 0x1b, sizeof(big));
	text_sanitize(out, sizeof(out), big, sizeof(big));
	assert_true(strlen(out) < sizeof(out));
	for (size_t i = 0; out[i] && strncmp(out + i, "...", 3); i += 4)
		assert_memory_equal(out + i, "\\x1b", 4);
	/* Too small to say anything. */
	assert_string_equal(san("abc", 3, 4), "abc");
	assert_string_equal(san("abcd", 4, 4), "...");
	text_sanitize(out, 1, "abc", 3);
	assert_string_equal(out, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kept),
		cmocka_unit_test(test_escaped),
		cmocka_unit_test(test_bounded),
	};

	return cmocka_run_group_tests_name("sanitize", tests, NULL, NULL);
}
