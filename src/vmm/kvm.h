/*
 * The KVM VM: /dev/kvm, the VM fd with in-kernel irqchip and PIT, guest RAM
 * registered as memory slots, interrupt lines as irqfds.
 */
#ifndef KILN_VMM_KVM_H
#define KILN_VMM_KVM_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmm/memory.h"

#define KVM_MAX_IRQFDS 24

struct kvm_vm {
	int kvm_fd;
	int vm_fd;
	int run_size;
	bool tsc_deadline;
	struct guest_mem *mem;
	struct kvm_cpuid2 *supported_cpuid; /* KVM_GET_SUPPORTED_CPUID */
	int irqfd[KVM_MAX_IRQFDS];          /* eventfd per GSI, -1 if unused */
};

/* Open /dev/kvm, create the VM and its RAM (mem_fd >= 0: mapped privately
 * from that snapshot memory file). On error sets *why. */
int kvm_vm_create(struct kvm_vm **out, uint64_t mem_size, int mem_fd, const char **why);
void kvm_vm_free(struct kvm_vm *vm);

/* Route an eventfd to GSI gsi (< KVM_MAX_IRQFDS). 0 or -errno. */
int kvm_vm_irqfd(struct kvm_vm *vm, unsigned gsi);
/* Pulse GSI gsi (edge); safe from any thread. */
void kvm_vm_irq_pulse(struct kvm_vm *vm, unsigned gsi);

#endif
