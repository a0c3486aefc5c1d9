/*
 * kiln-router's upstream HTTP client (src/router/upstream.c): what a kilnd,
 * or anything at a host's address, answers.
 *
 * Input: one byte of options, then the upstream's bytes. They are written
 * whole into one end of a socketpair whose writing side is then shut down;
 * the other end goes through up_attach into the functions the proxy uses:
 * up_exchange_on (a create, a list, a probe) or up_read_head and
 * up_read_body in pieces of one of four sizes (a forwarded stream).
 *
 * Properties:
 *  - an answer that parses has a status of 200..599, and no header name or
 *    value holds a control byte but HT (nothing to split an answer with);
 *  - a body never holds more bytes than the upstream sent, never more than
 *    the exchange's cap, and is NUL-terminated;
 *  - a body framed by Content-Length that ends well is exactly that long;
 *  - every call returns (the sender is gone: nothing may wait on it).
 */
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "router/upstream.h"

#define TIMEOUT_MS 5000

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	return 0;
}

static void check_headers(const struct up_conn *c)
{
	static const char *const names[] = { "Content-Type", "X-Kiln-Host", "Retry-After",
					     "Content-Length", "Transfer-Encoding" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const char *v = up_header(c, names[i]);

		for (; v && *v; v++)
			FZ_CHECK((unsigned char)*v >= 0x20 || *v == '\t', "control byte in %s",
				 names[i]);
	}
}

static void exchange(struct up_conn *c, uint8_t opt, size_t sent)
{
	static const size_t caps[] = { 0, 100, 8192, 1 << 20 };
	size_t max = caps[(opt >> 1) & 3], len = 0;
	char host[64], *resp = NULL;
	unsigned status = 0;
	int r = up_exchange_on(c, "GET", "/v1/capacity", NULL, NULL, 0, &status, &resp, &len,
			       max, host, sizeof(host));

	if (!r) {
		FZ_CHECK(status >= 200 && status <= 599, "status %u", status);
		FZ_CHECK(resp, "no body buffer");
		FZ_CHECK(len <= sent && len <= max, "body %zu of %zu sent, cap %zu", len, sent, max);
		FZ_CHECK(!resp[len], "body not NUL-terminated");
		FZ_CHECK(strlen(host) < sizeof(host), "host header");
	} else {
		FZ_CHECK(!resp && !len, "a failed exchange kept a body");
	}
	free(resp);
}

static void stream(struct up_conn *c, uint8_t opt, size_t sent)
{
	static const size_t sizes[] = { 1, 7, 4096, 65536 };
	size_t piece = sizes[(opt >> 1) & 3], total = 0;
	char *buf = malloc(piece);
	unsigned status = 0;
	uint64_t announced;
	ssize_t n = 0;

	if (!buf)
		return;
	if (up_read_head(c, &status)) {
		FZ_CHECK(!status, "a failed head kept status %u", status);
		goto out;
	}
	FZ_CHECK(status >= 200 && status <= 599, "status %u", status);
	check_headers(c);
	announced = up_body_len(c);
	for (;;) {
		(void)up_pending(c);
		n = up_read_body(c, buf, piece);
		if (n <= 0)
			break;
		FZ_CHECK((size_t)n <= piece, "read %zd into %zu", n, piece);
		total += (size_t)n;
		FZ_CHECK(total <= sent, "body %zu of %zu sent", total, sent);
	}
	if (!n && announced != UP_UNKNOWN_LEN)
		FZ_CHECK(total == announced, "body %zu, announced %llu", total,
			 (unsigned long long)announced);
	FZ_CHECK(up_read_body(c, buf, piece) <= 0 || n < 0, "bytes after the end");
out:
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct up_conn *c = NULL;
	uint8_t opt;
	int sv[2];
	size_t off = 0;

	if (!size)
		return 0;
	opt = data[0];
	data++;
	size--;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	while (off < size) {
		ssize_t n = write(sv[1], data + off, size - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			abort();
		off += (size_t)n;
	}
	shutdown(sv[1], SHUT_WR);
	if (up_attach(sv[0], TIMEOUT_MS, &c)) {
		close(sv[0]);
		goto out;
	}
	if (opt & 1)
		exchange(c, opt, size);
	else
		stream(c, opt, size);
	up_close(c);
out:
	close(sv[1]);
	return 0;
}
