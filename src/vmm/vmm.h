/* One microVM from configuration to exit status. */
#ifndef KILN_VMM_VMM_H
#define KILN_VMM_VMM_H

#include <stddef.h>

#include "vmm/config.h"

/* Boot the VM described by cfg and run it to its end. Returns the process exit
 * status (enum vmm_exit) and writes a one-line reason into why. */
int vmm_run(const struct vmm_config *cfg, char *why, size_t whylen);

#endif
