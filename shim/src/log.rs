//! One-line diagnostics on stderr, filtered by `LIBCUDA_LOG_LEVEL` (0 errors … 4 debug).
use std::fmt::Arguments;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

static LEVEL: AtomicU8 = AtomicU8::new(vgpu_limiter::config::DEFAULT_LOG_LEVEL);

/// Sets the level (from the configuration, once read).
pub fn set_level(level: u8) {
    LEVEL.store(level, Relaxed);
}

fn emit(level: u8, tag: &str, args: Arguments<'_>) {
    if LEVEL.load(Relaxed) >= level {
        let _ = writeln!(std::io::stderr(), "vgpu: {tag}{args}");
    }
}

/// Always shown (level ≥ 0).
pub fn error(args: Arguments<'_>) {
    emit(0, "error: ", args);
}

/// Shown at level ≥ 2 (the default).
pub fn warn(args: Arguments<'_>) {
    emit(2, "", args);
}

/// Shown at level ≥ 4.
pub fn debug(args: Arguments<'_>) {
    emit(4, "debug: ", args);
}
