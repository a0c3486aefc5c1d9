#include "vmm/boot.h"

#include <elf.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define HVM_START_MAGIC 0x336ec578U

/* x86/HVM direct boot ABI (Xen's public hvm/start_info.h), version 1. */
struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr;
	uint32_t memmap_entries;
	uint32_t reserved;
};

struct hvm_modlist_entry {
	uint64_t paddr;
	uint64_t size;
	uint64_t cmdline_paddr;
	uint64_t reserved;
};

struct hvm_memmap_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
	uint32_t reserved;
};

#define E820_RAM 1
#define E820_RESERVED 2

static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Scan one PT_NOTE segment for the PVH entry note. 1 found, 0 not, -errno. */
static int find_pvh_note(int fd, const Elf64_Phdr *ph, uint64_t file_size, uint32_t *entry)
{
	uint8_t buf[BOOT_ELF_MAX_NOTES];
	uint64_t len = ph->p_filesz;
	uint64_t pos = 0;
	int ret;

	if (ph->p_offset > file_size || len > file_size - ph->p_offset)
		return -ENOEXEC;
	if (len > sizeof(buf))
		len = sizeof(buf);
	ret = pread_full(fd, buf, len, ph->p_offset);
	if (ret)
		return ret;
	while (len - pos >= sizeof(Elf64_Nhdr)) {
		Elf64_Nhdr nh;
		uint64_t name_len, desc_len, desc_off;

		memcpy(&nh, buf + pos, sizeof(nh));
		name_len = ALIGN_UP((uint64_t)nh.n_namesz, 4);
		desc_len = ALIGN_UP((uint64_t)nh.n_descsz, 4);
		pos += sizeof(nh);
		if (name_len > len - pos || desc_len > len - pos - name_len)
			return 0;
		desc_off = pos + name_len;
		if (nh.n_type == XEN_ELFNOTE_PHYS32_ENTRY && nh.n_namesz == 4 &&
		    memcmp(buf + pos, "Xen", 4) == 0) {
			if (nh.n_descsz == 4) {
				memcpy(entry, buf + desc_off, 4);
				return 1;
			}
			if (nh.n_descsz == 8) {
				uint64_t e;

				memcpy(&e, buf + desc_off, 8);
				if (e > UINT32_MAX)
					return -ENOEXEC;
				*entry = (uint32_t)e;
				return 1;
			}
			return -ENOEXEC;
		}
		pos = desc_off + desc_len;
	}
	return 0;
}

int boot_load_elf(struct guest_mem *m, int fd, struct boot_kernel *k, const char **why)
{
	Elf64_Phdr ph[BOOT_ELF_MAX_PHDRS];
	Elf64_Ehdr eh;
	struct stat st;
	uint64_t lo = UINT64_MAX, hi = 0;
	int found = 0, nload = 0;
	uint32_t entry = 0;
	int ret = -ENOEXEC;

	memset(k, 0, sizeof(*k));
	*why = "cannot read the kernel file";
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		*why = "the kernel is not a regular file";
		goto out;
	}
	*why = "the kernel is not an ELF file (kiln boots an uncompressed vmlinux)";
	if ((uint64_t)st.st_size < sizeof(eh) || pread_full(fd, &eh, sizeof(eh), 0))
		goto out;
	if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
		goto out;
	*why = "the kernel is not a 64-bit x86 ELF executable";
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh.e_machine != EM_X86_64 || eh.e_type != ET_EXEC)
		goto out;
	*why = "the kernel's ELF program headers are malformed";
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 ||
	    eh.e_phnum > BOOT_ELF_MAX_PHDRS || eh.e_phoff > (uint64_t)st.st_size ||
	    (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > (uint64_t)st.st_size - eh.e_phoff)
		goto out;
	if (pread_full(fd, ph, eh.e_phnum * sizeof(Elf64_Phdr), eh.e_phoff))
		goto out;

	for (unsigned i = 0; i < eh.e_phnum; i++) {
		if (ph[i].p_type == PT_NOTE && !found) {
			int r = find_pvh_note(fd, &ph[i], (uint64_t)st.st_size, &entry);

			if (r < 0) {
				*why = "the kernel's PVH note is malformed";
				goto out;
			}
			found = r;
		}
	}
	if (!found) {
		*why = "the kernel has no PVH entry note (build it with CONFIG_PVH=y)";
		goto out;
	}

	for (unsigned i = 0; i < eh.e_phnum; i++) {
		const Elf64_Phdr *p = &ph[i];
		uint64_t end;
		void *dst;

		if (p->p_type != PT_LOAD || p->p_memsz == 0)
			continue;
		*why = "a kernel ELF segment lies outside the file";
		if (p->p_filesz > p->p_memsz || p->p_offset > (uint64_t)st.st_size ||
		    p->p_filesz > (uint64_t)st.st_size - p->p_offset)
			goto out;
		*why = "a kernel ELF segment does not fit in guest RAM";
		if (__builtin_add_overflow(p->p_paddr, p->p_memsz, &end) ||
		    p->p_paddr < BOOT_HIGHMEM_START)
			goto out;
		dst = guest_mem_ptr(m, p->p_paddr, p->p_memsz);
		if (!dst)
			goto out;
		*why = "cannot read the kernel file";
		ret = pread_full(fd, dst, p->p_filesz, p->p_offset);
		if (ret) {
			if (ret == -EIO)
				ret = -ENOEXEC;
			goto out;
		}
		memset((char *)dst + p->p_filesz, 0, p->p_memsz - p->p_filesz);
		if (p->p_paddr < lo)
			lo = p->p_paddr;
		if (end > hi)
			hi = end;
		nload++;
		ret = -ENOEXEC;
	}
	*why = "the kernel has no loadable segments";
	if (!nload)
		goto out;
	*why = "the kernel's PVH entry point is outside its loaded image";
	if (entry < lo || entry >= hi)
		goto out;
	k->entry = entry;
	k->load_start = lo;
	k->load_end = hi;
	*why = NULL;
	ret = 0;
