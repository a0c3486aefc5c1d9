#include "vmm/vcpu.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "vmm/cpuid.h"
#include "vmm/exit.h"
#include "vmm/seccomp.h"
#include "vmm/snapfile.h"

#define MSR_IA32_TSC 0x10
#define MSR_IA32_SYSENTER_CS 0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_IA32_MISC_ENABLE 0x1a0
#define MSR_MTRR_DEF_TYPE 0x2ff
#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_SYSCALL_MASK 0xc0000084
#define MSR_KERNEL_GS_BASE 0xc0000102

#define PENDING_IO_PARTS 4 /* KVM_RUNs to finish one pending access before a pause */

#define APIC_LVT0 0x350
#define APIC_LVT1 0x360
#define APIC_MODE_NMI 0x4
#define APIC_MODE_EXTINT 0x7

static int set_cpuid(struct vcpu *v, unsigned ncpus)
{
	const struct kvm_cpuid2 *sup = v->env->vm->supported_cpuid;
	struct kvm_cpuid2 *c;
	size_t sz = sizeof(*c) + CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2);
	int ret = -ENOMEM;

	c = calloc(1, sz);
	if (!c)
		goto out;
	memcpy(c, sup, sizeof(*c) + sup->nent * sizeof(struct kvm_cpuid_entry2));
	ret = cpuid_normalize(c, CPUID_MAX_ENTRIES, v->id, ncpus, v->env->vm->tsc_deadline);
	if (ret)
		goto out;
	ret = ioctl(v->fd, KVM_SET_CPUID2, c) < 0 ? -errno : 0;
out:
	free(c);
	return ret;
}

static int set_msrs(struct vcpu *v)
{
	static const struct {
		uint32_t index;
		uint64_t data;
	} init[] = {
		{ MSR_IA32_SYSENTER_CS, 0 }, { MSR_IA32_SYSENTER_ESP, 0 },
		{ MSR_IA32_SYSENTER_EIP, 0 }, { MSR_STAR, 0 }, { MSR_LSTAR, 0 },
		{ MSR_CSTAR, 0 }, { MSR_SYSCALL_MASK, 0 }, { MSR_KERNEL_GS_BASE, 0 },
		{ MSR_IA32_TSC, 0 }, { MSR_IA32_MISC_ENABLE, 1 /* fast strings */ },
		{ MSR_MTRR_DEF_TYPE, (1u << 11) | 6 /* MTRRs on, default write-back */ },
	};
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[sizeof(init) / sizeof(init[0])];
	} msrs;
	int n;

	memset(&msrs, 0, sizeof(msrs));
	msrs.hdr.nmsrs = sizeof(init) / sizeof(init[0]);
	for (unsigned i = 0; i < msrs.hdr.nmsrs; i++) {
		msrs.e[i].index = init[i].index;
		msrs.e[i].data = init[i].data;
	}
	n = ioctl(v->fd, KVM_SET_MSRS, &msrs);
	if (n < 0)
		return -errno;
	return (unsigned)n == msrs.hdr.nmsrs ? 0 : -EINVAL;
}

static int set_fpu(struct vcpu *v)
{
	struct kvm_fpu fpu;

	memset(&fpu, 0, sizeof(fpu));
	fpu.fcw = 0x37f;
	fpu.mxcsr = 0x1f80;
	return ioctl(v->fd, KVM_SET_FPU, &fpu) < 0 ? -errno : 0;
}

static void lvt_set_mode(struct kvm_lapic_state *l, unsigned reg, uint32_t mode)
{
	uint32_t val;

	memcpy(&val, &l->regs[reg], 4);
	val = (val & ~0x700u) | (mode << 8);
	memcpy(&l->regs[reg], &val, 4);
}

static int set_lapic(struct vcpu *v)
{
	struct kvm_lapic_state l;

	if (ioctl(v->fd, KVM_GET_LAPIC, &l) < 0)
		return -errno;
	lvt_set_mode(&l, APIC_LVT0, APIC_MODE_EXTINT);
	lvt_set_mode(&l, APIC_LVT1, APIC_MODE_NMI);
	return ioctl(v->fd, KVM_SET_LAPIC, &l) < 0 ? -errno : 0;
}

/* KVM's MSR list (KVM_GET_MSR_INDEX_LIST: the host's and KVM's paravirtual
 * ones) and the state ioctls this host has, for snapshots. */
