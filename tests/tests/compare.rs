//! The compare bench runs end to end against vgpu alone (`--quick`): its table has every row,
//! the bare driver has no limit in the quota race, and vgpu is never over the quota, never held
//! back by a process killed during start-up, and tells the quota past it. Costs and shares are
//! reported, not asserted (shared, noisy machines).
use std::process::Command;
use std::time::Duration;

use vgpu_tests::*;

#[test]
fn compare_quick_against_vgpu_alone() {
    let out = std::env::temp_dir().join(format!("vgpu-compare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut c = Command::new(cargo_program("compare"));
    c.args(["--quick", "--out"]).arg(&out).env_remove("LD_PRELOAD");
    let run = run(&mut c, Duration::from_secs(600));
    let stdout = text(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", text(&run.stderr));
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(md.contains("| measure | no library | vgpu |"), "{md}");
    let race = md.lines().find(|l| l.starts_with("| quota race")).unwrap_or_else(|| panic!("{md}"));
    let cells: Vec<&str> = race.split('|').map(str::trim).collect();
    assert!(cells[2].starts_with("no limit"), "{race}");
    assert!(cells[3].starts_with("0/"), "vgpu is never over the quota: {race}");
    let families = md.lines().find(|l| l.starts_with("| allocation families")).unwrap_or_else(|| panic!("{md}"));
    assert!(families.ends_with("| no limit | 9 of 9 |"), "vgpu holds every family to the quota: {families}");
    for row in ["| `cuLaunchKernel`", "| `cuMemAlloc_v2`", "| alloc+free p99", "| SM share at a 30 % cap"] {
        for line in md.lines().filter(|l| l.starts_with(row)) {
            assert!(!line.contains("failed"), "{line}");
        }
        assert!(md.lines().any(|l| l.starts_with(row)), "no {row} in\n{md}");
    }
    // A process killed during start-up never holds the next one back, and the next one works.
    let killed = md.lines().find(|l| l.starts_with("| a process SIGKILLed during start-up")).unwrap_or_else(|| panic!("{md}"));
    assert!(!killed.contains("waited") && !killed.contains("failed"), "{killed}");
    // Past the quota (contexts the shim cannot refuse), both views stay the quota, nothing free.
    let views = md.lines().find(|l| l.starts_with("| views when contexts")).unwrap_or_else(|| panic!("{md}"));
    assert!(views.ends_with("| cuMemGetInfo 1024 total / 0 free; NVML 1024 total / 0 free MiB |"), "vgpu's views past the quota: {views}");
    println!("{md}");
    let _ = std::fs::remove_dir_all(&out);
}
