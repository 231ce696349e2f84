//! Rows as ClickHouse `TabSeparated` lines, the format of the file store and the spool.
//! ClickHouse loads it directly; binary `FixedString` bytes are written as `\xNN` escapes,
//! which it reads back byte for byte (JSON strings cannot carry them).
use serde::ser::{self, Serialize};

/// Why a row could not be written as TSV (a type the tables never use).
#[derive(Debug, thiserror::Error)]
#[error("row cannot be written as TabSeparated: {0}")]
pub struct TsvError(String);

impl ser::Error for TsvError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        TsvError(msg.to_string())
    }
}

/// Appends one row (a flat struct) as a TSV line, newline included.
pub fn write_row<T: Serialize>(row: &T, out: &mut Vec<u8>) -> Result<(), TsvError> {
    let mut s = RowSerializer {
        out,
        fields: 0,
        bytes: None,
    };
    row.serialize(&mut s)?;
    s.out.push(b'\n');
    Ok(())
}

/// The header line of `TabSeparatedWithNames` for these columns.
pub fn header(columns: &[&str]) -> Vec<u8> {
    let mut h = columns.join("\t").into_bytes();
    h.push(b'\n');
    h
}

fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\'' => out.extend_from_slice(b"\\'"),
            0x20..=0x7e => out.push(b),
            _ if b >= 0x80 => out.push(b), // UTF-8 text stays as it is
            _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
}

fn escape_binary_into(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() {
            out.push(b);
        } else {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
}

/// Reverses the escapes of a TSV field.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' || i + 1 >= field.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let e = field[i + 1];
        i += 2;
        match e {
            b't' => out.push(b'\t'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b'0' => out.push(0),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'x' if i + 2 <= field.len() => {
                let hex = std::str::from_utf8(&field[i..i + 2]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.extend_from_slice(b"\\x"),
                }
            }
            other => out.push(other),
        }
    }
    out
}

struct RowSerializer<'a> {
    out: &'a mut Vec<u8>,
    fields: usize,
    /// Bytes of a fixed-size array being collected.
    bytes: Option<Vec<u8>>,
}

impl RowSerializer<'_> {
    fn sep(&mut self) {
        if self.fields > 0 {
            self.out.push(b'\t');
        }
        self.fields += 1;
    }

    fn text(&mut self, s: &str) {
        if let Some(b) = &mut self.bytes {
            b.extend_from_slice(s.as_bytes());
            return;
        }
        self.sep();
        self.out.extend_from_slice(s.as_bytes());
    }
}

fn unsupported(what: &str) -> TsvError {
    TsvError(format!("{what} is not a column type of tapwatch's tables"))
}

macro_rules! number {
    ($name:ident, $t:ty) => {
        fn $name(self, v: $t) -> Result<(), TsvError> {
            if let Some(b) = &mut self.bytes {
                b.push(v as u8);
                return Ok(());
            }
            self.text(&v.to_string());
            Ok(())
        }
    };
}

impl<'a> ser::Serializer for &mut RowSerializer<'a> {
    type Ok = ();
    type Error = TsvError;
    type SerializeSeq = ser::Impossible<(), TsvError>;
    type SerializeTuple = Self;
    type SerializeTupleStruct = ser::Impossible<(), TsvError>;
    type SerializeTupleVariant = ser::Impossible<(), TsvError>;
    type SerializeMap = ser::Impossible<(), TsvError>;
    type SerializeStruct = Self;
    type SerializeStructVariant = ser::Impossible<(), TsvError>;

    fn serialize_bool(self, v: bool) -> Result<(), TsvError> {
        self.text(if v { "1" } else { "0" });
        Ok(())
    }
    number!(serialize_i8, i8);
    number!(serialize_i16, i16);
    number!(serialize_i32, i32);
    number!(serialize_i64, i64);
    number!(serialize_u8, u8);
    number!(serialize_u16, u16);
    number!(serialize_u32, u32);
    number!(serialize_u64, u64);
    fn serialize_f32(self, v: f32) -> Result<(), TsvError> {
        self.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), TsvError> {
        // ClickHouse reads `nan` and `inf`; Rust prints `NaN`.
        let s = if v.is_nan() {
            "nan".to_string()
        } else if v.is_infinite() {
            if v > 0.0 { "inf" } else { "-inf" }.to_string()
        } else {
            v.to_string()
        };
        self.text(&s);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), TsvError> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<(), TsvError> {
        self.sep();
        escape_into(v.as_bytes(), self.out);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), TsvError> {
        self.sep();
        escape_binary_into(v, self.out);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), TsvError> {
        Err(unsupported("Nullable"))
    }
    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<(), TsvError> {
        Err(unsupported("Nullable"))
    }
    fn serialize_unit(self) -> Result<(), TsvError> {
        Err(unsupported("unit"))
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), TsvError> {
        Err(unsupported("unit struct"))
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        v: &'static str,
    ) -> Result<(), TsvError> {
        self.serialize_str(v)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), TsvError> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), TsvError> {
        Err(unsupported("enum"))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, TsvError> {
        Err(unsupported("Array"))
    }
    fn serialize_tuple(self, len: usize) -> Result<Self, TsvError> {
        // `[u8; N]` is a `FixedString(N)`.
        self.bytes = Some(Vec::with_capacity(len));
        Ok(self)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, TsvError> {
        Err(unsupported("tuple struct"))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, TsvError> {
        Err(unsupported("enum"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, TsvError> {
        Err(unsupported("Map"))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, TsvError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, TsvError> {
        Err(unsupported("enum"))
    }
}

impl ser::SerializeTuple for &mut RowSerializer<'_> {
    type Ok = ();
    type Error = TsvError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), TsvError> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<(), TsvError> {
        let bytes = self.bytes.take().unwrap_or_default();
        self.sep();
        escape_binary_into(&bytes, self.out);
        Ok(())
    }
}

impl ser::SerializeStruct for &mut RowSerializer<'_> {
    type Ok = ();
    type Error = TsvError;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        _: &'static str,
        v: &T,
    ) -> Result<(), TsvError> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<(), TsvError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct R {
        a: u32,
        s: String,
        ip: [u8; 4],
        f: f64,
    }

    #[test]
    fn fields_are_tab_separated_and_escaped() {
        let mut out = Vec::new();
        let r = R {
            a: 7,
            s: "x\ty\\z'".into(),
            ip: [10, 0, b'A', 255],
            f: 1.5,
        };
        write_row(&r, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "7\tx\\ty\\\\z\\'\t\\x0a\\x00A\\xff\t1.5\n"
        );
    }

    #[test]
    fn unescape_reverses_escape() {
        let raw: Vec<u8> = (0..=255u8).collect();
        let mut esc = Vec::new();
        escape_binary_into(&raw, &mut esc);
        assert_eq!(unescape(&esc), raw);
        let mut esc = Vec::new();
        escape_into("tab\there\nnew \\ 'q' é".as_bytes(), &mut esc);
        assert_eq!(unescape(&esc), "tab\there\nnew \\ 'q' é".as_bytes());
    }
}
