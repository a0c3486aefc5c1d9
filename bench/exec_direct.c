/*
 * bench/api's baseline: `echo hi` run N times in one sandbox straight through
 * libkiln, each on a fresh agent connection as kilnd does per request. Prints
 * one JSON line: {"create_ms":X,"exec_ms":[...]}.
 *   kiln-exec-direct VMM KERNEL INITRD IMAGE N
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/agent.h"
#include "lib/sandbox.h"
#include "util.h"

struct out {
	size_t bytes;
	bool exited;
	int code;
};

static int on_output(void *ctx, uint32_t id, int stream, const void *buf, size_t len)
{
	((struct out *)ctx)->bytes += len;
	return 0;
}

static void on_exit_ev(void *ctx, uint32_t id, const struct kiln_exit *e)
{
	struct out *o = ctx;

	o->exited = true;
	o->code = e->signal ? 128 + e->signal : e->code;
}

int main(int argc, char **argv)
{
	static const struct kiln_exec_ops ops = { .output = on_output, .exit = on_exit_ev };
	static const char *const cmd[] = { "echo", "hi", NULL };
	struct kiln_sandbox_config c = { 0 };
	struct kiln_sandbox *s = NULL;
	char err[512];
	uint64_t t0;
	long n;
	int ret = 1;

	if (argc != 6 || (n = strtol(argv[5], NULL, 10)) < 1 || n > 100000) {
		fprintf(stderr, "usage: kiln-exec-direct VMM KERNEL INITRD IMAGE N\n");
		return 2;
	}
	c.vmm = argv[1];
	c.kernel = argv[2];
	c.initrd = argv[3];
	c.image = argv[4];
	c.cpus = 1;
	c.mem_mib = 128;
	c.boot_timeout_ms = 120000;
	c.cancel_fd = -1;
	/* Per exec no cgroup is involved; this process is no daemon with a
	 * delegated subtree, so the VM runs without one. */
	c.no_cgroup = true;
	t0 = now_ns();
	if (kiln_sandbox_create(&s, &c, err, sizeof(err))) {
		fprintf(stderr, "kiln-exec-direct: %s\n", err);
		return 1;
	}
	printf("{\"create_ms\":%.3f,\"exec_ms\":[", (now_ns() - t0) / 1e6);
	for (long i = 0; i < n; i++) {
		struct kiln_exec_spec spec = { .argv = cmd, .cwd = "/root", .uid = 0, .gid = 0 };
		struct out o = { 0 };
		struct kiln_agent *a = NULL;
		uint32_t id;
		int r;

		t0 = now_ns();
		r = kiln_sandbox_connect(s, 30000, -1, &a);
		if (!r)
			r = kiln_agent_exec(a, &spec, &ops, &o, &id);
		if (!r)
			r = kiln_agent_wait(a, id);
		kiln_agent_free(a);
		if (r || !o.exited || o.code || o.bytes != 3) {
			fprintf(stderr, "kiln-exec-direct: exec %ld failed: %s\n", i, strerror(r < 0 ? -r : EIO));
			goto out;
		}
		printf("%s%.3f", i ? "," : "", (now_ns() - t0) / 1e6);
	}
	printf("]}\n");
	ret = 0;
out:
	kiln_sandbox_destroy(s);
	return ret;
}
