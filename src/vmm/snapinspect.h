/* kiln-vmm --inspect-snapshot FILE: check a state file, list what it holds. */
#ifndef KILN_VMM_SNAPINSPECT_H
#define KILN_VMM_SNAPINSPECT_H

/* Header and one line per section on stdout: 0; any defect: one line on
 * stderr and VMM_EXIT_USAGE (2). No KVM, no jail. */
int snapshot_inspect(const char *path);

#endif
