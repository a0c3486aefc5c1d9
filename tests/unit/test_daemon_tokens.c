/*
 * kilnd's tokens file: a valid file found by token (and nothing else found),
 * and every kind of bad file refused with a one-line reason that names the
 * file and the problem.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/tokens.h"

/* SHA-256 of "test" and of "abc". */
#define H_TEST "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define H_ABC  "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define H_ABC_UPPER "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"

#define TENANT(name, hash, extra)                                                          \
	"{\"name\": \"" name "\", \"token_sha256\": \"" hash "\", \"max_sandboxes\": 4, "    \
	"\"max_vcpus\": 8, \"max_memory_mib\": 8192, \"max_timeout_s\": 3600" extra "}"

static char dir[] = "/tmp/kiln-tokens-XXXXXX";
static char path[sizeof(dir) + 32];

static int setup(void **state)
{
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof(path), "%s/tokens.json", dir);
	return 0;
}

static int teardown(void **state)
{
	unlink(path);
	return rmdir(dir);
}

static void put(const char *text, size_t len)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void put_str(const char *text)
{
	put(text, strlen(text));
}

/* Loading p fails with want, and err is one line naming the file and holding each of
 * the words (NULL-terminated). */
static void refused_at(const char *p, int want, ...)
{
	struct tokens *t = (struct tokens *)1;
	char err[512], prefix[128];
	const char *word;
	va_list ap;

	memset(err, 'x', sizeof(err));
	assert_int_equal(tokens_load(p, &t, err, sizeof(err)), want);
	assert_null(t);
	assert_non_null(memchr(err, 0, sizeof(err)));
	assert_null(strchr(err, '\n'));
	snprintf(prefix, sizeof(prefix), "tokens file %s: ", p);
	assert_memory_equal(err, prefix, strlen(prefix));
	va_start(ap, want);
	while ((word = va_arg(ap, const char *))) {
		if (!strstr(err, word))
			fail_msg("\"%s\" lacks \"%s\"", err, word);
	}
	va_end(ap);
}

#define refused(text, ...)                                            \
	do {                                                          \
		put_str(text);                                        \
		refused_at(path, -EINVAL, __VA_ARGS__, (const char *)NULL); \
	} while (0)

static void test_valid(void **state)
{
	const struct tokens_tenant *a, *b;
	struct tokens *t = NULL;
	char err[256] = "";

	put_str("{\"tenants\": [" TENANT("acme", H_TEST, "") ",\n"
		"{\"name\": \"b-2.x_y\", \"token_sha256\": \"" H_ABC_UPPER "\", "
		"\"max_sandboxes\": 4096, \"max_vcpus\": 1, \"max_memory_mib\": 1073741824, "
		"\"max_timeout_s\": 2592000}]}\n");
	assert_int_equal(tokens_load(path, &t, err, sizeof(err)), 0);
	assert_non_null(t);
	assert_int_equal(tokens_count(t), 2);

	a = tokens_find(t, "test", 4);
	assert_non_null(a);
	assert_string_equal(a->name, "acme");
	assert_int_equal(a->max_sandboxes, 4);
	assert_int_equal(a->max_vcpus, 8);
	assert_int_equal(a->max_memory_mib, 8192);
	assert_int_equal(a->max_timeout_s, 3600);

	b = tokens_find(t, "abc", 3);
	assert_non_null(b);
	assert_string_equal(b->name, "b-2.x_y");
	assert_int_equal(b->max_sandboxes, 4096);
	assert_int_equal(b->max_vcpus, 1);
	assert_int_equal(b->max_memory_mib, 1ull << 30);
	assert_int_equal(b->max_timeout_s, 30 * 24 * 3600);

	assert_null(tokens_find(t, "tesT", 4));
	assert_null(tokens_find(t, "test", 3));	    /* a prefix */
	assert_null(tokens_find(t, "test\n", 5));   /* with a newline */
	assert_null(tokens_find(t, "", 0));
	assert_null(tokens_find(t, "test", 0));
	assert_null(tokens_find(t, NULL, 4));
	assert_null(tokens_find(NULL, "test", 4));
	assert_null(tokens_find(t, H_TEST, 64)); /* the hash is not the token */
	tokens_free(t);
	tokens_free(NULL);
	assert_int_equal(tokens_count(NULL), 0);
}

