//! Property-based fuzzing of the configuration parsers: no input panics, valid values round-trip,
//! and every refusal is one line naming the variable.
use proptest::prelude::*;
use vgpu_limiter::config::{
    self, Config, MAX_DEVICES, UtilizationPolicy, VisibleDevice, from_lookup, from_vars, parse_bool, parse_log_level, parse_memory_limit,
    parse_percent, parse_policy, parse_region_path, parse_visible_devices,
};

/// Cases per property: enough to find edge cases, few enough to keep the suite fast.
const CASES: u32 = 512;

/// Every variable the configuration reads, plus indexed and misspelt names.
const NAMES: &[&str] = &[
    config::VAR_DISABLE_CONTROL,
    config::VAR_MEMORY_LIMIT,
    "CUDA_DEVICE_MEMORY_LIMIT_0",
    "CUDA_DEVICE_MEMORY_LIMIT_15",
    "CUDA_DEVICE_MEMORY_LIMIT_16",
    "CUDA_DEVICE_MEMORY_LIMIT_X",
    "CUDA_DEVICE_MEMORY_LIMIT_",
    config::VAR_SM_LIMIT,
    "CUDA_DEVICE_SM_LIMIT_3",
    "CUDA_DEVICE_SM_LIMIT_03",
    config::VAR_REGION_PATH,
    config::VAR_POLICY,
    config::VAR_LOG_LEVEL,
    config::VAR_VISIBLE_DEVICES,
    "PATH",
];

/// Strings that stress the parsers: arbitrary unicode, control characters (no NUL: the
/// environment cannot hold one), huge digit runs, and near-misses of every syntax.
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\x01-\\x1f\\x7f \\t]{0,8}[0-9]{0,64}[\\x01-\\x1f\\x7f \\t]{0,8}",
        "-?[0-9]{0,400}[a-zA-Z%.]{0,4}",
        "[0-9a-fA-FGPUMI/ ,\\-]{0,80}",
        "(GPU-|MIG-|MIG-GPU-)[0-9a-f\\-]{0,40}(/[0-9]{0,12}){0,3}",
        "\\PC{0,16}",
        "[\\u{80}-\\u{10ffff}]{0,8}",
    ]
}

/// The size suffixes and their power of two.
const SUFFIXES: &[(&str, u32)] = &[
    ("", 0),
    ("b", 0),
    ("B", 0),
    ("k", 10),
    ("K", 10),
    ("kb", 10),
    ("Ki", 10),
    ("KiB", 10),
    ("m", 20),
    ("M", 20),
    ("MB", 20),
    ("Mi", 20),
    ("g", 30),
    ("G", 30),
    ("Gi", 30),
    ("GiB", 30),
    ("t", 40),
    ("T", 40),
    ("Ti", 40),
    ("Pi", 50),
];

/// A count and suffix whose product fits 64 bits.
fn size_text() -> impl Strategy<Value = (String, u64)> {
    (0..SUFFIXES.len(), any::<u64>(), 0u32..65).prop_map(|(i, raw, bits)| {
        let (suffix, shift) = SUFFIXES[i];
        // Spread the counts over every magnitude, not only huge ones.
        let count = (raw >> (64 - bits.max(1))) >> shift;
        (format!("{count}{suffix}"), count << shift)
    })
}

/// Hex digits of a given length.
fn hex(len: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(b"0123456789abcdefABCDEF".to_vec()), len).prop_map(|v| String::from_utf8(v).unwrap())
}

/// A canonical UUID.
fn uuid() -> impl Strategy<Value = String> {
    (hex(8), hex(4), hex(4), hex(4), hex(12)).prop_map(|(a, b, c, d, e)| format!("{a}-{b}-{c}-{d}-{e}"))
}

/// One valid `CUDA_VISIBLE_DEVICES` entry.
fn visible_device() -> impl Strategy<Value = VisibleDevice> {
    prop_oneof![
        any::<u32>().prop_map(VisibleDevice::Index),
        (uuid(), 1usize..=36).prop_map(|(u, n)| VisibleDevice::Uuid(format!("GPU-{}", &u[..n]))),
        uuid().prop_map(|u| VisibleDevice::Mig(format!("MIG-{u}"))),
        (uuid(), any::<u32>(), any::<u32>()).prop_map(|(u, g, c)| VisibleDevice::Mig(format!("MIG-GPU-{u}/{g}/{c}"))),
    ]
}

/// Whether two generated entries could name one device (the parser refuses such lists).
fn may_alias(a: &VisibleDevice, b: &VisibleDevice) -> bool {
    match (a, b) {
        (VisibleDevice::Index(x), VisibleDevice::Index(y)) => x == y,
        (VisibleDevice::Mig(x), VisibleDevice::Mig(y)) => x.eq_ignore_ascii_case(y),
        (VisibleDevice::Uuid(x), VisibleDevice::Uuid(y)) => {
            let (x, y) = (x.to_ascii_lowercase(), y.to_ascii_lowercase());
            x.starts_with(&y) || y.starts_with(&x)
        }
        _ => false,
    }
}

