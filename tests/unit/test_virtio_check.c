/*
 * --check-writes (virtq_check_enable): a device store outside the writable
 * descriptors of its chain, or a used length that differs from the bytes
 * stored, is caught and named; correct devices (blk, rng through the real
 * transport) pass unnoticed; without a test hook the process ends with exit 7.
 */
#include "virtio_fake.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "vmm/virtio/blk.h"
#include "vmm/virtio/rng.h"

static char last_msg[512];
static unsigned violations;

static void record(const char *msg)
{
	snprintf(last_msg, sizeof(last_msg), "%s", msg);
	violations++;
}

static int setup(void **state)
{
	virtq_check_enable();
	virtq_check_set_fail(record);
	violations = 0;
	last_msg[0] = 0;
	return 0;
}

struct qt {
	struct fake_guest g;
	struct fake_vq vq;
	struct virtq q;
	struct virtq_chain c;
};

/* Queue 1 of device "test"; chain 5: 64 readable bytes, then writable 100 + 50. */
static struct qt *qt_new(void)
{
	struct qt *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	fake_mem_init(&t->g, FAKE_RAM_SIZE);
	t->vq = fake_vq_std(8);
	fake_vq_clear(&t->g, &t->vq);
	t->q.size = 8;
	t->q.desc_gpa = t->vq.desc;
	t->q.avail_gpa = t->vq.avail;
	t->q.used_gpa = t->vq.used;
	t->q.dev_name = "test";
	t->q.index = 1;
	assert_int_equal(virtq_enable(&t->q, t->g.mem, VIRTQ_MAX_SIZE, 0), 0);
	fake_desc(&t->g, FAKE_DESC, 5, FAKE_DATA, 64, VIRTQ_DESC_F_NEXT, 2);
	fake_desc(&t->g, FAKE_DESC, 2, FAKE_DATA + 0x1000, 100, FAKE_WNEXT, 3);
	fake_desc(&t->g, FAKE_DESC, 3, FAKE_DATA + 0x2000, 50, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&t->g, &t->vq, 5);
	assert_int_equal(virtq_pop(&t->q, &t->c), 1);
	assert_int_equal(t->c.in_bytes, 150);
	return t;
}

static void qt_free(struct qt *t)
{
	guest_mem_free(t->g.mem);
	free(t);
}

static void test_correct_writes_pass(void **state)
{
	struct qt *t = qt_new();
	uint8_t buf[150] = { 1 };
	uint8_t *w1 = fake_ptr(&t->g, FAKE_DATA + 0x1000, 100);
	struct iovec slice[2] = { { w1 + 10, 90 }, { fake_ptr(&t->g, FAKE_DATA + 0x2000, 50), 50 } };

	/* A header by copy, then 120 bytes "read" into a slice after it. */
	assert_int_equal(virtq_chain_write(&t->c, 0, buf, 10), 10);
	virtq_chain_wrote(&t->c, slice, 2, 120);
	assert_int_equal(virtq_push(&t->q, 5, 130), 0);
	assert_int_equal(violations, 0);
	qt_free(t);
}

static void test_store_past_segment(void **state)
{
	struct qt *t = qt_new();
	uint8_t *w1 = fake_ptr(&t->g, FAKE_DATA + 0x1000, 101);
	/* A slice one byte longer than its descriptor: the classic off-by-one. */
	struct iovec slice = { w1, 101 };

	virtq_chain_wrote(&t->c, &slice, 1, 0);
	assert_int_equal(violations, 1);
	assert_non_null(strstr(last_msg, "virtio check: test queue 1 chain 5:"));
	assert_non_null(strstr(last_msg, "outside the chain's 150 writable bytes"));
	assert_non_null(strstr(last_msg, "(exit 7)"));
	qt_free(t);
}

static void test_store_into_readable(void **state)
{
	struct qt *t = qt_new();
	struct iovec slice = { fake_ptr(&t->g, FAKE_DATA, 8), 8 };

	virtq_chain_wrote(&t->c, &slice, 1, 8);
	assert_int_equal(violations, 1);
	assert_non_null(strstr(last_msg, "store of 8 bytes"));
	qt_free(t);
}