/* Tokens over 4096 bytes find nothing, even one whose hash is there; 4096 is fine. */
static void test_token_length(void **state)
{
	char big[4097];
	struct tokens *t = NULL;
	char err[256];

	/* SHA-256 of 4096 and of 4097 'a's. */
	put_str("{\"tenants\": ["
		TENANT("a4096", "c93eee2d0db02f10acc7460d9576e122dcf8cd53c4bf8dfcae1b3e74ebcfff5a", "")
		"," TENANT("a4097", "4e369b5618643c3abddd027b650bfa54810be3b418028a7c9d82299a59d008e8", "")
		"]}");
	assert_int_equal(tokens_load(path, &t, err, sizeof(err)), 0);
	memset(big, 'a', sizeof(big));
	assert_non_null(tokens_find(t, big, 4096));
	assert_string_equal(tokens_find(t, big, 4096)->name, "a4096");
	assert_null(tokens_find(t, big, sizeof(big)));
	tokens_free(t);
}

/* The largest list loads, and a token of the last entry is found. */
static void test_many(void **state)
{
	const size_t n = 4096;
	size_t cap = (n + 1) * 200 + 64, len = 0;
	char *text = malloc(cap);
	struct tokens *t = NULL;
	char err[256];

	assert_non_null(text);
	len += (size_t)snprintf(text + len, cap - len, "{\"tenants\": [");
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(text + len, cap - len,
					"%s{\"name\": \"t%zu\", \"token_sha256\": \"%064zx\", "
					"\"max_sandboxes\": 1, \"max_vcpus\": 1, "
					"\"max_memory_mib\": 1, \"max_timeout_s\": 1}",
					i ? "," : "", i, i);
	len += (size_t)snprintf(text + len, cap - len,
				",{\"name\": \"last\", \"token_sha256\": \"" H_TEST "\", "
				"\"max_sandboxes\": 1, \"max_vcpus\": 1, "
				"\"max_memory_mib\": 1, \"max_timeout_s\": 1}]}");
	assert_true(len < cap);
	/* 4097 entries: too many. */
	put(text, len);
	refused_at(path, -EINVAL, "tenants must be an array of 1 to 4096", (const char *)NULL);

	/* Drop the first entry: 4096, the cap. */
	{
		char *first = strstr(text, "},{");

		assert_non_null(first);
		memmove(text + 13, first + 2, len - (size_t)(first + 2 - text) + 1);
		len = strlen(text);
	}
	put(text, len);
	assert_int_equal(tokens_load(path, &t, err, sizeof(err)), 0);
	assert_int_equal(tokens_count(t), 4096);
	assert_non_null(tokens_find(t, "test", 4));
	assert_string_equal(tokens_find(t, "test", 4)->name, "last");
	assert_null(tokens_find(t, "abc", 3));
	tokens_free(t);
	free(text);
}

static void test_missing_key(void **state)
{
	refused("{\"tenants\": [{\"name\": \"a\", \"token_sha256\": \"" H_TEST "\", "
		"\"max_sandboxes\": 4, \"max_vcpus\": 8, \"max_memory_mib\": 8192}]}",
		"tenant 1", "missing key max_timeout_s");
	refused("{\"tenants\": [" TENANT("a", H_TEST, "") ", {\"token_sha256\": \"" H_ABC "\", "
		"\"max_sandboxes\": 4, \"max_vcpus\": 8, \"max_memory_mib\": 8192, "
		"\"max_timeout_s\": 1}]}",
		"tenant 2", "missing key name");
	refused("{}", "the top level must be an object with the one key \"tenants\"");
}

