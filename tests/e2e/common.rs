//! Helpers shared by the end-to-end tests.
use std::path::PathBuf;
use std::process::{Command, Output};

/// The binary under test (never pointed at a ClickHouse by the caller's environment).
pub fn tapwatch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tapwatch"));
    c.env_remove("TAPWATCH_CLICKHOUSE_URL");
    c
}

/// Workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether the tests run under CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `../shared/pcaps` beside the repository, or `None` (a failure under CI).
pub fn shared_pcaps() -> Option<PathBuf> {
    let dir = root().join("../shared/pcaps");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        !in_ci(),
        "../shared/pcaps is missing; CI must run beside shared/"
    );
    eprintln!("skipping: {} not found", dir.display());
    None
}

/// Whether a tool is on PATH (it must be under CI: scripts/test.sh installs it).
pub fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || !in_ci(),
        "{tool} is not installed; scripts/test.sh installs it under CI"
    );
    if !ok {
        eprintln!("skipping: {tool} not installed");
    }
    ok
}

/// Runs the command and returns its output, panicking with stderr when it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Runs `tapwatch replay ARGS --format json` and parses the summary.
pub fn replay_json(args: &[&str]) -> serde_json::Value {
    let out = run(tapwatch()
        .arg("replay")
        .args(args)
        .args(["--format", "json", "--no-store"]));
    assert!(
        out.status.success(),
        "tapwatch replay {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON from replay {args:?}: {e}\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A fresh temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "tapwatch-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Headless Chromium for the status-page tests: no sandbox (root), no GPU, nothing reaching
/// out to the network, a fixed virtual-time budget so the page's scripts have run.
pub const CHROMIUM_FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--virtual-time-budget=4000",
];