static int probe_save(struct vcpu_env *e)
{
	struct kvm_msr_list probe = { .nmsrs = 0 }, *list = NULL;
	int kvm = e->vm->kvm_fd, x2, ret = -EINVAL;

	if (ioctl(kvm, KVM_GET_MSR_INDEX_LIST, &probe) == 0 || errno != E2BIG ||
	    probe.nmsrs == 0 || probe.nmsrs > SNAP_MAX_MSRS)
		goto out;
	ret = -ENOMEM;
	list = calloc(1, sizeof(*list) + probe.nmsrs * sizeof(uint32_t));
	if (!list)
		goto out;
	list->nmsrs = probe.nmsrs;
	ret = ioctl(kvm, KVM_GET_MSR_INDEX_LIST, list) < 0 ? -errno : 0;
	if (ret)
		goto out;
	e->msr_index = calloc(list->nmsrs, sizeof(uint32_t));
	ret = e->msr_index ? 0 : -ENOMEM;
	if (ret)
		goto out;
	memcpy(e->msr_index, list->indices, list->nmsrs * sizeof(uint32_t));
	e->nmsr_index = list->nmsrs;
	x2 = ioctl(e->vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	if (x2 > (int)sizeof(struct kvm_xsave) && x2 <= (int)SNAP_MAX_XSAVE)
		e->xsave_size = (uint32_t)x2;
	else if (ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0)
		e->xsave_size = sizeof(struct kvm_xsave);
	e->has_xcrs = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0;
	e->has_debugregs = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_DEBUGREGS) > 0;
	e->has_tsc_khz = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_GET_TSC_KHZ) > 0;
out:
	free(list);
	return ret;
}

int vcpu_create(struct vcpu *v, struct vcpu_env *env, unsigned id, unsigned ncpus)
{
	int ret;

	memset(v, 0, sizeof(*v));
	v->fd = -1;
	v->id = id;
	v->env = env;
	v->run = MAP_FAILED;
	v->fd = ioctl(env->vm->vm_fd, KVM_CREATE_VCPU, id);
	if (v->fd < 0) {
		ret = -errno;
		goto out;
	}
	if (!env->msr_index) {
		ret = probe_save(env);
		if (ret)
			goto out;
	}
	v->run = mmap(NULL, (size_t)env->vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED) {
		ret = -errno;
		goto out;
	}
	ret = set_cpuid(v, ncpus);
	if (!ret)
		ret = set_msrs(v);
	if (!ret)
		ret = set_fpu(v);
	if (!ret)
		ret = set_lapic(v);
out:
	return ret;
}

static void flat_segment(struct kvm_segment *s, uint16_t selector, uint8_t type)
{
	memset(s, 0, sizeof(*s));
	s->base = 0;
	s->limit = 0xffffffff;
	s->selector = selector;
	s->type = type;
	s->present = 1;
	s->db = 1;
	s->s = 1;
	s->g = 1;
}

int vcpu_setup_pvh(struct vcpu *v, uint32_t entry, uint32_t start_info)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
		return -errno;
	flat_segment(&sregs.cs, 0x10, 0xb); /* execute/read, accessed */
	flat_segment(&sregs.ds, 0x18, 0x3); /* read/write, accessed */
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	memset(&sregs.tr, 0, sizeof(sregs.tr));
	sregs.tr.limit = 0x67;
	sregs.tr.selector = 0x20;
	sregs.tr.type = 0xb; /* busy 32-bit TSS */
	sregs.tr.present = 1;
	sregs.cr0 = 0x11; /* PE | ET; paging off, as the PVH ABI requires */
	sregs.cr3 = 0;
	sregs.cr4 = 0;
	sregs.efer = 0;
	if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0)
		return -errno;

	memset(&regs, 0, sizeof(regs));
	regs.rip = entry;
	regs.rbx = start_info;
	regs.rflags = 0x2;
	return ioctl(v->fd, KVM_SET_REGS, &regs) < 0 ? -errno : 0;
}

static void stop(struct vcpu *v, int status, const char *why)
{
	v->env->stop(v->env->ctx, status, why);
}

static void handle_io(struct vcpu *v)
{
	struct kvm_run *r = v->run;
	uint64_t total = (uint64_t)r->io.size * r->io.count;
	uint8_t *p;

	/* KVM fills these, but a bad value must not send us outside the page. */
	if (r->io.size == 0 || r->io.size > 4 || r->io.data_offset > (uint64_t)v->env->vm->run_size ||
	    total > (uint64_t)v->env->vm->run_size - r->io.data_offset)
		return;
	p = (uint8_t *)r + r->io.data_offset;
	for (uint32_t i = 0; i < r->io.count; i++, p += r->io.size)
		io_dispatch(v->env->pio, r->io.port, p, r->io.size,
			    r->io.direction == KVM_EXIT_IO_OUT);
}

