//! The sender binary, run as an operator runs it.

use std::process::Command;

/// Writes `toml` to `sender.toml` in a temp dir and runs `deskmail-sender --check-config`.
fn check_config(toml: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sender.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_deskmail-sender"))
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .env_clear()
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const VALID: &str = "[config_service]\ntoken = \"a-daemon-token-0123\"\n";

#[test]
fn check_config_accepts_a_valid_file() {
    let (code, stdout, stderr) = check_config(VALID);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "ok");
}

#[test]
fn check_config_names_a_bad_port() {
    let (code, _, stderr) = check_config(&format!("{VALID}[metrics]\nport = 70000\n"));
    assert_eq!(code, 78);
    assert!(stderr.contains("sender.toml: metrics.port: 70000 is not a port"), "{stderr}");
}

#[test]
fn check_config_names_a_missing_required_key() {
    let (code, _, stderr) = check_config("[config_service]\nurl = \"http://127.0.0.1:50051\"\n");
    assert_eq!(code, 78);
    assert!(stderr.contains("sender.toml: config_service.token: is required but missing"), "{stderr}");
}

#[test]
fn check_config_names_an_unknown_key() {
    let (code, _, stderr) = check_config(&format!("{VALID}[smtp]\npool_size = 3\n"));
    assert_eq!(code, 78);
    assert!(stderr.contains("sender.toml: smtp.pool_size: is not a known key"), "{stderr}");
}

#[test]
fn check_config_names_an_environment_override() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sender.toml");
    std::fs::write(&path, VALID).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_deskmail-sender"))
        .args(["--check-config", "--config"])
        .arg(&path)
        .env_clear()
        .env("DESKMAIL_AMQP__PREFETCH", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr.contains("DESKMAIL_AMQP__PREFETCH: amqp.prefetch:"), "{stderr}");
}

#[test]
fn check_config_reports_every_semantic_problem() {
    let toml = "[config_service]\ntoken = \"\"\nurl = \"ftp://x\"\n[smtp]\npool_max_per_box = 0\n";
    let (code, _, stderr) = check_config(toml);
    assert_eq!(code, 78);
    for key in ["config_service.token", "config_service.url", "smtp.pool_max_per_box"] {
        assert!(stderr.contains(key), "{key} missing in: {stderr}");
    }
}

#[test]
fn help_lists_the_common_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_deskmail-sender")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--check-config", "--log-format"] {
        assert!(help.contains(flag), "{flag} missing in: {help}");
    }
}
