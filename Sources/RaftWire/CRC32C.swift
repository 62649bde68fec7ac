import CCRC32C

/// CRC-32C (Castagnoli), the checksum of every frame on the wire and every record on disk.
///
/// With the CPU's CRC-32C instructions where it has them (SSE 4.2, Arm's CRC extension: several bytes per cycle);
/// otherwise slicing-by-8 over tables built once, about a byte per cycle.
public enum CRC32C {
    /// Whether `checksum` uses the CPU's instructions (asked of the CPU once).
    public static let usesHardware: Bool = raftlite_crc32c_hardware_available() != 0

    /// The checksum of `bytes`, continuing from `crc` (the checksum of what came before; 0 to start).
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard usesHardware, let base = bytes.baseAddress else { return softwareChecksum(bytes, continuing: crc) }
        return raftlite_crc32c_hardware(base, bytes.count, crc)
    }

    /// The same checksum from the tables, whatever the CPU: the fallback, and what the instructions are tested
    /// against.
    public static func softwareChecksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        let t = tables
        var c = ~crc
        var k = 0
        let count = bytes.count
        t.withUnsafeBufferPointer { t in
            while count - k >= 8 {
                let lo = bytes.loadUnaligned(fromByteOffset: k, as: UInt32.self).littleEndian ^ c
                let hi = bytes.loadUnaligned(fromByteOffset: k + 4, as: UInt32.self).littleEndian
                c =
                    t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t[4 * 256 + Int(lo >> 24)]
                    ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                    ^ t[1 * 256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
                k += 8
            }
            while k < count {
                c = t[Int((c ^ UInt32(bytes[k])) & 0xFF)] ^ (c >> 8)
                k += 1
            }
        }
        return ~c
    }

    /// The checksum of a byte array.
    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0) }
    }

    /// Eight 256-entry tables, one after the other.
    private static let tables: [UInt32] = {
        let polynomial: UInt32 = 0x82F6_3B78  // Castagnoli, reflected
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for n in 0..<256 {
            var c = UInt32(n)
            for _ in 0..<8 { c = c & 1 == 1 ? (c >> 1) ^ polynomial : c >> 1 }
            t[n] = c
        }
        for n in 0..<256 {
            var c = t[n]
            for s in 1..<8 {
                c = t[Int(c & 0xFF)] ^ (c >> 8)
                t[s * 256 + n] = c
            }
        }
        return t
    }()
}
