/*
 * seccomp filters per thread role, each exercised in a forked child: the
 * calls a role makes must go through (the child exits 0), anything else must
 * end the child by SIGSYS with the violation report on its stderr. Opening a
 * path fails with EACCES instead. No KVM needed: KVM_RUN on /dev/null gets
 * ENOTTY once the filter let it through.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "vmm/seccomp.h"
#include "vmm/vcpu.h"

/* Child exit codes for a failed expectation (the line is printed). */
#define CHILD_FAIL 90

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			dprintf(STDERR_FILENO, "child check failed at line %d: %s (%s)\n", \
				__LINE__, #cond, strerror(errno));                      \
			_exit(CHILD_FAIL);                                              \
		}                                                                       \
	} while (0)

struct child_result {
	int status;
	char err[1024];
};

/* Run fn in a forked child with stderr captured; fn returning means exit 0. */
static void run_child(void (*fn)(void *), void *arg, struct child_result *r)
{
	int pfd[2];
	size_t got = 0;
	ssize_t n;
	pid_t pid;

	memset(r, 0, sizeof(*r));
	assert_int_equal(pipe(pfd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit no_core = { 0, 0 };

		/* SIGSYS dumps core by default: not in the test directory. */
		setrlimit(RLIMIT_CORE, &no_core);
		close(pfd[0]);
		dup2(pfd[1], STDERR_FILENO);
		close(pfd[1]);
		fn(arg);
		_exit(0);
	}
	close(pfd[1]);
	while ((n = read(pfd[0], r->err + got, sizeof(r->err) - 1 - got)) > 0)
		got += (size_t)n;
	close(pfd[0]);
	assert_int_equal(waitpid(pid, &r->status, 0), pid);
}

static void expect_ok(void (*fn)(void *), void *arg)
{
	struct child_result r;

	run_child(fn, arg, &r);
	if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0)
		fail_msg("child status 0x%x, stderr: %s", r.status, r.err);
}

static void expect_violation(void (*fn)(void *), void *arg, long nr, const char *role)
{
	struct child_result r;
	char want[96];

	run_child(fn, arg, &r);
	if (!WIFSIGNALED(r.status) || WTERMSIG(r.status) != SIGSYS)
		fail_msg("expected death by SIGSYS for syscall %ld, got status 0x%x, stderr: %s",
			 nr, r.status, r.err);
	snprintf(want, sizeof(want), "kiln-vmm: seccomp violation: syscall %ld (%s thread)\n", nr,
		 role);
	if (!strstr(r.err, want))
		fail_msg("expected \"%s\" on stderr, got: %s", want, r.err);
}

static void apply(enum seccomp_role role)
{
	/* The waiter's peer: our parent stands in for the VMM it waits for. */
	int ret = role == SECCOMP_ROLE_WAITER ? seccomp_apply_waiter(getppid()) : seccomp_apply(role);

	if (ret) {
		errno = -ret;
		CHECK(ret == 0);
	}
}

/* ---- the filters themselves ---- */

static void test_export(void **state)
{
	(void)state;
	for (int role = 0; role < SECCOMP_ROLE_COUNT; role++) {
		char path[] = "/tmp/kiln-seccomp-XXXXXX";
		int fd = mkstemp(path);
		struct stat st;

		assert_true(fd >= 0);
		unlink(path);
		assert_int_equal(seccomp_role_export((enum seccomp_role)role, fd, false), 0);
		assert_int_equal(fstat(fd, &st), 0);
		/* Whole sock_filter instructions, well under BPF_MAXINSNS (4096). */
		assert_true(st.st_size > 0);
		assert_int_equal(st.st_size % 8, 0);
		assert_true(st.st_size / 8 < 512);
		assert_int_equal(ftruncate(fd, 0), 0);
		assert_int_equal(seccomp_role_export((enum seccomp_role)role, fd, true), 0);
		close(fd);
		assert_non_null(seccomp_role_name((enum seccomp_role)role));
	}
	assert_null(seccomp_role_name(SECCOMP_ROLE_COUNT));
	assert_int_equal(seccomp_apply(SECCOMP_ROLE_COUNT), -EINVAL);
	assert_int_equal(seccomp_role_export(SECCOMP_ROLE_COUNT, 1, false), -EINVAL);
}

