# kiln: plain Makefile. Everything lands in build/.
#   make            binaries (build/kiln-vmm, build/kiln, ...)
#   make test       unit tests, fuzz harnesses briefly, integration tests (scripts/with-kvm)
#   make fuzz       every libFuzzer harness FUZZ_SECS (60) seconds (tests/fuzz/)
#   make kernel     guest kernel (cached outside the tree, see scripts/build-kernel)
#   make WERROR=0   warnings are not errors
#   make SANITIZE=1 ASan + UBSan build (into build/ as well: run `make clean` between modes)

CC      ?= gcc
B       := build
WERROR  ?= 1
SANITIZE ?= 0

WARN := -Wall -Wextra -Wformat=2 -Wshadow -Wmissing-prototypes -Wstrict-prototypes \
        -Wvla -Wnull-dereference -Wpointer-arith -Wwrite-strings -Wundef \
        -Wformat-nonliteral -Wimplicit-fallthrough -Wno-unused-parameter \
        -Wno-format-truncation
ifeq ($(WERROR),1)
WARN += -Werror
endif

CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 $(WARN) -fno-strict-aliasing -D_GNU_SOURCE -Isrc -Isrc/common \
            -fstack-protector-strong -D_FORTIFY_SOURCE=2 -fPIE
LDFLAGS  += -pie -Wl,-z,relro,-z,now
ifeq ($(SANITIZE),1)
CFLAGS   += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=address,undefined
endif
# kiln-vmm is one static PIE (libc, libseccomp, jansson, zlib inside): an exec
# maps one file and relocates nothing from other objects, the start every
# sandbox pays (62 -> 37 ms per exec in the emulated KVM host, docs/snapshot.md).
# A sanitized build stays dynamic.
VMM_LDFLAGS := $(filter-out -pie,$(LDFLAGS)) -static-pie
ifeq ($(SANITIZE),1)
VMM_LDFLAGS := $(LDFLAGS)
endif
# Guest-side binaries: static, never sanitized.
GUEST_CFLAGS := -std=gnu11 -O2 $(WARN) -D_GNU_SOURCE -Isrc -Isrc/common -static

