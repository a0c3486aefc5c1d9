/*
 * The kiln agent protocol codec: round trips of every message, and malformed
 * input of every kind rejected cleanly (truncations at every length,
 * oversize lengths, overflowing counts, fields past the end, bad versions,
 * random corruption). Meant to run under ASan/UBSan too.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hostname.h"
#include "proto.h"

static uint8_t buf[PROTO_MAX_FRAME];

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Decode the header of a frame we just encoded and check it. */
static const uint8_t *payload_of(int len, uint16_t type, uint32_t id, int from,
				 struct proto_hdr *h)
{
	assert_true(len >= (int)PROTO_HDR_SIZE);
	assert_int_equal(proto_hdr_decode(buf, from, h), 0);
	assert_int_equal(h->type, type);
	assert_int_equal(h->id, id);
	assert_int_equal(h->len, (uint32_t)len - PROTO_HDR_SIZE);
	return buf + PROTO_HDR_SIZE;
}

static void test_header(void **state)
{
	struct proto_hdr h = { .len = 5, .type = PROTO_STDIN, .flags = PROTO_F_EOF, .id = 0xdeadbeef };
	struct proto_hdr g;
	const uint8_t want[12] = { 5, 0, 0, 0, 0x12, 0, 1, 0, 0xef, 0xbe, 0xad, 0xde };

	proto_hdr_encode(buf, &h);
	assert_memory_equal(buf, want, sizeof(want)); /* little-endian, fixed layout */
	assert_int_equal(proto_hdr_decode(buf, PROTO_FROM_CLIENT, &g), 0);
	assert_int_equal(g.len, 5);
	assert_int_equal(g.type, PROTO_STDIN);
	assert_int_equal(g.flags, PROTO_F_EOF);
	assert_int_equal(g.id, 0xdeadbeef);

	/* Wrong direction: STDIN comes from the client only. */
	assert_int_equal(proto_hdr_decode(buf, PROTO_FROM_AGENT, &g), -EBADMSG);
	/* Unknown types, including gaps in the table and the far end. */
	for (unsigned t = 0; t < 0x10000; t++) {
		h.type = (uint16_t)t;
		h.flags = 0;
		h.len = 0;
		proto_hdr_encode(buf, &h);
		if (!strcmp(proto_type_name(t), "?")) {
			assert_int_equal(proto_hdr_decode(buf, PROTO_FROM_CLIENT, &g), -EBADMSG);
			assert_int_equal(proto_hdr_decode(buf, PROTO_FROM_AGENT, &g), -EBADMSG);
		}
	}
	/* Flags a type does not have. */
	h.type = PROTO_EXEC;
	h.flags = PROTO_F_EOF;
	proto_hdr_encode(buf, &h);
	assert_int_equal(proto_hdr_decode(buf, PROTO_FROM_CLIENT, &g), -EBADMSG);
	h.type = PROTO_STDIN;
	h.flags = 0x8000;
	proto_hdr_encode(buf, &h);
	assert_int_equal(proto_hdr_decode(buf, PROTO_FROM_CLIENT, &g), -EBADMSG);
	/* Oversize: past the global cap, and past a small per-type cap. */
	h.flags = 0;
	h.len = PROTO_MAX_PAYLOAD;
	proto_hdr_encode(buf, &h);
	assert_int_equal(proto_hdr_decode(buf, PROTO_FROM_CLIENT, &g), 0);
	h.len = PROTO_MAX_PAYLOAD + 1;
	proto_hdr_encode(buf, &h);
	assert_int_equal(proto_hdr_decode(buf, PROTO_FROM_CLIENT, &g), -EBADMSG);
	h.len = 0xffffffffu;
	proto_hdr_encode(buf, &h);
	assert_int_equal(proto_hdr_decode(buf, PROTO_FROM_CLIENT, &g), -EBADMSG);
	h.type = PROTO_HELLO;
	h.len = 13;
	proto_hdr_encode(buf, &h);
	assert_int_equal(proto_hdr_decode(buf, PROTO_FROM_CLIENT, &g), -EBADMSG);
	h.type = PROTO_SHUTDOWN;
	h.len = 1;
	proto_hdr_encode(buf, &h);
	assert_int_equal(proto_hdr_decode(buf, PROTO_FROM_CLIENT, &g), -EBADMSG);
}

static void test_hello(void **state)
{
	struct proto_hello m = { .version = PROTO_VERSION }, d;
	struct proto_hello_ok ok = { .version = PROTO_VERSION, .caps = 7, .max_payload = 65536,
				     .stdin_window = 4096 };
	struct proto_hello_ok dok;
	struct proto_hdr h;
	const uint8_t *p;
	uint8_t pl[64];
	int len;

	len = proto_enc_hello(buf, sizeof(buf), 1, &m);
	p = payload_of(len, PROTO_HELLO, 1, PROTO_FROM_CLIENT, &h);
	assert_int_equal(proto_dec_hello(p, h.len, &d), 0);
	assert_int_equal(d.version, PROTO_VERSION);
	memcpy(pl, p, h.len);

	/* Bad version: a distinct error, so the agent can say so. */
	put32(pl + 4, 2);
	assert_int_equal(proto_dec_hello(pl, h.len, &d), -EPROTONOSUPPORT);
	put32(pl + 4, 0);
	assert_int_equal(proto_dec_hello(pl, h.len, &d), -EPROTONOSUPPORT);
	put32(pl + 4, PROTO_VERSION);
	/* Bad magic, unknown flags, truncated, trailing byte. */
	pl[0] ^= 1;
	assert_int_equal(proto_dec_hello(pl, h.len, &d), -EBADMSG);
	pl[0] ^= 1;
	put32(pl + 8, 1);
	assert_int_equal(proto_dec_hello(pl, h.len, &d), -EBADMSG);
	put32(pl + 8, 0);
	for (uint32_t n = 0; n < h.len; n++)
		assert_int_equal(proto_dec_hello(pl, n, &d), -EBADMSG);
	assert_int_equal(proto_dec_hello(pl, h.len + 1, &d), -EBADMSG);

	snprintf(ok.agent, sizeof(ok.agent), "kiln-init test");
	len = proto_enc_hello_ok(buf, sizeof(buf), 1, &ok);
	p = payload_of(len, PROTO_HELLO_OK, 1, PROTO_FROM_AGENT, &h);
	assert_int_equal(proto_dec_hello_ok(p, h.len, &dok), 0);
	assert_int_equal(dok.caps, 7);
	assert_int_equal(dok.max_payload, 65536);
	assert_int_equal(dok.stdin_window, 4096);
	assert_string_equal(dok.agent, "kiln-init test");
	for (uint32_t n = 0; n < h.len; n++)
		assert_int_not_equal(proto_dec_hello_ok(p, n, &dok), 0);
	/* A max_payload the client could not live with. */
	ok.max_payload = PROTO_MAX_PAYLOAD + 1;
	len = proto_enc_hello_ok(buf, sizeof(buf), 1, &ok);
	p = payload_of(len, PROTO_HELLO_OK, 1, PROTO_FROM_AGENT, &h);
	assert_int_equal(proto_dec_hello_ok(p, h.len, &dok), -EBADMSG);
}

