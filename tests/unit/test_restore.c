/*
 * --restore's pure parts without KVM: restore_check() (the state file's VM
 * against the flags and the memory file: vCPUs, RAM, devices slot by slot,
 * vsock accepted, net refused, memory layout, memory file size); the virtio-mmio
 * transport brought back from a save (registers and queue indexes equal,
 * a buffer the guest made available before the save handled at restore,
 * every hostile register or queue refused and the transport left reset);
 * COM1's registers saved and restored through the guest's masks.
 */
#include "virtio_fake.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "vmm/devices/serial.h"
#include "vmm/memory.h"
#include "vmm/restore.h"
#include "vmm/snapfile.h"
#include "vmm/virtio/rng.h"

#define MIB (1ULL << 20)

/* ---- restore_check ---- */

struct sf {
	struct snap_file f;
	struct snap_sec sec;
	struct snap_memory mem;
	struct restore_want want;
};

/* A state file's view for cpus/mem_size with devices ids[n], the layout this
 * VMM makes, and flags that match it. */
static void sf_init(struct sf *s, unsigned cpus, uint64_t mem_size, const uint32_t *ids,
		    unsigned n)
{
	uint64_t low = mem_size < MEM_HOLE_START ? mem_size : MEM_HOLE_START;

	memset(s, 0, sizeof(*s));
	s->f.hdr.vm.cpus = cpus;
	s->f.hdr.vm.mem_size = mem_size;
	s->f.hdr.vm.ndevices = n;
	memcpy(s->f.hdr.vm.device_ids, ids, n * sizeof(*ids));
	s->mem.nregions = mem_size > low ? 2 : 1;
	s->mem.regions[0].size = low;
	if (mem_size > low) {
		s->mem.regions[1].gpa = MEM_4G;
		s->mem.regions[1].size = mem_size - low;
		s->mem.regions[1].file_offset = low;
	}
	s->sec.type = SNAP_SEC_MEMORY;
	s->sec.len = sizeof(s->mem);
	s->sec.payload = (const uint8_t *)&s->mem;
	s->f.nsec = 1;
	s->f.sec = &s->sec;
	s->want.cpus = cpus;
	s->want.mem_size = mem_size;
	s->want.ndevices = n;
	memcpy(s->want.device_ids, ids, n * sizeof(*ids));
}

static void check_refused(const struct sf *s, uint64_t mem_file, const char *want)
{
	char why[256] = "";

	assert_int_equal(restore_check(&s->f, &s->want, mem_file, why, sizeof(why)), -EINVAL);
	if (!strstr(why, want))
		fail_msg("wanted '%s' in '%s'", want, why);
	assert_null(strchr(why, '\n'));
}

static const uint32_t blk_rng[] = { VIRTIO_ID_BLOCK, VIRTIO_ID_RNG };

static void test_check_good(void **state)
{
	struct sf s;
	char why[256] = "";

	(void)state;
	sf_init(&s, 2, 256 * MIB, blk_rng, 2);
	assert_int_equal(restore_check(&s.f, &s.want, 256 * MIB, why, sizeof(why)), 0);
	/* RAM above the 32-bit hole: two regions. */
	sf_init(&s, 1, MEM_HOLE_START + 64 * MIB, blk_rng + 1, 1);
	assert_int_equal(restore_check(&s.f, &s.want, MEM_HOLE_START + 64 * MIB, why,
				       sizeof(why)), 0);
}

static void test_check_shape(void **state)
{
	struct sf s;

	(void)state;
	sf_init(&s, 2, 256 * MIB, blk_rng, 2);
	s.want.cpus = 3;
	check_refused(&s, 256 * MIB, "the snapshot has 2 vCPUs, --cpus says 3");
	sf_init(&s, 2, 256 * MIB, blk_rng, 2);
	s.want.mem_size = 512 * MIB;
	check_refused(&s, 256 * MIB, "the snapshot has 256 MiB of RAM, --mem says 512");
	sf_init(&s, 2, 256 * MIB, blk_rng, 2);
	check_refused(&s, 256 * MIB - 4096, "the memory file is 268431360 bytes, the snapshot's "
		      "RAM 268435456");
	check_refused(&s, 256 * MIB + 1, "the memory file is");
	check_refused(&s, 0, "the memory file is 0 bytes");
}

