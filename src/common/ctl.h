/*
 * The VMM's control channel: fixed-size messages on a SOCK_SEQPACKET socket
 * that kiln-vmm gets with --control-fd N. Its owner sends requests (pause,
 * resume, status); the VMM answers each with a REPLY carrying the same id,
 * and on its own sends events (the guest booted, the VM ended). One message
 * per packet, every field little-endian as on the host; anything that is
 * not exactly one well-formed message is refused (ctl_check), never guessed.
 */
#ifndef KILN_COMMON_CTL_H
#define KILN_COMMON_CTL_H

#include <stddef.h>
#include <stdint.h>

#define CTL_MAGIC 0x314c434bu /* "KCL1" */
#define CTL_TEXT_MAX 128

enum ctl_type {
	CTL_PAUSE = 1,	/* stop every vCPU; REPLY once all are parked */
	CTL_RESUME = 2, /* let them run again */
	CTL_STATUS = 3, /* REPLY: a = CTL_STATE_*, b = boot time in us (0: not yet) */
	/* While paused: save the VM. Carries two fds (SCM_RIGHTS): the state
	 * file, then the memory file, both regular files open for writing.
	 * REPLY: a = state file bytes, b = memory bytes written (not holes). */
	CTL_SNAPSHOT = 4,
	CTL_REPLY = 0x80,    /* result = 0 or -errno; text: why, on failure */
	CTL_EV_BOOTED = 0x81, /* a = boot time in us */
	CTL_EV_EXIT = 0x82,   /* result = the VMM's exit status, text = why */
};

enum ctl_state { CTL_STATE_RUNNING = 0, CTL_STATE_PAUSED = 1 };

struct ctl_msg {
	uint32_t magic;
	uint16_t type;
	uint16_t reserved; /* 0 */
	uint32_t id;	   /* a request's, echoed in its REPLY; 0 in events */
	int32_t result;
	uint64_t a, b;
	char text[CTL_TEXT_MAX]; /* NUL-terminated */
};

_Static_assert(sizeof(struct ctl_msg) == 160, "ctl_msg is part of the wire format");

/* A message of type with id and result (text may be NULL). */
void ctl_init(struct ctl_msg *m, enum ctl_type type, uint32_t id, int32_t result,
	      const char *text);
/* 0 if buf holds exactly one well-formed message (copied to *out), else
 * -EBADMSG; *why says what is wrong. */
int ctl_check(const void *buf, size_t len, struct ctl_msg *out, const char **why);

#define CTL_MAX_FDS 2
/*
 * Read one message from the SOCK_SEQPACKET fd with the fds it carries (at
 * most CTL_MAX_FDS, close-on-exec). 0 with *out, fds[0 .. *nfds) the
 * caller's; -EBADMSG (*why set) for a malformed message or too many fds,
 * -EPIPE at the end of the channel, or -errno from recvmsg. On every error
 * the received fds are already closed and *nfds is 0.
 */
int ctl_recv(int fd, struct ctl_msg *out, int fds[CTL_MAX_FDS], unsigned *nfds, const char **why);
/* Send m with nfds fds (0..CTL_MAX_FDS) attached. 0 or -errno. */
int ctl_send_fds(int fd, const struct ctl_msg *m, const int *fds, unsigned nfds);

#endif