static void test_ok_error(void **state)
{
	struct proto_error e;
	struct proto_hdr h;
	const uint8_t *p;
	uint64_t v;
	char longmsg[PROTO_MSG_MAX + 100];
	int len;

	len = proto_enc_ok(buf, sizeof(buf), 9, 0x1122334455667788ull);
	p = payload_of(len, PROTO_OK, 9, PROTO_FROM_AGENT, &h);
	assert_int_equal(proto_dec_ok(p, h.len, &v), 0);
	assert_true(v == 0x1122334455667788ull);
	assert_int_equal(proto_dec_ok(p, 7, &v), -EBADMSG);

	len = proto_enc_error(buf, sizeof(buf), 3, -ENOENT, "no such file");
	p = payload_of(len, PROTO_ERROR, 3, PROTO_FROM_AGENT, &h);
	assert_int_equal(proto_dec_error(p, h.len, &e), 0);
	assert_int_equal(e.err, ENOENT);
	assert_string_equal(e.msg, "no such file");
	for (uint32_t n = 0; n < h.len; n++)
		assert_int_equal(proto_dec_error(p, n, &e), -EBADMSG);

	/* Long messages are cut at the cap on encode... */
	memset(longmsg, 'x', sizeof(longmsg) - 1);
	longmsg[sizeof(longmsg) - 1] = 0;
	len = proto_enc_error(buf, sizeof(buf), 3, EIO, longmsg);
	p = payload_of(len, PROTO_ERROR, 3, PROTO_FROM_AGENT, &h);
	assert_int_equal(proto_dec_error(p, h.len, &e), 0);
	assert_int_equal(strlen(e.msg), PROTO_MSG_MAX);
	/* ...and rejected on decode. */
	memcpy(buf + 100, p, h.len);
	put32(buf + 104, PROTO_MSG_MAX + 1);
	memset(buf + 108, 'x', PROTO_MSG_MAX + 1);
	assert_int_equal(proto_dec_error(buf + 100, 8 + PROTO_MSG_MAX + 1, &e), -EBADMSG);
	/* errno 0 or out of range. */
	assert_int_equal(proto_enc_error(buf, sizeof(buf), 3, 0, "x"), -EINVAL);
	len = proto_enc_error(buf, sizeof(buf), 3, EIO, "");
	p = payload_of(len, PROTO_ERROR, 3, PROTO_FROM_AGENT, &h);
	memcpy(buf + 100, p, h.len);
	put32(buf + 100, 0);
	assert_int_equal(proto_dec_error(buf + 100, h.len, &e), -EBADMSG);
	put32(buf + 100, 70000);
	assert_int_equal(proto_dec_error(buf + 100, h.len, &e), -EBADMSG);
}

static const char *const test_argv[] = { "sh", "-c", "echo \"$A\"", "", NULL };
static const char *const test_env[] = { "A=b c", "PATH=/bin", NULL };

static int enc_test_exec(uint32_t id)
{
	struct proto_exec m = {
		.flags = PROTO_EXEC_STDIN, .uid = 1000, .gid = 100, .argc = 4, .envc = 2,
		.cwd = "/tmp", .argv = test_argv, .envp = test_env,
	};

	return proto_enc_exec(buf, sizeof(buf), id, &m);
}

static void test_exec(void **state)
{
	struct proto_exec *d;
	struct proto_hdr h;
	const uint8_t *p;
	uint8_t *pl;
	int len;

	len = enc_test_exec(77);
	p = payload_of(len, PROTO_EXEC, 77, PROTO_FROM_CLIENT, &h);
	assert_int_equal(proto_dec_exec(p, h.len, &d), 0);
	assert_int_equal(d->flags, PROTO_EXEC_STDIN);
	assert_int_equal(d->uid, 1000);
	assert_int_equal(d->gid, 100);
	assert_int_equal(d->argc, 4);
	assert_int_equal(d->envc, 2);
	assert_string_equal(d->cwd, "/tmp");
	for (int i = 0; i < 4; i++)
		assert_string_equal(d->argv[i], test_argv[i]);
	assert_null(d->argv[4]);
	assert_string_equal(d->envp[0], "A=b c");
	assert_string_equal(d->envp[1], "PATH=/bin");
	assert_null(d->envp[2]);
	free(d);

	pl = malloc(h.len + 16);
	assert_non_null(pl);
	memcpy(pl, p, h.len);
	/* Every truncation fails, and so does a trailing byte. */
	for (uint32_t n = 0; n < h.len; n++) {
		assert_int_equal(proto_dec_exec(pl, n, &d), -EBADMSG);
		assert_null(d);
	}
	pl[h.len] = 0;
	assert_int_equal(proto_dec_exec(pl, h.len + 1, &d), -EBADMSG);
	/* Counts: zero argv, huge argv and env counts (no allocation of 2^32 * 8). */
	put32(pl + 12, 0);
	assert_int_equal(proto_dec_exec(pl, h.len, &d), -EBADMSG);
	put32(pl + 12, 0xffffffffu);
	assert_int_equal(proto_dec_exec(pl, h.len, &d), -EBADMSG);
	put32(pl + 12, 0x20000000u); /* * 8 overflows 32 bits */
	assert_int_equal(proto_dec_exec(pl, h.len, &d), -EBADMSG);
	put32(pl + 12, PROTO_ARGC_MAX); /* allowed count, but the strings are not there */
	assert_int_equal(proto_dec_exec(pl, h.len, &d), -EBADMSG);
	put32(pl + 12, 5); /* one more than encoded: eats an env string, then runs out */
	assert_int_equal(proto_dec_exec(pl, h.len, &d), -EBADMSG);
	put32(pl + 12, 4);
	put32(pl + 16, 0xffffffffu);
	assert_int_equal(proto_dec_exec(pl, h.len, &d), -EBADMSG);
	put32(pl + 16, 2);
	/* A string length past the end, and the largest one. */
	put32(pl + 20, 1000);
	assert_int_equal(proto_dec_exec(pl, h.len, &d), -EBADMSG);
	put32(pl + 20, 0xffffffffu);
	assert_int_equal(proto_dec_exec(pl, h.len, &d), -EBADMSG);
	put32(pl + 20, 0xfffffffcu); /* + 4 wraps to 0 */
	assert_int_equal(proto_dec_exec(pl, h.len, &d), -EBADMSG);
	put32(pl + 20, 4);
	/* An embedded NUL in cwd ("/tmp" at offset 24). */
	pl[26] = 0;
	assert_int_equal(proto_dec_exec(pl, h.len, &d), -EBADMSG);
	pl[26] = 'm';
	/* Unknown flags. */
	put32(pl, 0x80);
	assert_int_equal(proto_dec_exec(pl, h.len, &d), -EBADMSG);
	put32(pl, PROTO_EXEC_STDIN);
	/* Back to valid. */
	assert_int_equal(proto_dec_exec(pl, h.len, &d), 0);
	free(d);
	free(pl);
}