/* ---- vCPU ---- */

static volatile sig_atomic_t kicked;

static void kick_handler(int sig)
{
	(void)sig;
	kicked = 1;
}

/* The VMM's signal set-up: the kick has a handler and is blocked but in vCPU threads. */
static void setup_kick(void)
{
	struct sigaction sa;
	sigset_t set;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler;
	sigemptyset(&sa.sa_mask);
	CHECK(sigaction(VCPU_KICK_SIGNAL, &sa, NULL) == 0);
	sigemptyset(&set);
	sigaddset(&set, VCPU_KICK_SIGNAL);
	CHECK(pthread_sigmask(SIG_BLOCK, &set, NULL) == 0);
}

struct vcpu_ctx {
	int null_fd, disk_fd, pipe_wr, efd;
	pthread_mutex_t gate;		/* held by the main thread until the kick */
	int ready;			/* atomic */
};

/* Spin until the main thread may go on (no sleeping syscall is allowed). */
static void wait_flag(int *flag)
{
	while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE))
		;
}

static void vcpu_calls(struct vcpu_ctx *c)
{
	char buf[4096], why[96];
	uint64_t one = 1;
	struct timespec ts;
	void *big, *small;

	/* The run loop: the filter lets KVM_RUN through, /dev/null refuses it. */
	errno = 0;
	CHECK(ioctl(c->null_fd, KVM_RUN, 0) < 0 && errno == ENOTTY);
	snprintf(why, sizeof(why), "KVM_RUN failed on vCPU %u: %s", 0u, strerror(errno));
	/* virtio-blk */
	memset(buf, 0xa5, sizeof(buf));
	CHECK(pwrite(c->disk_fd, buf, sizeof(buf), 4096) == (ssize_t)sizeof(buf));
	CHECK(pread(c->disk_fd, buf, sizeof(buf), 0) == (ssize_t)sizeof(buf));
	CHECK(fdatasync(c->disk_fd) == 0);
	/* virtio-rng */
	CHECK(getrandom(buf, 64, 0) == 64);
	/* UART console, irqfd / stop eventfd */
	CHECK(write(c->pipe_wr, "console\n", 8) == 8);
	CHECK(write(c->efd, &one, sizeof(one)) == (ssize_t)sizeof(one));
	CHECK(syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts) == 0);
	/* malloc in a thread: an arena of its own, then a large block. */
	small = malloc(100);
	big = malloc(1 << 20);
	CHECK(small && big);
	memset(big, 1, 1 << 20);
	free(big);
	free(small);
	fprintf(stderr, "kiln-vmm: boot-time-us=%u\n", 1u);
}

static void *vcpu_thread(void *arg)
{
	struct vcpu_ctx *c = arg;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, VCPU_KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	apply(SECCOMP_ROLE_VCPU);
	vcpu_calls(c);
	/* Sleep in a futex until kicked: the handler must be able to return. */
	__atomic_store_n(&c->ready, 1, __ATOMIC_RELEASE);
	pthread_mutex_lock(&c->gate);
	CHECK(kicked);
	pthread_mutex_unlock(&c->gate);
	return NULL;	/* glibc's thread exit runs under the filter too */
}

static void open_vcpu_fds(struct vcpu_ctx *c)
{
	char path[] = "/tmp/kiln-seccomp-XXXXXX";
	int p[2];

	c->null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	c->disk_fd = mkstemp(path);
	CHECK(c->null_fd >= 0 && c->disk_fd >= 0);
	unlink(path);
	CHECK(ftruncate(c->disk_fd, 1 << 16) == 0);
	CHECK(pipe(p) == 0);
	c->pipe_wr = p[1];
	c->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	CHECK(c->efd >= 0);
}

