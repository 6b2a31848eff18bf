//! Sections whose `kind` chooses their settings: sources, sinks and windows.
//!
//! serde reads an internally tagged enum (`kind = "file"` beside the file's settings) by
//! buffering the section, which loses the positions that errors need. So before the file is
//! deserialized, each such section is rewritten into the externally tagged form, which serde
//! reads in place: `{ name = …, kind = "file", path = … }` becomes
//! `{ name = …, kind = { file = { path = … } } }`, the settings every kind shares staying where
//! they are. The rewrite also reports, all at once and naming them, the kinds it does not know
//! (which leave the file unreadable) and the settings that belong to another kind or to none
//! (which it drops, so that the rest of the file is still checked).

use std::ops::Range;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, VariantAccess, Visitor,
};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::raw;
use crate::sinks::SinkSettings;

/// One kind of tagged section: what it is called in messages, the settings every kind shares,
/// and each kind with its own settings.
struct Tagged {
    what: &'static str,
    shared: &'static [&'static str],
    kinds: Vec<(&'static str, &'static [&'static str])>,
}

impl Tagged {
    /// The section `S`, whose `kind` field holds the enum `K` of one newtype variant per kind.
    fn of<S: DeserializeOwned, K: DeserializeOwned>(what: &'static str) -> Tagged {
        Tagged {
            what,
            shared: fields::<S>(),
            kinds: variants::<K>()
                .iter()
                .map(|&v| (v, variant_fields::<K>(v)))
                .collect(),
        }
    }

    /// "kafka, file or generator".
    fn kind_list(&self) -> String {
        joined(self.kinds.iter().map(|(k, _)| *k), "or")
    }
}

/// A problem in the file: where, the field's dotted path, and what.
pub(super) type Problem = (Range<usize>, String, String);

/// What the rewrite found.
#[derive(Default)]
pub(super) struct Rewrite {
    /// Every problem.
    pub problems: Vec<Problem>,
    /// Whether some section could not be rewritten (its kind is missing or unknown).
    pub unreadable: bool,
}

/// Rewrites the sources, the sinks and the metrics' windows of `doc` (see the module doc).
pub(super) fn nest_kinds(doc: &mut DeTable<'_>) -> Rewrite {
    let sources = Tagged::of::<raw::SourceSection, raw::SourceKind>("source");
    let sinks = Tagged::of::<raw::SinkSection, SinkSettings>("sink");
    let windows = Tagged::of::<raw::WindowSection, raw::WindowKind>("window");
    let mut rewrite = Rewrite::default();
    for (key, tagged) in [("sources", &sources), ("sinks", &sinks)] {
        for (i, section) in tables(doc, key) {
            nest(section, tagged, &format!("{key}[{i}]"), &mut rewrite);
        }
    }
    for (i, metric) in tables(doc, "metrics") {
        if let DeValue::Table(metric) = metric.get_mut()
            && let Some(window) = metric.get_mut("window")
        {
            nest(
                window,
                &windows,
                &format!("metrics[{i}].window"),
                &mut rewrite,
            );
        }
    }
    rewrite
}

/// The tables of the array `key` of `doc`, with their indexes (none when it is no array).
fn tables<'a, 'i>(
    doc: &'a mut DeTable<'i>,
    key: &str,
) -> impl Iterator<Item = (usize, &'a mut Spanned<DeValue<'i>>)> {
    let array = match doc.get_mut(key).map(Spanned::get_mut) {
        Some(DeValue::Array(array)) => array.as_mut(),
        _ => &mut [],
    };
    array.iter_mut().enumerate()
}

/// Rewrites one section at `field`, when it is a table (serde reports what else it is).
fn nest(section: &mut Spanned<DeValue<'_>>, tagged: &Tagged, field: &str, rewrite: &mut Rewrite) {
    let span = section.span();
    let DeValue::Table(table) = section.get_mut() else {
        return;
    };
    let what = tagged.what;
    let Some((key, kind)) = table.remove_entry("kind") else {
        rewrite.unreadable = true;
        rewrite.problems.push((
            span,
            format!("{field}.kind"),
            format!("a {what} needs a `kind`: {}", tagged.kind_list()),
        ));
        return;
    };
    let Some((name, settings)) = kind
        .get_ref()
        .as_str()
        .and_then(|name| tagged.kinds.iter().find(|(k, _)| *k == name))
    else {
        let written = match kind.get_ref().as_str() {
            Some(name) => format!("`{name}`"),
            None => format!("a {}", kind.get_ref().type_str()),
        };
        rewrite.unreadable = true;
        rewrite.problems.push((
            kind.span(),
            format!("{field}.kind"),
            format!(
                "unknown {what} kind {written}: expected {}",
                tagged.kind_list()
            ),
        ));
        return;
    };
    let moving: Vec<String> = table
        .keys()
        .map(|k| k.get_ref().to_string())
        .filter(|k| !tagged.shared.contains(&k.as_str()))
        .collect();
    let mut own = DeTable::new();
    for setting in moving {
        let (k, v) = table
            .remove_entry(setting.as_str())
            .expect("a key of the table");
        if settings.contains(&setting.as_str()) {
            own.insert(k, v);
        } else {
            rewrite.problems.push((
                k.span(),
                format!("{field}.{setting}"),
                foreign(tagged, name, &setting),
            ));
        }
    }
    let mut variant = DeTable::new();
    variant.insert(
        Spanned::new(kind.span(), (*name).into()),
        Spanned::new(span, DeValue::Table(own)),
    );
    table.insert(key, Spanned::new(kind.span(), DeValue::Table(variant)));
}

/// The message for `setting`, which a `kind` section does not take.
fn foreign(tagged: &Tagged, kind: &str, setting: &str) -> String {
    let what = tagged.what;
    let owners = tagged
        .kinds
        .iter()
        .filter(|(_, settings)| settings.contains(&setting))
        .map(|(k, _)| *k);
    if owners.clone().next().is_some() {
        return format!(
            "`{setting}` is a setting of {} {what}s, not of {kind} {what}s",
            joined(owners, "or")
        );
    }
    let (_, own) = tagged
        .kinds
        .iter()
        .find(|(k, _)| *k == kind)
        .expect("a known kind");
    let all = tagged
        .shared
        .iter()
        .filter(|s| **s != "kind")
        .chain(own.iter())
        .copied();
    format!(
        "unknown field `{setting}`: a {kind} {what} has {}",
        joined(all, "and")
    )
}

/// "a, b or c" with `last` = "or".
fn joined<'a>(items: impl Iterator<Item = &'a str>, last: &str) -> String {
    let items: Vec<&str> = items.collect();
    match items.split_last() {
        None => String::new(),
        Some((one, [])) => one.to_string(),
        Some((end, rest)) => format!("{} {last} {end}", rest.join(", ")),
    }
}

