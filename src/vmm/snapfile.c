#include "vmm/snapfile.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define SNAP_MAX_MEM (64ULL << 30)
#define SNAP_IRQCHIPS 3

/* What a section type may be: its name, fixed size (0: checked apart), and
 * how many indexes it may have (per vCPU, per device, or a fixed count). */
enum snap_scope { SCOPE_VCPU, SCOPE_DEVICE, SCOPE_ONE, SCOPE_IRQCHIP };

static const struct snap_type {
	uint32_t type;
	const char *name;
	size_t size;
	enum snap_scope scope;
} snap_types[] = {
	{ SNAP_SEC_REGS, "regs", sizeof(struct kvm_regs), SCOPE_VCPU },
	{ SNAP_SEC_SREGS, "sregs", sizeof(struct kvm_sregs), SCOPE_VCPU },
	{ SNAP_SEC_XSAVE, "xsave", 0, SCOPE_VCPU },
	{ SNAP_SEC_FPU, "fpu", sizeof(struct kvm_fpu), SCOPE_VCPU },
	{ SNAP_SEC_XCRS, "xcrs", sizeof(struct kvm_xcrs), SCOPE_VCPU },
	{ SNAP_SEC_DEBUGREGS, "debugregs", sizeof(struct kvm_debugregs), SCOPE_VCPU },
	{ SNAP_SEC_LAPIC, "lapic", sizeof(struct kvm_lapic_state), SCOPE_VCPU },
	{ SNAP_SEC_MSRS, "msrs", 0, SCOPE_VCPU },
	{ SNAP_SEC_MP_STATE, "mp-state", sizeof(struct kvm_mp_state), SCOPE_VCPU },
	{ SNAP_SEC_VCPU_EVENTS, "vcpu-events", sizeof(struct kvm_vcpu_events), SCOPE_VCPU },
	{ SNAP_SEC_TSC_KHZ, "tsc-khz", sizeof(uint64_t), SCOPE_VCPU },
	{ SNAP_SEC_IRQCHIP, "irqchip", sizeof(struct kvm_irqchip), SCOPE_IRQCHIP },
	{ SNAP_SEC_PIT, "pit", sizeof(struct kvm_pit_state2), SCOPE_ONE },
	{ SNAP_SEC_CLOCK, "clock", sizeof(struct kvm_clock_data), SCOPE_ONE },
	{ SNAP_SEC_MEMORY, "memory", sizeof(struct snap_memory), SCOPE_ONE },
	{ SNAP_SEC_VIRTIO, "virtio", 0, SCOPE_DEVICE },
	{ SNAP_SEC_SERIAL, "serial", sizeof(struct snap_serial), SCOPE_ONE },
};

#define NTYPES (sizeof(snap_types) / sizeof(snap_types[0]))

static const struct snap_type *snap_type(uint32_t type)
{
	for (size_t i = 0; i < NTYPES; i++)
		if (snap_types[i].type == type)
			return &snap_types[i];
	return NULL;
}

const char *snap_sec_name(uint32_t type)
{
	const struct snap_type *t = snap_type(type);

	return t ? t->name : "?";
}

/* --- writing --- */

