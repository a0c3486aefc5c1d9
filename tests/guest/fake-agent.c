/*
 * fake-agent: a hostile kiln guest agent, PID 1 of its own initramfs
 * (build/guest/fake-initrd.cpio), for tests/integration/t-hostile.sh.
 *
 * It speaks the real protocol (src/common/proto.c) well enough for `kiln
 * run` to boot, greet, upload, exec and see the command exit, and then
 * misbehaves the way the command's name says (argv[0] of the EXEC):
 *
 *   ok              behave: EXIT 0, a small /proc/vmstat, "fake file\n" for
 *                   any other FILE_GET, SHUTDOWN powers off
 *   vmstat-forever  answer the /proc/vmstat GET with 64 KiB frames, forever
 *   vmstat-empty    answer it with empty FILE_DATA frames (no EOF), forever
 *   get-forever     answer any other GET with 64 KiB frames, forever
 *   silent          after EXIT, read everything and answer nothing
 *   trickle         after EXIT, answer the vmstat GET one byte a second
 *   escape          refuse the EXEC with an error text full of terminal
 *                   escape sequences and control bytes
 *   escape-get      EXIT 0, then refuse every other GET with such a text
 *
 * Before any EXEC the mode comes from /fake-mode (a second cpio archive
 * appended to the initramfs): "hello-hang" reads the HELLO and never
 * answers. Each exec first writes "ready\n" to its stdout, so a test knows
 * the guest is past booting. Every 16 MiB streamed is one console line
 * ("fake-agent: streamed N MiB") through /dev/kmsg.
 *
 * A separate program rather than a mode of kiln-init: the real agent keeps
 * no test-only misbehaviour, and this one needs no image, no mounts and no
 * processes (it boots in the initramfs and answers for itself).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "proto.h"

#define PORT 52
#define BOOT_MARK_PORT 0x440 /* kiln.bootmark= of libkiln's command line */
#define BOOT_MARK_MAGIC 0x6b696c6eu
#define CHUNK 65536

static uint8_t rx[PROTO_MAX_FRAME];
static uint8_t tx[PROTO_HDR_SIZE + CHUNK];
static char boot_mode[32];
static char mode[64];	  /* the last EXEC's argv[0] */
static uint64_t streamed; /* bytes sent in endless answers */

static void say(const char *fmt, ...)
{
	char line[256];
	va_list ap;
	int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC), n;

	if (fd < 0)
		return;
	n = snprintf(line, sizeof(line), "<3>fake-agent: ");
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	if (write(fd, line, strlen(line)) < 0) {
		/* nothing to do */
	}
	close(fd);
}

static int send_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

