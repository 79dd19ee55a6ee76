//! Unit tests of the configuration parser: every variable, every bad value.
use super::*;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const UUID: &str = "8932f937-d72c-4106-c12f-20bd9faed9f6";
const UUID2: &str = "c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f";

fn vars(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

fn err(pairs: &[(&str, &str)]) -> ConfigError {
    match vars(pairs) {
        Ok(c) => panic!("{pairs:?} was accepted as {c:?}"),
        Err(e) => e,
    }
}

#[test]
fn unset_environment_is_the_default() {
    let c = vars(&[("PATH", "/usr/bin"), ("HOME", "/root")]).unwrap();
    assert_eq!(c, Config::default());
    assert!(!c.control_disabled);
    assert_eq!(c.memory_limits, [None; MAX_DEVICES]);
    assert_eq!(c.sm_limits, [None; MAX_DEVICES]);
    assert_eq!(c.region_path, None);
    assert_eq!(c.policy, UtilizationPolicy::Default);
    assert_eq!(c.log_level, 2, "HAMi's default log level");
    assert_eq!(c.visible_devices, None);
    assert!(!c.any_sm_limit());
    assert_eq!(from_lookup(|_| None).unwrap(), c);
}

#[test]
fn bools_are_go_parsebool() {
    for (text, want) in [
        ("1", true),
        ("t", true),
        ("T", true),
        ("true", true),
        ("TRUE", true),
        ("True", true),
        ("0", false),
        ("f", false),
        ("F", false),
        ("false", false),
        ("FALSE", false),
        ("False", false),
    ] {
        assert_eq!(parse_bool(text), Ok(want), "{text:?}");
    }
    for text in ["", " ", "yes", "no", "on", "tRuE", " true", "true ", "2", "-1", "truee"] {
        assert!(parse_bool(text).is_err(), "{text:?}");
    }
}

#[test]
fn disable_control() {
    assert!(vars(&[(VAR_DISABLE_CONTROL, "true")]).unwrap().control_disabled);
    assert!(vars(&[(VAR_DISABLE_CONTROL, "1")]).unwrap().control_disabled);
    assert!(!vars(&[(VAR_DISABLE_CONTROL, "false")]).unwrap().control_disabled);
    assert!(!vars(&[(VAR_DISABLE_CONTROL, "0")]).unwrap().control_disabled);
    let e = err(&[(VAR_DISABLE_CONTROL, "yes")]);
    assert_eq!(e.var, VAR_DISABLE_CONTROL);
    let e = err(&[(VAR_DISABLE_CONTROL, "")]);
    assert_eq!(e.problem, "empty");
}

#[test]
fn disabled_control_reads_nothing_else() {
    let c =
        vars(&[(VAR_DISABLE_CONTROL, "true"), (VAR_MEMORY_LIMIT, "garbage"), ("CUDA_DEVICE_MEMORY_LIMIT_X", "1g"), (VAR_LOG_LEVEL, "9")])
            .unwrap();
    assert_eq!(c, Config { control_disabled: true, ..Config::default() });
    // Disabled = false: everything is read again.
    let e = err(&[(VAR_DISABLE_CONTROL, "false"), (VAR_MEMORY_LIMIT, "garbage")]);
    assert_eq!(e.var, VAR_MEMORY_LIMIT);
}

#[test]
fn memory_limits_and_their_fallback() {
    // (variables, device 0, device 1, device 15, default)
    type Row = (&'static [(&'static str, &'static str)], Option<u64>, Option<u64>, Option<u64>);
    let table: &[Row] = &[
        (&[(VAR_MEMORY_LIMIT, "4g")], Some(4 * GIB), Some(4 * GIB), Some(4 * GIB)),
        (&[(VAR_MEMORY_LIMIT, "4Gi")], Some(4 * GIB), Some(4 * GIB), Some(4 * GIB)),
        (&[(VAR_MEMORY_LIMIT, "1Gi")], Some(GIB), Some(GIB), Some(GIB)),
        (&[(VAR_MEMORY_LIMIT, "4096m")], Some(4 * GIB), Some(4 * GIB), Some(4 * GIB)),
        (&[(VAR_MEMORY_LIMIT, "1024")], Some(1024), Some(1024), Some(1024)),
        (&[(VAR_MEMORY_LIMIT, "0")], None, None, None),
        (&[("CUDA_DEVICE_MEMORY_LIMIT_1", "2048m")], None, Some(2 * GIB), None),
        (&[(VAR_MEMORY_LIMIT, "4g"), ("CUDA_DEVICE_MEMORY_LIMIT_1", "1g")], Some(4 * GIB), Some(GIB), Some(4 * GIB)),
        (
            // An indexed 0 is "not set here": the unindexed limit applies (HAMi).
            &[(VAR_MEMORY_LIMIT, "4g"), ("CUDA_DEVICE_MEMORY_LIMIT_1", "0")],
            Some(4 * GIB),
            Some(4 * GIB),
            Some(4 * GIB),
        ),
        (&[("CUDA_DEVICE_MEMORY_LIMIT_15", "512Mi")], None, None, Some(512 * MIB)),
        (&[("CUDA_DEVICE_MEMORY_LIMIT_0", "1k"), ("CUDA_DEVICE_MEMORY_LIMIT_1", " 2k ")], Some(1024), Some(2048), None),
    ];
    for (pairs, d0, d1, d15) in table {
        let c = vars(pairs).unwrap();
        assert_eq!((c.memory_limit(0), c.memory_limit(1), c.memory_limit(15)), (*d0, *d1, *d15), "{pairs:?}");
        let via_lookup = from_lookup(|name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())).unwrap();
        assert_eq!(via_lookup, c, "{pairs:?}");
    }
}

#[test]
fn devices_beyond_the_table_get_the_unindexed_limits() {
    let c = vars(&[(VAR_MEMORY_LIMIT, "1g"), ("CUDA_DEVICE_MEMORY_LIMIT_0", "2g"), (VAR_SM_LIMIT, "30")]).unwrap();
    assert_eq!(c.memory_limit(MAX_DEVICES), Some(GIB));
    assert_eq!(c.memory_limit(usize::MAX), Some(GIB));
    assert_eq!(c.sm_limit(MAX_DEVICES), Some(30));
    let c = vars(&[("CUDA_DEVICE_MEMORY_LIMIT_0", "2g")]).unwrap();
    assert_eq!(c.memory_limit(MAX_DEVICES), None);
    assert_eq!(c.sm_limit(usize::MAX), None);
}

#[test]
fn bad_memory_limits_are_errors() {
    for (var, value, problem) in [
        (VAR_MEMORY_LIMIT, "", "empty size"),
        (VAR_MEMORY_LIMIT, "  ", "empty size"),
        (VAR_MEMORY_LIMIT, "-1g", "negative size"),
        (VAR_MEMORY_LIMIT, "1.5g", "not a whole number of bytes"),
        (VAR_MEMORY_LIMIT, "0x100", "unknown unit \"x100\""),
        (VAR_MEMORY_LIMIT, "g", "not a whole number of bytes"),
        ("CUDA_DEVICE_MEMORY_LIMIT_1", "4x", "unknown unit \"x\""),
        ("CUDA_DEVICE_MEMORY_LIMIT_3", "99999999999999999999", "size does not fit in 64 bits"),
        ("CUDA_DEVICE_MEMORY_LIMIT_15", "16777216t", "size does not fit in 64 bits"),
    ] {
        let e = err(&[(var, value)]);
        assert_eq!((e.var.as_str(), e.value.as_str()), (var, value));
        assert_eq!(e.problem, problem, "{var}={value:?}");
        assert_eq!(e.expected, SIZE_SYNTAX);
    }
}

#[test]
fn the_error_message_is_one_line_naming_all() {
    let e = err(&[("CUDA_DEVICE_MEMORY_LIMIT_1", "4x")]);
    assert_eq!(e.to_string(), format!("CUDA_DEVICE_MEMORY_LIMIT_1=\"4x\": unknown unit \"x\"; expected {SIZE_SYNTAX}"));
    let e = err(&[(VAR_MEMORY_LIMIT, "4\nx\r\u{2028}")]);
    let s = e.to_string();
    assert!(!s.contains('\n') && !s.contains('\r') && !s.contains('\u{2028}'), "{s}");
    assert!(s.starts_with("CUDA_DEVICE_MEMORY_LIMIT=\"4\\nx"), "{s}");
    let long = "9".repeat(10_000);
    let e = err(&[(VAR_SM_LIMIT, &long)]);
    let s = e.to_string();
    assert!(s.len() < 600, "{s}");
    assert!(s.contains("(10000 bytes)") && s.contains("a 10000-digit number"), "{s}");
    assert_eq!(e.value, long, "the field keeps the whole value");
}

#[test]
fn percents() {
    for (text, want) in [("0", 0), ("1", 1), ("50", 50), (" 30 ", 30), ("100", 100), ("007", 7), ("000000000000000000000000000100", 100)] {
        assert_eq!(parse_percent(text), Ok(want), "{text:?}");
    }
    for (text, problem) in [
        ("", "empty"),
        ("\t", "empty"),
        ("-5", "negative"),
        ("101", "101 is out of range"),
        ("1000", "1000 is out of range"),
        ("50%", "not a whole number"),
        ("5.5", "not a whole number"),
        ("+5", "not a whole number"),
        ("fifty", "not a whole number"),
        ("٥", "not a whole number"),
    ] {
        assert_eq!(parse_percent(text).map_err(|e| e.problem), Err(problem.to_string()), "{text:?}");
    }
    let huge = "1".repeat(100);
    assert_eq!(parse_percent(&huge).unwrap_err().problem, "a 100-digit number is out of range");
}

#[test]
fn sm_limits_and_their_fallback() {
    type Row = (&'static [(&'static str, &'static str)], [Option<u8>; 3], bool);
    let table: &[Row] = &[
        (&[(VAR_SM_LIMIT, "30")], [Some(30), Some(30), Some(30)], true),
        (&[(VAR_SM_LIMIT, "0")], [None, None, None], false),
        (&[(VAR_SM_LIMIT, "100")], [None, None, None], false),
        (&[("CUDA_DEVICE_SM_LIMIT_1", "20")], [None, Some(20), None], true),
        (&[(VAR_SM_LIMIT, "30"), ("CUDA_DEVICE_SM_LIMIT_1", "20")], [Some(30), Some(20), Some(30)], true),
        (
            // Indexed 0: not set here, the unindexed share applies (HAMi).
            &[(VAR_SM_LIMIT, "30"), ("CUDA_DEVICE_SM_LIMIT_1", "0")],
            [Some(30), Some(30), Some(30)],
            true,
        ),
        (
            // Indexed 100: the whole device, no limit there.
            &[(VAR_SM_LIMIT, "30"), ("CUDA_DEVICE_SM_LIMIT_1", "100")],
            [Some(30), None, Some(30)],
            true,
        ),
        (&[("CUDA_DEVICE_SM_LIMIT_15", "1")], [None, None, Some(1)], true),
    ];
    for (pairs, [d0, d1, d15], any) in table {
        let c = vars(pairs).unwrap();
        assert_eq!([c.sm_limit(0), c.sm_limit(1), c.sm_limit(15)], [*d0, *d1, *d15], "{pairs:?}");
        assert_eq!(c.any_sm_limit(), *any, "{pairs:?}");
    }
    for value in ["101", "-1", "", "30%", "1k"] {
        let e = err(&[("CUDA_DEVICE_SM_LIMIT_2", value)]);
        assert_eq!(e.var, "CUDA_DEVICE_SM_LIMIT_2");
        assert_eq!(e.expected, PERCENT_SYNTAX);
    }
}

#[test]
fn indexed_names_must_be_device_indices() {
    for (name, problem) in [
        ("CUDA_DEVICE_MEMORY_LIMIT_X", "the device index is not a number"),
        ("CUDA_DEVICE_MEMORY_LIMIT_", "no device index after the underscore"),
        ("CUDA_DEVICE_MEMORY_LIMIT_16", "the device index is not below 16"),
        ("CUDA_DEVICE_MEMORY_LIMIT_100", "the device index is not below 16"),
        ("CUDA_DEVICE_MEMORY_LIMIT_99999999999999999999999", "the device index is not below 16"),
        ("CUDA_DEVICE_MEMORY_LIMIT_01", "the device index has a leading zero"),
        ("CUDA_DEVICE_MEMORY_LIMIT_-1", "the device index is not a number"),
        ("CUDA_DEVICE_MEMORY_LIMIT_1 ", "the device index is not a number"),
        ("CUDA_DEVICE_SM_LIMIT_X", "the device index is not a number"),
        ("CUDA_DEVICE_SM_LIMIT_16", "the device index is not below 16"),
        ("CUDA_DEVICE_SM_LIMIT_00", "the device index has a leading zero"),
    ] {
        let e = err(&[(name, "1g")]);
        assert_eq!((e.var.as_str(), e.problem.as_str()), (name, problem));
        assert_eq!(e.value, "1g");
        assert!(e.to_string().starts_with(&format!("{name}=\"1g\": ")), "{e}");
    }
    // Neighbouring names are not ours and stay ignored.
    for name in [
        "CUDA_DEVICE_MEMORY_LIMITX",
        "CUDA_DEVICE_MEMORY_SHARED_CACHE_1",
        "XCUDA_DEVICE_MEMORY_LIMIT_X",
        "cuda_device_memory_limit_x",
        "CUDA_DEVICE_SM_LIMITS",
    ] {
        assert_eq!(vars(&[(name, "junk")]).unwrap(), Config::default(), "{name}");
    }
    // All sixteen indices are fine.
    let names: Vec<String> = (0..MAX_DEVICES).map(|i| format!("CUDA_DEVICE_MEMORY_LIMIT_{i}")).collect();
    let c = from_vars(names.iter().map(|n| (n.clone(), "1m".to_string()))).unwrap();
    assert_eq!(c.memory_limits, [Some(MIB); MAX_DEVICES]);
    // from_lookup cannot enumerate names: a bad suffix goes unseen there.
    let c = from_lookup(|n| (n == "CUDA_DEVICE_MEMORY_LIMIT_X").then(|| "1g".to_string()));
    assert_eq!(c.unwrap(), Config::default());
}

#[test]
fn the_first_bad_name_is_reported_deterministically() {
    for _ in 0..8 {
        let e = err(&[("CUDA_DEVICE_SM_LIMIT_Z", "1"), ("CUDA_DEVICE_MEMORY_LIMIT_Y", "1"), ("CUDA_DEVICE_MEMORY_LIMIT_X", "1")]);
        assert_eq!(e.var, "CUDA_DEVICE_MEMORY_LIMIT_X");
    }
}

#[test]
fn duplicate_names_last_wins() {
    let c = vars(&[(VAR_MEMORY_LIMIT, "garbage"), (VAR_MEMORY_LIMIT, "1g")]).unwrap();
    assert_eq!(c.memory_limit(0), Some(GIB));
}

#[test]
fn region_path() {
    let c = vars(&[(VAR_REGION_PATH, "/usr/local/vgpu/abc.cache")]).unwrap();
    assert_eq!(c.region_path, Some(PathBuf::from("/usr/local/vgpu/abc.cache")));
    for (value, problem) in
        [("", "empty"), ("cudevshr.cache", "not an absolute path"), ("./x", "not an absolute path"), (" /tmp/x", "not an absolute path")]
    {
        let e = err(&[(VAR_REGION_PATH, value)]);
        assert_eq!(e.problem, problem, "{value:?}");
        assert_eq!(e.expected, PATH_SYNTAX);
    }
}

#[test]
fn policies() {
    for (text, want) in [
        ("default", UtilizationPolicy::Default),
        ("DEFAULT", UtilizationPolicy::Default),
        ("force", UtilizationPolicy::Force),
        ("FORCE", UtilizationPolicy::Force),
        ("Force", UtilizationPolicy::Force),
        ("disable", UtilizationPolicy::Disable),
        (" DISABLE\n", UtilizationPolicy::Disable),
    ] {
        assert_eq!(parse_policy(text), Ok(want), "{text:?}");
        assert_eq!(vars(&[(VAR_POLICY, text)]).unwrap().policy, want);
    }
    for text in ["", "forced", "disabled", "on", "0", "ſorce"] {
        assert!(parse_policy(text).is_err(), "{text:?}");
        assert_eq!(err(&[(VAR_POLICY, text)]).expected, POLICY_SYNTAX);
    }
}

#[test]
fn log_levels() {
    for level in 0..=4u8 {
        assert_eq!(parse_log_level(&level.to_string()), Ok(level));
        let c = vars(&[(VAR_LOG_LEVEL, &level.to_string())]).unwrap();
        assert_eq!(c.log_level, level);
    }
    for (text, problem) in
        [("5", "5 is out of range"), ("255", "255 is out of range"), ("-1", "negative"), ("", "empty"), ("debug", "not a whole number")]
    {
        assert_eq!(parse_log_level(text).unwrap_err().problem, problem, "{text:?}");
        let e = err(&[(VAR_LOG_LEVEL, text)]);
        assert_eq!(e.expected, LOG_LEVEL_SYNTAX);
    }
}

#[test]
fn visible_devices_forms() {
    use VisibleDevice::*;
    let gpu = format!("GPU-{UUID}");
    let mig_new = format!("MIG-{UUID2}");
    let mig_old = format!("MIG-GPU-{UUID}/1/0");
    let table: Vec<(String, Vec<VisibleDevice>)> = vec![
        ("".into(), vec![]),
        ("  ".into(), vec![]),
        ("-1".into(), vec![]),
        (" -1 ".into(), vec![]),
        ("0".into(), vec![Index(0)]),
        ("1,0".into(), vec![Index(1), Index(0)]),
        (" 2 , 3 ".into(), vec![Index(2), Index(3)]),
        ("07".into(), vec![Index(7)]),
        (gpu.clone(), vec![Uuid(gpu.clone())]),
        ("GPU-8932f937".into(), vec![Uuid("GPU-8932f937".into())]),
        ("GPU-8932F937-".into(), vec![Uuid("GPU-8932F937-".into())]),
        ("GPU-8".into(), vec![Uuid("GPU-8".into())]),
        (mig_new.clone(), vec![Mig(mig_new.clone())]),
        (mig_old.clone(), vec![Mig(mig_old.clone())]),
        (format!("0, {gpu},{mig_new}"), vec![Index(0), Uuid(gpu.clone()), Mig(mig_new.clone())]),
    ];
    for (text, want) in table {
        assert_eq!(parse_visible_devices(&text), Ok(want.clone()), "{text:?}");
        let c = vars(&[(VAR_VISIBLE_DEVICES, &text)]).unwrap();
        assert_eq!(c.visible_devices, Some(want), "{text:?}");
    }
    let all: Vec<String> = (0..MAX_DEVICES).map(|i| i.to_string()).collect();
    assert_eq!(parse_visible_devices(&all.join(",")).unwrap().len(), MAX_DEVICES);
}

#[test]
fn visible_devices_refusals() {
    let seventeen: Vec<String> = (0..=MAX_DEVICES).map(|i| i.to_string()).collect();
    let seventeen = seventeen.join(",");
    let long_uuid = format!("GPU-{UUID}0");
    let cases: Vec<(String, &str)> = vec![
        ("0,,1".into(), "entry 1 is empty"),
        ("0,1,".into(), "entry 2 is empty"),
        (",".into(), "entry 0 is empty"),
        ("0,-1".into(), "is negative"),
        ("-2".into(), "is negative"),
        ("4294967296".into(), "entry 0 is an index too large"),
        ("0,0".into(), "may name the same device as entry 0"),
        ("1,01".into(), "may name the same device as entry 0"),
        ("GPU-8932f937,GPU-8932F937-d72c".into(), "may name the same device"),
        (format!("GPU-{UUID},GPU-{UUID}"), "may name the same device"),
        (format!("MIG-{UUID2},MIG-{}", UUID2.to_uppercase()), "may name the same device"),
        ("GPU-".into(), "not a GPU UUID"),
        ("GPU--".into(), "not a GPU UUID"),
        ("GPU-xyz".into(), "not a GPU UUID"),
        ("GPU-8932f9370".into(), "not a GPU UUID"),
        (long_uuid, "not a GPU UUID"),
        ("gpu-8932f937".into(), "not an index"),
        ("MIG-8932f937".into(), "not a full MIG UUID"),
        (format!("MIG-GPU-{UUID}"), "not MIG-GPU-"),
        (format!("MIG-GPU-{UUID}/1"), "not MIG-GPU-"),
        (format!("MIG-GPU-{UUID}/1/x"), "not MIG-GPU-"),
        (format!("MIG-GPU-{UUID}/1/0/2"), "not MIG-GPU-"),
        ("MIG-GPU-8932f937/1/0".into(), "not MIG-GPU-"),
        ("0;1".into(), "not an index"),
        ("0 1".into(), "not an index"),
        ("+1".into(), "not an index"),
        ("all".into(), "not an index"),
        ("１".into(), "not an index"),
        (seventeen, "more than 16 devices"),
    ];
    for (text, problem) in cases {
        let e = parse_visible_devices(&text).unwrap_err();
        assert!(e.problem.contains(problem), "{text:?}: {}", e.problem);
        assert_eq!(e.expected, VISIBLE_DEVICES_SYNTAX);
        let ce = err(&[(VAR_VISIBLE_DEVICES, &text)]);
        assert_eq!((ce.var.as_str(), ce.value.as_str()), (VAR_VISIBLE_DEVICES, text.as_str()));
    }
}

#[test]
fn visible_device_display_round_trips() {
    let text = format!("3,GPU-{UUID},MIG-GPU-{UUID2}/7/1");
    let devices = parse_visible_devices(&text).unwrap();
    let back: Vec<String> = devices.iter().map(ToString::to_string).collect();
    assert_eq!(back.join(","), text);
}

#[test]
fn check_order_is_fixed() {
    // Names first, then memory, SM, region, policy, log level, visible devices.
    let e = err(&[
        (VAR_VISIBLE_DEVICES, "x"),
        (VAR_LOG_LEVEL, "x"),
        (VAR_POLICY, "x"),
        (VAR_REGION_PATH, "x"),
        (VAR_SM_LIMIT, "x"),
        (VAR_MEMORY_LIMIT, "x"),
    ]);
    assert_eq!(e.var, VAR_MEMORY_LIMIT);
    let e = err(&[(VAR_VISIBLE_DEVICES, "x"), (VAR_LOG_LEVEL, "x")]);
    assert_eq!(e.var, VAR_LOG_LEVEL);
}

#[test]
fn non_utf8_values_are_errors() {
    let get = |name: &str| -> Option<Raw> { (name == VAR_POLICY).then(|| Err("for\u{FFFD}e".to_string())) };
    let e = build(&get, None).unwrap_err();
    assert_eq!(e.var, VAR_POLICY);
    assert_eq!(e.problem, "not valid UTF-8");
}

#[test]
fn from_env_reads_this_process() {
    // The test environment sets none of these variables unless a developer exported them;
    // in any case reading it must not panic.
    let _ = from_env();
}

fn cfg(pairs: &[(&str, &str)]) -> Config {
    vars(pairs).unwrap()
}

#[test]
fn task_priority_is_hamis_zero_or_one() {
    assert_eq!(cfg(&[]).task_priority(), Priority::Low, "HAMi's default is low");
    assert_eq!(cfg(&[(VAR_TASK_PRIORITY, "0")]).task_priority(), Priority::High);
    assert_eq!(cfg(&[(VAR_TASK_PRIORITY, " 1 ")]).priority, Some(Priority::Low));
    for bad in ["", "2", "-1", "high", "00", "0x0", "1.0"] {
        let e = err(&[(VAR_TASK_PRIORITY, bad)]);
        assert_eq!(e.var, VAR_TASK_PRIORITY, "{bad:?}");
        assert!(e.to_string().contains("0 (high priority) or 1"), "{e}");
    }
}

#[test]
fn priority_floor_and_board_are_checked() {
    assert_eq!(cfg(&[]).priority_floor, 0);
    assert_eq!(cfg(&[(VAR_PRIORITY_FLOOR, "5")]).priority_floor, 5);
    assert_eq!(cfg(&[(VAR_PRIORITY_FLOOR, "50")]).priority_floor, 50);
    for bad in ["51", "-5", "5%", "", "x"] {
        assert_eq!(err(&[(VAR_PRIORITY_FLOOR, bad)]).var, VAR_PRIORITY_FLOOR, "{bad:?}");
    }
    assert_eq!(cfg(&[]).priority_board, None);
    assert_eq!(cfg(&[(VAR_PRIORITY_BOARD, "/run/b")]).priority_board, Some(std::path::PathBuf::from("/run/b")));
    assert_eq!(err(&[(VAR_PRIORITY_BOARD, "board")]).var, VAR_PRIORITY_BOARD);
}

#[test]
fn kais_layout_is_hami_cores_per_container_one() {
    assert_eq!(
        kai_region_path("/usr/local/vgpu", "9f8e-01", "cuda"),
        Some(std::path::PathBuf::from("/usr/local/vgpu/containers/9f8e-01_cuda/usage.cache"))
    );
    for (m, u, c) in [("rel", "u", "c"), ("/m", "", "c"), ("/m", "u", ".."), ("/m", "a/b", "c"), ("/m", "u", "c/d")] {
        assert_eq!(kai_region_path(m, u, c), None, "{m} {u} {c}");
    }
}
