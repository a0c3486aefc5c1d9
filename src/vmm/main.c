/* kiln-vmm: one process per microVM. See docs/vmm.md. */
#include <stdio.h>
#include <string.h>
#include <sys/sysinfo.h>

#include "vmm/config.h"
#include "vmm/exit.h"
#include "vmm/jail.h"
#include "vmm/snapinspect.h"
#include "vmm/virtio/queue.h"
#include "vmm/vmm.h"

/*
 * --check-writes (diagnosis, docs/stress.md): every virtio device's stores into
 * guest memory are checked against the chain it was handed; a violation ends
 * the VM with exit 7. Taken out of argv here, before the common parser.
 */
static int take_check_writes(int argc, char **argv)
{
	int n = 1;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--check-writes") == 0)
			virtq_check_enable();
		else
			argv[n++] = argv[i];
	}
	argv[n] = NULL;
	return n;
}

int main(int argc, char **argv)
{
	static struct vmm_config cfg;
	struct sysinfo si;
	uint64_t host_mib = 0;
	char msg[512];
	bool help = false;
	int status;

	/* A state file check, apart from any VM: no KVM, no jail. */
	if (argc >= 2 && strcmp(argv[1], "--inspect-snapshot") == 0) {
		if (argc != 3) {
			fprintf(stderr, "kiln-vmm: usage: kiln-vmm --inspect-snapshot FILE\n");
			return VMM_EXIT_USAGE;
		}
		return snapshot_inspect(argv[2]);
	}
	config_defaults(&cfg);
	argc = take_check_writes(argc, argv);
	if (config_parse_args(&cfg, argc - 1, argv + 1, &help, msg, sizeof(msg))) {
		fprintf(stderr, "kiln-vmm: %s\n", msg);
		return VMM_EXIT_USAGE;
	}
	if (help) {
		fputs(config_usage, stdout);
		fputs("--check-writes: check every virtio store into guest memory (exit 7 on a "
		      "violation); for diagnosis\n", stdout);
		fputs("--inspect-snapshot FILE: check a snapshot state file and list its sections "
		      "(exit 2 on any defect)\n", stdout);
		return 0;
	}
	if (sysinfo(&si) == 0)
		host_mib = ((uint64_t)si.totalram * si.mem_unit) >> 20;
	if (config_validate(&cfg, host_mib, msg, sizeof(msg))) {
		fprintf(stderr, "kiln-vmm: %s\n", msg);
		return VMM_EXIT_USAGE;
	}
	if (cfg.no_jail)
		fprintf(stderr, "kiln-vmm: warning: --no-jail: the VMM runs unjailed, for diagnosis only\n");
	if (virtq_check_enabled())
		fprintf(stderr, "kiln-vmm: warning: --check-writes: virtio stores are checked, for diagnosis only\n");
	if (cfg.no_seccomp)
		fprintf(stderr, "kiln-vmm: warning: --no-seccomp: the VMM runs unfiltered, for diagnosis only\n");
	/* Stage 1 of the jail; the parent stays behind as the waiter. */
	if (!cfg.no_jail && jail_begin(&cfg, msg, sizeof(msg))) {
		fprintf(stderr, "kiln-vmm: %s (exit %d)\n", msg, VMM_EXIT_ERROR);
		return VMM_EXIT_ERROR;
	}
	status = vmm_run(&cfg, msg, sizeof(msg));
	fflush(stdout);
	fprintf(stderr, "kiln-vmm: %s (exit %d)\n", msg, status);
	return status;
}
