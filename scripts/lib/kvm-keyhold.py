#!/usr/bin/env python3
"""Emulated KVM host only (scripts/with-kvm): keeps KVM's x86 static keys
switched on for the host's whole life, so that creating and destroying VMs
never live-patches the host kernel's code.

Why: KVM flips static keys (kvm_has_noapic_vcpu when a vCPU has no in-kernel
APIC, apic_sw_disabled for every new local APIC) as VMs come and go, and the
kernel patches those call sites with INT3 + IPIs (text_poke_bp). Under QEMU's
multi-threaded TCG that cross-modification sometimes leaves a vCPU looping on
a stale INT3 forever (both CPUs were found parked at asm_exc_int3 with
interrupts off), which hung the emulated host. One idle VM of each kind holds
the keys' counts above zero, so they never change again. It never runs guest
code. Killed when the emulated host powers off."""
import fcntl
import os
import signal

KVM_CREATE_VM = 0xAE01
KVM_CREATE_VCPU = 0xAE41
KVM_CREATE_IRQCHIP = 0xAE60

kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
held = []
# A VM with an in-kernel irqchip: its vCPU's local APIC starts software-disabled.
vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
fcntl.ioctl(vm, KVM_CREATE_IRQCHIP, 0)
held += [vm, fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)]
# A VM without one: its vCPU counts in kvm_has_noapic_vcpu.
vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
held += [vm, fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)]
os.write(1, b"ready\n")
os.close(1)
while True:
    signal.pause()
