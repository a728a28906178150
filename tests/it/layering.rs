//! The crate graph is the architecture (docs/ARCHITECTURE.md, "Crates"): dependencies only
//! point down. Cargo itself refuses a dependency cycle between packages; these tests check what
//! it does not: that neither the protocol crate nor the client crate reaches glommio or the
//! broker through any path (`cargo tree`, as the issue asks), and that the broker library does
//! not use the client crate its package depends on only for the `freshet` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The normal (non-dev, non-build) dependencies of `package`, direct and transitive, one
/// package name per entry, from `cargo tree` over the committed lock file.
fn normal_dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1) // the package itself
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn assert_below_the_broker(package: &str) {
    let deps = normal_dependencies(package);
    assert!(
        deps.iter().any(|d| d == "kafka-protocol"),
        "cargo tree -p {package} lists its dependencies: {deps:?}"
    );
    for forbidden in ["glommio", "freshet", "freshet-client"] {
        assert!(
            !deps.iter().any(|d| d == forbidden),
            "{package} depends on {forbidden}: {deps:?}"
        );
    }
}

#[test]
fn the_protocol_crate_depends_on_neither_glommio_nor_the_broker() {
    assert_below_the_broker("freshet-protocol");
}

#[test]
fn the_client_crate_depends_on_neither_glommio_nor_the_broker() {
    assert_below_the_broker("freshet-client");
    assert!(normal_dependencies("freshet-client").contains(&"freshet-protocol".to_string()));
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_the_binary_uses_the_client_crate() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 50,
        "found the broker's sources: {}",
        files.len()
    );
    let main = src.join("main.rs");
    assert!(std::fs::read_to_string(&main)
        .expect("read main.rs")
        .contains("freshet_client::"));
    let offenders: Vec<_> = files
        .iter()
        .filter(|f| **f != main)
        .filter(|f| {
            std::fs::read_to_string(f)
                .expect("read source")
                .contains("freshet_client")
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "the broker library uses the client crate: {offenders:?}"
    );
}

/// No import cycle between the broker crate's top-level modules (`tests/module_graph.py`
/// prints the graph and its strongly connected components; issue 11 brought them to none).
#[test]
fn the_broker_modules_import_each_other_without_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(root.join("tests/module_graph.py"))
        .arg(root.join("src"))
        .output()
        .expect("run python3 tests/module_graph.py");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "module_graph.py failed: {text}");
    assert!(
        text.lines().any(|l| l.trim() == "cycles: 0"),
        "module import cycles:\n{text}"
    );
}

/// glommio is named only behind the runtime seam (`src/rt/glommio_backend.rs`) and in the
/// storage I/O layer's real backend (`src/storage/io/real.rs`, glommio's DmaFile).
#[test]
fn glommio_is_named_only_behind_the_runtime_seam_and_in_the_disk_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut naming: Vec<String> = files
        .iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .expect("read source")
                .contains("glommio::")
        })
        .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
        .collect();
    naming.sort();
    assert_eq!(naming, ["rt/glommio_backend.rs", "storage/io/real.rs"]);
}
