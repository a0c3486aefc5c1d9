/*
 * The snapshot state file (src/vmm/snapfile.h): what the writer makes the
 * reader accepts, and every defect a hostile file can have is refused with a
 * line that names it: magic, version, size, checksum, header fields, CPU
 * fingerprint, section bounds, unknown mandatory sections, duplicates,
 * sizes that do not match their structure, missing sections.
 */
#include <errno.h>
#include <linux/kvm.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <cmocka.h>

#include "vmm/snapfile.h"

#define CPUS 2
#define MEM (128ULL << 20)

static void fingerprint(struct snap_cpu *cpu)
{
	struct kvm_cpuid_entry2 e[3];

	memset(e, 0, sizeof(e));
	e[0].function = 0;
	memcpy(&e[0].ebx, "Genu", 4);
	memcpy(&e[0].edx, "ineI", 4);
	memcpy(&e[0].ecx, "ntel", 4);
	e[1].function = 1;
	e[1].eax = 0x50654; /* family 6, model 0x55, stepping 4 */
	e[1].ebx = 0x12345678;
	e[2].function = 7;
	e[2].flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
	e[2].ebx = 0xabc;
	snap_cpu_from_cpuid(cpu, e, 3);
}

struct build {
	uint32_t skip_type;	/* leave this section out (vCPU 1's when per vCPU) */
	void (*extra)(struct snap_buf *b); /* then append these */
};

static void add_zero(struct snap_buf *b, uint32_t type, uint32_t index, size_t len)
{
	void *p = calloc(1, len ? len : 1);

	assert_non_null(p);
	snap_add(b, type, 0, index, p, len);
	free(p);
}

static void add_vcpu(struct snap_buf *b, const struct build *o, uint32_t c)
{
	static const struct {
		uint32_t type;
		size_t len;
	} secs[] = {
		{ SNAP_SEC_MP_STATE, sizeof(struct kvm_mp_state) },
		{ SNAP_SEC_REGS, sizeof(struct kvm_regs) },
		{ SNAP_SEC_SREGS, sizeof(struct kvm_sregs) },
		{ SNAP_SEC_XSAVE, sizeof(struct kvm_xsave) },
		{ SNAP_SEC_XCRS, sizeof(struct kvm_xcrs) },
		{ SNAP_SEC_LAPIC, sizeof(struct kvm_lapic_state) },
		{ SNAP_SEC_VCPU_EVENTS, sizeof(struct kvm_vcpu_events) },
	};
	struct snap_msrs h = { .count = 2 };
	struct kvm_msr_entry e[2] = { { .index = 0x10 }, { .index = 0x4b564d01 } };

	for (size_t i = 0; i < sizeof(secs) / sizeof(secs[0]); i++)
		if (!(o->skip_type == secs[i].type && c == 1))
			add_zero(b, secs[i].type, c, secs[i].len);
	if (!(o->skip_type == SNAP_SEC_MSRS && c == 1))
		snap_add2(b, SNAP_SEC_MSRS, c, &h, sizeof(h), e, sizeof(e));
}

/* A whole valid file (unless o says otherwise); *len its size. */
static uint8_t *build(const struct build *o, size_t *len)
{
	struct snap_cpu cpu;
	struct snap_vm vm = { .cpus = CPUS, .ndevices = 1, .mem_size = MEM };
	struct snap_memory mem = { .nregions = 1 };
	struct snap_virtio v = { .device_id = 4, .num_queues = 1, .dev_len = 3 };
	struct snap_buf b;
	uint8_t *out;

	fingerprint(&cpu);
	vm.device_ids[0] = 4;
	mem.regions[0].size = MEM;
	snap_begin(&b, &cpu, &vm);
	for (uint32_t c = 0; c < CPUS; c++)
		add_vcpu(&b, o, c);
	for (uint32_t i = 0; i < 3; i++)
		if (!(o->skip_type == SNAP_SEC_IRQCHIP && i == 2))
			add_zero(&b, SNAP_SEC_IRQCHIP, i, sizeof(struct kvm_irqchip));
	if (o->skip_type != SNAP_SEC_PIT)
		add_zero(&b, SNAP_SEC_PIT, 0, sizeof(struct kvm_pit_state2));
	add_zero(&b, SNAP_SEC_CLOCK, 0, sizeof(struct kvm_clock_data));
	if (o->skip_type != SNAP_SEC_VIRTIO)
		snap_add2(&b, SNAP_SEC_VIRTIO, 0, &v, sizeof(v), "dev", 3);
	snap_add(&b, SNAP_SEC_MEMORY, 0, 0, &mem, sizeof(mem));
	if (o->extra)
		o->extra(&b);
	assert_int_equal(snap_finish(&b), 0);
	*len = b.len;
	out = b.data;
	b.data = NULL;
	snap_buf_free(&b);
	return out;
}

