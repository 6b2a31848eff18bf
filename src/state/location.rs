//! Where a job's checkpoints live: a local directory or an S3 bucket and prefix.

use std::fmt;
use std::path::PathBuf;

/// A checkpoint store's location, as written in a job's `[checkpoints] store`.
///
/// # Examples
///
/// ```
/// use eddy::state::Location;
///
/// let s3 = Location::parse("s3://bucket/jobs/q1").unwrap();
/// assert_eq!(s3, Location::S3 { bucket: "bucket".into(), prefix: "jobs/q1".into() });
/// assert_eq!(Location::parse("/var/lib/eddy").unwrap(), Location::Dir("/var/lib/eddy".into()));
/// assert!(Location::parse("gs://bucket").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A directory of the local file system (created when missing).
    Dir(PathBuf),
    /// A bucket of an S3 (or S3-compatible) service, and the key prefix under which the store
    /// lies (empty: the bucket's root).
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix, without leading or trailing `/`.
        prefix: String,
    },
}

impl Location {
    /// Reads `s3://bucket[/prefix]` or a directory path; any other `scheme://` is an error that
    /// says what is accepted.
    pub fn parse(text: &str) -> Result<Location, String> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!(
                    "`{text}` names no bucket: expected s3://bucket/prefix"
                ));
            }
            return Ok(Location::S3 {
                bucket: bucket.into(),
                prefix: prefix.trim_matches('/').into(),
            });
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(format!(
                "`{scheme}://` stores are not supported: expected a directory or s3://bucket/prefix"
            ));
        }
        if text.is_empty() {
            return Err("is empty: expected a directory or s3://bucket/prefix".into());
        }
        Ok(Location::Dir(text.into()))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Dir(path) => write!(f, "{}", path.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_prefixes_lose_their_outer_slashes_and_print_back() {
        let location = Location::parse("s3://b/a/b/").unwrap();
        assert_eq!(
            location,
            Location::S3 {
                bucket: "b".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(location.to_string(), "s3://b/a/b");
        assert_eq!(Location::parse("s3://b").unwrap().to_string(), "s3://b");
    }

    #[test]
    fn a_bucketless_or_empty_location_is_refused() {
        assert!(Location::parse("s3:///prefix").is_err());
        assert!(Location::parse("").is_err());
    }
}
