/* An LD_PRELOAD library for the benchmarks: this process sees a CPU without the
 * instruction-set extensions named in CLINIBOX_CPUID_MASK, at native speed.
 *
 * Runtimes choose their kernels from CPUID (ONNX Runtime's MLAS, oneDNN, XNNPACK, numpy).
 * With Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID, CPUs that list `cpuid_fault`)
 * every CPUID instruction of this process traps; the handler runs the real instruction and
 * clears the masked feature bits before the program sees them. The kernels that run are
 * then the ones chosen for such a CPU, executed by this core: the timing of an instruction
 * set's code path on this micro-architecture, not a measurement of another CPU.
 *
 *   CLINIBOX_CPUID_MASK=avx2     no AVX-512 (any), no VNNI (AVX-512 or AVX), no AMX
 *   CLINIBOX_CPUID_MASK=avx512   AVX-512 kept, no VNNI, no BF16/FP16, no AMX (Skylake-SP)
 *
 * Build: gcc -O2 -shared -fPIC cpuid_mask.c -o cpuid_mask.so
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static int mask_avx512; /* clear AVX-512 foundation and its families too */

static void real_cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
  __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                   : "a"(leaf), "c"(sub));
}

static void masked(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
  syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1); /* CPUID may run again, for this one */
  real_cpuid(leaf, sub, r);
  syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
  if (leaf == 7 && sub == 0) {
    /* EBX: AVX512F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31 */
    if (mask_avx512) r[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) |
                              (1u << 27) | (1u << 28) | (1u << 30) | (1u << 31));
    /* ECX: VBMI 1, VBMI2 6, VNNI 11, BITALG 12, VPOPCNTDQ 14 */
    r[2] &= ~(1u << 11);
    if (mask_avx512) r[2] &= ~((1u << 1) | (1u << 6) | (1u << 12) | (1u << 14));
    /* EDX: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, AMX-BF16 22, FP16 23, AMX-TILE 24, AMX-INT8 25 */
    r[3] &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) |
              (1u << 25));
  } else if (leaf == 7 && sub == 1) {
    /* EAX: AVX-VNNI 4, AVX512_BF16 5, AMX-FP16 21, AVX-IFMA 23; EDX: AVX-VNNI-INT8 4 */
    r[0] &= ~((1u << 4) | (1u << 5) | (1u << 21) | (1u << 23));
    r[3] &= ~(1u << 4);
  } else if (leaf == 0xd && (sub == 17 || sub == 18)) {
    r[0] = r[1] = r[2] = r[3] = 0; /* AMX tile state: not there */
  } else if (leaf == 0x1d || leaf == 0x1e) {
    r[0] = r[1] = r[2] = r[3] = 0; /* AMX tile information */
  }
}

static void on_fault(int sig, siginfo_t *info, void *context) {
  ucontext_t *uc = (ucontext_t *)context;
  greg_t *g = uc->uc_mcontext.gregs;
  const unsigned char *ip = (const unsigned char *)g[REG_RIP];
  (void)info;
  if (ip[0] != 0x0f || ip[1] != 0xa2) { /* not CPUID: a real crash */
    signal(sig, SIG_DFL);
    return;
  }
  uint32_t r[4];
  masked((uint32_t)g[REG_RAX], (uint32_t)g[REG_RCX], r);
  g[REG_RAX] = r[0];
  g[REG_RBX] = r[1];
  g[REG_RCX] = r[2];
  g[REG_RDX] = r[3];
  g[REG_RIP] += 2;
}

__attribute__((constructor)) static void start(void) {
  const char *mask = getenv("CLINIBOX_CPUID_MASK");
  if (!mask || !*mask) return;
  mask_avx512 = strcmp(mask, "avx2") == 0;
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = on_fault;
  action.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigaction(SIGSEGV, &action, NULL);
  if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
    fprintf(stderr, "cpuid_mask: this CPU or kernel has no CPUID faulting\n");
    _exit(3);
  }
}
