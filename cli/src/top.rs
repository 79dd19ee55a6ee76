//! `vgpu top`: the `vgpu ps` view, refreshed in place until Ctrl-C.
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;

use crate::ps::{self, Sources};

/// Arguments of `vgpu top`.
#[derive(Args, Debug, Clone)]
pub struct TopArgs {
    /// The regions to read.
    #[command(flatten)]
    pub sources: Sources,
    /// Seconds between refreshes (at least 0.1).
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub interval: f64,
    /// Stop after N refreshes (default: until interrupted).
    #[arg(long, value_name = "N")]
    pub iterations: Option<u64>,
}

/// Clear the screen and put the cursor home.
const CLEAR: &str = "\x1b[H\x1b[2J";

fn clock() -> String {
    let s = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

/// One screen.
fn frame(args: &TopArgs) -> String {
    let mut out = format!("vgpu top: every {}s, {}  (Ctrl-C to quit)\n\n", args.interval, clock());
    match ps::snapshot(&args.sources) {
        Ok(s) => {
            out += &ps::render(&s);
            if !s.skipped.is_empty() {
                out.push('\n');
                out += &ps::render_skipped(&s);
            }
        }
        Err(e) => out += &format!("{e}\n"),
    }
    out
}

/// Runs `vgpu top`.
pub fn top(args: TopArgs) -> i32 {
    if !args.interval.is_finite() || args.interval < 0.1 {
        eprintln!("vgpu top: --interval {} is not a number of seconds >= 0.1", args.interval);
        return 2;
    }
    let interval = Duration::from_secs_f64(args.interval);
    let mut n = 0u64;
    loop {
        let screen = frame(&args);
        let mut stdout = std::io::stdout().lock();
        if write!(stdout, "{CLEAR}{screen}").and_then(|_| stdout.flush()).is_err() {
            return 0; // the terminal went away
        }
        drop(stdout);
        n += 1;
        if args.iterations.is_some_and(|max| n >= max) {
            return 0;
        }
        std::thread::sleep(interval);
    }
}
