/*
 * kiln-vmm's snapshot state file (docs/vmm.md "Snapshots"): pure code, no KVM.
 *
 *   header (struct snap_header: magic, version, host CPU fingerprint, VM config)
 *   sections, each struct snap_sec_hdr + len bytes of payload, back to back
 *   crc32 (zlib) of everything before it, little-endian
 *
 * A writer (struct snap_buf) builds the file in memory; the reader treats a
 * file as hostile: it checks magic, version, checksum, header, fingerprint,
 * every section's bounds, size and uniqueness, and that every vCPU has its
 * sections, before anything in it is used. Payloads are the KVM UAPI
 * structures (struct kvm_regs, ...) or the snap_* structures below.
 */
#ifndef KILN_VMM_SNAPFILE_H
#define KILN_VMM_SNAPFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SNAP_MAGIC "KILNSNAP"
#define SNAP_VERSION 1
#define SNAP_MAX_FILE (64u << 20)	/* a state file is small: memory is apart */
#define SNAP_MAX_SECTIONS 1024
#define SNAP_MAX_CPUS 32
#define SNAP_MAX_DEVICES 32
#define SNAP_MAX_MSRS 4096
#define SNAP_MAX_XSAVE (64u << 10)
#define SNAP_MAX_DEV_STATE 4096
#define SNAP_MAX_REGIONS 2
#define SNAP_CPUID_LEAVES 4		/* 1, 7.0, 0xd.0, 0x8000_0001 */
#define SNAP_MAX_QUEUES 8

/* Section types. Per vCPU (index = vCPU id), VM-wide, per device (index = slot). */
enum snap_sec_type {
	SNAP_SEC_REGS = 1,	   /* struct kvm_regs */
	SNAP_SEC_SREGS = 2,	   /* struct kvm_sregs */
	SNAP_SEC_XSAVE = 3,	   /* struct kvm_xsave (4 KiB) or KVM_GET_XSAVE2's larger area */
	SNAP_SEC_FPU = 4,	   /* struct kvm_fpu, when the host has no XSAVE */
	SNAP_SEC_XCRS = 5,	   /* struct kvm_xcrs */
	SNAP_SEC_DEBUGREGS = 6,	   /* struct kvm_debugregs */
	SNAP_SEC_LAPIC = 7,	   /* struct kvm_lapic_state */
	SNAP_SEC_MSRS = 8,	   /* struct snap_msrs + count struct kvm_msr_entry */
	SNAP_SEC_MP_STATE = 9,	   /* struct kvm_mp_state */
	SNAP_SEC_VCPU_EVENTS = 10, /* struct kvm_vcpu_events */
	SNAP_SEC_TSC_KHZ = 11,	   /* uint64_t; optional */
	SNAP_SEC_IRQCHIP = 0x100,  /* struct kvm_irqchip; index 0 PIC master, 1 slave, 2 IOAPIC */
	SNAP_SEC_PIT = 0x101,	   /* struct kvm_pit_state2 */
	SNAP_SEC_CLOCK = 0x102,	   /* struct kvm_clock_data */
	SNAP_SEC_MEMORY = 0x103,   /* struct snap_memory: where the memory file's bytes go */
	SNAP_SEC_SERIAL = 0x104,   /* struct snap_serial: the COM1 UART's registers */
	SNAP_SEC_VIRTIO = 0x200,   /* struct snap_virtio + dev_len bytes of device state */
};

/* A reader that does not know a section with this flag may skip it. */
#define SNAP_SEC_F_OPTIONAL 1u

struct snap_cpuid_leaf {
	uint32_t function, index, eax, ebx, ecx, edx;
};

/* The host CPU as KVM reports it (KVM_GET_SUPPORTED_CPUID). */
struct snap_cpu {
	char vendor[12];
	uint32_t family, model, stepping;
	struct snap_cpuid_leaf leaves[SNAP_CPUID_LEAVES];
};

struct snap_vm {
	uint32_t cpus;
	uint32_t ndevices;		/* SNAP_SEC_VIRTIO sections */
	uint64_t mem_size;		/* bytes of guest RAM = the memory file's size */
	uint32_t device_ids[SNAP_MAX_DEVICES]; /* virtio device id per slot, 0 past ndevices */
};