static void test_unknown_key(void **state)
{
	refused("{\"tenants\": [" TENANT("a", H_TEST, ", \"max_disk\": 1") "]}", "tenant 1",
		"unknown key \"max_disk\"");
	/* A key with a newline is reported on one line. */
	refused("{\"tenants\": [" TENANT("a", H_TEST, ", \"x\\ny\": 1") "]}", "unknown key");
	refused("{\"tenants\": [" TENANT("a", H_TEST, "") "], \"version\": 1}",
		"the one key \"tenants\"");
	/* A key twice in one object. */
	refused("{\"tenants\": [" TENANT("a", H_TEST, ", \"max_vcpus\": 8") "]}",
		"not valid JSON", "duplicate");
}

static void test_wrong_type(void **state)
{
	refused("{\"tenants\": [" TENANT("a", H_TEST, "") ", 5]}", "tenant 2: not an object");
	refused("{\"tenants\": {\"name\": \"a\"}}", "tenants must be an array");
	refused("{\"tenants\": [{\"name\": 5, \"token_sha256\": \"" H_TEST "\", "
		"\"max_sandboxes\": 4, \"max_vcpus\": 8, \"max_memory_mib\": 8192, "
		"\"max_timeout_s\": 1}]}",
		"tenant 1", "name must be a string");
	refused("{\"tenants\": [{\"name\": \"a\", \"token_sha256\": null, "
		"\"max_sandboxes\": 4, \"max_vcpus\": 8, \"max_memory_mib\": 8192, "
		"\"max_timeout_s\": 1}]}",
		"tenant 1 (a)", "token_sha256 must be a string");
	refused("{\"tenants\": [{\"name\": \"a\", \"token_sha256\": \"" H_TEST "\", "
		"\"max_sandboxes\": 4, \"max_vcpus\": \"8\", \"max_memory_mib\": 8192, "
		"\"max_timeout_s\": 1}]}",
		"tenant 1 (a): max_vcpus must be an integer from 1 to 4096");
	refused("{\"tenants\": [{\"name\": \"a\", \"token_sha256\": \"" H_TEST "\", "
		"\"max_sandboxes\": 4.0, \"max_vcpus\": 8, \"max_memory_mib\": 8192, "
		"\"max_timeout_s\": 1}]}",
		"max_sandboxes must be an integer from 1 to 4096");
	refused("{\"tenants\": [{\"name\": \"a\", \"token_sha256\": \"" H_TEST "\", "
		"\"max_sandboxes\": 4, \"max_vcpus\": 8, \"max_memory_mib\": true, "
		"\"max_timeout_s\": 1}]}",
		"max_memory_mib must be an integer from 1 to 1073741824");
}

