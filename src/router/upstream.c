/* kiln-router's upstream HTTP client (see upstream.h). */
#include "router/upstream.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "util.h"

#define UP_MAX_HEADERS 64

struct up_conn {
	int fd;
	int timeout_ms;
	uint64_t deadline;	/* now_ns() after which every wait fails, 0: none */
	int abort_fd[2];	/* a hang-up (client) or a byte (stop) ends a wait */
	bool chunked_out;
	/* Answer. */
	char head[UP_HEAD_MAX + 1];
	size_t head_len;
	const char *hname[UP_MAX_HEADERS], *hval[UP_MAX_HEADERS];
	unsigned nh;
	char buf[16384];	/* bytes after the head, not yet handed out */
	size_t boff, blen;
	uint64_t left;		/* Content-Length left, or of the current chunk */
	bool chunked, by_length, eof, chunk_done;
};

_Static_assert(UP_HEAD_MAX <= sizeof(((struct up_conn *)0)->buf), "a head's tail fits in buf");

/* Waits for ev on the upstream: at most timeout_ms each time, never past
 * the deadline; -ECONNABORTED when an abort fd fires first. */
static int wait_fd(struct up_conn *c, short ev)
{
	struct pollfd p[3] = { { .fd = c->fd, .events = ev },
			       { .fd = c->abort_fd[0], .events = POLLRDHUP },
			       { .fd = c->abort_fd[1], .events = POLLIN } };
	int r, ms;

	for (;;) {
		ms = c->timeout_ms > 0 ? c->timeout_ms : -1;
		if (c->deadline) {
			uint64_t now = now_ns(), left;

			if (now >= c->deadline)
				return -ETIMEDOUT;
			left = (c->deadline - now + 999999) / 1000000;
			if (left > INT_MAX)
				left = INT_MAX;
			if (ms < 0 || left < (uint64_t)ms)
				ms = (int)left;
		}
		r = poll(p, 3, ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		if ((p[1].revents & (POLLRDHUP | POLLHUP | POLLERR)) || p[2].revents)
			return -ECONNABORTED;
		return 0;
	}
}

static struct up_conn *conn_new(int timeout_ms)
{
	struct up_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->fd = -1;
	c->abort_fd[0] = c->abort_fd[1] = -1;
	c->timeout_ms = timeout_ms;
	return c;
}

int up_attach(int fd, int timeout_ms, struct up_conn **out)
{
	*out = conn_new(timeout_ms);
	if (!*out)
		return -ENOMEM;
	(*out)->fd = fd;
	return 0;
}

void up_set_abort(struct up_conn *c, int hangup_fd, int stop_fd)
{
	c->abort_fd[0] = hangup_fd;
	c->abort_fd[1] = stop_fd;
}

int up_open(const struct up_addr *a, int timeout_ms, struct up_conn **out)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	struct up_conn *c = conn_new(timeout_ms);
	socklen_t sl = sizeof(int);
	int ret = -ENOMEM, soerr = 0;

	*out = NULL;
	if (!c)
		goto out;
	if (a->is_unix) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };

		memcpy(sa.sun_path, a->path, strnlen(a->path, sizeof(sa.sun_path) - 1));
		c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		/* EAGAIN here is a full backlog, not a connect under way. */
		if (c->fd < 0 ||
		    (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS)) {
			ret = -errno;
			goto out;
		}
	} else {
		int r = getaddrinfo(a->host, a->port, &hints, &res);

		if (r) {
			ret = -EHOSTUNREACH;
			goto out;
		}
		c->fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (c->fd < 0 ||
		    (connect(c->fd, res->ai_addr, res->ai_addrlen) < 0 && errno != EINPROGRESS)) {
			ret = -errno;
			goto out;
		}
	}
	ret = wait_fd(c, POLLOUT);
	if (ret)
		goto out;
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
		ret = soerr ? -soerr : -errno;
		goto out;
	}
	/* Blocking from here: poll() bounds the waits. */
	fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK);
	*out = c;
	c = NULL;
	ret = 0;
out:
	if (res)
		freeaddrinfo(res);
	up_close(c);
	return ret;
}

