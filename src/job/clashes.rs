//! What must not clash in a job: the names of the sections of one kind, and the files it reads
//! and writes.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Component, Path, PathBuf};

use super::{Checker, raw};
use crate::sinks::SinkSettings;

impl Checker<'_> {
    /// Two sections of one kind with one name are an error at the second: references by name
    /// would reach only the first. Views are left out: sections with one name make one view.
    pub(super) fn unique_names(&mut self, file: &raw::JobFile) {
        fn names<S>(sections: &[toml::Spanned<S>], name: fn(&S) -> &raw::Text) -> Vec<&raw::Text> {
            sections.iter().map(|s| name(s.get_ref())).collect()
        }
        let kinds = [
            ("sources", names(&file.sources, |s| &s.name)),
            ("sinks", names(&file.sinks, |s| &s.name)),
            ("metrics", names(&file.metrics, |s| &s.name)),
            ("fraud", names(&file.fraud, |s| &s.name)),
            ("commands", names(&file.commands, |s| &s.name)),
            ("orchestrators", names(&file.orchestrators, |s| &s.name)),
            ("routes", names(&file.routes, |s| &s.name)),
            ("enrich", names(&file.enrich, |s| &s.name)),
        ];
        for (key, names) in kinds {
            let mut first = HashMap::new();
            for (i, name) in names.into_iter().enumerate() {
                match first.entry(name.get_ref()) {
                    Entry::Occupied(at) => self.error(
                        name.span(),
                        format!("{key}[{i}].name"),
                        format!(
                            "`{}` is already the name of {key}[{}]: give each its own",
                            name.get_ref(),
                            at.get()
                        ),
                    ),
                    Entry::Vacant(at) => {
                        at.insert(i);
                    }
                }
            }
        }
    }

    /// No file is written by two sinks, nor written by a sink and read by a source: the paths
    /// of file sinks and the sent records of notify sinks are compared with each other and with
    /// the paths of file sources, as the files they name (see [`identity`]).
    pub(super) fn distinct_files(&mut self, file: &raw::JobFile) {
        let mut read = HashMap::new();
        for (i, s) in file.sources.iter().enumerate() {
            if let raw::SourceKind::File(f) = s.get_ref().kind.get_ref() {
                for (j, path) in f.paths.iter().flat_map(|p| p.get_ref()).enumerate() {
                    let key = identity(&self.relative(path.get_ref()));
                    read.entry(key)
                        .or_insert_with(|| format!("sources[{i}].paths[{j}]"));
                }
            }
        }
        let mut written = HashMap::new();
        for (i, s) in file.sinks.iter().enumerate() {
            let (path, setting) = match s.get_ref().kind.get_ref() {
                SinkSettings::File(f) => (f.path.as_ref(), "path"),
                SinkSettings::Notify(n) => (n.sent_record.as_ref(), "sent_record"),
                _ => continue,
            };
            let Some(path) = path.filter(|p| !p.get_ref().trim().is_empty()) else {
                continue;
            };
            let field = format!("sinks[{i}].{setting}");
            let key = identity(&self.relative(path.get_ref()));
            if let Some(source) = read.get(&key) {
                self.error(
                    path.span(),
                    field.clone(),
                    format!(
                        "`{}` is the file {source} reads: a sink must not write over its input",
                        path.get_ref()
                    ),
                );
            }
            match written.entry(key) {
                Entry::Occupied(other) => self.error(
                    path.span(),
                    field,
                    format!(
                        "`{}` is the file {} writes: give each sink its own file",
                        path.get_ref(),
                        other.get()
                    ),
                ),
                Entry::Vacant(first) => {
                    first.insert(field);
                }
            }
        }
    }
}

/// What tells two paths to one file apart from paths to two: the canonical path where the file
/// exists; where it does not, its directory's canonical path with its name; and where neither
/// exists, the path with its `.` and `..` components resolved as written. SQL jobs compare their
/// files with it too.
pub(crate) fn identity(path: &Path) -> PathBuf {
    let mut plain = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(plain.components().next_back(), Some(Component::Normal(_))) =>
            {
                plain.pop();
            }
            other => plain.push(other),
        }
    }
    if let Ok(canonical) = plain.canonicalize() {
        return canonical;
    }
    match (plain.parent(), plain.file_name()) {
        (Some(dir), Some(name)) => match dir.canonicalize() {
            Ok(dir) => dir.join(name),
            Err(_) => plain,
        },
        _ => plain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_to_one_file_have_one_identity() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("in.jsonl"), "").unwrap();
        assert_eq!(
            identity(&d.join("sub/../in.jsonl")),
            identity(&d.join("in.jsonl"))
        );
        assert_eq!(
            identity(&d.join("./sub/new.jsonl")),
            identity(&d.join("sub/new.jsonl"))
        );
        assert_ne!(
            identity(&d.join("sub/new.jsonl")),
            identity(&d.join("new.jsonl"))
        );
        assert_eq!(
            identity(Path::new("nowhere/x/../out.jsonl")),
            PathBuf::from("nowhere/out.jsonl")
        );
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(d.join("in.jsonl"), d.join("link.jsonl")).unwrap();
            assert_eq!(
                identity(&d.join("link.jsonl")),
                identity(&d.join("in.jsonl"))
            );
        }
    }
}
