/*
 * bench/stress-guest: the guest half of bench/stress, static, run by
 * bench/stress-init inside the microVM. The same binary runs under kiln-vmm
 * and under QEMU; every step checks its own data, so a corrupted byte is a
 * failure, not just a death. Steps (arguments, in this order):
 *   cpuid   leaves 0, 1, 7, 0xd (every XSAVE component), 0x8000_0001/8, and XCR0
 *   cpu     a floating-point child that runs through every other step and
 *           checks its result each round (FPU/SSE state across switches)
 *   disk    4 MiB onto /dev/vda in 64 KiB writes, fsync after each, read back
 *           with O_DIRECT and compared
 *   net     NCONN TCP connections to 10.0.2.2:7000, 4 KiB echoed on each
 *   vsock   one stream to host CID 2 port 7001, 4 MiB echoed in 64 KiB blocks
 * Prints "KILN-STRESS <step> ok|FAIL ..." lines and exits 0 only if all passed.
 */
#include <arpa/inet.h>
#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DISK_CHUNK (64 * 1024)
#define DISK_CHUNKS 64
#define NCONN 100
#define NET_BYTES 4096
#define VS_BLOCK (64 * 1024)
#define VS_BLOCKS 64

static void fill(unsigned char *b, size_t n, uint32_t seed)
{
	uint32_t x = seed * 2654435761u + 1;

	for (size_t i = 0; i < n; i++) {
		x = x * 1103515245u + 12345u;
		b[i] = (unsigned char)(x >> 16);
	}
}

static int full_write(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int full_read(int fd, void *buf, size_t n)
{
	char *p = buf;

	while (n) {
		ssize_t r = read(fd, p, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static void step_cpuid(void)
{
	static const unsigned leaves[][2] = {
		{ 0, 0 }, { 1, 0 }, { 7, 0 }, { 7, 1 }, { 0xd, 0 }, { 0xd, 1 },
		{ 0x80000001, 0 }, { 0x80000007, 0 }, { 0x80000008, 0 },
	};
	unsigned a, b, c, d, max0;
	uint32_t lo, hi;

	__cpuid_count(0, 0, max0, b, c, d);
	for (size_t i = 0; i < sizeof(leaves) / sizeof(leaves[0]); i++) {
		__cpuid_count(leaves[i][0], leaves[i][1], a, b, c, d);
		printf("KILN-CPUID %#x.%u %08x %08x %08x %08x\n", leaves[i][0], leaves[i][1], a, b,
		       c, d);
	}
	/* Each XSAVE component the CPU reports: size and offset. */
	if (max0 >= 0xd) {
		unsigned mask_lo, mask_hi;

		__cpuid_count(0xd, 0, mask_lo, b, c, mask_hi);
		for (unsigned k = 2; k < 32; k++)
			if (mask_lo & (1u << k)) {
				__cpuid_count(0xd, k, a, b, c, d);
				printf("KILN-CPUID 0xd.%u %08x %08x %08x %08x\n", k, a, b, c, d);
			}
		(void)mask_hi;
	}
	__cpuid(1, a, b, c, d);
	if (c & (1u << 27)) {	/* OSXSAVE */
		__asm__ __volatile__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
		printf("KILN-XCR0 %08x%08x\n", hi, lo);
	}
	printf("KILN-STRESS cpuid ok\n");
}

/* A deterministic floating-point result; the child compares rounds. */
static double fp_round(void)
{
	volatile double acc = 0.0;

	for (int i = 1; i < 200000; i++) {
		double x = (double)i;

		acc += 1.0 / (x * x) + (x / (x + 1.0)) * 1e-9;
	}
	return acc;
}

/* Child: rounds until SIGTERM; exit 0 if every round matched the first. */
static pid_t start_cpu(void)
{
	pid_t pid = fork();

	if (pid == 0) {
		double first = fp_round();
		unsigned long rounds = 1;

		signal(SIGTERM, SIG_DFL);
		for (;;) {
			double r = fp_round();

			rounds++;
			if (r != first) {
				printf("KILN-STRESS cpu FAIL round %lu: %.17g != %.17g\n", rounds, r,
				       first);
				fflush(stdout);
				_exit(1);
			}
		}
	}
	return pid;
}

static int step_cpu_end(pid_t pid)
{
	int st;

	if (pid < 0) {
		printf("KILN-STRESS cpu FAIL fork: %s\n", strerror(errno));
		return -1;
	}
	kill(pid, SIGTERM);
	if (waitpid(pid, &st, 0) != pid || !WIFSIGNALED(st) || WTERMSIG(st) != SIGTERM) {
		printf("KILN-STRESS cpu FAIL child status %#x\n", st);
		return -1;
	}
	printf("KILN-STRESS cpu ok\n");
	return 0;
}

static int step_disk(void)
{
	unsigned char *buf = NULL, *back = NULL;
	int fd = -1, dfd = -1, ret = -1;
	uint32_t seed = (uint32_t)getpid() ^ (uint32_t)time(NULL);

	if (posix_memalign((void **)&buf, 4096, DISK_CHUNK) ||
	    posix_memalign((void **)&back, 4096, DISK_CHUNK))
		goto out;
	fd = open("/dev/vda", O_WRONLY);
	if (fd < 0) {
		printf("KILN-STRESS disk FAIL open /dev/vda: %s\n", strerror(errno));
		goto out;
	}
	for (unsigned i = 0; i < DISK_CHUNKS; i++) {
		fill(buf, DISK_CHUNK, seed + i);
		if (full_write(fd, buf, DISK_CHUNK) || fsync(fd)) {
			printf("KILN-STRESS disk FAIL write/fsync chunk %u: %s\n", i, strerror(errno));
			goto out;
		}
	}
	dfd = open("/dev/vda", O_RDONLY | O_DIRECT);
	if (dfd < 0) {
		printf("KILN-STRESS disk FAIL open O_DIRECT: %s\n", strerror(errno));
		goto out;
	}
	for (unsigned i = 0; i < DISK_CHUNKS; i++) {
		fill(buf, DISK_CHUNK, seed + i);
		if (full_read(dfd, back, DISK_CHUNK)) {
			printf("KILN-STRESS disk FAIL read chunk %u: %s\n", i, strerror(errno));
			goto out;
		}
		if (memcmp(buf, back, DISK_CHUNK)) {
			printf("KILN-STRESS disk FAIL chunk %u reads back different\n", i);
			goto out;
		}
	}
	printf("KILN-STRESS disk ok %u KiB written, fsynced, read back\n",
	       DISK_CHUNKS * DISK_CHUNK / 1024);
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
	free(buf);
	free(back);
	return ret;
}

static int step_net(void)
{
	unsigned char out[NET_BYTES], in[NET_BYTES];
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(7000) };
	int i, fd = -1;

	inet_pton(AF_INET, "10.0.2.2", &a.sin_addr);
	for (i = 0; i < NCONN; i++) {
		fill(out, sizeof(out), (uint32_t)i);
		fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a))) {
			printf("KILN-STRESS net FAIL connect %d: %s\n", i, strerror(errno));
			break;
		}
		if (full_write(fd, out, sizeof(out)) || full_read(fd, in, sizeof(in))) {
			printf("KILN-STRESS net FAIL echo %d: %s\n", i, strerror(errno));
			break;
		}
		if (memcmp(out, in, sizeof(in))) {
			printf("KILN-STRESS net FAIL connection %d echoed different bytes\n", i);
			break;
		}
		close(fd);
		fd = -1;
	}
	if (fd >= 0)
		close(fd);
	if (i < NCONN)
		return -1;
	printf("KILN-STRESS net ok %d connections\n", NCONN);
	return 0;
}