/// Checks that an error is one line starting with the variable's (escaped) name.
fn assert_one_line_naming(e: &config::ConfigError, var: &str) {
    let shown = e.to_string();
    assert_eq!(e.var, var);
    assert!(shown.starts_with(&format!("{}=\"", var.escape_debug())), "{shown}");
    assert!(!shown.chars().any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}'), "not one line: {shown:?}");
    assert!(shown.contains("; expected "), "{shown}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn no_parser_panics(text in nasty()) {
        let _ = parse_bool(&text);
        let _ = parse_percent(&text);
        let _ = parse_log_level(&text);
        let _ = parse_policy(&text);
        let _ = parse_memory_limit(&text);
        let _ = parse_region_path(&text);
        let _ = parse_visible_devices(&text);
        let _ = config::check_variable_name(&text, &text);
    }

    #[test]
    fn parser_results_are_in_range(text in nasty()) {
        if let Ok(p) = parse_percent(&text) { prop_assert!(p <= 100); }
        if let Ok(l) = parse_log_level(&text) { prop_assert!(l <= 4); }
        if let Ok(v) = parse_visible_devices(&text) { prop_assert!(v.len() <= MAX_DEVICES); }
    }

    #[test]
    fn any_variable_with_any_value_is_read_or_refused_in_one_line(
        vars in proptest::collection::vec(
            (prop_oneof![proptest::sample::select(NAMES).prop_map(str::to_string), nasty()], nasty()),
            0..6,
        )
    ) {
        let owned: Vec<(String, String)> = vars.clone();
        match from_vars(owned) {
            Ok(c) => {
                prop_assert!(c.log_level <= 4);
                prop_assert!(c.sm_limits.iter().flatten().all(|&p| (1..100).contains(&p)));
                prop_assert!(c.memory_limits.iter().flatten().all(|&b| b > 0));
            }
            Err(e) => {
                prop_assert!(vars.iter().any(|(k, _)| *k == e.var), "{e} names no variable that was set");
                assert_one_line_naming(&e, &e.var.clone());
            }
        }
    }

    #[test]
    fn each_known_variable_refuses_in_one_line(i in 0..NAMES.len(), value in nasty()) {
        let var = NAMES[i];
        if let Err(e) = from_vars([(var.to_string(), value.clone())]) {
            assert_one_line_naming(&e, var);
            prop_assert_eq!(&e.value, &value);
        }
    }

    #[test]
    fn sizes_round_trip((text, bytes) in size_text(), device in 0..MAX_DEVICES, pad in "[ \\t]{0,2}") {
        prop_assert_eq!(parse_memory_limit(&format!("{pad}{text}{pad}")), Ok(bytes));
        let var = format!("CUDA_DEVICE_MEMORY_LIMIT_{device}");
        let c = from_vars([(var, text.clone())]).unwrap();
        // 0 bytes is "no limit", as in HAMi.
        prop_assert_eq!(c.memory_limit(device), (bytes > 0).then_some(bytes));
        let c = from_lookup(|n| (n == config::VAR_MEMORY_LIMIT).then(|| text.clone())).unwrap();
        prop_assert_eq!(c.memory_limit(device), (bytes > 0).then_some(bytes));
    }

    #[test]
    fn overflowing_sizes_are_refused(i in 1..SUFFIXES.len(), extra in 1u64..1000) {
        let (suffix, shift) = SUFFIXES[i];
        if shift > 0 {
            let count = (u64::MAX >> shift) as u128 + u128::from(extra);
            let text = format!("{count}{suffix}");
            prop_assert!(parse_memory_limit(&text).is_err());
        }
    }

    #[test]
    fn percents_round_trip(p in 1u8..=100, zeros in 0usize..4, device in 0..MAX_DEVICES) {
        let text = format!("{}{p}", "0".repeat(zeros));
        prop_assert_eq!(parse_percent(&text), Ok(p));
        let c = from_vars([(format!("CUDA_DEVICE_SM_LIMIT_{device}"), text)]).unwrap();
        // 100 is the whole device: no limit, as HAMi's rate limiter reads it.
        prop_assert_eq!(c.sm_limit(device), (p < 100).then_some(p));
        prop_assert_eq!(c.any_sm_limit(), p < 100);
    }

    #[test]
    fn percents_above_100_are_refused(p in 101u64..) {
        prop_assert!(parse_percent(&p.to_string()).is_err());
    }

    #[test]
    fn log_levels_and_policies_round_trip(level in 0u8..=4, which in 0usize..3, upper in any::<bool>()) {
        let c = from_vars([(config::VAR_LOG_LEVEL.to_string(), level.to_string())]).unwrap();
        prop_assert_eq!(c.log_level, level);
        let (name, want) = [
            ("default", UtilizationPolicy::Default),
            ("force", UtilizationPolicy::Force),
            ("disable", UtilizationPolicy::Disable),
        ][which];
        let name = if upper { name.to_uppercase() } else { name.to_string() };
        prop_assert_eq!(parse_policy(&name), Ok(want));
    }

    #[test]
    fn visible_devices_round_trip(
        list in proptest::collection::vec(visible_device(), 0..=MAX_DEVICES),
        sep in "[ \\t]{0,2},[ \\t]{0,2}",
    ) {
        let mut distinct: Vec<VisibleDevice> = Vec::new();
        for d in list {
            if !distinct.iter().any(|e| may_alias(e, &d)) {
                distinct.push(d);
            }
        }
        let text: Vec<String> = distinct.iter().map(ToString::to_string).collect();
        let text = text.join(&sep);
        prop_assert_eq!(parse_visible_devices(&text), Ok(distinct.clone()));
        let c: Config = from_vars([(config::VAR_VISIBLE_DEVICES.to_string(), text)]).unwrap();
        prop_assert_eq!(c.visible_devices, Some(distinct));
    }

    #[test]
    fn a_repeated_visible_device_is_refused(d in visible_device(), before in 0usize..3) {
        let mut entries: Vec<String> = (0..before).map(|i| format!("MIG-GPU-00000000-0000-0000-0000-000000000000/{i}/0")).collect();
        entries.push(d.to_string());
        entries.push(d.to_string());
        prop_assert!(parse_visible_devices(&entries.join(",")).is_err());
    }
}
