/*
 * The agent protocol's decoders (src/common/proto.c), both directions: the
 * frame header as the client and as the agent read it, and every message
 * decoder on the same payload. Properties:
 *  - a header that decodes re-encodes to the same 12 bytes, and keeps its
 *    type's direction, flags and size cap;
 *  - a payload that decodes re-encodes (proto_enc_*) to exactly the same
 *    bytes: the encoding is canonical, so nothing is lost or invented;
 *  - decoded strings are NUL-free, within their caps, and no longer than the
 *    payload; EXEC's vectors are NULL-terminated and add up within the input;
 *  - directory entries are single path components;
 *  - IDENTITY's entropy, clock, hostname and sandbox id are within bounds.
 * Input: the first 12 bytes are a header, the whole input is also a payload.
 */
#include <errno.h>

#include "fuzz.h"
#include "proto.h"

#define OUT_CAP (PROTO_HDR_SIZE + 65536 + 64)

static uint8_t out[OUT_CAP];

/* The frame just encoded carries exactly payload[0..len) with this type. */
static void same_payload(int flen, uint16_t type, const uint8_t *payload, size_t len,
			 const char *what)
{
	struct proto_hdr h;

	FZ_CHECK(flen >= (int)PROTO_HDR_SIZE, "%s: re-encoding failed (%d)", what, flen);
	FZ_CHECK((size_t)flen == PROTO_HDR_SIZE + len, "%s: %d bytes re-encoded from %zu", what,
		 flen, len);
	FZ_CHECK(memcmp(out + PROTO_HDR_SIZE, payload, len) == 0, "%s: re-encoded bytes differ",
		 what);
	h.len = 0;
	h.type = 0;
	FZ_CHECK(proto_hdr_decode(out, PROTO_FROM_CLIENT | PROTO_FROM_AGENT, &h) == 0 &&
			 h.len == len && h.type == type,
		 "%s: re-encoded header does not decode", what);
}

static void check_header(const uint8_t *p, size_t n)
{
	static const int dirs[] = { PROTO_FROM_CLIENT, PROTO_FROM_AGENT };
	uint8_t again[PROTO_HDR_SIZE];

	if (n < PROTO_HDR_SIZE)
		return;
	for (unsigned i = 0; i < 2; i++) {
		struct proto_hdr h;

		if (proto_hdr_decode(p, dirs[i], &h))
			continue;
		FZ_CHECK(h.len <= PROTO_MAX_PAYLOAD, "header len %u over the cap", h.len);
		FZ_CHECK(strcmp(proto_type_name(h.type), "?") != 0, "unnamed type %u accepted",
			 h.type);
		FZ_CHECK((h.flags & ~(PROTO_F_EOF | PROTO_F_ABORT)) == 0, "flags %#x accepted",
			 h.flags);
		proto_hdr_encode(again, &h);
		FZ_CHECK(memcmp(again, p, PROTO_HDR_SIZE) == 0, "header does not re-encode");
	}
}

static void check_str(const char *s, size_t max, size_t input, const char *what)
{
	size_t n = strnlen(s, max + 1);

	FZ_CHECK(n <= max && n <= input, "%s: %zu bytes (cap %zu, input %zu)", what, n, max,
		 input);
}

static void check_exec(const uint8_t *p, size_t n)
{
	struct proto_exec *m = NULL;
	size_t total;
	int r = proto_dec_exec(p, n, &m);

	if (r) {
		FZ_CHECK(r == -EBADMSG || r == -ENOMEM, "dec_exec: %d", r);
		FZ_CHECK(m == NULL, "dec_exec failed but returned a message");
		return;
	}
	FZ_CHECK(m->argc >= 1 && m->argc <= PROTO_ARGC_MAX && m->envc <= PROTO_ENVC_MAX,
		 "exec counts %u/%u", m->argc, m->envc);
	FZ_CHECK(m->argv[m->argc] == NULL && m->envp[m->envc] == NULL, "vectors not terminated");
	FZ_CHECK(m->argv[0][0] != 0, "empty argv[0] accepted");
	check_str(m->cwd, PROTO_PATH_MAX, n, "exec cwd");
	total = 20 + 4 + strlen(m->cwd);
	for (uint32_t i = 0; i < m->argc; i++)
		total += 4 + strlen(m->argv[i]);
	for (uint32_t i = 0; i < m->envc; i++)
		total += 4 + strlen(m->envp[i]);
	if (m->flags & PROTO_EXEC_PTY) {
		FZ_CHECK(m->rows >= 1 && m->rows <= PROTO_PTY_DIM_MAX && m->cols >= 1 &&
				 m->cols <= PROTO_PTY_DIM_MAX,
			 "exec pty %ux%u", m->rows, m->cols);
		total += 8;
	} else {
		FZ_CHECK(m->rows == 0 && m->cols == 0, "exec size without pty");
	}
	if (m->flags & PROTO_EXEC_USER) {
		check_str(m->user, PROTO_USER_MAX, n, "exec user");
		FZ_CHECK(m->user[0] != 0, "empty exec user accepted");
		total += 4 + strlen(m->user);
	} else {
		FZ_CHECK(m->user[0] == 0, "exec user without its flag");
	}
	FZ_CHECK(total == n, "exec strings add up to %zu of %zu", total, n);
	same_payload(proto_enc_exec(out, sizeof(out), 1, m), PROTO_EXEC, p, n, "exec");
	free(m);
}