static void test_exec_caps(void **state)
{
	static char big[PROTO_ARG_MAX + 2];
	const char *argv[8] = { "x", big, NULL };
	struct proto_exec m = { .argc = 2, .argv = argv, .envp = NULL, .cwd = NULL };
	struct proto_exec *d;
	struct proto_hdr h;
	const uint8_t *p;
	int len;

	/* One argument at the per-string cap passes, one past it does not. */
	memset(big, 'a', PROTO_ARG_MAX);
	len = proto_enc_exec(buf, sizeof(buf), 1, &m);
	p = payload_of(len, PROTO_EXEC, 1, PROTO_FROM_CLIENT, &h);
	assert_int_equal(proto_dec_exec(p, h.len, &d), 0);
	assert_int_equal(strlen(d->argv[1]), PROTO_ARG_MAX);
	free(d);
	big[PROTO_ARG_MAX] = 'a';
	assert_int_equal(proto_enc_exec(buf, sizeof(buf), 1, &m), -EINVAL);
	/* Patch an encoded length past the per-string cap: rejected on decode. */
	big[PROTO_ARG_MAX] = 0;
	len = proto_enc_exec(buf, sizeof(buf), 1, &m);
	p = payload_of(len, PROTO_EXEC, 1, PROTO_FROM_CLIENT, &h);
	put32(buf + PROTO_HDR_SIZE + 20 + 4 + 4 + 1, PROTO_ARG_MAX + 1);
	assert_int_equal(proto_dec_exec(p, h.len, &d), -EBADMSG);
	/* Three arguments at the cap: past the argv total. */
	argv[2] = big;
	argv[3] = big;
	argv[4] = NULL;
	m.argc = 4;
	assert_int_equal(proto_enc_exec(buf, sizeof(buf), 1, &m), -E2BIG);
	/* argv[0] must not be empty. */
	argv[0] = "";
	m.argc = 1;
	assert_int_equal(proto_enc_exec(buf, sizeof(buf), 1, &m), -EINVAL);
	/* A buffer too small: -ENOSPC, never an overflow. */
	argv[0] = "x";
	assert_int_equal(proto_enc_exec(buf, 20, 1, &m), -ENOSPC);
	assert_int_equal(proto_enc_exec(buf, 4, 1, &m), -ENOSPC);
}

/* EXEC as a user: the spec last (after the pty size), 1..PROTO_USER_MAX bytes. */
static void test_exec_user(void **state)
{
	static char longuser[PROTO_USER_MAX + 2];
	const char *const argv[] = { "id", NULL };
	struct proto_exec m = { .flags = PROTO_EXEC_USER | PROTO_EXEC_PTY, .argc = 1, .argv = argv,
				.cwd = "/", .rows = 24, .cols = 80, .user = "agent:staff" };
	struct proto_exec *d;
	struct proto_hdr h;
	const uint8_t *p;
	uint8_t *pl;
	int len;

	(void)state;
	len = proto_enc_exec(buf, sizeof(buf), 9, &m);
	p = payload_of(len, PROTO_EXEC, 9, PROTO_FROM_CLIENT, &h);
	assert_int_equal(proto_dec_exec(p, h.len, &d), 0);
	assert_string_equal(d->user, "agent:staff");
	assert_int_equal(d->rows, 24);
	assert_int_equal(d->cols, 80);
	free(d);
	pl = malloc(h.len + 1);
	assert_non_null(pl);
	memcpy(pl, p, h.len);
	for (uint32_t n = 0; n < h.len; n++) {
		assert_int_equal(proto_dec_exec(pl, n, &d), -EBADMSG);
		assert_null(d);
	}
	/* A NUL inside, an empty spec, one past the cap; the flag off leaves trailing bytes. */
	pl[h.len - 3] = 0;
	assert_int_equal(proto_dec_exec(pl, h.len, &d), -EBADMSG);
	pl[h.len - 3] = 'a';
	put32(pl + h.len - 15, 0);
	assert_int_equal(proto_dec_exec(pl, h.len - 11, &d), -EBADMSG);
	put32(pl + h.len - 15, PROTO_USER_MAX + 1);
	assert_int_equal(proto_dec_exec(pl, h.len, &d), -EBADMSG);
	put32(pl + h.len - 15, 11);
	assert_int_equal(proto_dec_exec(pl, h.len, &d), 0);
	free(d);
	put32(pl, PROTO_EXEC_PTY);
	assert_int_equal(proto_dec_exec(pl, h.len, &d), -EBADMSG);
	free(pl);

	/* Without the pty; and without the flag the user is "". */
	m.flags = PROTO_EXEC_USER;
	m.user = "1000";
	len = proto_enc_exec(buf, sizeof(buf), 9, &m);
	p = payload_of(len, PROTO_EXEC, 9, PROTO_FROM_CLIENT, &h);
	assert_int_equal(proto_dec_exec(p, h.len, &d), 0);
	assert_string_equal(d->user, "1000");
	free(d);
	m.flags = 0;
	len = proto_enc_exec(buf, sizeof(buf), 9, &m);
	p = payload_of(len, PROTO_EXEC, 9, PROTO_FROM_CLIENT, &h);
	assert_int_equal(proto_dec_exec(p, h.len, &d), 0);
	assert_string_equal(d->user, "");
	free(d);

	/* The encoder refuses what the decoder would. */
	m.flags = PROTO_EXEC_USER;
	m.user = NULL;
	assert_int_equal(proto_enc_exec(buf, sizeof(buf), 9, &m), -EINVAL);
	m.user = "";
	assert_int_equal(proto_enc_exec(buf, sizeof(buf), 9, &m), -EINVAL);
	memset(longuser, 'u', PROTO_USER_MAX);
	m.user = longuser;
	assert_true(proto_enc_exec(buf, sizeof(buf), 9, &m) > 0);
	longuser[PROTO_USER_MAX] = 'u';
	assert_int_equal(proto_enc_exec(buf, sizeof(buf), 9, &m), -EINVAL);
}

