//! README.md runs as written (issue 12, item 22): every `sh` block, top to bottom, and the
//! Python examples, against a real broker on a free port (`localhost:9092` in the text is
//! replaced by its address; `freshet` is the binary cargo built, first on PATH). The "secure
//! setup from zero" blocks start a second broker of their own (SASL_SSL with SCRAM, the
//! authorizer on) on ports 9093 and 9094 in the text: replaced by free ports; it is stopped by
//! its own last block, or by this test if a block failed before that. A block that
//! cannot run here (it installs, downloads, or runs until stopped) is marked in README.md by an
//! HTML comment on the line before it, `<!-- readme-test: skip (why) -->`, and is left out.
//! A failing block fails the test with the block, its exit code and its output.

use crate::common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{broker_bin, wait_timeout, within, TestBroker};

/// Bound on the whole test.
const TEST_LIMIT: Duration = Duration::from_secs(300);
/// Bound on one block.
const BLOCK_LIMIT: Duration = Duration::from_secs(120);
/// The marker of a block left out.
const SKIP_MARKER: &str = "<!-- readme-test: skip";

/// A fenced code block of README.md.
#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    /// The fence's info string (`sh`, `python`, ...).
    lang: String,
    text: String,
    /// Preceded by the skip marker.
    skip: bool,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    let mut previous_line = "";
    for (i, line) in readme.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(block) = current.as_mut() {
            if trimmed.starts_with("```") {
                out.push(current.take().expect("open block"));
            } else {
                // Blocks indented in a list item: drop the indentation of the fence.
                block.text.push_str(line);
                block.text.push('\n');
            }
        } else if let Some(info) = trimmed.strip_prefix("```") {
            current = Some(Block {
                line: i + 1,
                lang: info.trim().to_string(),
                text: String::new(),
                skip: previous_line.trim_start().starts_with(SKIP_MARKER),
            });
        }
        if !line.trim().is_empty() {
            previous_line = line;
        }
    }
    assert!(current.is_none(), "README.md ends inside a code block");
    out
}

/// A Python with kafka-python: FRESHET_PYTHON, the suite's `.venv`, or `python3`.
fn python_with_kafka(root: &Path) -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("FRESHET_PYTHON").map(PathBuf::from),
        Some(root.join(".venv/bin/python")),
        Some(PathBuf::from("python3")),
    ];
    candidates.into_iter().flatten().find(|python| {
        Command::new(python)
            .args(["-c", "import kafka"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Runs `program args` in `cwd` with `freshet` on PATH; (exit code, stdout + stderr).
fn run(program: &Path, args: &[&str], cwd: &Path, broker: &TestBroker) -> (Option<i32>, String) {
    let bin_dir = broker_bin()
        .parent()
        .expect("the binary's directory")
        .to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    let log = cwd.join(".block-output");
    let file = std::fs::File::create(&log).expect("output file");
    let mut child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env("PATH", path)
        .env("FRESHET_BROKERS", broker.addr())
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup"))
        .stderr(file)
        .spawn()
        .expect("spawn");
    let status = wait_timeout(&mut child, BLOCK_LIMIT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut text = String::new();
    let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut text));
    let _ = std::fs::remove_file(&log);
    match status {
        Some(s) => (s.code(), text),
        None => (None, format!("{text}\n(timed out after {BLOCK_LIMIT:?})")),
    }
}

#[test]
fn every_readme_block_runs_as_written() {
    within(TEST_LIMIT, || {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
        let blocks = blocks(&readme);

        let broker = TestBroker::start(1);
        let cwd = tempfile::tempdir().expect("tempdir");
        let python = python_with_kafka(root);
        // The secure walk-through's listeners: free ports instead of the README's.
        let secure_ports = [
            (":9093", format!(":{}", common::free_port())),
            (":9094", format!(":{}", common::free_port())),
        ];
        let mut ran = 0;
        let mut failures = Vec::new();
        for block in &blocks {
            let mut text = block.text.replace("localhost:9092", &broker.addr());
            for (from, to) in &secure_ports {
                text = text.replace(from, to);
            }
            let (program, args): (PathBuf, Vec<&str>) = match block.lang.as_str() {
                "sh" | "bash" | "shell" => (
                    PathBuf::from("bash"),
                    vec!["-euxo", "pipefail", "-c", text.as_str()],
                ),
                "python" => match &python {
                    Some(python) => (python.clone(), vec!["-c", text.as_str()]),
                    None => {
                        eprintln!(
                            "SKIPPED: README.md:{} (python): no Python with kafka-python \
                             (set FRESHET_PYTHON or create .venv)",
                            block.line
                        );
                        continue;
                    }
                },
                _ => continue,
            };
            if block.skip {
                eprintln!("skip README.md:{} ({}): marked", block.line, block.lang);
                continue;
            }
            eprintln!(
                "---- README.md:{} ({}) ----\n{text}",
                block.line, block.lang
            );
            let (code, output) = run(&program, &args, cwd.path(), &broker);
            eprintln!("{output}\n---- exit {code:?} ----");
            ran += 1;
            if code != Some(0) {
                failures.push(format!(
                    "README.md:{} ({}) exited with {code:?}:\n{text}\noutput:\n{output}",
                    block.line, block.lang
                ));
            }
        }
        // The walk-through's broker, if a block failed before its stop block ran.
        if let Ok(pid) = std::fs::read_to_string(cwd.path().join("broker.pid")) {
            let pid = pid.trim().parse::<i32>().unwrap_or(0);
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            // Still that broker (not a reused pid): its command line names secure.toml.
            if pid > 0 && String::from_utf8_lossy(&cmdline).contains("secure.toml") {
                // SAFETY: kill(2) on the broker a block of this test started.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        // README's two headline commands stay: start with the embedded defaults, run the suite.
        let headline = |cmd: &str| blocks.iter().any(|b| b.lang == "sh" && b.text == cmd);
        assert!(headline("freshet start\n"), "README lost `freshet start`");
        assert!(
            headline("bash tests/run-all.sh\n"),
            "README lost `bash tests/run-all.sh`"
        );
        assert!(
            failures.is_empty(),
            "{} README block(s) failed:\n\n{}\n{}",
            failures.len(),
            failures.join("\n\n"),
            broker.log_tail()
        );
        assert!(ran >= 3, "only {ran} README blocks ran");
    });
}