out:
	return ret;
}

int boot_load_initrd(struct guest_mem *m, int fd, uint64_t size, const struct boot_kernel *k,
		     uint64_t *gpa)
{
	const struct mem_region *low = guest_mem_region(m, 0);
	uint64_t top, addr;
	void *dst;
	int ret;

	*gpa = 0;
	if (size == 0)
		return -EINVAL;
	top = low->gpa + low->size;
	if (size > top)
		return -E2BIG;
	addr = ALIGN_DOWN(top - size, 4096);
	if (addr < ALIGN_UP(k->load_end, 4096) || addr < BOOT_HIGHMEM_START)
		return -E2BIG;
	dst = guest_mem_ptr(m, addr, size);
	if (!dst)
		return -E2BIG;
	ret = pread_full(fd, dst, size, 0);
	if (ret)
		return ret;
	*gpa = addr;
	return 0;
}

int boot_setup_pvh(struct guest_mem *m, const char *cmdline, uint64_t initrd_gpa,
		   uint64_t initrd_size, uint64_t rsdp_gpa)
{
	struct hvm_memmap_entry map[4 + MEM_MAX_REGIONS];
	struct hvm_modlist_entry mod;
	struct hvm_start_info si;
	size_t cmdlen = strlen(cmdline) + 1;
	uint64_t map_gpa = BOOT_START_INFO + sizeof(si);
	uint64_t mod_gpa;
	unsigned n = 0;
	int ret;

	if (cmdlen > BOOT_CMDLINE_MAX)
		return -E2BIG;
	ret = guest_mem_write(m, BOOT_CMDLINE, cmdline, cmdlen);
	if (ret)
		return ret;

	map[n++] = (struct hvm_memmap_entry){ 0, BOOT_LOWMEM_END, E820_RAM, 0 };
	map[n++] = (struct hvm_memmap_entry){ BOOT_LOWMEM_END, BOOT_HIGHMEM_START - BOOT_LOWMEM_END,
					      E820_RESERVED, 0 };
	for (unsigned i = 0; i < guest_mem_nregions(m); i++) {
		const struct mem_region *r = guest_mem_region(m, i);
		uint64_t start = r->gpa < BOOT_HIGHMEM_START ? BOOT_HIGHMEM_START : r->gpa;

		if (r->gpa + r->size > start)
			map[n++] = (struct hvm_memmap_entry){ start, r->gpa + r->size - start,
							      E820_RAM, 0 };
	}
	mod_gpa = map_gpa + n * sizeof(map[0]);

	memset(&si, 0, sizeof(si));
	si.magic = HVM_START_MAGIC;
	si.version = 1;
	si.cmdline_paddr = BOOT_CMDLINE;
	si.rsdp_paddr = rsdp_gpa;
	si.memmap_paddr = map_gpa;
	si.memmap_entries = n;
	if (initrd_size) {
		memset(&mod, 0, sizeof(mod));
		mod.paddr = initrd_gpa;
		mod.size = initrd_size;
		ret = guest_mem_write(m, mod_gpa, &mod, sizeof(mod));
		if (ret)
			return ret;
		si.nr_modules = 1;
		si.modlist_paddr = mod_gpa;
	}
	if (mod_gpa + sizeof(mod) > BOOT_CMDLINE)
		return -E2BIG;
	ret = guest_mem_write(m, map_gpa, map, n * sizeof(map[0]));
	if (ret)
		return ret;
	return guest_mem_write(m, BOOT_START_INFO, &si, sizeof(si));
}
