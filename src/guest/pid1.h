/*
 * kiln-init's duties as PID 1 of the microVM: mounts, the overlay root,
 * hostname, loopback, the boot mark, and powering off. Fatal errors print
 * one line on the console and reboot (the VMM treats it as the VM's end).
 */
#ifndef KILN_GUEST_PID1_H
#define KILN_GUEST_PID1_H

#include <stdbool.h>

struct bootargs;

void pid1_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
__attribute__((noreturn, format(printf, 1, 2))) void pid1_fatal(const char *fmt, ...);

/* /proc, /dev and a console on fds 0-2. */
int pid1_early(void);
/* Parses kiln.* from /proc/cmdline (fatal on a bad value). */
void pid1_bootargs(struct bootargs *ba);
/* Overlay of the base image and the scratch layer, switched into; 0 when not needed. */
int pid1_root(const struct bootargs *ba);
/* /sys, cgroup2, /dev/pts, /dev/shm, /tmp, /run, hostname, loopback, oom protection. */
int pid1_system(const struct bootargs *ba);
/* 0x6b696c6e to an I/O port, for the VMM's boot timer; no-op for port < 0. */
void pid1_bootmark(int port);
/* Kill everything, sync, unmount what can be, reboot(RB_AUTOBOOT). */
__attribute__((noreturn)) void pid1_poweroff(void);

#endif
