//! Kernel cost convention.
//!
//! A kernel's simulated duration is `waves × cost_per_wave`, where a wave is one block on every
//! SM (`waves = ceil(blocks / SMs)`), and the cost per wave comes from the kernel's name: a name
//! ending in `_<N>ns`, `_<N>us` or `_<N>ms` (for example `spin_200us`) costs that long per wave;
//! any other name costs [`DEFAULT_WAVE_NS`]. The same names on a real GPU are kernels that spin
//! for that long per block (see `examples/ptx/spin.ptx`), so a grid of at most SM-count blocks
//! takes about the same time on both.

/// Cost per wave of a kernel whose name carries no duration: 5 µs.
pub const DEFAULT_WAVE_NS: u64 = 5_000;

/// Cost per wave encoded in a kernel name, or [`DEFAULT_WAVE_NS`].
pub fn wave_cost_ns(name: &str) -> u64 {
    let Some((_, tail)) = name.rsplit_once('_') else {
        return DEFAULT_WAVE_NS;
    };
    let (digits, scale) = if let Some(d) = tail.strip_suffix("ns") {
        (d, 1)
    } else if let Some(d) = tail.strip_suffix("us") {
        (d, 1_000)
    } else if let Some(d) = tail.strip_suffix("ms") {
        (d, 1_000_000)
    } else {
        return DEFAULT_WAVE_NS;
    };
    match digits.parse::<u64>() {
        Ok(n) if n > 0 && !digits.starts_with('+') => n.saturating_mul(scale),
        _ => DEFAULT_WAVE_NS,
    }
}

/// Cost per wave of kernel `name`: the first entry of `table` (`SIMGPU_KERNEL_COSTS`) whose
/// text the name contains, else [`wave_cost_ns`].
pub fn wave_cost_with(name: &str, table: &[(String, u64)]) -> u64 {
    table.iter().find(|(text, _)| name.contains(text.as_str())).map_or_else(|| wave_cost_ns(name), |(_, ns)| *ns)
}

/// Simulated duration of a launch of `blocks` blocks on `sms` SMs at `wave_ns` per wave.
pub fn kernel_ns(wave_ns: u64, blocks: u64, sms: u32) -> u64 {
    let sms = u64::from(sms.max(1));
    let waves = blocks.div_ceil(sms).max(1);
    waves.saturating_mul(wave_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cost_table_names_mangled_kernels() {
        let table = vec![("add_one".to_string(), 200_000), ("add".to_string(), 7)];
        // numba's mangling of `add_one` keeps the name inside.
        assert_eq!(wave_cost_with("_ZN8__main__7add_oneB2v1B94cw51cXTLSUwv1sDUxKAxE5ArrayIfLi1E1C7mutable7alignedE", &table), 200_000);
        assert_eq!(wave_cost_with("vector_add", &table), 7, "the first match wins");
        assert_eq!(wave_cost_with("spin_100us", &table), 100_000, "else the name's suffix");
        assert_eq!(wave_cost_with("spin_100us", &[]), 100_000);
    }

    #[test]
    fn names_carry_their_cost() {
        assert_eq!(wave_cost_ns("spin_200us"), 200_000);
        assert_eq!(wave_cost_ns("spin_10us"), 10_000);
        assert_eq!(wave_cost_ns("k_750ns"), 750);
        assert_eq!(wave_cost_ns("big_2ms"), 2_000_000);
        assert_eq!(wave_cost_ns("vector_add"), DEFAULT_WAVE_NS);
        assert_eq!(wave_cost_ns("spin_us"), DEFAULT_WAVE_NS);
        assert_eq!(wave_cost_ns("spin_0us"), DEFAULT_WAVE_NS);
        assert_eq!(wave_cost_ns("plain"), DEFAULT_WAVE_NS);
    }

    #[test]
    fn waves_of_blocks_over_sms() {
        assert_eq!(kernel_ns(100, 1, 132), 100);
        assert_eq!(kernel_ns(100, 132, 132), 100);
        assert_eq!(kernel_ns(100, 133, 132), 200);
        assert_eq!(kernel_ns(100, 264 * 3, 132), 600);
    }
}
