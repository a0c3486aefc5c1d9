/*
 * Snapshot capture without KVM (src/vmm/snapshot.c): the memory file is the
 * guest RAM byte for byte, exactly its size, with holes for zero pages, also
 * across the 32-bit hole; the fds a SNAPSHOT carries are checked (regular
 * file, open for writing, not append-only, not the same file) before
 * anything is written.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "vmm/memory.h"
#include "vmm/snapfile.h"
#include "vmm/snapshot.h"

static int tmpfile_fd(char *path)
{
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	return fd;
}

static void test_memory_sparse(void **state)
{
	char path[] = "/tmp/kiln-snapmem-XXXXXX";
	struct guest_mem *m = NULL;
	struct snap_memory layout;
	uint64_t written = 0, size = 64ULL << 20;
	uint8_t page[4096], back[4096];
	struct stat st;
	int fd;

	(void)state;
	assert_int_equal(guest_mem_create(&m, size), 0);
	memset(page, 0xa5, sizeof(page));
	/* Three pages of data: the first, one in the middle (partly), the last. */
	assert_int_equal(guest_mem_write(m, 0, page, sizeof(page)), 0);
	assert_int_equal(guest_mem_write(m, 40ULL << 20, page, 100), 0);
	assert_int_equal(guest_mem_write(m, size - 4096, page, sizeof(page)), 0);
	fd = tmpfile_fd(path);
	assert_int_equal(write(fd, "old contents", 12), 12);
	assert_int_equal(snapshot_write_memory(m, fd, &layout, &written), 0);
	assert_int_equal(written, 3 * 4096);
	assert_int_equal(layout.nregions, 1);
	assert_int_equal(layout.regions[0].size, size);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, (off_t)size);
	assert_true((uint64_t)st.st_blocks * 512 < 1ULL << 20);
	assert_int_equal(pread(fd, back, sizeof(back), 0), (ssize_t)sizeof(back));
	assert_memory_equal(back, page, sizeof(page));
	assert_int_equal(pread(fd, back, sizeof(back), 40ULL << 20), (ssize_t)sizeof(back));
	assert_memory_equal(back, page, 100);
	assert_int_equal(back[100], 0);
	assert_int_equal(pread(fd, back, sizeof(back), 4096), (ssize_t)sizeof(back));
	memset(page, 0, sizeof(page));
	assert_memory_equal(back, page, sizeof(page)); /* the old contents are gone */
	close(fd);
	unlink(path);
	guest_mem_free(m);
}

/* RAM above the hole: two regions, one after the other in the file. */
static void test_memory_two_regions(void **state)
{
	char path[] = "/tmp/kiln-snapmem-XXXXXX";
	struct guest_mem *m = NULL;
	struct snap_memory layout;
	uint64_t written = 0, size = MEM_HOLE_START + (8ULL << 20);
	uint8_t b = 0x42, back = 0;
	struct stat st;
	int fd;

	(void)state;
	assert_int_equal(guest_mem_create(&m, size), 0);
	assert_int_equal(guest_mem_write(m, MEM_4G + 5, &b, 1), 0);
	fd = tmpfile_fd(path);
	assert_int_equal(snapshot_write_memory(m, fd, &layout, &written), 0);
	assert_int_equal(layout.nregions, 2);
	assert_int_equal(layout.regions[1].gpa, MEM_4G);
	assert_int_equal(layout.regions[1].file_offset, MEM_HOLE_START);
	assert_int_equal(written, 4096);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, (off_t)size);
	assert_int_equal(pread(fd, &back, 1, (off_t)(MEM_HOLE_START + 5)), 1);
	assert_int_equal(back, 0x42);
	close(fd);
	unlink(path);
	guest_mem_free(m);
}

static void refused(int sfd, int mfd, const char *want)
{
	struct snapshot_src src = { 0 };
	struct snapshot_result res;
	char why[160] = "";

	assert_int_equal(snapshot_save(&src, sfd, mfd, &res, why, sizeof(why)), -EINVAL);
	if (!strstr(why, want))
		fail_msg("wanted '%s' in '%s'", want, why);
}

static void test_fds(void **state)
{
	char a[] = "/tmp/kiln-snapfd-XXXXXX", b[] = "/tmp/kiln-snapfd-XXXXXX";
	int sfd, mfd, ro, app, p[2];
	struct stat st;

	(void)state;
	sfd = tmpfile_fd(a);
	mfd = tmpfile_fd(b);
	ro = open(a, O_RDONLY);
	app = open(b, O_WRONLY | O_APPEND);
	assert_int_equal(pipe(p), 0);
	refused(ro, mfd, "the state file is not open for writing");
	refused(sfd, ro, "the memory file is not open for writing");
	refused(p[1], mfd, "the state file is not a regular file");
	refused(sfd, app, "the memory file is open in append mode");
	refused(sfd, sfd, "the same file");
	refused(-1, mfd, "the state file is not an open file");
	/* Nothing was written to either. */
	assert_int_equal(fstat(sfd, &st), 0);
	assert_int_equal(st.st_size, 0);
	assert_int_equal(fstat(mfd, &st), 0);
	assert_int_equal(st.st_size, 0);
	close(sfd);
	close(mfd);
	close(ro);
	close(app);
	close(p[0]);
	close(p[1]);
	unlink(a);
	unlink(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_memory_sparse),
		cmocka_unit_test(test_memory_two_regions),
		cmocka_unit_test(test_fds),
	};

	return cmocka_run_group_tests_name("snapshot", tests, NULL, NULL);
}