static void handle_mmio(struct vcpu *v)
{
	struct kvm_run *r = v->run;

	if (r->mmio.len <= sizeof(r->mmio.data))
		io_dispatch(v->env->mmio, r->mmio.phys_addr, r->mmio.data, r->mmio.len,
			    r->mmio.is_write);
}

static void handle_system_event(struct vcpu *v)
{
	switch (v->run->system_event.type) {
	case KVM_SYSTEM_EVENT_SHUTDOWN:
		stop(v, VMM_EXIT_POWEROFF, "guest powered off");
		break;
	case KVM_SYSTEM_EVENT_RESET:
		stop(v, VMM_EXIT_RESET, "guest reset");
		break;
	case KVM_SYSTEM_EVENT_CRASH:
		stop(v, VMM_EXIT_PANIC, "guest crashed");
		break;
	default:
		stop(v, VMM_EXIT_KVM_ERROR, "unknown KVM system event");
		break;
	}
}

static void log_exit(struct vcpu *v)
{
	const struct kvm_run *r = v->run;
	struct vcpu_exit_rec *e = &v->exits[v->nexits++ % VCPU_EXIT_LOG];

	memset(e, 0, sizeof(*e));
	e->reason = r->exit_reason;
	if (r->exit_reason == KVM_EXIT_IO) {
		e->addr = r->io.port;
		e->len = r->io.size;
		e->write = r->io.direction == KVM_EXIT_IO_OUT;
	} else if (r->exit_reason == KVM_EXIT_MMIO) {
		e->addr = r->mmio.phys_addr;
		e->len = (uint8_t)r->mmio.len;
		e->write = r->mmio.is_write;
	}
}

/* A bounded line buffer: what does not fit is cut. */
struct text {
	char buf[2048];
	size_t n;
};

__attribute__((format(printf, 2, 3))) static void put(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int k;

	va_start(ap, fmt);
	k = vsnprintf(t->buf + t->n, sizeof(t->buf) - t->n, fmt, ap);
	va_end(ap);
	if (k > 0)
		t->n = t->n + (size_t)k < sizeof(t->buf) ? t->n + (size_t)k : sizeof(t->buf) - 1;
}

/* Where the guest was when it triple-faulted, on stderr before the VMM's
 * exit reason: its last exits, then its registers. KVM on AMD re-INITs a
 * vCPU at a shutdown intercept (the VMCB is undefined after it), so there the
 * registers are the reset values and the report says so. */
static void report_shutdown(struct vcpu *v)
{
	struct text t = { .n = 0 };
	uint64_t first = v->nexits > VCPU_EXIT_LOG ? v->nexits - VCPU_EXIT_LOG : 0;
	struct kvm_regs regs;
	struct kvm_sregs sregs;

	put(&t, "kiln-vmm: vCPU %u shut down (triple fault) after %llu exits; the last, oldest first:",
	    v->id, (unsigned long long)v->nexits);
	for (uint64_t i = first; i < v->nexits; i++) {
		const struct vcpu_exit_rec *e = &v->exits[i % VCPU_EXIT_LOG];

		if (e->reason == KVM_EXIT_IO)
			put(&t, " io:%s:0x%llx/%u", e->write ? "out" : "in", (unsigned long long)e->addr, e->len);
		else if (e->reason == KVM_EXIT_MMIO)
			put(&t, " mmio:%s:0x%llx/%u", e->write ? "w" : "r", (unsigned long long)e->addr, e->len);
		else
			put(&t, " exit:%u", e->reason);
	}
	put(&t, "\n");
	if (ioctl(v->fd, KVM_GET_REGS, &regs) == 0 && ioctl(v->fd, KVM_GET_SREGS, &sregs) == 0) {
		bool reset = regs.rip == 0xfff0 && sregs.cs.base == 0xffff0000;

		put(&t, "kiln-vmm: vCPU %u registers%s: rip=0x%llx rsp=0x%llx rflags=0x%llx cr0=0x%llx "
		    "cr2=0x%llx cr3=0x%llx cr4=0x%llx efer=0x%llx cs=0x%x/0x%llx ss=0x%x idt=0x%llx/%u "
		    "gdt=0x%llx/%u\n",
		    v->id, reset ? " (the reset values: KVM re-INITs the vCPU at a shutdown on AMD)" : "",
		    (unsigned long long)regs.rip, (unsigned long long)regs.rsp,
		    (unsigned long long)regs.rflags, (unsigned long long)sregs.cr0,
		    (unsigned long long)sregs.cr2, (unsigned long long)sregs.cr3,
		    (unsigned long long)sregs.cr4, (unsigned long long)sregs.efer, sregs.cs.selector,
		    (unsigned long long)sregs.cs.base, sregs.ss.selector,
		    (unsigned long long)sregs.idt.base, sregs.idt.limit,
		    (unsigned long long)sregs.gdt.base, sregs.gdt.limit);
	}
	if (write(STDERR_FILENO, t.buf, t.n) < 0) {
		/* nothing more to tell it with */
	}
}

