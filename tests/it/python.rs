//! Python for the fidelity tests that measure a stand-in with a vendor's official
//! Python library (Twilio has no official Rust client): a virtualenv per set of
//! pinned packages, made once under the target directory and reused by later runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where the fidelity scripts live.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fidelity")
        .join(name)
}

/// The Python of a virtualenv `name` with `requirements` (pinned, `pkg==1.2.3`)
/// installed; `None`, after a note, when the machine has no `python3`. A virtualenv
/// or an install that fails fails the test: where Python is, PyPI is expected too.
pub async fn venv(name: &str, requirements: &[&str]) -> Option<PathBuf> {
    let name = name.to_owned();
    let requirements: Vec<String> = requirements.iter().map(|r| r.to_string()).collect();
    tokio::task::spawn_blocking(move || venv_blocking(&name, &requirements))
        .await
        .expect("making the virtualenv does not panic")
}

/// Runs `command` to its end off the test's runtime, whose stand-ins answer it
/// meanwhile.
pub async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the command's thread does not panic")
        .expect("the command starts")
}

fn venv_blocking(name: &str, requirements: &[String]) -> Option<PathBuf> {
    // Tests of this binary run in parallel: one makes a virtualenv, the others wait.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _making = MAKING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if Command::new("python3").arg("--version").output().is_err() {
        println!("note: no python3 on this machine, the Python fidelity test is skipped");
        return None;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("python")
        .join(name);
    let python = dir.join("bin/python");
    let stamp = dir.join("requirements.txt");
    let wanted = requirements.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) && python.exists() {
        return Some(python);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the target directory is writable");
    check(
        Command::new("python3").args(["-m", "venv"]).arg(&dir),
        "python3 -m venv (on Debian, the python3-venv package)",
    );
    check(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(requirements),
        &format!("pip install {} (from PyPI)", requirements.join(" ")),
    );
    // Written last: a virtualenv half made is made again.
    std::fs::write(&stamp, wanted).expect("the target directory is writable");
    Some(python)
}

fn check(command: &mut Command, what: &str) {
    match command.output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => panic!("{what} did not start: {error}"),
    }
}