# Each program's main() lives in its folder's main.c; everything else there is
# a module that unit tests may link.
COMMON_SRCS := $(wildcard src/common/*.c)
VMM_SRCS    := $(filter-out src/vmm/main.c,$(wildcard src/vmm/*.c src/vmm/devices/*.c src/vmm/virtio/*.c))
LIB_SRCS    := $(wildcard src/lib/*.c)
GUEST_SRCS  := $(filter-out src/guest/main.c,$(wildcard src/guest/*.c))
NET_SRCS    := $(filter-out src/net/main.c,$(wildcard src/net/*.c))
# kiln-net, the egress process: its modules need libslirp and stay out of unit tests.
KNET_SRCS   := $(wildcard src/net/proc/*.c)
LIBS        := -lpthread -ljansson -lseccomp -lz
# kilnd, the per-host daemon: HTTP (libmicrohttpd), records (SQLite), token hashes (libcrypto).
DAEMON_SRCS := $(filter-out src/daemon/main.c,$(wildcard src/daemon/*.c))
DAEMON_LIBS := -lmicrohttpd -lsqlite3 -lcrypto
# kiln-router, in front of a kilnd fleet: the same HTTP stack, DNS from libresolv.
ROUTER_SRCS := $(filter-out src/router/main.c,$(wildcard src/router/*.c))
ROUTER_LIBS := -lmicrohttpd -lcrypto -lresolv

COMMON_OBJS := $(COMMON_SRCS:%.c=$(B)/obj/%.o)
VMM_OBJS    := $(VMM_SRCS:%.c=$(B)/obj/%.o)
LIB_OBJS    := $(LIB_SRCS:%.c=$(B)/obj/%.o)
GUEST_OBJS  := $(GUEST_SRCS:%.c=$(B)/obj/%.o)
NET_OBJS    := $(NET_SRCS:%.c=$(B)/obj/%.o)
DAEMON_OBJS := $(DAEMON_SRCS:%.c=$(B)/obj/%.o)
ROUTER_OBJS := $(ROUTER_SRCS:%.c=$(B)/obj/%.o)
# The guest agent, built again statically (and never sanitized) for the guest.
GUEST_STATIC_OBJS := $(patsubst %.c,$(B)/gobj/%.o,$(wildcard src/guest/*.c) $(COMMON_SRCS))
TEST_LINK   := $(VMM_OBJS) $(LIB_OBJS) $(GUEST_OBJS) $(NET_OBJS) $(DAEMON_OBJS) $(ROUTER_OBJS) \
               $(COMMON_OBJS)

UNIT_SRCS   := $(wildcard tests/unit/test_*.c)
UNIT_BINS   := $(UNIT_SRCS:tests/unit/%.c=$(B)/tests/unit/%)
ITEST_SRCS  := $(wildcard tests/integration/*.c)
ITEST_BINS  := $(ITEST_SRCS:tests/integration/%.c=$(B)/tests/integration/%)

BINS := $(B)/kiln-vmm $(B)/kiln-net $(if $(wildcard src/cli/main.c),$(B)/kiln) \
        $(if $(wildcard src/daemon/main.c),$(B)/kilnd) \
        $(if $(wildcard src/router/main.c),$(B)/kiln-router)
# Test build of the VMM with KILN_TEST_HOOKS (a guest port that makes it break
# its seccomp policy on purpose); never installed or used outside the tests.
HOOK_BINS := $(B)/hooks/kiln-vmm
GUEST_BINS := $(B)/guest/kiln-mark $(B)/guest/test-initrd.cpio $(B)/guest/kiln-init \
              $(B)/guest/kiln-initrd.cpio $(B)/guest/fake-initrd.cpio

# Objects are never intermediate files: keep them between runs.
.SECONDARY:

.PHONY: all kernel test unit-test integration-test clean check-banned demo

all: $(BINS) $(GUEST_BINS) $(UNIT_BINS) $(ITEST_BINS) $(HOOK_BINS) $(B)/bench/kiln-exec-direct check-banned

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(B)/gobj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(GUEST_CFLAGS) -MMD -MP -c $< -o $@

$(B)/kiln-vmm: $(B)/obj/src/vmm/main.o $(VMM_OBJS) $(COMMON_OBJS)
	$(CC) $(VMM_LDFLAGS) -o $@ $^ $(LIBS)

$(B)/kiln-net: $(KNET_SRCS:%.c=$(B)/obj/%.o) $(NET_OBJS) $(COMMON_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) -lslirp

$(B)/hobj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DKILN_TEST_HOOKS -MMD -MP -c $< -o $@

$(B)/hooks/kiln-vmm: $(patsubst %.c,$(B)/hobj/%.o,src/vmm/main.c $(VMM_SRCS) $(COMMON_SRCS))
	@mkdir -p $(dir $@)
	$(CC) $(VMM_LDFLAGS) -o $@ $^ $(LIBS)

$(B)/kiln: $(patsubst %.c,$(B)/obj/%.o,$(wildcard src/cli/*.c)) $(LIB_OBJS) $(NET_OBJS) $(COMMON_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) -lcurl

$(B)/kilnd: $(B)/obj/src/daemon/main.o $(DAEMON_OBJS) $(LIB_OBJS) $(NET_OBJS) $(COMMON_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) $(DAEMON_LIBS)

$(B)/kiln-router: $(B)/obj/src/router/main.o $(ROUTER_OBJS) $(B)/obj/src/daemon/tokens.o $(B)/obj/src/daemon/listen.o \
		$(COMMON_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) $(ROUTER_LIBS)

# bench/api's baseline: execs straight through libkiln.
$(B)/bench/kiln-exec-direct: $(B)/obj/bench/exec_direct.o $(LIB_OBJS) $(NET_OBJS) $(COMMON_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(B)/guest/kiln-init: $(GUEST_STATIC_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(GUEST_CFLAGS) -o $@ $^

$(B)/tests/unit/%: tests/unit/%.c $(TEST_LINK)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit $(LDFLAGS) -o $@ $^ $(LIBS) $(DAEMON_LIBS) -lresolv -lcmocka

$(B)/tests/integration/%: tests/integration/%.c $(TEST_LINK)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS) $(DAEMON_LIBS) -lresolv

# Boot-timer mark for test initramfs images.
$(B)/guest/kiln-mark: tests/guest/kiln-mark.c
	@mkdir -p $(dir $@)
	$(CC) $(GUEST_CFLAGS) -o $@ $<

# A hostile guest agent (tests/integration/t-hostile.sh): the real protocol
# codec, its own initramfs with it as /init.
PROTO_DEPS := src/common/proto.c src/common/fleetid.c src/common/hostname.c
$(B)/guest/fake-agent: tests/guest/fake-agent.c $(PROTO_DEPS) src/common/proto.h
	@mkdir -p $(dir $@)
	$(CC) $(GUEST_CFLAGS) -o $@ tests/guest/fake-agent.c $(PROTO_DEPS)

$(B)/guest/fake-initrd.cpio: $(B)/guest/fake-agent
	@rm -rf $(B)/guest/fake.d && mkdir -p $(B)/guest/fake.d/dev $(B)/guest/fake.d/proc
	cp $(B)/guest/fake-agent $(B)/guest/fake.d/init
	cd $(B)/guest/fake.d && find . | cpio -o -H newc --quiet > ../fake-initrd.cpio.tmp
	mv $(B)/guest/fake-initrd.cpio.tmp $@ && rm -rf $(B)/guest/fake.d

# Always asks scripts/build-kernel: a cache hit costs a hash and a symlink.
kernel:
	scripts/build-kernel $(B)/guest/vmlinux >/dev/null

# Test initramfs: static busybox, the boot-timer mark and tests/guest/init.
$(B)/guest/test-initrd.cpio: tests/guest/init $(B)/guest/kiln-mark
	@rm -rf $(B)/guest/initrd.d && mkdir -p $(B)/guest/initrd.d/bin $(B)/guest/initrd.d/proc $(B)/guest/initrd.d/sys $(B)/guest/initrd.d/dev
	cp /bin/busybox $(B)/guest/initrd.d/bin/busybox
	cp $(B)/guest/kiln-mark $(B)/guest/initrd.d/bin/kiln-mark
	cp tests/guest/init $(B)/guest/initrd.d/init && chmod +x $(B)/guest/initrd.d/init
	cd $(B)/guest/initrd.d && find . | cpio -o -H newc --quiet > ../test-initrd.cpio.tmp
	mv $(B)/guest/test-initrd.cpio.tmp $@ && rm -rf $(B)/guest/initrd.d

# The guest's initramfs: kiln-init as /init, nothing else (it mounts the image).
$(B)/guest/kiln-initrd.cpio: $(B)/guest/kiln-init
	@rm -rf $(B)/guest/kinit.d && mkdir -p $(B)/guest/kinit.d/dev $(B)/guest/kinit.d/proc $(B)/guest/kinit.d/sys
	cp $(B)/guest/kiln-init $(B)/guest/kinit.d/init
	cd $(B)/guest/kinit.d && find . | cpio -o -H newc --quiet > ../kiln-initrd.cpio.tmp
	mv $(B)/guest/kiln-initrd.cpio.tmp $@ && rm -rf $(B)/guest/kinit.d

# Banned calls (unbounded copies and formats), as curl does with a checker.
check-banned:
	@if grep -nE '\b(strcpy|strcat|sprintf|vsprintf|gets|strtok)\s*\(' \
	    $$(find src tests -name '*.[ch]') ; then \
	    echo "banned function used (see above)"; exit 1; fi

test: all fuzz-build kernel image image-tiny
	scripts/run-tests

unit-test: $(UNIT_BINS)
	scripts/run-tests --unit

integration-test: all kernel image image-tiny
	scripts/run-tests --integration

# The README's main command: from a fresh machine to an agent script in a fresh microVM.
demo:
	scripts/install-deps
	$(MAKE) all kernel image
	@if [ -c /dev/kvm ] && [ -w /dev/kvm ]; then echo "demo: using this host's /dev/kvm"; \
	 else echo "demo: no usable /dev/kvm here: running inside scripts/with-kvm's emulated KVM host (slow, no hardware boundary)"; fi
	scripts/with-kvm --timeout 900 -- $(B)/kiln run --cpus 2 --mem 512 \
	    --put examples/agent.py:/root/agent.py -- python3 /root/agent.py

clean:
	rm -rf $(B)

-include $(shell find $(B)/obj $(B)/gobj $(B)/hobj -name '*.d' 2>/dev/null)

# --- images (scripts/build-image) ---
# Guest root file systems (read-only erofs for /dev/vda), cached outside the
# tree like the kernel: the links point into the cache. See docs/images.md.
# Always asks the script: a cache hit costs a hash and a symlink.
.PHONY: image image-tiny
image:
	scripts/build-image debian $(B)/images/debian.img >/dev/null

image-tiny:
	scripts/build-image tiny $(B)/images/tiny.img >/dev/null
# --- end images ---

# --- fuzzing (tests/fuzz, docs/security.md "Fuzzing") ---
# libFuzzer harnesses, built with clang into build/fuzz/ from the real sources
# (their own objects under build/fuzz/obj, never copies). `make fuzz` runs
# each FUZZ_SECS seconds over a copy of its seed corpus; `make test` runs each
# for a few seconds.
FUZZ_CC    ?= clang
FUZZ_SECS  ?= 60
FUZZ_SAN   := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
              -fno-omit-frame-pointer
FUZZ_WARN  := $(filter-out -Wno-format-truncation,$(WARN)) -Wno-missing-field-initializers
FUZZ_CFLAGS := -std=gnu11 -g -O1 $(FUZZ_WARN) $(FUZZ_SAN) -fno-strict-aliasing -D_GNU_SOURCE \
               -Isrc -Isrc/common -DKILN_FUZZ
FB         := $(B)/fuzz
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS  := $(FUZZ_NAMES:%=$(FB)/fuzz_%)
fobj = $(patsubst %.c,$(FB)/obj/%.o,$(1))

# What each harness links besides itself (real project sources).
FUZZ_LINK_proto   := $(call fobj,$(PROTO_DEPS))
FUZZ_LINK_agent_client := $(call fobj,src/lib/agent.c $(PROTO_DEPS) src/common/util.c src/common/sanitize.c)
FUZZ_LINK_agentd  := $(call fobj,src/guest/agentd.c src/guest/identity.c $(PROTO_DEPS))
FUZZ_LINK_virtq   := $(call fobj,src/vmm/virtio/queue.c src/vmm/memory.c)
# vsock.c and net.c are compiled into the harness itself (their work runs inline).
FUZZ_LINK_virtio  := $(call fobj,src/vmm/virtio/mmio.c src/vmm/virtio/queue.c \
                       src/vmm/memory.c src/vmm/io.c src/vmm/virtio/blk.c src/vmm/virtio/rng.c \
                       src/vmm/virtio/devthread.c src/vmm/seccomp.c src/common/util.c)
FUZZ_LIBS_virtio  := -lseccomp -lpthread -Wl,--wrap=now_ns
$(FB)/obj/tests/fuzz/fuzz_virtio.o: FUZZ_EXTRA := -Itests/fuzz/shim
FUZZ_LINK_dns     := $(call fobj,src/net/dnsmsg.c)
FUZZ_LINK_sniff   := $(call fobj,src/net/sniff.c)
FUZZ_LINK_rules   := $(call fobj,src/net/rules.c)
FUZZ_LINK_hosts   := $(call fobj,src/router/hosts.c src/common/fleetid.c src/common/util.c)
FUZZ_LINK_upstream := $(call fobj,src/router/upstream.c src/common/util.c)
FUZZ_LINK_pio     := $(call fobj,src/vmm/io.c src/vmm/devices/serial.c src/vmm/devices/i8042.c \
                       src/vmm/devices/power.c src/vmm/devices/boottimer.c src/common/util.c)
FUZZ_LINK_snapfile := $(call fobj,src/vmm/snapfile.c)
FUZZ_LIBS_snapfile := -lz
FUZZ_LINK_config  := $(call fobj,src/vmm/config.c src/common/util.c)
FUZZ_LIBS_config  := -ljansson
# kiln-net's main.c is compiled into the harness itself (its loop turns there).
FUZZ_LINK_knet    := $(call fobj,$(filter-out src/net/proc/main.c,$(KNET_SRCS)) \
                       $(NET_SRCS) src/common/util.c src/common/privs.c)
FUZZ_LIBS_knet    := -lslirp -ljansson -lseccomp -Wl,--wrap=now_ns

.PHONY: fuzz fuzz-build
fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-build
	tests/fuzz/run --secs $(FUZZ_SECS) $(FUZZ_NAMES)

$(FB)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_EXTRA) -fsanitize=fuzzer-no-link -Itests/unit \
	    -Itests/fuzz -MMD -MP -c $< -o $@

.SECONDEXPANSION:
$(FB)/fuzz_%: $(FB)/obj/tests/fuzz/fuzz_%.o $$(FUZZ_LINK_$$*)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(FUZZ_LIBS_$*)

-include $(shell find $(FB)/obj -name '*.d' 2>/dev/null)
# --- end fuzzing ---
