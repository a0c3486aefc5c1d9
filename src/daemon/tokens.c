/*
 * kilnd's tenants and their token hashes (see tokens.h).
 *
 * The file is read through one descriptor (opened non-blocking so a FIFO
 * cannot stall us, checked to be a regular file of at most TOKENS_FILE_MAX
 * bytes, then read into a buffer of that cap) and parsed with jansson,
 * duplicate object keys refused. Every value is checked before anything is
 * kept; the first problem ends the load with a one-line reason naming the
 * file and the tenant (numbered from 1 in file order). Names and keys from
 * the file are sanitized before they reach the reason.
 *
 * tokens_find hashes the presented token once and compares that digest with
 * every stored digest using CRYPTO_memcmp; the match is folded into an index
 * with masks, so the work done does not depend on where (or whether) a
 * stored hash matches. Only the final found/not-found is a branch.
 */
#include "daemon/tokens.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "sanitize.h"

#define TOKENS_TENANTS_MAX 4096
#define TOKENS_TOKEN_MAX   4096
#define TOKENS_DIGEST_LEN  32
#define TOKENS_SMALL_MAX   4096u
#define TOKENS_MEMORY_MAX  (1ull << 30)
#define TOKENS_TIMEOUT_MAX (30ull * 24 * 3600)
#define TOKENS_SAFE_LEN    96 /* a sanitized path, name or key in a reason */

struct tokens_entry {
	struct tokens_tenant tenant;
	unsigned char digest[TOKENS_DIGEST_LEN];
};

struct tokens {
	size_t n;
	struct tokens_entry *e;
};

static const char *const tokens_keys[] = {
	"name", "token_sha256", "max_sandboxes", "max_vcpus", "max_memory_mib", "max_timeout_s",
};
/* Optional keys: "admin" (a boolean, false when absent). */
static const char *const tokens_optional[] = { "admin" };

__attribute__((format(printf, 4, 5))) static void tokens_err(char *err, size_t errlen,
							      const char *path, const char *fmt, ...)
{
	char safe[TOKENS_SAFE_LEN];
	size_t used;
	va_list ap;
	int n;

	if (!err || errlen == 0)
		return;
	n = snprintf(err, errlen, "tokens file %s: ", text_sanitize_str(safe, sizeof(safe), path));
	if (n < 0 || (size_t)n >= errlen)
		return;
	used = (size_t)n;
	va_start(ap, fmt);
	vsnprintf(err + used, errlen - used, fmt, ap);
	va_end(ap);
}

/* The whole file into a NUL-terminated buffer (*out, *len); 0 or -errno. */
static int tokens_read(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
	char *buf = NULL;
	struct stat st;
	size_t got = 0;
	int ret = -EINVAL, fd;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		ret = -errno;
		tokens_err(err, errlen, path, "cannot open: %s", strerror(-ret));
		goto out;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		tokens_err(err, errlen, path, "cannot stat: %s", strerror(-ret));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		tokens_err(err, errlen, path, "not a regular file");
		goto out;
	}
	if (st.st_size > TOKENS_FILE_MAX) {
		tokens_err(err, errlen, path, "larger than %d bytes", TOKENS_FILE_MAX);
		goto out;
	}
	buf = malloc((size_t)TOKENS_FILE_MAX + 2);
	if (!buf) {
		ret = -ENOMEM;
		tokens_err(err, errlen, path, "out of memory");
		goto out;
	}
	/* Read up to one byte past the cap, in case the file grew since fstat. */
	while (got <= (size_t)TOKENS_FILE_MAX) {
		ssize_t n = read(fd, buf + got, (size_t)TOKENS_FILE_MAX + 1 - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			tokens_err(err, errlen, path, "cannot read: %s", strerror(-ret));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got > (size_t)TOKENS_FILE_MAX) {
		tokens_err(err, errlen, path, "larger than %d bytes", TOKENS_FILE_MAX);
		goto out;
	}
	buf[got] = 0;
	*out = buf;
	*len = got;
	buf = NULL;
	ret = 0;
out:
	free(buf);
	if (fd >= 0)
		close(fd);
	return ret;
}

