/*
 * The kiln agent protocol: framing and message encoding (see proto.h and
 * docs/protocol.md). No allocation except in proto_dec_exec, whose size is
 * bounded by the payload and the count caps.
 */
#include "proto.h"

#include "fleetid.h"
#include "hostname.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define C2A PROTO_FROM_CLIENT
#define A2C PROTO_FROM_AGENT

/* One row per message type: who may send it, which flags, how big. */
struct proto_type_info {
	const char *name;
	uint8_t from;
	uint16_t flags;
	uint32_t max;
};

#define PATH_REQ_MAX (16u + 4u + PROTO_PATH_MAX)
#define IDENTITY_MAX                                                                  \
	(16u + PROTO_ENTROPY_MAX + 4u + PROTO_HOSTNAME_MAX + 4u + PROTO_SANDBOX_ID_MAX)

_Static_assert(PROTO_SANDBOX_ID_MAX == FLEET_ID_MAX, "sandbox id caps differ");
_Static_assert(PROTO_HOSTNAME_MAX == HOSTNAME_LABEL_MAX, "hostname caps differ");

static const struct proto_type_info proto_types[] = {
	[PROTO_HELLO] = { "HELLO", C2A, 0, 12 },
	[PROTO_HELLO_OK] = { "HELLO_OK", A2C, 0, 24 + PROTO_AGENT_NAME_MAX },
	[PROTO_OK] = { "OK", A2C, 0, 8 },
	[PROTO_ERROR] = { "ERROR", A2C, 0, 8 + PROTO_MSG_MAX },
	[PROTO_PING] = { "PING", C2A, 0, PROTO_MSG_MAX },
	[PROTO_PONG] = { "PONG", A2C, 0, PROTO_MSG_MAX },
	[PROTO_SHUTDOWN] = { "SHUTDOWN", C2A, 0, 0 },
	[PROTO_EXEC] = { "EXEC", C2A, 0, PROTO_MAX_PAYLOAD },
	[PROTO_EXEC_OK] = { "EXEC_OK", A2C, 0, 8 },
	[PROTO_STDIN] = { "STDIN", C2A, PROTO_F_EOF, PROTO_MAX_PAYLOAD },
	[PROTO_STDIN_CREDIT] = { "STDIN_CREDIT", A2C, PROTO_F_EOF, 4 },
	[PROTO_STDOUT] = { "STDOUT", A2C, 0, PROTO_MAX_PAYLOAD },
	[PROTO_STDERR] = { "STDERR", A2C, 0, PROTO_MAX_PAYLOAD },
	[PROTO_EXIT] = { "EXIT", A2C, 0, 16 },
	[PROTO_SIGNAL] = { "SIGNAL", C2A, 0, 12 },
	[PROTO_RESIZE] = { "RESIZE", C2A, 0, 8 },
	[PROTO_FILE_PUT] = { "FILE_PUT", C2A, 0, PATH_REQ_MAX },
	[PROTO_FILE_GET] = { "FILE_GET", C2A, 0, PATH_REQ_MAX },
	[PROTO_FILE_DATA] = { "FILE_DATA", C2A | A2C, PROTO_F_EOF | PROTO_F_ABORT,
			      PROTO_MAX_PAYLOAD },
	[PROTO_STAT] = { "STAT", C2A, 0, PATH_REQ_MAX },
	[PROTO_STAT_OK] = { "STAT_OK", A2C, 0, 36 },
	[PROTO_LIST] = { "LIST", C2A, 0, PATH_REQ_MAX },
	[PROTO_DIR_ENTRIES] = { "DIR_ENTRIES", A2C, PROTO_F_EOF, PROTO_MAX_PAYLOAD },
	[PROTO_MKDIR] = { "MKDIR", C2A, 0, PATH_REQ_MAX },
	[PROTO_REMOVE] = { "REMOVE", C2A, 0, PATH_REQ_MAX },
	[PROTO_IDENTITY] = { "IDENTITY", C2A, 0, IDENTITY_MAX },
};

#define NTYPES (sizeof(proto_types) / sizeof(proto_types[0]))

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

