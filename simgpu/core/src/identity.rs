//! Who the simulated devices say they are, identically in libcuda and NVML.

/// Marketing name of every simulated device.
pub fn name() -> &'static str {
    "NVIDIA H100 80GB HBM3 (simgpu)"
}

/// Driver version string NVML reports.
pub const DRIVER_VERSION: &str = "570.86.15";
/// NVML library version string.
pub const NVML_VERSION: &str = "12.570.86.15";
/// CUDA driver API version (`cuDriverGetVersion`, `nvmlSystemGetCudaDriverVersion`).
pub const CUDA_DRIVER_VERSION: i32 = 12080;
/// Compute capability (major, minor).
pub const COMPUTE_CAPABILITY: (i32, i32) = (9, 0);

/// The 16 bytes of device `index`'s UUID (RFC 4122 version 4 layout, deterministic).
pub fn uuid_bytes(index: u32) -> [u8; 16] {
    let mut b = *b"simgpu\0\0\0\0\0\0\0\0\0\0";
    b[6] = 0x40 | (b[6] & 0x0f);
    b[8] = 0x80 | (b[8] & 0x3f);
    b[12..16].copy_from_slice(&index.to_be_bytes());
    b
}

/// Device `index`'s UUID as NVML and nvidia-smi print it: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn uuid_string(index: u32) -> String {
    let b = uuid_bytes(index);
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("GPU-{}-{}-{}-{}-{}", h[0..4].concat(), h[4..6].concat(), h[6..8].concat(), h[8..10].concat(), h[10..16].concat())
}

/// PCI bus of device `index`.
pub fn pci_bus(index: u32) -> u32 {
    0x1a + index
}

/// Device `index`'s PCI bus id as NVML prints it: `00000000:1A:00.0`.
pub fn pci_bus_id(index: u32) -> String {
    format!("00000000:{:02X}:00.0", pci_bus(index))
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_are_distinct_and_well_formed() {
        let a = super::uuid_string(0);
        let b = super::uuid_string(1);
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 36);
        assert_eq!(&a[4 + 14..4 + 15], "4", "version nibble");
    }
}