static void test_check_devices(void **state)
{
	static const uint32_t rng[] = { VIRTIO_ID_RNG };
	static const uint32_t vsock_rng[] = { VIRTIO_ID_VSOCK, VIRTIO_ID_RNG };
	static const uint32_t blk_net_rng[] = { VIRTIO_ID_BLOCK, VIRTIO_ID_NET, VIRTIO_ID_RNG };
	static const uint32_t blk_blk_rng[] = { VIRTIO_ID_BLOCK, VIRTIO_ID_BLOCK, VIRTIO_ID_RNG };
	char why[256] = "";
	struct sf s;

	(void)state;
	/* vsock is restorable (its state checks are the device's); net is
	 * refused even when the new VM has it too. */
	sf_init(&s, 1, 128 * MIB, vsock_rng, 2);
	assert_int_equal(restore_check(&s.f, &s.want, 128 * MIB, why, sizeof(why)), 0);
	sf_init(&s, 1, 128 * MIB, blk_net_rng, 3);
	check_refused(&s, 128 * MIB, "the snapshot has virtio-net (device 1), which cannot be "
		      "restored yet");
	/* vsock in the snapshot, none in the new VM. */
	sf_init(&s, 1, 128 * MIB, vsock_rng, 2);
	memcpy(s.want.device_ids, rng, sizeof(rng));
	s.want.ndevices = 1;
	check_refused(&s, 128 * MIB, "device 0 is virtio-vsock in the snapshot, virtio-rng in the "
		      "new VM");
	/* A device the new VM lacks, one it has in addition, one of another kind. */
	sf_init(&s, 1, 128 * MIB, blk_blk_rng, 3);
	memcpy(s.want.device_ids, blk_rng, sizeof(blk_rng));
	s.want.ndevices = 2;
	check_refused(&s, 128 * MIB, "device 1 is virtio-blk in the snapshot, virtio-rng in the "
		      "new VM");
	sf_init(&s, 1, 128 * MIB, blk_rng, 2);
	s.want.device_ids[2] = VIRTIO_ID_RNG;
	s.want.ndevices = 3;
	check_refused(&s, 128 * MIB, "the new VM has virtio-rng as device 2, the snapshot has none");
	sf_init(&s, 1, 128 * MIB, blk_rng, 2);
	s.want.ndevices = 1;
	check_refused(&s, 128 * MIB, "the snapshot has virtio-rng as device 1, the new VM has none");
	sf_init(&s, 1, 128 * MIB, rng, 1);
	s.want.device_ids[0] = VIRTIO_ID_BLOCK;
	check_refused(&s, 128 * MIB, "device 0 is virtio-rng in the snapshot, virtio-blk in the new");
	s.f.hdr.vm.device_ids[0] = 77;
	check_refused(&s, 128 * MIB, "device 0 is an unknown device in the snapshot");
}

static void test_check_layout(void **state)
{
	struct sf s;

	(void)state;
	sf_init(&s, 1, 128 * MIB, blk_rng, 2);
	s.mem.nregions = 2;
	check_refused(&s, 128 * MIB, "the state file's memory layout is not this VMM's");
	sf_init(&s, 1, 128 * MIB, blk_rng, 2);
	s.mem.regions[0].gpa = 4096;
	check_refused(&s, 128 * MIB, "memory layout is not this VMM's");
	sf_init(&s, 1, 128 * MIB, blk_rng, 2);
	s.mem.regions[0].file_offset = 4096;
	check_refused(&s, 128 * MIB, "memory layout is not this VMM's");
	sf_init(&s, 1, MEM_HOLE_START + 64 * MIB, blk_rng, 2);
	s.mem.regions[1].file_offset = 0;
	check_refused(&s, MEM_HOLE_START + 64 * MIB, "memory layout is not this VMM's");
	sf_init(&s, 1, 128 * MIB, blk_rng, 2);
	s.f.nsec = 0;
	check_refused(&s, 128 * MIB, "the state file has no memory layout");
}

/* restore_open() on files that are not a snapshot: one line, nothing kept
 * open; a FIFO in place of a file does not block. */