/* One KVM_GET_* of a fixed-size structure into a section. */
static int save_one(struct vcpu *v, struct snap_buf *b, unsigned long req, uint32_t type,
		    void *buf, size_t len)
{
	if (ioctl(v->fd, req, buf) < 0)
		return -errno;
	snap_add(b, type, 0, v->id, buf, len);
	return b->err;
}

/* XSAVE (KVM_GET_XSAVE2 when the area is larger than 4 KiB), else the FPU. */
static int save_fpu(struct vcpu *v, struct snap_buf *b)
{
	uint32_t size = v->env->xsave_size;
	struct kvm_fpu fpu;
	void *x;
	int ret;

	if (size == 0)
		return save_one(v, b, KVM_GET_FPU, SNAP_SEC_FPU, &fpu, sizeof(fpu));
	x = calloc(1, size);
	if (!x)
		return -ENOMEM;
	ret = save_one(v, b, size > sizeof(struct kvm_xsave) ? KVM_GET_XSAVE2 : KVM_GET_XSAVE,
		       SNAP_SEC_XSAVE, x, size);
	free(x);
	return ret;
}

/*
 * Every MSR of KVM's list that this vCPU can read: KVM_GET_MSRS stops at the
 * first it cannot (one the guest's CPUID does not have), which is dropped.
 */
static int save_msrs(struct vcpu *v, struct snap_buf *b)
{
	const struct vcpu_env *e = v->env;
	struct kvm_msrs *m;
	struct snap_msrs hdr = { .count = 0 };
	unsigned n = e->nmsr_index, tries = 0;
	int got, ret = -ENOMEM;

	m = calloc(1, sizeof(*m) + n * sizeof(struct kvm_msr_entry));
	if (!m)
		goto out;
	for (unsigned i = 0; i < n; i++)
		m->entries[i].index = e->msr_index[i];
	for (;;) {
		m->nmsrs = n;
		got = ioctl(v->fd, KVM_GET_MSRS, m);
		ret = got < 0 ? -errno : 0;
		if (ret || (unsigned)got >= n || ++tries > e->nmsr_index)
			break;
		memmove(&m->entries[got], &m->entries[got + 1],
			(n - (unsigned)got - 1) * sizeof(struct kvm_msr_entry));
		n--;
	}
	if (ret)
		goto out;
	hdr.count = n;
	snap_add2(b, SNAP_SEC_MSRS, v->id, &hdr, sizeof(hdr), m->entries,
		  n * sizeof(struct kvm_msr_entry));
	ret = b->err;
out:
	free(m);
	return ret;
}

/* Room for any one of the fixed-size register sets saved and restored. */
union vcpu_regs_buf {
	struct kvm_mp_state mp;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_debugregs dregs;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events ev;
};

/*
 * This vCPU's state, from its own thread while parked, in the order KVM
 * wants it read: MP state first, LAPIC before the MSRs (TSC deadline), the
 * events last.
 */
static int vcpu_save(struct vcpu *v, struct snap_buf *b)
{
	const struct vcpu_env *e = v->env;
	union vcpu_regs_buf u;
	uint64_t khz;
	int ret, k;

	memset(&u, 0, sizeof(u));
	ret = save_one(v, b, KVM_GET_MP_STATE, SNAP_SEC_MP_STATE, &u.mp, sizeof(u.mp));
	if (!ret)
		ret = save_one(v, b, KVM_GET_REGS, SNAP_SEC_REGS, &u.regs, sizeof(u.regs));
	if (!ret)
		ret = save_one(v, b, KVM_GET_SREGS, SNAP_SEC_SREGS, &u.sregs, sizeof(u.sregs));
	if (!ret)
		ret = save_fpu(v, b);
	if (!ret && e->has_xcrs)
		ret = save_one(v, b, KVM_GET_XCRS, SNAP_SEC_XCRS, &u.xcrs, sizeof(u.xcrs));
	if (!ret && e->has_debugregs)
		ret = save_one(v, b, KVM_GET_DEBUGREGS, SNAP_SEC_DEBUGREGS, &u.dregs,
			       sizeof(u.dregs));
	if (!ret)
		ret = save_one(v, b, KVM_GET_LAPIC, SNAP_SEC_LAPIC, &u.lapic, sizeof(u.lapic));
	if (!ret)
		ret = save_msrs(v, b);
	if (!ret && e->has_tsc_khz) {
		k = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
		khz = k > 0 ? (uint64_t)k : 0;
		if (k > 0)
			snap_add(b, SNAP_SEC_TSC_KHZ, SNAP_SEC_F_OPTIONAL, v->id, &khz, sizeof(khz));
		ret = b->err;
	}
	if (!ret)
		ret = save_one(v, b, KVM_GET_VCPU_EVENTS, SNAP_SEC_VCPU_EVENTS, &u.ev, sizeof(u.ev));
	return ret;
}