static void child_vcpu_ok(void *arg)
{
	struct vcpu_ctx c;
	pthread_t t;

	(void)arg;
	memset(&c, 0, sizeof(c));
	open_vcpu_fds(&c);
	pthread_mutex_init(&c.gate, NULL);
	setup_kick();
	pthread_mutex_lock(&c.gate);
	CHECK(pthread_create(&t, NULL, vcpu_thread, &c) == 0);
	wait_flag(&c.ready);
	/* Let the thread reach the futex; the kick interrupts either way. */
	usleep(20000);
	CHECK(pthread_kill(t, VCPU_KICK_SIGNAL) == 0);
	while (!kicked)
		;
	pthread_mutex_unlock(&c.gate);
	CHECK(pthread_join(t, NULL) == 0);
}

static void test_vcpu_allowed(void **state)
{
	(void)state;
	expect_ok(child_vcpu_ok, NULL);
}

/* Forbidden calls, one per child, on a thread holding the given role. */
enum bad_call {
	BAD_EXECVE,
	BAD_IOCTL_OTHER,	/* an ioctl the vCPU may not make (it may run and read registers) */
	BAD_IOCTL_ANY,
	BAD_SOCKET_INET,
	BAD_SOCKET_DGRAM,
	BAD_MPROTECT_EXEC,
	BAD_MMAP_EXEC,
	BAD_READ,
	BAD_PREAD,
	BAD_KILL_OTHER_SIGNAL,
	BAD_KILL,
	BAD_CLONE,
	BAD_THREAD,		/* pthread_create(): clone3 (rt_sigaction first) */
	BAD_RT_SIGACTION,	/* would let a thread take over the report */
};

struct bad_case {
	enum seccomp_role role;
	enum bad_call call;
	long nr;
};

static void *idle_thread(void *arg)
{
	(void)arg;
	return NULL;
}

static void make_bad_call(enum bad_call call)
{
	static char page[8192] __attribute__((aligned(4096)));
	static char true_path[] = "/bin/true";
	char *argv[] = { true_path, NULL };
	struct sigaction sa;
	pthread_t t;
	char b;

	switch (call) {
	case BAD_EXECVE:
		execve(argv[0], argv, environ);
		break;
	case BAD_IOCTL_OTHER:
		ioctl(STDIN_FILENO, KVM_SET_REGS, NULL);
		break;
	case BAD_IOCTL_ANY:
		ioctl(STDIN_FILENO, FIONREAD, &b);
		break;
	case BAD_SOCKET_INET:
		socket(AF_INET, SOCK_STREAM, 0);
		break;
	case BAD_SOCKET_DGRAM:
		socket(AF_UNIX, SOCK_DGRAM, 0);
		break;
	case BAD_MPROTECT_EXEC:
		mprotect(page, 4096, PROT_READ | PROT_EXEC);
		break;
	case BAD_MMAP_EXEC:
		mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		break;
	case BAD_READ:
		if (read(STDIN_FILENO, &b, 1) < 0)
			break;
		break;
	case BAD_PREAD:
		if (pread(STDIN_FILENO, &b, 1, 0) < 0)
			break;
		break;
	case BAD_KILL_OTHER_SIGNAL:
		pthread_kill(pthread_self(), SIGUSR2);
		break;
	case BAD_KILL:
		kill(getpid(), SIGUSR2);
		break;
	case BAD_CLONE:
		/* Raw: glibc's first pthread_create() also installs handlers. */
		syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL, 0);
		break;
	case BAD_THREAD:
		pthread_create(&t, NULL, idle_thread, NULL);
		break;
	case BAD_RT_SIGACTION:
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = SIG_IGN;
		sigaction(SIGSYS, &sa, NULL);
		break;
	}
}