static void recrc(uint8_t *buf, size_t len)
{
	uint32_t crc = (uint32_t)crc32(0L, buf, (uInt)(len - 4));

	memcpy(buf + len - 4, &crc, 4);
}

/* Offset of section n's header (0-based). */
static size_t sec_at(const uint8_t *buf, unsigned n)
{
	size_t off = sizeof(struct snap_header);
	struct snap_sec_hdr h;

	for (unsigned i = 0; i < n; i++) {
		memcpy(&h, buf + off, sizeof(h));
		off += sizeof(h) + h.len;
	}
	return off;
}

static void refused(const uint8_t *buf, size_t len, const struct snap_cpu *expect,
		    const char *want)
{
	struct snap_file f;
	char why[256];

	memset(&f, 0x5a, sizeof(f));
	assert_int_equal(snap_parse(buf, len, expect, &f, why, sizeof(why)), -EINVAL);
	if (!strstr(why, want))
		fail_msg("wanted '%s' in '%s'", want, why);
	assert_null(strchr(why, '\n'));
	assert_null(f.sec);
	assert_int_equal(f.nsec, 0);
}

static void test_good(void **state)
{
	struct build o = { 0 };
	struct snap_cpu cpu;
	struct snap_file f;
	const struct snap_sec *s;
	char why[256];
	size_t len;
	uint8_t *buf = build(&o, &len);
	struct snap_msrs m;

	(void)state;
	fingerprint(&cpu);
	assert_int_equal(snap_parse(buf, len, &cpu, &f, why, sizeof(why)), 0);
	assert_string_equal(why, "ok");
	assert_int_equal(f.hdr.vm.cpus, CPUS);
	assert_int_equal(f.nsec, CPUS * 8 + 3 + 2 + 2);
	assert_memory_equal(f.hdr.cpu.vendor, "GenuineIntel", 12);
	assert_int_equal(f.hdr.cpu.family, 6);
	assert_int_equal(f.hdr.cpu.model, 0x55);
	assert_int_equal(f.hdr.cpu.stepping, 4);
	assert_int_equal(f.hdr.cpu.leaves[0].ebx, 0); /* APIC id: not part of the model */
	assert_int_equal(f.hdr.cpu.leaves[1].ebx, 0xabc);
	s = snap_find(&f, SNAP_SEC_MSRS, 1);
	assert_non_null(s);
	memcpy(&m, s->payload, sizeof(m));
	assert_int_equal(m.count, 2);
	s = snap_find(&f, SNAP_SEC_VIRTIO, 0);
	assert_non_null(s);
	assert_memory_equal(s->payload + sizeof(struct snap_virtio), "dev", 3);
	assert_null(snap_find(&f, SNAP_SEC_REGS, CPUS));
	assert_string_equal(snap_sec_name(SNAP_SEC_LAPIC), "lapic");
	assert_string_equal(snap_sec_name(0x7777), "?");
	snap_file_free(&f);
	/* Without an expected fingerprint, any host's is fine. */
	cpu.family++;
	assert_int_equal(snap_parse(buf, len, NULL, &f, why, sizeof(why)), 0);
	snap_file_free(&f);
	free(buf);
}