void proto_hdr_encode(void *buf, const struct proto_hdr *h)
{
	uint8_t *p = buf;

	put32(p, h->len);
	put16(p + 4, h->type);
	put16(p + 6, h->flags);
	put32(p + 8, h->id);
}

int proto_hdr_decode(const void *buf, int from, struct proto_hdr *h)
{
	const uint8_t *p = buf;
	const struct proto_type_info *t;

	h->len = get32(p);
	h->type = get16(p + 4);
	h->flags = get16(p + 6);
	h->id = get32(p + 8);
	if (h->type >= NTYPES)
		return -EBADMSG;
	t = &proto_types[h->type];
	if (!t->name || !(t->from & from))
		return -EBADMSG;
	if (h->flags & ~t->flags)
		return -EBADMSG;
	if (h->len > t->max)
		return -EBADMSG;
	return 0;
}

const char *proto_type_name(unsigned type)
{
	if (type < NTYPES && proto_types[type].name)
		return proto_types[type].name;
	return "?";
}

void proto_wr_begin(struct proto_wr *w, void *buf, size_t cap, uint16_t type, uint16_t flags,
		    uint32_t id)
{
	struct proto_hdr h = { .len = 0, .type = type, .flags = flags, .id = id };

	w->buf = buf;
	w->cap = cap;
	w->len = 0;
	w->err = 0;
	if (cap < PROTO_HDR_SIZE) {
		w->err = -ENOSPC;
		return;
	}
	proto_hdr_encode(buf, &h);
	w->len = PROTO_HDR_SIZE;
}

/* Room for n more bytes, or a sticky error. */
static uint8_t *wr_reserve(struct proto_wr *w, size_t n)
{
	uint8_t *p;

	if (w->err)
		return NULL;
	if (n > PROTO_MAX_FRAME - w->len) {
		w->err = -EMSGSIZE;
		return NULL;
	}
	if (n > w->cap - w->len) {
		w->err = -ENOSPC;
		return NULL;
	}
	p = w->buf + w->len;
	w->len += n;
	return p;
}

void proto_wr_u32(struct proto_wr *w, uint32_t v)
{
	uint8_t *p = wr_reserve(w, 4);

	if (p)
		put32(p, v);
}

void proto_wr_u64(struct proto_wr *w, uint64_t v)
{
	uint8_t *p = wr_reserve(w, 8);

	if (p)
		put64(p, v);
}

void proto_wr_bytes(struct proto_wr *w, const void *src, size_t n)
{
	uint8_t *p;

	if (!n)
		return;
	p = wr_reserve(w, n);
	if (p)
		memcpy(p, src, n);
}

void proto_wr_str(struct proto_wr *w, const char *s, size_t n)
{
	if (n > UINT32_MAX) {
		if (!w->err)
			w->err = -EMSGSIZE;
		return;
	}
	proto_wr_u32(w, (uint32_t)n);
	proto_wr_bytes(w, s, n);
}

int proto_wr_end(struct proto_wr *w)
{
	if (w->err)
		return w->err;
	put32(w->buf, (uint32_t)(w->len - PROTO_HDR_SIZE));
	return (int)w->len;
}

void proto_rd_init(struct proto_rd *r, const void *payload, size_t len)
{
	r->p = payload;
	r->left = len;
	r->err = 0;
}

static const uint8_t *rd_take(struct proto_rd *r, size_t n)
{
	const uint8_t *p;

	if (r->err)
		return NULL;
	if (n > r->left) {
		r->err = -EBADMSG;
		return NULL;
	}
	p = r->p;
	r->p += n;
	r->left -= n;
	return p;
}

uint32_t proto_rd_u32(struct proto_rd *r)
{
	const uint8_t *p = rd_take(r, 4);

	return p ? get32(p) : 0;
}

uint64_t proto_rd_u64(struct proto_rd *r)
{
	const uint8_t *p = rd_take(r, 8);

	return p ? get64(p) : 0;
}