/* EXEC on a terminal: rows and cols after envp, bounded; RESIZE likewise. */
static void test_pty(void **state)
{
	static const uint32_t bad[][2] = { { 0, 80 }, { 24, 0 }, { PROTO_PTY_DIM_MAX + 1, 80 },
					   { 24, PROTO_PTY_DIM_MAX + 1 }, { 0xffffffffu, 0xffffffffu } };
	const char *const argv[] = { "bash", NULL };
	struct proto_exec m = { .flags = PROTO_EXEC_STDIN | PROTO_EXEC_PTY, .argc = 1, .argv = argv,
				.envp = test_env, .envc = 2, .cwd = "/", .rows = 24, .cols = 80 };
	struct proto_winsize ws = { .rows = 50, .cols = PROTO_PTY_DIM_MAX }, dws;
	struct proto_exec *d;
	struct proto_hdr h;
	static uint8_t pl[4096];
	const uint8_t *p;
	int len, plain;

	len = proto_enc_exec(buf, sizeof(buf), 5, &m);
	p = payload_of(len, PROTO_EXEC, 5, PROTO_FROM_CLIENT, &h);
	memcpy(pl, p, h.len);
	assert_int_equal(proto_dec_exec(pl, h.len, &d), 0);
	assert_int_equal(d->flags, PROTO_EXEC_STDIN | PROTO_EXEC_PTY);
	assert_int_equal(d->rows, 24);
	assert_int_equal(d->cols, 80);
	assert_string_equal(d->argv[0], "bash");
	assert_string_equal(d->envp[1], "PATH=/bin");
	free(d);
	/* Every truncation, and one byte more, is malformed. */
	for (uint32_t n = 0; n < h.len; n++) {
		assert_int_equal(proto_dec_exec(pl, n, &d), -EBADMSG);
		assert_null(d);
	}
	assert_int_equal(proto_dec_exec(pl, h.len + 1, &d), -EBADMSG);
	/* Zero and huge sizes: refused on encode and on decode. */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		m.rows = bad[i][0];
		m.cols = bad[i][1];
		assert_int_equal(proto_enc_exec(buf, sizeof(buf), 5, &m), -EINVAL);
		put32(pl + h.len - 8, bad[i][0]);
		put32(pl + h.len - 4, bad[i][1]);
		assert_int_equal(proto_dec_exec(pl, h.len, &d), -EBADMSG);
	}
	/* Without the flag the frame is what it always was: no size, and a
	 * size tacked on is trailing garbage. */
	m.flags = PROTO_EXEC_STDIN;
	m.rows = m.cols = 0;
	plain = proto_enc_exec(buf, sizeof(buf), 5, &m);
	assert_int_equal(plain, len - 8);
	p = payload_of(plain, PROTO_EXEC, 5, PROTO_FROM_CLIENT, &h);
	memcpy(pl, p, h.len);
	assert_int_equal(proto_dec_exec(pl, h.len, &d), 0);
	assert_int_equal(d->rows, 0);
	free(d);
	put32(pl + h.len, 24);
	put32(pl + h.len + 4, 80);
	assert_int_equal(proto_dec_exec(pl, h.len + 8, &d), -EBADMSG);
	/* The flag alone, without the size: malformed. */
	put32(pl, PROTO_EXEC_PTY);
	assert_int_equal(proto_dec_exec(pl, h.len, &d), -EBADMSG);
	/* Unknown flags still are. */
	put32(pl, 0x4);
	assert_int_equal(proto_dec_exec(pl, h.len, &d), -EBADMSG);

	len = proto_enc_resize(buf, sizeof(buf), 9, &ws);
	p = payload_of(len, PROTO_RESIZE, 9, PROTO_FROM_CLIENT, &h);
	assert_int_equal(h.len, 8);
	assert_int_equal(proto_dec_resize(p, h.len, &dws), 0);
	assert_int_equal(dws.rows, 50);
	assert_int_equal(dws.cols, PROTO_PTY_DIM_MAX);
	for (uint32_t n = 0; n < h.len; n++)
		assert_int_equal(proto_dec_resize(p, n, &dws), -EBADMSG);
	assert_int_equal(proto_dec_resize(p, h.len + 1, &dws), -EBADMSG);
	/* From the client only, and never longer than its 8 bytes. */
	assert_int_equal(proto_hdr_decode(buf, PROTO_FROM_AGENT, &h), -EBADMSG);
	put32(buf, 9);
	assert_int_equal(proto_hdr_decode(buf, PROTO_FROM_CLIENT, &h), -EBADMSG);
	put32(buf, 8);
	memcpy(pl, buf + PROTO_HDR_SIZE, 8);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ws.rows = bad[i][0];
		ws.cols = bad[i][1];
		assert_int_equal(proto_enc_resize(buf, sizeof(buf), 9, &ws), -EINVAL);
		put32(pl, bad[i][0]);
		put32(pl + 4, bad[i][1]);
		assert_int_equal(proto_dec_resize(pl, 8, &dws), -EBADMSG);
	}
	ws.rows = ws.cols = 1;
	assert_int_equal(proto_enc_resize(buf, 12, 9, &ws), -ENOSPC);
}