static int tokens_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool tokens_name_ok(const char *s, size_t len)
{
	if (len == 0 || len > TOKENS_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

/* An integer member in [1, max]. */
static int tokens_int(const json_t *obj, const char *key, uint64_t max, uint64_t *out)
{
	const json_t *v = json_object_get(obj, key);
	json_int_t i;

	if (!v || !json_is_integer(v))
		return -EINVAL;
	i = json_integer_value(v);
	if (i < 1 || (uint64_t)i > max)
		return -EINVAL;
	*out = (uint64_t)i;
	return 0;
}

/* Tenant number idx (from 1) into e; 0 or -EINVAL with the reason in err. */
static int tokens_parse_tenant(const char *path, size_t idx, json_t *obj,
			       struct tokens_entry *e, char *err, size_t errlen)
{
	static const struct {
		const char *key;
		uint64_t max;
	} ints[] = {
		{ "max_sandboxes", TOKENS_SMALL_MAX },
		{ "max_vcpus", TOKENS_SMALL_MAX },
		{ "max_memory_mib", TOKENS_MEMORY_MAX },
		{ "max_timeout_s", TOKENS_TIMEOUT_MAX },
	};
	uint64_t vals[4];
	char safe[TOKENS_SAFE_LEN];
	const char *key, *s;
	const json_t *v;
	int ret = -EINVAL;
	size_t len;

	if (!json_is_object(obj)) {
		tokens_err(err, errlen, path, "tenant %zu: not an object", idx);
		goto out;
	}
	json_object_foreach(obj, key, v) {
		bool known = false;

		for (size_t k = 0; k < sizeof(tokens_keys) / sizeof(tokens_keys[0]); k++)
			known |= !strcmp(key, tokens_keys[k]);
		for (size_t k = 0; k < sizeof(tokens_optional) / sizeof(tokens_optional[0]); k++)
			known |= !strcmp(key, tokens_optional[k]);
		if (!known) {
			tokens_err(err, errlen, path, "tenant %zu: unknown key \"%s\"", idx,
				   text_sanitize_str(safe, sizeof(safe), key));
			goto out;
		}
	}
	for (size_t k = 0; k < sizeof(tokens_keys) / sizeof(tokens_keys[0]); k++) {
		if (!json_object_get(obj, tokens_keys[k])) {
			tokens_err(err, errlen, path, "tenant %zu: missing key %s", idx,
				   tokens_keys[k]);
			goto out;
		}
	}

	v = json_object_get(obj, "name");
	s = json_string_value(v);
	len = s ? json_string_length(v) : 0;
	if (!s || !tokens_name_ok(s, len)) {
		tokens_err(err, errlen, path,
			   "tenant %zu: name must be a string of 1 to %d characters from "
			   "[A-Za-z0-9_.-]",
			   idx, TOKENS_NAME_MAX);
		goto out;
	}
	memcpy(e->tenant.name, s, len);
	e->tenant.name[len] = 0;

	v = json_object_get(obj, "token_sha256");
	s = json_string_value(v);
	len = s ? json_string_length(v) : 0;
	if (!s || len != 2 * TOKENS_DIGEST_LEN) {
		tokens_err(err, errlen, path,
			   "tenant %zu (%s): token_sha256 must be a string of exactly %d hex digits",
			   idx, e->tenant.name, 2 * TOKENS_DIGEST_LEN);
		goto out;
	}
	for (size_t i = 0; i < TOKENS_DIGEST_LEN; i++) {
		int hi = tokens_hexval((unsigned char)s[2 * i]);
		int lo = tokens_hexval((unsigned char)s[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			tokens_err(err, errlen, path,
				   "tenant %zu (%s): token_sha256 holds a character that is not a "
				   "hex digit",
				   idx, e->tenant.name);
			goto out;
		}
		e->digest[i] = (unsigned char)(hi << 4 | lo);
	}

	for (size_t k = 0; k < sizeof(ints) / sizeof(ints[0]); k++) {
		if (tokens_int(obj, ints[k].key, ints[k].max, &vals[k])) {
			tokens_err(err, errlen, path,
				   "tenant %zu (%s): %s must be an integer from 1 to %llu", idx,
				   e->tenant.name, ints[k].key, (unsigned long long)ints[k].max);
			goto out;
		}
	}
	e->tenant.max_sandboxes = (unsigned)vals[0];
	e->tenant.max_vcpus = (unsigned)vals[1];
	e->tenant.max_memory_mib = vals[2];
	e->tenant.max_timeout_s = vals[3];
	v = json_object_get(obj, "admin");
	if (v && !json_is_boolean(v)) {
		tokens_err(err, errlen, path, "tenant %zu (%s): admin must be true or false", idx,
			   e->tenant.name);
		goto out;
	}
	e->tenant.admin = v && json_is_true(v);
	ret = 0;
out:
	return ret;
}

int tokens_load(const char *path, struct tokens **out, char *err, size_t errlen)
{
	struct tokens *t = NULL;
	json_t *root = NULL;
	const json_t *list;
	json_error_t jerr;
	char *text = NULL;
	char safe[JSON_ERROR_TEXT_LENGTH];
	size_t len = 0, n;
	int ret;

	*out = NULL;
	if (err && errlen)
		err[0] = 0;
	ret = tokens_read(path, &text, &len, err, errlen);
	if (ret)
		goto out;
	ret = -EINVAL;
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!root) {
		tokens_err(err, errlen, path, "not valid JSON: line %d column %d: %s", jerr.line,
			   jerr.column, text_sanitize_str(safe, sizeof(safe), jerr.text));
		goto out;
	}
	list = json_object_get(root, "tenants");
	if (!json_is_object(root) || json_object_size(root) != 1 || !list) {
		tokens_err(err, errlen, path,
			   "the top level must be an object with the one key \"tenants\"");
		goto out;
	}
	n = json_array_size(list);
	if (!json_is_array(list) || n < 1 || n > TOKENS_TENANTS_MAX) {
		tokens_err(err, errlen, path, "tenants must be an array of 1 to %d objects",
			   TOKENS_TENANTS_MAX);
		goto out;
	}
	t = calloc(1, sizeof(*t));
	if (t)
		t->e = calloc(n, sizeof(*t->e));
	if (!t || !t->e) {
		ret = -ENOMEM;
		tokens_err(err, errlen, path, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		struct tokens_entry *e = &t->e[i];

		ret = tokens_parse_tenant(path, i + 1, json_array_get(list, i), e, err, errlen);
		if (ret)
			goto out;
		t->n = i + 1;
		/* At most 4096 entries: the quadratic check is a few million compares. */
		ret = -EINVAL;
		for (size_t j = 0; j < i; j++) {
			if (!strcmp(t->e[j].tenant.name, e->tenant.name)) {
				tokens_err(err, errlen, path,
					   "tenant %zu: name %s is also tenant %zu's", i + 1,
					   e->tenant.name, j + 1);
				goto out;
			}
			if (!memcmp(t->e[j].digest, e->digest, TOKENS_DIGEST_LEN)) {
				tokens_err(err, errlen, path,
					   "tenant %zu (%s): token_sha256 is also tenant %zu's (%s)",
					   i + 1, e->tenant.name, j + 1, t->e[j].tenant.name);
				goto out;
			}
		}
	}
	*out = t;
	t = NULL;
	ret = 0;
out:
	tokens_free(t);
	json_decref(root);
	free(text);
	return ret;
}

void tokens_free(struct tokens *t)
{
	if (!t)
		return;
	if (t->e)
		OPENSSL_cleanse(t->e, t->n * sizeof(*t->e));
	free(t->e);
	free(t);
}

const struct tokens_tenant *tokens_find(const struct tokens *t, const char *token, size_t len)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	const struct tokens_tenant *found = NULL;
	unsigned int mdlen = 0;
	size_t idx = 0; /* the match's index + 1, or 0 */

	if (!t || !token || len == 0 || len > TOKENS_TOKEN_MAX)
		goto out;
	if (!EVP_Digest(token, len, md, &mdlen, EVP_sha256(), NULL) ||
	    mdlen != TOKENS_DIGEST_LEN)
		goto out;
	for (size_t i = 0; i < t->n; i++) {
		unsigned d = (unsigned)CRYPTO_memcmp(md, t->e[i].digest, TOKENS_DIGEST_LEN);
		/* 1 when d == 0, else 0, without a branch; then all ones or zero. */
		size_t hit = 1 ^ (size_t)((d | (0u - d)) >> (sizeof(d) * 8 - 1));
		size_t mask = (size_t)0 - hit;

		idx |= mask & (i + 1);
	}
	if (idx)
		found = &t->e[idx - 1].tenant;
out:
	OPENSSL_cleanse(md, sizeof(md));
	return found;
}

size_t tokens_count(const struct tokens *t)
{
	return t ? t->n : 0;
}
