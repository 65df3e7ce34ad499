//! The README's first command: the quick start runs on a fresh machine, also when the emulator's
//! documented port (8700) is taken.

use std::process::Command;

#[test]
fn the_quick_start_mirrors_the_emulator_even_when_port_8700_is_taken() {
    // Taken by this test, or already by something else: either way the quick start must not need it.
    let _taken = std::net::TcpListener::bind("127.0.0.1:8700");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg("scripts/quickstart.sh")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("QUICKSTART_DIR", dir.path())
        .env("MIRRORFLOW_BIN", env!("CARGO_BIN_EXE_mirrorflow"))
        .output()
        .unwrap();
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    // The hostile corpus's abusive, download-disabled and Form files are skipped, not dead-lettered.
    assert!(text.contains("exit code 0"), "{text}");
    let files = walk(&dir.path().join("mirror"));
    assert!(files > 50, "only {files} files mirrored\n{text}");
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).map(|p| if p.is_dir() { walk(&p) } else { 1 }).sum()
}
