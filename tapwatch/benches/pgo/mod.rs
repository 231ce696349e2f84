//! The profile-guided build a bench times beside the plain one, when asked.

/// The binary `TAPWATCH_BENCH_PGO` names (one `scripts/build-pgo.sh` built), if the variable
/// is set; panics with its value when it names no file.
pub fn binary() -> Option<String> {
    let pgo = std::env::var_os("TAPWATCH_BENCH_PGO")?
        .to_string_lossy()
        .into_owned();
    assert!(
        std::path::Path::new(&pgo).is_file(),
        "TAPWATCH_BENCH_PGO={pgo}: expected the binary scripts/build-pgo.sh built"
    );
    Some(pgo)
}
