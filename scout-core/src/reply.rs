//! Decoding the core agent's replies, and a JSON syntax checker, without allocation.
//!
//! Replies look like `{"Register": {"id": null, "result": "Success"}}`, `{"CoreAgentVersion":
//! {"version": "1.6.0", "result": "Success"}}` or `{"Failure": {"message": "..."}}`.

/// Maximum nesting accepted by the checker and the decoder.
pub const MAX_DEPTH: usize = 64;

/// What a reply said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Reply<'a> {
    /// The top-level key: the command answered, or `Failure`.
    pub command: &'a str,
    /// The `result` field, if present and a string.
    pub result: Option<&'a str>,
    /// The `message` field (failures), if present and a string.
    pub message: Option<&'a str>,
    /// The `version` field (`CoreAgentVersion` replies), if present and a string.
    pub version: Option<&'a str>,
}

impl Reply<'_> {
    /// True for `{"<Command>": {"result": "Success", ..}}`.
    pub fn is_success(&self) -> bool {
        self.command != "Failure" && self.result == Some("Success")
    }
}

/// Why a reply could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ReplyError {
    /// Not UTF-8 or not JSON; the offset of the first problem.
    Syntax(usize),
    /// JSON, but not an object with one key whose value is an object.
    Shape,
}

impl core::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Syntax(at) => write!(f, "reply is not valid JSON (byte {at})"),
            Self::Shape => f.write_str("reply is not {\"<Command>\": {...}}"),
        }
    }
}

impl core::error::Error for ReplyError {}

/// Decodes one reply body (the bytes after the length prefix).
///
/// String fields are returned as they appear between the quotes: escape sequences are not
/// decoded (replies from core agents contain none in practice).
pub fn decode_reply(body: &[u8]) -> Result<Reply<'_>, ReplyError> {
    let text = core::str::from_utf8(body).map_err(|e| ReplyError::Syntax(e.valid_up_to()))?;
    // Syntax first, so that invalid JSON is never reported as a shape problem.
    validate_json(body).map_err(|e| ReplyError::Syntax(e.at))?;
    // From here on the text is valid JSON: anything unexpected is a shape problem.
    let mut p = Parser {
        b: text.as_bytes(),
        i: 0,
    };
    p.ws();
    p.expect(b'{').map_err(|_| ReplyError::Shape)?;
    p.ws();
    let (ks, ke) = p.string().map_err(|_| ReplyError::Shape)?;
    p.ws();
    p.expect(b':').map_err(|_| ReplyError::Shape)?;
    p.ws();
    let mut reply = Reply {
        command: &text[ks..ke],
        result: None,
        message: None,
        version: None,
    };
    if p.peek() != Some(b'{') {
        p.value(1).map_err(|_| ReplyError::Shape)?;
        p.finish_object_tail(text)?;
        return Err(ReplyError::Shape);
    }
    p.i += 1;
    p.ws();
    if p.peek() == Some(b'}') {
        p.i += 1;
    } else {
        loop {
            p.ws();
            let (fs, fe) = p.string().map_err(|_| ReplyError::Shape)?;
            p.ws();
            p.expect(b':').map_err(|_| ReplyError::Shape)?;
            p.ws();
            let field = &text[fs..fe];
            if p.peek() == Some(b'"') {
                let (vs, ve) = p.string().map_err(|_| ReplyError::Shape)?;
                let v = Some(&text[vs..ve]);
                match field {
                    "result" => reply.result = v,
                    "message" => reply.message = v,
                    "version" => reply.version = v,
                    _ => {}
                }
            } else {
                p.value(2).map_err(|_| ReplyError::Shape)?;
            }
            p.ws();
            match p.next() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err(ReplyError::Shape),
            }
        }
    }
    p.finish_object_tail(text)?;
    Ok(reply)
}