static void open_refused(const char *dir, const char *want)
{
	struct restore *r = (struct restore *)1;
	struct snap_cpu host;
	struct sf s;
	char why[256] = "";

	memset(&host, 0, sizeof(host));
	sf_init(&s, 1, 128 * MIB, blk_rng, 2);
	assert_true(restore_open(&r, dir, &host, &s.want, why, sizeof(why)) < 0);
	assert_null(r);
	if (!strstr(why, want))
		fail_msg("wanted '%s' in '%s'", want, why);
}

static void test_open(void **state)
{
	char dir[] = "/tmp/kiln-restore-XXXXXX", path[64];
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	open_refused(dir, "cannot open");
	snprintf(path, sizeof(path), "%s/state", dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	open_refused(dir, "the state file is not a regular file");
	unlink(path);
	f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	open_refused(dir, "the state file is 0 bytes");
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("KILNSNAP but not one", f);
	fclose(f);
	open_refused(dir, "state file: ");
	unlink(path);
	assert_int_equal(rmdir(dir), 0);
}

/* ---- the virtio-mmio transport, virtio-rng behind it ---- */

#define RNG_BUF (FAKE_DATA + 0x1000)

struct rt {
	struct fake_guest g;	/* the saved VM's transport and RAM */
	struct vrng *r;
	struct fake_vq vq;
	struct virtio_mmio_dev *dev2;	/* the new VM's, on the same RAM */
	struct vrng *r2;
	unsigned irqs2;
};

static void rt_irq2(void *ctx)
{
	((struct rt *)ctx)->irqs2++;
}

static struct rt *rt_new(void)
{
	struct rt *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	assert_int_equal(vrng_create(&t->r), 0);
	fake_init(&t->g, &vrng_ops, t->r);
	t->vq = fake_vq_std(16);
	fake_bring_up(&t->g, &t->vq, FAKE_VERSION_1 | VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX));
	assert_int_equal(vrng_create(&t->r2), 0);
	assert_int_equal(virtio_mmio_create(&t->dev2, &vrng_ops, t->r2, t->g.mem, rt_irq2, t), 0);
	return t;
}

static void rt_free(struct rt *t)
{
	virtio_mmio_free(t->dev2);
	vrng_free(t->r2);
	fake_fini(&t->g);
	vrng_free(t->r);
	free(t);
}

/* One 32-byte request made available (notify: handled now). */
static void rt_request(struct rt *t, uint16_t head, bool notify)
{
	fake_desc(&t->g, FAKE_DESC, head, RNG_BUF + 64ULL * head, 32, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&t->g, &t->vq, head);
	if (notify)
		fake_notify(&t->g, 0);
}

static void rt_save(struct rt *t, struct snap_virtio *v)
{
	uint8_t none[8];

	/* The guest took its interrupts: none is owed. */
	fake_wr(&t->g, R_INT_ACK, fake_rd(&t->g, R_INT_STATUS));
	assert_int_equal(virtio_mmio_save(t->g.dev, v, none, sizeof(none)), 0);
	assert_int_equal(v->dev_len, 0);
}

static void test_virtio_roundtrip(void **state)
{
	struct rt *t = rt_new();
	struct snap_virtio v, back;
	uint8_t none[8];
	char why[256] = "";

	(void)state;
	rt_request(t, 0, true);
	rt_request(t, 1, true);
	assert_int_equal(fake_used_idx(&t->g, &t->vq), 2);
	rt_save(t, &v);
	assert_int_equal(virtio_mmio_restore(t->dev2, &v, NULL, why, sizeof(why)), 0);
	assert_int_equal(virtio_mmio_save(t->dev2, &back, none, sizeof(none)), 0);
	assert_memory_equal(&back, &v, sizeof(v));
	assert_int_equal(t->irqs2, 0);	/* nothing owed */
	/* The new transport goes on from there: the next request is used as the third. */
	fake_desc(&t->g, FAKE_DESC, 2, RNG_BUF + 128, 32, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&t->g, &t->vq, 2);
	assert_int_equal(virtio_mmio_register(t->dev2, &t->g.bus, FAKE_MMIO_BASE + 0x1000), 0);
	{
		uint32_t q = 0;

		assert_true(io_dispatch(&t->g.bus, FAKE_MMIO_BASE + 0x1000 + R_QUEUE_NOTIFY,
					(uint8_t *)&q, 4, true));
	}
	assert_int_equal(fake_used_idx(&t->g, &t->vq), 3);
	assert_int_equal(fake_used_elem(&t->g, &t->vq, 2).id, 2);
	assert_int_equal(fake_used_elem(&t->g, &t->vq, 2).len, 32);
	rt_free(t);
}

