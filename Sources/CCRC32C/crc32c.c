// CRC-32C with the CPU's own instructions. Compiled for any CPU of the architecture: the instructions are enabled
// per function (a target attribute), and the Swift side calls them only once the CPU says it has them.
#include "ccrc32c.h"

#include <string.h>

#if defined(__x86_64__)

#include <cpuid.h>

int raftlite_crc32c_hardware_available(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    return (ecx & bit_SSE4_2) != 0;
}

__attribute__((target("sse4.2"))) uint32_t raftlite_crc32c_hardware(const void *bytes, size_t count,
                                                                       uint32_t crc) {
    const unsigned char *p = bytes;
    uint64_t c = ~crc;
    while (count >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = __builtin_ia32_crc32di(c, word);
        p += 8;
        count -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (count > 0) {
        c32 = __builtin_ia32_crc32qi(c32, *p);
        p++;
        count--;
    }
    return ~c32;
}

#elif defined(__aarch64__) && defined(__linux__)

#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif

int raftlite_crc32c_hardware_available(void) { return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0; }

__attribute__((target("crc"))) uint32_t raftlite_crc32c_hardware(const void *bytes, size_t count, uint32_t crc) {
    const unsigned char *p = bytes;
    uint32_t c = ~crc;
    while (count >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = __builtin_arm_crc32cd(c, word);
        p += 8;
        count -= 8;
    }
    while (count > 0) {
        c = __builtin_arm_crc32cb(c, *p);
        p++;
        count--;
    }
    return ~c;
}

#else

int raftlite_crc32c_hardware_available(void) { return 0; }

uint32_t raftlite_crc32c_hardware(const void *bytes, size_t count, uint32_t crc) {
    (void)bytes;
    (void)count;
    return crc;
}

#endif
