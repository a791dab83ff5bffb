//! Renders a conversation with the model's own chat template (the Jinja text
//! stored in the GGUF), the way Hugging Face's tokenizers do.

use minijinja::{Environment, Error, ErrorKind, context};

use crate::engine::ChatMessage;
use crate::error::EngineError;
use herd_proto::error::ErrorCode;

/// Used when a GGUF carries no template: ChatML, which most small instruct
/// models understand.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

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
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_function("strftime_now", |_format: String| -> String {
            // Templates use it for "today's date" lines; a fixed, neutral
            // value keeps rendering deterministic.
            String::new()
        });
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| EngineError::Internal(format!("chat template does not compile: {e}")))?;
        Ok(Self {
            env,
            bos_token,
            eos_token,
        })
    }

    /// Renders `messages` followed by the assistant's turn opener.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|e| match e.kind() {
                // `raise_exception` in the template: the conversation breaks
                // the template's rules (e.g. roles not alternating).
                ErrorKind::InvalidOperation => EngineError::param(
                    "messages",
                    format!(
                        "the model's chat template rejected the messages: {}",
                        e.detail().unwrap_or("no reason given")
                    ),
                )
                .with_code(ErrorCode::TemplateRejected),
                _ => EngineError::Internal(format!("chat template failed: {e}")),
            })
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
