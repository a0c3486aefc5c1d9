#include "vmm/memory.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

struct guest_mem {
	void *base;
	uint64_t size;
	unsigned nregions;
	struct mem_region regions[MEM_MAX_REGIONS];
};

int guest_mem_create(struct guest_mem **out, uint64_t size)
{
	return guest_mem_create_file(out, size, -1);
}

int guest_mem_create_file(struct guest_mem **out, uint64_t size, int fd)
{
	struct guest_mem *m = NULL;
	uint64_t low;
	int ret = -EINVAL;

	*out = NULL;
	if (size < (1ULL << 20) || size > MEM_MAX_SIZE || (size & 0xfff))
		goto out;
	ret = -ENOMEM;
	m = calloc(1, sizeof(*m));
	if (!m)
		goto out;
	/* From a file: MAP_PRIVATE, so pages load on demand, a write makes a
	 * private copy, and the file (and every other clone's view) stays. */
	m->base = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_NORESERVE | (fd < 0 ? MAP_ANONYMOUS : 0), fd, 0);
	if (m->base == MAP_FAILED) {
		m->base = NULL;
		ret = -errno;
		goto out;
	}
	m->size = size;
	/* Guest RAM never appears in core dumps of the VMM. */
	madvise(m->base, size, MADV_DONTDUMP);

	low = size < MEM_HOLE_START ? size : MEM_HOLE_START;
	m->regions[0] = (struct mem_region){ .gpa = 0, .size = low, .host = m->base };
	m->nregions = 1;
	if (size > low) {
		m->regions[1] = (struct mem_region){
			.gpa = MEM_4G, .size = size - low, .host = (char *)m->base + low,
		};
		m->nregions = 2;
	}
	*out = m;
	m = NULL;
	ret = 0;
out:
	guest_mem_free(m);
	return ret;
}

void guest_mem_free(struct guest_mem *m)
{
	if (!m)
		return;
	if (m->base)
		munmap(m->base, m->size);
	free(m);
}

uint64_t guest_mem_size(const struct guest_mem *m)
{
	return m->size;
}

unsigned guest_mem_nregions(const struct guest_mem *m)
{
	return m->nregions;
}

const struct mem_region *guest_mem_region(const struct guest_mem *m, unsigned idx)
{
	return idx < m->nregions ? &m->regions[idx] : NULL;
}

void *guest_mem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	if (len == 0)
		len = 1;
	for (unsigned i = 0; i < m->nregions; i++) {
		const struct mem_region *r = &m->regions[i];
		uint64_t off;

		if (gpa < r->gpa)
			continue;
		off = gpa - r->gpa;
		if (off >= r->size || len > r->size - off)
			continue;
		return (char *)r->host + off;
	}
	return NULL;
}

int guest_mem_read(const struct guest_mem *m, uint64_t gpa, void *buf, size_t len)
{
	const void *p = guest_mem_ptr(m, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(buf, p, len);
	return 0;
}

int guest_mem_write(const struct guest_mem *m, uint64_t gpa, const void *buf, size_t len)
{
	void *p = guest_mem_ptr(m, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(p, buf, len);
	return 0;
}
