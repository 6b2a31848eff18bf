//! Bounds on what the expression compiler parses: CEL's parser recurses per level of nesting, so
//! an expression too long or too deep is refused before parsing, and parsing runs on a stack
//! large enough for whatever is within the bounds.

use super::PredicateError;

/// The longest predicate, in bytes.
pub const MAX_LENGTH: usize = 4096;

/// The deepest nesting of a predicate: parentheses, brackets and braces inside each other, and
/// conditionals `? :`.
pub const MAX_NESTING: usize = 32;

/// The stack of the thread that parses and compiles a predicate. CEL's parser recurses per level
/// of nesting and its syntax tree is as deep as the longest chain of operators, so parsing
/// needs a stack that grows with both; within [`MAX_LENGTH`] and [`MAX_NESTING`] this one is
/// ample, whatever the thread that compiles.
const COMPILE_STACK: usize = 64 << 20;

/// Refuses `text` if it is longer than [`MAX_LENGTH`] or nested deeper than [`MAX_NESTING`],
/// with the position where it goes beyond.
pub(super) fn check(text: &str) -> Result<(), PredicateError> {
    if text.len() > MAX_LENGTH {
        let at = (0..=MAX_LENGTH)
            .rev()
            .find(|&at| text.is_char_boundary(at))
            .unwrap_or(0);
        return Err(PredicateError::at(
            text,
            at,
            format!(
                "the expression is {} bytes long, and a predicate has at most {MAX_LENGTH}: it \
                 goes beyond",
                text.len()
            ),
        ));
    }
    match too_deep(text) {
        Some(at) => Err(PredicateError::at(
            text,
            at,
            format!(
                "nested deeper than {MAX_NESTING} levels (parentheses, brackets and conditionals)"
            ),
        )),
        None => Ok(()),
    }
}

/// Runs `compile` on a thread of its own with a stack of [`COMPILE_STACK`], whatever the stack
/// of the calling thread.
pub(super) fn on_compile_stack<T: Send>(compile: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("predicate".into())
            .stack_size(COMPILE_STACK)
            .spawn_scoped(scope, compile)
            .expect("a thread to compile the predicate on")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The byte offset where `text` first nests deeper than [`MAX_NESTING`], if it does: each `(`,
/// `[` and `{` opens a level and its match closes it, each `?` opens one for good; string
/// literals are skipped as CEL's lexer reads them (quoted with `"` or `'`, or tripled; with
/// escapes, unless raw: prefixed with `r` or `R`, alone or beside `b` or `B`).
fn too_deep(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let (mut depth, mut conditionals, mut i) = (0usize, 0usize, 0);
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'"' | b'\'') => {
                let prefix = bytes[..i]
                    .iter()
                    .rev()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .collect::<Vec<_>>();
                let raw = prefix.len() <= 2
                    && prefix.iter().all(|b| b"bBrR".contains(b))
                    && prefix.iter().any(|b| b"rR".contains(b));
                let triple = bytes[i..].starts_with(&[quote; 3]);
                i += if triple { 3 } else { 1 };
                while i < bytes.len() {
                    if !raw && bytes[i] == b'\\' {
                        i += 2;
                    } else if triple && bytes[i..].starts_with(&[quote; 3]) {
                        i += 3;
                        break;
                    } else if !triple && (bytes[i] == quote || bytes[i] == b'\n') {
                        i += 1;
                        break;
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'?' => conditionals += 1,
            _ => {}
        }
        if depth + conditionals > MAX_NESTING {
            return Some(i);
        }
        i += 1;
    }
    None
}
