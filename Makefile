# strata: `make` builds build/strata; `make test` installs what it needs and
# runs every test; `make demo` does the main job on a demo bundle.
CC      ?= cc
PKGS    := libplist-2.0 libcrypto jansson
CFLAGS  ?= -O2 -g
# SAN: sanitizer flags, added to compiling and linking (see test-asan)
ALL_CFLAGS = -std=c11 -Wall -Wextra -Werror -D_FILE_OFFSET_BITS=64 \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(CFLAGS) $(SAN)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lplist-2.0 -lcrypto -ljansson) -lpthread
B       ?= build

CLONE_SRC := clone/clone.c
STORE_SRC := store/util.c store/manifest.c store/chunker.c store/bundle.c store/store.c store/check.c store/savedstate.c
BOOT_SRC  := boot/settings.c boot/qemu.c boot/instance.c
TEST_NAMES := test_clone test_store test_boot test_vz

# The vz driver runs on macOS against Virtualization.framework; elsewhere it
# is only built into test_vz, linked with tests/objc_record.c, a recording
# stand-in of the Objective-C runtime.
ifeq ($(shell uname -s),Darwin)
BOOT_SRC   += boot/vz.c boot/objc_apple.c
ALL_CFLAGS += -fblocks -DSTRATA_HAVE_VZ
LDLIBS     += -framework Foundation -framework Virtualization
CODESIGN   := codesign --sign - --entitlements boot/vz.entitlements --force
else
CODESIGN   :=
endif

LIB_SRC   := $(CLONE_SRC) $(STORE_SRC) $(BOOT_SRC)
LIB_OBJ   := $(LIB_SRC:%.c=$(B)/%.o)
TESTS     := $(TEST_NAMES:%=$(B)/tests/%)

.PHONY: all tests test test-unit test-asan demo deps bench clean
all: $(B)/strata $(B)/mkbundle

$(B)/%.o: %.c $(wildcard */*.h) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(B)/libstrata.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

CLI_OBJ   := $(patsubst %.c,$(B)/%.o,$(wildcard cli/*.c))

$(B)/strata: $(CLI_OBJ) $(B)/libstrata.a
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)
	$(if $(CODESIGN),$(CODESIGN) $@)

$(B)/mkbundle: $(B)/fixtures/mkbundle.o $(B)/libstrata.a
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

tests: $(TESTS)

# the stand-in runtime is linked before the archive, so it is the one used
$(B)/tests/test_vz: $(B)/tests/test_vz.o $(B)/boot/vz.o $(B)/tests/objc_record.o $(B)/libstrata.a
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS) -lcmocka

$(B)/tests/%: $(B)/tests/%.o $(B)/libstrata.a
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS) -lcmocka

deps:
	sh .ci/deps.sh

# Unit and CLI tests, on ext4/the plain filesystem and on XFS and btrfs loop
# mounts when run as root; then the same under ASan+UBSan.
test: deps
	$(MAKE) all $(TESTS)
	sh tests/run.sh $(B)
	$(MAKE) test-asan

test-unit: all $(TESTS)
	sh tests/run.sh $(B)

test-asan:
	$(MAKE) B=build/asan CFLAGS="-O1 -g" \
	    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	    all tests
	STRATA_SANITIZED=1 sh tests/run.sh build/asan

demo: deps all
	sh fixtures/demo.sh $(B)

bench: all
	bash bench/run.sh

clean:
	rm -rf build
