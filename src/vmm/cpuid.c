#include "vmm/cpuid.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#define LEAF1_ECX_VMX (1u << 5)
#define LEAF1_ECX_PDCM (1u << 15)
#define LEAF1_ECX_TSC_DEADLINE (1u << 24)
#define LEAF1_ECX_HYPERVISOR (1u << 31)
#define LEAF1_EDX_HTT (1u << 28)
#define EXT1_ECX_CMP_LEGACY (1u << 1)
#define EXT1_ECX_SVM (1u << 2)
#define EXT1_ECX_PERFCTR_CORE (1u << 23)
#define EXT1_ECX_PERFCTR_NB (1u << 24)
#define EXT1_ECX_PERFCTR_LLC (1u << 28)

enum vendor { VENDOR_OTHER, VENDOR_INTEL, VENDOR_AMD };

static enum vendor vendor_of(const struct kvm_cpuid2 *c)
{
	for (unsigned i = 0; i < c->nent; i++) {
		const struct kvm_cpuid_entry2 *e = &c->entries[i];
		char v[12];

		if (e->function != 0)
			continue;
		memcpy(v, &e->ebx, 4);
		memcpy(v + 4, &e->edx, 4);
		memcpy(v + 8, &e->ecx, 4);
		if (!memcmp(v, "GenuineIntel", 12))
			return VENDOR_INTEL;
		if (!memcmp(v, "AuthenticAMD", 12) || !memcmp(v, "HygonGenuine", 12))
			return VENDOR_AMD;
	}
	return VENDOR_OTHER;
}

/* Bits needed to number n items (ceil(log2(n))). */
static unsigned order_bits(unsigned n)
{
	unsigned b = 0;

	while ((1u << b) < n)
		b++;
	return b;
}

static void drop_function(struct kvm_cpuid2 *c, uint32_t fn)
{
	unsigned j = 0;

	for (unsigned i = 0; i < c->nent; i++)
		if (c->entries[i].function != fn)
			c->entries[j++] = c->entries[i];
	c->nent = j;
}

static bool has_function(const struct kvm_cpuid2 *c, uint32_t fn)
{
	for (unsigned i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn)
			return true;
	return false;
}

/* Intel leaves 0xB / 0x1F: SMT level (1 thread), core level (ncpus). */
static int add_topology_leaf(struct kvm_cpuid2 *c, unsigned max, uint32_t fn, unsigned apic_id,
			     unsigned ncpus)
{
	struct kvm_cpuid_entry2 e[3];

	if (c->nent + 3 > max)
		return -E2BIG;
	memset(e, 0, sizeof(e));
	for (unsigned i = 0; i < 3; i++) {
		e[i].function = fn;
		e[i].index = i;
		e[i].flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
		e[i].edx = apic_id;
		e[i].ecx = i;
	}
	e[0].eax = 0;
	e[0].ebx = 1;
	e[0].ecx |= 1u << 8;
	e[1].eax = order_bits(ncpus);
	e[1].ebx = ncpus;
	e[1].ecx |= 2u << 8;
	memcpy(&c->entries[c->nent], e, sizeof(e));
	c->nent += 3;
	return 0;
}

int cpuid_normalize(struct kvm_cpuid2 *c, unsigned max, unsigned vcpu_id, unsigned ncpus,
		    bool tsc_deadline)
{
	enum vendor vendor = vendor_of(c);
	bool leaf_b = has_function(c, 0xb), leaf_1f = has_function(c, 0x1f);
	int ret;

	for (unsigned i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		switch (e->function) {
		case 0x1:
			e->ebx = (e->ebx & 0x0000ffffu) | (vcpu_id << 24) | ((ncpus & 0xffu) << 16);
			e->ecx |= LEAF1_ECX_HYPERVISOR;
			e->ecx &= ~(LEAF1_ECX_VMX | LEAF1_ECX_PDCM);
			if (tsc_deadline)
				e->ecx |= LEAF1_ECX_TSC_DEADLINE;
			if (ncpus > 1)
				e->edx |= LEAF1_EDX_HTT;
			else
				e->edx &= ~LEAF1_EDX_HTT;
			break;
		case 0x4:
			/* Deterministic cache parameters: ncpus cores, one thread each. */
			if ((e->eax & 0x1f) == 0)
				break;
			e->eax &= 0x3fffu;
			e->eax |= (ncpus - 1) << 26;
			if (((e->eax >> 5) & 7) >= 3)
				e->eax |= (ncpus - 1) << 14;
			break;
		case 0xa: /* architectural PMU: none */
			e->eax = e->ebx = e->ecx = e->edx = 0;
			break;
		case 0x80000001:
			e->ecx &= ~(EXT1_ECX_SVM | EXT1_ECX_PERFCTR_CORE | EXT1_ECX_PERFCTR_NB |
				    EXT1_ECX_PERFCTR_LLC);
			if (vendor == VENDOR_AMD && ncpus > 1)
				e->ecx |= EXT1_ECX_CMP_LEGACY;
			break;
		case 0x80000008:
			if (vendor == VENDOR_AMD)
				e->ecx = (order_bits(ncpus) << 12) | (ncpus - 1);
			break;
		case 0x8000000a: /* SVM features: hidden */
		case 0x80000022: /* AMD PMU v2: none */
			e->eax = e->ebx = e->ecx = e->edx = 0;
			break;
		case 0x8000001d:
			if ((e->eax & 0x1f) == 0)
				break;
			e->eax &= ~(0xfffu << 14);
			if (((e->eax >> 5) & 7) >= 3)
				e->eax |= (ncpus - 1) << 14;
			break;
		case 0x8000001e:
			e->eax = vcpu_id;
			e->ebx = vcpu_id & 0xff; /* one thread per core */
			e->ecx = 0;
			break;
		default:
			break;
		}
	}

	if (leaf_b) {
		drop_function(c, 0xb);
		ret = add_topology_leaf(c, max, 0xb, vcpu_id, ncpus);
		if (ret)
			return ret;
	}
	if (leaf_1f) {
		drop_function(c, 0x1f);
		ret = add_topology_leaf(c, max, 0x1f, vcpu_id, ncpus);
		if (ret)
			return ret;
	}
	return 0;
}
