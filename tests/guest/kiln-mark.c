/*
 * kiln-mark: writes the boot-timer magic to the VMM's boot-timer port, so the
 * VMM knows guest userspace runs. Static; used by the test initramfs.
 * `kiln-mark PORT VALUE` writes one byte VALUE to I/O port PORT instead (the
 * tests use it to poke a test build's hooks).
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/io.h>

#define BOOTTIMER_PORT 0x440
#define BOOTTIMER_MAGIC 0x6b696c6eU

int main(int argc, char **argv)
{
	unsigned long port = BOOTTIMER_PORT, val = 0;
	char *end;

	if (argc == 3) {
		port = strtoul(argv[1], &end, 0);
		if (*end || port > 0xffff)
			return fprintf(stderr, "kiln-mark: bad port %s\n", argv[1]), 2;
		val = strtoul(argv[2], &end, 0);
		if (*end || val > 0xff)
			return fprintf(stderr, "kiln-mark: bad byte %s\n", argv[2]), 2;
	} else if (argc != 1) {
		fprintf(stderr, "usage: kiln-mark [PORT BYTE]\n");
		return 2;
	}
	if (ioperm(port, 4, 1) != 0) {
		perror("kiln-mark: ioperm");
		return 1;
	}
	if (argc == 3)
		outb((unsigned char)val, (unsigned short)port);
	else
		outl(BOOTTIMER_MAGIC, (unsigned short)port);
	return 0;
}