/* The bytes of a string of at most max bytes without NUL; NULL on error. */
static const char *rd_strview(struct proto_rd *r, size_t max, uint32_t *len)
{
	uint32_t n = proto_rd_u32(r);
	const char *s;

	*len = 0;
	if (r->err)
		return NULL;
	if (n > max) {
		r->err = -EBADMSG;
		return NULL;
	}
	s = (const char *)rd_take(r, n);
	if (!s)
		return NULL;
	if (memchr(s, 0, n)) {
		r->err = -EBADMSG;
		return NULL;
	}
	*len = n;
	return s;
}

void proto_rd_str(struct proto_rd *r, char *out, size_t max)
{
	uint32_t n;
	const char *s = rd_strview(r, max, &n);

	if (s)
		memcpy(out, s, n);
	out[s ? n : 0] = 0;
}

int proto_rd_end(const struct proto_rd *r)
{
	if (r->err)
		return r->err;
	return r->left ? -EBADMSG : 0;
}

int proto_enc_data(void *buf, size_t cap, uint16_t type, uint16_t flags, uint32_t id,
		   const void *data, size_t n)
{
	struct proto_wr w;

	proto_wr_begin(&w, buf, cap, type, flags, id);
	proto_wr_bytes(&w, data, n);
	return proto_wr_end(&w);
}

int proto_enc_hello(void *buf, size_t cap, uint32_t id, const struct proto_hello *m)
{
	struct proto_wr w;

	proto_wr_begin(&w, buf, cap, PROTO_HELLO, 0, id);
	proto_wr_u32(&w, PROTO_MAGIC);
	proto_wr_u32(&w, m->version);
	proto_wr_u32(&w, m->flags);
	return proto_wr_end(&w);
}

int proto_dec_hello(const void *p, size_t len, struct proto_hello *m)
{
	struct proto_rd r;
	uint32_t magic;
	int ret;

	proto_rd_init(&r, p, len);
	magic = proto_rd_u32(&r);
	m->version = proto_rd_u32(&r);
	m->flags = proto_rd_u32(&r);
	ret = proto_rd_end(&r);
	if (ret)
		return ret;
	if (magic != PROTO_MAGIC || m->flags)
		return -EBADMSG;
	if (m->version != PROTO_VERSION)
		return -EPROTONOSUPPORT;
	return 0;
}

int proto_enc_hello_ok(void *buf, size_t cap, uint32_t id, const struct proto_hello_ok *m)
{
	struct proto_wr w;
	size_t n = strnlen(m->agent, sizeof(m->agent));

	if (n > PROTO_AGENT_NAME_MAX)
		return -EINVAL;
	proto_wr_begin(&w, buf, cap, PROTO_HELLO_OK, 0, id);
	proto_wr_u32(&w, PROTO_MAGIC);
	proto_wr_u32(&w, m->version);
	proto_wr_u32(&w, m->caps);
	proto_wr_u32(&w, m->max_payload);
	proto_wr_u32(&w, m->stdin_window);
	proto_wr_str(&w, m->agent, n);
	return proto_wr_end(&w);
}

int proto_dec_hello_ok(const void *p, size_t len, struct proto_hello_ok *m)
{
	struct proto_rd r;
	uint32_t magic;
	int ret;

	proto_rd_init(&r, p, len);
	magic = proto_rd_u32(&r);
	m->version = proto_rd_u32(&r);
	m->caps = proto_rd_u32(&r);
	m->max_payload = proto_rd_u32(&r);
	m->stdin_window = proto_rd_u32(&r);
	proto_rd_str(&r, m->agent, PROTO_AGENT_NAME_MAX);
	ret = proto_rd_end(&r);
	if (ret)
		return ret;
	if (magic != PROTO_MAGIC)
		return -EBADMSG;
	if (m->version != PROTO_VERSION)
		return -EPROTONOSUPPORT;
	/* The client relies on these to size its buffers and stdin writes. */
	if (m->max_payload < 4096 || m->max_payload > PROTO_MAX_PAYLOAD ||
	    m->stdin_window > PROTO_MAX_PAYLOAD)
		return -EBADMSG;
	return 0;
}

