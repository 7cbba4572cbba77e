//! Running the `espeak-ng` binary: IPA for a text, or a WAV of it. The text goes in on
//! stdin and arguments are passed directly (never through a shell).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::models::ModelError;

const BINARY: &str = "espeak-ng";
const MODEL: &str = "espeak-ng";

/// Longest text handed to espeak in one call; a sentence of speech is far shorter.
pub(super) const MAX_TEXT_CHARS: usize = 20_000;

/// Phonemes of `text` in IPA, one entry per clause as espeak splits them (stress marks kept,
/// punctuation dropped: espeak reports clauses, not their terminators).
pub(super) fn ipa_clauses(text: &str, voice: &str) -> Result<Vec<String>, ModelError> {
    let stdout = run(&["-q", "--ipa", "-b", "1", "-v", voice, "--stdin"], text)?;
    let text = String::from_utf8(stdout).map_err(|e| ModelError::inference(MODEL, format!("non-UTF-8 IPA: {e}")))?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// A 16-bit mono WAV of `text` spoken by espeak's own synthesiser.
pub(super) fn wav(text: &str, voice: &str) -> Result<Vec<u8>, ModelError> {
    run(&["-b", "1", "-v", voice, "--stdout", "--stdin"], text)
}

/// Rejects voice names that are not plain identifiers, so one can never be read as a flag.
pub(super) fn check_voice(voice: &str) -> Result<(), ModelError> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '/');
    if voice.is_empty() || voice.starts_with('-') || !voice.chars().all(plain) {
        return Err(ModelError::input(MODEL, format!("invalid espeak voice name {voice:?}")));
    }
    Ok(())
}

/// Text as espeak should see it: one line, no control characters, and no `[[`, which espeak
/// would read as raw phoneme mnemonics.
pub(super) fn clean_text(text: &str) -> String {
    let flat: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    flat.replace("[[", "[ [")
}

fn run(args: &[&str], text: &str) -> Result<Vec<u8>, ModelError> {
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(ModelError::input(MODEL, format!("text longer than {MAX_TEXT_CHARS} characters")));
    }
    let mut child = Command::new(BINARY)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ModelError::load(MODEL, format!("cannot run `{BINARY}` (is espeak-ng installed?): {e}")))?;
    let mut stdin = child.stdin.take().ok_or_else(|| ModelError::inference(MODEL, "stdin not captured"))?;
    // Feed stdin while the output is drained, so neither pipe can fill up and stall.
    let output = std::thread::scope(|scope| {
        let writer = scope.spawn(move || stdin.write_all(text.as_bytes()));
        let output = child.wait_with_output();
        (writer.join(), output)
    });
    let output = match output {
        (_, Err(e)) => {
            return Err(ModelError::inference(MODEL, format!("waiting for {BINARY}: {e}")));
        }
        (Err(_), _) => return Err(ModelError::inference(MODEL, "stdin writer panicked")),
        (Ok(write), Ok(output)) => {
            // A broken pipe only means espeak exited early; its status says why.
            if let Err(e) = write
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                return Err(ModelError::inference(MODEL, format!("writing to {BINARY}: {e}")));
            }
            output
        }
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let message = if stderr.trim().is_empty() { stdout } else { stderr };
        return Err(ModelError::inference(MODEL, format!("{} ({})", message.trim(), output.status)));
    }
    Ok(output.stdout)
}