/* The section (type, this vCPU) of len bytes copied into buf, or why not. */
static const char *take(struct vcpu *v, uint32_t type, void *buf, size_t len)
{
	const struct snap_sec *s = snap_find(v->env->restore, type, v->id);

	if (!s)
		return "missing";
	if (s->len != len)
		return "of the wrong size for this host";
	memcpy(buf, s->payload, len);
	return NULL;
}

/* One KVM_SET_* from a fixed-size section. */
static int restore_one(struct vcpu *v, unsigned long req, uint32_t type, void *buf, size_t len,
		       char *why, size_t whylen)
{
	const char *bad = take(v, type, buf, len);

	if (bad) {
		snprintf(why, whylen, "vCPU %u: the %s section is %s", v->id, snap_sec_name(type), bad);
		return -EINVAL;
	}
	if (ioctl(v->fd, req, buf) < 0) {
		int err = errno;

		snprintf(why, whylen, "vCPU %u: KVM refused the saved %s: %s", v->id,
			 snap_sec_name(type), strerror(err));
		return -err;
	}
	return 0;
}

/* An optional section this host must have exactly when the file does. */
static int restore_opt(struct vcpu *v, bool host_has, unsigned long req, uint32_t type,
		       void *buf, size_t len, char *why, size_t whylen)
{
	bool file_has = snap_find(v->env->restore, type, v->id) != NULL;

	if (host_has != file_has) {
		snprintf(why, whylen, "vCPU %u: the state file %s a %s section, this host %s", v->id,
			 file_has ? "has" : "lacks", snap_sec_name(type),
			 host_has ? "needs one" : "cannot set it");
		return -EINVAL;
	}
	return host_has ? restore_one(v, req, type, buf, len, why, whylen) : 0;
}

static int restore_fpu(struct vcpu *v, char *why, size_t whylen)
{
	uint32_t size = v->env->xsave_size;
	const struct snap_sec *s;
	struct kvm_fpu fpu;
	void *x;
	int ret;

	if (size == 0)
		return restore_one(v, KVM_SET_FPU, SNAP_SEC_FPU, &fpu, sizeof(fpu), why, whylen);
	s = snap_find(v->env->restore, SNAP_SEC_XSAVE, v->id);
	if (!s || s->len != size) {
		snprintf(why, whylen, "vCPU %u: the state file's XSAVE area is %u bytes, this host's %u",
			 v->id, s ? s->len : 0, size);
		return -EINVAL;
	}
	x = calloc(1, size);
	if (!x)
		return -ENOMEM;
	ret = restore_one(v, KVM_SET_XSAVE, SNAP_SEC_XSAVE, x, size, why, whylen);
	free(x);
	return ret;
}

/* Every saved MSR, IA32_TSC first (the TSC deadline is relative to it). */
static int restore_msrs(struct vcpu *v, char *why, size_t whylen)
{
	const struct snap_sec *s = snap_find(v->env->restore, SNAP_SEC_MSRS, v->id);
	struct snap_msrs hdr;
	struct kvm_msrs *m = NULL;
	unsigned n = 0;
	int got, ret = -EINVAL;

	if (!s || s->len < sizeof(hdr)) {
		snprintf(why, whylen, "vCPU %u: the msrs section is missing", v->id);
		goto out;
	}
	memcpy(&hdr, s->payload, sizeof(hdr));
	if (hdr.count > SNAP_MAX_MSRS ||
	    s->len != sizeof(hdr) + (size_t)hdr.count * sizeof(struct kvm_msr_entry)) {
		snprintf(why, whylen, "vCPU %u: the msrs section's count does not match its size",
			 v->id);
		goto out;
	}
	ret = -ENOMEM;
	m = calloc(1, sizeof(*m) + hdr.count * sizeof(struct kvm_msr_entry));
	if (!m)
		goto out;
	for (unsigned pass = 0; pass < 2; pass++)
		for (unsigned i = 0; i < hdr.count; i++) {
			struct kvm_msr_entry e;

			memcpy(&e, s->payload + sizeof(hdr) + i * sizeof(e), sizeof(e));
			if ((e.index == MSR_IA32_TSC) == (pass == 0))
				m->entries[n++] = e;
		}
	m->nmsrs = n;
	got = ioctl(v->fd, KVM_SET_MSRS, m);
	ret = got < 0 ? -errno : 0;
	if (ret)
		snprintf(why, whylen, "vCPU %u: KVM_SET_MSRS: %s", v->id, strerror(-ret));
	else if ((unsigned)got != n) {
		snprintf(why, whylen, "vCPU %u: KVM refused the saved MSR 0x%x", v->id,
			 m->entries[got].index);
		ret = -EINVAL;
	}
out:
	free(m);
	return ret;
}

