/*
 * vCPUs: one thread each running KVM_RUN and dispatching port and MMIO exits.
 * A vCPU that meets a terminal exit (reset, shutdown, internal error) reports
 * it through env->stop(); the VMM then kicks every vCPU out of KVM_RUN.
 */
#ifndef KILN_VMM_VCPU_H
#define KILN_VMM_VCPU_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmm/io.h"
#include "vmm/kvm.h"

struct snap_buf;
struct snap_file;

#define VCPU_KICK_SIGNAL SIGUSR1
#define VCPU_MAX 32

struct vcpu_env {
	struct kvm_vm *vm;
	const struct io_bus *pio;
	const struct io_bus *mmio;
	void (*stop)(void *ctx, int status, const char *why);
	void *ctx;
	int stopping; /* set (atomically) once the VM is ending */
	bool seccomp; /* each vCPU thread filters itself before its first KVM_RUN */
	/* Pausing (vcpus_pause): a vCPU that sees pause_req parks on pause_cv;
	 * parked counts the parked vCPUs and those whose thread has ended. */
	pthread_mutex_t pause_mu;
	pthread_cond_t pause_cv;
	int pause_req;
	unsigned parked;
	/* For snapshots, found once at vcpu_create() of vCPU 0 (before the
	 * jail): KVM's MSR list and which state ioctls this host has. */
	uint32_t *msr_index;
	unsigned nmsr_index;
	uint32_t xsave_size;	/* KVM_GET_XSAVE2's size; 4096: KVM_GET_XSAVE; 0: KVM_GET_FPU */
	bool has_xcrs, has_debugregs, has_tsc_khz;
	/* Restoring (--restore): the checked state file; each vCPU thread sets
	 * its state from it before its filter and first KVM_RUN, then waits
	 * until restoring (vCPUs not done yet, under pause_mu) is 0. */
	const struct snap_file *restore;
	unsigned restoring;
	/* Called once (with ctx) by the vCPU thread that finished the last
	 * restore, before its filter: every LAPIC is set, so interrupts held
	 * back until then can be raised (one raised earlier would be wiped by
	 * KVM_SET_LAPIC). Optional. */
	void (*restored)(void *ctx);
};

/* The last exits of a vCPU, for the report of a triple fault. */
#define VCPU_EXIT_LOG 16

struct vcpu_exit_rec {
	uint64_t addr;	 /* port or guest-physical address */
	uint32_t reason; /* KVM_EXIT_* */
	uint8_t len;
	uint8_t write;
};

struct vcpu {
	unsigned id;
	uint64_t nexits;
	struct vcpu_exit_rec exits[VCPU_EXIT_LOG]; /* a ring: exits[nexits % VCPU_EXIT_LOG] is next */
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool started;
	struct vcpu_env *env;
	/* vcpus_save(): the buffer this vCPU's thread appends its sections to
	 * while parked (NULL: nothing asked), and the result. Under pause_mu. */
	struct snap_buf *save;
	bool saving;
	int save_ret;
};

/* The pause lock and condition of env (a monotonic clock for its waits). */
int vcpu_env_init(struct vcpu_env *env);
void vcpu_env_destroy(struct vcpu_env *env);
/* Create vCPU id of ncpus: CPUID, MSRs, FPU, local APIC. */
int vcpu_create(struct vcpu *v, struct vcpu_env *env, unsigned id, unsigned ncpus);
/* Boot processor state for the PVH entry: 32-bit flat protected mode, EBX = start_info. */
int vcpu_setup_pvh(struct vcpu *v, uint32_t entry, uint32_t start_info);
int vcpu_start(struct vcpu *v);
/* Make the vCPU leave KVM_RUN (callable from any thread). */
void vcpu_kick(struct vcpu *v);
/* Park the n started vCPUs of vs outside KVM_RUN: 0 once all are parked
 * (the guest's clock is told it was stopped), -ETIMEDOUT (and running again)
 * if they are not within timeout_ms, -ESHUTDOWN if the VM is ending. */
int vcpus_pause(struct vcpu *vs, unsigned n, int timeout_ms);
/* While paused (vcpus_pause): each of the n vCPUs appends its sections
 * (regs ... vcpu-events, src/vmm/snapfile.h) to bufs[i] from its own thread.
 * 0, -ESHUTDOWN if the VM is ending, or the first vCPU's -errno. */
int vcpus_save(struct vcpu *vs, unsigned n, struct snap_buf *bufs);
/* Let parked vCPUs run again (also what a stopping VM calls to free them). */
void vcpus_resume(struct vcpu_env *env);
/* Join the thread (if started) and release the vCPU. */
void vcpu_destroy(struct vcpu *v);

#endif