static void child_bad(void *arg)
{
	const struct bad_case *bc = arg;
	sigset_t all;

	/* As the vsock thread runs: every signal blocked. SIGSYS must still report. */
	if (bc->role == SECCOMP_ROLE_VSOCK) {
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, NULL);
	}
	apply(bc->role);
	make_bad_call(bc->call);
	dprintf(STDERR_FILENO, "forbidden call %d returned\n", (int)bc->call);
	_exit(CHILD_FAIL);
}

static void run_bad_cases(const struct bad_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++)
		expect_violation(child_bad, (void *)&cases[i], cases[i].nr,
				 seccomp_role_name(cases[i].role));
}

static void test_vcpu_forbidden(void **state)
{
	static const struct bad_case cases[] = {
		{ SECCOMP_ROLE_VCPU, BAD_EXECVE, SYS_execve },
		{ SECCOMP_ROLE_VCPU, BAD_IOCTL_OTHER, SYS_ioctl },
		{ SECCOMP_ROLE_VCPU, BAD_IOCTL_ANY, SYS_ioctl },
		{ SECCOMP_ROLE_VCPU, BAD_SOCKET_INET, SYS_socket },
		{ SECCOMP_ROLE_VCPU, BAD_MPROTECT_EXEC, SYS_mprotect },
		{ SECCOMP_ROLE_VCPU, BAD_MMAP_EXEC, SYS_mmap },
		{ SECCOMP_ROLE_VCPU, BAD_READ, SYS_read },
		{ SECCOMP_ROLE_VCPU, BAD_KILL_OTHER_SIGNAL, SYS_tgkill },
		{ SECCOMP_ROLE_VCPU, BAD_KILL, SYS_kill },
		{ SECCOMP_ROLE_VCPU, BAD_CLONE, SYS_clone },
		{ SECCOMP_ROLE_VCPU, BAD_RT_SIGACTION, SYS_rt_sigaction },
	};

	(void)state;
	run_bad_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

/* ---- vsock ---- */

struct vsock_ctx {
	char path[108];
	int listen_fd, epfd, kickfd;
};

static void *vsock_thread(void *arg)
{
	struct vsock_ctx *c = arg;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 7 }, evs[4];
	static char connect_line[] = "CONNECT 5\n", ok_line[] = "OK 1\n";
	char buf[256], line[16];
	struct iovec iov;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	uint64_t one = 1;
	int cfd, afd, n;
	void *ring;

	apply(SECCOMP_ROLE_VSOCK);
	/* Guest-initiated connection: socket + connect to "<path>_<port>". */
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", c->path);
	cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	CHECK(cfd >= 0);
	CHECK(connect(cfd, (const struct sockaddr *)&sa, sizeof(sa)) == 0);
	/* Host-initiated: the listener becomes readable, accept4. */
	CHECK(epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->listen_fd, &ev) == 0);
	n = epoll_wait(c->epfd, evs, 4, 1000);
	CHECK(n == 1 && evs[0].data.u64 == 7);
	afd = accept4(c->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	CHECK(afd >= 0);
	CHECK(epoll_ctl(c->epfd, EPOLL_CTL_DEL, c->listen_fd, NULL) == 0);
	/* The CONNECT line: peek, then take it. */
	iov = (struct iovec){ .iov_base = connect_line, .iov_len = 10 };
	CHECK(sendmsg(cfd, &m, MSG_NOSIGNAL) == 10);
	CHECK(recv(afd, line, sizeof(line), MSG_PEEK) == 10);
	CHECK(recv(afd, line, 10, 0) == 10);
	/* Data both ways: sendmsg and readv. */
	iov = (struct iovec){ .iov_base = ok_line, .iov_len = 5 };
	CHECK(sendmsg(afd, &m, MSG_NOSIGNAL | MSG_DONTWAIT) == 5);
	iov = (struct iovec){ .iov_base = buf, .iov_len = sizeof(buf) };
	CHECK(readv(cfd, &iov, 1) == 5);
	CHECK(shutdown(afd, SHUT_WR) == 0);
	CHECK(readv(cfd, &iov, 1) == 0);
	/* The kick eventfd; an irqfd write. */
	CHECK(write(c->kickfd, &one, sizeof(one)) == (ssize_t)sizeof(one));
	CHECK(read(c->kickfd, &one, sizeof(one)) == (ssize_t)sizeof(one));
	CHECK(epoll_wait(c->epfd, evs, 4, 0) == 0);
	/* Connection rings come and go. */
	ring = malloc(256 << 10);
	CHECK(ring);
	memset(ring, 0, 256 << 10);
	free(ring);
	close(afd);
	close(cfd);
	return NULL;
}