int proto_enc_ok(void *buf, size_t cap, uint32_t id, uint64_t value)
{
	struct proto_wr w;

	proto_wr_begin(&w, buf, cap, PROTO_OK, 0, id);
	proto_wr_u64(&w, value);
	return proto_wr_end(&w);
}

int proto_dec_ok(const void *p, size_t len, uint64_t *value)
{
	struct proto_rd r;

	proto_rd_init(&r, p, len);
	*value = proto_rd_u64(&r);
	return proto_rd_end(&r);
}

int proto_enc_error(void *buf, size_t cap, uint32_t id, int err, const char *msg)
{
	struct proto_wr w;
	size_t n = msg ? strnlen(msg, PROTO_MSG_MAX) : 0; /* longer messages are cut */

	if (err < 0)
		err = -err;
	if (err <= 0 || err > 4095)
		return -EINVAL;
	proto_wr_begin(&w, buf, cap, PROTO_ERROR, 0, id);
	proto_wr_u32(&w, (uint32_t)err);
	proto_wr_str(&w, msg, n);
	return proto_wr_end(&w);
}

int proto_dec_error(const void *p, size_t len, struct proto_error *m)
{
	struct proto_rd r;
	uint32_t err;
	int ret;

	proto_rd_init(&r, p, len);
	err = proto_rd_u32(&r);
	proto_rd_str(&r, m->msg, PROTO_MSG_MAX);
	ret = proto_rd_end(&r);
	if (ret)
		return ret;
	if (err == 0 || err > 4095)
		return -EBADMSG;
	m->err = (int32_t)err;
	return 0;
}

static bool winsize_valid(uint32_t rows, uint32_t cols)
{
	return rows >= 1 && rows <= PROTO_PTY_DIM_MAX && cols >= 1 && cols <= PROTO_PTY_DIM_MAX;
}

int proto_enc_exec(void *buf, size_t cap, uint32_t id, const struct proto_exec *m)
{
	struct proto_wr w;
	size_t total = 0;

	if (m->argc < 1 || m->argc > PROTO_ARGC_MAX || m->envc > PROTO_ENVC_MAX)
		return -EINVAL;
	if (m->flags & ~PROTO_EXEC_FLAGS)
		return -EINVAL;
	if ((m->flags & PROTO_EXEC_PTY) && !winsize_valid(m->rows, m->cols))
		return -EINVAL;
	proto_wr_begin(&w, buf, cap, PROTO_EXEC, 0, id);
	proto_wr_u32(&w, m->flags);
	proto_wr_u32(&w, m->uid);
	proto_wr_u32(&w, m->gid);
	proto_wr_u32(&w, m->argc);
	proto_wr_u32(&w, m->envc);
	if (m->cwd) {
		size_t n = strnlen(m->cwd, PROTO_PATH_MAX + 1);

		if (n > PROTO_PATH_MAX)
			return -EINVAL;
		proto_wr_str(&w, m->cwd, n);
	} else {
		proto_wr_str(&w, "", 0);
	}
	for (uint32_t i = 0; i < m->argc; i++) {
		size_t n = strnlen(m->argv[i], PROTO_ARG_MAX + 1);

		if (n > PROTO_ARG_MAX || (i == 0 && n == 0))
			return -EINVAL;
		total += n;
		proto_wr_str(&w, m->argv[i], n);
	}
	if (total > PROTO_ARGV_BYTES_MAX)
		return -E2BIG;
	total = 0;
	for (uint32_t i = 0; i < m->envc; i++) {
		size_t n = strnlen(m->envp[i], PROTO_ARG_MAX + 1);

		if (n > PROTO_ARG_MAX)
			return -EINVAL;
		total += n;
		proto_wr_str(&w, m->envp[i], n);
	}
	if (total > PROTO_ENV_BYTES_MAX)
		return -E2BIG;
	if (m->flags & PROTO_EXEC_PTY) {
		proto_wr_u32(&w, m->rows);
		proto_wr_u32(&w, m->cols);
	}
	if (m->flags & PROTO_EXEC_USER) {
		size_t n = m->user ? strnlen(m->user, PROTO_USER_MAX + 1) : 0;

		if (n < 1 || n > PROTO_USER_MAX)
			return -EINVAL;
		proto_wr_str(&w, m->user, n);
	}
	return proto_wr_end(&w);
}