/* The saved TSC frequency, when the file has one, must be this vCPU's. */
static int restore_tsc_khz(struct vcpu *v, char *why, size_t whylen)
{
	const struct snap_sec *s = snap_find(v->env->restore, SNAP_SEC_TSC_KHZ, v->id);
	uint64_t khz;
	int now;

	if (!s || !v->env->has_tsc_khz)
		return 0;
	if (s->len != sizeof(khz))
		return -EINVAL;
	memcpy(&khz, s->payload, sizeof(khz));
	now = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
	if (now > 0 && (uint64_t)now == khz)
		return 0;
	if (khz == 0 || khz > UINT32_MAX || ioctl(v->fd, KVM_SET_TSC_KHZ, (unsigned long)khz) < 0) {
		snprintf(why, whylen, "vCPU %u: the saved TSC runs at %llu kHz, this one at %d kHz, "
			 "and KVM cannot scale it", v->id, (unsigned long long)khz, now);
		return -EINVAL;
	}
	return 0;
}

/*
 * This vCPU's state from the file, by its own thread before its first
 * KVM_RUN, in the order KVM needs: MP state, regs, sregs, XSAVE/FPU, XCRs,
 * debug regs, LAPIC (after sregs: the APIC base), MSRs (after the LAPIC:
 * TSC deadline; TSC first), vCPU events last.
 */
static int vcpu_restore(struct vcpu *v, char *why, size_t whylen)
{
	const struct vcpu_env *e = v->env;
	union vcpu_regs_buf u;
	int ret;

	ret = restore_one(v, KVM_SET_MP_STATE, SNAP_SEC_MP_STATE, &u.mp, sizeof(u.mp), why, whylen);
	if (!ret)
		ret = restore_one(v, KVM_SET_REGS, SNAP_SEC_REGS, &u.regs, sizeof(u.regs), why,
				  whylen);
	if (!ret)
		ret = restore_one(v, KVM_SET_SREGS, SNAP_SEC_SREGS, &u.sregs, sizeof(u.sregs), why,
				  whylen);
	if (!ret)
		ret = restore_fpu(v, why, whylen);
	if (!ret)
		ret = restore_opt(v, e->has_xcrs, KVM_SET_XCRS, SNAP_SEC_XCRS, &u.xcrs,
				  sizeof(u.xcrs), why, whylen);
	if (!ret)
		ret = restore_opt(v, e->has_debugregs, KVM_SET_DEBUGREGS, SNAP_SEC_DEBUGREGS,
				  &u.dregs, sizeof(u.dregs), why, whylen);
	if (!ret)
		ret = restore_tsc_khz(v, why, whylen);
	if (!ret)
		ret = restore_one(v, KVM_SET_LAPIC, SNAP_SEC_LAPIC, &u.lapic, sizeof(u.lapic), why,
				  whylen);
	if (!ret)
		ret = restore_msrs(v, why, whylen);
	if (!ret)
		ret = restore_one(v, KVM_SET_VCPU_EVENTS, SNAP_SEC_VCPU_EVENTS, &u.ev, sizeof(u.ev),
				  why, whylen);
	return ret;
}

/* Restore this vCPU, then wait for the others: no vCPU runs (and sends an
 * IPI) before every LAPIC is set. False when the VM is ending. */
static bool restore_and_wait(struct vcpu *v)
{
	struct vcpu_env *e = v->env;
	char why[160];

	bool last;

	if (vcpu_restore(v, why, sizeof(why)))
		stop(v, VMM_EXIT_USAGE, why);
	pthread_mutex_lock(&e->pause_mu);
	last = --e->restoring == 0;
	if (last && e->restored && !__atomic_load_n(&e->stopping, __ATOMIC_ACQUIRE))
		e->restored(e->ctx);
	pthread_cond_broadcast(&e->pause_cv);
	while (e->restoring && !__atomic_load_n(&e->stopping, __ATOMIC_ACQUIRE))
		pthread_cond_wait(&e->pause_cv, &e->pause_mu);
	pthread_mutex_unlock(&e->pause_mu);
	return !__atomic_load_n(&e->stopping, __ATOMIC_ACQUIRE);
}