static void test_small_messages(void **state)
{
	struct proto_exec_ok eok = { .pid = 1234, .stdin_window = 65536 }, deok;
	struct proto_exit ex = { .code = 7, .signal = 0, .oom_kills = -1 }, dex;
	struct proto_signal sg = { .exec_id = 5, .signo = 15, .flags = PROTO_SIG_GROUP }, dsg;
	struct proto_hdr h;
	const uint8_t *p;
	uint8_t pl[64];
	uint32_t credit;
	int len;

	len = proto_enc_exec_ok(buf, sizeof(buf), 2, &eok);
	p = payload_of(len, PROTO_EXEC_OK, 2, PROTO_FROM_AGENT, &h);
	assert_int_equal(proto_dec_exec_ok(p, h.len, &deok), 0);
	assert_int_equal(deok.pid, 1234);
	assert_int_equal(deok.stdin_window, 65536);
	assert_int_equal(proto_dec_exec_ok(p, 7, &deok), -EBADMSG);

	len = proto_enc_exit(buf, sizeof(buf), 2, &ex);
	p = payload_of(len, PROTO_EXIT, 2, PROTO_FROM_AGENT, &h);
	assert_int_equal(proto_dec_exit(p, h.len, &dex), 0);
	assert_int_equal(dex.code, 7);
	assert_int_equal(dex.signal, 0);
	ex.code = -1;
	ex.signal = 9;
	len = proto_enc_exit(buf, sizeof(buf), 2, &ex);
	p = payload_of(len, PROTO_EXIT, 2, PROTO_FROM_AGENT, &h);
	assert_int_equal(proto_dec_exit(p, h.len, &dex), 0);
	assert_int_equal(dex.code, -1);
	assert_int_equal(dex.signal, 9);
	assert_int_equal(dex.oom_kills, -1); /* 8 bytes: not told */
	/* PROTO_CAP_OOM's count rides behind; beyond INT64_MAX it is malformed. */
	ex.oom_kills = 3;
	len = proto_enc_exit(buf, sizeof(buf), 2, &ex);
	p = payload_of(len, PROTO_EXIT, 2, PROTO_FROM_AGENT, &h);
	assert_int_equal(h.len, 16);
	assert_int_equal(proto_dec_exit(p, h.len, &dex), 0);
	assert_int_equal(dex.oom_kills, 3);
	memcpy(pl, p, 16);
	memset(pl + 8, 0xff, 8);
	assert_int_equal(proto_dec_exit(pl, 16, &dex), -EBADMSG);
	assert_int_equal(proto_dec_exit(pl, 12, &dex), -EBADMSG);
	ex.oom_kills = -2;
	assert_int_equal(proto_enc_exit(buf, sizeof(buf), 2, &ex), -EINVAL);
	ex.oom_kills = -1;
	/* Both, neither, out of range. */
	memcpy(pl, p, 8);
	put32(pl, 0);
	assert_int_equal(proto_dec_exit(pl, 8, &dex), -EBADMSG);
	put32(pl, 256);
	put32(pl + 4, 0);
	assert_int_equal(proto_dec_exit(pl, 8, &dex), -EBADMSG);
	put32(pl, 0xffffffffu);
	put32(pl + 4, 65);
	assert_int_equal(proto_dec_exit(pl, 8, &dex), -EBADMSG);
	ex.code = 1;
	ex.signal = 9;
	assert_int_equal(proto_enc_exit(buf, sizeof(buf), 2, &ex), -EINVAL);

	len = proto_enc_signal(buf, sizeof(buf), 3, &sg);
	p = payload_of(len, PROTO_SIGNAL, 3, PROTO_FROM_CLIENT, &h);
	assert_int_equal(proto_dec_signal(p, h.len, &dsg), 0);
	assert_int_equal(dsg.exec_id, 5);
	assert_int_equal(dsg.signo, 15);
	assert_int_equal(dsg.flags, PROTO_SIG_GROUP);
	memcpy(pl, p, 12);
	put32(pl + 4, 0);
	assert_int_equal(proto_dec_signal(pl, 12, &dsg), -EBADMSG);
	put32(pl + 4, 65);
	assert_int_equal(proto_dec_signal(pl, 12, &dsg), -EBADMSG);
	put32(pl + 4, 9);
	put32(pl + 8, 2);
	assert_int_equal(proto_dec_signal(pl, 12, &dsg), -EBADMSG);
	sg.signo = 0;
	assert_int_equal(proto_enc_signal(buf, sizeof(buf), 3, &sg), -EINVAL);

	len = proto_enc_credit(buf, sizeof(buf), 4, PROTO_F_EOF, 4096);
	p = payload_of(len, PROTO_STDIN_CREDIT, 4, PROTO_FROM_AGENT, &h);
	assert_int_equal(h.flags, PROTO_F_EOF);
	assert_int_equal(proto_dec_credit(p, h.len, &credit), 0);
	assert_int_equal(credit, 4096);
	memcpy(pl, p, 4);
	put32(pl, PROTO_MAX_PAYLOAD + 1);
	assert_int_equal(proto_dec_credit(pl, 4, &credit), -EBADMSG);
	assert_int_equal(proto_dec_credit(pl, 3, &credit), -EBADMSG);

	len = proto_enc_data(buf, sizeof(buf), PROTO_STDOUT, 0, 6, "hello", 5);
	p = payload_of(len, PROTO_STDOUT, 6, PROTO_FROM_AGENT, &h);
	assert_memory_equal(p, "hello", 5);
	/* A data frame bigger than the cap cannot be built. */
	assert_int_equal(proto_enc_data(buf, sizeof(buf) + 0, PROTO_STDOUT, 0, 6, buf,
					PROTO_MAX_PAYLOAD + 1),
			 -EMSGSIZE);
}

static void test_path_stat(void **state)
{
	struct proto_path m = { .flags = PROTO_PATH_PARENTS, .mode = 0755, .uid = 1, .gid = 2 };
	struct proto_path d;
	struct proto_stat st = { .mode = 0100644, .uid = 3, .gid = 4, .nlink = 1,
				 .size = 1ull << 40, .mtime_sec = -5, .mtime_nsec = 999999999 };
	struct proto_stat dst;
	struct proto_hdr h;
	const uint8_t *p;
	uint8_t *pl;
	int len;

	snprintf(m.path, sizeof(m.path), "/a/b/c");
	len = proto_enc_path(buf, sizeof(buf), PROTO_MKDIR, 8, &m);
	p = payload_of(len, PROTO_MKDIR, 8, PROTO_FROM_CLIENT, &h);
	assert_int_equal(proto_dec_path(p, h.len, &d), 0);
	assert_int_equal(d.flags, PROTO_PATH_PARENTS);
	assert_int_equal(d.mode, 0755);
	assert_int_equal(d.uid, 1);
	assert_int_equal(d.gid, 2);
	assert_string_equal(d.path, "/a/b/c");
	for (uint32_t n = 0; n < h.len; n++)
		assert_int_equal(proto_dec_path(p, n, &d), -EBADMSG);
	/* A path of exactly the cap, and one byte more. */
	pl = calloc(1, 32 + PROTO_PATH_MAX + 2);
	assert_non_null(pl);
	memset(m.path, 'p', PROTO_PATH_MAX);
	m.path[0] = '/';
	m.path[PROTO_PATH_MAX] = 0;
	len = proto_enc_path(buf, sizeof(buf), PROTO_STAT, 8, &m);
	p = payload_of(len, PROTO_STAT, 8, PROTO_FROM_CLIENT, &h);
	assert_int_equal(proto_dec_path(p, h.len, &d), 0);
	assert_int_equal(strlen(d.path), PROTO_PATH_MAX);
	memcpy(pl, p, h.len);
	pl[h.len] = 'p';
	put32(pl + 16, PROTO_PATH_MAX + 1);
	assert_int_equal(proto_dec_path(pl, h.len + 1, &d), -EBADMSG);
	put32(pl + 16, PROTO_PATH_MAX);
	/* Mode and flags out of range. */
	put32(pl + 4, 010000);
	assert_int_equal(proto_dec_path(pl, h.len, &d), -EBADMSG);
	put32(pl + 4, 0);
	put32(pl, 0x100);
	assert_int_equal(proto_dec_path(pl, h.len, &d), -EBADMSG);
	free(pl);
	/* Only path request types. */
	assert_int_equal(proto_enc_path(buf, sizeof(buf), PROTO_EXEC, 8, &m), -EINVAL);

	len = proto_enc_stat(buf, sizeof(buf), 9, &st);
	p = payload_of(len, PROTO_STAT_OK, 9, PROTO_FROM_AGENT, &h);
	assert_int_equal(proto_dec_stat(p, h.len, &dst), 0);
	assert_int_equal(dst.mode, 0100644);
	assert_int_equal(dst.uid, 3);
	assert_int_equal(dst.gid, 4);
	assert_true(dst.size == 1ull << 40);
	assert_true(dst.mtime_sec == -5);
	assert_int_equal(dst.mtime_nsec, 999999999);
	for (uint32_t n = 0; n < h.len; n++)
		assert_int_equal(proto_dec_stat(p, n, &dst), -EBADMSG);
	memcpy(buf + 1000, p, h.len);
	put32(buf + 1000 + 32, 1000000000u);
	assert_int_equal(proto_dec_stat(buf + 1000, h.len, &dst), -EBADMSG);
}