static void test_out_of_range(void **state)
{
	refused("{\"tenants\": [{\"name\": \"a\", \"token_sha256\": \"" H_TEST "\", "
		"\"max_sandboxes\": 0, \"max_vcpus\": 8, \"max_memory_mib\": 8192, "
		"\"max_timeout_s\": 1}]}",
		"max_sandboxes must be an integer from 1 to 4096");
	refused("{\"tenants\": [{\"name\": \"a\", \"token_sha256\": \"" H_TEST "\", "
		"\"max_sandboxes\": 1, \"max_vcpus\": 4097, \"max_memory_mib\": 8192, "
		"\"max_timeout_s\": 1}]}",
		"max_vcpus must be an integer from 1 to 4096");
	refused("{\"tenants\": [{\"name\": \"a\", \"token_sha256\": \"" H_TEST "\", "
		"\"max_sandboxes\": 1, \"max_vcpus\": 1, \"max_memory_mib\": 1073741825, "
		"\"max_timeout_s\": 1}]}",
		"max_memory_mib must be an integer from 1 to 1073741824");
	refused("{\"tenants\": [{\"name\": \"a\", \"token_sha256\": \"" H_TEST "\", "
		"\"max_sandboxes\": 1, \"max_vcpus\": 1, \"max_memory_mib\": 1, "
		"\"max_timeout_s\": 2592001}]}",
		"max_timeout_s must be an integer from 1 to 2592000");
	refused("{\"tenants\": [{\"name\": \"a\", \"token_sha256\": \"" H_TEST "\", "
		"\"max_sandboxes\": -1, \"max_vcpus\": 1, \"max_memory_mib\": 1, "
		"\"max_timeout_s\": 1}]}",
		"max_sandboxes must be an integer");
	refused("{\"tenants\": [{\"name\": \"a\", \"token_sha256\": \"" H_TEST "\", "
		"\"max_sandboxes\": 1, \"max_vcpus\": 1, \"max_memory_mib\": 1, "
		"\"max_timeout_s\": -18446744073709551615}]}",
		"not valid JSON");
	/* Names: empty, too long, a character outside the set, a NUL. */
	refused("{\"tenants\": [" TENANT("", H_TEST, "") "]}", "tenant 1", "name must be");
	refused("{\"tenants\": [" TENANT("a234567890123456789012345678901234567890123456789012"
					 "345678901234", H_TEST, "") "]}",
		"name must be a string of 1 to 63");
	refused("{\"tenants\": [" TENANT("a b", H_TEST, "") "]}", "name must be");
	refused("{\"tenants\": [" TENANT("a/b", H_TEST, "") "]}", "name must be");
	refused("{\"tenants\": [" TENANT("a\\u0000b", H_TEST, "") "]}", "not valid JSON");
	put_str("{\"tenants\": [" TENANT("a2345678901234567890123456789012345678901234567890"
					 "1234567890123", H_TEST, "") "]}");
	{
		struct tokens *t = NULL;
		char err[256];

		assert_int_equal(tokens_load(path, &t, err, sizeof(err)), 0);
		assert_int_equal(strlen(tokens_find(t, "test", 4)->name), 63);
		tokens_free(t);
	}
}

static void test_bad_hex(void **state)
{
	refused("{\"tenants\": [" TENANT("a", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c"
					 "15b0f00a0g", "") "]}",
		"tenant 1 (a): token_sha256", "not a hex digit");
	refused("{\"tenants\": [" TENANT("a", " f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c"
					 "15b0f00a08", "") "]}",
		"not a hex digit");
}

static void test_hex_length(void **state)
{
	refused("{\"tenants\": [" TENANT("a", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c"
					 "15b0f00a0", "") "]}",
		"token_sha256 must be a string of exactly 64 hex digits");
	refused("{\"tenants\": [" TENANT("a", H_TEST "0", "") "]}", "exactly 64 hex digits");
	refused("{\"tenants\": [" TENANT("a", "", "") "]}", "exactly 64 hex digits");
}

static void test_duplicates(void **state)
{
	refused("{\"tenants\": [" TENANT("a", H_TEST, "") "," TENANT("b", H_ABC, "") ","
		TENANT("a", "0000000000000000000000000000000000000000000000000000000000000000", "")
		"]}",
		"tenant 3: name a is also tenant 1's");
	/* The same hash in another case is the same hash. */
	refused("{\"tenants\": [" TENANT("a", H_ABC, "") "," TENANT("b", H_ABC_UPPER, "") "]}",
		"tenant 2 (b): token_sha256 is also tenant 1's (a)");
}

static void test_empty_list(void **state)
{
	refused("{\"tenants\": []}", "tenants must be an array of 1 to 4096 objects");
}

static void test_not_json(void **state)
{
	refused("{\"tenants\": [" TENANT("a", H_TEST, ""), "not valid JSON", "line 1");
	refused("", "not valid JSON");
	refused("{\"tenants\": []} x", "not valid JSON");
	/* Control characters from the file do not reach the reason raw. */
	refused("\x1b[2J\n\n", "not valid JSON");
}

static void test_not_object(void **state)
{
	refused("[" TENANT("a", H_TEST, "") "]", "the top level must be an object");
	refused("\"tenants\"", "the top level must be an object");
	refused("42", "the top level must be an object");
}

