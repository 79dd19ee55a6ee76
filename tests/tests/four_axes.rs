//! The four-axes bench runs end to end (`--quick`): every axis produces its rows, the picture
//! is drawn, and the one figure that does not depend on timing, the memory axis, says what it
//! must. The latency and share figures are reported, not asserted (shared, noisy machines).
use std::process::Command;
use std::time::Duration;

use vgpu_tests::*;

#[test]
fn four_axes_quick_writes_its_table_and_picture() {
    let out = std::env::temp_dir().join(format!("vgpu-four-axes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut c = Command::new(cargo_program("four-axes"));
    c.args(["--quick", "--out"]).arg(&out).env_remove("LD_PRELOAD");
    let run = run(&mut c, Duration::from_secs(600));
    let stdout = text(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", text(&run.stderr));
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    for row in [
        "| time-slicing, no vgpu | 3840 MiB of 4096 asked | 0 MiB of 1536 asked | **no** |",
        "| vgpu, 2 GiB quota each | 1792 MiB of 4096 asked | 1536 MiB of 1536 asked | yes |",
        "| alone |",
        "| beside the neighbour, no vgpu (time-slicing) |",
        "| neighbour at --sm 50 |",
        "| neighbour at low priority (CUDA_TASK_PRIORITY=1, tenant 0) |",
        "| vgpu --sm 30 / --sm 70 |",
    ] {
        assert!(md.contains(row), "report.md lacks {row:?}:\n{md}");
    }
    let svg = std::fs::read_to_string(out.join("axes.svg")).expect("axes.svg");
    assert!(svg.starts_with("<svg") && svg.contains("request latency (CDF)"), "not the picture");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["latency"].as_array().map(Vec::len), Some(4));
    assert!(
        json["latency"].as_array().unwrap().iter().all(|r| r["requests"].as_u64().unwrap_or(0) > 50),
        "every configuration served requests"
    );
    println!("{md}");
    let _ = std::fs::remove_dir_all(&out);
}