static void child_vsock_ok(void *arg)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct vsock_ctx c;
	sigset_t all, old;
	pthread_t t;

	(void)arg;
	memset(&c, 0, sizeof(c));
	snprintf(c.path, sizeof(c.path), "/tmp/kiln-seccomp-%d.sock", (int)getpid());
	memcpy(sa.sun_path, c.path, sizeof(c.path));
	c.epfd = epoll_create1(EPOLL_CLOEXEC);
	c.kickfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	c.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	CHECK(c.epfd >= 0 && c.kickfd >= 0 && c.listen_fd >= 0);
	unlink(c.path);
	CHECK(bind(c.listen_fd, (const struct sockaddr *)&sa, sizeof(sa)) == 0);
	CHECK(listen(c.listen_fd, 4) == 0);
	/* As vsock_start(): the thread starts with every signal blocked. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	CHECK(pthread_create(&t, NULL, vsock_thread, &c) == 0);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	CHECK(pthread_join(t, NULL) == 0);
	unlink(c.path);
}

static void test_vsock_allowed(void **state)
{
	(void)state;
	expect_ok(child_vsock_ok, NULL);
}

static void test_vsock_forbidden(void **state)
{
	static const struct bad_case cases[] = {
		{ SECCOMP_ROLE_VSOCK, BAD_EXECVE, SYS_execve },
		{ SECCOMP_ROLE_VSOCK, BAD_SOCKET_INET, SYS_socket },
		{ SECCOMP_ROLE_VSOCK, BAD_SOCKET_DGRAM, SYS_socket },
		{ SECCOMP_ROLE_VSOCK, BAD_IOCTL_ANY, SYS_ioctl },
		{ SECCOMP_ROLE_VSOCK, BAD_IOCTL_OTHER, SYS_ioctl },
		{ SECCOMP_ROLE_VSOCK, BAD_PREAD, SYS_pread64 },
		{ SECCOMP_ROLE_VSOCK, BAD_MPROTECT_EXEC, SYS_mprotect },
		{ SECCOMP_ROLE_VSOCK, BAD_CLONE, SYS_clone },
		{ SECCOMP_ROLE_VSOCK, BAD_KILL_OTHER_SIGNAL, SYS_tgkill },
	};

	(void)state;
	run_bad_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

/* ---- main ---- */

struct main_ctx {
	int gate_ready;
	pthread_mutex_t gate;
};

static void *main_vcpu_thread(void *arg)
{
	struct main_ctx *c = arg;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, VCPU_KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	apply(SECCOMP_ROLE_VCPU);
	__atomic_store_n(&c->gate_ready, 1, __ATOMIC_RELEASE);
	pthread_mutex_lock(&c->gate);
	pthread_mutex_unlock(&c->gate);
	return NULL;
}