static void test_not_regular(void **state)
{
	char fifo[sizeof(dir) + 16];

	refused_at(dir, -EINVAL, "not a regular file", (const char *)NULL);
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	refused_at(fifo, -EINVAL, "not a regular file", (const char *)NULL); /* and no hang */
	unlink(fifo);
}

static void test_oversized(void **state)
{
	const char *body = "{\"tenants\": [" TENANT("a", H_TEST, "") "]}";
	size_t blen = strlen(body);
	char *text = malloc(TOKENS_FILE_MAX + 1);
	struct tokens *t = NULL;
	char err[256];

	assert_non_null(text);
	/* Exactly the cap (padded with spaces) loads; one byte more does not. */
	memset(text, ' ', TOKENS_FILE_MAX + 1);
	memcpy(text, body, blen);
	put(text, TOKENS_FILE_MAX);
	assert_int_equal(tokens_load(path, &t, err, sizeof(err)), 0);
	tokens_free(t);
	put(text, TOKENS_FILE_MAX + 1);
	refused_at(path, -EINVAL, "larger than 1048576 bytes", (const char *)NULL);
	free(text);
}

/* A file that is not there: the open's errno (-ENOENT), with its strerror. */
static void test_missing_file(void **state)
{
	char p[sizeof(dir) + 16];

	snprintf(p, sizeof(p), "%s/none.json", dir);
	refused_at(p, -ENOENT, "cannot open", "No such file", (const char *)NULL);
}

/* A short err buffer is cut, still NUL-terminated; a NULL one is allowed. */
static void test_short_err(void **state)
{
	struct tokens *t = NULL;
	char err[8];

	put_str("{\"tenants\": []}");
	memset(err, 'x', sizeof(err));
	assert_int_equal(tokens_load(path, &t, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "tokens ");
	assert_int_equal(tokens_load(path, &t, NULL, 0), -EINVAL);
	assert_null(t);
}

/* "admin" is optional, false when absent, and must be a boolean. */
static void test_admin(void **state)
{
	struct tokens *t = NULL;
	char err[256] = "";

	put_str("{\"tenants\": [" TENANT("ops", H_TEST, ", \"admin\": true") ","
		TENANT("user", H_ABC, "") "]}");
	assert_int_equal(tokens_load(path, &t, err, sizeof(err)), 0);
	assert_true(tokens_find(t, "test", 4)->admin);
	assert_false(tokens_find(t, "abc", 3)->admin);
	tokens_free(t);
	put_str("{\"tenants\": [" TENANT("ops", H_TEST, ", \"admin\": false") "]}");
	assert_int_equal(tokens_load(path, &t, err, sizeof(err)), 0);
	assert_false(tokens_find(t, "test", 4)->admin);
	tokens_free(t);
	refused("{\"tenants\": [" TENANT("ops", H_TEST, ", \"admin\": 1") "]}", "tenant 1 (ops)",
		"admin must be true or false");
	refused("{\"tenants\": [" TENANT("ops", H_TEST, ", \"admin\": \"yes\"") "]}",
		"admin must be true or false");
	refused("{\"tenants\": [" TENANT("ops", H_TEST, ", \"admin\": null") "]}",
		"admin must be true or false");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_token_length),
		cmocka_unit_test(test_many),
		cmocka_unit_test(test_missing_key),
		cmocka_unit_test(test_unknown_key),
		cmocka_unit_test(test_wrong_type),
		cmocka_unit_test(test_out_of_range),
		cmocka_unit_test(test_bad_hex),
		cmocka_unit_test(test_hex_length),
		cmocka_unit_test(test_duplicates),
		cmocka_unit_test(test_empty_list),
		cmocka_unit_test(test_not_json),
		cmocka_unit_test(test_not_object),
		cmocka_unit_test(test_not_regular),
		cmocka_unit_test(test_oversized),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_short_err),
		cmocka_unit_test(test_admin),
	};

	return cmocka_run_group_tests_name("daemon_tokens", tests, setup, teardown);
}
