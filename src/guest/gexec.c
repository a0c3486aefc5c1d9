/*
 * Process start for EXEC. The parent prepares everything that allocates (the
 * PATH candidates, the environment); the child only calls async-signal-safe
 * functions and reports an execve failure through a close-on-exec pipe, so
 * the EXEC reply says whether the program really started.
 */
#include "guest/gexec.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto.h"
#include "userdb.h"

#define GEXEC_CAND_MAX 64
#define DEFAULT_PATH   "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

struct spawn {
	const char *const *argv;
	const char *const *envp;
	const char *cwd;
	bool cwd_soft; /* the user's home: "/" when it cannot be entered */
	char **cand; /* NULL-terminated */
	uid_t uid;
	gid_t gid;
	const gid_t *groups; /* supplementary groups; NULL: none */
	size_t ngroups;
	bool set_ids;
	bool reset_oom;
	bool ctty; /* fds[0] is a terminal to make the controlling one */
	rlim_t nofile_soft;
	int fds[3];
	int report;
};

static const char *env_get(const char *const *envp, const char *name)
{
	size_t n = strlen(name);

	for (; *envp; envp++)
		if (!strncmp(*envp, name, n) && (*envp)[n] == '=')
			return *envp + n + 1;
	return NULL;
}

/*
 * The files execve will try, in order: argv[0] itself when it has a '/', else
 * each PATH entry (an empty one means "."). One allocation: free() it.
 */
static int candidates(const char *file, const char *path, char ***out)
{
	char **v, *p;
	size_t n = 1, flen = strlen(file);
	bool direct = strchr(file, '/') != NULL;
	const char *s;

	*out = NULL;
	if (direct) {
		path = "";
	} else {
		if (flen > PROTO_NAME_MAX)
			return -ENAMETOOLONG;
		for (s = path; *s; s++)
			n += *s == ':';
		if (n > GEXEC_CAND_MAX)
			n = GEXEC_CAND_MAX;
	}
	v = calloc(1, (n + 1) * sizeof(*v) + strlen(path) + n * (flen + 3));
	if (!v)
		return -ENOMEM;
	p = (char *)(v + n + 1);
	s = path;
	for (size_t i = 0; i < n; i++) {
		size_t dlen = strcspn(s, ":");

		v[i] = p;
		if (!direct) {
			if (dlen) {
				memcpy(p, s, dlen);
				p += dlen;
			} else {
				*p++ = '.';
			}
			*p++ = '/';
		}
		memcpy(p, file, flen + 1);
		p += flen + 1;
		s += dlen;
		if (*s == ':')
			s++;
	}
	*out = v;
	return 0;
}

/*
 * A new pseudo-terminal of rows x cols: the master (non-blocking) and its
 * slave, both close-on-exec; the slave owned by the user the process runs as.
 */
static int pty_open(uint32_t rows, uint32_t cols, uid_t uid, gid_t gid, int *master,
		    int *slave)
{
	struct winsize ws = { .ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols };
	int m, sl = -1, ret;

	*master = *slave = -1;
	m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (m < 0)
		return -errno;
	if (unlockpt(m) || ioctl(m, TIOCSWINSZ, &ws) || fcntl(m, F_SETFL, O_RDWR | O_NONBLOCK)) {
		ret = -errno;
		goto out;
	}
	/* The slave of this very master, not whatever a path names by now. */
	sl = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (sl < 0 || fchown(sl, uid, gid) || fchmod(sl, 0620)) {
		ret = -errno;
		goto out;
	}
	*master = m;
	*slave = sl;
	m = sl = -1;
	ret = 0;
out:
	if (m >= 0)
		close(m);
	if (sl >= 0)
		close(sl);
	return ret;
}

