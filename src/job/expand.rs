//! `${VAR}` in every string value of the job file, replaced from the environment before the file
//! is read into sections: every setting expands the same way, and an unset variable is an error
//! wherever it stands. Keys are not expanded.

use std::borrow::Cow;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::tagged::Problem;

/// Expands every string value of `doc`, taking variables from `vars`; each unset variable or
/// unclosed `${` is a problem at its string, which is then left as written (so that what
/// depends on it reports nothing more).
pub(super) fn expand_strings(
    doc: &mut DeTable<'_>,
    vars: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    for (key, value) in doc.iter_mut() {
        expand_value(value, key.get_ref(), vars, problems);
    }
}

fn expand_value(
    value: &mut Spanned<DeValue<'_>>,
    field: &str,
    vars: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(text) if text.contains("${") => match expand(text, vars) {
            Ok(expanded) => *text = Cow::Owned(expanded),
            Err(message) => problems.push((span, field.to_string(), message)),
        },
        DeValue::Array(array) => {
            for (i, item) in array.as_mut().iter_mut().enumerate() {
                expand_value(item, &format!("{field}[{i}]"), vars, problems);
            }
        }
        DeValue::Table(table) => {
            for (key, item) in table.iter_mut() {
                expand_value(item, &format!("{field}.{}", key.get_ref()), vars, problems);
            }
        }
        _ => {}
    }
}

/// `text` with each `${VAR}` replaced; or what is wrong: the first unset variable, or an unclosed
/// `${`. SQL jobs expand their option values with it too.
pub(crate) fn expand(text: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let Some(end) = rest[at..].find('}') else {
            return Err("unclosed `${`".into());
        };
        let name = &rest[at + 2..at + end];
        let value =
            vars(name).ok_or_else(|| format!("environment variable `{name}` is not set"))?;
        out.push_str(&value);
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        (name == "A").then(|| "x".into())
    }

    #[test]
    fn expands_each_variable_and_names_the_first_unset_one() {
        assert_eq!(expand("a${A}b${A}", &vars), Ok("axbx".into()));
        assert_eq!(expand("plain", &vars), Ok("plain".into()));
        assert_eq!(
            expand("${A}-${B}-${C}", &vars),
            Err("environment variable `B` is not set".into())
        );
        assert_eq!(expand("${A}${open", &vars), Err("unclosed `${`".into()));
    }
}
