//! Backtraces for slow spans: a `stack` tag of `{file, line, function}` frames, innermost
//! first, without the agent's own frames. Captured only when a span ran longer than the
//! threshold, so fast spans pay nothing.

use crate::pool::StdRequest;
use scout_core::{RawJson, SpanIdx, Text, Value};

/// Most frames kept.
pub const MAX_FRAMES: usize = 50;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Frame {
    /// Source file.
    pub file: String,
    /// Line number (0 when unknown).
    pub line: u32,
    /// Function.
    pub function: String,
}

/// The current stack, innermost first, without frames of the agent, the standard library's
/// backtrace machinery or the async plumbing that calls it.
pub fn capture() -> Vec<Frame> {
    let text = std::backtrace::Backtrace::force_capture().to_string();
    parse(&text)
}

fn is_agent_frame(function: &str) -> bool {
    let f = function.trim_start_matches('<');
    f.starts_with("scout_std::")
        || f.starts_with("scout_core::")
        || f.starts_with("std::backtrace")
        || f.starts_with("core::ptr::drop_in_place<scout_std")
}

/// Parses `std::backtrace::Backtrace`'s text (`N: function` lines, each optionally followed
/// by `at file:line:col`).
pub(crate) fn parse(text: &str) -> Vec<Frame> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        let Some((num, function)) = t.split_once(": ") else {
            continue;
        };
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let (mut file, mut lineno) = (String::new(), 0);
        if let Some(next) = lines.peek()
            && let Some(loc) = next.trim_start().strip_prefix("at ")
        {
            let mut parts = loc.rsplitn(3, ':');
            let _col = parts.next();
            let l = parts.next().and_then(|l| l.parse().ok());
            match (l, parts.next()) {
                (Some(l), Some(f)) => {
                    file = f.to_string();
                    lineno = l;
                }
                _ => file = loc.to_string(),
            }
            lines.next();
        }
        if is_agent_frame(function) {
            continue;
        }
        frames.push(Frame {
            file,
            line: lineno,
            function: function.trim().to_string(),
        });
        if frames.len() == MAX_FRAMES {
            break;
        }
    }
    frames
}

/// Tags `span` of `req` with the current stack.
pub(crate) fn tag_slow_span(req: &mut StdRequest, span: SpanIdx) {
    if req
        .span(span)
        .is_some_and(|s| s.flags().contains(scout_core::SpanFlags::NO_BACKTRACE))
    {
        return;
    }
    let frames = capture();
    let Ok(json) = serde_json::to_string(&frames) else {
        return;
    };
    if let Ok(raw) = RawJson::new(&json) {
        let _ = req.tag_span_at(span, Text::Static("stack"), Value::Json(raw));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_filters() {
        let text = "   0: std::backtrace::Backtrace::force_capture\n             at /rustc/x/library/std/src/backtrace.rs:312:9\n   1: scout_std::backtrace::capture\n             at ./src/backtrace.rs:20:5\n   2: myapp::handler\n             at ./src/main.rs:42:13\n   3: main\n";
        let f = parse(text);
        assert_eq!(f.len(), 2);
        assert_eq!(
            f[0],
            Frame {
                file: "./src/main.rs".into(),
                line: 42,
                function: "myapp::handler".into()
            }
        );
        assert_eq!(f[1].function, "main");
        assert_eq!(f[1].line, 0);
    }

    #[test]
    fn real_capture_skips_agent_frames() {
        let f = capture();
        assert!(!f.is_empty());
        assert!(
            f.iter().all(|fr| !fr.function.starts_with("scout_std::")),
            "{f:?}"
        );
        assert!(f.len() <= MAX_FRAMES);
    }
}