#define ID_SB "sb-host1-0123456789abcdef0123456789abcdef"

/* An IDENTITY payload field by field, lengths as given (not as the data). */
static size_t identity_payload(uint8_t *out, uint64_t sec, uint32_t nsec, uint32_t elen,
			       size_t ebytes, const char *host, uint32_t hlen, const char *sbid,
			       uint32_t slen)
{
	size_t n = 0;

	for (int i = 0; i < 8; i++)
		out[n++] = (uint8_t)(sec >> (8 * i));
	put32(out + n, nsec);
	put32(out + n + 4, elen);
	n += 8;
	memset(out + n, 0xa5, ebytes);
	n += ebytes;
	put32(out + n, hlen);
	memcpy(out + n + 4, host, hlen);
	n += 4 + hlen;
	put32(out + n, slen);
	memcpy(out + n + 4, sbid, slen);
	return n + 4 + slen;
}

static size_t good_identity(uint8_t *out, const char *host, const char *sbid)
{
	return identity_payload(out, 1700000000, 5, 32, 32, host, (uint32_t)strlen(host), sbid,
				(uint32_t)strlen(sbid));
}

static void test_identity(void **state)
{
	static const char *const bad_hosts[] = { "-a", "a-", "a.b", "a_b", "a b", "\xc3\xa9", "",
						 NULL };
	static const char *const bad_ids[] = { "", "sb-", "sb-host1-0123", "xb-host1-0123456789abcdef0123456789abcdef",
					       "sb-host1-0123456789ABCDEF0123456789abcdef",
					       "sb-Host1-0123456789abcdef0123456789abcdef",
					       "sb-host1-0123456789abcdef0123456789abcdef\n", NULL };
	struct proto_identity m, d;
	struct proto_hdr h;
	uint8_t pl[1024], hdr[PROTO_HDR_SIZE];
	char host64[65], id77[80];
	const uint8_t *p;
	size_t n;
	int len;

	memset(&m, 0, sizeof(m));
	m.sec = 1700000000;
	m.nsec = 999999999;
	m.entropy_len = PROTO_ENTROPY_MAX;
	for (unsigned i = 0; i < PROTO_ENTROPY_MAX; i++)
		m.entropy[i] = (uint8_t)i;
	snprintf(m.hostname, sizeof(m.hostname), "sb-0123456789ab");
	snprintf(m.sandbox_id, sizeof(m.sandbox_id), "%s", ID_SB);
	len = proto_enc_identity(buf, sizeof(buf), 11, &m);
	p = payload_of(len, PROTO_IDENTITY, 11, PROTO_FROM_CLIENT, &h);
	assert_int_equal(proto_dec_identity(p, h.len, &d), 0);
	assert_true(d.sec == 1700000000);
	assert_int_equal(d.nsec, 999999999);
	assert_int_equal(d.entropy_len, PROTO_ENTROPY_MAX);
	assert_memory_equal(d.entropy, m.entropy, PROTO_ENTROPY_MAX);
	assert_string_equal(d.hostname, "sb-0123456789ab");
	assert_string_equal(d.sandbox_id, ID_SB);
	/* Every truncation, and one byte too many. */
	for (uint32_t k = 0; k < h.len; k++)
		assert_int_equal(proto_dec_identity(p, k, &d), -EBADMSG);
	memcpy(pl, p, h.len);
	pl[h.len] = 0;
	assert_int_equal(proto_dec_identity(pl, h.len + 1, &d), -EBADMSG);
	/* The largest IDENTITY fits its header's cap; one byte more does not. */
	memset(m.hostname, 'h', PROTO_HOSTNAME_MAX);
	m.hostname[PROTO_HOSTNAME_MAX] = 0;
	snprintf(m.sandbox_id, sizeof(m.sandbox_id), "sb-%.40s-0123456789abcdef0123456789abcdef",
		 "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh");
	assert_int_equal(strlen(m.sandbox_id), PROTO_SANDBOX_ID_MAX);
	len = proto_enc_identity(buf, sizeof(buf), 12, &m);
	p = payload_of(len, PROTO_IDENTITY, 12, PROTO_FROM_CLIENT, &h);
	assert_int_equal(proto_dec_identity(p, h.len, &d), 0);
	assert_int_equal(strlen(d.hostname), PROTO_HOSTNAME_MAX);
	proto_hdr_encode(hdr, &(struct proto_hdr){ .len = h.len + 1, .type = PROTO_IDENTITY });
	assert_int_equal(proto_hdr_decode(hdr, PROTO_FROM_CLIENT, &h), -EBADMSG);
	/* Client to agent only, no flags. */
	proto_hdr_encode(hdr, &(struct proto_hdr){ .len = 40, .type = PROTO_IDENTITY });
	assert_int_equal(proto_hdr_decode(hdr, PROTO_FROM_AGENT, &h), -EBADMSG);
	proto_hdr_encode(hdr, &(struct proto_hdr){ .len = 40, .type = PROTO_IDENTITY,
						   .flags = PROTO_F_EOF });
	assert_int_equal(proto_hdr_decode(hdr, PROTO_FROM_CLIENT, &h), -EBADMSG);

	/* Hand-made payloads: the good one decodes, each bad field does not. */
	n = good_identity(pl, "box", ID_SB);
	assert_int_equal(proto_dec_identity(pl, n, &d), 0);
	assert_string_equal(d.hostname, "box");
	n = identity_payload(pl, 0, 0, 32, 32, "a", 1, ID_SB, strlen(ID_SB));
	assert_int_equal(proto_dec_identity(pl, n, &d), 0); /* 1970 is a time */
	n = identity_payload(pl, PROTO_TIME_SEC_MAX, 0, 32, 32, "a", 1, ID_SB, strlen(ID_SB));
	assert_int_equal(proto_dec_identity(pl, n, &d), 0);
	/* Clock: negative, past the cap, nanoseconds of a whole second. */
	n = identity_payload(pl, (uint64_t)-1, 0, 32, 32, "a", 1, ID_SB, strlen(ID_SB));
	assert_int_equal(proto_dec_identity(pl, n, &d), -EBADMSG);
	n = identity_payload(pl, PROTO_TIME_SEC_MAX + 1, 0, 32, 32, "a", 1, ID_SB, strlen(ID_SB));
	assert_int_equal(proto_dec_identity(pl, n, &d), -EBADMSG);
	n = identity_payload(pl, 1, 1000000000u, 32, 32, "a", 1, ID_SB, strlen(ID_SB));
	assert_int_equal(proto_dec_identity(pl, n, &d), -EBADMSG);
	/* Entropy: under 32, over 256, a length past the payload, huge. */
	n = identity_payload(pl, 1, 0, 31, 31, "a", 1, ID_SB, strlen(ID_SB));
	assert_int_equal(proto_dec_identity(pl, n, &d), -EBADMSG);
	n = identity_payload(pl, 1, 0, 0, 0, "a", 1, ID_SB, strlen(ID_SB));
	assert_int_equal(proto_dec_identity(pl, n, &d), -EBADMSG);
	n = identity_payload(pl, 1, 0, 257, 257, "a", 1, ID_SB, strlen(ID_SB));
	assert_int_equal(proto_dec_identity(pl, n, &d), -EBADMSG);
	n = identity_payload(pl, 1, 0, 256, 256, "a", 1, ID_SB, strlen(ID_SB));
	assert_int_equal(proto_dec_identity(pl, n, &d), 0);
	n = identity_payload(pl, 1, 0, 200, 32, "a", 1, ID_SB, strlen(ID_SB));
	assert_int_equal(proto_dec_identity(pl, n, &d), -EBADMSG);
	n = identity_payload(pl, 1, 0, 0xffffffffu, 32, "a", 1, ID_SB, strlen(ID_SB));
	assert_int_equal(proto_dec_identity(pl, n, &d), -EBADMSG);
	/* Hostname: not one RFC 1123 label, 64 bytes, a NUL inside, a length past the end. */
	for (unsigned i = 0; bad_hosts[i]; i++) {
		n = good_identity(pl, bad_hosts[i], ID_SB);
		assert_int_equal(proto_dec_identity(pl, n, &d), -EBADMSG);
	}
	memset(host64, 'a', 64);
	host64[64] = 0;
	n = good_identity(pl, host64, ID_SB);
	assert_int_equal(proto_dec_identity(pl, n, &d), -EBADMSG);
	n = identity_payload(pl, 1, 0, 32, 32, "a\0b", 3, ID_SB, strlen(ID_SB));
	assert_int_equal(proto_dec_identity(pl, n, &d), -EBADMSG);
	n = identity_payload(pl, 1, 0, 32, 32, "ab", 2, ID_SB, strlen(ID_SB));
	put32(pl + 48, 5000);
	assert_int_equal(proto_dec_identity(pl, n, &d), -EBADMSG);
	/* Sandbox id: not sb-HOST-<32 hex>, 77 bytes, a NUL inside. */
	for (unsigned i = 0; bad_ids[i]; i++) {
		n = good_identity(pl, "a", bad_ids[i]);
		assert_int_equal(proto_dec_identity(pl, n, &d), -EBADMSG);
	}
	snprintf(id77, sizeof(id77), "sb-%.41s-0123456789abcdef0123456789abcdef",
		 "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh");
	assert_int_equal(strlen(id77), PROTO_SANDBOX_ID_MAX + 1);
	n = good_identity(pl, "a", id77);
	assert_int_equal(proto_dec_identity(pl, n, &d), -EBADMSG);
	n = identity_payload(pl, 1, 0, 32, 32, "a", 1, ID_SB "\0", strlen(ID_SB) + 1);
	assert_int_equal(proto_dec_identity(pl, n, &d), -EBADMSG);
	/* A failed decode leaves nothing behind (entropy is secret). */
	for (unsigned i = 0; i < sizeof(d.entropy); i++)
		assert_int_equal(d.entropy[i], 0);

	/* The encoder refuses what the decoder would. */
	memset(&m, 0, sizeof(m));
	m.sec = 1;
	m.entropy_len = 32;
	snprintf(m.hostname, sizeof(m.hostname), "a");
	snprintf(m.sandbox_id, sizeof(m.sandbox_id), "%s", ID_SB);
	assert_true(proto_enc_identity(buf, sizeof(buf), 1, &m) > 0);
	m.sec = -1;
	assert_int_equal(proto_enc_identity(buf, sizeof(buf), 1, &m), -EINVAL);
	m.sec = 1;
	m.nsec = 1000000000u;
	assert_int_equal(proto_enc_identity(buf, sizeof(buf), 1, &m), -EINVAL);
	m.nsec = 0;
	m.entropy_len = 31;
	assert_int_equal(proto_enc_identity(buf, sizeof(buf), 1, &m), -EINVAL);
	m.entropy_len = 257;
	assert_int_equal(proto_enc_identity(buf, sizeof(buf), 1, &m), -EINVAL);
	m.entropy_len = 32;
	snprintf(m.hostname, sizeof(m.hostname), "a.b");
	assert_int_equal(proto_enc_identity(buf, sizeof(buf), 1, &m), -EINVAL);
	memset(m.hostname, 'a', sizeof(m.hostname)); /* no NUL at all */
	assert_int_equal(proto_enc_identity(buf, sizeof(buf), 1, &m), -EINVAL);
	snprintf(m.hostname, sizeof(m.hostname), "a");
	snprintf(m.sandbox_id, sizeof(m.sandbox_id), "sb-x");
	assert_int_equal(proto_enc_identity(buf, sizeof(buf), 1, &m), -EINVAL);
	memset(m.sandbox_id, 'a', sizeof(m.sandbox_id));
	assert_int_equal(proto_enc_identity(buf, sizeof(buf), 1, &m), -EINVAL);
	snprintf(m.sandbox_id, sizeof(m.sandbox_id), "%s", ID_SB);
	assert_int_equal(proto_enc_identity(buf, 40, 1, &m), -ENOSPC);
}