/// Checks that `b` is exactly one JSON value (surrounding whitespace allowed).
pub(crate) fn validate_json(b: &[u8]) -> Result<(), crate::value::InvalidJson> {
    let err = |at| crate::value::InvalidJson { at };
    core::str::from_utf8(b).map_err(|e| err(e.valid_up_to()))?;
    let mut p = Parser { b, i: 0 };
    p.ws();
    p.value(0).map_err(err)?;
    p.ws();
    if p.i != b.len() {
        return Err(err(p.i));
    }
    Ok(())
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), usize> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.i)
        }
    }
    /// After the inner value of a one-key object: `}` then only whitespace.
    fn finish_object_tail(&mut self, _text: &str) -> Result<(), ReplyError> {
        self.ws();
        match self.next() {
            Some(b'}') => {}
            _ => return Err(ReplyError::Shape),
        }
        self.ws();
        if self.i != self.b.len() {
            return Err(ReplyError::Shape);
        }
        Ok(())
    }
    /// Parses a string; returns the byte range of its content (between the quotes).
    fn string(&mut self) -> Result<(usize, usize), usize> {
        self.expect(b'"')?;
        let start = self.i;
        loop {
            match self.next() {
                None => return Err(self.i),
                Some(b'"') => return Ok((start, self.i - 1)),
                Some(b'\\') => match self.next() {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                    Some(b'u') => {
                        for _ in 0..4 {
                            match self.next() {
                                Some(c) if c.is_ascii_hexdigit() => {}
                                _ => return Err(self.i),
                            }
                        }
                    }
                    _ => return Err(self.i),
                },
                Some(c) if c < 0x20 => return Err(self.i - 1),
                Some(_) => {}
            }
        }
    }
    fn number(&mut self) -> Result<(), usize> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.i),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digit1()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digit1()?;
        }
        Ok(())
    }
    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }
    fn digit1(&mut self) -> Result<(), usize> {
        if !matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(self.i);
        }
        self.digits();
        Ok(())
    }
    fn literal(&mut self, word: &[u8]) -> Result<(), usize> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.i)
        }
    }
    fn value(&mut self, depth: usize) -> Result<(), usize> {
        if depth > MAX_DEPTH {
            return Err(self.i);
        }
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'{') => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.ws();
                    self.expect(b':')?;
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.next() {
                        Some(b',') => {}
                        Some(b'}') => return Ok(()),
                        _ => return Err(self.i),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.next() {
                        Some(b',') => {}
                        Some(b']') => return Ok(()),
                        _ => return Err(self.i),
                    }
                }
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.i),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_success_and_failure() {
        let r = decode_reply(br#"{"Register": {"id": null, "result": "Success"}}"#).unwrap();
        assert_eq!(r.command, "Register");
        assert!(r.is_success());
        let r = decode_reply(br#"{"Failure":{"message":"bad key"}}"#).unwrap();
        assert_eq!(r.command, "Failure");
        assert_eq!(r.message, Some("bad key"));
        assert!(!r.is_success());
        let r = decode_reply(br#"{"CoreAgentVersion": {"version": "1.6.0", "result": "Success"}}"#)
            .unwrap();
        assert_eq!(r.version, Some("1.6.0"));
        let r = decode_reply(br#" {"X": {}} "#).unwrap();
        assert_eq!(r.result, None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(decode_reply(b""), Err(ReplyError::Syntax(_))));
        assert!(matches!(decode_reply(b"\xff"), Err(ReplyError::Syntax(_))));
        assert!(matches!(
            decode_reply(br#"{"A": 1}"#),
            Err(ReplyError::Shape)
        ));
        assert!(matches!(
            decode_reply(br#"{"A": {}, "B": {}}"#),
            Err(ReplyError::Shape)
        ));
        assert!(matches!(
            decode_reply(br#"{"A": {"result": "Success"}"#),
            Err(ReplyError::Syntax(_))
        ));
        assert!(matches!(decode_reply(br#"[1]"#), Err(ReplyError::Shape)));
        assert!(matches!(
            decode_reply(b"{\"\":8,"),
            Err(ReplyError::Syntax(_))
        ));
        let deep = [b'['; 200];
        assert!(validate_json(&deep).is_err());
    }
}
