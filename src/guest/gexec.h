/*
 * Starting a process for an EXEC request: fork, then only async-signal-safe
 * calls in the child (the agent may run as a thread of a test program).
 */
#ifndef KILN_GUEST_GEXEC_H
#define KILN_GUEST_GEXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/types.h>

struct proto_exec;

struct gexec_child {
	pid_t pid;
	int pidfd; /* readable when the process has exited */
	int in;	   /* write end of its stdin, or -1 (stdin is /dev/null) */
	int out;   /* read end of its stdout */
	int err;   /* read end of its stderr, or -1 (on a terminal: merged into out) */
	int pty;   /* the terminal's master for TIOCSWINSZ, or -1 */
};

struct gexec_opts {
	bool reset_oom;	      /* oom_score_adj 0 in the child (the agent runs at -1000) */
	rlim_t nofile_soft;   /* RLIMIT_NOFILE soft limit for the child; 0: inherit */
	const char *etc_dir;  /* passwd and group for PROTO_EXEC_USER; NULL: /etc */
};

/*
 * The child is a session leader (its pgid is its pid), with default signal
 * dispositions and an empty signal mask. All returned fds are non-blocking
 * and close-on-exec. Fails with the child's execve errno (-ENOENT, -EACCES,
 * ...) when the program cannot run; with -ESRCH when PROTO_EXEC_USER names
 * a user or group the image does not have (or its files are unreadable or
 * over their caps), -EINVAL for a malformed one: err then says why.
 *
 * With PROTO_EXEC_USER it runs as that user (src/common/userdb.h: uid, gid,
 * supplementary groups); otherwise as uid:gid with no supplementary groups.
 * HOME, when the environment has none, is the user's home (passwd), else
 * /root for uid 0 and / for others.
 *
 * With PROTO_EXEC_PTY its stdin, stdout and stderr are the slave of a new
 * pseudo-terminal (rows x cols), its controlling terminal: out reads the
 * master (everything the process writes, echo included), in (if stdin is on)
 * writes to it, err is -1, and pty is one more descriptor of the master.
 */
int gexec_spawn(const struct proto_exec *req, const struct gexec_opts *opts,
		struct gexec_child *out, char *err, size_t errlen);

#endif