static void child_main_ok(void *arg)
{
	char path[] = "/tmp/kiln-seccomp-XXXXXX";
	struct main_ctx c;
	struct signalfd_siginfo si;
	struct pollfd pfd[3];
	struct stat st;
	sigset_t set;
	uint64_t one = 1, val;
	char msg[64];
	pthread_t t;
	void *map, *p;
	int sig_fd, stop_efd, tmp_fd;

	(void)arg;
	memset(&c, 0, sizeof(c));
	pthread_mutex_init(&c.gate, NULL);
	/* vmm_run(): signals, eventfd, threads, then the filter. */
	setup_kick();
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	CHECK(pthread_sigmask(SIG_BLOCK, &set, NULL) == 0);
	sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	tmp_fd = mkstemp(path);
	map = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	p = malloc(1 << 20);
	CHECK(sig_fd >= 0 && stop_efd >= 0 && tmp_fd >= 0 && map != MAP_FAILED && p);
	pthread_mutex_lock(&c.gate);
	CHECK(pthread_create(&t, NULL, main_vcpu_thread, &c) == 0);
	wait_flag(&c.gate_ready);

	/* A signal for the main loop, sent from outside in real life. */
	CHECK(kill(getpid(), SIGTERM) == 0);
	apply(SECCOMP_ROLE_MAIN);
	/* main_loop(): the signal, then a stop. */
	pfd[0] = (struct pollfd){ .fd = stop_efd, .events = POLLIN };
	pfd[1] = (struct pollfd){ .fd = sig_fd, .events = POLLIN };
	pfd[2] = (struct pollfd){ .fd = -1, .events = POLLIN };
	CHECK(poll(pfd, 3, 20) >= 0);
	if (pfd[1].revents & POLLIN) {
		CHECK(read(sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si));
		snprintf(msg, sizeof(msg), "stopped by %s", strsignal((int)si.ssi_signo));
	}
	CHECK(write(stop_efd, &one, sizeof(one)) == (ssize_t)sizeof(one));
	CHECK(poll(pfd, 2, -1) >= 1 && (pfd[0].revents & POLLIN));
	CHECK(read(stop_efd, &val, sizeof(val)) == (ssize_t)sizeof(val));
	/* Teardown: kick and join the vCPU, release everything. */
	CHECK(pthread_kill(t, VCPU_KICK_SIGNAL) == 0);
	pthread_mutex_unlock(&c.gate);
	CHECK(pthread_join(t, NULL) == 0);
	CHECK(munmap(map, 1 << 16) == 0);
	free(p);
	CHECK(lstat(path, &st) == 0 && S_ISREG(st.st_mode));
	CHECK(unlink(path) == 0);
	CHECK(close(tmp_fd) == 0 && close(sig_fd) == 0 && close(stop_efd) == 0);
	fprintf(stderr, "kiln-vmm: %s (exit %d)\n", "guest powered off", 0);
	fflush(stdout);
	exit(0); /* atexit handlers and stdio, as returning from main() */
}

static void test_main_allowed(void **state)
{
	(void)state;
	expect_ok(child_main_ok, NULL);
}

