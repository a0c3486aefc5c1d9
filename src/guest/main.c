/*
 * kiln-init: PID 1 of every kiln microVM and the agent serving the kiln
 * protocol on AF_VSOCK (docs/protocol.md).
 *
 *   kiln-init                     as PID 1 (the kernel runs it from the initramfs)
 *   kiln-init --listen-unix PATH  test mode: serve on a Unix socket, mount nothing
 *   kiln-init --listen-vsock PORT serve on vsock without the PID-1 set-up (debugging)
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "guest/agentd.h"
#include "guest/bootargs.h"
#include "guest/gnet.h"
#include "guest/pid1.h"

static struct agentd *the_agent;

static void on_signal(int sig)
{
	if (the_agent)
		agentd_stop(the_agent);
}

static int serve(const char *unix_path, uint32_t port)
{
	struct agentd_config cfg = { .pid1 = false, .debug = getenv("KILN_DEBUG") != NULL };
	struct sigaction sa;
	int ret;

	ret = agentd_create(&cfg, &the_agent);
	if (ret)
		goto out;
	ret = unix_path ? agentd_listen_unix(the_agent, unix_path)
			: agentd_listen_vsock(the_agent, port);
	if (ret)
		goto out;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	ret = agentd_run(the_agent);
	if (ret > 0)
		ret = 0;
out:
	if (ret)
		fprintf(stderr, "kiln-init: %s\n", strerror(-ret));
	agentd_free(the_agent);
	the_agent = NULL;
	return ret ? 1 : 0;
}

static __attribute__((noreturn)) void pid1_main(void)
{
	struct agentd_config cfg = { .pid1 = true };
	struct bootargs ba;
	struct agentd *d;
	int ret;

	ret = pid1_early();
	if (ret)
		pid1_fatal("early mounts: %s", strerror(-ret));
	pid1_bootargs(&ba);
	pid1_root(&ba);
	pid1_system(&ba);
	gnet_configure(&ba);
	cfg.debug = ba.debug;
	ret = agentd_create(&cfg, &d);
	if (!ret)
		ret = agentd_listen_vsock(d, ba.port);
	if (ret)
		pid1_fatal("vsock port %u: %s", ba.port, strerror(-ret));
	/* The boot timer stops when a client can connect. */
	pid1_bootmark(ba.bootmark);
	if (ba.debug)
		pid1_log("ready on vsock port %u", ba.port);
	ret = agentd_run(d);
	if (ret < 0)
		pid1_log("agent loop: %s", strerror(-ret));
	pid1_poweroff();
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--listen-unix"))
		return serve(argv[2], 0);
	if (argc == 3 && !strcmp(argv[1], "--listen-vsock")) {
		char *end;
		unsigned long port = strtoul(argv[2], &end, 0);

		if (*end || !argv[2][0] || port == 0 || port > 0xfffffffeul) {
			fprintf(stderr, "kiln-init: bad port %s\n", argv[2]);
			return 2;
		}
		return serve(NULL, (uint32_t)port);
	}
	if (argc != 1 || getpid() != 1) {
		fprintf(stderr, "usage: kiln-init (as PID 1) | --listen-unix PATH | "
				"--listen-vsock PORT\n");
		return 2;
	}
	pid1_main();
}
