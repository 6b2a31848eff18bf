//! The README's first two commands are the ones a newcomer runs: the demo and the test suite,
//! and CI runs exactly the README's test command as its last step, so the two never drift apart.

use std::path::Path;

fn read(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A shell line without its comment and surrounding blanks.
fn command(line: &str) -> &str {
    line.split_once('#')
        .map_or(line, |(command, _)| command)
        .trim()
}

/// The commands of the README's first code block.
fn readme_commands() -> Vec<String> {
    let readme = read("README.md");
    let block = readme
        .split("```")
        .nth(1)
        .expect("the README has a code block");
    let body = block
        .split_once('\n')
        .expect("a code block has a first line")
        .1;
    body.lines()
        .map(command)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_readme_starts_with_the_demo_and_the_test_commands() {
    let commands = readme_commands();
    assert_eq!(
        commands.iter().take(2).collect::<Vec<_>>(),
        ["cargo run --release -- demo", "cargo test"],
        "the README's first code block: {commands:?}"
    );
}

#[test]
fn ci_runs_the_readme_test_command_last() {
    let test = readme_commands()
        .into_iter()
        .nth(1)
        .expect("the README names a test command");
    let ci = read(".ci/run");
    let last = ci
        .lines()
        .map(command)
        .rfind(|c| !c.is_empty())
        .expect(".ci/run has commands");
    assert_eq!(
        last, test,
        ".ci/run must end with the README's test command"
    );
}