/// What serde tells a deserializer about a type: the fields of a struct, the variants of an
/// enum, or something else. The [`Probe`] deserializer asks, and answers nothing.
#[derive(Debug)]
enum Told {
    Fields(&'static [&'static str]),
    Variants(&'static [&'static str]),
    Other,
}

impl std::fmt::Display for Told {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Told {}

impl de::Error for Told {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Told::Other
    }
}

/// The field names of the struct `T`, as serde derived them.
fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(Probe(None)) {
        Err(Told::Fields(fields)) => fields,
        _ => panic!("{} is not a struct", std::any::type_name::<T>()),
    }
}

/// The variant names of the enum `T`.
fn variants<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(Probe(None)) {
        Err(Told::Variants(variants)) => variants,
        _ => panic!("{} is not an enum", std::any::type_name::<T>()),
    }
}

/// The field names of the struct in the newtype variant `variant` of the enum `T`.
fn variant_fields<T: DeserializeOwned>(variant: &'static str) -> &'static [&'static str] {
    match T::deserialize(Probe(Some(variant))) {
        Err(Told::Fields(fields)) => fields,
        _ => panic!(
            "{variant} of {} holds no struct",
            std::any::type_name::<T>()
        ),
    }
}

/// A deserializer that reports what it is asked for; as an enum, it is the variant it names.
struct Probe(Option<&'static str>);

impl<'de> de::Deserializer<'de> for Probe {
    type Error = Told;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Told> {
        Err(Told::Other)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Told> {
        Err(Told::Fields(fields))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Told> {
        match self.0 {
            None => Err(Told::Variants(variants)),
            Some(_) => visitor.visit_enum(self),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map identifier ignored_any
    }
}

impl<'de> EnumAccess<'de> for Probe {
    type Error = Told;
    type Variant = Probe;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Probe), Told> {
        let variant = self.0.expect("an enum probe names its variant");
        Ok((seed.deserialize(variant.into_deserializer())?, Probe(None)))
    }
}

impl<'de> VariantAccess<'de> for Probe {
    type Error = Told;

    fn unit_variant(self) -> Result<(), Told> {
        Err(Told::Other)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Told> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Told> {
        Err(Told::Other)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Told> {
        Err(Told::Fields(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_read_the_shape_serde_derived() {
        let sources = Tagged::of::<raw::SourceSection, raw::SourceKind>("source");
        assert!(sources.shared.contains(&"event_time"));
        assert_eq!(sources.kind_list(), "kafka, file or generator");
        let (_, file) = sources.kinds.iter().find(|(k, _)| *k == "file").unwrap();
        assert_eq!(*file, ["paths", "splits"]);
        let sinks = Tagged::of::<raw::SinkSection, SinkSettings>("sink");
        let (_, discard) = sinks.kinds.iter().find(|(k, _)| *k == "discard").unwrap();
        assert!(discard.is_empty());
    }

    #[test]
    fn settings_of_another_kind_name_the_kinds_that_have_them() {
        let sinks = Tagged::of::<raw::SinkSection, SinkSettings>("sink");
        assert_eq!(
            foreign(&sinks, "stdout", "path"),
            "`path` is a setting of file sinks, not of stdout sinks"
        );
        assert_eq!(
            foreign(&sinks, "discard", "format"),
            "`format` is a setting of kafka, file or stdout sinks, not of discard sinks"
        );
        assert_eq!(
            foreign(&sinks, "discard", "speed"),
            "unknown field `speed`: a discard sink has name"
        );
    }
}