struct snap_header {
	char magic[8];
	uint32_t version;
	uint32_t header_size;		/* sizeof(struct snap_header) */
	struct snap_cpu cpu;
	struct snap_vm vm;
	uint32_t nsections;
	uint32_t reserved;		/* 0 */
};

struct snap_sec_hdr {
	uint32_t type;
	uint32_t flags;
	uint32_t index;
	uint32_t len;			/* payload bytes that follow */
};

struct snap_msrs {
	uint32_t count;
	uint32_t pad;			/* 0 */
	/* struct kvm_msr_entry entries[count] */
};

struct snap_memory {
	uint32_t nregions;
	uint32_t pad;
	struct {
		uint64_t gpa, size, file_offset;
	} regions[SNAP_MAX_REGIONS];
};

struct snap_virtq {
	uint16_t size, last_avail, next_used, signalled_used;
	uint8_t ready, broken, event_idx, indirect;
	uint32_t pad;
	uint64_t desc_gpa, avail_gpa, used_gpa;
};

/* The 16550 UART's registers (src/vmm/devices/serial.c); its FIFOs are not kept. */
struct snap_serial {
	uint8_t ier, lcr, mcr, scr, dll, dlm, fcr, thre_pending;
};

/* One virtio-mmio transport (src/vmm/virtio/mmio.c) and its queues. */
struct snap_virtio {
	uint32_t device_id;
	uint32_t num_queues;		/* <= SNAP_MAX_QUEUES */
	uint64_t mmio_base;
	uint32_t gsi;
	uint32_t status;
	uint64_t offered, driver_features;
	uint32_t device_features_sel, driver_features_sel, queue_sel, int_status;
	uint32_t config_gen;
	uint32_t dev_len;		/* device state bytes after this struct */
	struct snap_virtq queues[SNAP_MAX_QUEUES];
};

/* --- writing --- */

struct snap_buf {
	uint8_t *data;
	size_t len, cap;
	uint32_t nsections;
	int err;			/* first failure (-ENOMEM, -EFBIG), sticky */
};

/* Start a file with its header (nsections is filled in by snap_finish). */
void snap_begin(struct snap_buf *b, const struct snap_cpu *cpu, const struct snap_vm *vm);
/* Append one section; a failure is kept in b->err. */
void snap_add(struct snap_buf *b, uint32_t type, uint32_t flags, uint32_t index,
	      const void *payload, size_t len);
/* Append a section made of two parts (a header struct and a variable tail). */
void snap_add2(struct snap_buf *b, uint32_t type, uint32_t index, const void *p1, size_t l1,
	       const void *p2, size_t l2);
/* Append the sections of part (a buffer made by snap_add alone, no header). */
void snap_append(struct snap_buf *b, const struct snap_buf *part);
/* Patch the section count, append the checksum. 0 or b->err. */
int snap_finish(struct snap_buf *b);
void snap_buf_free(struct snap_buf *b);

/* --- reading --- */

struct snap_sec {
	uint32_t type, flags, index, len;
	const uint8_t *payload;		/* inside the buffer given to snap_parse */
};

struct snap_file {
	struct snap_header hdr;
	unsigned nsec;
	struct snap_sec *sec;		/* nsec entries, in file order; known types only */
};

/*
 * Check buf (the whole file) and index its sections. expect: the fingerprint
 * this host must match, or NULL not to compare. 0, or -EINVAL with why
 * (one line) naming the first defect (nothing in *out to free then).
 */
int snap_parse(const uint8_t *buf, size_t len, const struct snap_cpu *expect,
	       struct snap_file *out, char *why, size_t whylen);
void snap_file_free(struct snap_file *f);
/* The section (type, index), or NULL. */
const struct snap_sec *snap_find(const struct snap_file *f, uint32_t type, uint32_t index);
/* A section type's name for listings ("regs", "virtio", ...), "?" if unknown. */
const char *snap_sec_name(uint32_t type);

/* The fingerprint from CPUID leaves as KVM reports them (n entries of
 * struct kvm_cpuid_entry2 layout: function, index, flags, eax..edx, pad). */
struct kvm_cpuid_entry2;
void snap_cpu_from_cpuid(struct snap_cpu *cpu, const struct kvm_cpuid_entry2 *e, unsigned n);

#endif
