//! Renders a conversation with the model's own chat template (the Jinja text
//! stored in the GGUF), the way Hugging Face's tokenizers do.

use minijinja::{Environment, Error, ErrorKind, context};

use crate::engine::ChatMessage;
use crate::error::EngineError;
use herd_proto::error::ErrorCode;

/// Used when a GGUF carries no template: ChatML, which most small instruct
/// models understand.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Limits on rendering a template, which comes with the model artifact and
/// is untrusted: instructions per render (minijinja's fuel), nesting of
/// calls and blocks, and the size of the output.
pub const FUEL: u64 = 20_000_000;
pub const RECURSION_LIMIT: usize = 64;
/// The output may be this much larger than the messages it renders.
pub const OUTPUT_OVERHEAD_BYTES: usize = 1 << 20;

/// Marks errors the template raised itself (`raise_exception`), the only
/// ones that are the conversation's fault.
const RAISED: &str = "raised: ";

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token`/`eos_token` are the texts templates may
    /// reference.
    pub fn new(source: &str, bos_token: String, eos_token: String) -> Result<Self, EngineError> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, Error> {
                Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("{RAISED}{message}"),
                ))
            },
        );
        env.add_function("strftime_now", |_format: String| -> String {
            // Templates use it for "today's date" lines; a fixed, neutral
            // value keeps rendering deterministic.
            String::new()
        });
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| EngineError::Internal(format!("chat template does not compile: {e}")))?;
        let template = Self {
            env,
            bos_token,
            eos_token,
        };
        template.trial()?;
        Ok(template)
    }

    /// Renders a small conversation, so a template that loops, recurses or
    /// blows up on every chat is refused when the model loads.
    fn trial(&self) -> Result<(), EngineError> {
        let conversation = [
            ChatMessage::new("system", "You are helpful."),
            ChatMessage::new("user", "Hello"),
            ChatMessage::new("assistant", "Hi!"),
            ChatMessage::new("user", "How are you?"),
        ];
        match self.render(&conversation) {
            // A template may refuse a conversation shape by its own rules.
            Ok(_) | Err(EngineError::InvalidParam { .. }) => Ok(()),
            Err(e) => Err(EngineError::Internal(format!(
                "the chat template fails on a plain conversation: {e}"
            ))),
        }
    }

    /// Renders `messages` followed by the assistant's turn opener.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let input: usize = messages.iter().map(|m| m.content.len()).sum();
        let mut out = CappedOutput {
            text: Vec::new(),
            cap: input
                .saturating_mul(2)
                .saturating_add(OUTPUT_OVERHEAD_BYTES),
        };
        let rendered = template.render_captured_to(
            context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            },
            &mut out,
        );
        if out.text.len() >= out.cap {
            return Err(EngineError::Internal(format!(
                "the chat template's output passed its cap of {} bytes",
                out.cap
            )));
        }
        rendered
            .map(|_| String::from_utf8_lossy(&out.text).into_owned())
            .map_err(|e| match e.kind() {
                // `raise_exception` in the template: the conversation breaks
                // the template's rules (e.g. roles not alternating).
                ErrorKind::InvalidOperation
                    if e.detail().is_some_and(|d| d.starts_with(RAISED)) =>
                {
                    EngineError::param(
                        "messages",
                        format!(
                            "the model's chat template rejected the messages: {}",
                            e.detail()
                                .and_then(|d| d.strip_prefix(RAISED))
                                .unwrap_or("no reason given")
                        ),
                    )
                    .with_code(ErrorCode::TemplateRejected)
                }
                _ => EngineError::Internal(format!("chat template failed: {e}")),
            })
    }
}

/// A render target that refuses to grow past `cap` bytes.
struct CappedOutput {
    text: Vec<u8>,
    cap: usize,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len().saturating_add(buf.len()) > self.cap {
            self.text.resize(self.cap, 0);
            return Err(std::io::Error::other("output cap"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_renders_messages_and_generation_prompt() {
        let t = ChatTemplate::new(CHATML_TEMPLATE, "<s>".into(), "</s>".into()).unwrap();
        let out = t
            .render(&[
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "Hi"),
            ])
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_work() {
        let src = "{% for m in messages %}{{ m['content'].strip().upper() }}{% endfor %}";
        let t = ChatTemplate::new(src, String::new(), String::new()).unwrap();
        assert_eq!(
            t.render(&[ChatMessage::new("user", "  hi ")]).unwrap(),
            "HI"
        );
    }

    #[test]
    fn templates_that_loop_recurse_or_blow_up_are_refused_at_load() {
        for (what, src) in [
            (
                "loop",
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            ),
            (
                "output",
                "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
            ),
            (
                "recursion",
                "{% for x in [1] recursive %}{{ loop([x]) }}{% endfor %}",
            ),
        ] {
            let Err(err) = ChatTemplate::new(src, String::new(), String::new()) else {
                panic!("{what} passed")
            };
            assert!(matches!(err, EngineError::Internal(_)), "{what}: {err:?}");
        }
    }

    #[test]
    fn raise_exception_is_an_invalid_request() {
        let src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}";
        let t = ChatTemplate::new(src, String::new(), String::new()).unwrap();
        let err = t.render(&[ChatMessage::new("assistant", "x")]).unwrap_err();
        assert!(
            matches!(&err, EngineError::InvalidParam { param, message, .. } if param == "messages" && message.contains("first must be user")),
            "{err:?}"
        );
    }
}