static void test_magic_version_size_checksum(void **state)
{
	struct build o = { 0 };
	size_t len;
	uint8_t *buf = build(&o, &len);
	uint32_t v = 2;

	(void)state;
	refused(buf, 0, NULL, "bad magic");
	refused(buf, 7, NULL, "bad magic");
	refused(buf, 10, NULL, "truncated before the format version");
	buf[0] ^= 1;
	refused(buf, len, NULL, "bad magic");
	buf[0] ^= 1;
	memcpy(buf + offsetof(struct snap_header, version), &v, 4);
	refused(buf, len, NULL, "unsupported format version 2");
	v = SNAP_VERSION;
	memcpy(buf + offsetof(struct snap_header, version), &v, 4);
	refused(buf, sizeof(struct snap_header), NULL, "truncated header");
	refused(buf, len - 1, NULL, "checksum");
	for (size_t i = 12; i < len; i += len / 37 + 1) {
		buf[i] ^= 0x40;
		refused(buf, len, NULL, "checksum mismatch");
		buf[i] ^= 0x40;
	}
	free(buf);
}

/* Change header field at off (4 bytes) to val, keep the checksum right. */
static void header_field(size_t off, uint32_t val, const char *want)
{
	struct build o = { 0 };
	size_t len;
	uint8_t *buf = build(&o, &len);

	memcpy(buf + off, &val, 4);
	recrc(buf, len);
	refused(buf, len, NULL, want);
	free(buf);
}

static void test_header(void **state)
{
	(void)state;
	header_field(offsetof(struct snap_header, header_size), 12, "header size");
	header_field(offsetof(struct snap_header, reserved), 1, "reserved");
	header_field(offsetof(struct snap_header, vm.cpus), 0, "vCPU count");
	header_field(offsetof(struct snap_header, vm.cpus), 33, "vCPU count");
	header_field(offsetof(struct snap_header, vm.ndevices), 33, "device count");
	header_field(offsetof(struct snap_header, vm.ndevices), 2, "device ids");
	header_field(offsetof(struct snap_header, vm.mem_size), 4095, "memory size");
	header_field(offsetof(struct snap_header, nsections), SNAP_MAX_SECTIONS + 1, "too many");
	header_field(offsetof(struct snap_header, nsections), 3, "more sections than");
	header_field(offsetof(struct snap_header, nsections), 100, "fewer sections than");
	/* A file that claims more vCPUs than it has sections for. */
	header_field(offsetof(struct snap_header, vm.cpus), 3, "a vCPU lacks");
}

static void test_fingerprint(void **state)
{
	struct build o = { 0 };
	struct snap_cpu cpu;
	size_t len;
	uint8_t *buf = build(&o, &len);

	(void)state;
	fingerprint(&cpu);
	cpu.model++;
	refused(buf, len, &cpu, "CPU fingerprint");
	fingerprint(&cpu);
	cpu.leaves[2].ecx ^= 1;
	refused(buf, len, &cpu, "CPU fingerprint");
	free(buf);
}

static void test_section_bounds(void **state)
{
	struct build o = { 0 };
	struct snap_sec_hdr h;
	size_t len, off;
	uint8_t *buf = build(&o, &len);

	(void)state;
	/* The last section's length one past the end, then huge. */
	off = sec_at(buf, CPUS * 8 + 3 + 2 + 1);
	memcpy(&h, buf + off, sizeof(h));
	h.len++;
	memcpy(buf + off, &h, sizeof(h));
	recrc(buf, len);
	refused(buf, len, NULL, "length runs past the end");
	h.len = UINT32_MAX;
	memcpy(buf + off, &h, sizeof(h));
	recrc(buf, len);
	refused(buf, len, NULL, "section 23 (memory 0, type 0x103");
	free(buf);
	/* A section header cut by the checksum. */
	buf = build(&o, &len);
	off = sec_at(buf, 1);
	memcpy(&h, buf + off, sizeof(h));
	h.flags = 4;
	memcpy(buf + off, &h, sizeof(h));
	recrc(buf, len);
	refused(buf, len, NULL, "unknown flags");
	free(buf);
}