static void test_hostname(void **state)
{
	char label[65];

	assert_true(hostname_label_ok("a", 1));
	assert_true(hostname_label_ok("sb-0123456789ab", 15));
	assert_true(hostname_label_ok("A9-z", 4));
	assert_true(hostname_label_ok("0", 1));
	assert_false(hostname_label_ok("", 0));
	assert_false(hostname_label_ok(NULL, 1));
	assert_false(hostname_label_ok("-a", 2));
	assert_false(hostname_label_ok("a-", 2));
	assert_false(hostname_label_ok("a.b", 3));
	assert_false(hostname_label_ok("a_b", 3));
	assert_false(hostname_label_ok("a\0b", 3));
	memset(label, 'x', sizeof(label));
	assert_true(hostname_label_ok(label, 63));
	assert_false(hostname_label_ok(label, 64));
	assert_true(hostname_ok("a.b-c.d", 7, 64));
	assert_true(hostname_ok("kiln", 4, 64));
	assert_false(hostname_ok("a..b", 4, 64));
	assert_false(hostname_ok(".a", 2, 64));
	assert_false(hostname_ok("a.", 2, 64));
	assert_false(hostname_ok("a.-b", 4, 64));
	assert_false(hostname_ok("abcde", 5, 4));
	assert_false(hostname_ok("", 0, 64));
}

