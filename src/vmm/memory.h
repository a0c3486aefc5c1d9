/*
 * Guest physical memory: one lazily allocated mapping (anonymous, or private
 * from a snapshot's memory file) split around
 * the 32-bit MMIO hole. Every guest-supplied address goes through
 * guest_mem_ptr(), which checks the whole range for overflow and containment.
 */
#ifndef KILN_VMM_MEMORY_H
#define KILN_VMM_MEMORY_H

#include <stddef.h>
#include <stdint.h>

/* RAM below 4 GiB ends here; [MEM_HOLE_START, 4 GiB) holds device MMIO. */
#define MEM_HOLE_START 0xC0000000ULL
#define MEM_4G 0x100000000ULL
#define MEM_MAX_SIZE (64ULL << 30)
#define MEM_MAX_REGIONS 2

struct guest_mem;

struct mem_region {
	uint64_t gpa;
	uint64_t size;
	void *host;
};

/* size: bytes of guest RAM, a multiple of 4 KiB, 1 MiB..MEM_MAX_SIZE. 0 or -errno. */
int guest_mem_create(struct guest_mem **out, uint64_t size);
/* The same layout, mapped MAP_PRIVATE from fd (a snapshot's memory file of
 * at least size bytes, region after region from offset 0); fd < 0: anonymous. */
int guest_mem_create_file(struct guest_mem **out, uint64_t size, int fd);
void guest_mem_free(struct guest_mem *m);

uint64_t guest_mem_size(const struct guest_mem *m);
unsigned guest_mem_nregions(const struct guest_mem *m);
const struct mem_region *guest_mem_region(const struct guest_mem *m, unsigned idx);

/* Host pointer for [gpa, gpa + len) when the range lies wholly inside one RAM
 * region, else NULL. len 0 is treated as 1. Never trusts gpa or len. */
void *guest_mem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len);

/* Copy to/from guest RAM; 0 or -EFAULT when the range is not RAM. */
int guest_mem_read(const struct guest_mem *m, uint64_t gpa, void *buf, size_t len);
int guest_mem_write(const struct guest_mem *m, uint64_t gpa, const void *buf, size_t len);

#endif
