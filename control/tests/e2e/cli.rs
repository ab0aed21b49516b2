//! The `qorgan` binary's configuration gate: bad settings exit 64 with `file:line` and the
//! field, before anything binds a socket.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the binary; a process still running after 10 s is killed and fails the test (a gate
/// that let it through would otherwise hang the suite).
fn qorgan(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qorgan"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("qorgan {args:?} was still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn check_config_prints_the_effective_config_with_defaults_filled_in() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("q.toml");
    std::fs::write(&file, "[dns]\nlisten = [\"127.0.0.1:5399\"]\n").unwrap();
    let out = qorgan(&["check-config", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("127.0.0.1:5399"), "{text}");
    assert!(text.contains("unknown_clients = \"drop\""), "{text}");
}

#[test]
fn check_config_rejects_a_bad_value_with_exit_64_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[dns]\n\nupstreams = [\"not-an-address\"]\n").unwrap();
    let out = qorgan(&["check-config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("bad.toml:3"), "{err}");
    assert!(err.contains("dns.upstreams"), "{err}");
}

#[test]
fn serve_refuses_placeholder_secrets_beyond_loopback_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("public.toml");
    let data = dir.path().join("data");
    // Port 0 on the wildcard address: the gate must refuse before any bind happens.
    std::fs::write(
        &file,
        format!(
            "[http]\nlisten = \"0.0.0.0:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\n[storage]\ndata_dir = {data:?}\n"
        ),
    )
    .unwrap();
    let out = qorgan(&["serve", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("operator.token"), "{err}");
    assert!(
        !data.exists(),
        "nothing may be created before the config is accepted"
    );
}