static void test_dirents(void **state)
{
	static const char *const names[] = { "a", "file.txt", "with space", NULL };
	struct proto_dirent e, d;
	struct proto_wr w;
	struct proto_rd r;
	struct proto_hdr h;
	const uint8_t *p;
	uint8_t pl[1024];
	int len, i;

	proto_wr_begin(&w, buf, sizeof(buf), PROTO_DIR_ENTRIES, PROTO_F_EOF, 10);
	for (i = 0; names[i]; i++) {
		e.mode = 0100600 + (uint32_t)i;
		e.size = (uint64_t)i * 1000;
		e.mtime_sec = i;
		snprintf(e.name, sizeof(e.name), "%s", names[i]);
		proto_wr_dirent(&w, &e);
	}
	len = proto_wr_end(&w);
	p = payload_of(len, PROTO_DIR_ENTRIES, 10, PROTO_FROM_AGENT, &h);
	proto_rd_init(&r, p, h.len);
	for (i = 0; proto_rd_dirent(&r, &d) == 1; i++) {
		assert_string_equal(d.name, names[i]);
		assert_int_equal(d.mode, 0100600 + (uint32_t)i);
		assert_true(d.size == (uint64_t)i * 1000);
	}
	assert_int_equal(i, 3);
	assert_int_equal(proto_rd_end(&r), 0);
	/* Truncated entries fail (a cut at an entry boundary is just fewer entries). */
	for (uint32_t n = 1; n < 24; n++) {
		proto_rd_init(&r, p, n);
		assert_int_equal(proto_rd_dirent(&r, &d), -EBADMSG);
	}
	/* Names that are not one path component. */
	static const char *const bad[] = { "", ".", "..", "a/b", "/" };
	for (i = 0; i < 5; i++) {
		size_t n = strlen(bad[i]);

		memset(pl, 0, 20);
		put32(pl + 20, (uint32_t)n);
		memcpy(pl + 24, bad[i], n);
		proto_rd_init(&r, pl, 24 + n);
		assert_int_equal(proto_rd_dirent(&r, &d), -EBADMSG);
	}
	/* A name longer than NAME_MAX. */
	memset(pl, 0, 20);
	put32(pl + 20, PROTO_NAME_MAX + 1);
	memset(pl + 24, 'n', PROTO_NAME_MAX + 1);
	proto_rd_init(&r, pl, 24 + PROTO_NAME_MAX + 1);
	assert_int_equal(proto_rd_dirent(&r, &d), -EBADMSG);
}

/* Writer and reader limits themselves. */
static void test_wr_rd(void **state)
{
	struct proto_wr w;
	struct proto_rd r;
	char s[8];

	proto_wr_begin(&w, buf, 8, PROTO_PING, 0, 1);
	assert_int_equal(proto_wr_end(&w), -ENOSPC);
	proto_wr_begin(&w, buf, 16, PROTO_PING, 0, 1);
	proto_wr_u32(&w, 1);
	proto_wr_u32(&w, 2); /* does not fit */
	proto_wr_u32(&w, 3);
	assert_int_equal(proto_wr_end(&w), -ENOSPC);

	proto_rd_init(&r, "\x03\0\0\0abc", 7);
	proto_rd_str(&r, s, 2); /* longer than the caller's cap */
	assert_int_equal(proto_rd_end(&r), -EBADMSG);
	assert_string_equal(s, "");
	proto_rd_init(&r, "\x03\0\0\0abc", 7);
	proto_rd_str(&r, s, 3);
	assert_int_equal(proto_rd_end(&r), 0);
	assert_string_equal(s, "abc");
	/* Reads after an error stay failed and return zeros. */
	proto_rd_init(&r, "\x01", 1);
	assert_int_equal(proto_rd_u32(&r), 0);
	assert_int_equal(proto_rd_u32(&r), 0);
	assert_int_equal(proto_rd_end(&r), -EBADMSG);
}

/* Random corruption of valid payloads: decoders answer, never crash. */
static void test_corruption(void **state)
{
	struct proto_hello_ok hok;
	struct proto_error err;
	struct proto_path path;
	struct proto_stat st;
	struct proto_exec *ex;
	struct proto_dirent de;
	struct proto_rd r;
	struct proto_hdr h;
	uint8_t orig[512], pl[512];
	uint32_t seed = 12345;
	int len;

	len = enc_test_exec(1);
	assert_true(len > 0 && (size_t)len - PROTO_HDR_SIZE <= sizeof(orig));
	memcpy(orig, buf + PROTO_HDR_SIZE, (size_t)len - PROTO_HDR_SIZE);
	for (int iter = 0; iter < 200000; iter++) {
		size_t n = (size_t)len - PROTO_HDR_SIZE;
		int flips;

		memcpy(pl, orig, n);
		seed = seed * 1103515245u + 12345u;
		flips = 1 + (int)((seed >> 16) % 4);
		for (int f = 0; f < flips; f++) {
			seed = seed * 1103515245u + 12345u;
			pl[(seed >> 8) % n] = (uint8_t)(seed >> 24);
		}
		seed = seed * 1103515245u + 12345u;
		if (seed & 0x100)
			n = (seed >> 12) % (n + 1);
		if (proto_dec_exec(pl, n, &ex) == 0) {
			for (uint32_t i = 0; i < ex->argc; i++)
				assert_non_null(ex->argv[i]);
			assert_null(ex->argv[ex->argc]);
			assert_null(ex->envp[ex->envc]);
			free(ex);
		} else {
			assert_null(ex);
		}
		proto_dec_hello_ok(pl, n, &hok);
		proto_dec_error(pl, n, &err);
		proto_dec_path(pl, n, &path);
		proto_dec_stat(pl, n, &st);
		proto_rd_init(&r, pl, n);
		while (proto_rd_dirent(&r, &de) == 1)
			;
		if (n >= PROTO_HDR_SIZE) {
			proto_hdr_decode(pl, PROTO_FROM_CLIENT, &h);
			proto_hdr_decode(pl, PROTO_FROM_AGENT, &h);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header),
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_ok_error),
		cmocka_unit_test(test_exec),
		cmocka_unit_test(test_exec_caps),
		cmocka_unit_test(test_pty),
		cmocka_unit_test(test_exec_user),
		cmocka_unit_test(test_small_messages),
		cmocka_unit_test(test_path_stat),
		cmocka_unit_test(test_identity),
		cmocka_unit_test(test_hostname),
		cmocka_unit_test(test_dirents),
		cmocka_unit_test(test_wr_rd),
		cmocka_unit_test(test_corruption),
	};

	return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
