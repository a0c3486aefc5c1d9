/*
 * kiln-mark: writes the boot-timer magic to the VMM's boot-timer port, so the
 * VMM knows guest userspace runs. Static; used by the test initramfs.
 */
#include <stdio.h>
#include <sys/io.h>

#define BOOTTIMER_PORT 0x440
#define BOOTTIMER_MAGIC 0x6b696c6eU

int main(void)
{
	if (ioperm(BOOTTIMER_PORT, 4, 1) != 0) {
		perror("kiln-mark: ioperm");
		return 1;
	}
	outl(BOOTTIMER_MAGIC, BOOTTIMER_PORT);
	return 0;
}
