"""Ollama's own Python client against a running herd serve.

Usage: python ollama_client.py BASE_URL MODEL PULL_REFERENCE
"""

import json
import sys

import httpx
import ollama

base, model, pull_ref = sys.argv[1], sys.argv[2], sys.argv[3]
client = ollama.Client(host=base)
options = {"temperature": 0, "num_predict": 16}
messages = [{"role": "user", "content": "Name three colors."}]

assert httpx.get(f"{base}/api/version").json()["version"]

listed = client.list()
assert any(m.model == model for m in listed.models), listed

# Chat, plain and streamed (the client's default for stream is False,
# the server's is True).
chat = client.chat(model=model, messages=messages, options=options)
assert chat.done and chat.message.role == "assistant" and chat.message.content, chat
assert chat.eval_count > 0 and chat.prompt_eval_count > 0, chat
parts = list(client.chat(model=model, messages=messages, options=options, stream=True))
assert parts[-1].done and all(not p.done for p in parts[:-1]), parts
assert "".join(p.message.content for p in parts) == chat.message.content, parts

# Generate, plain and streamed.
gen = client.generate(model=model, prompt="Count to five.", options=options)
assert gen.done and gen.response, gen
parts = list(client.generate(model=model, prompt="Count to five.", options=options, stream=True))
assert "".join(p.response for p in parts) == gen.response, parts

# Structured output with a schema.
schema = {
    "type": "object",
    "properties": {"color": {"type": "string"}},
    "required": ["color"],
}
structured = client.chat(
    model=model,
    messages=[{"role": "user", "content": "Pick a color."}],
    format=schema,
    options={"temperature": 0, "num_predict": 32},
)
assert isinstance(json.loads(structured.message.content)["color"], str), structured

# Embeddings.
emb = client.embed(model=model, input=["a cat", "a dog"])
assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) > 0, emb

# ps and show.
ps = client.ps()
assert any(m.model == model for m in ps.models), ps
show = client.show(model)
assert show.details.format == "gguf", show

# Pull with progress, see it listed, delete it.
progress = list(client.pull(pull_ref, stream=True))
assert progress[-1].status == "success", progress
assert any(p.completed for p in progress if p.completed is not None), progress
names = [m.model for m in client.list().models]
assert any(pull_ref in n for n in names), names
client.delete(pull_ref)
names = [m.model for m in client.list().models]
assert not any(pull_ref in n for n in names), names

# Errors arrive as the client's ResponseError.
try:
    client.chat(model="ai/nothing-here", messages=messages)
    raise AssertionError("an unknown model must fail")
except ollama.ResponseError as e:
    assert e.status_code == 404, e
try:
    client.chat(model=model, messages=messages, options={"mirostat": 1})
    raise AssertionError("an unsupported option must fail")
except ollama.ResponseError as e:
    assert e.status_code == 400 and "mirostat" in e.error, e
try:
    client.chat(model=model, messages=messages, options={"num_ctx": 1 << 30})
    raise AssertionError("a num_ctx beyond the model's context must fail")
except ollama.ResponseError as e:
    assert e.status_code == 400 and "num_ctx" in e.error, e

print("ollama client: ok")