static void test_main_forbidden(void **state)
{
	static const struct bad_case cases[] = {
		{ SECCOMP_ROLE_MAIN, BAD_EXECVE, SYS_execve },
		{ SECCOMP_ROLE_MAIN, BAD_IOCTL_ANY, SYS_ioctl },
		{ SECCOMP_ROLE_MAIN, BAD_IOCTL_OTHER, SYS_ioctl },
		{ SECCOMP_ROLE_MAIN, BAD_SOCKET_INET, SYS_socket },
		{ SECCOMP_ROLE_MAIN, BAD_MMAP_EXEC, SYS_mmap },
		{ SECCOMP_ROLE_MAIN, BAD_CLONE, SYS_clone },
		{ SECCOMP_ROLE_MAIN, BAD_THREAD, SYS_rt_sigaction },
		{ SECCOMP_ROLE_MAIN, BAD_KILL_OTHER_SIGNAL, SYS_tgkill },
		{ SECCOMP_ROLE_MAIN, BAD_RT_SIGACTION, SYS_rt_sigaction },
	};

	(void)state;
	run_bad_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

/* ---- the jail's waiter ---- */

/* jail.c's waiter: signalfd + poll + read, wait4, kill of its child (the
 * VMM), then ending by the child's signal with SIG_DFL + raise. */
static void child_waiter_ok(void *arg)
{
	struct signalfd_siginfo si;
	struct pollfd pfd;
	sigset_t set;
	int status, sfd;
	pid_t kid;

	(void)arg;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	CHECK(sigprocmask(SIG_BLOCK, &set, NULL) == 0);
	sfd = signalfd(-1, &set, SFD_CLOEXEC);
	CHECK(sfd >= 0);
	kid = fork();
	CHECK(kid >= 0);
	if (kid == 0) {
		sigprocmask(SIG_UNBLOCK, &set, NULL);
		pause();
		_exit(0);
	}
	CHECK(seccomp_apply_waiter(kid) == 0);
	CHECK(kill(kid, SIGTERM) == 0);
	pfd = (struct pollfd){ .fd = sfd, .events = POLLIN };
	CHECK(poll(&pfd, 1, -1) == 1);
	CHECK(read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si) && si.ssi_signo == SIGCHLD);
	CHECK(waitpid(kid, &status, 0) == kid && WIFSIGNALED(status));
	close(sfd);
	/* Like waiter_exit(): die by the child's signal. */
	signal(SIGTERM, SIG_DFL);
	CHECK(sigprocmask(SIG_UNBLOCK, &set, NULL) == 0);
	raise(SIGTERM);
	_exit(3);
}

static void test_waiter_allowed(void **state)
{
	struct child_result r;

	(void)state;
	run_child(child_waiter_ok, NULL, &r);
	if (!WIFSIGNALED(r.status) || WTERMSIG(r.status) != SIGTERM)
		fail_msg("expected death by SIGTERM, got status 0x%x, stderr: %s", r.status, r.err);
	assert_int_equal(seccomp_apply_waiter(0), -EINVAL);
	assert_int_equal(seccomp_apply(SECCOMP_ROLE_WAITER), -EINVAL);
}

/* Any pid but its child: a hijacked waiter cannot signal other processes. */
static void child_waiter_kill_other(void *arg)
{
	pid_t other = getppid() == 1 ? 2 : 1;

	(void)arg;
	apply(SECCOMP_ROLE_WAITER);
	kill(other, 0);
	_exit(0);
}

static void child_waiter_exec(void *arg)
{
	(void)arg;
	apply(SECCOMP_ROLE_WAITER);
	execl("/bin/true", "true", (char *)NULL);
	_exit(0);
}

static void test_waiter_forbidden(void **state)
{
	(void)state;
	expect_violation(child_waiter_kill_other, NULL, SYS_kill, "waiter");
	expect_violation(child_waiter_exec, NULL, SYS_execve, "waiter");
}

/* ---- every role ---- */

static void child_open(void *arg)
{
	enum seccomp_role role = *(const enum seccomp_role *)arg;
	int fd;

	apply(role);
	errno = 0;
	fd = open("/etc/passwd", O_RDONLY | O_CLOEXEC);
	CHECK(fd < 0 && errno == EACCES);
	fd = openat(AT_FDCWD, "/tmp/kiln-seccomp-new", O_WRONLY | O_CREAT | O_EXCL, 0600);
	CHECK(fd < 0 && errno == EACCES);
	CHECK(fopen("/proc/self/status", "r") == NULL && errno == EACCES);
}

static void test_open_fails(void **state)
{
	(void)state;
	for (int role = 0; role < SECCOMP_ROLE_COUNT; role++)
		expect_ok(child_open, &role);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_export),
		cmocka_unit_test(test_vcpu_allowed),
		cmocka_unit_test(test_vcpu_forbidden),
		cmocka_unit_test(test_vsock_allowed),
		cmocka_unit_test(test_vsock_forbidden),
		cmocka_unit_test(test_main_allowed),
		cmocka_unit_test(test_main_forbidden),
		cmocka_unit_test(test_waiter_allowed),
		cmocka_unit_test(test_waiter_forbidden),
		cmocka_unit_test(test_open_fails),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