void up_close(struct up_conn *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

int up_fd(const struct up_conn *c)
{
	return c->fd;
}

bool up_pending(const struct up_conn *c)
{
	return c->boff < c->blen || c->eof || (c->by_length && !c->left);
}

void up_set_timeout(struct up_conn *c, int timeout_ms)
{
	c->timeout_ms = timeout_ms;
}

static int send_all(struct up_conn *c, const void *data, size_t len)
{
	const char *p = data;

	while (len) {
		ssize_t n;
		int r = wait_fd(c, POLLOUT);

		if (r)
			return r;
		n = send(c->fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static bool header_safe(const char *s)
{
	for (; *s; s++)
		if (*s == '\r' || *s == '\n')
			return false;
	return true;
}

int up_send_head(struct up_conn *c, const char *method, const char *target,
		 const char *const *hdrs, uint64_t body_len)
{
	char head[UP_HEAD_MAX];
	size_t off = 0;
	int n;

	if (!header_safe(method) || !header_safe(target))
		return -EINVAL;
	n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: kilnd\r\nConnection: close\r\n",
		     method, target);
	if (n < 0 || (size_t)n >= sizeof(head))
		return -E2BIG;
	off = (size_t)n;
	for (unsigned i = 0; hdrs && hdrs[i]; i += 2) {
		if (!hdrs[i + 1] || !header_safe(hdrs[i]) || !header_safe(hdrs[i + 1]))
			return -EINVAL;
		n = snprintf(head + off, sizeof(head) - off, "%s: %s\r\n", hdrs[i], hdrs[i + 1]);
		if (n < 0 || (size_t)n >= sizeof(head) - off)
			return -E2BIG;
		off += (size_t)n;
	}
	if (body_len == UP_UNKNOWN_LEN) {
		c->chunked_out = true;
		n = snprintf(head + off, sizeof(head) - off, "Transfer-Encoding: chunked\r\n\r\n");
	} else {
		n = snprintf(head + off, sizeof(head) - off, "Content-Length: %llu\r\n\r\n",
			     (unsigned long long)body_len);
	}
	if (n < 0 || (size_t)n >= sizeof(head) - off)
		return -E2BIG;
	return send_all(c, head, off + (size_t)n);
}

int up_send_body(struct up_conn *c, const void *data, size_t len)
{
	char size[24];
	int r;

	if (!len)
		return 0;
	if (!c->chunked_out)
		return send_all(c, data, len);
	snprintf(size, sizeof(size), "%zx\r\n", len);
	r = send_all(c, size, strlen(size));
	if (!r)
		r = send_all(c, data, len);
	if (!r)
		r = send_all(c, "\r\n", 2);
	return r;
}

int up_end_body(struct up_conn *c)
{
	return c->chunked_out ? send_all(c, "0\r\n\r\n", 5) : 0;
}

static ssize_t recv_some(struct up_conn *c, void *buf, size_t len)
{
	ssize_t n;
	int r;

	for (;;) {
		r = wait_fd(c, POLLIN);
		if (r)
			return r;
		n = recv(c->fd, buf, len, 0);
		if (n >= 0)
			return n;
		if (errno != EINTR)
			return -errno;
	}
}

/* A decimal Content-Length: digits only, below UP_UNKNOWN_LEN. */
static int dec_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -EPROTO;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (UP_UNKNOWN_LEN - 1 - (uint64_t)(*s - '0')) / 10)
			return -EPROTO;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}

/* The framing headers: one Transfer-Encoding (chunked) or Content-Length
 * (its copies all equal), never both. */
static int framing(struct up_conn *c)
{
	uint64_t v;

	for (unsigned i = 0; i < c->nh; i++) {
		if (!strcasecmp(c->hname[i], "Transfer-Encoding")) {
			if (c->chunked || strcasecmp(c->hval[i], "chunked"))
				return -EPROTO;
			c->chunked = true;
		} else if (!strcasecmp(c->hname[i], "Content-Length")) {
			if (dec_u64(c->hval[i], &v) || (c->by_length && v != c->left))
				return -EPROTO;
			c->by_length = true;
			c->left = v;
		}
	}
	return c->chunked && c->by_length ? -EPROTO : 0;
}

/* Reads the head within one timeout in all (a slow drip ends too). */
int up_read_head(struct up_conn *c, unsigned *status)
{
	char *end = NULL, *line, *next;
	uint64_t saved = c->deadline;
	size_t hl;
	int ret = -EPROTO;

	*status = 0;
	if (c->timeout_ms > 0 && !c->deadline)
		c->deadline = now_ns() + (uint64_t)c->timeout_ms * 1000000;
	while (!end) {
		size_t from = c->head_len > 3 ? c->head_len - 3 : 0;
		ssize_t n;

		ret = -EPROTO;
		if (c->head_len == UP_HEAD_MAX)
			goto out;
		n = recv_some(c, c->head + c->head_len, UP_HEAD_MAX - c->head_len);
		ret = n < 0 ? (int)n : -ECONNRESET;
		if (n <= 0)
			goto out;
		c->head_len += (size_t)n;
		c->head[c->head_len] = 0;
		end = memmem(c->head + from, c->head_len - from, "\r\n\r\n", 4);
	}
	ret = -EPROTO;
	hl = (size_t)(end - c->head) + 4;
	c->blen = c->head_len - hl;
	memcpy(c->buf, c->head + hl, c->blen);
	*end = 0;
	/* No NUL or other control byte but HT and the line ends. */
	for (const char *p = c->head; p < end; p++)
		if (((unsigned char)*p < 0x20 && *p != '\t' && *p != '\r' && *p != '\n') ||
		    *p == 0x7f)
			goto out;
	/* HTTP/1.x NNN[ reason]: each test stops at the head's end (NUL). */
	if (strncmp(c->head, "HTTP/1.", 7) || (c->head[7] != '0' && c->head[7] != '1') ||
	    c->head[8] != ' ')
		goto out;
	for (int i = 9; i < 12; i++)
		if (c->head[i] < '0' || c->head[i] > '9')
			goto out;
	if (c->head[12] != ' ' && c->head[12] != '\r' && c->head[12])
		goto out;
	*status = (unsigned)((c->head[9] - '0') * 100 + (c->head[10] - '0') * 10 + c->head[11] - '0');
	/* Never asked for an interim answer (no Expect, no Upgrade). */
	if (*status < 200 || *status > 599)
		goto out;
	line = strstr(c->head, "\r\n");
	if (line)
		*line = 0;
	if (strpbrk(c->head, "\r\n"))
		goto out;
	while (line) {
		char *colon, *val;

		line += 2;
		next = strstr(line, "\r\n");
		if (next)
			*next = 0;
		colon = strchr(line, ':');
		/* name: value, the name without blanks; no bare CR or LF. */
		if (!colon || colon == line || strcspn(line, " \t") < (size_t)(colon - line) ||
		    strpbrk(line, "\r\n") || c->nh == UP_MAX_HEADERS)
			goto out;
		*colon = 0;
		val = colon + 1;
		while (*val == ' ' || *val == '\t')
			val++;
		for (char *t = val + strlen(val); t > val && (t[-1] == ' ' || t[-1] == '\t');)
			*--t = 0;
		c->hname[c->nh] = line;
		c->hval[c->nh++] = val;
		line = next;
	}
	if (framing(c))
		goto out;
	if (*status == 204 || *status == 304) {
		c->by_length = true;
		c->chunked = false;
		c->left = 0;
	}
	ret = 0;
out:
	if (ret)
		*status = 0;
	c->deadline = saved;
	return ret;
}

const char *up_header(const struct up_conn *c, const char *name)
{
	for (unsigned i = 0; i < c->nh; i++)
		if (!strcasecmp(c->hname[i], name))
			return c->hval[i];
	return NULL;
}

uint64_t up_body_len(const struct up_conn *c)
{
	return c->by_length ? c->left : UP_UNKNOWN_LEN;
}

/* Raw bytes: buffered ones first; small reads go through the buffer. */
static ssize_t raw_read(struct up_conn *c, void *buf, size_t len)
{
	if (c->boff == c->blen && len < sizeof(c->buf) / 2) {
		ssize_t n = recv_some(c, c->buf, sizeof(c->buf));

		if (n <= 0)
			return n;
		c->boff = 0;
		c->blen = (size_t)n;
	}
	if (c->boff < c->blen) {
		size_t n = c->blen - c->boff < len ? c->blen - c->boff : len;

		memcpy(buf, c->buf + c->boff, n);
		c->boff += n;
		return (ssize_t)n;
	}
	return recv_some(c, buf, len);
}

/* One CRLF-terminated line of a chunked body (at most len - 1 bytes). */
static int raw_line(struct up_conn *c, char *line, size_t len)
{
	size_t n = 0;

	for (;;) {
		char ch;
		ssize_t r = raw_read(c, &ch, 1);

		if (r <= 0)
			return r < 0 ? (int)r : -ECONNRESET;
		if (ch == '\n')
			break;
		if (n + 1 >= len)
			return -EPROTO;
		line[n++] = ch;
	}
	if (n && line[n - 1] == '\r')
		n--;
	line[n] = 0;
	return 0;
}

ssize_t up_read_body(struct up_conn *c, void *buf, size_t len)
{
	ssize_t n;

	if (c->eof || !len)
		return 0;
	if (c->by_length) {
		if (!c->left) {
			c->eof = true;
			return 0;
		}
		n = raw_read(c, buf, c->left < len ? (size_t)c->left : len);
		if (n == 0)
			return -ECONNRESET;
		if (n > 0)
			c->left -= (uint64_t)n;
		return n;
	}
	if (!c->chunked) {
		n = raw_read(c, buf, len);
		if (n == 0)
			c->eof = true;
		return n;
	}
	while (!c->left) {
		char line[128], *semi;
		int r;

		if (c->chunk_done) {
			r = raw_line(c, line, sizeof(line)); /* the CRLF after a chunk */
			if (r)
				return r;
			if (line[0])
				return -EPROTO;
		}
		r = raw_line(c, line, sizeof(line));
		if (r)
			return r;
		semi = strchr(line, ';');
		if (semi)
			*semi = 0;
		if (!line[0] || strlen(line) > 15 || strspn(line, "0123456789abcdefABCDEF") !=
							     strlen(line))
			return -EPROTO;
		c->left = strtoull(line, NULL, 16);
		c->chunk_done = true;
		if (!c->left) {
			/* Trailers, up to the empty line (UP_MAX_HEADERS at most). */
			for (unsigned i = 0;; i++) {
				r = raw_line(c, line, sizeof(line));
				if (r)
					return r;
				if (!line[0])
					break;
				if (i == UP_MAX_HEADERS)
					return -EPROTO;
			}
			c->eof = true;
			return 0;
		}
	}
	n = raw_read(c, buf, c->left < len ? (size_t)c->left : len);
	if (n == 0)
		return -ECONNRESET;
	if (n > 0)
		c->left -= (uint64_t)n;
	return n;
}

int up_exchange_on(struct up_conn *c, const char *method, const char *target,
		   const char *const *hdrs, const void *body, size_t body_len, unsigned *status,
		   char **resp, size_t *resp_len, size_t max, char *host_hdr, size_t host_len)
{
	char *b = NULL, *nb;
	size_t len = 0, cap = 0;
	uint64_t saved = c->deadline;
	int ret;

	*resp = NULL;
	*resp_len = 0;
	*status = 0;
	if (host_hdr && host_len)
		host_hdr[0] = 0;
	/* One timeout for the whole exchange: a slow drip ends too. */
	if (c->timeout_ms > 0)
		c->deadline = now_ns() + (uint64_t)c->timeout_ms * 1000000;
	ret = up_send_head(c, method, target, hdrs, body_len);
	if (!ret)
		ret = up_send_body(c, body, body_len);
	if (!ret)
		ret = up_end_body(c);
	if (!ret)
		ret = up_read_head(c, status);
	if (ret)
		goto out;
	if (host_hdr && host_len && up_header(c, "X-Kiln-Host"))
		snprintf(host_hdr, host_len, "%s", up_header(c, "X-Kiln-Host"));
	ret = -EFBIG;
	if (c->by_length && c->left > max)
		goto out;
	for (;;) {
		ssize_t n;

		if (len + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 8192;
			nb = realloc(b, cap);
			if (!nb) {
				ret = -ENOMEM;
				goto out;
			}
			b = nb;
		}
		n = up_read_body(c, b + len, cap - len - 1);
		if (n < 0) {
			ret = (int)n;
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max) {
			ret = -EFBIG;
			goto out;
		}
	}
	if (!b && !(b = malloc(1))) {
		ret = -ENOMEM;
		goto out;
	}
	b[len] = 0;
	*resp = b;
	*resp_len = len;
	b = NULL;
	ret = 0;
out:
	free(b);
	c->deadline = saved;
	return ret;
}

int up_exchange(const struct up_addr *a, const char *method, const char *target,
		const char *const *hdrs, const void *body, size_t body_len, int timeout_ms,
		unsigned *status, char **resp, size_t *resp_len, size_t max,
		char *host_hdr, size_t host_len)
{
	struct up_conn *c = NULL;
	int ret;

	*resp = NULL;
	*resp_len = 0;
	*status = 0;
	if (host_hdr && host_len)
		host_hdr[0] = 0;
	ret = up_open(a, timeout_ms, &c);
	if (!ret)
		ret = up_exchange_on(c, method, target, hdrs, body, body_len, status, resp,
				     resp_len, max, host_hdr, host_len);
	up_close(c);
	return ret;
}