/*
 * KVM finishes an I/O or MMIO read (the value into its register, RIP past the
 * instruction) only in the next KVM_RUN: state saved before that would make
 * a clone execute the access again (a serial byte read twice, an interrupt
 * status consumed twice). With immediate_exit set, KVM_RUN completes what is
 * pending and returns EINTR without running guest code (KVM API, "struct
 * kvm_run"); an access KVM splits in parts exits for the next part first.
 */
static void complete_pending_io(struct vcpu *v)
{
	for (unsigned i = 0; i < PENDING_IO_PARTS; i++) {
		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		if (ioctl(v->fd, KVM_RUN, 0) < 0)
			return;
		log_exit(v);
		if (v->run->exit_reason == KVM_EXIT_IO)
			handle_io(v);
		else if (v->run->exit_reason == KVM_EXIT_MMIO)
			handle_mmio(v);
		else
			return;
	}
}

/*
 * Out of KVM_RUN until the pause ends. The pauser sets pause_req before it
 * sets immediate_exit, and we clear immediate_exit before we look at
 * pause_req again, so a pause that races with a resume is never lost.
 */
static void park(struct vcpu *v)
{
	struct vcpu_env *e = v->env;
	int ret;

	complete_pending_io(v);
	/* The guest's kvmclock learns it was stopped, so its watchdogs do not
	 * see the pause as a soft lockup (EINVAL before the guest enabled it). */
	ioctl(v->fd, KVM_KVMCLOCK_CTRL, 0);
	pthread_mutex_lock(&e->pause_mu);
	e->parked++;
	pthread_cond_broadcast(&e->pause_cv);
	while (__atomic_load_n(&e->pause_req, __ATOMIC_SEQ_CST) &&
	       !__atomic_load_n(&e->stopping, __ATOMIC_ACQUIRE)) {
		if (v->save && !v->saving) {
			struct snap_buf *b = v->save;

			v->saving = true;
			pthread_mutex_unlock(&e->pause_mu);
			ret = vcpu_save(v, b);
			pthread_mutex_lock(&e->pause_mu);
			v->save_ret = ret;
			v->save = NULL;
			v->saving = false;
			pthread_cond_broadcast(&e->pause_cv);
			continue;
		}
		pthread_cond_wait(&e->pause_cv, &e->pause_mu);
	}
	e->parked--;
	pthread_mutex_unlock(&e->pause_mu);
	__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	char why[96];
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, VCPU_KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	/* Before the filter: the set ioctls stay out of the vCPU's policy. */
	if (v->env->restore && !restore_and_wait(v))
		goto out;
	if (v->env->seccomp && seccomp_apply(SECCOMP_ROLE_VCPU)) {
		stop(v, VMM_EXIT_ERROR, "cannot install the vCPU seccomp filter");
		return NULL;
	}

	while (!__atomic_load_n(&v->env->stopping, __ATOMIC_ACQUIRE)) {
		if (__atomic_load_n(&v->env->pause_req, __ATOMIC_SEQ_CST)) {
			park(v);
			continue;
		}
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			snprintf(why, sizeof(why), "KVM_RUN failed on vCPU %u: %s", v->id,
				 strerror(errno));
			stop(v, VMM_EXIT_KVM_ERROR, why);
			break;
		}
		log_exit(v);
		switch (v->run->exit_reason) {
		case KVM_EXIT_IO:
			handle_io(v);
			break;
		case KVM_EXIT_MMIO:
			handle_mmio(v);
			break;
		case KVM_EXIT_SHUTDOWN:
			report_shutdown(v);
			stop(v, VMM_EXIT_TRIPLE_FAULT, "guest triple fault (shutdown)");
			break;
		case KVM_EXIT_SYSTEM_EVENT:
			handle_system_event(v);
			break;
		case KVM_EXIT_HLT:
			stop(v, VMM_EXIT_POWEROFF, "guest halted");
			break;
		case KVM_EXIT_INTERNAL_ERROR:
			snprintf(why, sizeof(why), "KVM internal error %u on vCPU %u",
				 v->run->internal.suberror, v->id);
			stop(v, VMM_EXIT_KVM_ERROR, why);
			break;
		case KVM_EXIT_FAIL_ENTRY:
			snprintf(why, sizeof(why), "KVM entry failed (reason 0x%llx) on vCPU %u",
				 (unsigned long long)v->run->fail_entry.hardware_entry_failure_reason,
				 v->id);
			stop(v, VMM_EXIT_KVM_ERROR, why);
			break;
		case KVM_EXIT_INTR:
			break;
		default:
			snprintf(why, sizeof(why), "unexpected KVM exit %u on vCPU %u",
				 v->run->exit_reason, v->id);
			stop(v, VMM_EXIT_KVM_ERROR, why);
			break;
		}
	}