static void snap_put(struct snap_buf *b, const void *p, size_t n)
{
	size_t cap;
	uint8_t *d;

	if (b->err || n == 0)
		return;
	if (n > SNAP_MAX_FILE || b->len > SNAP_MAX_FILE - n) {
		b->err = -EFBIG;
		return;
	}
	if (b->len + n > b->cap) {
		cap = b->cap ? b->cap : 16384;
		while (cap < b->len + n)
			cap *= 2;
		d = realloc(b->data, cap);
		if (!d) {
			b->err = -ENOMEM;
			return;
		}
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void snap_begin(struct snap_buf *b, const struct snap_cpu *cpu, const struct snap_vm *vm)
{
	struct snap_header h;

	memset(b, 0, sizeof(*b));
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, SNAP_MAGIC, sizeof(h.magic));
	h.version = SNAP_VERSION;
	h.header_size = sizeof(h);
	h.cpu = *cpu;
	h.vm = *vm;
	snap_put(b, &h, sizeof(h));
}

void snap_add2(struct snap_buf *b, uint32_t type, uint32_t index, const void *p1, size_t l1,
	       const void *p2, size_t l2)
{
	struct snap_sec_hdr s = { .type = type, .index = index };

	if (l1 > SNAP_MAX_FILE || l2 > SNAP_MAX_FILE - l1) {
		b->err = b->err ? b->err : -EFBIG;
		return;
	}
	s.len = (uint32_t)(l1 + l2);
	snap_put(b, &s, sizeof(s));
	snap_put(b, p1, l1);
	snap_put(b, p2, l2);
	b->nsections++;
}

void snap_add(struct snap_buf *b, uint32_t type, uint32_t flags, uint32_t index,
	      const void *payload, size_t len)
{
	size_t at = b->len;

	snap_add2(b, type, index, payload, len, NULL, 0);
	if (!b->err)
		memcpy(b->data + at + offsetof(struct snap_sec_hdr, flags), &flags, sizeof(flags));
}

void snap_append(struct snap_buf *b, const struct snap_buf *part)
{
	if (part->err && !b->err)
		b->err = part->err;
	snap_put(b, part->data, part->len);
	if (!b->err)
		b->nsections += part->nsections;
}

int snap_finish(struct snap_buf *b)
{
	uint32_t crc;

	if (!b->err && b->len < sizeof(struct snap_header))
		b->err = -EINVAL;
	if (b->err)
		return b->err;
	memcpy(b->data + offsetof(struct snap_header, nsections), &b->nsections,
	       sizeof(b->nsections));
	crc = (uint32_t)crc32(0L, b->data, (uInt)b->len);
	snap_put(b, &crc, sizeof(crc));
	return b->err;
}

void snap_buf_free(struct snap_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

/* --- reading --- */

static const char *check_header(const struct snap_header *h, const struct snap_cpu *expect)
{
	if (h->header_size != sizeof(*h))
		return "header size does not match this format version";
	if (h->reserved)
		return "header: reserved field is not 0";
	if (h->vm.cpus == 0 || h->vm.cpus > SNAP_MAX_CPUS)
		return "header: vCPU count out of range (1..32)";
	if (h->vm.ndevices > SNAP_MAX_DEVICES)
		return "header: device count out of range (0..32)";
	if (h->vm.mem_size == 0 || h->vm.mem_size % 4096 || h->vm.mem_size > SNAP_MAX_MEM)
		return "header: guest memory size is not a multiple of 4 KiB up to 64 GiB";
	for (unsigned i = 0; i < SNAP_MAX_DEVICES; i++)
		if ((i < h->vm.ndevices) != (h->vm.device_ids[i] != 0))
			return "header: device ids do not match the device count";
	if (h->nsections > SNAP_MAX_SECTIONS)
		return "header: too many sections";
	if (expect && memcmp(&h->cpu, expect, sizeof(*expect)))
		return "CPU fingerprint differs from this host's (another CPU model or KVM)";
	return NULL;
}

static uint32_t index_limit(const struct snap_type *t, const struct snap_header *h)
{
	switch (t->scope) {
	case SCOPE_VCPU:
		return h->vm.cpus;
	case SCOPE_DEVICE:
		return h->vm.ndevices;
	case SCOPE_IRQCHIP:
		return SNAP_IRQCHIPS;
	case SCOPE_ONE:
		break;
	}
	return 1;
}

static const char *check_msrs(const struct snap_sec *s)
{
	struct snap_msrs m;

	if (s->len < sizeof(m))
		return "shorter than its count";
	memcpy(&m, s->payload, sizeof(m));
	if (m.count > SNAP_MAX_MSRS || m.pad)
		return "MSR count out of range";
	if (s->len != sizeof(m) + (size_t)m.count * sizeof(struct kvm_msr_entry))
		return "length does not match its MSR count";
	return NULL;
}

static const char *check_memory(const struct snap_sec *s, const struct snap_header *h)
{
	struct snap_memory m;
	uint64_t off = 0;

	memcpy(&m, s->payload, sizeof(m));
	if (m.nregions == 0 || m.nregions > SNAP_MAX_REGIONS || m.pad)
		return "region count out of range";
	for (uint32_t i = 0; i < m.nregions; i++) {
		if (m.regions[i].file_offset != off || m.regions[i].size == 0 ||
		    m.regions[i].size % 4096 || m.regions[i].size > h->vm.mem_size - off ||
		    m.regions[i].gpa % 4096 || m.regions[i].gpa > UINT64_MAX - m.regions[i].size)
			return "regions do not tile the memory file";
		off += m.regions[i].size;
	}
	return off == h->vm.mem_size ? NULL : "regions do not add up to the guest memory size";
}

static const char *check_virtio(const struct snap_sec *s, const struct snap_header *h)
{
	struct snap_virtio v;

	if (s->len < sizeof(v))
		return "shorter than a virtio transport";
	memcpy(&v, s->payload, sizeof(v));
	if (v.num_queues == 0 || v.num_queues > SNAP_MAX_QUEUES)
		return "queue count out of range";
	if (v.dev_len > SNAP_MAX_DEV_STATE || s->len != sizeof(v) + v.dev_len)
		return "device state length does not match";
	if (v.device_id != h->vm.device_ids[s->index])
		return "device id differs from the header's";
	return NULL;
}

/* Size and content of a known section; NULL when it is fine. */
static const char *check_section(const struct snap_type *t, const struct snap_sec *s,
				 const struct snap_header *h)
{
	if (s->index >= index_limit(t, h))
		return "index out of range";
	if (t->size && s->len != t->size)
		return "size does not match the structure it carries";
	switch (t->type) {
	case SNAP_SEC_XSAVE:
		if (s->len < sizeof(struct kvm_xsave) || s->len > SNAP_MAX_XSAVE || s->len % 4)
			return "size is not an XSAVE area's";
		break;
	case SNAP_SEC_MSRS:
		return check_msrs(s);
	case SNAP_SEC_MEMORY:
		return check_memory(s, h);
	case SNAP_SEC_VIRTIO:
		return check_virtio(s, h);
	default:
		break;
	}
	return NULL;
}

const struct snap_sec *snap_find(const struct snap_file *f, uint32_t type, uint32_t index)
{
	for (unsigned i = 0; i < f->nsec; i++)
		if (f->sec[i].type == type && f->sec[i].index == index)
			return &f->sec[i];
	return NULL;
}

/* Every vCPU, irqchip and device has its sections. */
static const char *check_complete(const struct snap_file *f)
{
	static const uint32_t per_vcpu[] = { SNAP_SEC_REGS, SNAP_SEC_SREGS, SNAP_SEC_LAPIC,
					     SNAP_SEC_MSRS, SNAP_SEC_MP_STATE,
					     SNAP_SEC_VCPU_EVENTS };

	for (uint32_t c = 0; c < f->hdr.vm.cpus; c++) {
		for (size_t i = 0; i < sizeof(per_vcpu) / sizeof(per_vcpu[0]); i++)
			if (!snap_find(f, per_vcpu[i], c))
				return "a vCPU lacks one of regs, sregs, lapic, msrs, mp-state, vcpu-events";
		if (!snap_find(f, SNAP_SEC_XSAVE, c) == !snap_find(f, SNAP_SEC_FPU, c))
			return "a vCPU needs exactly one of xsave and fpu";
	}
	for (uint32_t i = 0; i < SNAP_IRQCHIPS; i++)
		if (!snap_find(f, SNAP_SEC_IRQCHIP, i))
			return "an irqchip section is missing";
	if (!snap_find(f, SNAP_SEC_PIT, 0) || !snap_find(f, SNAP_SEC_CLOCK, 0) ||
	    !snap_find(f, SNAP_SEC_MEMORY, 0))
		return "the pit, clock or memory section is missing";
	for (uint32_t i = 0; i < f->hdr.vm.ndevices; i++)
		if (!snap_find(f, SNAP_SEC_VIRTIO, i))
			return "a device section is missing";
	return NULL;
}

/* Where a defect was found, for the message. */
struct snap_where {
	uint32_t ordinal;		/* 1-based; 0: not in a section */
	struct snap_sec_hdr sh;
};

/* Walk the sections in [off, end): bounds, types, sizes, duplicates. */
static const char *walk(const uint8_t *buf, size_t off, size_t end, struct snap_file *f,
			struct snap_where *w)
{
	uint32_t seen = 0;

	while (off < end) {
		struct snap_sec_hdr sh;
		const struct snap_type *t;
		struct snap_sec s;
		const char *bad;

		if (seen >= f->hdr.nsections)
			return "more sections than the header says";
		w->ordinal = ++seen;
		if (end - off < sizeof(sh))
			return "its header runs past the end of the file";
		memcpy(&sh, buf + off, sizeof(sh));
		w->sh = sh;
		off += sizeof(sh);
		if (sh.len > end - off)
			return "its length runs past the end of the file";
		if (sh.flags & ~SNAP_SEC_F_OPTIONAL)
			return "unknown flags";
		s = (struct snap_sec){ sh.type, sh.flags, sh.index, sh.len, buf + off };
		off += sh.len;
		t = snap_type(sh.type);
		if (!t) {
			if (sh.flags & SNAP_SEC_F_OPTIONAL)
				continue;
			return "unknown mandatory section type";
		}
		bad = check_section(t, &s, &f->hdr);
		if (bad)
			return bad;
		if (snap_find(f, s.type, s.index))
			return "duplicate section";
		f->sec[f->nsec++] = s;
	}
	w->ordinal = 0;
	return seen == f->hdr.nsections ? NULL : "fewer sections than the header says";
}

int snap_parse(const uint8_t *buf, size_t len, const struct snap_cpu *expect,
	       struct snap_file *out, char *why, size_t whylen)
{
	struct snap_where w = { 0 };
	bool badver = false;
	struct snap_file f;
	const char *bad = NULL;
	uint32_t crc, want;
	int ret = -EINVAL;

	memset(out, 0, sizeof(*out));
	memset(&f, 0, sizeof(f));
	if (len < sizeof(f.hdr.magic) || memcmp(buf, SNAP_MAGIC, sizeof(f.hdr.magic)))
		bad = "bad magic: not a kiln snapshot state file";
	else if (len < offsetof(struct snap_header, header_size))
		bad = "truncated before the format version";
	else if (memcpy(&f.hdr.version, buf + offsetof(struct snap_header, version), 4),
		 f.hdr.version != SNAP_VERSION)
		bad = "unsupported format version", badver = true;
	else if (len > SNAP_MAX_FILE)
		bad = "file larger than a state file can be (64 MiB)";
	else if (len < sizeof(f.hdr) + sizeof(crc))
		bad = "truncated header";
	if (bad)
		goto out;
	memcpy(&want, buf + len - sizeof(want), sizeof(want));
	crc = (uint32_t)crc32(0L, buf, (uInt)(len - sizeof(want)));
	if (crc != want) {
		bad = "checksum mismatch: the file is corrupt";
		goto out;
	}
	memcpy(&f.hdr, buf, sizeof(f.hdr));
	bad = check_header(&f.hdr, expect);
	if (bad)
		goto out;
	f.sec = calloc(f.hdr.nsections ? f.hdr.nsections : 1, sizeof(*f.sec));
	if (!f.sec) {
		bad = "out of memory";
		goto out;
	}
	bad = walk(buf, sizeof(f.hdr), len - sizeof(want), &f, &w);
	if (!bad)
		bad = check_complete(&f);
	if (bad)
		goto out;
	*out = f;
	f.sec = NULL;
	ret = 0;
out:
	free(f.sec);
	if (!bad)
		snprintf(why, whylen, "ok");
	else if (w.ordinal)
		snprintf(why, whylen, "section %u (%s %u, type 0x%x, %u bytes): %s", w.ordinal,
			 snap_sec_name(w.sh.type), w.sh.index, w.sh.type, w.sh.len, bad);
	else if (badver)
		snprintf(why, whylen, "unsupported format version %u (this kiln-vmm reads %u)",
			 f.hdr.version, SNAP_VERSION);
	else
		snprintf(why, whylen, "%s", bad);
	return ret;
}

void snap_file_free(struct snap_file *f)
{
	free(f->sec);
	memset(f, 0, sizeof(*f));
}

static void leaf(struct snap_cpuid_leaf *l, const struct kvm_cpuid_entry2 *e, unsigned n,
		 uint32_t function, uint32_t index)
{
	memset(l, 0, sizeof(*l));
	l->function = function;
	l->index = index;
	for (unsigned i = 0; i < n; i++)
		if (e[i].function == function &&
		    (e[i].index == index || !(e[i].flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX))) {
			l->eax = e[i].eax;
			l->ebx = e[i].ebx;
			l->ecx = e[i].ecx;
			l->edx = e[i].edx;
			break;
		}
}

void snap_cpu_from_cpuid(struct snap_cpu *cpu, const struct kvm_cpuid_entry2 *e, unsigned n)
{
	struct snap_cpuid_leaf l0;
	uint32_t a, fam;

	memset(cpu, 0, sizeof(*cpu));
	leaf(&l0, e, n, 0, 0);
	memcpy(cpu->vendor, &l0.ebx, 4);
	memcpy(cpu->vendor + 4, &l0.edx, 4);
	memcpy(cpu->vendor + 8, &l0.ecx, 4);
	leaf(&cpu->leaves[0], e, n, 1, 0);
	leaf(&cpu->leaves[1], e, n, 7, 0);
	leaf(&cpu->leaves[2], e, n, 0xd, 0);
	leaf(&cpu->leaves[3], e, n, 0x80000001, 0);
	/* Leaf 1 EBX holds the APIC id and CPU count: not the model, and
	 * different per vCPU; the fingerprint keeps EAX, ECX, EDX only. */
	cpu->leaves[0].ebx = 0;
	a = cpu->leaves[0].eax;
	fam = (a >> 8) & 0xf;
	cpu->family = fam == 0xf ? fam + ((a >> 20) & 0xff) : fam;
	cpu->model = (fam == 6 || fam == 0xf) ? (((a >> 16) & 0xf) << 4) | ((a >> 4) & 0xf)
					      : (a >> 4) & 0xf;
	cpu->stepping = a & 0xf;
}
