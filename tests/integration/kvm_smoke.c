/*
 * KVM smoke test: create a VM and one vCPU with nothing of kiln's VMM, run a
 * few real-mode instructions that compute a value and write it to an I/O
 * port, and check what KVM reports. Then the contract kiln-vmm's pause relies
 * on (src/vmm/vcpu.c, complete_pending_io): after an IN exit the guest's
 * registers still show the IN unfinished, and KVM_RUN with immediate_exit set
 * finishes it (AL written, RIP past it) and returns EINTR without running the
 * next instruction. Prints TAP lines.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

static int ntest;
static int nfail;

static void report(int ok, const char *what)
{
	ntest++;
	if (!ok)
		nfail++;
	printf("%sok %d - kvm_smoke: %s\n", ok ? "" : "not ", ntest, what);
}

int main(void)
{
	/* Real mode at 0x1000: computes 2 + 0x40 and writes it to port 0x10. */
	static const uint8_t code[] = {
		0xb8, 0x02, 0x00,       /* mov ax, 2 */
		0x05, 0x40, 0x00,       /* add ax, 0x40 */
		0xba, 0x10, 0x00,       /* mov dx, 0x10 */
		0xee,                   /* out dx, al */
		0xe4, 0x11,             /* in al, 0x11   (at 0x100a) */
		0xe6, 0x12,             /* out 0x12, al  (at 0x100c) */
		0xf4,                   /* hlt */
	};
	const size_t mem_size = 0x1000;
	struct kvm_userspace_memory_region region;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_run *run = MAP_FAILED;
	uint8_t *mem = MAP_FAILED;
	int kvm = -1, vm = -1, vcpu = -1;
	long run_size = 0;
	int got_io = 0, got_hlt = 0, in_pending = 0, in_done = 0, echoed = 0;
	uint8_t value = 0;

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	report(kvm >= 0, "open /dev/kvm");
	if (kvm < 0)
		goto out;
	report(ioctl(kvm, KVM_GET_API_VERSION, 0) == KVM_API_VERSION, "KVM_GET_API_VERSION is 12");
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	report(vm >= 0, "KVM_CREATE_VM");
	if (vm < 0)
		goto out;

	mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		goto out;
	memcpy(mem, code, sizeof(code));
	memset(&region, 0, sizeof(region));
	region.guest_phys_addr = 0x1000;
	region.memory_size = mem_size;
	region.userspace_addr = (uintptr_t)mem;
	report(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) == 0, "KVM_SET_USER_MEMORY_REGION");

	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	report(vcpu >= 0, "KVM_CREATE_VCPU");
	if (vcpu < 0)
		goto out;
	run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size <= 0)
		goto out;
	run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		goto out;

	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		goto out;
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		goto out;
	memset(&regs, 0, sizeof(regs));
	regs.rip = 0x1000;
	regs.rflags = 0x2;
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		goto out;

	for (int i = 0; i < 16 && !got_hlt; i++) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == 0x10 &&
			    run->io.size == 1 && run->io.count == 1) {
				value = *((uint8_t *)run + run->io.data_offset);
				got_io = 1;
			}
			if (run->io.direction == KVM_EXIT_IO_IN && run->io.port == 0x11 &&
			    run->io.size == 1 && run->io.count == 1) {
				*((uint8_t *)run + run->io.data_offset) = 0x5a;
				in_pending = !ioctl(vcpu, KVM_GET_REGS, &regs) && regs.rip == 0x100a &&
					     (regs.rax & 0xff) == 0x42;
				run->immediate_exit = 1;
				in_done = ioctl(vcpu, KVM_RUN, 0) < 0 && errno == EINTR &&
					  !ioctl(vcpu, KVM_GET_REGS, &regs) && regs.rip == 0x100c &&
					  (regs.rax & 0xff) == 0x5a;
				run->immediate_exit = 0;
			}
			if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == 0x12 &&
			    run->io.size == 1 && run->io.count == 1)
				echoed = *((uint8_t *)run + run->io.data_offset) == 0x5a;
			break;
		case KVM_EXIT_HLT:
			got_hlt = 1;
			break;
		default:
			fprintf(stderr, "kvm_smoke: unexpected exit reason %u\n", run->exit_reason);
			i = 16;
			break;
		}
	}
out:
	report(got_io && value == 0x42, "guest wrote 0x42 to port 0x10");
	report(in_pending, "after an IN exit the guest's registers show it unfinished (RIP at it, AL old)");
	report(in_done, "KVM_RUN with immediate_exit finishes it (AL = 0x5a, RIP past it) and returns EINTR");
	report(echoed, "the guest runs on from there: it writes what it read (0x5a) to port 0x12");
	report(got_hlt, "guest halted");
	if (run != MAP_FAILED)
		munmap(run, (size_t)run_size);
	if (mem != MAP_FAILED)
		munmap(mem, mem_size);
	if (vcpu >= 0)
		close(vcpu);
	if (vm >= 0)
		close(vm);
	if (kvm >= 0)
		close(kvm);
	return nfail ? 1 : 0;
}
