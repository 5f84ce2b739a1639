//! What generated text must be to count as an answer, whatever its
//! log-probabilities say.
//!
//! A language model can be sure of text that answers nothing: a tiny or
//! confused model repeats the prompt's last token (`::::::::`), loops on a
//! word, or echoes the question. Token probabilities rate how sure the model
//! is of each token, not whether the text is an answer, so the model layers
//! (bitnet, llm) check the text first and reply with a miss, naming why, for:
//!
//! - **empty**: nothing but whitespace;
//! - **no words**: no letter or digit at all (punctuation, symbols);
//! - **a repetition**: a run of five or more of the same non-alphanumeric
//!   character (`:::::`, `-----`), the same word three times in a row, six
//!   or more words of which under 40% are different, or text (8 or more
//!   characters, spaces aside) that is one piece of at most a third of its
//!   length over and over (`abcabcabc`);
//! - **the prompt echoed**: two or more words, every one of them in the
//!   prompt (the question and the template around it), so the text adds
//!   nothing to what was asked (`What is the capital of France`, `Question:
//!   Answer:`).
//!
//! The servers are also asked to stop at the end of the first line (stop
//! sequence `"\n"`), so an answer is one line; see the backends.

/// The stop sequences the model layers send: an answer ends with its first
/// line.
pub const STOP: &[&str] = &["\n"];

/// Why `answer` is not an answer to a `prompt`, or `None` when it is one.
pub fn non_answer(answer: &str, prompt: &str) -> Option<String> {
    let text = answer.trim();
    if text.is_empty() {
        return Some("not an answer: empty".into());
    }
    if !text.chars().any(char::is_alphanumeric) {
        return Some(format!("not an answer: no words ({})", shown(text)));
    }
    if let Some(why) = repetition(text) {
        return Some(format!("not an answer: {why} ({})", shown(text)));
    }
    let said = words(text);
    let asked = words(prompt);
    if said.len() >= 2 && said.iter().all(|w| asked.contains(w)) {
        return Some(format!(
            "not an answer: it repeats the prompt ({})",
            shown(text)
        ));
    }
    None
}

/// Lower-cased runs of letters and digits.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The kind of degenerate repetition `text` is, if any.
fn repetition(text: &str) -> Option<&'static str> {
    let chars: Vec<char> = text.chars().collect();
    let mut run = 1;
    for pair in chars.windows(2) {
        if pair[0] == pair[1] && !pair[0].is_alphanumeric() && !pair[0].is_whitespace() {
            run += 1;
            if run >= 5 {
                return Some("a repeated character");
            }
        } else {
            run = 1;
        }
    }
    let ws = words(text);
    if ws.windows(3).any(|w| w[0] == w[1] && w[1] == w[2]) {
        return Some("a word repeated");
    }
    if ws.len() >= 6 {
        let mut distinct = ws.clone();
        distinct.sort();
        distinct.dedup();
        if (distinct.len() as f64) < 0.4 * ws.len() as f64 {
            return Some("the same few words over and over");
        }
    }
    let compact: Vec<char> = chars.into_iter().filter(|c| !c.is_whitespace()).collect();
    let n = compact.len();
    if n >= 8 {
        for p in 1..=n / 3 {
            if (p..n).all(|i| compact[i] == compact[i - p]) {
                return Some("one piece repeated");
            }
        }
    }
    None
}

/// The text for a message: at most 40 characters, quoted.
fn shown(text: &str) -> String {
    let mut s: String = text.chars().take(40).collect();
    if text.chars().count() > 40 {
        s.push('…');
    }
    format!("{s:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPT: &str =
        "Answer in one short sentence.\nQuestion: What is the capital of France?\nAnswer:";

    #[test]
    fn non_answers_are_named() {
        for (text, why) in [
            ("", "empty"),
            ("   \n ", "empty"),
            ("::::::::::::::::::::::::::::::::", "no words"),
            ("?!.,;", "no words"),
            ("Paris::::::", "repeated character"),
            ("the the the capital", "word repeated"),
            ("Paris is Paris is Paris is Paris", "same few words"),
            ("abcabcabcabc", "one piece"),
            ("What is the capital of France", "repeats the prompt"),
            ("Question: Answer:", "repeats the prompt"),
        ] {
            let got = non_answer(text, PROMPT);
            assert!(
                got.as_deref().is_some_and(|g| g.contains(why)),
                "{text:?} -> {got:?}, expected {why:?}"
            );
        }
    }

    #[test]
    fn answers_pass() {
        for text in [
            "Paris",
            "Paris.",
            "The capital of France is Paris.",
            "1,000,000",
            "It is 3.14159.",
            "New York, New York",
            "Ha-ha... no.",
            "Yes",
        ] {
            assert_eq!(non_answer(text, PROMPT), None, "{text:?}");
        }
    }
}