/* Async-signal-safe from here to execve. */
static __attribute__((noreturn)) void child(const struct spawn *s)
{
	struct sigaction sa;
	sigset_t none;
	int err = 0;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (int sig = 1; sig < NSIG; sig++)
		sigaction(sig, &sa, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (setsid() < 0)
		goto fail;
	if (s->ctty && ioctl(s->fds[0], TIOCSCTTY, 0) < 0)
		goto fail;
	for (int i = 0; i < 3; i++) {
		if (s->fds[i] == i) {
			if (fcntl(i, F_SETFD, 0) < 0)
				goto fail;
		} else if (dup2(s->fds[i], i) < 0) {
			goto fail;
		}
	}
	/* Nothing the agent (or a test program around it) holds leaks into the child. */
	syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC);
	if (s->reset_oom) {
		int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);

		if (fd >= 0) {
			if (write(fd, "0", 1) < 0) {
				/* best effort */
			}
			close(fd);
		}
	}
	if (s->nofile_soft) {
		struct rlimit rl;

		if (!getrlimit(RLIMIT_NOFILE, &rl)) {
			rl.rlim_cur = s->nofile_soft < rl.rlim_max ? s->nofile_soft : rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	/* A home is entered as its user (below); an asked-for cwd as root. */
	if (!s->cwd_soft && chdir(s->cwd))
		goto fail;
	if (s->set_ids) {
		if (setgroups(s->ngroups, s->groups) || setgid(s->gid) || setuid(s->uid))
			goto fail;
	}
	if (s->cwd_soft && chdir(s->cwd) && chdir("/"))
		goto fail;
	for (char *const *c = s->cand; *c; c++) {
		execve(*c, (char *const *)s->argv, (char *const *)s->envp);
		switch (errno) {
		case EACCES:
			err = EACCES;
			/* fall through */
		case ENOENT:
		case ENOTDIR:
		case ESTALE:
		case ENODEV:
		case ETIMEDOUT:
			continue;
		default:
			goto fail;
		}
	}
	errno = err ? err : ENOENT;
fail:
	err = errno;
	if (write(s->report, &err, sizeof(err)) < 0) {
		/* the parent then sees a plain exit 127 */
	}
	_exit(127);
}

/*
 * One of the image's account files, whole: *buf NULL and 0 when it does not
 * exist. Never blocks (a FIFO, a terminal) and never reads past the cap.
 */
static int read_small(const char *dir, const char *name, char **buf, size_t *len, char *err,
		      size_t errlen)
{
	char path[PROTO_PATH_MAX + 16];
	struct stat st;
	size_t n = 0;
	char *b = NULL;
	ssize_t r;
	int fd = -1, ret = -ESRCH;

	*buf = NULL;
	*len = 0;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0 && (errno == ENOENT || errno == ENOTDIR)) {
		ret = 0;
		goto out;
	}
	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "cannot read the image's /etc/%s: %s", name, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "the image's /etc/%s is not a regular file", name);
		goto out;
	}
	b = malloc(USERDB_FILE_MAX + 1);
	if (!b) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	while (n <= USERDB_FILE_MAX) {
		r = read(fd, b + n, USERDB_FILE_MAX + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(err, errlen, "cannot read the image's /etc/%s: %s", name,
				 strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > USERDB_FILE_MAX) {
		snprintf(err, errlen, "the image's /etc/%s is over %u bytes", name, USERDB_FILE_MAX);
		goto out;
	}
	*buf = b;
	*len = n;
	b = NULL;
	ret = 0;
out:
	free(b);
	if (fd >= 0)
		close(fd);
	return ret;
}

/* PROTO_EXEC_USER: the spec against the image's files. */
static int lookup_user(const char *etc, const char *spec, struct userdb_ids *ids, char *err,
		       size_t errlen)
{
	char *pw = NULL, *gr = NULL;
	size_t pwl = 0, grl = 0;
	int ret;

	ret = read_small(etc, "passwd", &pw, &pwl, err, errlen);
	if (!ret)
		ret = read_small(etc, "group", &gr, &grl, err, errlen);
	if (!ret) {
		ret = userdb_resolve(spec, pw, pwl, gr, grl, ids, err, errlen);
		/* Over a cap or unknown alike: this user cannot be had here. */
		if (ret && ret != -EINVAL)
			ret = -ESRCH;
	}
	free(pw);
	free(gr);
	return ret;
}

int gexec_spawn(const struct proto_exec *req, const struct gexec_opts *opts,
		struct gexec_child *out, char *errmsg, size_t errlen)
{
	struct userdb_ids *ids = NULL;
	gid_t *groups = NULL;
	const char **envv = NULL;
	char *homekv = NULL;
	struct spawn s;
	const char *defenv[3];
	int in[2] = { -1, -1 }, o[2] = { -1, -1 }, e[2] = { -1, -1 }, rep[2] = { -1, -1 };
	int nul = -1, ptm = -1, pts = -1, ptin = -1, ptctl = -1, pidfd, err, ret;
	pid_t pid = -1;
	ssize_t n;

	out->pid = -1;
	out->pidfd = out->in = out->out = out->err = out->pty = -1;
	memset(&s, 0, sizeof(s));
	s.argv = req->argv;
	s.cwd = req->cwd[0] ? req->cwd : "/";
	s.reset_oom = opts->reset_oom;
	s.nofile_soft = opts->nofile_soft;
	errmsg[0] = 0;
	if (req->flags & PROTO_EXEC_USER) {
		ids = malloc(sizeof(*ids));
		groups = ids ? calloc(USERDB_GROUPS_MAX, sizeof(*groups)) : NULL;
		if (!groups) {
			ret = -ENOMEM;
			goto out;
		}
		ret = lookup_user(opts->etc_dir ? opts->etc_dir : "/etc", req->user, ids, errmsg,
				  errlen);
		if (ret)
			goto out;
		s.uid = ids->uid;
		s.gid = ids->gid;
		for (unsigned i = 0; i < ids->ngroups; i++)
			groups[i] = ids->groups[i];
		s.groups = groups;
		s.ngroups = ids->ngroups;
		s.set_ids = true;
		if (!req->cwd[0]) {
			s.cwd = ids->home;
			s.cwd_soft = true;
		}
	} else {
		s.uid = req->uid == PROTO_ID_KEEP ? geteuid() : (uid_t)req->uid;
		s.gid = req->gid == PROTO_ID_KEEP ? getegid() : (gid_t)req->gid;
		s.set_ids = s.uid != geteuid() || s.gid != getegid();
	}
	if (asprintf(&homekv, "HOME=%s", ids ? ids->home : s.uid == 0 ? "/root" : "/") < 0) {
		homekv = NULL;
		ret = -ENOMEM;
		goto out;
	}
	if (req->envc && env_get(req->envp, "HOME")) {
		s.envp = req->envp;
	} else if (req->envc) {
		/* The caller's environment and the user's HOME. */
		envv = calloc(req->envc + 2, sizeof(*envv));
		if (!envv) {
			ret = -ENOMEM;
			goto out;
		}
		memcpy(envv, req->envp, req->envc * sizeof(*envv));
		envv[req->envc] = homekv;
		s.envp = envv;
	} else {
		defenv[0] = "PATH=" DEFAULT_PATH;
		defenv[1] = homekv;
		defenv[2] = NULL;
		s.envp = defenv;
	}
	{
		const char *path = env_get(s.envp, "PATH");

		ret = candidates(req->argv[0], path ? path : DEFAULT_PATH, &s.cand);
		if (ret)
			goto out;
	}
	if (pipe2(rep, O_CLOEXEC)) {
		ret = -errno;
		goto out;
	}
	if (req->flags & PROTO_EXEC_PTY) {
		ret = pty_open(req->rows, req->cols, s.uid, s.gid, &ptm, &pts);
		if (ret)
			goto out;
		ptctl = fcntl(ptm, F_DUPFD_CLOEXEC, 0);
		if (ptctl < 0 || ((req->flags & PROTO_EXEC_STDIN) &&
				  (ptin = fcntl(ptm, F_DUPFD_CLOEXEC, 0)) < 0)) {
			ret = -errno;
			goto out;
		}
		s.fds[0] = s.fds[1] = s.fds[2] = pts;
		s.ctty = true;
	} else if (pipe2(o, O_CLOEXEC) || pipe2(e, O_CLOEXEC) || fcntl(o[0], F_SETFL, O_NONBLOCK) ||
		   fcntl(e[0], F_SETFL, O_NONBLOCK)) {
		/* O_NONBLOCK applies to the parent's ends only (separate open files). */
		ret = -errno;
		goto out;
	}
	if (s.ctty) {
		/* the terminal is its stdin */
	} else if (req->flags & PROTO_EXEC_STDIN) {
		if (pipe2(in, O_CLOEXEC) || fcntl(in[1], F_SETFL, O_NONBLOCK)) {
			ret = -errno;
			goto out;
		}
		s.fds[0] = in[0];
	} else {
		nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (nul < 0) {
			ret = -errno;
			goto out;
		}
		s.fds[0] = nul;
	}
	if (!s.ctty) {
		s.fds[1] = o[1];
		s.fds[2] = e[1];
	}
	s.report = rep[1];

	pid = fork();
	if (pid < 0) {
		ret = -errno;
		goto out;
	}
	if (pid == 0)
		child(&s);

	close(rep[1]);
	rep[1] = -1;
	do
		n = read(rep[0], &err, sizeof(err));
	while (n < 0 && errno == EINTR);
	if (n == (ssize_t)sizeof(err)) {
		/* It never ran: reap it here, the caller never sees the pid. */
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		pid = -1;
		ret = err > 0 ? -err : -ENOEXEC;
		goto out;
	}
	/* Always close-on-exec. Until we reap it, pid cannot name anyone else. */
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0) {
		ret = -errno;
		kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		goto out;
	}
	out->pid = pid;
	out->pidfd = pidfd;
	if (s.ctty) {
		out->in = ptin;
		out->out = ptm;
		out->pty = ptctl;
		ptin = ptm = ptctl = -1;
	} else {
		out->in = in[1];
		out->out = o[0];
		out->err = e[0];
		in[1] = o[0] = e[0] = -1;
	}
	ret = 0;
out:
	for (int i = 0; i < 2; i++) {
		if (in[i] >= 0)
			close(in[i]);
		if (o[i] >= 0)
			close(o[i]);
		if (e[i] >= 0)
			close(e[i]);
		if (rep[i] >= 0)
			close(rep[i]);
	}
	if (nul >= 0)
		close(nul);
	for (int i = 0; i < 4; i++) {
		int fd = i == 0 ? ptm : i == 1 ? pts : i == 2 ? ptin : ptctl;

		if (fd >= 0)
			close(fd);
	}
	free(s.cand);
	free(envv);
	free(homekv);
	free(groups);
	free(ids);
	return ret;
}