static void test_store_before_segment(void **state)
{
	struct qt *t = qt_new();
	uint8_t *w2 = fake_ptr(&t->g, FAKE_DATA + 0x2000 - 1, 2);
	struct iovec slice = { w2, 2 };

	virtq_chain_wrote(&t->c, &slice, 1, 2);
	assert_int_equal(violations, 1);
	qt_free(t);
}

static void test_more_stored_than_slice(void **state)
{
	struct qt *t = qt_new();
	struct iovec slice = { fake_ptr(&t->g, FAKE_DATA + 0x1000, 100), 100 };

	virtq_chain_wrote(&t->c, &slice, 1, 120);
	assert_int_equal(violations, 1);
	assert_non_null(strstr(last_msg, "20 bytes stored beyond"));
	qt_free(t);
}

static void test_used_len_too_big(void **state)
{
	struct qt *t = qt_new();
	uint8_t buf[10] = { 0 };

	virtq_chain_write(&t->c, 0, buf, sizeof(buf));
	assert_int_equal(virtq_push(&t->q, 5, 11), 0);
	assert_int_equal(violations, 1);
	assert_non_null(strstr(last_msg, "used length 11 but 10 bytes stored"));
	qt_free(t);
}

static void test_used_len_too_small(void **state)
{
	struct qt *t = qt_new();
	uint8_t buf[120] = { 0 };

	assert_int_equal(virtq_chain_write(&t->c, 0, buf, sizeof(buf)), 120);
	assert_int_equal(virtq_push(&t->q, 5, 100), 0);
	assert_int_equal(violations, 1);
	assert_non_null(strstr(last_msg, "used length 100 but 120 bytes stored"));
	qt_free(t);
}

static void test_push_unpopped_head(void **state)
{
	struct qt *t = qt_new();

	assert_int_equal(virtq_push(&t->q, 5, 0), 0);
	assert_int_equal(violations, 0);
	/* The same head a second time was never handed out again. */
	assert_int_equal(virtq_push(&t->q, 5, 0), 0);
	assert_int_equal(violations, 1);
	assert_non_null(strstr(last_msg, "chain 5: pushed but not outstanding"));
	qt_free(t);
}

/* A chain given back (virtq_unpop) is no longer outstanding: popping it
 * again is no "popped again", pushing the old pop's head is. */
static void test_unpop_forgets(void **state)
{
	struct qt *t = qt_new();

	assert_int_equal(virtq_unpop(&t->q), 0);
	assert_int_equal(virtq_push(&t->q, 5, 0), 0);
	assert_int_equal(violations, 1);
	assert_non_null(strstr(last_msg, "chain 5: pushed but not outstanding"));
	assert_int_equal(virtq_pop(&t->q, &t->c), 1);
	assert_int_equal(t->c.head, 5);
	assert_int_equal(violations, 1);
	qt_free(t);
}

