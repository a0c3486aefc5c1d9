/*
 * CPUID normalisation: start from what KVM supports, keep the host's vendor,
 * describe N single-threaded cores in one package with APIC ID = vCPU index,
 * set the hypervisor bit, and hide VMX/SVM (no nested virtualisation in
 * sandboxes) and the PMU.
 */
#ifndef KILN_VMM_CPUID_H
#define KILN_VMM_CPUID_H

#include <linux/kvm.h>
#include <stdbool.h>

#define CPUID_MAX_ENTRIES 256

/* Rewrite c (a copy of KVM_GET_SUPPORTED_CPUID) for vCPU vcpu_id of ncpus. 0 or -E2BIG
 * when the topology leaves do not fit in c's capacity (max entries). */
int cpuid_normalize(struct kvm_cpuid2 *c, unsigned max, unsigned vcpu_id, unsigned ncpus,
		    bool tsc_deadline);

#endif