/*
 * Two passes: the first validates every field and sizes the allocation, the
 * second copies. The counts are capped before anything is multiplied.
 */
int proto_dec_exec(const void *p, size_t len, struct proto_exec **out)
{
	struct proto_rd r;
	struct proto_exec *m = NULL;
	uint32_t flags, uid, gid, argc, envc, n, rows = 0, cols = 0, user_len = 0;
	size_t argv_bytes = 0, env_bytes = 0, size;
	const char *s;
	char **vec, *str;
	int ret = -EBADMSG;

	*out = NULL;
	proto_rd_init(&r, p, len);
	flags = proto_rd_u32(&r);
	uid = proto_rd_u32(&r);
	gid = proto_rd_u32(&r);
	argc = proto_rd_u32(&r);
	envc = proto_rd_u32(&r);
	if (r.err || flags & ~PROTO_EXEC_FLAGS)
		goto out;
	if (argc < 1 || argc > PROTO_ARGC_MAX || envc > PROTO_ENVC_MAX)
		goto out;
	/* Each string takes at least its 4-byte length: a cheap early check. */
	if ((size_t)argc + envc + 1 > r.left / 4)
		goto out;
	s = rd_strview(&r, PROTO_PATH_MAX, &n);
	if (!s)
		goto out;
	size = (size_t)n + 1;
	for (uint32_t i = 0; i < argc + envc; i++) {
		s = rd_strview(&r, PROTO_ARG_MAX, &n);
		if (!s || (i == 0 && n == 0))
			goto out;
		if (i < argc)
			argv_bytes += n;
		else
			env_bytes += n;
		size += (size_t)n + 1;
	}
	if (flags & PROTO_EXEC_PTY) {
		rows = proto_rd_u32(&r);
		cols = proto_rd_u32(&r);
		if (r.err || !winsize_valid(rows, cols))
			goto out;
	}
	if (flags & PROTO_EXEC_USER) {
		s = rd_strview(&r, PROTO_USER_MAX, &user_len);
		if (!s || user_len == 0)
			goto out;
	}
	size += (size_t)user_len + 1; /* "" without the flag */
	if (proto_rd_end(&r) || argv_bytes > PROTO_ARGV_BYTES_MAX ||
	    env_bytes > PROTO_ENV_BYTES_MAX)
		goto out;
	/* size <= len + argc + envc + 2, and the vectors are at most 8194 pointers. */
	size += sizeof(*m) + ((size_t)argc + envc + 2) * sizeof(char *);
	m = malloc(size);
	if (!m) {
		ret = -ENOMEM;
		goto out;
	}
	vec = (char **)(m + 1);
	str = (char *)(vec + argc + envc + 2);
	m->flags = flags;
	m->uid = uid;
	m->gid = gid;
	m->argc = argc;
	m->envc = envc;
	m->rows = rows;
	m->cols = cols;
	m->argv = (const char *const *)vec;
	m->envp = (const char *const *)(vec + argc + 1);

	proto_rd_init(&r, p, len);
	r.p += 20;
	r.left -= 20;
	for (uint32_t i = 0; i < 1 + argc + envc; i++) {
		s = rd_strview(&r, PROTO_ARG_MAX, &n);
		memcpy(str, s, n);
		str[n] = 0;
		if (i == 0)
			m->cwd = str;
		else if (i <= argc)
			vec[i - 1] = str;
		else
			vec[i] = str; /* envp[i - argc - 1] */
		str += n + 1;
	}
	vec[argc] = NULL;
	vec[argc + 1 + envc] = NULL;
	m->user = str;
	str[0] = 0;
	if (flags & PROTO_EXEC_USER) {
		if (flags & PROTO_EXEC_PTY) {
			r.p += 8;
			r.left -= 8;
		}
		s = rd_strview(&r, PROTO_USER_MAX, &n);
		memcpy(str, s, n);
		str[n] = 0;
	}
	*out = m;
	ret = 0;
out:
	return ret;
}

