#include "vmm/kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "vmm/cpuid.h"

#define TSS_ADDR 0xfffbd000ULL
#define IDENTITY_MAP_ADDR 0xfffbc000ULL

static int check_caps(int kvm_fd, const char **why)
{
	static const struct {
		int cap;
		const char *name;
	} need[] = {
		{ KVM_CAP_IRQCHIP, "in-kernel irqchip" },
		{ KVM_CAP_PIT2, "in-kernel PIT" },
		{ KVM_CAP_IRQFD, "irqfd" },
		{ KVM_CAP_USER_MEMORY, "user memory" },
		{ KVM_CAP_SET_TSS_ADDR, "TSS address" },
		{ KVM_CAP_EXT_CPUID, "CPUID" },
		{ KVM_CAP_IMMEDIATE_EXIT, "immediate exit" },
	};

	for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
		if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, need[i].cap) <= 0) {
			*why = need[i].name;
			return -ENOTSUP;
		}
	}
	return 0;
}

static int get_supported_cpuid(struct kvm_vm *vm)
{
	struct kvm_cpuid2 *c;

	c = calloc(1, sizeof(*c) + CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2));
	if (!c)
		return -ENOMEM;
	c->nent = CPUID_MAX_ENTRIES;
	if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) < 0) {
		int err = -errno;

		free(c);
		return err;
	}
	vm->supported_cpuid = c;
	return 0;
}

int kvm_vm_create(struct kvm_vm **out, uint64_t mem_size, int mem_fd, const char **why)
{
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	struct kvm_vm *vm;
	const char *cap = NULL;
	int ret = -ENOMEM;

	*out = NULL;
	*why = "out of memory";
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		goto out;
	vm->kvm_fd = vm->vm_fd = -1;
	for (unsigned i = 0; i < KVM_MAX_IRQFDS; i++)
		vm->irqfd[i] = -1;

	*why = "cannot open /dev/kvm";
	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		ret = -errno;
		goto out;
	}
	*why = "unsupported KVM API version";
	ret = -ENOTSUP;
	if (ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
		goto out;
	ret = check_caps(vm->kvm_fd, &cap);
	if (ret) {
		*why = cap;
		goto out;
	}
	vm->tsc_deadline = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0;
	vm->run_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	*why = "KVM_GET_VCPU_MMAP_SIZE failed";
	if (vm->run_size <= 0)
		goto out;
	*why = "KVM_GET_SUPPORTED_CPUID failed";
	ret = get_supported_cpuid(vm);
	if (ret)
		goto out;

	*why = "KVM_CREATE_VM failed";
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0) {
		ret = -errno;
		goto out;
	}
	/* No PMU for sandboxes (KVM 5.18+; older hosts hide it through CPUID only). */
	if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_PMU_CAPABILITY) > 0) {
		struct kvm_enable_cap ec = { .cap = KVM_CAP_PMU_CAPABILITY };

		ec.args[0] = KVM_PMU_CAP_DISABLE;
		ioctl(vm->vm_fd, KVM_ENABLE_CAP, &ec);
	}
	*why = "KVM_SET_TSS_ADDR failed";
	if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, TSS_ADDR) < 0)
		goto errno_out;
	{
		uint64_t idmap = IDENTITY_MAP_ADDR;

		*why = "KVM_SET_IDENTITY_MAP_ADDR failed";
		if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
			goto errno_out;
	}
	*why = "KVM_CREATE_IRQCHIP failed";
	if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		goto errno_out;
	*why = "KVM_CREATE_PIT2 failed";
	if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		goto errno_out;

	*why = "cannot allocate guest memory";
	ret = guest_mem_create_file(&vm->mem, mem_size, mem_fd);
	if (ret)
		goto out;
	for (unsigned i = 0; i < guest_mem_nregions(vm->mem); i++) {
		const struct mem_region *r = guest_mem_region(vm->mem, i);
		struct kvm_userspace_memory_region slot = {
			.slot = i,
			.guest_phys_addr = r->gpa,
			.memory_size = r->size,
			.userspace_addr = (uintptr_t)r->host,
		};

		*why = "KVM_SET_USER_MEMORY_REGION failed";
		if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
			goto errno_out;
	}
	*out = vm;
	vm = NULL;
	*why = NULL;
	ret = 0;
	goto out;
errno_out:
	ret = -errno;
out:
	kvm_vm_free(vm);
	return ret;
}

void kvm_vm_free(struct kvm_vm *vm)
{
	if (!vm)
		return;
	for (unsigned i = 0; i < KVM_MAX_IRQFDS; i++)
		if (vm->irqfd[i] >= 0)
			close(vm->irqfd[i]);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	guest_mem_free(vm->mem);
	free(vm->supported_cpuid);
	free(vm);
}

int kvm_vm_irqfd(struct kvm_vm *vm, unsigned gsi)
{
	struct kvm_irqfd req;
	int fd;

	if (gsi >= KVM_MAX_IRQFDS)
		return -EINVAL;
	if (vm->irqfd[gsi] >= 0)
		return 0;
	fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fd < 0)
		return -errno;
	memset(&req, 0, sizeof(req));
	req.fd = (uint32_t)fd;
	req.gsi = gsi;
	if (ioctl(vm->vm_fd, KVM_IRQFD, &req) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	vm->irqfd[gsi] = fd;
	return 0;
}

void kvm_vm_irq_pulse(struct kvm_vm *vm, unsigned gsi)
{
	uint64_t one = 1;

	if (gsi < KVM_MAX_IRQFDS && vm->irqfd[gsi] >= 0) {
		/* EAGAIN means the counter is saturated: an interrupt is pending anyway. */
		if (write(vm->irqfd[gsi], &one, sizeof(one)) < 0) {
		}
	}
}
