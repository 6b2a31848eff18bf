//! The command line's conventions: `--version`, shell completions, exit status 2 for usage
//! errors, and no colour in logs under `NO_COLOR`.

use std::process::{Command, Output};

fn eddy(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eddy"));
    command
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE");
    command.envs(env.iter().copied());
    command.output().expect("running eddy")
}

#[test]
fn version_names_the_package_version() {
    let out = eddy(&["--version"], &[]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("eddy {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn completions_cover_every_subcommand_in_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = eddy(&["completions", shell], &[]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        for subcommand in [
            "run",
            "check",
            "checkpoints",
            "demo",
            "produce",
            "completions",
        ] {
            assert!(
                script.contains(subcommand),
                "{shell} completions lack `{subcommand}`"
            );
        }
    }
    assert_eq!(eddy(&["completions", "tcsh"], &[]).status.code(), Some(2));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["no-such-command"][..],
        &["run"],
        &["run", "job.toml", "--no-such-flag"],
        &["demo", "--rate", "many"],
        &[],
    ] {
        let out = eddy(args, &[]);
        assert_eq!(out.status.code(), Some(2), "eddy {args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--help"),
            "eddy {args:?} points at its help"
        );
    }
}

/// A bounded job that logs at info level (its HTTP server's address) and ends at once.
const LOGGING_JOB: &str = r#"
[job]
name = "cli"

[[sources]]
name = "payments"
kind = "generator"
count = 10
event_time = "ts"
schema = { account_id = "int", ts = "timestamp" }

[[routes]]
name = "all"
source = "payments"
sinks = ["nowhere"]

[server]
listen = "127.0.0.1:0"

[[sinks]]
name = "nowhere"
kind = "discard"
"#;

#[test]
fn no_color_turns_log_colours_off() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("cli.toml");
    std::fs::write(&job, LOGGING_JOB).unwrap();
    let job = job.to_str().unwrap();
    let logs = |env: &[(&str, &str)]| {
        let mut env = env.to_vec();
        env.push(("RUST_LOG", "info"));
        let out = eddy(&["run", job], &env);
        assert!(out.status.success(), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(stderr.contains("HTTP server listening"), "{stderr}");
        stderr
    };
    // Forced colour shows that the logs can be coloured at all; NO_COLOR wins over it.
    assert!(logs(&[("CLICOLOR_FORCE", "1")]).contains('\x1b'));
    assert!(!logs(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]).contains('\x1b'));
    // Not a terminal, nothing forced: plain.
    assert!(!logs(&[]).contains('\x1b'));
}