int proto_enc_exec_ok(void *buf, size_t cap, uint32_t id, const struct proto_exec_ok *m)
{
	struct proto_wr w;

	proto_wr_begin(&w, buf, cap, PROTO_EXEC_OK, 0, id);
	proto_wr_u32(&w, m->pid);
	proto_wr_u32(&w, m->stdin_window);
	return proto_wr_end(&w);
}

int proto_dec_exec_ok(const void *p, size_t len, struct proto_exec_ok *m)
{
	struct proto_rd r;
	int ret;

	proto_rd_init(&r, p, len);
	m->pid = proto_rd_u32(&r);
	m->stdin_window = proto_rd_u32(&r);
	ret = proto_rd_end(&r);
	if (!ret && m->stdin_window > PROTO_MAX_PAYLOAD)
		ret = -EBADMSG;
	return ret;
}

static bool exit_valid(const struct proto_exit *m)
{
	if (m->oom_kills < -1)
		return false;
	if (m->signal == 0)
		return m->code >= 0 && m->code <= 255;
	return m->signal > 0 && m->signal <= PROTO_SIGNO_MAX && m->code == -1;
}

int proto_enc_exit(void *buf, size_t cap, uint32_t id, const struct proto_exit *m)
{
	struct proto_wr w;

	if (!exit_valid(m))
		return -EINVAL;
	proto_wr_begin(&w, buf, cap, PROTO_EXIT, 0, id);
	proto_wr_u32(&w, (uint32_t)m->code);
	proto_wr_u32(&w, (uint32_t)m->signal);
	if (m->oom_kills >= 0)
		proto_wr_u64(&w, (uint64_t)m->oom_kills);
	return proto_wr_end(&w);
}

int proto_dec_exit(const void *p, size_t len, struct proto_exit *m)
{
	struct proto_rd r;
	int ret;

	proto_rd_init(&r, p, len);
	m->code = (int32_t)proto_rd_u32(&r);
	m->signal = (int32_t)proto_rd_u32(&r);
	m->oom_kills = -1;
	if (len > 8) {
		uint64_t n = proto_rd_u64(&r);

		m->oom_kills = n > INT64_MAX ? -2 : (int64_t)n; /* -2: invalid below */
	}
	ret = proto_rd_end(&r);
	if (!ret && !exit_valid(m))
		ret = -EBADMSG;
	return ret;
}

int proto_enc_signal(void *buf, size_t cap, uint32_t id, const struct proto_signal *m)
{
	struct proto_wr w;

	if (m->signo < 1 || m->signo > PROTO_SIGNO_MAX || m->flags & ~PROTO_SIG_GROUP)
		return -EINVAL;
	proto_wr_begin(&w, buf, cap, PROTO_SIGNAL, 0, id);
	proto_wr_u32(&w, m->exec_id);
	proto_wr_u32(&w, (uint32_t)m->signo);
	proto_wr_u32(&w, m->flags);
	return proto_wr_end(&w);
}

int proto_dec_signal(const void *p, size_t len, struct proto_signal *m)
{
	struct proto_rd r;
	uint32_t signo;
	int ret;

	proto_rd_init(&r, p, len);
	m->exec_id = proto_rd_u32(&r);
	signo = proto_rd_u32(&r);
	m->flags = proto_rd_u32(&r);
	ret = proto_rd_end(&r);
	if (ret)
		return ret;
	if (signo < 1 || signo > PROTO_SIGNO_MAX || m->flags & ~PROTO_SIG_GROUP)
		return -EBADMSG;
	m->signo = (int32_t)signo;
	return 0;
}

int proto_enc_resize(void *buf, size_t cap, uint32_t exec_id, const struct proto_winsize *m)
{
	struct proto_wr w;

	if (!winsize_valid(m->rows, m->cols))
		return -EINVAL;
	proto_wr_begin(&w, buf, cap, PROTO_RESIZE, 0, exec_id);
	proto_wr_u32(&w, m->rows);
	proto_wr_u32(&w, m->cols);
	return proto_wr_end(&w);
}

