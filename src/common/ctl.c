#include "ctl.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void ctl_init(struct ctl_msg *m, enum ctl_type type, uint32_t id, int32_t result,
	      const char *text)
{
	memset(m, 0, sizeof(*m));
	m->magic = CTL_MAGIC;
	m->type = (uint16_t)type;
	m->id = id;
	m->result = result;
	if (text)
		snprintf(m->text, sizeof(m->text), "%s", text);
}

int ctl_check(const void *buf, size_t len, struct ctl_msg *out, const char **why)
{
	struct ctl_msg m;

	*why = NULL;
	if (len != sizeof(m)) {
		*why = "a control message is 160 bytes";
		return -EBADMSG;
	}
	memcpy(&m, buf, sizeof(m));
	if (m.magic != CTL_MAGIC)
		*why = "bad magic";
	else if (m.reserved)
		*why = "reserved field is not 0";
	else if (!memchr(m.text, 0, sizeof(m.text)))
		*why = "text is not NUL-terminated";
	else if (m.type != CTL_PAUSE && m.type != CTL_RESUME && m.type != CTL_STATUS &&
		 m.type != CTL_SNAPSHOT &&
		 m.type != CTL_REPLY && m.type != CTL_EV_BOOTED && m.type != CTL_EV_EXIT)
		*why = "unknown message type";
	if (*why)
		return -EBADMSG;
	*out = m;
	return 0;
}

/* Take the SCM_RIGHTS fds out of h; false if there were more than fit. */
static bool take_fds(struct msghdr *h, int fds[CTL_MAX_FDS], unsigned *nfds)
{
	bool fit = !(h->msg_flags & MSG_CTRUNC);

	for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
		size_t n;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
		    c->cmsg_len < CMSG_LEN(0))
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int f;

			memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(f));
			if (*nfds < CTL_MAX_FDS)
				fds[(*nfds)++] = f;
			else {
				close(f);
				fit = false;
			}
		}
	}
	return fit;
}

int ctl_recv(int fd, struct ctl_msg *out, int fds[CTL_MAX_FDS], unsigned *nfds, const char **why)
{
	uint8_t buf[sizeof(struct ctl_msg) + 1];
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(CTL_MAX_FDS * sizeof(int))];
	} cbuf;
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct msghdr h = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
			    .msg_controllen = sizeof(cbuf.buf) };
	ssize_t n;
	int ret;

	*nfds = 0;
	*why = NULL;
	n = recvmsg(fd, &h, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -EPIPE;
	if (!take_fds(&h, fds, nfds)) {
		*why = "too many fds with a control message (at most 2)";
		ret = -EBADMSG;
	} else if (h.msg_flags & MSG_TRUNC) {
		*why = "a control message is 160 bytes";
		ret = -EBADMSG;
	} else {
		ret = ctl_check(buf, (size_t)n, out, why);
	}
	if (ret) {
		for (unsigned i = 0; i < *nfds; i++)
			close(fds[i]);
		*nfds = 0;
	}
	return ret;
}

int ctl_send_fds(int fd, const struct ctl_msg *m, const int *fds, unsigned nfds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(CTL_MAX_FDS * sizeof(int))];
	} cbuf;
	struct iovec iov = { .iov_base = (void *)m, .iov_len = sizeof(*m) };
	struct msghdr h = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *c;
	ssize_t n;

	if (nfds > CTL_MAX_FDS)
		return -EINVAL;
	if (nfds) {
		memset(&cbuf, 0, sizeof(cbuf));
		h.msg_control = cbuf.buf;
		h.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		c = CMSG_FIRSTHDR(&h);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
	}
	n = sendmsg(fd, &h, MSG_NOSIGNAL);
	if (n < 0)
		return -errno;
	return n == (ssize_t)sizeof(*m) ? 0 : -EMSGSIZE;
}