/* A buffer the guest made available but never kicked before the save is
 * handled by the restore, and its interrupt raised. */
static void test_virtio_pending(void **state)
{
	struct rt *t = rt_new();
	struct snap_virtio v;
	char why[256] = "";

	(void)state;
	rt_request(t, 0, true);
	rt_request(t, 1, false);
	assert_int_equal(fake_used_idx(&t->g, &t->vq), 1);
	rt_save(t, &v);
	assert_int_equal(v.queues[0].last_avail, 1);
	assert_int_equal(virtio_mmio_restore(t->dev2, &v, NULL, why, sizeof(why)), 0);
	assert_int_equal(fake_used_idx(&t->g, &t->vq), 2);
	assert_int_equal(fake_used_elem(&t->g, &t->vq, 1).id, 1);
	assert_int_equal(t->irqs2, 1);
	rt_free(t);
}

/* Each hostile change to a good save is refused with why, the new transport
 * left reset (a second save shows status 0, no queue ready). */
static void refuse_virtio(struct rt *t, const struct snap_virtio *good,
			  void (*edit)(struct snap_virtio *), const void *dev_state,
			  const char *want)
{
	struct snap_virtio v = *good, after;
	uint8_t none[8];
	char why[256] = "";

	edit(&v);
	assert_int_equal(virtio_mmio_restore(t->dev2, &v, dev_state, why, sizeof(why)), -EINVAL);
	if (!strstr(why, want))
		fail_msg("wanted '%s' in '%s'", want, why);
	assert_int_equal(virtio_mmio_save(t->dev2, &after, none, sizeof(none)), 0);
	assert_int_equal(after.status, 0);
	assert_int_equal(after.driver_features, 0);
	assert_int_equal(after.queues[0].ready, 0);
	assert_int_equal(t->irqs2, 0);
}

static void e_device_id(struct snap_virtio *v) { v->device_id = VIRTIO_ID_BLOCK; }
static void e_queues(struct snap_virtio *v) { v->num_queues = 2; }
static void e_offered(struct snap_virtio *v) { v->offered |= VIRTIO_BIT(3); }
static void e_never_offered(struct snap_virtio *v) { v->driver_features |= VIRTIO_BIT(40); }
static void e_status_bits(struct snap_virtio *v) { v->status |= 0x10; }
static void e_ok_without_features(struct snap_virtio *v)
{
	v->status &= ~(uint32_t)VIRTIO_STATUS_FEATURES_OK;
}
static void e_no_version_1(struct snap_virtio *v)
{
	v->driver_features &= ~VIRTIO_BIT(VIRTIO_F_VERSION_1);
}
static void e_int_bits(struct snap_virtio *v) { v->int_status = 4; }
static void e_extra_queue(struct snap_virtio *v) { v->queues[1].size = 16; }
static void e_ready_early(struct snap_virtio *v)
{
	v->status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;
}
static void e_size(struct snap_virtio *v) { v->queues[0].size = 12; }
static void e_size_max(struct snap_virtio *v) { v->queues[0].size = 2 * VRNG_QUEUE_SIZE; }
static void e_outside(struct snap_virtio *v) { v->queues[0].used_gpa = FAKE_RAM_SIZE - 64; }
static void e_unaligned(struct snap_virtio *v) { v->queues[0].desc_gpa += 8; }
static void e_in_flight(struct snap_virtio *v) { v->queues[0].last_avail += 17; }
static void e_flags(struct snap_virtio *v) { v->queues[0].broken = 2; }
static void e_ring_feature(struct snap_virtio *v) { v->queues[0].indirect = 1; }
static void e_not_ready_idx(struct snap_virtio *v)
{
	v->queues[0].ready = 0;
	v->queues[0].last_avail = 5;
}
static void e_dev_state(struct snap_virtio *v) { v->dev_len = 4; }