/* The real blk device through the transport: reads, GET_ID, a write. */
static void test_blk_device_passes(void **state)
{
	struct fake_guest g;
	struct fake_vq vq = fake_vq_std(16);
	struct vblk_params p = { .serial = "check" };
	struct vblk *b;
	char path[] = "/tmp/kiln-check-XXXXXX";
	struct virtio_blk_req_hdr h = { .type = VIRTIO_BLK_T_IN, .sector = 1 };
	struct virtq_used_elem e;
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	p.fd = fd;
	assert_int_equal(vblk_create(&b, &p), 0);
	fake_init(&g, &vblk_ops, b);
	fake_bring_up(&g, &vq, FAKE_VERSION_1);
	/* Read 4 KiB split over two descriptors, then status. */
	memcpy(fake_ptr(&g, FAKE_DATA, sizeof(h)), &h, sizeof(h));
	fake_desc(&g, FAKE_DESC, 0, FAKE_DATA, 16, VIRTQ_DESC_F_NEXT, 1);
	fake_desc(&g, FAKE_DESC, 1, FAKE_DATA + 0x1000, 1024, FAKE_WNEXT, 2);
	fake_desc(&g, FAKE_DESC, 2, FAKE_DATA + 0x3000, 3072, FAKE_WNEXT, 3);
	fake_desc(&g, FAKE_DESC, 3, FAKE_DATA + 0x100, 1, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&g, &vq, 0);
	fake_notify(&g, 0);
	assert_int_equal(fake_used_idx(&g, &vq), 1);
	e = fake_used_elem(&g, &vq, 0);
	assert_int_equal(e.len, 4097);
	/* GET_ID into exactly 20 bytes. */
	h.type = VIRTIO_BLK_T_GET_ID;
	memcpy(fake_ptr(&g, FAKE_DATA, sizeof(h)), &h, sizeof(h));
	fake_desc(&g, FAKE_DESC, 1, FAKE_DATA + 0x1000, 20, FAKE_WNEXT, 3);
	fake_avail_add(&g, &vq, 0);
	fake_notify(&g, 0);
	assert_int_equal(fake_used_idx(&g, &vq), 2);
	/* A write stores only its status byte. */
	h.type = VIRTIO_BLK_T_OUT;
	memcpy(fake_ptr(&g, FAKE_DATA, sizeof(h)), &h, sizeof(h));
	fake_desc(&g, FAKE_DESC, 1, FAKE_DATA + 0x1000, 512, VIRTQ_DESC_F_NEXT, 3);
	fake_avail_add(&g, &vq, 0);
	fake_notify(&g, 0);
	assert_int_equal(fake_used_idx(&g, &vq), 3);
	assert_false(fake_needs_reset(&g));
	assert_int_equal(violations, 0);
	fake_fini(&g);
	vblk_free(b);
	close(fd);
}

static void test_rng_device_passes(void **state)
{
	struct fake_guest g;
	struct fake_vq vq = fake_vq_std(16);
	struct vrng *r;

	assert_int_equal(vrng_create(&r), 0);
	fake_init(&g, &vrng_ops, r);
	fake_bring_up(&g, &vq, FAKE_VERSION_1);
	fake_desc(&g, FAKE_DESC, 0, FAKE_DATA, 100, FAKE_WNEXT, 1);
	fake_desc(&g, FAKE_DESC, 1, FAKE_DATA + 0x1000, 28, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&g, &vq, 0);
	fake_notify(&g, 0);
	assert_int_equal(fake_used_idx(&g, &vq), 1);
	assert_int_equal(fake_used_elem(&g, &vq, 0).len, 128);
	assert_int_equal(violations, 0);
	fake_fini(&g);
	vrng_free(r);
}

/* Without the hook: one line on stderr and exit status 7. */
static void test_violation_ends_process(void **state)
{
	int pipefd[2], st;
	char buf[512] = { 0 };
	ssize_t n;
	pid_t pid;

	assert_int_equal(pipe(pipefd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct qt *t;

		dup2(pipefd[1], STDERR_FILENO);
		virtq_check_set_fail(NULL);
		t = qt_new();
		virtq_push(&t->q, 5, 1);
		_exit(0);	/* not reached when the check works */
	}
	close(pipefd[1]);
	n = read(pipefd[0], buf, sizeof(buf) - 1);
	close(pipefd[0]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), VIRTQ_CHECK_EXIT);
	assert_true(n > 0);
	assert_string_equal(buf, "kiln-vmm: virtio check: test queue 1 chain 5: used length 1 but 0 "
				 "bytes stored (exit 7)\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_correct_writes_pass, setup),
		cmocka_unit_test_setup(test_store_past_segment, setup),
		cmocka_unit_test_setup(test_store_into_readable, setup),
		cmocka_unit_test_setup(test_store_before_segment, setup),
		cmocka_unit_test_setup(test_more_stored_than_slice, setup),
		cmocka_unit_test_setup(test_used_len_too_big, setup),
		cmocka_unit_test_setup(test_used_len_too_small, setup),
		cmocka_unit_test_setup(test_push_unpopped_head, setup),
		cmocka_unit_test_setup(test_unpop_forgets, setup),
		cmocka_unit_test_setup(test_blk_device_passes, setup),
		cmocka_unit_test_setup(test_rng_device_passes, setup),
		cmocka_unit_test_setup(test_violation_ends_process, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