static int step_vsock(void)
{
	static unsigned char out[VS_BLOCK], in[VS_BLOCK];
	struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = 2, .svm_port = 7001 };
	int i, fd;

	fd = socket(AF_VSOCK, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		printf("KILN-STRESS vsock FAIL connect: %s\n", strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	for (i = 0; i < VS_BLOCKS; i++) {
		fill(out, sizeof(out), 1000u + (uint32_t)i);
		if (full_write(fd, out, sizeof(out)) || full_read(fd, in, sizeof(in))) {
			printf("KILN-STRESS vsock FAIL block %d: %s\n", i, strerror(errno));
			break;
		}
		if (memcmp(out, in, sizeof(in))) {
			printf("KILN-STRESS vsock FAIL block %d echoed different bytes\n", i);
			break;
		}
	}
	close(fd);
	if (i < VS_BLOCKS)
		return -1;
	printf("KILN-STRESS vsock ok %d KiB echoed\n", VS_BLOCKS * VS_BLOCK / 1024);
	return 0;
}

int main(int argc, char **argv)
{
	pid_t cpu = 0;
	int fails = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "cpu") == 0)
			cpu = start_cpu();
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "cpuid") == 0)
			step_cpuid();
		else if (strcmp(argv[i], "disk") == 0)
			fails += step_disk() != 0;
		else if (strcmp(argv[i], "net") == 0)
			fails += step_net() != 0;
		else if (strcmp(argv[i], "vsock") == 0)
			fails += step_vsock() != 0;
		else if (strcmp(argv[i], "cpu") != 0) {
			printf("KILN-STRESS FAIL unknown step %s\n", argv[i]);
			fails++;
		}
	}
	if (cpu)
		fails += step_cpu_end(cpu) != 0;
	printf(fails ? "KILN-STRESS-FAIL %d step(s)\n" : "KILN-STRESS-OK\n", fails);
	return fails ? 1 : 0;
}
