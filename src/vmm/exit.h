/* Exit statuses of kiln-vmm (documented in docs/vmm.md). */
#ifndef KILN_VMM_EXIT_H
#define KILN_VMM_EXIT_H

enum vmm_exit {
	VMM_EXIT_RESET = 0,        /* guest reset itself (reboot): the normal end */
	VMM_EXIT_ERROR = 1,        /* host-side failure while running */
	VMM_EXIT_USAGE = 2,        /* bad input: nothing ran */
	VMM_EXIT_POWEROFF = 3,     /* guest powered off (ACPI S5) */
	VMM_EXIT_TRIPLE_FAULT = 4, /* triple fault / shutdown */
	VMM_EXIT_PANIC = 5,        /* guest kernel panic (pvpanic) */
	VMM_EXIT_KVM_ERROR = 6,    /* KVM internal error or failed entry */
	VMM_EXIT_SIGNAL_BASE = 128 /* + signal number: stopped by SIGINT/SIGTERM/SIGHUP */
};

#endif
