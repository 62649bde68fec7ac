#ifndef CCRC32C_H
#define CCRC32C_H

#include <stddef.h>
#include <stdint.h>

/// Whether this CPU has CRC-32C instructions (SSE 4.2 on x86-64, the CRC extension on 64-bit Arm).
int raftlite_crc32c_hardware_available(void);

/// CRC-32C of `count` bytes at `bytes`, continuing from `crc` (the finished checksum of what came before; 0 to
/// start), with the CPU's instructions. Call only when `raftlite_crc32c_hardware_available()` says so.
uint32_t raftlite_crc32c_hardware(const void *bytes, size_t count, uint32_t crc);

#endif