static void extra_unknown(struct snap_buf *b)
{
	snap_add(b, 0x7777, 0, 0, "abc", 3);
}

static void extra_optional(struct snap_buf *b)
{
	snap_add(b, 0x7777, SNAP_SEC_F_OPTIONAL, 0, "abc", 3);
}

static void extra_dup(struct snap_buf *b)
{
	add_zero(b, SNAP_SEC_REGS, 1, sizeof(struct kvm_regs));
}

static void extra_short_regs(struct snap_buf *b)
{
	add_zero(b, SNAP_SEC_REGS, 1, sizeof(struct kvm_regs) - 8);
}

static void extra_long_lapic(struct snap_buf *b)
{
	add_zero(b, SNAP_SEC_LAPIC, 0, sizeof(struct kvm_lapic_state) + 1);
}

static void extra_bad_index(struct snap_buf *b)
{
	add_zero(b, SNAP_SEC_REGS, CPUS, sizeof(struct kvm_regs));
}

static void extra_bad_irqchip(struct snap_buf *b)
{
	add_zero(b, SNAP_SEC_IRQCHIP, 3, sizeof(struct kvm_irqchip));
}

static void extra_bad_msrs(struct snap_buf *b)
{
	struct snap_msrs h = { .count = 3 };
	struct kvm_msr_entry e[2];

	memset(e, 0, sizeof(e));
	snap_add2(b, SNAP_SEC_MSRS, 5, &h, sizeof(h), e, sizeof(e));
}

static void extra_small_xsave(struct snap_buf *b)
{
	add_zero(b, SNAP_SEC_XSAVE, 1, 1024);
}

static void run_extra(void (*extra)(struct snap_buf *), uint32_t skip, const char *want)
{
	struct build o = { .skip_type = skip, .extra = extra };
	size_t len;
	uint8_t *buf = build(&o, &len);

	refused(buf, len, NULL, want);
	free(buf);
}

static void test_sections(void **state)
{
	struct build o = { .extra = extra_optional };
	struct snap_file f;
	char why[256];
	size_t len;
	uint8_t *buf;

	(void)state;
	run_extra(extra_unknown, 0, "unknown mandatory section type");
	run_extra(extra_unknown, 0, "(? 0, type 0x7777, 3 bytes)");
	run_extra(extra_dup, 0, "duplicate section");
	run_extra(extra_dup, 0, "(regs 1,");
	run_extra(extra_short_regs, SNAP_SEC_REGS, "size does not match the structure");
	run_extra(extra_long_lapic, 0, "size does not match the structure");
	run_extra(extra_bad_index, 0, "index out of range");
	run_extra(extra_bad_irqchip, 0, "index out of range");
	run_extra(extra_bad_msrs, 0, "index out of range");
	run_extra(extra_small_xsave, SNAP_SEC_XSAVE, "XSAVE");
	/* An unknown optional section is skipped. */
	buf = build(&o, &len);
	assert_int_equal(snap_parse(buf, len, NULL, &f, why, sizeof(why)), 0);
	assert_null(snap_find(&f, 0x7777, 0));
	snap_file_free(&f);
	free(buf);
}

static void extra_msrs_count(struct snap_buf *b)
{
	struct snap_msrs h = { .count = 3 };
	struct kvm_msr_entry e[2];

	memset(e, 0, sizeof(e));
	snap_add2(b, SNAP_SEC_MSRS, 1, &h, sizeof(h), e, sizeof(e));
}

static void extra_msrs_huge(struct snap_buf *b)
{
	struct snap_msrs h = { .count = SNAP_MAX_MSRS + 1 };

	snap_add(b, SNAP_SEC_MSRS, 0, 1, &h, sizeof(h));
}

static void extra_virtio_len(struct snap_buf *b)
{
	struct snap_virtio v = { .device_id = 4, .num_queues = 1, .dev_len = 5 };

	snap_add2(b, SNAP_SEC_VIRTIO, 0, &v, sizeof(v), "dev", 3);
}

