//! `kitbash calibrate --write`: sets `layers.<name>.min_confidence` in a
//! YAML configuration file, changing only those lines so that comments and
//! everything else stay as they are.
//!
//! The file is edited line by line in block style (`layers:` at column 0,
//! a layer's name one level in, `min_confidence:` one level further); a
//! value present is replaced in place, a missing one is inserted, a missing
//! `layers:` block is appended. The result is parsed back and must give the
//! new values, or nothing is written.

/// Whether `line` is `<indent><key>:` with nothing but a comment after.
fn opens(line: &str, indent: usize, key: &str) -> bool {
    let lead = line.len() - line.trim_start().len();
    if lead != indent {
        return false;
    }
    let rest = line.trim_start();
    let Some(after) = rest.strip_prefix(key).and_then(|r| r.strip_prefix(':')) else {
        return false;
    };
    let after = after.trim();
    after.is_empty() || after.starts_with('#')
}

/// Indentation of a content line (not blank, not a comment).
fn content_indent(line: &str) -> Option<usize> {
    let t = line.trim_start();
    (!t.is_empty() && !t.starts_with('#')).then(|| line.len() - t.len())
}

/// The end (exclusive) of the block opened at `start` with indentation
/// `indent`: the next content line indented no deeper.
fn block_end(lines: &[String], start: usize, indent: usize) -> usize {
    (start + 1..lines.len())
        .find(|&i| content_indent(&lines[i]).is_some_and(|d| d <= indent))
        .unwrap_or(lines.len())
}

/// Sets `layers.<layer>.min_confidence` to each value in `text`.
pub fn set_thresholds(text: &str, values: &[(String, f64)]) -> Result<String, String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for (layer, value) in values {
        set_one(&mut lines, layer, *value)?;
    }
    let mut out = lines.join("\n");
    out.push('\n');
    check(&out, values)?;
    Ok(out)
}

fn set_one(lines: &mut Vec<String>, layer: &str, value: f64) -> Result<(), String> {
    let new_value = format!("{value:.3}");
    let Some(top) = lines.iter().position(|l| opens(l, 0, "layers")) else {
        if lines.iter().any(|l| l.starts_with("layers:")) {
            return Err(
                "the file's `layers:` is not a block mapping (flow style?); set min_confidence by hand".into(),
            );
        }
        lines.push("layers:".into());
        lines.push(format!("  {layer}:"));
        lines.push(format!("    min_confidence: {new_value}"));
        return Ok(());
    };
    let top_end = block_end(lines, top, 0);
    // The layers' indentation: that of the first content line in the block.
    let step = (top + 1..top_end)
        .find_map(|i| content_indent(&lines[i]))
        .unwrap_or(2);
    let Some(at) = (top + 1..top_end).find(|&i| opens(&lines[i], step, layer)) else {
        lines.insert(top + 1, format!("{}{layer}:", " ".repeat(step)));
        lines.insert(
            top + 2,
            format!("{}min_confidence: {new_value}", " ".repeat(step * 2)),
        );
        return Ok(());
    };
    let end = block_end(lines, at, step);
    let inner = (at + 1..end)
        .find_map(|i| content_indent(&lines[i]))
        .unwrap_or(step * 2);
    for line in lines.iter_mut().take(end).skip(at + 1) {
        if content_indent(line) == Some(inner)
            && let Some(rest) = line.trim_start().strip_prefix("min_confidence:")
        {
            let comment = rest.find('#').map(|i| &rest[i..]).unwrap_or("");
            let sep = if comment.is_empty() { "" } else { "  " };
            *line = format!(
                "{}min_confidence: {new_value}{sep}{comment}",
                " ".repeat(inner)
            );
            return Ok(());
        }
    }
    lines.insert(
        at + 1,
        format!("{}min_confidence: {new_value}", " ".repeat(inner)),
    );
    Ok(())
}

/// Parses `text` back and checks each value landed.
fn check(text: &str, values: &[(String, f64)]) -> Result<(), String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text)
        .map_err(|e| format!("the edited file would not parse ({e}); nothing written"))?;
    for (layer, value) in values {
        let got = doc
            .get("layers")
            .and_then(|l| l.get(layer.as_str()))
            .and_then(|l| l.get("min_confidence"))
            .and_then(serde_yaml::Value::as_f64);
        match got {
            Some(g) if (g - value).abs() < 5e-4 => {}
            _ => {
                return Err(format!(
                    "the edited file would not set layers.{layer}.min_confidence to {value:.3}; nothing written"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str, layer: &str, v: f64) -> String {
        set_thresholds(text, &[(layer.to_string(), v)]).unwrap()
    }

    #[test]
    fn replaces_in_place_and_keeps_comments() {
        let text = "# top\nredis:\n  port: 6380\nlayers:\n  # the cheap one\n  layer0:\n    timeout_ms: 20\n    min_confidence: 0.9   # was tuned\n  layer2:\n    min_confidence: 0.55\nhttp:\n  listen: x\n";
        let out = set(text, "layer2", 0.61);
        assert!(
            out.contains("  layer2:\n    min_confidence: 0.610\n"),
            "{out}"
        );
        assert!(out.contains("min_confidence: 0.9   # was tuned"), "{out}");
        assert!(out.contains("# the cheap one") && out.contains("http:\n  listen: x"));
        let out = set(&out, "layer0", 0.8);
        assert!(
            out.contains("    min_confidence: 0.800  # was tuned"),
            "{out}"
        );
    }

    #[test]
    fn inserts_what_is_missing() {
        // A commented-out block (the shipped file) sets nothing: append one.
        let text = "# layers:\n#   layer2:\n#     min_confidence: 0.55\n";
        let out = set(text, "layer2", 0.6);
        assert!(out.starts_with(text), "{out}");
        assert!(
            out.ends_with("layers:\n  layer2:\n    min_confidence: 0.600\n"),
            "{out}"
        );
        // A layers block without the layer, then a layer without the key.
        let text = "layers:\n    layer0:\n        timeout_ms: 20\n";
        let out = set(text, "layer2", 0.6);
        assert!(
            out.contains("    layer2:\n        min_confidence: 0.600"),
            "{out}"
        );
        let out = set(&out, "layer0", 0.95);
        assert!(
            out.contains("    layer0:\n        min_confidence: 0.950\n        timeout_ms: 20"),
            "{out}"
        );
    }

    #[test]
    fn flow_style_is_refused() {
        let err = set_thresholds(
            "layers: {layer2: {min_confidence: 0.5}}\n",
            &[("layer2".into(), 0.6)],
        )
        .unwrap_err();
        assert!(err.contains("by hand"), "{err}");
    }
}
