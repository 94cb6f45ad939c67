/*
 * tsm-deploy instruction meter: a QEMU TCG plugin (QEMU plugin API version 1, as in QEMU 7.2,
 * Debian bookworm's qemu-user) that counts the guest instructions executed, exactly, and
 * reports the count whenever the guest makes a "marker" system call.
 *
 * Counting: when QEMU translates a block of guest code, the plugin attaches to the block an
 * addition of the block's instruction count, run each time the block starts executing. A
 * block ends at a branch or at a system call, so at a marker the count holds every instruction
 * executed so far, the marker's own `svc` included.
 *
 *   mode=inline (default): one counter for the whole process, added by generated code (fast).
 *     Exact for a single-threaded guest; threads running at once race on it.
 *   mode=vcpu: one counter per guest thread (QEMU vCPU), through a helper call per block
 *     (slower); a marker reports the calling thread's own count, so helper threads (a spinning
 *     thread pool) never leak into it.
 *
 * Markers: the guest calls syscall(marker, tag) with a number no kernel uses; QEMU answers
 * ENOSYS, harmlessly, and the plugin, called before the syscall runs, appends one line to
 * `out`:  "<tag> <vcpu> <delta> <total>\n"  (delta: instructions since the previous marker
 * of the same counter; total: since the start). At exit: "exit <vcpu> 0 <total>" per counter.
 * The file is flushed after each line, so the guest or the host can read it while it runs.
 *
 * Arguments: -plugin meter.so,out=PATH[,marker=N][,mode=inline|vcpu]
 *
 * No QEMU header is needed: Debian does not ship qemu-plugin.h, so the few types and
 * functions used here are declared below, from the plugin API's documentation.
 *
 * The same file, compiled for the guest with -DTSM_METER_GUEST (aarch64-linux-gnu-gcc), is the
 * guest's helper instead: it sets the markers around a call of a TVM function from C, so that
 * nothing but the call runs between them (the Python interpreter in between would add a few
 * hundred instructions that vary with its allocator's state).
 */
#ifndef TSM_METER_GUEST
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the part of the QEMU plugin API (version 1) this plugin uses ---------------------------- */
typedef uint64_t qemu_plugin_id_t;
struct qemu_info_t; /* opaque here: not read */
struct qemu_plugin_tb;

enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS = 0 };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 = 0 };

typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index,
                                              int64_t num, uint64_t a1, uint64_t a2, uint64_t a3,
                                              uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7,
                                              uint64_t a8);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_syscall_cb_t cb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_outs(const char *string);

#define EXPORTED __attribute__((visibility("default")))
EXPORTED int qemu_plugin_version = 1;
/* ----------------------------------------------------------------------------------------------- */

#define MAX_VCPUS 512  /* guest threads alive at once; later indices share the last slot */

typedef struct {
    uint64_t count;
    uint64_t at_last_marker;
    char pad[48]; /* one cache line per thread: no false sharing between guest threads */
} Counter;

static Counter counters[MAX_VCPUS];
static Counter global; /* mode=inline */
static bool per_vcpu;
static int64_t marker_number = 0x7a5d;
static FILE *out;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned int slot(unsigned int vcpu) { return vcpu < MAX_VCPUS ? vcpu : MAX_VCPUS - 1; }

static void on_block_exec(unsigned int vcpu, void *n_insns)
{
    counters[slot(vcpu)].count += (uint64_t)(uintptr_t)n_insns;
}

static void on_block_translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    if (per_vcpu) {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_block_exec, QEMU_PLUGIN_CB_NO_REGS,
                                             (void *)(uintptr_t)n);
    } else {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &global.count, n);
    }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t tag,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    (void)id; (void)a2; (void)a3; (void)a4; (void)a5; (void)a6; (void)a7; (void)a8;
    if (num != marker_number) {
        return;
    }
    Counter *c = per_vcpu ? &counters[slot(vcpu)] : &global;
    pthread_mutex_lock(&out_lock);
    uint64_t now = c->count;
    fprintf(out, "%" PRIu64 " %u %" PRIu64 " %" PRIu64 "\n", tag, vcpu, now - c->at_last_marker, now);
    fflush(out);
    c->at_last_marker = now;
    pthread_mutex_unlock(&out_lock);
}

static void on_exit_(qemu_plugin_id_t id, void *userdata)
{
    (void)id; (void)userdata;
    pthread_mutex_lock(&out_lock);
    if (per_vcpu) {
        for (unsigned int v = 0; v < MAX_VCPUS; v++) {
            if (counters[v].count) {
                fprintf(out, "exit %u 0 %" PRIu64 "\n", v, counters[v].count);
            }
        }
    } else {
        fprintf(out, "exit 0 0 %" PRIu64 "\n", global.count);
    }
    fflush(out);
    pthread_mutex_unlock(&out_lock);
}

EXPORTED int qemu_plugin_install(qemu_plugin_id_t id, const struct qemu_info_t *info, int argc,
                                 char **argv)
{
    (void)info;
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "out=", 4) == 0) {
            path = arg + 4;
        } else if (strncmp(arg, "marker=", 7) == 0) {
            marker_number = strtoll(arg + 7, NULL, 0);
        } else if (strcmp(arg, "mode=vcpu") == 0) {
            per_vcpu = true;
        } else if (strcmp(arg, "mode=inline") == 0) {
            per_vcpu = false;
        } else {
            char message[256];
            snprintf(message, sizeof message, "tsm-deploy meter: unknown argument '%s'\n", arg);
            qemu_plugin_outs(message);
            return -1;
        }
    }
    if (path == NULL) {
        qemu_plugin_outs("tsm-deploy meter: out=PATH is required\n");
        return -1;
    }
    out = fopen(path, "w");
    if (out == NULL) {
        qemu_plugin_outs("tsm-deploy meter: cannot open the out= file\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_block_translated);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, on_exit_, NULL);
    return 0;
}
#else /* TSM_METER_GUEST: the guest-side helper --------------------------------------------- */
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

/* tvm-ffi's TVMFFIAny: a type index, 4 bytes of padding, an 8-byte value (here an object handle). */
typedef struct {
    int32_t type_index;
    uint32_t padding;
    uint64_t value;
} FfiAny;

/* TVMFFIFunctionCall(func, args, num_args, result) from libtvm_ffi.so, passed in by the caller. */
typedef int (*ffi_call_t)(void *func, FfiAny *args, int32_t num_args, FfiAny *result);

/* `repeat` calls of `func`, each between markers `tag + 2r` and `tag + 2r + 1`. Returns 0, or the
 * first nonzero status of a call (the error stays raised in tvm-ffi for the caller to fetch). */
__attribute__((visibility("default")))
int tsm_meter_calls(ffi_call_t call, void *func, FfiAny *args, int32_t num_args, long marker,
                    long tag, int32_t repeat)
{
    for (int32_t r = 0; r < repeat; r++) {
        FfiAny result = {0, 0, 0}; /* kTVMFFINone: compiled functions return nothing */
        syscall(marker, tag + 2 * r);
        int status = call(func, args, num_args, &result);
        syscall(marker, tag + 2 * r + 1);
        if (status != 0) {
            return status;
        }
    }
    return 0;
}

static int do_nothing(void *func, FfiAny *args, int32_t num_args, FfiAny *result)
{
    (void)func; (void)args; (void)num_args; (void)result;
    return 0;
}

/* The markers' own cost: the same path with a call that does nothing. */
__attribute__((visibility("default")))
int tsm_meter_empty(long marker, long tag)
{
    return tsm_meter_calls(do_nothing, 0, 0, 0, marker, tag, 1);
}
#endif