out:
	/* An ended thread counts as parked: a pause never waits for it. */
	pthread_mutex_lock(&v->env->pause_mu);
	v->env->parked++;
	pthread_cond_broadcast(&v->env->pause_cv);
	pthread_mutex_unlock(&v->env->pause_mu);
	return NULL;
}

int vcpu_start(struct vcpu *v)
{
	int ret = pthread_create(&v->thread, NULL, vcpu_thread, v);

	if (ret)
		return -ret;
	v->started = true;
	return 0;
}

void vcpu_kick(struct vcpu *v)
{
	if (v->run != MAP_FAILED)
		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_RELEASE);
	if (v->started)
		pthread_kill(v->thread, VCPU_KICK_SIGNAL);
}

int vcpu_env_init(struct vcpu_env *e)
{
	pthread_condattr_t ca;
	int ret;

	ret = pthread_condattr_init(&ca);
	if (ret)
		return -ret;
	ret = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (!ret)
		ret = pthread_cond_init(&e->pause_cv, &ca);
	pthread_condattr_destroy(&ca);
	if (ret)
		return -ret;
	pthread_mutex_init(&e->pause_mu, NULL);
	return 0;
}

void vcpu_env_destroy(struct vcpu_env *e)
{
	free(e->msr_index);
	e->msr_index = NULL;
	pthread_cond_destroy(&e->pause_cv);
	pthread_mutex_destroy(&e->pause_mu);
}

int vcpus_pause(struct vcpu *vs, unsigned n, int timeout_ms)
{
	struct vcpu_env *e = vs[0].env;
	struct timespec until;
	int ret = 0;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	__atomic_store_n(&e->pause_req, 1, __ATOMIC_SEQ_CST);
	for (unsigned i = 0; i < n; i++) {
		__atomic_store_n(&vs[i].run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		if (vs[i].started)
			pthread_kill(vs[i].thread, VCPU_KICK_SIGNAL);
	}
	pthread_mutex_lock(&e->pause_mu);
	while (!ret && e->parked < n) {
		if (__atomic_load_n(&e->stopping, __ATOMIC_ACQUIRE))
			ret = -ESHUTDOWN;
		else if (pthread_cond_timedwait(&e->pause_cv, &e->pause_mu, &until) == ETIMEDOUT)
			ret = -ETIMEDOUT;
	}
	pthread_mutex_unlock(&e->pause_mu);
	if (ret)
		vcpus_resume(e);
	return ret;
}

/* Every vCPU asked is done, or may never be: the VM is ending and none is
 * still writing. Under pause_mu. */
static bool saves_done(struct vcpu *vs, unsigned n)
{
	bool stopping = __atomic_load_n(&vs[0].env->stopping, __ATOMIC_ACQUIRE);

	for (unsigned i = 0; i < n; i++)
		if (vs[i].saving || (vs[i].save && !stopping))
			return false;
	return true;
}

int vcpus_save(struct vcpu *vs, unsigned n, struct snap_buf *bufs)
{
	struct vcpu_env *e = vs[0].env;
	int ret = 0;

	pthread_mutex_lock(&e->pause_mu);
	for (unsigned i = 0; i < n; i++) {
		vs[i].save = &bufs[i];
		vs[i].save_ret = -ESHUTDOWN;
	}
	pthread_cond_broadcast(&e->pause_cv);
	while (!saves_done(vs, n))
		pthread_cond_wait(&e->pause_cv, &e->pause_mu);
	for (unsigned i = 0; i < n; i++) {
		if (!ret && (vs[i].save || vs[i].save_ret))
			ret = vs[i].save ? -ESHUTDOWN : vs[i].save_ret;
		vs[i].save = NULL;
	}
	pthread_mutex_unlock(&e->pause_mu);
	return ret;
}

void vcpus_resume(struct vcpu_env *e)
{
	pthread_mutex_lock(&e->pause_mu);
	__atomic_store_n(&e->pause_req, 0, __ATOMIC_SEQ_CST);
	pthread_cond_broadcast(&e->pause_cv);
	pthread_mutex_unlock(&e->pause_mu);
}

void vcpu_destroy(struct vcpu *v)
{
	if (v->started) {
		pthread_join(v->thread, NULL);
		v->started = false;
	}
	if (v->run != MAP_FAILED && v->run)
		munmap(v->run, (size_t)v->env->vm->run_size);
	v->run = MAP_FAILED;
	if (v->fd >= 0)
		close(v->fd);
	v->fd = -1;
}