static void extra_virtio_queues(struct snap_buf *b)
{
	struct snap_virtio v = { .device_id = 4, .num_queues = SNAP_MAX_QUEUES + 1 };

	snap_add(b, SNAP_SEC_VIRTIO, 0, 0, &v, sizeof(v));
}

static void extra_virtio_id(struct snap_buf *b)
{
	struct snap_virtio v = { .device_id = 2, .num_queues = 1 };

	snap_add(b, SNAP_SEC_VIRTIO, 0, 0, &v, sizeof(v));
}

static void extra_virtio_short(struct snap_buf *b)
{
	snap_add(b, SNAP_SEC_VIRTIO, 0, 0, "x", 1);
}

static void test_payloads(void **state)
{
	(void)state;
	run_extra(extra_msrs_count, SNAP_SEC_MSRS, "does not match its MSR count");
	run_extra(extra_msrs_huge, SNAP_SEC_MSRS, "MSR count out of range");
	run_extra(extra_virtio_len, SNAP_SEC_VIRTIO, "device state length");
	run_extra(extra_virtio_queues, SNAP_SEC_VIRTIO, "queue count");
	run_extra(extra_virtio_id, SNAP_SEC_VIRTIO, "device id differs");
	run_extra(extra_virtio_short, SNAP_SEC_VIRTIO, "shorter than a virtio transport");
}

static void memory_layout(uint32_t n, uint64_t size0, uint64_t off0, const char *want)
{
	struct build o = { 0 };
	struct snap_memory m;
	size_t len, off;
	uint8_t *buf = build(&o, &len);

	off = sec_at(buf, CPUS * 8 + 3 + 2 + 1) + sizeof(struct snap_sec_hdr);
	memcpy(&m, buf + off, sizeof(m));
	m.nregions = n;
	m.regions[0].size = size0;
	m.regions[0].file_offset = off0;
	memcpy(buf + off, &m, sizeof(m));
	recrc(buf, len);
	refused(buf, len, NULL, want);
	free(buf);
}

static void test_memory(void **state)
{
	(void)state;
	memory_layout(0, MEM, 0, "region count");
	memory_layout(3, MEM, 0, "region count");
	memory_layout(1, MEM / 2, 0, "do not add up");
	memory_layout(1, MEM, 4096, "do not tile");
	memory_layout(1, MEM * 2, 0, "do not tile");
	memory_layout(2, MEM, 0, "do not tile");
}

static void test_missing(void **state)
{
	(void)state;
	run_extra(NULL, SNAP_SEC_REGS, "a vCPU lacks");
	run_extra(NULL, SNAP_SEC_MSRS, "a vCPU lacks");
	run_extra(NULL, SNAP_SEC_XSAVE, "exactly one of xsave and fpu");
	run_extra(NULL, SNAP_SEC_IRQCHIP, "an irqchip section is missing");
	run_extra(NULL, SNAP_SEC_PIT, "the pit, clock or memory section is missing");
	run_extra(NULL, SNAP_SEC_VIRTIO, "a device section is missing");
}

static void test_writer_limits(void **state)
{
	struct snap_cpu cpu;
	struct snap_vm vm = { .cpus = 1, .mem_size = MEM };
	struct snap_buf b;

	(void)state;
	fingerprint(&cpu);
	snap_begin(&b, &cpu, &vm);
	snap_add2(&b, SNAP_SEC_REGS, 0, "x", SNAP_MAX_FILE, "y", 1);
	assert_int_equal(b.err, -EFBIG);
	assert_int_equal(snap_finish(&b), -EFBIG);
	snap_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_magic_version_size_checksum),
		cmocka_unit_test(test_header),
		cmocka_unit_test(test_fingerprint),
		cmocka_unit_test(test_section_bounds),
		cmocka_unit_test(test_sections),
		cmocka_unit_test(test_payloads),
		cmocka_unit_test(test_memory),
		cmocka_unit_test(test_missing),
		cmocka_unit_test(test_writer_limits),
	};

	return cmocka_run_group_tests_name("snapfile", tests, NULL, NULL);
}