static int recv_all(int fd, void *p, size_t n)
{
	uint8_t *b = p;

	while (n) {
		ssize_t r = read(fd, b, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

static int send_frame(int fd, int len)
{
	return len < 0 ? -1 : send_all(fd, tx, (size_t)len);
}

static int send_error(int fd, uint32_t id, int err, const char *msg)
{
	return send_frame(fd, proto_enc_error(tx, sizeof(tx), id, err, msg));
}

/* What a hostile guest would like a terminal to do: retitle it, clear it,
 * move the cursor up and overwrite, ring, forge a new line, C1 CSI (raw and
 * UTF-8), a bidi override. */
static const char evil[] =
	"\x1b]0;pwned-title\x07\x1b[2J\x1b[H\x1b[1A\r\x1b[31mFAKE OK\x1b[0m\n"
	"kiln run: forged line\x08\x08\x7f \x9b" "6n \xc2\x9b" "6n \xe2\x80\xae" "evil";

static void sleep_s(unsigned s)
{
	struct timespec ts = { s, 0 };

	nanosleep(&ts, NULL);
}

/* FILE_DATA frames with payload, forever (until the peer goes). */
static void stream_forever(int fd, uint32_t id, size_t len)
{
	int n;

	memset(tx + PROTO_HDR_SIZE, 'x', CHUNK);
	for (;;) {
		n = proto_enc_data(tx, sizeof(tx), PROTO_FILE_DATA, 0, id, tx + PROTO_HDR_SIZE, len);
		if (send_frame(fd, n))
			return;
		streamed += (uint64_t)n;
		if (streamed % (16u << 20) < (uint64_t)n)
			say("streamed %llu MiB\n", (unsigned long long)(streamed >> 20));
	}
}

/* One valid 1-byte FILE_DATA frame after another, one byte a second. */
static void trickle(int fd, uint32_t id)
{
	for (;;) {
		int n = proto_enc_data(tx, sizeof(tx), PROTO_FILE_DATA, 0, id, "x", 1);

		for (int i = 0; i < n; i++) {
			if (send_all(fd, tx + i, 1))
				return;
			sleep_s(1);
		}
	}
}

/* Read and drop everything, answer nothing. */
static void silent(int fd)
{
	for (;;) {
		ssize_t n = read(fd, rx, sizeof(rx));

		if (n == 0 || (n < 0 && errno != EINTR))
			return;
	}
}

static void file_get(int fd, uint32_t id, const struct proto_path *pr)
{
	static const char vmstat[] = "nr_free_pages 1000\npgfault 1\noom_kill 0\n";
	bool is_vmstat = !strcmp(pr->path, "/proc/vmstat");
	const char *body = is_vmstat ? vmstat : "fake file\n";

	if (is_vmstat && !strcmp(mode, "vmstat-forever"))
		return stream_forever(fd, id, CHUNK);
	if (is_vmstat && !strcmp(mode, "vmstat-empty"))
		return stream_forever(fd, id, 0);
	if (is_vmstat && !strcmp(mode, "trickle"))
		return trickle(fd, id);
	if (!is_vmstat && !strcmp(mode, "get-forever"))
		return stream_forever(fd, id, CHUNK);
	if (!is_vmstat && !strcmp(mode, "escape-get")) {
		send_error(fd, id, EIO, evil);
		return;
	}
	send_frame(fd, proto_enc_data(tx, sizeof(tx), PROTO_FILE_DATA, 0, id, body, strlen(body)));
	send_frame(fd, proto_enc_data(tx, sizeof(tx), PROTO_FILE_DATA, PROTO_F_EOF, id, NULL, 0));
}

static void exec_req(int fd, uint32_t id, const struct proto_exec *m)
{
	struct proto_exec_ok ok = { .pid = 2, .stdin_window = CHUNK };
	struct proto_exit ex = { .code = 0, .signal = 0, .oom_kills = -1 };
	const char *name = strrchr(m->argv[0], '/') ? strrchr(m->argv[0], '/') + 1 : m->argv[0];

	snprintf(mode, sizeof(mode), "%s", name);
	say("exec %s\n", mode);
	if (!strcmp(mode, "escape")) {
		send_error(fd, id, ENOENT, evil);
		return;
	}
	send_frame(fd, proto_enc_exec_ok(tx, sizeof(tx), id, &ok));
	send_frame(fd, proto_enc_data(tx, sizeof(tx), PROTO_STDOUT, 0, id, "ready\n", 6));
	send_frame(fd, proto_enc_exit(tx, sizeof(tx), id, &ex));
	if (!strcmp(mode, "silent"))
		silent(fd);
}

/* One connection, until it ends (or forever, for the endless modes). */
static void serve(int fd)
{
	uint32_t put_id = 0;
	uint64_t put_bytes = 0;

	for (;;) {
		struct proto_hdr h;
		struct proto_path pr;
		struct proto_exec *ex = NULL;
		const uint8_t *p = rx + PROTO_HDR_SIZE;

		if (recv_all(fd, rx, PROTO_HDR_SIZE) || proto_hdr_decode(rx, PROTO_FROM_CLIENT, &h) ||
		    recv_all(fd, rx + PROTO_HDR_SIZE, h.len))
			return;
		switch (h.type) {
		case PROTO_HELLO: {
			struct proto_hello_ok ok = { .version = PROTO_VERSION,
						     .caps = PROTO_CAP_EXEC | PROTO_CAP_FILES |
							     PROTO_CAP_REBOOT,
						     .max_payload = PROTO_MAX_PAYLOAD,
						     .stdin_window = CHUNK };

			if (!strcmp(boot_mode, "hello-hang")) {
				say("hello-hang: not answering\n");
				silent(fd);
				return;
			}
			snprintf(ok.agent, sizeof(ok.agent), "fake-agent");
			send_frame(fd, proto_enc_hello_ok(tx, sizeof(tx), h.id, &ok));
			break;
		}
		case PROTO_PING:
			send_frame(fd, proto_enc_data(tx, sizeof(tx), PROTO_PONG, 0, h.id, p, h.len));
			break;
		case PROTO_FILE_PUT:
			put_id = h.id;
			put_bytes = 0;
			break;
		case PROTO_FILE_DATA:
			put_bytes += h.len;
			if (h.id == put_id && (h.flags & PROTO_F_ABORT))
				send_error(fd, h.id, ECANCELED, "aborted");
			else if (h.id == put_id && (h.flags & PROTO_F_EOF))
				send_frame(fd, proto_enc_ok(tx, sizeof(tx), h.id, put_bytes));
			break;
		case PROTO_FILE_GET:
			if (proto_dec_path(p, h.len, &pr))
				return;
			file_get(fd, h.id, &pr);
			break;
		case PROTO_EXEC:
			if (proto_dec_exec(p, h.len, &ex))
				return;
			exec_req(fd, h.id, ex);
			free(ex);
			break;
		case PROTO_STDIN:
			break; /* the process is gone already */
		case PROTO_SIGNAL:
			send_frame(fd, proto_enc_ok(tx, sizeof(tx), h.id, 0));
			break;
		case PROTO_SHUTDOWN:
			send_frame(fd, proto_enc_ok(tx, sizeof(tx), h.id, 0));
			say("shutdown\n");
			sync();
			if (getpid() == 1)
				reboot(RB_AUTOBOOT);
			return;
		case PROTO_IDENTITY:
			/* Its HELLO_OK never offers PROTO_CAP_IDENTITY: refused (libkiln
			 * sends it with the greeting, before it knows). */
			say("IDENTITY received, never offered\n");
			send_error(fd, h.id, EPROTO, "fake-agent: IDENTITY was not offered");
			break;
		default:
			send_error(fd, h.id, ENOSYS, "fake-agent");
			break;
		}
	}
}

int main(void)
{
	struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY,
				  .svm_port = PORT };
	int lfd, fd;

	mkdir("/dev", 0755);
	mount("dev", "/dev", "devtmpfs", 0, NULL);
	fd = open("/fake-mode", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t n = read(fd, boot_mode, sizeof(boot_mode) - 1);

		boot_mode[n > 0 ? n : 0] = 0;
		boot_mode[strcspn(boot_mode, "\n")] = 0;
		close(fd);
	}
	say("up, boot mode '%s'\n", boot_mode);
	lfd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 4)) {
		say("cannot listen on vsock port %d: %s\n", PORT, strerror(errno));
		reboot(RB_AUTOBOOT);
		return 1;
	}
	/* Listening: tell the VMM, as kiln-init does (its boot timer port; the
	 * host waits for this mark before it connects). */
	if (ioperm(BOOT_MARK_PORT, 4, 1) == 0)
		outl(BOOT_MARK_MAGIC, BOOT_MARK_PORT);
	else
		say("boot mark: ioperm: %s\n", strerror(errno));
	for (;;) {
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		serve(fd);
		close(fd);
	}
}