static void check_dirents(const uint8_t *p, size_t n)
{
	struct proto_dirent e;
	struct proto_rd r;
	struct proto_wr w;
	int got;

	proto_rd_init(&r, p, n);
	proto_wr_begin(&w, out, sizeof(out), PROTO_DIR_ENTRIES, PROTO_F_EOF, 1);
	while ((got = proto_rd_dirent(&r, &e)) == 1) {
		size_t len = strlen(e.name);

		FZ_CHECK(len >= 1 && len <= PROTO_NAME_MAX && !strchr(e.name, '/') &&
				 strcmp(e.name, ".") && strcmp(e.name, ".."),
			 "dirent name '%s' is not one component", e.name);
		proto_wr_dirent(&w, &e);
	}
	if (got == 0)
		same_payload(proto_wr_end(&w), PROTO_DIR_ENTRIES, p, n, "dirents");
	else
		FZ_CHECK(got == -EBADMSG, "rd_dirent: %d", got);
}

static void check_payload(const uint8_t *p, size_t n)
{
	static const uint16_t path_types[] = { PROTO_FILE_PUT, PROTO_FILE_GET, PROTO_STAT,
					       PROTO_LIST,     PROTO_MKDIR,    PROTO_REMOVE };
	struct proto_hello hello;
	struct proto_hello_ok hok;
	struct proto_error err;
	struct proto_exec_ok eok;
	struct proto_exit ex;
	struct proto_signal sig;
	struct proto_winsize ws;
	struct proto_path path;
	struct proto_stat st;
	struct proto_identity ident;
	uint64_t v;
	uint32_t credit;

	if (proto_dec_hello(p, n, &hello) == 0)
		same_payload(proto_enc_hello(out, sizeof(out), 1, &hello), PROTO_HELLO, p, n,
			     "hello");
	if (proto_dec_hello_ok(p, n, &hok) == 0) {
		check_str(hok.agent, PROTO_AGENT_NAME_MAX, n, "agent name");
		FZ_CHECK(hok.max_payload >= 4096 && hok.max_payload <= PROTO_MAX_PAYLOAD &&
				 hok.stdin_window <= PROTO_MAX_PAYLOAD,
			 "hello_ok bounds %u %u", hok.max_payload, hok.stdin_window);
		same_payload(proto_enc_hello_ok(out, sizeof(out), 1, &hok), PROTO_HELLO_OK, p, n,
			     "hello_ok");
	}
	if (proto_dec_ok(p, n, &v) == 0)
		same_payload(proto_enc_ok(out, sizeof(out), 1, v), PROTO_OK, p, n, "ok");
	if (proto_dec_error(p, n, &err) == 0) {
		check_str(err.msg, PROTO_MSG_MAX, n, "error message");
		FZ_CHECK(err.err > 0 && err.err <= 4095, "errno %d", err.err);
		same_payload(proto_enc_error(out, sizeof(out), 1, err.err, err.msg), PROTO_ERROR, p,
			     n, "error");
	}
	if (proto_dec_exec_ok(p, n, &eok) == 0)
		same_payload(proto_enc_exec_ok(out, sizeof(out), 1, &eok), PROTO_EXEC_OK, p, n,
			     "exec_ok");
	if (proto_dec_exit(p, n, &ex) == 0)
		same_payload(proto_enc_exit(out, sizeof(out), 1, &ex), PROTO_EXIT, p, n, "exit");
	if (proto_dec_signal(p, n, &sig) == 0) {
		FZ_CHECK(sig.signo >= 1 && sig.signo <= PROTO_SIGNO_MAX, "signo %d", sig.signo);
		same_payload(proto_enc_signal(out, sizeof(out), 1, &sig), PROTO_SIGNAL, p, n,
			     "signal");
	}
	if (proto_dec_resize(p, n, &ws) == 0) {
		FZ_CHECK(ws.rows >= 1 && ws.rows <= PROTO_PTY_DIM_MAX && ws.cols >= 1 &&
				 ws.cols <= PROTO_PTY_DIM_MAX,
			 "resize %ux%u", ws.rows, ws.cols);
		same_payload(proto_enc_resize(out, sizeof(out), 1, &ws), PROTO_RESIZE, p, n,
			     "resize");
	}
	if (proto_dec_credit(p, n, &credit) == 0)
		same_payload(proto_enc_credit(out, sizeof(out), 1, 0, credit), PROTO_STDIN_CREDIT, p,
			     n, "credit");
	if (proto_dec_path(p, n, &path) == 0) {
		check_str(path.path, PROTO_PATH_MAX, n, "path");
		for (unsigned i = 0; i < sizeof(path_types) / sizeof(path_types[0]); i++)
			same_payload(proto_enc_path(out, sizeof(out), path_types[i], 1, &path),
				     path_types[i], p, n, "path");
	}
	if (proto_dec_stat(p, n, &st) == 0)
		same_payload(proto_enc_stat(out, sizeof(out), 1, &st), PROTO_STAT_OK, p, n, "stat");
	if (proto_dec_identity(p, n, &ident) == 0) {
		check_str(ident.hostname, PROTO_HOSTNAME_MAX, n, "hostname");
		check_str(ident.sandbox_id, PROTO_SANDBOX_ID_MAX, n, "sandbox id");
		FZ_CHECK(ident.entropy_len >= PROTO_ENTROPY_MIN && ident.entropy_len <= PROTO_ENTROPY_MAX &&
				 ident.nsec < 1000000000u && ident.sec >= 0,
			 "identity bounds %u %u", ident.entropy_len, ident.nsec);
		same_payload(proto_enc_identity(out, sizeof(out), 1, &ident), PROTO_IDENTITY, p, n,
			     "identity");
	}
	check_exec(p, n);
	check_dirents(p, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_header(data, size);
	if (size <= 65536)
		check_payload(data, size);
	return 0;
}