int proto_dec_resize(const void *p, size_t len, struct proto_winsize *m)
{
	struct proto_rd r;
	int ret;

	proto_rd_init(&r, p, len);
	m->rows = proto_rd_u32(&r);
	m->cols = proto_rd_u32(&r);
	ret = proto_rd_end(&r);
	if (!ret && !winsize_valid(m->rows, m->cols))
		ret = -EBADMSG;
	return ret;
}

int proto_enc_credit(void *buf, size_t cap, uint32_t id, uint16_t flags, uint32_t bytes)
{
	struct proto_wr w;

	if (flags & ~PROTO_F_EOF || bytes > PROTO_MAX_PAYLOAD)
		return -EINVAL;
	proto_wr_begin(&w, buf, cap, PROTO_STDIN_CREDIT, flags, id);
	proto_wr_u32(&w, bytes);
	return proto_wr_end(&w);
}

int proto_dec_credit(const void *p, size_t len, uint32_t *bytes)
{
	struct proto_rd r;
	int ret;

	proto_rd_init(&r, p, len);
	*bytes = proto_rd_u32(&r);
	ret = proto_rd_end(&r);
	if (!ret && *bytes > PROTO_MAX_PAYLOAD)
		ret = -EBADMSG;
	return ret;
}

static bool path_type(uint16_t type)
{
	switch (type) {
	case PROTO_FILE_PUT:
	case PROTO_FILE_GET:
	case PROTO_STAT:
	case PROTO_LIST:
	case PROTO_MKDIR:
	case PROTO_REMOVE:
		return true;
	default:
		return false;
	}
}

int proto_enc_path(void *buf, size_t cap, uint16_t type, uint32_t id, const struct proto_path *m)
{
	struct proto_wr w;
	size_t n = strnlen(m->path, sizeof(m->path));

	if (!path_type(type) || n > PROTO_PATH_MAX || m->flags & ~PROTO_PATH_ALL ||
	    m->mode > 07777)
		return -EINVAL;
	proto_wr_begin(&w, buf, cap, type, 0, id);
	proto_wr_u32(&w, m->flags);
	proto_wr_u32(&w, m->mode);
	proto_wr_u32(&w, m->uid);
	proto_wr_u32(&w, m->gid);
	proto_wr_str(&w, m->path, n);
	return proto_wr_end(&w);
}

int proto_dec_path(const void *p, size_t len, struct proto_path *m)
{
	struct proto_rd r;
	int ret;

	proto_rd_init(&r, p, len);
	m->flags = proto_rd_u32(&r);
	m->mode = proto_rd_u32(&r);
	m->uid = proto_rd_u32(&r);
	m->gid = proto_rd_u32(&r);
	proto_rd_str(&r, m->path, PROTO_PATH_MAX);
	ret = proto_rd_end(&r);
	if (!ret && (m->flags & ~PROTO_PATH_ALL || m->mode > 07777))
		ret = -EBADMSG;
	return ret;
}

int proto_enc_stat(void *buf, size_t cap, uint32_t id, const struct proto_stat *m)
{
	struct proto_wr w;

	if (m->mtime_nsec >= 1000000000u)
		return -EINVAL;
	proto_wr_begin(&w, buf, cap, PROTO_STAT_OK, 0, id);
	proto_wr_u32(&w, m->mode);
	proto_wr_u32(&w, m->uid);
	proto_wr_u32(&w, m->gid);
	proto_wr_u32(&w, m->nlink);
	proto_wr_u64(&w, m->size);
	proto_wr_u64(&w, (uint64_t)m->mtime_sec);
	proto_wr_u32(&w, m->mtime_nsec);
	return proto_wr_end(&w);
}

