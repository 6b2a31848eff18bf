//! The SQL types a job's columns and expressions have, and how they map onto record fields.

use std::fmt;

use sqlparser::ast::DataType;

use crate::record::FieldType;

/// A column's or an expression's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SqlType {
    /// `INT`: 32-bit in Flink; a 64-bit integer here.
    Int,
    /// `BIGINT`.
    BigInt,
    /// `DOUBLE`.
    Double,
    /// `STRING` or `VARCHAR`.
    String,
    /// `BOOLEAN`.
    Boolean,
    /// `TIMESTAMP(3)`: window bounds.
    Timestamp,
    /// `TIMESTAMP_LTZ(3)`: event time.
    TimestampLtz,
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SqlType::Int => "INT",
            SqlType::BigInt => "BIGINT",
            SqlType::Double => "DOUBLE",
            SqlType::String => "STRING",
            SqlType::Boolean => "BOOLEAN",
            SqlType::Timestamp => "TIMESTAMP(3)",
            SqlType::TimestampLtz => "TIMESTAMP_LTZ(3)",
        })
    }
}

impl SqlType {
    /// The type `written` names, or the message saying which types there are.
    pub(super) fn of(written: &DataType) -> Result<SqlType, String> {
        let text = written.to_string().to_ascii_uppercase();
        let base = text.split('(').next().unwrap_or("").trim();
        Ok(match (base, text.as_str()) {
            ("INT" | "INTEGER", _) => SqlType::Int,
            ("BIGINT", _) => SqlType::BigInt,
            ("DOUBLE", _) | (_, "DOUBLE PRECISION") => SqlType::Double,
            ("STRING" | "VARCHAR", _) => SqlType::String,
            ("BOOLEAN", _) => SqlType::Boolean,
            (_, "TIMESTAMP_LTZ(3)") => SqlType::TimestampLtz,
            (_, "TIMESTAMP(3)") => SqlType::Timestamp,
            _ => {
                return Err(format!(
                    "type `{written}` is not supported: use STRING, VARCHAR, BIGINT, INT, DOUBLE, \
                     BOOLEAN, TIMESTAMP(3) or TIMESTAMP_LTZ(3)"
                ));
            }
        })
    }

    /// Whether values of the type are integers.
    pub(super) fn is_integer(self) -> bool {
        matches!(self, SqlType::Int | SqlType::BigInt)
    }

    /// Whether values of the type are numbers.
    pub(super) fn is_numeric(self) -> bool {
        self.is_integer() || self == SqlType::Double
    }

    /// Whether a value of type `self` may be written to a column of type `column`: the same
    /// type, or an integer into a wider integer.
    pub(super) fn fits(self, column: SqlType) -> bool {
        self == column || (self == SqlType::Int && column == SqlType::BigInt)
    }

    /// Whether values of the two types compare with each other.
    pub(super) fn compares_with(self, other: SqlType) -> bool {
        self == other || (self.is_numeric() && other.is_numeric())
    }

    /// The record field type that holds a physical column of this type.
    pub(super) fn field_type(self) -> FieldType {
        match self {
            SqlType::Int | SqlType::BigInt => FieldType::Int,
            SqlType::Double => FieldType::Float,
            SqlType::String => FieldType::String,
            SqlType::Boolean => FieldType::Bool,
            SqlType::Timestamp | SqlType::TimestampLtz => FieldType::Timestamp,
        }
    }
}