static void test_virtio_refused(void **state)
{
	static const uint8_t four[4] = { 1, 2, 3, 4 };
	struct rt *t = rt_new();
	struct snap_virtio good;

	(void)state;
	rt_request(t, 0, true);
	rt_save(t, &good);
	refuse_virtio(t, &good, e_device_id, NULL, "its device id differs");
	refuse_virtio(t, &good, e_queues, NULL, "its queue count differs");
	refuse_virtio(t, &good, e_offered, NULL, "offers other features");
	refuse_virtio(t, &good, e_never_offered, NULL, "never offered");
	refuse_virtio(t, &good, e_status_bits, NULL, "its status has unknown bits");
	refuse_virtio(t, &good, e_ok_without_features, NULL, "DRIVER_OK without FEATURES_OK");
	refuse_virtio(t, &good, e_no_version_1, NULL, "lack VERSION_1");
	refuse_virtio(t, &good, e_int_bits, NULL, "interrupt status has unknown bits");
	refuse_virtio(t, &good, e_extra_queue, NULL, "a queue past the device's queues");
	refuse_virtio(t, &good, e_ready_early, NULL, "a queue is ready before FEATURES_OK");
	refuse_virtio(t, &good, e_size, NULL, "are not valid in this VM");
	refuse_virtio(t, &good, e_size_max, NULL, "are not valid in this VM");
	refuse_virtio(t, &good, e_outside, NULL, "are not valid in this VM");
	refuse_virtio(t, &good, e_unaligned, NULL, "are not valid in this VM");
	refuse_virtio(t, &good, e_in_flight, NULL, "are not valid in this VM");
	refuse_virtio(t, &good, e_flags, NULL, "are not valid in this VM");
	refuse_virtio(t, &good, e_ring_feature, NULL, "are not valid in this VM");
	refuse_virtio(t, &good, e_not_ready_idx, NULL, "are not valid in this VM");
	refuse_virtio(t, &good, e_dev_state, four, "virtio-rng: 4 bytes of device state");
	rt_free(t);
}

/* ---- COM1 ---- */

static void ser_irq(void *ctx)
{
	(*(unsigned *)ctx)++;
}

static void ser_out(struct serial *s, uint64_t off, uint8_t v)
{
	serial_io(s, off, &v, 1, true);
}

static void test_serial(void **state)
{
	unsigned irqs1 = 0, irqs2 = 0;
	struct serial *a = serial_create(-1, 0, ser_irq, &irqs1);
	struct serial *b = serial_create(-1, 0, ser_irq, &irqs2);
	struct snap_serial s, back, bad;

	(void)state;
	assert_non_null(a);
	assert_non_null(b);
	ser_out(a, 3, 0x83);	/* DLAB: the divisor */
	ser_out(a, 0, 0x01);
	ser_out(a, 1, 0x00);
	ser_out(a, 3, 0x03);	/* 8N1 */
	ser_out(a, 7, 0x5a);	/* scratch */
	ser_out(a, 4, 0x0b);	/* DTR RTS OUT2 */
	serial_save(a, &s);
	assert_int_equal(s.lcr, 0x03);
	assert_int_equal(s.dll, 0x01);
	assert_int_equal(s.scr, 0x5a);
	assert_int_equal(s.mcr, 0x0b);
	serial_restore(b, &s);
	serial_save(b, &back);
	assert_memory_equal(&back, &s, sizeof(s));
	/* Bits the guest could never have set are dropped as its writes would be. */
	bad = s;
	bad.ier = 0xff;
	bad.mcr = 0xff;
	bad.thre_pending = 7;
	serial_restore(b, &bad);
	serial_save(b, &back);
	assert_int_equal(back.ier, 0x0f);
	assert_int_equal(back.mcr, 0x1f);
	assert_int_equal(back.thre_pending, 1);
	/* THRE pending with its interrupt enabled: the line is raised again. */
	assert_true(irqs2 >= 1);
	serial_free(a);
	serial_free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_check_good),
		cmocka_unit_test(test_check_shape),
		cmocka_unit_test(test_check_devices),
		cmocka_unit_test(test_check_layout),
		cmocka_unit_test(test_open),
		cmocka_unit_test(test_virtio_roundtrip),
		cmocka_unit_test(test_virtio_pending),
		cmocka_unit_test(test_virtio_refused),
		cmocka_unit_test(test_serial),
	};

	return cmocka_run_group_tests_name("restore", tests, NULL, NULL);
}