int proto_dec_stat(const void *p, size_t len, struct proto_stat *m)
{
	struct proto_rd r;
	int ret;

	proto_rd_init(&r, p, len);
	m->mode = proto_rd_u32(&r);
	m->uid = proto_rd_u32(&r);
	m->gid = proto_rd_u32(&r);
	m->nlink = proto_rd_u32(&r);
	m->size = proto_rd_u64(&r);
	m->mtime_sec = (int64_t)proto_rd_u64(&r);
	m->mtime_nsec = proto_rd_u32(&r);
	ret = proto_rd_end(&r);
	if (!ret && m->mtime_nsec >= 1000000000u)
		ret = -EBADMSG;
	return ret;
}

static bool identity_valid(const struct proto_identity *m)
{
	return m->sec >= 0 && (uint64_t)m->sec <= PROTO_TIME_SEC_MAX && m->nsec < 1000000000u &&
	       m->entropy_len >= PROTO_ENTROPY_MIN && m->entropy_len <= PROTO_ENTROPY_MAX &&
	       hostname_label_ok(m->hostname, strnlen(m->hostname, sizeof(m->hostname))) &&
	       fleet_sandbox_id_ok(m->sandbox_id);
}

int proto_enc_identity(void *buf, size_t cap, uint32_t id, const struct proto_identity *m)
{
	struct proto_wr w;

	if (!identity_valid(m))
		return -EINVAL;
	proto_wr_begin(&w, buf, cap, PROTO_IDENTITY, 0, id);
	proto_wr_u64(&w, (uint64_t)m->sec);
	proto_wr_u32(&w, m->nsec);
	proto_wr_u32(&w, m->entropy_len);
	proto_wr_bytes(&w, m->entropy, m->entropy_len);
	proto_wr_str(&w, m->hostname, strlen(m->hostname));
	proto_wr_str(&w, m->sandbox_id, strlen(m->sandbox_id));
	return proto_wr_end(&w);
}

int proto_dec_identity(const void *p, size_t len, struct proto_identity *m)
{
	struct proto_rd r;
	const uint8_t *bytes;
	int ret;

	memset(m, 0, sizeof(*m));
	proto_rd_init(&r, p, len);
	m->sec = (int64_t)proto_rd_u64(&r);
	m->nsec = proto_rd_u32(&r);
	m->entropy_len = proto_rd_u32(&r);
	if (!r.err && (m->entropy_len < PROTO_ENTROPY_MIN || m->entropy_len > PROTO_ENTROPY_MAX))
		r.err = -EBADMSG;
	bytes = rd_take(&r, m->entropy_len);
	if (bytes)
		memcpy(m->entropy, bytes, m->entropy_len);
	proto_rd_str(&r, m->hostname, PROTO_HOSTNAME_MAX);
	proto_rd_str(&r, m->sandbox_id, PROTO_SANDBOX_ID_MAX);
	ret = proto_rd_end(&r);
	if (!ret && !identity_valid(m))
		ret = -EBADMSG;
	if (ret)
		memset(m, 0, sizeof(*m));
	return ret;
}

void proto_wr_dirent(struct proto_wr *w, const struct proto_dirent *e)
{
	size_t n = strnlen(e->name, sizeof(e->name));

	proto_wr_u32(w, e->mode);
	proto_wr_u64(w, e->size);
	proto_wr_u64(w, (uint64_t)e->mtime_sec);
	if (n > PROTO_NAME_MAX && !w->err)
		w->err = -EINVAL;
	proto_wr_str(w, e->name, n);
}

int proto_rd_dirent(struct proto_rd *r, struct proto_dirent *e)
{
	if (r->err)
		return r->err;
	if (!r->left)
		return 0;
	e->mode = proto_rd_u32(r);
	e->size = proto_rd_u64(r);
	e->mtime_sec = (int64_t)proto_rd_u64(r);
	proto_rd_str(r, e->name, PROTO_NAME_MAX);
	if (r->err)
		return r->err;
	/* A name is one path component: a peer must not smuggle "../x" or "a/b". */
	if (!e->name[0] || strchr(e->name, '/') || !strcmp(e->name, ".") ||
	    !strcmp(e->name, "..")) {
		r->err = -EBADMSG;
		return r->err;
	}
	return 1;
}
